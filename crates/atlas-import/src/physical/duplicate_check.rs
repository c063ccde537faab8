//! [`DuplicateCheckExec`]: finds rows whose key exists in the target or repeats
//! inside the import.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

use async_trait::async_trait;
use datafusion::arrow::array::{AsArray, BooleanArray, RecordBatch, StringArray};
use datafusion::arrow::compute::filter_record_batch;
use datafusion::arrow::datatypes::UInt64Type;
use datafusion::arrow::datatypes::{DataType, Field, FieldRef, Schema, SchemaRef};
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::error::{DataFusionError, Result};
use datafusion::execution::TaskContext;
use datafusion::execution::memory_pool::{MemoryConsumer, MemoryReservation};
use datafusion::physical_expr::expressions::Column;
use datafusion::physical_expr::{Distribution, PhysicalExpr};
use datafusion::physical_plan::distribution_requirements::InputDistributionRequirements;
use datafusion::physical_plan::metrics::{
    BaselineMetrics, Count, ExecutionPlanMetricsSet, MetricBuilder, MetricsSet,
};
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{
    ChildrenPropertiesMode, DisplayAs, DisplayFormatType, ExecutionPlan, ExecutionPlanProperties,
    PlanProperties, ReplaceChildrenOptions, SendableRecordBatchStream,
};
use futures::{StreamExt, TryStreamExt};
use tokio::sync::OnceCell;

use super::source_ordered_properties;
use crate::error::AtlasError;
use crate::key::{EncodedKeys, KeyEncoder, KeySet};
use crate::options::OnDuplicate;
use crate::report::{DUPLICATE_SAMPLES, DuplicateKind, DuplicateSample, ImportMetrics};
use crate::schema::ROW_NUMBER_COLUMN;

/// Loads the keys already in the target, encoded with [`KeyEncoder`] over the key
/// columns in key order after coercion to the target types.
#[async_trait]
pub trait ExistingKeyLoader: Send + Sync + fmt::Debug {
    /// Reads every existing key.
    async fn load(&self) -> crate::error::Result<KeySet>;
}

/// The keys already in the target: loaded once per import by whichever
/// partition asks first, then shared read-only by all partitions.
#[derive(Debug)]
pub struct ExistingKeys {
    /// What the keys are (for `EXPLAIN`), e.g. the table name.
    description: String,
    /// How to load them; `None` means the target is empty or new.
    loader: Option<Arc<dyn ExistingKeyLoader>>,
    /// The loaded set and its memory reservation.
    cell: OnceCell<(Arc<KeySet>, Arc<MemoryReservation>)>,
}

impl ExistingKeys {
    /// Keys loaded by `loader` on first use.
    pub fn new(description: impl Into<String>, loader: Arc<dyn ExistingKeyLoader>) -> Self {
        Self {
            description: description.into(),
            loader: Some(loader),
            cell: OnceCell::new(),
        }
    }

    /// No existing keys (a new or empty target).
    pub fn none(description: impl Into<String>) -> Self {
        Self {
            description: description.into(),
            loader: None,
            cell: OnceCell::new(),
        }
    }

    async fn get(&self, context: &TaskContext) -> Result<Arc<KeySet>> {
        let (set, _) = self
            .cell
            .get_or_try_init(|| async {
                let set = match &self.loader {
                    Some(loader) => loader.load().await.map_err(DataFusionError::from)?,
                    None => KeySet::new(),
                };
                let reservation = MemoryConsumer::new("DuplicateCheckExec[existing keys]")
                    .register(context.memory_pool());
                reservation.try_grow(set.memory_size()).map_err(|e| {
                    DataFusionError::from(AtlasError::ResourcesExhausted(format!(
                        "the {} existing keys of {} need {} MB, more than the memory limit allows ({e})",
                        set.len(),
                        self.description,
                        set.memory_size() >> 20
                    )))
                })?;
                Ok::<_, DataFusionError>((Arc::new(set), Arc::new(reservation)))
            })
            .await?;
        Ok(Arc::clone(set))
    }
}

