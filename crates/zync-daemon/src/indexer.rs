//! The indexer: keeps the index equal to the disk. A startup scan finds what changed while the
//! daemon was down (invariant 6 (docs/ARCHITECTURE.md)), then the watcher's debounced batches are reconciled
//! path by path; an overflow or watcher error triggers a rescan of the root.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::Sender;
use std::sync::Arc;
use std::time::{Duration, Instant};
use zync_proto::Kind;

use anyhow::Context;
use rayon::prelude::*;
use tokio::sync::watch;
use zync_db::{EntryMeta, IgnoredPath, Index};
use zync_fs::{FsError, IgnoreRules, Ignored, RelPath, RootId, Stat, WatchEvent};

use crate::own::OwnPaths;
use crate::root::Root;

mod cookies;
mod entry;
mod presence;
mod workers;

use entry::{describe, unchanged, Clock, RACY};
use presence::{judge, Look, Verdict, Why};
use workers::Workers;

/// Quiet time that ends a burst of watch events.
const DEBOUNCE_QUIET: Duration = Duration::from_millis(15);
/// The longest a burst is held back. Short, so that R starts on a burst while E's writer is
/// still writing (a checkout, a build): on two cores, 150 ms left one of them idle for the
/// burst's first 150 ms and R finished a 5,000-file burst about 10% later. A batch is a
/// commit, so this is also what a long burst costs the database: one flush per 50 ms.
const DEBOUNCE_MAX: Duration = Duration::from_millis(50);
/// A file whose mtime was less than this old when its read began may have been read while a
/// long `write()` was still running in it: a write stamps the mtime when it begins and
/// inotify reports it when it returns, so the read may hold part of the new bytes while the
/// file's stat, after the read and after the write, matches what was read. The end of a
/// write reported in a later batch has it read again ([`FreshReads`]). A write that ran
/// longer than this before the read began is not covered.
const FRESH_WRITE: Duration = Duration::from_secs(10);
/// How long such a read is remembered: the end of its write may be taken in only after the
/// indexer's other work (a big file hashed, a rescan); if that takes longer, it is missed.
const FRESH_KEEP: Duration = Duration::from_secs(30);
/// How often the thread checks its stop flag when idle.
const IDLE_TICK: Duration = Duration::from_millis(200);
/// Changes per transaction during a scan; clients see progress between them.
const SCAN_BATCH: usize = 1000;
/// Without a working watcher, every root is rescanned this often.
const POLL_RESCAN: Duration = Duration::from_secs(10);
/// How often every root is looked at (one `stat` and one directory read each): a deleted,
/// replaced or unmounted root is noticed within this even when no event says so, and a root
/// put back is picked up again.
const ROOT_CHECK: Duration = Duration::from_secs(2);
/// Deletions seen by the watcher wait until the events of their root go quiet (a wipe is one
/// long burst that ends with the root empty or gone), but no longer than this.
const DEFER_MAX: Duration = Duration::from_secs(5);
/// A barrier's cookie not seen coming out of the watcher within this (its event lost: the
/// watcher restarted, or a root replaced) is given up on: its root is rescanned instead.
const COOKIE_MAX: Duration = Duration::from_secs(5);

/// What the indexer publishes to connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Status {
    /// Highest sequence number recorded.
    pub last_seq: u64,
    /// True while a scan is running.
    pub scanning: bool,
    /// The last barrier ticket answered ([`zync_db::Index::request_settle`]): the index
    /// holds every change made before it was taken.
    pub settled: u64,
}

/// A served directory with its ignore rules.
pub struct IndexedRoot {
    /// Name and path.
    pub root: Root,
    /// Ignore rules, shared with the server (GET_FILE refuses ignored paths).
    pub rules: Arc<IgnoreRules>,
}

/// Owns the index's write connection; runs on its own thread (hashing and SQLite block).
pub struct Indexer {
    index: Index,
    roots: Vec<IndexedRoot>,
    own: OwnPaths,
    status: watch::Sender<Status>,
    /// Files hashed while still fresh, to hash again once their mtime tick has passed.
    recheck: Vec<(usize, RelPath, Instant)>,
    /// Walking and hashing threads.
    workers: Workers,
    /// Changes per transaction during a scan ([`SCAN_BATCH`]; smaller in tests).
    batch: usize,
    /// How many times a file was opened to be hashed since start: a restart over an unchanged
    /// tree must leave it at zero (a restart must not rehash), which the tests and the startup log line show.
    hashed: AtomicU64,
    /// Per root, the directory the watcher follows (always the pinned one); None when not
    /// watched.
    watched: Vec<Option<RootId>>,
    /// Per root, why it is unavailable (the message stored in the index), or None.
    unavailable: Vec<Option<String>>,
    /// Paths the watcher saw deleted, waiting for their root to go quiet: (root, path, since).
    deferred: Vec<(usize, RelPath, Instant)>,
    /// The watcher, and the sender it reports on (to watch again a replaced root).
    watcher: Option<zync_fs::Watcher>,
    watch_tx: Option<Sender<WatchEvent>>,
    /// Periodic rescans are on: the watcher cannot see everything.
    polling: bool,
    /// Barrier tickets (docs/ARCHITECTURE.md, "Barriers"): the last one cookies were planted
    /// for, those whose cookies did not all come out yet (oldest first), the last one whose
    /// cookies all did, and the last one answered.
    marked: u64,
    cookies: cookies::Pending,
    reached: u64,
    settled: u64,
    /// Roots a cookie could not be planted in (read-only): warned about once.
    cookie_failed: HashSet<usize>,
    /// Files read while a write may still have been running in them ([`FRESH_WRITE`]).
    fresh: FreshReads,
}

/// The files whose read began within [`FRESH_WRITE`] of their mtime, by root and path, with
/// the batch that read them and when. Forgotten [`FRESH_KEEP`] after the read (looked at once
/// a second).
#[derive(Default)]
struct FreshReads {
    reads: HashMap<usize, HashMap<RelPath, (u64, Instant)>>,
    /// Counts batches: one more for each root of each watch batch reconciled, and for each
    /// rescan. A read and the end of a write reported after it never share one.
    batch: u64,
    pruned: Option<Instant>,
}

impl FreshReads {
    /// Notes that the read of file `rel` of root `i`, described as `meta`, began at
    /// `began_ns` (nanoseconds since the Unix epoch); forgets a read of it that no longer
    /// counts.
    fn note(&mut self, i: usize, rel: &RelPath, meta: &EntryMeta, began_ns: i64) {
        let age = began_ns.saturating_sub(meta.mtime_ns);
        let reads = self.reads.entry(i).or_default();
        if meta.kind == Kind::File && age < FRESH_WRITE.as_nanos() as i64 {
            reads.insert(rel.clone(), (self.batch, Instant::now()));
        } else {
            reads.remove(rel);
        }
    }

    /// True when file `rel` of root `i` was read fresh by an earlier batch than this one.
    fn read_before(&self, i: usize, rel: &RelPath) -> bool {
        self.reads
            .get(&i)
            .and_then(|reads| reads.get(rel))
            .is_some_and(|&(batch, _)| batch < self.batch)
    }

    /// Starts the next batch; forgets reads older than [`FRESH_KEEP`], once a second.
    fn next_batch(&mut self) {
        self.batch += 1;
        if self
            .pruned
            .is_some_and(|at| at.elapsed() < Duration::from_secs(1))
        {
            return;
        }
        self.pruned = Some(Instant::now());
        for reads in self.reads.values_mut() {
            reads.retain(|_, (_, at)| at.elapsed() < FRESH_KEEP);
            reads.shrink_to_fit();
        }
    }
}

