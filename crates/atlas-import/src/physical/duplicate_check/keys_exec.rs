//! [`ExistingKeysExec`]: the keys already in the table, as rows, for a
//! distributed check that receives them shuffled by their hash.

use std::fmt;
use std::sync::Arc;

use datafusion::arrow::datatypes::{Field, Schema, SchemaRef};
use datafusion::error::{DataFusionError, Result};
use datafusion::execution::TaskContext;
use datafusion::physical_expr::EquivalenceProperties;
use datafusion::physical_plan::execution_plan::{Boundedness, EmissionType};
use datafusion::physical_plan::metrics::{BaselineMetrics, ExecutionPlanMetricsSet, MetricsSet};
use datafusion::physical_plan::stream::RecordBatchReceiverStreamBuilder;
use datafusion::physical_plan::{
    DisplayAs, DisplayFormatType, ExecutionPlan, Partitioning, PlanProperties,
    SendableRecordBatchStream,
};

use super::super::run::{ImportRef, ImportRuns};
use crate::schema::TargetColumn;

/// Batches of keys queued between the scan and the shuffle.
const QUEUED_BATCHES: usize = 4;

/// Reads every key of the target table once, in one partition: the key
/// columns in key order, typed as the table holds them (as the import's
/// coerced rows are typed).
///
/// A distributed import's check ([`super::DuplicateCheckExec`] with a second
/// input) gets these hash-partitioned by the same key expressions as the
/// import's rows, so each check task receives exactly the keys of its
/// partition: the table is read once and each task holds 1/N of its keys.
///
/// ```text
///   DuplicateCheckExec (N tasks)
///      ^                     ^
///   Hash(key, N)          Hash(key, N)     two shuffles, one hash
///      ^                     ^
///   CoerceExec            ExistingKeysExec (1 task: SELECT key FROM table)
/// ```
///
/// The keys are read through the import's run (found by its id), on a
/// connection of the executor's own, as committed when the task runs.
#[derive(Debug)]
pub struct ExistingKeysExec {
    settings: ExistingKeysSettings,
    schema: SchemaRef,
    properties: Arc<PlanProperties>,
    metrics: ExecutionPlanMetricsSet,
}

/// What an [`ExistingKeysExec`] reads, as plain data.
#[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct ExistingKeysSettings {
    /// The import whose run reads the keys.
    pub import: ImportRef,
    /// The table, for `EXPLAIN`.
    pub table: String,
    /// The key's target columns, in key order.
    pub key_columns: Vec<TargetColumn>,
}

impl ExistingKeysExec {
    /// Reads the keys `settings` name.
    pub fn new(settings: ExistingKeysSettings) -> Self {
        let schema = key_schema(&settings.key_columns);
        let properties = Arc::new(PlanProperties::new(
            EquivalenceProperties::new(Arc::clone(&schema)),
            Partitioning::UnknownPartitioning(1),
            EmissionType::Incremental,
            Boundedness::Bounded,
        ));
        Self {
            settings,
            schema,
            properties,
            metrics: ExecutionPlanMetricsSet::new(),
        }
    }

    /// What it reads.
    pub fn settings(&self) -> &ExistingKeysSettings {
        &self.settings
    }
}

/// The schema of the keys of `columns`: their target types, nullable.
pub(crate) fn key_schema(columns: &[TargetColumn]) -> SchemaRef {
    Arc::new(Schema::new(
        columns
            .iter()
            .map(|c| Field::new(&c.name, c.data_type.clone(), true))
            .collect::<Vec<_>>(),
    ))
}

impl DisplayAs for ExistingKeysExec {
    fn fmt_as(&self, t: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        let key = self
            .settings
            .key_columns
            .iter()
            .map(|c| c.name.as_str())
            .collect::<Vec<_>>()
            .join(", ");
        if t == DisplayFormatType::TreeRender {
            writeln!(f, "table={}", self.settings.table)?;
            return writeln!(f, "key={key}");
        }
        write!(
            f,
            "ExistingKeysExec: table={}, key=[{key}]",
            self.settings.table
        )
    }
}

impl ExecutionPlan for ExistingKeysExec {
    fn name(&self) -> &str {
        "ExistingKeysExec"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        &self.properties
    }

    crate::physical::leaf_plan_methods!();

    fn execute(
        &self,
        partition: usize,
        context: Arc<TaskContext>,
    ) -> Result<SendableRecordBatchStream> {
        super::super::only_partition(self, partition)?;
        let run = ImportRuns::of_task(&context, &self.settings.import)?;
        let loader = run.existing().loader().cloned();
        let batch_rows = context.session_config().batch_size().max(1);
        let baseline = BaselineMetrics::new(&self.metrics, partition);
        let mut builder =
            RecordBatchReceiverStreamBuilder::new(Arc::clone(&self.schema), QUEUED_BATCHES);
        let tx = builder.tx();
        // The scan hands batches over synchronously (as the preload's does):
        // through a bounded queue to a thread that passes them on.
        let (sender, receiver) =
            std::sync::mpsc::sync_channel::<datafusion::arrow::array::RecordBatch>(QUEUED_BATCHES);
        builder.spawn_blocking(move || {
            for batch in receiver {
                baseline.record_output(batch.num_rows());
                if tx.blocking_send(Ok(batch)).is_err() {
                    break;
                }
            }
            Ok(())
        });
        builder.spawn(async move {
            let Some(loader) = loader else {
                return Ok(());
            };
            let mut on_batch = move |batch| {
                sender.send(batch).map_err(|_| {
                    crate::error::AtlasError::Internal(
                        "the existing keys' reader was stopped".into(),
                    )
                })
            };
            loader
                .scan(batch_rows, &mut on_batch)
                .await
                .map_err(DataFusionError::from)?;
            Ok(())
        });
        Ok(run.task_output(builder.build()))
    }

    fn metrics(&self) -> Option<MetricsSet> {
        Some(self.metrics.clone_inner())
    }
}
