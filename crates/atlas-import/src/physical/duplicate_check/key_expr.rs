//! The key of a column with a [`KeyForm`], as a physical expression: the
//! check's input is hash-partitioned on it, so that values the database
//! holds equal (`2.5` and `2.50` in a `numeric`) reach the same partition.

use std::fmt;
use std::hash::{Hash, Hasher};
use std::sync::Arc;

use datafusion::arrow::datatypes::{DataType, Schema};
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::error::Result;
use datafusion::logical_expr::ColumnarValue;
use datafusion::physical_expr::PhysicalExpr;

use crate::key_form::KeyForm;

/// `form` applied to the text values of `column`.
#[derive(Debug, Eq)]
pub struct KeyFormExpr {
    column: Arc<dyn PhysicalExpr>,
    form: KeyForm,
}

impl PartialEq for KeyFormExpr {
    fn eq(&self, other: &Self) -> bool {
        self.form == other.form && self.column.as_ref() == other.column.as_ref()
    }
}

impl Hash for KeyFormExpr {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.column.as_ref().hash(state);
        self.form.hash(state);
    }
}

impl KeyFormExpr {
    /// `column` compared in `form`.
    pub fn new(column: Arc<dyn PhysicalExpr>, form: KeyForm) -> Self {
        Self { column, form }
    }

    /// The form the column's values are compared in.
    #[cfg_attr(not(feature = "ballista"), allow(dead_code))]
    pub fn form(&self) -> KeyForm {
        self.form
    }
}

impl fmt::Display for KeyFormExpr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} by value as {}", self.column, self.form)
    }
}

impl PhysicalExpr for KeyFormExpr {
    fn data_type(&self, input_schema: &Schema) -> Result<DataType> {
        self.column.data_type(input_schema)
    }

    fn nullable(&self, input_schema: &Schema) -> Result<bool> {
        self.column.nullable(input_schema)
    }

    fn evaluate(&self, batch: &RecordBatch) -> Result<ColumnarValue> {
        let array = self.column.evaluate(batch)?.into_array(batch.num_rows())?;
        Ok(ColumnarValue::Array(self.form.apply(&array)))
    }

    fn children(&self) -> Vec<&Arc<dyn PhysicalExpr>> {
        vec![&self.column]
    }

    fn with_new_children(
        self: Arc<Self>,
        mut children: Vec<Arc<dyn PhysicalExpr>>,
    ) -> Result<Arc<dyn PhysicalExpr>> {
        Ok(Arc::new(KeyFormExpr::new(
            children.swap_remove(0),
            self.form,
        )))
    }

    fn fmt_sql(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.column.fmt_sql(f)?;
        write!(f, " by value as {}", self.form)
    }
}
