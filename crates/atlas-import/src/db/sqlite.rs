//! SQLite (the embedded default): `BEGIN IMMEDIATE` serializes writers, chunks go
//! in as prepared multi-row INSERTs sized to the bind limit, the database runs in
//! WAL mode so readers are not blocked.

use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use datafusion::arrow::array::{AsArray, RecordBatch};
use datafusion::arrow::datatypes::{DataType, TimeUnit};
use futures::StreamExt;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions};
use sqlx::{AssertSqlSafe, Row, Sqlite, SqliteConnection, Transaction};

use super::bind::{BindColumn, DecimalBinding};
use super::catalog::Through;
use super::dialect::{Dialect, StageTable};
use super::{
    Catalog, ChunkStream, Database, DbKind, FileRecord, HistoryEntry, ImportTransaction, KeyFilter,
    TableStats, column_list, create_table_sql, mask_password,
};
use crate::error::{AtlasError, Result};
use crate::names::TableRef;
use crate::schema::{ColumnSpec, TargetColumn, TargetTable};
use crate::typed_text::{SqliteNumber, TextForm, sqlite_number};

/// SQLite's SQL: `?` parameters, text literals, stages in `temp`.
#[derive(Debug)]
pub(crate) struct SqliteDialect;

impl Dialect for SqliteDialect {
    fn temp_table(&self, name: &str) -> String {
        format!("temp.{name}")
    }

    fn stage_definition(&self, stage: &StageTable<'_>) -> String {
        format!(
            "CREATE TEMP TABLE {} AS SELECT {}, CAST(0 AS INTEGER) AS {} FROM {} WHERE 0",
            stage.name, stage.columns, stage.row, stage.target
        )
    }

    /// The rowid the key scan read (its bits through the stage's `bigint`).
    fn location_equality(&self, target: &str, location: &str) -> Option<String> {
        Some(format!("{target}.rowid = {location}"))
    }

    /// No hash join: the stage's key is looked up by index.
    fn prepare_join(&self, name: &str, _stage: &str, key: &[TargetColumn]) -> Vec<String> {
        vec![format!(
            "CREATE INDEX temp.atlas_stage_key ON {name} ({})",
            column_list(key)
        )]
    }

    fn text_form(&self, sql_type: &str) -> Option<TextForm> {
        TextForm::sqlite(sql_type)
    }

    fn nested_column(&self) -> (&'static str, Option<TextForm>) {
        ("TEXT", self.text_form("TEXT"))
    }
}

/// An SQLite database file.
#[derive(Debug)]
pub struct SqliteDatabase {
    pool: SqlitePool,
    url: String,
}

impl SqliteDatabase {
    /// Opens (creating if missing) the database at `url` (`sqlite://path`).
    pub async fn connect(url: &str) -> Result<Self> {
        let options = SqliteConnectOptions::from_str(url)
            .map_err(|e| AtlasError::Usage(format!("invalid SQLite URL '{url}': {e}")))?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .busy_timeout(Duration::from_secs(300));
        let pool = SqlitePoolOptions::new()
            .max_connections(4)
            .connect_with(options)
            .await
            .map_err(|e| AtlasError::database(format!("opening {url}"), e))?;
        Ok(Self {
            pool,
            url: mask_password(url),
        })
    }
}

/// Whether `error` is SQLite refusing a row for a key a unique index (or
/// the primary key) holds.
pub(super) fn refused_as_duplicate(error: &(dyn std::error::Error + 'static)) -> bool {
    error
        .downcast_ref::<RowRefusal>()
        .map(|refusal| &refusal.error)
        .or_else(|| error.downcast_ref::<rusqlite::Error>())
        .and_then(rusqlite::Error::sqlite_error)
        .is_some_and(|e| {
            matches!(
                e.extended_code,
                rusqlite::ffi::SQLITE_CONSTRAINT_UNIQUE
                    | rusqlite::ffi::SQLITE_CONSTRAINT_PRIMARYKEY
            )
        })
}

/// SQLite refusing a row of the write (a constraint, a trigger): the write
/// steps one row at a time, so it knows which, though SQLite's error does
/// not say.
#[derive(Debug)]
struct RowRefusal {
    /// 1-based position of the row in the write.
    row: u64,
    error: rusqlite::Error,
}

impl std::fmt::Display for RowRefusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.error.fmt(f)
    }
}

