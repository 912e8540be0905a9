//! The daemon's config file merged into its command line: a flag given on the command line
//! wins over `daemon.toml`, which wins over the built-in default. `--dirs` is
//! required only after merging, so it may live in the file.

use std::ffi::OsString;

use anyhow::bail;
use zync_cli::settings::Entries;

use super::Args;

/// The config file's name in `~/.config/zync/`.
pub const FILE_NAME: &str = "daemon.toml";

impl Args {
    /// These arguments (parsed from `argv`) with the settings of the config file (`--config`,
    /// or `~/.config/zync/daemon.toml` when it exists) filled in where no flag was given. The
    /// settings are the flags under the `zync_cli::SETTINGS` heading. A flag for one kind of
    /// tunnel forward (socket or TCP port) overrides the file's setting of the other, as any
    /// flag overrides the file.
    ///
    /// # Errors
    /// A config file that is missing (`--config` only), unreadable or invalid (with its line
    /// and column), or no `--dirs` in either place (naming the config file looked at).
    pub fn with_config_file(self, argv: &[OsString]) -> anyhow::Result<Args> {
        let file = zync_cli::load::<Entries>(self.config.as_deref(), FILE_NAME)?;
        let args: Args = zync_cli::settings::merge(argv, &file)?;
        if args.dirs.is_empty() {
            bail!(
                "no directories to serve: pass --dirs NAME:PATH..., or set dirs = [\"NAME:PATH\", ...] in {} (docs/daemon.example.toml shows every key)",
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
        let mut all = vec!["zync-daemon", "--config", path.to_str().unwrap_or_default()];
        all.extend_from_slice(argv);
        let argv: Vec<OsString> = all.iter().map(OsString::from).collect();
        let args = Args::try_parse_from(&argv)?;
        Ok((args.with_config_file(&argv)?, dir))
    }

    /// A file that sets every key to something other than its default.
    const EVERY_KEY: &str = r#"
host = "127.0.0.2"
port = 9001
db = "state/index.db"
dirs = ["code:src", "abs:/srv/abs"]
ignore = ["*.log"]
no-default-ignores = true
token-file = "~/t.token"
insecure-no-auth = true
log-level = "debug"
max-session-bytes = "1GiB"
max-staged-bytes = 5000000
max-session-files = 7
max-pending-sessions = 2
upload-stall-timeout = 9
staging-max-age = "12h"
tunnel = "me@gpu-box"
tunnel-socket = "run/zync.sock"
ssh-port = 2222
ssh-option = ["IdentityFile=~/.ssh/id_zync"]
ssh-command = "/opt/ssh"
"#;

    #[test]
    fn every_key_of_the_file_is_used_when_no_flag_is_given() {
        let (args, tmp) = merged(&[], EVERY_KEY).expect("merge");
        let dir = tmp.path();
        let home = dirs::home_dir().expect("home");
        assert_eq!(args.host, "127.0.0.2");
        assert_eq!(args.port, 9001);
        assert_eq!(args.db, dir.join("state/index.db"), "relative to the file");
        assert_eq!(
            args.dirs,
            vec![
                format!("code:{}", dir.join("src").display()),
                "abs:/srv/abs".to_string()
            ]
        );
        assert_eq!(args.ignore, vec!["*.log"]);
        assert!(args.no_default_ignores);
        assert_eq!(args.token_file, Some(home.join("t.token")));
        assert!(args.insecure_no_auth);
        assert_eq!(args.log_level.as_deref(), Some("debug"));
        assert_eq!(
            (
                args.max_session_bytes,
                args.max_staged_bytes,
                args.max_session_files
            ),
            (1 << 30, 5_000_000, 7)
        );
        assert_eq!(
            (args.max_pending_sessions, args.upload_stall_timeout),
            (2, 9)
        );
        assert_eq!(args.staging_max_age.as_secs(), 12 * 3600);
        assert_eq!(args.tunnel.as_deref(), Some("me@gpu-box"));
        assert_eq!(args.tunnel_socket.as_deref(), Some("run/zync.sock"));
        assert_eq!((args.tunnel_remote_port, args.ssh_port), (None, Some(2222)));
        assert_eq!(args.ssh_options, vec!["IdentityFile=~/.ssh/id_zync"]);
        assert_eq!(args.ssh_command, "/opt/ssh");
    }

    #[test]
    fn every_flag_wins_over_the_file() {
        let argv = [
            "--host",
            "127.0.0.3",
            "--port",
            "9002",
            "--db",
            "flag.db",
            "--dirs",
            "flag:/flag",
            "--ignore",
            "*.tmp",
            "--token-file",
            "flag.token",
            "--log-level",
            "warn",
        ];
        let (args, _) = merged(&argv, EVERY_KEY).expect("merge");
        assert_eq!(args.host, "127.0.0.3");
        assert_eq!(args.port, 9002);
        assert_eq!(args.db, Path::new("flag.db"), "relative to the working dir");
        assert_eq!(
            args.dirs,
            vec!["flag:/flag"],
            "--dirs replaces the file's list"
        );
        assert_eq!(
            args.ignore,
            vec!["*.tmp"],
            "--ignore replaces the file's list"
        );
        assert_eq!(args.token_file, Some(PathBuf::from("flag.token")));
        assert_eq!(args.log_level.as_deref(), Some("warn"));
        // A true in the file cannot be turned off by an absent flag; a set flag stays set.
        let (args, _) = merged(
            &[
                "--dirs",
                "a:/a",
                "--no-default-ignores",
                "--insecure-no-auth",
            ],
            "no-default-ignores = false\ninsecure-no-auth = false\n",
        )
        .expect("merge");
        assert!(args.no_default_ignores && args.insecure_no_auth);
    }

    #[test]
    fn a_flag_for_one_kind_of_forward_overrides_the_file_s_other_kind() {
        let (args, _) = merged(
            &["--tunnel", "r", "--tunnel-remote-port", "9200"],
            EVERY_KEY,
        )
        .expect("port flag");
        assert_eq!(
            (args.tunnel_socket, args.tunnel_remote_port),
            (None, Some(9200))
        );
        let port_file = "dirs = [\"a:/a\"]\ntunnel = \"r\"\ntunnel-remote-port = 9100\n";
        let (args, _) = merged(&["--tunnel", "r", "--tunnel-socket", "s.sock"], port_file)
            .expect("socket flag");
        assert_eq!(
            (args.tunnel_socket.as_deref(), args.tunnel_remote_port),
            (Some("s.sock"), None)
        );
        let (args, _) = merged(&[], port_file).expect("the file's port");
        assert_eq!(
            (args.tunnel_socket, args.tunnel_remote_port),
            (None, Some(9100))
        );
        let both = format!("{port_file}tunnel-socket = \"s.sock\"\n");
        let err = format!("{:#}", merged(&[], &both).expect_err("both in the file"));
        assert!(
            err.contains("tunnel-socket") && err.contains(FILE_NAME),
            "{err}"
        );
    }

    #[test]
    fn the_built_in_defaults_stay_when_neither_sets_a_value() {
        let (args, _) = merged(&[], "dirs = [\"a:/a\"]\n").expect("merge");
        assert_eq!(args.host, "localhost");
        assert_eq!(args.port, 8000);
        assert_eq!(args.db, Path::new("sync.db"));
        assert!(args.ignore.is_empty() && args.token_file.is_none());
        assert!(!args.no_default_ignores && !args.insecure_no_auth);
        assert_eq!(args.log_level, None);
        assert_eq!(
            (
                args.max_session_bytes,
                args.max_staged_bytes,
                args.max_session_files
            ),
            (4 << 30, 16 << 30, 100_000),
            "the staging limits' defaults"
        );
        assert_eq!(
            (args.max_pending_sessions, args.upload_stall_timeout),
            (16, 60)
        );
        assert_eq!(args.staging_max_age.as_secs(), 30 * 86_400);
    }

    #[test]
    fn dirs_are_required_after_merging_and_the_error_names_the_file() {
        let err = merged(&[], "port = 9001\n").expect_err("no dirs anywhere");
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
    fn a_broken_file_names_its_line() {
        let err = merged(&["--dirs", "a:/a"], "port = 9001\nprot = 1\n").expect_err("typo");
        let shown = format!("{err:#}");
        assert!(shown.contains("daemon.toml:2:1"), "{shown}");
        assert!(shown.contains("unknown key `prot`"), "{shown}");
    }

    /// The example in docs/ is what users copy: every key in it must be a setting.
    #[test]
    fn the_example_file_in_docs_is_read() {
        let example = include_str!("../../../../docs/daemon.example.toml");
        let (args, _) = merged(&[], example).expect("the example");
        assert!(!args.dirs.is_empty(), "no dirs");
    }
}
