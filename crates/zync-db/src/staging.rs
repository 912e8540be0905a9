//! Upstream changes from R, staged on E for `zync-apply`: one row per session (one
//! PREPARE_UPSTREAM .. FINALIZE_UPSTREAM exchange) and one row per file in it, with the
//! conflict flag decided when the file was staged (DESIGN invariant 5). The content itself
//! lives in files beside the database, in [`session_dir`], never in E's dirs.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use rusqlite::types::{FromSql, FromSqlError, FromSqlResult, ToSql, ToSqlOutput, ValueRef};
use rusqlite::{ErrorCode, OptionalExtension, Row};

use crate::error::{Context, DbError, Result};
use crate::sql::{seq_from_sql, u64_from_sql, u64_to_sql};
use crate::Index;

/// Gives a fieldless enum its stored (TEXT) spelling: `as_str`, `parse`, `ALL`, `Display`,
/// `ToSql` and `FromSql`.
macro_rules! stored_as_text {
    ($ty:ident, $what:literal, [$($variant:ident => $text:literal),+ $(,)?]) => {
        impl $ty {
            #[doc = concat!("Every ", $what, ", in declaration order.")]
            pub const ALL: &'static [$ty] = &[$($ty::$variant),+];

            #[doc = concat!("The stored spelling of the ", $what, ": ",
                            $("`\"", $text, "\"` "),+)]
            pub fn as_str(&self) -> &'static str {
                match self {
                    $($ty::$variant => $text),+
                }
            }

            /// Parses the spelling `as_str` gives; anything else (including other cases) is
            /// `None`.
            pub fn parse(s: &str) -> Option<$ty> {
                match s {
                    $($text => Some($ty::$variant),)+
                    _ => None,
                }
            }
        }

        impl std::fmt::Display for $ty {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl ToSql for $ty {
            fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
                Ok(ToSqlOutput::from(self.as_str()))
            }
        }

        impl FromSql for $ty {
            fn column_result(value: ValueRef<'_>) -> FromSqlResult<Self> {
                let text = value.as_str()?;
                $ty::parse(text).ok_or_else(|| {
                    FromSqlError::Other(format!(concat!("unknown ", $what, " {:?}"), text).into())
                })
            }
        }
    };
}

/// What R did to a file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// R has new content for the path (created or modified).
    Write,
    /// R deleted the path.
    Delete,
}

stored_as_text!(Action, "action", [Write => "write", Delete => "delete"]);

/// Where an upstream session is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionStatus {
    /// R is still sending files (between PREPARE_UPSTREAM and FINALIZE_UPSTREAM).
    Receiving,
    /// Every file arrived; nothing has been applied yet.
    Staged,
    /// Some files were applied or skipped, others still wait.
    Partial,
    /// Every file was dealt with.
    Applied,
    /// R disconnected before FINALIZE_UPSTREAM, or the session was given up; its staged
    /// files are removed.
    Aborted,
    /// An applied session was undone from its backups.
    Undone,
}

stored_as_text!(SessionStatus, "session status", [
    Receiving => "receiving",
    Staged => "staged",
    Partial => "partial",
    Applied => "applied",
    Aborted => "aborted",
    Undone => "undone",
]);

/// Where one staged file is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileState {
    /// Waiting for the user.
    Staged,
    /// An intent record: zync-apply is replacing (or removing) E's file, or writing a
    /// keep-both conflict copy, right now. The backup of E's original (or the encoded
    /// conflict copy path) is already durable and named in `backup_name`, and `e_existed`
    /// says whether E had a file. Written before E is touched, so a run killed in the middle
    /// leaves a row that the next `apply` or `undo` resolves: Applied (or KeptBoth) if E has
    /// R's content (the copy), otherwise back to Staged.
    Applying,
    /// R's version is now on E.
    Applied,
    /// The user chose to leave E's version alone.
    Skipped,
    /// R's version went to E beside E's own (a conflict resolved by keeping both).
    KeptBoth,
    /// It was applied, then restored from its backup.
    Undone,
}

stored_as_text!(FileState, "file state", [
    Staged => "staged",
    Applying => "applying",
    Applied => "applied",
    Skipped => "skipped",
    KeptBoth => "kept_both",
    Undone => "undone",
]);

