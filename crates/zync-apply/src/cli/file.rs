//! zync-daemon's config file read by zync-apply, which runs on the same machine E: its `db`
//! and `dirs` stand in for `--db` and `--dirs` when those are not given. The daemon's other
//! keys are the daemon's (it refuses unknown ones when it starts); `log-level` stays the
//! daemon's.

use std::path::Path;

use clap::ArgMatches;
use zync_cli::merge;
use zync_cli::settings::{self, Entries};

use super::{Cli, Command};

/// The daemon's config file name in `~/.config/zync/`.
pub const FILE_NAME: &str = "daemon.toml";

impl Cli {
    /// This command line (parsed from `matches`) with `db` and `dirs` from the daemon's
    /// config file (`--config`, or `~/.config/zync/daemon.toml` when it exists) where no flag
    /// gave them. Without either, `dirs` still comes from the database, as before. The
    /// daemon's other keys are its own: the daemon checks them.
    ///
    /// # Errors
    /// A config file that is missing (`--config` only), unreadable, not TOML, or whose `db`
    /// or `dirs` is not of the right shape (with its line and column).
    pub fn with_config_file(mut self, matches: &ArgMatches) -> anyhow::Result<Cli> {
        let file = zync_cli::load::<Entries>(self.config.as_deref(), FILE_NAME)?;
        let db = settings::text(&file, "db")?
            .map(|p| file.resolve(Path::new(&p)))
            .transpose()?;
        merge(matches, "db", &mut self.db, db);
        if let Command::Gc {
            configured_max_age, ..
        } = &mut self.command
        {
            // The daemon's own setting, so that gc expires what the daemon would at its start.
            if let Some(text) = settings::text(&file, "staging-max-age")? {
                let age = zync_cli::units::parse_duration(&text).map_err(|e| {
                    anyhow::anyhow!("`staging-max-age` in {}: {e}", file.describe())
                })?;
                *configured_max_age = Some(age);
            }
        }
        let dirs = match &mut self.command {
            Command::List { .. }
            | Command::Status { .. }
            | Command::Wait { .. }
            | Command::Drop { .. }
            | Command::Gc { .. } => None,
            Command::Show { dirs, .. }
            | Command::Apply { dirs, .. }
            | Command::Undo { dirs, .. } => Some(dirs),
        };
        if let (Some(arg), Some(from_file)) = (dirs, settings::list(&file, "dirs")?) {
            // --dirs takes at least one value, so an empty list means it was not given.
            if arg.dirs.is_empty() {
                arg.dirs = from_file
                    .iter()
                    .map(|s| file.resolve_spec(s))
                    .collect::<Result<_, _>>()?;
            }
        }
        Ok(self)
    }
}

#[cfg(test)]
mod tests {
    use std::path::{Path, PathBuf};

    use clap::{CommandFactory, FromArgMatches};

    use super::*;

    fn merged(argv: &[&str], text: &str) -> anyhow::Result<(Cli, tempfile::TempDir)> {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join(FILE_NAME);
        std::fs::write(&path, text)?;
        let mut all = vec!["zync-apply", "--config", path.to_str().unwrap_or_default()];
        all.extend_from_slice(argv);
        let matches = Cli::command().try_get_matches_from(all)?;
        let cli = Cli::from_arg_matches(&matches)?;
        Ok((cli.with_config_file(&matches)?, dir))
    }

    const DAEMON: &str =
        "db = \"state/sync.db\"\ndirs = [\"docs:e/docs\"]\nport = 9\nlog-level = \"trace\"\n";

    fn dirs_of(cli: &Cli) -> Vec<String> {
        match &cli.command {
            Command::Show { dirs, .. }
            | Command::Apply { dirs, .. }
            | Command::Undo { dirs, .. } => dirs.dirs.clone(),
            Command::List { .. }
            | Command::Status { .. }
            | Command::Wait { .. }
            | Command::Drop { .. }
            | Command::Gc { .. } => Vec::new(),
        }
    }

    #[test]
    fn db_and_dirs_come_from_the_daemon_file_when_no_flag_gives_them() {
        let (cli, tmp) = merged(&["apply", "abc"], DAEMON).expect("merge");
        assert_eq!(cli.db, tmp.path().join("state/sync.db"));
        assert_eq!(
            dirs_of(&cli),
            vec![format!("docs:{}", tmp.path().join("e/docs").display())]
        );
        assert_eq!(
            cli.log_level, None,
            "the daemon's log level is not zync-apply's"
        );
        let (cli, tmp) = merged(&["list"], DAEMON).expect("merge");
        assert_eq!(cli.db, tmp.path().join("state/sync.db"));
    }

    #[test]
    fn flags_win_over_the_daemon_file_wherever_they_stand() {
        for argv in [
            &["--db", "flag.db", "show", "abc", "--dirs", "x:/x"][..],
            &["show", "abc", "--db", "flag.db", "--dirs", "x:/x"][..],
        ] {
            let (cli, _) = merged(argv, DAEMON).expect("merge");
            assert_eq!(cli.db, PathBuf::from("flag.db"), "{argv:?}");
            assert_eq!(dirs_of(&cli), vec!["x:/x"], "{argv:?}");
        }
    }

    #[test]
    fn without_a_file_value_the_defaults_stay() {
        let (cli, _) = merged(&["undo", "abc"], "port = 9\n").expect("merge");
        assert_eq!(cli.db, Path::new("sync.db"));
        assert!(
            dirs_of(&cli).is_empty(),
            "the database's mapping must still apply"
        );
    }

    #[test]
    fn gc_takes_the_daemon_s_staging_max_age() {
        let (cli, _) = merged(&["gc"], "staging-max-age = \"7d\"\n").expect("merge");
        assert!(matches!(
            cli.command,
            Command::Gc { configured_max_age: Some(d), .. } if d.as_secs() == 7 * 86_400
        ));
        let err = merged(&["gc"], "staging-max-age = \"7\"\n").expect_err("no unit");
        assert!(format!("{err:#}").contains("staging-max-age"), "{err:#}");
    }

    #[test]
    fn a_broken_daemon_file_is_refused_with_its_line() {
        let err = merged(&["list"], "db = \"x.db\"\ndb = \"y.db\"\n").expect_err("duplicate key");
        let shown = format!("{err:#}");
        assert!(shown.contains("daemon.toml:2:"), "{shown}");
        let err = merged(
            &["list"],
            "port = 9
db = 5
",
        )
        .expect_err("a number for a path");
        let shown = format!("{err:#}");
        assert!(
            shown.contains("daemon.toml:2:6") && shown.contains("`db` is text"),
            "{shown}"
        );
        let err = merged(&["show", "abc"], "dirs = \"a:/x\"\n").expect_err("not a list");
        let shown = format!("{err:#}");
        assert!(
            shown.contains("daemon.toml:1:8") && shown.contains("list"),
            "{shown}"
        );
    }
}
