//! Setting the attributes zync syncs (permission bits, modification time) and flushing a
//! directory, without following symlinks.

use crate::beneath::{chmod_fd, times};
use crate::error::FsError;
use rustix::fs::{AtFlags, Mode, OFlags};
use std::fs::File;
use std::io;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

/// Sets the permission bits (`mode & 0o7777`) of `path`. A symlink is left alone: Linux has no
/// modes on links, and `chmod` would change the link's target instead. The entry is opened
/// with `O_PATH | O_NOFOLLOW` and changed through that descriptor, so a symlink swapped in at
/// the last component is never followed; directories above it are looked up by path, so
/// writers into a synced root use [`crate::set_mode_beneath`] instead.
///
/// # Errors
///
/// [`FsError::Io`] when `path` cannot be inspected or changed.
pub fn set_mode(path: &Path, mode: u32) -> Result<(), FsError> {
    let fd = rustix::fs::open(
        path,
        OFlags::PATH | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| {
        FsError::io(
            "inspect",
            path,
            io::Error::from_raw_os_error(e.raw_os_error()),
        )
    })?;
    chmod_fd(std::os::fd::AsFd::as_fd(&fd), mode)
        .map_err(|e| FsError::io("set the mode of", path, e))
}

/// Sets the modification time of `path` (nanoseconds since the epoch) without following a
/// symlink at its last component; the access time is left alone. Writers into a synced root
/// use [`crate::set_mtime_beneath`], which follows no symlink above it either.
///
/// # Errors
///
/// [`FsError::Io`] when the time cannot be set.
pub fn set_mtime(path: &Path, mtime_ns: i64) -> Result<(), FsError> {
    rustix::fs::utimensat(
        rustix::fs::CWD,
        path,
        &times(mtime_ns),
        AtFlags::SYMLINK_NOFOLLOW,
    )
    .map_err(|e| {
        FsError::io(
            "set the mtime of",
            path,
            io::Error::from_raw_os_error(e.raw_os_error()),
        )
    })
}

/// Sets the modification time of an open file; `path` is only for the error.
pub(crate) fn set_file_mtime(file: &File, path: &Path, mtime_ns: i64) -> Result<(), FsError> {
    rustix::fs::futimens(file, &times(mtime_ns)).map_err(|e| {
        FsError::io(
            "set the mtime of",
            path,
            io::Error::from_raw_os_error(e.raw_os_error()),
        )
    })
}

/// Flushes a directory's entries to disk, making renames into it durable. Call once per batch of
/// [`crate::AtomicFile::commit`]s.
///
/// # Errors
///
/// [`FsError::Io`] when the directory cannot be opened or synced.
pub fn fsync_dir(path: &Path) -> Result<(), FsError> {
    let dir = File::options()
        .read(true)
        .custom_flags(libc::O_DIRECTORY)
        .open(path)
        .map_err(|e| FsError::io("open directory", path, e))?;
    dir.sync_all()
        .map_err(|e| FsError::io("fsync directory", path, e))
}

/// Flushes every file system that holds one of `paths` with one `syncfs` each: all data written
/// and every rename made on it become durable at once. Cheaper than an fsync per file when a
/// batch holds many small files (one journal commit instead of hundreds). Paths that no longer
/// exist are skipped.
///
/// # Errors
///
/// [`FsError::Io`] when a file system cannot be synced (a write-back error: some data may not
/// have reached the disk).
pub fn sync_filesystems<'a>(paths: impl IntoIterator<Item = &'a Path>) -> Result<(), FsError> {
    use std::os::unix::fs::MetadataExt;
    let mut seen = std::collections::HashSet::new();
    for path in paths {
        let Ok(md) = std::fs::metadata(path) else {
            continue;
        };
        // Directories and files only, opened without waiting: a path another user swapped
        // for a symlink to a FIFO must not block the open.
        if !(md.is_dir() || md.is_file()) || !seen.insert(md.dev()) {
            continue;
        }
        let file = File::options()
            .read(true)
            .custom_flags(libc::O_NONBLOCK)
            .open(path)
            .map_err(|e| FsError::io("open", path, e))?;
        sync_fs_of(&file).map_err(|e| FsError::io("sync the file system of", path, e))?;
    }
    Ok(())
}

