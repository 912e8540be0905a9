//! Watching several roots for changes (notify, inotify on Linux) and debouncing the events into
//! batches. A lost event (queue overflow, watcher error) becomes a rescan request, so the daemon
//! never misses a change (invariant 6).

use notify::event::EventKindMask;
use notify::event::{AccessKind, AccessMode, ModifyKind};
use notify::{Config, Event, EventKind, RecommendedWatcher, RecursiveMode, Watcher as _};
use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::path::{Path, PathBuf};
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender, TryRecvError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// What the watcher reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WatchEvent {
    /// Something happened at these absolute paths, all under root number `root`.
    Paths {
        /// Index into the roots given to [`Watcher::new`].
        root: usize,
        /// Absolute paths that changed (created, modified, removed or renamed).
        paths: Vec<PathBuf>,
        /// The event is the end of a `write()` into them (inotify's `IN_MODIFY`, reported
        /// once the write returned), not their creation, a close or a change of attributes: a
        /// file read while that write ran may hold part of what it wrote.
        written: bool,
    },
    /// Events were lost: rescan one root, or all of them (`None`).
    Rescan {
        /// Index of the root to rescan, or `None` for all.
        root: Option<usize>,
        /// Why, for the log.
        reason: String,
    },
    /// The cookie file of a barrier ticket ([`Watcher::plant_cookie`]) appeared in root
    /// number `root`: every event the kernel queued before it has come out too, for one
    /// inotify queue delivers in order (a barrier's ticket, in the daemon).
    Cookie {
        /// Index of the root the cookie was planted in.
        root: usize,
        /// The ticket it stands for.
        ticket: u64,
    },
    /// Root number `root` itself was removed or unmounted, and its watch with it (inotify
    /// watches an inode, and follows a root that is only moved): a directory that stands at
    /// its path again is not watched until it is watched anew.
    Unwatched {
        /// Index of the root.
        root: usize,
    },
}

/// The name prefix of barrier cookies ([`Watcher::plant_cookie`]): a temp file's, so that
/// scans, ignore rules and clients never take one for the user's.
const COOKIE_PREFIX: &str = ".zync-tmp-cookie-";

/// The cookie's name for `ticket`, in this process.
fn cookie_name(ticket: u64) -> String {
    format!("{COOKIE_PREFIX}{}-{ticket}", std::process::id())
}

/// The ticket of a cookie of this process named `name`, or `None` for any other name.
fn cookie_ticket(name: &std::ffi::OsStr) -> Option<u64> {
    let rest = name.to_str()?.strip_prefix(COOKIE_PREFIX)?;
    let (pid, ticket) = rest.split_once('-')?;
    (pid.parse() == Ok(std::process::id())).then_some(())?;
    ticket.parse().ok()
}

/// Removes the cookies left in `root` by processes that are gone (a daemon killed between
/// planting one and seeing it); returns how many. Only regular files named as cookies, at the
/// root's top level, are touched.
///
/// # Errors
///
/// When the root cannot be opened or listed.
pub fn remove_stale_cookies(root: &Path) -> Result<usize, crate::FsError> {
    let dir = crate::Dir::open_root(root)?;
    let entries = dir
        .entries()
        .map_err(|e| crate::FsError::io("list the directory", root, e))?;
    let mut removed = 0;
    for (name, kind) in entries {
        let Some(pid) = name
            .to_str()
            .and_then(|n| n.strip_prefix(COOKIE_PREFIX))
            .and_then(|rest| rest.split_once('-'))
            .and_then(|(pid, _)| pid.parse::<u32>().ok())
        else {
            continue;
        };
        let alive = pid != std::process::id() && Path::new(&format!("/proc/{pid}")).exists();
        if kind == Some(zync_proto::Kind::File) && !alive && dir.unlink(&name).is_ok() {
            removed += 1;
        }
    }
    Ok(removed)
}

/// Watches roots recursively while it lives; dropping it stops watching.
pub struct Watcher {
    inner: RecommendedWatcher,
    roots: Vec<PathBuf>,
    /// Parts of the trees the watcher reported it could not watch, not yet taken.
    blind: Arc<Mutex<Vec<String>>>,
}

impl std::fmt::Debug for Watcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Watcher")
            .field("roots", &self.roots)
            .finish_non_exhaustive()
    }
}

