//! What each config file may hold: one key per flag, named as the long flag without `--`
//! (`token-file`, `log-level`), so the file and `--help` read alike. Unknown keys are
//! refused, so a typo is an error instead of a setting that silently does nothing.

use std::path::PathBuf;

use serde::Deserialize;

/// `daemon.toml`: the settings of `zync-daemon` on machine E. `zync-apply` reads the same file
/// (it runs on E) and takes `db` and `dirs` from it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct DaemonFile {
    /// `--host`: the address to listen on.
    pub host: Option<String>,
    /// `--port`: the port to listen on.
    pub port: Option<u16>,
    /// `--db`: the SQLite index.
    pub db: Option<PathBuf>,
    /// `--dirs`: the directories to serve, as `NAME:PATH`.
    pub dirs: Option<Vec<String>>,
    /// `--ignore`: extra ignore patterns, gitignore syntax.
    pub ignore: Option<Vec<String>>,
    /// `--no-default-ignores`: true drops the built-in ignore list.
    pub no_default_ignores: Option<bool>,
    /// `--token-file`: the access token's file.
    pub token_file: Option<PathBuf>,
    /// `--insecure-no-auth`: true accepts clients without a token.
    pub insecure_no_auth: Option<bool>,
    /// `--idle-timeout`: seconds an authenticated client may stay silent.
    pub idle_timeout: Option<u64>,
    /// `--log-level`: the daemon's log level.
    pub log_level: Option<String>,
    /// `--tunnel`: `[USER@]HOST` of machine R, to keep the reverse ssh tunnel open.
    pub tunnel: Option<String>,
    /// `--tunnel-socket`: the Unix socket the tunnel opens on R (the default forward).
    pub tunnel_socket: Option<String>,
    /// `--tunnel-remote-port`: a TCP port the tunnel opens on R instead of the socket.
    pub tunnel_remote_port: Option<u16>,
    /// `--ssh-port`: the port of R's sshd.
    pub ssh_port: Option<u16>,
    /// `--ssh-option`: ssh_config options for the tunnel, as `KEY=VALUE`.
    pub ssh_option: Option<Vec<String>>,
    /// `--ssh-command`: the ssh program.
    pub ssh_command: Option<String>,
}

/// `client.toml`: the settings of `zync-client` on machine R. The run modes (`--once`,
/// `--update-upstream`) are not settings and stay flags.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct ClientFile {
    /// `--server`: `unix:PATH` (the tunnel's socket on R) or the daemon's WebSocket URL.
    pub server: Option<String>,
    /// `--db`: the client's SQLite state.
    pub db: Option<PathBuf>,
    /// `--interval`: the safety-net poll, in seconds.
    pub interval: Option<u64>,
    /// `--dirs`: the mappings, as `NAME:LOCAL_PATH`.
    pub dirs: Option<Vec<String>>,
    /// `--token-file`: the daemon's token, copied from E.
    pub token_file: Option<PathBuf>,
    /// `--stall-timeout`: seconds of silence after which a connection counts as stalled.
    pub stall_timeout: Option<u64>,
    /// `--log-level`: the client's log level.
    pub log_level: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The examples in docs/ are what users copy: every key in them must parse.
    #[test]
    fn the_example_files_in_docs_parse() {
        let daemon: DaemonFile =
            toml::from_str(include_str!("../../../docs/daemon.example.toml")).expect("daemon");
        assert!(daemon.dirs.is_some_and(|d| !d.is_empty()), "no dirs");
        let client: ClientFile =
            toml::from_str(include_str!("../../../docs/client.example.toml")).expect("client");
        assert!(client.dirs.is_some_and(|d| !d.is_empty()), "no dirs");
        assert!(client.server.is_some(), "no server");
    }

    #[test]
    fn keys_are_the_flag_names() {
        let file: ClientFile = toml::from_str(
            "server = \"ws://localhost:9000\"\ntoken-file = \"t\"\nstall-timeout = 9\nlog-level = \"debug\"\n",
        )
        .expect("parse");
        assert_eq!(file.token_file, Some(PathBuf::from("t")));
        assert_eq!(file.stall_timeout, Some(9));
        let err = toml::from_str::<ClientFile>("token_file = \"t\"\n")
            .expect_err("snake_case must be refused, not ignored");
        assert!(err.message().contains("token-file"), "{err}");
        let empty: DaemonFile = toml::from_str("").expect("an empty file is no config");
        assert_eq!(empty, DaemonFile::default());
    }
}