/// Compares every row with the rows already in the table and with the rest of
/// the import, and emits the rows to write.
///
/// ```text
///            ImportSink (1 partition)
///                     ^
///          CoalescePartitionsExec
///        ^        ^        ^        ^
///   +---------+---------+---------+---------+
///   | check 0 | check 1 | check 2 | check 3 |  local KeySet of the import's keys
///   +---------+---------+---------+---------+  in each partition
///        \         \       /         /
///         +-- ExistingKeys (loaded once, shared, read-only) --+
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
/// [`ExistingKeys`] is loaded once per import and shared. Each partition keeps
/// its own [`KeySet`] of the import's keys, accounted in the memory pool.
///
/// # Output
/// `ON DUPLICATE SKIP`: the rows whose key is new, first occurrence kept.
/// `ON DUPLICATE ERROR`: the rows while no duplicate has been seen anywhere; once
/// one is, nothing more (the sink will refuse the import), but counting goes on so
/// the report is complete.
/// `ON DUPLICATE UPDATE`: every row, with an [`UPDATE_COLUMN`] flag (before the
/// row number) that is true when the key exists or occurred earlier in the
/// import; the sink inserts the others and applies these in source order, so
/// the last occurrence wins.
#[derive(Debug)]
pub struct DuplicateCheckExec {
    /// Input, hash-partitioned on the key.
    input: Arc<dyn ExecutionPlan>,
    /// Key column indices in the input schema, in key order.
    key_columns: Vec<usize>,
    /// The keys already in the target.
    existing: Arc<ExistingKeys>,
    /// What to do with duplicates.
    on_duplicate: OnDuplicate,
    /// Rows per source chunk, for counting chunks with duplicates.
    chunk_rows: usize,
    /// Live counters of the import.
    import_metrics: Arc<ImportMetrics>,
    /// Emit the duplicates (with a `duplicate_of` column) instead of the rows
    /// to write: the dry run of `CHECK IMPORT`.
    report_duplicates: bool,
    /// Cached plan properties (partitioning of the input).
    properties: Arc<PlanProperties>,
    /// Operator metrics.
    metrics: ExecutionPlanMetricsSet,
}

impl DuplicateCheckExec {
    /// Checks `input` on the columns at `key_columns`.
    pub fn try_new(
        input: Arc<dyn ExecutionPlan>,
        key_columns: Vec<usize>,
        existing: Arc<ExistingKeys>,
        on_duplicate: OnDuplicate,
        chunk_rows: usize,
        import_metrics: Arc<ImportMetrics>,
    ) -> Result<Self> {
        let schema = input.schema();
        if schema.index_of(ROW_NUMBER_COLUMN).is_err() {
            return Err(DataFusionError::Plan(format!(
                "DuplicateCheckExec needs the {ROW_NUMBER_COLUMN} column of CoerceExec in its input"
            )));
        }
        if key_columns.is_empty() || key_columns.iter().any(|&c| c >= schema.fields().len()) {
            return Err(DataFusionError::Plan(format!(
                "DuplicateCheckExec: invalid key columns {key_columns:?}"
            )));
        }
        let properties = source_ordered_properties(schema, input.output_partitioning().clone());
        Ok(Self {
            input,
            key_columns,
            existing,
            on_duplicate,
            chunk_rows: chunk_rows.max(1),
            import_metrics,
            report_duplicates: false,
            properties,
            metrics: ExecutionPlanMetricsSet::new(),
        })
    }

    /// Emits the duplicate rows instead of the rows to write, each with a
    /// `duplicate_of` column (`existing`, or `row N` for the first occurrence
    /// in the import), placed before the source row number.
    pub fn with_report_duplicates(mut self, report: bool) -> Self {
        self.report_duplicates = report;
        self.properties = source_ordered_properties(
            self.output_schema(),
            self.input.output_partitioning().clone(),
        );
        self
    }

    fn output_schema(&self) -> SchemaRef {
        let input = self.input.schema();
        if self.report_duplicates {
            duplicates_schema(&input)
        } else if self.on_duplicate == OnDuplicate::Update {
            with_column_before_row(&input, Field::new(UPDATE_COLUMN, DataType::Boolean, false))
        } else {
            input
        }
    }

