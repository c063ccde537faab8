//! [`DuplicateCheckExec`]: finds rows whose key exists in the target or repeats
//! inside the import.

mod existing;
pub(crate) mod key_expr;
mod keys_exec;
mod share;
mod stream;

pub use existing::{ExistingKeyLoader, ExistingKeys, KeyLookup, KnownKeys, SEVERAL_ROWS};
pub(crate) use keys_exec::key_schema;
pub use keys_exec::{ExistingKeysExec, ExistingKeysSettings};
pub use share::{KeyPartitioner, KeyShare};

use std::fmt;
use std::sync::Arc;

use datafusion::arrow::datatypes::{DataType, Field, FieldRef, Schema, SchemaRef};
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::error::{DataFusionError, Result};
use datafusion::execution::TaskContext;
use datafusion::execution::memory_pool::{MemoryConsumer, MemoryLimit};
use datafusion::physical_expr::expressions::Column;
use datafusion::physical_expr::{Distribution, PhysicalExpr};
use datafusion::physical_plan::distribution_requirements::InputDistributionRequirements;
use datafusion::physical_plan::metrics::{
    BaselineMetrics, ExecutionPlanMetricsSet, MetricBuilder, MetricsSet,
};
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{
    ChildrenPropertiesMode, DisplayAs, DisplayFormatType, ExecutionPlan, ExecutionPlanProperties,
    PlanProperties, ReplaceChildrenOptions, SendableRecordBatchStream,
};

use super::run::{ImportRef, ImportRuns};
use super::source_ordered_properties;
use crate::key::KeyEncoder;
use crate::key_form::KeyForm;
use crate::options::OnDuplicate;
use crate::schema::ROW_NUMBER_COLUMN;
use key_expr::KeyFormExpr;
use stream::{CheckAccounting, CheckSettings, CheckStream, PartitionCheck, Phase};

/// Compares every row with the rows already in the table and with the rest of
/// the import, and emits the rows to write.
///
/// ```text
///            ImportSink (1 partition, one bulk write)
///                     ^
///   SortPreservingMergeExec (row number: back into source order)
///        ^        ^        ^        ^
///   +---------+---------+---------+---------+
///   | check 0 | check 1 | check 2 | check 3 |  fingerprints of the import's
///   +---------+---------+---------+---------+  keys, per partition
///        \         \       /         /
///         +-- ExistingKeys (one task, shared, read-only) --+
///               preload: every key of the table
///               probe: the partitions send one key column's values,
///                      the database returns the rows sharing them
///        ^        ^        ^        ^
///        RepartitionExec: Hash(key, 4)   (every occurrence of a key meets
///                     ^                   in one partition)
///                CoerceExec (source order, row numbers)
/// ```
///
/// # Partitioning
/// Requires its input hash-partitioned on the key
/// ([`Distribution::KeyPartitioned`]); the optimizer's `EnsureRequirements` inserts
/// the `RepartitionExec`. Each partition receives its rows in source order (the
/// repartition has one ordered input), so "first occurrence" is the first row seen;
/// the operator verifies that order and fails loudly if it is ever broken.
///
/// # Shared state
/// The operator holds settings only. The import's [`ExistingKeys`] live in
/// its [`super::ImportRun`], found in the `TaskContext` by the import's id:
/// learned once per import ([`KeyLookup`] says how), on a task of its own,
/// and shared. Each partition keeps the fingerprints of the import's keys it
/// has seen, accounted in the memory pool.
///
/// # When rows wait
/// `ON DUPLICATE ERROR` rows go on at once: the sink writes while the
/// existing keys are still being read, and the verdict (existing duplicates
/// found at the end) decides commit or rollback. `SKIP` and `UPDATE` rows need
/// their verdict first, so a partition holds them until the existing keys are
/// known (preload: the table's keys are read; probe: every partition has sent
/// its values and the database has answered).
///
/// # Keys shuffled to the check (distributed imports)
/// With a second input ([`Self::with_existing_input`], an
/// [`ExistingKeysExec`]) the table's keys reach each partition through a
/// shuffle of their own, hashed on the same key expressions as the rows: a
/// partition fingerprints the keys it receives, all of those its rows can
/// meet, and no others. The table is read once, and each task of a cluster
/// holds its share.
///
/// # Output
/// `ON DUPLICATE SKIP`: the rows whose key is new, first occurrence kept.
/// `ON DUPLICATE ERROR`: the rows while no duplicate has been seen anywhere; once
/// one is, nothing more (the sink will refuse the import), but counting goes on so
/// the report is complete.
/// `ON DUPLICATE UPDATE`: every row, with an [`UPDATE_COLUMN`] flag (before the
/// row number) that is true when the key exists or occurred earlier in the
/// import, and a [`LOCATION_COLUMN`] with the existing row's location where
/// the loader read locations; the sink inserts the others and applies these in
/// source order, so the last occurrence wins.
#[derive(Debug)]
pub struct DuplicateCheckExec {
    /// Input, hash-partitioned on the key.
    input: Arc<dyn ExecutionPlan>,
    /// The table's keys, hash-partitioned as `input` (a distributed import's).
    existing: Option<Arc<dyn ExecutionPlan>>,
    /// What the operator does (plain data).
    settings: DuplicateCheckSettings,
    /// Cached plan properties (partitioning of the input).
    properties: Arc<PlanProperties>,
    /// Operator metrics.
    metrics: ExecutionPlanMetricsSet,
}

