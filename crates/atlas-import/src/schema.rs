//! The target table as the database catalog describes it.

use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};

/// One column of the target table.
#[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct TargetColumn {
    /// Column name as stored in the catalog.
    pub name: String,
    /// Declared SQL type, as the catalog prints it (`integer`, `varchar(20)`, ...).
    pub sql_type: String,
    /// The Arrow type values are coerced to before they are compared and written.
    #[serde(with = "data_type_text")]
    pub data_type: DataType,
    /// Whether the column accepts NULL.
    pub nullable: bool,
    /// Whether the column has a default or identity, so an import may omit it.
    pub has_default: bool,
    /// Whether the database computes the column (`GENERATED ALWAYS AS
    /// (...)`), so an import cannot write it.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub generated: bool,
    /// The most characters a value may have (`VARCHAR(n)`, `CHAR(n)`), where
    /// the database enforces it.
    pub max_chars: Option<usize>,
    /// How the column's type reads text, where it gives text a syntax and a
    /// canonical form (uuid, jsonb, SQLite's NUMERIC, ...).
    pub text_form: Option<crate::typed_text::TextForm>,
    /// How the column's keys compare where the database's equality is looser
    /// than the text it stores (unconstrained numeric, jsonb, interval...).
    pub key_form: Option<crate::key_form::KeyForm>,
    /// A timestamp column of PostgreSQL or MySQL/MariaDB: the digits of a
    /// second it keeps (`timestamp(0)` and MySQL's `DATETIME` none) and how
    /// the database drops the rest and digits past the microsecond, and
    /// whether it drops a written zone; the conversion does the same first,
    /// so that the check compares the values the table will hold.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seconds_precision: Option<SecondsPrecision>,
    /// A MySQL `BINARY(n)`: the bytes a value has in the table, where a
    /// shorter one is padded with zero bytes (`ab` is stored `ab\0\0`);
    /// the conversion pads it first, so that the check compares the stored
    /// values.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub zero_padded_width: Option<usize>,
    /// A MySQL `ENUM`/`SET`, whose server reads a number that is none of
    /// its labels (in `sql_type`) as the labels it counts to (`2` is the
    /// second); the conversion does the same first.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub numbers_name_labels: bool,
    /// A column whose database reads a value written without a zone in a
    /// session's zone (PostgreSQL's timestamptz, timetz, tstzrange and
    /// arrays of them; MySQL's TIMESTAMP): that zone (the `TimeZone` a
    /// session of the import's user gets), where it is not UTC. The
    /// conversion places timestamps in it first; text the server reads
    /// itself is copied in a transaction set to it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unzoned_in: Option<String>,
}

/// How a timestamp column's database takes a value: the digits of a
/// second it keeps, how it drops the others, and what it does with a zone
/// written with the text.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct SecondsPrecision {
    /// Fraction digits kept: 0 to 6.
    pub digits: u8,
    pub rounding: FractionRounding,
    /// The database drops a zone written with the text (PostgreSQL's
    /// `timestamp`, MariaDB's date-times: `10:00:00+02` is 10:00:00, as
    /// their own loads store it) instead of converting the time to UTC,
    /// the zone of atlas-import's sessions (MySQL, as Arrow does).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub ignores_written_zone: bool,
}

/// How a database drops the digits of a second its column does not keep:
/// past the column's precision, as [`SecondsPrecision::apply`]; past the
/// microsecond, as it reads text ([`FractionRounding::rounds_up`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum FractionRounding {
    /// To the nearest, a half away from zero in microseconds since 1970
    /// (PostgreSQL).
    HalfAwayFromZero,
    /// To the nearest, a half up in the calendar's fraction (MySQL).
    HalfUp,
    /// Cut: the calendar's fraction truncated (MariaDB).
    Truncate,
}

impl FractionRounding {
    /// Whether a fraction of a second written with more than six digits
    /// (`digits`, all of them) is read as the microsecond after its first
    /// six: PostgreSQL reads the fraction as a double and rounds the
    /// microseconds half to even (`.0000005` is 0 µs, `.0000015` 2 µs),
    /// MySQL rounds half up, MariaDB cuts.
    pub fn rounds_up(self, digits: &str) -> bool {
        match self {
            FractionRounding::HalfAwayFromZero => {
                let (Ok(fraction), Ok(kept)) = (
                    format!("0.{digits}").parse::<f64>(),
                    digits.get(..6).unwrap_or(digits).parse::<u32>(),
                ) else {
                    return false;
                };
                (fraction * 1e6).round_ties_even() > f64::from(kept)
            }
            FractionRounding::HalfUp => digits.as_bytes().get(6).is_some_and(|&d| d >= b'5'),
            FractionRounding::Truncate => false,
        }
    }
}

