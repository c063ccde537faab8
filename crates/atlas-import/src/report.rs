//! What an import reports: live counters shared by the operators while it runs,
//! and the final [`ImportReport`].

use std::collections::BTreeMap;
use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use serde::Serialize;

/// How many duplicate keys a report carries.
pub const DUPLICATE_SAMPLES: usize = 5;

/// Why a row is a duplicate.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum DuplicateKind {
    /// The key is already in the target table.
    Existing,
    /// The key appeared earlier in the import, at `first_row`.
    InFile {
        /// Source row of the first occurrence.
        first_row: u64,
        /// Its physical line, when the reader knows it.
        #[serde(skip_serializing_if = "Option::is_none")]
        first_line: Option<u64>,
    },
}

/// One duplicate row, for messages.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct DuplicateSample {
    /// 1-based source row.
    pub row: u64,
    /// Its 1-based physical line, when the reader knows it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub line: Option<u64>,
    /// `col=value, ...`
    pub key: String,
    /// Why it is a duplicate.
    #[serde(flatten)]
    pub kind: DuplicateKind,
}

/// The duplicates an import found, as reported when it refuses.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct DuplicateReport {
    /// Rows whose key is already in the table.
    pub existing: u64,
    /// Chunks holding at least one of those.
    pub existing_chunks: u64,
    /// Rows whose key repeats an earlier row of the import.
    pub in_file: u64,
    /// Chunks holding at least one of those.
    pub in_file_chunks: u64,
    /// The first few duplicates in source order.
    pub samples: Vec<DuplicateSample>,
    /// Replaces `Duplicate data detected.` (a mapping's `error_message`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

impl fmt::Display for DuplicateReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(
            self.message
                .as_deref()
                .unwrap_or("Duplicate data detected."),
        )?;
        if self.existing > 0 || self.in_file == 0 {
            write!(
                f,
                " {} records overlap with existing data in {} chunk(s).",
                self.existing, self.existing_chunks
            )?;
        }
        if self.in_file > 0 {
            write!(
                f,
                " {} records repeat earlier rows of the file in {} chunk(s).",
                self.in_file, self.in_file_chunks
            )?;
        }
        for sample in &self.samples {
            let at = crate::error::position(sample.line, sample.row);
            match &sample.kind {
                DuplicateKind::Existing => write!(f, "\n  {at}: {} already exists", sample.key)?,
                DuplicateKind::InFile {
                    first_row,
                    first_line,
                } => write!(
                    f,
                    "\n  {at}: {} repeats {}",
                    sample.key,
                    crate::error::position(*first_line, *first_row)
                )?,
            }
        }
        Ok(())
    }
}

/// What an import is doing, for a progress display.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Opening the source and the table.
    Starting,
    /// Hashing the source files (the "already imported" check).
    Hashing,
    /// Reading a text source once to choose a new table's column types.
    InferringTypes,
    /// Reading the keys already in the table.
    ReadingKeys,
    /// Reading, checking and writing rows.
    Writing,
    /// Recording the files and committing.
    Committing,
}

impl Phase {
    const ALL: [Phase; 6] = [
        Phase::Starting,
        Phase::Hashing,
        Phase::InferringTypes,
        Phase::ReadingKeys,
        Phase::Writing,
        Phase::Committing,
    ];

    /// A short label: `hashing`, `reading keys`, ...
    pub fn label(self) -> &'static str {
        match self {
            Phase::Starting => "starting",
            Phase::Hashing => "hashing",
            Phase::InferringTypes => "typing",
            Phase::ReadingKeys => "reading keys",
            Phase::Writing => "importing",
            Phase::Committing => "committing",
        }
    }
}

