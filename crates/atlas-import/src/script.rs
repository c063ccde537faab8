//! Runs a script (a plan file, or one `atlas-import sql` string): DataFusion
//! statements and `IMPORT INTO` statements, in order. Each import is its own
//! transaction: when a statement fails, the imports before it stay committed and
//! the error says which statement failed.

use std::sync::Arc;

use datafusion::arrow::array::RecordBatch;
use datafusion::catalog::{TableFunctionArgs, TableFunctionImpl, TableProvider};
use datafusion::common::ScalarValue;
use datafusion::datasource::MemTable;
use datafusion::error::DataFusionError;
use datafusion::execution::session_state::SessionState;
use datafusion::logical_expr::Expr;
use datafusion::prelude::SessionContext;

use crate::db::Database;
use crate::error::{AtlasError, Result};
use crate::import::ImportBuilder;
use crate::report::{ImportMetrics, ImportReport};
use crate::sql::{AtlasStatement, ImportFrom, ImportStatement, parse_statements};

/// What one statement did.
#[derive(Debug, Clone)]
pub enum StatementOutcome {
    /// An import's report.
    Import(ImportReport),
    /// The rows a DataFusion statement or `CHECK IMPORT` returned (empty for
    /// DDL and `SET`).
    Query(Vec<RecordBatch>),
    /// The plan `EXPLAIN [ANALYZE] IMPORT` printed (and, with `ANALYZE`, the
    /// report of the import it ran).
    Explain(String, Option<ImportReport>),
}

/// A statement of a script failed.
#[derive(Debug, thiserror::Error)]
#[error("statement {statement} failed: {error}")]
pub struct ScriptError {
    /// 1-based number of the failed statement (0 when the script did not parse).
    pub statement: usize,
    /// What the statements before it did (imports among them are committed).
    pub completed: Vec<StatementOutcome>,
    /// Why it failed.
    #[source]
    pub error: AtlasError,
}

/// Parses and runs `sql` against `db`; DataFusion statements run in `ctx`.
/// `metrics` receives the live counters of each import as it starts.
pub async fn run_script(
    ctx: &SessionContext,
    db: Arc<dyn Database>,
    sql: &str,
    mut metrics: impl FnMut() -> Arc<ImportMetrics>,
) -> std::result::Result<Vec<StatementOutcome>, ScriptError> {
    let statements = parse_statements(sql).map_err(|error| ScriptError {
        statement: 0,
        completed: Vec::new(),
        error,
    })?;
    ctx.register_udtf(
        "check_import",
        Arc::new(CheckImportFunction::new(Arc::clone(&db))),
    );
    let mut completed = Vec::with_capacity(statements.len());
    for (index, statement) in statements.into_iter().enumerate() {
        let outcome = match statement {
            AtlasStatement::Import(import) => run_import(ctx, Arc::clone(&db), &import, metrics())
                .await
                .map(StatementOutcome::Import),
            AtlasStatement::CheckImport(import) => {
                check_import(ctx, Arc::clone(&db), &import, metrics())
                    .await
                    .map(StatementOutcome::Query)
            }
            AtlasStatement::ExplainImport { analyze, import } => {
                match import_builder(ctx, Arc::clone(&db), &import, metrics()).await {
                    Ok(builder) if analyze => builder
                        .execute_analyzed()
                        .await
                        .map(|(report, plan)| StatementOutcome::Explain(plan, Some(report))),
                    Ok(builder) => builder
                        .explain()
                        .await
                        .map(|plan| StatementOutcome::Explain(plan, None)),
                    Err(e) => Err(e),
                }
            }
            AtlasStatement::DataFusion(statement) => run_datafusion(ctx, *statement)
                .await
                .map(StatementOutcome::Query),
        };
        match outcome {
            Ok(outcome) => completed.push(outcome),
            Err(error) => {
                return Err(ScriptError {
                    statement: index + 1,
                    completed,
                    error,
                });
            }
        }
    }
    Ok(completed)
}

async fn run_datafusion(
    ctx: &SessionContext,
    statement: datafusion::sql::parser::Statement,
) -> Result<Vec<RecordBatch>> {
    let state = ctx.state();
    let plan = state
        .statement_to_plan(statement)
        .await
        .map_err(AtlasError::from_datafusion)?;
    ctx.execute_logical_plan(plan)
        .await
        .map_err(AtlasError::from_datafusion)?
        .collect()
        .await
        .map_err(AtlasError::from_datafusion)
}

