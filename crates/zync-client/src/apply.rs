//! Applying one change from E to a directory on R, keeping the DESIGN invariants: files are
//! replaced only by complete, verified versions (1), nothing is written outside the root or
//! through a symlink (3), and an R-side edit is kept as a conflict copy, never lost (4).

use std::collections::{BTreeSet, HashMap, HashSet};
use std::io::{ErrorKind, Read};
use std::path::{Path, PathBuf};

use zync_db::{ClientState, Kind, Synced};
use zync_fs::{AtomicFile, EntryKind, Meta, RelPath, Sealed, Stat};
use zync_proto::{Change, DeltaHeader, FileHeader};

use crate::error::ClientError;
use crate::install::{Installer, Place};
use crate::sync::Mapping;

/// What the client database must remember after a change was applied.
#[derive(Debug)]
pub enum Record {
    /// R now holds this at the path.
    Set(String, Synced),
    /// R holds nothing from E at the path any more.
    Remove(String),
    /// Nothing to record (an invalid change that was skipped).
    Nothing,
}

/// What [`Applier::begin`] made of one change.
pub enum Step {
    /// Applied (or skipped): record this.
    Done(Record),
    /// The file's content must be downloaded into this, then sealed with [`Pending::seal`]
    /// (or all at once with [`Pending::write_whole`]).
    Fetch(Box<Pending>),
    /// The content was found on R and copied: pass it to [`Applier::install`].
    Ready(Box<Ready>),
}

/// A file whose content is on its way from the daemon.
pub struct Pending {
    root: PathBuf,
    rel: RelPath,
    sha: String,
    size: u64,
    /// What stood at the path when the change was planned; anything else at install time is
    /// an edit on R, kept as a conflict copy.
    before: Stat,
    /// A partial download of this content may have been kept in the file's directory.
    partial: bool,
    record: Synced,
    file: Option<AtomicFile>,
    /// The signature of R's older version at the path, when a delta is worth asking for.
    signature: Option<Vec<u8>>,
}

impl Pending {
    /// The signature to send with GET_DELTA, once; `None` asks for the whole file.
    pub fn take_signature(&mut self) -> Option<Vec<u8>> {
        self.signature.take()
    }

    /// The synced directory the file belongs to.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The path relative to the root.
    pub fn path(&self) -> &str {
        self.rel.as_str()
    }

    /// The file's whole size.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Bytes still to come from byte `offset` on.
    pub fn remaining(&self, offset: u64) -> u64 {
        self.size.saturating_sub(offset)
    }

    /// Where the download starts: the length of a partial download of this very content kept
    /// by an earlier attempt (as rsync's `--partial`), else 0.
    pub fn resume_offset(&self) -> u64 {
        if !self.partial {
            return 0;
        }
        let partial = AtomicFile::partial_path(&self.root, &self.rel, &self.sha);
        match zync_fs::lstat(&partial) {
            Ok(Stat::Entry(m)) if m.kind == EntryKind::File && m.size <= self.size => m.size,
            _ => 0,
        }
    }

    /// Opens the temp file for content that starts at `offset` (a kept partial when > 0).
    ///
    /// # Errors
    /// When the temp file cannot be made, the partial changed since it was measured, or the
    /// disk has no room for the file ([`zync_fs::FsError::NoSpace`]).
    pub fn open(&mut self, offset: u64) -> Result<(), ClientError> {
        self.open_checked(offset, &mut zync_fs::CheckedDirs::default())
    }

