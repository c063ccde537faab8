//! Names as the databases' users write them: `schema.table` targets (MySQL:
//! `database.table`, SQLite: `main.table`), quoting and folding, and new
//! tables and columns in the database's plain form.

use atlas_import::names::NamePolicy;
use atlas_import::{AtlasError, FilePolicy, OnDuplicate};

use crate::common::{Kind, TempDir, TestDb, import, s, unique};
use crate::on_every_database;

/// A schema for this test (a database on MySQL); `None` on SQLite, which has
/// one (`main`).
async fn other_schema(db: &TestDb) -> Option<String> {
    let schema = db.table("schema");
    match db.kind {
        Kind::Postgres => db.exec(&format!("CREATE SCHEMA \"{schema}\"")).await,
        Kind::MySql => db.exec(&format!("CREATE DATABASE \"{schema}\"")).await,
        Kind::Sqlite => return None,
    }
    Some(schema)
}

async fn drop_schema(db: &TestDb, schema: &str) {
    match db.kind {
        Kind::Postgres => {
            db.exec(&format!("DROP SCHEMA \"{schema}\" CASCADE")).await;
        }
        Kind::MySql => db.exec(&format!("DROP DATABASE \"{schema}\"")).await,
        Kind::Sqlite => {}
    }
    for metadata in ["file_imports", "import_history"] {
        db.exec_one(&format!(
            "DELETE FROM {metadata} WHERE table_name LIKE '{schema}.%'"
        ))
        .await;
    }
}

/// `schema.table` reaches the table of that schema, existing or new; the
/// same file into two schemas is two targets; the metadata name them so.
async fn schema_qualified_targets(db: &TestDb) {
    let dir = TempDir::new();
    let file = dir.file("c.csv", "email,n\na@x.com,1\nb@x.com,2\n");
    let Some(schema) = other_schema(db).await else {
        // SQLite: main.t is t.
        let table = db.table("main_t");
        import(db, &file, &format!("main.{table}"))
            .execute()
            .await
            .unwrap();
        assert_eq!(db.count(&table).await, 2);
        let err = import(db, &file, &table).execute().await.unwrap_err();
        assert!(
            matches!(err, AtlasError::AlreadyImported { .. }),
            "main.{table} and {table} are one target: {err}"
        );
        return;
    };
    let run = async {
        // Into an existing table of the other schema.
        db.exec(&format!(
            "CREATE TABLE \"{schema}\".existing (email TEXT, n INTEGER)"
        ))
        .await;
        let report = import(db, &file, &format!("{schema}.existing"))
            .execute()
            .await
            .unwrap();
        assert!(!report.created_table);
        assert_eq!(report.table, format!("{schema}.existing"));
        let count = db
            .scalar(&format!("SELECT COUNT(*) FROM \"{schema}\".existing"))
            .await;
        assert_eq!(count, 2);

        // A new table there; then the same file into the default schema is
        // another target, not "already imported".
        let table = db.table("two");
        let report = import(db, &file, &format!("{schema}.{table}"))
            .execute()
            .await
            .unwrap();
        assert!(report.created_table);
        let report = import(db, &file, &table).execute().await.unwrap();
        assert_eq!(report.inserted, 2);
        assert_eq!(db.count(&table).await, 2);
        let recorded = db
            .scalar(&format!(
                "SELECT COUNT(*) FROM file_imports WHERE table_name = '{schema}.{table}'"
            ))
            .await;
        assert_eq!(recorded, 1, "file_imports holds the qualified name");
        let history = db
            .scalar(&format!(
                "SELECT COUNT(*) FROM import_history WHERE table_name = '{schema}.existing'"
            ))
            .await;
        assert_eq!(history, 1);

        // The same bytes into the same qualified table again: refused.
        let err = import(db, &file, &format!("{schema}.{table}"))
            .execute()
            .await
            .unwrap_err();
        assert!(
            err.to_string().contains(&format!(
                "already been imported to table '{schema}.{table}'"
            )),
            "{err}"
        );
    };
    use futures::FutureExt;
    let outcome = std::panic::AssertUnwindSafe(run).catch_unwind().await;
    drop_schema(db, &schema).await;
    if let Err(panic) = outcome {
        std::panic::resume_unwind(panic);
    }
}

/// A dot inside a quoted name is part of the name; unquoted names fold as
/// the database folds them, quoted ones are exact.
async fn quoting_and_folding(db: &TestDb) {
    let dir = TempDir::new();
    let file = dir.file("q.csv", "k\n1\n");
    let dotted = format!("{}.x", unique("dot").to_lowercase());
    db.track(&dotted);
    import(db, &file, &format!("\"{dotted}\""))
        .execute()
        .await
        .unwrap();
    assert_eq!(db.count(&dotted).await, 1);

    let lower = db.table("mixed");
    let upper = format!("M{}", &lower[1..]);
    db.track(&upper);
    let report = import(db, &file, &format!("\"{upper}\""))
        .execute()
        .await
        .unwrap();
    assert!(report.created_table);
    assert!(db.exists(&upper).await, "a quoted name is exact");
    // Unquoted, the same letters: PostgreSQL folds them to lowercase (another
    // table); MySQL and SQLite keep them (the same table).
    let report = import(db, &file, &upper)
        .with_file_policy(FilePolicy::Allow)
        .with_on_duplicate(atlas_import::OnDuplicate::Skip)
        .execute()
        .await
        .unwrap();
    match db.kind {
        Kind::Postgres => {
            assert!(report.created_table);
            assert!(db.exists(&lower).await);
        }
        Kind::MySql | Kind::Sqlite => {
            assert!(!report.created_table);
            assert_eq!(report.skipped, 1);
        }
    }
}

