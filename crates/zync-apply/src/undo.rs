//! `zync-apply undo`: puts back what an apply replaced, byte for byte, from the backups in the
//! session's staging directory, and records each restored file in the daemon's index. A file
//! that changed on E since it was applied is left alone unless `--force`, and even then its
//! newer version is kept as a conflict copy (invariant 5 again: undo must not throw away newer
//! work either).

use std::io::Write;
use std::path::Path;

use anyhow::{anyhow, bail, Context};
use zync_db::{Action, FileState, Index, SessionStatus, StagedFile};
use zync_fs::RelPath;

use crate::crashpoint::{self, Step};
use crate::created_dirs;
use crate::fileops;
use crate::fileops::decode_copy;
use crate::lock::SessionLock;
use crate::outcome::Outcome;
use crate::probe::{self, Current};
use crate::recover;
use crate::roots::Roots;
use crate::session;

/// Undoes session `id` (or unique prefix) in the database `db`.
///
/// # Errors
///
/// An unknown session, no usable directory mapping, a database failure, or files that could
/// not be restored (the others are).
pub fn undo(
    db: &Path,
    id: &str,
    dirs: &[String],
    force: bool,
    out: &mut dyn Write,
) -> anyhow::Result<Outcome> {
    let mut index = session::open_index(db)?;
    let session = session::find(&index, id)?;
    refuse_settled(&session)?;
    // Never beside an apply or another undo of the session (lock.rs); then read it again, as
    // a `drop --discard-backups` may have settled it meanwhile.
    let _lock = SessionLock::acquire(db, &session.id, "undo")?;
    let session = session::find(&index, &session.id)?;
    refuse_settled(&session)?;
    // A killed apply left intent records: what went through is undone below with its backup.
    recover::resolve_session(&mut index, db, &session.id, dirs, out)?;
    let files: Vec<StagedFile> = index
        .staged_files(&session.id)
        .context("cannot read the session's files")?
        .into_iter()
        .filter(|f| matches!(f.state, FileState::Applied | FileState::KeptBoth))
        .collect();
    if files.is_empty() {
        // A run killed before it removed the directories the apply made leaves them here.
        report_removed_dirs(
            out,
            &created_dirs::remove_for_session(&mut index, &session.id, dirs)?,
        )?;
        writeln!(
            out,
            "session {} has nothing applied to undo (it is {})",
            session.id,
            session.status.as_str()
        )?;
        return Ok(Outcome::Done);
    }
    let roots = Roots::resolve(dirs, &index)?;
    // Restored into the directories the daemon serves, or not at all (invariant 3).
    roots.check(files.iter().map(|f| f.dir.as_str()))?;
    let session_dir = zync_db::session_dir(db, &session.id);
    let mut restored = 0usize;
    let mut failed = Vec::new();
    let mut kept = Vec::new();
    for file in &files {
        let name = session::file_name(file);
        match undo_one(&mut index, &session_dir, &roots, file, force) {
            Ok(copy) => {
                kept.extend(copy.map(|c| (name.clone(), c)));
                index.set_file_state(
                    &file.session_id,
                    &file.dir,
                    &file.path,
                    FileState::Undone,
                    file.backup_name.as_deref(),
                    file.e_existed,
                )?;
                crashpoint::reached(Step::Undone)?;
                restored += 1;
            }
            Err(e) if e.downcast_ref::<zync_db::DbError>().is_some() => {
                return Err(e.context(format!("while undoing {name}")))
            }
            // A root swapped for a symlink meanwhile: nothing more is restored anywhere.
            Err(e) => match roots.replaced_during_run(&e) {
                Some(why) => bail!(
                    "{why}; {restored} restored before it, and `zync-apply undo {}` goes on \
                     once the directory is back",
                    session.id
                ),
                None => failed.push(format!("  {name}: {e:#}")),
            },
        }
    }
    // After every file, as one file's new directory may hold another's.
    let removed = created_dirs::remove_for_session(&mut index, &session.id, dirs)
        .context("the files were restored, but the directories the apply made were not removed")?;
    if failed.is_empty() {
        index.set_session_status(&session.id, SessionStatus::Undone)?;
    }
    report_removed_dirs(out, &removed)?;
    // Where E's newer versions went: never lost, and the user is told where (invariant 5).
    for (file, copy) in &kept {
        let (file, copy) = (zync_cli::visible::line(file), zync_cli::visible::line(copy));
        writeln!(out, "kept E's newer version of {file} as {copy}")?;
    }
    writeln!(
        out,
        "session {}: {} restored, {} not restored",
        session.id,
        restored,
        failed.len()
    )?;
    if !failed.is_empty() {
        bail!(
            "{} could not be restored:\n{}\npass --force to restore over changes made on E since the apply",
            session::count(failed.len() as u64, "file"),
            failed.join("\n")
        );
    }
    Ok(Outcome::Done)
}

