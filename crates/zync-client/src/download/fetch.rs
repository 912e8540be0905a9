//! Many downloads in flight on one connection: requests go out ahead of the replies, so a page of
//! small files costs a few round trips instead of one per file. The daemon answers requests in
//! order; every frame carries its request id, so nothing here depends on that order.

use std::collections::{HashMap, HashSet, VecDeque};

use std::io::Write;

use zync_cli::progress::Progress;
use zync_proto::{DeltaHeader, ErrorCode, FileHeader, FilesReply, WantedFile};

use zync_fs::AtomicFile;

use crate::connection::{Connection, Transfer};
use crate::download::land::file::{Ask, Pending};
use crate::error::ClientError;
use tokio_tungstenite::tungstenite::Bytes;

/// How much a pipeline keeps in flight.
#[derive(Debug, Clone, Copy)]
pub struct Window {
    /// Requests sent and not yet answered.
    requests: usize,
    /// Bytes of request text unanswered.
    request_bytes: usize,
    /// Content bytes asked for and not yet received (besides the first request).
    content_bytes: u64,
}

impl Window {
    /// The window for a daemon that advertised `pipelining` in its welcome, AUTH's reply
    /// (`None`: an older daemon).
    ///
    /// An older daemon reads the next request only after it sent the current file, so
    /// unanswered requests wait in socket buffers: keeping them well under a socket buffer
    /// means a send never blocks while the daemon waits for us to read. A daemon that reads
    /// ahead takes many more; with latency, the window is what keeps the tunnel busy.
    pub fn for_daemon(pipelining: Option<zync_proto::Pipelining>) -> Window {
        const OLD_REQUESTS: usize = 1024;
        const OLD_REQUEST_BYTES: usize = 48 * 1024;
        const MAX_REQUESTS: usize = 4096;
        const MAX_REQUEST_BYTES: usize = 4 << 20;
        const MAX_CONTENT_BYTES: u64 = 64 << 20;
        let (requests, request_bytes) = match pipelining {
            Some(p) => (
                usize::try_from(p.requests).map_or(MAX_REQUESTS, |r| r.min(MAX_REQUESTS)),
                usize::try_from(p.bytes).map_or(MAX_REQUEST_BYTES, |b| b.min(MAX_REQUEST_BYTES)),
            ),
            None => (OLD_REQUESTS, OLD_REQUEST_BYTES),
        };
        Window {
            requests: requests.max(1),
            request_bytes: request_bytes.max(1),
            content_bytes: MAX_CONTENT_BYTES,
        }
    }
}

/// The most delta a GET_DELTA may announce for a file of `size` bytes; more is a protocol
/// error, not spooled. A delta (`zync_fs::delta`, docs/PROTOCOL.md "GET_DELTA") carries each
/// byte of the file at most once, as a literal; a copy command (at most 17 bytes) stands for a
/// whole block of the client's signature (256 bytes or more), so it is shorter than the literal
/// it replaces. What is left is the stream's header and end marker (12 bytes) and, per record
/// (one per window or per piece of 512 KiB diffed), its length, magic, end command and a
/// literal's command: under 20 bytes. A thousandth of the file and 64 KiB leave room for all
/// of it many times over.
fn max_delta(size: u64) -> u64 {
    size.saturating_add(size / 1024).saturating_add(64 << 10)
}

/// A file whose chunks are this big is written and hashed off the reactor while the next chunks
/// are received: a big file streams at the speed of the slower of the two, not of their sum.
const WRITE_BEHIND_MIN: u64 = 128 << 10;
/// Chunks received and not yet written, per file written behind (4 MiB of 1 MiB chunks): a
/// slow moment of the disk does not stop the socket at once.
const WRITE_BEHIND_DEPTH: usize = 4;

/// A temp file lent to a blocking thread that writes the chunks sent to it in order, and gives
/// the file back with the first error, if any, once the sender is dropped (or at that error).
struct Writing {
    chunks: tokio::sync::mpsc::Sender<Bytes>,
    done: tokio::task::JoinHandle<(AtomicFile, Result<(), zync_fs::FsError>)>,
}

impl Writing {
    fn start(mut file: AtomicFile) -> Writing {
        let (chunks, mut rx) = tokio::sync::mpsc::channel::<Bytes>(WRITE_BEHIND_DEPTH);
        let done = tokio::task::spawn_blocking(move || {
            while let Some(data) = rx.blocking_recv() {
                if let Err(e) = file.write(&data) {
                    return (file, Err(e));
                }
            }
            (file, Ok(()))
        });
        Writing { chunks, done }
    }
}

/// How a download's content is written: the one place that chooses among the three ways.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Method {
    /// A small file in one chunk: nothing is written on the reactor; the whole content goes to
    /// a group of files written and sealed on a blocking thread (`land::batch::Writer`).
    Whole,
    /// Written chunk by chunk on the receiving task as chunks arrive.
    Here,
    /// Big chunks: written and hashed by a blocking thread of its own while the next chunks
    /// are received ([`Writing`]).
    Behind,
}

impl Method {
    /// The way for a download from byte `offset` announced by `header`.
    fn for_download(offset: u64, header: &FileHeader) -> Method {
        let remaining = header.size.saturating_sub(offset);
        if offset == 0 && header.chunks == 1 && header.size < WRITE_BEHIND_MIN {
            Method::Whole
        } else if remaining.min(zync_proto::MAX_CHUNK as u64) >= WRITE_BEHIND_MIN {
            // Its first chunk is big (chunks are MAX_CHUNK but the last).
            Method::Behind
        } else {
            Method::Here
        }
    }
}

/// A download finished one way or the other; `usize` is the caller's index of the change.
pub enum Finished {
    /// All content arrived; the header says what it must hash to.
    Done(usize, Box<Pending>, FileHeader),
    /// A small file arrived whole in one chunk and nothing is written yet: the caller writes,
    /// verifies and seals it off the reactor ([`Pending::write_whole`]).
    Whole(usize, Box<Pending>, FileHeader, Bytes),
    /// A whole delta arrived in the spool file; R's older version and it rebuild the file.
    Delta(usize, Box<Pending>, DeltaHeader, std::fs::File),
    /// The daemon refused it or a local write failed (its temp file is removed).
    Failed(usize, ClientError),
}

struct Slot {
    index: usize,
    pending: Box<Pending>,
    offset: u64,
    header: Option<FileHeader>,
    /// For a GET_DELTA: its header once it came, and where the delta is kept meanwhile
    /// (an unnamed temp file: memory does not grow with the delta).
    delta: Option<(DeltaHeader, std::fs::File)>,
    asked_delta: bool,
    /// A GET_WINDOWS, the first step of a delta: its answer plans the GET_DELTA.
    asked_windows: bool,
    /// How the content is written, decided when its header came.
    method: Method,
    /// The thread writing this file's chunks, for [`Method::Behind`].
    writing: Option<Writing>,
    received: u64,
    chunks: u64,
    cost: usize,
    expected: u64,
    /// `expected` counts in [`Pipeline::claimed`]: the file's space is not reserved yet.
    claimed: bool,
    /// The bytes of a delta being kept in its spool, counted in [`Pipeline::claimed`] too
    /// until the download ends.
    spool: u64,
}

/// The downloads of one directory's page.
pub struct Pipeline<'a> {
    dir: &'a str,
    queue: VecDeque<(usize, Box<Pending>)>,
    /// Boxed: a full window is thousands of slots, and a map of them inline holds about twice
    /// as many slots' worth of memory.
    inflight: HashMap<u64, Box<Slot>>,
    request_bytes: usize,
    content_bytes: u64,
    /// Bytes asked for whose files have not reserved their space yet: the room a download
    /// about to be asked for must leave them.
    claimed: u64,
    /// GET_FILES in flight, by request id: many small files in one request and one frame.
    batches: HashMap<u64, Batch>,
    /// The files of those: each counts in the window as a request would, so that a window
    /// holds as many downloads (and as much memory) however they are asked for.
    batched: usize,
    /// Downloads that must go alone, by GET_FILE (the caller's indices): a daemon refused them
    /// in a GET_FILES as too large for it.
    alone: HashSet<usize>,
    /// Downloads finished or refused before they were asked for (no room for them on R's
    /// disk) or with others (a GET_FILES), reported by [`Pipeline::next`] one at a time.
    ready: VecDeque<Finished>,
    window: Window,
    /// Counts bytes as chunks arrive, for the progress bar; hidden for small pages.
    progress: Progress,
}

