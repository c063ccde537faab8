//! The probe key strategy: the import's keys are staged in a temporary table
//! on a connection of the check's own, and one join in the database finds
//! those the table holds, using its index on the key where it has one. Only
//! the matches come back. The cost follows the import, not the table.
//!
//! NULL equals NULL in the check, which `=` does not say: keys without a NULL
//! part are matched with `=` (an index or a hash join serves it), the few
//! with one by a second statement that compares NULL-ness separately.

use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::array::{Array, RecordBatch};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use futures::TryStreamExt;
use sqlx::{AssertSqlSafe, Row};

use super::{ChunkStream, DbKind, column_list, quote_ident};
use crate::error::{AtlasError, Result};
use crate::names::TableRef;
use crate::schema::TargetColumn;

/// The staging table's name (temporary: private to its connection).
const PROBE_TABLE: &str = "atlas_import_probe";
/// The staging table's column of source rows.
const ROW_COLUMN: &str = "__atlas_row";

/// Checks a stream of the import's keys against the table in the database.
#[async_trait]
pub trait KeyProbe: Send {
    /// Stages keys: column 0 holds source rows (UInt64), the others the key
    /// columns in key order, of their target types.
    async fn stage(&mut self, batch: RecordBatch) -> Result<()>;

    /// The source rows of the staged keys that the table holds.
    async fn matches(self: Box<Self>) -> Result<Vec<u64>>;
}

/// The columns of the staging table: the source row, then the key.
fn staged_columns(key: &[TargetColumn]) -> Vec<TargetColumn> {
    let mut columns = vec![TargetColumn {
        name: ROW_COLUMN.into(),
        sql_type: "bigint".into(),
        data_type: DataType::Int64,
        nullable: false,
        has_default: false,
        max_chars: None,
    }];
    columns.extend(key.iter().cloned());
    columns
}

/// A staged batch as the staging table takes it (source rows as Int64).
fn staged_batch(batch: RecordBatch, schema: &SchemaRef) -> Result<RecordBatch> {
    let mut arrays = batch.columns().to_vec();
    arrays[0] = datafusion::arrow::compute::cast(&arrays[0], &DataType::Int64)
        .map_err(|e| AtlasError::from_datafusion(e.into()))?;
    RecordBatch::try_new(Arc::clone(schema), arrays)
        .map_err(|e| AtlasError::from_datafusion(e.into()))
}

/// The SQL of one probe on `kind`.
pub(crate) struct ProbeSql {
    /// Drops a staging table left by an earlier use of the connection.
    pub(crate) drop: String,
    /// Creates the staging table with the key columns' types.
    pub(crate) create: String,
    /// Runs once the keys are staged (statistics, an index on the stage).
    pub(crate) prepare: Vec<String>,
    /// The staged rows whose key (without a NULL part) the table holds: a
    /// join on `=`, which an index on the key serves.
    pub(crate) plain: String,
    /// The staged rows with a NULL key part that the table holds.
    pub(crate) with_nulls: String,
    /// Every staged row the table holds, NULL-safe, in one pass over the
    /// table (no index can serve it; PostgreSQL only).
    pub(crate) all_null_safe: String,
}

