//! `FsError`, the error of every writing operation in this crate: it names the path at fault and
//! says whether retrying can help.

use std::io;
use std::path::{Path, PathBuf};

/// A failed write-side file system operation.
#[derive(Debug, thiserror::Error)]
pub enum FsError {
    /// An I/O error while doing `what` to `path`.
    #[error("cannot {what} {}: {source}", .path.display())]
    Io {
        /// What was being done, as a verb phrase ("create a temp file in").
        what: &'static str,
        /// The path at fault.
        path: PathBuf,
        /// The underlying error.
        source: io::Error,
    },
    /// The file system (or the user's quota there) has no room for what is being written.
    #[error(
        "no room for {} on its file system ({source}): free some space there, or raise the \
         quota, and try again",
        .path.display()
    )]
    NoSpace {
        /// The file being written.
        path: PathBuf,
        /// The underlying error (a full disk or quota).
        source: io::Error,
    },
    /// A component of the path is a symlink; zync never writes through one (invariant 3).
    #[error("refusing to write through {}: it is a symlink", .path.display())]
    SymlinkInPath {
        /// The symlink.
        path: PathBuf,
    },
    /// A root pinned by this process ([`crate::pin_root`]) no longer leads to the directory it
    /// led to when it was pinned: it was moved or replaced, or another user swapped one of the
    /// directories above it for a symlink. Nothing was done there.
    #[error(
        "{} is no longer the directory this program started with: it was moved or replaced, or \
         one of the directories above it was swapped for a symlink (by another user?); nothing \
         was written there. If you replaced it yourself, restart the program",
        .path.display()
    )]
    RootReplaced {
        /// The root.
        path: PathBuf,
    },
    /// A file or directory zync keeps its own state in belongs to another user: zync trusts
    /// only what it made itself there, as that user could otherwise hand it a token, a
    /// database, a lock or staged content of their choosing (invariant 8).
    #[error("{}", crate::private::not_owned_message(.path, *.uid))]
    NotOwned {
        /// The file or directory.
        path: PathBuf,
        /// Its owner.
        uid: u32,
    },
    /// A component of the path that must be a directory is something else.
    #[error("{} is not a directory", .path.display())]
    NotADirectory {
        /// The non-directory.
        path: PathBuf,
    },
    /// What was written does not have the expected checksum; nothing was replaced.
    #[error("content written for {} has sha256 {actual}, expected {expected}", .path.display())]
    HashMismatch {
        /// The destination that was left untouched.
        path: PathBuf,
        /// The checksum the caller expected.
        expected: String,
        /// The checksum of what was written.
        actual: String,
    },
}

impl FsError {
    /// True when retrying the same operation cannot help (the tree itself is in the way, e.g. a
    /// symlink where a directory should be); false when it may (I/O errors, a corrupt transfer).
    pub fn is_permanent(&self) -> bool {
        match self {
            FsError::SymlinkInPath { .. }
            | FsError::NotADirectory { .. }
            | FsError::NotOwned { .. } => true,
            FsError::Io { .. }
            | FsError::NoSpace { .. }
            | FsError::HashMismatch { .. }
            | FsError::RootReplaced { .. } => false,
        }
    }

    /// The path the error is about.
    pub fn path(&self) -> &Path {
        match self {
            FsError::Io { path, .. }
            | FsError::NoSpace { path, .. }
            | FsError::SymlinkInPath { path }
            | FsError::RootReplaced { path }
            | FsError::NotADirectory { path }
            | FsError::NotOwned { path, .. }
            | FsError::HashMismatch { path, .. } => path,
        }
    }

    /// As [`FsError::io`], except that a full disk or quota is an [`FsError::NoSpace`].
    pub fn io_or_no_space(
        what: &'static str,
        path: impl Into<PathBuf>,
        source: io::Error,
    ) -> FsError {
        match source.kind() {
            io::ErrorKind::StorageFull | io::ErrorKind::QuotaExceeded => FsError::NoSpace {
                path: path.into(),
                source,
            },
            _ => FsError::io(what, path, source),
        }
    }

    /// Builds an [`FsError::Io`].
    pub fn io(what: &'static str, path: impl Into<PathBuf>, source: io::Error) -> FsError {
        FsError::Io {
            what,
            path: path.into(),
            source,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_and_permanence() {
        let e = FsError::io(
            "create a temp file in",
            "/r/d",
            io::Error::from(io::ErrorKind::PermissionDenied),
        );
        assert!(
            e.to_string()
                .starts_with("cannot create a temp file in /r/d: "),
            "{e}"
        );
        assert!(!e.is_permanent());
        assert_eq!(e.path(), Path::new("/r/d"));
        let e = FsError::SymlinkInPath {
            path: "/r/l".into(),
        };
        assert_eq!(
            e.to_string(),
            "refusing to write through /r/l: it is a symlink"
        );
        assert!(e.is_permanent());
        assert!(FsError::NotADirectory {
            path: "/r/f".into()
        }
        .is_permanent());
        let e = FsError::HashMismatch {
            path: "/r/f".into(),
            expected: "aa".into(),
            actual: "bb".into(),
        };
        assert!(!e.is_permanent());
        assert_eq!(
            e.to_string(),
            "content written for /r/f has sha256 bb, expected aa"
        );
    }

    #[test]
    fn a_full_disk_or_quota_is_no_space_and_says_what_to_do() {
        for errno in [libc::ENOSPC, libc::EDQUOT] {
            let e = FsError::io_or_no_space(
                "write the new content of",
                "/r/big",
                io::Error::from_raw_os_error(errno),
            );
            assert!(matches!(e, FsError::NoSpace { .. }), "{e:?}");
            let msg = e.to_string();
            assert!(
                msg.starts_with("no room for /r/big on its file system ("),
                "{msg}"
            );
            assert!(msg.ends_with("free some space there, or raise the quota, and try again"));
            assert!(!e.is_permanent(), "space can be freed");
            assert_eq!(e.path(), Path::new("/r/big"));
        }
        let e = FsError::io_or_no_space("write", "/r/f", io::Error::from_raw_os_error(libc::EIO));
        assert!(matches!(e, FsError::Io { .. }), "{e:?}");
    }
}
