//! Directory handles reached from a root without following symlinks, and every write made
//! relative to one (invariant 3, docs/ARCHITECTURE.md). A directory is opened from the root's
//! descriptor with one `openat2(RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS)` where the kernel has
//! it, else by a walk of `openat(O_NOFOLLOW)` one component at a time; the create, rename,
//! chmod, mtime, unlink, mkdir and symlink that follow name only a single entry of that
//! directory. Nothing is checked by path and then done by path, so a directory swapped for a
//! symlink by another local user at any moment can make a write fail, never land outside.

use crate::error::FsError;
use crate::meta::Stat;
use crate::path::RelPath;
use rustix::fs::{AtFlags, FileType, Mode, OFlags, ResolveFlags, Timespec, Timestamps};
use rustix::io::Errno;
use std::ffi::OsStr;
use std::fs::File;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStringExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use zync_proto::Kind;

/// Set once `openat2` turned out to be missing (ENOSYS: a kernel before 5.6, or a seccomp
/// filter), so that every later lookup goes straight to the walk.
static NO_OPENAT2: AtomicBool = AtomicBool::new(false);

/// Flags of a directory handle: a path-only descriptor is enough for every `*at` call and, like
/// a lookup by path, needs only search permission on the directory.
const DIR_FLAGS: OFlags = OFlags::PATH
    .union(OFlags::DIRECTORY)
    .union(OFlags::NOFOLLOW)
    .union(OFlags::CLOEXEC);

/// An open directory inside (or at) a synced root, and the path it was reached by, which is
/// used in error messages only.
#[derive(Debug)]
pub struct Dir {
    fd: OwnedFd,
    path: PathBuf,
}

/// What `st` describes, as one of the kinds zync syncs; `None` for a fifo, socket or device,
/// which zync never touches.
fn kind_of(st: &rustix::fs::Stat) -> Option<Kind> {
    match FileType::from_raw_mode(st.st_mode) {
        FileType::RegularFile => Some(Kind::File),
        FileType::Directory => Some(Kind::Dir),
        FileType::Symlink => Some(Kind::Symlink),
        _ => None,
    }
}

// `st_mtime` is not an i64 on every target.
#[allow(clippy::unnecessary_cast)]
fn mtime_ns(st: &rustix::fs::Stat) -> i64 {
    (st.st_mtime as i64)
        .saturating_mul(1_000_000_000)
        .saturating_add(st.st_mtime_nsec as i64)
}

/// A single directory entry name: anything else (a `/`, `..`, nothing) could reach past the
/// directory the handle holds.
fn entry(name: &OsStr) -> io::Result<&OsStr> {
    let b = name.as_encoded_bytes();
    if b.is_empty() || b == b"." || b == b".." || b.contains(&b'/') || b.contains(&0) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "not a single file name",
        ));
    }
    Ok(name)
}

fn errno(e: Errno) -> io::Error {
    io::Error::from_raw_os_error(e.raw_os_error())
}

/// Which directory a root's path led to: its device and inode, and its birth time where the
/// file system keeps one. ext4 and tmpfs give a removed directory's inode number to the next
/// one made beside it, so `rm -rf proj && mkdir proj` often keeps device and inode; the birth
/// time tells the two apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct RootId {
    /// The device (`st_dev`).
    pub dev: u64,
    /// The inode number.
    pub ino: u64,
    /// The birth time in nanoseconds since the Unix epoch (`statx`'s `stx_btime`), `None` where
    /// the file system keeps none.
    pub born_ns: Option<i64>,
}

impl RootId {
    /// The identity of the directory `path` leads to now (following symlinks, as opening a
    /// root does).
    ///
    /// # Errors
    ///
    /// [`FsError::Io`] when it cannot be opened (`NotFound` when it is missing).
    pub fn of(path: &Path) -> Result<RootId, FsError> {
        let fd = open_path_dir(path)?;
        RootId::of_fd(fd.as_fd()).map_err(|e| FsError::io("look at", path, e))
    }

    /// The identity of what `fd` holds.
    ///
    /// # Errors
    ///
    /// An I/O error from `fstat`.
    pub fn of_fd(fd: BorrowedFd<'_>) -> io::Result<RootId> {
        let st = rustix::fs::fstat(fd).map_err(errno)?;
        // Only the birth time: `st_dev` is what every other look at a device compares with.
        let born_ns = rustix::fs::statx(fd, "", AtFlags::EMPTY_PATH, rustix::fs::StatxFlags::BTIME)
            .ok()
            .filter(|x| {
                x.stx_mask & rustix::fs::StatxFlags::BTIME.bits() != 0
                    && (x.stx_btime.tv_sec, x.stx_btime.tv_nsec) != (0, 0)
            })
            .map(|x| {
                x.stx_btime
                    .tv_sec
                    .saturating_mul(1_000_000_000)
                    .saturating_add(i64::from(x.stx_btime.tv_nsec))
            });
        // The fields' widths differ between targets.
        #[allow(clippy::unnecessary_cast)]
        Ok(RootId {
            dev: st.st_dev as u64,
            ino: st.st_ino as u64,
            born_ns,
        })
    }
}

/// Opens the directory `path` leads to (following symlinks: a root is the user's choice)
/// path-only.
fn open_path_dir(path: &Path) -> Result<OwnedFd, FsError> {
    rustix::fs::open(
        path,
        OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| FsError::io("open the directory", path, errno(e)))
}

/// The roots this process pinned ([`pin_root`], [`pin_root_as`]), each with the identity of
/// the directory it must lead to.
static PINNED: std::sync::RwLock<Vec<(PathBuf, RootId)>> = std::sync::RwLock::new(Vec::new());

/// Records that `root` must lead to the directory `id`, replacing an earlier pin of it.
fn pin(root: &Path, id: RootId) {
    let mut pinned = PINNED.write().unwrap_or_else(|e| e.into_inner());
    pinned.retain(|(path, _)| path != root);
    pinned.push((root.to_path_buf(), id));
}

/// Pins `root` (a mapped or served directory, as this process will name it) to the directory
/// it leads to now, and returns that directory's identity: from now on [`Dir::open_root`]
/// opens it only while its path still leads there, and otherwise fails with
/// [`FsError::RootReplaced`]. The path of a root is resolved again at every open (the root
/// may be a symlink the user chose), so without a pin another user who can rename an entry
/// of a directory above it (a shared project directory, a sticky one they own) could swap it
/// for a symlink between two writes and have them land in the directory of their choice, or
/// have a read of the tree read theirs (invariant 3).
///
/// # Errors
///
/// [`FsError::Io`] when it cannot be opened.
pub fn pin_root(root: &Path) -> Result<RootId, FsError> {
    let id = RootId::of(root)?;
    pin(root, id);
    Ok(id)
}

/// Pins `root` to the directory `id` another process found it to be (zync-apply writes only
/// into the directory zync-daemon pinned when it started): from now on [`Dir::open_root`]
/// opens it only while its path leads to that directory. The pin holds whatever the path
/// leads to now.
///
/// # Errors
///
/// [`FsError::RootReplaced`] when the path leads to another directory now, [`FsError::Io`]
/// when it cannot be opened.
pub fn pin_root_as(root: &Path, id: RootId) -> Result<(), FsError> {
    pin(root, id);
    if RootId::of(root)? != id {
        return Err(FsError::RootReplaced {
            path: root.to_path_buf(),
        });
    }
    Ok(())
}

/// The identity `root` was pinned with, if it was.
fn pinned(root: &Path) -> Option<RootId> {
    let pinned = PINNED.read().unwrap_or_else(|e| e.into_inner());
    pinned
        .iter()
        .find(|(path, _)| path == root)
        .map(|(_, id)| *id)
}

impl Dir {
    /// Opens `root` itself. The root is the user's choice and is trusted: it may be a symlink.
    /// A pinned root ([`pin_root`]) must still be the directory it was.
    ///
    /// # Errors
    ///
    /// [`FsError::Io`] when it cannot be opened (`NotFound` when it is missing),
    /// [`FsError::RootReplaced`] when a pinned root's path leads to another directory.
    pub fn open_root(root: &Path) -> Result<Dir, FsError> {
        let fd = open_path_dir(root)?;
        if let Some(was) = pinned(root) {
            let now = RootId::of_fd(fd.as_fd()).map_err(|e| FsError::io("look at", root, e))?;
            if now != was {
                return Err(FsError::RootReplaced {
                    path: root.to_path_buf(),
                });
            }
        }
        Ok(Dir {
            fd,
            path: root.to_path_buf(),
        })
    }

    /// The identity of the directory this handle holds.
    ///
    /// # Errors
    ///
    /// An I/O error from `fstat`.
    pub fn identity(&self) -> io::Result<RootId> {
        RootId::of_fd(self.fd.as_fd())
    }

    /// Opens the directory `rel` of a root: with `openat2` when the kernel has it, else with
    /// [`Dir::walk`].
    ///
    /// # Errors
    ///
    /// [`FsError::SymlinkInPath`] when a component is a symlink (nothing was opened through
    /// it), [`FsError::NotADirectory`] when one is something else, [`FsError::Io`] with
    /// `NotFound` for a missing one.
    pub fn open_dir(root: &Path, rel: Option<&RelPath>) -> Result<Dir, FsError> {
        let base = Dir::open_root(root)?;
        match rel {
            None => Ok(base),
            Some(rel) => base.subdir(rel),
        }
    }

    /// Opens the directory `root/rel` will be written into (its parent, or the root).
    ///
    /// # Errors
    ///
    /// As [`Dir::open_dir`].
    pub fn parent_of(root: &Path, rel: &RelPath) -> Result<Dir, FsError> {
        Dir::open_dir(root, rel.parent().as_ref())
    }

