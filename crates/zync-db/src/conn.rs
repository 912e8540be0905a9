//! Opening a connection: the pragmas every zync database gets, and turning "this file is not
//! a database" into an error that names the file and says what to do.

use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

use rusqlite::config::DbConfig;
use rusqlite::{Connection, ErrorCode, OpenFlags};

use crate::error::{DbError, Result};
use crate::migrate::{self, Schema};

/// How hard SQLite works to make a commit survive a power cut.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Synchronous {
    /// WAL + NORMAL: a commit survives a crash of the process, and at worst the last commits
    /// are lost on power loss. Used by nothing today: both databases hand out or store
    /// sequence numbers that must not go back.
    #[allow(dead_code)]
    Normal,
    /// WAL + FULL: a commit is on disk before `commit` returns. The client's last sequence is
    /// its durability point (invariant 2 (docs/ARCHITECTURE.md)), and the daemon's sequence numbers must not be
    /// reused after a power cut, so both use this.
    Full,
}

impl Synchronous {
    pub(crate) fn pragma(self) -> &'static str {
        match self {
            Synchronous::Normal => "PRAGMA synchronous = NORMAL",
            Synchronous::Full => "PRAGMA synchronous = FULL",
        }
    }
}

/// How long a statement waits for another process's lock before failing with "busy".
pub(crate) const BUSY_TIMEOUT: Duration = Duration::from_millis(5000);

/// Opens (creating it if needed) the database file at `path`, sets it up and brings its schema
/// up to date.
pub(crate) fn open_file(path: &Path, schema: &Schema, sync: Synchronous) -> Result<Connection> {
    // No URI flag: a path is a path, even one that starts with "file:".
    let flags = OpenFlags::SQLITE_OPEN_READ_WRITE
        | OpenFlags::SQLITE_OPEN_CREATE
        | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    check_directory(path)?;
    make_private(path)?;
    let mut conn = Connection::open_with_flags(path, flags).map_err(|source| DbError::Open {
        path: path.to_owned(),
        source,
    })?;
    // SQLite opens lazily: a garbage file is only noticed by the first statement that reads
    // the header, which is among the pragmas below.
    configure(&conn, sync).map_err(|err| classify(err, path))?;
    // The side files SQLite has open now are the ones checked or made above; checked again
    // all the same, before any of zync's state is read or written through them.
    check_owned(path)?;
    migrate::migrate(&mut conn, schema, path).map_err(|err| match err {
        DbError::Sqlite { source, context } => match source.sqlite_error_code() {
            Some(ErrorCode::NotADatabase) => DbError::NotADatabase {
                path: path.to_owned(),
                source,
            },
            _ => DbError::Sqlite { context, source },
        },
        other => other,
    })?;
    Ok(conn)
}

/// The files SQLite keeps beside a database in WAL mode (and a rollback journal, which the
/// switch to WAL can leave behind).
const SIDE_FILES: [&str; 3] = ["-wal", "-shm", "-journal"];

/// The effective uid of this process: the one owner zync trusts for its state. (zync-fs has
/// the same check for its own files; the two crates do not depend on each other.)
pub(crate) fn euid() -> u32 {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() }
}

/// What to do about a database file user `uid` owns, as zync-fs says it for its own files
/// (`zync_fs::what_to_do`; the crates do not depend on each other): root looking at a
/// user's database runs as that user instead, anyone else removes what may have been
/// planted or keeps the database where only they can write.
pub(crate) fn what_to_do(uid: u32) -> String {
    if euid() == 0 {
        let who = user_name(uid).unwrap_or_else(|| uid.to_string());
        format!(
            "If it is that user's zync state, run this as them (`sudo -u {who} ...`) rather \
             than as root; if another user put it there to take over zync's state, remove it"
        )
    } else {
        "Remove it (another user may have put it there to take over zync's state), or choose \
         a --db in a directory only you can write; on a network file system that maps owners \
         (NFS with root_squash, sshfs), keep zync's state on a local disk"
            .to_string()
    }
}

/// `uid 65534 (nobody)`, or `uid 65534` when the system has no name for it.
pub(crate) fn describe_user(uid: u32) -> String {
    match user_name(uid) {
        Some(name) => format!("uid {uid} ({name})"),
        None => format!("uid {uid}"),
    }
}

