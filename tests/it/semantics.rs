//! One test per promise of docs/ARCHITECTURE.md §2, on SQLite,
//! PostgreSQL and MariaDB (each `name::sqlite` / `::postgres` / `::mysql`).

use std::sync::Arc;

use atlas_import::{AtlasError, ErrorClass, ImportMetrics, ImportReport, OnDuplicate};

use crate::common::{Kind, TempDir, TestDb, create, import, s};
use crate::on_every_database_and_strategy;

const FIRST: &str = "email,name\na@x.com,Ann\nb@x.com,Bob\nc@x.com,Cy\n";
const SECOND: &str = "email,name\nd@x.com,Dee\nb@x.com,Bob\ne@x.com,Eve\n";

async fn refused_import_leaves_table_unchanged(db: &TestDb) {
    let dir = TempDir::new();
    let table = db.table("refused");
    import(db, &dir.file("first.csv", FIRST), &table)
        .execute()
        .await
        .unwrap();
    let before = db.rows(&table, &["id", "email", "name"]).await;

    let err = import(db, &dir.file("second.csv", SECOND), &table)
        .execute()
        .await
        .unwrap_err();
    let AtlasError::Duplicates(report) = &err else {
        panic!("expected duplicates, got {err}");
    };
    assert_eq!(report.existing, 1);
    assert_eq!(report.in_file, 0);
    assert_eq!(report.existing_chunks, 1);
    assert_eq!(report.samples[0].row, 2);
    assert!(
        err.to_string().starts_with(
            "Duplicate data detected. 1 records overlap with existing data in 1 chunk(s)."
        ),
        "{err}"
    );
    assert_eq!(db.rows(&table, &["id", "email", "name"]).await, before);
    assert_eq!(db.file_imports(&table).await, 1);
}

async fn skip_counts(db: &TestDb) {
    let dir = TempDir::new();
    let table = db.table("skip");
    import(db, &dir.file("first.csv", FIRST), &table)
        .execute()
        .await
        .unwrap();
    let report = import(db, &dir.file("second.csv", SECOND), &table)
        .with_on_duplicate(OnDuplicate::Skip)
        .execute()
        .await
        .unwrap();
    assert_eq!(
        (report.rows_read, report.inserted, report.skipped),
        (3, 2, 1)
    );
    assert_eq!(report.duplicates_existing, 1);
    assert_eq!(db.count(&table).await, 5);
    assert_eq!(db.file_imports(&table).await, 2);
}

async fn within_file_duplicates(db: &TestDb) {
    let dir = TempDir::new();
    let table = db.table("within");
    let csv = "email,name\na@x.com,first A\nb@x.com,first B\nc@x.com,C\nb@x.com,second B\na@x.com,second A\n";
    let path = dir.file("within.csv", csv);
    let err = import(db, &path, &table)
        .with_key(["email"])
        .execute()
        .await
        .unwrap_err();
    let AtlasError::Duplicates(report) = &err else {
        panic!("expected duplicates, got {err}");
    };
    assert_eq!((report.existing, report.in_file), (0, 2));
    assert_eq!(report.samples.len(), 2);
    assert_eq!(report.samples[0].row, 4);
    assert_eq!(report.samples[0].line, Some(5), "row 4 is on line 5");
    assert!(
        err.to_string()
            .contains("line 5: email=\"b@x.com\" repeats line 3"),
        "{err}"
    );
    assert!(
        !db.exists(&table).await,
        "a refused import must not leave a new table"
    );

    let report = import(db, &path, &table)
        .with_key(["email"])
        .with_on_duplicate(OnDuplicate::Skip)
        .execute()
        .await
        .unwrap();
    assert_eq!((report.inserted, report.skipped), (3, 2));
    assert_eq!(
        db.rows(&table, &["email", "name"]).await,
        vec![
            vec![s("a@x.com"), s("first A")],
            vec![s("b@x.com"), s("first B")],
            vec![s("c@x.com"), s("C")],
        ]
    );
}

