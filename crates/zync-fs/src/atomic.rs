//! Replacing a file or symlink all at once (invariant 1): content goes to a temp file in the same
//! directory, is checked against its sha256, flushed, and renamed over the destination. The
//! directory is reached once through a handle ([`Dir`]) and the temp file created, renamed and
//! removed relative to it, so no symlinked parent is ever followed (invariant 3).

use crate::attrs::set_file_mtime;
use crate::beneath::{Dir, IfUnchanged, Parents};
use crate::checkpoint::{CheckedSha256, Checkpoints, WindowKey};
use crate::ignore::TEMP_PREFIX;
use crate::meta::Stat;
use crate::path::RelPath;
use crate::space::Reserve;
use std::fs::File;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

pub use crate::attrs::{fsync_dir, set_mode, set_mtime, sync_filesystems};
pub use crate::beneath::{
    create_dirs_beneath, fsync_dir_beneath, fsync_file_beneath, open_file_beneath, remove_beneath,
    remove_dir_beneath, rename_beneath, set_mode_beneath, set_mtime_beneath,
};
pub use crate::dirs::{
    check_parents, ensure_dir, remove_partials, remove_temp_files, PARTIAL_MAX_AGE,
};
pub use crate::error::FsError;

/// Pieces at least this large are hashed on a second thread (rayon's) while they are written.
const PARALLEL_HASH_MIN: usize = 256 << 10;
/// The largest single `write(2)`: on Linux 6.x, writes of a megabyte or more into the page cache
/// were measured several times slower than the same bytes in 256 KiB pieces (`dd` with `bs=1M`
/// against `bs=256K`: 2.5–4.5 s against 0.5 s of system time for 1 GiB on ext4), the kernel
/// allocating large folios for them.
const WRITE_PIECE: usize = 256 << 10;
/// How much of a file is written before the kernel is asked to start putting it on disk.
const WRITEBACK_WINDOW: u64 = 8 << 20;
/// Every this many bytes of a file written, its data so far is flushed by a thread of its own
/// while the writes go on ([`Flusher`]).
const FLUSH_WINDOW: u64 = 64 << 20;
/// Files smaller than this are written without reserving their space first: one more syscall
/// would cost more than the allocation it saves.
const RESERVE_MIN: u64 = 1 << 20;

/// Asks the kernel to start writing `from..to` of `file` to disk without waiting for it
/// (`sync_file_range(SYNC_FILE_RANGE_WRITE)`): a hint that spreads a big file's writeback over
/// its download. It promises nothing about durability, so a failure is ignored; the fsync
/// before the rename is what counts.
#[cfg(target_os = "linux")]
fn start_writeback(file: &File, from: u64, to: u64) {
    use std::os::fd::AsRawFd;
    let (Ok(offset), Ok(len)) = (i64::try_from(from), i64::try_from(to - from)) else {
        return;
    };
    // SAFETY: plain syscall on a descriptor this file owns; no memory is passed.
    unsafe {
        libc::sync_file_range(file.as_raw_fd(), offset, len, libc::SYNC_FILE_RANGE_WRITE);
    }
}

#[cfg(not(target_os = "linux"))]
fn start_writeback(_file: &File, _from: u64, _to: u64) {}

/// Flushes a big file's data (`fdatasync`) on a thread of its own while more of it is written.
/// `sync_file_range` starts the kernel's writeback, but a disk with a write cache of its own (a
/// VM's virtual disk, as on the machine the benchmark runs on) takes the bytes into that cache
/// and puts them on the medium only when flushed: the `fsync` before a 1 GiB download's rename
/// then waited 1.5 s for all of it. Flushed every [`FLUSH_WINDOW`] as the download goes on, the
/// disk writes while the bytes arrive and the last flush waits for the last window only (1 GiB
/// written at 430 MB/s: 3.4-3.8 s until durable with the hint alone, 2.6 s with this).
///
/// A failed flush fails the file: the kernel reports a writeback error once per open file
/// description, and this thread's descriptor shares the writer's, so the final `fsync` would
/// not report it again.
struct Flusher {
    /// Holds at most one request: one asked for and not started yet covers the next.
    wake: Option<std::sync::mpsc::SyncSender<()>>,
    thread: Option<std::thread::JoinHandle<std::io::Result<u64>>>,
}

impl Flusher {
    fn start(file: &File) -> std::io::Result<Flusher> {
        let file = file.try_clone()?;
        let (wake, requests) = std::sync::mpsc::sync_channel::<()>(1);
        let thread = std::thread::Builder::new()
            .name("zync-flush".into())
            .spawn(move || {
                let mut flushes = 0;
                while requests.recv().is_ok() {
                    file.sync_data()?;
                    flushes += 1;
                }
                Ok(flushes)
            })?;
        Ok(Flusher {
            wake: Some(wake),
            thread: Some(thread),
        })
    }

    /// Asks for a flush of everything written so far, without waiting for it.
    fn request(&self) {
        if let Some(wake) = &self.wake {
            // Full: a flush not started yet covers this one. Closed: the thread failed, and
            // `finish` says so.
            let _ = wake.try_send(());
        }
    }

    /// Waits for the flushes asked for; how many ran, or the first failure.
    fn finish(mut self) -> std::io::Result<u64> {
        self.wake = None;
        match self.thread.take() {
            Some(thread) => thread
                .join()
                .unwrap_or_else(|_| Err(std::io::Error::other("the flushing thread panicked"))),
            None => Ok(0),
        }
    }
}

impl Drop for Flusher {
    /// Closes the requests; the thread ends after the flush it may be in (it holds its own
    /// descriptor), without anyone waiting for it.
    fn drop(&mut self) {
        self.wake = None;
    }
}

/// A temp file being written in its destination's directory, held through that directory's
/// handle. Dropped while still armed, it is removed (relative to the handle, never by path).
struct Temp {
    dir: Arc<Dir>,
    name: String,
    file: File,
    armed: bool,
}

impl Temp {
    fn path(&self) -> PathBuf {
        self.dir.path_of(&self.name)
    }

    /// Gives up removing the file on drop (it was renamed, or is now a [`Sealed`]'s to
    /// remove); returns its name.
    fn disarm(mut self) -> String {
        self.armed = false;
        std::mem::take(&mut self.name)
    }
}

impl Drop for Temp {
    fn drop(&mut self) {
        if self.armed {
            let _ = self.dir.unlink(&self.name);
        }
    }
}

/// A file being written next to its destination. Nothing is visible at the destination until
/// [`AtomicFile::commit`]; dropping an uncommitted `AtomicFile` removes its temp file.
pub struct AtomicFile {
    root: PathBuf,
    rel: RelPath,
    dest: PathBuf,
    temp: Temp,
    hasher: CheckedSha256,
    written: u64,
    /// Bytes of disk reserved from offset 0 ([`AtomicFile::reserve`]); what the writes did not
    /// use is given back when the file is sealed or kept as a partial.
    reserved: u64,
    /// A write failed: the hash may cover bytes that are not in the file, so it is never sealed.
    broken: bool,
    /// Started once a [`FLUSH_WINDOW`] is written.
    flusher: Option<Flusher>,
}

impl std::fmt::Debug for AtomicFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AtomicFile")
            .field("dest", &self.dest)
            .field("temp", &self.temp.path())
            .field("written", &self.written)
            .finish_non_exhaustive()
    }
}

impl AtomicFile {
    /// Starts writing `root/rel`: opens the destination's directory from `root` without
    /// following a symlink, then creates a temp file named `.zync-tmp-*` in it
    /// (`O_CREAT | O_EXCL | O_NOFOLLOW`, relative to that directory's handle).
    ///
    /// # Errors
    ///
    /// As [`check_parents`]; [`FsError::Io`] when the temp file cannot be created.
    pub fn create(root: &Path, rel: &RelPath) -> Result<AtomicFile, FsError> {
        AtomicFile::create_in(&mut Parents::default(), root, rel)
    }

    /// As [`AtomicFile::create`], with the directory's handle from `parents` (opened there
    /// once for a group of files).
    ///
    /// # Errors
    ///
    /// As [`AtomicFile::create`].
    pub fn create_in(
        parents: &mut Parents,
        root: &Path,
        rel: &RelPath,
    ) -> Result<AtomicFile, FsError> {
        let dest = rel.to_path(root);
        let dir = parents.of(root, rel)?;
        let (file, name) = dir
            .create_temp(TEMP_PREFIX)
            .map_err(|e| FsError::io("create a temp file in", dir.path(), e))?;
        let temp = Temp {
            dir,
            name,
            file,
            armed: true,
        };
        Ok(AtomicFile {
            root: root.to_path_buf(),
            rel: rel.clone(),
            dest,
            temp,
            hasher: CheckedSha256::new(),
            written: 0,
            reserved: 0,
            broken: false,
            flusher: None,
        })
    }

