//! [`ImportRun`]: the live side of one import (its transaction, the keys
//! already in the table, its counters, its reject file), kept apart from
//! the plan.
//!
//! The plan's nodes hold only settings (they can be compared, hashed,
//! printed, and one day serialized); each names its import by an
//! [`ImportId`]. Whoever runs the plan registers the run under that id in
//! the session's [`ImportRuns`] (a `SessionConfig` extension), and the
//! operators look it up in their `TaskContext` when they execute:
//!
//! ```text
//!   ImportBuilder ──prepare──> plan (settings + ImportId)
//!         │                          │ execute(partition, TaskContext)
//!         └─register──> ImportRuns ◄─┘ lookup by ImportId
//!                         └─ ImportRun { TableTransaction, ExistingKeys,
//!                                        ImportMetrics, RejectWriter }
//! ```
//!
//! In another process (a Ballista executor) nobody registered the run: the
//! operators' [`ImportRef`] carries a [`RunRecipe`] (plain data, no
//! credentials) and the process's [`ImportRuns`] builds the run from it with
//! its [`RunFactory`], which holds the databases that process may reach.

use std::collections::HashMap;
use std::fmt;
use std::hash::{Hash, Hasher};
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use datafusion::error::{DataFusionError, Result};
use datafusion::execution::{SendableRecordBatchStream, TaskContext};

use super::duplicate_check::{ExistingKeys, KeyLookup};
use super::transaction::TableTransaction;
use crate::db::{FileRecord, HistoryEntry};
use crate::names::TableRef;
use crate::options::{FilePolicy, OnBadValue};
use crate::reject::RejectWriter;
use crate::report::ImportMetrics;
use crate::schema::{ColumnSpec, TargetColumn};

/// Names one import: the plan's nodes carry it, the run is registered by it.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
pub struct ImportId(u128);

impl ImportId {
    /// A new id, unique across processes in practice (time, process and a
    /// per-process counter, mixed).
    pub fn new() -> Self {
        use std::hash::{BuildHasher, Hasher};
        use std::sync::atomic::{AtomicU64, Ordering};
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        let mut mix = std::collections::hash_map::RandomState::new().build_hasher();
        mix.write_u128(nanos);
        mix.write_u32(std::process::id());
        mix.write_u64(NEXT.fetch_add(1, Ordering::Relaxed));
        Self((nanos << 64) ^ u128::from(mix.finish()))
    }

    /// The id's value.
    pub fn as_u128(self) -> u128 {
        self.0
    }

    /// The id of `value` (from [`ImportId::as_u128`]).
    pub fn from_u128(value: u128) -> Self {
        Self(value)
    }
}

impl Default for ImportId {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Display for ImportId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:032x}", self.0)
    }
}

/// What a process other than the planner's needs to build an import's run:
/// plain data, and never a credential (the database is named by its URL
/// without password; the process resolves it from its own configuration).
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct RunRecipe {
    /// The target database, as `Database::display_url` prints it.
    pub database: String,
    /// Target table.
    pub table: TableRef,
    /// The key's target columns, in key order.
    pub key_columns: Vec<TargetColumn>,
    /// How the keys already in the table are learned.
    pub lookup: KeyLookup,
    /// What the existing keys are and why this lookup.
    pub lookup_reason: String,
    /// The `file_imports` rows to check and write, one per source file (their
    /// hashes taken when the import was planned).
    pub files: Vec<FileRecord>,
    /// Where each of `files` is (absolute): the task that reads them checks
    /// their hashes again. `None` for a remote object, which its reader
    /// fetches and checks itself ([`crate::source::fetch_origin`]) or whose
    /// rows travel in the plan ([`crate::source::FileSource::path_to_recheck`]).
    #[serde(default)]
    pub file_paths: Vec<Option<std::path::PathBuf>>,
    /// What to do with a file imported before.
    pub file_policy: FilePolicy,
    /// The columns a missing table is created with.
    pub creates: Option<Vec<ColumnSpec>>,
    /// The `import_history` row written at commit (with the import's id).
    pub history: HistoryEntry,
    /// What to do with values that do not fit.
    pub on_bad_value: OnBadValue,
    /// The partitions of the check (the hash shuffle before it): a task of
    /// a distributed check keeps the share of the table's keys its
    /// partition needs.
    pub partitions: usize,
}

