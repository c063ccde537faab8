//! The import operation: a consuming builder that plans the import as a
//! DataFusion plan, runs it in one transaction and returns an [`ImportReport`].

use std::sync::Arc;
use std::time::Instant;

use async_trait::async_trait;
use datafusion::arrow::array::RecordBatch;
use datafusion::config::ConfigOptions;
use datafusion::datasource::sink::DataSinkExec;
use datafusion::physical_optimizer::PhysicalOptimizerRule;
use datafusion::physical_optimizer::ensure_requirements::EnsureRequirements;
use datafusion::physical_plan::{ExecutionPlan, collect, displayable};
use datafusion::prelude::{SessionConfig, SessionContext};

use crate::coerce::coerce_array;
use crate::db::{Database, FileRecord};
use crate::error::{AtlasError, Result};
use crate::key::{EncodedKeys, KeyEncoder, KeySet};
use crate::options::{
    CreateTable, DEFAULT_CHUNK_ROWS, DEFAULT_PARTITIONS, FilePolicy, OnDuplicate,
};
use crate::physical::{
    CoerceExec, DuplicateCheckExec, ExistingKeyLoader, ExistingKeys, ImportSink, TransactionSlot,
};
use crate::report::{ImportMetrics, ImportReport};
use crate::schema::{ColumnSpec, TargetColumn, TargetTable};
use crate::source::{FileSource, SourceFormat};

/// Rows per batch when scanning existing keys.
const KEY_SCAN_BATCH_ROWS: usize = 8192;
/// Text batches of existing keys queued for conversion at most.
const KEY_SCAN_QUEUE: usize = 8;

/// Imports one file into one table without letting duplicates in.
///
/// ```no_run
/// # async fn run() -> atlas_import::Result<()> {
/// use atlas_import::{ImportBuilder, OnDuplicate, db};
/// let database = db::connect("sqlite://atlas.db").await?;
/// let report = ImportBuilder::new(database, "contacts.csv", "contacts")
///     .with_key(["email"])
///     .with_on_duplicate(OnDuplicate::Skip)
///     .execute()
///     .await?;
/// println!("inserted {} rows", report.inserted);
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct ImportBuilder {
    db: Arc<dyn Database>,
    path: std::path::PathBuf,
    format: Option<SourceFormat>,
    table: String,
    key: Option<Vec<String>>,
    on_duplicate: OnDuplicate,
    partitions: usize,
    chunk_rows: usize,
    file_policy: FilePolicy,
    create_table: CreateTable,
    metrics: Arc<ImportMetrics>,
}

/// An import planned and ready to run (or to explain).
pub struct PreparedImport {
    plan: Arc<dyn ExecutionPlan>,
    ctx: SessionContext,
}

impl std::fmt::Debug for PreparedImport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PreparedImport")
            .field("plan", &self.explain())
            .finish()
    }
}

impl PreparedImport {
    /// The physical plan.
    pub fn plan(&self) -> &Arc<dyn ExecutionPlan> {
        &self.plan
    }

    /// The physical plan as `EXPLAIN` prints it.
    pub fn explain(&self) -> String {
        displayable(self.plan.as_ref()).indent(true).to_string()
    }
}

impl ImportBuilder {
    /// Imports the file at `path` into `table` of `db`.
    pub fn new(
        db: Arc<dyn Database>,
        path: impl Into<std::path::PathBuf>,
        table: impl Into<String>,
    ) -> Self {
        Self {
            db,
            path: path.into(),
            format: None,
            table: table.into(),
            key: None,
            on_duplicate: OnDuplicate::Error,
            partitions: DEFAULT_PARTITIONS,
            chunk_rows: DEFAULT_CHUNK_ROWS,
            file_policy: FilePolicy::Error,
            create_table: CreateTable::IfNotExists,
            metrics: Arc::new(ImportMetrics::default()),
        }
    }

    /// The uniqueness columns (default: every column the import writes).
    pub fn with_key<I, S>(mut self, columns: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        let key: Vec<String> = columns.into_iter().map(Into::into).collect();
        self.key = (!key.is_empty()).then_some(key);
        self
    }

    /// What to do with duplicates (default: refuse the import).
    pub fn with_on_duplicate(mut self, on_duplicate: OnDuplicate) -> Self {
        self.on_duplicate = on_duplicate;
        self
    }

    /// Partitions of the duplicate check (default 4).
    pub fn with_partitions(mut self, partitions: usize) -> Self {
        self.partitions = partitions;
        self
    }

