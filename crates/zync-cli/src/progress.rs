//! Progress of long runs: a bar on stderr when it is a terminal, and otherwise a plain
//! log line every few seconds (`synced 1234/10000 files, 56 MiB, 12 MiB/s`). Callers only bump
//! atomic counters; drawing happens at most ten times a second on indicatif's ticker thread, and
//! a plain line is due only when the interval has passed, so the hot path stays a few atomics.
//!
//! Log lines must not tear the bar: [`LogWriter`] is the stderr writer for tracing, and it
//! writes through the active bar's `suspend`.

use std::io::{IsTerminal, Write};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressFinish, ProgressState, ProgressStyle};

/// A run this big (files or bytes) gets progress; smaller ones finish before anyone looks.
pub const LARGE_FILES: u64 = 100;
/// See [`LARGE_FILES`].
pub const LARGE_BYTES: u64 = 32 << 20;
/// Seconds between plain lines, unless `ZYNC_PROGRESS_SECS` says otherwise.
const DEFAULT_INTERVAL: Duration = Duration::from_secs(3);
/// The tracing target of the plain lines, so a binary can let them through at any level.
pub const TARGET: &str = "zync::progress";

/// The bar being drawn, if any: [`LogWriter`] writes around it.
static ACTIVE: Mutex<Option<(u64, ProgressBar)>> = Mutex::new(None);
/// Tells bars apart in [`ACTIVE`].
static NEXT_ID: AtomicU64 = AtomicU64::new(0);

/// How progress is shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// A bar when stderr is a terminal, plain lines otherwise.
    Auto,
    /// Always a bar (drawn only if stderr is a terminal).
    Bar,
    /// Plain log lines every interval.
    Lines,
    /// Nothing.
    Hidden,
}

#[derive(Default)]
struct Counters {
    files: AtomicU64,
    files_total: AtomicU64,
    bytes: AtomicU64,
    bytes_total: AtomicU64,
}

enum Out {
    Bar(u64, ProgressBar),
    Lines {
        every_ms: u64,
        /// Milliseconds since `started` at which the next line is due.
        next_ms: AtomicU64,
        printed: AtomicBool,
    },
}

struct Inner {
    verb: &'static str,
    counters: Arc<Counters>,
    started: Instant,
    out: Out,
}

/// A handle to one run's progress; clones share it. [`Progress::hidden`] costs nothing.
#[derive(Clone, Default)]
pub struct Progress {
    inner: Option<Arc<Inner>>,
}

impl Progress {
    /// Progress that shows nothing.
    pub fn hidden() -> Progress {
        Progress { inner: None }
    }

    /// Starts showing progress of a run of `files` files and `bytes` bytes, if it is large
    /// ([`LARGE_FILES`], [`LARGE_BYTES`]); `verb` says what is done ("synced", "sent").
    pub fn start_if_large(verb: &'static str, files: u64, bytes: u64) -> Progress {
        if files >= LARGE_FILES || bytes >= LARGE_BYTES {
            Progress::start(Mode::Auto, verb, files, bytes)
        } else {
            Progress::hidden()
        }
    }

    /// Starts showing progress in `mode`.
    pub fn start(mode: Mode, verb: &'static str, files: u64, bytes: u64) -> Progress {
        let mode = match mode {
            Mode::Auto if std::io::stderr().is_terminal() => Mode::Bar,
            Mode::Auto => Mode::Lines,
            other => other,
        };
        let counters = Arc::new(Counters::default());
        counters.files_total.store(files, Ordering::Relaxed);
        counters.bytes_total.store(bytes, Ordering::Relaxed);
        let out = match mode {
            Mode::Hidden => return Progress::hidden(),
            Mode::Bar | Mode::Auto => {
                let id = NEXT_ID.fetch_add(1, Ordering::Relaxed);
                Out::Bar(id, bar(id, verb, &counters, bytes))
            }
            Mode::Lines => {
                let every_ms = interval().as_millis() as u64;
                Out::Lines {
                    every_ms,
                    next_ms: AtomicU64::new(every_ms),
                    printed: AtomicBool::new(false),
                }
            }
        };
        Progress {
            inner: Some(Arc::new(Inner {
                verb,
                counters,
                started: Instant::now(),
                out,
            })),
        }
    }

    /// True when this shows something.
    pub fn is_active(&self) -> bool {
        self.inner.is_some()
    }

    /// Adds to the run's totals (a next page of changes).
    pub fn add_total(&self, files: u64, bytes: u64) {
        let Some(inner) = &self.inner else { return };
        inner
            .counters
            .files_total
            .fetch_add(files, Ordering::Relaxed);
        let total = inner
            .counters
            .bytes_total
            .fetch_add(bytes, Ordering::Relaxed)
            + bytes;
        if let Out::Bar(_, bar) = &inner.out {
            bar.set_length(total);
        }
    }

    /// `n` more files are done.
    pub fn files(&self, n: u64) {
        let Some(inner) = &self.inner else { return };
        inner.counters.files.fetch_add(n, Ordering::Relaxed);
        inner.maybe_line();
    }

    /// `n` more bytes are done.
    pub fn bytes(&self, n: u64) {
        let Some(inner) = &self.inner else { return };
        inner.counters.bytes.fetch_add(n, Ordering::Relaxed);
        match &inner.out {
            // inc redraws only as often as the draw target allows.
            Out::Bar(_, bar) => bar.inc(n),
            Out::Lines { .. } => inner.maybe_line(),
        }
    }