impl<'a> Pipeline<'a> {
    /// An empty pipeline for directory `dir` that keeps up to `window` in flight, reporting
    /// bytes to `progress`.
    pub fn new(dir: &'a str, window: Window, progress: Progress) -> Pipeline<'a> {
        Pipeline {
            dir,
            window,
            progress,
            queue: VecDeque::new(),
            inflight: HashMap::new(),
            request_bytes: 0,
            content_bytes: 0,
            claimed: 0,
            batches: HashMap::new(),
            batched: 0,
            alone: HashSet::new(),
            ready: VecDeque::new(),
        }
    }

    /// Reports bytes to `progress` from now on.
    pub fn set_progress(&mut self, progress: Progress) {
        self.progress = progress;
    }

    /// Queues a download; [`Pipeline::fill`] sends it when the window allows.
    pub fn push(&mut self, index: usize, pending: Box<Pending>) {
        self.queue.push_back((index, pending));
    }

    /// Downloads queued and not yet requested.
    pub fn queued(&self) -> usize {
        self.queue.len()
    }

    /// True when nothing is queued or in flight.
    pub fn is_empty(&self) -> bool {
        self.queue.is_empty()
            && self.inflight.is_empty()
            && self.batches.is_empty()
            && self.ready.is_empty()
    }

    /// Sends queued requests while the window has room, once an eighth of it is free:
    /// requests go out in bursts of dozens, so the daemon wakes once for many small files
    /// instead of once for each (a reply opening room for one more request would otherwise
    /// send one at a time), while the window stays nearly full for a tunnel with latency.
    ///
    /// # Errors
    /// A transport failure.
    pub async fn fill(&mut self, conn: &mut Connection) -> Result<(), ClientError> {
        let w = self.window;
        let room = self.requests() <= w.requests - w.requests / 8
            && self.request_bytes <= w.request_bytes - w.request_bytes / 8
            && self.content_bytes <= w.content_bytes - w.content_bytes / 8;
        if !room {
            return Ok(());
        }
        let mut sent = false;
        let limit = conn.get_files_limit();
        while let Some((index, pending)) = self.queue.front_mut() {
            pending.prepare_delta();
            if pending.asks_windows() && (conn.lacks_windows() || pending.window_key().is_none()) {
                pending.sign_later();
            }
            if pending.needs_signing() {
                // A read of the whole older version: off the runtime's threads.
                let Some((index, mut pending)) = self.queue.pop_front() else {
                    break;
                };
                let pending = tokio::task::spawn_blocking(move || {
                    pending.sign_whole();
                    pending
                })
                .await
                .map_err(|e| ClientError::Protocol(format!("signing a file failed: {e}")))?;
                self.queue.push_front((index, pending));
                continue;
            }
            let offset = pending.resume_offset();
            if limit > 1 && offset == 0 && batchable(pending) && !self.alone.contains(index) {
                if !self.fill_batch(conn, limit).await? {
                    break;
                }
                sent = true;
                continue;
            }
            // A GET_WINDOWS is answered with a few KiB, not the file.
            let expected = if pending.asks_windows() {
                0
            } else {
                pending.remaining(offset)
            };
            let cost = 64 + self.dir.len() + pending.path().len() + pending.ask_bytes();
            if self.is_full(cost, expected) {
                break;
            }
            let Some((index, mut pending)) = self.queue.pop_front() else {
                break;
            };
            // Checked at plan time alone; now again, with what the downloads before it take.
            if let Err(e) = pending.check_room(self.claimed) {
                self.ready.push_back(Finished::Failed(index, e));
                continue;
            }
            let ask = pending.take_ask();
            let (mut asked_delta, mut asked_windows) = (true, false);
            let id = match (ask, pending.window_key()) {
                (Some(Ask::Signature(signature, windows)), _) => {
                    conn.request_delta(self.dir, pending.path(), signature, windows)
                        .await?
                }
                (Some(Ask::Plan(signature, plan)), _) => {
                    conn.request_planned_delta(self.dir, pending.path(), signature, plan)
                        .await?
                }
                (Some(Ask::Windows), Some(key)) => {
                    (asked_delta, asked_windows) = (false, true);
                    let window = zync_fs::checkpoint::WINDOW as u32;
                    conn.request_windows(self.dir, pending.path(), window, key)
                        .await?
                }
                _ => {
                    asked_delta = false;
                    conn.request_file(self.dir, pending.path(), offset).await?
                }
            };
            sent = true;
            // What an earlier attempt kept counts as done: the total is whole files.
            self.progress.bytes(offset);
            self.request_bytes += cost;
            self.content_bytes += expected;
            self.claimed += expected;
            self.inflight.insert(
                id,
                Box::new(Slot {
                    index,
                    pending,
                    offset,
                    header: None,
                    delta: None,
                    asked_delta,
                    asked_windows,
                    method: Method::Here,
                    writing: None,
                    received: 0,
                    chunks: 0,
                    cost,
                    expected,
                    claimed: true,
                    spool: 0,
                }),
            );
        }
        if sent {
            conn.flush().await?;
        }
        Ok(())
    }

    /// Reads one message about the downloads in flight; returns a download when it finished.
    ///
    /// # Errors
    /// A transport failure, a stall, or a daemon that breaks the protocol (more bytes than
    /// announced, a header that does not match the request): the caller reconnects.
    pub async fn next(&mut self, conn: &mut Connection) -> Result<Option<Finished>, ClientError> {
        if let Some(ready) = self.ready.pop_front() {
            return Ok(Some(ready));
        }
        match conn.next_transfer().await? {
            Transfer::Files(id, reply) => self.files_reply(id, reply),
            Transfer::Chunk(id, data) if self.batches.contains_key(&id) => {
                self.files_content(id, data)
            }
            Transfer::Header(id, header) => {
                let Some(slot) = self.inflight.get_mut(&id) else {
                    tracing::debug!(id, "skipped the header of a download no longer wanted");
                    return Ok(None);
                };
                if slot.asked_delta
                    || slot.asked_windows
                    || header.offset != slot.offset
                    || header.path != slot.pending.path()
                {
                    return Err(ClientError::Protocol(format!(
                        "asked for {} from byte {}, the daemon sends {} from byte {}",
                        slot.pending.path(),
                        slot.offset,
                        header.path,
                        header.offset
                    )));
                }
                if header.offset > header.size
                    || header.chunks
                        != (header.size - header.offset).div_ceil(zync_proto::MAX_CHUNK as u64)
                {
                    return Err(ClientError::Protocol(format!(
                        "{}: a header of {} bytes from {} in {} chunks does not add up",
                        header.path, header.size, header.offset, header.chunks
                    )));
                }
                if header.sha256 != slot.pending.sha256() {
                    // GET_FILE names no version (docs/PROTOCOL.md): E's file moved on since the
                    // page, and a newer change brings it. Nothing of this one is written.
                    let stale = ClientError::Server {
                        code: ErrorCode::Stale,
                        message: format!("{} changed on E during the transfer", header.path),
                    };
                    return Ok(self.fail(id, stale));
                }
                // The room check and the reservation were for the planned size: frames are
                // taken up to the header's, so it must be that size.
                if header.size != slot.pending.size() {
                    return Err(ClientError::Protocol(format!(
                        "{}: the daemon announced {} bytes of the version its changes listed as {} bytes (sha256 {})",
                        header.path,
                        header.size,
                        slot.pending.size(),
                        header.sha256
                    )));
                }
                slot.method = Method::for_download(slot.offset, &header);
                if slot.method != Method::Whole {
                    if let Err(e) = slot.pending.open(slot.offset) {
                        return Ok(self.fail(id, e));
                    }
                    // Its space is reserved now (where the file system reserves).
                    slot.claimed = false;
                    self.claimed -= slot.expected;
                }
                if slot.method == Method::Behind {
                    slot.writing = slot.pending.take_file().map(Writing::start);
                }
                let done = header.chunks == 0;
                slot.header = Some(header);
                Ok(if done { self.complete(id) } else { None })
            }
            Transfer::Delta(id, header) => {
                let Some(slot) = self.inflight.get_mut(&id) else {
                    return Ok(None);
                };
                if !slot.asked_delta
                    || header.path != slot.pending.path()
                    || header.chunks != header.delta_size.div_ceil(zync_proto::MAX_CHUNK as u64)
                {
                    return Err(ClientError::Protocol(format!(
                        "{}: a delta header that does not match the request",
                        header.path
                    )));
                }
                if header.sha256 != slot.pending.sha256() {
                    // E's file moved on since the page: a newer change brings it.
                    let stale = ClientError::Server {
                        code: ErrorCode::Stale,
                        message: format!("{} changed on E during the transfer", header.path),
                    };
                    return Ok(self.fail(id, stale));
                }
                // The delta is spooled in the root, and its frames are taken up to
                // `delta_size`: that must be what a delta of the planned file can be.
                if header.size != slot.pending.size() || header.delta_size > max_delta(header.size)
                {
                    return Err(ClientError::Protocol(format!(
                        "{}: the daemon announced a delta of {} bytes rebuilding {} bytes, for the version its changes listed as {} bytes (a delta of it is at most {} bytes)",
                        header.path,
                        header.delta_size,
                        header.size,
                        slot.pending.size(),
                        max_delta(slot.pending.size())
                    )));
                }
                // The delta is kept beside the file it rebuilds (whose room is claimed): with no
                // room for both, the whole file is asked for instead (`fail` asks again), which
                // needs room for the file alone, before the delta fills the disk.
                if let Err(e) = slot.pending.check_room_for(header.delta_size, self.claimed) {
                    return Ok(self.fail(id, e));
                }
                // Downloads asked for meanwhile leave it that room.
                slot.spool = header.delta_size;
                self.claimed += header.delta_size;
                let spool = match tempfile::tempfile_in(slot.pending.root()) {
                    Ok(spool) => spool,
                    Err(source) => {
                        let e = ClientError::Io {
                            what: "keep the delta of",
                            path: header.path.clone(),
                            source,
                        };
                        return Ok(self.fail(id, e));
                    }
                };
                let done = header.chunks == 0;
                slot.delta = Some((header, spool));
                Ok(if done { self.complete(id) } else { None })
            }
            Transfer::Chunk(id, data) => {
                let Some(slot) = self.inflight.get_mut(&id) else {
                    // The rest of a download that already failed.
                    return Ok(None);
                };
                if let Some((header, spool)) = &mut slot.delta {
                    slot.received += data.len() as u64;
                    slot.chunks += 1;
                    if slot.received > header.delta_size {
                        return Err(ClientError::Protocol(format!(
                            "{}: the daemon sent more than the announced {} bytes of delta",
                            header.path, header.delta_size
                        )));
                    }
                    let last = slot.chunks == header.chunks;
                    if last && slot.received != header.delta_size {
                        return Err(ClientError::Protocol(format!(
                            "{}: received {} of {} bytes of delta",
                            header.path, slot.received, header.delta_size
                        )));
                    }
                    if let Err(source) = spool.write_all(&data) {
                        let e = ClientError::Io {
                            what: "keep the delta of",
                            path: header.path.clone(),
                            source,
                        };
                        return Ok(self.fail(id, e));
                    }
                    return Ok(if last { self.complete(id) } else { None });
                }
                let Some(header) = &slot.header else {
                    return Err(ClientError::Protocol(format!(
                        "{}: content arrived before its header",
                        slot.pending.path()
                    )));
                };
                slot.received += data.len() as u64;
                slot.chunks += 1;
                if slot.offset + slot.received > header.size {
                    return Err(ClientError::Protocol(format!(
                        "{}: the daemon sent more than the announced {} bytes",
                        header.path, header.size
                    )));
                }
                let last = slot.chunks == header.chunks;
                if last && slot.offset + slot.received != header.size {
                    return Err(ClientError::Protocol(format!(
                        "{}: received {} of {} bytes",
                        header.path,
                        slot.offset + slot.received,
                        header.size
                    )));
                }
                if slot.method == Method::Whole {
                    // One chunk, checked above to be all of it.
                    self.progress.bytes(data.len() as u64);
                    let Some(Slot {
                        index,
                        pending,
                        header: Some(header),
                        ..
                    }) = self.take(id).map(|slot| *slot)
                    else {
                        return Ok(None);
                    };
                    return Ok(Some(Finished::Whole(index, pending, header, data)));
                }
                self.progress.bytes(data.len() as u64);
                match &slot.writing {
                    Some(writing) => {
                        if writing.chunks.send(data).await.is_err() {
                            // The thread stopped at a write error: settle reports it.
                            let e = settle(slot).await.err().unwrap_or_else(|| {
                                ClientError::Protocol("the write-behind thread ended".into())
                            });
                            return Ok(self.fail(id, e));
                        }
                    }
                    None => {
                        if let Err(e) = slot.pending.write(&data) {
                            return Ok(self.fail(id, e));
                        }
                    }
                }
                if !last {
                    return Ok(None);
                }
                if let Err(e) = settle(slot).await {
                    return Ok(self.fail(id, e));
                }
                Ok(self.complete(id))
            }
            Transfer::Windows(id, reply) => {
                let Some(slot) = self.inflight.get(&id) else {
                    return Ok(None);
                };
                if !slot.asked_windows || reply.path != slot.pending.path() {
                    return Err(ClientError::Protocol(format!(
                        "{}: window hashes that do not match the request",
                        reply.path
                    )));
                }
                let Some(slot) = self.take(id) else {
                    return Ok(None);
                };
                if reply.sha256 != slot.pending.sha256() {
                    // E's file moved on: a newer change for it is coming.
                    let stale = ClientError::Server {
                        code: ErrorCode::Stale,
                        message: format!("{} changed on E during the transfer", reply.path),
                    };
                    return Ok(Some(Finished::Failed(slot.index, stale)));
                }
                // Reads R's windows that differ: off the runtime's threads. The GET_DELTA it
                // plans goes out next, in this request's place.
                let mut pending = slot.pending;
                let pending = tokio::task::spawn_blocking(move || {
                    pending.plan_delta(reply);
                    pending
                })
                .await
                .map_err(|e| ClientError::Protocol(format!("planning a delta failed: {e}")))?;
                self.queue.push_front((slot.index, pending));
                Ok(None)
            }
            Transfer::Failed(id, e) => {
                let unknown = matches!(
                    &e,
                    ClientError::Server {
                        code: ErrorCode::UnknownOperation,
                        ..
                    }
                );
                if unknown && self.inflight.get(&id).is_some_and(|s| s.asked_windows) {
                    // An older daemon: no more GET_WINDOWS on this connection.
                    conn.note_lacks_windows();
                }
                if let Some(batch) = self.take_batch(id) {
                    if unknown {
                        // A daemon that advertised GET_FILES and does not know it: one by one.
                        conn.note_lacks_get_files();
                        for item in batch.items.into_iter().rev() {
                            self.queue.push_front(item);
                        }
                        return Ok(None);
                    }
                    // The whole request refused (an unknown directory, the daemon's index
                    // failing): each of its files is, for the same reason.
                    for (index, _) in batch.items {
                        self.ready
                            .push_back(Finished::Failed(index, same_error(&e)));
                    }
                    return Ok(self.ready.pop_front());
                }
                Ok(self.failed(id, e))
            }
            Transfer::Answered => Ok(None),
        }
    }

    /// Downloads in flight: single ones and the files of GET_FILES.
    fn requests(&self) -> usize {
        self.inflight.len() + self.batched
    }

    /// True when a request of `cost` bytes for `expected` bytes of content does not fit in the
    /// window, and something is in flight (the first request always goes).
    fn is_full(&self, cost: usize, expected: u64) -> bool {
        self.is_full_with(1, cost, expected)
    }

    /// [`Pipeline::is_full`] for a request of `files` downloads.
    fn is_full_with(&self, files: usize, cost: usize, expected: u64) -> bool {
        let w = self.window;
        let full = self.requests() + files > w.requests
            || self.request_bytes + cost > w.request_bytes
            || self.content_bytes + expected > w.content_bytes;
        full && self.requests() > 0
    }

    /// Sends one GET_FILES for the small whole files at the front of the queue, as many as
    /// `limit`, one frame's worth of content and the window allow. False when the window had
    /// no room for even one.
    async fn fill_batch(
        &mut self,
        conn: &mut Connection,
        limit: usize,
    ) -> Result<bool, ClientError> {
        let mut batch = Batch {
            items: Vec::new(),
            reply: None,
            cost: 64 + self.dir.len(),
            expected: 0,
        };
        let mut wanted = Vec::new();
        // Whether anything left the queue: false means the window is full.
        let mut took = false;
        while batch.items.len() < limit {
            let Some((index, pending)) = self.queue.front() else {
                break;
            };
            if !batchable(pending) || self.alone.contains(index) || pending.resume_offset() > 0 {
                break;
            }
            let size = pending.size();
            // JSON escapes a byte of a path in at most six.
            let cost = 32 + 6 * pending.path().len() + pending.sha256().len();
            let text = batch.cost + cost;
            if batch.expected + size > BATCH_CONTENT
                || (!batch.items.is_empty() && text > MAX_BATCH_TEXT)
                || self.is_full_with(batch.items.len() + 1, text, batch.expected + size)
            {
                break;
            }
            let Some((index, pending)) = self.queue.pop_front() else {
                break;
            };
            took = true;
            // Checked at plan time alone; now again, with what the downloads before it take.
            if let Err(e) = pending.check_room(self.claimed + batch.expected) {
                self.ready.push_back(Finished::Failed(index, e));
                continue;
            }
            wanted.push(WantedFile {
                path: pending.path().to_string(),
                sha256: pending.sha256().to_string(),
            });
            batch.cost += cost;
            batch.expected += size;
            batch.items.push((index, pending));
        }
        if batch.items.is_empty() {
            return Ok(took);
        }
        let id = conn.request_files(self.dir, wanted).await?;
        self.batched += batch.items.len();
        self.request_bytes += batch.cost;
        self.content_bytes += batch.expected;
        self.claimed += batch.expected;
        self.batches.insert(id, batch);
        Ok(true)
    }

    /// Takes a GET_FILES's reply: it must say, for each file asked for, that it is sent at the
    /// planned size or why not.
    fn files_reply(&mut self, id: u64, reply: FilesReply) -> Result<Option<Finished>, ClientError> {
        let Some(batch) = self.batches.get_mut(&id) else {
            tracing::debug!(id, "skipped the reply of a GET_FILES no longer wanted");
            return Ok(None);
        };
        let asked = batch.items.len();
        if batch.reply.is_some() || reply.sizes.len() != asked || reply.dir != self.dir {
            return Err(ClientError::Protocol(format!(
                "asked for {asked} files of {} in a GET_FILES, the daemon answers about {} of {}",
                self.dir,
                reply.sizes.len(),
                zync_cli::visible::line(&reply.dir)
            )));
        }
        let mut refused = vec![false; asked];
        for r in &reply.refused {
            match refused.get_mut(r.at as usize) {
                Some(seen) if !*seen => *seen = true,
                _ => {
                    return Err(ClientError::Protocol(format!(
                        "a GET_FILES reply refuses file {} of the {asked} asked for, or twice",
                        r.at
                    )))
                }
            }
        }
        for (i, (_, pending)) in batch.items.iter().enumerate() {
            let size = reply.sizes[i];
            if refused[i] && size != 0 {
                return Err(ClientError::Protocol(format!(
                    "{}: a GET_FILES reply refuses it and gives it {size} bytes",
                    pending.path()
                )));
            }
            if !refused[i] && size != pending.size() {
                return Err(ClientError::Protocol(format!(
                    "{}: the daemon announced {size} bytes of the version its changes listed as {} bytes (sha256 {})",
                    pending.path(),
                    pending.size(),
                    pending.sha256()
                )));
            }
        }
        batch.reply = Some(reply);
        Ok(None)
    }

    /// Takes a GET_FILES's frame of contents: each file sent is handed on whole
    /// ([`Finished::Whole`]), each refused one fails with its reason (or goes alone, when too
    /// large for the daemon's reply).
    fn files_content(&mut self, id: u64, data: Bytes) -> Result<Option<Finished>, ClientError> {
        let Some(batch) = self.batches.get(&id) else {
            return Ok(None);
        };
        let Some(reply) = &batch.reply else {
            return Err(ClientError::Protocol(
                "the contents of a GET_FILES arrived before its reply".into(),
            ));
        };
        let announced: u64 = reply.sizes.iter().sum();
        if data.len() as u64 != announced {
            return Err(ClientError::Protocol(format!(
                "a GET_FILES reply announced {announced} bytes of content, its frame holds {}",
                data.len()
            )));
        }
        let Some(Batch {
            items,
            reply: Some(reply),
            ..
        }) = self.take_batch(id)
        else {
            return Ok(None);
        };
        let mut refusals: HashMap<u32, zync_proto::RefusedFile> =
            reply.refused.into_iter().map(|r| (r.at, r)).collect();
        let mut at = 0usize;
        for (i, ((index, pending), size)) in items.into_iter().zip(reply.sizes).enumerate() {
            if let Some(refusal) = u32::try_from(i).ok().and_then(|i| refusals.remove(&i)) {
                if refusal.code == ErrorCode::TooLarge {
                    self.alone.insert(index);
                    self.queue.push_back((index, pending));
                    continue;
                }
                let e = ClientError::Server {
                    code: refusal.code,
                    message: refusal.message,
                };
                self.ready.push_back(Finished::Failed(index, e));
                continue;
            }
            // The sizes add up to the frame's length (checked above).
            let len = size as usize;
            let content = data.slice(at..at + len);
            at += len;
            self.progress.bytes(size);
            let header = FileHeader {
                dir: self.dir.to_string(),
                path: pending.path().to_string(),
                size,
                offset: 0,
                sha256: pending.sha256().to_string(),
                // What a written file gets is its change's (`Pending::seal`).
                mtime_ns: 0,
                mode: 0,
                chunks: 1,
            };
            self.ready
                .push_back(Finished::Whole(index, pending, header, content));
        }
        Ok(self.ready.pop_front())
    }

    /// Takes a GET_FILES out of the window.
    fn take_batch(&mut self, id: u64) -> Option<Batch> {
        let batch = self.batches.remove(&id)?;
        self.batched -= batch.items.len();
        self.request_bytes -= batch.cost;
        self.content_bytes -= batch.expected;
        self.claimed -= batch.expected;
        Some(batch)
    }

    /// A download the daemon refused, if it is still in flight.
    fn failed(&mut self, id: u64, e: ClientError) -> Option<Finished> {
        if self.inflight.contains_key(&id) {
            self.fail(id, e)
        } else {
            None
        }
    }

    fn take(&mut self, id: u64) -> Option<Box<Slot>> {
        let slot = self.inflight.remove(&id)?;
        self.request_bytes -= slot.cost;
        self.content_bytes -= slot.expected;
        if slot.claimed {
            self.claimed -= slot.expected;
        }
        self.claimed -= slot.spool;
        Some(slot)
    }

    fn complete(&mut self, id: u64) -> Option<Finished> {
        let mut slot = self.take(id)?;
        if let Some((header, spool)) = slot.delta.take() {
            // Counted once the file is rebuilt: a delta that fails is downloaded whole.
            return Some(Finished::Delta(slot.index, slot.pending, header, spool));
        }
        let header = slot.header.take()?;
        Some(Finished::Done(slot.index, slot.pending, header))
    }

    /// Ends a download with `error`. A refused delta (an older daemon, a signature it would
    /// not take) is asked for again as the whole file instead; a refused GET_WINDOWS, as a
    /// delta against the whole older version's signature.
    fn fail(&mut self, id: u64, error: ClientError) -> Option<Finished> {
        let mut slot = self.take(id)?;
        let retry = (slot.asked_delta || slot.asked_windows)
            && !matches!(
                &error,
                ClientError::Server {
                    code: ErrorCode::Stale | ErrorCode::NotFound | ErrorCode::NotAFile,
                    ..
                }
            );
        if retry && slot.asked_windows {
            // An older daemon (which will refuse every GET_WINDOWS), or a file too big to list
            // its windows: the first step is skipped.
            tracing::debug!(
                path = slot.pending.path(),
                "window hashes refused ({error}); signing the whole file"
            );
            slot.pending.sign_later();
            self.queue.push_front((slot.index, slot.pending));
            return None;
        }
        if retry {
            tracing::debug!(
                path = slot.pending.path(),
                "delta refused ({error}); downloading whole"
            );
            self.queue.push_front((slot.index, slot.pending));
            return None;
        }
        Some(Finished::Failed(slot.index, error))
    }

    /// Downloads that finished (or failed) and were not reported yet: what arrived whole with
    /// others in a GET_FILES before the connection was lost is still written.
    pub fn take_ready(&mut self) -> Vec<Finished> {
        self.ready.drain(..).collect()
    }

    /// The downloads cut off by a lost connection, to keep what arrived of them as partials;
    /// the queued ones are dropped and the pipeline is empty after.
    pub async fn abandon(&mut self) -> Vec<Box<Pending>> {
        self.queue.clear();
        self.ready.clear();
        self.batched = 0;
        self.request_bytes = 0;
        self.content_bytes = 0;
        self.claimed = 0;
        let mut cut = Vec::with_capacity(self.inflight.len());
        // Nothing of a GET_FILES is written before its frame came whole.
        for (_, batch) in std::mem::take(&mut self.batches) {
            cut.extend(batch.items.into_iter().map(|(_, pending)| pending));
        }
        for (_, mut slot) in std::mem::take(&mut self.inflight) {
            if let Err(e) = settle(&mut slot).await {
                tracing::debug!(path = slot.pending.path(), "{e}");
            }
            cut.push(slot.pending);
        }
        cut
    }
}

/// The most request text one GET_FILES is made of (more files go in the next): a quarter of
/// what either side takes in one message, whatever the paths' lengths and escapes.
const MAX_BATCH_TEXT: usize = zync_proto::MAX_TEXT_MESSAGE / 4;

/// The most content one GET_FILES asks for (the daemon would send up to [`zync_proto::MAX_CHUNK`]).
/// Each small file is handed to its writer as a slice of the reply's frame, so a frame stays in
/// memory until the last of its files is written: with 1 MiB frames the client held 2-3 MiB
/// more at its peak (24.4 against 21.9 MiB for 10,000 small files) and took no less time.
/// Every file of a GET_FILES is smaller than this ([`batchable`]), so each fits.
const BATCH_CONTENT: u64 = 2 * WRITE_BEHIND_MIN;

/// A GET_FILES in flight: its files in the request's order, and its reply once it came.
struct Batch {
    items: Vec<(usize, Box<Pending>)>,
    reply: Option<FilesReply>,
    /// Bytes of request text, and of content expected, it holds of the window.
    cost: usize,
    expected: u64,
}

/// True when `pending` can be asked for in a GET_FILES: its whole content (no delta), small
/// enough to be written whole ([`Method::Whole`]). Partials are resumed by GET_FILE.
fn batchable(pending: &Pending) -> bool {
    pending.asks_whole() && pending.size() < WRITE_BEHIND_MIN
}

/// A copy of a daemon's refusal of a whole GET_FILES, for each of its files.
fn same_error(e: &ClientError) -> ClientError {
    match e {
        ClientError::Server { code, message } => ClientError::Server {
            code: *code,
            message: message.clone(),
        },
        other => ClientError::Protocol(other.to_string()),
    }
}

/// Waits for the slot's chunks being written off the reactor and gives its file back.
async fn settle(slot: &mut Slot) -> Result<(), ClientError> {
    let Some(Writing { chunks, done }) = slot.writing.take() else {
        return Ok(());
    };
    drop(chunks);
    match done.await {
        Ok((file, written)) => {
            slot.pending.put_file(file);
            Ok(written?)
        }
        Err(e) => Err(ClientError::Io {
            what: "write",
            path: slot.pending.path().to_string(),
            source: std::io::Error::other(e.to_string()),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;
    use std::sync::Arc;
    use std::time::Duration;

    use futures_util::{SinkExt, StreamExt};
    use serde_json::{json, Value};
    use tokio_tungstenite::tungstenite::Message;
    use zync_db::Synced;
    use zync_fs::{RelPath, Stat};
    use zync_proto::{Kind, Nonce, Role};

    use crate::connection::Credentials;

    const TOKEN: &str = "the token both ends hold";

    /// What a fake daemon answers a request (after the handshake) with: the reply's fields
    /// (the envelope's `id` is added; `status` and `operation` too, unless given), and the
    /// payloads of the binary frames that follow it.
    type Answer = Box<dyn Fn(&str, &Value) -> (Value, Vec<Vec<u8>>) + Send + Sync>;

    /// Plays the daemon for one connection: proves itself with [`TOKEN`], advertises GET_FILES
    /// when `get_files`, then answers each request as `answer` says.
    async fn daemon(listener: tokio::net::TcpListener, get_files: bool, answer: Answer) {
        let Ok((stream, _)) = listener.accept().await else {
            return;
        };
        let mut ws = tokio_tungstenite::accept_async(stream)
            .await
            .expect("upgrade");
        while let Some(Ok(message)) = ws.next().await {
            let Message::Text(text) = message else {
                continue;
            };
            let request: Value = serde_json::from_str(&text).expect("a JSON request");
            let op = request["operation"]
                .as_str()
                .unwrap_or_default()
                .to_string();
            let (mut reply, frames) = match op.as_str() {
                "HELLO" => {
                    let nonce = |v: &Value| Nonce::from_hex(v.as_str().unwrap_or_default());
                    let client = nonce(&request["client_nonce"]).expect("a nonce");
                    let ours = Nonce::generate().expect("random");
                    let id = request["client_id"].as_str().unwrap_or_default();
                    let proof = zync_proto::proof(TOKEN, Role::Daemon, &client, &ours, id);
                    let hello = json!({"protocol_version": zync_proto::PROTOCOL_VERSION,
                           "daemon_nonce": ours.to_hex(), "daemon_proof": proof,
                           "server_version": "test"});
                    (hello, Vec::new())
                }
                "AUTH" => {
                    let mut welcome = json!({"protocol_version": zync_proto::PROTOCOL_VERSION,
                                 "index_id": "test", "dirs": ["code"], "scanning": false,
                                 "server_version": "test"});
                    if get_files {
                        welcome["get_files"] = json!(zync_proto::MAX_GET_FILES);
                    }
                    (welcome, Vec::new())
                }
                _ => answer(&op, &request),
            };
            if reply.get("status").is_none() {
                reply["status"] = json!("ok");
                reply["operation"] = json!(op);
            }
            reply["id"] = request["id"].clone();
            if ws.send(Message::text(reply.to_string())).await.is_err() {
                return;
            }
            let id = request["id"].as_u64().unwrap_or_default();
            for frame in &frames {
                let chunk = zync_proto::encode_chunk(id, frame);
                if ws.send(Message::binary(chunk)).await.is_err() {
                    return;
                }
            }
        }
    }

    /// How one download from [`daemon`] ended, and the root it went to.
    struct Fetched {
        _tmp: tempfile::TempDir,
        root: Arc<Path>,
        result: Result<&'static str, ClientError>,
    }

    /// A daemon answering every request with `header` and `frames`, a connection to it, and a
    /// pipeline holding the download of `f`, planned as `planned` (its content); as a delta
    /// against `older` (R's version at the path) when given.
    struct Fetching {
        tmp: tempfile::TempDir,
        root: Arc<Path>,
        conn: Connection,
        pipeline: Pipeline<'static>,
        serving: tokio::task::JoinHandle<()>,
    }

    impl Fetching {
        async fn start(
            planned: &[u8],
            older: Option<&[u8]>,
            header: Value,
            frames: Vec<Vec<u8>>,
        ) -> Fetching {
            let tmp = tempfile::tempdir().expect("tempdir");
            let root: Arc<Path> = Arc::from(tmp.path().join("root"));
            std::fs::create_dir(&root).expect("mkdir");
            if let Some(older) = older {
                std::fs::write(root.join("f"), older).expect("write");
            }
            let answer: Answer = Box::new(move |_, _| (header.clone(), frames.clone()));
            let (conn, serving) = connect(false, answer).await;
            let mut pending = self::planned(&root, "f", planned);
            if older.is_some() {
                pending.want_delta();
            }
            let mut pipeline = Pipeline::new("code", Window::for_daemon(None), Progress::hidden());
            pipeline.push(0, pending);
            Fetching {
                tmp,
                root,
                conn,
                pipeline,
                serving,
            }
        }
    }

    /// Downloads `f`, planned as `planned` (its content), from a daemon answering with
    /// `header` and `frames`; as a delta against `older` (R's version at the path) when given.
    async fn fetch(
        planned: &[u8],
        older: Option<&[u8]>,
        header: Value,
        frames: Vec<Vec<u8>>,
    ) -> Fetched {
        let Fetching {
            tmp,
            root,
            mut conn,
            mut pipeline,
            serving,
        } = Fetching::start(planned, older, header, frames).await;
        let result = async {
            pipeline.fill(&mut conn).await?;
            loop {
                match pipeline.next(&mut conn).await? {
                    None => continue,
                    Some(Finished::Done(..)) => return Ok("done"),
                    Some(Finished::Whole(..)) => return Ok("whole"),
                    Some(Finished::Delta(..)) => return Ok("delta"),
                    Some(Finished::Failed(_, e)) => return Err(e),
                }
            }
        }
        .await;
        drop(conn);
        serving.abort();
        Fetched {
            _tmp: tmp,
            root,
            result,
        }
    }

    /// A delta being kept counts in the room that downloads asked for later must leave, from
    /// its header until its download ends, beside the room of the file it rebuilds.
    #[tokio::test]
    async fn a_delta_being_kept_counts_in_the_room_claimed_until_it_ends() {
        let content = b"the new version of the file";
        let size = content.len() as u64;
        let delta = max_delta(size);
        let header = delta_header(content, delta, 1);
        let frames = vec![vec![0; delta as usize]];
        let mut f = Fetching::start(content, Some(b"the old one"), header, frames).await;
        f.pipeline.fill(&mut f.conn).await.expect("fill");
        assert_eq!(f.pipeline.claimed, size, "the file's own room");
        let header = f.pipeline.next(&mut f.conn).await.expect("the header");
        assert!(header.is_none(), "the delta ended at its header");
        assert_eq!(f.pipeline.claimed, size + delta, "the delta's room besides");
        let done = f.pipeline.next(&mut f.conn).await.expect("the frame");
        assert!(
            matches!(done, Some(Finished::Delta(..))),
            "not a whole delta"
        );
        assert_eq!(
            f.pipeline.claimed, 0,
            "room claimed after the download ended"
        );
        f.serving.abort();
    }

    /// A GET_DELTA header for `f`: a delta of `delta_size` bytes in `chunks` frames, rebuilding
    /// `content`.
    fn delta_header(content: &[u8], delta_size: u64, chunks: u64) -> Value {
        json!({"dir": "code", "path": "f", "size": content.len(),
               "sha256": zync_fs::hash_bytes(content), "mtime_ns": 1_000_000_000_i64,
               "mode": 420, "delta_size": delta_size, "chunks": chunks})
    }

    /// A delta whose last frame brings fewer bytes than the header's `delta_size` is a protocol
    /// error, as a file's is: not a delta handed on to be rebuilt.
    #[tokio::test]
    async fn a_delta_whose_last_frame_falls_short_is_a_protocol_error() {
        let content = b"the new version of the file";
        let header = delta_header(content, 100, 1);
        let fetched = fetch(content, Some(b"the old one"), header, vec![vec![7; 60]]).await;
        match fetched.result {
            Err(ClientError::Protocol(message)) => {
                assert!(message.contains("60 of 100"), "{message}")
            }
            Err(e) => panic!("expected a protocol error, got {e:?}"),
            Ok(how) => panic!("a delta 40 bytes short was taken ({how})"),
        }
    }

    /// A delta bigger than any delta of the file can be (the file itself, plus the commands'
    /// few bytes) is refused at its header: nothing is spooled, however much follows.
    #[tokio::test]
    async fn a_delta_bigger_than_its_file_can_need_is_refused_at_its_header() {
        let content = b"ten bytes!";
        let huge = 64u64 << 20;
        let chunks = huge.div_ceil(zync_proto::MAX_CHUNK as u64);
        let header = delta_header(content, huge, chunks);
        let frames = vec![vec![0; zync_proto::MAX_CHUNK]; 4];
        let fetched = fetch(content, Some(b"older"), header, frames).await;
        match fetched.result {
            Err(ClientError::Protocol(message)) => {
                assert!(message.contains(&huge.to_string()), "{message}")
            }
            Err(e) => panic!("expected a protocol error, got {e:?}"),
            Ok(how) => panic!("a delta of {huge} bytes for 10 was taken ({how})"),
        }
        // A delta as big as a real one for this file gets through (to its rebuild, which
        // checks it).
        let header = delta_header(content, max_delta(10), 1);
        let frames = vec![vec![0; max_delta(10) as usize]];
        let fetched = fetch(content, Some(b"older"), header, frames).await;
        assert!(
            matches!(fetched.result, Ok("delta")),
            "{:?}",
            fetched.result
        );
    }

    /// A GET_FILE header with the planned sha256 but another size is a protocol error before
    /// anything is written; one with another sha256 (E's file moved on) is `stale`, and
    /// nothing is written either.
    #[tokio::test]
    async fn a_file_header_must_be_the_planned_version() {
        let content = b"ten bytes!";
        let file_header = |size: u64, sha256: String| {
            json!({"dir": "code", "path": "f", "size": size, "offset": 0, "sha256": sha256,
                   "mtime_ns": 1_000_000_000_i64, "mode": 420,
                   "chunks": size.div_ceil(zync_proto::MAX_CHUNK as u64)})
        };
        let frames = vec![vec![b'x'; zync_proto::MAX_CHUNK]; 4];
        let huge = 100u64 << 20;
        let header = file_header(huge, zync_fs::hash_bytes(content));
        let fetched = fetch(content, None, header, frames.clone()).await;
        match &fetched.result {
            Err(ClientError::Protocol(message)) => assert!(
                message.contains(&format!("{huge} bytes")) && message.contains("10 bytes"),
                "{message}"
            ),
            other => panic!("expected a protocol error, got {other:?}"),
        }
        assert!(
            names(&fetched.root).is_empty(),
            "{:?}",
            names(&fetched.root)
        );

        let header = file_header(huge, zync_fs::hash_bytes(b"another version"));
        let fetched = fetch(content, None, header, frames).await;
        assert!(
            matches!(
                &fetched.result,
                Err(ClientError::Server {
                    code: ErrorCode::Stale,
                    ..
                })
            ),
            "{:?}",
            fetched.result
        );
        assert!(
            names(&fetched.root).is_empty(),
            "{:?}",
            names(&fetched.root)
        );
    }

    /// A connection to a [`daemon`] that advertises GET_FILES when `get_files`, answering as
    /// `answer` says.
    async fn connect(get_files: bool, answer: Answer) -> (Connection, tokio::task::JoinHandle<()>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let url = format!("ws://{}", listener.local_addr().expect("address"));
        let serving = tokio::spawn(daemon(listener, get_files, answer));
        let credentials = Credentials {
            token: Some(TOKEN.into()),
            source: "the test".into(),
        };
        let stall = Duration::from_secs(10);
        let conn = Connection::open(&url, &credentials, "fetch-test", None, stall)
            .await
            .expect("handshake");
        (conn, serving)
    }

    /// The download of `content` to `name` in `root`, where R has nothing.
    fn planned(root: &Arc<Path>, name: &str, content: &[u8]) -> Box<Pending> {
        let record = Synced {
            kind: Kind::File,
            size: content.len() as u64,
            mtime_ns: 1_000_000_000,
            mode: 0o644,
            sha256: Some(zync_fs::hash_bytes(content)),
            target: None,
        };
        let rel = RelPath::parse(name).expect("path");
        Box::new(Pending::new(root, rel, Stat::Missing, false, record))
    }

    /// A window whose content is full of a GET_FILES in flight while files of an earlier one
    /// wait to be reported: `fill` returns (it once asked for the next batch forever, finding
    /// no room for it and files ready). Run on a thread of its own, so that a `fill` that never
    /// returns fails the test instead of hanging it.
    #[test]
    fn fill_returns_when_the_window_is_full_and_files_are_ready() {
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("a runtime");
            runtime.block_on(async {
                let tmp = tempfile::tempdir().expect("tempdir");
                let root: Arc<Path> = Arc::from(tmp.path());
                let answer: Answer = Box::new(|_, request| panic!("unexpected {request}"));
                let (mut conn, _serving) = connect(true, answer).await;
                let window = Window {
                    requests: 4096,
                    request_bytes: 1 << 20,
                    content_bytes: 100 << 10,
                };
                let mut pipeline = Pipeline::new("code", window, Progress::hidden());
                let in_flight = Batch {
                    items: vec![(1, planned(&root, "f1", &[b'x'; 80 << 10]))],
                    reply: None,
                    cost: 100,
                    expected: 80 << 10,
                };
                pipeline.batches.insert(999, in_flight);
                (pipeline.batched, pipeline.request_bytes) = (1, 100);
                (pipeline.content_bytes, pipeline.claimed) = (80 << 10, 80 << 10);
                let done = ClientError::Protocol("reported later".into());
                pipeline.ready.push_back(Finished::Failed(2, done));
                pipeline.push(0, planned(&root, "f0", &[b'y'; 25 << 10]));
                let filled = pipeline.fill(&mut conn).await;
                let _ = tx.send((filled.is_ok(), pipeline.queued()));
            });
        });
        match rx.recv_timeout(Duration::from_secs(20)) {
            Ok(ended) => assert_eq!(ended, (true, 1), "the file that does not fit waits"),
            Err(_) => panic!("fill never returned"),
        }
    }

    /// How each of several files fetched at once from a daemon that knows GET_FILES ended, by
    /// the caller's index: "whole <content>" (handed on whole, not written yet), "done", or the
    /// daemon's code; or the error that ended the connection.
    async fn fetch_files(contents: &[&[u8]], answer: Answer) -> Result<Vec<String>, ClientError> {
        let names: Vec<String> = (0..contents.len()).map(|i| format!("f{i}")).collect();
        fetch_named(&names, contents, answer).await
    }

    /// [`fetch_files`] of files named `names`.
    async fn fetch_named(
        names: &[String],
        contents: &[&[u8]],
        answer: Answer,
    ) -> Result<Vec<String>, ClientError> {
        let tmp = tempfile::tempdir().expect("tempdir");
        let root: Arc<Path> = Arc::from(tmp.path());
        let (mut conn, serving) = connect(true, answer).await;
        let mut pipeline = Pipeline::new("code", Window::for_daemon(None), Progress::hidden());
        for (i, (name, content)) in names.iter().zip(contents).enumerate() {
            pipeline.push(i, planned(&root, name, content));
        }
        let mut ended = vec![String::new(); contents.len()];
        let result = async {
            while !pipeline.is_empty() {
                pipeline.fill(&mut conn).await?;
                let (i, how) = match pipeline.next(&mut conn).await? {
                    None => continue,
                    Some(Finished::Whole(i, _, _, data)) => {
                        (i, format!("whole {}", String::from_utf8_lossy(&data)))
                    }
                    Some(Finished::Done(i, ..)) => (i, "done".to_string()),
                    Some(Finished::Delta(i, ..)) => (i, "delta".to_string()),
                    Some(Finished::Failed(i, e)) => (i, format!("{e:?}")),
                };
                ended[i] = how;
            }
            Ok(ended)
        }
        .await;
        drop(conn);
        serving.abort();
        result
    }

    /// A GET_FILES reply for `request`: each file sent as `sent` says (its content) or refused
    /// with `code`; the frame holds the contents of those sent.
    fn files_reply(request: &Value, sent: &[Result<&[u8], &str>]) -> (Value, Vec<Vec<u8>>) {
        let asked = request["files"].as_array().map_or(0, Vec::len);
        assert_eq!(asked, sent.len(), "{request}");
        let mut frame = Vec::new();
        let (mut sizes, mut refused) = (Vec::new(), Vec::new());
        for (at, file) in sent.iter().enumerate() {
            match file {
                Ok(content) => {
                    sizes.push(content.len());
                    frame.extend_from_slice(content);
                }
                Err(code) => {
                    sizes.push(0);
                    refused.push(json!({"at": at, "code": code, "message": "refused"}));
                }
            }
        }
        let reply = json!({"dir": "code", "sizes": sizes, "refused": refused});
        (reply, vec![frame])
    }

    /// Small files go to a daemon that knows GET_FILES in one request, each with the sha256 of
    /// the version wanted; each comes back whole, or fails alone with the daemon's reason.
    #[tokio::test]
    async fn a_get_files_reply_hands_on_each_file_whole_and_each_refusal_alone() {
        let contents: [&[u8]; 3] = [b"alpha", b"bravo", b""];
        let answer: Answer = Box::new(move |op, request| {
            assert_eq!(op, "GET_FILES", "{request}");
            for (i, content) in contents.iter().enumerate() {
                assert_eq!(request["files"][i]["path"], format!("f{i}"));
                assert_eq!(
                    request["files"][i]["sha256"],
                    zync_fs::hash_bytes(content),
                    "{request}"
                );
            }
            files_reply(request, &[Ok(b"alpha"), Err("stale"), Ok(b"")])
        });
        let ended = fetch_files(&contents, answer)
            .await
            .expect("no protocol error");
        assert_eq!(ended[0], "whole alpha");
        assert!(ended[1].contains("Stale"), "{ended:?}");
        assert_eq!(ended[2], "whole ");
    }

    /// A GET_FILES reply that does not say, for each file asked for, either its planned size
    /// or why not, or whose frame is not what its sizes add up to, is a protocol error: no file
    /// of it is handed on.
    #[tokio::test]
    async fn a_get_files_reply_that_does_not_add_up_is_a_protocol_error() {
        type Make = fn(&Value) -> (Value, Vec<Vec<u8>>);
        let cases: [(&str, &str, Make); 6] = [
            ("one size too few", "answers about 1 of code", |_| {
                (
                    json!({"dir": "code", "sizes": [5]}),
                    vec![b"alpha".to_vec()],
                )
            }),
            ("a size other than planned", "announced 6 bytes", |_| {
                (
                    json!({"dir": "code", "sizes": [5, 6]}),
                    vec![b"alphabravo!".to_vec()],
                )
            }),
            (
                "a refusal past the files",
                "refuses file 2 of the 2",
                |_| {
                    let refused = json!([{"at": 2, "code": "stale", "message": "m"}]);
                    let reply = json!({"dir": "code", "sizes": [5, 5], "refused": refused});
                    (reply, vec![b"alphabravo".to_vec()])
                },
            ),
            (
                "the same file refused twice",
                "refuses file 1 of the 2",
                |_| {
                    let once = json!({"at": 1, "code": "stale", "message": "m"});
                    let reply = json!({"dir": "code", "sizes": [5, 0], "refused": [once, once]});
                    (reply, vec![b"alpha".to_vec()])
                },
            ),
            (
                "a refused file with a size",
                "refuses it and gives it 5 bytes",
                |_| {
                    let refused = json!([{"at": 1, "code": "stale", "message": "m"}]);
                    let reply = json!({"dir": "code", "sizes": [5, 5], "refused": refused});
                    (reply, vec![b"alphabravo".to_vec()])
                },
            ),
            (
                "a frame shorter than the sizes",
                "10 bytes of content, its frame holds 9",
                |_| {
                    (
                        json!({"dir": "code", "sizes": [5, 5]}),
                        vec![b"alphabrav".to_vec()],
                    )
                },
            ),
        ];
        for (case, expected, make) in cases {
            let answer: Answer = Box::new(move |_, request| make(request));
            match fetch_files(&[b"alpha", b"bravo"], answer).await {
                Err(ClientError::Protocol(message)) => {
                    assert!(message.contains(expected), "{case}: {message}")
                }
                other => panic!("{case}: expected a protocol error, got {other:?}"),
            }
        }
    }

    /// However long the paths and their escapes, a GET_FILES stays well within what the daemon
    /// takes in one message: the files go in more requests instead.
    #[tokio::test]
    async fn long_paths_are_asked_for_in_more_get_files_each_within_one_message() {
        let component = "\u{1}".repeat(250);
        let names: Vec<String> = (0..zync_proto::MAX_GET_FILES)
            .map(|i| format!("{}/f{i}", vec![component.as_str(); 15].join("/")))
            .collect();
        let contents = vec![&b"x"[..]; names.len()];
        let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
        let lengths = Arc::clone(&seen);
        let answer: Answer = Box::new(move |_, request| {
            lengths
                .lock()
                .expect("lock")
                .push(request.to_string().len());
            let asked = request["files"].as_array().map_or(0, Vec::len);
            files_reply(request, &vec![Ok(&b"x"[..]); asked])
        });
        let ended = fetch_named(&names, &contents, answer)
            .await
            .expect("no error");
        assert!(ended.iter().all(|how| how == "whole x"), "{ended:?}");
        let lengths = seen.lock().expect("lock").clone();
        assert!(
            lengths.len() >= 6 && lengths.iter().all(|&n| n <= MAX_BATCH_TEXT),
            "requests of {lengths:?} bytes"
        );
    }

    /// Small files worth several frames are asked for in GET_FILES of at most
    /// [`BATCH_CONTENT`] bytes each, the largest files of a GET_FILES among them: a reply's
    /// frame is held until its last file is written, so its size is the client's memory.
    #[tokio::test]
    async fn a_get_files_asks_for_at_most_batch_content_bytes() {
        let big = vec![b'b'; usize::try_from(WRITE_BEHIND_MIN).expect("fits") - 1];
        let small = vec![b's'; 10_000];
        let contents: Vec<&[u8]> = (0..40)
            .map(|i| if i % 4 == 0 { &big[..] } else { &small[..] })
            .collect();
        let sizes = Arc::new(std::sync::Mutex::new(Vec::new()));
        let asked = Arc::clone(&sizes);
        let by_name: std::collections::HashMap<String, Vec<u8>> = contents
            .iter()
            .enumerate()
            .map(|(i, c)| (format!("f{i}"), c.to_vec()))
            .collect();
        let answer: Answer = Box::new(move |_, request| {
            let files = request["files"].as_array().cloned().unwrap_or_default();
            let sent: Vec<&[u8]> = files
                .iter()
                .map(|f| by_name[f["path"].as_str().expect("path")].as_slice())
                .collect();
            asked
                .lock()
                .expect("lock")
                .push(sent.iter().map(|c| c.len() as u64).sum::<u64>());
            files_reply(request, &sent.into_iter().map(Ok).collect::<Vec<_>>())
        });
        let ended = fetch_files(&contents, answer).await.expect("no error");
        assert!(
            ended.iter().all(|how| how.starts_with("whole ")),
            "{ended:?}"
        );
        let sizes = sizes.lock().expect("lock").clone();
        let total: u64 = contents.iter().map(|c| c.len() as u64).sum();
        assert_eq!(sizes.iter().sum::<u64>(), total, "{sizes:?}");
        assert!(
            sizes.len() > 1 && sizes.iter().all(|&n| n <= BATCH_CONTENT),
            "GET_FILES of {sizes:?} bytes"
        );
    }

    /// A file a GET_FILES reply refuses as too large for it is asked for alone, by GET_FILE;
    /// a daemon that advertised GET_FILES and does not know it is asked one GET_FILE per file.
    #[tokio::test]
    async fn files_a_get_files_cannot_carry_go_by_get_file() {
        let get_file = |request: &Value, content: &[u8]| {
            let header = json!({"dir": "code", "path": request["path"], "size": content.len(),
                   "offset": 0, "sha256": zync_fs::hash_bytes(content),
                   "mtime_ns": 1_000_000_000_i64, "mode": 420, "chunks": 1});
            (header, vec![content.to_vec()])
        };
        let answer: Answer = Box::new(move |op, request| match op {
            "GET_FILES" => files_reply(request, &[Err("too_large"), Ok(b"bravo")]),
            "GET_FILE" if request["path"] == "f0" => get_file(request, b"alpha"),
            _ => panic!("unexpected {request}"),
        });
        let ended = fetch_files(&[b"alpha", b"bravo"], answer)
            .await
            .expect("no error");
        assert_eq!(ended, ["whole alpha", "whole bravo"]);

        let answer: Answer = Box::new(move |op, request| match op {
            "GET_FILES" => (
                json!({"status": "error", "code": "unknown_operation", "message": "no"}),
                Vec::new(),
            ),
            "GET_FILE" if request["path"] == "f0" => get_file(request, b"alpha"),
            "GET_FILE" => get_file(request, b"bravo"),
            _ => panic!("unexpected {request}"),
        });
        let ended = fetch_files(&[b"alpha", b"bravo"], answer)
            .await
            .expect("no error");
        assert_eq!(ended, ["whole alpha", "whole bravo"]);
    }

    /// What is in `root` (names).
    fn names(root: &Path) -> Vec<String> {
        std::fs::read_dir(root)
            .expect("list")
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .collect()
    }

    #[test]
    fn the_window_follows_the_daemon_and_stays_small_for_an_old_one() {
        let old = Window::for_daemon(None);
        assert_eq!((old.requests, old.request_bytes), (1024, 48 * 1024));
        let generous = Window::for_daemon(Some(zync_proto::Pipelining {
            requests: 100_000,
            bytes: 1 << 40,
        }));
        assert_eq!(
            (generous.requests, generous.request_bytes),
            (4096, 4 << 20),
            "capped by what this client keeps in memory"
        );
        let tight = Window::for_daemon(Some(zync_proto::Pipelining {
            requests: 10,
            bytes: 0,
        }));
        assert_eq!(
            (tight.requests, tight.request_bytes),
            (10, 1),
            "a daemon's smaller window is kept (and never zero)"
        );
    }
}
