//! Logging to stderr for the three binaries: one tracing subscriber, written through
//! [`LogWriter`](crate::progress::LogWriter) so that log lines never tear a progress bar, its
//! fields and messages shown by [`VisibleFields`] so that no name on disk can forge a log line
//! or send the terminal an escape sequence.

use std::fmt;

use anyhow::Context;
use tracing::field::{Field, Visit};
use tracing_subscriber::field::RecordFields;
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::FormatFields;

use crate::visible;

/// `-v` and `-q`, shared by the three binaries (flatten into their command line).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::Args)]
pub struct Verbosity {
    /// More log output: -v for debug, -vv for trace. Beats --log-level, the config file and
    /// RUST_LOG.
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    pub verbose: u8,
    /// Less log output, one level per -q (-qq: errors only; enough of them: nothing). Beats
    /// --log-level, the config file and RUST_LOG.
    #[arg(short, long, action = clap::ArgAction::Count, global = true, conflicts_with = "verbose")]
    pub quiet: u8,
}

/// The levels from quietest to loudest, as `-q` and `-v` step through them.
const LEVELS: [&str; 6] = ["off", "error", "warn", "info", "debug", "trace"];

impl Verbosity {
    /// The log filter to use: `-v`/`-q` step from `default`; else `--log-level` (from the
    /// command line or the config file); else `RUST_LOG` when set; else `default`.
    pub fn level(self, log_level: Option<&str>, default: &str) -> String {
        self.choose(
            log_level,
            std::env::var("RUST_LOG").ok().as_deref(),
            default,
        )
    }

    fn choose(self, log_level: Option<&str>, rust_log: Option<&str>, default: &str) -> String {
        if self.verbose > 0 || self.quiet > 0 {
            let base = LEVELS.iter().position(|l| *l == default).unwrap_or(3) as i64;
            let at = (base + i64::from(self.verbose) - i64::from(self.quiet))
                .clamp(0, LEVELS.len() as i64 - 1);
            return LEVELS[at as usize].to_owned();
        }
        log_level
            .or(rust_log.filter(|r| !r.trim().is_empty()))
            .unwrap_or(default)
            .to_owned()
    }
}

/// Sets up logging to stderr at `level` (a level name or a tracing filter such as
/// `zync_client=debug`). With `show_progress`, the plain progress lines of a long run
/// ([`progress::TARGET`](crate::progress::TARGET)) show at any level but `off`.
///
/// # Errors
/// `level` is not a valid filter (the message names `--log-level` and the levels), or logging
/// was already set up in this process.
pub fn init(level: &str, show_progress: bool) -> anyhow::Result<()> {
    use tracing_subscriber::util::SubscriberInitExt;
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    subscriber(
        filter(level, show_progress)?,
        crate::progress::LogWriter::default,
        ansi,
    )
    .try_init()
    .map_err(|e| anyhow::anyhow!("cannot set up logging: {e}"))
}

/// The subscriber [`init`] installs, writing to `writer`.
fn subscriber<W>(
    filter: tracing_subscriber::EnvFilter,
    writer: W,
    ansi: bool,
) -> impl tracing::Subscriber + Send + Sync
where
    W: for<'w> tracing_subscriber::fmt::MakeWriter<'w> + Send + Sync + 'static,
{
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .fmt_fields(VisibleFields)
        .with_writer(writer)
        .with_ansi(ansi)
        .finish()
}

/// Writes an event's fields as tracing-subscriber's default does (the message bare, then
/// `name=value`, strings quoted; the `log.*` fields of events from the `log` crate left out),
/// with every character that would be hidden or would move the cursor made visible
/// ([`visible::line`]). Names on disk reach the logs in messages and `%` fields: a file that
/// another user made in a synced tree, named `x\r\x1b[2K...\n<a whole forged line>`, would
/// otherwise rewrite what the user reads in their terminal, or add lines to the log. Done here,
/// once, rather than at each of the call sites that name a path.
#[derive(Debug, Default, Clone, Copy)]
pub struct VisibleFields;

impl<'writer> FormatFields<'writer> for VisibleFields {
    fn format_fields<R: RecordFields>(
        &self,
        mut writer: Writer<'writer>,
        fields: R,
    ) -> fmt::Result {
        let mut visitor = VisibleVisitor {
            writer: &mut writer,
            first: true,
            result: Ok(()),
        };
        fields.record(&mut visitor);
        visitor.result
    }
}

struct VisibleVisitor<'a, 'writer> {
    writer: &'a mut Writer<'writer>,
    first: bool,
    result: fmt::Result,
}

impl Visit for VisibleVisitor<'_, '_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.record_debug(field, &format_args!("{value}"));
        } else {
            self.record_debug(field, &value);
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        let name = field.name();
        if self.result.is_err() || name.starts_with("log.") {
            return;
        }
        let text = format!("{value:?}");
        let shown = visible::line(&text);
        let space = if std::mem::take(&mut self.first) {
            ""
        } else {
            " "
        };
        self.result = if name == "message" {
            write!(self.writer, "{space}{shown}")
        } else {
            write!(
                self.writer,
                "{space}{}={shown}",
                name.strip_prefix("r#").unwrap_or(name)
            )
        };
    }
}

