//! One run of the sink's write: the rows handed to the database's bulk
//! path, what it learns of them as they go, and the commit.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use datafusion::arrow::array::{AsArray, RecordBatch};
use datafusion::error::Result;
use datafusion::execution::SendableRecordBatchStream;
use datafusion::physical_plan::metrics::MetricBuilder;
use futures::StreamExt;

use super::ImportSink;
use crate::db::{ChunkStream, FileRecord, HistoryEntry};
use crate::error::AtlasError;
use crate::options::OnDuplicate;
use crate::physical::transaction::{TableTransaction, not_open};
use crate::physical::{ImportRun, Opened};
use crate::report::{ImportMetrics, ImportStatus};

/// Most chunk lines to log with their duplicate counts.
const MAX_CHUNK_LOG_LINES: usize = 20;

/// The sink's one write of an import: its settings, the run's counters and
/// transaction, and what the write learns of its rows as they go.
pub(super) struct SinkWrite<'a> {
    pub(super) sink: &'a ImportSink,
    pub(super) metrics: &'a ImportMetrics,
    pub(super) transaction: &'a TableTransaction,
    existing: &'a crate::physical::ExistingKeys,
    /// Rows written per source file (for `file_imports.record_count`).
    written_per_file: std::sync::Mutex<Vec<u64>>,
    /// Rows handed to the write so far (inserted, or staged by an upsert).
    sent_rows: AtomicU64,
    /// The write is a task of a distributed plan (see `ImportRun::stage_local`).
    stage_local: bool,
    /// Which source rows the rows of the open write statement are, as runs
    /// of consecutive rows, to name the source row of a value the database
    /// refuses (it counts rows per statement).
    written_rows: std::sync::Mutex<RowRuns>,
}

/// Runs of consecutive source rows in the order one statement wrote them:
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

impl<'a> SinkWrite<'a> {
    pub(super) fn new(sink: &'a ImportSink, run: &'a ImportRun) -> Result<Self> {
        Ok(Self {
            sink,
            metrics: run.metrics(),
            transaction: run.transaction()?,
            existing: run.existing(),
            written_per_file: Default::default(),
            sent_rows: AtomicU64::new(0),
            stage_local: run.is_stage_local(),
            written_rows: Default::default(),
        })
    }

    /// The next rows to write, as the check passed them (the update flag
    /// under `ON DUPLICATE UPDATE`, then the source row number): skips empty
    /// batches, and once a refused import is certain (`ON DUPLICATE ERROR`
    /// and a duplicate seen) drains the input without returning rows.
    /// `None` at the end.
    pub(super) async fn next_rows(
        &self,
        input: &mut SendableRecordBatchStream,
    ) -> crate::error::Result<Option<RecordBatch>> {
        while let Some(batch) = input.next().await {
            let batch = batch.map_err(AtlasError::from_datafusion)?;
            if self.sink.settings.on_duplicate == OnDuplicate::Error
                && self.metrics.has_duplicates()
            {
                continue;
            }
            if batch.num_rows() > 0 {
                self.count_per_file(&batch);
                return Ok(Some(batch));
            }
        }
        Ok(None)
    }

    /// A write statement begins: the database numbers its rows from 1.
    pub(super) fn begin_statement(&self) {
        *self.written_rows.lock().expect("row runs lock") = RowRuns::default();
    }

    /// `rows` (from [`Self::next_rows`]) handed to the open write statement:
    /// their source rows noted, the written columns only.
    pub(super) fn written(&self, rows: &RecordBatch) -> crate::error::Result<RecordBatch> {
        let source_rows = rows
            .column(rows.num_columns() - 1)
            .as_primitive::<datafusion::arrow::datatypes::UInt64Type>();
        self.written_rows
            .lock()
            .expect("row runs lock")
            .extend(source_rows.values());
        let width: Vec<usize> = (0..self.sink.settings.columns.len()).collect();
        rows.project(&width).map_err(AtlasError::from)
    }

