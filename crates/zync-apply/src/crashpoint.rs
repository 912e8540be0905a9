//! Crash points for the unit tests of interrupted applies: a test arms one [`Step`], and the
//! apply stops dead right after that step with a [`SimulatedCrash`] error that skips every
//! clean-up, leaving E, the staging area and the database exactly as a `kill -9` there would.
//! Outside `cfg(test)` every crash point is a no-op.

/// The steps of applying one file, in order (see `apply.rs`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Step {
    /// E's original is backed up and fsynced; the database does not know yet.
    BackedUp,
    /// The intent record (`FileState::Applying`, naming the backup) is committed.
    Intent,
    /// E's file is replaced (or removed), or the keep-both copy written.
    Written,
    /// The daemon's index records the change.
    Indexed,
    /// The file is marked Applied (or KeptBoth); the session status is not updated yet.
    Marked,
    /// `undo` restored a file and marked it Undone; the directories the apply created are not
    /// removed yet (that comes after every file).
    Undone,
}

/// A crash point: a no-op outside the unit tests.
#[cfg(not(test))]
#[inline]
#[allow(clippy::unnecessary_wraps)]
pub(crate) fn reached(_step: Step) -> anyhow::Result<()> {
    Ok(())
}

/// Whether `e` is a simulated crash: never, outside the unit tests.
#[cfg(not(test))]
#[inline]
pub(crate) fn is_crash(_e: &anyhow::Error) -> bool {
    false
}

#[cfg(test)]
pub(crate) use imp::{arm, is_crash, reached};

#[cfg(test)]
mod imp {
    use super::Step;
    use std::cell::Cell;

    thread_local! {
        static ARMED: Cell<Option<(Step, usize)>> = const { Cell::new(None) };
    }

    /// What a simulated crash returns.
    #[derive(Debug)]
    pub(crate) struct SimulatedCrash(pub Step);

    impl std::fmt::Display for SimulatedCrash {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            write!(f, "simulated crash after {:?}", self.0)
        }
    }

    impl std::error::Error for SimulatedCrash {}

    /// Crash the `nth` (0-based) time `step` is reached on this thread.
    pub(crate) fn arm(step: Step, nth: usize) {
        ARMED.with(|a| a.set(Some((step, nth))));
    }

    pub(crate) fn reached(step: Step) -> anyhow::Result<()> {
        ARMED.with(|a| match a.get() {
            Some((s, 0)) if s == step => {
                a.set(None);
                Err(SimulatedCrash(step).into())
            }
            Some((s, n)) if s == step => {
                a.set(Some((s, n - 1)));
                Ok(())
            }
            _ => Ok(()),
        })
    }

    pub(crate) fn is_crash(e: &anyhow::Error) -> bool {
        e.downcast_ref::<SimulatedCrash>().is_some()
    }
}
