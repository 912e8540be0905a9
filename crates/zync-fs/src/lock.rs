//! Exclusive locks held for a whole run: one writer per client database, one apply, undo or
//! expiry per staged session. An `flock` on a private lock file, not a marker file or a database row: the
//! kernel releases it when its holder ends, even by `kill -9` or a power cut, so a dead run
//! can never leave anything locked. The file carries a note from its holder (who it is, for
//! the message a refused run prints), written once the lock is held.

use std::fs::File;
use std::io::{self, Read, Seek, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;

use rustix::fs::FlockOperation;

use crate::private::PRIVATE_FILE_MODE;

/// A held lock, released when dropped (or when the process ends).
#[derive(Debug)]
pub struct LockFile {
    _file: File,
}

/// What [`try_lock`] found.
#[derive(Debug)]
pub enum Locked {
    /// The lock is ours until the value is dropped.
    Held(LockFile),
    /// Someone else holds it; their note (empty when it cannot be read).
    Busy(String),
}

/// Takes the exclusive lock on `path` without waiting, creating the file (mode 0600) when it
/// is missing; on success writes `note` into it for whoever is refused next.
///
/// # Errors
///
/// `path` is a symlink (never followed) or not a regular file, or an I/O error.
pub fn try_lock(path: &Path, note: &[u8]) -> io::Result<Locked> {
    let mut file = open_lock_file(path)?;
    match rustix::fs::flock(&file, FlockOperation::NonBlockingLockExclusive) {
        Ok(()) => {}
        Err(e) if e == rustix::io::Errno::WOULDBLOCK => {
            let mut text = String::new();
            // The note is only for the message: an unreadable one leaves it empty.
            let _ = file.read_to_string(&mut text);
            return Ok(Locked::Busy(text));
        }
        Err(e) => return Err(io::Error::from(e)),
    }
    let written = file
        .set_len(0)
        .and_then(|()| file.rewind())
        .and_then(|()| file.write_all(note));
    if let Err(e) = written {
        tracing::warn!("cannot note the holder in {}: {e}", path.display());
    }
    Ok(Locked::Held(LockFile { _file: file }))
}

/// As [`try_lock`] on the lock file `name` inside the directory `dir`, creating `dir` (and
/// any missing parent, mode 0700) first when it is missing; `dir` and its parent (a session's
/// directory in the staging area) must otherwise be directories of this user's. A staged session's lock lives in
/// its own directory, which may be gone (its staged files removed) or not made yet; the lock
/// must be taken all the same, or a run that creates the directory meanwhile would hold a
/// lock nobody else sees. `zync-apply` (apply, undo, drop, gc) and the daemon's expiry at
/// start take a session's lock with this one function.
///
/// # Errors
///
/// `dir` cannot be created (a file or something else is in the way, or an I/O error), or as
/// [`try_lock`].
pub fn try_lock_in(dir: &Path, name: &str, note: &[u8]) -> io::Result<Locked> {
    // The session's directory and the staging area above it are zync's own: made by this
    // user, or refused (another user's would let them hold or forge the lock, and own what
    // is staged and backed up there).
    let top = dir
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(dir);
    crate::private::create_own_dir_all(top, dir).map_err(io::Error::other)?;
    try_lock(&dir.join(name), note)
}

/// The lock file that goes with the file `owner` (a database): `<owner>.lock` beside it. The
/// daemon locks its database with it; `zync-apply wait` asks whether that daemon runs.
pub fn path_beside(owner: &Path) -> std::path::PathBuf {
    let mut name = owner.file_name().unwrap_or_default().to_os_string();
    name.push(".lock");
    owner.with_file_name(name)
}

/// Whether the process a lock file's note names (`pid N`, as the daemon writes it) is alive
/// and holds that lock file open: see [`holder`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Holder {
    /// Process `pid` has the lock file open: it holds the lock, or is about to.
    Running(u32),
    /// Nobody holds it: there is no lock file, or the process its note names is gone, or it
    /// has another file open under that pid (the pid was reused).
    Gone,
    /// Cannot tell: no pid in the note, another user's process or lock file, or no `/proc`.
    Unknown,
}

