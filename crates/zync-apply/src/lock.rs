//! One `apply` or `undo` at a time on a session. Two runs interleaving their steps on one
//! session would each back up, write and record the same files, and recovery (`recover.rs`)
//! would take the other run's live intent records for a crash. So each run holds an exclusive
//! `flock` on `apply.lock` in the session's staging directory from before it looks at the
//! session's files until it has finished; a second run is refused at once, naming the holder.
//!
//! An flock, not a database row: the kernel releases it when its holder ends, even by
//! `kill -9` or a power cut, so a dead run can never leave the session locked. The file only
//! carries who holds it (pid, command, start), for the message. `show` reads and takes no lock.

use std::fs::File;
use std::io::{self, Read, Seek, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;

use anyhow::{bail, Context};
use rustix::fs::FlockOperation;
use serde::{Deserialize, Serialize};

/// The lock file's name inside the session directory.
pub(crate) const LOCK_FILE: &str = "apply.lock";

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
    _file: File,
}

impl SessionLock {
    /// Locks session `session_id` of the database `db` for `command` (`apply`, `undo`).
    ///
    /// # Errors
    ///
    /// Another run holds the lock (the message names it), or the lock file cannot be
    /// created or opened (it is a symlink or not a regular file, or an I/O error).
    pub(crate) fn acquire(db: &Path, session_id: &str, command: &str) -> anyhow::Result<Self> {
        let dir = zync_db::session_dir(db, session_id);
        // The session directory is zync's own and private; a session whose staged files are
        // gone may have lost it, and the lock still needs a place.
        zync_fs::create_private_dir_all(&dir)
            .with_context(|| format!("cannot create {}", dir.display()))?;
        let path = dir.join(LOCK_FILE);
        let mut file = open_lock_file(&path)?;
        match rustix::fs::flock(&file, FlockOperation::NonBlockingLockExclusive) {
            Ok(()) => {}
            Err(e) if e == rustix::io::Errno::WOULDBLOCK => {
                bail!("{}", busy_message(session_id, &path, &mut file))
            }
            Err(e) => {
                return Err(io::Error::from(e))
                    .with_context(|| format!("cannot lock {}", path.display()))
            }
        }
        let holder = Holder {
            pid: std::process::id(),
            command: command.to_string(),
            started_unix: chrono::Local::now().timestamp(),
        };
        // Only for the message of a refused run: a failure here changes nothing that matters.
        let note = serde_json::to_vec(&holder).unwrap_or_default();
        let written = file
            .set_len(0)
            .and_then(|()| file.rewind())
            .and_then(|()| file.write_all(&note));
        if let Err(e) = written {
            tracing::warn!("cannot note the holder in {}: {e}", path.display());
        }
        Ok(SessionLock { _file: file })
    }
}

/// Opens (creating, mode 0600) the lock file without following a symlink at it, and checks
/// that it is a regular file.
fn open_lock_file(path: &Path) -> anyhow::Result<File> {
    let file = File::options()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(zync_fs::PRIVATE_FILE_MODE)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(path)
        .map_err(|e| match e.raw_os_error() {
            Some(libc::ELOOP) => anyhow::anyhow!(
                "the lock file {} is a symlink; zync never follows one there: remove it",
                path.display()
            ),
            _ => anyhow::Error::new(e).context(format!("cannot open {}", path.display())),
        })?;
    let md = file
        .metadata()
        .with_context(|| format!("cannot inspect {}", path.display()))?;
    if !md.is_file() {
        bail!(
            "the lock file {} is not a regular file: remove it",
            path.display()
        );
    }
    if md.permissions().mode() & 0o7777 != zync_fs::PRIVATE_FILE_MODE {
        file.set_permissions(std::fs::Permissions::from_mode(zync_fs::PRIVATE_FILE_MODE))
            .with_context(|| format!("cannot set mode 600 on {}", path.display()))?;
    }
    Ok(file)
}

/// The refusal: who holds the lock, when it is known.
fn busy_message(session_id: &str, path: &Path, file: &mut File) -> String {
    let mut text = String::new();
    let holder = file
        .read_to_string(&mut text)
        .ok()
        .and_then(|_| serde_json::from_str::<Holder>(&text).ok());
    let who = match holder {
        Some(h) => format!(
            "`zync-apply {}` (pid {}, started {})",
            h.command,
            h.pid,
            crate::session::local_time(h.started_unix)
        ),
        None => "another zync-apply".to_string(),
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
    zync_db::session_dir(db, session_id).join(LOCK_FILE)
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
