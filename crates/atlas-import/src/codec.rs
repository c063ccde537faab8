//! Codecs that carry import plans to another process (Apache Ballista's
//! scheduler and executors), behind the `ballista` feature.
//!
//! The plan's nodes hold settings only (docs/ARCHITECTURE.md §1), so a node
//! travels as its settings, in JSON, inside DataFusion's protobuf plan; the
//! receiving side rebuilds the node from them and its decoded inputs. What
//! runs the plan (the transaction, the existing keys, the counters) is never
//! encoded: the receiving session registers an `ImportRun` under the plan's
//! `ImportId`, and the database URL comes from its own configuration.
//!
//! - [`ImportPhysicalCodec`]: `CoerceExec`, `DuplicateCheckExec` (with
//!   its second input, the table's keys, where it has one), `ExistingKeysExec`, the
//!   `DataSinkExec` holding an `ImportSink` (DataFusion encodes only its own
//!   sinks, so the codec carries the whole sink node), the check's key-form
//!   partitioning expression, the CSV reader `CsvSourceExec` and the reader
//!   of a staged Parquet or Avro object, `ObjectFileExec`.
//! - [`ImportLogicalCodec`]: the `ImportNode`, the CSV source table and the
//!   staged object's table.
//!
//! Each wraps another codec (Ballista's own by default, so its shuffle
//! nodes and the file formats it knows still travel): a node of ours is
//! written as [`TAG`] and its settings; anything else goes to the wrapped
//! codec, and bytes without the tag are the wrapped codec's to read.

use std::path::PathBuf;
use std::sync::Arc;

use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::datatypes::{Schema, SchemaRef};
use datafusion::arrow::ipc::reader::StreamReader;
use datafusion::arrow::ipc::writer::StreamWriter;
use datafusion::catalog::TableProvider;
use datafusion::common::TableReference;
use datafusion::datasource::MemTable;
use datafusion::datasource::file_format::FileFormatFactory;
use datafusion::datasource::sink::DataSinkExec;
use datafusion::error::{DataFusionError, Result};
use datafusion::execution::TaskContext;
use datafusion::logical_expr::{AggregateUDF, Extension, LogicalPlan, ScalarUDF, WindowUDF};
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_expr_common::physical_expr::proto_decode::PhysicalExprDecodeCtx;
use datafusion::physical_expr_common::physical_expr::proto_encode::PhysicalExprEncodeCtx;
use datafusion::physical_plan::ExecutionPlan;
use datafusion_proto::logical_plan::LogicalExtensionCodec;
use datafusion_proto::physical_plan::{PhysicalExtensionCodec, PhysicalProtoConverterExtension};
use serde::{Deserialize, Serialize};

use crate::key_form::KeyForm;
use crate::logical::{ImportNode, ImportSpec};
use crate::physical::{
    CoerceExec, CoerceSettings, DuplicateCheckExec, DuplicateCheckSettings, ExistingKeysExec,
    ExistingKeysSettings, ImportSink, KeyFormExpr, SinkSettings,
};
use crate::source::csv::{CsvFile, CsvSourceExec, CsvTable};
use crate::source::{
    Compression, CsvDialect, ObjectFile, ObjectFileExec, ObjectFileTable, ObjectOrigin,
};

/// The first bytes of every node this module encodes (no protobuf message
/// the wrapped codecs write starts with it: `{` is not a valid first tag).
const TAG: &[u8] = b"atlas-import:";

/// Our settings, when `buf` carries ours.
fn ours(buf: &[u8]) -> Option<&[u8]> {
    buf.strip_prefix(TAG)
}

/// A CSV file as settings: everything but the live read counter.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct CsvFileSettings {
    path: PathBuf,
    name: String,
    dialect: CsvDialect,
    compression: Compression,
    columns: Vec<String>,
    /// The remote object the file is a staged copy of: read from there.
    #[serde(default)]
    origin: Option<ObjectOrigin>,
}