/// The login name of user `uid`, when the system knows one.
fn user_name(uid: u32) -> Option<String> {
    let mut buf = vec![0u8; 16 * 1024];
    // SAFETY: an all-zero passwd is a valid value for getpwuid_r to fill in.
    let mut pwd: libc::passwd = unsafe { std::mem::zeroed() };
    let mut found: *mut libc::passwd = std::ptr::null_mut();
    // SAFETY: every pointer is valid for the call, and `buf` for its length.
    let rc = unsafe {
        libc::getpwuid_r(
            uid,
            &mut pwd,
            buf.as_mut_ptr().cast(),
            buf.len(),
            &mut found,
        )
    };
    if rc != 0 || found.is_null() || pwd.pw_name.is_null() {
        return None;
    }
    // SAFETY: getpwuid_r succeeded, so pw_name is a NUL-terminated string inside `buf`.
    let name = unsafe { std::ffi::CStr::from_ptr(pwd.pw_name) };
    Some(name.to_string_lossy().into_owned())
}

/// Refuses `meta`, what is at `path`, when another user owns it.
fn check_owner(path: &Path, meta: &std::fs::Metadata) -> Result<()> {
    use std::os::unix::fs::MetadataExt;
    if meta.uid() == euid() {
        return Ok(());
    }
    Err(DbError::NotOwned {
        path: path.to_owned(),
        uid: meta.uid(),
    })
}

/// Refuses a database in a directory every user may write without the sticky bit: there any
/// of them can rename zync's files away and put theirs in place between any look and any
/// open. In a sticky one (/tmp) they can only make new names, which the owner checks here
/// refuse; a group-writable one is left to the user, who chose whom the group holds.
fn check_directory(path: &Path) -> Result<()> {
    let dir = match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent,
        _ => Path::new("."),
    };
    // A missing directory and the like: SQLite's own open names the problem better.
    let Ok(meta) = std::fs::metadata(dir) else {
        return Ok(());
    };
    let mode = meta.permissions().mode() & 0o7777;
    if mode & 0o002 != 0 && mode & 0o1000 == 0 {
        return Err(DbError::OpenDirectory {
            dir: dir.to_owned(),
            mode,
        });
    }
    Ok(())
}

/// Makes the database file private before SQLite opens it: a new one is created empty with
/// mode 0600 (SQLite takes an empty file as a new database), and one an older zync created
/// under the default umask loses its group and other bits, its side files too. SQLite gives
/// the `-wal` and `-shm` files it creates the mode of the database file, so they follow.
/// The directory is not touched: the user chose it. A database or side file of another
/// user's is refused ([`DbError::NotOwned`]): one made first in a shared directory would have
/// SQLite read their content (a `-wal` is replayed on open) as zync's own state.
fn make_private(path: &Path) -> Result<()> {
    let private = |path: &Path, source| DbError::Private {
        path: path.to_owned(),
        source,
    };
    match std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(PRIVATE_MODE)
        .open(path)
    {
        // Set again on the open file: the umask can only narrow the mode given to open, and a
        // umask taking the owner's bits too would leave a file zync cannot write.
        Ok(file) => file
            .set_permissions(std::fs::Permissions::from_mode(PRIVATE_MODE))
            .map_err(|e| private(path, e))?,
        // The database itself may be reached through a symlink of the user's own (SQLite
        // resolves one in the database's path); it is changed by path, without opening it.
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => tighten_database(path)?,
        // A missing directory and the like: SQLite's own open names the problem better.
        Err(_) => return Ok(()),
    }
    for suffix in SIDE_FILES {
        let mut side = path.as_os_str().to_owned();
        side.push(suffix);
        let side = Path::new(&side);
        if WAL_FILES.contains(&suffix) && create_side_file(side)? {
            continue;
        }
        tighten(side)?;
    }
    Ok(())
}

/// The side files SQLite creates by path, without `O_EXCL`, whenever they are missing: made
/// by zync first ([`create_side_file`]).
const WAL_FILES: [&str; 2] = ["-wal", "-shm"];

/// Creates the missing side file `path`, empty (SQLite takes an empty `-wal` for no log and
/// an empty `-shm` for one to set up), mode 0600, with `O_EXCL` and without following a
/// symlink; false when one is there already. Otherwise SQLite would create it itself, by
/// path and without `O_EXCL`, and another user watching a sticky directory (a `--db` in /tmp)
/// could make it in the moment between the owner checks here and SQLite's open: SQLite would
/// then write the index into their file and replay what they wrote into it. A new file has
/// no POSIX locks for its close to drop (see [`tighten`]).
fn create_side_file(path: &Path) -> Result<bool> {
    use std::os::unix::fs::OpenOptionsExt;
    match std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(PRIVATE_MODE)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)
    {
        Ok(file) => file
            .set_permissions(std::fs::Permissions::from_mode(PRIVATE_MODE))
            .map(|()| true)
            .map_err(|source| DbError::Private {
                path: path.to_owned(),
                source,
            }),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(false),
        // A missing directory and the like: SQLite's own open names the problem better.
        Err(_) => Ok(false),
    }
}