/// Live counters of one import, shared by its operators and read by progress
/// displays. All counts are of source rows.
#[derive(Debug, Default)]
pub struct ImportMetrics {
    /// Rows read from the source and coerced.
    pub rows_read: AtomicU64,
    /// Set once the source is exhausted.
    pub source_done: AtomicBool,
    /// Keys loaded from the target table.
    pub existing_keys: AtomicU64,
    /// Rows that passed the check and were handed to the sink.
    pub rows_checked: AtomicU64,
    /// Rows written.
    pub inserted: AtomicU64,
    /// Rows skipped as duplicates (`ON DUPLICATE SKIP`).
    pub skipped: AtomicU64,
    /// Rows that updated an existing row (`ON DUPLICATE UPDATE`).
    pub updated: AtomicU64,
    /// Rows rejected for bad values (`ON BAD VALUE REJECT`).
    pub rejected: AtomicU64,
    /// Values set to NULL because they did not fit (`ON BAD VALUE NULL`).
    pub nulled: AtomicU64,
    /// Chunks written.
    pub chunks_written: AtomicU64,
    /// Nanoseconds spent in the check.
    pub check_nanos: AtomicU64,
    /// Nanoseconds spent writing.
    pub write_nanos: AtomicU64,
    /// Blank lines the reader skipped (files of more than one column).
    pub blank_lines: AtomicU64,
    /// Comment lines the reader skipped.
    pub comment_lines: AtomicU64,
    /// Bytes of the source files, where their reader counts what it reads
    /// (CSV, TSV); 0 where that is not known.
    pub source_bytes: AtomicU64,
    /// Bytes of the source files read so far, counted by the reader.
    pub bytes_read: Arc<AtomicU64>,
    /// Files of the source (more than one for a glob).
    pub files: AtomicU64,
    phase: AtomicU8,
    any_duplicate: AtomicBool,
    duplicates: Mutex<DuplicateTally>,
    /// Where rows are in their files, for messages.
    lines: Mutex<LineMap>,
    /// The first source row of each file of a multi-file source, in order.
    file_starts: Mutex<Vec<u64>>,
}

/// The physical line of each source row, kept compactly: a breakpoint
/// wherever the difference between line and row changes (a multi-line record,
/// a blank line, the next file), so a plain file costs one entry.
#[derive(Debug, Default)]
struct LineMap {
    /// (first row, file, line minus row from that row on), by row.
    breakpoints: Vec<(u64, usize, i64)>,
}

impl LineMap {
    fn record(&mut self, first_row: u64, file: usize, lines: &[u64]) {
        for (i, &line) in lines.iter().enumerate() {
            let row = first_row + i as u64;
            let offset = line as i64 - row as i64;
            match self.breakpoints.last() {
                Some(&(_, f, o)) if f == file && o == offset => {}
                _ => self.breakpoints.push((row, file, offset)),
            }
        }
    }

    fn line(&self, row: u64) -> Option<u64> {
        let i = self
            .breakpoints
            .partition_point(|&(start, _, _)| start <= row);
        let (_, _, offset) = *self.breakpoints.get(i.checked_sub(1)?)?;
        u64::try_from(row as i64 + offset).ok()
    }
}

/// The duplicates an import found so far: counts, per chunk, and the first
/// few as samples.
#[derive(Debug, Default, Clone, serde::Serialize, serde::Deserialize)]
pub struct DuplicateTally {
    existing: u64,
    in_file: u64,
    /// chunk index -> (existing, in file)
    chunks: BTreeMap<u64, (u64, u64)>,
    samples: Vec<DuplicateSample>,
    /// Samples whose key the check could not keep (rows that went on before
    /// the table's keys were known): source row -> the key's fingerprint,
    /// for reading the key from the table ([`ImportMetrics::describe_samples`]).
    #[serde(skip)]
    undescribed: BTreeMap<u64, u128>,
}

/// A sample's key text until the key is read, or where it cannot be.
pub(crate) const KEY_NOT_KEPT: &str = "(key not kept)";

impl ImportMetrics {
    /// Says what the import is doing now.
    pub fn set_phase(&self, phase: Phase) {
        self.phase.store(phase as u8, Ordering::Relaxed);
    }

    /// What the import is doing now.
    pub fn phase(&self) -> Phase {
        Phase::ALL[usize::from(self.phase.load(Ordering::Relaxed)).min(Phase::ALL.len() - 1)]
    }

    /// Files of the source whose rows have begun to arrive.
    pub fn files_started(&self) -> usize {
        self.file_starts.lock().expect("file starts lock").len()
    }

    /// Records duplicates found by one partition in one batch: `described` are
    /// candidates for the report's samples, `counted` are only counted.
    pub fn record_duplicates(
        &self,
        described: &[DuplicateSample],
        counted: &[DuplicateSample],
        chunk_rows: u64,
    ) {
        if described.is_empty() && counted.is_empty() {
            return;
        }
        self.any_duplicate.store(true, Ordering::Relaxed);
        let mut tally = self.duplicates.lock().expect("metrics lock");
        for dup in described.iter().chain(counted) {
            let chunk = (dup.row - 1) / chunk_rows.max(1);
            let entry = tally.chunks.entry(chunk).or_default();
            match dup.kind {
                DuplicateKind::Existing => {
                    entry.0 += 1;
                    tally.existing += 1;
                }
                DuplicateKind::InFile { .. } => {
                    entry.1 += 1;
                    tally.in_file += 1;
                }
            }
        }
        tally.samples.extend(described.iter().cloned());
        tally.samples.sort_by_key(|s| s.row);
        tally.samples.truncate(DUPLICATE_SAMPLES);
    }

