//! PostgreSQL: `LOCK TABLE ... IN SHARE ROW EXCLUSIVE MODE` serializes imports
//! into a table while readers go on; each chunk is one
//! `COPY ... FROM STDIN (FORMAT binary)` inside the import transaction, encoded
//! from Arrow by `pgpq`.

use std::sync::Arc;

use async_trait::async_trait;
use bytes::BytesMut;
use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use futures::{StreamExt, TryStreamExt};
use pgpq::ArrowToPostgresBinaryEncoder;
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions, PgSslMode};
use sqlx::{AssertSqlSafe, Connection, PgConnection, Postgres, Row, Transaction};

use super::catalog::Through;
use super::dialect::{Dialect, StageTable};
use super::text_rows::{TextDialect, encode_rows};
use super::{
    Catalog, ChunkStream, Database, DbKind, FileRecord, HistoryEntry, ImportTransaction, KeyFilter,
    TableStats, column_list, create_table_sql, mask_password,
};
use crate::error::{AtlasError, Result};
use crate::key_form::{KeyForm, ValueForm};
use crate::names::TableRef;
use crate::schema::{ColumnSpec, FractionRounding, SecondsPrecision, TargetColumn, TargetTable};
use crate::typed_text::TextForm;

/// Send COPY data to the server in pieces of about this size, small enough to
/// keep the server busy while the next rows are encoded.
const COPY_SEND_BYTES: usize = 256 << 10;

/// PostgreSQL's SQL: `$n` parameters, typed literals, hashed `= ANY(ARRAY[...])`
/// lists, stages in `pg_temp`.
#[derive(Debug)]
pub(crate) struct PostgresDialect;

impl Dialect for PostgresDialect {
    fn placeholder(&self, i: usize) -> String {
        format!("${i}")
    }

    fn date_literal(&self, date: &str) -> String {
        format!("DATE '{date}'")
    }

    fn timestamp_literal(&self, text: &str, zoned: bool) -> String {
        if zoned {
            format!("TIMESTAMPTZ '{text}+00'")
        } else {
            format!("TIMESTAMP '{text}'")
        }
    }

    /// A hashed array, which a parallel scan can use; cast to the column's
    /// type where it is not text (uuid, jsonb, enums read their literals then).
    fn any_of(&self, column: &str, literals: &[String], element_type: Option<&str>) -> String {
        let list = literals.join(",");
        match element_type {
            Some(t) => format!("{column} = ANY(ARRAY[{list}]::{t}[])"),
            None => format!("{column} = ANY(ARRAY[{list}])"),
        }
    }

    fn temp_table(&self, name: &str) -> String {
        format!("pg_temp.{name}")
    }

    fn stage_definition(&self, stage: &StageTable<'_>) -> String {
        format!(
            "CREATE TEMP TABLE {} AS SELECT {}, 0::bigint AS {} FROM {} WITH NO DATA",
            stage.name, stage.columns, stage.row, stage.target
        )
    }

    /// The `ctid` the key scan read as `block << 16 | offset` (a `bigint`:
    /// the stage is written by binary COPY, which has no form for `tid` in
    /// Arrow), made a `tid` again so that the row is fetched by it (a
    /// `Tid Scan` per staged row).
    fn location_equality(&self, target: &str, location: &str) -> Option<String> {
        Some(format!(
            "{target}.ctid = ('(' || ({location} >> 16) || ',' || ({location} & 65535) || ')')::tid"
        ))
    }

    /// Statistics, so the planner sizes the stage right and hashes it.
    /// Statistics of the key columns only: the
    /// others (text above all) cost most of an `ANALYZE` of the whole stage
    /// (0.10 s against 0.22–0.29 s for 1M rows of eleven columns) and steer
    /// no plan.
    fn prepare_join(&self, _name: &str, stage: &str, key: &[TargetColumn]) -> Vec<String> {
        vec![format!("ANALYZE {stage} ({})", column_list(key))]
    }

    fn text_form(&self, sql_type: &str) -> Option<TextForm> {
        TextForm::postgres(sql_type)
    }

    fn text_key_form(&self, sql_type: &str) -> Option<KeyForm> {
        match ValueForm::of_postgres(sql_type) {
            form @ (ValueForm::Interval(_)
            | ValueForm::Inet
            | ValueForm::MacAddr
            | ValueForm::MacAddr8
            | ValueForm::CaseInsensitive
            | ValueForm::BlankPadded
            | ValueForm::Time(_)
            | ValueForm::TimeTz(_)
            | ValueForm::IntegerRange
            | ValueForm::DateRange
            | ValueForm::ContinuousRange(_)
            | ValueForm::BitString
            | ValueForm::TsVector
            | ValueForm::Geometric(_)) => Some(KeyForm::Value(form)),
            _ => None,
        }
    }

    fn nested_column(&self) -> (&'static str, Option<TextForm>) {
        ("jsonb", self.text_form("jsonb"))
    }
}

/// A PostgreSQL database.
#[derive(Debug)]
pub struct PostgresDatabase {
    pool: PgPool,
    url: String,
    /// `current_schema()` of the connection: where unqualified names live.
    default_schema: Option<String>,
}

impl PostgresDatabase {
    /// Connects to `url` (`postgres://...`).
    pub async fn connect(url: &str) -> Result<Self> {
        let masked = mask_password(url);
        let failed = |e| AtlasError::database(format!("connecting to {masked}"), e);
        let mut options: PgConnectOptions = url.parse().map_err(failed)?;
        // One direct connection first, so that a refused or failed login is
        // reported as what it is rather than as a pool timeout.
        let probe = if plain_first(url, &options) {
            let plain = options.clone().ssl_mode(PgSslMode::Disable);
            match PgConnection::connect_with(&plain).await {
                Ok(probe) => {
                    options = plain;
                    Ok(probe)
                }
                // A server that wants TLS here too (`hostssl` in pg_hba.conf):
                // as `prefer` would have connected.
                Err(e) if refused_without_tls(&e) => PgConnection::connect_with(&options).await,
                Err(e) => Err(e),
            }
        } else {
            PgConnection::connect_with(&options).await
        }
        .map_err(failed)?;
        probe.close().await.ok();
        let pool = PgPoolOptions::new()
            .max_connections(4)
            // A server that is down or refuses should fail the import quickly,
            // not after the pool's default 30 s of retries.
            .acquire_timeout(std::time::Duration::from_secs(5))
            .connect_with(options)
            .await
            .map_err(failed)?;
        let default_schema: Option<String> = sqlx::query_scalar("SELECT current_schema()::text")
            .fetch_one(&pool)
            .await
            .map_err(|e| AtlasError::database(format!("connecting to {masked}"), e))?;
        Ok(Self {
            pool,
            url: masked,
            default_schema,
        })
    }
}

