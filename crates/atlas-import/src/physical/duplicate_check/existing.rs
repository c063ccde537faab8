//! The keys already in the target, as the check learns them, as
//! fingerprints: every key of the table (the preload strategy), or the keys
//! of the rows that share a value of one key column with the import (the
//! probe strategy: the database finds those by an index or one pass).
//!
//! Either way the work starts once per import, on a task of its own, when the
//! first partition runs, and every partition shares its result.

use std::fmt;
use std::sync::{Arc, Mutex, OnceLock};

use async_trait::async_trait;
use datafusion::arrow::array::{Array, ArrayRef, RecordBatch};
use datafusion::error::DataFusionError;
use datafusion::execution::memory_pool::{MemoryConsumer, MemoryPool, MemoryReservation};
use futures::FutureExt;
use futures::future::{BoxFuture, Shared};
use tokio::sync::mpsc;

use super::share::KeyShare;
use crate::db::KeyFilter;
use crate::error::AtlasError;
use crate::key::{Fingerprints, KeyFingerprints, KeyHasher};

/// Reads the keys already in the target (all of them, or those of the rows
/// `filter` lets through) and fingerprints them with the import's
/// [`KeyHasher`] (key columns in key order, coerced to the target types, as
/// the import's own keys are). Starts once the import holds its lock.
#[async_trait]
pub trait ExistingKeyLoader: Send + Sync + fmt::Debug {
    /// Reads the existing keys (only those `filter` lets through, and of
    /// those only `share`'s, where given).
    async fn load(
        &self,
        hasher: &KeyHasher,
        filter: Option<KeyFilter>,
        share: Option<&KeyShare>,
    ) -> crate::error::Result<Fingerprints<()>>;

    /// Reads every existing key as batches of the key columns in key order,
    /// typed as the target holds them (what [`ExistingKeysExec`] emits);
    /// returns the rows read. Loaders that cannot say so.
    ///
    /// [`ExistingKeysExec`]: super::ExistingKeysExec
    async fn scan(
        &self,
        _batch_rows: usize,
        _on_batch: &mut (dyn FnMut(RecordBatch) -> crate::error::Result<()> + Send),
    ) -> crate::error::Result<u64> {
        Err(AtlasError::Internal(format!(
            "{self:?} cannot read the existing keys as batches"
        )))
    }
}

/// How the check learns the keys already in the table: the plan's choice (a
/// setting), from which the import's run builds its [`ExistingKeys`].
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, Default, serde::Serialize, serde::Deserialize,
)]
pub enum KeyLookup {
    /// No keys to read (duplicates allowed: no row-level check).
    #[default]
    Nothing,
    /// Every key of the table, read once and held.
    Preload,
    /// The keys of the rows that share a value of key column `column` (its
    /// index among the key columns) with the import, found by the database.
    Probe {
        /// The probed key column, by its index among the key columns.
        column: usize,
    },
}

impl KeyLookup {
    /// The key column (its index among the key columns) whose values the
    /// probe collects, if this is the probe.
    pub fn probed_column(self) -> Option<usize> {
        match self {
            KeyLookup::Probe { column } => Some(column),
            _ => None,
        }
    }
}

impl fmt::Display for KeyLookup {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            KeyLookup::Nothing => "none",
            KeyLookup::Preload => "preload",
            KeyLookup::Probe { .. } => "probe",
        })
    }
}

/// The fingerprints of the keys in the target, once loaded.
pub(super) type LoadedKeys = Arc<Fingerprints<()>>;

type Pending<T> = Shared<BoxFuture<'static, std::result::Result<T, AtlasError>>>;

/// What a probe partition sends the stager.
pub(super) enum Staged {
    /// Values of the probed key column (of keys first seen).
    Values(ArrayRef),
    /// A partition has sent all its values.
    Done,
}

/// How the keys reach one partition.
#[derive(Clone)]
pub(super) enum KeyFeed {
    /// The existing keys' fingerprints, loading or loaded.
    Preload(Pending<LoadedKeys>),
    /// The collector of the probed column's values, and the existing keys
    /// it will find with them.
    Probe {
        stage: mpsc::Sender<Staged>,
        matched: Pending<LoadedKeys>,
    },
}

enum Source {
    /// No keys to read (a new table, or no row-level check).
    Nothing,
    Preload(Arc<dyn ExistingKeyLoader>),
    /// The keys matching the import's values of the probed key column,
    /// named `name` in the table.
    Probe {
        loader: Arc<dyn ExistingKeyLoader>,
        name: String,
    },
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
    reservations: Arc<Mutex<Vec<MemoryReservation>>>,
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
            reservations: Default::default(),
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

    /// The probe strategy: only the keys of the rows whose probed key
    /// column (`name` in the table; [`KeyLookup::Probe`] says which) holds
    /// one of the import's values, read by `loader` at the end.
    pub fn probe(
        description: impl Into<String>,
        loader: Arc<dyn ExistingKeyLoader>,
        name: impl Into<String>,
        hasher: KeyHasher,
    ) -> Self {
        Self::with_source(
            description.into(),
            Source::Probe {
                loader,
                name: name.into(),
            },
            hasher,
        )
    }

    /// No existing keys (no row-level check).
    pub fn none(description: impl Into<String>, hasher: KeyHasher) -> Self {
        Self::with_source(description.into(), Source::Nothing, hasher)
    }

    /// The hasher every key of this import is fingerprinted with.
    pub fn hasher(&self) -> &KeyHasher {
        &self.hasher
    }

