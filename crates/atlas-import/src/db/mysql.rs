//! MySQL and MariaDB: a named lock (`GET_LOCK`) serializes imports into a
//! table; chunks go in as multi-row INSERTs within the placeholder and packet
//! limits, inside one InnoDB transaction.
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
//! as everywhere else) and `time_zone = '+00:00'`.

use std::str::FromStr;

use async_trait::async_trait;
use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::datatypes::{DataType, TimeUnit};
use futures::TryStreamExt;
use futures::future::BoxFuture;
use sqlx::mysql::{MySqlConnectOptions, MySqlPool, MySqlPoolOptions};
use sqlx::{AssertSqlSafe, Connection, Executor, MySql, MySqlConnection, Row};

use super::bind::{DecimalBinding, insert_chunk};
use super::{
    ChunkStream, Database, DbKind, FileRecord, HistoryEntry, ImportTransaction, KeyFilter,
    TableStats, TextBatcher, create_table_sql, mask_password, quote_ident,
};
use crate::error::{AtlasError, Result};
use crate::names::TableRef;
use crate::schema::{ColumnSpec, TargetColumn, TargetTable};

/// MySQL's limit on placeholders per prepared statement.
const MAX_BIND_PARAMETERS: usize = 65_535;
/// Rows per INSERT statement at most.
const MAX_ROWS_PER_STATEMENT: usize = 2_000;
/// Seconds an import waits for another import of the same table.
const LOCK_TIMEOUT_SECONDS: i64 = 300;

/// Session settings of every connection.
const SESSION_SETUP: &str =
    "SET SESSION sql_mode = CONCAT(@@sql_mode, ',ANSI_QUOTES'), time_zone = '+00:00'";

fn setup(conn: &mut MySqlConnection) -> BoxFuture<'_, std::result::Result<(), sqlx::Error>> {
    Box::pin(async move {
        conn.execute(SESSION_SETUP).await?;
        Ok(())
    })
}

/// A MySQL or MariaDB database.
#[derive(Debug)]
pub struct MySqlDatabase {
    pool: MySqlPool,
    options: MySqlConnectOptions,
    url: String,
    /// The database of the URL: where unqualified names live.
    default_schema: Option<String>,
}

impl MySqlDatabase {
    /// Connects to `url` (`mysql://...` or `mariadb://...`).
    pub async fn connect(url: &str) -> Result<Self> {
        let masked = mask_password(url);
        let normalized = url.replacen("mariadb://", "mysql://", 1);
        let options = MySqlConnectOptions::from_str(&normalized)
            .map_err(|e| AtlasError::Usage(format!("invalid MySQL URL '{masked}': {e}")))?;
        // One direct connection first, so a refused login is reported as such.
        let probe = MySqlConnection::connect_with(&options)
            .await
            .map_err(|e| AtlasError::database(format!("connecting to {masked}"), e))?;
        probe.close().await.ok();
        let pool = MySqlPoolOptions::new()
            .max_connections(4)
            .acquire_timeout(std::time::Duration::from_secs(5))
            .after_connect(|conn, _| setup(conn))
            .connect_with(options.clone())
            .await
            .map_err(|e| AtlasError::database(format!("connecting to {masked}"), e))?;
        let default_schema: Option<String> = sqlx::query_scalar("SELECT CAST(DATABASE() AS CHAR)")
            .fetch_one(&pool)
            .await
            .map_err(|e| AtlasError::database(format!("connecting to {masked}"), e))?;
        Ok(Self {
            pool,
            options,
            url: masked,
            default_schema,
        })
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
        "tinyint" if column_type.starts_with("tinyint(1)") => DataType::Boolean,
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
        "float" => DataType::Float32,
        "double" | "real" => DataType::Float64,
        "decimal" | "numeric" => DataType::Decimal128(precision.clamp(1, 38) as u8, scale as i8),
        "char" | "varchar" | "tinytext" | "text" | "mediumtext" | "longtext" | "enum" | "set"
        | "json" => DataType::Utf8,
        "date" => DataType::Date32,
        "datetime" | "timestamp" => DataType::Timestamp(TimeUnit::Microsecond, None),
        "binary" | "varbinary" | "tinyblob" | "blob" | "mediumblob" | "longblob" => {
            DataType::Binary
        }
        _ => DataType::Null,
    }
}