    /// The path this directory was reached by (for messages).
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The path of `name` in this directory (for messages).
    pub fn path_of(&self, name: impl AsRef<OsStr>) -> PathBuf {
        self.path.join(name.as_ref())
    }

    /// Opens the directory `rel` below this one in one `openat2` call that refuses any symlink
    /// and any step outside; falls back to [`Dir::walk`] where `openat2` is missing, and also
    /// to find out which component was at fault when it fails.
    ///
    /// # Errors
    ///
    /// As [`Dir::open_dir`].
    pub fn subdir(&self, rel: &RelPath) -> Result<Dir, FsError> {
        if !NO_OPENAT2.load(Ordering::Relaxed) {
            match rustix::fs::openat2(
                &self.fd,
                rel.as_str(),
                DIR_FLAGS,
                Mode::empty(),
                ResolveFlags::BENEATH | ResolveFlags::NO_SYMLINKS | ResolveFlags::NO_MAGICLINKS,
            ) {
                Ok(fd) => {
                    return Ok(Dir {
                        fd,
                        path: rel.to_path(&self.path),
                    })
                }
                Err(Errno::NOSYS) => NO_OPENAT2.store(true, Ordering::Relaxed),
                // The walk names the component at fault (and, should the tree have changed
                // since, opens the directory just as safely).
                Err(_) => {}
            }
        }
        self.walk(rel)
    }

    /// Opens the directory `rel` below this one one component at a time with
    /// `openat(O_DIRECTORY | O_NOFOLLOW)`: the fallback for kernels without `openat2`.
    ///
    /// # Errors
    ///
    /// As [`Dir::open_dir`].
    pub fn walk(&self, rel: &RelPath) -> Result<Dir, FsError> {
        self.walk_creating(rel, None).map(|(dir, _)| dir)
    }

    /// As [`Dir::walk`], creating missing directories when `create` is given (with mode
    /// `0o777` before the umask, as `mkdir` does); returns the ones it created, shallowest
    /// first.
    fn walk_creating(
        &self,
        rel: &RelPath,
        create: Option<()>,
    ) -> Result<(Dir, Vec<RelPath>), FsError> {
        let mut made = Vec::new();
        let mut at: Option<Dir> = None;
        let mut so_far = String::new();
        for name in rel.as_str().split('/') {
            if !so_far.is_empty() {
                so_far.push('/');
            }
            so_far.push_str(name);
            let cur = at.as_ref().unwrap_or(self);
            let next = match cur.open_child_dir(name) {
                Ok(d) => d,
                Err(Errno::NOENT) if create.is_some() => {
                    match rustix::fs::mkdirat(&cur.fd, name, Mode::from_bits_truncate(0o777)) {
                        Ok(()) => {
                            if let Ok(r) = RelPath::parse(&so_far) {
                                made.push(r);
                            }
                        }
                        // Someone else made it first: fine if it is a real directory.
                        Err(Errno::EXIST) => {}
                        Err(e) => {
                            return Err(FsError::io(
                                "create directory",
                                cur.path_of(name),
                                errno(e),
                            ))
                        }
                    }
                    cur.open_child_dir(name)
                        .map_err(|e| cur.classify(name, e, "open directory"))?
                }
                Err(e) => return Err(cur.classify(name, e, "open directory")),
            };
            at = Some(next);
        }
        match at {
            Some(d) => Ok((d, made)),
            // A RelPath has at least one component.
            None => Err(FsError::io(
                "open directory",
                rel.to_path(&self.path),
                io::Error::from(io::ErrorKind::InvalidInput),
            )),
        }
    }

    /// Opens the subdirectory `name` of this one, never through a symlink.
    ///
    /// # Errors
    ///
    /// An I/O error (`ENOTDIR` for a symlink or a non-directory).
    pub fn child_dir(&self, name: &OsStr) -> io::Result<Dir> {
        self.open_child_dir(entry(name)?).map_err(errno)
    }

    fn open_child_dir(&self, name: impl AsRef<OsStr>) -> Result<Dir, Errno> {
        let name = name.as_ref();
        let fd = rustix::fs::openat(&self.fd, name, DIR_FLAGS, Mode::empty())?;
        Ok(Dir {
            fd,
            path: self.path.join(name),
        })
    }

    /// Turns a failed open of the directory `name` into the error that says what is there.
    fn classify(&self, name: &str, e: Errno, what: &'static str) -> FsError {
        let path = self.path.join(name);
        match e {
            Errno::NOENT => FsError::io("find directory", path, errno(e)),
            Errno::LOOP | Errno::NOTDIR => {
                match self.stat(name).map(|st| st.map(|st| kind_of(&st))) {
                    Ok(Some(Some(Kind::Symlink))) => FsError::SymlinkInPath { path },
                    Ok(Some(Some(Kind::Dir))) | Ok(None) | Err(_) => {
                        FsError::io(what, path, errno(e))
                    }
                    Ok(Some(_)) => FsError::NotADirectory { path },
                }
            }
            _ => FsError::io(what, path, errno(e)),
        }
    }

    /// As [`Dir::subdir`], creating missing directories on the way (never through a symlink);
    /// returns the directory and the ones created, shallowest first.
    ///
    /// # Errors
    ///
    /// As [`Dir::subdir`]; [`FsError::Io`] when a directory cannot be created.
    pub fn create_dirs(&self, rel: &RelPath) -> Result<(Dir, Vec<RelPath>), FsError> {
        match self.subdir(rel) {
            Ok(d) => Ok((d, Vec::new())),
            Err(FsError::Io { source, .. }) if source.kind() == io::ErrorKind::NotFound => {
                self.walk_creating(rel, Some(()))
            }
            Err(e) => Err(e),
        }
    }

    fn stat(&self, name: impl AsRef<OsStr>) -> io::Result<Option<rustix::fs::Stat>> {
        match rustix::fs::statat(&self.fd, entry(name.as_ref())?, AtFlags::SYMLINK_NOFOLLOW) {
            Ok(st) => Ok(Some(st)),
            Err(Errno::NOENT) => Ok(None),
            Err(e) => Err(errno(e)),
        }
    }

    /// Creates the new file `name` (`O_CREAT | O_EXCL | O_NOFOLLOW`, mode 0600), open for
    /// reading and writing.
    ///
    /// # Errors
    ///
    /// `AlreadyExists` when something is there, or another I/O error.
    pub fn create_new(&self, name: impl AsRef<OsStr>) -> io::Result<File> {
        let fd = rustix::fs::openat(
            &self.fd,
            entry(name.as_ref())?,
            OFlags::RDWR | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::from_bits_truncate(0o600),
        )
        .map_err(errno)?;
        Ok(File::from(fd))
    }

    /// Creates a new file named `prefix` and 16 random hex digits; returns it and its name.
    ///
    /// # Errors
    ///
    /// An I/O error.
    pub fn create_temp(&self, prefix: &str) -> io::Result<(File, String)> {
        loop {
            let name = temp_name(prefix);
            match self.create_new(&name) {
                Ok(f) => return Ok((f, name)),
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(e),
            }
        }
    }

    /// Opens the existing regular file `name` without following a symlink; `None` when it is
    /// missing or not a regular file.
    ///
    /// # Errors
    ///
    /// An I/O error other than "not found" or "a symlink".
    pub fn open_file(&self, name: impl AsRef<OsStr>, write: bool) -> io::Result<Option<File>> {
        let access = if write { OFlags::RDWR } else { OFlags::RDONLY };
        Ok(self
            .open_regular(name.as_ref(), access)?
            .map(|(fd, _)| File::from(fd)))
    }

    /// Opens the regular file `name` in this directory for reading, as
    /// [`Dir::open_file`] does (never through a symlink, `None` for anything but a regular
    /// file), with the size and mtime its descriptor had once opened: a server checks them
    /// against its index without asking again.
    ///
    /// # Errors
    ///
    /// An I/O error.
    pub fn open_file_to_read(&self, name: impl AsRef<OsStr>) -> io::Result<Option<OpenedFile>> {
        let Some((fd, st)) = self.open_regular(name.as_ref(), OFlags::RDONLY)? else {
            return Ok(None);
        };
        // The fields' widths differ between targets.
        #[allow(clippy::unnecessary_cast)]
        let (secs, nanos) = (st.st_mtime as i64, st.st_mtime_nsec as i64);
        Ok(Some(OpenedFile {
            file: File::from(fd),
            size: u64::try_from(st.st_size).unwrap_or(0),
            mtime_ns: secs.saturating_mul(1_000_000_000).saturating_add(nanos),
        }))
    }

    /// Opens `name` with `access` if it is a regular file, never through a symlink, and
    /// without blocking on a FIFO or a device swapped in: `None` for anything else. Returns
    /// the descriptor, blocking again, and the `fstat` that judged it.
    fn open_regular(
        &self,
        name: &OsStr,
        access: OFlags,
    ) -> io::Result<Option<(OwnedFd, rustix::fs::Stat)>> {
        let fd = match rustix::fs::openat(
            &self.fd,
            entry(name)?,
            access | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::NOCTTY | OFlags::CLOEXEC,
            Mode::empty(),
        ) {
            Ok(fd) => fd,
            Err(Errno::NOENT | Errno::LOOP | Errno::ISDIR | Errno::NXIO) => return Ok(None),
            Err(e) => return Err(errno(e)),
        };
        let st = rustix::fs::fstat(&fd).map_err(errno)?;
        if kind_of(&st) != Some(Kind::File) {
            return Ok(None);
        }
        // Back to blocking. F_SETFL sets only the status flags (append, async, direct,
        // noatime, nonblock), and of those this descriptor was opened with nonblock alone, so
        // there is nothing to read first.
        rustix::fs::fcntl_setfl(&fd, OFlags::empty()).map_err(errno)?;
        Ok(Some((fd, st)))
    }

