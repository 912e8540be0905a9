//! One `apply` or `undo` at a time on a session, and no expiry under either. Two runs
//! interleaving their steps on one session would each back up, write and record the same
//! files, and recovery (`recover.rs`) would take the other run's live intent records for a
//! crash; and expiry (`gc`, or the daemon at its start) would remove the backup a run has just
//! made, while the session is still `staged` (an apply marks it `partial` right before it
//! changes the first file on E, after that file's backup). So each run holds an
//! exclusive `flock` on [`zync_db::SESSION_LOCK_FILE`] in the session's staging directory from
//! before it looks at the session's files until it has finished, and expiry takes the same
//! lock before it touches a session; a second run is refused at once, naming the holder, and
//! expiry leaves a busy session alone.
//!
//! An flock, not a database row: the kernel releases it when its holder ends, even by
//! `kill -9` or a power cut, so a dead run can never leave the session locked. The file only
//! carries who holds it (pid, command, start), for the message. `show` reads and takes no lock.

use std::path::Path;

use anyhow::{bail, Context};
use serde::{Deserialize, Serialize};
use zync_db::SESSION_LOCK_FILE;
use zync_fs::{LockFile, Locked};

/// Who holds the lock, as written into the lock file.
#[derive(Debug, Serialize, Deserialize)]
struct Holder {
    pid: u32,
    command: String,
    started_unix: i64,
}

/// An exclusive hold on a session, released when dropped (or when the process ends).
#[derive(Debug)]
pub(crate) struct SessionLock {
    _lock: LockFile,
}

impl SessionLock {
    /// Locks session `session_id` of the database `db` for `command` (`apply`, `undo`,
    /// `drop`).
    ///
    /// # Errors
    ///
    /// Another run holds the lock (the message names it), or the lock file cannot be
    /// created or opened (it is a symlink or not a regular file, or an I/O error).
    pub(crate) fn acquire(db: &Path, session_id: &str, command: &str) -> anyhow::Result<Self> {
        let dir = zync_db::session_dir(db, session_id);
        let path = dir.join(SESSION_LOCK_FILE);
        match take(&dir, command).with_context(|| format!("cannot lock {}", path.display()))? {
            Locked::Held(lock) => Ok(SessionLock { _lock: lock }),
            Locked::Busy(note) => bail!("{}", busy_message(session_id, &path, &note)),
        }
    }

    /// Locks the session whose staging directory is `dir` for `command` if nobody holds it:
    /// `Ok(None)` when someone does. What `zync_db::expire` is given, for `gc`.
    ///
    /// # Errors
    ///
    /// As [`SessionLock::acquire`], except that a held lock is `Ok(None)`.
    pub(crate) fn try_dir(dir: &Path, command: &str) -> std::io::Result<Option<Self>> {
        Ok(match take(dir, command)? {
            Locked::Held(lock) => Some(SessionLock { _lock: lock }),
            Locked::Busy(_) => None,
        })
    }
}

/// Takes the lock in the session directory `dir` (made when missing: a session whose staged
/// files are gone may have lost it, and the lock still needs a place), noting who holds it.
fn take(dir: &Path, command: &str) -> std::io::Result<Locked> {
    let holder = Holder {
        pid: std::process::id(),
        command: command.to_string(),
        started_unix: chrono::Local::now().timestamp(),
    };
    // Only for the message of a refused run.
    let note = serde_json::to_vec(&holder).unwrap_or_default();
    zync_fs::try_lock_in(dir, SESSION_LOCK_FILE, &note)
}

/// The refusal: who holds the lock, when it is known. zync-apply notes itself in JSON
/// ([`Holder`]); the daemon, expiring sessions at its start, in words.
fn busy_message(session_id: &str, path: &Path, note: &str) -> String {
    let who = match serde_json::from_str::<Holder>(note) {
        Ok(h) => format!(
            "`zync-apply {}` (pid {}, started {})",
            h.command,
            h.pid,
            crate::session::local_time(h.started_unix)
        ),
        Err(_) if !note.trim().is_empty() => zync_cli::visible::line(note.trim()).to_string(),
        Err(_) => "another zync-apply".to_string(),
    };
    format!(
        "session {session_id} is busy: {who} is working on it; wait for it to finish, then run \
         this again (its lock on {} ends with that process, even if it is killed, so there is \
         nothing to remove by hand)",
        path.display()
    )
}