async fn null_keys_are_equal(db: &TestDb) {
    let dir = TempDir::new();
    let table = db.table("nulls");
    create(db, &table, "a INTEGER, b TEXT").await;
    db.exec(&format!("INSERT INTO \"{table}\" (a, b) VALUES (1, NULL)"))
        .await;
    // Row 1 equals the existing (1, NULL); row 3 repeats row 2's (NULL, NULL);
    // row 4's b is a space, which is data, not NULL.
    let csv = "a,b\n1,\n,\n,\n, \n2,x\n";
    let report = import(db, &dir.file("n.csv", csv), &table)
        .with_on_duplicate(OnDuplicate::Skip)
        .execute()
        .await
        .unwrap();
    assert_eq!(
        (
            report.inserted,
            report.duplicates_existing,
            report.duplicates_in_file
        ),
        (3, 1, 1)
    );
    assert_eq!(db.count(&table).await, 4);
}

async fn integer_key_compares_after_coercion(db: &TestDb) {
    let dir = TempDir::new();
    let table = db.table("coerce");
    create(db, &table, "code INTEGER, label TEXT").await;
    db.exec(&format!(
        "INSERT INTO \"{table}\" (code, label) VALUES (7, 'seven')"
    ))
    .await;
    let csv = "code,label\n007,again\n 8 ,eight\n";
    let err = import(db, &dir.file("c.csv", csv), &table)
        .with_key(["code"])
        .execute()
        .await
        .unwrap_err();
    let AtlasError::Duplicates(report) = &err else {
        panic!("expected duplicates, got {err}");
    };
    assert_eq!(report.existing, 1);
    assert_eq!(report.samples[0].key, "code=7");
    // Text compares exactly: no trimming or case folding.
    let table2 = db.table("exact");
    create(db, &table2, "name TEXT").await;
    db.exec(&format!("INSERT INTO \"{table2}\" (name) VALUES ('Ann')"))
        .await;
    let report = import(db, &dir.file("t.csv", "name\nann\n Ann\nAnn\n"), &table2)
        .with_on_duplicate(OnDuplicate::Skip)
        .execute()
        .await
        .unwrap();
    assert_eq!((report.inserted, report.skipped), (2, 1));
}

async fn file_level_refusal_and_force(db: &TestDb) {
    let dir = TempDir::new();
    let table = db.table("filelevel");
    let path = dir.file("first.csv", FIRST);
    import(db, &path, &table).execute().await.unwrap();
    let err = import(db, &path, &table).execute().await.unwrap_err();
    assert_eq!(
        err.to_string(),
        format!("File has already been imported to table '{table}'.")
    );
    assert!(matches!(err, AtlasError::AlreadyImported { .. }));
    // The same bytes under another name are the same file.
    let copy = dir.file("copy.csv", FIRST);
    assert!(matches!(
        import(db, &copy, &table).execute().await.unwrap_err(),
        AtlasError::AlreadyImported { .. }
    ));
    // --force skips the file check, but the row check still runs.
    let err = import(db, &path, &table)
        .with_force(true)
        .execute()
        .await
        .unwrap_err();
    assert!(matches!(err, AtlasError::Duplicates(_)), "{err}");
    let report = import(db, &path, &table)
        .with_force(true)
        .with_on_duplicate(OnDuplicate::Skip)
        .execute()
        .await
        .unwrap();
    assert_eq!((report.inserted, report.skipped), (0, 3));
    assert_eq!(db.count(&table).await, 3);
    assert_eq!(db.file_imports(&table).await, 1);
}

fn numbered_rows(n: usize, bad_row: Option<usize>) -> String {
    let mut csv = String::from("sku,qty\n");
    for i in 1..=n {
        if Some(i) == bad_row {
            csv.push_str(&format!("sku-{i},not-a-number\n"));
        } else {
            csv.push_str(&format!("sku-{i},{}\n", i % 50));
        }
    }
    csv
}