#[cfg(target_os = "linux")]
fn sync_fs_of(file: &File) -> io::Result<()> {
    rustix::fs::syncfs(file).map_err(|e| io::Error::from_raw_os_error(e.raw_os_error()))
}

#[cfg(not(target_os = "linux"))]
fn sync_fs_of(_file: &File) -> io::Result<()> {
    // No per-file-system sync outside Linux: flush everything.
    // SAFETY: sync takes no arguments and cannot fail.
    unsafe { libc::sync() };
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;
    use std::os::unix::fs::{symlink, MetadataExt};

    fn mtime_ns(path: &Path) -> i64 {
        let md = fs::symlink_metadata(path).expect("stat");
        md.mtime() * 1_000_000_000 + md.mtime_nsec()
    }

    #[test]
    fn mode_is_set_and_symlinks_are_skipped() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let f = tmp.path().join("f");
        fs::write(&f, b"x").expect("write");
        set_mode(&f, 0o100604).expect("set_mode");
        assert_eq!(fs::metadata(&f).expect("stat").mode() & 0o7777, 0o604);
        let l = tmp.path().join("l");
        symlink(&f, &l).expect("symlink");
        set_mode(&l, 0o777).expect("set_mode on a symlink is a no-op");
        assert_eq!(
            fs::metadata(&f).expect("stat").mode() & 0o7777,
            0o604,
            "followed the link"
        );
        assert!(set_mode(&tmp.path().join("missing"), 0o644).is_err());
    }

    #[test]
    fn sync_filesystems_skips_missing_paths() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let f = tmp.path().join("f");
        fs::write(&f, b"x").expect("write");
        let missing = tmp.path().join("missing");
        sync_filesystems([tmp.path(), f.as_path(), missing.as_path()]).expect("syncfs");
    }

    #[test]
    fn sync_filesystems_never_waits_on_a_fifo_put_where_a_directory_was() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let fifo = tmp.path().join("fifo");
        crate::testkit::fifo(&fifo);
        // Another user swapped a touched directory for a symlink to a FIFO: opening it for
        // reading would wait for a writer that never comes.
        let swapped = tmp.path().join("dir");
        symlink(&fifo, &swapped).expect("symlink");
        sync_filesystems([swapped.as_path(), fifo.as_path()]).expect("syncfs");
    }

    #[test]
    fn mtime_is_set_without_following() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let f = tmp.path().join("f");
        fs::write(&f, b"x").expect("write");
        let t = 1_700_000_000_123_456_789;
        set_mtime(&f, t).expect("set_mtime");
        assert_eq!(mtime_ns(&f), t);
        set_mtime(&f, -1_500_000_000).expect("before the epoch");
        assert_eq!(mtime_ns(&f), -1_500_000_000);

        let l = tmp.path().join("l");
        symlink(&f, &l).expect("symlink");
        set_mtime(&l, 1_000_000_000).expect("set_mtime on link");
        assert_eq!(mtime_ns(&l), 1_000_000_000);
        assert_eq!(mtime_ns(&f), -1_500_000_000, "followed the link");

        let file = fs::File::open(&f).expect("open");
        set_file_mtime(&file, &f, 42).expect("futimens");
        assert_eq!(mtime_ns(&f), 42);
    }

    #[test]
    fn fsync_dir_works_on_dirs_only() {
        let tmp = tempfile::tempdir().expect("tempdir");
        fsync_dir(tmp.path()).expect("fsync");
        let f = tmp.path().join("f");
        fs::write(&f, b"x").expect("write");
        assert!(fsync_dir(&f).is_err());
    }
}
