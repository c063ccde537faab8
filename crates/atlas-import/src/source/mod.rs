//! Source files: format detection, the CSV header, the file hash, and reading
//! through DataFusion.

use std::io::Read;
use std::path::{Path, PathBuf};

use datafusion::arrow::array::AsArray;
use datafusion::arrow::datatypes::{DataType, Field, Schema};
use datafusion::prelude::{
    AvroReadOptions, CsvReadOptions, DataFrame, ParquetReadOptions, SessionContext,
};
use futures::TryStreamExt;
use sha2::{Digest, Sha256};

use crate::coerce::TypeInference;
use crate::error::{AtlasError, Result};
use crate::schema::ColumnSpec;

mod location;
mod records;

pub use location::{LocatedFile, LocatedFiles, locate};

/// The formats this version reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SourceFormat {
    /// Delimited text with quoting (RFC 4180: quoted commas, quotes, newlines).
    Csv {
        /// Field delimiter.
        delimiter: u8,
        /// Whether the first record names the columns.
        has_header: bool,
    },
    /// Apache Parquet.
    Parquet,
    /// Newline-delimited JSON objects.
    NdJson,
    /// A JSON document: an array of objects, or one object. (A `.json` file
    /// that turns out to hold one object per line is read as NDJSON.)
    Json,
    /// Apache Avro object container files.
    Avro,
    /// An Excel workbook: one sheet, its first row naming the columns.
    Xlsx {
        /// The sheet to read (default: the first).
        sheet: Option<String>,
    },
    /// XML: each child of the root (or each `record` element) is a record.
    Xml {
        /// The name of the record elements (default: the root's children).
        record: Option<String>,
    },
}

/// The formats, for messages.
const FORMAT_NAMES: &str = "csv, tsv, parquet, json, ndjson, avro, xlsx, xml";

impl SourceFormat {
    /// The format of a source: `format` if given, else the one `path`'s
    /// extension names, else CSV; then `options` (`delimiter`, `header` for
    /// CSV/TSV, `sheet` for XLSX, `record` for XML) applied to it.
    pub fn with_options(
        format: Option<SourceFormat>,
        path: Option<&Path>,
        options: &[(String, String)],
    ) -> Result<Self> {
        let mut format = match (format, path) {
            (Some(format), _) => format,
            (None, Some(path)) if !options.is_empty() => {
                SourceFormat::from_path(path).unwrap_or(SourceFormat::Csv {
                    delimiter: b',',
                    has_header: true,
                })
            }
            (None, Some(path)) => SourceFormat::from_path(path)?,
            (None, None) => SourceFormat::Csv {
                delimiter: b',',
                has_header: true,
            },
        };
        for (name, value) in options {
            let format_name = format.name();
            let misplaced = |applies_to: &str| {
                AtlasError::Usage(format!(
                    "option '{name}' applies to {applies_to} sources only, not {format_name}"
                ))
            };
            match (name.as_str(), &mut format) {
                ("delimiter", SourceFormat::Csv { delimiter, .. }) => {
                    let bytes = value.as_bytes();
                    if bytes.len() != 1 {
                        return Err(AtlasError::Usage(format!(
                            "option delimiter must be one ASCII character, not '{value}'"
                        )));
                    }
                    *delimiter = bytes[0];
                }
                ("header", SourceFormat::Csv { has_header, .. }) => {
                    *has_header = crate::coerce::parse_bool(value).ok_or_else(|| {
                        AtlasError::Usage(format!(
                            "option header must be true or false, not '{value}'"
                        ))
                    })?;
                }
                ("sheet", SourceFormat::Xlsx { sheet }) => *sheet = Some(value.clone()),
                ("record", SourceFormat::Xml { record }) => *record = Some(value.clone()),
                ("delimiter" | "header", _) => return Err(misplaced("CSV and TSV")),
                ("sheet", _) => return Err(misplaced("XLSX")),
                ("record", _) => return Err(misplaced("XML")),
                (other, _) => {
                    return Err(AtlasError::Usage(format!(
                        "unknown option '{other}': expected delimiter, header (CSV, TSV), sheet (XLSX) or record (XML)"
                    )));
                }
            }
        }
        Ok(format)
    }

