//! Distributed imports on a real Ballista cluster on loopback: a scheduler
//! and executors started from the binary (`atlas-import scheduler`,
//! `atlas-import executor`), imports through `--cluster`; an executor killed
//! while the import runs; a write that fails after its commit and is tried
//! again. The same imports on Ballista's in-process cluster run under the
//! semantic suite (`*_ballista` tests).

use std::io::Write;
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use crate::common::{Kind, TempDir, TestDb, postgres_url};

fn binary() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_atlas-import"))
}

/// A port nothing listens on now.
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// A scheduler and executors, killed when dropped.
struct Cluster {
    scheduler: Child,
    executors: Vec<Child>,
    port: u16,
    _work: TempDir,
}

impl Cluster {
    /// A scheduler and `executors` executors that reach the test PostgreSQL;
    /// `env` is set for the executors.
    fn start(executors: usize, env: &[(&str, &str)]) -> Self {
        let work = TempDir::new();
        let port = free_port();
        let log = |name: &str| {
            std::fs::File::create(work.path().join(format!("{name}.log"))).expect("a log file")
        };
        let scheduler = Command::new(binary())
            .args(["scheduler", "--bind", &format!("127.0.0.1:{port}")])
            // Lost executors are noticed within seconds, not minutes.
            .args(["--executor-timeout", "6"])
            .stdout(Stdio::null())
            .stderr(log("scheduler"))
            .spawn()
            .expect("the scheduler starts");
        let deadline = Instant::now() + Duration::from_secs(30);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "the scheduler did not listen");
            std::thread::sleep(Duration::from_millis(100));
        }
        let executors = (0..executors)
            .map(|i| {
                let dir = work.path().join(format!("executor{i}"));
                std::fs::create_dir_all(&dir).unwrap();
                Command::new(binary())
                    .args(["executor", "--scheduler", &format!("127.0.0.1:{port}")])
                    .args(["--bind", &format!("127.0.0.1:{}", free_port())])
                    .args(["--grpc-port", &free_port().to_string()])
                    .args(["--slots", "2", "--database", &postgres_url()])
                    .args(["--work-dir", &dir.display().to_string()])
                    .envs(env.iter().copied())
                    .stdout(Stdio::null())
                    .stderr(log(&format!("executor{i}")))
                    .spawn()
                    .expect("an executor starts")
            })
            .collect();
        // Registration takes a heartbeat.
        std::thread::sleep(Duration::from_secs(3));
        Cluster {
            scheduler,
            executors,
            port,
            _work: work,
        }
    }

    /// What the scheduler and executors logged so far.
    fn logs(&self) -> String {
        let mut logs = String::new();
        for entry in std::fs::read_dir(self._work.path()).unwrap().flatten() {
            if entry.path().extension().is_some_and(|e| e == "log") {
                logs.push_str(&std::fs::read_to_string(entry.path()).unwrap_or_default());
            }
        }
        logs
    }

    fn url(&self) -> String {
        format!("df://127.0.0.1:{}", self.port)
    }

    /// The JSON report of `atlas-import ARGS --cluster ...`, which must succeed.
    fn report(&self, args: &[&str]) -> serde_json::Value {
        succeeded(&mut self.command(args))
    }

    /// `atlas-import import SOURCE --table TABLE EXTRA... --cluster ...`.
    fn import(&self, source: &str, table: &str, extra: &[&str]) -> Command {
        let mut args = vec!["import", source, "--table", table];
        args.extend_from_slice(extra);
        self.command(&args)
    }

    /// The JSON report of [`Self::import`] (`--json -q`), which must succeed.
    fn import_report(&self, source: &str, table: &str, extra: &[&str]) -> serde_json::Value {
        let mut extra = extra.to_vec();
        extra.extend(["--json", "-q"]);
        succeeded(&mut self.import(source, table, &extra))
    }

    /// `atlas-import ARGS --cluster URL --db POSTGRES`.
    fn command(&self, args: &[&str]) -> Command {
        let mut command = Command::new(binary());
        command
            .args(args)
            .args(["--cluster", &self.url(), "--db", &postgres_url()]);
        command
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for child in self.executors.iter_mut().chain([&mut self.scheduler]) {
            child.kill().ok();
            child.wait().ok();
        }
    }
}

/// `rows` rows `email,name,n` from `first` on.
fn write_rows(path: &Path, first: usize, rows: usize) {
    let mut out = std::io::BufWriter::new(std::fs::File::create(path).unwrap());
    writeln!(out, "email,name,n").unwrap();
    for i in first..first + rows {
        writeln!(out, "user{i}@example.com,Name {i},{i}").unwrap();
    }
}

