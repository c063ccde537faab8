//! The logical side of an import (docs/ARCHITECTURE.md §1): [`ImportNode`], a
//! `UserDefinedLogicalNode` over any source plan, and [`ImportPlanner`], the
//! `ExtensionPlanner` that turns it into the operators:
//!
//! ```text
//! Import: table=contacts, key=[email], on_duplicate=error     (logical)
//!   <source plan>
//!
//! DataSinkExec(ImportSink)                                    (physical)
//!   SortPreservingMergeExec  <- EnsureRequirements
//!     DuplicateCheckExec
//!       RepartitionExec: Hash(key, partitions)  <- EnsureRequirements
//!         CoerceExec
//!           <source plan>
//! ```

use std::cmp::Ordering;
use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::datatypes::{DataType, Field, Schema};
use datafusion::common::{DFSchema, DFSchemaRef};
use datafusion::error::{DataFusionError, Result};
use datafusion::execution::context::QueryPlanner;
use datafusion::logical_expr::physical_planning_context::PhysicalPlanningContext;
use datafusion::logical_expr::{
    Expr, LogicalPlan, UserDefinedLogicalNode, UserDefinedLogicalNodeCore,
};
use datafusion::physical_expr::{LexOrdering, PhysicalSortExpr};
use datafusion::physical_plan::ExecutionPlan;
use datafusion::physical_plan::sorts::sort_preserving_merge::SortPreservingMergeExec;
use datafusion::physical_planner::{DefaultPhysicalPlanner, ExtensionPlanner, PhysicalPlanner};

use crate::db::DbKind;
use crate::key_form::KeyForm;
use crate::options::{OnBadValue, OnDuplicate};
use crate::physical::{
    CoerceExec, DuplicateCheckExec, ExistingKeysExec, ExistingKeysSettings, ImportRef, ImportSink,
    KeyLookup, duplicates_schema, source_order_requirement,
};
use crate::schema::{ColumnSpec, TargetColumn, coerced_schema};

/// Everything the planner needs besides the source plan: settings only, so
/// that plans compare, hash and print by what they do. What lives while the
/// import runs (transaction, existing keys, counters) is its
/// [`crate::physical::ImportRun`], registered under [`ImportSpec::import`].
#[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct ImportSpec {
    /// The import this plan is: its run is registered under this id.
    pub import: ImportRef,
    /// Target table.
    pub table: crate::names::TableRef,
    /// For each written column: the source column index and the target column.
    pub casts: Vec<(usize, TargetColumn)>,
    /// Key column indices among the written columns.
    pub key_columns: Vec<usize>,
    /// Duplicate policy.
    pub on_duplicate: OnDuplicate,
    /// Rows per chunk.
    pub chunk_rows: usize,
    /// `CHECK IMPORT`: return the duplicates, write nothing.
    pub dry_run: bool,
    /// The source, for messages.
    pub source_name: String,
    /// The files of a multi-file source, in order (empty for one source).
    pub source_files: Vec<String>,
    /// What to do with values that do not fit.
    pub on_bad_value: OnBadValue,
    /// Which database.
    pub db_kind: DbKind,
    /// How the keys already in the target are learned.
    pub lookup: KeyLookup,
    /// What the existing keys are and why this lookup (for `EXPLAIN`).
    pub lookup_reason: String,
    /// The columns a missing table is created with, `None` when a missing
    /// table is an error.
    pub creates: Option<Vec<ColumnSpec>>,
    /// Preload only: the table's keys reach the check as an input of their
    /// own ([`ExistingKeysExec`]), hash-partitioned as the rows are (a
    /// distributed import: read once, each check task holds its share).
    #[serde(default)]
    pub keys_shuffled: bool,
    /// An upsert into a table without an index on the key: the key scan
    /// reads each existing row's location where the database has them, and
    /// the rows found are updated by it rather than by a join that would
    /// read the whole table.
    #[serde(default)]
    pub locate_rows: bool,
    /// The rows the import and the table were estimated to hold when the
    /// plan was made: the check sizes its sets by them.
    #[serde(default)]
    pub expected: ExpectedRows,
}

