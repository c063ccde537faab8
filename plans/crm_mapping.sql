-- A mapping plan, as the original service's mapping files did it: rename,
-- clean and convert the fields of a CRM export before importing.
-- Run from the repository root:
--   atlas-import run plans/crm_mapping.sql --db sqlite://atlas.db
IMPORT INTO crm_people
  FROM 'plans/data/crm_export.csv'
  MAP (
    email      = lower(trim("E-mail Address")),
    full_name  = upper("Full Name"),
    joined_on  = to_date("Joined", '%m/%d/%Y'),
    newsletter = CASE WHEN lower(trim("Opt In")) IN ('yes', 'y') THEN true ELSE false END,
    score      = CAST("Score" AS DOUBLE)
  )
  KEY (email)
  ON DUPLICATE SKIP;
