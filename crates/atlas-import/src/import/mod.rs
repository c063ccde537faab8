//! The import operation: a consuming builder that plans the import as a
//! DataFusion plan, runs it in one transaction and returns an [`ImportReport`].

mod check;
mod existing_keys;
mod factory;
mod plan;
mod run;
mod source;
mod target;

pub use factory::DatabaseRunFactory;
pub use plan::PreparedImport;

use std::sync::Arc;

use datafusion::prelude::{DataFrame, SessionConfig, SessionContext};

use crate::db::Database;
use crate::error::{AtlasError, Result};
use crate::names::{NamePolicy, TableName, TableRef};
use crate::options::{
    BinaryText, CreateTable, FilePolicy, ImportOptions, Inference, KeyStrategy, OnBadValue,
    OnDuplicate,
};
use crate::report::ImportMetrics;
use crate::schema::ColumnSpec;
use crate::source::{Compression, SourceFormat, SourceOptions};

/// The smallest batch of the check's partitions `import_config` chooses: with
/// many partitions, smaller batches would cost more per row than they save.
const MIN_CHECK_BATCH_ROWS: usize = 1024;

/// Imports one file into one table without letting duplicates in. Awaiting
/// the builder runs the import ([`Self::execute`]).
///
/// ```no_run
/// # async fn run() -> atlas_import::Result<()> {
/// use atlas_import::{ImportBuilder, OnDuplicate, db};
/// let database = db::connect("sqlite://atlas.db").await?;
/// let report = ImportBuilder::new(database, "contacts.csv", "contacts")
///     .with_key(["email"])
///     .with_on_duplicate(OnDuplicate::Skip)
///     .await?;
/// println!("inserted {} rows", report.inserted);
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct ImportBuilder {
    db: Arc<dyn Database>,
    source: SourceSpec,
    /// The target as written (`analytics.contacts`, `"My Table"`), read when
    /// the import starts.
    table_text: String,
    /// The target as a parsed name (from SQL), instead of `table_text`.
    table_name: Option<TableName>,
    /// The target as the database names it: set by [`Self::resolve_table`].
    table: TableRef,
    /// What the import was told.
    options: ImportOptions,
    metrics: Arc<ImportMetrics>,
    /// A distributed engine's session (Apache Ballista) that runs the plan
    /// instead of this process.
    cluster: Option<ImportCluster>,
}

/// The session of a cluster that runs imports (a Ballista session, from
/// `atlas_import::distributed`); as a `SessionConfig` extension, the `IMPORT
/// INTO` statements of a session with it run there.
#[derive(Clone)]
pub struct ImportCluster(pub SessionContext);

impl std::fmt::Debug for ImportCluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("ImportCluster")
            .field(&self.0.session_id())
            .finish()
    }
}

/// Where the rows come from.
#[derive(Debug)]
enum SourceSpec {
    /// A file: hashed, checked and recorded in `file_imports`.
    File { path: std::path::PathBuf },
    /// Any DataFusion result (no file hash, so no file-level check).
    DataFrame { df: Box<DataFrame>, name: String },
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
            source: SourceSpec::File { path: path.into() },
            table: TableRef::unqualified(table_text.as_str()),
            table_text,
            table_name: None,
            options: ImportOptions::default(),
            metrics: Arc::new(ImportMetrics::default()),
            cluster: None,
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

    /// Runs the plan on the cluster behind `cluster`, a Ballista session
    /// (`atlas_import::distributed`): planning (file hashes, the table, the
    /// key strategy) happens here, the stages on its executors, which reach
    /// the database with credentials of their own.
    pub fn on_cluster(mut self, cluster: SessionContext) -> Self {
        self.cluster = Some(ImportCluster(cluster));
        self
    }

    /// Everything the import is told at once, replacing what earlier
    /// `with_*` calls said (the CLI, `IMPORT INTO` and mapping files each
    /// translate into [`ImportOptions`]).
    pub fn with_options(mut self, options: ImportOptions) -> Self {
        self.options = options;
        self
    }

    /// What the import is told so far.
    pub fn options(&self) -> &ImportOptions {
        &self.options
    }

    /// Names the source's columns, in order (`IMPORT INTO t (a, b, c)`): the
    /// source must have exactly that many columns; `MAP` expressions and the key
    /// then use these names.
    pub fn with_columns<I, S>(mut self, columns: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.options.columns = columns.into_iter().map(Into::into).collect();
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
        self.options.map = map.into_iter().map(|(c, e)| (c.into(), e.into())).collect();
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
        self.options.source.names = Some(names);
        self
    }

    /// How the check learns the keys already in the table (default: chosen
    /// per import from the sizes and indexes; EXPLAIN says which and why).
    pub fn with_strategy(mut self, strategy: KeyStrategy) -> Self {
        self.options.strategy = strategy;
        self
    }

    /// The uniqueness columns (default: every column the import writes).
    pub fn with_key<I, S>(mut self, columns: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.options.set_key(columns);
        self
    }

    /// What to do with duplicates (default: refuse the import).
    pub fn with_on_duplicate(mut self, on_duplicate: OnDuplicate) -> Self {
        self.options.on_duplicate = on_duplicate;
        self
    }

