//! [`ImportSink`]: writes the checked rows in chunks inside the import's one
//! transaction, and commits only when everything succeeded.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

use async_trait::async_trait;
use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::datasource::sink::DataSink;
use datafusion::error::Result;
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::physical_plan::{DisplayAs, DisplayFormatType};
use futures::StreamExt;
use tokio::sync::{Mutex, MutexGuard};

use crate::db::{DbKind, FileRecord, ImportTransaction};
use crate::error::AtlasError;
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
/// When the input ends: under `ON DUPLICATE ERROR` any duplicate rolls everything
/// back and fails with the [`crate::report::DuplicateReport`]; otherwise the
/// `file_imports` row is written and the transaction commits. Any error rolls back.
#[derive(Debug)]
pub struct ImportSink {
    /// Target table.
    table: String,
    /// Target columns written, in the order of the input's first columns.
    columns: Vec<TargetColumn>,
    /// Which database (for display).
    db_kind: DbKind,
    /// Duplicate policy.
    on_duplicate: OnDuplicate,
    /// Rows per chunk.
    chunk_rows: usize,
    /// The import transaction.
    transaction: Arc<TransactionSlot>,
    /// Live counters of the import.
    import_metrics: Arc<ImportMetrics>,
    /// The `file_imports` row to write (record_count filled in at the end).
    file: Option<FileRecord>,
    /// The input schema (target columns, then the source row number).
    schema: SchemaRef,
}

impl ImportSink {
    /// A sink writing `columns` (the first columns of `schema`) into `table`.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        table: impl Into<String>,
        columns: Vec<TargetColumn>,
        db_kind: DbKind,
        on_duplicate: OnDuplicate,
        chunk_rows: usize,
        transaction: Arc<TransactionSlot>,
        import_metrics: Arc<ImportMetrics>,
        file: Option<FileRecord>,
        schema: SchemaRef,
    ) -> Self {
        Self {
            table: table.into(),
            columns,
            db_kind,
            on_duplicate,
            chunk_rows: chunk_rows.max(1),
            transaction,
            import_metrics,
            file,
            schema,
        }
    }

    async fn write_chunk(&self, chunk: &[RecordBatch], number: u64) -> crate::error::Result<()> {
        let started = Instant::now();
        let written = {
            let mut guard = self.transaction.lock().await;
            let tx = guard.as_mut().ok_or_else(not_open)?;
            tx.write_chunk(&self.table, &self.columns, chunk).await?
        };
        let metrics = &self.import_metrics;
        let total = metrics.inserted.fetch_add(written, Ordering::Relaxed) + written;
        metrics.chunks_written.fetch_add(1, Ordering::Relaxed);
        metrics
            .write_nanos
            .fetch_add(started.elapsed().as_nanos() as u64, Ordering::Relaxed);
        tracing::info!("Inserted chunk {number} - Total inserted: {total}");
        Ok(())
    }

    async fn write_everything(&self, mut data: SendableRecordBatchStream) -> Result<u64> {
        let width = self.columns.len();
        let mut pending: Vec<RecordBatch> = Vec::new();
        let mut pending_rows = 0usize;
        let mut chunk_number = 0u64;
        while let Some(batch) = data.next().await {
            let batch = batch?;
            if self.on_duplicate == OnDuplicate::Error && self.import_metrics.has_duplicates() {
                // The import will be refused: keep draining for the report only.
                pending.clear();
                pending_rows = 0;
                continue;
            }
            if batch.num_rows() == 0 {
                continue;
            }
            let mut batch = batch.project(&(0..width).collect::<Vec<_>>())?;
            while pending_rows + batch.num_rows() >= self.chunk_rows {
                let take = self.chunk_rows - pending_rows;
                pending.push(batch.slice(0, take));
                batch = batch.slice(take, batch.num_rows() - take);
                chunk_number += 1;
                self.write_chunk(&pending, chunk_number).await?;
                pending.clear();
                pending_rows = 0;
            }
            if batch.num_rows() > 0 {
                pending_rows += batch.num_rows();
                pending.push(batch);
            }
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
        if pending_rows > 0 {
            chunk_number += 1;
            self.write_chunk(&pending, chunk_number).await?;
        }
        let inserted = ImportMetrics::get(&metrics.inserted);
        tracing::info!(
            "Inserted chunk {chunk_number}/{chunk_number} - Total inserted: {inserted}/{inserted}"
        );

        let mut tx = self.transaction.take().await.ok_or_else(not_open)?;
        if let Some(file) = &self.file {
            let record = FileRecord {
                record_count: inserted,
                ..file.clone()
            };
            if let Err(e) = tx.record_file(&record).await {
                tx.rollback().await.ok();
                return Err(e.into());
            }
        }
        tx.commit().await?;
        Ok(inserted)
    }
}

impl DisplayAs for ImportSink {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        write!(
            f,
            "ImportSink: table={}, db={}, on_duplicate={}, chunk_rows={}",
            self.table, self.db_kind, self.on_duplicate, self.chunk_rows
        )
    }
}

#[async_trait]
impl DataSink for ImportSink {
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
            if let Err(e) = self.transaction.rollback().await {
                tracing::warn!("rollback after a failed import also failed: {e}");
            }
        }
        result
    }
}