impl Indexer {
    /// An indexer over an open index. Its walking and hashing threads (one per available
    /// core) start with the first scan.
    pub fn new(
        index: Index,
        roots: Vec<IndexedRoot>,
        own: OwnPaths,
        status: watch::Sender<Status>,
    ) -> Indexer {
        let n = roots.len();
        Indexer {
            index,
            roots,
            own,
            status,
            recheck: Vec::new(),
            workers: Workers::new(
                std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get),
            ),
            batch: SCAN_BATCH,
            hashed: AtomicU64::new(0),
            watched: vec![None; n],
            unavailable: vec![None; n],
            deferred: Vec::new(),
            watcher: None,
            watch_tx: None,
            polling: false,
            marked: 0,
            cookies: cookies::Pending::default(),
            reached: 0,
            settled: 0,
            cookie_failed: HashSet::new(),
            fresh: FreshReads::default(),
        }
    }

    /// Scans every root, then follows the watcher until `stop` is set. Where the watcher cannot
    /// see (an unreadable directory, the inotify watch limit) it adds periodic rescans instead
    /// of going blind (invariant 6).
    ///
    /// # Errors
    /// When the index cannot be written.
    pub fn run(mut self, stop: Arc<AtomicBool>) -> anyhow::Result<()> {
        let (tx, rx) = std::sync::mpsc::channel();
        self.watch_tx = Some(tx);
        for i in 0..self.roots.len() {
            let name = self.roots[i].root.name.as_str();
            self.unavailable[i] = self.index.unavailable(name)?;
            // Left by a daemon killed while a barrier waited; a root that is not there or
            // cannot be written has none to remove.
            if let Ok(n @ 1..) = zync_fs::remove_stale_cookies(&self.roots[i].root.path) {
                tracing::info!(dir = %name, "removed {n} barrier cookie(s) of a daemon that is gone");
            }
        }
        // The watcher starts before the scan, so nothing that changes during the scan is missed.
        self.watch();
        self.publish(true)?;
        let started = Instant::now();
        for i in 0..self.roots.len() {
            self.scan_root(i, None)?;
        }
        self.publish(false)?;
        tracing::info!(
            last_seq = self.status.borrow().last_seq,
            hashed = self.hashed.load(Ordering::Relaxed),
            ms = started.elapsed().as_millis() as u64,
            "startup scan complete"
        );
        let mut last_poll = Instant::now();
        let mut last_check = Instant::now();
        self.settled = self.index.settled()?;
        (self.marked, self.reached) = (self.settled, self.settled);
        while !stop.load(Ordering::Relaxed) {
            // New barrier tickets: what the watcher reported before them must be taken in
            // before they are answered (docs/ARCHITECTURE.md, "Barriers").
            let asked = self.index.settle_requested()?;
            let barrier = asked > self.marked;
            if self.polling && (barrier || last_poll.elapsed() >= POLL_RESCAN) {
                self.rescan((0..self.roots.len()).collect())?;
                last_poll = Instant::now();
            }
            if barrier {
                self.mark(asked)?;
            }
            self.cookies_overdue()?;
            if last_check.elapsed() >= ROOT_CHECK {
                for i in 0..self.roots.len() {
                    self.admit(i)?;
                }
                self.publish(false)?;
                last_check = Instant::now();
            }
            let Some(w) = &self.watcher else {
                if !barrier {
                    std::thread::sleep(IDLE_TICK);
                }
                self.recheck_due()?;
                self.answer()?;
                continue;
            };
            let spots = w.blind_spots();
            if !spots.is_empty() && !self.polling {
                warn_blind(&spots.join("; "));
                self.polling = true;
            }
            let Some(mut batch) =
                zync_fs::next_batch_timeout(&rx, IDLE_TICK, DEBOUNCE_QUIET, DEBOUNCE_MAX)
            else {
                tracing::warn!("the file watcher stopped; rescanning periodically instead");
                self.watcher = None;
                self.polling = true;
                continue;
            };
            let rescan: Vec<usize> = if batch.rescan_all {
                (0..self.roots.len()).collect()
            } else {
                batch.rescan.iter().copied().collect()
            };
            // A root removed or unmounted took its watch with it: the next look watches again
            // whatever pinned directory stands there (a remounted disk, or one made again with
            // the old inode number where the file system keeps no birth time).
            for &i in &batch.unwatched {
                self.watched[i] = None;
            }
            let busy: BTreeSet<usize> = batch.paths.keys().copied().collect();
            let cookies = std::mem::take(&mut batch.cookies);
            self.rescan(rescan.clone())?;
            for (i, paths) in batch.paths {
                if rescan.contains(&i) {
                    continue;
                }
                let written = batch.written.remove(&i).unwrap_or_default();
                self.reconcile_written(i, paths.into_iter().collect(), &written)?;
            }
            self.record_deferred(|i| !busy.contains(&i))?;
            self.recheck_due()?;
            self.publish(false)?;
            for (i, ticket) in cookies {
                self.cookies.seen(i, ticket);
            }
            self.advance();
            self.answer()?;
        }
        Ok(())
    }

    /// Plants a cookie for the tickets up to `asked` in every root the watcher follows
    /// (docs/ARCHITECTURE.md, "Barriers"): when each has come out of the watcher, so has every
    /// event the kernel queued before the ticket, however far the watcher's thread lags. A root
    /// that cannot take one (read-only) is rescanned now instead; without a watcher (the
    /// rescan just done looked at everything) the tickets are reached at once.
    fn mark(&mut self, asked: u64) -> anyhow::Result<()> {
        self.marked = asked;
        let mut planted = Vec::new();
        if let Some(w) = &self.watcher {
            let mut refused = Vec::new();
            for i in 0..self.roots.len() {
                if self.watched[i].is_none() || self.unavailable[i].is_some() {
                    continue;
                }
                match w.plant_cookie(i, asked) {
                    Ok(()) => planted.push(i),
                    Err(e) => {
                        if self.cookie_failed.insert(i) {
                            let root = &self.roots[i].root;
                            tracing::warn!(
                                dir = %root.name,
                                "cannot write a barrier cookie in {} ({e}); each barrier \
                                 rescans this directory instead",
                                root.path.display()
                            );
                        }
                        refused.push(i);
                    }
                }
            }
            self.rescan(refused)?;
        }
        self.cookies.push(asked, planted);
        self.advance();
        Ok(())
    }

    /// Rescans the roots whose cookie is overdue ([`COOKIE_MAX`]): its event was lost.
    fn cookies_overdue(&mut self) -> anyhow::Result<()> {
        let late = self.cookies.overdue(COOKIE_MAX);
        if !late.is_empty() {
            tracing::info!("a barrier cookie did not come back; rescanning instead");
        }
        self.rescan(late)
    }

    /// Takes out the tickets whose cookies have all come out (or whose roots were rescanned
    /// since), oldest first, removing their cookie files.
    fn advance(&mut self) {
        for t in self.cookies.take_reached() {
            if let Some(w) = &self.watcher {
                for i in t.planted {
                    if let Err(e) = w.remove_cookie(i, t.ticket) {
                        tracing::warn!(
                            dir = %self.roots[i].root.name,
                            "cannot remove barrier cookie: {e}"
                        );
                    }
                }
            }
            self.reached = self.reached.max(t.ticket);
        }
    }

    /// Answers the tickets whose cookies came out, once no deletion waits for its root to go
    /// quiet (a waiter must see those too).
    fn answer(&mut self) -> anyhow::Result<()> {
        if self.reached <= self.settled || !self.deferred.is_empty() {
            return Ok(());
        }
        self.index.mark_settled(self.reached)?;
        self.settled = self.reached;
        self.publish(false)
    }

    /// (Re)starts the watcher over every root whose path leads to its pinned directory now,
    /// and notes which directory it follows for each: another directory at a root's path is
    /// never watched. Where it cannot watch, periodic rescans look instead (invariant 6). The
    /// new watcher starts before the old one is dropped, so no event falls between them.
    fn watch(&mut self) {
        let Some(tx) = self.watch_tx.clone() else {
            return;
        };
        let paths: Vec<PathBuf> = self.roots.iter().map(|r| r.root.path.clone()).collect();
        let mut present = Vec::new();
        for (i, path) in paths.iter().enumerate() {
            let pinned = self.roots[i].root.id;
            self.watched[i] = Look::at(path).id().filter(|id| *id == pinned);
            if self.watched[i].is_some() {
                present.push(i);
            }
        }
        match zync_fs::Watcher::new_for(&paths, &present, tx) {
            Ok(w) => {
                // Part of a tree unwatched (an unreadable directory, the watch limit reached
                // for a new one): the watcher goes on for the rest, and periodic rescans look
                // at everything.
                let spots = w.blind_spots();
                if !spots.is_empty() {
                    warn_blind(&spots.join("; "));
                    self.polling = true;
                }
                self.watcher = Some(w);
            }
            Err(e) => {
                warn_blind(&e.to_string());
                self.watcher = None;
                self.polling = true;
            }
        }
        // The watcher follows a path: a root swapped for a symlink between the look and the
        // watch may be watched elsewhere (nothing is read there: every read goes through the
        // pinned directory). Looked at again, such a root is watched anew at its next look.
        for i in present {
            if Look::at(&paths[i]).id() != self.watched[i] {
                self.watched[i] = None;
            }
        }
    }

    /// Looks at root `i` before path-level work on it: returns true when that work may go on.
    /// A root gone, emptied at once, or whose path leads to another directory than the pinned
    /// one, is marked unavailable and nothing is recorded for it; a root back after being
    /// unavailable, or not watched, is watched (again) and scanned whole against the index, as
    /// at a restart.
    fn admit(&mut self, i: usize) -> anyhow::Result<bool> {
        match self.verdict(i)? {
            Verdict::Unavailable(why) => {
                self.mark_unavailable(i, why)?;
                Ok(false)
            }
            Verdict::Rewatch => {
                let root = &self.roots[i].root;
                tracing::info!(
                    dir = %root.name,
                    path = %root.path.display(),
                    "served directory {} is back; watching it again and scanning it against \
                     the index",
                    root.name
                );
                self.resume(i)?;
                Ok(false)
            }
            Verdict::Fine
                if self.unavailable[i].is_some()
                    || (self.watch_tx.is_some() && self.watched[i].is_none()) =>
            {
                self.resume(i)?;
                Ok(false)
            }
            Verdict::Fine => Ok(true),
        }
    }

    /// Watches root `i` again if its pinned directory is there and not the one watched, and
    /// rescans it (which marks it unavailable if another directory is there).
    fn resume(&mut self, i: usize) -> anyhow::Result<()> {
        self.deferred.retain(|(r, _, _)| *r != i);
        let now = Look::at(&self.roots[i].root.path).id();
        if self.watch_tx.is_some() && now == Some(self.roots[i].root.id) && now != self.watched[i] {
            self.watch();
        }
        self.rescan(vec![i])
    }

    /// What to do about root `i`, from what is at its path now.
    fn verdict(&self, i: usize) -> anyhow::Result<Verdict> {
        let look = Look::at(&self.roots[i].root.path);
        let indexed = match look {
            Look::Empty(_) => self.index.live_count(self.roots[i].root.name.as_str())? > 0,
            Look::Gone | Look::Full(_) => false,
        };
        Ok(judge(look, self.roots[i].root.id, self.watched[i], indexed))
    }

    /// Records that root `i` is unavailable (once: logged and stored when it becomes so) and
    /// drops the deletions waiting for it.
    fn mark_unavailable(&mut self, i: usize, why: Why) -> anyhow::Result<()> {
        self.deferred.retain(|(r, _, _)| *r != i);
        if why == Why::Missing {
            // Its watch died with it (or follows it elsewhere): whatever directory comes back
            // at that path is watched anew, even one that gets the old inode number.
            self.watched[i] = None;
        }
        let root = &self.roots[i].root;
        let message = presence::message(why, root.name.as_str(), &root.path);
        if self.unavailable[i].as_deref() == Some(message.as_str()) {
            return Ok(());
        }
        tracing::error!(dir = %root.name, "{message}");
        self.index
            .set_unavailable(root.name.as_str(), Some(&message))?;
        self.unavailable[i] = Some(message);
        Ok(())
    }

    /// Records that root `i` is served again after a whole scan.
    fn mark_available(&mut self, i: usize) -> anyhow::Result<()> {
        if self.unavailable[i].take().is_none() {
            return Ok(());
        }
        let root = &self.roots[i].root;
        tracing::info!(
            dir = %root.name,
            path = %root.path.display(),
            "served directory {} is back; syncing resumes",
            root.name
        );
        self.index.set_unavailable(root.name.as_str(), None)?;
        Ok(())
    }

    /// Records the deletions the watcher saw in the roots for which `quiet` holds (or that
    /// waited [`DEFER_MAX`]), once their root has been looked at: a root gone or emptied at
    /// once records none of them.
    fn record_deferred(&mut self, quiet: impl Fn(usize) -> bool) -> anyhow::Result<()> {
        if self.deferred.is_empty() {
            return Ok(());
        }
        let now = Instant::now();
        let (ready, wait): (Vec<_>, Vec<_>) = std::mem::take(&mut self.deferred)
            .into_iter()
            .partition(|(i, _, at)| quiet(*i) || now.duration_since(*at) >= DEFER_MAX);
        self.deferred = wait;
        let roots: BTreeSet<usize> = ready.iter().map(|(i, _, _)| *i).collect();
        for i in roots {
            if !self.admit(i)? {
                continue;
            }
            let name = self.roots[i].root.name.as_str().to_string();
            let root_path = self.roots[i].root.path.clone();
            for (_, rel, _) in ready.iter().filter(|(r, _, _)| *r == i) {
                // Back since (a save by rename): its own event records it. Looked at in the
                // pinned directory only: through another directory swapped in at the root's
                // path, every file of the tree would look deleted.
                match zync_fs::lstat_beneath(&root_path, rel) {
                    Ok(Stat::Missing) => self.forget(&name, rel)?,
                    Err(FsError::RootReplaced { .. }) => {
                        // Scanned whole when it is back, which finds these deletions.
                        self.mark_unavailable(i, Why::Replaced)?;
                        break;
                    }
                    Ok(_) | Err(_) => {}
                }
            }
        }
        Ok(())
    }

    fn rescan(&mut self, roots: Vec<usize>) -> anyhow::Result<()> {
        if roots.is_empty() {
            return Ok(());
        }
        self.publish(true)?;
        self.fresh.next_batch();
        for i in roots {
            tracing::info!(dir = %self.roots[i].root.name, "rescanning");
            self.scan_root(i, None)?;
        }
        self.publish(false)
    }

    /// Has file `rel` of root `i` hashed again by the next [`Indexer::recheck_due`].
    fn recheck_now(&mut self, i: usize, rel: RelPath) {
        self.recheck.push((i, rel, Instant::now()));
    }

    /// Hashes again the files that were fresh when hashed; records them if the content moved
    /// although size, mtime and inode did not.
    fn recheck_due(&mut self) -> anyhow::Result<()> {
        let now = Instant::now();
        let (mut due, later): (Vec<_>, Vec<_>) = std::mem::take(&mut self.recheck)
            .into_iter()
            .partition(|(_, _, at)| *at <= now);
        self.recheck = later;
        // A file can be due twice (fresh when hashed, and the end of a write since): once.
        due.sort_unstable_by(|a, b| (a.0, &a.1).cmp(&(b.0, &b.1)));
        due.dedup_by(|a, b| a.0 == b.0 && a.1 == b.1);
        let mut clocks: HashMap<usize, Clock> = HashMap::new();
        for (i, rel, _) in due {
            let name = self.roots[i].root.name.as_str().to_string();
            let root_path = self.roots[i].root.path.clone();
            let Some(old) = self.index.get(&name, rel.as_str())?.filter(|e| !e.deleted) else {
                continue;
            };
            let meta = match zync_fs::lstat_beneath(&root_path, &rel) {
                Ok(Stat::Entry(meta)) if meta.kind == Kind::File => meta,
                Err(FsError::RootReplaced { .. }) => {
                    // Scanned whole when it is back.
                    self.mark_unavailable(i, Why::Replaced)?;
                    continue;
                }
                Ok(_) | Err(_) => continue,
            };
            let clock = clocks.entry(i).or_insert_with(|| Clock::of(&root_path));
            let began = entry::now_ns();
            let Some((new, racy)) = describe(clock, &rel, &meta, &self.hashed) else {
                continue;
            };
            self.fresh.note(i, &rel, &new, began);
            // An mtime further ahead of this clock than the window stays "fresh" until that
            // time comes (a file unpacked with a date in the future, a server clock ahead): it
            // was hashed again once, a window after the first time, and a write since would
            // have moved its mtime to now.
            let ahead = new.mtime_ns.saturating_sub(entry::now_ns()) > RACY.as_nanos() as i64;
            if racy && !ahead {
                self.recheck.push((i, rel.clone(), Instant::now() + RACY));
            }
            if new.sha256 != old.meta.sha256 {
                tracing::debug!(path = %rel, "content changed within one mtime tick; recorded");
                let mut writer = self.index.writer()?;
                writer.upsert(&name, rel.as_str(), &new)?;
                writer.commit()?;
            }
        }
        Ok(())
    }

    fn publish(&self, scanning: bool) -> anyhow::Result<()> {
        publish(&self.index, &self.status, scanning, self.settled)
    }

    /// Brings the index in line with the disk for a whole root, or the subtree `under`.
    /// Unchanged files are recognised by kind, size, mtime, inode and mode without hashing.
    ///
    /// The walk and the loading of the index's rows run side by side; changed and new files
    /// are then hashed in parallel, `batch` at a time, while the previous batch is written in
    /// walk order in one transaction, so sequence numbers (parents before children) and the
    /// resulting index do not depend on the number of threads.
    pub fn scan_root(&mut self, i: usize, under: Option<&RelPath>) -> anyhow::Result<usize> {
        if under.is_none() {
            // This scan sees everything written in the root before it starts: the barrier
            // tickets taken so far need no cookie of it. The watcher first watches every
            // directory it reported (a rescan after an overflow, a changed ignore file, the
            // root's own event drop the batch's events): a directory this scan lists is then
            // watched, or made after its event was reported, which brings it scanned again.
            self.catch_up();
            self.cookies.rescanned(i);
            self.advance();
        }
        let name = self.roots[i].root.name.as_str().to_string();
        let root_path = self.roots[i].root.path.clone();
        // A deleted root, an unmounted disk or a root emptied at once must not become "delete
        // everything on R".
        if let Verdict::Unavailable(why) = self.verdict(i)? {
            self.mark_unavailable(i, why)?;
            return Ok(0);
        }
        // What is walked is the pinned directory, through the handle checked to be it: another
        // user who swaps the root for a symlink after the look above makes the open refuse,
        // never the walk list their directory as the tree (or the tree's files as deleted).
        let base = match zync_fs::Dir::open_root(&root_path) {
            Ok(base) => base,
            Err(FsError::RootReplaced { .. }) => {
                self.mark_unavailable(i, Why::Replaced)?;
                return Ok(0);
            }
            Err(e) => {
                tracing::warn!(dir = %name, "{e}; nothing is recorded for it until it can be read");
                return Ok(0);
            }
        };
        // An unmounted disk leaves an empty mount point that looks exactly like "everything
        // was deleted"; the root's device id tells them apart.
        let dev_key = format!("root_dev:{name}");
        let dev = base.identity().map(|id| id.dev.to_string()).ok();
        let stored = self.index.setting(&dev_key)?;
        let moved = matches!((&stored, &dev), (Some(s), Some(d)) if s != d);
        let own = self.own.below(&root_path);

        let started = Instant::now();
        // The connection is not Sync: the loading side takes it by unique reference.
        let (rules, index, dir) = (&self.roots[i].rules, &mut self.index, name.as_str());
        let pool = self.workers.pool()?;
        let (result, rows) = pool.install(|| {
            rayon::join(
                || zync_fs::scan_dir(&base, rules, under),
                move || index.scan_rows(dir, under.map(RelPath::as_str)),
            )
        });
        let mut rows = rows?;
        let walked = started.elapsed();

        // Pair each entry with its row by merging both in path byte order: for 100,000 paths
        // a hash map of the rows took a tenth of a restart's scan. The rows come
        // sorted already (sorting them again then takes one pass); the walk's order puts a
        // directory's subtree before a sibling such as "dir.txt", so entries are sorted apart.
        rows.sort_unstable_by(|a, b| a.path.cmp(&b.path));
        let entries = &result.entries;
        let mut order: Vec<usize> = (0..entries.len()).collect();
        pool.install(|| order.par_sort_unstable_by(|&a, &b| entries[a].path.cmp(&entries[b].path)));
        let mut row_of: Vec<Option<usize>> = vec![None; entries.len()];
        // Rows with no entry: gone from the disk, or below a directory that could not be read.
        let mut gone: Vec<usize> = Vec::new();
        let mut r = 0;
        for &e in &order {
            let path = entries[e].path.as_str();
            while r < rows.len() && rows[r].path.as_str() < path {
                gone.push(r);
                r += 1;
            }
            if rows.get(r).is_some_and(|row| row.path == path) {
                row_of[e] = Some(r);
                r += 1;
            }
        }
        gone.extend(r..rows.len());

        // What changed, in walk order, with the kind the index had for it.
        let mut todo: Vec<(&zync_fs::ScanEntry, Option<Kind>)> = Vec::new();
        let mut again: Vec<RelPath> = Vec::new();
        for (entry, row) in entries.iter().zip(&row_of) {
            if own.contains(&entry.path) {
                // Never indexed; a row left from before it was the daemon's goes.
                gone.extend(row);
                continue;
            }
            let old = row.map(|r| &rows[r]);
            if old.is_some_and(|o| unchanged(o.into(), &entry.meta)) {
                // A scan has no event kinds to go by: one read fresh by an earlier batch is
                // read again, in case a write was running in it then.
                if self.fresh.read_before(i, &entry.path) {
                    again.push(entry.path.clone());
                }
                continue;
            }
            todo.push((entry, old.map(|o| o.kind)));
        }
        // Row order is path order: the same deletions always get the same sequence numbers,
        // and a parent's tombstone_tree covers its children first.
        gone.sort_unstable();

        let hashed_before = self.hashed.load(Ordering::Relaxed);
        let mut changed = 0usize;
        let batch = self.batch.max(1);
        let settled = self.settled;
        for rel in again {
            self.recheck_now(i, rel);
        }
        let began = entry::now_ns();
        let (index, status, recheck, hashed, fresh) = (
            &mut self.index,
            &self.status,
            &mut self.recheck,
            &self.hashed,
            &mut self.fresh,
        );
        let clock = &Clock::of(&root_path);
        // The pool hashes batch k+1 while this thread writes batch k; the channel holds one
        // batch, so at most three are in memory. Batches arrive in walk order.
        self.workers
            .pool()?
            .in_place_scope(|scope| -> anyhow::Result<()> {
                let (tx, rx) = std::sync::mpsc::sync_channel::<Vec<Option<(EntryMeta, bool)>>>(1);
                let chunks = todo.chunks(batch);
                scope.spawn(move |_| {
                    for chunk in chunks {
                        let described = chunk
                            .par_iter()
                            .map(|(entry, _)| describe(clock, &entry.path, &entry.meta, hashed))
                            .collect();
                        if tx.send(described).is_err() {
                            return; // the writer failed and stopped listening
                        }
                    }
                });
                for chunk in todo.chunks(batch) {
                    let described = rx
                        .recv()
                        .context("the hashing threads stopped before the scan was done")?;
                    let mut writer = index.writer()?;
                    for ((entry, old), described) in chunk.iter().zip(described) {
                        let Some((meta, racy)) = described else {
                            continue;
                        };
                        fresh.note(i, &entry.path, &meta, began);
                        if racy {
                            recheck.push((i, entry.path.clone(), Instant::now() + RACY));
                        }
                        if *old == Some(Kind::Dir) && meta.kind != Kind::Dir {
                            writer.tombstone_tree(&name, entry.path.as_str())?;
                        }
                        writer.upsert(&name, entry.path.as_str(), &meta)?;
                        changed += 1;
                    }
                    writer.commit()?;
                    // Clients see progress between batches.
                    publish(index, status, true, settled)?;
                }
                Ok(())
            })?;
        for error in &result.errors {
            tracing::warn!(dir = %name, "{error}; deletions below it are not recorded until it can be read");
        }
        let mut writer = self.index.writer()?;
        // What the walk skipped, with its rules, for the status commands. A walk that could
        // not read the root keeps what was known.
        if !result.incomplete {
            let ignored: Vec<IgnoredPath> = result.ignored.iter().map(ignored_row).collect();
            writer.replace_ignored(&name, under.map(RelPath::as_str), &ignored)?;
        }
        if moved && !gone.is_empty() {
            tracing::error!(
                dir = %name,
                path = %root_path.display(),
                "this directory is now on another filesystem (device {} instead of {}): is a disk \
                 unmounted? {} indexed paths are missing and are NOT recorded as deleted; if the \
                 change is intended, delete the daemon's database to index afresh",
                dev.as_deref().unwrap_or("?"),
                stored.as_deref().unwrap_or("?"),
                gone.len()
            );
        } else {
            for path in gone.iter().map(|&r| rows[r].path.as_str()) {
                // Paths below an unreadable directory were not seen, which is not deletion.
                let seen_absent = RelPath::parse(path).is_ok_and(|rel| result.covers(&rel));
                if seen_absent {
                    changed += writer.tombstone_tree(&name, path)?;
                }
            }
        }
        writer.commit()?;
        if under.is_none() && !moved {
            if let Some(dev) = dev {
                self.index.set_setting(&dev_key, &dev)?;
            }
        }
        if under.is_none() {
            self.mark_available(i)?;
        }
        tracing::debug!(
            dir = %name,
            under = under.map_or("", RelPath::as_str),
            entries = result.entries.len(),
            walk_ms = walked.as_millis() as u64,
            hashed = self.hashed.load(Ordering::Relaxed) - hashed_before,
            changed,
            total_ms = started.elapsed().as_millis() as u64,
            "scanned"
        );
        Ok(changed)
    }

    /// Reconciles the paths of one watch batch, shallowest first so parents precede children.
    #[cfg(test)]
    fn reconcile_paths(&mut self, i: usize, paths: Vec<PathBuf>) -> anyhow::Result<()> {
        self.reconcile_written(i, paths, &HashSet::new())
    }

    /// Reconciles the paths of one watch batch of root `i` (absolute, as the watcher reports
    /// them), shallowest first so parents precede children, where a write ended in the files
    /// `written`.
    fn reconcile_written(
        &mut self,
        i: usize,
        paths: Vec<PathBuf>,
        written: &HashSet<PathBuf>,
    ) -> anyhow::Result<()> {
        self.fresh.next_batch();
        let root_path = self.roots[i].root.path.clone();
        // An event on the root itself: its attributes changed, or it was moved (swapped for a
        // symlink, say) or removed. It is looked at and scanned whole; its watch follows the
        // directory wherever it is moved, and is started again only where it died with it
        // (`Batch::unwatched`) or follows no pinned directory.
        if paths.contains(&root_path) {
            return self.resume(i);
        }
        if !self.admit(i)? {
            return Ok(());
        }
        let mut rels: Vec<RelPath> = Vec::new();
        for path in paths {
            if self.own.contains(&path) {
                continue;
            }
            let Ok(rel) = path.strip_prefix(&root_path) else {
                continue;
            };
            if rel.as_os_str().is_empty() {
                continue;
            }
            match RelPath::from_path(rel) {
                Ok(rel) => rels.push(rel),
                Err(e) => tracing::warn!(path = %path.display(), "skipped: {e}"),
            }
        }
        if rels.iter().any(|r| r.file_name() == zync_fs::IGNORE_FILE) {
            self.roots[i].rules.reload();
            self.scan_root(i, None)?;
            return Ok(());
        }
        // Parents first. Each key is made once: a key made per comparison (a copy of the path
        // and a count of its slashes) was thousands of allocations per batch of a burst.
        let mut rels: Vec<(usize, RelPath)> = rels.into_iter().map(|r| (r.depth(), r)).collect();
        rels.sort_unstable();
        rels.dedup();
        let mut batch = WatchBatch {
            written: written
                .iter()
                .filter_map(|p| p.strip_prefix(&root_path).ok())
                .filter_map(|rel| RelPath::from_path(rel).ok())
                .collect(),
            ..WatchBatch::default()
        };
        let mut result = Ok(());
        for (_, rel) in rels {
            result = self.reconcile(i, &rel, &mut batch);
            if result.is_err() || batch.replaced {
                break;
            }
        }
        // What was read before a failure is still recorded.
        self.record(i, &mut batch)?;
        result
    }

    /// Returns once the watcher watches every directory whose creation it reported
    /// ([`zync_fs::Watcher::catch_up`]); nothing without a watcher.
    fn catch_up(&mut self) {
        if let Some(w) = &mut self.watcher {
            if let Err(e) = w.catch_up() {
                tracing::warn!("the file watcher did not answer: {e}");
            }
        }
    }

    /// Scans the directory `rel` whole (new to the index, or its own event came): files may
    /// have been created in it before the watcher watched it. The watcher catches up first
    /// (once per batch), so that what the scan misses has events coming.
    fn scan_new(&mut self, i: usize, rel: &RelPath, batch: &mut WatchBatch) -> anyhow::Result<()> {
        self.record(i, batch)?;
        if !batch.caught_up {
            self.catch_up();
            batch.caught_up = true;
        }
        self.scan_root(i, Some(rel))?;
        batch.scanned.push(rel.clone());
        Ok(())
    }

    /// Writes the entries a watch batch has read so far, in one transaction: each commit is a
    /// flush of the database, and a burst of new files must not cost one per file while E's
    /// writer is still writing.
    fn record(&mut self, i: usize, batch: &mut WatchBatch) -> anyhow::Result<()> {
        batch.known_dirs.clear();
        if batch.entries.is_empty() {
            return Ok(());
        }
        let name = self.roots[i].root.name.as_str().to_string();
        let mut writer = self.index.writer()?;
        for (rel, new, was_dir) in batch.entries.drain(..) {
            if was_dir {
                writer.tombstone_tree(&name, rel.as_str())?;
            }
            // An ignored `build/` directory replaced by a file named `build` is no longer
            // ignored.
            writer.unignore(&name, rel.as_str())?;
            writer.upsert(&name, rel.as_str(), &new)?;
        }
        writer.commit()?;
        Ok(())
    }

    /// Records the current state of one path: gone (tombstones for it and everything below),
    /// a new directory (scanned whole, since its contents may predate the watch), or an entry
    /// (added to `batch`, written with the rest of it). Whatever writes on its own (a scan, a
    /// removal) writes the batch first.
    fn reconcile(&mut self, i: usize, rel: &RelPath, batch: &mut WatchBatch) -> anyhow::Result<()> {
        let root = &self.roots[i];
        let name = root.root.name.as_str().to_string();
        let root_path = root.root.path.clone();
        // Through the pinned directory's handles: another directory swapped in at the root's
        // path is never described as the tree.
        let stat = match zync_fs::lstat_beneath(&root_path, rel) {
            Ok(stat) => stat,
            Err(FsError::RootReplaced { .. }) => {
                // Scanned whole when it is back; what this batch read before stays recorded.
                self.mark_unavailable(i, Why::Replaced)?;
                batch.replaced = true;
                return Ok(());
            }
            Err(e) => {
                // One unreadable path must not stop the daemon; the next rescan retries it.
                tracing::warn!(dir = %name, path = %rel, "cannot inspect: {e}");
                return Ok(());
            }
        };
        let meta = match stat {
            Stat::Missing => {
                // Recorded once the root's events go quiet and the root still stands.
                self.deferred.push((i, rel.clone(), Instant::now()));
                return Ok(());
            }
            Stat::Unsupported(what) => {
                tracing::debug!(path = %rel, "skipped: {what}");
                self.record(i, batch)?;
                return self.forget(&name, rel);
            }
            Stat::Entry(meta) => meta,
        };
        if let Some(ignored) = root.rules.ignored_by(rel, meta.kind == Kind::Dir) {
            // What was served here before it became ignored (a file `build` replaced by an
            // ignored `build/` directory) is gone from E's side. Below an ignored path
            // nothing was ever indexed, so only the path itself is looked up.
            if ignored.path.as_str() == rel.as_str()
                && self
                    .index
                    .get(&name, rel.as_str())?
                    .is_some_and(|e| !e.deleted)
            {
                self.record(i, batch)?;
                self.forget(&name, rel)?;
            }
            return self.note_ignored(&name, &ignored);
        }
        // A parent the index does not know yet (created and filled between two batches):
        // scan from the highest unknown ancestor.
        // A batch of a thousand files in a few directories looks each directory up once.
        for ancestor in rel.ancestors() {
            if batch.known_dirs.contains(ancestor.as_str()) {
                continue;
            }
            let known = self.index.get(&name, ancestor.as_str())?;
            if !known.is_some_and(|e| !e.deleted && e.meta.kind == Kind::Dir) {
                return self.scan_new(i, &ancestor, batch);
            }
            batch.known_dirs.insert(ancestor.as_str().to_string());
        }
        // An event on a directory itself (made, moved in, its mode changed) has it scanned
        // whole, also when the index knows it: a scan of its parent may have listed it after
        // it was made and before the watcher watched it, and files written in it in between
        // brought no event. Seen as one file of a 3,000-file burst missing from the index when
        // a barrier answered (e2e `barrier::a_wait_started_right_after_a_burst…`, under load).
        // Not again in one batch: every directory whose event is in the batch was watched
        // before the batch's first scan (its `catch_up`), so a scan of it or of a directory
        // above it in this batch saw what came before its watch.
        if meta.kind == Kind::Dir {
            if batch.scanned.iter().any(|done| rel.starts_with(done)) {
                return Ok(());
            }
            return self.scan_new(i, rel, batch);
        }
        let old = self.index.get(&name, rel.as_str())?.filter(|e| !e.deleted);
        if old
            .as_ref()
            .is_some_and(|o| unchanged((&o.meta).into(), &meta))
        {
            // The end of a write in a file read fresh by an earlier batch: that read may have
            // been made while this write ran.
            if batch.written.contains(rel) && self.fresh.read_before(i, rel) {
                self.recheck_now(i, rel.clone());
            }
            return Ok(());
        }
        let clock = batch.clock.get_or_insert_with(|| Clock::of(&root_path));
        let began = entry::now_ns();
        let Some((new, racy)) = describe(clock, rel, &meta, &self.hashed) else {
            return Ok(());
        };
        self.fresh.note(i, rel, &new, began);
        if racy {
            self.recheck.push((i, rel.clone(), Instant::now() + RACY));
        }
        let was_dir = old.as_ref().is_some_and(|o| o.meta.kind == Kind::Dir);
        batch.entries.push((rel.clone(), new, was_dir));
        Ok(())
    }

    /// Records that a watch event's path is ignored: the path itself, or the ignored directory
    /// it lies in (which counts once, whatever it holds). Writes only when that is news, so the
    /// events of an `npm install` inside `node_modules` cost one read each.
    fn note_ignored(&mut self, name: &str, ignored: &Ignored) -> anyhow::Result<()> {
        let row = ignored_row(ignored);
        if self.index.ignored_path(name, &row.path)?.as_ref() == Some(&row) {
            return Ok(());
        }
        let mut writer = self.index.writer()?;
        writer.set_ignored(name, &row)?;
        writer.commit()?;
        Ok(())
    }

    /// Records that `rel` and everything below it is gone: tombstones in the index, and no
    /// longer counted as ignored.
    fn forget(&mut self, name: &str, rel: &RelPath) -> anyhow::Result<()> {
        let mut writer = self.index.writer()?;
        writer.tombstone_tree(name, rel.as_str())?;
        writer.unignore_tree(name, rel.as_str())?;
        writer.commit()?;
        Ok(())
    }
}

