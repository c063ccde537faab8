//! One partition of [`super::DuplicateCheckExec`]: the stream that checks its
//! rows ([`CheckStream`]) and what it remembers of them ([`PartitionCheck`]).

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

use datafusion::arrow::array::{
    ArrayRef, AsArray, BooleanArray, RecordBatch, StringArray, UInt32Array, UInt64Array,
};
use datafusion::arrow::compute::{filter_record_batch, take};
use datafusion::arrow::datatypes::{SchemaRef, UInt64Type};
use datafusion::error::{DataFusionError, Result};
use datafusion::execution::memory_pool::MemoryReservation;
use datafusion::physical_plan::SendableRecordBatchStream;
use datafusion::physical_plan::metrics::{BaselineMetrics, Count};
use futures::{FutureExt, StreamExt};

use super::existing::{KeyFeed, LoadedKeys, Staged};
use super::share::KeyShare;
use crate::error::AtlasError;
use crate::key::{EncodedKeys, Fingerprint, Fingerprints, KeyEncoder, KeyHasher};
use crate::options::OnDuplicate;
use crate::physical::TableTransaction;
use crate::report::{
    DUPLICATE_SAMPLES, DuplicateKind, DuplicateSample, ImportMetrics, KEY_NOT_KEPT,
};
use sha2::{Digest, Sha256};

/// Bytes of key columns a partition keeps, while the existing keys are not
/// known yet, to describe its first duplicates in a refusal (the samples are
/// the first rows, so the first batches are what matters).
const PENDING_SAMPLE_BYTES: usize = 1 << 20;

/// Where a partition's stream is.
pub(super) enum Phase {
    /// Nothing read yet: with the preload strategy, modes that decide each
    /// row before it goes on wait for the existing keys first.
    Start,
    /// Checking the input's batches.
    Checking,
    /// The input ended: the rows that went on (or were held) before the
    /// existing keys were known are decided now.
    Resolving,
    /// Handing out the batches held for their verdicts.
    Replaying(VecDeque<RecordBatch>),
    /// Everything reported.
    Done,
}

/// One partition's stream: its input, the shared feed of the existing keys,
/// and its [`PartitionCheck`].
pub(super) struct CheckStream {
    pub(super) phase: Phase,
    pub(super) input: SendableRecordBatchStream,
    pub(super) feed: KeyFeed,
    /// The share of the table's keys this task keeps, learned from its
    /// first rows (a task of a distributed plan).
    pub(super) share: Option<Arc<KeyShare>>,
    /// The key's columns in the input.
    pub(super) key_columns: Vec<usize>,
    /// The input's first item, read ahead to learn the key share.
    pub(super) first: Option<Result<RecordBatch>>,
    pub(super) check: PartitionCheck,
    /// Where a task of a distributed plan leaves its duplicates under `ON
    /// DUPLICATE ERROR` for the write (in a later stage, which cannot see
    /// this task's counters) to refuse with: the import's transaction.
    pub(super) refusals: Option<Arc<TableTransaction>>,
}

