//! Schema migrations, by `PRAGMA user_version`: each schema is a list of SQL steps, and a
//! database at version N gets steps N.. applied in one transaction. Add steps at the end;
//! never edit one that has shipped.

use std::path::Path;

use rusqlite::{Connection, OptionalExtension, TransactionBehavior};

use crate::error::{Context, DbError, Result};

/// A kind of zync database: how to recognise it and how to build it.
#[derive(Debug)]
pub(crate) struct Schema {
    /// What it is, for error messages: "a zync daemon index".
    pub name: &'static str,
    /// `PRAGMA application_id`, so that one kind of zync database is never opened as another.
    pub application_id: i32,
    /// Step `i` takes the database from version `i` to `i + 1`.
    pub steps: &'static [&'static str],
}

impl Schema {
    /// The version a database has after all steps.
    pub fn version(&self) -> i64 {
        self.steps.len() as i64
    }
}

/// The daemon's index on machine E ("zyni").
pub(crate) const INDEX: Schema = Schema {
    name: "a zync daemon index",
    application_id: 0x7a79_6e69,
    steps: &[
        // 1: the first schema.
        "CREATE TABLE meta (
             key TEXT PRIMARY KEY NOT NULL,
             value TEXT NOT NULL
         ) WITHOUT ROWID;
         -- The one global sequence counter: every change takes last_seq + 1 (docs/ARCHITECTURE.md, State).
         -- It lives apart from the entries so a number is never reused, even if rows go.
         CREATE TABLE counter (
             id INTEGER PRIMARY KEY CHECK (id = 1),
             last_seq INTEGER NOT NULL CHECK (last_seq >= 0)
         );
         INSERT INTO counter (id, last_seq) VALUES (1, 0);
         CREATE TABLE entries (
             dir TEXT NOT NULL,
             path TEXT NOT NULL,
             kind TEXT NOT NULL CHECK (kind IN ('file', 'dir', 'symlink')),
             size INTEGER NOT NULL,
             mtime_ns INTEGER NOT NULL,
             mode INTEGER NOT NULL,
             inode INTEGER NOT NULL,
             sha256 TEXT,
             target TEXT,
             deleted INTEGER NOT NULL DEFAULT 0 CHECK (deleted IN (0, 1)),
             seq INTEGER NOT NULL CHECK (seq > 0),
             PRIMARY KEY (dir, path)
         ) WITHOUT ROWID;
         CREATE UNIQUE INDEX entries_dir_seq ON entries (dir, seq);
         CREATE TABLE roots (
             dir TEXT PRIMARY KEY NOT NULL,
             path TEXT NOT NULL
         ) WITHOUT ROWID;
         CREATE TABLE acks (
             client_id TEXT NOT NULL,
             dir TEXT NOT NULL,
             seq INTEGER NOT NULL,
             at_unix INTEGER NOT NULL,
             PRIMARY KEY (client_id, dir)
         ) WITHOUT ROWID;",
        // 2: upstream sessions staged from R for zync-apply (staging.rs).
        "CREATE TABLE upstream_sessions (
             id TEXT PRIMARY KEY NOT NULL,
             client_id TEXT NOT NULL,
             created_unix INTEGER NOT NULL,
             status TEXT NOT NULL CHECK (status IN
                 ('receiving', 'staged', 'partial', 'applied', 'aborted', 'undone'))
         ) WITHOUT ROWID;
         CREATE TABLE upstream_files (
             session_id TEXT NOT NULL REFERENCES upstream_sessions (id) ON DELETE CASCADE,
             dir TEXT NOT NULL,
             path TEXT NOT NULL,
             action TEXT NOT NULL CHECK (action IN ('write', 'delete')),
             mode INTEGER NOT NULL,
             size INTEGER NOT NULL,
             mtime_ns INTEGER NOT NULL,
             sha256 TEXT,
             base_sha256 TEXT,
             conflict INTEGER NOT NULL CHECK (conflict IN (0, 1)),
             state TEXT NOT NULL CHECK (state IN
                 ('staged', 'applied', 'skipped', 'kept_both', 'undone')),
             staged_name TEXT,
             backup_name TEXT,
             e_existed INTEGER NOT NULL DEFAULT 0 CHECK (e_existed IN (0, 1)),
             PRIMARY KEY (session_id, dir, path)
         ) WITHOUT ROWID;
         CREATE INDEX upstream_files_session ON upstream_files (session_id);",
        // 3: the 'applying' file state, zync-apply's intent record (staging.rs FileState).
        // SQLite cannot change a CHECK constraint in place: rebuild the table (as its docs
        // describe for ALTER TABLE), keeping every row. Nothing references upstream_files.
        "CREATE TABLE upstream_files_v3 (
             session_id TEXT NOT NULL REFERENCES upstream_sessions (id) ON DELETE CASCADE,
             dir TEXT NOT NULL,
             path TEXT NOT NULL,
             action TEXT NOT NULL CHECK (action IN ('write', 'delete')),
             mode INTEGER NOT NULL,
             size INTEGER NOT NULL,
             mtime_ns INTEGER NOT NULL,
             sha256 TEXT,
             base_sha256 TEXT,
             conflict INTEGER NOT NULL CHECK (conflict IN (0, 1)),
             state TEXT NOT NULL CHECK (state IN
                 ('staged', 'applying', 'applied', 'skipped', 'kept_both', 'undone')),
             staged_name TEXT,
             backup_name TEXT,
             e_existed INTEGER NOT NULL DEFAULT 0 CHECK (e_existed IN (0, 1)),
             PRIMARY KEY (session_id, dir, path)
         ) WITHOUT ROWID;
         INSERT INTO upstream_files_v3 (session_id, dir, path, action, mode, size, mtime_ns,
                 sha256, base_sha256, conflict, state, staged_name, backup_name, e_existed)
             SELECT session_id, dir, path, action, mode, size, mtime_ns,
                 sha256, base_sha256, conflict, state, staged_name, backup_name, e_existed
             FROM upstream_files;
         DROP TABLE upstream_files;
         ALTER TABLE upstream_files_v3 RENAME TO upstream_files;
         CREATE INDEX upstream_files_session ON upstream_files (session_id);",
        // 4: which clients are connected now and when each was last seen (`zync-apply
        // status` reads it without a network call). `connections` counts open handshaken
        // connections, so a client's `--status` probe beside its running loop does not mark it
        // gone when the probe leaves; the daemon zeroes it at start (a killed daemon cannot).
        "CREATE TABLE clients (
             client_id TEXT PRIMARY KEY NOT NULL,
             connections INTEGER NOT NULL DEFAULT 0 CHECK (connections >= 0),
             first_seen_unix INTEGER NOT NULL,
             last_seen_unix INTEGER NOT NULL,
             client_version TEXT
         ) WITHOUT ROWID;",
        // 5: the 'expired' and 'dropped' session statuses (staging.rs SessionStatus). The
        // status CHECK is rebuilt as in step 3, but upstream_files references this table with
        // ON DELETE CASCADE: dropping the old table while a table references it would delete
        // every staged file's row. So the files wait in a table without a reference while the
        // sessions table is replaced, then come back under their own name.
        "CREATE TABLE upstream_sessions_v5 (
             id TEXT PRIMARY KEY NOT NULL,
             client_id TEXT NOT NULL,
             created_unix INTEGER NOT NULL,
             status TEXT NOT NULL CHECK (status IN ('receiving', 'staged', 'partial',
                 'applied', 'aborted', 'undone', 'expired', 'dropped'))
         ) WITHOUT ROWID;
         INSERT INTO upstream_sessions_v5 (id, client_id, created_unix, status)
             SELECT id, client_id, created_unix, status FROM upstream_sessions;
         CREATE TABLE upstream_files_v5 AS SELECT * FROM upstream_files;
         DROP TABLE upstream_files;
         DROP TABLE upstream_sessions;
         ALTER TABLE upstream_sessions_v5 RENAME TO upstream_sessions;
         CREATE TABLE upstream_files (
             session_id TEXT NOT NULL REFERENCES upstream_sessions (id) ON DELETE CASCADE,
             dir TEXT NOT NULL,
             path TEXT NOT NULL,
             action TEXT NOT NULL CHECK (action IN ('write', 'delete')),
             mode INTEGER NOT NULL,
             size INTEGER NOT NULL,
             mtime_ns INTEGER NOT NULL,
             sha256 TEXT,
             base_sha256 TEXT,
             conflict INTEGER NOT NULL CHECK (conflict IN (0, 1)),
             state TEXT NOT NULL CHECK (state IN
                 ('staged', 'applying', 'applied', 'skipped', 'kept_both', 'undone')),
             staged_name TEXT,
             backup_name TEXT,
             e_existed INTEGER NOT NULL DEFAULT 0 CHECK (e_existed IN (0, 1)),
             PRIMARY KEY (session_id, dir, path)
         ) WITHOUT ROWID;
         INSERT INTO upstream_files (session_id, dir, path, action, mode, size, mtime_ns,
                 sha256, base_sha256, conflict, state, staged_name, backup_name, e_existed)
             SELECT session_id, dir, path, action, mode, size, mtime_ns,
                 sha256, base_sha256, conflict, state, staged_name, backup_name, e_existed
             FROM upstream_files_v5;
         DROP TABLE upstream_files_v5;
         CREATE INDEX upstream_files_session ON upstream_files (session_id);",
        // 6: the directories zync-apply created on E for a file (its missing parents), so
        // that undo can remove them again (sessions.rs `created_dirs`). NULL: none.
        "ALTER TABLE upstream_files ADD COLUMN created_dirs TEXT;",
        // 7: the paths each served directory ignores, with the rule that ignores each
        // (ignored.rs), for the status commands. An ignored directory is one row, never a
        // row per path it holds; a scan replaces a directory's (or subtree's) rows.
        "CREATE TABLE ignored (
             dir TEXT NOT NULL,
             path TEXT NOT NULL,
             is_dir INTEGER NOT NULL CHECK (is_dir IN (0, 1)),
             pattern TEXT NOT NULL,
             source TEXT NOT NULL,
             PRIMARY KEY (dir, path)
         ) WITHOUT ROWID;",
        // 8: the 'settled' session status (an applied or partly applied session whose
        // directory, with the backups undo needed, was removed: its changes stay on E), and
        // `applied_unix`, when an apply run last ended on a session, from which expiry counts
        // the age of an applied session's backups (retire.rs `expire`). The status CHECK is
        // rebuilt as in step 5, keeping step 6's `created_dirs`. Sessions applied before this
        // version have no such time and get the upgrade's: their backups are kept for a whole
        // --staging-max-age from the upgrade, never fewer.
        "CREATE TABLE upstream_sessions_v8 (
             id TEXT PRIMARY KEY NOT NULL,
             client_id TEXT NOT NULL,
             created_unix INTEGER NOT NULL,
             status TEXT NOT NULL CHECK (status IN ('receiving', 'staged', 'partial',
                 'applied', 'aborted', 'undone', 'expired', 'dropped', 'settled')),
             applied_unix INTEGER
         ) WITHOUT ROWID;
         INSERT INTO upstream_sessions_v8 (id, client_id, created_unix, status, applied_unix)
             SELECT id, client_id, created_unix, status,
                 CASE WHEN status IN ('partial', 'applied')
                     THEN CAST(strftime('%s', 'now') AS INTEGER) END
             FROM upstream_sessions;
         CREATE TABLE upstream_files_v8 AS SELECT * FROM upstream_files;
         DROP TABLE upstream_files;
         DROP TABLE upstream_sessions;
         ALTER TABLE upstream_sessions_v8 RENAME TO upstream_sessions;
         CREATE TABLE upstream_files (
             session_id TEXT NOT NULL REFERENCES upstream_sessions (id) ON DELETE CASCADE,
             dir TEXT NOT NULL,
             path TEXT NOT NULL,
             action TEXT NOT NULL CHECK (action IN ('write', 'delete')),
             mode INTEGER NOT NULL,
             size INTEGER NOT NULL,
             mtime_ns INTEGER NOT NULL,
             sha256 TEXT,
             base_sha256 TEXT,
             conflict INTEGER NOT NULL CHECK (conflict IN (0, 1)),
             state TEXT NOT NULL CHECK (state IN
                 ('staged', 'applying', 'applied', 'skipped', 'kept_both', 'undone')),
             staged_name TEXT,
             backup_name TEXT,
             e_existed INTEGER NOT NULL DEFAULT 0 CHECK (e_existed IN (0, 1)),
             created_dirs TEXT,
             PRIMARY KEY (session_id, dir, path)
         ) WITHOUT ROWID;
         INSERT INTO upstream_files (session_id, dir, path, action, mode, size, mtime_ns,
                 sha256, base_sha256, conflict, state, staged_name, backup_name, e_existed,
                 created_dirs)
             SELECT session_id, dir, path, action, mode, size, mtime_ns,
                 sha256, base_sha256, conflict, state, staged_name, backup_name, e_existed,
                 created_dirs
             FROM upstream_files_v8;
         DROP TABLE upstream_files_v8;
         CREATE INDEX upstream_files_session ON upstream_files (session_id);",
        // 9: `ended_seq`, the order in which sessions ended (aborted, expired, dropped,
        // settled: 1, 2, ...), so that only the newest ended sessions of each status keep their
        // rows (retire.rs `forget_ended`, `ENDED_KEPT`). A counter, not a time: sessions ending
        // in the same second (one expiry ends many) still have an order, and a clock set back
        // cannot make an old one look new. Sessions that ended before this version have none
        // and count as older than any that has one.
        "ALTER TABLE upstream_sessions ADD COLUMN ended_seq INTEGER;",
        // 10: what E's file was when zync-apply backed it up before changing it (content hash,
        // size, mode, mtime), so that undo restores from a record of its own, never from a
        // file beside the backup (sessions.rs `record_backup`). NULL: no backup, or one made
        // before this version (undo then reads the JSON an older zync-apply wrote beside it).
        "ALTER TABLE upstream_files ADD COLUMN backup_sha256 TEXT;
         ALTER TABLE upstream_files ADD COLUMN backup_size INTEGER;
         ALTER TABLE upstream_files ADD COLUMN backup_mode INTEGER;
         ALTER TABLE upstream_files ADD COLUMN backup_mtime_ns INTEGER;",
        // 11: which directory each served root was when the daemon started: its device and
        // inode, and its birth time (ns since the epoch) where the file system keeps one
        // (index.rs `RootIdentity`). zync-apply writes into a root only while its path still
        // leads to that directory: another user who can rename an entry above the root may
        // have swapped it for a symlink since. NULL: recorded by an older daemon, which
        // zync-apply asks to be restarted.
        "ALTER TABLE roots ADD COLUMN dev INTEGER;
         ALTER TABLE roots ADD COLUMN ino INTEGER;
         ALTER TABLE roots ADD COLUMN born_ns INTEGER;",
        // 12: the mode of R's base version (conflict.rs `merge_mode`), so that a mode E's user
        // set since R's base is neither overwritten silently nor lost with R's content. Files
        // staged before this version have none: their mode is decided as it was then.
        "ALTER TABLE upstream_files ADD COLUMN base_mode INTEGER;",
    ],
};

