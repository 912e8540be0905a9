//! Where a sync writes on R, and the last step of a download: the rename into place. Planning
//! (on the receiving thread) and installing (on a blocking thread, after the flush) each keep a
//! [`Place`] of their own: the directories they touched and the conflict copies they made.

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};

use zync_fs::{RelPath, Stat};

use crate::apply::{Ready, Record};
use crate::error::ClientError;

/// One synced directory on R, and what was changed in it.
pub struct Place {
    root: PathBuf,
    dir: String,
    /// Names this run's conflict copies.
    stamp: String,
    /// Directories whose entries changed: made durable by the next flush.
    touched: BTreeSet<PathBuf>,
    /// Conflict copies made, as paths relative to the root.
    conflicts: Vec<String>,
    /// For each directory seen: whether it may hold partial downloads.
    partial_dirs: HashMap<PathBuf, bool>,
}

impl Place {
    /// The place for `root`, served by the daemon as `dir`.
    pub fn new(root: &Path, dir: &str) -> Place {
        Place {
            root: root.to_path_buf(),
            dir: dir.to_string(),
            stamp: chrono::Local::now().format("%Y%m%dT%H%M%S").to_string(),
            touched: BTreeSet::new(),
            conflicts: Vec::new(),
            partial_dirs: HashMap::new(),
        }
    }

    /// Another view of the same root, with nothing touched yet (the same conflict stamp).
    pub fn sibling(&self) -> Place {
        Place {
            root: self.root.clone(),
            dir: self.dir.clone(),
            stamp: self.stamp.clone(),
            touched: BTreeSet::new(),
            conflicts: Vec::new(),
            partial_dirs: HashMap::new(),
        }
    }

    /// What stands at `rel`, without following a symlink.
    ///
    /// # Errors
    /// When it cannot be inspected.
    pub fn stat(&self, rel: &RelPath) -> Result<Stat, ClientError> {
        let path = rel.to_path(&self.root);
        zync_fs::lstat(&path).map_err(|source| ClientError::Io {
            what: "inspect",
            path: path.display().to_string(),
            source,
        })
    }

    /// Notes that the entry `rel` changed: its directory is flushed before it is recorded.
    pub fn touch(&mut self, rel: &RelPath) {
        let parent = rel
            .parent()
            .map_or_else(|| self.root.clone(), |p| p.to_path(&self.root));
        self.touched.insert(parent);
    }

    /// Moves R's version aside as a conflict copy (invariant 4) and says so.
    ///
    /// # Errors
    /// When it cannot be renamed.
    pub fn keep_local(&mut self, rel: &RelPath, why: &str) -> Result<(), ClientError> {
        let copy = zync_fs::free_conflict_name(&self.root, rel, &self.stamp);
        let (from, to) = (rel.to_path(&self.root), copy.to_path(&self.root));
        std::fs::rename(&from, &to).map_err(|source| ClientError::Io {
            what: "keep a conflict copy of",
            path: from.display().to_string(),
            source,
        })?;
        tracing::warn!(dir = self.dir, path = %rel, copy = %copy, "{why}; R's version was kept as {copy}");
        self.conflicts.push(copy.to_string());
        self.touch(rel);
        Ok(())
    }

    /// Whether `rel`'s directory may hold partial downloads (read once per directory, so many
    /// files do not list a directory each).
    pub fn may_have_partials(&mut self, rel: &RelPath) -> bool {
        let dir = rel
            .parent()
            .map_or_else(|| self.root.clone(), |p| p.to_path(&self.root));
        *self.partial_dirs.entry(dir).or_insert_with_key(|dir| {
            let prefix = format!("{}partial-", zync_fs::TEMP_PREFIX);
            std::fs::read_dir(dir).is_ok_and(|entries| {
                entries.flatten().any(|e| {
                    e.file_name()
                        .as_encoded_bytes()
                        .starts_with(prefix.as_bytes())
                })
            })
        })
    }

    /// The directories touched since the last call.
    pub fn take_touched(&mut self) -> BTreeSet<PathBuf> {
        std::mem::take(&mut self.touched)
    }

    /// The conflict copies made since the last call.
    pub fn take_conflicts(&mut self) -> Vec<String> {
        std::mem::take(&mut self.conflicts)
    }
}

/// Renames sealed files into place, batch by batch, on the thread that flushed them.
pub struct Installer {
    place: Place,
    /// Directories checked for symlinks during the current batch of renames.
    checked: zync_fs::CheckedDirs,
    /// Files downloaded.
    pub downloaded: usize,
    /// Bytes downloaded.
    pub bytes: u64,
    /// Files whose content was copied from another file on R instead of downloaded.
    pub copied: usize,
}

impl Installer {
    /// An installer writing into `place`.
    pub fn new(place: Place) -> Installer {
        Installer {
            place,
            checked: zync_fs::CheckedDirs::default(),
            downloaded: 0,
            bytes: 0,
            copied: 0,
        }
    }

    /// The synced directory.
    pub fn root(&self) -> &Path {
        &self.place.root
    }

    /// Starts a new batch of renames: the parent directories are checked again, once each.
    pub fn new_batch(&mut self) {
        self.checked = zync_fs::CheckedDirs::default();
    }

    /// The directories the renames touched since the last call.
    pub fn take_touched(&mut self) -> BTreeSet<PathBuf> {
        self.place.take_touched()
    }

    /// The conflict copies made since the last call.
    pub fn take_conflicts(&mut self) -> Vec<String> {
        self.place.take_conflicts()
    }

    /// Renames a sealed file into place. Call only after its content was made durable. An edit
    /// R made meanwhile is kept as a conflict copy first (invariant 4).
    ///
    /// # Errors
    /// When the rename fails or a conflict copy cannot be made.
    pub fn install(&mut self, ready: Box<Ready>) -> Result<Record, ClientError> {
        let Ready {
            rel,
            before,
            record,
            sealed,
            downloaded,
            partial,
        } = *ready;
        if self.place.stat(&rel)? != before {
            self.place.keep_local(
                &rel,
                "this file changed on R while E's version was downloading",
            )?;
        }
        sealed.install_checked(&mut self.checked)?;
        if partial {
            zync_fs::remove_partials(&self.place.root, &rel);
        }
        let dir = self.place.dir.as_str();
        match downloaded {
            Some(bytes) => {
                self.downloaded += 1;
                self.bytes += bytes;
                tracing::debug!(dir, path = %rel, bytes, "downloaded");
            }
            None => {
                self.copied += 1;
                tracing::debug!(dir, path = %rel, "copied from a file R already had");
            }
        }
        self.place.touch(&rel);
        Ok(Record::Set(rel.to_string(), record))
    }
}
