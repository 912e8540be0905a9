//! What zync records about one file system entry (`Meta`), read with `lstat` so that a symlink
//! is described as a symlink and never followed.

use std::io;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::Path;

use zync_proto::Kind;

/// The metadata zync keeps for an entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Meta {
    /// File, dir or symlink.
    pub kind: Kind,
    /// Bytes: the file length, 0 for a directory, the target length for a symlink.
    pub size: u64,
    /// Modification time in nanoseconds since the Unix epoch.
    pub mtime_ns: i64,
    /// Permission bits: `st_mode & 0o7777`.
    pub mode: u32,
    /// The inode number.
    pub inode: u64,
    /// The device holding the entry (`st_dev`): with the inode, which entry this is, also
    /// when a parent was swapped for a directory on another file system.
    pub device: u64,
    /// The symlink target, verbatim; `None` for files and directories.
    pub target: Option<String>,
}

/// The result of [`lstat`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Stat {
    /// Nothing is there (or a parent is not a directory).
    Missing,
    /// A file, directory or symlink.
    Entry(Meta),
    /// Something zync does not sync, with a short description such as `"fifo"`.
    Unsupported(&'static str),
}

/// `lstat`s `path` (never following a symlink) and, for a symlink, reads its target.
///
/// # Errors
///
/// Any I/O error other than `NotFound` and `ENOTDIR`, which both map to [`Stat::Missing`].
pub fn lstat(path: &Path) -> io::Result<Stat> {
    let md = match std::fs::symlink_metadata(path) {
        Ok(md) => md,
        Err(e) if is_missing(&e) => return Ok(Stat::Missing),
        Err(e) => return Err(e),
    };
    meta_from(&md, || std::fs::read_link(path))
}

/// Whether an error means "nothing there": `NotFound`, or `ENOTDIR` (a parent is a file).
pub(crate) fn is_missing(e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::NotFound || e.raw_os_error() == Some(libc::ENOTDIR)
}

/// What [`lstat`] makes of metadata already read (also by the scan, which stats entries
/// relative to their directory); `read_link` is only called for a symlink.
pub(crate) fn meta_from(
    md: &std::fs::Metadata,
    read_link: impl FnOnce() -> io::Result<std::path::PathBuf>,
) -> io::Result<Stat> {
    let ft = md.file_type();
    let (kind, size, target) = if ft.is_file() {
        (Kind::File, md.len(), None)
    } else if ft.is_dir() {
        (Kind::Dir, 0, None)
    } else if ft.is_symlink() {
        let target = match read_link() {
            Ok(t) => t,
            Err(e) if is_missing(&e) => return Ok(Stat::Missing),
            // Replaced by a non-link between the two calls: gone for now; the next scan or
            // event sees the new entry.
            Err(e) if e.kind() == io::ErrorKind::InvalidInput => return Ok(Stat::Missing),
            Err(e) => return Err(e),
        };
        match target.into_os_string().into_string() {
            Ok(t) => (Kind::Symlink, t.len() as u64, Some(t)),
            Err(_) => return Ok(Stat::Unsupported("symlink with non-UTF-8 target")),
        }
    } else if ft.is_fifo() {
        return Ok(Stat::Unsupported("fifo"));
    } else if ft.is_socket() {
        return Ok(Stat::Unsupported("socket"));
    } else if ft.is_block_device() || ft.is_char_device() {
        return Ok(Stat::Unsupported("device"));
    } else {
        return Ok(Stat::Unsupported("unknown file type"));
    };
    Ok(Stat::Entry(Meta {
        kind,
        size,
        mtime_ns: md
            .mtime()
            .saturating_mul(1_000_000_000)
            .saturating_add(md.mtime_nsec()),
        mode: md.mode() & 0o7777,
        inode: md.ino(),
        device: md.dev(),
        target,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::{symlink, PermissionsExt};

    fn entry(path: &Path) -> Meta {
        match lstat(path).expect("lstat") {
            Stat::Entry(m) => m,
            other => panic!("expected an entry at {}, found {other:?}", path.display()),
        }
    }

    #[test]
    fn kinds_round_trip() {
        for k in [Kind::File, Kind::Dir, Kind::Symlink] {
            assert_eq!(Kind::parse(k.as_str()), Some(k));
        }
        assert_eq!(Kind::parse("fifo"), None);
        assert_eq!(Kind::File.as_str(), "file");
    }

    #[test]
    fn file_dir_symlink() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let f = tmp.path().join("f");
        std::fs::write(&f, b"hello").expect("write");
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o640)).expect("chmod");
        let m = entry(&f);
        assert_eq!(
            (m.kind, m.size, m.mode, m.target),
            (Kind::File, 5, 0o640, None)
        );
        let std_md = std::fs::metadata(&f).expect("metadata");
        assert_eq!(m.inode, std_md.ino());
        assert_eq!(
            m.mtime_ns,
            std_md.mtime() * 1_000_000_000 + std_md.mtime_nsec()
        );

        let d = tmp.path().join("d");
        std::fs::create_dir(&d).expect("mkdir");
        let m = entry(&d);
        assert_eq!((m.kind, m.size), (Kind::Dir, 0));

        let l = tmp.path().join("l");
        symlink("../somewhere/else", &l).expect("symlink");
        let m = entry(&l);
        assert_eq!(m.kind, Kind::Symlink);
        assert_eq!(m.size, "../somewhere/else".len() as u64);
        assert_eq!(m.target.as_deref(), Some("../somewhere/else"));
    }

    #[test]
    fn missing_and_not_a_directory() {
        let tmp = tempfile::tempdir().expect("tempdir");
        assert_eq!(
            lstat(&tmp.path().join("nope")).expect("lstat"),
            Stat::Missing
        );
        std::fs::write(tmp.path().join("f"), b"x").expect("write");
        assert_eq!(
            lstat(&tmp.path().join("f/below")).expect("lstat"),
            Stat::Missing
        );
    }

    #[test]
    fn unsupported_types() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let fifo = tmp.path().join("fifo");
        crate::testkit::fifo(&fifo);
        assert_eq!(lstat(&fifo).expect("lstat"), Stat::Unsupported("fifo"));

        let sock = tmp.path().join("sock");
        let _listener = std::os::unix::net::UnixListener::bind(&sock).expect("bind");
        assert_eq!(lstat(&sock).expect("lstat"), Stat::Unsupported("socket"));

        let bad = tmp.path().join("bad");
        let target = <std::ffi::OsStr as std::os::unix::ffi::OsStrExt>::from_bytes(b"\xff");
        symlink(target, &bad).expect("symlink");
        assert_eq!(
            lstat(&bad).expect("lstat"),
            Stat::Unsupported("symlink with non-UTF-8 target")
        );
    }
}
