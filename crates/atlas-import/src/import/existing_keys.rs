//! The existing keys of the target, read through the import's transaction
//! and fingerprinted as the import's own keys are.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use async_trait::async_trait;
use datafusion::arrow::array::{AsArray, RecordBatch};
use datafusion::arrow::datatypes::UInt64Type;

use crate::convert::coerce_column_lenient;
use crate::db::Database;
use crate::error::{AtlasError, Result};
use crate::key::{
    EncodedKeys, Fingerprint, KeyEncoder, KeyFingerprints, KeyHasher, ShortFingerprints,
};
use crate::key_form::KeyForm;
use crate::names::TableRef;
use crate::physical::{
    ExistingKeyLoader, KeyPartitioner, KeyShare, KnownKeys, Opened, SEVERAL_ROWS, TableTransaction,
    key_schema,
};
use crate::report::{ImportMetrics, Phase};
use crate::schema::TargetColumn;

/// Rows per batch when scanning existing keys.
const KEY_SCAN_BATCH_ROWS: usize = 8192;
/// Text batches of existing keys queued for conversion at most.
const KEY_SCAN_QUEUE: usize = 8;
/// Keys a probe reads at most for their text to be kept (the probe's keys
/// are those of the rows that share a value with the import: where they are
/// few, a refusal's samples are described from them, not read again).
const DESCRIBED_PROBE_KEYS: usize = 1000;

/// Loads the existing keys of the target, coerced with the same code as the
/// import's values.
#[derive(Debug, Clone)]
pub(super) struct TableKeyLoader {
    pub(super) db: Arc<dyn Database>,
    /// The import's transaction, whose lock the scan waits for (the keys are
    /// then those the import's rows meet); `None` in a stage of a distributed
    /// import, which reads them as committed when the stage runs (the write
    /// runs in a later stage: docs/DISTRIBUTED.md says what that allows).
    pub(super) transaction: Option<Arc<TableTransaction>>,
    pub(super) table: TableRef,
    pub(super) key_columns: Vec<TargetColumn>,
    /// Whether to read each row's location with its key, where the database
    /// can say it (an upsert in the import's transaction: it then updates
    /// those rows by their location).
    pub(super) locations: bool,
    pub(super) metrics: Arc<ImportMetrics>,
    /// How the last load of all the table's keys read them, for reading
    /// some of them again ([`ExistingKeyLoader::describe`]).
    pub(super) last_read: Arc<Mutex<Option<KeysRead>>>,
    /// The rows the table is estimated to hold: a read of all its keys
    /// sizes its set for them.
    pub(super) expected_rows: Option<u64>,
}

/// How a load read the table's keys.
#[derive(Debug)]
pub(super) enum KeysRead {
    /// Every key.
    Every,
    /// The keys of the rows the probe's filter let through.
    Probed(crate::db::KeyFilter),
    /// The probe's keys, few enough to be kept as text.
    Described(KeyTexts),
}

#[async_trait]
impl ExistingKeyLoader for TableKeyLoader {
    async fn load(
        &self,
        hasher: &KeyHasher,
        filter: Option<crate::db::KeyFilter>,
        share: Option<&KeyShare>,
    ) -> Result<KnownKeys> {
        let (table, columns, hasher) = (self.table.key(), self.key_columns.clone(), hasher.clone());
        let keep = share.map(|share| share.partitioner().clone());
        // A probe's keys are kept as text where they are few.
        let describe = filter.is_some() && share.is_none();
        let capacity = if filter.is_none() && share.is_none() {
            self.expected_capacity()
        } else {
            0
        };
        let (keys, texts) = self
            .load_keys(filter.as_ref(), share, move |partition, batches| {
                let keep = keep.zip(partition);
                fingerprint_existing_keys(
                    &table,
                    &columns,
                    &hasher,
                    ExistingKeysRead {
                        share: keep.as_ref(),
                        describe,
                        capacity,
                    },
                    batches,
                )
            })
            .await?;
        // (A share of a distributed import's keys is never read again: its
        // refusal crosses processes as counts and samples.)
        if share.is_none() {
            *self.last_read.lock().expect("last read lock") = Some(match (texts, filter) {
                (Some(texts), _) => KeysRead::Described(texts),
                (None, Some(filter)) => KeysRead::Probed(filter),
                (None, None) => KeysRead::Every,
            });
        }
        Ok(keys)
    }