impl ProbeSql {
    pub(crate) fn new(kind: DbKind, table: &TableRef, key: &[TargetColumn]) -> Self {
        let target = table.sql();
        let stage = quote_ident(PROBE_TABLE);
        let row = quote_ident(ROW_COLUMN);
        let cols: Vec<String> = key.iter().map(|c| quote_ident(&c.name)).collect();
        let list = column_list(key);
        let equal = |op: &str| {
            cols.iter()
                .map(|c| format!("t.{c} {op} s.{c}"))
                .collect::<Vec<_>>()
                .join(" AND ")
        };
        let any_null = cols
            .iter()
            .map(|c| format!("s.{c} IS NULL"))
            .collect::<Vec<_>>()
            .join(" OR ");
        // PostgreSQL cannot hash `IS NOT DISTINCT FROM`; a value that stands
        // in for NULL and the NULL-ness of each part are hashable and say the
        // same.
        let pg_null_safe = key
            .iter()
            .map(|column| {
                let c = quote_ident(&column.name);
                let (t, s) = match null_stand_in(&column.data_type) {
                    Some(k) => (
                        format!("coalesce(t.{c}, {k})"),
                        format!("coalesce(s.{c}, {k})"),
                    ),
                    None => (
                        format!("coalesce(t.{c}::text, '')"),
                        format!("coalesce(s.{c}::text, '')"),
                    ),
                };
                format!("{t} = {s} AND (t.{c} IS NULL) = (s.{c} IS NULL)")
            })
            .collect::<Vec<_>>()
            .join(" AND ");
        match kind {
            DbKind::Postgres => Self {
                drop: format!("DROP TABLE IF EXISTS pg_temp.{stage}"),
                create: format!(
                    "CREATE TEMP TABLE {stage} AS SELECT 0::bigint AS {row}, {list} FROM {target} WITH NO DATA"
                ),
                prepare: vec![format!("ANALYZE pg_temp.{stage}")],
                // A join (not EXISTS): PostgreSQL 15 builds a semi join's
                // hash table on the table; a join builds it on the smaller
                // stage and streams the table past it. Rows come back once
                // per match; the caller keeps them as a set.
                plain: format!(
                    "SELECT s.{row} FROM pg_temp.{stage} s JOIN {target} t ON {}",
                    equal("=")
                ),
                with_nulls: format!(
                    "SELECT s.{row} FROM pg_temp.{stage} s JOIN {target} t ON {pg_null_safe} WHERE {any_null}"
                ),
                all_null_safe: format!(
                    "SELECT s.{row} FROM pg_temp.{stage} s JOIN {target} t ON {pg_null_safe}"
                ),
            },
            // SQLite and MySQL join nested loops: the stage gets an index, so
            // one pass over the table (or over the stage, by the table's own
            // index) finds the matches; `IS` / `<=>` are NULL-safe and indexed.
            DbKind::Sqlite => Self {
                drop: format!("DROP TABLE IF EXISTS temp.{stage}"),
                create: format!(
                    "CREATE TEMP TABLE {stage} AS SELECT 0 AS {row}, {list} FROM {target} WHERE 0"
                ),
                prepare: vec![format!(
                    "CREATE INDEX temp.atlas_import_probe_key ON {stage} ({list})"
                )],
                plain: format!(
                    "SELECT DISTINCT s.{row} FROM {target} t JOIN temp.{stage} s ON {}",
                    equal("IS")
                ),
                with_nulls: String::new(),
                all_null_safe: String::new(),
            },
            // MySQL compares text by collation (case and trailing spaces
            // ignored): the collation's match (served by an index) is
            // narrowed to the exact bytes.
            DbKind::MySql => Self {
                drop: format!("DROP TEMPORARY TABLE IF EXISTS {stage}"),
                create: format!(
                    "CREATE TEMPORARY TABLE {stage} AS SELECT CAST(0 AS SIGNED) AS {row}, {list} FROM {target} WHERE 1 = 0"
                ),
                prepare: vec![format!(
                    "ALTER TABLE {stage} ADD INDEX atlas_key ({})",
                    super::index_parts(key)
                )],
                plain: format!(
                    "SELECT DISTINCT s.{row} FROM {target} t JOIN {stage} s ON {}",
                    key.iter()
                        .map(|c| {
                            let name = quote_ident(&c.name);
                            if matches!(c.data_type, DataType::Utf8) {
                                format!(
                                    "t.{name} <=> s.{name} AND BINARY t.{name} <=> BINARY s.{name}"
                                )
                            } else {
                                format!("t.{name} <=> s.{name}")
                            }
                        })
                        .collect::<Vec<_>>()
                        .join(" AND ")
                ),
                with_nulls: String::new(),
                all_null_safe: String::new(),
            },
        }
    }
}

