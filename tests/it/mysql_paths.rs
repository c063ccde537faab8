//! MySQL/MariaDB write methods: `LOAD DATA LOCAL INFILE` fed from memory (the
//! default), array binding (MariaDB where local infile is refused:
//! `local-infile=false`, or a server with `local_infile=0`) and multi-row
//! INSERT (MySQL there) must store the same values, and a value the server would change under any of
//! them is refused with nothing written. The probe's reads stay within the
//! server's `max_allowed_packet`.

use std::sync::Arc;

use atlas_import::db;

use crate::common::{Kind, TempDir, TestDb, create, mysql_url, s};

/// The test server's URL with `parameter` added.
fn url_with(parameter: &str) -> String {
    let url = mysql_url();
    let separator = if url.contains('?') { '&' } else { '?' };
    format!("{url}{separator}{parameter}")
}

const COLUMNS: &str = "u BIGINT UNSIGNED, i BIGINT, f DOUBLE, amount DECIMAL(12,2), \
     d DATE, dt DATETIME(6), s TEXT, b VARBINARY(16), flag BOOLEAN, bits BIT(9)";

/// Values that differ between the two encodings if either is wrong: the
/// largest unsigned and smallest signed 64-bit integers, a tab, a newline,
/// backslashes, quotes, the text `\N` and `NULL` (text, not NULL), UTF-8, and
/// a row of empty fields (NULLs).
const CSV: &str = "u,i,f,amount,d,dt,s,b,flag,bits\n\
18446744073709551615,-9223372036854775808,0.1,1234567890.12,2024-02-29,2024-02-29 10:11:12.123456,\"tab\there \\\\back \"\"q\"\" \\N\",hello,true,261\n\
0,1,1e-300,-0.01,1000-01-01,1970-01-01 00:00:00,NULL,\\N,false,0\n\
1,2,3,4,2000-01-01,2000-01-01 00:00:00,\"two\nlines\r\n and é ü 😀\",x,true,1\n\
,,,,,,,,,\n";

async fn written_by(url: &str, test: &TestDb, dir: &TempDir) -> Vec<Vec<Option<String>>> {
    let table = test.table("mysql_paths");
    create(test, &table, COLUMNS).await;
    let path = dir.file(&format!("{table}.csv"), CSV);
    let target = db::connect(url).await.unwrap();
    let report = atlas_import::ImportBuilder::new(Arc::clone(&target), &path, &table)
        .execute()
        .await
        .unwrap();
    assert_eq!(report.inserted, 4, "{url}");
    test.rows(
        &table,
        &["u", "i", "f", "amount", "d", "dt", "s", "b", "flag", "bits"],
    )
    .await
}

/// The URLs of every write method the test server offers, the default first.
fn write_method_urls() -> Vec<String> {
    let mut urls = vec![
        mysql_url(),
        url_with("write-method=array"),
        url_with("write-method=load-data"),
        url_with("write-method=insert"),
        url_with("local-infile=false"),
    ];
    urls.extend(unrelayed_array_url());
    urls
}

