//! What zync's three binaries share at their command line and around their main loop: the
//! TOML config file that holds what is otherwise given by flags ([`load`], [`settings`]: the
//! flags under the [`SETTINGS`] heading are its keys), the rule that a flag beats the file and
//! the file beats the built-in default ([`given`]), shell completions and man pages generated from the clap definitions
//! ([`Generate`]), the progress of long runs ([`progress`]), logging ([`logging`]), the async
//! runtime and SIGINT/SIGTERM ([`runtime`], [`shutdown_signal`]), retry waits ([`Backoff`]),
//! sizes and ages as flags take them ([`units`]), and text from the other machine made safe to
//! print ([`visible`]).
#![deny(missing_docs)]

mod backoff;
mod file;
mod generate;
pub mod logging;
pub mod peer_uid;
pub mod progress;
mod runtime;
pub mod settings;
pub mod units;
pub mod visible;

pub use backoff::Backoff;
pub use file::{default_path, load, ConfigError, Loaded};
pub use generate::Generate;
pub use runtime::{
    give_back_freed_memory, limit_malloc_arenas, lower_priority, process_cpu, runtime,
    shutdown_signal, GiveBack, MALLOC_ARENAS,
};
pub use settings::SETTINGS;

use clap::parser::ValueSource;
use clap::ArgMatches;

/// `e` and its causes on one line, as `{:#}` prints them (`message: cause: cause`), but without
/// a cause the text before it already ends with: an error that prints its source itself (as
/// `cannot read PATH: No such file or directory (os error 2)` does) is not followed by that
/// source a second time. Made visible ([`visible::text`]): errors quote what the other
/// machine, or whatever answered on the daemon's port, said and named, and a carriage return
/// or an escape sequence in it must not reach the terminal (a retitled window, a clipboard
/// written, a fake "in sync" drawn over the real message). A message of several lines (a list
/// of failing paths) keeps them, but each line after the first is indented: a newline in a
/// name the message quotes cannot start a line that reads as the program's own
/// (`zync-client: in sync`) or as a log line.
pub fn one_line(e: &anyhow::Error) -> String {
    let chained = chained(e);
    let shown = visible::text(&chained);
    let mut lines = shown.split('\n');
    let mut out = lines.next().unwrap_or_default().to_string();
    for line in lines {
        out.push('\n');
        if !line.starts_with([' ', '\t']) {
            out.push_str("  ");
        }
        out.push_str(line);
    }
    out
}

/// [`one_line`] before it is made visible.
fn chained(e: &anyhow::Error) -> String {
    let mut line = String::new();
    for cause in e.chain() {
        let text = cause.to_string();
        if line.ends_with(&text) {
            continue;
        }
        if !line.is_empty() {
            line.push_str(": ");
        }
        line.push_str(&text);
    }
    line
}

/// Whether the user set argument `id` (its field name) on the command line or through its
/// environment variable, so that it beats the config file. False for a built-in default.
pub fn given(matches: &ArgMatches, id: &str) -> bool {
    matches!(
        matches.value_source(id),
        Some(ValueSource::CommandLine | ValueSource::EnvVariable)
    )
}

