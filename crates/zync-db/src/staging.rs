//! Upstream changes from R, staged on E for `zync-apply`: one row per session (one
//! PREPARE_UPSTREAM .. FINALIZE_UPSTREAM exchange) and one row per file in it, with the
//! conflict flag decided when the file was staged (invariant 5 (docs/ARCHITECTURE.md)). The content itself
//! lives in files beside the database, in [`session_dir`], never in E's dirs.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use rusqlite::types::{FromSql, FromSqlError, FromSqlResult, ToSql, ToSqlOutput, ValueRef};

use crate::error::{DbError, Result};

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
    /// R disconnected before FINALIZE_UPSTREAM, or a daemon stopped mid-upload; its staged
    /// files and their rows are deleted, and only the newest [`crate::ABORTED_KEPT`] aborted
    /// sessions keep their own row ([`crate::Index::abort_session`]).
    Aborted,
    /// An applied session was undone from its backups.
    Undone,
    /// Staged and never touched for longer than the daemon's `--staging-max-age`: its staged
    /// files were removed at a daemon start or by `zync-apply gc`. Only the newest
    /// [`crate::ENDED_KEPT`] expired sessions stay in the database, with their files' rows
    /// ([`crate::Index::forget_ended`]).
    Expired,
    /// Discarded by `zync-apply drop`: its staged files were removed, E was not touched. Only
    /// the newest [`crate::ENDED_KEPT`] dropped sessions stay in the database, with their
    /// files' rows ([`crate::Index::forget_ended`]).
    Dropped,
    /// Applied or partly applied, then its directory was removed: the backups `undo` needed,
    /// and the staged files of a partly applied session that were never applied. What it
    /// applied stays on E, and it can no longer be undone. Reached by `zync-apply drop
    /// --discard-backups` ([`crate::settle_session`]), or by expiry once its apply ended longer
    /// than the daemon's `--staging-max-age` ago ([`crate::expire`]). Only the newest
    /// [`crate::ENDED_KEPT`] settled sessions stay in the database, with their files' rows
    /// ([`crate::Index::forget_ended`]).
    Settled,
}

impl SessionStatus {
    /// The statuses of a session whose staged content is still waiting for E's user:
    /// receiving, staged, or partly applied. Staging limits count these.
    pub const PENDING: &'static [SessionStatus] = &[
        SessionStatus::Receiving,
        SessionStatus::Staged,
        SessionStatus::Partial,
    ];

    /// The statuses of a session whose directory is gone (or should be): aborted, expired,
    /// dropped, settled. A directory left in the staging area for such a session is litter.
    /// Such a session is kept in the database only while it is among the newest of its status
    /// ([`crate::ABORTED_KEPT`], without its files; [`crate::ENDED_KEPT`], with them).
    pub const ENDED: &'static [SessionStatus] = &[
        SessionStatus::Aborted,
        SessionStatus::Expired,
        SessionStatus::Dropped,
        SessionStatus::Settled,
    ];
}

stored_as_text!(SessionStatus, "session status", [
    Receiving => "receiving",
    Staged => "staged",
    Partial => "partial",
    Applied => "applied",
    Aborted => "aborted",
    Undone => "undone",
    Expired => "expired",
    Dropped => "dropped",
    Settled => "settled",
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
    /// When an apply run last ended on it (it became [`SessionStatus::Partial`] or
    /// [`SessionStatus::Applied`]), seconds since the Unix epoch; `None` if none ever did.
    /// Expiry counts the age of an applied session's backups from it.
    pub applied_unix: Option<i64>,
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
    /// The permission bits of the version R last synced, as R sent them; from a client that
    /// sends none, E's mode when the file was staged. `None`: new on R, or not known (staged
    /// before zync recorded it). The mode's half of the three-way rule ([`crate::merge_mode`]).
    pub base_mode: Option<u32>,
    /// Whether E's side changed against the base, decided at staging time ([`is_conflict`]
    /// for the content, [`crate::merge_mode`] for the mode).
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
/// be a plain file name ([`is_plain_name`]); [`crate::Index::create_session`] refuses any other.
pub fn session_dir(db: &Path, session_id: &str) -> PathBuf {
    staging_root(db).join(session_id)
}

/// The lock file in a session's directory ([`session_dir`]). Whoever works on the session's
/// staged files or backups holds an exclusive `flock` on it meanwhile: `zync-apply apply`,
/// `undo` and `drop` for their whole run, and expiry ([`crate::expire`]) while it marks the
/// session expired or settled and removes the directory, so that neither pulls the files from under the
/// other. The lock is taken by the callers (zync-fs); this crate only names it.
pub const SESSION_LOCK_FILE: &str = "apply.lock";

/// Whether `name` can name one file inside a directory and nothing else: not empty, not `.`
/// or `..`, no `/`, `\` or NUL. Session ids, staged names and backup names must be.
pub fn is_plain_name(name: &str) -> bool {
    !name.is_empty() && name != "." && name != ".." && !name.contains(['/', '\\', '\0'])
}

pub(crate) fn check_name(what: &'static str, name: &str) -> Result<()> {
    if is_plain_name(name) {
        Ok(())
    } else {
        Err(DbError::InvalidName {
            what,
            name: name.to_owned(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Index;

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
                "undone",
                "expired",
                "dropped",
                "settled"
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
}