/// How a plan's operator names its import: the id, and for plans that run
/// in other processes the recipe of its run. Compared and hashed by id (the
/// recipe follows from it).
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct ImportRef {
    /// The import.
    pub id: ImportId,
    /// How to build its run where nobody registered it.
    pub recipe: Option<Arc<RunRecipe>>,
}

impl ImportRef {
    /// The import `id` with the recipe of its run.
    pub fn with_recipe(id: ImportId, recipe: Arc<RunRecipe>) -> Self {
        Self {
            id,
            recipe: Some(recipe),
        }
    }
}

impl From<ImportId> for ImportRef {
    fn from(id: ImportId) -> Self {
        Self { id, recipe: None }
    }
}

impl PartialEq for ImportRef {
    fn eq(&self, other: &Self) -> bool {
        self.id == other.id
    }
}

impl Eq for ImportRef {}

impl Hash for ImportRef {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.id.hash(state);
    }
}

impl fmt::Display for ImportRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.id.fmt(f)
    }
}

/// Builds the run of an import from its recipe, in a process where nobody
/// registered it (a Ballista executor): the process's databases and paths.
pub trait RunFactory: fmt::Debug + Send + Sync {
    /// The run of import `id` as `recipe` says.
    fn build(&self, id: ImportId, recipe: &RunRecipe) -> crate::error::Result<ImportRun>;
}

/// The live state of one import, shared by its operators while it runs.
pub struct ImportRun {
    id: ImportId,
    /// The import's transaction on its table; `None` for a run that only
    /// checks in memory (tests).
    transaction: Option<Arc<TableTransaction>>,
    existing: ExistingKeys,
    metrics: Arc<ImportMetrics>,
    rejects: Option<Arc<RejectWriter>>,
    /// The run serves one task of a distributed plan: the other operators'
    /// counters are in other processes.
    stage_local: bool,
}

impl fmt::Debug for ImportRun {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ImportRun")
            .field("id", &self.id)
            .field("transaction", &self.transaction)
            .field("existing", &self.existing)
            .finish()
    }
}

impl ImportRun {
    /// A run of import `id` comparing with `existing` and counting in `metrics`.
    pub fn new(id: ImportId, existing: ExistingKeys, metrics: Arc<ImportMetrics>) -> Self {
        Self {
            id,
            transaction: None,
            existing,
            metrics,
            rejects: None,
            stage_local: false,
        }
    }

    /// This run serves one task of a distributed plan (one partition of one
    /// stage): each operator settles what it alone can see (a check task
    /// under `ON DUPLICATE ERROR` leaves its duplicates in `import_refusals`
    /// for the sink to refuse with; the reader of a one-file source fails on
    /// a file without rows), as the sink cannot see the other stages'
    /// counters.
    pub fn stage_local(mut self) -> Self {
        self.stage_local = true;
        self
    }

    /// Whether this run serves one task of a distributed plan.
    pub fn is_stage_local(&self) -> bool {
        self.stage_local
    }

    /// An operator's output as this run's tasks hand it on: in a task of a
    /// distributed plan, its errors in the form the client reads back
    /// ([`crate::AtlasError::to_wire`]).
    pub fn task_output(&self, stream: SendableRecordBatchStream) -> SendableRecordBatchStream {
        if !self.stage_local {
            return stream;
        }
        use futures::TryStreamExt;
        let schema = stream.schema();
        Box::pin(
            datafusion::physical_plan::stream::RecordBatchStreamAdapter::new(
                schema,
                stream.map_err(crate::error::AtlasError::for_cluster),
            ),
        )
    }

    /// An operator's result as this run's tasks report it (see
    /// [`ImportRun::task_output`]).
    pub fn task_result<T>(&self, result: Result<T>) -> Result<T> {
        match result {
            Err(e) if self.stage_local => Err(crate::error::AtlasError::for_cluster(e)),
            other => other,
        }
    }

    /// Writes through `transaction`.
    pub fn with_transaction(mut self, transaction: Arc<TableTransaction>) -> Self {
        self.transaction = Some(transaction);
        self
    }

    /// Writes the rows `ON BAD VALUE REJECT` leaves out to `rejects`.
    pub fn with_rejects(mut self, rejects: Arc<RejectWriter>) -> Self {
        self.rejects = Some(rejects);
        self
    }

