//! UPSTREAM_FILE: one file of the open upstream session. The request is checked before any
//! content is read (a refused upload's frames are dropped as they arrive); a write's content
//! is received into its staged file through a [`Stager`], size and sha256 verified; the
//! conflict flag is decided three-way against E's disk now (invariant 5
//! (docs/ARCHITECTURE.md)). Nothing is written into E's directories.

use std::path::{Path, PathBuf};
use zync_proto::Kind;

use tokio_tungstenite::tungstenite::Message;
use zync_db::{Action, FileState, OnE, StagedFile};
use zync_fs::{RelPath, Stat};
use zync_proto::{ErrorCode, Reply, UpstreamAction, UpstreamFile, UpstreamFileReply};

use crate::context::Context;
use crate::link::Link;
use crate::refusal::Refusal;
use crate::staging::{Discard, Stager};

/// Receives and stages one file. On a refusal before the content was read, the content's
/// frames are discarded as they arrive.
pub(crate) async fn apply(
    cx: &mut Context,
    link: &mut Link,
    id: u64,
    file: UpstreamFile,
) -> Result<Reply, Refusal> {
    let frames = match file.action {
        UpstreamAction::Write => file.size.div_ceil(zync_proto::MAX_CHUNK as u64),
        UpstreamAction::Delete => 0,
    };
    match check(cx, &file) {
        Ok(checked) => stage(cx, link, id, file, frames, checked).await,
        Err(refusal) => {
            if frames > 0 {
                cx.discard = Some(Discard { id, frames });
            }
            Err(refusal)
        }
    }
}

/// Checks the session, the directory, the path (invariant 3 (docs/ARCHITECTURE.md)), the
/// daemon's ignore rules and the checksums' form.
fn check(cx: &Context, file: &UpstreamFile) -> Result<(RelPath, PathBuf), Refusal> {
    let session = cx
        .upstream
        .as_ref()
        .filter(|s| s.id == file.session_id)
        .ok_or_else(|| {
            Refusal::new(
                ErrorCode::UnknownSession,
                format!(
                    "no open upstream session {} on this connection; send PREPARE_UPSTREAM first",
                    file.session_id
                ),
            )
        })?;
    let root = cx.served(&file.dir)?;
    let rel = RelPath::parse(&file.path)
        .map_err(|e| Refusal::new(ErrorCode::InvalidPath, e.to_string()))?;
    if root.rules.is_ignored(&rel, false) {
        return Err(Refusal::new(
            ErrorCode::InvalidPath,
            format!("{rel} is ignored by the daemon's rules"),
        ));
    }
    if file.action == UpstreamAction::Write
        && !file.sha256.as_deref().is_some_and(zync_fs::is_sha256_hex)
    {
        return Err(Refusal::new(
            ErrorCode::BadRequest,
            "a write needs sha256: 64 lowercase hex digits",
        ));
    }
    if file
        .base_sha256
        .as_deref()
        .is_some_and(|b| !zync_fs::is_sha256_hex(b))
    {
        return Err(Refusal::new(
            ErrorCode::BadRequest,
            "base_sha256 must be 64 lowercase hex digits",
        ));
    }
    let _ = session;
    Ok((rel, root.path.clone()))
}

/// Receives a write's content, decides the conflict flag and records the staged file.
async fn stage(
    cx: &mut Context,
    link: &mut Link,
    id: u64,
    file: UpstreamFile,
    frames: u64,
    (rel, root): (RelPath, PathBuf),
) -> Result<Reply, Refusal> {
    let Some(session) = cx.upstream.as_mut() else {
        return Err(Refusal::new(
            ErrorCode::UnknownSession,
            "no open upstream session",
        ));
    };
    session.count += 1;
    let staged_name = format!("file-{:06}", session.count);
    let (session_id, session_dir) = (session.id.clone(), session.dir.clone());
    if file.action == UpstreamAction::Write {
        receive_content(cx, link, id, &file, frames, (&session_dir, &staged_name)).await?;
    }
    // Three-way decision against what E has now (invariant 5 (docs/ARCHITECTURE.md)).
    let (probe_root, probe_rel) = (root.clone(), rel.clone());
    let on_e = tokio::task::spawn_blocking(move || e_state(&probe_root, &probe_rel))
        .await
        .map_err(|e| Refusal::new(ErrorCode::Internal, e.to_string()))?;
    let current = match &on_e {
        EState::Missing => OnE::Missing,
        EState::File(sha) => OnE::File(sha),
        EState::Other => OnE::Other,
    };
    let action = match file.action {
        UpstreamAction::Write => Action::Write,
        UpstreamAction::Delete => Action::Delete,
    };
    let conflict = zync_db::is_conflict(
        action,
        file.base_sha256.as_deref(),
        file.sha256.as_deref(),
        current,
    );
    let staged = StagedFile {
        session_id,
        dir: file.dir.clone(),
        path: rel.to_string(),
        action,
        // No setuid/setgid/sticky bits from R: whoever holds the token must not plant them on E.
        mode: file.mode & 0o777,
        size: file.size,
        mtime_ns: file.mtime_ns,
        sha256: file.sha256.clone(),
        base_sha256: file.base_sha256.clone(),
        conflict,
        state: FileState::Staged,
        staged_name: (action == Action::Write).then_some(staged_name),
        backup_name: None,
        e_existed: !matches!(on_e, EState::Missing),
    };
    cx.query(move |index| index.add_staged_file(&staged))
        .await?;
    tracing::debug!(path = %rel, conflict, "staged");
    Ok(Reply::UpstreamFile(UpstreamFileReply {
        dir: file.dir,
        path: rel.to_string(),
        conflict,
    }))
}

