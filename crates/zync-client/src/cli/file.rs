//! The client's config file merged into its command line: a flag given on the command line
//! wins over `client.toml`, which wins over the built-in default, so a setting can live in the
//! file and still be overridden for one run. `--dirs` is required only after merging, so it may
//! live in the file.

use std::ffi::OsString;

use anyhow::bail;
use zync_cli::settings::Entries;

use super::Args;

/// The config file's name in `~/.config/zync/`.
pub const FILE_NAME: &str = "client.toml";

impl Args {
    /// These arguments (parsed from `argv`) with the settings of the config file (`--config`,
    /// or `~/.config/zync/client.toml` when it exists) filled in where no flag was given. The
    /// settings are the flags under the `zync_cli::SETTINGS` heading.
    ///
    /// # Errors
    /// A config file that is missing (`--config` only), unreadable or invalid (with its line
    /// and column), or no `--dirs` in either place (naming the config file looked at).
    pub fn with_config_file(self, argv: &[OsString]) -> anyhow::Result<Args> {
        let file = zync_cli::load::<Entries>(self.config.as_deref(), FILE_NAME)?;
        let args: Args = zync_cli::settings::merge(argv, &file)?;
        if args.dirs.is_empty() {
            bail!(
                "no directories to sync: pass --dirs NAME:LOCAL_PATH..., or set dirs = [\"NAME:LOCAL_PATH\", ...] in {} (docs/client.example.toml shows every key)",
                file.describe()
            );
        }
        Ok(args)
    }
}

#[cfg(test)]
mod tests {
    use std::path::{Path, PathBuf};

    use clap::Parser;

    use super::*;

    /// Parses `argv` and merges a config file with `text` (written to a temp dir).
    fn merged(argv: &[&str], text: &str) -> anyhow::Result<(Args, tempfile::TempDir)> {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join(FILE_NAME);
        std::fs::write(&path, text)?;
        let mut all = vec!["zync-client", "--config", path.to_str().unwrap_or_default()];
        all.extend_from_slice(argv);
        let argv: Vec<OsString> = all.iter().map(OsString::from).collect();
        let args = Args::try_parse_from(&argv)?;
        Ok((args.with_config_file(&argv)?, dir))
    }

    /// A file that sets every key to something other than its default.
    const EVERY_KEY: &str = r#"
server = "ws://localhost:9001"
db = "state/client.db"
interval = 7
dirs = ["code:r/code", "abs:/srv/abs"]
token-file = "~/t.token"
stall-timeout = 9
log-level = "debug"
"#;

    #[test]
    fn every_key_of_the_file_is_used_when_no_flag_is_given() {
        let (args, tmp) = merged(&[], EVERY_KEY).expect("merge");
        let dir = tmp.path();
        let home = dirs::home_dir().expect("home");
        assert_eq!(args.server, "ws://localhost:9001");
        assert_eq!(args.db, dir.join("state/client.db"), "relative to the file");
        assert_eq!(args.interval, 7);
        assert_eq!(
            args.dirs,
            vec![
                format!("code:{}", dir.join("r/code").display()),
                "abs:/srv/abs".to_string()
            ]
        );
        assert_eq!(args.token_file, Some(home.join("t.token")));
        assert_eq!(args.stall_timeout, 9);
        assert_eq!(args.log_level.as_deref(), Some("debug"));
    }

    #[test]
    fn every_flag_wins_over_the_file() {
        let argv = [
            "--server",
            "ws://127.0.0.1:9002",
            "--db",
            "flag.db",
            "--interval",
            "8",
            "--dirs",
            "flag:/flag",
            "--token-file",
            "flag.token",
            "--stall-timeout",
            "10",
            "--log-level",
            "warn",
            "--once",
        ];
        let (args, _) = merged(&argv, EVERY_KEY).expect("merge");
        assert_eq!(args.server, "ws://127.0.0.1:9002");
        assert_eq!(args.db, Path::new("flag.db"), "relative to the working dir");
        assert_eq!(args.interval, 8);
        assert_eq!(
            args.dirs,
            vec!["flag:/flag"],
            "--dirs replaces the file's list"
        );
        assert_eq!(args.token_file, Some(PathBuf::from("flag.token")));
        assert_eq!(args.stall_timeout, 10);
        assert_eq!(args.log_level.as_deref(), Some("warn"));
        assert!(args.once);
    }

    #[test]
    fn the_built_in_defaults_stay_when_neither_sets_a_value() {
        let (args, _) = merged(&[], "dirs = [\"a:/a\"]\n").expect("merge");
        assert_eq!(args.server, "ws://localhost:8000");
        assert_eq!(args.db, Path::new("sync_client.db"));
        assert_eq!((args.interval, args.stall_timeout), (60, 20));
        assert!(args.token_file.is_none());
        assert_eq!(args.log_level, None);
    }

    #[test]
    fn dirs_are_required_after_merging_and_the_error_names_the_file() {
        let err = merged(&[], "interval = 5\n").expect_err("no dirs anywhere");
        let shown = format!("{err:#}");
        assert!(shown.contains("--dirs"), "{shown}");
        assert!(shown.contains("set dirs = "), "{shown}");
        assert!(shown.contains(FILE_NAME), "the file is not named: {shown}");
        assert!(
            merged(&["--dirs", "a:/a"], "").is_ok(),
            "a flag alone is enough"
        );
    }

    #[test]
    fn a_socket_path_in_the_file_is_resolved_like_its_other_paths() {
        let (args, tmp) =
            merged(&["--dirs", "a:/a"], "server = \"unix:run/zync.sock\"\n").expect("merge");
        let expected = format!("unix:{}", tmp.path().join("run/zync.sock").display());
        assert_eq!(args.server, expected, "relative to the file");
        let (args, _) =
            merged(&["--dirs", "a:/a"], "server = \"unix:~/.zync/zync.sock\"\n").expect("merge");
        let home = dirs::home_dir().expect("home");
        let expected = format!("unix:{}", home.join(".zync/zync.sock").display());
        assert_eq!(args.server, expected, "~/ is the home directory");
    }

    #[test]
    fn the_run_modes_are_not_settings() {
        let err = merged(&["--dirs", "a:/a"], "once = true\n").expect_err("once in a file");
        let shown = format!("{err:#}");
        assert!(shown.contains("client.toml:1:1"), "{shown}");
        assert!(
            shown.contains("`once` is a flag only, not a setting"),
            "{shown}"
        );
    }

    /// The example in docs/ is what users copy: every key in it must be a setting.
    #[test]
    fn the_example_file_in_docs_is_read() {
        let example = include_str!("../../../../docs/client.example.toml");
        let (args, _) = merged(&[], example).expect("the example");
        assert!(!args.dirs.is_empty(), "no dirs");
    }
}
