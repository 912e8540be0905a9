//! Upstream staging records in the daemon's index: one row per session (one
//! PREPARE_UPSTREAM .. FINALIZE_UPSTREAM exchange) and one per file in it. The staged content
//! lives in files under [`crate::session_dir`].

use rusqlite::{ErrorCode, OptionalExtension, Row};

use crate::error::{Context, DbError, Result};
use crate::sql::{seq_from_sql, u64_from_sql, u64_to_sql, unix_now};
use crate::staging::check_name;
use crate::{FileState, Index, Session, SessionStatus, StagedFile};

/// What E's file was when zync-apply backed it up before changing it
/// ([`Index::record_backup`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackupRecord {
    /// Hex sha256 of the content.
    pub sha256: String,
    /// Bytes.
    pub size: u64,
    /// Permission bits, as E's file had them.
    pub mode: u32,
    /// Modification time, ns since the Unix epoch.
    pub mtime_ns: i64,
}

const SESSION_SELECT: &str = "SELECT s.id, s.client_id, s.created_unix, s.status,
            count(f.path),
            coalesce(sum(f.conflict), 0),
            coalesce(sum(CASE WHEN f.action = 'write' THEN f.size ELSE 0 END), 0),
            s.applied_unix
     FROM upstream_sessions AS s LEFT JOIN upstream_files AS f ON f.session_id = s.id";

const SESSION_ORDER: &str = "GROUP BY s.id ORDER BY s.created_unix DESC, s.id";

pub(crate) const FILE_COLUMNS: &str =
    "session_id, dir, path, action, mode, size, mtime_ns, sha256, \
     base_sha256, conflict, state, staged_name, backup_name, e_existed, base_mode";

impl Index {
    /// Records a new session in [`SessionStatus::Receiving`], created now.
    ///
    /// # Errors
    ///
    /// [`DbError::InvalidName`] if `id` is not a plain file name (it names a directory in the
    /// staging area); an SQLite failure, such as a session with this id already existing.
    pub fn create_session(&self, id: &str, client_id: &str) -> Result<()> {
        check_name("session id", id)?;
        let now = unix_now();
        self.conn()
            .execute(
                "INSERT INTO upstream_sessions (id, client_id, created_unix, status)
                 VALUES (?1, ?2, ?3, ?4)",
                (id, client_id, now, SessionStatus::Receiving),
            )
            .with_ctx(|| format!("creating the upstream session {id} of client {client_id}"))?;
        Ok(())
    }

