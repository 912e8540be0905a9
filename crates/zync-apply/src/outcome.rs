//! How a successful run of zync-apply ended, and its exit code.

/// How a successful run ended; errors are `Err` (exit code 1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Everything asked for was done (exit code 0).
    Done,
    /// `apply --non-interactive` without `--force` left conflicting files staged (exit 3).
    ConflictsLeft,
}

impl Outcome {
    /// The process exit code: 0 for [`Outcome::Done`], 3 for [`Outcome::ConflictsLeft`].
    pub fn exit_code(self) -> u8 {
        match self {
            Outcome::Done => 0,
            Outcome::ConflictsLeft => 3,
        }
    }
}
