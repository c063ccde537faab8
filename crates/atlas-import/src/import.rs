//! The import operation: a consuming builder that plans the import as a
//! DataFusion plan, runs it in one transaction and returns an [`ImportReport`].

use std::sync::Arc;
use std::time::Instant;

use async_trait::async_trait;
use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::datatypes::{Field, Schema, SchemaRef};
use datafusion::common::Column;
use datafusion::execution::TaskContext;
use datafusion::execution::runtime_env::RuntimeEnvBuilder;
use datafusion::execution::session_state::SessionStateBuilder;
use datafusion::logical_expr::Expr;
use datafusion::logical_expr::{Extension, LogicalPlan};
use datafusion::physical_plan::display::DisplayableExecutionPlan;
use datafusion::physical_plan::{ExecutionPlan, collect, displayable};
use datafusion::prelude::{DataFrame, SessionConfig, SessionContext};

use crate::coerce::coerce_column;
use crate::db::{Database, FileRecord, HistoryEntry};
use crate::error::{AtlasError, Result};
use crate::key::{EncodedKeys, Fingerprints, KeyEncoder, KeyHasher};
use crate::key_form::KeyForm;
use crate::logical::{ImportNode, ImportQueryPlanner, ImportSpec};
use crate::names::{NamePolicy, TableName, TableRef};
use crate::options::{
    BinaryText, CreateTable, DEFAULT_CHUNK_ROWS, DEFAULT_PARTITIONS, FilePolicy, Inference,
    KeyStrategy, OnBadValue, OnDuplicate,
};
use crate::physical::{
    ExistingKeyLoader, ExistingKeys, ImportId, ImportRun, ImportRuns, KeyLookup, Opened,
    RegisteredRun, TableTransaction,
};
use crate::reject::RejectWriter;
use crate::report::{ImportMetrics, ImportReport, ImportStatus, Phase, ReportContext};
use crate::schema::{ColumnSpec, TargetColumn, TargetTable, is_reader_column};
use crate::source::{Compression, FileSource, LocatedFiles, SourceFormat, SourceOptions, locate};
use crate::typed_text::TextForm;

/// The probe strategy is chosen when the table holds at least this many
/// times the import's rows.
const PROBE_TABLE_RATIO: u64 = 8;
/// ... and, where rows wait for their verdicts, when the import has at most
/// this many rows (they are held meanwhile).
const PROBE_HELD_ROWS: u64 = 2_000_000;

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
    source: SourceSpec,
    columns: Vec<String>,
    map: Vec<(String, String)>,
    /// The target as written (`analytics.contacts`, `"My Table"`), read when
    /// the import starts.
    table_text: String,
    /// The target as a parsed name (from SQL), instead of `table_text`.
    table_name: Option<TableName>,
    /// The target as the database names it: set by [`Self::resolve_table`].
    table: TableRef,
    /// Whether a new table and its columns take the database's plain form.
    names: NamePolicy,
    /// How the check learns the keys already in the table.
    strategy: KeyStrategy,
    key: Option<Vec<String>>,
    on_duplicate: OnDuplicate,
    partitions: usize,
    chunk_rows: usize,
    file_policy: FilePolicy,
    create_table: CreateTable,
    on_bad_value: OnBadValue,
    /// Only the MAP columns are imported (a mapping file's `mappings`).
    only_mapped: bool,
    /// Columns with SQL types to create a missing table with.
    declared: Vec<ColumnSpec>,
    /// How a new table's column types are inferred from a text source.
    inference: Inference,
    /// How text is read into binary columns.
    binary_text: BinaryText,
    /// Replaces the first sentence of the duplicates error.
    duplicate_message: Option<String>,
    /// Bytes the import may hold in DataFusion's memory pool (key sets,
    /// buffered batches); `None`: unbounded.
    memory_limit: Option<usize>,
    metrics: Arc<ImportMetrics>,
}

/// Where the rows come from.
#[derive(Debug)]
enum SourceSpec {
    /// A file: hashed, checked and recorded in `file_imports`.
    File {
        path: std::path::PathBuf,
        format: Option<SourceFormat>,
        compression: Option<Compression>,
    },
    /// Any DataFusion result (no file hash, so no file-level check).
    DataFrame { df: Box<DataFrame>, name: String },
}

/// The source opened for one run: its rows, its name, the files behind it
/// (one per file of a glob, none for a DataFrame), and the staging directory
/// of remote files, kept until the run ends.
struct OpenedSource {
    df: DataFrame,
    name: String,
    files: Vec<FileSource>,
    _staged: Option<Arc<LocatedFiles>>,
}

/// The files of a file source, located (remote ones staged) but not yet read.
#[derive(Clone)]
struct SourceFiles {
    files: Vec<FileSource>,
    staged: Arc<LocatedFiles>,
}

/// An import planned and ready to run (or to explain): plans of settings
/// only; running it registers its [`ImportRun`] in the session's
/// [`ImportRuns`].
pub struct PreparedImport {
    /// The settings of the import (the logical node's).
    spec: Arc<ImportSpec>,
    /// The logical plan: an [`ImportNode`] over the source.
    logical: LogicalPlan,
    plan: Arc<dyn ExecutionPlan>,
    /// The task context of the source's session (its object stores, config,
    /// and the [`ImportRuns`] the operators find their run in).
    task: Arc<datafusion::execution::TaskContext>,
    runs: Arc<ImportRuns>,
}

impl std::fmt::Debug for PreparedImport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PreparedImport")
            .field("plan", &self.explain())
            .finish()
    }
}

impl PreparedImport {
    /// The import's settings.
    pub fn spec(&self) -> &ImportSpec {
        &self.spec
    }

    /// The physical plan.
    pub fn plan(&self) -> &Arc<dyn ExecutionPlan> {
        &self.plan
    }

    /// The logical plan.
    pub fn logical_plan(&self) -> &LogicalPlan {
        &self.logical
    }

    /// The logical and physical plans as `EXPLAIN` prints them.
    pub fn explain(&self) -> String {
        self.explain_with(displayable(self.plan.as_ref()))
    }

