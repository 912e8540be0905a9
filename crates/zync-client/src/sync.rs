//! Sync rounds: pull one directory's changes page by page and drive each change down the
//! download path, plan -> fetch -> land (`download`), on one stream of downloads. The next page
//! is asked for while the current one downloads, finished files are renamed and recorded batch
//! by batch, and the stored sequence advances only past changes that are durably applied
//! (invariant 2 (docs/ARCHITECTURE.md)).

use std::collections::hash_map::DefaultHasher;
use std::collections::HashSet;
use std::hash::{Hash, Hasher};

use std::sync::Arc;
use zync_cli::progress::Progress;
use zync_db::ClientState;
use zync_fs::{Checkpoints, FsError, WindowKey};
use zync_proto::{AckChanges, Change, ChangesReply, GetChanges, Op, Reply};

use crate::connection::Connection;
use crate::download::fetch::{Finished, Pipeline, Window};
use crate::download::land::act::Outcome;
use crate::download::land::batch::{Batch, Sink, Writer};
use crate::download::land::file::{Pending, Prior};
use crate::download::land::place::{Place, Tally};
use crate::download::look::{self, Known, Look};
use crate::download::plan;
use crate::error::ClientError;
use crate::ledger::{Committed, Ledger};
use crate::mapping::Mapping;

/// A page is planned until this many downloads wait to be requested; the rest of it waits
/// (as its changes, a tenth of the memory of their plans) until fewer than [`PLAN_RESUME`] do.
/// With the window's requests in flight, a sync holds at most about 6,000 planned downloads,
/// however big the tree and its pages (docs/ARCHITECTURE.md, "Memory").
const PLAN_AHEAD: usize = 2048;
/// Planning resumes below this many waiting downloads: while the next ones are planned, the
/// queue still refills an eighth of the largest window (4,096 requests).
const PLAN_RESUME: usize = 512;
/// The batch goes to its thread once this many changes finished unrecorded, whatever it holds:
/// failures, directories and deletions bring it no file, and until its commit each keeps its
/// path, record or message in the ledger.
const UNRECORDED_MAX: usize = 1024;
/// The sync settles (finishes and records everything planned) once [`Planned`] holds this many
/// hashes (about 5 MiB), and forgets them: otherwise they would grow with every page.
const PLANNED_MAX: usize = 1 << 18;

