//! The daemon's index on machine E: one row per (dir name, path) with its metadata, a
//! tombstone flag and the sequence number of its last change, taken from one global counter.
//! "Changes since N" is then `WHERE seq > N ORDER BY seq` (DESIGN, "State").

use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use rusqlite::{Connection, OptionalExtension, Row, Transaction, TransactionBehavior};

use crate::conn::{self, Synchronous};
use crate::error::{Context, DbError, Result};
use crate::migrate::{self, INDEX};
use crate::Kind;

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

/// How far a client has told the daemon it got in one dir.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ack {
    /// The client's id.
    pub client_id: String,
    /// The dir name.
    pub dir: String,
    /// The highest sequence the client has acknowledged.
    pub seq: u64,
    /// When it last acknowledged, seconds since the Unix epoch.
    pub at_unix: i64,
}

/// What the daemon knows of one client's connections (issue 6).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientRecord {
    /// The client's id, as sent in HELLO.
    pub client_id: String,
    /// How many handshaken connections it has open now (0: not connected).
    pub connections: u64,
    /// Its first HELLO, seconds since the Unix epoch.
    pub first_seen_unix: i64,
    /// Its last HELLO or disconnect, seconds since the Unix epoch.
    pub last_seen_unix: i64,
    /// The version it announced in its last HELLO.
    pub client_version: Option<String>,
}

/// The daemon's index database.
#[derive(Debug)]
pub struct Index {
    conn: Connection,
    index_id: String,
}

/// One write transaction on the index. Dropping it without [`IndexWriter::commit`] rolls back
/// everything, sequence numbers included.
#[derive(Debug)]
pub struct IndexWriter<'a> {
    tx: Transaction<'a>,
}

