//! The client's side of one WebSocket connection: the handshake, requests matched to their
//! responses by id, file downloads from binary chunks, and events noted as they pass.

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::{self, Bytes, Message};
use tokio_tungstenite::WebSocketStream;
use zync_proto::{
    Auth, Challenge, DeltaHeader, DeltaPlan, ErrorCode, Event, FileHeader, FilesReply, GetDelta,
    GetFile, GetFiles, GetWindows, Hello, Nonce, Op, Reply, Request, Role, ServerMessage,
    UpstreamFile, UpstreamFileReply, Welcome, WindowHashes, WindowsReply,
};

use crate::error::ClientError;
use crate::transport::{self, BoxStream, Server};

/// The default for how long the client waits for any frame from the daemon before calling the
/// connection stalled and reconnecting (`--stall-timeout`; docs/PROTOCOL.md, "Timeouts").
pub const STALL_TIMEOUT: Duration = Duration::from_secs(20);
/// How long a connect (TCP or Unix socket) plus WebSocket upgrade may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// An idle client pings at least this often, whatever its stall timeout: the daemon closes
/// connections silent for its `--idle-timeout` (120 s by default).
const MAX_PING_INTERVAL: Duration = Duration::from_secs(60);

type Ws = WebSocketStream<BoxStream>;

/// Events seen while waiting for responses.
#[derive(Debug, Default, Clone, Copy)]
pub struct Seen {
    /// A CHANGED event arrived.
    pub changed: bool,
    /// A SCAN_COMPLETE event arrived.
    pub scan_complete: bool,
}

/// A connected, handshaken client connection.
pub struct Connection {
    ws: Ws,
    next_id: u64,
    /// Events noted since the caller last cleared them.
    pub seen: Seen,
    /// The daemon's side of the handshake.
    pub hello: Welcome,
    /// Silence longer than this means a stalled connection.
    stall: Duration,
    /// A request sent with [`Connection::ask`] whose answer is kept when it arrives among
    /// downloads, and that answer.
    asked: Option<u64>,
    answer: Option<(u64, Result<Reply, ClientError>)>,
    /// The daemon answered a GET_WINDOWS `unknown_operation`: none is sent to it again.
    lacks_windows: bool,
    /// The daemon answered a GET_FILES `unknown_operation`: files are asked for one by one.
    lacks_get_files: bool,
}

/// The token, and where it came from for messages.
pub struct Credentials {
    /// The token, if any.
    pub token: Option<String>,
    /// Where it came from ("ZYNC_TOKEN", a file path) or what was missing.
    pub source: String,
}

