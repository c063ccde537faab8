//! atlas-import against `sqlite3 .import --csv` (into a table of the same
//! typed columns), in the same run.
//!
//! ```sh
//! cargo build --release -p atlas-import-cli && cargo bench --bench sqlite
//! ```
//! Sizes and cases as for the PostgreSQL bench. Results in benches/README.md.

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use atlas_import_cli::datagen;
use common::BulkDatabase;

struct Sqlite {
    path: PathBuf,
}

impl BulkDatabase for Sqlite {
    fn name(&self) -> &'static str {
        "sqlite"
    }

    fn url(&self) -> String {
        format!("sqlite://{}", self.path.display())
    }

    fn exec(&self, sql: &str) {
        common::timed("sqlite3", &[self.path.to_str().unwrap(), sql]);
    }

    fn columns(&self) -> &'static str {
        datagen::SQLITE_COLUMNS
    }

    fn identity(&self) -> &'static str {
        "id INTEGER PRIMARY KEY"
    }

    fn bulk_load(&self, table: &str, file: &Path) -> Duration {
        // A view over the file's columns, so the identity column is not one
        // of the imported ones.
        let view = format!("{table}_load");
        self.exec(&format!(
            "DROP VIEW IF EXISTS {view}; CREATE VIEW {view} AS SELECT {} FROM {table}; \
             CREATE TRIGGER IF NOT EXISTS {view}_ins INSTEAD OF INSERT ON {view} BEGIN \
             INSERT INTO {table} ({cols}) VALUES ({news}); END;",
            datagen::column_list(),
            cols = datagen::column_list(),
            news = datagen::column_list()
                .split(',')
                .map(|c| format!("NEW.{c}"))
                .collect::<Vec<_>>()
                .join(", ")
        ));
        common::timed(
            "sqlite3",
            &[
                self.path.to_str().unwrap(),
                &format!(".import --csv --skip 1 {} {view}", file.display()),
            ],
        )
    }

    fn bulk_load_name(&self) -> &'static str {
        "sqlite3 .import"
    }

    fn upsert_peer(&self, table: &str, file: &Path, indexed: bool) -> (Duration, &'static str) {
        let columns = datagen::column_list();
        let key = common::UPSERT_KEY;
        let apply = if indexed {
            format!(
                "INSERT INTO {table} ({columns}) SELECT {columns} FROM temp.atlas_peer WHERE true \
                 ON CONFLICT ({key}) DO UPDATE SET {};",
                common::upsert_assignments(|c| format!("{c} = excluded.{c}"))
            )
        } else {
            // Without an index on either side both statements compare
            // every pair of rows: the stage gets one, the INSERT an
            // uncorrelated NOT IN (which SQLite answers from a temporary index).
            format!(
                "CREATE INDEX temp.atlas_peer_key ON atlas_peer ({key}); \
                 UPDATE {table} AS t SET {} FROM temp.atlas_peer AS s WHERE t.{key} = s.{key}; \
                 INSERT INTO {table} ({columns}) SELECT {columns} FROM temp.atlas_peer \
                 WHERE {key} NOT IN (SELECT {key} FROM {table} WHERE {key} IS NOT NULL);",
                common::upsert_assignments(|c| format!("{c} = s.{c}"))
            )
        };
        let time = common::timed(
            "sqlite3",
            &[
                self.path.to_str().unwrap(),
                "BEGIN",
                &format!("CREATE TEMP TABLE atlas_peer AS SELECT {columns} FROM {table} WHERE 0"),
                &format!(
                    ".import --csv --skip 1 --schema temp {} atlas_peer",
                    file.display()
                ),
                &apply,
                "COMMIT",
            ],
        );
        let name = if indexed {
            ".import + INSERT ... ON CONFLICT"
        } else {
            ".import + index + UPDATE ... FROM + INSERT"
        };
        (time, name)
    }
}

fn main() {
    let path = common::scratch("bench.sqlite");
    let _ = std::fs::remove_file(&path);
    common::timed(
        "sqlite3",
        &[path.to_str().unwrap(), "PRAGMA journal_mode=WAL"],
    );
    common::run_cases(&Sqlite { path });
}
