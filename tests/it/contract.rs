//! The rest of docs/ARCHITECTURE.md §2: upsert, bad-value policies,
//! `import_history`, file-level skip, CREATE TABLE NEVER and table fit, on
//! SQLite, PostgreSQL and MariaDB.

use std::path::Path;

use atlas_import::mapping::ServiceMapping;
use atlas_import::{AtlasError, CreateTable, FilePolicy, OnBadValue, OnDuplicate};

use crate::common::{Kind, TempDir, TestDb, create, import, s};
use crate::on_every_database;

/// `import_history` rows of `table`: (status, inserted, updated, duplicates, rejected).
async fn history(db: &TestDb, table: &str) -> Vec<Vec<Option<String>>> {
    db.rows_where(
        "import_history",
        &["status", "inserted", "updated", "duplicates", "rejected"],
        &format!("table_name = '{table}'"),
    )
    .await
}

async fn upsert_overwrites_and_last_occurrence_wins(db: &TestDb) {
    let dir = TempDir::new();
    let table = db.table("upsert");
    create(db, &table, "email VARCHAR(100), name TEXT, n INTEGER").await;
    db.exec(&format!(
        "INSERT INTO \"{table}\" (email, name, n) VALUES ('a@x', 'Ann', 1), ('z@x', 'Zed', 9)"
    ))
    .await;
    // Chunks of 2 rows: the in-file repeats of b@x fall in later chunks than
    // its insert, and one (row 3) in the same chunk as a repeat of a@x.
    let csv = "email,name,n\na@x,Ann2,2\nb@x,Bob,3\nb@x,Bob2,4\na@x,Ann3,5\nc@x,Cy,6\nb@x,Bob3,7\n";
    let report = import(db, &dir.file("u.csv", csv), &table)
        .with_key(["email"])
        .with_on_duplicate(OnDuplicate::Update)
        .with_chunk_rows(2)
        .execute()
        .await
        .unwrap();
    assert_eq!(
        (report.rows_read, report.inserted, report.updated),
        (6, 2, 4)
    );
    assert_eq!(
        db.rows(&table, &["email", "name", "n"]).await,
        vec![
            vec![s("a@x"), s("Ann3"), s("5")],
            vec![s("b@x"), s("Bob3"), s("7")],
            vec![s("c@x"), s("Cy"), s("6")],
            vec![s("z@x"), s("Zed"), s("9")],
        ]
    );
    // NULL keys match NULL keys.
    let csv = "email,name,n\n,Nobody,1\n,Nobody2,2\n";
    let report = import(db, &dir.file("n.csv", csv), &table)
        .with_key(["email"])
        .with_on_duplicate(OnDuplicate::Update)
        .execute()
        .await
        .unwrap();
    assert_eq!((report.inserted, report.updated), (1, 1));
    assert_eq!(
        db.rows_where(&table, &["name", "n"], "email IS NULL").await,
        vec![vec![s("Nobody2"), s("2")]]
    );
    assert_eq!(
        history(db, &table).await,
        vec![
            vec![s("committed"), s("1"), s("1"), s("1"), s("0")],
            vec![s("committed"), s("2"), s("4"), s("4"), s("0")],
        ]
    );
}

async fn bad_values_become_null(db: &TestDb) {
    let dir = TempDir::new();
    let table = db.table("badnull");
    create(db, &table, "k TEXT, n INTEGER, d DATE").await;
    let csv = "k,n,d\na,1,2024-01-02\nb,x,2024-02-30\nc,3,\n";
    let report = import(db, &dir.file("b.csv", csv), &table)
        .with_on_bad_value(OnBadValue::Null)
        .execute()
        .await
        .unwrap();
    assert_eq!((report.inserted, report.nulled_values), (3, 2));
    assert_eq!(
        db.rows(&table, &["k", "n", "d"]).await,
        vec![
            vec![s("a"), s("1"), s("2024-01-02")],
            vec![s("b"), None, None],
            vec![s("c"), s("3"), None],
        ]
    );
}

async fn bad_rows_are_rejected_to_a_file(db: &TestDb) {
    let dir = TempDir::new();
    let table = db.table("badreject");
    create(db, &table, "k TEXT, n INTEGER").await;
    let csv = "k,n\na,1\n\"b, \"\"quoted\"\"\nline\",x\nc,3\nd,4.5\n";
    let rejects = dir.path().join("rejects.csv");
    let report = import(db, &dir.file("r.csv", csv), &table)
        .with_on_bad_value(OnBadValue::Reject(rejects.clone()))
        .execute()
        .await
        .unwrap();
    assert_eq!(
        (report.rows_read, report.inserted, report.rejected),
        (4, 2, 2)
    );
    assert_eq!(
        db.rows(&table, &["k", "n"]).await,
        vec![vec![s("a"), s("1")], vec![s("c"), s("3")]]
    );
    let mut reader = csv::Reader::from_path(&rejects).unwrap();
    assert_eq!(
        reader.headers().unwrap(),
        vec!["k", "n", "source_row", "source_line", "column", "reason"]
    );
    let records: Vec<Vec<String>> = reader
        .records()
        .map(|r| r.unwrap().iter().map(String::from).collect())
        .collect();
    assert_eq!(records.len(), 2);
    // Row 2 starts on line 3; its quoted field spans two lines, so row 4 is
    // on line 6.
    assert_eq!(records[0][..5], ["b, \"quoted\"\nline", "x", "2", "3", "n"]);
    assert!(records[0][5].contains("\"x\""), "{:?}", records[0]);
    assert_eq!(records[1][..5], ["d", "4.5", "4", "6", "n"]);
    assert_eq!(
        history(db, &table).await,
        vec![vec![s("committed"), s("2"), s("0"), s("0"), s("2")]]
    );
}

