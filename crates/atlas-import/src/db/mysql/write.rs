//! Rows into MySQL/MariaDB, on the import's connection.
//!
//! The bulk path is `LOAD DATA LOCAL INFILE`, fed from memory as the batches
//! arrive: the rows are encoded as the statement's default text format (tab
//! between fields, newline after rows, `\N` for NULL, backslash escapes) and
//! streamed to the server through mysql_async's infile handler while the
//! statement runs; the server parses them as it parses a file.
//!
//! ```text
//!  chunk stream ──► encode ──► channel (a few MB) ──► infile handler ──► server
//!        (this task)                                  (same connection, one statement)
//! ```
//!
//! With `LOCAL` the server cannot stop the client mid-file, so it turns every
//! value it cannot take (out of range, truncated, a duplicate in a unique
//! index) into a warning instead of an error. A load that raised any warning
//! therefore fails the import, with the first warnings as the reason: no value
//! is ever written other than as given.
//!
//! Where the server or the URL refuses local infile (`local_infile=0`,
//! MySQL 8's default; `local-infile=false`), rows go in as multi-row prepared
//! INSERTs within the placeholder and packet limits.

use std::fmt;

use bytes::{Bytes, BytesMut};
use datafusion::arrow::array::{Array, AsArray};
use datafusion::arrow::datatypes::{DataType, Float64Type, Int64Type};
use futures::StreamExt;
use mysql_async::prelude::Queryable;
use mysql_async::{Conn, Params, Value};

use super::super::bind::{BindColumn, DecimalBinding, insert_sql};
use super::super::text_rows::{TextDialect, encode_rows};
use super::super::{ChunkStream, quote_ident};
use crate::error::{AtlasError, Result};
use crate::names::TableRef;
use crate::schema::TargetColumn;

/// Bytes handed to the server at a time. mysql_async copies each into a
/// buffer of its process-wide pool, which keeps up to 128 of them at up to
/// 4 MiB each: with 1 MiB sends the pool held ~20 MB more at the peak.
const SEND_BYTES: usize = 128 << 10;
/// Buffers in flight between the encoder and the connection.
const SEND_QUEUE: usize = 4;
/// MySQL's limit on placeholders per prepared statement.
const MAX_BIND_PARAMETERS: usize = 65_535;
/// Rows per INSERT statement at most.
const MAX_ROWS_PER_STATEMENT: usize = 2_000;
/// Warnings quoted in the error of a load that raised some.
const WARNINGS_QUOTED: usize = 3;
/// The server's code for a key a unique index already holds.
pub(super) const ER_DUP_ENTRY: u32 = 1062;

/// Whether values of `data_type` travel as hex (decoded by `UNHEX`): a text
/// file in one character set cannot carry arbitrary bytes.
fn is_binary(data_type: &DataType) -> bool {
    matches!(
        data_type,
        DataType::Binary | DataType::LargeBinary | DataType::BinaryView
    )
}

/// `LOAD DATA LOCAL INFILE` into `columns` of `table`, in the format
/// [`encode_rows`] writes.
fn load_data_sql(table: &TableRef, columns: &[TargetColumn]) -> String {
    let mut fields = Vec::with_capacity(columns.len());
    let mut decoded = Vec::new();
    for (i, column) in columns.iter().enumerate() {
        let name = quote_ident(&column.name);
        if is_binary(&column.data_type) {
            fields.push(format!("@atlas_{i}"));
            decoded.push(format!("{name} = UNHEX(@atlas_{i})"));
        } else if super::is_bit(column) {
            // LOAD DATA reads text into BIT as the characters' bytes.
            fields.push(format!("@atlas_{i}"));
            decoded.push(format!("{name} = CAST(@atlas_{i} AS UNSIGNED)"));
        } else {
            fields.push(name);
        }
    }
    let mut sql = format!(
        "LOAD DATA LOCAL INFILE 'atlas-import' INTO TABLE {} CHARACTER SET utf8mb4 \
         FIELDS TERMINATED BY '\\t' ENCLOSED BY '' ESCAPED BY '\\\\' \
         LINES TERMINATED BY '\\n' STARTING BY '' ({})",
        table.sql(),
        fields.join(", ")
    );
    if !decoded.is_empty() {
        sql.push_str(" SET ");
        sql.push_str(&decoded.join(", "));
    }
    sql
}

