//! What the benches share: generated data (made once, kept in
//! `<target>/bench-data`), the databases' own bulk loads, and the
//! `atlas-import` release binary run as a user runs it, timed with its peak
//! resident set size.
//!
//! Every ratio is atlas-import's time over the bulk load's time of the same
//! file, measured in the same run.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use atlas_import_cli::datagen;

/// A size from the environment, or the default.
pub fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.replace('_', "").parse().ok())
        .unwrap_or(default)
}

/// The target directory this bench runs from (`.../target`).
fn target_dir() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    // .../target/release/deps/<bench>
    exe.parent()
        .unwrap()
        .parent()
        .unwrap()
        .parent()
        .unwrap()
        .to_path_buf()
}

/// The release `atlas-import` binary (`ATLAS_BENCH_BINARY` names another,
/// e.g. an earlier build to compare with); the bench stops with the command
/// that builds it when it is missing.
pub fn atlas_binary() -> PathBuf {
    let path = std::env::var_os("ATLAS_BENCH_BINARY")
        .map(PathBuf::from)
        .unwrap_or_else(|| target_dir().join("release").join("atlas-import"));
    if !path.exists() {
        eprintln!(
            "{} is missing: build it first with\n  cargo build --release -p atlas-import-cli",
            path.display()
        );
        std::process::exit(2);
    }
    path
}

/// A file of generated rows `first..first + count`, made once and reused.
pub fn data_file(first: u64, count: u64) -> PathBuf {
    revised_data_file(first, count, 0)
}

/// A file of generated rows `first..first + count` as of `revision` (the
/// same keys, other values: what an upsert changes), made once and reused.
pub fn revised_data_file(first: u64, count: u64, revision: u64) -> PathBuf {
    let dir = target_dir().join("bench-data");
    std::fs::create_dir_all(&dir).unwrap();
    let name = match revision {
        0 => format!("rows_{first}_{count}.csv"),
        r => format!("rows_{first}_{count}_r{r}.csv"),
    };
    let path = dir.join(&name);
    if !path.exists() {
        let partial = dir.join(format!("{name}.partial"));
        let started = Instant::now();
        let bytes = datagen::write_csv(&partial, first, count, revision).unwrap();
        std::fs::rename(&partial, &path).unwrap();
        println!(
            "generated {} ({:.0} MB) in {:.1} s",
            path.display(),
            bytes as f64 / 1e6,
            started.elapsed().as_secs_f64()
        );
    }
    // Warm the page cache so neither side pays for the first read (in
    // pieces: a child inherits this process's peak RSS, which wait4 reports).
    if let Ok(mut file) = std::fs::File::open(&path) {
        let mut buf = vec![0u8; 1 << 20];
        while matches!(std::io::Read::read(&mut file, &mut buf), Ok(n) if n > 0) {}
    }
    path
}

/// A child process's wall time and peak resident set size.
#[derive(Debug, Clone, Copy)]
pub struct Run {
    pub time: Duration,
    pub peak_rss_mb: f64,
}

/// Runs `command`, which must succeed, and measures it.
pub fn measure(command: &mut Command) -> (Run, String) {
    let started = Instant::now();
    let child = command
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {command:?}: {e}"));
    let pid = child.id() as libc::pid_t;
    // Read the pipes on threads, then reap the child with wait4 for its rusage
    // (std's wait would reap it without).
    {
        let mut child = child;
        let mut stdout = child.stdout.take().unwrap();
        let mut stderr = child.stderr.take().unwrap();
        let out = std::thread::spawn(move || {
            let mut s = String::new();
            std::io::Read::read_to_string(&mut stdout, &mut s).ok();
            s
        });
        let err = std::thread::spawn(move || {
            let mut s = String::new();
            std::io::Read::read_to_string(&mut stderr, &mut s).ok();
            s
        });
        let mut status = 0;
        let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
        // SAFETY: `pid` is our child, not yet reaped; `usage` is a valid rusage.
        let reaped = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
        assert_eq!(reaped, pid, "wait4 failed");
        let time = started.elapsed();
        let stdout = out.join().unwrap();
        let stderr = err.join().unwrap();
        let ok = libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0;
        assert!(ok, "{command:?} failed:\n{stdout}\n{stderr}");
        (
            Run {
                time,
                peak_rss_mb: usage.ru_maxrss as f64 / 1024.0,
            },
            stdout,
        )
    }
}