/// The mode of a zync database and its side files.
const PRIVATE_MODE: u32 = 0o600;

/// Takes group and other bits off the existing database file at `path`, following a symlink
/// as SQLite does, by path: a descriptor of it opened and closed here would drop the POSIX
/// locks SQLite holds on it (see [`tighten`]).
fn tighten_database(path: &Path) -> Result<()> {
    let private = |source| DbError::Private {
        path: path.to_owned(),
        source,
    };
    let Some(meta) = database_meta(path)? else {
        return Ok(());
    };
    let mode = meta.permissions().mode() & 0o7777;
    if mode & 0o077 == 0 {
        return Ok(());
    }
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode & 0o700)).map_err(private)
}

/// What the existing database file at `path` is, following a symlink as SQLite does, after
/// checking that the symlink (if it is one) and the file are this user's; `None` when it is
/// missing.
fn database_meta(path: &Path) -> Result<Option<std::fs::Metadata>> {
    let private = |source| DbError::Private {
        path: path.to_owned(),
        source,
    };
    match std::fs::symlink_metadata(path) {
        Ok(link) if link.file_type().is_symlink() => check_owner(path, &link)?,
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(private(e)),
    }
    let meta = match std::fs::metadata(path) {
        Ok(meta) => meta,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(private(e)),
    };
    check_owner(path, &meta)?;
    Ok(Some(meta))
}

/// Checks, without changing anything, that the database file at `path` and its side files
/// are this user's, for the read-only opens: a `-wal` of another user's would be read as
/// zync's state by a status command just as by a writer.
fn check_owned(path: &Path) -> Result<()> {
    database_meta(path)?;
    for suffix in SIDE_FILES {
        let mut side = path.as_os_str().to_owned();
        side.push(suffix);
        side_file(Path::new(&side))?;
    }
    Ok(())
}

/// A path-only descriptor of the existing side file at `path` (never through a symlink) and
/// what it is, once checked to be a regular file of this user's; `None` when it is missing.
fn side_file(path: &Path) -> Result<Option<(std::fs::File, std::fs::Metadata)>> {
    use std::os::unix::fs::OpenOptionsExt;
    let private = |source| DbError::Private {
        path: path.to_owned(),
        source,
    };
    let handle = match std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_PATH | libc::O_NOFOLLOW)
        .open(path)
    {
        Ok(handle) => handle,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(private(e)),
    };
    let meta = handle.metadata().map_err(private)?;
    if meta.file_type().is_symlink() {
        return Err(private(std::io::Error::other(
            "it is a symlink, which zync does not follow; remove it (zync makes the file anew)",
        )));
    }
    if !meta.is_file() {
        return Err(private(std::io::Error::other(
            "it is not a regular file; remove it (zync makes the file anew)",
        )));
    }
    // Before its mode is touched: root may change another user's file.
    check_owner(path, &meta)?;
    Ok(Some((handle, meta)))
}

/// Takes group and other bits off an existing side file (`-wal`, `-shm`, `-journal`); a
/// missing one is fine. Never through a symlink (SQLite opens its side files with
/// `O_NOFOLLOW` too): another user who planted
/// `sync_client.db-wal` as a symlink in a directory they can write (the default database is
/// relative to the working directory) had the mode of the user's file it named changed.
///
/// The file is looked at and changed through a path-only descriptor (`O_PATH | O_NOFOLLOW`),
/// so nothing swapped in between is touched. Only a path-only one: closing any other
/// descriptor of a database file drops every POSIX lock this process holds on it, those of
/// SQLite's open connections too, and another process then took the `-shm` for abandoned and
/// truncated it under the daemon's mapping of it (SIGBUS).
///
/// One of another user's is refused ([`side_file`]): SQLite would replay a `-wal` they wrote.
fn tighten(path: &Path) -> Result<()> {
    use std::os::fd::AsRawFd;
    let private = |source| DbError::Private {
        path: path.to_owned(),
        source,
    };
    let Some((handle, meta)) = side_file(path)? else {
        return Ok(());
    };
    let mode = meta.permissions().mode() & 0o7777;
    if mode & 0o077 == 0 {
        return Ok(());
    }
    // A path-only descriptor cannot be changed itself; its /proc entry leads to the file.
    // Without /proc, by path: it was a regular file a moment ago.
    let private_mode = std::fs::Permissions::from_mode(mode & 0o700);
    let through = PathBuf::from(format!("/proc/self/fd/{}", handle.as_raw_fd()));
    match std::fs::set_permissions(&through, private_mode.clone()) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            std::fs::set_permissions(path, private_mode).map_err(private)
        }
        other => other.map_err(private),
    }
}

