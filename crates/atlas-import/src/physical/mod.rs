//! The physical operators of an import plan (docs/ARCHITECTURE.md §1):
//!
//! ```text
//! DataSinkExec(ImportSink)                 1 partition: chunks, one transaction
//!   SortPreservingMergeExec: [row ASC]     back into source order
//!     DuplicateCheckExec                   N partitions, existing keys shared
//!       RepartitionExec: Hash(key, N)      inserted by EnsureRequirements
//!         CoerceExec                       1 partition: row numbers + casts
//!           <any DataFusion plan>
//! ```
//!
//! The operators hold settings only; what lives while an import runs (its
//! transaction, the existing keys, counters) is its [`ImportRun`], which
//! they find in their `TaskContext` by the import's [`ImportId`].

mod coerce;
mod duplicate_check;
mod run;
mod sink;
mod transaction;

pub use coerce::{CoerceExec, CoerceSettings};
pub(crate) use duplicate_check::PRESIZED_KEYS;
pub(crate) use duplicate_check::duplicates_schema;
#[cfg(feature = "ballista")]
pub(crate) use duplicate_check::key_expr::KeyFormExpr;
pub(crate) use duplicate_check::key_schema;
pub use duplicate_check::{
    DUPLICATE_OF_COLUMN, DuplicateCheckExec, DuplicateCheckSettings, ExistingKeyLoader,
    ExistingKeys, ExistingKeysExec, ExistingKeysSettings, KeyLookup, KeyPartitioner, KeyShare,
    KnownKeys, LOCATION_COLUMN, SEVERAL_ROWS, UPDATE_COLUMN,
};
pub use run::{ImportId, ImportRef, ImportRun, ImportRuns, RegisteredRun, RunFactory, RunRecipe};
pub use sink::{ImportSink, SinkSettings};
pub use transaction::{LateHashes, Opened, TableTransaction, TransactionSlot};

use std::sync::Arc;

use datafusion::arrow::compute::SortOptions;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::physical_expr::expressions::Column;
use datafusion::physical_expr::{
    EquivalenceProperties, LexRequirement, PhysicalExpr, PhysicalSortExpr, PhysicalSortRequirement,
};

use crate::schema::ROW_NUMBER_COLUMN;
use datafusion::physical_plan::execution_plan::{Boundedness, EmissionType};
use datafusion::physical_plan::{ExecutionPlan, Partitioning, PlanProperties};

/// `replace_children` of an operator without inputs: `leaf` itself, as long
/// as it is given none.
pub(crate) fn leaf_without_children(
    leaf: Arc<dyn ExecutionPlan>,
    children: &[Arc<dyn ExecutionPlan>],
) -> datafusion::error::Result<Arc<dyn ExecutionPlan>> {
    if children.is_empty() {
        Ok(leaf)
    } else {
        Err(datafusion::error::DataFusionError::Internal(format!(
            "{} has no children",
            leaf.name()
        )))
    }
}

/// The `ExecutionPlan` methods of an operator without inputs (no children,
/// no expressions, replaced by itself when given no children), the same in
/// every leaf of ours: written inside its `impl ExecutionPlan`.
macro_rules! leaf_plan_methods {
    () => {
        fn children(&self) -> Vec<&std::sync::Arc<dyn datafusion::physical_plan::ExecutionPlan>> {
            vec![]
        }

        fn apply_expressions(
            &self,
            _f: &mut dyn FnMut(
                &std::sync::Arc<dyn datafusion::physical_expr::PhysicalExpr>,
            ) -> datafusion::error::Result<
                datafusion::common::tree_node::TreeNodeRecursion,
            >,
        ) -> datafusion::error::Result<datafusion::common::tree_node::TreeNodeRecursion> {
            Ok(datafusion::common::tree_node::TreeNodeRecursion::Continue)
        }

        fn replace_children(
            self: std::sync::Arc<Self>,
            children: Vec<std::sync::Arc<dyn datafusion::physical_plan::ExecutionPlan>>,
            _options: datafusion::physical_plan::ReplaceChildrenOptions,
        ) -> datafusion::error::Result<std::sync::Arc<dyn datafusion::physical_plan::ExecutionPlan>>
        {
            $crate::physical::leaf_without_children(self, &children)
        }

        fn with_new_children(
            self: std::sync::Arc<Self>,
            children: Vec<std::sync::Arc<dyn datafusion::physical_plan::ExecutionPlan>>,
        ) -> datafusion::error::Result<std::sync::Arc<dyn datafusion::physical_plan::ExecutionPlan>>
        {
            self.replace_children(
                children,
                datafusion::physical_plan::ReplaceChildrenOptions::new(
                    datafusion::physical_plan::ChildrenPropertiesMode::Recompute,
                ),
            )
        }
    };
}
pub(crate) use leaf_plan_methods;

/// Fails unless `partition` is 0: `plan` runs in one partition.
pub(crate) fn only_partition(
    plan: &dyn ExecutionPlan,
    partition: usize,
) -> datafusion::error::Result<()> {
    if partition == 0 {
        Ok(())
    } else {
        Err(datafusion::error::DataFusionError::Internal(format!(
            "{} has one partition, not {partition}",
            plan.name()
        )))
    }
}

/// Properties of a streaming, bounded operator whose output, in every partition,
/// is ordered by the source row number (the last column).
fn source_ordered_properties(schema: SchemaRef, partitioning: Partitioning) -> Arc<PlanProperties> {
    let ordering = [PhysicalSortExpr::new_default(row_number_expr(&schema))];
    Arc::new(PlanProperties::new(
        EquivalenceProperties::new_with_orderings(schema, [ordering]),
        partitioning,
        EmissionType::Incremental,
        Boundedness::Bounded,
    ))
}

fn row_number_expr(schema: &SchemaRef) -> Arc<dyn PhysicalExpr> {
    let index = schema.fields().len() - 1;
    debug_assert_eq!(schema.field(index).name(), ROW_NUMBER_COLUMN);
    Arc::new(Column::new(ROW_NUMBER_COLUMN, index))
}

/// The requirement that rows arrive in source order, for the sink: with it the
/// optimizer merges the checked partitions back into source order (a
/// `SortPreservingMergeExec` on the row number), so rows are written, and
/// identities assigned, in the order of the file.
pub fn source_order_requirement(schema: &SchemaRef) -> LexRequirement {
    LexRequirement::new([PhysicalSortRequirement::new(
        row_number_expr(schema),
        Some(SortOptions::default()),
    )])
    .expect("one requirement is not empty")
}
