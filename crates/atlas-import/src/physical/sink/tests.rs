//! The sink on in-memory input, writing into an embedded SQLite file: no
//! server. The transaction, the commit and the rollback are the sink's.

use std::sync::Arc;

use datafusion::arrow::array::{AsArray, RecordBatch, StringArray, UInt64Array};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef, UInt64Type};
use datafusion::datasource::memory::MemorySourceConfig;
use datafusion::datasource::sink::DataSinkExec;
use datafusion::physical_plan::collect;
use sqlx::Connection;

use super::ImportSink;
use crate::db::{Database, DbKind};
use crate::error::AtlasError;
use crate::key::KeyHasher;
use crate::names::TableRef;
use crate::options::{FilePolicy, OnDuplicate};
use crate::physical::run::task_running;
use crate::physical::{ExistingKeys, ImportId, ImportRun, TableTransaction};
use crate::report::{DuplicateKind, DuplicateSample, ImportMetrics};
use crate::schema::{ColumnSpec, ROW_NUMBER_COLUMN, TargetColumn};

fn email() -> TargetColumn {
    TargetColumn::text("email", "TEXT")
}

fn schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("email", DataType::Utf8, true),
        Field::new(ROW_NUMBER_COLUMN, DataType::UInt64, false),
    ]))
}

/// A SQLite file of its own, removed at the end.
struct SqliteFile(std::path::PathBuf);

impl SqliteFile {
    fn new(name: &str) -> Self {
        let path = std::env::temp_dir().join(format!(
            "atlas_sink_{name}_{}_{}.db",
            std::process::id(),
            ImportId::new()
        ));
        Self(path)
    }

    fn url(&self) -> String {
        format!("sqlite://{}", self.0.display())
    }

    /// The emails in `people`, or `None` when the table is not there.
    async fn emails(&self) -> Option<Vec<String>> {
        let mut conn = sqlx::SqliteConnection::connect(&self.url()).await.unwrap();
        sqlx::query_scalar::<_, String>("SELECT email FROM people ORDER BY rowid")
            .fetch_all(&mut conn)
            .await
            .ok()
    }
}

impl Drop for SqliteFile {
    fn drop(&mut self) {
        for suffix in ["", "-wal", "-shm"] {
            let _ = std::fs::remove_file(format!("{}{suffix}", self.0.display()));
        }
    }
}

/// Runs a sink writing `emails` into a new table `people` of `file` under
/// `on_duplicate`, with `metrics` as the check left them.
async fn write(
    file: &SqliteFile,
    emails: &[&str],
    on_duplicate: OnDuplicate,
    metrics: Arc<ImportMetrics>,
) -> datafusion::error::Result<u64> {
    let db: Arc<dyn Database> = crate::db::connect(&file.url()).await.unwrap();
    db.ensure_metadata().await.unwrap();
    let table = TableRef::unqualified("people");
    let creates = vec![ColumnSpec {
        name: "email".into(),
        data_type: DataType::Utf8,
        sql_type: None,
    }];
    let transaction = Arc::new(TableTransaction::new(
        Arc::clone(&db),
        table.clone(),
        Vec::new(),
        FilePolicy::Allow,
        Some(creates.clone()),
    ));
    let import = ImportId::new();
    let run = ImportRun::new(
        import,
        ExistingKeys::none("none", KeyHasher::random()),
        metrics,
    )
    .with_transaction(transaction);
    let (task, _running) = task_running(run);
    let batch = RecordBatch::try_new(
        schema(),
        vec![
            Arc::new(StringArray::from(emails.to_vec())),
            Arc::new(UInt64Array::from_iter_values(1..=emails.len() as u64)),
        ],
    )
    .unwrap();
    let input = MemorySourceConfig::try_new_exec(&[vec![batch]], schema(), None).unwrap();
    let sink = ImportSink::new(import, table, vec![email()], DbKind::Sqlite, schema())
        .with_on_duplicate(on_duplicate)
        .with_creates(Some(creates));
    let plan = Arc::new(DataSinkExec::new(input, Arc::new(sink), None));
    let batches = collect(plan, task).await?;
    Ok(batches[0].column(0).as_primitive::<UInt64Type>().value(0))
}

#[tokio::test]
async fn writes_every_row_in_source_order_and_commits() {
    let file = SqliteFile::new("commit");
    let metrics = Arc::new(ImportMetrics::default());
    let written = write(
        &file,
        &["c", "a", "b"],
        OnDuplicate::Error,
        Arc::clone(&metrics),
    )
    .await
    .unwrap();
    assert_eq!(written, 3);
    assert_eq!(ImportMetrics::get(&metrics.inserted), 3);
    assert_eq!(
        file.emails().await,
        Some(vec!["c".to_string(), "a".into(), "b".into()]),
        "the table the transaction created holds the rows, in order"
    );
}

#[tokio::test]
async fn a_duplicate_under_error_rolls_everything_back() {
    let file = SqliteFile::new("rollback");
    let metrics = Arc::new(ImportMetrics::default());
    // What the check reports of a row whose key is in the table.
    metrics.record_duplicates(
        &[DuplicateSample {
            row: 2,
            line: Some(3),
            key: "email=a".into(),
            kind: DuplicateKind::Existing,
        }],
        &[],
        10_000,
    );
    let error = write(&file, &["c", "a"], OnDuplicate::Error, metrics)
        .await
        .unwrap_err();
    assert!(
        matches!(
            AtlasError::from_datafusion(error),
            AtlasError::Duplicates(_)
        ),
        "the refusal is the duplicates error"
    );
    assert_eq!(
        file.emails().await,
        None,
        "nothing stays, not even the table the import created"
    );
}
