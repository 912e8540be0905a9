//! The daemon's side of the handshake (docs/PROTOCOL.md, "Handshake"): HELLO brings the
//! client's nonce, which the daemon answers with its own proof and nonce; AUTH brings the
//! client's proof. Nothing about the served directories is said, and no other request is
//! read, before the client proved that it holds the token (invariant 8). Any deviation ends
//! the connection: there is nothing to retry on a connection whose peer cannot prove itself.

use futures_util::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::Message;
use zync_proto::{
    Challenge, ErrorCode, ErrorResponse, Nonce, OkResponse, Op, Reply, Request, Role, ServerMessage,
};

use crate::shared::Ws;
use crate::token::Auth;

/// A client that proved itself; the AUTH request still waits for its answer.
#[derive(Debug)]
pub(crate) struct Authenticated {
    /// The client's stable id from HELLO.
    pub(crate) client_id: String,
    /// The client program's version, for logs.
    pub(crate) client_version: Option<String>,
    /// The directories the client says it mirrors (AUTH's `dirs`, or HELLO's from an older
    /// client), as sent; the connection
    /// keeps those the daemon serves.
    pub(crate) dirs: Option<Vec<String>>,
    /// The AUTH request's id, which the welcome (or a refusal) answers.
    pub(crate) auth_id: u64,
}

/// Why a handshake ended without an authenticated client.
#[derive(Debug)]
pub(crate) enum Failed {
    /// The peer closed, or the transport failed: nothing to say to it.
    Gone,
    /// The peer was told what was wrong, and the connection closed.
    Refused(String),
}

/// Runs the handshake on a freshly upgraded connection.
pub(crate) async fn run(ws: &mut Ws, auth: &Auth) -> Result<Authenticated, Failed> {
    let (id, hello) = match next_request(ws).await? {
        Request {
            id,
            op: Op::Hello(hello),
        } => (id, hello),
        Request { id, op } => {
            let message = format!(
                "{} before the handshake: send HELLO first, then AUTH",
                op.name()
            );
            return Err(refuse(ws, Some(id), ErrorCode::HandshakeRequired, message).await);
        }
    };
    if hello.protocol_version != zync_proto::PROTOCOL_VERSION {
        let upgrade = if hello.protocol_version < zync_proto::PROTOCOL_VERSION {
            "upgrade zync on the client's machine (R)"
        } else {
            "upgrade zync on the daemon's machine (E)"
        };
        let message = format!(
            "this daemon speaks protocol version {}, the client {}; {upgrade} so that both run the same version",
            zync_proto::PROTOCOL_VERSION,
            hello.protocol_version
        );
        return Err(refuse(ws, Some(id), ErrorCode::UnsupportedVersion, message).await);
    }
    if let Some(message) = client_id_problem(&hello.client_id) {
        return Err(refuse(ws, Some(id), ErrorCode::BadRequest, message).await);
    }
    let client_nonce = match hello.client_nonce.as_deref().map(Nonce::from_hex) {
        Some(Ok(nonce)) => nonce,
        Some(Err(why)) => {
            let message = format!("HELLO's client_nonce is not valid: {why}");
            return Err(refuse(ws, Some(id), ErrorCode::BadRequest, message).await);
        }
        None => {
            let message = "HELLO needs a client_nonce: 64 hex characters from a random source";
            return Err(refuse(ws, Some(id), ErrorCode::BadRequest, message.into()).await);
        }
    };
    let daemon_nonce = match Nonce::generate() {
        Ok(nonce) => nonce,
        Err(e) => {
            tracing::error!("cannot get random bytes for a handshake: {e}");
            let message = "the daemon cannot get random bytes; see its log";
            return Err(refuse(ws, Some(id), ErrorCode::Internal, message.into()).await);
        }
    };
    let daemon_proof = match auth {
        Auth::Token { token, .. } => Some(zync_proto::proof(
            token,
            Role::Daemon,
            &client_nonce,
            &daemon_nonce,
            &hello.client_id,
        )),
        Auth::Disabled => None,
    };
    let challenge = Reply::Hello(Challenge {
        protocol_version: zync_proto::PROTOCOL_VERSION,
        daemon_nonce: daemon_nonce.to_hex(),
        daemon_proof,
        // Told after AUTH, to a client that proved itself: whoever connects to the port is
        // not told which version (and which of its bugs) answers.
        server_version: String::new(),
    });
    send(
        ws,
        &ServerMessage::Ok(OkResponse {
            id,
            reply: challenge,
        }),
    )
    .await?;

    let (auth_id, given) = match next_request(ws).await? {
        Request {
            id,
            op: Op::Auth(given),
        } => (id, given),
        Request { id, op } => {
            let message = format!(
                "{} before the handshake completed: send AUTH with the client's proof",
                op.name()
            );
            return Err(refuse(ws, Some(id), ErrorCode::HandshakeRequired, message).await);
        }
    };
    if let Auth::Token { token, source } = auth {
        let proven = given.client_proof.as_deref().is_some_and(|p| {
            zync_proto::verify(
                token,
                Role::Client,
                &client_nonce,
                &daemon_nonce,
                &hello.client_id,
                p,
            )
        });
        if !proven {
            tracing::warn!(
                client = %hello.client_id,
                "refused a client that could not prove it holds the token from {source}"
            );
            let message = "the client did not prove that it holds this daemon's token: copy the daemon's token file to the client machine again";
            return Err(refuse(ws, Some(auth_id), ErrorCode::Unauthorized, message.into()).await);
        }
    }
    // A client of this version says which version it is and what it mirrors in AUTH, after
    // the daemon proved itself; an older one said so in HELLO.
    let client_version = given.client_version.or(hello.client_version);
    if let Some(message) = client_version
        .as_deref()
        .and_then(|v| text_problem("client_version", v, MAX_CLIENT_VERSION))
    {
        return Err(refuse(ws, Some(auth_id), ErrorCode::BadRequest, message).await);
    }
    Ok(Authenticated {
        client_id: hello.client_id,
        client_version,
        dirs: given.dirs.or(hello.dirs),
        auth_id,
    })
}