async fn failed_and_refused_imports_are_in_history(db: &TestDb) {
    let dir = TempDir::new();
    let table = db.table("history");
    let first = dir.file("h1.csv", "email\na@x\nb@x\n");
    import(db, &first, &table).execute().await.unwrap();
    // Refused: the same file again.
    let err = import(db, &first, &table).execute().await.unwrap_err();
    assert!(matches!(err, AtlasError::AlreadyImported { .. }), "{err}");
    // Skipped: the same file under ON DUPLICATE FILE SKIP.
    let report = import(db, &first, &table)
        .with_file_policy(FilePolicy::Skip)
        .execute()
        .await
        .unwrap();
    assert_eq!(
        (report.status.as_str(), report.inserted),
        ("skipped_file", 0)
    );
    // Refused: duplicates.
    let dup = dir.file("h2.csv", "email\nc@x\na@x\n");
    let err = import(db, &dup, &table).execute().await.unwrap_err();
    assert!(matches!(err, AtlasError::Duplicates(_)), "{err}");
    assert_eq!(db.count(&table).await, 2);
    assert_eq!(
        history(db, &table).await,
        vec![
            vec![s("committed"), s("2"), s("0"), s("0"), s("0")],
            vec![s("refused_duplicates"), s("0"), s("0"), s("1"), s("0")],
            vec![s("refused_file"), s("0"), s("0"), s("0"), s("0")],
            vec![s("skipped_file"), s("0"), s("0"), s("0"), s("0")],
        ]
    );
    let errors = db
        .rows_where(
            "import_history",
            &["error"],
            &format!("table_name = '{table}' AND status = 'refused_duplicates'"),
        )
        .await;
    assert!(
        errors[0][0]
            .as_deref()
            .unwrap_or_default()
            .starts_with("Duplicate data detected."),
        "{errors:?}"
    );
}

async fn create_table_never_and_unfit_tables(db: &TestDb) {
    let dir = TempDir::new();
    let missing = db.table("never");
    let csv = dir.file("c.csv", "email,age,extra\na@x,30,q\n");
    let err = import(db, &csv, &missing)
        .with_create_table(CreateTable::Never)
        .execute()
        .await
        .unwrap_err();
    assert!(err.to_string().contains("does not exist"), "{err}");
    assert!(!db.exists(&missing).await);

    // Every difference is listed, and nothing is written.
    let table = db.table("unfit");
    create(db, &table, "email TEXT, age INTEGER, code TEXT NOT NULL").await;
    let err = import(db, &csv, &table).execute().await.unwrap_err();
    let message = err.to_string();
    assert!(
        matches!(err, AtlasError::SchemaMismatch { .. }),
        "{message}"
    );
    assert!(message.contains("'extra'"), "{message}");
    assert!(message.contains("'code' is NOT NULL"), "{message}");
    assert_eq!(db.count(&table).await, 0);

    // A typed source (Avro) is checked column by column before any row is read.
    let typed = db.table("typed_unfit");
    create(db, &typed, "email TEXT, joined INTEGER").await;
    let avro = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/contacts.avro");
    let err = import(db, &avro, &typed).execute().await.unwrap_err();
    let message = err.to_string();
    assert!(
        message.contains("column 'joined' is Date32 in the source"),
        "{message}"
    );
    assert!(message.contains("source column 'name'"), "{message}");
    assert!(message.contains("source column 'age'"), "{message}");
    assert_eq!(db.count(&typed).await, 0);
}

/// A value longer than a VARCHAR(n) column is a bad value (SQLite does not
/// enforce lengths, so it is not checked there).
async fn overlong_text_is_a_bad_value(db: &TestDb) {
    if db.kind == Kind::Sqlite {
        return;
    }
    let dir = TempDir::new();
    let table = db.table("narrow");
    create(db, &table, "code VARCHAR(3)").await;
    let err = import(db, &dir.file("n.csv", "code\nabc\nüüü\nabcd\n"), &table)
        .execute()
        .await
        .unwrap_err();
    let message = err.to_string();
    assert!(
        matches!(err, AtlasError::BadValue { row: 3, .. }),
        "{message}"
    );
    assert!(message.contains("abcd"), "{message}");
    assert_eq!(db.count(&table).await, 0);
    // Past the length only by spaces: stored cut, as the databases' own
    // loads store it (a fixed-width export's padding); a re-import of the
    // cut value is the row already there.
    let padded = dir.file("padded.csv", "code\n\"ab    \"\n");
    import(db, &padded, &table).execute().await.unwrap();
    assert_eq!(db.rows(&table, &["code"]).await, vec![vec![s("ab ")]]);
    let report = import(db, &dir.file("cut.csv", "code\n\"ab \"\n"), &table)
        .with_on_duplicate(OnDuplicate::Skip)
        .execute()
        .await
        .unwrap();
    assert_eq!((report.inserted, report.skipped), (0, 1));
}

/// Values the databases themselves read go in: a timestamp to the minute
/// (`2024-01-01 10:00`) and PostgreSQL's `on`/`off` booleans; the same
/// timestamp with its seconds (and slashes) is then the row already there.
async fn timestamps_to_the_minute_and_on_off_booleans(db: &TestDb) {
    let dir = TempDir::new();
    let table = db.table("minutes");
    let timestamp = if db.kind == Kind::MySql {
        "DATETIME"
    } else {
        "TIMESTAMP"
    };
    create(db, &table, &format!("ts {timestamp}, b BOOLEAN")).await;
    let csv = "ts,b\n2024-01-01 10:00,on\n2024-01-02T11:30,off\n";
    let report = import(db, &dir.file("minutes.csv", csv), &table)
        .execute()
        .await
        .unwrap();
    assert_eq!(report.inserted, 2);
    // The same instant written year first with slashes, as the databases
    // read it too.
    let again = dir.file("seconds.csv", "ts,b\n2024/01/01 10:00:00,true\n");
    let report = import(db, &again, &table)
        .with_on_duplicate(OnDuplicate::Skip)
        .execute()
        .await
        .unwrap();
    assert_eq!((report.inserted, report.skipped), (0, 1));
    assert_eq!(db.count(&table).await, 2);
}

