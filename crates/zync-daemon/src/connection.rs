//! One authenticated client connection: the welcome that ends the handshake, then the frame
//! loop. Requests are answered in order (each by its [`Operation`]), change notifications are
//! pushed between them, and a connection silent for too long or a daemon shutting down ends
//! it. Bad input gets an error response and the connection goes on (invariant 7
//! (docs/ARCHITECTURE.md)); only transport failures end it.

use std::sync::Arc;

use tokio::sync::broadcast;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::Message;
use zync_proto::{ErrorCode, Event, OkResponse, Reply, ServerMessage, Welcome};

use crate::cmd::Operation;
use crate::context::Context;
use crate::handshake::Authenticated;
use crate::indexer::Status;
use crate::link::Link;
use crate::refusal::Refusal;
use crate::shared::{Shared, Ws};
use crate::staging::Discard;

/// How many clients the daemon remembers (for `zync-apply status` and `wait`) besides those
/// connected or with sessions waiting: far more than one person's machines, and a bound on
/// what a holder of the token saying HELLO under ever new ids leaves in E's database.
const KNOWN_CLIENTS: u64 = 1_000;

/// A connection whose client proved that it holds the token.
pub struct Connection {
    /// Frames to and from the client.
    link: Link,
    /// What the handlers work with.
    cx: Context,
    client_version: Option<String>,
    /// The directories the client mirrors, of those the daemon serves (None: it did not say).
    dirs: Option<Vec<String>>,
    /// The AUTH request the welcome answers.
    auth_id: u64,
    /// The indexer's status as the client was last told it.
    sent: Status,
}

impl Connection {
    /// Wraps a WebSocket whose client just proved itself.
    pub(crate) fn new(ws: Ws, shared: Arc<Shared>, client: Authenticated) -> Connection {
        let sent = *shared.status.borrow();
        // Only names the daemon serves are kept: whatever else a client claims is not recorded.
        let dirs = client.dirs.map(|dirs| {
            shared
                .roots
                .iter()
                .map(|r| r.name.to_string())
                .filter(|name| dirs.contains(name))
                .collect()
        });
        Connection {
            link: Link::new(ws),
            cx: Context::new(shared, client.client_id),
            client_version: client.client_version,
            dirs,
            auth_id: client.auth_id,
            sent,
        }
    }

    /// Welcomes the client, serves its requests until it leaves, the transport fails, it
    /// stays silent too long, or the daemon stops; then aborts an upstream session left
    /// unfinished.
    pub async fn run(mut self, stop: broadcast::Receiver<()>) {
        if !self.welcome().await {
            return;
        }
        self.serve(stop).await;
        self.cx.abort_upstream().await;
        // Presence for `zync-apply status`; a failure is logged by `query`.
        let client = self.cx.client_id.clone();
        let _ = self.cx.query(move |i| i.client_disconnected(&client)).await;
    }

    /// Answers AUTH with what the daemon serves, records the client as connected, and forgets
    /// the clients seen least recently beyond [`KNOWN_CLIENTS`].
    async fn welcome(&mut self) -> bool {
        tracing::info!(client = %self.cx.client_id, version = ?self.client_version, "client connected");
        let (client, version) = (self.cx.client_id.clone(), self.client_version.clone());
        let dirs = self.dirs.clone();
        let _ = self
            .cx
            .query(move |i| {
                i.client_connected(&client, version.as_deref())?;
                if let Some(dirs) = &dirs {
                    i.set_client_dirs(&client, dirs)?;
                }
                i.forget_old_clients(KNOWN_CLIENTS).map(|_| ())
            })
            .await;
        let shared = &self.cx.shared;
        let status = *shared.status.borrow();
        self.sent = status;
        let welcome = Reply::Auth(Welcome {
            protocol_version: zync_proto::PROTOCOL_VERSION,
            index_id: shared.index_id.clone(),
            dirs: shared.roots.iter().map(|r| r.name.to_string()).collect(),
            scanning: status.scanning,
            server_version: env!("CARGO_PKG_VERSION").to_string(),
            pipelining: Some(zync_proto::Pipelining {
                requests: crate::inbox::MAX_PIPELINED_REQUESTS,
                bytes: crate::inbox::MAX_PIPELINED_BYTES,
            }),
            get_files: Some(zync_proto::MAX_GET_FILES as u32),
        });
        let id = self.auth_id;
        self.link
            .send(&ServerMessage::Ok(OkResponse { id, reply: welcome }))
            .await
    }

