//! The indexer: keeps the index equal to the disk. A startup scan finds what changed while the
//! daemon was down (DESIGN invariant 6), then the watcher's debounced batches are reconciled
//! path by path; an overflow or watcher error triggers a rescan of the root.

use std::collections::{HashMap, HashSet};
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::watch;
use zync_db::{EntryMeta, Index, Kind};
use zync_fs::{EntryKind, IgnoreRules, Meta, RelPath, Stat};

use crate::cli::Root;

/// Quiet time that ends a burst of watch events.
const DEBOUNCE_QUIET: Duration = Duration::from_millis(15);
/// The longest a burst is held back.
const DEBOUNCE_MAX: Duration = Duration::from_millis(150);
/// How often the thread checks its stop flag when idle.
const IDLE_TICK: Duration = Duration::from_millis(200);
/// Changes per transaction during a scan; clients see progress between them.
const SCAN_BATCH: usize = 1000;
/// Without a working watcher, every root is rescanned this often.
const POLL_RESCAN: Duration = Duration::from_secs(10);
/// A file modified less than this long before it was hashed may be written again within the
/// same mtime tick; it is hashed once more later ("racy git").
const RACY: Duration = Duration::from_secs(2);

/// Paths the daemon writes itself (its database, token file and staging area): never indexed,
/// even when they sit inside a served directory.
#[derive(Debug, Clone, Default)]
pub struct OwnPaths {
    /// Exact files.
    pub files: HashSet<PathBuf>,
    /// Directories whose whole contents are the daemon's.
    pub dirs: Vec<PathBuf>,
}

impl OwnPaths {
    /// Whether `path` (absolute, canonical root prefix) is one of the daemon's own.
    pub fn contains(&self, path: &std::path::Path) -> bool {
        self.files.contains(path) || self.dirs.iter().any(|d| path.starts_with(d))
    }
}

/// What the indexer publishes to connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Status {
    /// Highest sequence number recorded.
    pub last_seq: u64,
    /// True while a scan is running.
    pub scanning: bool,
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
}

impl Indexer {
    /// Opens the index for writing.
    ///
    /// # Errors
    /// When the database cannot be opened.
    pub fn new(
        index: Index,
        roots: Vec<IndexedRoot>,
        own: OwnPaths,
        status: watch::Sender<Status>,
    ) -> Indexer {
        Indexer {
            index,
            roots,
            own,
            status,
            recheck: Vec::new(),
        }
    }

    /// Scans every root, then follows the watcher until `stop` is set. Without a working
    /// watcher (an unreadable directory, the inotify watch limit) it falls back to periodic
    /// rescans instead of going blind.
    ///
    /// # Errors
    /// When the index cannot be written.
    pub fn run(mut self, stop: Arc<AtomicBool>) -> anyhow::Result<()> {
        let (tx, rx) = std::sync::mpsc::channel();
        let paths: Vec<PathBuf> = self.roots.iter().map(|r| r.root.path.clone()).collect();
        // The watcher starts before the scan, so nothing that changes during the scan is missed.
        let mut watcher = match zync_fs::Watcher::new(&paths, tx) {
            Ok(w) => Some(w),
            Err(e) => {
                tracing::warn!(
                    "cannot watch the directories ({e}); rescanning every {}s instead. Fix: make \
                     every directory readable by the daemon's user, or raise the inotify limit \
                     (sudo sysctl fs.inotify.max_user_watches=524288), then restart",
                    POLL_RESCAN.as_secs()
                );
                None
            }
        };
        self.publish(true)?;
        for i in 0..self.roots.len() {
            self.scan_root(i, None)?;
        }
        self.publish(false)?;
        tracing::info!(
            last_seq = self.status.borrow().last_seq,
            "startup scan complete"
        );
        let mut last_poll = Instant::now();
        while !stop.load(Ordering::Relaxed) {
            if watcher.is_none() {
                std::thread::sleep(IDLE_TICK);
                if last_poll.elapsed() >= POLL_RESCAN {
                    self.rescan((0..self.roots.len()).collect())?;
                    last_poll = Instant::now();
                }
                self.recheck_due()?;
                continue;
            }
            let Some(batch) =
                zync_fs::next_batch_timeout(&rx, IDLE_TICK, DEBOUNCE_QUIET, DEBOUNCE_MAX)
            else {
                tracing::warn!("the file watcher stopped; rescanning periodically instead");
                watcher = None;
                continue;
            };
            let rescan: Vec<usize> = if batch.rescan_all {
                (0..self.roots.len()).collect()
            } else {
                batch.rescan.iter().copied().collect()
            };
            self.rescan(rescan.clone())?;
            for (i, paths) in batch.paths {
                if rescan.contains(&i) {
                    continue;
                }
                self.reconcile_paths(i, paths.into_iter().collect())?;
            }
            self.recheck_due()?;
            self.publish(false)?;
        }
        Ok(())
    }

