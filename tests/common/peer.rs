//! The client's side of the handshake for tests that speak the protocol to a daemon directly
//! (docs/PROTOCOL.md, "Handshake"): one implementation, checked against the daemon's proof
//! as the real client checks it, so a test peer cannot talk to a daemon that did not prove
//! itself either.

use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio::net::TcpStream;
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
