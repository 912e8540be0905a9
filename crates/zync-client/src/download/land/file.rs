//! A file on its way into place: [`Pending`] while its content is received (from the daemon,
//! rebuilt from a delta, or copied from R), then [`Ready`] once sealed, complete and verified
//! (invariant 1 (docs/ARCHITECTURE.md)), until its batch is flushed and it is renamed.

use std::io::Read;
use std::path::Path;
use std::sync::Arc;

use zync_db::Synced;
use zync_fs::checkpoint::WINDOW as CHECKPOINT_WINDOW;
use zync_fs::{AtomicFile, Checkpoints, Parents, RelPath, Sealed, Stat, WindowKey, CHECKPOINT_MIN};
use zync_proto::{DeltaHeader, DeltaPlan, FileHeader, WindowHashes, WindowsReply};

use crate::error::ClientError;

/// A file whose content is on its way from the daemon.
pub struct Pending {
    /// Shared by every file of the sync: a queue of thousands of these holds one copy.
    root: Arc<Path>,
    rel: RelPath,
    size: u64,
    /// What stood at the path when the change was planned; anything else at install time is
    /// an edit on R, kept as a conflict copy.
    before: Stat,
    /// A partial download of this content may have been kept in the file's directory.
    partial: bool,
    /// What is recorded once the file is in place; its sha256 is the content wanted.
    record: Synced,
    /// Boxed, as `delta`: only files being written or asked for as a delta have one, and the
    /// pipeline's queue holds thousands of `Pending`s (docs/ARCHITECTURE.md, "Memory").
    file: Option<Box<AtomicFile>>,
    /// How a delta against R's older version at the path is asked for, when one is worth it.
    delta: Option<Box<Ask>>,
    /// Checkpoints are kept for this file with this client's key (`zync_fs::checkpoint`),
    /// and, for a rebuild from a delta, those of the version the client last wrote at the
    /// path: the windows the two share are not SHA-256-hashed again.
    checkpoints: Option<(Arc<WindowKey>, Option<Prior>)>,
    /// The sha256 of the content whose checkpoints a rebuild used, once it used them.
    used_prior: Option<String>,
}

/// How a delta is asked for.
#[derive(Debug)]
pub enum Ask {
    /// Against R's version at the path, not decided how yet ([`Pending::prepare_delta`]).
    Wanted,
    /// GET_DELTA with the signature of R's whole version, not made yet
    /// ([`Pending::sign_whole`]).
    Sign,
    /// GET_WINDOWS first, then GET_DELTA with a plan ([`Pending::plan_delta`]).
    Windows,
    /// GET_DELTA with the signature and window hashes of R's whole version.
    Signature(Vec<u8>, Option<WindowHashes>),
    /// GET_DELTA with the signature of R's windows that differ, and the plan.
    Plan(Vec<u8>, DeltaPlan),
}

/// The checkpoints of the version the client last wrote at a path, and that version's sha256.
pub type Prior = (String, Checkpoints);

impl Pending {
    /// E's file as `record` says (size, sha256, mode, mtime), to write at `rel`; `before` is
    /// what stands there now, `partial` whether its directory may hold a partial download.
    pub fn new(
        root: &Arc<Path>,
        rel: RelPath,
        before: Stat,
        partial: bool,
        record: Synced,
    ) -> Pending {
        Pending {
            root: Arc::clone(root),
            rel,
            size: record.size,
            before,
            partial,
            record,
            file: None,
            delta: None,
            checkpoints: None,
            used_prior: None,
        }
    }

    /// Keeps the file's checkpoints, keyed with `key`; `prior` are those of the version the
    /// client last wrote at the path, for a rebuild from a delta.
    pub fn keep_checkpoints(&mut self, key: Arc<WindowKey>, prior: Option<Prior>) {
        self.checkpoints = Some((key, prior));
    }

    /// True when the file is big enough for checkpoints to pay.
    pub fn checkpointed(&self) -> bool {
        self.size >= CHECKPOINT_MIN
    }

