//! The raw test peer for every test that speaks the protocol to a daemon by hand
//! (docs/PROTOCOL.md): the client's side of the handshake, checked against the daemon's proof
//! as the real client checks it (so a test peer cannot talk to a daemon that did not prove
//! itself either), and [`Peer`], a connection that numbers requests, skips events, gathers a
//! reply's chunks and counts the payload bytes it moved.

use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};
use zync_proto::{Nonce, Role};

use super::{Daemon, DEADLINE};

/// A raw WebSocket to a daemon.
pub type RawWs = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// The daemon's token, as its token file holds it.
pub fn token_of(daemon: &Daemon) -> String {
    std::fs::read_to_string(&daemon.token_file)
        .expect("read the daemon's token file")
        .trim()
        .to_string()
}

/// Opens a WebSocket to `daemon`: the upgrade carries no credentials (none ever cross the
/// wire).
pub async fn upgrade(daemon: &Daemon) -> RawWs {
    let (ws, _) = tokio::time::timeout(DEADLINE, tokio_tungstenite::connect_async(daemon.url()))
        .await
        .expect("the WebSocket upgrade timed out")
        .expect("the WebSocket upgrade failed");
    ws
}

/// Sends `request` and returns the next text frame that is not an event (`Value::Null` when
/// the connection ended first).
pub async fn exchange(ws: &mut RawWs, request: Value) -> Value {
    ws.send(Message::text(request.to_string()))
        .await
        .expect("send a request");
    loop {
        let next = tokio::time::timeout(DEADLINE, ws.next())
            .await
            .expect("timed out waiting for the daemon");
        match next {
            Some(Ok(Message::Text(text))) => {
                let value: Value = serde_json::from_str(&text).expect("the daemon sent JSON");
                if value["status"] != "event" {
                    return value;
                }
            }
            Some(Ok(Message::Close(_))) | None | Some(Err(_)) => return Value::Null,
            Some(Ok(_)) => {}
        }
    }
}

/// HELLO with a fresh nonce: returns the nonce and the daemon's reply.
pub async fn hello(ws: &mut RawWs, client_id: &str) -> (Nonce, Value) {
    let nonce = Nonce::generate().expect("random nonce");
    let reply = exchange(
        ws,
        json!({"id": 1, "operation": "HELLO", "protocol_version": zync_proto::PROTOCOL_VERSION,
               "client_id": client_id, "client_nonce": nonce.to_hex()}),
    )
    .await;
    (nonce, reply)
}

/// The handshake as the zync client does it: HELLO, the daemon's proof checked against
/// `token`, then AUTH with this side's proof. Returns AUTH's reply, ok or error.
pub async fn handshake(ws: &mut RawWs, token: &str, client_id: &str) -> Value {
    let (client_nonce, challenge) = hello(ws, client_id).await;
    assert_eq!(challenge["status"], "ok", "HELLO failed: {challenge}");
    let daemon_nonce = Nonce::from_hex(challenge["daemon_nonce"].as_str().unwrap_or_default())
        .expect("HELLO's reply carries a daemon nonce");
    assert!(
        zync_proto::verify(
            token,
            Role::Daemon,
            &client_nonce,
            &daemon_nonce,
            client_id,
            challenge["daemon_proof"].as_str().unwrap_or_default(),
        ),
        "the daemon's proof does not verify: {challenge}"
    );
    let proof = zync_proto::proof(token, Role::Client, &client_nonce, &daemon_nonce, client_id);
    exchange(
        ws,
        json!({"id": 2, "operation": "AUTH", "client_proof": proof}),
    )
    .await
}

/// A connection to `daemon` through a complete handshake; returns it with the welcome.
pub async fn authenticated(daemon: &Daemon, client_id: &str) -> (RawWs, Value) {
    let mut ws = upgrade(daemon).await;
    let welcome = handshake(&mut ws, &token_of(daemon), client_id).await;
    assert_eq!(welcome["status"], "ok", "AUTH failed: {welcome}");
    (ws, welcome)
}

/// The largest chunk payload a daemon sends (docs/PROTOCOL.md, MAX_CHUNK).
pub const MAX_CHUNK: usize = 1 << 20;

/// What the daemon sent next, events aside.
#[derive(Debug)]
pub enum Frame {
    /// A JSON message.
    Text(Value),
    /// A binary frame (a chunk: 8-byte big-endian request id, then payload).
    Binary(Vec<u8>),
    /// A close frame with its code, or the stream's end (`None`).
    Closed(Option<u16>),
    /// The transport failed (reset before a close frame could be read, say).
    Failed(String),
}

/// A raw protocol connection to a daemon.
pub struct Peer {
    /// The WebSocket, for what the methods do not cover (closing it, say).
    pub ws: RawWs,
    next_id: u64,
    wire: usize,
}