    /// The plans as `EXPLAIN ANALYZE` prints them, after the plan ran.
    pub fn explain_analyzed(&self) -> String {
        self.explain_with(DisplayableExecutionPlan::with_metrics(self.plan.as_ref()))
    }

    fn explain_with(&self, physical: DisplayableExecutionPlan<'_>) -> String {
        format!(
            "logical_plan\n{}\nphysical_plan\n{}",
            self.logical.display_indent(),
            physical.indent(true)
        )
    }
}

impl ImportBuilder {
    /// Imports the file at `path` into `table` of `db`.
    pub fn new(
        db: Arc<dyn Database>,
        path: impl Into<std::path::PathBuf>,
        table: impl Into<String>,
    ) -> Self {
        let table_text = table.into();
        Self {
            db,
            source: SourceSpec::File {
                path: path.into(),
                format: None,
                compression: None,
            },
            columns: Vec::new(),
            map: Vec::new(),
            table: TableRef::unqualified(table_text.as_str()),
            table_text,
            table_name: None,
            names: NamePolicy::Normalize,
            strategy: KeyStrategy::Auto,
            key: None,
            on_duplicate: OnDuplicate::Error,
            partitions: DEFAULT_PARTITIONS,
            chunk_rows: DEFAULT_CHUNK_ROWS,
            file_policy: FilePolicy::Error,
            create_table: CreateTable::IfNotExists,
            on_bad_value: OnBadValue::Error,
            only_mapped: false,
            declared: Vec::new(),
            inference: Inference::Strict,
            binary_text: BinaryText::Native,
            duplicate_message: None,
            memory_limit: None,
            metrics: Arc::new(ImportMetrics::default()),
        }
    }

    /// Imports the rows of any DataFusion `DataFrame` into `table`; `name`
    /// describes the source in reports. There is no file, so no file-level check.
    pub fn from_dataframe(
        db: Arc<dyn Database>,
        df: DataFrame,
        name: impl Into<String>,
        table: impl Into<String>,
    ) -> Self {
        let mut builder = Self::new(db, "", table);
        builder.source = SourceSpec::DataFrame {
            df: Box::new(df),
            name: name.into(),
        };
        builder
    }

    /// Names the source's columns, in order (`IMPORT INTO t (a, b, c)`): the
    /// source must have exactly that many columns; `MAP` expressions and the key
    /// then use these names.
    pub fn with_columns<I, S>(mut self, columns: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.columns = columns.into_iter().map(Into::into).collect();
        self
    }

    /// Target columns computed by SQL expressions over the source columns
    /// (`MAP (email = lower("E-mail"))`): each `(column, expression)` adds or
    /// replaces a column; source columns no expression reads pass through.
    pub fn with_map<I, C, E>(mut self, map: I) -> Self
    where
        I: IntoIterator<Item = (C, E)>,
        C: Into<String>,
        E: Into<String>,
    {
        self.map = map.into_iter().map(|(c, e)| (c.into(), e.into())).collect();
        self
    }

    /// The target table as a parsed name (the SQL front end's, which knows
    /// which parts were quoted), instead of the text given to [`Self::new`].
    pub fn with_table_name(mut self, name: TableName) -> Self {
        self.table_text = name.to_string();
        self.table_name = Some(name);
        self
    }

    /// Whether a new table and its columns get the database's plain names
    /// (default: [`NamePolicy::Normalize`], `E-Mail` -> `e_mail`) or keep
    /// the source's exactly.
    pub fn with_names(mut self, names: NamePolicy) -> Self {
        self.names = names;
        self
    }

    /// How the check learns the keys already in the table (default: chosen
    /// per import from the sizes and indexes; EXPLAIN says which and why).
    pub fn with_strategy(mut self, strategy: KeyStrategy) -> Self {
        self.strategy = strategy;
        self
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
        if let SourceSpec::File { format: f, .. } = &mut self.source {
            *f = Some(format);
        }
        self
    }

    /// How the source file is compressed (default: from its extension,
    /// `.gz`, `.zst`, `.bz2`, `.xz`).
    pub fn with_compression(mut self, compression: Compression) -> Self {
        if let SourceSpec::File { compression: c, .. } = &mut self.source {
            *c = Some(compression);
        }
        self
    }

    /// How the column types of a table the import creates are inferred from
    /// a text source (default: [`Inference::Strict`], no value changes its
    /// meaning; [`Inference::Text`]: every column is text).
    pub fn with_inference(mut self, inference: Inference) -> Self {
        self.inference = inference;
        self
    }

    /// How text from the source is read into binary columns (bytea, BLOB):
    /// as the database reads it (default), or as hex or base64.
    pub fn with_binary_text(mut self, binary_text: BinaryText) -> Self {
        self.binary_text = binary_text;
        self
    }

    /// The format, compression and inference an import's `OPTIONS` (or the
    /// CLI flags) name; what they leave out stays as it is.
    pub fn with_source_options(mut self, options: SourceOptions) -> Self {
        if let Some(format) = options.format {
            self = self.with_format(format);
        }
        if let Some(compression) = options.compression {
            self = self.with_compression(compression);
        }
        if let Some(inference) = options.infer {
            self = self.with_inference(inference);
        }
        if let Some(names) = options.names {
            self = self.with_names(names);
        }
        if let Some(binary_text) = options.binary {
            self = self.with_binary_text(binary_text);
        }
        self
    }

    /// Whether a missing table may be created (default: yes).
    pub fn with_create_table(mut self, create_table: CreateTable) -> Self {
        self.create_table = create_table;
        self
    }

    /// What to do with a value that does not fit its column (default: fail).
    pub fn with_on_bad_value(mut self, on_bad_value: OnBadValue) -> Self {
        self.on_bad_value = on_bad_value;
        self
    }

    /// Imports only the MAP columns; other source columns are left out.
    pub fn with_only_mapped_columns(mut self, only: bool) -> Self {
        self.only_mapped = only;
        self
    }