    /// As [`Pending::open`], checking the parents only of a directory `checked` has not seen.
    ///
    /// # Errors
    /// As [`Pending::open`].
    fn open_checked(
        &mut self,
        offset: u64,
        checked: &mut zync_fs::CheckedDirs,
    ) -> Result<(), ClientError> {
        let mut file = if offset == 0 {
            AtomicFile::create_checked(&self.root, &self.rel, checked)?
        } else {
            match AtomicFile::resume(&self.root, &self.rel, &self.sha)? {
                Some(partial) if partial.written() == offset => {
                    tracing::debug!(path = %self.rel, from = offset, "resuming a partial download");
                    partial
                }
                _ => {
                    return Err(ClientError::Io {
                        what: "resume the partial download of",
                        path: self.rel.to_path(&self.root).display().to_string(),
                        source: std::io::Error::other("it changed since it was measured"),
                    })
                }
            }
        };
        // A big file is allocated at once, and a disk that filled up since the download was
        // planned is found before anything is written.
        if let Err(e) = file.reserve(self.size) {
            if offset > 0 {
                // Kept, so that what it holds is not downloaded again next time.
                if let Err(k) = file.keep_partial(&self.sha) {
                    tracing::debug!(path = %self.rel, "cannot keep the partial download: {k}");
                }
            }
            return Err(e.into());
        }
        self.file = Some(file);
        Ok(())
    }

    /// Checks that R's disk has room for what is still to be downloaded of this file, after
    /// the `claimed` bytes that downloads already asked for (and not reserved yet) will take,
    /// before it is asked for: a file that cannot fit fails without crossing the network first
    /// (the reservation when it is opened checks again).
    ///
    /// # Errors
    /// [`zync_fs::FsError::NoSpace`] when there is not room for it.
    pub fn check_room(&self, claimed: u64) -> Result<(), ClientError> {
        let remaining = self.remaining(self.resume_offset());
        Ok(AtomicFile::check_room(
            &self.root, &self.rel, remaining, claimed,
        )?)
    }

    /// Appends content.
    ///
    /// # Errors
    /// When the temp file cannot be written, or content arrives before the header.
    pub fn write(&mut self, data: &[u8]) -> Result<(), ClientError> {
        match &mut self.file {
            Some(file) => Ok(file.write(data)?),
            None => Err(ClientError::Protocol(format!(
                "{}: content arrived before its header",
                self.rel
            ))),
        }
    }

    /// Checks that the header is for the content this change wants and seals the temp file
    /// (verifying its sha256).
    ///
    /// # Errors
    /// `stale` when E's file moved on meanwhile (a newer change brings it); a hash mismatch.
    pub fn seal(mut self: Box<Self>, header: &FileHeader) -> Result<Box<Ready>, ClientError> {
        if header.sha256 != self.sha {
            return Err(ClientError::Server {
                code: zync_proto::ErrorCode::Stale,
                message: format!("{} changed on E during the transfer", self.rel),
            });
        }
        let Some(file) = self.file.take() else {
            return Err(ClientError::Protocol(format!(
                "{}: finished without a header",
                self.rel
            )));
        };
        let downloaded = Some(header.size - header.offset);
        let sealed = file.seal(&self.sha, self.record.mode, self.record.mtime_ns)?;
        Ok(self.into_ready(sealed, downloaded))
    }

    /// Writes a small file that arrived whole in one piece and seals it: the work of
    /// [`Pending::open`], [`Pending::write`] and [`Pending::seal`] at once, for a blocking
    /// thread writing a group of files (`checked` is that group's).
    ///
    /// # Errors
    /// As those three.
    pub fn write_whole(
        mut self: Box<Self>,
        header: &FileHeader,
        data: &[u8],
        checked: &mut zync_fs::CheckedDirs,
    ) -> Result<Box<Ready>, ClientError> {
        self.open_checked(0, checked)?;
        self.write(data)?;
        self.seal(header)
    }

    /// The sealed file of this change, ready for its rename.
    fn into_ready(self: Box<Self>, sealed: Sealed, downloaded: Option<u64>) -> Box<Ready> {
        let Pending {
            rel,
            before,
            record,
            partial,
            ..
        } = *self;
        Box::new(Ready {
            rel,
            before,
            record,
            sealed,
            downloaded,
            partial,
        })
    }

    /// Lends the open temp file out (to write a large chunk off the reactor); give it back
    /// with [`Pending::put_file`].
    pub fn take_file(&mut self) -> Option<AtomicFile> {
        self.file.take()
    }

    /// Returns the temp file lent by [`Pending::take_file`].
    pub fn put_file(&mut self, file: AtomicFile) {
        self.file = Some(file);
    }