/// Whether to connect without TLS first: the server is on this machine
/// (TLS protects nothing there) and the URL and `PGSSLMODE` leave the choice
/// to the default `prefer`. TLS there costs about 90 ms a connection: sqlx
/// sets no `TCP_NODELAY`, so the handshake's second records wait twice for
/// the server's delayed ACK; an import opens three connections.
fn plain_first(url: &str, options: &PgConnectOptions) -> bool {
    let sslmode_named = url::Url::parse(url).is_ok_and(|url| {
        url.query_pairs()
            .any(|(name, _)| name == "sslmode" || name == "ssl-mode")
    }) || std::env::var_os("PGSSLMODE").is_some();
    !sslmode_named
        && super::is_loopback_host(options.get_host())
        && matches!(options.get_ssl_mode(), PgSslMode::Prefer)
}

/// Whether an `EXPLAIN (FORMAT JSON)` plan reads the update's target
/// (`atlas_t`) by lookups only: index scans, or fetches by `ctid`.
fn looks_target_rows_up(plan: &serde_json::Value) -> bool {
    fn target_scans<'a>(node: &'a serde_json::Value, found: &mut Vec<&'a str>) {
        match node {
            serde_json::Value::Object(fields) => {
                if fields.get("Alias").and_then(|a| a.as_str()) == Some("atlas_t")
                    && let Some(kind) = fields.get("Node Type").and_then(|k| k.as_str())
                    && kind != "ModifyTable"
                {
                    found.push(kind);
                }
                fields.values().for_each(|v| target_scans(v, found));
            }
            serde_json::Value::Array(items) => items.iter().for_each(|v| target_scans(v, found)),
            _ => {}
        }
    }
    let mut found = Vec::new();
    target_scans(plan, &mut found);
    !found.is_empty()
        && found
            .iter()
            .all(|kind| matches!(*kind, "Index Scan" | "Index Only Scan" | "Tid Scan"))
}

/// Whether the server refused a connection for want of TLS (no pg_hba.conf
/// entry matches a connection without it).
fn refused_without_tls(error: &sqlx::Error) -> bool {
    error
        .as_database_error()
        .and_then(|e| e.code())
        .is_some_and(|code| code == "28000")
}

fn sql_type_for(data_type: &DataType) -> String {
    let name = match data_type {
        DataType::Int8 | DataType::Int16 | DataType::UInt8 => "SMALLINT",
        DataType::Int32 | DataType::UInt16 => "INTEGER",
        DataType::Int64 | DataType::UInt32 | DataType::UInt64 => "BIGINT",
        DataType::Float16 | DataType::Float32 => "REAL",
        DataType::Float64 => "DOUBLE PRECISION",
        DataType::Decimal32(p, s)
        | DataType::Decimal64(p, s)
        | DataType::Decimal128(p, s)
        | DataType::Decimal256(p, s) => return format!("NUMERIC({p},{s})"),
        DataType::Boolean => "BOOLEAN",
        DataType::Date32 | DataType::Date64 => "DATE",
        DataType::Timestamp(_, None) => "TIMESTAMP",
        DataType::Timestamp(_, Some(_)) => "TIMESTAMPTZ",
        DataType::Binary => "BYTEA",
        _ => "TEXT",
    };
    name.to_string()
}

/// Maps a catalog type to the Arrow type values are coerced to and COPY encodes;
/// `DataType::Null` marks a type this version cannot write.
fn data_type_for(type_name: &str, typmod: i32) -> DataType {
    match type_name {
        "int2" => DataType::Int16,
        "int4" => DataType::Int32,
        "int8" => DataType::Int64,
        "float4" => DataType::Float32,
        "float8" => DataType::Float64,
        "numeric" if typmod >= 4 && ((typmod - 4) >> 16) & 0xffff <= 38 => {
            let precision = (((typmod - 4) >> 16) & 0xffff) as u8;
            let scale = ((typmod - 4) & 0xffff) as i8;
            DataType::Decimal128(precision, scale)
        }
        // Unconstrained NUMERIC, or wider than 38 digits, holds more than any
        // Arrow decimal: exact text.
        "numeric" => DataType::Utf8,
        "bool" => DataType::Boolean,
        "text" | "varchar" | "bpchar" | "name" | "citext" => DataType::Utf8,
        // Read and checked by the coercion's text forms (uuid, json, jsonb,
        // bytea), or carried as text for the server's own input function
        // (written by text COPY: see `needs_text_copy`).
        "uuid" | "json" | "jsonb" | "interval" | "inet" | "cidr" | "macaddr" | "macaddr8"
        | "time" | "timetz" | "bit" | "varbit" | "xml" | "tsvector" | "tsquery" | "point"
        | "line" | "lseg" | "box" | "path" | "polygon" | "circle" | "int4range" | "int8range"
        | "numrange" | "tsrange" | "tstzrange" | "daterange" => DataType::Utf8,
        "bytea" => DataType::Binary,
        // Arrays and enum labels, as their text input reads them.
        "array" | "enum" => DataType::Utf8,
        "date" => DataType::Date32,
        "timestamp" => DataType::Timestamp(TimeUnit::Microsecond, None),
        "timestamptz" => DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
        _ => DataType::Null,
    }
}

const CREATE_FILE_IMPORTS: &str = "CREATE TABLE IF NOT EXISTS file_imports (
    id BIGSERIAL PRIMARY KEY,
    file_hash VARCHAR(64) NOT NULL,
    file_name VARCHAR(500),
    table_name VARCHAR(255) NOT NULL,
    imported_at TIMESTAMP DEFAULT now(),
    record_count INTEGER,
    UNIQUE (file_hash, table_name)
)";

fn create_import_history() -> String {
    super::create_import_history_sql("BIGSERIAL PRIMARY KEY", "TIMESTAMP", "BIGINT")
}