    /// Creates a missing table with these columns and SQL types (before the
    /// import, in its own transaction) instead of types inferred from the source.
    pub fn with_declared_columns<I, N, T>(mut self, columns: I) -> Self
    where
        I: IntoIterator<Item = (N, T)>,
        N: Into<String>,
        T: Into<String>,
    {
        self.declared = columns
            .into_iter()
            .map(|(name, sql_type)| ColumnSpec {
                name: name.into(),
                data_type: datafusion::arrow::datatypes::DataType::Utf8,
                sql_type: Some(sql_type.into()),
            })
            .collect();
        self
    }

    /// The message of a refusal for duplicates, instead of
    /// `Duplicate data detected.` (the counts and samples follow it).
    pub fn with_duplicate_message(mut self, message: impl Into<String>) -> Self {
        self.duplicate_message = Some(message.into());
        self
    }

    /// Bounds the memory the import holds in DataFusion's memory pool: the
    /// existing keys, the import's own keys and buffered batches. An import
    /// that needs more fails, naming the limit, and writes nothing.
    pub fn with_memory_limit(mut self, bytes: usize) -> Self {
        self.memory_limit = Some(bytes);
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
        if self.table_text.trim().is_empty() && self.table_name.is_none() {
            return Err(AtlasError::Usage("the target table name is empty".into()));
        }
        Ok(())
    }

    /// Reads the target's name as the database names it: unquoted parts
    /// folded as it folds them; a table that does not exist under an
    /// unquoted name is the one of its plain form (`MyContacts` ->
    /// `mycontacts`) unless the names are kept.
    async fn resolve_table(mut self) -> Result<Self> {
        self.validate()?;
        let name = match &self.table_name {
            Some(name) => name.clone(),
            None => TableName::parse(&self.table_text)?,
        };
        let exact = self.db.resolve(&name);
        let plain = crate::names::normalize(&exact.name);
        self.table = if self.names == NamePolicy::Normalize
            && !name.table.quoted
            && !plain.is_empty()
            && plain != exact.name
            && self.db.describe_table(&exact).await?.is_none()
        {
            exact.sibling(plain)
        } else {
            exact
        };
        Ok(self)
    }

    /// `base` configured for this import: its partition count, and one ordered
    /// stream out of each source, so row numbers are source rows.
    fn import_config(&self, base: SessionConfig) -> SessionConfig {
        base.with_target_partitions(self.partitions)
            .with_repartition_file_scans(false)
            .with_round_robin_repartition(false)
    }

    fn session(&self) -> SessionContext {
        SessionContext::new_with_config(self.import_config(SessionConfig::new()))
    }

    /// Plans the import without touching the data, and returns the plan.
    pub async fn explain(self) -> Result<String> {
        let this = self.resolve_table().await?;
        this.explain_resolved().await
    }

    async fn explain_resolved(self) -> Result<String> {
        let files = self.locate().await?;
        let source = self.open_source(files).await?;
        let (target, create) = self.target(&source).await?;
        // Explaining registers no run: the plan is settings only.
        let prepared = self.prepare(&source, &target, create, false).await?;
        Ok(prepared.explain())
    }

    /// The dry run of `CHECK IMPORT`: writes nothing and returns the duplicate
    /// rows: the key columns, `source_row` and `duplicate_of` (`existing`, or
    /// `row N` for the first occurrence in the import), in source order.
    pub async fn check(self) -> Result<(SchemaRef, Vec<RecordBatch>)> {
        let this = self.resolve_table().await?;
        this.check_resolved().await
    }

    async fn check_resolved(self) -> Result<(SchemaRef, Vec<RecordBatch>)> {
        let files = self.locate().await?;
        let source = self.open_source(files).await?;
        let (target, _) = self.target(&source).await?;
        let prepared = self.prepare(&source, &target, None, true).await?;
        // A transaction for a consistent view of the existing keys, rolled back.
        let transaction = Arc::new(TableTransaction::dry_run(
            Arc::clone(&self.db),
            self.table.clone(),
        ));
        let _running = self.start_run(&prepared, Arc::clone(&transaction), None);
        let result = collect(Arc::clone(&prepared.plan), Arc::clone(&prepared.task))
            .await
            .map_err(AtlasError::from_datafusion);
        if let Err(e) = transaction.slot().rollback().await {
            tracing::warn!("rolling back the dry run failed: {e}");
        }
        let batches = result?;
        let schema = prepared.plan.schema();
        let width = schema.fields().len();
        // key columns, then source_row, then duplicate_of
        let mut indices = prepared.spec.key_columns.clone();
        indices.extend([width - 1, width - 2]);
        let fields: Vec<_> = indices
            .iter()
            .map(|&i| {
                let f = schema.field(i);
                if i == width - 1 {
                    Field::new("source_row", f.data_type().clone(), false)
                } else {
                    f.clone()
                }
            })
            .collect();
        let out_schema = Arc::new(Schema::new(fields));
        let batches = batches
            .iter()
            .map(|b| {
                RecordBatch::try_new(
                    Arc::clone(&out_schema),
                    indices.iter().map(|&i| Arc::clone(b.column(i))).collect(),
                )
                .map_err(AtlasError::from)
            })
            .collect::<Result<Vec<_>>>()?;
        Ok((out_schema, batches))
    }

    /// The target table as the plan sees it, and the columns to create it with
    /// when it is missing.
    async fn target(
        &self,
        source: &OpenedSource,
    ) -> Result<(TargetTable, Option<Vec<ColumnSpec>>)> {
        if let Some(mut target) = self.db.describe_table(&self.table).await? {
            self.read_binary_text(&mut target);
            return Ok((target, None));
        }
        let mut planned = self.planned_table(source).await?;
        self.read_binary_text(&mut planned);
        let create = planned
            .columns
            .iter()
            .map(|c| ColumnSpec {
                name: c.name.clone(),
                data_type: c.data_type.clone(),
                sql_type: Some(c.sql_type.clone()),
            })
            .collect();
        Ok((planned, Some(create)))
    }

    /// Sets how the binary columns of `table` read text, where an option
    /// says other than the database's own way.
    fn read_binary_text(&self, table: &mut TargetTable) {
        let form = match self.binary_text {
            BinaryText::Native => return,
            BinaryText::Hex => TextForm::Hex,
            BinaryText::Base64 => TextForm::Base64,
        };
        for column in &mut table.columns {
            if column.data_type == datafusion::arrow::datatypes::DataType::Binary {
                column.text_form = Some(form);
            }
        }
    }

