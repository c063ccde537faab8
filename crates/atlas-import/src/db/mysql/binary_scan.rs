//! Key rows of the binary protocol as Arrow batches: numbers, dates and
//! date-times as the server sends them (no text to print or parse), text as
//! text. The batches' columns are typed as close to the key's target types as
//! the values come (integers as Int64 or UInt64, floats as Float64); the key
//! scan's conversion makes them the target types, as it does the text.

use chrono::{NaiveDate, NaiveDateTime, NaiveTime};
use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::datatypes::{DataType, TimeUnit};
use mysql_async::{Row, Value};

use crate::db::key_batch::{KeyBatchBuilder, KeyColumnBuilder};
use crate::error::Result;
use crate::names::TableRef;
use crate::schema::TargetColumn;

/// The type `column`'s values arrive as: integers as Int64 (UInt64 for
/// unsigned BIGINT), floats as Float64, date-times as microseconds.
fn wire_type(column: &TargetColumn) -> DataType {
    match column.data_type {
        DataType::Int8 | DataType::Int16 | DataType::Int32 | DataType::Int64 => DataType::Int64,
        DataType::UInt64 => DataType::UInt64,
        DataType::Float32 | DataType::Float64 => DataType::Float64,
        DataType::Boolean => DataType::Boolean,
        DataType::Date32 => DataType::Date32,
        DataType::Timestamp(..) => DataType::Timestamp(TimeUnit::Microsecond, None),
        _ => DataType::Utf8,
    }
}

/// Appends `value` to `builder`; `false` when it is not of the column's kind.
fn append(builder: &mut KeyColumnBuilder, value: &Value) -> bool {
    match (builder, value) {
        (builder, Value::NULL) => builder.append_null(),
        (KeyColumnBuilder::Int64(b), Value::Int(v)) => b.append_value(*v),
        (KeyColumnBuilder::Int64(b), Value::UInt(v)) => match i64::try_from(*v) {
            Ok(v) => b.append_value(v),
            Err(_) => return false,
        },
        (KeyColumnBuilder::UInt64(b), Value::UInt(v)) => b.append_value(*v),
        (KeyColumnBuilder::UInt64(b), Value::Int(v)) => match u64::try_from(*v) {
            Ok(v) => b.append_value(v),
            Err(_) => return false,
        },
        (KeyColumnBuilder::Float64(b), Value::Double(v)) => b.append_value(*v),
        (KeyColumnBuilder::Float64(b), Value::Float(v)) => b.append_value(f64::from(*v)),
        (KeyColumnBuilder::Bool(b), Value::Int(0)) => b.append_value(false),
        (KeyColumnBuilder::Bool(b), Value::Int(1)) => b.append_value(true),
        (KeyColumnBuilder::Date(b), Value::Date(y, m, d, ..)) => match date(*y, *m, *d) {
            Some(date) => b.append_value(
                date.signed_duration_since(NaiveDate::default())
                    .num_days()
                    .try_into()
                    .unwrap_or(i32::MAX),
            ),
            None => return false,
        },
        (KeyColumnBuilder::Timestamp(b, _), Value::Date(y, mo, d, h, mi, s, us)) => {
            let time = NaiveTime::from_hms_micro_opt((*h).into(), (*mi).into(), (*s).into(), *us);
            match (date(*y, *mo, *d), time) {
                (Some(date), Some(time)) => {
                    b.append_value(NaiveDateTime::new(date, time).and_utc().timestamp_micros())
                }
                _ => return false,
            }
        }
        (KeyColumnBuilder::Text(b), Value::Bytes(bytes)) => match std::str::from_utf8(bytes) {
            Ok(text) => b.append_value(text),
            Err(_) => return false,
        },
        _ => return false,
    }
    true
}

/// A calendar date; `None` for MariaDB's zero dates (`0000-00-00`).
fn date(year: u16, month: u8, day: u8) -> Option<NaiveDate> {
    NaiveDate::from_ymd_opt(year.into(), month.into(), day.into())
}

/// Binary-protocol rows of the key columns into batches of `batch_rows`.
///
/// A row holding a value its column's type cannot hold (a zero date
/// `0000-00-00`, which MariaDB keeps where its SQL mode allows) is left out:
/// every imported value is a real value of the column's type, so none can
/// equal it, as the server's own comparison agrees.
pub(super) struct ValueBatcher<'a> {
    table: &'a TableRef,
    batch: KeyBatchBuilder,
    /// Which rows of the batch being built are kept.
    kept: Vec<bool>,
    batch_rows: usize,
    total: u64,
    left_out: u64,
}

impl<'a> ValueBatcher<'a> {
    pub(super) fn new(table: &'a TableRef, columns: &'a [TargetColumn], batch_rows: usize) -> Self {
        Self {
            table,
            batch: KeyBatchBuilder::new(columns, wire_type),
            kept: Vec::new(),
            batch_rows: batch_rows.max(1),
            total: 0,
            left_out: 0,
        }
    }

    /// Appends one row; emits a batch when full.
    pub(super) fn push_row(
        &mut self,
        row: &Row,
        on_batch: &mut (dyn FnMut(RecordBatch) -> Result<()> + Send),
    ) -> Result<()> {
        let mut readable = true;
        for (i, builder) in self.batch.columns.iter_mut().enumerate() {
            let value = row.as_ref(i).unwrap_or(&Value::NULL);
            if !append(builder, value) {
                builder.append_null();
                readable = false;
            }
        }
        self.kept.push(readable);
        self.total += 1;
        self.left_out += u64::from(!readable);
        if self.batch.rows() >= self.batch_rows {
            self.emit(on_batch)?;
        }
        Ok(())
    }

    fn emit(&mut self, on_batch: &mut (dyn FnMut(RecordBatch) -> Result<()> + Send)) -> Result<()> {
        let batch = self.batch.finish()?;
        let kept = std::mem::take(&mut self.kept);
        if kept.iter().all(|&k| k) {
            return on_batch(batch);
        }
        let kept = datafusion::arrow::array::BooleanArray::from(kept);
        on_batch(datafusion::arrow::compute::filter_record_batch(
            &batch, &kept,
        )?)
    }

    /// Emits the last rows; returns the rows read.
    pub(super) fn flush(
        mut self,
        on_batch: &mut (dyn FnMut(RecordBatch) -> Result<()> + Send),
    ) -> Result<u64> {
        if self.batch.rows() > 0 {
            self.emit(on_batch)?;
        }
        if self.left_out > 0 {
            tracing::debug!(
                "Key check: {} existing rows of '{}' hold values such as zero dates; no imported row can repeat them",
                self.left_out,
                self.table
            );
        }
        Ok(self.total)
    }
}