    /// Reserves disk space for a file that will be `len` bytes long, before its content is
    /// written: a disk or quota without room for it is an error now, before anything is
    /// downloaded, and the file system allocates the file in one go instead of page by page
    /// as the writes come (about 0.1 s less system time per GiB on ext4). Smaller files, and
    /// file systems that cannot reserve space, are left to allocate as they are written.
    ///
    /// # Errors
    ///
    /// [`FsError::NoSpace`] when the file system, or the quota, has no room for the bytes not
    /// written or reserved yet (with a few MiB to spare); [`FsError::Io`] when the file is
    /// larger than the file system can hold.
    pub fn reserve(&mut self, len: u64) -> Result<(), FsError> {
        let already = self.reserved.max(self.written);
        if len < RESERVE_MIN || len <= already {
            return Ok(());
        }
        match crate::space::reserve(&self.temp.file, len, already) {
            Ok(Reserve::Done) => {
                self.reserved = len;
                Ok(())
            }
            Ok(Reserve::NotHere) => Ok(()),
            Err(e) => {
                // A failed fallocate may have allocated part of it: give that back.
                self.reserved = len;
                self.release_unused();
                Err(FsError::io_or_no_space("reserve space for", &self.dest, e))
            }
        }
    }

    /// Checks, before a download of `len` more bytes of `root/rel` is asked for, that the file
    /// system that will hold it has room for them, after the `claimed` bytes that downloads
    /// already asked for and not reserved yet will take: the check [`AtomicFile::reserve`]
    /// makes, so that a file that cannot fit is not sent over the network first. Small files,
    /// and file systems that do not reserve, are not checked.
    ///
    /// The file's directory is reached as it is for writing ([`Dir::parent_of`]): by path, a
    /// directory another local user swapped for a FIFO (or a symlink to one) would be opened
    /// and waited on forever. A directory that is not there yet (or cannot be opened) has
    /// nothing to check.
    ///
    /// # Errors
    ///
    /// [`FsError::NoSpace`] when there is not room for `len` bytes after `claimed` (and a few
    /// MiB to spare); as [`check_parents`] when a component of the directory's path is a
    /// symlink or not a directory (the download could not be written there either).
    pub fn check_room(root: &Path, rel: &RelPath, len: u64, claimed: u64) -> Result<(), FsError> {
        if len < RESERVE_MIN {
            return Ok(());
        }
        let dir = match Dir::parent_of(root, rel) {
            Ok(dir) => dir,
            Err(e) if e.is_permanent() => return Err(e),
            // Missing, or unreadable: the writes will tell.
            Err(_) => return Ok(()),
        };
        crate::space::check_room(&dir, len, claimed)
            .map_err(|e| FsError::io_or_no_space("check the free space for", rel.to_path(root), e))
    }

    /// Gives back reserved space past what was written (truncating a file to its own length
    /// frees the blocks reserved beyond its end). Only a hint of disk use: a failure is ignored.
    fn release_unused(&mut self) {
        if self.reserved > self.written {
            let _ = self.temp.file.set_len(self.written);
            self.reserved = 0;
        }
    }

    /// Appends `data`, hashing it on the way. After a failed write the file can only be dropped
    /// (sealing it fails). A large piece is hashed on a second thread while
    /// it is copied into the page cache (the two cost about the same), every
    /// 8 MiB written starts the kernel writing that window to disk, and every 64 MiB
    /// has a thread of its own flush what was written ([`Flusher`]), so that the
    /// flush before the rename finds little left to do.
    ///
    /// # Errors
    ///
    /// [`FsError::NoSpace`] when the disk or the quota is full; [`FsError::Io`] when the
    /// write fails otherwise.
    pub fn write(&mut self, data: &[u8]) -> Result<(), FsError> {
        let AtomicFile {
            dest,
            temp,
            hasher,
            written,
            broken,
            ..
        } = self;
        let file = &mut temp.file;
        let put = |file: &mut File| {
            data.chunks(WRITE_PIECE)
                .try_for_each(|piece| file.write_all(piece))
        };
        let wrote = if data.len() >= PARALLEL_HASH_MIN {
            rayon::join(|| hasher.update(data), || put(file)).1
        } else {
            hasher.update(data);
            put(file)
        };
        if let Err(e) = wrote {
            *broken = true;
            // Named by its destination, like every error here: the temp file's name means
            // nothing to the user.
            return Err(FsError::io_or_no_space(
                "write the new content of",
                &*dest,
                e,
            ));
        }
        // A window that differs from the older version's: SHA-256 goes on from its start,
        // read back from the file (still in the page cache).
        if hasher.behind(false).is_some() {
            if let Err(e) = hasher.catch_up(&temp.file) {
                *broken = true;
                return Err(FsError::io("read back the new content of", &*dest, e));
            }
        }
        let before = *written;
        *written += data.len() as u64;
        let (done, was) = (
            *written / WRITEBACK_WINDOW * WRITEBACK_WINDOW,
            before / WRITEBACK_WINDOW * WRITEBACK_WINDOW,
        );
        if done > was {
            start_writeback(&temp.file, was, done);
        }
        if *written / FLUSH_WINDOW > before / FLUSH_WINDOW {
            self.flush_behind();
        }
        Ok(())
    }

    /// Has what was written so far flushed by the [`Flusher`], started the first time.
    fn flush_behind(&mut self) {
        if self.flusher.is_none() {
            match Flusher::start(&self.temp.file) {
                Ok(flusher) => self.flusher = Some(flusher),
                // Only the final flush is then left to do it all.
                Err(e) => tracing::debug!(path = %self.dest.display(), "no flushing thread: {e}"),
            }
        }
        if let Some(flusher) = &self.flusher {
            flusher.request();
        }
    }

    /// Waits for the [`Flusher`]'s flushes; one that failed breaks the file.
    fn stop_flusher(&mut self) -> Result<(), FsError> {
        let Some(flusher) = self.flusher.take() else {
            return Ok(());
        };
        flusher.finish().map(|_| ()).map_err(|e| {
            self.broken = true;
            FsError::io("flush the new content of", &self.dest, e)
        })
    }

    /// Where a partial download of `rel` whose complete content has `sha256` is kept between
    /// attempts: beside the destination, named `.zync-tmp-partial-<sha prefix>-<file name>`.
    pub fn partial_path(root: &Path, rel: &RelPath, sha256: &str) -> PathBuf {
        let dir = rel
            .parent()
            .map_or_else(|| root.to_path_buf(), |p| p.to_path(root));
        dir.join(partial_name(rel, sha256))
    }

    /// Keeps what was written so far as the partial download of content `sha256`, so that a
    /// later [`AtomicFile::resume`] continues where this attempt stopped (as rsync's
    /// `--partial` does). The destination is untouched.
    ///
    /// # Errors
    ///
    /// [`FsError::Io`] when the temp file cannot be renamed.
    pub fn keep_partial(mut self, sha256: &str) -> Result<PathBuf, FsError> {
        self.release_unused();
        // What a failed flush left on the disk is unknown: not worth resuming from.
        self.stop_flusher()?;
        let name = partial_name(&self.rel, sha256);
        let partial = self.temp.dir.path_of(&name);
        let temp = &self.temp;
        temp.dir
            .rename(&temp.name, &temp.dir, &name)
            .map_err(|e| FsError::io("keep a partial download as", &partial, e))?;
        self.temp.armed = false;
        Ok(partial)
    }

    /// The length of the partial download of `rel` with content `sha256` that
    /// [`AtomicFile::resume`] would continue from, or 0 when there is none it would trust (see
    /// there). Looked at through the directory's handle, as the resume opens it.
    pub fn resume_offset(root: &Path, rel: &RelPath, sha256: &str) -> u64 {
        let Ok(dir) = Dir::parent_of(root, rel) else {
            return 0;
        };
        match open_partial(&dir, &partial_name(rel, sha256), false) {
            Ok(Some((_, len))) => len,
            Ok(None) | Err(_) => 0,
        }
    }

