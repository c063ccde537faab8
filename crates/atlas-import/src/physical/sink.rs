//! [`ImportSink`]: writes the checked rows in chunks inside the import's one
//! transaction, and commits only when everything succeeded.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

use async_trait::async_trait;
use datafusion::arrow::array::{AsArray, BooleanArray, RecordBatch};
use datafusion::arrow::compute::kernels::boolean::not;
use datafusion::arrow::compute::{concat_batches, filter_record_batch};
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::datasource::sink::DataSink;
use datafusion::error::Result;
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::physical_plan::metrics::{ExecutionPlanMetricsSet, MetricBuilder, MetricsSet};
use datafusion::physical_plan::{DisplayAs, DisplayFormatType};
use futures::StreamExt;
use tokio::sync::{Mutex, MutexGuard};

use super::session::{ImportSession, Opened};
use crate::db::{ChunkStream, DbKind, FileRecord, ImportTransaction};
use crate::error::AtlasError;
use crate::key::{EncodedKeys, KeyEncoder, KeySet};
use crate::names::TableRef;
use crate::options::OnDuplicate;
use crate::report::ImportMetrics;
use crate::schema::TargetColumn;

/// Most chunk lines to log with their duplicate counts.
const MAX_CHUNK_LOG_LINES: usize = 20;

/// Holds the import transaction while the plan runs: the existing-key loader
/// reads through it, the sink writes through it and finally commits or rolls it
/// back. Whoever finishes the import takes it out.
#[derive(Default)]
pub struct TransactionSlot {
    inner: Mutex<Option<Box<dyn ImportTransaction>>>,
}

impl fmt::Debug for TransactionSlot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("TransactionSlot")
    }
}

impl TransactionSlot {
    /// An empty slot (for plans that are only explained).
    pub fn empty() -> Self {
        Self::default()
    }

    /// Puts the transaction in.
    pub async fn put(&self, tx: Box<dyn ImportTransaction>) {
        *self.inner.lock().await = Some(tx);
    }

    /// Locks the slot for one operation.
    pub async fn lock(&self) -> MutexGuard<'_, Option<Box<dyn ImportTransaction>>> {
        self.inner.lock().await
    }

    /// Takes the transaction out.
    pub async fn take(&self) -> Option<Box<dyn ImportTransaction>> {
        self.inner.lock().await.take()
    }

    /// Rolls back the transaction if it is still open.
    pub async fn rollback(&self) -> crate::error::Result<()> {
        match self.take().await {
            Some(tx) => tx.rollback().await,
            None => Ok(()),
        }
    }
}

/// The error when the transaction is gone (a plan built only to be explained).
pub(crate) fn not_open() -> AtlasError {
    AtlasError::Usage(
        "the import transaction is not open (was the plan only meant to be explained?)".into(),
    )
}

/// Writes the rows that survive the duplicate check into the target table.
///
/// Runs in a `DataSinkExec`, hence on one partition. Rows are grouped into chunks
/// of `chunk_rows` and each chunk is written as one database operation (one
/// `COPY` on PostgreSQL, a few multi-row `INSERT`s on SQLite), one after another,
/// all inside the import's transaction. Writing overlaps with the check: a refused
/// import rolls back, so what the user observes is check-then-write.
///
/// The transaction opens when the sink starts, through the [`ImportSession`]
/// (begin, lock, file check, table creation); a file already imported under
/// `ON DUPLICATE FILE SKIP` ends the plan there, reading nothing.
///
/// When the input ends: under `ON DUPLICATE ERROR` any duplicate rolls everything
/// back and fails with the [`crate::report::DuplicateReport`]; otherwise the
/// `file_imports` row is written and the transaction commits. Any error rolls back.
#[derive(Debug)]
pub struct ImportSink {
    /// Target table.
    table: TableRef,
    /// Target columns written, in the order of the input's first columns.
    columns: Vec<TargetColumn>,
    /// Which database (for display).
    db_kind: DbKind,
    /// Duplicate policy.
    on_duplicate: OnDuplicate,
    /// Key column indices among `columns` (for `ON DUPLICATE UPDATE`).
    key_columns: Vec<usize>,
    /// Rows per chunk.
    chunk_rows: usize,
    /// The import's transaction and what opens it.
    session: Arc<ImportSession>,
    /// Live counters of the import.
    import_metrics: Arc<ImportMetrics>,
    /// The input schema (target columns, then the source row number).
    schema: SchemaRef,
    /// Operator metrics: rows written, chunks, time writing.
    metrics: ExecutionPlanMetricsSet,
    /// Rows written per source file (for `file_imports.record_count`).
    written_per_file: std::sync::Mutex<Vec<u64>>,
}

