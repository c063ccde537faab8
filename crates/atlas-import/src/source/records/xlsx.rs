//! Excel workbooks (`.xlsx`): one sheet (the first, or the one named by
//! `OPTIONS (sheet '...')`), its first row naming the columns.

use std::path::Path;

use calamine::{Data, Reader, Xlsx, open_workbook};

use super::TextRecords;
use crate::error::{AtlasError, Result};

/// The text of a cell, as the sheet shows it: whole numbers without a
/// fraction, dates as `YYYY-MM-DD`, date-times as `YYYY-MM-DD HH:MM:SS`.
fn cell_text(cell: &Data) -> std::result::Result<Option<String>, String> {
    Ok(match cell {
        Data::Empty => None,
        Data::String(s) => Some(s.clone()),
        Data::Int(i) => Some(i.to_string()),
        Data::Float(f) if f.fract() == 0.0 && f.abs() < 1e15 => Some(format!("{}", *f as i64)),
        Data::Float(f) => Some(f.to_string()),
        Data::Bool(b) => Some(b.to_string()),
        Data::DateTime(dt) => {
            let Some(at) = dt.as_datetime() else {
                return Err(format!("date value {} is out of range", dt.as_f64()));
            };
            if at.time() == chrono::NaiveTime::MIN {
                Some(at.date().format("%Y-%m-%d").to_string())
            } else {
                Some(at.format("%Y-%m-%d %H:%M:%S%.f").to_string())
            }
        }
        Data::DateTimeIso(s) | Data::DurationIso(s) => Some(s.clone()),
        Data::Error(e) => return Err(format!("the cell holds the error {e}")),
    })
}

/// A1-style name of a cell (0-based row and column).
fn cell_name(row: u32, column: u32) -> String {
    let mut letters = Vec::new();
    let mut n = column + 1;
    while n > 0 {
        let rem = (n - 1) % 26;
        letters.push(b'A' + rem as u8);
        n = (n - 1) / 26;
    }
    letters.reverse();
    format!("{}{}", String::from_utf8(letters).expect("ASCII"), row + 1)
}

/// Reads one sheet of the workbook at `path` into records.
pub(crate) fn read_xlsx(path: &Path, sheet: Option<&str>, source: &str) -> Result<TextRecords> {
    let error = |message: String| AtlasError::Source {
        source_name: source.to_string(),
        message,
    };
    let mut workbook: Xlsx<_> =
        open_workbook(path).map_err(|e| error(format!("not a readable .xlsx workbook: {e}")))?;
    let names = workbook.sheet_names();
    let sheet_name = match sheet {
        Some(wanted) => names
            .iter()
            .find(|n| n.as_str() == wanted)
            .cloned()
            .ok_or_else(|| {
                error(format!(
                    "the workbook has no sheet '{wanted}' (its sheets: {})",
                    names.join(", ")
                ))
            })?,
        None => names
            .first()
            .cloned()
            .ok_or_else(|| error("the workbook has no sheets".into()))?,
    };
    let range = workbook
        .worksheet_range(&sheet_name)
        .map_err(|e| error(format!("cannot read sheet '{sheet_name}': {e}")))?;
    let (first_row, first_column) = range.start().unwrap_or((0, 0));
    let mut rows = range.rows();
    let Some(header) = rows.next() else {
        return Err(error(format!("sheet '{sheet_name}' is empty")));
    };
    let mut columns: Vec<String> = Vec::with_capacity(header.len());
    for (i, cell) in header.iter().enumerate() {
        let name = cell_text(cell)
            .ok()
            .flatten()
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| crate::names::placeholder_column_name(i));
        if let Some(first) = columns.iter().position(|c| *c == name) {
            return Err(error(format!(
                "the header of sheet '{sheet_name}' names column '{name}' twice (columns {} and {})",
                first + 1,
                i + 1
            )));
        }
        columns.push(name);
    }
    let mut records = TextRecords::with_columns(columns);
    for (r, row) in rows.enumerate() {
        if row.iter().all(|c| matches!(c, Data::Empty)) {
            continue;
        }
        for (c, cell) in row.iter().enumerate() {
            let text = cell_text(cell).map_err(|why| {
                let at = cell_name(first_row + r as u32 + 1, first_column + c as u32);
                error(format!("sheet '{sheet_name}', cell {at}: {why}"))
            })?;
            records.field_at(c, text);
        }
        records.end_record();
    }
    Ok(records)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cell_names() {
        assert_eq!(cell_name(0, 0), "A1");
        assert_eq!(cell_name(6, 1), "B7");
        assert_eq!(cell_name(0, 26), "AA1");
    }
}