    /// Finds the files of a file source (a path, a URL, a glob), staging
    /// remote ones; `None` for a DataFrame source.
    async fn locate(&self) -> Result<Option<SourceFiles>> {
        let SourceSpec::File {
            path,
            format,
            compression,
        } = &self.source
        else {
            return Ok(None);
        };
        let staged = Arc::new(locate(&path.to_string_lossy()).await?);
        let bytes_read = &self.metrics.bytes_read;
        let files = staged
            .files
            .iter()
            .map(|f| {
                Ok(FileSource::new(&f.local, format.clone(), *compression)?
                    .with_name(&f.name)
                    .with_progress(Arc::clone(bytes_read)))
            })
            .collect::<Result<Vec<_>>>()?;
        // What a progress display measures the reading against.
        let size = |f: &FileSource| std::fs::metadata(f.path()).map_or(0, |m| m.len());
        let source_bytes = if files.iter().all(FileSource::counts_bytes) {
            files.iter().map(size).sum()
        } else {
            0
        };
        bytes_read.store(0, std::sync::atomic::Ordering::Relaxed);
        self.metrics
            .source_bytes
            .store(source_bytes, std::sync::atomic::Ordering::Relaxed);
        self.metrics
            .files
            .store(files.len() as u64, std::sync::atomic::Ordering::Relaxed);
        Ok(Some(SourceFiles { files, staged }))
    }

    /// Reads the source (several files one after another, in name order) and
    /// applies the column list and the MAP expressions.
    async fn open_source(&self, files: Option<SourceFiles>) -> Result<OpenedSource> {
        let (df, name, files, staged) = match (&self.source, files) {
            (SourceSpec::File { path, .. }, Some(SourceFiles { files, staged })) => {
                let session = self.session();
                let mut frames = Vec::with_capacity(files.len());
                for file in &files {
                    frames.push(file.read(&session).await?);
                }
                let name = match files.as_slice() {
                    [one] => one.display_name(),
                    many => format!(
                        "{} ({} files)",
                        crate::secrets::mask_password(&path.display().to_string()),
                        many.len()
                    ),
                };
                let df = union_in_order(frames, &files)?;
                (df, name, files, Some(staged))
            }
            (SourceSpec::DataFrame { df, name }, _) => {
                ((**df).clone(), name.clone(), Vec::new(), None)
            }
            (SourceSpec::File { .. }, None) => {
                return Err(AtlasError::Usage(
                    "the source files were not located".into(),
                ));
            }
        };
        let df = apply_columns(df, &self.columns, &name)?;
        let df = apply_map(df, &self.map, self.only_mapped)?;
        Ok(OpenedSource {
            df,
            name,
            files,
            _staged: staged,
        })
    }

    /// The table an import would create, described without creating it.
    async fn planned_table(&self, source: &OpenedSource) -> Result<TargetTable> {
        if self.create_table == CreateTable::Never {
            return Err(AtlasError::Usage(format!(
                "table '{}' does not exist (and CREATE TABLE NEVER was given)",
                self.table
            )));
        }
        let specs = match source.files.first() {
            // Typed already, unless MAP changed the columns: then go by the types
            // the expressions give.
            Some(file) if self.map.is_empty() => {
                self.metrics.set_phase(Phase::InferringTypes);
                file.infer_columns(source.df.clone(), self.inference)
                    .await?
            }
            _ => crate::source::columns_from_schema(source.df.schema().as_arrow()),
        };
        let source_names: Vec<String> = specs.iter().map(|s| s.name.clone()).collect();
        let names = crate::names::new_column_names(&source_names, self.names)?;
        Ok(TargetTable {
            name: self.table.key(),
            columns: specs
                .iter()
                .zip(names)
                .map(|(s, name)| {
                    // Nested values (structs, lists, maps) are held as JSON.
                    let kind = self.db.kind();
                    if crate::coerce::is_nested(&s.data_type) {
                        let sql_type = match kind {
                            crate::db::DbKind::Postgres => "jsonb",
                            crate::db::DbKind::MySql => "json",
                            crate::db::DbKind::Sqlite => "TEXT",
                        };
                        // Compared as written until the table exists: MySQL
                        // normalizes a JSON column, MariaDB keeps its text;
                        // the described table says which.
                        let text_form = match kind {
                            crate::db::DbKind::MySql => Some(TextForm::Json),
                            _ => TextForm::of(kind, sql_type),
                        };
                        let data_type = datafusion::arrow::datatypes::DataType::Utf8;
                        return TargetColumn {
                            name,
                            sql_type: sql_type.to_string(),
                            key_form: KeyForm::of(kind, sql_type, text_form, &data_type),
                            data_type,
                            nullable: true,
                            has_default: false,
                            max_chars: None,
                            text_form,
                        };
                    }
                    // Where the database cannot hold a type exactly (SQLite
                    // and wide decimals), the column is made to hold its text.
                    let data_type = self.db.new_column_type(&s.data_type);
                    let sql_type = self.db.sql_type_for(&data_type);
                    let text_form = TextForm::of(kind, &sql_type);
                    TargetColumn {
                        name,
                        key_form: KeyForm::of(kind, &sql_type, text_form, &data_type),
                        text_form,
                        sql_type,
                        data_type,
                        nullable: true,
                        has_default: false,
                        max_chars: None,
                    }
                })
                .collect(),
        })
    }

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
    fn history_entry(&self) -> HistoryEntry {
        let now = chrono::Utc::now();
        HistoryEntry {
            started_at: now,
            finished_at: now,
            source: match &self.source {
                // A URL's password never reaches the history.
                SourceSpec::File { path, .. } => {
                    crate::secrets::mask_password(&path.display().to_string())
                }
                SourceSpec::DataFrame { name, .. } => name.clone(),
            },
            table_name: self.table.key(),
            key_columns: self.key.as_ref().map(|k| k.join(",")).unwrap_or_default(),
            on_duplicate: self.on_duplicate,
            // Until it ends.
            status: ImportStatus::Failed,
            rows_read: 0,
            inserted: 0,
            updated: 0,
            skipped: 0,
            duplicates: 0,
            rejected: 0,
            file_hash: None,
            error: None,
        }
    }

