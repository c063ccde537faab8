//! Arrow columns prepared for binding as statement parameters, for the
//! databases whose chunks go in as multi-row INSERTs (SQLite, MySQL/MariaDB).

use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, AsArray, StringArray};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{
    DataType, Float64Type, Int64Type, TimeUnit, TimestampMicrosecondType,
};
use sqlx::query::Query;
use sqlx::{Encode, Type};

use crate::error::{AtlasError, Result};
use crate::names::TableRef;

/// How decimals are bound.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum DecimalBinding {
    /// As a double (SQLite stores NUMERIC as REAL or INTEGER anyway).
    Real,
    /// As exact text the server converts (MySQL's DECIMAL).
    Text,
}

/// A column prepared for binding: every Arrow type maps to one of four
/// parameter kinds the drivers all encode.
pub(crate) enum BindColumn {
    Integer(ArrayRef),
    Real(ArrayRef),
    Text(ArrayRef),
    Blob(ArrayRef),
}

impl BindColumn {
    pub(crate) fn prepare(array: &ArrayRef, decimals: DecimalBinding) -> Result<Self> {
        let to = |dt: &DataType| cast(array, dt).map_err(|e| AtlasError::from_datafusion(e.into()));
        Ok(match array.data_type() {
            DataType::Boolean
            | DataType::Int8
            | DataType::Int16
            | DataType::Int32
            | DataType::Int64
            | DataType::UInt8
            | DataType::UInt16
            | DataType::UInt32
            | DataType::UInt64 => BindColumn::Integer(to(&DataType::Int64)?),
            DataType::Float16 | DataType::Float32 | DataType::Float64 => {
                BindColumn::Real(to(&DataType::Float64)?)
            }
            DataType::Decimal32(..)
            | DataType::Decimal64(..)
            | DataType::Decimal128(..)
            | DataType::Decimal256(..) => match decimals {
                DecimalBinding::Real => BindColumn::Real(to(&DataType::Float64)?),
                DecimalBinding::Text => BindColumn::Text(to(&DataType::Utf8)?),
            },
            DataType::Binary | DataType::LargeBinary | DataType::BinaryView => {
                BindColumn::Blob(to(&DataType::Binary)?)
            }
            DataType::Timestamp(..) => BindColumn::Text(format_timestamps(array)?),
            _ => BindColumn::Text(to(&DataType::Utf8)?),
        })
    }

    /// Binds the value of `row` as the next parameter of `query`.
    pub(crate) fn bind<'q, DB>(
        &'q self,
        query: Query<'q, DB, <DB as sqlx::Database>::Arguments>,
        row: usize,
    ) -> Query<'q, DB, <DB as sqlx::Database>::Arguments>
    where
        DB: sqlx::Database,
        for<'t> Option<i64>: Encode<'t, DB> + Type<DB>,
        for<'t> Option<f64>: Encode<'t, DB> + Type<DB>,
        Option<&'q str>: Encode<'q, DB> + Type<DB>,
        Option<&'q [u8]>: Encode<'q, DB> + Type<DB>,
    {
        match self {
            BindColumn::Integer(a) => {
                let a = a.as_primitive::<Int64Type>();
                query.bind(a.is_valid(row).then(|| a.value(row)))
            }
            BindColumn::Real(a) => {
                let a = a.as_primitive::<Float64Type>();
                query.bind(a.is_valid(row).then(|| a.value(row)))
            }
            BindColumn::Text(a) => {
                let a = a.as_string::<i32>();
                query.bind(a.is_valid(row).then(|| a.value(row)))
            }
            BindColumn::Blob(a) => {
                let a = a.as_binary::<i32>();
                query.bind(a.is_valid(row).then(|| a.value(row)))
            }
        }
    }
}

