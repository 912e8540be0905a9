//! One entry as the index records it: whether the disk still matches a row (by metadata, so
//! unchanged files are never read), and a new row for an entry, its content hashed.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::Duration;
use zync_proto::Kind;

use zync_db::{EntryMeta, ScanRow};
use zync_fs::{Meta, RelPath};

/// A file modified less than this long before it was hashed may be written again within the
/// same mtime tick; it is hashed once more this long later ("racy git").
pub(super) const RACY: Duration = Duration::from_secs(2);
/// The window instead for an mtime with a sub-second part on a local file system (see
/// [`racy_window`]); such a file is still hashed again [`RACY`] later.
pub(super) const RACY_FINE: Duration = Duration::from_millis(100);

/// Same kind, size, mtime, inode, mode and link target: the content is taken as unchanged.
/// A directory's mtime, size and inode move whenever a child comes or goes; only its mode is
/// synced, so only its mode counts (else every new file would also re-send its directory).
pub(super) fn unchanged(old: Known<'_>, new: &Meta) -> bool {
    if new.kind == Kind::Dir {
        return old.kind == Kind::Dir && old.mode == new.mode;
    }
    old.kind == new.kind
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

/// How long after its mtime a file may still be written without its mtime moving: the
/// timestamp granularity of its file system, judged from the mtime itself. One with a
/// sub-second part, on a local file system, comes from one that keeps fine timestamps (Linux
/// ones tick every few milliseconds at most): [`RACY_FINE`]. A whole-second mtime may come from
/// a coarse one (FAT keeps two seconds), and on a network file system the mtime comes from
/// another machine's clock, which may be behind this one: [`RACY`]. Without this, every file
/// saved in the two seconds before a scan was hashed twice, a big one costing seconds of CPU.
pub(super) fn racy_window(clock: &Clock, mtime_ns: i64) -> Duration {
    if mtime_ns.rem_euclid(1_000_000_000) == 0 || !clock.local() {
        RACY
    } else {
        RACY_FINE
    }
}

/// A root, and whether its files get their timestamps from this machine's clock
/// ([`local_clock`]), asked at most once: a scan or a batch of events describes thousands of
/// files of one root, and asking for each walked the root's path with `statfs` every time.
pub(super) struct Clock {
    root: PathBuf,
    local: OnceLock<bool>,
}

impl Clock {
    /// For the files under `root`; nothing is asked until [`describe`] needs it.
    pub(super) fn of(root: &Path) -> Clock {
        Clock {
            root: root.to_path_buf(),
            local: OnceLock::new(),
        }
    }

    fn local(&self) -> bool {
        *self.local.get_or_init(|| local_clock(&self.root))
    }
}

/// Whether files under `root` get their timestamps from this machine's clock: false on the
/// network and FUSE file systems Linux names in `statfs` (and when it cannot tell).
fn local_clock(root: &Path) -> bool {
    #[cfg(target_os = "linux")]
    {
        use std::os::unix::ffi::OsStrExt;
        // NFS, SMB, CIFS, SMB2, FUSE (sshfs, virtiofs and the like), Ceph, 9P, OpenAFS, Coda,
        // kAFS, VirtualBox shared folders, Lustre, GPFS, OCFS2, GFS2.
        const REMOTE: [u32; 15] = [
            0x6969,
            0x517B,
            0xFF53_4D42,
            0xFE53_4D42,
            0x6573_5546,
            0x00C3_6400,
            0x0102_1997,
            0x5346_414F,
            0x7375_7245,
            0x6B41_4653,
            0x786F_4256,
            0x0BD0_0BD0,
            0x4750_4653,
            0x7461_636F,
            0x0116_1970,
        ];
        let Ok(path) = std::ffi::CString::new(root.as_os_str().as_bytes()) else {
            return false;
        };
        // SAFETY: a valid C string and a zeroed out-parameter the call fills in.
        let mut fs: libc::statfs = unsafe { std::mem::zeroed() };
        if unsafe { libc::statfs(path.as_ptr(), &mut fs) } != 0 {
            return false;
        }
        // f_type's width differs between targets; the magic numbers fit in 32 bits.
        !REMOTE.contains(&(fs.f_type as u32))
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = root;
        false
    }
}

/// The index row for an entry, hashing files (counted in `hashed`). A file that changes while
/// it is hashed is skipped: its next watch event records the settled version.
/// The flag says the file was modified less than its [`racy_window`] before its hashing
/// ended: a write in the same mtime tick would go unnoticed, so the caller hashes it again
/// later.
pub(super) fn describe(
    clock: &Clock,
    rel: &RelPath,
    meta: &Meta,
    hashed: &AtomicU64,
) -> Option<(EntryMeta, bool)> {
    let sha256 = if meta.kind == Kind::File {
        let path = rel.to_path(&clock.root);
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
    // Judged once the read is done: a write after it gets a later mtime when the read ended
    // a window after the mtime, however long the hashing took (a big file saved just now is
    // then hashed once, not twice).
    let age = now_ns().saturating_sub(meta.mtime_ns);
    let racy = meta.kind == Kind::File
        && age < RACY.as_nanos() as i64
        && age < racy_window(clock, meta.mtime_ns).as_nanos() as i64;
    let entry = EntryMeta {
        kind: meta.kind,
        size: meta.size,
        mtime_ns: meta.mtime_ns,
        mode: meta.mode,
        inode: meta.inode,
        sha256,
        target: meta.target.clone(),
    };
    Some((entry, racy))
}

/// The time now, in nanoseconds since the Unix epoch (saturating).
fn now_ns() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(i64::MAX, |d| {
            i64::try_from(d.as_nanos()).unwrap_or(i64::MAX)
        })
}