impl std::error::Error for RowRefusal {}

/// The row of the write (1-based) that `error` refused, if it is a refusal
/// of one row.
pub(super) fn refused_row(error: &(dyn std::error::Error + 'static)) -> Option<u64> {
    error
        .downcast_ref::<RowRefusal>()
        .map(|refusal| refusal.row)
}

/// Maps an Arrow type to the declared SQL type of a new column.
fn sql_type_for(data_type: &DataType) -> String {
    let name = match data_type {
        DataType::Int8
        | DataType::Int16
        | DataType::Int32
        | DataType::Int64
        | DataType::UInt8
        | DataType::UInt16
        | DataType::UInt32
        | DataType::UInt64 => "INTEGER",
        DataType::Float16 | DataType::Float32 | DataType::Float64 => "REAL",
        DataType::Decimal32(..)
        | DataType::Decimal64(..)
        | DataType::Decimal128(..)
        | DataType::Decimal256(..) => "NUMERIC",
        DataType::Boolean => "BOOLEAN",
        DataType::Date32 | DataType::Date64 => "DATE",
        DataType::Timestamp(..) => "TIMESTAMP",
        DataType::Binary | DataType::LargeBinary | DataType::BinaryView => "BLOB",
        _ => "TEXT",
    };
    name.to_string()
}

/// Maps a declared SQLite type to the Arrow type values are coerced to,
/// following SQLite's affinity rules with the common date names added.
/// NUMERIC affinity (NUMERIC, DECIMAL, ...) is text in the form of the stored
/// number ([`TextForm::SqliteNumeric`]): a double would round integers of
/// more than 15 digits, which SQLite stores exactly.
fn data_type_for(declared: &str) -> DataType {
    let t = declared.to_ascii_uppercase();
    if t.contains("INT") {
        DataType::Int64
    } else if t.contains("CHAR") || t.contains("CLOB") || t.contains("TEXT") {
        DataType::Utf8
    } else if t.contains("BOOL") {
        DataType::Boolean
    } else if t.contains("DATETIME") || t.contains("TIMESTAMP") {
        DataType::Timestamp(TimeUnit::Microsecond, None)
    } else if t.contains("DATE") {
        DataType::Date32
    } else if t.contains("REAL") || t.contains("FLOA") || t.contains("DOUB") {
        DataType::Float64
    } else if t.contains("BLOB") {
        DataType::Binary
    } else {
        DataType::Utf8
    }
}

const CREATE_FILE_IMPORTS: &str = "CREATE TABLE IF NOT EXISTS file_imports (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    file_hash VARCHAR(64) NOT NULL,
    file_name VARCHAR(500),
    table_name VARCHAR(255) NOT NULL,
    imported_at TIMESTAMP DEFAULT CURRENT_TIMESTAMP,
    record_count INTEGER,
    UNIQUE (file_hash, table_name)
)";

fn create_import_history() -> String {
    super::create_import_history_sql("INTEGER PRIMARY KEY AUTOINCREMENT", "TIMESTAMP", "INTEGER")
}

/// Whether `table` is a rowid table whose `rowid` no column shadows: its
/// rows' rowids then find them again in the import's transaction, whose
/// write lock keeps every other writer (and `VACUUM`, which may renumber
/// them) out until the commit.
async fn has_rowid(conn: &mut SqliteConnection, table: &TableRef) -> Result<bool> {
    sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM pragma_table_list WHERE schema = ?2 \
           AND name = ?1 COLLATE NOCASE AND type = 'table' AND wr = 0) \
         AND NOT EXISTS (SELECT 1 FROM pragma_table_info(?1, ?2) WHERE lower(name) = 'rowid')",
    )
    .bind(&table.name)
    .bind(table.schema.as_deref().unwrap_or("main"))
    .fetch_one(&mut *conn)
    .await
    .map_err(|e| AtlasError::database(format!("reading the kind of table '{table}'"), e))
}

