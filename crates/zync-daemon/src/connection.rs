//! One authenticated client connection: the welcome that ends the handshake, then requests
//! answered in order, with change notifications pushed between them. Bad input gets an error response and the connection
//! goes on (DESIGN invariant 7); only transport failures end it.

use std::os::unix::fs::OpenOptionsExt;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use futures_util::stream::SplitSink;
use futures_util::{SinkExt, StreamExt};
use tokio::sync::broadcast;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::Message;
use zync_db::{Index, Kind};
use zync_proto::{
    AckReply, Change, ChangesReply, ErrorCode, ErrorResponse, Event, FileHeader, GetChanges,
    GetFile, LastSequence, OkResponse, Op, Reply, Request, ServerMessage, Welcome,
};

use crate::handshake::Authenticated;
use crate::inbox::Inbox;
use crate::indexer::Status;
use crate::server::{ServedRoot, Shared, Ws};
use crate::upstream::{Discard, OpenSession};

/// Why a request failed; sent back as an error response.
pub struct Refusal {
    code: ErrorCode,
    message: String,
}

impl Refusal {
    pub(crate) fn new(code: ErrorCode, message: impl Into<String>) -> Refusal {
        Refusal {
            code,
            message: message.into(),
        }
    }

    pub(crate) fn message(&self) -> &str {
        &self.message
    }

    #[cfg(test)]
    pub(crate) fn code(&self) -> ErrorCode {
        self.code
    }
}

impl From<zync_db::DbError> for Refusal {
    fn from(e: zync_db::DbError) -> Refusal {
        tracing::error!("index error: {e}");
        Refusal::new(
            ErrorCode::Internal,
            format!("the daemon's index failed: {e}"),
        )
    }
}

/// A regular file opened for serving (GET_FILE, GET_DELTA), with the index row it matched.
pub(crate) struct IndexedFile {
    /// The path within its directory.
    pub(crate) rel: zync_fs::RelPath,
    /// The absolute path.
    pub(crate) abs: PathBuf,
    /// Opened without following a symlink.
    pub(crate) file: std::fs::File,
    /// Size, mtime, mode and checksum, as indexed.
    pub(crate) size: u64,
    pub(crate) mtime_ns: i64,
    pub(crate) mode: u32,
    pub(crate) sha256: String,
}

impl IndexedFile {
    /// The `stale` refusal for `rel`: it changed, a newer change is coming.
    pub(crate) fn stale_refusal(rel: &zync_fs::RelPath, why: &str) -> Refusal {
        Refusal::new(
            ErrorCode::Stale,
            format!("{rel} {why}; ask again after the next change"),
        )
    }

    /// Checks the open file is still a regular file of the indexed size and its path has the
    /// indexed mtime: before serving it, and after reading it whole (GET_DELTA).
    pub(crate) fn check_unchanged(&self) -> Result<(), Refusal> {
        let meta = self
            .file
            .metadata()
            .map_err(|e| Self::stale_refusal(&self.rel, &format!("cannot be read ({e})")))?;
        let mtime_ns = zync_fs::lstat(&self.abs)
            .ok()
            .and_then(|s| match s {
                zync_fs::Stat::Entry(m) => Some(m.mtime_ns),
                _ => None,
            })
            .unwrap_or(i64::MIN);
        if meta.len() != self.size || mtime_ns != self.mtime_ns || !meta.is_file() {
            return Err(Self::stale_refusal(
                &self.rel,
                "changed since it was indexed",
            ));
        }
        Ok(())
    }
}

/// At most this many pipelined GET_FILE requests are answered as one batch.
const READ_AHEAD_FILES: usize = 256;
/// At most this many content bytes are read ahead for one batch.
const READ_AHEAD_BYTES: usize = 8 << 20;

/// A connection whose client proved that it holds the token.
pub struct Connection {
    /// Where frames to the client go.
    pub(crate) ws: SplitSink<Ws, Message>,
    /// Frames from the client, read ahead by a task of their own.
    pub(crate) inbox: Inbox,
    pub(crate) shared: Arc<Shared>,
    db: Option<Arc<Mutex<Index>>>,
    pub(crate) client_id: String,
    client_version: Option<String>,
    /// The AUTH request the welcome answers.
    auth_id: u64,
    sent: Status,
    /// The upstream session open on this connection, if any.
    pub(crate) upstream: Option<OpenSession>,
    /// Content frames of a refused upload, dropped as they arrive.
    pub(crate) discard: Option<Discard>,
    /// Messages read ahead while batching GET_FILE requests, handled before reading more.
    backlog: std::collections::VecDeque<Message>,
}

