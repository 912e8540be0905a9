//! Helpers shared by the unit tests of several modules.

use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

/// Runs `body` while another thread exchanges `a` and `b` (`renameat2(RENAME_EXCHANGE)`) as
/// fast as it can: another local user swapping a directory of the tree for a symlink or a
/// directory of their own. Returns what `body` returned and how many exchanges were made.
pub(crate) fn exchanging<T>(a: &Path, b: &Path, body: impl FnOnce() -> T) -> (T, u64) {
    /// Stops the swapper however `body` ends, so a failing test does not hang.
    struct Stop<'a>(&'a AtomicBool);
    impl Drop for Stop<'_> {
        fn drop(&mut self) {
            self.0.store(true, Ordering::Relaxed);
        }
    }
    let stop = AtomicBool::new(false);
    let swaps = AtomicU64::new(0);
    let out = std::thread::scope(|scope| {
        scope.spawn(|| crate::race::exchange_until(a, b, &stop, &swaps));
        let _stop = Stop(&stop);
        body()
    });
    (out, swaps.load(Ordering::Relaxed))
}

/// A root whose `d/f` was edited on this machine, and another user's directory `theirs`,
/// reachable through the symlink `link`, whose `f` is what was synced.
pub(crate) struct Bait {
    /// Keeps the files.
    pub _tmp: tempfile::TempDir,
    /// The synced root.
    pub root: std::path::PathBuf,
    /// The symlink to their directory, to exchange with `root/d`.
    pub link: std::path::PathBuf,
    /// Their directory.
    pub theirs: std::path::PathBuf,
    /// What a look by path at `root/d/f` returns while `d` is the symlink.
    pub seen: crate::Stat,
}

impl Bait {
    /// `root/d/f` holds `edit`; their `f` holds `synced`.
    pub(crate) fn new(edit: &[u8], synced: &[u8]) -> Bait {
        let tmp = tempfile::tempdir().expect("tempdir");
        let root = tmp.path().join("root");
        std::fs::create_dir_all(root.join("d")).expect("mkdir");
        std::fs::write(root.join("d/f"), edit).expect("write");
        let theirs = tmp.path().join("theirs");
        std::fs::create_dir(&theirs).expect("mkdir");
        std::fs::write(theirs.join("f"), synced).expect("write");
        let link = tmp.path().join("link");
        std::os::unix::fs::symlink(&theirs, &link).expect("symlink");
        let seen = crate::lstat(&theirs.join("f")).expect("lstat");
        Bait {
            _tmp: tmp,
            root,
            link,
            theirs,
            seen,
        }
    }
}

/// Deterministic pseudo-random bytes (xorshift), so failures reproduce.
pub(crate) fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

/// Makes a FIFO at `path`: what another local user may put where a file or directory was.
pub(crate) fn fifo(path: &Path) {
    rustix::fs::mknodat(
        rustix::fs::CWD,
        path,
        rustix::fs::FileType::Fifo,
        rustix::fs::Mode::from_raw_mode(0o600),
        0,
    )
    .expect("mkfifo");
}
