//! [`ImportSink`]: writes the checked rows in one bulk write inside the
//! import's one transaction, and commits only when everything succeeded.

use std::collections::BTreeSet;
use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use async_trait::async_trait;
use datafusion::arrow::array::{Array, ArrayRef, AsArray, Int64Array, RecordBatch};
use datafusion::arrow::datatypes::{DataType, Field, FieldRef, Schema, SchemaRef};
use datafusion::datasource::sink::DataSink;
use datafusion::error::Result;
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::physical_plan::metrics::{ExecutionPlanMetricsSet, MetricBuilder, MetricsSet};
use datafusion::physical_plan::{DisplayAs, DisplayFormatType};
use futures::StreamExt;
use tokio::sync::{Mutex, MutexGuard};

use super::session::{ImportSession, Opened};
use crate::db::{
    ChunkStream, DbKind, FileRecord, ImportTransaction, STAGE_ROW, STAGE_UPDATE, UpsertStatements,
};
use crate::error::AtlasError;
use crate::key::{EncodedKeys, Fingerprint, Fingerprints, KeyEncoder, KeyHasher};
use crate::key_form::KeyForm;
use crate::names::TableRef;
use crate::options::OnDuplicate;
use crate::report::{ImportMetrics, ImportStatus};
use crate::schema::TargetColumn;

/// An upsert's join reads the table first when it holds at most this many
/// times the staged rows (MySQL/MariaDB).
const TABLE_FIRST_RATIO: u64 = 4;

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
    AtlasError::Internal(
        "the import transaction is not open (was the plan only meant to be explained?)".into(),
    )
}

/// Writes the rows that survive the duplicate check into the target table.
///
/// Runs in a `DataSinkExec`, hence on one partition. Every row goes into one
/// bulk write per import (PostgreSQL: one binary `COPY`; MySQL/MariaDB: one
/// `LOAD DATA LOCAL INFILE`, or INSERTs sized to the server's limits; SQLite:
/// one prepared INSERT), inside the import's transaction; `chunk_rows` only
/// paces the progress log. Writing overlaps with the check: a refused import
/// rolls back, so what the user observes is check-then-write.
///
/// `ON DUPLICATE UPDATE` writes every row into a temporary stage the same
/// way, then inserts the new keys and updates the existing ones with one
/// statement each ([`UpsertStatements`]).
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
    /// Rows handed to the write so far (inserted, or staged by an upsert).
    sent_rows: AtomicU64,
    /// Which source rows the write's rows are, as runs of consecutive rows,
    /// to name the source row of a value the database refuses.
    written_rows: std::sync::Mutex<RowRuns>,
}

/// Runs of consecutive source rows in the order they were written:
/// `(first position in the write, first source row, length)`.
#[derive(Debug, Default)]
struct RowRuns {
    runs: Vec<(u64, u64, u64)>,
    written: u64,
}

impl RowRuns {
    fn extend(&mut self, source_rows: &[u64]) {
        for &row in source_rows {
            match self.runs.last_mut() {
                Some((at, first, len)) if *at + *len == self.written && *first + *len == row => {
                    *len += 1
                }
                _ => self.runs.push((self.written, row, 1)),
            }
            self.written += 1;
        }
    }

    /// The source row of the write's `position`-th row (1-based).
    fn source_row(&self, position: u64) -> Option<u64> {
        let index = position.checked_sub(1)?;
        let run = self
            .runs
            .partition_point(|(at, _, _)| *at <= index)
            .checked_sub(1)?;
        let (at, first, len) = self.runs[run];
        (index < at + len).then(|| first + (index - at))
    }
}

impl ImportSink {
    /// A sink writing `columns` (the first columns of `schema`) into `table`
    /// through `session`'s transaction, under `ON DUPLICATE ERROR` in chunks
    /// of [`crate::DEFAULT_CHUNK_ROWS`] unless told otherwise.
    pub fn new(
        table: TableRef,
        columns: Vec<TargetColumn>,
        db_kind: DbKind,
        session: Arc<ImportSession>,
        import_metrics: Arc<ImportMetrics>,
        schema: SchemaRef,
    ) -> Self {
        Self {
            table,
            columns,
            db_kind,
            on_duplicate: OnDuplicate::Error,
            key_columns: Vec::new(),
            chunk_rows: crate::DEFAULT_CHUNK_ROWS,
            session,
            import_metrics,
            schema,
            metrics: ExecutionPlanMetricsSet::new(),
            written_per_file: Default::default(),
            sent_rows: AtomicU64::new(0),
            written_rows: Default::default(),
        }
    }

    /// What to do with the duplicates the check lets through (it flags them
    /// under `ON DUPLICATE UPDATE`, counts them under `ERROR`).
    pub fn with_on_duplicate(mut self, on_duplicate: OnDuplicate) -> Self {
        self.on_duplicate = on_duplicate;
        self
    }