/// The client's synced state on machine R ("zync").
pub(crate) const CLIENT: Schema = Schema {
    name: "a zync client state database",
    application_id: 0x7a79_6e63,
    steps: &[
        // 1: the first schema.
        "CREATE TABLE meta (
             key TEXT PRIMARY KEY NOT NULL,
             value TEXT NOT NULL
         ) WITHOUT ROWID;
         CREATE TABLE dirs (
             dir TEXT PRIMARY KEY NOT NULL,
             index_id TEXT NOT NULL,
             last_seq INTEGER NOT NULL CHECK (last_seq >= 0)
         ) WITHOUT ROWID;
         CREATE TABLE synced (
             dir TEXT NOT NULL,
             path TEXT NOT NULL,
             kind TEXT NOT NULL CHECK (kind IN ('file', 'dir', 'symlink')),
             size INTEGER NOT NULL,
             mtime_ns INTEGER NOT NULL,
             mode INTEGER NOT NULL,
             sha256 TEXT,
             target TEXT,
             PRIMARY KEY (dir, path)
         ) WITHOUT ROWID;
         CREATE INDEX synced_sha256 ON synced (sha256);",
        // 2: what a page is about to write (so a crash between a rename and the page's commit
        // is not mistaken for an edit on R), and the paths that keep failing.
        "CREATE TABLE inflight (
             dir TEXT NOT NULL,
             path TEXT NOT NULL,
             sha256 TEXT NOT NULL,
             PRIMARY KEY (dir, path, sha256)
         ) WITHOUT ROWID;
         CREATE TABLE failing (
             dir TEXT NOT NULL,
             path TEXT NOT NULL,
             error TEXT NOT NULL,
             since_unix INTEGER NOT NULL,
             attempts INTEGER NOT NULL CHECK (attempts >= 1),
             PRIMARY KEY (dir, path)
         ) WITHOUT ROWID;",
        // 3: the checkpoints of big files' contents, by sha256 (zync_fs::checkpoint): a new
        // version written over one skips the SHA-256 of the windows they share.
        "CREATE TABLE checkpoints (
             sha256 TEXT PRIMARY KEY NOT NULL,
             data BLOB NOT NULL,
             at_unix INTEGER NOT NULL
         ) WITHOUT ROWID;",
    ],
};