/// The `TimeZone` a session of this user on this database gets, where it
/// is not UTC and names a zone Arrow knows: what `psql \copy` and every
/// other client read a `timestamptz` written without a zone in (sqlx's
/// sessions are set to UTC). `PGTZ` where set (libpq's clients send it),
/// else the user's and the database's settings (`ALTER ROLE/DATABASE ...
/// SET timezone`, in PostgreSQL's order: the user in this database, the
/// user, the database, every user), else the server's configuration
/// (`pg_file_settings` where the user may read it, else `log_timezone`,
/// which initdb sets to the same zone).
async fn session_time_zone(conn: &mut PgConnection) -> Result<Option<String>> {
    let configured = |e| AtlasError::database("reading the database's time zone".to_string(), e);
    let mut zone: Option<String> = std::env::var("PGTZ").ok().filter(|z| !z.is_empty());
    if zone.is_none() {
        zone = sqlx::query_scalar(
            "SELECT substr(setting, length('timezone=') + 1)
             FROM pg_db_role_setting s CROSS JOIN LATERAL unnest(s.setconfig) AS setting
             WHERE lower(setting) LIKE 'timezone=%'
               AND s.setdatabase IN (0, (SELECT oid FROM pg_database WHERE datname = current_database()))
               AND s.setrole IN (0, (SELECT oid FROM pg_roles WHERE rolname = session_user))
             ORDER BY s.setdatabase <> 0 AND s.setrole <> 0 DESC, s.setrole <> 0 DESC,
                      s.setdatabase <> 0 DESC
             LIMIT 1",
        )
        .fetch_optional(&mut *conn)
        .await
        .map_err(configured)?;
    }
    if zone.is_none() {
        // The configuration files are readable by superusers and
        // pg_read_all_settings only.
        let files_readable: bool = sqlx::query_scalar(
            "SELECT has_table_privilege('pg_catalog.pg_file_settings', 'SELECT')",
        )
        .fetch_one(&mut *conn)
        .await
        .map_err(configured)?;
        let setting = match files_readable {
            // Not set in the files: the server's own default.
            true => {
                "SELECT COALESCE((SELECT setting FROM pg_file_settings
                     WHERE lower(name) = 'timezone' AND applied
                     ORDER BY seqno DESC LIMIT 1), 'GMT')"
            }
            false => "SELECT current_setting('log_timezone')",
        };
        zone = Some(
            sqlx::query_scalar(setting)
                .fetch_one(&mut *conn)
                .await
                .map_err(configured)?,
        );
    }
    Ok(zone.and_then(|zone| crate::convert::zone_other_than_utc(&zone)))
}

/// Whether PostgreSQL reads a value of `base_type` (as `format_type`
/// prints it) written without a zone in the session's `TimeZone`:
/// timestamptz, timetz, tstzrange and arrays of them.
fn reads_session_zone(base_type: &str) -> bool {
    base_type.contains("with time zone") || base_type.starts_with("tstzrange")
}

/// The catalog and metadata queries, on any connection (the pool's or the
/// import transaction's).
#[async_trait]
impl Catalog for PgConnection {
    async fn describe(&mut self, table: &TableRef) -> Result<Option<TargetTable>> {
        let conn = self;
        // A domain is read as its base type (with the domain's name shown and
        // its constraints left to the server); arrays and enums by their kind.
        let rows = sqlx::query(
            "SELECT a.attname::text, format_type(a.atttypid, a.atttypmod),
                    CASE WHEN b.typcategory = 'A' THEN 'array'
                         WHEN b.typtype = 'e' THEN 'enum'
                         ELSE b.typname::text END,
                    a.attnotnull, (a.atthasdef OR a.attidentity <> '' OR a.attgenerated <> ''),
                    CASE WHEN t.typtype = 'd' THEN t.typtypmod ELSE a.atttypmod END,
                    format_type(b.oid, CASE WHEN t.typtype = 'd' THEN t.typtypmod ELSE a.atttypmod END),
                    a.attgenerated <> ''
             FROM pg_attribute a JOIN pg_type t ON t.oid = a.atttypid
             JOIN pg_type b ON b.oid = CASE WHEN t.typtype = 'd' THEN t.typbasetype ELSE t.oid END
             WHERE a.attrelid = to_regclass($1) AND a.attnum > 0 AND NOT a.attisdropped
             ORDER BY a.attnum",
        )
        .bind(table.sql())
        .fetch_all(&mut *conn)
        .await
        .map_err(|e| AtlasError::database(format!("reading the columns of '{table}'"), e))?;
        if rows.is_empty() {
            return Ok(None);
        }
        let reads_zone = |row: &sqlx::postgres::PgRow| reads_session_zone(&row.get::<String, _>(6));
        let unzoned_in = match rows.iter().any(reads_zone) {
            true => session_time_zone(conn).await?,
            false => None,
        };
        let columns = rows
            .iter()
            .map(|row| {
                let type_name: String = row.get(2);
                let not_null: bool = row.get(3);
                let typmod: i32 = row.get(5);
                let max_chars = (matches!(type_name.as_str(), "varchar" | "bpchar") && typmod > 4)
                    .then(|| (typmod - 4) as usize);
                let sql_type: String = row.get(1);
                // A domain reads and compares text as its base type does.
                let base_type: String = row.get(6);
                let data_type = data_type_for(&type_name, typmod);
                let text_form = TextForm::of(DbKind::Postgres, &base_type);
                // timestamp(p): p digits, or six without a modifier.
                // A zone written into a `timestamp` is dropped.
                let seconds_precision = matches!(type_name.as_str(), "timestamp" | "timestamptz")
                    .then(|| {
                        let digits = u8::try_from(typmod).unwrap_or(6);
                        let precision =
                            SecondsPrecision::new(digits, FractionRounding::HalfAwayFromZero);
                        match type_name.as_str() {
                            "timestamp" => precision.ignoring_written_zone(),
                            _ => precision,
                        }
                    });
                TargetColumn {
                    name: row.get(0),
                    key_form: KeyForm::of(DbKind::Postgres, &base_type, text_form, &data_type),
                    seconds_precision,
                    text_form,
                    sql_type,
                    data_type,
                    nullable: !not_null,
                    has_default: row.get(4),
                    generated: row.get(7),
                    max_chars,
                    zero_padded_width: None,
                    numbers_name_labels: false,
                    unzoned_in: reads_zone(row).then(|| unzoned_in.clone()).flatten(),
                }
            })
            .collect();
        Ok(Some(TargetTable {
            name: table.key(),
            columns,
        }))
    }

