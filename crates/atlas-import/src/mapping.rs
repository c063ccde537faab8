//! The original service's mapping files (`atlas-import import FILE --mapping
//! mapping.json`), translated into an import with the same meaning:
//!
//! ```json
//! {
//!   "table_name": "contacts",
//!   "db_schema": {"email": "VARCHAR(255)", "name": "TEXT", "joined": "DATE"},
//!   "mappings": {"email": "E-mail", "name": "Full Name", "joined": "Joined"},
//!   "duplicate_check": {"enabled": true, "check_file_level": true,
//!                       "uniqueness_columns": ["email"], "allow_duplicates": false,
//!                       "force_import": false, "error_message": "Contact exists"},
//!   "rules": {"transformations": [{"type": "uppercase", "field": "name"}],
//!             "datetime_transformations": [{"field": "joined",
//!                                           "source_format": "%m/%d/%Y",
//!                                           "target_format": "%Y-%m-%d"}]}
//! }
//! ```
//!
//! - `db_schema`: the columns and SQL types of a table to create when it is
//!   missing. An existing table whose columns differ is an error listing the
//!   differences: unlike the original, a table is never dropped.
//! - `mappings`: `db_column: source_field`; only mapped columns are imported.
//! - `duplicate_check`: `enabled: false` or `allow_duplicates: true` turn the
//!   row-level check off (the file-level check stays unless `check_file_level`
//!   is false); `force_import` turns both off; `uniqueness_columns` is the key;
//!   `error_message` replaces the first sentence of the refusal.
//! - `rules`: transformations (`uppercase`, `lowercase`, `trim`) and date
//!   reformatting (chrono/strftime formats, as in the original's Python),
//!   applied to a column (named by its database column or its source field).

use std::path::Path;

use serde::Deserialize;
use serde_json::{Map, Value};

use crate::error::{AtlasError, Result};
use crate::options::{FilePolicy, ImportOptions, OnDuplicate};
use crate::schema::ColumnSpec;

/// A mapping file of the original service.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceMapping {
    /// Target table.
    pub table_name: String,
    /// `column: SQL type`, in order.
    #[serde(default)]
    pub db_schema: Map<String, Value>,
    /// `db_column: source_field`, in order.
    #[serde(default)]
    pub mappings: Map<String, Value>,
    /// The duplicate checks.
    #[serde(default)]
    pub duplicate_check: DuplicateCheck,
    /// Value rules.
    #[serde(default)]
    pub rules: Rules,
}

/// `duplicate_check` of a mapping file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DuplicateCheck {
    /// Whether rows are checked at all.
    #[serde(default = "yes")]
    pub enabled: bool,
    /// Whether the same file is refused.
    #[serde(default = "yes")]
    pub check_file_level: bool,
    /// The key (default: every imported column).
    #[serde(default)]
    pub uniqueness_columns: Vec<String>,
    /// Rows that repeat are inserted anyway (the file check stays).
    #[serde(default)]
    pub allow_duplicates: bool,
    /// Neither check runs.
    #[serde(default)]
    pub force_import: bool,
    /// Replaces `Duplicate data detected.`
    #[serde(default)]
    pub error_message: Option<String>,
}

impl Default for DuplicateCheck {
    fn default() -> Self {
        Self {
            enabled: true,
            check_file_level: true,
            uniqueness_columns: Vec::new(),
            allow_duplicates: false,
            force_import: false,
            error_message: None,
        }
    }
}

fn yes() -> bool {
    true
}

/// `rules` of a mapping file.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rules {
    /// Value transformations.
    #[serde(default)]
    pub transformations: Vec<Transformation>,
    /// Date and time reformatting.
    #[serde(default)]
    pub datetime_transformations: Vec<DatetimeTransformation>,
}

/// One value transformation.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Transformation {
    /// `uppercase`, `lowercase` or `trim`.
    #[serde(rename = "type")]
    pub kind: String,
    /// The column (database column or source field).
    pub field: String,
}

/// One date/time reformatting.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatetimeTransformation {
    /// The column (database column or source field).
    pub field: String,
    /// How the source writes it (strftime, e.g. `%m/%d/%Y`).
    pub source_format: String,
    /// How to write it (default: the database's own date or timestamp).
    #[serde(default)]
    pub target_format: Option<String>,
}