impl From<&CsvFile> for CsvFileSettings {
    fn from(file: &CsvFile) -> Self {
        Self {
            // Executors run elsewhere: a relative path is the planner's.
            path: std::path::absolute(&file.path).unwrap_or_else(|_| file.path.clone()),
            name: file.name.clone(),
            dialect: file.dialect.clone(),
            compression: file.compression,
            columns: file.columns.clone(),
            origin: file.origin.clone(),
        }
    }
}

impl From<CsvFileSettings> for CsvFile {
    fn from(file: CsvFileSettings) -> Self {
        CsvFile {
            path: file.path,
            name: file.name,
            dialect: file.dialect,
            compression: file.compression,
            columns: file.columns,
            progress: Default::default(),
            // The planner's staged copy is on the planner's machine.
            read_origin: file.origin.is_some(),
            origin: file.origin,
        }
    }
}

/// A decoded object file: the planner's staged copy is on the planner's
/// machine, so the reader fetches the object.
fn fetched_here(file: ObjectFile) -> ObjectFile {
    ObjectFile {
        read_origin: true,
        ..file
    }
}

/// A physical node of an import plan, as it travels.
#[derive(Debug, Serialize, Deserialize)]
enum PhysicalNode {
    Coerce(CoerceSettings),
    DuplicateCheck(DuplicateCheckSettings),
    ExistingKeys(ExistingKeysSettings),
    /// A `DataSinkExec` of an `ImportSink` (its input in source order).
    Sink(SinkSettings),
    CsvSource {
        file: CsvFileSettings,
        projection: Option<Vec<usize>>,
    },
    ObjectFile {
        file: ObjectFile,
        /// Every column of the file, as an empty Arrow IPC stream.
        schema: String,
        projection: Option<Vec<usize>>,
    },
}

/// A logical node or table of an import plan, as it travels.
#[derive(Debug, Serialize, Deserialize)]
enum LogicalNode {
    Import(ImportSpec),
    CsvTable(CsvFileSettings),
    ObjectFileTable(ObjectFile),
    /// The rows of a source the planner read whole (JSON, Excel, XML: their
    /// readers parse the file when the import is planned), one Arrow IPC
    /// stream per partition, base64.
    Rows(Vec<String>),
}

/// `batches` of `schema` as an Arrow IPC stream, base64.
fn ipc_text<'a>(
    schema: &Schema,
    batches: impl IntoIterator<Item = &'a RecordBatch>,
) -> Result<String> {
    use base64::Engine;
    let mut bytes = Vec::new();
    let mut writer = StreamWriter::try_new(&mut bytes, schema)?;
    for batch in batches {
        writer.write(batch)?;
    }
    writer.finish()?;
    drop(writer);
    Ok(base64::engine::general_purpose::STANDARD.encode(bytes))
}

/// A reader of [`ipc_text`]'s stream.
fn ipc_reader(text: &str) -> Result<StreamReader<std::io::Cursor<Vec<u8>>>> {
    use base64::Engine;
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(text)
        .map_err(|e| DataFusionError::Internal(format!("decoding Arrow IPC: {e}")))?;
    Ok(StreamReader::try_new(std::io::Cursor::new(bytes), None)?)
}

/// `table`'s partitions as Arrow IPC streams.
fn rows_of(table: &MemTable) -> Result<Vec<String>> {
    let mut partitions = Vec::with_capacity(table.batches.len());
    for partition in &table.batches {
        let batches = partition.try_read().map_err(|_| {
            DataFusionError::Internal("an in-memory source is being written to".into())
        })?;
        partitions.push(ipc_text(&table.schema(), batches.iter())?);
    }
    Ok(partitions)
}

/// The table of [`rows_of`]'s partitions.
fn table_of(partitions: &[String], schema: SchemaRef) -> Result<MemTable> {
    let mut decoded = Vec::with_capacity(partitions.len());
    for partition in partitions {
        decoded.push(ipc_reader(partition)?.collect::<std::result::Result<Vec<_>, _>>()?);
    }
    MemTable::try_new(schema, decoded)
}