    /// Renames `from` in this directory to `to` in `to_dir` (`renameat`): replaces a file or
    /// symlink at `to` itself, never what it points to.
    ///
    /// # Errors
    ///
    /// An I/O error.
    pub fn rename(
        &self,
        from: impl AsRef<OsStr>,
        to_dir: &Dir,
        to: impl AsRef<OsStr>,
    ) -> io::Result<()> {
        rustix::fs::renameat(
            &self.fd,
            entry(from.as_ref())?,
            &to_dir.fd,
            entry(to.as_ref())?,
        )
        .map_err(errno)
    }

    /// Renames `from` in this directory to `to` in `to_dir` only if nothing is at `to`
    /// (`renameat2(RENAME_NOREPLACE)`): whatever another user put there stays as it is.
    ///
    /// # Errors
    ///
    /// `AlreadyExists` when something is at `to`; `Unsupported` where the file system cannot
    /// rename without replacing; another I/O error.
    pub fn rename_noreplace(
        &self,
        from: impl AsRef<OsStr>,
        to_dir: &Dir,
        to: impl AsRef<OsStr>,
    ) -> io::Result<()> {
        match rustix::fs::renameat_with(
            &self.fd,
            entry(from.as_ref())?,
            &to_dir.fd,
            entry(to.as_ref())?,
            rustix::fs::RenameFlags::NOREPLACE,
        ) {
            Ok(()) => Ok(()),
            Err(Errno::INVAL | Errno::NOSYS | Errno::OPNOTSUPP) => {
                Err(io::ErrorKind::Unsupported.into())
            }
            Err(e) => Err(errno(e)),
        }
    }

    /// Exchanges the entries `a` and `b` of this directory atomically
    /// (`renameat2(RENAME_EXCHANGE)`).
    ///
    /// # Errors
    ///
    /// `NotFound` when either is missing; `Unsupported` where the file system cannot exchange;
    /// another I/O error.
    fn exchange(&self, a: &OsStr, b: &OsStr) -> io::Result<()> {
        match rustix::fs::renameat_with(
            &self.fd,
            entry(a)?,
            &self.fd,
            entry(b)?,
            rustix::fs::RenameFlags::EXCHANGE,
        ) {
            Ok(()) => Ok(()),
            Err(Errno::INVAL | Errno::NOSYS | Errno::OPNOTSUPP) => {
                Err(io::ErrorKind::Unsupported.into())
            }
            Err(e) => Err(errno(e)),
        }
    }

    /// Renames `from` over `to` (both in this directory) only if what stands at `to` is
    /// `expected` (as [`crate::lstat`] describes it; [`Stat::Missing`] for nothing), with no
    /// moment between the last look and the rename: the two are exchanged atomically
    /// (`RENAME_EXCHANGE`) and what came out of `to` is looked at; if it is not `expected`
    /// (an edit saved at that instant), it is exchanged back. Where nothing is expected the
    /// rename itself refuses to replace (`RENAME_NOREPLACE`). On a file system that can do
    /// neither, it looks, then renames. Returns [`IfUnchanged::Done`] when `from` took the
    /// name (and what was at `to` is gone), else nothing was replaced and `from` is as it
    /// was, for the caller to remove or keep.
    ///
    /// # Errors
    ///
    /// An I/O error of the look or the rename.
    pub fn replace_if(
        &self,
        from: impl AsRef<OsStr>,
        to: impl AsRef<OsStr>,
        expected: &Stat,
    ) -> io::Result<IfUnchanged> {
        self.replace_if_between(from.as_ref(), to.as_ref(), expected, |_| {})
    }

