//! One entry as the index records it: whether the disk still matches a row (by metadata, so
//! unchanged files are never read), and a new row for an entry, its content hashed.

use std::collections::HashMap;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock, PoisonError};
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

/// How long after its mtime the file at `path` (described by `meta`) may still be written
/// without its mtime moving: the timestamp granularity of its file system, judged from the
/// mtime itself. One with a sub-second part, on a local file system, comes from one that keeps
/// fine timestamps (Linux ones tick every few milliseconds at most): [`RACY_FINE`]. A
/// whole-second mtime may come from a coarse one (FAT keeps two seconds), and on a network file
/// system the mtime comes from another machine's clock, which may be behind this one: [`RACY`].
/// The file system is the one the file is on (`meta.device`), which may be mounted below the
/// root. Without this, every file saved in the two seconds before a scan was hashed twice, a
/// big one costing seconds of CPU.
pub(super) fn racy_window(clock: &Clock, meta: &Meta, path: &Path) -> Duration {
    if meta.mtime_ns.rem_euclid(1_000_000_000) == 0 || !clock.local(meta.device, path) {
        RACY
    } else {
        RACY_FINE
    }
}

/// Asks which file system holds a path (its device) and whether that file system gets its
/// timestamps from this machine's clock; `None` when it cannot tell.
type Probe = fn(&Path) -> Option<(u64, bool)>;

/// A root, and whether its files get their timestamps from this machine's clock
/// ([`local_clock`]): a scan or a batch of events describes thousands of files of one root, and
/// asking for each walked the root's path with `statfs` every time. The root's file system is
/// asked once; a file system mounted below the root (an NFS share inside a project) once, through
/// the first of its files whose racy window matters (a file a few seconds old at most). A
/// `Clock` lives for one scan, batch or recheck pass.
pub(super) struct Clock {
    root: PathBuf,
    /// The root's device and whether its clock is local (`None`: it could not be asked).
    root_fs: OnceLock<Option<(u64, bool)>>,
    /// The answers for file systems mounted below the root, by device.
    nested: Mutex<HashMap<u64, bool>>,
    probe: Probe,
}

impl Clock {
    /// For the files under `root`; nothing is asked until [`describe`] needs it.
    pub(super) fn of(root: &Path) -> Clock {
        Clock::with_probe(root, local_clock)
    }

    fn with_probe(root: &Path, probe: Probe) -> Clock {
        Clock {
            root: root.to_path_buf(),
            root_fs: OnceLock::new(),
            nested: Mutex::new(HashMap::new()),
            probe,
        }
    }

    /// Whether the file at `path`, on `device` when it was described, gets its timestamps from
    /// this machine's clock. The answer comes with the device of what stands at `path` now;
    /// when that is another one (a parent swapped for a directory elsewhere), or nothing can
    /// be told, the file counts as not local: its window is the wide one.
    fn local(&self, device: u64, path: &Path) -> bool {
        let root = *self.root_fs.get_or_init(|| (self.probe)(&self.root));
        if let Some((root_device, local)) = root {
            if root_device == device {
                return local;
            }
        }
        let known = self
            .nested
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&device)
            .copied();
        if let Some(local) = known {
            return local;
        }
        // Not under the lock: a slow network file system holds up only this file.
        let Some((found, local)) = (self.probe)(path) else {
            return false;
        };
        self.nested
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(found, local);
        found == device && local
    }
}