/// Who holds the lock file at `path`, found without taking the lock, so that asking can never
/// make its holder's own attempt fail: the pid its note names, and whether `/proc/PID/fd` has
/// that very file (same device and inode) open. A lock is held for as long as its file is
/// open ([`LockFile`]).
pub fn holder(path: &Path) -> Holder {
    use std::os::unix::fs::MetadataExt;
    let lock = match std::fs::symlink_metadata(path) {
        // Another user's file names whom they like.
        Ok(meta) if meta.is_file() && meta.uid() == crate::private::euid() => meta,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Holder::Gone,
        _ => return Holder::Unknown,
    };
    let note = File::options()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(path)
        .and_then(|file| {
            let mut text = String::new();
            file.take(256).read_to_string(&mut text).map(|_| text)
        });
    let Some(pid) = note.ok().as_deref().and_then(pid_in_note) else {
        return Holder::Unknown;
    };
    if !Path::new("/proc/self/fd").is_dir() {
        return Holder::Unknown;
    }
    let fds = match std::fs::read_dir(format!("/proc/{pid}/fd")) {
        Ok(fds) => fds,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Holder::Gone,
        Err(_) => return Holder::Unknown,
    };
    let holds = fds.filter_map(Result::ok).any(|fd| {
        std::fs::metadata(fd.path()).is_ok_and(|m| m.dev() == lock.dev() && m.ino() == lock.ino())
    });
    if holds {
        Holder::Running(pid)
    } else {
        Holder::Gone
    }
}

/// The pid in a lock file's note: the number after `pid `.
fn pid_in_note(note: &str) -> Option<u32> {
    let (_, rest) = note.split_once("pid ")?;
    let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
    digits.parse().ok().filter(|&pid| pid > 0)
}