impl CheckStream {
    pub(super) async fn next(mut self) -> Option<(Result<RecordBatch>, Self)> {
        loop {
            match &mut self.phase {
                Phase::Start => {
                    self.phase = Phase::Checking;
                    // A task keeping a share of the keys learns which from
                    // its first rows, before it waits for the keys.
                    if self.share.is_some() {
                        self.first = self.next_input().await;
                    }
                    if let KeyFeed::Preload(loading) = &self.feed
                        && self.check.needs_verdicts()
                    {
                        match loading.clone().await {
                            Ok(keys) => self.check.known = Some(keys),
                            Err(e) => return self.fail(e.into()),
                        }
                    }
                }
                Phase::Checking => match self.next_input().await {
                    Some(Ok(batch)) => {
                        if let Err(e) = self.learn_loaded_keys() {
                            return self.fail(e);
                        }
                        let (out, staged) = match self.check.check(batch) {
                            Ok(checked) => checked,
                            Err(e) => return self.fail(e),
                        };
                        if let (Some(values), KeyFeed::Probe { stage, matched, .. }) =
                            (staged, &self.feed)
                            && stage.send(Staged::Values(values)).await.is_err()
                        {
                            // The stager stopped: its error says why.
                            let error = match matched.clone().await {
                                Err(e) => e.into(),
                                Ok(_) => {
                                    DataFusionError::Internal("the key stager stopped early".into())
                                }
                            };
                            return self.fail(error);
                        }
                        return Some((Ok(out), self));
                    }
                    Some(Err(e)) => return self.fail(e),
                    None => self.phase = Phase::Resolving,
                },
                Phase::Resolving => {
                    if let KeyFeed::Probe { deferred, .. } = &self.feed
                        && !self.check.needs_verdicts()
                        && self.refusals.is_none()
                    {
                        // No row waits for this verdict, and it waits for
                        // every partition's values: ending the stream now lets
                        // a merge above read the others; the write awaits the
                        // resolution before it decides (`ExistingKeys::settle`).
                        let deferred = Arc::clone(deferred);
                        let mut rest = self;
                        let task = tokio::spawn(async move {
                            let held = rest.resolve().await?;
                            if held.is_empty() {
                                Ok(())
                            } else {
                                Err(DataFusionError::Internal(
                                    "a check partition held rows it deferred".into(),
                                ))
                            }
                        });
                        deferred.lock().expect("deferred lock").push(task);
                        return None;
                    }
                    match self.resolve().await {
                        Ok(held) => self.phase = Phase::Replaying(held),
                        Err(e) => return self.fail(e),
                    }
                }
                Phase::Replaying(batches) => match batches.pop_front() {
                    Some(batch) => return Some((Ok(batch), self)),
                    None => {
                        if let Some(refusal) = self.refusal()
                            && let Err(e) = async { refusal?.record().await }.await
                        {
                            return self.fail(e.into());
                        }
                        self.phase = Phase::Done;
                    }
                },
                Phase::Done => return None,
            }
        }
    }

    /// Awaits the existing keys (the probe: once this partition said it is
    /// done) and decides what the partition held or remembers: the batches
    /// that go on now.
    async fn resolve(&mut self) -> Result<VecDeque<RecordBatch>> {
        // Always awaited: a failed load fails the import even when every row
        // was decided before it failed.
        let known = match &self.feed {
            KeyFeed::Preload(loading) => loading.clone().await,
            KeyFeed::Probe { stage, matched, .. } => {
                let _ = stage.send(Staged::Done).await;
                matched.clone().await
            }
        }
        .map_err(DataFusionError::from)?;
        let held = self.check.resolve(&known)?;
        self.check.known = Some(known);
        Ok(held.into())
    }

    /// The next input batch (the one read ahead first); tells the key share
    /// this task's partition at its first rows, or that it has none.
    async fn next_input(&mut self) -> Option<Result<RecordBatch>> {
        if let Some(first) = self.first.take() {
            return Some(first);
        }
        let next = self.input.next().await;
        if let Some(share) = &self.share {
            match &next {
                Some(Ok(batch)) if batch.num_rows() > 0 => {
                    let keys: Vec<_> = self
                        .key_columns
                        .iter()
                        .map(|&i| Arc::clone(batch.column(i)))
                        .collect();
                    if let Err(e) = share.check_rows(&keys) {
                        return Some(Err(e));
                    }
                }
                None | Some(Err(_)) => share.assign_none(),
                Some(Ok(_)) => {}
            }
        }
        next
    }

    /// Takes the preloaded keys as soon as they are there (polled, not
    /// peeked: a shared future completes only when polled).
    fn learn_loaded_keys(&mut self) -> Result<()> {
        if self.check.known.is_some() {
            return Ok(());
        }
        if let KeyFeed::Preload(loading) = &self.feed {
            match loading.clone().now_or_never() {
                Some(Ok(keys)) => self.check.known = Some(keys),
                Some(Err(e)) => return Err(e.into()),
                None => {}
            }
        }
        Ok(())
    }

