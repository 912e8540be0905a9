//! GET_LAST_SEQUENCE: the daemon's highest sequence number, each directory's, whether a
//! scan is running, which directories are unavailable (gone, emptied at once, unmounted),
//! and, when asked, what each directory ignores (counts by rule, and a bounded list).

use std::collections::BTreeMap;

use zync_proto::{
    IgnoredPath, IgnoredReport, LastSequence, Reply, MAX_IGNORED_LISTED, MAX_TEXT_MESSAGE,
};

use crate::context::Context;
use crate::refusal::Refusal;

/// The bytes of listed ignored paths one reply may carry, over all directories: the rest of
/// the reply is small, so it stays well under [`MAX_TEXT_MESSAGE`] (paths may be long and
/// need escaping).
const LISTED_BYTES: usize = MAX_TEXT_MESSAGE / 4;

/// Answers GET_LAST_SEQUENCE from the indexer's status and the index. `ignored` asks for what
/// each directory ignores, listing up to that many paths of each.
pub(crate) async fn apply(cx: &mut Context, ignored: Option<u32>) -> Result<Reply, Refusal> {
    Ok(Reply::GetLastSequence(sequences(cx, ignored).await?))
}

/// The sequences and scan state, as GET_LAST_SEQUENCE and FLUSH answer them, with what each
/// directory ignores when `ignored` asks for it.
pub(crate) async fn sequences(
    cx: &mut Context,
    ignored: Option<u32>,
) -> Result<LastSequence, Refusal> {
    let status = *cx.shared.status.borrow();
    let names: Vec<String> = cx.shared.roots.iter().map(|r| r.name.to_string()).collect();
    let (dirs, unavailable, ignored) = cx
        .query(move |index| {
            let mut dirs = BTreeMap::new();
            let mut unavailable = BTreeMap::new();
            let mut reports = BTreeMap::new();
            let mut budget = LISTED_BYTES;
            for name in names {
                if let Some(why) = index.unavailable(&name)? {
                    unavailable.insert(name.clone(), why);
                }
                dirs.insert(name.clone(), index.dir_last_seq(&name)?);
                let Some(list) = ignored else {
                    continue;
                };
                let mut report = IgnoredReport::from_counts(index.ignored_counts(&name)?);
                if list > 0 {
                    let limit = list.min(MAX_IGNORED_LISTED) as usize;
                    let found = index.ignored_paths(&name, limit)?;
                    let listed = bounded(found, &mut budget);
                    report.more = report.total.saturating_sub(listed.len() as u64);
                    report.paths = Some(listed);
                }
                reports.insert(name, report);
            }
            Ok((dirs, unavailable, reports))
        })
        .await?;
    Ok(LastSequence {
        last_sequence: status.last_seq,
        dirs,
        scanning: status.scanning,
        unavailable,
        ignored,
    })
}

/// The paths of `found` that fit in what is left of `budget` (in order, stopping at the first
/// that does not fit), taking their room from it.
fn bounded(found: Vec<IgnoredPath>, budget: &mut usize) -> Vec<IgnoredPath> {
    let mut listed = Vec::new();
    for p in found {
        // Each byte may need escaping in JSON (up to six for a control character), plus the
        // field names.
        let room = 6 * (p.path.len() + p.pattern.len() + p.source.len()) + 64;
        if room > *budget {
            *budget = 0;
            break;
        }
        *budget -= room;
        listed.push(p);
    }
    listed
}

#[cfg(test)]
mod tests {
    use super::*;

    fn found(n: usize, len: usize) -> Vec<IgnoredPath> {
        (0..n)
            .map(|i| IgnoredPath {
                path: format!("{i:0len$}"),
                is_dir: false,
                pattern: "*".into(),
                source: "built-in".into(),
            })
            .collect()
    }

    #[test]
    fn the_listing_stops_where_the_reply_would_grow_too_large() {
        let mut budget = LISTED_BYTES;
        assert_eq!(bounded(found(10, 8), &mut budget).len(), 10);
        assert!(budget < LISTED_BYTES);
        // 1000 paths of 4,000 bytes would make a 24 MB reply: only part of them is listed,
        // and nothing more after the budget ran out.
        let mut budget = LISTED_BYTES;
        let listed = bounded(found(1000, 4000), &mut budget);
        assert!(
            !listed.is_empty() && listed.len() < 1000,
            "{}",
            listed.len()
        );
        let bytes: usize = listed.iter().map(|p| 6 * (p.path.len() + 10) + 64).sum();
        assert!(bytes <= LISTED_BYTES, "{bytes}");
        assert_eq!(budget, 0);
        assert!(bounded(found(1, 1), &mut budget).is_empty());
    }
}
