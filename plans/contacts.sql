-- A plain CSV import: the sample contacts, unique by email.
-- Run from the repository root:
--   atlas-import run plans/contacts.sql --db sqlite://atlas.db
IMPORT INTO contacts
  FROM 'examples/data/contacts.csv'
  FORMAT CSV
  KEY (email)
  ON DUPLICATE SKIP
  ON DUPLICATE FILE SKIP
  WITH (partitions 4, chunk_rows 10000);

-- Ordinary DataFusion SQL runs in the same script.
SELECT 'contacts imported' AS done;