impl SecondsPrecision {
    /// `digits` kept by `rounding` (more than six: six); a written zone
    /// converts the time.
    pub fn new(digits: u8, rounding: FractionRounding) -> Self {
        Self {
            digits: digits.min(6),
            rounding,
            ignores_written_zone: false,
        }
    }

    /// The same, on a database that drops a written zone.
    pub fn ignoring_written_zone(self) -> Self {
        Self {
            ignores_written_zone: true,
            ..self
        }
    }

    /// Whether the column keeps every microsecond.
    pub fn keeps_microseconds(self) -> bool {
        self.digits >= 6
    }

    /// `micros` (since 1970) as the column holds it.
    pub fn apply(self, micros: i64) -> i64 {
        let scale = 10i64.pow(6 - u32::from(self.digits));
        let half = scale / 2;
        match self.rounding {
            FractionRounding::HalfAwayFromZero if micros < 0 => {
                -(micros.saturating_neg().saturating_add(half) / scale * scale)
            }
            FractionRounding::HalfAwayFromZero => micros.saturating_add(half) / scale * scale,
            FractionRounding::HalfUp => micros.saturating_add(half).div_euclid(scale) * scale,
            FractionRounding::Truncate => micros.div_euclid(scale) * scale,
        }
    }
}

impl TargetColumn {
    /// A nullable text column `name` of SQL type `sql_type`, no more (tests).
    #[cfg(test)]
    pub(crate) fn text(name: &str, sql_type: &str) -> Self {
        Self::of_type(name, sql_type, DataType::Utf8)
    }

    /// A nullable column `name` of SQL type `sql_type` held as `data_type`,
    /// no more (no default, no text or key form).
    pub(crate) fn of_type(name: &str, sql_type: &str, data_type: DataType) -> Self {
        Self {
            name: name.into(),
            sql_type: sql_type.into(),
            data_type,
            nullable: true,
            has_default: false,
            generated: false,
            max_chars: None,
            text_form: None,
            key_form: None,
            seconds_precision: None,
            zero_padded_width: None,
            numbers_name_labels: false,
            unzoned_in: None,
        }
    }
}

/// The target table: its name and columns in catalog order.
#[derive(Debug, Clone, PartialEq)]
pub struct TargetTable {
    /// Table name (unqualified, unquoted).
    pub name: String,
    /// Columns in catalog order.
    pub columns: Vec<TargetColumn>,
}

impl TargetTable {
    /// Finds the column a source column (or a key name) means: the one of
    /// exactly that name, else the one whose plain form is the same
    /// (`E-Mail` and `e_mail`, `Email` and `email`: see
    /// [`crate::names::normalize`]). Several of those are an error listing
    /// them.
    pub fn find_column(&self, name: &str) -> crate::error::Result<Option<&TargetColumn>> {
        if let Some(c) = self.columns.iter().find(|c| c.name == name) {
            return Ok(Some(c));
        }
        let plain = crate::names::normalize(name);
        // A name as long as a database may have cut it matches the longer
        // names it starts (the column a new table made of them).
        let cut_from = |column: &str| {
            column.len() >= crate::names::SHORTEST_CUT_NAME_BYTES
                && (name.starts_with(column) || plain.starts_with(&crate::names::normalize(column)))
        };
        let matches: Vec<&TargetColumn> = self
            .columns
            .iter()
            .filter(|c| {
                !plain.is_empty()
                    && (crate::names::normalize(&c.name) == plain || cut_from(&c.name))
            })
            .collect();
        match matches.as_slice() {
            [] => Ok(None),
            [one] => Ok(Some(one)),
            many => Err(crate::error::AtlasError::Usage(format!(
                "column '{name}' could be any of the columns {} of table '{}': name one exactly",
                many.iter()
                    .map(|c| format!("'{}'", c.name))
                    .collect::<Vec<_>>()
                    .join(", "),
                self.name
            ))),
        }
    }

    /// The column that the source column `name`, at `position` (from 0) among
    /// the source's columns, is written to: [`Self::find_column`], and for a
    /// name with nothing left once normalized (`#`, `%`) the
    /// [`crate::names::placeholder_column_name`] a new table gave it.
    pub fn find_source_column(
        &self,
        name: &str,
        position: usize,
    ) -> crate::error::Result<Option<&TargetColumn>> {
        if let Some(column) = self.find_column(name)? {
            return Ok(Some(column));
        }
        if !crate::names::normalize(name).is_empty() {
            return Ok(None);
        }
        let placeholder = crate::names::placeholder_column_name(position);
        Ok(self.columns.iter().find(|c| c.name == placeholder))
    }