    async fn load_short(&self, hasher: &KeyHasher) -> Result<ShortFingerprints> {
        let (table, columns, hasher) = (self.table.key(), self.key_columns.clone(), hasher.clone());
        let capacity = self.expected_capacity();
        self.load_keys(None, None, move |_, batches| {
            short_fingerprint_existing_keys(&table, &columns, &hasher, capacity, batches)
        })
        .await
    }

    async fn describe(
        &self,
        hasher: &KeyHasher,
        wanted: &[Fingerprint],
    ) -> Result<HashMap<Fingerprint, String>> {
        let filter = match &*self.last_read.lock().expect("last read lock") {
            None => return Ok(HashMap::new()),
            // Every key the probe read is described already: the others
            // are not among its rows.
            Some(KeysRead::Described(texts)) => {
                return Ok(wanted
                    .iter()
                    .filter_map(|f| Some((*f, texts.0.get(f)?.clone())))
                    .collect());
            }
            Some(KeysRead::Probed(filter)) => Some(filter.clone()),
            Some(KeysRead::Every) => None,
        };
        let (table, columns, hasher) = (self.table.key(), self.key_columns.clone(), hasher.clone());
        let wanted = wanted.to_vec();
        let texts = self
            .load_keys(filter.as_ref(), None, move |_, batches| {
                describe_existing_keys(&table, &columns, &hasher, &wanted, batches)
            })
            .await?;
        Ok(texts.0)
    }

    async fn scan(
        &self,
        batch_rows: usize,
        on_batch: &mut (dyn FnMut(RecordBatch) -> Result<()> + Send),
    ) -> Result<u64> {
        if !self.readable().await? {
            return Ok(0);
        }
        let started = Instant::now();
        let table = self.table.key();
        let schema = key_schema(&self.key_columns);
        let columns = &self.key_columns;
        let mut typed =
            |batch: RecordBatch| on_batch(typed_keys(&table, columns, &schema, &batch)?.keys);
        let rows = self
            .db
            .scan_keys(&self.table, columns, None, false, batch_rows, &mut typed)
            .await?;
        tracing::info!(
            "Key check: read the {rows} existing keys of '{table}' for the check's partitions ({} ms)",
            started.elapsed().as_millis()
        );
        Ok(rows)
    }
}

impl TableKeyLoader {
    /// The keys a set of all the table's keys is sized for up front.
    fn expected_capacity(&self) -> usize {
        self.expected_rows
            .map_or(0, |rows| rows.min(crate::physical::PRESIZED_KEYS) as usize)
    }

    /// Whether the table has keys to read: it was there before the import
    /// took its lock (a distributed stage: it is there now).
    async fn readable(&self) -> Result<bool> {
        Ok(match &self.transaction {
            Some(transaction) => match transaction.open().await? {
                // The table was there before the import took its lock: read it.
                Opened::Ready {
                    exists: true,
                    created: false,
                } => true,
                // Nothing to compare with (a new table, a dry run into a new
                // table), or nothing will be read (the file is skipped, or
                // the import committed already).
                Opened::Ready { .. } | Opened::FileAlreadyImported | Opened::Committed { .. } => {
                    false
                }
            },
            None => self.db.describe_table(&self.table).await?.is_some(),
        })
    }