/// The schema version of the daemon index this build creates and understands.
pub const INDEX_SCHEMA_VERSION: i64 = INDEX.steps.len() as i64;
/// The schema version of the client state this build creates and understands.
pub const CLIENT_SCHEMA_VERSION: i64 = CLIENT.steps.len() as i64;

const KNOWN: [&Schema; 2] = [&INDEX, &CLIENT];

/// Brings `conn` up to `schema`'s newest version, or refuses a database that is another kind
/// or newer than this build. `path` is only for messages.
pub(crate) fn migrate(conn: &mut Connection, schema: &Schema, path: &Path) -> Result<()> {
    // A cheap look first, so an up-to-date database is opened without taking the write lock.
    if check(conn, schema, path)? == schema.version() {
        return Ok(());
    }
    // IMMEDIATE: two processes creating the same database at once take turns, and the second
    // sees the first one's work when it re-reads the version.
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .with_ctx(|| format!("starting the schema upgrade of {}", path.display()))?;
    let found = check(&tx, schema, path)?;
    for (i, step) in schema.steps.iter().enumerate().skip(found as usize) {
        tx.execute_batch(step).with_ctx(|| {
            format!(
                "upgrading the schema of {} to version {}",
                path.display(),
                i + 1
            )
        })?;
    }
    tx.pragma_update(None, "user_version", schema.version())
        .and_then(|()| tx.pragma_update(None, "application_id", schema.application_id))
        .with_ctx(|| format!("recording the schema version of {}", path.display()))?;
    tx.commit()
        .with_ctx(|| format!("committing the schema upgrade of {}", path.display()))
}

