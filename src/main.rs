//! `atlas-import`: the command-line interface. Only argument parsing, output
//! and exit codes live here; the work is in the `atlas-import` library.

mod terminal;

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Instant;

use atlas_import::mapping::ServiceMapping;
use atlas_import::script::{StatementOutcome, run_script};
use atlas_import::{
    AtlasError, CreateTable, DEFAULT_CHUNK_ROWS, DEFAULT_PARTITIONS, ErrorClass, FilePolicy,
    ImportBuilder, ImportMetrics, ImportReport, ImportStatus, OnBadValue, OnDuplicate,
    ReportContext, SourceOptions, db, parse_memory_size,
};
use clap::{Parser, Subcommand, ValueEnum};
use datafusion::arrow::util::pretty::pretty_format_batches;
use terminal::{Progress, Verbosity, init_logging, rate, thousands};

/// Import files into PostgreSQL, MySQL/MariaDB and SQLite without letting duplicates in.
#[derive(Debug, Parser)]
#[command(name = "atlas-import", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    /// More detail on stderr: -v every chunk (with times), -vv everything.
    /// RUST_LOG, where set, decides instead.
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    verbose: u8,
    /// Only warnings and errors on stderr, and no progress bar.
    #[arg(short, long, global = true, conflicts_with = "verbose")]
    quiet: bool,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Import one file into one table.
    Import(Box<ImportArgs>),
    /// Run one statement or script: `IMPORT INTO ...` and DataFusion SQL.
    Sql(SqlArgs),
    /// Run a plan file: a script of `IMPORT INTO ...` and DataFusion SQL statements.
    Run(RunArgs),
}

