//! [`CoerceExec`]: numbers source rows and converts them to the target types.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use datafusion::arrow::array::{ArrayRef, BooleanArray, RecordBatch, UInt64Array};
use datafusion::arrow::compute::filter_record_batch;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::error::Result;
use datafusion::execution::TaskContext;
use datafusion::physical_expr::{Distribution, OrderingRequirements, PhysicalExpr};
use datafusion::physical_plan::distribution_requirements::InputDistributionRequirements;
use datafusion::physical_plan::metrics::{BaselineMetrics, ExecutionPlanMetricsSet, MetricsSet};
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{
    ChildrenPropertiesMode, DisplayAs, DisplayFormatType, ExecutionPlan, ExecutionPlanProperties,
    Partitioning, PlanProperties, ReplaceChildrenOptions, SendableRecordBatchStream,
};
use futures::StreamExt;

use super::source_ordered_properties;
use crate::coerce::{coerce_column, coerce_column_lenient};
use crate::error::AtlasError;
use crate::reject::{RejectWriter, Rejection};
use crate::report::ImportMetrics;
use crate::schema::{TargetColumn, coerced_schema};

/// What [`CoerceExec`] does with a value that does not fit its column.
#[derive(Debug, Clone, Default)]
pub enum BadValues {
    /// Fail the import.
    #[default]
    Error,
    /// Write NULL instead.
    Null,
    /// Leave the row out and write it to the reject file.
    Reject(Arc<RejectWriter>),
}

/// Numbers the rows of its input (1-based, in input order) and converts each
/// mapped column to its target column's type.
///
/// ```text
///  source batch (any types)        output batch
///  +--------+-------+              +-------+--------+--------------------+
///  | E-mail | age   |   ------->   | email | age    | __atlas_source_row |
///  | "a@x"  | "007" |              | "a@x" | 7 (i32)| 1                  |
///  +--------+-------+              +-------+--------+--------------------+
/// ```
///
/// # Partitioning
/// Requires a single input partition so that row numbers are source row numbers
/// and the output stays in source order; [`super::DuplicateCheckExec`] relies on
/// that order to keep the *first* occurrence of a key.
///
/// # Bad values
/// Under [`BadValues::Error`] (the default) the first value that does not fit
/// fails the plan with [`AtlasError::BadValue`], naming the source, row, column
/// and value. [`BadValues::Null`] writes NULL instead; [`BadValues::Reject`]
/// leaves the row out (its row number stays unused) and writes it to the
/// reject file.
#[derive(Debug)]
pub struct CoerceExec {
    /// The source plan.
    input: Arc<dyn ExecutionPlan>,
    /// For each output column: the input column it reads, and the target column.
    mapping: Vec<(usize, TargetColumn)>,
    /// Source name for error messages.
    source_name: String,
    /// The files of a multi-file source (a glob), one per input partition, in
    /// order; empty for a single source.
    files: Vec<String>,
    /// Rows per chunk, for the "Split ..." log line.
    chunk_rows: usize,
    /// Live counters of the import.
    import_metrics: Arc<ImportMetrics>,
    /// What to do with values that do not fit.
    bad_values: BadValues,
    /// Output schema: target columns then the row number.
    schema: SchemaRef,
    /// Cached plan properties.
    properties: Arc<PlanProperties>,
    /// Operator metrics.
    metrics: ExecutionPlanMetricsSet,
}

impl CoerceExec {
    /// Converts input column `mapping[i].0` to `mapping[i].1` for every `i`.
    pub fn new(
        input: Arc<dyn ExecutionPlan>,
        mapping: Vec<(usize, TargetColumn)>,
        source_name: impl Into<String>,
        chunk_rows: usize,
        import_metrics: Arc<ImportMetrics>,
    ) -> Self {
        let columns: Vec<TargetColumn> = mapping.iter().map(|(_, c)| c.clone()).collect();
        let schema = coerced_schema(&columns);
        let properties =
            source_ordered_properties(Arc::clone(&schema), Partitioning::UnknownPartitioning(1));
        Self {
            input,
            mapping,
            source_name: source_name.into(),
            files: Vec::new(),
            chunk_rows,
            import_metrics,
            bad_values: BadValues::Error,
            schema,
            properties,
            metrics: ExecutionPlanMetricsSet::new(),
        }
    }

    /// A source of several files, one per input partition in this order: the
    /// partitions are read one after another, so row numbers run through the
    /// files in order, and a bad value names its file and its row there.
    pub fn with_files(mut self, files: Vec<String>) -> Self {
        self.files = files;
        self
    }

