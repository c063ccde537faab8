//! The real `atlas-import` binary: exit codes, messages and `--json`.

use std::path::PathBuf;
use std::process::{Command, Output};

use crate::common::{Kind, TempDir, TestDb, postgres_url};

/// The `atlas-import` binary, which `cargo test` builds for these tests (it
/// is this package's binary).
pub(crate) fn binary() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_atlas-import"))
}

fn run(args: &[&str]) -> Output {
    Command::new(binary())
        .args(args)
        .env_remove("DATABASE_URL")
        .env("RUST_LOG", "atlas_import=info")
        .output()
        .unwrap()
}

/// The last report (a JSON line with a `status`) on stdout; query rows that
/// `sql --json` prints between reports are passed over.
pub(crate) fn json(output: &Output) -> serde_json::Value {
    let stdout = String::from_utf8_lossy(&output.stdout);
    stdout
        .lines()
        .rev()
        .map(|line| {
            serde_json::from_str::<serde_json::Value>(line)
                .unwrap_or_else(|e| panic!("{e}: {line}"))
        })
        .find(|value| value.get("status").is_some())
        .unwrap_or_else(|| {
            panic!(
                "no JSON report on stdout: {stdout}; stderr: {}",
                String::from_utf8_lossy(&output.stderr)
            )
        })
}

fn sqlite_url(dir: &TempDir) -> String {
    format!("sqlite://{}", dir.path().join("cli.db").display())
}

/// A SQLite database in `dir` whose table `people` holds `first.csv`
/// (a@x.com and b@x.com), imported by the CLI; its URL and the file's path.
fn people(dir: &TempDir) -> (String, String) {
    let db = sqlite_url(dir);
    let first = dir.file("first.csv", "email,age\na@x.com,1\nb@x.com,2\n");
    let first = first.to_str().unwrap().to_string();
    let out = run(&["import", &first, "--table", "people", "--db", &db]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    (db, first)
}

/// `import path --table people --key email --on-duplicate skip --json`, and
/// `extra` flags.
fn skip_into_people(db: &str, path: &str, extra: &[&str]) -> Output {
    let mut args = vec![
        "import",
        path,
        "--table",
        "people",
        "--db",
        db,
        "--key",
        "email",
        "--on-duplicate",
        "skip",
        "--json",
    ];
    args.extend_from_slice(extra);
    run(&args)
}

/// `second.csv`: c@x.com (new, twice) and b@x.com (in `people`).
fn overlapping(dir: &TempDir) -> String {
    let second = dir.file("second.csv", "email,age\nc@x.com,3\nb@x.com,2\nc@x.com,3\n");
    second.to_str().unwrap().to_string()
}

#[test]
fn a_committed_import_reports_every_field_as_json() {
    let dir = TempDir::new();
    let db = sqlite_url(&dir);
    let first = dir.file("first.csv", "email,age\na@x.com,1\nb@x.com,2\n");
    let out = run(&[
        "import",
        first.to_str().unwrap(),
        "--table",
        "people",
        "--db",
        &db,
        "--json",
    ]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report = json(&out);
    for field in [
        "status",
        "table",
        "rows_read",
        "inserted",
        "skipped",
        "duplicates_existing",
        "duplicates_in_file",
        "rejected",
        "chunks",
        "partitions",
        "file_hash",
        "elapsed_ms",
    ] {
        assert!(report.get(field).is_some(), "missing {field} in {report}");
    }
    assert_eq!(report["status"], "committed");
    assert_eq!(report["inserted"], 2);
    assert_eq!(report["partitions"], 4);
    assert_eq!(report["file_hash"].as_str().unwrap().len(), 64);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("committed"), "{stderr}");
}

#[test]
fn the_same_file_again_exits_4() {
    let dir = TempDir::new();
    let (db, first) = people(&dir);
    let out = run(&["import", &first, "--table", "people", "--db", &db]);
    assert_eq!(out.status.code(), Some(4));
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .contains("File has already been imported to table 'people'.")
    );
}

