//! Sources beyond one local file: globs (one hash and one `file_imports` row
//! per file, one transaction), `file://`, `http://` (a local `python3 -m
//! http.server`) and `s3://` (a local moto server, installed from PyPI when
//! missing), all on 127.0.0.1.

use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use atlas_import::{AtlasError, FilePolicy, ImportBuilder, OnDuplicate};

use crate::common::{TempDir, TestDb, s};
use crate::on_every_database;

/// A free port on 127.0.0.1.
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A child process killed on drop.
struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts `command` and waits until `port` accepts connections.
fn serve(command: &mut Command, port: u16) -> Server {
    let child = command
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {command:?}: {e}"));
    let server = Server(child);
    let deadline = Instant::now() + Duration::from_secs(60);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            Instant::now() < deadline,
            "{command:?} did not listen on {port}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    server
}

/// Python's `http.server` serving `dir` on a free port of 127.0.0.1.
fn serve_directory(dir: &Path) -> (Server, u16) {
    let port = free_port();
    let server = serve(
        Command::new("python3")
            .args(["-m", "http.server", &port.to_string()])
            .args(["--bind", "127.0.0.1"])
            .current_dir(dir),
        port,
    );
    (server, port)
}

const A: &str = "email,name\na@x.com,\"Ann, \"\"A\"\"\"\nb@x.com,Bob\n";
const B: &str = "email,name\nc@x.com,\"multi\nline\"\na@x.com,Ann again\nd@x.com,Zoë\n";

async fn globs_import_every_file_in_one_transaction(db: &TestDb) {
    let dir = TempDir::new();
    let table = db.table("glob");
    dir.file("part-1.csv", A);
    dir.file("part-2.csv", B);
    dir.file("notes.txt", "not part of the glob");
    let pattern = dir.path().join("part-*.csv");
    let report = ImportBuilder::new(Arc::clone(&db.db), &pattern, &table)
        .with_key(["email"])
        .with_on_duplicate(OnDuplicate::Skip)
        .execute()
        .await
        .unwrap();
    assert_eq!(
        (report.rows_read, report.inserted, report.skipped),
        (5, 4, 1)
    );
    assert_eq!(
        db.rows(&table, &["email", "name"]).await,
        vec![
            vec![s("a@x.com"), s("Ann, \"A\"")],
            vec![s("b@x.com"), s("Bob")],
            vec![s("c@x.com"), s("multi\nline")],
            vec![s("d@x.com"), s("Zoë")],
        ]
    );
    // One file_imports row per file, counting the rows written from it.
    let records = db
        .rows_where(
            "file_imports",
            &["file_name", "record_count"],
            &format!("table_name = '{table}'"),
        )
        .await;
    let names: Vec<(String, Option<String>)> = records
        .iter()
        .map(|r| {
            let name = r[0].clone().unwrap();
            let file = Path::new(&name)
                .file_name()
                .unwrap()
                .to_string_lossy()
                .to_string();
            (file, r[1].clone())
        })
        .collect();
    assert_eq!(
        names,
        vec![("part-1.csv".into(), s("2")), ("part-2.csv".into(), s("2"))]
    );

    // The same glob again is refused; with a new file and FILE SKIP, only the
    // new file is imported.
    let err = ImportBuilder::new(Arc::clone(&db.db), &pattern, &table)
        .execute()
        .await
        .unwrap_err();
    assert!(matches!(err, AtlasError::AlreadyImported { .. }), "{err}");
    dir.file("part-3.csv", "email,name\ne@x.com,Eve\n");
    let report = ImportBuilder::new(Arc::clone(&db.db), &pattern, &table)
        .with_file_policy(FilePolicy::Skip)
        .execute()
        .await
        .unwrap();
    assert_eq!((report.rows_read, report.inserted), (1, 1));
    assert_eq!(db.file_imports(&table).await, 3);

    // A bad value in the second file names that file and its own row, and
    // nothing of the first file is written.
    let other = db.table("glob_bad");
    db.exec(&format!(
        "CREATE TABLE \"{other}\" (email VARCHAR(100), n INTEGER)"
    ))
    .await;
    dir.file("bad-1.csv", "email,n\na@x.com,1\nb@x.com,2\n");
    dir.file("bad-2.csv", "email,n\nc@x.com,3\nd@x.com,four\n");
    let err = ImportBuilder::new(Arc::clone(&db.db), dir.path().join("bad-*.csv"), &other)
        .execute()
        .await
        .unwrap_err();
    let message = err.to_string();
    assert!(
        matches!(&err, AtlasError::BadValue { row: 2, source_name, .. } if source_name.ends_with("bad-2.csv")),
        "{message}"
    );
    assert_eq!(db.count(&other).await, 0);

    // Files whose columns differ are refused before anything is read.
    dir.file("mixed-1.csv", "email,n\na@x.com,1\n");
    dir.file("mixed-2.csv", "mail,n\nb@x.com,2\n");
    let err = ImportBuilder::new(Arc::clone(&db.db), dir.path().join("mixed-*.csv"), &other)
        .execute()
        .await
        .unwrap_err();
    assert!(err.to_string().contains("differ from those of"), "{err}");
}

