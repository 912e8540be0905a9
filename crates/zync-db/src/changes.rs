//! The change log: one row per (dir name, path) with its metadata, a tombstone flag and the
//! sequence number of its last change, taken from one global counter. "Changes since N" is
//! then `WHERE seq > N ORDER BY seq` (docs/ARCHITECTURE.md, "State"). Read here; written
//! through an [`crate::IndexWriter`] (`writer.rs`).

use rusqlite::{Connection, OptionalExtension, Row};

use crate::error::{Context, Result};
use crate::sql::{saturating_i64, seq_from_sql, seq_to_sql, subtree_bounds, u64_from_sql};
use crate::Index;
use zync_proto::Kind;

/// What the daemon knows about a path when it last looked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EntryMeta {
    /// File, directory or symlink.
    pub kind: Kind,
    /// Size in bytes (for a symlink, whatever `lstat` says).
    pub size: u64,
    /// Modification time, nanoseconds since the Unix epoch.
    pub mtime_ns: i64,
    /// Permission bits (`st_mode`).
    pub mode: u32,
    /// Inode number, to tell a replaced file from a modified one.
    pub inode: u64,
    /// Hex SHA-256 of the content, for files.
    pub sha256: Option<String>,
    /// The link target, for symlinks.
    pub target: Option<String>,
}

/// One row of the index: a live path, or the tombstone of a deleted one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// The dir name (the daemon's name for one of its roots).
    pub dir: String,
    /// The path relative to that root, `/`-separated.
    pub path: String,
    /// The metadata; for a tombstone, the metadata it had when it was last live.
    pub meta: EntryMeta,
    /// Whether this is a tombstone.
    pub deleted: bool,
    /// The sequence number of the row's last change.
    pub seq: u64,
}

/// A live path as a scan compares it with the disk: its metadata without the content hash,
/// which a scan never needs (unchanged files are recognised by their metadata).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScanRow {
    /// The path relative to the dir's root, `/`-separated.
    pub path: String,
    /// File, directory or symlink.
    pub kind: Kind,
    /// Size in bytes.
    pub size: u64,
    /// Modification time, nanoseconds since the Unix epoch.
    pub mtime_ns: i64,
    /// Permission bits.
    pub mode: u32,
    /// Inode number.
    pub inode: u64,
    /// The link target, for symlinks.
    pub target: Option<String>,
}

/// A live path as the daemon serves its content: what the file on disk must still be (size
/// and mtime), its permission bits and its content hash. Read without the row's strings the
/// daemon does not need for that (a lookup per file served: building an [`Entry`] was half of
/// it, docs/PROFILE.md).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Served {
    /// File, directory or symlink.
    pub kind: Kind,
    /// Size in bytes.
    pub size: u64,
    /// Modification time, nanoseconds since the Unix epoch.
    pub mtime_ns: i64,
    /// Permission bits.
    pub mode: u32,
    /// The content hash, once known.
    pub sha256: Option<String>,
}

/// The columns [`entry_from_row`] reads, in its order (a macro, so that the statements below
/// are constants: the daemon looks a row up per file it serves).
macro_rules! entry_columns {
    () => {
        "dir, path, kind, size, mtime_ns, mode, inode, sha256, target, deleted, seq"
    };
}
const ENTRY_COLUMNS: &str = entry_columns!();

impl Index {
    /// The row for (dir, path), live or tombstone.
    ///
    /// # Errors
    ///
    /// An SQLite failure, or a row this build cannot read.
    pub fn get(&self, dir: &str, path: &str) -> Result<Option<Entry>> {
        get(self.conn(), dir, path)
    }

    /// The live (non-deleted) row of (dir, path) as the daemon serves it; `None` for no row or
    /// a tombstone.
    ///
    /// # Errors
    ///
    /// An SQLite failure, or a row this build cannot read.
    pub fn to_serve(&self, dir: &str, path: &str) -> Result<Option<Served>> {
        self.conn()
            .prepare_cached(
                "SELECT kind, size, mtime_ns, mode, sha256 FROM entries \
                 WHERE dir = ?1 AND path = ?2 AND deleted = 0",
            )
            .and_then(|mut stmt| {
                stmt.query_row((dir, path), |row| {
                    Ok(Served {
                        kind: row.get(0)?,
                        size: u64_from_sql(row.get(1)?),
                        mtime_ns: row.get(2)?,
                        mode: row.get(3)?,
                        sha256: row.get(4)?,
                    })
                })
                .optional()
            })
            .with_ctx(|| format!("reading the index entry {dir}/{path}"))
    }

