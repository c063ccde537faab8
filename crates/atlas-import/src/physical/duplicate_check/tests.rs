//! The check on in-memory input with an in-memory key loader: no server.

use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::array::{Array, AsArray, RecordBatch, StringArray, UInt64Array};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef, UInt64Type};
use datafusion::datasource::memory::MemorySourceConfig;
use datafusion::execution::TaskContext;
use datafusion::physical_plan::{ExecutionPlan, collect};

use super::*;
use crate::db::KeyFilter;
use crate::key::{KeyFingerprints, KeyHasher};
use crate::key_form::{KeyForm, ValueForm};
use crate::physical::ImportId;
use crate::physical::KeyShare;
use crate::report::ImportMetrics;

/// The keys of a table, held in memory, read as the database's scan would
/// hand them over.
#[derive(Debug)]
struct KeysInMemory {
    keys: RecordBatch,
    forms: Vec<Option<KeyForm>>,
}

#[async_trait]
impl ExistingKeyLoader for KeysInMemory {
    async fn load(
        &self,
        hasher: &KeyHasher,
        filter: Option<KeyFilter>,
        _share: Option<&KeyShare>,
    ) -> crate::error::Result<KnownKeys> {
        // A probe reads only the rows holding a value the import has; with
        // every value one key column here, that is every row it names.
        let wanted = |value: &str| match &filter {
            None => true,
            Some(filter) => filter.values.iter().any(|array| {
                let array = array.as_string::<i32>();
                (0..array.len()).any(|i| array.is_valid(i) && array.value(i) == value)
            }),
        };
        let column = self.keys.column(0).as_string::<i32>();
        let rows: Vec<u32> = (0..column.len())
            .filter(|&i| wanted(column.value(i)))
            .map(|i| i as u32)
            .collect();
        let rows = datafusion::arrow::compute::take_record_batch(
            &self.keys,
            &datafusion::arrow::array::UInt32Array::from(rows),
        )?;
        let encoder =
            KeyEncoder::new((0..rows.num_columns()).collect()).with_forms(self.forms.clone());
        let mut keys = KeyFingerprints::new(encoder, hasher.clone());
        keys.add(&rows)?;
        Ok(keys.finish().into())
    }
}

fn schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("email", DataType::Utf8, true),
        Field::new(ROW_NUMBER_COLUMN, DataType::UInt64, false),
    ]))
}

/// One in-memory partition of `emails`, numbered from row 1.
fn input(emails: &[Option<&str>]) -> Arc<dyn ExecutionPlan> {
    let rows = UInt64Array::from_iter_values(1..=emails.len() as u64);
    let batch = RecordBatch::try_new(
        schema(),
        vec![Arc::new(StringArray::from(emails.to_vec())), Arc::new(rows)],
    )
    .unwrap();
    MemorySourceConfig::try_new_exec(&[vec![batch]], schema(), None).unwrap()
}

/// A table holding `emails`, and how the check learns them.
struct Table {
    keys: ExistingKeys,
    lookup: KeyLookup,
    description: &'static str,
}

fn existing(emails: &[&str], forms: Vec<Option<KeyForm>>, probe: bool) -> Table {
    let keys = RecordBatch::try_new(
        Arc::new(Schema::new(vec![Field::new("email", DataType::Utf8, true)])),
        vec![Arc::new(StringArray::from(emails.to_vec()))],
    )
    .unwrap();
    let loader = Arc::new(KeysInMemory { keys, forms });
    let hasher = KeyHasher::with_seed(7);
    if probe {
        Table {
            keys: ExistingKeys::probe("t (probe)", loader, "email", hasher),
            lookup: KeyLookup::Probe { column: 0 },
            description: "t (probe)",
        }
    } else {
        Table {
            keys: ExistingKeys::preload("t (preload)", loader, hasher),
            lookup: KeyLookup::Preload,
            description: "t (preload)",
        }
    }
}

/// A check of import 1 and the task it runs in, where the import's run
/// holds the table's keys.
struct Checked {
    exec: DuplicateCheckExec,
    task: Arc<TaskContext>,
    _running: crate::physical::RegisteredRun,
}

impl Checked {
    fn map(self, f: impl FnOnce(DuplicateCheckExec) -> DuplicateCheckExec) -> Self {
        Self {
            exec: f(self.exec),
            ..self
        }
    }

    async fn collect(self) -> Vec<RecordBatch> {
        collect(Arc::new(self.exec), self.task).await.unwrap()
    }
}

/// Runs the check and returns its output rows as (email, row) pairs, and the
/// import's duplicate counts (existing, in the file).
async fn run(check: Checked, metrics: &ImportMetrics) -> (Vec<(Option<String>, u64)>, (u64, u64)) {
    let batches = check.collect().await;
    let mut rows = Vec::new();
    for batch in batches {
        let emails = batch.column(0).as_string::<i32>();
        let numbers = batch
            .column(batch.num_columns() - 1)
            .as_primitive::<UInt64Type>();
        for i in 0..batch.num_rows() {
            rows.push((
                emails.is_valid(i).then(|| emails.value(i).to_string()),
                numbers.value(i),
            ));
        }
    }
    let report = metrics.duplicate_report();
    (rows, (report.existing, report.in_file))
}