    /// The sha256 of the content whose checkpoints the last rebuild used, if it used any:
    /// after a rebuild that failed its check, they may be what was wrong.
    pub fn used_prior(&self) -> Option<&str> {
        self.used_prior.as_deref()
    }

    /// True when a delta will be asked for (a rebuild can use the older version's
    /// checkpoints).
    pub fn wants_delta(&self) -> bool {
        self.delta.is_some()
    }

    /// Asks for a delta against R's older version at the path, rather than the whole file; how
    /// is decided by [`Pending::prepare_delta`], once the older version's checkpoints are known.
    pub fn want_delta(&mut self) {
        self.delta = Some(Box::new(Ask::Wanted));
    }

    /// Decides how to ask for the delta [`Pending::want_delta`] wanted: with the checkpoints of
    /// the older version (their window hashes) and a key, E is asked for its window hashes
    /// first (GET_WINDOWS) and only the windows that differ are signed; without, the whole
    /// older version is to be signed ([`Pending::needs_signing`]).
    pub fn prepare_delta(&mut self) {
        if !matches!(self.delta.as_deref(), Some(Ask::Wanted)) {
            return;
        }
        let known = matches!(&self.checkpoints, Some((_, Some((_, prior)))) if !prior.is_empty());
        self.delta = Some(Box::new(if known { Ask::Windows } else { Ask::Sign }));
    }

    /// The whole older version is to be signed ([`Pending::sign_whole`]) before the request can
    /// go out: a read of the whole file, which the caller does off the async runtime.
    pub fn needs_signing(&self) -> bool {
        matches!(self.delta.as_deref(), Some(Ask::Sign))
    }

    /// True when the next request for this file asks for its whole content (no delta).
    pub fn asks_whole(&self) -> bool {
        self.delta.is_none()
    }

    /// True when the next request for this file is a GET_WINDOWS.
    pub fn asks_windows(&self) -> bool {
        matches!(self.delta.as_deref(), Some(Ask::Windows))
    }

    /// Signs the whole older version instead of asking for window hashes (a daemon that does not
    /// know GET_WINDOWS, or one that refused it for this file).
    pub fn sign_later(&mut self) {
        self.delta = Some(Box::new(Ask::Sign));
    }

    /// R's older version at this path, if it is a regular file, opened from the root's handles
    /// without following a symlink anywhere on its path: a directory another user on R swapped
    /// for a symlink never makes a delta's signature, plan or rebuild read a file elsewhere
    /// (its signature would go to E).
    fn open_older(&self, what: &'static str) -> Result<(std::fs::File, u64), zync_fs::FsError> {
        let path = || self.rel.to_path(&self.root);
        let dir = zync_fs::Dir::parent_of(&self.root, &self.rel)?;
        match dir.open_file_to_read(self.rel.file_name()) {
            Ok(Some(opened)) => Ok((opened.file, opened.size)),
            Ok(None) => Err(zync_fs::FsError::io(
                what,
                path(),
                std::io::Error::new(std::io::ErrorKind::InvalidInput, "not a regular file"),
            )),
            Err(e) => Err(zync_fs::FsError::io(what, path(), e)),
        }
    }

    /// Asks for the delta with the signature and window hashes of the whole older version
    /// (`zync_fs::delta::signature_and_windows_of`), or for the whole file when it cannot be
    /// read. Reads the whole file: call it off the async runtime.
    pub fn sign_whole(&mut self) {
        let signed = self
            .open_older("open for a signature")
            .and_then(|(file, len)| {
                zync_fs::delta::signature_and_windows_of(file, len).map_err(|e| {
                    zync_fs::FsError::io("read for a signature", self.rel.to_path(&self.root), e)
                })
            });
        self.delta = match signed {
            Ok((signature, windows)) => Some(Box::new(Ask::Signature(signature, windows))),
            Err(e) => {
                tracing::debug!(path = self.path(), "no delta, downloading whole: {e}");
                None
            }
        };
    }

    /// The key E hashes windows with for GET_WINDOWS: this client's checkpoint key.
    pub fn window_key(&self) -> Option<&WindowKey> {
        self.checkpoints.as_ref().map(|(key, _)| &**key)
    }

