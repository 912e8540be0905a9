//! The three-way conflict rule for an upstream change: whether R's change meets a file that
//! E changed since R's base version, decided when the file is staged and again when it is
//! applied (invariant 5 (docs/ARCHITECTURE.md)). A file's version is its content and its
//! permission bits: [`is_conflict`] judges the content, [`merge_mode`] the mode.

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

/// The mode R's change started from, as [`merge_mode`] takes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BaseMode {
    /// The file is new on R: there is no base, so E's file (if any) is E's own.
    New,
    /// R changed a file it had synced, but the mode it started from is not known: a session
    /// staged by a daemon that did not record it.
    Unknown,
    /// The permission bits R's change started from.
    Known(u32),
}

impl BaseMode {
    /// The base of a staged change: `base_sha256` says whether R had a base at all (a base
    /// mode without one counts for nothing), and `base_mode` is its recorded mode, if any.
    pub fn of(base_sha256: Option<&str>, base_mode: Option<u32>) -> BaseMode {
        match (base_sha256, base_mode) {
            (None, _) => BaseMode::New,
            (Some(_), Some(mode)) => BaseMode::Known(mode & 0o777),
            (Some(_), None) => BaseMode::Unknown,
        }
    }
}

/// What applying R's change does about the mode of E's file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ModeMerge {
    /// E's file keeps its permission bits: R did not change the mode since its base, so a
    /// mode E gave the file meanwhile stays with R's new content.
    KeepE,
    /// R's mode goes to E (a write), or the mode plays no part (a deletion E's mode agrees
    /// with, or nothing on E): only R changed it, or E already has it.
    TakeR,
    /// R and E both changed the mode since the base, differently (or, with no base, the two
    /// files differ in mode): applying R's mode overwrites E's change and needs the user's
    /// say-so (invariant 5 (docs/ARCHITECTURE.md)). A deletion of a file whose mode changed
    /// on E since the base is one too.
    Conflict,
}

/// Decides the mode three-way, as [`is_conflict`] decides the content (invariant 5
/// (docs/ARCHITECTURE.md)). `base` is where R started ([`BaseMode`]); `r` is R's mode;
/// `r_on_e` is the mode a write gives E's file when it takes R's (`r` masked by E's umask);
/// `e` is the mode of E's regular file now (`None`: E has no regular file there, and the
/// content rule decides alone). Only the permission bits (`0o777`) count: setuid, setgid and
/// sticky bits are never carried from R, and replacing a file's content clears them, as the
/// kernel does when a file is written.
///
/// * Write, E has no file: R's mode ([`ModeMerge::TakeR`]).
/// * Write, base known: R left the mode as it was (`r == base`): E's mode stays
///   ([`ModeMerge::KeepE`]). R changed it: R's, when E still has the base mode or already
///   has R's; otherwise both changed it, a conflict.
/// * Write, base unknown: R's mode, as zync did before the base mode was recorded.
/// * Write, new on R: R's mode when E's file already has it, otherwise a conflict (two
///   files made apart, as two different contents are).
/// * Delete: a conflict when E's mode is no longer the known base mode; otherwise the
///   content rule decides alone.
pub fn merge_mode(
    action: Action,
    base: BaseMode,
    r: u32,
    r_on_e: u32,
    e: Option<u32>,
) -> ModeMerge {
    let Some(e) = e.map(|e| e & 0o777) else {
        return ModeMerge::TakeR;
    };
    let (r, r_on_e) = (r & 0o777, r_on_e & 0o777);
    let e_has_r = e == r || e == r_on_e;
    match (action, base) {
        (Action::Write, BaseMode::Known(b)) if r == b => ModeMerge::KeepE,
        (Action::Write, BaseMode::Known(b)) if e == b || e_has_r => ModeMerge::TakeR,
        (Action::Write, BaseMode::Known(_)) => ModeMerge::Conflict,
        (Action::Write, BaseMode::Unknown) => ModeMerge::TakeR,
        (Action::Write, BaseMode::New) if e_has_r => ModeMerge::TakeR,
        (Action::Write, BaseMode::New) => ModeMerge::Conflict,
        (Action::Delete, BaseMode::Known(b)) if e != b => ModeMerge::Conflict,
        (Action::Delete, _) => ModeMerge::TakeR,
    }
}