    /// Records that the sample of source row `row`, an existing key, was
    /// not described: its key has fingerprint `fingerprint` (record it
    /// before the sample, with [`KEY_NOT_KEPT`] as its key).
    pub(crate) fn record_undescribed(&self, row: u64, fingerprint: u128) {
        let mut tally = self.duplicates.lock().expect("metrics lock");
        tally.undescribed.insert(row, fingerprint);
    }

    /// The fingerprints of the report's samples that are not described yet.
    pub fn undescribed_samples(&self) -> Vec<u128> {
        let tally = self.duplicates.lock().expect("metrics lock");
        tally
            .samples
            .iter()
            .filter_map(|s| tally.undescribed.get(&s.row).copied())
            .collect()
    }

    /// Gives the undescribed samples the key texts `texts` holds for their
    /// fingerprints.
    pub fn describe_samples(&self, texts: &std::collections::HashMap<u128, String>) {
        let mut tally = self.duplicates.lock().expect("metrics lock");
        let DuplicateTally {
            samples,
            undescribed,
            ..
        } = &mut *tally;
        for sample in samples {
            if let Some(text) = undescribed.get(&sample.row).and_then(|f| texts.get(f)) {
                sample.key = text.clone();
                undescribed.remove(&sample.row);
            }
        }
    }

    /// `report`'s samples with their lines (and their first occurrences'),
    /// where these counters know them.
    pub fn with_lines(&self, mut report: DuplicateReport) -> DuplicateReport {
        for sample in &mut report.samples {
            sample.line = sample.line.or_else(|| self.line_of(sample.row));
            if let DuplicateKind::InFile {
                first_row,
                first_line,
            } = &mut sample.kind
            {
                *first_line = first_line.or_else(|| self.line_of(*first_row));
            }
        }
        report
    }

    /// The duplicates recorded so far, to carry to another process (a
    /// distributed import's check partitions to its write).
    pub fn duplicate_tally(&self) -> DuplicateTally {
        self.duplicates.lock().expect("metrics lock").clone()
    }

    /// Adds duplicates another process recorded (see [`Self::duplicate_tally`]):
    /// the counts and chunks add up, the samples stay the first few by row.
    pub fn merge_duplicates(&self, other: &DuplicateTally) {
        if other.existing == 0 && other.in_file == 0 {
            return;
        }
        self.any_duplicate.store(true, Ordering::Relaxed);
        let mut tally = self.duplicates.lock().expect("metrics lock");
        tally.existing += other.existing;
        tally.in_file += other.in_file;
        for (chunk, (existing, in_file)) in &other.chunks {
            let entry = tally.chunks.entry(*chunk).or_default();
            entry.0 += existing;
            entry.1 += in_file;
        }
        tally.samples.extend(other.samples.iter().cloned());
        tally.samples.sort_by_key(|s| s.row);
        tally.samples.truncate(DUPLICATE_SAMPLES);
    }

    /// Records that file `file` of the source starts at source row `start`.
    pub fn start_file(&self, file: usize, start: u64) {
        let mut starts = self.file_starts.lock().expect("metrics lock");
        if starts.len() <= file {
            starts.resize(file + 1, start);
        }
        starts[file] = start;
    }

    /// Adds each of `rows` (source row numbers) to the count of the file it
    /// came from: `counts[i]` is file `i` in source order.
    pub fn count_by_file(&self, rows: &[u64], counts: &mut [u64]) {
        let starts = self.file_starts.lock().expect("metrics lock");
        let last = counts.len().saturating_sub(1);
        for &row in rows {
            let file = starts
                .partition_point(|&start| start <= row)
                .saturating_sub(1);
            counts[file.min(last)] += 1;
        }
    }

    /// The file (index in source order) of source row `row`, and the row's
    /// 1-based number within that file.
    pub fn locate(&self, row: u64) -> (usize, u64) {
        let starts = self.file_starts.lock().expect("metrics lock");
        let file = starts
            .partition_point(|&start| start <= row)
            .saturating_sub(1);
        let start = starts.get(file).copied().unwrap_or(1);
        (file, row + 1 - start.min(row + 1))
    }

    /// Records the physical lines of the rows from `first_row` on, all of
    /// file `file` (0 for a single file).
    pub fn record_lines(&self, first_row: u64, file: usize, lines: &[u64]) {
        self.lines
            .lock()
            .expect("metrics lock")
            .record(first_row, file, lines);
    }

