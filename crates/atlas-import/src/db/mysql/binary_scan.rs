//! Key rows of the binary protocol as Arrow batches: numbers, dates and
//! date-times as the server sends them (no text to print or parse), text as
//! text. The batches' columns are typed as close to the key's target types as
//! the values come (integers as Int64 or UInt64, floats as Float64); the key
//! scan's conversion makes them the target types, as it does the text.

use std::sync::Arc;

use chrono::{NaiveDate, NaiveDateTime, NaiveTime};
use datafusion::arrow::array::{
    ArrayBuilder, ArrayRef, BooleanBuilder, Date32Builder, Float64Builder, Int64Builder,
    RecordBatch, StringBuilder, TimestampMicrosecondBuilder, UInt64Builder,
};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use mysql_async::{Row, Value};

use crate::error::{AtlasError, Result};
use crate::names::TableRef;
use crate::schema::TargetColumn;

/// One key column's values as they arrive.
enum ColumnBuilder {
    Int(Int64Builder),
    UInt(UInt64Builder),
    Float(Float64Builder),
    Bool(BooleanBuilder),
    Date(Date32Builder),
    DateTime(TimestampMicrosecondBuilder),
    Text(StringBuilder),
}

impl ColumnBuilder {
    fn for_column(column: &TargetColumn) -> Self {
        match column.data_type {
            DataType::Int8 | DataType::Int16 | DataType::Int32 | DataType::Int64 => {
                Self::Int(Int64Builder::new())
            }
            DataType::UInt64 => Self::UInt(UInt64Builder::new()),
            DataType::Float32 | DataType::Float64 => Self::Float(Float64Builder::new()),
            DataType::Boolean => Self::Bool(BooleanBuilder::new()),
            DataType::Date32 => Self::Date(Date32Builder::new()),
            DataType::Timestamp(..) => Self::DateTime(TimestampMicrosecondBuilder::new()),
            _ => Self::Text(StringBuilder::new()),
        }
    }

    fn data_type(&self) -> DataType {
        match self {
            Self::Int(_) => DataType::Int64,
            Self::UInt(_) => DataType::UInt64,
            Self::Float(_) => DataType::Float64,
            Self::Bool(_) => DataType::Boolean,
            Self::Date(_) => DataType::Date32,
            Self::DateTime(_) => {
                DataType::Timestamp(datafusion::arrow::datatypes::TimeUnit::Microsecond, None)
            }
            Self::Text(_) => DataType::Utf8,
        }
    }

    /// Appends `value`; `false` when it is not of the column's kind.
    fn append(&mut self, value: &Value) -> bool {
        match (self, value) {
            (Self::Int(b), Value::NULL) => b.append_null(),
            (Self::UInt(b), Value::NULL) => b.append_null(),
            (Self::Float(b), Value::NULL) => b.append_null(),
            (Self::Bool(b), Value::NULL) => b.append_null(),
            (Self::Date(b), Value::NULL) => b.append_null(),
            (Self::DateTime(b), Value::NULL) => b.append_null(),
            (Self::Text(b), Value::NULL) => b.append_null(),
            (Self::Int(b), Value::Int(v)) => b.append_value(*v),
            (Self::Int(b), Value::UInt(v)) => match i64::try_from(*v) {
                Ok(v) => b.append_value(v),
                Err(_) => return false,
            },
            (Self::UInt(b), Value::UInt(v)) => b.append_value(*v),
            (Self::UInt(b), Value::Int(v)) => match u64::try_from(*v) {
                Ok(v) => b.append_value(v),
                Err(_) => return false,
            },
            (Self::Float(b), Value::Double(v)) => b.append_value(*v),
            (Self::Float(b), Value::Float(v)) => b.append_value(f64::from(*v)),
            (Self::Bool(b), Value::Int(0)) => b.append_value(false),
            (Self::Bool(b), Value::Int(1)) => b.append_value(true),
            (Self::Date(b), Value::Date(y, m, d, ..)) => match date(*y, *m, *d) {
                Some(date) => b.append_value(
                    date.signed_duration_since(NaiveDate::default())
                        .num_days()
                        .try_into()
                        .unwrap_or(i32::MAX),
                ),
                None => return false,
            },
            (Self::DateTime(b), Value::Date(y, mo, d, h, mi, s, us)) => {
                let time =
                    NaiveTime::from_hms_micro_opt((*h).into(), (*mi).into(), (*s).into(), *us);
                match (date(*y, *mo, *d), time) {
                    (Some(date), Some(time)) => {
                        b.append_value(NaiveDateTime::new(date, time).and_utc().timestamp_micros())
                    }
                    _ => return false,
                }
            }
            (Self::Text(b), Value::Bytes(bytes)) => match std::str::from_utf8(bytes) {
                Ok(text) => b.append_value(text),
                Err(_) => return false,
            },
            _ => return false,
        }
        true
    }