    /// This partition's duplicates for the write to refuse with (a task of
    /// a distributed plan under `ON DUPLICATE ERROR`).
    fn refusal(&self) -> Option<crate::error::Result<Refusal>> {
        let metrics = &self.check.import_metrics;
        let transaction = self.refusals.as_ref()?;
        if self.check.on_duplicate != OnDuplicate::Error || !metrics.has_duplicates() {
            return None;
        }
        Some(
            serde_json::to_string(&metrics.duplicate_tally())
                .map(|tally| Refusal {
                    transaction: Arc::clone(transaction),
                    // Named by what it holds: a retried task (the same rows)
                    // replaces its own, other partitions (other rows) add.
                    name: hex::encode(&Sha256::digest(tally.as_bytes())[..16]),
                    tally,
                })
                .map_err(|e| AtlasError::Internal(format!("encoding a refusal: {e}"))),
        )
    }

    fn fail(mut self, e: DataFusionError) -> Option<(Result<RecordBatch>, Self)> {
        self.phase = Phase::Done;
        Some((Err(e), self))
    }
}

/// What one task of a distributed check refused, to record for the write.
struct Refusal {
    transaction: Arc<TableTransaction>,
    name: String,
    /// The partition's `DuplicateTally`, as JSON.
    tally: String,
}

impl Refusal {
    /// Records it in `import_refusals`, under the import's id.
    async fn record(self) -> crate::error::Result<()> {
        let id = self.transaction.import_id().unwrap_or_default();
        let mut catalog = self.transaction.database().catalog().await?;
        catalog.record_refusal(id, &self.name, &self.tally).await
    }
}

/// A row that repeated a key of the import before the existing keys were
/// known: a duplicate inside the file unless the key turns out to exist.
#[derive(Debug, Clone, Copy)]
struct Repeat {
    fingerprint: Fingerprint,
    row: u64,
    first_row: u64,
}

/// A batch held for its verdicts (probe strategy, modes that decide each row
/// before it goes on), with each row's fingerprint and, for a row that
/// repeats a key of the import, the row of its first occurrence.
struct Held {
    batch: RecordBatch,
    rows: Vec<(Fingerprint, Option<u64>)>,
}

/// A duplicate found in a batch: (index in batch, source row, kind).
type Found = (usize, u64, DuplicateKind);

/// The state of one partition of the check.
pub(super) struct PartitionCheck {
    pub(super) encoder: KeyEncoder,
    pub(super) hasher: KeyHasher,
    pub(super) keys: EncodedKeys,
    pub(super) fingerprints: Vec<Fingerprint>,
    /// The existing keys, once known (preload: once loaded; probe: at the
    /// end).
    pub(super) known: Option<LoadedKeys>,
    /// The probe strategy's column (its place in the batch): the values of
    /// first occurrences are sent to the collector.
    pub(super) probed: Option<usize>,
    /// Keys of the import seen in this partition, with their first source row.
    pub(super) seen: Fingerprints<u64>,
    /// The last row that went on before the existing keys were known (`ON
    /// DUPLICATE ERROR`: its rows need no verdict before they are written);
    /// those rows' keys are in `seen` and are decided at the end.
    pub(super) pending_until: u64,
    /// The rows among them that repeated a key of the import.
    repeats: Vec<Repeat>,
    /// Key columns of the first pending rows, for the report's samples: the
    /// key columns of a batch and the source row of each of its rows.
    samples: Vec<(RecordBatch, Vec<u64>)>,
    sample_bytes: usize,
    /// The key text of the first pending repeats (source row, text), for
    /// the repeat and its first occurrence: described as they are found,
    /// whatever `samples` could keep.
    repeat_keys: Vec<(u64, String)>,
    /// Batches held for their verdicts.
    held: Vec<Held>,
    held_bytes: usize,
    pub(super) on_duplicate: OnDuplicate,
    /// The output schema when the duplicates are the output.
    pub(super) report_duplicates: Option<SchemaRef>,
    /// The output schema.
    pub(super) schema: SchemaRef,
    pub(super) chunk_rows: u64,
    pub(super) row_column: usize,
    /// The last source row seen, to verify source order.
    pub(super) last_row: u64,
    pub(super) import_metrics: Arc<ImportMetrics>,
    pub(super) reservation: MemoryReservation,
    pub(super) baseline: BaselineMetrics,
    pub(super) duplicates_existing: Count,
    pub(super) duplicates_in_file: Count,
    /// Rows left out as duplicates (`ON DUPLICATE SKIP`).
    pub(super) skipped: Count,
    /// Rows that update an existing row (`ON DUPLICATE UPDATE`).
    pub(super) updated: Count,
}

