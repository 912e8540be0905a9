//! The directories apply creates on E for a new file's missing parents. They are recorded
//! with the file (`created_dirs` in the staging row) before they are made, so that whatever
//! ends the run, `undo` (or the roll-back of an interrupted apply in `recover.rs`) can take
//! them away again: only when empty, deepest first, each removed through its parent's
//! directory handle (invariant 3, docs/ARCHITECTURE.md) and tombstoned in the daemon's index
//! the way a removed file is, so R removes it too.

use std::collections::BTreeMap;
use std::io;
use std::path::Path;

use anyhow::{bail, Context};
use zync_db::{FileState, Index, StagedFile};
use zync_fs::{lstat, Dir, FsError, RelPath, Stat};

use crate::fileops;
use crate::roots::Roots;

/// The parents of `rel` missing on E now, shallowest first: what `fileops::ensure_parents`
/// is about to create. Reads only.
pub(crate) fn missing_parents(root: &Path, rel: &RelPath) -> Vec<RelPath> {
    let ancestors = rel.ancestors();
    let first_missing = ancestors
        .iter()
        .position(|a| matches!(lstat(&a.to_path(root)), Ok(Stat::Missing)));
    match first_missing {
        Some(i) => ancestors[i..].to_vec(),
        None => Vec::new(),
    }
}

/// Adds `dirs` to the directories recorded as created for `file` (a no-op when they are
/// recorded already).
///
/// # Errors
///
/// The database failed.
pub(crate) fn record(index: &Index, file: &StagedFile, dirs: &[RelPath]) -> anyhow::Result<()> {
    if dirs.is_empty() {
        return Ok(());
    }
    let mut all = index.created_dirs(&file.session_id, &file.dir, &file.path)?;
    let before = all.len();
    for d in dirs {
        if !all.iter().any(|a| a == d.as_str()) {
            all.push(d.as_str().to_string());
        }
    }
    if all.len() != before {
        index.set_created_dirs(&file.session_id, &file.dir, &file.path, &all)?;
    }
    Ok(())
}

/// Takes back the directories recorded for `file`, whose change did not happen: those still
/// empty are removed, and the record keeps only the ones that hold something now.
///
/// # Errors
///
/// As [`remove_empty`], or the database failed.
pub(crate) fn roll_back(index: &mut Index, file: &StagedFile, root: &Path) -> anyhow::Result<()> {
    let made = index.created_dirs(&file.session_id, &file.dir, &file.path)?;
    if made.is_empty() {
        return Ok(());
    }
    let result = remove_empty(index, &file.dir, root, &made)?;
    index.set_created_dirs(&file.session_id, &file.dir, &file.path, &result.kept)?;
    Ok(())
}

/// After an undo: removes the directories recorded for the session's undone files that are
/// empty now, across all of them at once (one file's directory may hold another's), and
/// returns the ones removed as `dir/path`. A directory that holds something stays, and stays
/// recorded, so that a later undo of the file in it can remove it.
///
/// # Errors
///
/// No mapping for a recorded dir name, a directory that cannot be removed for another reason
/// than holding something (such as a symlinked parent), or the database failed.
pub(crate) fn remove_for_session(
    index: &mut Index,
    session_id: &str,
    dirs: &[String],
) -> anyhow::Result<Vec<String>> {
    let mut recorded: Vec<(StagedFile, Vec<String>)> = Vec::new();
    for file in index.staged_files(session_id)? {
        if file.state != FileState::Undone {
            continue;
        }
        let made = index.created_dirs(session_id, &file.dir, &file.path)?;
        if !made.is_empty() {
            recorded.push((file, made));
        }
    }
    if recorded.is_empty() {
        return Ok(Vec::new());
    }
    let roots = Roots::resolve(dirs, index)?;
    let mut by_dir: BTreeMap<&str, Vec<String>> = BTreeMap::new();
    for (file, made) in &recorded {
        by_dir
            .entry(file.dir.as_str())
            .or_default()
            .extend(made.iter().cloned());
    }
    let mut removed = Vec::new();
    let mut kept: BTreeMap<&str, Vec<String>> = BTreeMap::new();
    for (dir, made) in by_dir {
        let result = match remove_empty(index, dir, roots.get(dir)?, &made) {
            Ok(result) => result,
            Err(e) => match roots.replaced_during_run(&e) {
                Some(why) => bail!("{why}; the directories the apply made are left in place"),
                None => return Err(e),
            },
        };
        removed.extend(result.removed.iter().map(|d| format!("{dir}/{d}")));
        kept.insert(dir, result.kept);
    }
    for (file, made) in &recorded {
        let still: Vec<String> = made
            .iter()
            .filter(|d| kept.get(file.dir.as_str()).is_some_and(|k| k.contains(d)))
            .cloned()
            .collect();
        if still.len() != made.len() {
            index.set_created_dirs(session_id, &file.dir, &file.path, &still)?;
        }
    }
    Ok(removed)
}

/// What [`remove_empty`] did.
#[derive(Debug, Default)]
pub(crate) struct Removal {
    /// Removed now.
    pub removed: Vec<String>,
    /// Left because they hold something.
    pub kept: Vec<String>,
}

