//! The command line: flags and subcommands, and their translation into the
//! library's [`ImportOptions`] (the form the SQL statement and mapping files
//! translate into too).

use std::path::PathBuf;

use atlas_import::mapping::ServiceMapping;
use atlas_import::{
    AtlasError, CreateTable, DEFAULT_CHUNK_ROWS, DEFAULT_PARTITIONS, FilePolicy, ImportOptions,
    OnBadValue, OnDuplicate, SourceOptions, parse_memory_size,
};
use clap::{Parser, Subcommand, ValueEnum};

/// Import files into PostgreSQL, MySQL/MariaDB and SQLite without letting duplicates in.
#[derive(Debug, Parser)]
#[command(name = "atlas-import", version, about)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
    /// More detail on stderr: -v every chunk (with times), -vv everything.
    /// RUST_LOG, where set, decides instead.
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    pub verbose: u8,
    /// Only warnings and errors on stderr, and no progress bar.
    #[arg(short, long, global = true, conflicts_with = "verbose")]
    pub quiet: bool,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Import one file into one table.
    Import(Box<ImportArgs>),
    /// Run one statement or script: `IMPORT INTO ...` and DataFusion SQL.
    Sql(SqlArgs),
    /// Run a plan file: a script of `IMPORT INTO ...` and DataFusion SQL statements.
    Run(RunArgs),
    /// Run an Apache Ballista scheduler that plans imports (for --cluster).
    Scheduler(SchedulerArgs),
    /// Run an Apache Ballista executor that runs import stages for a scheduler.
    Executor(ExecutorArgs),
}

/// Where imports run: this process, or a Ballista cluster.
#[derive(Debug, clap::Args)]
pub struct ClusterOption {
    /// Run the import on the Apache Ballista cluster of this scheduler
    /// (df://HOST:PORT); its executors reach the database with the URLs they
    /// were given (`atlas-import executor --database`), not with this one's
    /// credentials.
    #[arg(long, env = "ATLAS_CLUSTER", value_name = "df://HOST:PORT")]
    pub cluster: Option<String>,
}

#[derive(Debug, clap::Args)]
pub struct SchedulerArgs {
    /// The address to listen on.
    #[arg(long, default_value = "127.0.0.1:50050")]
    pub bind: std::net::SocketAddr,
    /// Attempts of a failed task before its job fails.
    #[arg(long, default_value_t = 4)]
    pub task_max_failures: usize,
    /// Seconds without a heartbeat after which an executor counts as lost
    /// and its tasks run again on the others.
    #[arg(long, default_value_t = 180)]
    pub executor_timeout: u64,
}

#[derive(Debug, clap::Args)]
pub struct ExecutorArgs {
    /// The scheduler to work for.
    #[arg(long, default_value = "127.0.0.1:50050")]
    pub scheduler: std::net::SocketAddr,
    /// The address of this executor's data (Flight) service; its control
    /// (gRPC) service listens on --grpc-port.
    #[arg(long, default_value = "127.0.0.1:50051")]
    pub bind: std::net::SocketAddr,
    /// The port of the control (gRPC) service (default: the --bind port + 1).
    #[arg(long, default_value_t = 0)]
    pub grpc_port: u16,
    /// Tasks run at once (default: the machine's cores).
    #[arg(long)]
    pub slots: Option<usize>,
    /// A database this executor imports into, with its credentials
    /// (repeatable; ATLAS_DATABASES: comma-separated). Plans name their
    /// database by its URL without password, and never carry one.
    #[arg(long = "database", env = "ATLAS_DATABASES", value_delimiter = ',')]
    pub databases: Vec<String>,
    /// Where shuffle files are kept (default: a temporary directory).
    #[arg(long)]
    pub work_dir: Option<String>,
}

#[derive(Debug, clap::Args)]
pub struct ScriptOptions {
    /// Database URL: sqlite://PATH, postgres://USER@HOST:PORT/DB or
    /// mysql://USER@HOST:PORT/DB (MariaDB too).
    #[arg(long, env = "DATABASE_URL", default_value = "sqlite://atlas.db")]
    pub db: String,
    /// Print JSON lines on stdout, in statement order: each import's report,
    /// and each query's rows as one object per row.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub cluster: ClusterOption,
}

#[derive(Debug, clap::Args)]
pub struct SqlArgs {
    /// The statements, separated by `;`.
    pub sql: String,
    #[command(flatten)]
    pub options: ScriptOptions,
}