/// What a [`DuplicateCheckExec`] does, as plain data: with its input, all it
/// needs to be rebuilt ([`DuplicateCheckExec::try_from_settings`]).
#[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct DuplicateCheckSettings {
    /// The import whose run holds the existing keys and the counters.
    pub import: ImportRef,
    /// Key column indices in the input schema, in key order.
    pub key_columns: Vec<usize>,
    /// Per key column, the form its values compare in (see [`KeyForm`]).
    pub key_forms: Vec<Option<KeyForm>>,
    /// How the keys already in the target are learned.
    pub lookup: KeyLookup,
    /// What the existing keys are and why this lookup (for `EXPLAIN`).
    pub existing: String,
    /// What to do with duplicates.
    pub on_duplicate: OnDuplicate,
    /// Rows per source chunk, for counting chunks with duplicates.
    pub chunk_rows: usize,
    /// Emit the duplicates (with a `duplicate_of` column) instead of the rows
    /// to write: the dry run of `CHECK IMPORT`.
    pub report_duplicates: bool,
    /// The rows the import is expected to hold (an estimate from the
    /// source's size), where known: each partition sizes its set of the
    /// import's keys for its share up front instead of doubling it as it
    /// fills.
    #[serde(default)]
    pub expected_rows: Option<u64>,
}

impl DuplicateCheckExec {
    /// Checks `input` of import `import` on the columns at `key_columns`,
    /// under `ON DUPLICATE ERROR`, with no existing keys, in chunks of
    /// [`crate::DEFAULT_CHUNK_ROWS`] unless told otherwise.
    pub fn try_new(
        input: Arc<dyn ExecutionPlan>,
        import: impl Into<ImportRef>,
        key_columns: Vec<usize>,
    ) -> Result<Self> {
        let key_forms = vec![None; key_columns.len()];
        Self::try_from_settings(
            input,
            DuplicateCheckSettings {
                import: import.into(),
                key_columns,
                key_forms,
                lookup: KeyLookup::Nothing,
                existing: "none".into(),
                on_duplicate: OnDuplicate::Error,
                chunk_rows: crate::DEFAULT_CHUNK_ROWS,
                report_duplicates: false,
                expected_rows: None,
            },
        )
    }

    /// The operator `settings` describe, over `input`; fails when they do
    /// not fit it (key columns out of range, no row number column, key
    /// forms not one per key column).
    pub fn try_from_settings(
        input: Arc<dyn ExecutionPlan>,
        settings: DuplicateCheckSettings,
    ) -> Result<Self> {
        let schema = input.schema();
        if schema.index_of(ROW_NUMBER_COLUMN).is_err() {
            return Err(DataFusionError::Plan(format!(
                "DuplicateCheckExec needs the {ROW_NUMBER_COLUMN} column of CoerceExec in its input"
            )));
        }
        let key_columns = &settings.key_columns;
        if key_columns.is_empty() || key_columns.iter().any(|&c| c >= schema.fields().len()) {
            return Err(DataFusionError::Plan(format!(
                "DuplicateCheckExec: invalid key columns {key_columns:?}"
            )));
        }
        if settings.key_forms.len() != key_columns.len() {
            return Err(DataFusionError::Plan(format!(
                "DuplicateCheckExec: {} key forms for {} key columns",
                settings.key_forms.len(),
                key_columns.len()
            )));
        }
        let properties =
            output_properties(&input, settings.on_duplicate, settings.report_duplicates);
        Ok(Self {
            input,
            existing: None,
            settings,
            properties,
            metrics: ExecutionPlanMetricsSet::new(),
        })
    }