    fn rescan(&mut self, roots: Vec<usize>) -> anyhow::Result<()> {
        if roots.is_empty() {
            return Ok(());
        }
        self.publish(true)?;
        for i in roots {
            tracing::info!(dir = %self.roots[i].root.name, "rescanning");
            self.scan_root(i, None)?;
        }
        self.publish(false)
    }

    /// Hashes again the files that were fresh when hashed; records them if the content moved
    /// although size, mtime and inode did not.
    fn recheck_due(&mut self) -> anyhow::Result<()> {
        let now = Instant::now();
        let (due, later): (Vec<_>, Vec<_>) = std::mem::take(&mut self.recheck)
            .into_iter()
            .partition(|(_, _, at)| *at <= now);
        self.recheck = later;
        for (i, rel, _) in due {
            let name = self.roots[i].root.name.as_str().to_string();
            let root_path = self.roots[i].root.path.clone();
            let Some(old) = self.index.get(&name, rel.as_str())?.filter(|e| !e.deleted) else {
                continue;
            };
            let Ok(Stat::Entry(meta)) = zync_fs::lstat(&rel.to_path(&root_path)) else {
                continue;
            };
            if meta.kind != EntryKind::File {
                continue;
            }
            let Some((new, racy)) = describe(&root_path, &rel, &meta) else {
                continue;
            };
            if racy {
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
        let last_seq = self.index.last_seq()?;
        self.status.send_if_modified(|s| {
            let new = Status { last_seq, scanning };
            let changed = *s != new;
            *s = new;
            changed
        });
        Ok(())
    }

    /// Brings the index in line with the disk for a whole root, or the subtree `under`.
    /// Unchanged files are recognised by kind, size, mtime, inode and mode without hashing.
    pub fn scan_root(&mut self, i: usize, under: Option<&RelPath>) -> anyhow::Result<usize> {
        let root = &self.roots[i];
        let name = root.root.name.as_str().to_string();
        let root_path = root.root.path.clone();
        if !root_path.is_dir() {
            // An unmounted disk or a deleted root must not become "delete everything on R".
            tracing::error!(dir = %name, path = %root_path.display(), "directory is gone; not recording deletions until it is back");
            return Ok(0);
        }
        // An unmounted disk leaves an empty mount point that looks exactly like "everything
        // was deleted"; the root's device id tells them apart.
        let dev_key = format!("root_dev:{name}");
        let dev = std::fs::metadata(&root_path)
            .map(|m| m.dev().to_string())
            .ok();
        let stored = self.index.setting(&dev_key)?;
        let moved = matches!((&stored, &dev), (Some(s), Some(d)) if s != d);
        let result = zync_fs::scan(&root_path, &root.rules, under);
        let mut known: HashMap<String, zync_db::Entry> = self
            .index
            .live_entries(&name, under.map(RelPath::as_str))?
            .into_iter()
            .map(|e| (e.path.clone(), e))
            .collect();
        let mut changed = 0usize;
        let mut writer = self.index.writer()?;
        for entry in &result.entries {
            if self.own.contains(&entry.path.to_path(&root_path)) {
                continue;
            }
            let old = known.remove(entry.path.as_str());
            if old
                .as_ref()
                .is_some_and(|o| unchanged(&o.meta, &entry.meta))
            {
                continue;
            }
            let Some((meta, racy)) = describe(&root_path, &entry.path, &entry.meta) else {
                continue;
            };
            if racy {
                self.recheck
                    .push((i, entry.path.clone(), Instant::now() + RACY));
            }
            if old
                .as_ref()
                .is_some_and(|o| o.meta.kind == Kind::Dir && meta.kind != Kind::Dir)
            {
                writer.tombstone_tree(&name, entry.path.as_str())?;
            }
            writer.upsert(&name, entry.path.as_str(), &meta)?;
            changed += 1;
            if changed % SCAN_BATCH == 0 {
                writer.commit()?;
                self.publish(true)?;
                writer = self.index.writer()?;
            }
        }
        for error in &result.errors {
            tracing::warn!(dir = %name, "{error}; deletions below it are not recorded until it can be read");
        }
        if moved && !known.is_empty() {
            tracing::error!(
                dir = %name,
                path = %root_path.display(),
                "this directory is now on another filesystem (device {} instead of {}): is a disk \
                 unmounted? {} indexed paths are missing and are NOT recorded as deleted; if the \
                 change is intended, delete the daemon's database to index afresh",
                dev.as_deref().unwrap_or("?"),
                stored.as_deref().unwrap_or("?"),
                known.len()
            );
        } else {
            for path in known.keys() {
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
        Ok(changed)
    }

    /// Reconciles the paths of one watch batch, shallowest first so parents precede children.
    fn reconcile_paths(&mut self, i: usize, paths: Vec<PathBuf>) -> anyhow::Result<()> {
        let root_path = self.roots[i].root.path.clone();
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
        rels.sort_by_key(|r| (r.depth(), r.clone()));
        rels.dedup();
        for rel in rels {
            self.reconcile(i, &rel)?;
        }
        Ok(())
    }

    /// Records the current state of one path: gone (tombstones for it and everything below),
    /// a new directory (scanned whole, since its contents may predate the watch), or an entry.
    fn reconcile(&mut self, i: usize, rel: &RelPath) -> anyhow::Result<()> {
        let root = &self.roots[i];
        let name = root.root.name.as_str().to_string();
        let root_path = root.root.path.clone();
        let stat = match zync_fs::lstat(&rel.to_path(&root_path)) {
            Ok(stat) => stat,
            Err(e) => {
                // One unreadable path must not stop the daemon; the next rescan retries it.
                tracing::warn!(dir = %name, path = %rel, "cannot inspect: {e}");
                return Ok(());
            }
        };
        let meta = match stat {
            Stat::Missing => return self.forget(&name, rel),
            Stat::Unsupported(what) => {
                tracing::debug!(path = %rel, "skipped: {what}");
                return self.forget(&name, rel);
            }
            Stat::Entry(meta) => meta,
        };
        if root.rules.is_ignored(rel, meta.kind == EntryKind::Dir) {
            return Ok(());
        }
        // A parent the index does not know yet (created and filled between two batches):
        // scan from the highest unknown ancestor.
        for ancestor in rel.ancestors() {
            let known = self.index.get(&name, ancestor.as_str())?;
            if !known.is_some_and(|e| !e.deleted && e.meta.kind == Kind::Dir) {
                self.scan_root(i, Some(&ancestor))?;
                return Ok(());
            }
        }
        let old = self.index.get(&name, rel.as_str())?.filter(|e| !e.deleted);
        if meta.kind == EntryKind::Dir && !old.as_ref().is_some_and(|o| o.meta.kind == Kind::Dir) {
            self.scan_root(i, Some(rel))?;
            return Ok(());
        }
        if old.as_ref().is_some_and(|o| unchanged(&o.meta, &meta)) {
            return Ok(());
        }
        let Some((new, racy)) = describe(&root_path, rel, &meta) else {
            return Ok(());
        };
        if racy {
            self.recheck.push((i, rel.clone(), Instant::now() + RACY));
        }
        let mut writer = self.index.writer()?;
        if old.as_ref().is_some_and(|o| o.meta.kind == Kind::Dir) {
            writer.tombstone_tree(&name, rel.as_str())?;
        }
        writer.upsert(&name, rel.as_str(), &new)?;
        writer.commit()?;
        Ok(())
    }

    fn forget(&mut self, name: &str, rel: &RelPath) -> anyhow::Result<()> {
        let mut writer = self.index.writer()?;
        writer.tombstone_tree(name, rel.as_str())?;
        writer.commit()?;
        Ok(())
    }
}

/// Same kind, size, mtime, inode, mode and link target: the content is taken as unchanged.
/// A directory's mtime, size and inode move whenever a child comes or goes; only its mode is
/// synced, so only its mode counts (else every new file would also re-send its directory).
fn unchanged(old: &EntryMeta, new: &Meta) -> bool {
    if new.kind == EntryKind::Dir {
        return old.kind == Kind::Dir && old.mode == new.mode;
    }
    old.kind == kind_of(new.kind)
        && old.size == new.size
        && old.mtime_ns == new.mtime_ns
        && old.inode == new.inode
        && old.mode == new.mode
        && old.target == new.target
}

fn kind_of(kind: EntryKind) -> Kind {
    match kind {
        EntryKind::File => Kind::File,
        EntryKind::Dir => Kind::Dir,
        EntryKind::Symlink => Kind::Symlink,
    }
}

/// The index row for an entry, hashing files. A file that changes while it is hashed is
/// skipped: its next watch event records the settled version.
/// The flag says the file was modified less than [`RACY`] before it was hashed: a write in the
/// same mtime tick would go unnoticed, so the caller hashes it again later.
fn describe(root: &std::path::Path, rel: &RelPath, meta: &Meta) -> Option<(EntryMeta, bool)> {
    let now_ns = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(i64::MAX, |d| {
            i64::try_from(d.as_nanos()).unwrap_or(i64::MAX)
        });
    let racy = meta.kind == EntryKind::File
        && now_ns.saturating_sub(meta.mtime_ns) < RACY.as_nanos() as i64;
    let sha256 = if meta.kind == EntryKind::File {
        let path = rel.to_path(root);
        match zync_fs::hash_file(&path) {
            Ok((sha, size)) => {
                let after = zync_fs::lstat(&path).ok();
                let settled = size == meta.size
                    && matches!(&after, Some(Stat::Entry(m)) if m.mtime_ns == meta.mtime_ns && m.size == meta.size);
                if !settled {
                    tracing::debug!(path = %rel, "changed while hashing; waiting for it to settle");
                    return None;
                }
                Some(sha)
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return None,
            Err(e) => {
                tracing::warn!(path = %path.display(), "cannot read: {e}");
                return None;
            }
        }
    } else {
        None
    };
    let entry = EntryMeta {
        kind: kind_of(meta.kind),
        size: meta.size,
        mtime_ns: meta.mtime_ns,
        mode: meta.mode,
        inode: meta.inode,
        sha256,
        target: meta.target.clone(),
    };
    Some((entry, racy))
}

#[cfg(test)]
mod tests {
    use std::io::Write;
    use std::path::Path;

    use zync_fs::DirName;

    use super::*;

    fn indexer(root: &Path, own: &[PathBuf]) -> (Indexer, watch::Receiver<Status>) {
        let own = OwnPaths {
            files: own.iter().cloned().collect(),
            dirs: Vec::new(),
        };
        let rules = Arc::new(IgnoreRules::new(root, &[], true).unwrap());
        let root = Root {
            name: DirName::parse("code").unwrap(),
            path: root.to_path_buf(),
        };
        let (tx, rx) = watch::channel(Status::default());
        let index = Index::open_in_memory().unwrap();
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
        // On the same filesystem an emptied root is a real deletion.
        let (mut ix, _rx) = indexer(dir.path(), &[]);
        std::fs::write(dir.path().join("again"), "a").unwrap();
        ix.scan_root(0, None).unwrap();
        std::fs::remove_file(dir.path().join("again")).unwrap();
        assert_eq!(ix.scan_root(0, None).unwrap(), 1);
        assert!(live(&ix).is_empty());
    }

    #[test]
    fn a_fresh_file_rewritten_within_its_mtime_tick_is_hashed_again() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        std::fs::write(&path, "aaaa").unwrap();
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
        assert!(live(&ix).is_empty(), "{:?}", live(&ix));
        let ignored = dir.path().join("x.pyc");
        std::fs::write(&ignored, "i").unwrap();
        ix.reconcile_paths(0, vec![ignored]).unwrap();
        assert!(live(&ix).is_empty(), "ignored files must not be indexed");
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
}
