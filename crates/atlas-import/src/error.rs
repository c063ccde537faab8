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
    #[error("database error while {context}: {}", crate::db::database_message(source.as_ref()))]
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

    /// A task of the import that panicked or was cancelled: `what` says
    /// which and that it stopped ("the SQLite writer stopped").
    pub(crate) fn task_stopped(what: &str, error: tokio::task::JoinError) -> Self {
        AtlasError::DataFusion(Arc::new(DataFusionError::Internal(format!(
            "{what}: {error}"
        ))))
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

/// The marks around an error sent from another process (see
/// [`AtlasError::to_wire`]).
const WIRE_START: &str = "[atlas-import error ";
const WIRE_END: char = ']';

/// An [`AtlasError`] as it crosses processes: plain data (sources as text).
#[derive(serde::Serialize, serde::Deserialize)]
enum WireError {
    Usage(String),
    SchemaMismatch {
        table: String,
        differences: Vec<String>,
    },
    Duplicates(Box<DuplicateReport>),
    AlreadyImported {
        table: String,
        file_hash: String,
    },
    ValueRefused {
        written_row: u64,
        column: String,
        value: String,
        reason: String,
    },
    BadValue {
        source_name: String,
        row: u64,
        line: Option<u64>,
        column: String,
        value: String,
        target_type: String,
    },
    Source {
        source_name: String,
        message: String,
    },
    Database {
        context: String,
        message: String,
    },
    ResourcesExhausted(String),
    Other(String),
}

/// The text of an error from another process, as its source.
#[derive(Debug)]
struct RemoteMessage(String);

impl std::fmt::Display for RemoteMessage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for RemoteMessage {}

impl AtlasError {
    /// This error as text that survives another process's error reporting
    /// (a Ballista task failure is reported as the `Debug` text of its
    /// error): base64 of its plain-data form between marks, so quoting and
    /// escaping leave it intact. [`AtlasError::from_remote`] reads it back.
    pub fn to_wire(&self) -> String {
        use base64::Engine;
        let wire = match self.clone() {
            AtlasError::Usage(m) => WireError::Usage(m),
            AtlasError::SchemaMismatch { table, differences } => {
                WireError::SchemaMismatch { table, differences }
            }
            AtlasError::Duplicates(report) => WireError::Duplicates(report),
            AtlasError::AlreadyImported { table, file_hash } => {
                WireError::AlreadyImported { table, file_hash }
            }
            AtlasError::ValueRefused {
                written_row,
                column,
                value,
                reason,
            } => WireError::ValueRefused {
                written_row,
                column,
                value,
                reason,
            },
            AtlasError::BadValue {
                source_name,
                row,
                line,
                column,
                value,
                target_type,
            } => WireError::BadValue {
                source_name,
                row,
                line,
                column,
                value,
                target_type,
            },
            AtlasError::Source {
                source_name,
                message,
            } => WireError::Source {
                source_name,
                message,
            },
            AtlasError::Database { context, source } => WireError::Database {
                context,
                message: crate::db::database_message(source.as_ref()),
            },
            AtlasError::ResourcesExhausted(m) => WireError::ResourcesExhausted(m),
            other @ (AtlasError::Io { .. }
            | AtlasError::Internal(_)
            | AtlasError::DataFusion(_)) => WireError::Other(other.to_string()),
        };
        let json = serde_json::to_vec(&wire).unwrap_or_default();
        format!(
            "{WIRE_START}{}{WIRE_END}",
            base64::engine::general_purpose::STANDARD.encode(json)
        )
    }

    /// The error another process sent as [`AtlasError::to_wire`] text,
    /// found anywhere in `message`.
    pub fn from_remote(message: &str) -> Option<Self> {
        use base64::Engine;
        let start = message.find(WIRE_START)? + WIRE_START.len();
        let end = start + message[start..].find(WIRE_END)?;
        let json = base64::engine::general_purpose::STANDARD
            .decode(&message[start..end])
            .ok()?;
        let wire: WireError = serde_json::from_slice(&json).ok()?;
        Some(match wire {
            WireError::Usage(m) => AtlasError::Usage(m),
            WireError::SchemaMismatch { table, differences } => {
                AtlasError::SchemaMismatch { table, differences }
            }
            WireError::Duplicates(report) => AtlasError::Duplicates(report),
            WireError::AlreadyImported { table, file_hash } => {
                AtlasError::AlreadyImported { table, file_hash }
            }
            WireError::ValueRefused {
                written_row,
                column,
                value,
                reason,
            } => AtlasError::ValueRefused {
                written_row,
                column,
                value,
                reason,
            },
            WireError::BadValue {
                source_name,
                row,
                line,
                column,
                value,
                target_type,
            } => AtlasError::BadValue {
                source_name,
                row,
                line,
                column,
                value,
                target_type,
            },
            WireError::Source {
                source_name,
                message,
            } => AtlasError::Source {
                source_name,
                message,
            },
            WireError::Database { context, message } => AtlasError::Database {
                context,
                source: Arc::new(RemoteMessage(message)),
            },
            WireError::ResourcesExhausted(m) => AtlasError::ResourcesExhausted(m),
            WireError::Other(m) => AtlasError::Internal(m),
        })
    }

    /// The error of a plan that ran elsewhere: the one an operator sent
    /// (see [`AtlasError::to_wire`]), else as [`AtlasError::from_datafusion`].
    pub fn from_cluster(err: DataFusionError) -> Self {
        match Self::from_remote(&err.to_string()) {
            Some(found) => found,
            None => Self::from_datafusion(err),
        }
    }

    /// `err` as an operator of a task of a distributed plan fails with it:
    /// our error, readable by the client that waits for the job.
    pub fn for_cluster(err: DataFusionError) -> DataFusionError {
        // An I/O error stays one: Ballista tries such a task again.
        if matches!(err.find_root(), DataFusionError::IoError(_)) {
            return err;
        }
        DataFusionError::Execution(Self::from_datafusion(err).to_wire())
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
