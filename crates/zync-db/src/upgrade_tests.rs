//! Tests of index schema upgrades: an index made by an older zync, with staged sessions in
//! it, is upgraded in place when the daemon opens it.

use zync_proto::Kind;

use crate::migrate::{self, Schema, INDEX};
use crate::sessions::fixtures::*;
use crate::sql::u64_to_sql;
use crate::{
    DbError, EntryMeta, FileState, IgnoredPath, Index, RootIdentity, SessionStatus, StagedFile,
    StoredRoot, INDEX_SCHEMA_VERSION,
};

/// The columns of `upstream_files` that every version since 2 has: what the tests below write
/// into an index made by an older zync.
const OLD_FILE_COLUMNS: &str = "session_id, dir, path, action, mode, size, mtime_ns, sha256, \
     base_sha256, conflict, state, staged_name, backup_name, e_existed";

#[test]
fn a_version_1_index_upgrades_in_place() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let path = tmp.path().join("index.db");
    let v1 = Schema {
        steps: &INDEX.steps[..1],
        ..INDEX
    };
    let (id, meta) = {
        let mut conn = rusqlite::Connection::open(&path).expect("open");
        migrate::migrate(&mut conn, &v1, &path).expect("v1");
        let id = migrate::database_id(&conn, "index_id").expect("id");
        let meta = EntryMeta {
            kind: Kind::File,
            size: 12,
            mtime_ns: 34,
            mode: 0o644,
            inode: 56,
            sha256: Some("ab".repeat(32)),
            target: None,
        };
        conn.execute(
            "INSERT INTO entries (dir, path, kind, size, mtime_ns, mode, inode, sha256, seq)
             VALUES ('docs', 'a.txt', 'file', 12, 34, 420, 56, ?1, 1)",
            [&meta.sha256],
        )
        .expect("entry");
        conn.execute("UPDATE counter SET last_seq = 1", [])
            .expect("counter");
        let version: i64 = conn
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .expect("version");
        assert_eq!(version, 1);
        (id, meta)
    };

    let index = Index::open(&path).expect("upgrade");
    let version: i64 = index
        .conn()
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .expect("version");
    assert_eq!(version, INDEX_SCHEMA_VERSION);
    assert_eq!(INDEX_SCHEMA_VERSION, 12);
    for (kind, name) in [
        ("table", "clients"),
        ("table", "ignored"),
        ("table", "upstream_sessions"),
        ("table", "upstream_files"),
        ("index", "upstream_files_session"),
    ] {
        let n: i64 = index
            .conn()
            .query_row(
                "SELECT count(*) FROM sqlite_schema WHERE type = ?1 AND name = ?2",
                [kind, name],
                |r| r.get(0),
            )
            .expect("schema");
        assert_eq!(n, 1, "{kind} {name} missing after the upgrade");
    }
    assert_eq!(index.index_id(), id, "the index id survives");
    assert_eq!(index.last_seq().expect("last_seq"), 1);
    let entry = index.get("docs", "a.txt").expect("get").expect("entry");
    assert_eq!(entry.meta, meta);

    index
        .create_session("s1", "c")
        .expect("the new tables work");
    index
        .add_staged_file(&staged("s1", "docs", "a.txt", 3, false))
        .expect("add");
    drop(index);
    let reopened = Index::open(&path).expect("reopen at version 3");
    assert_eq!(reopened.staged_files("s1").expect("files").len(), 1);
}

