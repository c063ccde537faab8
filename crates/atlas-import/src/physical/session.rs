//! [`ImportSession`]: the database side of one running import, opened by the
//! plan itself when it starts executing, so a plan is complete on its own (it
//! can be explained without touching the data, and run by any executor).

use std::fmt;
use std::sync::Arc;

use tokio::sync::OnceCell;

use super::TransactionSlot;
use crate::db::{Database, FileRecord, HistoryEntry};
use crate::error::{AtlasError, Result};
use crate::names::TableRef;
use crate::options::FilePolicy;
use crate::schema::ColumnSpec;

/// How the session opened.
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
}

/// The import transaction and what must happen when it opens: begin, lock the
/// table, check the file, create the table if it is missing.
///
/// Opened once, by whichever operator needs it first (the existing-key loader
/// or the sink); both then work through [`ImportSession::slot`].
pub struct ImportSession {
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

impl fmt::Debug for ImportSession {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ImportSession")
            .field("table", &self.table)
            .field("opened", &self.opened.get())
            .finish()
    }
}

impl ImportSession {
    /// A session for an import into `table` of `db`.
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

    /// A session for a dry run (`CHECK IMPORT`): it only reads.
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

    /// The target table.
    pub fn table(&self) -> &TableRef {
        &self.table
    }

    /// The `file_imports` rows of a file source, one per file.
    pub fn files(&self) -> &[FileRecord] {
        &self.files
    }

    /// The columns a missing table is created with (decided when the plan
    /// was made), or `None` when a missing table is an error.
    pub fn planned_columns(&self) -> Option<&[ColumnSpec]> {
        self.create.as_deref()
    }

    /// The transaction, once [`ImportSession::open`] returned `Ready`.
    pub fn slot(&self) -> &TransactionSlot {
        &self.slot
    }

    /// How the session opened, if it did.
    pub fn outcome(&self) -> Option<Opened> {
        self.opened.get().copied()
    }

    /// Opens the session once; later calls return the same outcome.
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