fn encode<T: Serialize>(value: &T, buf: &mut Vec<u8>) -> Result<()> {
    buf.extend_from_slice(TAG);
    serde_json::to_writer(buf, value)
        .map_err(|e| DataFusionError::Internal(format!("encoding an import plan node: {e}")))
}

fn decode<'a, T: Deserialize<'a>>(buf: &'a [u8]) -> Result<T> {
    serde_json::from_slice(buf)
        .map_err(|e| DataFusionError::Internal(format!("decoding an import plan node: {e}")))
}

fn one_input<T: Clone>(inputs: &[T], what: &str) -> Result<T> {
    match inputs {
        [input] => Ok(input.clone()),
        _ => Err(DataFusionError::Internal(format!(
            "{what} has one input, not {}",
            inputs.len()
        ))),
    }
}

/// The physical codec of import plans (see the module's documentation).
#[derive(Debug)]
pub struct ImportPhysicalCodec {
    inner: Arc<dyn PhysicalExtensionCodec>,
}

impl Default for ImportPhysicalCodec {
    /// Around Ballista's codec.
    fn default() -> Self {
        Self::wrapping(Arc::new(
            ballista_core::serde::BallistaPhysicalExtensionCodec::default(),
        ))
    }
}

impl ImportPhysicalCodec {
    /// Our nodes, and everything else by `inner`.
    pub fn wrapping(inner: Arc<dyn PhysicalExtensionCodec>) -> Self {
        Self { inner }
    }
}

impl PhysicalExtensionCodec for ImportPhysicalCodec {
    fn try_decode(
        &self,
        buf: &[u8],
        inputs: &[Arc<dyn ExecutionPlan>],
        ctx: &TaskContext,
        proto_converter: &dyn PhysicalProtoConverterExtension,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let Some(buf) = ours(buf) else {
            return self.inner.try_decode(buf, inputs, ctx, proto_converter);
        };
        Ok(match decode::<PhysicalNode>(buf)? {
            PhysicalNode::Coerce(settings) => Arc::new(CoerceExec::from_settings(
                one_input(inputs, "CoerceExec")?,
                settings,
            )),
            PhysicalNode::DuplicateCheck(settings) => match inputs {
                // The rows, and the table's keys shuffled as they are.
                [rows, keys] => Arc::new(
                    DuplicateCheckExec::try_from_settings(Arc::clone(rows), settings)?
                        .with_existing_input(Arc::clone(keys))?,
                ),
                _ => Arc::new(DuplicateCheckExec::try_from_settings(
                    one_input(inputs, "DuplicateCheckExec")?,
                    settings,
                )?),
            },
            PhysicalNode::ExistingKeys(settings) => Arc::new(ExistingKeysExec::new(settings)),
            PhysicalNode::Sink(settings) => {
                let input = one_input(inputs, "the import's DataSinkExec")?;
                ImportSink::from_settings(settings, input.schema()).over(input)
            }
            PhysicalNode::CsvSource { file, projection } => Arc::new(CsvSourceExec::try_new(
                Arc::new(CsvFile::from(file)),
                projection,
            )?),
            PhysicalNode::ObjectFile {
                file,
                schema,
                projection,
            } => Arc::new(ObjectFileExec::try_new(
                Arc::new(fetched_here(file)),
                ipc_reader(&schema)?.schema(),
                projection,
            )?),
        })
    }

