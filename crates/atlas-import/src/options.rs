//! The knobs of an import, shared by the builder, the operators and the CLI.

use std::fmt;
use std::str::FromStr;

use crate::error::AtlasError;

/// Default number of partitions of the duplicate check.
pub const DEFAULT_PARTITIONS: usize = 4;
/// Default rows per written chunk.
pub const DEFAULT_CHUNK_ROWS: usize = 10_000;

/// Everything an import can be told, as plain data: the one form the three
/// front ends (CLI flags, an `IMPORT INTO` statement, a mapping file)
/// translate into, and the builder reads ([`crate::ImportBuilder::with_options`]).
#[derive(Debug, Clone, PartialEq)]
pub struct ImportOptions {
    /// Names for the source's columns, in order (`IMPORT INTO t (a, b)`).
    pub columns: Vec<String>,
    /// `(column, SQL expression)` pairs computing target columns (`MAP`).
    pub map: Vec<(String, String)>,
    /// Only the `map` columns are imported (a mapping file's `mappings`).
    pub only_mapped: bool,
    /// Columns and SQL types to create a missing table with, instead of
    /// types inferred from the source.
    pub declared: Vec<crate::schema::ColumnSpec>,
    /// The uniqueness columns (`None`: every column the import writes).
    pub key: Option<Vec<String>>,
    /// What to do with duplicate rows.
    pub on_duplicate: OnDuplicate,
    /// What to do when the file was imported into the table before.
    pub file_policy: FilePolicy,
    /// What to do with a value that does not fit its column.
    pub on_bad_value: OnBadValue,
    /// Whether a missing table may be created.
    pub create_table: CreateTable,
    /// How the check learns the keys already in the table.
    pub strategy: KeyStrategy,
    /// Partitions of the duplicate check.
    pub partitions: usize,
    /// Rows per written chunk.
    pub chunk_rows: usize,
    /// Format, compression, inference, names, binary text (`None`: by the
    /// file, or the default).
    pub source: crate::source::SourceOptions,
    /// Replaces the first sentence of the refusal for duplicates.
    pub duplicate_message: Option<String>,
    /// Bytes the import may hold in DataFusion's memory pool (`None`:
    /// unbounded).
    pub memory_limit: Option<usize>,
}

impl Default for ImportOptions {
    fn default() -> Self {
        Self {
            columns: Vec::new(),
            map: Vec::new(),
            only_mapped: false,
            declared: Vec::new(),
            key: None,
            on_duplicate: OnDuplicate::default(),
            file_policy: FilePolicy::default(),
            on_bad_value: OnBadValue::default(),
            create_table: CreateTable::default(),
            strategy: KeyStrategy::default(),
            partitions: DEFAULT_PARTITIONS,
            chunk_rows: DEFAULT_CHUNK_ROWS,
            source: crate::source::SourceOptions::default(),
            duplicate_message: None,
            memory_limit: None,
        }
    }
}

impl ImportOptions {
    /// Whether a new table and its columns take the database's plain names.
    pub fn names(&self) -> crate::names::NamePolicy {
        self.source.names.unwrap_or_default()
    }

    /// How a new table's column types are inferred from a text source.
    pub fn inference(&self) -> Inference {
        self.source.infer.unwrap_or_default()
    }

    /// How text is read into binary columns.
    pub fn binary_text(&self) -> BinaryText {
        self.source.binary.unwrap_or_default()
    }

    /// The key as `with_key` takes it: empty means every written column.
    pub fn set_key<I, S>(&mut self, columns: I)
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        let key: Vec<String> = columns.into_iter().map(Into::into).collect();
        self.key = (!key.is_empty()).then_some(key);
    }

    /// Says the import cannot run as told: partitions and chunks of at
    /// least one row.
    pub fn validate(&self) -> Result<(), AtlasError> {
        if self.partitions == 0 {
            return Err(AtlasError::Usage("partitions must be at least 1".into()));
        }
        if self.chunk_rows == 0 {
            return Err(AtlasError::Usage("chunk_rows must be at least 1".into()));
        }
        Ok(())
    }
}

/// What to do with a row whose key already exists or repeats inside the import.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, Default, serde::Serialize, serde::Deserialize,
)]
pub enum OnDuplicate {
    /// Refuse the whole import; nothing is written.
    #[default]
    Error,
    /// Skip such rows; inside the import the first occurrence is kept.
    Skip,
    /// Upsert: such rows overwrite the non-key columns of the existing row;
    /// inside the import the last occurrence wins.
    Update,
    /// No row-level check: every row is inserted (the original service's
    /// `allow_duplicates`; the file-level check still applies unless allowed).
    Allow,
}

impl OnDuplicate {
    /// The policy's name, as SQL, EXPLAIN and `import_history` spell it.
    pub fn as_str(self) -> &'static str {
        match self {
            OnDuplicate::Error => "error",
            OnDuplicate::Skip => "skip",
            OnDuplicate::Update => "update",
            OnDuplicate::Allow => "allow",
        }
    }
}

impl fmt::Display for OnDuplicate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for OnDuplicate {
    type Err = AtlasError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "error" => Ok(OnDuplicate::Error),
            "skip" => Ok(OnDuplicate::Skip),
            "update" => Ok(OnDuplicate::Update),
            "allow" => Ok(OnDuplicate::Allow),
            other => Err(AtlasError::Usage(format!(
                "unknown duplicate policy '{other}': expected error, skip, update or allow"
            ))),
        }
    }
}