/// What one partition of the check is asked to do: the same for every
/// partition of the plan.
pub(super) struct CheckSettings {
    pub(super) encoder: KeyEncoder,
    pub(super) hasher: KeyHasher,
    /// The probe strategy's column, by its place in the batch.
    pub(super) probed: Option<usize>,
    pub(super) on_duplicate: OnDuplicate,
    /// The output schema when the duplicates are the output (a dry run).
    pub(super) report_duplicates: Option<SchemaRef>,
    /// The output schema.
    pub(super) schema: SchemaRef,
    pub(super) chunk_rows: u64,
    /// The place of the source row number in the batch.
    pub(super) row_column: usize,
    /// The keys this partition is expected to see (0: unknown).
    pub(super) seen_capacity: usize,
}

/// Where one partition of the check accounts for its work: the import's
/// counters, its memory, the operator's metrics.
pub(super) struct CheckAccounting {
    pub(super) import_metrics: Arc<ImportMetrics>,
    pub(super) reservation: MemoryReservation,
    pub(super) baseline: BaselineMetrics,
    pub(super) duplicates_existing: Count,
    pub(super) duplicates_in_file: Count,
    pub(super) skipped: Count,
    pub(super) updated: Count,
}

impl PartitionCheck {
    pub(super) fn new(settings: CheckSettings, accounting: CheckAccounting) -> Self {
        let CheckSettings {
            encoder,
            hasher,
            probed,
            on_duplicate,
            report_duplicates,
            schema,
            chunk_rows,
            row_column,
            seen_capacity,
        } = settings;
        let CheckAccounting {
            import_metrics,
            reservation,
            baseline,
            duplicates_existing,
            duplicates_in_file,
            skipped,
            updated,
        } = accounting;
        Self {
            encoder,
            hasher,
            keys: EncodedKeys::default(),
            fingerprints: Vec::new(),
            known: None,
            probed,
            // Sized up front where asked (an unbounded pool): growing a set
            // of millions doubles it several times, and holds both tables
            // while it moves. The first batch accounts for it.
            seen: Fingerprints::with_capacity(seen_capacity),
            pending_until: 0,
            repeats: Vec::new(),
            samples: Vec::new(),
            sample_bytes: 0,
            repeat_keys: Vec::new(),
            held: Vec::new(),
            held_bytes: 0,
            on_duplicate,
            report_duplicates,
            schema,
            chunk_rows,
            row_column,
            last_row: 0,
            import_metrics,
            reservation,
            baseline,
            duplicates_existing,
            duplicates_in_file,
            skipped,
            updated,
        }
    }

    /// Whether every row needs its verdict before it goes on (all but the
    /// default `ON DUPLICATE ERROR`, whose rows are written and whose verdict
    /// is the commit or the rollback).
    pub(super) fn needs_verdicts(&self) -> bool {
        self.report_duplicates.is_some()
            || matches!(self.on_duplicate, OnDuplicate::Skip | OnDuplicate::Update)
    }

