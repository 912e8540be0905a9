//! Directories under a synced root, handled without ever following a symlink (invariant 3):
//! checking a path's parents, creating directories, and clearing leftover temp files.

use crate::error::FsError;
use crate::ignore::TEMP_PREFIX;
use crate::path::RelPath;
use std::io;
use std::path::Path;

/// What one path component turned out to be.
enum Component {
    Missing,
    Dir,
}

/// `lstat`s `path` and insists on a real directory (or nothing).
fn inspect(path: &Path) -> Result<Component, FsError> {
    match std::fs::symlink_metadata(path) {
        Ok(md) if md.file_type().is_dir() => Ok(Component::Dir),
        Ok(md) if md.file_type().is_symlink() => Err(FsError::SymlinkInPath { path: path.into() }),
        Ok(_) => Err(FsError::NotADirectory { path: path.into() }),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Component::Missing),
        Err(e) => Err(FsError::io("inspect", path, e)),
    }
}

/// Checks that every proper ancestor of `rel` under `root` exists and is a real directory.
/// `root` itself is trusted (it may be a symlink the user chose).
///
/// This is a check, not a lock: a local process racing zync could still swap a directory for a
/// symlink afterwards. Callers check again right before the final rename.
///
/// # Errors
///
/// [`FsError::SymlinkInPath`] for a symlink, [`FsError::NotADirectory`] for anything else that
/// is not a directory, [`FsError::Io`] (with `NotFound`) for a missing ancestor.
pub fn check_parents(root: &Path, rel: &RelPath) -> Result<(), FsError> {
    for ancestor in rel.ancestors() {
        let path = ancestor.to_path(root);
        if let Component::Missing = inspect(&path)? {
            return Err(FsError::io(
                "find directory",
                path,
                io::Error::from(io::ErrorKind::NotFound),
            ));
        }
    }
    Ok(())
}

/// The directories [`CheckedDirs::check_parents`] found to be real directories, so that many
/// files in a few directories cost a few checks instead of one per ancestor per file. What it
/// remembers is true as of when it was checked: keep one only for a short stretch of work (a
/// group of files being written, a batch of renames), then drop it.
#[derive(Debug, Default)]
pub struct CheckedDirs(std::collections::HashSet<std::path::PathBuf>);

impl CheckedDirs {
    /// As [`check_parents`], skipped when `rel`'s directory under `root` passed it since this
    /// was made (any root: directories are remembered by their full path).
    ///
    /// # Errors
    ///
    /// As [`check_parents`].
    pub fn check_parents(&mut self, root: &Path, rel: &RelPath) -> Result<(), FsError> {
        let Some(parent) = rel.parent() else {
            return Ok(());
        };
        let parent = parent.to_path(root);
        if self.0.contains(&parent) {
            return Ok(());
        }
        check_parents(root, rel)?;
        self.0.insert(parent);
        Ok(())
    }
}

/// Creates `root/rel` and its missing ancestors as directories without following symlinks. When
/// `mode` is given it is applied to `root/rel` (also if it already existed); new ancestors get
/// the default mode.
///
/// # Errors
///
/// As [`check_parents`], for `rel` itself too; [`FsError::Io`] when creation fails.
pub fn ensure_dir(root: &Path, rel: &RelPath, mode: Option<u32>) -> Result<(), FsError> {
    let mut all = rel.ancestors();
    all.push(rel.clone());
    for dir in all {
        let path = dir.to_path(root);
        if let Component::Missing = inspect(&path)? {
            match std::fs::create_dir(&path) {
                Ok(()) => {}
                // Someone else made it first: fine if it is a real directory.
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                    if let Component::Missing = inspect(&path)? {
                        return Err(FsError::io("create directory", path, e));
                    }
                }
                Err(e) => return Err(FsError::io("create directory", path, e)),
            }
        }
    }
    if let Some(mode) = mode {
        crate::attrs::set_mode(&rel.to_path(root), mode)?;
    }
    Ok(())
}

/// Removes zync temp files (names starting with [`TEMP_PREFIX`]) anywhere under `root`, left by
/// an interrupted run, except partial downloads younger than [`PARTIAL_MAX_AGE`], which a
/// later run resumes. Does not follow symlinks. Unreadable subdirectories are logged and
/// skipped. Returns how many files were removed.
///
/// # Errors
///
/// [`FsError::Io`] when `root` itself cannot be read or a temp file cannot be removed.
pub fn remove_temp_files(root: &Path) -> Result<usize, FsError> {
    remove_temp_files_inner(root)
}