    /// About how many bytes the request's delta fields add to its frame: the signature and
    /// hashes as base64, the key of a GET_WINDOWS, a plan's window lists.
    pub fn ask_bytes(&self) -> usize {
        let base64 = |n: usize| n.div_ceil(3) * 4;
        match self.delta.as_deref() {
            Some(Ask::Signature(signature, windows)) => {
                32 + base64(signature.len())
                    + windows.as_ref().map_or(0, |w| 96 + base64(w.hashes.len()))
            }
            Some(Ask::Plan(signature, plan)) => {
                // Each window number is at most 11 characters with its comma.
                32 + base64(signature.len()) + 192 + 11 * (plan.same.len() + plan.covers.len())
            }
            Some(Ask::Windows) => 64 + base64(zync_proto::GetWindows::KEY_LEN),
            Some(Ask::Wanted | Ask::Sign) | None => 0,
        }
    }

    /// The sha256 of E's version this download is for.
    pub fn sha256(&self) -> &str {
        self.record.sha256.as_deref().unwrap_or_default()
    }

    /// The request to send for this file, once: `None` asks for the whole file (from where a
    /// kept partial ends). Call [`Pending::prepare_delta`] first, and sign when
    /// [`Pending::needs_signing`] says so.
    pub fn take_ask(&mut self) -> Option<Ask> {
        self.delta.take().map(|ask| *ask)
    }