    /// Checks a batch: the rows that go on, and (probe) the values to send.
    fn check(&mut self, batch: RecordBatch) -> Result<(RecordBatch, Option<ArrayRef>)> {
        if self.on_duplicate == OnDuplicate::Allow && self.report_duplicates.is_none() {
            // No row-level check: every row goes on.
            self.import_metrics
                .rows_checked
                .fetch_add(batch.num_rows() as u64, Ordering::Relaxed);
            self.baseline.record_output(batch.num_rows());
            return Ok((batch, None));
        }
        let started = Instant::now();
        let elapsed = self.baseline.elapsed_compute().clone();
        let timer = elapsed.timer();
        self.encoder.encode(&batch, &mut self.keys)?;
        self.hasher.fingerprints(&self.keys, &mut self.fingerprints);
        let rows = batch
            .column(self.row_column)
            .as_primitive::<UInt64Type>()
            .clone();
        for &row in rows.values() {
            if row <= self.last_row {
                return Err(DataFusionError::Internal(format!(
                    "DuplicateCheckExec received source row {row} after row {}: its input must keep source order",
                    self.last_row
                )));
            }
            self.last_row = row;
        }
        let mut to_stage: Vec<u32> = Vec::new();
        let out = match &self.known {
            Some(known) => {
                // Decided now, row by row.
                let mut keep = Vec::with_capacity(batch.num_rows());
                let mut found: Vec<Found> = Vec::new();
                for (i, &row) in rows.values().iter().enumerate() {
                    let fingerprint = self.fingerprints[i];
                    if known.contains(fingerprint) {
                        found.push((i, row, DuplicateKind::Existing));
                        keep.push(false);
                    } else if let Some(first_row) = self.seen.insert(fingerprint, row) {
                        found.push((i, row, in_file(first_row)));
                        keep.push(false);
                    } else {
                        keep.push(true);
                    }
                }
                self.record(&found, |i| self.encoder.describe(&batch, i));
                let location = |i: usize| known.location(self.fingerprints[i]);
                self.emit(batch.clone(), keep, &found, location)?
            }
            None if self.needs_verdicts() => {
                // Probe: held until the database has matched the keys.
                let mut held = Vec::with_capacity(batch.num_rows());
                for (i, &row) in rows.values().iter().enumerate() {
                    let fingerprint = self.fingerprints[i];
                    let first_row = self.seen.insert(fingerprint, row);
                    if first_row.is_none() {
                        to_stage.push(i as u32);
                    }
                    held.push((fingerprint, first_row));
                }
                self.held_bytes += batch.get_array_memory_size();
                self.held.push(Held {
                    batch: batch.clone(),
                    rows: held,
                });
                // Nothing goes on now (an empty batch of the output's
                // schema, which the flag or `duplicate_of` column changes).
                RecordBatch::new_empty(Arc::clone(
                    self.report_duplicates.as_ref().unwrap_or(&self.schema),
                ))
            }
            None => {
                // Not known yet whether the keys exist: decided at the end;
                // the rows go on meanwhile (unless a duplicate was found).
                let mut sample_batch: Option<usize> = None;
                for (i, &row) in rows.values().iter().enumerate() {
                    let fingerprint = self.fingerprints[i];
                    self.pending_until = row;
                    match self.seen.insert(fingerprint, row) {
                        Some(first_row) => {
                            if self.repeat_keys.len() < 2 * DUPLICATE_SAMPLES {
                                let key = self.encoder.describe(&batch, i);
                                self.repeat_keys.push((first_row, key.clone()));
                                self.repeat_keys.push((row, key));
                            }
                            self.repeats.push(Repeat {
                                fingerprint,
                                row,
                                first_row,
                            })
                        }
                        None => to_stage.push(i as u32),
                    }
                    self.keep_sample(&batch, &mut sample_batch, i, row);
                }
                self.emit(batch.clone(), vec![true; batch.num_rows()], &[], |_| None)?
            }
        };
        self.account()?;
        let staged = match self.probed {
            Some(column) if !to_stage.is_empty() => Some(take(
                batch.column(column).as_ref(),
                &UInt32Array::from(to_stage),
                None,
            )?),
            _ => None,
        };
        self.import_metrics
            .rows_checked
            .fetch_add(out.num_rows() as u64, Ordering::Relaxed);
        self.import_metrics
            .check_nanos
            .fetch_add(started.elapsed().as_nanos() as u64, Ordering::Relaxed);
        timer.done();
        self.baseline.record_output(out.num_rows());
        Ok((out, staged))
    }