fn check(
    emails: &[Option<&str>],
    table: Table,
    on_duplicate: OnDuplicate,
    metrics: &Arc<ImportMetrics>,
) -> Checked {
    let import = ImportId::from_u128(1);
    let exec = DuplicateCheckExec::try_new(input(emails), import, vec![0])
        .unwrap()
        .with_lookup(table.lookup, table.description)
        .with_on_duplicate(on_duplicate);
    let run = crate::physical::ImportRun::new(import, table.keys, Arc::clone(metrics));
    let (task, running) = crate::physical::run::task_running(run);
    Checked {
        exec,
        task,
        _running: running,
    }
}

fn owned(rows: &[(Option<&str>, u64)]) -> Vec<(Option<String>, u64)> {
    rows.iter()
        .map(|(e, r)| (e.map(str::to_string), *r))
        .collect()
}

#[tokio::test]
async fn skip_keeps_the_first_occurrence_of_each_new_key() {
    for probe in [false, true] {
        let metrics = Arc::new(ImportMetrics::default());
        let emails = [Some("a"), Some("b"), Some("a"), None, Some("c"), None];
        let check = check(
            &emails,
            existing(&["b"], vec![None], probe),
            OnDuplicate::Skip,
            &metrics,
        );
        let (rows, counts) = run(check, &metrics).await;
        assert_eq!(
            rows,
            owned(&[(Some("a"), 1), (None, 4), (Some("c"), 5)]),
            "probe={probe}: b exists, the second a and the second NULL repeat"
        );
        assert_eq!(counts, (1, 2), "probe={probe}");
    }
}

#[tokio::test]
async fn a_dry_run_names_what_each_duplicate_repeats() {
    let metrics = Arc::new(ImportMetrics::default());
    let check = check(
        &[Some("a"), Some("b"), Some("a")],
        existing(&["b"], vec![None], false),
        OnDuplicate::Error,
        &metrics,
    )
    .map(|c| c.with_report_duplicates(true));
    let batches = check.collect().await;
    let batch = datafusion::arrow::compute::concat_batches(&batches[0].schema(), &batches).unwrap();
    let of = batch
        .column_by_name(DUPLICATE_OF_COLUMN)
        .unwrap()
        .as_string::<i32>();
    let of: Vec<&str> = (0..of.len()).map(|i| of.value(i)).collect();
    assert_eq!(of, ["existing", "row 1"]);
}

#[tokio::test]
async fn error_mode_counts_every_duplicate_and_lets_rows_through() {
    let metrics = Arc::new(ImportMetrics::default());
    let check = check(
        &[Some("a"), Some("b"), Some("a"), Some("b")],
        existing(&["b"], vec![None], false),
        OnDuplicate::Error,
        &metrics,
    );
    let (rows, counts) = run(check, &metrics).await;
    // The sink refuses the import from the counts; the rows themselves go on.
    assert_eq!(rows.len(), 4);
    assert_eq!(counts, (2, 1));
}

#[tokio::test]
async fn update_flags_the_rows_whose_key_exists_or_repeats() {
    for probe in [false, true] {
        let metrics = Arc::new(ImportMetrics::default());
        let check = check(
            &[Some("a"), Some("b"), Some("a")],
            existing(&["b"], vec![None], probe),
            OnDuplicate::Update,
            &metrics,
        );
        // Every batch has the flag, the empty ones of held rows too.
        let batches = check.collect().await;
        let flags: Vec<bool> = batches
            .iter()
            .flat_map(|b| {
                let flags = b
                    .column_by_name(UPDATE_COLUMN)
                    .unwrap()
                    .as_boolean()
                    .clone();
                (0..flags.len()).map(move |i| flags.value(i))
            })
            .collect();
        assert_eq!(flags, [false, true, true], "probe={probe}");
    }
}

#[tokio::test]
async fn key_forms_compare_values_as_the_database_does() {
    let metrics = Arc::new(ImportMetrics::default());
    let numeric = Some(KeyForm::Value(ValueForm::Numeric));
    let check = check(
        &[Some("2.50"), Some("3"), Some("3.0")],
        existing(&["2.5"], vec![numeric], false),
        OnDuplicate::Skip,
        &metrics,
    )
    .map(|c| c.with_key_forms(vec![numeric]).unwrap());
    let (rows, counts) = run(check, &metrics).await;
    assert_eq!(rows, owned(&[(Some("3"), 2)]), "values are kept as written");
    assert_eq!(counts, (1, 1));
}

#[test]
fn explain_says_the_key_and_the_strategy() {
    let metrics = Arc::new(ImportMetrics::default());
    let check = check(
        &[Some("a")],
        existing(&[], vec![None], true),
        OnDuplicate::Skip,
        &metrics,
    );
    let text = datafusion::physical_plan::displayable(&check.exec)
        .one_line()
        .to_string();
    assert!(
        text.contains("key=[email]") && text.contains("existing=t (probe)"),
        "{text}"
    );
}

#[test]
fn the_tree_explain_lists_settings_a_line_each() {
    let metrics = Arc::new(ImportMetrics::default());
    let check = check(
        &[Some("a")],
        existing(&[], vec![None], false),
        OnDuplicate::Skip,
        &metrics,
    );
    let tree = datafusion::physical_plan::displayable(&check.exec)
        .tree_render()
        .to_string();
    for line in [
        "DuplicateCheckExec",
        "key: email",
        "on_duplicate: skip",
        "existing: t (preload)",
    ] {
        assert!(tree.contains(line), "{line} in\n{tree}");
    }
}