/// The device holding `path` (never following a symlink at its end) and whether its file system
/// gets its timestamps from this machine's clock: false on the network and FUSE file systems
/// Linux names in `statfs`. Both are asked of one descriptor, so they are of the same file
/// system however the path changes meanwhile. `None` when the path cannot be opened or asked
/// (and always off Linux).
fn local_clock(path: &Path) -> Option<(u64, bool)> {
    #[cfg(target_os = "linux")]
    {
        use std::os::fd::AsRawFd;
        use std::os::unix::fs::OpenOptionsExt;
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
        // O_PATH: nothing is read, a FIFO does not block, and no permission on the file is
        // needed.
        let file = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_PATH | libc::O_NOFOLLOW)
            .open(path)
            .ok()?;
        let device = file.metadata().ok()?.dev();
        // SAFETY: an open descriptor and a zeroed out-parameter the call fills in.
        let mut fs: libc::statfs = unsafe { std::mem::zeroed() };
        if unsafe { libc::fstatfs(file.as_raw_fd(), &mut fs) } != 0 {
            return None;
        }
        // f_type's width differs between targets; the magic numbers fit in 32 bits.
        Some((device, !REMOTE.contains(&(fs.f_type as u32))))
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = path;
        None
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
    let path = (meta.kind == Kind::File).then(|| rel.to_path(&clock.root));
    let sha256 = if let Some(path) = &path {
        hashed.fetch_add(1, Ordering::Relaxed);
        // Only the file the scan saw is read: not one a swapped parent leads to.
        match zync_fs::hash::hash_file_identified(path, (meta.device, meta.inode)) {
            Ok(h) => {
                // The file read must be the one the scan saw, unchanged since: same device,
                // inode, size and mtime, asked of the open file once it was read to the end.
                let after_ns = h
                    .after
                    .mtime()
                    .saturating_mul(1_000_000_000)
                    .saturating_add(h.after.mtime_nsec());
                let settled = h.len == meta.size
                    && h.after.len() == meta.size
                    && h.after.ino() == meta.inode
                    && h.after.dev() == meta.device
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
    let racy = path.as_ref().is_some_and(|path| {
        age < RACY.as_nanos() as i64 && age < racy_window(clock, meta, path).as_nanos() as i64
    });
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
pub(super) fn now_ns() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(i64::MAX, |d| {
            i64::try_from(d.as_nanos()).unwrap_or(i64::MAX)
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicU64;
    use zync_fs::Stat;

    /// What the test's probe was asked about, and the root's device; only the test below uses
    /// them.
    static ASKED: Mutex<Vec<PathBuf>> = Mutex::new(Vec::new());
    static ROOT_DEVICE: AtomicU64 = AtomicU64::new(0);

    /// A stand-in for `local_clock`: below the root, a network file system is mounted at `nfs`
    /// (device +1) and local ones at `data` (+2) and `more` (+3); `swapped` is now a local
    /// directory on `data`'s device; nothing can be told about `gone`.
    fn probe(path: &Path) -> Option<(u64, bool)> {
        ASKED.lock().unwrap().push(path.to_path_buf());
        let root = ROOT_DEVICE.load(Ordering::Relaxed);
        let under = |name: &str| path.components().any(|c| c.as_os_str() == name);
        if path.ends_with("gone") {
            None
        } else if under("nfs") {
            Some((root + 1, false))
        } else if under("data") || under("swapped") {
            Some((root + 2, true))
        } else if under("more") {
            Some((root + 3, true))
        } else {
            Some((root, true))
        }
    }

    #[test]
    fn a_file_system_mounted_below_the_root_is_judged_by_its_own_clock() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        let Ok(Stat::Entry(root_meta)) = zync_fs::lstat(root) else {
            panic!("no root at {}", root.display());
        };
        let device = root_meta.device;
        ROOT_DEVICE.store(device, Ordering::Relaxed);
        let clock = Clock::with_probe(root, probe);
        let fine = |device: u64| Meta {
            kind: Kind::File,
            size: 4,
            mtime_ns: 1_650_000_000_123_456_789,
            mode: 0o644,
            inode: 7,
            device,
            target: None,
        };
        // The root's file system is local: its fine mtimes get the fine window.
        assert_eq!(
            racy_window(&clock, &fine(device), &root.join("a")),
            RACY_FINE
        );
        // A network file system mounted below it gets the wide one, asked once for all of its
        // files; another, local one below it, the fine one.
        let nfs = fine(device + 1);
        assert_eq!(racy_window(&clock, &nfs, &root.join("nfs/a")), RACY);
        assert_eq!(racy_window(&clock, &nfs, &root.join("nfs/b")), RACY);
        let data = fine(device + 2);
        assert_eq!(racy_window(&clock, &data, &root.join("data/a")), RACY_FINE);
        assert_eq!(
            racy_window(&clock, &fine(device), &root.join("b")),
            RACY_FINE
        );
        // A file described on the network file system whose path now leads to a local one (a
        // parent swapped meanwhile) is not judged by the local one.
        let more = fine(device + 3);
        let mut swapped = more.clone();
        swapped.device = device + 4;
        assert_eq!(racy_window(&clock, &swapped, &root.join("more/x")), RACY);
        assert_eq!(racy_window(&clock, &more, &root.join("more/y")), RACY_FINE);
        // What cannot be told about is not local, and is asked again through its next file.
        let unknown = fine(device + 5);
        assert_eq!(racy_window(&clock, &unknown, &root.join("gone")), RACY);
        assert_eq!(racy_window(&clock, &unknown, &root.join("swapped/c")), RACY);
        let asked = std::mem::take(&mut *ASKED.lock().unwrap());
        let expected: Vec<PathBuf> = vec![
            root.to_path_buf(),
            root.join("nfs/a"),
            root.join("data/a"),
            root.join("more/x"),
            root.join("gone"),
            root.join("swapped/c"),
        ];
        assert_eq!(asked, expected);
    }

    #[test]
    fn the_real_probe_answers_for_what_is_at_the_path_without_following_it() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("f");
        std::fs::write(&file, "x").unwrap();
        let link = dir.path().join("l");
        std::os::unix::fs::symlink("/nonexistent/target", &link).unwrap();
        let Ok(Stat::Entry(meta)) = zync_fs::lstat(&file) else {
            panic!("no file");
        };
        let Some((device, _)) = local_clock(&file) else {
            panic!("no answer for a plain file");
        };
        assert_eq!(device, meta.device);
        // A dangling symlink is answered for (its own file system), not followed.
        assert_eq!(local_clock(&link).map(|(d, _)| d), Some(meta.device));
        assert_eq!(local_clock(&dir.path().join("missing")), None);
    }
}
