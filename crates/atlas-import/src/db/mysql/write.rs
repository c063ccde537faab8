//! Rows into MySQL/MariaDB, on the import's connection, by one of three
//! [`WriteMethod`]s.
//!
//! `LOAD DATA LOCAL INFILE` (where MySQL and MariaDB allow it, the bulk path
//! of the server's own client) is fed from memory as the batches arrive: the rows are encoded as the statement's default text format (tab
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
//! index) into a warning instead of an error. A load (or any statement of the
//! other methods) that raised any warning therefore fails the import, with
//! the first warnings as the reason: no value is ever written other than as
//! given.
//!
//! On MariaDB 10.2 and later rows go in by **array binding** where they can:
//! one prepared `INSERT` executed with many rows of binary parameters per
//! request (`COM_STMT_BULK_EXECUTE`). The server stores typed values without
//! parsing text: ~20% less of its CPU than `LOAD DATA` (whose field reader
//! and per-byte appends are a fifth of its profile), ~30% less time than
//! multi-row INSERT. Over plain TCP the import's connection goes through a
//! relay and the requests are pipelined (see [`super::pipelined`]): the
//! default there, ahead of `LOAD DATA`. Otherwise (TLS, a Unix socket) the
//! requests go one after another by mysql_async's `exec_batch`, the next
//! one's parameters prepared while the server runs the current one; the
//! server then waits while mysql_async builds each request, and this comes
//! after `LOAD DATA`, where the server or the URL refuses local infile
//! (`local_infile=0`, MySQL 8's default; `local-infile=false`). Elsewhere, as
//! multi-row prepared INSERTs within the placeholder and packet limits.
//!
//! ```text
//!  chunk stream ──► parameters (column by column) ──► channel (2 requests) ──► exec_batch ──► server
//!        └──────────── one task: converting while the request is in flight ────────────┘
//! ```

use std::fmt;
use std::ops::Range;

use bytes::{Bytes, BytesMut};
use datafusion::arrow::array::{Array, AsArray};
use datafusion::arrow::datatypes::{
    DataType, Date32Type, Float64Type, Int64Type, TimestampMicrosecondType,
};
use futures::StreamExt;
use mysql_async::prelude::Queryable;
use mysql_async::{Conn, Params, Value};

use super::super::bind::{BindColumn, DecimalBinding, MICROS_PER_DAY, civil_date, insert_sql};
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
/// Bytes of parameters in one array-binding request at most (and at most
/// half the server's `max_allowed_packet`): each call of mysql_async's
/// `exec_batch` must fit one packet, because the parameter types travel only
/// in a call's first packet and a column all NULL there would have no type.
const ARRAY_REQUEST_BYTES: usize = 4 << 20;
/// Array-binding requests prepared ahead of the one in flight.
const ARRAY_QUEUE: usize = 2;
/// Warnings quoted in the error of a load that raised some.
const WARNINGS_QUOTED: usize = 3;
/// The server's code for a key a unique index already holds.
const ER_DUP_ENTRY: u32 = 1062;

/// Whether values of `data_type` travel as hex (decoded by `UNHEX`): a text
/// file in one character set cannot carry arbitrary bytes.
fn is_binary(data_type: &DataType) -> bool {
    matches!(
        data_type,
        DataType::Binary | DataType::LargeBinary | DataType::BinaryView
    )
}

/// How rows reach the table (the URL's `write-method`, else the fastest the
/// server allows).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum WriteMethod {
    /// MariaDB's array binding (`COM_STMT_BULK_EXECUTE`): MariaDB 10.2 and later.
    ArrayBinding,
    /// `LOAD DATA LOCAL INFILE` fed from memory: where the server allows it.
    LoadData,
    /// Multi-row prepared INSERTs: anywhere.
    Insert,
}

impl WriteMethod {
    /// The URL parameter's values.
    pub(super) const NAMES: &'static str = "array, load-data or insert";