impl Watcher {
    /// Watches each root recursively. Events are mapped to the index of the root they fall under
    /// (to every such root, should roots nest) and sent on `tx`. Events flagged for rescan
    /// (inotify queue overflow) and watcher errors become [`WatchEvent::Rescan`]. Access events
    /// are dropped, except close-after-write, which marks the end of a write.
    ///
    /// Directories created later are watched automatically, but a file created in a new
    /// directory before its watch is in place produces no event: callers should scan a newly
    /// created directory.
    ///
    /// A directory that cannot be watched (unreadable) does not stop the others from being
    /// watched: it is reported by [`Watcher::blind_spots`], and the caller must look at the
    /// trees by other means, for the watcher will not see what changes there.
    ///
    /// # Errors
    ///
    /// The notify error when the watcher cannot start or a root cannot be watched (missing
    /// root, inotify watch limit reached).
    pub fn new(roots: &[PathBuf], tx: Sender<WatchEvent>) -> Result<Watcher, notify::Error> {
        let all: Vec<usize> = (0..roots.len()).collect();
        Watcher::new_for(roots, &all, tx)
    }

    /// Like [`Watcher::new`], but watches only the roots at the indices `watch` (the others are
    /// missing, say), while events keep the indices of `roots`.
    ///
    /// # Errors
    ///
    /// As [`Watcher::new`].
    pub fn new_for(
        roots: &[PathBuf],
        watch: &[usize],
        tx: Sender<WatchEvent>,
    ) -> Result<Watcher, notify::Error> {
        let handler_roots = roots.to_vec();
        let blind = Arc::new(Mutex::new(Vec::new()));
        let handler_blind = Arc::clone(&blind);
        let handler = move |res: notify::Result<Event>| {
            if let Err(e) = &res {
                if let Ok(mut blind) = handler_blind.lock() {
                    blind.push(e.to_string());
                }
            }
            for event in translate(&handler_roots, res) {
                // A closed receiver means the caller is shutting down.
                let _ = tx.send(event);
            }
        };
        // Changes, and the end of a write; not opens and reads: every file the daemon reads to
        // serve it (and every `grep` on E) would wake the watcher, and enough of them at once
        // overflow the kernel's queue into a full rescan.
        let kinds = EventKindMask::CORE | EventKindMask::ACCESS_CLOSE;
        let mut inner =
            RecommendedWatcher::new(handler, Config::default().with_event_kinds(kinds))?;
        for root in watch.iter().filter_map(|&i| roots.get(i)) {
            inner
                .watch(root, RecursiveMode::Recursive)
                .map_err(|e| e.add_path(root.clone()))?;
        }
        Ok(Watcher {
            inner,
            roots: roots.to_vec(),
            blind,
        })
    }

    /// What the watcher reported it could not watch since the last call (a directory it may
    /// not read, the watch limit reached for a new directory), as messages naming the paths.
    pub fn blind_spots(&self) -> Vec<String> {
        self.blind
            .lock()
            .map(|mut blind| std::mem::take(&mut *blind))
            .unwrap_or_default()
    }

    /// Returns once the watcher's thread has watched every directory whose creation it has
    /// reported. notify reports a new directory's creation as it reads the event, but watches
    /// the directory only once it has read everything the kernel had queued; a scan of the new
    /// directory made in between misses the files created after it and before the watch, for
    /// which no event ever comes. This asks the thread a question it answers between two such
    /// reads, so a scan made after it returns (and the watch's events) sees everything.
    ///
    /// # Errors
    ///
    /// When the watcher's thread is gone.
    pub fn catch_up(&mut self) -> Result<(), notify::Error> {
        self.inner.configure(Config::default()).map(drop)
    }

    /// Creates the cookie file of barrier ticket `ticket` in root number `root`. When
    /// [`WatchEvent::Cookie`] for it comes out of the channel, every event of that root the
    /// kernel queued before the cookie was created has come out too: unlike a marker put
    /// into the channel, this holds however far the watcher's thread lags behind the kernel.
    /// The caller removes it with [`Watcher::remove_cookie`].
    ///
    /// # Errors
    ///
    /// When the file cannot be created (a read-only root): the caller must look at the root
    /// some other way.
    pub fn plant_cookie(&self, root: usize, ticket: u64) -> std::io::Result<()> {
        let dir = self.root_dir(root)?;
        dir.create_new(cookie_name(ticket)).map(drop)
    }

