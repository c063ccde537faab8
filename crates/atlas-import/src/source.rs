//! Source files: format detection, the CSV header, the file hash, and reading
//! through DataFusion.

use std::io::Read;
use std::path::{Path, PathBuf};

use datafusion::arrow::array::AsArray;
use datafusion::arrow::datatypes::{DataType, Field, Schema};
use datafusion::prelude::{
    CsvReadOptions, DataFrame, JsonReadOptions, ParquetReadOptions, SessionContext,
};
use futures::TryStreamExt;
use sha2::{Digest, Sha256};

use crate::coerce::TypeInference;
use crate::error::{AtlasError, Result};
use crate::schema::ColumnSpec;

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
}

impl SourceFormat {
    /// A CSV/TSV format with the given options applied: on `format` if given,
    /// else on the format `path`'s extension names, else on plain CSV.
    /// `not_csv` is the error when that base is not CSV or TSV.
    pub fn with_csv_options(
        format: Option<SourceFormat>,
        path: Option<&Path>,
        delimiter: Option<u8>,
        has_header: Option<bool>,
        not_csv: impl FnOnce() -> AtlasError,
    ) -> Result<Self> {
        let base = format
            .or_else(|| path.and_then(|p| SourceFormat::from_path(p).ok()))
            .unwrap_or(SourceFormat::Csv {
                delimiter: b',',
                has_header: true,
            });
        let SourceFormat::Csv {
            delimiter: base_delimiter,
            has_header: base_header,
        } = base
        else {
            return Err(not_csv());
        };
        Ok(SourceFormat::Csv {
            delimiter: delimiter.unwrap_or(base_delimiter),
            has_header: has_header.unwrap_or(base_header),
        })
    }

    /// The format named by `name` (`csv`, `tsv`, `parquet`, `ndjson`/`jsonl`).
    pub fn from_name(name: &str) -> Result<Self> {
        match name.to_ascii_lowercase().as_str() {
            "csv" => Ok(SourceFormat::Csv {
                delimiter: b',',
                has_header: true,
            }),
            "tsv" => Ok(SourceFormat::Csv {
                delimiter: b'\t',
                has_header: true,
            }),
            "parquet" | "pq" => Ok(SourceFormat::Parquet),
            "ndjson" | "jsonl" => Ok(SourceFormat::NdJson),
            other => Err(AtlasError::Usage(format!(
                "unknown format '{other}': expected one of csv, tsv, parquet, ndjson"
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
                "cannot tell the format of '{}' from its extension '{ext}': name one with --format (csv, tsv, parquet, ndjson)",
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
        }
    }
}

/// A local source file.
#[derive(Debug, Clone)]
pub struct FileSource {
    path: PathBuf,
    format: SourceFormat,
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
        Ok(Self { path, format })
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
        self.path.display().to_string()
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
            SourceFormat::NdJson => {
                ctx.read_json(path, JsonReadOptions::default().file_extension(&extension))
                    .await
            }
        };
        read.map_err(|e| AtlasError::from_source_read(e, &self.display_name()))
    }

    /// Column specs for creating a missing table. Typed formats give their own
    /// types; CSV types are inferred from every value of the file.
    pub async fn infer_columns(&self, df: DataFrame) -> Result<Vec<ColumnSpec>> {
        let schema = df.schema().as_arrow().clone();
        if !matches!(self.format, SourceFormat::Csv { .. }) {
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
    fn csv_options_apply_to_the_right_base() {
        let usage = || AtlasError::Usage("not csv".into());
        let tsv = SourceFormat::with_csv_options(
            None,
            Some(Path::new("a.tsv")),
            None,
            Some(false),
            usage,
        )
        .unwrap();
        assert_eq!(
            tsv,
            SourceFormat::Csv {
                delimiter: b'\t',
                has_header: false
            }
        );
        let unknown =
            SourceFormat::with_csv_options(None, Some(Path::new("a.txt")), Some(b';'), None, usage)
                .unwrap();
        assert_eq!(
            unknown,
            SourceFormat::Csv {
                delimiter: b';',
                has_header: true
            }
        );
        let parquet = SourceFormat::with_csv_options(
            None,
            Some(Path::new("a.parquet")),
            Some(b';'),
            None,
            usage,
        );
        assert!(matches!(parquet, Err(AtlasError::Usage(m)) if m == "not csv"));
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