/// How long [`Run::pump`] goes on.
#[derive(Clone, Copy)]
enum Until {
    /// Until nothing is in flight or queued.
    Drained,
    /// Until there is room to plan more ([`PLAN_RESUME`]).
    Room,
    /// Until the page asked for with this id has arrived, and there is room to plan it.
    Page(u64),
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
    /// How many paths could not be applied; retried next round.
    pub failed: usize,
    /// The first of them (up to 200), with the reason; every one is in the client database
    /// (`--status` lists them).
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
/// [`DirReport`] instead, and hold the stored sequence below them. What was applied before a
/// connection was lost is recorded before the error returns.
pub async fn sync_dir(
    conn: &mut Connection,
    state: &mut ClientState,
    mapping: &Mapping,
) -> Result<DirReport, ClientError> {
    let name = mapping.name.as_str();
    let index_id = conn.hello.index_id.clone();
    let since = match state.dir_state(name)? {
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
    let place = Place::new(&mapping.root, name);
    // Commits are written beside the renames, on their thread: a connection of their own, kept
    // from one sync to the next (a loop client syncs once per save).
    let batch = Batch::new(place.sibling(), state.take_another()?);
    let key = window_key(state);
    let mut run = Run {
        name,
        key,
        bad_checkpoints: HashSet::new(),
        mapping,
        place,
        known: Known::bounded(),
        wanted: HashSet::new(),
        umask: zync_fs::umask(),
        pipeline: Pipeline::new(
            name,
            Window::for_daemon(conn.hello.pipelining),
            Progress::hidden(),
        ),
        writer: Writer::default(),
        batch,
        ledger: Ledger::new(name, &index_id, since),
        planned: Planned::default(),
        progress: Progress::hidden(),
        committed: Committed::default(),
        lost: None,
        acked: since,
    };
    if let Err(e) = run.pull(conn, state, since).await {
        // Batches already on their threads finish (their flush comes before their renames),
        // but none may still rename once this returns: a retry would race them.
        if let Err(also) = run.wait_for_batches().await {
            tracing::debug!(dir = name, "a batch failed too: {also}");
        }
        return Err(e);
    }
    run.finish(conn, state).await
}

/// One sync of one directory: the changes planned so far, the downloads in flight, the files
/// on their way into place, and what became of each change.
struct Run<'a> {
    name: &'a str,
    mapping: &'a Mapping,
    /// Where this sync writes, and what it changed there.
    place: Place,
    /// What this sync knows about the root beyond the database.
    known: Known,
    /// Contents this page's file changes need: a deleted file with one of them is set aside,
    /// so a rename on E costs a local copy instead of a download.
    wanted: HashSet<String>,
    /// This client's checkpoint key; without one, no checkpoints are kept.
    key: Option<Arc<WindowKey>>,
    /// Contents whose checkpoints a rebuild used and failed its check with (each once: no more
    /// than R has checkpoints for).
    bad_checkpoints: HashSet<String>,
    /// The umask new entries get.
    umask: u32,
    pipeline: Pipeline<'a>,
    writer: Writer,
    batch: Batch,
    ledger: Ledger,
    planned: Planned,
    /// Shown once a page is large (an initial sync, a big change on E); spans the later pages.
    progress: Progress,
    committed: Committed,
    /// The connection broke: what was done before is still made durable and recorded.
    lost: Option<ClientError>,
    /// The last sequence acknowledged to the daemon.
    acked: u64,
}

impl<'a> Run<'a> {
    /// Asks for pages and plans them while the downloads of the earlier ones go on. Returns
    /// when every page is planned and every download finished, or the connection was lost.
    ///
    /// # Errors
    /// Database and flush errors.
    async fn pull(
        &mut self,
        conn: &mut Connection,
        state: &ClientState,
        mut since: u64,
    ) -> Result<(), ClientError> {
        let mut resynced = false;
        let mut asked = self.ask(conn, since).await;
        while let Some(id) = asked.take() {
            // Downloads go on until the page is in (and the queue has room for it).
            self.pump(conn, Until::Page(id)).await?;
            if self.lost.is_some() {
                break;
            }
            let page = match conn.answer(id).await {
                Ok(Reply::GetChanges(page)) => page,
                Ok(other) => {
                    return Err(ClientError::Protocol(format!(
                        "expected GET_CHANGES, got {other:?}"
                    )))
                }
                // Refused (an unknown directory): nothing to resume.
                Err(e @ ClientError::Server { .. }) => return Err(e),
                Err(e) => {
                    self.lost = Some(e);
                    break;
                }
            };
            let Some(last) = page.changes.last().map(|c| c.seq) else {
                if page.last_sequence < since && !resynced {
                    // The daemon's index went back (restored from a backup) under the same id:
                    // what this client stored cannot be trusted, so compare everything again.
                    tracing::warn!(
                        dir = self.name,
                        stored = since,
                        daemon = page.last_sequence,
                        "the daemon's sequence is behind this client's; resyncing"
                    );
                    self.settle(conn).await?;
                    if self.lost.is_some() {
                        break;
                    }
                    self.ledger.restart_at(0);
                    since = 0;
                    resynced = true;
                    asked = self.ask(conn, since).await;
                }
                continue;
            };
            // Asked before this page is planned: its answer comes ahead of this page's files.
            if page.more {
                asked = self.ask(conn, last).await;
            }
            if self.planned.overlaps(&page.changes) {
                // A path changed again on E since an earlier page: that change is recorded
                // before this one is planned against it.
                tracing::debug!(
                    dir = self.name,
                    "a page names a path again; finishing the earlier changes first"
                );
                self.settle(conn).await?;
                if self.lost.is_some() {
                    break;
                }
            }
            self.plan(conn, state, &page).await?;
            if self.lost.is_some() {
                break;
            }
            since = last;
        }
        self.pump(conn, Until::Drained).await
    }

