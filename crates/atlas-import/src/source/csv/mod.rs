//! Delimited text sources, read strictly by atlas-import's own reader rather
//! than DataFusion's, because an import must not change a value or lose a
//! record on the way in:
//!
//! - an unquoted empty field is NULL, a quoted `""` is the empty string, and
//!   whitespace is kept (PostgreSQL's `COPY ... CSV` reads them so);
//! - a quote inside an unquoted field, text after a closing quote, or a quote
//!   that is never closed is bad data naming its physical line and column;
//! - a blank line is a record (NULL) in a one-column file, and is counted
//!   when skipped elsewhere;
//! - every record carries its physical line (1-based, the header is line 1,
//!   newlines inside quoted fields counted) for messages.
//!
//! The rows come out as text columns plus two columns the import reads and
//! drops: [`SOURCE_LINE_COLUMN`] and [`RECORD_ERROR_COLUMN`] (why the record is
//! malformed, or NULL), so [`crate::physical::CoerceExec`] can fail or reject a
//! bad record like a bad value.
//!
//! ```text
//! CsvSourceExec (1 partition, blocking reader thread)
//!   file bytes -> decompressor -> CsvParser -> TextBatchBuilder -> batches
//!   +---------+---------+---------------------+----------------------+
//!   | name    | email   | __atlas_source_line | __atlas_record_error |
//!   +---------+---------+---------------------+----------------------+
//! ```

mod decode;
mod exec;
mod parser;

pub(crate) use decode::encoding_for;
pub use exec::{CsvFile, CsvSourceExec, CsvTable};
pub(crate) use parser::CsvParser;

use std::fmt;
use std::sync::Arc;

use datafusion::arrow::array::{ArrayRef, RecordBatch, StringArray, StringBuilder, UInt64Array};
use datafusion::arrow::buffer::{Buffer, NullBuffer, OffsetBuffer, ScalarBuffer};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};

use crate::error::{AtlasError, Result};
use crate::schema::{RECORD_ERROR_COLUMN, SOURCE_LINE_COLUMN};

/// How a delimited text file is written.
#[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct CsvDialect {
    /// Field delimiter (`,`; `\t` for TSV).
    pub delimiter: u8,
    /// Whether the first record names the columns.
    pub has_header: bool,
    /// The quote character; `None`: fields are never quoted.
    pub quote: Option<u8>,
    /// A character that escapes a quote (or itself) inside quoted fields,
    /// e.g. `\`; `None`: quotes are doubled (RFC 4180).
    pub escape: Option<u8>,
    /// Lines starting with this character are comments (skipped, counted).
    pub comment: Option<u8>,
    /// An unquoted field equal to this text is NULL (as the empty one is).
    pub null: Option<String>,
    /// Whether the comma is only the default, which the file's first lines
    /// may overrule ([`CsvDialect::with_delimiter_of`]); false once a
    /// delimiter is given or read off the file.
    #[serde(default)]
    pub detect_delimiter: bool,
    /// The text's encoding where it is not UTF-8 (a WHATWG label's name:
    /// `windows-1252` for `latin1`), decoded as the file is read.
    #[serde(default)]
    pub encoding: Option<String>,
}

impl Default for CsvDialect {
    fn default() -> Self {
        Self {
            delimiter: b',',
            has_header: true,
            quote: Some(b'"'),
            escape: None,
            comment: None,
            null: None,
            detect_delimiter: true,
            encoding: None,
        }
    }
}

impl CsvDialect {
    /// Tab-separated values.
    pub fn tsv() -> Self {
        Self {
            delimiter: b'\t',
            detect_delimiter: false,
            ..Self::default()
        }
    }

    /// `self` with the delimiter the file uses, where none was given: the
    /// one a first line `sep=;` names; else the comma, unless it leaves the
    /// first record one field and exactly one
    /// of `;`, tab and `|` splits each of the first records into the same
    /// number of fields, more than one (a semicolon file whose numbers
    /// have decimal commas is one). `open` opens the file from its start.
    pub(crate) fn with_delimiter_of(
        mut self,
        mut open: impl FnMut() -> Result<Box<dyn std::io::Read + Send>>,
        source_name: &str,
    ) -> Result<Self> {
        if !std::mem::take(&mut self.detect_delimiter) || self.delimiter != b',' {
            return Ok(self);
        }
        let mut shape = |delimiter| -> Result<RecordsShape> {
            let dialect = CsvDialect {
                delimiter,
                ..self.clone()
            };
            Ok(RecordsShape::of(CsvParser::new(
                open()?,
                dialect,
                source_name,
            )))
        };
        let comma = shape(b',')?;
        if let Some(delimiter) = comma.named_delimiter {
            tracing::info!(
                "{source_name}: delimiter '{}' named by the file's first line (sep=)",
                printable(delimiter)
            );
            self.delimiter = delimiter;
            return Ok(self);
        }
        if comma.first_fields != 1 {
            return Ok(self);
        }
        let mut fitting = Vec::new();
        for delimiter in DETECTED_DELIMITERS {
            let found = shape(delimiter)?;
            if found.steady && found.first_fields > 1 {
                fitting.push(delimiter);
            }
        }
        if let [delimiter] = fitting[..] {
            tracing::info!(
                "{source_name}: delimiter '{}' read off the file (no delimiter given, and a comma splits nothing)",
                printable(delimiter)
            );
            self.delimiter = delimiter;
        }
        Ok(self)
    }
}

