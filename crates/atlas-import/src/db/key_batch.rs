//! Arrow batches of key columns built value by value, for the key scans that
//! read a database's binary form (PostgreSQL's binary COPY, MySQL/MariaDB's
//! binary protocol): each protocol decodes its own values into the typed
//! builders here; the columns, the schema and the batches are shared.

use std::sync::Arc;

use datafusion::arrow::array::{
    ArrayBuilder, ArrayRef, BooleanBuilder, Date32Builder, Float32Builder, Float64Builder,
    Int16Builder, Int32Builder, Int64Builder, RecordBatch, StringBuilder,
    TimestampMicrosecondBuilder, UInt64Builder,
};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};

use crate::error::{AtlasError, Result};
use crate::schema::TargetColumn;

/// One key column's values as they arrive, typed as the protocol sends them.
pub(crate) enum KeyColumnBuilder {
    Bool(BooleanBuilder),
    Int16(Int16Builder),
    Int32(Int32Builder),
    Int64(Int64Builder),
    UInt64(UInt64Builder),
    Float32(Float32Builder),
    Float64(Float64Builder),
    Date(Date32Builder),
    /// Microseconds, with the column's time zone.
    Timestamp(TimestampMicrosecondBuilder, Option<Arc<str>>),
    Text(StringBuilder),
}

impl KeyColumnBuilder {
    /// A builder of `data_type`'s values: text for a type without a builder
    /// here, microseconds for any timestamp.
    pub(crate) fn new(data_type: &DataType) -> Self {
        match data_type {
            DataType::Boolean => Self::Bool(BooleanBuilder::new()),
            DataType::Int16 => Self::Int16(Int16Builder::new()),
            DataType::Int32 => Self::Int32(Int32Builder::new()),
            DataType::Int64 => Self::Int64(Int64Builder::new()),
            DataType::UInt64 => Self::UInt64(UInt64Builder::new()),
            DataType::Float32 => Self::Float32(Float32Builder::new()),
            DataType::Float64 => Self::Float64(Float64Builder::new()),
            DataType::Date32 => Self::Date(Date32Builder::new()),
            DataType::Timestamp(_, tz) => {
                Self::Timestamp(TimestampMicrosecondBuilder::new(), tz.clone())
            }
            _ => Self::Text(StringBuilder::new()),
        }
    }

    fn data_type(&self) -> DataType {
        match self {
            Self::Bool(_) => DataType::Boolean,
            Self::Int16(_) => DataType::Int16,
            Self::Int32(_) => DataType::Int32,
            Self::Int64(_) => DataType::Int64,
            Self::UInt64(_) => DataType::UInt64,
            Self::Float32(_) => DataType::Float32,
            Self::Float64(_) => DataType::Float64,
            Self::Date(_) => DataType::Date32,
            Self::Timestamp(_, tz) => DataType::Timestamp(TimeUnit::Microsecond, tz.clone()),
            Self::Text(_) => DataType::Utf8,
        }
    }

    pub(crate) fn append_null(&mut self) {
        match self {
            Self::Bool(b) => b.append_null(),
            Self::Int16(b) => b.append_null(),
            Self::Int32(b) => b.append_null(),
            Self::Int64(b) => b.append_null(),
            Self::UInt64(b) => b.append_null(),
            Self::Float32(b) => b.append_null(),
            Self::Float64(b) => b.append_null(),
            Self::Date(b) => b.append_null(),
            Self::Timestamp(b, _) => b.append_null(),
            Self::Text(b) => b.append_null(),
        }
    }

    fn finish(&mut self) -> ArrayRef {
        match self {
            Self::Bool(b) => Arc::new(b.finish()),
            Self::Int16(b) => Arc::new(b.finish()),
            Self::Int32(b) => Arc::new(b.finish()),
            Self::Int64(b) => Arc::new(b.finish()),
            Self::UInt64(b) => Arc::new(b.finish()),
            Self::Float32(b) => Arc::new(b.finish()),
            Self::Float64(b) => Arc::new(b.finish()),
            Self::Date(b) => Arc::new(b.finish()),
            Self::Timestamp(b, tz) => Arc::new(b.finish().with_timezone_opt(tz.clone())),
            Self::Text(b) => Arc::new(b.finish()),
        }
    }

    fn len(&self) -> usize {
        match self {
            Self::Bool(b) => b.len(),
            Self::Int16(b) => b.len(),
            Self::Int32(b) => b.len(),
            Self::Int64(b) => b.len(),
            Self::UInt64(b) => b.len(),
            Self::Float32(b) => b.len(),
            Self::Float64(b) => b.len(),
            Self::Date(b) => b.len(),
            Self::Timestamp(b, _) => b.len(),
            Self::Text(b) => b.len(),
        }
    }
}

/// The rows of key columns being built: one [`KeyColumnBuilder`] per
/// column, named as the columns, handed out as batches.
pub(crate) struct KeyBatchBuilder {
    /// The columns' builders, in key order.
    pub(crate) columns: Vec<KeyColumnBuilder>,
    schema: SchemaRef,
}

impl KeyBatchBuilder {
    /// Builders for `columns`, each of the type `wire_type` says it arrives as.
    pub(crate) fn new(
        columns: &[TargetColumn],
        wire_type: impl Fn(&TargetColumn) -> DataType,
    ) -> Self {
        let builders: Vec<KeyColumnBuilder> = columns
            .iter()
            .map(|c| KeyColumnBuilder::new(&wire_type(c)))
            .collect();
        let schema = Arc::new(Schema::new(
            columns
                .iter()
                .zip(&builders)
                .map(|(c, b)| Field::new(&c.name, b.data_type(), true))
                .collect::<Vec<_>>(),
        ));
        Self {
            columns: builders,
            schema,
        }
    }

    /// Rows built and not handed out yet.
    pub(crate) fn rows(&self) -> usize {
        self.columns.first().map_or(0, KeyColumnBuilder::len)
    }

    /// The rows built so far, as a batch; the builders start again empty.
    pub(crate) fn finish(&mut self) -> Result<RecordBatch> {
        let arrays = self
            .columns
            .iter_mut()
            .map(KeyColumnBuilder::finish)
            .collect();
        RecordBatch::try_new(Arc::clone(&self.schema), arrays).map_err(AtlasError::from)
    }
}