#[test]
fn a_version_2_index_upgrades_in_place_keeping_its_sessions_and_learns_applying() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let path = tmp.path().join("index.db");
    let v2 = Schema {
        steps: &INDEX.steps[..2],
        ..INDEX
    };
    let applied = StagedFile {
        state: FileState::Applied,
        backup_name: Some("backup-1".into()),
        e_existed: true,
        ..staged("s1", "docs", "a.txt", 10, true)
    };
    let waiting = staged("s1", "docs", "b.txt", 20, false);
    let gone = deleted("s1", "pics", "c.jpg");
    let id = {
        let mut conn = rusqlite::Connection::open(&path).expect("open");
        migrate::migrate(&mut conn, &v2, &path).expect("v2");
        let id = migrate::database_id(&conn, "index_id").expect("id");
        conn.execute(
            "INSERT INTO upstream_sessions (id, client_id, created_unix, status)
             VALUES ('s1', 'client-r', 1234, 'partial')",
            [],
        )
        .expect("session");
        for f in [&applied, &waiting, &gone] {
            conn.execute(
                &format!(
                    "INSERT INTO upstream_files ({OLD_FILE_COLUMNS}) VALUES
                     (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14)"
                ),
                rusqlite::params![
                    f.session_id,
                    f.dir,
                    f.path,
                    f.action,
                    f.mode,
                    u64_to_sql(f.size),
                    f.mtime_ns,
                    f.sha256,
                    f.base_sha256,
                    f.conflict,
                    f.state,
                    f.staged_name,
                    f.backup_name,
                    f.e_existed,
                ],
            )
            .expect("file row");
        }
        // Version 2 does not know the intent state.
        let err = conn
            .execute(
                "UPDATE upstream_files SET state = 'applying' WHERE path = 'b.txt'",
                [],
            )
            .expect_err("version 2 refuses 'applying'");
        assert!(err.to_string().contains("CHECK"), "{err}");
        let version: i64 = conn
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .expect("version");
        assert_eq!(version, 2);
        id
    };

    let index = Index::open(&path).expect("upgrade");
    let version: i64 = index
        .conn()
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .expect("version");
    assert_eq!(version, INDEX_SCHEMA_VERSION);
    assert_eq!(index.index_id(), id, "the index id survives");
    let session = index.session("s1").expect("session").expect("kept");
    assert_eq!(
        (
            session.status,
            session.files,
            session.conflicts,
            session.bytes
        ),
        (SessionStatus::Partial, 3, 1, 30)
    );
    assert_eq!(
        index.staged_files("s1").expect("files"),
        [applied.clone(), waiting.clone(), gone.clone()],
        "every row survives the rebuild unchanged"
    );
    let n: i64 = index
        .conn()
        .query_row(
            "SELECT count(*) FROM sqlite_schema
             WHERE type = 'index' AND name = 'upstream_files_session'",
            [],
            |r| r.get(0),
        )
        .expect("schema");
    assert_eq!(n, 1, "the session index is rebuilt");
    let leftovers: i64 = index
        .conn()
        .query_row(
            "SELECT count(*) FROM sqlite_schema WHERE name LIKE '%_v3'",
            [],
            |r| r.get(0),
        )
        .expect("schema");
    assert_eq!(leftovers, 0);

    // The intent state can be stored and read back now, and the foreign key still holds.
    index
        .set_file_state(
            "s1",
            "docs",
            "b.txt",
            FileState::Applying,
            Some("backup-2"),
            true,
        )
        .expect("applying");
    let b = &index.staged_files("s1").expect("files")[1];
    assert_eq!(
        (b.state, b.backup_name.as_deref(), b.e_existed),
        (FileState::Applying, Some("backup-2"), true)
    );
    let err = index
        .add_staged_file(&staged("nope", "docs", "x", 1, false))
        .expect_err("foreign key");
    assert!(matches!(err, DbError::NoSuchSession { .. }), "got {err:?}");
    drop(index);
    let reopened = Index::open(&path).expect("reopen at version 3");
    assert_eq!(
        reopened.staged_files("s1").expect("files")[1].state,
        FileState::Applying
    );
}

