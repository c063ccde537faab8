//! Database adapters: one per database behind one pair of traits (docs/ARCHITECTURE.md §4).
//!
//! [`Database`] is the connection pool: catalog lookups and opening the import
//! transaction. [`ImportTransaction`] is the one transaction an import runs in:
//! table creation, the lock, the key scan, chunk writes and the metadata rows all
//! go through it, so they commit together or not at all.

mod bind;
mod catalog;
mod dialect;
mod errors;
mod key_batch;
mod mysql;
mod pg_binary;
mod postgres;
mod probe;
mod sqlite;
mod text_rows;
mod upsert;

use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::array::{RecordBatch, StringBuilder};
use datafusion::arrow::datatypes::{DataType, Field, Schema};

use crate::error::{AtlasError, Result};
use crate::names::{TableName, TableRef};
use crate::schema::{ColumnSpec, TargetColumn, TargetTable};

pub use catalog::Catalog;
pub(crate) use errors::{database_message, refused_as_duplicate, refused_row};
pub use mysql::MySqlDatabase;
pub use postgres::PostgresDatabase;
pub use probe::KeyFilter;
pub(crate) use probe::filterable;
pub use sqlite::SqliteDatabase;
pub(crate) use upsert::{STAGE_LOCATION, STAGE_ROW, UpsertStatements};

/// The batches of one chunk, as the sink hands them to [`ImportTransaction::write_chunk`].
pub type ChunkStream<'a> = futures::stream::BoxStream<'a, Result<RecordBatch>>;

/// Which database a URL points at.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum DbKind {
    /// Embedded SQLite (`sqlite://path`).
    Sqlite,
    /// PostgreSQL (`postgres://...`).
    Postgres,
    /// MySQL or MariaDB (`mysql://...`, `mariadb://...`).
    MySql,
}

impl fmt::Display for DbKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            DbKind::Sqlite => "sqlite",
            DbKind::Postgres => "postgres",
            DbKind::MySql => "mysql",
        })
    }
}

/// What the catalog says of a table's size and indexes, for choosing the
/// key strategy.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TableStats {
    /// The rows the database estimates the table holds.
    pub rows: u64,
    /// An index whose first column is one of the key columns: its name and
    /// that column.
    pub key_index: Option<KeyIndex>,
    /// The estimated distinct non-NULL values of key columns, where the
    /// database keeps such statistics.
    pub distinct: Vec<(String, f64)>,
}

/// An index a key's lookups can use.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct KeyIndex {
    /// The index's name.
    pub name: String,
    /// Its first column, one of the key columns.
    pub column: String,
}

/// A row of `file_imports`.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct FileRecord {
    /// SHA-256 of the source bytes, hex.
    pub file_hash: String,
    /// The source path as given.
    pub file_name: String,
    /// Target table.
    pub table_name: String,
    /// Rows inserted.
    pub record_count: u64,
}

/// A row of `import_history`: one per import that ran, whatever its end.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct HistoryEntry {
    /// When the import started.
    pub started_at: chrono::DateTime<chrono::Utc>,
    /// When it ended.
    pub finished_at: chrono::DateTime<chrono::Utc>,
    /// The source as given (a path, a URL without credentials, or a name).
    pub source: String,
    /// Target table.
    pub table_name: String,
    /// The key columns, comma-separated.
    pub key_columns: String,
    /// The duplicate policy.
    pub on_duplicate: crate::options::OnDuplicate,
    /// How the import ended.
    pub status: crate::report::ImportStatus,
    /// Source rows read.
    pub rows_read: u64,
    /// Rows inserted (0 unless committed).
    pub inserted: u64,
    /// Existing rows updated (0 unless committed).
    pub updated: u64,
    /// Rows skipped as duplicates.
    pub skipped: u64,
    /// Duplicate rows found (against existing rows and inside the import).
    pub duplicates: u64,
    /// Rows rejected for bad values.
    pub rejected: u64,
    /// SHA-256 of the source, for file sources.
    pub file_hash: Option<String>,
    /// The error, for imports that did not commit.
    pub error: Option<String>,
    /// The import's id (see `ImportId`): a retried write of the same import
    /// finds it committed here instead of writing twice.
    #[serde(default)]
    pub import_id: Option<String>,
}

