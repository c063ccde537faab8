//! Source files: format detection, the CSV header, the file hash, and reading
//! through DataFusion.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use datafusion::arrow::array::AsArray;
use datafusion::arrow::datatypes::{DataType, Schema};
use datafusion::prelude::{AvroReadOptions, DataFrame, ParquetReadOptions, SessionContext};
use futures::TryStreamExt;
use sha2::{Digest, Sha256};

use crate::convert::TypeInference;
use crate::error::{AtlasError, Result};
use crate::options::Inference;
use crate::schema::{ColumnSpec, is_reader_column};

mod compression;
pub mod csv;
mod location;
mod object_file;
mod records;

pub use compression::{Compression, ReadProgress};
pub use csv::CsvDialect;
pub use location::{LocatedFile, LocatedFiles, ObjectOrigin, fetch_origin, locate};
pub use object_file::{ObjectFile, ObjectFileExec, ObjectFileTable, ObjectFormat};

/// The formats this version reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SourceFormat {
    /// Delimited text with quoting (RFC 4180: quoted commas, quotes,
    /// newlines), read strictly by [`csv::CsvSourceExec`].
    Csv(CsvDialect),
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

/// What an import's `OPTIONS` (and the CLI flags that mirror them) say about
/// its source: the format and its dialect, the compression, and how a new
/// table's column types are inferred. The one place both front ends read them.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SourceOptions {
    /// The format (`None`: from the file extension).
    pub format: Option<SourceFormat>,
    /// The compression (`None`: from the file extension).
    pub compression: Option<Compression>,
    /// How a new table's column types are inferred (`None`: the default).
    pub infer: Option<Inference>,
    /// Whether a new table's names are normalized or kept (`None`: the
    /// default, normalized).
    pub names: Option<crate::names::NamePolicy>,
    /// How text is read into binary columns (`None`: the default, native).
    pub binary: Option<crate::options::BinaryText>,
}

/// The one ASCII character an option names (`quote`, `escape`, ...).
fn one_character(name: &str, value: &str) -> Result<u8> {
    let bytes = value.as_bytes();
    match bytes {
        [b] if b.is_ascii() => Ok(*b),
        b"\\t" => Ok(b'\t'),
        _ => Err(AtlasError::Usage(format!(
            "option {name} must be one ASCII character, not '{value}'"
        ))),
    }
}

impl SourceOptions {
    /// Takes what `other` says; what it leaves out stays as it is.
    pub fn merge(&mut self, other: SourceOptions) {
        let SourceOptions {
            format,
            compression,
            infer,
            names,
            binary,
        } = other;
        self.format = format.or(self.format.take());
        self.compression = compression.or(self.compression);
        self.infer = infer.or(self.infer);
        self.names = names.or(self.names);
        self.binary = binary.or(self.binary);
    }

    /// Reads `format` (a name such as `csv`), and `options`: `delimiter`,
    /// `header`, `quote`, `escape`, `comment`, `null` (CSV, TSV), `sheet`
    /// (XLSX), `record` (XML), `compression`, `infer`, `names`, `binary`. Without a format, the
    /// one `path`'s extension names is used, else CSV.
    pub fn parse(
        format: Option<&str>,
        path: Option<&Path>,
        options: &[(String, String)],
    ) -> Result<Self> {
        let mut parsed = SourceOptions {
            format: format.map(SourceFormat::from_name).transpose()?,
            ..Default::default()
        };
        let mut format_options = Vec::new();
        for (name, value) in options {
            match name.as_str() {
                "compression" => parsed.compression = Some(value.parse()?),
                "infer" => parsed.infer = Some(value.parse()?),
                "names" => parsed.names = Some(value.parse()?),
                "binary" => parsed.binary = Some(value.parse()?),
                _ => format_options.push((name.clone(), value.clone())),
            }
        }
        if !format_options.is_empty() {
            parsed.format = Some(SourceFormat::with_options(
                parsed.format,
                path,
                &format_options,
            )?);
        }
        Ok(parsed)
    }
}