/// Reads the content frames into the staging file, verifying size and sha256. The file is
/// created, and its size reserved, before any frame is read: when E has no room for it the
/// refusal goes out at once and the client can stop sending.
async fn receive_content(
    cx: &mut Context,
    link: &mut Link,
    id: u64,
    file: &UpstreamFile,
    frames: u64,
    (dir, name): (&Path, &str),
) -> Result<(), Refusal> {
    let mut stager = match Stager::start(dir, name, file).await {
        Ok(stager) => stager,
        Err(refusal) => {
            if frames > 0 {
                cx.discard = Some(Discard { id, frames });
            }
            return Err(refusal);
        }
    };
    let mut received = 0u64;
    let mut got = 0u64;
    let mut failure = None;
    while got < frames {
        let frame = match link.next().await {
            Some(Ok(Message::Binary(data))) => data,
            // Control frames are answered by the WebSocket layer and carry no content.
            Some(Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_))) => continue,
            _ => {
                failure = Some(Refusal::new(
                    ErrorCode::BadRequest,
                    format!(
                        "expected {} more content frames for {}",
                        frames - got,
                        file.path
                    ),
                ));
                break;
            }
        };
        got += 1;
        let (chunk_id, len) = match zync_proto::decode_chunk(&frame) {
            Ok((chunk_id, data)) => (chunk_id, data.len()),
            Err(e) => {
                failure = Some(Refusal::new(ErrorCode::TooLarge, e.to_string()));
                break;
            }
        };
        if chunk_id != id {
            failure = Some(Refusal::new(
                ErrorCode::BadRequest,
                format!("content frame for request {chunk_id} while receiving {id}"),
            ));
            break;
        }
        received += len as u64;
        if received > file.size {
            failure = Some(Refusal::new(
                ErrorCode::ChecksumMismatch,
                format!("{}: more than the announced {} bytes", file.path, file.size),
            ));
            break;
        }
        if let Err(refusal) = stager.write(frame.slice(zync_proto::CHUNK_HEADER..)).await {
            failure = Some(refusal);
            break;
        }
    }
    if failure.is_none() && received != file.size {
        failure = Some(Refusal::new(
            ErrorCode::ChecksumMismatch,
            format!(
                "{}: received {received} bytes, announced {}",
                file.path, file.size
            ),
        ));
    }
    if let Some(refusal) = failure {
        // Nothing half-received stays staged (the writer removes its temp file); the rest
        // of this upload's frames are dropped.
        stager.abandon().await;
        if got < frames {
            cx.discard = Some(Discard {
                id,
                frames: frames - got,
            });
        }
        return Err(refusal);
    }
    stager.finish().await
}

enum EState {
    Missing,
    File(String),
    Other,
}

/// What E has at `rel` now, read from disk (the index may lag by a debounce).
fn e_state(root: &Path, rel: &RelPath) -> EState {
    if zync_fs::check_parents(root, rel).is_err() {
        return match zync_fs::lstat(&rel.to_path(root)) {
            Ok(Stat::Missing) => EState::Missing,
            _ => EState::Other,
        };
    }
    let path = rel.to_path(root);
    match zync_fs::lstat(&path) {
        Ok(Stat::Missing) => EState::Missing,
        Ok(Stat::Entry(meta)) if meta.kind == Kind::File => match zync_fs::hash_file(&path) {
            Ok((sha, _)) => EState::File(sha),
            Err(_) => EState::Other,
        },
        _ => EState::Other,
    }
}