    /// Ends the run: the bar disappears; plain mode, if it printed anything, prints a last line.
    pub fn finish(&self) {
        let Some(inner) = &self.inner else { return };
        match &inner.out {
            Out::Bar(id, bar) => {
                bar.finish_and_clear();
                deactivate(*id);
            }
            Out::Lines { printed, .. } => {
                if printed.swap(false, Ordering::Relaxed) {
                    tracing::info!(target: TARGET, "{} in {:.1} s", inner.line(), inner.started.elapsed().as_secs_f64());
                }
            }
        }
    }
}

impl Inner {
    fn maybe_line(&self) {
        let Out::Lines {
            every_ms,
            next_ms,
            printed,
        } = &self.out
        else {
            return;
        };
        let now = self.started.elapsed().as_millis() as u64;
        let due = next_ms.load(Ordering::Relaxed);
        if now < due {
            return;
        }
        // One thread prints per interval.
        if next_ms
            .compare_exchange(due, now + every_ms, Ordering::Relaxed, Ordering::Relaxed)
            .is_ok()
        {
            printed.store(true, Ordering::Relaxed);
            tracing::info!(target: TARGET, "{}", self.line());
        }
    }

    /// `synced 1234/10000 files, 56 MiB, 12 MiB/s`
    fn line(&self) -> String {
        let c = &self.counters;
        let bytes = c.bytes.load(Ordering::Relaxed);
        let secs = self.started.elapsed().as_secs_f64().max(0.001);
        format!(
            "{} {}/{} files, {}, {}/s",
            self.verb,
            c.files.load(Ordering::Relaxed),
            c.files_total.load(Ordering::Relaxed),
            human(bytes as f64),
            human(bytes as f64 / secs)
        )
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        // A run that ended by an error: the bar goes too (ProgressFinish::AndClear).
        if let Out::Bar(id, _) = &self.out {
            deactivate(*id);
        }
    }
}

fn bar(id: u64, verb: &'static str, counters: &Arc<Counters>, bytes: u64) -> ProgressBar {
    let files = Arc::clone(counters);
    let style = ProgressStyle::with_template(
        "{spinner} {verb} {files} files  {bytes}/{total_bytes}  {binary_bytes_per_sec}  [{wide_bar}] {eta}",
    )
    .unwrap_or_else(|_| ProgressStyle::default_bar())
    .with_key("verb", move |_: &ProgressState, w: &mut dyn std::fmt::Write| {
        let _ = w.write_str(verb);
    })
    .with_key(
        "files",
        move |_: &ProgressState, w: &mut dyn std::fmt::Write| {
            let _ = write!(
                w,
                "{}/{}",
                files.files.load(Ordering::Relaxed),
                files.files_total.load(Ordering::Relaxed)
            );
        },
    )
    .progress_chars("=> ");
    let bar = ProgressBar::with_draw_target(Some(bytes), ProgressDrawTarget::stderr_with_hz(10))
        .with_style(style)
        .with_finish(ProgressFinish::AndClear);
    // Redraws the file count while bytes do not move (many small files, a stalled tunnel).
    bar.enable_steady_tick(Duration::from_millis(100));
    *ACTIVE.lock().unwrap_or_else(|e| e.into_inner()) = Some((id, bar.clone()));
    bar
}

fn deactivate(id: u64) {
    let mut active = ACTIVE.lock().unwrap_or_else(|e| e.into_inner());
    if active.as_ref().is_some_and(|(a, _)| *a == id) {
        *active = None;
    }
}

/// `ZYNC_PROGRESS_SECS` (decimal seconds), or 3 s.
fn interval() -> Duration {
    std::env::var("ZYNC_PROGRESS_SECS")
        .ok()
        .and_then(|s| s.trim().parse::<f64>().ok())
        .filter(|s| s.is_finite() && *s > 0.0)
        .map(Duration::from_secs_f64)
        .unwrap_or(DEFAULT_INTERVAL)
}

/// Bytes in binary units: `56 MiB`, `512 B`.
pub fn human(bytes: f64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = bytes;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{value:.0} {}", UNITS[unit])
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

/// stderr for tracing-subscriber (`.with_writer(LogWriter::default)`): while a bar is drawn,
/// each log line is written with the bar lifted, so neither tears the other.
#[derive(Debug, Default, Clone, Copy)]
pub struct LogWriter;

impl Write for LogWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let active = ACTIVE.lock().unwrap_or_else(|e| e.into_inner()).clone();
        match active {
            Some((_, bar)) => bar.suspend(|| std::io::stderr().lock().write_all(buf))?,
            None => std::io::stderr().lock().write_all(buf)?,
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        std::io::stderr().flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn human_sizes_use_binary_units() {
        assert_eq!(human(512.0), "512 B");
        assert_eq!(human(56.0 * 1024.0 * 1024.0), "56.0 MiB");
        assert_eq!(human(1536.0), "1.5 KiB");
    }

    #[test]
    fn small_runs_show_nothing_and_hidden_progress_ignores_updates() {
        let p = Progress::start_if_large("synced", LARGE_FILES - 1, LARGE_BYTES - 1);
        assert!(!p.is_active());
        p.files(5);
        p.bytes(5);
        p.finish();
        assert!(Progress::start_if_large("synced", LARGE_FILES, 0).is_active());
    }

    #[test]
    fn the_plain_line_counts_files_and_bytes() {
        let p = Progress::start(Mode::Lines, "synced", 10, 4 << 20);
        p.add_total(2, 0);
        p.files(3);
        p.bytes(3 << 20);
        let line = p.inner.as_ref().map(|i| i.line()).unwrap_or_default();
        assert!(
            line.starts_with("synced 3/12 files, 3.0 MiB, "),
            "expected `synced 3/12 files, 3.0 MiB, …`, found {line:?}"
        );
        assert!(line.ends_with("/s"), "{line:?}");
    }
}
