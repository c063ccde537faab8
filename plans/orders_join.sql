-- Join two sources, then import: orders with their customer's email; orders
-- of unknown customers are left out by the join.
-- Run from the repository root:
--   atlas-import run plans/orders_join.sql --db sqlite://atlas.db
CREATE EXTERNAL TABLE customers STORED AS CSV LOCATION 'plans/data/customers.csv'
  OPTIONS ('format.has_header' 'true');
CREATE EXTERNAL TABLE orders STORED AS CSV LOCATION 'plans/data/orders.csv'
  OPTIONS ('format.has_header' 'true');

IMPORT INTO customer_orders
  FROM (
    SELECT o.order_id, c.email, c.country, o.amount, CAST(o.ordered_on AS DATE) AS ordered_on
    FROM orders o JOIN customers c ON o.customer_id = c.customer_id
    ORDER BY o.order_id
  )
  KEY (order_id);