/// Array binding with its requests one after another (mysql_async's own
/// `exec_batch`): over the server's Unix socket, which the relay that
/// pipelines them does not serve; where the server runs on this machine.
fn unrelayed_array_url() -> Option<String> {
    let url = mysql_url();
    let local = ["@127.0.0.1", "@localhost"]
        .iter()
        .any(|host| url.contains(host));
    let socket = ["/run/mysqld/mysqld.sock", "/var/run/mysqld/mysqld.sock"]
        .into_iter()
        .find(|path| std::path::Path::new(path).exists())
        .filter(|_| local)?;
    Some(url_with(&format!("socket={socket}&write-method=array")))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_write_method_stores_the_same_values() {
    let test = TestDb::new(Kind::MySql).await;
    test.run(async {
        let dir = TempDir::new();
        let loaded = written_by(&mysql_url(), &test, &dir).await;
        for url in write_method_urls() {
            assert_eq!(written_by(&url, &test, &dir).await, loaded, "{url}");
        }
        let first = loaded
            .iter()
            .find(|row| row[0].as_deref() == Some("18446744073709551615"))
            .expect("the u64 maximum is stored exactly");
        assert_eq!(first[1], s("-9223372036854775808"));
        assert_eq!(first[3], s("1234567890.12"));
        assert_eq!(first[5], s("2024-02-29 10:11:12.123456"));
        assert_eq!(first[6], s("tab\there \\\\back \"q\" \\N"));
        assert_eq!(first[7], s("hello"));
        assert_eq!(first[8], s("1"));
        assert_eq!(
            first[9],
            s("\u{1}\u{5}"),
            "BIT(9) holds 261, not the bytes of '261'"
        );
        let second = loaded.iter().find(|row| row[0] == s("0")).unwrap();
        assert_eq!(second[6], s("NULL"), "the text NULL stays text");
        assert_eq!(second[7], s("\\N"), "the text \\N stays text");
        let third = loaded.iter().find(|row| row[0] == s("1")).unwrap();
        assert_eq!(third[6], s("two\nlines\r\n and é ü 😀"));
        assert!(
            loaded.iter().any(|row| row.iter().all(Option::is_none)),
            "empty fields are NULL: {loaded:?}"
        );
    })
    .await;
}

/// `LOAD DATA LOCAL` turns errors into warnings and stores an altered value
/// (a TIMESTAMP past 2038 becomes zero); the import treats any warning as an
/// error, names it, and writes nothing. INSERT and array binding refuse the
/// same value.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn values_the_server_would_alter_are_refused() {
    let test = TestDb::new(Kind::MySql).await;
    test.run(async {
        let dir = TempDir::new();
        for url in write_method_urls() {
            let table = test.table("mysql_alter");
            create(&test, &table, "t TIMESTAMP NULL, note TEXT").await;
            let path = dir.file(
                &format!("{table}.csv"),
                "t,note\n2030-01-01 00:00:00,fits\n2040-01-01 00:00:00,past 2038\n",
            );
            let target = db::connect(&url).await.unwrap();
            let err = atlas_import::ImportBuilder::new(target, &path, &table)
                .execute()
                .await
                .unwrap_err()
                .to_string();
            assert!(
                err.contains("for column"),
                "the column is named: {url}: {err}"
            );
            assert_eq!(test.count(&table).await, 0, "{url}: {err}");
        }
    })
    .await;
}

/// The server names the refused row of its statement ("at row N"); the
/// import names the file's line: past a header, a within-file duplicate
/// skipped before the write, and earlier statements of the write (rows of
/// ~10 KB put the refused one in the second array-binding request and the
/// second INSERT).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_value_names_its_line_of_the_file() {
    let test = TestDb::new(Kind::MySql).await;
    test.run(async {
        let dir = TempDir::new();
        let note = "n".repeat(10_000);
        let mut csv = String::from("t,note\n");
        for row in 1..=600 {
            // Row 2 repeats row 1.
            let second = if row == 2 { 1 } else { row };
            let year = if row == 550 { 2040 } else { 2030 };
            csv.push_str(&format!(
                "{year}-01-01 00:00:{:02},{note}{second}\n",
                second % 60
            ));
        }
        for url in write_method_urls() {
            let table = test.table("mysql_refused_line");
            create(&test, &table, "t TIMESTAMP NULL, note TEXT").await;
            let path = dir.file(&format!("{table}.csv"), &csv);
            let target = db::connect(&url).await.unwrap();
            let err = atlas_import::ImportBuilder::new(target, &path, &table)
                .with_on_duplicate(atlas_import::OnDuplicate::Skip)
                .execute()
                .await
                .unwrap_err()
                .to_string();
            assert!(
                err.contains("(line 551 of ")
                    && err.contains(&format!("{table}.csv)"))
                    && err.contains("for column"),
                "row 549 of the write is line 551 of the file: {url}: {err}"
            );
            assert_eq!(test.count(&table).await, 0, "{url}: {err}");
        }
    })
    .await;
}

