//! GET_DELTA: a file's content as a delta against the client's signature of its own
//! version, so a small edit in a big file crosses the tunnel as a few KiB instead of the file.
//!
//! The diff is CPU work over the whole file, so it runs on a blocking thread. Its output is
//! spooled (memory up to [`SPOOL_MEMORY`], then an unnamed temp file beside the database)
//! because the reply's header announces the delta's size and the file must be checked against
//! the index after it was read whole; then the spool is streamed to the connection through a
//! bounded channel. Memory per request: a few windows of the file (a few pieces of 512 KiB
//! when the client sent window hashes: only its changed windows are diffed), the signature, the
//! in-memory spool and three chunks (the one being sent, [`PIPE`] waiting, one being read),
//! whatever the file size.

use std::io::{Read, Seek, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use tempfile::SpooledData;
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;
use zync_fs::DeltaError;
use zync_proto::{
    DeltaHeader, DeltaPlan, ErrorCode, GetDelta, OkResponse, Reply, ServerMessage, WindowHashes,
    MAX_CHUNK,
};

use crate::context::Context;
use crate::indexed_file::{self, IndexedFile};
use crate::link::Link;
use crate::refusal::Refusal;

/// Deltas up to this size stay in memory (a small edit's, many times over); larger ones go to a
/// temp file, which the page cache holds instead of the daemon (an 8 MiB spool took the
/// daemon's peak RSS to 25 MiB on a big file rewritten whole, docs/PROFILE.md, memory).
const SPOOL_MEMORY: usize = MAX_CHUNK;

/// Chunks read from the spool ahead of the socket: reading the spool is far quicker than
/// sending, so one waiting chunk (and the next one read, waiting for room) keeps the socket
/// busy.
const PIPE: usize = 1;

/// While the diff runs, a WebSocket ping goes out this often, so a client waiting for the reply
/// sees frames within its stall timeout (20 s by default) even for a file that takes longer.
pub(super) const KEEPALIVE: Duration = Duration::from_secs(5);

/// What the blocking side passes to the connection, in this order: `Ready` or `Failed`, then
/// the chunks (or a `Failed` in place of the rest).
enum Piece {
    Ready {
        delta_size: u64,
    },
    /// A chunk as its frame: the request's id, then the bytes.
    Chunk(Vec<u8>),
    Failed(Refusal),
}

/// Answers GET_DELTA: the same checks as GET_FILE, the diff off the reactor, the header, then
/// the delta in chunks. Returns false when the connection failed.
pub(crate) async fn apply(cx: &mut Context, link: &mut Link, id: u64, get: GetDelta) -> bool {
    match send_delta(cx, link, id, get).await {
        Ok(alive) => alive,
        Err(refusal) => link.send_error(Some(id), refusal).await,
    }
}

/// [`apply`], with a refusal before the header still to be sent.
async fn send_delta(
    cx: &mut Context,
    link: &mut Link,
    id: u64,
    get: GetDelta,
) -> Result<bool, Refusal> {
    let opened = open_indexed(cx, get.dir.clone(), &get.path).await?;
    let way = match (get.windows, get.plan) {
        (Some(_), Some(_)) => {
            return Err(Refusal::new(
                ErrorCode::BadRequest,
                "a GET_DELTA carries `windows` or a `plan`, not both",
            ))
        }
        (windows, None) => Way::Windows(windows),
        (None, Some(plan)) => {
            if plan.sha256 != opened.sha256 {
                return Err(IndexedFile::stale_refusal(
                    &opened.rel,
                    "is no longer the version GET_WINDOWS hashed",
                ));
            }
            Way::Plan(plan)
        }
    };
    let header = DeltaHeader {
        dir: get.dir,
        path: opened.rel.to_string(),
        size: opened.size,
        sha256: opened.sha256.clone(),
        mtime_ns: opened.mtime_ns,
        mode: opened.mode,
        delta_size: 0,
        chunks: 0,
    };
    let spool_dir = spool_dir(&cx.shared.db_path);
    let (tx, mut rx) = mpsc::channel(PIPE);
    let signature = get.signature;
    let task =
        tokio::task::spawn_blocking(move || produce(id, opened, &signature, &way, &spool_dir, &tx));

    let mut keepalive =
        tokio::time::interval_at(tokio::time::Instant::now() + KEEPALIVE, KEEPALIVE);
    let delta_size = loop {
        tokio::select! {
            piece = rx.recv() => match piece {
                Some(Piece::Ready { delta_size }) => break delta_size,
                Some(Piece::Failed(refusal)) => return Err(refusal),
                Some(Piece::Chunk(_)) | None => return Err(task_failed(task).await),
            },
            _ = keepalive.tick() => {
                if !link.send_frame(Message::Ping(Vec::new().into())).await {
                    return Ok(false);
                }
            }
        }
    };
    let chunks = delta_size.div_ceil(MAX_CHUNK as u64);
    let header = DeltaHeader {
        delta_size,
        chunks,
        ..header
    };
    let reply = ServerMessage::Ok(OkResponse {
        id,
        reply: Reply::GetDelta(header),
    });
    if !link.send_frame(Message::text(reply.to_json())).await {
        return Ok(false);
    }
    for _ in 0..chunks {
        let frame = match rx.recv().await {
            Some(Piece::Chunk(frame)) => frame,
            Some(Piece::Failed(refusal)) => return Ok(link.send_error(Some(id), refusal).await),
            Some(Piece::Ready { .. }) | None => {
                let refusal = task_failed(task).await;
                return Ok(link.send_error(Some(id), refusal).await);
            }
        };
        // Sent whole before the next chunk is taken: with the one waiting in the channel and
        // the one being read, three chunks at most.
        if !link.send_frame(Message::binary(frame)).await {
            return Ok(false);
        }
    }
    Ok(true)
}

/// Opens the indexed regular file `path` of `dir` for serving, checked as GET_FILE's files
/// are: see [`indexed_file::open`].
pub(super) async fn open_indexed(
    cx: &mut Context,
    dir: String,
    path: &str,
) -> Result<IndexedFile, Refusal> {
    let (root, dir, rel, _) = cx.locate(dir, path, None)?;
    cx.query(move |index| {
        let mut parents = zync_fs::Parents::default();
        Ok(indexed_file::open(index, &mut parents, &root, &dir, rel))
    })
    .await?
}

/// Where a large delta is spooled: the database's directory (the daemon's own state, never
/// synced; the temp file has no name there).
fn spool_dir(db: &Path) -> PathBuf {
    match db.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

/// The refusal when the blocking task stopped without a word: it panicked.
async fn task_failed(task: tokio::task::JoinHandle<()>) -> Refusal {
    let why = match task.await {
        Err(e) => e.to_string(),
        Ok(()) => "it ended early".to_string(),
    };
    tracing::error!("GET_DELTA task failed: {why}");
    Refusal::new(
        ErrorCode::Internal,
        format!("the daemon's delta task failed ({why}); retry later or use GET_FILE"),
    )
}

/// How the client's version is described besides its signature.
enum Way {
    /// The whole file's signature, with or without its window hashes.
    Windows(Option<WindowHashes>),
    /// The signature of some windows, after GET_WINDOWS (`zync_fs::delta::diff_planned`).
    Plan(DeltaPlan),
}

/// The blocking side: diff into the spool, check the file did not change, then pass the spool
/// on in chunks, each read straight into its frame for request `id` (no zeroed buffer, no
/// second copy). Stops early when the connection goes away (the channel closes).
fn produce(
    id: u64,
    opened: IndexedFile,
    signature: &[u8],
    way: &Way,
    spool_dir: &Path,
    tx: &mpsc::Sender<Piece>,
) {
    let mut spool = tempfile::spooled_tempfile_in(SPOOL_MEMORY, spool_dir);
    match diff_checked(&opened, signature, way, &mut spool, tx) {
        Ok(delta_size) => {
            if tx.blocking_send(Piece::Ready { delta_size }).is_err() {
                return;
            }
        }
        Err(refusal) => {
            let _ = tx.blocking_send(Piece::Failed(refusal));
            return;
        }
    }
    if let Err(e) = spool.rewind() {
        let _ = tx.blocking_send(Piece::Failed(spool_failed(&e)));
        return;
    }
    // The spool's own reads would zero each buffer first; its file's do not.
    let mut source: Box<dyn Read> = match spool.into_inner() {
        SpooledData::InMemory(cursor) => Box::new(cursor),
        SpooledData::OnDisk(file) => Box::new(file),
    };
    loop {
        let mut frame = Vec::with_capacity(zync_proto::CHUNK_HEADER + MAX_CHUNK);
        frame.extend_from_slice(&id.to_be_bytes());
        match (&mut source).take(MAX_CHUNK as u64).read_to_end(&mut frame) {
            Ok(0) => return,
            Ok(_) => {}
            Err(e) => {
                let _ = tx.blocking_send(Piece::Failed(spool_failed(&e)));
                return;
            }
        }
        if tx.blocking_send(Piece::Chunk(frame)).is_err() {
            return;
        }
    }
}

/// Diffs the opened file into `spool` (with the client's window hashes, only the windows that
/// changed: `zync_fs::delta::diff_file`; with a plan, only the windows it does not have:
/// `zync_fs::delta::diff_planned`) and checks it still is what the index says; returns the
/// delta's size.
fn diff_checked(
    opened: &IndexedFile,
    signature: &[u8],
    way: &Way,
    spool: &mut impl Write,
    tx: &mpsc::Sender<Piece>,
) -> Result<u64, Refusal> {
    let sink = |bytes: &[u8]| {
        if tx.is_closed() {
            return Err(std::io::Error::other("the connection closed"));
        }
        spool.write_all(bytes)
    };
    let (file, abs) = (&opened.file, &opened.abs);
    let diffed = match way {
        Way::Windows(windows) => {
            zync_fs::delta::diff_file(file, abs, signature, windows.as_ref(), sink)
        }
        Way::Plan(plan) => {
            zync_fs::delta::diff_planned(file, abs, opened.size, signature, plan, sink)
        }
    };
    // With a plan, the bytes the delta rebuilds: the windows copied are not read.
    let (delta_size, read) = diffed.map_err(|e| match e {
        DeltaError::BadSignature(_) | DeltaError::BadWindows(_) => {
            Refusal::new(ErrorCode::BadRequest, e.to_string())
        }
        DeltaError::Fs(e) => {
            IndexedFile::stale_refusal(&opened.rel, &format!("cannot be read ({e})"))
        }
        // The connection went away: nobody reads the refusal.
        DeltaError::Output(_) if tx.is_closed() => {
            Refusal::new(ErrorCode::Internal, "the connection closed")
        }
        DeltaError::Output(e) => spool_failed(&e),
        DeltaError::BadDelta(_) => Refusal::new(ErrorCode::Internal, e.to_string()),
    })?;
    if read != opened.size {
        return Err(IndexedFile::stale_refusal(
            &opened.rel,
            "changed while its delta was computed",
        ));
    }
    opened.check_unchanged()?;
    Ok(delta_size)
}

fn spool_failed(e: &std::io::Error) -> Refusal {
    tracing::error!("cannot spool a delta: {e}");
    Refusal::new(
        ErrorCode::Internal,
        format!("the daemon cannot hold the delta beside its database ({e}); retry later or use GET_FILE"),
    )
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use std::os::unix::fs::FileExt;

    /// A file of E's opened as `open_indexed` would, with its current size and mtime as the
    /// index row.
    pub(in crate::cmd) fn opened(dir: &Path, name: &str, content: &[u8]) -> IndexedFile {
        let abs = dir.join(name);
        std::fs::write(&abs, content).expect("write");
        let zync_fs::Stat::Entry(meta) = zync_fs::lstat(&abs).expect("lstat") else {
            panic!("{} is not there", abs.display())
        };
        IndexedFile {
            rel: zync_fs::RelPath::parse(name).expect("path"),
            file: std::fs::File::open(&abs).expect("open"),
            abs,
            size: meta.size,
            mtime_ns: meta.mtime_ns,
            mode: meta.mode,
            sha256: zync_fs::hash_bytes(content),
        }
    }

    /// `len` bytes of xorshift from `seed`: no block repeats, nothing matches another seed's.
    fn noise(seed: u64, len: usize) -> Vec<u8> {
        let mut x = seed;
        (0..len)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                (x >> 32) as u8
            })
            .collect()
    }

    /// 300 KB without repeated blocks (xorshift).
    pub(in crate::cmd) fn content() -> Vec<u8> {
        noise(0x2545_f491_4f6c_dd1d, 300_000)
    }

    fn signature_of(bytes: &[u8]) -> Vec<u8> {
        zync_fs::delta::signature_of(bytes, bytes.len() as u64).expect("signature")
    }

    #[test]
    fn an_unchanged_file_gives_its_delta() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let data = content();
        let file = opened(tmp.path(), "f", &data);
        let (tx, _rx) = mpsc::channel(1);
        let mut spool = Vec::new();
        let size = match diff_checked(
            &file,
            &signature_of(&data),
            &Way::Windows(None),
            &mut spool,
            &tx,
        ) {
            Ok(size) => size,
            Err(refusal) => panic!("refused: {}", refusal.message()),
        };
        assert_eq!(size, spool.len() as u64);
        // Copies, and the last 992 bytes as a literal: a block shorter than the block size
        // (4096) never matches.
        assert!(
            size < 1100,
            "a delta against the same content is {size} bytes"
        );
    }

    #[test]
    fn a_delta_over_the_memory_spool_goes_out_in_full_frames_of_its_request_and_rebuilds_the_file()
    {
        let tmp = tempfile::tempdir().expect("tempdir");
        // Rewritten whole: the delta is all literal, over two chunks and over SPOOL_MEMORY.
        let (old, new) = (noise(1, 3 << 20), noise(2, 3 << 20));
        let base = tmp.path().join("base");
        std::fs::write(&base, &old).expect("write base");
        let file = opened(tmp.path(), "f", &new);
        let (tx, mut rx) = mpsc::channel(PIPE);
        let (signature, spool_dir) = (signature_of(&old), tmp.path().to_path_buf());
        let producer = std::thread::spawn(move || {
            produce(77, file, &signature, &Way::Windows(None), &spool_dir, &tx)
        });
        let delta_size = match rx.blocking_recv() {
            Some(Piece::Ready { delta_size }) => delta_size,
            Some(Piece::Failed(refusal)) => panic!("refused: {}", refusal.message()),
            _ => panic!("no header first"),
        };
        assert!(delta_size > SPOOL_MEMORY as u64 * 2, "{delta_size}");
        let mut frames = Vec::new();
        while let Some(piece) = rx.blocking_recv() {
            match piece {
                Piece::Chunk(frame) => frames.push(frame),
                Piece::Failed(refusal) => panic!("failed: {}", refusal.message()),
                Piece::Ready { .. } => panic!("a second header"),
            }
        }
        producer.join().expect("producer");
        assert_eq!(frames.len() as u64, delta_size.div_ceil(MAX_CHUNK as u64));
        let mut delta = Vec::new();
        for (i, frame) in frames.iter().enumerate() {
            let (id, data) = zync_proto::decode_chunk(frame).expect("a chunk frame");
            assert_eq!(id, 77, "frame {i}");
            if i + 1 < frames.len() {
                assert_eq!(data.len(), MAX_CHUNK, "frame {i} is not full");
            }
            // Read into the frame as allocated, never grown (and copied) on the way.
            assert_eq!(
                frame.capacity(),
                zync_proto::CHUNK_HEADER + MAX_CHUNK,
                "frame {i}"
            );
            delta.extend_from_slice(data);
        }
        assert_eq!(delta.len() as u64, delta_size);
        let mut rebuilt = Vec::new();
        zync_fs::delta::apply(&base, &delta[..], new.len() as u64, |piece| {
            rebuilt.extend_from_slice(piece);
            Ok(())
        })
        .expect("apply");
        assert!(rebuilt == new, "the delta does not rebuild the file");
    }

    #[test]
    fn with_window_hashes_an_unchanged_file_is_one_copy_and_bad_hashes_a_bad_request() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let data = content();
        let file = opened(tmp.path(), "f", &data);
        let (signature, windows) =
            zync_fs::delta::signature_and_windows_of(&data[..], data.len() as u64)
                .expect("signature");
        let windows = windows.expect("window hashes");
        let (tx, _rx) = mpsc::channel(1);
        let mut spool = Vec::new();
        let size = match diff_checked(
            &file,
            &signature,
            &Way::Windows(Some(windows.clone())),
            &mut spool,
            &tx,
        ) {
            Ok(size) => size,
            Err(refusal) => panic!("refused: {}", refusal.message()),
        };
        assert_eq!(size, spool.len() as u64);
        // The stream's head, one record of one copy of the whole file, the end.
        assert!(
            size < 32,
            "a delta against the same content is {size} bytes"
        );
        let mut rebuilt = Vec::new();
        zync_fs::delta::apply(&file.abs, &spool[..], data.len() as u64, |b| {
            rebuilt.extend_from_slice(b);
            Ok(())
        })
        .expect("apply");
        assert!(rebuilt == data, "rebuilt other bytes");

        for (bad, says) in [
            (
                WindowHashes {
                    window: 4096,
                    ..windows.clone()
                },
                "window of 4096 bytes is outside",
            ),
            (
                WindowHashes {
                    hashes: [windows.hashes.clone(), vec![0; 16]].concat(),
                    ..windows.clone()
                },
                "2 hashes for a file of",
            ),
            (
                WindowHashes {
                    base_size: 5_000_000,
                    ..windows.clone()
                },
                "the signature's",
            ),
        ] {
            let refusal = diff_checked(
                &file,
                &signature,
                &Way::Windows(Some(bad.clone())),
                &mut Vec::new(),
                &tx,
            )
            .expect_err("bad window hashes must be refused");
            assert_eq!(
                refusal.code(),
                ErrorCode::BadRequest,
                "{}",
                refusal.message()
            );
            assert!(
                refusal.message().contains("bad window hashes") && refusal.message().contains(says),
                "{}",
                refusal.message()
            );
        }
    }

    #[test]
    fn with_a_plan_windows_the_client_has_are_copied_unread_and_a_file_cut_short_is_stale() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let data = content();
        let file = opened(tmp.path(), "f", &data);
        let plan = |same: Vec<u32>, covers: Vec<u32>| DeltaPlan {
            sha256: file.sha256.clone(),
            window: zync_proto::MIN_HASH_WINDOW,
            base_size: data.len() as u64,
            same,
            covers,
        };
        let rebuild = |spool: &[u8]| {
            let mut rebuilt = Vec::new();
            zync_fs::delta::apply(&file.abs, spool, data.len() as u64, |b| {
                rebuilt.extend_from_slice(b);
                Ok(())
            })
            .expect("apply");
            rebuilt
        };
        let (tx, _rx) = mpsc::channel(1);
        // The one window is the client's: one copy, and an empty signature.
        let copied = plan(vec![0], vec![]);
        let nothing = zync_fs::delta::signature_of_windows(
            &file.file,
            &file.abs,
            copied.base_size,
            copied.window,
            &[],
        )
        .expect("signature");
        let mut spool = Vec::new();
        let size = diff_checked(&file, &nothing, &Way::Plan(copied.clone()), &mut spool, &tx)
            .unwrap_or_else(|r| panic!("refused: {}", r.message()));
        assert!(size < 32, "one copy takes {size} bytes");
        assert!(rebuild(&spool) == data, "rebuilt other bytes");
        // The window signed and diffed.
        let diffed = plan(vec![], vec![0]);
        let signature = zync_fs::delta::signature_of_windows(
            &file.file,
            &file.abs,
            data.len() as u64,
            diffed.window,
            &[0],
        )
        .expect("signature");
        let mut spool = Vec::new();
        diff_checked(
            &file,
            &signature,
            &Way::Plan(diffed.clone()),
            &mut spool,
            &tx,
        )
        .unwrap_or_else(|r| panic!("refused: {}", r.message()));
        assert!(rebuild(&spool) == data, "rebuilt other bytes");
        // A plan that does not fit its signature is a bad request.
        let refusal = diff_checked(
            &file,
            &nothing,
            &Way::Plan(diffed.clone()),
            &mut Vec::new(),
            &tx,
        )
        .expect_err("a signature of nothing for a window to diff");
        assert_eq!(
            refusal.code(),
            ErrorCode::BadRequest,
            "{}",
            refusal.message()
        );
        // Cut short after it was opened: stale, whichever way.
        std::fs::OpenOptions::new()
            .write(true)
            .open(&file.abs)
            .expect("open")
            .set_len(1000)
            .expect("truncate");
        for (plan, signature) in [(copied, &nothing), (diffed, &signature)] {
            let refusal = diff_checked(&file, signature, &Way::Plan(plan), &mut Vec::new(), &tx)
                .expect_err("a file cut short");
            assert_eq!(refusal.code(), ErrorCode::Stale, "{}", refusal.message());
        }
    }

    #[test]
    fn a_file_that_shrank_during_a_diff_with_window_hashes_is_stale() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let data = content();
        let file = opened(tmp.path(), "f", &data);
        // Checked and opened, then cut short before the diff read it; the hashes are of other
        // content, so the window that is left is diffed.
        let (signature, windows) =
            zync_fs::delta::signature_and_windows_of(&data[1..1001], 1000).expect("signature");
        std::fs::OpenOptions::new()
            .write(true)
            .open(&file.abs)
            .expect("open")
            .set_len(1000)
            .expect("truncate");
        let (tx, _rx) = mpsc::channel(1);
        let refusal = diff_checked(
            &file,
            &signature,
            &Way::Windows(windows.clone()),
            &mut Vec::new(),
            &tx,
        )
        .expect_err("a shrunk file must be refused");
        assert_eq!(refusal.code(), ErrorCode::Stale, "{}", refusal.message());
    }

    #[test]
    fn a_file_that_grew_during_the_diff_is_stale() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let data = content();
        let file = opened(tmp.path(), "f", &data);
        // Checked and opened, then changed before the diff read it.
        let grown = std::fs::OpenOptions::new()
            .append(true)
            .open(&file.abs)
            .expect("open");
        grown.write_all_at(b"more", 0).expect("append");
        let (tx, _rx) = mpsc::channel(1);
        let refusal = diff_checked(
            &file,
            &signature_of(&data),
            &Way::Windows(None),
            &mut Vec::new(),
            &tx,
        )
        .expect_err("a grown file must be refused");
        assert_eq!(refusal.code(), ErrorCode::Stale, "{}", refusal.message());
        assert!(refusal
            .message()
            .contains("changed while its delta was computed"));
    }

    #[test]
    fn a_same_size_rewrite_with_a_new_mtime_is_stale() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let data = content();
        let file = opened(tmp.path(), "f", &data);
        let writer = std::fs::OpenOptions::new()
            .write(true)
            .open(&file.abs)
            .expect("open");
        writer.write_all_at(b"other", 1000).expect("rewrite");
        writer
            .set_modified(std::time::UNIX_EPOCH + Duration::from_secs(1_000_000))
            .expect("set mtime");
        let (tx, _rx) = mpsc::channel(1);
        let refusal = diff_checked(
            &file,
            &signature_of(&data),
            &Way::Windows(None),
            &mut Vec::new(),
            &tx,
        )
        .expect_err("a rewritten file must be refused");
        assert_eq!(refusal.code(), ErrorCode::Stale, "{}", refusal.message());
        assert!(refusal.message().contains("changed since it was indexed"));
    }

    #[test]
    fn a_bad_signature_is_a_bad_request_and_a_closed_connection_stops_the_diff() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let data = content();
        let file = opened(tmp.path(), "f", &data);
        let (tx, rx) = mpsc::channel(1);
        let refusal = diff_checked(&file, b"junk", &Way::Windows(None), &mut Vec::new(), &tx)
            .expect_err("junk must be refused");
        assert_eq!(
            refusal.code(),
            ErrorCode::BadRequest,
            "{}",
            refusal.message()
        );
        assert!(
            refusal.message().contains("bad signature"),
            "{}",
            refusal.message()
        );
        drop(rx);
        let mut spool = Vec::new();
        let refusal = diff_checked(
            &file,
            &signature_of(&data),
            &Way::Windows(None),
            &mut spool,
            &tx,
        )
        .expect_err("nobody reads the delta");
        assert_eq!(refusal.code(), ErrorCode::Internal);
        assert!(
            spool.is_empty(),
            "{} bytes spooled for a closed connection",
            spool.len()
        );
    }
}