    /// Inserts or replaces the row for (session_id, dir, path).
    ///
    /// # Errors
    ///
    /// [`DbError::NoSuchSession`] if the session does not exist; [`DbError::InvalidName`] if
    /// `staged_name` or `backup_name` is not a plain file name; an SQLite failure.
    pub fn add_staged_file(&self, file: &StagedFile) -> Result<()> {
        if let Some(name) = &file.staged_name {
            check_name("staged file name", name)?;
        }
        if let Some(name) = &file.backup_name {
            check_name("backup file name", name)?;
        }
        let result = self
            .conn()
            .prepare_cached(&format!(
                "INSERT INTO upstream_files ({FILE_COLUMNS})
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15)
                 ON CONFLICT (session_id, dir, path) DO UPDATE SET
                     action = excluded.action, mode = excluded.mode, size = excluded.size,
                     mtime_ns = excluded.mtime_ns, sha256 = excluded.sha256,
                     base_sha256 = excluded.base_sha256, conflict = excluded.conflict,
                     state = excluded.state, staged_name = excluded.staged_name,
                     backup_name = excluded.backup_name, e_existed = excluded.e_existed,
                     base_mode = excluded.base_mode"
            ))
            .and_then(|mut stmt| {
                stmt.execute(rusqlite::params![
                    file.session_id,
                    file.dir,
                    file.path,
                    file.action,
                    file.mode,
                    u64_to_sql(file.size),
                    file.mtime_ns,
                    file.sha256,
                    file.base_sha256,
                    file.conflict,
                    file.state,
                    file.staged_name,
                    file.backup_name,
                    file.e_existed,
                    file.base_mode,
                ])
            });
        match result {
            Ok(_) => Ok(()),
            Err(source) if is_foreign_key_failure(&source) => Err(DbError::NoSuchSession {
                id: file.session_id.clone(),
            }),
            Err(source) => Err(DbError::Sqlite {
                context: format!(
                    "staging {}/{} in the upstream session {}",
                    file.dir, file.path, file.session_id
                ),
                source,
            }),
        }
    }

    /// Sets a session's status. Setting [`SessionStatus::Partial`] or
    /// [`SessionStatus::Applied`] (an apply run ended) also records the time, now, as
    /// [`Session::applied_unix`]: expiry counts the age of an applied session's backups from
    /// it, not from when R pushed it. Setting an ended status ([`SessionStatus::ENDED`]) gives
    /// the session the next number in the order sessions end, as [`Index::move_session`] does
    /// (it forgets no other session: the ends in `retire.rs` do that).
    ///
    /// # Errors
    ///
    /// [`DbError::NoSuchSession`] if there is no such session; an SQLite failure.
    pub fn set_session_status(&self, id: &str, status: SessionStatus) -> Result<()> {
        let applied = matches!(status, SessionStatus::Partial | SessionStatus::Applied);
        let ended = SessionStatus::ENDED.contains(&status);
        let changed = self
            .conn()
            .execute(
                "UPDATE upstream_sessions SET status = ?2,
                     applied_unix = CASE WHEN ?3 THEN ?4 ELSE applied_unix END,
                     ended_seq = CASE WHEN ?5
                         THEN (SELECT coalesce(max(ended_seq), 0) + 1 FROM upstream_sessions)
                         ELSE ended_seq END
                 WHERE id = ?1",
                (id, status, applied, unix_now(), ended),
            )
            .with_ctx(|| format!("marking the upstream session {id} {status}"))?;
        if changed == 0 {
            return Err(DbError::NoSuchSession { id: id.to_owned() });
        }
        Ok(())
    }

    /// The session with this exact id, with its files counted.
    ///
    /// # Errors
    ///
    /// An SQLite failure, or a row this build cannot read.
    pub fn session(&self, id: &str) -> Result<Option<Session>> {
        let sql = format!("{SESSION_SELECT} WHERE s.id = ?1 {SESSION_ORDER}");
        self.conn()
            .prepare_cached(&sql)
            .and_then(|mut stmt| stmt.query_row([id], session_from_row).optional())
            .with_ctx(|| format!("reading the upstream session {id}"))
    }

    /// Sessions whose id starts with `prefix` (case-sensitive; every session for the empty
    /// prefix), newest first.
    ///
    /// # Errors
    ///
    /// An SQLite failure, or a row this build cannot read.
    pub fn find_sessions(&self, prefix: &str) -> Result<Vec<Session>> {
        let context = || format!("finding the upstream sessions whose id starts with {prefix:?}");
        // Not LIKE: it ignores case and treats '%' and '_' as wildcards. Every id starting
        // with `prefix` sorts in [prefix, upper) in BINARY (code point) order.
        match prefix_upper_bound(prefix) {
            Some(upper) => self.query_sessions(
                &format!("{SESSION_SELECT} WHERE s.id >= ?1 AND s.id < ?2 {SESSION_ORDER}"),
                (prefix, upper.as_str()),
                context,
            ),
            None => self.query_sessions(
                &format!("{SESSION_SELECT} WHERE s.id >= ?1 {SESSION_ORDER}"),
                [prefix],
                context,
            ),
        }
    }

    /// The pending sessions ([`SessionStatus::Staged`] or [`SessionStatus::Partial`]), or with
    /// `all` every session; newest first (by creation time, then id).
    ///
    /// # Errors
    ///
    /// An SQLite failure, or a row this build cannot read.
    pub fn sessions(&self, all: bool) -> Result<Vec<Session>> {
        if all {
            self.query_sessions(&format!("{SESSION_SELECT} {SESSION_ORDER}"), [], || {
                "listing the upstream sessions".to_owned()
            })
        } else {
            self.query_sessions(
                &format!("{SESSION_SELECT} WHERE s.status IN (?1, ?2) {SESSION_ORDER}"),
                (SessionStatus::Staged, SessionStatus::Partial),
                || "listing the pending upstream sessions".to_owned(),
            )
        }
    }

    /// The sessions with this status, newest first.
    ///
    /// # Errors
    ///
    /// An SQLite failure, or a row this build cannot read.
    pub fn sessions_with_status(&self, status: SessionStatus) -> Result<Vec<Session>> {
        self.query_sessions(
            &format!("{SESSION_SELECT} WHERE s.status = ?1 {SESSION_ORDER}"),
            [status],
            || format!("listing the {status} upstream sessions"),
        )
    }

    /// The files of a session, ordered by dir, then path (none for an unknown session).
    ///
    /// # Errors
    ///
    /// An SQLite failure, or a row this build cannot read.
    pub fn staged_files(&self, session_id: &str) -> Result<Vec<StagedFile>> {
        let context = || format!("reading the files of the upstream session {session_id}");
        let sql = format!(
            "SELECT {FILE_COLUMNS} FROM upstream_files WHERE session_id = ?1 ORDER BY dir, path"
        );
        let mut stmt = self.conn().prepare_cached(&sql).with_ctx(context)?;
        let rows = stmt
            .query_map([session_id], file_from_row)
            .with_ctx(context)?;
        rows.collect::<rusqlite::Result<_>>().with_ctx(context)
    }

    /// Sets a file's state, backup name and whether E had a file there (for the Applying,
    /// Applied, KeptBoth, Undone and Skipped transitions, and Applying back to Staged).
    ///
    /// # Errors
    ///
    /// [`DbError::NoSuchStagedFile`] if the session has no such file; [`DbError::InvalidName`]
    /// if `backup_name` is not a plain file name; an SQLite failure.
    pub fn set_file_state(
        &self,
        session_id: &str,
        dir: &str,
        path: &str,
        state: FileState,
        backup_name: Option<&str>,
        e_existed: bool,
    ) -> Result<()> {
        if let Some(name) = backup_name {
            check_name("backup file name", name)?;
        }
        let changed = self
            .conn()
            .execute(
                "UPDATE upstream_files SET state = ?4, backup_name = ?5, e_existed = ?6
                 WHERE session_id = ?1 AND dir = ?2 AND path = ?3",
                (session_id, dir, path, state, backup_name, e_existed),
            )
            .with_ctx(|| {
                format!("marking {dir}/{path} of the upstream session {session_id} {state}")
            })?;
        if changed == 0 {
            return Err(DbError::NoSuchStagedFile {
                session_id: session_id.to_owned(),
                dir: dir.to_owned(),
                path: path.to_owned(),
            });
        }
        Ok(())
    }

    /// Records what E's file was when zync-apply backed it up before changing it, for undo:
    /// its record of the backup, kept in the database rather than beside the backup, where
    /// whoever could write the staging area could rewrite it (invariants 5 and 8).
    ///
    /// # Errors
    ///
    /// [`DbError::NoSuchStagedFile`] if the session has no such file; an SQLite failure.
    pub fn record_backup(
        &self,
        session_id: &str,
        dir: &str,
        path: &str,
        backup: &BackupRecord,
    ) -> Result<()> {
        let changed = self
            .conn()
            .execute(
                "UPDATE upstream_files SET backup_sha256 = ?4, backup_size = ?5,
                     backup_mode = ?6, backup_mtime_ns = ?7
                 WHERE session_id = ?1 AND dir = ?2 AND path = ?3",
                (
                    session_id,
                    dir,
                    path,
                    &backup.sha256,
                    u64_to_sql(backup.size),
                    backup.mode,
                    backup.mtime_ns,
                ),
            )
            .with_ctx(|| {
                format!(
                    "recording the backup of {dir}/{path} for the upstream session {session_id}"
                )
            })?;
        if changed == 0 {
            return Err(DbError::NoSuchStagedFile {
                session_id: session_id.to_owned(),
                dir: dir.to_owned(),
                path: path.to_owned(),
            });
        }
        Ok(())
    }

    /// What [`Index::record_backup`] recorded for this file; `None` when nothing was (no
    /// backup, or one made by a zync-apply older than the record).
    ///
    /// # Errors
    ///
    /// An SQLite failure.
    pub fn backup_record(
        &self,
        session_id: &str,
        dir: &str,
        path: &str,
    ) -> Result<Option<BackupRecord>> {
        let context = || format!("reading the backup record of {dir}/{path}");
        let row = self
            .conn()
            .query_row(
                "SELECT backup_sha256, backup_size, backup_mode, backup_mtime_ns
                 FROM upstream_files WHERE session_id = ?1 AND dir = ?2 AND path = ?3",
                (session_id, dir, path),
                |row| {
                    Ok((
                        row.get::<_, Option<String>>(0)?,
                        row.get::<_, Option<i64>>(1)?,
                        row.get::<_, Option<u32>>(2)?,
                        row.get::<_, Option<i64>>(3)?,
                    ))
                },
            )
            .optional()
            .with_ctx(context)?;
        let Some((Some(sha256), Some(size), Some(mode), Some(mtime_ns))) = row else {
            return Ok(None);
        };
        Ok(Some(BackupRecord {
            sha256,
            size: u64_from_sql(size),
            mode,
            mtime_ns,
        }))
    }

    /// The directories zync-apply recorded as created on E for this file (its missing
    /// parents), in the order recorded; empty when none (or no such file).
    ///
    /// # Errors
    ///
    /// An SQLite failure.
    pub fn created_dirs(&self, session_id: &str, dir: &str, path: &str) -> Result<Vec<String>> {
        let stored: Option<Option<String>> = self
            .conn()
            .query_row(
                "SELECT created_dirs FROM upstream_files
                 WHERE session_id = ?1 AND dir = ?2 AND path = ?3",
                (session_id, dir, path),
                |row| row.get(0),
            )
            .optional()
            .with_ctx(|| {
                format!("reading the directories created for {dir}/{path} of the upstream session {session_id}")
            })?;
        Ok(stored
            .flatten()
            .map(|s| decode_dirs(&s))
            .unwrap_or_default())
    }

    /// Records `dirs` as the directories zync-apply created on E for this file, replacing
    /// what was recorded (an empty list records none). Paths may hold any character.
    ///
    /// # Errors
    ///
    /// [`DbError::NoSuchStagedFile`] if the session has no such file; an SQLite failure.
    pub fn set_created_dirs(
        &self,
        session_id: &str,
        dir: &str,
        path: &str,
        dirs: &[String],
    ) -> Result<()> {
        let stored = (!dirs.is_empty()).then(|| encode_dirs(dirs));
        let changed = self
            .conn()
            .execute(
                "UPDATE upstream_files SET created_dirs = ?4
                 WHERE session_id = ?1 AND dir = ?2 AND path = ?3",
                (session_id, dir, path, stored),
            )
            .with_ctx(|| {
                format!("recording the directories created for {dir}/{path} of the upstream session {session_id}")
            })?;
        if changed == 0 {
            return Err(DbError::NoSuchStagedFile {
                session_id: session_id.to_owned(),
                dir: dir.to_owned(),
                path: path.to_owned(),
            });
        }
        Ok(())
    }

    fn query_sessions(
        &self,
        sql: &str,
        params: impl rusqlite::Params,
        context: impl Fn() -> String,
    ) -> Result<Vec<Session>> {
        let mut stmt = self.conn().prepare_cached(sql).with_ctx(&context)?;
        let rows = stmt
            .query_map(params, session_from_row)
            .with_ctx(&context)?;
        rows.collect::<rusqlite::Result<_>>().with_ctx(&context)
    }
}