async fn bad_value_in_last_chunk_writes_nothing(db: &TestDb) {
    let dir = TempDir::new();
    let table = db.table("badvalue");
    create(db, &table, "sku TEXT, qty INTEGER").await;
    db.exec(&format!(
        "INSERT INTO \"{table}\" (sku, qty) VALUES ('old', 1)"
    ))
    .await;
    // More rows than one source batch, so earlier chunks are written before the
    // bad value is even read.
    let rows = 20_000;
    let path = dir.file("bad.csv", &numbered_rows(rows, Some(rows)));
    let metrics = Arc::new(ImportMetrics::default());
    let err = import(db, &path, &table)
        .with_chunk_rows(1000)
        .with_metrics(Arc::clone(&metrics))
        .execute()
        .await
        .unwrap_err();
    match &err {
        AtlasError::BadValue {
            row, column, value, ..
        } => {
            assert_eq!(
                (*row, column.as_str(), value.as_str()),
                (20_000, "qty", "not-a-number")
            );
        }
        other => panic!("expected a bad value, got {other}"),
    }
    let message = err.to_string();
    assert!(
        message.contains("bad.csv") && message.contains("line 20001"),
        "{message}"
    );
    // Whether chunks were already written when the bad value was read depends on
    // scheduling; either way the transaction is rolled back.
    eprintln!(
        "chunks written before the bad value: {}",
        ImportMetrics::get(&metrics.chunks_written)
    );
    assert_eq!(db.count(&table).await, 1);
    assert_eq!(db.file_imports(&table).await, 0);
}

async fn failure_between_chunks_writes_nothing(db: &TestDb) {
    let dir = TempDir::new();
    let table = db.table("between");
    create(db, &table, "sku TEXT, qty INTEGER CHECK (qty < 100)").await;
    db.exec(&format!(
        "INSERT INTO \"{table}\" (sku, qty) VALUES ('old', 1)"
    ))
    .await;
    let mut csv = numbered_rows(9, None);
    csv.push_str("sku-10,500\nsku-11,1\n");
    let metrics = Arc::new(ImportMetrics::default());
    let err = import(db, &dir.file("between.csv", &csv), &table)
        .with_chunk_rows(2)
        .with_partitions(1)
        .with_metrics(Arc::clone(&metrics))
        .execute()
        .await
        .unwrap_err();
    assert!(matches!(err, AtlasError::Database { .. }), "{err}");
    // (On a cluster the chunks are written, and counted, by an executor.)
    if db.cluster.is_none() {
        assert!(
            ImportMetrics::get(&metrics.chunks_written) >= 4,
            "chunks before the failure were written"
        );
    }
    assert_eq!(
        db.rows(&table, &["sku", "qty"]).await,
        vec![vec![s("old"), s("1")]]
    );
    assert_eq!(db.file_imports(&table).await, 0);
}

async fn quoted_fields_and_row_numbers(db: &TestDb) {
    let dir = TempDir::new();
    let table = db.table("quoted");
    create(db, &table, "name TEXT, note TEXT, n INTEGER").await;
    let csv = "name,note,n\n\"Doe, Jane\",\"said \"\"hi\"\"\nthen left\",1\nZoë,北京,\n\"x\",\"multi\nline\nvalue\",oops\n";
    let err = import(db, &dir.file("q.csv", csv), &table)
        .execute()
        .await
        .unwrap_err();
    match err {
        AtlasError::BadValue { row, column, .. } => assert_eq!((row, column.as_str()), (3, "n")),
        other => panic!("expected a bad value, got {other}"),
    }
    let good = "name,note,n\n\"Doe, Jane\",\"said \"\"hi\"\"\nthen left\",1\nZoë,北京,\n";
    let report = import(db, &dir.file("good.csv", good), &table)
        .execute()
        .await
        .unwrap();
    assert_eq!(report.inserted, 2);
    assert_eq!(
        db.rows(&table, &["name", "note", "n"]).await,
        vec![
            vec![s("Doe, Jane"), s("said \"hi\"\nthen left"), s("1")],
            vec![s("Zoë"), s("北京"), None],
        ]
    );
}

