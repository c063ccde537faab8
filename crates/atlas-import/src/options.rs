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
}

impl fmt::Display for OnDuplicate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            OnDuplicate::Error => "error",
            OnDuplicate::Skip => "skip",
        })
    }
}

impl FromStr for OnDuplicate {
    type Err = AtlasError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "error" => Ok(OnDuplicate::Error),
            "skip" => Ok(OnDuplicate::Skip),
            other => Err(AtlasError::Usage(format!(
                "unknown duplicate policy '{other}': expected error or skip"
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