/// Checks, without writing anything, that a database opened read-only is `schema`'s kind at
/// exactly this build's version: a read-only reader cannot upgrade an older one.
pub(crate) fn check_current(conn: &Connection, schema: &Schema, path: &Path) -> Result<()> {
    let found = check(conn, schema, path)?;
    if found == schema.version() {
        return Ok(());
    }
    Err(DbError::TooOld {
        path: path.to_owned(),
        found,
        supported: schema.version(),
    })
}

/// Reads the id stored under `key` in the `meta` table, without storing one (read-only).
pub(crate) fn read_database_id(conn: &Connection, key: &str) -> Result<String> {
    conn.query_row("SELECT value FROM meta WHERE key = ?1", [key], |row| {
        row.get(0)
    })
    .with_ctx(|| format!("reading the {key}"))
}

/// Returns the database's version after checking that it is `schema`'s kind (or empty) and not
/// newer than this build.
fn check(conn: &Connection, schema: &Schema, path: &Path) -> Result<i64> {
    let read = |pragma: &str| {
        conn.query_row(&format!("PRAGMA {pragma}"), [], |row| row.get::<_, i64>(0))
            .with_ctx(|| format!("reading the {pragma} of {}", path.display()))
    };
    let application_id = read("application_id")?;
    let version = read("user_version")?;
    if application_id != i64::from(schema.application_id) {
        let found = if let Some(other) = KNOWN
            .iter()
            .find(|s| i64::from(s.application_id) == application_id)
        {
            Some(other.name.to_owned())
        } else if application_id != 0 {
            Some(format!(
                "a database of another program (application id {application_id:#x})"
            ))
        } else if version != 0 || has_tables(conn, path)? {
            Some("a database of another program".to_owned())
        } else {
            None // empty: ours to create.
        };
        if let Some(found) = found {
            return Err(DbError::WrongKind {
                path: path.to_owned(),
                expected: schema.name,
                found,
            });
        }
    }
    if version > schema.version() {
        return Err(DbError::TooNew {
            path: path.to_owned(),
            found: version,
            supported: schema.version(),
        });
    }
    if version < 0 {
        return Err(DbError::WrongKind {
            path: path.to_owned(),
            expected: schema.name,
            found: format!("a database with the impossible schema version {version}"),
        });
    }
    Ok(version)
}

