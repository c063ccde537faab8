//! An import embedded in a DataFusion program: read two CSV files, join,
//! filter and aggregate them with the DataFrame API, then import the result
//! with `DataFrameImportExt::import_builder`, and run a small script of SQL and
//! `IMPORT INTO` in the same session with `SessionContextImportExt`.
//!
//! Run from the repository root: `cargo run --example dataframe_transforms`
//! (it writes to a temporary SQLite database; set DATABASE_URL to use another).

use std::sync::Arc;

use atlas_import::script::StatementOutcome;
use atlas_import::{DataFrameImportExt, OnDuplicate, SessionContextImportExt, db};
use datafusion::functions_aggregate::expr_fn::{count, sum};
use datafusion::prelude::{CsvReadOptions, SessionContext, col, lit};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = std::env::temp_dir().join(format!("atlas_transforms_{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let url = std::env::var("DATABASE_URL")
        .unwrap_or_else(|_| format!("sqlite://{}", dir.join("example.db").display()));
    let database = db::connect(&url).await?;

    let ctx = SessionContext::new();
    let root = env!("CARGO_MANIFEST_DIR");
    ctx.register_csv(
        "customers",
        &format!("{root}/plans/data/customers.csv"),
        CsvReadOptions::new(),
    )
    .await?;
    ctx.register_csv(
        "orders",
        &format!("{root}/plans/data/orders.csv"),
        CsvReadOptions::new(),
    )
    .await?;

    // Transforms: join, filter, aggregate, rename.
    let totals = ctx
        .table("orders")
        .await?
        .filter(col("amount").gt(lit(1.0)))?
        .join(
            ctx.table("customers").await?,
            datafusion::common::JoinType::Inner,
            &["customer_id"],
            &["customer_id"],
            None,
        )?
        .aggregate(
            vec![col("email")],
            vec![
                sum(col("amount")).alias("total_amount"),
                count(col("order_id")).alias("orders"),
            ],
        )?
        .sort(vec![col("email").sort(true, false)])?;

    let report = totals
        .import_builder(Arc::clone(&database), "customer_totals")
        .with_key(["email"])
        .with_on_duplicate(OnDuplicate::Skip)
        .execute()
        .await?;
    println!(
        "customer_totals: {} inserted, {} skipped",
        report.inserted, report.skipped
    );

    // The same session runs SQL and IMPORT INTO statements; the import sees the
    // tables registered above.
    let outcomes = ctx
        .sql_with_imports(
            Arc::clone(&database),
            "CREATE VIEW big_orders AS SELECT order_id, amount FROM orders WHERE amount > 10;
             IMPORT INTO big_orders FROM (SELECT * FROM big_orders) KEY (order_id) ON DUPLICATE SKIP;",
        )
        .await?;
    for outcome in outcomes {
        if let StatementOutcome::Import(report) = outcome {
            println!("big_orders: {} inserted", report.inserted);
            assert_eq!(report.inserted + report.skipped, 2);
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}