/// New tables and columns take the plain form; collisions are errors naming
/// both columns; `names keep` keeps them; an existing table's columns are
/// found by the plain form when that is unambiguous.
async fn new_names_are_normalized(db: &TestDb) {
    let dir = TempDir::new();
    let file = dir.file("n.csv", "Id,E-Mail,First Name\n1,a@x.com,Ann\n");
    let plain = db.table("mycontacts");
    let table = format!("MyContacts{}", &plain["mycontacts".len()..]);
    let report = import(db, &file, &table).execute().await.unwrap();
    assert!(report.created_table);
    assert_eq!(report.table, plain);
    let described = db.describe(&plain).await.unwrap();
    let names: Vec<&str> = described.columns.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(names, ["id", "e_mail", "first_name"]);
    assert_eq!(
        db.rows(&plain, &["e_mail", "first_name"]).await,
        vec![vec![s("a@x.com"), s("Ann")]]
    );
    // The same header into the existing table: E-Mail finds e_mail.
    let again = dir.file("n2.csv", "Id,E-Mail,First Name\n2,b@x.com,Bob\n");
    import(db, &again, &table)
        .with_key(["E-Mail"])
        .execute()
        .await
        .unwrap();
    assert_eq!(db.count(&plain).await, 2);

    // Two source columns with one plain form.
    let clash = dir.file("c.csv", "E-Mail,e mail\nx,y\n");
    let err = import(db, &clash, &db.table("clash"))
        .execute()
        .await
        .unwrap_err();
    assert!(
        err.to_string()
            .contains("'E-Mail' and 'e mail' would both become column 'e_mail'"),
        "{err}"
    );

    // Kept as they are.
    let kept = db.table("kept");
    import(db, &clash, &kept)
        .with_names(NamePolicy::Keep)
        .execute()
        .await
        .unwrap();
    let described = db.describe(&kept).await.unwrap();
    let names: Vec<&str> = described.columns.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(names, ["id", "E-Mail", "e mail"]);

    // An existing table whose columns share a plain form: ambiguous.
    let ambiguous = db.table("ambiguous");
    db.exec(&format!(
        "CREATE TABLE \"{ambiguous}\" (\"e_mail\" TEXT, \"e-mail\" TEXT)"
    ))
    .await;
    let one = dir.file("o.csv", "E Mail\nz\n");
    let err = import(db, &one, &ambiguous).execute().await.unwrap_err();
    assert!(
        err.to_string()
            .contains("could be any of the columns 'e_mail', 'e-mail'"),
        "{err}"
    );
}

/// Header names with nothing left once normalized (`#`, `%`) become
/// `column_N` in a new table, and the same header finds those columns again
/// in the table it made.
async fn names_of_symbols_only_take_their_position(db: &TestDb) {
    let dir = TempDir::new();
    let table = db.table("symbols");
    let first = dir.file("s1.csv", "#,Name,%\n1,Ann,50\n2,Bob,60\n");
    let report = import(db, &first, &table).execute().await.unwrap();
    assert_eq!(report.inserted, 2);
    let described = db.describe(&table).await.unwrap();
    let names: Vec<&str> = described.columns.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(names, ["id", "column_1", "name", "column_3"]);
    let second = dir.file("s2.csv", "#,Name,%\n3,Cid,70\n1,Ann,50\n");
    let report = import(db, &second, &table)
        .with_on_duplicate(OnDuplicate::Skip)
        .execute()
        .await
        .unwrap();
    assert_eq!((report.inserted, report.skipped), (1, 1));
    assert_eq!(
        db.rows(&table, &["column_1", "name", "column_3"]).await,
        vec![
            vec![s("1"), s("Ann"), s("50")],
            vec![s("2"), s("Bob"), s("60")],
            vec![s("3"), s("Cid"), s("70")],
        ]
    );
}

/// A header name longer than the database keeps (PostgreSQL 63 bytes,
/// MySQL/MariaDB 64 characters) is cut to it in a new table, and the same
/// header finds the cut column again.
async fn long_names_are_cut_to_the_database_limit(db: &TestDb) {
    let dir = TempDir::new();
    let table = db.table("long_names");
    let long = format!("Measured {} at noon", "value ".repeat(12));
    let first = dir.file("l1.csv", &format!("{long},b\n1,2\n"));
    import(db, &first, &table).execute().await.unwrap();
    let second = dir.file("l2.csv", &format!("{long},b\n3,4\n"));
    import(db, &second, &table).execute().await.unwrap();
    let described = db.describe(&table).await.unwrap();
    let name = described.columns[1].name.clone();
    let plain = atlas_import::names::normalize(&long);
    match db.kind {
        Kind::Sqlite => assert_eq!(name, plain),
        Kind::Postgres => assert_eq!(name, plain[..63]),
        Kind::MySql => assert_eq!(name, plain[..64]),
    }
    assert_eq!(db.count(&table).await, 2);
}

on_every_database!(
    long_names_are_cut_to_the_database_limit,
    schema_qualified_targets,
    quoting_and_folding,
    new_names_are_normalized,
    names_of_symbols_only_take_their_position
);
