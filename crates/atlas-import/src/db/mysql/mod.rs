//! MySQL and MariaDB, through mysql_async: a named lock (`GET_LOCK`)
//! serializes imports into a table; rows go in by MariaDB's array binding,
//! its requests pipelined through a [`relay`] where the connection is plain
//! TCP, else by `LOAD DATA LOCAL INFILE` fed from memory, or array binding
//! or INSERTs where the server refuses that (see [`write`]), inside one
//! InnoDB transaction.
//!
//! Two MySQL facts shape this adapter:
//! - DDL commits implicitly. A table the import creates is therefore created
//!   (and committed) before the rows go in, and dropped again if the import
//!   rolls back; the named lock keeps every other import out meanwhile.
//! - The import runs on its own connection (not a pooled one), so a process
//!   that dies mid-import closes it and the server rolls back and releases
//!   the lock.
//!
//! Every connection runs with `ANSI_QUOTES` (identifiers are quoted with `"`
//! as everywhere else), backslash escapes in strings, and
//! `time_zone = '+00:00'`.

mod connect;
mod pipelined;
mod relay;
mod write;

use pipelined::LongRows;
use relay::Relay;
use write::WriteMethod;

use async_trait::async_trait;
use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::datatypes::{DataType, TimeUnit};
use mysql_async::prelude::Queryable;
use mysql_async::{Conn, Opts, Params, Pool, PoolConstraints, PoolOpts, Row, Value};

use super::dialect::{Dialect, StageTable, UpdateJoin};
use super::{
    Catalog, ChunkStream, Database, DbKind, FileRecord, HistoryEntry, HistoryValue,
    ImportTransaction, KeyFilter, TableStats, TextBatcher, create_table_sql, file_imported_sql,
    index_parts, insert_history_sql, mask_password, quote_ident,
};
use crate::error::{AtlasError, Result};
use crate::key_form::{KeyForm, ValueForm};
use crate::names::TableRef;
use crate::schema::{ColumnSpec, FractionRounding, SecondsPrecision, TargetColumn, TargetTable};
use crate::typed_text::TextForm;

/// Seconds an import waits for another import of the same table.
const LOCK_TIMEOUT_SECONDS: i64 = 300;
/// Connections of the pool (catalog reads, key scans) at most.
const POOL_CONNECTIONS: usize = 4;

/// MySQL's and MariaDB's SQL: `?` parameters, strings with backslash
/// escapes, temporary tables, `UPDATE ... JOIN`.
#[derive(Debug)]
pub(crate) struct MySqlDialect;

impl Dialect for MySqlDialect {
    /// Quotes doubled, and backslashes and NUL escaped (MySQL's strings know
    /// backslash escapes).
    fn string_literal(&self, text: &str) -> String {
        format!(
            "'{}'",
            text.replace('\\', "\\\\")
                .replace('\'', "''")
                .replace('\0', "\\0")
        )
    }

    fn stage_definition(&self, stage: &StageTable<'_>) -> String {
        format!(
            "CREATE TEMPORARY TABLE {} AS SELECT {}, CAST(0 AS SIGNED) AS {} FROM {} WHERE 1 = 0",
            stage.sql, stage.columns, stage.row, stage.target
        )
    }

    fn drop_temp_table(&self, stage: &str) -> String {
        format!("DROP TEMPORARY TABLE IF EXISTS {stage}")
    }

    /// No hash join: the stage's key is looked up by index.
    fn prepare_join(&self, _name: &str, stage: &str, key: &[TargetColumn]) -> Vec<String> {
        vec![format!(
            "ALTER TABLE {stage} ADD INDEX atlas_key ({})",
            index_parts(key)
        )]
    }

    /// The usual collations ignore case and trailing spaces; the check does
    /// not. `=` keeps the index, the binary comparison keeps the check's
    /// meaning.
    fn key_equality(&self, column: &TargetColumn, left: &str, right: &str) -> String {
        if column.data_type == DataType::Utf8 {
            format!("{left} = {right} AND BINARY {left} = BINARY {right}")
        } else {
            format!("{left} = {right}")
        }
    }

    /// `STRAIGHT_JOIN` reads the table in order and looks each row up in
    /// the stage's index, rather than each staged row up in the table's
    /// (which the optimizer prefers given a unique key, at a random read
    /// per row: 3.5× slower for 1M rows into 1M, right for a few into many).
    fn update_join(&self, join: &UpdateJoin<'_>) -> String {
        let assignments: Vec<String> = join
            .assignments
            .iter()
            .map(|a| format!("atlas_t.{a}"))
            .collect();
        format!(
            "UPDATE {} AS atlas_t {} {} AS atlas_s ON {} SET {}",
            join.target,
            if join.table_first {
                "STRAIGHT_JOIN"
            } else {
                "JOIN"
            },
            join.stage,
            join.condition,
            assignments.join(", ")
        )
    }

    fn update_join_shape(&self) -> &'static str {
        "UPDATE ... JOIN"
    }

    fn text_form(&self, sql_type: &str) -> Option<TextForm> {
        TextForm::mysql(sql_type)
    }

    /// `CHAR(n)` reads back without trailing spaces; `TIME` as
    /// `HH:MM:SS[.ffffff]` however it was written (`12:34` is `12:34:00`); a
    /// SET with its members in the column's order, each once; MariaDB's
    /// `INET4`/`INET6` in their canonical spelling (`0:0::1` is `::1`).
    fn text_key_form(&self, sql_type: &str) -> Option<KeyForm> {
        match sql_type.split('(').next().unwrap_or_default() {
            "char" => Some(KeyForm::Value(ValueForm::BlankPadded)),
            "inet4" | "inet6" => Some(KeyForm::Value(ValueForm::Inet)),
            "time" => Some(KeyForm::Value(ValueForm::Time(fractions_kept(
                sql_type, false,
            )))),
            "set" => Some(KeyForm::Value(ValueForm::MemberSet {
                case_insensitive: false,
            })),
            _ => None,
        }
    }

    /// Compared as written until the table exists: MySQL normalizes a JSON
    /// column, MariaDB keeps its text; the described table says which.
    fn nested_column(&self) -> (&'static str, Option<TextForm>) {
        ("json", Some(TextForm::Json))
    }
}