    /// The physical line of source row `row`, when the reader gave it.
    pub fn line_of(&self, row: u64) -> Option<u64> {
        self.lines.lock().expect("metrics lock").line(row)
    }

    /// Whether any duplicate was recorded.
    pub fn has_duplicates(&self) -> bool {
        self.any_duplicate.load(Ordering::Relaxed)
    }

    /// The duplicates recorded so far.
    pub fn duplicate_report(&self) -> DuplicateReport {
        let tally = self.duplicates.lock().expect("metrics lock");
        DuplicateReport {
            existing: tally.existing,
            existing_chunks: tally.chunks.values().filter(|c| c.0 > 0).count() as u64,
            in_file: tally.in_file,
            in_file_chunks: tally.chunks.values().filter(|c| c.1 > 0).count() as u64,
            samples: tally
                .samples
                .iter()
                .map(|s| DuplicateSample {
                    line: self.line_of(s.row),
                    kind: match s.kind {
                        DuplicateKind::InFile { first_row, .. } => DuplicateKind::InFile {
                            first_row,
                            first_line: self.line_of(first_row),
                        },
                        DuplicateKind::Existing => DuplicateKind::Existing,
                    },
                    ..s.clone()
                })
                .collect(),
            message: None,
        }
    }

    /// Duplicates per chunk (1-based chunk number, count), for the log.
    pub fn duplicates_per_chunk(&self) -> Vec<(u64, u64)> {
        let tally = self.duplicates.lock().expect("metrics lock");
        tally
            .chunks
            .iter()
            .map(|(chunk, (e, f))| (chunk + 1, e + f))
            .collect()
    }

    /// The counts of an import that ended as `status`, as reports and
    /// `import_history` give them: rows count as inserted or updated only
    /// when it committed, and none at all when the file was imported before
    /// (an import that learns it late, having read and checked some rows,
    /// answers as one that read nothing).
    pub fn counts(&self, status: ImportStatus) -> ImportCounts {
        if matches!(
            status,
            ImportStatus::SkippedFile | ImportStatus::RefusedFile
        ) {
            return ImportCounts::default();
        }
        let duplicates = self.duplicate_report();
        let written = |counter: &AtomicU64| {
            if status.committed() {
                Self::get(counter)
            } else {
                0
            }
        };
        ImportCounts {
            rows_read: Self::get(&self.rows_read),
            inserted: written(&self.inserted),
            updated: written(&self.updated),
            skipped: Self::get(&self.skipped),
            duplicates_existing: duplicates.existing,
            duplicates_in_file: duplicates.in_file,
            rejected: Self::get(&self.rejected),
            nulled_values: Self::get(&self.nulled),
            blank_lines: Self::get(&self.blank_lines),
            comment_lines: Self::get(&self.comment_lines),
        }
    }

    /// The report of an import that ended as `status`, from these counters
    /// (no file hash, no table created, no error: set those on the result).
    pub fn report(&self, status: ImportStatus, context: &ReportContext<'_>) -> ImportReport {
        let counts = self.counts(status);
        ImportReport {
            status,
            table: context.table.clone(),
            source: context.source.to_string(),
            counts,
            chunks: counts.rows_read.div_ceil(context.chunk_rows.max(1) as u64),
            partitions: context.partitions,
            file_hash: None,
            elapsed_ms: context.started.elapsed().as_millis() as u64,
            created_table: false,
            error: None,
        }
    }

    /// Reads a counter.
    pub fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }
}

impl std::ops::Deref for ImportReport {
    type Target = ImportCounts;

    fn deref(&self) -> &ImportCounts {
        &self.counts
    }
}

/// How an import ended, as reports and `import_history` name it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ImportStatus {
    /// The rows are in the table.
    Committed,
    /// The file was already imported and the policy was to skip it: nothing
    /// read or written.
    SkippedFile,
    /// Refused for duplicates (`ON DUPLICATE ERROR`): nothing written.
    RefusedDuplicates,
    /// Refused because the file was already imported: nothing written.
    RefusedFile,
    /// Any other failure: nothing written.
    Failed,
}