/// The delimiters a file may turn out to use where none is given.
const DETECTED_DELIMITERS: [u8; 3] = [b';', b'\t', b'|'];

/// Records (not blank) read to see a delimiter's fit.
const DETECTION_RECORDS: usize = 20;

/// How the first records of a file split under one dialect.
struct RecordsShape {
    /// Fields of the first record (0: no record).
    first_fields: usize,
    /// Whether every record read is well-formed with `first_fields` fields.
    steady: bool,
    /// The delimiter a first line `sep=;` names.
    named_delimiter: Option<u8>,
}

impl RecordsShape {
    fn of(mut parser: CsvParser) -> Self {
        let mut shape = RecordsShape {
            first_fields: 0,
            steady: true,
            named_delimiter: None,
        };
        let mut read = 0;
        while read < DETECTION_RECORDS {
            let record = match parser.next_record() {
                Ok(Some(record)) if record.blank => continue,
                Ok(Some(record)) => record,
                Ok(None) => break,
                Err(_) => {
                    shape.steady = false;
                    break;
                }
            };
            if read == 0 {
                shape.first_fields = record.fields.len();
            }
            read += 1;
            if record.problem.is_some() || record.fields.len() != shape.first_fields {
                shape.steady = false;
                break;
            }
        }
        shape.named_delimiter = parser.named_delimiter();
        shape
    }
}

fn printable(b: u8) -> String {
    match b {
        b'\t' => "\\t".to_string(),
        b' '..=b'~' => (b as char).to_string(),
        b => format!("\\x{b:02x}"),
    }
}

impl fmt::Display for CsvDialect {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "delimiter='{}'", printable(self.delimiter))?;
        match self.quote {
            Some(q) => write!(f, ", quote='{}'", printable(q))?,
            None => write!(f, ", quote=none")?,
        }
        if let Some(e) = self.escape {
            write!(f, ", escape='{}'", printable(e))?;
        }
        if let Some(c) = self.comment {
            write!(f, ", comment='{}'", printable(c))?;
        }
        if let Some(n) = &self.null {
            write!(f, ", null='{n}'")?;
        }
        if let Some(e) = &self.encoding {
            write!(f, ", encoding='{e}'")?;
        }
        write!(f, ", header={}", self.has_header)
    }
}

/// The column names of a file, from its first record: the header's names
/// (trimmed, a byte-order mark dropped, an empty one named `column_N`; an
/// empty last one after a delimiter that ends the line, `a,b,`, is no
/// column: see [`trailing_empty_field`]), or `column_1..N` when there is no
/// header.
pub(crate) fn read_column_names(
    parser: &mut CsvParser,
    dialect: &CsvDialect,
    source_name: &str,
) -> Result<Vec<String>> {
    let error = |message: String| AtlasError::Source {
        source_name: source_name.to_string(),
        message,
    };
    let record = loop {
        match parser.next_record()? {
            None => return Err(error("the file is empty: no header and no rows".into())),
            Some(r) if r.blank => continue,
            Some(r) => break r,
        }
    };
    if !dialect.has_header {
        return Ok((0..record.fields.len())
            .map(crate::names::placeholder_column_name)
            .collect());
    }
    if let Some(problem) = record.problem {
        return Err(error(format!(
            "line {}: the header is not valid CSV: {}",
            problem.line, problem.message
        )));
    }
    let line = record.line;
    let width = match trailing_empty_field(record.fields) {
        true if record.fields.len() > 1 => record.fields.len() - 1,
        _ => record.fields.len(),
    };
    let mut names: Vec<String> = Vec::with_capacity(width);
    for i in 0..width {
        let mut raw = Vec::new();
        record.append_field(i, dialect, &mut raw);
        let text = String::from_utf8(raw).map_err(|_| {
            error(format!(
                "line {line}: the name of column {} is not valid UTF-8 (a file in another \
                 encoding names it: --encoding latin1, or OPTIONS (encoding 'latin1'))",
                i + 1
            ))
        })?;
        let name = text.trim_start_matches('\u{feff}').trim();
        if let Some(c) = name.chars().find(|c| c.is_control()) {
            return Err(error(format!(
                "line {line}: the name of column {} contains the control character U+{:04X}; \
                 rename the column in the file (or read it with --no-header)",
                i + 1,
                u32::from(c)
            )));
        }
        let name = if name.is_empty() {
            crate::names::placeholder_column_name(i)
        } else {
            name.to_string()
        };
        if let Some(first) = names.iter().position(|n| *n == name) {
            return Err(error(format!(
                "the header names column '{name}' twice (columns {} and {}); \
                 a file whose first line is data is read with --no-header",
                first + 1,
                i + 1
            )));
        }
        names.push(name);
    }
    Ok(names)
}