    /// [`Dir::replace_if`], calling `between` right after each exchange (so tests can land a
    /// save at those instants).
    fn replace_if_between(
        &self,
        from: &OsStr,
        to: &OsStr,
        expected: &Stat,
        mut between: impl FnMut(Exchange),
    ) -> io::Result<IfUnchanged> {
        let look = || -> io::Result<IfUnchanged> {
            Ok(match self.lstat(to)? {
                Stat::Missing if *expected != Stat::Missing => IfUnchanged::Gone,
                now if now == *expected => IfUnchanged::Done,
                _ => IfUnchanged::Changed,
            })
        };
        if *expected == Stat::Missing {
            match self.rename_noreplace(from, self, to) {
                Ok(()) => return Ok(IfUnchanged::Done),
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                    return Ok(IfUnchanged::Changed)
                }
                Err(e) if e.kind() == io::ErrorKind::Unsupported => {}
                Err(e) => return Err(e),
            }
        } else {
            let ours = self.lstat(from)?;
            if ours == Stat::Missing {
                return Err(io::ErrorKind::NotFound.into());
            }
            match self.exchange(from, to) {
                Ok(()) => {
                    between(Exchange::Out);
                    // `from` now names what stood at `to`: removed if it is the entry
                    // approved (should the unlink fail, it is still that entry, which the
                    // caller may remove).
                    if matches!(self.lstat(from), Ok(out) if out == *expected) {
                        self.unlink(from)?;
                        return Ok(IfUnchanged::Done);
                    }
                    // Someone's save: it goes back. Whatever is then left at `from` that is
                    // not ours (a second save landed at `to` meanwhile, or the exchange back
                    // failed because `to` was renamed away) is a save too: kept beside `to`,
                    // never left under our temp name for the caller to remove.
                    if let Err(e) = self.exchange(from, to) {
                        tracing::warn!(
                            path = %self.path_of(to).display(),
                            "cannot put a file saved during a replacement back: {e}"
                        );
                    }
                    between(Exchange::Back);
                    let still_ours = matches!((self.lstat(from), &ours), (Ok(Stat::Entry(now)), Stat::Entry(ours)) if now.inode == ours.inode);
                    if !still_ours {
                        self.keep_aside(from, to)?;
                    }
                    return Ok(IfUnchanged::Changed);
                }
                // Nothing at `to` (or `from` gone, which is an error).
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    if self.lstat(from)? == Stat::Missing {
                        return Err(e);
                    }
                    return Ok(IfUnchanged::Gone);
                }
                Err(e) if e.kind() == io::ErrorKind::Unsupported => {}
                Err(e) => return Err(e),
            }
        }
        match look()? {
            IfUnchanged::Done => {}
            other => return Ok(other),
        }
        self.rename(from, self, to)?;
        Ok(IfUnchanged::Done)
    }

    /// Renames `name`, a file someone saved at `of` that a replacement moved out, to a new
    /// conflict-copy name of `of` in this directory, never replacing anything.
    fn keep_aside(&self, name: &OsStr, of: &OsStr) -> io::Result<()> {
        let of_rel = of.to_str().and_then(|s| RelPath::parse(s).ok());
        loop {
            let stamp = format!("kept-{:016x}", random());
            let copy = match &of_rel {
                Some(rel) => crate::conflict_name(rel, &stamp).as_str().to_string(),
                None => format!("zync-conflict-{stamp}"),
            };
            let kept = match self.rename_noreplace(name, self, &copy) {
                Err(e) if e.kind() == io::ErrorKind::Unsupported => {
                    if self.lstat(&copy)? != Stat::Missing {
                        continue;
                    }
                    self.rename(name, self, &copy)
                }
                other => other,
            };
            match kept {
                Ok(()) => {
                    tracing::warn!(
                        path = %self.path_of(of).display(),
                        copy = %copy,
                        "a save that landed during a replacement was kept as {copy}"
                    );
                    return Ok(());
                }
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(e),
            }
        }
    }

    /// Removes the file or symlink `name` (`unlinkat`).
    ///
    /// # Errors
    ///
    /// An I/O error (`NotFound` when nothing is there).
    pub fn unlink(&self, name: impl AsRef<OsStr>) -> io::Result<()> {
        rustix::fs::unlinkat(&self.fd, entry(name.as_ref())?, AtFlags::empty()).map_err(errno)
    }

    /// Removes the empty directory `name` (`unlinkat(AT_REMOVEDIR)`).
    ///
    /// # Errors
    ///
    /// An I/O error (`DirectoryNotEmpty` when it holds anything).
    pub fn rmdir(&self, name: impl AsRef<OsStr>) -> io::Result<()> {
        rustix::fs::unlinkat(&self.fd, entry(name.as_ref())?, AtFlags::REMOVEDIR).map_err(errno)
    }

    /// Creates the directory `name` with `mode` (before the umask).
    ///
    /// # Errors
    ///
    /// An I/O error (`AlreadyExists` when something is there).
    pub fn mkdir(&self, name: impl AsRef<OsStr>, mode: u32) -> io::Result<()> {
        rustix::fs::mkdirat(
            &self.fd,
            entry(name.as_ref())?,
            Mode::from_bits_truncate(mode & 0o7777),
        )
        .map_err(errno)
    }

    /// Creates the symlink `name` pointing to `target`.
    ///
    /// # Errors
    ///
    /// An I/O error (`AlreadyExists` when something is there).
    pub fn symlink(&self, target: &str, name: impl AsRef<OsStr>) -> io::Result<()> {
        rustix::fs::symlinkat(target, &self.fd, entry(name.as_ref())?).map_err(errno)
    }

    /// Sets the permission bits (`mode & 0o7777`) of `name`. A symlink is left alone: Linux
    /// has no modes on links, and a path-following `chmod` would change its target instead.
    /// The entry is opened with `O_PATH | O_NOFOLLOW` and changed through that descriptor.
    ///
    /// # Errors
    ///
    /// An I/O error (`NotFound` when nothing is there).
    pub fn set_mode(&self, name: impl AsRef<OsStr>, mode: u32) -> io::Result<()> {
        let fd = rustix::fs::openat(
            &self.fd,
            entry(name.as_ref())?,
            OFlags::PATH | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(errno)?;
        chmod_fd(fd.as_fd(), mode)
    }

    /// Sets the modification time of `name` (ns since the epoch) without following a symlink
    /// (`utimensat(AT_SYMLINK_NOFOLLOW)`); the access time is left alone.
    ///
    /// # Errors
    ///
    /// An I/O error.
    pub fn set_mtime(&self, name: impl AsRef<OsStr>, mtime_ns: i64) -> io::Result<()> {
        rustix::fs::utimensat(
            &self.fd,
            entry(name.as_ref())?,
            &times(mtime_ns),
            AtFlags::SYMLINK_NOFOLLOW,
        )
        .map_err(errno)
    }

    /// Flushes this directory's entries to disk (renames, creations and removals in it).
    ///
    /// # Errors
    ///
    /// An I/O error.
    pub fn sync(&self) -> io::Result<()> {
        rustix::fs::fsync(self.readable()?).map_err(errno)
    }

    /// Flushes the whole file system this directory is on (`syncfs`): for an entry in it
    /// that cannot be opened to be flushed on its own (a file without read permission).
    ///
    /// # Errors
    ///
    /// An I/O error.
    pub fn sync_file_system(&self) -> io::Result<()> {
        rustix::fs::syncfs(self.readable()?).map_err(errno)
    }

    /// This directory opened for reading: a path-only descriptor cannot be flushed.
    fn readable(&self) -> io::Result<OwnedFd> {
        rustix::fs::openat(
            &self.fd,
            ".",
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(errno)
    }

    /// The names in this directory with what each is (`.` and `..` left out); `None` for a
    /// fifo, socket or device.
    ///
    /// # Errors
    ///
    /// An I/O error reading the directory.
    pub fn entries(&self) -> io::Result<Vec<(std::ffi::OsString, Option<Kind>)>> {
        let fd = rustix::fs::openat(
            &self.fd,
            ".",
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(errno)?;
        let mut dir = rustix::fs::Dir::new(fd).map_err(errno)?;
        let mut out = Vec::new();
        while let Some(ent) = dir.read() {
            let ent = ent.map_err(errno)?;
            let name = ent.file_name().to_bytes();
            if name == b"." || name == b".." {
                continue;
            }
            let name =
                std::ffi::OsString::from(<OsStr as std::os::unix::ffi::OsStrExt>::from_bytes(name));
            let kind = match ent.file_type() {
                FileType::RegularFile => Some(Kind::File),
                FileType::Directory => Some(Kind::Dir),
                FileType::Symlink => Some(Kind::Symlink),
                FileType::Unknown => match self.stat(&name) {
                    Ok(Some(st)) => kind_of(&st),
                    Ok(None) => continue,
                    Err(e) => return Err(e),
                },
                _ => None,
            };
            out.push((name, kind));
        }
        Ok(out)
    }

    /// What stands at `name` in this directory, as [`crate::lstat`] describes it, looked at
    /// through this handle (`fstatat` relative to it, never following a symlink), so a
    /// directory swapped for a symlink elsewhere cannot make the look see another directory's
    /// entry. A symlink's target is read through a path-only descriptor of that same entry.
    ///
    /// # Errors
    ///
    /// An I/O error other than "not found".
    pub fn lstat(&self, name: impl AsRef<OsStr>) -> io::Result<Stat> {
        let name = entry(name.as_ref())?;
        let st = match rustix::fs::statat(&self.fd, name, AtFlags::SYMLINK_NOFOLLOW) {
            Ok(st) => st,
            Err(Errno::NOENT | Errno::NOTDIR) => return Ok(Stat::Missing),
            Err(e) => return Err(errno(e)),
        };
        let kind = match FileType::from_raw_mode(st.st_mode) {
            FileType::RegularFile => Kind::File,
            FileType::Directory => Kind::Dir,
            FileType::Symlink => return self.lstat_link(name),
            FileType::Fifo => return Ok(Stat::Unsupported("fifo")),
            FileType::Socket => return Ok(Stat::Unsupported("socket")),
            FileType::BlockDevice | FileType::CharacterDevice => {
                return Ok(Stat::Unsupported("device"))
            }
            FileType::Unknown => return Ok(Stat::Unsupported("unknown file type")),
        };
        let size = match kind {
            Kind::File => u64::try_from(st.st_size).unwrap_or(0),
            _ => 0,
        };
        // The fields' widths differ between targets.
        #[allow(clippy::unnecessary_cast)]
        let (mode, inode, device) = (
            st.st_mode as u32 & 0o7777,
            st.st_ino as u64,
            st.st_dev as u64,
        );
        Ok(Stat::Entry(crate::Meta {
            kind,
            size,
            mtime_ns: mtime_ns(&st),
            mode,
            inode,
            device,
            target: None,
        }))
    }

    /// [`Dir::lstat`] of a symlink: the entry opened path-only (`O_PATH | O_NOFOLLOW`), then
    /// `fstat` and `readlinkat` on that descriptor, so the target read is that entry's.
    fn lstat_link(&self, name: &OsStr) -> io::Result<Stat> {
        let fd = match rustix::fs::openat(
            &self.fd,
            name,
            OFlags::PATH | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
        ) {
            Ok(fd) => fd,
            Err(Errno::NOENT | Errno::NOTDIR) => return Ok(Stat::Missing),
            Err(e) => return Err(errno(e)),
        };
        let file = File::from(fd);
        let md = file.metadata()?;
        crate::meta::meta_from(&md, || {
            // An empty path reads the link the descriptor itself is.
            rustix::fs::readlinkat(&file, "", Vec::new())
                .map(|t| PathBuf::from(std::ffi::OsString::from_vec(t.into_bytes())))
                .map_err(errno)
        })
    }

    /// The modification time of `name` (ns since the epoch), not following a symlink.
    ///
    /// # Errors
    ///
    /// An I/O error (`NotFound` when nothing is there).
    pub fn mtime_of(&self, name: impl AsRef<OsStr>) -> io::Result<i64> {
        match self.stat(name)? {
            Some(st) => Ok(mtime_ns(&st)),
            None => Err(io::Error::from(io::ErrorKind::NotFound)),
        }
    }
}

impl AsFd for Dir {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

/// The timestamps for `utimensat`/`futimens`: access time untouched, mtime as given.
pub(crate) fn times(mtime_ns: i64) -> Timestamps {
    Timestamps {
        last_access: Timespec {
            tv_sec: 0,
            tv_nsec: rustix::fs::UTIME_OMIT,
        },
        last_modification: Timespec {
            tv_sec: mtime_ns.div_euclid(1_000_000_000),
            tv_nsec: mtime_ns.rem_euclid(1_000_000_000) as _,
        },
    }
}

/// Sets the permission bits of what `fd` (a descriptor opened with `O_NOFOLLOW`, possibly
/// path-only) refers to; a symlink is left alone and an unchanged mode is not written.
pub(crate) fn chmod_fd(fd: BorrowedFd<'_>, mode: u32) -> io::Result<()> {
    let st = rustix::fs::fstat(fd).map_err(errno)?;
    if kind_of(&st) == Some(Kind::Symlink) || st.st_mode & 0o7777 == mode & 0o7777 {
        return Ok(());
    }
    let mode = Mode::from_bits_truncate(mode & 0o7777);
    match rustix::fs::fchmod(fd, mode) {
        Ok(()) => Ok(()),
        // A path-only descriptor: change the inode it holds through its /proc entry, which
        // names that inode and nothing else (what glibc's fchmodat does for
        // AT_SYMLINK_NOFOLLOW).
        Err(Errno::BADF) => {
            rustix::fs::chmod(format!("/proc/self/fd/{}", fd.as_raw_fd()), mode).map_err(errno)
        }
        Err(e) => Err(errno(e)),
    }
}

/// `prefix` and 16 random hex digits: a temp name (`O_EXCL` settles any clash).
pub(crate) fn temp_name(prefix: &str) -> String {
    format!("{prefix}{:016x}", random())
}

fn random() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos()),
    );
    h.finish()
}

/// Renames `root/from` to `root/to` (both inside the same root), each reached through its
/// directory handle: a file or symlink at `to` is replaced itself, never what it points to.
///
/// # Errors
///
/// As [`Dir::open_dir`] for either parent; [`FsError::Io`] when the rename fails.
pub fn rename_beneath(root: &Path, from: &RelPath, to: &RelPath) -> Result<(), FsError> {
    let from_dir = Dir::parent_of(root, from)?;
    let to_dir = if from.parent() == to.parent() {
        None
    } else {
        Some(Dir::parent_of(root, to)?)
    };
    from_dir
        .rename(
            from.file_name(),
            to_dir.as_ref().unwrap_or(&from_dir),
            to.file_name(),
        )
        .map_err(|e| FsError::io("rename", from.to_path(root), e))
}

/// Removes the file or symlink `root/rel` through its directory handle. Returns false when
/// nothing was there.
///
/// # Errors
///
/// As [`Dir::open_dir`] for its parent; [`FsError::Io`] when the removal fails.
pub fn remove_beneath(root: &Path, rel: &RelPath) -> Result<bool, FsError> {
    let dir = Dir::parent_of(root, rel)?;
    match dir.unlink(rel.file_name()) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(FsError::io("remove", rel.to_path(root), e)),
    }
}