impl HistoryEntry {
    /// The row of an import of `source` into `table_name` starting now:
    /// nothing counted, `failed` until it ends otherwise.
    pub fn starting(
        source: String,
        table_name: String,
        key_columns: String,
        on_duplicate: crate::options::OnDuplicate,
    ) -> Self {
        let now = chrono::Utc::now();
        HistoryEntry {
            started_at: now,
            finished_at: now,
            source,
            table_name,
            key_columns,
            on_duplicate,
            status: crate::report::ImportStatus::Failed,
            rows_read: 0,
            inserted: 0,
            updated: 0,
            skipped: 0,
            duplicates: 0,
            rejected: 0,
            file_hash: None,
            error: None,
            import_id: None,
        }
    }

    /// This entry ended now with `status` and `counts`.
    pub fn finish(
        &self,
        status: crate::report::ImportStatus,
        counts: &crate::report::ImportCounts,
        error: Option<String>,
    ) -> HistoryEntry {
        HistoryEntry {
            finished_at: chrono::Utc::now(),
            status,
            rows_read: counts.rows_read,
            inserted: counts.inserted,
            updated: counts.updated,
            skipped: counts.skipped,
            duplicates: counts.duplicates_existing + counts.duplicates_in_file,
            rejected: counts.rejected,
            error,
            ..self.clone()
        }
    }
}

/// The `i`-th (1-based) bind parameter of a statement on `kind`.
fn placeholder(kind: DbKind, i: usize) -> String {
    kind.dialect().placeholder(i)
}

/// A connection from `pool`.
pub(crate) async fn acquire<DB: sqlx::Database>(
    pool: &sqlx::Pool<DB>,
) -> Result<sqlx::pool::PoolConnection<DB>> {
    pool.acquire()
        .await
        .map_err(|e| AtlasError::database("connecting", e))
}

/// Whether `host` (a URL's, brackets of an IPv6 address allowed) is this
/// machine: `localhost` or a loopback address. TLS to it protects nothing.
pub(crate) fn is_loopback_host(host: &str) -> bool {
    let host = host.trim_start_matches('[').trim_end_matches(']');
    host == "localhost"
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// Whether a file was imported into a table: binds the file's hash and the
/// table's key.
pub(crate) fn file_imported_sql(kind: DbKind) -> String {
    format!(
        "SELECT 1 FROM file_imports WHERE file_hash = {} AND table_name = {}",
        placeholder(kind, 1),
        placeholder(kind, 2)
    )
}

/// Whether `file_hash` was already imported into `table`, read on `conn`.
pub(crate) async fn file_imported<DB>(
    conn: &mut DB::Connection,
    kind: DbKind,
    file_hash: &str,
    table: &TableRef,
) -> Result<bool>
where
    DB: sqlx::Database,
    for<'c> &'c mut DB::Connection: sqlx::Executor<'c, Database = DB>,
    for<'q> &'q str: sqlx::Encode<'q, DB> + sqlx::Type<DB>,
    <DB as sqlx::Database>::Arguments: sqlx::IntoArguments<DB>,
{
    let key = table.key();
    let found = sqlx::query::<DB>(sqlx::AssertSqlSafe(file_imported_sql(kind)))
        .bind(file_hash)
        .bind(key.as_str())
        .fetch_optional(&mut *conn)
        .await
        .map_err(|e| AtlasError::database("reading file_imports", e))?;
    Ok(found.is_some())
}

/// `CREATE TABLE IF NOT EXISTS import_history` (one row per import, as
/// README.md's CLI section lists it) with a database's types for the
/// identity key, timestamps and counts.
pub(crate) fn create_import_history_sql(identity: &str, timestamp: &str, count: &str) -> String {
    format!(
        "CREATE TABLE IF NOT EXISTS import_history (
    id {identity},
    started_at {timestamp},
    finished_at {timestamp},
    source VARCHAR(1000),
    table_name VARCHAR(255) NOT NULL,
    key_columns VARCHAR(1000),
    on_duplicate VARCHAR(16),
    status VARCHAR(32) NOT NULL,
    rows_read {count},
    inserted {count},
    updated {count},
    skipped {count},
    duplicates {count},
    rejected {count},
    file_hash TEXT,
    error TEXT,
    import_id VARCHAR(32)
)"
    )
}

/// The duplicates each partition of a distributed import's check found,
/// until its write (in a later stage) merges them into one refusal: the
/// check's tasks cannot fail the job with the whole import's report, as
/// each sees only its share of the keys. Made by the first distributed
/// import that needs it (local imports never do).
pub(crate) const CREATE_IMPORT_REFUSALS: &str = "CREATE TABLE IF NOT EXISTS import_refusals (
    import_id VARCHAR(32) NOT NULL,
    refusal VARCHAR(64) NOT NULL,
    report TEXT NOT NULL
)";

