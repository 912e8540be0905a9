//! Gathering what R has around one change before it is planned: `lstat` of the path and of its
//! parents, the sha256 of a file there (the synced one when size and mtime still match, else
//! hashed), its synced record and in-flight note, and other files on R holding content the
//! change needs. Reads only; [`Known`] remembers across a sync what it need not look at again.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use zync_proto::Kind;

use zync_db::{ClientState, Synced};
use zync_fs::{Meta, RelPath, Stat};
use zync_proto::Change;

use crate::download::plan::{Here, Local};
use crate::error::ClientError;

/// How many files with a content are looked at to find one to copy it from (see
/// [`Look::source`]): a few, for those edited on R since, and no more (in a tree of thousands of
/// empty files, each lookup would otherwise read thousands of rows).
const SOURCE_CANDIDATES: usize = 8;

/// What a sync's [`Known`] holds of directory names (`dirs` and `fresh`), in bytes: past it,
/// both are forgotten, and the directories are looked at again. A tree of short names fills it
/// after a hundred thousand directories; a daemon naming ever new deep paths, at once.
const KNOWN_DIR_BYTES: usize = 8 << 20;
/// What `partial_dirs` holds, in bytes of paths: past it, it is forgotten and read again.
const PARTIAL_DIR_BYTES: usize = 4 << 20;

/// What one sync knows about its root beyond the database. All of it but the stash only spares
/// looks, so a sync may forget it at any time.
#[derive(Debug, Default)]
pub struct Known {
    /// Directories seen in this sync; forgotten whenever anything is moved or removed.
    dirs: HashSet<String>,
    /// Directories this sync made, empty, since it last finished everything planned: a file
    /// planned in one is taken to have nothing at its path without a look (see
    /// [`Look::here`]). Forgotten with `dirs`, and by [`Known::forget_fresh`].
    fresh: HashSet<String>,
    /// The bytes of the names in `dirs` and `fresh`.
    dir_bytes: usize,
    /// Whether `dirs` and `fresh` are forgotten past [`KNOWN_DIR_BYTES`]: a sync's are, a dry
    /// run's are not (it imagines there the directories it would make).
    bounded: bool,
    /// Deleted files set aside by content, as sources for copies (renames on E).
    pub stash: HashMap<String, PathBuf>,
    /// For each directory looked at: whether it may hold partial downloads.
    partial_dirs: HashMap<PathBuf, bool>,
    /// The bytes of the paths in `partial_dirs`.
    partial_bytes: usize,
}

impl Known {
    /// A sync's: what it holds of directories does not grow past [`KNOWN_DIR_BYTES`], however
    /// many directories the sync meets.
    pub fn bounded() -> Known {
        Known {
            bounded: true,
            ..Known::default()
        }
    }

    /// Something at `rel` changed: it may have been a directory seen earlier.
    pub fn forget_dirs(&mut self, rel: &RelPath) {
        if self.dirs.contains(rel.as_str()) || self.fresh.contains(rel.as_str()) {
            self.clear_dirs();
        }
    }

    fn clear_dirs(&mut self) {
        self.dirs.clear();
        self.fresh.clear();
        self.dir_bytes = 0;
    }

    /// Everything planned so far was installed: a path planned again may find this sync's own
    /// file, so no directory counts as fresh any more.
    pub fn forget_fresh(&mut self) {
        let fresh = std::mem::take(&mut self.fresh);
        let bytes: usize = fresh.iter().map(String::len).sum();
        self.dir_bytes = self.dir_bytes.saturating_sub(bytes);
    }

    /// `dir` is a directory (seen, made, or imagined by a dry run).
    pub fn insert_dir(&mut self, dir: String) {
        self.note(dir, false);
    }

    /// `made` are directories this sync just created, empty.
    pub fn made_dirs(&mut self, made: Vec<RelPath>) {
        for dir in made {
            self.note(dir.to_string(), true);
        }
    }

    fn note(&mut self, dir: String, fresh: bool) {
        let len = dir.len();
        if fresh && self.fresh.insert(dir.clone()) {
            self.dir_bytes += len;
        }
        if self.dirs.insert(dir) {
            self.dir_bytes += len;
        }
        if self.bounded && self.dir_bytes > KNOWN_DIR_BYTES {
            self.clear_dirs();
        }
    }

    /// Whether `rel`'s directory may hold partial downloads (read once per directory, so many
    /// files do not list a directory each).
    fn may_have_partials(&mut self, root: &Path, rel: &RelPath) -> bool {
        let dir = rel
            .parent()
            .map_or_else(|| root.to_path_buf(), |p| p.to_path(root));
        if let Some(&may) = self.partial_dirs.get(&dir) {
            return may;
        }
        if self.partial_bytes > PARTIAL_DIR_BYTES {
            self.partial_dirs.clear();
            self.partial_bytes = 0;
        }
        self.partial_bytes += dir.as_os_str().len();
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
}

/// Where a sync looks: the root, the daemon's name for it, and the client database.
pub struct Look<'a> {
    /// The synced directory.
    pub root: &'a Path,
    /// The daemon's name for it.
    pub dir: &'a str,
    /// The client database (a read snapshot is open while a page is planned).
    pub state: &'a ClientState,
    /// The umask new entries get.
    pub umask: u32,
}