    /// All live (non-deleted) entries of dir whose path equals `under` or starts with
    /// `under/` (None, or the empty path, = the whole dir), ordered by path. For scans.
    ///
    /// # Errors
    ///
    /// An SQLite failure, or a row this build cannot read.
    pub fn live_entries(&self, dir: &str, under: Option<&str>) -> Result<Vec<Entry>> {
        live_entries(self.conn(), dir, under)
    }

    /// The live entries of dir that [`Index::live_entries`] returns, without their content
    /// hashes, sorted by path in byte order (SQLite's BINARY collation, as `str` compares).
    /// Reading 100,000 rows for a daemon restart is a good part of its scan; this
    /// leaves out the columns a scan does not use.
    ///
    /// # Errors
    ///
    /// An SQLite failure, or a row this build cannot read.
    pub fn scan_rows(&self, dir: &str, under: Option<&str>) -> Result<Vec<ScanRow>> {
        select_live(
            self.conn(),
            "path, kind, size, mtime_ns, mode, inode, target",
            dir,
            under,
            |row| {
                Ok(ScanRow {
                    path: row.get(0)?,
                    kind: row.get(1)?,
                    size: u64_from_sql(row.get(2)?),
                    mtime_ns: row.get(3)?,
                    mode: row.get(4)?,
                    inode: u64_from_sql(row.get(5)?),
                    target: row.get(6)?,
                })
            },
        )
    }

    /// Changes with seq > since, ascending, at most limit; tombstones included. A path changed
    /// several times appears once, with its latest state.
    ///
    /// # Errors
    ///
    /// An SQLite failure, or a row this build cannot read.
    pub fn changes_since(&self, dir: &str, since: u64, limit: usize) -> Result<Vec<Entry>> {
        let sql = format!(
            "SELECT {ENTRY_COLUMNS} FROM entries WHERE dir = ?1 AND seq > ?2 ORDER BY seq LIMIT ?3"
        );
        let mut stmt = self
            .conn()
            .prepare_cached(&sql)
            .ctx("reading the changes")?;
        let rows = stmt
            .query_map(
                (dir, seq_to_sql(since), saturating_i64(limit as u64)),
                entry_from_row,
            )
            .with_ctx(|| format!("reading the changes of {dir} since {since}"))?;
        rows.collect::<rusqlite::Result<_>>()
            .with_ctx(|| format!("reading the changes of {dir} since {since}"))
    }

    /// The global sequence counter: the last sequence number given out (0 for a new index).
    ///
    /// # Errors
    ///
    /// An SQLite failure.
    pub fn last_seq(&self) -> Result<u64> {
        last_seq(self.conn())
    }

    /// The highest seq among dir's rows (0 if it has none).
    ///
    /// # Errors
    ///
    /// An SQLite failure.
    pub fn dir_last_seq(&self, dir: &str) -> Result<u64> {
        self.conn()
            .query_row(
                "SELECT coalesce(max(seq), 0) FROM entries WHERE dir = ?1",
                [dir],
                |row| row.get::<_, i64>(0),
            )
            .map(seq_from_sql)
            .with_ctx(|| format!("reading the last sequence of {dir}"))
    }

    /// How many live (non-deleted) entries dir has.
    ///
    /// # Errors
    ///
    /// An SQLite failure.
    pub fn live_count(&self, dir: &str) -> Result<u64> {
        self.conn()
            .query_row(
                "SELECT count(*) FROM entries WHERE dir = ?1 AND deleted = 0",
                [dir],
                |row| row.get::<_, i64>(0),
            )
            .map(seq_from_sql)
            .with_ctx(|| format!("counting the entries of {dir}"))
    }
}

pub(crate) fn get(conn: &Connection, dir: &str, path: &str) -> Result<Option<Entry>> {
    const SQL: &str = concat!(
        "SELECT ",
        entry_columns!(),
        " FROM entries WHERE dir = ?1 AND path = ?2"
    );
    conn.prepare_cached(SQL)
        .and_then(|mut stmt| stmt.query_row((dir, path), entry_from_row).optional())
        .with_ctx(|| format!("reading the index entry {dir}/{path}"))
}

