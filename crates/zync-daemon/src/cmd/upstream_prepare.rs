//! PREPARE_UPSTREAM: opens an upstream session on this connection, with a private staging
//! directory beside the database and a `receiving` row in the index.

use zync_proto::{ErrorCode, PrepareUpstream, Reply, SessionReply};

use crate::context::Context;
use crate::refusal::Refusal;
use crate::staging::OpenSession;

/// Opens the session; one at a time per connection.
pub(crate) async fn apply(cx: &mut Context, prepare: PrepareUpstream) -> Result<Reply, Refusal> {
    if cx.upstream.is_some() {
        return Err(Refusal::new(
            ErrorCode::BadRequest,
            "an upstream session is already open on this connection; finalize it first",
        ));
    }
    let id = uuid::Uuid::new_v4().to_string();
    let dir = zync_db::session_dir(&cx.shared.db_path, &id);
    // R's content waits here for review: the area and each session's directory are E's
    // user's only (invariant 8), whatever the daemon's umask.
    zync_fs::create_private_dir_all(&dir).map_err(|e| {
        Refusal::new(
            ErrorCode::Internal,
            format!("cannot create the staging directory on E: {e}"),
        )
    })?;
    let client = cx.client_id.clone();
    let session = id.clone();
    cx.query(move |index| index.create_session(&session, &client))
        .await?;
    tracing::info!(session = %id, description = ?prepare.description, "upstream session opened");
    cx.upstream = Some(OpenSession {
        id: id.clone(),
        dir,
        count: 0,
    });
    Ok(Reply::PrepareUpstream(SessionReply { session_id: id }))
}
