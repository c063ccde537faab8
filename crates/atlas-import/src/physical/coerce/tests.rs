//! CoerceExec on in-memory input: no server.

use crate::schema::ROW_NUMBER_COLUMN;
use datafusion::arrow::array::{AsArray, StringArray};
use datafusion::arrow::datatypes::{DataType, Field, Int32Type, Schema, UInt64Type};
use datafusion::datasource::memory::MemorySourceConfig;
use datafusion::physical_plan::collect;

use super::*;
use crate::key::KeyHasher;
use crate::physical::ExistingKeys;
use crate::physical::ImportId;
use crate::physical::ImportRun;
use crate::physical::run::task_running;
use datafusion::arrow::array::RecordBatch;

fn age_column() -> TargetColumn {
    TargetColumn {
        name: "age".into(),
        sql_type: "integer".into(),
        data_type: DataType::Int32,
        nullable: true,
        has_default: false,
        generated: false,
        max_chars: None,
        text_form: None,
        key_form: None,
        seconds_precision: None,
        zero_padded_width: None,
        numbers_name_labels: false,
        unzoned_in: None,
    }
}

/// `ages` as text, in batches of two rows, into an integer column.
fn coerce(ages: &[Option<&str>]) -> CoerceExec {
    let schema = Arc::new(Schema::new(vec![Field::new("Age", DataType::Utf8, true)]));
    let batches = ages
        .chunks(2)
        .map(|chunk| {
            RecordBatch::try_new(
                Arc::clone(&schema),
                vec![Arc::new(StringArray::from(chunk.to_vec()))],
            )
            .unwrap()
        })
        .collect();
    let input = MemorySourceConfig::try_new_exec(&[batches], schema, None).unwrap();
    CoerceExec::new(
        input,
        ImportId::from_u128(1),
        vec![(0, age_column())],
        "ages.csv",
    )
}

/// Runs `exec` as import 1, counting in `metrics`.
async fn run(
    exec: CoerceExec,
    metrics: &Arc<ImportMetrics>,
) -> Result<(Vec<Option<i32>>, Vec<u64>)> {
    let existing = ExistingKeys::none("none", KeyHasher::random());
    let run = ImportRun::new(ImportId::from_u128(1), existing, Arc::clone(metrics));
    let (task, _running) = task_running(run);
    let batches = collect(Arc::new(exec), task).await?;
    let mut ages = Vec::new();
    let mut rows = Vec::new();
    for batch in &batches {
        ages.extend(batch.column(0).as_primitive::<Int32Type>().iter());
        rows.extend(batch.column(1).as_primitive::<UInt64Type>().values().iter());
    }
    Ok((ages, rows))
}

#[tokio::test]
async fn numbers_rows_across_batches_and_converts_values() {
    let metrics = Arc::new(ImportMetrics::default());
    let exec = coerce(&[Some("007"), None, Some(" 42 "), Some("-1"), Some("5")]);
    assert_eq!(
        exec.schema().field(1).name(),
        ROW_NUMBER_COLUMN,
        "the row number comes last"
    );
    let (ages, rows) = run(exec, &metrics).await.unwrap();
    assert_eq!(ages, [Some(7), None, Some(42), Some(-1), Some(5)]);
    assert_eq!(rows, [1, 2, 3, 4, 5]);
    assert_eq!(ImportMetrics::get(&metrics.rows_read), 5);
}

#[tokio::test]
async fn a_bad_value_names_its_row_column_and_value() {
    let metrics = Arc::new(ImportMetrics::default());
    let exec = coerce(&[Some("1"), Some("2"), Some("3"), Some("three")]);
    let err = AtlasError::from_datafusion(run(exec, &metrics).await.unwrap_err());
    match err {
        AtlasError::BadValue {
            source_name,
            row,
            column,
            value,
            ..
        } => assert_eq!(
            (source_name.as_str(), row, column.as_str(), value.as_str()),
            ("ages.csv", 4, "age", "three")
        ),
        other => panic!("not a bad value: {other}"),
    }
}

#[tokio::test]
async fn bad_values_can_become_null() {
    let metrics = Arc::new(ImportMetrics::default());
    let exec = coerce(&[Some("1"), Some("x"), Some("3")]).with_on_bad_value(OnBadValue::Null);
    let (ages, rows) = run(exec, &metrics).await.unwrap();
    assert_eq!(ages, [Some(1), None, Some(3)]);
    assert_eq!(rows, [1, 2, 3]);
    assert_eq!(ImportMetrics::get(&metrics.nulled), 1);
}

#[tokio::test]
async fn a_plan_without_its_run_says_so() {
    let exec = coerce(&[Some("1")]);
    let err = collect(Arc::new(exec), Arc::new(TaskContext::default()))
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains("is not running in this session"),
        "{err}"
    );
}

/// A task of a distributed import reads the file the planner hashed: a file
/// that changed in between fails the task, naming it.
#[tokio::test]
async fn a_distributed_reader_refuses_a_file_changed_since_planning() {
    let dir = std::env::temp_dir().join(format!("atlas_coerce_{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("ages.csv");
    std::fs::write(&path, "age\n7\n").unwrap();
    let planned = crate::source::sha256_of(path.clone(), "ages.csv".into())
        .await
        .unwrap();
    std::fs::write(&path, "age\n8\n").unwrap();
    let recipe = RunRecipe {
        database: "sqlite://unused.db".into(),
        table: crate::names::TableRef::unqualified("ages"),
        key_columns: vec![age_column()],
        lookup: crate::physical::KeyLookup::Nothing,
        lookup_reason: String::new(),
        files: vec![crate::db::FileRecord {
            file_hash: planned,
            file_name: "ages.csv".into(),
            table_name: "ages".into(),
            record_count: 0,
        }],
        file_paths: vec![Some(path.clone())],
        file_policy: crate::options::FilePolicy::Error,
        creates: None,
        history: crate::db::HistoryEntry::starting(
            "ages.csv".into(),
            "ages".into(),
            "age".into(),
            crate::options::OnDuplicate::Error,
        ),
        on_bad_value: crate::options::OnBadValue::Error,
        partitions: 1,
    };
    let import = ImportRef::with_recipe(ImportId::from_u128(1), Arc::new(recipe));
    let exec = CoerceExec::from_settings(
        coerce(&[Some("8")]).children()[0].clone(),
        CoerceSettings {
            import,
            ..coerce(&[]).settings().clone()
        },
    );
    let metrics = Arc::new(ImportMetrics::default());
    let existing = ExistingKeys::none("none", KeyHasher::random());
    let run = ImportRun::new(ImportId::from_u128(1), existing, metrics).stage_local();
    let (task, _running) = task_running(run);
    let err = collect(Arc::new(exec), task).await.unwrap_err();
    let err = crate::error::AtlasError::from_cluster(err);
    assert!(
        err.to_string()
            .contains("ages.csv: the file changed after the import was planned"),
        "{err}"
    );
    std::fs::remove_dir_all(&dir).ok();
}