    /// Rows per written chunk (default 10000).
    pub fn with_chunk_rows(mut self, chunk_rows: usize) -> Self {
        self.chunk_rows = chunk_rows;
        self
    }

    /// Import even if the same file was imported into the table before (the
    /// row-level check still runs).
    pub fn with_force(mut self, force: bool) -> Self {
        self.file_policy = if force {
            FilePolicy::Allow
        } else {
            FilePolicy::Error
        };
        self
    }

    /// What to do when the file was already imported into the table (default:
    /// refuse; `Skip` succeeds writing nothing; `Allow` is [`Self::with_force`]).
    pub fn with_file_policy(mut self, file_policy: FilePolicy) -> Self {
        self.file_policy = file_policy;
        self
    }

    /// The source format (default: from the file extension).
    pub fn with_format(mut self, format: SourceFormat) -> Self {
        self.format = Some(format);
        self
    }

    /// Whether a missing table may be created (default: yes).
    pub fn with_create_table(mut self, create_table: CreateTable) -> Self {
        self.create_table = create_table;
        self
    }

    /// Live counters to watch while the import runs (e.g. for a progress bar).
    pub fn with_metrics(mut self, metrics: Arc<ImportMetrics>) -> Self {
        self.metrics = metrics;
        self
    }

    fn validate(&self) -> Result<()> {
        if self.partitions == 0 {
            return Err(AtlasError::Usage("partitions must be at least 1".into()));
        }
        if self.chunk_rows == 0 {
            return Err(AtlasError::Usage("chunk_rows must be at least 1".into()));
        }
        if self.table.trim().is_empty() {
            return Err(AtlasError::Usage("the target table name is empty".into()));
        }
        Ok(())
    }

    fn session(&self) -> SessionContext {
        let config = SessionConfig::new()
            .with_target_partitions(self.partitions)
            // One ordered stream out of the source: row numbers are source rows.
            .with_repartition_file_scans(false)
            .with_round_robin_repartition(false);
        SessionContext::new_with_config(config)
    }

    /// Plans the import without touching the data, and returns the plan.
    pub async fn explain(self) -> Result<String> {
        self.validate()?;
        let source = FileSource::new(&self.path, self.format.clone())?;
        let ctx = self.session();
        let df = source.read(&ctx).await?;
        let target = match self.db.describe_table(&self.table).await? {
            Some(t) => t,
            None => self.planned_table(&source, df.clone()).await?,
        };
        let slot = Arc::new(TransactionSlot::empty());
        let prepared = self
            .prepare(&source, df, &target, false, Arc::clone(&slot), None)
            .await?;
        Ok(prepared.explain())
    }

    /// The table an import would create, described without creating it.
    async fn planned_table(
        &self,
        source: &FileSource,
        df: datafusion::prelude::DataFrame,
    ) -> Result<TargetTable> {
        if self.create_table == CreateTable::Never {
            return Err(AtlasError::Usage(format!(
                "table '{}' does not exist (and CREATE TABLE NEVER was given)",
                self.table
            )));
        }
        let specs = source.infer_columns(df).await?;
        Ok(TargetTable {
            name: self.table.clone(),
            columns: specs
                .iter()
                .map(|s| TargetColumn {
                    name: s.name.clone(),
                    sql_type: self.db.sql_type_for(&s.data_type).to_string(),
                    data_type: s.data_type.clone(),
                    nullable: true,
                    has_default: false,
                })
                .collect(),
        })
    }

    /// Runs the import.
    #[tracing::instrument(skip_all, fields(table = %self.table, source = %self.path.display()))]
    pub async fn execute(self) -> Result<ImportReport> {
        let started = Instant::now();
        self.validate()?;
        let source = FileSource::new(&self.path, self.format.clone())?;
        let ctx = self.session();
        let df = source.read(&ctx).await?;
        self.db.ensure_metadata().await?;
        let file_hash = source.sha256().await?;
        // Cheap early answer; the authoritative check runs under the lock below.
        if self.file_policy != FilePolicy::Allow
            && self.db.file_imported(&file_hash, &self.table).await?
        {
            return self.already_imported(started, file_hash);
        }
        let slot = Arc::new(TransactionSlot::empty());
        slot.put(self.db.begin().await?).await;
        let result = self
            .run_in_transaction(&source, df, &file_hash, &slot)
            .await;
        if result.is_err()
            && let Err(e) = slot.rollback().await
        {
            tracing::warn!("rollback after a failed import also failed: {e}");
        }
        let created_table = match result? {
            Some(created) => created,
            None => return self.already_imported(started, file_hash),
        };

        let m = &self.metrics;
        let report = self.duplicate_free_report(started, Some(file_hash), created_table);
        tracing::info!(
            "Import into '{}' committed: {} inserted, {} skipped, {} read",
            self.table,
            ImportMetrics::get(&m.inserted),
            ImportMetrics::get(&m.skipped),
            ImportMetrics::get(&m.rows_read)
        );
        Ok(report)
    }