    /// The format named by `name` (`csv`, `tsv`, `parquet`, `json`,
    /// `ndjson`/`jsonl`, `avro`, `xlsx`, `xml`).
    pub fn from_name(name: &str) -> Result<Self> {
        match name.to_ascii_lowercase().as_str() {
            "csv" => Ok(SourceFormat::Csv {
                delimiter: b',',
                has_header: true,
            }),
            "tsv" | "tab" => Ok(SourceFormat::Csv {
                delimiter: b'\t',
                has_header: true,
            }),
            "parquet" | "pq" => Ok(SourceFormat::Parquet),
            "ndjson" | "jsonl" => Ok(SourceFormat::NdJson),
            "json" => Ok(SourceFormat::Json),
            "avro" => Ok(SourceFormat::Avro),
            "xlsx" | "xlsm" => Ok(SourceFormat::Xlsx { sheet: None }),
            "xml" => Ok(SourceFormat::Xml { record: None }),
            other => Err(AtlasError::Usage(format!(
                "unknown format '{other}': expected one of {FORMAT_NAMES}"
            ))),
        }
    }

    /// The format of a path, by its extension.
    pub fn from_path(path: &Path) -> Result<Self> {
        let ext = path
            .extension()
            .and_then(|e| e.to_str())
            .unwrap_or_default();
        SourceFormat::from_name(ext).map_err(|_| {
            AtlasError::Usage(format!(
                "cannot tell the format of '{}' from its extension '{ext}': name one with --format or FORMAT ({FORMAT_NAMES})",
                path.display()
            ))
        })
    }

    /// Short name, for messages.
    pub fn name(&self) -> &'static str {
        match self {
            SourceFormat::Csv {
                delimiter: b'\t', ..
            } => "tsv",
            SourceFormat::Csv { .. } => "csv",
            SourceFormat::Parquet => "parquet",
            SourceFormat::NdJson => "ndjson",
            SourceFormat::Json => "json",
            SourceFormat::Avro => "avro",
            SourceFormat::Xlsx { .. } => "xlsx",
            SourceFormat::Xml { .. } => "xml",
        }
    }

    /// Whether values arrive as text (and so column types are inferred from
    /// the values when a table is created).
    fn is_text(&self) -> bool {
        matches!(
            self,
            SourceFormat::Csv { .. }
                | SourceFormat::Json
                | SourceFormat::NdJson
                | SourceFormat::Xlsx { .. }
                | SourceFormat::Xml { .. }
        )
    }
}

/// A local source file.
#[derive(Debug, Clone)]
pub struct FileSource {
    path: PathBuf,
    format: SourceFormat,
    /// The name reports use (the URL of a staged remote file), if not the path.
    name: Option<String>,
}

impl FileSource {
    /// A source at `path`, in `format` or the format its extension names.
    pub fn new(path: impl Into<PathBuf>, format: Option<SourceFormat>) -> Result<Self> {
        let path = path.into();
        let meta = std::fs::metadata(&path).map_err(|e| {
            AtlasError::Usage(format!("cannot read source file '{}': {e}", path.display()))
        })?;
        if !meta.is_file() {
            return Err(AtlasError::Usage(format!(
                "source '{}' is not a file",
                path.display()
            )));
        }
        let format = match format {
            Some(f) => f,
            None => SourceFormat::from_path(&path)?,
        };
        Ok(Self {
            path,
            format,
            name: None,
        })
    }

    /// Names the file in reports and `file_imports` (e.g. the URL it was
    /// fetched from) instead of by its local path.
    pub fn with_name(mut self, name: impl Into<String>) -> Self {
        self.name = Some(name.into());
        self
    }

    /// The path as given.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The format.
    pub fn format(&self) -> &SourceFormat {
        &self.format
    }

    /// The path for messages.
    pub fn display_name(&self) -> String {
        match &self.name {
            Some(name) => name.clone(),
            None => self.path.display().to_string(),
        }
    }

