//! Every source format round-trips the same dirty records (quoted commas,
//! quotes, newlines, unicode, empty fields, a repeated key) into a new table on
//! every database.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use atlas_import::{ImportBuilder, OnDuplicate, SourceFormat};

use crate::common::{TempDir, TestDb, s};
use crate::on_every_database;

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data")
        .join(name)
}

/// The rows every source below must produce (the repeated a@x.com skipped).
fn expected() -> Vec<Vec<Option<String>>> {
    vec![
        vec![
            s("a@x.com"),
            s("Ann \"the first\", Jr."),
            s("30"),
            s("2024-01-02"),
        ],
        vec![s("b@x.com"), s("Bob\nline two"), None, s("2024-02-29")],
        vec![s("c@x.com"), s("Zoë 北京 🚀"), s("7"), None],
    ]
}

const JSON_ARRAY: &str = r#"[
  {"email": "a@x.com", "name": "Ann \"the first\", Jr.", "age": 30, "joined": "2024-01-02"},
  {"email": "b@x.com", "name": "Bob\nline two", "age": null, "joined": "2024-02-29"},
  {"email": "c@x.com", "name": "Zo\u00eb 北京 🚀", "age": "7", "joined": ""},
  {"email": "a@x.com", "name": "Ann again", "age": 31, "joined": "2024-03-01"}
]"#;

const XML: &str = r#"<?xml version="1.0" encoding="UTF-8"?>
<contacts>
  <contact email="a@x.com"><name>Ann &quot;the first&quot;, Jr.</name><age>30</age><joined>2024-01-02</joined></contact>
  <contact email="b@x.com"><name><![CDATA[Bob
line two]]></name><age/><joined>2024-02-29</joined></contact>
  <contact email="c@x.com"><name>Zo&#235; 北京 🚀</name><age>7</age><joined></joined></contact>
  <contact email="a@x.com"><name>Ann again</name><age>31</age><joined>2024-03-01</joined></contact>
</contacts>"#;

async fn import_and_check(db: &TestDb, path: &Path, format: Option<SourceFormat>) {
    let table = db.table("formats");
    let mut builder = ImportBuilder::new(Arc::clone(&db.db), path, &table)
        .with_key(["email"])
        .with_on_duplicate(OnDuplicate::Skip);
    if let Some(format) = format {
        builder = builder.with_format(format);
    }
    let report = builder
        .execute()
        .await
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    assert_eq!(
        (report.rows_read, report.inserted, report.skipped),
        (4, 3, 1),
        "{}",
        path.display()
    );
    assert_eq!(
        db.rows(&table, &["email", "name", "age", "joined"]).await,
        expected(),
        "{}",
        path.display()
    );
}