    /// Sends GET_CHANGES from `since`; `None` when the connection is lost.
    async fn ask(&mut self, conn: &mut Connection, since: u64) -> Option<u64> {
        let get = Op::GetChanges(GetChanges {
            dir: self.name.to_string(),
            since,
            // Big pages: fewer round trips.
            limit: Some(zync_proto::MAX_CHANGES_LIMIT),
        });
        match conn.ask(get).await {
            Ok(id) => Some(id),
            Err(e) => {
                self.lost = Some(e);
                None
            }
        }
    }

    /// Plans one page: every change in order, directories, links, deletions and local copies
    /// done at once, downloads queued on the pipeline. Once [`PLAN_AHEAD`] downloads are
    /// queued, the downloads go on until there is room again, then the page's next changes
    /// are planned; when the connection is lost meanwhile, the rest of the page is left
    /// unplanned (the ledger never had those changes, so nothing is recorded past them).
    ///
    /// # Errors
    /// Database errors; problems with single paths are recorded as their failures.
    async fn plan(
        &mut self,
        conn: &mut Connection,
        state: &ClientState,
        page: &ChangesReply,
    ) -> Result<(), ClientError> {
        let (files, bytes) = page
            .changes
            .iter()
            .filter(|c| is_file(c))
            .fold((0, 0), |(n, b), c| (n + 1, b + c.size));
        if self.progress.is_active() {
            self.progress.add_total(files, bytes);
        } else {
            self.progress = Progress::start_if_large("synced", files, bytes);
            self.pipeline.set_progress(self.progress.clone());
        }
        self.wanted = page
            .changes
            .iter()
            .filter(|c| is_file(c))
            .filter_map(|c| c.sha256.clone())
            .collect();
        let planned = self.plan_changes(conn, state, &page.changes).await;
        // Files set aside for this page's copies go however its planning ended.
        self.place.clear_stash(&mut self.known);
        planned
    }

    /// [`Run::plan`]'s changes, in order, until the connection is lost.
    ///
    /// # Errors
    /// As [`Run::plan`].
    async fn plan_changes(
        &mut self,
        conn: &mut Connection,
        state: &ClientState,
        changes: &[Change],
    ) -> Result<(), ClientError> {
        // One read transaction for the lookups, taken again after downloads went on.
        let mut snapshot = state.read_snapshot()?;
        for change in changes {
            if self.pipeline.queued() >= PLAN_AHEAD {
                drop(snapshot);
                self.pump(conn, Until::Room).await?;
                snapshot = state.read_snapshot()?;
            }
            if self.planned.len() >= PLANNED_MAX && self.lost.is_none() {
                // Everything planned so far is recorded: no later change can meet it unrecorded.
                drop(snapshot);
                self.settle(conn).await?;
                snapshot = state.read_snapshot()?;
            }
            if self.lost.is_some() {
                break;
            }
            let i = self.ledger.push(change.seq, &change.path);
            self.planned.add(change);
            match self.start(state, change) {
                Ok(Outcome::Done(record)) => {
                    if is_file(change) {
                        // R has this file already.
                        self.progress.files(1);
                        self.progress.bytes(change.size);
                    }
                    self.ledger.done(i, record);
                }
                Ok(Outcome::Fetch(mut pending)) => match pending.check_room(0) {
                    Ok(()) => {
                        self.note_inflight(change);
                        if let Some(key) = self.key.as_ref().filter(|_| pending.checkpointed()) {
                            let prior = pending
                                .wants_delta()
                                .then(|| prior_checkpoints(state, self.name, &pending))
                                .flatten();
                            pending.keep_checkpoints(Arc::clone(key), prior);
                        }
                        pending.prepare_delta();
                        self.pipeline.push(i, pending);
                    }
                    Err(e) => self.ledger.fail(i, &e),
                },
                Ok(Outcome::Ready(ready)) => {
                    // Copied from content R had: nothing to download.
                    self.note_inflight(change);
                    self.progress.bytes(ready.size());
                    self.batch.add(i, ready);
                }
                Err(e) => self.ledger.fail(i, &e),
            }
            if self.is_due() {
                // A renamed tree is all local copies, a deleted one all removals: they are
                // made durable and recorded batch by batch, not all at the end.
                drop(snapshot);
                self.rotate(conn).await?;
                snapshot = state.read_snapshot()?;
            }
        }
        drop(snapshot);
        Ok(())
    }

