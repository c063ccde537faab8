//! The keys already in the target, as the check learns them, as
//! fingerprints: every key of the table (the preload strategy), or the keys
//! of the rows that share a value of one key column with the import (the
//! probe strategy: the database finds those by an index or one pass), or
//! those of the rows that share a value of one key column with the import
//! as a first read of that column alone found them (the narrow strategy:
//! whole keys are read only where they could match).
//!
//! ```text
//!  preload: table ──all keys──────────────────────────────▶ fingerprints
//!  probe:   import's values of column c ──▶ WHERE c IN (..) ──▶ fingerprints
//!  narrow:  table ──column c──▶ values ─┐
//!           import's values of c ───────┴─ shared ones ──▶ WHERE c IN (..) ──▶ fingerprints
//! ```
//!
//! Either way the work starts once per import, on a task of its own, when the
//! first partition runs, and every partition shares its result.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex, OnceLock};

use async_trait::async_trait;
use datafusion::arrow::array::{Array, ArrayRef, BooleanArray, RecordBatch};
use datafusion::arrow::compute::filter as filter_array;
use datafusion::arrow::datatypes::{Field, Schema};
use datafusion::error::DataFusionError;
use datafusion::execution::memory_pool::{MemoryConsumer, MemoryPool, MemoryReservation};
use futures::FutureExt;
use futures::future::{BoxFuture, Shared};
use tokio::sync::mpsc;

use super::share::KeyShare;
use crate::db::KeyFilter;
use crate::error::AtlasError;
use crate::key::{
    EncodedKeys, Fingerprint, Fingerprints, KeyEncoder, KeyFingerprints, KeyHasher,
    ShortFingerprints,
};
use crate::key_form::KeyForm;
use crate::schema::TargetColumn;

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
    ) -> crate::error::Result<KnownKeys>;

    /// Reads every existing key as short fingerprints (a filter whose hits
    /// are confirmed afterwards: the narrowing values of a key column).
    /// Loaders that can build them directly save the full set's memory and
    /// its pass.
    async fn load_short(&self, hasher: &KeyHasher) -> crate::error::Result<ShortFingerprints> {
        let keys = self.load(hasher, None, None).await?;
        Ok(keys.fingerprints().collect())
    }

    /// The text (`col=value, ...`) of the keys among `wanted` that the
    /// last [`Self::load`] (of all the table's keys, not a share) read, for
    /// a refusal's first duplicates whose rows went on before the keys were
    /// known. Loaders that cannot read them again describe none.
    async fn describe(
        &self,
        _hasher: &KeyHasher,
        _wanted: &[Fingerprint],
    ) -> crate::error::Result<HashMap<Fingerprint, String>> {
        Ok(HashMap::new())
    }

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
    /// The table's values of key column `column` read first (that column
    /// alone); then, as the probe, the keys of the rows that share one of
    /// them with the import.
    Narrow {
        /// The narrowing key column, by its index among the key columns.
        column: usize,
    },
}

impl KeyLookup {
    /// The key column (its index among the key columns) whose values the
    /// probe collects, if this is the probe.
    pub fn probed_column(self) -> Option<usize> {
        match self {
            KeyLookup::Probe { column } | KeyLookup::Narrow { column } => Some(column),
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
            KeyLookup::Narrow { .. } => "narrow",
        })
    }
}

/// The fingerprints of keys in the target, each with the location of its
/// row where the loader read one (PostgreSQL's `ctid` of a plain table, for
/// an upsert: the sink then updates those rows by their location rather
/// than by a join on the key).
#[derive(Debug)]
pub enum KnownKeys {
    /// Fingerprints only.
    Plain(Fingerprints<()>),
    /// Fingerprints with the location of their row.
    Located(Fingerprints<u64>),
}

impl Default for KnownKeys {
    fn default() -> Self {
        KnownKeys::Plain(Fingerprints::new())
    }
}

impl From<Fingerprints<()>> for KnownKeys {
    fn from(set: Fingerprints<()>) -> Self {
        KnownKeys::Plain(set)
    }
}