const ENTRY_COLUMNS: &str =
    "dir, path, kind, size, mtime_ns, mode, inode, sha256, target, deleted, seq";

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
        Ok(Index { conn, index_id })
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
        Ok(Index { conn, index_id })
    }

    pub(crate) fn conn(&self) -> &Connection {
        &self.conn
    }

    /// The index id: a UUID made once with the database. A client that sees a different one
    /// than it stored resyncs from 0.
    pub fn index_id(&self) -> &str {
        &self.index_id
    }

    /// Replaces the stored (dir name, absolute path) mapping of the daemon's roots, so that
    /// other tools (zync-apply) can find them.
    ///
    /// # Errors
    ///
    /// An SQLite failure; nothing is changed then.
    pub fn set_roots(&mut self, roots: &[(String, String)]) -> Result<()> {
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .ctx("starting to replace the roots")?;
        tx.execute("DELETE FROM roots", [])
            .ctx("clearing the old roots")?;
        for (dir, path) in roots {
            tx.execute("INSERT INTO roots (dir, path) VALUES (?1, ?2)", (dir, path))
                .with_ctx(|| format!("storing the root {dir} = {path}"))?;
        }
        tx.commit().ctx("committing the new roots")
    }

    /// The (dir name, absolute path) mapping last given to [`Index::set_roots`], by dir name.
    ///
    /// # Errors
    ///
    /// An SQLite failure.
    pub fn roots(&self) -> Result<Vec<(String, String)>> {
        let mut stmt = self
            .conn
            .prepare_cached("SELECT dir, path FROM roots ORDER BY dir")
            .ctx("reading the roots")?;
        let rows = stmt
            .query_map([], |row| Ok((row.get(0)?, row.get(1)?)))
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

    /// The row for (dir, path), live or tombstone.
    ///
    /// # Errors
    ///
    /// An SQLite failure, or a row this build cannot read.
    pub fn get(&self, dir: &str, path: &str) -> Result<Option<Entry>> {
        get(&self.conn, dir, path)
    }

    /// All live (non-deleted) entries of dir whose path equals `under` or starts with
    /// `under/` (None, or the empty path, = the whole dir), ordered by path. For scans.
    ///
    /// # Errors
    ///
    /// An SQLite failure, or a row this build cannot read.
    pub fn live_entries(&self, dir: &str, under: Option<&str>) -> Result<Vec<Entry>> {
        live_entries(&self.conn, dir, under)
    }

    /// The live entries of dir that [`Index::live_entries`] returns, without their content
    /// hashes, sorted by path in byte order (SQLite's BINARY collation, as `str` compares).
    /// Reading 100,000 rows for a daemon restart is a good part of its scan (issue 5); this
    /// leaves out the columns a scan does not use.
    ///
    /// # Errors
    ///
    /// An SQLite failure, or a row this build cannot read.
    pub fn scan_rows(&self, dir: &str, under: Option<&str>) -> Result<Vec<ScanRow>> {
        select_live(
            &self.conn,
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
        let mut stmt = self.conn.prepare_cached(&sql).ctx("reading the changes")?;
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
        last_seq(&self.conn)
    }

    /// The highest seq among dir's rows (0 if it has none).
    ///
    /// # Errors
    ///
    /// An SQLite failure.
    pub fn dir_last_seq(&self, dir: &str) -> Result<u64> {
        self.conn
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
        self.conn
            .query_row(
                "SELECT count(*) FROM entries WHERE dir = ?1 AND deleted = 0",
                [dir],
                |row| row.get::<_, i64>(0),
            )
            .map(seq_from_sql)
            .with_ctx(|| format!("counting the entries of {dir}"))
    }

    /// Records that `client_id` has applied dir up to `seq`. Keeps the highest seq ever
    /// acknowledged (a late, lower ack does not move it back) and sets the time to now.
    ///
    /// # Errors
    ///
    /// An SQLite failure.
    pub fn record_ack(&self, client_id: &str, dir: &str, seq: u64) -> Result<()> {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| saturating_i64(d.as_secs()));
        self.conn
            .execute(
                "INSERT INTO acks (client_id, dir, seq, at_unix) VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT (client_id, dir)
                 DO UPDATE SET seq = max(seq, excluded.seq), at_unix = excluded.at_unix",
                (client_id, dir, seq_to_sql(seq), now),
            )
            .with_ctx(|| format!("recording the ack of {client_id} for {dir} at {seq}"))?;
        Ok(())
    }

    /// Every client's last ack per dir, by client id then dir.
    ///
    /// # Errors
    ///
    /// An SQLite failure.
    pub fn acks(&self) -> Result<Vec<Ack>> {
        let mut stmt = self
            .conn
            .prepare_cached("SELECT client_id, dir, seq, at_unix FROM acks ORDER BY client_id, dir")
            .ctx("reading the acks")?;
        let rows = stmt
            .query_map([], |row| {
                Ok(Ack {
                    client_id: row.get(0)?,
                    dir: row.get(1)?,
                    seq: seq_from_sql(row.get(2)?),
                    at_unix: row.get(3)?,
                })
            })
            .ctx("reading the acks")?;
        rows.collect::<rusqlite::Result<_>>()
            .ctx("reading the acks")
    }

    /// Records a HELLO from `client_id`: one more open connection, seen now.
    ///
    /// # Errors
    ///
    /// An SQLite failure.
    pub fn client_connected(&self, client_id: &str, version: Option<&str>) -> Result<()> {
        self.conn
            .execute(
                "INSERT INTO clients (client_id, connections, first_seen_unix, last_seen_unix,
                     client_version) VALUES (?1, 1, ?2, ?2, ?3)
                 ON CONFLICT (client_id) DO UPDATE SET connections = connections + 1,
                     last_seen_unix = excluded.last_seen_unix,
                     client_version = excluded.client_version",
                (client_id, unix_now(), version),
            )
            .with_ctx(|| format!("recording that {client_id} connected"))?;
        Ok(())
    }

    /// Records that one of `client_id`'s connections ended (never below 0 connections).
    ///
    /// # Errors
    ///
    /// An SQLite failure.
    pub fn client_disconnected(&self, client_id: &str) -> Result<()> {
        self.conn
            .execute(
                "UPDATE clients SET connections = max(connections - 1, 0), last_seen_unix = ?2
                 WHERE client_id = ?1",
                (client_id, unix_now()),
            )
            .with_ctx(|| format!("recording that {client_id} disconnected"))?;
        Ok(())
    }

    /// Marks every client disconnected: at daemon start no connection is open, whatever a
    /// killed daemon left recorded.
    ///
    /// # Errors
    ///
    /// An SQLite failure.
    pub fn reset_connections(&self) -> Result<()> {
        self.conn
            .execute(
                "UPDATE clients SET connections = 0 WHERE connections != 0",
                [],
            )
            .ctx("marking every client disconnected")?;
        Ok(())
    }

    /// Every client that ever said HELLO, by client id.
    ///
    /// # Errors
    ///
    /// An SQLite failure.
    pub fn clients(&self) -> Result<Vec<ClientRecord>> {
        let mut stmt = self
            .conn
            .prepare_cached(
                "SELECT client_id, connections, first_seen_unix, last_seen_unix, client_version
                 FROM clients ORDER BY client_id",
            )
            .ctx("reading the clients")?;
        let rows = stmt
            .query_map([], |row| {
                Ok(ClientRecord {
                    client_id: row.get(0)?,
                    connections: seq_from_sql(row.get(1)?),
                    first_seen_unix: row.get(2)?,
                    last_seen_unix: row.get(3)?,
                    client_version: row.get(4)?,
                })
            })
            .ctx("reading the clients")?;
        rows.collect::<rusqlite::Result<_>>()
            .ctx("reading the clients")
    }

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
        Ok(IndexWriter { tx })
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
        let last = last_seq(&self.tx)?;
        self.tx.commit().ctx("committing to the index")?;
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

    /// Takes the next number from the global counter. Inside the transaction, so a rollback
    /// gives the number back.
    fn next_seq(&mut self) -> Result<u64> {
        self.tx
            .prepare_cached(
                "UPDATE counter SET last_seq = last_seq + 1 WHERE id = 1 RETURNING last_seq",
            )
            .and_then(|mut stmt| stmt.query_row([], |row| row.get::<_, i64>(0)))
            .map(seq_from_sql)
            .ctx("taking the next sequence number")
    }
}