    async fn file_imported(&mut self, file_hash: &str, table: &TableRef) -> Result<bool> {
        super::file_imported::<sqlx::Postgres>(self, DbKind::Postgres, file_hash, table).await
    }

    async fn insert_history(&mut self, entry: &HistoryEntry) -> Result<()> {
        super::insert_history::<sqlx::Postgres>(self, DbKind::Postgres, entry).await
    }

    async fn committed_import(&mut self, import_id: &str) -> Result<Option<(u64, u64)>> {
        super::committed_import::<sqlx::Postgres>(self, DbKind::Postgres, import_id).await
    }

    async fn complete_history(
        &mut self,
        import_id: &str,
        counts: &crate::report::ImportCounts,
    ) -> Result<()> {
        super::complete_history::<sqlx::Postgres>(self, DbKind::Postgres, import_id, counts).await
    }

    async fn record_refusal(&mut self, import_id: &str, refusal: &str, report: &str) -> Result<()> {
        super::record_refusal::<sqlx::Postgres>(self, DbKind::Postgres, import_id, refusal, report)
            .await
    }

    async fn take_refusals(&mut self, import_id: &str) -> Result<Vec<String>> {
        super::take_refusals::<sqlx::Postgres>(self, DbKind::Postgres, import_id).await
    }
}

#[async_trait]
impl Database for PostgresDatabase {
    fn kind(&self) -> DbKind {
        DbKind::Postgres
    }

    async fn catalog(&self) -> Result<Box<dyn Catalog + '_>> {
        Ok(Box::new(Through(super::acquire(&self.pool).await?)))
    }

    fn display_url(&self) -> &str {
        &self.url
    }

    fn default_schema(&self) -> Option<&str> {
        self.default_schema.as_deref()
    }

    fn folds_to_lowercase(&self) -> bool {
        true
    }

    async fn ensure_metadata(&self) -> Result<()> {
        for (what, sql, name) in [
            (
                "creating file_imports",
                CREATE_FILE_IMPORTS.to_string(),
                "file_imports",
            ),
            (
                "creating import_history",
                create_import_history(),
                "import_history",
            ),
        ] {
            if let Err(e) = sqlx::query(AssertSqlSafe(sql)).execute(&self.pool).await {
                // Two first imports may race on CREATE TABLE IF NOT EXISTS; the
                // loser fails on the catalog's unique index while the table now exists.
                let exists: Option<String> = sqlx::query_scalar("SELECT to_regclass($1)::text")
                    .bind(name)
                    .fetch_one(&self.pool)
                    .await
                    .map_err(|e| AtlasError::database(what, e))?;
                if exists.is_none() {
                    return Err(AtlasError::database(what, e));
                }
            }
        }
        if sqlx::query(super::PROBE_HISTORY_IMPORT_ID)
            .execute(&self.pool)
            .await
            .is_err()
        {
            sqlx::query(
                "ALTER TABLE import_history ADD COLUMN IF NOT EXISTS import_id VARCHAR(32)",
            )
            .execute(&self.pool)
            .await
            .map_err(|e| AtlasError::database("adding import_history.import_id", e))?;
        }
        Ok(())
    }

    /// `COPY ... TO STDOUT (FORMAT binary)`: numbers, dates and timestamps
    /// arrive in their own form, text as it is; only types without a binary
    /// reading here are printed by the server.
    async fn scan_keys(
        &self,
        table: &TableRef,
        columns: &[TargetColumn],
        filter: Option<&KeyFilter>,
        locations: bool,
        batch_rows: usize,
        on_batch: &mut (dyn FnMut(RecordBatch) -> Result<()> + Send),
    ) -> Result<u64> {
        let scan_error = |e| AtlasError::database(format!("reading the keys of '{table}'"), e);
        let mut conn = super::acquire(&self.pool).await?;
        // `COPY table TO` reads a plain table only (not a partitioned one, a
        // view or a foreign table); a `ctid` names one row only in a plain
        // table without children (partitions and inheriting tables repeat them).
        let (plain, children): (bool, bool) = sqlx::query_as(
            "SELECT relkind = 'r', relhassubclass FROM pg_class WHERE oid = to_regclass($1)",
        )
        .bind(table.sql())
        .fetch_optional(&mut *conn)
        .await
        .map_err(scan_error)?
        .unwrap_or((true, false));
        let mut columns = columns.to_vec();
        if locations && plain && !children {
            columns.push(super::pg_binary::location_column());
        }
        let columns = &columns[..];
        let sql = key_scan_sql(table, columns, filter, plain);
        if filter.is_some() {
            // JIT compiles a long filter for longer than the scan takes.
            for statement in ["BEGIN", "SET LOCAL jit = off"] {
                sqlx::query(statement)
                    .execute(&mut *conn)
                    .await
                    .map_err(scan_error)?;
            }
        }
        let mut decoder = super::pg_binary::KeyDecoder::new(columns, batch_rows, &table.key());
        {
            let mut data = conn.copy_out_raw(&sql).await.map_err(scan_error)?;
            while let Some(bytes) = data.try_next().await.map_err(scan_error)? {
                decoder.feed(&bytes, on_batch)?;
            }
        }
        if filter.is_some() {
            sqlx::query("COMMIT")
                .execute(&mut *conn)
                .await
                .map_err(scan_error)?;
        }
        decoder.finish(on_batch)
    }

    async fn table_stats(&self, table: &TableRef, key: &[TargetColumn]) -> Result<TableStats> {
        let mut conn = super::acquire(&self.pool).await?;
        let error = |e| AtlasError::database(format!("reading the statistics of '{table}'"), e);
        // reltuples is -1 before the first ANALYZE: then go by the pages.
        let rows: Option<i64> = sqlx::query_scalar(
            "SELECT CASE WHEN c.reltuples >= 0 THEN c.reltuples::bigint
                         ELSE pg_relation_size(c.oid) / 8192 * 50 END
             FROM pg_class c WHERE c.oid = to_regclass($1)",
        )
        .bind(table.sql())
        .fetch_optional(&mut *conn)
        .await
        .map_err(error)?
        .flatten();
        let indexes: Vec<(String, String)> = sqlx::query_as(
            "SELECT ic.relname::text, a.attname::text
             FROM pg_index i
             JOIN pg_class ic ON ic.oid = i.indexrelid
             JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = i.indkey[0]
             WHERE i.indrelid = to_regclass($1)",
        )
        .bind(table.sql())
        .fetch_all(&mut *conn)
        .await
        .map_err(error)?;
        // n_distinct < 0 is a fraction of the rows.
        let stats: Vec<(String, f32, f32)> = sqlx::query_as(
            "SELECT s.attname::text, s.n_distinct, s.null_frac FROM pg_stats s
             WHERE s.schemaname = coalesce($1, current_schema()) AND s.tablename = $2",
        )
        .bind(table.schema.as_deref())
        .bind(&table.name)
        .fetch_all(&mut *conn)
        .await
        .map_err(error)?;
        let rows = rows.unwrap_or(0).max(0) as u64;
        let distinct = stats
            .into_iter()
            .filter(|(name, _, _)| key.iter().any(|k| k.name == *name))
            .map(|(name, d, nulls)| {
                let d = if d < 0.0 {
                    f64::from(-d) * rows as f64
                } else {
                    f64::from(d)
                };
                (name, d * (1.0 - f64::from(nulls)))
            })
            .collect();
        Ok(TableStats {
            rows,
            key_index: super::key_index(indexes, key),
            distinct,
        })
    }

    fn sql_type_for(&self, data_type: &DataType) -> String {
        sql_type_for(data_type)
    }

    fn new_column_type(&self, data_type: &DataType) -> DataType {
        match data_type {
            DataType::LargeBinary | DataType::BinaryView | DataType::FixedSizeBinary(_) => {
                DataType::Binary
            }
            other => other.clone(),
        }
    }

    async fn begin(&self) -> Result<Box<dyn ImportTransaction>> {
        let mut tx = self
            .pool
            .begin()
            .await
            .map_err(|e| AtlasError::database("starting the import transaction", e))?;
        // Key scans read values as text: make that text unambiguous.
        sqlx::query("SET LOCAL DateStyle = 'ISO, YMD'")
            .execute(&mut *tx)
            .await
            .map_err(|e| AtlasError::database("starting the import transaction", e))?;
        Ok(Box::new(PostgresImport { tx }))
    }
}