/// The statements on `import_refusals`, in a database's placeholders.
pub(crate) struct RefusalSql {
    /// Deletes one refusal: import id, name.
    pub(crate) delete_one: String,
    /// Inserts one: import id, name, report.
    pub(crate) insert: String,
    /// Reads an import's reports: import id.
    pub(crate) select: String,
    /// Deletes an import's refusals: import id.
    pub(crate) delete_all: String,
}

impl RefusalSql {
    pub(crate) fn of(kind: DbKind) -> Self {
        let (p1, p2, p3) = (
            placeholder(kind, 1),
            placeholder(kind, 2),
            placeholder(kind, 3),
        );
        Self {
            delete_one: format!(
                "DELETE FROM import_refusals WHERE import_id = {p1} AND refusal = {p2}"
            ),
            insert: format!(
                "INSERT INTO import_refusals (import_id, refusal, report) VALUES ({p1}, {p2}, {p3})"
            ),
            select: format!("SELECT report FROM import_refusals WHERE import_id = {p1}"),
            delete_all: format!("DELETE FROM import_refusals WHERE import_id = {p1}"),
        }
    }
}

/// Reads `import_history.import_id`: it fails where the table predates the
/// column.
pub(crate) const PROBE_HISTORY_IMPORT_ID: &str = "SELECT import_id FROM import_history WHERE 1 = 0";
/// Adds `import_id` to an `import_history` made before it existed.
pub(crate) const ADD_HISTORY_IMPORT_ID: &str =
    "ALTER TABLE import_history ADD COLUMN import_id VARCHAR(32)";

/// The committed import of an id: what it wrote.
pub(crate) fn committed_import_sql(kind: DbKind) -> String {
    format!(
        "SELECT inserted, updated FROM import_history WHERE import_id = {} AND status = 'committed'",
        placeholder(kind, 1)
    )
}

/// The `UPDATE` that completes a committed import's `import_history` row
/// with the counts only the whole job knows (a distributed import's sink
/// wrote what it saw): rows read, updated, skipped, duplicates, rejected,
/// then the id.
pub(crate) fn complete_history_sql(kind: DbKind) -> String {
    format!(
        "UPDATE import_history SET rows_read = {}, updated = {}, skipped = {}, duplicates = {}, \
         rejected = {} WHERE import_id = {}",
        placeholder(kind, 1),
        placeholder(kind, 2),
        placeholder(kind, 3),
        placeholder(kind, 4),
        placeholder(kind, 5),
        placeholder(kind, 6)
    )
}

/// The counts [`complete_history_sql`] sets, in its order.
pub(crate) fn completed_counts(counts: &crate::report::ImportCounts) -> [i64; 5] {
    let count = |n: u64| i64::try_from(n).unwrap_or(i64::MAX);
    [
        count(counts.rows_read),
        count(counts.updated),
        count(counts.skipped),
        count(counts.duplicates_existing + counts.duplicates_in_file),
        count(counts.rejected),
    ]
}

/// Completes the `import_history` row of `import_id` on `conn`.
pub(crate) async fn complete_history<DB>(
    conn: &mut DB::Connection,
    kind: DbKind,
    import_id: &str,
    counts: &crate::report::ImportCounts,
) -> Result<()>
where
    DB: sqlx::Database,
    for<'c> &'c mut DB::Connection: sqlx::Executor<'c, Database = DB>,
    for<'q> &'q str: sqlx::Encode<'q, DB> + sqlx::Type<DB>,
    for<'q> i64: sqlx::Encode<'q, DB> + sqlx::Type<DB>,
    <DB as sqlx::Database>::Arguments: sqlx::IntoArguments<DB>,
{
    let mut query = sqlx::query::<DB>(sqlx::AssertSqlSafe(complete_history_sql(kind)));
    for count in completed_counts(counts) {
        query = query.bind(count);
    }
    query
        .bind(import_id)
        .execute(&mut *conn)
        .await
        .map_err(|e| AtlasError::database("completing the import's import_history row", e))?;
    Ok(())
}