async fn new_table_from_inferred_types(db: &TestDb) {
    let dir = TempDir::new();
    let table = db.table("inferred");
    let csv = "code,zip,price,active,day,at,label\n1,02134,1.5,true,2024-01-02,2024-01-02 10:00:00,x\n2,10001,2,f,2024-02-29,2024-03-01 00:00:00.5,\n";
    let report = import(db, &dir.file("i.csv", csv), &table)
        .execute()
        .await
        .unwrap();
    assert!(report.created_table);
    let described = db.describe(&table).await.unwrap();
    let types: Vec<(String, String)> = described
        .columns
        .iter()
        .map(|c| (c.name.clone(), c.data_type.to_string()))
        .collect();
    let expect_int = match db.kind {
        Kind::Sqlite | Kind::Postgres | Kind::MySql => "Int64",
    };
    assert_eq!(types[0], ("id".into(), expect_int.into()));
    assert_eq!(
        types[2],
        ("zip".into(), "Utf8".into()),
        "codes with leading zeros stay text"
    );
    assert_eq!(types[3].1, "Float64");
    // MySQL's BOOLEAN is TINYINT(1): a small integer that reads booleans.
    let expect_boolean = match db.kind {
        Kind::MySql => "Int8",
        Kind::Sqlite | Kind::Postgres => "Boolean",
    };
    assert_eq!(types[4].1, expect_boolean);
    assert_eq!(types[5].1, "Date32");
    assert!(types[6].1.starts_with("Timestamp"));
    assert_eq!(db.count(&table).await, 2);
    // Importing the same rows again (another file) finds them all: values read
    // back from the table compare equal after coercion.
    let err = import(db, &dir.path().join("i.csv"), &table)
        .with_force(true)
        .execute()
        .await
        .unwrap_err();
    let AtlasError::Duplicates(report) = err else {
        panic!("expected duplicates");
    };
    assert_eq!(report.existing, 2);
}

async fn unknown_columns_are_listed(db: &TestDb) {
    let dir = TempDir::new();
    let table = db.table("mismatch");
    create(db, &table, "email TEXT NOT NULL, name TEXT").await;
    let err = import(db, &dir.file("m.csv", "mail,name\nx,y\n"), &table)
        .execute()
        .await
        .unwrap_err();
    let message = err.to_string();
    assert!(matches!(err, AtlasError::SchemaMismatch { .. }));
    assert!(
        message.contains("source column 'mail' is not a column"),
        "{message}"
    );
    assert!(
        message.contains("its columns: id, email, name"),
        "{message}"
    );
    assert!(message.contains("'email' is NOT NULL"), "{message}");
}

/// The same inputs give the same rows and the same counts for every partition
/// count and chunk size.
async fn invariant_under_partitions_and_chunks(db: &TestDb) {
    let dir = TempDir::new();
    let mut seed = String::from("email,n\n");
    for i in (0..300).step_by(7) {
        seed.push_str(&format!("user{i}@x.com,{i}\n"));
    }
    let mut data = String::from("email,n\n");
    for i in 0..300 {
        // Every 5th row repeats an earlier email with another n.
        let email = if i % 5 == 4 { i / 2 } else { i };
        data.push_str(&format!("user{email}@x.com,{}\n", i * 10));
    }
    let seed_path = dir.file("seed.csv", &seed);
    let data_path = dir.file("data.csv", &data);

    type Outcome = (Vec<Vec<Option<String>>>, (u64, u64, u64, u64), Vec<u64>);
    let mut baseline: Option<Outcome> = None;
    for partitions in [1, 2, 4, 8] {
        for chunk_rows in [1, 7, 10_000] {
            let table = db.table("invariance");
            import(db, &seed_path, &table).execute().await.unwrap();
            let refused = import(db, &data_path, &table)
                .with_key(["email"])
                .with_partitions(partitions)
                .with_chunk_rows(chunk_rows)
                .execute()
                .await
                .unwrap_err();
            let AtlasError::Duplicates(refused) = refused else {
                panic!("expected duplicates");
            };
            let sample_rows: Vec<u64> = refused.samples.iter().map(|s| s.row).collect();
            let report: ImportReport = import(db, &data_path, &table)
                .with_key(["email"])
                .with_partitions(partitions)
                .with_chunk_rows(chunk_rows)
                .with_on_duplicate(OnDuplicate::Skip)
                .execute()
                .await
                .unwrap();
            let counts = (
                report.inserted,
                report.skipped,
                report.duplicates_existing,
                report.duplicates_in_file,
            );
            assert_eq!(report.partitions, partitions);
            let rows = db.rows(&table, &["email", "n"]).await;
            match &baseline {
                None => baseline = Some((rows, counts, sample_rows)),
                Some((b_rows, b_counts, b_samples)) => {
                    let label = format!("partitions={partitions} chunk_rows={chunk_rows}");
                    assert_eq!(&counts, b_counts, "{label}");
                    assert_eq!(&sample_rows, b_samples, "{label}");
                    assert_eq!(&rows, b_rows, "{label}");
                }
            }
        }
    }
    // The same counts from a straightforward model of the semantics.
    let existing: std::collections::HashSet<&str> = seed
        .lines()
        .skip(1)
        .map(|l| l.split(',').next().unwrap())
        .collect();
    let mut seen = std::collections::HashSet::new();
    let (mut inserted, mut dup_existing, mut dup_in_file) = (0u64, 0u64, 0u64);
    for line in data.lines().skip(1) {
        let email = line.split(',').next().unwrap();
        if existing.contains(email) {
            dup_existing += 1;
        } else if !seen.insert(email) {
            dup_in_file += 1;
        } else {
            inserted += 1;
        }
    }
    let (rows, counts, _) = baseline.unwrap();
    assert_eq!(
        counts,
        (
            inserted,
            dup_existing + dup_in_file,
            dup_existing,
            dup_in_file
        )
    );
    assert!(dup_existing > 0 && dup_in_file > 0);
    assert_eq!(rows.len() as u64, existing.len() as u64 + inserted);
}