/// How rows are encoded for COPY.
enum CopyEncoder {
    /// `FORMAT binary`, by `pgpq`.
    Binary(ArrowToPostgresBinaryEncoder),
    /// `FORMAT text`, for tables with a column binary COPY cannot express:
    /// the server reads every value with its type's input function, as
    /// `psql \copy` does.
    Text,
}

impl CopyEncoder {
    fn for_columns(columns: &[TargetColumn], schema: &SchemaRef, table: &str) -> Result<Self> {
        if columns.iter().any(needs_text_copy) {
            return Ok(CopyEncoder::Text);
        }
        ArrowToPostgresBinaryEncoder::try_new(schema)
            .map(CopyEncoder::Binary)
            .map_err(|e| encode_error(table, e))
    }

    fn format(&self) -> &'static str {
        match self {
            CopyEncoder::Binary(_) => "binary",
            CopyEncoder::Text => "text",
        }
    }

    fn header(&mut self, buf: &mut BytesMut, table: &str) -> Result<()> {
        match self {
            CopyEncoder::Binary(e) => e.write_header(buf).map_err(|e| encode_error(table, e)),
            CopyEncoder::Text => Ok(()),
        }
    }

    fn batch(&mut self, batch: &RecordBatch, buf: &mut BytesMut, table: &str) -> Result<()> {
        match self {
            CopyEncoder::Binary(e) => e
                .write_batch(batch, buf)
                .map_err(|e| encode_error(table, e)),
            CopyEncoder::Text => encode_rows(batch, TextDialect::Postgres, buf),
        }
    }

    fn footer(&mut self, buf: &mut BytesMut, table: &str) -> Result<()> {
        match self {
            CopyEncoder::Binary(e) => e.write_footer(buf).map_err(|e| encode_error(table, e)),
            CopyEncoder::Text => Ok(()),
        }
    }
}

fn encode_error(table: &str, e: pgpq::error::ErrorKind) -> AtlasError {
    AtlasError::Internal(format!("cannot encode rows for COPY into '{table}': {e}"))
}

/// Streams the batches of `chunk` into `COPY table (columns) FROM STDIN`,
/// encoded as they arrive (binary, or text where a column needs it); an
/// error item aborts the COPY. Returns the rows the server took.
async fn copy_in(
    conn: &mut PgConnection,
    table: &TableRef,
    columns: &[TargetColumn],
    chunk: &mut ChunkStream<'_>,
) -> Result<u64> {
    let schema = Arc::new(Schema::new(
        columns
            .iter()
            .map(|c| Field::new(&c.name, c.data_type.clone(), true))
            .collect::<Vec<_>>(),
    ));
    let name = table.key();
    let mut encoder = CopyEncoder::for_columns(columns, &schema, &name)?;
    let sql = format!(
        "COPY {} ({}) FROM STDIN (FORMAT {})",
        table.sql(),
        column_list(columns),
        encoder.format()
    );
    let copy_error = |e| {
        refused_value(e)
            .unwrap_or_else(|e| AtlasError::database(format!("copying into '{name}'"), e))
    };
    // Text the server reads in the session's zone (a timetz, a tstzrange
    // or a timestamptz array written without one) is read in the zone a
    // session of the user would have, as `psql \copy` reads it; our
    // sessions are in UTC (timestamptz values carry `+00` here).
    let zone = match encoder {
        CopyEncoder::Text => columns.iter().find_map(|c| c.unzoned_in.as_deref()),
        CopyEncoder::Binary(_) => None,
    };
    let zone_before = match zone {
        Some(zone) => Some(set_time_zone(conn, zone, &name).await?),
        None => None,
    };
    let mut copy = conn.copy_in_raw(&sql).await.map_err(copy_error)?;
    let mut buf = BytesMut::with_capacity(COPY_SEND_BYTES * 2);
    encoder.header(&mut buf, &name)?;
    let mut rows_sent = 0u64;
    while let Some(batch) = chunk.next().await {
        let encoded = batch.and_then(|b| {
            let batch = RecordBatch::try_new(Arc::clone(&schema), b.columns().to_vec())
                .map_err(AtlasError::from)?;
            refuse_nul_characters(&batch, rows_sent)?;
            rows_sent += batch.num_rows() as u64;
            encoder.batch(&batch, &mut buf, &name)
        });
        if let Err(e) = encoded {
            copy.abort("atlas-import: the import failed").await.ok();
            return Err(e);
        }
        if buf.len() >= COPY_SEND_BYTES {
            copy.send(&buf[..]).await.map_err(copy_error)?;
            buf.clear();
        }
    }
    encoder.footer(&mut buf, &name)?;
    copy.send(&buf[..]).await.map_err(copy_error)?;
    let rows = copy.finish().await.map_err(copy_error)?;
    if let Some(zone) = zone_before {
        set_time_zone(conn, &zone, &name).await?;
    }
    Ok(rows)
}