impl SourceFormat {
    /// The format of a source: `format` if given, else the one `path`'s
    /// extension names (past a compression extension), else CSV; then
    /// `options` (`delimiter`, `header`, `quote`, `escape`, `comment`, `null`
    /// for CSV/TSV, `sheet` for XLSX, `record` for XML) applied to it.
    pub fn with_options(
        format: Option<SourceFormat>,
        path: Option<&Path>,
        options: &[(String, String)],
    ) -> Result<Self> {
        let mut format = match (format, path) {
            (Some(format), _) => format,
            (None, Some(path)) if !options.is_empty() => {
                SourceFormat::from_path(path).unwrap_or(SourceFormat::Csv(CsvDialect::default()))
            }
            (None, Some(path)) => SourceFormat::from_path(path)?,
            (None, None) => SourceFormat::Csv(CsvDialect::default()),
        };
        for (name, value) in options {
            let format_name = format.name();
            let misplaced = |applies_to: &str| {
                AtlasError::Usage(format!(
                    "option '{name}' applies to {applies_to} sources only, not {format_name}"
                ))
            };
            match (name.as_str(), &mut format) {
                ("delimiter", SourceFormat::Csv(d)) => {
                    d.delimiter = one_character(name, value)?;
                    d.detect_delimiter = false;
                }
                ("header", SourceFormat::Csv(d)) => {
                    d.has_header = crate::convert::parse_bool(value).ok_or_else(|| {
                        AtlasError::Usage(format!(
                            "option header must be true or false, not '{value}'"
                        ))
                    })?;
                }
                ("quote", SourceFormat::Csv(d)) => {
                    d.quote = match value.to_ascii_lowercase().as_str() {
                        "" | "none" => None,
                        _ => Some(one_character(name, value)?),
                    }
                }
                ("escape", SourceFormat::Csv(d)) => {
                    d.escape = match value.to_ascii_lowercase().as_str() {
                        "" | "none" => None,
                        _ => Some(one_character(name, value)?),
                    }
                }
                ("comment", SourceFormat::Csv(d)) => {
                    d.comment = match value.to_ascii_lowercase().as_str() {
                        "" | "none" => None,
                        _ => Some(one_character(name, value)?),
                    }
                }
                ("null", SourceFormat::Csv(d)) => d.null = Some(value.clone()),
                ("encoding", SourceFormat::Csv(d)) => {
                    let encoding = csv::encoding_for(value).ok_or_else(|| {
                        AtlasError::Usage(format!(
                            "unknown encoding '{value}': expected a name such as utf-8, latin1, \
                             windows-1252, iso-8859-15, utf-16le, shift_jis"
                        ))
                    })?;
                    d.encoding =
                        (encoding != encoding_rs::UTF_8).then(|| encoding.name().to_string());
                }
                ("sheet", SourceFormat::Xlsx { sheet }) => *sheet = Some(value.clone()),
                ("record", SourceFormat::Xml { record }) => *record = Some(value.clone()),
                (
                    "delimiter" | "header" | "quote" | "escape" | "comment" | "null" | "encoding",
                    _,
                ) => {
                    return Err(misplaced("CSV and TSV"));
                }
                ("sheet", _) => return Err(misplaced("XLSX")),
                ("record", _) => return Err(misplaced("XML")),
                (other, _) => {
                    return Err(AtlasError::Usage(format!(
                        "unknown option '{other}': expected delimiter, header, quote, escape, comment, null, encoding (CSV, TSV), \
                         sheet (XLSX), record (XML), compression, infer, names or binary"
                    )));
                }
            }
        }
        if let SourceFormat::Csv(d) = &format
            && (Some(d.delimiter) == d.quote || Some(d.delimiter) == d.comment)
        {
            return Err(AtlasError::Usage(format!(
                "the delimiter '{}' cannot also be the quote or comment character",
                d.delimiter as char
            )));
        }
        Ok(format)
    }