async fn json_documents_round_trip(db: &TestDb) {
    let dir = TempDir::new();
    import_and_check(db, &dir.file("array.json", JSON_ARRAY), None).await;
    // The same records one per line, in a .json file: read as NDJSON.
    let lines: Vec<String> = serde_json::from_str::<Vec<serde_json::Value>>(JSON_ARRAY)
        .unwrap()
        .iter()
        .map(|v| v.to_string())
        .collect();
    import_and_check(db, &dir.file("lines.json", &lines.join("\n")), None).await;
    // One object is one record.
    let table = db.table("one_object");
    let report = ImportBuilder::new(
        Arc::clone(&db.db),
        dir.file("one.json", r#"{"email": "x@y", "tags": ["a", "b"]}"#),
        &table,
    )
    .execute()
    .await
    .unwrap();
    assert_eq!(report.inserted, 1);
    assert_eq!(
        db.rows(&table, &["email", "tags"]).await,
        vec![vec![s("x@y"), s(r#"["a","b"]"#)]]
    );
}

async fn xml_round_trips(db: &TestDb) {
    let dir = TempDir::new();
    import_and_check(db, &dir.file("contacts.xml", XML), None).await;
    // Records named explicitly, deeper in the document.
    let nested = XML
        .replace("<contacts>", "<export><meta><by>x</by></meta><contacts>")
        .replace("</contacts>", "</contacts></export>");
    import_and_check(
        db,
        &dir.file("nested.xml", &nested),
        Some(SourceFormat::Xml {
            record: Some("contact".into()),
        }),
    )
    .await;
}

async fn spreadsheets_and_avro_round_trip(db: &TestDb) {
    import_and_check(
        db,
        &fixture("contacts.xlsx"),
        Some(SourceFormat::Xlsx {
            sheet: Some("Contacts".into()),
        }),
    )
    .await;
    import_and_check(db, &fixture("contacts.avro"), None).await;
}

async fn tsv_round_trips(db: &TestDb) {
    let dir = TempDir::new();
    let tsv = "email\tname\tage\tjoined\n\
               a@x.com\t\"Ann \"\"the first\"\", Jr.\"\t30\t2024-01-02\n\
               b@x.com\t\"Bob\nline two\"\t\t2024-02-29\n\
               c@x.com\tZoë 北京 🚀\t7\t\n\
               a@x.com\tAnn again\t31\t2024-03-01\n";
    import_and_check(db, &dir.file("contacts.tsv", tsv), None).await;
}

/// A `.csv` whose fields are separated by semicolons (as spreadsheets write
/// them where the comma is the decimal sign) is read by its semicolons when
/// no delimiter is given.
async fn semicolon_files_round_trip(db: &TestDb) {
    let dir = TempDir::new();
    let csv = "email;name;age;joined\n\
               a@x.com;\"Ann \"\"the first\"\", Jr.\";30;2024-01-02\n\
               b@x.com;\"Bob\nline two\";;2024-02-29\n\
               c@x.com;Zoë 北京 🚀;7;\n\
               a@x.com;Ann again;31;2024-03-01\n";
    import_and_check(db, &dir.file("semicolons.csv", csv), None).await;
}

/// A Latin-1 file says so (`encoding`) and its text arrives as written;
/// read as UTF-8 it is bad data naming line, column and the option.
async fn other_encodings_are_decoded(db: &TestDb) {
    let dir = TempDir::new();
    let path = dir.path().join("latin1.csv");
    std::fs::write(
        &path,
        b"name;city\nJos\xe9;K\xf6ln\nFran\xe7oise;Z\xfcrich\n",
    )
    .unwrap();
    let table = db.table("latin1");
    let err = ImportBuilder::new(Arc::clone(&db.db), &path, &table)
        .execute()
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("line 2, column 'name'"), "{err}");
    assert!(err.contains("--encoding latin1"), "{err}");
    assert!(!db.exists(&table).await);
    let format = SourceFormat::with_options(
        None,
        Some(&path),
        &[("encoding".to_string(), "latin1".to_string())],
    )
    .unwrap();
    let report = ImportBuilder::new(Arc::clone(&db.db), &path, &table)
        .with_format(format)
        .execute()
        .await
        .unwrap();
    assert_eq!(report.inserted, 2);
    assert_eq!(
        db.rows(&table, &["name", "city"]).await,
        vec![
            vec![s("Françoise"), s("Zürich")],
            vec![s("José"), s("Köln")],
        ]
    );
}

/// Exports that end every line with the delimiter (`email;name;`) hold
/// nothing there: the file goes into a table of its named columns, and a
/// value past the header's last name is an error naming its line.
async fn a_delimiter_ending_every_line_is_no_column(db: &TestDb) {
    let dir = TempDir::new();
    let table = db.table("trailing");
    crate::common::create(db, &table, "email TEXT, name TEXT").await;
    let csv = "email;name;\na@x.com;Ann;\nb@x.com;;\n";
    let report = ImportBuilder::new(Arc::clone(&db.db), dir.file("trailing.csv", csv), &table)
        .execute()
        .await
        .unwrap();
    assert_eq!(report.inserted, 2);
    assert_eq!(
        db.rows(&table, &["email", "name"]).await,
        vec![vec![s("a@x.com"), s("Ann")], vec![s("b@x.com"), None]]
    );
    let past = dir.file("past.csv", "email;name;\nc@x.com;Cid;note\n");
    let err = ImportBuilder::new(Arc::clone(&db.db), &past, &table)
        .execute()
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("line 2 has 3 fields"), "{err}");
    assert_eq!(db.count(&table).await, 2);
}

on_every_database!(
    a_delimiter_ending_every_line_is_no_column,
    other_encodings_are_decoded,
    json_documents_round_trip,
    xml_round_trips,
    spreadsheets_and_avro_round_trip,
    tsv_round_trips,
    semicolon_files_round_trip,
);

/// Broken sources fail with what and where, before anything is written.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broken_documents_name_the_problem() {
    let db = TestDb::new(crate::common::Kind::Sqlite).await;
    let dir = TempDir::new();
    let cases = [
        (
            "bad.json",
            "[{\"a\": 1},\n 2]",
            "element 2 of the top-level array",
        ),
        ("trunc.json", "[{\"a\": 1},\n {\"a\": ", "line 2"),
        ("trunc.xml", "<r><row><a>1</a></row><row><a>", "truncated"),
        ("bad.xml", "<r><row><a>1</b></row></r>", "not well-formed"),
        ("data.docx", "x", "xlsx, xml"),
    ];
    for (name, content, expected) in cases {
        let table = db.table("broken");
        let err = ImportBuilder::new(Arc::clone(&db.db), dir.file(name, content), &table)
            .execute()
            .await
            .unwrap_err();
        assert!(err.to_string().contains(expected), "{name}: {err}");
        assert!(!db.exists(&table).await, "{name}");
    }
    let table = db.table("nosheet");
    let err = ImportBuilder::new(Arc::clone(&db.db), fixture("contacts.xlsx"), &table)
        .with_format(SourceFormat::Xlsx {
            sheet: Some("Nope".into()),
        })
        .execute()
        .await
        .unwrap_err();
    assert!(
        err.to_string()
            .contains("no sheet 'Nope' (its sheets: Cover, Contacts)"),
        "{err}"
    );
}