    /// A value or row the database refused, named by its source row and
    /// line: a value PostgreSQL's COPY refused (quoting it) becomes a bad
    /// value of the file; a refused row (a constraint), or a value MySQL
    /// refused by its column and statement row, stays the database's error,
    /// its context naming the file's line.
    fn at_source_row(&self, error: AtlasError) -> AtlasError {
        if let AtlasError::Database { context, source } = &error
            && let Some(position) = crate::db::refused_row(source.as_ref())
            && let Some((file_name, row_in_file, line)) = self.source_of(position)
        {
            return AtlasError::Database {
                context: format!(
                    "{context} ({} of {file_name})",
                    crate::error::position(line, row_in_file)
                ),
                source: std::sync::Arc::clone(source),
            };
        }
        let AtlasError::ValueRefused {
            written_row,
            column,
            value,
            reason,
        } = &error
        else {
            return error;
        };
        let Some((source_name, row, line)) = self.source_of(*written_row) else {
            return error;
        };
        let sql_type = self
            .sink
            .settings
            .columns
            .iter()
            .find(|c| c.name == *column)
            .map_or("value", |c| c.sql_type.as_str());
        AtlasError::BadValue {
            source_name,
            row,
            line,
            column: column.clone(),
            value: value.clone(),
            target_type: format!("{sql_type} ({reason})"),
        }
    }

    /// The file, row in the file and line of the open write statement's
    /// `position`-th row (1-based).
    fn source_of(&self, position: u64) -> Option<(String, u64, Option<u64>)> {
        let row = self
            .written_rows
            .lock()
            .expect("row runs lock")
            .source_row(position)?;
        let (file, row_in_file) = self.metrics.locate(row);
        let file_name = self
            .transaction
            .files()
            .get(file)
            .map_or_else(|| "the source".to_string(), |f| f.file_name.clone());
        Some((file_name, row_in_file, self.metrics.line_of(row)))
    }

    /// Counts `rows` handed to the one write of an import (inserted, or
    /// staged by an upsert), and logs the chunks they complete.
    pub(super) fn sent(&self, rows: usize) {
        let before = self.sent_rows.fetch_add(rows as u64, Ordering::Relaxed);
        if self.sink.settings.on_duplicate != OnDuplicate::Update {
            // Live progress; an upsert knows its inserts at the end.
            self.metrics
                .inserted
                .fetch_add(rows as u64, Ordering::Relaxed);
        }
        let after = before + rows as u64;
        let chunk = self.sink.settings.chunk_rows as u64;
        for number in (before / chunk + 1)..=(after / chunk) {
            self.metrics.chunks_written.fetch_add(1, Ordering::Relaxed);
            self.log_chunk(number, number * chunk);
        }
    }

