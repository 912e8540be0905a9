//! zync-apply: on machine E, lists, shows (with diffs), applies, undoes, drops and expires the
//! sessions that `zync-client --update-upstream` pushed from R and that zync-daemon staged
//! beside its database. `main.rs` only parses the command line and maps [`run`]'s result to an exit code.
#![deny(missing_docs)]

pub mod apply;
pub mod cli;
mod crashpoint;
mod created_dirs;
mod diff;
pub mod drop;
mod fileops;
pub mod gc;
pub mod list;
mod lock;
mod outcome;
pub mod pager;
pub mod probe;
pub mod prompt;
mod recover;
pub mod roots;
pub mod session;
pub mod show;
pub mod status;
pub mod undo;
pub mod wait;

use std::io::Write;

pub use crate::apply::{ApplyOptions, ApplyReport};
pub use crate::cli::{Cli, Command, DirsArg};
pub use crate::outcome::Outcome;
pub use crate::prompt::{Choice, Prompter, ScriptedPrompter, TermPrompter};

/// Runs the command on stdout, asking questions on the terminal.
///
/// # Errors
///
/// Whatever the command reports; the message names the problem and, where known, the fix.
pub fn run(cli: &Cli) -> anyhow::Result<Outcome> {
    use std::io::IsTerminal;
    // A diff for a person on a terminal is paged when long; into a pipe it is never paged.
    if let Command::Show {
        diff: true,
        json: false,
        ..
    } = &cli.command
    {
        if std::io::stdout().is_terminal() {
            let mut text = Vec::new();
            let outcome = run_with(cli, &mut text, &mut TermPrompter)?;
            pager::page_or_print(&text)?;
            return Ok(outcome);
        }
    }
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    let outcome = run_with(cli, &mut out, &mut TermPrompter)?;
    out.flush()?;
    Ok(outcome)
}

/// Runs the command, writing to `out` and asking `prompter` (for `apply` without
/// `--non-interactive`).
///
/// # Errors
///
/// As [`run`].
pub fn run_with(
    cli: &Cli,
    out: &mut dyn Write,
    prompter: &mut dyn Prompter,
) -> anyhow::Result<Outcome> {
    match &cli.command {
        Command::List { all, json } => {
            list::list(&cli.db, *all, *json, out).map(|()| Outcome::Done)
        }
        Command::Status { json, ignored } => {
            status::status(&cli.db, *json, *ignored, out).map(|()| Outcome::Done)
        }
        Command::Wait {
            client,
            timeout,
            json,
        } => wait::wait(
            &cli.db,
            client.as_deref(),
            std::time::Duration::from_secs(*timeout),
            *json,
            out,
        ),
        Command::Show {
            id,
            dirs,
            diff,
            json,
            color,
        } => {
            let color =
                pager::use_color(*color, std::io::IsTerminal::is_terminal(&std::io::stdout()));
            let opts = show::ShowOptions {
                diff: *diff,
                json: *json,
                color,
            };
            show::show(&cli.db, id, &dirs.dirs, opts, out).map(|()| Outcome::Done)
        }
        Command::Apply {
            id,
            dirs,
            force,
            non_interactive,
        } => apply::apply(
            &cli.db,
            id,
            &dirs.dirs,
            ApplyOptions {
                force: *force,
                non_interactive: *non_interactive,
            },
            prompter,
            out,
        ),
        Command::Undo { id, dirs, force } => undo::undo(&cli.db, id, &dirs.dirs, *force, out),
        Command::Drop {
            id,
            discard_backups,
            json,
        } => drop::drop(&cli.db, id, *discard_backups, *json, out).map(|()| Outcome::Done),
        Command::Gc {
            older_than,
            json,
            configured_max_age,
        } => {
            let age = older_than
                .or(*configured_max_age)
                .unwrap_or(gc::DEFAULT_MAX_AGE);
            gc::gc(&cli.db, age, *json, out).map(|()| Outcome::Done)
        }
    }
}

/// Whether `err` comes from writing to a closed pipe (`zync-apply list | head`), which should
/// end the program quietly.
pub fn is_broken_pipe(err: &anyhow::Error) -> bool {
    err.chain().any(|e| {
        e.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
    })
}

#[cfg(test)]
mod testkit;