    /// Removes the cookie of `ticket` from root number `root`; one already gone is fine.
    ///
    /// # Errors
    ///
    /// When it is there and cannot be removed.
    pub fn remove_cookie(&self, root: usize, ticket: u64) -> std::io::Result<()> {
        match self.root_dir(root)?.unlink(cookie_name(ticket)) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            other => other,
        }
    }

    fn root_dir(&self, root: usize) -> std::io::Result<crate::Dir> {
        let path = self
            .roots
            .get(root)
            .ok_or_else(|| std::io::Error::new(std::io::ErrorKind::NotFound, "no such root"))?;
        crate::Dir::open_root(path).map_err(std::io::Error::other)
    }

    /// The roots being watched, in index order.
    pub fn roots(&self) -> &[PathBuf] {
        &self.roots
    }
}

/// The indices of the roots `path` falls under.
fn roots_of<'a>(roots: &'a [PathBuf], path: &'a Path) -> impl Iterator<Item = usize> + 'a {
    roots
        .iter()
        .enumerate()
        .filter(move |(_, r)| path.starts_with(r))
        .map(|(i, _)| i)
}

/// Turns one notify callback into the events we report.
fn translate(roots: &[PathBuf], res: notify::Result<Event>) -> Vec<WatchEvent> {
    let (paths, rescan_reason) = match res {
        Err(e) => (e.paths.clone(), format!("file watcher error: {e}")),
        Ok(event) if event.need_rescan() => (
            event.paths,
            "the file system event queue overflowed".to_string(),
        ),
        Ok(event) => {
            if let EventKind::Access(kind) = event.kind {
                if kind != AccessKind::Close(AccessMode::Write) {
                    return Vec::new();
                }
            }
            let mut by_root: BTreeMap<usize, Vec<PathBuf>> = BTreeMap::new();
            let mut cookies = Vec::new();
            for path in &event.paths {
                // A cookie is the barrier's, never the user's: its creation is reported as
                // such, anything else done to it (its removal) not at all.
                if let Some(ticket) = path.file_name().and_then(cookie_ticket) {
                    let root = roots
                        .iter()
                        .position(|r| path.parent() == Some(r.as_path()));
                    if let (Some(root), EventKind::Create(_)) = (root, event.kind) {
                        cookies.push(WatchEvent::Cookie { root, ticket });
                    }
                    continue;
                }
                for root in roots_of(roots, path) {
                    by_root.entry(root).or_default().push(path.clone());
                }
            }
            let written = matches!(
                event.kind,
                EventKind::Modify(ModifyKind::Data(_) | ModifyKind::Any)
            );
            // A root's own removal (IN_DELETE_SELF) or unmount (IN_UNMOUNT).
            let unwatched: Vec<WatchEvent> = match event.kind {
                EventKind::Remove(_) => roots
                    .iter()
                    .enumerate()
                    .filter(|(_, r)| event.paths.contains(r))
                    .map(|(root, _)| WatchEvent::Unwatched { root })
                    .collect(),
                _ => Vec::new(),
            };
            return by_root
                .into_iter()
                .map(|(root, paths)| WatchEvent::Paths {
                    root,
                    paths,
                    written,
                })
                .chain(cookies)
                .chain(unwatched)
                .collect();
        }
    };
    let affected: BTreeSet<usize> = paths.iter().flat_map(|p| roots_of(roots, p)).collect();
    if affected.is_empty() {
        return vec![WatchEvent::Rescan {
            root: None,
            reason: rescan_reason,
        }];
    }
    affected
        .into_iter()
        .map(|root| WatchEvent::Rescan {
            root: Some(root),
            reason: rescan_reason.clone(),
        })
        .collect()
}

/// Debounced events: changed paths per root, and which roots need a rescan.
#[derive(Debug, Default)]
pub struct Batch {
    /// Absolute changed paths, by root index, each once, in no order (the indexer orders
    /// them; a set ordered by path compared every burst event's path component by component,
    /// a fifth of the indexer's thread in a 5,000-file burst).
    pub paths: BTreeMap<usize, HashSet<PathBuf>>,
    /// Of those, the ones a write ended in ([`WatchEvent::Paths`]'s `written`), by root.
    pub written: BTreeMap<usize, HashSet<PathBuf>>,
    /// Every root needs a rescan.
    pub rescan_all: bool,
    /// These roots need a rescan.
    pub rescan: BTreeSet<usize>,
    /// The [`WatchEvent::Cookie`]s that came out with this batch, as (root, ticket).
    pub cookies: Vec<(usize, u64)>,
    /// The roots whose watch died with them ([`WatchEvent::Unwatched`]).
    pub unwatched: BTreeSet<usize>,
    /// How many events it holds (before paths were merged).
    pub events: usize,
    /// How many times collecting it went to the channel (a wait or a drain): one per event
    /// for a save, a few per debounce period for a burst.
    pub waits: usize,
}