fn session_from_row(row: &Row<'_>) -> rusqlite::Result<Session> {
    Ok(Session {
        id: row.get(0)?,
        client_id: row.get(1)?,
        created_unix: row.get(2)?,
        status: row.get(3)?,
        files: seq_from_sql(row.get(4)?),
        conflicts: seq_from_sql(row.get(5)?),
        bytes: u64_from_sql(row.get(6)?),
        applied_unix: row.get(7)?,
    })
}

pub(crate) fn file_from_row(row: &Row<'_>) -> rusqlite::Result<StagedFile> {
    Ok(StagedFile {
        session_id: row.get(0)?,
        dir: row.get(1)?,
        path: row.get(2)?,
        action: row.get(3)?,
        mode: row.get(4)?,
        size: u64_from_sql(row.get(5)?),
        mtime_ns: row.get(6)?,
        sha256: row.get(7)?,
        base_sha256: row.get(8)?,
        conflict: row.get(9)?,
        state: row.get(10)?,
        staged_name: row.get(11)?,
        backup_name: row.get(12)?,
        e_existed: row.get(13)?,
        base_mode: row.get(14)?,
    })
}

/// One path a line; `%` and newlines inside a path are percent-encoded so any path survives.
fn encode_dirs(dirs: &[String]) -> String {
    dirs.iter()
        .map(|d| d.replace('%', "%25").replace('\n', "%0A"))
        .collect::<Vec<_>>()
        .join("\n")
}