    /// The format named by `name` (`csv`, `tsv`, `parquet`, `json`,
    /// `ndjson`/`jsonl`, `avro`, `xlsx`, `xml`).
    pub fn from_name(name: &str) -> Result<Self> {
        match name.to_ascii_lowercase().as_str() {
            "csv" => Ok(SourceFormat::Csv(CsvDialect::default())),
            "tsv" | "tab" => Ok(SourceFormat::Csv(CsvDialect::tsv())),
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

    /// The format of a path, by its extension (past a compression
    /// extension: `contacts.csv.gz` is CSV). Exports' delimited text that
    /// names no format (`.txt`, `.dat`) is CSV whose delimiter the file's
    /// first records tell; `.psv` is separated by `|`.
    pub fn from_path(path: &Path) -> Result<Self> {
        let (_, path) = Compression::of_path(path);
        let ext = path
            .extension()
            .and_then(|e| e.to_str())
            .unwrap_or_default();
        match ext.to_ascii_lowercase().as_str() {
            "txt" | "dat" => return Ok(SourceFormat::Csv(CsvDialect::default())),
            "psv" => {
                return Ok(SourceFormat::Csv(CsvDialect {
                    delimiter: b'|',
                    detect_delimiter: false,
                    ..CsvDialect::default()
                }));
            }
            _ => {}
        }
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
            SourceFormat::Csv(d) if d.delimiter == b'\t' => "tsv",
            SourceFormat::Csv(_) => "csv",
            SourceFormat::Parquet => "parquet",
            SourceFormat::NdJson => "ndjson",
            SourceFormat::Json => "json",
            SourceFormat::Avro => "avro",
            SourceFormat::Xlsx { .. } => "xlsx",
            SourceFormat::Xml { .. } => "xml",
        }
    }

    /// Whether a compressed file of this format can be read.
    fn decompresses(&self) -> bool {
        matches!(
            self,
            SourceFormat::Csv(_) | SourceFormat::Json | SourceFormat::NdJson
        )
    }

    /// Whether values arrive as text (and so column types are inferred from
    /// the values when a table is created).
    fn is_text(&self) -> bool {
        matches!(
            self,
            SourceFormat::Csv(_)
                | SourceFormat::Json
                | SourceFormat::NdJson
                | SourceFormat::Xlsx { .. }
                | SourceFormat::Xml { .. }
        )
    }
}

/// SHA-256 of the bytes of the file at `path` (`display`: its name in
/// messages), as hex.
pub async fn sha256_of(path: PathBuf, display: String) -> Result<String> {
    tokio::task::spawn_blocking(move || {
        let mut file = std::fs::File::open(&path).map_err(|e| AtlasError::io(&display, e))?;
        let mut hasher = Sha256::new();
        let mut buf = vec![0u8; 1 << 20];
        loop {
            let n = file
                .read(&mut buf)
                .map_err(|e| AtlasError::io(&display, e))?;
            if n == 0 {
                break;
            }
            hasher.update(&buf[..n]);
        }
        Ok(hex::encode(hasher.finalize()))
    })
    .await
    .map_err(|e| AtlasError::Usage(format!("hashing the source failed: {e}")))?
}

/// A local source file.
#[derive(Debug, Clone)]
pub struct FileSource {
    path: PathBuf,
    format: SourceFormat,
    compression: Compression,
    /// The name reports use (the URL of a staged remote file), if not the path.
    name: Option<String>,
    /// Where the reader counts the bytes it reads, where it can (CSV, TSV).
    progress: ReadProgress,
    /// Of a staged remote object: its hash, taken while staging.
    staged_sha256: Option<String>,
    /// Of a staged remote object: where another process fetches it.
    origin: Option<ObjectOrigin>,
}

impl FileSource {
    /// A source at `path`, in `format` or the format its extension names,
    /// compressed as `compression` says or as its extension names.
    pub fn new(
        path: impl Into<PathBuf>,
        format: Option<SourceFormat>,
        compression: Option<Compression>,
    ) -> Result<Self> {
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
        let compression = compression.unwrap_or_else(|| Compression::of_path(&path).0);
        let format = match format {
            Some(f) => f,
            None => SourceFormat::from_path(&path)?,
        };
        if compression != Compression::None && !format.decompresses() {
            return Err(AtlasError::Usage(format!(
                "'{}': a {compression}-compressed {} file cannot be read (compressed sources are CSV, TSV, JSON and NDJSON)",
                path.display(),
                format.name()
            )));
        }
        Ok(Self {
            path,
            format,
            compression,
            name: None,
            progress: ReadProgress::default(),
            staged_sha256: None,
            origin: None,
        })
    }

    /// The file is `located`'s local copy: named as it, its hash the one
    /// taken while it was staged, its origin the object it was fetched from.
    pub fn located(mut self, located: &LocatedFile) -> Self {
        self.name = Some(located.name.clone());
        self.staged_sha256 = located.sha256.clone();
        self.origin = located.origin.clone();
        self
    }