/// Reads the key columns of `table` on `conn`: one statement stepped on a
/// blocking thread through the connection's handle, each value read in its
/// storage class (an integer column arrives as integers, not as text to
/// parse back); a column whose values do not all fit its type arrives as
/// text for the coercion.
async fn scan_keys(
    conn: &mut SqliteConnection,
    table: &TableRef,
    columns: &[TargetColumn],
    filter: Option<&KeyFilter>,
    batch_rows: usize,
    on_batch: &mut (dyn FnMut(RecordBatch) -> Result<()> + Send),
) -> Result<u64> {
    // Bytes as hex, which the check decodes as it does every database's.
    let select = columns
        .iter()
        .map(|c| match c.data_type {
            // (hex(NULL) is '', the hex of an empty blob too.)
            DataType::Binary => {
                let c = super::quote_ident(&c.name);
                format!("CASE WHEN {c} IS NULL THEN NULL ELSE hex({c}) END")
            }
            _ => super::quote_ident(&c.name),
        })
        .collect::<Vec<_>>()
        .join(", ");
    let sql = format!(
        "SELECT {select} FROM {}{}",
        table.sql(),
        filter.map_or_else(String::new, |f| format!(
            " WHERE {}",
            f.condition(&SqliteDialect, None)
        ))
    );
    let (lease, raw, done) = HandleLease::take(conn)
        .await
        .map_err(|e| AtlasError::database(format!("reading the keys of '{table}'"), e))?;
    // Declared after the lease, so dropped before it (see `write_chunk`).
    let (batches, mut received) = tokio::sync::mpsc::channel::<RecordBatch>(4);
    let (columns, name) = (columns.to_vec(), table.key());
    let reader = tokio::task::spawn_blocking(move || {
        let read = read_key_rows(raw, &sql, &columns, batch_rows.max(1), &name, batches);
        drop(done);
        read
    });
    let mut delivered = Ok(());
    while let Some(batch) = received.recv().await {
        delivered = on_batch(batch);
        if delivered.is_err() {
            break;
        }
    }
    // The reader stops at a closed queue.
    drop(received);
    let rows = reader
        .await
        .map_err(|e| AtlasError::task_stopped("the SQLite key reader stopped", e))?;
    drop(lease);
    delivered?;
    rows
}

/// Steps `sql` on the handle and sends the key columns in batches.
fn read_key_rows(
    handle: RawHandle,
    sql: &str,
    columns: &[TargetColumn],
    batch_rows: usize,
    table: &str,
    batches: tokio::sync::mpsc::Sender<RecordBatch>,
) -> Result<u64> {
    use rusqlite::types::Value;
    let error =
        |e: rusqlite::Error| AtlasError::database(format!("reading the keys of '{table}'"), e);
    // SAFETY: the handle is a live connection for as long as the caller
    // holds its lock, which it does until this function returned.
    let conn = unsafe { rusqlite::Connection::from_handle(handle.0.as_ptr()) }.map_err(error)?;
    let mut statement = conn.prepare(sql).map_err(error)?;
    let mut rows = statement.raw_query();
    let mut values: Vec<Vec<Value>> = columns
        .iter()
        .map(|_| Vec::with_capacity(batch_rows))
        .collect();
    let mut total = 0u64;
    let schema = Arc::new(datafusion::arrow::datatypes::Schema::new(
        columns
            .iter()
            .map(|c| datafusion::arrow::datatypes::Field::new(&c.name, DataType::Utf8, true))
            .collect::<Vec<_>>(),
    ));
    let send = |values: &mut Vec<Vec<Value>>| -> Result<bool> {
        let arrays = columns
            .iter()
            .zip(values.iter_mut())
            .map(|(c, v)| key_array(&c.data_type, std::mem::take(v)))
            .collect::<Vec<_>>();
        let fields: Vec<_> = arrays
            .iter()
            .zip(schema.fields())
            .map(|(a, f)| f.as_ref().clone().with_data_type(a.data_type().clone()))
            .collect();
        let batch = RecordBatch::try_new(
            Arc::new(datafusion::arrow::datatypes::Schema::new(fields)),
            arrays,
        )
        .map_err(AtlasError::from)?;
        Ok(batches.blocking_send(batch).is_ok())
    };
    while let Some(row) = rows.next().map_err(error)? {
        for (i, column) in values.iter_mut().enumerate() {
            column.push(row.get::<_, Value>(i).map_err(error)?);
        }
        total += 1;
        if values[0].len() >= batch_rows && !send(&mut values)? {
            return Ok(total);
        }
    }
    if !values[0].is_empty() {
        send(&mut values)?;
    }
    Ok(total)
}

