//! [`CsvTable`] and [`CsvSourceExec`]: a delimited text file as a DataFusion
//! table, read by [`super::CsvParser`] on a blocking thread.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::catalog::{Session, TableProvider};
use datafusion::datasource::TableType;
use datafusion::error::{DataFusionError, Result};
use datafusion::execution::TaskContext;
use datafusion::logical_expr::Expr;
use datafusion::physical_expr::EquivalenceProperties;
use datafusion::physical_plan::execution_plan::{Boundedness, EmissionType};
use datafusion::physical_plan::metrics::{
    BaselineMetrics, ExecutionPlanMetricsSet, MetricBuilder, MetricsSet,
};
use datafusion::physical_plan::stream::RecordBatchReceiverStreamBuilder;
use datafusion::physical_plan::{
    DisplayAs, DisplayFormatType, ExecutionPlan, Partitioning, PlanProperties,
    SendableRecordBatchStream,
};

use super::{CsvDialect, CsvParser, TextBatchBuilder, read_column_names, reader_schema};
use crate::source::compression::{Compression, ReadProgress};
use crate::source::location::{FetchedObject, ObjectOrigin};

/// Batches queued between the reader thread and the plan.
const QUEUED_BATCHES: usize = 2;
/// Rows per read batch at most, unless the session's batch size is larger:
/// DataFusion's default batch size.
const DEFAULT_READ_BATCH_ROWS: usize = 8192;

/// A delimited text file: where it is, how it is written, and its columns
/// (read from its first record when the table was made). Plain settings.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct CsvFile {
    /// The local file.
    pub path: PathBuf,
    /// The name messages use (the URL of a staged remote file).
    pub name: String,
    /// How it is written.
    pub dialect: CsvDialect,
    /// How its bytes are compressed.
    pub compression: Compression,
    /// Its column names.
    pub columns: Vec<String>,
    /// Where the reader counts the bytes it has read.
    pub progress: ReadProgress,
    /// The object `path` is a staged copy of, for readers elsewhere.
    pub origin: Option<ObjectOrigin>,
    /// Whether the reader fetches `origin` (into a temporary file, its hash
    /// checked first) instead of reading `path`: so it does in a process
    /// that decoded the plan, where the planner's staged copy is not.
    pub read_origin: bool,
}

impl CsvFile {
    /// Opens the file and reads its column names.
    pub fn open(
        path: impl Into<PathBuf>,
        name: impl Into<String>,
        dialect: CsvDialect,
        compression: Compression,
    ) -> crate::error::Result<Self> {
        let path = path.into();
        let name = name.into();
        let dialect = dialect.with_delimiter_of(|| compression.open(&path, &name), &name)?;
        let mut parser = CsvParser::new(compression.open(&path, &name)?, dialect.clone(), &name);
        let columns = read_column_names(&mut parser, &dialect, &name)?;
        Ok(Self {
            path,
            name,
            dialect,
            compression,
            columns,
            progress: ReadProgress::default(),
            origin: None,
            read_origin: false,
        })
    }

    /// Reads every record of the file's bytes at `path`, handing out batches
    /// of at most `batch_rows` rows until `emit` says stop. Returns (blank
    /// lines skipped, comment lines).
    fn read(
        &self,
        path: &Path,
        batch_rows: usize,
        emit: &mut dyn FnMut(datafusion::arrow::array::RecordBatch) -> bool,
    ) -> crate::error::Result<(u64, u64)> {
        let mut parser = CsvParser::new(
            self.compression
                .open_counted(path, &self.name, &self.progress)?,
            self.dialect.clone(),
            &self.name,
        );
        if self.dialect.has_header {
            read_column_names(&mut parser, &self.dialect, &self.name)?;
        }
        let mut builder = TextBatchBuilder::new(self.columns.clone(), self.dialect.clone());
        let mut blank = 0;
        while let Some(record) = parser.next_record()? {
            if !builder.push(&record) {
                blank += 1;
            }
            let full = builder.rows() >= batch_rows || builder.is_full_of_bytes();
            if full && !emit(builder.finish()?) {
                return Ok((blank, parser.comment_lines));
            }
        }
        if builder.rows() > 0 {
            emit(builder.finish()?);
        }
        Ok((blank, parser.comment_lines))
    }
}

/// A [`CsvFile`] as a DataFusion table.
#[derive(Debug)]
pub struct CsvTable {
    file: Arc<CsvFile>,
    schema: SchemaRef,
}

impl CsvTable {
    /// The file read.
    pub fn file(&self) -> &CsvFile {
        &self.file
    }

    /// The table of `file`.
    pub fn new(file: CsvFile) -> Self {
        let schema = reader_schema(&file.columns);
        Self {
            file: Arc::new(file),
            schema,
        }
    }
}

#[async_trait]
impl TableProvider for CsvTable {
    fn schema(&self) -> SchemaRef {
        Arc::clone(&self.schema)
    }

    fn table_type(&self) -> TableType {
        TableType::Base
    }