    /// Continues a partial download of `rel` with content `sha256`, if one was kept: the bytes
    /// already there are hashed again (cheaper than fetching them) and writing appends.
    /// Returns `None` when there is no partial, or none zync can trust as its own: in a
    /// directory another local user can write to, they can put their own file at the partial's
    /// name (and read what is appended to it), or a hard link to one of this user's files
    /// elsewhere (and have it appended to, outside the root: invariant 3). Only a regular file
    /// reached without a symlink, owned by this user, with no other link and no permission
    /// bits but the owner's read and write (zync's temp files are made 0600) is resumed;
    /// anything else is left alone, never opened for writing, and the download starts over in
    /// a temp file of its own ([`remove_partials`] removes the name once the file is in place).
    ///
    /// # Errors
    ///
    /// As [`check_parents`]; [`FsError::Io`] when the partial cannot be read.
    pub fn resume(root: &Path, rel: &RelPath, sha256: &str) -> Result<Option<AtomicFile>, FsError> {
        let dir = Arc::new(Dir::parent_of(root, rel)?);
        let name = partial_name(rel, sha256);
        let partial = dir.path_of(&name);
        use std::io::{Read, Seek};
        let Some((mut file, _)) = open_partial(&dir, &name, true)
            .map_err(|e| FsError::io("open partial download", &partial, e))?
        else {
            return Ok(None);
        };
        // Without checkpoints: the next version of this file is hashed whole.
        let mut hasher = CheckedSha256::new();
        let mut written = 0u64;
        let mut buf = vec![0u8; 256 * 1024];
        loop {
            let n = file
                .read(&mut buf)
                .map_err(|e| FsError::io("read partial download", &partial, e))?;
            if n == 0 {
                break;
            }
            hasher.update(&buf[..n]);
            written += n as u64;
        }
        // Blocks a killed run had reserved past the end are given back (truncating a file to
        // its own length frees them); they are reserved again when the download goes on.
        file.set_len(written)
            .map_err(|e| FsError::io("open partial download", &partial, e))?;
        file.seek(std::io::SeekFrom::End(0))
            .map_err(|e| FsError::io("read partial download", &partial, e))?;
        let temp = Temp {
            dir,
            name,
            file,
            armed: true,
        };
        Ok(Some(AtomicFile {
            root: root.to_path_buf(),
            rel: rel.clone(),
            dest: rel.to_path(root),
            temp,
            hasher,
            written,
            reserved: 0,
            broken: false,
            flusher: None,
        }))
    }

    /// Keeps the [`Checkpoints`] of this file's content (see [`crate::checkpoint`]), their
    /// window hashes keyed with `key`, handed out by [`Sealed::checkpoints`], and skips the
    /// SHA-256 of the windows that match `prior`'s: those of the version this file replaces.
    /// Only before the first write.
    pub fn keep_checkpoints(&mut self, prior: Option<&Checkpoints>, key: &WindowKey) {
        self.hasher.keep_checkpoints(prior, key);
    }

    /// Bytes written so far.
    pub fn written(&self) -> u64 {
        self.written
    }

    /// The destination path.
    pub fn dest(&self) -> &Path {
        &self.dest
    }

    /// Verifies the sha256 of what was written, sets the permission bits and mtime, fsyncs, and
    /// renames over the destination, in the directory handle the temp file was made in.
    /// `rename` replaces a symlink at the destination itself, never its target. The parent
    /// directory is not fsynced: call [`fsync_dir`] once per batch.
    ///
    /// # Errors
    ///
    /// [`FsError::HashMismatch`] when the content does not match (the temp file is removed, the
    /// destination untouched); [`FsError::Io`] otherwise. On any error the temp file is removed.
    pub fn commit(self, expected_sha256: &str, mode: u32, mtime_ns: i64) -> Result<(), FsError> {
        self.rename_into_place(expected_sha256, mode, mtime_ns, true)
    }

    /// As [`AtomicFile::commit`], but only over what `check` approves. `check` runs after the
    /// flush, right before the rename, with the directory handle the rename goes through and
    /// the destination's name in it, and returns what it approved replacing (as
    /// [`crate::lstat`] describes it; [`Stat::Missing`] for nothing); the rename then happens
    /// only if that still stands there, with no moment between the last look and the rename
    /// ([`Dir::replace_if`]). Returns [`IfUnchanged::Done`] when the file took its name;
    /// otherwise nothing was replaced and the temp file is removed. A caller that must not
    /// replace what changed looks through that handle ([`Dir::lstat`],
    /// [`Dir::open_file_to_read`]): a look by path could be led into another directory by a
    /// parent swapped for a symlink, and approve a file it never saw.
    ///
    /// # Errors
    ///
    /// As [`AtomicFile::commit`], or `check`'s error (nothing renamed, the temp removed).
    pub fn commit_if<E: From<FsError>>(
        self,
        expected_sha256: &str,
        mode: u32,
        mtime_ns: i64,
        check: impl FnOnce(&Dir, &str) -> Result<Stat, E>,
    ) -> Result<IfUnchanged, E> {
        let (rel, dest) = (self.rel.clone(), self.dest.clone());
        let (temp, _) = self.finish(expected_sha256, mode, mtime_ns)?;
        temp.file
            .sync_all()
            .map_err(|e| FsError::io("flush the new content of", &dest, e))?;
        let approved = check(&temp.dir, rel.file_name())?;
        let placed = temp
            .dir
            .replace_if(&temp.name, rel.file_name(), &approved)
            .map_err(|e| FsError::io("rename a temp file to", &dest, e))?;
        if placed == IfUnchanged::Done {
            temp.disarm();
        }
        Ok(placed)
    }

    /// As [`AtomicFile::commit`] without the flush: the file takes its name at once, and is
    /// durable only once the caller flushes its file system (or the file). For content that
    /// counts only after such a flush, such as the files of an upstream session, which E
    /// flushes together when the session is finalized.
    ///
    /// # Errors
    ///
    /// As [`AtomicFile::commit`].
    pub fn commit_unflushed(
        self,
        expected_sha256: &str,
        mode: u32,
        mtime_ns: i64,
    ) -> Result<(), FsError> {
        self.rename_into_place(expected_sha256, mode, mtime_ns, false)
    }

    /// [`AtomicFile::commit`], flushing the content first or not.
    fn rename_into_place(
        self,
        expected_sha256: &str,
        mode: u32,
        mtime_ns: i64,
        flush: bool,
    ) -> Result<(), FsError> {
        let (rel, dest) = (self.rel.clone(), self.dest.clone());
        let (temp, _) = self.finish(expected_sha256, mode, mtime_ns)?;
        if flush {
            temp.file
                .sync_all()
                .map_err(|e| FsError::io("flush the new content of", &dest, e))?;
        }
        temp.dir
            .rename(&temp.name, &temp.dir, rel.file_name())
            .map_err(|e| FsError::io("rename a temp file to", &dest, e))?;
        temp.disarm();
        Ok(())
    }

    /// Verifies the sha256 of what was written and sets the permission bits and mtime, but does
    /// not flush: the returned [`Sealed`] file is renamed into place by
    /// [`Sealed::install_new`] or [`Sealed::install_if_unchanged`]
    /// only after the caller made a whole batch durable at once ([`sync_filesystems`]), so that
    /// a batch of small files costs one flush instead of one per file (invariant 1 still holds:
    /// no file is renamed into place before its content is on disk). The file is closed, so
    /// many sealed files hold no descriptors.
    ///
    /// # Errors
    ///
    /// As [`AtomicFile::commit`]; the temp file is removed on any error.
    pub fn seal(self, expected_sha256: &str, mode: u32, mtime_ns: i64) -> Result<Sealed, FsError> {
        let (root, rel, dest) = (self.root.clone(), self.rel.clone(), self.dest.clone());
        let (temp, checkpoints) = self.finish(expected_sha256, mode, mtime_ns)?;
        let temp_path = temp.path();
        let name = temp.disarm();
        Ok(Sealed {
            root,
            rel,
            dest,
            temp_path,
            name: Some(name),
            checkpoints,
        })
    }

    /// Checks the hash and sets mode and mtime on the temp file (the mtime before any flush, so
    /// that it is durable too).
    fn finish(
        mut self,
        expected_sha256: &str,
        mode: u32,
        mtime_ns: i64,
    ) -> Result<(Temp, Option<Checkpoints>), FsError> {
        self.release_unused();
        self.stop_flusher()?;
        let AtomicFile {
            dest,
            temp,
            hasher,
            broken,
            ..
        } = self;
        if broken {
            return Err(FsError::io(
                "seal the new content of",
                dest,
                std::io::Error::other("an earlier write to it failed"),
            ));
        }
        let mut hasher = hasher;
        if hasher.behind(true).is_some() {
            hasher
                .catch_up(&temp.file)
                .map_err(|e| FsError::io("read back the new content of", &dest, e))?;
        }
        let (actual, checkpoints) = hasher.finish();
        if !actual.eq_ignore_ascii_case(expected_sha256) {
            return Err(FsError::HashMismatch {
                path: dest,
                expected: expected_sha256.to_string(),
                actual,
            });
        }
        let file = &temp.file;
        file.set_permissions(std::fs::Permissions::from_mode(mode & 0o7777))
            .map_err(|e| FsError::io("set the mode of the new content of", &dest, e))?;
        set_file_mtime(file, &dest, mtime_ns)?;
        Ok((temp, checkpoints))
    }
}

