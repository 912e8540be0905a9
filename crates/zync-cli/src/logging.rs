//! Logging to stderr for the three binaries: one tracing subscriber, written through
//! [`LogWriter`](crate::progress::LogWriter) so that log lines never tear a progress bar.

use anyhow::Context;

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
    let filter = filter(level, show_progress)?;
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(crate::progress::LogWriter::default)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .try_init()
        .map_err(|e| anyhow::anyhow!("cannot set up logging: {e}"))
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

    #[test]
    fn progress_lines_pass_any_level_but_off_when_asked() {
        let shown = |level, progress| filter(level, progress).expect("filter").to_string();
        assert!(shown("warn", true).contains(crate::progress::TARGET));
        assert!(!shown("warn", false).contains(crate::progress::TARGET));
        assert!(!shown("off", true).contains(crate::progress::TARGET));
    }
}
