//! A regular file opened for serving (GET_FILE, GET_DELTA): found live in the index, opened
//! without following a symlink, and checked to be still what its index row says, before it is
//! served and again after it was read whole. Anything else is `stale`: a newer change is on
//! its way.

use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use zync_proto::Kind;

use zync_db::Index;
use zync_fs::RelPath;
use zync_proto::ErrorCode;

use crate::refusal::Refusal;

/// A regular file opened for serving (GET_FILE, GET_DELTA), with the index row it matched.
pub(crate) struct IndexedFile {
    /// The path within its directory.
    pub(crate) rel: RelPath,
    /// The absolute path.
    pub(crate) abs: PathBuf,
    /// Opened without following a symlink.
    pub(crate) file: std::fs::File,
    /// Size, mtime, mode and checksum, as indexed.
    pub(crate) size: u64,
    pub(crate) mtime_ns: i64,
    pub(crate) mode: u32,
    pub(crate) sha256: String,
}

impl IndexedFile {
    /// The `stale` refusal for `rel`: it changed, a newer change is coming.
    pub(crate) fn stale_refusal(rel: &RelPath, why: &str) -> Refusal {
        Refusal::new(
            ErrorCode::Stale,
            format!("{rel} {why}; ask again after the next change"),
        )
    }

    /// Checks the open file is still a regular file of the indexed size and its path has the
    /// indexed mtime: before serving it, and after reading it whole (GET_DELTA).
    pub(crate) fn check_unchanged(&self) -> Result<(), Refusal> {
        let meta = self
            .file
            .metadata()
            .map_err(|e| Self::stale_refusal(&self.rel, &format!("cannot be read ({e})")))?;
        let mtime_ns = zync_fs::lstat(&self.abs)
            .ok()
            .and_then(|s| match s {
                zync_fs::Stat::Entry(m) => Some(m.mtime_ns),
                _ => None,
            })
            .unwrap_or(i64::MIN);
        if meta.len() != self.size || mtime_ns != self.mtime_ns || !meta.is_file() {
            return Err(Self::stale_refusal(
                &self.rel,
                "changed since it was indexed",
            ));
        }
        Ok(())
    }
}

/// Opens the indexed regular file `rel` of `dir`, checked in the order docs/PROTOCOL.md gives
/// for GET_FILE: the index has a live regular-file row for it, and the file on disk is still
/// what that row says (parents are real directories, no symlink followed, same size and mtime,
/// checksum known), else `stale`: a newer change is on its way. Blocking: runs off the reactor.
pub(crate) fn open(
    index: &Index,
    root: &Path,
    dir: &str,
    rel: RelPath,
) -> Result<IndexedFile, Refusal> {
    let entry = match index.get(dir, rel.as_str())? {
        Some(e) if !e.deleted => e,
        _ => {
            return Err(Refusal::new(
                ErrorCode::NotFound,
                format!("{rel} is not in the index"),
            ))
        }
    };
    if entry.meta.kind != Kind::File {
        return Err(Refusal::new(
            ErrorCode::NotAFile,
            format!(
                "{rel} is a {}, not a regular file",
                entry.meta.kind.as_str()
            ),
        ));
    }
    let stale = |why: String| IndexedFile::stale_refusal(&rel, &why);
    zync_fs::check_parents(root, &rel).map_err(|e| stale(format!("changed: {e}")))?;
    let abs = rel.to_path(root);
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(&abs)
        .map_err(|e| stale(format!("cannot be opened ({e})")))?;
    let Some(sha256) = entry.meta.sha256.clone() else {
        return Err(stale("has no checksum yet".to_string()));
    };
    let opened = IndexedFile {
        rel,
        abs,
        file,
        size: entry.meta.size,
        mtime_ns: entry.meta.mtime_ns,
        mode: entry.meta.mode,
        sha256,
    };
    opened.check_unchanged()?;
    Ok(opened)
}