impl Connection {
    /// Connects and performs the handshake (docs/PROTOCOL.md, "Handshake"): the daemon must
    /// prove that it holds the token before this client says anything but its id and a fresh
    /// nonce, so a program posing as the daemon learns nothing it can use and is sent nothing
    /// (invariant 8). Then the client proves itself with AUTH.
    ///
    /// # Errors
    /// Unreachable daemon, a peer that cannot prove it holds the token, a refused proof, or a
    /// failed handshake.
    pub async fn open(
        url: &str,
        credentials: &Credentials,
        client_id: &str,
        dirs: Option<Vec<String>>,
        stall: Duration,
    ) -> Result<Connection, ClientError> {
        let server = Server::parse(url).map_err(|e| e.into_client_error(url))?;
        let request = server.request_url().into_client_request().map_err(|e| {
            ClientError::Config(format!(
                "--server {url:?} is not a WebSocket URL ({e}); write it as ws://localhost:8000"
            ))
        })?;
        let who = match &server {
            Server::Tcp { .. } => {
                let port = request.uri().port_u16().unwrap_or(80);
                format!("see who holds port {port}: `ss -ltnp 'sport = :{port}'`")
            }
            Server::Unix(path) => format!(
                "see who serves {}: `ss -lxp | grep -F {}`",
                path.display(),
                path.display()
            ),
        };
        let limit = zync_proto::MAX_TEXT_MESSAGE.max(zync_proto::MAX_BINARY_FRAME);
        let config = WebSocketConfig::default()
            .max_message_size(Some(limit))
            .max_frame_size(Some(limit));
        let unreachable = |reason: String| ClientError::Unreachable {
            url: url.to_string(),
            reason,
        };
        // One deadline for the connect and the upgrade together, as for a TCP URL alone.
        let deadline = tokio::time::Instant::now() + CONNECT_TIMEOUT;
        let stream = match tokio::time::timeout_at(deadline, transport::connect(&server)).await {
            Err(_) => return Err(unreachable(format!("no answer within {CONNECT_TIMEOUT:?}"))),
            Ok(Err(e)) => return Err(e.into_client_error(url)),
            Ok(Ok(stream)) => stream,
        };
        let connecting = tokio_tungstenite::client_async_with_config(request, stream, Some(config));
        let ws = match tokio::time::timeout_at(deadline, connecting).await {
            Err(_) => return Err(unreachable(format!("no answer within {CONNECT_TIMEOUT:?}"))),
            Ok(Ok((ws, _))) => ws,
            Ok(Err(tungstenite::Error::Http(response))) if response.status().as_u16() == 401 => {
                // zync before protocol 2 checked a bearer token in the upgrade request.
                return Err(ClientError::Incompatible(format!(
                    "the daemon at {url} asked for a bearer token (HTTP 401): it runs an older zync, which sends the token in the clear; upgrade zync on E to this client's version ({})",
                    env!("CARGO_PKG_VERSION")
                )));
            }
            Ok(Err(tungstenite::Error::Http(response))) => {
                return Err(unreachable(format!(
                    "HTTP {} instead of a WebSocket upgrade",
                    response.status()
                )))
            }
            Ok(Err(e)) => return Err(unreachable(e.to_string())),
        };
        let mut connection = Connection {
            ws,
            stall,
            next_id: 1,
            seen: Seen::default(),
            asked: None,
            answer: None,
            lacks_windows: false,
            lacks_get_files: false,
            hello: Welcome {
                protocol_version: 0,
                index_id: String::new(),
                dirs: Vec::new(),
                scanning: false,
                server_version: String::new(),
                pipelining: None,
                get_files: None,
            },
        };
        let impostor = |why: String| ClientError::NotTheDaemon {
            url: url.to_string(),
            why,
            who: who.clone(),
        };
        let client_nonce = Nonce::generate().map_err(|e| {
            ClientError::Config(format!("cannot get random bytes for the handshake: {e}"))
        })?;
        // Only what the proofs need goes out before the daemon proved that it holds the token
        // (its id is part of them): which dirs this client mirrors, and which version it is,
        // wait for AUTH (invariant 8, docs/ARCHITECTURE.md).
        let hello = Op::Hello(Hello {
            protocol_version: zync_proto::PROTOCOL_VERSION,
            client_id: client_id.to_string(),
            client_version: None,
            client_nonce: Some(client_nonce.to_hex()),
            dirs: None,
        });
        let challenge = match connection.call(hello).await {
            Ok(Reply::Hello(challenge)) => challenge,
            Ok(other) => {
                return Err(impostor(format!(
                    "it answered HELLO with {}",
                    truncate(&format!("{other:?}"))
                )))
            }
            // Nothing the peer says before its proof is known to come from the daemon: its
            // refusal is shown as what it is, the words of a peer that did not prove itself.
            // A daemon of another protocol version refuses here too: that is said with the
            // advice for it, its words quoted as unproven. An internal error of the daemon
            // stays one (a loop client tries again).
            Err(ClientError::Server {
                code: ErrorCode::UnsupportedVersion,
                message,
            }) => {
                return Err(ClientError::Incompatible(format!(
                    "the server at {url} refused this client's protocol version {} before \
                     proving that it is the zync daemon; if it is the daemon, install the same \
                     zync version on E and R. It said: {}",
                    zync_proto::PROTOCOL_VERSION,
                    truncate(&message)
                )))
            }
            Err(ClientError::Server { code, message })
                if credentials.token.is_some() && code != ErrorCode::Internal =>
            {
                return Err(impostor(format!(
                    "it refused the handshake before proving that it holds the token, saying \
                     ({code:?}): {}",
                    truncate(&message)
                )))
            }
            Err(e) => return Err(e),
        };
        let Challenge {
            daemon_nonce,
            daemon_proof,
            ..
        } = challenge;
        let daemon_nonce = Nonce::from_hex(&daemon_nonce)
            .map_err(|why| impostor(format!("its nonce is not valid ({why})")))?;
        let client_proof = match (&credentials.token, daemon_proof) {
            (Some(token), Some(proof)) => {
                if !zync_proto::verify(
                    token,
                    Role::Daemon,
                    &client_nonce,
                    &daemon_nonce,
                    client_id,
                    &proof,
                ) {
                    return Err(impostor(format!(
                        "its proof does not match the token from {}",
                        credentials.source
                    )));
                }
                Some(zync_proto::proof(
                    token,
                    Role::Client,
                    &client_nonce,
                    &daemon_nonce,
                    client_id,
                ))
            }
            (Some(_), None) => {
                return Err(impostor(
                    "it proves no token at all (a daemon run with --insecure-no-auth, or not zync's daemon), and this client holds one".to_string(),
                ))
            }
            // No token here: nothing to prove or check (the daemon decides whether it serves
            // unauthenticated clients).
            (None, _) => None,
        };
        let auth = Auth {
            client_proof,
            client_version: Some(env!("CARGO_PKG_VERSION").to_string()),
            dirs,
        };
        match connection.call(Op::Auth(auth)).await {
            Ok(Reply::Auth(welcome)) => connection.hello = welcome,
            Ok(other) => {
                return Err(ClientError::Protocol(format!(
                    "expected an AUTH reply, got {}",
                    truncate(&format!("{other:?}"))
                )))
            }
            Err(ClientError::Server {
                code: ErrorCode::Unauthorized,
                ..
            }) => {
                let hint = match &credentials.token {
                    Some(_) => format!("the token from {} is not the daemon's; copy the daemon's token file again", credentials.source),
                    None => format!("no token was given ({}); set ZYNC_TOKEN or --token-file to the daemon's token file", credentials.source),
                };
                return Err(ClientError::Unauthorized { hint });
            }
            Err(e) => return Err(e),
        }
        Ok(connection)
    }