    async fn scan(
        &self,
        _state: &dyn Session,
        projection: Option<&Vec<usize>>,
        _filters: &[Expr],
        _limit: Option<usize>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        Ok(Arc::new(CsvSourceExec::try_new(
            Arc::clone(&self.file),
            projection.cloned(),
        )?))
    }
}

/// Reads a [`CsvFile`] in one partition, in file order.
///
/// The parser runs on a blocking thread and hands batches over a short
/// queue, so parsing overlaps with the plan above. Every batch carries the
/// physical line of each record and, for a malformed one, why
/// ([`crate::schema::RECORD_ERROR_COLUMN`]); nothing is dropped here.
/// Metrics: `blank_lines` and `comment_lines` skipped.
#[derive(Debug)]
pub struct CsvSourceExec {
    file: Arc<CsvFile>,
    projection: Option<Vec<usize>>,
    schema: SchemaRef,
    properties: Arc<PlanProperties>,
    metrics: ExecutionPlanMetricsSet,
}

impl CsvSourceExec {
    /// Reads `file`, keeping the columns of `projection` (all if `None`).
    pub fn try_new(file: Arc<CsvFile>, projection: Option<Vec<usize>>) -> Result<Self> {
        let full = reader_schema(&file.columns);
        let schema = match &projection {
            Some(p) => Arc::new(full.project(p)?),
            None => full,
        };
        let properties = Arc::new(PlanProperties::new(
            EquivalenceProperties::new(Arc::clone(&schema)),
            Partitioning::UnknownPartitioning(1),
            EmissionType::Incremental,
            Boundedness::Bounded,
        ));
        Ok(Self {
            file,
            projection,
            schema,
            properties,
            metrics: ExecutionPlanMetricsSet::new(),
        })
    }

    /// The file read.
    pub fn file(&self) -> &CsvFile {
        &self.file
    }

    /// The columns kept (all if `None`).
    pub fn projection(&self) -> Option<&[usize]> {
        self.projection.as_deref()
    }
}

impl DisplayAs for CsvSourceExec {
    fn fmt_as(&self, t: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        if t == DisplayFormatType::TreeRender {
            writeln!(f, "file={}", self.file.name)?;
            writeln!(f, "{}", self.file.dialect)?;
            if self.file.compression != Compression::None {
                writeln!(f, "compression={}", self.file.compression)?;
            }
            return Ok(());
        }
        write!(
            f,
            "CsvSourceExec: file={}, {}",
            self.file.name, self.file.dialect
        )?;
        if self.file.compression != Compression::None {
            write!(f, ", compression={}", self.file.compression)?;
        }
        Ok(())
    }
}

impl ExecutionPlan for CsvSourceExec {
    fn name(&self) -> &str {
        "CsvSourceExec"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        &self.properties
    }

    crate::physical::leaf_plan_methods!();

    fn execute(
        &self,
        partition: usize,
        context: Arc<TaskContext>,
    ) -> Result<SendableRecordBatchStream> {
        crate::physical::only_partition(self, partition)?;
        // One read batch gives each of the check's partitions about one batch
        // (an import's session has batches of a partition's share), but no
        // more than DataFusion's default size unless the session asks for more.
        let config = context.session_config();
        let batch_rows = (config.batch_size() * config.target_partitions())
            .min(config.batch_size().max(DEFAULT_READ_BATCH_ROWS))
            .max(1);
        let file = Arc::clone(&self.file);
        let projection = self.projection.clone();
        let baseline = BaselineMetrics::new(&self.metrics, partition);
        let blank_lines = MetricBuilder::new(&self.metrics).counter("blank_lines", partition);
        let comment_lines = MetricBuilder::new(&self.metrics).counter("comment_lines", partition);
        let mut builder =
            RecordBatchReceiverStreamBuilder::new(Arc::clone(&self.schema), QUEUED_BATCHES);
        let tx = builder.tx();
        let read = move |path: &Path| {
            let mut emit = |batch: datafusion::arrow::array::RecordBatch| {
                let batch = match &projection {
                    Some(p) => batch.project(p).map_err(DataFusionError::from),
                    None => Ok(batch),
                };
                if let Ok(b) = &batch {
                    baseline.record_output(b.num_rows());
                }
                // A closed queue: the plan stopped reading.
                tx.blocking_send(batch).is_ok()
            };
            let (blank, comments) = file
                .read(path, batch_rows, &mut emit)
                .map_err(DataFusionError::from)?;
            blank_lines.add(blank as usize);
            comment_lines.add(comments as usize);
            Ok(())
        };
        match self.file.origin.clone().filter(|_| self.file.read_origin) {
            None => {
                let path = self.file.path.clone();
                builder.spawn_blocking(move || read(&path));
            }
            Some(origin) => {
                builder.spawn(async move {
                    let fetched = FetchedObject::fetch(&origin).await?;
                    tokio::task::spawn_blocking(move || {
                        let result = read(fetched.path());
                        drop(fetched);
                        result
                    })
                    .await
                    .map_err(|e| DataFusionError::External(Box::new(e)))?
                });
            }
        }
        Ok(builder.build())
    }

    fn metrics(&self) -> Option<MetricsSet> {
        Some(self.metrics.clone_inner())
    }
}
