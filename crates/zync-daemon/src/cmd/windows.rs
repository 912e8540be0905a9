//! GET_WINDOWS: the hashes of a file's windows, keyed with the client's key, so that the client
//! can tell which windows of its own version differ from E's without reading it, and sign only
//! those for a GET_DELTA with a `plan` (docs/ARCHITECTURE.md, "Deltas in two steps").
//!
//! Hashing reads the whole file, so it runs on a blocking thread, with a WebSocket ping every
//! few seconds meanwhile (as GET_DELTA's diff). Memory: one read buffer and the hashes (16 bytes
//! per window).

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
    let mut task = tokio::task::spawn_blocking(move || hash_checked(&opened, window, &key));
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

/// Hashes the opened file's windows and checks it still is what the index says.
fn hash_checked(
    opened: &IndexedFile,
    window: u32,
    key: &WindowKey,
) -> Result<WindowsReply, Refusal> {
    let (size, hashes) = zync_fs::keyed_window_hashes(&opened.file, u64::from(window), key)
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