    fn try_encode(
        &self,
        node: Arc<dyn ExecutionPlan>,
        buf: &mut Vec<u8>,
        proto_converter: &dyn PhysicalProtoConverterExtension,
    ) -> Result<()> {
        let encoded = if let Some(coerce) = node.downcast_ref::<CoerceExec>() {
            PhysicalNode::Coerce(coerce.settings().clone())
        } else if let Some(check) = node.downcast_ref::<DuplicateCheckExec>() {
            PhysicalNode::DuplicateCheck(check.settings().clone())
        } else if let Some(keys) = node.downcast_ref::<ExistingKeysExec>() {
            PhysicalNode::ExistingKeys(keys.settings().clone())
        } else if let Some(sink) = node
            .downcast_ref::<DataSinkExec>()
            .and_then(|exec| exec.sink().downcast_ref::<ImportSink>())
        {
            PhysicalNode::Sink(sink.settings().clone())
        } else if let Some(csv) = node.downcast_ref::<CsvSourceExec>() {
            PhysicalNode::CsvSource {
                file: CsvFileSettings::from(csv.file()),
                projection: csv.projection().map(<[usize]>::to_vec),
            }
        } else if let Some(object) = node.downcast_ref::<ObjectFileExec>() {
            PhysicalNode::ObjectFile {
                file: object.file().clone(),
                schema: ipc_text(object.file_schema(), [])?,
                projection: object.projection().map(<[usize]>::to_vec),
            }
        } else {
            return self.inner.try_encode(node, buf, proto_converter);
        };
        encode(&encoded, buf)
    }

    fn try_decode_expr(
        &self,
        buf: &[u8],
        inputs: &[Arc<dyn PhysicalExpr>],
        ctx: &PhysicalExprDecodeCtx<'_>,
    ) -> Result<Arc<dyn PhysicalExpr>> {
        let Some(buf) = ours(buf) else {
            return self.inner.try_decode_expr(buf, inputs, ctx);
        };
        let form: KeyForm = decode(buf)?;
        Ok(Arc::new(KeyFormExpr::new(
            one_input(inputs, "a key form expression")?,
            form,
        )))
    }

    fn try_encode_expr(
        &self,
        node: &Arc<dyn PhysicalExpr>,
        buf: &mut Vec<u8>,
        ctx: &PhysicalExprEncodeCtx<'_>,
    ) -> Result<()> {
        match node.downcast_ref::<KeyFormExpr>() {
            Some(expr) => encode(&expr.form(), buf),
            None => self.inner.try_encode_expr(node, buf, ctx),
        }
    }

    fn try_decode_udf(&self, name: &str, buf: &[u8]) -> Result<Arc<ScalarUDF>> {
        self.inner.try_decode_udf(name, buf)
    }

    fn try_encode_udf(&self, node: &ScalarUDF, buf: &mut Vec<u8>) -> Result<()> {
        self.inner.try_encode_udf(node, buf)
    }

    fn try_decode_udaf(&self, name: &str, buf: &[u8]) -> Result<Arc<AggregateUDF>> {
        self.inner.try_decode_udaf(name, buf)
    }

    fn try_encode_udaf(&self, node: &AggregateUDF, buf: &mut Vec<u8>) -> Result<()> {
        self.inner.try_encode_udaf(node, buf)
    }

    fn try_decode_udwf(&self, name: &str, buf: &[u8]) -> Result<Arc<WindowUDF>> {
        self.inner.try_decode_udwf(name, buf)
    }

    fn try_encode_udwf(&self, node: &WindowUDF, buf: &mut Vec<u8>) -> Result<()> {
        self.inner.try_encode_udwf(node, buf)
    }
}

/// The logical codec of import plans (see the module's documentation).
#[derive(Debug)]
pub struct ImportLogicalCodec {
    inner: Arc<dyn LogicalExtensionCodec>,
}

impl Default for ImportLogicalCodec {
    /// Around Ballista's codec.
    fn default() -> Self {
        Self::wrapping(Arc::new(
            ballista_core::serde::BallistaLogicalExtensionCodec::default(),
        ))
    }
}

impl ImportLogicalCodec {
    /// Our nodes and tables, and everything else by `inner`.
    pub fn wrapping(inner: Arc<dyn LogicalExtensionCodec>) -> Self {
        Self { inner }
    }
}