/// Why a load that ran to its end failed: the server's warnings (`LOCAL`
/// turns the errors of values and rows into warnings), or rows it did not
/// write.
#[derive(Debug)]
pub(super) enum LoadRefusal {
    /// The first few warnings: `(level, code, message)`.
    Warnings(Vec<(String, u32, String)>),
    /// Fewer rows written than sent, without a warning.
    RowsLost { sent: u64, written: u64 },
}

impl LoadRefusal {
    /// Whether the server left out a row for a key a unique index holds.
    pub(super) fn duplicate_entry(&self) -> bool {
        match self {
            LoadRefusal::Warnings(warnings) => {
                warnings.iter().any(|(_, code, _)| *code == ER_DUP_ENTRY)
            }
            LoadRefusal::RowsLost { .. } => false,
        }
    }
}

impl fmt::Display for LoadRefusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("the server did not take every value as given: ")?;
        match self {
            LoadRefusal::Warnings(warnings) => {
                for (i, (level, code, message)) in warnings.iter().enumerate() {
                    let separator = if i == 0 { "" } else { "; " };
                    write!(f, "{separator}{level} {code}: {message}")?;
                }
                Ok(())
            }
            LoadRefusal::RowsLost { sent, written } => {
                write!(f, "{sent} rows sent, {written} written")
            }
        }
    }
}

impl std::error::Error for LoadRefusal {}

/// Writes the batches of `chunk` into `table` with one `LOAD DATA LOCAL
/// INFILE`; returns the rows written. An error of the chunk stream ends the
/// load and is returned as it is (the caller rolls back).
pub(super) async fn load_chunk(
    conn: &mut Conn,
    table: &TableRef,
    columns: &[TargetColumn],
    chunk: &mut ChunkStream<'_>,
) -> Result<u64> {
    let context = || format!("loading rows into '{table}'");
    let (sender, receiver) = tokio::sync::mpsc::channel::<std::io::Result<Bytes>>(SEND_QUEUE);
    let data = futures::stream::unfold(receiver, |mut receiver| async move {
        receiver.recv().await.map(|bytes| (bytes, receiver))
    });
    conn.set_infile_handler(async move { Ok(data.boxed()) });

    let feed = async move {
        let mut buffer = BytesMut::with_capacity(SEND_BYTES * 2);
        let mut rows = 0u64;
        let mut failure = None;
        while let Some(batch) = chunk.next().await {
            match batch.and_then(|batch| {
                encode_rows(&batch, TextDialect::MySql, &mut buffer)?;
                Ok(batch.num_rows())
            }) {
                Ok(n) => rows += n as u64,
                Err(e) => {
                    failure = Some(e);
                    break;
                }
            }
            if buffer.len() >= SEND_BYTES && sender.send(Ok(buffer.split().freeze())).await.is_err()
            {
                // The statement ended early: its result says why.
                return Ok(rows);
            }
        }
        if let Some(e) = failure {
            // End the data where it stands (whole rows only) rather than with
            // an error: an aborted LOCAL INFILE leaves mysql_async's connection
            // unusable, and the ROLLBACK (and the DROP of a table this import
            // created) must still run on it. The rows sent are rolled back.
            drop(sender);
            return Err(e);
        }
        if !buffer.is_empty() {
            let _ = sender.send(Ok(buffer.freeze())).await;
        }
        Ok(rows)
    };
    let (fed, loaded) = {
        let load = conn.query_drop(load_data_sql(table, columns));
        futures::pin_mut!(feed, load);
        // The statement may end before taking the data (refused, or the
        // connection lost): stop feeding then, or the feed would wait forever.
        match futures::future::select(feed, load).await {
            futures::future::Either::Left((fed, load)) => (fed, load.await),
            futures::future::Either::Right((loaded, _)) => (Ok(0), loaded),
        }
    };
    let rows = fed?;
    loaded.map_err(|e| AtlasError::database(context(), e))?;
    if conn.get_warnings() > 0 {
        let warnings: Vec<(String, u32, String)> = conn
            .query(format!("SHOW WARNINGS LIMIT {WARNINGS_QUOTED}"))
            .await
            .map_err(|e| AtlasError::database(context(), e))?;
        return Err(AtlasError::database(
            context(),
            LoadRefusal::Warnings(warnings),
        ));
    }
    let written = conn.affected_rows();
    if written != rows {
        return Err(AtlasError::database(
            context(),
            LoadRefusal::RowsLost {
                sent: rows,
                written,
            },
        ));
    }
    Ok(written)
}