/// A timestamp column that keeps whole seconds holds `10:00:00.4` and
/// `10:00:00.3` as one value (PostgreSQL and MySQL round `.6` up, MariaDB
/// cuts it): the check compares what the table will hold, within the file
/// and against the rows already there.
async fn timestamps_compare_at_the_column_precision(db: &TestDb) {
    let Some(table) = zoneless_timestamp_table(db, "whole_seconds", "TIMESTAMP(0)").await else {
        return;
    };
    let dir = TempDir::new();
    let file = dir.file(
        "fractions.csv",
        "ts\n2024-01-01 10:00:00.6\n2024-01-01 10:00:00.4\n2024-01-01 10:00:00.3\n",
    );
    let rounded_up = db.kind == Kind::Postgres || !db.is_mariadb().await;
    let expected = if rounded_up { (2, 1) } else { (1, 2) };
    for (run, expected) in [expected, (0, 3)].into_iter().enumerate() {
        let report = import(db, &file, &table)
            .with_on_duplicate(OnDuplicate::Skip)
            .with_force(true)
            .execute()
            .await
            .unwrap();
        assert_eq!((report.inserted, report.skipped), expected, "run {run}");
    }
}

/// A zone written with a timestamp going into a column without one is read
/// as the database's own load reads it: PostgreSQL and MariaDB keep the
/// time as written (`10:00:00+02` is 10:00:00), MySQL converts it to the
/// session's zone (UTC); a re-import is the row already there.
async fn a_written_zone_is_read_as_the_database_reads_it(db: &TestDb) {
    let Some(table) = zoneless_timestamp_table(db, "written_zone", "TIMESTAMP").await else {
        return;
    };
    let dir = TempDir::new();
    let file = dir.file(
        "zoned.csv",
        "ts\n2024-01-01 10:00:00+02\n2024-01-01T11:00:00Z\n",
    );
    let converted = db.kind == Kind::MySql && !db.is_mariadb().await;
    let first = if converted { "08:00:00" } else { "10:00:00" };
    import(db, &file, &table).execute().await.unwrap();
    assert_eq!(
        db.rows(&table, &["ts"]).await,
        vec![
            vec![s(&format!("2024-01-01 {first}"))],
            vec![s("2024-01-01 11:00:00")]
        ]
    );
    let report = import(db, &file, &table)
        .with_on_duplicate(OnDuplicate::Skip)
        .with_force(true)
        .execute()
        .await
        .unwrap();
    assert_eq!((report.inserted, report.skipped), (0, 2));
}

/// Digits of a second past the sixth (SQL Server's `datetime2` writes
/// seven) go in as the database's own load takes them: PostgreSQL rounds
/// half to even (`.1234565` is `.123456`), MySQL half up, MariaDB cuts.
async fn digits_past_the_microsecond_as_the_database_takes_them(db: &TestDb) {
    let columns = match db.kind {
        Kind::Postgres => "ts TIMESTAMP, tz TIMESTAMPTZ",
        Kind::MySql => "ts DATETIME(6), tz TIMESTAMP(6) NULL",
        Kind::Sqlite => return,
    };
    let dir = TempDir::new();
    let table = db.table("sub_micros");
    create(db, &table, columns).await;
    let file = dir.file(
        "datetime2.csv",
        "ts,tz
2024-01-01 10:00:00.1234565,2024-01-01 10:00:00.1234575
         2024-01-01 10:00:00.0000005,2024-01-01 10:00:00.9999994
",
    );
    import(db, &file, &table).execute().await.unwrap();
    let expected: [[&str; 2]; 2] = match db.kind {
        Kind::Postgres => [
            ["10:00:00", "10:00:00.999999"],
            ["10:00:00.123456", "10:00:00.123458"],
        ],
        _ if db.is_mariadb().await => [
            ["10:00:00.000000", "10:00:00.999999"],
            ["10:00:00.123456", "10:00:00.123457"],
        ],
        _ => [
            ["10:00:00.000001", "10:00:00.999999"],
            ["10:00:00.123457", "10:00:00.123458"],
        ],
    };
    let rows: Vec<Vec<Option<String>>> = db
        .rows(&table, &["ts", "tz"])
        .await
        .into_iter()
        .map(|row| {
            row.into_iter()
                .map(|v| v.map(|v| v.trim_end_matches("+00").replace("2024-01-01 ", "")))
                .collect()
        })
        .collect();
    let expected: Vec<Vec<Option<String>>> = expected
        .iter()
        .map(|row| row.iter().map(|v| s(v)).collect())
        .collect();
    assert_eq!(rows, expected);
}

/// A new table `prefix…` of one timestamp column `ts` without a zone:
/// `postgres` on PostgreSQL, DATETIME on MySQL/MariaDB; none on SQLite,
/// which keeps what it is given.
async fn zoneless_timestamp_table(db: &TestDb, prefix: &str, postgres: &str) -> Option<String> {
    let column = match db.kind {
        Kind::Postgres => postgres,
        Kind::MySql => "DATETIME",
        Kind::Sqlite => return None,
    };
    let table = db.table(prefix);
    create(db, &table, &format!("ts {column}")).await;
    Some(table)
}

