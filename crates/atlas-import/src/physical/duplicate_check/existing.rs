//! The keys already in the target, as the check learns them: read and held
//! as fingerprints (the preload strategy), or matched by the database against
//! the import's keys staged beside the table (the probe strategy).
//!
//! Either way the work starts once per import, on a task of its own, when the
//! first partition runs, and every partition shares its result.

use std::collections::HashSet;
use std::fmt;
use std::sync::{Arc, Mutex, OnceLock};

use async_trait::async_trait;
use datafusion::arrow::array::RecordBatch;
use datafusion::error::DataFusionError;
use datafusion::execution::memory_pool::{MemoryConsumer, MemoryPool, MemoryReservation};
use futures::FutureExt;
use futures::future::{BoxFuture, Shared};
use tokio::sync::mpsc;

use crate::db::KeyProbe;
use crate::error::AtlasError;
use crate::key::{Fingerprint, Fingerprints, KeyHasher};

/// Reads the keys already in the target and fingerprints them with the
/// import's [`KeyHasher`] (key columns in key order, coerced to the target
/// types, as the import's own keys are).
#[async_trait]
pub trait ExistingKeyLoader: Send + Sync + fmt::Debug {
    /// Reads every existing key.
    async fn load(&self, hasher: &KeyHasher) -> crate::error::Result<Fingerprints<()>>;
}

/// Opens a [`KeyProbe`] of the target once the import holds its lock; `None`
/// when there is nothing to match (the import created the table).
#[async_trait]
pub trait KeyProbeOpener: Send + Sync + fmt::Debug {
    /// Opens the probe.
    async fn open(&self) -> crate::error::Result<Option<Box<dyn KeyProbe>>>;
}

/// The fingerprints of the keys in the target, once loaded.
pub(super) type LoadedKeys = Arc<Fingerprints<()>>;
/// The source rows of the import whose keys the target holds (first
/// occurrences), once the probe ran.
pub(super) type MatchedRows = Arc<HashSet<u64>>;

type Pending<T> = Shared<BoxFuture<'static, std::result::Result<T, AtlasError>>>;

/// What a probe partition sends the stager.
pub(super) enum Staged {
    /// Source rows (UInt64) and their key columns.
    Keys(RecordBatch),
    /// A partition has sent all its keys.
    Done,
}

/// How the keys reach one partition.
#[derive(Clone)]
pub(super) enum KeyFeed {
    /// The existing keys' fingerprints, loading or loaded.
    Preload(Pending<LoadedKeys>),
    /// The stager of the import's keys, and the rows it will find.
    Probe {
        stage: mpsc::Sender<Staged>,
        matched: Pending<MatchedRows>,
    },
}

enum Source {
    /// No keys to read (a new table, or no row-level check).
    Nothing,
    Preload(Arc<dyn ExistingKeyLoader>),
    Probe(Arc<dyn KeyProbeOpener>),
}

/// The keys already in the target, shared by all partitions of the check.
pub struct ExistingKeys {
    /// What the keys are and how they are read (for `EXPLAIN`).
    description: String,
    source: Source,
    /// The import's fingerprints.
    hasher: KeyHasher,
    feed: OnceLock<KeyFeed>,
    /// The loaded fingerprints' memory, held while the plan lives.
    reservation: Arc<Mutex<Option<MemoryReservation>>>,
}

impl fmt::Debug for ExistingKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ExistingKeys")
            .field("description", &self.description)
            .finish()
    }
}

/// Keys the stager holds before it waits for the database.
const STAGE_QUEUE: usize = 4;

impl ExistingKeys {
    fn with_source(description: String, source: Source, hasher: KeyHasher) -> Self {
        Self {
            description,
            source,
            hasher,
            feed: OnceLock::new(),
            reservation: Default::default(),
        }
    }

    /// The preload strategy: the keys read by `loader` and held.
    pub fn preload(
        description: impl Into<String>,
        loader: Arc<dyn ExistingKeyLoader>,
        hasher: KeyHasher,
    ) -> Self {
        Self::with_source(description.into(), Source::Preload(loader), hasher)
    }

    /// The probe strategy: the import's keys matched by the database.
    pub fn probe(
        description: impl Into<String>,
        opener: Arc<dyn KeyProbeOpener>,
        hasher: KeyHasher,
    ) -> Self {
        Self::with_source(description.into(), Source::Probe(opener), hasher)
    }