/// An upstream session with its files counted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session {
    /// The session id (also the name of its directory in the staging area).
    pub id: String,
    /// The client (R) that sent it.
    pub client_id: String,
    /// When it was created, seconds since the Unix epoch.
    pub created_unix: i64,
    /// Where it is in its life.
    pub status: SessionStatus,
    /// How many files it has.
    pub files: u64,
    /// How many of them were conflicts when staged.
    pub conflicts: u64,
    /// The total size of its [`Action::Write`] files (deletes count nothing).
    pub bytes: u64,
}

/// One file of an upstream session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StagedFile {
    /// The session it belongs to.
    pub session_id: String,
    /// The dir name.
    pub dir: String,
    /// The path relative to the dir, `/`-separated.
    pub path: String,
    /// Write or delete.
    pub action: Action,
    /// R's permission bits.
    pub mode: u32,
    /// R's size in bytes.
    pub size: u64,
    /// R's modification time, nanoseconds since the Unix epoch.
    pub mtime_ns: i64,
    /// Hex SHA-256 of R's content (`None` for [`Action::Delete`]).
    pub sha256: Option<String>,
    /// Hex SHA-256 of the version R last synced from E (`None`: the file is new on R).
    pub base_sha256: Option<String>,
    /// Whether E's side changed against the base, decided at staging time ([`is_conflict`]).
    pub conflict: bool,
    /// Where it is in its life.
    pub state: FileState,
    /// The file name, inside the session's staging dir, holding R's content (Write only).
    pub staged_name: Option<String>,
    /// The file name, inside the session's staging dir, holding E's previous content, once
    /// applied.
    pub backup_name: Option<String>,
    /// Whether E had a file at the path when this was applied (undo removes the file when
    /// it did not).
    pub e_existed: bool,
}

/// What E has at a path right now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnE<'a> {
    /// Nothing.
    Missing,
    /// A regular file with this hex SHA-256.
    File(&'a str),
    /// A directory, symlink or special file.
    Other,
}

/// Whether R's change at a path meets a change on E that the user must decide about
/// (DESIGN invariant 5). `base` is the SHA-256 R last synced from E (`None`: new on R), `new`
/// is R's SHA-256 (`None` for a delete), `current` is what E has now.
///
/// * Write, base `Some(b)`: a conflict unless E has `File(b)` (E unchanged) or `File(new)`
///   (both made the same content); E missing (deleted there) or `Other` is a conflict.
/// * Write, base `None` (new on R): a conflict if E has a different file or `Other`; nothing
///   or the identical file is not.
/// * Delete, base `Some(b)`: no conflict if E has nothing (both deleted) or `File(b)`
///   (unchanged); anything else is a conflict.
/// * Delete, base `None`: no conflict only if E has nothing.
pub fn is_conflict(
    action: Action,
    base: Option<&str>,
    new: Option<&str>,
    current: OnE<'_>,
) -> bool {
    let same_as = |wanted: Option<&str>, have: &str| wanted == Some(have);
    match (action, current) {
        (_, OnE::Other) => true,
        (Action::Write, OnE::File(have)) => !(same_as(base, have) || same_as(new, have)),
        (Action::Write, OnE::Missing) => base.is_some(),
        (Action::Delete, OnE::Missing) => false,
        (Action::Delete, OnE::File(have)) => !same_as(base, have),
    }
}

/// The staging area for the database at `db`: `<db dir>/<db file name>.staging`.
pub fn staging_root(db: &Path) -> PathBuf {
    match db.file_name() {
        Some(name) => {
            let mut staged: OsString = name.to_owned();
            staged.push(".staging");
            db.with_file_name(staged)
        }
        // A path ending in ".." or "/": the area goes inside it rather than replacing it.
        None => db.join(".staging"),
    }
}

/// The directory holding one session's files: `<staging_root(db)>/<session id>`. The id must
/// be a plain file name ([`is_plain_name`]); [`Index::create_session`] refuses any other.
pub fn session_dir(db: &Path, session_id: &str) -> PathBuf {
    staging_root(db).join(session_id)
}

/// Whether `name` can name one file inside a directory and nothing else: not empty, not `.`
/// or `..`, no `/`, `\` or NUL. Session ids, staged names and backup names must be.
pub fn is_plain_name(name: &str) -> bool {
    !name.is_empty() && name != "." && name != ".." && !name.contains(['/', '\\', '\0'])
}