    fn sequential(&self) -> bool {
        self.files.len() > 1
    }

    /// What to do with values that do not fit (default: fail).
    pub fn with_bad_values(mut self, bad_values: BadValues) -> Self {
        self.bad_values = bad_values;
        self
    }

    /// The target columns, in output order.
    pub fn target_columns(&self) -> Vec<TargetColumn> {
        self.mapping.iter().map(|(_, c)| c.clone()).collect()
    }
}

impl DisplayAs for CoerceExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        let casts = self
            .mapping
            .iter()
            .map(|(i, c)| {
                format!(
                    "{}->{} {}",
                    self.input.schema().field(*i).name(),
                    c.name,
                    c.data_type
                )
            })
            .collect::<Vec<_>>()
            .join(", ");
        write!(
            f,
            "CoerceExec: source={}, casts=[{casts}]",
            self.source_name
        )?;
        match &self.bad_values {
            BadValues::Error => Ok(()),
            BadValues::Null => write!(f, ", on_bad_value=null"),
            BadValues::Reject(w) => write!(f, ", on_bad_value=reject to {}", w.path().display()),
        }
    }
}

impl ExecutionPlan for CoerceExec {
    fn name(&self) -> &str {
        "CoerceExec"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        &self.properties
    }

    fn input_distribution_requirements(&self) -> InputDistributionRequirements {
        InputDistributionRequirements::new(vec![if self.sequential() {
            Distribution::UnspecifiedDistribution
        } else {
            Distribution::SinglePartition
        }])
    }

    fn maintains_input_order(&self) -> Vec<bool> {
        vec![true]
    }

    /// Source order is the order the source plan produces (an `ORDER BY` of a
    /// `FROM (query)`): requiring it keeps the optimizer from dropping that sort.
    fn required_input_ordering(&self) -> Vec<Option<OrderingRequirements>> {
        vec![
            self.input
                .output_ordering()
                .cloned()
                .map(OrderingRequirements::from),
        ]
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![&self.input]
    }

    fn apply_expressions(
        &self,
        _f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> Result<TreeNodeRecursion>,
    ) -> Result<TreeNodeRecursion> {
        Ok(TreeNodeRecursion::Continue)
    }

    fn replace_children(
        self: Arc<Self>,
        mut children: Vec<Arc<dyn ExecutionPlan>>,
        _options: ReplaceChildrenOptions,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        Ok(Arc::new(
            CoerceExec::new(
                children.swap_remove(0),
                self.mapping.clone(),
                self.source_name.clone(),
                self.chunk_rows,
                Arc::clone(&self.import_metrics),
            )
            .with_bad_values(self.bad_values.clone())
            .with_files(self.files.clone()),
        ))
    }

    fn with_new_children(
        self: Arc<Self>,
        children: Vec<Arc<dyn ExecutionPlan>>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        self.replace_children(
            children,
            ReplaceChildrenOptions::new(ChildrenPropertiesMode::Recompute),
        )
    }