/// One key column's values as an array of its target type where every
/// value is of the matching storage class, else as text to be coerced.
fn key_array(
    target: &DataType,
    values: Vec<rusqlite::types::Value>,
) -> datafusion::arrow::array::ArrayRef {
    use datafusion::arrow::array::{BooleanArray, Float64Array, Int64Array, StringArray};
    use rusqlite::types::Value;
    let integers = || {
        values
            .iter()
            .all(|v| matches!(v, Value::Integer(_) | Value::Null))
    };
    match target {
        // Rowids (locations), their bits as they are.
        DataType::UInt64 => Arc::new(
            values
                .iter()
                .map(|v| match v {
                    Value::Integer(i) => Some(*i as u64),
                    _ => None,
                })
                .collect::<datafusion::arrow::array::UInt64Array>(),
        ),
        t if t.is_integer() && integers() => {
            Arc::new(Int64Array::from_iter(values.iter().map(|v| match v {
                Value::Integer(i) => Some(*i),
                _ => None,
            })))
        }
        DataType::Float64 | DataType::Float32
            if values
                .iter()
                .all(|v| matches!(v, Value::Integer(_) | Value::Real(_) | Value::Null)) =>
        {
            Arc::new(Float64Array::from_iter(values.iter().map(|v| match v {
                Value::Integer(i) => Some(*i as f64),
                Value::Real(r) => Some(*r),
                _ => None,
            })))
        }
        DataType::Boolean if integers() => {
            Arc::new(BooleanArray::from_iter(values.iter().map(|v| match v {
                Value::Integer(i) => Some(*i != 0),
                _ => None,
            })))
        }
        _ => Arc::new(StringArray::from_iter(values.into_iter().map(
            |v| match v {
                Value::Null => None,
                Value::Integer(i) => Some(i.to_string()),
                Value::Real(r) => Some(r.to_string()),
                Value::Text(t) => Some(t),
                Value::Blob(b) => Some(String::from_utf8_lossy(&b).into_owned()),
            },
        ))),
    }
}

/// The catalog and metadata queries, on any connection (the pool's or the
/// import transaction's).
#[async_trait]
impl Catalog for SqliteConnection {
    async fn describe(&mut self, table: &TableRef) -> Result<Option<TargetTable>> {
        let conn = self;
        let rows = sqlx::query(
            "SELECT name, type, \"notnull\", dflt_value IS NOT NULL, pk FROM pragma_table_info(?1, ?2)",
        )
        .bind(&table.name)
        .bind(table.schema.as_deref().unwrap_or("main"))
        .fetch_all(&mut *conn)
        .await
        .map_err(|e| AtlasError::database(format!("reading the columns of '{table}'"), e))?;
        if rows.is_empty() {
            return Ok(None);
        }
        let columns = rows
            .iter()
            .map(|row| {
                let declared: String = row.get(1);
                let not_null: i64 = row.get(2);
                let has_default: bool = row.get(3);
                let pk: i64 = row.get(4);
                let rowid_alias = pk == 1 && declared.eq_ignore_ascii_case("INTEGER");
                TargetColumn {
                    name: row.get(0),
                    data_type: data_type_for(&declared),
                    text_form: TextForm::of(DbKind::Sqlite, &declared),
                    // SQLite compares the values it stores, as held here.
                    key_form: None,
                    seconds_precision: None,
                    zero_padded_width: None,
                    numbers_name_labels: false,
                    unzoned_in: None,
                    sql_type: declared,
                    nullable: not_null == 0,
                    has_default: has_default || rowid_alias,
                    // pragma_table_info leaves generated columns out.
                    generated: false,
                    max_chars: None,
                }
            })
            .collect();
        Ok(Some(TargetTable {
            name: table.key(),
            columns,
        }))
    }

    async fn file_imported(&mut self, file_hash: &str, table: &TableRef) -> Result<bool> {
        super::file_imported::<sqlx::Sqlite>(self, DbKind::Sqlite, file_hash, table).await
    }

