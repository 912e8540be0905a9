//! The paths each served directory ignores, with the rule that ignores each: what E does not
//! send is never a secret (`zync-apply status`, and `zync-client --status` through the
//! daemon). The indexer keeps them current: a scan replaces a directory's (or a subtree's)
//! rows in its last write transaction, a watch event adds or removes one. An ignored directory
//! is one row; nothing below it is ever stored, so a `node_modules` of 100,000 files costs
//! one row.

use rusqlite::{OptionalExtension, Row};

use crate::error::{Context, Result};
use crate::sql::{seq_from_sql, subtree_bounds};
use crate::{Index, IndexWriter};

// The rows are the wire's types: both status commands report them as they are.
pub use zync_proto::{IgnoredCount, IgnoredPath};

const COLUMNS: &str = "path, is_dir, pattern, source";

fn from_row(row: &Row<'_>) -> rusqlite::Result<IgnoredPath> {
    Ok(IgnoredPath {
        path: row.get(0)?,
        is_dir: row.get(1)?,
        pattern: row.get(2)?,
        source: row.get(3)?,
    })
}

impl IndexWriter<'_> {
    /// Replaces what `dir` ignores (`under` = None or the empty path) or what it ignores at
    /// and below `under` with `paths`, as a scan of that much found them.
    ///
    /// # Errors
    ///
    /// An SQLite failure; the transaction should then be dropped.
    pub fn replace_ignored(
        &mut self,
        dir: &str,
        under: Option<&str>,
        paths: &[IgnoredPath],
    ) -> Result<()> {
        match under.filter(|u| !u.is_empty()) {
            Some(under) => {
                self.unignore_tree(dir, under)?;
            }
            None => {
                self.tx
                    .prepare_cached("DELETE FROM ignored WHERE dir = ?1")
                    .and_then(|mut stmt| stmt.execute([dir]))
                    .with_ctx(|| format!("clearing the ignored paths of {dir}"))?;
            }
        }
        for path in paths {
            self.set_ignored(dir, path)?;
        }
        Ok(())
    }

    /// Records that `dir` ignores `path`, replacing what was recorded for it.
    ///
    /// # Errors
    ///
    /// An SQLite failure; the transaction should then be dropped.
    pub fn set_ignored(&mut self, dir: &str, path: &IgnoredPath) -> Result<()> {
        self.tx
            .prepare_cached(
                "INSERT OR REPLACE INTO ignored (dir, path, is_dir, pattern, source)
                 VALUES (?1, ?2, ?3, ?4, ?5)",
            )
            .and_then(|mut stmt| {
                stmt.execute((dir, &path.path, path.is_dir, &path.pattern, &path.source))
            })
            .with_ctx(|| format!("recording the ignored path {dir}/{}", path.path))?;
        Ok(())
    }

    /// Forgets that `dir` ignores `path` itself (now there and not ignored); what is recorded
    /// below it stays.
    ///
    /// # Errors
    ///
    /// An SQLite failure; the transaction should then be dropped.
    pub fn unignore(&mut self, dir: &str, path: &str) -> Result<()> {
        self.tx
            .prepare_cached("DELETE FROM ignored WHERE dir = ?1 AND path = ?2")
            .and_then(|mut stmt| stmt.execute((dir, path)))
            .with_ctx(|| format!("forgetting the ignored path {dir}/{path}"))?;
        Ok(())
    }

    /// Forgets that `dir` ignores `path` or anything below it (gone, or no longer ignored);
    /// returns how many were forgotten.
    ///
    /// # Errors
    ///
    /// An SQLite failure; the transaction should then be dropped.
    pub fn unignore_tree(&mut self, dir: &str, path: &str) -> Result<usize> {
        // The same range as the entries' subtree (changes.rs `select_live`): not LIKE.
        let (low, high) = subtree_bounds(path);
        self.tx
            .prepare_cached(
                "DELETE FROM ignored
                 WHERE dir = ?1 AND path >= ?2 AND path < ?4 AND (path = ?2 OR path > ?3)",
            )
            .and_then(|mut stmt| stmt.execute((dir, path, &low, &high)))
            .with_ctx(|| format!("forgetting the ignored paths {dir}/{path}"))
    }
}

impl Index {
    /// What is recorded about `path` being ignored in `dir`, if anything.
    ///
    /// # Errors
    ///
    /// An SQLite failure.
    pub fn ignored_path(&self, dir: &str, path: &str) -> Result<Option<IgnoredPath>> {
        self.conn()
            .prepare_cached(&format!(
                "SELECT {COLUMNS} FROM ignored WHERE dir = ?1 AND path = ?2"
            ))
            .and_then(|mut stmt| stmt.query_row((dir, path), from_row).optional())
            .with_ctx(|| format!("reading the ignored path {dir}/{path}"))
    }

    /// How many paths of `dir` each rule ignores, most first (then by pattern and source).
    ///
    /// # Errors
    ///
    /// An SQLite failure.
    pub fn ignored_counts(&self, dir: &str) -> Result<Vec<IgnoredCount>> {
        let context = || format!("counting the ignored paths of {dir}");
        let mut stmt = self
            .conn()
            .prepare_cached(
                "SELECT pattern, source, count(*) AS n FROM ignored WHERE dir = ?1
                 GROUP BY pattern, source ORDER BY n DESC, pattern, source",
            )
            .with_ctx(context)?;
        let rows = stmt
            .query_map([dir], |row| {
                Ok(IgnoredCount {
                    pattern: row.get(0)?,
                    source: row.get(1)?,
                    count: seq_from_sql(row.get(2)?),
                })
            })
            .with_ctx(context)?;
        rows.collect::<rusqlite::Result<_>>().with_ctx(context)
    }

