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
}