    /// One change down the path as far as it goes at once: what R has is gathered, the change
    /// planned against it, and the plan's immediate steps carried out; a file that needs E's
    /// bytes comes back to be fetched.
    ///
    /// # Errors
    /// A problem with this one path (or the client database).
    fn start(&mut self, state: &ClientState, change: &Change) -> Result<Outcome, ClientError> {
        let m = self.mapping;
        let Some(rel) = look::parse(change, &m.root, self.name, &m.own) else {
            return Ok(Outcome::Done(crate::ledger::Record::Nothing));
        };
        let look = Look {
            root: &m.root,
            dir: self.name,
            state,
            umask: self.umask,
        };
        let here = look.here(&mut self.known, change, rel)?;
        let plan = plan::plan(change, &here, &self.wanted);
        self.place.carry_out(&mut self.known, here, plan)
    }

    fn note_inflight(&mut self, change: &Change) {
        if let Some(sha) = &change.sha256 {
            self.ledger.note_inflight(&change.path, sha);
        }
    }

    /// Reads downloads and finishes them until `until` holds, or nothing is in flight.
    /// Requests go out as the window allows; full batches are flushed, committed and installed
    /// on the way.
    ///
    /// # Errors
    /// Database and flush errors; a lost connection is kept in `lost`.
    async fn pump(&mut self, conn: &mut Connection, until: Until) -> Result<(), ClientError> {
        loop {
            if self.lost.is_some() || self.pipeline.is_empty() {
                return Ok(());
            }
            let room = self.pipeline.queued() < PLAN_RESUME;
            let done = match until {
                Until::Drained => false,
                Until::Room => room,
                Until::Page(id) => room && conn.has_answer(id),
            };
            if done {
                return Ok(());
            }
            if let Err(e) = self.pipeline.fill(conn).await {
                self.lost = Some(e);
                return Ok(());
            }
            match self.pipeline.next(conn).await {
                Ok(Some(finished)) => self.finished(finished).await,
                Ok(None) => {}
                Err(e) => {
                    self.lost = Some(e);
                    return Ok(());
                }
            }
            if self.is_due() {
                self.rotate(conn).await?;
            }
        }
    }

    /// True when the batch should go to its thread: it is full, or many changes wait for a
    /// commit to record them ([`UNRECORDED_MAX`]).
    fn is_due(&self) -> bool {
        self.batch.is_full() || self.ledger.unrecorded() >= UNRECORDED_MAX
    }

    /// Hands the full batch to its thread, and tells the daemon how far the sync got.
    async fn rotate(&mut self, conn: &mut Connection) -> Result<(), ClientError> {
        let (batch, mut sink) = self.batch_and_sink();
        batch.rotate(&mut sink).await?;
        self.ack(conn).await;
        Ok(())
    }

