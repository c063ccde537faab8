//! The import's target: the table as it is, or as the import will create
//! it, and which source column goes into which of its columns.

use super::ImportBuilder;
use super::source::OpenedSource;
use crate::error::{AtlasError, Result};
use crate::key_form::KeyForm;
use crate::options::{BinaryText, CreateTable};
use crate::report::Phase;
use crate::schema::{ColumnSpec, TargetColumn, TargetTable, is_reader_column};
use crate::typed_text::TextForm;

impl ImportBuilder {
    /// The target table as the plan sees it, and the columns to create it with
    /// when it is missing.
    pub(super) async fn target(
        &self,
        source: &OpenedSource,
    ) -> Result<(TargetTable, Option<Vec<ColumnSpec>>)> {
        if let Some(mut target) = self.db.describe_table(&self.table).await? {
            self.read_binary_text(&mut target);
            return Ok((target, None));
        }
        let mut planned = self.planned_table(source).await?;
        self.read_binary_text(&mut planned);
        let create = planned
            .columns
            .iter()
            .map(|c| ColumnSpec {
                name: c.name.clone(),
                data_type: c.data_type.clone(),
                sql_type: Some(c.sql_type.clone()),
            })
            .collect();
        Ok((planned, Some(create)))
    }

    /// Sets how the binary columns of `table` read text, where an option
    /// says other than the database's own way.
    pub(super) fn read_binary_text(&self, table: &mut TargetTable) {
        let form = match self.options.binary_text() {
            BinaryText::Native => return,
            BinaryText::Hex => TextForm::Hex,
            BinaryText::Base64 => TextForm::Base64,
        };
        for column in &mut table.columns {
            if column.data_type == datafusion::arrow::datatypes::DataType::Binary {
                column.text_form = Some(form);
            }
        }
    }

    /// The table an import would create, described without creating it.
    pub(super) async fn planned_table(&self, source: &OpenedSource) -> Result<TargetTable> {
        if self.options.create_table == CreateTable::Never {
            return Err(AtlasError::Usage(format!(
                "table '{}' does not exist (and CREATE TABLE NEVER was given)",
                self.table
            )));
        }
        let specs = match source.files.first() {
            // Typed already, unless MAP changed the columns: then go by the types
            // the expressions give.
            Some(file) if self.options.map.is_empty() => {
                self.metrics.set_phase(Phase::InferringTypes);
                file.infer_columns(source.df.clone(), self.options.inference())
                    .await?
            }
            _ => crate::source::columns_from_schema(source.df.schema().as_arrow()),
        };
        let source_names: Vec<String> = specs.iter().map(|s| s.name.clone()).collect();
        let names = crate::names::new_column_names(
            &source_names,
            self.options.names(),
            crate::names::NameLimit::of(self.db.kind()),
        )?;
        Ok(TargetTable {
            name: self.table.key(),
            columns: specs
                .iter()
                .zip(names)
                .map(|(s, name)| {
                    // Nested values (structs, lists, maps) are held as JSON.
                    let kind = self.db.kind();
                    if crate::convert::is_nested(&s.data_type) {
                        let (sql_type, text_form) = kind.dialect().nested_column();
                        let data_type = datafusion::arrow::datatypes::DataType::Utf8;
                        return TargetColumn {
                            name,
                            sql_type: sql_type.to_string(),
                            key_form: KeyForm::of(kind, sql_type, text_form, &data_type),
                            seconds_precision: None,
                            zero_padded_width: None,
                            numbers_name_labels: false,
                            unzoned_in: None,
                            data_type,
                            nullable: true,
                            has_default: false,
                            generated: false,
                            max_chars: None,
                            text_form,
                        };
                    }
                    // Where the database cannot hold a type exactly (SQLite
                    // and wide decimals), the column is made to hold its text.
                    let data_type = self.db.new_column_type(&s.data_type);
                    let sql_type = self.db.sql_type_for(&data_type);
                    let text_form = TextForm::of(kind, &sql_type);
                    TargetColumn {
                        name,
                        key_form: KeyForm::of(kind, &sql_type, text_form, &data_type),
                        seconds_precision: None,
                        zero_padded_width: None,
                        numbers_name_labels: false,
                        unzoned_in: None,
                        text_form,
                        sql_type,
                        data_type,
                        nullable: true,
                        has_default: false,
                        generated: false,
                        max_chars: None,
                    }
                })
                .collect(),
        })
    }
}