/// Removes each of `made` (paths in the root of dir name `dir`) that is an empty directory,
/// deepest first, and tombstones it in the index; one already gone is tombstoned too (a run
/// killed after removing it may not have recorded that). Something that is no longer a
/// directory is left alone and forgotten: it is not one apply made.
///
/// # Errors
///
/// A path in the database that is not a valid relative path, a removal that failed for
/// another reason than the directory holding something, or the database failed.
pub(crate) fn remove_empty(
    index: &mut Index,
    dir: &str,
    root: &Path,
    made: &[String],
) -> anyhow::Result<Removal> {
    let mut paths = made
        .iter()
        .map(|d| RelPath::parse(d).with_context(|| format!("the database records {d:?}")))
        .collect::<anyhow::Result<Vec<_>>>()?;
    // Deepest first, so a parent is tried after its children.
    paths.sort_by(|a, b| b.depth().cmp(&a.depth()).then_with(|| b.cmp(a)));
    paths.dedup();
    let mut result = Removal::default();
    for rel in paths {
        match remove_dir_if_empty(root, &rel)? {
            Gone::Removed => {
                fileops::index_removed(index, dir, &rel)?;
                result.removed.push(rel.as_str().to_string());
            }
            Gone::Missing => fileops::index_removed(index, dir, &rel)?,
            Gone::NotEmpty => result.kept.push(rel.as_str().to_string()),
            Gone::NotADir => {}
        }
    }
    Ok(result)
}

enum Gone {
    Removed,
    Missing,
    NotEmpty,
    NotADir,
}

/// `rmdir` of `root/rel` in its parent's handle (never through a symlink), flushing the
/// parent so the removal is durable before it is recorded.
fn remove_dir_if_empty(root: &Path, rel: &RelPath) -> anyhow::Result<Gone> {
    let parent = match Dir::parent_of(root, rel) {
        Ok(d) => d,
        Err(FsError::Io { source, .. }) if source.kind() == io::ErrorKind::NotFound => {
            return Ok(Gone::Missing)
        }
        Err(e) => {
            return Err(e).with_context(|| {
                format!(
                    "cannot remove the directory {} that apply created",
                    rel.to_path(root).display()
                )
            })
        }
    };
    match parent.rmdir(rel.file_name()) {
        Ok(()) => {
            parent
                .sync()
                .with_context(|| format!("cannot fsync directory {}", parent.path().display()))?;
            Ok(Gone::Removed)
        }
        Err(e) => match e.kind() {
            io::ErrorKind::NotFound => Ok(Gone::Missing),
            io::ErrorKind::DirectoryNotEmpty => Ok(Gone::NotEmpty),
            io::ErrorKind::NotADirectory => Ok(Gone::NotADir),
            _ => Err(e).with_context(|| {
                format!(
                    "cannot remove the directory {} that apply created",
                    rel.to_path(root).display()
                )
            }),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rel(s: &str) -> RelPath {
        RelPath::parse(s).expect("valid test path")
    }

    #[test]
    fn missing_parents_are_the_ones_ensure_parents_makes() {
        let e = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir(e.path().join("a")).expect("mkdir");
        let planned = missing_parents(e.path(), &rel("a/b/c/f"));
        assert_eq!(planned, vec![rel("a/b"), rel("a/b/c")]);
        let made = fileops::ensure_parents(e.path(), &rel("a/b/c/f")).expect("ensure");
        assert_eq!(made, planned);
        assert!(missing_parents(e.path(), &rel("a/b/c/f")).is_empty());
        assert!(missing_parents(e.path(), &rel("top.txt")).is_empty());
    }

    #[test]
    fn only_empty_directories_go_deepest_first_and_a_symlinked_parent_is_refused() {
        let e = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir_all(e.path().join("a/b/c")).expect("mkdir");
        std::fs::create_dir_all(e.path().join("x/y")).expect("mkdir");
        std::fs::write(e.path().join("x/keep.txt"), b"mine").expect("write");
        std::fs::write(e.path().join("file"), b"not a dir").expect("write");
        let mut index = Index::open_in_memory().expect("index");
        let made: Vec<String> = ["a", "a/b", "a/b/c", "x", "x/y", "gone", "file"]
            .map(String::from)
            .to_vec();
        let r = remove_empty(&mut index, "docs", e.path(), &made).expect("remove");
        assert_eq!(r.removed, ["a/b/c", "x/y", "a/b", "a"]);
        assert_eq!(r.kept, ["x"]);
        assert!(!e.path().join("a").exists());
        assert!(e.path().join("x/keep.txt").exists());
        assert!(e.path().join("file").exists());

        let outside = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir(outside.path().join("d")).expect("mkdir");
        std::os::unix::fs::symlink(outside.path(), e.path().join("l")).expect("symlink");
        let err = remove_empty(&mut index, "docs", e.path(), &["l/d".to_string()])
            .expect_err("symlinked parent");
        assert!(format!("{err:#}").contains("symlink"), "{err:#}");
        assert!(
            outside.path().join("d").exists(),
            "removed through a symlink"
        );
    }
}