    async fn send(&mut self, op: Op) -> Result<u64, ClientError> {
        let id = self.next_id;
        self.next_id += 1;
        let text = Request { id, op }.to_json();
        self.put(Message::text(text)).await?;
        Ok(id)
    }

    /// Sends one frame, giving up after the stall timeout: a frozen tunnel must not hang a
    /// send any more than a receive.
    async fn put(&mut self, message: Message) -> Result<(), ClientError> {
        match tokio::time::timeout(self.stall, self.ws.send(message)).await {
            Err(_) => Err(ClientError::Timeout(self.stall)),
            Ok(result) => result.map_err(|e| ClientError::Connection(e.to_string())),
        }
    }

    /// The next frame, noting events; None for a binary frame's payload is never returned.
    async fn receive(&mut self) -> Result<Incoming, ClientError> {
        loop {
            let message = match tokio::time::timeout(self.stall, self.ws.next()).await {
                Err(_) => return Err(ClientError::Timeout(self.stall)),
                Ok(None) => {
                    return Err(ClientError::Connection(
                        "the daemon closed the connection".into(),
                    ))
                }
                Ok(Some(Err(e))) => return Err(ClientError::Connection(e.to_string())),
                Ok(Some(Ok(m))) => m,
            };
            if let Some(incoming) = self.note(message)? {
                return Ok(incoming);
            }
        }
    }

    /// One frame from the daemon: events are noted, control frames skipped (None), anything
    /// else returned.
    fn note(&mut self, message: Message) -> Result<Option<Incoming>, ClientError> {
        match message {
            Message::Text(text) => {
                let parsed = ServerMessage::parse(&text)
                    .map_err(|e| ClientError::Protocol(format!("{e}: {}", truncate(&text))))?;
                match parsed {
                    ServerMessage::Event(Event::Changed { .. }) => self.seen.changed = true,
                    ServerMessage::Event(Event::ScanComplete { .. }) => {
                        self.seen.scan_complete = true;
                        self.seen.changed = true;
                    }
                    other => return Ok(Some(Incoming::Text(other))),
                }
                Ok(None)
            }
            Message::Binary(data) => Ok(Some(Incoming::Binary(data))),
            Message::Close(frame) => {
                let why = frame.map(|f| f.reason.to_string()).unwrap_or_default();
                Err(ClientError::Connection(format!(
                    "the daemon closed the connection {why}"
                )))
            }
            Message::Ping(_) | Message::Pong(_) | Message::Frame(_) => Ok(None),
        }
    }

