//! The client's synced state on machine R: per dir name, the index id and the last sequence
//! applied durably (invariant 2 (docs/ARCHITECTURE.md)), and per path what the client last wrote there, which
//! is how it tells its own local edits from E's changes (invariant 4).

use std::borrow::Cow;
use std::path::Path;
use std::sync::OnceLock;
use std::time::{SystemTime, UNIX_EPOCH};

use rusqlite::{Connection, OptionalExtension, Row, Transaction, TransactionBehavior};

use crate::conn::{self, Synchronous};
use crate::error::{Context, Result};
use crate::migrate::{self, CLIENT};
use crate::sql::{seq_from_sql, seq_to_sql, subtree_bounds, u64_from_sql, u64_to_sql, values_rows};
use zync_proto::Kind;

/// A path that failed to apply and is retried every round.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failing {
    /// The directory name.
    pub dir: String,
    /// The path.
    pub path: String,
    /// The last error, for a person.
    pub error: String,
    /// When it first failed, seconds since the epoch.
    pub since_unix: i64,
    /// How many rounds it failed in.
    pub attempts: u64,
}

/// How long the checkpoints of a content no synced path has are kept: enough for a download
/// in progress to land and be recorded.
pub const CHECKPOINTS_KEPT: std::time::Duration = std::time::Duration::from_secs(24 * 3600);

/// What the client last wrote at a path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Synced {
    /// File, directory or symlink.
    pub kind: Kind,
    /// Size in bytes.
    pub size: u64,
    /// Modification time after the write, nanoseconds since the Unix epoch.
    pub mtime_ns: i64,
    /// Permission bits.
    pub mode: u32,
    /// Hex SHA-256 of the content, for files.
    pub sha256: Option<String>,
    /// The link target, for symlinks.
    pub target: Option<String>,
}

/// Where the client is in one dir's change log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirState {
    /// The daemon's index id the sequence belongs to; a different one means resync from 0.
    pub index_id: String,
    /// The last sequence applied durably.
    pub last_seq: u64,
}

/// The client's state database.
#[derive(Debug)]
pub struct ClientState {
    conn: Connection,
    client_id: String,
    /// A second connection to the same file kept between syncs ([`ClientState::keep_another`]):
    /// a loop client syncs on every save, and opening a connection (the file's mode, the
    /// schema check, the pragmas) cost about a tenth of a lone save's CPU.
    spare: Option<Connection>,
}

/// One write transaction on the client state. Dropping it without [`ClientBatch::commit`]
/// rolls everything back.
#[derive(Debug)]
pub struct ClientBatch<'a> {
    tx: Transaction<'a>,
}

/// [`SYNCED_COLUMNS`] as a literal, for `concat!`.
macro_rules! synced_columns {
    () => {
        "kind, size, mtime_ns, mode, sha256, target"
    };
}
/// The columns [`synced_from_row`] reads, in its order.
const SYNCED_COLUMNS: &str = synced_columns!();

/// Rows written by one statement of the `*_many` writes: a batch of a thousand files is a few
/// statements, not a thousand (each statement costs a step, a reset and its bindings).
const ROWS_PER_STATEMENT: usize = 64;

/// The text of a `*_many` statement of `rows` rows, made by `build`: nearly every statement of
/// a big batch is a full one, whose text is made once (making it, and the statement cache
/// hashing a new `String` of it, cost about a fifth of what SQLite then does with the rows).
fn chunk_sql(
    full: &'static OnceLock<String>,
    rows: usize,
    build: impl FnOnce(usize) -> String,
) -> Cow<'static, str> {
    if rows == ROWS_PER_STATEMENT {
        Cow::Borrowed(full.get_or_init(|| build(rows)))
    } else {
        Cow::Owned(build(rows))
    }
}

/// `DELETE FROM {table} WHERE dir = ?1 AND path IN (?2, ...)` for `rows` paths.
fn delete_paths_sql(table: &str, rows: usize) -> String {
    let list: Vec<String> = (0..rows).map(|i| format!("?{}", i + 2)).collect();
    format!(
        "DELETE FROM {table} WHERE dir = ?1 AND path IN ({})",
        list.join(", ")
    )
}

impl ClientState {
    /// Opens the client state at `path`, creating the file, its schema and a new client id if
    /// it does not exist yet. Commits are durable before they return (`synchronous=FULL`).
    ///
    /// # Errors
    ///
    /// The file cannot be opened or created, is not an SQLite database, is another kind of
    /// database, or was made by a newer zync ([`crate::DbError::TooNew`]).
    pub fn open(path: &Path) -> Result<ClientState> {
        ClientState::from_conn(conn::open_file(path, &CLIENT, Synchronous::Full)?)
    }

    /// Opens an existing client state read-only: never creates, upgrades or writes the file
    /// (`zync-client --status`), and reads beside a running client (WAL). SQLite may leave the
    /// empty `-wal`/`-shm` files a WAL reader needs beside it.
    ///
    /// # Errors
    ///
    /// No file at `path`, not a client state database, or a schema older or newer than this
    /// build's.
    pub fn open_read_only(path: &Path) -> Result<ClientState> {
        let conn = conn::open_read_only(path, &CLIENT)?;
        let client_id = migrate::read_database_id(&conn, "client_id")?;
        Ok(ClientState {
            conn,
            client_id,
            spare: None,
        })
    }

    /// Opens an existing client state to read without leaving any trace (`zync-client
    /// --dry-run`): never creates, upgrades or writes it, and leaves no file beside it. When a
    /// client has the database open (its `-wal` is there) it is read as
    /// [`ClientState::open_read_only`] does, which then creates nothing; otherwise it is read
    /// as it stands on disk (SQLite's `immutable`), without the `-wal`/`-shm` files a WAL
    /// reader would leave.
    ///
    /// # Errors
    ///
    /// As [`ClientState::open_read_only`].
    pub fn open_untouched(path: &Path) -> Result<ClientState> {
        let mut wal = path.as_os_str().to_owned();
        wal.push("-wal");
        let conn = if Path::new(&wal).exists() {
            conn::open_read_only(path, &CLIENT)?
        } else {
            conn::open_immutable(path, &CLIENT)?
        };
        let client_id = migrate::read_database_id(&conn, "client_id")?;
        Ok(ClientState {
            conn,
            client_id,
            spare: None,
        })
    }

    /// Opens a new, empty client state in memory.
    ///
    /// # Errors
    ///
    /// Only if SQLite itself fails.
    pub fn open_in_memory() -> Result<ClientState> {
        ClientState::from_conn(conn::open_memory(&CLIENT, Synchronous::Full)?)
    }

    /// A second connection to the same database file, to write on another thread while this
    /// one reads (WAL keeps each reader's snapshot consistent).
    ///
    /// # Errors
    ///
    /// [`crate::DbError::InMemory`] for a state opened with [`ClientState::open_in_memory`];
    /// otherwise as [`ClientState::open`].
    pub fn open_another(&self) -> Result<ClientState> {
        match self.conn.path() {
            Some(path) if !path.is_empty() => ClientState::open(Path::new(path)),
            _ => Err(crate::DbError::InMemory),
        }
    }

