//! Resolving intent records left by an apply that was killed in the middle. Before E's file
//! is touched, `apply` backs up E's original (fsynced), then records the file as
//! [`FileState::Applying`] with that backup's name (the intent), and only then replaces E's
//! file. A row still in that state means the run died somewhere after the intent: the next
//! `apply` or `undo` looks at E to learn how far it got.
//!
//! * E has R's content (a write), nothing (a delete), or the keep-both copy with R's content:
//!   the change went through. It is recorded in the daemon's index (the crash may have come
//!   first) and the file marked Applied (KeptBoth) with the recorded backup, so undo restores
//!   E's original.
//! * Anything else: the change did not happen; the file is staged again. The backup is
//!   removed when E still holds exactly its content, and kept otherwise.
//!
//! Either way, the temp file of a write killed before its rename is removed.

use std::io::Write;
use std::path::Path;
use zync_proto::Kind;

use anyhow::{bail, Context};
use zync_db::{Action, FileState, Index, StagedFile};
use zync_fs::{lstat, RelPath, Stat};

use crate::created_dirs;
use crate::fileops;
use crate::fileops::decode_copy;
use crate::probe::{self, Current};
use crate::roots::Roots;
use crate::session;

/// Resolves every [`FileState::Applying`] file of session `session_id`; returns how many there
/// were. Reports each on `out`.
///
/// # Errors
///
/// No usable directory mapping, a database failure, or E cannot be inspected.
pub(crate) fn resolve_session(
    index: &mut Index,
    db: &Path,
    session_id: &str,
    dirs: &[String],
    out: &mut dyn Write,
) -> anyhow::Result<usize> {
    let pending: Vec<StagedFile> = index
        .staged_files(session_id)
        .context("cannot read the session's files")?
        .into_iter()
        .filter(|f| f.state == FileState::Applying)
        .collect();
    if pending.is_empty() {
        return Ok(0);
    }
    let roots = Roots::resolve(dirs, index)?;
    // Resolved in the directories the daemon serves only (invariant 3).
    roots.check(pending.iter().map(|f| f.dir.as_str()))?;
    let session_dir = zync_db::session_dir(db, session_id);
    for file in &pending {
        let name = session::file_name(file);
        let done = match resolve_one(index, &session_dir, &roots, file) {
            Ok(done) => done,
            Err(e) => match roots.replaced_during_run(&e) {
                Some(why) => bail!(
                    "{why}; the interrupted apply of {name} is resolved once the directory is \
                     back"
                ),
                None => {
                    return Err(e.context(format!("cannot resolve the interrupted apply of {name}")))
                }
            },
        };
        if done {
            writeln!(
                out,
                "{name}: an interrupted apply had finished changing E; recorded as {}",
                if is_keep_both(file) {
                    "kept both"
                } else {
                    "applied"
                }
            )?;
        } else {
            writeln!(
                out,
                "{name}: an interrupted apply had not changed E; staged again"
            )?;
        }
    }
    Ok(pending.len())
}

/// True when the intent's backup holds `sha256`, E's content now, with E's mode now `mode`:
/// a change of mode only whose rename has not happened. False when there is no readable
/// backup (E had no file, or its content differed: the content tells).
fn mode_left_as_backed_up(
    index: &Index,
    session_dir: &Path,
    file: &StagedFile,
    sha256: &str,
    mode: u32,
) -> bool {
    let Some(name) = file.backup_name.as_deref() else {
        return false;
    };
    let Ok(backup) = probe::session_file(session_dir, Some(name), "backup") else {
        return false;
    };
    fileops::backup_meta(index, file, &backup)
        .is_ok_and(|meta| meta.sha256 == sha256 && meta.mode & 0o7777 == mode & 0o7777)
}

fn is_keep_both(file: &StagedFile) -> bool {
    file.backup_name.as_deref().and_then(decode_copy).is_some()
}

