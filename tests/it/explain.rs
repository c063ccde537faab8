//! EXPLAIN snapshots: the plans the CLI prints for the sample file, compared
//! line by line with `tests/snapshots/*.txt`. A change that moves an operator,
//! a partitioning or a setting shows here as a diff. After a deliberate
//! change, `ATLAS_UPDATE_SNAPSHOTS=1 cargo test --test it explain` rewrites them.

use std::path::Path;
use std::process::Command;

use crate::cli::binary;
use crate::common::TempDir;

/// `atlas-import import examples/data/contacts.csv --table contacts --explain`
/// with `flags`, against `db`, run from the repository root (relative paths
/// in the plan).
fn explain(db: &str, flags: &[&str]) -> String {
    let mut args = vec!["--explain"];
    args.extend_from_slice(flags);
    let output = import_sample(db, &args);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap()
}

/// `atlas-import import examples/data/contacts.csv --table contacts` into
/// `db` with `flags`, from the repository root.
fn import_sample(db: &str, flags: &[&str]) -> std::process::Output {
    Command::new(binary())
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .args([
            "import",
            "examples/data/contacts.csv",
            "--table",
            "contacts",
        ])
        .args(["--db", db])
        .args(flags)
        .env_remove("DATABASE_URL")
        .env("RUST_LOG", "off")
        .output()
        .unwrap()
}

/// Compares `plan` with snapshot `name`, or writes it when asked to.
fn assert_snapshot(name: &str, plan: &str) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/snapshots")
        .join(format!("{name}.txt"));
    if std::env::var_os("ATLAS_UPDATE_SNAPSHOTS").is_some() {
        std::fs::write(&path, plan).unwrap();
        return;
    }
    let expected = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "{}: {e} (ATLAS_UPDATE_SNAPSHOTS=1 writes it)",
            path.display()
        )
    });
    if expected != plan {
        let diff: Vec<String> = expected
            .lines()
            .zip(plan.lines())
            .filter(|(a, b)| a != b)
            .map(|(a, b)| format!("- {a}\n+ {b}"))
            .collect();
        panic!(
            "the plan differs from {}:\n{}\n(line counts {} and {})",
            path.display(),
            diff.join("\n"),
            expected.lines().count(),
            plan.lines().count()
        );
    }
}

#[test]
fn a_new_table_with_the_default_policy() {
    let dir = TempDir::new();
    let db = format!("sqlite://{}", dir.path().join("new.db").display());
    assert_snapshot("new_table_error", &explain(&db, &["--key", "email"]));
}

#[test]
fn skip_by_probe_and_upsert() {
    let dir = TempDir::new();
    let db = format!("sqlite://{}", dir.path().join("existing.db").display());
    let created = import_sample(&db, &[]);
    assert!(created.status.success());
    assert_snapshot(
        "existing_table_skip_probe",
        &explain(
            &db,
            &[
                "--key",
                "email",
                "--on-duplicate",
                "skip",
                "--strategy",
                "probe",
                "--partitions",
                "2",
                "--on-duplicate-file",
                "allow",
            ],
        ),
    );
    assert_snapshot(
        "existing_table_update",
        &explain(
            &db,
            &[
                "--key",
                "email,name",
                "--on-duplicate",
                "update",
                "--on-duplicate-file",
                "allow",
                "--on-bad-value",
                "null",
            ],
        ),
    );
}