    /// Takes a finished download on towards its batch.
    async fn finished(&mut self, finished: Finished) {
        match finished {
            Finished::Done(i, pending, header) => match pending.seal(&header) {
                Ok(ready) => self.batch.add(i, ready),
                Err(e) => self.ledger.fail(i, &e),
            },
            Finished::Whole(i, pending, header, data) => {
                let written = self.writer.push(i, pending, header, data).await;
                self.batch.add_written(written, &mut self.ledger);
            }
            Finished::Delta(i, pending, header, spool) => {
                match pending.rebuild(&header, spool) {
                    Ok(ready) => {
                        // A delta stands for the whole file in the byte count.
                        self.progress.bytes(ready.size());
                        self.batch.add(i, ready);
                    }
                    // The delta did not rebuild E's file: download it whole.
                    Err((Some(pending), e)) => {
                        tracing::debug!(
                            path = pending.path(),
                            "delta failed ({e}); downloading whole"
                        );
                        if let (Some(sha256), ClientError::Fs(FsError::HashMismatch { .. })) =
                            (pending.used_prior(), &e)
                        {
                            // Forgotten at the end of the sync, so no other file tries them.
                            self.bad_checkpoints.insert(sha256.to_string());
                        }
                        self.pipeline.push(i, pending);
                    }
                    Err((None, e)) => self.ledger.fail(i, &e),
                }
            }
            Finished::Failed(i, e) => self.ledger.fail(i, &e),
        }
    }

    /// The batch, and what finishing its files needs.
    fn batch_and_sink(&mut self) -> (&mut Batch, Sink<'_>) {
        let sink = Sink {
            place: &mut self.place,
            ledger: &mut self.ledger,
            progress: &self.progress,
            committed: &mut self.committed,
        };
        (&mut self.batch, sink)
    }

    /// Finishes and records everything planned so far.
    ///
    /// # Errors
    /// Database and flush errors.
    async fn settle(&mut self, conn: &mut Connection) -> Result<(), ClientError> {
        self.pump(conn, Until::Drained).await?;
        self.wrap_up().await?;
        self.planned = Planned::default();
        self.known.forget_fresh();
        self.ack(conn).await;
        Ok(())
    }

    /// Waits for the batches on their threads, starting no other.
    async fn wait_for_batches(&mut self) -> Result<(), ClientError> {
        let (batch, mut sink) = self.batch_and_sink();
        batch.wait(&mut sink).await
    }

    /// Writes the files still held, then flushes, installs and records every batch.
    async fn wrap_up(&mut self) -> Result<(), ClientError> {
        let written = self.writer.drain().await;
        self.batch.add_written(written, &mut self.ledger);
        let (batch, mut sink) = self.batch_and_sink();
        batch.drain(&mut sink).await
    }

    /// Tells the daemon how far this client got, without waiting: its reply is skipped like
    /// any stray one, and a tunnel with latency does not pay a round trip for it.
    async fn ack(&mut self, conn: &mut Connection) {
        let durable = self.ledger.durable();
        if self.lost.is_some() || durable == self.acked {
            return;
        }
        let ack = Op::AckChanges(AckChanges {
            dir: self.name.to_string(),
            sequence: durable,
        });
        match conn.tell(ack).await {
            Ok(()) => self.acked = durable,
            Err(e) => self.lost = Some(e),
        }
    }