fn has_tables(conn: &Connection, path: &Path) -> Result<bool> {
    conn.query_row("SELECT 1 FROM sqlite_schema LIMIT 1", [], |_| Ok(()))
        .optional()
        .map(|found| found.is_some())
        .with_ctx(|| format!("listing the tables of {}", path.display()))
}

/// Returns the id stored under `key` in the `meta` table, first storing a new UUID v4 there if
/// there is none yet: the id is made once, with the database, and never changes.
pub(crate) fn database_id(conn: &Connection, key: &str) -> Result<String> {
    let fresh = uuid::Uuid::new_v4().to_string();
    conn.execute(
        "INSERT INTO meta (key, value) VALUES (?1, ?2) ON CONFLICT (key) DO NOTHING",
        (key, &fresh),
    )
    .with_ctx(|| format!("storing a new {key}"))?;
    conn.query_row("SELECT value FROM meta WHERE key = ?1", [key], |row| {
        row.get(0)
    })
    .with_ctx(|| format!("reading the {key}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEST: Schema = Schema {
        name: "a test database",
        application_id: 0x7465_7374,
        steps: &[
            "CREATE TABLE a (x INTEGER);",
            "CREATE TABLE b (y INTEGER); INSERT INTO a VALUES (2);",
        ],
    };

    const BROKEN: Schema = Schema {
        name: "a test database",
        application_id: 0x7465_7374,
        steps: &[
            "CREATE TABLE a (x INTEGER);",
            "CREATE TABLE b (y INTEGER); INSERT INTO nowhere VALUES (1);",
        ],
    };

    fn version(conn: &Connection) -> i64 {
        conn.query_row("PRAGMA user_version", [], |r| r.get(0))
            .expect("user_version")
    }

    fn table_exists(conn: &Connection, name: &str) -> bool {
        conn.query_row(
            "SELECT count(*) FROM sqlite_schema WHERE type = 'table' AND name = ?1",
            [name],
            |r| r.get::<_, i64>(0),
        )
        .expect("sqlite_schema")
            == 1
    }

    #[test]
    fn new_database_gets_every_step() {
        let mut conn = Connection::open_in_memory().expect("open");
        migrate(&mut conn, &TEST, Path::new("t.db")).expect("migrate");
        assert_eq!(version(&conn), 2);
        assert!(table_exists(&conn, "a") && table_exists(&conn, "b"));
        let app: i64 = conn
            .query_row("PRAGMA application_id", [], |r| r.get(0))
            .expect("app");
        assert_eq!(app, 0x7465_7374);
    }

    #[test]
    fn only_missing_steps_run() {
        let mut conn = Connection::open_in_memory().expect("open");
        conn.execute_batch("CREATE TABLE a (x INTEGER); INSERT INTO a VALUES (1);")
            .expect("v1 by hand");
        conn.pragma_update(None, "user_version", 1)
            .expect("version");
        conn.pragma_update(None, "application_id", TEST.application_id)
            .expect("app id");
        migrate(&mut conn, &TEST, Path::new("t.db")).expect("migrate");
        // Step 1 would have failed on the existing table; step 2 added a row.
        let rows: Vec<i64> = conn
            .prepare("SELECT x FROM a ORDER BY x")
            .expect("prepare")
            .query_map([], |r| r.get(0))
            .expect("query")
            .collect::<rusqlite::Result<_>>()
            .expect("rows");
        assert_eq!(rows, [1, 2]);
        assert_eq!(version(&conn), 2);
        // And running again is a no-op.
        migrate(&mut conn, &TEST, Path::new("t.db")).expect("migrate again");
        assert_eq!(version(&conn), 2);
    }

    #[test]
    fn a_failing_step_changes_nothing() {
        let mut conn = Connection::open_in_memory().expect("open");
        let err = migrate(&mut conn, &BROKEN, Path::new("t.db")).expect_err("step 2 fails");
        assert!(
            err.to_string().contains("version 2"),
            "error should say which step failed: {err}"
        );
        assert_eq!(version(&conn), 0);
        assert!(
            !table_exists(&conn, "a"),
            "step 1 must be rolled back with step 2"
        );
    }

    #[test]
    fn a_newer_version_is_refused() {
        let mut conn = Connection::open_in_memory().expect("open");
        migrate(&mut conn, &TEST, Path::new("t.db")).expect("migrate");
        conn.pragma_update(None, "user_version", 7)
            .expect("version");
        let err = migrate(&mut conn, &TEST, Path::new("t.db")).expect_err("too new");
        assert!(
            matches!(
                err,
                DbError::TooNew {
                    found: 7,
                    supported: 2,
                    ..
                }
            ),
            "got {err:?}"
        );
    }

    #[test]
    fn another_programs_database_is_refused() {
        let mut conn = Connection::open_in_memory().expect("open");
        conn.execute_batch("CREATE TABLE theirs (z TEXT);")
            .expect("theirs");
        let err = migrate(&mut conn, &TEST, Path::new("t.db")).expect_err("foreign");
        assert!(matches!(err, DbError::WrongKind { .. }), "got {err:?}");
        assert!(
            err.to_string().contains("another program"),
            "message: {err}"
        );
    }

    #[test]
    fn database_id_is_made_once() {
        let mut conn = Connection::open_in_memory().expect("open");
        migrate(&mut conn, &INDEX, Path::new(":memory:")).expect("migrate");
        let first = database_id(&conn, "index_id").expect("id");
        let second = database_id(&conn, "index_id").expect("id again");
        assert_eq!(first, second);
        let parsed = uuid::Uuid::parse_str(&first).expect("a uuid");
        assert_eq!(parsed.get_version_num(), 4);
    }
}