/// Sets the transaction's `TimeZone` to `zone`; returns the one it had.
async fn set_time_zone(conn: &mut PgConnection, zone: &str, table: &str) -> Result<String> {
    let error =
        |e| AtlasError::database(format!("setting the time zone to copy into '{table}'"), e);
    let before: String = sqlx::query_scalar("SELECT current_setting('TimeZone')")
        .fetch_one(&mut *conn)
        .await
        .map_err(error)?;
    sqlx::query("SELECT set_config('TimeZone', $1, true)")
        .bind(zone)
        .execute(&mut *conn)
        .await
        .map_err(error)?;
    Ok(before)
}

/// PostgreSQL's text types cannot hold U+0000: a text value with one is
/// refused here, before the COPY sends it (the server's own refusal names no
/// row). `rows_before` rows of the statement went before `batch`.
fn refuse_nul_characters(batch: &RecordBatch, rows_before: u64) -> Result<()> {
    use datafusion::arrow::array::{Array, AsArray};
    for (field, column) in batch.schema().fields().iter().zip(batch.columns()) {
        let Some(text) = column.as_string_opt::<i32>() else {
            continue;
        };
        let offsets = text.value_offsets();
        let (first, end) = (offsets[0] as usize, offsets[text.len()] as usize);
        // The value whose bytes hold a NUL: the last that starts at or before
        // it (a NULL's bytes, if any, are no value).
        let found = memchr::memchr_iter(0, &text.values()[first..end])
            .map(|at| offsets.partition_point(|&start| start as usize <= first + at) - 1)
            .find(|&row| text.is_valid(row));
        let Some(row) = found else {
            continue;
        };
        return Err(AtlasError::ValueRefused {
            written_row: rows_before + row as u64 + 1,
            column: field.name().clone(),
            value: text.value(row).to_string(),
            reason: "PostgreSQL text cannot hold the character U+0000 (NUL)".into(),
        });
    }
    Ok(())
}

/// Whether `column` needs text COPY: its values are carried as text but its
/// type's binary form is not text's (uuid, jsonb, arrays, interval, enums,
/// domains, ...); every other Arrow type has its own binary encoding.
fn needs_text_copy(column: &TargetColumn) -> bool {
    column.data_type == DataType::Utf8 && !super::pg_binary::binary_form_is_text(column)
}

/// The `COPY ... TO STDOUT (FORMAT binary)` that reads `columns` of `table`
/// (`plain_table`: not a partitioned table, a view or a foreign table), of
/// the rows `filter` matches where there is one.
fn key_scan_sql(
    table: &TableRef,
    columns: &[TargetColumn],
    filter: Option<&KeyFilter>,
    plain_table: bool,
) -> String {
    let (select, casts) = super::pg_binary::select_list(columns);
    match filter {
        Some(filter) => format!(
            "COPY (SELECT {select} FROM {} WHERE {}) TO STDOUT (FORMAT binary)",
            table.sql(),
            filter.condition(
                &PostgresDialect,
                columns
                    .iter()
                    .find(|c| c.name == filter.column)
                    .and_then(probe_list_type)
            )
        ),
        // A `COPY` column list takes no system column (`ctid`), and `COPY
        // table TO` no other relation than a plain table.
        None if casts || !plain_table || columns.iter().any(|c| c.sql_type == "tid") => format!(
            "COPY (SELECT {select} FROM {}) TO STDOUT (FORMAT binary)",
            table.sql()
        ),
        None => format!("COPY {} ({select}) TO STDOUT (FORMAT binary)", table.sql()),
    }
}

/// The type a probe's list of literals is cast to (`= ANY(ARRAY[...]::T[])`),
/// where the list's own type would not be the column's:
/// - numbers: `ARRAY[1, 2]` is `integer[]`, and `bigint = integer` is an
///   operator across types, which PostgreSQL cannot hash: every row then
///   walks the whole list (100k values against 10M rows: minutes, against
///   2.5 s hashed). The base type's name, with no modifier to round by;
/// - text in a column of a type of its own (see [`compares_by_its_type`]).
///
/// Dates, timestamps, booleans and bytea have typed literals; numeric
/// literals are `numeric`.
fn probe_list_type(column: &TargetColumn) -> Option<&str> {
    match column.data_type {
        DataType::Int16 => Some("smallint"),
        DataType::Int32 => Some("integer"),
        DataType::Int64 => Some("bigint"),
        DataType::Float32 => Some("real"),
        DataType::Float64 => Some("double precision"),
        _ if compares_by_its_type(column) => Some(&column.sql_type),
        _ => None,
    }
}

/// Whether text literals compared with `column` must be cast to its type
/// first: text in a column of a type of its own (uuid, citext, interval...)
/// would otherwise be compared as text (`citext = text` is case-sensitive).
fn compares_by_its_type(column: &TargetColumn) -> bool {
    column.data_type == DataType::Utf8
        && !matches!(
            column.sql_type.split('(').next().unwrap_or_default(),
            "text" | "character varying"
        )
}