    async fn insert_history(&mut self, entry: &HistoryEntry) -> Result<()> {
        super::insert_history::<sqlx::Sqlite>(self, DbKind::Sqlite, entry).await
    }

    async fn committed_import(&mut self, import_id: &str) -> Result<Option<(u64, u64)>> {
        super::committed_import::<sqlx::Sqlite>(self, DbKind::Sqlite, import_id).await
    }

    async fn complete_history(
        &mut self,
        import_id: &str,
        counts: &crate::report::ImportCounts,
    ) -> Result<()> {
        super::complete_history::<sqlx::Sqlite>(self, DbKind::Sqlite, import_id, counts).await
    }

    async fn record_refusal(&mut self, import_id: &str, refusal: &str, report: &str) -> Result<()> {
        super::record_refusal::<sqlx::Sqlite>(self, DbKind::Sqlite, import_id, refusal, report)
            .await
    }

    async fn take_refusals(&mut self, import_id: &str) -> Result<Vec<String>> {
        super::take_refusals::<sqlx::Sqlite>(self, DbKind::Sqlite, import_id).await
    }
}

#[async_trait]
impl Database for SqliteDatabase {
    fn kind(&self) -> DbKind {
        DbKind::Sqlite
    }

    async fn catalog(&self) -> Result<Box<dyn Catalog + '_>> {
        Ok(Box::new(Through(super::acquire(&self.pool).await?)))
    }

    fn display_url(&self) -> &str {
        &self.url
    }

    fn default_schema(&self) -> Option<&str> {
        Some("main")
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
        if sqlx::query(super::PROBE_HISTORY_IMPORT_ID)
            .execute(&self.pool)
            .await
            .is_err()
        {
            let added = sqlx::query(super::ADD_HISTORY_IMPORT_ID)
                .execute(&self.pool)
                .await;
            // Another import may have added it meanwhile.
            if let Err(e) = added
                && sqlx::query(super::PROBE_HISTORY_IMPORT_ID)
                    .execute(&self.pool)
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
        locations: bool,
        batch_rows: usize,
        on_batch: &mut (dyn FnMut(RecordBatch) -> Result<()> + Send),
    ) -> Result<u64> {
        let mut conn = super::acquire(&self.pool).await?;
        let mut columns = columns.to_vec();
        if locations && has_rowid(&mut conn, table).await? {
            columns.push(TargetColumn::of_type("rowid", "rowid", DataType::UInt64));
        }
        scan_keys(&mut conn, table, &columns, filter, batch_rows, on_batch).await
    }

    async fn table_stats(&self, table: &TableRef, key: &[TargetColumn]) -> Result<TableStats> {
        let mut conn = super::acquire(&self.pool).await?;
        let error = |e| AtlasError::database(format!("reading the statistics of '{table}'"), e);
        // The largest rowid is a cheap upper bound of the rows.
        let rows: Option<i64> = sqlx::query_scalar(AssertSqlSafe(format!(
            "SELECT max(rowid) FROM {}",
            table.sql()
        )))
        .fetch_one(&mut *conn)
        .await
        .unwrap_or(None);
        let indexes: Vec<(String, String)> = sqlx::query_as(
            "SELECT il.name, ii.name FROM pragma_index_list(?1, ?2) il
             JOIN pragma_index_info(il.name, ?2) ii ON ii.seqno = 0",
        )
        .bind(&table.name)
        .bind(table.schema.as_deref().unwrap_or("main"))
        .fetch_all(&mut *conn)
        .await
        .map_err(error)?;
        let rows = rows.unwrap_or(0).max(0) as u64;
        let key_index = super::key_index(indexes, key);
        let mut distinct = Vec::new();
        // Best effort, as the rows above: a table still to be created has
        // no sample.
        if super::wants_distinct_sample(key, &key_index)
            && let Ok(sample) = sqlx::query(AssertSqlSafe(super::distinct_sample_sql(table, key)))
                .fetch_one(&mut *conn)
                .await
        {
            let counts: Vec<i64> = (0..sample.len())
                .map(|i| sample.try_get::<i64, _>(i).unwrap_or(0))
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

    /// SQLite has no exact decimal: a NUMERIC column turns a long number
    /// into a double. Decimals are kept as their text.
    fn new_column_type(&self, data_type: &DataType) -> DataType {
        match data_type {
            DataType::Decimal32(..)
            | DataType::Decimal64(..)
            | DataType::Decimal128(..)
            | DataType::Decimal256(..) => DataType::Utf8,
            other => other.clone(),
        }
    }

    async fn begin(&self) -> Result<Box<dyn ImportTransaction>> {
        let tx = self
            .pool
            .begin_with("BEGIN IMMEDIATE")
            .await
            .map_err(|e| AtlasError::database("starting the import transaction", e))?;
        Ok(Box::new(SqliteImport { tx }))
    }
}

/// The raw handle of a connection, lent to a blocking task under a
/// [`HandleLease`].
struct RawHandle(std::ptr::NonNull<rusqlite::ffi::sqlite3>);

// SAFETY: the handle is used by one thread at a time: the blocking task,
// while the sqlx connection is locked by the lease and so does nothing with
// it; and SQLite's bundled build is thread-safe (serialized mode) anyway.
unsafe impl Send for RawHandle {}

/// A connection's handle lent to a blocking task. The connection stays
/// locked until the task has finished, even when the future that holds the
/// lease is dropped (a cancelled import): were it let go earlier, sqlx would
/// roll the transaction back while the task still writes, and the task's
/// next rows would commit one by one.
struct HandleLease<'c> {
    /// Closed when the task ends (it holds the sender).
    finished: std::sync::mpsc::Receiver<()>,
    _lock: sqlx::sqlite::LockedSqliteHandle<'c>,
}

impl<'c> HandleLease<'c> {
    /// Locks `conn` and lends its handle: the task must drop the sender when
    /// it is done with the handle.
    async fn take(
        conn: &'c mut SqliteConnection,
    ) -> std::result::Result<(Self, RawHandle, std::sync::mpsc::Sender<()>), sqlx::Error> {
        let mut lock = conn.lock_handle().await?;
        let raw = RawHandle(lock.as_raw_handle());
        let (done, finished) = std::sync::mpsc::channel();
        Ok((
            Self {
                finished,
                _lock: lock,
            },
            raw,
            done,
        ))
    }
}

impl Drop for HandleLease<'_> {
    fn drop(&mut self) {
        // Returns once the task dropped its sender, i.e. finished.
        let _ = self.finished.recv();
    }
}