/// What stands at `root/rel`, as [`crate::lstat`] describes it, looked at through the root's
/// handle and its parent's (never by path, never through a symlink): a path whose parent is a
/// symlink or not a directory, or is missing, has nothing at it. A reader of the tree (the
/// daemon's watch events) then describes the tree it serves even while another user swaps a
/// directory, or a pinned root itself, for a symlink elsewhere.
///
/// # Errors
///
/// [`FsError::RootReplaced`] for a pinned root whose path leads elsewhere; [`FsError::Io`]
/// when the root or a parent cannot be opened or the entry looked at.
pub fn lstat_beneath(root: &Path, rel: &RelPath) -> Result<Stat, FsError> {
    let dir = match Dir::parent_of(root, rel) {
        Ok(dir) => dir,
        Err(FsError::SymlinkInPath { .. } | FsError::NotADirectory { .. }) => {
            return Ok(Stat::Missing)
        }
        Err(FsError::Io { source, .. }) if crate::meta::is_missing(&source) => {
            return Ok(Stat::Missing)
        }
        Err(e) => return Err(e),
    };
    dir.lstat(rel.file_name())
        .map_err(|e| FsError::io("look at", rel.to_path(root), e))
}

/// The instants of [`Dir::replace_if`] a test can act at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Exchange {
    /// The new file took the name; what stood there is under the new file's old name.
    Out,
    /// What came out was not the entry expected, and was exchanged back.
    Back,
}

/// What [`remove_if_unchanged`] or [`rename_if_unchanged`] found at the path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IfUnchanged {
    /// It was what was expected, and is now removed (or renamed).
    Done,
    /// Nothing is there now: nothing was done.
    Gone,
    /// Something else is there now (an edit made since it was looked at): nothing was done.
    Changed,
}

/// Removes the file or symlink `root/rel` only if it is still `expected` (as [`crate::lstat`]
/// described it when the removal was decided). The look and the unlink go through one handle
/// of its directory: a look by path could be led through a directory swapped for a symlink
/// (or made in another directory renamed into place) to a file matching `expected` while the
/// unlink removed an edited file in the real one.
///
/// # Errors
///
/// As [`Dir::open_dir`] for its parent; [`FsError::Io`] when the look or the removal fails.
pub fn remove_if_unchanged(
    root: &Path,
    rel: &RelPath,
    expected: &Stat,
) -> Result<IfUnchanged, FsError> {
    let dir = Dir::parent_of(root, rel)?;
    match look_again(&dir, root, rel, expected)? {
        IfUnchanged::Done => {}
        other => return Ok(other),
    }
    match dir.unlink(rel.file_name()) {
        Ok(()) => Ok(IfUnchanged::Done),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(IfUnchanged::Gone),
        Err(e) => Err(FsError::io("remove", rel.to_path(root), e)),
    }
}

/// Renames `root/from` to `root/to`, as [`rename_beneath`] does, only if `from` is still
/// `expected`, looked at through the handle the rename goes through (see
/// [`remove_if_unchanged`]).
///
/// # Errors
///
/// As [`rename_beneath`], and when the look fails.
pub fn rename_if_unchanged(
    root: &Path,
    from: &RelPath,
    to: &RelPath,
    expected: &Stat,
) -> Result<IfUnchanged, FsError> {
    let from_dir = Dir::parent_of(root, from)?;
    match look_again(&from_dir, root, from, expected)? {
        IfUnchanged::Done => {}
        other => return Ok(other),
    }
    let to_dir = if from.parent() == to.parent() {
        None
    } else {
        Some(Dir::parent_of(root, to)?)
    };
    match from_dir.rename(
        from.file_name(),
        to_dir.as_ref().unwrap_or(&from_dir),
        to.file_name(),
    ) {
        Ok(()) => Ok(IfUnchanged::Done),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(IfUnchanged::Gone),
        Err(e) => Err(FsError::io("rename", from.to_path(root), e)),
    }
}

/// Whether `rel`'s entry in `dir` is still `expected`: `Done` when it is.
fn look_again(
    dir: &Dir,
    root: &Path,
    rel: &RelPath,
    expected: &Stat,
) -> Result<IfUnchanged, FsError> {
    let now = dir
        .lstat(rel.file_name())
        .map_err(|e| FsError::io("inspect", rel.to_path(root), e))?;
    Ok(if now == Stat::Missing {
        IfUnchanged::Gone
    } else if now == *expected {
        IfUnchanged::Done
    } else {
        IfUnchanged::Changed
    })
}

/// Removes the empty directory `root/rel` through its parent's handle. Returns false when
/// nothing was there.
///
/// # Errors
///
/// As [`Dir::open_dir`] for its parent; [`FsError::Io`] when the removal fails (for example
/// `DirectoryNotEmpty`).
pub fn remove_dir_beneath(root: &Path, rel: &RelPath) -> Result<bool, FsError> {
    let dir = Dir::parent_of(root, rel)?;
    match dir.rmdir(rel.file_name()) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(FsError::io("remove the directory", rel.to_path(root), e)),
    }
}

/// Sets the permission bits of `root/rel` through its directory handle, never following a
/// symlink (a symlink's mode is never set).
///
/// # Errors
///
/// As [`Dir::open_dir`] for its parent; [`FsError::Io`] when the mode cannot be set.
pub fn set_mode_beneath(root: &Path, rel: &RelPath, mode: u32) -> Result<(), FsError> {
    Dir::parent_of(root, rel)?
        .set_mode(rel.file_name(), mode)
        .map_err(|e| FsError::io("set the mode of", rel.to_path(root), e))
}

/// Sets the modification time of `root/rel` through its directory handle, never following a
/// symlink.
///
/// # Errors
///
/// As [`Dir::open_dir`] for its parent; [`FsError::Io`] when the time cannot be set.
pub fn set_mtime_beneath(root: &Path, rel: &RelPath, mtime_ns: i64) -> Result<(), FsError> {
    Dir::parent_of(root, rel)?
        .set_mtime(rel.file_name(), mtime_ns)
        .map_err(|e| FsError::io("set the mtime of", rel.to_path(root), e))
}

