//! Finished downloads on their way into place, off the receiving thread: small files written
//! and sealed in groups on blocking threads ([`Writer`]), then renamed in batches that are made
//! durable by one flush first ([`Batch`], invariant 1 (docs/ARCHITECTURE.md)). A later flush makes a batch's
//! renames durable, and the changes finished before a flush began are committed once it ends
//! (invariant 2).

use std::collections::{BTreeSet, VecDeque};
use std::path::{Path, PathBuf};

use tokio_tungstenite::tungstenite::Bytes;
use zync_cli::progress::Progress;
use zync_db::ClientState;
use zync_fs::{Parents, RelPath};
use zync_proto::FileHeader;

use crate::download::land::file::{Pending, Ready};
use crate::download::land::place::Place;
use crate::error::ClientError;
use crate::ledger::{Commit, Committed, Ledger, Record};

/// Downloaded files are renamed into place in batches of at most this many files or bytes, each
/// batch made durable by one flush of its file system first (invariant 1).
const BATCH_FILES: usize = 1024;
const BATCH_BYTES: u64 = 256 << 20;
/// Files at least this big are flushed one by one.
const OWN_FLUSH_SIZE: u64 = 8 << 20;
/// Up to this many small files and directories are flushed one by one too.
const OWN_FLUSH_FILES: usize = 16;

/// A group is handed to its thread at this many files or bytes.
const WRITER_GROUP_FILES: usize = 64;
const WRITER_GROUP_BYTES: usize = 4 << 20;
/// Groups written at the same time, on threads of their own.
const WRITER_THREADS: usize = 2;

/// What a group of whole files became, by change index: sealed files or why not.
pub type Written = Vec<(usize, Result<Box<Ready>, ClientError>)>;

/// A group being written: the change index and path of each of its files, and its thread.
type Group = (Vec<(usize, String)>, tokio::task::JoinHandle<Written>);

/// Small files that arrived whole, written and sealed in groups on a blocking thread while the
/// next ones arrive: making, writing, verifying and closing a temp file costs more than
/// receiving it.
#[derive(Default)]
pub struct Writer {
    group: Vec<(usize, Box<Pending>, FileHeader, Bytes)>,
    bytes: usize,
    /// Groups being written.
    writing: VecDeque<Group>,
}

impl Writer {
    /// Adds a file; when the group is full, starts writing it and returns what the oldest
    /// group became once as many as [`WRITER_THREADS`] are being written (waiting for it).
    pub async fn push(
        &mut self,
        index: usize,
        pending: Box<Pending>,
        header: FileHeader,
        data: Bytes,
    ) -> Written {
        self.bytes += data.len();
        self.group.push((index, pending, header, data));
        if self.group.len() < WRITER_GROUP_FILES && self.bytes < WRITER_GROUP_BYTES {
            return Vec::new();
        }
        let done = if self.writing.len() >= WRITER_THREADS {
            self.wait_oldest().await
        } else {
            Vec::new()
        };
        self.start();
        done
    }

    /// Writes everything still held and returns what all of it became.
    pub async fn drain(&mut self) -> Written {
        self.start();
        let mut done = Vec::new();
        while !self.writing.is_empty() {
            done.extend(self.wait_oldest().await);
        }
        done
    }

    /// Hands the gathered group to a thread of its own.
    fn start(&mut self) {
        let group = std::mem::take(&mut self.group);
        self.bytes = 0;
        if group.is_empty() {
            return;
        }
        let indices = group
            .iter()
            .map(|(i, pending, ..)| (*i, pending.path().to_string()))
            .collect();
        let handle = tokio::task::spawn_blocking(move || write_group(group));
        self.writing.push_back((indices, handle));
    }

    async fn wait_oldest(&mut self) -> Written {
        let Some((indices, writing)) = self.writing.pop_front() else {
            return Vec::new();
        };
        match writing.await {
            Ok(written) => written,
            // The thread panicked: each of its files fails this round (and is fetched again
            // next round) instead of vanishing from the report.
            Err(e) => indices
                .into_iter()
                .map(|(i, path)| {
                    let error = ClientError::Io {
                        what: "write",
                        path,
                        source: std::io::Error::other(format!("the writing thread failed: {e}")),
                    };
                    (i, Err(error))
                })
                .collect(),
        }
    }
}

/// Writes and seals a group of whole files, reaching each directory once for the group.
fn write_group(group: Vec<(usize, Box<Pending>, FileHeader, Bytes)>) -> Written {
    let mut parents = Parents::default();
    group
        .into_iter()
        .map(|(i, pending, header, data)| (i, pending.write_whole(&mut parents, &header, &data)))
        .collect()
}

/// A batch of finished files, flushed as a whole before any of them is renamed.
type Files = Vec<(usize, Box<Ready>)>;