/// Rows estimated while planning (`None`: unknown). They size the check's
/// sets up front (a set of millions that doubles as it fills rehashes every
/// key several times, and holds both tables while it moves); they never
/// decide a verdict.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize,
)]
pub struct ExpectedRows {
    /// The import's rows, from the source's size where its row size was
    /// measured on its own lines.
    pub import: Option<u64>,
    /// The table's rows, from the database's statistics.
    pub table: Option<u64>,
}

impl ImportSpec {
    /// The target columns written, in output order.
    pub fn target_columns(&self) -> Vec<TargetColumn> {
        self.casts.iter().map(|(_, c)| c.clone()).collect()
    }

    /// The key's target columns, in key order.
    pub fn key_targets(&self) -> impl Iterator<Item = &TargetColumn> {
        self.key_columns.iter().map(|&i| &self.casts[i].1)
    }
}

/// The logical import of `input` into a table.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ImportNode {
    input: LogicalPlan,
    spec: Arc<ImportSpec>,
    schema: DFSchemaRef,
}

impl ImportNode {
    /// An import of `input` as `spec` describes.
    pub fn try_new(input: LogicalPlan, spec: Arc<ImportSpec>) -> Result<Self> {
        let schema = if spec.dry_run {
            duplicates_schema(&coerced_schema(&spec.target_columns()))
        } else {
            // What DataSinkExec returns: the number of rows written.
            Arc::new(Schema::new(vec![Field::new(
                "count",
                DataType::UInt64,
                false,
            )]))
        };
        Ok(Self {
            input,
            spec,
            schema: Arc::new(DFSchema::try_from(schema.as_ref().clone())?),
        })
    }

    /// What the planner needs.
    pub fn spec(&self) -> &Arc<ImportSpec> {
        &self.spec
    }
}

impl PartialOrd for ImportNode {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        (self == other).then_some(Ordering::Equal)
    }
}

impl UserDefinedLogicalNodeCore for ImportNode {
    fn name(&self) -> &str {
        if self.spec.dry_run {
            "CheckImport"
        } else {
            "Import"
        }
    }

    fn inputs(&self) -> Vec<&LogicalPlan> {
        vec![&self.input]
    }

    fn schema(&self) -> &DFSchemaRef {
        &self.schema
    }

    fn expressions(&self) -> Vec<Expr> {
        Vec::new()
    }

    fn fmt_for_explain(&self, f: &mut fmt::Formatter) -> fmt::Result {
        let spec = &self.spec;
        let key = spec
            .key_targets()
            .map(|c| c.name.as_str())
            .collect::<Vec<_>>()
            .join(", ");
        write!(
            f,
            "{}: table={}, key=[{key}], {}, chunk_rows={}",
            UserDefinedLogicalNodeCore::name(self),
            spec.table,
            if spec.dry_run {
                "output=duplicates".to_string()
            } else {
                format!("on_duplicate={}", spec.on_duplicate)
            },
            spec.chunk_rows
        )
    }

    fn with_exprs_and_inputs(
        &self,
        _exprs: Vec<Expr>,
        mut inputs: Vec<LogicalPlan>,
    ) -> Result<Self> {
        Self::try_new(inputs.swap_remove(0), Arc::clone(&self.spec))
    }
}

/// Plans [`ImportNode`]s into the import operators.
#[derive(Debug, Default)]
pub struct ImportPlanner;

