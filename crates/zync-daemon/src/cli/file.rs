//! The daemon's config file merged into its command line: a flag given on the command line
//! wins over `daemon.toml`, which wins over the built-in default. `--dirs` is
//! required only after merging, so it may live in the file.

use anyhow::bail;
use clap::ArgMatches;
use zync_cli::{merge, DaemonFile, Loaded};

use super::Args;

/// The config file's name in `~/.config/zync/`.
pub const FILE_NAME: &str = "daemon.toml";

impl Args {
    /// These arguments (parsed from `matches`) with the settings of the config file
    /// (`--config`, or `~/.config/zync/daemon.toml` when it exists) filled in where no flag
    /// was given.
    ///
    /// # Errors
    /// A config file that is missing (`--config` only), unreadable or invalid (with its line
    /// and column), or no `--dirs` in either place (naming the config file looked at).
    pub fn with_config_file(mut self, matches: &ArgMatches) -> anyhow::Result<Args> {
        let file = zync_cli::load::<DaemonFile>(self.config.as_deref(), FILE_NAME)?;
        self.merge_file(&file, matches)?;
        Ok(self)
    }

    fn merge_file(
        &mut self,
        file: &Loaded<DaemonFile>,
        matches: &ArgMatches,
    ) -> anyhow::Result<()> {
        let values = file.values.clone();
        merge(matches, "host", &mut self.host, values.host);
        merge(matches, "port", &mut self.port, values.port);
        let db = values.db.map(|p| file.resolve(&p)).transpose()?;
        merge(matches, "db", &mut self.db, db);
        let dirs = values
            .dirs
            .map(|d| d.iter().map(|s| file.resolve_spec(s)).collect())
            .transpose()?;
        merge(matches, "dirs", &mut self.dirs, dirs);
        merge(matches, "ignore", &mut self.ignore, values.ignore);
        merge(
            matches,
            "no_default_ignores",
            &mut self.no_default_ignores,
            values.no_default_ignores,
        );
        let token_file = values.token_file.map(|p| file.resolve(&p)).transpose()?;
        merge(
            matches,
            "token_file",
            &mut self.token_file,
            token_file.map(Some),
        );
        merge(
            matches,
            "insecure_no_auth",
            &mut self.insecure_no_auth,
            values.insecure_no_auth,
        );
        merge(
            matches,
            "idle_timeout",
            &mut self.idle_timeout,
            values.idle_timeout,
        );
        merge(matches, "log_level", &mut self.log_level, values.log_level);
        merge(matches, "tunnel", &mut self.tunnel, values.tunnel.map(Some));
        // The two kinds of forward exclude each other: a flag for one overrides the file's
        // setting of the other, as any flag overrides the file.
        let socket_flag = zync_cli::given(matches, "tunnel_socket");
        let port_flag = zync_cli::given(matches, "tunnel_remote_port");
        if !port_flag {
            merge(
                matches,
                "tunnel_socket",
                &mut self.tunnel_socket,
                values.tunnel_socket.map(Some),
            );
        }
        if !socket_flag {
            merge(
                matches,
                "tunnel_remote_port",
                &mut self.tunnel_remote_port,
                values.tunnel_remote_port.map(Some),
            );
        }
        if self.tunnel_socket.is_some() && self.tunnel_remote_port.is_some() {
            bail!(
                "{} sets both tunnel-socket and tunnel-remote-port; keep one: the socket (only you can use it on R) or the TCP port",
                file.describe()
            );
        }
        merge(
            matches,
            "ssh_port",
            &mut self.ssh_port,
            values.ssh_port.map(Some),
        );
        merge(
            matches,
            "ssh_options",
            &mut self.ssh_options,
            values.ssh_option,
        );
        merge(
            matches,
            "ssh_command",
            &mut self.ssh_command,
            values.ssh_command,
        );
        if self.dirs.is_empty() {
            bail!(
                "no directories to serve: pass --dirs NAME:PATH..., or set dirs = [\"NAME:PATH\", ...] in {} (docs/daemon.example.toml shows every key)",
                file.describe()
            );
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::path::{Path, PathBuf};

    use clap::{CommandFactory, FromArgMatches};

    use super::*;

    /// Parses `argv` and merges a config file with `text` (written to a temp dir).
    fn merged(argv: &[&str], text: &str) -> anyhow::Result<(Args, tempfile::TempDir)> {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join(FILE_NAME);
        std::fs::write(&path, text)?;
        let mut all = vec!["zync-daemon", "--config", path.to_str().unwrap_or_default()];
        all.extend_from_slice(argv);
        let matches = Args::command().try_get_matches_from(all)?;
        let args = Args::from_arg_matches(&matches)?;
        Ok((args.with_config_file(&matches)?, dir))
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
        assert_eq!(args.log_level, "debug");
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
        assert_eq!(args.log_level, "warn");
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
        assert_eq!(args.log_level, "info");
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
        assert!(shown.contains("unknown field `prot`"), "{shown}");
    }
}