impl Look<'_> {
    /// Gathers what R has around `change` at `rel`, for [`crate::download::plan::plan`].
    ///
    /// # Errors
    /// When a path cannot be inspected, a file cannot be read, or the database fails.
    pub fn here(
        &self,
        known: &mut Known,
        change: &Change,
        rel: RelPath,
    ) -> Result<Here, ClientError> {
        let mut here = Here {
            rel,
            parents: Vec::new(),
            parents_real: true,
            at: Local::missing(),
            partials: false,
            source: None,
            umask: self.umask,
        };
        let rel = &here.rel;
        let in_fresh = rel
            .parent()
            .is_some_and(|parent| known.fresh.contains(parent.as_str()));
        if in_fresh && !change.deleted && change.kind == Kind::File {
            // A directory this sync made empty holds nothing but what it planned into it,
            // each path once. Another user on R may put a file or symlink here at any
            // moment, before a look or after it: the rename into place refuses to replace
            // anything where R had nothing (`Sealed::install_new`) and keeps what it finds
            // as a conflict copy (invariant 4, docs/ARCHITECTURE.md), and every write goes
            // through the directory's handle (invariant 3). So no look: one `lstat` less
            // per file of a fresh tree.
            if let Some(sha) = change.sha256.as_deref() {
                here.source = self.source(known, rel, sha)?;
            }
            return Ok(here);
        }
        if change.deleted {
            here.parents_real = zync_fs::check_parents(self.root, rel).is_ok();
            if here.parents_real {
                here.partials = known.may_have_partials(self.root, rel);
                here.at = self.local(rel)?;
            }
            return Ok(here);
        }
        let mut below_missing = false;
        for ancestor in rel.ancestors() {
            // Seen as a directory earlier in this sync (writes still check every parent).
            if known.dirs.contains(ancestor.as_str()) {
                continue;
            }
            if below_missing {
                here.parents.push((ancestor, Local::missing()));
                continue;
            }
            let local = self.local(&ancestor)?;
            if matches!(&local.stat, Stat::Entry(m) if m.kind == Kind::Dir) {
                known.insert_dir(ancestor.to_string());
            } else {
                // Made a directory before anything below it is written: nothing below exists.
                below_missing = true;
            }
            here.parents.push((ancestor, local));
        }
        if !below_missing {
            here.at = self.local(rel)?;
        }
        if change.kind == zync_proto::Kind::File {
            here.partials = known.may_have_partials(self.root, rel);
            let has = here.at.sha.is_some() && here.at.sha == change.sha256;
            if let Some(sha) = change.sha256.as_deref().filter(|_| !has) {
                here.source = self.source(known, rel, sha)?;
            }
        }
        Ok(here)
    }

    /// What stands at `rel` and what zync last wrote there.
    fn local(&self, rel: &RelPath) -> Result<Local, ClientError> {
        let stat = stat(self.root, rel)?;
        let Stat::Entry(meta) = &stat else {
            return Ok(Local {
                stat,
                ..Local::missing()
            });
        };
        let synced = self.synced(rel)?;
        let (mut sha, mut inflight) = (None, false);
        if meta.kind == Kind::File {
            let local = self.local_sha(rel, meta, synced.as_ref())?;
            let as_synced = synced
                .as_ref()
                .is_some_and(|s| s.kind == Kind::File && s.sha256.as_ref() == Some(&local));
            // Written by a run that stopped before recording it.
            inflight = !as_synced && self.state.was_inflight(self.dir, rel.as_str(), &local)?;
            sha = Some(local);
        }
        Ok(Local {
            stat,
            sha,
            inflight,
            synced,
        })
    }

    /// A file on R that holds content `sha`: one set aside in this page, or else the first of
    /// the others still exactly as zync wrote them. The copy is verified all the same, and a
    /// file whose copy fails is downloaded.
    fn source(
        &self,
        known: &Known,
        rel: &RelPath,
        sha: &str,
    ) -> Result<Option<PathBuf>, ClientError> {
        if let Some(stashed) = known.stash.get(sha) {
            return Ok(Some(stashed.clone()));
        }
        // The first holder is nearly always as zync wrote it: it alone is read first, and the
        // next few only when it is not.
        let first = self.state.find_by_sha(self.dir, sha, rel.as_str(), 1)?;
        let Some(holder) = first.first() else {
            return Ok(None);
        };
        if let Some(source) = self.holder_as_synced(&holder.0, &holder.1) {
            return Ok(Some(source));
        }
        let more = self
            .state
            .find_by_sha(self.dir, sha, rel.as_str(), SOURCE_CANDIDATES)?;
        Ok(more
            .iter()
            .skip(1)
            .find_map(|(path, synced)| self.holder_as_synced(path, synced)))
    }

    /// The path under the root of `path`, a file the database says holds some content, when it
    /// is still the file zync wrote there (`synced`): same kind, size and mtime, reached without
    /// a symlink.
    fn holder_as_synced(&self, path: &str, synced: &Synced) -> Option<PathBuf> {
        // Invariant 3 (docs/ARCHITECTURE.md): a path from the database is validated like one
        // from the network.
        let source = RelPath::parse(path).ok()?;
        // Its parents first, so nothing outside the root is looked at; a holder that cannot be
        // looked at is passed over, as one that changed is.
        zync_fs::check_parents(self.root, &source).ok()?;
        match stat(self.root, &source) {
            Ok(Stat::Entry(m))
                if m.kind == Kind::File
                    && m.size == synced.size
                    && m.mtime_ns == synced.mtime_ns =>
            {
                Some(source.to_path(self.root))
            }
            _ => None,
        }
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
}