    async fn run_in_transaction(
        &self,
        source: &FileSource,
        df: datafusion::prelude::DataFrame,
        file_hash: &str,
        slot: &Arc<TransactionSlot>,
    ) -> Result<Option<bool>> {
        // Under the lock: the file check, and the table as it really is now (a
        // concurrent import may have created it meanwhile).
        let (target, created) = {
            let mut guard = slot.lock().await;
            let tx = guard.as_mut().expect("the transaction was just opened");
            tx.lock_table(&self.table).await?;
            if self.file_policy != FilePolicy::Allow
                && tx.file_imported(file_hash, &self.table).await?
            {
                // `already_imported` decides between refusing and skipping.
                return Ok(None);
            }
            match tx.describe_table(&self.table).await? {
                Some(target) => (target, false),
                None => {
                    let specs: Vec<ColumnSpec> = self
                        .planned_table(source, df.clone())
                        .await?
                        .columns
                        .into_iter()
                        .map(|c| ColumnSpec {
                            name: c.name,
                            data_type: c.data_type,
                        })
                        .collect();
                    tx.create_table(&self.table, &specs).await?;
                    let target = tx.describe_table(&self.table).await?.ok_or_else(|| {
                        AtlasError::Usage(format!("table '{}' was not created", self.table))
                    })?;
                    (target, true)
                }
            }
        };
        let file = FileRecord {
            file_hash: file_hash.to_string(),
            file_name: source.display_name(),
            table_name: self.table.clone(),
            record_count: 0,
        };
        let prepared = self
            .prepare(source, df, &target, !created, Arc::clone(slot), Some(file))
            .await?;
        collect(Arc::clone(&prepared.plan), prepared.ctx.task_ctx())
            .await
            .map_err(AtlasError::from_datafusion)?;
        Ok(Some(created))
    }

    /// The answer when the file was already imported into the table.
    fn already_imported(&self, started: Instant, file_hash: String) -> Result<ImportReport> {
        if self.file_policy == FilePolicy::Skip {
            tracing::info!(
                "File {} was already imported to table '{}': skipped",
                self.path.display(),
                self.table
            );
            return Ok(build_report(
                &self.metrics,
                "skipped_file",
                &self.table,
                &self.path.display().to_string(),
                self.chunk_rows,
                self.partitions,
                Some(file_hash),
                started,
                false,
                None,
            ));
        }
        Err(AtlasError::AlreadyImported {
            table: self.table.clone(),
            file_hash,
        })
    }

    fn duplicate_free_report(
        &self,
        started: Instant,
        file_hash: Option<String>,
        created_table: bool,
    ) -> ImportReport {
        build_report(
            &self.metrics,
            "committed",
            &self.table,
            &self.path.display().to_string(),
            self.chunk_rows,
            self.partitions,
            file_hash,
            started,
            created_table,
            None,
        )
    }

