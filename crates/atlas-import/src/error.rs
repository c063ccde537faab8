//! The one error type of the crate.
//!
//! Every variant is cheap to clone (sources are behind `Arc`), because DataFusion
//! hands errors that cross a `RepartitionExec` to every output partition as a shared
//! reference: [`AtlasError::from_datafusion`] finds our error inside such a chain and
//! recovers it whole, so the CLI can still map it to the right exit code.

use std::sync::Arc;

use datafusion::error::DataFusionError;

use crate::report::DuplicateReport;

/// Result alias used across the crate.
pub type Result<T, E = AtlasError> = std::result::Result<T, E>;

/// What went wrong during an import, classified the way the CLI reports it.
#[derive(Debug, Clone, thiserror::Error)]
pub enum AtlasError {
    /// The request itself is wrong: bad option, unknown column, missing file.
    #[error("{0}")]
    Usage(String),

    /// The target table exists but cannot hold the data; every difference is listed.
    #[error("table '{table}' does not fit the import:\n  - {}", differences.join("\n  - "))]
    SchemaMismatch {
        /// The target table.
        table: String,
        /// One line per difference.
        differences: Vec<String>,
    },

    /// Duplicates were found and the import was refused (`ON DUPLICATE ERROR`).
    #[error("{0}")]
    Duplicates(Box<DuplicateReport>),

    /// The same source bytes were already imported into this table.
    #[error("File has already been imported to table '{table}'.")]
    AlreadyImported {
        /// The target table.
        table: String,
        /// SHA-256 of the source bytes.
        file_hash: String,
    },

    /// The database refused a value of the bulk write (one of a type
    /// atlas-import carries as text for the server to read: an enum label, an
    /// interval, an array, a domain's check...). The sink turns it into a
    /// [`AtlasError::BadValue`] naming the source row.
    #[error(
        "the database refused {value:?} for column '{column}' in row {written_row} of the write: {reason}"
    )]
    ValueRefused {
        /// 1-based position of the row in the write.
        written_row: u64,
        /// Target column name.
        column: String,
        /// The value as the database quotes it.
        value: String,
        /// The database's message.
        reason: String,
    },

    /// A value could not be converted to its target column type.
    #[error(
        "bad value in {source_name}, {}, column '{column}': {value:?} is not a valid {target_type}",
        position(*.line, *.row)
    )]
    BadValue {
        /// The source (file path or description).
        source_name: String,
        /// 1-based data row number in the source.
        row: u64,
        /// 1-based physical line of the record (the header is line 1), when
        /// the reader knows it.
        line: Option<u64>,
        /// Target column name.
        column: String,
        /// The value as it appeared in the source.
        value: String,
        /// The SQL or Arrow type it had to fit.
        target_type: String,
    },

    /// The source could not be read or parsed (malformed CSV, truncated Parquet, ...).
    #[error("cannot read {source_name}: {message}")]
    Source {
        /// The source (file path or description).
        source_name: String,
        /// What the reader said.
        message: String,
    },

    /// The database refused or failed an operation.
    #[error("database error while {context}: {source}")]
    Database {
        /// What we were doing.
        context: String,
        /// The driver's error.
        #[source]
        source: Arc<dyn std::error::Error + Send + Sync>,
    },

    /// An I/O error outside the database (reading the source to hash it, ...).
    #[error("I/O error on {path}: {source}")]
    Io {
        /// The file involved.
        path: String,
        /// The underlying error.
        #[source]
        source: Arc<std::io::Error>,
    },

    /// The memory pool could not hold what the import needs.
    #[error("{0}")]
    ResourcesExhausted(String),

    /// atlas-import itself failed (a state it should never reach): not the
    /// request's fault, so not a usage error.
    #[error("internal error: {0}")]
    Internal(String),

    /// Any other DataFusion error.
    #[error(transparent)]
    DataFusion(Arc<DataFusionError>),
}

/// Where a value is, as messages say it: its physical line when known, else
/// its row.
pub fn position(line: Option<u64>, row: u64) -> String {
    match line {
        Some(line) => format!("line {line}"),
        None => format!("row {row}"),
    }
}

/// How an error is classified for exit codes and the `status` of a report.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorClass {
    /// Usage or plan error.
    Usage,
    /// Duplicates rejected.
    Duplicates,
    /// The file was already imported.
    AlreadyImported,
    /// Bad data in the source.
    BadData,
    /// Database error.
    Database,
    /// Anything else.
    Other,
}

impl ErrorClass {
    /// The class's name in `--json` output (`error_class`), beside the
    /// import's status.
    pub fn name(self) -> &'static str {
        match self {
            ErrorClass::Usage => "usage",
            ErrorClass::Duplicates => "duplicates",
            ErrorClass::AlreadyImported => "already_imported",
            ErrorClass::BadData => "bad_data",
            ErrorClass::Database => "database",
            ErrorClass::Other => "other",
        }
    }
}