/// An ignored path as the index stores it.
fn ignored_row(ignored: &Ignored) -> IgnoredPath {
    IgnoredPath {
        path: ignored.path.as_str().to_string(),
        is_dir: ignored.is_dir,
        pattern: ignored.rule.pattern.clone(),
        source: ignored.rule.source.as_str().to_string(),
    }
}

/// One watch batch's entries waiting to be written together ([`Indexer::record`]), and the
/// directories it found in the index (forgotten whenever something else writes).
#[derive(Default)]
struct WatchBatch {
    entries: Vec<(RelPath, EntryMeta, bool)>,
    known_dirs: HashSet<String>,
    /// The watcher has caught up with the directories it reported ([`Indexer::scan_new`]).
    caught_up: bool,
    /// The batch's root, asked once whether it keeps this machine's clock.
    clock: Option<Clock>,
    /// Subtrees scanned whole in this batch ([`Indexer::scan_new`]).
    scanned: Vec<RelPath>,
    /// The files a write ended in, as the watcher reported ([`zync_fs::Batch::written`]).
    written: HashSet<RelPath>,
    /// The root's path was found leading to another directory: the rest of the batch waits
    /// for the scan made when it is back.
    replaced: bool,
}

/// Tells connections the last sequence number and whether a scan is running.
fn publish(
    index: &Index,
    status: &watch::Sender<Status>,
    scanning: bool,
    settled: u64,
) -> anyhow::Result<()> {
    let last_seq = index.last_seq()?;
    status.send_if_modified(|s| {
        let new = Status {
            last_seq,
            scanning,
            settled,
        };
        let changed = *s != new;
        *s = new;
        changed
    });
    Ok(())
}