/// Where the lock of session `session_id` lives.
#[cfg(test)]
pub(crate) fn lock_path(db: &Path, session_id: &str) -> std::path::PathBuf {
    zync_db::session_dir(db, session_id).join(SESSION_LOCK_FILE)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    #[test]
    fn a_second_lock_is_refused_naming_the_holder_until_the_first_is_dropped() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let db = tmp.path().join("sync.db");
        let first = SessionLock::acquire(&db, "s1", "undo").expect("first");
        let err = format!(
            "{:#}",
            SessionLock::acquire(&db, "s1", "apply").expect_err("second")
        );
        assert!(
            err.contains("session s1 is busy")
                && err.contains("`zync-apply undo`")
                && err.contains(&format!("pid {}", std::process::id())),
            "{err}"
        );
        // Another session is not locked by it.
        let other = SessionLock::acquire(&db, "s2", "apply").expect("another session");
        drop(first);
        let again = SessionLock::acquire(&db, "s1", "apply").expect("free again");
        drop((again, other));
    }

    #[test]
    fn the_lock_file_is_private_and_a_symlink_there_is_not_followed() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let db = tmp.path().join("sync.db");
        let lock = SessionLock::acquire(&db, "s1", "apply").expect("lock");
        let path = lock_path(&db, "s1");
        let md = std::fs::symlink_metadata(&path).expect("stat");
        assert_eq!(md.mode() & 0o7777, 0o600);
        drop(lock);

        let target = tmp.path().join("elsewhere");
        std::fs::create_dir_all(zync_db::session_dir(&db, "s2")).expect("mkdir");
        std::os::unix::fs::symlink(&target, lock_path(&db, "s2")).expect("symlink");
        let err = format!(
            "{:#}",
            SessionLock::acquire(&db, "s2", "apply").expect_err("symlink")
        );
        assert!(err.contains("symlink"), "{err}");
        assert!(!target.exists(), "the symlink was followed");
    }

    #[test]
    fn apply_and_undo_are_refused_while_another_run_holds_the_session_and_show_is_not() {
        use crate::outcome::Outcome;
        use crate::prompt::ScriptedPrompter;
        use crate::testkit::{write, Fixture};
        use zync_db::FileState;
        const ID: &str = "10c4-0000-lock";
        let fx = Fixture::new();
        fx.e_write("f.txt", b"base\n");
        fx.stage(
            ID,
            &[
                write("f.txt", b"R\n", Some(b"base\n")),
                write("new/g.txt", b"g\n", None),
            ],
        );
        let mut p = ScriptedPrompter::new([]);
        let held = SessionLock::acquire(&fx.db, ID, "apply").expect("hold");
        // By a prefix of the id, too: the lock is the session's, whatever names it.
        for args in [
            &["apply", ID, "--non-interactive", "--force"][..],
            &["apply", &ID[..6], "--non-interactive"],
            &["undo", ID, "--force"],
            &["drop", ID],
        ] {
            let (r, out) = fx.run(args, &mut p);
            let err = format!("{:#}", r.expect_err("refused"));
            assert!(
                err.contains(&format!("session {ID} is busy"))
                    && err.contains(&format!("pid {}", std::process::id())),
                "{args:?}: {err}\n{out}"
            );
        }
        assert_eq!(fx.e_read("f.txt").as_deref(), Some(&b"base\n"[..]));
        assert!(!fx.root.join("new").exists());
        assert_eq!(fx.state(ID, "f.txt"), FileState::Staged);
        let (r, out) = fx.run(&["show", ID], &mut p);
        assert!(r.is_ok(), "show reads without the lock: {out}");
        drop(held);

        let (r, out) = fx.run(&["apply", ID, "--non-interactive"], &mut p);
        assert_eq!(r.expect("apply once free"), Outcome::Done, "{out}");
        let held = SessionLock::acquire(&fx.db, ID, "undo").expect("hold");
        let (r, _) = fx.run(&["undo", ID], &mut p);
        assert!(format!("{:#}", r.expect_err("refused")).contains("`zync-apply undo`"));
        assert_eq!(fx.e_read("f.txt").as_deref(), Some(&b"R\n"[..]));
        drop(held);
        let (r, out) = fx.run(&["undo", ID], &mut p);
        assert_eq!(r.expect("undo once free"), Outcome::Done, "{out}");
        assert_eq!(fx.e_read("f.txt").as_deref(), Some(&b"base\n"[..]));
    }
}