/// A MySQL or MariaDB database.
#[derive(Debug)]
pub struct MySqlDatabase {
    pool: Pool,
    /// The options the first connection settled (TLS or not).
    opts: Opts,
    /// Whether rows may go in by `LOAD DATA LOCAL INFILE` (the URL's
    /// `local-infile`, default true; the server is asked per import).
    local_infile: bool,
    /// How rows go in, where the URL's `write-method` says (else chosen per
    /// import from what the server offers).
    write_method: Option<WriteMethod>,
    url: String,
    /// The database of the URL: where unqualified names live.
    default_schema: Option<String>,
    /// The server's `VERSION()`.
    version: String,
}

impl MySqlDatabase {
    /// Connects to `url` (`mysql://...` or `mariadb://...`).
    pub async fn connect(url: &str) -> Result<Self> {
        let masked = mask_password(url);
        let normalized = url.replacen("mariadb://", "mysql://", 1);
        let options = connect::UrlOptions::parse(&normalized, &masked)?;
        let connect_error = |e| AtlasError::database(format!("connecting to {masked}"), e);
        // One direct connection first, so a refused login is reported as such.
        let (mut conn, opts) = options.connect().await.map_err(connect_error)?;
        let (default_schema, version): (Option<String>, String) = conn
            .query_first("SELECT CAST(DATABASE() AS CHAR), CAST(VERSION() AS CHAR)")
            .await
            .map_err(connect_error)?
            .unwrap_or_default();
        conn.disconnect().await.ok();
        let constraints = PoolConstraints::new(0, POOL_CONNECTIONS).expect("0 <= POOL_CONNECTIONS");
        let pool = Pool::new(
            mysql_async::OptsBuilder::from_opts(opts.clone())
                .pool_opts(PoolOpts::default().with_constraints(constraints)),
        );
        Ok(Self {
            pool,
            opts,
            local_infile: options.local_infile,
            write_method: options.write_method,
            url: masked,
            default_schema,
            version,
        })
    }

    async fn conn(&self) -> Result<Conn> {
        self.pool
            .get_conn()
            .await
            .map_err(|e| AtlasError::database("connecting", e))
    }
}