impl Peer {
    /// Wraps an open WebSocket; request ids start above the handshake's.
    pub fn new(ws: RawWs) -> Peer {
        Peer {
            ws,
            next_id: 100,
            wire: 0,
        }
    }

    /// Connects (no handshake yet).
    pub async fn connect(daemon: &Daemon) -> Peer {
        Peer::new(upgrade(daemon).await)
    }

    /// Connects with its own transport limits (`config`), far above the daemon's when a test
    /// sends hostile sizes; no handshake yet.
    pub async fn connect_with(daemon: &Daemon, config: WebSocketConfig) -> Peer {
        let request = daemon
            .url()
            .into_client_request()
            .expect("a request for the daemon");
        let (ws, _) = tokio_tungstenite::connect_async_with_config(request, Some(config), true)
            .await
            .expect("the WebSocket upgrade failed");
        Peer::new(ws)
    }

    /// Connects and completes the handshake as `client_id`; returns the welcome too.
    pub async fn authenticated(daemon: &Daemon, client_id: &str) -> (Peer, Value) {
        let (ws, welcome) = authenticated(daemon, client_id).await;
        (Peer::new(ws), welcome)
    }

    /// Completes the handshake on this connection with `token`; AUTH's reply must be ok.
    pub async fn handshake_ok(&mut self, token: &str, client_id: &str) -> Value {
        let welcome = handshake(&mut self.ws, token, client_id).await;
        assert_eq!(welcome["status"], "ok", "AUTH failed: {welcome}");
        welcome
    }

    /// A fresh request id.
    pub fn id(&mut self) -> u64 {
        self.next_id += 1;
        self.next_id
    }

    /// The id of the last request [`Peer::call`] or [`Peer::id`] numbered.
    pub fn last_id(&self) -> u64 {
        self.next_id
    }

    /// Payload bytes of the text and binary frames sent and received so far (events aside).
    pub fn wire(&self) -> usize {
        self.wire
    }

    /// Sends a frame; the transport's error when it could not (a daemon may close while a
    /// hostile frame is still being written).
    pub async fn try_send(
        &mut self,
        message: Message,
    ) -> Result<(), tokio_tungstenite::tungstenite::Error> {
        self.wire += match &message {
            Message::Text(text) => text.len(),
            Message::Binary(data) => data.len(),
            _ => 0,
        };
        self.ws.send(message).await
    }

    /// Sends a frame, which must go out.
    pub async fn send(&mut self, message: Message) {
        self.try_send(message).await.expect("send a frame");
    }

    /// Sends a JSON message as it is (its id included).
    pub async fn send_json(&mut self, value: &Value) {
        self.send(Message::text(value.to_string())).await;
    }

    /// The next frame that is not an event, within [`DEADLINE`].
    pub async fn recv(&mut self) -> Frame {
        loop {
            let next = tokio::time::timeout(DEADLINE, self.ws.next())
                .await
                .expect("timed out waiting for the daemon");
            let message = match next {
                None => return Frame::Closed(None),
                Some(Err(e)) => return Frame::Failed(e.to_string()),
                Some(Ok(m)) => m,
            };
            match message {
                Message::Text(text) => {
                    let value: Value = serde_json::from_str(&text)
                        .unwrap_or_else(|e| panic!("the daemon sent invalid JSON ({e}): {text}"));
                    if value["status"] == "event" {
                        continue;
                    }
                    self.wire += text.len();
                    return Frame::Text(value);
                }
                Message::Binary(data) => {
                    self.wire += data.len();
                    return Frame::Binary(data.to_vec());
                }
                Message::Close(frame) => return Frame::Closed(frame.map(|f| u16::from(f.code))),
                _ => {}
            }
        }
    }

    /// The next JSON message, which must come before anything else.
    pub async fn recv_text(&mut self) -> Value {
        match self.recv().await {
            Frame::Text(value) => value,
            Frame::Binary(data) => {
                panic!("expected a JSON message, got a {}-byte chunk", data.len())
            }
            other => panic!("expected a JSON message, got {other:?}"),
        }
    }

    /// Sends `op` with a fresh id and returns the response, which must carry that id.
    pub async fn call(&mut self, mut op: Value) -> Value {
        let id = self.id();
        op["id"] = json!(id);
        self.send_json(&op).await;
        let reply = self.recv_text().await;
        assert_eq!(
            reply["id"],
            json!(id),
            "response to {op} has another id: {reply}"
        );
        reply
    }

    /// A call that must succeed with its `operation` echoed.
    pub async fn ok(&mut self, op: Value) -> Value {
        let reply = self.call(op.clone()).await;
        assert_eq!(reply["status"], "ok", "{op} failed: {reply}");
        assert_eq!(reply["operation"], op["operation"], "{op}: {reply}");
        reply
    }