    /// Scans the existing keys (those `filter` lets through) into the set
    /// `build` makes of their batches, given `share`'s partition, if any;
    /// the import's phase says so meanwhile.
    async fn load_keys<S: HeldKeys>(
        &self,
        filter: Option<&crate::db::KeyFilter>,
        share: Option<&KeyShare>,
        build: impl FnOnce(Option<usize>, std::sync::mpsc::Receiver<RecordBatch>) -> Result<S>
        + Send
        + 'static,
    ) -> Result<S> {
        self.metrics.set_phase(Phase::ReadingKeys);
        let loaded = async {
            let started = Instant::now();
            // A task that keeps a share of the keys learns which from its rows
            // (none: it needs no keys).
            let share = match share {
                Some(share) => match share.assigned().await {
                    Some(partition) => Some((share, partition)),
                    None => return Ok(S::default()),
                },
                None => None,
            };
            if !self.readable().await? {
                return Ok(S::default());
            }
            // The database streams batches on a connection of its own; a blocking
            // thread converts and fingerprints them meanwhile.
            let (sender, receiver) = std::sync::mpsc::sync_channel::<RecordBatch>(KEY_SCAN_QUEUE);
            let partition = share.map(|(_, partition)| partition);
            let builder = tokio::task::spawn_blocking(move || build(partition, receiver));
            let mut on_batch = move |batch: RecordBatch| -> Result<()> {
                // Blocks only while the builder is behind by a full queue.
                sender.send(batch).map_err(|_| {
                    AtlasError::DataFusion(Arc::new(datafusion::error::DataFusionError::Internal(
                        "the existing-key builder stopped early".into(),
                    )))
                })
            };
            let rows = self
                .db
                .scan_keys(
                    &self.table,
                    &self.key_columns,
                    filter,
                    self.locations,
                    KEY_SCAN_BATCH_ROWS,
                    &mut on_batch,
                )
                .await;
            drop(on_batch);
            let built = builder
                .await
                .map_err(|e| AtlasError::task_stopped("the existing-key builder failed", e))?;
            // A conversion error explains a closed queue better than the scan's error.
            let set = built?;
            let rows = rows?;
            self.metrics
                .existing_keys
                .store(rows, std::sync::atomic::Ordering::Relaxed);
            tracing::info!(
                "{} {}: read {rows} existing rows{}{} ({} distinct keys, {} MB, {} ms)",
                S::PURPOSE,
                match filter {
                    Some(f) => format!("by probe on '{}'", f.column),
                    None => format!(
                        "by a scan of ({})",
                        self.key_columns
                            .iter()
                            .map(|c| c.name.as_str())
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                },
                if filter.is_some() {
                    " sharing a key value with the import"
                } else {
                    ""
                },
                match &share {
                    Some((share, partition)) => format!(
                        ", kept partition {partition}'s share of {}",
                        share.partitioner().partitions()
                    ),
                    None => String::new(),
                },
                set.len(),
                set.memory_size() >> 20,
                started.elapsed().as_millis()
            );
            Ok(set)
        }
        .await;
        self.metrics.set_phase(Phase::Writing);
        loaded
    }
}

/// The encoder of existing keys: key columns 0.. in key order, compared as
/// the target's columns compare.
fn existing_key_encoder(columns: &[TargetColumn]) -> KeyEncoder {
    KeyEncoder::new((0..columns.len()).collect()).with_forms(KeyForm::of_columns(columns))
}

/// A set the existing keys are read into, as the log sizes it.
trait HeldKeys: Default + Send + 'static {
    /// What the keys are read for, as the log says it.
    const PURPOSE: &'static str = "Key check";
    fn len(&self) -> usize;
    fn memory_size(&self) -> usize;
}

/// The text of some existing keys, by fingerprint.
#[derive(Debug, Default)]
pub(super) struct KeyTexts(HashMap<Fingerprint, String>);

impl KeyTexts {
    /// Describes the keys of `batch` (encoded by `encoder` as `keys`) whose
    /// fingerprints `wanted` accepts.
    fn add(
        &mut self,
        encoder: &KeyEncoder,
        hasher: &KeyHasher,
        batch: &RecordBatch,
        keys: &EncodedKeys,
        wanted: impl Fn(&Fingerprint) -> bool,
    ) {
        for i in 0..keys.len() {
            let fingerprint = hasher.fingerprint(keys.key(i));
            if wanted(&fingerprint) {
                self.0
                    .entry(fingerprint)
                    .or_insert_with(|| encoder.describe(batch, i));
            }
        }
    }
}

impl HeldKeys for KeyTexts {
    const PURPOSE: &'static str = "Keys of the refusal's first duplicates read again";
    fn len(&self) -> usize {
        self.0.len()
    }

    fn memory_size(&self) -> usize {
        self.0.values().map(String::len).sum()
    }
}

/// The existing keys with the text of the few a probe read.
impl HeldKeys for (KnownKeys, Option<KeyTexts>) {
    fn len(&self) -> usize {
        self.0.len()
    }

    fn memory_size(&self) -> usize {
        self.0.memory_size()
    }
}

impl HeldKeys for ShortFingerprints {
    fn len(&self) -> usize {
        ShortFingerprints::len(self)
    }

    fn memory_size(&self) -> usize {
        ShortFingerprints::memory_size(self)
    }
}

/// The existing keys as they are fingerprinted: with their rows' locations
/// once a batch came with them (a last column after the key columns).
enum KnownKeysBuilder {
    Plain(KeyFingerprints),
    Located(KeyFingerprints<u64>),
}