    /// What the operator does.
    pub fn settings(&self) -> &DuplicateCheckSettings {
        &self.settings
    }

    /// Receives the table's keys from `existing` (key columns in key order,
    /// typed as the table holds them), partitioned as the rows are, instead
    /// of from the import's run; fails when its columns do not fit the key.
    pub fn with_existing_input(mut self, existing: Arc<dyn ExecutionPlan>) -> Result<Self> {
        let schema = self.input.schema();
        let fits = existing.schema().fields().len() == self.settings.key_columns.len()
            && self
                .settings
                .key_columns
                .iter()
                .zip(existing.schema().fields())
                .all(|(&i, field)| schema.field(i).data_type() == field.data_type());
        if !fits {
            return Err(DataFusionError::Plan(format!(
                "DuplicateCheckExec: the existing keys' columns {} do not fit the key",
                existing.schema()
            )));
        }
        self.existing = Some(existing);
        Ok(self)
    }

    /// The input of the table's keys, if they come as one.
    pub fn existing_input(&self) -> Option<&Arc<dyn ExecutionPlan>> {
        self.existing.as_ref()
    }

    /// Learns the keys already in the table by `lookup`; `description` says
    /// what they are and why (for `EXPLAIN`).
    pub fn with_lookup(mut self, lookup: KeyLookup, description: impl Into<String>) -> Self {
        self.settings.lookup = lookup;
        self.settings.existing = description.into();
        self
    }

    /// What to do with duplicates.
    pub fn with_on_duplicate(mut self, on_duplicate: OnDuplicate) -> Self {
        self.settings.on_duplicate = on_duplicate;
        self.properties =
            output_properties(&self.input, on_duplicate, self.settings.report_duplicates);
        self
    }

    /// Rows per source chunk (at least 1), for counting chunks with duplicates.
    pub fn with_chunk_rows(mut self, chunk_rows: usize) -> Self {
        self.settings.chunk_rows = chunk_rows.max(1);
        self
    }

    /// Sizes the partitions' sets of the import's keys for `rows` rows in
    /// all (an estimate; `None`: grown as they fill).
    pub fn with_expected_rows(mut self, rows: Option<u64>) -> Self {
        self.settings.expected_rows = rows;
        self
    }

    /// Compares key column `i` in `forms[i]` where it is given: the
    /// partitioning and the keys of the check follow it.
    pub fn with_key_forms(self, forms: Vec<Option<KeyForm>>) -> Result<Self> {
        let settings = DuplicateCheckSettings {
            key_forms: forms,
            ..self.settings
        };
        Self::try_from_settings(self.input, settings)
    }

    /// The encoder of this check's keys.
    fn key_encoder(&self) -> KeyEncoder {
        KeyEncoder::new(self.settings.key_columns.clone())
            .with_forms(self.settings.key_forms.clone())
    }

    /// Emits the duplicate rows instead of the rows to write, each with a
    /// `duplicate_of` column (`existing`, or `row N` for the first occurrence
    /// in the import), placed before the source row number.
    pub fn with_report_duplicates(mut self, report: bool) -> Self {
        self.settings.report_duplicates = report;
        self.properties = output_properties(&self.input, self.settings.on_duplicate, report);
        self
    }

    fn key_exprs(&self) -> Vec<Arc<dyn PhysicalExpr>> {
        key_exprs(
            &self.input.schema(),
            &self.settings.key_columns,
            &self.settings.key_forms,
        )
    }

    /// The key expressions over the existing keys' input (its columns are
    /// the key's, in key order), which hash as [`Self::key_exprs`] do.
    fn existing_key_exprs(&self, existing: &Arc<dyn ExecutionPlan>) -> Vec<Arc<dyn PhysicalExpr>> {
        let columns: Vec<usize> = (0..self.settings.key_columns.len()).collect();
        key_exprs(&existing.schema(), &columns, &self.settings.key_forms)
    }
}