    /// Partitions of the duplicate check (default 4).
    pub fn with_partitions(mut self, partitions: usize) -> Self {
        self.options.partitions = partitions;
        self
    }

    /// Rows per written chunk (default 10000).
    pub fn with_chunk_rows(mut self, chunk_rows: usize) -> Self {
        self.options.chunk_rows = chunk_rows;
        self
    }

    /// Shorthand for [`Self::with_file_policy`]: `true` is
    /// [`FilePolicy::Allow`] (import even if the same file was imported into
    /// the table before; the row-level check still runs), `false` the
    /// default [`FilePolicy::Error`].
    pub fn with_force(self, force: bool) -> Self {
        self.with_file_policy(if force {
            FilePolicy::Allow
        } else {
            FilePolicy::Error
        })
    }

    /// What to do when the file was already imported into the table (default:
    /// refuse; `Skip` succeeds writing nothing; `Allow` imports anyway).
    pub fn with_file_policy(mut self, file_policy: FilePolicy) -> Self {
        self.options.file_policy = file_policy;
        self
    }

    /// The source format (default: from the file extension).
    pub fn with_format(mut self, format: SourceFormat) -> Self {
        self.options.source.format = Some(format);
        self
    }

    /// How the source file is compressed (default: from its extension,
    /// `.gz`, `.zst`, `.bz2`, `.xz`).
    pub fn with_compression(mut self, compression: Compression) -> Self {
        self.options.source.compression = Some(compression);
        self
    }

    /// How a new table's column types are inferred from a text source
    /// (default: [`Inference::Strict`], values kept as written unless every
    /// one reads back the same).
    pub fn with_inference(mut self, inference: Inference) -> Self {
        self.options.source.infer = Some(inference);
        self
    }

    /// How text is read into binary columns (default: the database's native
    /// text form).
    pub fn with_binary_text(mut self, binary_text: BinaryText) -> Self {
        self.options.source.binary = Some(binary_text);
        self
    }

    /// The format, compression and inference an import's `OPTIONS` (or the
    /// CLI flags) name; what they leave out stays as it is.
    pub fn with_source_options(mut self, options: SourceOptions) -> Self {
        self.options.source.merge(options);
        self
    }

    /// Whether a missing table may be created (default: yes).
    pub fn with_create_table(mut self, create_table: CreateTable) -> Self {
        self.options.create_table = create_table;
        self
    }

    /// What to do with a value that does not fit its column (default: fail).
    pub fn with_on_bad_value(mut self, on_bad_value: OnBadValue) -> Self {
        self.options.on_bad_value = on_bad_value;
        self
    }

    /// Imports only the MAP columns; other source columns are left out.
    pub fn with_only_mapped_columns(mut self, only: bool) -> Self {
        self.options.only_mapped = only;
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
        self.options.declared = columns
            .into_iter()
            .map(|(name, sql_type)| ColumnSpec::declared(name, sql_type))
            .collect();
        self
    }

    /// The message of a refusal for duplicates, instead of
    /// `Duplicate data detected.` (the counts and samples follow it).
    pub fn with_duplicate_message(mut self, message: impl Into<String>) -> Self {
        self.options.duplicate_message = Some(message.into());
        self
    }

    /// Bounds the memory the import holds in DataFusion's memory pool: the
    /// existing keys, the import's own keys and buffered batches. An import
    /// that needs more fails, naming the limit, and writes nothing.
    pub fn with_memory_limit(mut self, bytes: usize) -> Self {
        self.options.memory_limit = Some(bytes);
        self
    }

    /// Live counters to watch while the import runs (e.g. for a progress bar).
    pub fn with_metrics(mut self, metrics: Arc<ImportMetrics>) -> Self {
        self.metrics = metrics;
        self
    }

    fn validate(&self) -> Result<()> {
        self.options.validate()?;
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
        self.table = if self.options.names() == NamePolicy::Normalize
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

    /// `base` configured for this import: its partition count, one ordered
    /// stream out of each source, so row numbers are source rows, and (unless
    /// `base` chose one) batches of the check's partitions a partition's share
    /// of one read batch: the repartition before the check gathers a full
    /// batch for each partition before it hands one on, and the merge after it
    /// waits for every partition's first, so with DataFusion's default the
    /// first row reached the database only after four batches were read and
    /// checked (about 0.1 s), and four times as many rows were in flight.
    fn import_config(&self, base: SessionConfig) -> SessionConfig {
        let partitions = self.options.partitions.max(1);
        let default_batch = SessionConfig::new().batch_size();
        let base = if base.batch_size() == default_batch {
            base.with_batch_size((default_batch / partitions).max(MIN_CHECK_BATCH_ROWS))
        } else {
            base
        };
        base.with_target_partitions(partitions)
            .with_repartition_file_scans(false)
            .with_round_robin_repartition(false)
    }

    fn session(&self) -> SessionContext {
        SessionContext::new_with_config(self.import_config(SessionConfig::new()))
    }
}

impl std::future::IntoFuture for ImportBuilder {
    type Output = Result<crate::report::ImportReport>;
    type IntoFuture = futures::future::BoxFuture<'static, Self::Output>;

    /// Runs the import: `builder.await` is `builder.execute().await`.
    fn into_future(self) -> Self::IntoFuture {
        Box::pin(self.execute())
    }
}