    fn key_exprs(&self) -> Vec<Arc<dyn PhysicalExpr>> {
        let schema = self.input.schema();
        self.key_columns
            .iter()
            .map(|&i| Arc::new(Column::new(schema.field(i).name(), i)) as Arc<dyn PhysicalExpr>)
            .collect()
    }
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

impl DisplayAs for DuplicateCheckExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        let schema = self.input.schema();
        let keys = self
            .key_columns
            .iter()
            .map(|&i| schema.field(i).name().as_str())
            .collect::<Vec<_>>()
            .join(", ");
        write!(
            f,
            "DuplicateCheckExec: key=[{keys}], existing={}, {}, partitions={}",
            self.existing.description,
            if self.report_duplicates {
                "output=duplicates".to_string()
            } else {
                format!("on_duplicate={}", self.on_duplicate)
            },
            self.input.output_partitioning().partition_count()
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
        InputDistributionRequirements::new(vec![Distribution::KeyPartitioned(self.key_exprs())])
    }

    fn maintains_input_order(&self) -> Vec<bool> {
        vec![true]
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
            DuplicateCheckExec::try_new(
                children.swap_remove(0),
                self.key_columns.clone(),
                Arc::clone(&self.existing),
                self.on_duplicate,
                self.chunk_rows,
                Arc::clone(&self.import_metrics),
            )?
            .with_report_duplicates(self.report_duplicates),
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
        let input = self.input.execute(partition, Arc::clone(&context))?;
        let row_column = self.input.schema().index_of(ROW_NUMBER_COLUMN)?;
        let schema = self.schema();
        let reservation = MemoryConsumer::new(format!("DuplicateCheckExec[{partition}]"))
            .register(context.memory_pool());
        let mut state = PartitionCheck {
            encoder: KeyEncoder::new(self.key_columns.clone()),
            keys: EncodedKeys::default(),
            seen: KeySet::with_payloads(),
            on_duplicate: self.on_duplicate,
            report_duplicates: self.report_duplicates.then(|| Arc::clone(&schema)),
            schema: Arc::clone(&schema),
            chunk_rows: self.chunk_rows as u64,
            row_column,
            last_row: 0,
            import_metrics: Arc::clone(&self.import_metrics),
            reservation,
            baseline: BaselineMetrics::new(&self.metrics, partition),
            duplicates_existing: MetricBuilder::new(&self.metrics)
                .counter("duplicates_existing", partition),
            duplicates_in_file: MetricBuilder::new(&self.metrics)
                .counter("duplicates_in_file", partition),
        };
        let existing = Arc::clone(&self.existing);
        let stream = futures::stream::once(async move {
            let existing = existing.get(&context).await?;
            Ok::<_, DataFusionError>(input.map(move |batch| state.check(batch?, &existing)))
        })
        .try_flatten();
        Ok(Box::pin(RecordBatchStreamAdapter::new(schema, stream)))
    }

    fn metrics(&self) -> Option<MetricsSet> {
        Some(self.metrics.clone_inner())
    }
}

/// The state of one partition of the check.
struct PartitionCheck {
    encoder: KeyEncoder,
    keys: EncodedKeys,
    /// Keys of the import seen in this partition, with their first source row.
    seen: KeySet,
    on_duplicate: OnDuplicate,
    /// The output schema when the duplicates are the output.
    report_duplicates: Option<SchemaRef>,
    /// The output schema.
    schema: SchemaRef,
    chunk_rows: u64,
    row_column: usize,
    /// The last source row seen, to verify source order.
    last_row: u64,
    import_metrics: Arc<ImportMetrics>,
    reservation: MemoryReservation,
    baseline: BaselineMetrics,
    duplicates_existing: Count,
    duplicates_in_file: Count,
}

