//! Logging to stderr for the three binaries: one tracing subscriber, written through
//! [`LogWriter`](crate::progress::LogWriter) so that log lines never tear a progress bar.

use anyhow::Context;

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