impl KnownKeys {
    /// Whether `fingerprint` is a key in the target.
    #[inline]
    pub fn contains(&self, fingerprint: Fingerprint) -> bool {
        match self {
            KnownKeys::Plain(set) => set.contains(fingerprint),
            KnownKeys::Located(set) => set.contains(fingerprint),
        }
    }

    /// The location of the row holding `fingerprint`, where known and
    /// one row holds it.
    #[inline]
    pub fn location(&self, fingerprint: Fingerprint) -> Option<u64> {
        match self {
            KnownKeys::Plain(_) => None,
            KnownKeys::Located(set) => set.get(fingerprint).filter(|&l| l != SEVERAL_ROWS),
        }
    }

    /// Number of keys.
    pub fn len(&self) -> usize {
        match self {
            KnownKeys::Plain(set) => set.len(),
            KnownKeys::Located(set) => set.len(),
        }
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Bytes held, for memory accounting.
    pub fn memory_size(&self) -> usize {
        match self {
            KnownKeys::Plain(set) => set.memory_size(),
            KnownKeys::Located(set) => set.memory_size(),
        }
    }

    /// The keys' fingerprints, in no order.
    pub fn fingerprints(&self) -> Box<dyn Iterator<Item = Fingerprint> + '_> {
        match self {
            KnownKeys::Plain(set) => Box::new(set.iter().map(|(f, _)| f)),
            KnownKeys::Located(set) => Box::new(set.iter().map(|(f, _)| f)),
        }
    }
}

/// The location of a key that several rows of the table hold (a table
/// that had duplicates before): every one of them is updated, by the key.
pub const SEVERAL_ROWS: u64 = u64::MAX;

/// The existing keys, once loaded.
pub(super) type LoadedKeys = Arc<KnownKeys>;

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
        /// Where a partition that decides nothing before its rows go on
        /// leaves its resolution (see [`ExistingKeys::settle`]).
        deferred: Deferred,
    },
}

/// The resolutions partitions left to run on their own.
pub(super) type Deferred =
    Arc<Mutex<Vec<tokio::task::JoinHandle<std::result::Result<(), DataFusionError>>>>>;

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
    /// As the probe, with the import's values of the probed column narrowed
    /// first to those `values` (a loader of that column alone) finds in
    /// the table.
    Narrow {
        loader: Arc<dyn ExistingKeyLoader>,
        values: Arc<dyn ExistingKeyLoader>,
        column: TargetColumn,
    },
}

/// What the probe reads once the import's values of its column are known.
enum ProbeQuery {
    /// Nothing: no row of the table can share a key with the import.
    Nothing,
    /// The rows that hold one of the filter's values.
    Rows(KeyFilter),
    /// Every key: the shared values are too many to list.
    Everything,
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
    /// The probe's resolutions that partitions left to run after their
    /// streams ended.
    deferred: Deferred,
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
            deferred: Default::default(),
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

    /// The narrow strategy: the table's values of the probed key column
    /// (`column`; `values` reads that column alone, with its fingerprints as
    /// a one-column key) read while the import runs; then the keys of the
    /// rows holding one of those the import holds too, read by `loader`.
    pub fn narrow(
        description: impl Into<String>,
        loader: Arc<dyn ExistingKeyLoader>,
        values: Arc<dyn ExistingKeyLoader>,
        column: TargetColumn,
        hasher: KeyHasher,
    ) -> Self {
        Self::with_source(
            description.into(),
            Source::Narrow {
                loader,
                values,
                column,
            },
            hasher,
        )
    }

    /// No existing keys (no row-level check).
    pub fn none(description: impl Into<String>, hasher: KeyHasher) -> Self {
        Self::with_source(description.into(), Source::Nothing, hasher)
    }

    /// Waits for the resolutions the check's partitions left to run after
    /// their streams ended (the probe under `ON DUPLICATE ERROR`, whose
    /// verdict needs every partition's values: a partition that waited for
    /// it with its stream open would keep an order-preserving merge above
    /// the check from reading the others), and fails with the first failure.
    /// The write calls it once its input ended, before it decides.
    pub async fn settle(&self) -> crate::error::Result<()> {
        loop {
            let pending = std::mem::take(&mut *self.deferred.lock().expect("deferred lock"));
            if pending.is_empty() {
                return Ok(());
            }
            for task in pending {
                task.await
                    .map_err(|e| {
                        AtlasError::task_stopped("a check partition's resolution stopped", e)
                    })?
                    .map_err(AtlasError::from_datafusion)?;
            }
        }
    }