    /// Keeps what arrived as a partial download when the connection broke, so that the next
    /// attempt resumes there.
    pub fn keep_partial(self) {
        if let Some(file) = self.file.filter(|f| f.written() > 0) {
            if let Err(e) = file.keep_partial(&self.sha) {
                tracing::debug!(path = %self.rel, "cannot keep the partial download: {e}");
            }
        }
    }
}

/// A complete, verified file waiting for its rename (after its batch was made durable).
pub struct Ready {
    pub(crate) rel: RelPath,
    /// What stood at the path when the change was planned.
    pub(crate) before: Stat,
    pub(crate) record: Synced,
    pub(crate) sealed: Sealed,
    /// Bytes that came over the network (`None` for a local copy).
    pub(crate) downloaded: Option<u64>,
    /// A partial download of this content may lie beside it: removed once it is in place.
    pub(crate) partial: bool,
}

impl Ready {
    /// The temp file (its file system is synced before the batch is installed).
    pub fn temp_path(&self) -> &Path {
        self.sealed.temp_path()
    }

    /// The file's size.
    pub fn size(&self) -> u64 {
        self.record.size
    }

    /// Flushes this file's content on its own.
    ///
    /// # Errors
    /// When the temp file cannot be flushed.
    pub fn sync(&self) -> Result<(), ClientError> {
        Ok(self.sealed.sync()?)
    }
}

/// Files at least this big that R has an older version of are fetched as a delta.
const DELTA_MIN_SIZE: u64 = 256 << 10;

/// Applies the changes of one sync to one root, page after page.
pub struct Applier<'a> {
    root: &'a Path,
    dir: &'a str,
    own: &'a [PathBuf],
    /// What planning changed on R: touched directories, conflict copies.
    place: Place,
    /// Contents this page needs: a deleted file with one of them is set aside, not removed.
    wanted: HashSet<String>,
    /// Deleted files set aside by content, as sources for copies (renames on E).
    stash: HashMap<String, PathBuf>,
    /// Directories seen in this sync; forgotten whenever anything is moved or removed.
    dirs_seen: HashSet<String>,
}

