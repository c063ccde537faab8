//! atlas-import against `LOAD DATA LOCAL INFILE` on MySQL/MariaDB, in the
//! same run.
//!
//! ```sh
//! cargo build --release -p atlas-import-cli && cargo bench --bench mysql
//! ```
//! Sizes and cases as for the PostgreSQL bench; server: `ATLAS_TEST_MYSQL_URL`
//! (default mysql://root@127.0.0.1:3306/test). Results in benches/README.md.

mod common;

use std::path::Path;
use std::time::Duration;

use atlas_import_cli::datagen;
use common::BulkDatabase;

struct MySql {
    url: String,
}

impl MySql {
    fn client_args(&self) -> Vec<String> {
        let url = url::Url::parse(&self.url).expect("a mysql:// URL");
        vec![
            format!("--host={}", url.host_str().unwrap_or("127.0.0.1")),
            format!("--port={}", url.port().unwrap_or(3306)),
            format!("--user={}", url.username()),
            "--local-infile=1".into(),
            url.path().trim_start_matches('/').to_string(),
        ]
    }
}

impl BulkDatabase for MySql {
    fn name(&self) -> &'static str {
        "mariadb"
    }

    fn url(&self) -> String {
        self.url.clone()
    }

    fn exec(&self, sql: &str) {
        let mut args = self.client_args();
        args.extend(["-e".into(), sql.to_string()]);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        common::timed("mariadb", &args);
    }

    fn columns(&self) -> &'static str {
        datagen::MYSQL_COLUMNS
    }

    fn identity(&self) -> &'static str {
        "id BIGINT AUTO_INCREMENT PRIMARY KEY"
    }

    fn bulk_load(&self, table: &str, file: &Path) -> Duration {
        let mut args = self.client_args();
        args.extend(["-e".into(), load_data(table, file)]);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        common::timed("mariadb", &args)
    }

    fn upsert_peer(&self, table: &str, file: &Path, indexed: bool) -> (Duration, &'static str) {
        let columns = datagen::column_list();
        let key = common::UPSERT_KEY;
        let apply = if indexed {
            format!(
                "INSERT INTO {table} ({columns}) SELECT {columns} FROM atlas_peer \
                 ON DUPLICATE KEY UPDATE {};",
                common::upsert_assignments(|c| format!("{c} = VALUES({c})"))
            )
        } else {
            // No hash join by default: the stage gets an index for the join.
            format!(
                "ALTER TABLE atlas_peer ADD INDEX ({key}); \
                 UPDATE {table} AS t JOIN atlas_peer AS s ON t.{key} = s.{key} SET {}; \
                 INSERT INTO {table} ({columns}) SELECT {columns} FROM atlas_peer \
                 WHERE {key} NOT IN (SELECT {key} FROM {table});",
                common::upsert_assignments(|c| format!("t.{c} = s.{c}"))
            )
        };
        let script = format!(
            "CREATE TEMPORARY TABLE atlas_peer AS SELECT {columns} FROM {table} WHERE 1 = 0; \
             START TRANSACTION; {}; {apply} COMMIT;",
            load_data("atlas_peer", file)
        );
        let mut args = self.client_args();
        args.extend(["-e".into(), script]);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let name = if indexed {
            "LOAD DATA + INSERT ... ON DUPLICATE KEY UPDATE"
        } else {
            "LOAD DATA + UPDATE ... JOIN + INSERT"
        };
        (common::timed("mariadb", &args), name)
    }

    fn bulk_load_name(&self) -> &'static str {
        "LOAD DATA LOCAL INFILE"
    }

    fn server_processes(&self) -> &'static [&'static str] {
        &["mariadbd", "mysqld"]
    }
}

/// `LOAD DATA LOCAL INFILE` of a generated file into `table`; empty fields
/// are NULL, as atlas-import reads them.
fn load_data(table: &str, file: &Path) -> String {
    format!(
        "LOAD DATA LOCAL INFILE '{}' INTO TABLE {table} CHARACTER SET utf8mb4 \
         FIELDS TERMINATED BY ',' OPTIONALLY ENCLOSED BY '\"' ESCAPED BY '' \
         LINES TERMINATED BY '\\n' IGNORE 1 LINES \
         (customer_no, email, full_name, city, @age, @balance, score, signup_date, last_login, @active, @notes) \
         SET age = NULLIF(@age, ''), balance = NULLIF(@balance, ''), \
         active = (@active = 'true'), notes = NULLIF(@notes, '')",
        file.display()
    )
}

fn main() {
    let url = std::env::var("ATLAS_TEST_MYSQL_URL")
        .unwrap_or_else(|_| "mysql://root@127.0.0.1:3306/test".into());
    common::run_cases(&MySql { url });
}