    /// Ends the sync: keeps what arrived of cut-off downloads, makes everything finished
    /// durable and records it, and reports.
    ///
    /// # Errors
    /// Database and flush errors, then the lost connection.
    async fn finish(
        mut self,
        conn: &mut Connection,
        state: &mut ClientState,
    ) -> Result<DirReport, ClientError> {
        if self.lost.is_some() {
            // The tunnel dropped: keep what arrived, the next attempt resumes from there. Files
            // that came whole with others are written as any that came whole.
            for finished in self.pipeline.take_ready() {
                self.finished(finished).await;
            }
            for pending in self.pipeline.abandon().await {
                pending.keep_partial();
            }
        }
        // Small files that arrived whole are complete even when the connection was lost.
        self.wrap_up().await?;
        if !self.bad_checkpoints.is_empty() {
            let mut batch = state.batch()?;
            for sha256 in &self.bad_checkpoints {
                batch.forget_checkpoints(sha256)?;
            }
            batch.commit()?;
        }
        self.ack(conn).await;
        self.progress.finish();
        // A path that failed and then applied in a later page of this run is not among them.
        let failures = self.ledger.take_failures();
        for failure in failures.shown() {
            tracing::warn!(dir = self.name, path = %failure.path, "{}", failure.message);
        }
        let unshown = failures.count().saturating_sub(failures.shown().len());
        if unshown > 0 {
            tracing::warn!(
                dir = self.name,
                "{unshown} more paths failed; `zync-client --status` lists them all"
            );
        }
        if let Some(e) = self.lost {
            return Err(e);
        }
        if failures.is_empty() && self.ledger.is_settled() {
            // Everything up to the daemon's sequence is recorded: no write of an unfinished run
            // is left to recognise.
            // A directory with nothing to apply (empty on E) has now been synced all the
            // same: record where R is, or `--status` would call it never synced.
            let settled = self.ledger.dir_state();
            let stored = state.dir_state(self.name)?;
            let mut batch = state.batch()?;
            batch.clear_inflight(self.name)?;
            if stored.as_ref() != Some(&settled) {
                batch.set_dir_state(self.name, &settled)?;
            }
            batch.commit()?;
        }
        let mut conflicts = self.place.take_conflicts();
        let mut tally = Tally::default();
        if let Some((mut renamed, db)) = self.batch.place() {
            conflicts.extend(renamed.take_conflicts());
            tally = renamed.tally();
            state.keep_another(db);
        }
        Ok(DirReport {
            applied: self.committed.applied,
            downloaded: tally.downloaded,
            copied: tally.copied,
            bytes: tally.bytes,
            conflicts,
            failed: failures.count(),
            transient: failures.transient(),
            failures: failures
                .into_shown()
                .into_iter()
                .map(|f| (f.path, f.message))
                .collect(),
            last_seq: self.ledger.durable(),
        })
    }
}

/// A change that writes a file: what progress counts.
fn is_file(change: &Change) -> bool {
    !change.deleted && change.kind == zync_proto::Kind::File
}

/// The paths planned since the sync last settled, as hashes: a page that names one of them
/// again (E changed it once more), a directory above one (E replaced the directory), or a path
/// below one that was not planned as a directory (E replaced a file or link by a directory, or
/// deleted it and made it again) waits until the earlier change is recorded, because planning
/// reads what R holds and last synced. A directory planned earlier does not make its new
/// children wait: it exists once planned, and pages often split a directory from its files. A
/// hash collision only costs such a wait.
#[derive(Default)]
struct Planned {
    paths: HashSet<u64>,
    ancestors: HashSet<u64>,
    /// Planned paths that are not live directories: files, links, deletions.
    leaves: HashSet<u64>,
}

impl Planned {
    fn add(&mut self, change: &Change) {
        let path = change.path.as_str();
        let h = hash(path);
        self.paths.insert(h);
        if change.deleted || change.kind != zync_proto::Kind::Dir {
            self.leaves.insert(h);
        }
        for (i, _) in path.match_indices('/') {
            self.ancestors.insert(hash(&path[..i]));
        }
    }

    /// How many hashes it holds.
    fn len(&self) -> usize {
        self.paths.len() + self.ancestors.len() + self.leaves.len()
    }