/// Opens the existing database file at `path` read-only: never creates it, never migrates it,
/// never writes (status commands must change nothing). Works beside a writer thanks
/// to WAL; the schema must be exactly this build's.
pub(crate) fn open_read_only(path: &Path, schema: &Schema) -> Result<Connection> {
    let flags = OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    check_owned(path)?;
    let conn = Connection::open_with_flags(path, flags).map_err(|source| DbError::Open {
        path: path.to_owned(),
        source,
    })?;
    conn.busy_timeout(BUSY_TIMEOUT)
        .and_then(|()| stable_plans(&conn))
        .map_err(|err| classify(err, path))?;
    check_schema(&conn, schema, path)?;
    // A side file SQLite made or found between the check above and its open (another user
    // in a sticky directory could make one in that moment): nothing read is shown then.
    check_owned(path)?;
    Ok(conn)
}

/// Checks that a read-only connection's database has the current schema; a file that is not
/// a database at all is [`DbError::NotADatabase`].
fn check_schema(conn: &Connection, schema: &Schema, path: &Path) -> Result<()> {
    migrate::check_current(conn, schema, path).map_err(|err| match err {
        DbError::Sqlite { source, context } => match source.sqlite_error_code() {
            Some(ErrorCode::NotADatabase) => DbError::NotADatabase {
                path: path.to_owned(),
                source,
            },
            _ => DbError::Sqlite { context, source },
        },
        other => other,
    })
}

/// Opens the existing database file at `path` to read it as it stands on disk, as SQLite's
/// `immutable=1` does: no lock is taken and no `-wal` or `-shm` file is created beside it (a
/// plain read-only open of a WAL database makes both, and leaves them). Only right for a
/// database no connection has open, which is when no `-wal` file is there: a writer that
/// starts later writes its WAL first, so this reader sees the state from before it.
pub(crate) fn open_immutable(path: &Path, schema: &Schema) -> Result<Connection> {
    let flags = OpenFlags::SQLITE_OPEN_READ_ONLY
        | OpenFlags::SQLITE_OPEN_URI
        | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    check_owned(path)?;
    let conn = Connection::open_with_flags(immutable_uri(path), flags).map_err(|source| {
        DbError::Open {
            path: path.to_owned(),
            source,
        }
    })?;
    stable_plans(&conn).map_err(|err| classify(err, path))?;
    check_schema(&conn, schema, path)?;
    Ok(conn)
}

/// `file:PATH?immutable=1`, every byte of the path outside `[A-Za-z0-9/._~-]` percent-encoded
/// (a `?`, `#` or `%` in a file name must not be read as URI syntax).
fn immutable_uri(path: &Path) -> String {
    use std::fmt::Write;
    use std::os::unix::ffi::OsStrExt;
    let mut uri = String::from("file:");
    for &b in path.as_os_str().as_bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'/' | b'.' | b'_' | b'~' | b'-') {
            uri.push(char::from(b));
        } else {
            let _ = write!(uri, "%{b:02X}");
        }
    }
    uri.push_str("?immutable=1");
    uri
}

/// Opens a private in-memory database with the same setup, for tests and dry runs.
pub(crate) fn open_memory(schema: &Schema, sync: Synchronous) -> Result<Connection> {
    let path = Path::new(":memory:");
    let mut conn = Connection::open_in_memory().map_err(|source| DbError::Open {
        path: path.to_owned(),
        source,
    })?;
    configure(&conn, sync).map_err(|err| classify(err, path))?;
    migrate::migrate(&mut conn, schema, path)?;
    Ok(conn)
}

fn configure(conn: &Connection, sync: Synchronous) -> rusqlite::Result<()> {
    conn.busy_timeout(BUSY_TIMEOUT)?;
    // WAL lets the daemon's readers (and zync-apply) read while the indexer writes. An
    // in-memory database answers "memory"; a file system without shared memory may keep the
    // old mode. Both still work, only with less concurrency, so the answer is not checked.
    conn.query_row("PRAGMA journal_mode = WAL", [], |row| {
        row.get::<_, String>(0)
    })?;
    conn.execute_batch(sync.pragma())?;
    conn.execute_batch("PRAGMA foreign_keys = ON")?;
    stable_plans(conn)
}

