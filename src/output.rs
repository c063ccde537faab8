//! What the CLI prints on stdout: reports (text or JSON), query rows, and
//! the exit code of an error class (decided here, in one place).

use std::io::Write;

use atlas_import::{ErrorClass, ImportReport, ImportStatus};

use crate::terminal::{rate, thousands};

/// `println!` to stdout, except that a reader that has gone (`| head`) is
/// no failure (the output stops; the exit code is still the work's) rather
/// than a panic; another failure to write is told on stderr.
macro_rules! outln {
    ($($arg:tt)*) => {
        $crate::output::write_line(format_args!($($arg)*))
    };
}
pub(crate) use outln;

/// Writes `line` and a newline to stdout (see [`outln`]).
pub fn write_line(line: std::fmt::Arguments<'_>) {
    let mut out = std::io::stdout().lock();
    // Stdout is line-buffered: the newline sends the line, and its error.
    if let Err(e) = writeln!(out, "{line}") {
        stdout_failed(&e);
    }
}

/// A write to stdout failed: a closed pipe is passed over (what was to be
/// done is done, or failed with its own exit code; only the output has no
/// reader), anything else told on stderr.
fn stdout_failed(error: &std::io::Error) {
    if error.kind() != std::io::ErrorKind::BrokenPipe {
        eprintln!("error: cannot write to stdout: {error}");
    }
}

/// Exit codes (docs/ARCHITECTURE.md §3), mapped in one place.
pub fn exit_code(class: ErrorClass) -> u8 {
    match class {
        ErrorClass::Usage => 2,
        ErrorClass::Duplicates => 3,
        ErrorClass::AlreadyImported => 4,
        ErrorClass::BadData => 5,
        ErrorClass::Database => 6,
        ErrorClass::Other => 1,
    }
}

/// The JSON report of a failed import: its status (as `import_history`
/// records it) and, as the exit code does, the error's class.
pub fn print_failed_json(report: &ImportReport, class: ErrorClass) {
    match serde_json::to_value(report) {
        Ok(mut json) => {
            json["error_class"] = class.name().into();
            outln!("{json}");
        }
        Err(e) => eprintln!("error: cannot render the report as JSON: {e}"),
    }
}

pub fn print_json(report: &ImportReport) {
    match serde_json::to_string(report) {
        Ok(line) => outln!("{line}"),
        Err(e) => eprintln!("error: cannot render the report as JSON: {e}"),
    }
}

/// A query's rows as JSON lines, one object per row (NULLs included).
pub fn print_json_rows(batches: &[datafusion::arrow::array::RecordBatch]) {
    let mut out = std::io::stdout().lock();
    let mut writer = arrow_json::WriterBuilder::new()
        .with_explicit_nulls(true)
        .build::<_, arrow_json::writer::LineDelimited>(&mut out);
    let failed = |e: datafusion::arrow::error::ArrowError| match e {
        datafusion::arrow::error::ArrowError::IoError(_, e) => stdout_failed(&e),
        e => eprintln!("error: cannot print the result as JSON: {e}"),
    };
    for batch in batches {
        if let Err(e) = writer.write(batch) {
            failed(e);
            return;
        }
    }
    if let Err(e) = writer.finish() {
        failed(e);
    }
}

pub fn print_report(report: &ImportReport, json: bool) {
    if json {
        print_json(report);
        return;
    }
    if report.status == ImportStatus::SkippedFile {
        outln!(
            "Skipped {}: it was already imported into '{}' (ON DUPLICATE FILE SKIP), nothing written",
            report.source,
            report.table
        );
        return;
    }
    let seconds = report.elapsed_ms as f64 / 1000.0;
    outln!(
        "Imported {} into '{}'{}: {} rows read, {} inserted, {} skipped in {seconds:.1} s ({})",
        report.source,
        report.table,
        if report.created_table {
            " (table created)"
        } else {
            ""
        },
        thousands(report.rows_read),
        thousands(report.inserted),
        thousands(report.skipped),
        rate(report.rows_read, seconds),
    );
    if report.skipped > 0 {
        outln!(
            "  skipped: {} already in the table, {} repeated in the file",
            thousands(report.duplicates_existing),
            thousands(report.duplicates_in_file)
        );
    }
    if report.updated > 0 {
        outln!(
            "  {} rows updated existing rows (ON DUPLICATE UPDATE)",
            thousands(report.updated)
        );
    }
    if report.rejected > 0 {
        outln!(
            "  {} rows rejected for bad values",
            thousands(report.rejected)
        );
    }
    if report.nulled_values > 0 {
        outln!(
            "  {} bad values written as NULL",
            thousands(report.nulled_values)
        );
    }
}