#[test]
fn overlapping_rows_exit_3_naming_lines_and_keys() {
    let dir = TempDir::new();
    let (db, _) = people(&dir);
    let second = overlapping(&dir);
    let out = run(&[
        "import", &second, "--table", "people", "--db", &db, "--json",
    ]);
    assert_eq!(out.status.code(), Some(3));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("Duplicate data detected. 1 records overlap with existing data in 1 chunk(s). 1 records repeat earlier rows of the file in 1 chunk(s)."),
        "{stderr}"
    );
    assert!(
        stderr.contains("line 3: email=\"b@x.com\", age=2 already exists"),
        "{stderr}"
    );
    let report = json(&out);
    // The status import_history records, and the class the exit code says.
    assert_eq!(
        (report["status"].as_str(), report["error_class"].as_str()),
        (Some("refused_duplicates"), Some("duplicates"))
    );
    assert_eq!(report["duplicates_existing"], 1);
    assert_eq!(report["duplicates_in_file"], 1);
    assert_eq!(report["inserted"], 0);
}

#[test]
fn skip_with_a_key_exits_0_counting_what_it_left_out() {
    let dir = TempDir::new();
    let (db, _) = people(&dir);
    let second = overlapping(&dir);
    let out = skip_into_people(&db, &second, &[]);
    assert_eq!(out.status.code(), Some(0));
    let report = json(&out);
    assert_eq!(
        (report["inserted"].as_u64(), report["skipped"].as_u64()),
        (Some(1), Some(2))
    );
    let again = json(&skip_into_people(&db, &second, &["--force"]));
    assert_eq!(again["inserted"], 0, "c@x.com is in the table now");
}

#[test]
fn bad_values_and_broken_csv_exit_5_writing_nothing() {
    let dir = TempDir::new();
    let (db, _) = people(&dir);
    let import = |path: &std::path::Path| {
        run(&[
            "import",
            path.to_str().unwrap(),
            "--table",
            "people",
            "--db",
            &db,
        ])
    };
    let bad = dir.file("bad.csv", "email,age\nz@x.com,old\n");
    let out = import(&bad);
    assert_eq!(out.status.code(), Some(5));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("bad.csv, line 2, column 'age': \"old\""),
        "{stderr}"
    );

    let unterminated = dir.file("open.csv", "email,age\nq@x.com,1\n\"r@x.com,2\ns@x.com,3\n");
    let out = import(&unterminated);
    assert_eq!(out.status.code(), Some(5));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("open.csv") && stderr.contains("starts on line 3 is never closed"),
        "{stderr}"
    );
    let ragged = dir.file("ragged.csv", "email,age\nq@x.com,1\nr@x.com,2,extra\n");
    let out = import(&ragged);
    assert_eq!(out.status.code(), Some(5));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("ragged.csv")
            && stderr.contains("line 3 has 3 fields, but the header has 2"),
        "{stderr}"
    );
    // None of them wrote a row: the table holds first.csv's two.
    let everything = dir.file(
        "all.csv",
        "email,age\na@x.com,1\nb@x.com,2\nq@x.com,1\nz@x.com,9\n",
    );
    let out = skip_into_people(&db, everything.to_str().unwrap(), &[]);
    assert_eq!(
        (
            json(&out)["inserted"].as_u64(),
            json(&out)["skipped"].as_u64()
        ),
        (Some(2), Some(2)),
        "q@x.com and z@x.com were never written"
    );
}

#[test]
fn usage_errors_exit_2() {
    let dir = TempDir::new();
    let (db, first) = people(&dir);
    let out = run(&[
        "import",
        "/nonexistent.csv",
        "--table",
        "people",
        "--db",
        &db,
    ]);
    assert_eq!(out.status.code(), Some(2));
    let out = run(&[
        "import",
        &first,
        "--table",
        "people",
        "--db",
        &db,
        "--on-duplicate",
        "maybe",
    ]);
    assert_eq!(out.status.code(), Some(2));
    let out = run(&[
        "import", &first, "--table", "people", "--db", &db, "--key", "nope", "--force",
    ]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("its columns: id, email, age"));
}