    /// SHA-256 of the file's bytes, as hex.
    ///
    /// For CSV the same pass checks that every quoted field is closed: a reader
    /// would otherwise take the rest of the file into the last field.
    pub async fn sha256(&self) -> Result<String> {
        let path = self.path.clone();
        let display = self.display_name();
        let mut quotes = match self.format {
            SourceFormat::Csv { delimiter, .. } => Some(QuoteCheck::new(delimiter)),
            _ => None,
        };
        tokio::task::spawn_blocking(move || {
            let mut file = std::fs::File::open(&path)
                .map_err(|e| AtlasError::io(path.display().to_string(), e))?;
            let mut hasher = Sha256::new();
            let mut buf = vec![0u8; 1 << 20];
            loop {
                let n = file
                    .read(&mut buf)
                    .map_err(|e| AtlasError::io(path.display().to_string(), e))?;
                if n == 0 {
                    break;
                }
                hasher.update(&buf[..n]);
                if let Some(quotes) = quotes.as_mut() {
                    quotes.feed(&buf[..n]);
                }
            }
            if let Some(line) = quotes.and_then(|q| q.unterminated_since()) {
                return Err(AtlasError::Source {
                    source_name: display,
                    message: format!(
                        "a quoted field that starts on line {line} is never closed (unterminated quote)"
                    ),
                });
            }
            Ok(hex::encode(hasher.finalize()))
        })
        .await
        .map_err(|e| AtlasError::Usage(format!("hashing the source failed: {e}")))?
    }

    /// The column names of a CSV file from its header (or `column_1..N`).
    fn csv_header(&self, delimiter: u8, has_header: bool) -> Result<Vec<String>> {
        let mut reader = csv::ReaderBuilder::new()
            .delimiter(delimiter)
            .has_headers(false)
            .flexible(true)
            .from_path(&self.path)
            .map_err(|e| self.read_error(e.to_string()))?;
        let mut record = csv::StringRecord::new();
        let found = reader
            .read_record(&mut record)
            .map_err(|e| self.read_error(format!("the header is not valid CSV: {e}")))?;
        if !found {
            return Err(self.read_error("the file is empty: no header and no rows".into()));
        }
        if !has_header {
            return Ok((1..=record.len()).map(|i| format!("column_{i}")).collect());
        }
        let mut names: Vec<String> = Vec::with_capacity(record.len());
        for (i, raw) in record.iter().enumerate() {
            let name = raw.trim_start_matches('\u{feff}').trim();
            let name = if name.is_empty() {
                format!("column_{}", i + 1)
            } else {
                name.to_string()
            };
            if let Some(first) = names.iter().position(|n| *n == name) {
                return Err(self.read_error(format!(
                    "the header names column '{name}' twice (columns {} and {})",
                    first + 1,
                    i + 1
                )));
            }
            names.push(name);
        }
        Ok(names)
    }

    fn read_error(&self, message: String) -> AtlasError {
        AtlasError::Source {
            source_name: self.display_name(),
            message,
        }
    }

    /// The source as a DataFrame. CSV columns are all read as text (explicit
    /// schema from the header, quoted newlines allowed), and converted later by
    /// [`crate::physical::CoerceExec`] which names the row and column of a bad value.
    pub async fn read(&self, ctx: &SessionContext) -> Result<DataFrame> {
        let path = self.path.to_str().ok_or_else(|| {
            AtlasError::Usage(format!("path '{}' is not valid UTF-8", self.path.display()))
        })?;
        let extension = self
            .path
            .extension()
            .and_then(|e| e.to_str())
            .map(|e| format!(".{e}"))
            .unwrap_or_default();
        let read = match &self.format {
            SourceFormat::Csv {
                delimiter,
                has_header,
            } => {
                let names = self.csv_header(*delimiter, *has_header)?;
                let schema = Schema::new(
                    names
                        .iter()
                        .map(|n| Field::new(n, DataType::Utf8, true))
                        .collect::<Vec<_>>(),
                );
                let options = CsvReadOptions::new()
                    .has_header(*has_header)
                    .delimiter(*delimiter)
                    .newlines_in_values(true)
                    .file_extension(&extension)
                    .schema(&schema);
                ctx.read_csv(path, options).await
            }
            SourceFormat::Parquet => {
                ctx.read_parquet(
                    path,
                    ParquetReadOptions::default().file_extension(&extension),
                )
                .await
            }
            SourceFormat::Avro => {
                let options = AvroReadOptions {
                    file_extension: &extension,
                    ..Default::default()
                };
                ctx.read_avro(path, options).await
            }
            SourceFormat::NdJson
            | SourceFormat::Json
            | SourceFormat::Xlsx { .. }
            | SourceFormat::Xml { .. } => return self.read_records(ctx).await,
        };
        read.map_err(|e| AtlasError::from_source_read(e, &self.display_name()))
    }

