//! Running: the file-level check, the plan executed in one transaction,
//! the report and `import_history`.

use std::sync::Arc;
use std::time::Instant;

use datafusion::common::runtime::SpawnedTask;
use datafusion::execution::TaskContext;
use datafusion::execution::session_state::SessionStateBuilder;
use datafusion::physical_plan::{ExecutionPlan, collect};
use datafusion::prelude::SessionContext;
use futures::FutureExt;

use super::plan::PreparedImport;
use super::{ImportBuilder, SourceSpec};
use crate::db::{FileRecord, HistoryEntry};
use crate::error::{AtlasError, Result};
use crate::options::{FilePolicy, OnBadValue, OnDuplicate};
use crate::physical::{LateHashes, Opened, TableTransaction};
use crate::reject::RejectWriter;
use crate::report::{
    ImportCounts, ImportMetrics, ImportReport, ImportStatus, Phase, ReportContext,
};
use crate::source::FileSource;

impl ImportBuilder {
    /// Runs the import.
    pub async fn execute(self) -> Result<ImportReport> {
        Ok(self.run().await?.0)
    }

    /// Runs the import (it commits, as `EXPLAIN ANALYZE` does in PostgreSQL) and
    /// returns its report with the physical plan and the operators' metrics.
    pub async fn execute_analyzed(self) -> Result<(ImportReport, String)> {
        let (report, prepared) = self.run().await?;
        let text = match prepared {
            Some(prepared) => prepared.explain_analyzed(),
            None => "(nothing ran: the file was already imported)".to_string(),
        };
        Ok((report, text))
    }

    /// The `import_history` row of this import, before it ran.
    pub(super) fn history_entry(&self) -> HistoryEntry {
        HistoryEntry::starting(
            match &self.source {
                // A URL's password never reaches the history.
                SourceSpec::File { path, .. } => {
                    crate::secrets::mask_password(&path.display().to_string())
                }
                SourceSpec::DataFrame { name, .. } => name.clone(),
            },
            self.table.key(),
            self.options
                .key
                .as_ref()
                .map(|k| k.join(","))
                .unwrap_or_default(),
            self.options.on_duplicate,
        )
    }

    /// Runs the import and records it in `import_history`: a committed import
    /// in its own transaction (by the sink), any other end after the rollback.
    pub(super) async fn run(self) -> Result<(ImportReport, Option<PreparedImport>)> {
        let this = self.resolve_table().await?;
        this.run_resolved().await
    }

    pub(super) async fn run_resolved(self) -> Result<(ImportReport, Option<PreparedImport>)> {
        let history = self.history_entry();
        let db = Arc::clone(&self.db);
        let metrics = Arc::clone(&self.metrics);
        let message = self.options.duplicate_message.clone();
        let limit = self.options.memory_limit;
        let result = self.run_once(history.clone()).await.map_err(|e| match e {
            AtlasError::Duplicates(mut report) if message.is_some() => {
                report.message = message;
                AtlasError::Duplicates(report)
            }
            AtlasError::ResourcesExhausted(what) if limit.is_some() => {
                AtlasError::ResourcesExhausted(format!(
                    "the import needs more memory than its limit of {} MB allows; nothing was written ({what})",
                    limit.unwrap_or_default() >> 20
                ))
            }
            other => other,
        });
        let ended = match &result {
            Ok((report, _)) if report.status.committed() => None,
            Ok((report, _)) => Some((report.status, report.file_hash.clone(), None)),
            Err(e) => {
                let hash = match e {
                    AtlasError::AlreadyImported { file_hash, .. } => Some(file_hash.clone()),
                    _ => None,
                };
                Some((ImportStatus::of_error(e), hash, Some(e.to_string())))
            }
        };
        if let Some((status, file_hash, error)) = ended {
            let entry = HistoryEntry {
                file_hash: file_hash.or(history.file_hash.clone()),
                ..history.finish(status, &metrics.counts(status), error)
            };
            let recorded = async {
                db.ensure_metadata().await?;
                db.record_history(&entry).await
            };
            if let Err(e) = recorded.await {
                tracing::warn!("could not record the import in import_history: {e}");
            }
        }
        result
    }

