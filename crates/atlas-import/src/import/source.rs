//! The import's source: the files located (remote ones staged), opened as
//! a DataFrame, with `IMPORT INTO t (columns)` and `MAP` applied.

use std::sync::Arc;

use datafusion::common::Column;
use datafusion::logical_expr::Expr;
use datafusion::prelude::DataFrame;

use super::{ImportBuilder, SourceSpec};
use crate::error::{AtlasError, Result};
use crate::schema::is_reader_column;
use crate::source::{FileSource, LocatedFiles, locate};

impl ImportBuilder {
    /// Finds the files of a file source (a path, a URL, a glob), staging
    /// remote ones; `None` for a DataFrame source.
    pub(super) async fn locate(&self) -> Result<Option<SourceFiles>> {
        let SourceSpec::File { path } = &self.source else {
            return Ok(None);
        };
        let staged = Arc::new(locate(&path.to_string_lossy()).await?);
        let bytes_read = &self.metrics.bytes_read;
        let files = staged
            .files
            .iter()
            .map(|f| {
                Ok(FileSource::new(
                    &f.local,
                    self.options.source.format.clone(),
                    self.options.source.compression,
                )?
                .located(f)
                .with_progress(Arc::clone(bytes_read)))
            })
            .collect::<Result<Vec<_>>>()?;
        // What a progress display measures the reading against.
        let size = |f: &FileSource| std::fs::metadata(f.path()).map_or(0, |m| m.len());
        let source_bytes = if files.iter().all(FileSource::counts_bytes) {
            files.iter().map(size).sum()
        } else {
            0
        };
        bytes_read.store(0, std::sync::atomic::Ordering::Relaxed);
        self.metrics
            .source_bytes
            .store(source_bytes, std::sync::atomic::Ordering::Relaxed);
        self.metrics
            .files
            .store(files.len() as u64, std::sync::atomic::Ordering::Relaxed);
        Ok(Some(SourceFiles { files, staged }))
    }

    /// Reads the source (several files one after another, in name order) and
    /// applies the column list and the MAP expressions.
    pub(super) async fn open_source(&self, files: Option<SourceFiles>) -> Result<OpenedSource> {
        let (df, name, files, staged) = match (&self.source, files) {
            (SourceSpec::File { path, .. }, Some(SourceFiles { files, staged })) => {
                let session = self.session();
                let mut frames = Vec::with_capacity(files.len());
                for file in &files {
                    frames.push(file.read(&session).await?);
                }
                let name = match files.as_slice() {
                    [one] => one.display_name(),
                    many => format!(
                        "{} ({} files)",
                        crate::secrets::mask_password(&path.display().to_string()),
                        many.len()
                    ),
                };
                let df = union_in_order(frames, &files)?;
                (df, name, files, Some(staged))
            }
            (SourceSpec::DataFrame { df, name }, _) => {
                ((**df).clone(), name.clone(), Vec::new(), None)
            }
            (SourceSpec::File { .. }, None) => {
                return Err(AtlasError::Usage(
                    "the source files were not located".into(),
                ));
            }
        };
        let df = apply_columns(df, &self.options.columns, &name)?;
        let df = apply_map(df, &self.options.map, self.options.only_mapped)?;
        Ok(OpenedSource {
            df,
            name,
            files,
            _staged: staged,
        })
    }
}

/// The source opened for one run: its rows, its name, the files behind it
/// (one per file of a glob, none for a DataFrame), and the staging directory
/// of remote files, kept until the run ends.
pub(super) struct OpenedSource {
    pub(super) df: DataFrame,
    pub(super) name: String,
    pub(super) files: Vec<FileSource>,
    pub(super) _staged: Option<Arc<LocatedFiles>>,
}

/// The files of a file source, located (remote ones staged) but not yet read.
#[derive(Clone)]
pub(super) struct SourceFiles {
    pub(super) files: Vec<FileSource>,
    pub(super) staged: Arc<LocatedFiles>,
}

/// Renames the source's columns positionally to `columns`.
pub(super) fn apply_columns(df: DataFrame, columns: &[String], source: &str) -> Result<DataFrame> {
    if columns.is_empty() {
        return Ok(df);
    }
    let (reader, fields): (Vec<String>, Vec<String>) = df
        .schema()
        .fields()
        .iter()
        .map(|f| f.name().clone())
        .partition(|name| is_reader_column(name));
    if fields.len() != columns.len() {
        return Err(AtlasError::Usage(format!(
            "the column list names {} columns ({}), but {source} has {} ({})",
            columns.len(),
            columns.join(", "),
            fields.len(),
            fields.join(", ")
        )));
    }
    let exprs: Vec<Expr> = fields
        .iter()
        .zip(columns)
        .map(|(field, column)| Expr::Column(Column::from_name(field)).alias(column))
        .chain(
            reader
                .iter()
                .map(|name| Expr::Column(Column::from_name(name))),
        )
        .collect();
    df.select(exprs).map_err(AtlasError::from_datafusion)
}

