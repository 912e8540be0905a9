//! The command line of `zync-apply` (clap derive), kept compatible with the original tool's
//! `list` / `show` / `apply` commands and their `--db`, `--dirs`, `--force` and
//! `--non-interactive` flags (SEED-README, "Apply Tool"). `db` and `dirs` may also come from
//! zync-daemon's config file (`file.rs`).

mod file;

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// Exit codes, as documented in `--help`.
const AFTER_HELP: &str = "\
Exit codes:
  0  done (files you skipped or left staged by quitting do not count as failures)
  1  an error: bad database, unknown session, a file that could not be applied or undone
  2  bad command line
  3  apply --non-interactive without --force left conflicting files, control files
     (a .zyncignore, anything in .git) or content the review cannot show (binary, over
     4 MiB) staged; review them with `zync-apply show ID --diff`, then apply
     interactively or with --force
  7  wait timed out: what is outstanding is listed on stderr";

/// Command line of `zync-apply`.
#[derive(Debug, Parser)]
#[command(
    name = "zync-apply",
    version,
    about = "Review and apply changes pushed upstream from machine R (runs on machine E)",
    after_help = AFTER_HELP
)]
pub struct Cli {
    /// zync-daemon's config file, for its `db` and `dirs` (flags given here win over it).
    /// Default: ~/.config/zync/daemon.toml ($XDG_CONFIG_HOME/zync/...), read if it exists.
    #[arg(long, global = true, value_name = "PATH")]
    pub config: Option<PathBuf>,
    /// Hidden: shell completions and man pages.
    #[command(flatten)]
    pub generate: zync_cli::Generate,
    /// The daemon's SQLite database (as given to zync-daemon --db).
    #[arg(long, global = true, default_value = "sync.db", value_name = "PATH")]
    pub db: PathBuf,
    /// Log level: error, warn, info, debug or trace (or a tracing filter). Default
    /// warn, or RUST_LOG when set; -v and -q step from the default.
    #[arg(long, global = true, value_name = "LEVEL")]
    pub log_level: Option<String>,
    /// -v / -q.
    #[command(flatten)]
    pub verbosity: zync_cli::logging::Verbosity,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// List staged sessions (pending ones unless --all).
    List {
        /// Every session, also applied, undone, settled, expired, dropped and still-receiving
        /// ones, and the last aborted ones (their files are gone).
        #[arg(long)]
        all: bool,
        /// Print a JSON array instead of text.
        #[arg(long)]
        json: bool,
    },
    /// The state of the sync on E: served directories (index size, sequence, what is ignored
    /// by which rule), clients (connected now, acknowledged sequence) and pending sessions.
    /// Reads the database only.
    Status {
        /// Print one JSON document instead of text (its shape is in the README).
        #[arg(long)]
        json: bool,
        /// List every path the daemon ignores with the rule that ignores it, not only the
        /// counts per rule.
        #[arg(long)]
        ignored: bool,
    },
    /// Wait until every connected client (or --client ID) has durably applied every change
    /// E's index held when the command started (changes made before it included), for
    /// scripts: `zync-apply wait && ssh R 'cd proj && make'`. Exit 7 on timeout, naming what
    /// is outstanding. Reads the daemon's database; the daemon must be running.
    Wait {
        /// Wait for this client only (its id, as `zync-apply status` lists it), connected or
        /// not.
        #[arg(long, value_name = "ID")]
        client: Option<String>,
        /// Give up after this many seconds (exit 7); 0 waits for ever.
        #[arg(long, default_value_t = 120, value_name = "SECS")]
        timeout: u64,
        /// Print one JSON document instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Show the files of a session, with conflicts checked against E's current files.
    Show {
        /// Session id, or a unique prefix of it.
        id: String,
        /// Directory mapping.
        #[command(flatten)]
        dirs: DirsArg,
        /// Print unified diffs of text files against E's current version (paged through
        /// $PAGER, default `less -R`, when longer than the terminal).
        #[arg(long)]
        diff: bool,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
        /// Colour diffs: auto (when stdout is a terminal and NO_COLOR is not set), always
        /// or never.
        #[arg(long, value_enum, default_value_t = ColorChoice::Auto, value_name = "WHEN")]
        color: ColorChoice,
    },
    /// Apply a session's staged files to E, asking about each file unless --non-interactive.
    #[command(after_help = AFTER_HELP)]
    Apply {
        /// Session id, or a unique prefix of it.
        id: String,
        /// Directory mapping.
        #[command(flatten)]
        dirs: DirsArg,
        /// Apply conflicting files too: R's version replaces files that changed on E since R
        /// last synced them (E's version is kept as a backup; `undo` restores it). Interactive
        /// runs offer this per file, after showing the diff.
        #[arg(long)]
        force: bool,
        /// Do not ask: apply every file without a conflict; conflicting files, control files
        /// (a .zyncignore, anything in .git) and content the review cannot show (binary, over
        /// 4 MiB) stay staged (exit code 3) unless --force is given too.
        #[arg(long)]
        non_interactive: bool,
    },
    /// Discard a staged session: remove its staged files from the staging area and mark it
    /// `dropped`. E's directories are not touched. An applied or partly applied session is
    /// refused unless --discard-backups is given (its directory holds the backups `undo`
    /// needs), and so is one still being received.
    Drop {
        /// Session id, or a unique prefix of it.
        id: String,
        /// Give up undo: take an applied or partly applied session too, removing its backups
        /// (and the files a partly applied one still has staged, which are NOT applied), and
        /// mark it `settled`. What it applied stays on E; it can no longer be undone.
        #[arg(long)]
        discard_backups: bool,
        /// Print one JSON object instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Expire staged sessions nobody applied for longer than the daemon's --staging-max-age
    /// (or --older-than), and undone sessions whose undone apply ended longer ago than that,
    /// removing their staged files; settle applied sessions whose apply
    /// ended longer ago than that, removing their backups (what they applied stays on E; they
    /// can no longer be undone); and remove directories in the staging area that no session
    /// owns. Partly applied sessions are kept and named (`drop --discard-backups` settles one).
    /// E's directories are not touched.
    Gc {
        /// Expire staged sessions, and settle applied ones, older than this (30d, 12h, ...).
        /// Default: `staging-max-age` from zync-daemon's config file, else 30d.
        #[arg(long, value_name = "AGE", value_parser = zync_cli::units::parse_duration)]
        older_than: Option<std::time::Duration>,
        /// Print one JSON object instead of text.
        #[arg(long)]
        json: bool,
        /// `staging-max-age` from the daemon's config file, filled in by `with_config_file`.
        #[arg(skip)]
        configured_max_age: Option<std::time::Duration>,
    },
    /// Undo an applied session: restore E's previous files from the backups. A `settled`
    /// session (its backups removed by `drop --discard-backups` or `gc`) cannot be undone.
    Undo {
        /// Session id, or a unique prefix of it.
        id: String,
        /// Directory mapping.
        #[command(flatten)]
        dirs: DirsArg,
        /// Restore even files that changed on E since they were applied; E's newer versions
        /// are kept beside them as conflict copies.
        #[arg(long)]
        force: bool,
    },
}

/// `show --color`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ColorChoice {
    /// Colour when stdout is a terminal and NO_COLOR is not set.
    Auto,
    /// Always colour (also into a pipe or file).
    Always,
    /// Never colour.
    Never,
}

/// `--dirs NAME:PATH...`, shared by the commands that touch E's directories.
#[derive(Debug, Clone, Default, Args)]
pub struct DirsArg {
    /// Directories as NAME:PATH, as given to zync-daemon. Default: the mapping the daemon
    /// recorded in the database.
    #[arg(long, num_args = 1.., value_name = "NAME:PATH", value_parser = zync_cli::dir_spec)]
    pub dirs: Vec<String>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn parses_the_seed_command_lines() {
        Cli::command().debug_assert();
        let cli = Cli::try_parse_from([
            "zync-apply",
            "--db",
            "x.db",
            "apply",
            "abc",
            "--dirs",
            "docs:/a",
            "code:/b",
            "--force",
            "--non-interactive",
        ])
        .expect("parse");
        assert_eq!(cli.db, PathBuf::from("x.db"));
        match cli.command {
            Command::Apply {
                id,
                dirs,
                force,
                non_interactive,
            } => {
                assert_eq!(id, "abc");
                assert_eq!(dirs.dirs, vec!["docs:/a", "code:/b"]);
                assert!(force && non_interactive);
            }
            other => panic!("expected apply, got {other:?}"),
        }
        let cli = Cli::try_parse_from(["zync-apply", "list"]).expect("parse");
        assert_eq!(cli.db, PathBuf::from("sync.db"));
        assert!(matches!(
            cli.command,
            Command::List {
                all: false,
                json: false
            }
        ));
    }

    #[test]
    fn drop_and_gc_parse() {
        let cli = Cli::try_parse_from(["zync-apply", "drop", "abc", "--json"]).expect("drop");
        assert!(matches!(
            cli.command,
            Command::Drop { ref id, discard_backups: false, json: true } if id == "abc"
        ));
        let cli = Cli::try_parse_from(["zync-apply", "drop", "abc", "--discard-backups"])
            .expect("drop --discard-backups");
        assert!(matches!(
            cli.command,
            Command::Drop {
                discard_backups: true,
                json: false,
                ..
            }
        ));
        let cli = Cli::try_parse_from(["zync-apply", "gc", "--older-than", "12h"]).expect("gc");
        assert!(matches!(
            cli.command,
            Command::Gc { older_than: Some(d), json: false, configured_max_age: None }
                if d == std::time::Duration::from_secs(12 * 3600)
        ));
        assert!(Cli::try_parse_from(["zync-apply", "gc", "--older-than", "12"]).is_err());
    }

    #[test]
    fn help_documents_exit_code_3() {
        let help = Cli::command().render_long_help().to_string();
        assert!(help.contains("3  apply --non-interactive"), "help: {help}");
    }
}