async fn parquet_ndjson_and_delimited_sources(db: &TestDb) {
    use datafusion::arrow::array::{Int64Array, RecordBatch, StringArray};
    use datafusion::arrow::datatypes::{DataType, Field, Schema};

    let dir = TempDir::new();
    let table = db.table("formats");
    create(db, &table, "email TEXT, age INTEGER").await;

    let schema = Arc::new(Schema::new(vec![
        Field::new("email", DataType::Utf8, true),
        Field::new("age", DataType::Int64, true),
    ]));
    let batch = RecordBatch::try_new(
        Arc::clone(&schema),
        vec![
            Arc::new(StringArray::from(vec![
                Some("a@x.com"),
                Some("b@x.com"),
                None,
            ])),
            Arc::new(Int64Array::from(vec![Some(30), None, Some(5)])),
        ],
    )
    .unwrap();
    let parquet = dir.parquet("people.parquet", &batch);
    let report = import(db, &parquet, &table).execute().await.unwrap();
    assert_eq!(report.inserted, 3);

    // NDJSON overlapping the Parquet rows: compared after coercion, NULLs equal.
    let ndjson = dir.file(
        "people.ndjson",
        "{\"email\": \"a@x.com\", \"age\": 30}\n{\"email\": \"c@x.com\", \"age\": 7}\n{\"email\": null, \"age\": 5}\n",
    );
    let report = import(db, &ndjson, &table)
        .with_on_duplicate(OnDuplicate::Skip)
        .execute()
        .await
        .unwrap();
    assert_eq!((report.inserted, report.skipped), (1, 2));

    // A semicolon-delimited file, and an age that is not an integer.
    let semicolons = dir.file("people.txt", "email;age\nd@x.com;41\n");
    let report = import(db, &semicolons, &table)
        .with_format(atlas_import::SourceFormat::Csv(atlas_import::CsvDialect {
            delimiter: b';',
            ..Default::default()
        }))
        .execute()
        .await
        .unwrap();
    assert_eq!(report.inserted, 1);
    let wide = dir.file(
        "wide.ndjson",
        "{\"email\": \"e@x.com\", \"age\": \"many\"}\n",
    );
    let err = import(db, &wide, &table).execute().await.unwrap_err();
    match err {
        AtlasError::BadValue {
            row, column, value, ..
        } => {
            assert_eq!((row, column.as_str(), value.as_str()), (1, "age", "many"))
        }
        other => panic!("expected a bad value, got {other}"),
    }
    assert_eq!(
        db.rows(&table, &["email", "age"]).await,
        vec![
            vec![None, s("5")],
            vec![s("a@x.com"), s("30")],
            vec![s("b@x.com"), None],
            vec![s("c@x.com"), s("7")],
            vec![s("d@x.com"), s("41")],
        ]
    );
}