impl<'a> Applier<'a> {
    /// An applier for one mapping; planning reads the synced state from the database it is
    /// given.
    pub fn new(mapping: &'a Mapping) -> Applier<'a> {
        Applier {
            root: &mapping.root,
            dir: mapping.name.as_str(),
            own: &mapping.own,
            place: Place::new(&mapping.root, mapping.name.as_str()),
            wanted: HashSet::new(),
            stash: HashMap::new(),
            dirs_seen: HashSet::new(),
        }
    }

    /// Names the contents this page's file changes need: a file that E deleted (or renamed)
    /// with one of them is set aside until the page is done, so a rename costs a local copy
    /// instead of a download.
    pub fn want(&mut self, shas: HashSet<String>) {
        self.wanted = shas;
    }

    /// Where the files go, for the installer: the same root and conflict-copy stamp.
    pub fn installer(&self) -> Installer {
        Installer::new(self.place.sibling())
    }

    /// The directories planning touched since the last call: the next flush makes them
    /// durable before what changed them is recorded (DESIGN invariant 2).
    pub fn take_touched(&mut self) -> BTreeSet<PathBuf> {
        self.place.take_touched()
    }

    /// The conflict copies planning made, as paths relative to the root.
    pub fn take_conflicts(&mut self) -> Vec<String> {
        self.place.take_conflicts()
    }

    /// Removes the files of this page set aside for local copies that no copy needed. Their
    /// deletion is recorded at the next checkpoint; a crash before it leaves only a temp file.
    pub fn clear_stash(&mut self) {
        for (_, stashed) in self.stash.drain() {
            if let Err(e) = std::fs::remove_file(&stashed) {
                tracing::debug!(path = %stashed.display(), "cannot remove a set-aside file: {e}");
            }
        }
    }

    /// Applies one change, except a file's download: that is returned as [`Step::Fetch`] for
    /// the caller to pipeline.
    ///
    /// # Errors
    /// A problem with this one path (or the client database).
    pub fn begin(&mut self, state: &ClientState, change: &Change) -> Result<Step, ClientError> {
        let rel = match RelPath::parse(&change.path) {
            Ok(rel) => rel,
            Err(e) => {
                // Invariant 3: a path that could leave the root is never used.
                tracing::warn!(dir = self.dir, "skipped a change with an invalid path: {e}");
                return Ok(Step::Done(Record::Nothing));
            }
        };
        if self.own.contains(&rel.to_path(self.root)) {
            tracing::warn!(dir = self.dir, path = %rel, "skipped: this is the client's own database or token file; keep them outside synced directories");
            return Ok(Step::Done(Record::Nothing));
        }
        if change.deleted {
            return self.delete(state, &rel, change).map(Step::Done);
        }
        self.make_parents(state, &rel)?;
        match change.kind {
            zync_proto::Kind::File => self.file(state, &rel, change),
            zync_proto::Kind::Dir => self.dir(state, &rel, change).map(Step::Done),
            zync_proto::Kind::Symlink => self.symlink(state, &rel, change).map(Step::Done),
        }
    }

    /// Rebuilds a file from R's older version at its path and a delta received into `spool`,
    /// verified by sha256 when sealed. On a failure other than `stale`, the pending file is
    /// handed back to be downloaded whole.
    ///
    /// # Errors
    /// `stale` when E's file moved on meanwhile; a delta that does not apply or rebuilds other
    /// bytes (MD4 block sums can collide) comes back with the `Pending`.
    pub fn rebuild(
        &mut self,
        mut pending: Box<Pending>,
        header: &DeltaHeader,
        spool: std::fs::File,
    ) -> Result<Box<Ready>, (Option<Box<Pending>>, ClientError)> {
        use std::io::Seek;
        if header.sha256 != pending.sha {
            let stale = ClientError::Server {
                code: zync_proto::ErrorCode::Stale,
                message: format!("{} changed on E during the transfer", pending.rel),
            };
            return Err((None, stale));
        }
        let rebuilt = (|| {
            let mut spool = spool;
            spool.rewind().map_err(|source| ClientError::Io {
                what: "read the delta of",
                path: pending.rel.to_string(),
                source,
            })?;
            pending.open(0)?;
            let base = pending.rel.to_path(&pending.root);
            let file = pending.file.as_mut().ok_or_else(|| {
                ClientError::Protocol(format!("{}: no file to rebuild into", pending.rel))
            })?;
            zync_fs::delta::apply(&base, std::io::BufReader::new(spool), header.size, |data| {
                file.write(data).map_err(std::io::Error::other)
            })
            .map_err(|e| ClientError::Protocol(format!("{}: {e}", pending.rel)))?;
            let file = pending.file.take().ok_or_else(|| {
                ClientError::Protocol(format!("{}: no file to rebuild into", pending.rel))
            })?;
            Ok::<_, ClientError>(file.seal(
                &pending.sha,
                pending.record.mode,
                pending.record.mtime_ns,
            )?)
        })();
        match rebuilt {
            Ok(sealed) => Ok(pending.into_ready(sealed, Some(header.delta_size))),
            // The whole file would not fit either.
            Err(e @ ClientError::Fs(zync_fs::FsError::NoSpace { .. })) => Err((None, e)),
            Err(e) => {
                pending.file = None;
                pending.signature = None;
                Err((Some(pending), e))
            }
        }
    }

    /// Copies content R already has (a file E renamed or copied) into a sealed temp file.
    /// `None` when no local file has it for sure; the caller then downloads it.
    fn copy_local(
        &mut self,
        state: &ClientState,
        p: &Pending,
    ) -> Result<Option<Box<Ready>>, ClientError> {
        let mut sources: Vec<PathBuf> = self.stash.get(&p.sha).cloned().into_iter().collect();
        for (dir, path) in state.find_by_sha(&p.sha)? {
            if sources.len() >= 3 {
                break;
            }
            if dir != self.dir || path == p.rel.as_str() {
                continue;
            }
            // Invariant 3: a path from the database is validated like one from the network.
            let Ok(source) = RelPath::parse(&path) else {
                continue;
            };
            // Only a file still exactly as zync wrote it; the copy is verified all the same.
            let Some(synced) = self.synced(state, &source)? else {
                continue;
            };
            match self.stat(&source)? {
                Stat::Entry(m)
                    if m.kind == EntryKind::File
                        && m.size == synced.size
                        && m.mtime_ns == synced.mtime_ns => {}
                _ => continue,
            }
            if zync_fs::check_parents(self.root, &source).is_ok() {
                sources.push(source.to_path(self.root));
            }
        }
        for source in sources {
            match self.copy_from(&source, p) {
                Ok(sealed) => {
                    return Ok(Some(Box::new(Ready {
                        rel: p.rel.clone(),
                        before: p.before.clone(),
                        record: p.record.clone(),
                        sealed,
                        downloaded: None,
                        partial: p.partial,
                    })))
                }
                Err(e) => {
                    tracing::debug!(path = %p.rel, source = %source.display(), "local copy failed, downloading instead: {e}")
                }
            }
        }
        Ok(None)
    }

    fn copy_from(&self, source: &Path, p: &Pending) -> Result<Sealed, ClientError> {
        use std::os::unix::fs::OpenOptionsExt;
        let io = |source_err| ClientError::Io {
            what: "copy",
            path: source.display().to_string(),
            source: source_err,
        };
        let mut input = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW)
            .open(source)
            .map_err(io)?;
        let mut file = AtomicFile::create(self.root, &p.rel)?;
        file.reserve(p.size)?;
        let mut buf = vec![0u8; 256 * 1024];
        loop {
            let n = input.read(&mut buf).map_err(io)?;
            if n == 0 {
                break;
            }
            file.write(&buf[..n])?;
        }
        Ok(file.seal(&p.sha, p.record.mode, p.record.mtime_ns)?)
    }

