//! The daemon's own files (its database and SQLite's files beside it, its token file, its
//! config file, and the staging area with R's staged files and zync-apply's backups): never
//! indexed, and never accepted from R as an upstream path, even when they sit inside a served
//! directory (`--db ./proj/sync.db` serving `proj`). The indexer and UPSTREAM_FILE both ask
//! here, so the list is made once, in `cli.rs`.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};

use zync_fs::RelPath;

/// Paths the daemon writes itself, canonical and absolute, each with what it is.
#[derive(Debug, Clone, Default)]
pub struct OwnPaths {
    /// Exact files, with what each is ("zync-daemon's own database").
    files: HashMap<PathBuf, &'static str>,
    /// Directories whose whole contents are the daemon's, with what each is.
    dirs: Vec<(PathBuf, &'static str)>,
}

impl OwnPaths {
    /// Adds a file (canonical absolute path) that is `what`.
    pub fn add_file(&mut self, path: PathBuf, what: &'static str) {
        self.files.insert(path, what);
    }

    /// Adds a directory (canonical absolute path) whose whole contents are `what`.
    pub fn add_dir(&mut self, path: PathBuf, what: &'static str) {
        self.dirs.push((path, what));
    }

    /// Whether `path` (absolute, canonical root prefix) is one of the daemon's own.
    pub fn contains(&self, path: &Path) -> bool {
        self.what(path).is_some()
    }

    /// What `path` (absolute, with canonical directories) is, when it is one of the daemon's
    /// own files or lies in one of its directories.
    pub fn what(&self, path: &Path) -> Option<&'static str> {
        self.files.get(path).copied().or_else(|| {
            self.dirs
                .iter()
                .find(|(d, _)| path.starts_with(d))
                .map(|(_, what)| *what)
        })
    }

    /// What `rel` inside `root` (canonical) is, when it is one of the daemon's own. The path
    /// is compared with its directories resolved, so a symlink or a second name for a
    /// directory inside the root does not hide the database; the last component itself is not
    /// followed (a write replaces a symlink there, it does not write through it). Blocking: it
    /// resolves directories on disk.
    pub fn what_in(&self, root: &Path, rel: &RelPath) -> Option<&'static str> {
        if self.files.is_empty() && self.dirs.is_empty() {
            return None;
        }
        let path = rel.to_path(root);
        self.what(&path)
            .or_else(|| self.what(&resolve_parent(&path)))
    }

    /// The same paths as seen from inside `root`, so a scan checks each entry without building
    /// its absolute path.
    pub(crate) fn below(&self, root: &Path) -> OwnBelow {
        let rel = |p: &PathBuf| p.strip_prefix(root).ok().map(Path::to_path_buf);
        let mut below = OwnBelow::default();
        for dir in self.dirs.iter().map(|(d, _)| d).filter_map(rel) {
            match RelPath::from_path(&dir) {
                Ok(dir) => below.dirs.push(dir),
                // The root itself, or a path no scan can produce.
                Err(_) => below.all |= dir.as_os_str().is_empty(),
            }
        }
        below.files = self
            .files
            .keys()
            .filter_map(rel)
            .filter_map(|f| f.to_str().map(str::to_string))
            .collect();
        below
    }
}

/// `path` with its parent directory resolved as far as it exists (symlinks, `..`), and the
/// rest appended as it is.
fn resolve_parent(path: &Path) -> PathBuf {
    let Some(name) = path.file_name() else {
        return path.to_path_buf();
    };
    let mut missing = vec![name.to_os_string()];
    let mut dir = path.parent();
    while let Some(d) = dir {
        if let Ok(real) = std::fs::canonicalize(d) {
            let mut out = real;
            for part in missing.iter().rev() {
                out.push(part);
            }
            return out;
        }
        match d.file_name() {
            Some(n) => missing.push(n.to_os_string()),
            None => break,
        }
        dir = d.parent();
    }
    path.to_path_buf()
}

/// [`OwnPaths`] relative to one root.
#[derive(Debug, Default)]
pub(crate) struct OwnBelow {
    files: HashSet<String>,
    dirs: Vec<RelPath>,
    /// The whole root is the daemon's.
    all: bool,
}

impl OwnBelow {
    pub(crate) fn contains(&self, rel: &RelPath) -> bool {
        self.all
            || self.files.contains(rel.as_str())
            || self.dirs.iter().any(|d| rel.starts_with(d))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_paths_are_found_under_any_name_of_their_directory() {
        let tmp = tempfile::tempdir().expect("tmp");
        let top = tmp.path().canonicalize().expect("canonical");
        let root = top.join("proj");
        std::fs::create_dir_all(root.join("state")).expect("mkdir");
        std::os::unix::fs::symlink(root.join("state"), root.join("alias")).expect("symlink");
        let mut own = OwnPaths::default();
        own.add_file(root.join("state/sync.db"), "zync-daemon's own database");
        own.add_dir(
            root.join("state/sync.db.staging"),
            "zync-daemon's staging area",
        );
        let what = |p: &str| own.what_in(&root, &RelPath::parse(p).expect("rel"));
        assert_eq!(what("state/sync.db"), Some("zync-daemon's own database"));
        assert_eq!(
            what("alias/sync.db"),
            Some("zync-daemon's own database"),
            "through a symlinked directory"
        );
        assert_eq!(
            what("state/sync.db.staging"),
            Some("zync-daemon's staging area")
        );
        assert_eq!(
            what("alias/sync.db.staging/9d2e4f6a/file-000001"),
            Some("zync-daemon's staging area"),
            "anything under the staging area, even where nothing exists yet"
        );
        assert_eq!(what("state/other.db"), None);
        assert_eq!(what("sync.db"), None);
        assert_eq!(what("new/dir/sync.db"), None);
    }
}
