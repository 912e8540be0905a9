//! The WebSocket server: accepts connections, gives each a deadline to prove that it holds the
//! token (the handshake), runs one task per authenticated client, and stops on shutdown.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use futures_util::SinkExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{broadcast, Semaphore};
use tokio::task::JoinSet;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::Message;
use zync_proto::{ErrorCode, ErrorResponse, ServerMessage};

use crate::admission::{Admission, Origin, Ticket};
use crate::connection::Connection;
use crate::handshake;
use crate::shared::Shared;
use zync_cli::peer_uid;

/// At most this many authenticated clients are served at once; one more is told the daemon is
/// busy.
const MAX_CONNECTIONS: usize = 256;
/// At most this many connections wait for their handshake at once; a newer one pushes out the
/// one that made the least progress, a stranger's before one of the daemon's own user's, and a
/// stranger's newcomer is refused when only the daemon's own user's wait (see [`Admission`]).
const MAX_HANDSHAKING: usize = 64;

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
/// Connections are accepted at once, whoever opens them: a stranger's connections wait in
/// [`Admission`] for their handshake, where they can neither hold a slot of an
/// authenticated client nor keep a real client from reaching its own handshake. The real
/// client comes through the tunnel, E's `ssh`: a process of the daemon's own user, which the
/// kernel names ([`peer_uid::lookup`]) and other users cannot pose as.
///
/// # Errors
/// When accepting fails in a way that retrying cannot fix.
pub async fn serve(
    listener: TcpListener,
    shared: Arc<Shared>,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    let (stop_tx, _) = broadcast::channel::<()>(1);
    let clients = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let admission = Admission::new(MAX_HANDSHAKING);
    // SAFETY: geteuid cannot fail.
    let own_uid = unsafe { libc::geteuid() };
    let mut tasks = JoinSet::new();
    tokio::pin!(shutdown);
    loop {
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
        // One netlink request answered at once, without waiting (see peer_uid).
        let owner = stream
            .local_addr()
            .and_then(|local| peer_uid::lookup(local, peer));
        let origin = match owner {
            Ok(uid) if uid == own_uid => Origin::Ours,
            _ => Origin::Stranger,
        };
        let Some(ticket) = admission.admit(origin) else {
            tracing::debug!(%peer, "refused a stranger's connection: only connections of the daemon's own user wait for their handshake");
            continue;
        };
        let shared = shared.clone();
        let clients = clients.clone();
        let stop = stop_tx.subscribe();
        tasks.spawn(async move {
            match owner {
                Ok(uid) => tracing::debug!(%peer, uid, ?origin, "connection opened"),
                Err(e) => {
                    tracing::debug!(%peer, ?origin, "connection opened; its owner is unknown: {e}")
                }
            }
            handle(stream, shared, clients, ticket, stop).await;
            tracing::debug!(%peer, "connection closed");
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

async fn handle(
    stream: TcpStream,
    shared: Arc<Shared>,
    clients: Arc<Semaphore>,
    mut ticket: Ticket,
    mut stop: broadcast::Receiver<()>,
) {
    let _ = stream.set_nodelay(true);
    let progress = ticket.progress();
    let handshake = async {
        let mut ws = tokio_tungstenite::accept_async_with_config(stream, Some(ws_config()))
            .await
            .map_err(|e| format!("WebSocket upgrade failed: {e}"))?;
        progress.upgraded();
        match handshake::run(&mut ws, &shared.auth).await {
            Ok(authenticated) => Ok((ws, authenticated)),
            Err(handshake::Failed::Gone) => Err("the peer left during the handshake".into()),
            Err(handshake::Failed::Refused(why)) => Err(why),
        }
    };
    let outcome = tokio::select! {
        outcome = tokio::time::timeout(shared.limits.handshake, handshake) => outcome,
        () = ticket.evicted() => {
            tracing::debug!("dropped a connection still in its handshake to admit a newer one");
            return;
        }
        _ = stop.recv() => return,
    };
    drop(ticket);
    let (mut ws, authenticated) = match outcome {
        Ok(Ok(done)) => done,
        Ok(Err(why)) => {
            tracing::debug!("handshake failed: {why}");
            return;
        }
        Err(_) => {
            tracing::debug!(
                "closed a connection that did not finish its handshake within {:?}",
                shared.limits.handshake
            );
            return;
        }
    };
    let Ok(permit) = clients.try_acquire_owned() else {
        tracing::warn!(client = %authenticated.client_id, "refused a client: {MAX_CONNECTIONS} clients are connected already");
        let busy = ServerMessage::Error(ErrorResponse {
            id: Some(authenticated.auth_id),
            code: ErrorCode::Busy,
            message: format!(
                "the daemon serves {MAX_CONNECTIONS} clients already; try again later"
            ),
        });
        let _ = ws.send(Message::text(busy.to_json())).await;
        let _ = ws.close(None).await;
        return;
    };
    Connection::new(ws, shared, authenticated).run(stop).await;
    drop(permit);
}