#[test]
fn a_version_4_index_upgrades_keeping_sessions_and_files_and_learns_expired_and_dropped() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let path = tmp.path().join("index.db");
    let v4 = Schema {
        steps: &INDEX.steps[..4],
        ..INDEX
    };
    let applying = StagedFile {
        state: FileState::Applying,
        backup_name: Some("backup-1".into()),
        e_existed: true,
        ..staged("s1", "docs", "a.txt", 10, true)
    };
    let waiting = staged("s2", "docs", "b.txt", 20, false);
    {
        let mut conn = rusqlite::Connection::open(&path).expect("open");
        migrate::migrate(&mut conn, &v4, &path).expect("v4");
        conn.execute_batch("PRAGMA foreign_keys = ON").expect("fk");
        for (id, status) in [("s1", "partial"), ("s2", "staged")] {
            conn.execute(
                "INSERT INTO upstream_sessions (id, client_id, created_unix, status)
                 VALUES (?1, 'client-r', 1234, ?2)",
                [id, status],
            )
            .expect("session");
        }
        for f in [&applying, &waiting] {
            conn.execute(
                &format!(
                    "INSERT INTO upstream_files ({OLD_FILE_COLUMNS}) VALUES
                     (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14)"
                ),
                rusqlite::params![
                    f.session_id,
                    f.dir,
                    f.path,
                    f.action,
                    f.mode,
                    u64_to_sql(f.size),
                    f.mtime_ns,
                    f.sha256,
                    f.base_sha256,
                    f.conflict,
                    f.state,
                    f.staged_name,
                    f.backup_name,
                    f.e_existed,
                ],
            )
            .expect("file row");
        }
        let err = conn
            .execute(
                "UPDATE upstream_sessions SET status = 'expired' WHERE id = 's2'",
                [],
            )
            .expect_err("version 4 refuses 'expired'");
        assert!(err.to_string().contains("CHECK"), "{err}");
    }

    let index = Index::open(&path).expect("upgrade");
    assert_eq!(
        index.staged_files("s1").expect("files"),
        [applying],
        "the files survive the rebuild of the table they reference"
    );
    assert_eq!(index.staged_files("s2").expect("files"), [waiting]);
    let s1 = index.session("s1").expect("session").expect("kept");
    assert_eq!(
        (s1.status, s1.created_unix, s1.client_id.as_str()),
        (SessionStatus::Partial, 1234, "client-r")
    );
    index
        .set_session_status("s2", SessionStatus::Expired)
        .expect("expired is stored now");
    index
        .set_session_status("s1", SessionStatus::Dropped)
        .expect("dropped is stored now");
    let leftovers: i64 = index
        .conn()
        .query_row(
            "SELECT count(*) FROM sqlite_schema WHERE name LIKE '%_v5'",
            [],
            |r| r.get(0),
        )
        .expect("schema");
    assert_eq!(leftovers, 0);
    // The reference still holds, and still cascades.
    let err = index
        .add_staged_file(&staged("nope", "docs", "x", 1, false))
        .expect_err("foreign key");
    assert!(matches!(err, DbError::NoSuchSession { .. }), "got {err:?}");
    index.delete_session("s2").expect("delete");
    assert!(
        index.staged_files("s2").expect("files").is_empty(),
        "cascade"
    );
    assert_eq!(index.staged_files("s1").expect("files").len(), 1);
}

#[test]
fn a_version_4_index_upgrades_in_place_and_learns_the_directories_apply_created() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let path = tmp.path().join("index.db");
    let v4 = Schema {
        steps: &INDEX.steps[..4],
        ..INDEX
    };
    let applied = StagedFile {
        state: FileState::Applied,
        backup_name: Some("backup-1".into()),
        e_existed: true,
        ..staged("s1", "docs", "new/dir/a.txt", 10, false)
    };
    let waiting = staged("s1", "docs", "b.txt", 20, true);
    {
        let mut conn = rusqlite::Connection::open(&path).expect("open");
        migrate::migrate(&mut conn, &v4, &path).expect("v4");
        migrate::database_id(&conn, "index_id").expect("id");
        conn.execute(
            "INSERT INTO upstream_sessions (id, client_id, created_unix, status)
             VALUES ('s1', 'client-r', 1234, 'partial')",
            [],
        )
        .expect("session");
        for f in [&applied, &waiting] {
            conn.execute(
                &format!(
                    "INSERT INTO upstream_files ({OLD_FILE_COLUMNS}) VALUES
                     (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14)"
                ),
                rusqlite::params![
                    f.session_id,
                    f.dir,
                    f.path,
                    f.action,
                    f.mode,
                    u64_to_sql(f.size),
                    f.mtime_ns,
                    f.sha256,
                    f.base_sha256,
                    f.conflict,
                    f.state,
                    f.staged_name,
                    f.backup_name,
                    f.e_existed,
                ],
            )
            .expect("file row");
        }
        let err = conn
            .execute("SELECT created_dirs FROM upstream_files", [])
            .expect_err("version 4 has no created_dirs");
        assert!(err.to_string().contains("created_dirs"), "{err}");
    }

    let index = Index::open(&path).expect("upgrade");
    let version: i64 = index
        .conn()
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .expect("version");
    assert_eq!(version, INDEX_SCHEMA_VERSION);
    assert_eq!(
        index.staged_files("s1").expect("files"),
        [waiting.clone(), applied.clone()],
        "every row survives unchanged (ordered by path)"
    );
    // Rows from before the upgrade record no created directories; new records stick.
    assert!(index
        .created_dirs("s1", "docs", "new/dir/a.txt")
        .expect("read")
        .is_empty());
    let made = vec!["new".to_string(), "new/dir".to_string()];
    index
        .set_created_dirs("s1", "docs", "new/dir/a.txt", &made)
        .expect("record");
    drop(index);
    let reopened = Index::open(&path).expect("reopen");
    assert_eq!(
        reopened
            .created_dirs("s1", "docs", "new/dir/a.txt")
            .expect("read"),
        made
    );
    assert!(reopened
        .created_dirs("s1", "docs", "b.txt")
        .expect("read")
        .is_empty());
}

