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