    /// Chunk `number` is complete with `total` rows sent: the detail of
    /// `-v`, never the default screen.
    fn log_chunk(&self, number: u64, total: u64) {
        let (what, total_of) = if self.sink.settings.on_duplicate == OnDuplicate::Update {
            ("Written", "written")
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
        self.begin_statement();
        let state = WriteState {
            first: Some(first),
            input,
            sink: self,
        };
        let mut rows: ChunkStream<'_> = Box::pin(futures::stream::unfold(state, next_to_write));
        let mut guard = self.transaction.slot().lock().await;
        let tx = guard.as_mut().ok_or_else(not_open)?;
        let written = tx
            .write_chunk(
                &self.sink.settings.table,
                &self.sink.settings.columns,
                &mut rows,
            )
            .await?;
        Ok(written)
    }

    /// Adds the rows of `batch` to the counts of the files they came from.
    fn count_per_file(&self, batch: &RecordBatch) {
        let files = self.transaction.files().len();
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
        self.metrics.count_by_file(rows.values(), &mut counts);
    }

    /// Takes into the counters the duplicates the check's tasks left (a
    /// task of a distributed plan: see `CheckStream`); they all ended
    /// before this stage began, and this runs before the transaction opens
    /// (SQLite has one writer).
    async fn take_refusals(&self) -> crate::error::Result<()> {
        let id = self.transaction.import_id().unwrap_or_default();
        let mut catalog = self.transaction.database().catalog().await?;
        for refusal in catalog.take_refusals(id).await? {
            let tally = serde_json::from_str(&refusal).map_err(|e| {
                AtlasError::Internal(format!("reading a refusal of import {id}: {e}"))
            })?;
            self.metrics.merge_duplicates(&tally);
        }
        Ok(())
    }

    /// Reads from the table the keys of the refusal's samples that the
    /// check could not keep (rows that went on while the table's keys were
    /// still being read): the message then names every sample's key. The
    /// refusal stands whether or not they can be read.
    async fn describe_samples(&self) {
        let wanted = self.metrics.undescribed_samples();
        if wanted.is_empty() {
            return;
        }
        match self.existing.describe(&wanted).await {
            Ok(texts) => self.metrics.describe_samples(&texts),
            Err(e) => tracing::warn!("The keys of the first duplicates could not be read: {e}"),
        }
    }

    /// The error of an `ON DUPLICATE ERROR` write that a unique index of
    /// the table refused: rows go on before their verdicts, so the index can
    /// see a duplicate before the check does. The check then decides the
    /// rest of the rows (none written), and its refusal, which names the
    /// keys and lines, stands for the database's where it found one: a key
    /// the index holds that the import's key does not explain stays the
    /// database's error.
    async fn duplicates_behind(
        &self,
        refused: AtlasError,
        input: &mut SendableRecordBatchStream,
    ) -> AtlasError {
        let decided = async {
            while self.next_rows(input).await?.is_some() {}
            self.existing.settle().await
        };
        if let Err(e) = decided.await {
            tracing::debug!("The check stopped after the database refused a duplicate: {e}");
            return refused;
        }
        self.duplicate_refusal().await.unwrap_or(refused)
    }

    /// The import's refusal, where the check found duplicates: every
    /// sample's key described.
    async fn duplicate_refusal(&self) -> Option<AtlasError> {
        if !self.metrics.has_duplicates() {
            return None;
        }
        self.describe_samples().await;
        Some(AtlasError::Duplicates(Box::new(
            self.metrics.duplicate_report(),
        )))
    }

    pub(super) async fn write_everything(
        &self,
        mut input: SendableRecordBatchStream,
    ) -> Result<u64> {
        if self.stage_local && self.sink.settings.on_duplicate == OnDuplicate::Error {
            self.take_refusals().await?;
            if self.metrics.has_duplicates() {
                let report = Box::new(self.metrics.duplicate_report());
                return Err(AtlasError::Duplicates(report).into());
            }
        }
        // Begin, lock, check the file, create the table: before any row is read.
        match self.transaction.open().await? {
            Opened::FileAlreadyImported => return Ok(0),
            // A retry of a write that committed: its rows, not written again.
            Opened::Committed { inserted, updated } => {
                use std::sync::atomic::Ordering::Relaxed;
                self.metrics.inserted.store(inserted, Relaxed);
                self.metrics.updated.store(updated, Relaxed);
                return Ok(inserted);
            }
            Opened::Ready { .. } => {}
        }
        let rows_written = MetricBuilder::new(&self.sink.metrics).counter("rows_written", 0);
        let chunks = MetricBuilder::new(&self.sink.metrics).counter("chunks", 0);
        let write_time = MetricBuilder::new(&self.sink.metrics).subset_time("write_time", 0);
        // Wait for the first rows before taking the transaction: a refused or
        // empty import need not start a write.
        if let Some(first) = self.next_rows(&mut input).await? {
            let started = Instant::now();
            let timer = write_time.timer();
            let written = if self.sink.settings.on_duplicate == OnDuplicate::Update {
                self.upsert(first, &mut input).await
            } else {
                self.insert(first, &mut input).await
            };
            let written = match written.map_err(|e| self.at_source_row(e)) {
                Ok(written) => written,
                Err(e)
                    if self.sink.settings.on_duplicate == OnDuplicate::Error
                        && crate::db::refused_as_duplicate(&e) =>
                {
                    return Err(self.duplicates_behind(e, &mut input).await.into());
                }
                Err(e) => return Err(e.into()),
            };
            timer.done();
            rows_written.add(written as usize);
            self.metrics
                .write_nanos
                .fetch_add(started.elapsed().as_nanos() as u64, Ordering::Relaxed);
        }
        // The chunks were counted as their rows were sent; the last one may
        // be short.
        let sent = self.sent_rows.load(Ordering::Relaxed);
        let chunk = self.sink.settings.chunk_rows as u64;
        let chunk_number = sent.div_ceil(chunk);
        if !sent.is_multiple_of(chunk) {
            self.metrics.chunks_written.fetch_add(1, Ordering::Relaxed);
            self.log_chunk(chunk_number, sent);
        }
        chunks.add(chunk_number as usize);

        // The check's verdicts that were still coming when its rows ended.
        self.existing.settle().await?;
        let metrics = &self.metrics;
        for (shown, (chunk, count)) in metrics.duplicates_per_chunk().into_iter().enumerate() {
            if shown == MAX_CHUNK_LOG_LINES {
                tracing::debug!("... more chunks with duplicates not listed");
                break;
            }
            tracing::debug!("Chunk {chunk}: {count} duplicates");
        }
        if self.sink.settings.on_duplicate == OnDuplicate::Error
            && let Some(refusal) = self.duplicate_refusal().await
        {
            return Err(refusal.into());
        }
        // (In a distributed plan the reader's task says it: the rows were
        // counted in another process.)
        if !self.stage_local
            && ImportMetrics::get(&metrics.rows_read) == 0
            && !self.transaction.files().is_empty()
        {
            return Err(no_data_rows(self.transaction.files()).into());
        }

        self.metrics.set_phase(crate::report::Phase::Committing);
        let mut tx = self.transaction.slot().take().await.ok_or_else(not_open)?;
        let recorded: crate::error::Result<()> = async {
            let (files, file_hash) = self.transaction.file_records(tx.as_mut()).await?;
            let counts = self.written_per_file.lock().expect("count lock").clone();
            for (i, file) in files.into_iter().enumerate() {
                let record = FileRecord {
                    record_count: counts.get(i).copied().unwrap_or(0),
                    ..file
                };
                tx.record_file(&record).await?;
            }
            if let Some(template) = self.transaction.history() {
                tx.record_history(&HistoryEntry {
                    file_hash,
                    ..template.finish(
                        ImportStatus::Committed,
                        &metrics.counts(ImportStatus::Committed),
                        None,
                    )
                })
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
        if self.stage_local {
            fail_after_commit(self.transaction.table())?;
        }
        Ok(ImportMetrics::get(&metrics.inserted))
    }
}

/// Fault injection for the exactly-once tests of distributed imports: with
/// `ATLAS_TEST_FAIL_AFTER_COMMIT` set to a table's name, the first write
/// into that table in this process fails after its commit, as a task whose
/// executor died before it could report, with an I/O error (which Ballista
/// retries).
fn fail_after_commit(table: &crate::names::TableRef) -> Result<()> {
    use std::sync::atomic::{AtomicBool, Ordering};
    static FIRED: AtomicBool = AtomicBool::new(false);
    let chosen = std::env::var("ATLAS_TEST_FAIL_AFTER_COMMIT").ok();
    if chosen.as_deref() == Some(table.name.as_str()) && !FIRED.swap(true, Ordering::SeqCst) {
        tracing::warn!("injected: the write into '{table}' committed; failing its task now");
        return Err(datafusion::error::DataFusionError::IoError(
            std::io::Error::other(
                "injected: the write committed, then its task failed before reporting",
            ),
        ));
    }
    Ok(())
}
/// The error of a file source without data rows: a header and nothing else is
/// an export gone wrong more often than not.
pub(crate) fn no_data_rows(files: &[FileRecord]) -> AtlasError {
    let names: Vec<&str> = files.iter().map(|f| f.file_name.as_str()).collect();
    AtlasError::Source {
        source_name: names.join(", "),
        message: "there are no data rows (only a header?): nothing to import".into(),
    }
}

/// The state of the stream of the rows handed to the one write.
struct WriteState<'a> {
    /// The rows that opened the write.
    first: Option<RecordBatch>,
    /// The sink's input.
    input: &'a mut SendableRecordBatchStream,
    /// The write (for [`SinkWrite::next_rows`]).
    sink: &'a SinkWrite<'a>,
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
    Some((state.sink.written(&rows), state))
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
