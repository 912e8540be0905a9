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

/// A file modified less than this long before it was hashed may be written again without its
/// mtime moving (see [`racy_window`]); it is hashed once more this long later ("racy git").
pub(super) const RACY: Duration = Duration::from_secs(2);

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

/// How far past a file's mtime the clock that stamps writes must be, when the file is read,
/// for any later write to give it another mtime: the timestamp granularity of its file
/// system, judged from the mtime itself.
///
/// Linux stamps a write with its coarse clock (`CLOCK_REALTIME_COARSE`, or a finer and later
/// time with multigrain timestamps), cut to the file system's granularity. [`describe`] reads
/// that clock before it opens the file: a write after that instant gets a stamp no earlier, so
/// once the clock is a granule past the mtime, the stamp differs, however late the clock's
/// ticks come (a stalled tick, a VM's vCPU preempted).
/// - A sub-second part shows the granularity: exFAT keeps 10 ms (an mtime a multiple of 10 ms),
///   NTFS 100 ns, ext4, XFS, btrfs and tmpfs 1 ns. An mtime that happens to end in zeros on a
///   fine file system only makes the window longer than it needs.
/// - A whole-second mtime may come from a coarse file system (FAT keeps two seconds), and on a
///   network file system the mtime comes from another machine's clock, which may be behind
///   this one: [`RACY`].
///
/// It was 100 ms past the end of the read until 2026-12-07 (20 ms for a few hours): with the
/// watcher's 50 ms batches nearly every file of a burst was hashed twice, and a write during
/// the read, in the mtime's own tick, could go unseen.
pub(super) fn racy_window(clock: &Clock, mtime_ns: i64) -> Duration {
    let sub_second = mtime_ns.rem_euclid(1_000_000_000);
    if sub_second == 0 || !clock.local() {
        return RACY;
    }
    let mut granule = 1u64;
    while granule < 100_000_000 && (sub_second as u64).is_multiple_of(granule * 10) {
        granule *= 10;
    }
    Duration::from_nanos(granule)
}

/// Whether a file with mtime `mtime_ns`, read after the stamping clock showed `start_ns`, may
/// be written again without its mtime moving: the clock was less than `window` past the mtime,
/// or behind it by less than [`RACY`] (another machine's clock a little ahead). An mtime
/// further in the future was set by a tool (`touch -d`, an archive from a skewed machine): a
/// write now gets a stamp of now, not that one. Such a file used to be hashed again every
/// [`RACY`] until its time came.
pub(super) fn is_racy(start_ns: i64, mtime_ns: i64, window: Duration) -> bool {
    let nanos = |d: Duration| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX);
    let past = start_ns.saturating_sub(mtime_ns);
    past < nanos(window) && past > -nanos(RACY)
}

/// The clock Linux stamps file writes with, now, in nanoseconds since the Unix epoch (the
/// precise clock elsewhere, or if this one cannot be read: it is never behind the coarse one).
fn stamping_clock_ns() -> i64 {
    #[cfg(target_os = "linux")]
    {
        let mut ts = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: `ts` is a valid out-parameter for the call.
        if unsafe { libc::clock_gettime(libc::CLOCK_REALTIME_COARSE, &mut ts) } == 0 {
            // `time_t` and `c_long` are 32 bits on some targets.
            #[allow(clippy::useless_conversion)]
            return i64::from(ts.tv_sec)
                .saturating_mul(1_000_000_000)
                .saturating_add(i64::from(ts.tv_nsec));
        }
    }
    now_ns()
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
/// The flag says the stamping clock was less than the file's [`racy_window`] past its mtime
/// when the read began: a write in the mtime's own tick would go unnoticed, so the caller
/// hashes it again later.
pub(super) fn describe(
    clock: &Clock,
    rel: &RelPath,
    meta: &Meta,
    hashed: &AtomicU64,
) -> Option<(EntryMeta, bool)> {
    // Before the file is opened: a write from here on is stamped no earlier than this.
    let start = stamping_clock_ns();
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
    let racy =
        meta.kind == Kind::File && is_racy(start, meta.mtime_ns, racy_window(clock, meta.mtime_ns));
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
