//! PREPARE_UPSTREAM: opens an upstream session on this connection. Nothing is recorded yet:
//! the session's row and private staging directory are made when its first file is staged
//! (`upstream_file.rs`), so a push whose every file E refuses leaves no trace. A client that
//! already has as many pending sessions as E allows is refused here, before it sends anything.

use zync_proto::{ErrorCode, PrepareUpstream, Reply, SessionReply};

use crate::context::Context;
use crate::handshake::text_problem;
use crate::refusal::Refusal;
use crate::staging::OpenSession;

/// The longest description of a session, in bytes: this client sends its host name (at most
/// 64 bytes on Linux).
const MAX_DESCRIPTION: usize = 256;

/// Opens the session; one at a time per connection.
pub(crate) async fn apply(cx: &mut Context, prepare: PrepareUpstream) -> Result<Reply, Refusal> {
    if cx.upstream.is_some() {
        return Err(Refusal::new(
            ErrorCode::BadRequest,
            "an upstream session is already open on this connection; finalize it first",
        ));
    }
    if let Some(message) = prepare
        .description
        .as_deref()
        .and_then(|d| text_problem("description", d, MAX_DESCRIPTION))
    {
        return Err(Refusal::new(ErrorCode::BadRequest, message));
    }
    check_pending(cx).await?;
    let id = uuid::Uuid::new_v4().to_string();
    let dir = zync_db::session_dir(&cx.shared.db_path, &id);
    // Debug, not info: a session opened and finalized empty, again and again, would otherwise
    // fill E's log; a session that staged files is logged when it is finalized.
    tracing::debug!(session = %id, description = ?prepare.description, "upstream session opened");
    cx.upstream = Some(OpenSession::new(id.clone(), dir));
    Ok(Reply::PrepareUpstream(SessionReply { session_id: id }))
}

/// Refuses a client that has as many pending sessions on E as `--max-pending-sessions` allows.
pub(crate) async fn check_pending(cx: &mut Context) -> Result<(), Refusal> {
    let client = cx.client_id.clone();
    let pending = cx
        .query(move |index| index.pending_sessions_of(&client))
        .await?;
    cx.shared.staging.check_pending(&cx.client_id, pending)
}
