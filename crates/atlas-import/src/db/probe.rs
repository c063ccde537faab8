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
    /// The staged rows whose key the table holds (SQLite, MySQL); on
    /// PostgreSQL those whose joined column is not NULL, matched on it by `=`
    /// (its index serves that).
    pub(crate) plain: String,
    /// PostgreSQL: the staged rows whose joined column is NULL that the
    /// table holds.
    pub(crate) with_nulls: String,
    /// PostgreSQL: every staged row the table holds, in one pass over the
    /// table, hash-joined on one column, NULL-safe.
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
        match kind {
            DbKind::Postgres => Self {
                drop: format!("DROP TABLE IF EXISTS pg_temp.{stage}"),
                create: format!(
                    "CREATE TEMP TABLE {stage} AS SELECT 0::bigint AS {row}, {list} FROM {target} WITH NO DATA"
                ),
                prepare: vec![format!("ANALYZE pg_temp.{stage}")],
                // Set by `PostgresProbe` once it knows the column to join on.
                plain: String::new(),
                with_nulls: String::new(),
                all_null_safe: String::new(),
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

/// The PostgreSQL probe joined on `on` (an indexed key column, or the one
/// whose values are most distinct): `=` on it finds candidates (an index or
/// a hash join on one column, cheap on a large table), and the other key
/// columns are compared NULL-safely on the candidates only.
fn postgres_queries(sql: &mut ProbeSql, table: &TableRef, key: &[TargetColumn], on: &TargetColumn) {
    let target = table.sql();
    let stage = quote_ident(PROBE_TABLE);
    let row = quote_ident(ROW_COLUMN);
    let c = quote_ident(&on.name);
    let others = key
        .iter()
        .filter(|k| k.name != on.name)
        .map(|k| {
            let k = quote_ident(&k.name);
            format!(" AND t.{k} IS NOT DISTINCT FROM s.{k}")
        })
        .collect::<String>();
    // `IS NOT DISTINCT FROM` cannot be hashed; a value that stands in for
    // NULL, with the NULL-ness compared beside it, can.
    let (t_on, s_on) = match null_stand_in(&on.data_type) {
        Some(k) => (
            format!("coalesce(t.{c}, {k})"),
            format!("coalesce(s.{c}, {k})"),
        ),
        None => (
            format!("coalesce(t.{c}::text, '')"),
            format!("coalesce(s.{c}::text, '')"),
        ),
    };
    let null_safe = format!("{t_on} = {s_on} AND (t.{c} IS NULL) = (s.{c} IS NULL)");
    // Joins, not EXISTS: a semi join's hash table would be built on the
    // table. Rows come back once per match; the caller keeps a set.
    sql.plain = format!(
        "SELECT s.{row} FROM pg_temp.{stage} s JOIN {target} t ON t.{c} = s.{c} WHERE true{others}"
    );
    sql.with_nulls = format!(
        "SELECT s.{row} FROM pg_temp.{stage} s JOIN {target} t ON {null_safe} WHERE s.{c} IS NULL{others}"
    );
    sql.all_null_safe = format!(
        "SELECT s.{row} FROM pg_temp.{stage} s JOIN {target} t ON {null_safe} WHERE true{others}"
    );
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
    /// The joined column is indexed.
    indexed: bool,
    /// The joined column's place among the staged columns.
    joined: usize,
    schema: SchemaRef,
    table: String,
    /// A staged key had a NULL in the joined column.
    staged_null_joined: bool,
}

impl PostgresProbe {
    pub(crate) async fn open(
        mut conn: sqlx::pool::PoolConnection<sqlx::Postgres>,
        table: &TableRef,
        key: &[TargetColumn],
        index: Option<&super::KeyIndex>,
    ) -> Result<Self> {
        let error = |e| AtlasError::database("staging the import's keys", e);
        let mut sql = ProbeSql::new(DbKind::Postgres, table, key);
        for statement in [&sql.drop, &sql.create] {
            sqlx::query(AssertSqlSafe(statement.clone()))
                .execute(&mut *conn)
                .await
                .map_err(error)?;
        }
        // Join on the indexed column, else on the one with the most distinct
        // values (the fewest candidates), by the table's statistics.
        let on = match index.and_then(|i| key.iter().position(|k| k.name == i.column)) {
            Some(i) => i,
            None => {
                let stats: Vec<(String, f32, f32)> = sqlx::query_as(
                    "SELECT s.attname::text, s.n_distinct, s.null_frac FROM pg_stats s
                     WHERE s.schemaname = coalesce($1, current_schema()) AND s.tablename = $2",
                )
                .bind(table.schema.as_deref())
                .bind(&table.name)
                .fetch_all(&mut *conn)
                .await
                .map_err(error)?;
                let rows = 1_000_000f32;
                let distinct = |name: &str| {
                    stats
                        .iter()
                        .find(|(n, _, _)| n == name)
                        .map_or(0.0, |(_, d, nulls)| {
                            // n_distinct < 0 is a fraction of the rows.
                            let d = if *d < 0.0 { -d * rows } else { *d };
                            d * (1.0 - nulls)
                        })
                };
                (0..key.len())
                    .max_by(|&a, &b| distinct(&key[a].name).total_cmp(&distinct(&key[b].name)))
                    .unwrap_or(0)
            }
        };
        postgres_queries(&mut sql, table, key, &key[on]);
        Ok(Self {
            conn,
            sql,
            indexed: index.is_some(),
            joined: on + 1,
            schema: schema_of(&staged_columns(key)),
            table: table.key(),
            staged_null_joined: false,
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

#[async_trait]
impl KeyProbe for PostgresProbe {
    async fn stage(&mut self, batch: RecordBatch) -> Result<()> {
        self.staged_null_joined |= batch.column(self.joined).null_count() > 0;
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
        // With an index: `=` on the indexed column (nested loop on the
        // index), the rows with it NULL apart. Without: one hash join over
        // the table, NULL-safe. The planner is steered off a merge join
        // (it would sort the table) and off JIT (its compile time is more
        // than the join's), and given the memory to hash the stage at once.
        let queries = match (self.indexed, self.staged_null_joined) {
            (true, false) => vec![self.sql.plain.clone()],
            (true, true) => vec![self.sql.plain.clone(), self.sql.with_nulls.clone()],
            (false, _) => vec![self.sql.all_null_safe.clone()],
        };
        for setting in [
            "BEGIN",
            "SET LOCAL enable_mergejoin = off",
            "SET LOCAL jit = off",
            "SET LOCAL work_mem = '256MB'",
        ] {
            sqlx::query(setting)
                .execute(&mut *self.conn)
                .await
                .map_err(error)?;
        }
        for query in queries {
            let mut found = sqlx::query(AssertSqlSafe(query)).fetch(&mut *self.conn);
            while let Some(row) = found.try_next().await.map_err(error)? {
                let value: i64 = row.try_get(0).map_err(error)?;
                rows.push(value as u64);
            }
        }
        for statement in ["COMMIT".to_string(), self.sql.drop.clone()] {
            sqlx::query(AssertSqlSafe(statement))
                .execute(&mut *self.conn)
                .await
                .map_err(error)?;
        }
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