/// Records the refusal `report` of import `import_id` under the name
/// `refusal` on `conn` (a retried task, which finds the same rows, names it
/// the same and replaces its own).
pub(crate) async fn record_refusal<DB>(
    conn: &mut DB::Connection,
    kind: DbKind,
    import_id: &str,
    refusal: &str,
    report: &str,
) -> Result<()>
where
    DB: sqlx::Database,
    for<'c> &'c mut DB::Connection: sqlx::Executor<'c, Database = DB>,
    for<'q> &'q str: sqlx::Encode<'q, DB> + sqlx::Type<DB>,
    <DB as sqlx::Database>::Arguments: sqlx::IntoArguments<DB>,
{
    let error = |e| AtlasError::database("recording a refusal in import_refusals", e);
    // (Racing tasks may both create it: the loser's error is moot.)
    let _ = sqlx::query::<DB>(CREATE_IMPORT_REFUSALS)
        .execute(&mut *conn)
        .await;
    let sql = RefusalSql::of(kind);
    sqlx::query::<DB>(sqlx::AssertSqlSafe(sql.delete_one))
        .bind(import_id)
        .bind(refusal)
        .execute(&mut *conn)
        .await
        .map_err(error)?;
    sqlx::query::<DB>(sqlx::AssertSqlSafe(sql.insert))
        .bind(import_id)
        .bind(refusal)
        .bind(report)
        .execute(&mut *conn)
        .await
        .map_err(error)?;
    Ok(())
}

/// Takes the refusals of import `import_id` (reads and deletes them) on `conn`.
pub(crate) async fn take_refusals<DB>(
    conn: &mut DB::Connection,
    kind: DbKind,
    import_id: &str,
) -> Result<Vec<String>>
where
    DB: sqlx::Database,
    for<'c> &'c mut DB::Connection: sqlx::Executor<'c, Database = DB>,
    for<'q> &'q str: sqlx::Encode<'q, DB> + sqlx::Type<DB>,
    for<'r> String: sqlx::Decode<'r, DB> + sqlx::Type<DB>,
    (String,): for<'r> sqlx::FromRow<'r, DB::Row>,
    <DB as sqlx::Database>::Arguments: sqlx::IntoArguments<DB>,
{
    let error = |e| AtlasError::database("reading import_refusals", e);
    let _ = sqlx::query::<DB>(CREATE_IMPORT_REFUSALS)
        .execute(&mut *conn)
        .await;
    let sql = RefusalSql::of(kind);
    let reports: Vec<(String,)> = sqlx::query_as::<DB, (String,)>(sqlx::AssertSqlSafe(sql.select))
        .bind(import_id)
        .fetch_all(&mut *conn)
        .await
        .map_err(error)?;
    sqlx::query::<DB>(sqlx::AssertSqlSafe(sql.delete_all))
        .bind(import_id)
        .execute(&mut *conn)
        .await
        .map_err(error)?;
    Ok(reports.into_iter().map(|(r,)| r).collect())
}

/// What the committed import `import_id` wrote, read on `conn`: `(inserted,
/// updated)`, or `None` when no import of that id committed.
pub(crate) async fn committed_import<DB>(
    conn: &mut DB::Connection,
    kind: DbKind,
    import_id: &str,
) -> Result<Option<(u64, u64)>>
where
    DB: sqlx::Database,
    for<'c> &'c mut DB::Connection: sqlx::Executor<'c, Database = DB>,
    for<'q> &'q str: sqlx::Encode<'q, DB> + sqlx::Type<DB>,
    for<'r> i64: sqlx::Decode<'r, DB> + sqlx::Type<DB>,
    usize: sqlx::ColumnIndex<DB::Row>,
    <DB as sqlx::Database>::Arguments: sqlx::IntoArguments<DB>,
{
    use sqlx::Row;
    let row = sqlx::query::<DB>(sqlx::AssertSqlSafe(committed_import_sql(kind)))
        .bind(import_id)
        .fetch_optional(&mut *conn)
        .await
        .map_err(|e| AtlasError::database("reading import_history", e))?;
    let count = |row: &DB::Row, i: usize| -> Result<u64> {
        let n: Option<i64> = row
            .try_get(i)
            .map_err(|e| AtlasError::database("reading import_history", e))?;
        Ok(n.unwrap_or(0).max(0) as u64)
    };
    row.map(|row| Ok((count(&row, 0)?, count(&row, 1)?)))
        .transpose()
}

/// The `INSERT` of an `import_history` row; binds [`HistoryEntry::values`].
pub(crate) fn insert_history_sql(kind: DbKind) -> String {
    let placeholders = (1..=16)
        .map(|i| placeholder(kind, i))
        .collect::<Vec<_>>()
        .join(", ");
    format!(
        "INSERT INTO import_history (started_at, finished_at, source, table_name, key_columns,
         on_duplicate, status, rows_read, inserted, updated, skipped, duplicates, rejected,
         file_hash, error, import_id) VALUES ({placeholders})"
    )
}