    /// The column names, for messages.
    pub fn column_names(&self) -> Vec<&str> {
        self.columns.iter().map(|c| c.name.as_str()).collect()
    }
}

/// A column of a table the import will create.
#[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct ColumnSpec {
    /// Column name.
    pub name: String,
    /// The Arrow type the source gives; the adapter picks the SQL type.
    #[serde(with = "data_type_text")]
    pub data_type: DataType,
    /// A declared SQL type that overrides the adapter's choice (from a
    /// mapping file's `db_schema`).
    pub sql_type: Option<String>,
}

impl ColumnSpec {
    /// A column declared with its SQL type (a mapping file's `db_schema`).
    pub fn declared(name: impl Into<String>, sql_type: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            data_type: DataType::Utf8,
            sql_type: Some(sql_type.into()),
        }
    }
}

/// An Arrow type as its text (`Utf8`, `Decimal128(38, 10)`, `List(Int64)`),
/// which arrow reads back: how settings that name a type are serialized.
mod data_type_text {
    use datafusion::arrow::datatypes::DataType;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(data_type: &DataType, out: S) -> Result<S::Ok, S::Error> {
        out.collect_str(data_type)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(input: D) -> Result<DataType, D::Error> {
        let text = String::deserialize(input)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// Name of the column that carries the 1-based source row number through the plan.
pub const ROW_NUMBER_COLUMN: &str = "__atlas_source_row";

/// Name of the column in which a source reader gives each record's physical
/// line (1-based, the header is line 1), for messages.
pub const SOURCE_LINE_COLUMN: &str = "__atlas_source_line";

/// Name of the column in which a source reader says why a record is
/// malformed (NULL when it is not).
pub const RECORD_ERROR_COLUMN: &str = "__atlas_record_error";

/// Whether a source column is one the import reads itself rather than a
/// column of data ([`SOURCE_LINE_COLUMN`], [`RECORD_ERROR_COLUMN`]).
pub fn is_reader_column(name: &str) -> bool {
    name == SOURCE_LINE_COLUMN || name == RECORD_ERROR_COLUMN
}

/// The schema that flows out of [`crate::physical::CoerceExec`]: the written target
/// columns, then the source row number.
pub fn coerced_schema(columns: &[TargetColumn]) -> SchemaRef {
    let mut fields: Vec<Field> = columns
        .iter()
        .map(|c| Field::new(&c.name, c.data_type.clone(), true))
        .collect();
    fields.push(Field::new(ROW_NUMBER_COLUMN, DataType::UInt64, false));
    std::sync::Arc::new(Schema::new(fields))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seconds_kept_as_each_database_keeps_them() {
        let whole = |rounding| SecondsPrecision::new(0, rounding);
        // 10:00:00.6 and 10:00:00.4 after 1970; 23:59:59.5 and .6 before.
        let (late, early) = (36_000_600_000, 36_000_400_000);
        let postgres = whole(FractionRounding::HalfAwayFromZero);
        assert_eq!(
            (postgres.apply(late), postgres.apply(early)),
            (36_001_000_000, 36_000_000_000)
        );
        assert_eq!(postgres.apply(-500_000), -1_000_000);
        let mysql = whole(FractionRounding::HalfUp);
        assert_eq!(mysql.apply(late), 36_001_000_000);
        assert_eq!(mysql.apply(-500_000), 0);
        let mariadb = whole(FractionRounding::Truncate);
        assert_eq!(mariadb.apply(late), 36_000_000_000);
        assert_eq!(mariadb.apply(-400_000), -1_000_000);
        let millis = SecondsPrecision::new(3, FractionRounding::HalfUp);
        assert_eq!(millis.apply(1_234_567), 1_235_000);
        let micros = SecondsPrecision::new(9, FractionRounding::HalfUp);
        assert!(micros.keeps_microseconds());
        assert_eq!(micros.apply(1_234_567), 1_234_567);
    }

    #[test]
    fn digits_past_the_microsecond_read_as_each_database_reads_them() {
        let up = |rounding: FractionRounding, digits| rounding.rounds_up(digits);
        // PostgreSQL: half to even on the double (psql's own results).
        let postgres = FractionRounding::HalfAwayFromZero;
        for (digits, expected) in [
            ("1234565", false),
            ("1234575", true),
            ("0000005", false),
            ("0000015", true),
            ("9999995", true),
            ("5000005", false),
            ("12345650001", true),
            ("1234564", false),
        ] {
            assert_eq!(up(postgres, digits), expected, "PostgreSQL .{digits}");
        }
        assert!(up(FractionRounding::HalfUp, "1234565"));
        assert!(!up(FractionRounding::HalfUp, "1234564"));
        assert!(!up(FractionRounding::Truncate, "1234569"));
    }
}