impl ImportSink {
    /// A sink writing `columns` (the first columns of `schema`) into `table`.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        table: TableRef,
        columns: Vec<TargetColumn>,
        db_kind: DbKind,
        on_duplicate: OnDuplicate,
        chunk_rows: usize,
        session: Arc<ImportSession>,
        import_metrics: Arc<ImportMetrics>,
        schema: SchemaRef,
    ) -> Self {
        Self {
            table,
            columns,
            db_kind,
            on_duplicate,
            key_columns: Vec::new(),
            chunk_rows: chunk_rows.max(1),
            session,
            import_metrics,
            schema,
            metrics: ExecutionPlanMetricsSet::new(),
            written_per_file: Default::default(),
        }
    }

    /// The key columns, by index among the written columns: needed by
    /// `ON DUPLICATE UPDATE` to match existing rows.
    pub fn with_key_columns(mut self, key_columns: Vec<usize>) -> Self {
        self.key_columns = key_columns;
        self
    }

    /// The next rows to write: skips empty batches, drops the row-number column
    /// (keeping the update flag under `ON DUPLICATE UPDATE`),
    /// and once a refused import is certain (`ON DUPLICATE ERROR` and a duplicate
    /// seen) drains the input without returning rows. `None` at the end.
    async fn next_rows(
        &self,
        input: &mut SendableRecordBatchStream,
    ) -> crate::error::Result<Option<RecordBatch>> {
        let upsert = usize::from(self.on_duplicate == OnDuplicate::Update);
        let width: Vec<usize> = (0..self.columns.len() + upsert).collect();
        while let Some(batch) = input.next().await {
            let batch = batch.map_err(AtlasError::from_datafusion)?;
            if self.on_duplicate == OnDuplicate::Error && self.import_metrics.has_duplicates() {
                continue;
            }
            if batch.num_rows() > 0 {
                self.count_per_file(&batch);
                let rows = batch
                    .project(&width)
                    .map_err(|e| AtlasError::from_datafusion(e.into()))?;
                return Ok(Some(rows));
            }
        }
        Ok(None)
    }

    /// Counts `rows` handed to the one write of an import, and the chunks
    /// they complete.
    fn sent(&self, rows: usize) {
        let metrics = &self.import_metrics;
        let before = metrics.inserted.fetch_add(rows as u64, Ordering::Relaxed);
        let after = before + rows as u64;
        let chunk = self.chunk_rows as u64;
        for number in (before / chunk + 1)..=(after / chunk) {
            metrics.chunks_written.fetch_add(1, Ordering::Relaxed);
            tracing::info!(
                "Inserted chunk {number} - Total inserted: {}",
                number * chunk
            );
        }
    }

    /// Adds the rows of `batch` to the counts of the files they came from.
    fn count_per_file(&self, batch: &RecordBatch) {
        let files = self.session.files().len();
        if files == 0 {
            return;
        }
        let mut counts = self.written_per_file.lock().expect("count lock");
        counts.resize(files, 0);
        if files == 1 {
            counts[0] += batch.num_rows() as u64;
            return;
        }
        let rows = batch
            .column(batch.num_columns() - 1)
            .as_primitive::<datafusion::arrow::datatypes::UInt64Type>();
        self.import_metrics
            .count_by_file(rows.values(), &mut counts);
    }

    async fn write_everything(&self, mut input: SendableRecordBatchStream) -> Result<u64> {
        // Begin, lock, check the file, create the table: before any row is read.
        if self.session.open().await? == Opened::FileAlreadyImported {
            return Ok(0);
        }
        let mut carry: Option<RecordBatch> = None;
        let mut chunk_number = 0u64;
        let rows_written = MetricBuilder::new(&self.metrics).counter("rows_written", 0);
        let chunks = MetricBuilder::new(&self.metrics).counter("chunks", 0);
        let write_time = MetricBuilder::new(&self.metrics).subset_time("write_time", 0);
        // One write (one COPY, or INSERTs sized to the database's limits) for
        // the whole import: a statement per chunk costs the server a round
        // trip and a pause each time. Upserts write chunk by chunk, each
        // chunk's updates after its inserts.
        let per_write = if self.on_duplicate == OnDuplicate::Update {
            self.chunk_rows
        } else {
            usize::MAX
        };
        loop {
            // Wait for the first rows before taking the transaction: a refused
            // or empty import need not start a write.
            let first = match carry.take() {
                Some(rows) => rows,
                None => match self.next_rows(&mut input).await? {
                    Some(rows) => rows,
                    None => break,
                },
            };
            chunk_number += 1;
            let started = Instant::now();
            let timer = write_time.timer();
            let mut updates = Vec::new();
            let state = ChunkState {
                first: Some(first),
                remaining: per_write,
                input: &mut input,
                carry: &mut carry,
                updates: &mut updates,
                sink: self,
            };
            let mut chunk: ChunkStream<'_> =
                Box::pin(futures::stream::unfold(state, next_in_chunk));
            let written = {
                let mut guard = self.session.slot().lock().await;
                let tx = guard.as_mut().ok_or_else(not_open)?;
                let written = tx
                    .write_chunk(&self.table, &self.columns, &mut chunk)
                    .await?;
                drop(chunk);
                if !updates.is_empty() {
                    // After the chunk's inserts: a key inserted earlier in the
                    // chunk is then updated by its later occurrences.
                    let rows = last_occurrences(&updates, &self.key_columns)?;
                    tx.update_rows(&self.table, &self.columns, &self.key_columns, rows)
                        .await?;
                }
                written
            };
            timer.done();
            rows_written.add(written as usize);
            let metrics = &self.import_metrics;
            metrics
                .write_nanos
                .fetch_add(started.elapsed().as_nanos() as u64, Ordering::Relaxed);
            if self.on_duplicate == OnDuplicate::Update {
                chunks.add(1);
                let total = metrics.inserted.fetch_add(written, Ordering::Relaxed) + written;
                metrics.chunks_written.fetch_add(1, Ordering::Relaxed);
                tracing::info!("Inserted chunk {chunk_number} - Total inserted: {total}");
            }
        }
        if self.on_duplicate != OnDuplicate::Update {
            // The chunks of the one write were counted as their rows were sent;
            // the last one may be short.
            let inserted = ImportMetrics::get(&self.import_metrics.inserted);
            let chunk = self.chunk_rows as u64;
            if !inserted.is_multiple_of(chunk) {
                self.import_metrics
                    .chunks_written
                    .fetch_add(1, Ordering::Relaxed);
            }
            chunk_number = inserted.div_ceil(chunk);
            chunks.add(chunk_number as usize);
        }

        let metrics = &self.import_metrics;
        for (shown, (chunk, count)) in metrics.duplicates_per_chunk().into_iter().enumerate() {
            if shown == MAX_CHUNK_LOG_LINES {
                tracing::info!("... more chunks with duplicates not listed");
                break;
            }
            tracing::info!("Chunk {chunk}: {count} duplicates");
        }
        if self.on_duplicate == OnDuplicate::Error && metrics.has_duplicates() {
            return Err(AtlasError::Duplicates(Box::new(metrics.duplicate_report())).into());
        }
        if ImportMetrics::get(&metrics.rows_read) == 0 && !self.session.files().is_empty() {
            // A header and nothing else is an export gone wrong more often than not.
            let names: Vec<&str> = self
                .session
                .files()
                .iter()
                .map(|f| f.file_name.as_str())
                .collect();
            return Err(AtlasError::Source {
                source_name: names.join(", "),
                message: "there are no data rows (only a header?): nothing to import".into(),
            }
            .into());
        }
        let inserted = ImportMetrics::get(&metrics.inserted);
        tracing::info!(
            "Inserted chunk {chunk_number}/{chunk_number} - Total inserted: {inserted}/{inserted}"
        );

        let mut tx = self.session.slot().take().await.ok_or_else(not_open)?;
        let recorded: crate::error::Result<()> = async {
            let counts = self.written_per_file.lock().expect("count lock").clone();
            for (i, file) in self.session.files().iter().enumerate() {
                let record = FileRecord {
                    record_count: counts.get(i).copied().unwrap_or(0),
                    ..file.clone()
                };
                tx.record_file(&record).await?;
            }
            if let Some(template) = self.session.history() {
                tx.record_history(&template.finish(metrics, "committed", None))
                    .await?;
            }
            Ok(())
        }
        .await;
        if let Err(e) = recorded {
            tx.rollback().await.ok();
            return Err(e.into());
        }
        tx.commit().await?;
        Ok(inserted)
    }
}