/// A complete, verified temp file waiting for its rename (see [`AtomicFile::seal`]). It holds
/// no descriptor: its install reaches the directory again through a handle and renames
/// relative to it. Dropping it removes the temp file the same way.
#[derive(Debug)]
pub struct Sealed {
    root: PathBuf,
    rel: RelPath,
    dest: PathBuf,
    temp_path: PathBuf,
    /// The temp file's name in the destination's directory; `None` once renamed.
    name: Option<String>,
    /// The content's checkpoints, when they were kept ([`AtomicFile::keep_checkpoints`]).
    checkpoints: Option<Checkpoints>,
}

impl Sealed {
    /// The checkpoints of the content, when they were kept
    /// ([`AtomicFile::keep_checkpoints`]), for the next version written over it.
    pub fn checkpoints(&self) -> Option<&Checkpoints> {
        self.checkpoints.as_ref()
    }

    /// The temp file's path (to sync its file system before it is installed).
    pub fn temp_path(&self) -> &Path {
        &self.temp_path
    }

    /// Flushes this one file's content (for a big file, or a batch too small to be worth a
    /// flush of the whole file system).
    ///
    /// # Errors
    ///
    /// [`FsError::Io`] when the file cannot be opened or flushed.
    pub fn sync(&self) -> Result<(), FsError> {
        let flush = || -> Result<(), std::io::Error> {
            let dir = Dir::parent_of(&self.root, &self.rel).map_err(std::io::Error::other)?;
            let name = self.name.as_deref().unwrap_or_default();
            match dir.open_file(name, false)? {
                Some(f) => f.sync_all(),
                None => Err(std::io::Error::from(std::io::ErrorKind::NotFound)),
            }
        };
        flush().map_err(|e| FsError::io("flush the new content of", &self.dest, e))
    }

    /// Renames the file over its destination if what stands there is still `expected` (as
    /// [`crate::lstat`] described it when the change was planned); returns the file back, not
    /// renamed, when something else is there now (an edit made meanwhile, for the caller to
    /// keep before installing it where nothing is). The look and the rename go through one handle of the
    /// destination's directory, reached without following symlinks (a directory swapped for
    /// a symlink between a look by path and the rename could make the look see a file outside
    /// the root that matches `expected` while the rename replaced the edited one), with no
    /// moment between them ([`Dir::replace_if`]). Call only after the content was made
    /// durable.
    ///
    /// # Errors
    ///
    /// As [`check_parents`] if a parent became a symlink meanwhile (nothing is renamed
    /// through it); [`FsError::Io`] when the look or the rename fails. The temp file is
    /// removed on any error.
    pub fn install_if_unchanged(mut self, expected: &Stat) -> Result<Option<Sealed>, FsError> {
        let dir = Dir::parent_of(&self.root, &self.rel)?;
        let name = self.name.as_deref().unwrap_or_default();
        match dir
            .replace_if(name, self.rel.file_name(), expected)
            .map_err(|e| FsError::io("rename a temp file to", &self.dest, e))?
        {
            IfUnchanged::Done => {
                self.name = None;
                Ok(None)
            }
            IfUnchanged::Gone | IfUnchanged::Changed => Ok(Some(self)),
        }
    }

    /// Renames the file into place only if nothing is at its destination: for a file planned
    /// where R had nothing, so that whatever appeared there since (an edit on R) is never
    /// replaced, with no look at the path first. Returns the file back, not renamed, when
    /// something is there or the file system cannot rename without replacing: the caller
    /// then looks and decides ([`Sealed::install_if_unchanged`]). Call only after the content was made
    /// durable.
    ///
    /// # Errors
    ///
    /// As [`Sealed::install_if_unchanged`].
    pub fn install_new(self) -> Result<Option<Sealed>, FsError> {
        self.install_new_in(&mut Parents::default())
    }

    /// As [`Sealed::install_new`], with the directory's handle from `parents` (opened there
    /// once for a batch of renames).
    ///
    /// # Errors
    ///
    /// As [`Sealed::install_if_unchanged`].
    pub fn install_new_in(mut self, parents: &mut Parents) -> Result<Option<Sealed>, FsError> {
        let dir = parents.of(&self.root, &self.rel)?;
        let name = self.name.as_deref().unwrap_or_default();
        match dir.rename_noreplace(name, &dir, self.rel.file_name()) {
            Ok(()) => {
                self.name = None;
                Ok(None)
            }
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::AlreadyExists | std::io::ErrorKind::Unsupported
                ) =>
            {
                Ok(Some(self))
            }
            Err(e) => Err(FsError::io("rename a temp file to", &self.dest, e)),
        }
    }
}

impl Drop for Sealed {
    fn drop(&mut self) {
        if let Some(name) = &self.name {
            if let Ok(dir) = Dir::parent_of(&self.root, &self.rel) {
                let _ = dir.unlink(name);
            }
        }
    }
}

/// Opens the partial download `name` in `dir` (to append to it when `write`) if it is one
/// zync made and may go on with (see [`AtomicFile::resume`]): a regular file, reached without
/// following a symlink and without blocking on a FIFO ([`Dir::open_file`]), with one link,
/// and, in a directory other users may write to, owned by this process's effective user with
/// no permission bits but `0o600`. Judged by
/// `fstat` of the descriptor opened, so the file judged is the one written. Returns it and its
/// length; `None` for anything else. Opening one to write changes nothing in it (no
/// `O_TRUNC`, no `O_CREAT`): a refused file is closed untouched.
fn open_partial(dir: &Dir, name: &str, write: bool) -> std::io::Result<Option<(File, u64)>> {
    use std::os::unix::fs::MetadataExt;
    let Some(file) = dir.open_file(name, write)? else {
        return Ok(None);
    };
    let st = file.metadata()?;
    // SAFETY: geteuid has no preconditions and cannot fail.
    let euid = unsafe { libc::geteuid() };
    // Only a directory others can write to can hold a file another user put there. In one
    // only this user can write to, the owner and mode are not checked: some file systems
    // (vfat, exFAT, a squashing NFS export) report them from mount options, and each attempt
    // at a big file there would start over from byte 0.
    let dir_st = rustix::fs::fstat(dir)?;
    let others_may_write = dir_st.st_uid != euid || dir_st.st_mode & 0o022 != 0;
    let foreign = st.uid() != euid || st.mode() & 0o7777 & !0o600 != 0;
    if st.nlink() != 1 || (others_may_write && foreign) {
        tracing::debug!(
            path = %dir.path_of(name).display(),
            uid = st.uid(),
            links = st.nlink(),
            mode = format_args!("{:o}", st.mode() & 0o7777),
            "not resuming from a partial download zync did not make as it stands"
        );
        return Ok(None);
    }
    Ok(Some((file, st.len())))
}

/// The name of the partial download of `rel` with content `sha256`, in `rel`'s directory.
fn partial_name(rel: &RelPath, sha256: &str) -> String {
    let prefix: String = sha256.chars().take(16).collect();
    let mut name = format!("{TEMP_PREFIX}partial-{prefix}-{}", rel.file_name());
    while name.len() > crate::path::MAX_COMPONENT_BYTES {
        name.pop();
    }
    name
}

/// Replaces `root/rel` (whatever it is, unless a non-empty directory) with a symlink to
/// `target`, atomically: the link is made under a temp name in the destination's directory,
/// reached through a handle, then renamed relative to it.
///
/// # Errors
///
/// As [`check_parents`]; [`FsError::Io`] when the link cannot be made or renamed (for example
/// when `root/rel` is a directory).
pub fn replace_with_symlink(root: &Path, rel: &RelPath, target: &str) -> Result<(), FsError> {
    symlink_into_place(root, rel, target, None).map(drop)
}

/// As [`replace_with_symlink`], only if what stands at `root/rel` is still `expected` (as
/// [`crate::lstat`] described it when the change was planned), looked at through the handle
/// the rename goes through; where nothing was expected, the rename itself refuses to replace
/// anything that appeared since. Returns false, with nothing changed, when something else
/// stands there now (an edit, for the caller to keep first).
///
/// # Errors
///
/// As [`replace_with_symlink`], and when the destination cannot be looked at.
pub fn replace_with_symlink_if_unchanged(
    root: &Path,
    rel: &RelPath,
    target: &str,
    expected: &Stat,
) -> Result<bool, FsError> {
    symlink_into_place(root, rel, target, Some(expected))
}

