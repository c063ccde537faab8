//! The codecs of distributed imports (`atlas_import::codec`): every import
//! plan of `plans/` and of the CLI's sample, encoded into DataFusion's
//! protobuf plan and decoded again, explains exactly as before, logical and
//! physical. Nothing here needs a server: the target is a SQLite file.

use std::sync::Arc;

use atlas_import::codec::{ImportLogicalCodec, ImportPhysicalCodec};
use atlas_import::script::import_builder;
use atlas_import::sql::{AtlasStatement, parse_statements};
use atlas_import::{ImportMetrics, PreparedImport, db, session_context_with_imports};
use datafusion::physical_plan::{ExecutionPlan, displayable};
use datafusion::prelude::{SessionConfig, SessionContext};
use datafusion_proto::bytes::{
    logical_plan_from_bytes_with_extension_codec, logical_plan_to_bytes_with_extension_codec,
    physical_plan_from_bytes_with_extension_codec, physical_plan_to_bytes_with_extension_codec,
};

use crate::common::TempDir;

/// Encodes both plans of `prepared`, decodes them in `ctx`, and asserts the
/// same EXPLAIN text; returns how many bytes the physical plan took, and
/// the decoded physical plan.
fn assert_round_trip(
    ctx: &SessionContext,
    prepared: &PreparedImport,
    what: &str,
) -> (usize, Arc<dyn ExecutionPlan>) {
    let task = ctx.task_ctx();
    let logical = logical_plan_to_bytes_with_extension_codec(
        prepared.logical_plan(),
        &ImportLogicalCodec::default(),
    )
    .unwrap_or_else(|e| panic!("{what}: encoding the logical plan: {e}"));
    let decoded = logical_plan_from_bytes_with_extension_codec(
        &logical,
        &task,
        &ImportLogicalCodec::default(),
    )
    .unwrap_or_else(|e| panic!("{what}: decoding the logical plan: {e}"));
    assert_eq!(
        decoded.display_indent().to_string(),
        prepared.logical_plan().display_indent().to_string(),
        "{what}: the logical plan"
    );
    assert!(
        &decoded == prepared.logical_plan(),
        "{what}: the decoded logical plan equals the original"
    );

    let physical = physical_plan_to_bytes_with_extension_codec(
        Arc::clone(prepared.plan()),
        &ImportPhysicalCodec::default(),
    )
    .unwrap_or_else(|e| panic!("{what}: encoding the physical plan: {e}"));
    let decoded = physical_plan_from_bytes_with_extension_codec(
        &physical,
        &task,
        &ImportPhysicalCodec::default(),
    )
    .unwrap_or_else(|e| panic!("{what}: decoding the physical plan: {e}"));
    assert_eq!(
        displayable(decoded.as_ref()).indent(true).to_string(),
        displayable(prepared.plan().as_ref())
            .indent(true)
            .to_string(),
        "{what}: the physical plan"
    );
    (physical.len(), decoded)
}

#[tokio::test]
async fn every_plan_file_round_trips_through_the_codecs() {
    let dir = TempDir::new();
    let url = format!("sqlite://{}", dir.path().join("codec.db").display());
    let root = env!("CARGO_MANIFEST_DIR");
    let mut imports = 0;
    for plan in [
        "contacts.sql",
        "crm_mapping.sql",
        "orders_join.sql",
        "sales_parquet.sql",
    ] {
        let sql = std::fs::read_to_string(format!("{root}/plans/{plan}")).unwrap();
        // The plans name their files relative to the repository root.
        let sql = sql.replace("'plans/", &format!("'{root}/plans/"));
        let sql = sql.replace("'examples/", &format!("'{root}/examples/"));
        let ctx = session_context_with_imports(SessionConfig::new());
        let database = db::connect(&url).await.unwrap();
        for statement in parse_statements(&sql).unwrap() {
            match statement {
                AtlasStatement::Import(import) => {
                    let prepared = import_builder(
                        &ctx,
                        Arc::clone(&database),
                        &import,
                        Arc::new(ImportMetrics::default()),
                    )
                    .await
                    .unwrap()
                    .plan()
                    .await
                    .unwrap();
                    let (bytes, _) = assert_round_trip(&ctx, &prepared, plan);
                    assert!(bytes > 0);
                    imports += 1;
                }
                AtlasStatement::DataFusion(statement) => {
                    let plan = ctx.state().statement_to_plan(*statement).await.unwrap();
                    ctx.execute_logical_plan(plan)
                        .await
                        .unwrap()
                        .collect()
                        .await
                        .unwrap();
                }
                other => panic!("{plan}: a statement this test does not expect: {other:?}"),
            }
        }
    }
    assert!(imports >= 4, "every plan file imports: {imports}");
}

