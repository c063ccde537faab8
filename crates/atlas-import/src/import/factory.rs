//! [`DatabaseRunFactory`]: builds an import's run from the recipe its plan
//! carries, in a process that did not plan it (a Ballista executor).

use std::sync::Arc;

use super::existing_keys::TableKeyLoader;
use super::plan::existing_keys;
use crate::db::Database;
use crate::error::{AtlasError, Result};
use crate::options::OnBadValue;
use crate::physical::{ImportId, ImportRun, RunFactory, RunRecipe, TableTransaction};
use crate::reject::RejectWriter;
use crate::report::ImportMetrics;

/// Builds runs on the databases this process was given (from its own
/// configuration: a recipe names its database by the URL without password,
/// and carries no credential).
///
/// The keys already in the table are read as committed when the check stage
/// runs, not under the write's lock (the write runs in a later stage, in
/// another task); the write, under its lock, finds out whether an earlier
/// attempt of the same import committed (by the import's id in
/// `import_history`) and then writes nothing.
#[derive(Debug, Default)]
pub struct DatabaseRunFactory {
    databases: Vec<Arc<dyn Database>>,
}

impl DatabaseRunFactory {
    /// A factory with no database yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Imports into `db` can run here.
    pub fn with_database(mut self, db: Arc<dyn Database>) -> Self {
        self.databases.push(db);
        self
    }

    /// Connects to each of `urls` (with their credentials: they stay in this
    /// process).
    pub async fn connect(urls: &[String]) -> Result<Self> {
        let mut factory = Self::new();
        for url in urls {
            factory = factory.with_database(crate::db::connect(url).await?);
        }
        Ok(factory)
    }

    /// The databases, as their URLs without password.
    pub fn databases(&self) -> impl Iterator<Item = &str> {
        self.databases.iter().map(|db| db.display_url())
    }

    fn database(&self, recipe: &RunRecipe) -> Result<&Arc<dyn Database>> {
        self.databases
            .iter()
            .find(|db| db.display_url() == recipe.database)
            .ok_or_else(|| {
                AtlasError::Usage(format!(
                    "this process cannot reach database {} (an executor imports into the \
                     databases it is given with --database or ATLAS_DATABASES; it has {})",
                    recipe.database,
                    match self.databases.len() {
                        0 => "none".to_string(),
                        _ => self.databases().collect::<Vec<_>>().join(", "),
                    }
                ))
            })
    }
}

impl RunFactory for DatabaseRunFactory {
    fn build(&self, id: ImportId, recipe: &RunRecipe) -> Result<ImportRun> {
        let db = self.database(recipe)?;
        let metrics = Arc::new(ImportMetrics::default());
        let existing = existing_keys(
            TableKeyLoader {
                db: Arc::clone(db),
                transaction: None,
                table: recipe.table.clone(),
                key_columns: recipe.key_columns.clone(),
                // Read before the write's lock is taken: locations could
                // move before it is.
                locations: false,
                metrics: Arc::clone(&metrics),
                last_read: Default::default(),
                // Each task keeps a share: the sets grow as they fill.
                expected_rows: None,
            },
            recipe.lookup,
            recipe.lookup_reason.clone(),
        );
        let transaction = Arc::new(TableTransaction::from_recipe(Arc::clone(db), recipe));
        let mut run = ImportRun::new(id, existing, metrics).with_transaction(transaction);
        if let OnBadValue::Reject(path) = &recipe.on_bad_value {
            run = run.with_rejects(Arc::new(RejectWriter::new(path)));
        }
        Ok(run)
    }
}
