//! The probe key strategy's filter: the existing keys are read only for rows
//! whose value in one key column (an indexed one where there is one, else a
//! column of many distinct values) is among the import's values of that
//! column. The database answers with an index lookup or one pass over the
//! table (PostgreSQL hashes the list and scans in parallel); only the
//! candidates come back, and they are compared by fingerprint like any
//! existing key, so the filter need only let every match through (a
//! case-insensitive collation that lets more through is harmless).

use datafusion::arrow::array::{Array, ArrayRef, AsArray};
use datafusion::arrow::datatypes::{DataType, Date32Type, TimeUnit};

use super::dialect::Dialect;
use super::quote_ident;
use crate::schema::TargetColumn;

/// Which rows of the table to read: those whose `column` holds one of
/// `values` (and those where it is NULL, when `nulls`).
#[derive(Debug, Clone)]
pub struct KeyFilter {
    /// The key column filtered on.
    pub column: String,
    /// Its values among the import's keys (arrays of the column's type).
    pub values: Vec<ArrayRef>,
    /// Whether a key of the import has NULL in the column.
    pub nulls: bool,
}

/// PostgreSQL types without an `=` operator (`point ~= point` is how points
/// compare), which a filter cannot match literals of.
const NO_EQUALITY: [&str; 8] = [
    "json", "xml", "point", "line", "lseg", "path", "polygon", "circle",
];

/// Whether `column`'s values can be written as literals of a filter that
/// compares them with `=` (json, xml and most geometric types have no
/// equality; arrays would compare whole).
pub(crate) fn filterable(column: &TargetColumn) -> bool {
    let data_type = &column.data_type;
    (data_type.is_integer()
        || matches!(
            data_type,
            DataType::Utf8 | DataType::Date32 | DataType::Timestamp(TimeUnit::Microsecond, _)
        ))
        && !NO_EQUALITY.contains(&column.sql_type.as_str())
        && !column.sql_type.ends_with("[]")
        // The same for a domain over either (its text form is its base
        // type's); SQLite would read the literals as numbers by its own
        // rounding.
        && !matches!(
            column.text_form,
            Some(
                crate::typed_text::TextForm::Json
                    | crate::typed_text::TextForm::PgArray
                    | crate::typed_text::TextForm::SqliteNumeric { .. }
            )
        )
        // MySQL compares a SET with text as text: `b,a` would not find the
        // `a,b` stored; and a TIME with the literal of a value it stores
        // rounded or cut (`12:34:00.4` in a `TIME`) unrounded, so the
        // filter would miss the row (PostgreSQL casts the list to the
        // column's type, which rounds it).
        && !match column.key_form {
            Some(crate::key_form::KeyForm::Value(crate::key_form::ValueForm::MemberSet {
                ..
            })) => true,
            Some(crate::key_form::KeyForm::Value(crate::key_form::ValueForm::Time(kept))) => {
                !kept.keeps_microseconds()
                    && kept.rounding != crate::schema::FractionRounding::HalfAwayFromZero
            }
            _ => false,
        }
}

impl KeyFilter {
    /// The `WHERE` condition on `kind` (`FALSE` when there is nothing to
    /// match), with the values as literals; on PostgreSQL the list is cast
    /// to `element_type[]` where the column's type is not text (uuid, jsonb,
    /// enums read their literals then).
    pub(crate) fn condition(&self, dialect: &dyn Dialect, element_type: Option<&str>) -> String {
        self.conditions(dialect, element_type, usize::MAX)
            .pop()
            .unwrap_or_else(|| "FALSE".to_string())
    }

