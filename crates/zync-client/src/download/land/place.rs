//! [`Place`]: one synced directory on R and every change zync makes in it other than writing a
//! temp file's content: conflict copies, removals, renames into place. The raw `std::fs`
//! mutations of the client (rename, remove_file, remove_dir) are all in this file. The sync
//! (on the receiving thread) and the renames of its batches (on a blocking thread, after the
//! flush) each keep a `Place` of their own: the directories they touched and the conflict
//! copies they made.

use std::collections::BTreeSet;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use zync_fs::{IfUnchanged, Parents, RelPath, Stat};

use crate::download::land::file::Ready;
use crate::error::ClientError;
use crate::ledger::Record;

/// One synced directory on R, and what was changed in it.
pub struct Place {
    /// Shared with every file planned into it ([`Pending`](super::file::Pending)).
    root: Arc<Path>,
    dir: String,
    /// Names this run's conflict copies.
    stamp: String,
    /// Directories whose entries changed: made durable by the next flush.
    touched: BTreeSet<PathBuf>,
    /// The parent (relative, "" for the root) of the last entry touched, which is in
    /// `touched`: the files of one directory come one after another, and each path compared
    /// in the set cost more than a file's record in the database (docs/PROFILE.md).
    last_parent: Option<String>,
    /// Files recorded as synced where they stand (R already had E's content, maybe not yet
    /// on disk; modes and times set on them): flushed by the next flush, before the record.
    in_place: Vec<RelPath>,
    /// Conflict copies made, as paths relative to the root.
    conflicts: Vec<String>,
    /// What the renames brought in.
    tally: Tally,
}

/// What the renames into one [`Place`] brought in.
#[derive(Debug, Default, Clone, Copy)]
pub struct Tally {
    /// Files downloaded.
    pub downloaded: usize,
    /// Bytes downloaded.
    pub bytes: u64,
    /// Files whose content was copied from another file on R instead of downloaded.
    pub copied: usize,
}

impl Place {
    /// The place for `root`, served by the daemon as `dir`.
    pub fn new(root: &Path, dir: &str) -> Place {
        Place {
            root: Arc::from(root),
            dir: dir.to_string(),
            stamp: chrono::Local::now().format("%Y%m%dT%H%M%S").to_string(),
            touched: BTreeSet::new(),
            last_parent: None,
            in_place: Vec::new(),
            conflicts: Vec::new(),
            tally: Tally::default(),
        }
    }

    /// Another view of the same root, with nothing touched yet (the same conflict stamp): the
    /// one batches rename files into.
    pub fn sibling(&self) -> Place {
        Place {
            root: Arc::clone(&self.root),
            stamp: self.stamp.clone(),
            ..Place::new(&self.root, &self.dir)
        }
    }

    /// The synced directory.
    pub fn root(&self) -> &Arc<Path> {
        &self.root
    }

    /// The daemon's name for it.
    pub fn dir(&self) -> &str {
        &self.dir
    }

    /// Notes that the entry `rel` changed: its directory is flushed before it is recorded.
    pub fn touch(&mut self, rel: &RelPath) {
        let parent = rel
            .as_str()
            .rsplit_once('/')
            .map_or("", |(parent, _)| parent);
        if self.last_parent.as_deref() == Some(parent) {
            return;
        }
        self.touched.insert(if parent.is_empty() {
            self.root.to_path_buf()
        } else {
            self.root.join(parent)
        });
        self.last_parent = Some(parent.to_string());
    }

    /// Notes that the directory `rel` itself changed (its mode): flushed before it is
    /// recorded.
    pub fn touch_dir(&mut self, rel: &RelPath) {
        self.touched.insert(rel.to_path(&self.root));
    }

    /// Notes that the file `rel` is recorded as synced as it stands: it, and its entry in its
    /// directory, are flushed before the record (invariant 2).
    pub fn keep_in_place(&mut self, rel: &RelPath) {
        self.in_place.push(rel.clone());
        self.touch(rel);
    }

    /// Moves R's version aside as a conflict copy (invariant 4 (docs/ARCHITECTURE.md)) and
    /// says so.
    ///
    /// # Errors
    /// When it cannot be renamed.
    pub fn keep_local(&mut self, rel: &RelPath, why: &str) -> Result<(), ClientError> {
        // Never over an earlier copy of the same stamp (zync_fs::keep_as_conflict_copy).
        let copy = zync_fs::keep_as_conflict_copy(&self.root, rel, &self.stamp).map_err(|e| {
            ClientError::Io {
                what: "keep a conflict copy of",
                path: rel.to_path(&self.root).display().to_string(),
                source: into_io(e),
            }
        })?;
        tracing::warn!(dir = self.dir, path = %rel, copy = %copy, "{why}; R's version was kept as {copy}");
        self.conflicts.push(copy.to_string());
        self.touch(rel);
        Ok(())
    }

