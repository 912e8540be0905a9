//! FLUSH: a barrier for `zync-client --wait`. The daemon takes a ticket in its index (the one
//! `zync-apply wait` takes through the database) and answers once the indexer has taken in
//! everything its watcher reported before the ticket (docs/ARCHITECTURE.md, "Barriers"): the
//! sequences in the answer then cover every change made on E before the request.

use std::time::Duration;

use zync_proto::{ErrorCode, Reply};

use crate::context::Context;
use crate::refusal::Refusal;

/// How long one FLUSH waits for the indexer before it is answered `busy` (the client asks
/// again until its own deadline): well within a client's stall timeout.
pub(crate) const FLUSH_LIMIT: Duration = Duration::from_secs(10);

/// Takes a ticket, waits for the indexer to answer it, then answers like GET_LAST_SEQUENCE.
pub(crate) async fn apply(cx: &mut Context) -> Result<Reply, Refusal> {
    let ticket = cx.query(|index| index.request_settle()).await?;
    let mut status = cx.shared.status.clone();
    match tokio::time::timeout(FLUSH_LIMIT, status.wait_for(|s| s.settled >= ticket)).await {
        Ok(Ok(_)) => {}
        Ok(Err(_)) => {
            return Err(Refusal::new(
                ErrorCode::Internal,
                "the daemon's indexer stopped; see the daemon's log",
            ))
        }
        Err(_) => {
            return Err(Refusal::new(
                ErrorCode::Busy,
                format!(
                    "the daemon's index has not settled within {}s (it is scanning or hashing a \
                     large change); ask again",
                    FLUSH_LIMIT.as_secs()
                ),
            ))
        }
    }
    Ok(Reply::Flush(super::status::sequences(cx, None).await?))
}