    pub(super) async fn run_once(
        self,
        history: HistoryEntry,
    ) -> Result<(ImportReport, Option<PreparedImport>)> {
        let started = Instant::now();
        let rejects = match &self.options.on_bad_value {
            OnBadValue::Reject(path) => {
                // A reject file that cannot be written fails before any data moves.
                let writer = Arc::new(RejectWriter::new(path));
                writer.open()?;
                Some(writer)
            }
            _ => None,
        };
        self.db.ensure_metadata().await?;
        let mut located = self.locate().await?;
        let files: Vec<FileSource> = located
            .iter()
            .flat_map(|found| found.files.iter().cloned())
            .collect();
        let hashing = async move {
            let mut hashes = Vec::new();
            for file in &files {
                hashes.push(file.sha256().await?);
            }
            Ok::<_, AtlasError>(hashes)
        };
        // A local import need not wait for the hashes when its rows flow at
        // once (`ON DUPLICATE ERROR`: no row waits for a verdict, so a file
        // found imported before stops the reading within a batch) or when
        // their past does not matter (`--force`): it runs while they are
        // computed, and the commit checks them (see `LateHashes`). Rows
        // that wait for their verdicts would wait for the table's keys
        // before a file imported before could stop them, and ON DUPLICATE
        // FILE SKIP over several files decides which to read from the
        // hashes: those wait for the hashes, as every import did.
        let file_count = located.as_ref().map_or(0, |found| found.files.len());
        let (late, hashing) = if self.cluster.is_none()
            && file_count > 0
            && (self.options.file_policy == FilePolicy::Allow
                || (file_count == 1 && self.options.on_duplicate == OnDuplicate::Error))
        {
            (Some(LateHashes::new(hashing.boxed())), None)
        } else {
            (None, Some(hashing))
        };
        let _early_look = late.as_ref().map(|late| self.look_early(late.clone()));
        let (mut source, mut hashes) = match hashing {
            None => (self.open_source(located.clone()).await?, Vec::new()),
            Some(hashing) => {
                // Every file's hash (of the bytes that will be read), taken
                // while the source is opened; the opening's error is said
                // first (a statement that cannot work is said before
                // anything else).
                self.metrics.set_phase(Phase::Hashing);
                let (source, hashes) = tokio::join!(self.open_source(located.clone()), hashing);
                (source?, hashes?)
            }
        };
        // Cheap early answer; the authoritative check runs under the lock, when
        // the plan opens its transaction.
        if let Some(found) = located.as_mut()
            && self.options.file_policy != FilePolicy::Allow
            && late.is_none()
        {
            let mut imported = Vec::new();
            for hash in &hashes {
                imported.push(self.db.file_imported(hash, &self.table).await?);
            }
            if let Some(first) = imported.iter().position(|&i| i) {
                if self.options.file_policy == FilePolicy::Error || imported.iter().all(|&i| i) {
                    let name = found.files[first].display_name();
                    if self.options.file_policy == FilePolicy::Error && found.files.len() > 1 {
                        tracing::error!("{name} was already imported to table '{}'", self.table);
                    }
                    let hash = hashes[first].clone();
                    return Ok((self.already_imported(started, &name, hash)?, None));
                }
                // ON DUPLICATE FILE SKIP over several files: import the new ones.
                let (new, seen): (Vec<_>, Vec<_>) = std::mem::take(&mut found.files)
                    .into_iter()
                    .zip(std::mem::take(&mut hashes))
                    .zip(imported)
                    .partition(|(_, imported)| !imported);
                for ((file, _), _) in &seen {
                    tracing::info!("Skipping {}: already imported", file.display_name());
                }
                (found.files, hashes) = new.into_iter().map(|(file, _)| file).unzip();
                source = self.open_source(located).await?;
            }
        }
        let mut file_hash = (late.is_none() && !hashes.is_empty()).then(|| hashes.join(","));
        if !self.options.declared.is_empty()
            && self
                .db
                .create_declared_table(&self.table, &self.options.declared)
                .await?
        {
            tracing::info!("Created table '{}' with the declared columns", self.table);
        }
        let (target, create) = self.target(&source).await?;
        if late.is_some() {
            // Filled in at the commit.
            hashes = vec![String::new(); source.files.len()];
        }
        let files: Vec<FileRecord> = source
            .files
            .iter()
            .zip(&hashes)
            .map(|(file, hash)| FileRecord {
                file_hash: hash.clone(),
                file_name: file.display_name(),
                table_name: self.table.key(),
                record_count: 0,
            })
            .collect();
        let paths = source
            .files
            .iter()
            .map(FileSource::path_to_recheck)
            .collect();
        let writes = (
            files,
            paths,
            HistoryEntry {
                file_hash: file_hash.clone(),
                ..history
            },
        );
        let prepared = self
            .prepare(&source, &target, create, false, Some(writes))
            .await?;
        let recipe = prepared.recipe()?;
        if let Some(cluster) = &self.cluster {
            return self
                .run_on_cluster(&cluster.0, prepared, &source.name, file_hash, started)
                .await;
        }
        let mut transaction = TableTransaction::from_recipe(Arc::clone(&self.db), &recipe);
        if let Some(late) = &late {
            transaction = transaction.with_late_hashes(late.clone());
        }
        let transaction = Arc::new(transaction);
        let _running = self.start_run(&prepared, Arc::clone(&transaction), rejects);
        // The import reads the source from its start (type inference may
        // have read it once already).
        self.metrics.set_phase(Phase::Writing);
        self.metrics
            .bytes_read
            .store(0, std::sync::atomic::Ordering::Relaxed);
        let result = prepared.collect().await;
        count_skipped_lines(prepared.plan(), &self.metrics);
        if result.is_err()
            && let Err(e) = transaction.slot().rollback().await
        {
            tracing::warn!("rollback after a failed import also failed: {e}");
        }
        if let Some(late) = &late {
            if let Err(e) = result {
                // A file imported before is the answer, whatever else failed
                // (as when the hashes came first).
                return match self.imported_before(late, e).await {
                    Ok(hash) => Ok((self.already_imported(started, &source.name, hash)?, None)),
                    Err(e) => Err(e),
                };
            }
            file_hash = Some(late.hashes().await?.join(","));
        }
        result?;
        let created_table = match transaction.outcome() {
            Some(Opened::Ready { created, .. }) => created,
            Some(Opened::FileAlreadyImported | Opened::Committed { .. }) | None => {
                let hash = file_hash.unwrap_or_default();
                return Ok((self.already_imported(started, &source.name, hash)?, None));
            }
        };

        let m = &self.metrics;
        let report = ImportReport {
            file_hash,
            created_table,
            ..self.metrics.report(
                ImportStatus::Committed,
                &self.report_context(&source.name, started),
            )
        };
        tracing::info!(
            "Import into '{}' committed: {} inserted, {} skipped, {} read",
            self.table,
            ImportMetrics::get(&m.inserted),
            ImportMetrics::get(&m.skipped),
            ImportMetrics::get(&m.rows_read)
        );
        Ok((report, Some(prepared)))
    }