    /// The import's id.
    pub fn id(&self) -> ImportId {
        self.id
    }

    /// The import's transaction.
    pub fn transaction(&self) -> crate::error::Result<&Arc<TableTransaction>> {
        self.transaction.as_ref().ok_or_else(|| {
            crate::error::AtlasError::Internal(format!(
                "import {} has no transaction to write through",
                self.id
            ))
        })
    }

    /// The keys already in the table.
    pub fn existing(&self) -> &ExistingKeys {
        &self.existing
    }

    /// The import's live counters.
    pub fn metrics(&self) -> &Arc<ImportMetrics> {
        &self.metrics
    }

    /// The reject file, under `ON BAD VALUE REJECT`.
    pub fn rejects(&self) -> Option<&Arc<RejectWriter>> {
        self.rejects.as_ref()
    }
}

/// The imports running in a session, by id: the `SessionConfig` extension
/// through which operators find their [`ImportRun`].
#[derive(Debug, Default)]
pub struct ImportRuns {
    runs: Mutex<HashMap<ImportId, Arc<ImportRun>>>,
    /// Builds runs from recipes (executors); `None` where runs are registered.
    factory: Option<Arc<dyn RunFactory>>,
}

impl ImportRuns {
    /// Runs built from the plans' recipes by `factory`.
    pub fn with_factory(factory: Arc<dyn RunFactory>) -> Self {
        Self {
            factory: Some(factory),
            ..Self::default()
        }
    }

    /// The run of `import`: the registered one, else one built from its
    /// recipe by this process's factory.
    pub fn run_of(&self, import: &ImportRef) -> Result<Option<Arc<ImportRun>>> {
        if let Some(run) = self.get(import.id) {
            return Ok(Some(run));
        }
        let (Some(factory), Some(recipe)) = (&self.factory, &import.recipe) else {
            return Ok(None);
        };
        // One run per task: a task of a distributed plan runs one partition
        // of one stage, and holds nothing another task could share.
        let run = factory
            .build(import.id, recipe)
            .map_err(|e| DataFusionError::External(Box::new(e)))?;
        Ok(Some(Arc::new(run.stage_local())))
    }

    /// Registers `run` until the returned guard is dropped.
    pub fn register(self: &Arc<Self>, run: ImportRun) -> RegisteredRun {
        let run = Arc::new(run);
        self.runs
            .lock()
            .expect("import runs lock")
            .insert(run.id(), Arc::clone(&run));
        RegisteredRun {
            runs: Arc::clone(self),
            run,
        }
    }

    /// The run of import `id`, if it is registered.
    pub fn get(&self, id: ImportId) -> Option<Arc<ImportRun>> {
        self.runs
            .lock()
            .expect("import runs lock")
            .get(&id)
            .cloned()
    }

    /// The run of `import` in the session of `context`: an operator's live
    /// state.
    pub fn of_task(context: &TaskContext, import: &ImportRef) -> Result<Arc<ImportRun>> {
        let runs = context.session_config().get_extension::<ImportRuns>();
        match runs {
            Some(runs) => runs.run_of(import)?,
            None => None,
        }
        .ok_or_else(|| {
            DataFusionError::Execution(format!(
                "import {import} is not running in this session: an import plan executes in \
                 the session it was prepared for (its ImportRuns holds the run), or in a \
                 process whose ImportRuns builds runs (an atlas-import executor)"
            ))
        })
    }
}

/// A registered run; dropping it takes the run out of the session.
#[derive(Debug)]
pub struct RegisteredRun {
    runs: Arc<ImportRuns>,
    run: Arc<ImportRun>,
}

impl Drop for RegisteredRun {
    fn drop(&mut self) {
        if let Ok(mut runs) = self.runs.runs.lock() {
            runs.remove(&self.run.id());
        }
    }
}

/// A task context whose session runs `run` (server-free operator tests),
/// and the registration that keeps it there.
#[cfg(test)]
pub(crate) fn task_running(run: ImportRun) -> (Arc<TaskContext>, RegisteredRun) {
    let runs = Arc::new(ImportRuns::default());
    let registered = runs.register(run);
    let config = datafusion::prelude::SessionConfig::new().with_extension(runs);
    let task = TaskContext::default().with_session_config(config);
    (Arc::new(task), registered)
}
