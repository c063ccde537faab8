//! [`TableTransaction`]: the import's one transaction on its target table,
//! opened by the plan itself when it starts executing (begin, lock, file
//! check, table creation), so the plan can be explained without touching
//! the database.

use std::fmt;
use std::sync::{Arc, OnceLock};

use futures::FutureExt;
use futures::future::{BoxFuture, Shared};
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
    /// The files' hashes when they are still being computed as the import
    /// runs: `files` and `history` then carry none, and the file check
    /// happens at the commit instead of the opening.
    late_hashes: Option<LateHashes>,
    slot: TransactionSlot,
    opened: OnceCell<Opened>,
}

/// The SHA-256 of an import's source files, computed beside the import
/// rather than before it: hashing a large file takes as long as a few
/// hundred thousand rows' writing, and only the commit needs the answer.
///
/// The authoritative "imported before?" check runs at the commit, under the
/// table's lock ([`TableTransaction::file_records`]); an early look outside
/// the lock as soon as the hashes are known ([`LateHashes::mark_imported`])
/// ends an import of a known file before it reads much (its rows flow
/// without waiting for verdicts: the import uses late hashes only then).
#[derive(Clone)]
pub struct LateHashes {
    hashes: Shared<BoxFuture<'static, Result<Arc<Vec<String>>>>>,
    /// The hash of a file the early look found imported before.
    imported_before: Arc<OnceLock<String>>,
}

impl fmt::Debug for LateHashes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LateHashes")
            .field("known", &self.hashes.peek().is_some())
            .finish()
    }
}

impl LateHashes {
    /// The hashes `computing` yields, one per source file in order.
    pub fn new(computing: BoxFuture<'static, Result<Vec<String>>>) -> Self {
        Self {
            hashes: computing
                .map(|hashes| hashes.map(Arc::new))
                .boxed()
                .shared(),
            imported_before: Arc::default(),
        }
    }

    /// The hashes, once computed.
    pub async fn hashes(&self) -> Result<Arc<Vec<String>>> {
        self.hashes.clone().await
    }

    /// The early look found the file of `hash` imported before: the import
    /// ends at its next batch read.
    pub fn mark_imported(&self, hash: &str) {
        let _ = self.imported_before.set(hash.to_string());
    }

    /// The first hash `db` records as imported into `table`, asked outside
    /// the import's transaction once the hashes are known; none where they
    /// failed (the commit reports that) or the database could not say.
    pub async fn first_imported(&self, db: &dyn Database, table: &TableRef) -> Option<String> {
        let hashes = self.hashes().await.ok()?;
        for hash in hashes.iter() {
            if let Ok(true) = db.file_imported(hash, table).await {
                return Some(hash.clone());
            }
        }
        None
    }
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
            late_hashes: None,
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

    /// Takes the files' hashes from `hashes` as they become known (see
    /// [`LateHashes`]) instead of from the `file_imports` rows.
    pub fn with_late_hashes(mut self, hashes: LateHashes) -> Self {
        self.late_hashes = Some(hashes);
        self
    }

    /// The `import_history` row to complete and write at commit, without
    /// its hash if that comes late (see [`Self::file_records`]).
    pub fn history(&self) -> Option<&HistoryEntry> {
        self.history.as_ref()
    }

    /// The error when an early look found the source imported before (see
    /// [`LateHashes`]): the reading stops at its next batch.
    pub fn check_not_imported_before(&self) -> Result<()> {
        match self
            .late_hashes
            .as_ref()
            .and_then(|late| late.imported_before.get())
        {
            Some(hash) => Err(self.already_imported(hash.clone())),
            None => Ok(()),
        }
    }

    /// The `file_imports` rows to write at the commit, with their hashes,
    /// and the hash for `import_history`. Where the hashes came late, this
    /// is where the file check runs, on `tx` under the table's lock: a file
    /// imported before fails the import with [`AtlasError::AlreadyImported`]
    /// (the caller answers a skip policy with a skipped import).
    pub async fn file_records(
        &self,
        tx: &mut dyn ImportTransaction,
    ) -> Result<(Vec<FileRecord>, Option<String>)> {
        let Some(late) = &self.late_hashes else {
            let hash = self.history.as_ref().and_then(|h| h.file_hash.clone());
            return Ok((self.files.clone(), hash));
        };
        let hashes = late.hashes().await?;
        if let Some(hash) = self.first_imported(tx, hashes.iter()).await? {
            return Err(self.already_imported(hash.clone()));
        }
        let mut records = self.files.clone();
        for (record, hash) in records.iter_mut().zip(hashes.iter()) {
            record.file_hash = hash.clone();
        }
        Ok((records, (!hashes.is_empty()).then(|| hashes.join(","))))
    }

    /// The hashes the `file_imports` rows carry (taken before planning).
    fn planned_hashes(&self) -> Vec<&String> {
        self.files.iter().map(|f| &f.file_hash).collect()
    }

    /// The first of `hashes` recorded as imported into the table, read on
    /// `tx` (under the lock); none unless the policy refuses or skips such
    /// files.
    async fn first_imported<'h>(
        &self,
        tx: &mut dyn ImportTransaction,
        hashes: impl IntoIterator<Item = &'h String>,
    ) -> Result<Option<&'h String>> {
        if self.file_policy == FilePolicy::Allow {
            return Ok(None);
        }
        for hash in hashes {
            if tx.file_imported(hash, &self.table).await? {
                return Ok(Some(hash));
            }
        }
        Ok(None)
    }

    fn already_imported(&self, file_hash: String) -> AtlasError {
        AtlasError::AlreadyImported {
            table: self.table.key(),
            file_hash,
        }
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
            // (Hashes that come late are checked at the commit.)
            if !self.dry_run
                && self.late_hashes.is_none()
                && let Some(hash) = self
                    .first_imported(tx.as_mut(), self.planned_hashes())
                    .await?
            {
                // (Files found imported before planning were left out
                // already; this one was imported meanwhile.)
                if self.file_policy == FilePolicy::Skip {
                    return Ok(Opened::FileAlreadyImported);
                }
                return Err(self.already_imported(hash.clone()));
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
