//! A mapping: one local directory on R and the daemon's name for the directory it mirrors. Every
//! path of the client (sync, upstream, status) starts from one.

use std::path::PathBuf;

use zync_fs::DirName;

/// A local directory and the daemon's name for it.
#[derive(Debug, Clone)]
pub struct Mapping {
    /// The daemon's directory name.
    pub name: DirName,
    /// The local directory (canonical).
    pub root: PathBuf,
    /// The client's own files (database, token) that lie inside this directory: never
    /// overwritten by a change from E, never sent upstream.
    pub own: Vec<PathBuf>,
}