impl ImportStatus {
    /// The name reports, `--json` and `import_history` use.
    pub fn as_str(self) -> &'static str {
        match self {
            ImportStatus::Committed => "committed",
            ImportStatus::SkippedFile => "skipped_file",
            ImportStatus::RefusedDuplicates => "refused_duplicates",
            ImportStatus::RefusedFile => "refused_file",
            ImportStatus::Failed => "failed",
        }
    }

    /// The status of an import that failed with `error`.
    pub fn of_error(error: &crate::error::AtlasError) -> Self {
        match error {
            crate::error::AtlasError::Duplicates(_) => ImportStatus::RefusedDuplicates,
            crate::error::AtlasError::AlreadyImported { .. } => ImportStatus::RefusedFile,
            _ => ImportStatus::Failed,
        }
    }

    /// Whether the import's rows are in the table: only then do its rows
    /// count as inserted or updated.
    pub fn committed(self) -> bool {
        self == ImportStatus::Committed
    }
}

impl fmt::Display for ImportStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The counts of an import at its end, taken once from its live counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct ImportCounts {
    /// Rows read from the source.
    pub rows_read: u64,
    /// Rows inserted (0 unless committed).
    pub inserted: u64,
    /// Existing rows updated (0 unless committed).
    pub updated: u64,
    /// Rows skipped as duplicates.
    pub skipped: u64,
    /// Rows whose key was already in the table.
    pub duplicates_existing: u64,
    /// Rows whose key repeated an earlier row of the import.
    pub duplicates_in_file: u64,
    /// Rows rejected for bad values.
    pub rejected: u64,
    /// Values set to NULL under `ON BAD VALUE NULL`.
    pub nulled_values: u64,
    /// Blank lines skipped.
    pub blank_lines: u64,
    /// Comment lines skipped.
    pub comment_lines: u64,
}

/// What a report says besides the counters.
#[derive(Debug, Clone)]
pub struct ReportContext<'a> {
    /// The target table.
    pub table: String,
    /// The source, as the report names it.
    pub source: &'a str,
    /// Rows per chunk.
    pub chunk_rows: usize,
    /// Partitions of the duplicate check.
    pub partitions: usize,
    /// When the import started.
    pub started: std::time::Instant,
}

/// The outcome of an import, as `--json` prints it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ImportReport {
    /// How the import ended.
    pub status: ImportStatus,
    /// Target table.
    pub table: String,
    /// Source path or description.
    pub source: String,
    /// What was read, written, skipped and refused (`report.inserted` reads
    /// through to them); in `--json`, fields of the report itself.
    #[serde(flatten)]
    pub counts: ImportCounts,
    /// Source chunks (`ceil(rows_read / chunk_rows)`).
    pub chunks: u64,
    /// Partitions of the duplicate check.
    pub partitions: usize,
    /// SHA-256 of the source bytes, when the source is a file.
    pub file_hash: Option<String>,
    /// Wall time.
    pub elapsed_ms: u64,
    /// Whether the table was created by this import.
    pub created_table: bool,
    /// The error, when the import did not commit.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(row: u64, key: &str) -> DuplicateSample {
        DuplicateSample {
            row,
            line: None,
            key: key.to_string(),
            kind: DuplicateKind::Existing,
        }
    }

    #[test]
    fn undescribed_samples_take_the_keys_read_for_them() {
        let metrics = ImportMetrics::default();
        // Row 9's key was not kept; row 20's neither, but it is no sample.
        metrics.record_undescribed(9, 0x99);
        metrics.record_undescribed(20, 0x20);
        let samples: Vec<DuplicateSample> = (2..=6)
            .map(|row| sample(row, "k"))
            .chain([sample(9, KEY_NOT_KEPT)])
            .collect();
        metrics.record_duplicates(&samples, &[sample(20, KEY_NOT_KEPT)], 10);
        metrics.record_duplicates(&[sample(1, "first")], &[], 10);
        // Row 9 is the seventh by row: no longer a sample.
        assert!(metrics.undescribed_samples().is_empty());

        let metrics = ImportMetrics::default();
        metrics.record_undescribed(3, 0x33);
        metrics.record_duplicates(&[sample(1, "a"), sample(3, KEY_NOT_KEPT)], &[], 10);
        assert_eq!(metrics.undescribed_samples(), vec![0x33]);
        metrics.describe_samples(&std::collections::HashMap::from([(0x44, "x".to_string())]));
        assert_eq!(metrics.duplicate_report().samples[1].key, KEY_NOT_KEPT);
        metrics.describe_samples(&std::collections::HashMap::from([(
            0x33,
            "email=\"b\"".to_string(),
        )]));
        let report = metrics.duplicate_report();
        assert_eq!(report.samples[1].key, "email=\"b\"");
        assert!(metrics.undescribed_samples().is_empty());
        assert_eq!(report.existing, 2);
    }
}