/// The filter [`init`] installs.
fn filter(level: &str, show_progress: bool) -> anyhow::Result<tracing_subscriber::EnvFilter> {
    let filter = tracing_subscriber::EnvFilter::try_new(level).with_context(|| {
        format!("--log-level {level:?} is not a level (error, warn, info, debug, trace)")
    })?;
    Ok(match crate::progress::TARGET.parse() {
        Ok(directive) if show_progress && level != "off" => filter.add_directive(directive),
        _ => filter,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verbosity_steps_from_the_default_and_beats_the_rest() {
        let v = |verbose, quiet| Verbosity { verbose, quiet };
        let pick = |vb: Verbosity, flag, env, default| vb.choose(flag, env, default);
        assert_eq!(pick(v(0, 0), None, None, "info"), "info");
        assert_eq!(
            pick(v(0, 0), None, Some("zync=trace"), "info"),
            "zync=trace"
        );
        assert_eq!(pick(v(0, 0), None, Some(" "), "warn"), "warn");
        assert_eq!(pick(v(0, 0), Some("error"), Some("debug"), "info"), "error");
        assert_eq!(pick(v(1, 0), Some("error"), Some("error"), "info"), "debug");
        assert_eq!(pick(v(2, 0), None, None, "info"), "trace");
        assert_eq!(pick(v(5, 0), None, None, "info"), "trace");
        assert_eq!(pick(v(0, 1), None, Some("trace"), "info"), "warn");
        assert_eq!(pick(v(0, 1), None, None, "warn"), "error");
        assert_eq!(pick(v(0, 9), None, None, "info"), "off");
    }

    #[test]
    fn a_bad_level_names_the_flag_and_the_levels() {
        let err = format!("{:#}", filter("x=loud", false).expect_err("not a filter"));
        assert!(err.contains("--log-level \"x=loud\""), "{err}");
        assert!(err.contains("error, warn, info, debug, trace"), "{err}");
    }

    /// What `emit` logs through the subscriber [`init`] installs (colours off).
    fn logged(emit: impl FnOnce()) -> String {
        #[derive(Clone, Default)]
        struct Buffer(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);
        impl std::io::Write for Buffer {
            fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
                self.0.lock().expect("buffer").extend_from_slice(buf);
                Ok(buf.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let buffer = Buffer::default();
        let writer = buffer.clone();
        let filter = tracing_subscriber::EnvFilter::new("trace");
        let subscriber = super::subscriber(filter, move || writer.clone(), false);
        tracing::subscriber::with_default(subscriber, emit);
        let bytes = buffer.0.lock().expect("buffer").clone();
        String::from_utf8(bytes).expect("utf-8")
    }

    #[test]
    fn names_in_fields_and_messages_cannot_forge_a_line_or_reach_the_terminal() {
        let forged = "2026-12-07T00:00:00.000000Z ERROR zync_daemon: forged";
        let name = format!("x\r\x1b[2K\x1b]0;owned\x07\u{202E}txt.exe\n{forged}");
        let path = std::path::Path::new(&name);
        let out = logged(|| {
            tracing::warn!(path = %name, shown = %path.display(), "skipping {}: {}", path.display(), "why\r");
        });
        assert_eq!(out.matches('\n').count(), 1, "one event, one line: {out:?}");
        assert!(out.ends_with('\n'), "{out:?}");
        assert!(
            out.trim_end_matches('\n')
                .chars()
                .all(|c| !c.is_control() && c != '\u{202E}'),
            "a hidden character reached the log: {out:?}"
        );
        assert!(
            out.contains("skipping x^M^[[2K^[]0;owned^G<U+202E>txt.exe^J2026-12-07"),
            "{out:?}"
        );
        assert!(out.contains("why^M path=x^M^["), "{out:?}");
        assert!(out.contains("shown=x^M"), "{out:?}");
        // A span's fields, given at its start or recorded later, are shown the same way.
        let out = logged(|| {
            let span = tracing::info_span!("push", dir = %name, path = tracing::field::Empty);
            span.record("path", tracing::field::display(&name));
            span.in_scope(|| tracing::info!("sent"));
        });
        assert_eq!(out.matches('\n').count(), 1, "one event, one line: {out:?}");
        assert!(
            out.trim_end_matches('\n').chars().all(|c| !c.is_control()),
            "a span's field reached the log raw: {out:?}"
        );
        assert!(out.contains("push{dir=x^M^[[2K"), "{out:?}");
    }

    #[test]
    fn fields_read_as_the_default_format_writes_them() {
        let out = logged(|| tracing::info!(dir = "bench", applied = 3, id = %"a b", "synced"));
        assert!(
            out.contains(" synced dir=\"bench\" applied=3 id=a b\n"),
            "{out:?}"
        );
        // Events of the log crate keep their message and lose the `log.*` bookkeeping.
        let out = logged(|| {
            tracing::info!(
                log.target = "tungstenite",
                log.line = 9,
                "Client handshake done."
            )
        });
        assert!(out.ends_with(" Client handshake done.\n"), "{out:?}");
    }

    #[test]
    fn progress_lines_pass_any_level_but_off_when_asked() {
        let shown = |level, progress| filter(level, progress).expect("filter").to_string();
        assert!(shown("warn", true).contains(crate::progress::TARGET));
        assert!(!shown("warn", false).contains(crate::progress::TARGET));
        assert!(!shown("off", true).contains(crate::progress::TARGET));
    }
}
