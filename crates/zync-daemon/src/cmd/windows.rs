//! GET_WINDOWS: the hashes of a file's windows, keyed with the client's key, so that the client
//! can tell which windows of its own version differ from E's without reading it, and sign only
//! those for a GET_DELTA with a `plan` (docs/ARCHITECTURE.md, "Deltas in two steps").
//!
//! Hashing reads the whole file, so it runs on a blocking thread, with a WebSocket ping every
//! few seconds meanwhile (as GET_DELTA's diff). Memory: one read buffer and the hashes (16 bytes
//! per window).

use std::io::Read;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use tokio_tungstenite::tungstenite::Message;
use zync_fs::WindowKey;
use zync_proto::{
    ErrorCode, GetWindows, Reply, WindowHashes, WindowsReply, MAX_HASH_WINDOW, MAX_WINDOW_HASHES,
    MIN_HASH_WINDOW,
};

use super::delta::{open_indexed, KEEPALIVE};
use crate::context::Context;
use crate::indexed_file::IndexedFile;
use crate::link::Link;
use crate::refusal::Refusal;

/// Answers GET_WINDOWS. Returns false when the connection failed.
pub(crate) async fn apply(cx: &mut Context, link: &mut Link, id: u64, get: GetWindows) -> bool {
    let answer = match hash(cx, link, get).await {
        Ok(Some(reply)) => Ok(reply),
        Ok(None) => return false,
        Err(refusal) => Err(refusal),
    };
    link.answer(id, answer).await
}

/// The reply, or `None` when the connection failed while the file was hashed.
async fn hash(
    cx: &mut Context,
    link: &mut Link,
    get: GetWindows,
) -> Result<Option<Reply>, Refusal> {
    let window = get.window;
    if !(MIN_HASH_WINDOW..=MAX_HASH_WINDOW).contains(&window) {
        return Err(Refusal::new(
            ErrorCode::BadRequest,
            format!("window of {window} bytes is outside {MIN_HASH_WINDOW} ..= {MAX_HASH_WINDOW}"),
        ));
    }
    let key = WindowKey::from_bytes(&get.key).ok_or_else(|| {
        Refusal::new(
            ErrorCode::BadRequest,
            format!(
                "key is {} bytes; it must be {}",
                get.key.len(),
                GetWindows::KEY_LEN
            ),
        )
    })?;
    let opened = open_indexed(cx, get.dir.clone(), &get.path).await?;
    let windows = opened.size.div_ceil(u64::from(window));
    if windows > MAX_WINDOW_HASHES as u64 {
        return Err(Refusal::new(
            ErrorCode::TooLarge,
            format!(
                "{} is {} bytes: {windows} windows of {window} bytes, over the limit of {MAX_WINDOW_HASHES}; use GET_DELTA with a whole signature",
                opened.rel, opened.size
            ),
        ));
    }
    // Set when this request ends, however it ends (the connection gone, this future dropped):
    // the hashing stops at its next read instead of reading on for nobody.
    let cancelled = Arc::new(AtomicBool::new(false));
    let _cancel = CancelOnDrop(Arc::clone(&cancelled));
    let mut task =
        tokio::task::spawn_blocking(move || hash_checked(&opened, window, &key, &cancelled));
    let mut keepalive =
        tokio::time::interval_at(tokio::time::Instant::now() + KEEPALIVE, KEEPALIVE);
    let hashed = loop {
        tokio::select! {
            done = &mut task => break done,
            _ = keepalive.tick() => {
                if !link.send_frame(Message::Ping(Vec::new().into())).await {
                    return Ok(None);
                }
            }
        }
    };
    let reply = hashed.map_err(|e| {
        tracing::error!("GET_WINDOWS task failed: {e}");
        Refusal::new(
            ErrorCode::Internal,
            format!("the daemon's hashing task failed ({e}); retry later or use GET_DELTA"),
        )
    })??;
    Ok(Some(Reply::GetWindows(WindowsReply {
        dir: get.dir,
        ..reply
    })))
}

/// Sets its flag when dropped.
struct CancelOnDrop(Arc<AtomicBool>);

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

/// A reader that fails once its flag is set.
struct Cancellable<'a, R> {
    inner: R,
    cancelled: &'a AtomicBool,
}

impl<R: Read> Read for Cancellable<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.cancelled.load(Ordering::Relaxed) {
            return Err(std::io::Error::other("the request ended"));
        }
        self.inner.read(buf)
    }
}

/// Hashes the opened file's windows and checks it still is what the index says. Reads at
/// most one byte more than the indexed size (a file that grew is stale whatever its length),
/// and stops when `cancelled` is set.
fn hash_checked(
    opened: &IndexedFile,
    window: u32,
    key: &WindowKey,
    cancelled: &AtomicBool,
) -> Result<WindowsReply, Refusal> {
    let reader = Cancellable {
        inner: (&opened.file).take(opened.size.saturating_add(1)),
        cancelled,
    };
    let (size, hashes) = zync_fs::keyed_window_hashes(reader, u64::from(window), key)
        .map_err(|e| IndexedFile::stale_refusal(&opened.rel, &format!("cannot be read ({e})")))?;
    if size != opened.size {
        return Err(IndexedFile::stale_refusal(
            &opened.rel,
            "changed while its windows were hashed",
        ));
    }
    opened.check_unchanged()?;
    Ok(WindowsReply {
        dir: String::new(),
        path: opened.rel.to_string(),
        sha256: opened.sha256.clone(),
        windows: WindowHashes {
            window,
            base_size: size,
            hashes,
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cmd::delta::tests::{content, opened};

    fn key() -> WindowKey {
        WindowKey::from_bytes(&[3; GetWindows::KEY_LEN]).expect("a key's length")
    }

    #[test]
    fn the_hashes_are_the_file_s_and_a_grown_file_or_an_ended_request_stops_the_read() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let data = content();
        let file = opened(tmp.path(), "f", &data);
        let live = AtomicBool::new(false);
        let reply = hash_checked(&file, MIN_HASH_WINDOW, &key(), &live)
            .unwrap_or_else(|r| panic!("refused: {}", r.message()));
        let (size, hashes) =
            zync_fs::keyed_window_hashes(&data[..], u64::from(MIN_HASH_WINDOW), &key())
                .expect("hash");
        assert_eq!(reply.windows.base_size, size);
        assert_eq!(reply.windows.hashes, hashes);
        assert_eq!(reply.sha256, file.sha256);

        let ended = AtomicBool::new(true);
        let refusal =
            hash_checked(&file, MIN_HASH_WINDOW, &key(), &ended).expect_err("an ended request");
        assert!(
            refusal.message().contains("the request ended"),
            "{}",
            refusal.message()
        );

        // Grown after it was opened: one byte more than indexed is read, never the rest.
        std::fs::OpenOptions::new()
            .append(true)
            .open(&file.abs)
            .and_then(|mut f| std::io::Write::write_all(&mut f, &vec![0; 1 << 20]))
            .expect("append");
        let refusal =
            hash_checked(&file, MIN_HASH_WINDOW, &key(), &live).expect_err("a file that grew");
        assert_eq!(refusal.code(), ErrorCode::Stale, "{}", refusal.message());
    }
}
