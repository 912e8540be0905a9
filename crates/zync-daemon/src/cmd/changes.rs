//! GET_CHANGES: one page of a directory's change log after a sequence number, cut so that the
//! reply stays well under the text message limit whatever the path lengths.

use zync_proto::{Change, ChangesReply, GetChanges, Reply};

use crate::context::Context;
use crate::refusal::Refusal;

/// Answers GET_CHANGES from the index (`Index::changes_since`).
pub(crate) async fn apply(cx: &mut Context, get: GetChanges) -> Result<Reply, Refusal> {
    cx.served(&get.dir)?;
    let limit = get
        .limit
        .unwrap_or(zync_proto::DEFAULT_CHANGES_LIMIT)
        .clamp(1, zync_proto::MAX_CHANGES_LIMIT) as usize;
    let dir = get.dir.clone();
    let (mut rows, last_sequence) = cx
        .query(move |index| {
            let rows = index.changes_since(&dir, get.since, limit + 1)?;
            Ok((rows, index.dir_last_seq(&dir)?))
        })
        .await?;
    let mut more = rows.len() > limit;
    rows.truncate(limit);
    // Keep the reply well under the text message limit whatever the path lengths: JSON
    // overhead per change is under 300 bytes, plus its path and target, escaped.
    let mut bytes = 0usize;
    if let Some(cut) = rows.iter().position(|e| {
        // JSON may escape a byte as six (\u0001), so budget six per path byte.
        bytes += 300 + 6 * (e.path.len() + e.meta.target.as_ref().map_or(0, String::len));
        bytes > zync_proto::MAX_TEXT_MESSAGE / 2
    }) {
        rows.truncate(cut.max(1));
        more = true;
    }
    let changes = rows
        .into_iter()
        .map(|e| Change {
            seq: e.seq,
            path: e.path,
            kind: e.meta.kind,
            deleted: e.deleted,
            size: e.meta.size,
            mtime_ns: e.meta.mtime_ns,
            mode: e.meta.mode,
            sha256: e.meta.sha256,
            target: e.meta.target,
        })
        .collect();
    Ok(Reply::GetChanges(ChangesReply {
        dir: get.dir,
        changes,
        last_sequence,
        more,
    }))
}

#[cfg(test)]
mod tests {
    use zync_db::EntryMeta;
    use zync_proto::ErrorCode;

    use super::*;
    use crate::context::testing;
    use zync_proto::Kind;

    fn get(dir: &str, since: u64, limit: Option<u32>) -> GetChanges {
        GetChanges {
            dir: dir.to_string(),
            since,
            limit,
        }
    }

    /// Records `paths` in `dir` as files, then tombstones `gone`.
    fn record(db: &std::path::Path, dir: &str, paths: &[&str], gone: &str) {
        let mut index = zync_db::Index::open(db).expect("index");
        let mut w = index.writer().expect("writer");
        for (i, path) in paths.iter().enumerate() {
            let meta = EntryMeta {
                kind: Kind::File,
                size: i as u64,
                mtime_ns: 1,
                mode: 0o644,
                inode: i as u64,
                sha256: Some(format!("{i:064x}")),
                target: None,
            };
            w.upsert(dir, path, &meta).expect("upsert");
        }
        w.tombstone(dir, gone).expect("tombstone");
        w.commit().expect("commit");
    }

    fn reply(answer: Result<Reply, Refusal>) -> ChangesReply {
        match answer {
            Ok(Reply::GetChanges(reply)) => reply,
            Ok(other) => panic!("GET_CHANGES answered with {other:?}"),
            Err(refusal) => panic!("GET_CHANGES was refused: {}", refusal.message()),
        }
    }

    #[tokio::test]
    async fn changes_come_in_pages_in_sequence_order_with_tombstones() {
        let (mut cx, tmp) = testing::context("client-1");
        record(&tmp.path().join("sync.db"), "docs", &["a", "b", "c"], "a");
        record(&tmp.path().join("sync.db"), "other", &["x"], "x");

        let first = reply(apply(&mut cx, get("docs", 0, Some(2))).await);
        let seen: Vec<(&str, bool)> = first
            .changes
            .iter()
            .map(|c| (c.path.as_str(), c.deleted))
            .collect();
        assert_eq!(seen, [("b", false), ("c", false)]);
        assert!(first.more, "a third change is left");
        assert_eq!(first.changes[0].kind, zync_proto::Kind::File);

        let since = first.changes[1].seq;
        let rest = reply(apply(&mut cx, get("docs", since, None)).await);
        let seen: Vec<(&str, bool)> = rest
            .changes
            .iter()
            .map(|c| (c.path.as_str(), c.deleted))
            .collect();
        assert_eq!(seen, [("a", true)]);
        assert!(!rest.more);
        assert_eq!(rest.last_sequence, rest.changes[0].seq);
    }

    #[tokio::test]
    async fn changes_of_a_dir_not_served_are_refused() {
        let (mut cx, _tmp) = testing::context("client-1");
        let refusal = apply(&mut cx, get("other", 0, None))
            .await
            .expect_err("an unknown dir must be refused");
        assert_eq!(
            refusal.code(),
            ErrorCode::UnknownDir,
            "{}",
            refusal.message()
        );
    }
}
