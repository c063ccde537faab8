//! Lossless by default: no value changes its meaning on the way in, malformed
//! CSV is bad data naming its physical line, every record is accounted for,
//! and compressed sources read as they are stored. The fixtures are our own
//! small hostile files in `tests/data/lossless/`.

use std::io::Write;
use std::path::{Path, PathBuf};

use atlas_import::{AtlasError, Compression, ErrorClass, Inference, OnBadValue, OnDuplicate};

use crate::common::{Kind, TempDir, TestDb, import, s};
use crate::on_every_database;

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data/lossless")
        .join(name)
}

/// The error of an import of `name` into a new table, which must not exist
/// afterwards.
async fn refused(db: &TestDb, name: &str) -> AtlasError {
    let table = db.table("refused");
    let err = import(db, &fixture(name), &table)
        .execute()
        .await
        .unwrap_err();
    assert!(!db.exists(&table).await, "{name}: nothing may be written");
    err
}

/// Every value of a new table reads back as the text it was in the file, up
/// to how a number is written.
async fn inferred_types_keep_every_value(db: &TestDb) {
    let table = db.table("values");
    let report = import(db, &fixture("values.csv"), &table)
        .execute()
        .await
        .unwrap();
    assert_eq!((report.rows_read, report.inserted), (2, 2));
    let columns = [
        "phone", "account", "mixed", "answer", "flag", "price", "note", "code",
    ];
    let (t, f) = match db.kind {
        Kind::Postgres => ("true", "false"),
        Kind::Sqlite | Kind::MySql => ("1", "0"),
    };
    assert_eq!(
        db.rows(&table, &columns).await,
        vec![
            vec![
                s("+15551234567"),
                s("12345678901234567890"),
                s("12345678901234567"),
                s("Y"),
                s(t),
                s("5595.2"),
                s("  padded  "),
                s("007"),
            ],
            vec![
                s("+15557654321"),
                s("98765432109876543210"),
                s("123456789012345678901"),
                s("N"),
                s(f),
                s("1.5"),
                s("   "),
                s("012"),
            ],
        ]
    );
    // The same values again are all found: they compare equal after being
    // read back from the table.
    let err = import(db, &fixture("values.csv"), &table)
        .with_force(true)
        .execute()
        .await
        .unwrap_err();
    let AtlasError::Duplicates(duplicates) = err else {
        panic!("expected duplicates, got {err}");
    };
    assert_eq!(duplicates.existing, 2);
}

async fn infer_text_makes_every_column_text(db: &TestDb) {
    let table = db.table("astext");
    import(db, &fixture("values.csv"), &table)
        .with_inference(Inference::Text)
        .execute()
        .await
        .unwrap();
    let described = db.describe(&table).await.unwrap();
    let types: Vec<String> = described
        .columns
        .iter()
        .filter(|c| c.name != "id")
        .map(|c| c.data_type.to_string())
        .collect();
    assert_eq!(types, vec!["Utf8"; 8]);
    assert_eq!(
        db.rows_where(&table, &["price", "flag"], "1 = 1").await[0],
        vec![s("1.5"), s("false")]
    );
}

/// Malformed quoting is bad data: the error names the file, the physical
/// line and the column, and nothing is written.
async fn malformed_quoting_is_bad_data(db: &TestDb) {
    for (file, expected) in [
        (
            "text_after_quote.csv",
            "line 3, column 'name': text after the closing quote",
        ),
        (
            "space_after_quote.csv",
            "line 2, column 'name': text after the closing quote",
        ),
        (
            "quote_in_unquoted.csv",
            "line 2, column 'name': a quote inside an unquoted field",
        ),
        (
            "backslash_escape.csv",
            "a backslash before a quote is not an escape in this dialect",
        ),
        (
            "short_record.csv",
            "line 5 has 1 field, but the header has 2",
        ),
    ] {
        let err = refused(db, file).await;
        assert_eq!(err.class(), ErrorClass::BadData, "{file}: {err}");
        let message = err.to_string();
        assert!(
            message.contains(file) && message.contains(expected),
            "{file}: {message}"
        );
    }
}

/// A file that really is backslash-escaped says so and imports exactly.
async fn dialect_options_read_other_files(db: &TestDb) {
    let table = db.table("escaped");
    let format =
        atlas_import::SourceOptions::parse(None, None, &[("escape".into(), "\\".into())]).unwrap();
    import(db, &fixture("backslash_escape.csv"), &table)
        .with_source_options(format)
        .execute()
        .await
        .unwrap();
    assert_eq!(
        db.rows(&table, &["name"]).await,
        vec![vec![s("say \"hi\"")]]
    );

    let dir = TempDir::new();
    let table = db.table("dialect");
    let path = dir.file(
        "d.txt",
        "# exported by hand\nid|name\n1|NULL\n2|'a|b'\n3|''\n",
    );
    let options = atlas_import::SourceOptions::parse(
        Some("csv"),
        Some(&path),
        &[
            ("delimiter".into(), "|".into()),
            ("quote".into(), "'".into()),
            ("comment".into(), "#".into()),
            ("null".into(), "NULL".into()),
        ],
    )
    .unwrap();
    let report = import(db, &path, &table)
        .with_source_options(options)
        .execute()
        .await
        .unwrap();
    assert_eq!((report.rows_read, report.comment_lines), (3, 1));
    assert_eq!(
        db.rows(&table, &["id", "name"]).await,
        vec![
            vec![s("1"), None],
            vec![s("2"), s("a|b")],
            vec![s("3"), s("")],
        ]
    );
}

