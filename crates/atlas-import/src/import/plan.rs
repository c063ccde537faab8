//! Planning: the key strategy chosen from the table's size and indexes, the
//! plans (settings only) built, and the run registered that executes them.

use std::sync::Arc;

use datafusion::arrow::array::RecordBatch;
use datafusion::execution::TaskContext;
use datafusion::execution::runtime_env::RuntimeEnvBuilder;
use datafusion::execution::session_state::SessionStateBuilder;
use datafusion::logical_expr::{Extension, LogicalPlan};
use datafusion::physical_plan::display::DisplayableExecutionPlan;
use datafusion::physical_plan::{ExecutionPlan, collect, displayable};

use super::ImportBuilder;
use super::existing_keys::TableKeyLoader;
use super::source::{OpenedSource, estimate_rows};
use super::target::{column_casts, resolve_key};
use crate::db::{FileRecord, HistoryEntry};
use crate::error::{AtlasError, Result};
use crate::key::KeyHasher;
use crate::logical::{ExpectedRows, ImportNode, ImportQueryPlanner, ImportSpec};
use crate::options::{KeyStrategy, OnBadValue, OnDuplicate};
use crate::physical::CoerceExec;
use crate::physical::{
    ExistingKeys, ImportId, ImportRef, ImportRun, ImportRuns, KeyLookup, RegisteredRun, RunRecipe,
    TableTransaction,
};
use crate::reject::RejectWriter;
use crate::report::ImportMetrics;
use crate::schema::SOURCE_LINE_COLUMN;
use crate::schema::{ColumnSpec, TargetColumn, TargetTable};
use crate::source::FileSource;
use datafusion::arrow::array::AsArray;

/// The probe strategy is chosen when the table holds at least this many
/// times the import's rows.
const PROBE_TABLE_RATIO: u64 = 8;
/// ... and, where rows wait for their verdicts, when the import has at most
/// this many rows (they are held meanwhile).
const PROBE_HELD_ROWS: u64 = 2_000_000;

impl ImportBuilder {
    /// Plans the import without touching the data, and returns the plan; on
    /// a cluster ([`Self::on_cluster`]) also the stages it would run in.
    pub async fn explain(self) -> Result<String> {
        #[cfg(feature = "ballista")]
        let cluster = self
            .cluster
            .as_ref()
            .map(|cluster| self.import_config(cluster.0.state().config().clone()));
        let prepared = self.plan().await?;
        let text = prepared.explain();
        #[cfg(feature = "ballista")]
        if let Some(config) = cluster {
            let stages =
                crate::distributed::explain_stages(config, prepared.logical_plan()).await?;
            return Ok(format!("{text}\n{stages}"));
        }
        Ok(text)
    }

    /// Plans the import without touching the data: the logical and physical
    /// plans, settings only, to explain or to carry to another process
    /// (nothing runs and no run is registered).
    pub async fn plan(self) -> Result<PreparedImport> {
        let this = self.resolve_table().await?;
        let files = this.locate().await?;
        let source = this.open_source(files).await?;
        let (target, create) = this.target(&source).await?;
        this.prepare(&source, &target, create, false, None).await
    }

    /// The key strategy of this import and why, from the table's estimated
    /// size and indexes (read now, before the lock: an estimate is enough)
    /// and the import's estimated rows.
    pub(super) async fn choose_strategy(
        &self,
        source: &OpenedSource,
        key: &[TargetColumn],
        dry_run: bool,
    ) -> Result<StrategyChoice> {
        let stats = self.db.table_stats(&self.table, key).await?;
        let import_rows = estimate_rows(&source.files);
        // Without an index on the key an upsert's join would read the whole
        // table: the rows found are then updated by the locations the key
        // scan reads. With one, its lookups cost what the fetches by
        // location do (1M rows into 1M: 5.9–6.3 s against 6.6–6.8 s by hand),
        // and reading the locations costs the scan ~0.1 s.
        let locate_rows = self.options.on_duplicate == OnDuplicate::Update
            && !dry_run
            && stats.key_index.is_none();
        let (lookup, why) =
            self.choose_lookup(import_rows.map(|e| e.rows), key, dry_run, &stats)?;
        Ok(StrategyChoice {
            lookup,
            why,
            locate_rows,
            // Only a size measured on the file's own lines sizes the sets.
            expected: ExpectedRows {
                import: import_rows.filter(|e| e.sampled).map(|e| e.rows),
                table: Some(stats.rows),
            },
        })
    }