#[test]
fn a_version_6_index_upgrades_in_place_and_learns_what_each_dir_ignores() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let path = tmp.path().join("index.db");
    let v6 = Schema {
        steps: &INDEX.steps[..6],
        ..INDEX
    };
    let id = {
        let mut conn = rusqlite::Connection::open(&path).expect("open");
        migrate::migrate(&mut conn, &v6, &path).expect("v6");
        let id = migrate::database_id(&conn, "index_id").expect("id");
        conn.execute(
            "INSERT INTO entries (dir, path, kind, size, mtime_ns, mode, inode, sha256, seq)
             VALUES ('code', 'build', 'file', 3, 4, 493, 5, ?1, 1)",
            [&"cd".repeat(32)],
        )
        .expect("entry");
        conn.execute("UPDATE counter SET last_seq = 1", [])
            .expect("counter");
        conn.execute(
            "INSERT INTO roots (dir, path) VALUES ('code', '/srv/code')",
            [],
        )
        .expect("root");
        let err = conn
            .execute("SELECT count(*) FROM ignored", [])
            .expect_err("version 6 has no ignored table");
        assert!(err.to_string().contains("ignored"), "{err}");
        id
    };

    let mut index = Index::open(&path).expect("upgrade");
    let version: i64 = index
        .conn()
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .expect("version");
    assert_eq!(version, INDEX_SCHEMA_VERSION);
    assert_eq!(index.index_id(), id, "the index id survives");
    assert_eq!(index.last_seq().expect("last_seq"), 1);
    assert!(index.get("code", "build").expect("get").is_some());
    assert_eq!(
        index.roots().expect("roots"),
        [StoredRoot {
            dir: "code".into(),
            path: "/srv/code".into(),
            identity: None
        }]
    );
    // Nothing is known to be ignored until the daemon's next scan says so.
    assert!(index.ignored_counts("code").expect("counts").is_empty());
    let dist = IgnoredPath {
        path: "dist".into(),
        is_dir: true,
        pattern: "dist/".into(),
        source: "built-in".into(),
    };
    let mut w = index.writer().expect("writer");
    w.replace_ignored("code", None, std::slice::from_ref(&dist))
        .expect("record");
    w.commit().expect("commit");
    drop(index);
    let reopened = Index::open_read_only(&path).expect("read-only, as zync-apply status");
    assert_eq!(reopened.ignored_paths("code", 10).expect("list"), [dist]);
}

