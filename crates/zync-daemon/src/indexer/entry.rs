//! One entry as the index records it: whether the disk still matches a row (by metadata, so
//! unchanged files are never read), and a new row for an entry, its content hashed.

use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

use zync_db::{EntryMeta, Kind, ScanRow};
use zync_fs::{EntryKind, Meta, RelPath};

use super::{RACY, RACY_FINE};

/// Same kind, size, mtime, inode, mode and link target: the content is taken as unchanged.
/// A directory's mtime, size and inode move whenever a child comes or goes; only its mode is
/// synced, so only its mode counts (else every new file would also re-send its directory).
pub(super) fn unchanged(old: Known<'_>, new: &Meta) -> bool {
    if new.kind == EntryKind::Dir {
        return old.kind == Kind::Dir && old.mode == new.mode;
    }
    old.kind == kind_of(new.kind)
        && old.size == new.size
        && old.mtime_ns == new.mtime_ns
        && old.inode == new.inode
        && old.mode == new.mode
        && old.target == new.target.as_deref()
}

/// What the index knows of a path that [`unchanged`] compares, from a full row or a scan's.
#[derive(Clone, Copy)]
pub(super) struct Known<'a> {
    kind: Kind,
    size: u64,
    mtime_ns: i64,
    inode: u64,
    mode: u32,
    target: Option<&'a str>,
}

impl<'a> From<&'a EntryMeta> for Known<'a> {
    fn from(m: &'a EntryMeta) -> Self {
        Known {
            kind: m.kind,
            size: m.size,
            mtime_ns: m.mtime_ns,
            inode: m.inode,
            mode: m.mode,
            target: m.target.as_deref(),
        }
    }
}

impl<'a> From<&'a ScanRow> for Known<'a> {
    fn from(r: &'a ScanRow) -> Self {
        Known {
            kind: r.kind,
            size: r.size,
            mtime_ns: r.mtime_ns,
            inode: r.inode,
            mode: r.mode,
            target: r.target.as_deref(),
        }
    }
}

fn kind_of(kind: EntryKind) -> Kind {
    match kind {
        EntryKind::File => Kind::File,
        EntryKind::Dir => Kind::Dir,
        EntryKind::Symlink => Kind::Symlink,
    }
}

/// How long after its mtime a file may still be written without its mtime moving: the
/// timestamp granularity of its file system, judged from the mtime itself. One with a
/// sub-second part comes from a file system that keeps fine timestamps (Linux ones tick every
/// few milliseconds at most): [`RACY_FINE`]. A whole-second mtime may come from a coarse one
/// (FAT keeps two seconds): [`RACY`]. Without this, every file saved in the two seconds before
/// a scan was hashed twice, a big one costing a second of CPU again.
pub(super) fn racy_window(mtime_ns: i64) -> std::time::Duration {
    if mtime_ns.rem_euclid(1_000_000_000) == 0 {
        RACY
    } else {
        RACY_FINE
    }
}

/// The index row for an entry, hashing files (counted in `hashed`). A file that changes while
/// it is hashed is skipped: its next watch event records the settled version.
/// The flag says the file was modified less than its [`racy_window`] before it was hashed: a
/// write in the same mtime tick would go unnoticed, so the caller hashes it again later.
pub(super) fn describe(
    root: &Path,
    rel: &RelPath,
    meta: &Meta,
    hashed: &AtomicU64,
) -> Option<(EntryMeta, bool)> {
    let now_ns = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(i64::MAX, |d| {
            i64::try_from(d.as_nanos()).unwrap_or(i64::MAX)
        });
    let racy = meta.kind == EntryKind::File
        && now_ns.saturating_sub(meta.mtime_ns) < racy_window(meta.mtime_ns).as_nanos() as i64;
    let sha256 = if meta.kind == EntryKind::File {
        let path = rel.to_path(root);
        hashed.fetch_add(1, Ordering::Relaxed);
        match zync_fs::hash::hash_file_stat(&path) {
            Ok(h) => {
                // The file read must be the one the scan saw, unchanged since: same inode, size
                // and mtime, asked of the open file once it was read to the end.
                let after_ns = h
                    .after
                    .mtime()
                    .saturating_mul(1_000_000_000)
                    .saturating_add(h.after.mtime_nsec());
                let settled = h.len == meta.size
                    && h.after.len() == meta.size
                    && h.after.ino() == meta.inode
                    && after_ns == meta.mtime_ns;
                if !settled {
                    tracing::debug!(path = %rel, "changed while hashing; waiting for it to settle");
                    return None;
                }
                Some(h.sha256)
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return None,
            Err(e) => {
                tracing::warn!(path = %path.display(), "cannot read: {e}");
                return None;
            }
        }
    } else {
        None
    };
    let entry = EntryMeta {
        kind: kind_of(meta.kind),
        size: meta.size,
        mtime_ns: meta.mtime_ns,
        mode: meta.mode,
        inode: meta.inode,
        sha256,
        target: meta.target.clone(),
    };
    Some((entry, racy))
}