    /// Runs the import and records it in `import_history`: a committed import
    /// in its own transaction (by the sink), any other end after the rollback.
    async fn run(self) -> Result<(ImportReport, Option<PreparedImport>)> {
        let this = self.resolve_table().await?;
        this.run_resolved().await
    }

    async fn run_resolved(self) -> Result<(ImportReport, Option<PreparedImport>)> {
        let history = self.history_entry();
        let db = Arc::clone(&self.db);
        let metrics = Arc::clone(&self.metrics);
        let message = self.duplicate_message.clone();
        let limit = self.memory_limit;
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

    async fn run_once(
        self,
        history: HistoryEntry,
    ) -> Result<(ImportReport, Option<PreparedImport>)> {
        let started = Instant::now();
        let rejects = match &self.on_bad_value {
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
        // Open first: a statement that cannot work is said before anything else.
        let mut source = self.open_source(located.clone()).await?;
        // Every file's hash (of the bytes that will be read).
        let mut hashes = Vec::new();
        self.metrics.set_phase(Phase::Hashing);
        if let Some(found) = &located {
            for file in &found.files {
                hashes.push(file.sha256().await?);
            }
        }
        // Cheap early answer; the authoritative check runs under the lock, when
        // the plan opens its transaction.
        if let Some(found) = located.as_mut()
            && self.file_policy != FilePolicy::Allow
        {
            let mut imported = Vec::new();
            for hash in &hashes {
                imported.push(self.db.file_imported(hash, &self.table).await?);
            }
            if let Some(first) = imported.iter().position(|&i| i) {
                if self.file_policy == FilePolicy::Error || imported.iter().all(|&i| i) {
                    let name = found.files[first].display_name();
                    if self.file_policy == FilePolicy::Error && found.files.len() > 1 {
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
        let file_hash = (!hashes.is_empty()).then(|| hashes.join(","));
        if !self.declared.is_empty()
            && self
                .db
                .create_declared_table(&self.table, &self.declared)
                .await?
        {
            tracing::info!("Created table '{}' with the declared columns", self.table);
        }
        let (target, create) = self.target(&source).await?;
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
        let prepared = self
            .prepare(&source, &target, create.clone(), false)
            .await?;
        let transaction = Arc::new(
            TableTransaction::new(
                Arc::clone(&self.db),
                self.table.clone(),
                files,
                self.file_policy,
                create,
            )
            .with_history(HistoryEntry {
                file_hash: file_hash.clone(),
                ..history
            }),
        );
        let _running = self.start_run(&prepared, Arc::clone(&transaction), rejects);
        // The import reads the source from its start (type inference may
        // have read it once already).
        self.metrics.set_phase(Phase::Writing);
        self.metrics
            .bytes_read
            .store(0, std::sync::atomic::Ordering::Relaxed);
        let result = collect(Arc::clone(&prepared.plan), Arc::clone(&prepared.task))
            .await
            .map_err(AtlasError::from_datafusion);
        count_skipped_lines(&prepared.plan, &self.metrics);
        if result.is_err()
            && let Err(e) = transaction.slot().rollback().await
        {
            tracing::warn!("rollback after a failed import also failed: {e}");
        }
        result?;
        let created_table = match transaction.outcome() {
            Some(Opened::Ready { created, .. }) => created,
            Some(Opened::FileAlreadyImported) | None => {
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

    /// The answer when the file was already imported into the table.
    fn already_imported(
        &self,
        started: Instant,
        source: &str,
        file_hash: String,
    ) -> Result<ImportReport> {
        if self.file_policy == FilePolicy::Skip {
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
    fn report_context<'a>(&'a self, source: &'a str, started: Instant) -> ReportContext<'a> {
        ReportContext {
            table: self.table.key(),
            source,
            chunk_rows: self.chunk_rows,
            partitions: self.partitions,
            started,
        }
    }

    /// The key strategy of this import and why, from the table's estimated
    /// size and indexes (read now, before the lock: an estimate is enough)
    /// and the import's estimated rows.
    async fn choose_strategy(
        &self,
        source: &OpenedSource,
        key: &[TargetColumn],
        dry_run: bool,
    ) -> Result<(KeyLookup, String)> {
        let stats = self.db.table_stats(&self.table, key).await?;
        let import_rows = estimate_rows(&source.files);
        let sizes = format!(
            "~{} rows in the table, {} in the import",
            stats.rows,
            import_rows.map_or_else(|| "unknown".to_string(), |n| format!("~{n}"))
        );
        // The probe filters on one key column: an indexed one where there is
        // one, else the one with the most distinct values.
        let probe_column = probe_column(key, &stats);
        let preload = || {
            (
                KeyLookup::Preload,
                format!("the table's keys read on a connection of their own and held; {sizes}"),
            )
        };
        let Some(column) = probe_column else {
            return Ok(match self.strategy {
                KeyStrategy::Probe => (
                    KeyLookup::Preload,
                    format!("no key column can be probed (numbers with fractions only); {sizes}"),
                ),
                _ => preload(),
            });
        };
        let how = match &stats.key_index {
            Some(index) if index.column == key[column].name => {
                format!("by index {} on {}", index.name, key[column].name)
            }
            _ => format!("by {} (no index on the key)", key[column].name),
        };
        // Rows that need their verdict before they go on are held until the
        // database answers: the probe is for imports that fit in memory then.
        let holds_rows =
            dry_run || matches!(self.on_duplicate, OnDuplicate::Skip | OnDuplicate::Update);
        Ok(match self.strategy {
            KeyStrategy::Preload => (KeyLookup::Preload, format!("as asked; {sizes}")),
            KeyStrategy::Probe => (
                KeyLookup::Probe { column },
                format!("as asked, {how}; {sizes}"),
            ),
            KeyStrategy::Auto => match import_rows {
                Some(rows)
                    if stats.rows >= PROBE_TABLE_RATIO * rows.max(1)
                        && (!holds_rows || rows <= PROBE_HELD_ROWS) =>
                {
                    (
                        KeyLookup::Probe { column },
                        format!(
                            "the table's keys that share a value with the import, {how}; {sizes}"
                        ),
                    )
                }
                _ => preload(),
            },
        })
    }

    /// Builds the plans over the source for `target` (a table to create
    /// with `creates` when it is missing): settings only; running them
    /// takes a run ([`Self::start_run`]).
    async fn prepare(
        &self,
        source: &OpenedSource,
        target: &TargetTable,
        creates: Option<Vec<ColumnSpec>>,
        dry_run: bool,
    ) -> Result<PreparedImport> {
        let (state, input) = source.df.clone().into_parts();
        let source_schema = input.schema().as_arrow().clone();
        let mapping = map_columns(&source_schema, target)?;
        let columns: Vec<TargetColumn> = mapping.iter().map(|(_, c)| c.clone()).collect();
        let key_columns = resolve_key(self.key.as_deref(), &columns, target)?;
        // Always read (or probe) the existing keys once the transaction holds
        // its lock: even a table this plan expects to create may exist,
        // filled, by then.
        let key_targets: Vec<TargetColumn> =
            key_columns.iter().map(|&i| columns[i].clone()).collect();
        let (lookup, lookup_reason) = if self.on_duplicate == OnDuplicate::Allow && !dry_run {
            (
                KeyLookup::Nothing,
                format!("{} (not read: duplicates allowed)", self.table),
            )
        } else {
            let (lookup, why) = self.choose_strategy(source, &key_targets, dry_run).await?;
            (lookup, format!("{} (strategy={lookup}: {why})", self.table))
        };
        let spec = Arc::new(ImportSpec {
            import: ImportId::new(),
            table: self.table.clone(),
            mapping,
            key_columns: key_columns.clone(),
            on_duplicate: self.on_duplicate,
            chunk_rows: self.chunk_rows,
            dry_run,
            source_name: source.name.clone(),
            source_files: if source.files.len() > 1 {
                source.files.iter().map(FileSource::display_name).collect()
            } else {
                Vec::new()
            },
            on_bad_value: self.on_bad_value.clone(),
            db_kind: self.db.kind(),
            lookup,
            lookup_reason,
            creates,
        });
        let logical = LogicalPlan::Extension(Extension {
            node: Arc::new(
                ImportNode::try_new(input, Arc::clone(&spec))
                    .map_err(AtlasError::from_datafusion)?,
            ),
        });
        // The runs of the session's imports, where the operators find theirs.
        let runs = state
            .config()
            .get_extension::<ImportRuns>()
            .unwrap_or_default();
        // Plan in the source's session (its tables, object stores), configured
        // for the import.
        let config = self
            .import_config(state.config().clone())
            // The catalogs are shared with the caller's session: keep them.
            .with_create_default_catalog_and_schema(false)
            .with_extension(Arc::clone(&runs));
        let mut builder = SessionStateBuilder::new_from_existing(state.clone())
            .with_config(config)
            .with_query_planner(Arc::new(ImportQueryPlanner));
        if let Some(limit) = self.memory_limit {
            // The caller's runtime (object stores, disk) with a bounded pool.
            let runtime = RuntimeEnvBuilder::from_runtime_env(state.runtime_env())
                .with_memory_limit(limit, 1.0)
                .build_arc()
                .map_err(AtlasError::from_datafusion)?;
            builder = builder.with_runtime_env(runtime);
        }
        let state = builder.build();
        let plan = state
            .create_physical_plan(&logical)
            .await
            .map_err(|e| AtlasError::from_source_read(e, &source.name))?;
        let task = Arc::new(TaskContext::from(&state));
        Ok(PreparedImport {
            spec,
            logical,
            plan,
            task,
            runs,
        })
    }

    /// Registers the run of `prepared` in its session: its transaction, the
    /// existing keys as its plan says to learn them, the counters, the
    /// reject file. The run ends when the returned guard is dropped.
    fn start_run(
        &self,
        prepared: &PreparedImport,
        transaction: Arc<TableTransaction>,
        rejects: Option<Arc<RejectWriter>>,
    ) -> RegisteredRun {
        let spec = &prepared.spec;
        let key_targets: Vec<TargetColumn> = spec
            .key_columns
            .iter()
            .map(|&i| spec.mapping[i].1.clone())
            .collect();
        let hasher = KeyHasher::random();
        let loader = || {
            Arc::new(TableKeyLoader {
                db: Arc::clone(&self.db),
                transaction: Arc::clone(&transaction),
                table: self.table.clone(),
                key_columns: key_targets.clone(),
                metrics: Arc::clone(&self.metrics),
            })
        };
        let description = spec.lookup_reason.clone();
        let existing = match spec.lookup {
            KeyLookup::Nothing => ExistingKeys::none(description, hasher),
            KeyLookup::Preload => ExistingKeys::preload(description, loader(), hasher),
            KeyLookup::Probe { column } => ExistingKeys::probe(
                description,
                loader(),
                key_targets[column].name.clone(),
                hasher,
            ),
        };
        let rejects = rejects.or_else(|| match &spec.on_bad_value {
            // A dry run writes its rejects too (the file opens at the first).
            OnBadValue::Reject(path) => Some(Arc::new(RejectWriter::new(path))),
            _ => None,
        });
        let mut run = ImportRun::new(spec.import, existing, Arc::clone(&self.metrics))
            .with_transaction(transaction);
        if let Some(rejects) = rejects {
            run = run.with_rejects(rejects);
        }
        prepared.runs.register(run)
    }
}

/// Adds the blank and comment lines the plan's readers skipped to `metrics`.
fn count_skipped_lines(plan: &Arc<dyn ExecutionPlan>, metrics: &ImportMetrics) {
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

/// Renames the source's columns positionally to `columns`.
fn apply_columns(df: DataFrame, columns: &[String], source: &str) -> Result<DataFrame> {
    if columns.is_empty() {
        return Ok(df);
    }
    let (reader, fields): (Vec<String>, Vec<String>) = df
        .schema()
        .fields()
        .iter()
        .map(|f| f.name().clone())
        .partition(|name| is_reader_column(name));
    if fields.len() != columns.len() {
        return Err(AtlasError::Usage(format!(
            "the column list names {} columns ({}), but {source} has {} ({})",
            columns.len(),
            columns.join(", "),
            fields.len(),
            fields.join(", ")
        )));
    }
    let exprs: Vec<Expr> = fields
        .iter()
        .zip(columns)
        .map(|(field, column)| Expr::Column(Column::from_name(field)).alias(column))
        .chain(
            reader
                .iter()
                .map(|name| Expr::Column(Column::from_name(name))),
        )
        .collect();
    df.select(exprs).map_err(AtlasError::from_datafusion)
}

/// Applies `MAP (column = expression, ...)` to the source; unless
/// `only_mapped`, source columns no expression reads pass through.
fn apply_map(df: DataFrame, map: &[(String, String)], only_mapped: bool) -> Result<DataFrame> {
    if map.is_empty() {
        return Ok(df);
    }
    let mut mapped = Vec::with_capacity(map.len());
    let mut read: std::collections::HashSet<String> = Default::default();
    for (column, sql) in map {
        let expr = df.parse_sql_expr(sql).map_err(|e| {
            AtlasError::Usage(format!(
                "MAP {column} = {sql}: {}",
                AtlasError::from_datafusion(e)
            ))
        })?;
        read.extend(expr.column_refs().into_iter().map(|c| c.name.clone()));
        mapped.push(expr.alias(column));
    }
    let mut exprs: Vec<Expr> = df
        .schema()
        .fields()
        .iter()
        .map(|f| f.name())
        .filter(|name| {
            // The reader's line and record-error columns always go on.
            is_reader_column(name)
                || (!only_mapped && !read.contains(*name) && !map.iter().any(|(c, _)| c == *name))
        })
        .map(|name| Expr::Column(Column::from_name(name)))
        .collect();
    exprs.extend(mapped);
    df.select(exprs).map_err(AtlasError::from_datafusion)
}

/// Maps each source column to its target column, or lists every difference.
fn map_columns(
    source: &datafusion::arrow::datatypes::Schema,
    target: &TargetTable,
) -> Result<Vec<(usize, TargetColumn)>> {
    let mut differences = Vec::new();
    let mut mapping = Vec::new();
    for (i, field) in source.fields().iter().enumerate() {
        if is_reader_column(field.name()) {
            continue;
        }
        match target.find_column(field.name())? {
            Some(column) if column.data_type == datafusion::arrow::datatypes::DataType::Null => {
                differences.push(format!(
                    "column '{}' has type {}, which atlas-import cannot write yet",
                    column.name, column.sql_type
                ))
            }
            Some(column) if !storable_in(field.data_type(), &column.data_type) => {
                differences.push(format!(
                    "column '{}' is {} in the source, which a {} column cannot hold",
                    field.name(),
                    field.data_type(),
                    column.sql_type
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

/// Whether values of a typed source column can be converted to `target` at
/// all (text is checked value by value instead, naming row and column).
fn storable_in(
    source: &datafusion::arrow::datatypes::DataType,
    target: &datafusion::arrow::datatypes::DataType,
) -> bool {
    use datafusion::arrow::datatypes::DataType;
    match (source, target) {
        (DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View | DataType::Null, _) => true,
        (_, DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View) => true,
        // Arrow casts dates and times to numbers; a table means no such thing.
        (DataType::Date32 | DataType::Date64 | DataType::Timestamp(..), t)
            if t.is_numeric() || *t == DataType::Boolean =>
        {
            false
        }
        (s, DataType::Date32 | DataType::Date64 | DataType::Timestamp(..))
            if s.is_numeric() || *s == DataType::Boolean =>
        {
            false
        }
        (s, t) => datafusion::arrow::compute::can_cast_types(s, t),
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
            let column = target.find_column(name)?.ok_or_else(|| {
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

/// Loads the existing keys of the target through the import transaction,
/// coerced with the same code as the import's values.
#[derive(Debug)]
struct TableKeyLoader {
    db: Arc<dyn Database>,
    transaction: Arc<TableTransaction>,
    table: TableRef,
    key_columns: Vec<TargetColumn>,
    metrics: Arc<ImportMetrics>,
}

#[async_trait]
impl ExistingKeyLoader for TableKeyLoader {
    async fn load(
        &self,
        hasher: &KeyHasher,
        filter: Option<crate::db::KeyFilter>,
    ) -> Result<Fingerprints<()>> {
        let started = Instant::now();
        self.metrics.set_phase(Phase::ReadingKeys);
        let loaded = self.load_keys(hasher, filter, started).await;
        self.metrics.set_phase(Phase::Writing);
        loaded
    }
}

impl TableKeyLoader {
    async fn load_keys(
        &self,
        hasher: &KeyHasher,
        filter: Option<crate::db::KeyFilter>,
        started: Instant,
    ) -> Result<Fingerprints<()>> {
        match self.transaction.open().await? {
            // The table was there before the import took its lock: read it.
            Opened::Ready {
                exists: true,
                created: false,
            } => {}
            // Nothing to compare with (a new table, a dry run into a new
            // table), or nothing will be read (the file is skipped).
            Opened::Ready { .. } | Opened::FileAlreadyImported => {
                return Ok(Fingerprints::new());
            }
        }
        // The database streams batches on a connection of its own; a blocking
        // thread converts and fingerprints them meanwhile.
        let (sender, receiver) = std::sync::mpsc::sync_channel::<RecordBatch>(KEY_SCAN_QUEUE);
        let table = self.table.key();
        let columns = self.key_columns.clone();
        let hasher = hasher.clone();
        let builder = tokio::task::spawn_blocking(move || {
            fingerprint_existing_keys(&table, &columns, &hasher, receiver)
        });
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
                filter.as_ref(),
                KEY_SCAN_BATCH_ROWS,
                &mut on_batch,
            )
            .await;
        drop(on_batch);
        let built = builder.await.map_err(|e| {
            AtlasError::DataFusion(Arc::new(datafusion::error::DataFusionError::Internal(
                format!("the existing-key builder failed: {e}"),
            )))
        })?;
        // A conversion error explains a closed queue better than the scan's error.
        let mut set = built?;
        let rows = rows?;
        set.shrink_to_fit();
        self.metrics
            .existing_keys
            .store(rows, std::sync::atomic::Ordering::Relaxed);
        tracing::info!(
            "Key check {}: read {rows} existing rows{} ({} distinct keys, {} MB, {} ms)",
            match &filter {
                Some(f) => format!("by probe on '{}'", f.column),
                None => "by preload".to_string(),
            },
            if filter.is_some() {
                " sharing a key value with the import"
            } else {
                ""
            },
            set.len(),
            set.memory_size() >> 20,
            started.elapsed().as_millis()
        );
        Ok(set)
    }
}

/// Converts batches of existing keys to the key types where they came as
/// text, and fingerprints them.
fn fingerprint_existing_keys(
    table: &str,
    columns: &[TargetColumn],
    hasher: &KeyHasher,
    batches: std::sync::mpsc::Receiver<RecordBatch>,
) -> Result<Fingerprints<()>> {
    let mut set = Fingerprints::new();
    let mut keys = EncodedKeys::default();
    let mut fingerprints = Vec::new();
    let encoder =
        KeyEncoder::new((0..columns.len()).collect()).with_forms(KeyForm::of_columns(columns));
    let schema = Arc::new(datafusion::arrow::datatypes::Schema::new(
        columns
            .iter()
            .map(|c| datafusion::arrow::datatypes::Field::new(&c.name, c.data_type.clone(), true))
            .collect::<Vec<_>>(),
    ));
    for batch in batches {
        let mut typed = Vec::with_capacity(columns.len());
        for (i, column) in columns.iter().enumerate() {
            let bad = |value: String| AtlasError::BadValue {
                source_name: format!("existing rows of table '{table}'"),
                row: 0,
                line: None,
                column: column.name.clone(),
                value,
                target_type: column.sql_type.clone(),
            };
            // Binary keys arrive as hex text from every database's scan.
            if column.data_type == datafusion::arrow::datatypes::DataType::Binary
                && let Some(hex) = batch
                    .column(i)
                    .as_any()
                    .downcast_ref::<datafusion::arrow::array::StringArray>()
            {
                typed.push(
                    crate::typed_text::hex_to_binary(hex)
                        .map_err(|index| bad(hex.value(index).to_string()))?,
                );
                continue;
            }
            typed.push(coerce_column(batch.column(i), column).map_err(|f| bad(f.value))?);
        }
        let batch = RecordBatch::try_new(Arc::clone(&schema), typed).map_err(AtlasError::from)?;
        encoder.encode(&batch, &mut keys)?;
        hasher.fingerprints(&keys, &mut fingerprints);
        for &fingerprint in &fingerprints {
            set.insert(fingerprint, ());
        }
    }
    Ok(set)
}

/// The key column a probe filters on: an indexed one, else the one with the
/// most distinct values the statistics know of (else the first text or
/// integer one); only columns whose values can be written as literals.
fn probe_column(key: &[TargetColumn], stats: &crate::db::TableStats) -> Option<usize> {
    let usable = |i: &usize| crate::db::filterable(&key[*i]);
    if let Some(index) = &stats.key_index
        && let Some(i) = key.iter().position(|k| k.name == index.column)
        && usable(&i)
    {
        return Some(i);
    }
    let distinct = |i: &usize| {
        stats
            .distinct
            .iter()
            .find(|(name, _)| *name == key[*i].name)
            .map_or(0.0, |(_, d)| *d)
    };
    let text_first =
        |i: &usize| u8::from(key[*i].data_type == datafusion::arrow::datatypes::DataType::Utf8);
    (0..key.len()).filter(usable).max_by(|a, b| {
        distinct(a)
            .total_cmp(&distinct(b))
            .then(text_first(a).cmp(&text_first(b)))
            .then(b.cmp(a))
    })
}

/// The rows the source files hold, estimated from their sizes and the
/// length of the first file's first lines; `None` for a query source.
fn estimate_rows(files: &[FileSource]) -> Option<u64> {
    let first = files.first()?;
    let bytes_per_row = match first.format() {
        crate::source::SourceFormat::Csv(_) | crate::source::SourceFormat::NdJson => {
            let mut sample = vec![0u8; 1 << 16];
            let read = first
                .compression()
                .open(first.path(), &first.display_name())
                .ok()
                .and_then(|mut r| std::io::Read::read(&mut r, &mut sample).ok())
                .unwrap_or(0);
            let lines = sample[..read]
                .iter()
                .filter(|&&b| b == b'\n')
                .count()
                .max(1);
            let per_row = (read / lines).max(1) as u64;
            // A compressed file holds several times its size.
            match first.compression() {
                crate::source::Compression::None => per_row,
                _ => (per_row / 5).max(1),
            }
        }
        _ => 40,
    };
    let bytes: u64 = files
        .iter()
        .map(|f| std::fs::metadata(f.path()).map_or(0, |m| m.len()))
        .sum();
    Some(bytes / bytes_per_row)
}

/// The rows of several files, one after another: the union keeps one
/// partition per file in this order, which [`crate::physical::CoerceExec`]
/// reads in sequence. The files must have the same columns.
fn union_in_order(mut frames: Vec<DataFrame>, files: &[FileSource]) -> Result<DataFrame> {
    let first = frames.remove(0);
    let names = |df: &DataFrame| -> Vec<String> {
        df.schema()
            .fields()
            .iter()
            .map(|f| f.name().clone())
            .collect()
    };
    let expected = names(&first);
    let mut union = first;
    for (i, df) in frames.into_iter().enumerate() {
        let columns = names(&df);
        if columns != expected {
            return Err(AtlasError::Source {
                source_name: files[i + 1].display_name(),
                message: format!(
                    "its columns ({}) differ from those of {} ({})",
                    columns.join(", "),
                    files[0].display_name(),
                    expected.join(", ")
                ),
            });
        }
        union = union
            .union(df)
            .map_err(|e| AtlasError::from_source_read(e, &files[i + 1].display_name()))?;
    }
    Ok(union)
}
