//! The errors of this crate: each names what failed (and which file) and says what to do.

use std::path::PathBuf;

use rusqlite::ErrorCode;

/// What went wrong with zync's state database.
///
/// The `Display` text of each variant says what failed; the underlying SQLite error, where
/// there is one, is its [`source`](std::error::Error::source), so print the whole chain
/// (`{:#}` with anyhow) to see both.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DbError {
    /// An SQLite call failed while doing `context`.
    #[error("{context}")]
    Sqlite {
        /// What this crate was doing, e.g. "reading the index entry docs/a.txt".
        context: String,
        /// The SQLite error.
        #[source]
        source: rusqlite::Error,
    },

    /// The database file could not be opened or created at all.
    #[error(
        "could not open the database {}: check that its directory exists and that zync may \
         read and write both the directory and the file",
        path.display()
    )]
    Open {
        /// The database file.
        path: PathBuf,
        /// The SQLite error.
        #[source]
        source: rusqlite::Error,
    },

    /// The database file (or the `-wal`/`-shm` file beside it) could not be created private
    /// or made private: its paths, hashes and client ids would be readable by other users.
    #[error(
        "could not make {} readable by its owner only (mode 600): {source}; check that it \
         belongs to the user running zync, or run `chmod 600` on it",
        path.display()
    )]
    Private {
        /// The file at fault.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },

    /// The database file, or a side file beside it (`-wal`, `-shm`, `-journal`), belongs to
    /// another user: SQLite would take what they wrote for zync's own state (a `-wal` is
    /// replayed into the database when it is opened), so it is not opened (invariant 8).
    #[error(
        "{} belongs to another user, {}, not to this program's user ({}): zync keeps its own \
         state there and trusts only what it made itself. {}",
        path.display(),
        crate::conn::describe_user(*uid),
        crate::conn::describe_user(crate::conn::euid()),
        crate::conn::what_to_do(*uid)
    )]
    NotOwned {
        /// The file at fault.
        path: PathBuf,
        /// Its owner.
        uid: u32,
    },

    /// The database's directory lets every user create, rename and remove files there (it is
    /// world-writable without the sticky bit): any of them could put a database, `-wal` file,
    /// lock or token of their own in place of zync's at any moment.
    #[error(
        "the directory {} of the database is writable by every user (mode {mode:03o}) and \
         has no sticky bit, so any of them could replace zync's files there with their own; \
         choose a --db in a directory only you can write, or run `chmod o-w {}` (or `chmod \
         +t`, as /tmp has)",
        dir.display(),
        dir.display()
    )]
    OpenDirectory {
        /// The directory.
        dir: PathBuf,
        /// Its permission bits.
        mode: u32,
    },

    /// The file exists but is not an SQLite database (garbage, truncated, or encrypted).
    #[error(
        "{} is not a zync database (not an SQLite file, or a damaged one): move it aside so \
         zync can create a new one, or point zync at the right file",
        path.display()
    )]
    NotADatabase {
        /// The file at fault.
        path: PathBuf,
        /// The SQLite error.
        #[source]
        source: rusqlite::Error,
    },

    /// The file is an SQLite database, but not the kind of zync database expected (the
    /// client's state opened as a daemon index, or another program's database).
    #[error(
        "{} is {found}, not {expected}: point zync at the right file, or move this one aside",
        path.display()
    )]
    WrongKind {
        /// The file at fault.
        path: PathBuf,
        /// What was expected, e.g. "a zync daemon index".
        expected: &'static str,
        /// What was found, e.g. "a zync client state database".
        found: String,
    },

    /// A read-only reader found an older schema, which only a writer can upgrade.
    #[error(
        "{} has schema version {found}, older than this build's {supported}, and a read-only \
         look cannot upgrade it: run the program that owns it (zync-daemon or zync-client) once",
        path.display()
    )]
    TooOld {
        /// The file at fault.
        path: PathBuf,
        /// The version in the file.
        found: i64,
        /// The version this build writes.
        supported: i64,
    },

    /// The schema version in the file is newer than this build knows: a newer zync made it.
    #[error(
        "{} has schema version {found}, but this build of zync only knows versions up to \
         {supported}: a newer zync made it; run that newer zync, or move the file aside to \
         start over",
        path.display()
    )]
    TooNew {
        /// The file at fault.
        path: PathBuf,
        /// The `user_version` found in the file.
        found: i64,
        /// The newest version this build knows.
        supported: i64,
    },

    /// No upstream session has this id.
    #[error(
        "there is no upstream session {id}: list the sessions (zync-apply list --all) to see \
         which exist"
    )]
    NoSuchSession {
        /// The id asked for.
        id: String,
    },

    /// An upstream session has no staged file at this dir and path.
    #[error("upstream session {session_id} has no staged file {dir}/{path}")]
    NoSuchStagedFile {
        /// The session.
        session_id: String,
        /// The dir name.
        dir: String,
        /// The path within the dir.
        path: String,
    },

    /// A name that is used as one file name in the staging area is not a plain file name.
    #[error(
        "the {what} {name:?} is not a plain file name (it is empty, \".\" or \"..\", or \
         contains '/', '\\' or NUL), so it cannot name a file in the staging area"
    )]
    InvalidName {
        /// What the name is for, e.g. "session id".
        what: &'static str,
        /// The name at fault.
        name: String,
    },

    /// A second connection was asked of a database that has no file (it lives in memory).
    #[error(
        "this database lives in memory only, so a second connection cannot share it; give \
         zync a database file"
    )]
    InMemory,
}