/// Resolves one intent; true when the change had gone through.
fn resolve_one(
    index: &mut Index,
    session_dir: &Path,
    roots: &Roots,
    file: &StagedFile,
) -> anyhow::Result<bool> {
    let root = roots.get(&file.dir)?;
    let rel = RelPath::parse(&file.path)?;
    let set = |index: &Index, state, backup: Option<&str>, existed| {
        index.set_file_state(
            &file.session_id,
            &file.dir,
            &file.path,
            state,
            backup,
            existed,
        )
    };
    if let Some(copy) = file.backup_name.as_deref().and_then(decode_copy) {
        let copy = RelPath::parse(&copy)?;
        fileops::remove_temps_beside(root, &copy)?;
        let current = probe::probe(root, &copy)?;
        let wanted = file.sha256.as_deref();
        if matches!(&current, Current::File { sha256, .. } if Some(sha256.as_str()) == wanted) {
            let sha = wanted.unwrap_or_default();
            let new_dirs = unindexed_dirs(index, &file.dir, root, &copy)?;
            fileops::index_file(index, &file.dir, root, &copy, sha, &new_dirs)?;
            set(
                index,
                FileState::KeptBoth,
                file.backup_name.as_deref(),
                true,
            )?;
            return Ok(true);
        }
        set(index, FileState::Staged, None, false)?;
        return Ok(false);
    }
    // A run killed while writing E's file left its temp file beside it.
    fileops::remove_temps_beside(root, &rel)?;
    let current = probe::probe(root, &rel)?;
    let done = match (file.action, &current) {
        // R's content is there. A change of mode only leaves the content as it was: then the
        // rename that brings R's mode is all the change there is, and it is done once E's
        // mode is no longer the one backed up. (Not "R's mode": the mode a rename brings
        // depends on the umask of the run that was killed.)
        (Action::Write, Current::File { sha256, mode, .. }) => {
            Some(sha256.as_str()) == file.sha256.as_deref()
                && !mode_left_as_backed_up(index, session_dir, file, sha256, *mode)
        }
        (Action::Delete, Current::Missing) => true,
        _ => false,
    };
    if done {
        match file.action {
            Action::Write => {
                let sha = file.sha256.as_deref().unwrap_or_default();
                let new_dirs = unindexed_dirs(index, &file.dir, root, &rel)?;
                fileops::index_file(index, &file.dir, root, &rel, sha, &new_dirs)?;
            }
            Action::Delete => fileops::index_removed(index, &file.dir, &rel)?,
        }
        set(
            index,
            FileState::Applied,
            file.backup_name.as_deref(),
            file.e_existed,
        )?;
        return Ok(true);
    }
    // Not applied: the database first, so it never names a backup that is gone.
    set(index, FileState::Staged, None, false)?;
    // The parents it made (recorded before they were) go again while empty.
    created_dirs::roll_back(index, file, root)?;
    if let Some(name) = file.backup_name.as_deref() {
        let backup = probe::session_file(session_dir, Some(name), "backup")?;
        let untouched = match (&current, fileops::backup_meta(index, file, &backup)) {
            (Current::File { sha256, .. }, Ok(meta)) => &meta.sha256 == sha256,
            _ => false,
        };
        if untouched {
            fileops::discard_backup(&backup);
        }
    }
    Ok(false)
}