    /// What reads the keys (none when there are none to read).
    pub fn loader(&self) -> Option<&Arc<dyn ExistingKeyLoader>> {
        match &self.source {
            Source::Nothing => None,
            Source::Preload(loader) | Source::Probe { loader, .. } => Some(loader),
        }
    }

    /// The feed of the keys, started on the first call; `partitions` is the
    /// number of partitions that will each say [`Staged::Done`].
    pub(super) fn start(
        &self,
        pool: &Arc<dyn MemoryPool>,
        partitions: usize,
        share: Option<Arc<KeyShare>>,
    ) -> KeyFeed {
        self.feed
            .get_or_init(|| match &self.source {
                Source::Nothing => KeyFeed::Preload(ready(Ok(Arc::new(Fingerprints::new())))),
                Source::Preload(loader) => {
                    KeyFeed::Preload(self.start_load(loader, None, pool, share))
                }
                Source::Probe { loader, name, .. } => {
                    self.start_probe(loader, name, pool, partitions, share)
                }
            })
            .clone()
    }

    fn start_load(
        &self,
        loader: &Arc<dyn ExistingKeyLoader>,
        filter: Option<Pending<Option<KeyFilter>>>,
        pool: &Arc<dyn MemoryPool>,
        share: Option<Arc<KeyShare>>,
    ) -> Pending<LoadedKeys> {
        let loader = Arc::clone(loader);
        let hasher = self.hasher.clone();
        let description = self.description.clone();
        let pool = Arc::clone(pool);
        let reservations = Arc::clone(&self.reservations);
        spawn_shared(async move {
            let filter = match filter {
                Some(filter) => match filter.await? {
                    Some(filter) => Some(filter),
                    // The import has no keys: nothing to read.
                    None => return Ok(Arc::new(Fingerprints::new())),
                },
                None => None,
            };
            let set = loader.load(&hasher, filter, share.as_deref()).await?;
            let held = MemoryConsumer::new("DuplicateCheckExec[existing keys]").register(&pool);
            held.try_grow(set.memory_size()).map_err(|e| {
                AtlasError::ResourcesExhausted(format!(
                    "the {} existing keys of {description} need {} MB, more than the memory limit allows ({e})",
                    set.len(),
                    set.memory_size() >> 20
                ))
            })?;
            reservations.lock().expect("reservation lock").push(held);
            Ok(Arc::new(set))
        })
    }

    fn start_probe(
        &self,
        loader: &Arc<dyn ExistingKeyLoader>,
        column: &str,
        pool: &Arc<dyn MemoryPool>,
        partitions: usize,
        share: Option<Arc<KeyShare>>,
    ) -> KeyFeed {
        let (stage, mut staged) = mpsc::channel::<Staged>(STAGE_QUEUE);
        let column = column.to_string();
        // The values, collected until every partition said it is done (or
        // all are gone).
        let filter = spawn_shared(async move {
            let mut values: Vec<ArrayRef> = Vec::new();
            let mut nulls = false;
            let mut done = 0;
            while done < partitions {
                match staged.recv().await {
                    Some(Staged::Values(array)) => {
                        nulls |= array.null_count() > 0;
                        values.push(array);
                    }
                    Some(Staged::Done) => done += 1,
                    None => break,
                }
            }
            let any = nulls || values.iter().any(|a| !a.is_empty());
            Ok(any.then_some(KeyFilter {
                column,
                values,
                nulls,
            }))
        });
        KeyFeed::Probe {
            stage,
            matched: self.start_load(loader, Some(filter), pool, share),
        }
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

impl ExistingKeys {
    /// The feed of one partition whose existing keys arrive as `batches` (its
    /// share, shuffled to it by the keys' hash): fingerprinted as they come,
    /// with `encoder` (key columns 0.. in key order) and `hasher`, and accounted
    /// in `pool`.
    pub(super) fn feed_from_batches(
        &self,
        mut batches: datafusion::execution::SendableRecordBatchStream,
        encoder: crate::key::KeyEncoder,
        pool: &Arc<dyn MemoryPool>,
        partitions: usize,
    ) -> KeyFeed {
        use futures::StreamExt;
        let hasher = self.hasher.clone();
        let reservations = Arc::clone(&self.reservations);
        let held =
            MemoryConsumer::new("DuplicateCheckExec[existing keys, shuffled]").register(pool);
        KeyFeed::Preload(spawn_shared(async move {
            let mut keys = KeyFingerprints::new(encoder, hasher);
            let mut rows = 0;
            while let Some(batch) = batches.next().await {
                let batch = batch.map_err(AtlasError::from_datafusion)?;
                rows += batch.num_rows();
                keys.add(&batch)?;
                let set = keys.set();
                held.try_resize(set.memory_size()).map_err(|e| {
                    AtlasError::ResourcesExhausted(format!(
                        "the {} existing keys of a check partition need {} MB, more than the \
                         memory limit allows ({e})",
                        set.len(),
                        set.memory_size() >> 20
                    ))
                })?;
            }
            let set = keys.finish();
            tracing::info!(
                "Key check by preload, keys shuffled by their hash: kept a share of {partitions} \
                 ({rows} keys, {} distinct, {} MB)",
                set.len(),
                set.memory_size() >> 20
            );
            // Accounted while the plan holds them.
            reservations.lock().expect("reservation lock").push(held);
            Ok(Arc::new(set))
        }))
    }
}