/// A field longer than the server's `max_allowed_packet`: `LOAD DATA` sends
/// it in pieces (as the mariadb client sends a file) and stores it; array
/// binding and INSERT, which carry a row's parameters in one packet, refuse
/// it before sending, naming its line, on a connection still able to roll
/// back and drop the table the import created. The key check reads such a
/// value back and finds it under every strategy.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_row_longer_than_a_packet() {
    let test = TestDb::new(Kind::MySql).await;
    test.run(async {
        let max_packet = test
            .scalar("SELECT CAST(@@max_allowed_packet AS SIGNED)")
            .await;
        if max_packet > 64 << 20 {
            eprintln!("max_allowed_packet is {max_packet}: not testing a longer row");
            return;
        }
        let long = max_packet as usize + 1000;
        let dir = TempDir::new();
        let csv = format!("id,body\n1,short\n2,{}\n3,short\n", "x".repeat(long));
        for url in write_method_urls() {
            let table = test.table("mysql_long_row");
            let path = dir.file(&format!("{table}.csv"), &csv);
            let target = db::connect(&url).await.unwrap();
            let result = atlas_import::ImportBuilder::new(target, &path, &table)
                .execute()
                .await;
            let loads_data = url == mysql_url() || url.contains("load-data");
            if loads_data {
                assert_eq!(result.unwrap().inserted, 3, "{url}");
                assert_eq!(
                    test.scalar(&format!("SELECT MAX(LENGTH(body)) FROM `{table}`"))
                        .await,
                    long as i64,
                    "{url}"
                );
                // Read back (longer than a packet) and probed for (longer
                // than any statement): every row is found again.
                for strategy in [
                    atlas_import::KeyStrategy::Preload,
                    atlas_import::KeyStrategy::Probe,
                    atlas_import::KeyStrategy::Narrow,
                ] {
                    let target = db::connect(&url).await.unwrap();
                    let report = atlas_import::ImportBuilder::new(target, &path, &table)
                        .with_key(["body"])
                        .with_strategy(strategy)
                        .with_force(true)
                        .with_on_duplicate(atlas_import::OnDuplicate::Skip)
                        .execute()
                        .await
                        .unwrap();
                    assert_eq!(
                        (report.inserted, report.skipped),
                        (0, 3),
                        "{url} {strategy:?}"
                    );
                }
            } else {
                let err = result.unwrap_err().to_string();
                assert!(
                    err.contains("(line 3 of ") && err.contains("max_allowed_packet"),
                    "{url}: {err}"
                );
                assert!(!test.exists(&table).await, "{url}: {err}");
            }
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_url_parameters_are_refused() {
    // Refused while parsing, before any connection is tried.
    let Err(err) = db::connect("mysql://someone:s3cret@127.0.0.1:1/test?ssl_mode=disabled").await
    else {
        panic!("an unknown parameter is an error");
    };
    let err = err.to_string();
    assert!(err.contains("ssl_mode"), "{err}");
    assert!(!err.contains("s3cret"), "no password in errors: {err}");
}

/// A write method the server or the URL does not allow is a usage error
/// when the import begins, before anything is written.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_method_not_allowed_is_refused() {
    let test = TestDb::new(Kind::MySql).await;
    test.run(async {
        let dir = TempDir::new();
        let table = test.table("method_refused");
        create(&test, &table, "n INT").await;
        let path = dir.file("method_refused.csv", "n\n1\n");
        let target = db::connect(&url_with("local-infile=false&write-method=load-data"))
            .await
            .unwrap();
        let err = atlas_import::ImportBuilder::new(target, &path, &table)
            .execute()
            .await
            .unwrap_err();
        let message = err.to_string();
        assert!(
            matches!(err, atlas_import::AtlasError::Usage(_)),
            "{message}"
        );
        assert!(message.contains("write-method=load-data"), "{message}");
        assert_eq!(test.count(&table).await, 0);
    })
    .await;
}

/// A probe whose list of values is longer than the server's
/// `max_allowed_packet` reads the table's keys in as many statements (one
/// statement failed: "Packet is larger than max_allowed_packet"), and finds
/// every existing key.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_probe_longer_than_the_packet_limit_reads_in_several_statements() {
    let test = TestDb::new(Kind::MySql).await;
    test.run(async {
        let packet = test
            .scalar("SELECT CAST(@@max_allowed_packet AS SIGNED)")
            .await as usize;
        assert!(
            packet <= 64 << 20,
            "this test sizes its values by max_allowed_packet ({packet}); at most 64 MiB keeps \
             its file small"
        );
        // 60,000 distinct values of the file's key column, together half
        // again as long as a packet.
        let (existing, rows) = (30_000usize, 60_000usize);
        let width = packet * 3 / 2 / rows + 1;
        let value = |n: usize| format!("{n:0width$}");
        let table = test.table("probe_packet");
        create(&test, &table, "email TEXT, n INT").await;
        // Rows 0..existing are in the table; the file holds existing/2..
        // (half of them there already).
        test.exec(&format!(
            "INSERT INTO \"{table}\" (email, n) \
             SELECT LPAD(seq, {width}, '0'), seq FROM seq_0_to_{}",
            existing - 1
        ))
        .await;
        let csv: String = std::iter::once("email,n\n".to_string())
            .chain((existing / 2..existing / 2 + rows).map(|n| format!("{},{n}\n", value(n))))
            .collect();
        let dir = TempDir::new();
        let path = dir.file("probe_packet.csv", &csv);
        let report = atlas_import::ImportBuilder::new(Arc::clone(&test.db), &path, &table)
            .with_strategy(atlas_import::KeyStrategy::Probe)
            .with_key(["email"])
            .with_on_duplicate(atlas_import::OnDuplicate::Skip)
            .execute()
            .await
            .expect("the probe reads in statements that fit the packet limit");
        assert_eq!(report.skipped, (existing / 2) as u64);
        assert_eq!(report.inserted, (rows - existing / 2) as u64);
        assert_eq!(
            test.count(&table).await,
            (existing / 2 + rows) as i64,
            "every value once"
        );
    })
    .await;
}

/// A file that turns out malformed while the server is taking its rows
/// (an unterminated quote at line 150,002 of 200,001) is refused over a
/// connection that still works, by every write method: the rows sent are
/// rolled back and a table the import created is dropped, not left behind
/// empty.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_failing_during_load_data_leaves_no_table() {
    let test = TestDb::new(Kind::MySql).await;
    test.run(async {
        let csv: String = std::iter::once("n,note\n".to_string())
            .chain((0..200_000).map(|n| match n {
                150_000 => format!("{n},\"unterminated, quote\n"),
                _ => format!("{n},row {n} of the file\n"),
            }))
            .collect();
        let dir = TempDir::new();
        let path = dir.file("malformed_late.csv", &csv);
        for url in write_method_urls() {
            let target = db::connect(&url).await.unwrap();
            for existing in [false, true] {
                let table = test.table("late_bad");
                if existing {
                    create(&test, &table, "n BIGINT, note TEXT").await;
                }
                let err = atlas_import::ImportBuilder::new(Arc::clone(&target), &path, &table)
                    .execute()
                    .await
                    .unwrap_err()
                    .to_string();
                assert!(err.contains("line 150002"), "{url}: {err}");
                assert_eq!(test.exists(&table).await, existing, "{url}: {err}");
                assert_eq!(test.count(&table).await, 0, "{url}");
            }
        }
    })
    .await;
}