    /// The text of the keys among `wanted` (fingerprints of the import's
    /// keys) that the check found in the table, as its loader read them:
    /// the samples of a refusal whose rows went on before the keys were
    /// known, and whose key columns the check did not keep.
    pub async fn describe(
        &self,
        wanted: &[Fingerprint],
    ) -> crate::error::Result<HashMap<Fingerprint, String>> {
        match self.loader() {
            Some(loader) => loader.describe(&self.hasher, wanted).await,
            None => Ok(HashMap::new()),
        }
    }

    /// The hasher every key of this import is fingerprinted with.
    pub fn hasher(&self) -> &KeyHasher {
        &self.hasher
    }

    /// What reads the keys (none when there are none to read).
    pub fn loader(&self) -> Option<&Arc<dyn ExistingKeyLoader>> {
        match &self.source {
            Source::Nothing => None,
            Source::Preload(loader)
            | Source::Probe { loader, .. }
            | Source::Narrow { loader, .. } => Some(loader),
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
                Source::Nothing => KeyFeed::Preload(ready(Ok(Arc::new(KnownKeys::default())))),
                Source::Preload(loader) => {
                    KeyFeed::Preload(self.start_load(loader, None, pool, share))
                }
                Source::Probe { loader, name, .. } => {
                    self.start_probe(loader, name, None, pool, partitions, share)
                }
                Source::Narrow {
                    loader,
                    values,
                    column,
                } => {
                    let narrowing = self.start_narrowing(values, column, pool);
                    self.start_probe(
                        loader,
                        &column.name,
                        Some(narrowing),
                        pool,
                        partitions,
                        share,
                    )
                }
            })
            .clone()
    }

    fn start_load(
        &self,
        loader: &Arc<dyn ExistingKeyLoader>,
        query: Option<Pending<Arc<ProbeQuery>>>,
        pool: &Arc<dyn MemoryPool>,
        share: Option<Arc<KeyShare>>,
    ) -> Pending<LoadedKeys> {
        let loader = Arc::clone(loader);
        let hasher = self.hasher.clone();
        let description = self.description.clone();
        let pool = Arc::clone(pool);
        let reservations = Arc::clone(&self.reservations);
        spawn_shared(async move {
            let filter = match query {
                Some(query) => match &*query.await? {
                    ProbeQuery::Rows(filter) => Some(filter.clone()),
                    ProbeQuery::Everything => None,
                    // No key of the import can be in the table.
                    ProbeQuery::Nothing => return Ok(Arc::new(KnownKeys::default())),
                },
                None => None,
            };
            let set = loader.load(&hasher, filter, share.as_deref()).await?;
            let held = reserve(
                &pool,
                "DuplicateCheckExec[existing keys]",
                (set.len(), set.memory_size()),
                &format!("existing keys of {description}"),
            )?;
            reservations.lock().expect("reservation lock").push(held);
            Ok(Arc::new(set))
        })
    }

    /// Reads the table's values of the narrowing column on a task of its
    /// own, fingerprinted as a one-column key.
    fn start_narrowing(
        &self,
        values: &Arc<dyn ExistingKeyLoader>,
        column: &TargetColumn,
        pool: &Arc<dyn MemoryPool>,
    ) -> Narrowing {
        let values = Arc::clone(values);
        let hasher = self.hasher.clone();
        let loading = tokio::spawn(async move { values.load_short(&hasher).await });
        Narrowing {
            loading: Some(loading),
            table: None,
            encoder: KeyEncoder::new(vec![0])
                .with_forms(KeyForm::of_columns(std::slice::from_ref(column))),
            hasher: self.hasher.clone(),
            pool: Arc::clone(pool),
        }
    }

    fn start_probe(
        &self,
        loader: &Arc<dyn ExistingKeyLoader>,
        column: &str,
        narrowing: Option<Narrowing>,
        pool: &Arc<dyn MemoryPool>,
        partitions: usize,
        share: Option<Arc<KeyShare>>,
    ) -> KeyFeed {
        let (stage, mut staged) = mpsc::channel::<Staged>(STAGE_QUEUE);
        let mut values = ProbeValues::new(column, narrowing);
        // The values, collected until every partition said it is done (or
        // all are gone); narrowed as they come once the table's are in.
        let filter = spawn_shared(async move {
            let mut done = 0;
            while done < partitions {
                let message = match values.narrowing.as_mut().filter(|n| !n.is_loaded()) {
                    Some(narrowing) => tokio::select! {
                        message = staged.recv() => message,
                        loaded = narrowing.load() => {
                            loaded?;
                            values.narrow_held()?;
                            continue;
                        }
                    },
                    None => staged.recv().await,
                };
                match message {
                    Some(Staged::Values(array)) => values.add(array)?,
                    Some(Staged::Done) => done += 1,
                    None => break,
                }
            }
            // (Partitions gone before all said they were done: the import
            // failed or was stopped, and what this found is not news.)
            Ok(Arc::new(values.finish(done == partitions).await?))
        });
        KeyFeed::Probe {
            stage,
            matched: self.start_load(loader, Some(filter), pool, share),
            deferred: Arc::clone(&self.deferred),
        }
    }
}

