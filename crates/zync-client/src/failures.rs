//! The paths one sync could not apply, kept for its report in memory that does not grow with
//! their number: the first [`SHOWN`] with their messages, the others counted. The client
//! database records every one (`failing`, listed by `--status`), so a daemon that fails every
//! file of page after page (a hostile or broken one) cannot exhaust R's memory through them
//! (invariant 7 (docs/ARCHITECTURE.md)).

use std::collections::HashMap;
use std::hash::{BuildHasher, RandomState};

/// Failures reported with their path and message; the others are counted.
pub const SHOWN: usize = 200;
/// Failing paths remembered (by a hash) so that one applied later in the same sync, by a newer
/// change from E, is no longer counted: as many as fill a hash map of 2^18 slots, about 4 MiB.
/// A sync with more failing paths counts the ones past this until it ends (a count, not a
/// path: one of them applied later is still counted), and the next sync retries them all.
const TRACKED: usize = (1 << 18) / 8 * 7;
/// A failure's message is cut to this many bytes: room for a root and a path of 4 KiB each
/// and what happened to them, not for a daemon's message of megabytes.
pub const MAX_MESSAGE: usize = 10 << 10;

/// One path that could not be applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    /// The path, as E named it.
    pub path: String,
    /// Why, cut to [`MAX_MESSAGE`].
    pub message: String,
    /// Whether it may clear by itself soon (a file that changed on E during its transfer).
    pub transient: bool,
}

/// The paths failing in one sync: each failure in the order it was recorded, taken back when
/// its path applies later in the sync.
#[derive(Debug, Default)]
pub struct Failures {
    /// The first failing paths, with their messages.
    shown: Vec<Failure>,
    /// Every failing path this sync remembers, by its hash, and whether it may clear by itself.
    /// The hash is keyed afresh for each sync, so a daemon cannot choose paths that collide.
    tracked: HashMap<u64, bool>,
    /// How many of `tracked` may clear by themselves.
    tracked_transient: usize,
    /// Failures past [`TRACKED`]: counted, and never taken back.
    untracked: usize,
    untracked_transient: usize,
    keys: RandomState,
}

impl Failures {
    /// `path` failed with `message`; a path that failed before in this sync counts once, with
    /// its latest message.
    pub fn fail(&mut self, path: &str, message: &str, transient: bool) {
        let hash = self.keys.hash_one(path);
        if let Some(was) = self.tracked.get_mut(&hash) {
            let was = std::mem::replace(was, transient);
            self.tracked_transient =
                self.tracked_transient + usize::from(transient) - usize::from(was);
            if let Some(shown) = self.shown.iter_mut().find(|f| f.path == path) {
                shown.message = message.to_string();
                shown.transient = transient;
            }
            return;
        }
        if self.tracked.len() >= TRACKED {
            self.untracked += 1;
            self.untracked_transient += usize::from(transient);
            return;
        }
        self.tracked.insert(hash, transient);
        self.tracked_transient += usize::from(transient);
        if self.shown.len() < SHOWN {
            self.shown.push(Failure {
                path: path.to_string(),
                message: message.to_string(),
                transient,
            });
        }
    }

    /// `path` applied: if it failed earlier in this sync, it is failing no more.
    pub fn applied(&mut self, path: &str) {
        if self.tracked.is_empty() {
            return;
        }
        if let Some(transient) = self.tracked.remove(&self.keys.hash_one(path)) {
            self.tracked_transient -= usize::from(transient);
            self.shown.retain(|f| f.path != path);
        }
    }

    /// How many paths are failing.
    pub fn count(&self) -> usize {
        self.tracked.len() + self.untracked
    }

    /// How many of them may clear by themselves soon.
    pub fn transient(&self) -> usize {
        self.tracked_transient + self.untracked_transient
    }

    /// True when no path is failing.
    pub fn is_empty(&self) -> bool {
        self.count() == 0
    }

    /// Up to [`SHOWN`] of the failing paths, with their messages, in the order they failed.
    pub fn shown(&self) -> &[Failure] {
        &self.shown
    }

    /// The shown failures, as a report takes them.
    pub fn into_shown(self) -> Vec<Failure> {
        self.shown
    }
}

/// `message` cut to at most [`MAX_MESSAGE`] bytes (at a character's start), saying so.
pub fn cut(mut message: String) -> String {
    if message.len() <= MAX_MESSAGE {
        return message;
    }
    let mut end = MAX_MESSAGE;
    while !message.is_char_boundary(end) {
        end -= 1;
    }
    let cut = message.len() - end;
    message.truncate(end);
    message.push_str(&format!("… ({cut} more bytes)"));
    message
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_failures_are_shown_and_the_rest_counted() {
        let mut failures = Failures::default();
        for i in 0..SHOWN + 50 {
            failures.fail(&format!("p{i}"), "refused", i % 2 == 0);
        }
        assert_eq!(failures.count(), SHOWN + 50);
        assert_eq!(failures.transient(), (SHOWN + 50) / 2);
        assert_eq!(failures.shown().len(), SHOWN);
        assert_eq!(failures.shown()[0].path, "p0");
    }

    #[test]
    fn a_path_that_applies_later_is_no_longer_failing_shown_or_not() {
        let mut failures = Failures::default();
        for i in 0..SHOWN + 10 {
            failures.fail(&format!("p{i}"), "stale", true);
        }
        failures.applied("p3");
        failures.applied(&format!("p{}", SHOWN + 5));
        failures.applied("never failed");
        assert_eq!(failures.count(), SHOWN + 8);
        assert_eq!(failures.transient(), SHOWN + 8);
        assert!(failures.shown().iter().all(|f| f.path != "p3"));
        // A later failure takes the slot it left.
        failures.fail("q", "blocked", false);
        assert_eq!(failures.shown().last().map(|f| f.path.as_str()), Some("q"));
        assert_eq!(failures.transient(), SHOWN + 8);
    }

    #[test]
    fn a_path_failing_twice_counts_once_with_its_latest_message() {
        let mut failures = Failures::default();
        failures.fail("a", "stale", true);
        failures.fail("a", "blocked", false);
        assert_eq!((failures.count(), failures.transient()), (1, 0));
        assert_eq!(failures.shown()[0].message, "blocked");
        failures.applied("a");
        assert!(failures.is_empty());
    }

    #[test]
    fn past_the_tracked_paths_failures_are_counted_only() {
        let mut failures = Failures::default();
        for i in 0..TRACKED + 3 {
            failures.fail(&i.to_string(), "stale", true);
        }
        assert_eq!(failures.count(), TRACKED + 3);
        // A counted one is not taken back; a tracked one is.
        failures.applied(&(TRACKED + 1).to_string());
        failures.applied("7");
        assert_eq!(failures.count(), TRACKED + 2);
        assert_eq!(failures.transient(), TRACKED + 2);
    }

    #[test]
    fn a_long_message_is_cut_at_a_character() {
        let long = "é".repeat(MAX_MESSAGE);
        let cut = cut(long);
        assert!(cut.len() < MAX_MESSAGE + 32, "{}", cut.len());
        assert!(cut.ends_with("more bytes)"), "{}", &cut[cut.len() - 40..]);
        assert_eq!(super::cut("short".into()), "short");
    }
}
