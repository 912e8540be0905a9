//! `zync-apply drop`: discards a staged session. Its staged files leave the staging area and
//! the session is marked `dropped`; E's directories are never touched. The rule of which
//! sessions may go is `zync_db::drop_session`'s, shared with nothing else: a session whose
//! directory holds backups (applied, partly applied) must be undone first, unless the user
//! gives its undo up with `--discard-backups`: then its directory goes
//! (`zync_db::settle_session`) and it is marked `settled`, what it applied staying on E
//! (invariant 5, docs/ARCHITECTURE.md: the backups are kept until the user, or expiry, lets
//! them go).

use std::io::Write;
use std::path::Path;

use anyhow::{bail, Context};
use serde::Serialize;
use zync_db::{FileState, Index, Session, SessionStatus, Undroppable, Unsettleable};

use crate::lock::SessionLock;
use crate::recover;
use crate::session;

/// What `drop --json` prints.
#[derive(Debug, Serialize)]
struct Dropped<'a> {
    id: &'a str,
    status: &'static str,
    files: u64,
    bytes: u64,
    /// Settled only: files of a partly applied session that were still staged, removed
    /// without being applied.
    #[serde(skip_serializing_if = "Option::is_none")]
    unapplied: Option<u64>,
}

/// Drops session `id` (or a unique prefix) of the database `db`; with `discard_backups`, an
/// applied or partly applied session is settled instead of refused.
///
/// # Errors
/// An unknown or ambiguous session; a session that may not be dropped (the message says what
/// to do instead); a database failure; staged files that could not be removed (run it again).
pub fn drop(
    db: &Path,
    id: &str,
    discard_backups: bool,
    json: bool,
    out: &mut dyn Write,
) -> anyhow::Result<()> {
    let mut index = session::open_index(db)?;
    let found = session::find(&index, id)?;
    // Not while an apply or undo runs on it; then read it again, as that run may have
    // changed it. A session without a directory has nothing to lock.
    let _lock = if zync_db::session_dir(db, &found.id).is_dir() {
        Some(SessionLock::acquire(db, &found.id, "drop")?)
    } else {
        None
    };
    let found = session::find(&index, &found.id)?;
    if discard_backups
        && matches!(
            found.status,
            SessionStatus::Applied | SessionStatus::Partial
        )
    {
        return settle(&mut index, db, &found, json, out);
    }
    let removed = match zync_db::drop_session(&index, db, &found)? {
        Ok(removed) => removed,
        Err(Undroppable::Receiving) => bail!(
            "session {} is still being received from {}; wait for the push to end (the daemon \
             aborts it if the client goes away)",
            found.id,
            zync_cli::visible::line(&found.client_id)
        ),
        Err(Undroppable::Applied(status)) => bail!(
            "session {} is {}: its directory holds the backups of E's files that `zync-apply undo \
             {}` needs; undo it first (E gets its files back), then drop it; or keep E as it is \
             and pass --discard-backups, which removes the backups{} and marks it settled: undo \
             will no longer be possible",
            found.id,
            status.as_str(),
            found.id,
            if status == SessionStatus::Partial {
                " and the files still staged, without applying them,"
            } else {
                ""
            }
        ),
        Err(Undroppable::Ended(status)) => {
            // Its files should be gone already; remove what a failed removal may have left.
            zync_db::remove_dir(&zync_db::session_dir(db, &found.id))?;
            writeln!(
                out,
                "session {} is already {}; nothing is staged",
                found.id,
                status.as_str()
            )?;
            return Ok(());
        }
    };
    if let Err(e) = removed {
        bail!(
            "session {} is dropped, but its staged files could not all be removed from {}: {e}; \
             run `zync-apply drop {}` again, or `zync-apply gc`",
            found.id,
            zync_db::session_dir(db, &found.id).display(),
            found.id
        );
    }
    if json {
        print_json(out, &found, SessionStatus::Dropped, None)?;
    } else {
        writeln!(
            out,
            "dropped session {}: {}, {} removed from the staging area; E's directories were not touched",
            found.id,
            session::count(found.files, "file"),
            zync_cli::units::format_bytes(found.bytes)
        )?;
    }
    Ok(())
}