/// This crate's result type.
pub type Result<T> = std::result::Result<T, DbError>;

impl DbError {
    /// Whether retrying the same operation cannot help. `false` only for a database that is
    /// busy or locked by another process (the 5 s busy timeout ran out); everything else needs
    /// a person or a code change.
    pub fn is_permanent(&self) -> bool {
        let source = match self {
            DbError::Sqlite { source, .. } | DbError::Open { source, .. } => source,
            DbError::NotADatabase { .. }
            | DbError::Private { .. }
            | DbError::NotOwned { .. }
            | DbError::OpenDirectory { .. }
            | DbError::WrongKind { .. }
            | DbError::TooNew { .. }
            | DbError::TooOld { .. }
            | DbError::NoSuchSession { .. }
            | DbError::NoSuchStagedFile { .. }
            | DbError::InvalidName { .. }
            | DbError::InMemory => return true,
        };
        !matches!(
            source.sqlite_error_code(),
            Some(ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked)
        )
    }
}

/// Adds "what this crate was doing" to a rusqlite result.
pub(crate) trait Context<T> {
    /// Wraps the error with a fixed description.
    fn ctx(self, context: &str) -> Result<T>;
    /// Wraps the error with a description made only when there is an error.
    fn with_ctx(self, context: impl FnOnce() -> String) -> Result<T>;
}

impl<T> Context<T> for rusqlite::Result<T> {
    fn ctx(self, context: &str) -> Result<T> {
        self.map_err(|source| DbError::Sqlite {
            context: context.to_owned(),
            source,
        })
    }

    fn with_ctx(self, context: impl FnOnce() -> String) -> Result<T> {
        self.map_err(|source| DbError::Sqlite {
            context: context(),
            source,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sqlite_error(code: std::ffi::c_int) -> rusqlite::Error {
        rusqlite::Error::SqliteFailure(rusqlite::ffi::Error::new(code), None)
    }

    #[test]
    fn busy_is_worth_retrying_and_the_rest_is_not() {
        let busy = DbError::Sqlite {
            context: "writing".into(),
            source: sqlite_error(rusqlite::ffi::SQLITE_BUSY),
        };
        assert!(!busy.is_permanent());
        let full = DbError::Sqlite {
            context: "writing".into(),
            source: sqlite_error(rusqlite::ffi::SQLITE_FULL),
        };
        assert!(full.is_permanent());
        let too_new = DbError::TooNew {
            path: "x.db".into(),
            found: 9,
            supported: 1,
        };
        assert!(too_new.is_permanent());
    }

    #[test]
    fn sqlite_error_keeps_its_source() {
        let err = DbError::Sqlite {
            context: "reading the index".into(),
            source: sqlite_error(rusqlite::ffi::SQLITE_IOERR),
        };
        assert_eq!(err.to_string(), "reading the index");
        let source = std::error::Error::source(&err).expect("a source");
        assert!(
            source.to_string().contains("disk I/O"),
            "source was {source}"
        );
    }
}
