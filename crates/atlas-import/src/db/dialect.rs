//! [`Dialect`]: what differs in the SQL and the types of each database, said
//! once per database, in its adapter's module (`postgres.rs`, `sqlite.rs`,
//! `mysql/`). The shared statements (the upsert's, the probe's filter, the
//! metadata tables') ask the dialect instead of matching on [`DbKind`], so
//! a new database is its adapter and its dialect.
//!
//! The defaults are standard SQL; a dialect overrides what its database
//! does otherwise.

use std::fmt;

use super::DbKind;
use crate::key_form::KeyForm;
use crate::schema::TargetColumn;
use crate::typed_text::TextForm;

/// The SQL and type conventions of one database.
pub(crate) trait Dialect: Sync + fmt::Debug {
    /// The `i`-th (1-based) bind parameter of a statement.
    fn placeholder(&self, _i: usize) -> String {
        "?".to_string()
    }

    /// `text` as a string literal.
    fn string_literal(&self, text: &str) -> String {
        format!("'{}'", text.replace('\'', "''"))
    }

    /// A date literal of `date` (`YYYY-MM-DD`).
    fn date_literal(&self, date: &str) -> String {
        format!("'{date}'")
    }

    /// A timestamp literal of `text` (UTC, `YYYY-MM-DD HH:MM:SS.ffffff`);
    /// `zoned`: the column keeps a time zone.
    fn timestamp_literal(&self, text: &str, _zoned: bool) -> String {
        format!("'{text}'")
    }

    /// The condition that `column` (quoted) holds one of `literals`;
    /// `element_type`: the column's type, where the literals need a cast to
    /// compare as it does.
    fn any_of(&self, column: &str, literals: &[String], _element_type: Option<&str>) -> String {
        format!("{column} IN ({})", literals.join(","))
    }

    /// How statements name the temporary table `name` (quoted).
    fn temp_table(&self, name: &str) -> String {
        name.to_string()
    }

    /// Creates the empty temporary `stage` (dropping one left over).
    fn create_stage(&self, stage: &StageTable<'_>) -> Vec<String> {
        vec![
            self.drop_temp_table(stage.sql),
            self.stage_definition(stage),
        ]
    }

    /// The `CREATE` statement of the empty temporary `stage`.
    fn stage_definition(&self, stage: &StageTable<'_>) -> String;

    /// Drops the temporary table `stage` if it is there.
    fn drop_temp_table(&self, stage: &str) -> String {
        format!("DROP TABLE IF EXISTS {stage}")
    }

    /// What prepares the database to join the stage (`name` quoted, `stage`
    /// as statements name it) with the table on `key`.
    fn prepare_join(&self, name: &str, stage: &str, key: &[TargetColumn]) -> Vec<String>;

    /// The condition that key column `column` is equal in `left` and
    /// `right` (qualified, quoted column references) as the check compares.
    fn key_equality(&self, _column: &TargetColumn, left: &str, right: &str) -> String {
        format!("{left} = {right}")
    }

    /// The condition that row `target` (a table alias) is the one at
    /// `location` (a stage column holding a location the key scan read),
    /// where the database's rows have locations a later statement of the
    /// same transaction can find them by.
    fn location_equality(&self, _target: &str, _location: &str) -> Option<String> {
        None
    }

    /// The statement of `join`.
    fn update_join(&self, join: &UpdateJoin<'_>) -> String {
        let UpdateJoin {
            target,
            stage,
            condition,
            assignments,
            ..
        } = join;
        format!(
            "UPDATE {target} AS atlas_t SET {} FROM {stage} AS atlas_s WHERE {condition}",
            assignments.join(", ")
        )
    }

    /// The update join's shape, for EXPLAIN.
    fn update_join_shape(&self) -> &'static str {
        "UPDATE ... FROM"
    }

    /// How a column whose declared type is `sql_type` reads text, where its
    /// type gives text a syntax and a canonical form.
    fn text_form(&self, sql_type: &str) -> Option<TextForm>;

    /// The key form of a column held as text without a text form, where the
    /// database's equality is looser than the text (PostgreSQL's interval,
    /// inet, macaddr, citext).
    fn text_key_form(&self, _sql_type: &str) -> Option<KeyForm> {
        None
    }

    /// The column type, and its text form, that a new table holds nested
    /// values (structs, lists, maps) in: JSON.
    fn nested_column(&self) -> (&'static str, Option<TextForm>);
}

/// A temporary table of an upsert: `name` (quoted) as it is created,
/// `sql` as statements name it, with the `columns` (a quoted list) of
/// `target`, then a bigint `row` column.
#[derive(Debug, Clone, Copy)]
pub(crate) struct StageTable<'a> {
    pub name: &'a str,
    pub sql: &'a str,
    pub columns: &'a str,
    pub row: &'a str,
    pub target: &'a str,
}

/// An update of `target` (as `atlas_t`) from `stage` (as `atlas_s`) where
/// `condition` holds, setting `assignments` (`c = atlas_s.c`, unqualified on
/// the left); `table_first`: read the table in order and look the stage up,
/// where the database lets a statement say so.
#[derive(Debug, Clone, Copy)]
pub(crate) struct UpdateJoin<'a> {
    pub target: &'a str,
    pub stage: &'a str,
    pub condition: &'a str,
    pub assignments: &'a [String],
    pub table_first: bool,
}

impl DbKind {
    /// The dialect of this database.
    pub(crate) fn dialect(self) -> &'static dyn Dialect {
        match self {
            DbKind::Postgres => &super::postgres::PostgresDialect,
            DbKind::Sqlite => &super::sqlite::SqliteDialect,
            DbKind::MySql => &super::mysql::MySqlDialect,
        }
    }
}