/// The state of the stream of one chunk's batches.
struct ChunkState<'a> {
    /// The rows that opened the chunk.
    first: Option<RecordBatch>,
    /// Rows the chunk may still take.
    remaining: usize,
    /// The sink's input.
    input: &'a mut SendableRecordBatchStream,
    /// Rows past the end of the chunk, for the next one.
    carry: &'a mut Option<RecordBatch>,
    /// Under `ON DUPLICATE UPDATE`: the chunk's rows that update, in order.
    updates: &'a mut Vec<RecordBatch>,
    /// The sink (for [`ImportSink::next_rows`]).
    sink: &'a ImportSink,
}

async fn next_in_chunk(
    mut state: ChunkState<'_>,
) -> Option<(crate::error::Result<RecordBatch>, ChunkState<'_>)> {
    if state.remaining == 0 {
        return None;
    }
    let rows = match state.first.take() {
        Some(rows) => rows,
        None => match state.sink.next_rows(state.input).await {
            Ok(Some(rows)) => rows,
            Ok(None) => return None,
            Err(e) => {
                state.remaining = 0;
                return Some((Err(e), state));
            }
        },
    };
    let rows = if rows.num_rows() > state.remaining {
        *state.carry = Some(rows.slice(state.remaining, rows.num_rows() - state.remaining));
        rows.slice(0, state.remaining)
    } else {
        rows
    };
    state.remaining -= rows.num_rows();
    if state.sink.on_duplicate != OnDuplicate::Update {
        state.sink.sent(rows.num_rows());
        return Some((Ok(rows), state));
    }
    // Split off the rows that update; the rest are inserted.
    let mut split = || -> crate::error::Result<RecordBatch> {
        let width = state.sink.columns.len();
        let flag = rows.column(width).as_boolean().clone();
        let columns: Vec<usize> = (0..width).collect();
        let rows = rows
            .project(&columns)
            .map_err(|e| AtlasError::from_datafusion(e.into()))?;
        let filter = |mask: &BooleanArray| {
            filter_record_batch(&rows, mask).map_err(|e| AtlasError::from_datafusion(e.into()))
        };
        let updates = filter(&flag)?;
        if updates.num_rows() > 0 {
            state.updates.push(updates);
        }
        filter(&not(&flag).map_err(|e| AtlasError::from_datafusion(e.into()))?)
    };
    let inserts = split();
    Some((inserts, state))
}