/// Name under which the last `CHECK IMPORT`'s duplicates are registered in the
/// session, so later statements can query them (`SELECT count(*) FROM import_duplicates`).
pub const IMPORT_DUPLICATES_TABLE: &str = "import_duplicates";

/// Runs `CHECK IMPORT`: the duplicates, also registered as [`IMPORT_DUPLICATES_TABLE`].
pub async fn check_import(
    ctx: &SessionContext,
    db: Arc<dyn Database>,
    statement: &ImportStatement,
    metrics: Arc<ImportMetrics>,
) -> Result<Vec<RecordBatch>> {
    let builder = import_builder(ctx, db, statement, metrics).await?;
    let (schema, batches) = builder.check().await?;
    let table =
        MemTable::try_new(schema, vec![batches.clone()]).map_err(AtlasError::from_datafusion)?;
    ctx.deregister_table(IMPORT_DUPLICATES_TABLE)
        .map_err(AtlasError::from_datafusion)?;
    ctx.register_table(IMPORT_DUPLICATES_TABLE, Arc::new(table))
        .map_err(AtlasError::from_datafusion)?;
    Ok(batches)
}

/// The table function `check_import('<IMPORT statement>')`: the duplicates the
/// dry run finds, as a relation (`SELECT count(*) FROM check_import('IMPORT INTO
/// t FROM ''new.csv'' KEY (email)')`). Registered by [`run_script`].
///
/// DataFusion calls table functions synchronously, so the dry run runs inside
/// `block_in_place`: it needs a multi-threaded tokio runtime.
#[derive(Debug)]
pub struct CheckImportFunction {
    db: Arc<dyn Database>,
}

impl CheckImportFunction {
    /// The function over `db`.
    pub fn new(db: Arc<dyn Database>) -> Self {
        Self { db }
    }
}

impl TableFunctionImpl for CheckImportFunction {
    fn call_with_args(
        &self,
        args: TableFunctionArgs,
    ) -> datafusion::error::Result<Arc<dyn TableProvider>> {
        let [Expr::Literal(ScalarValue::Utf8(Some(sql)), _)] = args.exprs() else {
            return Err(DataFusionError::Plan(
                "check_import takes one string: an IMPORT INTO statement".into(),
            ));
        };
        let statement = match parse_statements(sql)?.as_slice() {
            [AtlasStatement::Import(s) | AtlasStatement::CheckImport(s)] => s.as_ref().clone(),
            _ => {
                return Err(DataFusionError::Plan(
                    "check_import takes one IMPORT INTO statement".into(),
                ));
            }
        };
        let state = args
            .session()
            .as_any()
            .downcast_ref::<SessionState>()
            .cloned()
            .ok_or_else(|| DataFusionError::Internal("check_import needs a SessionState".into()))?;
        let ctx = SessionContext::new_with_state(state);
        let db = Arc::clone(&self.db);
        let (schema, batches) = tokio::task::block_in_place(|| {
            tokio::runtime::Handle::current().block_on(async {
                import_builder(&ctx, db, &statement, Arc::new(ImportMetrics::default()))
                    .await?
                    .check()
                    .await
            })
        })?;
        Ok(Arc::new(MemTable::try_new(schema, vec![batches])?))
    }
}

/// Runs one `IMPORT INTO` statement; a `FROM (query)` runs in `ctx`.
pub async fn run_import(
    ctx: &SessionContext,
    db: Arc<dyn Database>,
    statement: &ImportStatement,
    metrics: Arc<ImportMetrics>,
) -> Result<ImportReport> {
    import_builder(ctx, db, statement, metrics)
        .await?
        .execute()
        .await
}

/// The builder an `IMPORT INTO` statement describes.
pub async fn import_builder(
    ctx: &SessionContext,
    db: Arc<dyn Database>,
    statement: &ImportStatement,
    metrics: Arc<ImportMetrics>,
) -> Result<ImportBuilder> {
    let builder = match &statement.source {
        ImportFrom::Path(path) => ImportBuilder::new(db, path, statement.table.to_string()),
        ImportFrom::Query(query) => {
            let df = ctx.sql(query).await.map_err(AtlasError::from_datafusion)?;
            ImportBuilder::from_dataframe(db, df, format!("({query})"), statement.table.to_string())
        }
    };
    let builder = builder
        .with_table_name(statement.table.clone())
        .with_options(statement.import_options()?)
        .with_metrics(metrics);
    let cluster = ctx
        .state_ref()
        .read()
        .config()
        .get_extension::<crate::ImportCluster>();
    Ok(match cluster {
        Some(cluster) => builder.on_cluster(cluster.0.clone()),
        None => builder,
    })
}