/// Shared values of the narrowing column the probe lists at most; with more,
/// it reads every key instead (a statement of that many literals costs more
/// than the scan it saves).
const NARROW_MAX_VALUES: usize = 100_000;

/// The import's values of the probed column, as the partitions send them:
/// with the narrow strategy only those the table holds too, once its values
/// are in (the others until then).
struct ProbeValues {
    column: String,
    values: Vec<ArrayRef>,
    /// Values held (with the narrowing loaded: values the table holds too).
    count: usize,
    /// More shared values than the probe lists: every key is read.
    everything: bool,
    narrowing: Option<Narrowing>,
}

impl ProbeValues {
    fn new(column: &str, narrowing: Option<Narrowing>) -> Self {
        Self {
            column: column.to_string(),
            values: Vec::new(),
            count: 0,
            everything: false,
            narrowing,
        }
    }

    /// Takes a partition's values.
    fn add(&mut self, array: ArrayRef) -> std::result::Result<(), AtlasError> {
        let array = match &self.narrowing {
            Some(narrowing) if narrowing.is_loaded() => narrowing.shared(&array)?,
            _ => array,
        };
        self.hold(array);
        Ok(())
    }

    fn hold(&mut self, array: ArrayRef) {
        if array.is_empty() || self.everything {
            return;
        }
        self.count += array.len();
        self.values.push(array);
        // (Before the table's values are in, every value is held: the
        // shared ones are counted once they are.)
        if self.narrowing.as_ref().is_some_and(Narrowing::is_loaded)
            && self.count > NARROW_MAX_VALUES
        {
            // Nothing more to list.
            self.everything = true;
            self.values = Vec::new();
        }
    }

    /// Narrows the values held while the table's were being read.
    fn narrow_held(&mut self) -> std::result::Result<(), AtlasError> {
        let held = std::mem::take(&mut self.values);
        self.count = 0;
        for array in held {
            self.add(array)?;
        }
        Ok(())
    }

    /// What the probe reads; said in the log when every partition's values
    /// are in (`complete`).
    async fn finish(mut self, complete: bool) -> std::result::Result<ProbeQuery, AtlasError> {
        if let Some(narrowing) = self.narrowing.as_mut().filter(|n| !n.is_loaded()) {
            narrowing.load().await?;
            self.narrow_held()?;
        }
        let query = if self.everything {
            ProbeQuery::Everything
        } else if self.values.is_empty() {
            // No key of the import can be in the table (or it has none).
            ProbeQuery::Nothing
        } else {
            let nulls = self.values.iter().any(|a| a.null_count() > 0);
            ProbeQuery::Rows(KeyFilter {
                column: self.column.clone(),
                values: self.values,
                nulls,
            })
        };
        if let Some(narrowing) = self.narrowing.as_ref().filter(|_| complete) {
            tracing::info!(
                "Key check narrowed by the table's {} distinct values of '{}': {}",
                narrowing.table_values(),
                self.column,
                match &query {
                    ProbeQuery::Nothing => "the import shares none, no key read".to_string(),
                    ProbeQuery::Rows(_) => format!(
                        "the import shares {} of them, the keys of their rows read",
                        self.count
                    ),
                    ProbeQuery::Everything =>
                        format!("the import shares more than {NARROW_MAX_VALUES}, every key read"),
                }
            );
        }
        Ok(query)
    }
}

