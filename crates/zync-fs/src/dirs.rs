//! Directories under a synced root, handled without ever following a symlink (invariant 3):
//! checking a path's parents, creating directories, and clearing leftover temp files.

use crate::beneath::{chmod_fd, Dir};
use crate::error::FsError;
use crate::ignore::TEMP_PREFIX;
use crate::path::RelPath;
use std::ffi::OsStr;
use std::io;
use std::os::fd::AsFd;
use std::path::Path;
use zync_proto::Kind;

/// Checks that every proper ancestor of `rel` under `root` exists and is a real directory, by
/// opening `rel`'s directory the way a write does. `root` itself is trusted (it may be a
/// symlink the user chose).
///
/// This is a check, not a lock: the writes in this crate do not rely on it, they reach their
/// directory through a handle ([`Dir`]) and act relative to it.
///
/// # Errors
///
/// [`FsError::SymlinkInPath`] for a symlink, [`FsError::NotADirectory`] for anything else that
/// is not a directory, [`FsError::Io`] (with `NotFound`) for a missing ancestor.
pub fn check_parents(root: &Path, rel: &RelPath) -> Result<(), FsError> {
    Dir::parent_of(root, rel).map(drop)
}

/// Creates `root/rel` and its missing ancestors as directories without following symlinks
/// (each `mkdirat` relative to its parent's handle). When `mode` is given it is applied to
/// `root/rel` (also if it already existed), through the handle; new ancestors get the default
/// mode. Returns the directories this call made (empty when made), shallowest first; one
/// that someone else made first is not among them.
///
/// # Errors
///
/// As [`check_parents`], for `rel` itself too; [`FsError::Io`] when creation fails.
pub fn ensure_dir(root: &Path, rel: &RelPath, mode: Option<u32>) -> Result<Vec<RelPath>, FsError> {
    let (dir, made) = Dir::open_root(root)?.create_dirs(rel)?;
    if let Some(mode) = mode {
        chmod_fd(dir.as_fd(), mode).map_err(|e| FsError::io("set the mode of", dir.path(), e))?;
    }
    Ok(made)
}

/// Removes zync temp files (names starting with [`TEMP_PREFIX`]) anywhere under `root`, left by
/// an interrupted run, except partial downloads younger than [`PARTIAL_MAX_AGE`], which a
/// later run resumes. Does not follow symlinks: every directory is opened from its parent's
/// handle and every file removed relative to it. Unreadable subdirectories are logged and
/// skipped. Returns how many files were removed.
///
/// # Errors
///
/// [`FsError::Io`] when `root` itself cannot be read or a temp file cannot be removed.
pub fn remove_temp_files(root: &Path) -> Result<usize, FsError> {
    let mut removed = 0;
    let mut stack = vec![Dir::open_root(root)?];
    let mut first = true;
    while let Some(dir) = stack.pop() {
        let entries = match dir.entries() {
            Ok(entries) => entries,
            Err(e) if first => return Err(FsError::io("read directory", root, e)),
            Err(e) => {
                tracing::warn!(
                    "cannot read {} to remove temp files: {e}",
                    dir.path().display()
                );
                continue;
            }
        };
        first = false;
        for (name, kind) in entries {
            if kind == Some(Kind::Dir) {
                match dir.child_dir(&name) {
                    Ok(sub) => stack.push(sub),
                    Err(e) => tracing::warn!(
                        "cannot read {} to remove temp files: {e}",
                        dir.path_of(&name).display()
                    ),
                }
            } else if name.as_encoded_bytes().starts_with(TEMP_PREFIX.as_bytes())
                && !is_recent_partial(&dir, &name)
            {
                match dir.unlink(&name) {
                    Ok(()) => removed += 1,
                    Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                    Err(e) => return Err(FsError::io("remove temp file", dir.path_of(&name), e)),
                }
            }
        }
    }
    Ok(removed)
}

/// Removes the partial downloads kept for `rel` (any content), once it is complete or gone.
pub fn remove_partials(root: &Path, rel: &crate::path::RelPath) {
    let Ok(dir) = Dir::parent_of(root, rel) else {
        return;
    };
    let Ok(entries) = dir.entries() else {
        return;
    };
    let prefix = format!("{TEMP_PREFIX}partial-");
    let suffix = format!("-{}", rel.file_name());
    for (name, kind) in entries {
        let Some(name) = name.to_str() else { continue };
        if kind == Some(Kind::Dir) {
            continue;
        }
        // The name may have been cut to the component limit: only then does a prefix of the
        // file name count.
        let tail = name.strip_prefix(&prefix).and_then(|t| t.get(17..));
        let cut = name.len() >= crate::path::MAX_COMPONENT_BYTES - 3;
        if tail.is_some_and(|t| t == &suffix[1..] || (cut && suffix[1..].starts_with(t))) {
            let _ = dir.unlink(name);
        }
    }
}

/// How long a partial download is kept for a resume before cleanup removes it.
pub const PARTIAL_MAX_AGE: std::time::Duration = std::time::Duration::from_secs(24 * 3600);

/// A partial download (kept on purpose for a resume) that is younger than [`PARTIAL_MAX_AGE`].
fn is_recent_partial(dir: &Dir, name: &OsStr) -> bool {
    let partial = format!("{TEMP_PREFIX}partial-");
    if !name.as_encoded_bytes().starts_with(partial.as_bytes()) {
        return false;
    }
    let Ok(mtime) = dir.mtime_of(name) else {
        return false;
    };
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX));
    u64::try_from(now.saturating_sub(mtime))
        .is_ok_and(|age| u128::from(age) < PARTIAL_MAX_AGE.as_nanos())
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
    fn a_directory_swapped_after_a_check_is_seen_at_the_next_one() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let r = tmp.path();
        fs::create_dir_all(r.join("a/b")).expect("mkdir");
        fs::create_dir(r.join("elsewhere")).expect("mkdir");
        check_parents(r, &rel("a/b/one")).expect("real dirs");
        fs::rename(r.join("a/b"), r.join("a/old")).expect("rename");
        symlink(r.join("elsewhere"), r.join("a/b")).expect("symlink");
        assert!(matches!(
            check_parents(r, &rel("a/b/two")),
            Err(FsError::SymlinkInPath { path }) if path == r.join("a/b")
        ));
        check_parents(r, &rel("top-level")).expect("the root is trusted");
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
        let made = ensure_dir(r, &rel("x/y/z"), Some(0o750)).expect("ensure_dir");
        assert_eq!(made, vec![rel("x"), rel("x/y"), rel("x/y/z")]);
        let md = fs::symlink_metadata(r.join("x/y/z")).expect("stat");
        assert!(md.is_dir());
        assert_eq!(md.permissions().mode() & 0o7777, 0o750);
        let made = ensure_dir(r, &rel("x/y/z"), Some(0o700)).expect("existing dir is fine");
        assert!(made.is_empty(), "{made:?}");
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