    /// The key strategy given the table's statistics, and why.
    fn choose_lookup(
        &self,
        import_rows: Option<u64>,
        key: &[TargetColumn],
        dry_run: bool,
        stats: &crate::db::TableStats,
    ) -> Result<(KeyLookup, String)> {
        let sizes = format!(
            "~{} rows in the table, {} in the import",
            stats.rows,
            import_rows.map_or_else(|| "unknown".to_string(), |n| format!("~{n}"))
        );
        // The probe filters on one key column: an indexed one where there is
        // one, else the one with the most distinct values.
        let probe_column = probe_column(key, stats);
        let preload = || {
            (
                KeyLookup::Preload,
                format!("the table's keys read on a connection of their own and held; {sizes}"),
            )
        };
        let Some(column) = probe_column else {
            return Ok(match self.options.strategy {
                KeyStrategy::Probe | KeyStrategy::Narrow => (
                    KeyLookup::Preload,
                    format!("no key column can be probed (numbers with fractions only); {sizes}"),
                ),
                _ => preload(),
            });
        };
        let how = match &stats.key_index {
            Some(index) if index.column == key[column].name => {
                format!("by index {} on {}", index.name, key[column].name)
            }
            _ => format!("by {} (no index on the key)", key[column].name),
        };
        // Rows that need their verdict before they go on are held until the
        // database answers: the probe is for imports that fit in memory then.
        let holds_rows = dry_run
            || matches!(
                self.options.on_duplicate,
                OnDuplicate::Skip | OnDuplicate::Update
            );
        let narrow = || {
            (
                KeyLookup::Narrow { column },
                format!(
                    "the table's values of {} read first, then the keys of the rows that share \
                     one with the import, {how}; {sizes}",
                    key[column].name
                ),
            )
        };
        Ok(match self.options.strategy {
            KeyStrategy::Preload => (KeyLookup::Preload, format!("as asked; {sizes}")),
            KeyStrategy::Probe => (
                KeyLookup::Probe { column },
                format!("as asked, {how}; {sizes}"),
            ),
            KeyStrategy::Narrow => {
                let (lookup, why) = narrow();
                (lookup, format!("as asked: {why}"))
            }
            KeyStrategy::Auto => match import_rows {
                Some(rows)
                    if stats.rows >= PROBE_TABLE_RATIO * rows.max(1)
                        && (!holds_rows || rows <= PROBE_HELD_ROWS) =>
                {
                    (
                        KeyLookup::Probe { column },
                        format!(
                            "the table's keys that share a value with the import, {how}; {sizes}"
                        ),
                    )
                }
                // Rows go on without waiting for their verdicts: reading one
                // column costs a fraction of the whole keys, and the keys of
                // rows the import shares a value with are then few where the
                // import is mostly new (as an import that fails on a duplicate
                // is). A cluster's tasks would each read the column: they
                // take the table's keys, shuffled.
                _ if !holds_rows && key.len() > 1 && self.cluster.is_none() => narrow(),
                _ => preload(),
            },
        })
    }