    /// The second connection kept with [`ClientState::keep_another`], or a new one
    /// ([`ClientState::open_another`]).
    ///
    /// # Errors
    ///
    /// As [`ClientState::open_another`].
    pub fn take_another(&mut self) -> Result<ClientState> {
        match self.spare.take() {
            Some(conn) => Ok(ClientState {
                conn,
                client_id: self.client_id.clone(),
                spare: None,
            }),
            None => self.open_another(),
        }
    }

    /// Keeps `other`, a connection from [`ClientState::take_another`] that is done writing,
    /// for the next [`ClientState::take_another`]. One that holds a transaction open is closed
    /// instead, which rolls the transaction back.
    pub fn keep_another(&mut self, other: ClientState) {
        if other.conn.is_autocommit() {
            self.spare = Some(other.conn);
        }
    }

    fn from_conn(conn: Connection) -> Result<ClientState> {
        // A multi-row write keeps a statement journal to undo itself if a row fails: in
        // memory (a few pages) rather than a temp file written page by page.
        conn.execute_batch("PRAGMA temp_store = MEMORY")
            .ctx("setting up the client state")?;
        let client_id = migrate::database_id(&conn, "client_id")?;
        Ok(ClientState {
            conn,
            client_id,
            spare: None,
        })
    }

    #[cfg(test)]
    pub(crate) fn conn(&self) -> &Connection {
        &self.conn
    }

    /// The client id: a UUID made once with the database.
    pub fn client_id(&self) -> &str {
        &self.client_id
    }

    /// Where the client is in dir's change log, or `None` if it never synced dir.
    ///
    /// # Errors
    ///
    /// An SQLite failure.
    pub fn dir_state(&self, dir: &str) -> Result<Option<DirState>> {
        self.conn
            .query_row(
                "SELECT index_id, last_seq FROM dirs WHERE dir = ?1",
                [dir],
                |row| {
                    Ok(DirState {
                        index_id: row.get(0)?,
                        last_seq: seq_from_sql(row.get(1)?),
                    })
                },
            )
            .optional()
            .with_ctx(|| format!("reading the sync state of {dir}"))
    }

    /// Holds one read transaction until the returned guard is dropped, so that a run of
    /// lookups (planning a page of changes) takes the database's lock once instead of once
    /// per lookup. Writing needs [`ClientState::batch`], after the guard is gone.
    ///
    /// # Errors
    ///
    /// An SQLite failure.
    pub fn read_snapshot(&self) -> Result<rusqlite::Transaction<'_>> {
        self.conn
            .unchecked_transaction()
            .with_ctx(|| "starting a read of the client database".to_string())
    }

    /// What the client last wrote at (dir, path), if anything.
    ///
    /// # Errors
    ///
    /// An SQLite failure, or a row this build cannot read.
    pub fn synced(&self, dir: &str, path: &str) -> Result<Option<Synced>> {
        let sql = format!("SELECT {SYNCED_COLUMNS} FROM synced WHERE dir = ?1 AND path = ?2");
        self.conn
            .prepare_cached(&sql)
            .and_then(|mut stmt| {
                stmt.query_row((dir, path), |row| synced_from_row(row, 0))
                    .optional()
            })
            .with_ctx(|| format!("reading the synced state of {dir}/{path}"))
    }

    /// The key of this client's checkpoints (`zync_fs::WindowKey`), made by `make` and stored
    /// the first time it is asked for (`None` when there is none and `make` made none): kept in
    /// the database, which only its owner can read, so that nobody else can make windows whose
    /// hashes match.
    ///
    /// # Errors
    ///
    /// An SQLite failure.
    pub fn checkpoint_key(
        &mut self,
        make: impl FnOnce() -> Option<Vec<u8>>,
    ) -> Result<Option<Vec<u8>>> {
        let read = |conn: &Connection| {
            conn.query_row(
                "SELECT value FROM meta WHERE key = 'checkpoint_key'",
                [],
                |row| row.get::<_, Vec<u8>>(0),
            )
            .optional()
            .ctx("reading the checkpoint key")
        };
        if let Some(key) = read(&self.conn)? {
            return Ok(Some(key));
        }
        let Some(made) = make() else {
            return Ok(None);
        };
        self.conn
            .execute(
                "INSERT OR IGNORE INTO meta (key, value) VALUES ('checkpoint_key', ?1)",
                [made],
            )
            .ctx("storing the checkpoint key")?;
        read(&self.conn)
    }

    /// The checkpoints stored for the content with this sha256
    /// ([`ClientBatch::put_checkpoints`]), if any.
    ///
    /// # Errors
    ///
    /// An SQLite failure.
    pub fn checkpoints(&self, sha256: &str) -> Result<Option<Vec<u8>>> {
        self.conn
            .prepare_cached("SELECT data FROM checkpoints WHERE sha256 = ?1")
            .and_then(|mut stmt| stmt.query_row([sha256], |row| row.get(0)).optional())
            .with_ctx(|| format!("reading the checkpoints of {sha256}"))
    }

    /// Every synced path of dir with its state, ordered by path.
    ///
    /// # Errors
    ///
    /// An SQLite failure, or a row this build cannot read.
    pub fn synced_all(&self, dir: &str) -> Result<Vec<(String, Synced)>> {
        let context = || format!("listing the synced paths of {dir}");
        let sql = format!("SELECT path, {SYNCED_COLUMNS} FROM synced WHERE dir = ?1 ORDER BY path");
        let mut stmt = self.conn.prepare_cached(&sql).with_ctx(context)?;
        let rows = stmt
            .query_map([dir], |row| Ok((row.get(0)?, synced_from_row(row, 1)?)))
            .with_ctx(context)?;
        rows.collect::<rusqlite::Result<_>>().with_ctx(context)
    }

    /// How many paths of dir are recorded as synced.
    ///
    /// # Errors
    ///
    /// An SQLite failure.
    pub fn synced_count(&self, dir: &str) -> Result<u64> {
        self.conn
            .query_row("SELECT count(*) FROM synced WHERE dir = ?1", [dir], |row| {
                row.get::<_, i64>(0)
            })
            .map(seq_from_sql)
            .with_ctx(|| format!("counting the synced paths of {dir}"))
    }

    /// The query of [`ClientState::find_by_sha`]. The index is named: a plan fixed once, not
    /// re-made for every sha bound. It holds (sha256, dir, path), so the rows come in path order
    /// without a sort and the read stops at the limit. (Stable plans, `conn::stable_plans`, keep
    /// the bound limit from making SQLite compile the statement again at every use.)
    const FIND_BY_SHA: &'static str = concat!(
        "SELECT path, ",
        synced_columns!(),
        " FROM synced INDEXED BY synced_sha256
         WHERE sha256 = ?1 AND dir = ?2 AND path <> ?3 AND kind = 'file'
         ORDER BY path LIMIT ?4"
    );

    /// Up to `limit` synced files of `dir` other than `except` whose sha256 equals `sha256`,
    /// by path, with their records: local copies of content the client would otherwise
    /// download. The caller must check a file still has that content before copying it.
    ///
    /// Only as many rows as `limit` are read: in a tree where thousands of files share one
    /// content (empty files, vendored copies), each lookup stays a few rows.
    ///
    /// # Errors
    ///
    /// An SQLite failure.
    pub fn find_by_sha(
        &self,
        dir: &str,
        sha256: &str,
        except: &str,
        limit: usize,
    ) -> Result<Vec<(String, Synced)>> {
        let context = || format!("looking for synced files of {dir} with sha256 {sha256}");
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let mut stmt = self
            .conn
            .prepare_cached(Self::FIND_BY_SHA)
            .with_ctx(context)?;
        let rows = stmt
            .query_map((sha256, dir, except, limit), |row| {
                Ok((row.get::<_, String>(0)?, synced_from_row(row, 1)?))
            })
            .with_ctx(context)?;
        rows.collect::<rusqlite::Result<_>>().with_ctx(context)
    }

    /// Whether a page that was not committed (the client stopped) was about to write content
    /// `sha256` at (dir, path): a local file with that content is zync's own write, not an
    /// edit made on R.
    ///
    /// # Errors
    ///
    /// An SQLite failure.
    pub fn was_inflight(&self, dir: &str, path: &str, sha256: &str) -> Result<bool> {
        self.conn
            .query_row(
                "SELECT 1 FROM inflight WHERE dir = ?1 AND path = ?2 AND sha256 = ?3",
                (dir, path, sha256),
                |_| Ok(()),
            )
            .optional()
            .map(|found| found.is_some())
            .with_ctx(|| format!("reading the in-flight state of {dir}/{path}"))
    }

    /// Paths that failed to apply and are retried, oldest failure first (all dirs when `dir`
    /// is None).
    ///
    /// # Errors
    ///
    /// An SQLite failure.
    pub fn failing(&self, dir: Option<&str>) -> Result<Vec<Failing>> {
        let context = || "reading the failing paths".to_string();
        let mut stmt = self
            .conn
            .prepare_cached(
                "SELECT dir, path, error, since_unix, attempts FROM failing
                 WHERE ?1 IS NULL OR dir = ?1 ORDER BY since_unix, dir, path",
            )
            .with_ctx(context)?;
        let rows = stmt
            .query_map([dir], |row| {
                Ok(Failing {
                    dir: row.get(0)?,
                    path: row.get(1)?,
                    error: row.get(2)?,
                    since_unix: row.get(3)?,
                    attempts: u64_from_sql(row.get(4)?),
                })
            })
            .with_ctx(context)?;
        rows.collect::<rusqlite::Result<_>>().with_ctx(context)
    }

    /// Starts a write transaction. Apply a batch of changes to disk first, then record them
    /// and the new [`DirState`] in one batch: the sequence only advances with what is durably
    /// applied (invariant 2 (docs/ARCHITECTURE.md)).
    ///
    /// # Errors
    ///
    /// An SQLite failure, such as another process holding the lock for more than 5 s.
    pub fn batch(&mut self) -> Result<ClientBatch<'_>> {
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .ctx("starting a write to the client state")?;
        Ok(ClientBatch { tx })
    }
}