    /// Plans the delta from E's window hashes (GET_WINDOWS's answer): the windows of E's file
    /// whose hash is that of the older version's window at the same offset (from its
    /// checkpoints, so R's file is not read for them) are copied; only R's other windows are
    /// read and signed. When no window is the same, the whole older version is signed instead.
    /// Reads R's file: call it off the async runtime.
    ///
    /// What the plan rests on is checked where it matters: a window R no longer has as its
    /// checkpoints say (R's file changed since) rebuilds other bytes, which the sha256 check
    /// refuses; the file is then downloaded whole.
    pub fn plan_delta(&mut self, reply: WindowsReply) {
        let Some((_, Some((_, prior)))) = &self.checkpoints else {
            return self.sign_whole();
        };
        let theirs = reply.windows;
        let window = u64::from(theirs.window);
        if window != CHECKPOINT_WINDOW
            || theirs.hashes.len() as u64
                != theirs.base_size.div_ceil(window) * WindowHashes::HASH_LEN as u64
        {
            tracing::debug!(
                path = self.path(),
                "GET_WINDOWS answered {} bytes of hashes for {} bytes in windows of {window}; signing the whole file",
                theirs.hashes.len(),
                theirs.base_size
            );
            return self.sign_whole();
        }
        let path = self.rel.to_path(&self.root);
        let planned = self
            .open_older("open as a delta's base")
            .map_err(zync_fs::DeltaError::from)
            .and_then(|(base, base_size)| {
                // E's whole windows with the hash of R's window at the same offset.
                let whole_in_e = theirs.base_size / window;
                let same: Vec<u32> = theirs
                    .hashes
                    .chunks_exact(WindowHashes::HASH_LEN)
                    .take(whole_in_e.min(base_size / window) as usize)
                    .enumerate()
                    .filter(|(number, hash)| {
                        let hash = u128::from_be_bytes((*hash).try_into().unwrap_or_default());
                        prior.window_hash(*number) == Some(hash)
                    })
                    .map(|(number, _)| number as u32)
                    .collect();
                let covers: Vec<u32> = (0..base_size.div_ceil(window) as u32)
                    .filter(|number| same.binary_search(number).is_err())
                    .collect();
                if same.is_empty() {
                    return Ok(None);
                }
                let signature = zync_fs::delta::signature_of_windows(
                    &base,
                    &path,
                    base_size,
                    theirs.window,
                    &covers,
                )?;
                Ok(Some(Ask::Plan(
                    signature,
                    DeltaPlan {
                        sha256: reply.sha256,
                        window: theirs.window,
                        base_size,
                        same,
                        covers,
                    },
                )))
            });
        match planned {
            Ok(Some(ask)) => self.delta = Some(Box::new(ask)),
            Ok(None) => self.sign_whole(),
            Err(e) => {
                tracing::debug!(
                    path = self.path(),
                    "no delta plan, signing the whole file: {e}"
                );
                self.sign_whole()
            }
        }
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
    /// by an earlier attempt (as rsync's `--partial`), else 0. Only a partial that
    /// [`AtomicFile::resume`] would go on with counts (zync's own, looked at through the
    /// directory's handle): one another local user put there is downloaded over from 0 in a
    /// temp file of its own, not resumed, and does not fail the download.
    pub fn resume_offset(&self) -> u64 {
        if !self.partial {
            return 0;
        }
        match AtomicFile::resume_offset(&self.root, &self.rel, self.sha256()) {
            len if len <= self.size => len,
            _ => 0,
        }
    }

    /// Opens the temp file for content that starts at `offset` (a kept partial when > 0).
    ///
    /// # Errors
    /// When the temp file cannot be made, the partial changed since it was measured, or the
    /// disk has no room for the file ([`zync_fs::FsError::NoSpace`]).
    pub fn open(&mut self, offset: u64) -> Result<(), ClientError> {
        self.open_in(offset, None)
    }

    /// As [`Pending::open`]; a new temp file's directory handle comes from `parents` when
    /// given (a group of files shares them).
    fn open_in(&mut self, offset: u64, parents: Option<&mut Parents>) -> Result<(), ClientError> {
        let mut file = if offset == 0 {
            let mut file = match parents {
                Some(parents) => AtomicFile::create_in(parents, &self.root, &self.rel)?,
                None => AtomicFile::create(&self.root, &self.rel)?,
            };
            if let Some((key, _)) = &self.checkpoints {
                file.keep_checkpoints(None, key);
            }
            file
        } else {
            match AtomicFile::resume(&self.root, &self.rel, self.sha256())? {
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
                if let Err(k) = file.keep_partial(self.sha256()) {
                    tracing::debug!(path = %self.rel, "cannot keep the partial download: {k}");
                }
            }
            return Err(e.into());
        }
        self.file = Some(Box::new(file));
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
        self.check_room_for(self.remaining(self.resume_offset()), claimed)
    }

    /// Checks that R's disk has room for `len` more bytes where this file goes, after the
    /// `claimed` bytes downloads already asked for will take (a delta kept while the file is
    /// rebuilt, beside the rebuilt file itself).
    ///
    /// # Errors
    /// [`zync_fs::FsError::NoSpace`] when there is not room for them.
    pub fn check_room_for(&self, len: u64, claimed: u64) -> Result<(), ClientError> {
        Ok(AtomicFile::check_room(&self.root, &self.rel, len, claimed)?)
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
        if header.sha256 != self.sha256() {
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
        let sealed = file.seal(self.sha256(), self.record.mode, self.record.mtime_ns)?;
        Ok(self.into_ready(sealed, downloaded))
    }

    /// Writes a small file that arrived whole in one piece and seals it: the work of
    /// [`Pending::open`], [`Pending::write`] and [`Pending::seal`] at once, for a blocking
    /// thread writing a group of files.
    ///
    /// # Errors
    /// As those three.
    pub fn write_whole(
        mut self: Box<Self>,
        parents: &mut Parents,
        header: &FileHeader,
        data: &[u8],
    ) -> Result<Box<Ready>, ClientError> {
        self.open_in(0, Some(parents))?;
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
        self.file.take().map(|file| *file)
    }

    /// Returns the temp file lent by [`Pending::take_file`].
    pub fn put_file(&mut self, file: AtomicFile) {
        self.file = Some(Box::new(file));
    }

    /// Keeps what arrived as a partial download when the connection broke, so that the next
    /// attempt resumes there.
    pub fn keep_partial(mut self) {
        if let Some(file) = self.file.take().filter(|f| f.written() > 0) {
            if let Err(e) = file.keep_partial(self.sha256()) {
                tracing::debug!(path = %self.rel, "cannot keep the partial download: {e}");
            }
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
        self: Box<Self>,
        header: &DeltaHeader,
        spool: std::fs::File,
    ) -> Result<Box<Ready>, (Option<Box<Pending>>, ClientError)> {
        use std::io::Seek;
        let mut pending = self;
        if header.sha256 != pending.sha256() {
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
            let older = pending
                .open_older("open as a delta's base")
                .map_err(|e| ClientError::Protocol(format!("{}: {e}", pending.rel)))?
                .0;
            let file = pending.file.as_mut().ok_or_else(|| {
                ClientError::Protocol(format!("{}: no file to rebuild into", pending.rel))
            })?;
            // Only here: a rebuild that fails the check (its checkpoints may be what is
            // wrong) is downloaded whole, and that download hashes every byte.
            if let Some((key, prior)) = &mut pending.checkpoints {
                if let Some((sha256, prior)) = prior.take() {
                    file.keep_checkpoints(Some(&prior), key);
                    pending.used_prior = Some(sha256);
                }
            }
            let spool = std::io::BufReader::new(spool);
            zync_fs::delta::apply_file(&older, &base, spool, header.size, |data| {
                file.write(data).map_err(std::io::Error::other)
            })
            .map_err(|e| ClientError::Protocol(format!("{}: {e}", pending.rel)))?;
            let file = pending.file.take().ok_or_else(|| {
                ClientError::Protocol(format!("{}: no file to rebuild into", pending.rel))
            })?;
            Ok::<_, ClientError>(file.seal(
                pending.sha256(),
                pending.record.mode,
                pending.record.mtime_ns,
            )?)
        })();
        match rebuilt {
            Ok(sealed) => Ok(pending.into_ready(sealed, Some(header.delta_size))),
            // No room for the rebuilt file beside the delta included: the whole file is asked
            // for, its room checked first without the delta, which is gone by then.
            Err(e) => {
                pending.file = None;
                pending.delta = None;
                Err((Some(pending), e))
            }
        }
    }

    /// Copies content R already has (a file E renamed or copied) from `source`, a file in
    /// this file's root, into a sealed temp file, verified like a download.
    ///
    /// Another local user can swap a directory on the source's path for a symlink, or the
    /// source for a FIFO or a huge sparse file, at any instant. So the source is opened from
    /// the root's handle without following a symlink in any component (invariant 3
    /// (docs/ARCHITECTURE.md): nothing from outside the root is read into it either), without
    /// waiting on a FIFO, only if it is a regular file of the expected size, and at most the
    /// expected size and one byte more are read from it: a longer file fails at once. The
    /// caller then downloads the file instead.
    ///
    /// # Errors
    /// When `source` is not a regular file of the expected size in the root, reached without a
    /// symlink, cannot be read, or no longer holds the content.
    pub fn copy_from(&self, source: &Path) -> Result<Box<Ready>, ClientError> {
        let p = self;
        let refused = |why: String| ClientError::Io {
            what: "copy",
            path: source.display().to_string(),
            source: std::io::Error::other(why),
        };
        let rel = source
            .strip_prefix(&*p.root)
            .ok()
            .and_then(Path::to_str)
            .and_then(|rel| RelPath::parse(rel).ok())
            .ok_or_else(|| refused("it is not a path in the synced directory".into()))?;
        let dir = zync_fs::Dir::parent_of(&p.root, &rel)?;
        let mut input = match dir.open_file_to_read(rel.file_name()) {
            Ok(Some(opened)) if opened.size == p.size => opened.file,
            Ok(Some(opened)) => {
                return Err(refused(format!(
                    "it holds {} bytes, not the {} expected",
                    opened.size, p.size
                )))
            }
            Ok(None) => return Err(refused("it is missing or not a regular file".into())),
            Err(e) => {
                return Err(ClientError::Io {
                    what: "copy",
                    path: source.display().to_string(),
                    source: e,
                })
            }
        };
        let mut file = AtomicFile::create(&p.root, &p.rel)?;
        file.reserve(p.size)?;
        copy_at_most(&mut input, p.size, &mut file, source)?;
        let sealed = file.seal(p.sha256(), p.record.mode, p.record.mtime_ns)?;
        Ok(Box::new(Ready {
            rel: p.rel.clone(),
            before: p.before.clone(),
            record: p.record.clone(),
            sealed,
            downloaded: None,
            partial: p.partial,
        }))
    }
}

/// Copies `input` to its end into `file`, reading at most `size` bytes and one more: a source
/// that turns out longer than `size` (it grew since it was opened) fails as soon as that one
/// more byte is read, with nothing past `size` written. `source` names it in errors.
fn copy_at_most(
    input: &mut impl Read,
    size: u64,
    file: &mut AtomicFile,
    source: &Path,
) -> Result<(), ClientError> {
    let io = |e| ClientError::Io {
        what: "copy",
        path: source.display().to_string(),
        source: e,
    };
    let limit = size.saturating_add(1);
    let cap = usize::try_from(limit).map_or(COPY_PIECE, |n| n.clamp(1, COPY_PIECE));
    let mut input = input.take(limit);
    let mut buf = vec![0u8; cap];
    let mut copied = 0u64;
    loop {
        let n = match input.read(&mut buf) {
            Ok(0) => return Ok(()),
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(io(e)),
        };
        copied += n as u64;
        if copied > size {
            return Err(io(std::io::Error::other(format!(
                "it is longer than the {size} bytes expected"
            ))));
        }
        file.write(&buf[..n])?;
    }
}

/// The largest read of a local copy.
const COPY_PIECE: usize = 256 << 10;

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

    /// The content's sha256 and checkpoints, when they were kept, to store for the next
    /// version written over it.
    pub fn checkpoints(&self) -> Option<(&str, &Checkpoints)> {
        Some((self.record.sha256.as_deref()?, self.sealed.checkpoints()?))
    }

    /// Flushes this file's content on its own.
    ///
    /// # Errors
    /// When the temp file cannot be flushed.
    pub fn sync(&self) -> Result<(), ClientError> {
        Ok(self.sealed.sync()?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;
    use zync_proto::{GetDelta, GetWindows, Kind, Op, Request};

    /// Another user on R who can write in the tree swaps the directory of a file about to be
    /// downloaded as a delta and a symlink to theirs, again and again, while R's older version
    /// is signed: the signature (which goes to E) is never that of their file.
    #[test]
    fn a_parent_swapped_for_a_symlink_never_makes_a_signature_of_a_file_elsewhere() {
        let bait = zync_fs::race::Bait::new(&[b'o'; 8192], &[b's'; 8192]);
        let (theirs, _) =
            zync_fs::delta::signature_and_windows(&bait.theirs.join("f")).expect("their signature");
        let record = Synced {
            kind: Kind::File,
            size: 10,
            mtime_ns: 1,
            mode: 0o644,
            sha256: Some("ab".repeat(32)),
            target: None,
        };
        let root: Arc<Path> = Arc::from(bait.root.as_path());
        let rel = RelPath::parse("d/f").expect("path");
        let mut pending = Pending::new(&root, rel, Stat::Missing, false, record);
        let d = bait.root.join("d");
        let ((leaked, ours), swaps) = zync_fs::race::exchanging(&d, &bait.link, || {
            let (mut leaked, mut ours) = (0, 0);
            for _ in 0..5_000 {
                pending.sign_whole();
                match pending.take_ask() {
                    Some(Ask::Signature(signature, _)) if signature == theirs => leaked += 1,
                    Some(Ask::Signature(..)) => ours += 1,
                    _ => {}
                }
            }
            (leaked, ours)
        });
        assert_eq!(leaked, 0, "their file was signed {leaked} times");
        assert!(
            ours > 0 && swaps > 0,
            "{ours} signatures of ours, {swaps} swaps"
        );
    }

    /// A big file's download, with `ask` as its delta request.
    fn pending(ask: Ask) -> Pending {
        let record = Synced {
            kind: Kind::File,
            size: 1 << 30,
            mtime_ns: 1,
            mode: 0o644,
            sha256: Some("ab".repeat(32)),
            target: None,
        };
        let rel = RelPath::parse("deep/path/to/big.bin").expect("path");
        let mut pending = Pending::new(
            &Arc::from(Path::new("/r")),
            rel,
            Stat::Missing,
            false,
            record,
        );
        pending.delta = Some(Box::new(ask));
        pending
    }

    /// A root `tmp/root` holding nothing, and the download of `content` to its `new`.
    fn copy_fixture(content: &[u8]) -> (tempfile::TempDir, Arc<Path>, Pending) {
        let tmp = tempfile::tempdir().expect("tempdir");
        let root: Arc<Path> = Arc::from(tmp.path().join("root"));
        std::fs::create_dir(&root).expect("mkdir");
        let record = Synced {
            kind: Kind::File,
            size: content.len() as u64,
            mtime_ns: 1_000_000_000,
            mode: 0o644,
            sha256: Some(zync_fs::hash_bytes(content)),
            target: None,
        };
        let rel = RelPath::parse("new").expect("path");
        let pending = Pending::new(&root, rel, Stat::Missing, false, record);
        (tmp, root, pending)
    }

    /// Makes a FIFO at `path`, as another local user may put one where a file was.
    fn fifo(path: &Path) {
        use std::os::unix::ffi::OsStrExt;
        let c = std::ffi::CString::new(path.as_os_str().as_bytes()).expect("no NUL");
        // SAFETY: a valid NUL-terminated path; mkfifo reads it only.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0, "mkfifo");
    }

    /// What is in `root` (names), sorted.
    fn names(root: &Path) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(root)
            .expect("list")
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }

    /// Runs a local copy of `pending` from `source` on a thread of its own; fails the test
    /// (instead of hanging it) if it takes more than a few seconds.
    fn copy_in_time(pending: Pending, source: PathBuf) -> Result<(), ClientError> {
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let _ = tx.send(pending.copy_from(&source).map(|_| ()));
        });
        rx.recv_timeout(std::time::Duration::from_secs(5))
            .unwrap_or_else(|e| panic!("the copy did not end within 5 s ({e}): it blocked"))
    }

