//! [`TableTransaction`]: the import's one transaction on its target table,
//! opened by the plan itself when it starts executing (begin, lock, file
//! check, table creation), so the plan can be explained without touching
//! the database.

use std::fmt;
use std::sync::Arc;

use tokio::sync::OnceCell;

use tokio::sync::{Mutex, MutexGuard};

use crate::db::ImportTransaction;
use crate::db::{Database, FileRecord, HistoryEntry};
use crate::error::{AtlasError, Result};
use crate::names::TableRef;
use crate::options::FilePolicy;
use crate::schema::ColumnSpec;

/// How the transaction opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Opened {
    /// The transaction is open and holds the lock.
    Ready {
        /// The import created the table in its transaction.
        created: bool,
        /// The table exists (false only in a dry run of an import into a new table).
        exists: bool,
    },
    /// The same file was already imported and the policy is to skip it: nothing
    /// is read or written.
    FileAlreadyImported,
    /// This very import (its id) committed already: a retried write (a
    /// distributed import's sink task run again) writes nothing and answers
    /// with what the commit wrote.
    Committed {
        /// Rows the commit inserted.
        inserted: u64,
        /// Rows the commit updated.
        updated: u64,
    },
}

/// The import transaction and what must happen when it opens: begin, lock the
/// table, check the file, create the table if it is missing.
///
/// Opened once, by whichever operator needs it first (the existing-key loader
/// or the sink); both then work through [`TableTransaction::slot`]. It lives
/// in the import's [`super::ImportRun`]; the plan holds none of it.
pub struct TableTransaction {
    db: Arc<dyn Database>,
    table: TableRef,
    /// The `file_imports` rows to check and write: one per source file.
    files: Vec<FileRecord>,
    file_policy: FilePolicy,
    /// The columns of the table to create if it is missing (decided when the
    /// plan was made); `None` when a missing table is an error.
    create: Option<Vec<ColumnSpec>>,
    /// A dry run: never create, never check the file, roll back at the end.
    dry_run: bool,
    /// The `import_history` row to write when the import commits (counts are
    /// filled in from the metrics then).
    history: Option<HistoryEntry>,
    slot: TransactionSlot,
    opened: OnceCell<Opened>,
}

impl fmt::Debug for TableTransaction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TableTransaction")
            .field("table", &self.table)
            .field("opened", &self.opened.get())
            .finish()
    }
}

impl TableTransaction {
    /// The transaction of an import into `table` of `db`.
    pub fn new(
        db: Arc<dyn Database>,
        table: TableRef,
        files: Vec<FileRecord>,
        file_policy: FilePolicy,
        create: Option<Vec<ColumnSpec>>,
    ) -> Self {
        Self {
            db,
            table,
            files,
            file_policy,
            create,
            dry_run: false,
            history: None,
            slot: TransactionSlot::empty(),
            opened: OnceCell::new(),
        }
    }

    /// The transaction `recipe` describes, on `db` (its database).
    pub fn from_recipe(db: Arc<dyn Database>, recipe: &super::RunRecipe) -> Self {
        Self::new(
            db,
            recipe.table.clone(),
            recipe.files.clone(),
            recipe.file_policy,
            recipe.creates.clone(),
        )
        .with_history(recipe.history.clone())
    }

    /// The transaction of a dry run (`CHECK IMPORT`): it only reads.
    pub fn dry_run(db: Arc<dyn Database>, table: TableRef) -> Self {
        Self {
            dry_run: true,
            ..Self::new(db, table, Vec::new(), FilePolicy::Allow, None)
        }
    }

    /// Records the import in `import_history` when it commits, from `entry`.
    pub fn with_history(mut self, entry: HistoryEntry) -> Self {
        self.history = Some(entry);
        self
    }

    /// The `import_history` row to complete and write at commit.
    pub fn history(&self) -> Option<&HistoryEntry> {
        self.history.as_ref()
    }

    /// The database the transaction is on.
    pub fn database(&self) -> &Arc<dyn Database> {
        &self.db
    }

    /// The import's id, as `import_history` records it.
    pub fn import_id(&self) -> Option<&str> {
        self.history.as_ref().and_then(|h| h.import_id.as_deref())
    }

    /// The target table.
    pub fn table(&self) -> &TableRef {
        &self.table
    }

