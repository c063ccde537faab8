//! Arrow columns prepared for binding as statement parameters (SQLite's
//! prepared INSERT, MySQL/MariaDB's INSERTs and array binding) or for MySQL's
//! `LOAD DATA` text.

use std::fmt::Write as _;

use datafusion::arrow::array::{Array, ArrayRef, AsArray};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{
    DataType, Date32Type, Float64Type, Int64Type, TimeUnit, TimestampMicrosecondType,
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
/// parameter kinds the drivers all encode; dates and timestamps are bound as
/// text, formatted value by value where they are bound ([`TimeText`]).
pub(crate) enum BindColumn {
    Integer(ArrayRef),
    Real(ArrayRef),
    Text(ArrayRef),
    Blob(ArrayRef),
    /// `Date32`.
    Date(ArrayRef),
    /// `Timestamp(Microsecond, None)`, UTC.
    Timestamp(ArrayRef),
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
            DataType::Timestamp(..) => {
                BindColumn::Timestamp(to(&DataType::Timestamp(TimeUnit::Microsecond, None))?)
            }
            DataType::Date32 | DataType::Date64 => BindColumn::Date(to(&DataType::Date32)?),
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
            BindColumn::Date(_) | BindColumn::Timestamp(_) => {
                let text = self.time_text(row);
                statement.raw_bind_parameter(index, text.as_ref().map(TimeText::as_str))
            }
        }
    }

    /// The text of value `row` of a date or timestamp column (`None` for
    /// NULL, and for columns of other kinds).
    pub(crate) fn time_text(&self, row: usize) -> Option<TimeText> {
        match self {
            BindColumn::Date(a) => {
                let a = a.as_primitive::<Date32Type>();
                a.is_valid(row)
                    .then(|| TimeText::date(i64::from(a.value(row))))
            }
            BindColumn::Timestamp(a) => {
                let a = a.as_primitive::<TimestampMicrosecondType>();
                a.is_valid(row).then(|| TimeText::timestamp(a.value(row)))
            }
            _ => None,
        }
    }
}

pub(crate) const MICROS_PER_DAY: i64 = 86_400_000_000;

/// A date (`YYYY-MM-DD`) or a timestamp (`YYYY-MM-DD HH:MM:SS[.fff|.ffffff]`,
/// UTC) as text, formatted on the stack: the form SQLite's date functions,
/// MySQL's DATE and DATETIME and PostgreSQL's text COPY read (chrono's `%.f`:
/// the fraction in 3 or 6 digits, none when zero).
pub(crate) struct TimeText {
    bytes: [u8; 32],
    len: usize,
}

impl TimeText {
    fn empty() -> Self {
        TimeText {
            bytes: [0; 32],
            len: 0,
        }
    }

    /// The date `days` after 1970-01-01.
    pub(crate) fn date(days: i64) -> Self {
        let mut text = TimeText::empty();
        if !text.push_date(days) {
            // Years outside 0..=9999: the general formatter.
            text.len = 0;
            if let Some(date) = i32::try_from(days)
                .ok()
                .and_then(|d| d.checked_add(719_163))
                .and_then(chrono::NaiveDate::from_num_days_from_ce_opt)
            {
                let _ = write!(text, "{date}");
            }
        }
        text
    }

    /// The timestamp `micros` after 1970-01-01 00:00:00.
    pub(crate) fn timestamp(micros: i64) -> Self {
        let mut text = TimeText::empty();
        let days = micros.div_euclid(MICROS_PER_DAY);
        let of_day = micros.rem_euclid(MICROS_PER_DAY);
        if !text.push_date(days) {
            text.len = 0;
            if let Some(t) = chrono::DateTime::from_timestamp_micros(micros) {
                let _ = write!(text, "{}", t.naive_utc().format("%Y-%m-%d %H:%M:%S%.f"));
            }
            return text;
        }
        let seconds = of_day / 1_000_000;
        let fraction = of_day % 1_000_000;
        text.push(b' ');
        text.push_digits((seconds / 3600) as u32, 2);
        text.push(b':');
        text.push_digits((seconds / 60 % 60) as u32, 2);
        text.push(b':');
        text.push_digits((seconds % 60) as u32, 2);
        if fraction != 0 {
            text.push(b'.');
            if fraction % 1000 == 0 {
                text.push_digits((fraction / 1000) as u32, 3);
            } else {
                text.push_digits(fraction as u32, 6);
            }
        }
        text
    }

