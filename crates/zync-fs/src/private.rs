//! Files and directories zync makes for its own state (staging areas, backups, tokens): files
//! 0600 and directories 0700 whatever the process umask, because they hold paths, hashes,
//! client ids and R's content that other local users must not read (invariant 8, docs/ARCHITECTURE.md).

use std::fs::File;
use std::io;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;

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

/// Takes the group and other bits off `path`, a file or directory of zync's own state made by
/// an older zync under the default umask, so that what it holds stops being readable by other
/// users. A missing path or a symlink is left alone.
///
/// # Errors
///
/// [`FsError::Io`] when the mode cannot be changed (for example: another user owns it).
pub fn make_private(path: &Path) -> Result<(), FsError> {
    let md = match std::fs::symlink_metadata(path) {
        Ok(md) => md,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(FsError::io("inspect", path, e)),
    };
    let mode = md.permissions().mode() & 0o7777;
    if md.file_type().is_symlink() || mode & 0o077 == 0 {
        return Ok(());
    }
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode & 0o700))
        .map_err(|e| FsError::io("take group and other access off", path, e))
}

#[cfg(test)]
mod tests {
    use super::*;
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