    /// The daemon's refusal of request `id` if it has already arrived, read without waiting
    /// (other frames that have arrived are handled as [`Connection::response`] would: noted
    /// or skipped).
    fn refused_already(&mut self, id: u64) -> Result<Option<ClientError>, ClientError> {
        use futures_util::FutureExt;
        while let Some(next) = self.ws.next().now_or_never() {
            let message = match next {
                None => {
                    return Err(ClientError::Connection(
                        "the daemon closed the connection".into(),
                    ))
                }
                Some(Err(e)) => return Err(ClientError::Connection(e.to_string())),
                Some(Ok(m)) => m,
            };
            match self.note(message)? {
                Some(Incoming::Text(ServerMessage::Error(e))) if e.id == Some(id) => {
                    return Ok(Some(ClientError::Server {
                        code: e.code,
                        message: e.message,
                    }))
                }
                Some(Incoming::Text(ServerMessage::Error(e))) if e.id.is_none() => {
                    tracing::warn!("the daemon reported: {}", e.message);
                }
                // The answer itself, already (after the last chunk it often is): kept for
                // `response`, which would otherwise wait for it until the stall timeout.
                Some(Incoming::Text(ServerMessage::Ok(ok))) if ok.id == id => {
                    self.answer = Some((id, Ok(ok.reply)));
                    return Ok(None);
                }
                _ => {}
            }
        }
        Ok(None)
    }

    /// Waits for the response to request `id`, skipping events and stray chunks.
    async fn response(&mut self, id: u64) -> Result<Reply, ClientError> {
        if let Some((answered, _)) = &self.answer {
            if *answered == id {
                if let Some((_, answer)) = self.answer.take() {
                    return answer;
                }
            }
        }
        loop {
            match self.receive().await? {
                Incoming::Text(ServerMessage::Ok(ok)) if ok.id == id => return Ok(ok.reply),
                Incoming::Text(ServerMessage::Error(e)) if e.id.is_none() => {
                    // About no request of ours (a frame the daemon could not read): not an
                    // answer to the one we wait for.
                    tracing::warn!("the daemon reported: {}", e.message);
                }
                Incoming::Text(ServerMessage::Error(e)) if e.id == Some(id) => {
                    return Err(ClientError::Server {
                        code: e.code,
                        message: e.message,
                    })
                }
                _ => {}
            }
        }
    }

    /// Sends a request without waiting for its reply (which is skipped when it comes).
    ///
    /// # Errors
    /// A transport failure or a stalled send.
    pub async fn tell(&mut self, op: Op) -> Result<(), ClientError> {
        self.send(op).await.map(|_| ())
    }

    /// Sends a request whose reply is awaited later with [`Connection::answer`]: if it arrives
    /// while downloads are read ([`Connection::next_transfer`]), it is kept. One at a time.
    ///
    /// # Errors
    /// A transport failure or a stalled send.
    pub async fn ask(&mut self, op: Op) -> Result<u64, ClientError> {
        let id = self.send(op).await?;
        self.asked = Some(id);
        self.answer = None;
        Ok(id)
    }

    /// True when the reply to the request `id` sent with [`Connection::ask`] has arrived.
    pub fn has_answer(&self, id: u64) -> bool {
        self.answer
            .as_ref()
            .is_some_and(|(answered, _)| *answered == id)
    }

    /// The reply to the request `id` sent with [`Connection::ask`], waiting for it if needed.
    ///
    /// # Errors
    /// A transport failure, a stall, or the daemon's error response.
    pub async fn answer(&mut self, id: u64) -> Result<Reply, ClientError> {
        if self.asked == Some(id) {
            self.asked = None;
        }
        self.response(id).await
    }

    /// Keeps the reply to the request sent with [`Connection::ask`]; false for any other id.
    fn keep_answer(&mut self, id: u64, answer: Result<Reply, ClientError>) -> bool {
        if self.asked != Some(id) {
            return false;
        }
        self.asked = None;
        self.answer = Some((id, answer));
        true
    }

    /// Sends a request and waits for its reply.
    ///
    /// # Errors
    /// A transport failure, a stall, or the daemon's error response.
    pub async fn call(&mut self, op: Op) -> Result<Reply, ClientError> {
        let id = self.send(op).await?;
        self.response(id).await
    }

    /// Queues a request for a file's content from byte `offset` on, without waiting (send it
    /// with [`Connection::flush`]): the header, the chunks and any error arrive later through
    /// [`Connection::next_transfer`], tagged with the returned request id, so that many
    /// downloads can be in flight at once.
    ///
    /// # Errors
    /// A transport failure or a stalled send.
    pub async fn request_file(
        &mut self,
        dir: &str,
        path: &str,
        offset: u64,
    ) -> Result<u64, ClientError> {
        self.queue(Op::GetFile(GetFile {
            dir: dir.to_string(),
            path: path.to_string(),
            offset: (offset > 0).then_some(offset),
        }))
        .await
    }