    /// PREPARE_UPSTREAM: the new session's id.
    pub async fn prepare_upstream(&mut self) -> String {
        let reply = self
            .ok(json!({"operation": "PREPARE_UPSTREAM", "description": "test"}))
            .await;
        reply["session_id"]
            .as_str()
            .expect("session_id")
            .to_string()
    }

    /// An UPSTREAM_FILE write to `code/path` announcing `size` bytes with `sha256`, followed by
    /// `content` in chunks (8-byte big-endian request id, then the payload). Returns the
    /// response; a refused upload's frames are dropped by the daemon.
    pub async fn upload_with(
        &mut self,
        session: &str,
        path: &str,
        content: &[u8],
        size: u64,
        sha256: &str,
    ) -> Value {
        let id = self.id();
        let request = json!({
            "id": id, "operation": "UPSTREAM_FILE", "session_id": session, "dir": "code",
            "path": path, "action": "write", "mode": 0o644, "size": size,
            "mtime_ns": 1_700_000_000_000_000_000i64, "sha256": sha256,
        });
        self.send_json(&request).await;
        for piece in content.chunks(MAX_CHUNK) {
            let mut frame = id.to_be_bytes().to_vec();
            frame.extend_from_slice(piece);
            self.send(Message::binary(frame)).await;
        }
        let reply = self.recv_text().await;
        assert_eq!(reply["id"], json!(id), "UPSTREAM_FILE {path}: {reply}");
        reply
    }

    /// An upload of `content` with its own size and sha256; returns the response.
    pub async fn upload(&mut self, session: &str, path: &str, content: &[u8]) -> Value {
        let sha = super::sha256(content);
        self.upload_with(session, path, content, content.len() as u64, &sha)
            .await
    }

    /// An upload that must be staged.
    pub async fn upload_ok(&mut self, session: &str, path: &str, content: &[u8]) -> Value {
        let reply = self.upload(session, path, content).await;
        assert_eq!(reply["status"], "ok", "UPSTREAM_FILE {path}: {reply}");
        assert_eq!(reply["operation"], "UPSTREAM_FILE", "{reply}");
        reply
    }

    /// PING, which must be answered.
    pub async fn ping_ok(&mut self) {
        self.ok(json!({"operation": "PING"})).await;
    }

    /// Sends a raw frame and expects an error response with `code` and a message (and `id`,
    /// when given; no id at all otherwise).
    pub async fn expect_error(&mut self, message: Message, code: &str, id: Option<u64>) -> Value {
        let shown = format!("{message:?}");
        let shown = if shown.len() > 200 {
            format!("{}...", &shown[..200])
        } else {
            shown
        };
        self.send(message).await;
        let reply = self.recv_text().await;
        assert_eq!(reply["status"], "error", "{shown} was not refused: {reply}");
        assert_eq!(reply["code"], code, "{shown}: wrong error code: {reply}");
        match id {
            Some(id) => assert_eq!(reply["id"], json!(id), "{shown}: {reply}"),
            None => assert!(reply.get("id").is_none(), "{shown}: unexpected id: {reply}"),
        }
        assert!(
            reply["message"].as_str().is_some_and(|m| !m.is_empty()),
            "{shown}: the error has no message: {reply}"
        );
        reply
    }

    /// The payload of the `count` chunks that follow request `id`'s header, each checked to
    /// carry that id and at most [`MAX_CHUNK`] bytes.
    pub async fn chunks(&mut self, id: u64, count: u64) -> Vec<u8> {
        let mut data = Vec::new();
        for _ in 0..count {
            let frame = match self.recv().await {
                Frame::Binary(frame) => frame,
                other => panic!("expected a chunk of request {id}, got {other:?}"),
            };
            assert!(frame.len() >= 8, "a chunk shorter than its header");
            let chunk_id = u64::from_be_bytes(frame[..8].try_into().expect("8 bytes"));
            assert_eq!(chunk_id, id, "a chunk carries another request's id");
            assert!(frame.len() - 8 <= MAX_CHUNK, "a chunk over MAX_CHUNK");
            data.extend_from_slice(&frame[8..]);
        }
        data
    }

    /// GET_FILE of `path` in `dir` that must succeed: the header and the content.
    pub async fn get_file(&mut self, dir: &str, path: &str) -> (Value, Vec<u8>) {
        let id = self.id();
        self.send_json(&json!({"id": id, "operation": "GET_FILE", "dir": dir, "path": path}))
            .await;
        let header = self.recv_text().await;
        assert_eq!(header["status"], "ok", "GET_FILE {path} failed: {header}");
        assert_eq!(header["operation"], "GET_FILE", "{header}");
        assert_eq!(header["id"], json!(id), "{header}");
        let count = header["chunks"].as_u64().expect("chunks");
        let data = self.chunks(id, count).await;
        (header, data)
    }
}