/// The read of the table's values of the narrowing column, and how the
/// import's values are fingerprinted to meet them.
struct Narrowing {
    loading: Option<tokio::task::JoinHandle<crate::error::Result<ShortFingerprints>>>,
    /// The table's values as a one-column key, once read, and their memory
    /// (short fingerprints: a value they hold by mistake only adds a key
    /// to the probe, whose keys the check then compares whole).
    table: Option<(ShortFingerprints, MemoryReservation)>,
    encoder: KeyEncoder,
    hasher: KeyHasher,
    pool: Arc<dyn MemoryPool>,
}

impl Narrowing {
    fn is_loaded(&self) -> bool {
        self.table.is_some()
    }

    fn table_values(&self) -> usize {
        self.table.as_ref().map_or(0, |(table, _)| table.len())
    }

    /// Waits for the table's values (cancel-safe: a `select!` may drop it).
    async fn load(&mut self) -> std::result::Result<(), AtlasError> {
        let Some(loading) = self.loading.as_mut() else {
            return Ok(());
        };
        let table = loading
            .await
            .map_err(|e| AtlasError::task_stopped("reading the narrowing column stopped", e))??;
        self.loading = None;
        let held = reserve(
            &self.pool,
            "DuplicateCheckExec[narrowing values]",
            (table.len(), table.memory_size()),
            "values of a key column in the table",
        )?;
        self.table = Some((table, held));
        Ok(())
    }

    /// The values of `values` the table holds too (all of them before the
    /// table's are in).
    fn shared(&self, values: &ArrayRef) -> std::result::Result<ArrayRef, AtlasError> {
        let Some((table, _)) = &self.table else {
            return Ok(Arc::clone(values));
        };
        let schema = Arc::new(Schema::new(vec![Field::new(
            "value",
            values.data_type().clone(),
            true,
        )]));
        let batch = RecordBatch::try_new(schema, vec![Arc::clone(values)])?;
        let mut encoded = EncodedKeys::default();
        self.encoder.encode(&batch, &mut encoded)?;
        let mut fingerprints = Vec::new();
        self.hasher.fingerprints(&encoded, &mut fingerprints);
        let keep: BooleanArray = fingerprints
            .iter()
            .map(|f| Some(table.contains(*f)))
            .collect();
        Ok(filter_array(values, &keep)?)
    }
}

