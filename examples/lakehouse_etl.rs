//! A lakehouse-style ETL job: a Hive-partitioned Parquet dataset on an object
//! store (here an in-memory `object_store`, registered as `memory://lake`; an
//! `s3://` or `gs://` store registers the same way) -> DataFusion transforms ->
//! a duplicate-safe import. Running the job twice imports nothing new.
//!
//! Run: `cargo run --example lakehouse_etl`
//! (it writes to a temporary SQLite database; set DATABASE_URL to use another).

use std::sync::Arc;

use atlas_import::{DataFrameImportExt, OnDuplicate, db};
use datafusion::arrow::datatypes::DataType;
use datafusion::dataframe::DataFrameWriteOptions;
use datafusion::datasource::object_store::ObjectStoreUrl;
use datafusion::functions_aggregate::expr_fn::{count, sum};
use datafusion::object_store::memory::InMemory;
use datafusion::prelude::{ParquetReadOptions, SessionContext, col, lit};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = std::env::temp_dir().join(format!("atlas_lakehouse_{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let url = std::env::var("DATABASE_URL")
        .unwrap_or_else(|_| format!("sqlite://{}", dir.join("example.db").display()));
    let database = db::connect(&url).await?;

    // The lake: an object store with a partitioned Parquet dataset in it.
    let ctx = SessionContext::new();
    let lake = ObjectStoreUrl::parse("memory://lake")?;
    ctx.register_object_store(lake.as_ref(), Arc::new(InMemory::new()));
    ctx.sql(
        "SELECT * FROM (VALUES
            ('eu', DATE '2024-06-01', 'A-1', 10.5), ('eu', DATE '2024-06-01', 'A-2', 4.5),
            ('eu', DATE '2024-06-02', 'A-3', -2.0), ('us', DATE '2024-06-01', 'B-1', 100.0),
            ('us', DATE '2024-06-03', 'B-2', 50.0), ('us', DATE '2024-06-03', 'B-3', 25.0))
         AS t(region, sale_date, sku, amount)",
    )
    .await?
    .write_parquet(
        "memory://lake/sales/",
        DataFrameWriteOptions::new().with_partition_by(vec!["region".into()]),
        None,
    )
    .await?;

    for run in 1..=2 {
        // Extract: read the dataset back, partitions as a column.
        let sales = ctx
            .read_parquet(
                "memory://lake/sales/",
                ParquetReadOptions::default()
                    .table_partition_cols(vec![("region".into(), DataType::Utf8)]),
            )
            .await?;
        // Transform: drop refunds, daily totals per region.
        let daily = sales
            .filter(col("amount").gt(lit(0.0)))?
            .aggregate(
                vec![col("region"), col("sale_date")],
                vec![
                    sum(col("amount")).alias("total"),
                    count(col("sku")).alias("orders"),
                ],
            )?
            .sort(vec![
                col("region").sort(true, false),
                col("sale_date").sort(true, false),
            ])?;
        // Load: duplicate-safe, keyed on region and day.
        let report = daily
            .import_builder(Arc::clone(&database), "lake_sales_daily")
            .with_key(["region", "sale_date"])
            .with_on_duplicate(OnDuplicate::Skip)
            .execute()
            .await?;
        println!(
            "run {run}: {} rows read, {} inserted, {} skipped",
            report.rows_read, report.inserted, report.skipped
        );
        // eu on 2024-06-02 had only a refund, so three days remain.
        let expected_inserted = if run == 1 { 3 } else { 0 };
        assert_eq!(report.inserted, expected_inserted);
    }
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}