impl AtlasError {
    /// Wraps a driver error with what we were doing.
    pub fn database(
        context: impl Into<String>,
        source: impl std::error::Error + Send + Sync + 'static,
    ) -> Self {
        AtlasError::Database {
            context: context.into(),
            source: Arc::new(source),
        }
    }

    /// Wraps an I/O error with the path involved.
    pub fn io(path: impl Into<String>, source: std::io::Error) -> Self {
        AtlasError::Io {
            path: path.into(),
            source: Arc::new(source),
        }
    }

    /// The class of this error.
    pub fn class(&self) -> ErrorClass {
        match self {
            AtlasError::Usage(_) | AtlasError::SchemaMismatch { .. } => ErrorClass::Usage,
            AtlasError::Duplicates(_) => ErrorClass::Duplicates,
            AtlasError::AlreadyImported { .. } => ErrorClass::AlreadyImported,
            AtlasError::BadValue { .. }
            | AtlasError::ValueRefused { .. }
            | AtlasError::Source { .. } => ErrorClass::BadData,
            AtlasError::Database { .. } => ErrorClass::Database,
            AtlasError::Io { .. }
            | AtlasError::ResourcesExhausted(_)
            | AtlasError::Internal(_)
            | AtlasError::DataFusion(_) => ErrorClass::Other,
        }
    }

    /// Recovers the [`AtlasError`] inside a DataFusion error chain, or classifies
    /// the DataFusion error itself.
    pub fn from_datafusion(err: DataFusionError) -> Self {
        if let Some(found) = find_atlas_error(&err) {
            return found.clone();
        }
        match find_root(&err) {
            DataFusionError::ResourcesExhausted(msg) => {
                AtlasError::ResourcesExhausted(format!("memory limit reached: {msg}"))
            }
            _ => AtlasError::DataFusion(Arc::new(err)),
        }
    }

    /// Like [`AtlasError::from_datafusion`], but read and parse errors of the
    /// source are reported as [`AtlasError::Source`] naming `source_name`.
    pub fn from_source_read(err: DataFusionError, source_name: &str) -> Self {
        if let Some(found) = find_atlas_error(&err) {
            return found.clone();
        }
        match find_root(&err) {
            DataFusionError::ArrowError(..)
            | DataFusionError::ParquetError(..)
            | DataFusionError::IoError(..)
            | DataFusionError::ObjectStore(..) => AtlasError::Source {
                source_name: source_name.to_string(),
                message: find_root(&err).to_string(),
            },
            _ => AtlasError::from_datafusion(err),
        }
    }
}

impl From<datafusion::arrow::error::ArrowError> for AtlasError {
    fn from(err: datafusion::arrow::error::ArrowError) -> Self {
        AtlasError::from_datafusion(err.into())
    }
}

impl From<AtlasError> for DataFusionError {
    fn from(err: AtlasError) -> Self {
        match err {
            AtlasError::DataFusion(inner) => DataFusionError::Shared(inner),
            other => DataFusionError::External(Box::new(other)),
        }
    }
}

/// Walks `Context`, `Shared`, `External` and collections to find our error.
fn find_atlas_error(err: &DataFusionError) -> Option<&AtlasError> {
    match err {
        DataFusionError::External(inner) => inner.downcast_ref::<AtlasError>().or_else(|| {
            inner
                .downcast_ref::<DataFusionError>()
                .and_then(find_atlas_error)
        }),
        DataFusionError::Context(_, inner) => find_atlas_error(inner),
        DataFusionError::Shared(inner) => find_atlas_error(inner),
        DataFusionError::Diagnostic(_, inner) => find_atlas_error(inner),
        DataFusionError::Collection(errs) => errs.iter().find_map(find_atlas_error),
        DataFusionError::ArrowError(arrow, _) => {
            // An error raised inside a stream adapter may have been turned into an
            // ArrowError::ExternalError on its way through arrow code.
            if let datafusion::arrow::error::ArrowError::ExternalError(inner) = arrow.as_ref() {
                inner.downcast_ref::<AtlasError>().or_else(|| {
                    inner
                        .downcast_ref::<DataFusionError>()
                        .and_then(find_atlas_error)
                })
            } else {
                None
            }
        }
        _ => None,
    }
}

fn find_root(err: &DataFusionError) -> &DataFusionError {
    match err {
        DataFusionError::Context(_, inner) | DataFusionError::Diagnostic(_, inner) => {
            find_root(inner)
        }
        DataFusionError::Shared(inner) => find_root(inner),
        DataFusionError::Collection(errs) if !errs.is_empty() => find_root(&errs[0]),
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recovers_error_through_shared_and_context() {
        let original = AtlasError::AlreadyImported {
            table: "t".into(),
            file_hash: "h".into(),
        };
        let wrapped = DataFusionError::Context(
            "ctx".into(),
            Box::new(DataFusionError::Shared(Arc::new(original.into()))),
        );
        let found = AtlasError::from_datafusion(wrapped);
        assert_eq!(found.class(), ErrorClass::AlreadyImported);
        assert_eq!(
            found.to_string(),
            "File has already been imported to table 't'."
        );
    }
}
