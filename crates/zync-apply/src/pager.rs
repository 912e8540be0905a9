//! Terminal niceties of `show --diff`: colours (`--color`, `NO_COLOR`) and paging
//! long output through `$PAGER` (default `less -R`). Neither happens when stdout is a pipe or
//! a file, so scripts always get plain text.

use std::io::{IsTerminal, Write};
use std::process::{Command, Stdio};

use crate::cli::ColorChoice;

const GREEN: &str = "\x1b[32m";
const RED: &str = "\x1b[31m";
const CYAN: &str = "\x1b[36m";
const BOLD: &str = "\x1b[1m";
const RESET: &str = "\x1b[0m";

/// Whether to colour: `always`/`never` as said; `auto` when stdout is a terminal and
/// `NO_COLOR` is unset or empty (no-color.org).
pub fn use_color(choice: ColorChoice, stdout_is_terminal: bool) -> bool {
    match choice {
        ColorChoice::Always => true,
        ColorChoice::Never => false,
        ColorChoice::Auto => {
            stdout_is_terminal && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
        }
    }
}

/// Colours one unified diff: added lines green, removed red, hunk headers cyan, file headers
/// bold. Other text (a "binary file" note) is left as it is.
pub fn colorize(diff: &str) -> String {
    let mut out = String::with_capacity(diff.len() + diff.len() / 4);
    for line in diff.split_inclusive('\n') {
        let (body, end) = match line.strip_suffix('\n') {
            Some(body) => (body, "\n"),
            None => (line, ""),
        };
        let color = if body.starts_with("+++ ") || body.starts_with("--- ") {
            BOLD
        } else if body.starts_with("@@") {
            CYAN
        } else if body.starts_with('+') {
            GREEN
        } else if body.starts_with('-') {
            RED
        } else {
            out.push_str(line);
            continue;
        };
        out.push_str(color);
        out.push_str(body);
        out.push_str(RESET);
        out.push_str(end);
    }
    out
}

/// Writes `text` to stdout, through `$PAGER` (default `less -R`) when stdout is a terminal and
/// `text` has more lines than the terminal. An empty `PAGER` turns paging off; a pager that
/// cannot start is reported and the text printed instead.
///
/// # Errors
/// Writing to stdout fails.
pub fn page_or_print(text: &[u8]) -> std::io::Result<()> {
    let stdout = std::io::stdout();
    if stdout.is_terminal() {
        let rows = console::Term::stdout()
            .size_checked()
            .map_or(24, |(rows, _)| usize::from(rows));
        let lines = text.iter().filter(|b| **b == b'\n').count();
        let pager = std::env::var("PAGER").unwrap_or_else(|_| "less -R".to_string());
        if lines >= rows && !pager.trim().is_empty() {
            match run_pager(&pager, text) {
                Ok(()) => return Ok(()),
                Err(e) => tracing::warn!(
                    "cannot run the pager {pager:?} ({e}); printing instead (set PAGER to \
                     another program, or to an empty value to turn paging off)"
                ),
            }
        }
    }
    let mut out = stdout.lock();
    out.write_all(text)?;
    out.flush()
}

/// Runs `pager` through `sh -c` (as git does, so `PAGER="less -R"` works) and feeds it `text`.
fn run_pager(pager: &str, text: &[u8]) -> std::io::Result<()> {
    let mut child = Command::new("sh")
        .arg("-c")
        .arg(pager)
        .env(
            "LESS",
            std::env::var("LESS").unwrap_or_else(|_| "FRX".into()),
        )
        .stdin(Stdio::piped())
        .spawn()?;
    if let Some(mut stdin) = child.stdin.take() {
        // Quitting the pager early closes the pipe: that is not an error.
        match stdin.write_all(text) {
            Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => {
                let _ = child.wait();
                return Err(e);
            }
            _ => {}
        }
    }
    child.wait()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn colours_mark_added_removed_and_hunk_lines_only() {
        let diff = "--- a/x (E)\n+++ b/x (R)\n@@ -1,2 +1,2 @@\n keep\n-old\n+new\n";
        let c = colorize(diff);
        assert!(
            c.contains("\x1b[31m-old\x1b[0m\n"),
            "removed not red: {c:?}"
        );
        assert!(
            c.contains("\x1b[32m+new\x1b[0m\n"),
            "added not green: {c:?}"
        );
        assert!(
            c.contains("\x1b[36m@@ -1,2 +1,2 @@\x1b[0m\n"),
            "hunk not cyan: {c:?}"
        );
        assert!(c.contains("\n keep\n"), "context changed: {c:?}");
        assert!(
            !c.contains("\x1b[32m+++"),
            "file header coloured as added: {c:?}"
        );
    }

    #[test]
    fn never_and_piped_auto_mean_no_colour() {
        assert!(use_color(ColorChoice::Always, false));
        assert!(!use_color(ColorChoice::Never, true));
        assert!(!use_color(ColorChoice::Auto, false));
    }
}