impl Connection {
    /// Wraps a WebSocket whose client just proved itself.
    pub(crate) fn new(ws: Ws, shared: Arc<Shared>, client: Authenticated) -> Connection {
        let sent = *shared.status.borrow();
        let (ws, stream) = ws.split();
        Connection {
            ws,
            inbox: Inbox::start(stream),
            shared,
            db: None,
            client_id: client.client_id,
            client_version: client.client_version,
            auth_id: client.auth_id,
            sent,
            upstream: None,
            discard: None,
            backlog: std::collections::VecDeque::new(),
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
        self.abort_upstream().await;
        // Presence for `zync-apply status`; a failure is logged by `query`.
        let client = self.client_id.clone();
        let _ = self.query(move |i| i.client_disconnected(&client)).await;
    }

    /// Answers AUTH with what the daemon serves, and records the client as connected.
    async fn welcome(&mut self) -> bool {
        tracing::info!(client = %self.client_id, version = ?self.client_version, "client connected");
        let (client, version) = (self.client_id.clone(), self.client_version.clone());
        let _ = self
            .query(move |i| i.client_connected(&client, version.as_deref()))
            .await;
        let status = *self.shared.status.borrow();
        self.sent = status;
        let welcome = Reply::Auth(Welcome {
            protocol_version: zync_proto::PROTOCOL_VERSION,
            index_id: self.shared.index_id.clone(),
            dirs: self
                .shared
                .roots
                .iter()
                .map(|r| r.name.to_string())
                .collect(),
            scanning: status.scanning,
            server_version: env!("CARGO_PKG_VERSION").to_string(),
            pipelining: Some(zync_proto::Pipelining {
                requests: crate::inbox::MAX_PIPELINED_REQUESTS,
                bytes: crate::inbox::MAX_PIPELINED_BYTES,
            }),
        });
        let id = self.auth_id;
        self.send(&ServerMessage::Ok(OkResponse { id, reply: welcome }))
            .await
    }

    async fn serve(&mut self, mut stop: broadcast::Receiver<()>) {
        let mut status = self.shared.status.clone();
        let mut watching = true;
        let idle = self.shared.limits.idle;
        // Silence is counted only while the daemon waits: answering a long request is not the
        // client's silence.
        let mut waiting_since = tokio::time::Instant::now();
        loop {
            if let Some(message) = self.backlog.pop_front() {
                if !self.on_message(message).await {
                    return;
                }
                waiting_since = tokio::time::Instant::now();
                continue;
            }
            tokio::select! {
                message = self.inbox.next() => {
                    let message = match message {
                        Some(Ok(m)) => m,
                        Some(Err(e)) => {
                            tracing::debug!("connection ended: {e}");
                            let _ = self.close(CloseCode::Size, &format!("{e}")).await;
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
                    tracing::info!(client = %self.client_id, "closing a connection silent for {idle:?} (--idle-timeout)");
                    let _ = self.close(CloseCode::Policy, &format!("silent for {} s", idle.as_secs())).await;
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
                    let _ = self.close(CloseCode::Away, "the daemon is shutting down").await;
                    return;
                }
            }
        }
    }

    async fn close(&mut self, code: CloseCode, reason: &str) -> Result<(), ()> {
        // Close reasons are limited to 123 bytes by the WebSocket protocol.
        let mut reason = reason.to_string();
        while reason.len() > 120 {
            reason.pop();
        }
        self.ws
            .send(Message::Close(Some(CloseFrame {
                code,
                reason: reason.into(),
            })))
            .await
            .map_err(|_| ())
    }

    /// Pushes CHANGED when new changes were recorded and SCAN_COMPLETE when a scan ended.
    async fn notify(&mut self, now: Status) -> bool {
        let mut ok = true;
        if now.last_seq > self.sent.last_seq {
            ok &= self
                .send(&ServerMessage::Event(Event::Changed {
                    last_sequence: now.last_seq,
                }))
                .await;
        }
        if self.sent.scanning && !now.scanning {
            ok &= self
                .send(&ServerMessage::Event(Event::ScanComplete {
                    last_sequence: now.last_seq,
                }))
                .await;
        }
        self.sent = now;
        ok
    }

    async fn send(&mut self, message: &ServerMessage) -> bool {
        self.ws.send(Message::text(message.to_json())).await.is_ok()
    }

    /// Queues a message without flushing: the frames of one file go out together.
    async fn feed(&mut self, message: &ServerMessage) -> bool {
        self.ws.feed(Message::text(message.to_json())).await.is_ok()
    }

    pub(crate) async fn send_error(&mut self, id: Option<u64>, refusal: Refusal) -> bool {
        self.send(&ServerMessage::Error(ErrorResponse {
            id,
            code: refusal.code,
            message: refusal.message,
        }))
        .await
    }

    /// Queues an error response without flushing (within a batch of responses).
    async fn feed_error(&mut self, id: Option<u64>, refusal: Refusal) -> bool {
        self.feed(&ServerMessage::Error(ErrorResponse {
            id,
            code: refusal.code,
            message: refusal.message,
        }))
        .await
    }

    /// Handles one frame; false ends the connection.
    async fn on_message(&mut self, message: Message) -> bool {
        let text = match message {
            Message::Text(text) => {
                // A client may stop sending a refused upload's content: its next request ends
                // the discard (frames of that upload cannot come after it on one stream).
                self.discard = None;
                text
            }
            Message::Binary(frame) => {
                if let Some(discard) = self.discard {
                    let ours =
                        zync_proto::decode_chunk(&frame).is_ok_and(|(id, _)| id == discard.id);
                    if ours {
                        self.discard = (discard.frames > 1).then_some(Discard {
                            id: discard.id,
                            frames: discard.frames - 1,
                        });
                        return true;
                    }
                }
                return self
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
        let request = match Request::parse(&text) {
            Ok(r) => r,
            Err(e) => {
                return self.send_error(e.id, Refusal::new(e.code, e.message)).await;
            }
        };
        let id = request.id;
        if let Op::GetFile(get) = request.op {
            let mut batch = vec![(id, get)];
            self.read_ahead_files(&mut batch);
            return self.get_files(batch).await;
        }
        if let Op::GetDelta(get) = request.op {
            return match self.get_delta(id, get).await {
                Ok(alive) => alive,
                Err(refusal) => self.send_error(Some(id), refusal).await,
            };
        }
        if let Op::UpstreamFile(file) = request.op {
            return match self.upstream_file(id, file).await {
                Ok(reply) => {
                    self.send(&ServerMessage::Ok(OkResponse { id, reply }))
                        .await
                }
                Err(refusal) => self.send_error(Some(id), refusal).await,
            };
        }
        match self.answer(request.op).await {
            Ok(reply) => {
                self.send(&ServerMessage::Ok(OkResponse { id, reply }))
                    .await
            }
            Err(refusal) => self.send_error(Some(id), refusal).await,
        }
    }

    async fn answer(&mut self, op: Op) -> Result<Reply, Refusal> {
        match op {
            Op::Hello(_) | Op::Auth(_) => Err(Refusal::new(
                ErrorCode::BadRequest,
                "the handshake is done: HELLO and AUTH are only accepted as a connection's first requests",
            )),
            Op::Ping {} => Ok(Reply::Ping {}),
            Op::GetLastSequence {} => {
                let status = *self.shared.status.borrow();
                let names: Vec<String> = self
                    .shared
                    .roots
                    .iter()
                    .map(|r| r.name.to_string())
                    .collect();
                let dirs = self
                    .query(move |index| {
                        names
                            .into_iter()
                            .map(|n| index.dir_last_seq(&n).map(|s| (n, s)))
                            .collect::<Result<_, _>>()
                    })
                    .await?;
                Ok(Reply::GetLastSequence(LastSequence {
                    last_sequence: status.last_seq,
                    dirs,
                    scanning: status.scanning,
                }))
            }
            Op::GetChanges(get) => self.get_changes(get).await,
            Op::AckChanges(ack) => {
                self.served(&ack.dir)?;
                let client = self.client_id.clone();
                let dir = ack.dir.clone();
                let sequence = ack.sequence;
                self.query(move |index| index.record_ack(&client, &dir, sequence))
                    .await?;
                Ok(Reply::AckChanges(AckReply {
                    dir: ack.dir,
                    sequence,
                }))
            }
            Op::PrepareUpstream(prepare) => self.prepare_upstream(prepare).await,
            Op::FinalizeUpstream(finalize) => self.finalize_upstream(finalize).await,
            Op::GetFile(_) | Op::GetDelta(_) | Op::UpstreamFile(_) => Err(Refusal::new(
                ErrorCode::Internal,
                "streamed operations are handled apart",
            )),
        }
    }

    pub(crate) fn served(&self, dir: &str) -> Result<&ServedRoot, Refusal> {
        self.shared.root(dir).ok_or_else(|| {
            let names: Vec<&str> = self.shared.roots.iter().map(|r| r.name.as_str()).collect();
            Refusal::new(
                ErrorCode::UnknownDir,
                format!(
                    "this daemon serves no directory named {dir:?} (it serves: {})",
                    names.join(", ")
                ),
            )
        })
    }

    async fn get_changes(&mut self, get: GetChanges) -> Result<Reply, Refusal> {
        self.served(&get.dir)?;
        let limit = get
            .limit
            .unwrap_or(zync_proto::DEFAULT_CHANGES_LIMIT)
            .clamp(1, zync_proto::MAX_CHANGES_LIMIT) as usize;
        let dir = get.dir.clone();
        let (mut rows, last_sequence) = self
            .query(move |index| {
                let rows = index.changes_since(&dir, get.since, limit + 1)?;
                Ok((rows, index.dir_last_seq(&dir)?))
            })
            .await?;
        let mut more = rows.len() > limit;
        rows.truncate(limit);
        // Keep the reply well under the text message limit whatever the path lengths: JSON
        // overhead per change is under 300 bytes, plus its path and target, escaped.
        let mut bytes = 0usize;
        if let Some(cut) = rows.iter().position(|e| {
            // JSON may escape a byte as six (\u0001), so budget six per path byte.
            bytes += 300 + 6 * (e.path.len() + e.meta.target.as_ref().map_or(0, String::len));
            bytes > zync_proto::MAX_TEXT_MESSAGE / 2
        }) {
            rows.truncate(cut.max(1));
            more = true;
        }
        let changes = rows
            .into_iter()
            .map(|e| Change {
                seq: e.seq,
                path: e.path,
                kind: match e.meta.kind {
                    Kind::File => zync_proto::Kind::File,
                    Kind::Dir => zync_proto::Kind::Dir,
                    Kind::Symlink => zync_proto::Kind::Symlink,
                },
                deleted: e.deleted,
                size: e.meta.size,
                mtime_ns: e.meta.mtime_ns,
                mode: e.meta.mode,
                sha256: e.meta.sha256,
                target: e.meta.target,
            })
            .collect();
        Ok(Reply::GetChanges(ChangesReply {
            dir: get.dir,
            changes,
            last_sequence,
            more,
        }))
    }

    /// Opens the indexed regular file `path` of `dir` for serving (GET_DELTA), checked as
    /// GET_FILE's files are: see [`indexed_file`].
    pub(crate) async fn open_indexed(
        &mut self,
        dir: &str,
        path: &str,
    ) -> Result<IndexedFile, Refusal> {
        let (root, dir, rel, _) = self.locate(GetFile {
            dir: dir.to_string(),
            path: path.to_string(),
            offset: None,
        })?;
        self.query(move |index| {
            Ok(indexed_file(
                index,
                &root,
                &dir,
                rel,
                &mut zync_fs::CheckedDirs::default(),
            ))
        })
        .await?
    }

    /// Takes further GET_FILE requests the client already sent (pipelined), up to a batch, so
    /// that one trip off the reactor serves many small files. Anything else read on the way is
    /// kept for [`Connection::serve`] to handle next, in order.
    fn read_ahead_files(&mut self, batch: &mut Vec<(u64, GetFile)>) {
        // A request kept for later comes before anything still unread.
        if !self.backlog.is_empty() {
            return;
        }
        while batch.len() < READ_AHEAD_FILES {
            let message = match self.inbox.try_next() {
                None => return,
                Some(Some(Ok(message))) => message,
                // The stream ended or failed: let the normal path see that after the batch.
                Some(_) => {
                    self.backlog.push_back(Message::Close(None));
                    return;
                }
            };
            if let Message::Text(text) = &message {
                if let Ok(Request {
                    id,
                    op: Op::GetFile(get),
                }) = Request::parse(text)
                {
                    batch.push((id, get));
                    continue;
                }
            }
            self.backlog.push_back(message);
            return;
        }
    }

    /// Answers GET_FILE requests in order, batch after batch while the client keeps sending
    /// them: each file's header, then its bytes in chunks. The next batch is opened and read
    /// off the reactor while this one is sent. A file must still be what the index says (size
    /// and mtime), else `stale`: a newer change is on its way. Returns false when the
    /// connection failed.
    async fn get_files(&mut self, batch: Vec<(u64, GetFile)>) -> bool {
        let mut next = Some(self.open_files(batch).await);
        while let Some(opening) = next.take() {
            let opened = opening.finish().await;
            let mut more = Vec::new();
            self.read_ahead_files(&mut more);
            if !more.is_empty() {
                next = Some(self.open_files(more).await);
            }
            if !self.send_opened(opened).await {
                return false;
            }
        }
        true
    }

    /// Starts opening a batch of GET_FILEs off the reactor: one trip for the lookups, the
    /// checks and the first chunk of each file (all of a small file), within a memory budget.
    async fn open_files(&mut self, batch: Vec<(u64, GetFile)>) -> Opening {
        let ids: Vec<u64> = batch.iter().map(|(id, _)| *id).collect();
        let mut wanted = Vec::with_capacity(batch.len());
        for (id, get) in batch {
            wanted.push((id, self.locate(get)));
        }
        let db = match self.index().await {
            Ok(db) => db,
            Err(refusal) => return Opening::Refused(ids, refusal),
        };
        let task = tokio::task::spawn_blocking(move || {
            let index = db
                .lock()
                .map_err(|_| Refusal::new(ErrorCode::Internal, "index lock poisoned"))?;
            let mut budget = READ_AHEAD_BYTES;
            // Each directory's parents are checked once for the batch.
            let mut checked = zync_fs::CheckedDirs::default();
            Ok(wanted
                .into_iter()
                .map(|(id, located)| {
                    let opened = located.and_then(|(root, dir, rel, offset)| {
                        let file = Get { dir, rel, offset };
                        open_for_get(id, &index, &root, file, &mut budget, &mut checked)
                    });
                    (id, opened)
                })
                .collect())
        });
        Opening::Running(ids, task)
    }

    /// Sends a batch that was opened: each file, or its refusal. Flushed at the end.
    async fn send_opened(&mut self, opened: (Vec<u64>, Result<Vec<OpenedFile>, Refusal>)) -> bool {
        match opened {
            (_, Ok(opened)) => {
                for (id, result) in opened {
                    let alive = match result {
                        Ok((file, header, first)) => {
                            self.stream_file(id, file, header, first).await
                        }
                        Err(refusal) => self.feed_error(Some(id), refusal).await,
                    };
                    if !alive {
                        return false;
                    }
                }
            }
            (ids, Err(refusal)) => {
                // The index failed: every request of the batch gets the same answer.
                for id in ids {
                    let again = Refusal::new(refusal.code, refusal.message.clone());
                    if !self.feed_error(Some(id), again).await {
                        return false;
                    }
                }
            }
        }
        self.ws.flush().await.is_ok()
    }

    /// Checks a GET_FILE's directory and path: the root, the directory name, the path.
    fn locate(
        &self,
        get: GetFile,
    ) -> Result<(std::path::PathBuf, String, zync_fs::RelPath, u64), Refusal> {
        let root = self.served(&get.dir)?;
        let rel = zync_fs::RelPath::parse(&get.path)
            .map_err(|e| Refusal::new(ErrorCode::InvalidPath, e.to_string()))?;
        if root.rules.is_ignored(&rel, false) {
            return Err(Refusal::new(
                ErrorCode::NotAFile,
                format!("{rel} is ignored by the daemon's rules"),
            ));
        }
        Ok((root.path.clone(), get.dir, rel, get.offset.unwrap_or(0)))
    }

    /// Sends one opened file: its header, the first chunk (already read as a frame), then the
    /// rest chunk by chunk, each read with a positioned read straight into its frame while the
    /// previous one is sent (memory bounded by two chunks). Not flushed at the end.
    async fn stream_file(
        &mut self,
        id: u64,
        file: std::fs::File,
        header: FileHeader,
        first: Vec<u8>,
    ) -> bool {
        let (size, offset, path) = (header.size, header.offset, header.path.clone());
        if !self
            .feed(&ServerMessage::Ok(OkResponse {
                id,
                reply: Reply::GetFile(header),
            }))
            .await
        {
            return false;
        }
        let mut sent = offset;
        let file = Arc::new(file);
        // A positioned read of the chunk at `at` straight into its frame, off the reactor.
        let read = |at: u64| {
            let file = Arc::clone(&file);
            let want = (size - at).min(zync_proto::MAX_CHUNK as u64) as usize;
            tokio::task::spawn_blocking(move || {
                use std::os::unix::fs::FileExt;
                let mut frame = zync_proto::chunk_frame(id, want);
                file.read_exact_at(&mut frame[zync_proto::CHUNK_HEADER..], at)
                    .map(|()| frame)
            })
        };
        // The first chunk was read with the checks, unless the batch's budget ran out.
        let mut reading = None;
        let mut next = if first.len() > zync_proto::CHUNK_HEADER {
            Some(first)
        } else {
            reading = (sent < size).then(|| read(sent));
            None
        };
        loop {
            if let Some(handle) = reading.take() {
                match handle.await {
                    Ok(Ok(frame)) => next = Some(frame),
                    Ok(Err(e)) => {
                        // The file shrank or failed while being sent: the client drops it.
                        tracing::warn!(path = %path, "read failed mid-transfer: {e}");
                        let stale = Refusal::new(
                            ErrorCode::Stale,
                            format!("{path} changed during the transfer; ask again after the next change"),
                        );
                        return self.feed_error(Some(id), stale).await;
                    }
                    Err(e) => {
                        let internal = Refusal::new(ErrorCode::Internal, e.to_string());
                        return self.feed_error(Some(id), internal).await;
                    }
                }
            }
            let Some(frame) = next.take() else {
                break;
            };
            sent += (frame.len() - zync_proto::CHUNK_HEADER) as u64;
            // The next chunk is read while this one is sent.
            reading = (sent < size).then(|| read(sent));
            if self.ws.send(Message::binary(frame)).await.is_err() {
                return false;
            }
        }
        true
    }

    /// This connection's own read connection to the index, opened on first use.
    async fn index(&mut self) -> Result<Arc<Mutex<Index>>, Refusal> {
        if let Some(db) = &self.db {
            return Ok(db.clone());
        }
        let path = self.shared.db_path.clone();
        let index = tokio::task::spawn_blocking(move || Index::open(&path))
            .await
            .map_err(|e| Refusal::new(ErrorCode::Internal, e.to_string()))??;
        let db = Arc::new(Mutex::new(index));
        self.db = Some(db.clone());
        Ok(db)
    }

    /// Runs a query on this connection's own read connection, off the reactor.
    pub(crate) async fn query<T, F>(&mut self, f: F) -> Result<T, Refusal>
    where
        T: Send + 'static,
        F: FnOnce(&Index) -> Result<T, zync_db::DbError> + Send + 'static,
    {
        let db = self.index().await?;
        tokio::task::spawn_blocking(move || {
            let index = db
                .lock()
                .map_err(|_| Refusal::new(ErrorCode::Internal, "index lock poisoned"))?;
            f(&index).map_err(Refusal::from)
        })
        .await
        .map_err(|e| Refusal::new(ErrorCode::Internal, e.to_string()))?
    }
}

/// Opens the indexed regular file `rel` of `dir`, checked in the order docs/PROTOCOL.md gives
/// for GET_FILE: the index has a live regular-file row for it, and the file on disk is still
/// what that row says (parents are real directories, no symlink followed, same size and mtime,
/// checksum known), else `stale`: a newer change is on its way. Blocking: runs off the reactor.
fn indexed_file(
    index: &Index,
    root: &std::path::Path,
    dir: &str,
    rel: zync_fs::RelPath,
    checked: &mut zync_fs::CheckedDirs,
) -> Result<IndexedFile, Refusal> {
    let entry = match index.get(dir, rel.as_str())? {
        Some(e) if !e.deleted => e,
        _ => {
            return Err(Refusal::new(
                ErrorCode::NotFound,
                format!("{rel} is not in the index"),
            ))
        }
    };
    if entry.meta.kind != Kind::File {
        return Err(Refusal::new(
            ErrorCode::NotAFile,
            format!(
                "{rel} is a {}, not a regular file",
                entry.meta.kind.as_str()
            ),
        ));
    }
    let stale = |why: String| IndexedFile::stale_refusal(&rel, &why);
    checked
        .check_parents(root, &rel)
        .map_err(|e| stale(format!("changed: {e}")))?;
    let abs = rel.to_path(root);
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(&abs)
        .map_err(|e| stale(format!("cannot be opened ({e})")))?;
    let Some(sha256) = entry.meta.sha256.clone() else {
        return Err(stale("has no checksum yet".to_string()));
    };
    let opened = IndexedFile {
        rel,
        abs,
        file,
        size: entry.meta.size,
        mtime_ns: entry.meta.mtime_ns,
        mode: entry.meta.mode,
        sha256,
    };
    opened.check_unchanged()?;
    Ok(opened)
}

/// A GET_FILE opened for sending: the file, its header, and its first chunk as a frame.
type OpenedFile = (u64, Result<(std::fs::File, FileHeader, Vec<u8>), Refusal>);

/// A batch of GET_FILEs being opened off the reactor, with the request ids it answers.
enum Opening {
    Running(
        Vec<u64>,
        tokio::task::JoinHandle<Result<Vec<OpenedFile>, Refusal>>,
    ),
    /// The index could not be opened: each request gets this answer.
    Refused(Vec<u64>, Refusal),
}

impl Opening {
    /// Waits for the batch: the request ids, and each file opened or refused.
    async fn finish(self) -> (Vec<u64>, Result<Vec<OpenedFile>, Refusal>) {
        match self {
            Opening::Running(ids, task) => {
                let opened = task
                    .await
                    .map_err(|e| Refusal::new(ErrorCode::Internal, e.to_string()))
                    .and_then(|opened| opened);
                (ids, opened)
            }
            Opening::Refused(ids, refusal) => (ids, Err(refusal)),
        }
    }
}

/// One GET_FILE of a batch, located: the dir's name, the path in it, and where to start.
struct Get {
    dir: String,
    rel: zync_fs::RelPath,
    offset: u64,
}

/// Opens `rel` for GET_FILE ([`indexed_file`]) and reads its first chunk from `offset` (all of
/// a small file) within the batch's `budget`, as the frame of request `id` (header included;
/// empty past the budget). `checked` is the batch's: each directory's parents are checked
/// once. Blocking: runs off the reactor.
fn open_for_get(
    id: u64,
    index: &Index,
    root: &std::path::Path,
    Get { dir, rel, offset }: Get,
    budget: &mut usize,
    checked: &mut zync_fs::CheckedDirs,
) -> Result<(std::fs::File, FileHeader, Vec<u8>), Refusal> {
    use std::os::unix::fs::FileExt;
    let IndexedFile {
        rel,
        file,
        size,
        mtime_ns,
        mode,
        sha256,
        ..
    } = indexed_file(index, root, &dir, rel, checked)?;
    let stale = |why: String| IndexedFile::stale_refusal(&rel, &why);
    if offset > size {
        return Err(Refusal::new(
            ErrorCode::BadRequest,
            format!("offset {offset} is beyond the {size} bytes of {rel}; ask from 0"),
        ));
    }
    let chunk = zync_proto::MAX_CHUNK as u64;
    // Past the batch's budget, the content is read while it is sent instead.
    let first_len = ((size - offset).min(chunk) as usize).min(*budget);
    *budget -= first_len;
    let mut first = zync_proto::chunk_frame(id, first_len);
    file.read_exact_at(&mut first[zync_proto::CHUNK_HEADER..], offset)
        .map_err(|e| stale(format!("cannot be read ({e})")))?;
    let header = FileHeader {
        dir,
        path: rel.to_string(),
        size,
        offset,
        sha256,
        mtime_ns,
        mode,
        chunks: (size - offset).div_ceil(chunk),
    };
    Ok((file, header, first))
}