    /// Sets a file that E deleted aside under a temp name, as the source for a later copy of
    /// the same content in this page. False when it could not be moved (then remove it).
    fn set_aside(&mut self, rel: &RelPath, sha: &str) -> bool {
        let name = format!(
            "{}stash-{}-{}",
            zync_fs::TEMP_PREFIX,
            self.stash.len(),
            &sha[..sha.len().min(16)]
        );
        let to = self.root.join(name);
        match std::fs::rename(rel.to_path(self.root), &to) {
            Ok(()) => {
                self.stash.insert(sha.to_string(), to);
                self.touch(rel);
                true
            }
            Err(_) => false,
        }
    }

    fn stat(&self, rel: &RelPath) -> Result<Stat, ClientError> {
        self.place.stat(rel)
    }

    fn touch(&mut self, rel: &RelPath) {
        self.forget_dirs(rel);
        self.place.touch(rel);
    }

    /// Something at `rel` changed: it may have been a directory seen earlier.
    fn forget_dirs(&mut self, rel: &RelPath) {
        if self.dirs_seen.contains(rel.as_str()) {
            self.dirs_seen.clear();
        }
    }

    fn may_have_partials(&mut self, rel: &RelPath) -> bool {
        self.place.may_have_partials(rel)
    }

    fn synced(&self, state: &ClientState, rel: &RelPath) -> Result<Option<Synced>, ClientError> {
        Ok(state.synced(self.dir, rel.as_str())?)
    }

    /// The sha256 of a local file, without reading it when size and mtime match what zync wrote.
    fn local_sha(
        &self,
        rel: &RelPath,
        meta: &Meta,
        synced: Option<&Synced>,
    ) -> Result<String, ClientError> {
        if let Some(s) = synced {
            if s.kind == Kind::File && s.size == meta.size && s.mtime_ns == meta.mtime_ns {
                if let Some(sha) = &s.sha256 {
                    return Ok(sha.clone());
                }
            }
        }
        let path = rel.to_path(self.root);
        zync_fs::hash_file(&path)
            .map(|(sha, _)| sha)
            .map_err(|source| ClientError::Io {
                what: "read",
                path: path.display().to_string(),
                source,
            })
    }

