//! Sync rounds: pull one directory's changes page by page, apply them, make them durable,
//! then advance and acknowledge the last sequence (DESIGN invariant 2).

use std::collections::HashSet;
use std::path::PathBuf;

use tokio_tungstenite::tungstenite::Bytes;
use zync_cli::progress::Progress;
use zync_db::{ClientState, DirState};
use zync_fs::DirName;
use zync_proto::{AckChanges, Change, FileHeader, GetChanges, Op, Reply};

use crate::apply::{Applier, Pending, Ready, Record, Step};
use crate::connection::Connection;
use crate::error::ClientError;
use crate::pipeline::{Finished, Pipeline};

/// Downloaded files are renamed into place in batches of at most this many files or bytes, each
/// batch made durable by one flush of its file system first (invariant 1).
const BATCH_FILES: usize = 1024;
const BATCH_BYTES: u64 = 256 << 20;
/// Files at least this big are flushed one by one.
const OWN_FLUSH_SIZE: u64 = 8 << 20;
/// Up to this many small files are flushed one by one too.
pub(crate) const OWN_FLUSH_FILES: usize = 16;

/// A local directory and the daemon's name for it.
#[derive(Debug, Clone)]
pub struct Mapping {
    /// The daemon's directory name.
    pub name: DirName,
    /// The local directory (canonical).
    pub root: PathBuf,
    /// The client's own files (database, token) that lie inside this directory: never
    /// overwritten by a change from E, never sent upstream.
    pub own: Vec<PathBuf>,
}

/// What one sync of one directory did.
#[derive(Debug, Default)]
pub struct DirReport {
    /// Changes applied.
    pub applied: usize,
    /// Files downloaded.
    pub downloaded: usize,
    /// Files copied from content R already had (renames and copies on E).
    pub copied: usize,
    /// Bytes downloaded.
    pub bytes: u64,
    /// Conflict copies made.
    pub conflicts: Vec<String>,
    /// Paths that could not be applied, with the reason; retried next round.
    pub failures: Vec<(String, String)>,
    /// How many of the failures may clear by themselves soon (a file that changed on E during
    /// its transfer): worth an immediate retry.
    pub transient: usize,
    /// The sequence stored as durably applied.
    pub last_seq: u64,
}

/// Pulls and applies everything the daemon has for `mapping` beyond the stored sequence.
///
/// # Errors
/// Connection and database errors. Failures of single paths are reported in the
/// [`DirReport`] instead, and hold the stored sequence below them.
pub async fn sync_dir(
    conn: &mut Connection,
    state: &mut ClientState,
    mapping: &Mapping,
) -> Result<DirReport, ClientError> {
    let name = mapping.name.as_str();
    let index_id = conn.hello.index_id.clone();
    let mut resynced = false;
    let mut since = match state.dir_state(name)? {
        Some(s) if s.index_id == index_id => s.last_seq,
        Some(_) => {
            tracing::info!(
                dir = name,
                "the daemon's index is new; resyncing, downloading only files that differ"
            );
            0
        }
        None => 0,
    };
    let mut report = DirReport {
        last_seq: since,
        ..DirReport::default()
    };
    let mut blocked = false;
    // Shown once a page is large (an initial sync, a big change on E); spans the later pages.
    let mut progress = Progress::hidden();
    loop {
        let page = match conn
            .call(Op::GetChanges(GetChanges {
                dir: name.to_string(),
                since,
                // Big pages: fewer round trips, one durable commit per page.
                limit: Some(zync_proto::MAX_CHANGES_LIMIT),
            }))
            .await?
        {
            Reply::GetChanges(page) => page,
            other => {
                return Err(ClientError::Protocol(format!(
                    "expected GET_CHANGES, got {other:?}"
                )))
            }
        };
        let Some(last) = page.changes.last().map(|c| c.seq) else {
            if page.last_sequence < since && !resynced {
                // The daemon's index went back (restored from a backup) under the same id:
                // what this client stored cannot be trusted, so compare everything again.
                tracing::warn!(
                    dir = name,
                    stored = since,
                    daemon = page.last_sequence,
                    "the daemon's sequence is behind this client's; resyncing"
                );
                since = 0;
                resynced = true;
                report.last_seq = 0;
                continue;
            }
            break;
        };
        // Note what this page is about to write first: after a crash between a rename and the
        // page's commit, the next run recognises those files as zync's own writes.
        let mut batch = state.batch()?;
        for change in page.changes.iter().filter(|c| !c.deleted) {
            if let Some(sha) = &change.sha256 {
                batch.set_inflight(name, &change.path, sha)?;
            }
        }
        batch.commit()?;
        let (files, bytes) = page
            .changes
            .iter()
            .filter(|c| is_file(c))
            .fold((0, 0), |(n, b), c| (n + 1, b + c.size));
        if progress.is_active() {
            progress.add_total(files, bytes);
        } else {
            progress = Progress::start_if_large("synced", files, bytes);
        }
        let outcome = apply_page(conn, state, mapping, &page.changes, &progress).await?;
        let mut records = Vec::with_capacity(page.changes.len());
        let mut failed = Vec::new();
        let mut durable = report.last_seq;
        for (change, result) in page.changes.iter().zip(outcome.results) {
            match result {
                Some(Ok(record)) => {
                    records.push((change.path.clone(), record));
                    report.applied += 1;
                    if !blocked {
                        durable = change.seq;
                    }
                }
                Some(Err(e)) => {
                    tracing::warn!(dir = name, path = %change.path, "{e}");
                    report.failures.push((change.path.clone(), e.to_string()));
                    failed.push((change.path.clone(), e.to_string()));
                    if e.is_transient() {
                        report.transient += 1;
                    }
                    blocked = true;
                }
                // Not reached before the connection was lost.
                None => blocked = true,
            }
        }
        report.downloaded += outcome.downloaded;
        report.copied += outcome.copied;
        report.bytes += outcome.bytes;
        report.conflicts.extend(outcome.conflicts);
        let lost = outcome.lost;
        commit(state, name, &index_id, records, &failed, durable)?;
        report.last_seq = durable;
        if let Some(e) = lost {
            return Err(e);
        }
        // Not waited for: its reply is skipped like any stray one, and a tunnel with latency
        // does not pay a round trip per page for it.
        conn.tell(Op::AckChanges(AckChanges {
            dir: name.to_string(),
            sequence: durable,
        }))
        .await?;
        since = last;
        if !page.more {
            break;
        }
    }
    progress.finish();
    if report.failures.is_empty() {
        // Everything up to the daemon's sequence is recorded: no write of an unfinished run
        // is left to recognise.
        let mut batch = state.batch()?;
        batch.clear_inflight(name)?;
        batch.commit()?;
    }
    Ok(report)
}