/// A value of an `import_history` row, as every driver binds it.
pub(crate) enum HistoryValue<'a> {
    Time(chrono::NaiveDateTime),
    Text(Option<&'a str>),
    Count(i64),
}

impl HistoryEntry {
    /// The values of [`insert_history_sql`], in its order.
    pub(crate) fn values(&self) -> [HistoryValue<'_>; 16] {
        use HistoryValue::{Count, Text, Time};
        let count = |n: u64| Count(i64::try_from(n).unwrap_or(i64::MAX));
        [
            Time(self.started_at.naive_utc()),
            Time(self.finished_at.naive_utc()),
            Text(Some(&self.source)),
            Text(Some(&self.table_name)),
            Text(Some(&self.key_columns)),
            Text(Some(self.on_duplicate.as_str())),
            Text(Some(self.status.as_str())),
            count(self.rows_read),
            count(self.inserted),
            count(self.updated),
            count(self.skipped),
            count(self.duplicates),
            count(self.rejected),
            Text(self.file_hash.as_deref()),
            Text(self.error.as_deref()),
            Text(self.import_id.as_deref()),
        ]
    }
}

/// Writes an `import_history` row on `conn`.
pub(crate) async fn insert_history<DB>(
    conn: &mut DB::Connection,
    kind: DbKind,
    entry: &HistoryEntry,
) -> Result<()>
where
    DB: sqlx::Database,
    for<'c> &'c mut DB::Connection: sqlx::Executor<'c, Database = DB>,
    for<'q> chrono::NaiveDateTime: sqlx::Encode<'q, DB> + sqlx::Type<DB>,
    for<'q> i64: sqlx::Encode<'q, DB> + sqlx::Type<DB>,
    for<'q> Option<&'q str>: sqlx::Encode<'q, DB> + sqlx::Type<DB>,
    <DB as sqlx::Database>::Arguments: sqlx::IntoArguments<DB>,
{
    let mut query = sqlx::query::<DB>(sqlx::AssertSqlSafe(insert_history_sql(kind)));
    for value in entry.values() {
        query = match value {
            HistoryValue::Time(t) => query.bind(t),
            HistoryValue::Text(t) => query.bind(t),
            HistoryValue::Count(n) => query.bind(n),
        };
    }
    query
        .execute(&mut *conn)
        .await
        .map_err(|e| AtlasError::database("recording the import in import_history", e))?;
    Ok(())
}

/// A database that imports can target.
#[async_trait]
pub trait Database: Send + Sync + fmt::Debug {
    /// Which database this is.
    fn kind(&self) -> DbKind;

    /// The URL with any password masked, for messages.
    fn display_url(&self) -> &str;

    /// The schema unqualified names live in (PostgreSQL's `current_schema()`,
    /// the MySQL database of the URL, SQLite's `main`).
    fn default_schema(&self) -> Option<&str>;

    /// Whether unquoted names are folded to lowercase (PostgreSQL).
    fn folds_to_lowercase(&self) -> bool {
        false
    }

    /// The table `name` means on this database: unquoted parts folded as the
    /// database folds them, the default schema left implicit.
    fn resolve(&self, name: &TableName) -> TableRef {
        name.resolve(self.folds_to_lowercase(), self.default_schema())
    }

    /// A connection of the pool, for the catalog and metadata queries.
    async fn catalog(&self) -> Result<Box<dyn Catalog + '_>>;

    /// The catalog's description of `table`, or `None` when it does not exist.
    async fn describe_table(&self, table: &TableRef) -> Result<Option<TargetTable>> {
        self.catalog().await?.describe(table).await
    }

    /// Creates `file_imports` (and friends) if missing.
    async fn ensure_metadata(&self) -> Result<()>;

    /// Whether `file_hash` was already imported into `table`.
    async fn file_imported(&self, file_hash: &str, table: &TableRef) -> Result<bool> {
        self.catalog().await?.file_imported(file_hash, table).await
    }

    /// Writes an `import_history` row on its own (for imports that did not
    /// commit: their transaction is gone).
    async fn record_history(&self, entry: &HistoryEntry) -> Result<()> {
        self.catalog().await?.insert_history(entry).await
    }