/// The JSON report of `command`, which must succeed.
fn succeeded(command: &mut Command) -> serde_json::Value {
    let output = command.output().unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    json(&output)
}

fn json(output: &Output) -> serde_json::Value {
    let stdout = String::from_utf8_lossy(&output.stdout);
    serde_json::from_str(stdout.lines().last().unwrap_or_default()).unwrap_or_else(|e| {
        panic!(
            "no JSON report ({e}): {stdout}\nstderr: {}",
            String::from_utf8_lossy(&output.stderr)
        )
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn import_through_a_cluster_of_two_executors() {
    let db = TestDb::new(Kind::Postgres).await;
    let cluster = Cluster::start(2, &[]);
    let dir = TempDir::new();
    let table = db.table("cluster");
    db.run(async {
        let rows = 300_000;
        let first = dir.path().join("first.csv");
        write_rows(&first, 0, rows);
        // EXPLAIN shows the stages the scheduler makes and where the sink runs.
        let output = cluster
            .import(first.to_str().unwrap(), &table, &["--explain"])
            .output()
            .unwrap();
        let explained = String::from_utf8_lossy(&output.stdout);
        assert!(output.status.success(), "{explained}");
        let stages: Vec<&str> = explained
            .lines()
            .filter(|line| line.starts_with("stage "))
            .collect();
        assert_eq!(stages.len(), 4, "{explained}");
        let stage = |role: &str| {
            stages
                .iter()
                .find(|s| s.contains(role))
                .unwrap_or_else(|| panic!("no stage {role}: {explained}"))
        };
        assert!(stage("reading the source").contains("shuffled into 4 partitions"));
        assert!(stage("reading the table's keys").contains("shuffled into 4 partitions"));
        assert!(stage("duplicate check").contains("4 tasks"), "{explained}");
        assert!(
            stages[3].contains("1 task on one executor, the sink"),
            "{explained}"
        );
        let sink_stage = explained.split(stages[3]).nth(1).unwrap();
        assert!(sink_stage.contains("DataSinkExec"), "{explained}");
        let report = cluster.import_report(first.to_str().unwrap(), &table, &[]);
        assert_eq!(report["status"], "committed");
        assert_eq!(report["rows_read"], rows);
        assert_eq!(report["inserted"], rows);
        assert_eq!(db.count(&table).await, rows as i64);
        // The history row is the one the executor committed, completed with
        // the counts of the whole job.
        let history = db
            .scalar(&format!(
                "SELECT count(*) FROM import_history WHERE table_name = '{table}' \
                 AND status = 'committed' AND rows_read = {rows} AND inserted = {rows} \
                 AND length(import_id) = 32"
            ))
            .await;
        assert_eq!(history, 1);

        // Half old, half new rows: the old ones skipped, by the executors'
        // check of the keys already there.
        let second = dir.path().join("second.csv");
        write_rows(&second, rows / 2, rows);
        let report = cluster.import_report(
            second.to_str().unwrap(),
            &table,
            &["--on-duplicate", "skip"],
        );
        assert_eq!(report["inserted"], rows / 2);
        assert_eq!(report["skipped"], rows / 2);
        assert_eq!(report["duplicates_existing"], rows / 2);
        assert_eq!(db.count(&table).await, (rows + rows / 2) as i64);
        // The table's keys were read once, and each check task kept its
        // partition's share: about a quarter each, all of them together
        // (the first import's tasks found an empty table).
        let logs = cluster.logs();
        let reads = logs
            .lines()
            .filter(|line| line.contains(&format!("read the {rows} existing keys")))
            .count();
        assert_eq!(reads, 1, "{logs}");
        let kept: Vec<u64> = logs
            .lines()
            .filter(|line| line.contains("share of 4") && !line.contains("(0 keys"))
            .filter_map(|line| {
                let held = line.split(" (").nth(1)?.split(' ').next()?;
                held.parse().ok()
            })
            .collect();
        assert_eq!(kept.len(), 4, "{logs}");
        assert_eq!(kept.iter().sum::<u64>(), rows as u64, "{logs}");
        assert!(kept.iter().all(|&k| k < rows as u64 / 2), "{kept:?}");

        // The first file again, forced past the file check: every row is a
        // duplicate, the import is refused whole, nothing is written.
        let output = cluster
            .import(first.to_str().unwrap(), &table, &["--force", "-q"])
            .output()
            .unwrap();
        assert_eq!(output.status.code(), Some(3));
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(
            stderr.contains(&format!("{rows} records overlap with existing data")),
            "{stderr}"
        );
        assert_eq!(db.count(&table).await, (rows + rows / 2) as i64);

        // The statement form runs there too.
        let third = dir.path().join("third.csv");
        write_rows(&third, 2 * rows, 1000);
        let statement = format!("IMPORT INTO {table} FROM '{}'", third.display());
        let report = cluster.report(&["sql", &statement, "--json"]);
        assert_eq!(report["inserted"], 1000);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_executor_commits_once_or_not_at_all() {
    let db = TestDb::new(Kind::Postgres).await;
    let mut cluster = Cluster::start(2, &[]);
    let dir = TempDir::new();
    let table = db.table("killed");
    db.run(async {
        let rows = 400_000;
        let file = dir.path().join("rows.csv");
        write_rows(&file, 0, rows);
        let import = cluster
            .import(file.to_str().unwrap(), &table, &["--json", "-q"])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        // While the source is read and the keys are checked.
        std::thread::sleep(Duration::from_millis(1500));
        cluster.executors[0].kill().unwrap();
        let output = import.wait_with_output().unwrap();
        let count = if db.exists(&table).await {
            db.count(&table).await
        } else {
            0
        };
        if output.status.success() {
            // Committed once: every row once, as the report says.
            assert_eq!(json(&output)["inserted"], rows);
            assert_eq!(count, rows as i64);
            let distinct = db
                .scalar(&format!("SELECT count(DISTINCT email) FROM \"{table}\""))
                .await;
            assert_eq!(distinct, rows as i64);
        } else {
            // Failed: nothing written.
            assert_eq!(count, 0, "{}", String::from_utf8_lossy(&output.stderr));
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn write_retried_after_its_commit_reports_the_commit() {
    let db = TestDb::new(Kind::Postgres).await;
    let table = db.table("retried");
    let cluster = Cluster::start(1, &[("ATLAS_TEST_FAIL_AFTER_COMMIT", table.as_str())]);
    let dir = TempDir::new();
    db.run(async {
        let rows = 20_000;
        let file = dir.path().join("rows.csv");
        write_rows(&file, 0, rows);
        let report = cluster.import_report(file.to_str().unwrap(), &table, &[]);
        assert_eq!(report["status"], "committed");
        assert_eq!(report["inserted"], rows);
        // Written once, recorded once, although the write ran twice.
        assert_eq!(db.count(&table).await, rows as i64);
        let committed = db
            .scalar(&format!(
                "SELECT count(*) FROM import_history WHERE table_name = '{table}' \
                 AND status = 'committed'"
            ))
            .await;
        assert_eq!(committed, 1);
        assert_eq!(db.file_imports(&table).await, 1);
        // The first attempt did fail after committing.
        let logs = cluster.logs();
        assert!(logs.contains("injected"), "{logs}");
    })
    .await;
}

/// A source on an object store is read by the executors from the store (each
/// with its own credentials, the hash checked), not from the planner's copy.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn object_store_source_read_by_the_executors() {
    let db = TestDb::new(Kind::Postgres).await;
    let moto = crate::stores::Moto::start();
    let env = moto.env();
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let cluster = Cluster::start(2, &env);
    let dir = TempDir::new();
    db.run(async {
        let rows = 50_000;
        let csv = dir.path().join("rows.csv");
        write_rows(&csv, 0, rows);
        let n: Vec<i64> = (0..rows as i64).collect();
        let emails: Vec<String> = n.iter().map(|i| format!("user{i}@example.com")).collect();
        let batch = datafusion::arrow::array::RecordBatch::try_from_iter([
            (
                "email",
                std::sync::Arc::new(datafusion::arrow::array::StringArray::from(emails))
                    as datafusion::arrow::array::ArrayRef,
            ),
            (
                "n",
                std::sync::Arc::new(datafusion::arrow::array::Int64Array::from(n)) as _,
            ),
        ])
        .unwrap();
        let parquet = dir.parquet("rows.parquet", &batch);
        // CSV by atlas-import's reader, Parquet by DataFusion's: each
        // fetched by the executor that reads it.
        for (file, table) in [(csv, "from_s3"), (parquet, "from_s3_parquet")] {
            let table = db.table(table);
            let name = file.file_name().unwrap().to_str().unwrap();
            let url = format!("s3://atlas/cluster/{name}");
            moto.put(&format!("cluster/{name}"), &std::fs::read(&file).unwrap());
            let report = succeeded(
                cluster
                    .import(&url, &table, &["--json", "-q"])
                    .envs(env.iter().copied()),
            );
            assert_eq!(report["inserted"], rows);
            assert_eq!(report["source"], url.as_str());
            assert_eq!(db.count(&table).await, rows as i64);
            let logs = cluster.logs();
            assert!(
                logs.contains(&format!("Fetched {url} to read it here")),
                "{logs}"
            );
        }
    })
    .await;
}
