//! UPSTREAM_FILE: one file of the open upstream session. The request is checked before any
//! content is read (a refused upload's frames are dropped as they arrive): the path, the
//! daemon's own files, the staging limits; a write's content is received into its staged file
//! through a [`Stager`], size and sha256 verified, each frame within the upload stall
//! deadline; the conflict flag is decided three-way, for the content and the mode, against E's
//! disk now (invariant 5 (docs/ARCHITECTURE.md)). Nothing is written into E's directories.

use std::path::{Path, PathBuf};

use tokio_tungstenite::tungstenite::Message;
use zync_db::{Action, BaseMode, FileState, ModeMerge, OnE, StagedFile};
use zync_fs::{RelPath, Stat};
use zync_proto::{ErrorCode, Reply, UpstreamAction, UpstreamFile, UpstreamFileReply};

use crate::budget::{Reservation, Upload};
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
    let admitted = match admit(cx, &file).await {
        Ok(admitted) => admitted,
        Err(refusal) => {
            if frames > 0 {
                cx.discard = Some(Discard { id, frames });
            }
            return Err(refusal);
        }
    };
    stage(cx, link, id, file, frames, admitted).await
}

/// An upload that passed every check before its content: its path, its root, and the bytes of
/// the total it holds until it is recorded (its content and its record).
struct Admitted {
    rel: RelPath,
    root: PathBuf,
    reservation: Reservation,
}

/// Everything checked before any content is read: the request ([`check`]), the daemon's own
/// files, the session's limits and the total staged, and the session recorded (on its first
/// file).
async fn admit(cx: &mut Context, file: &UpstreamFile) -> Result<Admitted, Refusal> {
    let (rel, root) = check(cx, file)?;
    refuse_replaced(&file.dir, &root).await?;
    refuse_own(cx, &file.dir, &root, &rel).await?;
    let (load, replaced) = {
        let Some(session) = cx.upstream.as_ref() else {
            return Err(Refusal::new(
                ErrorCode::UnknownSession,
                "no open upstream session",
            ));
        };
        let replaced = session
            .paths
            .get(&(file.dir.clone(), rel.to_string()))
            .copied();
        (session.load, replaced)
    };
    let size = match file.action {
        UpstreamAction::Write => file.size,
        UpstreamAction::Delete => 0,
    };
    let upload = Upload {
        path: rel.as_str(),
        size,
        replaced: replaced.unwrap_or(0),
        replaces: replaced.is_some(),
    };
    cx.shared.staging.check_session(load, upload)?;
    // A deletion holds no content, but its record counts.
    let reservation = reserve(cx, upload).await?;
    create_session(cx).await?;
    Ok(Admitted {
        rel,
        root,
        reservation,
    })
}

/// Holds `upload`'s bytes of the total staged across pending sessions, or refuses it.
async fn reserve(cx: &mut Context, upload: Upload<'_>) -> Result<Reservation, Refusal> {
    let shared = std::sync::Arc::clone(&cx.shared);
    let pending = cx.query(|index| index.pending_bytes());
    shared
        .budget
        .reserve(&shared.staging, upload, pending)
        .await
}

/// Records the open session and makes its private directory, before its first file is staged:
/// a push whose every file is refused leaves nothing on E. The client's pending sessions are
/// counted again here, in the transaction that records this one
/// ([`zync_db::Index::create_session_within`]): other connections of the same client may be
/// opening theirs at this very moment.
async fn create_session(cx: &mut Context) -> Result<(), Refusal> {
    let Some((id, dir)) = cx
        .upstream
        .as_ref()
        .filter(|s| !s.created)
        .map(|s| (s.id.clone(), s.dir.clone()))
    else {
        return Ok(());
    };
    let client = cx.client_id.clone();
    let session = id.clone();
    let limit = cx.shared.staging.pending_sessions;
    // The row first, and on disk: a directory in the staging area that no row owns is litter
    // that `zync-apply gc` may remove at any time, while a session left `receiving` by a crash
    // is aborted, and its directory removed, when the daemon starts again. Its files' rows are
    // then written without waiting for the disk each: FINALIZE_UPSTREAM's commit, which waits,
    // makes them durable together with the staged status, after flushing the staged files.
    let refused = cx
        .query(move |index| {
            let refused = index.create_session_within(&session, &client, limit)?;
            if refused.is_none() {
                index.set_commits_wait(false)?;
            }
            Ok(refused)
        })
        .await?;
    if let Some(pending) = refused {
        return Err(cx.shared.staging.too_many_pending(&cx.client_id, pending));
    }
    if let Some(open) = cx.upstream.as_mut() {
        open.created = true;
    }
    // R's content waits here for review: the area and each session's directory are E's
    // user's only (invariant 8), whatever the daemon's umask, and made by E's user: another
    // user who made the area first would own what is staged and backed up in it.
    let made = tokio::task::spawn_blocking(move || {
        let area = dir.parent().unwrap_or(&dir);
        zync_fs::create_own_dir_all(area, &dir)
    })
    .await
    .map_err(|e| Refusal::new(ErrorCode::Internal, e.to_string()))?;
    made.map_err(|e| {
        Refusal::new(
            ErrorCode::Internal,
            format!("cannot create the staging directory on E: {e}"),
        )
    })?;
    tracing::debug!(session = %id, "upstream session recorded with its first file");
    Ok(())
}