impl ClientBatch<'_> {
    /// Records what the client just wrote at (dir, path), replacing any earlier record.
    ///
    /// # Errors
    ///
    /// An SQLite failure; the batch should then be dropped.
    pub fn set_synced(&mut self, dir: &str, path: &str, synced: &Synced) -> Result<()> {
        self.tx
            .prepare_cached(
                "INSERT INTO synced (dir, path, kind, size, mtime_ns, mode, sha256, target)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)
                 ON CONFLICT (dir, path) DO UPDATE SET
                     kind = excluded.kind, size = excluded.size, mtime_ns = excluded.mtime_ns,
                     mode = excluded.mode, sha256 = excluded.sha256, target = excluded.target",
            )
            .and_then(|mut stmt| {
                stmt.execute((
                    dir,
                    path,
                    synced.kind,
                    u64_to_sql(synced.size),
                    synced.mtime_ns,
                    synced.mode,
                    &synced.sha256,
                    &synced.target,
                ))
            })
            .with_ctx(|| format!("recording the synced state of {dir}/{path}"))?;
        Ok(())
    }

    /// Records what the client just wrote at each (dir, path) of `entries`, in order, as
    /// [`ClientBatch::set_synced`] does for one, with one statement per
    /// [`ROWS_PER_STATEMENT`] paths.
    ///
    /// # Errors
    ///
    /// An SQLite failure; the batch should then be dropped.
    pub fn set_synced_many(&mut self, dir: &str, entries: &[(&str, &Synced)]) -> Result<()> {
        static FULL: OnceLock<String> = OnceLock::new();
        for chunk in entries.chunks(ROWS_PER_STATEMENT) {
            let sql = chunk_sql(&FULL, chunk.len(), |rows| {
                format!(
                    "INSERT INTO synced (dir, path, kind, size, mtime_ns, mode, sha256, target)
                     VALUES {}
                     ON CONFLICT (dir, path) DO UPDATE SET
                         kind = excluded.kind, size = excluded.size, mtime_ns = excluded.mtime_ns,
                         mode = excluded.mode, sha256 = excluded.sha256, target = excluded.target",
                    values_rows(rows, 7)
                )
            });
            let sizes: Vec<i64> = chunk.iter().map(|(_, s)| u64_to_sql(s.size)).collect();
            let mut params: Vec<&dyn rusqlite::ToSql> = Vec::with_capacity(1 + 7 * chunk.len());
            params.push(&dir);
            for ((path, synced), size) in chunk.iter().zip(&sizes) {
                params.extend([
                    path as &dyn rusqlite::ToSql,
                    &synced.kind,
                    size,
                    &synced.mtime_ns,
                    &synced.mode,
                    &synced.sha256,
                    &synced.target,
                ]);
            }
            self.tx
                .prepare_cached(&sql)
                .and_then(|mut stmt| stmt.execute(params.as_slice()))
                .with_ctx(|| {
                    format!(
                        "recording the synced state of {} paths of {dir} from {}",
                        chunk.len(),
                        chunk.first().map_or("", |(path, _)| path)
                    )
                })?;
        }
        Ok(())
    }

    /// Forgets (dir, path). Nothing happens if it was not recorded.
    ///
    /// # Errors
    ///
    /// An SQLite failure; the batch should then be dropped.
    pub fn remove_synced(&mut self, dir: &str, path: &str) -> Result<()> {
        self.tx
            .prepare_cached("DELETE FROM synced WHERE dir = ?1 AND path = ?2")
            .and_then(|mut stmt| stmt.execute((dir, path)))
            .with_ctx(|| format!("forgetting the synced state of {dir}/{path}"))?;
        Ok(())
    }

    /// Forgets path and everything below it (path/...). The empty path means the whole dir.
    ///
    /// # Errors
    ///
    /// An SQLite failure; the batch should then be dropped.
    pub fn remove_synced_tree(&mut self, dir: &str, path: &str) -> Result<()> {
        let context = || format!("forgetting the synced state of {dir}/{path} and below");
        if path.is_empty() {
            self.tx
                .prepare_cached("DELETE FROM synced WHERE dir = ?1")
                .and_then(|mut stmt| stmt.execute([dir]))
                .with_ctx(context)?;
        } else {
            // Not LIKE (case-insensitive, with wildcards): see `subtree_bounds`.
            let (low, high) = subtree_bounds(path);
            self.tx
                .prepare_cached(
                    "DELETE FROM synced
                     WHERE dir = ?1 AND path >= ?2 AND path < ?4 AND (path = ?2 OR path > ?3)",
                )
                .and_then(|mut stmt| stmt.execute((dir, path, &low, &high)))
                .with_ctx(context)?;
        }
        Ok(())
    }

    /// Notes that (dir, path) is about to receive content `sha256`; earlier notes for the path
    /// stay until it is recorded as synced.
    ///
    /// # Errors
    ///
    /// An SQLite failure; the batch should then be dropped.
    pub fn set_inflight(&mut self, dir: &str, path: &str, sha256: &str) -> Result<()> {
        self.tx
            .prepare_cached(
                "INSERT INTO inflight (dir, path, sha256) VALUES (?1, ?2, ?3)
                 ON CONFLICT DO NOTHING",
            )
            .and_then(|mut stmt| stmt.execute((dir, path, sha256)))
            .with_ctx(|| format!("recording the in-flight state of {dir}/{path}"))?;
        Ok(())
    }

    /// Notes each (path, sha256) of `notes` in dir, as [`ClientBatch::set_inflight`] does
    /// for one, with one statement per [`ROWS_PER_STATEMENT`] notes.
    ///
    /// # Errors
    ///
    /// An SQLite failure; the batch should then be dropped.
    pub fn set_inflight_many(&mut self, dir: &str, notes: &[(&str, &str)]) -> Result<()> {
        static FULL: OnceLock<String> = OnceLock::new();
        for chunk in notes.chunks(ROWS_PER_STATEMENT) {
            let sql = chunk_sql(&FULL, chunk.len(), |rows| {
                format!(
                    "INSERT INTO inflight (dir, path, sha256) VALUES {} ON CONFLICT DO NOTHING",
                    values_rows(rows, 2)
                )
            });
            let mut params: Vec<&dyn rusqlite::ToSql> = Vec::with_capacity(1 + 2 * chunk.len());
            params.push(&dir);
            for (path, sha256) in chunk {
                params.extend([path as &dyn rusqlite::ToSql, sha256]);
            }
            self.tx
                .prepare_cached(&sql)
                .and_then(|mut stmt| stmt.execute(params.as_slice()))
                .with_ctx(|| {
                    format!(
                        "recording the in-flight state of {} paths of {dir}",
                        chunk.len()
                    )
                })?;
        }
        Ok(())
    }

    /// Forgets the in-flight notes of each of `paths` in dir, as
    /// [`ClientBatch::clear_inflight_path`] does for one, with one statement per
    /// [`ROWS_PER_STATEMENT`] paths.
    ///
    /// # Errors
    ///
    /// An SQLite failure; the batch should then be dropped.
    pub fn clear_inflight_paths(&mut self, dir: &str, paths: &[&str]) -> Result<()> {
        static FULL: OnceLock<String> = OnceLock::new();
        self.delete_paths(&FULL, "inflight", "in-flight state", dir, paths)
    }

    /// Deletes the rows of `table` for each of `paths` in dir, one statement per
    /// [`ROWS_PER_STATEMENT`] paths (`full` keeps the text of a full one); `what` names the
    /// rows in an error.
    fn delete_paths(
        &mut self,
        full: &'static OnceLock<String>,
        table: &str,
        what: &str,
        dir: &str,
        paths: &[&str],
    ) -> Result<()> {
        for chunk in paths.chunks(ROWS_PER_STATEMENT) {
            let sql = chunk_sql(full, chunk.len(), |rows| delete_paths_sql(table, rows));
            let mut params: Vec<&dyn rusqlite::ToSql> = Vec::with_capacity(1 + chunk.len());
            params.push(&dir);
            params.extend(chunk.iter().map(|p| p as &dyn rusqlite::ToSql));
            self.tx
                .prepare_cached(&sql)
                .and_then(|mut stmt| stmt.execute(params.as_slice()))
                .with_ctx(|| format!("clearing the {what} of {} paths of {dir}", chunk.len()))?;
        }
        Ok(())
    }

    /// Forgets the in-flight notes of (dir, path), once a change to it was recorded.
    ///
    /// # Errors
    ///
    /// An SQLite failure; the batch should then be dropped.
    pub fn clear_inflight_path(&mut self, dir: &str, path: &str) -> Result<()> {
        self.tx
            .prepare_cached("DELETE FROM inflight WHERE dir = ?1 AND path = ?2")
            .and_then(|mut stmt| stmt.execute((dir, path)))
            .with_ctx(|| format!("clearing the in-flight state of {dir}/{path}"))?;
        Ok(())
    }

    /// Forgets every in-flight note of dir (it is fully synced).
    ///
    /// # Errors
    ///
    /// An SQLite failure; the batch should then be dropped.
    pub fn clear_inflight(&mut self, dir: &str) -> Result<()> {
        self.tx
            .prepare_cached("DELETE FROM inflight WHERE dir = ?1")
            .and_then(|mut stmt| stmt.execute([dir]))
            .with_ctx(|| format!("clearing the in-flight state of {dir}"))?;
        Ok(())
    }

    /// Records that (dir, path) failed with `error`: the first failure keeps its time, later
    /// ones count up.
    ///
    /// # Errors
    ///
    /// An SQLite failure; the batch should then be dropped.
    pub fn set_failing(&mut self, dir: &str, path: &str, error: &str) -> Result<()> {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX));
        self.tx
            .prepare_cached(
                "INSERT INTO failing (dir, path, error, since_unix, attempts)
                 VALUES (?1, ?2, ?3, ?4, 1)
                 ON CONFLICT (dir, path) DO UPDATE SET
                     error = excluded.error, attempts = attempts + 1",
            )
            .and_then(|mut stmt| stmt.execute((dir, path, error, now)))
            .with_ctx(|| format!("recording the failure of {dir}/{path}"))?;
        Ok(())
    }

    /// Stores the checkpoints of the content with this sha256 (written before the file is in
    /// place: they describe the content, wherever it is), and forgets those of contents no
    /// synced path has had for [`CHECKPOINTS_KEPT`].
    ///
    /// # Errors
    ///
    /// An SQLite failure; the batch should then be dropped.
    pub fn put_checkpoints(&mut self, sha256: &str, data: &[u8]) -> Result<()> {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX));
        self.tx
            .prepare_cached(
                "INSERT INTO checkpoints (sha256, data, at_unix) VALUES (?1, ?2, ?3)
                 ON CONFLICT (sha256) DO UPDATE SET data = excluded.data, at_unix = ?3",
            )
            .and_then(|mut stmt| stmt.execute((sha256, data, now)))
            .with_ctx(|| format!("recording the checkpoints of {sha256}"))?;
        // A content on its way into place has no synced row yet: kept while it is young.
        self.tx
            .prepare_cached(
                "DELETE FROM checkpoints WHERE at_unix < ?1 AND NOT EXISTS
                     (SELECT 1 FROM synced WHERE synced.sha256 = checkpoints.sha256)",
            )
            .and_then(|mut stmt| {
                stmt.execute([now.saturating_sub(CHECKPOINTS_KEPT.as_secs() as i64)])
            })
            .with_ctx(|| "forgetting the checkpoints of contents no longer synced".to_string())?;
        Ok(())
    }

    /// Forgets the checkpoints of the content with this sha256 (a rebuild with them failed
    /// its check).
    ///
    /// # Errors
    ///
    /// An SQLite failure; the batch should then be dropped.
    pub fn forget_checkpoints(&mut self, sha256: &str) -> Result<()> {
        self.tx
            .prepare_cached("DELETE FROM checkpoints WHERE sha256 = ?1")
            .and_then(|mut stmt| stmt.execute([sha256]))
            .with_ctx(|| format!("forgetting the checkpoints of {sha256}"))?;
        Ok(())
    }

    /// Forgets the failures of each of `paths` in dir, once they applied. A dir with nothing
    /// failing (nearly every sync) costs one look, not a statement per
    /// [`ROWS_PER_STATEMENT`] paths.
    ///
    /// # Errors
    ///
    /// An SQLite failure; the batch should then be dropped.
    pub fn clear_failing_paths(&mut self, dir: &str, paths: &[&str]) -> Result<()> {
        static FULL: OnceLock<String> = OnceLock::new();
        let any: bool = self
            .tx
            .prepare_cached("SELECT EXISTS (SELECT 1 FROM failing WHERE dir = ?1)")
            .and_then(|mut stmt| stmt.query_row([dir], |row| row.get(0)))
            .with_ctx(|| format!("looking for failures in {dir}"))?;
        if !any {
            return Ok(());
        }
        self.delete_paths(&FULL, "failing", "failures", dir, paths)
    }

    /// Records where the client is in dir's change log.
    ///
    /// # Errors
    ///
    /// An SQLite failure; the batch should then be dropped.
    pub fn set_dir_state(&mut self, dir: &str, state: &DirState) -> Result<()> {
        self.tx
            .prepare_cached(
                "INSERT INTO dirs (dir, index_id, last_seq) VALUES (?1, ?2, ?3)
                 ON CONFLICT (dir) DO UPDATE SET
                     index_id = excluded.index_id, last_seq = excluded.last_seq",
            )
            .and_then(|mut stmt| stmt.execute((dir, &state.index_id, seq_to_sql(state.last_seq))))
            .with_ctx(|| format!("recording the sync state of {dir}"))?;
        Ok(())
    }

    /// Commits: once this returns, the batch survives a crash or a power cut.
    ///
    /// # Errors
    ///
    /// An SQLite failure; nothing is committed then.
    pub fn commit(self) -> Result<()> {
        self.tx.commit().ctx("committing to the client state")
    }
}

