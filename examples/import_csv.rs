//! Imports the sample contacts file into a fresh SQLite database twice: the
//! first import writes every row, the second finds every row already there.
//!
//! Run: `cargo run --example import_csv`

use std::sync::Arc;

use atlas_import::{AtlasError, ImportBuilder, OnDuplicate, db};

#[tokio::main]
async fn main() -> Result<(), AtlasError> {
    let dir = std::env::temp_dir().join(format!("atlas_example_{}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|e| AtlasError::io(dir.display().to_string(), e))?;
    let url = format!("sqlite://{}", dir.join("example.db").display());
    let database = db::connect(&url).await?;
    let sample = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/data/contacts.csv");

    let first = ImportBuilder::new(Arc::clone(&database), sample, "contacts")
        .with_key(["email"])
        .execute()
        .await?;
    println!("first import: {} rows inserted", first.inserted);

    let second = ImportBuilder::new(Arc::clone(&database), sample, "contacts")
        .with_key(["email"])
        .with_force(true)
        .with_on_duplicate(OnDuplicate::Skip)
        .execute()
        .await?;
    println!(
        "second import: {} inserted, {} skipped as duplicates",
        second.inserted, second.skipped
    );
    assert_eq!(second.skipped, first.inserted);
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}