    pub(crate) fn as_bytes(&self) -> &[u8] {
        &self.bytes[..self.len]
    }

    pub(crate) fn as_str(&self) -> &str {
        std::str::from_utf8(self.as_bytes()).expect("dates format as ASCII")
    }

    fn push(&mut self, byte: u8) {
        self.bytes[self.len] = byte;
        self.len += 1;
    }

    /// Appends `value` with `width` digits, zero-padded.
    fn push_digits(&mut self, value: u32, width: usize) {
        let mut v = value;
        for slot in self.bytes[self.len..self.len + width].iter_mut().rev() {
            *slot = b'0' + (v % 10) as u8;
            v /= 10;
        }
        self.len += width;
    }

    /// Appends the date `days` after 1970-01-01 as `YYYY-MM-DD`; `false` for
    /// years outside 0..=9999.
    fn push_date(&mut self, days: i64) -> bool {
        let Some((year, month, day)) = civil_date(days) else {
            return false;
        };
        self.push_digits(u32::from(year), 4);
        self.push(b'-');
        self.push_digits(u32::from(month), 2);
        self.push(b'-');
        self.push_digits(u32::from(day), 2);
        true
    }
}

/// The civil calendar's year, month and day of the date `days` after
/// 1970-01-01 (Howard Hinnant's algorithm); `None` for years outside 0..=9999.
pub(crate) fn civil_date(days: i64) -> Option<(u16, u8, u8)> {
    let z = days.checked_add(719_468)?;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    (0..=9999)
        .contains(&year)
        .then_some((year as u16, month as u8, day as u8))
}

impl std::fmt::Write for TimeText {
    /// The general formatter's text (years beyond 9999 are at most 29
    /// characters); what does not fit is refused, not cut.
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        let end = self.len + s.len();
        let slot = self.bytes.get_mut(self.len..end).ok_or(std::fmt::Error)?;
        slot.copy_from_slice(s.as_bytes());
        self.len = end;
        Ok(())
    }
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
    use std::sync::Arc;

    #[test]
    fn dates_and_timestamps_format_as_chrono_does() {
        let days: Vec<i32> = vec![
            -719_528, -1, 0, 10_957, 19_782, 2_932_896, -800_000, 3_000_000,
        ];
        for d in days {
            let expected = chrono::NaiveDate::from_num_days_from_ce_opt(d + 719_163)
                .unwrap()
                .to_string();
            assert_eq!(TimeText::date(i64::from(d)).as_str(), expected, "{d}");
        }
        let micros: Vec<i64> = vec![
            0,
            1,
            1_000,
            500_000,
            26_490,
            1_700_000_000_123_456,
            -1,
            -70_000_000_000_000_000,
            8_000_000_000_000_000_000,
        ];
        for m in micros {
            let expected = chrono::DateTime::from_timestamp_micros(m)
                .unwrap()
                .naive_utc()
                .format("%Y-%m-%d %H:%M:%S%.f")
                .to_string();
            assert_eq!(TimeText::timestamp(m).as_str(), expected, "{m}");
        }
    }

    #[test]
    fn dates_bind_as_their_text() {
        let dates: ArrayRef = Arc::new(Date32Array::from(vec![Some(19_782), None]));
        let column = BindColumn::prepare(&dates, DecimalBinding::Text).unwrap();
        assert_eq!(column.time_text(0).unwrap().as_str(), "2024-02-29");
        assert!(column.time_text(1).is_none());
        let stamps: ArrayRef = Arc::new(TimestampMicrosecondArray::from(vec![Some(1_000)]));
        let column = BindColumn::prepare(&stamps, DecimalBinding::Text).unwrap();
        assert_eq!(
            column.time_text(0).unwrap().as_str(),
            "1970-01-01 00:00:00.001"
        );
    }
}