    /// The same filter as conditions of at most about `max_bytes` each,
    /// which together match what [`Self::condition`] matches and each row
    /// once: a server that caps a statement's size (MariaDB's
    /// `max_allowed_packet`) reads the keys in as many statements. Where a
    /// single literal is longer than that (a value the server took in
    /// pieces), no statement can carry it: one condition then lets every
    /// row through, which the fingerprints compare as they compare any.
    pub(crate) fn conditions(
        &self,
        dialect: &dyn Dialect,
        element_type: Option<&str>,
        max_bytes: usize,
    ) -> Vec<String> {
        let column = quote_ident(&self.column);
        let mut literals: Vec<String> = Vec::new();
        for array in &self.values {
            for i in 0..array.len() {
                if array.is_valid(i) {
                    literals.push(literal(dialect, array, i));
                }
            }
        }
        literals.sort_unstable();
        literals.dedup();
        let nulls = self.nulls.then(|| format!("{column} IS NULL"));
        if literals.is_empty() {
            return vec![nulls.unwrap_or_else(|| "FALSE".to_string())];
        }
        // What the list's syntax and the NULL part add to its literals.
        let overhead = dialect.any_of(&column, &[], element_type).len()
            + nulls.as_ref().map_or(0, |n| n.len() + " OR ".len());
        let budget = max_bytes.saturating_sub(overhead);
        if literals.iter().any(|literal| literal.len() >= budget) {
            let every_value = format!("{column} IS NOT NULL");
            return vec![nulls.map_or(every_value, |_| "TRUE".to_string())];
        }
        let mut conditions = Vec::new();
        let mut start = 0;
        while start < literals.len() {
            let mut end = start;
            let mut bytes = 0;
            while end < literals.len() && (end == start || bytes + literals[end].len() < budget) {
                bytes += literals[end].len() + 1;
                end += 1;
            }
            conditions.push(dialect.any_of(&column, &literals[start..end], element_type));
            start = end;
        }
        if let Some(nulls) = nulls {
            conditions[0] = format!("{} OR {nulls}", conditions[0]);
        }
        conditions
    }
}