    /// The `file_imports` rows of a file source, one per file.
    pub fn files(&self) -> &[FileRecord] {
        &self.files
    }

    /// The transaction, once [`TableTransaction::open`] returned `Ready`.
    pub fn slot(&self) -> &TransactionSlot {
        &self.slot
    }

    /// How the transaction opened, if it did.
    pub fn outcome(&self) -> Option<Opened> {
        self.opened.get().copied()
    }

    /// Opens the transaction once; later calls return the same outcome.
    pub async fn open(&self) -> Result<Opened> {
        self.opened
            .get_or_try_init(|| self.open_once())
            .await
            .copied()
    }

    async fn open_once(&self) -> Result<Opened> {
        let mut tx = self.db.begin().await?;
        let prepared: Result<Opened> = async {
            tx.lock_table(&self.table).await?;
            // Under the lock: an earlier attempt of this import has either
            // committed (its history row is there) or left nothing.
            if let Some(id) = self.history.as_ref().and_then(|h| h.import_id.as_deref())
                && let Some((inserted, updated)) = tx.catalog().committed_import(id).await?
            {
                return Ok(Opened::Committed { inserted, updated });
            }
            if !self.dry_run && self.file_policy != FilePolicy::Allow {
                for file in &self.files {
                    if !tx.file_imported(&file.file_hash, &self.table).await? {
                        continue;
                    }
                    // (Files found imported before planning were left out
                    // already; this one was imported meanwhile.)
                    if self.file_policy == FilePolicy::Skip {
                        return Ok(Opened::FileAlreadyImported);
                    }
                    return Err(AtlasError::AlreadyImported {
                        table: self.table.key(),
                        file_hash: file.file_hash.clone(),
                    });
                }
            }
            if tx.describe_table(&self.table).await?.is_some() {
                return Ok(Opened::Ready {
                    created: false,
                    exists: true,
                });
            }
            match (&self.create, self.dry_run) {
                (_, true) => Ok(Opened::Ready {
                    created: false,
                    exists: false,
                }),
                (Some(columns), false) => {
                    tx.create_table(&self.table, columns).await?;
                    Ok(Opened::Ready {
                        created: true,
                        exists: true,
                    })
                }
                (None, false) => Err(AtlasError::Usage(format!(
                    "table '{}' does not exist (and CREATE TABLE NEVER was given)",
                    self.table
                ))),
            }
        }
        .await;
        match prepared {
            Ok(ready @ Opened::Ready { .. }) => {
                self.slot.put(tx).await;
                Ok(ready)
            }
            Ok(skipped) => {
                tx.rollback().await?;
                Ok(skipped)
            }
            Err(e) => {
                tx.rollback().await.ok();
                Err(e)
            }
        }
    }
}

/// Holds the import transaction while the plan runs: the existing-key loader
/// reads through it, the sink writes through it and finally commits or rolls it
/// back. Whoever finishes the import takes it out.
#[derive(Default)]
pub struct TransactionSlot {
    inner: Mutex<Option<Box<dyn ImportTransaction>>>,
}

impl fmt::Debug for TransactionSlot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("TransactionSlot")
    }
}

impl TransactionSlot {
    /// An empty slot, until the transaction opens.
    pub fn empty() -> Self {
        Self::default()
    }

    /// Puts the transaction in.
    pub async fn put(&self, tx: Box<dyn ImportTransaction>) {
        *self.inner.lock().await = Some(tx);
    }

    /// Locks the slot for one operation.
    pub async fn lock(&self) -> MutexGuard<'_, Option<Box<dyn ImportTransaction>>> {
        self.inner.lock().await
    }

    /// Takes the transaction out.
    pub async fn take(&self) -> Option<Box<dyn ImportTransaction>> {
        self.inner.lock().await.take()
    }

    /// Rolls back the transaction if it is still open.
    pub async fn rollback(&self) -> crate::error::Result<()> {
        match self.take().await {
            Some(tx) => tx.rollback().await,
            None => Ok(()),
        }
    }
}

/// The error when the transaction is not there: it never opened, or it was
/// already committed or rolled back.
pub(crate) fn not_open() -> AtlasError {
    AtlasError::Internal(
        "the import transaction is not open (it did not open, or it already ended)".into(),
    )
}