    /// No existing keys (no row-level check).
    pub fn none(description: impl Into<String>, hasher: KeyHasher) -> Self {
        Self::with_source(description.into(), Source::Nothing, hasher)
    }

    /// What the keys are and how they are read.
    pub fn description(&self) -> &str {
        &self.description
    }

    /// The hasher every key of this import is fingerprinted with.
    pub fn hasher(&self) -> &KeyHasher {
        &self.hasher
    }

    /// Whether the database matches the keys (the probe strategy).
    pub fn probes(&self) -> bool {
        matches!(self.source, Source::Probe(_))
    }

    /// The feed of the keys, started on the first call; `partitions` is the
    /// number of partitions that will each say [`Staged::Done`].
    pub(super) fn start(&self, pool: &Arc<dyn MemoryPool>, partitions: usize) -> KeyFeed {
        self.feed
            .get_or_init(|| match &self.source {
                Source::Nothing => KeyFeed::Preload(ready(Ok(Arc::new(Fingerprints::new())))),
                Source::Preload(loader) => KeyFeed::Preload(self.start_preload(loader, pool)),
                Source::Probe(opener) => self.start_probe(opener, partitions),
            })
            .clone()
    }

    fn start_preload(
        &self,
        loader: &Arc<dyn ExistingKeyLoader>,
        pool: &Arc<dyn MemoryPool>,
    ) -> Pending<LoadedKeys> {
        let loader = Arc::clone(loader);
        let hasher = self.hasher.clone();
        let description = self.description.clone();
        let pool = Arc::clone(pool);
        let reservation = Arc::clone(&self.reservation);
        spawn_shared(async move {
            let set = loader.load(&hasher).await?;
            let held = MemoryConsumer::new("DuplicateCheckExec[existing keys]").register(&pool);
            held.try_grow(set.memory_size()).map_err(|e| {
                AtlasError::ResourcesExhausted(format!(
                    "the {} existing keys of {description} need {} MB, more than the memory limit allows ({e})",
                    set.len(),
                    set.memory_size() >> 20
                ))
            })?;
            *reservation.lock().expect("reservation lock") = Some(held);
            Ok(Arc::new(set))
        })
    }

    fn start_probe(&self, opener: &Arc<dyn KeyProbeOpener>, partitions: usize) -> KeyFeed {
        let (stage, mut staged) = mpsc::channel::<Staged>(STAGE_QUEUE);
        let opener = Arc::clone(opener);
        let matched = spawn_shared(async move {
            let mut probe = opener.open().await?;
            let mut done = 0;
            // Until every partition said it is done (or all are gone).
            while done < partitions {
                match staged.recv().await {
                    Some(Staged::Keys(keys)) => {
                        if let Some(probe) = probe.as_mut() {
                            probe.stage(keys).await?;
                        }
                    }
                    Some(Staged::Done) => done += 1,
                    None => break,
                }
            }
            let rows = match probe {
                Some(probe) => probe.matches().await?,
                None => Vec::new(),
            };
            Ok(Arc::new(rows.into_iter().collect::<HashSet<u64>>()))
        });
        KeyFeed::Probe { stage, matched }
    }
}

/// A future already resolved, shared.
fn ready<T: Clone + Send + Sync + 'static>(
    value: std::result::Result<T, AtlasError>,
) -> Pending<T> {
    futures::future::ready(value).boxed().shared()
}

/// Runs `work` on a task of its own (it goes on whether or not anyone polls
/// it yet) and shares its result.
fn spawn_shared<T: Clone + Send + Sync + 'static>(
    work: impl std::future::Future<Output = std::result::Result<T, AtlasError>> + Send + 'static,
) -> Pending<T> {
    let task = tokio::spawn(work);
    async move {
        match task.await {
            Ok(result) => result,
            Err(e) => Err(AtlasError::DataFusion(Arc::new(DataFusionError::Internal(
                format!("reading the existing keys stopped: {e}"),
            )))),
        }
    }
    .boxed()
    .shared()
}

/// Whether a key exists, given what was learnt of the existing keys: its
/// fingerprint (preload) or the row of its first occurrence (probe).
pub(super) enum Known {
    Fingerprints(LoadedKeys),
    Rows(MatchedRows),
}

impl Known {
    #[inline]
    pub(super) fn exists(&self, fingerprint: Fingerprint, first_row: u64) -> bool {
        match self {
            Known::Fingerprints(keys) => keys.contains(fingerprint),
            Known::Rows(rows) => rows.contains(&first_row),
        }
    }
}