#[test]
fn a_version_7_index_upgrades_keeping_every_status_and_learns_settled_and_when_applied() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let path = tmp.path().join("index.db");
    let v7 = Schema {
        steps: &INDEX.steps[..7],
        ..INDEX
    };
    let statuses = [
        ("s1", "receiving"),
        ("s2", "staged"),
        ("s3", "partial"),
        ("s4", "applied"),
        ("s5", "aborted"),
        ("s6", "undone"),
        ("s7", "expired"),
        ("s8", "dropped"),
    ];
    let applied = StagedFile {
        state: FileState::Applied,
        backup_name: Some("backup-1".into()),
        e_existed: true,
        ..staged("s4", "docs", "new/a.txt", 10, false)
    };
    let waiting = staged("s3", "docs", "b.txt", 20, true);
    let id = {
        let mut conn = rusqlite::Connection::open(&path).expect("open");
        migrate::migrate(&mut conn, &v7, &path).expect("v7");
        conn.execute_batch("PRAGMA foreign_keys = ON").expect("fk");
        let id = migrate::database_id(&conn, "index_id").expect("id");
        for (n, (session, status)) in (1..).zip(statuses) {
            conn.execute(
                "INSERT INTO upstream_sessions (id, client_id, created_unix, status)
                 VALUES (?1, 'client-r', ?2, ?3)",
                rusqlite::params![session, 1000 + n, status],
            )
            .expect("session");
        }
        for f in [&applied, &waiting] {
            conn.execute(
                &format!(
                    "INSERT INTO upstream_files ({OLD_FILE_COLUMNS}) VALUES
                     (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14)"
                ),
                rusqlite::params![
                    f.session_id,
                    f.dir,
                    f.path,
                    f.action,
                    f.mode,
                    u64_to_sql(f.size),
                    f.mtime_ns,
                    f.sha256,
                    f.base_sha256,
                    f.conflict,
                    f.state,
                    f.staged_name,
                    f.backup_name,
                    f.e_existed,
                ],
            )
            .expect("file row");
        }
        conn.execute(
            "UPDATE upstream_files SET created_dirs = 'new' WHERE session_id = 's4'",
            [],
        )
        .expect("created_dirs");
        let err = conn
            .execute(
                "UPDATE upstream_sessions SET status = 'settled' WHERE id = 's4'",
                [],
            )
            .expect_err("version 7 refuses 'settled'");
        assert!(err.to_string().contains("CHECK"), "{err}");
        id
    };

    let before_upgrade = crate::sql::unix_now();
    let index = Index::open(&path).expect("upgrade");
    let version: i64 = index
        .conn()
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .expect("version");
    assert_eq!(version, INDEX_SCHEMA_VERSION);
    assert_eq!(index.index_id(), id, "the index id survives");
    for (n, (session, status)) in (1..).zip(statuses) {
        let s = index.session(session).expect("session").expect("kept");
        assert_eq!(
            (s.status.as_str(), s.created_unix, s.client_id.as_str()),
            (status, 1000 + n, "client-r"),
            "{session}"
        );
        // An apply before the upgrade counts from the upgrade: its backups are not reclaimed
        // at once.
        if matches!(status, "partial" | "applied") {
            let at = s.applied_unix.expect("an apply time");
            assert!(
                (before_upgrade..=crate::sql::unix_now()).contains(&at),
                "{session}: applied at {at}, not at the upgrade"
            );
        } else {
            assert_eq!(s.applied_unix, None, "{session}");
        }
    }
    assert_eq!(index.staged_files("s4").expect("files"), [applied]);
    assert_eq!(index.staged_files("s3").expect("files"), [waiting]);
    assert_eq!(
        index
            .created_dirs("s4", "docs", "new/a.txt")
            .expect("created_dirs"),
        ["new"],
        "the directories apply created survive the rebuild"
    );
    index
        .set_session_status("s4", SessionStatus::Settled)
        .expect("settled is stored now");
    let leftovers: i64 = index
        .conn()
        .query_row(
            "SELECT count(*) FROM sqlite_schema WHERE name LIKE '%_v8'",
            [],
            |r| r.get(0),
        )
        .expect("schema");
    assert_eq!(leftovers, 0);
    // The reference still holds, and still cascades.
    let err = index
        .add_staged_file(&staged("nope", "docs", "x", 1, false))
        .expect_err("foreign key");
    assert!(matches!(err, DbError::NoSuchSession { .. }), "got {err:?}");
    index.delete_session("s3").expect("delete");
    assert!(
        index.staged_files("s3").expect("files").is_empty(),
        "cascade"
    );
    drop(index);
    let reopened = Index::open_read_only(&path).expect("read-only, as zync-apply status");
    assert_eq!(
        reopened
            .session("s4")
            .expect("session")
            .expect("kept")
            .status,
        SessionStatus::Settled
    );
}

