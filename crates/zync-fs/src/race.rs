//! For tests that play another local user racing zync (`testkit` feature): swapping a
//! directory of a tree and a symlink, or a directory of their own, as fast as they can.

use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

/// Exchanges `a` and `b` (`renameat2(RENAME_EXCHANGE)`, both must exist) again and again until
/// `stop`, counting each exchange in `swaps`. Run it on a thread of its own.
///
/// # Panics
/// When an exchange fails: a test that no longer races should say so.
pub fn exchange_until(a: &Path, b: &Path, stop: &AtomicBool, swaps: &AtomicU64) {
    while !stop.load(Ordering::Relaxed) {
        rustix::fs::renameat_with(
            rustix::fs::CWD,
            a,
            rustix::fs::CWD,
            b,
            rustix::fs::RenameFlags::EXCHANGE,
        )
        .expect("exchange");
        swaps.fetch_add(1, Ordering::Relaxed);
    }
}

/// Runs `body` while another thread exchanges `a` and `b` (`renameat2(RENAME_EXCHANGE)`) as
/// fast as it can: another local user swapping a directory of the tree for a symlink or a
/// directory of their own. Returns what `body` returned and how many exchanges were made.
pub fn exchanging<T>(a: &Path, b: &Path, body: impl FnOnce() -> T) -> (T, u64) {
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
        scope.spawn(|| exchange_until(a, b, &stop, &swaps));
        let _stop = Stop(&stop);
        body()
    });
    (out, swaps.load(Ordering::Relaxed))
}

/// A root whose `d/f` was edited on this machine, and another user's directory `theirs`,
/// reachable through the symlink `link`, whose `f` is what was synced.
pub struct Bait {
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
    pub fn new(edit: &[u8], synced: &[u8]) -> Bait {
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