async fn file_and_http_urls(db: &TestDb) {
    let dir = TempDir::new();
    let path = dir.file("contacts.csv", A);
    let table = db.table("file_url");
    let url = format!("file://{}", path.display());
    let report = ImportBuilder::new(Arc::clone(&db.db), &url, &table)
        .execute()
        .await
        .unwrap();
    assert_eq!(report.inserted, 2);

    let (_server, port) = serve_directory(dir.path());
    let table = db.table("http");
    let url = format!("http://127.0.0.1:{port}/contacts.csv");
    let report = ImportBuilder::new(Arc::clone(&db.db), &url, &table)
        .execute()
        .await
        .unwrap();
    assert_eq!((report.inserted, report.source.as_str()), (2, url.as_str()));
    assert_eq!(
        db.rows(&table, &["name"]).await,
        vec![vec![s("Ann, \"A\"")], vec![s("Bob")]]
    );
    // Same bytes over HTTP as from the file: the same hash, so refused.
    let err = ImportBuilder::new(Arc::clone(&db.db), &url, &table)
        .execute()
        .await
        .unwrap_err();
    assert!(matches!(err, AtlasError::AlreadyImported { .. }), "{err}");
    // A missing object is a clear error and writes nothing.
    let missing = db.table("http_missing");
    let err = ImportBuilder::new(
        Arc::clone(&db.db),
        format!("http://127.0.0.1:{port}/nope.csv"),
        &missing,
    )
    .execute()
    .await
    .unwrap_err();
    assert!(err.to_string().contains("nope.csv"), "{err}");
    assert!(!db.exists(&missing).await);
}

on_every_database!(
    globs_import_every_file_in_one_transaction,
    file_and_http_urls
);

/// A reader elsewhere (an executor) fetches a remote object by its origin and
/// reads it only when its bytes are those the import was planned with.
#[tokio::test]
async fn an_object_fetched_again_must_have_its_planned_hash() {
    use atlas_import::source::{fetch_origin, locate};
    let served = TempDir::new();
    served.file("contacts.csv", A);
    let (_server, port) = serve_directory(served.path());
    let url = format!("http://127.0.0.1:{port}/contacts.csv");
    let located = locate(&url).await.unwrap();
    let origin = located.files[0]
        .origin
        .clone()
        .expect("a URL without password travels");
    assert_eq!(Some(&origin.sha256), located.files[0].sha256.as_ref());
    assert_eq!(origin.url, url);

    let here = TempDir::new();
    let fetched = fetch_origin(&origin, here.path()).await.unwrap();
    assert_eq!(std::fs::read_to_string(&fetched).unwrap(), A);

    // The object changed after planning: refused, nothing kept.
    served.file("contacts.csv", B);
    std::fs::remove_file(&fetched).unwrap();
    let err = fetch_origin(&origin, here.path()).await.unwrap_err();
    assert!(matches!(err, AtlasError::Source { .. }), "{err}");
    assert!(
        err.to_string()
            .contains("changed after the import was planned"),
        "{err}"
    );
    assert!(!fetched.exists());

    // A URL with a password is read where it was staged only.
    let secret = format!("http://user:pw@127.0.0.1:{port}/contacts.csv");
    let located = locate(&secret).await.unwrap();
    assert!(located.files[0].origin.is_none());
    assert!(!located.files[0].name.contains("pw"));
}

/// The physical plan that reads the object at `url`, staged here, with the
/// staged files (their copies go when they are dropped).
async fn object_read_plan(
    url: &str,
    ctx: &datafusion::prelude::SessionContext,
) -> (
    atlas_import::source::LocatedFiles,
    Arc<dyn datafusion::physical_plan::ExecutionPlan>,
) {
    use atlas_import::source::{FileSource, locate};
    let located = locate(url).await.unwrap();
    let source = FileSource::new(&located.files[0].local, None, None)
        .unwrap()
        .located(&located.files[0]);
    let plan = source
        .read(ctx)
        .await
        .unwrap()
        .create_physical_plan()
        .await
        .unwrap();
    (located, plan)
}