    /// Rows per chunk (at least 1).
    pub fn with_chunk_rows(mut self, chunk_rows: usize) -> Self {
        self.chunk_rows = chunk_rows.max(1);
        self
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
                let source_rows = batch
                    .column(batch.num_columns() - 1)
                    .as_primitive::<datafusion::arrow::datatypes::UInt64Type>();
                self.written_rows
                    .lock()
                    .expect("row runs lock")
                    .extend(source_rows.values());
                let rows = batch.project(&width).map_err(AtlasError::from)?;
                return Ok(Some(rows));
            }
        }
        Ok(None)
    }

    /// A value the database refused, named by its source row and line.
    fn at_source_row(&self, error: AtlasError) -> AtlasError {
        let AtlasError::ValueRefused {
            written_row,
            column,
            value,
            reason,
        } = &error
        else {
            return error;
        };
        let runs = self.written_rows.lock().expect("row runs lock");
        let Some(row) = runs.source_row(*written_row) else {
            return error;
        };
        let metrics = &self.import_metrics;
        let (file, row_in_file) = metrics.locate(row);
        let sql_type = self
            .columns
            .iter()
            .find(|c| c.name == *column)
            .map_or("value", |c| c.sql_type.as_str());
        AtlasError::BadValue {
            source_name: self
                .session
                .files()
                .get(file)
                .map_or_else(|| "the source".to_string(), |f| f.file_name.clone()),
            row: row_in_file,
            line: metrics.line_of(row),
            column: column.clone(),
            value: value.clone(),
            target_type: format!("{sql_type} ({reason})"),
        }
    }

    /// Counts `rows` handed to the one write of an import (inserted, or
    /// staged by an upsert), and logs the chunks they complete.
    fn sent(&self, rows: usize) {
        let before = self.sent_rows.fetch_add(rows as u64, Ordering::Relaxed);
        if self.on_duplicate != OnDuplicate::Update {
            // Live progress; an upsert knows its inserts at the end.
            self.import_metrics
                .inserted
                .fetch_add(rows as u64, Ordering::Relaxed);
        }
        let after = before + rows as u64;
        let chunk = self.chunk_rows as u64;
        for number in (before / chunk + 1)..=(after / chunk) {
            self.import_metrics
                .chunks_written
                .fetch_add(1, Ordering::Relaxed);
            self.log_chunk(number, number * chunk);
        }
    }

    /// Chunk `number` is complete with `total` rows sent: the detail of
    /// `-v`, never the default screen.
    fn log_chunk(&self, number: u64, total: u64) {
        let (what, total_of) = if self.on_duplicate == OnDuplicate::Update {
            ("Staged", "staged")
        } else {
            ("Inserted", "inserted")
        };
        tracing::debug!("{what} chunk {number} - Total {total_of}: {total}");
    }

    /// Writes every row by the database's bulk path, in one write (one COPY,
    /// or INSERTs sized to the database's limits): a statement per chunk
    /// costs the server a round trip and a pause each time.
    async fn insert(
        &self,
        first: RecordBatch,
        input: &mut SendableRecordBatchStream,
    ) -> crate::error::Result<u64> {
        let state = WriteState {
            first: Some(first),
            input,
            sink: self,
            upsert: None,
        };
        let mut rows: ChunkStream<'_> = Box::pin(futures::stream::unfold(state, next_to_write));
        let mut guard = self.session.slot().lock().await;
        let tx = guard.as_mut().ok_or_else(not_open)?;
        let written = tx
            .write_chunk(&self.table, &self.columns, &mut rows)
            .await?;
        Ok(written)
    }

    /// `ON DUPLICATE UPDATE`: every row into one stage by the bulk path,
    /// then one `INSERT ... SELECT` of the new keys and one join updating the
    /// existing ones (see [`UpsertStatements`]). Returns the rows inserted.
    async fn upsert(
        &self,
        first: RecordBatch,
        input: &mut SendableRecordBatchStream,
    ) -> crate::error::Result<u64> {
        let statements =
            UpsertStatements::new(self.db_kind, &self.table, &self.columns, &self.key_columns);
        let mut guard = self.session.slot().lock().await;
        let tx = guard.as_mut().ok_or_else(not_open)?;
        for sql in statements.create_stage() {
            tx.execute(sql).await?;
        }
        let key = KeyEncoder::new(self.key_columns.clone()).with_forms(KeyForm::of_columns(
            self.key_columns.iter().map(|&i| &self.columns[i]),
        ));
        let mut staging = Staging::new(key, self.columns.len());
        let state = WriteState {
            first: Some(first),
            input,
            sink: self,
            upsert: Some(&mut staging),
        };
        let mut rows: ChunkStream<'_> = Box::pin(futures::stream::unfold(state, next_to_write));
        tx.write_chunk(
            &statements.stage_table(),
            &statements.stage_columns(),
            &mut rows,
        )
        .await?;
        drop(rows);
        let superseded = std::mem::take(&mut staging.superseded);
        let patterns: Vec<Vec<usize>> = staging.null_patterns.iter().cloned().collect();
        for sql in statements.remove_superseded(&superseded) {
            tx.execute(sql).await?;
        }
        for sql in statements.prepare_join() {
            tx.execute(sql).await?;
        }
        let inserted = tx.execute(statements.insert()).await?;
        // Where the table is not much larger than the stage, the join reads
        // it in order (see `UpsertStatements::updates`).
        let table_first = tx
            .estimated_rows(&self.table)
            .await?
            .is_some_and(|rows| rows <= TABLE_FIRST_RATIO * staging.staged);
        for sql in statements.updates(&patterns, table_first) {
            tx.execute(sql).await?;
        }
        tx.execute(statements.drop_stage()).await?;
        self.import_metrics
            .inserted
            .fetch_add(inserted, Ordering::Relaxed);
        Ok(inserted)
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
        let rows_written = MetricBuilder::new(&self.metrics).counter("rows_written", 0);
        let chunks = MetricBuilder::new(&self.metrics).counter("chunks", 0);
        let write_time = MetricBuilder::new(&self.metrics).subset_time("write_time", 0);
        // Wait for the first rows before taking the transaction: a refused or
        // empty import need not start a write.
        if let Some(first) = self.next_rows(&mut input).await? {
            let started = Instant::now();
            let timer = write_time.timer();
            let written = if self.on_duplicate == OnDuplicate::Update {
                self.upsert(first, &mut input).await
            } else {
                self.insert(first, &mut input).await
            }
            .map_err(|e| self.at_source_row(e))?;
            timer.done();
            rows_written.add(written as usize);
            self.import_metrics
                .write_nanos
                .fetch_add(started.elapsed().as_nanos() as u64, Ordering::Relaxed);
        }
        // The chunks were counted as their rows were sent; the last one may
        // be short.
        let sent = self.sent_rows.load(Ordering::Relaxed);
        let chunk = self.chunk_rows as u64;
        let chunk_number = sent.div_ceil(chunk);
        if !sent.is_multiple_of(chunk) {
            self.import_metrics
                .chunks_written
                .fetch_add(1, Ordering::Relaxed);
            self.log_chunk(chunk_number, sent);
        }
        chunks.add(chunk_number as usize);

        let metrics = &self.import_metrics;
        for (shown, (chunk, count)) in metrics.duplicates_per_chunk().into_iter().enumerate() {
            if shown == MAX_CHUNK_LOG_LINES {
                tracing::debug!("... more chunks with duplicates not listed");
                break;
            }
            tracing::debug!("Chunk {chunk}: {count} duplicates");
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

        self.import_metrics
            .set_phase(crate::report::Phase::Committing);
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
                tx.record_history(&template.finish(
                    ImportStatus::Committed,
                    &metrics.counts(ImportStatus::Committed),
                    None,
                ))
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
        Ok(ImportMetrics::get(&metrics.inserted))
    }
}