/// An empty field in a NOT NULL column without a default is a bad value
/// naming its line and column, found before anything is written (the
/// databases' own refusals name no line: MariaDB's not even the row); with
/// `--on-bad-value reject` the row goes to the reject file. A NOT NULL
/// column with a default is left to the database (an auto-increment column
/// takes NULL as "the next value" on MariaDB and SQLite).
async fn null_in_a_not_null_column_is_a_bad_value(db: &TestDb) {
    let dir = TempDir::new();
    let table = db.table("not_null");
    create(db, &table, "name TEXT NOT NULL, age INTEGER").await;
    let csv = "name,age\na,1\nb,2\n,3\nd,4\n";
    let err = import(db, &dir.file("nn.csv", csv), &table)
        .execute()
        .await
        .unwrap_err();
    let message = err.to_string();
    assert!(
        matches!(&err, AtlasError::BadValue { row: 3, line: Some(4), column, .. } if column == "name"),
        "{message}"
    );
    assert!(message.contains("NOT NULL"), "{message}");
    assert_eq!(db.count(&table).await, 0);
    let rejects = dir.path().join("nn_rejects.csv");
    let report = import(db, &dir.file("nn.csv", csv), &table)
        .with_on_bad_value(OnBadValue::Reject(rejects.clone()))
        .execute()
        .await
        .unwrap();
    assert_eq!((report.inserted, report.rejected), (3, 1));
    let rejected = std::fs::read_to_string(&rejects).unwrap();
    assert!(rejected.contains("NOT NULL"), "{rejected}");
}

/// A row the database refuses as a whole (a CHECK constraint) is named by
/// its file line where the write knows which row of it the database
/// refused (PostgreSQL's COPY says; SQLite's write steps a row at a time;
/// MariaDB names no row for a constraint), and nothing is written.
async fn a_row_a_constraint_refuses_names_its_line(db: &TestDb) {
    let dir = TempDir::new();
    let table = db.table("checked");
    create(db, &table, "n INTEGER CHECK (n <> 40000), note TEXT").await;
    let csv: String = std::iter::once("n,note\n".to_string())
        .chain((0..50_000).map(|n| format!("{n},row {n}\n")))
        .collect();
    let err = import(db, &dir.file("checked.csv", &csv), &table)
        .execute()
        .await
        .unwrap_err();
    let message = err.to_string();
    if db.kind != Kind::MySql {
        assert!(message.contains("(line 40002 of "), "{message}");
    }
    assert!(message.to_lowercase().contains("constraint"), "{message}");
    assert_eq!(db.count(&table).await, 0);
}

/// A column the database computes (`GENERATED ALWAYS AS`) cannot be written:
/// a source that holds it is refused while planning, naming it (SQLite's
/// catalog does not list such a column at all), and nothing is written; a
/// source without it imports, the database computing it.
async fn a_generated_column_in_the_source_is_refused(db: &TestDb) {
    let dir = TempDir::new();
    let table = db.table("generated");
    create(
        db,
        &table,
        "a INTEGER, total INTEGER GENERATED ALWAYS AS (a * 2) STORED",
    )
    .await;
    let err = import(db, &dir.file("g.csv", "a,total\n1,2\n"), &table)
        .execute()
        .await
        .unwrap_err();
    let message = err.to_string();
    assert!(
        matches!(err, AtlasError::SchemaMismatch { .. }),
        "{message}"
    );
    assert!(message.contains("'total'"), "{message}");
    if db.kind != Kind::Sqlite {
        assert!(message.contains("generated by the database"), "{message}");
    }
    assert_eq!(db.count(&table).await, 0);
    let report = import(db, &dir.file("a.csv", "a\n1\n5\n"), &table)
        .execute()
        .await
        .unwrap();
    assert_eq!(report.inserted, 2);
    assert_eq!(
        db.rows(&table, &["a", "total"]).await,
        vec![vec![s("1"), s("2")], vec![s("5"), s("10")]]
    );
}

/// Text with the character U+0000 (NUL): kept exactly where the database
/// holds it; PostgreSQL's text cannot, so there it is a bad value naming its
/// line and column, and nothing is written.
async fn nul_characters_in_text(db: &TestDb) {
    let dir = TempDir::new();
    let table = db.table("nul_text");
    let file = dir.file("nul.csv", "n,note\n1,plain\n2,\"two\nlines\"\n3,a\0b\n");
    let result = import(db, &file, &table).execute().await;
    if db.kind != Kind::Postgres {
        assert_eq!(result.unwrap().inserted, 3);
        let rows = db.rows(&table, &["n", "note"]).await;
        assert_eq!(rows[2], vec![s("3"), s("a\0b")]);
        return;
    }
    let err = result.unwrap_err();
    let message = err.to_string();
    assert!(
        matches!(
            &err,
            AtlasError::BadValue { row: 3, line: Some(5), column, .. } if column == "note"
        ),
        "{message}"
    );
    assert!(message.contains("U+0000"), "{message}");
    assert!(!db.exists(&table).await, "{message}");
}

/// A table the failed import created is gone (MySQL commits DDL at once, so
/// its adapter drops the table again on rollback).
async fn failed_import_leaves_no_new_table(db: &TestDb) {
    let dir = TempDir::new();
    let table = db.table("created");
    let csv = "n,m\n1,a\n2,b\n";
    import(db, &dir.file("ok.csv", csv), &table)
        .with_create_table(CreateTable::IfNotExists)
        .with_on_duplicate(OnDuplicate::Error)
        .execute()
        .await
        .unwrap();
    let other = db.table("created_then_refused");
    let err = import(db, &dir.file("dup.csv", "n,m\n1,a\n1,a\n"), &other)
        .execute()
        .await
        .unwrap_err();
    assert!(matches!(err, AtlasError::Duplicates(_)), "{err}");
    assert!(
        !db.exists(&other).await,
        "the refused import left its new table"
    );
    assert!(db.exists(&table).await);
}

