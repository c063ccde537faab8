//! Every plan in `plans/` runs against a fresh database (SQLite, PostgreSQL and
//! MariaDB) through the real binary, and its results are asserted; a second
//! run shows each plan's duplicate policy.

use std::process::Command;

use crate::common::TestDb;
use crate::on_every_database;

const TABLES: [&str; 4] = ["contacts", "crm_people", "customer_orders", "sales_daily"];

fn run_plan(db: &TestDb, plan: &str) -> (Option<i32>, serde_json::Value, String) {
    let exe = std::env::current_exe().unwrap();
    let binary = exe.parent().unwrap().parent().unwrap().join("atlas-import");
    let out = Command::new(binary)
        .args([
            "run",
            &format!("plans/{plan}.sql"),
            "--db",
            &db.url,
            "--json",
        ])
        .env_remove("DATABASE_URL")
        .output()
        .unwrap();
    // The last import report (query rows are JSON lines too).
    let report = if out.stdout.is_empty() {
        serde_json::Value::Null
    } else {
        crate::cli::json(&out)
    };
    (
        out.status.code(),
        report,
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn float(v: &Option<String>) -> f64 {
    v.as_deref().unwrap().parse().unwrap()
}

fn truthy(v: &Option<String>) -> bool {
    matches!(v.as_deref(), Some("1" | "true" | "t"))
}

async fn every_plan_runs_and_is_asserted(db: &TestDb) {
    // The plans write fixed table names; start from none of them.
    for table in TABLES {
        db.drop_table(table).await;
    }
    let result = std::panic::AssertUnwindSafe(async {
        let (code, report, stderr) = run_plan(db, "contacts");
        assert_eq!(code, Some(0), "{stderr}");
        assert_eq!(report["inserted"], 6);
        assert_eq!(db.count("contacts").await, 6);
        let (code, report, _) = run_plan(db, "contacts");
        assert_eq!(
            (code, report["status"].as_str()),
            (Some(0), Some("skipped_file"))
        );

        let (code, report, stderr) = run_plan(db, "crm_mapping");
        assert_eq!(code, Some(0), "{stderr}");
        assert_eq!(
            (
                report["inserted"].as_u64(),
                report["duplicates_in_file"].as_u64()
            ),
            (Some(4), Some(1))
        );
        let rows = db
            .rows(
                "crm_people",
                &["email", "full_name", "joined_on", "newsletter", "score"],
            )
            .await;
        assert_eq!(rows.len(), 4);
        assert_eq!(
            rows[0][0].as_deref(),
            Some("ada@example.com"),
            "trimmed, lower-cased"
        );
        assert_eq!(
            rows[0][1].as_deref(),
            Some("ADA LOVELACE"),
            "the first occurrence kept"
        );
        assert_eq!(
            rows[0][2].as_deref(),
            Some("2024-01-15"),
            "converted from 01/15/2024"
        );
        assert!(truthy(&rows[0][3]));
        assert_eq!(float(&rows[0][4]), 98.5);
        assert_eq!(rows[1][1].as_deref(), Some("HOPPER, GRACE"));
        assert!(!truthy(&rows[2][3]), "an empty opt-in is false");
        assert_eq!(rows[3][0].as_deref(), Some("zoë@example.com"));
        assert_eq!(rows[3][4], None);
        let (code, _, stderr) = run_plan(db, "crm_mapping");
        assert_eq!(code, Some(4), "{stderr}");

        let (code, report, stderr) = run_plan(db, "orders_join");
        assert_eq!(code, Some(0), "{stderr}");
        assert_eq!(report["inserted"], 4);
        assert_eq!(report["file_hash"], serde_json::Value::Null);
        let rows = db
            .rows("customer_orders", &["id", "order_id", "email", "amount"])
            .await;
        let orders: Vec<(&str, &str, &str)> = rows
            .iter()
            .map(|r| {
                (
                    r[0].as_deref().unwrap(),
                    r[1].as_deref().unwrap(),
                    r[2].as_deref().unwrap(),
                )
            })
            .collect();
        assert_eq!(
            orders,
            [
                ("1", "1001", "ada@example.com"),
                ("2", "1002", "grace@example.com"),
                ("3", "1003", "ada@example.com"),
                ("4", "1005", "linus@example.com"),
            ],
            "joined, unknown customer left out, written in ORDER BY order"
        );
        let (code, _, stderr) = run_plan(db, "orders_join");
        assert_eq!(
            code,
            Some(3),
            "a query source has no file check; the rows are duplicates: {stderr}"
        );

        let (code, report, stderr) = run_plan(db, "sales_parquet");
        assert_eq!(code, Some(0), "{stderr}");
        assert_eq!(report["inserted"], 4);
        let rows = db
            .rows("sales_daily", &["region", "sale_date", "total", "orders"])
            .await;
        let daily: Vec<(String, String, f64, String)> = rows
            .iter()
            .map(|r| {
                (
                    r[0].clone().unwrap(),
                    r[1].clone().unwrap(),
                    float(&r[2]),
                    r[3].clone().unwrap(),
                )
            })
            .collect();
        assert_eq!(
            daily,
            [
                ("eu".into(), "2024-06-01".into(), 15.0, "2".into()),
                ("eu".into(), "2024-06-02".into(), 8.0, "1".into()),
                ("us".into(), "2024-06-01".into(), 100.0, "1".into()),
                ("us".into(), "2024-06-03".into(), 75.0, "2".into()),
            ],
            "refunds filtered out, aggregated per region and day"
        );
        let (code, report, _) = run_plan(db, "sales_parquet");
        assert_eq!((code, report["skipped"].as_u64()), (Some(0), Some(4)));
    });
    let outcome = futures::FutureExt::catch_unwind(result).await;
    for table in TABLES {
        db.drop_table(table).await;
    }
    if let Err(panic) = outcome {
        std::panic::resume_unwind(panic);
    }
}

on_every_database!(every_plan_runs_and_is_asserted);