/// Says that the watcher cannot see everything, what the daemon does about it, and the fix.
fn warn_blind(why: &str) {
    tracing::warn!(
        "cannot watch the directories ({why}); rescanning every {}s instead. Fix: make every \
         directory readable by the daemon's user, or raise the inotify limit (sudo sysctl \
         fs.inotify.max_user_watches=524288), then restart",
        POLL_RESCAN.as_secs()
    );
}

#[cfg(test)]
mod tests {
    use std::io::Write;
    use std::os::unix::fs::MetadataExt;
    use std::path::Path;

    use zync_fs::DirName;

    use super::*;

    fn indexer(root: &Path, own: &[PathBuf]) -> (Indexer, watch::Receiver<Status>) {
        indexer_on(Index::open_in_memory().unwrap(), root, own)
    }

    fn indexer_on(
        index: Index,
        root: &Path,
        own: &[PathBuf],
    ) -> (Indexer, watch::Receiver<Status>) {
        let mut owned = OwnPaths::default();
        for file in own {
            owned.add_file(file.clone(), "zync-daemon's own database");
        }
        let own = owned;
        let rules = Arc::new(IgnoreRules::new(root, &[], true).unwrap());
        let root = Root::pin(DirName::parse("code").unwrap(), root.to_path_buf()).unwrap();
        let (tx, rx) = watch::channel(Status::default());
        (
            Indexer::new(index, vec![IndexedRoot { root, rules }], own, tx),
            rx,
        )
    }