    /// Another local user puts a FIFO, or a symlink to one, where the copy's source was: the
    /// copy fails at once (and the file is downloaded instead), never waits for a writer.
    #[test]
    fn a_fifo_as_a_copy_source_fails_at_once_and_never_blocks() {
        for link in [false, true] {
            let (tmp, root, pending) = copy_fixture(b"content");
            let source = if link {
                fifo(&tmp.path().join("theirs"));
                std::os::unix::fs::symlink(tmp.path().join("theirs"), root.join("src"))
                    .expect("symlink");
                root.join("src")
            } else {
                fifo(&root.join("src"));
                root.join("src")
            };
            let copied = copy_in_time(pending, source);
            assert!(copied.is_err(), "link {link}: copied from a FIFO");
            assert_eq!(names(&root), ["src"], "link {link}: left behind");
        }
    }

    /// The source's directory is swapped for a symlink to another user's directory holding a
    /// file with the very content wanted: it is not read through the symlink (the download
    /// from E takes over), and nothing is made in the root.
    #[test]
    fn a_copy_source_behind_a_symlinked_parent_is_not_read_through() {
        let content = b"the content E has";
        let (tmp, root, pending) = copy_fixture(content);
        let theirs = tmp.path().join("theirs");
        std::fs::create_dir(&theirs).expect("mkdir");
        std::fs::write(theirs.join("f"), content).expect("write");
        std::os::unix::fs::symlink(&theirs, root.join("d")).expect("symlink");
        let copied = copy_in_time(pending, root.join("d/f"));
        assert!(
            matches!(
                copied,
                Err(ClientError::Fs(zync_fs::FsError::SymlinkInPath { .. }))
            ),
            "read through a symlinked parent: {copied:?}"
        );
        assert_eq!(names(&root), ["d"], "left behind");
        // A source outside the root altogether is refused too.
        let (_tmp, root, pending) = copy_fixture(content);
        let copied = copy_in_time(pending, theirs.join("f"));
        assert!(copied.is_err(), "copied from outside the root");
        assert!(names(&root).is_empty(), "left behind: {:?}", names(&root));
    }