/// A mapping file of the original service means what it meant there, except
/// that a table whose schema differs is never dropped.
async fn original_mapping_files(db: &TestDb) {
    let dir = TempDir::new();
    let table = db.table("mapped");
    let mapping = |check: &str| -> ServiceMapping {
        serde_json::from_str(&format!(
            r#"{{
              "table_name": "{table}",
              "db_schema": {{"email": "VARCHAR(255)", "name": "TEXT", "joined": "DATE"}},
              "mappings": {{"email": "E-mail", "name": "Full Name", "joined": "Joined"}},
              "duplicate_check": {check},
              "rules": {{
                "transformations": [{{"type": "uppercase", "field": "name"}}],
                "datetime_transformations": [{{"field": "joined", "source_format": "%m/%d/%Y", "target_format": "%Y-%m-%d"}}]
              }}
            }}"#
        ))
        .unwrap()
    };
    let strict = mapping(
        r#"{"enabled": true, "check_file_level": true, "uniqueness_columns": ["email"],
            "error_message": "Contact already exists."}"#,
    );
    let first = dir.file(
        "first.csv",
        "E-mail,Full Name,Joined,Ignored\nA@X.com,ann smith,01/02/2024,zzz\nb@x.com,\"bob, jr\",,q\n",
    );
    let run = |m: &ServiceMapping, path: &Path| {
        let builder = import(db, path, &m.table_name);
        let mut options = builder.options().clone();
        m.apply(&mut options).unwrap();
        builder.with_options(options).execute()
    };
    let report = run(&strict, &first).await.unwrap();
    assert_eq!((report.inserted, report.created_table), (2, false));
    let described = db.describe(&table).await.unwrap();
    let email = described.find_column("email").unwrap().unwrap();
    assert!(
        email.sql_type.to_ascii_lowercase().contains("char"),
        "declared type kept: {email:?}"
    );
    assert!(described.find_column("Ignored").unwrap().is_none());
    assert_eq!(
        db.rows(&table, &["email", "name", "joined"]).await,
        vec![
            vec![s("A@X.com"), s("ANN SMITH"), s("2024-01-02")],
            vec![s("b@x.com"), s("BOB, JR"), None],
        ]
    );
    // The configured message replaces the first sentence of the refusal.
    let second = dir.file(
        "second.csv",
        "E-mail,Full Name,Joined\nb@x.com,Bob,\nc@x.com,Cy,\n",
    );
    let err = run(&strict, &second).await.unwrap_err();
    assert!(
        err.to_string()
            .starts_with("Contact already exists. 1 records overlap"),
        "{err}"
    );
    // allow_duplicates: rows are not checked, the file still is.
    let allow = mapping(r#"{"uniqueness_columns": ["email"], "allow_duplicates": true}"#);
    assert_eq!(run(&allow, &second).await.unwrap().inserted, 2);
    let err = run(&allow, &second).await.unwrap_err();
    assert!(matches!(err, AtlasError::AlreadyImported { .. }), "{err}");
    // force_import: neither check.
    let force = mapping(r#"{"force_import": true}"#);
    assert_eq!(run(&force, &second).await.unwrap().inserted, 2);
    assert_eq!(db.count(&table).await, 6);

    // A table whose columns differ is an error that lists them; it stays.
    let other = db.table("mapped_other");
    create(db, &other, "email TEXT").await;
    let mut differs = strict.clone();
    differs.table_name = other.clone();
    let err = run(&differs, &first).await.unwrap_err();
    assert!(matches!(err, AtlasError::SchemaMismatch { .. }), "{err}");
    assert!(err.to_string().contains("'name'"), "{err}");
    assert!(db.exists(&other).await);
}

/// Upsert into a table with a unique index on exactly its (number, date)
/// key, through the CLI, also beside a second unique index on a written
/// column and (MariaDB) an INSERT trigger: the new rows go into the table
/// by the bulk path, the others through the stage's join. The same rows and
/// counts every way, NULL key parts included. The trigger counts the rows
/// offered to INSERT: only the new ones.
async fn upsert_into_a_table_with_unique_indexes(db: &TestDb) {
    let dir = TempDir::new();
    let csv = "k,d,v\n\
               1,2024-01-01,new1\n\
               4,2024-01-01,ins4\n\
               4,2024-01-01,ins4b\n\
               2,2024-01-01,new2a\n\
               2,2024-01-01,new2b\n\
               1,,nullpart\n\
               5,,ins5\n\
               5,,ins5b\n\
               6,2024-01-03,ins6\n";
    let file = dir.file("u.csv", csv);
    // The report's (inserted, updated).
    let upsert = |file: &Path, table: &str| {
        let out = std::process::Command::new(crate::cli::binary())
            .args(["import", file.to_str().unwrap(), "--table", table])
            .args(["--db", &db.url, "--key", "k,d", "--on-duplicate", "update"])
            .args(["--json", "-v"])
            .env_remove("DATABASE_URL")
            .output()
            .unwrap();
        let log = String::from_utf8_lossy(&out.stderr).to_string();
        assert!(out.status.success(), "{log}");
        let report = crate::cli::json(&out);
        (
            report["inserted"].as_u64().unwrap(),
            report["updated"].as_u64().unwrap(),
        )
    };
    let attempts = db.table("upsert_attempts");
    if db.kind == Kind::MySql {
        db.exec(&format!("CREATE TABLE \"{attempts}\" (n INTEGER)"))
            .await;
    }
    for (variant, other_unique, trigger) in [
        ("upsert_by_index", false, false),
        ("upsert_two_unique", true, false),
        ("upsert_trigger", false, true),
    ] {
        if trigger && db.kind != Kind::MySql {
            continue;
        }
        let table = db.table(variant);
        create(db, &table, "k INTEGER, d DATE, v VARCHAR(20)").await;
        db.exec(&format!(
            "CREATE UNIQUE INDEX \"{table}_key\" ON \"{table}\" (k, d)"
        ))
        .await;
        if other_unique {
            db.exec(&format!(
                "CREATE UNIQUE INDEX \"{table}_v\" ON \"{table}\" (v)"
            ))
            .await;
        }
        db.exec(&format!(
            "INSERT INTO \"{table}\" (k, d, v) VALUES \
             (1, '2024-01-01', 'old1'), (2, '2024-01-01', 'old2'), (1, NULL, 'old1n'), \
             (3, '2024-01-02', 'old3')"
        ))
        .await;
        if trigger {
            db.exec(&format!("INSERT INTO \"{attempts}\" VALUES (0)"))
                .await;
            db.exec_one(&format!(
                "CREATE TRIGGER \"{table}_attempts\" BEFORE INSERT ON \"{table}\" \
                 FOR EACH ROW UPDATE \"{attempts}\" SET n = n + 1"
            ))
            .await;
        }
        assert_eq!(upsert(&file, &table), (3, 6), "{table}");
        assert_eq!(
            db.rows(&table, &["k", "d", "v"]).await,
            vec![
                vec![s("1"), None, s("nullpart")],
                vec![s("1"), s("2024-01-01"), s("new1")],
                vec![s("2"), s("2024-01-01"), s("new2b")],
                vec![s("3"), s("2024-01-02"), s("old3")],
                vec![s("4"), s("2024-01-01"), s("ins4b")],
                vec![s("5"), None, s("ins5b")],
                vec![s("6"), s("2024-01-03"), s("ins6")],
            ],
            "{table}"
        );
        if trigger {
            assert_eq!(db.rows(&attempts, &["n"]).await, vec![vec![s("3")]]);
        }
        // Only updates, then only new rows: the statements with nothing to
        // apply are left out.
        for (csv, expected) in [
            ("k,d,v\n3,2024-01-02,upd3\n1,,upd1n\n", (0, 2)),
            ("k,d,v\n7,2024-01-01,ins7\n8,,ins8\n", (2, 0)),
        ] {
            assert_eq!(
                upsert(&dir.file("more.csv", csv), &table),
                expected,
                "{table}"
            );
        }
        assert_eq!(
            db.rows_where(
                &table,
                &["k", "v"],
                "k IN (1, 3, 7, 8) AND d IS NULL OR k IN (3, 7)"
            )
            .await,
            vec![
                vec![s("1"), s("upd1n")],
                vec![s("3"), s("upd3")],
                vec![s("7"), s("ins7")],
                vec![s("8"), s("ins8")],
            ],
            "{table}"
        );
    }
}

on_every_database!(
    original_mapping_files,
    failed_import_leaves_no_new_table,
    upsert_overwrites_and_last_occurrence_wins,
    bad_values_become_null,
    bad_rows_are_rejected_to_a_file,
    failed_and_refused_imports_are_in_history,
    create_table_never_and_unfit_tables,
    overlong_text_is_a_bad_value,
    null_in_a_not_null_column_is_a_bad_value,
    timestamps_to_the_minute_and_on_off_booleans,
    timestamps_compare_at_the_column_precision,
    a_written_zone_is_read_as_the_database_reads_it,
    digits_past_the_microsecond_as_the_database_takes_them,
    a_row_a_constraint_refuses_names_its_line,
    a_generated_column_in_the_source_is_refused,
    nul_characters_in_text,
    upsert_into_a_table_with_unique_indexes,
    upsert_switching_between_table_and_stage,
    upsert_by_location_where_the_table_keeps_one,
);

/// An upsert updates the rows the key check found by the location it read
/// with their keys (PostgreSQL's `ctid` of a plain table, SQLite's rowid),
/// and the rest by a join on the key: keys the import inserted itself, and
/// every key of a table whose rows have no location a later statement could
/// use (MariaDB; a PostgreSQL table with partitions or inheriting children;
/// a SQLite table `WITHOUT ROWID` or with a column named `rowid`), and a
/// key that several rows of the table hold (from before: every one of them is
/// updated, as the join does). The same rows every way.
async fn upsert_by_location_where_the_table_keeps_one(db: &TestDb) {
    let dir = TempDir::new();
    let file = dir.file("u.csv", "k,v\n1,a\n4,b\n4,c\n2,d\n");
    let plain = |t: &str| format!("CREATE TABLE \"{t}\" (k INTEGER, v VARCHAR(20))");
    let mut variants: Vec<(&str, Vec<String>, bool)> = vec![("plain", vec![], true)];
    match db.kind {
        Kind::Sqlite => {
            variants.push(("without_rowid", vec![], false));
            variants.push(("rowid_column", vec![], false));
        }
        Kind::Postgres => {
            variants.push(("inherited", vec![], false));
            variants.push(("partitioned", vec![], false));
        }
        Kind::MySql => variants[0].2 = false,
    }
    for (variant, _, located) in variants {
        let table = db.table(&format!("upsert_at_{variant}"));
        let t = &table;
        let definition = match variant {
            "without_rowid" => vec![format!(
                "CREATE TABLE \"{t}\" (k INTEGER PRIMARY KEY, v VARCHAR(20)) WITHOUT ROWID"
            )],
            "rowid_column" => vec![format!(
                "CREATE TABLE \"{t}\" (k INTEGER, v VARCHAR(20), rowid TEXT)"
            )],
            "inherited" => vec![
                plain(t),
                format!("CREATE TABLE \"{t}_child\" () INHERITS (\"{t}\")"),
            ],
            "partitioned" => vec![
                format!("CREATE TABLE \"{t}\" (k INTEGER, v VARCHAR(20)) PARTITION BY RANGE (k)"),
                format!("CREATE TABLE \"{t}_low\" PARTITION OF \"{t}\" FOR VALUES FROM (0) TO (3)"),
                format!(
                    "CREATE TABLE \"{t}_high\" PARTITION OF \"{t}\" FOR VALUES FROM (3) TO (100)"
                ),
            ],
            _ => vec![plain(t)],
        };
        for sql in definition {
            db.exec(&sql).await;
        }
        db.exec(&format!(
            "INSERT INTO \"{t}\" (k, v) VALUES (1, 'old'), (2, 'old')"
        ))
        .await;
        // A duplicate the table held before (not where k is its primary key).
        let twice = variant != "without_rowid";
        if twice {
            db.exec(&format!("INSERT INTO \"{t}\" (k, v) VALUES (2, 'old2')"))
                .await;
        }
        let third = match variant {
            // A row of the child table: the parent's scans and updates see it.
            "inherited" => format!("INSERT INTO \"{t}_child\" (k, v) VALUES (3, 'old')"),
            _ => format!("INSERT INTO \"{t}\" (k, v) VALUES (3, 'old')"),
        };
        db.exec(&third).await;
        let out = std::process::Command::new(crate::cli::binary())
            .args(["import", file.to_str().unwrap(), "--table", t])
            .args(["--db", &db.url, "--key", "k", "--on-duplicate", "update"])
            .args(["--json", "-v"])
            .env_remove("DATABASE_URL")
            .output()
            .unwrap();
        let log = String::from_utf8_lossy(&out.stderr).to_string();
        assert!(out.status.success(), "{variant}: {log}");
        let report = crate::cli::json(&out);
        assert_eq!(
            (report["inserted"].as_u64(), report["updated"].as_u64()),
            (Some(1), Some(3)),
            "{variant}"
        );
        let expected = if located {
            "1 rows to update by their location, 2 by a join on the key"
        } else {
            "0 rows to update by their location, 3 by a join on the key"
        };
        assert!(log.contains(expected), "{variant}: {log}");
        let mut expected = vec![
            vec![s("1"), s("a")],
            vec![s("2"), s("d")],
            vec![s("3"), s("old")],
            vec![s("4"), s("c")],
        ];
        if twice {
            expected.insert(1, vec![s("2"), s("d")]);
        }
        assert_eq!(db.rows(t, &["k", "v"]).await, expected, "{variant}");
        if variant == "inherited" {
            // (The parent is dropped at the end: its child first.)
            db.exec(&format!("DROP TABLE \"{t}_child\"")).await;
        }
    }
}

/// An upsert whose new and existing rows come in alternating runs, with
/// chunks small enough that its write switches between the table (new keys)
/// and the stage (existing keys) again and again, and with one chunk for
/// everything: the rows and counts of applying the file row by row (a new
/// key inserted by its first row, every later row of a key updating it,
/// NULL equal to NULL).
async fn upsert_switching_between_table_and_stage(db: &TestDb) {
    use std::collections::BTreeMap;
    let dir = TempDir::new();
    let existing: Vec<i64> = (0..30).map(|k| k * 2).collect();
    let mut csv = String::from("k,v\n");
    let mut rows: Vec<(Option<i64>, String)> = Vec::new();
    for i in 0..400i64 {
        // Runs of 7 rows: new keys (repeating after 150 rows), then keys
        // that exist; every 37th row a NULL key.
        let k = if i % 37 == 36 {
            None
        } else if (i / 7) % 2 == 0 {
            Some(1000 + i % 150)
        } else {
            Some((i % 30) * 2)
        };
        let v = format!("v{i}");
        csv.push_str(&format!(
            "{},{v}\n",
            k.map_or(String::new(), |k| k.to_string())
        ));
        rows.push((k, v));
    }
    let file = dir.file("switch.csv", &csv);
    let mut model: BTreeMap<Option<i64>, String> = existing
        .iter()
        .map(|&k| (Some(k), format!("old{k}")))
        .collect();
    let (mut inserted, mut updated) = (0u64, 0u64);
    for (k, v) in &rows {
        if model.insert(*k, v.clone()).is_some() {
            updated += 1;
        } else {
            inserted += 1;
        }
    }
    let mut expected: Vec<Vec<Option<String>>> = model
        .into_iter()
        .map(|(k, v)| vec![k.map(|k| k.to_string()), Some(v)])
        .collect();
    expected.sort();
    for chunk_rows in [1, 3, 10_000] {
        let table = db.table("upsert_switch");
        create(db, &table, "k INTEGER, v VARCHAR(20)").await;
        let values: Vec<String> = existing
            .iter()
            .map(|k| format!("({k}, 'old{k}')"))
            .collect();
        db.exec(&format!(
            "INSERT INTO \"{table}\" (k, v) VALUES {}",
            values.join(", ")
        ))
        .await;
        let report = import(db, &file, &table)
            .with_key(["k"])
            .with_on_duplicate(OnDuplicate::Update)
            .with_chunk_rows(chunk_rows)
            .execute()
            .await
            .unwrap();
        let label = format!("chunk_rows={chunk_rows}");
        assert_eq!(
            (report.inserted, report.updated),
            (inserted, updated),
            "{label}"
        );
        assert_eq!(db.rows(&table, &["k", "v"]).await, expected, "{label}");
    }
}

/// Upsert on a two-column key: every pattern of NULL key parts matches only
/// its own rows (NULL equals NULL), text keys compare exactly (MySQL's
/// collations would match `A@x` with `a@x`), new rows get identity values in
/// file order, and the result is the same under both key strategies.
async fn upsert_by_key_parts_with_nulls(db: &TestDb) {
    let dir = TempDir::new();
    let table = db.table("upsert_parts");
    create(db, &table, "email VARCHAR(100), region INTEGER, v TEXT").await;
    db.exec(&format!(
        "INSERT INTO \"{table}\" (email, region, v) VALUES \
         ('a@x', 1, 'old'), ('a@x', NULL, 'old'), (NULL, 1, 'old'), (NULL, NULL, 'old'), \
         ('A@x', 1, 'old'), ('a@x ', 1, 'old')"
    ))
    .await;
    let csv = "email,region,v\n\
               a@x,1,new1\n\
               a@x,,new2\n\
               ,1,new3\n\
               ,,new4\n\
               ,,new4b\n\
               b@x,,first\n\
               c@x,2,second\n\
               b@x,,third\n";
    let report = import(db, &dir.file("p.csv", csv), &table)
        .with_key(["email", "region"])
        .with_on_duplicate(OnDuplicate::Update)
        .execute()
        .await
        .unwrap();
    assert_eq!((report.inserted, report.updated), (2, 6), "{report:?}");
    assert_eq!(
        db.rows(&table, &["email", "region", "v"]).await,
        vec![
            vec![None, None, s("new4b")],
            vec![None, s("1"), s("new3")],
            vec![s("A@x"), s("1"), s("old")],
            vec![s("a@x"), None, s("new2")],
            vec![s("a@x"), s("1"), s("new1")],
            vec![s("a@x "), s("1"), s("old")],
            vec![s("b@x"), None, s("third")],
            vec![s("c@x"), s("2"), s("second")],
        ]
    );
    // New rows were inserted in file order.
    assert_eq!(
        db.rows_where(
            &table,
            &["email"],
            &format!("id = (SELECT MAX(id) FROM \"{table}\")")
        )
        .await,
        vec![vec![s("c@x")]]
    );
}

crate::on_every_database_and_strategy!(upsert_by_key_parts_with_nulls);

/// PostgreSQL: an upsert into a table without an index on the key fetches
/// the rows its key scan found by their `ctid`, scanning the table once (the
/// key scan); into a table with a unique index on the key it updates them
/// through the index (left alone, the planner hash-joins the stage with the
/// whole table): the index is scanned about once per row.
#[tokio::test]
async fn postgres_updates_found_rows_by_location_or_through_the_keys_index() {
    let db = TestDb::new(Kind::Postgres).await;
    db.run(async {
        const ROWS: i64 = 5000;
        let dir = TempDir::new();
        let csv: String = std::iter::once("k,v\n".to_string())
            .chain((1..=ROWS).map(|k| format!("{k},new\n")))
            .collect();
        let file = dir.file("u.csv", &csv);
        for indexed in [false, true] {
            let table = db.table(if indexed {
                "upsert_indexed"
            } else {
                "upsert_located"
            });
            db.exec(&format!(
                "CREATE TABLE \"{table}\" (k INTEGER, v TEXT); \
                 INSERT INTO \"{table}\" SELECT g, 'old' FROM generate_series(1, {ROWS}) g; \
                 ANALYZE \"{table}\""
            ))
            .await;
            if indexed {
                db.exec(&format!(
                    "CREATE UNIQUE INDEX \"{table}_k\" ON \"{table}\" (k)"
                ))
                .await;
            }
            // The table's scans and updated rows as the statistics have
            // them (the rows first: a session reports its scans with them).
            let stat = |column: &str| {
                format!(
                    "SELECT coalesce({column}, 0) FROM pg_stat_user_tables \
                     WHERE relid = '\"{table}\"'::regclass"
                )
            };
            let (seq, idx, upd) = (stat("seq_scan"), stat("idx_scan"), stat("n_tup_upd"));
            let read = || async {
                let updated = db.scalar(&upd).await;
                (db.scalar(&seq).await, db.scalar(&idx).await, updated)
            };
            let before = read().await;
            let out = std::process::Command::new(crate::cli::binary())
                .args(["import", file.to_str().unwrap(), "--table", &table])
                .args(["--db", &db.url, "--key", "k", "--on-duplicate", "update"])
                // The key check reads the keys without the index.
                .args(["--strategy", "preload"])
                .env_remove("DATABASE_URL")
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
            // The import's sessions report their counts as they end: wait
            // for the updates and the key scan's scan.
            let started = std::time::Instant::now();
            let (seq_scans, index_scans, updated) = loop {
                let now = read().await;
                if (now.0 > before.0 && now.2 - before.2 >= ROWS)
                    || started.elapsed() > std::time::Duration::from_secs(10)
                {
                    break (now.0 - before.0, now.1 - before.1, now.2 - before.2);
                }
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            };
            assert_eq!(updated, ROWS, "indexed: {indexed}");
            assert_eq!(
                db.scalar(&format!("SELECT count(*) FROM \"{table}\" WHERE v = 'new'"))
                    .await,
                ROWS
            );
            if indexed {
                assert!(
                    index_scans >= ROWS,
                    "the key's index was scanned {index_scans} times for {ROWS} updated rows"
                );
            } else {
                assert_eq!(
                    (seq_scans, index_scans),
                    (1, 0),
                    "(table scans, index scans): one scan, the key scan's"
                );
            }
        }
    })
    .await;
}