    /// Reads a record-oriented format into text columns on a blocking thread.
    async fn read_records(&self, ctx: &SessionContext) -> Result<DataFrame> {
        let source = self.display_name();
        let file = self.path.clone();
        let format = match &self.format {
            SourceFormat::Json if self.holds_json_lines()? => SourceFormat::NdJson,
            other => other.clone(),
        };
        let name = source.clone();
        let records = tokio::task::spawn_blocking(move || match format {
            SourceFormat::NdJson => {
                let reader = std::fs::File::open(&file).map_err(|e| AtlasError::io(&name, e))?;
                records::read_json_lines(reader, &name)
            }
            SourceFormat::Json => {
                let bytes = std::fs::read(&file).map_err(|e| AtlasError::io(&name, e))?;
                records::read_json_document(&bytes, &name)
            }
            SourceFormat::Xlsx { sheet } => records::read_xlsx(&file, sheet.as_deref(), &name),
            SourceFormat::Xml { record } => records::read_xml(&file, record.as_deref(), &name),
            _ => unreachable!("only record formats are read here"),
        })
        .await
        .map_err(|e| AtlasError::Usage(format!("reading the source failed: {e}")))??;
        tracing::info!(
            "Read {} records with columns {} from {source}",
            records.len(),
            records.names().join(", ")
        );
        let (schema, batches) = records.into_batches(&source)?;
        let table = datafusion::datasource::MemTable::try_new(schema, vec![batches])
            .map_err(AtlasError::from_datafusion)?;
        ctx.read_table(std::sync::Arc::new(table))
            .map_err(AtlasError::from_datafusion)
    }

    /// Whether a `.json` file holds one object per line (NDJSON) rather than
    /// one document: it starts with `{` and a second value follows the first.
    fn holds_json_lines(&self) -> Result<bool> {
        let file =
            std::fs::File::open(&self.path).map_err(|e| AtlasError::io(self.display_name(), e))?;
        let mut values = serde_json::Deserializer::from_reader(std::io::BufReader::new(file))
            .into_iter::<serde::de::IgnoredAny>();
        let first = values.next();
        Ok(matches!(first, Some(Ok(_))) && matches!(values.next(), Some(Ok(_))))
    }

    /// Column specs for creating a missing table. Typed formats give their own
    /// types; CSV types are inferred from every value of the file.
    pub async fn infer_columns(&self, df: DataFrame) -> Result<Vec<ColumnSpec>> {
        let schema = df.schema().as_arrow().clone();
        if !self.format.is_text() {
            return Ok(columns_from_schema(&schema));
        }
        let mut inference = vec![TypeInference::default(); schema.fields().len()];
        let mut stream = df
            .execute_stream()
            .await
            .map_err(|e| AtlasError::from_source_read(e, &self.display_name()))?;
        while let Some(batch) = stream
            .try_next()
            .await
            .map_err(|e| AtlasError::from_source_read(e, &self.display_name()))?
        {
            for (i, column) in batch.columns().iter().enumerate() {
                inference[i].observe(column.as_string::<i32>());
            }
        }
        Ok(schema
            .fields()
            .iter()
            .zip(inference)
            .map(|(f, inf)| ColumnSpec {
                name: f.name().clone(),
                data_type: inf.data_type(),
                sql_type: None,
            })
            .collect())
    }
}

/// Follows CSV quoting (RFC 4180, as the reader applies it) to find a quoted
/// field that is still open at the end of the file.
#[derive(Debug)]
struct QuoteCheck {
    delimiter: u8,
    state: QuoteState,
    /// 1-based line of the current position.
    line: u64,
    /// Line where the open quoted field started.
    opened_on: u64,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum QuoteState {
    FieldStart,
    Unquoted,
    Quoted,
    /// A quote inside a quoted field: the end of the field, or the first half of `""`.
    QuoteInQuoted,
}

impl QuoteCheck {
    fn new(delimiter: u8) -> Self {
        Self {
            delimiter,
            state: QuoteState::FieldStart,
            line: 1,
            opened_on: 0,
        }
    }