/// Flushes the regular file `root/rel` (its content, mode and times), reached without
/// following a symlink; one it may not open, with its whole file system. Nothing there any
/// more, something other than a regular file, or a
/// path that no longer leads there through directories only, is nothing to flush: whatever
/// stands there now was not what the caller recorded, and its next look sees that.
///
/// # Errors
///
/// [`FsError::Io`] when the file cannot be opened or flushed.
pub fn fsync_file_beneath(root: &Path, rel: &RelPath) -> Result<(), FsError> {
    let dir = match Dir::parent_of(root, rel) {
        Ok(dir) => dir,
        Err(FsError::SymlinkInPath { .. } | FsError::NotADirectory { .. }) => return Ok(()),
        Err(FsError::Io { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => {
            return Ok(())
        }
        Err(e) => return Err(e),
    };
    let path = || rel.to_path(root);
    match dir.open_file(rel.file_name(), false) {
        Ok(Some(file)) => file.sync_all().map_err(|e| FsError::io("flush", path(), e)),
        Ok(None) => Ok(()),
        // A file E's mode leaves unreadable: its whole file system is flushed instead.
        Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => dir
            .sync_file_system()
            .map_err(|e| FsError::io("flush the file system of", path(), e)),
        Err(e) => Err(FsError::io("open to flush", path(), e)),
    }
}

/// Flushes the directory `root/rel` (the root when `None`), reached without following a
/// symlink.
///
/// # Errors
///
/// As [`Dir::open_dir`]; [`FsError::Io`] when it cannot be flushed.
pub fn fsync_dir_beneath(root: &Path, rel: Option<&RelPath>) -> Result<(), FsError> {
    let dir = Dir::open_dir(root, rel)?;
    dir.sync()
        .map_err(|e| FsError::io("fsync directory", dir.path(), e))
}

/// Creates the missing directories of `root/rel` (never through a symlink) and flushes the
/// directory each new one was made in, so they survive a crash; returns the new ones,
/// shallowest first.
///
/// # Errors
///
/// As [`Dir::create_dirs`]; [`FsError::Io`] when a flush fails.
pub fn create_dirs_beneath(root: &Path, rel: &RelPath) -> Result<Vec<RelPath>, FsError> {
    let base = Dir::open_root(root)?;
    let (_, made) = base.create_dirs(rel)?;
    for d in &made {
        let up = match d.parent() {
            Some(p) => base.subdir(&p)?,
            None => Dir::open_root(root)?,
        };
        up.sync()
            .map_err(|e| FsError::io("fsync directory", up.path(), e))?;
    }
    Ok(made)
}

/// Opens the regular file `root/rel` for reading, never through a symlink (in a parent or at
/// the file itself). `None` when it is missing or not a regular file.
///
/// # Errors
///
/// As [`Dir::open_dir`] for its parent; [`FsError::Io`] when it cannot be opened.
pub fn open_file_beneath(root: &Path, rel: &RelPath) -> Result<Option<File>, FsError> {
    Dir::parent_of(root, rel)?
        .open_file(rel.file_name(), false)
        .map_err(|e| FsError::io("open", rel.to_path(root), e))
}

/// A regular file opened for reading ([`Dir::open_file_to_read`]), with its size and mtime
/// (nanoseconds since the Unix epoch) from `fstat` on the open descriptor.
#[derive(Debug)]
pub struct OpenedFile {
    /// The open file.
    pub file: File,
    /// Its size in bytes.
    pub size: u64,
    /// Its modification time, nanoseconds since the Unix epoch.
    pub mtime_ns: i64,
}

/// Directory handles of files written, renamed or read together (a group of small files, a
/// batch of renames, a batch of GET_FILEs), each reached once from its root, as
/// [`Dir::parent_of`] does, and then shared: two lookups from the root per file cost more than
/// writing or sending a small file. A handle keeps naming the directory it was opened as: if
/// another local user moves that directory away while the group is under way, the group's
/// later files follow it there (as the files already written into it did), and none is ever
/// reached through a symlink put in its place. Lookups that fail are not kept.
#[derive(Debug, Default)]
pub struct Parents {
    /// By root, then by the directory's path in it ("" for the root).
    open: std::collections::HashMap<PathBuf, std::collections::HashMap<String, Arc<Dir>>>,
}

impl Parents {
    /// The handle of the directory `rel` is in under `root`, opened on first use.
    ///
    /// # Errors
    ///
    /// As [`Dir::parent_of`].
    pub fn of(&mut self, root: &Path, rel: &RelPath) -> Result<Arc<Dir>, FsError> {
        let parent = rel.parent();
        let key = parent.as_ref().map_or("", RelPath::as_str);
        if let Some(dir) = self.open.get(root).and_then(|dirs| dirs.get(key)) {
            return Ok(Arc::clone(dir));
        }
        let dir = Arc::new(Dir::open_dir(root, parent.as_ref())?);
        self.open
            .entry(root.to_path_buf())
            .or_default()
            .insert(key.to_string(), Arc::clone(&dir));
        Ok(dir)
    }
}

/// Whether lookups use the walk because the kernel has no `openat2`.
#[cfg(test)]
pub(crate) fn openat2_missing() -> bool {
    NO_OPENAT2.load(Ordering::Relaxed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;
    use std::os::unix::fs::{symlink, MetadataExt, PermissionsExt};

    fn rel(s: &str) -> RelPath {
        RelPath::parse(s).expect("valid test path")
    }

    #[test]
    fn flushing_a_file_beneath_flushes_files_only_and_never_blocks_or_follows() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let r = tmp.path();
        fs::create_dir(r.join("d")).expect("mkdir");
        fs::write(r.join("d/f"), b"kept").expect("write");
        fsync_file_beneath(r, &rel("d/f")).expect("a file is flushed");
        // Gone since, or never there: nothing to flush.
        fsync_file_beneath(r, &rel("d/gone")).expect("a missing file");
        fsync_file_beneath(r, &rel("gone/f")).expect("a missing parent");
        // A FIFO put where the file was: opening it must not wait for a writer.
        crate::testkit::fifo(&r.join("d/fifo"));
        fsync_file_beneath(r, &rel("d/fifo")).expect("a FIFO is not a file");
        // A parent swapped for a symlink is not followed; nor is a symlink in its place.
        let out = tempfile::tempdir().expect("tempdir");
        fs::write(out.path().join("f"), b"outside").expect("write");
        symlink(out.path(), r.join("l")).expect("symlink");
        symlink(out.path().join("f"), r.join("d/link")).expect("symlink");
        fsync_file_beneath(r, &rel("l/f")).expect("a symlinked parent");
        fsync_file_beneath(r, &rel("d/link")).expect("a symlink");
    }

    #[test]
    fn replace_if_renames_over_only_the_entry_expected() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let r = tmp.path();
        let dir = Dir::open_root(r).expect("open");
        fs::write(r.join("f"), b"as seen").expect("write");
        let seen = crate::lstat(&r.join("f")).expect("lstat");
        // An editor's save: a new file renamed over f.
        fs::write(r.join("save"), b"saved").expect("write");
        fs::rename(r.join("save"), r.join("f")).expect("rename");
        fs::write(r.join("ours"), b"ours").expect("write");
        assert_eq!(
            dir.replace_if("ours", "f", &seen).expect("replace"),
            IfUnchanged::Changed
        );
        assert_eq!(fs::read(r.join("f")).expect("read"), b"saved");
        assert_eq!(fs::read(r.join("ours")).expect("read"), b"ours");
        let now = crate::lstat(&r.join("f")).expect("lstat");
        // The same inode number, size, mtime and mode on another device (a parent swapped
        // for a directory on another file system) is another file.
        let Stat::Entry(meta) = &now else {
            panic!("f is a file: {now:?}")
        };
        let elsewhere = Stat::Entry(crate::Meta {
            device: meta.device ^ 1,
            ..meta.clone()
        });
        assert_eq!(
            dir.replace_if("ours", "f", &elsewhere).expect("replace"),
            IfUnchanged::Changed
        );
        assert_eq!(fs::read(r.join("f")).expect("read"), b"saved");
        assert_eq!(
            dir.replace_if("ours", "f", &now).expect("replace"),
            IfUnchanged::Done
        );
        assert_eq!(fs::read(r.join("f")).expect("read"), b"ours");
        let names: Vec<_> = fs::read_dir(r).expect("list").flatten().collect();
        assert_eq!(names.len(), 1, "only f is left: {names:?}");
        // Where nothing was expected, nothing is replaced.
        fs::write(r.join("ours"), b"ours").expect("write");
        assert_eq!(
            dir.replace_if("ours", "f", &Stat::Missing)
                .expect("replace"),
            IfUnchanged::Changed
        );
        assert_eq!(
            dir.replace_if("ours", "g", &Stat::Missing)
                .expect("replace"),
            IfUnchanged::Done
        );
        assert_eq!(fs::read(r.join("g")).expect("read"), b"ours");
        // Expected a file, found nothing.
        fs::write(r.join("ours"), b"ours").expect("write");
        assert_eq!(
            dir.replace_if("ours", "h", &now).expect("replace"),
            IfUnchanged::Gone
        );
        assert!(!r.join("h").exists());
        // Our own file gone is an error, not a look.
        assert!(dir.replace_if("nothing", "f", &now).is_err());
    }

    /// Saves landing at each instant of a replacement that found an edit (E's or R's user
    /// saving by renaming a new file over the old, or renaming it away as an editor's backup):
    /// every save survives, at the name or as a conflict copy, and nothing of theirs is left
    /// under the new file's temp name, which the caller removes.
    #[test]
    fn saves_landing_during_a_refused_replacement_are_all_kept() {
        type Act = fn(&Path);
        let save = |r: &Path, content: &[u8]| {
            fs::write(r.join("save.tmp"), content).expect("write");
            fs::rename(r.join("save.tmp"), r.join("f")).expect("save");
        };
        let cases: [(&str, Act, &[&[u8]]); 3] = [
            ("nothing more", |_| {}, &[b"edit 1"]),
            (
                "a second save while ours held the name",
                |r| {
                    fs::write(r.join("save.tmp"), b"edit 2").expect("write");
                    fs::rename(r.join("save.tmp"), r.join("f")).expect("save");
                },
                &[b"edit 1", b"edit 2"],
            ),
            (
                "the name renamed away as a backup",
                |r| fs::rename(r.join("f"), r.join("f~")).expect("backup"),
                &[b"edit 1"],
            ),
        ];
        for (what, act, kept) in cases {
            let tmp = tempfile::tempdir().expect("tempdir");
            let r = tmp.path();
            fs::write(r.join("f"), b"as approved").expect("write");
            let approved = crate::lstat(&r.join("f")).expect("lstat");
            save(r, b"edit 1");
            fs::write(r.join(".zync-tmp-ours"), b"ours").expect("write");
            let dir = Dir::open_root(r).expect("open");
            let found = dir
                .replace_if_between(
                    OsStr::new(".zync-tmp-ours"),
                    OsStr::new("f"),
                    &approved,
                    |at| {
                        if at == Exchange::Out {
                            act(r);
                        }
                    },
                )
                .expect("replace");
            assert_eq!(found, IfUnchanged::Changed, "{what}");
            // What the caller does with its temp file.
            let _ = fs::remove_file(r.join(".zync-tmp-ours"));
            let mut contents: Vec<Vec<u8>> = fs::read_dir(r)
                .expect("list")
                .flatten()
                .map(|e| fs::read(e.path()).expect("read"))
                .collect();
            contents.sort();
            for k in kept {
                assert!(
                    contents.iter().any(|c| c == k),
                    "{what}: {} was lost; left: {contents:?}",
                    String::from_utf8_lossy(k)
                );
            }
            assert!(!contents.iter().any(|c| c == b"as approved"), "{what}");
        }
    }

    #[test]
    fn removes_and_renames_only_what_is_still_as_seen() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let r = tmp.path();
        fs::create_dir(r.join("d")).expect("mkdir");
        fs::write(r.join("d/f"), b"as synced").expect("write");
        let seen = crate::lstat(&r.join("d/f")).expect("lstat");
        fs::write(r.join("d/f"), b"edited on R").expect("edit");
        let edited = crate::lstat(&r.join("d/f")).expect("lstat");
        assert_ne!(seen, edited);
        assert_eq!(
            remove_if_unchanged(r, &rel("d/f"), &seen).expect("remove"),
            IfUnchanged::Changed
        );
        assert_eq!(
            rename_if_unchanged(r, &rel("d/f"), &rel("kept"), &seen).expect("rename"),
            IfUnchanged::Changed
        );
        assert_eq!(fs::read(r.join("d/f")).expect("read"), b"edited on R");
        assert_eq!(
            rename_if_unchanged(r, &rel("d/f"), &rel("kept"), &edited).expect("rename"),
            IfUnchanged::Done
        );
        assert_eq!(fs::read(r.join("kept")).expect("read"), b"edited on R");
        assert_eq!(
            rename_if_unchanged(r, &rel("d/f"), &rel("kept"), &edited).expect("rename"),
            IfUnchanged::Gone
        );
        let kept = crate::lstat(&r.join("kept")).expect("lstat");
        assert_eq!(
            remove_if_unchanged(r, &rel("kept"), &kept).expect("remove"),
            IfUnchanged::Done
        );
        assert!(!r.join("kept").exists());
        assert_eq!(
            remove_if_unchanged(r, &rel("kept"), &kept).expect("remove"),
            IfUnchanged::Gone
        );
        // A symlink in the path is refused, not looked through.
        symlink(r.join("d"), r.join("l")).expect("symlink");
        fs::write(r.join("d/g"), b"g").expect("write");
        let g = crate::lstat(&r.join("d/g")).expect("lstat");
        assert!(remove_if_unchanged(r, &rel("l/g"), &g).is_err());
        assert!(r.join("d/g").exists());
    }

    /// Another local user exchanges R's directory `d` with a symlink to their own, in a loop,
    /// while a deletion from E removes `d/f` "if unchanged". Their `f` is exactly what the
    /// plan saw; R's `d/f` was edited since. The edit must never be removed: a look by path
    /// that went through the symlink saw their file, and the unlink in the real directory
    /// then removed the edit.
    #[test]
    fn an_edit_is_never_removed_because_a_look_went_through_a_swapped_directory() {
        let bait = crate::testkit::Bait::new(b"edited on R", b"as synced");
        let (root, link, seen) = (&bait.root, &bait.link, &bait.seen);
        let real = fs::File::open(root.join("d")).expect("open d");
        let real_f = PathBuf::from(format!("/proc/self/fd/{}/f", real.as_raw_fd()));

        let ((looked, removed), swaps) = crate::testkit::exchanging(&root.join("d"), link, || {
            let (mut looked, mut removed) = (0u32, 0u32);
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(2);
            while std::time::Instant::now() < deadline && real_f.exists() {
                // Refused outright while d is the symlink.
                if let Ok(found) = remove_if_unchanged(root, &rel("d/f"), seen) {
                    looked += 1;
                    removed += u32::from(found == IfUnchanged::Done);
                }
            }
            (looked, removed)
        });
        assert_eq!(
            fs::read(&real_f).ok().as_deref(),
            Some(&b"edited on R"[..]),
            "the edit was removed after {looked} looks and {swaps} swaps"
        );
        assert_eq!(removed, 0, "{removed} of {looked} removals went through");
        assert!(swaps > 100, "the swapper barely ran");
        assert!(looked > 20, "only {looked} looks were made");
    }

    /// Another user who can rename entries of a directory above a mapped root (a shared
    /// project directory) swaps the root for a symlink to their directory as fast as they can
    /// while directories are made in it: with the root pinned, none lands in theirs.
    #[test]
    fn a_pinned_root_swapped_for_a_symlink_takes_no_write_elsewhere() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let root = tmp.path().join("shared").join("proj");
        fs::create_dir_all(&root).expect("mkdir");
        let theirs = tmp.path().join("theirs");
        fs::create_dir(&theirs).expect("mkdir");
        let link = tmp.path().join("shared").join("link");
        std::os::unix::fs::symlink(&theirs, &link).expect("symlink");
        pin_root(&root).expect("pin");
        let (made, swaps) = crate::testkit::exchanging(&root, &link, || {
            // Most attempts are refused while the swapper runs: go on until enough were made.
            let (mut made, mut i) = (0u32, 0u32);
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
            while made < 100 && std::time::Instant::now() < deadline {
                made += u32::from(create_dirs_beneath(&root, &rel(&format!("made/{i}"))).is_ok());
                i += 1;
            }
            made
        });
        let landed: Vec<_> = fs::read_dir(&theirs).expect("read_dir").collect();
        assert!(
            landed.is_empty(),
            "{} entries landed in theirs",
            landed.len()
        );
        assert!(swaps > 100 && made > 20, "{swaps} swaps, {made} made");
    }

    /// A pinned root moved away and made again by the same name is not the root any more:
    /// refused, with the error saying so, and nothing made in the new one.
    #[test]
    fn a_pinned_root_replaced_is_refused() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let root = tmp.path().join("proj");
        fs::create_dir(&root).expect("mkdir");
        pin_root(&root).expect("pin");
        assert!(Dir::open_root(&root).is_ok());
        fs::rename(&root, tmp.path().join("proj.old")).expect("rename");
        fs::create_dir(&root).expect("mkdir");
        let refused = create_dirs_beneath(&root, &rel("made")).expect_err("replaced");
        assert!(matches!(refused, FsError::RootReplaced { .. }), "{refused}");
        assert!(!root.join("made").exists());
    }

    /// A root pinned to the identity another process found (zync-apply, to the daemon's):
    /// refused while its path leads to another directory, with nothing looked at or made
    /// there, and opened again once it leads back.
    #[test]
    fn a_root_pinned_as_found_elsewhere_opens_only_while_it_leads_there() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let root = tmp.path().join("proj");
        fs::create_dir(&root).expect("mkdir");
        fs::write(root.join("f"), b"ours").expect("write");
        let id = RootId::of(&root).expect("identity");
        assert_eq!(RootId::of(&root).expect("identity"), id, "stable");
        let theirs = tmp.path().join("theirs");
        fs::create_dir(&theirs).expect("mkdir");
        fs::write(theirs.join("f"), b"theirs").expect("write");
        fs::rename(&root, tmp.path().join("proj.real")).expect("rename");
        symlink(&theirs, &root).expect("symlink");
        let refused = pin_root_as(&root, id).expect_err("swapped");
        assert!(matches!(refused, FsError::RootReplaced { .. }), "{refused}");
        for refused in [
            Dir::open_root(&root).map(drop).expect_err("open"),
            lstat_beneath(&root, &rel("f"))
                .map(drop)
                .expect_err("lstat"),
            create_dirs_beneath(&root, &rel("made"))
                .map(drop)
                .expect_err("mkdir"),
        ] {
            assert!(matches!(refused, FsError::RootReplaced { .. }), "{refused}");
        }
        assert!(!theirs.join("made").exists());
        fs::remove_file(&root).expect("rm symlink");
        fs::rename(tmp.path().join("proj.real"), &root).expect("rename back");
        assert!(pin_root_as(&root, id).is_ok());
        assert!(matches!(
            lstat_beneath(&root, &rel("f")).expect("lstat"),
            Stat::Entry(m) if m.size == 4
        ));
    }

    /// A directory removed and made again by the same name is another one, also where it gets
    /// the old inode number back, wherever the file system keeps birth times.
    #[test]
    fn a_directory_made_again_is_another_one_where_birth_times_are_kept() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let root = tmp.path().join("proj");
        fs::create_dir(&root).expect("mkdir");
        let was = RootId::of(&root).expect("identity");
        fs::remove_dir(&root).expect("rmdir");
        fs::create_dir(&root).expect("mkdir");
        let now = RootId::of(&root).expect("identity");
        let kept = fs::metadata(&root).and_then(|m| m.created()).is_ok();
        if !kept && now.ino == was.ino {
            eprintln!("no birth times here and the inode number came back; skipped");
            return;
        }
        assert_ne!(now, was, "inode number came back: {}", now.ino == was.ino);
    }

    /// Through handles: a parent that is a symlink, a file or missing has nothing below it.
    #[test]
    fn lstat_beneath_never_looks_through_a_symlink() {
        let (_tmp, r, out) = fixture();
        fs::write(out.join("x"), b"outside").expect("write");
        assert!(matches!(crate::lstat(&r.join("l/x")), Ok(Stat::Entry(_))));
        assert_eq!(
            lstat_beneath(&r, &rel("f")).expect("f"),
            crate::lstat(&r.join("f")).expect("f")
        );
        assert_eq!(
            lstat_beneath(&r, &rel("a/b")).expect("a/b"),
            crate::lstat(&r.join("a/b")).expect("a/b")
        );
        for nothing in ["l/x", "f/x", "missing/x", "missing"] {
            assert_eq!(
                lstat_beneath(&r, &rel(nothing)).expect(nothing),
                Stat::Missing,
                "{nothing}"
            );
        }
    }

    #[test]
    fn lstat_through_a_handle_says_what_lstat_by_path_says() {
        let (_tmp, r, _out) = fixture();
        let fifo = r.join("fifo");
        crate::testkit::fifo(&fifo);
        symlink("a/b", r.join("a/rel-link")).expect("symlink");
        let root = Dir::open_root(&r).expect("root");
        let a = Dir::open_dir(&r, Some(&rel("a"))).expect("a");
        for (dir, name, path) in [
            (&root, "f", r.join("f")),
            (&root, "a", r.join("a")),
            (&root, "l", r.join("l")),
            (&root, "fifo", fifo.clone()),
            (&root, "missing", r.join("missing")),
            (&a, "rel-link", r.join("a/rel-link")),
            (&a, "b", r.join("a/b")),
        ] {
            assert_eq!(
                dir.lstat(name).expect("lstat through the handle"),
                crate::lstat(&path).expect("lstat by path"),
                "{name}"
            );
        }
        assert_eq!(root.lstat("missing").expect("lstat"), Stat::Missing);
        assert!(root.lstat("a/b").is_err(), "only single names");
    }

    fn empty(dir: &Path) -> bool {
        fs::read_dir(dir).expect("read").next().is_none()
    }

    /// A root with `a/b`, a file `f`, a symlink `l` to an outside directory and `a/l2` to `a`.
    fn fixture() -> (tempfile::TempDir, PathBuf, PathBuf) {
        let tmp = tempfile::tempdir().expect("tempdir");
        let r = tmp.path().join("root");
        let out = tmp.path().join("outside");
        fs::create_dir_all(r.join("a/b")).expect("mkdir");
        fs::create_dir(&out).expect("mkdir");
        fs::write(r.join("f"), b"x").expect("write");
        symlink(&out, r.join("l")).expect("symlink");
        symlink(r.join("a"), r.join("a/l2")).expect("symlink");
        (tmp, r, out)
    }

    /// A file opened to be read is a regular file reached without a symlink, in blocking
    /// mode, with the size and mtime of its descriptor; anything else is `None`, a FIFO
    /// included, without blocking on it.
    #[test]
    fn a_file_opened_to_read_is_regular_blocking_and_stat_ed() {
        let (_tmp, r, out) = fixture();
        fs::write(out.join("secret"), b"outside").expect("write");
        symlink(out.join("secret"), r.join("s")).expect("symlink");
        crate::testkit::fifo(&r.join("p"));
        let root = Dir::open_root(&r).expect("root");
        let opened = root
            .open_file_to_read("f")
            .expect("open")
            .expect("a regular file");
        let md = fs::metadata(r.join("f")).expect("stat");
        assert_eq!(opened.size, 1);
        assert_eq!(
            opened.mtime_ns,
            md.mtime() * 1_000_000_000 + md.mtime_nsec()
        );
        let flags = rustix::fs::fcntl_getfl(&opened.file).expect("flags");
        assert!(!flags.contains(OFlags::NONBLOCK), "{flags:?}");
        // Opened to write, the same way: blocking, and writable.
        let written = root.open_file("f", true).expect("open").expect("a file");
        let flags = rustix::fs::fcntl_getfl(&written).expect("flags");
        assert!(!flags.contains(OFlags::NONBLOCK), "{flags:?}");
        assert!(flags.contains(OFlags::RDWR), "{flags:?}");
        for name in ["s", "p", "a", "missing"] {
            assert!(
                root.open_file_to_read(name).expect("open").is_none(),
                "{name} opened"
            );
            assert!(
                root.open_file(name, true).expect("open").is_none(),
                "{name} opened to write"
            );
        }
    }

    /// Both lookups (openat2 and the walk) give the same answers: real directories open,
    /// a symlink anywhere is refused and named, a file is not a directory, a missing one is
    /// `NotFound` at the missing component.
    #[test]
    fn openat2_and_the_walk_refuse_symlinks_and_name_the_component() {
        let (_tmp, r, out) = fixture();
        let root = Dir::open_root(&r).expect("root");
        type Lookup = fn(&Dir, &RelPath) -> Result<Dir, FsError>;
        for (how, lookup) in [("openat2", Dir::subdir as Lookup), ("walk", Dir::walk)] {
            let d = lookup(&root, &rel("a/b")).expect(how);
            assert_eq!(d.path(), r.join("a/b"), "{how}");
            d.create_new("new").expect("create");
            fs::remove_file(r.join("a/b/new")).expect("rm");
            for (p, at) in [
                ("l", "l"),
                ("l/x", "l"),
                ("a/l2/b", "a/l2"),
                ("a/l2", "a/l2"),
            ] {
                match lookup(&root, &rel(p)) {
                    Err(FsError::SymlinkInPath { path }) => {
                        assert_eq!(path, r.join(at), "{how} {p}")
                    }
                    other => panic!("{how} {p}: expected SymlinkInPath, got {other:?}"),
                }
            }
            assert!(
                matches!(lookup(&root, &rel("f/x")), Err(FsError::NotADirectory { path }) if path == r.join("f")),
                "{how}"
            );
            match lookup(&root, &rel("a/missing/x")) {
                Err(FsError::Io { source, path, .. }) => {
                    assert_eq!(source.kind(), io::ErrorKind::NotFound, "{how}");
                    assert_eq!(path, r.join("a/missing"), "{how}");
                }
                other => panic!("{how}: expected NotFound, got {other:?}"),
            }
        }
        assert!(empty(&out), "something was created outside");
        // This kernel has openat2 (5.6+): the fast path was the one tested above.
        assert!(!openat2_missing());
    }

    #[test]
    fn a_symlinked_parent_is_refused_with_a_clear_message_and_nothing_is_created_outside() {
        let (_tmp, r, out) = fixture();
        let e = set_mode_beneath(&r, &rel("l/x"), 0o600).expect_err("through a symlink");
        assert_eq!(
            e.to_string(),
            format!(
                "refusing to write through {}: it is a symlink",
                r.join("l").display()
            )
        );
        assert!(create_dirs_beneath(&r, &rel("l/new/deeper")).is_err());
        assert!(remove_beneath(&r, &rel("l/x")).is_err());
        assert!(rename_beneath(&r, &rel("f"), &rel("l/f")).is_err());
        assert!(Dir::open_dir(&r, Some(&rel("l"))).is_err());
        assert!(empty(&out), "something was created outside");
        assert!(r.join("f").exists());
    }

    #[test]
    fn chmod_never_follows_a_symlink() {
        let (_tmp, r, out) = fixture();
        let victim = out.join("victim");
        fs::write(&victim, b"v").expect("write");
        fs::set_permissions(&victim, fs::Permissions::from_mode(0o600)).expect("chmod");
        symlink(&victim, r.join("a/link")).expect("symlink");
        set_mode_beneath(&r, &rel("a/link"), 0o777).expect("a symlink is skipped");
        assert_eq!(fs::metadata(&victim).expect("stat").mode() & 0o7777, 0o600);
        set_mtime_beneath(&r, &rel("a/link"), 1_000_000_000).expect("mtime of the link");
        assert_ne!(fs::metadata(&victim).expect("stat").mtime(), 1);
        // Files and directories are changed, also ones their owner cannot read.
        fs::write(r.join("a/g"), b"g").expect("write");
        fs::set_permissions(r.join("a/g"), fs::Permissions::from_mode(0o000)).expect("chmod");
        set_mode_beneath(&r, &rel("a/g"), 0o640).expect("file");
        set_mode_beneath(&r, &rel("a/b"), 0o750).expect("dir");
        let mode = |p: &Path| fs::symlink_metadata(p).expect("stat").mode() & 0o7777;
        assert_eq!((mode(&r.join("a/g")), mode(&r.join("a/b"))), (0o640, 0o750));
        assert!(set_mode_beneath(&r, &rel("a/missing"), 0o600).is_err());
    }

    #[test]
    fn creates_renames_and_removes_stay_in_the_handle_s_directory() {
        let (_tmp, r, out) = fixture();
        let made = create_dirs_beneath(&r, &rel("a/x/y")).expect("mkdirs");
        assert_eq!(made, vec![rel("a/x"), rel("a/x/y")]);
        assert!(create_dirs_beneath(&r, &rel("a/x/y"))
            .expect("again")
            .is_empty());
        let d = Dir::open_dir(&r, Some(&rel("a/x/y"))).expect("open");
        let (_, name) = d.create_temp(".t-").expect("temp");
        d.symlink("../../..", "s").expect("symlink");
        d.rename(&name, &d, "file").expect("rename");
        assert!(r.join("a/x/y/file").is_file());
        assert!(d.create_new("file").is_err(), "O_EXCL");
        // A symlink at the name is never followed: creating through it fails.
        assert!(d.create_new("s").is_err());
        assert!(d.open_file("s", true).expect("open").is_none());
        rename_beneath(&r, &rel("a/x/y/file"), &rel("a/moved")).expect("rename");
        assert!(r.join("a/moved").is_file());
        assert!(remove_beneath(&r, &rel("a/moved")).expect("rm"));
        assert!(!remove_beneath(&r, &rel("a/moved")).expect("rm again"));
        assert!(remove_dir_beneath(&r, &rel("a/x")).is_err(), "not empty");
        d.unlink("s").expect("unlink");
        assert!(remove_dir_beneath(&r, &rel("a/x/y")).expect("rmdir"));
        assert!(empty(&out));
        for bad in ["", "..", "a/b", "."] {
            assert!(d.unlink(bad).is_err(), "{bad:?}");
        }
    }

    /// A group's files in one directory share one handle; a symlinked parent is refused, and
    /// the refusal is not kept: once a real directory is there, it is opened.
    #[test]
    fn parents_open_each_directory_once_and_never_through_a_symlink() {
        let (_tmp, r, out) = fixture();
        let mut parents = Parents::default();
        let one = parents.of(&r, &rel("a/b/x")).expect("a/b");
        let two = parents.of(&r, &rel("a/b/y")).expect("a/b again");
        assert!(Arc::ptr_eq(&one, &two), "a/b was opened twice");
        let top = parents.of(&r, &rel("f")).expect("the root");
        assert!(!Arc::ptr_eq(&one, &top));
        assert_eq!(top.path(), r.as_path());

        assert!(matches!(
            parents.of(&r, &rel("l/x")),
            Err(FsError::SymlinkInPath { .. })
        ));
        assert!(empty(&out));
        fs::remove_file(r.join("l")).expect("rm");
        fs::create_dir(r.join("l")).expect("mkdir");
        let real = parents.of(&r, &rel("l/x")).expect("a real l now");
        assert_eq!(real.path(), r.join("l"));
    }

    /// A directory moved away while its group is under way, a symlink put in its place: the
    /// handle still names the directory that was moved, so nothing reaches the symlink's target.
    #[test]
    fn a_directory_swapped_for_a_symlink_mid_group_keeps_its_handle() {
        let (tmp, r, out) = fixture();
        let mut parents = Parents::default();
        let before = parents.of(&r, &rel("a/b/x")).expect("a/b");
        let moved = tmp.path().join("moved");
        fs::rename(r.join("a/b"), &moved).expect("move a/b away");
        symlink(&out, r.join("a/b")).expect("symlink in its place");
        let after = parents.of(&r, &rel("a/b/y")).expect("kept handle");
        let (file, name) = after.create_temp(".t").expect("create through the handle");
        drop(file);
        assert!(Arc::ptr_eq(&before, &after));
        assert!(
            moved.join(&name).is_file(),
            "not in the directory that was moved"
        );
        assert!(empty(&out), "written through the symlink");
        // A new group looks again and refuses the symlink.
        assert!(matches!(
            Parents::default().of(&r, &rel("a/b/y")),
            Err(FsError::SymlinkInPath { .. })
        ));
    }
}