/// Replaces `value` with `from_file` unless the user gave argument `id`: the file beats the
/// built-in default, a flag beats the file.
pub fn merge<T>(matches: &ArgMatches, id: &str, value: &mut T, from_file: Option<T>) {
    if let Some(v) = from_file.filter(|_| !given(matches, id)) {
        *value = v;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::{Arg, Command};

    /// An error that prints its source in its own message, as many of zync's do.
    #[derive(Debug, thiserror::Error)]
    #[error("cannot read /r/c.txt: {source}")]
    struct Unreadable {
        source: std::io::Error,
    }

    #[test]
    fn one_line_prints_each_cause_once() {
        let gone = || std::io::Error::from(std::io::ErrorKind::NotFound);
        let e = anyhow::Error::new(Unreadable { source: gone() });
        let os = gone().to_string();
        assert_eq!(one_line(&e), format!("cannot read /r/c.txt: {os}"));
        // A context above it and a cause that is not repeated are both kept.
        let e = e.context("pushing R's changes");
        assert_eq!(
            one_line(&e),
            format!("pushing R's changes: cannot read /r/c.txt: {os}")
        );
        let e = anyhow::Error::new(gone()).context("opening the database");
        assert_eq!(one_line(&e), format!("opening the database: {os}"));
    }

    #[test]
    fn one_line_shows_control_characters_and_keeps_lines() {
        let said = "refused: \u{1b}]0;owned\u{7}\r\u{1b}[2Kin sync\u{202e}";
        let e = anyhow::anyhow!("{said}").context("the daemon said");
        assert_eq!(
            one_line(&e),
            "the daemon said: refused: ^[]0;owned^G^M^[[2Kin sync<U+202E>"
        );
        // A list of failures, one per line, stays one per line.
        let e = anyhow::anyhow!("2 path(s) failed:\n  a: no room\n  b: no room");
        assert_eq!(
            one_line(&e),
            "2 path(s) failed:\n  a: no room\n  b: no room"
        );
        // A newline in a name starts no line of its own at the margin.
        let e = anyhow::anyhow!("cannot read /r/x\nzync-client: in sync: denied");
        assert_eq!(
            one_line(&e),
            "cannot read /r/x\n  zync-client: in sync: denied"
        );
    }

    fn matches(argv: &[&str]) -> ArgMatches {
        Command::new("t")
            .arg(Arg::new("port").long("port").default_value("8000"))
            .try_get_matches_from(argv)
            .expect("parse")
    }

    #[test]
    fn a_flag_beats_the_file_and_the_file_beats_the_default() {
        let with_flag = matches(&["t", "--port", "1"]);
        let mut port = "1".to_string();
        merge(&with_flag, "port", &mut port, Some("2".to_string()));
        assert_eq!(port, "1", "the file replaced a flag");

        let without = matches(&["t"]);
        let mut port = "8000".to_string();
        merge(&without, "port", &mut port, Some("2".to_string()));
        assert_eq!(port, "2", "the file did not replace the built-in default");

        let mut port = "8000".to_string();
        merge(&without, "port", &mut port, None);
        assert_eq!(port, "8000", "no file value must keep the default");
    }
}

/// clap's value parser for a `--dirs` entry: `NAME:PATH` with both parts present. Checked
/// where the value is parsed, so a bad entry in a config file is reported at its line with
/// exit code 2 like any other bad setting (a service manager does not restart on it); whether
/// PATH exists is for the program to judge.
///
/// # Errors
///
/// The entry has no `:`, or an empty name or path.
pub fn dir_spec(spec: &str) -> Result<String, String> {
    match spec.split_once(':') {
        Some((name, path)) if !name.is_empty() && !path.is_empty() => Ok(spec.to_owned()),
        Some(("", _)) => Err(format!(
            "{spec:?} has an empty NAME; write it as NAME:PATH, for example code:/home/me/project"
        )),
        Some(_) => Err(format!(
            "{spec:?} has an empty PATH; write it as NAME:PATH, for example code:/home/me/project"
        )),
        None => Err(format!(
            "{spec:?} is not NAME:PATH; write it as, for example, code:/home/me/project"
        )),
    }
}

#[cfg(test)]
mod dir_spec_tests {
    use super::dir_spec;

    #[test]
    fn dir_specs_need_a_name_and_a_path() {
        assert_eq!(dir_spec("code:/srv/p"), Ok("code:/srv/p".to_owned()));
        assert_eq!(dir_spec("c:~/a:b"), Ok("c:~/a:b".to_owned()));
        for bad in ["nocolon", ":/srv", "code:", ""] {
            let why = dir_spec(bad).expect_err(bad);
            assert!(why.contains("NAME:PATH"), "{bad}: {why}");
        }
    }
}