/// Opens (creating, mode 0600) the lock file without following a symlink at it, and checks
/// that it is a regular file of this user's: another user who made it first (in a shared
/// directory) could hold its lock for ever, with a note naming whom they like (invariant 8).
fn open_lock_file(path: &Path) -> io::Result<File> {
    let file = File::options()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(PRIVATE_FILE_MODE)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(path)
        .map_err(|e| match e.raw_os_error() {
            Some(libc::ELOOP) => io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "the lock file {} is a symlink; zync never follows one there: remove it",
                    path.display()
                ),
            ),
            _ => io::Error::new(e.kind(), format!("cannot open {}: {e}", path.display())),
        })?;
    let md = file.metadata()?;
    if !md.is_file() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!(
                "the lock file {} is not a regular file: remove it",
                path.display()
            ),
        ));
    }
    // Before the mode is touched: root may change another user's file.
    crate::private::check_owner(path, &md)
        .map_err(|e| io::Error::new(io::ErrorKind::PermissionDenied, e.to_string()))?;
    if md.permissions().mode() & 0o7777 != PRIVATE_FILE_MODE {
        file.set_permissions(std::fs::Permissions::from_mode(PRIVATE_FILE_MODE))?;
    }
    Ok(file)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Whether this test runs as root, which making another user's file needs.
    fn root_or_skip() -> bool {
        let root = crate::private::euid() == 0;
        if !root {
            eprintln!("skipped: making a file of another user's needs root");
        }
        root
    }

    /// Another user made the lock file first (a sticky shared directory holding --db), and
    /// holds its lock with a note naming a client that does not exist: the run is refused
    /// with the owner named, never told "busy" with their note; its mode is left alone.
    #[test]
    fn another_users_lock_file_is_refused_naming_its_owner() {
        if !root_or_skip() {
            return;
        }
        let tmp = tempfile::tempdir().expect("tempdir");
        let path = tmp.path().join("sync.db.lock");
        std::fs::write(&path, "pid 1 (a forged holder)").expect("write");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).expect("chmod");
        std::os::unix::fs::chown(&path, Some(65534), Some(65534)).expect("chown");
        let theirs = File::open(&path).expect("open");
        rustix::fs::flock(&theirs, FlockOperation::NonBlockingLockExclusive).expect("flock");
        let err = try_lock(&path, b"mine").expect_err("another user's lock file");
        let msg = err.to_string();
        assert!(
            msg.contains("belongs to another user, uid 65534")
                && msg.to_lowercase().contains("remove it"),
            "{msg}"
        );
        let mode = std::fs::metadata(&path).expect("stat").permissions().mode();
        assert_eq!(mode & 0o7777, 0o644, "their file's mode was changed");
        assert_eq!(holder(&path), Holder::Unknown, "their note was believed");
        // Their directory in the staging area is refused the same way.
        let session = tmp.path().join("staging/s1");
        std::fs::create_dir_all(&session).expect("mkdir");
        std::os::unix::fs::chown(&session, Some(65534), Some(65534)).expect("chown");
        let err = try_lock_in(&session, "x.lock", b"n").expect_err("their session directory");
        assert!(err.to_string().contains("belongs to another user"), "{err}");
        assert!(!session.join("x.lock").exists());
    }

    #[test]
    fn a_second_lock_is_busy_with_the_first_note_until_the_first_is_dropped() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let path = tmp.path().join("x.lock");
        let Locked::Held(first) = try_lock(&path, b"first").expect("lock") else {
            panic!("the first lock must be ours");
        };
        match try_lock(&path, b"second").expect("try") {
            Locked::Busy(note) => assert_eq!(note, "first"),
            Locked::Held(_) => panic!("two holders"),
        }
        drop(first);
        assert!(matches!(
            try_lock(&path, b"third").expect("try"),
            Locked::Held(_)
        ));
        let mode = std::fs::metadata(&path).expect("stat").permissions().mode();
        assert_eq!(mode & 0o7777, 0o600);
    }

    #[test]
    fn the_holder_is_the_live_process_its_note_names_while_it_has_the_file_open() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let db = tmp.path().join("sync.db");
        let path = path_beside(&db);
        assert_eq!(path, tmp.path().join("sync.db.lock"));
        assert_eq!(holder(&path), Holder::Gone, "no lock file yet");
        let me = std::process::id();
        let Locked::Held(lock) = try_lock(&path, format!("pid {me}").as_bytes()).expect("lock")
        else {
            panic!("the lock must be ours");
        };
        assert_eq!(holder(&path), Holder::Running(me));
        drop(lock);
        // The note still names this process, which no longer has the file open.
        assert_eq!(holder(&path), Holder::Gone);
        // A pid that names nobody.
        std::fs::write(&path, format!("pid {}", u32::MAX - 1)).expect("note");
        assert_eq!(holder(&path), Holder::Gone);
        std::fs::write(&path, "zync-apply undo").expect("note");
        assert_eq!(holder(&path), Holder::Unknown, "no pid in the note");
    }

    #[test]
    fn a_pid_is_read_from_a_note() {
        assert_eq!(pid_in_note("pid 42"), Some(42));
        assert_eq!(pid_in_note("zync-apply (pid 7, since 12:00)"), Some(7));
        assert_eq!(pid_in_note("pid x"), None);
        assert_eq!(pid_in_note("pid 0"), None);
        assert_eq!(pid_in_note(""), None);
    }

    #[test]
    fn a_lock_in_a_missing_directory_makes_it_private_and_is_exclusive() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = tmp.path().join("staging/s1");
        let Locked::Held(first) = try_lock_in(&dir, "x.lock", b"first").expect("lock") else {
            panic!("the first lock must be ours");
        };
        let mode = std::fs::metadata(&dir).expect("stat").permissions().mode();
        assert_eq!(mode & 0o7777, 0o700, "the directory it made");
        match try_lock_in(&dir, "x.lock", b"second").expect("try") {
            Locked::Busy(note) => assert_eq!(note, "first"),
            Locked::Held(_) => panic!("two holders"),
        }
        drop(first);
        assert!(matches!(
            try_lock_in(&dir, "x.lock", b"third").expect("try"),
            Locked::Held(_)
        ));
        let file = tmp.path().join("a-file");
        std::fs::write(&file, "x").expect("write");
        let err = try_lock_in(&file, "x.lock", b"n").expect_err("not a directory");
        assert!(err.to_string().contains("not a directory"), "{err}");
    }

    #[test]
    fn a_symlink_at_the_lock_is_refused() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let target = tmp.path().join("elsewhere");
        std::fs::write(&target, "keep").expect("write");
        let path = tmp.path().join("x.lock");
        std::os::unix::fs::symlink(&target, &path).expect("symlink");
        let err = try_lock(&path, b"n").expect_err("symlink");
        assert!(err.to_string().contains("symlink"), "{err}");
        assert_eq!(std::fs::read(&target).expect("read"), b"keep");
    }
}