#[test]
fn a_version_8_index_upgrades_keeping_every_row_and_learns_the_order_sessions_end_in() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let path = tmp.path().join("index.db");
    let v8 = Schema {
        steps: &INDEX.steps[..8],
        ..INDEX
    };
    let kept = crate::ENDED_KEPT;
    // What a version 8 zync kept: every dropped session with its files, and a staged one.
    let dropped: Vec<String> = (0..kept + 2).map(|n| format!("d{n:02}")).collect();
    {
        let mut conn = rusqlite::Connection::open(&path).expect("open");
        migrate::migrate(&mut conn, &v8, &path).expect("v8");
        conn.execute_batch("PRAGMA foreign_keys = ON").expect("fk");
        let sessions = dropped
            .iter()
            .map(|id| (id.as_str(), "dropped"))
            .chain([("s1", "staged")]);
        for (n, (id, status)) in (1..).zip(sessions) {
            conn.execute(
                "INSERT INTO upstream_sessions (id, client_id, created_unix, status)
                 VALUES (?1, 'client-r', ?2, ?3)",
                rusqlite::params![id, 1000 + n, status],
            )
            .expect("session");
            conn.execute(
                "INSERT INTO upstream_files
                     (session_id, dir, path, action, mode, size, mtime_ns, conflict, state)
                 VALUES (?1, 'docs', 'gone.txt', 'delete', 420, 0, 0, 0, 'staged')",
                [id],
            )
            .expect("file");
        }
        let err = conn
            .prepare("SELECT ended_seq FROM upstream_sessions")
            .expect_err("version 8 has no ended_seq");
        assert!(err.to_string().contains("ended_seq"), "{err}");
    }

    let index = Index::open(&path).expect("upgrade");
    let version: i64 = index
        .conn()
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .expect("version");
    assert_eq!(version, INDEX_SCHEMA_VERSION);
    let all = index.sessions(true).expect("all");
    assert_eq!(all.len(), dropped.len() + 1, "the upgrade deletes nothing");
    assert!(all.iter().all(|s| s.files == 1), "{all:?}");
    let unordered: i64 = index
        .conn()
        .query_row(
            "SELECT count(*) FROM upstream_sessions WHERE ended_seq IS NULL",
            [],
            |r| r.get(0),
        )
        .expect("count");
    assert_eq!(
        unordered,
        all.len() as i64,
        "no session ended in a known order"
    );

    // The daemon's start forgets the oldest of them; then a drop is the newest of all.
    assert_eq!(index.forget_ended().expect("forget"), (2, 2));
    for id in &dropped[..2] {
        assert!(index.session(id).expect("session").is_none(), "{id}");
    }
    let s1 = index.session("s1").expect("session").expect("kept");
    assert!(crate::drop_session(&index, &path, &s1)
        .expect("db")
        .expect("droppable")
        .is_ok());
    let seq: Option<i64> = index
        .conn()
        .query_row(
            "SELECT ended_seq FROM upstream_sessions WHERE id = 's1'",
            [],
            |r| r.get(0),
        )
        .expect("seq");
    assert_eq!(seq, Some(1));
    assert_eq!(index.staged_files("s1").expect("files").len(), 1);
    assert!(index.session(&dropped[2]).expect("session").is_none());
    let now_dropped = index
        .sessions_with_status(SessionStatus::Dropped)
        .expect("dropped");
    assert_eq!(now_dropped.len() as u64, kept);
}