/// A change that writes a file: what progress counts.
fn is_file(change: &Change) -> bool {
    !change.deleted && change.kind == zync_proto::Kind::File
}

/// What applying one page did: a result per change (`None`: not reached), and the totals.
struct PageOutcome {
    results: Vec<Option<Result<Record, ClientError>>>,
    downloaded: usize,
    copied: usize,
    bytes: u64,
    conflicts: Vec<String>,
    /// The connection broke; what was done before is still durable and recorded.
    lost: Option<ClientError>,
}

/// Applies one page: every change is planned in order (directories, links, deletions and local
/// copies done at once), downloads are pipelined, and finished files are renamed into place in
/// durable batches. Everything written is flushed before this returns.
///
/// # Errors
/// Only database and flush errors; path and connection problems are in the outcome.
async fn apply_page(
    conn: &mut Connection,
    state: &ClientState,
    mapping: &Mapping,
    changes: &[Change],
    progress: &Progress,
) -> Result<PageOutcome, ClientError> {
    let mut results: Vec<Option<Result<Record, ClientError>>> =
        changes.iter().map(|_| None).collect();
    let mut applier = Applier::new(mapping, state);
    applier.want(
        changes
            .iter()
            .filter(|c| !c.deleted && c.kind == zync_proto::Kind::File)
            .filter_map(|c| c.sha256.clone())
            .collect::<HashSet<_>>(),
    );
    let mut pipeline = Pipeline::new(mapping.name.as_str(), progress.clone());
    let mut batch = Batch::new(progress.clone());
    let mut writer = Writer::default();
    let mut lost = None;
    let snapshot = state.read_snapshot()?;
    for (i, change) in changes.iter().enumerate() {
        match applier.begin(change) {
            Ok(Step::Done(record)) => {
                if is_file(change) {
                    // R has this file already.
                    progress.files(1);
                    progress.bytes(change.size);
                }
                results[i] = Some(Ok(record));
            }
            Ok(Step::Fetch(pending)) => pipeline.push(i, pending),
            Ok(Step::Ready(ready)) => {
                // Copied from content R had: nothing to download.
                progress.bytes(ready.size());
                batch.add(i, ready);
            }
            Err(e) => results[i] = Some(Err(e)),
        }
    }
    drop(snapshot);
    // Requests go out only once the page is planned: from then on every reply is read as it
    // arrives, so what a tunnel drop loses is only what was on the wire.
    if let Err(e) = pipeline.fill(conn).await {
        lost = Some(e);
    }
    while lost.is_none() && !pipeline.is_empty() {
        match pipeline.next(conn).await {
            Ok(Some(Finished::Done(i, pending, header))) => match pending.seal(&header) {
                Ok(ready) => batch.add(i, ready),
                Err(e) => results[i] = Some(Err(e)),
            },
            Ok(Some(Finished::Whole(i, pending, header, data))) => {
                let sealed = writer.push(i, pending, header, data).await;
                batch.add_sealed(sealed, &mut results);
            }
            Ok(Some(Finished::Delta(i, pending, header, spool))) => {
                match applier.rebuild(pending, &header, spool) {
                    Ok(ready) => batch.add(i, ready),
                    // The delta did not rebuild E's file: download it whole.
                    Err((Some(pending), e)) => {
                        tracing::debug!(path = %changes[i].path, "delta failed ({e}); downloading whole");
                        pipeline.push(i, pending);
                    }
                    Err((None, e)) => results[i] = Some(Err(e)),
                }
            }
            Ok(Some(Finished::Failed(i, e))) => results[i] = Some(Err(e)),
            Ok(None) => {}
            Err(e) => lost = Some(e),
        }
        if batch.is_full() {
            batch.rotate(&mut applier, &mut results).await?;
        }
        if lost.is_none() {
            if let Err(e) = pipeline.fill(conn).await {
                lost = Some(e);
            }
        }
    }
    if lost.is_some() {
        // The tunnel dropped: keep what arrived, the next attempt resumes from there.
        for pending in pipeline.abandon().await {
            pending.keep_partial();
        }
    }
    // Small files that arrived whole are complete even when the connection was lost.
    batch.add_sealed(writer.drain().await, &mut results);
    batch.drain(&mut applier, &mut results).await?;
    applier.finish()?;
    Ok(PageOutcome {
        results,
        downloaded: applier.downloaded,
        copied: applier.copied,
        bytes: applier.bytes,
        conflicts: std::mem::take(&mut applier.conflicts),
        lost,
    })
}

