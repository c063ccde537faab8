//! Rows in the tab-separated text that both MySQL's `LOAD DATA` (its default
//! format) and PostgreSQL's `COPY ... (FORMAT text)` read: a tab between
//! fields, a newline after each row, `\N` for NULL, and backslash escapes
//! for backslash, tab, newline, carriage return and NUL.
//!
//! PostgreSQL takes this path for columns its binary COPY encoder cannot
//! express (uuid, jsonb, arrays, interval, inet, ...): the server parses each
//! value with its own input function, as `psql \copy` does.

use bytes::{BufMut, BytesMut};
use datafusion::arrow::array::{Array, AsArray, RecordBatch};
use datafusion::arrow::datatypes::{DataType, Float64Type, Int64Type};

use super::bind::{BindColumn, DecimalBinding};
use crate::error::Result;

/// Which reader the text is for; they differ only in binary values and
/// time zones.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TextDialect {
    /// `LOAD DATA`: binary values as bare hex digits, which the statement
    /// turns back into bytes with `UNHEX`; timestamps in the session's UTC.
    MySql,
    /// `COPY (FORMAT text)`: bytea in its hex input form (`\x...`), time zone
    /// aware timestamps with their UTC offset.
    Postgres,
}

/// Appends the rows of `batch` to `out`.
pub(crate) fn encode_rows(
    batch: &RecordBatch,
    dialect: TextDialect,
    out: &mut BytesMut,
) -> Result<()> {
    let columns = batch
        .columns()
        .iter()
        .map(|a| BindColumn::prepare(a, DecimalBinding::Text))
        .collect::<Result<Vec<_>>>()?;
    // Text after each value of a column (a UTC offset), if any.
    let suffixes: Vec<&[u8]> = batch
        .schema()
        .fields()
        .iter()
        .map(|f| match (dialect, f.data_type()) {
            (TextDialect::Postgres, DataType::Timestamp(_, Some(_))) => &b"+00"[..],
            _ => &b""[..],
        })
        .collect();
    let mut integer = itoa::Buffer::new();
    let mut real = ryu::Buffer::new();
    for row in 0..batch.num_rows() {
        for (i, column) in columns.iter().enumerate() {
            if i > 0 {
                out.put_u8(b'\t');
            }
            match column {
                BindColumn::Integer(a) => {
                    let a = a.as_primitive::<Int64Type>();
                    if a.is_valid(row) {
                        out.put_slice(integer.format(a.value(row)).as_bytes());
                    } else {
                        out.put_slice(b"\\N");
                    }
                }
                BindColumn::Real(a) => {
                    let a = a.as_primitive::<Float64Type>();
                    if a.is_valid(row) {
                        out.put_slice(real.format(a.value(row)).as_bytes());
                    } else {
                        out.put_slice(b"\\N");
                    }
                }
                BindColumn::Text(a) => {
                    let a = a.as_string::<i32>();
                    if a.is_valid(row) {
                        put_escaped(out, a.value(row).as_bytes());
                        out.put_slice(suffixes[i]);
                    } else {
                        out.put_slice(b"\\N");
                    }
                }
                BindColumn::Blob(a) => {
                    let a = a.as_binary::<i32>();
                    if a.is_valid(row) {
                        if dialect == TextDialect::Postgres {
                            // `\x` with its backslash escaped for COPY.
                            out.put_slice(b"\\\\x");
                        }
                        put_hex(out, a.value(row));
                    } else {
                        out.put_slice(b"\\N");
                    }
                }
            }
        }
        out.put_u8(b'\n');
    }
    Ok(())
}

/// `value` with the bytes the readers take as syntax escaped.
fn put_escaped(out: &mut BytesMut, value: &[u8]) {
    let mut start = 0;
    for (i, &byte) in value.iter().enumerate() {
        let escaped: &[u8] = match byte {
            b'\\' => b"\\\\",
            b'\t' => b"\\t",
            b'\n' => b"\\n",
            b'\r' => b"\\r",
            0 => b"\\0",
            _ => continue,
        };
        out.put_slice(&value[start..i]);
        out.put_slice(escaped);
        start = i + 1;
    }
    out.put_slice(&value[start..]);
}

fn put_hex(out: &mut BytesMut, value: &[u8]) {
    const DIGITS: &[u8; 16] = b"0123456789ABCDEF";
    out.reserve(value.len() * 2);
    for &byte in value {
        out.put_u8(DIGITS[usize::from(byte >> 4)]);
        out.put_u8(DIGITS[usize::from(byte & 15)]);
    }
}