    /// The rows of `batch` that go on under the policy, given the duplicates
    /// `found`, which rows to `keep` and (`ON DUPLICATE UPDATE`) the location
    /// of the existing row a row's key names, where known.
    fn emit(
        &self,
        batch: RecordBatch,
        keep: Vec<bool>,
        found: &[Found],
        location: impl Fn(usize) -> Option<u64>,
    ) -> Result<RecordBatch> {
        Ok(if let Some(schema) = &self.report_duplicates {
            let duplicates = filter_record_batch(
                &batch,
                &BooleanArray::from(keep.iter().map(|k| !k).collect::<Vec<_>>()),
            )?;
            let of: StringArray = found
                .iter()
                .map(|(_, _, kind)| {
                    Some(match kind {
                        DuplicateKind::Existing => "existing".to_string(),
                        DuplicateKind::InFile { first_row, .. } => format!("row {first_row}"),
                    })
                })
                .collect();
            let mut columns = duplicates.columns().to_vec();
            let row = columns.pop().expect("the row number column");
            columns.push(Arc::new(of));
            columns.push(row);
            RecordBatch::try_new(Arc::clone(schema), columns)?
        } else if self.on_duplicate == OnDuplicate::Update {
            // Every row goes on; the duplicates are flagged as updates.
            let update = BooleanArray::from(keep.iter().map(|k| !k).collect::<Vec<_>>());
            let locations: UInt64Array = keep
                .iter()
                .enumerate()
                .map(|(i, &k)| if k { None } else { location(i) })
                .collect();
            let mut columns = batch.columns().to_vec();
            let row = columns.pop().expect("the row number column");
            columns.push(Arc::new(update));
            columns.push(Arc::new(locations));
            columns.push(row);
            RecordBatch::try_new(Arc::clone(&self.schema), columns)?
        } else if self.on_duplicate == OnDuplicate::Error && self.import_metrics.has_duplicates() {
            batch.slice(0, 0)
        } else if found.is_empty() {
            batch
        } else {
            filter_record_batch(&batch, &BooleanArray::from(keep))?
        })
    }

    /// Keeps the key columns of `batch` (once per batch) for describing
    /// pending row `i` (source row `row`) later, within the budget.
    fn keep_sample(&mut self, batch: &RecordBatch, kept: &mut Option<usize>, i: usize, row: u64) {
        if kept.is_none() {
            if self.sample_bytes >= PENDING_SAMPLE_BYTES {
                return;
            }
            let Ok(keys) = batch.project(self.encoder.columns()) else {
                return;
            };
            self.sample_bytes += keys.get_array_memory_size();
            self.samples.push((keys, vec![u64::MAX; batch.num_rows()]));
            *kept = Some(self.samples.len() - 1);
        }
        if let Some(b) = kept {
            self.samples[*b].1[i] = row;
        }
    }

    /// The key text of pending source row `row`, if its keys were kept.
    fn describe_pending(&self, row: u64) -> Option<String> {
        let encoder = KeyEncoder::new((0..self.encoder.columns().len()).collect());
        self.samples
            .iter()
            .find_map(|(keys, rows)| {
                let i = rows.iter().position(|&r| r == row)?;
                Some(encoder.describe(keys, i))
            })
            .or_else(|| {
                let (_, key) = self.repeat_keys.iter().find(|(r, _)| *r == row)?;
                Some(key.clone())
            })
    }