/// A version 9 index (roots recorded without the directory each was) upgrades in place: its
/// roots stay, known to be unpinned until the daemon's next start records each one's identity.
#[test]
fn a_version_9_index_upgrades_keeping_its_roots_and_learns_which_directory_each_is() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let path = tmp.path().join("index.db");
    let v9 = Schema {
        steps: &INDEX.steps[..9],
        ..INDEX
    };
    let id = {
        let mut conn = rusqlite::Connection::open(&path).expect("open");
        migrate::migrate(&mut conn, &v9, &path).expect("v9");
        let id = migrate::database_id(&conn, "index_id").expect("id");
        conn.execute(
            "INSERT INTO roots (dir, path) VALUES ('code', '/srv/code'), ('docs', '/srv/docs')",
            [],
        )
        .expect("roots");
        let err = conn
            .prepare("SELECT dev FROM roots")
            .expect_err("version 9 has no dev");
        assert!(err.to_string().contains("dev"), "{err}");
        id
    };

    let mut index = Index::open(&path).expect("upgrade");
    let version: i64 = index
        .conn()
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .expect("version");
    assert_eq!(version, INDEX_SCHEMA_VERSION);
    assert_eq!(index.index_id(), id, "the index id survives");
    let unpinned = |dir: &str, path: &str| StoredRoot {
        dir: dir.into(),
        path: path.into(),
        identity: None,
    };
    assert_eq!(
        index.roots().expect("roots"),
        [unpinned("code", "/srv/code"), unpinned("docs", "/srv/docs")]
    );
    // The daemon's next start records what each root is.
    let pinned = StoredRoot {
        identity: Some(RootIdentity {
            dev: 2049,
            ino: 12,
            born_ns: Some(34),
        }),
        ..unpinned("code", "/srv/code")
    };
    index
        .set_roots(std::slice::from_ref(&pinned))
        .expect("record");
    drop(index);
    let reopened = Index::open_read_only(&path).expect("read-only, as zync-apply status");
    assert_eq!(reopened.roots().expect("roots"), [pinned]);
}

#[test]
fn a_version_9_index_upgrades_keeping_every_file_and_learns_the_base_mode() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let path = tmp.path().join("index.db");
    let v9 = Schema {
        steps: &INDEX.steps[..9],
        ..INDEX
    };
    let waiting = staged("s1", "docs", "deploy.sh", 32, false);
    let gone = deleted("s1", "docs", "old.sh");
    {
        let mut conn = rusqlite::Connection::open(&path).expect("open");
        migrate::migrate(&mut conn, &v9, &path).expect("v9");
        conn.execute_batch("PRAGMA foreign_keys = ON").expect("fk");
        migrate::database_id(&conn, "index_id").expect("id");
        conn.execute(
            "INSERT INTO upstream_sessions (id, client_id, created_unix, status)
             VALUES ('s1', 'client-r', 1234, 'staged')",
            [],
        )
        .expect("session");
        for f in [&waiting, &gone] {
            conn.execute(
                &format!(
                    "INSERT INTO upstream_files ({OLD_FILE_COLUMNS}) VALUES
                     (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14)"
                ),
                rusqlite::params![
                    f.session_id,
                    f.dir,
                    f.path,
                    f.action,
                    f.mode,
                    u64_to_sql(f.size),
                    f.mtime_ns,
                    f.sha256,
                    f.base_sha256,
                    f.conflict,
                    f.state,
                    f.staged_name,
                    f.backup_name,
                    f.e_existed,
                ],
            )
            .expect("file row");
        }
        let err = conn
            .prepare("SELECT base_mode FROM upstream_files")
            .expect_err("version 9 has no base_mode");
        assert!(err.to_string().contains("base_mode"), "{err}");
    }

    let index = Index::open(&path).expect("upgrade");
    let version: i64 = index
        .conn()
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .expect("version");
    assert_eq!(version, INDEX_SCHEMA_VERSION);
    // Files staged before the upgrade keep every field and have no base mode: their mode is
    // decided as it was when they were staged.
    assert_eq!(
        index.staged_files("s1").expect("files"),
        [waiting.clone(), gone.clone()],
        "every row survives unchanged (ordered by path)"
    );
    let with_base = StagedFile {
        base_mode: Some(0o644),
        ..staged("s1", "docs", "run.sh", 7, true)
    };
    index.add_staged_file(&with_base).expect("add");
    drop(index);
    let reopened = Index::open_read_only(&path).expect("read-only, as zync-apply show");
    let files = reopened.staged_files("s1").expect("files");
    assert_eq!(
        files.iter().find(|f| f.path == "run.sh"),
        Some(&with_base),
        "{files:?}"
    );
}