/// The columns at `columns` of `schema`, each in its key form where it has one.
fn key_exprs(
    schema: &SchemaRef,
    columns: &[usize],
    forms: &[Option<KeyForm>],
) -> Vec<Arc<dyn PhysicalExpr>> {
    columns
        .iter()
        .zip(forms)
        .map(|(&i, form)| {
            let column = Arc::new(Column::new(schema.field(i).name(), i));
            match form {
                Some(form) => Arc::new(KeyFormExpr::new(column, *form)) as Arc<dyn PhysicalExpr>,
                None => column,
            }
        })
        .collect()
}

/// The plan properties of the check's output over `input`: its partitioning,
/// source order, and the input's columns (with one more under `ON DUPLICATE
/// UPDATE`, and in a dry run).
fn output_properties(
    input: &Arc<dyn ExecutionPlan>,
    on_duplicate: OnDuplicate,
    report_duplicates: bool,
) -> Arc<PlanProperties> {
    let schema = input.schema();
    let schema = if report_duplicates {
        duplicates_schema(&schema)
    } else if on_duplicate == OnDuplicate::Update {
        let flagged =
            with_column_before_row(&schema, Field::new(UPDATE_COLUMN, DataType::Boolean, false));
        with_column_before_row(
            &flagged,
            Field::new(LOCATION_COLUMN, DataType::UInt64, true),
        )
    } else {
        schema
    };
    source_ordered_properties(schema, input.output_partitioning().clone())
}

/// The input's columns with `field` inserted before the source row number.
fn with_column_before_row(input: &SchemaRef, field: Field) -> SchemaRef {
    let mut fields: Vec<FieldRef> = input.fields().iter().cloned().collect();
    let row = fields.pop().expect("the row number column");
    fields.push(Arc::new(field));
    fields.push(row);
    Arc::new(Schema::new(fields))
}

/// The output schema of the dry run: the input's columns with `duplicate_of`
/// inserted before the source row number.
pub(crate) fn duplicates_schema(input: &SchemaRef) -> SchemaRef {
    with_column_before_row(
        input,
        Field::new(DUPLICATE_OF_COLUMN, DataType::Utf8, false),
    )
}

/// Name of the column that says what a reported duplicate repeats.
pub const DUPLICATE_OF_COLUMN: &str = "duplicate_of";

/// Name of the column that marks, under `ON DUPLICATE UPDATE`, the rows that
/// update an existing row (or one inserted earlier by the same import).
pub const UPDATE_COLUMN: &str = "__atlas_update";

/// Name of the column that gives, under `ON DUPLICATE UPDATE`, the location
/// of the existing row a flagged row updates where the existing keys came
/// with one (PostgreSQL's `ctid` as `block << 16 | offset`); NULL otherwise.
pub const LOCATION_COLUMN: &str = "__atlas_location";

/// The most keys the check's sets are sized for up front from an estimate
/// (the partitions' sets of the import's keys together, a set of the
/// table's keys or values): beyond it they grow as they fill, so that a
/// wrong estimate never sizes more.
pub(crate) const PRESIZED_KEYS: u64 = 1 << 24;

impl DisplayAs for DuplicateCheckExec {
    fn fmt_as(&self, t: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        let schema = self.input.schema();
        let keys = self
            .settings
            .key_columns
            .iter()
            .map(|&i| schema.field(i).name().as_str())
            .collect::<Vec<_>>()
            .join(", ");
        let policy = if self.settings.report_duplicates {
            "output=duplicates".to_string()
        } else {
            format!("on_duplicate={}", self.settings.on_duplicate)
        };
        let partitions = self.input.output_partitioning().partition_count();
        if t == DisplayFormatType::TreeRender {
            writeln!(f, "key={keys}")?;
            writeln!(f, "existing={}", self.settings.existing)?;
            writeln!(f, "{policy}")?;
            return writeln!(f, "partitions={partitions}");
        }
        write!(
            f,
            "DuplicateCheckExec: key=[{keys}], existing={}, {policy}, partitions={partitions}",
            self.settings.existing,
        )
    }
}

impl ExecutionPlan for DuplicateCheckExec {
    fn name(&self) -> &str {
        "DuplicateCheckExec"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        &self.properties
    }

    fn input_distribution_requirements(&self) -> InputDistributionRequirements {
        let mut required = vec![Distribution::KeyPartitioned(self.key_exprs())];
        if let Some(existing) = &self.existing {
            required.push(Distribution::KeyPartitioned(
                self.existing_key_exprs(existing),
            ));
        }
        InputDistributionRequirements::new(required)
    }