/// The value a COPY refused, from the error's context (`COPY t, line 3,
/// column c: "value"`), or the error as it was.
fn refused_value(error: sqlx::Error) -> std::result::Result<AtlasError, sqlx::Error> {
    let parsed = match &error {
        sqlx::Error::Database(db) => db
            .try_downcast_ref::<sqlx::postgres::PgDatabaseError>()
            .and_then(|pg| {
                let context = pg.r#where()?;
                let (_, rest) = context.split_once(", line ")?;
                let (line, rest) = rest.split_once(", column ")?;
                let (column, value) = rest.split_once(": ")?;
                let value = value.strip_prefix('"')?.strip_suffix('"')?;
                Some(AtlasError::ValueRefused {
                    written_row: line.parse().ok()?,
                    column: column.to_string(),
                    value: value.to_string(),
                    reason: pg.message().to_string(),
                })
            }),
        _ => None,
    };
    parsed.ok_or(error)
}

/// The import transaction on PostgreSQL.
struct PostgresImport {
    tx: Transaction<'static, Postgres>,
}

impl PostgresImport {
    /// `enable_hashjoin` and `enable_mergejoin` for the rest of the
    /// transaction: `off`, or `DEFAULT` (the server's settings).
    async fn set_hash_and_merge_joins(&mut self, value: &str) -> Result<()> {
        for method in ["enable_hashjoin", "enable_mergejoin"] {
            self.execute(format!("SET LOCAL {method} = {value}"))
                .await?;
        }
        Ok(())
    }
}

#[async_trait]
impl ImportTransaction for PostgresImport {
    fn kind(&self) -> DbKind {
        DbKind::Postgres
    }

    fn catalog(&mut self) -> &mut dyn Catalog {
        &mut *self.tx
    }

    async fn execute(&mut self, sql: String) -> Result<u64> {
        let done = sqlx::query(AssertSqlSafe(sql))
            .execute(&mut *self.tx)
            .await
            .map_err(|e| AtlasError::database("updating existing rows", e))?;
        Ok(done.rows_affected())
    }

    /// Through the table's key index where the planner can use one, or by
    /// the rows' `ctid` where the statement gives them: it prefers a hash
    /// join, which reads the whole table; the index join took 4.7 s against
    /// 6.0 s for 1M staged rows into 1M (staged in the table's order; in
    /// random order both 13.3 s), the fetch by `ctid` 2.9 s against 3.8 s.
    /// Decided from the plan with hash and merge joins off, which without
    /// either would be a nested loop over the whole table: then the planner
    /// chooses freely. Both go back to the server's settings (`DEFAULT`)
    /// after.
    async fn execute_join(&mut self, sql: String) -> Result<u64> {
        let error = |e| AtlasError::database("planning the update of existing rows", e);
        // JIT compiles one statement for longer than it saves.
        self.execute("SET LOCAL jit = off".into()).await?;
        self.set_hash_and_merge_joins("off").await?;
        // The plan is `json`, whose binary form is its text.
        let plan: String = sqlx::query(AssertSqlSafe(format!("EXPLAIN (FORMAT JSON) {sql}")))
            .fetch_one(&mut *self.tx)
            .await
            .and_then(|row| row.try_get_unchecked(0))
            .map_err(error)?;
        let plan: serde_json::Value = serde_json::from_str(&plan)
            .map_err(|e| AtlasError::Internal(format!("reading the update's plan: {e}")))?;
        if !looks_target_rows_up(&plan) {
            self.set_hash_and_merge_joins("DEFAULT").await?;
            return self.execute(sql).await;
        }
        let updated = self.execute(sql).await?;
        self.set_hash_and_merge_joins("DEFAULT").await?;
        Ok(updated)
    }

    async fn create_table(&mut self, table: &TableRef, columns: &[ColumnSpec]) -> Result<()> {
        let sql = create_table_sql(
            sql_type_for,
            table,
            columns,
            "BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY",
        );
        sqlx::query(AssertSqlSafe(sql))
            .execute(&mut *self.tx)
            .await
            .map_err(|e| AtlasError::database(format!("creating table '{table}'"), e))?;
        Ok(())
    }

    async fn lock_table(&mut self, table: &TableRef) -> Result<()> {
        // Imports into one table name serialize on an advisory lock first, so
        // that two first imports do not race to create the table.
        sqlx::query("SELECT pg_advisory_xact_lock(hashtextextended('atlas-import:' || $1, 0))")
            .bind(table.key())
            .execute(&mut *self.tx)
            .await
            .map_err(|e| AtlasError::database(format!("locking table '{table}'"), e))?;
        let exists: Option<String> = sqlx::query_scalar("SELECT to_regclass($1)::text")
            .bind(table.sql())
            .fetch_one(&mut *self.tx)
            .await
            .map_err(|e| AtlasError::database(format!("locking table '{table}'"), e))?;
        if exists.is_none() {
            return Ok(());
        }
        let sql = format!("LOCK TABLE {} IN SHARE ROW EXCLUSIVE MODE", table.sql());
        sqlx::query(AssertSqlSafe(sql))
            .execute(&mut *self.tx)
            .await
            .map_err(|e| AtlasError::database(format!("locking table '{table}'"), e))?;
        Ok(())
    }

    async fn write_chunk(
        &mut self,
        table: &TableRef,
        columns: &[TargetColumn],
        chunk: &mut ChunkStream<'_>,
    ) -> Result<u64> {
        copy_in(&mut self.tx, table, columns, chunk).await
    }

    async fn record_file(&mut self, record: &FileRecord) -> Result<()> {
        sqlx::query(
            "INSERT INTO file_imports (file_hash, file_name, table_name, record_count)
             VALUES ($1, $2, $3, $4)
             ON CONFLICT (file_hash, table_name) DO UPDATE SET
               file_name = EXCLUDED.file_name,
               imported_at = now(),
               record_count = EXCLUDED.record_count",
        )
        .bind(&record.file_hash)
        .bind(&record.file_name)
        .bind(&record.table_name)
        .bind(i32::try_from(record.record_count).unwrap_or(i32::MAX))
        .execute(&mut *self.tx)
        .await
        .map_err(|e| AtlasError::database("recording the file in file_imports", e))?;
        Ok(())
    }

    async fn commit(self: Box<Self>) -> Result<()> {
        self.tx
            .commit()
            .await
            .map_err(|e| AtlasError::database("committing the import", e))
    }