    /// Keeps whatever stands at `rel` now as a conflict copy (nothing there: nothing to
    /// keep), before E's version takes the name where nothing is.
    ///
    /// # Errors
    /// When it cannot be looked at or renamed.
    pub fn keep_what_stands(&mut self, rel: &RelPath, why: &str) -> Result<(), ClientError> {
        if crate::download::look::stat(&self.root, rel)? == Stat::Missing {
            return Ok(());
        }
        self.keep_local(rel, why)
    }

    /// The error for a path where something new kept appearing while E's version was put
    /// in place ([`KEEP_TRIES`] times).
    pub fn keeps_changing(&self, rel: &RelPath) -> ClientError {
        ClientError::Blocked {
            path: rel.to_path(&self.root).display().to_string(),
            reason: "something new kept appearing here while E's version was put in place; \
                     each was kept as a conflict copy, and it is tried again next sync"
                .to_string(),
        }
    }

    /// The directories touched since the last call.
    pub fn take_touched(&mut self) -> BTreeSet<PathBuf> {
        self.last_parent = None;
        std::mem::take(&mut self.touched)
    }

    /// The files recorded as synced in place since the last call.
    pub fn take_in_place(&mut self) -> Vec<RelPath> {
        std::mem::take(&mut self.in_place)
    }

    /// The conflict copies made since the last call.
    pub fn take_conflicts(&mut self) -> Vec<String> {
        std::mem::take(&mut self.conflicts)
    }

    /// What the renames brought in so far.
    pub fn tally(&self) -> Tally {
        self.tally
    }

    /// Renames a sealed file into place. Call only after its content was made durable
    /// (invariant 1 (docs/ARCHITECTURE.md)). An edit R made meanwhile is kept as a conflict
    /// copy first (invariant 4). A file renamed where R had nothing reaches its directory
    /// through `parents` (a batch of renames shares the handles).
    ///
    /// # Errors
    /// When the rename fails or a conflict copy cannot be made.
    pub fn install_in(
        &mut self,
        ready: Box<Ready>,
        parents: &mut Parents,
    ) -> Result<Record, ClientError> {
        let Ready {
            rel,
            before,
            record,
            sealed,
            downloaded,
            partial,
        } = *ready;
        // Where R had nothing, the rename itself refuses to replace whatever appeared since:
        // no look at the path first, and no moment between a look and the rename.
        let sealed = match before {
            Stat::Missing => sealed.install_new_in(parents)?,
            _ => Some(sealed),
        };
        // Whatever stands there now is looked at through the handle the rename goes through
        // (a look by path could see another directory's file through a directory swapped for
        // a symlink, and the rename then replace an edit in the real one).
        let changed = match sealed {
            Some(sealed) => sealed.install_if_unchanged(&before)?,
            None => None,
        };
        // R's edit is kept aside, then E's file takes the name only where nothing is: a save
        // landing again in between is kept too, never replaced.
        let mut left = changed;
        for _ in 0..KEEP_TRIES {
            let Some(sealed) = left else { break };
            self.keep_what_stands(
                &rel,
                "this file changed on R while E's version was downloading",
            )?;
            left = sealed.install_if_unchanged(&Stat::Missing)?;
        }
        if left.is_some() {
            return Err(self.keeps_changing(&rel));
        }
        if partial {
            zync_fs::remove_partials(&self.root, &rel);
        }
        let dir = self.dir.as_str();
        match downloaded {
            Some(bytes) => {
                self.tally.downloaded += 1;
                self.tally.bytes += bytes;
                tracing::debug!(dir, path = %rel, bytes, "downloaded");
            }
            None => {
                self.tally.copied += 1;
                tracing::debug!(dir, path = %rel, "copied from a file R already had");
            }
        }
        self.touch(&rel);
        Ok(Record::Set(rel.to_string(), record))
    }
}

/// How many times an edit appearing where E's version goes is kept aside before giving up
/// on that path for this sync.
pub const KEEP_TRIES: usize = 3;

// The client's only renames and removals by name. Each goes through the handle of the
// entry's directory, reached from the root without following a symlink (invariant 3,
// docs/ARCHITECTURE.md): a directory swapped for a symlink between a check and the act cannot
// redirect them.