impl PartitionCheck {
    fn check(&mut self, batch: RecordBatch, existing: &KeySet) -> Result<RecordBatch> {
        if self.on_duplicate == OnDuplicate::Allow && self.report_duplicates.is_none() {
            // No row-level check: every row goes on.
            self.import_metrics
                .rows_checked
                .fetch_add(batch.num_rows() as u64, Ordering::Relaxed);
            self.baseline.record_output(batch.num_rows());
            return Ok(batch);
        }
        let started = Instant::now();
        let timer = self.baseline.elapsed_compute().timer();
        self.encoder.encode(&batch, &mut self.keys)?;
        let rows = batch.column(self.row_column).as_primitive::<UInt64Type>();
        let mut keep = Vec::with_capacity(batch.num_rows());
        // (index in batch, source row, kind)
        let mut found: Vec<(usize, u64, DuplicateKind)> = Vec::new();
        for i in 0..batch.num_rows() {
            let row = rows.value(i);
            if row <= self.last_row {
                return Err(DataFusionError::Internal(format!(
                    "DuplicateCheckExec received source row {row} after row {}: its input must keep source order",
                    self.last_row
                )));
            }
            self.last_row = row;
            let key = self.keys.key(i);
            if existing.contains(key) {
                found.push((i, row, DuplicateKind::Existing));
                keep.push(false);
            } else if let Some(first_row) = self.seen.insert(key, row) {
                found.push((
                    i,
                    row,
                    DuplicateKind::InFile {
                        first_row,
                        first_line: None,
                    },
                ));
                keep.push(false);
            } else {
                keep.push(true);
            }
        }
        self.reservation
            .try_resize(self.seen.memory_size())
            .map_err(|e| {
                DataFusionError::from(AtlasError::ResourcesExhausted(format!(
                    "the duplicate check holds {} keys of the import ({} MB) and reached the memory limit ({e})",
                    self.seen.len(),
                    self.seen.memory_size() >> 20
                )))
            })?;

        let existing_count = found
            .iter()
            .filter(|(_, _, k)| *k == DuplicateKind::Existing)
            .count();
        self.duplicates_existing.add(existing_count);
        self.duplicates_in_file.add(found.len() - existing_count);
        if !found.is_empty() {
            // Describe only the few that can make it into the report.
            let samples: Vec<DuplicateSample> = found
                .iter()
                .take(DUPLICATE_SAMPLES)
                .map(|(i, row, kind)| DuplicateSample {
                    row: *row,
                    line: None,
                    key: self.encoder.describe(&batch, *i),
                    kind: kind.clone(),
                })
                .collect();
            let all: Vec<DuplicateSample> = found
                .iter()
                .skip(DUPLICATE_SAMPLES)
                .map(|(_, row, kind)| DuplicateSample {
                    row: *row,
                    line: None,
                    key: String::new(),
                    kind: kind.clone(),
                })
                .collect();
            self.import_metrics
                .record_duplicates(&samples, &all, self.chunk_rows);
            let counter = match self.on_duplicate {
                OnDuplicate::Skip => Some(&self.import_metrics.skipped),
                OnDuplicate::Update => Some(&self.import_metrics.updated),
                OnDuplicate::Error | OnDuplicate::Allow => None,
            };
            if let Some(counter) = counter {
                counter.fetch_add(found.len() as u64, Ordering::Relaxed);
            }
        }

        let out = if let Some(schema) = &self.report_duplicates {
            let duplicates = filter_record_batch(
                &batch,
                &BooleanArray::from(keep.iter().map(|k| !k).collect::<Vec<_>>()),
            )?;
            let of: StringArray = found
                .iter()
                .map(|(_, _, kind)| {
                    Some(match kind {
                        DuplicateKind::Existing => "existing".to_string(),
                        DuplicateKind::InFile { first_row, .. } => format!("row {first_row}"),
                    })
                })
                .collect();
            let mut columns = duplicates.columns().to_vec();
            let row = columns.pop().expect("the row number column");
            columns.push(Arc::new(of));
            columns.push(row);
            RecordBatch::try_new(Arc::clone(schema), columns)?
        } else if self.on_duplicate == OnDuplicate::Update {
            // Every row goes on; the duplicates are flagged as updates.
            let update = BooleanArray::from(keep.iter().map(|k| !k).collect::<Vec<_>>());
            let mut columns = batch.columns().to_vec();
            let row = columns.pop().expect("the row number column");
            columns.push(Arc::new(update));
            columns.push(row);
            RecordBatch::try_new(Arc::clone(&self.schema), columns)?
        } else if self.on_duplicate == OnDuplicate::Error && self.import_metrics.has_duplicates() {
            batch.slice(0, 0)
        } else if found.is_empty() {
            batch
        } else {
            filter_record_batch(&batch, &BooleanArray::from(keep))?
        };
        self.import_metrics
            .rows_checked
            .fetch_add(out.num_rows() as u64, Ordering::Relaxed);
        self.import_metrics
            .check_nanos
            .fetch_add(started.elapsed().as_nanos() as u64, Ordering::Relaxed);
        timer.done();
        self.baseline.record_output(out.num_rows());
        Ok(out)
    }
}
