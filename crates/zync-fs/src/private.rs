//! Files and directories zync makes for its own state (staging areas, backups, tokens, locks):
//! files 0600 and directories 0700 whatever the process umask, because they hold paths,
//! hashes, client ids and R's content that other local users must not read; and only ever
//! ones this process's user owns, because another user who made one first (in a shared
//! directory such as /tmp) would hand zync state of their choosing (invariant 8,
//! docs/ARCHITECTURE.md).

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use crate::error::FsError;

/// The mode of every file zync creates for its own state.
pub const PRIVATE_FILE_MODE: u32 = 0o600;
/// The mode of every directory zync creates for its own state.
pub const PRIVATE_DIR_MODE: u32 = 0o700;

/// Creates the new file `path` for writing, mode 0600; never replaces an existing file or
/// follows a symlink at `path`.
///
/// The mode given to `open` is only ever narrowed by the umask; it is set again on the open
/// file so that a umask taking the owner's own bits cannot leave zync a file it cannot use.
///
/// # Errors
///
/// [`FsError::Io`] when the file exists or cannot be created.
pub fn create_private_file(path: &Path) -> Result<File, FsError> {
    let file = File::options()
        .write(true)
        .create_new(true)
        .mode(PRIVATE_FILE_MODE)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)
        .map_err(|e| FsError::io("create", path, e))?;
    file.set_permissions(std::fs::Permissions::from_mode(PRIVATE_FILE_MODE))
        .map_err(|e| FsError::io("set mode 600 on", path, e))?;
    Ok(file)
}

/// Creates the directory `path` and its missing ancestors, each new one mode 0700. Directories
/// that already exist are left as they are: they may be ones the user chose (the directory of
/// `--db`), whose mode is the user's business.
///
/// # Errors
///
/// [`FsError::NotADirectory`] when something other than a directory is in the way;
/// [`FsError::Io`] when a directory cannot be created.
pub fn create_private_dir_all(path: &Path) -> Result<(), FsError> {
    let mut missing = Vec::new();
    let mut at = path;
    loop {
        match std::fs::metadata(at) {
            Ok(md) if md.is_dir() => break,
            Ok(_) => return Err(FsError::NotADirectory { path: at.into() }),
            // Below a file: the file is found on the way up and named.
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::NotFound | io::ErrorKind::NotADirectory
                ) =>
            {
                missing.push(at)
            }
            Err(e) => return Err(FsError::io("inspect", at, e)),
        }
        match at.parent() {
            Some(parent) if !parent.as_os_str().is_empty() => at = parent,
            _ => break,
        }
    }
    for dir in missing.into_iter().rev() {
        create_private_dir(dir)?;
    }
    Ok(())
}

/// Creates one directory, mode 0700; another process making it first is fine.
fn create_private_dir(path: &Path) -> Result<(), FsError> {
    match std::fs::DirBuilder::new()
        .mode(PRIVATE_DIR_MODE)
        .create(path)
    {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists && path.is_dir() => return Ok(()),
        Err(e) => return Err(FsError::io("create directory", path, e)),
    }
    // As for files: the umask may have taken the owner's bits too. Opened without following
    // a symlink, so a link swapped in meanwhile is not what gets its mode changed.
    File::options()
        .read(true)
        .custom_flags(libc::O_DIRECTORY | libc::O_NOFOLLOW)
        .open(path)
        .and_then(|dir| dir.set_permissions(std::fs::Permissions::from_mode(PRIVATE_DIR_MODE)))
        .map_err(|e| FsError::io("set mode 700 on", path, e))
}

/// The effective uid of this process: the one owner zync trusts for its own state.
pub fn euid() -> u32 {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() }
}

/// The login name of user `uid`, when the system knows one.
pub fn user_name(uid: u32) -> Option<String> {
    let mut buf = vec![0u8; 1024];
    loop {
        // SAFETY: an all-zero passwd is a valid value for getpwuid_r to fill in.
        let mut pwd: libc::passwd = unsafe { std::mem::zeroed() };
        let mut found: *mut libc::passwd = std::ptr::null_mut();
        // SAFETY: every pointer is valid for the call, and `buf` for its length.
        let rc = unsafe {
            libc::getpwuid_r(
                uid,
                &mut pwd,
                buf.as_mut_ptr().cast(),
                buf.len(),
                &mut found,
            )
        };
        if rc == libc::ERANGE && buf.len() < 1 << 20 {
            buf.resize(buf.len() * 4, 0);
            continue;
        }
        if rc != 0 || found.is_null() || pwd.pw_name.is_null() {
            return None;
        }
        // SAFETY: getpwuid_r succeeded, so pw_name is a NUL-terminated string inside `buf`.
        let name = unsafe { std::ffi::CStr::from_ptr(pwd.pw_name) };
        return Some(name.to_string_lossy().into_owned());
    }
}