    pub(super) fn parse(name: &str) -> Option<Self> {
        match name {
            "array" => Some(WriteMethod::ArrayBinding),
            "load-data" => Some(WriteMethod::LoadData),
            "insert" => Some(WriteMethod::Insert),
            _ => None,
        }
    }
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
        } else if super::is_bit(column) || super::is_year(column) {
            // LOAD DATA reads text into BIT as the characters' bytes, and
            // `0` into YEAR as 2000: both take numbers as numbers.
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

/// Why the server refused a statement of a write (the `LOAD DATA`, an
/// array-binding request, an INSERT), and where that statement's rows begin
/// in the write: the server numbers a statement's rows from 1 ("at row 3").
#[derive(Debug)]
pub(super) struct WriteRefusal {
    /// Rows of the write that went in by its earlier statements.
    rows_before: u64,
    reason: RefusalReason,
}

#[derive(Debug)]
enum RefusalReason {
    /// The statement failed with the server's error.
    Error(mysql_async::Error),
    /// It ran to its end with warnings (`LOCAL` turns the errors of values
    /// and rows into warnings): the first few, `(level, code, message)`.
    Warnings(Vec<(String, u32, String)>),
    /// Fewer rows written than sent, without a warning.
    RowsLost { sent: u64, written: u64 },
    /// The statement's first row was not sent: its parameters are longer
    /// than the server's `max_allowed_packet`.
    RowTooLarge { bytes: usize, max_packet: usize },
}

impl WriteRefusal {
    /// Warnings the statement after `rows_before` rows raised, whose text
    /// could not be read again.
    pub(super) fn unquoted_warnings(rows_before: u64) -> Self {
        Self {
            rows_before,
            reason: RefusalReason::Warnings(Vec::new()),
        }
    }

    /// Whether the server left out a row for a key a unique index holds.
    pub(super) fn duplicate_entry(&self) -> bool {
        match &self.reason {
            RefusalReason::Error(e) => is_duplicate_entry(e),
            RefusalReason::Warnings(warnings) => {
                warnings.iter().any(|(_, code, _)| *code == ER_DUP_ENTRY)
            }
            RefusalReason::RowsLost { .. } | RefusalReason::RowTooLarge { .. } => false,
        }
    }

    /// The row of the write (1-based) the server's error or first warning
    /// names (`... at row 3` of its statement), if it names one.
    pub(super) fn refused_row(&self) -> Option<u64> {
        let message = match &self.reason {
            RefusalReason::Error(mysql_async::Error::Server(e)) => &e.message,
            RefusalReason::Warnings(warnings) => &warnings.first()?.2,
            RefusalReason::RowTooLarge { .. } => return Some(self.rows_before + 1),
            _ => return None,
        };
        let (_, rest) = message.rsplit_once(" at row ")?;
        let row: u64 = rest.trim_end().parse().ok()?;
        Some(self.rows_before + row)
    }
}

/// Whether `error` is the server refusing a row for a key a unique index
/// holds.
pub(super) fn is_duplicate_entry(error: &mysql_async::Error) -> bool {
    matches!(error, mysql_async::Error::Server(e) if u32::from(e.code) == ER_DUP_ENTRY)
}

impl fmt::Display for WriteRefusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const NOT_AS_GIVEN: &str = "the server did not take every value as given: ";
        match &self.reason {
            RefusalReason::Error(e) => e.fmt(f),
            RefusalReason::Warnings(warnings) if warnings.is_empty() => {
                write!(f, "{NOT_AS_GIVEN}the server raised warnings")
            }
            RefusalReason::Warnings(warnings) => {
                f.write_str(NOT_AS_GIVEN)?;
                for (i, (level, code, message)) in warnings.iter().enumerate() {
                    let separator = if i == 0 { "" } else { "; " };
                    write!(f, "{separator}{level} {code}: {message}")?;
                }
                Ok(())
            }
            RefusalReason::RowsLost { sent, written } => {
                write!(f, "{NOT_AS_GIVEN}{sent} rows sent, {written} written")
            }
            RefusalReason::RowTooLarge { bytes, max_packet } => write!(
                f,
                "a row of {bytes} bytes does not fit the server's max_allowed_packet \
                 ({max_packet} bytes) as statement parameters: raise max_allowed_packet, \
                 or let rows go in by LOAD DATA LOCAL INFILE (local_infile=1 on the \
                 server), which sends a long row in pieces"
            ),
        }
    }
}

impl std::error::Error for WriteRefusal {}