/// Files as spreadsheets export them read without options: a first line
/// `sep=;` names the delimiter (and is a line of the file, not a record),
/// and a UTF-16 byte-order mark the encoding.
async fn spreadsheet_exports_read_as_written(db: &TestDb) {
    let dir = TempDir::new();
    let table = db.table("sep");
    let named = "sep=;\r\nname;amount\r\nA;1,5\r\nB;2,25\r\n";
    let report = import(db, &dir.file("named.csv", named), &table)
        .execute()
        .await
        .unwrap();
    assert_eq!((report.rows_read, report.comment_lines), (2, 1));
    assert_eq!(
        db.rows(&table, &["name", "amount"]).await,
        vec![vec![s("A"), s("1,5")], vec![s("B"), s("2,25")]]
    );
    let repeated = dir.file("repeated.csv", "sep=;\nname;amount\nC;1\nC;1\n");
    let err = import(db, &repeated, &table).execute().await.unwrap_err();
    assert!(
        err.to_string()
            .contains("line 4: name=\"C\", amount=\"1\" repeats line 3"),
        "{err}"
    );

    let table = db.table("utf16");
    let text: Vec<u8> = "\u{feff}id\tname\r\n1\tcafé\r\n2\t\u{1F600}\r\n"
        .encode_utf16()
        .flat_map(u16::to_le_bytes)
        .collect();
    let path = dir.path().join("unicode.tsv");
    std::fs::write(&path, text).unwrap();
    import(db, &path, &table).execute().await.unwrap();
    assert_eq!(
        db.rows(&table, &["id", "name"]).await,
        vec![vec![s("1"), s("café")], vec![s("2"), s("\u{1F600}")]]
    );
}

/// Malformed records go to the reject file with their line and reason; the
/// rest is imported.
async fn malformed_records_can_be_rejected(db: &TestDb) {
    let dir = TempDir::new();
    let table = db.table("rejectrec");
    let rejects = dir.path().join("rejects.csv");
    let report = import(db, &fixture("short_record.csv"), &table)
        .with_on_bad_value(OnBadValue::Reject(rejects.clone()))
        .execute()
        .await
        .unwrap();
    assert_eq!(
        (report.rows_read, report.inserted, report.rejected),
        (4, 3, 1)
    );
    let mut reader = csv::Reader::from_path(&rejects).unwrap();
    let records: Vec<Vec<String>> = reader
        .records()
        .map(|r| r.unwrap().iter().map(String::from).collect())
        .collect();
    assert_eq!(records.len(), 1);
    assert_eq!(records[0][..4], ["3", "", "3", "5"], "{records:?}");
    assert!(records[0][5].contains("has 1 field"), "{records:?}");
}

/// Unquoted empty is NULL, quoted `""` is the empty string, whitespace is
/// data; in a one-column file a blank line is a row (NULL); elsewhere blank
/// lines are counted.
async fn every_record_is_accounted_for(db: &TestDb) {
    let table = db.table("blanks");
    let report = import(db, &fixture("one_column_blanks.csv"), &table)
        .with_on_duplicate(OnDuplicate::Skip)
        .execute()
        .await
        .unwrap();
    assert_eq!(
        (report.rows_read, report.inserted, report.duplicates_in_file),
        (8, 6, 2)
    );
    assert_eq!(
        db.rows(&table, &["value"]).await,
        vec![
            vec![None],
            vec![s("")],
            vec![s("  ")],
            vec![s("alpha")],
            vec![s("beta")],
            vec![s("omega")],
        ]
    );

    let table = db.table("skipped");
    let report = import(db, &fixture("blank_lines.csv"), &table)
        .execute()
        .await
        .unwrap();
    assert_eq!((report.rows_read, report.blank_lines), (2, 3));
}

/// A bad value names the physical line of its record, counting the lines
/// of a quoted field that spans several.
async fn errors_name_physical_lines(db: &TestDb) {
    let dir = TempDir::new();
    let table = db.table("lines");
    let path = dir.file("l.csv", "id,note\n1,\"a\nb\nc\"\n2,x\nthree,y\n");
    let err = import(db, &path, &table)
        .with_declared_columns([("id", "INTEGER"), ("note", "TEXT")])
        .execute()
        .await
        .unwrap_err();
    let message = err.to_string();
    assert!(
        message.contains("line 6, column 'id': \"three\""),
        "{message}"
    );
}