/// Array binding sends a file larger than one request (4 MiB of parameters)
/// in several, each declaring its parameters' types: a column that is NULL
/// in every row of the first requests and text later is stored as INSERT
/// stores it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn array_requests_declare_their_own_types() {
    let test = TestDb::new(Kind::MySql).await;
    test.run(async {
        let dir = TempDir::new();
        let rows = 30_000;
        let padding = "x".repeat(400);
        let csv: String = std::iter::once("n,late,pad,d\n".to_string())
            .chain((0..rows).map(|n| {
                let late = if n >= 25_000 {
                    format!("late {n}")
                } else {
                    String::new()
                };
                format!("{n},{late},{padding},2024-01-{:02}\n", n % 28 + 1)
            }))
            .collect();
        let path = dir.file("array_types.csv", &csv);
        let mut stored = Vec::new();
        for url in [
            url_with("write-method=array"),
            url_with("write-method=insert"),
        ] {
            let table = test.table("array_types");
            create(&test, &table, "n INT, late TEXT, pad TEXT, d DATE").await;
            let target = db::connect(&url).await.unwrap();
            let report = atlas_import::ImportBuilder::new(target, &path, &table)
                .execute()
                .await
                .unwrap();
            assert_eq!(report.inserted, rows as u64, "{url}");
            let late = test
                .scalar(&format!(
                    "SELECT COUNT(*) FROM \"{table}\" WHERE late = CONCAT('late ', n)"
                ))
                .await;
            assert_eq!(late, 5_000, "{url}");
            stored.push(test.rows(&table, &["n", "late", "d"]).await);
        }
        assert_eq!(stored[0], stored[1]);
    })
    .await;
}