    /// How many files one GET_FILES may ask this daemon for: what its AUTH reply advertised,
    /// at most [`zync_proto::MAX_GET_FILES`]; 0 for a daemon that does not know GET_FILES
    /// (files are then asked for one GET_FILE each).
    pub fn get_files_limit(&self) -> usize {
        if self.lacks_get_files {
            return 0;
        }
        self.hello.get_files.map_or(0, |n| {
            usize::try_from(n).map_or(zync_proto::MAX_GET_FILES, |n| {
                n.min(zync_proto::MAX_GET_FILES)
            })
        })
    }

    /// Notes that the daemon does not know GET_FILES after all.
    pub fn note_lacks_get_files(&mut self) {
        self.lacks_get_files = true;
    }

    /// Queues a GET_FILES for the whole content of `files` of `dir`, each of the version it
    /// names, without waiting (send it with [`Connection::flush`]): the reply and the one
    /// frame of contents arrive through [`Connection::next_transfer`] as [`Transfer::Files`]
    /// and [`Transfer::Chunk`].
    ///
    /// # Errors
    /// A transport failure or a stalled send.
    pub async fn request_files(
        &mut self,
        dir: &str,
        files: Vec<zync_proto::WantedFile>,
    ) -> Result<u64, ClientError> {
        self.queue(Op::GetFiles(GetFiles {
            dir: dir.to_string(),
            files,
        }))
        .await
    }

    /// Queues a GET_DELTA for a file R has an older version of, given that version's
    /// signature and window hashes ([`zync_fs::delta::signature_and_windows`]); answered like
    /// [`Connection::request_file`]. A daemon that does not know window hashes ignores them and
    /// diffs the whole file.
    ///
    /// # Errors
    /// A transport failure or a stalled send.
    pub async fn request_delta(
        &mut self,
        dir: &str,
        path: &str,
        signature: Vec<u8>,
        windows: Option<WindowHashes>,
    ) -> Result<u64, ClientError> {
        self.queue(Op::GetDelta(GetDelta {
            dir: dir.to_string(),
            path: path.to_string(),
            signature,
            windows,
            plan: None,
        }))
        .await
    }

    /// Queues a GET_DELTA that follows `plan` (made from a GET_WINDOWS answer), given the
    /// signature of the windows it covers; answered like [`Connection::request_delta`].
    ///
    /// # Errors
    /// A transport failure or a stalled send.
    pub async fn request_planned_delta(
        &mut self,
        dir: &str,
        path: &str,
        signature: Vec<u8>,
        plan: DeltaPlan,
    ) -> Result<u64, ClientError> {
        self.queue(Op::GetDelta(GetDelta {
            dir: dir.to_string(),
            path: path.to_string(),
            signature,
            windows: None,
            plan: Some(plan),
        }))
        .await
    }

    /// True once the daemon answered a GET_WINDOWS `unknown_operation` (an older daemon): big
    /// files are then signed whole, without asking it.
    pub fn lacks_windows(&self) -> bool {
        self.lacks_windows
    }

    /// Notes that the daemon does not know GET_WINDOWS.
    pub fn note_lacks_windows(&mut self) {
        self.lacks_windows = true;
    }

    /// Queues a GET_WINDOWS: E's hashes of the file's windows of `window` bytes, keyed with
    /// `key`; answered through [`Connection::next_transfer`] as [`Transfer::Windows`].
    ///
    /// # Errors
    /// A transport failure or a stalled send.
    pub async fn request_windows(
        &mut self,
        dir: &str,
        path: &str,
        window: u32,
        key: &zync_fs::WindowKey,
    ) -> Result<u64, ClientError> {
        self.queue(Op::GetWindows(GetWindows {
            dir: dir.to_string(),
            path: path.to_string(),
            window,
            key: key.as_bytes().to_vec(),
        }))
        .await
    }

    /// Queues a request without flushing, giving up after the stall timeout.
    async fn queue(&mut self, op: Op) -> Result<u64, ClientError> {
        let id = self.next_id;
        self.next_id += 1;
        let message = Message::text(Request { id, op }.to_json());
        match tokio::time::timeout(self.stall, self.ws.feed(message)).await {
            Err(_) => Err(ClientError::Timeout(self.stall)),
            Ok(result) => result
                .map(|()| id)
                .map_err(|e| ClientError::Connection(e.to_string())),
        }
    }