    /// True when what R has at `rel` is exactly what zync last wrote there: replacing or
    /// removing it loses nothing.
    fn is_as_synced(
        &self,
        state: &ClientState,
        rel: &RelPath,
        meta: &Meta,
    ) -> Result<bool, ClientError> {
        if meta.kind == EntryKind::File {
            // Written by a run that stopped before recording it.
            let local = self.local_sha(rel, meta, self.synced(state, rel)?.as_ref())?;
            if state.was_inflight(self.dir, rel.as_str(), &local)? {
                return Ok(true);
            }
        }
        let Some(synced) = self.synced(state, rel)? else {
            return Ok(false);
        };
        Ok(match meta.kind {
            EntryKind::File => {
                synced.kind == Kind::File
                    && synced.sha256.as_deref()
                        == Some(self.local_sha(rel, meta, Some(&synced))?.as_str())
            }
            EntryKind::Symlink => synced.kind == Kind::Symlink && synced.target == meta.target,
            EntryKind::Dir => synced.kind == Kind::Dir,
        })
    }

    /// Moves R's version aside as a conflict copy (invariant 4) and says so.
    fn keep_local(&mut self, rel: &RelPath, why: &str) -> Result<(), ClientError> {
        self.place.keep_local(rel, why)?;
        self.forget_dirs(rel);
        Ok(())
    }

    /// Clears `rel` for an entry of another kind: removes what zync wrote there, keeps anything
    /// else as a conflict copy.
    fn clear(
        &mut self,
        state: &ClientState,
        rel: &RelPath,
        meta: &Meta,
    ) -> Result<(), ClientError> {
        let path = rel.to_path(self.root);
        let io = |what, source| ClientError::Io {
            what,
            path: path.display().to_string(),
            source,
        };
        if meta.kind == EntryKind::Dir {
            match std::fs::remove_dir(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == ErrorKind::DirectoryNotEmpty => {
                    self.keep_local(rel, "E replaced this directory, which holds files on R")?
                }
                Err(e) => return Err(io("remove", e)),
            }
        } else if self.is_as_synced(state, rel, meta)? {
            std::fs::remove_file(&path).map_err(|e| io("remove", e))?;
        } else {
            self.keep_local(rel, "E replaced this path, which was changed on R")?;
        }
        self.touch(rel);
        Ok(())
    }

    /// Creates missing parent directories; a file or symlink in the way is cleared first, so
    /// nothing is ever written through a link (invariant 3).
    fn make_parents(&mut self, state: &ClientState, rel: &RelPath) -> Result<(), ClientError> {
        for ancestor in rel.ancestors() {
            // Seen as a directory earlier in this sync (writes still check every parent).
            if self.dirs_seen.contains(ancestor.as_str()) {
                continue;
            }
            match self.stat(&ancestor)? {
                Stat::Entry(m) if m.kind == EntryKind::Dir => {
                    self.dirs_seen.insert(ancestor.to_string());
                    continue;
                }
                Stat::Entry(m) => self.clear(state, &ancestor, &m)?,
                Stat::Unsupported(what) => {
                    return Err(ClientError::Blocked {
                        path: ancestor.to_path(self.root).display().to_string(),
                        reason: format!("a {what} stands where E has a directory; remove it"),
                    })
                }
                Stat::Missing => {}
            }
            zync_fs::ensure_dir(self.root, &ancestor, None)?;
            self.touch(&ancestor);
            self.dirs_seen.insert(ancestor.to_string());
        }
        Ok(())
    }

