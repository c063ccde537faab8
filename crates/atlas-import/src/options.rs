//! The knobs of an import, shared by the builder, the operators and the CLI.

use std::fmt;
use std::str::FromStr;

use crate::error::AtlasError;

/// Default number of partitions of the duplicate check.
pub const DEFAULT_PARTITIONS: usize = 4;
/// Default rows per written chunk.
pub const DEFAULT_CHUNK_ROWS: usize = 10_000;

/// What to do with a row whose key already exists or repeats inside the import.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
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

impl fmt::Display for OnDuplicate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            OnDuplicate::Error => "error",
            OnDuplicate::Skip => "skip",
            OnDuplicate::Update => "update",
            OnDuplicate::Allow => "allow",
        })
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
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
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

/// What to do with a value that does not fit its target column.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
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