    /// Builds the plans over the source for `target` (a table to create
    /// with `creates` when it is missing): settings only; running them
    /// takes a run ([`Self::start_run`]), registered here or built from the
    /// plan's recipe elsewhere: `writes` (the `file_imports` rows and the
    /// `import_history` row of an import that will write) makes the plan
    /// carry one.
    pub(super) async fn prepare(
        &self,
        source: &OpenedSource,
        target: &TargetTable,
        creates: Option<Vec<ColumnSpec>>,
        dry_run: bool,
        writes: Option<(
            Vec<FileRecord>,
            Vec<Option<std::path::PathBuf>>,
            HistoryEntry,
        )>,
    ) -> Result<PreparedImport> {
        let (state, input) = source.df.clone().into_parts();
        let source_schema = input.schema().as_arrow().clone();
        let casts = column_casts(&source_schema, target)?;
        let columns: Vec<TargetColumn> = casts.iter().map(|(_, c)| c.clone()).collect();
        let key_columns = resolve_key(self.options.key.as_deref(), &columns, target)?;
        // Always read (or probe) the existing keys once the transaction holds
        // its lock: even a table this plan expects to create may exist,
        // filled, by then.
        let key_targets: Vec<TargetColumn> =
            key_columns.iter().map(|&i| columns[i].clone()).collect();
        let (lookup, lookup_reason, locate_rows, expected) =
            if self.options.on_duplicate == OnDuplicate::Allow && !dry_run {
                (
                    KeyLookup::Nothing,
                    format!("{} (not read: duplicates allowed)", self.table),
                    false,
                    ExpectedRows::default(),
                )
            } else {
                let StrategyChoice {
                    lookup,
                    why,
                    locate_rows,
                    expected,
                } = self.choose_strategy(source, &key_targets, dry_run).await?;
                (
                    lookup,
                    format!("{} (strategy={lookup}: {why})", self.table),
                    locate_rows,
                    expected,
                )
            };
        let id = ImportId::new();
        let import = match writes {
            None => ImportRef::from(id),
            Some((files, file_paths, history)) => ImportRef::with_recipe(
                id,
                Arc::new(RunRecipe {
                    database: self.db.display_url().to_string(),
                    table: self.table.clone(),
                    key_columns: key_targets.clone(),
                    lookup,
                    lookup_reason: lookup_reason.clone(),
                    files,
                    file_paths,
                    file_policy: self.options.file_policy,
                    creates: creates.clone(),
                    history: HistoryEntry {
                        import_id: Some(id.to_string()),
                        ..history
                    },
                    on_bad_value: self.options.on_bad_value.clone(),
                    partitions: self.options.partitions,
                }),
            ),
        };
        let spec = Arc::new(ImportSpec {
            import,
            table: self.table.clone(),
            casts,
            key_columns: key_columns.clone(),
            on_duplicate: self.options.on_duplicate,
            chunk_rows: self.options.chunk_rows,
            dry_run,
            source_name: source.name.clone(),
            source_files: if source.files.len() > 1 {
                source.files.iter().map(FileSource::display_name).collect()
            } else {
                Vec::new()
            },
            on_bad_value: self.options.on_bad_value.clone(),
            db_kind: self.db.kind(),
            lookup,
            lookup_reason,
            creates,
            // On a cluster the table's keys are read once, in a stage of
            // their own, and shuffled to the check's tasks.
            keys_shuffled: self.cluster.is_some() && lookup == KeyLookup::Preload,
            locate_rows,
            expected,
        });
        let logical = LogicalPlan::Extension(Extension {
            node: Arc::new(
                ImportNode::try_new(input, Arc::clone(&spec))
                    .map_err(AtlasError::from_datafusion)?,
            ),
        });
        // The runs of the session's imports, where the operators find theirs.
        let runs = state
            .config()
            .get_extension::<ImportRuns>()
            .unwrap_or_default();
        // Plan in the source's session (its tables, object stores), configured
        // for the import.
        let config = self
            .import_config(state.config().clone())
            // The catalogs are shared with the caller's session: keep them.
            .with_create_default_catalog_and_schema(false)
            .with_extension(Arc::clone(&runs));
        let mut builder = SessionStateBuilder::new_from_existing(state.clone())
            .with_config(config)
            .with_query_planner(Arc::new(ImportQueryPlanner));
        if let Some(limit) = self.options.memory_limit {
            // The caller's runtime (object stores, disk) with a bounded pool.
            let runtime = RuntimeEnvBuilder::from_runtime_env(state.runtime_env())
                .with_memory_limit(limit, 1.0)
                .build_arc()
                .map_err(AtlasError::from_datafusion)?;
            builder = builder.with_runtime_env(runtime);
        }
        let state = builder.build();
        let plan = state
            .create_physical_plan(&logical)
            .await
            .map_err(|e| AtlasError::from_source_read(e, &source.name))?;
        let task = Arc::new(TaskContext::from(&state));
        Ok(PreparedImport {
            spec,
            logical,
            plan,
            task,
            runs,
        })
    }

    /// Registers the run of `prepared` in its session: its transaction, the
    /// existing keys as its plan says to learn them, the counters, the
    /// reject file. The run ends when the returned guard is dropped.
    pub(super) fn start_run(
        &self,
        prepared: &PreparedImport,
        transaction: Arc<TableTransaction>,
        rejects: Option<Arc<RejectWriter>>,
    ) -> RegisteredRun {
        let spec = &prepared.spec;
        let existing = existing_keys(
            TableKeyLoader {
                db: Arc::clone(&self.db),
                transaction: Some(Arc::clone(&transaction)),
                table: self.table.clone(),
                key_columns: spec.key_targets().cloned().collect(),
                locations: spec.locate_rows,
                metrics: Arc::clone(&self.metrics),
                last_read: Default::default(),
                expected_rows: spec.expected.table,
            },
            spec.lookup,
            spec.lookup_reason.clone(),
        );
        let rejects = rejects.or_else(|| match &spec.on_bad_value {
            // A dry run writes its rejects too (the file opens at the first).
            OnBadValue::Reject(path) => Some(Arc::new(RejectWriter::new(path))),
            _ => None,
        });
        let mut run = ImportRun::new(spec.import.id, existing, Arc::clone(&self.metrics))
            .with_transaction(transaction);
        if let Some(rejects) = rejects {
            run = run.with_rejects(rejects);
        }
        prepared.runs.register(run)
    }
}

