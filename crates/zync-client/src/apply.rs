//! Applying one change from E to a directory on R, keeping the DESIGN invariants: files are
//! replaced only by complete, verified versions (1), nothing is written outside the root or
//! through a symlink (3), and an R-side edit is kept as a conflict copy, never lost (4).

use std::collections::BTreeSet;
use std::io::ErrorKind;
use std::path::{Path, PathBuf};

use zync_db::{ClientState, Kind, Synced};
use zync_fs::{AtomicFile, EntryKind, Meta, RelPath, Stat};
use zync_proto::Change;

use crate::connection::Connection;
use crate::error::ClientError;
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

/// Applies the changes of one page to one root.
pub struct Applier<'a> {
    root: &'a Path,
    dir: &'a str,
    own: &'a [PathBuf],
    state: &'a ClientState,
    stamp: String,
    /// Directories whose entries changed: fsynced once before the page is committed.
    touched: BTreeSet<PathBuf>,
    /// Conflict copies made, as paths relative to the root.
    pub conflicts: Vec<String>,
    /// Files downloaded.
    pub downloaded: usize,
    /// Bytes downloaded.
    pub bytes: u64,
}

impl<'a> Applier<'a> {
    /// An applier for one mapping, reading synced state from `state`.
    pub fn new(mapping: &'a Mapping, state: &'a ClientState) -> Applier<'a> {
        Applier {
            root: &mapping.root,
            dir: mapping.name.as_str(),
            own: &mapping.own,
            state,
            stamp: chrono::Local::now().format("%Y%m%dT%H%M%S").to_string(),
            touched: BTreeSet::new(),
            conflicts: Vec::new(),
            downloaded: 0,
            bytes: 0,
        }
    }

    /// Makes every rename and removal of this page durable (DESIGN invariant 2: the page's
    /// sequence is committed only after this).
    ///
    /// # Errors
    /// When a directory cannot be synced.
    pub fn finish(&mut self) -> Result<(), ClientError> {
        for dir in std::mem::take(&mut self.touched) {
            if dir.is_dir() {
                zync_fs::fsync_dir(&dir)?;
            }
        }
        Ok(())
    }

    /// Applies one change.
    ///
    /// # Errors
    /// A connection error (the caller reconnects) or a problem with this one path.
    pub async fn apply(
        &mut self,
        conn: &mut Connection,
        change: &Change,
    ) -> Result<Record, ClientError> {
        let rel = match RelPath::parse(&change.path) {
            Ok(rel) => rel,
            Err(e) => {
                // Invariant 3: a path that could leave the root is never used.
                tracing::warn!(dir = self.dir, "skipped a change with an invalid path: {e}");
                return Ok(Record::Nothing);
            }
        };
        if self.own.contains(&rel.to_path(self.root)) {
            tracing::warn!(dir = self.dir, path = %rel, "skipped: this is the client's own database or token file; keep them outside synced directories");
            return Ok(Record::Nothing);
        }
        if change.deleted {
            return self.delete(&rel, change);
        }
        self.make_parents(&rel)?;
        match change.kind {
            zync_proto::Kind::File => self.file(conn, &rel, change).await,
            zync_proto::Kind::Dir => self.dir(&rel, change),
            zync_proto::Kind::Symlink => self.symlink(&rel, change),
        }
    }

    fn stat(&self, rel: &RelPath) -> Result<Stat, ClientError> {
        let path = rel.to_path(self.root);
        zync_fs::lstat(&path).map_err(|source| ClientError::Io {
            what: "inspect",
            path: path.display().to_string(),
            source,
        })
    }

    fn touch(&mut self, rel: &RelPath) {
        let parent = rel
            .parent()
            .map_or_else(|| self.root.to_path_buf(), |p| p.to_path(self.root));
        self.touched.insert(parent);
    }

    fn synced(&self, rel: &RelPath) -> Result<Option<Synced>, ClientError> {
        Ok(self.state.synced(self.dir, rel.as_str())?)
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
    fn is_as_synced(&self, rel: &RelPath, meta: &Meta) -> Result<bool, ClientError> {
        if meta.kind == EntryKind::File {
            // Written by a run that stopped before recording it.
            let local = self.local_sha(rel, meta, self.synced(rel)?.as_ref())?;
            if self.state.was_inflight(self.dir, rel.as_str(), &local)? {
                return Ok(true);
            }
        }
        let Some(synced) = self.synced(rel)? else {
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
        let copy = zync_fs::free_conflict_name(self.root, rel, &self.stamp);
        let (from, to) = (rel.to_path(self.root), copy.to_path(self.root));
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

    /// Clears `rel` for an entry of another kind: removes what zync wrote there, keeps anything
    /// else as a conflict copy.
    fn clear(&mut self, rel: &RelPath, meta: &Meta) -> Result<(), ClientError> {
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
        } else if self.is_as_synced(rel, meta)? {
            std::fs::remove_file(&path).map_err(|e| io("remove", e))?;
        } else {
            self.keep_local(rel, "E replaced this path, which was changed on R")?;
        }
        self.touch(rel);
        Ok(())
    }

    /// Creates missing parent directories; a file or symlink in the way is cleared first, so
    /// nothing is ever written through a link (invariant 3).
    fn make_parents(&mut self, rel: &RelPath) -> Result<(), ClientError> {
        for ancestor in rel.ancestors() {
            match self.stat(&ancestor)? {
                Stat::Entry(m) if m.kind == EntryKind::Dir => continue,
                Stat::Entry(m) => self.clear(&ancestor, &m)?,
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
        }
        Ok(())
    }

    async fn file(
        &mut self,
        conn: &mut Connection,
        rel: &RelPath,
        change: &Change,
    ) -> Result<Record, ClientError> {
        let Some(sha) = change
            .sha256
            .as_deref()
            .filter(|s| zync_fs::is_sha256_hex(s))
        else {
            tracing::warn!(dir = self.dir, path = %rel, "skipped a file change without a valid sha256");
            return Ok(Record::Nothing);
        };
        let mode = change.mode & 0o777;
        let record = Synced {
            kind: Kind::File,
            size: change.size,
            mtime_ns: change.mtime_ns,
            mode,
            sha256: Some(sha.to_string()),
            target: None,
        };
        let path = rel.to_path(self.root);
        match self.stat(rel)? {
            Stat::Missing => {}
            Stat::Entry(meta) if meta.kind == EntryKind::File => {
                let synced = self.synced(rel)?;
                let local = self.local_sha(rel, &meta, synced.as_ref())?;
                if local == sha {
                    // R already has this content: fix the attributes, download nothing.
                    if meta.mode & 0o777 != mode {
                        zync_fs::set_mode(&path, mode)?;
                    }
                    if meta.mtime_ns != change.mtime_ns {
                        zync_fs::set_mtime(&path, change.mtime_ns)?;
                    }
                    return Ok(Record::Set(rel.to_string(), record));
                }
                // zync's own write from a run that stopped before recording it is no R edit.
                let ours = self.state.was_inflight(self.dir, rel.as_str(), &local)?;
                let edited = !ours
                    && !synced.is_some_and(|s| {
                        s.kind == Kind::File && s.sha256.as_deref() == Some(local.as_str())
                    });
                if edited {
                    self.keep_local(rel, "E changed this file, which was also changed on R")?;
                }
            }
            Stat::Entry(meta) => self.clear(rel, &meta)?,
            Stat::Unsupported(what) => {
                return Err(ClientError::Blocked {
                    path: path.display().to_string(),
                    reason: format!("a {what} stands where E has a file; remove it"),
                })
            }
        }
        // What stands at the path now; if it changes during the download (an editor saving on
        // R), that save is kept as a conflict copy before the rename (invariant 4).
        let before = self.stat(rel)?;
        // A download of this content that broke off earlier continues where it stopped.
        let mut file = match AtomicFile::resume(self.root, rel, sha)? {
            Some(partial) if partial.written() <= change.size => {
                tracing::debug!(dir = self.dir, path = %rel, from = partial.written(), "resuming a partial download");
                partial
            }
            _ => AtomicFile::create(self.root, rel)?,
        };
        let offset = file.written();
        let downloaded = conn
            .download(self.dir, rel.as_str(), offset, |data| {
                file.write(data).map_err(ClientError::from)
            })
            .await;
        let header = match downloaded {
            Ok(header) => header,
            Err(e @ (ClientError::Connection(_) | ClientError::Timeout(_))) => {
                // The tunnel dropped: keep what arrived, the next attempt resumes from there.
                if file.written() > 0 {
                    if let Err(keep) = file.keep_partial(sha) {
                        tracing::debug!(path = %rel, "cannot keep the partial download: {keep}");
                    }
                }
                return Err(e);
            }
            Err(e) => return Err(e),
        };
        if header.sha256 != sha {
            // E's file moved on since this change; the newer change will bring it.
            return Err(ClientError::Server {
                code: zync_proto::ErrorCode::Stale,
                message: format!("{rel} changed on E during the transfer"),
            });
        }
        self.bytes += file.written();
        if self.stat(rel)? != before {
            self.keep_local(
                rel,
                "this file changed on R while E's version was downloading",
            )?;
        }
        file.commit(sha, mode, change.mtime_ns)?;
        zync_fs::remove_partials(self.root, rel);
        self.downloaded += 1;
        self.touch(rel);
        tracing::debug!(dir = self.dir, path = %rel, bytes = change.size, "downloaded");
        Ok(Record::Set(rel.to_string(), record))
    }

    fn dir(&mut self, rel: &RelPath, change: &Change) -> Result<Record, ClientError> {
        let mode = (change.mode & 0o777) | 0o700;
        match self.stat(rel)? {
            Stat::Entry(meta) if meta.kind == EntryKind::Dir => {
                if meta.mode & 0o777 != mode {
                    zync_fs::set_mode(&rel.to_path(self.root), mode)?;
                }
            }
            Stat::Entry(meta) => {
                self.clear(rel, &meta)?;
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

    fn symlink(&mut self, rel: &RelPath, change: &Change) -> Result<Record, ClientError> {
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
            Stat::Entry(meta) if meta.kind == EntryKind::Dir => self.clear(rel, &meta)?,
            Stat::Entry(meta) => {
                // A rename over a file or link replaces it; keep it first if R changed it.
                if !self.is_as_synced(rel, &meta)? {
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

    fn delete(&mut self, rel: &RelPath, change: &Change) -> Result<Record, ClientError> {
        // A parent that is not a real directory means nothing of E's can be below it.
        if zync_fs::check_parents(self.root, rel).is_err() {
            return Ok(Record::Remove(rel.to_string()));
        }
        let path = rel.to_path(self.root);
        // A partial download of a file E deleted will never be resumed.
        zync_fs::remove_partials(self.root, rel);
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
                if self.is_as_synced(rel, &meta)? {
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