/// What one batch's thread did: how each file's rename went, what its commit recorded, and
/// the directories its renames touched (made durable by a later flush).
struct Installed {
    results: Vec<(usize, Result<Record, ClientError>)>,
    commit: Commit,
    committed: Committed,
    touched: BTreeSet<PathBuf>,
}

type Running = tokio::task::JoinHandle<Result<Installed, ClientError>>;

/// The place files are renamed into and the connection commits are written on: passed from
/// one batch's thread to the next, so that batches commit and rename in order.
type Baton = (Place, ClientState);

/// Batches whose threads may run at once: the next batch's flush goes on while the last one
/// commits and renames.
const FLIGHTS: usize = 2;

/// What finishing files needs from the sync: what planning touched, and where results go.
pub struct Sink<'s> {
    /// The sync's place: the directories it touched go into the next flush.
    pub place: &'s mut Place,
    /// Collects what became of each change.
    pub ledger: &'s mut Ledger,
    /// Counts installed files.
    pub progress: &'s Progress,
    /// What the commits recorded so far.
    pub committed: &'s mut Committed,
}

/// Finished files waiting for their rename. A full batch goes to a blocking thread that
/// flushes it (with every directory touched before), then, in batch order, commits what
/// finished before that flush began and renames the batch into place (invariant 1: no rename
/// before the content is on disk; invariant 2: nothing recorded before it is durable). The
/// receiving thread goes on meanwhile, and waits only when batches fill faster than they are
/// flushed and renamed.
pub struct Batch {
    files: Files,
    bytes: u64,
    flights: VecDeque<Running>,
    /// Where the next batch's thread receives the baton from the one before it.
    baton: std::sync::mpsc::Receiver<Baton>,
    /// Directories renames touched, for the next flush.
    touched: BTreeSet<PathBuf>,
    /// The synced directory, for messages.
    root: PathBuf,
}

impl Batch {
    /// An empty batch whose files are renamed into `place`; commits are written on `db` (a
    /// connection of its own: the receiving thread keeps reading on its own).
    pub fn new(place: Place, db: ClientState) -> Batch {
        let root = place.root().to_path_buf();
        let (tx, baton) = std::sync::mpsc::channel();
        // A receiver keeps what was sent before it is read.
        let _ = tx.send((place, db));
        Batch {
            files: Vec::new(),
            bytes: 0,
            flights: VecDeque::new(),
            baton,
            touched: BTreeSet::new(),
            root,
        }
    }

    /// Adds a sealed file.
    pub fn add(&mut self, index: usize, ready: Box<Ready>) {
        self.bytes += ready.size();
        self.files.push((index, ready));
    }

    /// Adds what a group of whole files became: sealed files join the batch, failures are
    /// recorded.
    pub fn add_written(&mut self, written: Written, ledger: &mut Ledger) {
        for (i, result) in written {
            match result {
                Ok(ready) => self.add(i, ready),
                Err(e) => ledger.fail(i, &e),
            }
        }
    }

    /// True when the batch should be flushed now.
    pub fn is_full(&self) -> bool {
        self.files.len() >= BATCH_FILES || self.bytes >= BATCH_BYTES
    }

    /// Hands the files gathered to a thread, first taking in the oldest batch if as many as
    /// [`FLIGHTS`] are under way (waiting for it).
    ///
    /// # Errors
    /// A flush, rename-thread or database failure.
    pub async fn rotate(&mut self, sink: &mut Sink<'_>) -> Result<(), ClientError> {
        while self.flights.len() >= FLIGHTS {
            self.take_in_oldest(sink).await?;
        }
        self.start(sink);
        Ok(())
    }

    /// Flushes, commits and installs everything, until nothing is left unrecorded: the files
    /// gathered, then the renames of the last batch.
    ///
    /// # Errors
    /// A flush, rename-thread or database failure.
    pub async fn drain(&mut self, sink: &mut Sink<'_>) -> Result<(), ClientError> {
        loop {
            self.wait(sink).await?;
            if self.files.is_empty() && sink.ledger.is_fresh_empty() && self.touched.is_empty() {
                return Ok(());
            }
            self.start(sink);
        }
    }

    /// Takes in every batch on its thread (waiting for them), starting no other.
    ///
    /// # Errors
    /// The first flush, rename-thread or database failure among them.
    pub async fn wait(&mut self, sink: &mut Sink<'_>) -> Result<(), ClientError> {
        while !self.flights.is_empty() {
            self.take_in_oldest(sink).await?;
        }
        Ok(())
    }

    /// The place files were renamed into, with what the renames did (files, bytes, conflict
    /// copies), and the connection the commits were written on (for the next sync to reuse);
    /// `None` until the batch is drained, or after a failure.
    pub fn place(&mut self) -> Option<(Place, ClientState)> {
        if !self.flights.is_empty() {
            return None;
        }
        self.baton.try_recv().ok()
    }