    /// Sends what [`Connection::request_file`] queued.
    ///
    /// # Errors
    /// A transport failure or a stalled send.
    pub async fn flush(&mut self) -> Result<(), ClientError> {
        match tokio::time::timeout(self.stall, self.ws.flush()).await {
            Err(_) => Err(ClientError::Timeout(self.stall)),
            Ok(result) => result.map_err(|e| ClientError::Connection(e.to_string())),
        }
    }

    /// The next message about requested files: a header, a chunk of content or a refusal.
    /// Events are noted on the way; other replies are not expected while downloads are in
    /// flight and are skipped.
    ///
    /// # Errors
    /// A transport failure, a stall or a frame that breaks the protocol.
    pub async fn next_transfer(&mut self) -> Result<Transfer, ClientError> {
        loop {
            match self.receive().await? {
                Incoming::Binary(frame) => {
                    let (id, _) = zync_proto::decode_chunk(&frame)
                        .map_err(|e| ClientError::Protocol(e.to_string()))?;
                    return Ok(Transfer::Chunk(id, frame.slice(zync_proto::CHUNK_HEADER..)));
                }
                Incoming::Text(ServerMessage::Ok(ok)) => match ok.reply {
                    Reply::GetFile(header) => return Ok(Transfer::Header(ok.id, header)),
                    Reply::GetFiles(reply) => return Ok(Transfer::Files(ok.id, reply)),
                    Reply::GetDelta(header) => return Ok(Transfer::Delta(ok.id, header)),
                    Reply::GetWindows(reply) if self.asked != Some(ok.id) => {
                        return Ok(Transfer::Windows(ok.id, reply))
                    }
                    other => {
                        if self.keep_answer(ok.id, Ok(other)) {
                            return Ok(Transfer::Answered);
                        }
                        tracing::debug!(id = ok.id, "skipped an unexpected reply");
                    }
                },
                Incoming::Text(ServerMessage::Error(e)) => match e.id {
                    Some(id) => {
                        let error = ClientError::Server {
                            code: e.code,
                            message: e.message,
                        };
                        if self.asked == Some(id) {
                            self.keep_answer(id, Err(error));
                            return Ok(Transfer::Answered);
                        }
                        return Ok(Transfer::Failed(id, error));
                    }
                    None => tracing::warn!("the daemon reported: {}", e.message),
                },
                Incoming::Text(ServerMessage::Event(_)) => {}
            }
        }
    }

    /// Sends UPSTREAM_FILE and, for a write, the file's content as chunks read from `content`
    /// (the file, opened by the caller, and its path for messages; streamed: memory does not
    /// grow with the file); returns the daemon's verdict.
    ///
    /// # Errors
    /// As [`Connection::call`]; a file that changed since it was hashed is refused by the
    /// daemon with `checksum_mismatch`.
    pub async fn upload(
        &mut self,
        file: UpstreamFile,
        content: Option<(std::fs::File, &std::path::Path)>,
        progress: &zync_cli::progress::Progress,
    ) -> Result<UpstreamFileReply, ClientError> {
        let size = file.size;
        let id = self.send(Op::UpstreamFile(file)).await?;
        if let Some((mut reader, path)) = content {
            let mut remaining = size;
            let mut buf = vec![0u8; zync_proto::MAX_CHUNK];
            while remaining > 0 {
                let want = remaining.min(zync_proto::MAX_CHUNK as u64) as usize;
                // A file that shrank is padded with nothing: the daemon's size check refuses it.
                let got =
                    read_full(&mut reader, &mut buf[..want]).map_err(|source| ClientError::Io {
                        what: "read",
                        path: path.display().to_string(),
                        source,
                    })?;
                self.put(Message::binary(zync_proto::encode_chunk(id, &buf[..got])))
                    .await?;
                progress.bytes(got as u64);
                remaining -= want as u64;
                // A refusal comes before the daemon reads any content (E has no room for the
                // file, say): the rest is not sent for nothing. The daemon drops what it still
                // receives of this file until the next request.
                if let Some(refusal) = self.refused_already(id)? {
                    return Err(refusal);
                }
            }
        }
        match self.response(id).await? {
            Reply::UpstreamFile(reply) => Ok(reply),
            other => Err(ClientError::Protocol(format!(
                "expected an UPSTREAM_FILE reply, got {other:?}"
            ))),
        }
    }

