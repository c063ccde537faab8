//! [`CoerceExec`]: numbers source rows and converts them to the target types.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use datafusion::arrow::array::{Array, ArrayRef, AsArray, BooleanArray, RecordBatch, UInt64Array};
use datafusion::arrow::compute::filter_record_batch;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::datatypes::UInt64Type;
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::error::{DataFusionError, Result};
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

use super::run::{ImportId, ImportRun, ImportRuns};
use super::source_ordered_properties;
use crate::convert::{coerce_column, coerce_column_lenient};
use crate::error::AtlasError;
use crate::options::OnBadValue;
use crate::reject::{RejectWriter, Rejection};
use crate::report::ImportMetrics;
use crate::schema::{
    RECORD_ERROR_COLUMN, SOURCE_LINE_COLUMN, TargetColumn, coerced_schema, is_reader_column,
};

/// What a running [`CoerceExec`] does with a value that does not fit its
/// column: its [`OnBadValue`] setting, with the import's reject file.
#[derive(Debug, Clone)]
enum BadValues {
    /// Fail the import.
    Error,
    /// Write NULL instead.
    Null,
    /// Leave the row out and write it to the reject file.
    Reject(Arc<RejectWriter>),
}

impl BadValues {
    /// `policy` as `run` carries it out.
    fn of(policy: &OnBadValue, run: &ImportRun) -> Result<Self> {
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
/// Under [`OnBadValue::Error`] (the default) the first value that does not fit
/// fails the plan with [`AtlasError::BadValue`], naming the source, row, column
/// and value. [`OnBadValue::Null`] writes NULL instead; [`OnBadValue::Reject`]
/// leaves the row out (its row number stays unused) and writes it to the
/// import's reject file.
///
/// # Shared state
/// Settings only; the counters and the reject file are the import's
/// [`ImportRun`], found in the `TaskContext` by the import's id.
#[derive(Debug)]
pub struct CoerceExec {
    /// The source plan.
    input: Arc<dyn ExecutionPlan>,
    /// What the operator does (plain data).
    settings: CoerceSettings,
    /// Output schema: target columns then the row number.
    schema: SchemaRef,
    /// Cached plan properties.
    properties: Arc<PlanProperties>,
    /// Operator metrics.
    metrics: ExecutionPlanMetricsSet,
}

/// What a [`CoerceExec`] does, as plain data: with its input, all it needs
/// to be rebuilt ([`CoerceExec::from_settings`]).
#[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct CoerceSettings {
    /// The import whose run holds the counters and the reject file.
    pub import: ImportId,
    /// For each output column: the input column it reads, and the target column.
    pub casts: Vec<(usize, TargetColumn)>,
    /// Source name for error messages.
    pub source_name: String,
    /// The files of a multi-file source (a glob), one per input partition, in
    /// order; empty for a single source.
    pub files: Vec<String>,
    /// Rows per chunk, for the "Split ..." log line.
    pub chunk_rows: usize,
    /// What to do with values that do not fit.
    pub on_bad_value: OnBadValue,
}

impl CoerceExec {
    /// Converts input column `casts[i].0` to `casts[i].1` for every `i`,
    /// for import `import`; a bad value fails it.
    pub fn new(
        input: Arc<dyn ExecutionPlan>,
        import: ImportId,
        casts: Vec<(usize, TargetColumn)>,
        source_name: impl Into<String>,
    ) -> Self {
        Self::from_settings(
            input,
            CoerceSettings {
                import,
                casts,
                source_name: source_name.into(),
                files: Vec::new(),
                chunk_rows: crate::DEFAULT_CHUNK_ROWS,
                on_bad_value: OnBadValue::Error,
            },
        )
    }

    /// The operator `settings` describe, over `input`.
    pub fn from_settings(input: Arc<dyn ExecutionPlan>, settings: CoerceSettings) -> Self {
        let columns: Vec<TargetColumn> = settings.casts.iter().map(|(_, c)| c.clone()).collect();
        let schema = coerced_schema(&columns);
        let properties =
            source_ordered_properties(Arc::clone(&schema), Partitioning::UnknownPartitioning(1));
        Self {
            input,
            settings,
            schema,
            properties,
            metrics: ExecutionPlanMetricsSet::new(),
        }
    }

    /// What the operator does.
    pub fn settings(&self) -> &CoerceSettings {
        &self.settings
    }

    /// A source of several files, one per input partition in this order: the
    /// partitions are read one after another, so row numbers run through the
    /// files in order, and a bad value names its file and its row there.
    pub fn with_files(mut self, files: Vec<String>) -> Self {
        self.settings.files = files;
        self
    }

    fn sequential(&self) -> bool {
        self.settings.files.len() > 1
    }

    /// What to do with values that do not fit (default: fail).
    pub fn with_on_bad_value(mut self, on_bad_value: OnBadValue) -> Self {
        self.settings.on_bad_value = on_bad_value;
        self
    }

