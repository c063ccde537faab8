//! Sources read record by record into all-text columns (JSON documents,
//! spreadsheets, XML), like CSV: every field is kept as the text it was, and
//! [`crate::physical::CoerceExec`] converts it to the target type with the row
//! and column of any bad value.

mod json;
mod xlsx;
mod xml;

pub(crate) use json::{read_json_document, read_json_lines};
pub(crate) use xlsx::read_xlsx;
pub(crate) use xml::read_xml;

use std::collections::HashMap;
use std::sync::Arc;

use datafusion::arrow::array::{RecordBatch, StringBuilder};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};

use crate::error::{AtlasError, Result};

/// Rows per batch.
const BATCH_ROWS: usize = 8192;

/// Collects records whose fields are discovered as they come (a JSON object or
/// an XML element may add a field the earlier ones lacked), in first-seen
/// column order; missing fields are NULL.
#[derive(Debug, Default)]
pub(crate) struct TextRecords {
    names: Vec<String>,
    index: HashMap<String, usize>,
    /// Finished rows, each as (column, value) pairs.
    rows: Vec<Vec<(usize, Option<String>)>>,
    current: Vec<(usize, Option<String>)>,
}

impl TextRecords {
    /// A collector whose columns are fixed up front (a spreadsheet header).
    pub(crate) fn with_columns(names: Vec<String>) -> Self {
        let mut records = Self::default();
        for name in names {
            records.column(&name);
        }
        records
    }

    fn column(&mut self, name: &str) -> usize {
        if let Some(&i) = self.index.get(name) {
            return i;
        }
        let i = self.names.len();
        self.names.push(name.to_string());
        self.index.insert(name.to_string(), i);
        i
    }

    /// Sets a field of the current record.
    pub(crate) fn field(&mut self, name: &str, value: Option<String>) {
        let column = self.column(name);
        self.current.push((column, value));
    }

    /// Sets a field of the current record by column index.
    pub(crate) fn field_at(&mut self, column: usize, value: Option<String>) {
        self.current.push((column, value));
    }

    /// Ends the current record.
    pub(crate) fn end_record(&mut self) {
        let record = std::mem::take(&mut self.current);
        self.rows.push(record);
    }

    /// Number of finished records.
    pub(crate) fn len(&self) -> usize {
        self.rows.len()
    }

    /// The column names so far.
    pub(crate) fn names(&self) -> &[String] {
        &self.names
    }

    /// The records as batches of Utf8 columns.
    pub(crate) fn into_batches(self, source: &str) -> Result<(SchemaRef, Vec<RecordBatch>)> {
        if self.names.is_empty() {
            return Err(AtlasError::Source {
                source_name: source.to_string(),
                message: "no records with fields were found".into(),
            });
        }
        // The same rule as for a CSV header: a name is never a control character.
        for (i, name) in self.names.iter().enumerate() {
            if let Some(c) = name.chars().find(|c| c.is_control()) {
                return Err(AtlasError::Source {
                    source_name: source.to_string(),
                    message: format!(
                        "the name of column {} contains the control character U+{:04X}",
                        i + 1,
                        u32::from(c)
                    ),
                });
            }
        }
        let schema: SchemaRef = Arc::new(Schema::new(
            self.names
                .iter()
                .map(|n| Field::new(n, DataType::Utf8, true))
                .collect::<Vec<_>>(),
        ));
        let width = self.names.len();
        let mut batches = Vec::with_capacity(self.rows.len().div_ceil(BATCH_ROWS));
        for chunk in self.rows.chunks(BATCH_ROWS) {
            let mut builders: Vec<StringBuilder> =
                (0..width).map(|_| StringBuilder::new()).collect();
            let mut row = vec![None; width];
            for record in chunk {
                row.iter_mut().for_each(|v| *v = None);
                for (column, value) in record {
                    row[*column] = value.as_deref();
                }
                for (builder, value) in builders.iter_mut().zip(&row) {
                    builder.append_option(*value);
                }
            }
            let columns = builders
                .iter_mut()
                .map(|b| Arc::new(b.finish()) as _)
                .collect();
            batches.push(
                RecordBatch::try_new(Arc::clone(&schema), columns).map_err(AtlasError::from)?,
            );
        }
        Ok((schema, batches))
    }
}
