//! [`ImportSink`]: writes the checked rows in one bulk write inside the
//! import's one transaction, and commits only when everything succeeded.

mod staging;
mod write;

use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::datasource::sink::DataSink;
use datafusion::error::Result;
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::physical_plan::metrics::{ExecutionPlanMetricsSet, MetricsSet};
use datafusion::physical_plan::{DisplayAs, DisplayFormatType};

use super::run::{ImportId, ImportRuns};
use crate::db::{DbKind, UpsertStatements};
use crate::names::TableRef;
use crate::options::OnDuplicate;
use crate::schema::{ColumnSpec, TargetColumn};
use write::SinkWrite;

/// Writes the rows that survive the duplicate check into the target table.
///
/// Runs in a `DataSinkExec`, hence on one partition. Every row goes into one
/// bulk write per import (PostgreSQL: one binary `COPY`; MySQL/MariaDB: one
/// `LOAD DATA LOCAL INFILE`, or INSERTs sized to the server's limits; SQLite:
/// one prepared INSERT), inside the import's transaction; `chunk_rows` only
/// paces the progress log. Writing overlaps with the check: a refused import
/// rolls back, so what the user observes is check-then-write.
///
/// `ON DUPLICATE UPDATE` writes every row into a temporary stage the same
/// way, then inserts the new keys and updates the existing ones with one
/// statement each ([`UpsertStatements`]).
///
/// The sink holds settings only. The transaction is the import's
/// [`super::ImportRun`]'s (found in the `TaskContext` by the import's id); it
/// opens when the sink starts, through the [`super::TableTransaction`] (begin,
/// lock, file check, table creation); a file already imported under
/// `ON DUPLICATE FILE SKIP` ends the plan there, reading nothing. What one
/// write learns as it goes (rows per file, source rows written) is its
/// [`SinkWrite`]'s.
///
/// When the input ends: under `ON DUPLICATE ERROR` any duplicate rolls everything
/// back and fails with the [`crate::report::DuplicateReport`]; otherwise the
/// `file_imports` row is written and the transaction commits. Any error rolls back.
#[derive(Debug)]
pub struct ImportSink {
    /// Target table.
    table: TableRef,
    /// Target columns written, in the order of the input's first columns.
    columns: Vec<TargetColumn>,
    /// Which database (for display).
    db_kind: DbKind,
    /// Duplicate policy.
    on_duplicate: OnDuplicate,
    /// Key column indices among `columns` (for `ON DUPLICATE UPDATE`).
    key_columns: Vec<usize>,
    /// Rows per chunk.
    chunk_rows: usize,
    /// The columns a missing table is created with (decided when the plan
    /// was made; shown by `EXPLAIN`), `None` when a missing table is an error.
    creates: Option<Vec<ColumnSpec>>,
    /// The import whose run holds the transaction and the counters.
    import: ImportId,
    /// The input schema (target columns, then the source row number).
    schema: SchemaRef,
    /// Operator metrics: rows written, chunks, time writing.
    metrics: ExecutionPlanMetricsSet,
}

impl ImportSink {
    /// A sink writing `columns` (the first columns of `schema`) into `table`
    /// of a `db_kind` database through import `import`'s transaction, under
    /// `ON DUPLICATE ERROR` in chunks of [`crate::DEFAULT_CHUNK_ROWS`] unless
    /// told otherwise.
    pub fn new(
        import: ImportId,
        table: TableRef,
        columns: Vec<TargetColumn>,
        db_kind: DbKind,
        schema: SchemaRef,
    ) -> Self {
        Self {
            table,
            columns,
            db_kind,
            on_duplicate: OnDuplicate::Error,
            key_columns: Vec::new(),
            chunk_rows: crate::DEFAULT_CHUNK_ROWS,
            creates: None,
            import,
            schema,
            metrics: ExecutionPlanMetricsSet::new(),
        }
    }

    /// What to do with the duplicates the check lets through (it flags them
    /// under `ON DUPLICATE UPDATE`, counts them under `ERROR`).
    pub fn with_on_duplicate(mut self, on_duplicate: OnDuplicate) -> Self {
        self.on_duplicate = on_duplicate;
        self
    }

    /// Rows per chunk (at least 1).
    pub fn with_chunk_rows(mut self, chunk_rows: usize) -> Self {
        self.chunk_rows = chunk_rows.max(1);
        self
    }

    /// The key columns, by index among the written columns: needed by
    /// `ON DUPLICATE UPDATE` to match existing rows.
    pub fn with_key_columns(mut self, key_columns: Vec<usize>) -> Self {
        self.key_columns = key_columns;
        self
    }

    /// The columns the table is created with when it is missing (shown by
    /// `EXPLAIN`; the import's transaction creates it).
    pub fn with_creates(mut self, creates: Option<Vec<ColumnSpec>>) -> Self {
        self.creates = creates;
        self
    }
}

impl DisplayAs for ImportSink {
    fn fmt_as(&self, t: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        let upsert = (self.on_duplicate == OnDuplicate::Update).then(|| {
            UpsertStatements::new(self.db_kind, &self.table, &self.columns, &self.key_columns)
                .describe()
        });
        // The types a new table gets, shown before anything is written.
        let creates = self.creates.as_ref().map(|columns| {
            columns
                .iter()
                .map(|c| format!("{} {}", c.name, c.sql_type.as_deref().unwrap_or("?")))
                .collect::<Vec<_>>()
                .join(", ")
        });
        if t == DisplayFormatType::TreeRender {
            writeln!(f, "table={}", self.table)?;
            writeln!(f, "db={}", self.db_kind)?;
            writeln!(f, "on_duplicate={}", self.on_duplicate)?;
            writeln!(f, "chunk_rows={}", self.chunk_rows)?;
            if let Some(upsert) = upsert {
                writeln!(f, "upsert={upsert}")?;
            }
            if let Some(creates) = creates {
                writeln!(f, "creates_if_missing=({creates})")?;
            }
            return Ok(());
        }
        write!(
            f,
            "ImportSink: table={}, db={}, on_duplicate={}, chunk_rows={}",
            self.table, self.db_kind, self.on_duplicate, self.chunk_rows
        )?;
        if let Some(upsert) = upsert {
            write!(f, ", upsert={upsert}")?;
        }
        if let Some(creates) = creates {
            write!(f, ", if missing creates ({creates})")?;
        }
        Ok(())
    }
}

#[async_trait]
impl DataSink for ImportSink {
    fn metrics(&self) -> Option<MetricsSet> {
        Some(self.metrics.clone_inner())
    }

    fn schema(&self) -> &SchemaRef {
        &self.schema
    }

    async fn write_all(
        &self,
        data: SendableRecordBatchStream,
        context: &Arc<TaskContext>,
    ) -> Result<u64> {
        let run = ImportRuns::of_task(context, self.import)?;
        let transaction = run.transaction()?;
        let write = SinkWrite::new(self, run.metrics(), transaction);
        let result = write.write_everything(data).await;
        if result.is_err() {
            // Leave the target exactly as it was.
            if let Err(e) = transaction.slot().rollback().await {
                tracing::warn!("rollback after a failed import also failed: {e}");
            }
        }
        result
    }
}
