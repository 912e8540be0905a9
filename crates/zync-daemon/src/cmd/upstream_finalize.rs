//! FINALIZE_UPSTREAM: closes the session open on this connection; its files are made durable
//! and the session is marked `staged`, for review with `zync-apply`.

use zync_db::SessionStatus;
use zync_proto::{ErrorCode, FinalizeReply, FinalizeUpstream, Reply};

use crate::context::Context;
use crate::refusal::Refusal;

/// Stages the session.
pub(crate) async fn apply(cx: &mut Context, finalize: FinalizeUpstream) -> Result<Reply, Refusal> {
    match &cx.upstream {
        Some(s) if s.id == finalize.session_id => {}
        _ => {
            return Err(Refusal::new(
                ErrorCode::UnknownSession,
                format!(
                    "no open upstream session {} on this connection",
                    finalize.session_id
                ),
            ))
        }
    }
    if let Some(open) = &cx.upstream {
        // The staged files' names are made durable before the session counts as staged.
        let dir = open.dir.clone();
        tokio::task::spawn_blocking(move || zync_fs::fsync_dir(&dir))
            .await
            .map_err(|e| Refusal::new(ErrorCode::Internal, e.to_string()))?
            .map_err(|e| {
                Refusal::new(
                    ErrorCode::Internal,
                    format!("cannot stage the session: {e}"),
                )
            })?;
    }
    let id = finalize.session_id.clone();
    let session = cx
        .query(move |index| {
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
