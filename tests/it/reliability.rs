//! docs/ARCHITECTURE.md §2 under load and faults, through the real binary: concurrent
//! imports of overlapping files, a killed connection, a killed process,
//! Ctrl-C, and a source cut short.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use crate::cli::{binary, json as report};
use crate::common::{Kind, TempDir, TestDb, create, quoted};
use crate::on_every_database;

/// Imports processes running at once.
const PROCESSES: usize = 8;
/// Rows per file; neighbouring files share half of their keys.
const ROWS: usize = 2_000;

fn import_command(db: &TestDb, file: &Path, table: &str, extra: &[&str]) -> Command {
    let mut command = Command::new(binary());
    command
        .args([
            "import",
            file.to_str().unwrap(),
            "--table",
            table,
            "--db",
            &db.url,
        ])
        .args(["--key", "k", "--json"])
        .args(extra)
        .env_remove("DATABASE_URL")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    command
}

/// Writes the overlapping files: file `i` holds keys `i*ROWS/2 .. i*ROWS/2+ROWS`.
fn overlapping_files(dir: &TempDir) -> Vec<PathBuf> {
    (0..PROCESSES)
        .map(|i| {
            let mut csv = String::from("k,v\n");
            let first = i * ROWS / 2;
            for k in first..first + ROWS {
                csv.push_str(&format!("{k},\"file {i}, row {k}\"\n"));
            }
            dir.file(&format!("part{i}.csv"), &csv)
        })
        .collect()
}

/// Every key of `table`, failing if one appears twice.
async fn keys_once(db: &TestDb, table: &str) -> HashSet<String> {
    let rows = db.rows(table, &["k"]).await;
    let mut keys = HashSet::new();
    for row in rows {
        let key = row[0].clone().unwrap();
        assert!(
            keys.insert(key.clone()),
            "key {key} appears twice in {table}"
        );
    }
    keys
}