/// `drop --discard-backups` of an applied or partly applied session, whose lock the caller
/// holds: resolves what a killed apply left (the intent records name backups), then settles
/// it.
fn settle(
    index: &mut Index,
    db: &Path,
    found: &Session,
    json: bool,
    out: &mut dyn Write,
) -> anyhow::Result<()> {
    // Its notes go where they cannot break the JSON.
    let mut stderr = std::io::stderr();
    let notes: &mut dyn Write = if json { &mut stderr } else { out };
    recover::resolve_session(index, db, &found.id, &[], notes).with_context(|| {
        format!(
            "an interrupted apply left files of session {} half done; run `zync-apply apply {}` \
             (with --dirs if the daemon's mapping is not in its database) to resolve them first",
            found.id, found.id
        )
    })?;
    let unapplied = index
        .staged_files(&found.id)
        .context("cannot read the session's files")?
        .iter()
        .filter(|f| f.state == FileState::Staged)
        .count() as u64;
    let removed = match zync_db::settle_session(index, db, found)? {
        Ok(removed) => removed,
        Err(Unsettleable::Status(now)) => bail!(
            "session {} is {} now; nothing was removed (see `zync-apply list --all`)",
            found.id,
            now.as_str()
        ),
        Err(Unsettleable::Interrupted(n)) => bail!(
            "session {} has {} still half applied; run `zync-apply apply {}` to resolve them, \
             then drop it again",
            found.id,
            session::count(n, "file"),
            found.id
        ),
    };
    if let Err(e) = removed {
        bail!(
            "session {} is settled, but its directory could not all be removed from {}: {e}; \
             run `zync-apply gc` to remove what is left",
            found.id,
            zync_db::session_dir(db, &found.id).display()
        );
    }
    if json {
        print_json(out, found, SessionStatus::Settled, Some(unapplied))?;
    } else {
        let staged = match unapplied {
            0 => String::new(),
            n => format!(
                " and {} still staged (NOT applied: they are discarded)",
                session::count(n, "file")
            ),
        };
        writeln!(
            out,
            "settled session {}: its backups{staged} were removed from the staging area; what \
             it applied stays on E, and it can no longer be undone",
            found.id
        )?;
    }
    Ok(())
}

