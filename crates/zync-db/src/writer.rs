//! Writing the change log: an [`IndexWriter`] is one write transaction. Every upsert or
//! tombstone takes the next number of the global counter inside it, so a rollback gives the
//! numbers back and a number is never handed out twice.

use rusqlite::{OptionalExtension, Transaction, TransactionBehavior};

use crate::changes::{get, last_seq, live_entries, Entry, EntryMeta};
use crate::error::{Context, Result};
use crate::sql::{depth, seq_to_sql, u64_to_sql};
use crate::Index;

/// One write transaction on the index. Dropping it without [`IndexWriter::commit`] rolls back
/// everything, sequence numbers included.
#[derive(Debug)]
pub struct IndexWriter<'a> {
    pub(crate) tx: Transaction<'a>,
    commits: &'a mut u64,
    /// The last sequence number this transaction handed out, once it handed out one: the
    /// counter is read at the first and stored once, at [`IndexWriter::commit`] (an UPDATE of
    /// the counter per row was a few percent of the indexer's work in a burst of new files).
    last: Option<u64>,
}

impl Index {
    /// Starts a write transaction. Sequence numbers come from one global counter kept in the
    /// database, so they increase across dirs and across restarts.
    ///
    /// The transaction takes the write lock at once (`BEGIN IMMEDIATE`), so a concurrent
    /// writer waits here, up to the busy timeout, rather than failing halfway through.
    ///
    /// # Errors
    ///
    /// An SQLite failure, such as another process holding the lock for more than 5 s.
    pub fn writer(&mut self) -> Result<IndexWriter<'_>> {
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .ctx("starting a write to the index")?;
        Ok(IndexWriter {
            tx,
            commits: &mut self.commits,
            last: None,
        })
    }
}