/// `uid 65534 (nobody)`, or `uid 65534` when the system has no name for it.
pub fn describe_user(uid: u32) -> String {
    match user_name(uid) {
        Some(name) => format!("uid {uid} ({name})"),
        None => format!("uid {uid}"),
    }
}

/// The message of [`FsError::NotOwned`]: what is wrong, and what to do.
pub(crate) fn not_owned_message(path: &Path, uid: u32) -> String {
    format!(
        "{} belongs to another user, {}, not to this program's user ({}): zync keeps its own \
         state there and trusts only what it made itself. {}",
        path.display(),
        describe_user(uid),
        describe_user(euid()),
        what_to_do(uid)
    )
}

/// What to do about zync state that user `uid` owns: root looking at a user's state runs as
/// that user instead (removing it would break their zync); anyone else removes what another
/// user may have planted, or keeps the state where only they can write. A file system that
/// maps owners (NFS with root_squash, sshfs) shows the user's own files as another's too.
pub fn what_to_do(uid: u32) -> String {
    if euid() == 0 {
        let who = user_name(uid).unwrap_or_else(|| uid.to_string());
        format!(
            "If it is that user's zync state, run this as them (`sudo -u {who} ...`) rather \
             than as root; if another user put it there to take over zync's state, remove it"
        )
    } else {
        "Remove it (another user may have put it there to take over zync's state), or choose \
         a --db in a directory only you can write; on a network file system that maps owners \
         (NFS with root_squash, sshfs), keep zync's state on a local disk"
            .to_string()
    }
}

/// Refuses `meta`, what is at `path` (a file or directory zync keeps its own state in), when
/// another user owns it.
///
/// # Errors
///
/// [`FsError::NotOwned`] naming the path and its owner.
pub fn check_owner(path: &Path, meta: &std::fs::Metadata) -> Result<(), FsError> {
    if meta.uid() == euid() {
        Ok(())
    } else {
        Err(FsError::NotOwned {
            path: path.to_path_buf(),
            uid: meta.uid(),
        })
    }
}

/// Opens `path` without following a symlink there, for a look at what it is.
fn open_nofollow(path: &Path, flags: i32) -> Result<File, FsError> {
    File::options()
        .read(true)
        .custom_flags(flags | libc::O_NOFOLLOW)
        .open(path)
        .map_err(|e| match e.raw_os_error() {
            Some(libc::ELOOP) => FsError::SymlinkInPath { path: path.into() },
            // With O_DIRECTORY a symlink is "not a directory" too: say which it is.
            Some(libc::ENOTDIR)
                if std::fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_symlink()) =>
            {
                FsError::SymlinkInPath { path: path.into() }
            }
            Some(libc::ENOTDIR) => FsError::NotADirectory { path: path.into() },
            _ => FsError::io("open", path, e),
        })
}

/// Takes the group and other bits off `path`, a file or directory of zync's own state made by
/// an older zync under the default umask, so that what it holds stops being readable by other
/// users. A missing path is left alone; a symlink, or what another user owns, is refused: the
/// staging area must be a directory this user made (another user who made it first would
/// own everything later staged and backed up in it).
///
/// # Errors
///
/// [`FsError::SymlinkInPath`] for a symlink, [`FsError::NotOwned`] for another user's file or
/// directory, [`FsError::Io`] when the mode cannot be changed.
pub fn make_private(path: &Path) -> Result<(), FsError> {
    // A path-only descriptor: nothing is opened for reading, and what is looked at is what
    // gets its mode changed.
    let handle = match open_nofollow(path, libc::O_PATH) {
        Ok(handle) => handle,
        Err(FsError::Io { source, .. }) if source.kind() == io::ErrorKind::NotFound => {
            return Ok(())
        }
        Err(e) => return Err(e),
    };
    let md = handle
        .metadata()
        .map_err(|e| FsError::io("inspect", path, e))?;
    if md.file_type().is_symlink() {
        return Err(FsError::SymlinkInPath { path: path.into() });
    }
    check_owner(path, &md)?;
    let mode = md.permissions().mode() & 0o7777;
    if mode & 0o077 == 0 {
        return Ok(());
    }
    let private_mode = std::fs::Permissions::from_mode(mode & 0o700);
    let through = PathBuf::from(format!("/proc/self/fd/{}", handle.as_raw_fd()));
    match std::fs::set_permissions(&through, private_mode.clone()) {
        // No /proc: by path, as it was ours a moment ago.
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            std::fs::set_permissions(path, private_mode)
        }
        other => other,
    }
    .map_err(|e| FsError::io("take group and other access off", path, e))
}