/// Refuses a settled session: the backups undo would restore from are gone.
fn refuse_settled(session: &zync_db::Session) -> anyhow::Result<()> {
    if session.status == SessionStatus::Settled {
        bail!(
            "session {} is settled: its backups were removed (`zync-apply drop --discard-backups`, \
             or `zync-apply gc` and the daemon once it had been applied for longer than \
             --staging-max-age), so it cannot be undone; what it applied stays on E",
            session.id
        );
    }
    Ok(())
}

fn report_removed_dirs(out: &mut dyn Write, removed: &[String]) -> anyhow::Result<()> {
    for d in removed {
        // Made for R's paths: R chose their names.
        let d = zync_cli::visible::line(d);
        writeln!(
            out,
            "removed the empty directory {d} (the apply had created it)"
        )?;
    }
    Ok(())
}

/// Undoes one file; returns where E's newer version was kept (`dir/path`), if it had one.
fn undo_one(
    index: &mut Index,
    session_dir: &Path,
    roots: &Roots,
    file: &StagedFile,
    force: bool,
) -> anyhow::Result<Option<String>> {
    let root = roots.get(&file.dir)?;
    let rel = RelPath::parse(&file.path)?;
    if file.state == FileState::KeptBoth {
        let Some(copy) = file.backup_name.as_deref().and_then(decode_copy) else {
            bail!("the database does not say where the conflict copy went; look for {}.zync-conflict-* beside it and remove it by hand if you no longer want it", file.path);
        };
        let copy = RelPath::parse(&copy)?;
        return remove_if_ours(index, root, &copy, &file.dir, file.sha256.as_deref(), force);
    }
    let backup = match file.backup_name.as_deref() {
        Some(name) => Some(probe::session_file(session_dir, Some(name), "backup")?),
        None => None,
    };
    let Some(backup) = backup else {
        return match file.action {
            // E had no file: the apply created it.
            Action::Write => {
                remove_if_ours(index, root, &rel, &file.dir, file.sha256.as_deref(), force)
            }
            // Nothing was there to delete.
            Action::Delete => Ok(None),
        };
    };
    // What the apply left at the path: R's content, or nothing after a delete.
    let applied_sha = match file.action {
        Action::Write => file.sha256.as_deref(),
        Action::Delete => None,
    };
    let mut current = probe::probe(root, &rel)?;
    let mut copy = None;
    if expect_current(&current, applied_sha, force, &rel)? {
        copy = Some(keep_newer(index, root, &rel, &file.dir, &current)?);
        current = Current::Missing;
    }
    restore(index, root, &rel, file, &backup, &current)?;
    Ok(copy)
}

/// Checks that E still has what the apply left there: a file with `sha256`, or nothing when
/// `sha256` is `None`. `force` accepts any regular file or nothing, and then returns true when
/// E's file is a newer version, which the caller keeps as a conflict copy.
fn expect_current(
    current: &Current,
    sha256: Option<&str>,
    force: bool,
    rel: &RelPath,
) -> anyhow::Result<bool> {
    let unchanged = match (current, sha256) {
        (Current::Other(what), _) => {
            bail!("E now has {what} at {rel}; move it away and undo again")
        }
        (Current::Missing, _) => true,
        (Current::File { sha256: have, .. }, Some(want)) => have == want,
        (Current::File { .. }, None) => false,
    };
    if unchanged {
        return Ok(false);
    }
    if !force {
        bail!("{rel} changed on E since it was applied; keep E's version, or undo with --force to restore the backup (E's newer version is kept as a conflict copy)");
    }
    Ok(true)
}