/// A constant of the type that stands in for NULL in a hashable NULL-safe
/// comparison (with the NULL-ness compared beside it); `None`: compare the
/// text form.
fn null_stand_in(data_type: &DataType) -> Option<&'static str> {
    match data_type {
        t if t.is_numeric() => Some("0"),
        DataType::Utf8 => Some("''"),
        DataType::Boolean => Some("false"),
        DataType::Date32 => Some("DATE '1970-01-01'"),
        DataType::Timestamp(_, None) => Some("TIMESTAMP '1970-01-01'"),
        DataType::Timestamp(_, Some(_)) => Some("TIMESTAMPTZ '1970-01-01 00:00:00+00'"),
        _ => None,
    }
}

/// A probe on a PostgreSQL connection: keys go in by binary `COPY`.
pub(crate) struct PostgresProbe {
    conn: sqlx::pool::PoolConnection<sqlx::Postgres>,
    sql: ProbeSql,
    /// The table has an index the key can use.
    indexed: bool,
    schema: SchemaRef,
    table: String,
    staged_nulls: bool,
}

impl PostgresProbe {
    pub(crate) async fn open(
        mut conn: sqlx::pool::PoolConnection<sqlx::Postgres>,
        table: &TableRef,
        key: &[TargetColumn],
        indexed: bool,
    ) -> Result<Self> {
        let sql = ProbeSql::new(DbKind::Postgres, table, key);
        for statement in [&sql.drop, &sql.create] {
            sqlx::query(AssertSqlSafe(statement.clone()))
                .execute(&mut *conn)
                .await
                .map_err(|e| AtlasError::database("staging the import's keys", e))?;
        }
        Ok(Self {
            conn,
            sql,
            indexed,
            schema: schema_of(&staged_columns(key)),
            table: table.key(),
            staged_nulls: false,
        })
    }
}

fn schema_of(columns: &[TargetColumn]) -> SchemaRef {
    Arc::new(Schema::new(
        columns
            .iter()
            .map(|c| Field::new(&c.name, c.data_type.clone(), true))
            .collect::<Vec<_>>(),
    ))
}

fn has_null_key(batch: &RecordBatch) -> bool {
    batch.columns()[1..].iter().any(|c| c.null_count() > 0)
}

#[async_trait]
impl KeyProbe for PostgresProbe {
    async fn stage(&mut self, batch: RecordBatch) -> Result<()> {
        self.staged_nulls |= has_null_key(&batch);
        let batch = staged_batch(batch, &self.schema)?;
        let copy = format!(
            "COPY pg_temp.{} FROM STDIN (FORMAT binary)",
            quote_ident(PROBE_TABLE)
        );
        super::postgres::copy_batches(
            &mut self.conn,
            &copy,
            &self.schema,
            vec![batch],
            &self.table,
        )
        .await
        .map(|_| ())
    }

    async fn matches(mut self: Box<Self>) -> Result<Vec<u64>> {
        let error = |e| AtlasError::database("probing the table for the import's keys", e);
        for statement in &self.sql.prepare {
            sqlx::query(AssertSqlSafe(statement.clone()))
                .execute(&mut *self.conn)
                .await
                .map_err(error)?;
        }
        let mut rows = Vec::new();
        // Keys without NULL parts are matched by `=` (the index serves it);
        // NULL parts need the NULL-safe form: for the few such rows beside
        // an index, for all rows in one pass when there is no index.
        let queries = match (self.staged_nulls, self.indexed) {
            (false, _) => vec![self.sql.plain.clone()],
            (true, true) => vec![self.sql.plain.clone(), self.sql.with_nulls.clone()],
            (true, false) => vec![self.sql.all_null_safe.clone()],
        };
        for query in queries {
            let mut found = sqlx::query(AssertSqlSafe(query)).fetch(&mut *self.conn);
            while let Some(row) = found.try_next().await.map_err(error)? {
                let value: i64 = row.try_get(0).map_err(error)?;
                rows.push(value as u64);
            }
        }
        sqlx::query(AssertSqlSafe(self.sql.drop.clone()))
            .execute(&mut *self.conn)
            .await
            .map_err(error)?;
        Ok(rows)
    }
}