/// Runs `atlas-import` with `args` and returns the run and its JSON report.
pub fn atlas(args: &[&str]) -> (Run, serde_json::Value) {
    let mut command = Command::new(atlas_binary());
    command
        .args(args)
        .arg("--json")
        .env_remove("DATABASE_URL")
        .env(
            "RUST_LOG",
            std::env::var("RUST_LOG").unwrap_or_else(|_| "atlas_import=warn".into()),
        );
    let (run, stdout) = measure(&mut command);
    let report = stdout
        .lines()
        .rev()
        .find_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .unwrap_or_else(|| panic!("no report in {stdout}"));
    (run, report)
}

/// `atlas-import import FILE --table TABLE --db URL --force EXTRA...` (the
/// same file goes into the same table name on every run, hence `--force`),
/// then the options in `ATLAS_BENCH_ARGS`.
pub fn import_file(
    file: &Path,
    table: &str,
    url: &str,
    extra: &[&str],
) -> (Run, serde_json::Value) {
    let mut args = vec![
        "import",
        file.to_str().unwrap(),
        "--table",
        table,
        "--db",
        url,
        "--force",
    ];
    args.extend_from_slice(extra);
    // Options to time against the defaults, e.g. `--strategy preload`.
    let options = std::env::var("ATLAS_BENCH_ARGS").unwrap_or_default();
    args.extend(options.split_whitespace());
    atlas(&args)
}

/// Runs a shell-free command that must succeed, and times it.
pub fn timed(program: &str, args: &[&str]) -> Duration {
    measure(Command::new(program).args(args)).0.time
}

/// One line of results, in the form benches/README.md quotes.
pub fn print_result(case: &str, atlas: Run, baseline_name: &str, baseline: Duration) {
    println!(
        "{case}: atlas-import {:.2} s, {baseline_name} {:.2} s, ratio {:.2}, peak RSS {:.0} MB",
        atlas.time.as_secs_f64(),
        baseline.as_secs_f64(),
        atlas.time.as_secs_f64() / baseline.as_secs_f64(),
        atlas.peak_rss_mb
    );
}

/// The machine, for the record.
pub fn print_machine() {
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    let model = std::fs::read_to_string("/proc/cpuinfo")
        .unwrap_or_default()
        .lines()
        .find_map(|l| {
            l.strip_prefix("model name")
                .map(|m| m.trim_start_matches([' ', '\t', ':']).to_string())
        })
        .unwrap_or_default();
    println!("machine: {cpus} cores ({model}); release build");
}

/// Files in a bench data directory that the bench writes (reject files...).
pub fn scratch(name: &str) -> PathBuf {
    let dir = target_dir().join("bench-data");
    std::fs::create_dir_all(&dir).unwrap();
    dir.join(name)
}

/// Whether `path` exists, for data reuse decisions.
pub fn exists(path: &Path) -> bool {
    path.exists()
}

/// A database as the benches drive it: its own tools for SQL and bulk loads.
pub trait BulkDatabase {
    /// Name in results.
    fn name(&self) -> &'static str;
    /// The URL atlas-import gets.
    fn url(&self) -> String;
    /// Runs SQL statements with the database's own client.
    fn exec(&self, sql: &str);
    /// The column definitions of a table of generated rows.
    fn columns(&self) -> &'static str;
    /// The identity key column definition.
    fn identity(&self) -> &'static str;
    /// The database's own bulk load of a generated file into `table`, timed.
    fn bulk_load(&self, table: &str, file: &Path) -> Duration;
    /// What the bulk load is called in results.
    fn bulk_load_name(&self) -> &'static str;
    /// The SQL peer of an upsert keyed by `customer_no`, in one transaction
    /// of the database's own client: `file` into a temporary table by the
    /// bulk path, then the set-based statement (with a unique index on the
    /// key when `indexed`); timed. Returns the time and the peer's name.
    fn upsert_peer(&self, table: &str, file: &Path, indexed: bool) -> (Duration, &'static str);
    /// The names (`comm`) of the database server's processes on this
    /// machine, whose CPU a case reports beside its times; none for an
    /// embedded database.
    fn server_processes(&self) -> &'static [&'static str] {
        &[]
    }
}