/// Removes the file or symlink `root/rel`; NotFound when nothing was there.
pub(super) fn remove_file(root: &Path, rel: &RelPath) -> io::Result<()> {
    match zync_fs::remove_beneath(root, rel).map_err(into_io)? {
        true => Ok(()),
        false => Err(io::ErrorKind::NotFound.into()),
    }
}

/// Removes the file or symlink `root/rel` if it is still `before` (what the plan saw), looked
/// at through the handle the unlink goes through.
pub(super) fn remove_file_if_unchanged(
    root: &Path,
    rel: &RelPath,
    before: &Stat,
) -> io::Result<IfUnchanged> {
    zync_fs::remove_if_unchanged(root, rel, before).map_err(into_io)
}

/// Renames `root/from` to `root/to` if `from` is still `before` (what the plan saw), looked
/// at through the handle the rename goes through.
pub(super) fn rename_if_unchanged(
    root: &Path,
    from: &RelPath,
    to: &RelPath,
    before: &Stat,
) -> io::Result<IfUnchanged> {
    zync_fs::rename_if_unchanged(root, from, to, before).map_err(into_io)
}

/// Removes the empty directory `root/rel`; NotFound when nothing was there.
pub(super) fn remove_dir(root: &Path, rel: &RelPath) -> io::Result<()> {
    match zync_fs::remove_dir_beneath(root, rel).map_err(into_io)? {
        true => Ok(()),
        false => Err(io::ErrorKind::NotFound.into()),
    }
}