/// `undo --force` over a file edited on E since the apply: that edit is moved aside as a
/// conflict copy (and indexed, so it reaches R), never lost. Returns the copy as `dir/path`.
fn keep_newer(
    index: &mut Index,
    root: &Path,
    rel: &RelPath,
    dir: &str,
    current: &Current,
) -> anyhow::Result<String> {
    let Current::File { sha256, .. } = current else {
        bail!("E has no file at {rel} to keep");
    };
    let stamp = chrono::Local::now().format("%Y%m%dT%H%M%S").to_string();
    let copy = zync_fs::keep_as_conflict_copy(root, rel, &stamp)
        .with_context(|| format!("cannot keep E's newer {rel} as a conflict copy"))?;
    let (shown, shown_copy) = (
        zync_cli::visible::line(rel.as_str()),
        zync_cli::visible::line(copy.as_str()),
    );
    tracing::warn!(path = %shown, copy = %shown_copy, "E's newer version was kept as {shown_copy}");
    fileops::index_file(index, dir, root, &copy, sha256, &[])?;
    Ok(format!("{dir}/{copy}"))
}

/// Removes `rel` (a file the apply created) and records its removal.
fn remove_if_ours(
    index: &mut Index,
    root: &Path,
    rel: &RelPath,
    dir: &str,
    sha256: Option<&str>,
    force: bool,
) -> anyhow::Result<Option<String>> {
    let current = probe::probe(root, rel)?;
    let mut copy = None;
    if current != Current::Missing {
        if expect_current(&current, sha256, force, rel)? {
            copy = Some(keep_newer(index, root, rel, dir, &current)?);
        } else {
            fileops::remove_if_unchanged(root, rel, &current, || {
                anyhow!(
                    "{rel} changed on E while undo was removing it; nothing was removed: run \
                     undo again"
                )
            })?;
        }
    }
    fileops::index_removed(index, dir, rel)?;
    Ok(copy)
}