fn decode_dirs(stored: &str) -> Vec<String> {
    stored
        .split('\n')
        .filter(|line| !line.is_empty())
        .map(|line| line.replace("%0A", "\n").replace("%25", "%"))
        .collect()
}

fn is_foreign_key_failure(error: &rusqlite::Error) -> bool {
    matches!(
        error,
        rusqlite::Error::SqliteFailure(e, _)
            if e.code == ErrorCode::ConstraintViolation
                && e.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_FOREIGNKEY
    )
}

/// The least string greater than every string starting with `prefix`, or `None` if there is
/// none (the empty prefix, or one made only of `char::MAX`).
fn prefix_upper_bound(prefix: &str) -> Option<String> {
    let mut chars: Vec<char> = prefix.chars().collect();
    while let Some(last) = chars.pop() {
        let next = match u32::from(last) + 1 {
            0xD800 => 0xE000, // skip the surrogates, which are not chars
            n => n,
        };
        if let Some(next) = char::from_u32(next) {
            chars.push(next);
            return Some(chars.into_iter().collect());
        }
    }
    None
}

/// Staged files the tests of staging and of schema upgrades share.
#[cfg(test)]
pub(crate) mod fixtures {
    use crate::{Action, FileState, StagedFile};

    pub(crate) fn staged(
        session: &str,
        dir: &str,
        path: &str,
        size: u64,
        conflict: bool,
    ) -> StagedFile {
        StagedFile {
            session_id: session.into(),
            dir: dir.into(),
            path: path.into(),
            action: Action::Write,
            mode: 0o644,
            size,
            mtime_ns: 1_700_000_000_000_000_000,
            sha256: Some(format!("{size:064x}")),
            base_sha256: Some("0".repeat(64)),
            conflict,
            state: FileState::Staged,
            staged_name: Some(format!("{size}.new")),
            backup_name: None,
            e_existed: false,
            base_mode: None,
        }
    }