    /// The first `limit` paths `dir` ignores, by path.
    ///
    /// # Errors
    ///
    /// An SQLite failure.
    pub fn ignored_paths(&self, dir: &str, limit: usize) -> Result<Vec<IgnoredPath>> {
        let context = || format!("listing the ignored paths of {dir}");
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let mut stmt = self
            .conn()
            .prepare_cached(&format!(
                "SELECT {COLUMNS} FROM ignored WHERE dir = ?1 ORDER BY path LIMIT ?2"
            ))
            .with_ctx(context)?;
        let rows = stmt.query_map((dir, limit), from_row).with_ctx(context)?;
        rows.collect::<rusqlite::Result<_>>().with_ctx(context)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ig(path: &str, is_dir: bool, pattern: &str, source: &str) -> IgnoredPath {
        IgnoredPath {
            path: path.into(),
            is_dir,
            pattern: pattern.into(),
            source: source.into(),
        }
    }

    fn listed(index: &Index, dir: &str) -> Vec<String> {
        index
            .ignored_paths(dir, 100)
            .expect("list")
            .into_iter()
            .map(|p| p.path)
            .collect()
    }

    #[test]
    fn a_scan_replaces_the_set_events_add_and_remove_and_counts_go_by_rule() {
        let mut index = Index::open_in_memory().expect("open");
        let mut w = index.writer().expect("writer");
        w.replace_ignored(
            "code",
            None,
            &[
                ig("build", true, "build/", "built-in"),
                ig("a/x.pyc", false, "*.pyc", "built-in"),
                ig("a/y.pyc", false, "*.pyc", "built-in"),
                ig("proj/n.tmp", false, "*.tmp", "proj/.zyncignore"),
                ig("proj_x/k.tmp", false, "*.tmp", "proj/.zyncignore"),
            ],
        )
        .expect("replace");
        w.replace_ignored(
            "docs",
            None,
            &[ig("node_modules", true, "node_modules/", "built-in")],
        )
        .expect("other dir");
        w.commit().expect("commit");
        let counts = index.ignored_counts("code").expect("counts");
        assert_eq!(
            counts,
            [
                IgnoredCount {
                    pattern: "*.pyc".into(),
                    source: "built-in".into(),
                    count: 2
                },
                IgnoredCount {
                    pattern: "*.tmp".into(),
                    source: "proj/.zyncignore".into(),
                    count: 2
                },
                IgnoredCount {
                    pattern: "build/".into(),
                    source: "built-in".into(),
                    count: 1
                },
            ]
        );
        assert_eq!(
            index.ignored_paths("code", 2).expect("first two"),
            [
                ig("a/x.pyc", false, "*.pyc", "built-in"),
                ig("a/y.pyc", false, "*.pyc", "built-in")
            ]
        );

        // A subtree scan replaces only what lies at or below it ("proj_x" is a sibling).
        let mut w = index.writer().expect("writer");
        w.replace_ignored(
            "code",
            Some("proj"),
            &[ig("proj/m.tmp", false, "*.tmp", "proj/.zyncignore")],
        )
        .expect("subtree");
        w.commit().expect("commit");
        assert_eq!(
            listed(&index, "code"),
            ["a/x.pyc", "a/y.pyc", "build", "proj/m.tmp", "proj_x/k.tmp"]
        );

        // Events: one added, one gone (with anything below it), one replaced.
        let mut w = index.writer().expect("writer");
        w.set_ignored("code", &ig("dist", true, "dist/", "built-in"))
            .expect("add");
        assert_eq!(w.unignore_tree("code", "a").expect("gone"), 2);
        assert_eq!(w.unignore_tree("code", "nothing").expect("absent"), 0);
        w.unignore("code", "proj").expect("only the path itself");
        w.set_ignored("code", &ig("build", true, "build", "--ignore"))
            .expect("replace");
        w.commit().expect("commit");
        assert_eq!(
            listed(&index, "code"),
            ["build", "dist", "proj/m.tmp", "proj_x/k.tmp"]
        );
        assert_eq!(
            index.ignored_path("code", "build").expect("read"),
            Some(ig("build", true, "build", "--ignore"))
        );
        assert_eq!(index.ignored_path("code", "a/x.pyc").expect("read"), None);

        // A full scan replaces the whole set of its dir and no other.
        let mut w = index.writer().expect("writer");
        w.replace_ignored("code", None, &[]).expect("empty");
        w.commit().expect("commit");
        assert!(listed(&index, "code").is_empty());
        assert_eq!(listed(&index, "docs"), ["node_modules"]);
    }

    #[test]
    fn a_rolled_back_scan_leaves_the_set_as_it_was() {
        let mut index = Index::open_in_memory().expect("open");
        let mut w = index.writer().expect("writer");
        w.set_ignored("code", &ig("build", true, "build/", "built-in"))
            .expect("add");
        w.commit().expect("commit");
        let mut w = index.writer().expect("writer");
        w.replace_ignored("code", None, &[]).expect("replace");
        drop(w);
        assert_eq!(listed(&index, "code"), ["build"]);
    }

    #[test]
    fn a_directory_no_longer_served_forgets_what_it_ignored() {
        let mut index = Index::open_in_memory().expect("open");
        let mut w = index.writer().expect("writer");
        w.set_ignored("code", &ig("build", true, "build/", "built-in"))
            .expect("add");
        w.set_ignored("old", &ig("dist", true, "dist/", "built-in"))
            .expect("add");
        w.commit().expect("commit");
        index
            .set_roots(&[crate::StoredRoot {
                dir: "code".into(),
                path: "/srv/code".into(),
                identity: None,
            }])
            .expect("roots");
        assert_eq!(listed(&index, "code"), ["build"]);
        assert!(listed(&index, "old").is_empty());
    }
}