    fn live(ix: &Indexer) -> Vec<String> {
        ix.index
            .live_entries("code", None)
            .unwrap()
            .into_iter()
            .map(|e| e.path)
            .collect()
    }

    #[test]
    fn a_rescan_records_only_what_changed() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("src")).unwrap();
        std::fs::write(dir.path().join("src/a.rs"), "a").unwrap();
        std::fs::write(dir.path().join("b.txt"), "b").unwrap();
        std::fs::create_dir(dir.path().join("node_modules")).unwrap();
        std::fs::write(dir.path().join("node_modules/x.js"), "x").unwrap();
        let (mut ix, _rx) = indexer(dir.path(), &[]);
        assert_eq!(ix.scan_root(0, None).unwrap(), 3);
        assert_eq!(live(&ix), ["b.txt", "src", "src/a.rs"]);
        let seq = ix.index.last_seq().unwrap();

        assert_eq!(
            ix.scan_root(0, None).unwrap(),
            0,
            "an unchanged tree records nothing"
        );
        assert_eq!(ix.index.last_seq().unwrap(), seq);

        std::fs::write(dir.path().join("b.txt"), "b2").unwrap();
        std::fs::remove_file(dir.path().join("src/a.rs")).unwrap();
        std::fs::write(dir.path().join("c.txt"), "c").unwrap();
        assert_eq!(ix.scan_root(0, None).unwrap(), 3);
        let changes = ix.index.changes_since("code", seq, 100).unwrap();
        let summary: Vec<(String, bool)> = changes
            .iter()
            .map(|e| (e.path.clone(), e.deleted))
            .collect();
        assert_eq!(summary.len(), 3, "{summary:?}");
        assert!(
            summary.contains(&("src/a.rs".to_string(), true)),
            "{summary:?}"
        );
        assert!(
            summary.contains(&("b.txt".to_string(), false)),
            "{summary:?}"
        );
        let b = ix.index.get("code", "b.txt").unwrap().unwrap();
        assert_eq!(
            b.meta.sha256.as_deref(),
            Some(zync_fs::hash_bytes(b"b2").as_str())
        );
    }

    #[test]
    fn a_missing_root_does_not_become_a_mass_deletion() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("root");
        std::fs::create_dir(&root).unwrap();
        std::fs::write(root.join("keep"), "k").unwrap();
        let (mut ix, _rx) = indexer(&root, &[]);
        ix.scan_root(0, None).unwrap();
        std::fs::rename(&root, dir.path().join("elsewhere")).unwrap();
        assert_eq!(ix.scan_root(0, None).unwrap(), 0);
        assert_eq!(live(&ix), ["keep"]);
    }

    #[test]
    fn a_root_that_moved_to_another_filesystem_does_not_become_a_mass_deletion() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("keep"), "k").unwrap();
        let (mut ix, _rx) = indexer(dir.path(), &[]);
        ix.scan_root(0, None).unwrap();
        // Stand-in for an unmounted disk: the stored device id no longer matches.
        ix.index.set_setting("root_dev:code", "999999").unwrap();
        std::fs::remove_file(dir.path().join("keep")).unwrap();
        assert_eq!(ix.scan_root(0, None).unwrap(), 0);
        assert_eq!(live(&ix), ["keep"]);
        // On the same filesystem a root emptied at once is unavailable too; a file left in it
        // says the deletions are meant.
        let (mut ix, _rx) = indexer(dir.path(), &[]);
        std::fs::write(dir.path().join("again"), "a").unwrap();
        ix.scan_root(0, None).unwrap();
        std::fs::remove_file(dir.path().join("again")).unwrap();
        assert_eq!(ix.scan_root(0, None).unwrap(), 0);
        assert_eq!(live(&ix), ["again"]);
        assert!(unavailable(&ix).is_some_and(|m| m.contains("emptied at once")));
        std::fs::write(dir.path().join(".keep"), "").unwrap();
        assert_eq!(ix.scan_root(0, None).unwrap(), 2);
        assert_eq!(live(&ix), [".keep"]);
        assert_eq!(unavailable(&ix), None);
    }

    fn unavailable(ix: &Indexer) -> Option<String> {
        ix.index.unavailable("code").unwrap()
    }

    /// A root with two files and a subdirectory, scanned.
    fn served(dir: &Path) -> (Indexer, watch::Receiver<Status>, PathBuf) {
        let root = dir.join("root");
        std::fs::create_dir_all(root.join("sub")).unwrap();
        std::fs::write(root.join("a"), "a").unwrap();
        std::fs::write(root.join("sub/b"), "b").unwrap();
        let (mut ix, rx) = indexer(&root, &[]);
        assert_eq!(ix.scan_root(0, None).unwrap(), 3);
        (ix, rx, root)
    }

    fn events(root: &Path) -> Vec<PathBuf> {
        ["a", "sub/b", "sub"].iter().map(|p| root.join(p)).collect()
    }

    #[test]
    fn a_root_moved_away_under_the_watcher_records_no_deletions_and_resumes_when_back() {
        let dir = tempfile::tempdir().unwrap();
        let (mut ix, _rx, root) = served(dir.path());
        let away = dir.path().join("away");
        std::fs::rename(&root, &away).unwrap();
        ix.reconcile_paths(0, events(&root)).unwrap();
        ix.record_deferred(|_| true).unwrap();
        assert_eq!(live(&ix), ["a", "sub", "sub/b"]);
        assert!(unavailable(&ix).is_some_and(|m| m.contains("disappeared")));
        // The periodic look changes nothing while it is gone.
        assert!(!ix.admit(0).unwrap());
        assert_eq!(live(&ix), ["a", "sub", "sub/b"]);
        // Put back with one file changed and one missing: the scan against the index decides.
        std::fs::write(away.join("a"), "a2").unwrap();
        std::fs::remove_dir_all(away.join("sub")).unwrap();
        std::fs::write(away.join("new"), "n").unwrap();
        std::fs::rename(&away, &root).unwrap();
        assert!(!ix.admit(0).unwrap(), "a root back is scanned whole");
        assert_eq!(live(&ix), ["a", "new"]);
        assert_eq!(unavailable(&ix), None);
        assert!(ix.admit(0).unwrap());
    }

    #[test]
    fn a_root_emptied_at_once_under_the_watcher_records_no_deletions() {
        let dir = tempfile::tempdir().unwrap();
        let (mut ix, _rx, root) = served(dir.path());
        for p in ["a", "sub/b"] {
            std::fs::remove_file(root.join(p)).unwrap();
        }
        std::fs::remove_dir(root.join("sub")).unwrap();
        ix.reconcile_paths(0, events(&root)).unwrap();
        ix.record_deferred(|_| true).unwrap();
        assert_eq!(live(&ix), ["a", "sub", "sub/b"]);
        assert!(unavailable(&ix).is_some_and(|m| m.contains("emptied at once")));
        // A file left in it says the deletions are meant.
        std::fs::write(root.join(".keep"), "").unwrap();
        ix.reconcile_paths(0, vec![root.join(".keep")]).unwrap();
        assert_eq!(live(&ix), [".keep"]);
        assert_eq!(unavailable(&ix), None);
    }

    #[test]
    fn deletions_seen_by_the_watcher_wait_until_their_root_is_quiet() {
        let dir = tempfile::tempdir().unwrap();
        let (mut ix, _rx, root) = served(dir.path());
        std::fs::remove_file(root.join("a")).unwrap();
        ix.reconcile_paths(0, vec![root.join("a")]).unwrap();
        ix.record_deferred(|_| false).unwrap();
        assert_eq!(live(&ix), ["a", "sub", "sub/b"], "the root is still busy");
        ix.record_deferred(|_| true).unwrap();
        assert_eq!(live(&ix), ["sub", "sub/b"]);
        assert_eq!(unavailable(&ix), None);
    }

    /// Another directory at the root's path (a symlink another user swapped in, or one the
    /// user made after moving the root away) is never the root: nothing of it is indexed,
    /// nothing of the root is taken for deleted, its watch stays on the pinned directory, and
    /// the root is served again once it is back.
    #[test]
    fn a_replaced_root_is_never_scanned_and_is_served_again_once_back() {
        let dir = tempfile::tempdir().unwrap();
        let (mut ix, _rx, root) = served(dir.path());
        let (tx, _events) = std::sync::mpsc::channel();
        ix.watch_tx = Some(tx);
        ix.watch();
        let pinned = ix.roots[0].root.id;
        assert_eq!(ix.watched[0], Some(pinned));
        let theirs = dir.path().join("theirs");
        std::fs::create_dir(&theirs).unwrap();
        std::fs::write(theirs.join("secret"), "s").unwrap();
        std::fs::write(theirs.join("a"), "theirs").unwrap();
        let real = dir.path().join("root.real");
        std::fs::rename(&root, &real).unwrap();
        std::os::unix::fs::symlink(&theirs, &root).unwrap();
        // Events from the real directory, reported under the root's path; a deletion of it.
        std::fs::remove_file(real.join("a")).unwrap();
        ix.reconcile_paths(0, vec![root.join("a"), root.join("secret")])
            .unwrap();
        ix.record_deferred(|_| true).unwrap();
        assert!(!ix.admit(0).unwrap());
        assert_eq!(ix.scan_root(0, None).unwrap(), 0);
        ix.recheck_now(0, RelPath::parse("a").unwrap());
        ix.recheck_due().unwrap();
        assert_eq!(live(&ix), ["a", "sub", "sub/b"]);
        assert!(ix.index.get("code", "secret").unwrap().is_none());
        assert!(unavailable(&ix)
            .is_some_and(|m| m.contains("no longer the directory zync-daemon started with")));
        assert_eq!(
            ix.watched[0],
            Some(pinned),
            "the watch stays on the real one"
        );
        // A directory the user made there instead, empty or not: the same.
        std::fs::remove_file(&root).unwrap();
        for content in [false, true] {
            std::fs::create_dir(&root).unwrap();
            if content {
                std::fs::write(root.join("new"), "n").unwrap();
            }
            ix.reconcile_paths(0, vec![root.clone()]).unwrap();
            assert!(!ix.admit(0).unwrap());
            assert_eq!(live(&ix), ["a", "sub", "sub/b"]);
            assert!(unavailable(&ix).is_some_and(|m| m.contains("restart zync-daemon")));
            std::fs::remove_dir_all(&root).unwrap();
        }
        // Back: scanned against the index, which now records the deletion made meanwhile.
        std::fs::rename(&real, &root).unwrap();
        assert!(!ix.admit(0).unwrap(), "a root back is scanned whole");
        assert_eq!(live(&ix), ["sub", "sub/b"]);
        assert_eq!(unavailable(&ix), None);
        assert_eq!(ix.watched[0], Some(pinned));
        assert!(ix.admit(0).unwrap());
    }

    /// Waits (with a deadline) for the watcher to report `path`.
    fn reported(events: &std::sync::mpsc::Receiver<WatchEvent>, path: &Path) -> bool {
        let deadline = Instant::now() + Duration::from_secs(5);
        while let Some(left) = deadline.checked_duration_since(Instant::now()) {
            match events.recv_timeout(left) {
                Ok(WatchEvent::Paths { paths, .. }) if paths.iter().any(|p| p == path) => {
                    return true
                }
                Ok(_) => {}
                Err(_) => return false,
            }
        }
        false
    }

    /// Another user swaps the root itself for a symlink to their directory, back and forth,
    /// while watch events of the real one are reconciled and its deletions recorded: nothing
    /// of theirs is ever indexed and no file of the root is taken for deleted, however the
    /// looks at the root interleave with the swaps.
    #[test]
    fn events_reconciled_while_the_root_is_swapped_never_read_the_other_directory() {
        let dir = tempfile::tempdir().unwrap();
        let (mut ix, _rx, root) = served(dir.path());
        let theirs = dir.path().join("theirs");
        std::fs::create_dir_all(theirs.join("sub")).unwrap();
        std::fs::write(theirs.join("a"), "theirs").unwrap();
        std::fs::write(theirs.join("secret"), "secret").unwrap();
        let link = dir.path().join("link");
        std::os::unix::fs::symlink(&theirs, &link).unwrap();
        let paths = ["a", "secret", "sub/b", "sub"].map(|p| root.join(p));
        let ((), swaps) = zync_fs::race::exchanging(&root, &link, || {
            let racing = Instant::now();
            while racing.elapsed() < Duration::from_secs(2) {
                ix.reconcile_paths(0, paths.to_vec()).unwrap();
                ix.record_deferred(|_| true).unwrap();
            }
        });
        if std::fs::symlink_metadata(&root).unwrap().is_symlink() {
            std::fs::rename(&root, dir.path().join("swapped")).unwrap();
            std::fs::rename(&link, &root).unwrap();
        }
        assert!(swaps > 0, "the swapper never ran");
        assert!(ix.index.get("code", "secret").unwrap().is_none());
        assert_eq!(live(&ix), ["a", "sub", "sub/b"]);
        assert_eq!(
            ix.index
                .get("code", "a")
                .unwrap()
                .unwrap()
                .meta
                .sha256
                .as_deref(),
            Some(zync_fs::hash_bytes(b"a").as_str())
        );
    }

    /// `rm -rf code && git clone ... code`: the new directory is another one (its birth time
    /// tells, where its inode number comes back), and is not served until a restart pins it.
    #[test]
    fn a_root_removed_and_made_again_is_served_only_after_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let (mut ix, _rx, root) = served(dir.path());
        let (tx, _events) = std::sync::mpsc::channel();
        ix.watch_tx = Some(tx);
        ix.watch();
        let old = inode(&root);
        std::fs::remove_dir_all(&root).unwrap();
        std::fs::create_dir(&root).unwrap();
        std::fs::write(root.join("b"), "b").unwrap();
        if RootId::of(&root).unwrap() == ix.roots[0].root.id {
            eprintln!("no birth times here and the inode number came back; skipped");
            return;
        }
        assert!(!ix.admit(0).unwrap());
        assert_eq!(live(&ix), ["a", "sub", "sub/b"], "R keeps its files");
        assert!(unavailable(&ix).is_some_and(|m| m.contains("restart zync-daemon")));
        // A restart pins the directory there now, and serves it.
        let index = std::mem::replace(&mut ix.index, Index::open_in_memory().unwrap());
        let (mut ix, _rx) = indexer_on(index, &root, &[]);
        // As `Indexer::run` starts: what the index says is unavailable, until a scan.
        ix.unavailable[0] = ix.index.unavailable("code").unwrap();
        ix.scan_root(0, None).unwrap();
        assert_eq!(
            live(&ix),
            ["b"],
            "inode number reused: {}",
            inode(&root) == old
        );
        assert_eq!(unavailable(&ix), None);
    }

    /// Where the file system keeps no birth time and the inode number comes back, a root
    /// removed and made again at once passes for the pinned one; the watcher's word that the
    /// root's watch died with it has it watched again.
    #[test]
    fn a_root_whose_watch_died_is_watched_anew() {
        let dir = tempfile::tempdir().unwrap();
        let (mut ix, _rx, root) = served(dir.path());
        let (tx, events) = std::sync::mpsc::channel();
        ix.watch_tx = Some(tx);
        ix.watch();
        std::fs::remove_dir_all(&root).unwrap();
        std::fs::create_dir(&root).unwrap();
        std::fs::write(root.join("b"), "b").unwrap();
        // As on a file system without birth times, when the inode number comes back.
        ix.roots[0].root.id = zync_fs::pin_root(&root).unwrap();
        // The watcher's events for the root's removal: its watch gone (`Batch::unwatched`),
        // and its path.
        ix.watched[0] = None;
        ix.reconcile_paths(0, vec![root.clone()]).unwrap();
        assert_eq!(live(&ix), ["b"]);
        std::fs::write(root.join("later"), "l").unwrap();
        assert!(
            reported(&events, &root.join("later")),
            "a file written in the root made again is seen"
        );
    }

    fn inode(path: &Path) -> u64 {
        std::fs::metadata(path).unwrap().ino()
    }

    #[test]
    fn a_fresh_file_rewritten_within_its_mtime_tick_is_hashed_again() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        std::fs::write(&path, "aaaa").unwrap();
        // A whole-second mtime, as a coarse file system keeps (the next second, so that the
        // file is fresh however slowly the scan starts).
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap();
        let coarse = std::time::UNIX_EPOCH + Duration::from_secs(now.as_secs() + 1);
        std::fs::File::options()
            .write(true)
            .open(&path)
            .unwrap()
            .set_modified(coarse)
            .unwrap();
        let (mut ix, _rx) = indexer(dir.path(), &[]);
        ix.scan_root(0, None).unwrap();
        assert_eq!(
            ix.recheck.len(),
            1,
            "a file modified just now must be rechecked"
        );
        // Same size, same mtime, same inode: only a second hash can see the new content.
        let mtime = std::fs::metadata(&path).unwrap().modified().unwrap();
        std::fs::OpenOptions::new()
            .write(true)
            .open(&path)
            .unwrap()
            .write_all(b"bbbb")
            .unwrap();
        std::fs::File::options()
            .write(true)
            .open(&path)
            .unwrap()
            .set_modified(mtime)
            .unwrap();
        assert_eq!(
            ix.scan_root(0, None).unwrap(),
            0,
            "size/mtime/inode look unchanged"
        );
        for entry in &mut ix.recheck {
            entry.2 = Instant::now();
        }
        ix.recheck_due().unwrap();
        let f = ix.index.get("code", "f").unwrap().unwrap();
        assert_eq!(
            f.meta.sha256.as_deref(),
            Some(zync_fs::hash_bytes(b"bbbb").as_str())
        );
    }

    #[test]
    fn a_file_with_a_fine_mtime_is_rechecked_only_within_its_tick() {
        let dir = tempfile::tempdir().unwrap();
        let here = dir.path();
        let clock = Clock::of(here);
        let path = dir.path().join("saved-a-moment-ago");
        std::fs::write(&path, "aaaa").unwrap();
        let Ok(Stat::Entry(mut meta)) = zync_fs::lstat(&path) else {
            panic!("no file at {}", path.display());
        };
        meta.mtime_ns = 1_650_000_000_000_000_000;
        assert_eq!(entry::racy_window(&clock, &meta, &path), RACY);
        meta.mtime_ns = 1_650_000_000_123_456_789;
        assert_eq!(entry::racy_window(&clock, &meta, &path), entry::RACY_FINE);
        // Most of a second old, with a sub-second part: past the tick of a fine file system,
        // so hashing it once is enough (a second hash of a big file costs seconds).
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap();
        let fine = std::time::UNIX_EPOCH + Duration::new(now.as_secs() - 1, 123_456_789);
        std::fs::File::options()
            .write(true)
            .open(&path)
            .unwrap()
            .set_modified(fine)
            .unwrap();
        let (mut ix, _rx) = indexer(dir.path(), &[]);
        ix.scan_root(0, None).unwrap();
        assert!(ix.recheck.is_empty(), "{:?}", ix.recheck);
    }

    /// Rewrites `path` in place with `content` (same inode) and stamps `mtime`.
    fn rewrite_in_place(path: &Path, content: &[u8], mtime: std::time::SystemTime) {
        use std::io::Write;
        let mut f = std::fs::File::options().write(true).open(path).unwrap();
        f.write_all(content).unwrap();
        f.set_modified(mtime).unwrap();
    }

    fn sha_of(ix: &Indexer, path: &str) -> Option<String> {
        ix.index.get("code", path).unwrap().unwrap().meta.sha256
    }

    /// A file read while a long `write()` ran in it: the write began 300 ms before the read
    /// (stamping the mtime then, past the fine racy window) and had rewritten half of it.
    /// Returns the file, when the write began, and the indexer that read it.
    fn read_during_a_long_write(dir: &Path) -> (PathBuf, std::time::SystemTime, Indexer) {
        let path = dir.join("data.bin");
        std::fs::write(&path, b"old-old-old-old!").unwrap();
        let began = std::time::SystemTime::now() - Duration::from_millis(300);
        rewrite_in_place(&path, b"new-new-", began);
        let (mut ix, _rx) = indexer(dir, &[]);
        ix.reconcile_paths(0, vec![path.clone()]).unwrap();
        let torn = zync_fs::hash_bytes(b"new-new-old-old!");
        assert_eq!(sha_of(&ix, "data.bin"), Some(torn));
        assert!(ix.recheck.is_empty(), "not racy: {:?}", ix.recheck);
        // The write ends: the rest rewritten, the mtime where the write began.
        rewrite_in_place(&path, b"new-new-new-new!", began);
        (path, began, ix)
    }

    #[test]
    fn a_file_read_while_a_long_write_ran_in_it_is_read_again_when_the_write_ends() {
        let dir = tempfile::tempdir().unwrap();
        let (path, _, mut ix) = read_during_a_long_write(dir.path());
        let whole = zync_fs::hash_bytes(b"new-new-new-new!");
        // A close or a change of attributes is not the end of a write: nothing is read.
        let before = hashed(&ix);
        ix.reconcile_written(0, vec![path.clone()], &HashSet::new())
            .unwrap();
        ix.recheck_due().unwrap();
        assert_eq!(hashed(&ix), before);
        // The write's own event, in a later batch than the read.
        let seq = ix.index.last_seq().unwrap();
        let written: HashSet<PathBuf> = [path.clone()].into();
        ix.reconcile_written(0, vec![path.clone()], &written)
            .unwrap();
        ix.recheck_due().unwrap();
        assert_eq!(sha_of(&ix, "data.bin"), Some(whole));
        assert!(ix.index.last_seq().unwrap() > seq);
        // Two more ends of writes, with nothing changed, before the recheck: read again once,
        // and nothing recorded.
        let seq = ix.index.last_seq().unwrap();
        let before = hashed(&ix);
        ix.reconcile_written(0, vec![path.clone()], &written)
            .unwrap();
        ix.reconcile_written(0, vec![path.clone()], &written)
            .unwrap();
        ix.recheck_due().unwrap();
        assert_eq!(hashed(&ix), before + 1);
        assert_eq!(ix.index.last_seq().unwrap(), seq);
    }

    #[test]
    fn a_rescan_reads_again_a_file_read_while_a_write_may_have_run_in_it() {
        let dir = tempfile::tempdir().unwrap();
        let (_, _, mut ix) = read_during_a_long_write(dir.path());
        // The write's event was lost (the kernel's queue overflowed): the root is rescanned.
        ix.rescan(vec![0]).unwrap();
        ix.recheck_due().unwrap();
        let whole = zync_fs::hash_bytes(b"new-new-new-new!");
        assert_eq!(sha_of(&ix, "data.bin"), Some(whole));
    }

    #[test]
    fn the_end_of_a_write_in_an_old_file_that_changed_nothing_reads_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("old.txt");
        std::fs::write(&path, b"settled long ago").unwrap();
        let hour_ago = std::time::SystemTime::now() - Duration::from_secs(3600);
        rewrite_in_place(&path, b"settled long ago", hour_ago);
        let (mut ix, _rx) = indexer(dir.path(), &[]);
        ix.scan_root(0, None).unwrap();
        let before = hashed(&ix);
        let written: HashSet<PathBuf> = [path.clone()].into();
        ix.reconcile_written(0, vec![path.clone()], &written)
            .unwrap();
        ix.rescan(vec![0]).unwrap();
        ix.recheck_due().unwrap();
        assert_eq!(hashed(&ix), before);
    }

    #[test]
    fn a_file_dated_in_the_future_is_hashed_again_once_not_every_two_seconds() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("from-the-future.tar-member");
        std::fs::write(&path, b"unpacked").unwrap();
        let hour_ahead = std::time::SystemTime::now() + Duration::from_secs(3600);
        rewrite_in_place(&path, b"unpacked", hour_ahead);
        let (mut ix, _rx) = indexer(dir.path(), &[]);
        ix.reconcile_paths(0, vec![path.clone()]).unwrap();
        assert_eq!(ix.recheck.len(), 1, "hashed again once: {:?}", ix.recheck);
        let before = hashed(&ix);
        for _ in 0..3 {
            for (_, _, due) in &mut ix.recheck {
                *due = Instant::now();
            }
            ix.recheck_due().unwrap();
        }
        assert_eq!(hashed(&ix), before + 1);
        assert!(ix.recheck.is_empty(), "{:?}", ix.recheck);
    }

    #[test]
    fn a_big_file_saved_just_now_is_hashed_once() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("big.bin");
        std::fs::write(&path, vec![7u8; 48 << 20]).unwrap();
        // Saved 95 ms ago: within the fine window when the hashing starts, past it once the
        // 48 MiB are read, when a later write would get a later mtime.
        let saved = std::time::SystemTime::now() - Duration::from_millis(95);
        std::fs::File::options()
            .write(true)
            .open(&path)
            .unwrap()
            .set_modified(saved)
            .unwrap();
        let (mut ix, _rx) = indexer(dir.path(), &[]);
        ix.scan_root(0, None).unwrap();
        assert_eq!(hashed(&ix), 1);
        assert!(
            ix.recheck.is_empty(),
            "a big file is hashed again: {:?}",
            ix.recheck
        );
    }

    #[test]
    fn the_daemons_own_files_are_never_indexed() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("sync.db"), "db").unwrap();
        std::fs::write(dir.path().join("real.txt"), "r").unwrap();
        let (mut ix, _rx) = indexer(dir.path(), &[dir.path().join("sync.db")]);
        ix.scan_root(0, None).unwrap();
        assert_eq!(live(&ix), ["real.txt"]);
        ix.reconcile_paths(0, vec![dir.path().join("sync.db")])
            .unwrap();
        assert_eq!(live(&ix), ["real.txt"]);
    }

    #[test]
    fn watch_paths_are_reconciled_parents_first_and_deletions_cover_subtrees() {
        let dir = tempfile::tempdir().unwrap();
        let (mut ix, _rx) = indexer(dir.path(), &[]);
        ix.scan_root(0, None).unwrap();
        // Something stays, so that deleting "new" does not empty the root at once.
        std::fs::write(dir.path().join("stays.pyc"), "s").unwrap();
        std::fs::create_dir_all(dir.path().join("new/deep")).unwrap();
        std::fs::write(dir.path().join("new/deep/f"), "f").unwrap();
        // Only the file's event arrived: the unknown parents are scanned too.
        ix.reconcile_paths(0, vec![dir.path().join("new/deep/f")])
            .unwrap();
        assert_eq!(live(&ix), ["new", "new/deep", "new/deep/f"]);
        let order: Vec<String> = ix
            .index
            .changes_since("code", 0, 10)
            .unwrap()
            .into_iter()
            .map(|e| e.path)
            .collect();
        assert_eq!(
            order,
            ["new", "new/deep", "new/deep/f"],
            "parents must get lower seqs"
        );

        std::fs::remove_dir_all(dir.path().join("new")).unwrap();
        ix.reconcile_paths(0, vec![dir.path().join("new")]).unwrap();
        ix.record_deferred(|_| true).unwrap();
        assert!(live(&ix).is_empty(), "{:?}", live(&ix));
        let ignored = dir.path().join("x.pyc");
        std::fs::write(&ignored, "i").unwrap();
        ix.reconcile_paths(0, vec![ignored]).unwrap();
        assert!(live(&ix).is_empty(), "ignored files must not be indexed");
    }

    #[test]
    fn a_directory_event_scans_the_directory_even_when_a_scan_of_its_parent_listed_it() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("burst/d0")).unwrap();
        std::fs::write(dir.path().join("burst/d0/early.txt"), "early").unwrap();
        let (mut ix, _rx) = indexer(dir.path(), &[]);
        // A scan of the parent lists `d0` before the watcher watches it...
        ix.scan_root(0, None).unwrap();
        assert_eq!(live(&ix), ["burst", "burst/d0", "burst/d0/early.txt"]);
        // ...a file is written in it before its watch, so no event comes for the file...
        std::fs::write(dir.path().join("burst/d0/late.txt"), "late").unwrap();
        // ...and the directory's own creation event comes out of the watcher after that.
        ix.reconcile_paths(0, vec![dir.path().join("burst/d0")])
            .unwrap();
        assert_eq!(
            live(&ix),
            [
                "burst",
                "burst/d0",
                "burst/d0/early.txt",
                "burst/d0/late.txt"
            ]
        );
    }

    #[test]
    fn a_batch_scans_a_directory_once_however_many_events_of_it_and_below_it_it_holds() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("a/b/c")).unwrap();
        let (mut ix, _rx) = indexer(dir.path(), &[]);
        ix.scan_root(0, None).unwrap();
        // What a batch with the event of `a` alone costs: one scan of `a`.
        std::fs::write(dir.path().join("a/b/c/one.txt"), "1").unwrap();
        let before = ix.index.commits();
        ix.reconcile_paths(0, vec![dir.path().join("a")]).unwrap();
        let one_scan = ix.index.commits() - before;
        // `cp -r` or `chmod -R` brings an event for each directory of the tree.
        std::fs::write(dir.path().join("a/b/c/two.txt"), "2").unwrap();
        let before = ix.index.commits();
        let events = ["a", "a/b", "a/b/c"].map(|d| dir.path().join(d));
        ix.reconcile_paths(0, events.to_vec()).unwrap();
        assert_eq!(
            live(&ix),
            ["a", "a/b", "a/b/c", "a/b/c/one.txt", "a/b/c/two.txt"]
        );
        assert_eq!(
            ix.index.commits() - before,
            one_scan,
            "`a` was scanned whole; `a/b` and `a/b/c` need no scan of their own in this batch"
        );
    }

    #[test]
    fn a_watch_batch_of_many_files_is_one_transaction_and_keeps_its_order() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("a/b")).unwrap();
        std::fs::write(dir.path().join("a/b/old.txt"), "old").unwrap();
        let (mut ix, _rx) = indexer(dir.path(), &[]);
        ix.scan_root(0, None).unwrap();
        let scanned = ix.index.last_seq().unwrap();
        // A burst: 300 new files in a directory the index knows, one changed, one ignored.
        let mut paths = Vec::new();
        for n in 0..300 {
            let path = dir.path().join(format!("a/b/f{n:03}.txt"));
            std::fs::write(&path, format!("file {n}")).unwrap();
            paths.push(path);
        }
        std::fs::write(dir.path().join("a/b/old.txt"), "changed").unwrap();
        paths.push(dir.path().join("a/b/old.txt"));
        std::fs::write(dir.path().join("a/x.pyc"), "ignored").unwrap();
        paths.push(dir.path().join("a/x.pyc"));
        let before = ix.index.commits();
        ix.reconcile_paths(0, paths).unwrap();
        let commits = ix.index.commits() - before;
        // The ignored file notes itself apart (a row of its own table); the 301 entries are
        // one commit, each of them a flush of the database.
        assert!(commits <= 2, "a batch of 301 files took {commits} commits");
        let changed = ix.index.changes_since("code", scanned, 1000).unwrap();
        assert_eq!(changed.len(), 301, "every file of the batch is recorded");
        let old = changed.iter().find(|e| e.path == "a/b/old.txt").unwrap();
        assert_eq!(old.meta.size, 7);
        assert_eq!(live(&ix).len(), 2 + 301);

        // A new directory in the middle of a batch is scanned, and the files read before it
        // are written first, so sequence numbers still follow the batch's order.
        std::fs::write(dir.path().join("top.txt"), "top").unwrap();
        std::fs::create_dir(dir.path().join("a/new")).unwrap();
        std::fs::write(dir.path().join("a/new/n.txt"), "n").unwrap();
        let last = ix.index.last_seq().unwrap();
        ix.reconcile_paths(
            0,
            vec![dir.path().join("a/new"), dir.path().join("top.txt")],
        )
        .unwrap();
        let order: Vec<String> = ix
            .index
            .changes_since("code", last, 10)
            .unwrap()
            .into_iter()
            .map(|e| e.path)
            .collect();
        assert_eq!(order, ["top.txt", "a/new", "a/new/n.txt"]);
    }

    #[test]
    fn a_file_replaced_by_an_ignored_directory_is_no_longer_served() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("stays.txt"), "s").unwrap();
        // `build/` ignores directories only: a file named `build` is synced.
        std::fs::write(dir.path().join("build"), "a script").unwrap();
        let (mut ix, _rx) = indexer(dir.path(), &[]);
        ix.scan_root(0, None).unwrap();
        assert_eq!(live(&ix), ["build", "stays.txt"]);
        std::fs::remove_file(dir.path().join("build")).unwrap();
        std::fs::create_dir(dir.path().join("build")).unwrap();
        std::fs::write(dir.path().join("build/out.o"), "o").unwrap();
        ix.reconcile_paths(
            0,
            vec![dir.path().join("build"), dir.path().join("build/out.o")],
        )
        .unwrap();
        assert_eq!(live(&ix), ["stays.txt"], "the file `build` is gone from E");
        assert_eq!(ignored(&ix), [ig("build", "build/", "built-in")]);
        // A full scan agrees.
        assert_eq!(ix.scan_root(0, None).unwrap(), 0);
        assert_eq!(live(&ix), ["stays.txt"]);
    }

    /// What the index says `code` ignores: (path, pattern, source), by path.
    fn ignored(ix: &Indexer) -> Vec<(String, String, String)> {
        ix.index
            .ignored_paths("code", 1000)
            .unwrap()
            .into_iter()
            .map(|p| (p.path, p.pattern, p.source))
            .collect()
    }

    fn ig(path: &str, pattern: &str, source: &str) -> (String, String, String) {
        (path.into(), pattern.into(), source.into())
    }

    #[test]
    fn what_is_ignored_is_recorded_by_scans_and_kept_current_by_events() {
        let dir = tempfile::tempdir().unwrap();
        let r = dir.path();
        std::fs::create_dir_all(r.join("node_modules/pkg")).unwrap();
        for i in 0..50 {
            std::fs::write(r.join(format!("node_modules/pkg/{i}.js")), "x").unwrap();
        }
        std::fs::write(r.join("build"), "#!/bin/sh\n").unwrap();
        std::fs::create_dir_all(r.join("web/build")).unwrap();
        std::fs::write(r.join("web/build/app.js"), "a").unwrap();
        std::fs::write(r.join(".zyncignore"), "*.log\n").unwrap();
        std::fs::write(r.join("web/a.log"), "l").unwrap();
        let (mut ix, _rx) = indexer(r, &[]);
        ix.scan_root(0, None).unwrap();
        assert_eq!(
            ignored(&ix),
            [
                ig("node_modules", "node_modules/", "built-in"),
                ig("web/a.log", "*.log", ".zyncignore"),
                ig("web/build", "build/", "built-in"),
            ],
            "an ignored directory is one path; a file named build is not ignored"
        );
        assert!(live(&ix).contains(&"build".to_string()));

        // Events inside an ignored directory add nothing; a new ignored file is added.
        std::fs::write(r.join("node_modules/pkg/new.js"), "n").unwrap();
        std::fs::write(r.join("web/b.log"), "l").unwrap();
        ix.reconcile_paths(
            0,
            vec![r.join("node_modules/pkg/new.js"), r.join("web/b.log")],
        )
        .unwrap();
        assert_eq!(ignored(&ix).len(), 4, "{:?}", ignored(&ix));
        assert!(ignored(&ix).contains(&ig("web/b.log", "*.log", ".zyncignore")));

        // A deleted ignored directory is no longer counted.
        std::fs::remove_dir_all(r.join("node_modules")).unwrap();
        ix.reconcile_paths(0, vec![r.join("node_modules")]).unwrap();
        ix.record_deferred(|_| true).unwrap();
        assert!(!ignored(&ix).iter().any(|(p, _, _)| p == "node_modules"));

        // An ignored directory replaced by a file of its name is synced, not ignored.
        std::fs::remove_dir_all(r.join("web/build")).unwrap();
        std::fs::write(r.join("web/build"), "script").unwrap();
        ix.reconcile_paths(0, vec![r.join("web/build")]).unwrap();
        assert!(live(&ix).contains(&"web/build".to_string()));
        assert_eq!(
            ignored(&ix),
            [
                ig("web/a.log", "*.log", ".zyncignore"),
                ig("web/b.log", "*.log", ".zyncignore"),
            ]
        );

        // A removed .zyncignore takes its rule's paths out: they are synced now.
        std::fs::remove_file(r.join(".zyncignore")).unwrap();
        ix.reconcile_paths(0, vec![r.join(".zyncignore")]).unwrap();
        assert!(ignored(&ix).is_empty(), "{:?}", ignored(&ix));
        assert!(live(&ix).contains(&"web/a.log".to_string()));
    }

    #[test]
    fn a_file_replaced_by_a_directory_is_recorded_as_one() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("p"), "file").unwrap();
        let (mut ix, _rx) = indexer(dir.path(), &[]);
        ix.scan_root(0, None).unwrap();
        std::fs::remove_file(dir.path().join("p")).unwrap();
        std::fs::create_dir(dir.path().join("p")).unwrap();
        std::fs::write(dir.path().join("p/child"), "c").unwrap();
        ix.reconcile_paths(0, vec![dir.path().join("p"), dir.path().join("p/child")])
            .unwrap();
        let p = ix.index.get("code", "p").unwrap().unwrap();
        assert_eq!(p.meta.kind, Kind::Dir);
        assert!(!p.deleted);
        assert_eq!(live(&ix), ["p", "p/child"]);
    }

    fn hashed(ix: &Indexer) -> u64 {
        ix.hashed.load(Ordering::Relaxed)
    }

    /// Sets a file's mtime `secs` seconds after its current one.
    fn bump_mtime(path: &Path, secs: u64) {
        let file = std::fs::File::options().write(true).open(path).unwrap();
        let mtime = file.metadata().unwrap().modified().unwrap();
        file.set_modified(mtime + Duration::from_secs(secs))
            .unwrap();
    }

    #[test]
    fn a_restart_over_an_unchanged_tree_hashes_nothing_and_a_rewritten_file_is_hashed() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("root");
        for d in 0..5 {
            std::fs::create_dir_all(root.join(format!("d{d}/sub"))).unwrap();
            for f in 0..8 {
                std::fs::write(root.join(format!("d{d}/sub/f{f}")), format!("{d}-{f}")).unwrap();
            }
        }
        std::os::unix::fs::symlink("d0", root.join("link")).unwrap();
        let db = dir.path().join("sync.db");
        {
            let (mut ix, _rx) = indexer_on(Index::open(&db).unwrap(), &root, &[]);
            assert_eq!(ix.scan_root(0, None).unwrap(), 5 * 2 + 40 + 1);
            assert_eq!(hashed(&ix), 40, "every file is hashed once at first");
        }
        // A new daemon on the same database and the same tree.
        let (mut ix, _rx) = indexer_on(Index::open(&db).unwrap(), &root, &[]);
        let seq = ix.index.last_seq().unwrap();
        assert_eq!(ix.scan_root(0, None).unwrap(), 0);
        assert_eq!(
            hashed(&ix),
            0,
            "a restart over an unchanged tree re-hashes nothing"
        );
        assert_eq!(ix.index.last_seq().unwrap(), seq);

        // Same size, new content, a later mtime: found by its metadata, hashed again, alone.
        let touched = root.join("d3/sub/f5");
        std::fs::write(&touched, "X-Y").unwrap();
        bump_mtime(&touched, 3);
        assert_eq!(ix.scan_root(0, None).unwrap(), 1);
        assert_eq!(hashed(&ix), 1, "only the rewritten file is hashed");
        let f = ix.index.get("code", "d3/sub/f5").unwrap().unwrap();
        assert_eq!(
            f.meta.sha256.as_deref(),
            Some(zync_fs::hash_bytes(b"X-Y").as_str())
        );
    }

    /// Everything the index holds, tombstones included, in sequence order.
    fn all_rows(ix: &Indexer) -> Vec<zync_db::Entry> {
        ix.index.changes_since("code", 0, usize::MAX).unwrap()
    }

    fn same_rows(got: &Indexer, want: &Indexer) {
        let (got, want) = (all_rows(got), all_rows(want));
        for (g, w) in got.iter().zip(&want) {
            assert_eq!(g, w, "first differing row");
        }
        assert_eq!(got.len(), want.len(), "row counts");
    }

    #[test]
    fn parallel_hashing_builds_the_same_index_as_one_thread() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        let big: Vec<u8> = (0..600_000u32).map(|i| (i % 251) as u8).collect();
        for d in 0..12 {
            let sub = root.join(format!("d{d:02}/inner"));
            std::fs::create_dir_all(&sub).unwrap();
            for f in 0..(d * 3) {
                std::fs::write(
                    sub.join(format!("f{f:02}")),
                    format!("{d}/{f}").repeat(f + 1),
                )
                .unwrap();
            }
            std::fs::write(root.join(format!("d{d:02}/big")), &big[d..]).unwrap();
        }
        std::fs::create_dir(root.join("empty")).unwrap();
        std::fs::write(root.join("becomes-dir"), "file").unwrap();
        std::os::unix::fs::symlink("d01/big", root.join("link")).unwrap();

        let (mut one, _rx1) = indexer(root, &[]);
        let (mut many, _rx2) = indexer(root, &[]);
        one.workers = Workers::new(1);
        many.workers = Workers::new(4);
        // Small batches: several transactions, each hashed by all threads at once.
        one.batch = 16;
        many.batch = 16;
        let first = one.scan_root(0, None).unwrap();
        assert!(first > 200, "{first} changes");
        assert_eq!(many.scan_root(0, None).unwrap(), first);
        same_rows(&many, &one);

        // Changes, deletions and a file replaced by a directory, scanned again by both.
        std::fs::remove_dir_all(root.join("d04")).unwrap();
        std::fs::write(root.join("d07/inner/f03"), "new content").unwrap();
        bump_mtime(&root.join("d07/inner/f03"), 3);
        std::fs::remove_file(root.join("becomes-dir")).unwrap();
        std::fs::create_dir(root.join("becomes-dir")).unwrap();
        std::fs::write(root.join("becomes-dir/child"), "c").unwrap();
        let again = one.scan_root(0, None).unwrap();
        assert_eq!(many.scan_root(0, None).unwrap(), again);
        same_rows(&many, &one);
        let rows = all_rows(&many);
        assert_eq!(hashed(&many), hashed(&one));
        // And the rows are right, not just equal: seqs in walk order, contents hashed.
        let f03 = rows.iter().find(|e| e.path == "d07/inner/f03").unwrap();
        assert_eq!(
            f03.meta.sha256.as_deref(),
            Some(zync_fs::hash_bytes(b"new content").as_str())
        );
        let big_row = rows.iter().find(|e| e.path == "d05/big").unwrap();
        assert_eq!(
            big_row.meta.sha256.as_deref(),
            Some(zync_fs::hash_bytes(&big[5..]).as_str())
        );
        let seq_of = |p: &str| rows.iter().find(|e| e.path == p).unwrap().seq;
        assert!(seq_of("becomes-dir") < seq_of("becomes-dir/child"));
        assert!(rows
            .iter()
            .filter(|e| e.path.starts_with("d04"))
            .all(|e| e.deleted));
    }

    #[test]
    fn rows_and_entries_pair_up_across_names_that_sort_around_the_separator() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        // In byte order "a b" < "a-b" < "a.txt" < "a/x" < "a0"; the walk lists "a/x" right
        // after "a", before "a-b": the pairing must not depend on either order.
        for d in ["a", "a/x", "a.d", "a.d/y"] {
            std::fs::create_dir_all(root.join(d)).unwrap();
        }
        for f in ["a b", "a-b", "a.txt", "a/x/f", "a0", "a.d/y/g", "a.d/h"] {
            std::fs::write(root.join(f), f).unwrap();
        }
        let (mut ix, _rx) = indexer(root, &[]);
        assert_eq!(ix.scan_root(0, None).unwrap(), 11);
        assert_eq!(
            ix.scan_root(0, None).unwrap(),
            0,
            "every entry found its row"
        );
        assert_eq!(hashed(&ix), 7);
        let seq = ix.index.last_seq().unwrap();
        std::fs::remove_dir_all(root.join("a/x")).unwrap();
        std::fs::remove_file(root.join("a.txt")).unwrap();
        std::fs::remove_file(root.join("a.d/y/g")).unwrap();
        assert_eq!(ix.scan_root(0, None).unwrap(), 4);
        let gone: Vec<(String, bool)> = ix
            .index
            .changes_since("code", seq, 100)
            .unwrap()
            .into_iter()
            .map(|e| (e.path, e.deleted))
            .collect();
        let want = [
            ("a.d/y/g", true),
            ("a.txt", true),
            ("a/x/f", true),
            ("a/x", true),
        ];
        let want: Vec<(String, bool)> = want.iter().map(|(p, d)| (p.to_string(), *d)).collect();
        assert_eq!(gone, want, "deletions in path order, children first");
        assert_eq!(hashed(&ix), 7, "nothing hashed for deletions");
    }

    #[test]
    fn a_row_for_a_path_that_became_the_daemons_own_is_tombstoned() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("sync.db"), "db").unwrap();
        std::fs::write(dir.path().join("real.txt"), "r").unwrap();
        let db = tempfile::tempdir().unwrap();
        let db = db.path().join("index.db");
        {
            let (mut ix, _rx) = indexer_on(Index::open(&db).unwrap(), dir.path(), &[]);
            ix.scan_root(0, None).unwrap();
            assert_eq!(live(&ix), ["real.txt", "sync.db"]);
        }
        // Restarted with its database moved to that path.
        let own = [dir.path().join("sync.db")];
        let (mut ix, _rx) = indexer_on(Index::open(&db).unwrap(), dir.path(), &own);
        assert_eq!(ix.scan_root(0, None).unwrap(), 1);
        assert_eq!(live(&ix), ["real.txt"]);
    }
}