/// Whether a record ends with a delimiter: its last field is unquoted and
/// empty. Exports that end every line so (`a,b,`) hold nothing there, so
/// such a field past the header's columns is no value and no error (a
/// quoted `""` or a value there still is one).
fn trailing_empty_field(fields: &[parser::FieldSpan]) -> bool {
    fields
        .last()
        .is_some_and(|last| last.null && last.start == last.end)
}

/// The schema the reader produces: the columns as text, then the two
/// columns the import reads and drops.
pub(crate) fn reader_schema(names: &[String]) -> SchemaRef {
    let mut fields: Vec<Field> = names
        .iter()
        .map(|n| Field::new(n, DataType::Utf8, true))
        .collect();
    fields.push(Field::new(SOURCE_LINE_COLUMN, DataType::UInt64, false));
    fields.push(Field::new(RECORD_ERROR_COLUMN, DataType::Utf8, true));
    Arc::new(Schema::new(fields))
}

/// Text column under construction.
#[derive(Default)]
struct TextColumn {
    values: Vec<u8>,
    offsets: Vec<i32>,
    valid: Vec<bool>,
}

/// Collects records into batches of the reader schema.
pub(crate) struct TextBatchBuilder {
    schema: SchemaRef,
    names: Vec<String>,
    dialect: CsvDialect,
    columns: Vec<TextColumn>,
    lines: Vec<u64>,
    errors: Vec<Option<String>>,
    /// Whether the file has a header (for the field-count message).
    has_header: bool,
}

/// Values bytes of one column in one batch at most (offsets are 32-bit).
const MAX_COLUMN_BYTES: usize = 1 << 30;

impl TextBatchBuilder {
    pub(crate) fn new(names: Vec<String>, dialect: CsvDialect) -> Self {
        let columns = names.iter().map(|_| TextColumn::new()).collect();
        Self {
            schema: reader_schema(&names),
            has_header: dialect.has_header,
            names,
            dialect,
            columns,
            lines: Vec::new(),
            errors: Vec::new(),
        }
    }

    pub(crate) fn rows(&self) -> usize {
        self.lines.len()
    }

    /// Whether a column holds so many bytes that the batch must end now.
    pub(crate) fn is_full_of_bytes(&self) -> bool {
        self.columns
            .iter()
            .any(|c| c.values.len() >= MAX_COLUMN_BYTES)
    }

    fn column_name(&self, field: usize) -> String {
        match self.names.get(field) {
            Some(name) => format!("column '{name}'"),
            None => format!("field {}", field + 1),
        }
    }

    /// Appends a record. A blank line is a record (one NULL) in a one-column
    /// file; elsewhere it is skipped, and `false` says so.
    pub(crate) fn push(&mut self, record: &parser::RecordView<'_>) -> bool {
        if record.blank && self.names.len() != 1 {
            return false;
        }
        let width = self.names.len();
        let mut error = record.problem.map(|p| {
            format!(
                "line {}, {}: {}",
                p.line,
                self.column_name(p.field),
                p.message
            )
        });
        let fields = match trailing_empty_field(record.fields) {
            true if record.fields.len() == width + 1 => width,
            _ => record.fields.len(),
        };
        if error.is_none() && !record.blank && fields != width {
            // One value past a header that ends with a delimiter (`a,b,`):
            // that column has no name, so it is no column.
            let unnamed = self.has_header && fields == width + 1;
            error = Some(format!(
                "line {} has {} field{}, but the {} has {width}{}",
                record.line,
                record.fields.len(),
                if record.fields.len() == 1 { "" } else { "s" },
                if self.has_header {
                    "header"
                } else {
                    "first record"
                },
                if unnamed {
                    " (a value past the header's last name: name its column in the header)"
                } else {
                    ""
                }
            ));
        }
        for (i, column) in self.columns.iter_mut().enumerate() {
            match record.fields.get(i) {
                Some(span) if !span.null => {
                    record.append_field(i, &self.dialect, &mut column.values);
                    column.end_value(true);
                }
                _ => column.end_value(false),
            }
        }
        self.lines.push(record.line);
        self.errors.push(error);
        true
    }