/// Applies `MAP (column = expression, ...)` to the source; unless
/// `only_mapped`, source columns no expression reads pass through.
pub(super) fn apply_map(
    df: DataFrame,
    map: &[(String, String)],
    only_mapped: bool,
) -> Result<DataFrame> {
    if map.is_empty() {
        return Ok(df);
    }
    let mut mapped = Vec::with_capacity(map.len());
    let mut read: std::collections::HashSet<String> = Default::default();
    for (column, sql) in map {
        let expr = df.parse_sql_expr(sql).map_err(|e| {
            AtlasError::Usage(format!(
                "MAP {column} = {sql}: {}",
                AtlasError::from_datafusion(e)
            ))
        })?;
        read.extend(expr.column_refs().into_iter().map(|c| c.name.clone()));
        mapped.push(expr.alias(column));
    }
    let mut exprs: Vec<Expr> = df
        .schema()
        .fields()
        .iter()
        .map(|f| f.name())
        .filter(|name| {
            // The reader's line and record-error columns always go on.
            is_reader_column(name)
                || (!only_mapped && !read.contains(*name) && !map.iter().any(|(c, _)| c == *name))
        })
        .map(|name| Expr::Column(Column::from_name(name)))
        .collect();
    exprs.extend(mapped);
    df.select(exprs).map_err(AtlasError::from_datafusion)
}

/// The rows a source is estimated to hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct RowEstimate {
    pub(super) rows: u64,
    /// Whether the row size was measured on the file's own first lines
    /// (uncompressed delimited text, NDJSON) rather than guessed.
    pub(super) sampled: bool,
}

/// The rows the source files hold, estimated from their sizes and the
/// length of the first file's first lines; `None` for a query source.
pub(super) fn estimate_rows(files: &[FileSource]) -> Option<RowEstimate> {
    let first = files.first()?;
    let (bytes_per_row, sampled) = match first.format() {
        crate::source::SourceFormat::Csv(_) | crate::source::SourceFormat::NdJson => {
            let mut sample = vec![0u8; 1 << 16];
            let read = first
                .compression()
                .open(first.path(), &first.display_name())
                .ok()
                .and_then(|mut r| std::io::Read::read(&mut r, &mut sample).ok())
                .unwrap_or(0);
            let lines = sample[..read]
                .iter()
                .filter(|&&b| b == b'\n')
                .count()
                .max(1);
            let per_row = (read / lines).max(1) as u64;
            // A compressed file holds several times its size: a guessed
            // ratio, so its rows are not measured.
            match first.compression() {
                crate::source::Compression::None => (per_row, true),
                _ => ((per_row / 5).max(1), false),
            }
        }
        _ => (40, false),
    };
    let bytes: u64 = files
        .iter()
        .map(|f| std::fs::metadata(f.path()).map_or(0, |m| m.len()))
        .sum();
    Some(RowEstimate {
        rows: bytes / bytes_per_row,
        sampled,
    })
}

/// The rows of several files, one after another: the union keeps one
/// partition per file in this order, which [`crate::physical::CoerceExec`]
/// reads in sequence. The files must have the same columns.
pub(super) fn union_in_order(
    mut frames: Vec<DataFrame>,
    files: &[FileSource],
) -> Result<DataFrame> {
    let first = frames.remove(0);
    let names = |df: &DataFrame| -> Vec<String> {
        df.schema()
            .fields()
            .iter()
            .map(|f| f.name().clone())
            .collect()
    };
    let expected = names(&first);
    let mut union = first;
    for (i, df) in frames.into_iter().enumerate() {
        let columns = names(&df);
        if columns != expected {
            return Err(AtlasError::Source {
                source_name: files[i + 1].display_name(),
                message: format!(
                    "its columns ({}) differ from those of {} ({})",
                    columns.join(", "),
                    files[0].display_name(),
                    expected.join(", ")
                ),
            });
        }
        union = union
            .union(df)
            .map_err(|e| AtlasError::from_source_read(e, &files[i + 1].display_name()))?;
    }
    Ok(union)
}