async fn glob_characters_in_an_existing_name(db: &TestDb) {
    let table = db.table("brackets");
    let report = import(db, &fixture("[eu]_daily-avg.csv"), &table)
        .execute()
        .await
        .unwrap();
    assert_eq!(report.inserted, 2);
}

async fn control_characters_in_a_header_are_refused(db: &TestDb) {
    let err = refused(db, "nul_header.csv").await;
    assert_eq!(err.class(), ErrorClass::BadData);
    assert!(
        err.to_string()
            .contains("column 2 contains the control character U+0000"),
        "{err}"
    );
}

fn compress(codec: Compression, bytes: &[u8]) -> Vec<u8> {
    match codec {
        Compression::Gzip => {
            let mut e = flate2::write::GzEncoder::new(Vec::new(), Default::default());
            e.write_all(bytes).unwrap();
            e.finish().unwrap()
        }
        Compression::Zstd => zstd::stream::encode_all(bytes, 3).unwrap(),
        Compression::Bzip2 => {
            let mut e = bzip2::write::BzEncoder::new(Vec::new(), Default::default());
            e.write_all(bytes).unwrap();
            e.finish().unwrap()
        }
        Compression::Xz => {
            let mut e = liblzma::write::XzEncoder::new(Vec::new(), 6);
            e.write_all(bytes).unwrap();
            e.finish().unwrap()
        }
        Compression::None => bytes.to_vec(),
    }
}

/// gzip, zstd, bzip2 and xz, by extension, for CSV and NDJSON and a glob;
/// the recorded hash is that of the bytes as stored.
async fn compressed_sources(db: &TestDb) {
    use sha2::Digest;
    let dir = TempDir::new();
    let csv = "email,n\na@x.com,1\nb@x.com,2\n";
    for (codec, extension) in [
        (Compression::Gzip, "gz"),
        (Compression::Zstd, "zst"),
        (Compression::Bzip2, "bz2"),
        (Compression::Xz, "xz"),
    ] {
        let table = db.table(extension);
        let path = dir.path().join(format!("c.csv.{extension}"));
        let bytes = compress(codec, csv.as_bytes());
        std::fs::write(&path, &bytes).unwrap();
        let report = import(db, &path, &table).execute().await.unwrap();
        assert_eq!(report.inserted, 2, "{extension}");
        assert_eq!(
            report.file_hash.as_deref(),
            Some(hex::encode(sha2::Sha256::digest(&bytes)).as_str()),
            "{extension}: the hash of the stored bytes"
        );
        assert_eq!(
            db.rows(&table, &["email", "n"]).await,
            vec![vec![s("a@x.com"), s("1")], vec![s("b@x.com"), s("2")]]
        );
    }
    let table = db.table("ndjsongz");
    let path = dir.path().join("c.ndjson.gz");
    std::fs::write(
        &path,
        compress(Compression::Gzip, b"{\"k\": 1}\n{\"k\": 2}\n"),
    )
    .unwrap();
    let report = import(db, &path, &table).execute().await.unwrap();
    assert_eq!(report.inserted, 2);

    let table = db.table("globgz");
    let glob = dir.path().join("parts");
    std::fs::create_dir_all(&glob).unwrap();
    for (i, rows) in ["k\n1\n2\n", "k\n3\n"].iter().enumerate() {
        std::fs::write(
            glob.join(format!("p{i}.csv.gz")),
            compress(Compression::Gzip, rows.as_bytes()),
        )
        .unwrap();
    }
    let report = import(db, &glob.join("*.csv.gz"), &table)
        .execute()
        .await
        .unwrap();
    assert_eq!(report.inserted, 3);

    // A corrupt stream is bad data, nothing written.
    let table = db.table("corrupt");
    let path = dir.path().join("broken.csv.gz");
    let mut bytes = compress(Compression::Gzip, csv.as_bytes());
    bytes.truncate(bytes.len() / 2);
    std::fs::write(&path, bytes).unwrap();
    let err = import(db, &path, &table).execute().await.unwrap_err();
    assert!(err.to_string().contains("broken.csv.gz"), "{err}");
    assert!(!db.exists(&table).await);
}

on_every_database!(
    inferred_types_keep_every_value,
    infer_text_makes_every_column_text,
    malformed_quoting_is_bad_data,
    dialect_options_read_other_files,
    spreadsheet_exports_read_as_written,
    malformed_records_can_be_rejected,
    every_record_is_accounted_for,
    errors_name_physical_lines,
    glob_characters_in_an_existing_name,
    control_characters_in_a_header_are_refused,
    compressed_sources,
);
