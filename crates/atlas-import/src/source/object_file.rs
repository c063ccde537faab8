//! [`ObjectFileTable`] and [`ObjectFileExec`]: a Parquet or Avro file staged
//! from an object store (`s3://`, `http(s)://`), read where the plan runs.
//!
//! DataFusion's own listing table would plan a scan of the planner's staged
//! copy by its local path, listing it while planning: on a cluster the
//! scheduler and the executors would need that path too. This table plans
//! without touching the file (its schema and size were taken when it was
//! staged), and its scan reads the planner's copy in the planner's process
//! but, decoded in another process, fetches the object by its
//! [`ObjectOrigin`] first and refuses bytes whose SHA-256 is not the one the
//! import was planned with ([`FetchedObject`]).
//!
//! ```text
//! ObjectFileExec (1 partition)
//!   planner's process:  DataSourceExec(ParquetSource | AvroSource) over the staged copy
//!   other process:      fetch origin → check SHA-256 → DataSourceExec over the fetched copy
//! ```

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::catalog::{Session, TableProvider};
use datafusion::datasource::TableType;
use datafusion::datasource::listing::PartitionedFile;
use datafusion::datasource::physical_plan::{
    AvroSource, FileScanConfigBuilder, FileSource, ParquetSource,
};
use datafusion::datasource::source::DataSourceExec;
use datafusion::error::{DataFusionError, Result};
use datafusion::execution::TaskContext;
use datafusion::execution::object_store::ObjectStoreUrl;
use datafusion::logical_expr::Expr;
use datafusion::physical_expr::EquivalenceProperties;
use datafusion::physical_plan::execution_plan::{Boundedness, EmissionType};
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{
    DisplayAs, DisplayFormatType, ExecutionPlan, Partitioning, PlanProperties,
    SendableRecordBatchStream,
};
use futures::{StreamExt, TryStreamExt};

use crate::source::location::{FetchedObject, ObjectOrigin};

/// The columnar formats read by DataFusion's own readers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum ObjectFormat {
    /// Apache Parquet.
    Parquet,
    /// Apache Avro.
    Avro,
}

impl ObjectFormat {
    fn name(self) -> &'static str {
        match self {
            ObjectFormat::Parquet => "parquet",
            ObjectFormat::Avro => "avro",
        }
    }
}

/// A staged Parquet or Avro object: plain settings.
#[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct ObjectFile {
    /// The planner's staged copy.
    pub path: PathBuf,
    /// The name messages use (the object's URL).
    pub name: String,
    /// How its bytes are laid out.
    pub format: ObjectFormat,
    /// Where a reader in another process fetches it, and its hash.
    pub origin: ObjectOrigin,
    /// Whether the reader fetches `origin` instead of reading `path`: so it
    /// does in a process that decoded the plan (never encoded).
    #[serde(skip)]
    pub read_origin: bool,
}

/// An [`ObjectFile`] as a DataFusion table, its schema the one DataFusion's
/// reader gave the staged copy.
#[derive(Debug)]
pub struct ObjectFileTable {
    file: Arc<ObjectFile>,
    schema: SchemaRef,
}

impl ObjectFileTable {
    /// The table of `file`, whose rows have `schema`.
    pub fn new(file: ObjectFile, schema: SchemaRef) -> Self {
        Self {
            file: Arc::new(file),
            schema,
        }
    }

    /// The file read.
    pub fn file(&self) -> &ObjectFile {
        &self.file
    }
}

#[async_trait]
impl TableProvider for ObjectFileTable {
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
        Ok(Arc::new(ObjectFileExec::try_new(
            Arc::clone(&self.file),
            Arc::clone(&self.schema),
            projection.cloned(),
        )?))
    }
}

/// Reads an [`ObjectFile`] in one partition, in file order, by DataFusion's
/// reader of its format (see the module's documentation).
#[derive(Debug)]
pub struct ObjectFileExec {
    file: Arc<ObjectFile>,
    /// Every column of the file.
    file_schema: SchemaRef,
    projection: Option<Vec<usize>>,
    properties: Arc<PlanProperties>,
}

impl ObjectFileExec {
    /// Reads `file`, whose rows have `file_schema`, keeping the columns of
    /// `projection` (all if `None`).
    pub fn try_new(
        file: Arc<ObjectFile>,
        file_schema: SchemaRef,
        projection: Option<Vec<usize>>,
    ) -> Result<Self> {
        let schema = match &projection {
            Some(p) => Arc::new(file_schema.project(p)?),
            None => Arc::clone(&file_schema),
        };
        let properties = Arc::new(PlanProperties::new(
            EquivalenceProperties::new(schema),
            Partitioning::UnknownPartitioning(1),
            EmissionType::Incremental,
            Boundedness::Bounded,
        ));
        Ok(Self {
            file,
            file_schema,
            projection,
            properties,
        })
    }

    /// The file read.
    pub fn file(&self) -> &ObjectFile {
        &self.file
    }

    /// Every column of the file.
    pub fn file_schema(&self) -> &SchemaRef {
        &self.file_schema
    }

    /// The columns kept (all if `None`).
    pub fn projection(&self) -> Option<&[usize]> {
        self.projection.as_deref()
    }

    /// DataFusion's scan of the file's bytes at `path`.
    fn scan(&self, path: &Path) -> Result<DataSourceExec> {
        let size = std::fs::metadata(path)
            .map_err(|e| {
                DataFusionError::External(Box::new(crate::error::AtlasError::io(
                    path.display().to_string(),
                    e,
                )))
            })?
            .len();
        let schema = Arc::clone(&self.file_schema);
        let source: Arc<dyn FileSource> = match self.file.format {
            ObjectFormat::Parquet => Arc::new(ParquetSource::new(schema)),
            ObjectFormat::Avro => Arc::new(AvroSource::new(schema)),
        };
        let local = path.to_str().ok_or_else(|| {
            DataFusionError::Execution(format!("path '{}' is not valid UTF-8", path.display()))
        })?;
        let config = FileScanConfigBuilder::new(ObjectStoreUrl::local_filesystem(), source)
            .with_file(PartitionedFile::new(local, size))
            .with_projection_indices(self.projection.clone())?
            .build();
        Ok(DataSourceExec::new(Arc::new(config)))
    }
}

impl DisplayAs for ObjectFileExec {
    fn fmt_as(&self, t: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        if t == DisplayFormatType::TreeRender {
            writeln!(f, "file={}", self.file.name)?;
            return writeln!(f, "format={}", self.file.format.name());
        }
        write!(
            f,
            "ObjectFileExec: file={}, format={}",
            self.file.name,
            self.file.format.name()
        )
    }
}

impl ExecutionPlan for ObjectFileExec {
    fn name(&self) -> &str {
        "ObjectFileExec"
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
        if !self.file.read_origin {
            return self.scan(&self.file.path)?.execute(0, context);
        }
        let exec = Self::try_new(
            Arc::clone(&self.file),
            Arc::clone(&self.file_schema),
            self.projection.clone(),
        )?;
        let schema = self.schema();
        let rows = futures::stream::once(async move {
            let fetched = FetchedObject::fetch(&exec.file.origin)
                .await
                .map_err(DataFusionError::from)?;
            let rows = exec.scan(fetched.path())?.execute(0, context)?;
            // The fetched copy stays until the last batch is read.
            Ok::<_, DataFusionError>(rows.map(move |batch| {
                let _ = &fetched;
                batch
            }))
        })
        .try_flatten();
        Ok(Box::pin(RecordBatchStreamAdapter::new(schema, rows)))
    }
}