    /// Streams the key columns of every row of `table` (or of the rows
    /// `filter` lets through), as committed, in batches of at most
    /// `batch_rows` rows, on a connection of its own (so the import's
    /// transaction writes meanwhile; the import's lock keeps other writers
    /// out). Each column comes as its target type or as text to be
    /// converted. With `locations`, where the database can say where each
    /// row is for a later statement of the same transaction to find it
    /// (PostgreSQL's `ctid` of a plain table), a last column of them
    /// (UInt64); no such column where it cannot. Returns the rows read.
    async fn scan_keys(
        &self,
        table: &TableRef,
        columns: &[TargetColumn],
        filter: Option<&KeyFilter>,
        locations: bool,
        batch_rows: usize,
        on_batch: &mut (dyn FnMut(RecordBatch) -> Result<()> + Send),
    ) -> Result<u64>;

    /// The estimated size of `table` and an index the key can use.
    async fn table_stats(&self, table: &TableRef, key: &[TargetColumn]) -> Result<TableStats>;

    /// The SQL type this database uses for an Arrow type when creating a table.
    fn sql_type_for(&self, data_type: &DataType) -> String;

    /// The type a new column of (inferred or source) type `data_type` is
    /// given, so that it holds every value exactly: the type itself, or text
    /// where the database has no exact equivalent.
    fn new_column_type(&self, data_type: &DataType) -> DataType {
        data_type.clone()
    }

    /// Opens the import transaction (taking the database-wide write lock where
    /// that is how the database serializes writers).
    async fn begin(&self) -> Result<Box<dyn ImportTransaction>>;

    /// Creates `table` with declared SQL types (a mapping file's `db_schema`)
    /// unless it exists, under the import lock, in a transaction of its own;
    /// returns whether it created it. An existing table is left as it is.
    async fn create_declared_table(
        &self,
        table: &TableRef,
        columns: &[ColumnSpec],
    ) -> Result<bool> {
        for c in columns {
            let valid = c.sql_type.as_deref().is_some_and(|t| {
                !t.is_empty()
                    && t.chars()
                        .all(|ch| ch.is_ascii_alphanumeric() || " _(),".contains(ch))
            });
            if !valid {
                return Err(AtlasError::Usage(format!(
                    "column '{}': {:?} is not a SQL type (letters, digits, spaces, _ , ( ) only)",
                    c.name,
                    c.sql_type.as_deref().unwrap_or_default()
                )));
            }
        }
        let mut tx = self.begin().await?;
        let created: Result<bool> = async {
            tx.lock_table(table).await?;
            if tx.describe_table(table).await?.is_some() {
                return Ok(false);
            }
            tx.create_table(table, columns).await?;
            Ok(true)
        }
        .await;
        match created {
            Ok(created) => {
                tx.commit().await?;
                Ok(created)
            }
            Err(e) => {
                tx.rollback().await.ok();
                Err(e)
            }
        }
    }
}

/// The one transaction of an import.
#[async_trait]
pub trait ImportTransaction: Send {
    /// Which database this is (for the statements that differ).
    fn kind(&self) -> DbKind;

    /// Runs one statement; returns the rows it affected.
    async fn execute(&mut self, sql: String) -> Result<u64>;

    /// Runs an upsert's update join (`UpsertStatements::updates`, the
    /// target aliased `atlas_t`); returns the rows it updated.
    async fn execute_join(&mut self, sql: String) -> Result<u64> {
        self.execute(sql).await
    }

    /// Creates `table` with an `id` identity key (unless a column is named `id`).
    async fn create_table(&mut self, table: &TableRef, columns: &[ColumnSpec]) -> Result<()>;

    /// The transaction's connection, for the catalog and metadata queries.
    fn catalog(&mut self) -> &mut dyn Catalog;

    /// The catalog's description of `table` as this transaction sees it.
    async fn describe_table(&mut self, table: &TableRef) -> Result<Option<TargetTable>> {
        self.catalog().describe(table).await
    }

    /// Serializes imports into `table` (docs/ARCHITECTURE.md §6); called before
    /// the table is described or created.
    async fn lock_table(&mut self, table: &TableRef) -> Result<()>;

    /// Whether `file_hash` was already imported into `table`.
    async fn file_imported(&mut self, file_hash: &str, table: &TableRef) -> Result<bool> {
        self.catalog().file_imported(file_hash, table).await
    }

    /// Writes one chunk into `columns` of `table`: the batches `chunk` yields, in
    /// order, as they arrive (so encoding and the server's work overlap with the
    /// check still running upstream). An error item aborts the chunk and is
    /// returned. Returns the rows written.
    async fn write_chunk(
        &mut self,
        table: &TableRef,
        columns: &[TargetColumn],
        chunk: &mut ChunkStream<'_>,
    ) -> Result<u64>;