#[async_trait]
impl ExtensionPlanner for ImportPlanner {
    async fn plan_extension(
        &self,
        _planner: &dyn PhysicalPlanner,
        node: &dyn UserDefinedLogicalNode,
        _logical_inputs: &[&LogicalPlan],
        physical_inputs: &[Arc<dyn ExecutionPlan>],
        _session: &dyn datafusion::catalog::Session,
        _planning_ctx: &PhysicalPlanningContext,
    ) -> Result<Option<Arc<dyn ExecutionPlan>>> {
        let Some(node) = node.as_any().downcast_ref::<ImportNode>() else {
            return Ok(None);
        };
        let [input] = physical_inputs else {
            return Err(DataFusionError::Plan("an import has one input".into()));
        };
        Ok(Some(plan_operators(node.spec(), Arc::clone(input))?))
    }
}

/// The operators of an import over a physical source plan. Repartitions and
/// merges are left to the optimizer's `EnsureRequirements`.
pub fn plan_operators(
    spec: &ImportSpec,
    input: Arc<dyn ExecutionPlan>,
) -> Result<Arc<dyn ExecutionPlan>> {
    let coerce = Arc::new(
        CoerceExec::new(
            input,
            spec.import.clone(),
            spec.casts.clone(),
            spec.source_name.clone(),
        )
        .with_chunk_rows(spec.chunk_rows)
        .with_on_bad_value(spec.on_bad_value.clone())
        .with_files(spec.source_files.clone()),
    );
    let check = DuplicateCheckExec::try_new(coerce, spec.import.clone(), spec.key_columns.clone())?
        .with_key_forms(KeyForm::of_columns(spec.key_targets()))?
        .with_lookup(spec.lookup, spec.lookup_reason.clone())
        .with_on_duplicate(spec.on_duplicate)
        .with_chunk_rows(spec.chunk_rows)
        .with_report_duplicates(spec.dry_run)
        .with_expected_rows(spec.expected.import);
    let check = Arc::new(if spec.keys_shuffled && spec.lookup == KeyLookup::Preload {
        check.with_existing_input(Arc::new(ExistingKeysExec::new(ExistingKeysSettings {
            import: spec.import.clone(),
            table: spec.table.to_string(),
            key_columns: spec.key_targets().cloned().collect(),
        })))?
    } else {
        check
    });
    if spec.dry_run {
        // CHECK IMPORT: the duplicates in source order, nothing written.
        let order = source_order_requirement(&check.schema());
        let ordering = LexOrdering::new(order.into_iter().map(PhysicalSortExpr::from))
            .expect("one sort expression");
        return Ok(Arc::new(SortPreservingMergeExec::new(ordering, check)));
    }
    let sink = ImportSink::new(
        spec.import.clone(),
        spec.table.clone(),
        spec.target_columns(),
        spec.db_kind,
        check.schema(),
    )
    .with_creates(spec.creates.clone())
    .with_on_duplicate(spec.on_duplicate)
    .with_chunk_rows(spec.chunk_rows)
    .with_key_columns(spec.key_columns.clone())
    .with_located_rows(spec.locate_rows);
    Ok(sink.over(check))
}

/// A query planner that knows [`ImportNode`]: DataFusion's default planner
/// with [`ImportPlanner`] added.
#[derive(Debug, Default)]
pub struct ImportQueryPlanner;

#[async_trait]
impl QueryPlanner for ImportQueryPlanner {
    async fn create_physical_plan(
        &self,
        logical_plan: &LogicalPlan,
        session: &dyn datafusion::catalog::Session,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        DefaultPhysicalPlanner::with_extension_planners(vec![Arc::new(ImportPlanner)])
            .create_physical_plan(logical_plan, session)
            .await
    }
}

#[cfg(test)]
mod tests {
    use std::collections::hash_map::DefaultHasher;
    use std::hash::{Hash, Hasher};

    use datafusion::arrow::datatypes::{DataType, Field, Schema};
    use datafusion::datasource::memory::MemorySourceConfig;
    use datafusion::datasource::sink::DataSinkExec;
    use datafusion::logical_expr::LogicalPlanBuilder;
    use datafusion::physical_plan::displayable;