/// Whether `error` is the server refusing a row for a key one of its
/// unique indexes holds.
pub(super) fn refused_as_duplicate(error: &(dyn std::error::Error + 'static)) -> bool {
    if let Some(refusal) = error.downcast_ref::<write::WriteRefusal>() {
        return refusal.duplicate_entry();
    }
    error
        .downcast_ref::<mysql_async::Error>()
        .is_some_and(write::is_duplicate_entry)
}

/// The row of the write (1-based) that a refusal of one of its statements
/// names (`Out of range value for column 'n' at row 3` of that statement).
pub(super) fn refused_row(error: &(dyn std::error::Error + 'static)) -> Option<u64> {
    error.downcast_ref::<write::WriteRefusal>()?.refused_row()
}

/// The digits of a second a `DATETIME(p)`/`TIMESTAMP(p)` or `TIME(p)`
/// column keeps (none without `(p)`): MySQL rounds the rest, MariaDB cuts
/// it; MariaDB drops a zone written with the text, MySQL converts the time.
fn seconds_precision(
    data_type: &DataType,
    column_type: &str,
    mariadb: bool,
) -> Option<SecondsPrecision> {
    let time = *data_type == DataType::Utf8 && column_type.to_ascii_lowercase().starts_with("time");
    (matches!(data_type, DataType::Timestamp(..)) || time)
        .then(|| fractions_kept(column_type, mariadb))
}

/// The digits of a second a column of type `column_type` (`datetime(3)`,
/// `time`) keeps, none without `(p)`, and how the server drops the rest:
/// MySQL rounds, MariaDB cuts (and drops a zone written with the text).
fn fractions_kept(column_type: &str, mariadb: bool) -> SecondsPrecision {
    let digits = crate::key_form::type_modifier(column_type).unwrap_or(0);
    match mariadb {
        true => SecondsPrecision::new(digits, FractionRounding::Truncate).ignoring_written_zone(),
        false => SecondsPrecision::new(digits, FractionRounding::HalfUp),
    }
}

/// Maps an Arrow type to the declared SQL type of a new column.
fn sql_type_for(data_type: &DataType) -> String {
    let name = match data_type {
        DataType::Int8 | DataType::Int16 | DataType::UInt8 => "SMALLINT",
        DataType::Int32 | DataType::UInt16 => "INT",
        DataType::Int64 | DataType::UInt32 | DataType::UInt64 => "BIGINT",
        DataType::Float16 | DataType::Float32 => "FLOAT",
        DataType::Float64 => "DOUBLE",
        DataType::Decimal32(p, s)
        | DataType::Decimal64(p, s)
        | DataType::Decimal128(p, s)
        | DataType::Decimal256(p, s) => return format!("DECIMAL({p},{s})"),
        DataType::Boolean => "BOOLEAN",
        DataType::Date32 | DataType::Date64 => "DATE",
        DataType::Timestamp(..) => "DATETIME(6)",
        DataType::Binary | DataType::LargeBinary | DataType::BinaryView => "LONGBLOB",
        // TEXT holds 64 KB; real exports have longer fields.
        _ => "LONGTEXT",
    };
    name.to_string()
}

/// Maps a catalog type to the Arrow type values are coerced to;
/// `DataType::Null` marks a type this version cannot write.
fn data_type_for(data_type: &str, column_type: &str, precision: i64, scale: i64) -> DataType {
    let unsigned = column_type.contains("unsigned");
    match data_type {
        // TINYINT(1) is what BOOLEAN is, and holds any small integer: a
        // number that also reads the boolean words (its text form).
        "bool" | "boolean" => DataType::Boolean,
        "tinyint" if unsigned => DataType::Int16,
        "tinyint" => DataType::Int8,
        "smallint" if unsigned => DataType::Int32,
        "smallint" => DataType::Int16,
        "mediumint" => DataType::Int32,
        "int" | "integer" if unsigned => DataType::Int64,
        "int" | "integer" => DataType::Int32,
        "bigint" if unsigned => DataType::UInt64,
        "bigint" => DataType::Int64,
        "year" => DataType::Int16,
        // BIT(n) as its number (written and read back through UNSIGNED).
        "bit" => DataType::UInt64,
        "float" => DataType::Float32,
        "double" | "real" => DataType::Float64,
        // Wider than any Arrow decimal holds: exact text, which the server reads.
        "decimal" | "numeric" if precision > 38 => DataType::Utf8,
        "decimal" | "numeric" => DataType::Decimal128(precision.clamp(1, 38) as u8, scale as i8),
        // ENUM and SET labels, JSON and TIME as text: the server reads them,
        // and a value it would change (a label outside the set) is refused.
        "char" | "varchar" | "tinytext" | "text" | "mediumtext" | "longtext" | "enum" | "set"
        | "json" | "time" => DataType::Utf8,
        // MariaDB's UUID, INET4 and INET6 (10.5, 10.7, 10.10): text the
        // server reads, checked and spelled canonically by the text form
        // (UUID) or compared by the key form (addresses).
        "uuid" | "inet4" | "inet6" => DataType::Utf8,
        "date" => DataType::Date32,
        "datetime" | "timestamp" => DataType::Timestamp(TimeUnit::Microsecond, None),
        "binary" | "varbinary" | "tinyblob" | "blob" | "mediumblob" | "longblob" => {
            DataType::Binary
        }
        _ => DataType::Null,
    }
}

/// The width of a `BINARY(n)` column, which pads shorter values with zero
/// bytes.
fn zero_padded_width(column_type: &str) -> Option<usize> {
    let lower = column_type.to_ascii_lowercase();
    lower
        .strip_prefix("binary(")?
        .strip_suffix(')')?
        .parse()
        .ok()
}

/// Whether `column` is a BIT(n), which reads text as bytes, not as a number.
fn is_bit(column: &TargetColumn) -> bool {
    column.sql_type.to_ascii_lowercase().starts_with("bit")
}

/// Whether `column` is a YEAR, which reads the text `0` as 2000, the
/// number 0 as the zero year.
fn is_year(column: &TargetColumn) -> bool {
    column.sql_type.to_ascii_lowercase().starts_with("year")
}

/// The zone a default session of the server reads a `TIMESTAMP` in
/// (`@@global.time_zone`, or the server's system zone for `SYSTEM`), where
/// it is not UTC and names a zone Arrow knows; atlas-import's sessions are
/// in UTC, so the conversion places such values first.
async fn default_time_zone(conn: &mut Conn) -> Result<Option<String>> {
    let zone: Option<String> = conn
        .query_first(
            "SELECT CAST(IF(@@global.time_zone = 'SYSTEM', @@system_time_zone, @@global.time_zone)
                     AS CHAR)",
        )
        .await
        .map_err(|e| AtlasError::database("reading the server's time zone".to_string(), e))?;
    Ok(zone.and_then(|zone| crate::convert::zone_other_than_utc(&zone)))
}

/// The server's estimate of the rows of `table` (InnoDB's statistics).
async fn estimated_rows(conn: &mut Conn, table: &TableRef) -> mysql_async::Result<Option<i64>> {
    conn.exec_first(
        "SELECT CAST(COALESCE(table_rows, 0) AS SIGNED) FROM information_schema.tables
         WHERE table_schema = COALESCE(?, DATABASE()) AND table_name = ?",
        table_params(table),
    )
    .await
}

/// The schema and name of `table` as statement parameters (no schema: the
/// connection's database).
fn table_params(table: &TableRef) -> Params {
    Params::Positional(vec![
        table.schema.as_deref().map_or(Value::NULL, Value::from),
        Value::from(table.name.as_str()),
    ])
}

const CREATE_FILE_IMPORTS: &str = "CREATE TABLE IF NOT EXISTS file_imports (
    id BIGINT AUTO_INCREMENT PRIMARY KEY,
    file_hash VARCHAR(64) NOT NULL,
    file_name VARCHAR(500),
    table_name VARCHAR(255) NOT NULL,
    imported_at TIMESTAMP DEFAULT CURRENT_TIMESTAMP,
    record_count INTEGER,
    UNIQUE (file_hash, table_name)
) CHARACTER SET utf8mb4";

fn create_import_history() -> String {
    super::create_import_history_sql("BIGINT AUTO_INCREMENT PRIMARY KEY", "DATETIME(6)", "BIGINT")
        + " CHARACTER SET utf8mb4"
}

