//! [`Catalog`]: the catalog and metadata queries an adapter says once, on one
//! connection of its driver. The pool ([`super::Database`]) and the import's
//! transaction ([`super::ImportTransaction`]) both answer through it, so an
//! adapter writes each query once and neither trait's implementations repeat
//! it.

use std::ops::DerefMut;

use async_trait::async_trait;

use super::HistoryEntry;
use crate::error::Result;
use crate::names::TableRef;
use crate::report::ImportCounts;
use crate::schema::TargetTable;

/// The queries of one connection on the catalog and the metadata tables.
#[async_trait]
pub trait Catalog: Send {
    /// The catalog's description of `table`, or `None` when it does not exist.
    async fn describe(&mut self, table: &TableRef) -> Result<Option<TargetTable>>;

    /// Whether `file_hash` was already imported into `table`.
    async fn file_imported(&mut self, file_hash: &str, table: &TableRef) -> Result<bool>;

    /// Writes an `import_history` row.
    async fn insert_history(&mut self, entry: &HistoryEntry) -> Result<()>;

    /// What the import of id `import_id` wrote, `(inserted, updated)`, if it
    /// committed (a retried write finds its own commit here).
    async fn committed_import(&mut self, import_id: &str) -> Result<Option<(u64, u64)>>;

    /// Sets the counts of the `import_history` row of `import_id` that its
    /// sink could not see (rows read, skipped, duplicates, rejected).
    async fn complete_history(&mut self, import_id: &str, counts: &ImportCounts) -> Result<()>;

    /// Records what a task of import `import_id` refused (its duplicate
    /// tally as JSON) under the name `refusal`, replacing an earlier
    /// attempt's of that name.
    async fn record_refusal(&mut self, import_id: &str, refusal: &str, report: &str) -> Result<()>;

    /// Takes the refusals recorded for import `import_id`.
    async fn take_refusals(&mut self, import_id: &str) -> Result<Vec<String>>;
}

/// A connection held through a handle (a pool's, a transaction's) answers
/// as the connection.
pub(crate) struct Through<C>(pub C);

#[async_trait]
impl<C> Catalog for Through<C>
where
    C: DerefMut + Send,
    C::Target: Catalog,
{
    async fn describe(&mut self, table: &TableRef) -> Result<Option<TargetTable>> {
        self.0.describe(table).await
    }

    async fn file_imported(&mut self, file_hash: &str, table: &TableRef) -> Result<bool> {
        self.0.file_imported(file_hash, table).await
    }

    async fn insert_history(&mut self, entry: &HistoryEntry) -> Result<()> {
        self.0.insert_history(entry).await
    }

    async fn committed_import(&mut self, import_id: &str) -> Result<Option<(u64, u64)>> {
        self.0.committed_import(import_id).await
    }

    async fn complete_history(&mut self, import_id: &str, counts: &ImportCounts) -> Result<()> {
        self.0.complete_history(import_id, counts).await
    }

    async fn record_refusal(&mut self, import_id: &str, refusal: &str, report: &str) -> Result<()> {
        self.0.record_refusal(import_id, refusal, report).await
    }

    async fn take_refusals(&mut self, import_id: &str) -> Result<Vec<String>> {
        self.0.take_refusals(import_id).await
    }
}