/// The key strategy chosen for an import, why, and the sizes it was
/// chosen from.
pub(super) struct StrategyChoice {
    lookup: KeyLookup,
    why: String,
    /// Whether the key scan reads the existing rows' locations.
    locate_rows: bool,
    expected: ExpectedRows,
}

/// The existing keys `loader` reads as `lookup` says (`reason`: why, for
/// `EXPLAIN`), fingerprinted with a key of this run's own.
pub(crate) fn existing_keys(
    loader: TableKeyLoader,
    lookup: KeyLookup,
    reason: String,
) -> ExistingKeys {
    let hasher = KeyHasher::random();
    match lookup {
        KeyLookup::Nothing => ExistingKeys::none(reason, hasher),
        KeyLookup::Preload => ExistingKeys::preload(reason, Arc::new(loader), hasher),
        KeyLookup::Probe { column } => {
            let column_name = loader.key_columns[column].name.clone();
            ExistingKeys::probe(reason, Arc::new(loader), column_name, hasher)
        }
        KeyLookup::Narrow { column } => {
            let narrowing = loader.key_columns[column].clone();
            // The same table read for that column alone.
            let values = TableKeyLoader {
                key_columns: vec![narrowing.clone()],
                locations: false,
                last_read: Default::default(),
                ..loader.clone()
            };
            ExistingKeys::narrow(
                reason,
                Arc::new(loader),
                Arc::new(values),
                narrowing,
                hasher,
            )
        }
    }
}

/// An import planned and ready to run (or to explain): plans of settings
/// only; running it registers its [`ImportRun`] in the session's
/// [`ImportRuns`].
pub struct PreparedImport {
    /// The settings of the import (the logical node's).
    spec: Arc<ImportSpec>,
    /// The logical plan: an [`ImportNode`] over the source.
    logical: LogicalPlan,
    plan: Arc<dyn ExecutionPlan>,
    /// The task context of the source's session (its object stores, config,
    /// and the [`ImportRuns`] the operators find their run in).
    task: Arc<datafusion::execution::TaskContext>,
    runs: Arc<ImportRuns>,
}

impl std::fmt::Debug for PreparedImport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PreparedImport")
            .field("plan", &self.explain())
            .finish()
    }
}

impl PreparedImport {
    /// The import's settings.
    pub fn spec(&self) -> &ImportSpec {
        &self.spec
    }

    /// The recipe of the import's run (a plan prepared to write has one).
    pub(super) fn recipe(&self) -> Result<Arc<RunRecipe>> {
        self.spec.import.recipe.clone().ok_or_else(|| {
            AtlasError::Internal("an import prepared to write carries its run's recipe".into())
        })
    }

    /// Runs the plan (its run registered first) and returns its output.
    pub(super) async fn collect(&self) -> Result<Vec<RecordBatch>> {
        collect(Arc::clone(&self.plan), Arc::clone(&self.task))
            .await
            .map_err(AtlasError::from_datafusion)
    }

    /// Reads the source again, here, for the physical line of each row
    /// (into `metrics`): a refusal from a cluster names rows, the lines
    /// being known only to the task that read them.
    pub(super) async fn read_source_lines(&self, metrics: &ImportMetrics) -> Result<()> {
        use futures::StreamExt;
        fn coerce_input(plan: &Arc<dyn ExecutionPlan>) -> Option<Arc<dyn ExecutionPlan>> {
            if plan.downcast_ref::<CoerceExec>().is_some() {
                return plan.children().first().map(|input| Arc::clone(input));
            }
            plan.children().into_iter().find_map(coerce_input)
        }
        let Some(input) = coerce_input(&self.plan) else {
            return Ok(());
        };
        let Ok(line_column) = input.schema().index_of(SOURCE_LINE_COLUMN) else {
            return Ok(());
        };
        let mut next_row = 1;
        for file in 0..input.properties().partitioning.partition_count() {
            let mut batches = input
                .execute(file, Arc::clone(&self.task))
                .map_err(AtlasError::from_datafusion)?;
            while let Some(batch) = batches.next().await {
                let batch = batch.map_err(AtlasError::from_datafusion)?;
                let lines = batch
                    .column(line_column)
                    .as_primitive::<datafusion::arrow::datatypes::UInt64Type>();
                metrics.record_lines(next_row, file, lines.values());
                next_row += batch.num_rows() as u64;
            }
        }
        Ok(())
    }