    /// The batch of the records pushed so far.
    pub(crate) fn finish(&mut self) -> Result<RecordBatch> {
        let mut arrays: Vec<ArrayRef> = Vec::with_capacity(self.columns.len() + 2);
        let columns = std::mem::take(&mut self.columns);
        for (i, column) in columns.into_iter().enumerate() {
            let array = match column.into_array() {
                Ok(array) => array,
                Err(column) => self.repair_utf8(i, column),
            };
            arrays.push(Arc::new(array));
        }
        self.columns = self.names.iter().map(|_| TextColumn::new()).collect();
        arrays.push(Arc::new(UInt64Array::from(std::mem::take(&mut self.lines))));
        arrays.push(Arc::new(StringArray::from(std::mem::take(
            &mut self.errors,
        ))));
        RecordBatch::try_new(Arc::clone(&self.schema), arrays).map_err(AtlasError::from)
    }

    /// A column whose bytes are not all UTF-8: the bad values become their
    /// lossy text and their records errors.
    fn repair_utf8(&mut self, index: usize, column: TextColumn) -> StringArray {
        let mut out = StringBuilder::new();
        for row in 0..column.valid.len() {
            if !column.valid[row] {
                out.append_null();
                continue;
            }
            let bytes =
                &column.values[column.offsets[row] as usize..column.offsets[row + 1] as usize];
            match std::str::from_utf8(bytes) {
                Ok(text) => out.append_value(text),
                Err(_) => {
                    out.append_value(String::from_utf8_lossy(bytes));
                    if self.errors[row].is_none() {
                        self.errors[row] = Some(format!(
                            "line {}, {}: the value is not valid UTF-8 (a file in another encoding names it: \
                             --encoding latin1, or OPTIONS (encoding 'latin1'))",
                            self.lines[row],
                            self.column_name(index)
                        ));
                    }
                }
            }
        }
        out.finish()
    }
}

impl TextColumn {
    fn new() -> Self {
        Self {
            values: Vec::new(),
            offsets: vec![0],
            valid: Vec::new(),
        }
    }

    fn end_value(&mut self, valid: bool) {
        self.offsets.push(self.values.len() as i32);
        self.valid.push(valid);
    }