/// The state of the stream of the rows handed to the one write.
struct WriteState<'a> {
    /// The rows that opened the write.
    first: Option<RecordBatch>,
    /// The sink's input.
    input: &'a mut SendableRecordBatchStream,
    /// The sink (for [`ImportSink::next_rows`]).
    sink: &'a ImportSink,
    /// Under `ON DUPLICATE UPDATE`: what staging learns of the rows.
    upsert: Option<&'a mut Staging>,
}

async fn next_to_write(
    mut state: WriteState<'_>,
) -> Option<(crate::error::Result<RecordBatch>, WriteState<'_>)> {
    let rows = match state.first.take() {
        Some(rows) => rows,
        None => match state.sink.next_rows(state.input).await {
            Ok(Some(rows)) => rows,
            Ok(None) => return None,
            Err(e) => return Some((Err(e), state)),
        },
    };
    state.sink.sent(rows.num_rows());
    let rows = match state.upsert.as_deref_mut() {
        Some(staging) => staging.stage(rows),
        None => Ok(rows),
    };
    Some((rows, state))
}

/// What an upsert learns while its rows go into the stage: which staged
/// updates a later row of the same key supersedes, and the patterns of NULL
/// key parts among the updates.
struct Staging {
    key: KeyEncoder,
    hasher: KeyHasher,
    /// Columns written (the update flag follows them in the input).
    width: usize,
    /// Rows staged so far (the next `atlas_row`).
    staged: u64,
    /// The latest staged update of each key.
    latest: Fingerprints<u64>,
    /// Staged updates a later one of the same key supersedes.
    superseded: Vec<u64>,
    /// Positions in the key that are NULL, per pattern seen among updates.
    null_patterns: BTreeSet<Vec<usize>>,
    keys: EncodedKeys,
    fingerprints: Vec<Fingerprint>,
}

