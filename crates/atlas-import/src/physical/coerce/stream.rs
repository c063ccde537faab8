//! The stream of one [`super::CoerceExec`] partition: [`BatchConverter`]
//! numbers and converts each batch under the bad-value policy, and
//! [`SourceEnd`] says what the source came to when it is exhausted.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use datafusion::arrow::array::{Array, ArrayRef, AsArray, BooleanArray, RecordBatch, UInt64Array};
use datafusion::arrow::compute::filter_record_batch;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::datatypes::UInt64Type;
use datafusion::error::{DataFusionError, Result};
use datafusion::physical_plan::metrics::{
    BaselineMetrics, Count, ExecutionPlanMetricsSet, MetricBuilder,
};

use crate::convert::{coerce_column, coerce_column_lenient};
use crate::error::AtlasError;
use crate::options::OnBadValue;
use crate::physical::run::ImportRun;
use crate::reject::{RejectWriter, Rejection};
use crate::report::ImportMetrics;
use crate::schema::TargetColumn;

/// What a running [`super::CoerceExec`] does with a value that does not fit its
/// column: its [`OnBadValue`] setting, with the import's reject file.
#[derive(Debug, Clone)]
pub(super) enum BadValues {
    /// Fail the import.
    Error,
    /// Write NULL instead.
    Null,
    /// Leave the row out and write it to the reject file.
    Reject(Arc<RejectWriter>),
}

impl BadValues {
    /// `policy` as `run` carries it out.
    pub(super) fn of(policy: &OnBadValue, run: &ImportRun) -> Result<Self> {
        Ok(match policy {
            OnBadValue::Error => BadValues::Error,
            OnBadValue::Null => BadValues::Null,
            OnBadValue::Reject(path) => {
                BadValues::Reject(Arc::clone(run.rejects().ok_or_else(|| {
                    DataFusionError::Internal(format!(
                        "import {} has no reject file for {}",
                        run.id(),
                        path.display()
                    ))
                })?))
            }
        })
    }
}

/// Converts the batches of one [`super::CoerceExec`] partition: numbers the rows,
/// converts each mapped column, and applies the bad-value policy to values
/// that do not fit and to records the reader found malformed.
pub(super) struct BatchConverter {
    pub(super) casts: Vec<(usize, TargetColumn)>,
    /// Output schema: target columns then the row number.
    pub(super) schema: SchemaRef,
    /// The reader's line column in the input, if it has one.
    pub(super) line_column: Option<usize>,
    /// The reader's record-error column in the input, if it has one.
    pub(super) error_column: Option<usize>,
    /// The input's data columns (all but the reader's), for the reject file.
    pub(super) data_columns: Vec<usize>,
    pub(super) bad_values: BadValues,
    pub(super) counters: Arc<ImportMetrics>,
    /// The source names, one per file.
    pub(super) names: Vec<String>,
    pub(super) multi_file: bool,
    /// The row number of the next row, across files.
    pub(super) next_row: u64,
    /// The row number of the next row within each file.
    pub(super) file_first_row: Vec<u64>,
    pub(super) baseline: BaselineMetrics,
    /// The report's counters as operator metrics: where the stages run in
    /// other processes, the client sums these from the job.
    pub(super) counted: ReportCounters,
}

/// The counters of [`crate::report::ImportCounts`] this operator knows, per
/// partition, as operator metrics (`rows_read`, `rejected`, `nulled_values`).
pub(super) struct ReportCounters {
    pub(super) rows_read: Count,
    pub(super) rejected: Count,
    pub(super) nulled_values: Count,
}

impl ReportCounters {
    pub(super) fn new(metrics: &ExecutionPlanMetricsSet, partition: usize) -> Self {
        let counter = |name: &'static str| MetricBuilder::new(metrics).counter(name, partition);
        Self {
            rows_read: counter("rows_read"),
            rejected: counter("rejected"),
            nulled_values: counter("nulled_values"),
        }
    }
}