/// The statements that read the key columns of `table` (with `filter`, as
/// many as the server's `max_allowed_packet` needs). Columns are selected as
/// they are: the text protocol prints every type as `CAST(c AS CHAR)` does,
/// and the server spends a quarter of the scan on such casts.
async fn key_statements(
    conn: &mut Conn,
    table: &TableRef,
    columns: &[TargetColumn],
    filter: Option<&KeyFilter>,
) -> Result<Vec<String>> {
    let values = columns
        .iter()
        .map(|c| match c.data_type {
            // Bytes as hex: the text protocol would hand them over as text.
            DataType::Binary => format!("HEX({})", quote_ident(&c.name)),
            _ if is_bit(c) => format!("{} + 0", quote_ident(&c.name)),
            _ => quote_ident(&c.name),
        })
        .collect::<Vec<_>>()
        .join(", ");
    let select = format!("SELECT {values} FROM {}", table.sql());
    let Some(filter) = filter else {
        return Ok(vec![select]);
    };
    // The server refuses a statement longer than its `max_allowed_packet`
    // (16 MiB by default): a probe of many values reads in several.
    let packet: u64 = conn
        .query_first("SELECT @@max_allowed_packet")
        .await
        .map_err(|e| AtlasError::database(format!("reading the keys of '{table}'"), e))?
        .unwrap_or(1 << 24);
    let room = usize::try_from(packet)
        .unwrap_or(usize::MAX)
        .saturating_sub(select.len() + " WHERE ".len() + 1024);
    let conditions = filter.conditions(&MySqlDialect, None, room);
    if conditions.len() > 1 {
        // Each statement is a pass over the table where the column has no
        // index: worth seeing when an import is slow.
        tracing::info!(
            "Key check probes '{}' in {} statements (max_allowed_packet {} bytes)",
            filter.column,
            conditions.len(),
            packet
        );
    }
    Ok(conditions
        .into_iter()
        .map(|condition| format!("{select} WHERE {condition}"))
        .collect())
}

/// Runs `statements` on `conn` and hands their rows to `on_batch` in batches
/// of the key's types; returns the rows read. `on_batch` is shared by the
/// connections that read at once.
async fn read_keys(
    conn: &mut Conn,
    statements: Vec<String>,
    table: &TableRef,
    columns: &[TargetColumn],
    batch_rows: usize,
    on_batch: &std::sync::Mutex<&mut (dyn FnMut(RecordBatch) -> Result<()> + Send)>,
) -> Result<u64> {
    let scan_error = |e| AtlasError::database(format!("reading the keys of '{table}'"), e);
    let mut deliver = |batch| (on_batch.lock().expect("key batch handler"))(batch);
    if columns.iter().all(binary_scannable) {
        // The binary protocol: numbers, dates and times arrive as the
        // server stores them, neither printed by the server nor parsed here.
        let mut batcher = binary_scan::ValueBatcher::new(table, columns, batch_rows);
        for sql in statements {
            let mut result = conn.exec_iter(sql, ()).await.map_err(scan_error)?;
            while let Some(row) = result.next().await.map_err(scan_error)? {
                batcher.push_row(&row, &mut deliver)?;
            }
            result.drop_result().await.map_err(scan_error)?;
        }
        return batcher.flush(&mut deliver);
    }
    // The text protocol: values arrive as text, nothing to decode.
    let mut batcher = TextBatcher::new(columns, batch_rows);
    for sql in statements {
        let mut result = conn.query_iter(sql).await.map_err(scan_error)?;
        while let Some(row) = result.next().await.map_err(scan_error)? {
            batcher.push_row(row_texts(&row, columns.len()), &mut deliver)?;
        }
        result.drop_result().await.map_err(scan_error)?;
    }
    batcher.flush(&mut deliver)
}

/// Whether the binary protocol hands over `column`'s values in a form the
/// scan takes without the text protocol's printing: numbers, dates, date
/// and times, and text (TIME, which arrives as an interval, and the types
/// read as text through an expression keep the text protocol).
fn binary_scannable(column: &TargetColumn) -> bool {
    let sql_type = column.sql_type.to_ascii_lowercase();
    match column.data_type {
        DataType::Int8
        | DataType::Int16
        | DataType::Int32
        | DataType::Int64
        | DataType::UInt64
        | DataType::Float32
        | DataType::Float64
        | DataType::Boolean
        | DataType::Date32
        | DataType::Timestamp(TimeUnit::Microsecond, None) => !is_bit(column),
        DataType::Utf8 => [
            "char",
            "varchar",
            "tinytext",
            "text",
            "mediumtext",
            "longtext",
        ]
        .iter()
        .any(|t| sql_type == *t || sql_type.starts_with(&format!("{t}("))),
        _ => false,
    }
}

mod binary_scan;

/// The values of a text-protocol row as text (`None` for NULL).
fn row_texts(row: &Row, width: usize) -> impl Iterator<Item = Option<&str>> {
    (0..width).map(move |i| match row.as_ref(i) {
        Some(Value::Bytes(bytes)) => std::str::from_utf8(bytes).ok(),
        _ => None,
    })
}