impl Staging {
    fn new(key: KeyEncoder, width: usize) -> Self {
        Self {
            key,
            hasher: KeyHasher::random(),
            width,
            staged: 0,
            latest: Fingerprints::new(),
            superseded: Vec::new(),
            null_patterns: BTreeSet::new(),
            keys: EncodedKeys::default(),
            fingerprints: Vec::new(),
        }
    }

    /// `rows` (the written columns, then the update flag) as stage rows: the
    /// columns, the row number, the flag.
    fn stage(&mut self, rows: RecordBatch) -> crate::error::Result<RecordBatch> {
        let first = self.staged;
        self.staged += rows.num_rows() as u64;
        let flag = rows.column(self.width).as_boolean().clone();
        if flag.true_count() > 0 {
            self.key.encode(&rows, &mut self.keys)?;
            self.hasher.fingerprints(&self.keys, &mut self.fingerprints);
            let key_arrays: Vec<&ArrayRef> =
                self.key.columns().iter().map(|&c| rows.column(c)).collect();
            for row in (0..rows.num_rows()).filter(|&r| flag.value(r)) {
                let number = first + row as u64;
                if let Some(earlier) = self.latest.insert(self.fingerprints[row], number) {
                    self.superseded.push(earlier);
                }
                if key_arrays.iter().any(|a| a.is_null(row)) {
                    let pattern = (0..key_arrays.len())
                        .filter(|&p| key_arrays[p].is_null(row))
                        .collect();
                    self.null_patterns.insert(pattern);
                }
            }
        }
        let numbers: ArrayRef = Arc::new(Int64Array::from_iter_values(
            (first..self.staged).map(|n| n as i64),
        ));
        let mut columns: Vec<ArrayRef> = rows.columns()[..self.width].to_vec();
        columns.push(numbers);
        columns.push(Arc::new(flag));
        let mut fields: Vec<FieldRef> = rows.schema().fields()[..self.width].to_vec();
        fields.push(Arc::new(Field::new(STAGE_ROW, DataType::Int64, false)));
        fields.push(Arc::new(Field::new(STAGE_UPDATE, DataType::Boolean, false)));
        RecordBatch::try_new(Arc::new(Schema::new(fields)), columns).map_err(AtlasError::from)
    }
}

impl DisplayAs for ImportSink {
    fn fmt_as(&self, t: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        let upsert = (self.on_duplicate == OnDuplicate::Update).then(|| {
            UpsertStatements::new(self.db_kind, &self.table, &self.columns, &self.key_columns)
                .describe()
        });
        // The types a new table gets, shown before anything is written.
        let creates = self.session.planned_columns().map(|columns| {
            columns
                .iter()
                .map(|c| format!("{} {}", c.name, c.sql_type.as_deref().unwrap_or("?")))
                .collect::<Vec<_>>()
                .join(", ")
        });
        if t == DisplayFormatType::TreeRender {
            writeln!(f, "table={}", self.table)?;
            writeln!(f, "db={}", self.db_kind)?;
            writeln!(f, "on_duplicate={}", self.on_duplicate)?;
            writeln!(f, "chunk_rows={}", self.chunk_rows)?;
            if let Some(upsert) = upsert {
                writeln!(f, "upsert={upsert}")?;
            }
            if let Some(creates) = creates {
                writeln!(f, "creates_if_missing=({creates})")?;
            }
            return Ok(());
        }
        write!(
            f,
            "ImportSink: table={}, db={}, on_duplicate={}, chunk_rows={}",
            self.table, self.db_kind, self.on_duplicate, self.chunk_rows
        )?;
        if let Some(upsert) = upsert {
            write!(f, ", upsert={upsert}")?;
        }
        if let Some(creates) = creates {
            write!(f, ", if missing creates ({creates})")?;
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

#[cfg(test)]
mod tests {
    use super::RowRuns;

    #[test]
    fn written_rows_map_back_to_source_rows() {
        let mut runs = RowRuns::default();
        runs.extend(&[1, 2, 3, 7, 8]);
        runs.extend(&[9, 20]);
        assert_eq!(runs.runs.len(), 3);
        let found: Vec<Option<u64>> = (0..=8).map(|p| runs.source_row(p)).collect();
        assert_eq!(
            found,
            vec![
                None,
                Some(1),
                Some(2),
                Some(3),
                Some(7),
                Some(8),
                Some(9),
                Some(20),
                None
            ]
        );
    }
}