    /// Runs `prepared` on the cluster of `cluster` (a Ballista session): the
    /// stages run on its executors, each with a run built from the plan's
    /// recipe; the report is the committed `import_history` row of this
    /// import's id (what was written) and the job's counters (what was read,
    /// skipped, rejected), which then complete that row.
    pub(super) async fn run_on_cluster(
        &self,
        cluster: &SessionContext,
        prepared: PreparedImport,
        source: &str,
        file_hash: Option<String>,
        started: Instant,
    ) -> Result<(ImportReport, Option<PreparedImport>)> {
        let state = cluster.state();
        let config = self.import_config(state.config().clone());
        let state = SessionStateBuilder::new_from_existing(state)
            .with_config(config)
            .build();
        let plan = state
            .create_physical_plan(prepared.logical_plan())
            .await
            .map_err(|e| AtlasError::from_source_read(e, source))?;
        self.metrics.set_phase(Phase::Writing);
        let ran = collect(Arc::clone(&plan), Arc::new(TaskContext::from(&state)))
            .await
            .map_err(AtlasError::from_cluster);
        if let Err(AtlasError::Duplicates(report)) = ran {
            // The refusal names rows; their lines are this side's to find.
            if let Err(e) = prepared.read_source_lines(&self.metrics).await {
                tracing::debug!("the lines of the duplicates are unknown: {e}");
            }
            return Err(AtlasError::Duplicates(Box::new(
                self.metrics.with_lines(*report),
            )));
        }
        ran?;
        let id = prepared.spec().import.id.to_string();
        let committed = self.db.catalog().await?.committed_import(&id).await?;
        let Some((inserted, updated)) = committed else {
            // The sink found the file imported (ON DUPLICATE FILE SKIP).
            let hash = file_hash.unwrap_or_default();
            return Ok((self.already_imported(started, source, hash)?, None));
        };
        #[cfg(feature = "ballista")]
        let counters = crate::distributed::job_counters(&plan, state.config()).await?;
        #[cfg(not(feature = "ballista"))]
        let counters = std::collections::HashMap::<String, u64>::new();
        let counter = |name: &str| counters.get(name).copied().unwrap_or(0);
        let mut report = ImportReport {
            file_hash,
            created_table: prepared.spec().creates.is_some(),
            ..self.metrics.report(
                ImportStatus::Committed,
                &self.report_context(source, started),
            )
        };
        // The check counts the updates (the sink's own count is of rows
        // staged, not of rows that matched).
        let updated = match self.options.on_duplicate {
            OnDuplicate::Update => counter("updated"),
            _ => updated,
        };
        report.counts = ImportCounts {
            rows_read: counter("rows_read"),
            inserted,
            updated,
            skipped: counter("skipped"),
            duplicates_existing: counter("duplicates_existing"),
            duplicates_in_file: counter("duplicates_in_file"),
            rejected: counter("rejected"),
            nulled_values: counter("nulled_values"),
            blank_lines: counter("blank_lines"),
            comment_lines: counter("comment_lines"),
        };
        report.chunks = report
            .rows_read
            .div_ceil(self.options.chunk_rows.max(1) as u64);
        self.db
            .catalog()
            .await?
            .complete_history(&id, &report.counts)
            .await?;
        tracing::info!(
            "Import into '{}' committed on the cluster: {inserted} inserted, {updated} updated, {} skipped, {} read",
            self.table,
            report.skipped,
            report.rows_read
        );
        Ok((report, Some(prepared)))
    }