    fn file(
        &mut self,
        state: &ClientState,
        rel: &RelPath,
        change: &Change,
    ) -> Result<Step, ClientError> {
        let Some(sha) = change
            .sha256
            .as_deref()
            .filter(|s| zync_fs::is_sha256_hex(s))
        else {
            tracing::warn!(dir = self.dir, path = %rel, "skipped a file change without a valid sha256");
            return Ok(Step::Done(Record::Nothing));
        };
        // E's mode as R's user would have created the file (a 0666 file lands 0644 under
        // umask 022). The state records the mode written, so the file reads as unedited.
        let mode = zync_fs::mask_mode(change.mode);
        let record = Synced {
            kind: Kind::File,
            size: change.size,
            mtime_ns: change.mtime_ns,
            mode,
            sha256: Some(sha.to_string()),
            target: None,
        };
        let path = rel.to_path(self.root);
        let found = self.stat(rel)?;
        let mut moved = false;
        match found.clone() {
            Stat::Missing => {}
            Stat::Entry(meta) if meta.kind == EntryKind::File => {
                let synced = self.synced(state, rel)?;
                let local = self.local_sha(rel, &meta, synced.as_ref())?;
                if local == sha {
                    // R already has this content: fix the attributes, download nothing.
                    if meta.mode & 0o777 != mode {
                        zync_fs::set_mode(&path, mode)?;
                    }
                    if meta.mtime_ns != change.mtime_ns {
                        zync_fs::set_mtime(&path, change.mtime_ns)?;
                    }
                    return Ok(Step::Done(Record::Set(rel.to_string(), record)));
                }
                // zync's own write from a run that stopped before recording it is no R edit.
                let ours = state.was_inflight(self.dir, rel.as_str(), &local)?;
                let edited = !ours
                    && !synced.is_some_and(|s| {
                        s.kind == Kind::File && s.sha256.as_deref() == Some(local.as_str())
                    });
                if edited {
                    self.keep_local(rel, "E changed this file, which was also changed on R")?;
                    moved = true;
                }
            }
            Stat::Entry(meta) => {
                self.clear(state, rel, &meta)?;
                moved = true;
            }
            Stat::Unsupported(what) => {
                return Err(ClientError::Blocked {
                    path: path.display().to_string(),
                    reason: format!("a {what} stands where E has a file; remove it"),
                })
            }
        }
        // What stands at the path now; if it changes during the download (an editor saving on
        // R), that save is kept as a conflict copy before the rename (invariant 4).
        let before = if moved { self.stat(rel)? } else { found };
        let pending = Pending {
            root: self.root.to_path_buf(),
            rel: rel.clone(),
            sha: sha.to_string(),
            size: change.size,
            before,
            partial: self.may_have_partials(rel),
            record,
            file: None,
            signature: None,
        };
        if let Some(ready) = self.copy_local(state, &pending)? {
            return Ok(Step::Ready(ready));
        }
        let mut pending = pending;
        // R's older version stays in place until the new one is renamed over it: a delta
        // against it costs its signature and the changed bytes instead of the whole file.
        if let Stat::Entry(meta) = &pending.before {
            if meta.kind == EntryKind::File && meta.size >= DELTA_MIN_SIZE && !pending.partial {
                match zync_fs::delta::signature(&path) {
                    Ok(signature) => pending.signature = Some(signature),
                    Err(e) => tracing::debug!(path = %rel, "no delta, downloading whole: {e}"),
                }
            }
        }
        Ok(Step::Fetch(Box::new(pending)))
    }

    fn dir(
        &mut self,
        state: &ClientState,
        rel: &RelPath,
        change: &Change,
    ) -> Result<Record, ClientError> {
        // Masked as a file's mode is (a 0777 directory on E is not world-writable on R), and
        // always the owner's to enter and write, or nothing could be synced into it.
        let mode = zync_fs::mask_mode(change.mode) | 0o700;
        match self.stat(rel)? {
            Stat::Entry(meta) if meta.kind == EntryKind::Dir => {
                if meta.mode & 0o777 != mode {
                    zync_fs::set_mode(&rel.to_path(self.root), mode)?;
                }
            }
            Stat::Entry(meta) => {
                self.clear(state, rel, &meta)?;
                zync_fs::ensure_dir(self.root, rel, Some(mode))?;
            }
            Stat::Unsupported(what) => {
                return Err(ClientError::Blocked {
                    path: rel.to_path(self.root).display().to_string(),
                    reason: format!("a {what} stands where E has a directory; remove it"),
                })
            }
            Stat::Missing => {
                zync_fs::ensure_dir(self.root, rel, Some(mode))?;
                self.touch(rel);
            }
        }
        Ok(Record::Set(
            rel.to_string(),
            Synced {
                kind: Kind::Dir,
                size: 0,
                mtime_ns: change.mtime_ns,
                mode,
                sha256: None,
                target: None,
            },
        ))
    }