async fn describe(conn: &mut MySqlConnection, table: &TableRef) -> Result<Option<TargetTable>> {
    // information_schema columns come back as binary strings on some servers:
    // cast everything to what the driver decodes.
    let rows = sqlx::query(
        "SELECT CAST(column_name AS CHAR), CAST(data_type AS CHAR), CAST(column_type AS CHAR),
                CAST(is_nullable = 'YES' AS SIGNED),
                CAST((column_default IS NOT NULL AND UPPER(column_default) <> 'NULL')
                     OR extra LIKE '%auto_increment%' OR extra LIKE '%GENERATED%' AS SIGNED),
                CAST(COALESCE(numeric_precision, 0) AS SIGNED),
                CAST(COALESCE(numeric_scale, 0) AS SIGNED),
                CAST(CASE WHEN data_type IN ('char', 'varchar')
                     THEN character_maximum_length ELSE 0 END AS SIGNED)
         FROM information_schema.columns
         WHERE table_schema = COALESCE(?, DATABASE()) AND table_name = ?
         ORDER BY ordinal_position",
    )
    .bind(table.schema.as_deref())
    .bind(&table.name)
    .fetch_all(&mut *conn)
    .await
    .map_err(|e| AtlasError::database(format!("reading the columns of '{table}'"), e))?;
    if rows.is_empty() {
        return Ok(None);
    }
    let columns = rows
        .iter()
        .map(|row| {
            let data_type: String = row.get(1);
            let column_type: String = row.get(2);
            let nullable: i64 = row.get(3);
            let has_default: i64 = row.get(4);
            let max_chars: i64 = row.get(7);
            TargetColumn {
                name: row.get(0),
                data_type: data_type_for(
                    &data_type.to_ascii_lowercase(),
                    &column_type.to_ascii_lowercase(),
                    row.get(5),
                    row.get(6),
                ),
                sql_type: column_type,
                nullable: nullable != 0,
                has_default: has_default != 0,
                max_chars: usize::try_from(max_chars).ok().filter(|&n| n > 0),
            }
        })
        .collect();
    Ok(Some(TargetTable {
        name: table.key(),
        columns,
    }))
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

async fn insert_history(conn: &mut MySqlConnection, entry: &HistoryEntry) -> Result<()> {
    super::insert_history::<sqlx::MySql>(conn, DbKind::MySql, entry).await
}

async fn file_imported(
    conn: &mut MySqlConnection,
    file_hash: &str,
    table: &TableRef,
) -> Result<bool> {
    super::file_imported::<sqlx::MySql>(conn, DbKind::MySql, file_hash, table).await
}

/// Reads the key columns of `table` as text batches on `conn`.
async fn scan_keys(
    conn: &mut MySqlConnection,
    table: &TableRef,
    columns: &[TargetColumn],
    filter: Option<&KeyFilter>,
    batch_rows: usize,
    on_batch: &mut (dyn FnMut(RecordBatch) -> Result<()> + Send),
) -> Result<u64> {
    let values = columns
        .iter()
        .map(|c| format!("CAST({} AS CHAR)", quote_ident(&c.name)))
        .collect::<Vec<_>>()
        .join(", ");
    let sql = format!(
        "SELECT {values} FROM {}{}",
        table.sql(),
        filter.map_or_else(String::new, |f| format!(
            " WHERE {}",
            f.condition(DbKind::MySql)
        ))
    );
    let scan_error = |e| AtlasError::database(format!("reading the keys of '{table}'"), e);
    let mut batcher = TextBatcher::new(columns, batch_rows);
    let mut rows = sqlx::query(AssertSqlSafe(sql)).fetch(&mut *conn);
    while let Some(row) = rows.try_next().await.map_err(scan_error)? {
        batcher.push_row(&row, on_batch).map_err(scan_error)??;
    }
    batcher.flush(on_batch)
}

#[async_trait]
impl Database for MySqlDatabase {
    fn kind(&self) -> DbKind {
        DbKind::MySql
    }

    fn display_url(&self) -> &str {
        &self.url
    }

    fn default_schema(&self) -> Option<&str> {
        self.default_schema.as_deref()
    }

    async fn describe_table(&self, table: &TableRef) -> Result<Option<TargetTable>> {
        let mut conn = super::acquire(&self.pool).await?;
        describe(&mut conn, table).await
    }

    async fn ensure_metadata(&self) -> Result<()> {
        for (what, sql) in [
            ("creating file_imports", CREATE_FILE_IMPORTS.to_string()),
            ("creating import_history", create_import_history()),
        ] {
            sqlx::query(AssertSqlSafe(sql))
                .execute(&self.pool)
                .await
                .map_err(|e| AtlasError::database(what, e))?;
        }
        Ok(())
    }

    async fn file_imported(&self, file_hash: &str, table: &TableRef) -> Result<bool> {
        let mut conn = super::acquire(&self.pool).await?;
        file_imported(&mut conn, file_hash, table).await
    }

    async fn record_history(&self, entry: &HistoryEntry) -> Result<()> {
        let mut conn = super::acquire(&self.pool).await?;
        insert_history(&mut conn, entry).await
    }

    async fn scan_keys(
        &self,
        table: &TableRef,
        columns: &[TargetColumn],
        filter: Option<&KeyFilter>,
        batch_rows: usize,
        on_batch: &mut (dyn FnMut(RecordBatch) -> Result<()> + Send),
    ) -> Result<u64> {
        let mut conn = super::acquire(&self.pool).await?;
        scan_keys(&mut conn, table, columns, filter, batch_rows, on_batch).await
    }

    async fn table_stats(&self, table: &TableRef, key: &[TargetColumn]) -> Result<TableStats> {
        let mut conn = super::acquire(&self.pool).await?;
        let error = |e| AtlasError::database(format!("reading the statistics of '{table}'"), e);
        let rows: Option<i64> = sqlx::query_scalar(
            "SELECT CAST(COALESCE(table_rows, 0) AS SIGNED) FROM information_schema.tables
             WHERE table_schema = COALESCE(?, DATABASE()) AND table_name = ?",
        )
        .bind(table.schema.as_deref())
        .bind(&table.name)
        .fetch_optional(&mut *conn)
        .await
        .map_err(error)?;
        let indexes: Vec<(String, String)> = sqlx::query_as(
            "SELECT CAST(index_name AS CHAR), CAST(column_name AS CHAR) FROM information_schema.statistics
             WHERE table_schema = COALESCE(?, DATABASE()) AND table_name = ? AND seq_in_index = 1",
        )
        .bind(table.schema.as_deref())
        .bind(&table.name)
        .fetch_all(&mut *conn)
        .await
        .map_err(error)?;
        Ok(TableStats {
            rows: rows.unwrap_or(0).max(0) as u64,
            key_index: super::key_index(indexes, key),
            distinct: Vec::new(),
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
        let begin_error = |e| AtlasError::database("starting the import transaction", e);
        let mut conn = MySqlConnection::connect_with(&self.options)
            .await
            .map_err(begin_error)?;
        conn.execute(SESSION_SETUP).await.map_err(begin_error)?;
        // Each statement sees what committed before it: the named lock, not the
        // snapshot, is what keeps other imports' rows out of the key scan.
        conn.execute("SET SESSION TRANSACTION ISOLATION LEVEL READ COMMITTED")
            .await
            .map_err(begin_error)?;
        let max_packet: i64 = sqlx::query_scalar("SELECT CAST(@@max_allowed_packet AS SIGNED)")
            .fetch_one(&mut conn)
            .await
            .map_err(begin_error)?;
        conn.execute("START TRANSACTION")
            .await
            .map_err(begin_error)?;
        Ok(Box::new(MySqlImport {
            conn,
            max_packet: usize::try_from(max_packet).unwrap_or(1 << 20),
            lock: None,
            created: None,
        }))
    }
}

/// The import transaction on MySQL/MariaDB, on a connection of its own.
struct MySqlImport {
    conn: MySqlConnection,
    /// `max_allowed_packet`: a statement and its parameters must fit in it.
    max_packet: usize,
    /// The named lock held, released at the end.
    lock: Option<String>,
    /// A table this import created (and committed, as DDL does): dropped on rollback.
    created: Option<TableRef>,
}

impl MySqlImport {
    async fn simple(&mut self, sql: &str, what: &str) -> Result<()> {
        sqlx::query(AssertSqlSafe(sql.to_string()))
            .execute(&mut self.conn)
            .await
            .map_err(|e| AtlasError::database(what.to_string(), e))?;
        Ok(())
    }

    async fn release_lock(&mut self) {
        if let Some(name) = self.lock.take() {
            sqlx::query("SELECT RELEASE_LOCK(?)")
                .bind(name)
                .execute(&mut self.conn)
                .await
                .ok();
        }
    }
}

#[async_trait]
impl ImportTransaction for MySqlImport {
    fn kind(&self) -> DbKind {
        DbKind::MySql
    }

    async fn execute(&mut self, sql: String) -> Result<u64> {
        let done = sqlx::query(AssertSqlSafe(sql))
            .execute(&mut self.conn)
            .await
            .map_err(|e| AtlasError::database("updating existing rows", e))?;
        Ok(done.rows_affected())
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

    async fn describe_table(&mut self, table: &TableRef) -> Result<Option<TargetTable>> {
        describe(&mut self.conn, table).await
    }

    async fn lock_table(&mut self, table: &TableRef) -> Result<()> {
        // Lock names are at most 64 characters: name the table by its hash.
        let name: String =
            sqlx::query_scalar("SELECT CAST(CONCAT('atlas:', LEFT(SHA2(?, 256), 58)) AS CHAR)")
                .bind(table.key())
                .fetch_one(&mut self.conn)
                .await
                .map_err(|e| AtlasError::database(format!("locking table '{table}'"), e))?;
        let got: Option<i64> = sqlx::query_scalar("SELECT GET_LOCK(?, ?)")
            .bind(&name)
            .bind(LOCK_TIMEOUT_SECONDS)
            .fetch_one(&mut self.conn)
            .await
            .map_err(|e| AtlasError::database(format!("locking table '{table}'"), e))?;
        if got != Some(1) {
            return Err(AtlasError::Usage(format!(
                "another import into '{table}' held its lock for more than {LOCK_TIMEOUT_SECONDS} s"
            )));
        }
        self.lock = Some(name);
        Ok(())
    }

    async fn file_imported(&mut self, file_hash: &str, table: &TableRef) -> Result<bool> {
        file_imported(&mut self.conn, file_hash, table).await
    }

    async fn write_chunk(
        &mut self,
        table: &TableRef,
        columns: &[TargetColumn],
        chunk: &mut ChunkStream<'_>,
    ) -> Result<u64> {
        let by_placeholders =
            (MAX_BIND_PARAMETERS / columns.len().max(1)).clamp(1, MAX_ROWS_PER_STATEMENT);
        // Parameters travel in one packet: keep a statement to a quarter of it.
        let packet_budget = self.max_packet / 4;
        insert_chunk::<MySql>(
            &mut self.conn,
            table,
            columns,
            chunk,
            DecimalBinding::Text,
            |batch| {
                let row_bytes = batch.get_array_memory_size() / batch.num_rows().max(1) + 16;
                by_placeholders.min(packet_budget / row_bytes.max(1))
            },
        )
        .await
    }

    async fn record_file(&mut self, record: &FileRecord) -> Result<()> {
        sqlx::query(
            "INSERT INTO file_imports (file_hash, file_name, table_name, record_count)
             VALUES (?, ?, ?, ?)
             ON DUPLICATE KEY UPDATE
               file_name = VALUES(file_name),
               imported_at = CURRENT_TIMESTAMP,
               record_count = VALUES(record_count)",
        )
        .bind(&record.file_hash)
        .bind(&record.file_name)
        .bind(&record.table_name)
        .bind(i32::try_from(record.record_count).unwrap_or(i32::MAX))
        .execute(&mut self.conn)
        .await
        .map_err(|e| AtlasError::database("recording the file in file_imports", e))?;
        Ok(())
    }

    async fn record_history(&mut self, entry: &HistoryEntry) -> Result<()> {
        insert_history(&mut self.conn, entry).await
    }

    async fn commit(mut self: Box<Self>) -> Result<()> {
        self.simple("COMMIT", "committing the import").await?;
        self.release_lock().await;
        self.conn.close().await.ok();
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
        self.release_lock().await;
        self.conn.close().await.ok();
        rolled_back
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn catalog_types() {
        assert_eq!(
            data_type_for("tinyint", "tinyint(1)", 3, 0),
            DataType::Boolean
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
}