/// Checks that the directory `path`, one zync keeps its own state in, is a directory of this
/// user's and no symlink; returns false when nothing is there.
///
/// # Errors
///
/// [`FsError::SymlinkInPath`], [`FsError::NotADirectory`], [`FsError::NotOwned`], or an I/O
/// error.
pub fn check_own_dir(path: &Path) -> Result<bool, FsError> {
    let md = match std::fs::symlink_metadata(path) {
        Ok(md) => md,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(FsError::io("inspect", path, e)),
    };
    if md.file_type().is_symlink() {
        return Err(FsError::SymlinkInPath { path: path.into() });
    }
    if !md.is_dir() {
        return Err(FsError::NotADirectory { path: path.into() });
    }
    check_owner(path, &md)?;
    Ok(true)
}

/// Creates `top` and the directories below it down to `path`, as [`create_private_dir_all`]
/// does (each new one 0700; missing directories above `top`, which are the user's, too), but
/// accepts one of them that already exists only when it is a directory of this user's, no
/// symlink, and not writable by other users. `top` is where zync's own state begins
/// (the staging area, `<db>.staging`), `path` is below it (a session's directory).
///
/// # Errors
///
/// [`FsError::NotOwned`] for another user's directory, [`FsError::SymlinkInPath`] or
/// [`FsError::NotADirectory`] for something else in the way, or an I/O error (also when
/// `path` is not below `top`).
pub fn create_own_dir_all(top: &Path, path: &Path) -> Result<(), FsError> {
    let below = path.strip_prefix(top).map_err(|_| {
        FsError::io(
            "create",
            path,
            io::Error::new(
                io::ErrorKind::InvalidInput,
                "it is not below zync's own state",
            ),
        )
    })?;
    if let Some(parent) = top.parent().filter(|p| !p.as_os_str().is_empty()) {
        create_private_dir_all(parent)?;
    }
    own_dir(top)?;
    let mut at = top.to_path_buf();
    for part in below.components() {
        at.push(part);
        own_dir(&at)?;
    }
    Ok(())
}