/// Steps one prepared INSERT for every row of the batches `received`.
/// `numeric[i]`: column `i` has NUMERIC affinity and is bound as the
/// number its text is.
fn insert_rows(
    handle: RawHandle,
    sql: &str,
    numeric: &[bool],
    mut received: tokio::sync::mpsc::Receiver<RecordBatch>,
    table: &str,
) -> Result<u64> {
    let error = |e: rusqlite::Error| AtlasError::database(format!("writing into '{table}'"), e);
    // SAFETY: the handle is a live connection for as long as the caller
    // holds its lock, which outlives this function; `from_handle` does not
    // close it.
    let conn = unsafe { rusqlite::Connection::from_handle(handle.0.as_ptr()) }.map_err(error)?;
    let mut statement = conn.prepare(sql).map_err(error)?;
    let mut written = 0u64;
    while let Some(batch) = received.blocking_recv() {
        let columns = batch
            .columns()
            .iter()
            .map(|a| BindColumn::prepare(a, DecimalBinding::Real))
            .collect::<Result<Vec<_>>>()?;
        for row in 0..batch.num_rows() {
            for (i, column) in columns.iter().enumerate() {
                match column {
                    BindColumn::Text(text) if numeric[i] => {
                        bind_number(&mut statement, i + 1, text.as_string::<i32>(), row)
                    }
                    _ => column.bind_sqlite(&mut statement, i + 1, row),
                }
                .map_err(error)?;
            }
            statement.raw_execute().map_err(|e| {
                let row = written + row as u64 + 1;
                AtlasError::database(
                    format!("writing into '{table}'"),
                    RowRefusal { row, error: e },
                )
            })?;
        }
        written += batch.num_rows() as u64;
    }
    Ok(written)
}