    fn feed(&mut self, bytes: &[u8]) {
        use QuoteState::*;
        for &b in bytes {
            if b == b'\n' {
                self.line += 1;
            }
            self.state = match (self.state, b) {
                (FieldStart, b'"') => {
                    self.opened_on = self.line;
                    Quoted
                }
                (Quoted, b'"') => QuoteInQuoted,
                (Quoted, _) => Quoted,
                (QuoteInQuoted, b'"') => Quoted,
                (_, b'\n' | b'\r') => FieldStart,
                (_, d) if d == self.delimiter => FieldStart,
                _ => Unquoted,
            };
        }
    }

    /// The line where a still-open quoted field began, if any.
    fn unterminated_since(&self) -> Option<u64> {
        (self.state == QuoteState::Quoted).then_some(self.opened_on)
    }
}

/// Column specs for a new table from a typed schema.
pub fn columns_from_schema(schema: &Schema) -> Vec<ColumnSpec> {
    schema
        .fields()
        .iter()
        .map(|f| ColumnSpec {
            name: f.name().clone(),
            data_type: storable_type(f.data_type()),
            sql_type: None,
        })
        .collect()
}

/// The type a new column gets for a source type: strings of any layout become
/// `Utf8`; nested and exotic types are stored as text.
fn storable_type(data_type: &DataType) -> DataType {
    match data_type {
        DataType::Utf8View | DataType::LargeUtf8 | DataType::Utf8 => DataType::Utf8,
        DataType::Null => DataType::Utf8,
        dt if dt.is_numeric() => dt.clone(),
        DataType::Boolean | DataType::Date32 => data_type.clone(),
        DataType::Date64 => DataType::Date32,
        DataType::Timestamp(_, tz) => DataType::Timestamp(
            datafusion::arrow::datatypes::TimeUnit::Microsecond,
            tz.clone(),
        ),
        _ => DataType::Utf8,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn open_quote(text: &str) -> Option<u64> {
        let mut check = QuoteCheck::new(b',');
        // Feed in two pieces to cross a buffer boundary.
        let (a, b) = text.as_bytes().split_at(text.len() / 2);
        check.feed(a);
        check.feed(b);
        check.unterminated_since()
    }

    #[test]
    fn options_apply_to_the_right_format() {
        let opts = |pairs: &[(&str, &str)]| -> Vec<(String, String)> {
            pairs
                .iter()
                .map(|(a, b)| (a.to_string(), b.to_string()))
                .collect()
        };
        let tsv =
            SourceFormat::with_options(None, Some(Path::new("a.tsv")), &opts(&[("header", "no")]))
                .unwrap();
        assert_eq!(
            tsv,
            SourceFormat::Csv {
                delimiter: b'\t',
                has_header: false
            }
        );
        let unknown = SourceFormat::with_options(
            None,
            Some(Path::new("a.txt")),
            &opts(&[("delimiter", ";")]),
        )
        .unwrap();
        assert_eq!(
            unknown,
            SourceFormat::Csv {
                delimiter: b';',
                has_header: true
            }
        );
        let sheet =
            SourceFormat::with_options(None, Some(Path::new("a.xlsx")), &opts(&[("sheet", "Q3")]))
                .unwrap();
        assert_eq!(
            sheet,
            SourceFormat::Xlsx {
                sheet: Some("Q3".into())
            }
        );
        let parquet = SourceFormat::with_options(
            None,
            Some(Path::new("a.parquet")),
            &opts(&[("delimiter", ";")]),
        );
        assert!(
            matches!(&parquet, Err(AtlasError::Usage(m)) if m.contains("CSV and TSV sources only")),
            "{parquet:?}"
        );
        let unknown = SourceFormat::from_path(Path::new("a.docx")).unwrap_err();
        assert!(unknown.to_string().contains("xlsx, xml"), "{unknown}");
    }

    #[test]
    fn finds_unterminated_quotes_only() {
        assert_eq!(
            open_quote("a,b\n1,\"ok, \"\"fine\"\"\nstill\"\n2,x\n"),
            None
        );
        assert_eq!(open_quote("a,b\n1,12\" pipe\n"), None);
        assert_eq!(open_quote("a,b\n1,\"\"\n"), None);
        assert_eq!(open_quote("a,b\n1,x\n2,\"never closed\n3,y\n"), Some(3));
    }
}