/// The error of a write statement that followed `rows_before` rows of the
/// write: the server's refusal, with where its rows begin; any other (the
/// connection's) as it is.
pub(super) fn statement_error(
    context: String,
    rows_before: u64,
    error: mysql_async::Error,
) -> AtlasError {
    match error {
        mysql_async::Error::Server(_) => AtlasError::database(
            context,
            WriteRefusal {
                rows_before,
                reason: RefusalReason::Error(error),
            },
        ),
        error => AtlasError::database(context, error),
    }
}

/// Fewer rows stored than the statement after `rows_before` rows sent.
pub(super) fn rows_lost(context: String, rows_before: u64, sent: u64, written: u64) -> AtlasError {
    AtlasError::database(
        context,
        WriteRefusal {
            rows_before,
            reason: RefusalReason::RowsLost { sent, written },
        },
    )
}

/// Writes the batches of `chunk` into `table` with one `LOAD DATA LOCAL
/// INFILE`; returns the rows written. An error of the chunk stream ends the
/// load and is returned as it is (the caller rolls back).
pub(super) async fn load_chunk(
    conn: &mut Conn,
    table: &TableRef,
    columns: &[TargetColumn],
    chunk: &mut ChunkStream<'_>,
    rows_before: u64,
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
            // In sends of SEND_BYTES: a row longer than a packet (a field of
            // 20 MB) travels in several, as the mariadb client sends a file.
            while buffer.len() >= SEND_BYTES {
                if sender
                    .send(Ok(buffer.split_to(SEND_BYTES).freeze()))
                    .await
                    .is_err()
                {
                    // The statement ended early: its result says why.
                    return Ok(rows);
                }
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
    // One statement: its rows follow the write's `rows_before`.
    loaded.map_err(|e| statement_error(context(), rows_before, e))?;
    refuse_warnings(conn, context, rows_before).await?;
    let written = conn.affected_rows();
    if written != rows {
        return Err(rows_lost(context(), rows_before, rows, written));
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
    let context = || format!("inserting into '{table}'");
    let limits = RequestLimits {
        rows: (MAX_BIND_PARAMETERS / columns.len().max(1)).clamp(1, MAX_ROWS_PER_STATEMENT),
        // Parameters travel in one packet: keep a statement to a quarter of it.
        bytes: max_packet / 4,
        max_packet,
    };
    let mut written = 0u64;
    while let Some(batch) = chunk.next().await {
        let batch = batch?;
        let prepared = prepare(&batch)?;
        let mut rows = row_values(&prepared, 0..batch.num_rows());
        while !rows.is_empty() {
            let statement_rows = limits
                .split(&mut rows)
                .map_err(|too_large| too_large.at(context(), written))?;
            let n = statement_rows.len();
            let values: Vec<Value> = statement_rows.into_iter().flatten().collect();
            conn.exec_drop(
                insert_sql(table, columns, n, placeholder),
                Params::Positional(values),
            )
            .await
            .map_err(|e| statement_error(context(), written, e))?;
            refuse_warnings(conn, context, written).await?;
            written += n as u64;
        }
    }
    Ok(written)
}

/// Writes the batches of `chunk` into `table` by MariaDB's array binding:
/// one prepared single-row `INSERT`, executed with many rows of parameters
/// per request; returns the rows written. The next request is converted
/// while the server runs the current one. An error of the chunk stream ends
/// the writes and is returned as it is (the caller rolls back).
pub(super) async fn bind_array_chunk(
    conn: &mut Conn,
    table: &TableRef,
    columns: &[TargetColumn],
    chunk: &mut ChunkStream<'_>,
    max_packet: usize,
) -> Result<u64> {
    let context = || format!("inserting into '{table}'");
    let statement = prepare_array_insert(conn, table, columns).await?;
    let limits = RequestLimits::array_binding(max_packet);
    let (sender, receiver) = tokio::sync::mpsc::channel::<Vec<Vec<Value>>>(ARRAY_QUEUE);
    let convert = async move {
        let mut converted = 0u64;
        while let Some(batch) = chunk.next().await {
            let batch = batch?;
            let prepared = prepare(&batch)?;
            let mut rows = row_values(&prepared, 0..batch.num_rows());
            while !rows.is_empty() {
                let request = limits
                    .split(&mut rows)
                    .map_err(|too_large| too_large.at(context(), converted))?;
                converted += request.len() as u64;
                if sender.send(request).await.is_err() {
                    // The writes ended early: their result says why.
                    return Ok(());
                }
            }
        }
        Ok::<_, AtlasError>(())
    };
    let write = async {
        // Owned here, so that a failed write drops it and ends the conversion.
        let mut receiver = receiver;
        let mut written = 0u64;
        while let Some(rows) = receiver.recv().await {
            let sent = rows.len() as u64;
            conn.exec_batch(&statement, rows.into_iter().map(Params::Positional))
                .await
                .map_err(|e| statement_error(context(), written, e))?;
            refuse_warnings(conn, context, written).await?;
            // The server counts the changes of the table's triggers too.
            let stored = conn.affected_rows();
            if stored < sent {
                return Err(rows_lost(context(), written, sent, stored));
            }
            written += sent;
        }
        Ok::<_, AtlasError>(written)
    };
    let (converted, written) = futures::join!(convert, write);
    // A failed write stops the conversion; a failed conversion (the file, or
    // a row too long for a packet) ends the writes: either error is the reason.
    let written = written?;
    converted?;
    Ok(written)
}

/// The single-row `INSERT` into `columns` of `table` that array binding
/// executes, prepared on `conn`.
pub(super) async fn prepare_array_insert(
    conn: &mut Conn,
    table: &TableRef,
    columns: &[TargetColumn],
) -> Result<mysql_async::Statement> {
    conn.prep(insert_sql(table, columns, 1, placeholder))
        .await
        .map_err(|e| AtlasError::database(format!("inserting into '{table}'"), e))
}

/// How many rows of parameters one statement or request takes.
#[derive(Debug, Clone, Copy)]
pub(super) struct RequestLimits {
    /// Rows at most.
    rows: usize,
    /// Bytes of parameters at most, past the first row.
    bytes: usize,
    /// The server's `max_allowed_packet`: no row's parameters may exceed it
    /// (less the request's own fields), or the driver closes the connection.
    max_packet: usize,
}

/// Bytes of a request's own fields and types, allowed for beside a row's
/// parameters within one packet.
const REQUEST_OVERHEAD: usize = 1 << 10;

impl RequestLimits {
    /// The requests of array binding on a server of `max_packet`.
    pub(super) fn array_binding(max_packet: usize) -> Self {
        Self {
            rows: usize::MAX,
            bytes: ARRAY_REQUEST_BYTES.min(max_packet / 2).max(1),
            max_packet,
        }
    }

    /// Takes from the front of `rows` the rows of one request: at least
    /// one, and no more than the limits allow after that; a first row too
    /// long for a packet is refused with its size.
    pub(super) fn split(
        &self,
        rows: &mut Vec<Vec<Value>>,
    ) -> std::result::Result<Vec<Vec<Value>>, RowTooLarge> {
        let mut bytes = 0usize;
        let mut end = 0;
        for row in rows.iter().take(self.rows) {
            // Each value: an indicator byte and its binary form.
            let size: usize = row.iter().map(|v| v.bin_len() as usize + 1).sum();
            if end == 0 && size + REQUEST_OVERHEAD + 2 * row.len() > self.max_packet {
                return Err(RowTooLarge {
                    bytes: size,
                    max_packet: self.max_packet,
                });
            }
            if end > 0 && bytes + size > self.bytes {
                break;
            }
            bytes += size;
            end += 1;
        }
        let rest = rows.split_off(end);
        Ok(std::mem::replace(rows, rest))
    }
}

/// The first row of a request is longer than a packet.
pub(super) struct RowTooLarge {
    bytes: usize,
    max_packet: usize,
}

impl RowTooLarge {
    /// The refusal of the write's row after `rows_before`.
    pub(super) fn at(self, context: String, rows_before: u64) -> AtlasError {
        AtlasError::database(
            context,
            WriteRefusal {
                rows_before,
                reason: RefusalReason::RowTooLarge {
                    bytes: self.bytes,
                    max_packet: self.max_packet,
                },
            },
        )
    }
}

/// Fails with the first warnings if the last statement (after `rows_before`
/// rows of the write) raised any.
pub(super) async fn refuse_warnings(
    conn: &mut Conn,
    context: impl Fn() -> String,
    rows_before: u64,
) -> Result<()> {
    if conn.get_warnings() == 0 {
        return Ok(());
    }
    let warnings: Vec<(String, u32, String)> = conn
        .query(format!("SHOW WARNINGS LIMIT {WARNINGS_QUOTED}"))
        .await
        .map_err(|e| AtlasError::database(context(), e))?;
    Err(AtlasError::database(
        context(),
        WriteRefusal {
            rows_before,
            reason: RefusalReason::Warnings(warnings),
        },
    ))
}

/// A BIT column reads a string parameter as its bytes: its placeholder
/// casts the number's text.
fn placeholder(column: &TargetColumn) -> &'static str {
    if super::is_bit(column) {
        "CAST(? AS UNSIGNED)"
    } else {
        "?"
    }
}

/// The columns of `batch` prepared for binding.
pub(super) fn prepare(batch: &datafusion::arrow::array::RecordBatch) -> Result<Vec<BindColumn>> {
    batch
        .columns()
        .iter()
        .map(|a| BindColumn::prepare(a, DecimalBinding::Text))
        .collect()
}

/// The parameters of `rows`, row by row. Each column's values share one
/// parameter type (an array-binding request declares a type per column).
pub(super) fn row_values(columns: &[BindColumn], rows: Range<usize>) -> Vec<Vec<Value>> {
    let mut out: Vec<Vec<Value>> = rows
        .clone()
        .map(|_| Vec::with_capacity(columns.len()))
        .collect();
    for column in columns {
        for (row, value) in out.iter_mut().zip(column_values(column, rows.clone())) {
            row.push(value);
        }
    }
    out
}

/// The values of `rows` of `column` as statement parameters, NULL as NULL.
/// Dates and timestamps are binary where every year is in 0..=9999 (what the
/// binary form carries) and text otherwise, for the server to refuse.
fn column_values(column: &BindColumn, rows: Range<usize>) -> Vec<Value> {
    fn each<A: Array + ?Sized>(
        array: &A,
        rows: Range<usize>,
        value: impl Fn(usize) -> Value,
    ) -> Vec<Value> {
        rows.map(|row| {
            if array.is_valid(row) {
                value(row)
            } else {
                Value::NULL
            }
        })
        .collect()
    }
    match column {
        BindColumn::Integer(a) => {
            let a = a.as_primitive::<Int64Type>();
            each(a, rows, |row| Value::Int(a.value(row)))
        }
        BindColumn::Real(a) => {
            let a = a.as_primitive::<Float64Type>();
            each(a, rows, |row| Value::Double(a.value(row)))
        }
        BindColumn::Text(a) => {
            let a = a.as_string::<i32>();
            each(a, rows, |row| {
                Value::Bytes(a.value(row).as_bytes().to_vec())
            })
        }
        BindColumn::Blob(a) => {
            let a = a.as_binary::<i32>();
            each(a, rows, |row| Value::Bytes(a.value(row).to_vec()))
        }
        BindColumn::Date(a) => {
            let a = a.as_primitive::<Date32Type>();
            binary_or_text(column, a, rows, |row| {
                binary_time(i64::from(a.value(row)), 0)
            })
        }
        BindColumn::Timestamp(a) => {
            let a = a.as_primitive::<TimestampMicrosecondType>();
            binary_or_text(column, a, rows, |row| {
                let micros = a.value(row);
                binary_time(
                    micros.div_euclid(MICROS_PER_DAY),
                    micros.rem_euclid(MICROS_PER_DAY),
                )
            })
        }
    }
}

/// The date `days` after 1970-01-01 plus `micros_of_day` in the binary
/// protocol's form; `None` for years outside 0..=9999.
fn binary_time(days: i64, micros_of_day: i64) -> Option<Value> {
    let (year, month, day) = civil_date(days)?;
    let seconds = micros_of_day / 1_000_000;
    Some(Value::Date(
        year,
        month,
        day,
        (seconds / 3600) as u8,
        (seconds / 60 % 60) as u8,
        (seconds % 60) as u8,
        (micros_of_day % 1_000_000) as u32,
    ))
}

/// The values of `rows` of a date or timestamp `column` in the binary form
/// (`binary`, `None` where a year has none), or, if any has none, all as
/// text: one parameter type for the whole column.
fn binary_or_text(
    column: &BindColumn,
    array: &dyn Array,
    rows: Range<usize>,
    binary: impl Fn(usize) -> Option<Value>,
) -> Vec<Value> {
    let binary_values: Option<Vec<Value>> = rows
        .clone()
        .map(|row| {
            if array.is_valid(row) {
                binary(row)
            } else {
                Some(Value::NULL)
            }
        })
        .collect();
    binary_values.unwrap_or_else(|| {
        rows.map(|row| {
            column
                .time_text(row)
                .map_or(Value::NULL, |text| Value::Bytes(text.as_bytes().to_vec()))
        })
        .collect()
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::array::ArrayRef;
    use datafusion::arrow::array::{
        BinaryArray, Date32Array, Float64Array, Int32Array, RecordBatch, StringArray,
        TimestampMicrosecondArray,
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

    #[test]
    fn times_bind_binary_unless_a_year_has_no_binary_form() {
        let days = |y, m, d| {
            (chrono::NaiveDate::from_ymd_opt(y, m, d).unwrap()
                - chrono::NaiveDate::from_ymd_opt(1970, 1, 1).unwrap())
            .num_days() as i32
        };
        let dates: ArrayRef = Arc::new(Date32Array::from(vec![
            Some(days(2024, 2, 29)),
            None,
            Some(days(1, 1, 1)),
        ]));
        let column = BindColumn::prepare(&dates, DecimalBinding::Text).unwrap();
        assert_eq!(
            column_values(&column, 0..3),
            vec![
                Value::Date(2024, 2, 29, 0, 0, 0, 0),
                Value::NULL,
                Value::Date(1, 1, 1, 0, 0, 0, 0)
            ]
        );
        let micros = i64::from(days(2024, 2, 29)) * MICROS_PER_DAY + 36_672_123_456;
        let stamps: ArrayRef = Arc::new(TimestampMicrosecondArray::from(vec![
            Some(micros),
            Some(-1),
        ]));
        let column = BindColumn::prepare(&stamps, DecimalBinding::Text).unwrap();
        assert_eq!(
            column_values(&column, 0..2),
            vec![
                Value::Date(2024, 2, 29, 10, 11, 12, 123_456),
                Value::Date(1969, 12, 31, 23, 59, 59, 999_999)
            ]
        );
        // Year 10000: the whole column goes as text, one type for all rows.
        let far: ArrayRef = Arc::new(Date32Array::from(vec![
            Some(days(2024, 2, 29)),
            Some(days(9999, 12, 31) + 1),
        ]));
        let column = BindColumn::prepare(&far, DecimalBinding::Text).unwrap();
        assert_eq!(
            column_values(&column, 0..2),
            vec![
                Value::Bytes(b"2024-02-29".to_vec()),
                Value::Bytes(b"+10000-01-01".to_vec())
            ]
        );
    }

    #[test]
    fn requests_split_by_parameter_bytes_and_rows() {
        let row = |text: &str| vec![Value::Int(1), Value::Bytes(text.as_bytes().to_vec())];
        let limits = |rows, bytes| RequestLimits {
            rows,
            bytes,
            max_packet: 4 << 10,
        };
        // Each row: 9 bytes of integer, 1 + 10 of text (length prefix).
        let mut rows: Vec<Vec<Value>> = (0..5).map(|_| row("0123456789")).collect();
        let first = limits(usize::MAX, 45).split(&mut rows).ok().unwrap();
        assert_eq!((first.len(), rows.len()), (2, 3));
        let first = limits(1, 1000).split(&mut rows).ok().unwrap();
        assert_eq!((first.len(), rows.len()), (1, 2));
        // A row larger than the limit still goes, alone.
        let mut big = vec![row(&"x".repeat(100)), row("y")];
        assert_eq!(limits(10, 10).split(&mut big).ok().unwrap().len(), 1);
        assert_eq!(big.len(), 1);
        assert_eq!(limits(10, 10).split(&mut big).ok().unwrap().len(), 1);
        assert!(big.is_empty());
        // One longer than a packet is refused, its size named.
        let mut huge = vec![row(&"x".repeat(5000))];
        let Err(refused) = limits(10, 10).split(&mut huge) else {
            panic!("a row past max_allowed_packet is refused");
        };
        assert_eq!(
            (refused.bytes, refused.max_packet),
            (9 + 1 + 3 + 5000, 4 << 10)
        );
        assert_eq!(huge.len(), 1);
    }
}