/// Binds value `row` of a NUMERIC-affinity column as the INTEGER or REAL
/// its text is (the text of the stored number, so nothing is parsed twice
/// or rounded by SQLite's own reading), or as text where it is no number.
fn bind_number(
    statement: &mut rusqlite::Statement<'_>,
    index: usize,
    text: &datafusion::arrow::array::StringArray,
    row: usize,
) -> rusqlite::Result<()> {
    use datafusion::arrow::array::Array;
    if text.is_null(row) {
        return statement.raw_bind_parameter(index, rusqlite::types::Null);
    }
    let value = text.value(row);
    match sqlite_number(value) {
        Some(SqliteNumber::Integer(i)) => statement.raw_bind_parameter(index, i),
        Some(SqliteNumber::Real(r)) => statement.raw_bind_parameter(index, r),
        None => statement.raw_bind_parameter(index, value),
    }
}

/// The import transaction on SQLite.
struct SqliteImport {
    tx: Transaction<'static, Sqlite>,
}

#[async_trait]
impl ImportTransaction for SqliteImport {
    fn kind(&self) -> DbKind {
        DbKind::Sqlite
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

    async fn create_table(&mut self, table: &TableRef, columns: &[ColumnSpec]) -> Result<()> {
        let sql = create_table_sql(sql_type_for, table, columns, "INTEGER PRIMARY KEY");
        sqlx::query(AssertSqlSafe(sql))
            .execute(&mut *self.tx)
            .await
            .map_err(|e| AtlasError::database(format!("creating table '{table}'"), e))?;
        Ok(())
    }

    async fn lock_table(&mut self, _table: &TableRef) -> Result<()> {
        // `BEGIN IMMEDIATE` already holds the database's write lock.
        Ok(())
    }

    /// One prepared single-row INSERT, stepped for every row on a blocking
    /// thread, through the transaction's own connection handle: SQLite's
    /// own bulk path (`sqlite3 .import` does the same), without a driver's
    /// cost per statement and parameter.
    async fn write_chunk(
        &mut self,
        table: &TableRef,
        columns: &[TargetColumn],
        chunk: &mut ChunkStream<'_>,
    ) -> Result<u64> {
        let sql = super::bind::insert_sql(table, columns, 1, |_| "?");
        let numeric: Vec<bool> = columns
            .iter()
            .map(|c| matches!(c.text_form, Some(TextForm::SqliteNumeric { .. })))
            .collect();
        let (lease, raw, done) = HandleLease::take(&mut self.tx)
            .await
            .map_err(|e| AtlasError::database(format!("writing into '{table}'"), e))?;
        // Declared after the lease, so dropped before it when the import is
        // cancelled: the writer then sees the end of its input and finishes,
        // and the lease, waiting for that, can let the connection go.
        let (rows, received) = tokio::sync::mpsc::channel::<RecordBatch>(2);
        let name = table.key();
        let writer = tokio::task::spawn_blocking(move || {
            let written = insert_rows(raw, &sql, &numeric, received, &name);
            drop(done);
            written
        });
        let mut failed = None;
        while let Some(batch) = chunk.next().await {
            match batch {
                // A closed queue: the writer stopped, and says why below.
                Ok(batch) => {
                    if rows.send(batch).await.is_err() {
                        break;
                    }
                }
                Err(e) => {
                    failed = Some(e);
                    break;
                }
            }
        }
        drop(rows);
        let written = writer
            .await
            .map_err(|e| AtlasError::task_stopped("the SQLite writer stopped", e))?;
        drop(lease);
        match failed {
            Some(e) => Err(e),
            None => written,
        }
    }

    async fn record_file(&mut self, record: &FileRecord) -> Result<()> {
        sqlx::query(
            "INSERT INTO file_imports (file_hash, file_name, table_name, record_count)
             VALUES (?1, ?2, ?3, ?4)
             ON CONFLICT (file_hash, table_name) DO UPDATE SET
               file_name = excluded.file_name,
               imported_at = CURRENT_TIMESTAMP,
               record_count = excluded.record_count",
        )
        .bind(&record.file_hash)
        .bind(&record.file_name)
        .bind(&record.table_name)
        .bind(record.record_count as i64)
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