impl Batch {
    /// Adds one event.
    pub fn push(&mut self, event: WatchEvent) {
        self.events += 1;
        match event {
            WatchEvent::Paths {
                root,
                paths,
                written,
            } => {
                if written {
                    self.written
                        .entry(root)
                        .or_default()
                        .extend(paths.iter().cloned());
                }
                self.paths.entry(root).or_default().extend(paths)
            }
            WatchEvent::Rescan { root: None, reason } => {
                tracing::info!("rescanning all roots: {reason}");
                self.rescan_all = true;
            }
            WatchEvent::Rescan {
                root: Some(root),
                reason,
            } => {
                tracing::info!("rescanning root {root}: {reason}");
                self.rescan.insert(root);
            }
            WatchEvent::Cookie { root, ticket } => self.cookies.push((root, ticket)),
            WatchEvent::Unwatched { root } => {
                self.unwatched.insert(root);
            }
        }
    }

    /// True when the batch holds nothing.
    pub fn is_empty(&self) -> bool {
        self.paths.is_empty()
            && !self.rescan_all
            && self.rescan.is_empty()
            && self.unwatched.is_empty()
    }
}

/// Waits for the first event, then keeps collecting until no event arrived for `quiet` or `max`
/// has passed since the first. Returns `None` when the channel is disconnected and nothing is
/// pending.
pub fn next_batch(rx: &Receiver<WatchEvent>, quiet: Duration, max: Duration) -> Option<Batch> {
    let first = rx.recv().ok()?;
    Some(collect(rx, first, quiet, max))
}

/// Like [`next_batch`], but returns `Some` empty batch when nothing arrives within `idle`, so
/// the caller can check a stop flag.
pub fn next_batch_timeout(
    rx: &Receiver<WatchEvent>,
    idle: Duration,
    quiet: Duration,
    max: Duration,
) -> Option<Batch> {
    match rx.recv_timeout(idle) {
        Ok(first) => Some(collect(rx, first, quiet, max)),
        Err(RecvTimeoutError::Timeout) => Some(Batch::default()),
        Err(RecvTimeoutError::Disconnected) => None,
    }
}

/// A batch of at most this many events is a save, not a burst: it ends after
/// [`quiet_after`]'s short quiet.
const SAVE_EVENTS: usize = 4;

/// How long the batch waits for another event once it holds `events`: a few milliseconds
/// while it looks like an editor's save (a handful of events within a millisecond or two),
/// so the save goes out at once; the full `quiet` once it is a burst (a checkout, a build),
/// which then coalesces as before.
fn quiet_after(events: usize, quiet: Duration) -> Duration {
    if events <= SAVE_EVENTS {
        (quiet / 5).max(Duration::from_millis(2)).min(quiet)
    } else {
        quiet
    }
}