async fn existing_text_with_escapes_round_trips(db: &TestDb) {
    let dir = TempDir::new();
    let table = db.table("escapes");
    create(db, &table, "k TEXT").await;
    let nl = match db.kind {
        Kind::Sqlite => "'nl' || char(10) || 'x'",
        Kind::Postgres => "E'nl\\nx'",
        Kind::MySql => "CONCAT('nl', CHAR(10 USING utf8mb4), 'x')",
    };
    let tab = match db.kind {
        Kind::Sqlite => "'tab' || char(9) || 'here'",
        Kind::Postgres => "E'tab\\there'",
        Kind::MySql => "CONCAT('tab', CHAR(9 USING utf8mb4), 'here')",
    };
    db.exec(&format!(
        "INSERT INTO \"{table}\" (k) VALUES ('a\\b'), ({nl}), ({tab}), ('\\N'), (NULL), ('ü\"q')"
    ))
    .await;
    // A blank line of a one-column file is a NULL; it equals the existing NULL.
    let csv = "k\n\"a\\b\"\n\"nl\nx\"\n\"tab\there\"\n\\N\n\n\"ü\"\"q\"\nnew\n";
    let report = import(db, &dir.file("e.csv", csv), &table)
        .with_on_duplicate(OnDuplicate::Skip)
        .execute()
        .await
        .unwrap();
    assert_eq!(
        (
            report.rows_read,
            report.inserted,
            report.duplicates_existing
        ),
        (7, 1, 6)
    );
}

/// A refusal names the key of each of its first duplicates, also of rows
/// that went on long before the table's keys were known (past the key
/// columns the check keeps of such rows): where a probe read few keys, and
/// where it read many (the first 1,100 rows of the second import share both
/// values with the table, not the key).
async fn refusal_names_the_keys_of_late_rows(db: &TestDb) {
    let dir = TempDir::new();
    let table = db.table("late");
    let note = |i: usize| format!("n{i:0>300}");
    let csv = |rows: &[String]| format!("email,note\n{}", rows.concat());
    let old: Vec<String> = (0..1_100)
        .map(|i| format!("old{i}@x.com,{}\n", note(i)))
        .collect();
    import(db, &dir.file("old.csv", &csv(&old)), &table)
        .with_key(["email", "note"])
        .execute()
        .await
        .unwrap();
    for shared in [0, 1_100] {
        let mut new: Vec<String> = (0..30_000)
            .map(|i| match i < shared {
                true => format!("old{i}@x.com,{}\n", note(i + 1)),
                false => format!("new{i}@x.com,{}\n", note(i)),
            })
            .collect();
        new[29_000] = old[7].clone();
        new[29_500] = new[25_000].clone();
        let file = dir.file(&format!("new{shared}.csv"), &csv(&new));
        let err = import(db, &file, &table)
            .with_key(["email", "note"])
            .execute()
            .await
            .unwrap_err();
        let AtlasError::Duplicates(report) = &err else {
            panic!("expected duplicates, got {err}");
        };
        assert_eq!((report.existing, report.in_file), (1, 1));
        let message = err.to_string();
        let existing = format!(
            "line 29002: email=\"old7@x.com\", note=\"{}\" already exists",
            note(7)
        );
        let repeat = format!(
            "line 29502: email=\"new25000@x.com\", note=\"{}\" repeats line 25002",
            note(25_000)
        );
        assert!(message.contains(&existing), "{shared}: {message}");
        assert!(message.contains(&repeat), "{shared}: {message}");
    }
    assert_eq!(db.count(&table).await, 1_100);
}

