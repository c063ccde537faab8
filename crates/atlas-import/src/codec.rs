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
//! - [`ImportPhysicalCodec`]: `CoerceExec`, `DuplicateCheckExec`, the
//!   `DataSinkExec` holding an `ImportSink` (DataFusion encodes only its own
//!   sinks, so the codec carries the whole sink node), the check's key-form
//!   partitioning expression, and the CSV reader `CsvSourceExec`.
//! - [`ImportLogicalCodec`]: the `ImportNode` and the CSV source table.

use std::path::PathBuf;
use std::sync::Arc;

use datafusion::arrow::datatypes::SchemaRef;
use datafusion::catalog::TableProvider;
use datafusion::common::TableReference;
use datafusion::datasource::sink::DataSinkExec;
use datafusion::error::{DataFusionError, Result};
use datafusion::execution::TaskContext;
use datafusion::logical_expr::{Extension, LogicalPlan};
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
    CoerceExec, CoerceSettings, DuplicateCheckExec, DuplicateCheckSettings, ImportSink,
    KeyFormExpr, SinkSettings,
};
use crate::source::csv::{CsvFile, CsvSourceExec, CsvTable};
use crate::source::{Compression, CsvDialect};

/// A CSV file as settings: everything but the live read counter.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct CsvFileSettings {
    path: PathBuf,
    name: String,
    dialect: CsvDialect,
    compression: Compression,
    columns: Vec<String>,
}

impl From<&CsvFile> for CsvFileSettings {
    fn from(file: &CsvFile) -> Self {
        Self {
            path: file.path.clone(),
            name: file.name.clone(),
            dialect: file.dialect.clone(),
            compression: file.compression,
            columns: file.columns.clone(),
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
        }
    }
}

/// A physical node of an import plan, as it travels.
#[derive(Debug, Serialize, Deserialize)]
enum PhysicalNode {
    Coerce(CoerceSettings),
    DuplicateCheck(DuplicateCheckSettings),
    /// A `DataSinkExec` of an `ImportSink` (its input in source order).
    Sink(SinkSettings),
    CsvSource {
        file: CsvFileSettings,
        projection: Option<Vec<usize>>,
    },
}

/// A logical node or table of an import plan, as it travels.
#[derive(Debug, Serialize, Deserialize)]
enum LogicalNode {
    Import(ImportSpec),
    CsvTable(CsvFileSettings),
}

fn encode<T: Serialize>(value: &T, buf: &mut Vec<u8>) -> Result<()> {
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
#[derive(Debug, Default)]
pub struct ImportPhysicalCodec;

impl PhysicalExtensionCodec for ImportPhysicalCodec {
    fn try_decode(
        &self,
        buf: &[u8],
        inputs: &[Arc<dyn ExecutionPlan>],
        _ctx: &TaskContext,
        _proto_converter: &dyn PhysicalProtoConverterExtension,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        Ok(match decode::<PhysicalNode>(buf)? {
            PhysicalNode::Coerce(settings) => Arc::new(CoerceExec::from_settings(
                one_input(inputs, "CoerceExec")?,
                settings,
            )),
            PhysicalNode::DuplicateCheck(settings) => {
                Arc::new(DuplicateCheckExec::try_from_settings(
                    one_input(inputs, "DuplicateCheckExec")?,
                    settings,
                )?)
            }
            PhysicalNode::Sink(settings) => {
                let input = one_input(inputs, "the import's DataSinkExec")?;
                ImportSink::from_settings(settings, input.schema()).over(input)
            }
            PhysicalNode::CsvSource { file, projection } => Arc::new(CsvSourceExec::try_new(
                Arc::new(CsvFile::from(file)),
                projection,
            )?),
        })
    }

    fn try_encode(
        &self,
        node: Arc<dyn ExecutionPlan>,
        buf: &mut Vec<u8>,
        _proto_converter: &dyn PhysicalProtoConverterExtension,
    ) -> Result<()> {
        let encoded = if let Some(coerce) = node.downcast_ref::<CoerceExec>() {
            PhysicalNode::Coerce(coerce.settings().clone())
        } else if let Some(check) = node.downcast_ref::<DuplicateCheckExec>() {
            PhysicalNode::DuplicateCheck(check.settings().clone())
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
        } else {
            return Err(DataFusionError::NotImplemented(format!(
                "the import codec does not encode {}",
                node.name()
            )));
        };
        encode(&encoded, buf)
    }

    fn try_decode_expr(
        &self,
        buf: &[u8],
        inputs: &[Arc<dyn PhysicalExpr>],
        _ctx: &PhysicalExprDecodeCtx<'_>,
    ) -> Result<Arc<dyn PhysicalExpr>> {
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
        _ctx: &PhysicalExprEncodeCtx<'_>,
    ) -> Result<()> {
        match node.downcast_ref::<KeyFormExpr>() {
            Some(expr) => encode(&expr.form(), buf),
            None => Err(DataFusionError::NotImplemented(format!(
                "the import codec does not encode the expression {node}"
            ))),
        }
    }
}

/// The logical codec of import plans (see the module's documentation).
#[derive(Debug, Default)]
pub struct ImportLogicalCodec;

impl LogicalExtensionCodec for ImportLogicalCodec {
    fn try_decode(
        &self,
        buf: &[u8],
        inputs: &[LogicalPlan],
        _ctx: &TaskContext,
    ) -> Result<Extension> {
        match decode::<LogicalNode>(buf)? {
            LogicalNode::Import(spec) => Ok(Extension {
                node: Arc::new(ImportNode::try_new(
                    one_input(inputs, "an import")?,
                    Arc::new(spec),
                )?),
            }),
            LogicalNode::CsvTable(_) => Err(DataFusionError::Internal(
                "a CSV table is no plan node".into(),
            )),
        }
    }

    fn try_encode(&self, node: &Extension, buf: &mut Vec<u8>) -> Result<()> {
        match node.node.as_any().downcast_ref::<ImportNode>() {
            Some(import) => encode(&LogicalNode::Import(import.spec().as_ref().clone()), buf),
            None => Err(DataFusionError::NotImplemented(format!(
                "the import codec does not encode the node {}",
                node.node.name()
            ))),
        }
    }

    fn try_decode_table_provider(
        &self,
        buf: &[u8],
        _table_ref: &TableReference,
        _schema: SchemaRef,
        _ctx: &TaskContext,
    ) -> Result<Arc<dyn TableProvider>> {
        match decode::<LogicalNode>(buf)? {
            LogicalNode::CsvTable(file) => Ok(Arc::new(CsvTable::new(CsvFile::from(file)))),
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
        match node.downcast_ref::<CsvTable>() {
            Some(table) => encode(&LogicalNode::CsvTable(table.file().into()), buf),
            None => Err(DataFusionError::NotImplemented(format!(
                "the import codec does not encode the table {table_ref}"
            ))),
        }
    }
}