/// Plans that do not depend on the values bound, on every connection (it writes nothing).
/// Without it, SQLite marks a statement whose plan looked at a bound value (an `ORDER BY`
/// after equalities, a `LIMIT ?`) to be compiled again whenever its bindings are cleared, which
/// rusqlite's statement cache does each time a statement goes back: such a `prepare_cached`
/// statement was compiled anew at every use. zync keeps no statistics (no ANALYZE) and no
/// partial index for values to matter.
fn stable_plans(conn: &Connection) -> rusqlite::Result<()> {
    conn.set_db_config(DbConfig::SQLITE_DBCONFIG_ENABLE_QPSG, true)?;
    Ok(())
}

fn classify(source: rusqlite::Error, path: &Path) -> DbError {
    match source.sqlite_error_code() {
        Some(ErrorCode::NotADatabase) => DbError::NotADatabase {
            path: path.to_owned(),
            source,
        },
        Some(ErrorCode::CannotOpen | ErrorCode::PermissionDenied | ErrorCode::ReadOnly) => {
            DbError::Open {
                path: path.to_owned(),
                source,
            }
        }
        _ => DbError::Sqlite {
            context: format!("setting up the database {}", path.display()),
            source,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{ClientState, Index};

    fn pragma(conn: &Connection, name: &str) -> String {
        conn.query_row(&format!("PRAGMA {name}"), [], |r| {
            r.get::<_, rusqlite::types::Value>(0)
        })
        .map(|v| format!("{v:?}"))
        .expect("pragma")
    }

    #[test]
    fn every_file_database_gets_its_pragmas() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let daemon = open_file(
            &tmp.path().join("i.db"),
            &migrate::INDEX,
            Synchronous::Normal,
        )
        .expect("index");
        let client = open_file(
            &tmp.path().join("c.db"),
            &migrate::CLIENT,
            Synchronous::Full,
        )
        .expect("client");
        for conn in [&daemon, &client] {
            assert_eq!(pragma(conn, "journal_mode"), r#"Text("wal")"#);
            assert_eq!(pragma(conn, "foreign_keys"), "Integer(1)");
            assert_eq!(pragma(conn, "busy_timeout"), "Integer(5000)");
        }
        // 1 = NORMAL, 2 = FULL.
        assert_eq!(pragma(&daemon, "synchronous"), "Integer(1)");
        assert_eq!(pragma(&client, "synchronous"), "Integer(2)");
    }

    /// rusqlite's statement cache clears a statement's bindings when it goes back; without
    /// stable plans, SQLite then compiled a statement whose plan looked at a bound value (an
    /// `ORDER BY` after equalities, a `LIMIT ?`) again at its next use.
    #[test]
    fn a_cached_statement_is_compiled_once_whatever_is_bound() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let index = open_file(&tmp.path().join("i.db"), &migrate::INDEX, Synchronous::Full);
        let c = tmp.path().join("c.db");
        // Made and closed first: an immutable reader reads only what is checkpointed.
        drop(open_file(&c, &migrate::CLIENT, Synchronous::Full).expect("create"));
        let immutable = open_immutable(&c, &migrate::CLIENT);
        let read_only = open_read_only(&c, &migrate::CLIENT);
        let client = open_file(&c, &migrate::CLIENT, Synchronous::Full);
        let memory = open_memory(&migrate::CLIENT, Synchronous::Full);
        for conn in [index, client, memory, read_only, immutable] {
            let conn = conn.expect("open");
            // The shape of the client's lookup by content: a secondary index, two equalities,
            // rows in the index's order.
            conn.execute_batch(
                "CREATE TEMP TABLE t (a TEXT, b TEXT, c TEXT, PRIMARY KEY (a, b)) WITHOUT ROWID;
                 CREATE INDEX temp.t_c ON t (c);",
            )
            .expect("table");
            let sql = "SELECT b FROM t WHERE c = ?1 AND a = ?2 ORDER BY b";
            for key in ["a", "b", "c", "a"] {
                let mut stmt = conn.prepare_cached(sql).expect("prepare");
                let found: Vec<String> = stmt
                    .query_map((key, "x"), |row| row.get(0))
                    .expect("query")
                    .collect::<rusqlite::Result<_>>()
                    .expect("rows");
                assert!(found.is_empty());
            }
            let stmt = conn.prepare_cached(sql).expect("cached");
            let compiled = stmt.get_status(rusqlite::StatementStatus::RePrepare);
            assert_eq!(compiled, 0, "compiled again for new bindings");
        }
    }

    #[test]
    fn the_public_constructors_pick_the_right_durability() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let index = Index::open(&tmp.path().join("i.db")).expect("index");
        let client = ClientState::open(&tmp.path().join("c.db")).expect("client");
        // Both FULL (2): neither a handed-out nor a stored sequence may go back on power loss.
        assert_eq!(pragma(index.conn(), "synchronous"), "Integer(2)");
        assert_eq!(pragma(client.conn(), "synchronous"), "Integer(2)");
        // The client's multi-row writes keep their statement journal in memory (2).
        assert_eq!(pragma(client.conn(), "temp_store"), "Integer(2)");
        // An index handle's commits can stop waiting for the disk, and wait again.
        index.set_commits_wait(false).expect("normal");
        assert_eq!(pragma(index.conn(), "synchronous"), "Integer(1)");
        index.set_commits_wait(true).expect("full");
        assert_eq!(pragma(index.conn(), "synchronous"), "Integer(2)");
    }

    /// In octal, so that a failure reads `644`, not `420`; `None` when missing.
    fn mode_of(path: &Path) -> Option<String> {
        std::fs::metadata(path)
            .ok()
            .map(|md| format!("{:o}", md.permissions().mode() & 0o7777))
    }

    fn with_suffix(path: &Path, suffix: &str) -> std::path::PathBuf {
        let mut s = path.as_os_str().to_owned();
        s.push(suffix);
        s.into()
    }

    #[test]
    fn new_databases_and_their_wal_and_shm_are_private() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let index_path = tmp.path().join("i.db");
        let client_path = tmp.path().join("c.db");
        let index = Index::open(&index_path).expect("index");
        let client = ClientState::open(&client_path).expect("client");
        for path in [&index_path, &client_path] {
            for suffix in ["", "-wal", "-shm"] {
                let file = with_suffix(path, suffix);
                assert_eq!(
                    mode_of(&file),
                    Some("600".to_string()),
                    "mode of {} (expected 600)",
                    file.display()
                );
            }
        }
        drop((index, client));
    }

    #[test]
    fn a_database_an_older_zync_left_readable_is_made_private() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let path = tmp.path().join("old.db");
        // Held open, so that its -wal and -shm stay, as beside a database that was not closed.
        let old = Index::open(&path).expect("create");
        let files: Vec<_> = ["", "-wal", "-shm"]
            .iter()
            .map(|suffix| with_suffix(&path, suffix))
            .collect();
        for file in &files {
            std::fs::set_permissions(file, std::fs::Permissions::from_mode(0o644)).expect("chmod");
        }
        let again = Index::open(&path).expect("reopen");
        for file in &files {
            assert_eq!(
                mode_of(file),
                Some("600".to_string()),
                "mode of {} (expected 600)",
                file.display()
            );
        }
        drop((old, again));
        // A read-only look changes nothing, modes included.
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o640)).expect("chmod");
        drop(Index::open_read_only(&path).expect("read only"));
        assert_eq!(mode_of(&path).as_deref(), Some("640"));
    }

    /// A database reached through a symlink of the user's own opens, and is made private.
    #[test]
    fn a_database_behind_the_users_own_symlink_opens() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let real = tmp.path().join("real.db");
        drop(Index::open(&real).expect("create"));
        std::fs::set_permissions(&real, std::fs::Permissions::from_mode(0o644)).expect("chmod");
        let link = tmp.path().join("sync.db");
        std::os::unix::fs::symlink(&real, &link).expect("symlink");
        let index = Index::open(&link).expect("open through the symlink");
        index.last_seq().expect("read");
        assert_eq!(mode_of(&real).as_deref(), Some("600"));
    }

    /// The POSIX locks this process holds on `file`, as /proc/locks lists them.
    fn locks_on(file: &Path) -> usize {
        use std::os::unix::fs::MetadataExt;
        let inode = std::fs::metadata(file).expect("stat").ino();
        let pid = std::process::id();
        std::fs::read_to_string("/proc/locks")
            .expect("/proc/locks")
            .lines()
            .filter(|line| line.contains("POSIX"))
            .filter(|line| line.split_whitespace().nth(4) == Some(&pid.to_string()))
            .filter(|line| {
                let id = line.split_whitespace().nth(5).unwrap_or("");
                id.rsplit(':').next() == Some(&inode.to_string())
            })
            .count()
    }

    /// Opening a database already open in this process keeps the locks of the connections
    /// that have it: a descriptor of one of its files opened and closed beside them drops
    /// them all, and another process then took the `-shm` for abandoned and truncated it
    /// under the daemon's mapping (SIGBUS).
    #[test]
    fn opening_a_database_again_keeps_the_locks_of_its_open_connections() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let path = tmp.path().join("sync.db");
        let first = Index::open(&path).expect("open");
        first.last_seq().expect("read");
        let shm = with_suffix(&path, "-shm");
        let held = locks_on(&shm);
        assert!(held > 0, "SQLite holds no lock on {}", shm.display());
        std::fs::set_permissions(&shm, std::fs::Permissions::from_mode(0o644)).expect("chmod");
        let second = Index::open(&path).expect("open again");
        assert_eq!(mode_of(&shm).as_deref(), Some("600"), "made private again");
        assert!(
            locks_on(&shm) >= held,
            "the first connection's locks on -shm are gone"
        );
        drop((first, second));
    }

    /// Another user plants the database's `-wal` and `-shm` as symlinks to files of the user
    /// (in a directory they can write): opening refuses, saying so, and the files they name
    /// keep their mode.
    /// The `-wal` and `-shm` of a database are made by zync before SQLite opens it, mode 0600
    /// and with `O_EXCL`: SQLite makes them by path without `O_EXCL`, and another user in a
    /// sticky directory could make them in between (helper-63 won that race 3 times of 5).
    /// One there already is looked at as before, not replaced.
    #[test]
    fn the_wal_files_are_made_by_zync_before_sqlite_opens_the_database() {
        use std::os::unix::fs::MetadataExt;
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("sync.db");
        make_private(&path).expect("private");
        for suffix in WAL_FILES {
            let side = with_suffix(&path, suffix);
            let meta = std::fs::symlink_metadata(&side)
                .unwrap_or_else(|e| panic!("{} was not made: {e}", side.display()));
            assert!(meta.is_file(), "{}", side.display());
            assert_eq!(meta.len(), 0, "{}", side.display());
            assert_eq!(meta.mode() & 0o7777, 0o600, "{}", side.display());
            assert_eq!(meta.uid(), euid(), "{}", side.display());
        }
        let wal = with_suffix(&path, "-wal");
        let inode = std::fs::metadata(&wal).expect("wal").ino();
        make_private(&path).expect("again");
        assert_eq!(std::fs::metadata(&wal).expect("wal").ino(), inode);
        // SQLite takes the empty files as they are, and the database works.
        let mut index = crate::Index::open(&path).expect("open");
        let w = index.writer().expect("writer");
        w.commit().expect("commit");
        assert_eq!(std::fs::metadata(&wal).expect("wal").ino(), inode);
    }

    #[test]
    fn side_files_planted_as_symlinks_are_not_followed() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let path = tmp.path().join("sync_client.db");
        let victim = tmp.path().join("notes.txt");
        std::fs::write(&victim, "the user's notes\n").expect("write");
        std::fs::set_permissions(&victim, std::fs::Permissions::from_mode(0o644)).expect("chmod");
        for suffix in ["-wal", "-shm"] {
            std::os::unix::fs::symlink(&victim, with_suffix(&path, suffix)).expect("symlink");
        }
        let refused = Index::open(&path).expect_err("planted symlinks");
        assert_eq!(mode_of(&victim).as_deref(), Some("644"));
        assert!(refused.to_string().contains("symlink"), "{refused}");
        assert_eq!(
            std::fs::read_to_string(&victim).expect("read"),
            "the user's notes\n"
        );
    }

    /// Whether this test runs as root, which making another user's file needs.
    fn root_or_skip() -> bool {
        let root = euid() == 0;
        if !root {
            eprintln!("skipped: making a file of another user's needs root");
        }
        root
    }

    /// Another user who can create files beside the database (a sticky shared directory)
    /// plants a regular `-wal` of theirs, which SQLite would replay into the database on open:
    /// the writer and the read-only readers refuse it, naming it and its owner, and leave it
    /// as it is; the same for the database file itself.
    #[test]
    fn another_users_wal_or_database_file_is_refused_by_writers_and_readers() {
        if !root_or_skip() {
            return;
        }
        let tmp = tempfile::tempdir().expect("tempdir");
        let path = tmp.path().join("sync_client.db");
        drop(ClientState::open(&path).expect("create"));
        let wal = with_suffix(&path, "-wal");
        std::fs::write(&wal, b"their log").expect("plant");
        std::fs::set_permissions(&wal, std::fs::Permissions::from_mode(0o644)).expect("chmod");
        std::os::unix::fs::chown(&wal, Some(65534), Some(65534)).expect("chown");
        let refusals = [
            ClientState::open(&path).map(drop),
            ClientState::open_read_only(&path).map(drop),
            open_immutable(&path, &migrate::CLIENT).map(drop),
        ];
        for refused in refusals {
            let err = refused.expect_err("another user's -wal");
            assert!(
                matches!(err, DbError::NotOwned { uid: 65534, .. }),
                "{err:?}"
            );
            let msg = err.to_string();
            assert!(
                msg.contains(&wal.display().to_string())
                    && msg.contains("belongs to another user, uid 65534")
                    && msg.to_lowercase().contains("remove it"),
                "{msg}"
            );
        }
        assert_eq!(std::fs::read(&wal).expect("read"), b"their log");
        assert_eq!(mode_of(&wal).as_deref(), Some("644"), "their mode changed");
        std::fs::remove_file(&wal).expect("rm");
        std::os::unix::fs::chown(&path, Some(65534), Some(65534)).expect("chown");
        let err = ClientState::open(&path)
            .map(drop)
            .expect_err("their database");
        assert!(matches!(err, DbError::NotOwned { .. }), "{err:?}");
        let err = Index::open_read_only(&path)
            .map(drop)
            .expect_err("their database");
        assert!(matches!(err, DbError::NotOwned { .. }), "{err:?}");
    }

    /// A directory every user may write without the sticky bit lets any of them swap zync's
    /// files for their own between any look and any open: refused. Sticky (as /tmp) is fine.
    #[test]
    fn a_database_in_a_directory_every_user_may_write_needs_the_sticky_bit() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let open = tmp.path().join("open");
        std::fs::create_dir(&open).expect("mkdir");
        std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o777)).expect("chmod");
        let path = open.join("index.db");
        let err = Index::open(&path)
            .map(drop)
            .expect_err("o+w without sticky");
        let msg = err.to_string();
        assert!(
            msg.contains("writable by every user (mode 777)") && msg.contains("sticky"),
            "{msg}"
        );
        assert!(!path.exists(), "the database was made anyway");
        std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o1777)).expect("chmod");
        Index::open(&path).expect("sticky, as /tmp is");
    }

    #[test]
    fn a_database_from_a_newer_zync_is_refused() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let path = tmp.path().join("index.db");
        drop(Index::open(&path).expect("create"));
        let raw = Connection::open(&path).expect("raw");
        raw.pragma_update(None, "user_version", 99).expect("bump");
        drop(raw);
        let err = Index::open(&path).expect_err("too new");
        assert!(
            matches!(
                err,
                crate::DbError::TooNew {
                    found: 99,
                    supported,
                    ..
                } if supported == crate::INDEX_SCHEMA_VERSION
            ),
            "got {err:?}"
        );
        let message = err.to_string();
        for want in ["index.db", "99", "a newer zync made it"] {
            assert!(message.contains(want), "message lacks {want:?}: {message}");
        }
    }

    #[test]
    fn a_garbage_file_is_refused_with_its_path() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let path = tmp.path().join("garbage.db");
        let garbage = b"this is not a database, just some text.\n".repeat(100);
        std::fs::write(&path, &garbage).expect("write");
        let err = Index::open(&path).expect_err("garbage");
        assert!(
            matches!(err, crate::DbError::NotADatabase { .. }),
            "got {err:?}"
        );
        let message = err.to_string();
        assert!(
            message.contains(&path.display().to_string()),
            "no path: {message}"
        );
        assert!(message.contains("move it aside"), "no advice: {message}");
        let err = ClientState::open(&path).expect_err("garbage for the client too");
        assert!(
            matches!(err, crate::DbError::NotADatabase { .. }),
            "got {err:?}"
        );
        assert!(
            std::fs::read(&path).expect("read") == garbage,
            "the file was changed"
        );
    }

    #[test]
    fn a_short_garbage_file_is_refused_too() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let path = tmp.path().join("short.db");
        std::fs::write(&path, b"hello").expect("write");
        let err = ClientState::open(&path).expect_err("garbage");
        assert!(
            matches!(err, crate::DbError::NotADatabase { .. }),
            "got {err:?}"
        );
    }

    #[test]
    fn a_client_database_is_not_an_index() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let path = tmp.path().join("state.db");
        drop(ClientState::open(&path).expect("client"));
        let err = Index::open(&path).expect_err("wrong kind");
        let message = err.to_string();
        assert!(
            message.contains("is a zync client state database, not a zync daemon index"),
            "message: {message}"
        );
        drop(Index::open(&tmp.path().join("index.db")).expect("index"));
        let err = ClientState::open(&tmp.path().join("index.db")).expect_err("wrong kind");
        assert!(
            matches!(err, crate::DbError::WrongKind { .. }),
            "got {err:?}"
        );
    }

    #[test]
    fn a_missing_directory_is_an_open_error_naming_the_path() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let path = tmp.path().join("no/such/dir/index.db");
        let err = Index::open(&path).expect_err("no directory");
        assert!(matches!(err, crate::DbError::Open { .. }), "got {err:?}");
        let message = err.to_string();
        assert!(
            message.contains(&path.display().to_string()),
            "no path: {message}"
        );
        assert!(message.contains("directory exists"), "no advice: {message}");
    }
}