/// The casts of an import: each written target column with the source
/// column it reads, or every difference between source and table.
pub(super) fn column_casts(
    source: &datafusion::arrow::datatypes::Schema,
    target: &TargetTable,
) -> Result<Vec<(usize, TargetColumn)>> {
    let mut differences = Vec::new();
    let mut casts = Vec::new();
    let written_fields = source
        .fields()
        .iter()
        .enumerate()
        .filter(|(_, field)| !is_reader_column(field.name()));
    for (position, (i, field)) in written_fields.enumerate() {
        match target.find_source_column(field.name(), position)? {
            Some(column) if column.data_type == datafusion::arrow::datatypes::DataType::Null => {
                differences.push(format!(
                    "column '{}' has type {}, which atlas-import cannot write yet",
                    column.name, column.sql_type
                ))
            }
            Some(column) if !storable_in(field.data_type(), &column.data_type) => {
                differences.push(format!(
                    "column '{}' is {} in the source, which a {} column cannot hold",
                    field.name(),
                    field.data_type(),
                    column.sql_type
                ))
            }
            Some(column) => {
                if casts
                    .iter()
                    .any(|(_, c): &(usize, TargetColumn)| c.name == column.name)
                {
                    differences.push(format!(
                        "source columns map twice onto column '{}'",
                        column.name
                    ));
                }
                casts.push((i, column.clone()));
            }
            None => differences.push(format!(
                "source column '{}' is not a column of table '{}' (its columns: {})",
                field.name(),
                target.name,
                target.column_names().join(", ")
            )),
        }
    }
    for column in &target.columns {
        let written = casts.iter().any(|(_, c)| c.name == column.name);
        if written && column.generated {
            differences.push(format!(
                "column '{}' is generated by the database and cannot be written: leave it \
                 out of the source (or map it away)",
                column.name
            ));
        }
        if !written && !column.nullable && !column.has_default {
            differences.push(format!(
                "column '{}' is NOT NULL without a default, and the source does not provide it",
                column.name
            ));
        }
    }
    if casts.is_empty() && differences.is_empty() {
        differences.push("the source has no columns".into());
    }
    if differences.is_empty() {
        Ok(casts)
    } else {
        Err(AtlasError::SchemaMismatch {
            table: target.name.clone(),
            differences,
        })
    }
}

/// Whether values of a typed source column can be converted to `target` at
/// all (text is checked value by value instead, naming row and column).
pub(super) fn storable_in(
    source: &datafusion::arrow::datatypes::DataType,
    target: &datafusion::arrow::datatypes::DataType,
) -> bool {
    use datafusion::arrow::datatypes::DataType;
    match (source, target) {
        (DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View | DataType::Null, _) => true,
        (_, DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View) => true,
        // Arrow casts dates and times to numbers; a table means no such thing.
        (DataType::Date32 | DataType::Date64 | DataType::Timestamp(..), t)
            if t.is_numeric() || *t == DataType::Boolean =>
        {
            false
        }
        (s, DataType::Date32 | DataType::Date64 | DataType::Timestamp(..))
            if s.is_numeric() || *s == DataType::Boolean =>
        {
            false
        }
        (s, t) => datafusion::arrow::compute::can_cast_types(s, t),
    }
}

/// Resolves the key column names to indices among the written columns.
pub(super) fn resolve_key(
    key: Option<&[String]>,
    written: &[TargetColumn],
    target: &TargetTable,
) -> Result<Vec<usize>> {
    let Some(names) = key else {
        return Ok((0..written.len()).collect());
    };
    names
        .iter()
        .map(|name| {
            let column = target.find_column(name)?.ok_or_else(|| {
                AtlasError::Usage(format!(
                    "key column '{name}' is not a column of table '{}' (its columns: {})",
                    target.name,
                    target.column_names().join(", ")
                ))
            })?;
            written
                .iter()
                .position(|c| c.name == column.name)
                .ok_or_else(|| {
                    AtlasError::Usage(format!(
                        "key column '{name}' is not provided by the source, so it cannot be checked"
                    ))
                })
        })
        .collect()
}