fn collect(rx: &Receiver<WatchEvent>, first: WatchEvent, quiet: Duration, max: Duration) -> Batch {
    let start = Instant::now();
    let hard_deadline = start + max;
    let mut batch = Batch::default();
    batch.push(first);
    batch.waits = 1;
    let mut last = start;
    // While it looks like a save, every event is taken as it comes: the batch must end a
    // short quiet after the last one.
    while batch.events <= SAVE_EVENTS {
        let deadline = (last + quiet_after(batch.events, quiet)).min(hard_deadline);
        let now = Instant::now();
        if now >= deadline {
            return batch;
        }
        batch.waits += 1;
        match rx.recv_timeout(deadline - now) {
            Ok(event) => {
                batch.push(event);
                last = Instant::now();
            }
            // Disconnected: return what we have; the next call reports the disconnection.
            Err(RecvTimeoutError::Timeout | RecvTimeoutError::Disconnected) => return batch,
        }
    }
    // A burst (a checkout, a build): waking for each of its thousands of events cost the
    // indexer and the watcher's thread (which has to wake it) more than the indexing. Sleep
    // a quiet period at a time and take whatever came meanwhile; the batch ends after a
    // period that brought nothing (so between one and two quiet periods after its last
    // event), or at `max`.
    loop {
        let now = Instant::now();
        if now >= hard_deadline {
            return batch;
        }
        std::thread::sleep(quiet.min(hard_deadline - now));
        batch.waits += 1;
        let before = batch.events;
        loop {
            match rx.try_recv() {
                Ok(event) => batch.push(event),
                Err(TryRecvError::Empty) => break,
                Err(TryRecvError::Disconnected) => return batch,
            }
        }
        if batch.events == before {
            return batch;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_save_ends_after_a_short_quiet_and_a_burst_after_the_full_one() {
        let quiet = Duration::from_millis(15);
        assert_eq!(quiet_after(1, quiet), Duration::from_millis(3));
        assert_eq!(quiet_after(SAVE_EVENTS, quiet), Duration::from_millis(3));
        assert_eq!(quiet_after(SAVE_EVENTS + 1, quiet), quiet);
        assert_eq!(
            quiet_after(1, Duration::from_millis(5)),
            Duration::from_millis(2)
        );
        assert_eq!(
            quiet_after(1, Duration::from_millis(1)),
            Duration::from_millis(1)
        );
    }

    use std::fs;
    use std::sync::mpsc::channel;

    const QUIET: Duration = Duration::from_millis(50);
    const MAX: Duration = Duration::from_millis(500);

    fn paths_event(root: usize, p: &str) -> WatchEvent {
        WatchEvent::Paths {
            root,
            paths: vec![PathBuf::from(p)],
            written: false,
        }
    }

    /// Collects batches until `done` holds for the paths seen so far, or fails after 10 s.
    fn wait_for(rx: &Receiver<WatchEvent>, root: usize, done: impl Fn(&BTreeSet<PathBuf>) -> bool) {
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut seen = BTreeSet::new();
        while !done(&seen) {
            assert!(Instant::now() < deadline, "timed out; saw only {seen:?}");
            let batch = next_batch_timeout(rx, Duration::from_millis(100), QUIET, MAX)
                .expect("watcher channel closed");
            for (r, paths) in batch.paths {
                assert_eq!(r, root, "event mapped to the wrong root: {paths:?}");
                seen.extend(paths);
            }
        }
    }

    /// Discards events until the watcher has been quiet for 200 ms, so that a later wait cannot
    /// be satisfied by leftovers of an earlier change.
    fn drain(rx: &Receiver<WatchEvent>) {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let batch = next_batch_timeout(rx, Duration::from_millis(200), QUIET, MAX)
                .expect("watcher channel closed");
            if batch.is_empty() {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "watcher never went quiet: {batch:?}"
            );
        }
    }

    #[test]
    fn file_changes_arrive_as_batches() {
        let a = tempfile::tempdir().expect("tempdir");
        let b = tempfile::tempdir().expect("tempdir");
        let roots = vec![
            a.path().canonicalize().expect("canonicalize"),
            b.path().canonicalize().expect("canonicalize"),
        ];
        let (tx, rx) = channel();
        let watcher = Watcher::new(&roots, tx).expect("watcher");
        assert_eq!(watcher.roots(), roots.as_slice());
        let dir = &roots[1];

        let f = dir.join("created.txt");
        fs::write(&f, b"one").expect("write");
        wait_for(&rx, 1, |seen| seen.contains(&f));
        drain(&rx);

        fs::write(&f, b"two").expect("modify");
        wait_for(&rx, 1, |seen| seen.contains(&f));
        drain(&rx);

        let g = dir.join("renamed.txt");
        fs::rename(&f, &g).expect("rename");
        wait_for(&rx, 1, |seen| seen.contains(&f) && seen.contains(&g));

        drop(watcher);
        let deadline = Instant::now() + Duration::from_secs(10);
        while next_batch_timeout(&rx, Duration::from_millis(50), QUIET, MAX).is_some() {
            assert!(
                Instant::now() < deadline,
                "channel not closed after the watcher was dropped"
            );
        }
    }

    #[test]
    fn an_unreadable_directory_is_a_blind_spot_and_the_rest_is_watched() {
        use std::os::unix::fs::PermissionsExt;
        let tmp = tempfile::tempdir().expect("tempdir");
        let root = tmp.path().to_path_buf();
        fs::create_dir_all(root.join("locked/inner")).expect("mkdir");
        fs::create_dir(root.join("open")).expect("mkdir");
        fs::set_permissions(root.join("locked"), fs::Permissions::from_mode(0o000)).expect("chmod");
        // Root reads every directory anyway: only then is nothing blind.
        let readable = fs::read_dir(root.join("locked")).is_ok();
        let (tx, rx) = channel();
        let watcher = Watcher::new(std::slice::from_ref(&root), tx).expect("watcher");
        let blind = watcher.blind_spots();
        if readable {
            assert!(blind.is_empty(), "{blind:?}");
        } else {
            assert!(
                blind.iter().any(|b| b.contains("locked")),
                "the unreadable directory is not reported: {blind:?}"
            );
        }
        assert!(watcher.blind_spots().is_empty(), "reported twice");
        let f = root.join("open/new.txt");
        fs::write(&f, b"x").expect("write");
        wait_for(&rx, 0, |seen| seen.contains(&f));
        fs::set_permissions(root.join("locked"), fs::Permissions::from_mode(0o755)).expect("chmod");
    }

    #[test]
    fn missing_root_is_an_error() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let (tx, _rx) = channel();
        assert!(Watcher::new(&[tmp.path().join("missing")], tx).is_err());
    }

    #[test]
    fn translate_maps_roots_and_drops_reads() {
        let roots = vec![
            PathBuf::from("/r0"),
            PathBuf::from("/r1"),
            PathBuf::from("/r1/inner"),
        ];
        let ev = Event::new(EventKind::Create(notify::event::CreateKind::File))
            .add_path("/r1/inner/x".into())
            .add_path("/r0/y".into())
            .add_path("/elsewhere".into());
        assert_eq!(
            translate(&roots, Ok(ev)),
            vec![
                paths_event(0, "/r0/y"),
                paths_event(1, "/r1/inner/x"),
                paths_event(2, "/r1/inner/x"),
            ]
        );
        let read = Event::new(EventKind::Access(AccessKind::Open(AccessMode::Any)))
            .add_path("/r0/a".into());
        assert!(translate(&roots, Ok(read)).is_empty());
        let nowrite = Event::new(EventKind::Access(AccessKind::Close(AccessMode::Read)))
            .add_path("/r0/a".into());
        assert!(translate(&roots, Ok(nowrite)).is_empty());
        let write = Event::new(EventKind::Access(AccessKind::Close(AccessMode::Write)))
            .add_path("/r0/a".into());
        assert_eq!(translate(&roots, Ok(write)), vec![paths_event(0, "/r0/a")]);
    }

    /// A root's own removal or unmount says its watch died; its move, or a removal below it,
    /// does not.
    #[test]
    fn a_root_removed_or_unmounted_is_unwatched_and_one_moved_is_not() {
        use notify::event::{ModifyKind, RemoveKind, RenameMode};
        let roots = vec![PathBuf::from("/r0"), PathBuf::from("/r1")];
        let batch = |kind: EventKind, path: &str| {
            let mut batch = Batch::default();
            for event in translate(&roots, Ok(Event::new(kind).add_path(path.into()))) {
                batch.push(event);
            }
            assert!(batch.paths.contains_key(&1), "{batch:?}");
            batch.unwatched
        };
        let unwatched = BTreeSet::from([1]);
        assert_eq!(
            batch(EventKind::Remove(RemoveKind::Folder), "/r1"),
            unwatched
        );
        assert_eq!(
            batch(EventKind::Remove(RemoveKind::Other), "/r1"),
            unwatched
        );
        assert!(batch(EventKind::Remove(RemoveKind::Folder), "/r1/d").is_empty());
        assert!(batch(EventKind::Modify(ModifyKind::Name(RenameMode::From)), "/r1").is_empty());
    }

    #[test]
    fn the_end_of_a_write_is_told_from_a_close_a_creation_and_attributes() {
        use notify::event::{CreateKind, DataChange, MetadataKind};
        let roots = vec![PathBuf::from("/r")];
        let written = |kind: EventKind| {
            let ev = Event::new(kind).add_path("/r/a".into());
            let mut batch = Batch::default();
            for event in translate(&roots, Ok(ev)) {
                batch.push(event);
            }
            assert!(batch.paths[&0].contains(Path::new("/r/a")), "{batch:?}");
            batch
                .written
                .get(&0)
                .is_some_and(|w| w.contains(Path::new("/r/a")))
        };
        assert!(written(EventKind::Modify(ModifyKind::Data(
            DataChange::Any
        ))));
        assert!(written(EventKind::Modify(ModifyKind::Any)));
        assert!(!written(EventKind::Access(AccessKind::Close(
            AccessMode::Write
        ))));
        assert!(!written(EventKind::Create(CreateKind::File)));
        assert!(!written(EventKind::Modify(ModifyKind::Metadata(
            MetadataKind::Any
        ))));
    }

    /// A real write reported by the watcher comes marked as one; a close after it does not
    /// take the mark away.
    #[test]
    fn a_write_seen_by_the_watcher_is_marked_as_written() {
        let dir = tempfile::tempdir().expect("tempdir");
        let roots = vec![dir.path().canonicalize().expect("canonicalize")];
        let f = roots[0].join("f");
        fs::write(&f, b"before").expect("write");
        let (tx, rx) = channel();
        let _watcher = Watcher::new(&roots, tx).expect("watcher");
        {
            use std::io::Write;
            let mut file = fs::File::options().write(true).open(&f).expect("open");
            file.write_all(b"after!").expect("write");
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            assert!(Instant::now() < deadline, "no write reported for {f:?}");
            let batch = next_batch_timeout(&rx, Duration::from_millis(100), QUIET, MAX)
                .expect("watcher channel closed");
            if batch.written.get(&0).is_some_and(|w| w.contains(&f)) {
                break;
            }
        }
    }

    #[test]
    fn translate_reports_this_processs_cookies_in_a_root_and_nothing_else_of_them() {
        let roots = vec![PathBuf::from("/r0"), PathBuf::from("/r0/inner")];
        let mine = cookie_name(7);
        let create = |p: String| {
            Event::new(EventKind::Create(notify::event::CreateKind::File)).add_path(p.into())
        };
        assert_eq!(
            translate(&roots, Ok(create(format!("/r0/inner/{mine}")))),
            vec![WatchEvent::Cookie { root: 1, ticket: 7 }],
            "the cookie belongs to the root it is in, not to the one around it"
        );
        let removed = Event::new(EventKind::Remove(notify::event::RemoveKind::File))
            .add_path(format!("/r0/{mine}").into());
        assert!(translate(&roots, Ok(removed)).is_empty());
        assert!(translate(&roots, Ok(create(format!("/r0/sub/{mine}")))).is_empty());
        // Another process's cookie is only a temp file, left to the ignore rules.
        let theirs = format!("{COOKIE_PREFIX}{}-7", std::process::id() + 1);
        assert_eq!(
            translate(&roots, Ok(create(format!("/r0/{theirs}")))),
            vec![paths_event(0, &format!("/r0/{theirs}"))]
        );
        assert!(
            mine.starts_with(crate::TEMP_PREFIX),
            "always ignored: {mine}"
        );
    }

    #[test]
    fn a_cookie_comes_out_behind_every_event_queued_before_it() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let root = tmp.path().canonicalize().expect("canonicalize");
        let (tx, rx) = channel();
        let watcher = Watcher::new(std::slice::from_ref(&root), tx).expect("watcher");
        let files: Vec<PathBuf> = (0..200).map(|i| root.join(format!("f{i}"))).collect();
        for f in &files {
            fs::write(f, b"x").expect("write");
        }
        watcher.plant_cookie(0, 9).expect("cookie");
        let mut seen = BTreeSet::new();
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            assert!(Instant::now() < deadline, "no cookie; saw {}", seen.len());
            let batch = next_batch_timeout(&rx, Duration::from_millis(100), QUIET, MAX)
                .expect("watcher channel closed");
            seen.extend(batch.paths.into_values().flatten());
            if batch.cookies.contains(&(0, 9)) {
                break;
            }
        }
        let missing = files.iter().filter(|f| !seen.contains(*f)).count();
        assert_eq!(missing, 0, "the cookie overtook {missing} file(s)");
        assert!(seen
            .iter()
            .all(|p| !p.to_string_lossy().contains(COOKIE_PREFIX)));
        watcher.remove_cookie(0, 9).expect("remove");
        watcher
            .remove_cookie(0, 9)
            .expect("removing it twice is fine");
        assert!(!root.join(cookie_name(9)).exists());
        let err = watcher.plant_cookie(3, 1).expect_err("no root 3");
        assert_eq!(err.kind(), std::io::ErrorKind::NotFound);
    }

    #[test]
    fn stale_cookies_of_gone_processes_are_removed_and_nothing_else() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let root = tmp.path();
        let gone = format!("{COOKIE_PREFIX}999999999-3");
        let live = format!("{COOKIE_PREFIX}1-3");
        for name in [gone.as_str(), &cookie_name(4), &live, "keep.txt"] {
            fs::write(root.join(name), b"").expect("write");
        }
        let dir_named = format!("{COOKIE_PREFIX}999999998-3");
        fs::create_dir(root.join(&dir_named)).expect("mkdir");
        assert_eq!(remove_stale_cookies(root).expect("remove"), 2);
        let mut left: Vec<String> = fs::read_dir(root)
            .expect("read_dir")
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .collect();
        left.sort();
        let mut want = vec![dir_named, live, "keep.txt".to_string()];
        want.sort();
        assert_eq!(left, want);
    }

    #[test]
    fn translate_turns_overflow_and_errors_into_rescans() {
        let roots = vec![PathBuf::from("/r0"), PathBuf::from("/r1")];
        let overflow = Event::new(EventKind::Other).set_flag(notify::event::Flag::Rescan);
        assert!(matches!(
            translate(&roots, Ok(overflow)).as_slice(),
            [WatchEvent::Rescan { root: None, .. }]
        ));
        let err = notify::Error::generic("boom").add_path("/r1/x".into());
        match translate(&roots, Err(err)).as_slice() {
            [WatchEvent::Rescan {
                root: Some(1),
                reason,
            }] => assert!(reason.contains("boom")),
            other => panic!("expected a rescan of root 1, got {other:?}"),
        }
        let err = notify::Error::generic("no path");
        assert!(matches!(
            translate(&roots, Err(err)).as_slice(),
            [WatchEvent::Rescan { root: None, .. }]
        ));
    }

    #[test]
    fn pending_events_are_merged_then_disconnect_is_reported() {
        let (tx, rx) = channel();
        tx.send(paths_event(0, "/a")).expect("send");
        tx.send(paths_event(0, "/a")).expect("send");
        tx.send(paths_event(2, "/b")).expect("send");
        tx.send(WatchEvent::Rescan {
            root: Some(1),
            reason: "test".into(),
        })
        .expect("send");
        drop(tx);
        let batch = next_batch(&rx, QUIET, MAX).expect("a batch");
        assert_eq!(batch.paths.len(), 2);
        assert_eq!(batch.paths[&0], HashSet::from([PathBuf::from("/a")]));
        assert_eq!(batch.rescan, BTreeSet::from([1]));
        assert!(!batch.rescan_all);
        assert!(next_batch(&rx, QUIET, MAX).is_none());
        assert!(next_batch_timeout(&rx, QUIET, QUIET, MAX).is_none());
    }

    #[test]
    fn a_burst_is_taken_a_quiet_period_at_a_time_not_an_event_at_a_time() {
        let (tx, rx) = channel();
        for i in 0..1000 {
            tx.send(paths_event(0, &format!("/f{i}"))).expect("send");
        }
        let batch = next_batch(&rx, QUIET, MAX).expect("a batch");
        assert_eq!(batch.events, 1000);
        assert_eq!(batch.paths[&0].len(), 1000, "every event is in the batch");
        // One wait per event of a save, then one per quiet period, bounded by MAX.
        let most = SAVE_EVENTS + 2 + (MAX.as_millis() / QUIET.as_millis()) as usize;
        assert!(
            batch.waits <= most,
            "1000 events took {} waits (at most {most} expected)",
            batch.waits
        );
        // The sender is still there: the batch ended because the burst went quiet.
        tx.send(paths_event(0, "/later")).expect("send");
        let batch = next_batch(&rx, QUIET, MAX).expect("a batch");
        assert_eq!((batch.events, batch.waits), (1, 2), "a save: {batch:?}");
    }

    #[test]
    fn idle_timeout_gives_an_empty_batch() {
        let (tx, rx) = channel::<WatchEvent>();
        let start = Instant::now();
        let batch = next_batch_timeout(&rx, Duration::from_millis(30), QUIET, MAX).expect("some");
        assert!(batch.is_empty(), "{batch:?}");
        assert!(start.elapsed() >= Duration::from_millis(30));
        tx.send(WatchEvent::Rescan {
            root: None,
            reason: "t".into(),
        })
        .expect("send");
        let batch = next_batch_timeout(&rx, Duration::from_secs(5), QUIET, MAX).expect("some");
        assert!(batch.rescan_all && !batch.is_empty());
    }

    #[test]
    fn max_bounds_a_steady_stream() {
        let (tx, rx) = channel();
        let sender = std::thread::spawn(move || {
            // 10 s of events unless the receiver goes away first.
            for i in 0..1000 {
                if tx.send(paths_event(0, &format!("/f{i}"))).is_err() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(10));
            }
        });
        let start = Instant::now();
        let batch = next_batch(&rx, Duration::from_millis(200), Duration::from_millis(300))
            .expect("a batch");
        let took = start.elapsed();
        drop(rx);
        sender.join().expect("sender thread");
        assert!(took < Duration::from_secs(2), "max ignored: took {took:?}");
        assert!(
            batch.paths[&0].len() > 5,
            "too few events merged: {batch:?}"
        );
    }
}