fn get(conn: &Connection, dir: &str, path: &str) -> Result<Option<Entry>> {
    let sql = format!("SELECT {ENTRY_COLUMNS} FROM entries WHERE dir = ?1 AND path = ?2");
    conn.prepare_cached(&sql)
        .and_then(|mut stmt| stmt.query_row((dir, path), entry_from_row).optional())
        .with_ctx(|| format!("reading the index entry {dir}/{path}"))
}

fn live_entries(conn: &Connection, dir: &str, under: Option<&str>) -> Result<Vec<Entry>> {
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

fn last_seq(conn: &Connection) -> Result<u64> {
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

/// The exclusive bounds between which every path strictly below `path` sorts.
pub(crate) fn subtree_bounds(path: &str) -> (String, String) {
    (format!("{path}/"), format!("{path}0"))
}

fn depth(path: &str) -> usize {
    path.bytes().filter(|&b| b == b'/').count()
}

/// Now, in seconds since the Unix epoch (0 for a clock before it).
fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| saturating_i64(d.as_secs()))
}

/// Sizes and inodes are stored bit for bit: a value above `i64::MAX` comes back unchanged.
pub(crate) fn u64_to_sql(value: u64) -> i64 {
    value as i64
}

/// The inverse of [`u64_to_sql`].
pub(crate) fn u64_from_sql(value: i64) -> u64 {
    value as u64
}

/// Sequence numbers are compared in SQL, so they saturate rather than wrap: a `since` beyond
/// `i64::MAX` means "after everything", not "after -1".
pub(crate) fn seq_to_sql(seq: u64) -> i64 {
    saturating_i64(seq)
}