/// The parent directories of `rel` that exist on E but are not (live) in the index: ones the
/// interrupted run created before it could record them. Shallowest first.
fn unindexed_dirs(
    index: &Index,
    dir: &str,
    root: &Path,
    rel: &RelPath,
) -> anyhow::Result<Vec<RelPath>> {
    let mut found = Vec::new();
    for ancestor in rel.ancestors() {
        let known = index
            .get(dir, ancestor.as_str())?
            .is_some_and(|e| !e.deleted);
        if !known {
            if let Ok(Stat::Entry(m)) = lstat(&ancestor.to_path(root)) {
                if m.kind == Kind::Dir {
                    found.push(ancestor);
                }
            }
        }
    }
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crashpoint;
    use crate::outcome::Outcome;
    use crate::prompt::{Choice, ScriptedPrompter};
    use crate::testkit::{delete, sha, write, Fixture};
    use zync_db::SessionStatus;

    const ID: &str = "c4a5-0000-crash";
    const STEPS: [Step; 5] = [
        Step::BackedUp,
        Step::Intent,
        Step::Written,
        Step::Indexed,
        Step::Marked,
    ];
    use crate::crashpoint::Step;

    /// (path, E's original, R's version); `None` = no file. Applied in this (path) order.
    type Case = (&'static str, Option<&'static [u8]>, Option<&'static [u8]>);
    const FILES: [Case; 3] = [
        ("del.txt", Some(b"delete me on E\n"), None),
        (
            "mod.txt",
            Some(b"E's original\n"),
            Some(b"R's version, longer\n"),
        ),
        ("new/dir/n.txt", None, Some(b"new on R\n")),
    ];

    fn setup() -> Fixture {
        let fx = Fixture::new();
        for (path, original, _) in FILES {
            if let Some(data) = original {
                fx.e_write(path, data);
            }
        }
        fx.stage(
            ID,
            &[
                delete("del.txt", Some(b"delete me on E\n")),
                write("mod.txt", b"R's version, longer\n", Some(b"E's original\n")),
                write("new/dir/n.txt", b"new on R\n", None),
            ],
        );
        fx
    }

    fn e_is(fx: &Fixture, pick: impl Fn(usize) -> Option<&'static [u8]>) -> bool {
        FILES
            .iter()
            .enumerate()
            .all(|(i, (path, ..))| fx.e_read(path).as_deref() == pick(i))
    }

    fn originals(fx: &Fixture) -> bool {
        e_is(fx, |i| FILES[i].1)
    }

    fn r_versions(fx: &Fixture) -> bool {
        e_is(fx, |i| FILES[i].2)
    }

    fn no_prompts() -> ScriptedPrompter {
        ScriptedPrompter::new([])
    }

    /// Crashes at `step` while applying the `nth` file, checks the state left behind, and
    /// returns the fixture.
    fn crash(nth: usize, step: Step) -> Fixture {
        let fx = setup();
        // Only the delete and the write over an existing file make a backup.
        crashpoint::arm(step, nth);
        let (r, out) = fx.run(
            &["apply", ID, "--non-interactive", "--force"],
            &mut no_prompts(),
        );
        let err = r.expect_err("the simulated crash stops the run");
        assert!(crashpoint::is_crash(&err), "{err:#}\n{out}");
        let what = format!("crash after {step:?} at file {nth}");
        // Never half-written: each E file is E's original or R's version.
        for (path, original, theirs) in FILES {
            let now = fx.e_read(path);
            assert!(
                now.as_deref() == original || now.as_deref() == theirs,
                "{what}: {path} is {now:?}"
            );
        }
        let (path, original, theirs) = FILES[nth];
        let f = fx.file(ID, path);
        let expected_state = match step {
            Step::BackedUp => FileState::Staged,
            Step::Intent | Step::Written | Step::Indexed => FileState::Applying,
            Step::Marked => FileState::Applied,
            Step::Undone => unreachable!("apply never reaches an undo step"),
        };
        assert_eq!(f.state, expected_state, "{what}");
        let e_now = fx.e_read(path);
        match step {
            // The backup is durable before the intent, the intent before E changes.
            Step::BackedUp | Step::Intent => assert_eq!(e_now.as_deref(), original, "{what}"),
            _ => assert_eq!(e_now.as_deref(), theirs, "{what}"),
        }
        if expected_state == FileState::Applying {
            assert_eq!(f.e_existed, original.is_some(), "{what}");
            match (original, f.backup_name.as_deref()) {
                (Some(data), Some(name)) => assert_eq!(
                    std::fs::read(fx.session_dir(ID).join(name)).expect("backup"),
                    data,
                    "{what}: the intent names a complete backup of E's original"
                ),
                (None, None) => {}
                other => panic!("{what}: backup {other:?}"),
            }
        }
        fx
    }

    #[test]
    fn after_a_crash_at_any_step_a_rerun_completes_and_undo_then_restores_the_originals() {
        for (nth, case) in FILES.iter().enumerate() {
            for step in STEPS {
                // A new file has no backup step: its first crash point is the intent.
                if step == Step::BackedUp && case.1.is_none() {
                    continue;
                }
                let what = format!("crash after {step:?} at file {nth}");
                let fx = crash(nth, step);
                let (r, out) = fx.run(
                    &["apply", ID, "--non-interactive", "--force"],
                    &mut no_prompts(),
                );
                assert_eq!(r.expect("rerun"), Outcome::Done, "{what}: {out}");
                assert!(r_versions(&fx), "{what}: the rerun did not finish:\n{out}");
                for (path, _, theirs) in FILES {
                    assert_eq!(fx.state(ID, path), FileState::Applied, "{what}: {path}");
                    assert_eq!(fx.indexed(path), theirs.map(sha), "{what}: index of {path}");
                }
                assert!(fx.index().get("docs", "new/dir").expect("get").is_some());
                assert_eq!(fx.status(ID), SessionStatus::Applied, "{what}");
                // The backups are of E's originals, not of R's content the crash left on E.
                let (r, out) = fx.run(&["undo", ID], &mut no_prompts());
                assert_eq!(r.expect("undo"), Outcome::Done, "{what}: {out}");
                assert!(originals(&fx), "{what}: undo after the rerun:\n{out}");
                assert!(
                    !fx.root.join("new").exists(),
                    "{what}: a directory apply made"
                );
                for (path, original, _) in FILES {
                    assert_eq!(fx.indexed(path), original.map(sha), "{what}: {path}");
                }
            }
        }
    }

    #[test]
    fn after_a_crash_at_any_step_undo_restores_e_exactly() {
        for (nth, case) in FILES.iter().enumerate() {
            for step in STEPS {
                if step == Step::BackedUp && case.1.is_none() {
                    continue;
                }
                let what = format!("crash after {step:?} at file {nth}");
                let fx = crash(nth, step);
                let (r, out) = fx.run(&["undo", ID], &mut no_prompts());
                assert_eq!(r.expect("undo"), Outcome::Done, "{what}: {out}");
                assert!(originals(&fx), "{what}: E after undo:\n{out}");
                for (path, original, _) in FILES {
                    let f = fx.file(ID, path);
                    assert_ne!(f.state, FileState::Applying, "{what}: {path}");
                    assert_ne!(f.state, FileState::Applied, "{what}: {path}");
                    if f.state == FileState::Undone {
                        assert_eq!(fx.indexed(path), original.map(sha), "{what}: {path}");
                    }
                }
                assert!(!fx.root.join("new/dir/n.txt").exists(), "{what}");
                assert!(
                    !fx.root.join("new").exists(),
                    "{what}: a directory apply made"
                );
            }
        }
    }

    /// An interrupted apply whose root is swapped for a symlink, before the next run or back
    /// and forth while it resolves the intent, is resolved neither there nor anywhere: the run
    /// refuses saying why, and once the root is back undo restores E.
    #[test]
    fn an_intent_is_never_resolved_through_a_root_swapped_for_a_symlink() {
        let theirs = tempfile::tempdir().expect("tempdir");
        let fx = crash(1, Step::Written);
        fx.swap_root_for(theirs.path());
        let (r, out) = fx.run(&["undo", ID], &mut no_prompts());
        let err = format!("{:#}", r.expect_err("refused"));
        assert!(err.contains("restart zync-daemon"), "{err}\n{out}");
        assert_eq!(fx.state(ID, "mod.txt"), FileState::Applying);
        fx.put_root_back();
        let link = fx.root.with_file_name("link");
        std::os::unix::fs::symlink(theirs.path(), &link).expect("symlink");
        let mut refused = 0;
        for _ in 0..20 {
            let fx = crash(1, Step::Written);
            let ((r, out), _) = zync_fs::race::exchanging(&fx.root, &link, || {
                fx.run(&["apply", ID, "--non-interactive"], &mut no_prompts())
            });
            if std::fs::symlink_metadata(&fx.root)
                .expect("lstat")
                .is_symlink()
            {
                std::fs::rename(&fx.root, fx.root.with_file_name("swapped")).expect("mv");
                std::fs::rename(&link, &fx.root).expect("mv back");
                std::fs::rename(fx.root.with_file_name("swapped"), &link).expect("mv");
            }
            if let Err(e) = r {
                let err = format!("{e:#}");
                assert!(err.contains("restart zync-daemon"), "{err}\n{out}");
                refused += 1;
            }
            assert_eq!(std::fs::read_dir(theirs.path()).expect("list").count(), 0);
        }
        assert!(refused > 0, "the swapper never got in the way");
        let (r, out) = fx.run(&["undo", ID], &mut no_prompts());
        assert_eq!(r.expect("undo"), Outcome::Done, "{out}");
        assert!(originals(&fx), "E after undo:\n{out}");
    }

    #[test]
    fn an_intent_whose_change_did_not_happen_is_staged_again_and_its_backup_dropped() {
        let fx = crash(1, Step::Intent);
        let backup = fx
            .session_dir(ID)
            .join(fx.file(ID, "mod.txt").backup_name.expect("named"));
        assert!(backup.exists());
        let mut out = Vec::new();
        let n = resolve_session(&mut fx.index(), &fx.db, ID, &[], &mut out).expect("resolve");
        let out = String::from_utf8(out).expect("utf-8");
        assert_eq!(n, 1);
        assert!(
            out.contains("docs/mod.txt") && out.contains("staged again"),
            "{out}"
        );
        let f = fx.file(ID, "mod.txt");
        assert_eq!(
            (f.state, f.backup_name, f.e_existed),
            (FileState::Staged, None, false)
        );
        assert!(
            !backup.exists(),
            "E still has the backup's content: it is not needed"
        );
        assert_eq!(
            fx.indexed("mod.txt"),
            None,
            "nothing was recorded in the index"
        );
    }

    #[test]
    fn the_temp_file_of_a_write_killed_before_its_rename_is_removed() {
        let fx = crash(2, Step::Intent);
        // What a kill in the middle of write_new leaves: the new parents and a partial temp.
        fx.e_write("new/dir/.zync-tmp-AbC123", b"new o");
        fx.e_write("new/dir/keep.txt", b"not ours\n");
        let (r, out) = fx.run(
            &["apply", ID, "--non-interactive", "--force"],
            &mut no_prompts(),
        );
        assert_eq!(r.expect("rerun"), Outcome::Done, "{out}");
        assert!(!fx.root.join("new/dir/.zync-tmp-AbC123").exists(), "{out}");
        assert!(fx.root.join("new/dir/keep.txt").exists());
        assert!(r_versions(&fx));
    }

    #[test]
    fn an_intent_whose_file_was_edited_since_keeps_its_backup() {
        let fx = crash(1, Step::Intent);
        let backup = fx
            .session_dir(ID)
            .join(fx.file(ID, "mod.txt").backup_name.expect("named"));
        fx.e_write("mod.txt", b"edited on E after the crash\n");
        let mut out = Vec::new();
        resolve_session(&mut fx.index(), &fx.db, ID, &[], &mut out).expect("resolve");
        assert_eq!(fx.state(ID, "mod.txt"), FileState::Staged);
        assert_eq!(
            std::fs::read(&backup).expect("kept"),
            b"E's original\n",
            "E's file is not the backup's content, so the backup stays"
        );
        // The rerun sees the edit as a conflict now, and leaves it without --force.
        let (r, out) = fx.run(&["apply", ID, "--non-interactive"], &mut no_prompts());
        assert_eq!(r.expect("apply"), Outcome::ConflictsLeft, "{out}");
        assert_eq!(
            fx.e_read("mod.txt").as_deref(),
            Some(&b"edited on E after the crash\n"[..])
        );
    }

    /// A run killed after it replaced E's file leaves the session `partial`, not `staged`:
    /// neither a plain `drop` nor expiry removes the directory holding the backup `undo`
    /// needs, and undo then restores E's original.
    #[test]
    fn a_killed_run_leaves_its_backups_to_undo_not_to_drop_or_expiry() {
        let fx = crash(1, Step::Written);
        assert_eq!(fx.status(ID), SessionStatus::Partial);
        let (r, out) = fx.run(&["drop", ID], &mut no_prompts());
        let err = format!("{:#}", r.expect_err("a plain drop is refused"));
        assert!(err.contains("--discard-backups"), "{err}\n{out}");
        rusqlite::Connection::open(&fx.db)
            .expect("open db")
            .execute(
                "UPDATE upstream_sessions SET created_unix = created_unix - 90 * 86400",
                [],
            )
            .expect("age the session");
        let (r, out) = fx.run(&["gc"], &mut no_prompts());
        r.expect("gc");
        assert_eq!(fx.status(ID), SessionStatus::Partial, "{out}");
        let (r, out) = fx.run(&["undo", ID], &mut no_prompts());
        r.expect("undo");
        assert!(originals(&fx), "E is back as it was: {out}");
    }

    /// A run killed after its rename of R's content, then E's file chmodded (or the rerun
    /// under another umask, which masks R's mode differently): R's content is there, so the
    /// write is done, and its backup stays recorded for undo.
    #[test]
    fn a_write_whose_rename_happened_is_done_whatever_its_mode_now() {
        use std::os::unix::fs::PermissionsExt;
        let fx = crash(1, Step::Written);
        std::fs::set_permissions(
            fx.root.join("mod.txt"),
            std::fs::Permissions::from_mode(0o600),
        )
        .expect("chmod");
        let (r, out) = fx.run(
            &["apply", ID, "--non-interactive", "--force"],
            &mut no_prompts(),
        );
        r.expect("apply again");
        assert!(
            out.contains("mod.txt: an interrupted apply had finished changing E"),
            "{out}"
        );
        assert!(r_versions(&fx), "{out}");
        let (r, out) = fx.run(&["undo", ID], &mut no_prompts());
        r.expect("undo");
        assert!(originals(&fx), "undo restores E's original: {out}");
    }

    /// R made a file private without changing it; a run killed after its intent, before the
    /// rename that brings the mode, has not applied it, though E's content is already R's.
    #[test]
    fn a_mode_only_change_interrupted_before_its_rename_is_applied_again() {
        use std::os::unix::fs::PermissionsExt;
        let mode = |fx: &Fixture| {
            std::fs::metadata(fx.root.join("key.txt"))
                .expect("stat")
                .permissions()
                .mode()
                & 0o777
        };
        let fx = Fixture::new();
        fx.e_write("key.txt", b"secret\n");
        std::fs::set_permissions(
            fx.root.join("key.txt"),
            std::fs::Permissions::from_mode(0o644),
        )
        .expect("chmod");
        fx.stage(
            ID,
            &[write("key.txt", b"secret\n", Some(b"secret\n")).mode(0o600)],
        );
        crashpoint::arm(Step::Intent, 0);
        let (r, out) = fx.run(&["apply", ID, "--non-interactive"], &mut no_prompts());
        assert!(crashpoint::is_crash(&r.expect_err("crash")), "{out}");
        assert_eq!(mode(&fx), 0o644, "the crash came before the rename");
        let (r, out) = fx.run(&["apply", ID, "--non-interactive"], &mut no_prompts());
        r.expect("apply again");
        assert!(out.contains("had not changed E"), "{out}");
        assert_eq!(mode(&fx), 0o600, "{out}");
        assert_eq!(fx.state(ID, "key.txt"), FileState::Applied);
    }

    #[test]
    fn a_keep_both_interrupted_at_any_step_is_finished_or_undone() {
        for step in [Step::Intent, Step::Written, Step::Indexed, Step::Marked] {
            for rerun in [true, false] {
                let what = format!("keep both, crash after {step:?}, rerun {rerun}");
                let fx = Fixture::new();
                fx.e_write("d/f.txt", b"E edit\n");
                fx.stage(ID, &[write("d/f.txt", b"R edit\n", Some(b"base\n"))]);
                crashpoint::arm(step, 0);
                let (r, _) = fx.run(
                    &["apply", ID],
                    &mut ScriptedPrompter::new([Choice::KeepBoth]),
                );
                assert!(crashpoint::is_crash(&r.expect_err("crash")), "{what}");
                let copies = || -> Vec<String> {
                    std::fs::read_dir(fx.root.join("d"))
                        .expect("dir")
                        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
                        .filter(|n| zync_fs::is_conflict_copy(n))
                        .collect()
                };
                let (r, out) = if rerun {
                    fx.run(
                        &["apply", ID],
                        &mut ScriptedPrompter::new([Choice::KeepBoth]),
                    )
                } else {
                    fx.run(&["undo", ID], &mut no_prompts())
                };
                assert_eq!(r.expect("second run"), Outcome::Done, "{what}: {out}");
                assert_eq!(
                    fx.e_read("d/f.txt").as_deref(),
                    Some(&b"E edit\n"[..]),
                    "{what}"
                );
                let found = copies();
                if rerun {
                    assert_eq!(found.len(), 1, "{what}: {found:?}\n{out}");
                    let copy = format!("d/{}", found[0]);
                    assert_eq!(
                        fx.e_read(&copy).as_deref(),
                        Some(&b"R edit\n"[..]),
                        "{what}"
                    );
                    assert_eq!(fx.indexed(&copy), Some(sha(b"R edit\n")), "{what}");
                    assert_eq!(fx.state(ID, "d/f.txt"), FileState::KeptBoth, "{what}");
                } else {
                    assert!(found.is_empty(), "{what}: {found:?}\n{out}");
                    assert_ne!(fx.state(ID, "d/f.txt"), FileState::Applying, "{what}");
                }
            }
        }
    }

    #[test]
    fn the_directories_of_a_write_killed_before_its_rename_go_when_it_is_rolled_back() {
        let fx = crash(2, Step::Intent);
        // What a kill between making the parents and the rename leaves: the parents alone.
        std::fs::create_dir_all(fx.root.join("new/dir")).expect("mkdir");
        let (r, out) = fx.run(&["undo", ID], &mut no_prompts());
        assert_eq!(r.expect("undo"), Outcome::Done, "{out}");
        assert!(out.contains("staged again"), "{out}");
        assert!(!fx.root.join("new").exists(), "{out}");
        assert!(originals(&fx));
    }
}