fn check_name(what: &'static str, name: &str) -> Result<()> {
    if is_plain_name(name) {
        Ok(())
    } else {
        Err(DbError::InvalidName {
            what,
            name: name.to_owned(),
        })
    }
}

const SESSION_SELECT: &str = "SELECT s.id, s.client_id, s.created_unix, s.status,
            count(f.path),
            coalesce(sum(f.conflict), 0),
            coalesce(sum(CASE WHEN f.action = 'write' THEN f.size ELSE 0 END), 0)
     FROM upstream_sessions AS s LEFT JOIN upstream_files AS f ON f.session_id = s.id";

const SESSION_ORDER: &str = "GROUP BY s.id ORDER BY s.created_unix DESC, s.id";

const FILE_COLUMNS: &str = "session_id, dir, path, action, mode, size, mtime_ns, sha256, \
     base_sha256, conflict, state, staged_name, backup_name, e_existed";

impl Index {
    /// Records a new session in [`SessionStatus::Receiving`], created now.
    ///
    /// # Errors
    ///
    /// [`DbError::InvalidName`] if `id` is not a plain file name (it names a directory in the
    /// staging area); an SQLite failure, such as a session with this id already existing.
    pub fn create_session(&self, id: &str, client_id: &str) -> Result<()> {
        check_name("session id", id)?;
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX));
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
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14)
                 ON CONFLICT (session_id, dir, path) DO UPDATE SET
                     action = excluded.action, mode = excluded.mode, size = excluded.size,
                     mtime_ns = excluded.mtime_ns, sha256 = excluded.sha256,
                     base_sha256 = excluded.base_sha256, conflict = excluded.conflict,
                     state = excluded.state, staged_name = excluded.staged_name,
                     backup_name = excluded.backup_name, e_existed = excluded.e_existed"
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

    /// Sets a session's status.
    ///
    /// # Errors
    ///
    /// [`DbError::NoSuchSession`] if there is no such session; an SQLite failure.
    pub fn set_session_status(&self, id: &str, status: SessionStatus) -> Result<()> {
        let changed = self
            .conn()
            .execute(
                "UPDATE upstream_sessions SET status = ?2 WHERE id = ?1",
                (id, status),
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
    })
}