    pub(crate) fn deleted(session: &str, dir: &str, path: &str) -> StagedFile {
        StagedFile {
            action: Action::Delete,
            sha256: None,
            staged_name: None,
            size: 999, // R's last size; a delete carries no bytes.
            ..staged(session, dir, path, 0, false)
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::{SystemTime, UNIX_EPOCH};

    use super::fixtures::*;
    use super::*;

    fn set_created(index: &Index, id: &str, created_unix: i64) {
        index
            .conn()
            .execute(
                "UPDATE upstream_sessions SET created_unix = ?2 WHERE id = ?1",
                (id, created_unix),
            )
            .expect("set created");
    }

    fn ids(sessions: &[Session]) -> Vec<&str> {
        sessions.iter().map(|s| s.id.as_str()).collect()
    }

    #[test]
    fn a_session_counts_its_files_conflicts_and_bytes() {
        let index = Index::open_in_memory().expect("open");
        index.create_session("s1", "client-r").expect("create");
        let fresh = index.session("s1").expect("session").expect("exists");
        assert_eq!(fresh.client_id, "client-r");
        assert_eq!(fresh.status, SessionStatus::Receiving);
        assert_eq!((fresh.files, fresh.conflicts, fresh.bytes), (0, 0, 0));
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .expect("clock")
            .as_secs() as i64;
        assert!(
            (now - 5..=now + 5).contains(&fresh.created_unix),
            "created {} is not now {now}",
            fresh.created_unix
        );

        index
            .add_staged_file(&staged("s1", "docs", "a.txt", 100, false))
            .expect("add");
        index
            .add_staged_file(&staged("s1", "docs", "b.txt", 20, true))
            .expect("add");
        index
            .add_staged_file(&deleted("s1", "pics", "c.jpg"))
            .expect("add");
        index
            .add_staged_file(&StagedFile {
                base_sha256: Some("1".repeat(64)),
                ..deleted("s1", "pics", "d.jpg")
            })
            .expect("add");
        index
            .set_file_state("s1", "pics", "d.jpg", FileState::Staged, None, false)
            .expect("state");
        // Replacing a row changes it rather than adding one.
        index
            .add_staged_file(&staged("s1", "docs", "a.txt", 300, true))
            .expect("replace");
        // Another session's files do not count here.
        index.create_session("s2", "client-r").expect("create");
        index
            .add_staged_file(&staged("s2", "docs", "a.txt", 5, true))
            .expect("add");

        let s1 = index.session("s1").expect("session").expect("exists");
        assert_eq!(
            (s1.files, s1.conflicts, s1.bytes),
            (4, 2, 320),
            "4 files, a.txt and b.txt conflicts, deletes carry no bytes"
        );
        let s2 = index.session("s2").expect("session").expect("exists");
        assert_eq!((s2.files, s2.conflicts, s2.bytes), (1, 1, 5));
        assert!(index.session("s3").expect("session").is_none());

        let files = index.staged_files("s1").expect("files");
        let names: Vec<(&str, &str)> = files
            .iter()
            .map(|f| (f.dir.as_str(), f.path.as_str()))
            .collect();
        assert_eq!(
            names,
            [
                ("docs", "a.txt"),
                ("docs", "b.txt"),
                ("pics", "c.jpg"),
                ("pics", "d.jpg")
            ]
        );
        assert_eq!(files[0], staged("s1", "docs", "a.txt", 300, true));
        assert_eq!(files[2], deleted("s1", "pics", "c.jpg"));
        assert!(index.staged_files("nope").expect("files").is_empty());

        index
            .set_session_status("s1", SessionStatus::Staged)
            .expect("status");
        assert_eq!(
            index
                .session("s1")
                .expect("session")
                .expect("exists")
                .status,
            SessionStatus::Staged
        );
        index
            .set_session_status("s1", SessionStatus::Partial)
            .expect("status");
        assert_eq!(
            index
                .session("s1")
                .expect("session")
                .expect("exists")
                .status,
            SessionStatus::Partial
        );
    }

    #[test]
    fn a_backup_record_is_kept_per_file_and_none_until_one_is_made() {
        let index = Index::open_in_memory().expect("open");
        index.create_session("s1", "c").expect("create");
        index
            .add_staged_file(&staged("s1", "docs", "a.txt", 100, false))
            .expect("add");
        assert_eq!(
            index.backup_record("s1", "docs", "a.txt").expect("read"),
            None
        );
        let record = BackupRecord {
            sha256: "ab".repeat(32),
            size: 7,
            mode: 0o4755,
            mtime_ns: 1_600_000_000_000_000_007,
        };
        index
            .record_backup("s1", "docs", "a.txt", &record)
            .expect("record");
        assert_eq!(
            index.backup_record("s1", "docs", "a.txt").expect("read"),
            Some(record.clone())
        );
        assert!(matches!(
            index.record_backup("s1", "docs", "missing.txt", &record),
            Err(DbError::NoSuchStagedFile { .. })
        ));
    }

    #[test]
    fn an_apply_run_ending_records_when_and_other_statuses_keep_it() {
        let index = Index::open_in_memory().expect("open");
        index.create_session("s1", "c").expect("create");
        let applied_unix = || {
            index
                .session("s1")
                .expect("session")
                .expect("exists")
                .applied_unix
        };
        index
            .set_session_status("s1", SessionStatus::Staged)
            .expect("staged");
        assert_eq!(applied_unix(), None, "never applied");
        for status in [SessionStatus::Partial, SessionStatus::Applied] {
            index
                .conn()
                .execute("UPDATE upstream_sessions SET applied_unix = 5", [])
                .expect("an old time");
            index.set_session_status("s1", status).expect("status");
            let now = unix_now();
            let at = applied_unix().expect("recorded");
            assert!((now - 5..=now).contains(&at), "{status}: {at} is not now");
        }
        index
            .conn()
            .execute("UPDATE upstream_sessions SET applied_unix = 5", [])
            .expect("an old time");
        index
            .set_session_status("s1", SessionStatus::Undone)
            .expect("undone");
        assert_eq!(applied_unix(), Some(5), "undo is not an apply");
    }

    #[test]
    fn unknown_sessions_and_files_are_clear_errors() {
        let index = Index::open_in_memory().expect("open");
        let err = index
            .set_session_status("ghost", SessionStatus::Applied)
            .expect_err("no such session");
        assert!(matches!(err, DbError::NoSuchSession { .. }), "got {err:?}");
        assert!(
            err.to_string().contains("no upstream session ghost"),
            "{err}"
        );

        let err = index
            .add_staged_file(&staged("ghost", "docs", "a", 1, false))
            .expect_err("no such session");
        assert!(matches!(err, DbError::NoSuchSession { .. }), "got {err:?}");

        index.create_session("s1", "c").expect("create");
        let err = index.create_session("s1", "c").expect_err("duplicate id");
        assert!(err.to_string().contains("s1"), "{err}");
        let err = index
            .set_file_state("s1", "docs", "a", FileState::Applied, None, true)
            .expect_err("no such file");
        assert!(
            matches!(err, DbError::NoSuchStagedFile { .. }),
            "got {err:?}"
        );
        assert!(err.to_string().contains("docs/a"), "{err}");

        let bad = StagedFile {
            staged_name: Some("../../etc/passwd".into()),
            ..staged("s1", "docs", "a", 1, false)
        };
        let err = index.add_staged_file(&bad).expect_err("bad name");
        assert!(matches!(err, DbError::InvalidName { .. }), "got {err:?}");
        assert!(index.staged_files("s1").expect("files").is_empty());
    }

    #[test]
    fn set_file_state_round_trips() {
        let index = Index::open_in_memory().expect("open");
        index.create_session("s1", "c").expect("create");
        let original = staged("s1", "docs", "a.txt", 7, true);
        index.add_staged_file(&original).expect("add");
        index
            .add_staged_file(&staged("s1", "docs", "b.txt", 8, false))
            .expect("add");

        index
            .set_file_state(
                "s1",
                "docs",
                "a.txt",
                FileState::Applied,
                Some("a.bak"),
                true,
            )
            .expect("applied");
        let files = index.staged_files("s1").expect("files");
        assert_eq!(
            files[0],
            StagedFile {
                state: FileState::Applied,
                backup_name: Some("a.bak".into()),
                e_existed: true,
                ..original.clone()
            }
        );
        assert_eq!(
            files[1],
            staged("s1", "docs", "b.txt", 8, false),
            "the other row is untouched"
        );

        for (state, backup, existed) in [
            (FileState::KeptBoth, Some("k.bak"), false),
            (FileState::Undone, Some("a.bak"), true),
            (FileState::Skipped, None, false),
        ] {
            index
                .set_file_state("s1", "docs", "a.txt", state, backup, existed)
                .expect("state");
            let got = &index.staged_files("s1").expect("files")[0];
            assert_eq!(
                (got.state, got.backup_name.as_deref(), got.e_existed),
                (state, backup, existed)
            );
            assert_eq!(got.sha256, original.sha256, "content fields are kept");
        }
    }

    #[test]
    fn sessions_list_pending_or_all_newest_first_and_find_by_prefix() {
        let index = Index::open_in_memory().expect("open");
        for (id, created, status) in [
            ("abc1", 100, SessionStatus::Staged),
            ("abd2", 300, SessionStatus::Partial),
            ("abd3", 300, SessionStatus::Staged),
            ("b000", 200, SessionStatus::Applied),
            ("ABx", 400, SessionStatus::Receiving),
            ("a_c", 50, SessionStatus::Aborted),
        ] {
            index.create_session(id, "c").expect("create");
            set_created(&index, id, created);
            if status != SessionStatus::Receiving {
                index.set_session_status(id, status).expect("status");
            }
        }

        assert_eq!(
            ids(&index.sessions(false).expect("pending")),
            ["abd2", "abd3", "abc1"],
            "only staged and partial, newest first, ties by id"
        );
        assert_eq!(
            ids(&index.sessions(true).expect("all")),
            ["ABx", "abd2", "abd3", "b000", "abc1", "a_c"]
        );
        assert_eq!(
            ids(&index
                .sessions_with_status(SessionStatus::Staged)
                .expect("staged")),
            ["abd3", "abc1"]
        );
        assert!(index
            .sessions_with_status(SessionStatus::Undone)
            .expect("undone")
            .is_empty());

        assert_eq!(ids(&index.find_sessions("abc").expect("find")), ["abc1"]);
        assert_eq!(
            ids(&index.find_sessions("abd").expect("find")),
            ["abd2", "abd3"]
        );
        assert_eq!(
            ids(&index.find_sessions("ab").expect("find")),
            ["abd2", "abd3", "abc1"],
            "case-sensitive: ABx is not found"
        );
        assert_eq!(
            ids(&index.find_sessions("a_").expect("find")),
            ["a_c"],
            "'_' is not a wildcard"
        );
        assert_eq!(
            ids(&index.find_sessions("abd2").expect("find")),
            ["abd2"],
            "a whole id finds itself"
        );
        assert!(index.find_sessions("abe").expect("find").is_empty());
        assert!(index.find_sessions("abd22").expect("find").is_empty());
        assert_eq!(index.find_sessions("").expect("find").len(), 6);
    }

    #[test]
    fn prefix_upper_bound_is_the_next_string() {
        assert_eq!(prefix_upper_bound(""), None);
        assert_eq!(prefix_upper_bound("ab").as_deref(), Some("ac"));
        assert_eq!(prefix_upper_bound("a/").as_deref(), Some("a0"));
        assert_eq!(
            prefix_upper_bound("a\u{D7FF}").as_deref(),
            Some("a\u{E000}")
        );
        assert_eq!(prefix_upper_bound("a\u{10FFFF}").as_deref(), Some("b"));
        assert_eq!(prefix_upper_bound("\u{10FFFF}"), None);

        let index = Index::open_in_memory().expect("open");
        for id in ["x\u{10FFFF}", "x\u{10FFFF}1", "y", "xz"] {
            index.create_session(id, "c").expect("create");
        }
        let mut found = ids(&index.find_sessions("x\u{10FFFF}").expect("find"))
            .into_iter()
            .map(str::to_owned)
            .collect::<Vec<_>>();
        found.sort();
        assert_eq!(found, ["x\u{10FFFF}", "x\u{10FFFF}1"]);
    }

    #[test]
    fn created_dirs_round_trip_any_path_and_can_be_cleared() {
        let index = Index::open_in_memory().expect("open");
        index.create_session("s1", "client-r").expect("create");
        index
            .add_staged_file(&staged("s1", "docs", "a/b/c.txt", 1, false))
            .expect("add");
        assert!(index
            .created_dirs("s1", "docs", "a/b/c.txt")
            .expect("read")
            .is_empty());
        let odd = vec![
            "a".to_string(),
            "a/100%".to_string(),
            "a/line\nbreak".to_string(),
            "a/%0A%25".to_string(),
        ];
        index
            .set_created_dirs("s1", "docs", "a/b/c.txt", &odd)
            .expect("record");
        assert_eq!(
            index.created_dirs("s1", "docs", "a/b/c.txt").expect("read"),
            odd
        );
        index
            .set_created_dirs("s1", "docs", "a/b/c.txt", &[])
            .expect("clear");
        assert!(index
            .created_dirs("s1", "docs", "a/b/c.txt")
            .expect("read")
            .is_empty());
        let err = index
            .set_created_dirs("s1", "docs", "nope", &odd)
            .expect_err("no such file");
        assert!(
            matches!(err, DbError::NoSuchStagedFile { .. }),
            "got {err:?}"
        );
    }
}