/// A probe on an SQLite or MySQL connection: keys go in as multi-row INSERTs.
pub(crate) struct InsertProbe<DB: sqlx::Database> {
    conn: sqlx::pool::PoolConnection<DB>,
    sql: ProbeSql,
    columns: Vec<TargetColumn>,
    schema: SchemaRef,
    /// Rows per INSERT statement.
    rows_per_statement: usize,
}

impl<DB> InsertProbe<DB>
where
    DB: sqlx::Database,
    for<'c> &'c mut DB::Connection: sqlx::Executor<'c, Database = DB>,
    for<'q> <DB as sqlx::Database>::Arguments: sqlx::IntoArguments<DB>,
{
    pub(crate) async fn open(
        mut conn: sqlx::pool::PoolConnection<DB>,
        kind: DbKind,
        table: &TableRef,
        key: &[TargetColumn],
        max_parameters: usize,
    ) -> Result<Self> {
        let sql = ProbeSql::new(kind, table, key);
        for statement in [&sql.drop, &sql.create] {
            sqlx::query::<DB>(AssertSqlSafe(statement.clone()))
                .execute(&mut *conn)
                .await
                .map_err(|e| AtlasError::database("staging the import's keys", e))?;
        }
        let columns = staged_columns(key);
        Ok(Self {
            conn,
            sql,
            schema: schema_of(&columns),
            rows_per_statement: (max_parameters / columns.len()).clamp(1, 1000),
            columns,
        })
    }
}

#[async_trait]
impl<DB> KeyProbe for InsertProbe<DB>
where
    DB: sqlx::Database,
    for<'c> &'c mut DB::Connection: sqlx::Executor<'c, Database = DB>,
    for<'t> Option<i64>: sqlx::Encode<'t, DB> + sqlx::Type<DB>,
    for<'t> Option<f64>: sqlx::Encode<'t, DB> + sqlx::Type<DB>,
    for<'q> Option<&'q str>: sqlx::Encode<'q, DB> + sqlx::Type<DB>,
    for<'q> Option<&'q [u8]>: sqlx::Encode<'q, DB> + sqlx::Type<DB>,
    for<'q> <DB as sqlx::Database>::Arguments: sqlx::IntoArguments<DB>,
    for<'r> i64: sqlx::Decode<'r, DB> + sqlx::Type<DB>,
    usize: sqlx::ColumnIndex<DB::Row>,
{
    async fn stage(&mut self, batch: RecordBatch) -> Result<()> {
        let batch = staged_batch(batch, &self.schema)?;
        let stage = TableRef::unqualified(PROBE_TABLE);
        let per_statement = self.rows_per_statement;
        let mut chunk: ChunkStream<'_> = Box::pin(futures::stream::once(async { Ok(batch) }));
        super::bind::insert_chunk::<DB>(
            &mut self.conn,
            &stage,
            &self.columns,
            &mut chunk,
            super::bind::DecimalBinding::Text,
            |_| per_statement,
        )
        .await
        .map(|_| ())
    }

    async fn matches(mut self: Box<Self>) -> Result<Vec<u64>> {
        let error = |e| AtlasError::database("probing the table for the import's keys", e);
        for statement in &self.sql.prepare {
            sqlx::query::<DB>(AssertSqlSafe(statement.clone()))
                .execute(&mut *self.conn)
                .await
                .map_err(error)?;
        }
        let mut rows = Vec::new();
        {
            let mut found =
                sqlx::query::<DB>(AssertSqlSafe(self.sql.plain.clone())).fetch(&mut *self.conn);
            while let Some(row) = found.try_next().await.map_err(error)? {
                let value: i64 = row.try_get(0).map_err(error)?;
                rows.push(value as u64);
            }
        }
        sqlx::query::<DB>(AssertSqlSafe(self.sql.drop.clone()))
            .execute(&mut *self.conn)
            .await
            .map_err(error)?;
        Ok(rows)
    }
}
