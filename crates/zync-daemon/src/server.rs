//! The WebSocket server: accepts connections (bearer token checked in the upgrade request,
//! before any message is read), runs one task per connection, and stops on shutdown.

use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{broadcast, watch, Semaphore};
use tokio::task::JoinSet;
use tokio_tungstenite::tungstenite::handshake::server::{ErrorResponse, Request, Response};
use tokio_tungstenite::tungstenite::http;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use zync_fs::{DirName, IgnoreRules};

use crate::connection::Connection;
use crate::indexer::Status;
use crate::token::Auth;

/// At most this many connections are served at once; more wait in the accept queue.
const MAX_CONNECTIONS: usize = 256;

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
    /// The indexer's progress.
    pub status: watch::Receiver<Status>,
}

impl Shared {
    /// The served directory called `name`.
    pub fn root(&self, name: &str) -> Option<&ServedRoot> {
        self.roots.iter().find(|r| r.name.as_str() == name)
    }
}

/// WebSocket limits: a JSON message or one chunk frame, never more (docs/PROTOCOL.md).
pub fn ws_config() -> WebSocketConfig {
    WebSocketConfig::default()
        .max_message_size(Some(
            zync_proto::MAX_TEXT_MESSAGE.max(zync_proto::MAX_BINARY_FRAME),
        ))
        .max_frame_size(Some(
            zync_proto::MAX_TEXT_MESSAGE.max(zync_proto::MAX_BINARY_FRAME),
        ))
}

/// Accepts connections until `shutdown` completes, then closes every connection and returns.
///
/// # Errors
/// When accepting fails in a way that retrying cannot fix.
pub async fn serve(
    listener: TcpListener,
    shared: Arc<Shared>,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    let (stop_tx, _) = broadcast::channel::<()>(1);
    let limit = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let mut tasks = JoinSet::new();
    tokio::pin!(shutdown);
    loop {
        let permit = tokio::select! {
            permit = limit.clone().acquire_owned() => permit?,
            () = &mut shutdown => break,
        };
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Usually EMFILE: back off instead of spinning.
                    tracing::warn!("cannot accept a connection: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        while tasks.try_join_next().is_some() {}
        let shared = shared.clone();
        let stop = stop_tx.subscribe();
        tasks.spawn(async move {
            tracing::debug!(%peer, "connection opened");
            handle(stream, shared, stop).await;
            tracing::debug!(%peer, "connection closed");
            drop(permit);
        });
    }
    let _ = stop_tx.send(());
    let drain = async { while tasks.join_next().await.is_some() {} };
    if tokio::time::timeout(Duration::from_secs(5), drain)
        .await
        .is_err()
    {
        tasks.abort_all();
    }
    Ok(())
}

async fn handle(stream: TcpStream, shared: Arc<Shared>, stop: broadcast::Receiver<()>) {
    let _ = stream.set_nodelay(true);
    let auth = shared.auth.clone();
    // The callback's signature is tungstenite's; its error type is not ours to shrink.
    #[allow(clippy::result_large_err)]
    let check = move |request: &Request, response: Response| -> Result<Response, ErrorResponse> {
        let header = request
            .headers()
            .get(zync_proto::AUTH_HEADER)
            .and_then(|v| v.to_str().ok());
        if auth.allows(header) {
            return Ok(response);
        }
        tracing::warn!("refused a connection with a missing or wrong token");
        let mut refusal = http::Response::new(Some(
            "zync: missing or wrong token; send Authorization: Bearer <token> with the token from the daemon's token file\n"
                .to_string(),
        ));
        *refusal.status_mut() = http::StatusCode::UNAUTHORIZED;
        Err(refusal)
    };
    let ws = match tokio_tungstenite::accept_hdr_async_with_config(stream, check, Some(ws_config()))
        .await
    {
        Ok(ws) => ws,
        Err(e) => {
            tracing::debug!("WebSocket handshake failed: {e}");
            return;
        }
    };
    Connection::new(ws, shared).run(stop).await;
}