fn file_from_row(row: &Row<'_>) -> rusqlite::Result<StagedFile> {
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
    })
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::migrate::{self, Schema, INDEX};
    use crate::{EntryMeta, Kind, INDEX_SCHEMA_VERSION};

    const B: &str = "b0b0";
    const NEW: &str = "4e4e";
    const X: &str = "e1e1";

    #[test]
    fn is_conflict_decides_every_case() {
        use Action::{Delete, Write};
        use OnE::{File, Missing, Other};
        #[rustfmt::skip]
        // (name, action, base, new, what E has, conflict?)
        type Case<'a> = (&'a str, Action, Option<&'a str>, Option<&'a str>, OnE<'a>, bool);
        let table: &[Case<'_>] = &[
            (
                "R changed, E unchanged",
                Write,
                Some(B),
                Some(NEW),
                File(B),
                false,
            ),
            (
                "R changed, E changed too",
                Write,
                Some(B),
                Some(NEW),
                File(X),
                true,
            ),
            (
                "both changed to the same content",
                Write,
                Some(B),
                Some(NEW),
                File(NEW),
                false,
            ),
            (
                "R rewrote the base, E changed",
                Write,
                Some(B),
                Some(B),
                File(X),
                true,
            ),
            (
                "R changed, E deleted the file",
                Write,
                Some(B),
                Some(NEW),
                Missing,
                true,
            ),
            (
                "R changed, E has a directory there",
                Write,
                Some(B),
                Some(NEW),
                Other,
                true,
            ),
            (
                "new on R, nothing on E",
                Write,
                None,
                Some(NEW),
                Missing,
                false,
            ),
            (
                "new on both sides, same content",
                Write,
                None,
                Some(NEW),
                File(NEW),
                false,
            ),
            (
                "new on both sides, different content",
                Write,
                None,
                Some(NEW),
                File(X),
                true,
            ),
            (
                "new on R, E has a directory there",
                Write,
                None,
                Some(NEW),
                Other,
                true,
            ),
            (
                "R deleted, E unchanged",
                Delete,
                Some(B),
                None,
                File(B),
                false,
            ),
            ("R deleted, E changed", Delete, Some(B), None, File(X), true),
            ("both deleted", Delete, Some(B), None, Missing, false),
            (
                "R deleted, E has a directory there",
                Delete,
                Some(B),
                None,
                Other,
                true,
            ),
            (
                "R deleted an unsynced file, E has none",
                Delete,
                None,
                None,
                Missing,
                false,
            ),
            (
                "R deleted an unsynced file, E has a file",
                Delete,
                None,
                None,
                File(X),
                true,
            ),
            (
                "R deleted an unsynced file, E has a dir",
                Delete,
                None,
                None,
                Other,
                true,
            ),
        ];
        let mut wrong = Vec::new();
        for &(name, action, base, new, current, want) in table {
            if is_conflict(action, base, new, current) != want {
                wrong.push(format!("{name}: expected conflict = {want}"));
            }
        }
        assert!(wrong.is_empty(), "wrong decisions:\n{}", wrong.join("\n"));
    }

    #[test]
    fn stored_spellings_round_trip() {
        let actions: Vec<&str> = Action::ALL.iter().map(Action::as_str).collect();
        assert_eq!(actions, ["write", "delete"]);
        let statuses: Vec<&str> = SessionStatus::ALL
            .iter()
            .map(SessionStatus::as_str)
            .collect();
        assert_eq!(
            statuses,
            [
                "receiving",
                "staged",
                "partial",
                "applied",
                "aborted",
                "undone"
            ]
        );
        let states: Vec<&str> = FileState::ALL.iter().map(FileState::as_str).collect();
        assert_eq!(
            states,
            [
                "staged",
                "applying",
                "applied",
                "skipped",
                "kept_both",
                "undone"
            ]
        );
        for a in Action::ALL {
            assert_eq!(Action::parse(a.as_str()), Some(*a));
        }
        for s in SessionStatus::ALL {
            assert_eq!(SessionStatus::parse(s.as_str()), Some(*s));
            assert_eq!(s.to_string(), s.as_str());
        }
        for s in FileState::ALL {
            assert_eq!(FileState::parse(s.as_str()), Some(*s));
        }
        assert_eq!(Action::parse("Write"), None);
        assert_eq!(SessionStatus::parse(""), None);
        assert_eq!(FileState::parse("kept-both"), None);
    }

    #[test]
    fn staging_paths_sit_beside_the_database() {
        assert_eq!(
            staging_root(Path::new("sync.db")),
            PathBuf::from("sync.db.staging")
        );
        assert_eq!(
            staging_root(Path::new("/x/y/sync.db")),
            PathBuf::from("/x/y/sync.db.staging")
        );
        assert_eq!(
            session_dir(Path::new("sync.db"), "s1"),
            PathBuf::from("sync.db.staging/s1")
        );
        assert_eq!(
            session_dir(Path::new("/x/y/sync.db"), "abc-123"),
            PathBuf::from("/x/y/sync.db.staging/abc-123")
        );
    }

    #[test]
    fn plain_names_are_single_components() {
        for good in ["a", "abc-123", "f.0.new", "..a", "a b"] {
            assert!(is_plain_name(good), "{good:?} should be plain");
        }
        for bad in ["", ".", "..", "a/b", "/a", "a\\b", "a\0b"] {
            assert!(!is_plain_name(bad), "{bad:?} should not be plain");
        }
        let index = Index::open_in_memory().expect("open");
        let err = index.create_session("../evil", "c").expect_err("bad id");
        assert!(matches!(err, DbError::InvalidName { .. }), "got {err:?}");
        assert!(index.session("../evil").expect("session").is_none());
    }

    fn staged(session: &str, dir: &str, path: &str, size: u64, conflict: bool) -> StagedFile {
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
        }
    }

    fn deleted(session: &str, dir: &str, path: &str) -> StagedFile {
        StagedFile {
            action: Action::Delete,
            sha256: None,
            staged_name: None,
            size: 999, // R's last size; a delete carries no bytes.
            ..staged(session, dir, path, 0, false)
        }
    }

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
        assert_eq!(INDEX_SCHEMA_VERSION, 4);
        for (kind, name) in [
            ("table", "clients"),
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
                        "INSERT INTO upstream_files ({FILE_COLUMNS}) VALUES
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
        assert_eq!(version, 4);
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
}