/// The permission bits a write leaves on E's file that has mode `e`: E's own when
/// [`ModeMerge::KeepE`], else `r_on_e` (R's, masked by E's umask).
pub fn mode_after_write(merge: ModeMerge, r_on_e: u32, e: Option<u32>) -> u32 {
    match (merge, e) {
        (ModeMerge::KeepE, Some(e)) => e & 0o777,
        _ => r_on_e & 0o777,
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

    /// One concrete case, as the finding that asked for the mode rule put it: R edits a script
    /// it synced at 0644, E's user makes it executable meanwhile; R's content lands and the
    /// script stays executable.
    #[test]
    fn a_chmod_on_e_survives_an_edit_of_the_content_on_r() {
        let merge = merge_mode(
            Action::Write,
            BaseMode::of(Some(B), Some(0o644)),
            0o644,
            0o644,
            Some(0o755),
        );
        assert_eq!(merge, ModeMerge::KeepE);
        assert_eq!(mode_after_write(merge, 0o644, Some(0o755)), 0o755);
    }

    #[test]
    fn merge_mode_decides_every_case() {
        use Action::{Delete, Write};
        use BaseMode::{Known, New, Unknown};
        use ModeMerge::{Conflict, KeepE, TakeR};
        // (name, action, base, R's mode, R's mode on E, E's mode, decision, mode after a write)
        type Case<'a> = (
            &'a str,
            Action,
            BaseMode,
            u32,
            u32,
            Option<u32>,
            ModeMerge,
            u32,
        );
        #[rustfmt::skip]
        let table: &[Case<'_>] = &[
            ("nobody changed it", Write, Known(0o644), 0o644, 0o644, Some(0o644), KeepE, 0o644),
            ("only E changed it", Write, Known(0o644), 0o644, 0o644, Some(0o755), KeepE, 0o755),
            ("only E changed it, E's umask is stricter", Write, Known(0o644), 0o644, 0o600, Some(0o755), KeepE, 0o755),
            ("E's setuid bit is not kept with R's content", Write, Known(0o755), 0o755, 0o755, Some(0o4755), KeepE, 0o755),
            ("only R changed it", Write, Known(0o644), 0o755, 0o755, Some(0o644), TakeR, 0o755),
            ("only R changed it, masked on E", Write, Known(0o644), 0o777, 0o755, Some(0o644), TakeR, 0o755),
            ("both changed it the same way", Write, Known(0o644), 0o755, 0o755, Some(0o755), TakeR, 0o755),
            ("both, E already has R's masked mode", Write, Known(0o644), 0o777, 0o755, Some(0o755), TakeR, 0o755),
            ("both changed it differently", Write, Known(0o644), 0o600, 0o600, Some(0o755), Conflict, 0o600),
            ("R changed it, E has no file", Write, Known(0o644), 0o755, 0o755, None, TakeR, 0o755),
            ("R kept it, E has no file", Write, Known(0o644), 0o644, 0o644, None, TakeR, 0o644),
            ("base mode unknown: R's, as before", Write, Unknown, 0o644, 0o644, Some(0o755), TakeR, 0o644),
            ("new on R, nothing on E", Write, New, 0o755, 0o755, None, TakeR, 0o755),
            ("new on both sides, same mode", Write, New, 0o644, 0o644, Some(0o644), TakeR, 0o644),
            ("new on both sides, different modes", Write, New, 0o644, 0o644, Some(0o755), Conflict, 0o644),
            ("R deleted, E's mode is the base's", Delete, Known(0o644), 0, 0, Some(0o644), TakeR, 0),
            ("R deleted, E changed the mode", Delete, Known(0o644), 0, 0, Some(0o755), Conflict, 0),
            ("R deleted, E has no file", Delete, Known(0o644), 0, 0, None, TakeR, 0),
            ("R deleted, base mode unknown", Delete, Unknown, 0, 0, Some(0o755), TakeR, 0),
            ("R deleted an unsynced file", Delete, New, 0, 0, Some(0o755), TakeR, 0),
        ];
        let mut wrong = Vec::new();
        for &(name, action, base, r, r_on_e, e, want, mode) in table {
            let got = merge_mode(action, base, r, r_on_e, e);
            if got != want {
                wrong.push(format!("{name}: expected {want:?}, found {got:?}"));
            } else if action == Write && mode_after_write(got, r_on_e, e) != mode {
                wrong.push(format!(
                    "{name}: expected mode {mode:o}, found {:o}",
                    mode_after_write(got, r_on_e, e)
                ));
            }
        }
        assert!(wrong.is_empty(), "wrong decisions:\n{}", wrong.join("\n"));
    }

    #[test]
    fn the_base_mode_of_a_staged_change() {
        assert_eq!(
            BaseMode::of(Some(B), Some(0o100644)),
            BaseMode::Known(0o644)
        );
        assert_eq!(BaseMode::of(None, Some(0o600)), BaseMode::New);
        assert_eq!(BaseMode::of(Some(B), None), BaseMode::Unknown);
        assert_eq!(BaseMode::of(None, None), BaseMode::New);
    }
}
