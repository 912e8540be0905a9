//! A served directory as the command line names it: the name clients use and its canonical
//! path. Its own module so that the indexer and the command line can both use it without
//! importing each other.

use std::path::PathBuf;

use zync_fs::DirName;

/// One served directory.
#[derive(Debug, Clone)]
pub struct Root {
    /// The NAME clients use.
    pub name: DirName,
    /// Canonical absolute path.
    pub path: PathBuf,
}