/// Creates the directory `path` (its parent must exist), mode 0700, or accepts the one there
/// when it is this user's and nobody else may write in it. An existing one's mode is never
/// changed here: only the staging area's, at the daemon's start ([`make_private`]), where it
/// is known to be zync's own and no directory a caller named by mistake (/tmp).
fn own_dir(path: &Path) -> Result<(), FsError> {
    let made = match std::fs::DirBuilder::new()
        .mode(PRIVATE_DIR_MODE)
        .create(path)
    {
        Ok(()) => true,
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => false,
        Err(e) => return Err(FsError::io("create directory", path, e)),
    };
    // Looked at (and changed) through one handle, never through a symlink.
    let dir = open_nofollow(path, libc::O_DIRECTORY)?;
    let md = dir
        .metadata()
        .map_err(|e| FsError::io("inspect", path, e))?;
    check_owner(path, &md)?;
    let mode = md.permissions().mode() & 0o7777;
    if made {
        // The umask may have taken the owner's own bits.
        if mode != PRIVATE_DIR_MODE {
            dir.set_permissions(std::fs::Permissions::from_mode(PRIVATE_DIR_MODE))
                .map_err(|e| FsError::io("set mode 700 on", path, e))?;
        }
    } else if mode & 0o022 != 0 {
        return Err(FsError::io(
            "use",
            path,
            io::Error::other(format!(
                "other users may create and remove files in it (mode {mode:o}); run `chmod \
                 700` on it"
            )),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Root looking at a user's state is told to run as that user, not to remove it (which
    /// would break their zync); anyone else to remove what may have been planted.
    #[test]
    fn what_to_do_about_another_users_state_depends_on_who_asks() {
        let advice = what_to_do(65534);
        if euid() == 0 {
            assert!(advice.contains("sudo -u nobody"), "{advice}");
            assert!(
                advice.starts_with("If it is that user's zync state"),
                "{advice}"
            );
        } else {
            assert!(advice.starts_with("Remove it"), "{advice}");
        }
        assert!(advice.to_lowercase().contains("remove it"), "{advice}");
    }
    use std::os::unix::fs::MetadataExt;

    /// In octal, so that a failure reads `644`, not `420`.
    fn mode(path: &Path) -> String {
        format!(
            "{:o}",
            std::fs::symlink_metadata(path).expect("stat").mode() & 0o7777
        )
    }

    #[test]
    fn private_files_are_0600_and_never_replace_anything() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let path = tmp.path().join("state");
        let mut file = create_private_file(&path).expect("create");
        io::Write::write_all(&mut file, b"secret").expect("write");
        assert_eq!(mode(&path), "600", "mode of {}", path.display());
        assert!(
            create_private_file(&path).is_err(),
            "an existing file must not be replaced"
        );
        assert_eq!(std::fs::read(&path).expect("read"), b"secret");
        let link = tmp.path().join("link");
        std::os::unix::fs::symlink(tmp.path().join("target"), &link).expect("symlink");
        assert!(create_private_file(&link).is_err(), "followed a symlink");
        assert!(!tmp.path().join("target").exists());
    }

    #[test]
    fn new_directories_are_0700_and_existing_ones_are_left_alone() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let chosen = tmp.path().join("chosen");
        std::fs::create_dir(&chosen).expect("mkdir");
        std::fs::set_permissions(&chosen, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        let deep = chosen.join("a/b/c");
        create_private_dir_all(&deep).expect("create");
        for dir in ["a", "a/b", "a/b/c"] {
            assert_eq!(mode(&chosen.join(dir)), "700", "mode of {dir}");
        }
        assert_eq!(mode(&chosen), "755", "the user's directory was changed");
        create_private_dir_all(&deep).expect("existing is fine");
        std::fs::write(chosen.join("file"), b"x").expect("write");
        assert!(matches!(
            create_private_dir_all(&chosen.join("file/below")),
            Err(FsError::NotADirectory { .. })
        ));
    }

    /// A directory others may write in (a caller naming /tmp as the staging area, say) is
    /// not zync's own: refused, and its mode left exactly as it was.
    #[test]
    fn an_existing_directory_others_may_write_in_is_refused_and_left_as_it_is() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let shared = tmp.path().join("shared");
        std::fs::create_dir(&shared).expect("mkdir");
        std::fs::set_permissions(&shared, std::fs::Permissions::from_mode(0o1777)).expect("chmod");
        let err = create_own_dir_all(&shared, &shared.join("s1")).expect_err("shared");
        assert!(
            err.to_string()
                .contains("other users may create and remove files in it"),
            "{err}"
        );
        assert_eq!(mode(&shared), "1777", "its mode was changed");
        assert!(!shared.join("s1").exists());
        // Made here: 0700 at every level, and fine to use again.
        let area = tmp.path().join("sync.db.staging");
        create_own_dir_all(&area, &area.join("s1")).expect("create");
        create_own_dir_all(&area, &area.join("s1")).expect("again");
        assert_eq!(
            (mode(&area), mode(&area.join("s1"))),
            ("700".into(), "700".into())
        );
    }

    /// Another user made the staging area (or a session's directory in it) first: refused,
    /// naming them, and nothing is made inside; a symlink there is not followed.
    #[test]
    fn another_users_directory_or_a_symlink_is_not_zyncs_own() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let area = tmp.path().join("sync.db.staging");
        let elsewhere = tmp.path().join("elsewhere");
        std::fs::create_dir(&elsewhere).expect("mkdir");
        std::os::unix::fs::symlink(&elsewhere, &area).expect("symlink");
        assert!(matches!(
            create_own_dir_all(&area, &area.join("s1")),
            Err(FsError::SymlinkInPath { .. })
        ));
        assert!(matches!(
            make_private(&area),
            Err(FsError::SymlinkInPath { .. })
        ));
        assert!(!elsewhere.join("s1").exists(), "made through the symlink");
        std::fs::remove_file(&area).expect("rm");
        if euid() != 0 {
            eprintln!("skipped the other user's part: making a directory of theirs needs root");
            return;
        }
        std::fs::create_dir(&area).expect("mkdir");
        std::fs::set_permissions(&area, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        std::os::unix::fs::chown(&area, Some(65534), Some(65534)).expect("chown");
        for err in [
            create_own_dir_all(&area, &area.join("s1")).expect_err("theirs"),
            make_private(&area).expect_err("theirs"),
        ] {
            assert!(
                matches!(err, FsError::NotOwned { uid: 65534, .. }),
                "{err:?}"
            );
            let msg = err.to_string();
            assert!(
                msg.contains("belongs to another user, uid 65534")
                    && msg.to_lowercase().contains("remove it"),
                "{msg}"
            );
        }
        assert!(!area.join("s1").exists());
        assert_eq!(mode(&area), "755", "their mode was changed");
    }

    #[test]
    fn make_private_takes_group_and_other_bits_off() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let file = tmp.path().join("old.db");
        std::fs::write(&file, b"x").expect("write");
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).expect("chmod");
        make_private(&file).expect("tighten");
        assert_eq!(mode(&file), "600");
        let dir = tmp.path().join("old.staging");
        std::fs::create_dir(&dir).expect("mkdir");
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        make_private(&dir).expect("tighten");
        assert_eq!(mode(&dir), "700");
        make_private(&tmp.path().join("missing")).expect("missing is fine");
    }
}
