//! GET_FILE: a file's content, its header then 1 MiB chunks. Pipelined GET_FILEs are answered
//! in batches: one trip off the reactor looks up, checks and reads the first chunk of up to
//! [`READ_AHEAD_FILES`] files, and the next batch is opened while this one is sent. A file must
//! still be what the index says, else `stale` (docs/PROTOCOL.md, GET_FILE).

use std::path::Path;
use std::sync::Arc;

use tokio_tungstenite::tungstenite::Message;
use zync_db::Index;
use zync_fs::{Parents, RelPath};
use zync_proto::{ErrorCode, FileHeader, GetFile, OkResponse, Op, Reply, Request, ServerMessage};

use crate::context::{Context, KeptDirs};
use crate::indexed_file::{self, IndexedFile};
use crate::link::Link;
use crate::refusal::Refusal;

/// At most this many pipelined GET_FILE requests are answered as one batch.
const READ_AHEAD_FILES: usize = 256;
/// At most this many content bytes are read ahead for one batch.
const READ_AHEAD_BYTES: usize = 8 << 20;

/// Takes further GET_FILE requests the client already sent (pipelined), up to a batch, so
/// that one trip off the reactor serves many small files. Anything else read on the way is
/// kept for the connection's frame loop to handle next, in order.
fn read_ahead(link: &mut Link, batch: &mut Vec<(u64, GetFile)>) {
    // A request kept for later comes before anything still unread.
    if link.has_backlog() {
        return;
    }
    while batch.len() < READ_AHEAD_FILES {
        let message = match link.try_next() {
            None => return,
            Some(Some(Ok(message))) => message,
            // The stream ended or failed: let the normal path see that after the batch.
            Some(_) => {
                link.keep(Message::Close(None));
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
        link.keep(message);
        return;
    }
}

/// Answers GET_FILE requests in order, batch after batch while the client keeps sending
/// them: each file's header, then its bytes in chunks. The next batch is opened and read
/// off the reactor while this one is sent. A file must still be what the index says (size
/// and mtime), else `stale`: a newer change is on its way. Returns false when the
/// connection failed.
pub(crate) async fn apply(cx: &mut Context, link: &mut Link, id: u64, get: GetFile) -> bool {
    let mut batch = vec![(id, get)];
    read_ahead(link, &mut batch);
    let mut next = Some(open_files(cx, batch).await);
    while let Some(opening) = next.take() {
        let opened = opening.finish().await;
        let mut more = Vec::new();
        read_ahead(link, &mut more);
        if !more.is_empty() {
            next = Some(open_files(cx, more).await);
        }
        if !send_opened(link, opened).await {
            return false;
        }
    }
    true
}

/// Starts opening a batch of GET_FILEs off the reactor: one trip for the lookups, the
/// checks and the first chunk of each file (all of a small file), within a memory budget.
async fn open_files(cx: &mut Context, batch: Vec<(u64, GetFile)>) -> Opening {
    let ids: Vec<u64> = batch.iter().map(|(id, _)| *id).collect();
    let mut wanted = Vec::with_capacity(batch.len());
    let mut kept = KeptDirs::default();
    for (id, get) in batch {
        wanted.push((
            id,
            cx.locate_in_batch(get.dir, &get.path, get.offset, &mut kept),
        ));
    }
    let db = match cx.index().await {
        Ok(db) => db,
        Err(refusal) => return Opening::Refused(ids, refusal),
    };
    let task = tokio::task::spawn_blocking(move || {
        let index = db
            .lock()
            .map_err(|_| Refusal::new(ErrorCode::Internal, "index lock poisoned"))?;
        let mut budget = READ_AHEAD_BYTES;
        // One read of the index and one walk to each directory for the whole batch, not one
        // per file.
        let _snapshot = index.read_snapshot()?;
        let mut parents = Parents::default();
        Ok(wanted
            .into_iter()
            .map(|(id, located)| {
                let opened = located.and_then(|(root, dir, rel, offset)| {
                    let file = Get { dir, rel, offset };
                    open_for_get(id, &index, &mut parents, &root, file, &mut budget)
                });
                (id, opened)
            })
            .collect())
    });
    Opening::Running(ids, task)
}

/// Sends a batch that was opened: each file, or its refusal. Flushed at the end.
async fn send_opened(
    link: &mut Link,
    opened: (Vec<u64>, Result<Vec<OpenedFile>, Refusal>),
) -> bool {
    match opened {
        (_, Ok(opened)) => {
            for (id, result) in opened {
                let alive = match result {
                    Ok((file, header, first)) => stream_file(link, id, file, header, first).await,
                    Err(refusal) => link.feed_error(Some(id), refusal).await,
                };
                if !alive {
                    return false;
                }
            }
        }
        (ids, Err(refusal)) => {
            // The index failed: every request of the batch gets the same answer.
            for id in ids {
                let again = Refusal::new(refusal.code(), refusal.message());
                if !link.feed_error(Some(id), again).await {
                    return false;
                }
            }
        }
    }
    link.flush().await
}

/// Sends one opened file: its header, the first chunk (already read as a frame), then the
/// rest chunk by chunk, each read with a positioned read straight into its frame while the
/// previous one is written out of the WebSocket's buffer (memory bounded by two chunks: that
/// buffer and the chunk being read). Not flushed at the end.
async fn stream_file(
    link: &mut Link,
    id: u64,
    file: std::fs::File,
    header: FileHeader,
    first: Vec<u8>,
) -> bool {
    let (size, offset, path) = (header.size, header.offset, header.path.clone());
    if !link
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
        tokio::task::spawn_blocking(move || read_frame_at(&file, id, want, at))
    };
    // The first chunk was read with the checks, unless the batch's budget ran out.
    let mut next = (first.len() > zync_proto::CHUNK_HEADER).then_some(first);
    loop {
        if let Some(frame) = next.take() {
            sent += (frame.len() - zync_proto::CHUNK_HEADER) as u64;
            if !link.feed_frame(Message::binary(frame)).await {
                return false;
            }
        }
        if sent >= size {
            return true;
        }
        // Only once a chunk is in the write buffer is the next one read, while that buffer is
        // written out: two chunks at most.
        let (read, flushed) = tokio::join!(read(sent), link.flush());
        if !flushed {
            return false;
        }
        match read {
            Ok(Ok(frame)) => next = Some(frame),
            Ok(Err(e)) => {
                // The file shrank or failed while being sent: the client drops it.
                tracing::warn!(path = %path, "read failed mid-transfer: {e}");
                let stale = Refusal::new(
                    ErrorCode::Stale,
                    format!("{path} changed during the transfer; ask again after the next change"),
                );
                return link.feed_error(Some(id), stale).await;
            }
            Err(e) => {
                let internal = Refusal::new(ErrorCode::Internal, e.to_string());
                return link.feed_error(Some(id), internal).await;
            }
        }
    }
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
    rel: RelPath,
    offset: u64,
}

/// Opens `rel` for GET_FILE ([`indexed_file::open`]) and reads its first chunk from `offset` (all of
/// a small file) within the batch's `budget`, as the frame of request `id` (header included;
/// empty past the budget). Blocking: runs off the reactor.
fn open_for_get(
    id: u64,
    index: &Index,
    parents: &mut Parents,
    root: &Path,
    Get { dir, rel, offset }: Get,
    budget: &mut usize,
) -> Result<(std::fs::File, FileHeader, Vec<u8>), Refusal> {
    let IndexedFile {
        rel,
        file,
        size,
        mtime_ns,
        mode,
        sha256,
        ..
    } = indexed_file::open(index, parents, root, &dir, rel)?;
    let stale = |why: String| IndexedFile::stale_refusal(&rel, &why);
    // A client resumes from the length of a part it kept of the version it asked for, never
    // past that version's size: a longer part is of another version than E's file is now.
    if offset > size {
        return Err(stale(format!(
            "is now {size} bytes, shorter than the {offset} kept of the version asked for \
             (ask from 0)"
        )));
    }
    let chunk = zync_proto::MAX_CHUNK as u64;
    // Past the batch's budget, the content is read while it is sent instead. The first chunk is
    // read whole or not at all: a part of it would be a short frame before full ones, more
    // frames than the header announces, and the client gives up on the connection.
    let whole = (size - offset).min(chunk) as usize;
    let first_len = if whole <= *budget { whole } else { 0 };
    *budget -= first_len;
    let first = read_frame_at(&file, id, first_len, offset)
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
/// Request `id`'s frame holding the `len` bytes of `file` at `at`: read straight into the frame
/// behind its header, into memory that is not zeroed first (zeroing every 1 MiB frame cost the
/// daemon about a seventh of its CPU when it sent a big file, docs/PROFILE.md), with positioned
/// reads (`pread`: no seek before each file's first chunk). A file shorter than `at + len` is an
/// `UnexpectedEof` error.
fn read_frame_at(file: &std::fs::File, id: u64, len: usize, at: u64) -> std::io::Result<Vec<u8>> {
    assert!(
        len <= zync_proto::MAX_CHUNK,
        "chunk of {len} bytes over the limit"
    );
    let mut frame = Vec::with_capacity(zync_proto::CHUNK_HEADER + len);
    frame.extend_from_slice(&id.to_be_bytes());
    read_at_into(file, &mut frame, len, at)?;
    Ok(frame)
}

/// Appends the `len` bytes of `file` at `at` to `buf`, read straight into its spare capacity
/// (not zeroed first) with positioned reads. A file shorter than `at + len` is an
/// `UnexpectedEof` error; `buf` then holds what was read of it.
pub(crate) fn read_at_into(
    file: &std::fs::File,
    buf: &mut Vec<u8>,
    len: usize,
    at: u64,
) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    buf.reserve(len);
    let mut read = 0usize;
    while read < len {
        let spare = &mut buf.spare_capacity_mut()[..len - read];
        let offset = at
            .checked_add(read as u64)
            .and_then(|o| libc::off_t::try_from(o).ok())
            .ok_or_else(|| std::io::Error::other(format!("offset {at} + {read} is too large")))?;
        // SAFETY: `spare` is writable memory of `spare.len()` bytes owned by `buf`, and the
        // descriptor is open for the life of `file`.
        let n = unsafe {
            libc::pread(
                file.as_raw_fd(),
                spare.as_mut_ptr().cast(),
                spare.len(),
                offset,
            )
        };
        match n {
            0 => break,
            n if n > 0 => {
                let n = n as usize;
                // SAFETY: pread initialised the first `n` bytes of the spare capacity.
                unsafe { buf.set_len(buf.len() + n) };
                read += n;
            }
            _ => {
                let e = std::io::Error::last_os_error();
                if e.kind() != std::io::ErrorKind::Interrupted {
                    return Err(e);
                }
            }
        }
    }
    if read != len {
        return Err(std::io::Error::new(
            std::io::ErrorKind::UnexpectedEof,
            format!("{read} of {len} bytes at {at}"),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::indexed_file::tests::index_file;

    /// Opens `rel` of dir `d` for GET_FILE as a batch would, with `budget` bytes left to read
    /// ahead: the frames it sends, the first one already read, and the budget left.
    fn frames_with_budget(root: &Path, rel: &str, budget: usize) -> (Vec<Vec<u8>>, usize) {
        let mut index = Index::open_in_memory().expect("index");
        index_file(&mut index, root, rel);
        let mut left = budget;
        let get = Get {
            dir: "d".into(),
            rel: RelPath::parse(rel).expect("path"),
            offset: 0,
        };
        let (file, header, first) =
            match open_for_get(5, &index, &mut Parents::default(), root, get, &mut left) {
                Ok(opened) => opened,
                Err(refusal) => panic!("refused: {}", refusal.message()),
            };
        // The rest as `stream_file` reads it, from where the first frame ended.
        let mut frames = vec![first];
        let mut sent = (frames[0].len() - zync_proto::CHUNK_HEADER) as u64;
        while sent < header.size {
            let want = (header.size - sent).min(zync_proto::MAX_CHUNK as u64) as usize;
            frames.push(read_frame_at(&file, 5, want, sent).expect("read"));
            sent += want as u64;
        }
        // An empty first frame is not sent: the content is read while it is sent.
        if frames[0].len() == zync_proto::CHUNK_HEADER && header.size > 0 {
            frames.remove(0);
        }
        assert_eq!(
            frames.len() as u64,
            header.chunks,
            "frames against the header"
        );
        (frames, left)
    }

    #[test]
    fn a_resume_past_the_end_of_e_s_file_is_stale_not_a_bad_request() {
        let tmp = tempfile::tempdir().expect("tempdir");
        std::fs::write(tmp.path().join("f"), b"now shorter").expect("write");
        let mut index = Index::open_in_memory().expect("index");
        index_file(&mut index, tmp.path(), "f");
        let get = |offset| Get {
            dir: "d".into(),
            rel: RelPath::parse("f").expect("path"),
            offset,
        };
        let mut budget = READ_AHEAD_BYTES;
        let open = |offset, budget: &mut usize| {
            open_for_get(
                7,
                &index,
                &mut Parents::default(),
                tmp.path(),
                get(offset),
                budget,
            )
        };
        // R kept 4 KiB of a longer version: E's file changed since, a newer change is coming.
        let Err(refusal) = open(4096, &mut budget) else {
            panic!("a resume past the end was served");
        };
        assert_eq!(refusal.code(), ErrorCode::Stale, "{}", refusal.message());
        assert!(
            refusal.message().contains("ask from 0"),
            "{}",
            refusal.message()
        );
        // Up to the end is a resume: what is left, possibly nothing.
        let Ok((_, header, first)) = open(11, &mut budget) else {
            panic!("a resume at the end was refused");
        };
        assert_eq!((header.chunks, first.len()), (0, zync_proto::CHUNK_HEADER));
    }

    #[test]
    fn a_first_chunk_is_read_ahead_whole_or_not_at_all() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let big: Vec<u8> = (0..3 << 20).map(|i: u32| (i % 251) as u8).collect();
        std::fs::write(tmp.path().join("big"), &big).expect("write");
        std::fs::write(tmp.path().join("small"), b"hello").expect("write");
        // Less than a chunk left, after a batch of small files: nothing read ahead, three full
        // frames of the file as announced.
        let (frames, left) = frames_with_budget(tmp.path(), "big", 32 << 10);
        assert_eq!(left, 32 << 10);
        assert!(frames
            .iter()
            .all(|f| f.len() == zync_proto::CHUNK_HEADER + zync_proto::MAX_CHUNK));
        // Room for a whole chunk: the first is read ahead.
        let (frames, left) = frames_with_budget(tmp.path(), "big", 8 << 20);
        assert_eq!((frames.len(), left), (3, 7 << 20));
        // A small file fits in what is left.
        let (frames, left) = frames_with_budget(tmp.path(), "small", 32 << 10);
        assert_eq!(frames, vec![[&5u64.to_be_bytes()[..], b"hello"].concat()]);
        assert_eq!(left, (32 << 10) - 5);
    }

    #[test]
    fn a_frame_holds_the_id_then_exactly_the_bytes_asked_for() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let path = tmp.path().join("f");
        let data: Vec<u8> = (0..3000u32).map(|i| (i % 251) as u8).collect();
        std::fs::write(&path, &data).expect("write");
        let file = std::fs::File::open(&path).expect("open");
        let frame = read_frame_at(&file, 7, 1000, 1500).expect("read");
        assert_eq!(frame.len(), zync_proto::CHUNK_HEADER + 1000);
        assert_eq!(
            zync_proto::decode_chunk(&frame).expect("decode"),
            (7, &data[1500..2500])
        );
        // Chunks read one after another, in any order, each from its own offset.
        let first = read_frame_at(&file, 8, 100, 0).expect("read");
        assert_eq!(&first[zync_proto::CHUNK_HEADER..], &data[..100]);
        let empty = read_frame_at(&file, 9, 0, 3000).expect("read");
        assert_eq!(empty.len(), zync_proto::CHUNK_HEADER);
        // The file is shorter than asked: an error, never a short frame.
        let short = read_frame_at(&file, 10, 1000, 2500).expect_err("short");
        assert_eq!(short.kind(), std::io::ErrorKind::UnexpectedEof, "{short}");
    }
}