    /// Builds the physical plan over `df` for `target`.
    async fn prepare(
        &self,
        source: &FileSource,
        df: datafusion::prelude::DataFrame,
        target: &TargetTable,
        table_may_have_rows: bool,
        slot: Arc<TransactionSlot>,
        file: Option<FileRecord>,
    ) -> Result<PreparedImport> {
        let ctx = self.session();
        let source_schema = df.schema().as_arrow().clone();
        let mapping = map_columns(&source_schema, target)?;
        let columns: Vec<TargetColumn> = mapping.iter().map(|(_, c)| c.clone()).collect();
        let key_columns = resolve_key(self.key.as_deref(), &columns, target)?;

        let input = df
            .create_physical_plan()
            .await
            .map_err(|e| AtlasError::from_source_read(e, &source.display_name()))?;
        let coerce = Arc::new(CoerceExec::new(
            input,
            mapping,
            source.display_name(),
            self.chunk_rows,
            Arc::clone(&self.metrics),
        ));
        let existing = if table_may_have_rows {
            let key_targets = key_columns.iter().map(|&i| columns[i].clone()).collect();
            ExistingKeys::new(
                format!("{} (keys preloaded once, shared)", self.table),
                Arc::new(TableKeyLoader {
                    slot: Arc::clone(&slot),
                    table: self.table.clone(),
                    key_columns: key_targets,
                    metrics: Arc::clone(&self.metrics),
                }),
            )
        } else {
            ExistingKeys::none(format!("{} (new table)", self.table))
        };
        let check = Arc::new(
            DuplicateCheckExec::try_new(
                coerce,
                key_columns,
                Arc::new(existing),
                self.on_duplicate,
                self.chunk_rows,
                Arc::clone(&self.metrics),
            )
            .map_err(AtlasError::from_datafusion)?,
        );
        let sink = Arc::new(ImportSink::new(
            self.table.clone(),
            columns,
            self.db.kind(),
            self.on_duplicate,
            self.chunk_rows,
            slot,
            Arc::clone(&self.metrics),
            file,
            check.schema(),
        ));
        let order = crate::physical::source_order_requirement(&check.schema());
        let plan: Arc<dyn ExecutionPlan> = Arc::new(DataSinkExec::new(check, sink, Some(order)));
        let plan = ensure_requirements(plan, self.partitions)?;
        Ok(PreparedImport { plan, ctx })
    }
}

/// Inserts the repartitions and merges the operators ask for, with the
/// import's partition count.
pub fn ensure_requirements(
    plan: Arc<dyn ExecutionPlan>,
    partitions: usize,
) -> Result<Arc<dyn ExecutionPlan>> {
    let mut config = ConfigOptions::new();
    config.execution.target_partitions = partitions;
    config.optimizer.enable_round_robin_repartition = false;
    config.optimizer.repartition_file_scans = false;
    EnsureRequirements::new()
        .optimize(plan, &config)
        .map_err(AtlasError::from_datafusion)
}

/// Maps each source column to its target column, or lists every difference.
fn map_columns(
    source: &datafusion::arrow::datatypes::Schema,
    target: &TargetTable,
) -> Result<Vec<(usize, TargetColumn)>> {
    let mut differences = Vec::new();
    let mut mapping = Vec::new();
    for (i, field) in source.fields().iter().enumerate() {
        match target.find_column(field.name()) {
            Some(column) if column.data_type == datafusion::arrow::datatypes::DataType::Null => {
                differences.push(format!(
                    "column '{}' has type {}, which atlas-import cannot write yet",
                    column.name, column.sql_type
                ))
            }
            Some(column) => {
                if mapping
                    .iter()
                    .any(|(_, c): &(usize, TargetColumn)| c.name == column.name)
                {
                    differences.push(format!(
                        "source columns map twice onto column '{}'",
                        column.name
                    ));
                }
                mapping.push((i, column.clone()));
            }
            None => differences.push(format!(
                "source column '{}' is not a column of table '{}' (its columns: {})",
                field.name(),
                target.name,
                target.column_names().join(", ")
            )),
        }
    }
    for column in &target.columns {
        let written = mapping.iter().any(|(_, c)| c.name == column.name);
        if !written && !column.nullable && !column.has_default {
            differences.push(format!(
                "column '{}' is NOT NULL without a default, and the source does not provide it",
                column.name
            ));
        }
    }
    if mapping.is_empty() && differences.is_empty() {
        differences.push("the source has no columns".into());
    }
    if differences.is_empty() {
        Ok(mapping)
    } else {
        Err(AtlasError::SchemaMismatch {
            table: target.name.clone(),
            differences,
        })
    }
}

/// Resolves the key column names to indices among the written columns.
fn resolve_key(
    key: Option<&[String]>,
    written: &[TargetColumn],
    target: &TargetTable,
) -> Result<Vec<usize>> {
    let Some(names) = key else {
        return Ok((0..written.len()).collect());
    };
    names
        .iter()
        .map(|name| {
            let column = target.find_column(name).ok_or_else(|| {
                AtlasError::Usage(format!(
                    "key column '{name}' is not a column of table '{}' (its columns: {})",
                    target.name,
                    target.column_names().join(", ")
                ))
            })?;
            written
                .iter()
                .position(|c| c.name == column.name)
                .ok_or_else(|| {
                    AtlasError::Usage(format!(
                        "key column '{name}' is not provided by the source, so it cannot be checked"
                    ))
                })
        })
        .collect()
}