    /// Where another process fetches this file (a staged remote object).
    pub fn origin(&self) -> Option<&ObjectOrigin> {
        self.origin.as_ref()
    }

    /// The file whose hash the task reading it checks again (its absolute
    /// path): a local file. `None` for a staged object, whose reader fetches
    /// it by its origin and checks the hash itself (CSV, TSV, Parquet, Avro)
    /// or whose rows were read whole when the import was planned (JSON,
    /// Excel, XML).
    pub fn path_to_recheck(&self) -> Option<PathBuf> {
        self.origin
            .is_none()
            .then(|| std::path::absolute(&self.path).unwrap_or_else(|_| self.path.clone()))
    }

    /// Counts the bytes read from the file into `counter` (CSV and TSV
    /// sources); whether it will is [`FileSource::counts_bytes`].
    pub fn with_progress(mut self, counter: Arc<std::sync::atomic::AtomicU64>) -> Self {
        self.progress = ReadProgress(Some(counter));
        self
    }

    /// Whether the reader counts the bytes it reads.
    pub fn counts_bytes(&self) -> bool {
        matches!(self.format, SourceFormat::Csv(_))
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

    /// How the file's bytes are compressed.
    pub fn compression(&self) -> Compression {
        self.compression
    }

    /// The path for messages.
    pub fn display_name(&self) -> String {
        match &self.name {
            Some(name) => name.clone(),
            None => self.path.display().to_string(),
        }
    }

    /// SHA-256 of the file's bytes as stored (compressed bytes for a
    /// compressed file), as hex.
    pub async fn sha256(&self) -> Result<String> {
        if let Some(sha256) = &self.staged_sha256 {
            return Ok(sha256.clone());
        }
        sha256_of(self.path.clone(), self.display_name()).await
    }

    /// The source as a DataFrame. CSV is read by atlas-import's own strict
    /// reader ([`csv::CsvSourceExec`]) as text with each record's line, and
    /// converted later by [`crate::physical::CoerceExec`], which names the
    /// line and column of a bad value.
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
            SourceFormat::Csv(dialect) => {
                let file = {
                    let (path, name, dialect) =
                        (self.path.clone(), self.display_name(), dialect.clone());
                    let compression = self.compression;
                    let progress = self.progress.clone();
                    let origin = self.origin.clone();
                    tokio::task::spawn_blocking(move || {
                        csv::CsvFile::open(path, name, dialect, compression).map(|mut file| {
                            file.progress = progress;
                            file.origin = origin;
                            file
                        })
                    })
                    .await
                    .map_err(|e| AtlasError::Usage(format!("reading the source failed: {e}")))??
                };
                ctx.read_table(std::sync::Arc::new(csv::CsvTable::new(file)))
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
        let read = read.map_err(|e| AtlasError::from_source_read(e, &self.display_name()))?;
        match (self.object_format(), &self.origin) {
            (Some(format), Some(origin)) => {
                // The schema DataFusion's reader gives the staged copy; the
                // scan itself is planned without touching the file.
                let schema = Arc::new(read.schema().as_arrow().clone());
                let file = ObjectFile {
                    path: std::path::absolute(&self.path).unwrap_or_else(|_| self.path.clone()),
                    name: self.display_name(),
                    format,
                    origin: origin.clone(),
                    read_origin: false,
                };
                ctx.read_table(Arc::new(ObjectFileTable::new(file, schema)))
                    .map_err(AtlasError::from_datafusion)
            }
            _ => Ok(read),
        }
    }

    /// The format as DataFusion's own readers know it (Parquet, Avro).
    fn object_format(&self) -> Option<ObjectFormat> {
        match self.format {
            SourceFormat::Parquet => Some(ObjectFormat::Parquet),
            SourceFormat::Avro => Some(ObjectFormat::Avro),
            _ => None,
        }
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
        let compression = self.compression;
        let records = tokio::task::spawn_blocking(move || match format {
            SourceFormat::NdJson => {
                records::read_json_lines(compression.open(&file, &name)?, &name)
            }
            SourceFormat::Json => {
                let mut bytes = Vec::new();
                compression
                    .open(&file, &name)?
                    .read_to_end(&mut bytes)
                    .map_err(|e| AtlasError::io(&name, e))?;
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
        let reader = self.compression.open(&self.path, &self.display_name())?;
        let mut values = serde_json::Deserializer::from_reader(std::io::BufReader::new(reader))
            .into_iter::<serde::de::IgnoredAny>();
        let first = values.next();
        Ok(matches!(first, Some(Ok(_))) && matches!(values.next(), Some(Ok(_))))
    }

    /// Column specs for creating a missing table. Typed formats give their own
    /// types; the types of text formats are inferred from every value of the
    /// file under `inference`, so that no value changes its meaning.
    pub async fn infer_columns(
        &self,
        df: DataFrame,
        inference: Inference,
    ) -> Result<Vec<ColumnSpec>> {
        let schema = df.schema().as_arrow().clone();
        if !self.format.is_text() {
            return Ok(columns_from_schema(&schema));
        }
        let data: Vec<usize> = (0..schema.fields().len())
            .filter(|&i| !is_reader_column(schema.field(i).name()))
            .collect();
        let mut inferred = vec![TypeInference::default(); data.len()];
        if inference == Inference::Strict {
            let mut stream = df
                .execute_stream()
                .await
                .map_err(|e| AtlasError::from_source_read(e, &self.display_name()))?;
            while let Some(batch) = stream
                .try_next()
                .await
                .map_err(|e| AtlasError::from_source_read(e, &self.display_name()))?
            {
                for (types, &i) in inferred.iter_mut().zip(&data) {
                    types.observe(batch.column(i).as_string::<i32>());
                }
            }
        }
        Ok(data
            .iter()
            .zip(inferred)
            .map(|(&i, types)| ColumnSpec {
                name: schema.field(i).name().clone(),
                data_type: types.data_type(),
                sql_type: None,
            })
            .collect())
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
/// `Utf8`, bytes `Binary`; nested types stay (a new table holds them as
/// JSON); exotic types are stored as text.
fn storable_type(data_type: &DataType) -> DataType {
    match data_type {
        DataType::Utf8View | DataType::LargeUtf8 | DataType::Utf8 => DataType::Utf8,
        DataType::Binary
        | DataType::LargeBinary
        | DataType::BinaryView
        | DataType::FixedSizeBinary(_) => DataType::Binary,
        dt if crate::convert::is_nested(dt) => dt.clone(),
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

    /// A local file is checked again where it is read; a staged object of
    /// any format is not (its reader fetches and checks it, or its rows were
    /// read when planned).
    #[test]
    fn only_local_files_are_checked_again_by_path() {
        let dir = std::env::temp_dir().join(format!("atlas-recheck-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let located = |name: &str| {
            let local = dir.join(name);
            std::fs::write(&local, "a\n1\n").unwrap();
            LocatedFile {
                name: format!("s3://bucket/{name}"),
                local,
                sha256: Some("00".into()),
                origin: Some(ObjectOrigin {
                    url: format!("s3://bucket/{name}"),
                    sha256: "00".into(),
                }),
            }
        };
        for name in ["a.csv", "a.tsv", "a.parquet", "a.json"] {
            let file = located(name);
            let source = FileSource::new(&file.local, None, None)
                .unwrap()
                .located(&file);
            assert_eq!(source.path_to_recheck(), None, "{name}");
            let local = FileSource::new(&file.local, None, None).unwrap();
            assert_eq!(local.path_to_recheck(), Some(file.local.clone()), "{name}");
        }
        std::fs::remove_dir_all(&dir).unwrap();
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
            SourceFormat::Csv(CsvDialect {
                has_header: false,
                ..CsvDialect::tsv()
            })
        );
        let unknown = SourceFormat::with_options(
            None,
            Some(Path::new("a.txt")),
            &opts(&[("delimiter", ";")]),
        )
        .unwrap();
        assert_eq!(
            unknown,
            SourceFormat::Csv(CsvDialect {
                delimiter: b';',
                detect_delimiter: false,
                ..CsvDialect::default()
            })
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
        for (name, delimiter, detect) in [
            ("export.TXT", b',', true),
            ("export.dat.gz", b',', true),
            ("export.psv", b'|', false),
        ] {
            let Ok(SourceFormat::Csv(dialect)) = SourceFormat::from_path(Path::new(name)) else {
                panic!("{name} is delimited text");
            };
            assert_eq!(
                (dialect.delimiter, dialect.detect_delimiter),
                (delimiter, detect),
                "{name}"
            );
        }
    }
}