/// Starts every process, reads the table while they run, and waits for them.
async fn run_concurrently(db: &TestDb, table: &str, files: &[PathBuf], mode: &str) -> Vec<Output> {
    let children: Vec<Child> = files
        .iter()
        .map(|f| {
            import_command(db, f, table, &["--on-duplicate", mode])
                .spawn()
                .unwrap()
        })
        .collect();
    // Readers are not blocked: counting the rows succeeds while imports run
    // (the table may not exist yet at first).
    let mut reads = 0;
    let started = Instant::now();
    while reads < 3 && started.elapsed() < Duration::from_secs(30) {
        if db.exists(table).await {
            db.count(table).await;
            reads += 1;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    children
        .into_iter()
        .map(|c| c.wait_with_output().unwrap())
        .collect()
}

async fn concurrent_overlapping_imports(db: &TestDb) {
    let dir = TempDir::new();
    let files = overlapping_files(&dir);
    let all_keys = PROCESSES * ROWS / 2 + ROWS / 2;

    // skip: every import commits; together they hold every key once.
    let table = db.table("concurrent_skip");
    let outputs = run_concurrently(db, &table, &files, "skip").await;
    let mut inserted = 0;
    for output in &outputs {
        assert_eq!(
            output.status.code(),
            Some(0),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
        let r = report(output);
        assert_eq!(
            r["inserted"].as_u64().unwrap() + r["skipped"].as_u64().unwrap(),
            ROWS as u64
        );
        inserted += r["inserted"].as_u64().unwrap();
    }
    let keys = keys_once(db, &table).await;
    assert_eq!(keys.len(), all_keys);
    assert_eq!(inserted, keys.len() as u64);

    // error: each import commits whole or is refused whole.
    let table = db.table("concurrent_error");
    let outputs = run_concurrently(db, &table, &files, "error").await;
    let mut committed = 0;
    for output in &outputs {
        match output.status.code() {
            Some(0) => {
                assert_eq!(report(output)["inserted"], ROWS as u64);
                committed += 1;
            }
            Some(3) => assert_eq!(report(output)["inserted"], 0),
            other => panic!(
                "exit {other:?}: {}",
                String::from_utf8_lossy(&output.stderr)
            ),
        }
    }
    assert!(committed >= 1);
    let keys = keys_once(db, &table).await;
    assert_eq!(keys.len(), committed * ROWS);
    assert_eq!(db.file_imports(&table).await, committed as i64);
}

on_every_database!(concurrent_overlapping_imports);

/// One file imported by several processes at once. A local import hashes
/// its file beside the write and checks it at the commit, under the
/// table's lock: one import commits, every other is refused as the file
/// imported before (exit 4), whether its rows were all skipped (nothing
/// else failed) or all refused as duplicates (a file imported before is
/// the answer that counts).
async fn concurrent_imports_of_one_file(db: &TestDb) {
    let dir = TempDir::new();
    let file = big_file(&dir, 20_000);
    for mode in ["skip", "error"] {
        let table = db.table(&format!("concurrent_one_file_{mode}"));
        let files = vec![file.clone(); 4];
        let outputs = run_concurrently(db, &table, &files, mode).await;
        let mut codes: Vec<Option<i32>> = outputs.iter().map(|o| o.status.code()).collect();
        codes.sort();
        assert_eq!(
            codes,
            [Some(0), Some(4), Some(4), Some(4)],
            "{mode}: {:?}",
            outputs
                .iter()
                .map(|o| String::from_utf8_lossy(&o.stderr).into_owned())
                .collect::<Vec<_>>()
        );
        for output in outputs.iter().filter(|o| o.status.code() == Some(4)) {
            let stderr = String::from_utf8_lossy(&output.stderr);
            assert!(
                stderr.contains(&format!(
                    "File has already been imported to table '{table}'."
                )),
                "{mode}: {stderr}"
            );
        }
        assert_eq!(keys_once(db, &table).await.len(), 20_000, "{mode}");
        assert_eq!(db.file_imports(&table).await, 1, "{mode}");
    }
}

on_every_database!(concurrent_imports_of_one_file);

/// A file big enough that the write phase can be caught while it runs.
fn big_file(dir: &TempDir, rows: usize) -> PathBuf {
    let mut csv = String::with_capacity(rows * 40);
    csv.push_str("k,v\n");
    for k in 0..rows {
        csv.push_str(&format!("{k},\"value, {k}\"\n"));
    }
    dir.file("big.csv", &csv)
}

/// Waits until `ready` says the import is writing; panics after a minute.
async fn until(mut ready: impl AsyncFnMut() -> bool) {
    let started = Instant::now();
    while !ready().await {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "the import never reached its write phase"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// The backend pid of a running `COPY` into `table`, if any.
async fn copying_backend(db: &TestDb, table: &str) -> Option<i32> {
    use sqlx::Connection;
    let mut c = sqlx::PgConnection::connect(&db.url).await.unwrap();
    sqlx::query_scalar(
        "SELECT pid FROM pg_stat_activity WHERE state = 'active' AND query LIKE 'COPY \"' || $1 || '\"%FROM STDIN%'",
    )
    .bind(table)
    .fetch_optional(&mut c)
    .await
    .unwrap()
}

/// Imports `file` into `table` in chunks of `chunk_rows` and, once
/// `writing` finds the import's server connection taking rows (and gives the
/// statement that ends it), ends that connection; returns the import's
/// output, checked to be a database error (exit 6).
async fn import_with_connection_killed(
    db: &TestDb,
    file: &Path,
    table: &str,
    chunk_rows: &str,
    mut writing: impl AsyncFnMut() -> Option<String>,
) -> Output {
    let child = import_command(db, file, table, &["--chunk-rows", chunk_rows])
        .spawn()
        .unwrap();
    let mut kill = None;
    until(async || {
        kill = writing().await;
        kill.is_some()
    })
    .await;
    db.exec(&kill.unwrap()).await;
    let output = child.wait_with_output().unwrap();
    assert_eq!(
        output.status.code(),
        Some(6),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

/// The connection is killed while the rows are being copied: a database
/// error (exit 6), and the table and `file_imports` as they were.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_connection_rolls_back() {
    let db = TestDb::new(Kind::Postgres).await;
    db.run(async {
        let dir = TempDir::new();
        let file = big_file(&dir, 300_000);
        let table = db.table("killed_connection");
        import_with_connection_killed(&db, &file, &table, "1000", async || {
            copying_backend(&db, &table)
                .await
                .map(|pid| format!("SELECT pg_terminate_backend({pid})"))
        })
        .await;
        assert!(!db.exists(&table).await, "the new table was rolled back");
        assert_eq!(db.file_imports(&table).await, 0);
    })
    .await;
}

/// The same on MariaDB, whose rows go by array binding with requests
/// pipelined on a socket the writer borrows from the connection's relay:
/// the server's connection killed mid-write ends the import with a database
/// error (exit 6), and the existing table and `file_imports` are as they were.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_connection_rolls_back_on_mariadb() {
    let db = TestDb::new(Kind::MySql).await;
    db.run(async {
        let dir = TempDir::new();
        let file = big_file(&dir, 1_000_000);
        let table = db.table("killed_connection");
        // An existing table: MySQL commits the DDL of a table it creates,
        // and a lost connection cannot drop it again.
        create(&db, &table, "k BIGINT, v TEXT").await;
        db.exec(&format!(
            "INSERT INTO \"{table}\" (k, v) VALUES (-1, 'before')"
        ))
        .await;
        let writing = format!(
            "SELECT CAST(COALESCE(MAX(ID), 0) AS SIGNED) FROM information_schema.PROCESSLIST \
             WHERE INFO LIKE 'INSERT INTO \"{table}\"%' OR INFO LIKE 'LOAD DATA%\"{table}\"%'"
        );
        let output = import_with_connection_killed(&db, &file, &table, "10000", async || {
            let connection = db.scalar(&writing).await;
            (connection != 0).then(|| format!("KILL CONNECTION {connection}"))
        })
        .await;
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(
            stderr.contains(&format!("while inserting into '{table}'"))
                || stderr.contains(&format!("while loading rows into '{table}'")),
            "names the write: {stderr}"
        );
        assert_eq!(db.count(&table).await, 1, "only the row from before");
        assert_eq!(db.file_imports(&table).await, 0);
    })
    .await;
}

/// The process is killed (SIGKILL, then SIGINT) mid-import: nothing stays,
/// and the next import of the same file succeeds.
async fn killed_process_leaves_nothing(db: &TestDb) {
    let dir = TempDir::new();
    let file = big_file(&dir, 300_000);
    let table = db.table("killed_process");
    // An existing table, so that what stays is visible (and MySQL's
    // created-then-committed table is out of the picture).
    create(db, &table, "k BIGINT, v TEXT").await;
    db.exec(&format!(
        "INSERT INTO \"{table}\" (k, v) VALUES (-1, 'before')"
    ))
    .await;
    for signal in ["KILL", "INT"] {
        // Chunk lines are debug detail: -v shows them.
        let mut child = import_command(db, &file, &table, &["--chunk-rows", "1000", "-v"])
            .spawn()
            .unwrap();
        // The log says when rows are being written.
        let stderr = child.stderr.take().unwrap();
        let (lines, seen) = std::sync::mpsc::channel::<String>();
        let reader = std::thread::spawn(move || {
            use std::io::BufRead;
            for line in std::io::BufReader::new(stderr)
                .lines()
                .map_while(Result::ok)
            {
                if lines.send(line).is_err() {
                    break;
                }
            }
        });
        let mut log = Vec::new();
        loop {
            let line = seen
                .recv_timeout(Duration::from_secs(60))
                .expect("the import never logged a written chunk");
            let writing = line.contains("Inserted chunk");
            log.push(line);
            if writing {
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
        let status = Command::new("kill")
            .args([format!("-{signal}"), child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
        let exit = child.wait().unwrap();
        reader.join().unwrap();
        log.extend(seen.try_iter());
        let log = log.join("\n");
        assert!(
            !log.contains("committed"),
            "the import finished before SIG{signal}: {log}"
        );
        if signal == "INT" && exit.code().is_some() {
            assert_eq!(exit.code(), Some(130), "{log}");
            assert!(log.contains("rolled back"), "{log}");
        }
        assert_eq!(
            db.rows(&table, &["k", "v"]).await,
            vec![vec![Some("-1".into()), Some("before".into())]],
            "after SIG{signal}"
        );
        assert_eq!(db.file_imports(&table).await, 0, "after SIG{signal}");
    }
    let output = import_command(db, &file, &table, &[]).output().unwrap();
    assert_eq!(
        output.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert_eq!(db.count(&table).await, 300_001);
}

/// A source cut short (a CSV ending inside a quoted field, a truncated
/// Parquet file) fails naming the file, and writes nothing.
async fn truncated_sources_write_nothing(db: &TestDb) {
    let dir = TempDir::new();
    let table = db.table("truncated");
    let csv = dir.file("cut.csv", "k,v\n1,\"fine\"\n2,\"cut in the mid");
    let output = import_command(db, &csv, &table, &[]).output().unwrap();
    assert_eq!(output.status.code(), Some(5));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("cut.csv") && stderr.contains("never closed"),
        "{stderr}"
    );
    assert!(!db.exists(&table).await);

    let parquet = Path::new(env!("CARGO_MANIFEST_DIR")).join("plans/data/sales");
    let some_file = walk(&parquet)
        .into_iter()
        .find(|p| p.extension().is_some_and(|e| e == "parquet"))
        .expect("a parquet file under plans/data/sales");
    let bytes = std::fs::read(&some_file).unwrap();
    let cut = dir.path().join("cut.parquet");
    std::fs::write(&cut, &bytes[..bytes.len() / 2]).unwrap();
    let output = import_command(db, &cut, &table, &[]).output().unwrap();
    assert_eq!(
        output.status.code(),
        Some(5),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(String::from_utf8_lossy(&output.stderr).contains("cut.parquet"));
    assert!(!db.exists(&table).await);
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            out.extend(walk(&path));
        } else {
            out.push(path);
        }
    }
    out
}

on_every_database!(
    killed_process_leaves_nothing,
    truncated_sources_write_nothing
);

/// A million rows of 190-byte values (a 197 MB file) import under an 80 MB
/// memory limit (the check's fingerprints of a million keys take about 50 MB),
/// which holding the file, as the original service did, would exceed; under 4 MB the import fails naming the limit and writes nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bounded_memory() {
    let db = TestDb::new(Kind::Postgres).await;
    db.run(async {
        let dir = TempDir::new();
        let path = dir.path().join("million.csv");
        {
            use std::io::Write;
            let mut out = std::io::BufWriter::new(std::fs::File::create(&path).unwrap());
            writeln!(out, "k,v").unwrap();
            let pad = "x".repeat(180);
            for k in 0..1_000_000 {
                writeln!(out, "{k},\"{pad} {k}\"").unwrap();
            }
        }
        let size = std::fs::metadata(&path).unwrap().len();
        assert!(size > 2 * (80 << 20), "the file is {size} bytes");

        let small = db.table("memory_small");
        let output = import_command(&db, &path, &small, &["--memory-limit", "4MB"])
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(1), "{stderr}");
        assert!(stderr.contains("limit of 4 MB"), "{stderr}");
        assert!(!db.exists(&small).await);

        let table = db.table("memory_ok");
        let output = import_command(&db, &path, &table, &["--memory-limit", "80MB"])
            .output()
            .unwrap();
        assert_eq!(
            output.status.code(),
            Some(0),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
        assert_eq!(report(&output)["inserted"], 1_000_000);
        assert_eq!(db.count(&table).await, 1_000_000);
    })
    .await;
}

/// Table and column names with quotes, semicolons, spaces, unicode and SQL
/// keywords are names everywhere (create, lock, key scan, insert, upsert,
/// metadata), never SQL.
async fn hostile_names_are_quoted(db: &TestDb) {
    let dir = TempDir::new();
    let victim = db.table("victim");
    db.exec(&format!("CREATE TABLE \"{victim}\" (k TEXT)"))
        .await;
    // (MySQL names are at most 64 characters.)
    let table = format!("{} \"select\"; --ü", db.table("h"));
    let column = format!("x\"; DROP TABLE {victim}; --");
    let csv = format!(
        "\"{}\",order,\"naïve col\"\na,1,x\nb,2,y\n",
        column.replace('"', "\"\"")
    );
    let file = dir.file("hostile.csv", &csv);
    // Names are written as SQL writes them: the hostile one quoted, its
    // quotes doubled; `--names keep` keeps the hostile column names exactly.
    let quoted_table = quoted(&table);
    for mode in ["error", "update"] {
        let output = Command::new(binary())
            .args([
                "import",
                file.to_str().unwrap(),
                "--table",
                &quoted_table,
                "--names",
                "keep",
                "--db",
                &db.url,
            ])
            .args([
                "--key",
                &column,
                "--on-duplicate",
                mode,
                "--force",
                "--json",
            ])
            .env_remove("DATABASE_URL")
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        if mode == "error" {
            assert_eq!(output.status.code(), Some(0), "{stderr}");
        } else {
            assert_eq!(output.status.code(), Some(0), "{stderr}");
            assert_eq!(report(&output)["updated"], 2, "{stderr}");
        }
    }
    assert!(db.exists(&victim).await, "the victim table was dropped");
    assert_eq!(
        db.rows(&table, &[&column, "order", "naïve col"]).await,
        vec![
            vec![Some("a".into()), Some("1".into()), Some("x".into())],
            vec![Some("b".into()), Some("2".into()), Some("y".into())],
        ]
    );
    db.drop_table(&table).await;
}

on_every_database!(hostile_names_are_quoted);

/// A database URL's password appears nowhere: not in errors, reports, logs
/// or import_history.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn passwords_never_leak() {
    let db = TestDb::new(Kind::Postgres).await;
    db.run(async {
        let dir = TempDir::new();
        let table = db.table("secrets");
        // Trust authentication accepts any password.
        let url = db.url.replacen("postgres@", "postgres:s3cr3t-pw@", 1);
        assert!(url.contains("s3cr3t-pw"), "{url}");
        let file = dir.file("s.csv", "k\n1\n1\n");
        for extra in [&[][..], &["--explain"][..]] {
            let output = Command::new(binary())
                .args([
                    "import",
                    file.to_str().unwrap(),
                    "--table",
                    &table,
                    "--db",
                    &url,
                    "--json",
                ])
                .args(extra)
                .env("RUST_LOG", "debug")
                .env_remove("DATABASE_URL")
                .output()
                .unwrap();
            let all = format!(
                "{}{}",
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            );
            assert!(!all.contains("s3cr3t-pw"), "{all}");
        }
        // A server that refuses: the message names the URL, masked.
        let refused = "postgres://postgres:s3cr3t-pw@127.0.0.1:1/test";
        let output = Command::new(binary())
            .args([
                "import",
                file.to_str().unwrap(),
                "--table",
                &table,
                "--db",
                refused,
            ])
            .env_remove("DATABASE_URL")
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(6), "{stderr}");
        assert!(
            !stderr.contains("s3cr3t-pw") && stderr.contains("***"),
            "{stderr}"
        );
        let history = db
            .rows_where(
                "import_history",
                &["source", "error"],
                &format!("table_name = '{table}'"),
            )
            .await;
        assert!(!history.is_empty());
        assert!(!format!("{history:?}").contains("s3cr3t-pw"));
    })
    .await;
}

/// Broken CSV files: each a clear error naming what and where (exit 5, or 6
/// where the database refuses), and nothing written.
#[test]
fn hostile_csv_files() {
    let dir = TempDir::new();
    let db = format!("sqlite://{}", dir.path().join("h.db").display());
    let wide_header: Vec<String> = (0..5000).map(|i| format!("c{i}")).collect();
    let wide_row: Vec<String> = (0..5000).map(|i| i.to_string()).collect();
    let cases: Vec<(&str, Vec<u8>, i32, &str)> = vec![
        (
            "ragged",
            b"a,b\n1,2\n3,4,5\n".to_vec(),
            5,
            "line 3 has 3 fields, but the header has 2",
        ),
        (
            "unterminated",
            b"a,b\n1,\"open\n2,3\n".to_vec(),
            5,
            "starts on line 2 is never closed",
        ),
        (
            "invalid_utf8",
            b"a,b\n1,\xff\xfe\n".to_vec(),
            5,
            "line 2, column 'b': the value is not valid UTF-8",
        ),
        ("empty", Vec::new(), 5, "the file is empty"),
        ("header_only", b"a,b\n".to_vec(), 5, "no data rows"),
        (
            "duplicate_header",
            b"a,a\n1,2\n".to_vec(),
            5,
            "names column 'a' twice",
        ),
        (
            "wide",
            format!("{}\n{}\n", wide_header.join(","), wide_row.join(",")).into_bytes(),
            6,
            "too many columns",
        ),
    ];
    for (name, content, code, message) in cases {
        let path = dir.path().join(format!("{name}.csv"));
        std::fs::write(&path, content).unwrap();
        let output = Command::new(binary())
            .args([
                "import",
                path.to_str().unwrap(),
                "--table",
                name,
                "--db",
                &db,
            ])
            .env_remove("DATABASE_URL")
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(code), "{name}: {stderr}");
        assert!(stderr.contains(message), "{name}: {stderr}");
        assert!(
            stderr.contains(&format!("{name}.csv")) || code == 6,
            "{name}: {stderr}"
        );
    }
    // Nothing was written: no table exists but the metadata tables.
    assert_eq!(
        sqlite_tables(&dir.path().join("h.db")),
        ["file_imports", "import_history", "sqlite_sequence"]
    );

    // BOM and CRLF line ends are read as what they are; a 10 MB field too.
    let path = dir.path().join("bom_crlf.csv");
    let mut content = b"\xef\xbb\xbfa,b\r\n1,x\r\n2,".to_vec();
    content.extend(std::iter::repeat_n(b'y', 10 << 20));
    content.extend(b"\r\n");
    std::fs::write(&path, content).unwrap();
    let output = Command::new(binary())
        .args([
            "import",
            path.to_str().unwrap(),
            "--table",
            "fine",
            "--db",
            &db,
            "--json",
        ])
        .env_remove("DATABASE_URL")
        .output()
        .unwrap();
    assert_eq!(
        output.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert_eq!(report(&output)["inserted"], 2);
}

/// Values that cannot be stored are bad values naming row, column and value,
/// and nothing is written (each case is a file of one good row, then the bad one).
async fn hostile_values(db: &TestDb) {
    let dir = TempDir::new();
    let table = db.table("hostile_values");
    create(
        db,
        &table,
        "small SMALLINT, big BIGINT, n INTEGER, d DATE, t TIMESTAMP NULL, code VARCHAR(3)",
    )
    .await;
    let mut cases = vec![
        ("big", "99999999999999999999"),
        ("n", "NaN"),
        ("n", "inf"),
        ("n", "1e400"),
        ("d", "2024-02-30"),
        ("t", "2024-13-01 10:00:00"),
    ];
    if db.kind != Kind::Sqlite {
        // SQLite has no 16-bit integers and no length limits.
        cases.push(("small", "40000"));
        cases.push(("code", "abcd"));
    }
    for (column, value) in cases {
        let csv =
            format!("{column}\n1\n{value}\n").replace("\n1\n", &format!("\n{}\n", good(column)));
        let path = dir.file(&format!("{column}.csv"), &csv);
        let err = atlas_import::ImportBuilder::new(std::sync::Arc::clone(&db.db), &path, &table)
            .with_force(true)
            .execute()
            .await
            .unwrap_err();
        match &err {
            atlas_import::AtlasError::BadValue {
                row,
                column: c,
                value: v,
                ..
            } => {
                assert_eq!((*row, c.as_str(), v.as_str()), (2, column, value), "{err}");
            }
            other => panic!("{column} = {value}: expected a bad value, got {other}"),
        }
        assert_eq!(db.count(&table).await, 0, "{column} = {value}");
    }
}

/// A value that fits `column` of `hostile_values`.
fn good(column: &str) -> &'static str {
    match column {
        "d" => "2024-02-29",
        "t" => "2024-02-29 10:00:00",
        "code" => "abc",
        _ => "1",
    }
}

on_every_database!(hostile_values);

/// Paths that cannot be written or read fail before any data moves.
#[test]
fn unusable_paths_fail_first() {
    let dir = TempDir::new();
    let db = format!("sqlite://{}", dir.path().join("p.db").display());
    let file = dir.file("p.csv", "k,n\na,x\n");
    let output = Command::new(binary())
        .args([
            "import",
            file.to_str().unwrap(),
            "--table",
            "p",
            "--db",
            &db,
        ])
        .args([
            "--on-bad-value",
            "reject",
            "--reject-file",
            "/nonexistent/dir/r.csv",
        ])
        .env_remove("DATABASE_URL")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_ne!(output.status.code(), Some(0), "{stderr}");
    assert!(stderr.contains("/nonexistent/dir/r.csv"), "{stderr}");
    assert!(!sqlite_tables(&dir.path().join("p.db")).contains(&"p".to_string()));

    let output = Command::new(binary())
        .args(["run", "/nonexistent/plan.sql", "--db", &db])
        .env_remove("DATABASE_URL")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("cannot read plan file '/nonexistent/plan.sql'"),
        "{stderr}"
    );
}

/// The tables of an SQLite file, sorted (empty when the file does not exist).
fn sqlite_tables(path: &Path) -> Vec<String> {
    if !path.exists() {
        return Vec::new();
    }
    let script = format!(
        "import sqlite3\nfor r in sorted(sqlite3.connect({:?}).execute(\"SELECT name FROM sqlite_master WHERE type='table'\")): print(r[0])",
        path.display().to_string()
    );
    let output = Command::new("python3")
        .args(["-c", &script])
        .output()
        .unwrap();
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .map(String::from)
        .collect()
}

/// An HTTP server that promises 1 MB and drops the connection after 100
/// bytes: the download fails naming the URL, and nothing is written.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropped_download_writes_nothing() {
    let db = TestDb::new(Kind::Sqlite).await;
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let server = std::thread::spawn(move || {
        use std::io::{Read, Write};
        // Serve a few requests (a client may retry), each cut short.
        listener.set_nonblocking(false).unwrap();
        for stream in listener.incoming().take(8) {
            let Ok(mut stream) = stream else { break };
            let mut request = [0u8; 4096];
            let _ = stream.read(&mut request);
            let mut body = String::from("k,v\n");
            while body.len() < 100 {
                body.push_str("1,\"a value\"\n");
            }
            let _ = write!(
                stream,
                "HTTP/1.1 200 OK\r\nContent-Length: 1048576\r\nContent-Type: text/csv\r\n\r\n{body}"
            );
            let _ = stream.flush();
            // Dropping the stream closes the connection mid-body.
        }
    });
    let table = db.table("dropped");
    let url = format!("http://127.0.0.1:{port}/cut.csv");
    let err = atlas_import::ImportBuilder::new(std::sync::Arc::clone(&db.db), &url, &table)
        .execute()
        .await
        .unwrap_err();
    let message = err.to_string();
    assert!(message.contains(&url), "{message}");
    assert!(!db.exists(&table).await);
    assert_eq!(db.file_imports(&table).await, 0);
    drop(server);
}

/// A table name with a dot is one name in the current schema: it cannot
/// reach another schema.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dotted_table_name_stays_in_its_schema() {
    let db = TestDb::new(Kind::Postgres).await;
    db.run(async {
        let dir = TempDir::new();
        let schema = db.table("other_schema");
        db.exec(&format!("CREATE SCHEMA IF NOT EXISTS \"{schema}\""))
            .await;
        db.exec(&format!("CREATE TABLE \"{schema}\".t (k TEXT)"))
            .await;
        let file = dir.file("d.csv", "k\na\n");
        // schema.t is the table t of that schema.
        let report = atlas_import::ImportBuilder::new(
            std::sync::Arc::clone(&db.db),
            &file,
            format!("{schema}.t"),
        )
        .execute()
        .await
        .unwrap();
        assert!(!report.created_table);
        let other = db
            .scalar(&format!("SELECT COUNT(*) FROM \"{schema}\".t"))
            .await;
        assert_eq!(other, 1);
        // A quoted name with a dot is one name, in the current schema.
        let dotted = format!("{schema}.t");
        let report =
            atlas_import::ImportBuilder::new(std::sync::Arc::clone(&db.db), &file, quoted(&dotted))
                .execute()
                .await
                .unwrap();
        assert!(report.created_table);
        assert_eq!(db.count(&dotted).await, 1);
        db.exec(&format!("DROP SCHEMA \"{schema}\" CASCADE")).await;
        db.drop_table(&dotted).await;
    })
    .await;
}

/// An `import_history` made before imports had ids (no `import_id` column)
/// gets the column on the next import and keeps its rows.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_from_before_import_ids_gains_the_column() {
    let db = TestDb::new(Kind::Sqlite).await;
    let dir = TempDir::new();
    let table = db.table("history_ids");
    db.run(async {
        db.exec(
            "CREATE TABLE import_history (id INTEGER PRIMARY KEY AUTOINCREMENT, \
             started_at TIMESTAMP, finished_at TIMESTAMP, source VARCHAR(1000), \
             table_name VARCHAR(255) NOT NULL, key_columns VARCHAR(1000), \
             on_duplicate VARCHAR(16), status VARCHAR(32) NOT NULL, rows_read INTEGER, \
             inserted INTEGER, updated INTEGER, skipped INTEGER, duplicates INTEGER, \
             rejected INTEGER, file_hash TEXT, error TEXT); \
             INSERT INTO import_history (table_name, status) VALUES ('older', 'committed')",
        )
        .await;
        let path = dir.file("rows.csv", "email\na@x.com\nb@x.com\n");
        let report = crate::common::import(&db, &path, &table)
            .execute()
            .await
            .unwrap();
        assert_eq!(report.inserted, 2);
        assert_eq!(db.scalar("SELECT count(*) FROM import_history").await, 2);
        assert_eq!(
            db.scalar(&format!(
                "SELECT count(*) FROM import_history WHERE table_name = '{table}' \
                 AND length(import_id) = 32"
            ))
            .await,
            1
        );
    })
    .await;
}