    /// The database's estimate of the rows in `table`, where the join order
    /// of an upsert depends on it (MySQL/MariaDB); `None` elsewhere.
    async fn estimated_rows(&mut self, _table: &TableRef) -> Result<Option<u64>> {
        Ok(None)
    }

    /// Inserts or refreshes the `file_imports` row.
    async fn record_file(&mut self, record: &FileRecord) -> Result<()>;

    /// Writes the `import_history` row of the committing import.
    async fn record_history(&mut self, entry: &HistoryEntry) -> Result<()> {
        self.catalog().insert_history(entry).await
    }

    /// Commits everything.
    async fn commit(self: Box<Self>) -> Result<()>;

    /// Rolls everything back.
    async fn rollback(self: Box<Self>) -> Result<()>;
}

/// Connects to the database a URL names: `sqlite://path`, `postgres://...`,
/// `mysql://...` (MariaDB too).
pub async fn connect(url: &str) -> Result<Arc<dyn Database>> {
    if url.starts_with("sqlite:") {
        Ok(Arc::new(SqliteDatabase::connect(url).await?))
    } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        Ok(Arc::new(PostgresDatabase::connect(url).await?))
    } else if url.starts_with("mysql://") || url.starts_with("mariadb://") {
        Ok(Arc::new(MySqlDatabase::connect(url).await?))
    } else {
        Err(AtlasError::Usage(format!(
            "unsupported database URL '{}': expected sqlite://PATH, postgres://... or mysql://...",
            mask_password(url)
        )))
    }
}

/// Quotes an identifier for SQL (`"` doubled), so any name is a name, never SQL.
pub use crate::names::quote as quote_ident;

pub use crate::secrets::mask_password;

/// Collects text rows into batches of Utf8 columns, for key scans.
pub(crate) struct TextBatcher {
    schema: Arc<Schema>,
    builders: Vec<StringBuilder>,
    rows: usize,
    batch_rows: usize,
    total: u64,
}

impl TextBatcher {
    pub(crate) fn new(columns: &[TargetColumn], batch_rows: usize) -> Self {
        let schema = Arc::new(Schema::new(
            columns
                .iter()
                .map(|c| Field::new(&c.name, DataType::Utf8, true))
                .collect::<Vec<_>>(),
        ));
        Self {
            builders: columns.iter().map(|_| StringBuilder::new()).collect(),
            schema,
            rows: 0,
            batch_rows: batch_rows.max(1),
            total: 0,
        }
    }

    /// Appends one database row of text values; emits a batch when full.
    pub(crate) fn push_row<'v>(
        &mut self,
        values: impl IntoIterator<Item = Option<&'v str>>,
        on_batch: &mut (dyn FnMut(RecordBatch) -> Result<()> + Send),
    ) -> Result<()> {
        for (builder, value) in self.builders.iter_mut().zip(values) {
            builder.append_option(value);
        }
        self.rows += 1;
        self.total += 1;
        if self.rows >= self.batch_rows {
            self.flush(on_batch)?;
        }
        Ok(())
    }

    pub(crate) fn flush(
        &mut self,
        on_batch: &mut (dyn FnMut(RecordBatch) -> Result<()> + Send),
    ) -> Result<u64> {
        if self.rows > 0 {
            let arrays = self
                .builders
                .iter_mut()
                .map(|b| Arc::new(b.finish()) as _)
                .collect();
            let batch =
                RecordBatch::try_new(Arc::clone(&self.schema), arrays).map_err(AtlasError::from)?;
            self.rows = 0;
            on_batch(batch)?;
        }
        Ok(self.total)
    }
}

/// Rows a sample of the key columns' distinct values reads where the
/// database keeps no statistics of them (MySQL/MariaDB, SQLite).
const DISTINCT_SAMPLE_ROWS: u64 = 1_000;

/// Whether the key strategy wants a sample of the key columns' distinct
/// values: a key of several columns, none of which an index serves (an
/// indexed column is probed whatever the others hold).
pub(crate) fn wants_distinct_sample(key: &[TargetColumn], key_index: &Option<KeyIndex>) -> bool {
    key.len() > 1 && key_index.is_none()
}

