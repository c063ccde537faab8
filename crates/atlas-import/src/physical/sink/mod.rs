//! [`ImportSink`]: writes the checked rows in one bulk write inside the
//! import's one transaction, and commits only when everything succeeded.

mod staging;
mod upsert;
mod write;

pub(crate) use write::no_data_rows;

use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::datasource::sink::{DataSink, DataSinkExec};
use datafusion::error::Result;
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::physical_plan::ExecutionPlan;
use datafusion::physical_plan::metrics::{ExecutionPlanMetricsSet, MetricsSet};
use datafusion::physical_plan::{DisplayAs, DisplayFormatType};

use super::run::{ImportRef, ImportRuns};
use super::source_order_requirement;
use crate::db::{DbKind, UpsertStatements};
use crate::names::TableRef;
use crate::options::OnDuplicate;
use crate::schema::{ColumnSpec, TargetColumn};
use write::SinkWrite;

/// Writes the rows that survive the duplicate check into the target table.
///
/// Runs in a `DataSinkExec`, hence on one partition. Every row goes into one
/// bulk write per import (PostgreSQL: one binary `COPY`; MySQL/MariaDB: one
/// `LOAD DATA LOCAL INFILE`, else array binding on MariaDB or INSERTs sized
/// to the server's limits; SQLite:
/// one prepared INSERT), inside the import's transaction; `chunk_rows` only
/// paces the progress log. Writing overlaps with the check: a refused import
/// rolls back, so what the user observes is check-then-write.
///
/// `ON DUPLICATE UPDATE` writes the rows whose key is new into the table the
/// same way and the others into a temporary stage, then updates the table
/// from the stage with one join ([`UpsertStatements`]).
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
    /// What the sink does (plain data).
    settings: SinkSettings,
    /// The input schema (target columns, then the source row number).
    schema: SchemaRef,
    /// Operator metrics: rows written, chunks, time writing.
    metrics: ExecutionPlanMetricsSet,
}

/// What an [`ImportSink`] does, as plain data: with its input's schema, all
/// it needs to be rebuilt ([`ImportSink::from_settings`]).
#[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct SinkSettings {
    /// The import whose run holds the transaction and the counters.
    pub import: ImportRef,
    /// Target table.
    pub table: TableRef,
    /// Target columns written, in the order of the input's first columns.
    pub columns: Vec<TargetColumn>,
    /// Which database (for the upsert's statements and display).
    pub db_kind: DbKind,
    /// Duplicate policy.
    pub on_duplicate: OnDuplicate,
    /// Key column indices among `columns` (for `ON DUPLICATE UPDATE`).
    pub key_columns: Vec<usize>,
    /// Rows per chunk.
    pub chunk_rows: usize,
    /// The columns a missing table is created with (decided when the plan
    /// was made; shown by `EXPLAIN`), `None` when a missing table is an error.
    pub creates: Option<Vec<ColumnSpec>>,
    /// `ON DUPLICATE UPDATE`: the check passes the found rows' locations
    /// (no index on the key), and the stage keeps them.
    #[serde(default)]
    pub locate_rows: bool,
}

impl ImportSink {
    /// A sink writing `columns` (the first columns of `schema`) into `table`
    /// of a `db_kind` database through import `import`'s transaction, under
    /// `ON DUPLICATE ERROR` in chunks of [`crate::DEFAULT_CHUNK_ROWS`] unless
    /// told otherwise.
    pub fn new(
        import: impl Into<ImportRef>,
        table: TableRef,
        columns: Vec<TargetColumn>,
        db_kind: DbKind,
        schema: SchemaRef,
    ) -> Self {
        Self::from_settings(
            SinkSettings {
                import: import.into(),
                table,
                columns,
                db_kind,
                on_duplicate: OnDuplicate::Error,
                key_columns: Vec::new(),
                chunk_rows: crate::DEFAULT_CHUNK_ROWS,
                creates: None,
                locate_rows: false,
            },
            schema,
        )
    }

    /// The sink `settings` describe, for an input of `schema`.
    pub fn from_settings(settings: SinkSettings, schema: SchemaRef) -> Self {
        Self {
            settings,
            schema,
            metrics: ExecutionPlanMetricsSet::new(),
        }
    }

    /// What the sink does.
    pub fn settings(&self) -> &SinkSettings {
        &self.settings
    }

    /// The `DataSinkExec` writing `input` through this sink, requiring its
    /// rows in source order (the optimizer merges the checked partitions
    /// back into it).
    pub fn over(self, input: Arc<dyn ExecutionPlan>) -> Arc<DataSinkExec> {
        let order = source_order_requirement(&input.schema());
        Arc::new(DataSinkExec::new(input, Arc::new(self), Some(order)))
    }

    /// What to do with the duplicates the check lets through (it flags them
    /// under `ON DUPLICATE UPDATE`, counts them under `ERROR`).
    pub fn with_on_duplicate(mut self, on_duplicate: OnDuplicate) -> Self {
        self.settings.on_duplicate = on_duplicate;
        self
    }

    /// Rows per chunk (at least 1).
    pub fn with_chunk_rows(mut self, chunk_rows: usize) -> Self {
        self.settings.chunk_rows = chunk_rows.max(1);
        self
    }

    /// The key columns, by index among the written columns: needed by
    /// `ON DUPLICATE UPDATE` to match existing rows.
    pub fn with_key_columns(mut self, key_columns: Vec<usize>) -> Self {
        self.settings.key_columns = key_columns;
        self
    }

    /// `ON DUPLICATE UPDATE`: whether the check passes the locations of the
    /// rows it found (see [`crate::physical::LOCATION_COLUMN`]).
    pub fn with_located_rows(mut self, locate_rows: bool) -> Self {
        self.settings.locate_rows = locate_rows;
        self
    }

    /// The columns the table is created with when it is missing (shown by
    /// `EXPLAIN`; the import's transaction creates it).
    pub fn with_creates(mut self, creates: Option<Vec<ColumnSpec>>) -> Self {
        self.settings.creates = creates;
        self
    }
}

impl DisplayAs for ImportSink {
    fn fmt_as(&self, t: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        let upsert = (self.settings.on_duplicate == OnDuplicate::Update).then(|| {
            UpsertStatements::new(
                self.settings.db_kind,
                &self.settings.table,
                &self.settings.columns,
                &self.settings.key_columns,
            )
            .with_locations(self.settings.locate_rows)
            .describe()
        });
        // The types a new table gets, shown before anything is written.
        let creates = self.settings.creates.as_ref().map(|columns| {
            columns
                .iter()
                .map(|c| format!("{} {}", c.name, c.sql_type.as_deref().unwrap_or("?")))
                .collect::<Vec<_>>()
                .join(", ")
        });
        if t == DisplayFormatType::TreeRender {
            writeln!(f, "table={}", self.settings.table)?;
            writeln!(f, "db={}", self.settings.db_kind)?;
            writeln!(f, "on_duplicate={}", self.settings.on_duplicate)?;
            writeln!(f, "chunk_rows={}", self.settings.chunk_rows)?;
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
            self.settings.table,
            self.settings.db_kind,
            self.settings.on_duplicate,
            self.settings.chunk_rows
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
        let run = ImportRuns::of_task(context, &self.settings.import)?;
        let transaction = run.transaction()?;
        let write = SinkWrite::new(self, &run)?;
        let result = run.task_result(write.write_everything(data).await);
        if result.is_err() {
            // Leave the target exactly as it was.
            if let Err(e) = transaction.slot().rollback().await {
                tracing::warn!("rollback after a failed import also failed: {e}");
            }
        }
        result
    }
}

#[cfg(test)]
mod tests;
