//! How a successful run of zync-apply ended, and its exit code.

/// How a successful run ended; errors are `Err` (exit code 1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Everything asked for was done (exit code 0).
    Done,
    /// `apply --non-interactive` without `--force` left files staged that need a say-so:
    /// conflicts, control files, content the review cannot show (exit 3).
    ConflictsLeft,
    /// `wait` gave up before every client had E's changes (exit 7).
    TimedOut,
}

impl Outcome {
    /// The process exit code: 0 for [`Outcome::Done`], 3 for [`Outcome::ConflictsLeft`], 7
    /// for [`Outcome::TimedOut`] (the number `zync-client --wait` uses too).
    pub fn exit_code(self) -> u8 {
        match self {
            Outcome::Done => 0,
            Outcome::ConflictsLeft => 3,
            Outcome::TimedOut => 7,
        }
    }
}
