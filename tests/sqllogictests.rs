//! Runs the `.slt` files of `tests/slt/` (the sqllogictest format DataFusion
//! uses) against SQLite, PostgreSQL and MariaDB. Each file runs in one
//! DataFusion session where `IMPORT`, `CHECK IMPORT` and `EXPLAIN IMPORT` work beside ordinary SQL.
//! An import returns one row: status, inserted, skipped, duplicates_existing,
//! duplicates_in_file. Tables the files create must be named `slt_*`; they are
//! dropped before and after each file. In `EXPLAIN` output the database is
//! shown as `db=<db>` and the repository path as `<root>`.
//!
//! Run: `cargo test --test sqllogictests` (ATLAS_TEST_POSTGRES_URL and
//! ATLAS_TEST_MYSQL_URL as for the other tests).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use atlas_import::db::{self, Database};
use atlas_import::script::StatementOutcome;
use atlas_import::{AtlasError, SessionContextImportExt};
use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::util::display::{ArrayFormatter, FormatOptions};
use datafusion::prelude::SessionContext;
use sqllogictest::{DBOutput, DefaultColumnType};
use sqlx::{AssertSqlSafe, Connection};

struct AtlasDb {
    ctx: SessionContext,
    db: Arc<dyn Database>,
}

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct SltError(String);

impl From<AtlasError> for SltError {
    fn from(e: AtlasError) -> Self {
        SltError(e.to_string())
    }
}

fn rows(batches: &[RecordBatch]) -> Vec<Vec<String>> {
    let options = FormatOptions::default().with_null("NULL");
    let mut out = Vec::new();
    for batch in batches {
        let formatters: Vec<_> = batch
            .columns()
            .iter()
            .map(|c| ArrayFormatter::try_new(c.as_ref(), &options).unwrap())
            .collect();
        for row in 0..batch.num_rows() {
            out.push(
                formatters
                    .iter()
                    .map(|f| f.value(row).to_string())
                    .collect(),
            );
        }
    }
    out
}

/// `line` with the row estimates of the key strategy (`~123 rows`, which
/// each database estimates its own way) shown as `~N rows`.
fn estimates_hidden(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut rest = line;
    while let Some(at) = rest.find('~') {
        out.push_str(&rest[..at]);
        let digits = rest[at + 1..]
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(rest.len() - at - 1);
        out.push_str(if digits > 0 { "~N" } else { "~" });
        rest = &rest[at + 1 + digits..];
    }
    out.push_str(rest);
    out
}

#[async_trait::async_trait]
impl sqllogictest::AsyncDB for AtlasDb {
    type Error = SltError;
    type ColumnType = DefaultColumnType;

    async fn run(&mut self, sql: &str) -> Result<DBOutput<DefaultColumnType>, SltError> {
        let outcomes = self
            .ctx
            .sql_with_imports(Arc::clone(&self.db), sql)
            .await
            .map_err(|e| SltError(e.error.to_string()))?;
        let Some(last) = outcomes.into_iter().last() else {
            return Ok(DBOutput::StatementComplete(0));
        };
        let rows = match last {
            StatementOutcome::Import(r) => vec![vec![
                r.status.to_string(),
                r.inserted.to_string(),
                r.skipped.to_string(),
                r.duplicates_existing.to_string(),
                r.duplicates_in_file.to_string(),
            ]],
            StatementOutcome::Query(batches) => {
                if batches.iter().all(|b| b.num_columns() == 0) {
                    return Ok(DBOutput::StatementComplete(0));
                }
                rows(&batches)
            }
            StatementOutcome::Explain(plan, _) => {
                // Plans differ only in these between machines and databases.
                let root = env!("CARGO_MANIFEST_DIR").trim_start_matches('/');
                plan.lines()
                    .map(|l| {
                        vec![estimates_hidden(
                            &l.trim()
                                .replace(root, "<root>")
                                .replace("db=sqlite", "db=<db>")
                                .replace("db=postgres", "db=<db>")
                                .replace("db=mysql", "db=<db>"),
                        )]
                    })
                    .collect()
            }
        };
        let width = rows.first().map_or(1, Vec::len);
        Ok(DBOutput::Rows {
            types: vec![DefaultColumnType::Any; width],
            rows,
        })
    }

    async fn shutdown(&mut self) {}

    fn engine_name(&self) -> &str {
        "atlas-import"
    }
}