/// How [`fingerprint_existing_keys`] keeps what it reads.
#[derive(Clone, Copy)]
pub(super) struct ExistingKeysRead<'a> {
    /// Only the keys of this share (a task of a distributed import).
    pub(super) share: Option<&'a (KeyPartitioner, usize)>,
    /// Keep the keys' text too, while they are few (a probe's).
    pub(super) describe: bool,
    /// The keys the set is sized for up front.
    pub(super) capacity: usize,
}

/// Converts batches of existing keys to the key types where they came as
/// text, and fingerprints them (with their rows' locations where the scan
/// read them); with the text of each key (`describe`) where they are at
/// most [`DESCRIBED_PROBE_KEYS`].
pub(super) fn fingerprint_existing_keys(
    table: &str,
    columns: &[TargetColumn],
    hasher: &KeyHasher,
    read: ExistingKeysRead<'_>,
    batches: std::sync::mpsc::Receiver<RecordBatch>,
) -> Result<(KnownKeys, Option<KeyTexts>)> {
    let ExistingKeysRead {
        share,
        describe,
        capacity,
    } = read;
    let encoder = existing_key_encoder(columns);
    let mut keys: Option<KnownKeysBuilder> = None;
    let mut texts = describe.then(KeyTexts::default);
    let mut encoded = EncodedKeys::default();
    let schema = key_schema(columns);
    for scanned in batches {
        let TypedKeys {
            keys: mut batch,
            kept,
        } = typed_keys(table, columns, &schema, &scanned)?;
        let mut locations = (scanned.num_columns() > columns.len())
            .then(|| Arc::clone(scanned.column(columns.len())));
        if let (Some(located), Some(kept)) = (&locations, &kept) {
            locations =
                Some(datafusion::arrow::compute::filter(located, kept).map_err(AtlasError::from)?);
        }
        if let Some((share, partition)) = share {
            let keep: datafusion::arrow::array::BooleanArray = share
                .partitions_of(batch.columns())
                .map_err(AtlasError::from_datafusion)?
                .into_iter()
                .map(|p| Some(p == *partition))
                .collect();
            batch = datafusion::arrow::compute::filter_record_batch(&batch, &keep)
                .map_err(AtlasError::from)?;
            if let Some(located) = &locations {
                locations = Some(
                    datafusion::arrow::compute::filter(located, &keep).map_err(AtlasError::from)?,
                );
            }
        }
        if let Some(described) = &mut texts {
            if described.0.len() + batch.num_rows() > DESCRIBED_PROBE_KEYS {
                texts = None;
            } else {
                encoder.encode(&batch, &mut encoded)?;
                described.add(&encoder, hasher, &batch, &encoded, |_| true);
            }
        }
        let keys = keys.get_or_insert_with(|| match locations {
            Some(_) => KnownKeysBuilder::Located(
                KeyFingerprints::new(encoder.clone(), hasher.clone()).with_capacity(capacity),
            ),
            None => KnownKeysBuilder::Plain(
                KeyFingerprints::new(encoder.clone(), hasher.clone()).with_capacity(capacity),
            ),
        });
        match (keys, &locations) {
            (KnownKeysBuilder::Plain(keys), None) => keys.add(&batch)?,
            (KnownKeysBuilder::Located(keys), Some(locations)) => {
                let locations = locations
                    .as_primitive_opt::<UInt64Type>()
                    .ok_or_else(|| AtlasError::Internal("row locations not as UInt64".into()))?;
                // A key several rows hold is updated by the key, in all of them.
                keys.add_with(&batch, |i| locations.value(i), |_, _| SEVERAL_ROWS)?
            }
            _ => {
                return Err(AtlasError::Internal(
                    "a key scan sent row locations with some batches only".into(),
                ));
            }
        }
    }
    let keys = match keys {
        None => KnownKeys::default(),
        Some(KnownKeysBuilder::Plain(keys)) => KnownKeys::Plain(keys.finish()),
        Some(KnownKeysBuilder::Located(keys)) => KnownKeys::Located(keys.finish()),
    };
    Ok((keys, texts))
}

/// As [`fingerprint_existing_keys`], into short fingerprints: one hash a key
/// and 8 bytes an entry, with no full set built first.
fn short_fingerprint_existing_keys(
    table: &str,
    columns: &[TargetColumn],
    hasher: &KeyHasher,
    capacity: usize,
    batches: std::sync::mpsc::Receiver<RecordBatch>,
) -> Result<ShortFingerprints> {
    let mut set = ShortFingerprints::with_capacity(capacity);
    encode_existing_keys(table, columns, batches, |_, _, keys| {
        set.add_keys(hasher, keys)
    })?;
    set.shrink_to_fit();
    Ok(set)
}

