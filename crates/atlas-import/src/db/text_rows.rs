//! Rows in the tab-separated text that both MySQL's `LOAD DATA` (its default
//! format) and PostgreSQL's `COPY ... (FORMAT text)` read: a tab between
//! fields, a newline after each row, `\N` for NULL, and backslash escapes
//! for backslash, tab, newline, carriage return and NUL.
//!
//! PostgreSQL takes this path for columns its binary COPY encoder cannot
//! express (uuid, jsonb, arrays, interval, inet, ...): the server parses each
//! value with its own input function, as `psql \copy` does.

use bytes::{BufMut, BytesMut};
use datafusion::arrow::array::{
    Array, AsArray, BinaryArray, Date32Array, Float64Array, Int64Array, RecordBatch, StringArray,
    TimestampMicrosecondArray,
};
use datafusion::arrow::datatypes::DataType;

use super::bind::{BindColumn, DecimalBinding, TimeText};
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

/// A column of a batch as [`encode_rows`] writes it, its array's type
/// resolved once per batch rather than once per value.
enum TextField<'a> {
    Integer(&'a Int64Array),
    Real(&'a Float64Array),
    /// Text, and what follows each value (a UTC offset), if anything.
    Text(&'a StringArray, &'static [u8]),
    Blob(&'a BinaryArray),
    Date(&'a Date32Array),
    Timestamp(&'a TimestampMicrosecondArray, &'static [u8]),
}

impl<'a> TextField<'a> {
    fn new(column: &'a BindColumn, data_type: &DataType, dialect: TextDialect) -> Self {
        // PostgreSQL reads a time zone aware timestamp's text with its offset.
        let offset: &'static [u8] = match (dialect, data_type) {
            (TextDialect::Postgres, DataType::Timestamp(_, Some(_))) => b"+00",
            _ => b"",
        };
        match column {
            BindColumn::Integer(a) => TextField::Integer(a.as_primitive()),
            BindColumn::Real(a) => TextField::Real(a.as_primitive()),
            BindColumn::Text(a) => TextField::Text(a.as_string(), offset),
            BindColumn::Blob(a) => TextField::Blob(a.as_binary()),
            BindColumn::Date(a) => TextField::Date(a.as_primitive()),
            BindColumn::Timestamp(a) => TextField::Timestamp(a.as_primitive(), offset),
        }
    }

    /// Appends the value of `row` (or `\N`).
    fn put(&self, row: usize, dialect: TextDialect, numbers: &mut Numbers, out: &mut BytesMut) {
        let valid = match self {
            TextField::Integer(a) => a.is_valid(row),
            TextField::Real(a) => a.is_valid(row),
            TextField::Text(a, _) => a.is_valid(row),
            TextField::Blob(a) => a.is_valid(row),
            TextField::Date(a) => a.is_valid(row),
            TextField::Timestamp(a, _) => a.is_valid(row),
        };
        if !valid {
            out.put_slice(b"\\N");
            return;
        }
        match self {
            TextField::Integer(a) => out.put_slice(numbers.integer.format(a.value(row)).as_bytes()),
            TextField::Real(a) => out.put_slice(numbers.real.format(a.value(row)).as_bytes()),
            TextField::Text(a, suffix) => {
                put_escaped(out, a.value(row).as_bytes());
                out.put_slice(suffix);
            }
            TextField::Blob(a) => {
                if dialect == TextDialect::Postgres {
                    // `\x` with its backslash escaped for COPY.
                    out.put_slice(b"\\\\x");
                }
                put_hex(out, a.value(row));
            }
            TextField::Date(a) => {
                out.put_slice(TimeText::date(i64::from(a.value(row))).as_bytes());
            }
            TextField::Timestamp(a, suffix) => {
                out.put_slice(TimeText::timestamp(a.value(row)).as_bytes());
                out.put_slice(suffix);
            }
        }
    }
}

/// Number formatters kept across values.
struct Numbers {
    integer: itoa::Buffer,
    real: ryu::Buffer,
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
    let schema = batch.schema();
    let fields: Vec<TextField<'_>> = columns
        .iter()
        .zip(schema.fields())
        .map(|(column, field)| TextField::new(column, field.data_type(), dialect))
        .collect();
    let mut numbers = Numbers {
        integer: itoa::Buffer::new(),
        real: ryu::Buffer::new(),
    };
    for row in 0..batch.num_rows() {
        for (i, field) in fields.iter().enumerate() {
            if i > 0 {
                out.put_u8(b'\t');
            }
            field.put(row, dialect, &mut numbers, out);
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
