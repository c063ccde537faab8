//! What a person sees on stderr: the log lines at the chosen verbosity, and
//! on a terminal a progress bar redrawn in place (log lines are printed
//! above it, never through it). Pipes, CI and `--json` get the same lines
//! and no bar or escape codes.

use std::io::{IsTerminal, Write};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use atlas_import::{ImportMetrics, Phase};
use indicatif::{ProgressBar, ProgressStyle};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::MakeWriter;

/// How much is logged: `-q` warnings and errors, the default the phase
/// lines, `-v` every chunk, `-vv` everything. `RUST_LOG` wins over all.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Verbosity {
    pub quiet: bool,
    pub verbose: u8,
}

impl Verbosity {
    fn filter(self) -> EnvFilter {
        if let Ok(filter) = EnvFilter::try_from_default_env() {
            return filter;
        }
        EnvFilter::new(match (self.quiet, self.verbose) {
            (true, _) => "atlas_import=warn",
            (false, 0) => "atlas_import=info",
            (false, 1) => "atlas_import=debug",
            (false, _) => "atlas_import=trace,datafusion=debug",
        })
    }
}

/// Whether stderr is a terminal a bar and colors may be drawn on.
fn stderr_is_terminal() -> bool {
    std::io::stderr().is_terminal()
}

/// Sends log lines to stderr: plain (no time) by default, with the time at
/// `-v`; colored only on a terminal without `NO_COLOR`; above the bar.
pub fn init_logging(verbosity: Verbosity, bar: Option<ProgressBar>) {
    let ansi = stderr_is_terminal() && std::env::var_os("NO_COLOR").is_none();
    let builder = tracing_subscriber::fmt()
        .with_env_filter(verbosity.filter())
        .with_target(false)
        .with_ansi(ansi)
        .with_writer(LogWriter { bar });
    let _ = if verbosity.verbose > 0 {
        builder.try_init()
    } else {
        builder.without_time().try_init()
    };
}

/// The live display of one import: a bar over the source's bytes where the
/// reader counts them (CSV, TSV), else a spinner over rows; the phase, rows,
/// rows per second and time left; for several files, which one.
pub struct Progress {
    bar: ProgressBar,
    ticker: tokio::task::JoinHandle<()>,
}