/// The statement counting the distinct values of each `key` column among the
/// table's first [`DISTINCT_SAMPLE_ROWS`] rows, then the rows it read.
pub(crate) fn distinct_sample_sql(table: &TableRef, key: &[TargetColumn]) -> String {
    let counts: Vec<String> = key
        .iter()
        .map(|c| format!("COUNT(DISTINCT {})", quote_ident(&c.name)))
        .collect();
    format!(
        "SELECT {}, COUNT(*) FROM (SELECT {} FROM {} LIMIT {DISTINCT_SAMPLE_ROWS}) atlas_sample",
        counts.join(", "),
        column_list(key),
        table.sql()
    )
}

/// The counts of [`distinct_sample_sql`] (one per key column, then the
/// rows sampled) as estimated distinct values among the table's `rows`.
pub(crate) fn sampled_distinct(
    key: &[TargetColumn],
    counts: &[i64],
    rows: u64,
) -> Vec<(String, f64)> {
    let Some((&sampled, distinct)) = counts.split_last() else {
        return Vec::new();
    };
    if sampled <= 0 || distinct.len() != key.len() {
        return Vec::new();
    }
    let scale = rows.max(sampled as u64) as f64 / sampled as f64;
    key.iter()
        .zip(distinct)
        .map(|(column, &d)| (column.name.clone(), d.max(0) as f64 * scale))
        .collect()
}

/// The first of `indexes` (name, first column) whose first column is one of
/// the `key` columns: an index the key's lookups can use.
pub(crate) fn key_index(indexes: Vec<(String, String)>, key: &[TargetColumn]) -> Option<KeyIndex> {
    indexes
        .into_iter()
        .find(|(_, column)| key.iter().any(|k| k.name == *column))
        .map(|(name, column)| KeyIndex { name, column })
}

/// The parts of a MySQL index on `columns`: TEXT and BLOB columns are
/// indexed by a prefix (a join on them still compares whole values).
pub(crate) fn index_parts(columns: &[TargetColumn]) -> String {
    columns
        .iter()
        .map(|c| {
            let t = c.sql_type.to_ascii_lowercase();
            if t.contains("text") || t.contains("blob") {
                format!("{}(255)", quote_ident(&c.name))
            } else {
                quote_ident(&c.name)
            }
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// The column list of an INSERT or COPY.
pub(crate) fn column_list(columns: &[TargetColumn]) -> String {
    columns
        .iter()
        .map(|c| quote_ident(&c.name))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The column definitions of a CREATE TABLE, with the identity key first unless
/// the source brings its own `id`.
pub(crate) fn create_table_sql(
    sql_type_for: fn(&DataType) -> String,
    table: &TableRef,
    columns: &[ColumnSpec],
    identity: &str,
) -> String {
    let has_id = columns.iter().any(|c| c.name.eq_ignore_ascii_case("id"));
    let mut defs = Vec::with_capacity(columns.len() + 1);
    if !has_id {
        defs.push(format!("{} {identity}", quote_ident("id")));
    }
    for c in columns {
        let sql_type = c
            .sql_type
            .clone()
            .unwrap_or_else(|| sql_type_for(&c.data_type));
        defs.push(format!("{} {sql_type}", quote_ident(&c.name)));
    }
    format!("CREATE TABLE {} ({})", table.sql(), defs.join(", "))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoting() {
        assert_eq!(quote_ident("a\"b"), "\"a\"\"b\"");
    }

    /// A sample's distinct counts scale to the table's rows; a sample of
    /// every row of a small table counts as it is.
    #[test]
    fn sampled_distinct_counts_scale_to_the_table() {
        let column = |name: &str| TargetColumn::of_type(name, "bigint", DataType::Int64);
        let key = [column("a"), column("b")];
        assert_eq!(
            distinct_sample_sql(&TableRef::unqualified("t"), &key),
            "SELECT COUNT(DISTINCT \"a\"), COUNT(DISTINCT \"b\"), COUNT(*) FROM \
             (SELECT \"a\", \"b\" FROM \"t\" LIMIT 1000) atlas_sample"
        );
        assert_eq!(
            sampled_distinct(&key, &[1000, 10, 1000], 50_000),
            vec![("a".to_string(), 50_000.0), ("b".to_string(), 500.0)]
        );
        assert_eq!(
            sampled_distinct(&key, &[3, 1, 4], 0),
            vec![("a".to_string(), 3.0), ("b".to_string(), 1.0)]
        );
        assert!(sampled_distinct(&key, &[0, 0, 0], 10).is_empty());
        assert!(!wants_distinct_sample(&key[..1], &None));
    }
}
