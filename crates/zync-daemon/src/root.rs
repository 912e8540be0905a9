//! A served directory as the command line names it: the name clients use, its canonical path,
//! and the directory that path led to when the daemon started, which is the only one it
//! serves. Its own module so that the indexer and the command line can both use it without
//! importing each other.

use std::path::PathBuf;

use zync_fs::{DirName, FsError, RootId};

/// One served directory.
#[derive(Debug, Clone)]
pub struct Root {
    /// The NAME clients use.
    pub name: DirName,
    /// Canonical absolute path.
    pub path: PathBuf,
    /// The directory `path` led to when the daemon started ([`zync_fs::pin_root`]): every
    /// read and write of the tree goes through a handle of it, and while the path leads to
    /// another directory (moved or replaced, or a directory above it swapped for a symlink by
    /// another user) nothing is read, served or recorded for the root (invariants 3 and 8,
    /// docs/ARCHITECTURE.md).
    pub id: RootId,
}

impl Root {
    /// The served directory `name` at the canonical `path`, pinned to the directory it leads
    /// to now.
    ///
    /// # Errors
    ///
    /// [`FsError::Io`] when the directory cannot be opened.
    pub fn pin(name: DirName, path: PathBuf) -> Result<Root, FsError> {
        let id = zync_fs::pin_root(&path)?;
        Ok(Root { name, path, id })
    }
}