fn synced_from_row(row: &Row<'_>, first: usize) -> rusqlite::Result<Synced> {
    Ok(Synced {
        kind: row.get(first)?,
        size: u64_from_sql(row.get(first + 1)?),
        mtime_ns: row.get(first + 2)?,
        mode: row.get(first + 3)?,
        sha256: row.get(first + 4)?,
        target: row.get(first + 5)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(sha: &str, size: u64) -> Synced {
        Synced {
            kind: Kind::File,
            size,
            mtime_ns: 1_700_000_000_123_456_789,
            mode: 0o640,
            sha256: Some(sha.to_owned()),
            target: None,
        }
    }

    fn set(state: &mut ClientState, dir: &str, entries: &[(&str, Synced)]) {
        let mut batch = state.batch().expect("batch");
        for (path, synced) in entries {
            batch.set_synced(dir, path, synced).expect("set_synced");
        }
        batch.commit().expect("commit");
    }

    fn synced_paths(state: &ClientState, dir: &str) -> Vec<String> {
        state
            .synced_all(dir)
            .expect("synced_all")
            .into_iter()
            .map(|(path, _)| path)
            .collect()
    }

    #[test]
    fn a_second_connection_writes_what_the_first_reads_and_memory_has_none() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let first = ClientState::open(&tmp.path().join("client.db")).expect("open");
        let mut second = first.open_another().expect("second connection");
        assert_eq!(second.client_id(), first.client_id());
        // A reader's snapshot stays what it was while the other connection commits.
        let snapshot = first.read_snapshot().expect("snapshot");
        set(&mut second, "d", &[("a", file(&"1".repeat(64), 1))]);
        drop(snapshot);
        assert_eq!(synced_paths(&first, "d"), vec!["a".to_string()]);
        let memory = ClientState::open_in_memory().expect("memory");
        assert!(matches!(
            memory.open_another(),
            Err(crate::DbError::InMemory)
        ));
    }

    #[test]
    fn the_checkpoint_key_is_made_once_and_kept() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let path = tmp.path().join("client.db");
        let mut state = ClientState::open(&path).expect("open");
        assert_eq!(state.checkpoint_key(|| None).expect("no key"), None);
        let key = state.checkpoint_key(|| Some(vec![1; 192])).expect("key");
        assert_eq!(key, Some(vec![1; 192]));
        drop(state);
        let mut state = ClientState::open(&path).expect("open again");
        let again = state
            .checkpoint_key(|| panic!("a second key was made"))
            .expect("key");
        assert_eq!(again, key);
    }

    #[test]
    fn checkpoints_are_kept_by_content_while_a_synced_path_has_it_or_it_is_young() {
        let mut state = ClientState::open_in_memory().expect("state");
        let (kept, young, old) = ("a".repeat(64), "b".repeat(64), "c".repeat(64));
        set(&mut state, "d", &[("big", file(&kept, 1 << 30))]);
        for (sha, data) in [(&kept, b"k".as_slice()), (&old, b"o"), (&young, b"y")] {
            let mut batch = state.batch().expect("batch");
            batch.put_checkpoints(sha, data).expect("put");
            batch.commit().expect("commit");
        }
        assert_eq!(state.checkpoints(&kept).expect("read"), Some(b"k".to_vec()));
        assert_eq!(state.checkpoints(&"d".repeat(64)).expect("read"), None);
        // Long ago, and no path has them: forgotten at the next put. The same age with a
        // synced path: kept.
        let long_ago = CHECKPOINTS_KEPT.as_secs() as i64 + 60;
        state
            .conn()
            .execute(
                "UPDATE checkpoints SET at_unix = at_unix - ?1 WHERE sha256 IN (?2, ?3)",
                (long_ago, &kept, &old),
            )
            .expect("age");
        let mut batch = state.batch().expect("batch");
        batch.put_checkpoints(&young, b"y2").expect("put");
        batch.commit().expect("commit");
        assert_eq!(state.checkpoints(&old).expect("read"), None);
        assert_eq!(state.checkpoints(&kept).expect("read"), Some(b"k".to_vec()));
        assert_eq!(
            state.checkpoints(&young).expect("read"),
            Some(b"y2".to_vec())
        );
    }

    #[test]
    fn a_kept_second_connection_is_the_one_taken_next() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let mut first = ClientState::open(&tmp.path().join("client.db")).expect("open");
        let second = first.take_another().expect("second connection");
        // A temp table lives as long as its connection, and only there.
        second
            .conn()
            .execute_batch("CREATE TEMP TABLE mark (x)")
            .expect("temp table");
        first.keep_another(second);
        let again = first.take_another().expect("kept connection");
        assert!(
            again.conn().prepare("SELECT x FROM temp.mark").is_ok(),
            "take_another opened a new connection instead of giving back the kept one"
        );
        assert_eq!(again.client_id(), first.client_id());
        // Taken, it is no longer kept.
        let fresh = first.take_another().expect("new connection");
        assert!(fresh.conn().prepare("SELECT x FROM temp.mark").is_err());
        // One left in a transaction is not kept.
        again.conn().execute_batch("BEGIN").expect("begin");
        first.keep_another(again);
        let other = first.take_another().expect("new connection");
        assert!(other.conn().prepare("SELECT x FROM temp.mark").is_err());
    }

    #[test]
    fn a_read_only_state_reads_and_never_creates_or_writes() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let path = tmp.path().join("client.db");
        assert!(ClientState::open_read_only(&path).is_err());
        assert!(!path.exists(), "a read-only open created the database");

        let mut state = ClientState::open(&path).expect("state");
        let mut batch = state.batch().expect("batch");
        batch
            .set_failing("docs", "a.txt", "permission denied")
            .expect("failing");
        batch.commit().expect("commit");
        let id = state.client_id().to_owned();
        drop(state);
        let listing = |dir: &Path| -> Vec<String> {
            let mut names: Vec<String> = std::fs::read_dir(dir)
                .expect("list")
                .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
                .collect();
            names.sort();
            names
        };
        let before = listing(tmp.path());
        let bytes = std::fs::read(&path).expect("read db");
        let reader = ClientState::open_read_only(&path).expect("reader");
        assert_eq!(reader.client_id(), id);
        assert_eq!(reader.failing(None).expect("failing")[0].attempts, 1);
        assert!(reader.dir_state("docs").expect("dir state").is_none());
        drop(reader);
        assert_eq!(
            std::fs::read(&path).expect("read db"),
            bytes,
            "a read-only look wrote"
        );
        // SQLite makes the WAL index files a WAL reader needs (empty); nothing else appears.
        let mut after = listing(tmp.path());
        after.retain(|n| !n.ends_with("-shm") && !n.ends_with("-wal"));
        assert_eq!(after, before, "a read-only look left files behind");
        let wal = tmp.path().join("client.db-wal");
        assert!(
            std::fs::metadata(&wal).map_or(true, |m| m.len() == 0),
            "the read-only look wrote to the WAL"
        );
    }

    /// Every file in `dir` with its mode, length and a hash of its bytes.
    fn files_in(dir: &Path) -> Vec<(String, u32, usize, u64)> {
        use std::hash::{Hash, Hasher};
        use std::os::unix::fs::PermissionsExt;
        let mut files: Vec<(String, u32, usize, u64)> = std::fs::read_dir(dir)
            .expect("list")
            .map(|e| {
                let e = e.expect("entry");
                let mode = e.metadata().expect("metadata").permissions().mode();
                let bytes = std::fs::read(e.path()).expect("read");
                let mut hasher = std::collections::hash_map::DefaultHasher::new();
                bytes.hash(&mut hasher);
                let name = e.file_name().to_string_lossy().into_owned();
                (name, mode, bytes.len(), hasher.finish())
            })
            .collect();
        files.sort();
        files
    }

    #[test]
    fn an_untouched_state_reads_and_leaves_every_file_as_it_was() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let path = tmp.path().join("we?ird #%name.db");
        assert!(ClientState::open_untouched(&path).is_err());
        assert!(!path.exists(), "opening a missing database created it");

        let mut state = ClientState::open(&path).expect("state");
        let mut batch = state.batch().expect("batch");
        batch
            .set_synced("docs", "a.txt", &synced_file_for_test())
            .expect("synced");
        batch.commit().expect("commit");
        let id = state.client_id().to_owned();
        drop(state);
        let before = files_in(tmp.path());
        let reader = ClientState::open_untouched(&path).expect("reader");
        assert_eq!(reader.client_id(), id);
        assert!(reader.synced("docs", "a.txt").expect("read").is_some());
        let snapshot = reader.read_snapshot().expect("snapshot");
        drop(snapshot);
        drop(reader);
        assert_eq!(
            files_in(tmp.path()),
            before,
            "an untouched read changed, added or removed a file"
        );

        // Beside a writer: its committed rows are seen, and nothing new appears.
        let mut writer = ClientState::open(&path).expect("writer");
        let mut batch = writer.batch().expect("batch");
        batch
            .set_synced("docs", "b.txt", &synced_file_for_test())
            .expect("synced");
        batch.commit().expect("commit");
        let names =
            |dir: &Path| -> Vec<String> { files_in(dir).into_iter().map(|(n, ..)| n).collect() };
        let beside = names(tmp.path());
        let reader = ClientState::open_untouched(&path).expect("reader beside a writer");
        assert!(reader.synced("docs", "b.txt").expect("read").is_some());
        drop(reader);
        assert_eq!(names(tmp.path()), beside);
        drop(writer);
    }

    fn synced_file_for_test() -> Synced {
        Synced {
            kind: Kind::File,
            size: 3,
            mtime_ns: 1,
            mode: 0o644,
            sha256: Some("ab".repeat(32)),
            target: None,
        }
    }

    #[test]
    fn synced_state_round_trips() {
        let mut state = ClientState::open_in_memory().expect("open");
        let link = Synced {
            kind: Kind::Symlink,
            size: u64::MAX,
            mtime_ns: -1,
            mode: 0o777,
            sha256: None,
            target: Some("a/b".into()),
        };
        set(
            &mut state,
            "docs",
            &[("z", file("aa", 3)), ("l", link.clone())],
        );
        assert_eq!(state.synced("docs", "z").expect("z"), Some(file("aa", 3)));
        assert_eq!(state.synced("docs", "l").expect("l"), Some(link.clone()));
        assert_eq!(state.synced("pics", "z").expect("other dir"), None);
        set(&mut state, "docs", &[("z", file("bb", 4))]);
        assert_eq!(
            state.synced("docs", "z").expect("z"),
            Some(file("bb", 4)),
            "replaced"
        );
        assert_eq!(
            state.synced_all("docs").expect("all"),
            [("l".to_owned(), link), ("z".to_owned(), file("bb", 4))]
        );
        assert_eq!(state.synced_count("docs").expect("count"), 2);
        assert_eq!(state.synced_count("pics").expect("count"), 0);
        let mut batch = state.batch().expect("batch");
        batch.remove_synced("docs", "z").expect("remove");
        batch.remove_synced("docs", "never").expect("remove absent");
        batch.commit().expect("commit");
        assert_eq!(synced_paths(&state, "docs"), ["l"]);
    }

    #[test]
    fn dir_state_is_per_dir_and_replaced() {
        let mut state = ClientState::open_in_memory().expect("open");
        assert_eq!(state.dir_state("docs").expect("none"), None);
        let first = DirState {
            index_id: "idx-1".into(),
            last_seq: 41,
        };
        let mut batch = state.batch().expect("batch");
        batch.set_dir_state("docs", &first).expect("set");
        batch.commit().expect("commit");
        assert_eq!(state.dir_state("docs").expect("docs"), Some(first));
        assert_eq!(state.dir_state("pics").expect("pics"), None);
        // A new index id starts over from 0: the sequence may go down.
        let reset = DirState {
            index_id: "idx-2".into(),
            last_seq: 0,
        };
        let mut batch = state.batch().expect("batch");
        batch.set_dir_state("docs", &reset).expect("set");
        batch.commit().expect("commit");
        assert_eq!(state.dir_state("docs").expect("docs"), Some(reset));
    }

    #[test]
    fn a_dropped_batch_leaves_nothing() {
        let mut state = ClientState::open_in_memory().expect("open");
        set(&mut state, "docs", &[("a", file("aa", 1))]);
        {
            let mut batch = state.batch().expect("batch");
            batch.set_synced("docs", "b", &file("bb", 2)).expect("set");
            batch.remove_synced("docs", "a").expect("remove");
            let st = DirState {
                index_id: "x".into(),
                last_seq: 9,
            };
            batch.set_dir_state("docs", &st).expect("dir state");
        }
        assert_eq!(synced_paths(&state, "docs"), ["a"]);
        assert_eq!(state.dir_state("docs").expect("dir state"), None);
    }

    #[test]
    fn find_by_sha_lists_files_with_that_content() {
        let mut state = ClientState::open_in_memory().expect("open");
        set(
            &mut state,
            "pics",
            &[("x/copy", file("cafe", 2)), ("other", file("beef", 2))],
        );
        set(
            &mut state,
            "docs",
            &[("b", file("cafe", 2)), ("a", file("cafe", 2))],
        );
        let dir_with_sha = Synced {
            kind: Kind::Dir,
            ..file("cafe", 0)
        };
        set(&mut state, "docs", &[("d", dir_with_sha)]);
        let paths = |dir: &str, sha: &str, except: &str, limit: usize| -> Vec<String> {
            let found = state.find_by_sha(dir, sha, except, limit).expect("find");
            found.into_iter().map(|(path, _)| path).collect()
        };
        assert_eq!(paths("docs", "cafe", "", 8), ["a", "b"]);
        assert_eq!(paths("pics", "cafe", "", 8), ["x/copy"]);
        assert_eq!(paths("docs", "cafe", "a", 8), ["b"]);
        assert_eq!(paths("docs", "cafe", "", 1), ["a"]);
        assert!(paths("docs", "CAFE", "", 8).is_empty());
        assert!(paths("docs", "f00d", "", 8).is_empty());
        assert!(paths("src", "cafe", "", 8).is_empty());
        let found = state.find_by_sha("pics", "cafe", "", 8).expect("find");
        assert_eq!(
            found,
            [("x/copy".to_owned(), file("cafe", 2))],
            "with its record"
        );
    }

    /// Thousands of files with one content (empty files, vendored copies): a lookup reads as
    /// many index rows as it asks for, not every file that shares the content.
    #[test]
    fn find_by_sha_reads_only_as_far_as_its_limit() {
        let mut state = ClientState::open_in_memory().expect("open");
        let paths: Vec<String> = (0..5000).map(|i| format!("p/{i:05}")).collect();
        let empty = file("e3b0", 0);
        let entries: Vec<(&str, &Synced)> = paths.iter().map(|p| (p.as_str(), &empty)).collect();
        let mut batch = state.batch().expect("batch");
        batch.set_synced_many("docs", &entries).expect("set");
        batch.commit().expect("commit");
        let paths = |except: &str| -> Vec<String> {
            let found = state.find_by_sha("docs", "e3b0", except, 3).expect("find");
            found.into_iter().map(|(path, _)| path).collect()
        };
        assert_eq!(paths("p/00000"), ["p/00001", "p/00002", "p/00003"]);
        assert_eq!(paths("p/00001"), ["p/00000", "p/00002", "p/00003"]);
        let stmt = state
            .conn
            .prepare_cached(ClientState::FIND_BY_SHA)
            .expect("cached");
        let steps = stmt.get_status(rusqlite::StatementStatus::VmStep);
        assert!(
            steps < 200,
            "{steps} virtual machine steps for 2 x 3 rows of 5,000"
        );
        let prepared = stmt.get_status(rusqlite::StatementStatus::RePrepare);
        assert_eq!(
            prepared, 0,
            "the statement was prepared again for new values"
        );
    }

    #[test]
    fn remove_synced_tree_takes_the_subtree_only() {
        let mut state = ClientState::open_in_memory().expect("open");
        let paths = [
            "a", "a/b", "a/b/c", "a/b/c/d", "a/bc", "a/b.txt", "a/b0", "A/b/x", "a%b/x",
        ];
        let entries: Vec<(&str, Synced)> = paths.iter().map(|p| (*p, file("00", 1))).collect();
        set(&mut state, "docs", &entries);
        set(&mut state, "pics", &[("a/b/c", file("00", 1))]);
        let mut batch = state.batch().expect("batch");
        batch.remove_synced_tree("docs", "a/b").expect("tree");
        batch
            .remove_synced_tree("docs", "a_b")
            .expect("wildcard-looking path");
        batch.commit().expect("commit");
        assert_eq!(
            synced_paths(&state, "docs"),
            ["A/b/x", "a", "a%b/x", "a/b.txt", "a/b0", "a/bc"]
        );
        assert_eq!(
            synced_paths(&state, "pics"),
            ["a/b/c"],
            "other dirs untouched"
        );
        let mut batch = state.batch().expect("batch");
        batch.remove_synced_tree("docs", "").expect("whole dir");
        batch.commit().expect("commit");
        assert_eq!(state.synced_count("docs").expect("count"), 0);
        assert_eq!(state.synced_count("pics").expect("count"), 1);
    }

    #[test]
    fn state_and_client_id_survive_reopen() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let path = tmp.path().join("state.db");
        let id = {
            let mut state = ClientState::open(&path).expect("create");
            set(&mut state, "docs", &[("a", file("aa", 1))]);
            let mut batch = state.batch().expect("batch");
            let st = DirState {
                index_id: "idx".into(),
                last_seq: 7,
            };
            batch.set_dir_state("docs", &st).expect("dir state");
            batch.commit().expect("commit");
            state.client_id().to_owned()
        };
        let state = ClientState::open(&path).expect("reopen");
        assert_eq!(state.client_id(), id);
        assert_eq!(state.synced("docs", "a").expect("a"), Some(file("aa", 1)));
        assert_eq!(
            state.dir_state("docs").expect("docs").map(|s| s.last_seq),
            Some(7)
        );
        let other = ClientState::open(&tmp.path().join("other.db")).expect("other");
        assert_ne!(other.client_id(), id);
        assert!(uuid::Uuid::parse_str(&id).is_ok(), "{id} is a uuid");
    }

    #[test]
    fn inflight_notes_and_failures_are_recorded_and_cleared() {
        let mut state = ClientState::open_in_memory().expect("open");
        let (a, a2, b) = ("a".repeat(64), "c".repeat(64), "b".repeat(64));
        let mut batch = state.batch().expect("batch");
        batch.set_inflight("code", "a.txt", &a).expect("inflight");
        batch
            .set_inflight("code", "a.txt", &a2)
            .expect("a second version");
        batch
            .set_inflight("code", "a.txt", &a2)
            .expect("twice is fine");
        batch.set_inflight("docs", "b.txt", &b).expect("inflight");
        batch.set_failing("code", "x", "first").expect("failing");
        batch.commit().expect("commit");
        assert!(state.was_inflight("code", "a.txt", &a).expect("read"));
        assert!(state.was_inflight("code", "a.txt", &a2).expect("read"));
        assert!(!state.was_inflight("code", "a.txt", &b).expect("read"));
        assert!(!state.was_inflight("code", "b.txt", &b).expect("read"));

        let mut batch = state.batch().expect("batch");
        batch.clear_inflight_path("code", "a.txt").expect("clear");
        batch.set_failing("code", "x", "second").expect("failing");
        batch.set_failing("docs", "y", "other").expect("failing");
        batch.commit().expect("commit");
        assert!(!state.was_inflight("code", "a.txt", &a).expect("read"));
        assert!(state.was_inflight("docs", "b.txt", &b).expect("read"));
        let failing = state.failing(Some("code")).expect("failing");
        assert_eq!(failing.len(), 1);
        assert_eq!(
            (failing[0].error.as_str(), failing[0].attempts),
            ("second", 2)
        );
        assert_eq!(state.failing(None).expect("all").len(), 2);

        let mut batch = state.batch().expect("batch");
        batch.clear_failing_paths("code", &["x"]).expect("clear");
        batch.clear_inflight("docs").expect("clear dir");
        batch.commit().expect("commit");
        assert!(state.failing(Some("code")).expect("failing").is_empty());
        assert!(!state.was_inflight("docs", "b.txt", &b).expect("read"));
    }

    #[test]
    fn many_row_writes_record_what_one_row_writes_do_across_statement_boundaries() {
        // 150 paths: three statements' worth, one path twice (the later record wins) and one
        // already recorded (replaced).
        let mut entries: Vec<(String, Synced)> = (0..150)
            .map(|i| (format!("d/f{i:03}"), file(&format!("{i:064x}"), i)))
            .collect();
        entries.insert(100, ("d/f010".to_string(), file(&"e".repeat(64), 7)));
        let earlier = ("d/f005", file(&"f".repeat(64), 99));
        let borrowed: Vec<(&str, &Synced)> = entries.iter().map(|(p, s)| (p.as_str(), s)).collect();

        let mut one_by_one = ClientState::open_in_memory().expect("open");
        set(&mut one_by_one, "code", std::slice::from_ref(&earlier));
        set(
            &mut one_by_one,
            "code",
            &entries
                .iter()
                .map(|(p, s)| (p.as_str(), s.clone()))
                .collect::<Vec<_>>(),
        );
        let mut many = ClientState::open_in_memory().expect("open");
        set(&mut many, "code", std::slice::from_ref(&earlier));
        let mut batch = many.batch().expect("batch");
        batch
            .set_synced_many("code", &borrowed)
            .expect("set_synced_many");
        batch.set_synced_many("code", &[]).expect("nothing");
        batch.commit().expect("commit");
        let all = many.synced_all("code").expect("synced_all");
        assert_eq!(all, one_by_one.synced_all("code").expect("synced_all"));
        assert_eq!(all.len(), 150);
        assert_eq!(
            many.synced("code", "d/f010").expect("read"),
            Some(file(&"e".repeat(64), 7))
        );

        let shas: Vec<String> = (0..130).map(|i| format!("{i:064x}")).collect();
        let notes: Vec<(&str, &str)> = entries
            .iter()
            .zip(&shas)
            .map(|((p, _), sha)| (p.as_str(), sha.as_str()))
            .collect();
        let mut batch = many.batch().expect("batch");
        batch.set_inflight_many("code", &notes).expect("notes");
        batch
            .set_inflight_many("other", &notes[..1])
            .expect("notes");
        batch.commit().expect("commit");
        assert!(notes
            .iter()
            .all(|(p, sha)| many.was_inflight("code", p, sha).expect("read")));
        let cleared: Vec<&str> = notes[..129].iter().map(|(p, _)| *p).collect();
        let mut batch = many.batch().expect("batch");
        batch.clear_inflight_paths("code", &cleared).expect("clear");
        batch.commit().expect("commit");
        let left: Vec<&str> = notes
            .iter()
            .filter(|(p, sha)| many.was_inflight("code", p, sha).expect("read"))
            .map(|(p, _)| *p)
            .collect();
        assert_eq!(left, vec![notes[129].0]);
        assert!(many
            .was_inflight("other", notes[0].0, notes[0].1)
            .expect("read"));

        // Failures: 150 paths of code fail, and one of docs; 140 of code apply (three
        // statements), then the rest while docs alone has failures left.
        let mut batch = many.batch().expect("batch");
        for (path, _) in &entries {
            batch.set_failing("code", path, "no room").expect("failing");
        }
        batch
            .set_failing("docs", "d/f000", "no room")
            .expect("failing");
        batch.commit().expect("commit");
        let paths: Vec<&str> = entries.iter().map(|(p, _)| p.as_str()).collect();
        let mut batch = many.batch().expect("batch");
        batch
            .clear_failing_paths("code", &paths[..141])
            .expect("clear");
        batch.commit().expect("commit");
        let failing = |state: &ClientState, dir| -> Vec<String> {
            let mut paths: Vec<String> = state
                .failing(Some(dir))
                .expect("failing")
                .into_iter()
                .map(|f| f.path)
                .collect();
            paths.sort();
            paths
        };
        let mut left: Vec<&str> = paths[141..].to_vec();
        left.sort_unstable();
        left.dedup();
        assert_eq!(failing(&many, "code"), left);
        let mut batch = many.batch().expect("batch");
        batch.clear_failing_paths("code", &paths).expect("clear");
        batch.clear_failing_paths("other", &paths).expect("clear");
        batch.commit().expect("commit");
        assert!(failing(&many, "code").is_empty());
        assert_eq!(failing(&many, "docs"), ["d/f000"]);
    }
}
