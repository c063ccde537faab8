//! [`CoerceExec`]: numbers source rows and converts them to the target types.
//! The operator is here; its stream (the batch converter, the bad-value
//! policy, the end of the source) in `stream.rs`.

mod stream;
#[cfg(test)]
mod tests;

use std::fmt;
use std::sync::Arc;

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

use super::run::{ImportRef, ImportRuns, RunRecipe};
use super::source_ordered_properties;
use crate::error::AtlasError;
use crate::options::OnBadValue;
use crate::report::ImportMetrics;
use crate::schema::{
    RECORD_ERROR_COLUMN, SOURCE_LINE_COLUMN, TargetColumn, coerced_schema, is_reader_column,
};
use stream::{BadValues, BatchConverter, SourceEnd};

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
    pub import: ImportRef,
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
        import: impl Into<ImportRef>,
        casts: Vec<(usize, TargetColumn)>,
        source_name: impl Into<String>,
    ) -> Self {
        Self::from_settings(
            input,
            CoerceSettings {
                import: import.into(),
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

/// Fails when a file of `recipe` no longer has the hash it had when the
/// import was planned (it changed between planning and reading).
async fn verify_files(recipe: &RunRecipe) -> crate::error::Result<()> {
    for (path, file) in recipe.file_paths.iter().zip(&recipe.files) {
        let Some(path) = path else { continue };
        let now = crate::source::sha256_of(path.clone(), file.file_name.clone()).await?;
        if now != file.file_hash {
            return Err(crate::error::AtlasError::Source {
                source_name: file.file_name.clone(),
                message: format!(
                    "the file changed after the import was planned (SHA-256 {} then, {now} \
                     when read); nothing was written",
                    file.file_hash
                ),
            });
        }
    }
    Ok(())
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
        let run = ImportRuns::of_task(&context, &self.settings.import)?;
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
            counted: stream::ReportCounters::new(&self.metrics, partition),
        };
        let data_schema = Arc::new(input_schema.project(&converter.data_columns)?);
        // A file an early look found imported before (see `LateHashes`)
        // stops the reading at its next batch, and the import with it.
        let transaction = run.transaction().ok().map(Arc::clone);
        let converted = input.map(move |item| {
            if let Some(transaction) = &transaction {
                transaction.check_not_imported_before()?;
            }
            converter.convert(item)
        });
        let end = SourceEnd {
            counters: Arc::clone(run.metrics()),
            chunk_rows: self.settings.chunk_rows.max(1) as u64,
            bad_values,
            data_schema,
            files_with_rows: match run.transaction() {
                Ok(transaction) if run.is_stage_local() => transaction.files().to_vec(),
                _ => Vec::new(),
            },
        };
        // A task of a distributed plan reads the files the planner hashed:
        // they must still be those bytes when the reading is done.
        let verified = match &self.settings.import.recipe {
            Some(recipe) if run.is_stage_local() => Some(Arc::clone(recipe)),
            _ => None,
        };
        let finished = futures::stream::once(async move {
            if let Some(recipe) = verified
                && let Err(e) = verify_files(&recipe).await
            {
                return Some(Err(e.into()));
            }
            end.report()
        })
        .filter_map(futures::future::ready);
        Ok(run.task_output(Box::pin(RecordBatchStreamAdapter::new(
            Arc::clone(&self.schema),
            converted.chain(finished),
        ))))
    }

    fn metrics(&self) -> Option<MetricsSet> {
        Some(self.metrics.clone_inner())
    }
}