/// The catalog and metadata queries, on any connection (the pool's or the
/// import transaction's).
#[async_trait]
impl Catalog for Conn {
    async fn describe(&mut self, table: &TableRef) -> Result<Option<TargetTable>> {
        let conn = self;
        type ColumnRow = (
            String,
            String,
            String,
            i64,
            i64,
            i64,
            i64,
            i64,
            i64,
            String,
            i64,
        );
        // information_schema columns come back as binary strings on some servers:
        // cast everything to what the driver decodes.
        let rows: Vec<ColumnRow> = conn
            .exec(
                "SELECT CAST(column_name AS CHAR), CAST(data_type AS CHAR), CAST(column_type AS CHAR),
                        CAST(is_nullable = 'YES' AS SIGNED),
                        CAST((column_default IS NOT NULL AND UPPER(column_default) <> 'NULL')
                             OR extra LIKE '%auto_increment%' OR extra LIKE '%GENERATED%' AS SIGNED),
                        CAST(COALESCE(numeric_precision, 0) AS SIGNED),
                        CAST(COALESCE(numeric_scale, 0) AS SIGNED),
                        CAST(CASE WHEN data_type IN ('char', 'varchar')
                             THEN character_maximum_length ELSE 0 END AS SIGNED),
                        CAST(extra LIKE '%VIRTUAL GENERATED%' OR extra LIKE '%STORED GENERATED%'
                             AS SIGNED),
                        CAST(COALESCE(collation_name, '') AS CHAR),
                        CAST(VERSION() LIKE '%MariaDB%' AS SIGNED)
                 FROM information_schema.columns
                 WHERE table_schema = COALESCE(?, DATABASE()) AND table_name = ?
                 ORDER BY ordinal_position",
                table_params(table),
            )
            .await
            .map_err(|e| AtlasError::database(format!("reading the columns of '{table}'"), e))?;
        if rows.is_empty() {
            return Ok(None);
        }
        let has_timestamp = rows
            .iter()
            .any(|row| row.1.eq_ignore_ascii_case("timestamp"));
        let unzoned_in = match has_timestamp {
            true => default_time_zone(conn).await?,
            false => None,
        };
        let columns = rows
            .into_iter()
            .map(
                |(
                    name,
                    data_type,
                    column_type,
                    nullable,
                    has_default,
                    precision,
                    scale,
                    max_chars,
                    generated,
                    collation,
                    mariadb,
                )| {
                    let data_type = data_type_for(
                        &data_type.to_ascii_lowercase(),
                        &column_type.to_ascii_lowercase(),
                        precision,
                        scale,
                    );
                    let text_form = TextForm::of(DbKind::MySql, &column_type);
                    // An ENUM stores the label a value names, a SET the
                    // members; under a case-insensitive collation `A` names
                    // `a`, and no two labels differ by case alone.
                    let lower_type = column_type.to_ascii_lowercase();
                    let seconds_precision =
                        seconds_precision(&data_type, &column_type, mariadb != 0);
                    let key_form = match collation.ends_with("_ci") {
                        true if lower_type.starts_with("enum(") => {
                            Some(KeyForm::Value(ValueForm::CaseInsensitive))
                        }
                        true if lower_type.starts_with("set(") => {
                            Some(KeyForm::Value(ValueForm::MemberSet {
                                case_insensitive: true,
                            }))
                        }
                        // A TIME at the digits its server keeps.
                        _ => KeyForm::of(DbKind::MySql, &column_type, text_form, &data_type).map(
                            |form| seconds_precision.map_or(form, |kept| form.at_precision(kept)),
                        ),
                    };
                    TargetColumn {
                        name,
                        key_form,
                        seconds_precision,
                        zero_padded_width: zero_padded_width(&column_type),
                        numbers_name_labels: lower_type.starts_with("enum(")
                            || lower_type.starts_with("set("),
                        // TIMESTAMP (not DATETIME) reads a time in the
                        // session's zone.
                        unzoned_in: lower_type
                            .starts_with("timestamp")
                            .then(|| unzoned_in.clone())
                            .flatten(),
                        data_type,
                        text_form,
                        sql_type: column_type,
                        nullable: nullable != 0,
                        has_default: has_default != 0,
                        generated: generated != 0,
                        max_chars: usize::try_from(max_chars).ok().filter(|&n| n > 0),
                    }
                },
            )
            .collect();
        Ok(Some(TargetTable {
            name: table.key(),
            columns,
        }))
    }

    async fn file_imported(&mut self, file_hash: &str, table: &TableRef) -> Result<bool> {
        let conn = self;
        let found: Option<i64> = conn
            .exec_first(file_imported_sql(DbKind::MySql), (file_hash, table.key()))
            .await
            .map_err(|e| AtlasError::database("reading file_imports", e))?;
        Ok(found.is_some())
    }

    async fn committed_import(&mut self, import_id: &str) -> Result<Option<(u64, u64)>> {
        let found: Option<(Option<i64>, Option<i64>)> = self
            .exec_first(super::committed_import_sql(DbKind::MySql), (import_id,))
            .await
            .map_err(|e| AtlasError::database("reading import_history", e))?;
        let count = |n: Option<i64>| n.unwrap_or(0).max(0) as u64;
        Ok(found.map(|(inserted, updated)| (count(inserted), count(updated))))
    }

    async fn complete_history(
        &mut self,
        import_id: &str,
        counts: &crate::report::ImportCounts,
    ) -> Result<()> {
        let mut values: Vec<Value> = super::completed_counts(counts)
            .into_iter()
            .map(Value::Int)
            .collect();
        values.push(Value::from(import_id));
        self.exec_drop(
            super::complete_history_sql(DbKind::MySql),
            Params::Positional(values),
        )
        .await
        .map_err(|e| AtlasError::database("completing the import's import_history row", e))
    }

    async fn record_refusal(&mut self, import_id: &str, refusal: &str, report: &str) -> Result<()> {
        let error = |e| AtlasError::database("recording a refusal in import_refusals", e);
        let sql = super::RefusalSql::of(DbKind::MySql);
        // (Racing tasks may both create it: the loser's error is moot.)
        let _ = self.query_drop(super::CREATE_IMPORT_REFUSALS).await;
        self.exec_drop(sql.delete_one, (import_id, refusal))
            .await
            .map_err(error)?;
        self.exec_drop(sql.insert, (import_id, refusal, report))
            .await
            .map_err(error)
    }

    async fn take_refusals(&mut self, import_id: &str) -> Result<Vec<String>> {
        let error = |e| AtlasError::database("reading import_refusals", e);
        let sql = super::RefusalSql::of(DbKind::MySql);
        let _ = self.query_drop(super::CREATE_IMPORT_REFUSALS).await;
        let reports: Vec<String> = self.exec(sql.select, (import_id,)).await.map_err(error)?;
        self.exec_drop(sql.delete_all, (import_id,))
            .await
            .map_err(error)?;
        Ok(reports)
    }