/// The CPU time (user and system) that this machine's processes named
/// `names` have used so far, from `/proc`; `None` where there are none (a
/// remote server, or another system).
///
/// On a machine as small as these benches' (2 cores, the server beside the
/// client) the server's CPU decides a server-bound load: the kernel shares
/// the cores between the server's process and the client's session, so
/// whatever else the server does during an import (a scan of the table's
/// keys) comes out of its load's share.
pub fn server_cpu(names: &[&str]) -> Option<Duration> {
    if names.is_empty() {
        return None;
    }
    // SAFETY: sysconf has no preconditions.
    let ticks_per_second = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if ticks_per_second <= 0 {
        return None;
    }
    let mut ticks = 0u64;
    let mut found = false;
    for entry in std::fs::read_dir("/proc").ok()?.flatten() {
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        // `pid (comm) state ...`: the name may hold spaces, the fields after
        // its closing parenthesis do not.
        let (Some(open), Some(close)) = (stat.find('('), stat.rfind(')')) else {
            continue;
        };
        if !names.contains(&&stat[open + 1..close]) {
            continue;
        }
        let fields: Vec<&str> = stat[close + 1..].split_whitespace().collect();
        // utime, stime, cutime and cstime: fields 14 to 17 of stat(5), 12 to
        // 15 after comm. The children's times count a server's processes
        // that ended (PostgreSQL's backend of a connection that closed, once
        // the postmaster reaped it); a thread's time stays with its process.
        let used: u64 = fields
            .get(11..15)
            .map(|f| f.iter().filter_map(|v| v.parse::<u64>().ok()).sum())
            .unwrap_or(0);
        ticks += used;
        found = true;
    }
    found.then(|| Duration::from_secs_f64(ticks as f64 / ticks_per_second as f64))
}

/// Runs `work` and returns its result with the server's CPU it took.
pub fn with_server_cpu<T>(names: &[&str], work: impl FnOnce() -> T) -> (T, Option<Duration>) {
    let before = server_cpu(names);
    let result = work();
    let used = server_cpu(names)
        .zip(before)
        .map(|(after, before)| after.saturating_sub(before));
    (result, used)
}

/// The line under a result that says how much of the server each side used.
pub fn print_server_cpu(atlas: Option<Duration>, baseline_name: &str, baseline: Option<Duration>) {
    if let (Some(atlas), Some(baseline)) = (atlas, baseline) {
        println!(
            "  server CPU during each: atlas-import {:.2} s, {baseline_name} {:.2} s",
            atlas.as_secs_f64(),
            baseline.as_secs_f64()
        );
    }
}

/// The upsert key of the benches.
pub const UPSERT_KEY: &str = "customer_no";

/// `assignment(c)` for every generated column but the key, comma-separated.
pub fn upsert_assignments(assignment: impl Fn(&str) -> String) -> String {
    datagen::column_list()
        .split(',')
        .filter(|c| *c != UPSERT_KEY)
        .map(assignment)
        .collect::<Vec<_>>()
        .join(", ")
}