/// Builds a report from the live counters.
#[allow(clippy::too_many_arguments)]
pub fn build_report(
    metrics: &ImportMetrics,
    status: &str,
    table: &str,
    source: &str,
    chunk_rows: usize,
    partitions: usize,
    file_hash: Option<String>,
    started: Instant,
    created_table: bool,
    error: Option<String>,
) -> ImportReport {
    let duplicates = metrics.duplicate_report();
    let rows_read = ImportMetrics::get(&metrics.rows_read);
    let committed = status == "committed";
    ImportReport {
        status: status.to_string(),
        table: table.to_string(),
        source: source.to_string(),
        rows_read,
        inserted: if committed {
            ImportMetrics::get(&metrics.inserted)
        } else {
            0
        },
        skipped: ImportMetrics::get(&metrics.skipped),
        duplicates_existing: duplicates.existing,
        duplicates_in_file: duplicates.in_file,
        rejected: 0,
        chunks: rows_read.div_ceil(chunk_rows.max(1) as u64),
        partitions,
        file_hash,
        elapsed_ms: started.elapsed().as_millis() as u64,
        created_table,
        error,
    }
}

/// Loads the existing keys of the target through the import transaction,
/// coerced with the same code as the import's values.
#[derive(Debug)]
struct TableKeyLoader {
    slot: Arc<TransactionSlot>,
    table: String,
    key_columns: Vec<TargetColumn>,
    metrics: Arc<ImportMetrics>,
}

#[async_trait]
impl ExistingKeyLoader for TableKeyLoader {
    async fn load(&self) -> Result<KeySet> {
        let started = Instant::now();
        // The database streams text batches; a blocking thread converts them and
        // fills the set meanwhile, so the scan and the hashing overlap.
        let (sender, receiver) = std::sync::mpsc::sync_channel::<RecordBatch>(KEY_SCAN_QUEUE);
        let table = self.table.clone();
        let columns = self.key_columns.clone();
        let builder =
            tokio::task::spawn_blocking(move || build_key_set(&table, &columns, receiver));
        let mut on_batch = move |text: RecordBatch| -> Result<()> {
            // Blocks only while the builder is behind by a full queue.
            sender
                .send(text)
                .map_err(|_| AtlasError::Usage("the key set builder stopped early".into()))
        };
        let mut guard = self.slot.lock().await;
        let tx = guard.as_mut().ok_or_else(crate::physical::not_open)?;
        let rows = tx
            .scan_keys(
                &self.table,
                &self.key_columns,
                KEY_SCAN_BATCH_ROWS,
                &mut on_batch,
            )
            .await;
        drop(guard);
        drop(on_batch);
        let built = builder
            .await
            .map_err(|e| AtlasError::Usage(format!("the key set builder failed: {e}")))?;
        // A conversion error explains a closed queue better than the scan's error.
        let mut set = built?;
        let rows = rows?;
        set.shrink_to_fit();
        self.metrics
            .existing_keys
            .store(rows, std::sync::atomic::Ordering::Relaxed);
        tracing::info!(
            "Pre-loaded {rows} existing rows for comparison ({} distinct keys, {} MB, {} ms)",
            set.len(),
            set.memory_size() >> 20,
            started.elapsed().as_millis()
        );
        Ok(set)
    }
}

/// Converts text batches of existing keys to the key types and fills a set.
fn build_key_set(
    table: &str,
    columns: &[TargetColumn],
    batches: std::sync::mpsc::Receiver<RecordBatch>,
) -> Result<KeySet> {
    let mut set = KeySet::new();
    let mut keys = EncodedKeys::default();
    let encoder = KeyEncoder::new((0..columns.len()).collect());
    let schema = Arc::new(datafusion::arrow::datatypes::Schema::new(
        columns
            .iter()
            .map(|c| datafusion::arrow::datatypes::Field::new(&c.name, c.data_type.clone(), true))
            .collect::<Vec<_>>(),
    ));
    for text in batches {
        let mut typed = Vec::with_capacity(columns.len());
        for (i, column) in columns.iter().enumerate() {
            typed.push(
                coerce_array(text.column(i), &column.data_type).map_err(|f| {
                    AtlasError::BadValue {
                        source_name: format!("existing rows of table '{table}'"),
                        row: 0,
                        column: column.name.clone(),
                        value: f.value,
                        target_type: column.sql_type.clone(),
                    }
                })?,
            );
        }
        let batch = RecordBatch::try_new(Arc::clone(&schema), typed)
            .map_err(|e| AtlasError::from_datafusion(e.into()))?;
        encoder.encode(&batch, &mut keys)?;
        for i in 0..keys.len() {
            set.insert(keys.key(i), 0);
        }
    }
    Ok(set)
}