/// The rows of `batches` whose key does not occur again later: under
/// `ON DUPLICATE UPDATE` the last occurrence wins.
fn last_occurrences(
    batches: &[RecordBatch],
    key_columns: &[usize],
) -> crate::error::Result<RecordBatch> {
    let rows = concat_batches(&batches[0].schema(), batches)
        .map_err(|e| AtlasError::from_datafusion(e.into()))?;
    let mut keys = EncodedKeys::default();
    KeyEncoder::new(key_columns.to_vec()).encode(&rows, &mut keys)?;
    let mut seen = KeySet::new();
    let mut keep = vec![false; rows.num_rows()];
    for i in (0..rows.num_rows()).rev() {
        keep[i] = seen.insert(keys.key(i), 0).is_none();
    }
    filter_record_batch(&rows, &BooleanArray::from(keep))
        .map_err(|e| AtlasError::from_datafusion(e.into()))
}

impl DisplayAs for ImportSink {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        write!(
            f,
            "ImportSink: table={}, db={}, on_duplicate={}, chunk_rows={}",
            self.table, self.db_kind, self.on_duplicate, self.chunk_rows
        )?;
        if let Some(columns) = self.session.planned_columns() {
            // The types a new table gets, shown before anything is written.
            let columns: Vec<String> = columns
                .iter()
                .map(|c| {
                    let sql_type = c.sql_type.as_deref().unwrap_or("?");
                    format!("{} {sql_type}", c.name)
                })
                .collect();
            write!(f, ", if missing creates ({})", columns.join(", "))?;
        }
        Ok(())
    }
}

#[async_trait]
impl DataSink for ImportSink {
    fn metrics(&self) -> Option<MetricsSet> {
        Some(self.metrics.clone_inner())
    }

    fn schema(&self) -> &SchemaRef {
        &self.schema
    }

    async fn write_all(
        &self,
        data: SendableRecordBatchStream,
        _context: &Arc<TaskContext>,
    ) -> Result<u64> {
        let result = self.write_everything(data).await;
        if result.is_err() {
            // Leave the target exactly as it was.
            if let Err(e) = self.session.slot().rollback().await {
                tracing::warn!("rollback after a failed import also failed: {e}");
            }
        }
        result
    }
}