    /// The column as a string array, or itself back when a value is not UTF-8.
    fn into_array(self) -> std::result::Result<StringArray, TextColumn> {
        // Every value must be UTF-8 on its own: the whole is, and no value
        // starts inside a character (on a continuation byte).
        let boundaries_ok = self.offsets.iter().all(|&o| {
            self.values
                .get(o as usize)
                .is_none_or(|&b| !(0x80..0xC0).contains(&b))
        });
        if !boundaries_ok || std::str::from_utf8(&self.values).is_err() {
            return Err(self);
        }
        let nulls = if self.valid.iter().all(|&v| v) {
            None
        } else {
            Some(NullBuffer::from(self.valid))
        };
        let offsets = OffsetBuffer::new(ScalarBuffer::from(self.offsets));
        // SAFETY: the offsets start at 0 and never decrease (each is the
        // length of `values` after a value was appended), and the bytes were
        // checked above to be UTF-8 with every offset on a character boundary.
        Ok(unsafe { StringArray::new_unchecked(offsets, Buffer::from_vec(self.values), nulls) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::array::{Array, AsArray};

    fn delimiter_of(text: &str, dialect: CsvDialect) -> char {
        let detected = dialect
            .with_delimiter_of(
                || Ok(Box::new(std::io::Cursor::new(text.as_bytes().to_vec()))),
                "t",
            )
            .unwrap();
        assert!(!detected.detect_delimiter, "decided once");
        detected.delimiter as char
    }

    #[test]
    fn the_delimiter_is_read_off_a_file_where_a_comma_splits_nothing() {
        let default = CsvDialect::default;
        assert_eq!(delimiter_of("a,b\n1,2\n", default()), ',');
        // Decimal commas do not make a comma file.
        assert_eq!(delimiter_of("a;b;c\n1;2,5;3\n4;5;6\n", default()), ';');
        assert_eq!(delimiter_of("a\tb\n1\t2\n", default()), '\t');
        assert_eq!(delimiter_of("a|b\n\"1|x\"|2\n\n3|4\n", default()), '|');
        // Blank lines before the header are no first record (as for the header).
        assert_eq!(delimiter_of("\n\na;b\n1;2\n", default()), ';');
        // A comma in the header keeps the comma (the other fits too).
        assert_eq!(delimiter_of("a,x;b\n1,2;3\n", default()), ',');
        // One column, or no steady split: the comma stays.
        assert_eq!(delimiter_of("name\nAnn\n", default()), ',');
        assert_eq!(delimiter_of("a;b\n1;2;3\n", default()), ',');
        // Two fit: which one is a guess, so none is made.
        assert_eq!(delimiter_of("a;b|c\n1;2|3\n", default()), ',');
        // Given, never overruled.
        let given = CsvDialect {
            detect_delimiter: false,
            ..default()
        };
        assert_eq!(delimiter_of("a;b\n1;2\n", given), ',');
        assert_eq!(delimiter_of("a;b\n1;2\n", CsvDialect::tsv()), '\t');
    }

    fn batch(text: &[u8], dialect: CsvDialect) -> Result<RecordBatch> {
        let mut parser = CsvParser::new(
            Box::new(std::io::Cursor::new(text.to_vec())),
            dialect.clone(),
            "t",
        );
        let names = read_column_names(&mut parser, &dialect, "t")?;
        let mut builder = TextBatchBuilder::new(names, dialect);
        while let Some(record) = parser.next_record()? {
            builder.push(&record);
        }
        builder.finish()
    }

    #[test]
    fn records_carry_lines_and_errors() {
        let b = batch(b"a,b\n1,\"x\ny\"\n2\n3,\xff\n", CsvDialect::default()).unwrap();
        let lines = b
            .column(2)
            .as_primitive::<datafusion::arrow::datatypes::UInt64Type>();
        assert_eq!(lines.values().to_vec(), vec![2, 4, 5]);
        let errors = b.column(3).as_string::<i32>();
        assert!(errors.is_null(0));
        assert_eq!(errors.value(1), "line 4 has 1 field, but the header has 2");
        assert!(
            errors
                .value(2)
                .starts_with("line 5, column 'b': the value is not valid UTF-8"),
            "{}",
            errors.value(2)
        );
        assert_eq!(b.column(0).as_string::<i32>().value(0), "1");
    }

    #[test]
    fn a_delimiter_ending_every_line_is_no_column() {
        for text in [
            &b"a,b,\n1,x,\n2,,\n"[..],
            b"a,b\n1,x,\n2,\n",
            b"a,b,\n1,x\n2,\n",
        ] {
            let b = batch(text, CsvDialect::default()).unwrap();
            assert_eq!(b.num_columns(), 4, "a, b, the line and the error");
            let errors = b.column(3).as_string::<i32>();
            assert_eq!(errors.null_count(), 2, "{:?}", errors);
            assert_eq!(b.column(1).as_string::<i32>().value(0), "x");
            assert!(b.column(1).is_null(1));
        }
        // A value past the header's columns is still an error, a quoted
        // empty one too.
        let b = batch(b"a,b,\n1,x,y\n1,x,\"\"\n", CsvDialect::default()).unwrap();
        let errors = b.column(3).as_string::<i32>();
        let past = "but the header has 2 (a value past the header's last name: name its column \
                    in the header)";
        assert_eq!(errors.value(0), format!("line 2 has 3 fields, {past}"));
        assert_eq!(errors.value(1), format!("line 3 has 3 fields, {past}"));
        // A one-column file ending its lines with the delimiter.
        let b = batch(b"name,\nann,\n", CsvDialect::default()).unwrap();
        assert_eq!(b.column(0).as_string::<i32>().value(0), "ann");
    }

    #[test]
    fn headers_with_control_characters_are_refused() {
        let err = batch(b"id,na\0me\n1,x\n", CsvDialect::default()).unwrap_err();
        assert!(
            err.to_string()
                .contains("column 2 contains the control character U+0000"),
            "{err}"
        );
        let err = batch(b"", CsvDialect::default()).unwrap_err();
        assert!(err.to_string().contains("empty"), "{err}");
    }

    #[test]
    fn one_column_files_keep_blank_lines_as_nulls() {
        let b = batch(b"name\nann\n\nbob\n", CsvDialect::default()).unwrap();
        let names = b.column(0).as_string::<i32>();
        assert_eq!(b.num_rows(), 3);
        assert!(names.is_null(1));
        assert_eq!(names.value(2), "bob");
    }
}
