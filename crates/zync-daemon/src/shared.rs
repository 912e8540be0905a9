//! What every connection task shares with the server and the daemon: the served directories,
//! the index's path and id, the token check, the deadlines, the indexer's progress, the
//! daemon's own files and the staging limits, plus the
//! WebSocket type. Kept below `server` and `connection` so that neither has to import the other
//! for them.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio_tungstenite::WebSocketStream;
use zync_fs::{DirName, IgnoreRules};

use crate::budget::{Budget, StagingLimits};
use crate::indexer::Status;
use crate::own::OwnPaths;
use crate::token::Auth;

/// A connection's WebSocket.
pub(crate) type Ws = WebSocketStream<TcpStream>;

/// The default for how long a connection may take from accept to a verified AUTH.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);
/// The default for how long an authenticated client may stay silent. The zync client pings at
/// least once a minute while it is idle, so only a dead or hostile peer is cut off.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(120);

/// The deadlines a connection lives by.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// From accept to a verified AUTH.
    pub handshake: Duration,
    /// With no frame from an authenticated client while the daemon waits for one.
    pub idle: Duration,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            handshake: HANDSHAKE_TIMEOUT,
            idle: IDLE_TIMEOUT,
        }
    }
}

/// A served directory, as connections see it.
pub struct ServedRoot {
    /// The name clients use.
    pub name: DirName,
    /// Canonical path.
    pub path: PathBuf,
    /// Ignore rules (GET_FILE refuses ignored paths).
    pub rules: Arc<IgnoreRules>,
}

/// What every connection shares.
pub struct Shared {
    /// The index id, sent in the handshake.
    pub index_id: String,
    /// Served directories.
    pub roots: Vec<ServedRoot>,
    /// The index database (each connection opens its own read connection).
    pub db_path: PathBuf,
    /// Token check.
    pub auth: Auth,
    /// Handshake and idle deadlines.
    pub limits: Limits,
    /// The indexer's progress.
    pub status: watch::Receiver<Status>,
    /// The daemon's own files, refused as upstream paths.
    pub own: OwnPaths,
    /// What R may stage.
    pub staging: StagingLimits,
    /// Uploads being received on every connection, counted against `staging`.
    pub(crate) budget: Budget,
}

impl Shared {
    /// The served directory called `name`.
    pub fn root(&self, name: &str) -> Option<&ServedRoot> {
        self.roots.iter().find(|r| r.name.as_str() == name)
    }
}
