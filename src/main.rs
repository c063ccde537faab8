//! `atlas-import`: the command-line interface. Glue only: flags in
//! `args.rs`, output and exit codes in `output.rs`, the progress bar and
//! logging in `terminal.rs`; the work is in the `atlas-import` library.

mod args;
mod output;
mod terminal;

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Instant;

use args::{Cli, Command, ImportArgs, ScriptOptions};
use atlas_import::script::{StatementOutcome, run_script};
use atlas_import::{
    AtlasError, ErrorClass, ImportBuilder, ImportCluster, ImportMetrics, ImportReport,
    ImportStatus, ReportContext, db, distributed,
};
use clap::Parser;
use datafusion::arrow::util::pretty::pretty_format_batches;
use output::{exit_code, outln, print_failed_json, print_json_rows, print_report};
use terminal::{Progress, Verbosity, init_logging};

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
        Command::Scheduler(args) => {
            init_logging(verbosity, None);
            let options = distributed::SchedulerOptions {
                bind: args.bind,
                task_max_failures: args.task_max_failures,
                executor_timeout_seconds: args.executor_timeout,
            };
            served(runtime.block_on(distributed::run_scheduler(options)))
        }
        Command::Executor(args) => {
            init_logging(verbosity, None);
            let options = distributed::ExecutorOptions {
                scheduler: args.scheduler,
                bind: args.bind,
                grpc_port: args.grpc_port,
                slots: args
                    .slots
                    .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get())),
                databases: args.databases,
                work_dir: args.work_dir,
            };
            served(runtime.block_on(distributed::run_executor(options)))
        }
    }
}

/// The exit of a server process (scheduler, executor): they run until
/// stopped, so any return is the error that stopped them.
fn served(result: Result<(), AtlasError>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err}");
            ExitCode::from(exit_code(err.class()))
        }
    }
}

/// The session of the cluster `url` names, if one does.
async fn cluster(
    url: Option<&str>,
) -> Result<Option<datafusion::prelude::SessionContext>, AtlasError> {
    match url {
        Some(url) => Ok(Some(distributed::remote_context(url).await?)),
        None => Ok(None),
    }
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
            outln!("{plan}");
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
                print_failed_json(&report, class);
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
    let mut config = datafusion::prelude::SessionConfig::default();
    match cluster(options.cluster.cluster.as_deref()).await {
        Ok(Some(cluster)) => config = config.with_extension(Arc::new(ImportCluster(cluster))),
        Ok(None) => {}
        Err(err) => {
            eprintln!("error: {err}");
            return ExitCode::from(exit_code(err.class()));
        }
    }
    let ctx = atlas_import::session_context_with_imports(config);
    let print = |outcome: &StatementOutcome| match outcome {
        StatementOutcome::Import(report) => print_report(report, options.json),
        StatementOutcome::Query(batches) if !options.json && !batches.is_empty() => {
            match pretty_format_batches(batches) {
                Ok(table) => outln!("{table}"),
                Err(e) => eprintln!("error: cannot print the result: {e}"),
            }
        }
        StatementOutcome::Query(batches) if options.json => print_json_rows(batches),
        StatementOutcome::Query(_) => {}
        StatementOutcome::Explain(plan, report) => {
            outln!("{plan}");
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
                    "status": ImportStatus::of_error(&failure.error).as_str(),
                    "error_class": class.name(),
                    "statement": failure.statement,
                    "error": failure.error.to_string(),
                    "committed_before": committed,
                });
                outln!("{line}");
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
    let mapping = args.mapping()?;
    let table = args.table(mapping.as_ref())?;
    let options = args.import_options(mapping.as_ref())?;
    let database = db::connect(&args.db).await?;
    let mut builder = ImportBuilder::new(database, &args.file, &table)
        .with_options(options)
        .with_metrics(metrics);
    if let Some(cluster) = cluster(args.cluster.cluster.as_deref()).await? {
        builder = builder.on_cluster(cluster);
    }
    if args.explain {
        Ok(Outcome::Explained(builder.explain().await?))
    } else {
        Ok(Outcome::Imported(Box::new(builder.await?)))
    }
}