    /// How often an idle connection pings: a third of the stall timeout, and at least once a
    /// minute so that the daemon's idle deadline never closes a live client.
    fn ping_interval(&self) -> Duration {
        (self.stall / 3).min(MAX_PING_INTERVAL)
    }

    /// Waits up to `limit` for the daemon to push an event; `None` when none came. While the
    /// connection is quiet it sends a WebSocket ping every third of the stall timeout (at
    /// least once a minute), and
    /// fails with [`ClientError::Timeout`] when nothing at all (not even the pong) arrived for
    /// the stall timeout: a stalled tunnel is noticed within that bound.
    ///
    /// # Errors
    /// A transport failure or a stall.
    pub async fn wait_event(&mut self, limit: Duration) -> Result<Option<Seen>, ClientError> {
        let deadline = tokio::time::Instant::now() + limit;
        let mut last_heard = tokio::time::Instant::now();
        let mut next_ping = last_heard + self.ping_interval();
        loop {
            if self.seen.changed || self.seen.scan_complete {
                return Ok(Some(std::mem::take(&mut self.seen)));
            }
            let now = tokio::time::Instant::now();
            if now >= deadline {
                return Ok(None);
            }
            // Wake for the next ping, the stall deadline or the caller's limit, whichever is first.
            let wake = next_ping
                .min(last_heard + self.stall)
                .max(now)
                .min(deadline);
            let message = match tokio::time::timeout_at(wake, self.ws.next()).await {
                Err(_) => {
                    let now = tokio::time::Instant::now();
                    if now >= last_heard + self.stall {
                        return Err(ClientError::Timeout(self.stall));
                    }
                    if now >= next_ping && now < deadline {
                        self.put(Message::Ping(Vec::new().into())).await?;
                        next_ping = now + self.ping_interval();
                    }
                    continue;
                }
                Ok(None) => {
                    return Err(ClientError::Connection(
                        "the daemon closed the connection".into(),
                    ))
                }
                Ok(Some(Err(e))) => return Err(ClientError::Connection(e.to_string())),
                Ok(Some(Ok(m))) => m,
            };
            last_heard = tokio::time::Instant::now();
            next_ping = last_heard + self.ping_interval();
            if let Message::Text(text) = message {
                match ServerMessage::parse(&text) {
                    Ok(ServerMessage::Event(Event::Changed { .. })) => self.seen.changed = true,
                    Ok(ServerMessage::Event(Event::ScanComplete { .. })) => {
                        self.seen.changed = true;
                        self.seen.scan_complete = true;
                    }
                    _ => {}
                }
            } else if let Message::Close(_) = message {
                return Err(ClientError::Connection(
                    "the daemon closed the connection".into(),
                ));
            }
        }
    }

    /// Closes the connection politely.
    pub async fn close(mut self) {
        let _ = self.ws.close(None).await;
    }
}

/// Reads until `buf` is full or the file ends; returns the bytes read.
/// Reads a file for upload; used by [`Connection::upload`].
fn read_full(reader: &mut impl std::io::Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match reader.read(&mut buf[filled..])? {
            0 => break,
            n => filled += n,
        }
    }
    Ok(filled)
}

/// One message about a requested file (see [`Connection::request_file`]).
#[derive(Debug)]
pub enum Transfer {
    /// The file's header: what follows and what it must hash to.
    Header(u64, FileHeader),
    /// GET_FILES's reply: the size of each file's content in the frame that follows.
    Files(u64, FilesReply),
    /// A delta's header: the delta's size and what the rebuilt file must hash to.
    Delta(u64, DeltaHeader),
    /// GET_WINDOWS's answer: E's hashes of the file's windows.
    Windows(u64, WindowsReply),
    /// A piece of the content, in order.
    Chunk(u64, Bytes),
    /// The daemon refused the request (or stopped sending: the file changed meanwhile).
    Failed(u64, ClientError),
    /// The reply to the request sent with [`Connection::ask`] arrived and is kept.
    Answered,
}

enum Incoming {
    Text(ServerMessage),
    Binary(Bytes),
}

fn truncate(text: &str) -> String {
    // What was received, made visible: it may come from whatever answered on the port.
    let start: String = text.chars().take(200).collect();
    zync_cli::visible::line(&start).into_owned()
}