/// The text of the existing keys whose fingerprints are among `wanted`.
fn describe_existing_keys(
    table: &str,
    columns: &[TargetColumn],
    hasher: &KeyHasher,
    wanted: &[Fingerprint],
    batches: std::sync::mpsc::Receiver<RecordBatch>,
) -> Result<KeyTexts> {
    let mut texts = KeyTexts::default();
    encode_existing_keys(table, columns, batches, |encoder, batch, keys| {
        texts.add(encoder, hasher, batch, keys, |f| wanted.contains(f))
    })?;
    Ok(texts)
}

/// Converts each batch of existing keys to the key types and encodes it
/// (key columns 0.. in key order), for `each`.
fn encode_existing_keys(
    table: &str,
    columns: &[TargetColumn],
    batches: std::sync::mpsc::Receiver<RecordBatch>,
    mut each: impl FnMut(&KeyEncoder, &RecordBatch, &EncodedKeys),
) -> Result<()> {
    let encoder = existing_key_encoder(columns);
    let schema = key_schema(columns);
    let mut keys = EncodedKeys::default();
    for scanned in batches {
        let batch = typed_keys(table, columns, &schema, &scanned)?.keys;
        encoder.encode(&batch, &mut keys)?;
        each(&encoder, &batch, &keys);
    }
    Ok(())
}

/// A batch of existing keys as the scan gave it (text where the database
/// sends text) converted to the key's target types (`schema`), with the same
/// code as the import's values, and which of the scanned rows it holds.
///
/// A row holding a value its column's type does not read (SQLite keeps any
/// value in any column: `abc` in an INTEGER, a date as `01/02/2024`) is left
/// out: every imported value is converted to the column's type before it is
/// compared or written, so none can equal such a value, as the database's
/// own comparison agrees. `kept` is `None` where every row is kept.
fn typed_keys(
    table: &str,
    columns: &[TargetColumn],
    schema: &datafusion::arrow::datatypes::SchemaRef,
    batch: &RecordBatch,
) -> Result<TypedKeys> {
    let mut typed = Vec::with_capacity(columns.len());
    let mut unreadable: Vec<usize> = Vec::new();
    for (i, column) in columns.iter().enumerate() {
        // Binary keys arrive as hex text from every database's scan.
        if column.data_type == datafusion::arrow::datatypes::DataType::Binary
            && let Some(hex) = batch
                .column(i)
                .as_any()
                .downcast_ref::<datafusion::arrow::array::StringArray>()
        {
            typed.push(crate::typed_text::hex_to_binary(hex).map_err(|index| {
                AtlasError::Internal(format!(
                    "the key scan of '{table}' sent {:?} as the hex of column '{}'",
                    hex.value(index),
                    column.name
                ))
            })?);
            continue;
        }
        // The database returns times in the zone of atlas-import's
        // sessions, UTC: none is placed in the column's zone again.
        let in_session_zone;
        let column = match column.unzoned_in {
            Some(_) => {
                in_session_zone = TargetColumn {
                    unzoned_in: None,
                    ..column.clone()
                };
                &in_session_zone
            }
            None => column,
        };
        let (converted, failures) = coerce_column_lenient(batch.column(i), column);
        unreadable.extend(failures.iter().map(|f| f.index));
        typed.push(converted);
    }
    let keys = RecordBatch::try_new(Arc::clone(schema), typed).map_err(AtlasError::from)?;
    if unreadable.is_empty() {
        return Ok(TypedKeys { keys, kept: None });
    }
    let mut keep = vec![true; keys.num_rows()];
    for index in unreadable {
        keep[index] = false;
    }
    let kept = datafusion::arrow::array::BooleanArray::from(keep);
    tracing::debug!(
        "Key check: {} existing rows of '{table}' hold values their columns' types do not read; no imported row can repeat them",
        kept.false_count()
    );
    Ok(TypedKeys {
        keys: datafusion::arrow::compute::filter_record_batch(&keys, &kept)
            .map_err(AtlasError::from)?,
        kept: Some(kept),
    })
}

/// Existing keys converted to the key's types ([`typed_keys`]).
struct TypedKeys {
    keys: RecordBatch,
    /// The scanned rows `keys` holds, where some were left out.
    kept: Option<datafusion::arrow::array::BooleanArray>,
}