    async fn rollback(self: Box<Self>) -> Result<()> {
        self.tx
            .rollback()
            .await
            .map_err(|e| AtlasError::database("rolling back the import", e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_with_a_nul_character_is_refused_naming_its_row() {
        use datafusion::arrow::array::{Int64Array, StringArray};
        let schema = Arc::new(Schema::new(vec![
            Field::new("n", DataType::Int64, true),
            Field::new("note", DataType::Utf8, true),
        ]));
        let notes = StringArray::from(vec![Some("first"), None, Some("a\0b"), Some("ok")]);
        let batch = RecordBatch::try_new(
            Arc::clone(&schema),
            vec![
                Arc::new(Int64Array::from(vec![0, 0, 0, 0])),
                Arc::new(notes.clone()),
            ],
        )
        .unwrap();
        let Err(AtlasError::ValueRefused {
            written_row,
            column,
            value,
            ..
        }) = refuse_nul_characters(&batch, 10)
        else {
            panic!("the NUL is refused");
        };
        assert_eq!(
            (written_row, column.as_str(), value.as_str()),
            (13, "note", "a\0b")
        );
        // Sliced past it: nothing to refuse; sliced to start on it: its first row.
        assert!(refuse_nul_characters(&batch.slice(3, 1), 0).is_ok());
        let Err(AtlasError::ValueRefused { written_row, .. }) =
            refuse_nul_characters(&batch.slice(2, 2), 0)
        else {
            panic!("the NUL is refused in a slice");
        };
        assert_eq!(written_row, 1);
    }

    fn plain(url: &str) -> bool {
        plain_first(url, &url.parse().unwrap())
    }

    #[test]
    fn the_update_goes_by_index_only_when_every_scan_of_the_target_is_one() {
        let plan = |inner: &str| -> serde_json::Value {
            serde_json::from_str(&format!(
                r#"[{{"Plan": {{"Node Type": "ModifyTable", "Alias": "atlas_t", "Plans": [
                    {{"Node Type": "Nested Loop", "Plans": [
                        {{"Node Type": "Seq Scan", "Alias": "atlas_s"}},
                        {{"Node Type": "{inner}", "Alias": "atlas_t"}}]}}]}}}}]"#
            ))
            .unwrap()
        };
        assert!(looks_target_rows_up(&plan("Index Scan")));
        assert!(looks_target_rows_up(&plan("Index Only Scan")));
        assert!(looks_target_rows_up(&plan("Tid Scan")));
        assert!(!looks_target_rows_up(&plan("Seq Scan")));
        assert!(!looks_target_rows_up(&plan("Bitmap Heap Scan")));
        let no_scan: serde_json::Value =
            serde_json::from_str(r#"[{"Plan": {"Node Type": "ModifyTable", "Alias": "atlas_t"}}]"#)
                .unwrap();
        assert!(!looks_target_rows_up(&no_scan));
    }

    /// `COPY table TO` reads neither a system column nor another relation
    /// than a plain table (a partitioned table: "cannot copy from
    /// partitioned table"): those are read by a query.
    #[test]
    fn key_scans_read_by_a_query_what_copy_of_a_table_cannot() {
        let table = TableRef::unqualified("t");
        let key = TargetColumn::of_type("k", "integer", DataType::Int32);
        let plain = key_scan_sql(&table, std::slice::from_ref(&key), None, true);
        assert_eq!(plain, "COPY \"t\" (\"k\") TO STDOUT (FORMAT binary)");
        let partitioned = key_scan_sql(&table, std::slice::from_ref(&key), None, false);
        assert_eq!(
            partitioned,
            "COPY (SELECT \"k\" FROM \"t\") TO STDOUT (FORMAT binary)"
        );
        let located = key_scan_sql(
            &table,
            &[key, super::super::pg_binary::location_column()],
            None,
            true,
        );
        assert_eq!(
            located,
            "COPY (SELECT \"k\", \"ctid\" FROM \"t\") TO STDOUT (FORMAT binary)"
        );
    }

    #[test]
    fn probe_lists_take_the_column_type_so_that_postgres_hashes_them() {
        use datafusion::arrow::array::{Int16Array, Int64Array, StringArray};
        let table = TableRef::unqualified("t");
        let scan = |column: TargetColumn, values: datafusion::arrow::array::ArrayRef| {
            let filter = KeyFilter {
                column: column.name.clone(),
                values: vec![values],
                nulls: false,
            };
            key_scan_sql(&table, &[column], Some(&filter), true)
        };
        // `bigint = integer` is not hashable: the list must be `bigint[]`.
        let big = scan(
            TargetColumn::of_type("n", "bigint", DataType::Int64),
            Arc::new(Int64Array::from(vec![2, 1])),
        );
        assert!(big.contains("\"n\" = ANY(ARRAY[1,2]::bigint[])"), "{big}");
        let small = scan(
            TargetColumn::of_type("n", "smallint", DataType::Int16),
            Arc::new(Int16Array::from(vec![7])),
        );
        assert!(small.contains("ANY(ARRAY[7]::smallint[])"), "{small}");
        // A domain over bigint: the base type, which has an array type.
        let domain = scan(
            TargetColumn::of_type("n", "customer_id", DataType::Int64),
            Arc::new(Int64Array::from(vec![7])),
        );
        assert!(domain.contains("ANY(ARRAY[7]::bigint[])"), "{domain}");
        let text = scan(
            TargetColumn::of_type("e", "text", DataType::Utf8),
            Arc::new(StringArray::from(vec!["a"])),
        );
        assert!(text.contains("= ANY(ARRAY['a'])"), "{text}");
        let uuid = scan(
            TargetColumn::of_type("u", "uuid", DataType::Utf8),
            Arc::new(StringArray::from(vec![
                "0e5f1f6c-0000-4000-8000-000000000000",
            ])),
        );
        assert!(uuid.contains("]::uuid[])"), "{uuid}");
    }

    #[test]
    fn tls_is_skipped_only_on_loopback_with_the_default_mode() {
        assert!(plain("postgres://u@127.0.0.1:5432/db"));
        assert!(plain("postgres://u@localhost/db"));
        assert!(plain("postgres://u@[::1]:5432/db"));
        assert!(!plain("postgres://u@db.example.com/db"));
        assert!(!plain("postgres://u@10.0.0.5/db"));
        assert!(!plain("postgres://u@127.0.0.1/db?sslmode=prefer"));
        assert!(!plain("postgres://u@127.0.0.1/db?sslmode=require"));
    }
}
