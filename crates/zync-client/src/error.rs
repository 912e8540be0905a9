//! The client's error type: what failed, and whether trying again later can help.

use std::time::Duration;

use zync_proto::ErrorCode;

/// Everything a sync round can fail with.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// No connection (TCP or Unix socket) or WebSocket upgrade could be made.
    #[error("cannot reach the daemon at {url}: {reason}; check that zync-daemon runs on E and the tunnel is open")]
    Unreachable {
        /// The --server URL or `unix:PATH`.
        url: String,
        /// What the connection attempt said.
        reason: String,
    },
    /// The Unix socket could be served or replaced by another user; the message says how to
    /// fix that.
    #[error("{0}")]
    Untrusted(String),
    /// The daemon did not accept this client's proof of the token.
    #[error("the daemon refused this client: it could not prove that it holds the daemon's token; {hint}")]
    Unauthorized {
        /// Where the client's token came from and how to fix it.
        hint: String,
    },
    /// The peer at the server address could not prove that it holds the token: nothing was
    /// sent to it but the client's id and a nonce, and nothing was written.
    #[error("the server at {url} did not prove that it is the zync daemon: {why}. Either the daemon's token differs from this client's (copy the daemon's token file to R again), or another program is listening there ({who}). Nothing was sent to it and nothing was written")]
    NotTheDaemon {
        /// The --server address.
        url: String,
        /// What the peer got wrong.
        why: String,
        /// How to see which program listens there.
        who: String,
    },
    /// The daemon runs a zync this client cannot talk to.
    #[error("{0}")]
    Incompatible(String),
    /// The daemon stopped answering (a stalled tunnel).
    #[error("the daemon did not answer within {0:?}; the connection or tunnel seems stalled")]
    Timeout(Duration),
    /// The connection broke.
    #[error("the connection to the daemon was lost: {0}")]
    Connection(String),
    /// The daemon answered a request with an error.
    #[error("the daemon refused the request ({code:?}): {}", zync_cli::visible::line(.message))]
    Server {
        /// The error class.
        code: ErrorCode,
        /// The daemon's explanation.
        message: String,
    },
    /// The daemon sent something this client does not understand.
    #[error("unexpected message from the daemon: {0}")]
    Protocol(String),
    /// A local file operation failed.
    #[error(transparent)]
    Fs(#[from] zync_fs::FsError),
    /// The client database failed.
    #[error("the client database failed: {0}")]
    Db(#[from] zync_db::DbError),
    /// Something on R stands in the way of one path (a fifo, a socket, an unreadable file).
    #[error("cannot apply {path}: {reason}")]
    Blocked {
        /// The local path.
        path: String,
        /// What is in the way and what to do.
        reason: String,
    },
    /// A local file operation outside zync-fs failed.
    #[error("cannot {what} {path}: {source}")]
    Io {
        /// What was attempted.
        what: &'static str,
        /// The local path.
        path: String,
        /// The OS error.
        source: std::io::Error,
    },
    /// A setting is wrong; the message says which and how to fix it.
    #[error("{0}")]
    Config(String),
    /// Another client writes this database; the message names it.
    #[error("{0}")]
    Busy(String),
}

impl ClientError {
    /// True when reconnecting or retrying later cannot help, so loop mode should stop.
    pub fn is_permanent(&self) -> bool {
        match self {
            ClientError::Unauthorized { .. }
            | ClientError::NotTheDaemon { .. }
            | ClientError::Incompatible(_)
            | ClientError::Config(_)
            | ClientError::Busy(_)
            | ClientError::Untrusted(_) => true,
            ClientError::Server { code, .. } => {
                matches!(code, ErrorCode::UnsupportedVersion | ErrorCode::UnknownDir)
            }
            _ => false,
        }
    }

    /// True for a path failure that may clear by itself shortly: the file changed on E during
    /// its transfer, so a newer change is on its way.
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            ClientError::Server {
                code: ErrorCode::Stale,
                ..
            } | ClientError::Fs(zync_fs::FsError::HashMismatch { .. })
        )
    }

    /// True when the error concerns the connection (reconnect) rather than one path.
    pub fn is_connection(&self) -> bool {
        matches!(
            self,
            ClientError::Unreachable { .. }
                | ClientError::Untrusted(_)
                | ClientError::Unauthorized { .. }
                | ClientError::NotTheDaemon { .. }
                | ClientError::Incompatible(_)
                | ClientError::Timeout(_)
                | ClientError::Connection(_)
                | ClientError::Protocol(_)
        )
    }
}

/// Paths a `--once` run could not sync (exit code [`exit::PARTIAL`]).
#[derive(Debug, thiserror::Error)]
#[error("{count} path(s) could not be synced; fix them and run again:\n  {}{}", .shown.join("\n  "), unshown(*.count, .shown.len()))]
pub struct PathsFailed {
    /// How many.
    pub count: usize,
    /// The first of them, each with its reason (a few hundred at most).
    pub shown: Vec<String>,
}

/// The line that stands for the failing paths not shown.
fn unshown(count: usize, shown: usize) -> String {
    match count.saturating_sub(shown) {
        0 => String::new(),
        more => format!("\n  and {more} more; `zync-client --status` lists them all"),
    }
}

/// The exit codes of `zync-client`, as `--help` documents them (rsync documents its own the
/// same way, so a script can tell "try again later" from "fix something").
pub mod exit {
    /// Done: R holds what E had (`--once`), or the push was staged (`--update-upstream`).
    pub const OK: u8 = 0;
    /// Any other error: R's database, a local file operation, something unexpected.
    pub const ERROR: u8 = 1;
    /// A bad command line or config file.
    pub const USAGE: u8 = 2;
    /// In sync, but edits made on R were kept beside E's versions as conflict copies.
    pub const CONFLICTS: u8 = 3;
    /// Some paths could not be synced or sent; the rest were.
    pub const PARTIAL: u8 = 4;
    /// The daemon could not be reached, or the connection was lost or stalled: try again.
    pub const UNREACHABLE: u8 = 5;
    /// Authentication failed either way (wrong token, a server that is not the daemon, a
    /// socket others can reach), or the daemon runs an incompatible version.
    pub const REFUSED: u8 = 6;
    /// `--wait` gave up before R had everything E had; what is outstanding is on stderr.
    pub const TIMED_OUT: u8 = 7;
}

/// The exit code for an error that ended a run.
pub fn exit_code(err: &anyhow::Error) -> u8 {
    if err.downcast_ref::<PathsFailed>().is_some() {
        return exit::PARTIAL;
    }
    match err.downcast_ref::<ClientError>() {
        Some(
            ClientError::Config(_)
            | ClientError::Server {
                code: ErrorCode::UnknownDir,
                ..
            },
        ) => exit::USAGE,
        Some(ClientError::Server {
            code: ErrorCode::UnsupportedVersion,
            ..
        }) => exit::REFUSED,
        Some(
            ClientError::Unreachable { .. } | ClientError::Timeout(_) | ClientError::Connection(_),
        ) => exit::UNREACHABLE,
        Some(
            ClientError::Unauthorized { .. }
            | ClientError::NotTheDaemon { .. }
            | ClientError::Untrusted(_)
            | ClientError::Incompatible(_),
        ) => exit::REFUSED,
        _ => exit::ERROR,
    }
}