/// Value `i` of `array` as an SQL literal of `dialect`.
fn literal(dialect: &dyn Dialect, array: &ArrayRef, i: usize) -> String {
    match array.data_type() {
        DataType::Utf8 => dialect.string_literal(array.as_string::<i32>().value(i)),
        DataType::Date32 => {
            let days = array.as_primitive::<Date32Type>().value(i);
            let date = chrono::NaiveDate::from_num_days_from_ce_opt(days + 719_163)
                .map(|d| d.to_string())
                .unwrap_or_default();
            dialect.date_literal(&date)
        }
        DataType::Timestamp(_, tz) => {
            let micros = datafusion::arrow::compute::cast(
                &array.slice(i, 1),
                &DataType::Timestamp(TimeUnit::Microsecond, None),
            )
            .ok()
            .map(|a| {
                a.as_primitive::<datafusion::arrow::datatypes::TimestampMicrosecondType>()
                    .value(0)
            })
            .unwrap_or(0);
            let text = chrono::DateTime::from_timestamp_micros(micros)
                .map(|t| t.naive_utc().format("%Y-%m-%d %H:%M:%S%.6f").to_string())
                .unwrap_or_default();
            dialect.timestamp_literal(&text, tz.is_some())
        }
        _ => {
            // Integers of any width (UInt64 beyond i64 too), as decimal text.
            datafusion::arrow::compute::cast(&array.slice(i, 1), &DataType::Utf8)
                .ok()
                .map(|a| a.as_string::<i32>().value(0).to_string())
                .unwrap_or_else(|| "NULL".to_string())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::db::DbKind;
    use datafusion::arrow::array::{Int32Array, StringArray, UInt64Array};
    use std::sync::Arc;

    #[test]
    fn only_columns_with_an_equality_are_filtered() {
        let column = |sql_type: &str, text_form| TargetColumn {
            name: "c".into(),
            sql_type: sql_type.into(),
            data_type: DataType::Utf8,
            nullable: true,
            has_default: false,
            generated: false,
            max_chars: None,
            text_form,
            key_form: None,
            seconds_precision: None,
            zero_padded_width: None,
            numbers_name_labels: false,
            unzoned_in: None,
        };
        for sql_type in ["text", "uuid", "interval", "citext", "box"] {
            assert!(filterable(&column(sql_type, None)), "{sql_type}");
        }
        for sql_type in ["json", "xml", "point", "polygon", "integer[]"] {
            assert!(!filterable(&column(sql_type, None)), "{sql_type}");
        }
        // A domain over an array: its text form is its base type's.
        let domain = column("int_list", Some(crate::typed_text::TextForm::PgArray));
        assert!(!filterable(&domain));
    }

    #[test]
    fn conditions_list_distinct_literals_and_nulls() {
        let filter = KeyFilter {
            column: "email".into(),
            values: vec![Arc::new(StringArray::from(vec![
                Some("a'b"),
                None,
                Some("a'b"),
                Some("c\\d"),
            ]))],
            nulls: true,
        };
        assert_eq!(
            filter.condition(DbKind::Postgres.dialect(), None),
            "\"email\" = ANY(ARRAY['a''b','c\\d']) OR \"email\" IS NULL"
        );
        assert_eq!(
            filter.condition(DbKind::MySql.dialect(), None),
            "\"email\" IN ('a''b','c\\\\d') OR \"email\" IS NULL"
        );
        let ints = KeyFilter {
            column: "n".into(),
            values: vec![Arc::new(Int32Array::from(vec![3, 1]))],
            nulls: false,
        };
        assert_eq!(
            ints.condition(DbKind::Sqlite.dialect(), None),
            "\"n\" IN (1,3)"
        );
        let unsigned = KeyFilter {
            column: "n".into(),
            values: vec![Arc::new(UInt64Array::from(vec![u64::MAX]))],
            nulls: false,
        };
        assert_eq!(
            unsigned.condition(DbKind::MySql.dialect(), None),
            "\"n\" IN (18446744073709551615)"
        );
        let none = KeyFilter {
            column: "n".into(),
            values: vec![],
            nulls: false,
        };
        assert_eq!(none.condition(DbKind::Sqlite.dialect(), None), "FALSE");
    }

    #[test]
    fn conditions_split_by_size_match_each_value_once() {
        let values: Vec<String> = (0..1000)
            .map(|i| format!("someone{i}@example.com"))
            .collect();
        let filter = KeyFilter {
            column: "email".into(),
            values: vec![Arc::new(StringArray::from(values.clone()))],
            nulls: true,
        };
        let dialect = DbKind::MySql.dialect();
        assert_eq!(filter.conditions(dialect, None, usize::MAX).len(), 1);
        let parts = filter.conditions(dialect, None, 4096);
        assert!(parts.len() > 5, "{} parts", parts.len());
        assert!(
            parts.iter().all(|p| p.len() <= 4096),
            "a part is over budget"
        );
        // Every value in exactly one part, NULL in the first only.
        for value in &values {
            let quoted = format!("'{value}'");
            let holding = parts
                .iter()
                .filter(|p| p.split(['(', ',', ')']).any(|l| l == quoted))
                .count();
            assert_eq!(holding, 1, "{value}");
        }
        assert!(parts[0].ends_with("OR \"email\" IS NULL"));
        assert!(parts[1..].iter().all(|p| !p.contains("IS NULL")));
        // A literal longer than any statement may be: every row is read.
        let mut long = KeyFilter {
            column: "t".into(),
            values: vec![Arc::new(StringArray::from(vec![
                "x".repeat(100),
                "y".into(),
            ]))],
            nulls: false,
        };
        assert_eq!(long.conditions(dialect, None, 50), ["\"t\" IS NOT NULL"]);
        long.nulls = true;
        assert_eq!(long.conditions(dialect, None, 50), ["TRUE"]);
        assert_eq!(long.conditions(dialect, None, 500).len(), 1);
        assert!(long.conditions(dialect, None, 500)[0].contains("'y'"));
    }
}