/// Writes the backup back to `rel` with the mode and mtime E's file had, and records it. E
/// must still have `expected` there right before the rename: an edit saved on E while the
/// backup was being copied is never replaced unseen. What is written must hash to what the
/// database recorded when the backup was made ([`fileops::backup_meta`]): a backup changed
/// since is refused, E untouched. Setuid and setgid bits are never restored, as apply never
/// gives them to R's files: an undo must not make a program that runs with its owner's
/// rights out of whatever the staging area holds.
fn restore(
    index: &mut Index,
    root: &Path,
    rel: &RelPath,
    file: &StagedFile,
    backup: &Path,
    expected: &Current,
) -> anyhow::Result<()> {
    let meta = fileops::backup_meta(index, file, backup)?;
    let new_dirs = fileops::ensure_parents(root, rel)?;
    fileops::replace_if_unchanged(
        root,
        rel,
        backup,
        &meta.sha256,
        meta.mode & 0o777,
        meta.mtime_ns,
        expected,
        || {
            anyhow!(
                "{rel} changed on E while undo was restoring it; nothing was replaced: run undo \
                 again"
            )
        },
    )
    .with_context(|| format!("cannot restore {rel} from {}", backup.display()))?;
    if meta.mode & 0o7000 != 0 {
        tracing::warn!(
            path = %zync_cli::visible::line(rel.as_str()),
            "restored without its setuid, setgid and sticky bits (mode {:o} was recorded); \
             set them again with chmod if E's file needs them",
            meta.mode & 0o7777
        );
    }
    fileops::index_file(index, &file.dir, root, rel, &meta.sha256, &new_dirs)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::prompt::{Choice, ScriptedPrompter};
    use crate::testkit::{delete, exists, sha, write, Fixture};
    use std::os::unix::fs::{MetadataExt, PermissionsExt};

    const ID: &str = "5e55-undo-0001";

    fn mode_and_mtime(p: &Path) -> (u32, i64) {
        let md = std::fs::symlink_metadata(p).expect("stat");
        (
            md.mode() & 0o7777,
            md.mtime() * 1_000_000_000 + md.mtime_nsec(),
        )
    }

    /// E's root swapped for a symlink to another directory after an apply: undo restores
    /// nothing there (nor anywhere), and restores everything once the root is back.
    #[test]
    fn undo_never_restores_through_a_root_swapped_for_a_symlink() {
        let fx = Fixture::new();
        fx.e_write("f.txt", b"E's\n");
        fx.stage(ID, &[write("f.txt", b"R's\n", Some(b"E's\n"))]);
        let mut p = ScriptedPrompter::new([]);
        let (r, out) = fx.run(&["apply", ID, "--non-interactive"], &mut p);
        assert_eq!(r.expect("apply"), crate::outcome::Outcome::Done, "{out}");
        let theirs = tempfile::tempdir().expect("tempdir");
        std::fs::write(theirs.path().join("f.txt"), b"R's\n").expect("write");
        fx.swap_root_for(theirs.path());
        let (r, out) = fx.run(&["undo", ID], &mut p);
        let err = format!("{:#}", r.expect_err("refused"));
        assert!(err.contains("restart zync-daemon"), "{err}\n{out}");
        assert_eq!(
            std::fs::read(theirs.path().join("f.txt")).expect("read"),
            b"R's\n"
        );
        assert_eq!(std::fs::read_dir(theirs.path()).expect("list").count(), 1);
        fx.put_root_back();
        let (r, out) = fx.run(&["undo", ID], &mut p);
        assert_eq!(r.expect("undo"), crate::outcome::Outcome::Done, "{out}");
        assert_eq!(fx.e_read("f.txt").as_deref(), Some(&b"E's\n"[..]));
    }

    #[test]
    fn undo_restores_e_byte_for_byte() {
        let fx = Fixture::new();
        let old_bin: Vec<u8> = (0..=255u8).cycle().take(70_000).collect();
        fx.e_write("mod.bin", &old_bin);
        fx.e_write("del.txt", b"deleted on R\n");
        let mod_path = fx.root.join("mod.bin");
        std::fs::set_permissions(&mod_path, std::fs::Permissions::from_mode(0o600)).expect("chmod");
        zync_fs::set_mtime(&mod_path, 1_500_000_000_123_456_789).expect("mtime");
        let before = mode_and_mtime(&mod_path);
        fx.stage(
            ID,
            &[
                write("mod.bin", b"R's version", None),
                delete("del.txt", Some(b"deleted on R\n")),
                write("created/new.txt", b"new on R\n", None),
            ],
        );
        let mut p = ScriptedPrompter::new([]);
        let (r, out) = fx.run(&["apply", ID, "--force", "--non-interactive"], &mut p);
        assert_eq!(r.expect("apply"), crate::outcome::Outcome::Done, "{out}");
        assert_eq!(fx.e_read("mod.bin").as_deref(), Some(&b"R's version"[..]));
        assert_eq!(fx.e_read("del.txt"), None);

        let (r, out) = fx.run(&["undo", ID], &mut p);
        assert_eq!(r.expect("undo"), crate::outcome::Outcome::Done, "{out}");
        assert_eq!(fx.e_read("mod.bin").expect("restored"), old_bin);
        assert_eq!(mode_and_mtime(&mod_path), before);
        assert_eq!(
            fx.e_read("del.txt").as_deref(),
            Some(&b"deleted on R\n"[..])
        );
        assert!(!exists(&fx.root.join("created/new.txt")));
        assert_eq!(fx.indexed("mod.bin"), Some(sha(&old_bin)));
        assert_eq!(fx.indexed("del.txt"), Some(sha(b"deleted on R\n")));
        assert!(fx.tombstoned("created/new.txt"));
        for path in ["mod.bin", "del.txt", "created/new.txt"] {
            assert_eq!(fx.state(ID, path), FileState::Undone, "{path}");
        }
        assert_eq!(fx.status(ID), SessionStatus::Undone);
        // A second undo has nothing to do.
        let (r, out) = fx.run(&["undo", ID], &mut p);
        assert!(r.is_ok());
        assert!(out.contains("nothing applied to undo"), "{out}");
    }

    #[test]
    fn undo_of_keep_both_removes_the_conflict_copy() {
        let fx = Fixture::new();
        fx.e_write("f.txt", b"E edit\n");
        fx.stage(ID, &[write("f.txt", b"R edit\n", Some(b"base\n"))]);
        let mut p = ScriptedPrompter::new([Choice::KeepBoth]);
        let (r, _) = fx.run(&["apply", ID], &mut p);
        r.expect("apply");
        let copy =
            crate::fileops::decode_copy(&fx.file(ID, "f.txt").backup_name.expect("copy recorded"))
                .expect("copy path");
        assert!(exists(&fx.root.join(&copy)));
        let (r, out) = fx.run(&["undo", ID], &mut p);
        r.expect("undo");
        assert!(!exists(&fx.root.join(&copy)), "{out}");
        assert!(fx.tombstoned(&copy));
        assert_eq!(fx.e_read("f.txt").as_deref(), Some(&b"E edit\n"[..]));
    }

    #[test]
    fn undo_leaves_a_file_edited_on_e_since_the_apply_unless_forced() {
        let fx = Fixture::new();
        fx.e_write("f.txt", b"base\n");
        fx.stage(ID, &[write("f.txt", b"R\n", Some(b"base\n"))]);
        let mut p = ScriptedPrompter::new([]);
        fx.run(&["apply", ID, "--non-interactive"], &mut p)
            .0
            .expect("apply");
        fx.e_write("f.txt", b"newer work on E\n");
        let (r, _) = fx.run(&["undo", ID], &mut p);
        let err = format!("{:#}", r.expect_err("must refuse"));
        assert!(
            err.contains("changed on E") && err.contains("--force"),
            "{err}"
        );
        assert_eq!(
            fx.e_read("f.txt").as_deref(),
            Some(&b"newer work on E\n"[..])
        );
        assert_eq!(fx.state(ID, "f.txt"), FileState::Applied);
        let (r, out) = fx.run(&["undo", ID, "--force"], &mut p);
        r.expect("forced undo");
        assert_eq!(fx.e_read("f.txt").as_deref(), Some(&b"base\n"[..]));
        // The newer work on E is not lost: it sits beside as a conflict copy.
        let copies: Vec<String> = std::fs::read_dir(&fx.root)
            .expect("list E")
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with("f.zync-conflict-") && n.ends_with(".txt"))
            .collect();
        assert_eq!(copies.len(), 1, "{copies:?}");
        assert_eq!(
            fx.e_read(&copies[0]).as_deref(),
            Some(&b"newer work on E\n"[..])
        );
        // And the user is told where it went.
        assert!(
            out.contains(&format!(
                "kept E's newer version of docs/f.txt as docs/{}",
                copies[0]
            )),
            "{out}"
        );
        assert_eq!(fx.indexed(&copies[0]), Some(sha(b"newer work on E\n")));
    }

    #[test]
    fn undo_force_keeps_every_kind_of_newer_version_on_e_and_names_each_copy() {
        let fx = Fixture::new();
        fx.e_write("mod.txt", b"base\n");
        fx.e_write("del.txt", b"deleted on R\n");
        fx.stage(
            ID,
            &[
                write("mod.txt", b"R\n", Some(b"base\n")),
                delete("del.txt", Some(b"deleted on R\n")),
                write("sub/new.txt", b"new on R\n", None),
            ],
        );
        let mut p = ScriptedPrompter::new([]);
        fx.run(&["apply", ID, "--non-interactive"], &mut p)
            .0
            .expect("apply");
        // After the apply, E's user edits the modified file, recreates the deleted one and
        // edits the new one.
        fx.e_write("mod.txt", b"E's later edit\n");
        fx.e_write("del.txt", b"E made it again\n");
        fx.e_write("sub/new.txt", b"E edited R's new file\n");
        let (r, out) = fx.run(&["undo", ID, "--force"], &mut p);
        assert_eq!(r.expect("undo"), crate::outcome::Outcome::Done, "{out}");
        assert_eq!(fx.e_read("mod.txt").as_deref(), Some(&b"base\n"[..]));
        assert_eq!(
            fx.e_read("del.txt").as_deref(),
            Some(&b"deleted on R\n"[..])
        );
        assert!(!exists(&fx.root.join("sub/new.txt")));
        for (path, newer) in [
            ("mod.txt", &b"E's later edit\n"[..]),
            ("del.txt", b"E made it again\n"),
            ("sub/new.txt", b"E edited R's new file\n"),
        ] {
            let line = out
                .lines()
                .find(|l| l.starts_with(&format!("kept E's newer version of docs/{path} as ")))
                .unwrap_or_else(|| panic!("{path}: no copy named in:\n{out}"));
            let copy = line.rsplit(" as docs/").next().expect("copy path");
            assert_eq!(fx.e_read(copy).as_deref(), Some(newer), "{path}: {out}");
        }
        // The copy keeps the directory the apply made from being removed.
        assert!(fx.root.join("sub").is_dir());
    }

    #[test]
    fn restore_replaces_nothing_when_e_changed_since_it_was_checked() {
        let fx = Fixture::new();
        fx.stage(ID, &[write("f.txt", b"R\n", None)]);
        let backup = fx.session_dir(ID).join("backup-1");
        std::fs::create_dir_all(fx.session_dir(ID)).expect("mkdir");
        std::fs::write(&backup, b"the backup\n").expect("backup");
        // Undo checked E and found nothing at the path; meanwhile E's user saved a file there.
        fx.e_write("f.txt", b"saved during the undo\n");
        let rel = RelPath::parse("f.txt").expect("path");
        let err = restore(
            &mut fx.index(),
            &fx.root,
            &rel,
            &fx.file(ID, "f.txt"),
            &backup,
            &Current::Missing,
        )
        .expect_err("refused");
        assert!(format!("{err:#}").contains("changed on E"), "{err:#}");
        assert_eq!(
            fx.e_read("f.txt").as_deref(),
            Some(&b"saved during the undo\n"[..])
        );
        assert_eq!(
            crate::fileops::remove_temps_beside(&fx.root, &rel).expect("temps"),
            0
        );
    }

    /// Whoever could write the staging area after the apply (another user who made it
    /// first, before zync checked whose it was) replaces a backup with a program of theirs and
    /// writes, beside it, metadata claiming that program's hash and mode 6777: undo restores
    /// only what the database recorded when the backup was made, so it refuses, and E keeps
    /// what the apply left.
    #[test]
    fn undo_refuses_a_backup_changed_since_the_apply_whatever_lies_beside_it() {
        let fx = Fixture::new();
        fx.e_write("run.sh", b"#!/bin/sh\necho build\n");
        fx.stage(
            ID,
            &[write("run.sh", b"#!/bin/sh\necho build --fast\n", None)],
        );
        let mut p = ScriptedPrompter::new([]);
        let (r, out) = fx.run(&["apply", ID, "--force", "--non-interactive"], &mut p);
        assert_eq!(r.expect("apply"), crate::outcome::Outcome::Done, "{out}");
        let backup = fx.session_dir(ID).join("backup-1");
        let planted = b"#!/bin/sh\necho a program of another user's\n";
        std::fs::write(&backup, planted).expect("replace the backup");
        let forged = format!(
            r#"{{"mode":{},"mtime_ns":0,"sha256":"{}","size":{}}}"#,
            0o6777,
            sha(planted),
            planted.len()
        );
        std::fs::write(fx.session_dir(ID).join("backup-1.json"), forged).expect("forge");
        let (r, out) = fx.run(&["undo", ID], &mut p);
        let err = format!("{:#}", r.expect_err("a changed backup must be refused"));
        assert!(err.contains("sha256"), "{err}\n{out}");
        assert_eq!(
            fx.e_read("run.sh").as_deref(),
            Some(&b"#!/bin/sh\necho build --fast\n"[..]),
            "E's file was replaced"
        );
        let mode = std::fs::metadata(fx.root.join("run.sh"))
            .expect("stat")
            .mode();
        assert_eq!(mode & 0o7000, 0, "mode {mode:o}");
    }

    /// E's own file had setuid and setgid bits when the apply replaced it: undo brings its
    /// content, mtime and permission bits back, never setuid or setgid, as apply never gives
    /// them to R's files either.
    #[test]
    fn undo_never_restores_setuid_or_setgid_bits() {
        let fx = Fixture::new();
        fx.e_write("tool", b"E's tool\n");
        let tool = fx.root.join("tool");
        std::fs::set_permissions(&tool, std::fs::Permissions::from_mode(0o6755)).expect("chmod");
        fx.stage(ID, &[write("tool", b"R's tool\n", None)]);
        let mut p = ScriptedPrompter::new([]);
        let (r, out) = fx.run(&["apply", ID, "--force", "--non-interactive"], &mut p);
        assert_eq!(r.expect("apply"), crate::outcome::Outcome::Done, "{out}");
        let (r, out) = fx.run(&["undo", ID], &mut p);
        assert_eq!(r.expect("undo"), crate::outcome::Outcome::Done, "{out}");
        assert_eq!(fx.e_read("tool").as_deref(), Some(&b"E's tool\n"[..]));
        let mode = std::fs::metadata(&tool).expect("stat").mode() & 0o7777;
        assert_eq!(mode, 0o755, "restored with mode {mode:o}");
    }

    #[test]
    fn undo_of_a_session_with_nothing_applied_says_so() {
        let fx = Fixture::new();
        fx.stage(ID, &[write("f.txt", b"R\n", None)]);
        let (r, out) = fx.run(&["undo", ID], &mut ScriptedPrompter::new([]));
        assert_eq!(r.expect("undo"), crate::outcome::Outcome::Done);
        assert!(out.contains("nothing applied to undo"), "{out}");
        assert_eq!(fx.status(ID), SessionStatus::Staged);
    }

    #[test]
    fn undo_removes_the_directories_the_apply_created_unless_they_hold_other_files() {
        let fx = Fixture::new();
        std::fs::create_dir(fx.root.join("old")).expect("mkdir");
        fx.stage(
            ID,
            &[
                // The first file makes new, new/a and new/a/b; the second uses new/a.
                write("new/a/b/f.txt", b"f\n", None),
                write("new/a/g.txt", b"g\n", None),
                write("old/h.txt", b"h\n", None),
                write("other/x.txt", b"x\n", None),
            ],
        );
        let mut p = ScriptedPrompter::new([]);
        let (r, out) = fx.run(&["apply", ID, "--non-interactive"], &mut p);
        assert_eq!(r.expect("apply"), crate::outcome::Outcome::Done, "{out}");
        assert!(fx.index().get("docs", "new/a/b").expect("get").is_some());
        // E's user puts a file of their own in a directory the apply made.
        fx.e_write("other/mine.txt", b"mine\n");

        let (r, out) = fx.run(&["undo", ID], &mut p);
        assert_eq!(r.expect("undo"), crate::outcome::Outcome::Done, "{out}");
        assert!(!exists(&fx.root.join("new")), "{out}");
        for d in ["new", "new/a", "new/a/b"] {
            assert!(fx.tombstoned(d), "{d} is still live in the index");
        }
        assert!(
            out.contains("removed the empty directory docs/new/a/b"),
            "{out}"
        );
        assert_eq!(fx.e_read("other/mine.txt").as_deref(), Some(&b"mine\n"[..]));
        assert!(!exists(&fx.root.join("other/x.txt")));
        assert!(
            !fx.tombstoned("other"),
            "a directory kept is not tombstoned"
        );
        // A directory E had before the apply stays, even when empty.
        assert!(fx.root.join("old").is_dir(), "{out}");
        assert_eq!(fx.status(ID), SessionStatus::Undone);
    }

    #[test]
    fn an_undo_killed_before_it_removed_the_directories_removes_them_when_run_again() {
        let fx = Fixture::new();
        fx.stage(
            ID,
            &[
                write("new/a/f.txt", b"f\n", None),
                write("new/g.txt", b"g\n", None),
            ],
        );
        let mut p = ScriptedPrompter::new([]);
        fx.run(&["apply", ID, "--non-interactive"], &mut p)
            .0
            .expect("apply");
        // Killed once every file is restored and marked, before the directories went.
        crashpoint::arm(Step::Undone, 1);
        let (r, out) = fx.run(&["undo", ID], &mut p);
        assert!(crashpoint::is_crash(&r.expect_err("crash")), "{out}");
        assert!(fx.root.join("new/a").is_dir());
        let (r, out) = fx.run(&["undo", ID], &mut p);
        assert_eq!(
            r.expect("undo again"),
            crate::outcome::Outcome::Done,
            "{out}"
        );
        assert!(!exists(&fx.root.join("new")), "{out}");
        assert!(fx.tombstoned("new/a") && fx.tombstoned("new"));
    }
}