    fn execute(
        &self,
        partition: usize,
        context: Arc<TaskContext>,
    ) -> Result<SendableRecordBatchStream> {
        // One input partition per file when several, read in order; else the
        // one partition the requirement guarantees.
        let inputs = if self.sequential() {
            let count = self.input.output_partitioning().partition_count();
            if count != self.files.len() {
                return Err(datafusion::error::DataFusionError::Internal(format!(
                    "CoerceExec: {} files but {count} input partitions",
                    self.files.len()
                )));
            }
            (0..count).collect()
        } else {
            vec![partition]
        };
        let names: Vec<String> = if self.sequential() {
            self.files.clone()
        } else {
            vec![self.source_name.clone()]
        };
        let source_input = Arc::clone(&self.input);
        let starts_metrics = Arc::clone(&self.import_metrics);
        let input = futures::stream::iter(inputs.into_iter().enumerate())
            .map(move |(file, input_partition)| {
                let stream = source_input.execute(input_partition, Arc::clone(&context));
                let start = ImportMetrics::get(&starts_metrics.rows_read) + 1;
                starts_metrics.start_file(file, start);
                match stream {
                    Ok(stream) => stream.map(move |b| b.map(|b| (file, b))).boxed(),
                    Err(e) => futures::stream::once(async move { Err(e) }).boxed(),
                }
            })
            .flatten();
        let baseline = BaselineMetrics::new(&self.metrics, partition);
        let schema = Arc::clone(&self.schema);
        let mapping = self.mapping.clone();
        let counters = Arc::clone(&self.import_metrics);
        let end_counters = Arc::clone(&self.import_metrics);
        let chunk_rows = self.chunk_rows.max(1) as u64;
        let mut next_row: u64 = 1;
        let bad_values = self.bad_values.clone();
        let end_bad_values = self.bad_values.clone();
        let input_schema = self.input.schema();
        let mut file_first_row: Vec<u64> = vec![1; names.len()];
        let mut current_file = 0usize;
        let multi_file = names.len() > 1;
        let converted = input.map(move |item| {
            let (file, batch) = match item {
                Ok(item) => item,
                Err(e) => return Err(AtlasError::from_source_read(e, &names[current_file]).into()),
            };
            current_file = file;
            let source_name = &names[file];
            let timer = baseline.elapsed_compute().timer();
            let first_row = next_row;
            // The row numbers within the file, for messages.
            let local_first = file_first_row[file];
            let n = batch.num_rows();
            next_row += n as u64;
            file_first_row[file] += n as u64;
            counters.rows_read.fetch_add(n as u64, Ordering::Relaxed);
            let mut columns: Vec<ArrayRef> = Vec::with_capacity(mapping.len() + 1);
            let mut rejected: Vec<Rejection> = Vec::new();
            for (input_index, target) in &mapping {
                let array = batch.column(*input_index);
                let converted = match &bad_values {
                    BadValues::Error => {
                        coerce_column(array, target).map_err(|failure| AtlasError::BadValue {
                            source_name: source_name.clone(),
                            row: local_first + failure.index as u64,
                            column: target.name.clone(),
                            value: failure.value,
                            target_type: target.sql_type.clone(),
                        })?
                    }
                    lenient => {
                        let (converted, failures) = coerce_column_lenient(array, target);
                        if matches!(lenient, BadValues::Null) {
                            counters
                                .nulled
                                .fetch_add(failures.len() as u64, Ordering::Relaxed);
                        }
                        rejected.extend(failures.into_iter().map(|f| Rejection {
                            index: f.index,
                            row: local_first + f.index as u64,
                            column: target.name.clone(),
                            reason: if multi_file {
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
                columns.push(converted);
            }
            columns.push(Arc::new(UInt64Array::from_iter_values(
                first_row..first_row + n as u64,
            )));
            let mut out = RecordBatch::try_new(Arc::clone(&schema), columns)?;
            if let BadValues::Reject(writer) = &bad_values
                && !rejected.is_empty()
            {
                // One line per row: its first bad value.
                rejected.sort_by_key(|r| r.index);
                rejected.dedup_by_key(|r| r.index);
                writer.write(&batch, &rejected)?;
                counters
                    .rejected
                    .fetch_add(rejected.len() as u64, Ordering::Relaxed);
                let mut keep = vec![true; n];
                for r in &rejected {
                    keep[r.index] = false;
                }
                out = filter_record_batch(&out, &BooleanArray::from(keep))?;
            }
            timer.done();
            baseline.record_output(out.num_rows());
            Ok(out)
        });
        let finished = futures::stream::once(async move {
            end_counters.source_done.store(true, Ordering::Relaxed);
            let rows = ImportMetrics::get(&end_counters.rows_read);
            tracing::info!(
                "Split {rows} records into {} chunks of {chunk_rows}",
                rows.div_ceil(chunk_rows)
            );
            match &end_bad_values {
                BadValues::Reject(writer) => {
                    let rejected = ImportMetrics::get(&end_counters.rejected);
                    if rejected > 0 {
                        tracing::info!(
                            "Rejected {rejected} rows with bad values to {}",
                            writer.path().display()
                        );
                    }
                    writer.finish(&input_schema).err().map(|e| Err(e.into()))
                }
                BadValues::Null => {
                    let nulled = ImportMetrics::get(&end_counters.nulled);
                    if nulled > 0 {
                        tracing::info!("Set {nulled} bad values to NULL");
                    }
                    None
                }
                BadValues::Error => None,
            }
        })
        .filter_map(futures::future::ready);
        Ok(Box::pin(RecordBatchStreamAdapter::new(
            Arc::clone(&self.schema),
            converted.chain(finished),
        )))
    }

    fn metrics(&self) -> Option<MetricsSet> {
        Some(self.metrics.clone_inner())
    }
}