    /// A source longer than expected (a huge sparse file, say) fails without being read: the
    /// error is the refusal, not the sha256 check after a whole copy. (Only 64 MiB here: a
    /// copy without a bound would fill the disk with a sparse terabyte's zeros.)
    #[test]
    fn a_copy_source_longer_than_expected_fails_without_being_copied() {
        let content = b"short";
        let (_tmp, root, pending) = copy_fixture(content);
        let big = std::fs::File::create(root.join("src")).expect("create");
        big.set_len(64 << 20).expect("a sparse 64 MiB");
        drop(big);
        match pending.copy_from(&root.join("src")) {
            Err(ClientError::Io { what: "copy", .. }) => {}
            Err(e) => panic!("expected the copy refused before reading, got {e:?}"),
            Ok(_) => panic!("copied 64 MiB for 5 bytes"),
        }
        assert_eq!(names(&root), ["src"], "left behind");
    }

    /// A source that grows while it is copied (its size was right when it was opened) is read
    /// no further than the expected size and one byte, and nothing past the expected size is
    /// written.
    #[test]
    fn a_copy_reads_at_most_one_byte_past_the_expected_size() {
        /// Zeros without end (up to a cap, so a broken bound cannot hang the test), counted.
        struct Endless(u64);
        impl Read for Endless {
            fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
                let n = buf
                    .len()
                    .min(usize::try_from((64u64 << 20) - self.0).unwrap_or(0));
                buf[..n].fill(0);
                self.0 += n as u64;
                Ok(n)
            }
        }
        let tmp = tempfile::tempdir().expect("tempdir");
        let rel = RelPath::parse("new").expect("path");
        for size in [0u64, 1, 1000, 300_000] {
            let mut file = AtomicFile::create(tmp.path(), &rel).expect("create");
            let mut input = Endless(0);
            let copied = copy_at_most(&mut input, size, &mut file, Path::new("src"));
            assert!(copied.is_err(), "size {size}: an endless source copied");
            assert!(input.0 <= size + 1, "size {size}: read {} bytes", input.0);
            assert!(
                file.written() <= size,
                "size {size}: wrote {}",
                file.written()
            );
        }
    }

    /// What the pipeline counts a request as ([`Pending::ask_bytes`] with `fetch.rs`'s fixed
    /// part) is at least the request's frame, for each kind of delta request.
    #[test]
    fn a_request_counts_at_least_the_bytes_of_its_frame() {
        let (dir, path) = ("code", "deep/path/to/big.bin");
        let signature = vec![7u8; 115_000];
        let windows = WindowHashes {
            window: 8 << 20,
            base_size: u64::MAX,
            hashes: vec![9; 128 * WindowHashes::HASH_LEN],
        };
        let plan = DeltaPlan {
            sha256: "ab".repeat(32),
            window: 8 << 20,
            base_size: u64::MAX,
            same: (4_000_000_000..4_000_000_100).collect(),
            covers: (4_100_000_000..4_100_000_028).collect(),
        };
        let get_delta = |windows, plan| {
            Op::GetDelta(GetDelta {
                dir: dir.into(),
                path: path.into(),
                signature: signature.clone(),
                windows,
                plan,
            })
        };
        for (ask, op) in [
            (
                Ask::Signature(signature.clone(), Some(windows.clone())),
                get_delta(Some(windows.clone()), None),
            ),
            (
                Ask::Plan(signature.clone(), plan.clone()),
                get_delta(None, Some(plan.clone())),
            ),
            (
                Ask::Windows,
                Op::GetWindows(GetWindows {
                    dir: dir.into(),
                    path: path.into(),
                    window: 8 << 20,
                    key: vec![1; GetWindows::KEY_LEN],
                }),
            ),
        ] {
            let counted = 64 + dir.len() + path.len() + pending(ask).ask_bytes();
            let frame = Request { id: u64::MAX, op }.to_json().len();
            assert!(
                counted >= frame,
                "{counted} counted for a {frame}-byte frame"
            );
            assert!(
                counted < frame + 1024,
                "{counted} counted for a {frame}-byte frame"
            );
        }
    }
}