    /// Starts the early look for a file imported before (see
    /// [`LateHashes`]), outside the import's transaction: it drives the
    /// hashing, then asks the database as soon as the hashes are known. It
    /// ends with the import (the task is dropped).
    fn look_early(&self, late: LateHashes) -> SpawnedTask<()> {
        let db = Arc::clone(&self.db);
        let table = self.table.clone();
        let policy = self.options.file_policy;
        SpawnedTask::spawn(async move {
            if policy == FilePolicy::Allow {
                // Only the hashing to drive (its error is the commit's).
                let _ = late.hashes().await;
            } else if let Some(hash) = late.first_imported(db.as_ref(), &table).await {
                late.mark_imported(&hash);
            }
        })
    }

    /// The hash of a file of `late` imported into the table before, which
    /// answers an import that failed with `error`; otherwise `error`.
    async fn imported_before(&self, late: &LateHashes, error: AtlasError) -> Result<String> {
        if let AtlasError::AlreadyImported { file_hash, .. } = error {
            return Ok(file_hash);
        }
        if self.options.file_policy == FilePolicy::Allow {
            return Err(error);
        }
        late.first_imported(self.db.as_ref(), &self.table)
            .await
            .ok_or(error)
    }

    /// The answer when the file was already imported into the table.
    pub(super) fn already_imported(
        &self,
        started: Instant,
        source: &str,
        file_hash: String,
    ) -> Result<ImportReport> {
        if self.options.file_policy == FilePolicy::Skip {
            tracing::info!(
                "File {} was already imported to table '{}': skipped",
                source,
                self.table
            );
            return Ok(ImportReport {
                file_hash: Some(file_hash),
                ..self.metrics.report(
                    ImportStatus::SkippedFile,
                    &self.report_context(source, started),
                )
            });
        }
        Err(AtlasError::AlreadyImported {
            table: self.table.key(),
            file_hash,
        })
    }

    /// What this import's report says besides its counters.
    pub(super) fn report_context<'a>(
        &'a self,
        source: &'a str,
        started: Instant,
    ) -> ReportContext<'a> {
        ReportContext {
            table: self.table.key(),
            source,
            chunk_rows: self.options.chunk_rows,
            partitions: self.options.partitions,
            started,
        }
    }
}

/// Adds the blank and comment lines the plan's readers skipped to `metrics`.
pub(super) fn count_skipped_lines(plan: &Arc<dyn ExecutionPlan>, metrics: &ImportMetrics) {
    use std::sync::atomic::Ordering::Relaxed;
    if let Some(set) = plan.metrics() {
        let sum = |name: &str| set.sum_by_name(name).map_or(0, |v| v.as_usize() as u64);
        metrics.blank_lines.fetch_add(sum("blank_lines"), Relaxed);
        metrics
            .comment_lines
            .fetch_add(sum("comment_lines"), Relaxed);
    }
    for child in plan.children() {
        count_skipped_lines(child, metrics);
    }
}