#[test]
fn explain_prints_both_operators_with_partitions() {
    let dir = TempDir::new();
    let db = sqlite_url(&dir);
    let file = dir.file("e.csv", "email,age\na@x.com,1\n");
    let out = run(&[
        "import",
        file.to_str().unwrap(),
        "--table",
        "t",
        "--db",
        &db,
        "--key",
        "email",
        "--partitions",
        "3",
        "--chunk-rows",
        "500",
        "--explain",
    ]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let plan = String::from_utf8_lossy(&out.stdout);
    assert!(
        plan.contains("ImportSink: table=t, db=sqlite, on_duplicate=error, chunk_rows=500"),
        "{plan}"
    );
    assert!(plan.contains("DuplicateCheckExec: key=[email]"), "{plan}");
    assert!(plan.contains("partitions=3"), "{plan}");
    assert!(
        plan.contains("RepartitionExec: partitioning=Hash([email@0], 3)"),
        "{plan}"
    );
    // Explaining writes nothing.
    let out = run(&[
        "import",
        file.to_str().unwrap(),
        "--table",
        "t",
        "--db",
        &db,
        "--json",
    ]);
    assert_eq!(json(&out)["created_table"], true);
}

#[tokio::test]
async fn database_errors_exit_6_and_postgres_works_end_to_end() {
    let dir = TempDir::new();
    let file = dir.file("p.csv", "email,age\na@x.com,1\n");
    // Nothing listens on port 1: a database error.
    let out = run(&[
        "import",
        file.to_str().unwrap(),
        "--table",
        "t",
        "--db",
        "postgres://postgres:secret@127.0.0.1:1/test",
    ]);
    assert_eq!(out.status.code(), Some(6));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("secret"), "the password leaked: {stderr}");

    let db = TestDb::new(Kind::Postgres).await;
    let table = db.table("cli");
    let url = postgres_url();
    db.run(async {
        let out = run(&[
            "import",
            file.to_str().unwrap(),
            "--table",
            &table,
            "--db",
            &url,
            "--json",
        ]);
        assert_eq!(
            out.status.code(),
            Some(0),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(json(&out)["inserted"], 1);
        assert_eq!(db.count(&table).await, 1);
    })
    .await;
}

#[test]
fn sql_and_plan_files() {
    let dir = TempDir::new();
    let db = sqlite_url(&dir);
    // The plan shipped in plans/, run twice: the second run skips the file.
    let out = run(&["run", "plans/contacts.sql", "--db", &db, "--json"]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(json(&out)["inserted"], 6);
    let out = run(&["run", "plans/contacts.sql", "--db", &db, "--json"]);
    assert_eq!(out.status.code(), Some(0));
    let report = json(&out);
    assert_eq!(
        (report["status"].as_str(), report["inserted"].as_u64()),
        (Some("skipped_file"), Some(0))
    );

    // A script whose second import fails: the first stays committed, exit 3.
    let a = dir.file("a.csv", "k,v\n1,x\n2,y\n");
    let b = dir.file("b.csv", "k,v\n2,y\n3,z\n");
    let script = format!(
        "IMPORT INTO kv FROM '{}' KEY (k);\nIMPORT INTO kv FROM '{}' KEY (k);\nSELECT 1;",
        a.display(),
        b.display()
    );
    let out = run(&["sql", &script, "--db", &db]);
    assert_eq!(out.status.code(), Some(3));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("statement 2 failed: Duplicate data detected."),
        "{stderr}"
    );
    assert!(
        stderr.contains("imports committed before it stay"),
        "{stderr}"
    );
    // The same end in JSON: the first report, then the failure's line.
    let b_again = dir.file("b2.csv", "k,v\n2,y\n9,q\n");
    let script = format!(
        "IMPORT INTO kv FROM '{}' KEY (k) ON DUPLICATE FILE ALLOW;",
        b_again.display()
    );
    let out = run(&["sql", &script, "--db", &db, "--json"]);
    assert_eq!(out.status.code(), Some(3));
    let failure = json(&out);
    assert_eq!(
        (
            failure["status"].as_str(),
            failure["error_class"].as_str(),
            failure["statement"].as_u64()
        ),
        (Some("refused_duplicates"), Some("duplicates"), Some(1))
    );
    let out = run(&[
        "sql",
        &format!(
            "IMPORT INTO kv FROM '{}' KEY (k) ON DUPLICATE SKIP ON DUPLICATE FILE ALLOW WITH (partitions 2)",
            b.display()
        ),
        "--db",
        &db,
        "--json",
    ]);
    assert_eq!(out.status.code(), Some(0));
    let report = json(&out);
    assert_eq!(
        (
            report["inserted"].as_u64(),
            report["skipped"].as_u64(),
            report["partitions"].as_u64()
        ),
        (Some(1), Some(1), Some(2))
    );

    // EXPLAIN ANALYZE runs the import and shows both plans with the metrics.
    let out = run(&[
        "sql",
        &format!(
            "EXPLAIN ANALYZE IMPORT INTO kv FROM '{}' KEY (k) ON DUPLICATE SKIP ON DUPLICATE FILE ALLOW",
            a.display()
        ),
        "--db",
        &db,
    ]);
    assert_eq!(out.status.code(), Some(0));
    let stdout = String::from_utf8_lossy(&out.stdout);
    for expected in [
        "logical_plan",
        "Import: table=kv, key=[k], on_duplicate=skip",
        "physical_plan",
        "rows_written=0",
        "duplicates_existing=2",
        "0 inserted, 2 skipped",
    ] {
        assert!(stdout.contains(expected), "{expected} in {stdout}");
    }

    // Syntax errors say where and what, exit 2; a missing plan file too.
    let out = run(&["sql", "IMPORT INTO kv\nFROM 'x.csv' KEY k", "--db", &db]);
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("Line: 2") && stderr.contains("Expected: ("),
        "{stderr}"
    );
    let out = run(&["run", "plans/does-not-exist.sql", "--db", &db]);
    assert_eq!(out.status.code(), Some(2));
}

