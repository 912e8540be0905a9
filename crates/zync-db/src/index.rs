//! The daemon's index database on machine E: [`Index`] owns the SQLite connection and the
//! index id, and keeps the served roots and the daemon's own settings. What else it stores has
//! its own file, each with its own `impl Index`: the change log (`changes.rs`, written through
//! `writer.rs`), the clients (`clients.rs`) and upstream staging (`staging.rs`).

use std::path::Path;

use rusqlite::{Connection, OptionalExtension, TransactionBehavior};

use crate::conn::{self, Synchronous};
use crate::error::{Context, DbError, Result};
use crate::migrate::{self, INDEX};
use crate::sql::{u64_from_sql, u64_to_sql};

/// The daemon's index database.
#[derive(Debug)]
pub struct Index {
    pub(crate) conn: Connection,
    index_id: String,
    /// Write transactions committed through this handle ([`Index::commits`]).
    pub(crate) commits: u64,
    /// Whether commits wait until they are on disk ([`Index::set_commits_wait`]).
    waits: std::cell::Cell<bool>,
}

impl Index {
    /// Opens the index at `path`, creating the file, its schema and a new index id if it does
    /// not exist yet.
    ///
    /// # Errors
    ///
    /// The file cannot be opened or created, is not an SQLite database, is another kind of
    /// database, or was made by a newer zync ([`crate::DbError::TooNew`]).
    pub fn open(path: &Path) -> Result<Index> {
        // FULL: a sequence number handed to a client must never be handed out again for other
        // content after a power cut, or that client would skip a change for good.
        Index::from_conn(conn::open_file(path, &INDEX, Synchronous::Full)?)
    }

    /// Opens an existing index read-only, beside a running daemon (WAL): never creates,
    /// upgrades or writes the file (`zync-apply status`).
    ///
    /// # Errors
    ///
    /// No file at `path`, not a zync index, or a schema older or newer than this build's.
    pub fn open_read_only(path: &Path) -> Result<Index> {
        let conn = conn::open_read_only(path, &INDEX)?;
        let index_id = migrate::read_database_id(&conn, "index_id")?;
        Ok(Index {
            conn,
            index_id,
            commits: 0,
            waits: std::cell::Cell::new(true),
        })
    }

    /// Opens a new, empty index in memory.
    ///
    /// # Errors
    ///
    /// Only if SQLite itself fails.
    pub fn open_in_memory() -> Result<Index> {
        Index::from_conn(conn::open_memory(&INDEX, Synchronous::Full)?)
    }

    fn from_conn(conn: Connection) -> Result<Index> {
        let index_id = migrate::database_id(&conn, "index_id")?;
        Ok(Index {
            conn,
            index_id,
            commits: 0,
            waits: std::cell::Cell::new(true),
        })
    }

    pub(crate) fn conn(&self) -> &Connection {
        &self.conn
    }

    /// Whether this handle's commits wait until they are on disk (SQLite `synchronous = FULL`,
    /// as every handle is opened) or not (`NORMAL`). In WAL mode a commit that does not wait
    /// becomes durable with the next one that does: its flush of the log covers every commit
    /// written before it. For rows that count only once a later, waiting commit marks them
    /// done, such as the files of an upstream session being received.
    ///
    /// # Errors
    ///
    /// An SQLite failure.
    pub fn set_commits_wait(&self, wait: bool) -> Result<()> {
        let pragma = if wait {
            Synchronous::Full
        } else {
            Synchronous::Normal
        }
        .pragma();
        self.conn
            .prepare_cached(pragma)
            .and_then(|mut stmt| stmt.execute([]))
            .with_ctx(|| format!("setting {pragma}"))?;
        self.waits.set(wait);
        Ok(())
    }