/// `{prefix}c, ...` for every generated column.
pub fn prefixed_columns(prefix: &str) -> String {
    datagen::column_list()
        .split(',')
        .map(|c| format!("{prefix}{c}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Creates `table` (dropped first) and fills it with `existing`: by the
/// bulk load for the baseline, by atlas-import for atlas-import's own table
/// (so the existing values are exactly those it would have written: the
/// bulk loads differ in how they store empty fields and booleans).
pub fn prepare_table(db: &dyn BulkDatabase, table: &str, existing: &Path, by_atlas: bool) {
    db.exec(&format!(
        "DROP TABLE IF EXISTS {table}; CREATE TABLE {table} ({}, {})",
        db.identity(),
        db.columns()
    ));
    if by_atlas {
        import_file(existing, table, &db.url(), &["--on-duplicate", "skip"]);
    } else {
        db.bulk_load(table, existing);
    }
}

/// The cases every database runs, chosen by `ATLAS_BENCH_CASES`
/// (comma-separated; default `error,skip`):
/// - `error`: N new rows against M existing, every column the key, the
///   default `ON DUPLICATE ERROR`; baseline: the bulk load of the file;
/// - `skip`: N rows of which half exist already, `--on-duplicate skip`;
///   baseline: the bulk load of the whole file;
/// - `update`, `update_mixed` (and `..._index`, with a unique index on the
///   key): `--key customer_no --on-duplicate update` of the M existing rows
///   (all updates) or of N rows of which half exist, every existing row
///   with new values (the rows' next revision); baseline: the database's
///   SQL peer ([`BulkDatabase::upsert_peer`]);
/// - `update_same`: the M existing rows again with the values they hold
///   (a re-sent snapshot), against the same peer.
pub fn run_cases(db: &dyn BulkDatabase) {
    print_machine();
    let rows = env_u64("ATLAS_BENCH_ROWS", 1_000_000);
    let existing = env_u64("ATLAS_BENCH_EXISTING", 1_000_000);
    let cases = std::env::var("ATLAS_BENCH_CASES").unwrap_or_else(|_| "error,skip".into());
    let existing_file = data_file(0, existing);
    for case in cases.split(',').map(str::trim) {
        let (file, args): (PathBuf, Vec<&str>) = match case {
            "error" => (data_file(existing, rows), vec![]),
            "skip" => (
                data_file(existing / 2, rows),
                vec!["--on-duplicate", "skip"],
            ),
            "update" | "update_index" => {
                run_upsert(db, case, &existing_file, &revised_data_file(0, existing, 1));
                continue;
            }
            "update_mixed" | "update_mixed_index" => {
                let file = revised_data_file(existing / 2, rows, 1);
                run_upsert(db, case, &existing_file, &file);
                continue;
            }
            "update_same" => {
                run_upsert(db, case, &existing_file, &existing_file);
                continue;
            }
            // A database's own cases, run by its bench.
            "types" | "cluster" => continue,
            other => {
                eprintln!(
                    "unknown case {other}: expected error, skip, update, update_index, \
                     update_mixed, update_mixed_index or update_same"
                );
                continue;
            }
        };
        let (target, baseline) = ("bench_atlas", "bench_bulk");
        prepare_table(db, target, &existing_file, true);
        prepare_table(db, baseline, &existing_file, false);
        let servers = db.server_processes();
        let (bulk, bulk_cpu) = with_server_cpu(servers, || db.bulk_load(baseline, &file));
        let ((run, report), atlas_cpu) =
            with_server_cpu(servers, || import_file(&file, target, &db.url(), &args));
        let expected = if case == "skip" {
            rows - existing / 2
        } else {
            rows
        };
        assert_eq!(report["inserted"], expected, "{report}");
        print_result(
            &format!("{} {case} {rows} rows vs {existing} existing", db.name()),
            run,
            db.bulk_load_name(),
            bulk,
        );
        print_server_cpu(atlas_cpu, db.bulk_load_name(), bulk_cpu);
        for table in [target, baseline] {
            db.exec(&format!("DROP TABLE IF EXISTS {table}"));
        }
    }
}

/// One upsert case: `file` into a table holding `existing`, by atlas-import
/// and by the database's SQL peer.
fn run_upsert(db: &dyn BulkDatabase, case: &str, existing: &Path, file: &Path) {
    let indexed = case.ends_with("_index");
    let (target, baseline) = ("bench_atlas", "bench_bulk");
    prepare_table(db, target, existing, true);
    prepare_table(db, baseline, existing, false);
    if indexed {
        for table in [target, baseline] {
            db.exec(&format!(
                "CREATE UNIQUE INDEX {table}_key ON {table} ({UPSERT_KEY})"
            ));
        }
    }
    let (peer, peer_name) = db.upsert_peer(baseline, file, indexed);
    let (run, report) = import_file(
        file,
        target,
        &db.url(),
        &["--key", UPSERT_KEY, "--on-duplicate", "update"],
    );
    print_result(
        &format!(
            "{} {case} ({} inserted, {} updated)",
            db.name(),
            report["inserted"],
            report["updated"]
        ),
        run,
        peer_name,
        peer,
    );
    for table in [target, baseline] {
        db.exec(&format!("DROP TABLE IF EXISTS {table}"));
    }
}