#[tokio::test]
async fn cli_sample_plans_round_trip_under_every_policy() {
    let dir = TempDir::new();
    let url = format!("sqlite://{}", dir.path().join("codec.db").display());
    let sample = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/data/contacts.csv");
    let ctx = SessionContext::new();
    for (policy, lookup) in [
        (
            atlas_import::OnDuplicate::Error,
            atlas_import::KeyStrategy::Preload,
        ),
        (
            atlas_import::OnDuplicate::Skip,
            atlas_import::KeyStrategy::Probe,
        ),
        (
            atlas_import::OnDuplicate::Update,
            atlas_import::KeyStrategy::Auto,
        ),
    ] {
        let prepared =
            atlas_import::ImportBuilder::new(db::connect(&url).await.unwrap(), sample, "contacts")
                .with_key(["email"])
                .with_on_duplicate(policy)
                .with_strategy(lookup)
                .with_on_bad_value(atlas_import::OnBadValue::Reject(
                    dir.path().join("rejects.csv"),
                ))
                .plan()
                .await
                .unwrap();
        assert_round_trip(&ctx, &prepared, &format!("{policy}"));
    }
}

/// The check settings of every `DuplicateCheckExec` in `plan`.
fn duplicate_checks(
    plan: &Arc<dyn ExecutionPlan>,
) -> Vec<atlas_import::physical::DuplicateCheckSettings> {
    let mut found: Vec<_> = plan
        .children()
        .into_iter()
        .flat_map(duplicate_checks)
        .collect();
    if let Some(check) = plan.downcast_ref::<atlas_import::physical::DuplicateCheckExec>() {
        found.push(check.settings().clone());
    }
    found
}

/// A plan carries the rows it expects, which size the check's sets: an
/// uncompressed CSV's from its size and its first lines (near the truth), a
/// compressed one's not at all (only a guessed ratio would say), the
/// table's from its statistics; the check's share survives the codec.
#[tokio::test]
async fn plans_carry_the_rows_they_expect_through_the_codec() {
    use std::io::Write;

    let dir = TempDir::new();
    let url = format!("sqlite://{}", dir.path().join("sizes.db").display());
    let rows = 20_000;
    let csv: String = std::iter::once("id,email\n".to_string())
        .chain((0..rows).map(|i| format!("{i},user{i}@example.com\n")))
        .collect();
    let plain = dir.file("sizes.csv", &csv);
    let zipped = dir.path().join("sizes.csv.gz");
    let mut encoder = flate2::write::GzEncoder::new(
        std::fs::File::create(&zipped).unwrap(),
        flate2::Compression::default(),
    );
    encoder.write_all(csv.as_bytes()).unwrap();
    encoder.finish().unwrap();

    let plan = |path: std::path::PathBuf| {
        let url = url.clone();
        async move {
            atlas_import::ImportBuilder::new(db::connect(&url).await.unwrap(), path, "contacts")
                .plan()
                .await
                .unwrap()
        }
    };
    let prepared = plan(plain).await;
    let expected = prepared.spec().expected;
    let estimate = expected.import.expect("an estimate for a plain CSV");
    assert!(
        (rows / 2..=rows * 2).contains(&estimate),
        "{estimate} rows expected of {rows}"
    );
    assert_eq!(expected.table, Some(0), "a table still to be created");
    let (_, decoded) = assert_round_trip(&SessionContext::new(), &prepared, "sizes");
    let checks = duplicate_checks(&decoded);
    assert_eq!(checks.len(), 1);
    assert_eq!(checks[0].expected_rows, Some(estimate));

    let zipped = plan(zipped).await;
    assert_eq!(zipped.spec().expected.import, None, "a compressed CSV");
    assert_eq!(duplicate_checks(zipped.plan())[0].expected_rows, None);
}