/// A unique index on the key refuses a duplicate that went on before its
/// verdict (rows are written while the table's keys are read or probed)
/// before the check decides it: the import still refuses with its own
/// message, naming the key and the line, and writes nothing. A key the index
/// holds that the import's key does not explain is the database's refusal,
/// with what it says of the key and without lines that are not the file's.
async fn unique_index_refusals_are_duplicates(db: &TestDb) {
    let dir = TempDir::new();
    let table = db.table("uniq");
    create(db, &table, "email VARCHAR(100), n INTEGER").await;
    db.exec(&format!(
        "CREATE UNIQUE INDEX \"{table}_email\" ON \"{table}\" (email)"
    ))
    .await;
    let rows = |from: usize, to: usize| -> Vec<String> {
        (from..to).map(|i| format!("u{i}@x.com,{i}\n")).collect()
    };
    let csv = |rows: &[String]| format!("email,n\n{}", rows.concat());
    let old = dir.file("old.csv", &csv(&rows(0, 20_000)));
    import(db, &old, &table)
        .with_key(["email"])
        .execute()
        .await
        .unwrap();

    // The first 10 rows of the file are in the table.
    let overlap = dir.file("overlap.csv", &csv(&rows(19_990, 30_000)));
    // A row of the file repeats an earlier one.
    let mut repeats = rows(20_000, 30_000);
    repeats[3_000] = repeats[1_000].clone();
    let repeats = dir.file("repeats.csv", &csv(&repeats));
    for (file, counts, expected) in [
        (
            &overlap,
            (10, 0),
            "line 2: email=\"u19990@x.com\" already exists",
        ),
        (
            &repeats,
            (0, 1),
            "line 3002: email=\"u21000@x.com\" repeats line 1002",
        ),
    ] {
        let err = import(db, file, &table)
            .with_key(["email"])
            .execute()
            .await
            .unwrap_err();
        let AtlasError::Duplicates(report) = &err else {
            panic!("expected duplicates, got {err}");
        };
        assert_eq!((report.existing, report.in_file), counts, "{err}");
        assert!(err.to_string().contains(expected), "{err}");
    }

    // Keyed by n, the row of u5 is new; its email is not.
    let mut unexplained = rows(20_000, 30_000);
    unexplained[5_000] = "u5@x.com,99999999\n".into();
    let err = import(db, &dir.file("unexplained.csv", &csv(&unexplained)), &table)
        .with_key(["n"])
        .execute()
        .await
        .unwrap_err();
    assert_eq!(err.class(), ErrorClass::Database, "{err}");
    let message = err.to_string();
    let says = match db.kind {
        Kind::Postgres => "(Key (email)=(u5@x.com) already exists.)",
        Kind::MySql => "Duplicate entry 'u5@x.com'",
        Kind::Sqlite => "UNIQUE constraint failed",
    };
    assert!(message.contains(says), "{message}");
    assert!(!message.contains(" at line "), "{message}");
    assert_eq!(db.count(&table).await, 20_000);
}

on_every_database_and_strategy!(
    unique_index_refusals_are_duplicates,
    refusal_names_the_keys_of_late_rows,
    existing_text_with_escapes_round_trips,
    parquet_ndjson_and_delimited_sources,
    refused_import_leaves_table_unchanged,
    skip_counts,
    within_file_duplicates,
    null_keys_are_equal,
    integer_key_compares_after_coercion,
    file_level_refusal_and_force,
    bad_value_in_last_chunk_writes_nothing,
    failure_between_chunks_writes_nothing,
    quoted_fields_and_row_numbers,
    new_table_from_inferred_types,
    unknown_columns_are_listed,
    invariant_under_partitions_and_chunks,
);

/// SQLite reads existing keys in rowid ranges; tables without a usable rowid
/// are read row by row, with the same result.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_key_scan_without_rowid() {
    let db = TestDb::new(Kind::Sqlite).await;
    let dir = TempDir::new();
    let without = db.table("without_rowid");
    let shadowed = db.table("shadowed_rowid");
    db.exec(&format!(
        "CREATE TABLE \"{without}\" (k TEXT PRIMARY KEY, v INTEGER) WITHOUT ROWID;
         INSERT INTO \"{without}\" VALUES ('a', 1), ('b', 2);
         CREATE TABLE \"{shadowed}\" (rowid INTEGER, k TEXT, v INTEGER);
         INSERT INTO \"{shadowed}\" VALUES (5, 'a', 1), (5, 'b', 2)"
    ))
    .await;
    let csv = dir.file("k.csv", "k,v\na,1\nc,3\nb,2\n");
    for table in [&without, &shadowed] {
        let report = import(&db, &csv, table)
            .with_force(true)
            .with_on_duplicate(OnDuplicate::Skip)
            .execute()
            .await
            .unwrap();
        assert_eq!(
            (report.inserted, report.duplicates_existing),
            (1, 2),
            "{table}"
        );
    }
    db.cleanup().await;
}