#[derive(Debug, clap::Args)]
pub struct RunArgs {
    /// The plan file.
    pub plan: PathBuf,
    #[command(flatten)]
    pub options: ScriptOptions,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum DuplicatePolicy {
    /// Refuse the import; nothing is written (exit 3).
    Error,
    /// Insert only new rows; inside the file the first occurrence is kept.
    Skip,
    /// Upsert: existing rows take the new non-key values; the last occurrence wins.
    Update,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum FileDuplicatePolicy {
    /// Refuse a file already imported into the table (exit 4).
    Error,
    /// Succeed without writing anything.
    Skip,
    /// Import it again (the row-level check still runs); same as --force.
    Allow,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum BadValuePolicy {
    /// Fail naming file, row, column and value (exit 5).
    Error,
    /// Write NULL instead of the value.
    Null,
    /// Leave the row out and write it to --reject-file.
    Reject,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum CreatePolicy {
    /// Create a missing table from the source schema.
    IfNotExists,
    /// Refuse when the table does not exist.
    Never,
}

#[derive(Debug, clap::Args)]
pub struct ImportArgs {
    /// The source file (CSV, TSV, Parquet, JSON, NDJSON, Avro, XLSX, XML).
    pub file: PathBuf,
    /// Target table: `table` or `schema.table` (MySQL: `database.table`);
    /// unquoted names follow the database's folding, quoted ones are exact
    /// ('"My.Table"'). Required unless --mapping names it.
    #[arg(long, short = 't', required_unless_present = "mapping")]
    pub table: Option<String>,
    /// A mapping file of the original service (table_name, db_schema, mappings,
    /// duplicate_check, rules); it sets the table, the key and the duplicate policies.
    #[arg(long)]
    pub mapping: Option<PathBuf>,
    /// Database URL: sqlite://PATH, postgres://USER@HOST:PORT/DB or
    /// mysql://USER@HOST:PORT/DB (MariaDB too).
    #[arg(long, env = "DATABASE_URL", default_value = "sqlite://atlas.db")]
    pub db: String,
    /// Uniqueness columns, comma-separated (default: every column written).
    #[arg(long, value_delimiter = ',')]
    pub key: Vec<String>,
    /// What to do with duplicate rows.
    #[arg(long, value_enum, default_value = "error")]
    pub on_duplicate: DuplicatePolicy,
    /// Partitions of the duplicate check.
    #[arg(long, default_value_t = DEFAULT_PARTITIONS)]
    pub partitions: usize,
    /// Rows per written chunk.
    #[arg(long, default_value_t = DEFAULT_CHUNK_ROWS)]
    pub chunk_rows: usize,
    /// How the check learns the keys already in the table: auto (from the
    /// sizes and indexes), preload (read them), probe (let the database find
    /// the rows sharing a key column's value with the import) or narrow
    /// (read that column first, then probe only the values it shares).
    #[arg(long, default_value = "auto")]
    pub strategy: String,
    /// Import even if this file was already imported into the table.
    #[arg(long)]
    pub force: bool,
    /// What to do when this file was already imported into the table.
    #[arg(long, value_enum, default_value = "error")]
    pub on_duplicate_file: FileDuplicatePolicy,
    /// What to do with a value that does not fit its column.
    #[arg(long, value_enum, default_value = "error")]
    pub on_bad_value: BadValuePolicy,
    /// The CSV file that receives rejected rows (with --on-bad-value reject).
    #[arg(long)]
    pub reject_file: Option<PathBuf>,
    /// Source format (default: from the file extension): csv, tsv, parquet,
    /// json, ndjson, avro, xlsx, xml.
    #[arg(long)]
    pub format: Option<String>,
    /// CSV field delimiter (one character).
    #[arg(long)]
    pub delimiter: Option<char>,
    /// The CSV file has no header row (columns are column_1, column_2, ...).
    #[arg(long)]
    pub no_header: bool,
    /// CSV quote character, or `none` for a file without quoting (default ").
    #[arg(long)]
    pub quote: Option<String>,
    /// CSV escape character before a quote inside quoted fields, e.g. '\'
    /// (default: none; quotes are doubled).
    #[arg(long)]
    pub escape: Option<String>,
    /// CSV lines starting with this character are comments (skipped).
    #[arg(long)]
    pub comment: Option<String>,
    /// An unquoted CSV field equal to this text is NULL, as an empty one is
    /// (e.g. NULL or \N).
    #[arg(long)]
    pub null: Option<String>,
    /// The CSV text's encoding where it is not UTF-8: latin1, windows-1252,
    /// iso-8859-15, utf-16le, shift_jis, ... (WHATWG names).
    #[arg(long)]
    pub encoding: Option<String>,
    /// How the source is compressed: gzip, zstd, bzip2, xz or none (default:
    /// from the extension: .gz, .zst, .bz2, .xz).
    #[arg(long)]
    pub compression: Option<String>,
    /// Column types of a new table: strict (numbers, booleans, dates only
    /// where no value changes its meaning) or text (every column text).
    #[arg(long, default_value = "strict")]
    pub infer: String,
    /// Names of a new table and its columns: normalize (lowercase
    /// snake_case: E-Mail -> e_mail) or keep (exactly as the source has them).
    #[arg(long, default_value = "normalize")]
    pub names: String,
    /// How text is read into binary columns (bytea, BLOB): native (as the
    /// database reads text: PostgreSQL's `\x` hex or escape form), hex or base64.
    #[arg(long)]
    pub binary: Option<String>,
    /// The sheet of an .xlsx workbook to read (default: the first).
    #[arg(long)]
    pub sheet: Option<String>,
    /// The name of the record elements of an XML file (default: the root's children).
    #[arg(long)]
    pub record: Option<String>,
    /// Whether a missing table may be created.
    #[arg(long, value_enum, default_value = "if-not-exists")]
    pub create_table: CreatePolicy,
    #[command(flatten)]
    pub cluster: ClusterOption,
    /// Print one JSON report on stdout.
    #[arg(long)]
    pub json: bool,
    /// Print the physical plan and exit without importing.
    #[arg(long)]
    pub explain: bool,
    /// Most memory the import may hold (key sets, buffered batches), e.g.
    /// 512MB or 2GB; an import that needs more fails and writes nothing.
    #[arg(long)]
    pub memory_limit: Option<String>,
}

impl ImportArgs {
    /// The source flags, which are the IMPORT statement's FORMAT and OPTIONS
    /// under other names, read by the same function.
    fn source_options(&self) -> Result<SourceOptions, AtlasError> {
        let mut options = Vec::new();
        let mut option = |name: &str, value: Option<String>| {
            if let Some(value) = value {
                options.push((name.to_string(), value));
            }
        };
        option("delimiter", self.delimiter.map(String::from));
        option("header", self.no_header.then(|| "false".to_string()));
        option("quote", self.quote.clone());
        option("escape", self.escape.clone());
        option("comment", self.comment.clone());
        option("null", self.null.clone());
        option("encoding", self.encoding.clone());
        option("sheet", self.sheet.clone());
        option("record", self.record.clone());
        option("compression", self.compression.clone());
        option("infer", Some(self.infer.clone()));
        option("names", Some(self.names.clone()));
        option("binary", self.binary.clone());
        SourceOptions::parse(self.format.as_deref(), Some(&self.file), &options)
    }

    /// The mapping file, if one is given.
    pub fn mapping(&self) -> Result<Option<ServiceMapping>, AtlasError> {
        self.mapping
            .as_deref()
            .map(ServiceMapping::from_file)
            .transpose()
    }

    /// The target table: `--table`, else the mapping file's.
    pub fn table(&self, mapping: Option<&ServiceMapping>) -> Result<String, AtlasError> {
        match (&self.table, mapping) {
            (Some(table), _) => Ok(table.clone()),
            (None, Some(mapping)) => Ok(mapping.table_name.clone()),
            (None, None) => Err(AtlasError::Usage("--table is required".into())),
        }
    }

    /// What the flags (and the mapping file, which has the last word on
    /// what it sets) tell the import.
    pub fn import_options(
        &self,
        mapping: Option<&ServiceMapping>,
    ) -> Result<ImportOptions, AtlasError> {
        let mut options = ImportOptions {
            on_duplicate: match self.on_duplicate {
                DuplicatePolicy::Error => OnDuplicate::Error,
                DuplicatePolicy::Skip => OnDuplicate::Skip,
                DuplicatePolicy::Update => OnDuplicate::Update,
            },
            partitions: self.partitions,
            chunk_rows: self.chunk_rows,
            strategy: self.strategy.parse()?,
            file_policy: match (self.force, self.on_duplicate_file) {
                (true, _) | (_, FileDuplicatePolicy::Allow) => FilePolicy::Allow,
                (false, FileDuplicatePolicy::Skip) => FilePolicy::Skip,
                (false, FileDuplicatePolicy::Error) => FilePolicy::Error,
            },
            on_bad_value: match (self.on_bad_value, &self.reject_file) {
                (BadValuePolicy::Error, None) => OnBadValue::Error,
                (BadValuePolicy::Null, None) => OnBadValue::Null,
                (BadValuePolicy::Reject, Some(path)) | (BadValuePolicy::Error, Some(path)) => {
                    OnBadValue::Reject(path.clone())
                }
                (BadValuePolicy::Reject, None) => {
                    return Err(AtlasError::Usage(
                        "--on-bad-value reject needs --reject-file PATH".into(),
                    ));
                }
                (BadValuePolicy::Null, Some(_)) => {
                    return Err(AtlasError::Usage(
                        "--reject-file goes with --on-bad-value reject, not null".into(),
                    ));
                }
            },
            create_table: match self.create_table {
                CreatePolicy::IfNotExists => CreateTable::IfNotExists,
                CreatePolicy::Never => CreateTable::Never,
            },
            source: self.source_options()?,
            memory_limit: self
                .memory_limit
                .as_deref()
                .map(parse_memory_size)
                .transpose()?,
            ..ImportOptions::default()
        };
        options.set_key(self.key.iter().map(|k| k.trim().to_string()));
        if let Some(mapping) = mapping {
            mapping.apply(&mut options)?;
        }
        Ok(options)
    }
}