/// What stands at `rel` under `root`, without following a symlink.
///
/// # Errors
/// When it cannot be inspected.
pub fn stat(root: &Path, rel: &RelPath) -> Result<Stat, ClientError> {
    let path = rel.to_path(root);
    zync_fs::lstat(&path).map_err(|source| ClientError::Io {
        what: "inspect",
        path: path.display().to_string(),
        source,
    })
}

/// The change's path as a [`RelPath`], or `None` (said in the log) when it must not be
/// written: a path that could leave the root (invariant 3 (docs/ARCHITECTURE.md)), or one that
/// is, holds or lies below one of the client's own files (see [`is_own`]).
pub fn parse(change: &Change, root: &Path, dir: &str, own: &[PathBuf]) -> Option<RelPath> {
    let rel = match RelPath::parse(&change.path) {
        Ok(rel) => rel,
        Err(e) => {
            tracing::warn!(dir, "skipped a change with an invalid path: {e}");
            return None;
        }
    };
    if is_own(&rel.to_path(root), own) {
        tracing::warn!(dir, path = %rel, "skipped: this path is, holds or lies below the client's own database, lock or token file; keep them outside synced directories");
        return None;
    }
    Some(rel)
}

/// True when `path` is one of the client's own files (`own`: its database and SQLite's files
/// beside it, its lock, its token), a directory holding one, or a path below one. A change
/// there would replace, remove or set aside as a conflict copy the live database (a directory
/// holding it is cleared whole when E makes it a file; a file is cleared to make it E's
/// directory), and the next run would start from a fresh one, beside a lock and a token that
/// moved with it.
fn is_own(path: &Path, own: &[PathBuf]) -> bool {
    own.iter()
        .any(|file| file.starts_with(path) || path.starts_with(file))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_syncs_known_directories_are_forgotten_past_their_bound_and_a_dry_runs_are_not() {
        // 4 KiB each: sixteen components of 250 bytes under one of its own.
        let name = |i: usize| format!("{i:04}{}", format!("/{}", "d".repeat(250)).repeat(16));
        let mut bounded = Known::bounded();
        let mut dry_run = Known::default();
        for i in 0..3000 {
            bounded.made_dirs(vec![RelPath::parse(&name(i)).expect("a path")]);
            dry_run.insert_dir(name(i));
        }
        assert!(
            bounded.dir_bytes <= KNOWN_DIR_BYTES && bounded.dirs.len() < 3000,
            "{} directories, {} bytes",
            bounded.dirs.len(),
            bounded.dir_bytes
        );
        assert_eq!(bounded.fresh.len(), bounded.dirs.len());
        // The last ones are still known.
        assert!(bounded.fresh.contains(&name(2999)));
        bounded.forget_fresh();
        assert_eq!(
            bounded.dir_bytes,
            bounded.dirs.iter().map(String::len).sum::<usize>()
        );
        assert_eq!(dry_run.dirs.len(), 3000);
    }

    #[test]
    fn a_path_holding_or_below_the_clients_own_files_is_its_own() {
        let own = [
            PathBuf::from("/r/.zync/sync_client.db"),
            PathBuf::from("/r/.zync/sync_client.db-wal"),
            PathBuf::from("/r/token"),
        ];
        for (path, expected) in [
            ("/r/.zync/sync_client.db", true),
            ("/r/.zync", true),
            ("/r/.zync/sync_client.db/x", true),
            ("/r/.zync/sync_client.db-wal/x/y", true),
            ("/r/token", true),
            ("/r/.zync/other", false),
            ("/r/.zyncx", false),
            ("/r/.zync/sync_client", false),
            ("/r/token2", false),
        ] {
            assert_eq!(is_own(Path::new(path), &own), expected, "{path}");
        }
    }
}