/// Writes the batches of `chunk` into `table` as multi-row prepared INSERTs
/// that fit `max_packet`; returns the rows written.
pub(super) async fn insert_chunk(
    conn: &mut Conn,
    table: &TableRef,
    columns: &[TargetColumn],
    chunk: &mut ChunkStream<'_>,
    max_packet: usize,
) -> Result<u64> {
    let by_placeholders =
        (MAX_BIND_PARAMETERS / columns.len().max(1)).clamp(1, MAX_ROWS_PER_STATEMENT);
    let mut written = 0u64;
    while let Some(batch) = chunk.next().await {
        let batch = batch?;
        // Parameters travel in one packet: keep a statement to a quarter of it.
        let row_bytes = batch.get_array_memory_size() / batch.num_rows().max(1) + 16;
        let per_statement = by_placeholders.min(max_packet / 4 / row_bytes).max(1);
        let prepared = batch
            .columns()
            .iter()
            .map(|a| BindColumn::prepare(a, DecimalBinding::Text))
            .collect::<Result<Vec<_>>>()?;
        let mut start = 0;
        while start < batch.num_rows() {
            let n = per_statement.min(batch.num_rows() - start);
            let mut values = Vec::with_capacity(n * columns.len());
            for row in start..start + n {
                values.extend(prepared.iter().map(|column| parameter(column, row)));
            }
            conn.exec_drop(
                insert_sql(table, columns, n, |c| {
                    // A BIT column reads a string parameter as its bytes.
                    if super::is_bit(c) {
                        "CAST(? AS UNSIGNED)"
                    } else {
                        "?"
                    }
                }),
                Params::Positional(values),
            )
            .await
            .map_err(|e| AtlasError::database(format!("inserting into '{table}'"), e))?;
            written += n as u64;
            start += n;
        }
    }
    Ok(written)
}

/// The value of `row` in `column` as a statement parameter.
fn parameter(column: &BindColumn, row: usize) -> Value {
    match column {
        BindColumn::Integer(a) => {
            let a = a.as_primitive::<Int64Type>();
            a.is_valid(row).then(|| Value::Int(a.value(row)))
        }
        BindColumn::Real(a) => {
            let a = a.as_primitive::<Float64Type>();
            a.is_valid(row).then(|| Value::Double(a.value(row)))
        }
        BindColumn::Text(a) => {
            let a = a.as_string::<i32>();
            a.is_valid(row)
                .then(|| Value::Bytes(a.value(row).as_bytes().to_vec()))
        }
        BindColumn::Blob(a) => {
            let a = a.as_binary::<i32>();
            a.is_valid(row).then(|| Value::Bytes(a.value(row).to_vec()))
        }
        BindColumn::Date(_) | BindColumn::Timestamp(_) => column
            .time_text(row)
            .map(|text| Value::Bytes(text.as_bytes().to_vec())),
    }
    .unwrap_or(Value::NULL)
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::array::{
        BinaryArray, Float64Array, Int32Array, RecordBatch, StringArray,
    };
    use datafusion::arrow::datatypes::{Field, Schema};
    use std::sync::Arc;

    #[test]
    fn rows_encode_as_load_data_reads_them() {
        let schema = Arc::new(Schema::new(vec![
            Field::new("n", DataType::Int32, true),
            Field::new("t", DataType::Utf8, true),
            Field::new("f", DataType::Float64, true),
            Field::new("b", DataType::Binary, true),
        ]));
        let batch = RecordBatch::try_new(
            schema,
            vec![
                Arc::new(Int32Array::from(vec![Some(-7), None])),
                Arc::new(StringArray::from(vec![Some("a\tb\\N\nc\r\0"), Some("")])),
                Arc::new(Float64Array::from(vec![Some(0.1), None])),
                Arc::new(BinaryArray::from(vec![Some(&[0u8, 0xff][..]), None])),
            ],
        )
        .unwrap();
        let mut out = BytesMut::new();
        encode_rows(&batch, TextDialect::MySql, &mut out).unwrap();
        assert_eq!(
            std::str::from_utf8(&out).unwrap(),
            "-7\ta\\tb\\\\N\\nc\\r\\0\t0.1\t00FF\n\\N\t\t\\N\t\\N\n"
        );
    }
}