#[derive(Debug, clap::Args)]
struct ScriptOptions {
    /// Database URL: sqlite://PATH, postgres://USER@HOST:PORT/DB or
    /// mysql://USER@HOST:PORT/DB (MariaDB too).
    #[arg(long, env = "DATABASE_URL", default_value = "sqlite://atlas.db")]
    db: String,
    /// Print JSON lines on stdout, in statement order: each import's report,
    /// and each query's rows as one object per row.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, clap::Args)]
struct SqlArgs {
    /// The statements, separated by `;`.
    sql: String,
    #[command(flatten)]
    options: ScriptOptions,
}

#[derive(Debug, clap::Args)]
struct RunArgs {
    /// The plan file.
    plan: PathBuf,
    #[command(flatten)]
    options: ScriptOptions,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum DuplicatePolicy {
    /// Refuse the import; nothing is written (exit 3).
    Error,
    /// Insert only new rows; inside the file the first occurrence is kept.
    Skip,
    /// Upsert: existing rows take the new non-key values; the last occurrence wins.
    Update,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum FileDuplicatePolicy {
    /// Refuse a file already imported into the table (exit 4).
    Error,
    /// Succeed without writing anything.
    Skip,
    /// Import it again (the row-level check still runs); same as --force.
    Allow,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum BadValuePolicy {
    /// Fail naming file, row, column and value (exit 5).
    Error,
    /// Write NULL instead of the value.
    Null,
    /// Leave the row out and write it to --reject-file.
    Reject,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum CreatePolicy {
    /// Create a missing table from the source schema.
    IfNotExists,
    /// Refuse when the table does not exist.
    Never,
}

#[derive(Debug, clap::Args)]
struct ImportArgs {
    /// The source file (CSV, TSV, Parquet, JSON, NDJSON, Avro, XLSX, XML).
    file: PathBuf,
    /// Target table: `table` or `schema.table` (MySQL: `database.table`);
    /// unquoted names follow the database's folding, quoted ones are exact
    /// ('"My.Table"'). Required unless --mapping names it.
    #[arg(long, short = 't', required_unless_present = "mapping")]
    table: Option<String>,
    /// A mapping file of the original service (table_name, db_schema, mappings,
    /// duplicate_check, rules); it sets the table, the key and the duplicate policies.
    #[arg(long)]
    mapping: Option<PathBuf>,
    /// Database URL: sqlite://PATH, postgres://USER@HOST:PORT/DB or
    /// mysql://USER@HOST:PORT/DB (MariaDB too).
    #[arg(long, env = "DATABASE_URL", default_value = "sqlite://atlas.db")]
    db: String,
    /// Uniqueness columns, comma-separated (default: every column written).
    #[arg(long, value_delimiter = ',')]
    key: Vec<String>,
    /// What to do with duplicate rows.
    #[arg(long, value_enum, default_value = "error")]
    on_duplicate: DuplicatePolicy,
    /// Partitions of the duplicate check.
    #[arg(long, default_value_t = DEFAULT_PARTITIONS)]
    partitions: usize,
    /// Rows per written chunk.
    #[arg(long, default_value_t = DEFAULT_CHUNK_ROWS)]
    chunk_rows: usize,
    /// How the check learns the keys already in the table: auto (from the
    /// sizes and indexes), preload (read them) or probe (stage the import's
    /// keys and let the database match them).
    #[arg(long, default_value = "auto")]
    strategy: String,
    /// Import even if this file was already imported into the table.
    #[arg(long)]
    force: bool,
    /// What to do when this file was already imported into the table.
    #[arg(long, value_enum, default_value = "error")]
    on_duplicate_file: FileDuplicatePolicy,
    /// What to do with a value that does not fit its column.
    #[arg(long, value_enum, default_value = "error")]
    on_bad_value: BadValuePolicy,
    /// The CSV file that receives rejected rows (with --on-bad-value reject).
    #[arg(long)]
    reject_file: Option<PathBuf>,
    /// Source format (default: from the file extension): csv, tsv, parquet,
    /// json, ndjson, avro, xlsx, xml.
    #[arg(long)]
    format: Option<String>,
    /// CSV field delimiter (one character).
    #[arg(long)]
    delimiter: Option<char>,
    /// The CSV file has no header row (columns are column_1, column_2, ...).
    #[arg(long)]
    no_header: bool,
    /// CSV quote character, or `none` for a file without quoting (default ").
    #[arg(long)]
    quote: Option<String>,
    /// CSV escape character before a quote inside quoted fields, e.g. '\'
    /// (default: none; quotes are doubled).
    #[arg(long)]
    escape: Option<String>,
    /// CSV lines starting with this character are comments (skipped).
    #[arg(long)]
    comment: Option<String>,
    /// An unquoted CSV field equal to this text is NULL, as an empty one is
    /// (e.g. NULL or \N).
    #[arg(long)]
    null: Option<String>,
    /// How the source is compressed: gzip, zstd, bzip2, xz or none (default:
    /// from the extension: .gz, .zst, .bz2, .xz).
    #[arg(long)]
    compression: Option<String>,
    /// Column types of a new table: strict (numbers, booleans, dates only
    /// where no value changes its meaning) or text (every column text).
    #[arg(long, default_value = "strict")]
    infer: String,
    /// Names of a new table and its columns: normalize (lowercase
    /// snake_case: E-Mail -> e_mail) or keep (exactly as the source has them).
    #[arg(long, default_value = "normalize")]
    names: String,
    /// How text is read into binary columns (bytea, BLOB): native (as the
    /// database reads text: PostgreSQL's `\x` hex or escape form), hex or base64.
    #[arg(long)]
    binary: Option<String>,
    /// The sheet of an .xlsx workbook to read (default: the first).
    #[arg(long)]
    sheet: Option<String>,
    /// The name of the record elements of an XML file (default: the root's children).
    #[arg(long)]
    record: Option<String>,
    /// Whether a missing table may be created.
    #[arg(long, value_enum, default_value = "if-not-exists")]
    create_table: CreatePolicy,
    /// Print one JSON report on stdout.
    #[arg(long)]
    json: bool,
    /// Print the physical plan and exit without importing.
    #[arg(long)]
    explain: bool,
    /// Most memory the import may hold (key sets, buffered batches), e.g.
    /// 512MB or 2GB; an import that needs more fails and writes nothing.
    #[arg(long)]
    memory_limit: Option<String>,
}

/// Exit codes (docs/ARCHITECTURE.md §3), mapped in one place.
fn exit_code(class: ErrorClass) -> u8 {
    match class {
        ErrorClass::Usage => 2,
        ErrorClass::Duplicates => 3,
        ErrorClass::AlreadyImported => 4,
        ErrorClass::BadData => 5,
        ErrorClass::Database => 6,
        ErrorClass::Other => 1,
    }
}

fn status_name(class: ErrorClass) -> &'static str {
    match class {
        ErrorClass::Usage => "usage_error",
        ErrorClass::Duplicates => "duplicates",
        ErrorClass::AlreadyImported => "already_imported",
        ErrorClass::BadData => "bad_data",
        ErrorClass::Database => "database_error",
        ErrorClass::Other => "error",
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    let verbosity = Verbosity {
        quiet: cli.quiet,
        verbose: cli.verbose,
    };
    match cli.command {
        Command::Import(args) => runtime.block_on(import(*args, verbosity)),
        Command::Sql(args) => runtime.block_on(script(args.sql, args.options, verbosity)),
        Command::Run(args) => match std::fs::read_to_string(&args.plan) {
            Ok(sql) => runtime.block_on(script(sql, args.options, verbosity)),
            Err(e) => {
                eprintln!(
                    "error: cannot read plan file '{}': {e}",
                    args.plan.display()
                );
                ExitCode::from(exit_code(ErrorClass::Usage))
            }
        },
    }
}

/// The source flags, which are the IMPORT statement's FORMAT and OPTIONS
/// under other names, read by the same function.
fn source_options(args: &ImportArgs) -> Result<SourceOptions, AtlasError> {
    let mut options = Vec::new();
    let mut option = |name: &str, value: Option<String>| {
        if let Some(value) = value {
            options.push((name.to_string(), value));
        }
    };
    option("delimiter", args.delimiter.map(String::from));
    option("header", args.no_header.then(|| "false".to_string()));
    option("quote", args.quote.clone());
    option("escape", args.escape.clone());
    option("comment", args.comment.clone());
    option("null", args.null.clone());
    option("sheet", args.sheet.clone());
    option("record", args.record.clone());
    option("compression", args.compression.clone());
    option("infer", Some(args.infer.clone()));
    option("names", Some(args.names.clone()));
    option("binary", args.binary.clone());
    SourceOptions::parse(args.format.as_deref(), Some(&args.file), &options)
}

async fn import(args: ImportArgs, verbosity: Verbosity) -> ExitCode {
    let started = Instant::now();
    let metrics = Arc::new(ImportMetrics::default());
    let progress = Progress::start(&metrics, verbosity.quiet, args.json);
    init_logging(verbosity, progress.as_ref().map(Progress::bar));

    // Ctrl-C drops the import before it commits: the database rolls the open
    // transaction back when the connection goes away.
    let result = tokio::select! {
        result = run_import(&args, Arc::clone(&metrics)) => result,
        _ = tokio::signal::ctrl_c() => {
            if let Some(progress) = progress {
                progress.finish();
            }
            eprintln!("interrupted: the import was rolled back, nothing was written");
            return ExitCode::from(130);
        }
    };
    if let Some(progress) = progress {
        progress.finish();
    }

    match result {
        Ok(Outcome::Explained(plan)) => {
            println!("{plan}");
            ExitCode::SUCCESS
        }
        Ok(Outcome::Imported(report)) => {
            print_report(&report, args.json);
            ExitCode::SUCCESS
        }
        Err(err) => {
            let class = err.class();
            if args.json {
                let source = args.file.display().to_string();
                let context = ReportContext {
                    table: args.table.clone().unwrap_or_default(),
                    source: &source,
                    chunk_rows: args.chunk_rows,
                    partitions: args.partitions,
                    started,
                };
                let report = ImportReport {
                    file_hash: match &err {
                        AtlasError::AlreadyImported { file_hash, .. } => Some(file_hash.clone()),
                        _ => None,
                    },
                    error: Some(err.to_string()),
                    ..metrics.report(ImportStatus::of_error(&err), &context)
                };
                // A failed import's JSON names the error's class, as the
                // exit code does.
                match serde_json::to_value(&report) {
                    Ok(mut json) => {
                        json["status"] = status_name(class).into();
                        println!("{json}");
                    }
                    Err(e) => eprintln!("error: cannot render the report as JSON: {e}"),
                }
            }
            eprintln!("error: {err}");
            ExitCode::from(exit_code(class))
        }
    }
}

async fn script(sql: String, options: ScriptOptions, verbosity: Verbosity) -> ExitCode {
    init_logging(verbosity, None);
    let database = match db::connect(&options.db).await {
        Ok(database) => database,
        Err(err) => {
            eprintln!("error: {err}");
            return ExitCode::from(exit_code(err.class()));
        }
    };
    let ctx = atlas_import::session_context_with_imports(Default::default());
    let print = |outcome: &StatementOutcome| match outcome {
        StatementOutcome::Import(report) => print_report(report, options.json),
        StatementOutcome::Query(batches) if !options.json && !batches.is_empty() => {
            match pretty_format_batches(batches) {
                Ok(table) => println!("{table}"),
                Err(e) => eprintln!("error: cannot print the result: {e}"),
            }
        }
        StatementOutcome::Query(batches) if options.json => print_json_rows(batches),
        StatementOutcome::Query(_) => {}
        StatementOutcome::Explain(plan, report) => {
            println!("{plan}");
            if let Some(report) = report {
                print_report(report, options.json);
            }
        }
    };
    let outcome = tokio::select! {
        outcome = run_script(&ctx, database, &sql, || Arc::new(ImportMetrics::default())) => outcome,
        _ = tokio::signal::ctrl_c() => {
            eprintln!("interrupted: the running import was rolled back; imports committed before it stay");
            return ExitCode::from(130);
        }
    };
    match outcome {
        Ok(outcomes) => {
            outcomes.iter().for_each(print);
            ExitCode::SUCCESS
        }
        Err(failure) => {
            failure.completed.iter().for_each(print);
            let committed: Vec<String> = failure
                .completed
                .iter()
                .filter_map(|o| match o {
                    StatementOutcome::Import(r) | StatementOutcome::Explain(_, Some(r)) => {
                        Some(format!("{} -> {}", r.source, r.table))
                    }
                    StatementOutcome::Query(_) | StatementOutcome::Explain(_, None) => None,
                })
                .collect();
            let class = failure.error.class();
            if options.json {
                let line = serde_json::json!({
                    "status": status_name(class),
                    "statement": failure.statement,
                    "error": failure.error.to_string(),
                    "committed_before": committed,
                });
                println!("{line}");
            }
            if failure.statement == 0 {
                eprintln!("error: {}", failure.error);
            } else {
                eprintln!("error: {failure}");
                if committed.is_empty() {
                    eprintln!("no import of this script was committed");
                } else {
                    eprintln!("imports committed before it stay: {}", committed.join(", "));
                }
            }
            ExitCode::from(exit_code(class))
        }
    }
}

enum Outcome {
    Explained(String),
    Imported(Box<ImportReport>),
}

async fn run_import(args: &ImportArgs, metrics: Arc<ImportMetrics>) -> Result<Outcome, AtlasError> {
    let source_options = source_options(args)?;
    let mapping = match &args.mapping {
        Some(path) => Some(ServiceMapping::from_file(path)?),
        None => None,
    };
    let table = match (&args.table, &mapping) {
        (Some(table), _) => table.clone(),
        (None, Some(mapping)) => mapping.table_name.clone(),
        (None, None) => return Err(AtlasError::Usage("--table is required".into())),
    };
    let database = db::connect(&args.db).await?;
    let mut builder = ImportBuilder::new(database, &args.file, &table)
        .with_key(args.key.iter().map(|k| k.trim().to_string()))
        .with_on_duplicate(match args.on_duplicate {
            DuplicatePolicy::Error => OnDuplicate::Error,
            DuplicatePolicy::Skip => OnDuplicate::Skip,
            DuplicatePolicy::Update => OnDuplicate::Update,
        })
        .with_partitions(args.partitions)
        .with_chunk_rows(args.chunk_rows)
        .with_strategy(args.strategy.parse()?)
        .with_file_policy(match (args.force, args.on_duplicate_file) {
            (true, _) | (_, FileDuplicatePolicy::Allow) => FilePolicy::Allow,
            (false, FileDuplicatePolicy::Skip) => FilePolicy::Skip,
            (false, FileDuplicatePolicy::Error) => FilePolicy::Error,
        })
        .with_on_bad_value(match (args.on_bad_value, &args.reject_file) {
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
        })
        .with_create_table(match args.create_table {
            CreatePolicy::IfNotExists => CreateTable::IfNotExists,
            CreatePolicy::Never => CreateTable::Never,
        })
        .with_metrics(metrics);
    builder = builder.with_source_options(source_options);
    if let Some(mapping) = &mapping {
        builder = mapping.apply(builder)?;
    }
    if let Some(limit) = &args.memory_limit {
        builder = builder.with_memory_limit(parse_memory_size(limit)?);
    }
    if args.explain {
        Ok(Outcome::Explained(builder.explain().await?))
    } else {
        Ok(Outcome::Imported(Box::new(builder.execute().await?)))
    }
}

fn print_json(report: &ImportReport) {
    match serde_json::to_string(report) {
        Ok(line) => println!("{line}"),
        Err(e) => eprintln!("error: cannot render the report as JSON: {e}"),
    }
}

/// A query's rows as JSON lines, one object per row (NULLs included).
fn print_json_rows(batches: &[datafusion::arrow::array::RecordBatch]) {
    let mut out = std::io::stdout().lock();
    let mut writer = arrow_json::WriterBuilder::new()
        .with_explicit_nulls(true)
        .build::<_, arrow_json::writer::LineDelimited>(&mut out);
    for batch in batches {
        if let Err(e) = writer.write(batch) {
            eprintln!("error: cannot print the result as JSON: {e}");
            return;
        }
    }
    if let Err(e) = writer.finish() {
        eprintln!("error: cannot print the result as JSON: {e}");
    }
}

fn print_report(report: &ImportReport, json: bool) {
    if json {
        print_json(report);
        return;
    }
    if report.status == ImportStatus::SkippedFile {
        println!(
            "Skipped {}: it was already imported into '{}' (ON DUPLICATE FILE SKIP), nothing written",
            report.source, report.table
        );
        return;
    }
    let seconds = report.elapsed_ms as f64 / 1000.0;
    println!(
        "Imported {} into '{}'{}: {} rows read, {} inserted, {} skipped in {seconds:.1} s ({})",
        report.source,
        report.table,
        if report.created_table {
            " (table created)"
        } else {
            ""
        },
        thousands(report.rows_read),
        thousands(report.inserted),
        thousands(report.skipped),
        rate(report.rows_read, seconds),
    );
    if report.skipped > 0 {
        println!(
            "  skipped: {} already in the table, {} repeated in the file",
            thousands(report.duplicates_existing),
            thousands(report.duplicates_in_file)
        );
    }
    if report.updated > 0 {
        println!(
            "  {} rows updated existing rows (ON DUPLICATE UPDATE)",
            thousands(report.updated)
        );
    }
    if report.rejected > 0 {
        println!(
            "  {} rows rejected for bad values",
            thousands(report.rejected)
        );
    }
    if report.nulled_values > 0 {
        println!(
            "  {} bad values written as NULL",
            thousands(report.nulled_values)
        );
    }
}