    fn overlaps(&self, changes: &[Change]) -> bool {
        changes.iter().any(|c| {
            let h = hash(&c.path);
            self.paths.contains(&h)
                || self.ancestors.contains(&h)
                || c.path
                    .match_indices('/')
                    .any(|(i, _)| self.leaves.contains(&hash(&c.path[..i])))
        })
    }
}

fn hash(path: &str) -> u64 {
    let mut hasher = DefaultHasher::new();
    path.hash(&mut hasher);
    hasher.finish()
}

/// This client's checkpoint key (`zync_fs::checkpoint`), made the first time; without one (no
/// random bytes, a database error) big files are written without checkpoints, and hashed whole.
fn window_key(state: &mut ClientState) -> Option<Arc<WindowKey>> {
    let made = || match WindowKey::random() {
        Ok(key) => Some(key.as_bytes().to_vec()),
        Err(e) => {
            tracing::debug!("no checkpoint key: {e}");
            None
        }
    };
    match state.checkpoint_key(made) {
        Ok(bytes) => WindowKey::from_bytes(&bytes?).map(Arc::new),
        Err(e) => {
            tracing::debug!("cannot read the checkpoint key: {e}");
            None
        }
    }
}

/// The checkpoints of what the client last wrote at `pending`'s path (`zync_fs::checkpoint`),
/// if it stored any: they only spare hashing, so a database error is logged and costs a full
/// SHA-256.
fn prior_checkpoints(state: &ClientState, dir: &str, pending: &Pending) -> Option<Prior> {
    let looked =
        state
            .synced(dir, pending.path())
            .and_then(|synced| match synced.and_then(|s| s.sha256) {
                Some(sha256) => Ok(state.checkpoints(&sha256)?.map(|bytes| (sha256, bytes))),
                None => Ok(None),
            });
    match looked {
        Ok(found) => {
            found.and_then(|(sha256, bytes)| Some((sha256, Checkpoints::from_bytes(&bytes)?)))
        }
        Err(e) => {
            tracing::debug!(
                path = pending.path(),
                "cannot read the file's checkpoints: {e}"
            );
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn change(seq: u64, path: &str) -> Change {
        Change {
            seq,
            path: path.to_string(),
            kind: zync_proto::Kind::File,
            deleted: false,
            size: 1,
            mtime_ns: 0,
            mode: 0o644,
            sha256: None,
            target: None,
        }
    }

    #[test]
    fn a_page_overlaps_when_it_names_a_planned_path_or_a_directory_above_one() {
        let mut planned = Planned::default();
        planned.add(&change(1, "src/a/main.rs"));
        planned.add(&change(2, "README"));
        assert!(planned.overlaps(&[change(9, "README")]), "the same path");
        assert!(
            planned.overlaps(&[change(9, "src/a")]),
            "a directory above a planned file"
        );
        assert!(
            planned.overlaps(&[change(9, "src")]),
            "the top directory above it"
        );
        assert!(
            !planned.overlaps(&[change(9, "src/a/lib.rs"), change(10, "src/b/x")]),
            "a sibling in a planned file's directory does not wait"
        );
        assert!(!planned.overlaps(&[change(9, "src/a/main.rs.bak")]));
    }

    #[test]
    fn a_path_below_a_planned_file_or_deletion_waits_and_below_a_planned_directory_does_not() {
        let mut planned = Planned::default();
        // A file that becomes a directory on E before its first version was installed.
        planned.add(&change(1, "a"));
        assert!(
            planned.overlaps(&[change(9, "a/x")]),
            "below a planned file"
        );
        assert!(planned.overlaps(&[change(9, "a/b/c")]), "deeper below it");
        let mut dir = change(2, "src/m004");
        dir.kind = zync_proto::Kind::Dir;
        planned.add(&dir);
        assert!(
            !planned.overlaps(&[change(9, "src/m004/f.rs")]),
            "a directory's files may come in the next page"
        );
        let mut gone = dir.clone();
        gone.path = "old".into();
        gone.deleted = true;
        planned.add(&gone);
        assert!(
            planned.overlaps(&[change(9, "old/new.txt")]),
            "below a deleted directory"
        );
    }
}
