//! FINALIZE_UPSTREAM: closes the session open on this connection; its files are made durable
//! and the session is marked `staged`, for review with `zync-apply`. A session with nothing
//! staged (every file refused, or none sent) is not kept: it leaves no row and no directory,
//! and the reply counts no files.

use zync_db::SessionStatus;
use zync_proto::{ErrorCode, FinalizeReply, FinalizeUpstream, Reply};

use crate::context::Context;
use crate::refusal::Refusal;

/// Stages the session.
pub(crate) async fn apply(cx: &mut Context, finalize: FinalizeUpstream) -> Result<Reply, Refusal> {
    let Some(open) = cx.upstream.as_ref().filter(|s| s.id == finalize.session_id) else {
        return Err(Refusal::new(
            ErrorCode::UnknownSession,
            format!(
                "no open upstream session {} on this connection",
                finalize.session_id
            ),
        ));
    };
    let (created, dir) = (open.created, open.dir.clone());
    let id = finalize.session_id.clone();
    let empty = || {
        Reply::FinalizeUpstream(FinalizeReply {
            session_id: finalize.session_id.clone(),
            files: 0,
            bytes: 0,
            conflicts: 0,
        })
    };
    if !created {
        cx.upstream = None;
        tracing::debug!(session = %id, "upstream session finalized with nothing staged; nothing kept");
        return Ok(empty());
    }
    let lookup = id.clone();
    let recorded = cx.query(move |index| index.session(&lookup)).await?;
    if recorded.is_none_or(|s| s.files == 0) {
        // Its uploads all failed: the row and the (empty) directory go.
        let gone = id.clone();
        cx.query(move |index| {
            index.set_commits_wait(true)?;
            index.delete_session(&gone)
        })
        .await?;
        let removed = tokio::task::spawn_blocking(move || zync_db::remove_dir(&dir))
            .await
            .unwrap_or_else(|e| Err(std::io::Error::other(e)));
        if let Err(e) = removed {
            tracing::warn!(session = %id, "cannot remove an empty session's directory: {e}");
        }
        cx.upstream = None;
        tracing::debug!(session = %id, "upstream session finalized with nothing staged; nothing kept");
        return Ok(empty());
    }
    // The staged files, and their names, are made durable before the session counts as staged.
    tokio::task::spawn_blocking(move || crate::staging::flush_session(&dir))
        .await
        .map_err(|e| Refusal::new(ErrorCode::Internal, e.to_string()))?
        .map_err(|e| {
            Refusal::new(
                ErrorCode::Internal,
                format!("cannot stage the session: {e}"),
            )
        })?;
    let session = cx
        .query(move |index| {
            // This commit waits for the disk, and with it every row of the session that was
            // written without waiting (`create_session` in upstream_file.rs).
            index.set_commits_wait(true)?;
            index.set_session_status(&id, SessionStatus::Staged)?;
            index.session(&id)
        })
        .await?
        .ok_or_else(|| Refusal::new(ErrorCode::Internal, "the session vanished from the index"))?;
    cx.upstream = None;
    tracing::info!(session = %session.id, files = session.files, conflicts = session.conflicts, "upstream session staged; review it with zync-apply");
    Ok(Reply::FinalizeUpstream(FinalizeReply {
        session_id: session.id,
        files: session.files,
        bytes: session.bytes,
        conflicts: session.conflicts,
    }))
}