/// Removes the partial downloads kept for `rel` (any content), once it is complete or gone.
pub fn remove_partials(root: &Path, rel: &crate::path::RelPath) {
    let dir = rel
        .parent()
        .map_or_else(|| root.to_path_buf(), |p| p.to_path(root));
    let Ok(entries) = std::fs::read_dir(&dir) else {
        return;
    };
    let prefix = format!("{TEMP_PREFIX}partial-");
    let suffix = format!("-{}", rel.file_name());
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        // The name may have been cut to the component limit: only then does a prefix of the
        // file name count.
        let tail = name.strip_prefix(&prefix).and_then(|t| t.get(17..));
        let cut = name.len() >= crate::path::MAX_COMPONENT_BYTES - 3;
        if tail.is_some_and(|t| t == &suffix[1..] || (cut && suffix[1..].starts_with(t))) {
            let _ = std::fs::remove_file(entry.path());
        }
    }
}

/// How long a partial download is kept for a resume before cleanup removes it.
pub const PARTIAL_MAX_AGE: std::time::Duration = std::time::Duration::from_secs(24 * 3600);

/// A partial download (kept on purpose for a resume) that is younger than [`PARTIAL_MAX_AGE`].
fn is_recent_partial(entry: &std::fs::DirEntry) -> bool {
    let partial = format!("{TEMP_PREFIX}partial-");
    entry
        .file_name()
        .as_encoded_bytes()
        .starts_with(partial.as_bytes())
        && entry
            .metadata()
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| t.elapsed().ok())
            .is_some_and(|age| age < PARTIAL_MAX_AGE)
}