impl Progress {
    /// A display of `metrics` when stderr is a terminal and nothing asked
    /// for quiet or machine output.
    pub fn start(metrics: &Arc<ImportMetrics>, quiet: bool, json: bool) -> Option<Self> {
        if quiet || json || !stderr_is_terminal() {
            return None;
        }
        let bar = ProgressBar::new_spinner();
        bar.set_style(spinner_style());
        bar.enable_steady_tick(Duration::from_millis(100));
        let ticker = {
            let (bar, metrics) = (bar.clone(), Arc::clone(metrics));
            tokio::spawn(async move {
                let mut phase = metrics.phase();
                let mut phase_started = Instant::now();
                let mut with_bar = false;
                loop {
                    // Each phase reads at its own pace (hashing, typing and
                    // importing each go over the source once).
                    if metrics.phase() != phase {
                        phase = metrics.phase();
                        phase_started = Instant::now();
                        bar.reset_eta();
                    }
                    let total = metrics.source_bytes.load(Ordering::Relaxed);
                    if total > 0 && !with_bar {
                        bar.set_style(bar_style());
                        bar.set_length(total);
                        with_bar = true;
                    }
                    if with_bar {
                        bar.set_position(metrics.bytes_read.load(Ordering::Relaxed).min(total));
                    }
                    bar.set_prefix(phase.label());
                    bar.set_message(status(&metrics, phase, phase_started.elapsed()));
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            })
        };
        Some(Self { bar, ticker })
    }

    /// The bar, for log lines to be printed above it.
    pub fn bar(&self) -> ProgressBar {
        self.bar.clone()
    }

    /// Stops the display and clears its line.
    pub fn finish(self) {
        self.ticker.abort();
        self.bar.finish_and_clear();
    }
}

fn bar_style() -> ProgressStyle {
    ProgressStyle::with_template(
        "{prefix:>12} [{bar:30}] {percent:>3}%  {msg}  {binary_bytes}/{binary_total_bytes}, {eta} left",
    )
    .unwrap_or_else(|_| ProgressStyle::default_bar())
    .progress_chars("=> ")
}

fn spinner_style() -> ProgressStyle {
    ProgressStyle::with_template("{spinner} {prefix:>12} {elapsed}  {msg}")
        .unwrap_or_else(|_| ProgressStyle::default_spinner())
}

/// `1,234,567 rows, 333k rows/s` (over `elapsed`, the time in `phase`)
/// and, for several files, `file 2/5`.
fn status(metrics: &ImportMetrics, phase: Phase, elapsed: Duration) -> String {
    if matches!(
        phase,
        Phase::Starting | Phase::Hashing | Phase::InferringTypes
    ) {
        return String::new();
    }
    let rows = ImportMetrics::get(&metrics.rows_read);
    let mut status = format!(
        "{} rows, {}",
        thousands(rows),
        rate(rows, elapsed.as_secs_f64())
    );
    if phase == Phase::ReadingKeys {
        let keys = ImportMetrics::get(&metrics.existing_keys);
        if keys > 0 {
            status.push_str(&format!(", {} existing keys", thousands(keys)));
        }
    }
    let files = metrics.files.load(Ordering::Relaxed);
    if files > 1 {
        status.push_str(&format!(
            ", file {}/{files}",
            metrics.files_started().max(1)
        ));
    }
    status
}

/// `1234567` as `1,234,567`.
pub fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, d) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(d);
    }
    out
}

/// Rows per second in a few digits: `850 rows/s`, `333k rows/s`, `1.2M rows/s`.
pub fn rate(rows: u64, seconds: f64) -> String {
    if seconds <= 0.0 {
        return "- rows/s".to_string();
    }
    let per_second = rows as f64 / seconds;
    if per_second >= 1e6 {
        format!("{:.1}M rows/s", per_second / 1e6)
    } else if per_second >= 1e4 {
        format!("{:.0}k rows/s", per_second / 1e3)
    } else if per_second >= 1e3 {
        format!("{:.1}k rows/s", per_second / 1e3)
    } else {
        format!("{per_second:.0} rows/s")
    }
}

/// Sends log lines to stderr, around the progress bar when there is one.
#[derive(Clone)]
struct LogWriter {
    bar: Option<ProgressBar>,
}

/// One log line, buffered so that it is written whole, above the bar.
struct LogLine {
    bar: Option<ProgressBar>,
    buf: Vec<u8>,
}

impl Write for LogLine {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        self.buf.extend_from_slice(data);
        Ok(data.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Drop for LogLine {
    fn drop(&mut self) {
        let buf = std::mem::take(&mut self.buf);
        let write = || {
            let _ = std::io::stderr().write_all(&buf);
        };
        match &self.bar {
            Some(bar) => bar.suspend(write),
            None => write(),
        }
    }
}

impl<'a> MakeWriter<'a> for LogWriter {
    type Writer = LogLine;

    fn make_writer(&'a self) -> Self::Writer {
        LogLine {
            bar: self.bar.clone(),
            buf: Vec::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn human_units() {
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(1000), "1,000");
        assert_eq!(thousands(1_000_000), "1,000,000");
        assert_eq!(thousands(12_345_678), "12,345,678");
        assert_eq!(rate(1_000_000, 3.0), "333k rows/s");
        assert_eq!(rate(2_400_000, 2.0), "1.2M rows/s");
        assert_eq!(rate(1_500, 1.0), "1.5k rows/s");
        assert_eq!(rate(850, 1.0), "850 rows/s");
        assert_eq!(rate(5, 0.0), "- rows/s");
    }
}