pub(crate) fn live_entries(
    conn: &Connection,
    dir: &str,
    under: Option<&str>,
) -> Result<Vec<Entry>> {
    select_live(conn, ENTRY_COLUMNS, dir, under, entry_from_row)
}

/// `columns` of the live rows of dir whose path equals `under` or starts with `under/` (None,
/// or the empty path, = the whole dir), ordered by path.
fn select_live<T>(
    conn: &Connection,
    columns: &str,
    dir: &str,
    under: Option<&str>,
    map: impl FnMut(&Row<'_>) -> rusqlite::Result<T>,
) -> Result<Vec<T>> {
    let context = || match under {
        Some(under) if !under.is_empty() => format!("listing the entries of {dir} under {under}"),
        _ => format!("listing the entries of {dir}"),
    };
    match under {
        Some(under) if !under.is_empty() => {
            // Not LIKE: it ignores case and treats '%' and '_' as wildcards. Every path below
            // `under` sorts between "under/" and "under0", as '0' follows '/' (BINARY order).
            // The outer range [under, under0) lets SQLite search the primary key instead of
            // scanning the whole dir; the OR then drops siblings such as "under.txt".
            let (low, high) = subtree_bounds(under);
            let sql = format!(
                "SELECT {columns} FROM entries
                 WHERE dir = ?1 AND path >= ?2 AND path < ?4 AND (path = ?2 OR path > ?3)
                   AND deleted = 0
                 ORDER BY path"
            );
            let mut stmt = conn.prepare_cached(&sql).with_ctx(context)?;
            let rows = stmt
                .query_map((dir, under, &low, &high), map)
                .with_ctx(context)?;
            rows.collect::<rusqlite::Result<_>>().with_ctx(context)
        }
        _ => {
            let sql = format!(
                "SELECT {columns} FROM entries WHERE dir = ?1 AND deleted = 0 ORDER BY path"
            );
            let mut stmt = conn.prepare_cached(&sql).with_ctx(context)?;
            let rows = stmt.query_map([dir], map).with_ctx(context)?;
            rows.collect::<rusqlite::Result<_>>().with_ctx(context)
        }
    }
}

pub(crate) fn last_seq(conn: &Connection) -> Result<u64> {
    conn.query_row("SELECT last_seq FROM counter WHERE id = 1", [], |row| {
        row.get::<_, i64>(0)
    })
    .map(seq_from_sql)
    .ctx("reading the last sequence number")
}

fn entry_from_row(row: &Row<'_>) -> rusqlite::Result<Entry> {
    Ok(Entry {
        dir: row.get(0)?,
        path: row.get(1)?,
        meta: EntryMeta {
            kind: row.get(2)?,
            size: u64_from_sql(row.get(3)?),
            mtime_ns: row.get(4)?,
            mode: row.get(5)?,
            inode: u64_from_sql(row.get(6)?),
            sha256: row.get(7)?,
            target: row.get(8)?,
        },
        deleted: row.get(9)?,
        seq: seq_from_sql(row.get(10)?),
    })
}

/// Rows and helpers the tests of the index's files share.
#[cfg(test)]
pub(crate) mod fixtures {
    use super::*;

    pub(crate) fn file(size: u64) -> EntryMeta {
        EntryMeta {
            kind: Kind::File,
            size,
            mtime_ns: 1_700_000_000_000_000_000 + size as i64,
            mode: 0o644,
            inode: 1000 + size,
            sha256: Some(format!("{size:064x}")),
            target: None,
        }
    }

    pub(crate) fn dir_meta() -> EntryMeta {
        EntryMeta {
            kind: Kind::Dir,
            size: 0,
            mtime_ns: 5,
            mode: 0o755,
            inode: 7,
            sha256: None,
            target: None,
        }
    }

    pub(crate) fn paths(entries: &[Entry]) -> Vec<&str> {
        entries.iter().map(|e| e.path.as_str()).collect()
    }

    /// Upserts each path as a small file in one committed writer.
    pub(crate) fn put(index: &mut Index, dir: &str, paths: &[&str]) {
        let mut w = index.writer().expect("writer");
        for (i, path) in paths.iter().enumerate() {
            w.upsert(dir, path, &file(i as u64)).expect("upsert");
        }
        w.commit().expect("commit");
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use proptest::prelude::*;

    use super::fixtures::*;
    use super::*;
    use crate::sql::depth;

    #[test]
    fn a_new_index_is_empty() {
        let index = Index::open_in_memory().expect("open");
        assert_eq!(index.last_seq().expect("last_seq"), 0);
        assert_eq!(index.dir_last_seq("docs").expect("dir_last_seq"), 0);
        assert_eq!(index.live_count("docs").expect("count"), 0);
        assert!(index
            .changes_since("docs", 0, 100)
            .expect("changes")
            .is_empty());
        assert!(index.get("docs", "a").expect("get").is_none());
    }

    /// What the daemon serves from is the live row, as `get` has it; a tombstone or no row
    /// is nothing to serve.
    #[test]
    fn to_serve_reads_the_live_row_as_get_does_and_nothing_for_a_tombstone() {
        let mut index = Index::open_in_memory().expect("open");
        let mut w = index.writer().expect("writer");
        w.upsert("docs", "a", &file(7)).expect("upsert");
        w.upsert("docs", "gone", &file(8)).expect("upsert");
        w.tombstone("docs", "gone").expect("tombstone");
        w.commit().expect("commit");
        let full = index.get("docs", "a").expect("get").expect("a row");
        let served = index
            .to_serve("docs", "a")
            .expect("to_serve")
            .expect("a row");
        assert_eq!(
            served,
            Served {
                kind: full.meta.kind,
                size: full.meta.size,
                mtime_ns: full.meta.mtime_ns,
                mode: full.meta.mode,
                sha256: full.meta.sha256,
            }
        );
        assert_eq!(index.to_serve("docs", "gone").expect("to_serve"), None);
        assert_eq!(index.to_serve("docs", "never").expect("to_serve"), None);
        assert_eq!(index.to_serve("pics", "a").expect("to_serve"), None);
    }

    #[test]
    fn every_change_gets_a_greater_seq_across_dirs() {
        let mut index = Index::open_in_memory().expect("open");
        let mut w = index.writer().expect("writer");
        let seqs = [
            w.upsert("docs", "a", &file(1)).expect("upsert"),
            w.upsert("pics", "a", &file(2)).expect("upsert"),
            w.tombstone("docs", "a")
                .expect("tombstone")
                .expect("was live"),
            w.upsert("docs", "a", &file(3)).expect("upsert"),
            w.upsert("pics", "b", &file(4)).expect("upsert"),
        ];
        assert_eq!(w.commit().expect("commit"), 5);
        assert_eq!(seqs, [1, 2, 3, 4, 5]);
        // A later writer continues from the stored counter.
        let mut w = index.writer().expect("writer");
        assert_eq!(w.upsert("pics", "c", &file(5)).expect("upsert"), 6);
        w.commit().expect("commit");
        assert_eq!(index.last_seq().expect("last_seq"), 6);
        assert_eq!(index.dir_last_seq("docs").expect("docs"), 4);
        assert_eq!(index.dir_last_seq("pics").expect("pics"), 6);
    }

    #[test]
    fn changes_since_returns_one_row_per_path_changed_after_n() {
        let mut index = Index::open_in_memory().expect("open");
        put(&mut index, "docs", &["a", "b", "c"]); // 1, 2, 3
        put(&mut index, "other", &["x"]); // 4
        let mut w = index.writer().expect("writer");
        w.upsert("docs", "b", &file(10)).expect("b again"); // 5
        w.upsert("docs", "b", &file(11)).expect("b a third time"); // 6
        w.tombstone("docs", "c").expect("tombstone"); // 7
        w.upsert("docs", "d", &file(12)).expect("d"); // 8
        w.commit().expect("commit");

        let changes = index.changes_since("docs", 3, 100).expect("changes");
        let got: Vec<(&str, u64, bool)> = changes
            .iter()
            .map(|e| (e.path.as_str(), e.seq, e.deleted))
            .collect();
        assert_eq!(got, [("b", 6, false), ("c", 7, true), ("d", 8, false)]);
        assert_eq!(changes[0].meta, file(11), "b carries its latest metadata");
        assert_eq!(changes[0].dir, "docs");

        let all = index.changes_since("docs", 0, 100).expect("all");
        assert_eq!(paths(&all), ["a", "b", "c", "d"]);
        assert!(index
            .changes_since("docs", 8, 100)
            .expect("none")
            .is_empty());
        let limited = index.changes_since("docs", 0, 2).expect("limited");
        assert_eq!(paths(&limited), ["a", "b"]);
        assert!(index
            .changes_since("docs", u64::MAX, 100)
            .expect("beyond")
            .is_empty());
        assert_eq!(
            paths(&index.changes_since("other", 0, 100).expect("other")),
            ["x"]
        );
    }

    #[test]
    fn live_entries_matches_the_subtree_exactly() {
        let mut index = Index::open_in_memory().expect("open");
        put(
            &mut index,
            "docs",
            &[
                "a_b", "a_b/x", "axb/y", "A_B/z", "a_b.txt", "a_b/c/d", "a_bc", "gone",
            ],
        );
        let mut w = index.writer().expect("writer");
        w.upsert("docs", "a_b/old", &file(1)).expect("upsert");
        w.tombstone("docs", "a_b/old").expect("tombstone");
        w.commit().expect("commit");
        put(&mut index, "pics", &["a_b/p"]);

        let under = index.live_entries("docs", Some("a_b")).expect("under");
        assert_eq!(paths(&under), ["a_b", "a_b/c/d", "a_b/x"]);
        let leaf = index.live_entries("docs", Some("a_b/x")).expect("leaf");
        assert_eq!(paths(&leaf), ["a_b/x"]);
        let whole = index.live_entries("docs", None).expect("whole");
        assert_eq!(whole.len(), 8);
        assert_eq!(index.live_entries("docs", Some("")).expect("empty"), whole);
        assert!(index
            .live_entries("docs", Some("nope"))
            .expect("nope")
            .is_empty());
    }

    #[test]
    fn scan_rows_are_the_live_entries_without_hashes_in_byte_order() {
        let mut index = Index::open_in_memory().expect("open");
        put(
            &mut index,
            "docs",
            &[
                "a_b", "a_b/x", "a_b.txt", "a_b/c/d", "a_bc", "gone", "B", "a-b",
            ],
        );
        let mut w = index.writer().expect("writer");
        w.tombstone("docs", "gone").expect("tombstone");
        let link = EntryMeta {
            kind: Kind::Symlink,
            size: 3,
            mtime_ns: 9,
            mode: 0o777,
            inode: u64::MAX,
            sha256: None,
            target: Some("a_b".into()),
        };
        w.upsert("docs", "link", &link).expect("upsert");
        w.commit().expect("commit");
        put(&mut index, "pics", &["a_b/p"]);
        for under in [None, Some("a_b"), Some("a_b/x"), Some("nope")] {
            let live = index.live_entries("docs", under).expect("live");
            let rows = index.scan_rows("docs", under).expect("rows");
            let want: Vec<ScanRow> = live
                .iter()
                .map(|e| ScanRow {
                    path: e.path.clone(),
                    kind: e.meta.kind,
                    size: e.meta.size,
                    mtime_ns: e.meta.mtime_ns,
                    mode: e.meta.mode,
                    inode: e.meta.inode,
                    target: e.meta.target.clone(),
                })
                .collect();
            assert_eq!(rows, want, "under {under:?}");
            let mut sorted: Vec<&str> = rows.iter().map(|r| r.path.as_str()).collect();
            sorted.sort_unstable();
            assert_eq!(paths_of(&rows), sorted, "byte order, under {under:?}");
        }
        assert_eq!(
            paths_of(&index.scan_rows("docs", None).expect("rows")),
            ["B", "a-b", "a_b", "a_b.txt", "a_b/c/d", "a_b/x", "a_bc", "link"]
        );
    }

    #[test]
    fn metadata_round_trips_including_huge_numbers() {
        let mut index = Index::open_in_memory().expect("open");
        let meta = EntryMeta {
            kind: Kind::Symlink,
            size: u64::MAX,
            mtime_ns: -12,
            mode: 0o120_777,
            inode: u64::MAX - 1,
            sha256: None,
            target: Some("../elsewhere".into()),
        };
        let mut w = index.writer().expect("writer");
        w.upsert("docs", "link", &meta).expect("upsert");
        w.commit().expect("commit");
        let got = index.get("docs", "link").expect("get").expect("row");
        assert_eq!(got.meta, meta);
    }

    fn paths_of(rows: &[ScanRow]) -> Vec<&str> {
        rows.iter().map(|r| r.path.as_str()).collect()
    }
    #[derive(Debug, Clone)]
    enum Op {
        Upsert { dir: usize, path: usize, size: u64 },
        Tombstone { dir: usize, path: usize },
        TombstoneTree { dir: usize, path: usize },
    }

    const DIRS: [&str; 2] = ["docs", "pics"];
    const PATHS: [&str; 6] = ["a", "a/b", "a/b/c", "a/bc", "b", "b/a"];

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            3 => (0..DIRS.len(), 0..PATHS.len(), 0u64..4)
                .prop_map(|(dir, path, size)| Op::Upsert { dir, path, size }),
            2 => (0..DIRS.len(), 0..PATHS.len()).prop_map(|(dir, path)| Op::Tombstone { dir, path }),
            1 => (0..DIRS.len(), 0..PATHS.len())
                .prop_map(|(dir, path)| Op::TombstoneTree { dir, path }),
        ]
    }

    proptest! {
        /// The change log is the latest state of every path ever touched, in seq order, with
        /// seqs from one counter: nothing lost, nothing repeated.
        #[test]
        fn the_change_log_is_the_last_operation_per_path(
            batches in prop::collection::vec(prop::collection::vec(op(), 0..12), 1..5)
        ) {
            let mut index = Index::open_in_memory().expect("open");
            // The model: (dir, path) -> (live meta, or None for a tombstone; seq).
            let mut model: BTreeMap<(&str, &str), (Option<EntryMeta>, u64)> = BTreeMap::new();
            let mut last = 0u64;
            for batch in &batches {
                let mut w = index.writer().expect("writer");
                for op in batch {
                    match *op {
                        Op::Upsert { dir, path, size } => {
                            let seq = w.upsert(DIRS[dir], PATHS[path], &file(size)).expect("upsert");
                            prop_assert!(seq > last, "seq {} after {}", seq, last);
                            last = seq;
                            model.insert((DIRS[dir], PATHS[path]), (Some(file(size)), seq));
                        }
                        Op::Tombstone { dir, path } => {
                            let key = (DIRS[dir], PATHS[path]);
                            let was_live = matches!(model.get(&key), Some((Some(_), _)));
                            let got = w.tombstone(key.0, key.1).expect("tombstone");
                            prop_assert_eq!(got.is_some(), was_live);
                            if let Some(seq) = got {
                                prop_assert!(seq > last, "seq {} after {}", seq, last);
                                last = seq;
                                let meta = model[&key].0.clone();
                                prop_assert!(meta.is_some());
                                model.insert(key, (None, seq));
                            }
                        }
                        Op::TombstoneTree { dir, path } => {
                            let root = PATHS[path];
                            let prefix = format!("{root}/");
                            let mut below: Vec<&str> = model
                                .iter()
                                .filter(|((d, p), (meta, _))| {
                                    *d == DIRS[dir] && meta.is_some()
                                        && (*p == root || p.starts_with(&prefix))
                                })
                                .map(|((_, p), _)| *p)
                                .collect();
                            let n = w.tombstone_tree(DIRS[dir], root).expect("tree");
                            prop_assert_eq!(n, below.len());
                            below.sort_by_key(|p| std::cmp::Reverse(depth(p)));
                            for p in below {
                                last += 1;
                                model.insert((DIRS[dir], p), (None, last));
                            }
                        }
                    }
                }
                let committed = w.commit().expect("commit");
                prop_assert_eq!(committed, last);
            }
            for dir in DIRS {
                let changes = index.changes_since(dir, 0, usize::MAX).expect("changes");
                let want: Vec<_> = {
                    let mut rows: Vec<_> = model
                        .iter()
                        .filter(|((d, _), _)| *d == dir)
                        .map(|((_, p), (meta, seq))| (p.to_string(), meta.is_none(), *seq))
                        .collect();
                    rows.sort_by_key(|row| row.2);
                    rows
                };
                let got: Vec<_> =
                    changes.iter().map(|e| (e.path.clone(), e.deleted, e.seq)).collect();
                prop_assert_eq!(&got, &want);
                for entry in &changes {
                    if let (Some(meta), _) = &model[&(dir, entry.path.as_str())] {
                        prop_assert_eq!(&entry.meta, meta);
                    }
                }
                prop_assert!(changes.windows(2).all(|w| w[0].seq < w[1].seq));
            }
        }
    }
}
