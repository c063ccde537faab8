//! Arrow columns prepared for binding as statement parameters (SQLite's
//! prepared INSERT, MySQL/MariaDB's INSERTs) or for MySQL's `LOAD DATA` text.

use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, AsArray, StringBuilder};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{
    DataType, Float64Type, Int64Type, TimeUnit, TimestampMicrosecondType,
};

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
        let to = |dt: &DataType| cast(array, dt).map_err(AtlasError::from);
        Ok(match array.data_type() {
            DataType::Boolean
            | DataType::Int8
            | DataType::Int16
            | DataType::Int32
            | DataType::Int64
            | DataType::UInt8
            | DataType::UInt16
            | DataType::UInt32 => BindColumn::Integer(to(&DataType::Int64)?),
            // Beyond i64::MAX an Int64 cast would make it NULL: exact text.
            DataType::UInt64 => BindColumn::Text(to(&DataType::Utf8)?),
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
            DataType::Date32 | DataType::Date64 => BindColumn::Text(format_dates(array)?),
            _ => BindColumn::Text(to(&DataType::Utf8)?),
        })
    }

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

/// Timestamps as `YYYY-MM-DD HH:MM:SS[.fff|.ffffff]` (UTC), the form
/// SQLite's date functions and MySQL's DATETIME read (chrono's `%.f`: the
/// fraction in 3 or 6 digits, none when zero).
fn format_timestamps(array: &ArrayRef) -> Result<ArrayRef> {
    let micros =
        cast(array, &DataType::Timestamp(TimeUnit::Microsecond, None)).map_err(AtlasError::from)?;
    let micros = micros.as_primitive::<TimestampMicrosecondType>();
    let mut out = StringBuilder::with_capacity(micros.len(), micros.len() * 26);
    let mut text = String::with_capacity(32);
    for value in micros.iter() {
        match value {
            None => out.append_null(),
            Some(v) => {
                text.clear();
                let days = v.div_euclid(MICROS_PER_DAY);
                let of_day = v.rem_euclid(MICROS_PER_DAY);
                if !push_date(days, &mut text) {
                    // Years outside 0..=9999: the general formatter.
                    text.clear();
                    if let Some(t) = chrono::DateTime::from_timestamp_micros(v) {
                        use std::fmt::Write;
                        let _ = write!(text, "{}", t.naive_utc().format("%Y-%m-%d %H:%M:%S%.f"));
                    }
                    out.append_value(&text);
                    continue;
                }
                let seconds = of_day / 1_000_000;
                let fraction = of_day % 1_000_000;
                text.push(' ');
                push_digits(&mut text, (seconds / 3600) as u32, 2);
                text.push(':');
                push_digits(&mut text, (seconds / 60 % 60) as u32, 2);
                text.push(':');
                push_digits(&mut text, (seconds % 60) as u32, 2);
                if fraction != 0 {
                    text.push('.');
                    if fraction % 1000 == 0 {
                        push_digits(&mut text, (fraction / 1000) as u32, 3);
                    } else {
                        push_digits(&mut text, fraction as u32, 6);
                    }
                }
                out.append_value(&text);
            }
        }
    }
    Ok(Arc::new(out.finish()))
}

/// Dates as `YYYY-MM-DD`.
fn format_dates(array: &ArrayRef) -> Result<ArrayRef> {
    let days = cast(array, &DataType::Date32).map_err(AtlasError::from)?;
    let days = days.as_primitive::<datafusion::arrow::datatypes::Date32Type>();
    let mut out = StringBuilder::with_capacity(days.len(), days.len() * 10);
    let mut text = String::with_capacity(16);
    for value in days.iter() {
        match value {
            None => out.append_null(),
            Some(d) => {
                text.clear();
                if !push_date(i64::from(d), &mut text) {
                    text.clear();
                    if let Some(date) = chrono::NaiveDate::from_num_days_from_ce_opt(d + 719_163) {
                        use std::fmt::Write;
                        let _ = write!(text, "{date}");
                    }
                }
                out.append_value(&text);
            }
        }
    }
    Ok(Arc::new(out.finish()))
}

const MICROS_PER_DAY: i64 = 86_400_000_000;

/// Appends `value` with `width` digits, zero-padded.
fn push_digits(out: &mut String, value: u32, width: usize) {
    let mut digits = [b'0'; 10];
    let mut v = value;
    for slot in digits[..width].iter_mut().rev() {
        *slot = b'0' + (v % 10) as u8;
        v /= 10;
    }
    out.push_str(std::str::from_utf8(&digits[..width]).expect("ASCII digits"));
}

/// Appends the date `days` after 1970-01-01 as `YYYY-MM-DD` (the civil
/// calendar, Howard Hinnant's algorithm); `false` for years outside 0..=9999.
fn push_date(days: i64, out: &mut String) -> bool {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    if !(0..=9999).contains(&year) {
        return false;
    }
    push_digits(out, year as u32, 4);
    out.push('-');
    push_digits(out, month as u32, 2);
    out.push('-');
    push_digits(out, day as u32, 2);
    true
}

/// `INSERT INTO table (columns) VALUES (?, ...), ...` for `rows` rows.
/// `placeholder(column)` is the parameter as the statement reads it (`?`,
/// or an expression of it).
pub(crate) fn insert_sql(
    table: &TableRef,
    columns: &[crate::schema::TargetColumn],
    rows: usize,
    placeholder: fn(&crate::schema::TargetColumn) -> &'static str,
) -> String {
    let placeholders = format!(
        "({})",
        columns
            .iter()
            .map(placeholder)
            .collect::<Vec<_>>()
            .join(", ")
    );
    let mut sql = format!(
        "INSERT INTO {} ({}) VALUES ",
        table.sql(),
        super::column_list(columns)
    );
    sql.push_str(&vec![placeholders; rows].join(", "));
    sql
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::array::{Date32Array, TimestampMicrosecondArray};

    #[test]
    fn dates_and_timestamps_format_as_chrono_does() {
        let days: Vec<i32> = vec![-719_528, -1, 0, 10_957, 19_782, 2_932_896];
        let dates = format_dates(&(Arc::new(Date32Array::from(days.clone())) as ArrayRef)).unwrap();
        for (i, d) in days.iter().enumerate() {
            let expected = chrono::NaiveDate::from_num_days_from_ce_opt(d + 719_163)
                .unwrap()
                .to_string();
            assert_eq!(dates.as_string::<i32>().value(i), expected);
        }
        let micros: Vec<i64> = vec![0, 1, 1_000, 500_000, 26_490, 1_700_000_000_123_456, -1];
        let text = format_timestamps(
            &(Arc::new(TimestampMicrosecondArray::from(micros.clone())) as ArrayRef),
        )
        .unwrap();
        for (i, m) in micros.iter().enumerate() {
            let expected = chrono::DateTime::from_timestamp_micros(*m)
                .unwrap()
                .naive_utc()
                .format("%Y-%m-%d %H:%M:%S%.f")
                .to_string();
            assert_eq!(text.as_string::<i32>().value(i), expected, "{m}");
        }
    }
}