/// A SQL string literal.
fn literal(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

/// A SQL identifier.
fn ident(s: &str) -> String {
    format!("\"{}\"", s.replace('"', "\"\""))
}

impl ServiceMapping {
    /// Reads a mapping file.
    pub fn from_file(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            AtlasError::Usage(format!("cannot read mapping file {}: {e}", path.display()))
        })?;
        serde_json::from_str(&text).map_err(|e| {
            AtlasError::Usage(format!(
                "mapping file {} is not a valid mapping (line {}, column {}): {e}",
                path.display(),
                e.line(),
                e.column()
            ))
        })
    }

    fn text_entries(map: &Map<String, Value>, what: &str) -> Result<Vec<(String, String)>> {
        map.iter()
            .map(|(k, v)| match v {
                Value::String(s) => Ok((k.clone(), s.clone())),
                other => Err(AtlasError::Usage(format!(
                    "mapping: {what} '{k}' must be a string, not {other}"
                ))),
            })
            .collect()
    }

    /// The `MAP` expressions: one per mapped column, with the rules applied.
    pub fn map_expressions(&self) -> Result<Vec<(String, String)>> {
        let mappings = Self::text_entries(&self.mappings, "mapping")?;
        let mut columns: Vec<(String, String)> = mappings.clone();
        // Rules may name columns the mappings leave as they are.
        for field in self
            .rules
            .transformations
            .iter()
            .map(|t| &t.field)
            .chain(self.rules.datetime_transformations.iter().map(|t| &t.field))
        {
            if !columns.iter().any(|(c, s)| c == field || s == field) {
                columns.push((field.clone(), field.clone()));
            }
        }
        let applies = |field: &str, column: &str, source: &str| field == column || field == source;
        columns
            .iter()
            .map(|(column, source)| {
                let mut expr = ident(source);
                for t in &self.rules.transformations {
                    if !applies(&t.field, column, source) {
                        continue;
                    }
                    expr = match t.kind.to_ascii_lowercase().as_str() {
                        "uppercase" | "upper" => format!("upper({expr})"),
                        "lowercase" | "lower" => format!("lower({expr})"),
                        "trim" | "strip" => format!("trim({expr})"),
                        other => {
                            return Err(AtlasError::Usage(format!(
                                "mapping: unknown transformation '{other}' on '{}' (expected uppercase, lowercase or trim)",
                                t.field
                            )));
                        }
                    };
                }
                for t in &self.rules.datetime_transformations {
                    if !applies(&t.field, column, source) {
                        continue;
                    }
                    // Blank fields stay NULL rather than failing to parse.
                    let value = format!("nullif(trim(CAST({expr} AS VARCHAR)), '')");
                    let has_time = ["%H", "%I", "%M", "%S", "%T", "%R", "%p", "%s"]
                        .iter()
                        .any(|f| t.source_format.contains(f));
                    let parsed = if has_time {
                        format!("to_timestamp({value}, {})", literal(&t.source_format))
                    } else {
                        format!("to_date({value}, {})", literal(&t.source_format))
                    };
                    expr = match &t.target_format {
                        Some(target) => format!("to_char({parsed}, {})", literal(target)),
                        None => parsed,
                    };
                }
                Ok((column.clone(), expr))
            })
            .collect()
    }

    /// Sets in `options` (of an import into [`ServiceMapping::table_name`])
    /// what the mapping says: the MAP columns, declared types, the key and
    /// the duplicate policies.
    pub fn apply(&self, options: &mut ImportOptions) -> Result<()> {
        let check = &self.duplicate_check;
        let map = self.map_expressions()?;
        if !map.is_empty() {
            options.map = map;
            options.only_mapped = true;
        }
        if !self.db_schema.is_empty() {
            options.declared = Self::text_entries(&self.db_schema, "db_schema")?
                .into_iter()
                .map(|(name, sql_type)| ColumnSpec::declared(name, sql_type))
                .collect();
        }
        options.set_key(check.uniqueness_columns.iter().cloned());
        let rows_checked = check.enabled && !check.allow_duplicates && !check.force_import;
        options.on_duplicate = if rows_checked {
            OnDuplicate::Error
        } else {
            OnDuplicate::Allow
        };
        let files_checked = check.check_file_level && !check.force_import;
        options.file_policy = if files_checked {
            FilePolicy::Error
        } else {
            FilePolicy::Allow
        };
        if let Some(message) = &check.error_message {
            options.duplicate_message = Some(message.clone());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rules_become_map_expressions() {
        let mapping: ServiceMapping = serde_json::from_str(
            r#"{"table_name": "t",
                "mappings": {"email": "E-mail", "joined": "Joined", "name": "Name"},
                "rules": {"transformations": [{"type": "uppercase", "field": "Name"}],
                          "datetime_transformations": [{"field": "joined", "source_format": "%m/%d/%Y", "target_format": "%Y-%m-%d"}]}}"#,
        )
        .unwrap();
        let map = mapping.map_expressions().unwrap();
        assert_eq!(map[0], ("email".into(), "\"E-mail\"".into()));
        assert_eq!(
            map[1].1,
            "to_char(to_date(nullif(trim(CAST(\"Joined\" AS VARCHAR)), ''), '%m/%d/%Y'), '%Y-%m-%d')"
        );
        assert_eq!(map[2], ("name".into(), "upper(\"Name\")".into()));
        let bad: std::result::Result<ServiceMapping, _> =
            serde_json::from_str(r#"{"table_name": "t", "duplicate_checks": {}}"#);
        assert!(bad.is_err());
    }
}
