//! Extension traits that make imports part of ordinary DataFusion programs.

use std::future::Future;
use std::sync::Arc;

use datafusion::execution::session_state::SessionStateBuilder;
use datafusion::prelude::{DataFrame, SessionConfig, SessionContext};

use crate::db::Database;
use crate::error::Result;
use crate::import::ImportBuilder;
use crate::logical::ImportQueryPlanner;
use crate::report::{ImportMetrics, ImportReport};
use crate::script::{ScriptError, StatementOutcome, run_script};

/// Import the rows of any `DataFrame`.
///
/// ```no_run
/// # async fn run(ctx: datafusion::prelude::SessionContext) -> atlas_import::Result<()> {
/// use atlas_import::{DataFrameImportExt, OnDuplicate, db};
/// let database = db::connect("sqlite://atlas.db").await?;
/// let df = ctx.sql("SELECT lower(email) AS email, name FROM raw_contacts").await.unwrap();
/// let report = df
///     .import_builder(database, "contacts")
///     .with_key(["email"])
///     .with_on_duplicate(OnDuplicate::Skip)
///     .execute()
///     .await?;
/// # Ok(()) }
/// ```
pub trait DataFrameImportExt {
    /// Imports every row into `table` with the default policies (refuse on
    /// duplicates, key = all columns).
    fn import_into(
        self,
        db: Arc<dyn Database>,
        table: &str,
    ) -> impl Future<Output = Result<ImportReport>> + Send;

    /// A builder to set the key, policies, partitions and chunk size first.
    fn import_builder(self, db: Arc<dyn Database>, table: &str) -> ImportBuilder;
}

impl DataFrameImportExt for DataFrame {
    fn import_into(
        self,
        db: Arc<dyn Database>,
        table: &str,
    ) -> impl Future<Output = Result<ImportReport>> + Send {
        self.import_builder(db, table).execute()
    }

    fn import_builder(self, db: Arc<dyn Database>, table: &str) -> ImportBuilder {
        ImportBuilder::from_dataframe(db, self, "DataFrame", table)
    }
}

/// A `SessionContext` whose planner knows the import node
/// ([`crate::logical::ImportNode`]), so hand-built logical plans that contain
/// imports can be run with `ctx.execute_logical_plan`.
pub fn session_context_with_imports(config: SessionConfig) -> SessionContext {
    let state = SessionStateBuilder::new()
        .with_config(config)
        .with_default_features()
        .with_query_planner(Arc::new(ImportQueryPlanner))
        .build();
    SessionContext::new_with_state(state)
}

/// Run scripts that mix DataFusion SQL and `IMPORT INTO` in a `SessionContext`
/// (tables and views registered in it are visible to `FROM (query)`).
pub trait SessionContextImportExt {
    /// Runs the statements of `sql` in order against `db`.
    fn sql_with_imports(
        &self,
        db: Arc<dyn Database>,
        sql: &str,
    ) -> impl Future<Output = std::result::Result<Vec<StatementOutcome>, ScriptError>> + Send;
}

impl SessionContextImportExt for SessionContext {
    fn sql_with_imports(
        &self,
        db: Arc<dyn Database>,
        sql: &str,
    ) -> impl Future<Output = std::result::Result<Vec<StatementOutcome>, ScriptError>> + Send {
        run_script(self, db, sql, || Arc::new(ImportMetrics::default()))
    }
}