    /// Rows per chunk (for the log).
    pub fn with_chunk_rows(mut self, chunk_rows: usize) -> Self {
        self.settings.chunk_rows = chunk_rows.max(1);
        self
    }

    /// The target columns, in output order.
    pub fn target_columns(&self) -> Vec<TargetColumn> {
        self.settings.casts.iter().map(|(_, c)| c.clone()).collect()
    }
}

impl DisplayAs for CoerceExec {
    fn fmt_as(&self, t: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        let casts = self
            .settings
            .casts
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
        let on_bad_value = (self.settings.on_bad_value != OnBadValue::Error)
            .then(|| self.settings.on_bad_value.to_string());
        if t == DisplayFormatType::TreeRender {
            // One `key=value` a line; the box shows the operator's name.
            writeln!(f, "source={}", self.settings.source_name)?;
            writeln!(f, "casts={casts}")?;
            if let Some(policy) = on_bad_value {
                writeln!(f, "on_bad_value={policy}")?;
            }
            return Ok(());
        }
        write!(
            f,
            "CoerceExec: source={}, casts=[{casts}]",
            self.settings.source_name
        )?;
        match on_bad_value {
            None => Ok(()),
            Some(policy) => write!(f, ", on_bad_value={policy}"),
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
        Ok(Arc::new(CoerceExec::from_settings(
            children.swap_remove(0),
            self.settings.clone(),
        )))
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
        let run = ImportRuns::of_task(&context, self.settings.import)?;
        let bad_values = BadValues::of(&self.settings.on_bad_value, &run)?;
        // One input partition per file when several, read in order; else the
        // one partition the requirement guarantees.
        let inputs = if self.sequential() {
            let count = self.input.output_partitioning().partition_count();
            if count != self.settings.files.len() {
                return Err(datafusion::error::DataFusionError::Internal(format!(
                    "CoerceExec: {} files but {count} input partitions",
                    self.settings.files.len()
                )));
            }
            (0..count).collect()
        } else {
            vec![partition]
        };
        let names: Vec<String> = if self.sequential() {
            self.settings.files.clone()
        } else {
            vec![self.settings.source_name.clone()]
        };
        let source_input = Arc::clone(&self.input);
        let starts_metrics = Arc::clone(run.metrics());
        let names_for_errors = names.clone();
        let input = futures::stream::iter(inputs.into_iter().enumerate())
            .map(move |(file, input_partition)| {
                let stream = source_input.execute(input_partition, Arc::clone(&context));
                let start = ImportMetrics::get(&starts_metrics.rows_read) + 1;
                starts_metrics.start_file(file, start);
                let name = names_for_errors[file].clone();
                match stream {
                    Ok(stream) => stream
                        .map(move |b| {
                            b.map(|b| (file, b))
                                .map_err(|e| AtlasError::from_source_read(e, &name).into())
                        })
                        .boxed(),
                    Err(e) => futures::stream::once(async move { Err(e) }).boxed(),
                }
            })
            .flatten();
        let input_schema = self.input.schema();
        let mut converter = BatchConverter {
            casts: self.settings.casts.clone(),
            schema: Arc::clone(&self.schema),
            line_column: input_schema.index_of(SOURCE_LINE_COLUMN).ok(),
            error_column: input_schema.index_of(RECORD_ERROR_COLUMN).ok(),
            data_columns: (0..input_schema.fields().len())
                .filter(|&i| !is_reader_column(input_schema.field(i).name()))
                .collect(),
            bad_values: bad_values.clone(),
            counters: Arc::clone(run.metrics()),
            multi_file: names.len() > 1,
            next_row: 1,
            file_first_row: vec![1; names.len()],
            names,
            baseline: BaselineMetrics::new(&self.metrics, partition),
        };
        let data_schema = Arc::new(input_schema.project(&converter.data_columns)?);
        let end_counters = Arc::clone(run.metrics());
        let chunk_rows = self.settings.chunk_rows.max(1) as u64;
        let end_bad_values = bad_values;
        let converted = input.map(move |item| converter.convert(item));
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
                    writer.finish(&data_schema).err().map(|e| Err(e.into()))
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

/// Converts the batches of one [`CoerceExec`] partition: numbers the rows,
/// converts each mapped column, and applies the bad-value policy to values
/// that do not fit and to records the reader found malformed.
struct BatchConverter {
    casts: Vec<(usize, TargetColumn)>,
    /// Output schema: target columns then the row number.
    schema: SchemaRef,
    /// The reader's line column in the input, if it has one.
    line_column: Option<usize>,
    /// The reader's record-error column in the input, if it has one.
    error_column: Option<usize>,
    /// The input's data columns (all but the reader's), for the reject file.
    data_columns: Vec<usize>,
    bad_values: BadValues,
    counters: Arc<ImportMetrics>,
    /// The source names, one per file.
    names: Vec<String>,
    multi_file: bool,
    /// The row number of the next row, across files.
    next_row: u64,
    /// The row number of the next row within each file.
    file_first_row: Vec<u64>,
    baseline: BaselineMetrics,
}

impl BatchConverter {
    fn convert(&mut self, item: Result<(usize, RecordBatch)>) -> Result<RecordBatch> {
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

#[cfg(test)]
mod tests {
    use crate::schema::ROW_NUMBER_COLUMN;
    use datafusion::arrow::array::{AsArray, StringArray};
    use datafusion::arrow::datatypes::{DataType, Field, Int32Type, Schema, UInt64Type};
    use datafusion::datasource::memory::MemorySourceConfig;
    use datafusion::physical_plan::collect;

    use super::*;
    use crate::key::KeyHasher;
    use crate::physical::ExistingKeys;
    use crate::physical::run::task_running;

    fn age_column() -> TargetColumn {
        TargetColumn {
            name: "age".into(),
            sql_type: "integer".into(),
            data_type: DataType::Int32,
            nullable: true,
            has_default: false,
            max_chars: None,
            text_form: None,
            key_form: None,
        }
    }

    /// `ages` as text, in batches of two rows, into an integer column.
    fn coerce(ages: &[Option<&str>]) -> CoerceExec {
        let schema = Arc::new(Schema::new(vec![Field::new("Age", DataType::Utf8, true)]));
        let batches = ages
            .chunks(2)
            .map(|chunk| {
                RecordBatch::try_new(
                    Arc::clone(&schema),
                    vec![Arc::new(StringArray::from(chunk.to_vec()))],
                )
                .unwrap()
            })
            .collect();
        let input = MemorySourceConfig::try_new_exec(&[batches], schema, None).unwrap();
        CoerceExec::new(
            input,
            ImportId::from_u128(1),
            vec![(0, age_column())],
            "ages.csv",
        )
    }

    /// Runs `exec` as import 1, counting in `metrics`.
    async fn run(
        exec: CoerceExec,
        metrics: &Arc<ImportMetrics>,
    ) -> Result<(Vec<Option<i32>>, Vec<u64>)> {
        let existing = ExistingKeys::none("none", KeyHasher::random());
        let run = ImportRun::new(ImportId::from_u128(1), existing, Arc::clone(metrics));
        let (task, _running) = task_running(run);
        let batches = collect(Arc::new(exec), task).await?;
        let mut ages = Vec::new();
        let mut rows = Vec::new();
        for batch in &batches {
            ages.extend(batch.column(0).as_primitive::<Int32Type>().iter());
            rows.extend(batch.column(1).as_primitive::<UInt64Type>().values().iter());
        }
        Ok((ages, rows))
    }

    #[tokio::test]
    async fn numbers_rows_across_batches_and_converts_values() {
        let metrics = Arc::new(ImportMetrics::default());
        let exec = coerce(&[Some("007"), None, Some(" 42 "), Some("-1"), Some("5")]);
        assert_eq!(
            exec.schema().field(1).name(),
            ROW_NUMBER_COLUMN,
            "the row number comes last"
        );
        let (ages, rows) = run(exec, &metrics).await.unwrap();
        assert_eq!(ages, [Some(7), None, Some(42), Some(-1), Some(5)]);
        assert_eq!(rows, [1, 2, 3, 4, 5]);
        assert_eq!(ImportMetrics::get(&metrics.rows_read), 5);
    }

    #[tokio::test]
    async fn a_bad_value_names_its_row_column_and_value() {
        let metrics = Arc::new(ImportMetrics::default());
        let exec = coerce(&[Some("1"), Some("2"), Some("3"), Some("three")]);
        let err = AtlasError::from_datafusion(run(exec, &metrics).await.unwrap_err());
        match err {
            AtlasError::BadValue {
                source_name,
                row,
                column,
                value,
                ..
            } => assert_eq!(
                (source_name.as_str(), row, column.as_str(), value.as_str()),
                ("ages.csv", 4, "age", "three")
            ),
            other => panic!("not a bad value: {other}"),
        }
    }

    #[tokio::test]
    async fn bad_values_can_become_null() {
        let metrics = Arc::new(ImportMetrics::default());
        let exec = coerce(&[Some("1"), Some("x"), Some("3")]).with_on_bad_value(OnBadValue::Null);
        let (ages, rows) = run(exec, &metrics).await.unwrap();
        assert_eq!(ages, [Some(1), None, Some(3)]);
        assert_eq!(rows, [1, 2, 3]);
        assert_eq!(ImportMetrics::get(&metrics.nulled), 1);
    }

    #[tokio::test]
    async fn a_plan_without_its_run_says_so() {
        let exec = coerce(&[Some("1")]);
        let err = collect(Arc::new(exec), Arc::new(TaskContext::default()))
            .await
            .unwrap_err();
        assert!(
            err.to_string().contains("is not running in this session"),
            "{err}"
        );
    }
}