    async fn serve(&mut self, mut stop: broadcast::Receiver<()>) {
        let mut status = self.cx.shared.status.clone();
        let mut watching = true;
        let idle = self.cx.shared.limits.idle;
        // Silence is counted only while the daemon waits: answering a long request is not the
        // client's silence.
        let mut waiting_since = tokio::time::Instant::now();
        loop {
            if let Some(message) = self.link.take_backlog() {
                if !self.on_message(message).await {
                    return;
                }
                waiting_since = tokio::time::Instant::now();
                continue;
            }
            tokio::select! {
                message = self.link.next() => {
                    let message = match message {
                        Some(Ok(m)) => m,
                        Some(Err(e)) => {
                            tracing::debug!("connection ended: {e}");
                            let _ = self.link.close(CloseCode::Size, &format!("{e}")).await;
                            return;
                        }
                        None => return,
                    };
                    if !self.on_message(message).await {
                        return;
                    }
                    waiting_since = tokio::time::Instant::now();
                }
                () = tokio::time::sleep_until(waiting_since + idle) => {
                    tracing::info!(client = %self.cx.client_id, "closing a connection silent for {idle:?} (--idle-timeout)");
                    let _ = self.link.close(CloseCode::Policy, &format!("silent for {} s", idle.as_secs())).await;
                    return;
                }
                changed = status.changed(), if watching => {
                    if changed.is_err() {
                        watching = false;
                        continue;
                    }
                    let now = *status.borrow_and_update();
                    if !self.notify(now).await {
                        return;
                    }
                }
                _ = stop.recv() => {
                    let _ = self.link.close(CloseCode::Away, "the daemon is shutting down").await;
                    return;
                }
            }
        }
    }

    /// Pushes CHANGED when new changes were recorded and SCAN_COMPLETE when a scan ended.
    async fn notify(&mut self, now: Status) -> bool {
        let mut ok = true;
        if now.last_seq > self.sent.last_seq {
            ok &= self
                .link
                .send(&ServerMessage::Event(Event::Changed {
                    last_sequence: now.last_seq,
                }))
                .await;
        }
        if self.sent.scanning && !now.scanning {
            ok &= self
                .link
                .send(&ServerMessage::Event(Event::ScanComplete {
                    last_sequence: now.last_seq,
                }))
                .await;
        }
        self.sent = now;
        ok
    }

    /// Handles one frame; false ends the connection.
    async fn on_message(&mut self, message: Message) -> bool {
        let text = match message {
            Message::Text(text) => {
                // A client may stop sending a refused upload's content: its next request ends
                // the discard (frames of that upload cannot come after it on one stream).
                self.cx.discard = None;
                text
            }
            Message::Binary(frame) => {
                if let Some(discard) = self.cx.discard {
                    let ours =
                        zync_proto::decode_chunk(&frame).is_ok_and(|(id, _)| id == discard.id);
                    if ours {
                        self.cx.discard = (discard.frames > 1).then_some(Discard {
                            id: discard.id,
                            frames: discard.frames - 1,
                        });
                        return true;
                    }
                }
                return self
                    .link
                    .send_error(
                        None,
                        Refusal::new(
                            ErrorCode::BadRequest,
                            "binary frames are not accepted here; send requests as JSON text frames",
                        ),
                    )
                    .await;
            }
            Message::Close(_) => return false,
            // Pings are answered by the WebSocket layer.
            Message::Ping(_) | Message::Pong(_) | Message::Frame(_) => return true,
        };
        match Operation::from_frame(&text) {
            Ok((id, operation)) => operation.apply(id, &mut self.cx, &mut self.link).await,
            Err(rejected) => self.link.send_error(rejected.id, rejected.refusal).await,
        }
    }
}