/// Accounts `set` in `pool` as `consumer`; refuses, naming the set's `what`,
/// where the memory limit does not allow it.
fn reserve(
    pool: &Arc<dyn MemoryPool>,
    consumer: &str,
    (len, bytes): (usize, usize),
    what: &str,
) -> std::result::Result<MemoryReservation, AtlasError> {
    let held = MemoryConsumer::new(consumer).register(pool);
    held.try_grow(bytes).map_err(|e| {
        AtlasError::ResourcesExhausted(format!(
            "the {len} {what} need {} MB, more than the memory limit allows ({e})",
            bytes >> 20
        ))
    })?;
    Ok(held)
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
            Err(e) => Err(AtlasError::task_stopped(
                "reading the existing keys stopped",
                e,
            )),
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
            Ok(Arc::new(set.into()))
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::array::Int64Array;
    use datafusion::arrow::datatypes::DataType;

    fn column() -> TargetColumn {
        TargetColumn::of_type("id", "bigint", DataType::Int64)
    }

    /// The table's values of the column, fingerprinted as the narrow scan
    /// does (a one-column key).
    fn table_values(values: Vec<Option<i64>>, hasher: &KeyHasher) -> KnownKeys {
        let encoder = KeyEncoder::new(vec![0]).with_forms(KeyForm::of_columns(&[column()]));
        let mut keys = KeyFingerprints::new(encoder, hasher.clone());
        let batch = RecordBatch::try_new(
            Arc::new(Schema::new(vec![Field::new("id", DataType::Int64, true)])),
            vec![Arc::new(Int64Array::from(values))],
        )
        .unwrap();
        keys.add(&batch).unwrap();
        keys.finish().into()
    }

    /// What the probe reads after the import's partitions sent `import`,
    /// with the table's values of the column read before (`early`) or after
    /// the import's values came.
    fn narrowed(import: Vec<Vec<Option<i64>>>, table: Vec<Option<i64>>, early: bool) -> ProbeQuery {
        let hasher = KeyHasher::with_seed(7);
        let loaded = table_values(table, &hasher);
        let narrowing = Narrowing {
            loading: None,
            table: None,
            encoder: KeyEncoder::new(vec![0]).with_forms(KeyForm::of_columns(&[column()])),
            hasher,
            pool: Arc::new(datafusion::execution::memory_pool::UnboundedMemoryPool::default()),
        };
        let load = |values: &mut ProbeValues, loaded: KnownKeys| {
            let narrowing = values.narrowing.as_mut().unwrap();
            let held = MemoryConsumer::new("test").register(&narrowing.pool);
            narrowing.table = Some((loaded.fingerprints().collect(), held));
            values.narrow_held().unwrap();
        };
        let mut values = ProbeValues::new("id", Some(narrowing));
        let mut loaded = Some(loaded);
        if early {
            load(&mut values, loaded.take().unwrap());
        }
        for (i, part) in import.into_iter().enumerate() {
            values.add(Arc::new(Int64Array::from(part))).unwrap();
            if i == 0
                && let Some(loaded) = loaded.take()
            {
                // The table's values arrive between two of the import's.
                load(&mut values, loaded);
            }
        }
        futures::executor::block_on(values.finish(true)).unwrap()
    }

    fn listed(query: &ProbeQuery) -> (Vec<Option<i64>>, bool) {
        match query {
            ProbeQuery::Rows(filter) => (
                filter
                    .values
                    .iter()
                    .flat_map(|a| {
                        a.as_any()
                            .downcast_ref::<Int64Array>()
                            .unwrap()
                            .iter()
                            .collect::<Vec<_>>()
                    })
                    .collect(),
                filter.nulls,
            ),
            _ => panic!("expected the rows of some values"),
        }
    }

    #[test]
    fn only_the_values_the_table_holds_are_probed() {
        for early in [true, false] {
            let query = narrowed(
                vec![vec![Some(1), Some(2), None], vec![Some(3), Some(9)]],
                vec![Some(2), Some(9), Some(10)],
                early,
            );
            assert_eq!(listed(&query), (vec![Some(2), Some(9)], false), "{early}");
        }
    }

    #[test]
    fn a_null_is_probed_only_where_the_table_holds_one() {
        let query = narrowed(vec![vec![None, Some(4)]], vec![None, Some(5)], false);
        assert_eq!(listed(&query), (vec![None], true));
        let query = narrowed(vec![vec![None, Some(4)]], vec![Some(5)], true);
        assert!(matches!(query, ProbeQuery::Nothing));
    }

    #[test]
    fn values_held_before_the_table_s_count_only_if_shared() {
        let import: Vec<Option<i64>> = (0..=NARROW_MAX_VALUES as i64).map(Some).collect();
        let query = narrowed(
            vec![import, vec![Some(-1)]],
            vec![Some(-1), Some(-2)],
            false,
        );
        assert_eq!(listed(&query), (vec![Some(-1)], false));
    }

    #[test]
    fn too_many_shared_values_read_every_key() {
        let values: Vec<Option<i64>> = (0..=NARROW_MAX_VALUES as i64).map(Some).collect();
        let query = narrowed(vec![values.clone()], values, true);
        assert!(matches!(query, ProbeQuery::Everything));
    }
}