    /// Runs `write`, whose commits do not wait until they are on disk, then sets back how
    /// this handle commits. For what is kept for the status commands only (acknowledgements,
    /// presence): losing the last of it to a power cut shows an older state, never a false
    /// one, and a flush of the database per ACK_CHANGES was a few percent of the daemon's
    /// work while it served a burst. The next commit that waits (the indexer's, in WAL mode)
    /// makes it durable too.
    pub(crate) fn without_waiting<T>(
        &self,
        write: impl FnOnce(&Connection) -> Result<T>,
    ) -> Result<T> {
        let waits = self.waits.get();
        if waits {
            self.set_commits_wait(false)?;
        }
        let result = write(&self.conn);
        if waits {
            self.set_commits_wait(true)?;
        }
        result
    }

    /// How many write transactions were committed through this handle since it was opened:
    /// each is a flush of the database file (synchronous FULL), so a burst of changes must
    /// cost one per batch, not one per file.
    pub fn commits(&self) -> u64 {
        self.commits
    }

    /// Holds one read transaction until the returned guard is dropped, so that a run of
    /// lookups (a batch of GET_FILEs) takes the database's read lock once instead of once per
    /// lookup. Nothing may be written on this connection while it is held.
    ///
    /// # Errors
    ///
    /// An SQLite failure.
    pub fn read_snapshot(&self) -> Result<rusqlite::Transaction<'_>> {
        self.conn
            .unchecked_transaction()
            .ctx("starting a read of the index")
    }

    /// The index id: a UUID made once with the database. A client that sees a different one
    /// than it stored resyncs from 0.
    pub fn index_id(&self) -> &str {
        &self.index_id
    }

    /// Replaces the stored mapping of the daemon's roots (dir name, absolute path, and the
    /// directory the daemon pinned), so that other tools (zync-apply) can find them, and write
    /// only into the directories the daemon serves.
    ///
    /// # Errors
    ///
    /// An SQLite failure; nothing is changed then.
    pub fn set_roots(&mut self, roots: &[StoredRoot]) -> Result<()> {
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .ctx("starting to replace the roots")?;
        tx.execute("DELETE FROM roots", [])
            .ctx("clearing the old roots")?;
        for root in roots {
            let id = root.identity;
            tx.execute(
                "INSERT INTO roots (dir, path, dev, ino, born_ns) VALUES (?1, ?2, ?3, ?4, ?5)",
                (
                    &root.dir,
                    &root.path,
                    id.map(|id| u64_to_sql(id.dev)),
                    id.map(|id| u64_to_sql(id.ino)),
                    id.and_then(|id| id.born_ns),
                ),
            )
            .with_ctx(|| format!("storing the root {} = {}", root.dir, root.path))?;
        }
        // What a directory no longer served ignored is nobody's business any more.
        tx.execute(
            "DELETE FROM ignored WHERE dir NOT IN (SELECT dir FROM roots)",
            [],
        )
        .ctx("forgetting what directories no longer served ignored")?;
        tx.commit().ctx("committing the new roots")
    }

    /// The roots last given to [`Index::set_roots`], by dir name.
    ///
    /// # Errors
    ///
    /// An SQLite failure.
    pub fn roots(&self) -> Result<Vec<StoredRoot>> {
        let mut stmt = self
            .conn
            .prepare_cached("SELECT dir, path, dev, ino, born_ns FROM roots ORDER BY dir")
            .ctx("reading the roots")?;
        let rows = stmt
            .query_map([], |row| {
                let (dev, ino): (Option<i64>, Option<i64>) = (row.get(2)?, row.get(3)?);
                Ok(StoredRoot {
                    dir: row.get(0)?,
                    path: row.get(1)?,
                    identity: match (dev, ino) {
                        (Some(dev), Some(ino)) => Some(RootIdentity {
                            dev: u64_from_sql(dev),
                            ino: u64_from_sql(ino),
                            born_ns: row.get(4)?,
                        }),
                        _ => None,
                    },
                })
            })
            .ctx("reading the roots")?;
        rows.collect::<rusqlite::Result<_>>()
            .ctx("reading the roots")
    }

    /// A value the daemon keeps about itself (for example a root's device id), by key.
    ///
    /// # Errors
    ///
    /// An SQLite failure.
    pub fn setting(&self, key: &str) -> Result<Option<String>> {
        self.conn
            .query_row("SELECT value FROM meta WHERE key = ?1", [key], |row| {
                row.get(0)
            })
            .optional()
            .with_ctx(|| format!("reading the setting {key}"))
    }

    /// Stores a value under `key`, replacing the old one. Keys used by the database itself
    /// (`index_id`) are refused.
    ///
    /// # Errors
    ///
    /// An SQLite failure, or a reserved key.
    pub fn set_setting(&self, key: &str, value: &str) -> Result<()> {
        if key == "index_id" {
            return Err(DbError::InvalidName {
                what: "setting key",
                name: key.to_string(),
            });
        }
        self.conn
            .execute(
                "INSERT INTO meta (key, value) VALUES (?1, ?2)
                 ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                (key, value),
            )
            .with_ctx(|| format!("storing the setting {key}"))?;
        Ok(())
    }

    /// Records that the served directory `dir` is unavailable (gone, emptied at once or
    /// unmounted), with the reason shown to the user, or that it is available again (`None`).
    /// Kept as a `meta` row (`unavailable:DIR`), so `zync-apply status` reads it without a
    /// connection to the daemon and no schema change is needed.
    ///
    /// # Errors
    ///
    /// An SQLite failure.
    pub fn set_unavailable(&self, dir: &str, reason: Option<&str>) -> Result<()> {
        let key = format!("{UNAVAILABLE_PREFIX}{dir}");
        match reason {
            Some(reason) => self.set_setting(&key, reason),
            None => {
                self.conn
                    .execute("DELETE FROM meta WHERE key = ?1", [&key])
                    .with_ctx(|| format!("clearing the setting {key}"))?;
                Ok(())
            }
        }
    }

    /// Why the served directory `dir` is unavailable, or `None` when it is being served.
    ///
    /// # Errors
    ///
    /// An SQLite failure.
    pub fn unavailable(&self, dir: &str) -> Result<Option<String>> {
        self.setting(&format!("{UNAVAILABLE_PREFIX}{dir}"))
    }
}