/// `plan` as another process holds it: encoded, the planner's staged copy
/// removed (`staged` dropped), decoded.
fn decoded_elsewhere(
    plan: Arc<dyn datafusion::physical_plan::ExecutionPlan>,
    staged: atlas_import::source::LocatedFiles,
    ctx: &datafusion::prelude::SessionContext,
) -> Arc<dyn datafusion::physical_plan::ExecutionPlan> {
    use atlas_import::codec::ImportPhysicalCodec;
    use datafusion_proto::bytes::{
        physical_plan_from_bytes_with_extension_codec, physical_plan_to_bytes_with_extension_codec,
    };
    let bytes =
        physical_plan_to_bytes_with_extension_codec(plan, &ImportPhysicalCodec::default()).unwrap();
    let copy = staged.files[0].local.clone();
    drop(staged);
    assert!(!copy.exists(), "the planner's staged copy is gone");
    physical_plan_from_bytes_with_extension_codec(
        &bytes,
        &ctx.task_ctx(),
        &ImportPhysicalCodec::default(),
    )
    .unwrap()
}

/// A Parquet or Avro object is planned without touching the file: the
/// planner's process reads its staged copy; a plan decoded in another
/// process fetches the object, checks its hash and reads it, with the
/// staged copy gone.
#[tokio::test]
async fn a_parquet_object_is_fetched_and_checked_where_its_plan_is_decoded() {
    use datafusion::arrow::array::{Int64Array, RecordBatch, StringArray};
    use datafusion::arrow::util::pretty::pretty_format_batches;
    use datafusion::physical_plan::{collect, displayable};

    let people = |names: [&str; 3]| {
        RecordBatch::try_from_iter([
            (
                "id",
                Arc::new(Int64Array::from(vec![1, 2, 3]))
                    as Arc<dyn datafusion::arrow::array::Array>,
            ),
            ("name", Arc::new(StringArray::from(names.to_vec())) as _),
        ])
        .unwrap()
    };
    let served = TempDir::new();
    served.parquet("people.parquet", &people(["Ann", "Bob", "Cy"]));
    let avro = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/contacts.avro");
    std::fs::copy(avro, served.path().join("contacts.avro")).unwrap();
    let (_server, port) = serve_directory(served.path());
    let url = format!("http://127.0.0.1:{port}/people.parquet");

    // The whole import, in this process.
    let db = TestDb::new(crate::common::Kind::Sqlite).await;
    let table = db.table("people_object");
    let report = ImportBuilder::new(Arc::clone(&db.db), &url, &table)
        .execute()
        .await
        .unwrap();
    assert_eq!((report.inserted, report.source.as_str()), (3, url.as_str()));
    assert_eq!(
        db.rows(&table, &["name"]).await,
        vec![vec![s("Ann")], vec![s("Bob")], vec![s("Cy")]]
    );

    let ctx = datafusion::prelude::SessionContext::new();
    let (staged, plan) = object_read_plan(&url, &ctx).await;
    let text = displayable(plan.as_ref()).indent(true).to_string();
    assert!(
        text.contains(&format!("ObjectFileExec: file={url}, format=parquet")),
        "{text}"
    );
    let here = collect(Arc::clone(&plan), ctx.task_ctx()).await.unwrap();
    let expected = pretty_format_batches(&[people(["Ann", "Bob", "Cy"])])
        .unwrap()
        .to_string();
    assert_eq!(pretty_format_batches(&here).unwrap().to_string(), expected);
    let elsewhere = decoded_elsewhere(plan, staged, &ctx);
    let fetched = collect(Arc::clone(&elsewhere), ctx.task_ctx())
        .await
        .unwrap();
    assert_eq!(
        pretty_format_batches(&fetched).unwrap().to_string(),
        expected
    );

    // The object changed after planning: refused.
    served.parquet("people.parquet", &people(["Ann", "Bob", "Changed"]));
    let err = collect(elsewhere, ctx.task_ctx()).await.unwrap_err();
    assert!(
        err.to_string()
            .contains("changed after the import was planned"),
        "{err}"
    );

    // An Avro object reads the same here and elsewhere.
    let url = format!("http://127.0.0.1:{port}/contacts.avro");
    let (staged, plan) = object_read_plan(&url, &ctx).await;
    let here = collect(Arc::clone(&plan), ctx.task_ctx()).await.unwrap();
    assert!(here.iter().map(|b| b.num_rows()).sum::<usize>() > 0);
    let fetched = collect(decoded_elsewhere(plan, staged, &ctx), ctx.task_ctx())
        .await
        .unwrap();
    assert_eq!(
        pretty_format_batches(&fetched).unwrap().to_string(),
        pretty_format_batches(&here).unwrap().to_string()
    );
}