/// What `--json` prints: one object, with the session's new status.
fn print_json(
    out: &mut dyn Write,
    found: &Session,
    status: SessionStatus,
    unapplied: Option<u64>,
) -> anyhow::Result<()> {
    let shown = Dropped {
        id: &found.id,
        status: status.as_str(),
        files: found.files,
        bytes: found.bytes,
        unapplied,
    };
    serde_json::to_writer_pretty(&mut *out, &shown)?;
    writeln!(out)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use crate::prompt::ScriptedPrompter;
    use crate::testkit::{write, Fixture};
    use zync_db::SessionStatus;

    const A: &str = "aaaa1111-2222-4333-8444-555566667777";
    const B: &str = "bbbb1111-2222-4333-8444-555566667777";

    #[test]
    fn drop_removes_one_staged_session_and_touches_nothing_else() {
        let fx = Fixture::new();
        fx.e_write("keep.txt", b"E\n");
        fx.stage(A, &[write("x.txt", b"x", None)]);
        fx.stage(B, &[write("y.txt", b"y", None)]);
        let e_before = fx.e_tree();
        let mut p = ScriptedPrompter::new([]);
        let (r, out) = fx.run(&["drop", &A[..8]], &mut p);
        r.expect("drop");
        assert!(
            out.contains(&format!("dropped session {A}: 1 file")),
            "{out}"
        );
        assert_eq!(fx.status(A), SessionStatus::Dropped);
        assert!(!fx.session_dir(A).exists(), "the staged files stay");
        assert_eq!(
            fx.status(B),
            SessionStatus::Staged,
            "another session changed"
        );
        assert!(fx.session_dir(B).exists());
        assert_eq!(fx.e_tree(), e_before, "E changed");

        let (r, out) = fx.run(&["drop", A], &mut p);
        r.expect("a second drop is no error");
        assert!(out.contains("already dropped"), "{out}");
        let (r, _) = fx.run(&["apply", A, "--non-interactive"], &mut p);
        assert!(r.is_err(), "a dropped session was applied");
    }

    #[test]
    fn drop_refuses_an_applied_session_and_points_to_undo() {
        let fx = Fixture::new();
        fx.stage(A, &[write("x.txt", b"x", None)]);
        let mut p = ScriptedPrompter::new([]);
        fx.run(&["apply", A, "--non-interactive"], &mut p)
            .0
            .expect("apply");
        let (r, _) = fx.run(&["drop", A], &mut p);
        let err = format!("{:#}", r.expect_err("drop of an applied session"));
        assert!(
            err.contains("zync-apply undo") && err.contains("applied"),
            "{err}"
        );
        assert!(
            err.contains("--discard-backups") && err.contains("undo will no longer be possible"),
            "the refusal names the way out and what it costs: {err}"
        );
        assert_eq!(fx.status(A), SessionStatus::Applied);
        assert!(fx.session_dir(A).exists(), "the backups went");
    }

    /// Undo of session `id` is refused as settled, and changes neither E nor the staging area.
    fn undo_is_refused_as_settled(fx: &Fixture, id: &str) {
        let e_before = fx.e_tree();
        let mut p = ScriptedPrompter::new([]);
        let (r, out) = fx.run(&["undo", id], &mut p);
        let err = format!("{:#}", r.expect_err("undo of a settled session"));
        assert!(
            err.contains(&format!("session {id} is settled")) && err.contains("cannot be undone"),
            "{err}\n{out}"
        );
        assert_eq!(fx.e_tree(), e_before, "the refused undo changed E");
        assert!(
            !fx.session_dir(id).exists(),
            "the refused undo made a directory"
        );
        assert_eq!(fx.status(id), SessionStatus::Settled);
    }

    #[test]
    fn drop_discard_backups_settles_an_applied_session_keeping_e_and_undo_is_refused() {
        let fx = Fixture::new();
        fx.e_write("big.bin", b"E's original\n");
        fx.stage(
            A,
            &[
                write("big.bin", b"R's edit\n", Some(b"E's original\n")),
                write("new.txt", b"new\n", None),
            ],
        );
        fx.stage(B, &[write("y.txt", b"y", None)]);
        let mut p = ScriptedPrompter::new([]);
        fx.run(&["apply", A, "--non-interactive"], &mut p)
            .0
            .expect("apply");
        assert_eq!(fx.status(A), SessionStatus::Applied);
        let backup = fx.file(A, "big.bin").backup_name.expect("a backup");
        assert!(fx.session_dir(A).join(backup).exists());
        let e_applied = fx.e_tree();

        let (r, out) = fx.run(&["drop", &A[..8], "--discard-backups"], &mut p);
        r.expect("drop --discard-backups");
        assert!(
            out.contains(&format!("settled session {A}: its backups were removed"))
                && out.contains("stays on E")
                && out.contains("can no longer be undone"),
            "{out}"
        );
        assert_eq!(fx.status(A), SessionStatus::Settled);
        assert!(!fx.session_dir(A).exists(), "the backups stay");
        assert_eq!(fx.e_tree(), e_applied, "E changed");
        assert_eq!(
            fx.status(B),
            SessionStatus::Staged,
            "another session changed"
        );
        assert!(fx.session_dir(B).exists());

        undo_is_refused_as_settled(&fx, A);
        let (r, out) = fx.run(&["drop", A, "--discard-backups"], &mut p);
        r.expect("a second drop is no error");
        assert!(out.contains("already settled"), "{out}");
        let (r, out) = fx.run(&["list", "--all", "--json"], &mut p);
        r.expect("list");
        let v: serde_json::Value = serde_json::from_str(&out).expect("json");
        let listed = v
            .as_array()
            .and_then(|a| a.iter().find(|s| s["id"] == A))
            .expect("listed");
        assert_eq!(listed["status"], "settled", "{listed}");
        assert!(listed["applied_unix"].is_i64(), "{listed}");
    }

    /// Session A applied without its conflict: `x.txt` on E, `c.txt` (E's edit) still staged.
    fn partly_applied() -> (Fixture, ScriptedPrompter) {
        let fx = Fixture::new();
        fx.e_write("c.txt", b"E's edit\n");
        fx.stage(
            A,
            &[
                write("x.txt", b"x\n", None),
                write("c.txt", b"R\n", Some(b"base\n")),
            ],
        );
        let mut p = ScriptedPrompter::new([]);
        fx.run(&["apply", A, "--non-interactive"], &mut p)
            .0
            .expect("apply");
        (fx, p)
    }

    #[test]
    fn drop_discard_backups_settles_a_partial_session_without_applying_what_is_still_staged() {
        let (fx, mut p) = partly_applied();
        assert_eq!(
            fx.status(A),
            SessionStatus::Partial,
            "the conflict stays staged"
        );
        let e_partial = fx.e_tree();

        let (r, _) = fx.run(&["drop", A], &mut p);
        let err = format!("{:#}", r.expect_err("drop of a partial session"));
        assert!(
            err.contains("is partial")
                && err.contains("--discard-backups")
                && err.contains("without applying them")
                && err.contains("undo will no longer be possible"),
            "{err}"
        );
        assert_eq!(fx.status(A), SessionStatus::Partial);

        let (r, out) = fx.run(&["drop", A, "--discard-backups", "--json"], &mut p);
        r.expect("drop --discard-backups --json");
        let v: serde_json::Value = serde_json::from_str(&out).expect("json");
        assert_eq!(
            (&v["id"], &v["status"], &v["files"], &v["unapplied"]),
            (
                &serde_json::json!(A),
                &serde_json::json!("settled"),
                &serde_json::json!(2),
                &serde_json::json!(1)
            ),
            "{v}"
        );
        assert_eq!(fx.status(A), SessionStatus::Settled);
        assert!(
            !fx.session_dir(A).exists(),
            "the staged file and backups stay"
        );
        assert_eq!(
            fx.e_tree(),
            e_partial,
            "E changed: the file still staged was applied, or the applied one undone"
        );
        assert_eq!(fx.e_read("c.txt").as_deref(), Some(&b"E's edit\n"[..]));
        assert_eq!(
            fx.state(A, "c.txt"),
            zync_db::FileState::Staged,
            "the record stays"
        );

        let (r, _) = fx.run(&["apply", A, "--non-interactive", "--force"], &mut p);
        let err = format!("{:#}", r.expect_err("apply of a settled session"));
        assert!(err.contains("is settled"), "{err}");
        undo_is_refused_as_settled(&fx, A);
    }

    #[test]
    fn drop_discard_backups_first_resolves_what_a_killed_apply_left() {
        use crate::crashpoint::{self, Step};
        let (fx, mut p) = partly_applied();
        // A second run, forcing the conflict, is killed once E has R's version.
        crashpoint::arm(Step::Written, 0);
        let (r, _) = fx.run(&["apply", A, "--non-interactive", "--force"], &mut p);
        assert!(crashpoint::is_crash(&r.expect_err("killed")));
        assert_eq!(fx.state(A, "c.txt"), zync_db::FileState::Applying);

        let (r, out) = fx.run(&["drop", A, "--discard-backups"], &mut p);
        r.expect("drop --discard-backups");
        assert!(
            out.contains("docs/c.txt: an interrupted apply had finished changing E")
                && out.contains(&format!("settled session {A}: its backups were removed")),
            "{out}"
        );
        assert_eq!(fx.status(A), SessionStatus::Settled);
        assert_eq!(fx.state(A, "c.txt"), zync_db::FileState::Applied);
        assert_eq!(fx.e_read("c.txt").as_deref(), Some(&b"R\n"[..]));
        assert!(!fx.session_dir(A).exists());
    }

    #[test]
    fn drop_discard_backups_of_a_staged_session_is_a_plain_drop() {
        let fx = Fixture::new();
        fx.stage(A, &[write("x.txt", b"x", None)]);
        let mut p = ScriptedPrompter::new([]);
        let (r, out) = fx.run(&["drop", A, "--discard-backups"], &mut p);
        r.expect("drop");
        assert!(out.contains(&format!("dropped session {A}")), "{out}");
        assert_eq!(fx.status(A), SessionStatus::Dropped);
    }
}