/// One served directory as the daemon records it for other tools.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredRoot {
    /// The name clients use.
    pub dir: String,
    /// Its canonical absolute path.
    pub path: String,
    /// The directory the daemon pinned at that path when it started; `None` when an older
    /// daemon recorded the root.
    pub identity: Option<RootIdentity>,
}

/// Which directory a served root was when the daemon started (zync-fs's `RootId`, kept here
/// apart from it: the database does not depend on the file system layer).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RootIdentity {
    /// The device (`st_dev`).
    pub dev: u64,
    /// The inode number.
    pub ino: u64,
    /// The birth time in ns since the Unix epoch, where the file system keeps one.
    pub born_ns: Option<i64>,
}

/// The `meta` key prefix under which a directory's unavailability is kept.
const UNAVAILABLE_PREFIX: &str = "unavailable:";

#[cfg(test)]
mod tests {
    use super::*;
    use crate::changes::fixtures::{file, put};

    #[test]
    fn index_id_is_stable_across_reopen_and_new_per_database() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let path = tmp.path().join("index.db");
        let (id, last) = {
            let mut index = Index::open(&path).expect("create");
            put(&mut index, "docs", &["a", "b"]);
            (
                index.index_id().to_owned(),
                index.last_seq().expect("last_seq"),
            )
        };
        let reopened = Index::open(&path).expect("reopen");
        assert_eq!(reopened.index_id(), id);
        assert_eq!(reopened.last_seq().expect("last_seq"), last);
        let other = Index::open(&tmp.path().join("other.db")).expect("other");
        assert_ne!(other.index_id(), id);
        assert_ne!(Index::open_in_memory().expect("mem").index_id(), id);
    }

    #[test]
    fn a_read_snapshot_sees_one_state_and_never_holds_up_the_writer() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let path = tmp.path().join("sync.db");
        let mut writer = Index::open(&path).expect("create");
        put(&mut writer, "docs", &["a"]);
        let reader = Index::open(&path).expect("open");
        let snapshot = reader.read_snapshot().expect("snapshot");
        assert!(reader.get("docs", "a").expect("get").is_some());
        // The indexer commits while a batch of lookups holds its snapshot: not held up.
        let started = std::time::Instant::now();
        put(&mut writer, "docs", &["b"]);
        assert!(
            started.elapsed() < std::time::Duration::from_secs(1),
            "the writer waited {:?} for the reader",
            started.elapsed()
        );
        // The batch reads one state: the one it started with.
        assert_eq!(reader.get("docs", "b").expect("get"), None);
        drop(snapshot);
        assert!(reader.get("docs", "b").expect("get").is_some());
    }

    #[test]
    fn a_read_only_index_sees_a_writer_s_data_and_creates_nothing() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let path = tmp.path().join("sync.db");
        let err = Index::open_read_only(&path).expect_err("no file");
        assert!(
            !path.exists(),
            "a read-only open created {}",
            path.display()
        );
        assert!(err.to_string().contains("sync.db"), "{err}");

        let mut writer = Index::open(&path).expect("writer");
        let mut w = writer.writer().expect("write");
        w.upsert("docs", "a.txt", &file(3)).expect("upsert");
        w.commit().expect("commit");
        writer.client_connected("c1", None).expect("hello");
        let reader = Index::open_read_only(&path).expect("reader beside the writer");
        assert_eq!(reader.index_id(), writer.index_id());
        assert_eq!(reader.live_count("docs").expect("count"), 1);
        assert_eq!(reader.clients().expect("clients")[0].connections, 1);
        assert!(
            reader.client_connected("c2", None).is_err(),
            "a read-only index must refuse writes"
        );
    }

    fn root(dir: &str, path: &str, identity: Option<RootIdentity>) -> StoredRoot {
        StoredRoot {
            dir: dir.into(),
            path: path.into(),
            identity,
        }
    }

    /// The mapping is replaced whole; each root's identity comes back bit for bit (devices and
    /// inodes above `i64::MAX` included), with or without a birth time.
    #[test]
    fn set_roots_replaces_the_mapping_and_keeps_each_root_s_identity() {
        let mut index = Index::open_in_memory().expect("open");
        assert!(index.roots().expect("roots").is_empty());
        let id = |born_ns| RootIdentity {
            dev: u64::MAX - 1,
            ino: 1 << 63,
            born_ns,
        };
        index
            .set_roots(&[root("pics", "/p", None), root("docs", "/d", None)])
            .expect("set");
        let want = vec![
            root("docs", "/new/d", Some(id(Some(1_796_000_000_123_456_789)))),
            root("music", "/m", Some(id(None))),
            root("old", "/o", None),
        ];
        index.set_roots(&want).expect("replace");
        assert_eq!(index.roots().expect("roots"), want);
        assert_eq!(
            Index::open_in_memory()
                .expect("open")
                .roots()
                .expect("roots"),
            []
        );
    }

    #[test]
    fn a_directory_is_marked_unavailable_and_available_again() {
        let index = Index::open_in_memory().expect("open");
        assert_eq!(index.unavailable("code").expect("read"), None);
        index.set_unavailable("code", Some("gone")).expect("set");
        assert_eq!(
            index.unavailable("code").expect("read").as_deref(),
            Some("gone")
        );
        assert_eq!(index.unavailable("other").expect("read"), None);
        index.set_unavailable("code", None).expect("clear");
        assert_eq!(index.unavailable("code").expect("read"), None);
    }

    #[test]
    fn settings_round_trip_and_survive_a_reopen_but_not_the_index_id() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let path = tmp.path().join("i.db");
        let index = Index::open(&path).expect("open");
        assert_eq!(index.setting("root_dev:code").expect("read"), None);
        index.set_setting("root_dev:code", "2049").expect("set");
        index.set_setting("root_dev:code", "2050").expect("replace");
        let id = index.index_id().to_string();
        assert!(index.set_setting("index_id", "forged").is_err());
        drop(index);
        let index = Index::open(&path).expect("reopen");
        assert_eq!(
            index.setting("root_dev:code").expect("read").as_deref(),
            Some("2050")
        );
        assert_eq!(index.index_id(), id);
    }
}