/// Refuses a file for `root` while its path leads to another directory than the one the
/// daemon pinned at start (moved or replaced, or a directory above it swapped for a symlink
/// by another user): what E has there, which decides the conflict flag, would be read
/// elsewhere, and zync-apply would refuse to apply it anyway. Retryable: once the directory
/// is back, or the daemon restarted by a user who replaced it, the push goes through.
async fn refuse_replaced(dir: &str, root: &Path) -> Result<(), Refusal> {
    let path = root.to_path_buf();
    let opened = tokio::task::spawn_blocking(move || zync_fs::Dir::open_root(&path).map(drop))
        .await
        .map_err(|e| Refusal::new(ErrorCode::Internal, e.to_string()))?;
    match opened {
        Err(zync_fs::FsError::RootReplaced { .. }) => Err(Refusal::new(
            ErrorCode::Internal,
            format!(
                "served directory {dir} ({}) is no longer the directory zync-daemon started \
                 with (moved or replaced, or a directory above it swapped for a symlink): \
                 nothing is staged for it until it is back, or zync-daemon is restarted to \
                 serve the one there now",
                root.display()
            ),
        )),
        // Anything else is looked at where it matters (E's file, when the conflict is decided).
        Ok(()) | Err(_) => Ok(()),
    }
}

/// Refuses `rel` in `root` when it is one of the daemon's own files, or lies in its staging
/// area, under any name of its directory: R must never write E's database, token, config or
/// staged content, even through `zync-apply` (invariant 9 (docs/ARCHITECTURE.md)).
async fn refuse_own(cx: &Context, dir: &str, root: &Path, rel: &RelPath) -> Result<(), Refusal> {
    let shared = std::sync::Arc::clone(&cx.shared);
    let (root, probe) = (root.to_path_buf(), rel.clone());
    let what = tokio::task::spawn_blocking(move || shared.own.what_in(&root, &probe))
        .await
        .map_err(|e| Refusal::new(ErrorCode::Internal, e.to_string()))?;
    match what {
        None => Ok(()),
        Some(what) => Err(Refusal::new(
            ErrorCode::InvalidPath,
            format!("{dir}/{rel} is {what} on E; it is never accepted from R"),
        )),
    }
}

