//! Shared helpers: real databases (a fresh SQLite file per test, uniquely named
//! tables on the PostgreSQL server), temporary files, and reading tables back.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use atlas_import::db::{self, Database};
use sqlx::{AssertSqlSafe, Connection, Row};

static COUNTER: AtomicU64 = AtomicU64::new(0);

/// `name` as a quoted SQL identifier.
pub fn quoted(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// A name unique to this process and call.
pub fn unique(prefix: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    format!(
        "{prefix}_{}_{}_{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed),
        nanos % 100_000
    )
}

/// A temporary directory removed on drop.
pub struct TempDir(PathBuf);

impl TempDir {
    pub fn new() -> Self {
        let dir = std::env::temp_dir().join(unique("atlas_it"));
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }

    /// Writes `content` to `name` inside the directory.
    pub fn file(&self, name: &str, content: &str) -> PathBuf {
        let path = self.0.join(name);
        std::fs::write(&path, content).unwrap();
        path
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Sqlite,
    Postgres,
    MySql,
}

pub fn postgres_url() -> String {
    std::env::var("ATLAS_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_string())
}

pub fn mysql_url() -> String {
    std::env::var("ATLAS_TEST_MYSQL_URL")
        .unwrap_or_else(|_| "mysql://root@127.0.0.1:3306/test".to_string())
}

/// A MySQL/MariaDB connection that quotes identifiers with `"` and reads
/// string literals as the other databases do (no backslash escapes).
pub async fn mysql_connection(url: &str) -> sqlx::MySqlConnection {
    let mut c = sqlx::MySqlConnection::connect(url).await.unwrap();
    sqlx::query("SET SESSION sql_mode = CONCAT(@@sql_mode, ',ANSI_QUOTES,NO_BACKSLASH_ESCAPES'), time_zone = '+00:00'")
        .execute(&mut c)
        .await
        .unwrap();
    c
}

/// One test's database: its URL, a connected adapter, and the tables it made.
pub struct TestDb {
    pub kind: Kind,
    pub url: String,
    pub db: Arc<dyn Database>,
    tables: std::sync::Mutex<Vec<String>>,
    _dir: TempDir,
}

impl TestDb {
    pub async fn new(kind: Kind) -> Self {
        let dir = TempDir::new();
        let url = match kind {
            Kind::Sqlite => format!("sqlite://{}", dir.path().join("test.db").display()),
            Kind::Postgres => postgres_url(),
            Kind::MySql => mysql_url(),
        };
        let db = match db::connect(&url).await {
            Ok(db) => db,
            Err(e) => panic!(
                "cannot reach the test database at {url}: {e}\n\
                 PostgreSQL tests need the server on 127.0.0.1:5432 (or ATLAS_TEST_POSTGRES_URL); start it with:\n  \
                 pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start\n\
                 MariaDB tests need the server on 127.0.0.1:3306 (or ATLAS_TEST_MYSQL_URL); start it with:\n  \
                 start-stop-daemon --start --oknodo --background --exec /usr/sbin/mariadbd"
            ),
        };
        TestDb {
            kind,
            url,
            db,
            tables: Default::default(),
            _dir: dir,
        }
    }

    /// A table name unique to this test, dropped by [`TestDb::cleanup`].
    pub fn table(&self, prefix: &str) -> String {
        let name = unique(prefix).to_lowercase();
        self.tables.lock().unwrap().push(name.clone());
        name
    }

    /// Runs SQL statements (separated by `;`) on a fresh connection.
    pub async fn exec(&self, sql: &str) {
        for statement in sql.split(';').map(str::trim).filter(|s| !s.is_empty()) {
            self.exec_one(statement).await;
        }
    }

    /// Runs one SQL statement (which may contain `;` in names) on a fresh connection.
    pub async fn exec_one(&self, statement: &str) {
        {
            match self.kind {
                Kind::Sqlite => {
                    let mut c = sqlx::SqliteConnection::connect(&self.url).await.unwrap();
                    sqlx::query(AssertSqlSafe(statement.to_string()))
                        .execute(&mut c)
                        .await
                        .unwrap_or_else(|e| panic!("{statement}: {e}"));
                }
                Kind::Postgres => {
                    let mut c = sqlx::PgConnection::connect(&self.url).await.unwrap();
                    sqlx::query(AssertSqlSafe(statement.to_string()))
                        .execute(&mut c)
                        .await
                        .unwrap_or_else(|e| panic!("{statement}: {e}"));
                }
                Kind::MySql => {
                    let mut c = mysql_connection(&self.url).await;
                    sqlx::query(AssertSqlSafe(statement.to_string()))
                        .execute(&mut c)
                        .await
                        .unwrap_or_else(|e| panic!("{statement}: {e}"));
                }
            }
        }
    }

    /// Every row of `columns` of `table` as text, sorted.
    pub async fn rows(&self, table: &str, columns: &[&str]) -> Vec<Vec<Option<String>>> {
        self.rows_where(table, columns, "1 = 1").await
    }

    /// The rows of `columns` of `table` that satisfy `filter`, as text, sorted.
    pub async fn rows_where(
        &self,
        table: &str,
        columns: &[&str],
        filter: &str,
    ) -> Vec<Vec<Option<String>>> {
        let select = columns
            .iter()
            .map(|c| match self.kind {
                Kind::Sqlite => format!("CAST({} AS TEXT)", quoted(c)),
                Kind::Postgres => format!("{}::text", quoted(c)),
                Kind::MySql => format!("CAST({} AS CHAR)", quoted(c)),
            })
            .collect::<Vec<_>>()
            .join(", ");
        let sql = format!("SELECT {select} FROM {} WHERE {filter}", quoted(table));
        let mut out: Vec<Vec<Option<String>>> = match self.kind {
            Kind::Sqlite => {
                let mut c = sqlx::SqliteConnection::connect(&self.url).await.unwrap();
                sqlx::query(AssertSqlSafe(sql))
                    .fetch_all(&mut c)
                    .await
                    .unwrap()
                    .iter()
                    .map(|r| (0..columns.len()).map(|i| r.get(i)).collect())
                    .collect()
            }
            Kind::Postgres => {
                let mut c = sqlx::PgConnection::connect(&self.url).await.unwrap();
                sqlx::query(AssertSqlSafe(sql))
                    .fetch_all(&mut c)
                    .await
                    .unwrap()
                    .iter()
                    .map(|r| (0..columns.len()).map(|i| r.get(i)).collect())
                    .collect()
            }
            Kind::MySql => {
                let mut c = mysql_connection(&self.url).await;
                sqlx::query(AssertSqlSafe(sql))
                    .fetch_all(&mut c)
                    .await
                    .unwrap()
                    .iter()
                    .map(|r| (0..columns.len()).map(|i| r.get(i)).collect())
                    .collect()
            }
        };
        out.sort();
        out
    }

    /// Rows in `table` (0 when it does not exist).
    pub async fn count(&self, table: &str) -> i64 {
        if self.db.describe_table(table).await.unwrap().is_none() {
            return 0;
        }
        self.scalar(&format!("SELECT COUNT(*) FROM {}", quoted(table)))
            .await
    }

    /// Whether `table` exists.
    pub async fn exists(&self, table: &str) -> bool {
        self.db.describe_table(table).await.unwrap().is_some()
    }

    /// `file_imports` rows for `table`.
    pub async fn file_imports(&self, table: &str) -> i64 {
        if !self.exists("file_imports").await {
            return 0;
        }
        self.scalar(&format!(
            "SELECT COUNT(*) FROM file_imports WHERE table_name = '{table}'"
        ))
        .await
    }

    /// The one integer `sql` returns.
    pub async fn scalar(&self, sql: &str) -> i64 {
        match self.kind {
            Kind::Sqlite => {
                let mut c = sqlx::SqliteConnection::connect(&self.url).await.unwrap();
                sqlx::query_scalar(AssertSqlSafe(sql.to_string()))
                    .fetch_one(&mut c)
                    .await
                    .unwrap()
            }
            Kind::Postgres => {
                let mut c = sqlx::PgConnection::connect(&self.url).await.unwrap();
                sqlx::query_scalar(AssertSqlSafe(sql.to_string()))
                    .fetch_one(&mut c)
                    .await
                    .unwrap()
            }
            Kind::MySql => {
                let mut c = mysql_connection(&self.url).await;
                sqlx::query_scalar(AssertSqlSafe(sql.to_string()))
                    .fetch_one(&mut c)
                    .await
                    .unwrap()
            }
        }
    }

    /// Runs a test body, then cleans up whether it passed or panicked.
    pub async fn run(&self, body: impl std::future::Future<Output = ()>) {
        use futures::FutureExt;
        let outcome = std::panic::AssertUnwindSafe(body).catch_unwind().await;
        self.cleanup().await;
        if let Err(panic) = outcome {
            std::panic::resume_unwind(panic);
        }
    }

    /// Drops this test's tables and their `file_imports` rows.
    pub async fn cleanup(&self) {
        let tables = self.tables.lock().unwrap().clone();
        for t in tables {
            self.drop_table(&t).await;
        }
    }

    /// Drops `table` if it exists, and its `file_imports` and
    /// `import_history` rows.
    pub async fn drop_table(&self, table: &str) {
        self.exec_one(&format!("DROP TABLE IF EXISTS {}", quoted(table)))
            .await;
        for metadata in ["file_imports", "import_history"] {
            if self.exists(metadata).await {
                self.exec_one(&format!(
                    "DELETE FROM {metadata} WHERE table_name = '{}'",
                    table.replace('\'', "''")
                ))
                .await;
            }
        }
    }
}

/// Declares one async test per database: `name::sqlite`, `name::postgres`
/// and `name::mysql` (MariaDB).
#[macro_export]
macro_rules! on_every_database {
    ($($name:ident),* $(,)?) => {
        $(
            mod $name {
                use $crate::common::{Kind, TestDb};

                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn sqlite() {
                    let db = TestDb::new(Kind::Sqlite).await;
                    db.run(super::$name(&db)).await;
                }

                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn postgres() {
                    let db = TestDb::new(Kind::Postgres).await;
                    db.run(super::$name(&db)).await;
                }

                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn mysql() {
                    let db = TestDb::new(Kind::MySql).await;
                    db.run(super::$name(&db)).await;
                }
            }
        )*
    };
}
