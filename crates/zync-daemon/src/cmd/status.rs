//! GET_LAST_SEQUENCE: the daemon's highest sequence number, each directory's, whether a
//! scan is running, and which directories are unavailable (gone, emptied at once, unmounted).

use std::collections::BTreeMap;

use zync_proto::{LastSequence, Reply};

use crate::context::Context;
use crate::refusal::Refusal;

/// Answers GET_LAST_SEQUENCE from the indexer's status and the index.
pub(crate) async fn apply(cx: &mut Context) -> Result<Reply, Refusal> {
    Ok(Reply::GetLastSequence(sequences(cx).await?))
}

/// The sequences and scan state, as GET_LAST_SEQUENCE and FLUSH answer them.
pub(crate) async fn sequences(cx: &mut Context) -> Result<LastSequence, Refusal> {
    let status = *cx.shared.status.borrow();
    let names: Vec<String> = cx.shared.roots.iter().map(|r| r.name.to_string()).collect();
    let (dirs, unavailable) = cx
        .query(move |index| {
            let mut dirs = BTreeMap::new();
            let mut unavailable = BTreeMap::new();
            for name in names {
                if let Some(why) = index.unavailable(&name)? {
                    unavailable.insert(name.clone(), why);
                }
                dirs.insert(name.clone(), index.dir_last_seq(&name)?);
            }
            Ok((dirs, unavailable))
        })
        .await?;
    Ok(LastSequence {
        last_sequence: status.last_seq,
        dirs,
        scanning: status.scanning,
        unavailable,
    })
}