/// Sequence numbers and counts read back; the schema keeps them non-negative.
pub(crate) fn seq_from_sql(seq: i64) -> u64 {
    u64::try_from(seq).unwrap_or(0)
}

fn saturating_i64(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use proptest::prelude::*;

    use super::*;

    fn file(size: u64) -> EntryMeta {
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

    fn dir_meta() -> EntryMeta {
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

    fn paths(entries: &[Entry]) -> Vec<&str> {
        entries.iter().map(|e| e.path.as_str()).collect()
    }

    /// Upserts each path as a small file in one committed writer.
    fn put(index: &mut Index, dir: &str, paths: &[&str]) {
        let mut w = index.writer().expect("writer");
        for (i, path) in paths.iter().enumerate() {
            w.upsert(dir, path, &file(i as u64)).expect("upsert");
        }
        w.commit().expect("commit");
    }

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

    fn paths_of(rows: &[ScanRow]) -> Vec<&str> {
        rows.iter().map(|r| r.path.as_str()).collect()
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
    fn clients_count_their_connections_and_a_restart_zeroes_them() {
        let index = Index::open_in_memory().expect("index");
        index.client_connected("c1", Some("0.1.0")).expect("hello");
        index
            .client_connected("c1", Some("0.1.0"))
            .expect("second connection");
        index.client_connected("c2", None).expect("hello");
        index.client_disconnected("c1").expect("bye");
        index.client_disconnected("c2").expect("bye");
        index
            .client_disconnected("c2")
            .expect("a second bye stays at 0");
        index
            .client_disconnected("never-seen")
            .expect("unknown is a no-op");
        let got: Vec<(String, u64)> = index
            .clients()
            .expect("clients")
            .into_iter()
            .map(|c| (c.client_id, c.connections))
            .collect();
        assert_eq!(got, vec![("c1".to_owned(), 1), ("c2".to_owned(), 0)]);
        index.reset_connections().expect("reset");
        let clients = index.clients().expect("clients");
        assert!(
            clients.iter().all(|c| c.connections == 0),
            "after a reset: {clients:?}"
        );
        assert_eq!(clients[0].client_version.as_deref(), Some("0.1.0"));
        assert!(clients[0].last_seen_unix >= clients[0].first_seen_unix);
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

    #[test]
    fn acks_keep_the_highest_seq() {
        let index = Index::open_in_memory().expect("open");
        index.record_ack("client-1", "docs", 10).expect("ack");
        index.record_ack("client-1", "docs", 4).expect("late ack");
        index.record_ack("client-1", "pics", 3).expect("ack");
        index.record_ack("client-0", "docs", 12).expect("ack");
        let acks = index.acks().expect("acks");
        let got: Vec<(&str, &str, u64)> = acks
            .iter()
            .map(|a| (a.client_id.as_str(), a.dir.as_str(), a.seq))
            .collect();
        assert_eq!(
            got,
            [
                ("client-0", "docs", 12),
                ("client-1", "docs", 10),
                ("client-1", "pics", 3)
            ]
        );
        assert!(
            acks.iter().all(|a| a.at_unix > 1_600_000_000),
            "at is now: {acks:?}"
        );
        index.record_ack("client-1", "docs", 11).expect("ack");
        assert_eq!(index.acks().expect("acks")[1].seq, 11);
    }

    #[test]
    fn set_roots_replaces_the_mapping() {
        let mut index = Index::open_in_memory().expect("open");
        assert!(index.roots().expect("roots").is_empty());
        index
            .set_roots(&[("pics".into(), "/p".into()), ("docs".into(), "/d".into())])
            .expect("set");
        index
            .set_roots(&[
                ("docs".into(), "/new/d".into()),
                ("music".into(), "/m".into()),
            ])
            .expect("replace");
        let want: Vec<(String, String)> = vec![
            ("docs".into(), "/new/d".into()),
            ("music".into(), "/m".into()),
        ];
        assert_eq!(index.roots().expect("roots"), want);
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