impl BatchConverter {
    pub(super) fn convert(&mut self, item: Result<(usize, RecordBatch)>) -> Result<RecordBatch> {
        let (file, batch) = item?;
        let timer = self.baseline.elapsed_compute().timer();
        let first_row = self.next_row;
        // The row numbers within the file, for messages.
        let local_first = self.file_first_row[file];
        let n = batch.num_rows();
        self.next_row += n as u64;
        self.file_first_row[file] += n as u64;
        self.counters
            .rows_read
            .fetch_add(n as u64, Ordering::Relaxed);
        self.counted.rows_read.add(n);
        let lines = self
            .line_column
            .map(|i| batch.column(i).as_primitive::<UInt64Type>().clone());
        if let Some(lines) = &lines {
            self.counters.record_lines(first_row, file, lines.values());
        }
        let line_of = |index: usize| lines.as_ref().map(|l| l.value(index));
        let source_name = &self.names[file];
        let mut rejected: Vec<Rejection> = self.malformed_records(&batch, file, local_first)?;
        let mut columns: Vec<ArrayRef> = Vec::with_capacity(self.casts.len() + 1);
        for (input_index, target) in &self.casts {
            let array = batch.column(*input_index);
            let converted = match &self.bad_values {
                BadValues::Error => {
                    coerce_column(array, target).map_err(|failure| AtlasError::BadValue {
                        source_name: source_name.clone(),
                        row: local_first + failure.index as u64,
                        line: line_of(failure.index),
                        column: target.name.clone(),
                        value: failure.value,
                        target_type: target.sql_type.clone(),
                    })?
                }
                lenient => {
                    let (converted, failures) = coerce_column_lenient(array, target);
                    if matches!(lenient, BadValues::Null) {
                        self.counters
                            .nulled
                            .fetch_add(failures.len() as u64, Ordering::Relaxed);
                        self.counted.nulled_values.add(failures.len());
                    }
                    rejected.extend(failures.into_iter().map(|f| Rejection {
                        index: f.index,
                        row: local_first + f.index as u64,
                        line: line_of(f.index),
                        column: target.name.clone(),
                        reason: if self.multi_file {
                            format!(
                                "{source_name}: {:?} is not a valid {}",
                                f.value, target.sql_type
                            )
                        } else {
                            format!("{:?} is not a valid {}", f.value, target.sql_type)
                        },
                    }));
                    converted
                }
            };
            // A NULL in a NOT NULL column with no default is refused here,
            // by file line, rather than by the database at the write.
            if !target.nullable && !target.has_default && converted.null_count() > 0 {
                let mut missing = (0..n).filter(|&i| converted.is_null(i));
                let source_text = |i: usize| {
                    array
                        .as_string_opt::<i32>()
                        .filter(|text| text.is_valid(i))
                        .map_or_else(String::new, |text| text.value(i).to_string())
                };
                let not_null_type = format!("{} (the column is NOT NULL)", target.sql_type);
                match &self.bad_values {
                    BadValues::Reject(_) => rejected.extend(missing.map(|i| Rejection {
                        index: i,
                        row: local_first + i as u64,
                        line: line_of(i),
                        column: target.name.clone(),
                        reason: format!("{:?} is not a valid {not_null_type}", source_text(i)),
                    })),
                    // NULL for a bad value cannot help here: the database
                    // refuses the row.
                    BadValues::Error | BadValues::Null => {
                        if let Some(i) = missing.next() {
                            return Err(AtlasError::BadValue {
                                source_name: source_name.clone(),
                                row: local_first + i as u64,
                                line: line_of(i),
                                column: target.name.clone(),
                                value: source_text(i),
                                target_type: not_null_type,
                            }
                            .into());
                        }
                    }
                }
            }
            columns.push(converted);
        }
        columns.push(Arc::new(UInt64Array::from_iter_values(
            first_row..first_row + n as u64,
        )));
        let mut out = RecordBatch::try_new(Arc::clone(&self.schema), columns)?;
        if let BadValues::Reject(writer) = &self.bad_values
            && !rejected.is_empty()
        {
            // One line per row: its first problem.
            rejected.sort_by_key(|r| r.index);
            rejected.dedup_by_key(|r| r.index);
            writer.write(&batch.project(&self.data_columns)?, &rejected)?;
            self.counters
                .rejected
                .fetch_add(rejected.len() as u64, Ordering::Relaxed);
            self.counted.rejected.add(rejected.len());
            let mut keep = vec![true; n];
            for r in &rejected {
                keep[r.index] = false;
            }
            out = filter_record_batch(&out, &BooleanArray::from(keep))?;
        }
        timer.done();
        self.baseline.record_output(out.num_rows());
        Ok(out)
    }