fn remove_temp_files_inner(root: &Path) -> Result<usize, FsError> {
    let mut removed = 0;
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let entries = match std::fs::read_dir(&dir) {
            Ok(entries) => entries,
            Err(e) if dir == root => return Err(FsError::io("read directory", dir, e)),
            Err(e) => {
                tracing::warn!("cannot read {} to remove temp files: {e}", dir.display());
                continue;
            }
        };
        for entry in entries {
            let entry = match entry {
                Ok(entry) => entry,
                Err(e) => {
                    tracing::warn!("cannot read {} to remove temp files: {e}", dir.display());
                    continue;
                }
            };
            // DirEntry::file_type does not follow symlinks.
            let Ok(file_type) = entry.file_type() else {
                continue;
            };
            let path = entry.path();
            if file_type.is_dir() {
                stack.push(path);
            } else if entry
                .file_name()
                .as_encoded_bytes()
                .starts_with(TEMP_PREFIX.as_bytes())
                && !is_recent_partial(&entry)
            {
                match std::fs::remove_file(&path) {
                    Ok(()) => removed += 1,
                    Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                    Err(e) => return Err(FsError::io("remove temp file", path, e)),
                }
            }
        }
    }
    Ok(removed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;
    use std::os::unix::fs::{symlink, PermissionsExt};

    fn rel(s: &str) -> RelPath {
        RelPath::parse(s).expect("valid test path")
    }

    #[test]
    fn checked_dirs_check_each_directory_once_and_a_new_one_checks_again() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let r = tmp.path();
        fs::create_dir_all(r.join("a/b")).expect("mkdir");
        fs::create_dir(r.join("elsewhere")).expect("mkdir");
        let mut checked = CheckedDirs::default();
        checked
            .check_parents(r, &rel("a/b/one"))
            .expect("real dirs");
        // Swapped for a symlink after the check: this stretch of work trusts its own check...
        fs::rename(r.join("a/b"), r.join("a/old")).expect("rename");
        symlink(r.join("elsewhere"), r.join("a/b")).expect("symlink");
        checked
            .check_parents(r, &rel("a/b/two"))
            .expect("same directory, already checked");
        // ...a sibling directory is checked on its own...
        assert!(matches!(
            checked.check_parents(r, &rel("a/b/c/three")),
            Err(FsError::SymlinkInPath { .. })
        ));
        // ...and the next stretch of work sees the symlink.
        assert!(matches!(
            CheckedDirs::default().check_parents(r, &rel("a/b/two")),
            Err(FsError::SymlinkInPath { .. })
        ));
        CheckedDirs::default()
            .check_parents(r, &rel("top-level"))
            .expect("the root is trusted");
        // The same relative directory under another root is another directory.
        let other = tmp.path().join("other-root");
        fs::create_dir_all(other.join("d")).expect("mkdir");
        fs::create_dir_all(r.join("d/real")).expect("mkdir");
        symlink(r.join("elsewhere"), other.join("d/real")).expect("symlink");
        let mut checked = CheckedDirs::default();
        checked
            .check_parents(r, &rel("d/real/f"))
            .expect("real dirs");
        assert!(matches!(
            checked.check_parents(&other, &rel("d/real/f")),
            Err(FsError::SymlinkInPath { .. })
        ));
    }

    #[test]
    fn check_parents_cases() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let r = tmp.path();
        fs::create_dir_all(r.join("a/b")).expect("mkdir");
        fs::write(r.join("f"), b"x").expect("write");
        symlink(r.join("a"), r.join("l")).expect("symlink");
        assert!(check_parents(r, &rel("top")).is_ok());
        assert!(check_parents(r, &rel("a/b/new")).is_ok());
        assert!(matches!(
            check_parents(r, &rel("l/b/x")),
            Err(FsError::SymlinkInPath { path }) if path == r.join("l")
        ));
        assert!(matches!(
            check_parents(r, &rel("f/x")),
            Err(FsError::NotADirectory { path }) if path == r.join("f")
        ));
        match check_parents(r, &rel("a/missing/x")) {
            Err(FsError::Io { source, path, .. }) => {
                assert_eq!(source.kind(), io::ErrorKind::NotFound);
                assert_eq!(path, r.join("a/missing"));
            }
            other => panic!("expected NotFound, got {other:?}"),
        }
    }

    #[test]
    fn ensure_dir_creates_and_refuses_symlinks() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let r = tmp.path();
        ensure_dir(r, &rel("x/y/z"), Some(0o750)).expect("ensure_dir");
        let md = fs::symlink_metadata(r.join("x/y/z")).expect("stat");
        assert!(md.is_dir());
        assert_eq!(md.permissions().mode() & 0o7777, 0o750);
        ensure_dir(r, &rel("x/y/z"), Some(0o700)).expect("existing dir is fine");
        let md = fs::symlink_metadata(r.join("x/y/z")).expect("stat");
        assert_eq!(md.permissions().mode() & 0o7777, 0o700);

        let outside = tempfile::tempdir().expect("tempdir");
        symlink(outside.path(), r.join("l")).expect("symlink");
        assert!(matches!(
            ensure_dir(r, &rel("l/sub"), None),
            Err(FsError::SymlinkInPath { .. })
        ));
        assert!(matches!(
            ensure_dir(r, &rel("l"), None),
            Err(FsError::SymlinkInPath { .. })
        ));
        assert!(
            fs::read_dir(outside.path()).expect("read").next().is_none(),
            "wrote outside"
        );

        fs::write(r.join("f"), b"x").expect("write");
        assert!(matches!(
            ensure_dir(r, &rel("f"), None),
            Err(FsError::NotADirectory { .. })
        ));
        assert!(matches!(
            ensure_dir(r, &rel("f/g"), None),
            Err(FsError::NotADirectory { .. })
        ));
    }

    #[test]
    fn removes_temp_files_only() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let r = tmp.path();
        fs::create_dir_all(r.join("d/e")).expect("mkdir");
        for f in [
            ".zync-tmp-1",
            "d/.zync-tmp-2",
            "d/e/.zync-tmp-3",
            "keep",
            "d/e/keep.zync-tmp-",
        ] {
            fs::write(r.join(f), b"x").expect("write");
        }
        symlink("nowhere", r.join("d/.zync-tmp-link")).expect("symlink");
        let outside = tempfile::tempdir().expect("tempdir");
        fs::write(outside.path().join(".zync-tmp-outside"), b"x").expect("write");
        symlink(outside.path(), r.join("out")).expect("symlink");

        assert_eq!(remove_temp_files(r).expect("remove"), 4);
        assert!(r.join("keep").exists() && r.join("d/e/keep.zync-tmp-").exists());
        assert!(!r.join("d/e/.zync-tmp-3").exists());
        assert!(
            outside.path().join(".zync-tmp-outside").exists(),
            "followed a symlink"
        );
        assert_eq!(remove_temp_files(r).expect("remove"), 0);
        assert!(remove_temp_files(&r.join("missing")).is_err());
    }
}