    fn start(&mut self, sink: &mut Sink<'_>) {
        let files = std::mem::take(&mut self.files);
        self.bytes = 0;
        let mut dirs = sink.place.take_touched();
        dirs.append(&mut self.touched);
        let in_place = sink.place.take_in_place();
        let checkpoint = sink.ledger.checkpoint();
        if files.is_empty() && dirs.is_empty() && in_place.is_empty() && checkpoint.is_empty() {
            return;
        }
        let commit = sink.ledger.prepare(checkpoint);
        let progress = sink.progress.clone();
        let (pass, next) = std::sync::mpsc::channel();
        let baton = std::mem::replace(&mut self.baton, next);
        let root = self.root.clone();
        self.flights.push_back(tokio::task::spawn_blocking(move || {
            flush(&files, &root, &in_place, &dirs)?;
            // In batch order from here: the one before has committed and renamed.
            let (mut place, mut db) = baton.recv().map_err(|_| ClientError::Io {
                what: "rename files into",
                path: root.display().to_string(),
                source: std::io::Error::other("the batch before this one failed"),
            })?;
            store_checkpoints(&mut db, &files);
            // Durable now: what finished before the flush, and the notes of the files about
            // to be renamed.
            let committed = commit.write(&mut db)?;
            let mut parents = Parents::default();
            let results = files
                .into_iter()
                .map(|(i, ready)| {
                    let result = place.install_in(ready, &mut parents);
                    if result.is_ok() {
                        progress.files(1);
                    }
                    (i, result)
                })
                .collect();
            let touched = place.take_touched();
            // The receiver is the next batch's; once dropped, nobody needs the baton.
            let _ = pass.send((place, db));
            Ok(Installed {
                results,
                commit,
                committed,
                touched,
            })
        }));
    }

    async fn take_in_oldest(&mut self, sink: &mut Sink<'_>) -> Result<(), ClientError> {
        let Some(running) = self.flights.pop_front() else {
            return Ok(());
        };
        let installed = running.await.map_err(|e| ClientError::Io {
            what: "flush and rename a batch in",
            path: self.root.display().to_string(),
            source: std::io::Error::other(e.to_string()),
        })??;
        sink.ledger.written(&installed.commit);
        sink.committed.add(installed.committed);
        for (i, result) in installed.results {
            match result {
                Ok(record) => sink.ledger.done(i, record),
                Err(e) => sink.ledger.fail(i, &e),
            }
        }
        self.touched.extend(installed.touched);
        Ok(())
    }
}

/// Stores the checkpoints of the batch's big files, for their next versions. They only spare
/// hashing: a failure to store them is logged, and costs the next version a full SHA-256.
fn store_checkpoints(db: &mut ClientState, files: &Files) {
    let mut kept = files
        .iter()
        .filter_map(|(_, ready)| ready.checkpoints())
        .peekable();
    if kept.peek().is_none() {
        return;
    }
    let stored = db.batch().and_then(|mut batch| {
        for (sha256, checkpoints) in kept {
            batch.put_checkpoints(sha256, &checkpoints.to_bytes())?;
        }
        batch.commit()
    });
    if let Err(e) = stored {
        tracing::warn!("cannot store the checkpoints of big files: {e}");
    }
}

/// Makes a batch's content, the files recorded as synced in place (`in_place`, under
/// `root`) and the touched directories durable. A big file, or a handful of files and
/// directories, is flushed on its own; many with one flush of their file system (which also
/// waits for unrelated dirty data there, so it is kept for the batches where it saves
/// hundreds of flushes).
fn flush(
    files: &Files,
    root: &Path,
    in_place: &[RelPath],
    dirs: &BTreeSet<PathBuf>,
) -> Result<(), ClientError> {
    let (big, small): (Vec<_>, Vec<_>) = files
        .iter()
        .map(|(_, ready)| ready)
        .partition(|ready| ready.size() >= OWN_FLUSH_SIZE);
    for ready in big {
        ready.sync()?;
    }
    if small.len() + in_place.len() + dirs.len() <= OWN_FLUSH_FILES {
        for ready in small {
            ready.sync()?;
        }
        for rel in in_place {
            zync_fs::fsync_file_beneath(root, rel)?;
        }
        // A directory may have gone since it was touched (E deleted it).
        for dir in dirs.iter().filter(|d| d.is_dir()) {
            zync_fs::fsync_dir(dir)?;
        }
    } else {
        // A temp file made here is on its directory's file system: one look per directory.
        // A file kept in place has its directory among `dirs`.
        let all: BTreeSet<&Path> = small
            .iter()
            .filter_map(|ready| ready.temp_path().parent())
            .chain(dirs.iter().map(PathBuf::as_path))
            .collect();
        zync_fs::sync_filesystems(all)?;
    }
    Ok(())
}