    /// The records of `batch` the reader found malformed: an error unless
    /// they are rejected (no value can stand for a record that is not one).
    fn malformed_records(
        &self,
        batch: &RecordBatch,
        file: usize,
        local_first: u64,
    ) -> Result<Vec<Rejection>> {
        let Some(errors) = self
            .error_column
            .map(|i| batch.column(i).as_string::<i32>())
        else {
            return Ok(Vec::new());
        };
        if errors.null_count() == errors.len() {
            return Ok(Vec::new());
        }
        let lines = self
            .line_column
            .map(|i| batch.column(i).as_primitive::<UInt64Type>());
        let mut found = Vec::new();
        for index in (0..errors.len()).filter(|&i| errors.is_valid(i)) {
            let message = errors.value(index);
            if !matches!(self.bad_values, BadValues::Reject(_)) {
                return Err(AtlasError::Source {
                    source_name: self.names[file].clone(),
                    message: message.to_string(),
                }
                .into());
            }
            found.push(Rejection {
                index,
                row: local_first + index as u64,
                line: lines.map(|l| l.value(index)),
                column: String::new(),
                reason: if self.multi_file {
                    format!("{}: {message}", self.names[file])
                } else {
                    message.to_string()
                },
            });
        }
        Ok(found)
    }
}

/// What a partition says when its source is exhausted: the rows read, and
/// what the bad-value policy did with them (the reject file is flushed).
pub(super) struct SourceEnd {
    pub(super) counters: Arc<ImportMetrics>,
    pub(super) chunk_rows: u64,
    pub(super) bad_values: BadValues,
    /// The source's data columns, for a reject file's header.
    pub(super) data_schema: SchemaRef,
    /// The files that must have had rows, where this reader says so (a task
    /// of a distributed plan; else the sink does).
    pub(super) files_with_rows: Vec<crate::db::FileRecord>,
}

impl SourceEnd {
    /// Logs the end of the source; an error if the reject file fails.
    pub(super) fn report(self) -> Option<Result<RecordBatch>> {
        let counters = &self.counters;
        counters.source_done.store(true, Ordering::Relaxed);
        let rows = ImportMetrics::get(&counters.rows_read);
        if rows == 0 && !self.files_with_rows.is_empty() {
            let error = crate::physical::sink::no_data_rows(&self.files_with_rows);
            return Some(Err(error.into()));
        }
        tracing::info!(
            "Split {rows} records into {} chunks of {}",
            rows.div_ceil(self.chunk_rows),
            self.chunk_rows
        );
        match &self.bad_values {
            BadValues::Reject(writer) => {
                let rejected = ImportMetrics::get(&counters.rejected);
                if rejected > 0 {
                    tracing::info!(
                        "Rejected {rejected} rows with bad values to {}",
                        writer.path().display()
                    );
                }
                writer
                    .finish(&self.data_schema)
                    .err()
                    .map(|e| Err(e.into()))
            }
            BadValues::Null => {
                let nulled = ImportMetrics::get(&counters.nulled);
                if nulled > 0 {
                    tracing::info!("Set {nulled} bad values to NULL");
                }
                None
            }
            BadValues::Error => None,
        }
    }
}
