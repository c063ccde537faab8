//! `CHECK IMPORT`: the plan run as a dry run, the duplicates returned.

use std::sync::Arc;

use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::datatypes::{Field, Schema, SchemaRef};

use super::ImportBuilder;
use crate::error::{AtlasError, Result};
use crate::physical::TableTransaction;

impl ImportBuilder {
    /// The dry run of `CHECK IMPORT`: writes nothing and returns the duplicate
    /// rows: the key columns, `source_row` and `duplicate_of` (`existing`, or
    /// `row N` for the first occurrence in the import), in source order.
    pub async fn check(self) -> Result<(SchemaRef, Vec<RecordBatch>)> {
        let this = self.resolve_table().await?;
        this.check_resolved().await
    }

    pub(super) async fn check_resolved(self) -> Result<(SchemaRef, Vec<RecordBatch>)> {
        let files = self.locate().await?;
        let source = self.open_source(files).await?;
        let (target, _) = self.target(&source).await?;
        let prepared = self.prepare(&source, &target, None, true, None).await?;
        // A transaction for a consistent view of the existing keys, rolled back.
        let transaction = Arc::new(TableTransaction::dry_run(
            Arc::clone(&self.db),
            self.table.clone(),
        ));
        let _running = self.start_run(&prepared, Arc::clone(&transaction), None);
        let result = prepared.collect().await;
        if let Err(e) = transaction.slot().rollback().await {
            tracing::warn!("rolling back the dry run failed: {e}");
        }
        let batches = result?;
        let schema = prepared.plan().schema();
        let width = schema.fields().len();
        // key columns, then source_row, then duplicate_of
        let mut indices = prepared.spec().key_columns.clone();
        indices.extend([width - 1, width - 2]);
        let fields: Vec<_> = indices
            .iter()
            .map(|&i| {
                let f = schema.field(i);
                if i == width - 1 {
                    Field::new("source_row", f.data_type().clone(), false)
                } else {
                    f.clone()
                }
            })
            .collect();
        let out_schema = Arc::new(Schema::new(fields));
        let batches = batches
            .iter()
            .map(|b| {
                RecordBatch::try_new(
                    Arc::clone(&out_schema),
                    indices.iter().map(|&i| Arc::clone(b.column(i))).collect(),
                )
                .map_err(AtlasError::from)
            })
            .collect::<Result<Vec<_>>>()?;
        Ok((out_schema, batches))
    }
}
