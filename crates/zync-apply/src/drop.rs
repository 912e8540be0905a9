//! `zync-apply drop`: discards a staged session. Its staged files leave the staging area and
//! the session is marked `dropped`; E's directories are never touched. The rule of which
//! sessions may go is `zync_db::drop_session`'s, shared with nothing else: a session whose
//! directory holds backups (applied, partly applied) must be undone first.

use std::io::Write;
use std::path::Path;

use anyhow::bail;
use serde::Serialize;
use zync_db::{SessionStatus, Undroppable};

use crate::lock::SessionLock;
use crate::session;

/// What `drop --json` prints.
#[derive(Debug, Serialize)]
struct Dropped<'a> {
    id: &'a str,
    status: &'static str,
    files: u64,
    bytes: u64,
}

/// Drops session `id` (or a unique prefix) of the database `db`.
///
/// # Errors
/// An unknown or ambiguous session; a session that may not be dropped (the message says what
/// to do instead); a database failure; staged files that could not be removed (run it again).
pub fn drop(db: &Path, id: &str, json: bool, out: &mut dyn Write) -> anyhow::Result<()> {
    let index = session::open_index(db)?;
    let found = session::find(&index, id)?;
    // Not while an apply or undo runs on it; then read it again, as that run may have
    // changed it. A session without a directory has nothing to lock.
    let _lock = if zync_db::session_dir(db, &found.id).is_dir() {
        Some(SessionLock::acquire(db, &found.id, "drop")?)
    } else {
        None
    };
    let found = session::find(&index, &found.id)?;
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
             {}` needs; undo it first (E gets its files back), then drop it",
            found.id,
            status.as_str(),
            found.id
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
        let shown = Dropped {
            id: &found.id,
            status: SessionStatus::Dropped.as_str(),
            files: found.files,
            bytes: found.bytes,
        };
        serde_json::to_writer_pretty(&mut *out, &shown)?;
        writeln!(out)?;
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
        assert_eq!(fx.status(A), SessionStatus::Applied);
        assert!(fx.session_dir(A).exists(), "the backups went");
    }
}