    fn finish(&mut self) -> ArrayRef {
        match self {
            Self::Int(b) => Arc::new(b.finish()),
            Self::UInt(b) => Arc::new(b.finish()),
            Self::Float(b) => Arc::new(b.finish()),
            Self::Bool(b) => Arc::new(b.finish()),
            Self::Date(b) => Arc::new(b.finish()),
            Self::DateTime(b) => Arc::new(b.finish()),
            Self::Text(b) => Arc::new(b.finish()),
        }
    }

    fn len(&self) -> usize {
        match self {
            Self::Int(b) => b.len(),
            Self::UInt(b) => b.len(),
            Self::Float(b) => b.len(),
            Self::Bool(b) => b.len(),
            Self::Date(b) => b.len(),
            Self::DateTime(b) => b.len(),
            Self::Text(b) => b.len(),
        }
    }
}

/// A calendar date; `None` for MariaDB's zero dates (`0000-00-00`).
fn date(year: u16, month: u8, day: u8) -> Option<NaiveDate> {
    NaiveDate::from_ymd_opt(year.into(), month.into(), day.into())
}

/// Binary-protocol rows of the key columns into batches of `batch_rows`.
pub(super) struct ValueBatcher<'a> {
    table: &'a TableRef,
    columns: &'a [TargetColumn],
    builders: Vec<ColumnBuilder>,
    schema: SchemaRef,
    batch_rows: usize,
    total: u64,
}

impl<'a> ValueBatcher<'a> {
    pub(super) fn new(table: &'a TableRef, columns: &'a [TargetColumn], batch_rows: usize) -> Self {
        let builders: Vec<ColumnBuilder> = columns.iter().map(ColumnBuilder::for_column).collect();
        let schema = Arc::new(Schema::new(
            columns
                .iter()
                .zip(&builders)
                .map(|(c, b)| Field::new(&c.name, b.data_type(), true))
                .collect::<Vec<_>>(),
        ));
        Self {
            table,
            columns,
            builders,
            schema,
            batch_rows: batch_rows.max(1),
            total: 0,
        }
    }

    /// Appends one row; emits a batch when full.
    pub(super) fn push_row(
        &mut self,
        row: &Row,
        on_batch: &mut (dyn FnMut(RecordBatch) -> Result<()> + Send),
    ) -> Result<()> {
        for (i, builder) in self.builders.iter_mut().enumerate() {
            let value = row.as_ref(i).unwrap_or(&Value::NULL);
            if !builder.append(value) {
                let column = &self.columns[i];
                return Err(AtlasError::BadValue {
                    source_name: format!("existing rows of table '{}'", self.table),
                    row: self.total + 1,
                    line: None,
                    column: column.name.clone(),
                    value: value.as_sql(true),
                    target_type: column.sql_type.clone(),
                });
            }
        }
        self.total += 1;
        if self.builders[0].len() >= self.batch_rows {
            self.emit(on_batch)?;
        }
        Ok(())
    }

    /// Emits the last rows; returns the rows read.
    pub(super) fn flush(
        mut self,
        on_batch: &mut (dyn FnMut(RecordBatch) -> Result<()> + Send),
    ) -> Result<u64> {
        if self.builders[0].len() > 0 {
            self.emit(on_batch)?;
        }
        Ok(self.total)
    }

    fn emit(&mut self, on_batch: &mut (dyn FnMut(RecordBatch) -> Result<()> + Send)) -> Result<()> {
        let arrays = self
            .builders
            .iter_mut()
            .map(ColumnBuilder::finish)
            .collect();
        on_batch(RecordBatch::try_new(Arc::clone(&self.schema), arrays).map_err(AtlasError::from)?)
    }
}