/// The next request; a frame that is not one is refused and ends the handshake.
async fn next_request(ws: &mut Ws) -> Result<Request, Failed> {
    loop {
        let text = match ws.next().await {
            None | Some(Err(_)) | Some(Ok(Message::Close(_))) => return Err(Failed::Gone),
            // Pings are answered by the WebSocket layer.
            Some(Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_))) => continue,
            Some(Ok(Message::Binary(_))) => {
                let message = "a binary frame before the handshake: send HELLO first";
                return Err(refuse(ws, None, ErrorCode::HandshakeRequired, message.into()).await);
            }
            Some(Ok(Message::Text(text))) => text,
        };
        return match Request::parse(&text) {
            Ok(request) => Ok(request),
            Err(e) => Err(refuse(ws, e.id, e.code, e.message).await),
        };
    }
}

async fn send(ws: &mut Ws, message: &ServerMessage) -> Result<(), Failed> {
    ws.send(Message::text(message.to_json()))
        .await
        .map_err(|_| Failed::Gone)
}

/// Answers `id` with an error, then closes the connection (policy violation).
async fn refuse(ws: &mut Ws, id: Option<u64>, code: ErrorCode, message: String) -> Failed {
    let error = ServerMessage::Error(ErrorResponse {
        id,
        code,
        message: message.clone(),
    });
    let _ = send(ws, &error).await;
    let reason = match code {
        ErrorCode::UnsupportedVersion => "unsupported protocol version",
        ErrorCode::Unauthorized => "authentication failed",
        _ => "handshake failed",
    };
    let _ = ws
        .send(Message::Close(Some(CloseFrame {
            code: CloseCode::Policy,
            reason: reason.into(),
        })))
        .await;
    Failed::Refused(message)
}

/// What is wrong with a client id from HELLO, if anything. The id is shown on E (`zync-apply
/// list` and `status`, the daemon's log), so besides its length it may hold no character that
/// a terminal would act on or hide.
fn client_id_problem(client_id: &str) -> Option<String> {
    text_problem("client_id", client_id, MAX_CLIENT_ID)
}

/// The longest client id, in bytes.
const MAX_CLIENT_ID: usize = 128;
/// The longest client version, in bytes: this client sends its Cargo version ("0.1.0").
pub(crate) const MAX_CLIENT_VERSION: usize = 64;

/// What is wrong with `value`, a short text R sends that E records or logs (`what` names the
/// field), if anything: empty, over `max` bytes (each connection could otherwise leave
/// megabytes in E's database and log, invariant 9), or holding a character a terminal would
/// act on or hide. The message never quotes more than `max` bytes of it.
pub(crate) fn text_problem(what: &str, value: &str, max: usize) -> Option<String> {
    if value.is_empty() || value.len() > max {
        return Some(format!(
            "{what} must be 1 to {max} bytes, not {}",
            value.len()
        ));
    }
    if zync_cli::visible::line(value) != value {
        return Some(format!(
            "{what} {} holds control or invisible characters; use printable text",
            zync_cli::visible::line(value)
        ));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_r_says_about_itself_is_short_printable_text_and_never_quoted_whole() {
        assert_eq!(
            text_problem("client_version", "0.1.0", MAX_CLIENT_VERSION),
            None
        );
        let long = "9".repeat(MAX_CLIENT_VERSION + 1);
        let why = text_problem("client_version", &long, MAX_CLIENT_VERSION).expect("refused");
        assert_eq!(why, "client_version must be 1 to 64 bytes, not 65");
        let why = text_problem("description", "a\x1b[2Jb", 256).expect("refused");
        assert!(
            why.starts_with("description a^[[2Jb holds control"),
            "{why}"
        );
    }

    #[test]
    fn client_ids_are_short_printable_text() {
        for ok in ["r", "laptop-3f2a", "gpu box ünïcödé", &"x".repeat(128)] {
            assert_eq!(client_id_problem(ok), None, "{ok:?}");
        }
        for bad in [
            "",
            &"x".repeat(129)[..],
            "r\x1b]0;pwned\x07",
            "r\r",
            "a\u{202E}b",
            "a\tb",
        ] {
            let why = client_id_problem(bad).unwrap_or_else(|| panic!("{bad:?} accepted"));
            assert!(!why.contains('\x1b') && !why.contains('\r'), "{why:?}");
        }
    }
}
