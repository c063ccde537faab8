//! # atlas-import
//!
//! Imports files into PostgreSQL, SQLite and MySQL/MariaDB **without letting
//! duplicates in**, as an Apache DataFusion plan:
//!
//! ```text
//! DataSinkExec: sink=ImportSink: table=contacts, db=postgres, on_duplicate=error   <- 1 partition, 1 write
//!   SortPreservingMergeExec: [__atlas_source_row ASC]                              <- source order
//!     DuplicateCheckExec: key=[email], existing=contacts (strategy=probe: ...)     <- 4 partitions
//!       RepartitionExec: partitioning=Hash([email@0], 4)
//!         CoerceExec: casts to the target table's column types, source row numbers
//!           DataSourceExec: csv, file=contacts.csv
//! ```
//!
//! Start with [`ImportBuilder`]; the operators in [`physical`] are public for
//! hand-built plans. How the parts fit: `docs/ARCHITECTURE.md`.

#[cfg(feature = "ballista")]
pub mod codec;
pub mod convert;
pub mod db;
#[cfg(feature = "ballista")]
pub mod distributed;
pub mod error;
pub mod ext;
#[doc(hidden)]
pub mod fuzzing;
pub mod import;
pub mod key;
pub mod key_form;
pub mod logical;
pub mod mapping;
pub mod names;
pub mod options;
pub mod physical;
pub mod reject;
pub mod report;
pub mod schema;
pub mod script;
pub mod secrets;
pub mod source;
pub mod sql;
pub mod typed_text;

pub use error::{AtlasError, ErrorClass, Result};
pub use ext::{DataFrameImportExt, SessionContextImportExt, session_context_with_imports};
pub use import::{ImportBuilder, ImportCluster, PreparedImport};
pub use options::{
    BinaryText, CreateTable, DEFAULT_CHUNK_ROWS, DEFAULT_PARTITIONS, FilePolicy, ImportOptions,
    Inference, KeyStrategy, OnBadValue, OnDuplicate, parse_memory_size,
};
pub use report::{
    DuplicateReport, ImportCounts, ImportMetrics, ImportReport, ImportStatus, Phase, ReportContext,
};
pub use source::{Compression, CsvDialect, FileSource, SourceFormat, SourceOptions};