    async fn insert_history(&mut self, entry: &HistoryEntry) -> Result<()> {
        let conn = self;
        let values = entry
            .values()
            .into_iter()
            .map(|value| match value {
                HistoryValue::Time(t) => Value::from(t.format("%Y-%m-%d %H:%M:%S%.6f").to_string()),
                HistoryValue::Text(t) => t.map_or(Value::NULL, Value::from),
                HistoryValue::Count(n) => Value::Int(n),
            })
            .collect();
        conn.exec_drop(
            insert_history_sql(DbKind::MySql),
            Params::Positional(values),
        )
        .await
        .map_err(|e| AtlasError::database("recording the import in import_history", e))
    }
}

#[async_trait]
impl Database for MySqlDatabase {
    fn kind(&self) -> DbKind {
        DbKind::MySql
    }

    async fn catalog(&self) -> Result<Box<dyn Catalog + '_>> {
        Ok(Box::new(self.conn().await?))
    }

    fn display_url(&self) -> &str {
        &self.url
    }

    fn default_schema(&self) -> Option<&str> {
        self.default_schema.as_deref()
    }

    async fn ensure_metadata(&self) -> Result<()> {
        let mut conn = self.conn().await?;
        for (what, sql) in [
            ("creating file_imports", CREATE_FILE_IMPORTS.to_string()),
            ("creating import_history", create_import_history()),
        ] {
            conn.query_drop(sql)
                .await
                .map_err(|e| AtlasError::database(what, e))?;
        }
        if conn
            .query_drop(super::PROBE_HISTORY_IMPORT_ID)
            .await
            .is_err()
        {
            // (MySQL has no ADD COLUMN IF NOT EXISTS; another import may
            // have added it meanwhile.)
            let added = conn.query_drop(super::ADD_HISTORY_IMPORT_ID).await;
            if let Err(e) = added
                && conn
                    .query_drop(super::PROBE_HISTORY_IMPORT_ID)
                    .await
                    .is_err()
            {
                return Err(AtlasError::database("adding import_history.import_id", e));
            }
        }
        Ok(())
    }

    async fn scan_keys(
        &self,
        table: &TableRef,
        columns: &[TargetColumn],
        filter: Option<&KeyFilter>,
        // No location a later statement could use: rows are found by key.
        _locations: bool,
        batch_rows: usize,
        on_batch: &mut (dyn FnMut(RecordBatch) -> Result<()> + Send),
    ) -> Result<u64> {
        let mut conn = self.conn().await?;
        let mut statements = key_statements(&mut conn, table, columns, filter).await?;
        let on_batch = std::sync::Mutex::new(on_batch);
        // Several statements (a probe longer than a packet) are as many
        // passes over a table without an index on the column: a second
        // connection of its own (not the pool's, which the import's other
        // readers share) reads half of them meanwhile.
        let other = if statements.len() > 1 {
            Conn::new(self.opts.clone())
                .await
                .inspect_err(|e| {
                    // (A server at its connection limit, say: one reads them all.)
                    tracing::info!("Key check reads on one connection: a second one failed: {e}")
                })
                .ok()
        } else {
            None
        };
        let Some(mut other) = other else {
            return read_keys(&mut conn, statements, table, columns, batch_rows, &on_batch).await;
        };
        let second_half = statements.split_off(statements.len() / 2);
        let read = futures::future::try_join(
            read_keys(&mut conn, statements, table, columns, batch_rows, &on_batch),
            read_keys(
                &mut other,
                second_half,
                table,
                columns,
                batch_rows,
                &on_batch,
            ),
        )
        .await;
        other.disconnect().await.ok();
        let (first, second) = read?;
        Ok(first + second)
    }

    async fn table_stats(&self, table: &TableRef, key: &[TargetColumn]) -> Result<TableStats> {
        let mut conn = self.conn().await?;
        let error = |e| AtlasError::database(format!("reading the statistics of '{table}'"), e);
        let rows = estimated_rows(&mut conn, table).await.map_err(error)?;
        let indexes: Vec<(String, String)> = conn
            .exec(
                "SELECT CAST(index_name AS CHAR), CAST(column_name AS CHAR)
                 FROM information_schema.statistics
                 WHERE table_schema = COALESCE(?, DATABASE()) AND table_name = ?
                   AND seq_in_index = 1",
                table_params(table),
            )
            .await
            .map_err(error)?;
        let rows = rows.unwrap_or(0).max(0) as u64;
        let key_index = super::key_index(indexes, key);
        let mut distinct = Vec::new();
        // Best effort: a table still to be created has no sample.
        if super::wants_distinct_sample(key, &key_index)
            && let Ok(Some(sample)) = conn
                .query_first::<mysql_async::Row, _>(super::distinct_sample_sql(table, key))
                .await
        {
            let counts: Vec<i64> = (0..sample.len())
                .map(|i| sample.get::<i64, _>(i).unwrap_or(0))
                .collect();
            distinct = super::sampled_distinct(key, &counts, rows);
        }
        Ok(TableStats {
            rows,
            key_index,
            distinct,
        })
    }

    fn sql_type_for(&self, data_type: &DataType) -> String {
        sql_type_for(data_type)
    }

    /// DECIMAL holds at most 65 digits, 30 of them after the point; a wider
    /// decimal is kept as its text.
    fn new_column_type(&self, data_type: &DataType) -> DataType {
        match data_type {
            DataType::Decimal128(p, s) | DataType::Decimal256(p, s) if *p > 65 || *s > 30 => {
                DataType::Utf8
            }
            other => other.clone(),
        }
    }

    async fn begin(&self) -> Result<Box<dyn ImportTransaction>> {
        const BEGINNING: &str = "starting the import transaction";
        let begin_error = |e| AtlasError::database(BEGINNING, e);
        let relay = match self.relayable() {
            true => Some(
                Relay::start(self.opts.ip_or_hostname(), self.opts.tcp_port())
                    .await
                    .map_err(|e| AtlasError::database(BEGINNING, e))?,
            ),
            false => None,
        };
        let opts = match &relay {
            Some(relay) => mysql_async::OptsBuilder::from_opts(self.opts.clone())
                .ip_or_hostname(relay.address().ip().to_string())
                .tcp_port(relay.address().port())
                .into(),
            None => self.opts.clone(),
        };
        let mut conn = Conn::new(opts).await.map_err(begin_error)?;
        // Each statement sees what committed before it: the named lock, not the
        // snapshot, is what keeps other imports' rows out of the key scan.
        conn.query_drop("SET SESSION TRANSACTION ISOLATION LEVEL READ COMMITTED")
            .await
            .map_err(begin_error)?;
        let (max_packet, server_infile, version): (i64, i64, String) = conn
            .query_first(
                "SELECT CAST(@@max_allowed_packet AS SIGNED), CAST(@@local_infile AS SIGNED), \
                 CAST(VERSION() AS CHAR)",
            )
            .await
            .map_err(begin_error)?
            .unwrap_or((1 << 20, 0, String::new()));
        let load_data = self.local_infile && server_infile != 0;
        let write_method = self.choose_write_method(load_data, &version, relay.is_some())?;
        conn.query_drop("START TRANSACTION")
            .await
            .map_err(begin_error)?;
        Ok(Box::new(MySqlImport {
            conn,
            max_packet: usize::try_from(max_packet).unwrap_or(1 << 20),
            write_method,
            long_rows: match self.write_method.is_none() && load_data {
                true => LongRows::LoadData,
                false => LongRows::Refuse,
            },
            lock: None,
            created: None,
            relay,
        }))
    }
}

