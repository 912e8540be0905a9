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
        scope.spawn(|| {
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
        });
        let _stop = Stop(&stop);
        body()
    });
    (out, swaps.load(Ordering::Relaxed))
}