    use super::*;
    use crate::names::TableRef;

    fn email() -> TargetColumn {
        TargetColumn::text("email", "text")
    }

    fn spec(import: u128, on_duplicate: OnDuplicate) -> Arc<ImportSpec> {
        Arc::new(ImportSpec {
            import: crate::physical::ImportId::from_u128(import).into(),
            table: TableRef::unqualified("contacts"),
            casts: vec![(0, email())],
            key_columns: vec![0],
            on_duplicate,
            chunk_rows: 1000,
            dry_run: false,
            source_name: "contacts.csv".into(),
            source_files: Vec::new(),
            on_bad_value: OnBadValue::Error,
            db_kind: DbKind::Postgres,
            lookup: KeyLookup::Preload,
            lookup_reason: "contacts (strategy=preload)".into(),
            creates: None,
            keys_shuffled: false,
            locate_rows: false,
            expected: ExpectedRows::default(),
        })
    }

    fn hash_of(node: &ImportNode) -> u64 {
        let mut hasher = DefaultHasher::new();
        node.hash(&mut hasher);
        hasher.finish()
    }

    #[test]
    fn import_nodes_compare_and_hash_by_their_settings() {
        let input = LogicalPlanBuilder::empty(false).build().unwrap();
        let node = |spec| ImportNode::try_new(input.clone(), spec).unwrap();
        let a = node(spec(1, OnDuplicate::Skip));
        let same = node(spec(1, OnDuplicate::Skip));
        assert!(a == same, "two nodes of equal settings are equal");
        assert_eq!(hash_of(&a), hash_of(&same));
        assert!(a != node(spec(1, OnDuplicate::Error)), "another policy");
        assert!(a != node(spec(2, OnDuplicate::Skip)), "another import");
    }

    /// Every operator rebuilt from its settings over the same input prints
    /// the same: the settings are all an operator is.
    #[test]
    fn operators_rebuild_from_their_settings() {
        let schema = Arc::new(Schema::new(vec![Field::new(
            "E-mail",
            DataType::Utf8,
            true,
        )]));
        let source = MemorySourceConfig::try_new_exec(&[vec![]], schema, None).unwrap();
        let plan = plan_operators(&spec(7, OnDuplicate::Update), source).unwrap();
        let sink = plan
            .downcast_ref::<DataSinkExec>()
            .expect("the sink on top");
        let import_sink = sink
            .sink()
            .downcast_ref::<ImportSink>()
            .expect("an ImportSink");
        let check = sink.input();
        let check_exec = check
            .downcast_ref::<DuplicateCheckExec>()
            .expect("the check under the sink");
        let coerce = check.children()[0];
        let coerce_exec = coerce.downcast_ref::<CoerceExec>().expect("the coercion");

        let rebuilt_coerce = Arc::new(CoerceExec::from_settings(
            Arc::clone(coerce.children()[0]),
            coerce_exec.settings().clone(),
        )) as Arc<dyn ExecutionPlan>;
        let rebuilt_check = Arc::new(
            DuplicateCheckExec::try_from_settings(
                Arc::clone(&rebuilt_coerce),
                check_exec.settings().clone(),
            )
            .unwrap(),
        ) as Arc<dyn ExecutionPlan>;
        let rebuilt_sink =
            ImportSink::from_settings(import_sink.settings().clone(), rebuilt_check.schema());
        assert_eq!(
            displayable(rebuilt_check.as_ref()).indent(true).to_string(),
            displayable(check.as_ref()).indent(true).to_string()
        );
        assert_eq!(rebuilt_sink.settings(), import_sink.settings());
        assert_eq!(
            format!("{}", displayable(sink).one_line()),
            format!(
                "{}",
                displayable(&DataSinkExec::new(
                    rebuilt_check,
                    Arc::new(rebuilt_sink),
                    sink.sort_order().clone()
                ))
                .one_line()
            )
        );
    }
}
