//! Many downloads in flight on one connection: requests go out ahead of the replies, so a page of
//! small files costs a few round trips instead of one per file. The daemon answers requests in
//! order; every frame carries its request id, so nothing here depends on that order.

use std::collections::{HashMap, VecDeque};

use std::io::Write;

use zync_cli::progress::Progress;
use zync_proto::{DeltaHeader, ErrorCode, FileHeader};

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
    /// Downloads refused before they were asked for (no room for them on R's disk), reported
    /// by [`Pipeline::next`].
    refused: VecDeque<Finished>,
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
            refused: VecDeque::new(),
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
        self.queue.is_empty() && self.inflight.is_empty() && self.refused.is_empty()
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
        let room = self.inflight.len() <= w.requests - w.requests / 8
            && self.request_bytes <= w.request_bytes - w.request_bytes / 8
            && self.content_bytes <= w.content_bytes - w.content_bytes / 8;
        if !room {
            return Ok(());
        }
        let mut sent = false;
        while let Some((_, pending)) = self.queue.front_mut() {
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
            // A GET_WINDOWS is answered with a few KiB, not the file.
            let expected = if pending.asks_windows() {
                0
            } else {
                pending.remaining(offset)
            };
            let cost = 64 + self.dir.len() + pending.path().len() + pending.ask_bytes();
            let full = self.inflight.len() >= w.requests
                || self.request_bytes + cost > w.request_bytes
                || self.content_bytes + expected > w.content_bytes;
            if full && !self.inflight.is_empty() {
                break;
            }
            let Some((index, mut pending)) = self.queue.pop_front() else {
                break;
            };
            // Checked at plan time alone; now again, with what the downloads before it take.
            if let Err(e) = pending.check_room(self.claimed) {
                self.refused.push_back(Finished::Failed(index, e));
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
        if let Some(refused) = self.refused.pop_front() {
            return Ok(Some(refused));
        }
        match conn.next_transfer().await? {
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
                Ok(self.failed(id, e))
            }
            Transfer::Answered => Ok(None),
        }
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

    /// The downloads cut off by a lost connection, to keep what arrived of them as partials;
    /// the queued ones are dropped and the pipeline is empty after.
    pub async fn abandon(&mut self) -> Vec<Box<Pending>> {
        self.queue.clear();
        self.refused.clear();
        self.request_bytes = 0;
        self.content_bytes = 0;
        self.claimed = 0;
        let mut cut = Vec::with_capacity(self.inflight.len());
        for (_, mut slot) in std::mem::take(&mut self.inflight) {
            if let Err(e) = settle(&mut slot).await {
                tracing::debug!(path = slot.pending.path(), "{e}");
            }
            cut.push(slot.pending);
        }
        cut
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

    /// Plays the daemon for one connection: proves itself with [`TOKEN`], then answers a
    /// GET_FILE or GET_DELTA with `header` (its envelope filled in) and a chunk of each of
    /// `frames`.
    async fn daemon(listener: tokio::net::TcpListener, header: Value, frames: Vec<Vec<u8>>) {
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
            let mut reply = match op.as_str() {
                "HELLO" => {
                    let nonce = |v: &Value| Nonce::from_hex(v.as_str().unwrap_or_default());
                    let client = nonce(&request["client_nonce"]).expect("a nonce");
                    let ours = Nonce::generate().expect("random");
                    let id = request["client_id"].as_str().unwrap_or_default();
                    let proof = zync_proto::proof(TOKEN, Role::Daemon, &client, &ours, id);
                    json!({"protocol_version": zync_proto::PROTOCOL_VERSION,
                           "daemon_nonce": ours.to_hex(), "daemon_proof": proof,
                           "server_version": "test"})
                }
                "AUTH" => json!({"protocol_version": zync_proto::PROTOCOL_VERSION,
                                 "index_id": "test", "dirs": ["code"], "scanning": false,
                                 "server_version": "test"}),
                _ => header.clone(),
            };
            reply["status"] = json!("ok");
            reply["id"] = request["id"].clone();
            reply["operation"] = json!(op);
            if ws.send(Message::text(reply.to_string())).await.is_err() {
                return;
            }
            if op == "GET_FILE" || op == "GET_DELTA" {
                let id = request["id"].as_u64().unwrap_or_default();
                for frame in &frames {
                    let chunk = zync_proto::encode_chunk(id, frame);
                    if ws.send(Message::binary(chunk)).await.is_err() {
                        return;
                    }
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

    /// Downloads `f`, planned as `planned` (its content), from a daemon answering with
    /// `header` and `frames`; as a delta against `older` (R's version at the path) when given.
    async fn fetch(
        planned: &[u8],
        older: Option<&[u8]>,
        header: Value,
        frames: Vec<Vec<u8>>,
    ) -> Fetched {
        let tmp = tempfile::tempdir().expect("tempdir");
        let root: Arc<Path> = Arc::from(tmp.path().join("root"));
        std::fs::create_dir(&root).expect("mkdir");
        if let Some(older) = older {
            std::fs::write(root.join("f"), older).expect("write");
        }
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let url = format!("ws://{}", listener.local_addr().expect("address"));
        let serving = tokio::spawn(daemon(listener, header, frames));
        let credentials = Credentials {
            token: Some(TOKEN.into()),
            source: "the test".into(),
        };
        let stall = Duration::from_secs(10);
        let mut conn = Connection::open(&url, &credentials, "fetch-test", None, stall)
            .await
            .expect("handshake");
        let record = Synced {
            kind: Kind::File,
            size: planned.len() as u64,
            mtime_ns: 1_000_000_000,
            mode: 0o644,
            sha256: Some(zync_fs::hash_bytes(planned)),
            target: None,
        };
        let rel = RelPath::parse("f").expect("path");
        let mut pending = Pending::new(&root, rel, Stat::Missing, false, record);
        if older.is_some() {
            pending.want_delta();
        }
        let mut pipeline = Pipeline::new("code", Window::for_daemon(None), Progress::hidden());
        pipeline.push(0, Box::new(pending));
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