    /// Decides what waited for the existing keys, with the verdicts the rows
    /// would have had had the keys been known from the start: a row whose
    /// key exists is a duplicate of an existing row (even when it also
    /// repeated a row of the file); the other repeats are duplicates inside
    /// the file. Returns the batches held for their verdicts, checked.
    fn resolve(&mut self, known: &LoadedKeys) -> Result<Vec<RecordBatch>> {
        if self.pending_until > 0 {
            let mut found: Vec<(u64, DuplicateKind, Fingerprint)> = Vec::new();
            // First occurrences: every key of the import is in `seen` with
            // its first row; those of the pending rows are checked now.
            for (fingerprint, first_row) in self.seen.iter() {
                if first_row <= self.pending_until && known.contains(fingerprint) {
                    found.push((first_row, DuplicateKind::Existing, fingerprint));
                }
            }
            for repeat in std::mem::take(&mut self.repeats) {
                let kind = if known.contains(repeat.fingerprint) {
                    DuplicateKind::Existing
                } else {
                    in_file(repeat.first_row)
                };
                found.push((repeat.row, kind, repeat.fingerprint));
            }
            found.sort_by_key(|(row, _, _)| *row);
            let rows: Vec<Found> = found
                .iter()
                .enumerate()
                .map(|(i, (row, kind, _))| (i, *row, kind.clone()))
                .collect();
            self.record(&rows, |i| {
                let (row, kind, fingerprint) = &found[i];
                self.describe_pending(*row).unwrap_or_else(|| {
                    // An existing key: the write reads it from the table
                    // if the import is refused.
                    if *kind == DuplicateKind::Existing {
                        self.import_metrics.record_undescribed(*row, *fingerprint);
                    }
                    KEY_NOT_KEPT.to_string()
                })
            });
            self.samples.clear();
            self.sample_bytes = 0;
            self.repeat_keys.clear();
        }
        let mut out = Vec::with_capacity(self.held.len());
        for held in std::mem::take(&mut self.held) {
            let rows = held
                .batch
                .column(self.row_column)
                .as_primitive::<UInt64Type>();
            let mut keep = Vec::with_capacity(held.rows.len());
            let mut found: Vec<Found> = Vec::new();
            for (i, &(fingerprint, first_row)) in held.rows.iter().enumerate() {
                let row = rows.value(i);
                let kind = match first_row {
                    _ if known.contains(fingerprint) => Some(DuplicateKind::Existing),
                    None => None,
                    Some(first) => Some(in_file(first)),
                };
                keep.push(kind.is_none());
                if let Some(kind) = kind {
                    found.push((i, row, kind));
                }
            }
            self.record(&found, |i| self.encoder.describe(&held.batch, i));
            let location = |i: usize| known.location(held.rows[i].0);
            let batch = self.emit(held.batch, keep, &found, location)?;
            self.import_metrics
                .rows_checked
                .fetch_add(batch.num_rows() as u64, Ordering::Relaxed);
            out.push(batch);
        }
        self.held_bytes = 0;
        self.account()?;
        Ok(out)
    }

    /// Counts `found` in the metrics and the report; `describe` gives the key
    /// text of entry `i` (only the few that can become samples are described).
    fn record(&self, found: &[Found], describe: impl Fn(usize) -> String) {
        if found.is_empty() {
            return;
        }
        let existing_count = found
            .iter()
            .filter(|(_, _, k)| *k == DuplicateKind::Existing)
            .count();
        self.duplicates_existing.add(existing_count);
        self.duplicates_in_file.add(found.len() - existing_count);
        let samples: Vec<DuplicateSample> = found
            .iter()
            .take(DUPLICATE_SAMPLES)
            .map(|(i, row, kind)| DuplicateSample {
                row: *row,
                line: None,
                key: describe(*i),
                kind: kind.clone(),
            })
            .collect();
        let all: Vec<DuplicateSample> = found
            .iter()
            .skip(DUPLICATE_SAMPLES)
            .map(|(_, row, kind)| DuplicateSample {
                row: *row,
                line: None,
                key: String::new(),
                kind: kind.clone(),
            })
            .collect();
        self.import_metrics
            .record_duplicates(&samples, &all, self.chunk_rows);
        let counter = match self.on_duplicate {
            OnDuplicate::Skip => Some(&self.import_metrics.skipped),
            OnDuplicate::Update => Some(&self.import_metrics.updated),
            OnDuplicate::Error | OnDuplicate::Allow => None,
        };
        if let Some(counter) = counter {
            counter.fetch_add(found.len() as u64, Ordering::Relaxed);
        }
        match self.on_duplicate {
            OnDuplicate::Skip => self.skipped.add(found.len()),
            OnDuplicate::Update => self.updated.add(found.len()),
            OnDuplicate::Error | OnDuplicate::Allow => {}
        }
    }

    /// Accounts what the partition holds in the memory pool.
    fn account(&mut self) -> Result<()> {
        let held = self.seen.memory_size()
            + self.repeats.capacity() * std::mem::size_of::<Repeat>()
            + self.sample_bytes
            + self.held_bytes;
        self.reservation.try_resize(held).map_err(|e| {
            DataFusionError::from(AtlasError::ResourcesExhausted(format!(
                "the duplicate check holds {} keys of the import ({} MB) and reached the memory limit ({e})",
                self.seen.len(),
                held >> 20
            )))
        })
    }
}

fn in_file(first_row: u64) -> DuplicateKind {
    DuplicateKind::InFile {
        first_row,
        first_line: None,
    }
}
