-- A partitioned Parquet dataset (plans/data/sales/region=*/), filtered and
-- aggregated before importing: daily totals per region, refunds left out.
-- Run from the repository root:
--   atlas-import run plans/sales_parquet.sql --db sqlite://atlas.db
CREATE EXTERNAL TABLE sales STORED AS PARQUET LOCATION 'plans/data/sales/'
  PARTITIONED BY (region);

IMPORT INTO sales_daily
  FROM (
    SELECT region, sale_date, sum(amount) AS total, count(*) AS orders
    FROM sales
    WHERE amount > 0
    GROUP BY region, sale_date
    ORDER BY region, sale_date
  )
  KEY (region, sale_date)
  ON DUPLICATE SKIP;