impl MySqlDatabase {
    /// Whether the import's connection goes through a [`Relay`], for array
    /// binding with pipelined requests: plain TCP to MariaDB 10.2 or later,
    /// where the URL leaves array binding possible.
    fn relayable(&self) -> bool {
        offers_array_binding(&self.version)
            && self.opts.ssl_opts().is_none()
            && self.opts.socket().is_none()
            && self.opts.compression().is_none()
            && matches!(self.write_method, None | Some(WriteMethod::ArrayBinding))
    }

    /// How this import's rows go in, on a server of `version` that allows
    /// `LOAD DATA LOCAL INFILE` or not (`load_data`, the URL's permission
    /// too), the connection `relayed` or not: the URL's `write-method` where
    /// it names one the server offers, else array binding where relayed (its
    /// requests pipelined), `LOAD DATA` where allowed, array binding on
    /// MariaDB 10.2 and later, INSERT.
    ///
    /// Pipelined array binding first: the server stores typed values without
    /// parsing text, ~20% less of its CPU than `LOAD DATA`, and, pipelined,
    /// never waits for the next request. Unpipelined (mysql_async builds each
    /// request while the server waits) it took as long as `LOAD DATA`, so
    /// `LOAD DATA` comes before it; it is 30% faster than multi-row INSERT
    /// where `LOAD DATA` is refused (benches/README.md).
    fn choose_write_method(
        &self,
        load_data: bool,
        version: &str,
        relayed: bool,
    ) -> Result<WriteMethod> {
        let array_binding = offers_array_binding(version);
        match self.write_method {
            Some(WriteMethod::ArrayBinding) if !array_binding => Err(AtlasError::Usage(format!(
                "write-method=array needs MariaDB 10.2 or later; the server is {version}"
            ))),
            Some(WriteMethod::LoadData) if !load_data => Err(AtlasError::Usage(
                "write-method=load-data needs LOAD DATA LOCAL INFILE, which the server \
                 (local_infile=0) or the URL (local-infile=false) refuses"
                    .into(),
            )),
            Some(method) => Ok(method),
            None if relayed && array_binding => Ok(WriteMethod::ArrayBinding),
            None if load_data => Ok(WriteMethod::LoadData),
            None if array_binding => Ok(WriteMethod::ArrayBinding),
            None => Ok(WriteMethod::Insert),
        }
    }
}

/// Whether a server that calls itself `version` (`VERSION()`) executes array
/// binding (`COM_STMT_BULK_EXECUTE`): MariaDB from 10.2.
fn offers_array_binding(version: &str) -> bool {
    if !version.contains("MariaDB") {
        return false;
    }
    // A replication-compatible prefix (`5.5.5-10.11.2-MariaDB`) comes first
    // on some servers.
    let version = version.strip_prefix("5.5.5-").unwrap_or(version);
    let mut parts = version
        .split(|c: char| !c.is_ascii_digit())
        .map(|part| part.parse::<u32>().unwrap_or(0));
    let (major, minor) = (parts.next().unwrap_or(0), parts.next().unwrap_or(0));
    (major, minor) >= (10, 2)
}

/// The import transaction on MySQL/MariaDB, on a connection of its own.
struct MySqlImport {
    conn: Conn,
    /// `max_allowed_packet`: an INSERT and its parameters must fit in it.
    max_packet: usize,
    /// How rows go in.
    write_method: WriteMethod,
    /// The named lock held, released at the end.
    lock: Option<String>,
    /// A table this import created (and committed, as DDL does): dropped on rollback.
    created: Option<TableRef>,
    /// What array binding does with a row longer than a request.
    long_rows: LongRows,
    /// The relay `conn` goes through, where array binding is pipelined.
    /// (After `conn`: dropped last, it closes the connection's socket.)
    relay: Option<Relay>,
}

impl MySqlImport {
    async fn simple(&mut self, sql: &str, what: &str) -> Result<()> {
        self.conn
            .query_drop(sql)
            .await
            .map_err(|e| AtlasError::database(what.to_string(), e))
    }

    async fn release_lock(&mut self) {
        if let Some(name) = self.lock.take() {
            self.conn
                .exec_drop("SELECT RELEASE_LOCK(?)", (name,))
                .await
                .ok();
        }
    }

    async fn close(mut self) {
        self.release_lock().await;
        self.conn.disconnect().await.ok();
    }
}

