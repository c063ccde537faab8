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

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use datafusion::error::{DataFusionError, Result};
use datafusion::execution::TaskContext;

use super::duplicate_check::ExistingKeys;
use super::transaction::TableTransaction;
use crate::reject::RejectWriter;
use crate::report::ImportMetrics;

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

/// The live state of one import, shared by its operators while it runs.
pub struct ImportRun {
    id: ImportId,
    /// The import's transaction on its table; `None` for a run that only
    /// checks in memory (tests).
    transaction: Option<Arc<TableTransaction>>,
    existing: ExistingKeys,
    metrics: Arc<ImportMetrics>,
    rejects: Option<Arc<RejectWriter>>,
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
}

impl ImportRuns {
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

    /// The run of import `id` in the session of `context`: an operator's
    /// live state.
    pub fn of_task(context: &TaskContext, id: ImportId) -> Result<Arc<ImportRun>> {
        context
            .session_config()
            .get_extension::<ImportRuns>()
            .and_then(|runs| runs.get(id))
            .ok_or_else(|| {
                DataFusionError::Execution(format!(
                    "import {id} is not running in this session: an import plan executes in \
                     the session it was prepared for (its ImportRuns holds the run)"
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