/// Small files that arrived whole, written and sealed in groups on a blocking thread while the
/// next ones arrive: making, writing, verifying and closing a temp file costs more than
/// receiving it.
#[derive(Default)]
struct Writer {
    group: Vec<(usize, Box<Pending>, FileHeader, Bytes)>,
    bytes: usize,
    /// Groups being written.
    writing: std::collections::VecDeque<Group>,
}

/// What a group of whole files became, by change index.
type Sealed = Vec<(usize, Result<Box<Ready>, ClientError>)>;

/// A group being written: the change index and path of each of its files, and its thread.
type Group = (Vec<(usize, String)>, tokio::task::JoinHandle<Sealed>);

/// A group is handed to its thread at this many files or bytes.
const WRITER_GROUP_FILES: usize = 64;
const WRITER_GROUP_BYTES: usize = 4 << 20;
/// Groups written at the same time, on threads of their own.
const WRITER_THREADS: usize = 2;

impl Writer {
    /// Adds a file; when the group is full, starts writing it and returns what the oldest
    /// group became once as many as [`WRITER_THREADS`] are being written (waiting for it).
    async fn push(
        &mut self,
        index: usize,
        pending: Box<Pending>,
        header: FileHeader,
        data: Bytes,
    ) -> Sealed {
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
    async fn drain(&mut self) -> Sealed {
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

    async fn wait_oldest(&mut self) -> Sealed {
        let Some((indices, writing)) = self.writing.pop_front() else {
            return Vec::new();
        };
        match writing.await {
            Ok(sealed) => sealed,
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

/// Writes and seals a group of whole files, checking each directory's parents once.
fn write_group(group: Vec<(usize, Box<Pending>, FileHeader, Bytes)>) -> Sealed {
    let mut checked = zync_fs::CheckedDirs::default();
    group
        .into_iter()
        .map(|(i, pending, header, data)| (i, pending.write_whole(&header, &data, &mut checked)))
        .collect()
}

/// A batch of finished files, flushed as a whole before any of them is renamed.
type Files = Vec<(usize, Box<Ready>)>;

/// Finished files waiting for their rename. A full batch is flushed on a blocking thread while
/// the next one downloads, and renamed into place once that flush is done (invariant 1: no
/// rename before the content is on disk): downloads wait for the disk only when a second batch
/// fills before the first one's flush ended.
struct Batch {
    files: Files,
    bytes: u64,
    flushing: Option<tokio::task::JoinHandle<(Files, Result<(), ClientError>)>>,
    progress: Progress,
}

impl Batch {
    fn new(progress: Progress) -> Batch {
        Batch {
            files: Vec::new(),
            bytes: 0,
            flushing: None,
            progress,
        }
    }

    fn add(&mut self, index: usize, ready: Box<Ready>) {
        self.bytes += ready.size();
        self.files.push((index, ready));
    }

    /// Adds what a group of whole files became: sealed files join the batch, failures are
    /// results already.
    fn add_sealed(&mut self, sealed: Sealed, results: &mut [Option<Result<Record, ClientError>>]) {
        for (i, sealed) in sealed {
            match sealed {
                Ok(ready) => self.add(i, ready),
                Err(e) => results[i] = Some(Err(e)),
            }
        }
    }

    fn is_full(&self) -> bool {
        self.files.len() >= BATCH_FILES || self.bytes >= BATCH_BYTES
    }

    /// Installs the batch whose flush is under way (waiting for it), then starts flushing the
    /// files gathered since.
    async fn rotate(
        &mut self,
        applier: &mut Applier<'_>,
        results: &mut [Option<Result<Record, ClientError>>],
    ) -> Result<(), ClientError> {
        self.install_flushed(applier, results).await?;
        let files = std::mem::take(&mut self.files);
        self.bytes = 0;
        if !files.is_empty() {
            self.flushing = Some(tokio::task::spawn_blocking(move || {
                let flushed = flush(&files);
                (files, flushed)
            }));
        }
        Ok(())
    }

    /// Flushes and installs everything: the batch in flight, then the files gathered since.
    async fn drain(
        &mut self,
        applier: &mut Applier<'_>,
        results: &mut [Option<Result<Record, ClientError>>],
    ) -> Result<(), ClientError> {
        self.rotate(applier, results).await?;
        self.install_flushed(applier, results).await
    }

    async fn install_flushed(
        &mut self,
        applier: &mut Applier<'_>,
        results: &mut [Option<Result<Record, ClientError>>],
    ) -> Result<(), ClientError> {
        let Some(flushing) = self.flushing.take() else {
            return Ok(());
        };
        let (files, flushed) = flushing.await.map_err(|e| ClientError::Io {
            what: "flush",
            path: applier.root().display().to_string(),
            source: std::io::Error::other(e.to_string()),
        })?;
        flushed?;
        applier.new_batch();
        for (i, ready) in files {
            let result = applier.install(ready);
            if result.is_ok() {
                self.progress.files(1);
            }
            results[i] = Some(result);
        }
        Ok(())
    }
}

/// Makes a batch's content durable. A big file, or a handful of files, is flushed on its own;
/// many small files with one flush of their file system (which also waits for unrelated dirty
/// data there, so it is kept for the batches where it saves hundreds of flushes).
fn flush(files: &Files) -> Result<(), ClientError> {
    let (big, small): (Vec<_>, Vec<_>) = files
        .iter()
        .map(|(_, ready)| ready)
        .partition(|ready| ready.size() >= OWN_FLUSH_SIZE);
    for ready in big {
        ready.sync()?;
    }
    if small.len() <= OWN_FLUSH_FILES {
        for ready in small {
            ready.sync()?;
        }
    } else {
        // A temp file made here is on its directory's file system: one look per directory.
        let dirs: std::collections::BTreeSet<&std::path::Path> = small
            .iter()
            .filter_map(|ready| ready.temp_path().parent())
            .collect();
        zync_fs::sync_filesystems(dirs)?;
    }
    Ok(())
}

/// Records a page's results and the new durable sequence in one transaction. Runs only after
/// the page's files and directories were fsynced.
fn commit(
    state: &mut ClientState,
    name: &str,
    index_id: &str,
    records: Vec<(String, Record)>,
    failed: &[(String, String)],
    durable: u64,
) -> Result<(), ClientError> {
    let mut batch = state.batch()?;
    for (change_path, record) in records {
        match record {
            Record::Set(path, synced) => batch.set_synced(name, &path, &synced)?,
            Record::Remove(path) => batch.remove_synced_tree(name, &path)?,
            Record::Nothing => {}
        }
        batch.clear_failing(name, &change_path)?;
        batch.clear_inflight_path(name, &change_path)?;
    }
    for (path, error) in failed {
        batch.set_failing(name, path, error)?;
    }
    batch.set_dir_state(
        name,
        &DirState {
            index_id: index_id.to_string(),
            last_seq: durable,
        },
    )?;
    batch.commit()?;
    Ok(())
}