    fn maintains_input_order(&self) -> Vec<bool> {
        let mut maintains = vec![true];
        if self.existing.is_some() {
            maintains.push(false);
        }
        maintains
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        std::iter::once(&self.input)
            .chain(self.existing.as_ref())
            .collect()
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
        let existing = (children.len() > 1).then(|| children.swap_remove(1));
        let check =
            DuplicateCheckExec::try_from_settings(children.swap_remove(0), self.settings.clone())?;
        Ok(Arc::new(match existing {
            Some(existing) => check.with_existing_input(existing)?,
            None => check,
        }))
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
        let input = self.input.execute(partition, Arc::clone(&context))?;
        let row_column = self.input.schema().index_of(ROW_NUMBER_COLUMN)?;
        let schema = self.schema();
        let reservation = MemoryConsumer::new(format!("DuplicateCheckExec[{partition}]"))
            .register(context.memory_pool());
        // A task of a distributed plan runs one partition with a run of its
        // own, and keeps the share of the table's keys that partition needs.
        let (partitions, share) = if self.existing.is_some() {
            // The keys arrive partitioned as the rows are.
            (1, None)
        } else if run.is_stage_local() {
            let shuffled = self.settings.import.recipe.as_ref().map(|r| r.partitions);
            let share = shuffled
                .filter(|&n| n > 1)
                .map(|n| Arc::new(KeyShare::new(n, self.settings.key_forms.clone())));
            (1, share)
        } else {
            (self.input.output_partitioning().partition_count(), None)
        };
        // A partition holds the keys of its share of the rows: the plan's
        // hash partitions split them evenly. Under a memory limit the sets
        // grow as the rows need, so that an estimate above the rows never
        // takes budget from the rest of the import.
        let unbounded = matches!(context.memory_pool().memory_limit(), MemoryLimit::Infinite);
        let seen_capacity = match self.settings.expected_rows {
            Some(rows) if unbounded => {
                let partitions = self.input.output_partitioning().partition_count().max(1);
                (rows.min(PRESIZED_KEYS) / partitions as u64) as usize
            }
            _ => 0,
        };
        let check = PartitionCheck::new(
            CheckSettings {
                encoder: self.key_encoder(),
                hasher: run.existing().hasher().clone(),
                probed: self
                    .settings
                    .lookup
                    .probed_column()
                    .map(|i| self.settings.key_columns[i]),
                on_duplicate: self.settings.on_duplicate,
                report_duplicates: self.settings.report_duplicates.then(|| Arc::clone(&schema)),
                schema: Arc::clone(&schema),
                chunk_rows: self.settings.chunk_rows as u64,
                row_column,
                seen_capacity,
            },
            CheckAccounting {
                import_metrics: Arc::clone(run.metrics()),
                reservation,
                baseline: BaselineMetrics::new(&self.metrics, partition),
                duplicates_existing: MetricBuilder::new(&self.metrics)
                    .counter("duplicates_existing", partition),
                duplicates_in_file: MetricBuilder::new(&self.metrics)
                    .counter("duplicates_in_file", partition),
                skipped: MetricBuilder::new(&self.metrics).counter("skipped", partition),
                updated: MetricBuilder::new(&self.metrics).counter("updated", partition),
            },
        );
        let state = CheckStream {
            phase: Phase::Start,
            input,
            feed: match &self.existing {
                Some(existing) => run.existing().feed_from_batches(
                    existing.execute(partition, Arc::clone(&context))?,
                    KeyEncoder::new((0..self.settings.key_columns.len()).collect())
                        .with_forms(self.settings.key_forms.clone()),
                    context.memory_pool(),
                    // A task of a cluster sees its own partition only.
                    self.settings.import.recipe.as_ref().map_or_else(
                        || self.input.output_partitioning().partition_count(),
                        |recipe| recipe.partitions,
                    ),
                ),
                None => run
                    .existing()
                    .start(context.memory_pool(), partitions, share.clone()),
            },
            share,
            key_columns: self.settings.key_columns.clone(),
            first: None,
            check,
            refusals: match run.transaction() {
                Ok(transaction) if run.is_stage_local() => Some(Arc::clone(transaction)),
                _ => None,
            },
        };
        let stream = futures::stream::unfold(state, CheckStream::next);
        Ok(run.task_output(Box::pin(RecordBatchStreamAdapter::new(schema, stream))))
    }

    fn metrics(&self) -> Option<MetricsSet> {
        Some(self.metrics.clone_inner())
    }
}

#[cfg(test)]
mod tests;
