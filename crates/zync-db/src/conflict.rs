//! The three-way conflict rule for an upstream change: whether R's change meets a file that
//! E changed since R's base version, decided when the file is staged and again when it is
//! applied (invariant 5 (docs/ARCHITECTURE.md)).

use crate::Action;

/// What E has at a path right now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnE<'a> {
    /// Nothing.
    Missing,
    /// A regular file with this hex SHA-256.
    File(&'a str),
    /// A directory, symlink or special file.
    Other,
}

/// Whether R's change at a path meets a change on E that the user must decide about
/// (invariant 5 (docs/ARCHITECTURE.md)). `base` is the SHA-256 R last synced from E (`None`: new on R), `new`
/// is R's SHA-256 (`None` for a delete), `current` is what E has now.
///
/// * Write, base `Some(b)`: a conflict unless E has `File(b)` (E unchanged) or `File(new)`
///   (both made the same content); E missing (deleted there) or `Other` is a conflict.
/// * Write, base `None` (new on R): a conflict if E has a different file or `Other`; nothing
///   or the identical file is not.
/// * Delete, base `Some(b)`: no conflict if E has nothing (both deleted) or `File(b)`
///   (unchanged); anything else is a conflict.
/// * Delete, base `None`: no conflict only if E has nothing.
pub fn is_conflict(
    action: Action,
    base: Option<&str>,
    new: Option<&str>,
    current: OnE<'_>,
) -> bool {
    let same_as = |wanted: Option<&str>, have: &str| wanted == Some(have);
    match (action, current) {
        (_, OnE::Other) => true,
        (Action::Write, OnE::File(have)) => !(same_as(base, have) || same_as(new, have)),
        (Action::Write, OnE::Missing) => base.is_some(),
        (Action::Delete, OnE::Missing) => false,
        (Action::Delete, OnE::File(have)) => !same_as(base, have),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const B: &str = "b0b0";
    const NEW: &str = "4e4e";
    const X: &str = "e1e1";

    #[test]
    fn is_conflict_decides_every_case() {
        use Action::{Delete, Write};
        use OnE::{File, Missing, Other};
        #[rustfmt::skip]
        // (name, action, base, new, what E has, conflict?)
        type Case<'a> = (&'a str, Action, Option<&'a str>, Option<&'a str>, OnE<'a>, bool);
        let table: &[Case<'_>] = &[
            (
                "R changed, E unchanged",
                Write,
                Some(B),
                Some(NEW),
                File(B),
                false,
            ),
            (
                "R changed, E changed too",
                Write,
                Some(B),
                Some(NEW),
                File(X),
                true,
            ),
            (
                "both changed to the same content",
                Write,
                Some(B),
                Some(NEW),
                File(NEW),
                false,
            ),
            (
                "R rewrote the base, E changed",
                Write,
                Some(B),
                Some(B),
                File(X),
                true,
            ),
            (
                "R changed, E deleted the file",
                Write,
                Some(B),
                Some(NEW),
                Missing,
                true,
            ),
            (
                "R changed, E has a directory there",
                Write,
                Some(B),
                Some(NEW),
                Other,
                true,
            ),
            (
                "new on R, nothing on E",
                Write,
                None,
                Some(NEW),
                Missing,
                false,
            ),
            (
                "new on both sides, same content",
                Write,
                None,
                Some(NEW),
                File(NEW),
                false,
            ),
            (
                "new on both sides, different content",
                Write,
                None,
                Some(NEW),
                File(X),
                true,
            ),
            (
                "new on R, E has a directory there",
                Write,
                None,
                Some(NEW),
                Other,
                true,
            ),
            (
                "R deleted, E unchanged",
                Delete,
                Some(B),
                None,
                File(B),
                false,
            ),
            ("R deleted, E changed", Delete, Some(B), None, File(X), true),
            ("both deleted", Delete, Some(B), None, Missing, false),
            (
                "R deleted, E has a directory there",
                Delete,
                Some(B),
                None,
                Other,
                true,
            ),
            (
                "R deleted an unsynced file, E has none",
                Delete,
                None,
                None,
                Missing,
                false,
            ),
            (
                "R deleted an unsynced file, E has a file",
                Delete,
                None,
                None,
                File(X),
                true,
            ),
            (
                "R deleted an unsynced file, E has a dir",
                Delete,
                None,
                None,
                Other,
                true,
            ),
        ];
        let mut wrong = Vec::new();
        for &(name, action, base, new, current, want) in table {
            if is_conflict(action, base, new, current) != want {
                wrong.push(format!("{name}: expected conflict = {want}"));
            }
        }
        assert!(wrong.is_empty(), "wrong decisions:\n{}", wrong.join("\n"));
    }
}