impl LogicalExtensionCodec for ImportLogicalCodec {
    fn try_decode(
        &self,
        buf: &[u8],
        inputs: &[LogicalPlan],
        ctx: &TaskContext,
    ) -> Result<Extension> {
        let Some(buf) = ours(buf) else {
            return self.inner.try_decode(buf, inputs, ctx);
        };
        match decode::<LogicalNode>(buf)? {
            LogicalNode::Import(spec) => Ok(Extension {
                node: Arc::new(ImportNode::try_new(
                    one_input(inputs, "an import")?,
                    Arc::new(spec),
                )?),
            }),
            LogicalNode::CsvTable(_) | LogicalNode::ObjectFileTable(_) | LogicalNode::Rows(_) => {
                Err(DataFusionError::Internal("a table is no plan node".into()))
            }
        }
    }

    fn try_encode(&self, node: &Extension, buf: &mut Vec<u8>) -> Result<()> {
        match node.node.as_any().downcast_ref::<ImportNode>() {
            Some(import) => encode(&LogicalNode::Import(import.spec().as_ref().clone()), buf),
            None => self.inner.try_encode(node, buf),
        }
    }

    fn try_decode_table_provider(
        &self,
        buf: &[u8],
        table_ref: &TableReference,
        schema: SchemaRef,
        ctx: &TaskContext,
    ) -> Result<Arc<dyn TableProvider>> {
        let Some(buf) = ours(buf) else {
            return self
                .inner
                .try_decode_table_provider(buf, table_ref, schema, ctx);
        };
        match decode::<LogicalNode>(buf)? {
            LogicalNode::CsvTable(file) => Ok(Arc::new(CsvTable::new(CsvFile::from(file)))),
            LogicalNode::ObjectFileTable(file) => {
                Ok(Arc::new(ObjectFileTable::new(fetched_here(file), schema)))
            }
            LogicalNode::Rows(partitions) => Ok(Arc::new(table_of(&partitions, schema)?)),
            LogicalNode::Import(_) => {
                Err(DataFusionError::Internal("an import is no table".into()))
            }
        }
    }

    fn try_encode_table_provider(
        &self,
        table_ref: &TableReference,
        node: Arc<dyn TableProvider>,
        buf: &mut Vec<u8>,
    ) -> Result<()> {
        if let Some(table) = node.downcast_ref::<CsvTable>() {
            return encode(&LogicalNode::CsvTable(table.file().into()), buf);
        }
        if let Some(table) = node.downcast_ref::<ObjectFileTable>() {
            return encode(&LogicalNode::ObjectFileTable(table.file().clone()), buf);
        }
        if let Some(table) = node.downcast_ref::<MemTable>() {
            return encode(&LogicalNode::Rows(rows_of(table)?), buf);
        }
        self.inner.try_encode_table_provider(table_ref, node, buf)
    }

    fn try_decode_file_format(
        &self,
        buf: &[u8],
        ctx: &TaskContext,
    ) -> Result<Arc<dyn FileFormatFactory>> {
        self.inner.try_decode_file_format(buf, ctx)
    }

    fn try_encode_file_format(
        &self,
        buf: &mut Vec<u8>,
        node: Arc<dyn FileFormatFactory>,
    ) -> Result<()> {
        self.inner.try_encode_file_format(buf, node)
    }

    fn try_decode_udf(&self, name: &str, buf: &[u8]) -> Result<Arc<ScalarUDF>> {
        self.inner.try_decode_udf(name, buf)
    }

    fn try_encode_udf(&self, node: &ScalarUDF, buf: &mut Vec<u8>) -> Result<()> {
        self.inner.try_encode_udf(node, buf)
    }

    fn try_decode_udaf(&self, name: &str, buf: &[u8]) -> Result<Arc<AggregateUDF>> {
        self.inner.try_decode_udaf(name, buf)
    }

    fn try_encode_udaf(&self, node: &AggregateUDF, buf: &mut Vec<u8>) -> Result<()> {
        self.inner.try_encode_udaf(node, buf)
    }

    fn try_decode_udwf(&self, name: &str, buf: &[u8]) -> Result<Arc<WindowUDF>> {
        self.inner.try_decode_udwf(name, buf)
    }

    fn try_encode_udwf(&self, node: &WindowUDF, buf: &mut Vec<u8>) -> Result<()> {
        self.inner.try_encode_udwf(node, buf)
    }
}