/// Makes sure the moto S3 server is installed (from PyPI).
fn ensure_moto() {
    let have = Command::new("python3")
        .args(["-c", "import moto.server, boto3"])
        .status()
        .is_ok_and(|s| s.success());
    if !have {
        let status = Command::new("python3")
            .args(["-m", "pip", "install", "--quiet", "moto[server]"])
            .status()
            .expect("python3 -m pip");
        assert!(status.success(), "pip install moto[server] failed");
    }
}

/// A moto S3 server on 127.0.0.1 with an empty bucket `atlas`, stopped when
/// dropped.
pub(crate) struct Moto {
    _server: Server,
    endpoint: String,
}

impl Moto {
    pub(crate) fn start() -> Self {
        ensure_moto();
        let port = free_port();
        let server = serve(
            Command::new("python3").args([
                "-m",
                "moto.server",
                "-H",
                "127.0.0.1",
                "-p",
                &port.to_string(),
            ]),
            port,
        );
        let moto = Moto {
            _server: server,
            endpoint: format!("http://127.0.0.1:{port}"),
        };
        moto.python("s3.create_bucket(Bucket='atlas')");
        moto
    }

    /// Runs `statement` with `s3`, a boto3 client of this server.
    fn python(&self, statement: &str) {
        let script = format!(
            "import boto3\n\
             s3 = boto3.client('s3', endpoint_url='{}', region_name='us-east-1', \
             aws_access_key_id='test', aws_secret_access_key='test')\n{statement}\n",
            self.endpoint
        );
        let status = Command::new("python3")
            .args(["-c", &script])
            .status()
            .unwrap();
        assert!(status.success(), "{statement}");
    }

    /// Stores `body` as `atlas/key`.
    pub(crate) fn put(&self, key: &str, body: &[u8]) {
        let dir = TempDir::new();
        let file = dir.path().join("body");
        std::fs::write(&file, body).unwrap();
        self.python(&format!(
            "s3.upload_file({:?}, 'atlas', {key:?})",
            file.display().to_string()
        ));
    }

    /// The AWS environment that reaches this server.
    pub(crate) fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("AWS_ACCESS_KEY_ID", "test".into()),
            ("AWS_SECRET_ACCESS_KEY", "test".into()),
            ("AWS_REGION", "us-east-1".into()),
            ("AWS_ENDPOINT_URL", self.endpoint.clone()),
        ]
    }
}

/// S3 through the real binary, against moto on 127.0.0.1: a single object
/// and a glob over a prefix; credentials and endpoint from the usual AWS
/// environment variables.
#[test]
fn s3_objects_and_prefix_globs_through_the_cli() {
    let moto = Moto::start();
    moto.put("in/2024/a.csv", A.as_bytes());
    moto.put("in/2024/b.csv", B.as_bytes());
    moto.put("in/2024/skip.txt", b"x");

    let dir = TempDir::new();
    let db = format!("sqlite://{}", dir.path().join("s3.db").display());
    let run = |source: &str, table: &str| {
        Command::new(crate::cli::binary())
            .args([
                "import",
                source,
                "--table",
                table,
                "--db",
                &db,
                "--key",
                "email",
                "--on-duplicate",
                "skip",
                "--json",
            ])
            .envs(moto.env())
            .env_remove("DATABASE_URL")
            .output()
            .unwrap()
    };
    let out = run("s3://atlas/in/2024/a.csv", "single");
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report = crate::cli::json(&out);
    assert_eq!(report["inserted"], 2);
    assert_eq!(report["source"], "s3://atlas/in/2024/a.csv");

    let out = run("s3://atlas/in/*/*.csv", "globbed");
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report = crate::cli::json(&out);
    assert_eq!(
        (
            &report["rows_read"],
            &report["inserted"],
            &report["skipped"]
        ),
        (&5.into(), &4.into(), &1.into())
    );

    // A missing object: exit 5 (bad source), nothing written.
    let out = run("s3://atlas/in/2024/none.csv", "missing");
    assert_eq!(
        out.status.code(),
        Some(5),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("s3://atlas/in/2024/none.csv"));
}