/// Makes the link under a temp name beside `root/rel` and renames it over `rel` (only over
/// `expected`, when given); false when the destination was not as expected.
fn symlink_into_place(
    root: &Path,
    rel: &RelPath,
    target: &str,
    expected: Option<&Stat>,
) -> Result<bool, FsError> {
    let dest = rel.to_path(root);
    let dir = Dir::parent_of(root, rel)?;
    let name = loop {
        let name = crate::beneath::temp_name(TEMP_PREFIX);
        match dir.symlink(target, &name) {
            Ok(()) => break name,
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(FsError::io("create a temp symlink in", dir.path(), e)),
        }
    };
    let to = rel.file_name();
    let placed = match expected {
        None => dir.rename(&name, &dir, to).map(|()| true),
        Some(expected) => dir
            .replace_if(&name, to, expected)
            .map(|placed| placed == IfUnchanged::Done),
    };
    if !matches!(placed, Ok(true)) {
        let _ = dir.unlink(&name);
    }
    placed.map_err(|e| FsError::io("rename a temp symlink to", &dest, e))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hash::hash_bytes;
    use std::fs;
    use std::os::unix::fs::{symlink, MetadataExt};

    fn rel(s: &str) -> RelPath {
        RelPath::parse(s).expect("valid test path")
    }

    /// Names in `dir` that start with the temp prefix.
    fn temps(dir: &Path) -> Vec<String> {
        fs::read_dir(dir)
            .expect("read_dir")
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with(TEMP_PREFIX))
            .collect()
    }

    /// Another local user exchanges R's directory `d` with a symlink to a directory of their
    /// own, in a loop, while files are installed over `d/f` "if unchanged". Their `f` looks
    /// exactly like what the plan saw (it is the file the plan's look found through the
    /// symlink). The edited `d/f` must never be replaced: a look by path that saw their file
    /// followed by a rename in the real directory replaced it.
    #[test]
    fn install_if_unchanged_never_replaces_a_file_seen_through_a_swapped_directory() {
        let bait = crate::testkit::Bait::new(b"edited on R", b"as synced");
        let (root, link, theirs, seen) = (&bait.root, &bait.link, &bait.theirs, &bait.seen);

        let ((installed, tries), swaps) = crate::testkit::exchanging(&root.join("d"), link, || {
            let (mut installed, mut tries) = (0u32, 0u32);
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(2);
            while std::time::Instant::now() < deadline {
                // The temp file can be made only while d is the real directory.
                let Ok(mut file) = AtomicFile::create(root, &rel("d/f")) else {
                    continue;
                };
                tries += 1;
                file.write(b"E's version").expect("write");
                let sealed = file
                    .seal(&hash_bytes(b"E's version"), 0o644, 0)
                    .expect("seal");
                if let Ok(None) = sealed.install_if_unchanged(seen) {
                    installed += 1;
                }
            }
            (installed, tries)
        });
        assert!(swaps > 100, "the swapper barely ran");
        assert!(tries > 20, "only {tries} temp files were made");
        // The real directory is at d or at link, whichever the last exchange left.
        let real = if fs::symlink_metadata(root.join("d")).expect("d").is_dir() {
            root.join("d")
        } else {
            link.clone()
        };
        assert_eq!(
            fs::read(real.join("f")).expect("read the real f"),
            b"edited on R",
            "the edit was replaced ({installed} of {tries} installs went through)"
        );
        assert_eq!(installed, 0, "{installed} of {tries} installs went through");
        assert_eq!(
            fs::read(theirs.join("f")).expect("read theirs"),
            b"as synced"
        );
    }

    #[test]
    fn commit_replaces_content_mode_and_mtime() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let r = tmp.path();
        fs::create_dir(r.join("d")).expect("mkdir");
        fs::write(r.join("d/f"), b"old").expect("write");
        let mut f = AtomicFile::create(r, &rel("d/f")).expect("create");
        f.write(b"new ").expect("write");
        assert_eq!(
            temps(&r.join("d")).len(),
            1,
            "temp file not in the destination dir"
        );
        assert_eq!(
            fs::read(r.join("d/f")).expect("read"),
            b"old",
            "destination changed early"
        );
        f.write(b"content").expect("write");
        assert_eq!(f.written(), 11);
        let t = 1_650_000_000_000_000_123;
        f.commit(&hash_bytes(b"new content"), 0o100751, t)
            .expect("commit");
        assert_eq!(fs::read(r.join("d/f")).expect("read"), b"new content");
        let md = fs::symlink_metadata(r.join("d/f")).expect("stat");
        assert_eq!(md.mode() & 0o7777, 0o751);
        assert_eq!(md.mtime() * 1_000_000_000 + md.mtime_nsec(), t);
        assert!(temps(&r.join("d")).is_empty());
    }

    #[test]
    fn seal_verifies_and_install_renames_later() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let r = tmp.path();
        fs::write(r.join("f"), b"old").expect("write");
        let mut f = AtomicFile::create(r, &rel("f")).expect("create");
        f.write(b"new").expect("write");
        let t = 1_650_000_000_000_000_000;
        let sealed = f.seal(&hash_bytes(b"new"), 0o600, t).expect("seal");
        assert_eq!(
            fs::read(r.join("f")).expect("read"),
            b"old",
            "renamed early"
        );
        assert_eq!(temps(r).len(), 1);
        sync_filesystems([sealed.temp_path()]).expect("syncfs");
        let old = crate::lstat(&r.join("f")).expect("lstat");
        assert!(sealed
            .install_if_unchanged(&old)
            .expect("install")
            .is_none());
        assert_eq!(fs::read(r.join("f")).expect("read"), b"new");
        let md = fs::symlink_metadata(r.join("f")).expect("stat");
        assert_eq!((md.mode() & 0o7777, md.mtime()), (0o600, 1_650_000_000));
        assert!(temps(r).is_empty());

        let mut bad = AtomicFile::create(r, &rel("f")).expect("create");
        bad.write(b"corrupt").expect("write");
        assert!(matches!(
            bad.seal(&hash_bytes(b"other"), 0o600, t),
            Err(FsError::HashMismatch { .. })
        ));
        assert!(temps(r).is_empty(), "a refused file left its temp file");
        // Dropping a sealed file without installing it removes it.
        let mut dropped = AtomicFile::create(r, &rel("f")).expect("create");
        dropped.write(b"x").expect("write");
        drop(dropped.seal(&hash_bytes(b"x"), 0o600, t).expect("seal"));
        assert!(temps(r).is_empty());
        assert_eq!(fs::read(r.join("f")).expect("read"), b"new");
    }

    #[test]
    fn install_refuses_a_parent_swapped_for_a_symlink() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let r = tmp.path().join("root");
        let outside = tmp.path().join("outside");
        fs::create_dir_all(r.join("d")).expect("mkdir");
        fs::create_dir(&outside).expect("mkdir");
        let mut f = AtomicFile::create(&r, &rel("d/f")).expect("create");
        f.write(b"x").expect("write");
        let sealed = f.seal(&hash_bytes(b"x"), 0o644, 0).expect("seal");
        fs::rename(r.join("d"), r.join("moved")).expect("move");
        symlink(&outside, r.join("d")).expect("symlink");
        assert!(sealed.install_if_unchanged(&Stat::Missing).is_err());
        assert!(!outside.join("f").exists(), "wrote through a symlink");
    }

    #[test]
    fn install_new_never_replaces_what_is_there_and_never_goes_through_a_symlink() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let r = tmp.path().join("root");
        let outside = tmp.path().join("outside");
        fs::create_dir_all(r.join("d")).expect("mkdir");
        fs::create_dir(&outside).expect("mkdir");
        let sealed = |name: &str| {
            let mut f = AtomicFile::create(&r, &rel(name)).expect("create");
            f.write(b"new").expect("write");
            f.seal(&hash_bytes(b"new"), 0o644, 0).expect("seal")
        };
        // Nothing there: renamed into place.
        assert!(sealed("d/a").install_new().expect("install").is_none());
        assert_eq!(fs::read(r.join("d/a")).expect("read"), b"new");
        // A file and a symlink there: left as they are, the temp file handed back.
        let (b, c) = (sealed("d/b"), sealed("d/c"));
        fs::write(r.join("d/b"), b"R's").expect("write");
        symlink(outside.join("target"), r.join("d/c")).expect("symlink");
        let b = b.install_new().expect("install").expect("b is handed back");
        assert!(c.install_new().expect("install").is_some(), "c replaced");
        assert_eq!(fs::read(r.join("d/b")).expect("read"), b"R's");
        assert!(fs::symlink_metadata(r.join("d/c"))
            .expect("stat")
            .is_symlink());
        assert!(!outside.join("target").exists(), "wrote through a symlink");
        // Handed back, it can still be installed over what is there (after a conflict copy).
        let theirs = crate::lstat(&r.join("d/b")).expect("lstat");
        assert!(b.install_if_unchanged(&theirs).expect("install").is_none());
        assert_eq!(fs::read(r.join("d/b")).expect("read"), b"new");
        // A parent swapped for a symlink: refused, nothing outside.
        let e = sealed("d/e");
        fs::rename(r.join("d"), r.join("moved")).expect("move");
        symlink(&outside, r.join("d")).expect("symlink");
        assert!(e.install_new().is_err());
        assert!(!outside.join("e").exists(), "wrote through a symlink");
    }

    #[test]
    fn hash_mismatch_leaves_destination_untouched() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let r = tmp.path();
        fs::write(r.join("f"), b"old").expect("write");
        let mut f = AtomicFile::create(r, &rel("f")).expect("create");
        f.write(b"corrupt").expect("write");
        match f.commit(&hash_bytes(b"intended"), 0o644, 0) {
            Err(FsError::HashMismatch {
                expected,
                actual,
                path,
            }) => {
                assert_eq!(expected, hash_bytes(b"intended"));
                assert_eq!(actual, hash_bytes(b"corrupt"));
                assert_eq!(path, r.join("f"));
            }
            other => panic!("expected HashMismatch, got {other:?}"),
        }
        assert_eq!(fs::read(r.join("f")).expect("read"), b"old");
        assert!(temps(r).is_empty(), "temp file left: {:?}", temps(r));
    }

    /// Writes `content` to `name` in pieces of 3 MiB (hashed beside the write, as downloads
    /// are) with checkpoints over `prior`, seals it against `expected` and returns the result.
    fn seal_checked(
        r: &Path,
        name: &str,
        content: &[u8],
        prior: Option<&Checkpoints>,
        expected: &str,
    ) -> Result<Sealed, FsError> {
        let mut f = AtomicFile::create(r, &rel(name)).expect("create");
        let key = WindowKey::from_bytes(&[7; 192]).expect("a key");
        f.keep_checkpoints(prior, &key);
        for piece in content.chunks(3 << 20) {
            f.write(piece).expect("write");
        }
        f.seal(expected, 0o644, 0)
    }

    #[test]
    fn a_version_written_over_an_older_one_with_its_checkpoints_is_verified_the_same() {
        use crate::checkpoint::WINDOW;
        let tmp = tempfile::tempdir().expect("tempdir");
        let r = tmp.path();
        let w = WINDOW as usize;
        let old: Vec<u8> = (0..4 * w + 1234).map(|i| (i % 251) as u8).collect();
        let sealed = seal_checked(r, "f", &old, None, &hash_bytes(&old)).expect("seal old");
        let prior = sealed.checkpoints().cloned().expect("checkpoints kept");
        assert_eq!(prior.len(), 4);
        drop(sealed);
        // An edit in the third window: the first two windows are not hashed again, the rest is.
        let mut new = old.clone();
        new[2 * w + 5] ^= 0xff;
        let sealed = seal_checked(r, "f", &new, Some(&prior), &hash_bytes(&new)).expect("seal new");
        let fresh = seal_checked(r, "g", &new, None, &hash_bytes(&new)).expect("seal fresh");
        assert_eq!(sealed.checkpoints(), fresh.checkpoints());
        // Cut short inside a window that matched so far: its start is read back at the end.
        let cut = &old[..2 * w + 100];
        seal_checked(r, "f", cut, Some(&prior), &hash_bytes(cut)).expect("seal a shorter one");
        // Bytes that are not E's are refused, skipped windows or not: the old content
        // against the new one's sha256, and the new one with a byte changed in a window
        // that matches the older version's.
        assert!(matches!(
            seal_checked(r, "f", &old, Some(&prior), &hash_bytes(&new)),
            Err(FsError::HashMismatch { .. })
        ));
        let mut wrong = new.clone();
        wrong[10] ^= 1;
        assert!(matches!(
            seal_checked(r, "f", &wrong, Some(&prior), &hash_bytes(&new)),
            Err(FsError::HashMismatch { .. })
        ));
    }

    #[test]
    fn a_big_file_is_flushed_behind_its_writes_and_still_seals_whole() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let r = tmp.path();
        let piece = vec![7u8; 4 << 20];
        let mut f = AtomicFile::create(r, &rel("big")).expect("create");
        let mut hasher = crate::hash::Hasher::new();
        let mut written = 0u64;
        while written <= 2 * FLUSH_WINDOW {
            f.write(&piece).expect("write");
            hasher.update(&piece);
            written += piece.len() as u64;
        }
        let flusher = f
            .flusher
            .take()
            .expect("a flushing thread once a window is written");
        let flushes = flusher.finish().expect("flushes");
        assert!(flushes >= 1, "{flushes} flushes");
        f.commit(&hasher.finish(), 0o644, 0).expect("commit");
        assert_eq!(fs::metadata(r.join("big")).expect("stat").len(), written);
    }

    #[test]
    fn a_failed_flush_behind_fails_the_file_and_leaves_the_destination() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let r = tmp.path();
        fs::write(r.join("f"), b"old").expect("write");
        let mut f = AtomicFile::create(r, &rel("f")).expect("create");
        f.write(b"new").expect("write");
        // fdatasync on a socket fails (EINVAL), as a flush of a failing disk would.
        let (socket, _other) = std::os::unix::net::UnixStream::pair().expect("socket pair");
        let socket = File::from(std::os::fd::OwnedFd::from(socket));
        let flusher = Flusher::start(&socket).expect("flusher");
        flusher.request();
        f.flusher = Some(flusher);
        match f.commit(&hash_bytes(b"new"), 0o644, 0) {
            Err(e @ FsError::Io { .. }) => {
                assert!(e.to_string().contains("flush the new content of"), "{e}")
            }
            other => panic!("expected the flush's failure, got {other:?}"),
        }
        assert_eq!(fs::read(r.join("f")).expect("read"), b"old");
        assert!(temps(r).is_empty(), "temp file left: {:?}", temps(r));
    }

    #[test]
    fn drop_removes_temp_file() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let r = tmp.path();
        let mut f = AtomicFile::create(r, &rel("new")).expect("create");
        f.write(b"partial").expect("write");
        assert_eq!(temps(r).len(), 1);
        drop(f);
        assert!(temps(r).is_empty(), "temp file left: {:?}", temps(r));
        assert!(!r.join("new").exists());
    }

    #[test]
    fn refuses_symlinked_parent() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let r = tmp.path();
        let outside = tempfile::tempdir().expect("tempdir");
        symlink(outside.path(), r.join("l")).expect("symlink");
        let err = AtomicFile::create(r, &rel("l/f")).expect_err("must refuse");
        assert!(matches!(err, FsError::SymlinkInPath { .. }), "got {err:?}");
        let err = replace_with_symlink(r, &rel("l/s"), "x").expect_err("must refuse");
        assert!(matches!(err, FsError::SymlinkInPath { .. }), "got {err:?}");
        assert!(
            fs::read_dir(outside.path()).expect("read").next().is_none(),
            "wrote outside"
        );
    }

    #[test]
    fn commit_replaces_a_symlink_not_its_target() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let r = tmp.path();
        let outside = tempfile::tempdir().expect("tempdir");
        let victim = outside.path().join("victim");
        fs::write(&victim, b"precious").expect("write");
        symlink(&victim, r.join("f")).expect("symlink");
        let mut f = AtomicFile::create(r, &rel("f")).expect("create");
        f.write(b"data").expect("write");
        f.commit(&hash_bytes(b"data"), 0o644, 0).expect("commit");
        assert_eq!(fs::read(&victim).expect("read"), b"precious");
        assert!(fs::symlink_metadata(r.join("f")).expect("stat").is_file());
    }

    #[test]
    fn a_symlink_replaces_only_what_was_planned_over() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let r = tmp.path();
        fs::write(r.join("f"), b"as synced").expect("write");
        let seen = crate::lstat(&r.join("f")).expect("lstat");
        fs::write(r.join("f"), b"edited since").expect("edit");
        assert!(!replace_with_symlink_if_unchanged(r, &rel("f"), "t", &seen).expect("look"));
        assert_eq!(fs::read(r.join("f")).expect("read"), b"edited since");
        let now = crate::lstat(&r.join("f")).expect("lstat");
        assert!(replace_with_symlink_if_unchanged(r, &rel("f"), "t", &now).expect("replace"));
        assert_eq!(fs::read_link(r.join("f")).expect("link"), Path::new("t"));
        // Planned where R had nothing: whatever appeared is not replaced.
        fs::write(r.join("g"), b"appeared").expect("write");
        assert!(
            !replace_with_symlink_if_unchanged(r, &rel("g"), "t", &Stat::Missing).expect("look")
        );
        assert_eq!(fs::read(r.join("g")).expect("read"), b"appeared");
        assert!(
            replace_with_symlink_if_unchanged(r, &rel("h"), "t", &Stat::Missing).expect("make")
        );
        assert_eq!(fs::read_link(r.join("h")).expect("link"), Path::new("t"));
        assert!(temps(r).is_empty(), "temp link left: {:?}", temps(r));
    }

    #[test]
    fn symlink_replaces_file_and_link() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let r = tmp.path();
        fs::write(r.join("f"), b"file").expect("write");
        replace_with_symlink(r, &rel("f"), "../target").expect("replace file");
        assert_eq!(
            fs::read_link(r.join("f")).expect("readlink"),
            Path::new("../target")
        );
        replace_with_symlink(r, &rel("f"), "other").expect("replace link");
        assert_eq!(
            fs::read_link(r.join("f")).expect("readlink"),
            Path::new("other")
        );
        replace_with_symlink(r, &rel("new"), "t").expect("create");
        assert_eq!(
            fs::read_link(r.join("new")).expect("readlink"),
            Path::new("t")
        );
        assert!(temps(r).is_empty());
        fs::create_dir(r.join("d")).expect("mkdir");
        fs::write(r.join("d/x"), b"x").expect("write");
        assert!(replace_with_symlink(r, &rel("d"), "t").is_err());
        assert!(temps(r).is_empty(), "temp link left: {:?}", temps(r));
    }

    #[test]
    fn a_kept_partial_resumes_where_it_stopped_and_survives_cleanup() {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path();
        let rel = RelPath::parse("big.bin").expect("rel");
        let content: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
        let sha = crate::hash::hash_bytes(&content);
        let mut first = AtomicFile::create(root, &rel).expect("create");
        first.write(&content[..100_000]).expect("write");
        let partial = first.keep_partial(&sha).expect("keep");
        assert!(partial.exists());
        assert_eq!(
            crate::remove_temp_files(root).expect("cleanup"),
            0,
            "a fresh partial is kept"
        );

        let mut second = AtomicFile::resume(root, &rel, &sha)
            .expect("resume")
            .expect("partial");
        assert_eq!(second.written(), 100_000);
        second.write(&content[100_000..]).expect("write rest");
        second.commit(&sha, 0o644, 1_000_000_000).expect("commit");
        assert_eq!(std::fs::read(root.join("big.bin")).expect("read"), content);
        assert!(!partial.exists(), "the partial became the file");
        assert!(AtomicFile::resume(root, &rel, &sha)
            .expect("resume")
            .is_none());
    }

    /// Runs `f` on a thread of its own and returns what it returned, or fails the test if it
    /// takes longer than a few seconds (a call blocked on a FIFO, say) instead of hanging it.
    fn in_time<T: Send + 'static>(what: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let _ = tx.send(f());
        });
        match rx.recv_timeout(std::time::Duration::from_secs(5)) {
            Ok(out) => out,
            Err(e) => panic!("{what}: no answer within 5 s ({e}): it blocked"),
        }
    }

    /// R's user's file outside the root, and a hard link to it at the name of the partial
    /// download of `big` in the root, as another local user who can write in the root (and
    /// link to the file) would put it: zync must not resume from it, which appends E's bytes
    /// to the file outside the root, nor change it in any way.
    #[test]
    fn a_partial_hard_linked_to_a_file_elsewhere_is_never_resumed_nor_written() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let (r, outside) = (tmp.path().join("root"), tmp.path().join("outside"));
        fs::create_dir(&r).expect("mkdir");
        fs::create_dir(&outside).expect("mkdir");
        let precious = outside.join("precious");
        fs::write(&precious, b"R's user's own file").expect("write");
        // Otherwise just like zync's own partial: this user's, 0600.
        fs::set_permissions(&precious, fs::Permissions::from_mode(0o600)).expect("chmod");
        let before = fs::metadata(&precious).expect("stat");
        let content = crate::testkit::noise(100_000, 1);
        let sha = hash_bytes(&content);
        let partial = AtomicFile::partial_path(&r, &rel("big"), &sha);
        fs::hard_link(&precious, &partial).expect("link");

        assert_eq!(AtomicFile::resume_offset(&r, &rel("big"), &sha), 0);
        let resumed = AtomicFile::resume(&r, &rel("big"), &sha).expect("resume");
        assert!(resumed.is_none(), "resumed from a hard link: {resumed:?}");
        // The download starts over in a temp file of its own and lands at its name.
        let mut f = AtomicFile::create(&r, &rel("big")).expect("create");
        f.write(&content).expect("write");
        f.commit(&sha, 0o644, 0).expect("commit");
        crate::remove_partials(&r, &rel("big"));
        assert_eq!(fs::read(r.join("big")).expect("read"), content);
        let after = fs::metadata(&precious).expect("stat");
        assert_eq!(
            fs::read(&precious).expect("read"),
            b"R's user's own file",
            "the file outside the root was written"
        );
        assert_eq!(
            (after.len(), after.mtime(), after.mtime_nsec()),
            (before.len(), before.mtime(), before.mtime_nsec())
        );
        assert!(!partial.exists(), "the link's name is left");
    }

    /// A partial download that anyone else could have put there or can read (another owner,
    /// group or other bits, a symlink, a FIFO) is not resumed: offset 0, `None`, and it is
    /// left as it was. Zync's own (this user's, 0600, one link) is.
    #[test]
    fn a_partial_others_may_own_or_read_is_never_resumed() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let r = tmp.path().to_path_buf();
        // A directory others may write to (and so put a partial in), as /tmp is.
        fs::set_permissions(&r, fs::Permissions::from_mode(0o1777)).expect("chmod");
        let sha = "f".repeat(64);
        let partial = AtomicFile::partial_path(&r, &rel("big"), &sha);
        let kept = [3u8; 4096];
        let refused = |why: &str| {
            assert_eq!(
                AtomicFile::resume_offset(&r, &rel("big"), &sha),
                0,
                "{why}: measured"
            );
            let (root, sha2) = (r.clone(), sha.clone());
            let resumed = in_time(why, move || {
                AtomicFile::resume(&root, &rel("big"), &sha2)
                    .expect("resume")
                    .map(|f| f.written())
            });
            assert_eq!(resumed, None, "{why}: resumed");
        };
        fs::write(&partial, kept).expect("write");
        for mode in [0o666, 0o644, 0o640, 0o604, 0o2600] {
            fs::set_permissions(&partial, fs::Permissions::from_mode(mode)).expect("chmod");
            refused(&format!("mode {mode:o}"));
            assert_eq!(fs::read(&partial).expect("read"), kept, "mode {mode:o}");
        }
        fs::set_permissions(&partial, fs::Permissions::from_mode(0o600)).expect("chmod");
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } == 0 {
            // nobody's.
            std::os::unix::fs::chown(&partial, Some(65534), Some(65534)).expect("chown");
            refused("another owner");
            std::os::unix::fs::chown(&partial, Some(0), Some(0)).expect("chown");
        }
        assert_eq!(AtomicFile::resume_offset(&r, &rel("big"), &sha), 4096);
        let resumed = AtomicFile::resume(&r, &rel("big"), &sha)
            .expect("resume")
            .expect("zync's own partial");
        assert_eq!(resumed.written(), 4096);
        resumed.keep_partial(&sha).expect("keep");
        // A symlink to a file that would pass, and a FIFO: not followed, not waited on.
        let theirs = tmp.path().join("theirs");
        fs::rename(&partial, &theirs).expect("rename");
        symlink(&theirs, &partial).expect("symlink");
        refused("a symlink");
        fs::remove_file(&partial).expect("remove");
        crate::testkit::fifo(&partial);
        refused("a FIFO");
    }

    /// In a directory only this user can write to, nobody else can have put the partial
    /// there: one whose mode the file system reports from its mount options (vfat: 0644 or
    /// 0755) is resumed, so a big file there is not started over at each attempt.
    #[test]
    fn a_partial_in_a_directory_only_this_user_writes_is_resumed_whatever_its_mode() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let r = tmp.path().to_path_buf();
        fs::set_permissions(&r, fs::Permissions::from_mode(0o700)).expect("chmod");
        let sha = "d".repeat(64);
        let partial = AtomicFile::partial_path(&r, &rel("big"), &sha);
        fs::write(&partial, [3u8; 4096]).expect("write");
        for mode in [0o644, 0o755] {
            fs::set_permissions(&partial, fs::Permissions::from_mode(mode)).expect("chmod");
            assert_eq!(
                AtomicFile::resume_offset(&r, &rel("big"), &sha),
                4096,
                "mode {mode:o}"
            );
        }
        let resumed = AtomicFile::resume(&r, &rel("big"), &sha)
            .expect("resume")
            .expect("a partial in a private directory");
        assert_eq!(resumed.written(), 4096);
    }

    /// Another local user swaps the directory a big download goes to for a FIFO, or a symlink
    /// to one, right before the client checks its free space: the check must fail at once, not
    /// open the FIFO and wait for a writer forever.
    #[test]
    fn the_room_check_never_blocks_on_a_fifo_put_for_the_directory() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let r = tmp.path().join("root");
        fs::create_dir(&r).expect("mkdir");
        crate::testkit::fifo(&r.join("p"));
        crate::testkit::fifo(&tmp.path().join("theirs"));
        symlink(r.join("p"), r.join("l")).expect("symlink");
        symlink(tmp.path().join("theirs"), r.join("out")).expect("symlink");
        for name in ["p/big", "l/big", "out/big"] {
            let root = r.clone();
            let checked = in_time(name, move || {
                AtomicFile::check_room(&root, &rel(name), 1 << 30, 0)
            });
            match checked {
                Err(FsError::NotADirectory { .. } | FsError::SymlinkInPath { .. }) => {}
                other => panic!("{name}: expected a refusal, got {other:?}"),
            }
        }
        // A directory that is not there (yet) has nothing to check.
        AtomicFile::check_room(&r, &rel("not/there/big"), u64::MAX / 2, 0).expect("no directory");
    }

    #[test]
    fn partials_of_a_path_are_removed_once_it_is_complete() {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path();
        let rel = RelPath::parse("f.txt").expect("rel");
        let other = RelPath::parse("f.txt.bak").expect("rel");
        for (r, sha) in [
            (&rel, "a".repeat(64)),
            (&rel, "b".repeat(64)),
            (&other, "c".repeat(64)),
        ] {
            let mut f = AtomicFile::create(root, r).expect("create");
            f.write(b"x").expect("write");
            f.keep_partial(&sha).expect("keep");
        }
        let names = |root: &Path| -> Vec<String> {
            let mut v: Vec<String> = std::fs::read_dir(root)
                .expect("list")
                .map(|e| e.expect("entry").file_name().to_string_lossy().to_string())
                .collect();
            v.sort();
            v
        };
        // Completing "f.txt.bak" must not touch the partials of "f.txt" (a prefix of its name).
        crate::remove_partials(root, &other);
        let left = names(root);
        assert_eq!(left.len(), 2, "{left:?}");
        assert!(left.iter().all(|n| n.ends_with("-f.txt")), "{left:?}");
        // Completing "f.txt" removes both of its partials.
        crate::remove_partials(root, &rel);
        assert!(names(root).is_empty(), "{:?}", names(root));
    }

    /// Bytes of disk the file at `path` occupies.
    fn allocated(path: &Path) -> u64 {
        fs::metadata(path).expect("stat").blocks() * 512
    }

    /// The one temp file in `dir`.
    fn only_temp(dir: &Path) -> PathBuf {
        let names = temps(dir);
        assert_eq!(names.len(), 1, "{names:?}");
        dir.join(&names[0])
    }

    #[test]
    fn a_reserved_file_keeps_its_size_and_gives_back_what_it_did_not_use() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let r = tmp.path();
        let mut f = AtomicFile::create(r, &rel("big")).expect("create");
        let reserves = crate::space::reserves_here(&f.temp.file);
        f.reserve(8 << 20).expect("reserve");
        let temp = only_temp(r);
        assert_eq!(fs::metadata(&temp).expect("stat").len(), 0, "size changed");
        if reserves {
            assert!(
                allocated(&temp) >= 8 << 20,
                "{} allocated",
                allocated(&temp)
            );
        }
        // Content shorter than reserved (a record whose size was wrong): the seal trims it.
        f.write(b"short").expect("write");
        let sealed = f.seal(&hash_bytes(b"short"), 0o644, 0).expect("seal");
        assert!(allocated(sealed.temp_path()) < 1 << 20, "reservation kept");
        assert!(sealed.install_new().expect("install").is_none());
        assert_eq!(fs::read(r.join("big")).expect("read"), b"short");

        // A partial kept after an interruption holds only what it has.
        let mut f = AtomicFile::create(r, &rel("big2")).expect("create");
        f.reserve(8 << 20).expect("reserve");
        f.write(&[7u8; 4096]).expect("write");
        let partial = f.keep_partial(&"d".repeat(64)).expect("keep");
        assert_eq!(fs::metadata(&partial).expect("stat").len(), 4096);
        assert!(
            allocated(&partial) < 1 << 20,
            "{} allocated",
            allocated(&partial)
        );
    }

    #[test]
    fn a_resumed_partial_gives_back_what_a_killed_run_reserved_and_reserves_again() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let r = tmp.path();
        let sha = "e".repeat(64);
        let partial = AtomicFile::partial_path(r, &rel("big"), &sha);
        fs::write(&partial, [5u8; 4096]).expect("write");
        // As zync's own temp files are: no one else may read it.
        fs::set_permissions(&partial, fs::Permissions::from_mode(0o600)).expect("chmod");
        // A run killed after reserving: the partial holds blocks past its end.
        let reserves = {
            let f = fs::OpenOptions::new()
                .write(true)
                .open(&partial)
                .expect("open");
            crate::space::reserve(&f, 8 << 20, 4096).expect("reserve") == Reserve::Done
        };
        if reserves {
            assert!(allocated(&partial) >= 8 << 20);
        }
        let mut f = AtomicFile::resume(r, &rel("big"), &sha)
            .expect("resume")
            .expect("a partial");
        assert_eq!(f.written(), 4096);
        assert!(
            allocated(&partial) < 1 << 20,
            "{} allocated",
            allocated(&partial)
        );
        f.reserve(8 << 20).expect("reserve");
        if reserves {
            assert!(allocated(&partial) >= 8 << 20);
        }
        f.write(&[6u8; 4096]).expect("write");
        let kept = f.keep_partial(&sha).expect("keep");
        assert_eq!(fs::read(&kept).expect("read").len(), 8192);
        assert!(allocated(&kept) < 1 << 20, "{} allocated", allocated(&kept));
    }

    #[test]
    fn room_is_checked_in_the_file_s_directory_before_a_download() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let r = tmp.path();
        fs::create_dir(r.join("d")).expect("mkdir");
        let probe = fs::File::create(r.join("probe")).expect("create");
        let huge = u64::MAX / 2;
        AtomicFile::check_room(r, &rel("d/small"), (1 << 20) - 1, 0).expect("small: not checked");
        if crate::space::reserves_here(&probe) {
            let e = AtomicFile::check_room(r, &rel("d/big"), huge, 0).expect_err("4 EiB fit");
            assert!(matches!(e, FsError::NoSpace { .. }), "{e:?}");
            assert!(
                e.to_string()
                    .contains(&r.join("d/big").display().to_string()),
                "{e}"
            );
            AtomicFile::check_room(r, &rel("d/big"), 1 << 20, 0).expect("1 MiB fits");
            let e = AtomicFile::check_room(r, &rel("d/big"), 1 << 20, huge)
                .expect_err("1 MiB after 4 EiB under way fits");
            assert!(matches!(e, FsError::NoSpace { .. }), "{e:?}");
        } else {
            AtomicFile::check_room(r, &rel("d/big"), huge, huge).expect("nothing to check here");
        }
        assert!(
            temps(r).is_empty() && temps(&r.join("d")).is_empty(),
            "a check wrote"
        );
    }

    #[test]
    fn a_file_bigger_than_the_free_space_fails_before_anything_is_written() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let r = tmp.path();
        fs::write(r.join("f"), b"old").expect("write");
        let mut f = AtomicFile::create(r, &rel("f")).expect("create");
        if !crate::space::reserves_here(&f.temp.file) {
            // Nothing is reserved here, so nothing can be refused: the writes decide.
            f.reserve(u64::MAX / 2).expect("no reservation, no error");
            return;
        }
        let e = f.reserve(u64::MAX / 2).expect_err("reserved 4 EiB");
        assert!(matches!(e, FsError::NoSpace { .. }), "{e:?}");
        let msg = e.to_string();
        assert!(msg.contains(&r.join("f").display().to_string()), "{msg}");
        assert!(msg.contains("free some space"), "{msg}");
        assert!(
            allocated(&only_temp(r)) < 1 << 20,
            "the failed reservation kept space"
        );
        // The file is still good to write, and the destination was never touched.
        assert_eq!(fs::read(r.join("f")).expect("read"), b"old");
        f.write(b"new").expect("write");
        f.commit(&hash_bytes(b"new"), 0o644, 0).expect("commit");
        assert_eq!(fs::read(r.join("f")).expect("read"), b"new");
    }
}