/// The examples build with `cargo test`; run them as a user would.
#[test]
fn examples_run() {
    let examples = binary().parent().unwrap().join("examples");
    for name in ["import_csv", "dataframe_transforms", "lakehouse_etl"] {
        let path = examples.join(name);
        assert!(path.exists(), "{} was not built", path.display());
        let out = Command::new(&path)
            .env_remove("DATABASE_URL")
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{name} failed:\n{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// The breadth flags through the binary: --on-duplicate update,
/// --on-bad-value reject --reject-file, --sheet, --mapping.
#[test]
fn breadth_flags_on_sqlite() {
    let dir = TempDir::new();
    let db = sqlite_url(&dir);
    let first = dir.file("p.csv", "sku,qty\na,1\nb,2\n");
    let out = run(&[
        "import",
        first.to_str().unwrap(),
        "-t",
        "stock",
        "--db",
        &db,
    ]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let update = dir.file("u.csv", "sku,qty\nb,20\nc,x\nd,4\n");
    let rejects = dir.path().join("rejects.csv");
    let out = run(&[
        "import",
        update.to_str().unwrap(),
        "-t",
        "stock",
        "--db",
        &db,
        "--key",
        "sku",
        "--on-duplicate",
        "update",
        "--on-bad-value",
        "reject",
        "--reject-file",
        rejects.to_str().unwrap(),
        "--json",
    ]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report = json(&out);
    assert_eq!(
        (&report["inserted"], &report["updated"], &report["rejected"]),
        (&1.into(), &1.into(), &1.into())
    );
    let rejected = std::fs::read_to_string(&rejects).unwrap();
    assert!(
        rejected.starts_with("sku,qty,source_row,source_line,column,reason\nc,x,2,3,qty,"),
        "{rejected}"
    );

    // reject without a file is a usage error, before anything happens.
    let out = run(&[
        "import",
        update.to_str().unwrap(),
        "-t",
        "stock",
        "--db",
        &db,
        "--on-bad-value",
        "reject",
    ]);
    assert_eq!(out.status.code(), Some(2));

    // A workbook's named sheet.
    let xlsx = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/contacts.xlsx");
    let out = run(&[
        "import",
        xlsx.to_str().unwrap(),
        "-t",
        "book",
        "--db",
        &db,
        "--sheet",
        "Contacts",
        "--key",
        "email",
        "--on-duplicate",
        "skip",
        "--json",
    ]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(json(&out)["inserted"], 3);

    // A mapping file names the table and the key; its message replaces ours.
    let mapping = dir.file(
        "mapping.json",
        r#"{"table_name": "mapped", "mappings": {"code": "sku", "n": "qty"},
            "duplicate_check": {"uniqueness_columns": ["code"], "error_message": "Already there."}}"#,
    );
    let out = run(&[
        "import",
        first.to_str().unwrap(),
        "--mapping",
        mapping.to_str().unwrap(),
        "--db",
        &db,
    ]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let again = dir.file("again.csv", "sku,qty\na,9\n");
    let out = run(&[
        "import",
        again.to_str().unwrap(),
        "--mapping",
        mapping.to_str().unwrap(),
        "--db",
        &db,
    ]);
    assert_eq!(out.status.code(), Some(3));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("Already there. 1 records overlap"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `sql --json` prints each statement's output in order: a query's rows as
/// one JSON object per row, an import's report.
/// A reader that stops reading (`| head -1`) ends the output quietly: no
/// panic, and the exit code is the work's (0 for a query, 4 for a file
/// imported before, its JSON report unread).
#[test]
fn output_into_a_closed_pipe_ends_quietly() {
    use std::process::Stdio;
    let dir = TempDir::new();
    let (db, people_csv) = people(&dir);
    let rows = "SELECT * FROM generate_series(1, 200000)";
    for (args, code) in [
        (vec!["sql", rows, "--db", &db], 0),
        (vec!["sql", rows, "--db", &db, "--json"], 0),
        (
            vec![
                "import",
                &people_csv,
                "--db",
                &db,
                "--table",
                "people",
                "--json",
            ],
            4,
        ),
    ] {
        let mut child = Command::new(binary())
            .args(&args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        // Nobody reads: a write finds the pipe closed.
        drop(child.stdout.take());
        let out = child.wait_with_output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(code), "{args:?}: {stderr}");
        assert!(!stderr.contains("panicked"), "{args:?}: {stderr}");
    }
}

#[test]
fn sql_json_prints_rows_and_reports_in_order() {
    let dir = TempDir::new();
    let db = sqlite_url(&dir);
    let out = run(&[
        "sql",
        "SELECT 1 AS x, 'a' AS y, NULL AS z",
        "--db",
        &db,
        "--json",
    ]);
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        r#"{"x":1,"y":"a","z":null}"#
    );
    let a = dir.file("a.csv", "k\n1\n2\n2\n");
    let script = format!(
        "CHECK IMPORT INTO kv FROM '{0}'; IMPORT INTO kv FROM '{0}' ON DUPLICATE SKIP; \
         SELECT count(*) AS n FROM import_duplicates",
        a.display()
    );
    let out = run(&["sql", &script, "--db", &db, "--json"]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<serde_json::Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 3, "{lines:?}");
    assert_eq!(lines[0]["source_row"], 3);
    assert_eq!(lines[0]["duplicate_of"], "row 2");
    assert_eq!(lines[1]["inserted"], 2);
    assert_eq!(lines[2]["n"], 1);
    let help = run(&["sql", "--help"]);
    assert!(String::from_utf8_lossy(&help.stdout).contains("mysql://"));
}

/// The inferred types show before anything is written; `--infer text` and
/// the dialect flags; a malformed file exits 5 naming its line.
#[test]
fn lossless_flags() {
    let dir = TempDir::new();
    let db = sqlite_url(&dir);
    let file = dir.file(
        "p.csv",
        "phone,n,flag\n+15551234567,12345678901234567890,true\n",
    );
    let path = file.display().to_string();
    let out = run(&["import", &path, "--table", "p", "--db", &db, "--explain"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("if missing creates (phone TEXT, n TEXT, flag BOOLEAN)"),
        "{stdout}"
    );
    let out = run(&[
        "import",
        &path,
        "--table",
        "p",
        "--db",
        &db,
        "--explain",
        "--infer",
        "text",
    ]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("if missing creates (phone TEXT, n TEXT, flag TEXT)"),
        "{stdout}"
    );

    let bad = dir.file("bad.csv", "a,b\n1,\"x\" y\n");
    let out = run(&[
        "import",
        &bad.display().to_string(),
        "--table",
        "b",
        "--db",
        &db,
    ]);
    assert_eq!(out.status.code(), Some(5));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("line 2, column 'b': text after the closing quote"),
        "{stderr}"
    );

    let semi = dir.file("s.txt", "# note\na;b\n1;\\N\n");
    let out = run(&[
        "import",
        &semi.display().to_string(),
        "--table",
        "s",
        "--db",
        &db,
        "--format",
        "csv",
        "--delimiter",
        ";",
        "--comment",
        "#",
        "--null",
        "\\N",
        "--json",
    ]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report = json(&out);
    assert_eq!(
        (
            report["inserted"].as_u64(),
            report["comment_lines"].as_u64()
        ),
        (Some(1), Some(1))
    );
}

/// `schema.table` through the CLI's `--table` and the SQL statements
/// (IMPORT, CHECK, EXPLAIN) on PostgreSQL.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schema_qualified_names_in_the_cli_and_sql() {
    let db = TestDb::new(Kind::Postgres).await;
    let schema = db.table("cli_schema");
    db.exec(&format!("CREATE SCHEMA \"{schema}\"")).await;
    let dir = TempDir::new();
    let file = dir.file("c.csv", "Email,Name\na@x.com,Ann\n");
    let path = file.display().to_string();
    let out = run(&[
        "import",
        &path,
        "--table",
        &format!("{schema}.Contacts"),
        "--db",
        &db.url,
        "--json",
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let report = json(&out);
    let count = db
        .scalar(&format!("SELECT COUNT(*) FROM \"{schema}\".contacts"))
        .await;
    let statements = format!(
        "CHECK IMPORT INTO {schema}.contacts FROM '{path}'; \
         EXPLAIN IMPORT INTO {schema}.contacts FROM '{path}'; \
         IMPORT INTO {schema}.\"Other\" FROM '{path}' OPTIONS (names 'keep')"
    );
    let sql = run(&["sql", &statements, "--db", &db.url]);
    let sql_stdout = String::from_utf8_lossy(&sql.stdout).into_owned();
    let sql_stderr = String::from_utf8_lossy(&sql.stderr).into_owned();
    let kept = db
        .scalar(&format!(
            "SELECT COUNT(*) FROM \"{schema}\".\"Other\" WHERE \"Email\" = 'a@x.com'"
        ))
        .await;
    db.exec(&format!("DROP SCHEMA \"{schema}\" CASCADE")).await;
    db.exec(&format!(
        "DELETE FROM file_imports WHERE table_name LIKE '{schema}.%'"
    ))
    .await;
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert_eq!(report["table"], format!("{schema}.contacts"));
    assert_eq!(count, 1);
    assert_eq!(sql.status.code(), Some(0), "{sql_stderr}");
    assert!(
        sql_stdout.contains(&format!("ImportSink: table={schema}.contacts")),
        "{sql_stdout}"
    );
    assert_eq!(kept, 1, "{sql_stdout}");
}

/// A CSV of `rows` rows and the SQLite URL of a fresh database, in `dir`.
fn many_rows(dir: &TempDir, rows: usize) -> (String, String) {
    let mut csv = String::from("id,email\n");
    for i in 0..rows {
        csv.push_str(&format!("{i},user{i}@example.com\n"));
    }
    let path = dir.file("many.csv", &csv);
    (path.to_str().unwrap().to_string(), sqlite_url(dir))
}

/// Runs the binary with `args` and no RUST_LOG, so its own verbosity flags
/// decide what is logged.
fn run_at_own_level(args: &[&str]) -> Output {
    Command::new(binary())
        .args(args)
        .env_remove("DATABASE_URL")
        .env_remove("RUST_LOG")
        .output()
        .unwrap()
}

/// At the default level a 100-chunk import prints its phase lines only (no
/// line per chunk, a dozen lines at most) and the summary in human units;
/// `-v` adds each chunk's line exactly once; `-q` prints nothing on stderr.
#[test]
fn quiet_by_default_chunks_at_verbose() {
    let dir = TempDir::new();
    let (path, db) = many_rows(&dir, 10_000);
    let args = |table: &str, flag: Option<&str>| {
        let mut args = vec![
            "import".to_string(),
            path.clone(),
            "--table".into(),
            table.into(),
            "--db".into(),
            db.clone(),
            "--chunk-rows".into(),
            "100".into(),
        ];
        args.extend(flag.map(String::from));
        args
    };
    fn strs(v: &[String]) -> Vec<&str> {
        v.iter().map(String::as_str).collect()
    }

    let out = run_at_own_level(&strs(&args("quiet_default", None)));
    let stderr = String::from_utf8_lossy(&out.stderr);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(!stderr.contains("chunk 1 "), "{stderr}");
    assert!(stderr.lines().count() <= 12, "{stderr}");
    assert!(
        stderr.contains("Split 10000 records into 100 chunks"),
        "{stderr}"
    );
    assert!(!stderr.contains('\x1b'), "escape codes on a pipe: {stderr}");
    assert!(
        stdout.contains("10,000 rows read, 10,000 inserted, 0 skipped in ")
            && stdout.contains("rows/s)"),
        "{stdout}"
    );

    let out = run_at_own_level(&strs(&args("verbose", Some("-v"))));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    for chunk in 1..=100 {
        let line = format!("Inserted chunk {chunk} - Total inserted: {}", chunk * 100);
        assert_eq!(stderr.matches(&line).count(), 1, "{line}: {stderr}");
    }

    let out = run_at_own_level(&strs(&args("quiet", Some("-q"))));
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(String::from_utf8_lossy(&out.stderr), "");
}

/// Under a pseudo-terminal the import draws a bar with a percentage; with
/// `NO_COLOR` nothing on the screen is colored (without it the log lines
/// are).
#[test]
fn progress_bar_on_a_terminal() {
    let dir = TempDir::new();
    let (path, db) = many_rows(&dir, 200_000);
    let screen = |table: &str, no_color: bool| {
        let command = format!(
            "{} import {path} --table {table} --db {db}",
            binary().display()
        );
        let mut script = Command::new("script");
        script
            .args(["-qec", &command, "/dev/null"])
            .env_remove("DATABASE_URL")
            .env_remove("RUST_LOG")
            .env_remove("NO_COLOR");
        if no_color {
            script.env("NO_COLOR", "1");
        }
        let out = script.output().expect("script(1) from util-linux");
        assert_eq!(
            out.status.code(),
            Some(0),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    // An SGR sequence that sets a color or weight: ESC [ digits m.
    let colored = |screen: &str| {
        screen.split('\x1b').skip(1).any(|seq| {
            seq.strip_prefix('[').is_some_and(|rest| {
                let end = rest.find(|c: char| !c.is_ascii_digit() && c != ';');
                end.is_some_and(|end| {
                    end > 0 && rest[end..].starts_with('m') && &rest[..end] != "0"
                })
            })
        })
    };
    let plain = screen("tty_plain", true);
    assert!(plain.contains('%'), "no percentage drawn: {plain:?}");
    assert!(plain.contains("200,000 rows read"), "{plain:?}");
    assert!(!colored(&plain), "colored under NO_COLOR: {plain:?}");
    let colorful = screen("tty_color", false);
    assert!(colored(&colorful), "{colorful:?}");
}