impl BindColumn {
    /// Binds the value of `row` as parameter `index` (1-based) of a
    /// prepared SQLite statement.
    pub(crate) fn bind_sqlite(
        &self,
        statement: &mut rusqlite::Statement<'_>,
        index: usize,
        row: usize,
    ) -> rusqlite::Result<()> {
        match self {
            BindColumn::Integer(a) => {
                let a = a.as_primitive::<Int64Type>();
                statement.raw_bind_parameter(index, a.is_valid(row).then(|| a.value(row)))
            }
            BindColumn::Real(a) => {
                let a = a.as_primitive::<Float64Type>();
                statement.raw_bind_parameter(index, a.is_valid(row).then(|| a.value(row)))
            }
            BindColumn::Text(a) => {
                let a = a.as_string::<i32>();
                statement.raw_bind_parameter(index, a.is_valid(row).then(|| a.value(row)))
            }
            BindColumn::Blob(a) => {
                let a = a.as_binary::<i32>();
                statement.raw_bind_parameter(index, a.is_valid(row).then(|| a.value(row)))
            }
        }
    }
}

/// Timestamps as `YYYY-MM-DD HH:MM:SS[.ffffff]` (UTC), the form SQLite's date
/// functions and MySQL's DATETIME read.
fn format_timestamps(array: &ArrayRef) -> Result<ArrayRef> {
    let micros = cast(array, &DataType::Timestamp(TimeUnit::Microsecond, None))
        .map_err(|e| AtlasError::from_datafusion(e.into()))?;
    let micros = micros.as_primitive::<TimestampMicrosecondType>();
    let text: StringArray = micros
        .iter()
        .map(|v| {
            v.and_then(chrono::DateTime::from_timestamp_micros)
                .map(|t| t.naive_utc().format("%Y-%m-%d %H:%M:%S%.f").to_string())
        })
        .collect();
    Ok(Arc::new(text))
}

/// `INSERT INTO table (columns) VALUES (?, ...), ...` for `rows` rows.
pub(crate) fn insert_sql(
    table: &TableRef,
    columns: &[crate::schema::TargetColumn],
    rows: usize,
) -> String {
    let placeholders = format!("({})", vec!["?"; columns.len()].join(", "));
    let mut sql = format!(
        "INSERT INTO {} ({}) VALUES ",
        table.sql(),
        super::column_list(columns)
    );
    sql.push_str(&vec![placeholders; rows].join(", "));
    sql
}

/// Writes the batches of `chunk` into `table` as multi-row INSERTs of at most
/// `rows_per_statement(batch)` rows each; returns the rows written.
pub(crate) async fn insert_chunk<DB>(
    conn: &mut DB::Connection,
    table: &TableRef,
    columns: &[crate::schema::TargetColumn],
    chunk: &mut super::ChunkStream<'_>,
    decimals: DecimalBinding,
    rows_per_statement: impl Fn(&datafusion::arrow::array::RecordBatch) -> usize,
) -> Result<u64>
where
    DB: sqlx::Database,
    for<'c> &'c mut DB::Connection: sqlx::Executor<'c, Database = DB>,
    for<'t> Option<i64>: Encode<'t, DB> + Type<DB>,
    for<'t> Option<f64>: Encode<'t, DB> + Type<DB>,
    for<'q> Option<&'q str>: Encode<'q, DB> + Type<DB>,
    for<'q> Option<&'q [u8]>: Encode<'q, DB> + Type<DB>,
    for<'q> <DB as sqlx::Database>::Arguments: sqlx::IntoArguments<DB>,
{
    use futures::StreamExt;
    let mut written = 0u64;
    while let Some(batch) = chunk.next().await {
        let batch = batch?;
        let per_statement = rows_per_statement(&batch).max(1);
        let full_sql = insert_sql(table, columns, per_statement);
        let prepared = batch
            .columns()
            .iter()
            .map(|a| BindColumn::prepare(a, decimals))
            .collect::<Result<Vec<_>>>()?;
        let mut start = 0;
        while start < batch.num_rows() {
            let n = per_statement.min(batch.num_rows() - start);
            let sql = if n == per_statement {
                full_sql.clone()
            } else {
                insert_sql(table, columns, n)
            };
            let mut query = sqlx::query::<DB>(sqlx::AssertSqlSafe(sql));
            for row in start..start + n {
                for column in &prepared {
                    query = column.bind(query, row);
                }
            }
            query
                .execute(&mut *conn)
                .await
                .map_err(|e| AtlasError::database(format!("inserting into '{table}'"), e))?;
            // A plain INSERT either writes every row or fails.
            written += n as u64;
            start += n;
        }
    }
    Ok(written)
}