    fn symlink(
        &mut self,
        state: &ClientState,
        rel: &RelPath,
        change: &Change,
    ) -> Result<Record, ClientError> {
        let Some(target) = change.target.as_deref() else {
            tracing::warn!(dir = self.dir, path = %rel, "skipped a symlink change without a target");
            return Ok(Record::Nothing);
        };
        let record = Synced {
            kind: Kind::Symlink,
            size: change.size,
            mtime_ns: change.mtime_ns,
            mode: 0,
            sha256: None,
            target: Some(target.to_string()),
        };
        match self.stat(rel)? {
            Stat::Entry(meta) if meta.target.as_deref() == Some(target) => {
                return Ok(Record::Set(rel.to_string(), record))
            }
            Stat::Entry(meta) if meta.kind == EntryKind::Dir => self.clear(state, rel, &meta)?,
            Stat::Entry(meta) => {
                // A rename over a file or link replaces it; keep it first if R changed it.
                if !self.is_as_synced(state, rel, &meta)? {
                    self.keep_local(rel, "E changed this path, which was also changed on R")?;
                }
            }
            Stat::Unsupported(what) => {
                return Err(ClientError::Blocked {
                    path: rel.to_path(self.root).display().to_string(),
                    reason: format!("a {what} stands where E has a symlink; remove it"),
                })
            }
            Stat::Missing => {}
        }
        zync_fs::replace_with_symlink(self.root, rel, target)?;
        self.touch(rel);
        Ok(Record::Set(rel.to_string(), record))
    }

    fn delete(
        &mut self,
        state: &ClientState,
        rel: &RelPath,
        change: &Change,
    ) -> Result<Record, ClientError> {
        // A parent that is not a real directory means nothing of E's can be below it.
        if zync_fs::check_parents(self.root, rel).is_err() {
            return Ok(Record::Remove(rel.to_string()));
        }
        let path = rel.to_path(self.root);
        // A partial download of a file E deleted will never be resumed.
        if self.may_have_partials(rel) {
            zync_fs::remove_partials(self.root, rel);
        }
        match self.stat(rel)? {
            Stat::Missing | Stat::Unsupported(_) => {}
            Stat::Entry(meta) if meta.kind == EntryKind::Dir => {
                if change.kind == zync_proto::Kind::Dir {
                    // zync's own leftovers (partial downloads) must not keep the directory.
                    remove_own_temp_files(&path);
                    match std::fs::remove_dir(&path) {
                        Ok(()) => self.touch(rel),
                        Err(e) if e.kind() == ErrorKind::DirectoryNotEmpty => tracing::info!(
                            dir = self.dir,
                            path = %rel,
                            "E deleted this directory; kept on R because it holds files that did not come from E"
                        ),
                        Err(e) if e.kind() == ErrorKind::NotFound => {}
                        Err(source) => {
                            return Err(ClientError::Io {
                                what: "remove",
                                path: path.display().to_string(),
                                source,
                            })
                        }
                    }
                }
            }
            Stat::Entry(meta) => {
                if self.is_as_synced(state, rel, &meta)? {
                    if meta.kind == EntryKind::File && !self.wanted.is_empty() {
                        let sha = self.local_sha(rel, &meta, self.synced(state, rel)?.as_ref())?;
                        if self.wanted.contains(&sha) && self.set_aside(rel, &sha) {
                            return Ok(Record::Remove(rel.to_string()));
                        }
                    }
                    std::fs::remove_file(&path).map_err(|source| ClientError::Io {
                        what: "remove",
                        path: path.display().to_string(),
                        source,
                    })?;
                    self.touch(rel);
                } else {
                    self.keep_local(rel, "E deleted this file, which was changed on R")?;
                }
            }
        }
        Ok(Record::Remove(rel.to_string()))
    }
}

/// Removes zync's temp files (partial downloads included) directly inside `dir`.
fn remove_own_temp_files(dir: &Path) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let is_temp = entry
            .file_name()
            .as_encoded_bytes()
            .starts_with(zync_fs::TEMP_PREFIX.as_bytes());
        if is_temp && entry.file_type().is_ok_and(|t| t.is_file()) {
            let _ = std::fs::remove_file(entry.path());
        }
    }
}