impl IndexWriter<'_> {
    /// Inserts or updates the row for (dir, path) as live with meta, giving it the next
    /// sequence number; returns it.
    ///
    /// # Errors
    ///
    /// An SQLite failure; the transaction should then be dropped.
    pub fn upsert(&mut self, dir: &str, path: &str, meta: &EntryMeta) -> Result<u64> {
        let seq = self.next_seq()?;
        let mut stmt = self
            .tx
            .prepare_cached(
                "INSERT INTO entries
                     (dir, path, kind, size, mtime_ns, mode, inode, sha256, target, deleted, seq)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, 0, ?10)
                 ON CONFLICT (dir, path) DO UPDATE SET
                     kind = excluded.kind, size = excluded.size, mtime_ns = excluded.mtime_ns,
                     mode = excluded.mode, inode = excluded.inode, sha256 = excluded.sha256,
                     target = excluded.target, deleted = 0, seq = excluded.seq",
            )
            .ctx("preparing to store an entry")?;
        stmt.execute((
            dir,
            path,
            meta.kind,
            u64_to_sql(meta.size),
            meta.mtime_ns,
            meta.mode,
            u64_to_sql(meta.inode),
            &meta.sha256,
            &meta.target,
            seq_to_sql(seq),
        ))
        .with_ctx(|| format!("storing the index entry {dir}/{path}"))?;
        Ok(seq)
    }

    /// Marks (dir, path) deleted with the next seq if it is live; returns `Some(seq)`, or
    /// `None` (taking no sequence number) when it is absent or already a tombstone.
    ///
    /// # Errors
    ///
    /// An SQLite failure; the transaction should then be dropped.
    pub fn tombstone(&mut self, dir: &str, path: &str) -> Result<Option<u64>> {
        let live = self
            .tx
            .query_row(
                "SELECT 1 FROM entries WHERE dir = ?1 AND path = ?2 AND deleted = 0",
                (dir, path),
                |_| Ok(()),
            )
            .optional()
            .with_ctx(|| format!("looking up the index entry {dir}/{path}"))?;
        if live.is_none() {
            return Ok(None);
        }
        self.mark_deleted(dir, path).map(Some)
    }

    /// Tombstones path and every live entry below it (path/...), deepest paths first so
    /// children get lower seqs than parents (a client applying them in order empties a
    /// directory before removing it); returns how many. The empty path means the whole dir.
    ///
    /// # Errors
    ///
    /// An SQLite failure; the transaction should then be dropped.
    pub fn tombstone_tree(&mut self, dir: &str, path: &str) -> Result<usize> {
        let mut paths: Vec<String> = live_entries(&self.tx, dir, Some(path))?
            .into_iter()
            .map(|entry| entry.path)
            .collect();
        paths.sort_by(|a, b| depth(b).cmp(&depth(a)).then_with(|| a.cmp(b)));
        for path in &paths {
            self.mark_deleted(dir, path)?;
        }
        Ok(paths.len())
    }

    /// The row for (dir, path) as this transaction sees it, live or tombstone.
    ///
    /// # Errors
    ///
    /// An SQLite failure, or a row this build cannot read.
    pub fn get(&self, dir: &str, path: &str) -> Result<Option<Entry>> {
        get(&self.tx, dir, path)
    }

    /// Commits, and returns the global last sequence number after the commit.
    ///
    /// # Errors
    ///
    /// An SQLite failure; nothing is committed then.
    pub fn commit(self) -> Result<u64> {
        let last = match self.last {
            Some(last) => {
                self.tx
                    .prepare_cached("UPDATE counter SET last_seq = ?1 WHERE id = 1")
                    .and_then(|mut stmt| stmt.execute([seq_to_sql(last)]))
                    .ctx("storing the last sequence number")?;
                last
            }
            None => last_seq(&self.tx)?,
        };
        self.tx.commit().ctx("committing to the index")?;
        *self.commits += 1;
        Ok(last)
    }

    fn mark_deleted(&mut self, dir: &str, path: &str) -> Result<u64> {
        let seq = self.next_seq()?;
        self.tx
            .prepare_cached("UPDATE entries SET deleted = 1, seq = ?3 WHERE dir = ?1 AND path = ?2")
            .and_then(|mut stmt| stmt.execute((dir, path, seq_to_sql(seq))))
            .with_ctx(|| format!("deleting the index entry {dir}/{path}"))?;
        Ok(seq)
    }

    /// Takes the next number from the global counter. The transaction holds the write lock
    /// from its start (`BEGIN IMMEDIATE`), so no other writer takes numbers meanwhile; the
    /// counter is stored at commit, inside the transaction, so a rollback gives the numbers
    /// back.
    fn next_seq(&mut self) -> Result<u64> {
        let last = match self.last {
            Some(last) => last,
            None => last_seq(&self.tx)?,
        };
        let next = last + 1;
        self.last = Some(next);
        Ok(next)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::changes::fixtures::*;

    #[test]
    fn tombstone_of_an_absent_path_takes_no_seq() {
        let mut index = Index::open_in_memory().expect("open");
        put(&mut index, "docs", &["a"]); // 1
        let mut w = index.writer().expect("writer");
        assert_eq!(w.tombstone("docs", "missing").expect("tombstone"), None);
        assert_eq!(w.tombstone("pics", "a").expect("other dir"), None);
        assert_eq!(w.tombstone("docs", "a").expect("tombstone"), Some(2));
        assert_eq!(
            w.tombstone("docs", "a").expect("again"),
            None,
            "already a tombstone"
        );
        assert_eq!(w.upsert("docs", "b", &file(1)).expect("upsert"), 3);
        assert_eq!(w.commit().expect("commit"), 3);
        let a = index.get("docs", "a").expect("get").expect("tombstone row");
        assert!(a.deleted);
        assert_eq!(a.seq, 2);
        assert_eq!(index.live_count("docs").expect("count"), 1);
    }

    #[test]
    fn upsert_revives_a_tombstone() {
        let mut index = Index::open_in_memory().expect("open");
        put(&mut index, "docs", &["a"]);
        let mut w = index.writer().expect("writer");
        w.tombstone("docs", "a").expect("tombstone");
        let seq = w.upsert("docs", "a", &dir_meta()).expect("upsert");
        w.commit().expect("commit");
        let a = index.get("docs", "a").expect("get").expect("row");
        assert_eq!(
            a,
            Entry {
                dir: "docs".into(),
                path: "a".into(),
                meta: dir_meta(),
                deleted: false,
                seq
            }
        );
    }

    #[test]
    fn tombstone_tree_deletes_children_first_and_leaves_lookalikes() {
        let mut index = Index::open_in_memory().expect("open");
        put(
            &mut index,
            "docs",
            &[
                "a", "a/b", "a/b/c", "a/b/c/d", "a/b/e", "a/bc", "a/b.txt", "a/b0", "b",
            ],
        );
        put(&mut index, "pics", &["a/b/c"]);
        let before = index.last_seq().expect("last_seq");
        let mut w = index.writer().expect("writer");
        assert_eq!(w.tombstone_tree("docs", "a/b").expect("tree"), 4);
        w.commit().expect("commit");

        let changes = index.changes_since("docs", before, 100).expect("changes");
        let got: Vec<(&str, bool)> = changes
            .iter()
            .map(|e| (e.path.as_str(), e.deleted))
            .collect();
        assert_eq!(
            got,
            [
                ("a/b/c/d", true),
                ("a/b/c", true),
                ("a/b/e", true),
                ("a/b", true)
            ],
            "deepest first, the root of the tree last"
        );
        let live = index.live_entries("docs", None).expect("live");
        assert_eq!(paths(&live), ["a", "a/b.txt", "a/b0", "a/bc", "b"]);
        assert_eq!(
            index.live_count("pics").expect("pics"),
            1,
            "other dirs untouched"
        );
    }

    #[test]
    fn tombstone_tree_counts_only_live_entries() {
        let mut index = Index::open_in_memory().expect("open");
        put(&mut index, "docs", &["t", "t/x", "t/y"]);
        let mut w = index.writer().expect("writer");
        w.tombstone("docs", "t/x").expect("tombstone");
        assert_eq!(w.tombstone_tree("docs", "t").expect("tree"), 2);
        assert_eq!(w.tombstone_tree("docs", "t").expect("again"), 0);
        assert_eq!(w.tombstone_tree("docs", "nothing").expect("absent"), 0);
        assert_eq!(
            w.commit().expect("commit"),
            6,
            "only 3 tombstones took a seq"
        );
    }

    #[test]
    fn a_transaction_stores_the_counter_once_whatever_it_numbers() {
        let mut index = Index::open_in_memory().expect("open");
        put(&mut index, "docs", &["a"]); // 1
        let before = index.conn().total_changes();
        let mut w = index.writer().expect("writer");
        for i in 0..100u64 {
            assert_eq!(
                w.upsert("docs", &format!("f{i:03}"), &file(i))
                    .expect("upsert"),
                i + 2
            );
        }
        assert_eq!(w.tombstone("docs", "a").expect("tombstone"), Some(102));
        assert_eq!(w.commit().expect("commit"), 102);
        // 100 rows stored, 1 tombstoned, and the counter written once (it was once per row).
        assert_eq!(index.conn().total_changes() - before, 102);
        assert_eq!(index.last_seq().expect("last_seq"), 102);
        let mut w = index.writer().expect("writer");
        assert_eq!(w.upsert("docs", "b", &file(1)).expect("upsert"), 103);
        w.commit().expect("commit");
        // A transaction that numbers nothing leaves the counter alone.
        let w = index.writer().expect("writer");
        assert_eq!(w.commit().expect("commit"), 103);
    }

    #[test]
    fn a_dropped_writer_leaves_nothing() {
        let mut index = Index::open_in_memory().expect("open");
        put(&mut index, "docs", &["a"]);
        {
            let mut w = index.writer().expect("writer");
            w.upsert("docs", "b", &file(1)).expect("upsert");
            w.tombstone("docs", "a").expect("tombstone");
            assert!(
                w.get("docs", "b").expect("get in tx").is_some(),
                "visible inside"
            );
        }
        assert_eq!(index.last_seq().expect("last_seq"), 1);
        assert!(index.get("docs", "b").expect("get").is_none());
        assert!(!index.get("docs", "a").expect("get").expect("a").deleted);
        let mut w = index.writer().expect("writer");
        assert_eq!(
            w.upsert("docs", "c", &file(2)).expect("upsert"),
            2,
            "seq 2 reused"
        );
        w.commit().expect("commit");
    }
}