/// Names of the `slt_` tables at `url`.
async fn slt_tables(url: &str) -> Vec<String> {
    if url.starts_with("postgres") {
        let mut c = sqlx::PgConnection::connect(url).await.unwrap();
        sqlx::query_scalar(
            "SELECT tablename::text FROM pg_tables WHERE schemaname = current_schema() AND tablename LIKE 'slt\\_%'",
        )
        .fetch_all(&mut c)
        .await
        .unwrap()
    } else if url.starts_with("mysql") {
        let mut c = sqlx::MySqlConnection::connect(url).await.unwrap();
        sqlx::query_scalar(
            "SELECT CAST(table_name AS CHAR) FROM information_schema.tables WHERE table_schema = DATABASE() AND table_name LIKE 'slt\\_%'",
        )
        .fetch_all(&mut c)
        .await
        .unwrap()
    } else {
        let mut c = sqlx::SqliteConnection::connect(url).await.unwrap();
        sqlx::query_scalar(
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name LIKE 'slt\\_%' ESCAPE '\\'",
        )
        .fetch_all(&mut c)
        .await
        .unwrap()
    }
}

/// Runs one statement at `url` (identifiers quoted with `"` everywhere).
async fn execute(url: &str, sql: String) -> Result<(), sqlx::Error> {
    if url.starts_with("postgres") {
        let mut c = sqlx::PgConnection::connect(url).await?;
        sqlx::query(AssertSqlSafe(sql)).execute(&mut c).await?;
    } else if url.starts_with("mysql") {
        let mut c = sqlx::MySqlConnection::connect(url).await?;
        sqlx::query("SET SESSION sql_mode = CONCAT(@@sql_mode, ',ANSI_QUOTES')")
            .execute(&mut c)
            .await?;
        sqlx::query(AssertSqlSafe(sql)).execute(&mut c).await?;
    } else {
        let mut c = sqlx::SqliteConnection::connect(url).await?;
        sqlx::query(AssertSqlSafe(sql)).execute(&mut c).await?;
    }
    Ok(())
}

async fn drop_slt_tables(url: &str) {
    for table in slt_tables(url).await {
        let sql = format!("DROP TABLE IF EXISTS \"{table}\"");
        execute(url, sql.clone())
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"));
    }
    for metadata in ["file_imports", "import_history"] {
        // The metadata tables may not exist yet.
        let _ = execute(
            url,
            format!("DELETE FROM {metadata} WHERE table_name LIKE 'slt_%'"),
        )
        .await;
    }
}

async fn run_file(path: &Path, url: &str) -> Result<(), String> {
    let database = db::connect(url).await.map_err(|e| {
        format!(
            "cannot reach {url}: {e}\nstart PostgreSQL with: pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start\nstart MariaDB with: start-stop-daemon --start --oknodo --background --exec /usr/sbin/mariadbd"
        )
    })?;
    database
        .ensure_metadata()
        .await
        .map_err(|e| e.to_string())?;
    drop_slt_tables(url).await;
    let mut runner = sqllogictest::Runner::new(|| {
        let db = Arc::clone(&database);
        async move {
            Ok::<_, SltError>(AtlasDb {
                ctx: SessionContext::new(),
                db,
            })
        }
    });
    let result = runner
        .run_file_async(path)
        .await
        .map_err(|e| e.display(true).to_string());
    drop_slt_tables(url).await;
    result
}

fn main() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/slt");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "slt"))
        .collect();
    files.sort();
    let filter = std::env::args().nth(1).filter(|a| !a.starts_with('-'));
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let tmp = std::env::temp_dir().join(format!("atlas_slt_{}", std::process::id()));
    std::fs::create_dir_all(&tmp).unwrap();
    let postgres = std::env::var("ATLAS_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into());
    let mysql = std::env::var("ATLAS_TEST_MYSQL_URL")
        .unwrap_or_else(|_| "mysql://root@127.0.0.1:3306/test".into());
    let (mut passed, mut failed) = (0, 0);
    for file in &files {
        let name = file.file_name().unwrap().to_string_lossy().to_string();
        if filter.as_ref().is_some_and(|f| !name.contains(f.as_str())) {
            continue;
        }
        for (engine, url) in [
            (
                "sqlite",
                format!("sqlite://{}", tmp.join(format!("{name}.db")).display()),
            ),
            ("postgres", postgres.clone()),
            ("mysql", mysql.clone()),
        ] {
            match runtime.block_on(run_file(file, &url)) {
                Ok(()) => {
                    println!("ok   {name} [{engine}]");
                    passed += 1;
                }
                Err(e) => {
                    println!("FAIL {name} [{engine}]\n{e}");
                    failed += 1;
                }
            }
        }
    }
    let _ = std::fs::remove_dir_all(&tmp);
    println!("{passed} passed, {failed} failed");
    if failed > 0 || passed == 0 {
        std::process::exit(1);
    }
}
