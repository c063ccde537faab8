//! `ON BAD VALUE REJECT TO '<file>'`: the rows whose values do not fit their
//! column (and malformed records), written to a CSV file with their original
//! fields, the source row number, the physical line, the column and the reason.

use std::fs::File;
use std::io::BufWriter;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::util::display::{ArrayFormatter, FormatOptions};

use crate::error::{AtlasError, Result};

/// One rejected row: where it came from and why.
#[derive(Debug, Clone)]
pub struct Rejection {
    /// Index of the row in its batch.
    pub index: usize,
    /// 1-based source row number.
    pub row: u64,
    /// 1-based physical line of the record, when the reader knows it.
    pub line: Option<u64>,
    /// The target column whose value did not fit.
    pub column: String,
    /// Why.
    pub reason: String,
}

/// The reject file of one import, shared by the partitions that write to it.
#[derive(Debug)]
pub struct RejectWriter {
    path: PathBuf,
    /// Opened by [`RejectWriter::open`] when the import starts (never by a
    /// plan that is only explained).
    inner: Mutex<Option<RejectFile>>,
}

#[derive(Debug)]
struct RejectFile {
    writer: csv::Writer<BufWriter<File>>,
    header_written: bool,
}

impl RejectWriter {
    /// A reject file at `path`, not created yet.
    pub fn new(path: impl AsRef<Path>) -> Self {
        Self {
            path: path.as_ref().to_path_buf(),
            inner: Mutex::new(None),
        }
    }

    /// Creates (truncates) the file, so that a path that cannot be written
    /// fails the import before any data moves. Idempotent.
    pub fn open(&self) -> Result<()> {
        let mut inner = self.inner.lock().expect("reject file lock");
        if inner.is_none() {
            let file = File::create(&self.path)
                .map_err(|e| AtlasError::io(format!("reject file {}", self.path.display()), e))?;
            *inner = Some(RejectFile {
                writer: csv::Writer::from_writer(BufWriter::new(file)),
                header_written: false,
            });
        }
        Ok(())
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn io_error(&self, e: impl std::fmt::Display) -> AtlasError {
        AtlasError::io(
            format!("reject file {}", self.path.display()),
            std::io::Error::other(e.to_string()),
        )
    }

    fn header(&self, file: &mut RejectFile, source: &RecordBatch) -> Result<()> {
        if !file.header_written {
            let mut names: Vec<String> = source
                .schema()
                .fields()
                .iter()
                .map(|f| f.name().clone())
                .collect();
            names.extend(["source_row", "source_line", "column", "reason"].map(String::from));
            file.writer
                .write_record(&names)
                .map_err(|e| self.io_error(e))?;
            file.header_written = true;
        }
        Ok(())
    }

    /// Writes the rejected rows of `source` (the batch as read, before any
    /// conversion) with their reasons.
    pub fn write(&self, source: &RecordBatch, rejected: &[Rejection]) -> Result<()> {
        let options = FormatOptions::default();
        let formatters = source
            .columns()
            .iter()
            .map(|c| ArrayFormatter::try_new(c.as_ref(), &options))
            .collect::<std::result::Result<Vec<_>, _>>()
            .map_err(|e| self.io_error(e))?;
        self.open()?;
        let mut inner = self.inner.lock().expect("reject file lock");
        let file = inner.as_mut().expect("opened above");
        self.header(file, source)?;
        for r in rejected {
            let mut record: Vec<String> = formatters
                .iter()
                .enumerate()
                .map(|(c, f)| {
                    if source.column(c).is_valid(r.index) {
                        f.value(r.index).to_string()
                    } else {
                        String::new()
                    }
                })
                .collect();
            record.extend([
                r.row.to_string(),
                r.line.map(|l| l.to_string()).unwrap_or_default(),
                r.column.clone(),
                r.reason.clone(),
            ]);
            file.writer
                .write_record(&record)
                .map_err(|e| self.io_error(e))?;
        }
        Ok(())
    }

    /// Flushes the file; writes the header alone when nothing was rejected.
    pub fn finish(&self, source_schema: &datafusion::arrow::datatypes::SchemaRef) -> Result<()> {
        self.open()?;
        let mut inner = self.inner.lock().expect("reject file lock");
        let file = inner.as_mut().expect("opened above");
        if !file.header_written {
            self.header(file, &RecordBatch::new_empty(source_schema.clone()))?;
        }
        file.writer.flush().map_err(|e| self.io_error(e))
    }
}