/// What to do when the same file (same SHA-256) was already imported into the table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
pub enum FilePolicy {
    /// Refuse the import (exit 4).
    #[default]
    Error,
    /// Succeed and write nothing.
    Skip,
    /// Import anyway; the row-level check still runs (`--force`).
    Allow,
}

/// Whether a missing target table may be created.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum CreateTable {
    /// Create it from the source schema (the default).
    #[default]
    IfNotExists,
    /// Refuse when it does not exist.
    Never,
}

/// How the duplicate check learns which keys the target holds already.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum KeyStrategy {
    /// Chosen per import from the table's size and indexes and the import's.
    #[default]
    Auto,
    /// Read the table's keys on a connection of their own and hold their
    /// fingerprints (a table not much larger than the import).
    Preload,
    /// Stage the import's keys beside the table and let the database match
    /// them, by the key's index where there is one (a small import into a
    /// large table).
    Probe,
    /// Read one key column of the table first (a narrow scan), then the
    /// whole keys only of the rows that share a value of it with the import,
    /// as the probe does (an import whose rows are mostly new, into a table
    /// whose whole keys cost more to read than one column).
    Narrow,
}

impl fmt::Display for KeyStrategy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            KeyStrategy::Auto => "auto",
            KeyStrategy::Preload => "preload",
            KeyStrategy::Probe => "probe",
            KeyStrategy::Narrow => "narrow",
        })
    }
}

impl FromStr for KeyStrategy {
    type Err = AtlasError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "auto" => Ok(KeyStrategy::Auto),
            "preload" => Ok(KeyStrategy::Preload),
            "probe" => Ok(KeyStrategy::Probe),
            "narrow" => Ok(KeyStrategy::Narrow),
            other => Err(AtlasError::Usage(format!(
                "unknown key strategy '{other}': expected auto, preload, probe or narrow"
            ))),
        }
    }
}

/// How text from the source is read into a binary column (bytea, BLOB).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum BinaryText {
    /// As the database reads text: PostgreSQL's bytea input (`\x` and hex
    /// digits, or the escape form); elsewhere the bytes of the text.
    #[default]
    Native,
    /// Hex digits, with or without a `\x` or `0x` prefix.
    Hex,
    /// Base64 (standard alphabet, padding optional).
    Base64,
}

impl fmt::Display for BinaryText {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            BinaryText::Native => "native",
            BinaryText::Hex => "hex",
            BinaryText::Base64 => "base64",
        })
    }
}

impl FromStr for BinaryText {
    type Err = AtlasError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "native" => Ok(BinaryText::Native),
            "hex" => Ok(BinaryText::Hex),
            "base64" => Ok(BinaryText::Base64),
            other => Err(AtlasError::Usage(format!(
                "unknown binary text '{other}': expected native, hex or base64"
            ))),
        }
    }
}

/// How the column types of a table the import creates are chosen from text
/// sources (CSV, JSON, spreadsheets, XML).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Inference {
    /// A number, boolean, date or timestamp type only where every value
    /// converts to it and back without changing its meaning; text otherwise.
    #[default]
    Strict,
    /// Every column is text.
    Text,
}

impl fmt::Display for Inference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Inference::Strict => "strict",
            Inference::Text => "text",
        })
    }
}

impl FromStr for Inference {
    type Err = AtlasError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "strict" => Ok(Inference::Strict),
            "text" => Ok(Inference::Text),
            other => Err(AtlasError::Usage(format!(
                "unknown inference '{other}': expected strict or text"
            ))),
        }
    }
}

/// What to do with a value that does not fit its target column.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default, serde::Serialize, serde::Deserialize)]
pub enum OnBadValue {
    /// Fail the import naming file, row, column and value (the default).
    #[default]
    Error,
    /// Write NULL instead of the value.
    Null,
    /// Leave the row out and write it, with the reason, to this CSV file.
    Reject(std::path::PathBuf),
}

impl fmt::Display for OnBadValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            OnBadValue::Error => f.write_str("error"),
            OnBadValue::Null => f.write_str("null"),
            OnBadValue::Reject(path) => write!(f, "reject to {}", path.display()),
        }
    }
}

/// Parses a memory size: `512MB`, `2GB`, `64MiB`, `1048576` (bytes).
pub fn parse_memory_size(text: &str) -> Result<usize, AtlasError> {
    let t = text.trim().to_ascii_lowercase();
    let split = t
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(t.len());
    let (number, unit) = t.split_at(split);
    let factor: f64 = match unit.trim() {
        "" | "b" => 1.0,
        "k" | "kb" | "kib" => 1024.0,
        "m" | "mb" | "mib" => 1024.0 * 1024.0,
        "g" | "gb" | "gib" => 1024.0 * 1024.0 * 1024.0,
        _ => f64::NAN,
    };
    match number.parse::<f64>() {
        Ok(n) if factor.is_finite() && n > 0.0 => Ok((n * factor) as usize),
        _ => Err(AtlasError::Usage(format!(
            "invalid memory size '{text}': expected e.g. 512MB, 2GB or a number of bytes"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_sizes() {
        assert_eq!(parse_memory_size("512MB").unwrap(), 512 << 20);
        assert_eq!(parse_memory_size("2gb").unwrap(), 2 << 30);
        assert_eq!(parse_memory_size("1.5 GiB").unwrap(), 3 << 29);
        assert_eq!(parse_memory_size("4096").unwrap(), 4096);
        assert!(parse_memory_size("lots").is_err());
        assert!(parse_memory_size("0MB").is_err());
    }
}