/// The probe joins on an indexed key column when there is one; keys with a
/// NULL in that column, or in the others, still match NULL-safely.
async fn probe_by_an_index_keeps_null_semantics(db: &TestDb) {
    let dir = TempDir::new();
    let table = db.table("probeidx");
    create(db, &table, "a INTEGER, b TEXT").await;
    db.exec(&format!(
        "CREATE INDEX \"{table}_a\" ON \"{table}\" (a); \
         INSERT INTO \"{table}\" (a, b) VALUES (1, NULL), (NULL, 'x'), (2, 'y')"
    ))
    .await;
    let csv = "a,b\n1,\n,x\n2,y\n3,\n,z\n";
    for strategy in [
        atlas_import::KeyStrategy::Probe,
        atlas_import::KeyStrategy::Preload,
    ] {
        let report = import(db, &dir.file("p.csv", csv), &table)
            .with_strategy(strategy)
            .with_on_duplicate(OnDuplicate::Skip)
            .with_force(true)
            .execute()
            .await
            .unwrap();
        assert_eq!(
            (report.duplicates_existing, report.inserted),
            if strategy == atlas_import::KeyStrategy::Probe {
                (3, 2)
            } else {
                (5, 0)
            },
            "{strategy}"
        );
    }
    assert_eq!(db.count(&table).await, 5);
}

crate::on_every_database!(probe_by_an_index_keeps_null_semantics);

/// Under `ON DUPLICATE ERROR` the probe's verdict waits for every
/// partition's values, while the merge above the check waits for each
/// partition's next batch: a partition that ends first must not keep its
/// stream open for the verdict. On a current-thread runtime (nothing runs
/// ahead in tasks of its own) that was a hang; the verdict still refuses.
#[tokio::test(flavor = "current_thread")]
async fn probe_verdict_on_a_current_thread_runtime() {
    let db = TestDb::new(Kind::Sqlite).await;
    let dir = TempDir::new();
    let table = db.table("probe_one_thread");
    create(&db, &table, "a INTEGER, b TEXT").await;
    db.exec(&format!("INSERT INTO \"{table}\" (a, b) VALUES (7, 'x')"))
        .await;
    for (strategy, fresh) in [
        (atlas_import::KeyStrategy::Probe, "a,b\n1,p\n2,q\n"),
        (atlas_import::KeyStrategy::Narrow, "a,b\n4,p\n5,q\n"),
    ] {
        let fresh = import(&db, &dir.file("fresh.csv", fresh), &table)
            .with_strategy(strategy)
            .with_force(true)
            .execute()
            .await
            .unwrap();
        assert_eq!(fresh.inserted, 2, "{strategy}");
        let refused = import(&db, &dir.file("dup.csv", "a,b\n3,r\n7,x\n"), &table)
            .with_strategy(strategy)
            .with_force(true)
            .execute()
            .await;
        assert!(
            matches!(refused, Err(AtlasError::Duplicates(_))),
            "{strategy}: {refused:?}"
        );
    }
    // The two fresh imports, nothing of the refused ones.
    assert_eq!(db.count(&table).await, 5);
    db.cleanup().await;
}

/// The probe and narrow strategies filter on the key column that tells the
/// table's rows apart best, and of two alike the cheaper one: a number rather than text
/// (PostgreSQL by its statistics, MySQL/MariaDB and SQLite by a sample of
/// the table's rows); a column of few values is never it.
async fn key_filter_on_the_most_distinct_cheapest_column(db: &TestDb) {
    let dir = TempDir::new();
    let table = db.table("narrow_column");
    create(
        db,
        &table,
        "age INTEGER, email VARCHAR(100), customer_no BIGINT",
    )
    .await;
    let values: Vec<String> = (0..300)
        .map(|i| format!("({}, 'user{i}@x.com', {})", i % 5, 100_000 + i))
        .collect();
    db.exec(&format!(
        "INSERT INTO \"{table}\" (age, email, customer_no) VALUES {}",
        values.join(", ")
    ))
    .await;
    if db.kind == Kind::Postgres {
        db.exec(&format!("ANALYZE \"{table}\"")).await;
    }
    let csv = "age,email,customer_no\n1,new@x.com,1\n";
    let plan = import(db, &dir.file("n.csv", csv), &table)
        .explain()
        .await
        .unwrap();
    assert!(
        plan.contains("by customer_no (no index on the key)"),
        "{plan}"
    );
}

crate::on_every_database!(key_filter_on_the_most_distinct_cheapest_column);
