//! GET_LAST_SEQUENCE: the daemon's highest sequence number, each directory's, and whether a
//! scan is running.

use zync_proto::{LastSequence, Reply};

use crate::context::Context;
use crate::refusal::Refusal;

/// Answers GET_LAST_SEQUENCE from the indexer's status and the index.
pub(crate) async fn apply(cx: &mut Context) -> Result<Reply, Refusal> {
    let status = *cx.shared.status.borrow();
    let names: Vec<String> = cx.shared.roots.iter().map(|r| r.name.to_string()).collect();
    let dirs = cx
        .query(move |index| {
            names
                .into_iter()
                .map(|n| index.dir_last_seq(&n).map(|s| (n, s)))
                .collect::<Result<_, _>>()
        })
        .await?;
    Ok(Reply::GetLastSequence(LastSequence {
        last_sequence: status.last_seq,
        dirs,
        scanning: status.scanning,
    }))
}