/// The I/O error inside `e` (so callers can tell `DirectoryNotEmpty` and `NotFound`), or `e`
/// itself as one (a symlink in the way, which says so).
fn into_io(e: zync_fs::FsError) -> io::Error {
    match e {
        zync_fs::FsError::Io { source, .. } => source,
        other => io::Error::other(other),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::download::land::file::Pending;
    use zync_db::Synced;
    use zync_proto::{FileHeader, Kind};

    const E: &[u8] = b"E's version\n";

    /// Every directory an entry was touched in is flushed, each once, whatever the order of
    /// the touches, and again after the flush took them.
    #[test]
    fn each_directory_touched_is_taken_once_and_again_after_a_take() {
        let root = Path::new("/r");
        let mut place = Place::new(root, "d");
        for rel in ["a/x", "a/y", "b/z", "top", "a/w", "a/b/v", "b/u"] {
            place.touch(&RelPath::parse(rel).expect("path"));
        }
        let taken: Vec<PathBuf> = place.take_touched().into_iter().collect();
        let want: Vec<PathBuf> = ["/r", "/r/a", "/r/a/b", "/r/b"]
            .iter()
            .map(PathBuf::from)
            .collect();
        assert_eq!(taken, want);
        // After a flush took them, the same directory is touched anew.
        place.touch(&RelPath::parse("b/t").expect("path"));
        assert_eq!(
            place.take_touched().into_iter().collect::<Vec<_>>(),
            [PathBuf::from("/r/b")]
        );
    }

    /// E's file for `path`, written and sealed as planned where R had nothing.
    fn ready_where_r_had_nothing(root: &Path, path: &str) -> Box<Ready> {
        let sha256 = zync_fs::hash_bytes(E);
        let record = Synced {
            kind: Kind::File,
            size: E.len() as u64,
            mtime_ns: 1_700_000_000_000_000_000,
            mode: 0o644,
            sha256: Some(sha256.clone()),
            target: None,
        };
        let rel = RelPath::parse(path).expect("relpath");
        let pending = Pending::new(&Arc::from(root), rel, Stat::Missing, false, record);
        let header = FileHeader {
            dir: "d".to_string(),
            path: path.to_string(),
            size: E.len() as u64,
            offset: 0,
            sha256,
            mtime_ns: 1_700_000_000_000_000_000,
            mode: 0o644,
            chunks: 1,
        };
        Box::new(pending)
            .write_whole(&mut Parents::default(), &header, E)
            .unwrap_or_else(|e| panic!("writing {path}: {e}"))
    }

    #[test]
    fn what_appears_on_r_where_r_had_nothing_is_never_replaced() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let root = tmp.path().join("r");
        let outside = tmp.path().join("outside");
        std::fs::create_dir_all(&root).expect("mkdir");
        std::fs::write(&outside, "outside\n").expect("write");
        let mut place = Place::new(&root, "d");
        let mut parents = Parents::default();

        // Nothing appeared: E's file goes into place.
        let plain = ready_where_r_had_nothing(&root, "plain.txt");
        place.install_in(plain, &mut parents).expect("install");
        assert_eq!(std::fs::read(root.join("plain.txt")).expect("read"), E);
        assert!(place.take_conflicts().is_empty());

        // Another user's file and symlink appear during the download: each is kept aside,
        // E's file takes the name, and the symlink's target is untouched.
        let edited = ready_where_r_had_nothing(&root, "edited.txt");
        let linked = ready_where_r_had_nothing(&root, "linked.txt");
        std::fs::write(root.join("edited.txt"), "R's edit\n").expect("write");
        std::os::unix::fs::symlink(&outside, root.join("linked.txt")).expect("symlink");
        place.install_in(edited, &mut parents).expect("install");
        place.install_in(linked, &mut parents).expect("install");
        for name in ["edited.txt", "linked.txt"] {
            let meta = std::fs::symlink_metadata(root.join(name)).expect("stat");
            assert!(meta.is_file(), "{name} is not E's regular file");
            assert_eq!(std::fs::read(root.join(name)).expect("read"), E, "{name}");
        }
        let conflicts = place.take_conflicts();
        assert_eq!(conflicts.len(), 2, "{conflicts:?}");
        let kept = std::fs::read_to_string(root.join(&conflicts[0])).expect("read");
        assert_eq!(kept, "R's edit\n");
        let link = std::fs::read_link(root.join(&conflicts[1])).expect("a symlink");
        assert_eq!(link, outside);
        assert_eq!(
            std::fs::read_to_string(&outside).expect("read"),
            "outside\n"
        );
    }

    /// An editor on R saving where E's version is going, again and again: each save lands
    /// where nothing is (`RENAME_NOREPLACE`), so it can only land between the keeping aside
    /// of what stood there and E's rename, the retry loop's window. Every save that landed
    /// is at the name or in a conflict copy afterwards; an install that kept meeting saves
    /// gives up for this sync (blocked) instead of replacing one.
    #[test]
    fn saves_landing_between_keeping_aside_and_the_rename_are_all_kept() {
        use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
        use std::sync::Arc;
        let tmp = tempfile::tempdir().expect("tempdir");
        let root = tmp.path().join("r");
        std::fs::create_dir_all(&root).expect("mkdir");
        let stop = Arc::new(AtomicBool::new(false));
        let count = Arc::new(AtomicUsize::new(0));
        let saver = {
            let (root, stop, count) = (root.clone(), Arc::clone(&stop), Arc::clone(&count));
            std::thread::spawn(move || {
                let dir = zync_fs::Dir::open_root(&root).expect("open");
                let mut landed = Vec::new();
                let mut n = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    n += 1;
                    let content = format!("save {n}\n");
                    std::fs::write(root.join("editor.tmp"), &content).expect("write");
                    if dir.rename_noreplace("editor.tmp", &dir, "f").is_ok() {
                        landed.push(content);
                        count.fetch_add(1, Ordering::Relaxed);
                    }
                }
                landed
            })
        };
        let mut place = Place::new(&root, "d");
        let mut parents = Parents::default();
        let (mut installed, mut blocked) = (0, 0);
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        // At least 300 installs, and on until a few saves landed in the window.
        while (installed + blocked < 300 || count.load(Ordering::Relaxed) < 5)
            && std::time::Instant::now() < deadline
        {
            let ready = ready_where_r_had_nothing(&root, "f");
            match place.install_in(ready, &mut parents) {
                Ok(_) => installed += 1,
                Err(ClientError::Blocked { .. }) => blocked += 1,
                Err(e) => panic!("install: {e}"),
            }
        }
        stop.store(true, Ordering::Relaxed);
        let landed = saver.join().expect("saver");
        let _ = std::fs::remove_file(root.join("editor.tmp"));
        let mut kept: Vec<String> = place
            .take_conflicts()
            .iter()
            .map(|c| std::fs::read_to_string(root.join(c)).expect("read a copy"))
            .collect();
        kept.push(std::fs::read_to_string(root.join("f")).expect("read f"));
        let lost: Vec<&String> = landed.iter().filter(|s| !kept.contains(s)).collect();
        assert!(
            lost.is_empty(),
            "{} of {} saves lost ({installed} installs, {blocked} blocked): {lost:?}",
            lost.len(),
            landed.len()
        );
        assert!(
            !landed.is_empty(),
            "no save landed in the window ({installed} installs, {blocked} blocked)"
        );
        let names: Vec<String> = std::fs::read_dir(&root)
            .expect("list")
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with(zync_fs::TEMP_PREFIX))
            .collect();
        assert!(names.is_empty(), "temp files left: {names:?}");
    }
}