    /// The physical plan.
    pub fn plan(&self) -> &Arc<dyn ExecutionPlan> {
        &self.plan
    }

    /// The logical plan.
    pub fn logical_plan(&self) -> &LogicalPlan {
        &self.logical
    }

    /// The logical and physical plans as `EXPLAIN` prints them.
    pub fn explain(&self) -> String {
        self.explain_with(displayable(self.plan.as_ref()))
    }

    /// The plans as `EXPLAIN ANALYZE` prints them, after the plan ran.
    pub fn explain_analyzed(&self) -> String {
        self.explain_with(DisplayableExecutionPlan::with_metrics(self.plan.as_ref()))
    }

    fn explain_with(&self, physical: DisplayableExecutionPlan<'_>) -> String {
        format!(
            "logical_plan\n{}\nphysical_plan\n{}",
            self.logical.display_indent(),
            physical.indent(true)
        )
    }
}

/// The key column a probe filters on: an indexed one, else the one with the
/// most distinct values the statistics know of (else the first text or
/// integer one); only columns whose values can be written as literals.
pub(super) fn probe_column(key: &[TargetColumn], stats: &crate::db::TableStats) -> Option<usize> {
    let usable = |i: &usize| crate::db::filterable(&key[*i]);
    if let Some(index) = &stats.key_index
        && let Some(i) = key.iter().position(|k| k.name == index.column)
        && usable(&i)
    {
        return Some(i);
    }
    let distinct = |i: &usize| {
        stats
            .distinct
            .iter()
            .find(|(name, _)| *name == key[*i].name)
            .map_or(0.0, |(_, d)| *d)
    };
    // Among columns counted alike (both unique, say: a sample of 1,000 rows
    // tells no more, and a near miss there is a real difference), the one
    // cheapest to read and compare: a number, not text (the narrow strategy
    // reads the column of every row of the table and holds the import's
    // values); where nothing is counted, a text column, the likelier to
    // tell rows apart.
    let counted = (0..key.len()).filter(usable).any(|i| distinct(&i) > 0.0);
    let is_text = |i: &usize| key[*i].data_type == datafusion::arrow::datatypes::DataType::Utf8;
    let preferred = |i: &usize| u8::from(is_text(i) != counted);
    (0..key.len()).filter(usable).max_by(|a, b| {
        distinct(a)
            .total_cmp(&distinct(b))
            .then(preferred(a).cmp(&preferred(b)))
            .then(b.cmp(a))
    })
}

#[cfg(test)]
mod tests {
    use datafusion::arrow::datatypes::DataType;

    use super::probe_column;
    use crate::db::TableStats;
    use crate::schema::TargetColumn;

    fn column(name: &str, data_type: DataType) -> TargetColumn {
        TargetColumn::of_type(name, "", data_type)
    }

    fn stats(distinct: &[(&str, f64)]) -> TableStats {
        TableStats {
            rows: 1_000_000,
            key_index: None,
            distinct: distinct.iter().map(|(c, d)| (c.to_string(), *d)).collect(),
        }
    }

    /// The probed column: the most distinct; among ones counted alike a
    /// number, text where nothing is counted.
    #[test]
    fn probe_column_prefers_distinct_then_cheap_columns() {
        let key = [
            column("age", DataType::Int64),
            column("email", DataType::Utf8),
            column("customer_no", DataType::Int64),
            column("balance", DataType::Float64),
        ];
        let unique = [("age", 70.0), ("email", 1e6), ("customer_no", 1e6)];
        assert_eq!(probe_column(&key, &stats(&unique)), Some(2));
        let text_ahead = [("age", 70.0), ("email", 1e6), ("customer_no", 0.975e6)];
        assert_eq!(probe_column(&key, &stats(&text_ahead)), Some(1));
        let code_and_text = [("age", 1e6), ("email", 30.0)];
        assert_eq!(probe_column(&key, &stats(&code_and_text)), Some(0));
        assert_eq!(probe_column(&key, &stats(&[])), Some(1));
        let numbers = [
            column("age", DataType::Int64),
            column("customer_no", DataType::Int64),
        ];
        assert_eq!(probe_column(&numbers, &stats(&[])), Some(0));
        assert_eq!(
            probe_column(&numbers, &stats(&[("age", 70.0), ("customer_no", 1e6)])),
            Some(1)
        );
    }
}