#[async_trait]
impl ImportTransaction for MySqlImport {
    fn kind(&self) -> DbKind {
        DbKind::MySql
    }

    fn catalog(&mut self) -> &mut dyn Catalog {
        &mut self.conn
    }

    async fn execute(&mut self, sql: String) -> Result<u64> {
        self.conn
            .query_drop(sql)
            .await
            .map_err(|e| AtlasError::database("updating existing rows", e))?;
        Ok(self.conn.affected_rows())
    }

    async fn create_table(&mut self, table: &TableRef, columns: &[ColumnSpec]) -> Result<()> {
        let sql = create_table_sql(
            sql_type_for,
            table,
            columns,
            "BIGINT AUTO_INCREMENT PRIMARY KEY",
        ) + " CHARACTER SET utf8mb4";
        // DDL commits implicitly (nothing was written yet); start again after it.
        self.simple(&sql, &format!("creating table '{table}'"))
            .await?;
        self.created = Some(table.clone());
        self.simple("START TRANSACTION", "starting the import transaction")
            .await
    }

    async fn lock_table(&mut self, table: &TableRef) -> Result<()> {
        let error = |e| AtlasError::database(format!("locking table '{table}'"), e);
        // Lock names are at most 64 characters: name the table by its hash.
        let name: String = self
            .conn
            .exec_first(
                "SELECT CAST(CONCAT('atlas:', LEFT(SHA2(?, 256), 58)) AS CHAR)",
                (table.key(),),
            )
            .await
            .map_err(error)?
            .unwrap_or_default();
        let got: Option<Option<i64>> = self
            .conn
            .exec_first("SELECT GET_LOCK(?, ?)", (&name, LOCK_TIMEOUT_SECONDS))
            .await
            .map_err(error)?;
        if got.flatten() != Some(1) {
            return Err(AtlasError::Usage(format!(
                "another import into '{table}' held its lock for more than {LOCK_TIMEOUT_SECONDS} s"
            )));
        }
        self.lock = Some(name);
        Ok(())
    }

    async fn estimated_rows(&mut self, table: &TableRef) -> Result<Option<u64>> {
        let rows = estimated_rows(&mut self.conn, table)
            .await
            .map_err(|e| AtlasError::database(format!("reading the statistics of '{table}'"), e))?;
        Ok(rows.map(|r| r.max(0) as u64))
    }

    async fn write_chunk(
        &mut self,
        table: &TableRef,
        columns: &[TargetColumn],
        chunk: &mut ChunkStream<'_>,
    ) -> Result<u64> {
        match self.write_method {
            WriteMethod::ArrayBinding => match &self.relay {
                Some(relay) => {
                    pipelined::bind_array_pipelined(
                        &mut self.conn,
                        relay,
                        table,
                        columns,
                        chunk,
                        self.max_packet,
                        self.long_rows,
                    )
                    .await
                }
                None => {
                    write::bind_array_chunk(&mut self.conn, table, columns, chunk, self.max_packet)
                        .await
                }
            },
            WriteMethod::LoadData => {
                write::load_chunk(&mut self.conn, table, columns, chunk, 0).await
            }
            WriteMethod::Insert => {
                write::insert_chunk(&mut self.conn, table, columns, chunk, self.max_packet).await
            }
        }
    }

    async fn record_file(&mut self, record: &FileRecord) -> Result<()> {
        self.conn
            .exec_drop(
                "INSERT INTO file_imports (file_hash, file_name, table_name, record_count)
                 VALUES (?, ?, ?, ?)
                 ON DUPLICATE KEY UPDATE
                   file_name = VALUES(file_name),
                   imported_at = CURRENT_TIMESTAMP,
                   record_count = VALUES(record_count)",
                (
                    &record.file_hash,
                    &record.file_name,
                    &record.table_name,
                    i32::try_from(record.record_count).unwrap_or(i32::MAX),
                ),
            )
            .await
            .map_err(|e| AtlasError::database("recording the file in file_imports", e))
    }

    async fn commit(mut self: Box<Self>) -> Result<()> {
        self.simple("COMMIT", "committing the import").await?;
        self.close().await;
        Ok(())
    }

    async fn rollback(mut self: Box<Self>) -> Result<()> {
        let rolled_back = self.simple("ROLLBACK", "rolling back the import").await;
        if let Some(table) = self.created.take() {
            // Leave the database as it was: the table was created for this import.
            let sql = format!("DROP TABLE IF EXISTS {}", table.sql());
            self.simple(
                &sql,
                &format!("dropping table '{table}' after the rollback"),
            )
            .await?;
        }
        self.close().await;
        rolled_back
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn catalog_types() {
        assert_eq!(data_type_for("tinyint", "tinyint(1)", 3, 0), DataType::Int8);
        assert_eq!(
            TextForm::of(DbKind::MySql, "tinyint(1) unsigned").map(TextForm::data_type),
            Some(DataType::Int16)
        );
        assert_eq!(
            data_type_for("int", "int(10) unsigned", 10, 0),
            DataType::Int64
        );
        assert_eq!(
            data_type_for("decimal", "decimal(12,2)", 12, 2),
            DataType::Decimal128(12, 2)
        );
        assert_eq!(data_type_for("geometry", "geometry", 0, 0), DataType::Null);
    }

    #[test]
    fn array_binding_from_mariadb_10_2() {
        assert!(offers_array_binding("10.11.19-MariaDB-0+deb12u1"));
        assert!(offers_array_binding("5.5.5-10.2.7-MariaDB"));
        assert!(offers_array_binding("11.4.2-MariaDB"));
        assert!(!offers_array_binding("10.1.48-MariaDB"));
        assert!(!offers_array_binding("8.0.36"));
        assert!(!offers_array_binding("8.4.0-commercial"));
    }
}