/// Checks the session, the directory, the path (invariant 3 (docs/ARCHITECTURE.md)), the
/// daemon's ignore rules and the checksums' form.
fn check(cx: &Context, file: &UpstreamFile) -> Result<(RelPath, PathBuf), Refusal> {
    cx.upstream
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
    if let Some(rule) = root.rules.ignoring_rule(&rel, false) {
        return Err(Refusal::new(
            ErrorCode::InvalidPath,
            format!("{rel} is ignored on E ({rule})"),
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
    Ok((rel, root.path.clone()))
}

/// Receives a write's content, decides the conflict flag and records the staged file.
async fn stage(
    cx: &mut Context,
    link: &mut Link,
    id: u64,
    file: UpstreamFile,
    frames: u64,
    admitted: Admitted,
) -> Result<Reply, Refusal> {
    let Admitted {
        rel,
        root,
        reservation,
    } = admitted;
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
    let (current, e_mode) = match &on_e {
        EState::Missing => (OnE::Missing, None),
        EState::File(sha, mode) => (OnE::File(sha), Some(*mode)),
        EState::Other => (OnE::Other, None),
    };
    let action = match file.action {
        UpstreamAction::Write => Action::Write,
        UpstreamAction::Delete => Action::Delete,
    };
    // No setuid/setgid/sticky bits from R: whoever holds the token must not plant them on E.
    let mode = file.mode & 0o777;
    let base_mode = base_mode(&file, e_mode);
    let mode_merge = zync_db::merge_mode(
        action,
        BaseMode::of(file.base_sha256.as_deref(), base_mode),
        mode,
        zync_fs::mask_mode(mode),
        e_mode,
    );
    let conflict = zync_db::is_conflict(
        action,
        file.base_sha256.as_deref(),
        file.sha256.as_deref(),
        current,
    ) || mode_merge == ModeMerge::Conflict;
    let staged = StagedFile {
        session_id,
        dir: file.dir.clone(),
        path: rel.to_string(),
        action,
        mode,
        size: file.size,
        mtime_ns: file.mtime_ns,
        sha256: file.sha256.clone(),
        base_sha256: file.base_sha256.clone(),
        base_mode,
        conflict,
        state: FileState::Staged,
        staged_name: (action == Action::Write).then_some(staged_name),
        backup_name: None,
        e_existed: !matches!(on_e, EState::Missing),
    };
    let staged_bytes = if action == Action::Write {
        file.size
    } else {
        0
    };
    let new_name = staged.staged_name.clone();
    let replaced = cx
        .query(move |index| index.replace_staged_file(&staged))
        .await?;
    // Recorded: the index counts its bytes from now on.
    reservation.recorded();
    if let Some(open) = cx.upstream.as_mut() {
        open.staged(&file.dir, rel.as_str(), staged_bytes);
    }
    // The same path sent again: its first staged file goes, and with it the room it took.
    if let Some(old) = replaced
        .and_then(|old| old.staged_name)
        .filter(|old| Some(old) != new_name.as_ref())
    {
        let old_path = session_dir.join(&old);
        let removed = tokio::task::spawn_blocking(move || std::fs::remove_file(&old_path))
            .await
            .unwrap_or_else(|e| Err(std::io::Error::other(e)));
        if let Err(e) = removed {
            tracing::warn!(path = %rel, "cannot remove the staged file {old} it replaces: {e}");
        }
    }
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
    let stall = cx.shared.staging.upload_stall;
    while got < frames {
        // A client that reserved room and then sends nothing must not keep it (invariant 9
        // (docs/ARCHITECTURE.md)): past the deadline the upload is dropped and the connection
        // closed, which aborts its session.
        let Ok(next) = tokio::time::timeout(stall, link.next()).await else {
            tracing::info!(client = %cx.client_id, path = %file.path, received, "closing a connection whose upload stalled (--upload-stall-timeout)");
            let refusal = cx.shared.staging.stalled(&file.path, received, file.size);
            cx.hang_up = Some(format!(
                "upload stalled: no content for {} s",
                stall.as_secs()
            ));
            failure = Some(refusal);
            break;
        };
        let frame = match next {
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

/// The base mode recorded with a staged file (invariant 5 (docs/ARCHITECTURE.md)): the one R
/// sent, with its base sha256. An older client sends none; then E's mode now (`e_mode`)
/// stands in for it, so a mode E's user sets after this push is never overwritten
/// silently, while one set before it cannot be told from R's change, and R's mode is applied
/// as before. A file new on R has no base.
fn base_mode(file: &UpstreamFile, e_mode: Option<u32>) -> Option<u32> {
    file.base_sha256.as_ref()?;
    file.base_mode.or(e_mode).map(|mode| mode & 0o777)
}

enum EState {
    Missing,
    /// A regular file: its sha256 and permission bits.
    File(String, u32),
    Other,
}

/// What E has at `rel` now, read from disk (the index may lag by a debounce). Read through the
/// root's directory handles: a parent another user on E swaps for a symlink cannot make the
/// daemon hash a file elsewhere, whose sha256 would reach R as the conflict flag.
fn e_state(root: &Path, rel: &RelPath) -> EState {
    let missing_or_other = || match zync_fs::lstat(&rel.to_path(root)) {
        Ok(Stat::Missing) => EState::Missing,
        _ => EState::Other,
    };
    let parent = match zync_fs::Dir::parent_of(root, rel) {
        Ok(parent) => parent,
        // The root's path leads to another directory than the one served: nothing there is
        // E's, and a look by path would look there.
        Err(zync_fs::FsError::RootReplaced { .. }) => return EState::Other,
        Err(_) => return missing_or_other(),
    };
    match parent.open_file_to_read(rel.file_name()) {
        Ok(Some(mut opened)) => {
            use std::os::unix::fs::PermissionsExt;
            let mode = match opened.file.metadata() {
                Ok(meta) => meta.permissions().mode() & 0o7777,
                Err(_) => return EState::Other,
            };
            match zync_fs::hash::hash_open(&mut opened.file, opened.size) {
                Ok((sha, _)) => EState::File(sha, mode),
                Err(_) => EState::Other,
            }
        }
        Ok(None) => match parent.lstat(rel.file_name()) {
            Ok(Stat::Missing) => EState::Missing,
            _ => EState::Other,
        },
        Err(_) => EState::Other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A root whose path leads to another directory than the pinned one takes no upload (a
    /// retryable refusal naming it); back in place, it takes them again.
    #[tokio::test]
    async fn a_root_swapped_for_a_symlink_takes_no_upload_until_it_is_back() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let root = tmp.path().join("docs");
        let theirs = tmp.path().join("theirs");
        std::fs::create_dir(&root).expect("mkdir");
        std::fs::create_dir(&theirs).expect("mkdir");
        zync_fs::pin_root(&root).expect("pin");
        assert!(refuse_replaced("docs", &root).await.is_ok());
        std::fs::rename(&root, tmp.path().join("docs.real")).expect("rename");
        std::os::unix::fs::symlink(&theirs, &root).expect("symlink");
        let refused = refuse_replaced("docs", &root).await.expect_err("swapped");
        assert_eq!(refused.code(), ErrorCode::Internal, "retryable");
        assert!(
            refused
                .message()
                .contains(&format!("docs ({})", root.display())),
            "{}",
            refused.message()
        );
        std::fs::remove_file(&root).expect("rm");
        std::fs::rename(tmp.path().join("docs.real"), &root).expect("rename back");
        assert!(refuse_replaced("docs", &root).await.is_ok());
    }

    /// The base mode recorded is R's when R sent one, E's when staged for an older client
    /// that did not, and none for a file new on R (whatever R claims).
    #[test]
    fn the_base_mode_is_r_s_or_e_s_when_staged_for_an_older_client() {
        let file = |base_sha256: Option<&str>, base_mode| UpstreamFile {
            session_id: "s".into(),
            dir: "code".into(),
            path: "deploy.sh".into(),
            action: UpstreamAction::Write,
            mode: 0o644,
            size: 0,
            mtime_ns: 0,
            sha256: Some("ab".repeat(32)),
            base_sha256: base_sha256.map(str::to_string),
            base_mode,
        };
        let base = "cd".repeat(32);
        let base = Some(base.as_str());
        assert_eq!(
            super::base_mode(&file(base, Some(0o100644)), Some(0o755)),
            Some(0o644)
        );
        assert_eq!(
            super::base_mode(&file(base, None), Some(0o4755)),
            Some(0o755)
        );
        assert_eq!(super::base_mode(&file(base, None), None), None);
        assert_eq!(
            super::base_mode(&file(None, Some(0o644)), Some(0o755)),
            None
        );
    }

    /// Another user on E swaps a directory of the tree for a symlink to a file of theirs
    /// while R pushes a path below it: what E has there is never the outside file (its
    /// sha256 would go back to R as the conflict flag, an oracle on any file the daemon can
    /// read).
    #[test]
    fn a_parent_swapped_for_a_symlink_never_makes_e_state_read_elsewhere() {
        let bait = zync_fs::race::Bait::new(b"ours\n", b"secret\n");
        let secret = zync_fs::hash::hash_bytes(b"secret\n");
        let rel = RelPath::parse("d/f").expect("rel");
        let d = bait.root.join("d");
        let ((leaked, files), swaps) = zync_fs::race::exchanging(&d, &bait.link, || {
            let (mut leaked, mut files) = (0, 0);
            for _ in 0..20_000 {
                match e_state(&bait.root, &rel) {
                    EState::File(sha, _) if sha == secret => leaked += 1,
                    EState::File(..) => files += 1,
                    _ => {}
                }
            }
            (leaked, files)
        });
        assert_eq!(leaked, 0, "the outside file was hashed {leaked} times");
        assert!(
            files > 0 && swaps > 0,
            "{files} files of the tree seen, {swaps} swaps"
        );
    }
}
