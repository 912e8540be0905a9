//! The changes zync-apply makes on E, one file at a time: backups of E's files into the
//! session's staging directory (invariant 5, docs/ARCHITECTURE.md), atomic verified writes that never follow a
//! symlink (invariants 1 and 3), removals, and recording each change in the daemon's index at
//! once so it flows back to R.

use std::fs::File;
use std::io::{self, Read, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use zync_proto::Kind;

use anyhow::{bail, Context};
use serde::{Deserialize, Serialize};
use zync_db::{EntryMeta, Index, StagedFile};
use zync_fs::{fsync_dir, fsync_dir_beneath, AtomicFile, Dir, RelPath, Stat};

use crate::probe::{self, open_regular, Current};

/// How much is copied at a time.
const CHUNK: usize = 256 * 1024;

/// The mode, mtime and content hash E's file had when it was backed up, recorded in the
/// database ([`Index::record_backup`]) so undo can restore them and check the backup against
/// them. (A zync-apply older than that record kept them in a JSON file beside the backup,
/// `backup-N.json`, which [`backup_meta`] still reads for its backups.)
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BackupMeta {
    /// Permission bits.
    pub mode: u32,
    /// Modification time, ns since the Unix epoch.
    pub mtime_ns: i64,
    /// Hex sha256 of the content.
    pub sha256: String,
    /// Bytes.
    pub size: u64,
}

/// A backup made of one of E's files.
#[derive(Debug, Clone)]
pub struct Backup {
    /// The file's name inside the session directory.
    pub name: String,
    /// Its path.
    pub path: PathBuf,
    /// What E's file was.
    pub meta: BackupMeta,
}

impl Backup {
    /// Removes the backup and its metadata (after the change it was made for failed).
    pub fn discard(&self) {
        discard_backup(&self.path);
    }
}

/// Removes the backup at `path` and its metadata, ignoring errors (it is no longer needed).
pub fn discard_backup(path: &Path) {
    let _ = std::fs::remove_file(path);
    let _ = std::fs::remove_file(meta_path(path));
}

fn meta_path(backup: &Path) -> PathBuf {
    let mut s = backup.as_os_str().to_owned();
    s.push(".json");
    PathBuf::from(s)
}

/// Streams `from` into `to`, returning the sha256 of what was copied.
fn copy_hashing(
    from: &mut File,
    mut to: impl FnMut(&[u8]) -> anyhow::Result<()>,
) -> anyhow::Result<String> {
    let mut hasher = zync_fs::Hasher::new();
    let mut buf = vec![0u8; CHUNK];
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e.into()),
        };
        hasher.update(&buf[..n]);
        to(&buf[..n])?;
    }
    Ok(hasher.finish())
}

/// Copies E's file `root/rel` into a new `backup-N` in `session_dir`, fsyncs it and its
/// metadata, and returns what was backed up.
///
/// # Errors
///
/// A symlinked parent, E's file is not a regular file, or an I/O error.
pub fn backup(root: &Path, rel: &RelPath, session_dir: &Path) -> anyhow::Result<Backup> {
    let src_path = rel.to_path(root);
    // Read through the directory's handle: a symlinked parent is refused, not followed.
    let Some(mut src) = zync_fs::open_file_beneath(root, rel)? else {
        bail!(
            "cannot read {} to back it up: it is not a regular file",
            src_path.display()
        );
    };
    let md = src.metadata()?;
    // Backups hold E's files: the staging area is readable by E's user only, and made by E's
    // user: another user's would let them swap what undo restores (invariant 8).
    let area = session_dir.parent().unwrap_or(session_dir);
    zync_fs::create_own_dir_all(area, session_dir)
        .with_context(|| format!("cannot create {}", session_dir.display()))?;
    let mut n = 1u32;
    let (name, path, mut dst) = loop {
        let name = format!("backup-{n}");
        let path = session_dir.join(&name);
        match zync_fs::create_private_file(&path) {
            Ok(f) => break (name, path, f),
            Err(zync_fs::FsError::Io { source, .. })
                if source.kind() == io::ErrorKind::AlreadyExists && n < 1_000_000 =>
            {
                n += 1
            }
            Err(e) => {
                return Err(e)
                    .with_context(|| format!("cannot create the backup {}", path.display()))
            }
        }
    };
    let result = (|| -> anyhow::Result<Backup> {
        let mut size = 0u64;
        let sha256 = copy_hashing(&mut src, |data| {
            size += data.len() as u64;
            dst.write_all(data).map_err(Into::into)
        })?;
        dst.sync_all()?;
        let meta = BackupMeta {
            mode: md.mode() & 0o7777,
            mtime_ns: md
                .mtime()
                .saturating_mul(1_000_000_000)
                .saturating_add(md.mtime_nsec()),
            sha256,
            size,
        };
        // A leftover of an older zync-apply's interrupted backup under the same name would
        // be taken for this backup's metadata were the database's record ever missing.
        let _ = std::fs::remove_file(meta_path(&path));
        fsync_dir(session_dir)?;
        Ok(Backup {
            name: name.clone(),
            path: path.clone(),
            meta,
        })
    })();
    match result {
        Ok(b) => Ok(b),
        Err(e) => {
            let _ = std::fs::remove_file(&path);
            let _ = std::fs::remove_file(meta_path(&path));
            Err(e.context(format!(
                "cannot back up {} to {}",
                src_path.display(),
                path.display()
            )))
        }
    }
}

/// Records in the database what `backup` holds, for `file` (before the database names the
/// backup: a backup the database names always has its record).
///
/// # Errors
///
/// A database failure.
pub fn record_backup(index: &Index, file: &StagedFile, backup: &Backup) -> anyhow::Result<()> {
    let record = zync_db::BackupRecord {
        sha256: backup.meta.sha256.clone(),
        size: backup.meta.size,
        mode: backup.meta.mode,
        mtime_ns: backup.meta.mtime_ns,
    };
    index.record_backup(&file.session_id, &file.dir, &file.path, &record)?;
    Ok(())
}

/// What E's file was when `file`'s backup at `path` was made: the database's record of it
/// ([`record_backup`]), never a file beside the backup. A backup made by a zync-apply older
/// than the record has none; then the JSON file that zync-apply wrote beside it is read (the
/// staging area and the session's directory are checked to be this user's on the way,
/// [`probe::session_file`]), and when that is missing too, the backup's own hash with mode
/// 0644 and the current time. Undo checks the content it restores against the hash.
///
/// # Errors
///
/// The database or the backup cannot be read.
pub fn backup_meta(index: &Index, file: &StagedFile, path: &Path) -> anyhow::Result<BackupMeta> {
    if let Some(record) = index.backup_record(&file.session_id, &file.dir, &file.path)? {
        return Ok(BackupMeta {
            mode: record.mode,
            mtime_ns: record.mtime_ns,
            sha256: record.sha256,
            size: record.size,
        });
    }
    if let Ok(text) = std::fs::read(meta_path(path)) {
        if let Ok(meta) = serde_json::from_slice(&text) {
            return Ok(meta);
        }
    }
    let (sha256, size) = zync_fs::hash_file(path)
        .with_context(|| format!("cannot read the backup {}", path.display()))?;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX));
    Ok(BackupMeta {
        mode: 0o644,
        mtime_ns: now,
        sha256,
        size,
    })
}

/// Creates the missing parent directories of `rel`, each with `mkdirat` in its parent's
/// handle so no symlink is followed (invariant 3), and flushes where they were made; returns
/// the ones created, shallowest first, so they can be indexed.
///
/// # Errors
///
/// A symlink or non-directory among the parents, or an I/O error.
pub fn ensure_parents(root: &Path, rel: &RelPath) -> anyhow::Result<Vec<RelPath>> {
    let Some(parent) = rel.parent() else {
        return Ok(Vec::new());
    };
    Ok(zync_fs::create_dirs_beneath(root, &parent)?)
}

/// Puts the content of `src` (a file in the staging area), which must hash to `sha256`, at
/// `root/rel` where nothing is, with `mode` and `mtime_ns`, and fsyncs the parent directory:
/// the rename never replaces an entry that appeared at `rel` after its name was picked (a
/// conflict copy's name is free when it is picked, and another run, or another user, may take
/// it before the copy is written).
///
/// # Errors
///
/// A symlinked parent, content that does not match `sha256` (E is then untouched), something
/// at `rel` now (nothing was replaced), or an I/O error.
pub fn write_new(
    root: &Path,
    rel: &RelPath,
    src: &Path,
    sha256: &str,
    mode: u32,
    mtime_ns: i64,
) -> anyhow::Result<()> {
    replace_if_unchanged(
        root,
        rel,
        src,
        sha256,
        mode,
        mtime_ns,
        &Current::Missing,
        || {
            anyhow::anyhow!(
                "{} appeared on E while R's version was being written there; nothing was \
             replaced: apply again to keep both under another name",
                rel.to_path(root).display()
            )
        },
    )
}

/// As [`write_new`], over E's file, but only while E still has `expected` at `rel`: it is looked at after
/// the copy, right before the rename, through the directory handle the rename goes through
/// ([`probe::probe_seen`], which reads a file whole and looks again if it changed meanwhile),
/// and the rename replaces only the entry that was looked at ([`Dir::replace_if`]). So an
/// edit saved on E while a large file was being copied, or while it was being checked, is
/// never replaced unseen, even when another local user swaps one of E's directories for a
/// symlink or a directory of their own holding a copy of what was expected (invariants 3
/// and 5).
///
/// # Errors
///
/// As [`write_new`]; `changed()` when E has something else there now (nothing was
/// replaced).
#[allow(clippy::too_many_arguments)]
pub fn replace_if_unchanged(
    root: &Path,
    rel: &RelPath,
    src: &Path,
    sha256: &str,
    mode: u32,
    mtime_ns: i64,
    expected: &Current,
    changed: impl FnOnce() -> anyhow::Error,
) -> anyhow::Result<()> {
    let file = copy_beside(root, rel, src)?;
    let placed = file.commit_if(sha256, mode, mtime_ns, |dir, name| {
        let (now, seen) = probe::probe_seen(dir, name)?;
        if now != *expected {
            return Err(anyhow::Error::new(Changed));
        }
        Ok(seen)
    });
    match placed {
        Ok(zync_fs::IfUnchanged::Done) => {}
        Ok(_) => return Err(changed()),
        Err(e) if e.is::<Changed>() => return Err(changed()),
        Err(e) => return Err(e),
    }
    fsync_dir_beneath(root, rel.parent().as_ref())?;
    Ok(())
}

/// What a check before a rename found: E's file is not what was expected.
#[derive(Debug)]
struct Changed;

impl std::fmt::Display for Changed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("E's file changed")
    }
}

impl std::error::Error for Changed {}

/// Copies `src` (a regular file, never followed through a symlink) into a new temp file
/// beside `root/rel`, ready to commit.
fn copy_beside(root: &Path, rel: &RelPath, src: &Path) -> anyhow::Result<AtomicFile> {
    let mut from = open_regular(src).with_context(|| format!("cannot read {}", src.display()))?;
    let mut file = AtomicFile::create(root, rel)?;
    if let Ok(meta) = from.metadata() {
        file.reserve(meta.len())?;
    }
    copy_hashing(&mut from, |data| file.write(data).map_err(Into::into))?;
    Ok(file)
}

/// Removes E's file `root/rel` (never through a symlinked parent) only while it is still
/// `expected`, looked at through the directory handle the unlink goes through
/// ([`probe::probe_in`], as [`replace_if_unchanged`] does), and fsyncs its directory. Nothing
/// there is fine: there is nothing to remove.
///
/// # Errors
///
/// A symlinked parent, an I/O error, or `changed()` when E has something else there now
/// (nothing was removed).
pub fn remove_if_unchanged(
    root: &Path,
    rel: &RelPath,
    expected: &Current,
    changed: impl FnOnce() -> anyhow::Error,
) -> anyhow::Result<()> {
    let dir = Dir::parent_of(root, rel)?;
    match probe::probe_in(&dir, rel.file_name())? {
        // Nothing left to remove.
        Current::Missing => return Ok(()),
        now if now != *expected => return Err(changed()),
        _ => {}
    }
    match dir.unlink(rel.file_name()) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => {
            return Err(e).with_context(|| format!("cannot remove {}", rel.to_path(root).display()))
        }
    }
    dir.sync()
        .with_context(|| format!("cannot fsync directory {}", dir.path().display()))?;
    Ok(())
}

/// Removes the temp files (`.zync-tmp-*`, regular files only) beside `root/rel`: what a write
/// killed before its rename leaves there. Returns how many went. Only zync-apply writes temp
/// files into E's directories, and only after recording its intent for the file.
///
/// # Errors
///
/// A symlinked parent.
pub fn remove_temps_beside(root: &Path, rel: &RelPath) -> anyhow::Result<usize> {
    let dir = match Dir::parent_of(root, rel) {
        Ok(dir) => dir,
        // No parent directory: no temp file either.
        Err(zync_fs::FsError::Io { source, .. }) if source.kind() == io::ErrorKind::NotFound => {
            return Ok(0)
        }
        Err(e) => return Err(e.into()),
    };
    let Ok(entries) = dir.entries() else {
        return Ok(0);
    };
    let mut removed = 0;
    for (name, kind) in entries {
        if !name
            .as_encoded_bytes()
            .starts_with(zync_fs::TEMP_PREFIX.as_bytes())
        {
            continue;
        }
        if kind == Some(zync_proto::Kind::File) && dir.unlink(&name).is_ok() {
            removed += 1;
        }
    }
    if removed > 0 {
        dir.sync()
            .with_context(|| format!("cannot fsync directory {}", dir.path().display()))?;
    }
    Ok(removed)
}

/// Records in the daemon's index, in one transaction, that `rel` is now a file with content
/// `sha256` (metadata from `lstat`), and that the directories in `new_dirs` exist.
///
/// # Errors
///
/// The file is gone or not a file, or SQLite failed.
pub fn index_file(
    index: &mut Index,
    dir: &str,
    root: &Path,
    rel: &RelPath,
    sha256: &str,
    new_dirs: &[RelPath],
) -> anyhow::Result<()> {
    // Looked at through the root's handles, as it was written: never through a symlink
    // swapped in for the root or a directory of it since.
    let mut entries = Vec::new();
    for d in new_dirs {
        if let Stat::Entry(m) = zync_fs::lstat_beneath(root, d)? {
            if m.kind == Kind::Dir {
                entries.push((d.as_str(), entry_meta(Kind::Dir, &m, None)));
            }
        }
    }
    let path = rel.to_path(root);
    match zync_fs::lstat_beneath(root, rel)? {
        Stat::Entry(m) if m.kind == Kind::File => {
            entries.push((rel.as_str(), entry_meta(Kind::File, &m, Some(sha256))));
        }
        other => bail!(
            "{} is not a file right after writing it ({other:?})",
            path.display()
        ),
    }
    let mut w = index
        .writer()
        .context("cannot write to the daemon's index")?;
    for (p, meta) in &entries {
        w.upsert(dir, p, meta)
            .with_context(|| format!("cannot record {dir}/{p} in the index"))?;
    }
    w.commit().context("cannot commit to the daemon's index")?;
    Ok(())
}

fn entry_meta(kind: Kind, m: &zync_fs::Meta, sha256: Option<&str>) -> EntryMeta {
    EntryMeta {
        kind,
        size: m.size,
        mtime_ns: m.mtime_ns,
        mode: m.mode,
        inode: m.inode,
        sha256: sha256.map(str::to_string),
        target: None,
    }
}

/// Records in the daemon's index that `rel` is gone.
///
/// # Errors
///
/// SQLite failed.
pub fn index_removed(index: &mut Index, dir: &str, rel: &RelPath) -> anyhow::Result<()> {
    let mut w = index
        .writer()
        .context("cannot write to the daemon's index")?;
    w.tombstone(dir, rel.as_str())
        .with_context(|| format!("cannot record the removal of {dir}/{rel} in the index"))?;
    w.commit().context("cannot commit to the daemon's index")?;
    Ok(())
}

/// The prefix that marks a kept-both file's "backup name" as the path of its conflict copy:
/// the staging schema has no column for that path, and backup names must be plain names, so
/// the path is stored percent-encoded (`/` as `%2F`) after this prefix.
pub const COPY_PREFIX: &str = "copy:";

/// Encodes a conflict copy's path for the backup-name column.
pub fn encode_copy(rel: &RelPath) -> String {
    format!(
        "{COPY_PREFIX}{}",
        rel.as_str().replace('%', "%25").replace('/', "%2F")
    )
}

/// Decodes what [`encode_copy`] made; `None` for an ordinary backup name.
pub fn decode_copy(name: &str) -> Option<String> {
    name.strip_prefix(COPY_PREFIX)
        .map(|s| s.replace("%2F", "/").replace("%25", "%"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsRawFd;
    use std::os::unix::fs::PermissionsExt;

    fn rel(s: &str) -> RelPath {
        RelPath::parse(s).expect("valid test path")
    }

    #[test]
    fn a_file_changed_before_the_rename_is_not_replaced() {
        let e = tempfile::tempdir().expect("tempdir");
        let s = tempfile::tempdir().expect("tempdir");
        std::fs::write(e.path().join("f.txt"), "as it was\n").expect("write E");
        let expected = probe::probe(e.path(), &rel("f.txt")).expect("probe");
        std::fs::write(e.path().join("f.txt"), "edited on E meanwhile\n").expect("write E");
        let src = s.path().join("staged");
        std::fs::write(&src, "R's version\n").expect("write staged");
        let sha = zync_fs::hash_bytes(b"R's version\n");
        let replace = |expected: &Current| {
            replace_if_unchanged(
                e.path(),
                &rel("f.txt"),
                &src,
                &sha,
                0o644,
                0,
                expected,
                || anyhow::anyhow!("changed"),
            )
        };
        let err = replace(&expected).expect_err("E's file changed");
        assert_eq!(err.to_string(), "changed");
        assert_eq!(
            std::fs::read_to_string(e.path().join("f.txt")).expect("read"),
            "edited on E meanwhile\n"
        );
        let names: Vec<_> = std::fs::read_dir(e.path()).expect("list").collect();
        assert_eq!(names.len(), 1, "no temp file may be left");
        let now = probe::probe(e.path(), &rel("f.txt")).expect("probe");
        replace(&now).expect("an unchanged file is replaced");
        assert_eq!(
            std::fs::read_to_string(e.path().join("f.txt")).expect("read"),
            "R's version\n"
        );
        // Nothing there, as expected: written.
        std::fs::remove_file(e.path().join("f.txt")).expect("rm");
        replace(&Current::Missing).expect("a missing file is written");
        assert!(replace(&Current::Missing).is_err(), "now there is one");
    }

    /// A conflict copy's name was free when it was picked; whatever took it before the copy
    /// is written (another run keeping both for the same path in the same second, another
    /// user) is left as it is, and the copy is not written.
    #[test]
    fn a_new_file_never_replaces_what_took_its_name_meanwhile() {
        let e = tempfile::tempdir().expect("tempdir");
        let s = tempfile::tempdir().expect("tempdir");
        let src = s.path().join("staged");
        std::fs::write(&src, "R's version\n").expect("write staged");
        let sha = zync_fs::hash_bytes(b"R's version\n");
        let copy = rel("f.conflict-R-20261207T091500.txt");
        std::fs::write(copy.to_path(e.path()), "another run's copy\n").expect("write");
        let err = write_new(e.path(), &copy, &src, &sha, 0o640, 0).expect_err("the name is taken");
        assert!(err.to_string().contains("nothing was replaced"), "{err:#}");
        assert_eq!(
            std::fs::read_to_string(copy.to_path(e.path())).expect("read"),
            "another run's copy\n"
        );
        let names: Vec<_> = std::fs::read_dir(e.path()).expect("list").collect();
        assert_eq!(names.len(), 1, "no temp file may be left");
        std::fs::remove_file(copy.to_path(e.path())).expect("rm");
        write_new(e.path(), &copy, &src, &sha, 0o640, 0).expect("a free name is written");
        let written = copy.to_path(e.path());
        assert_eq!(
            std::fs::read_to_string(&written).expect("read"),
            "R's version\n"
        );
        assert_eq!(
            std::fs::metadata(&written)
                .expect("stat")
                .permissions()
                .mode()
                & 0o777,
            0o640
        );
    }

    /// Another local user who may write to E's tree swaps E's directory `d` with their own
    /// (`renameat2(RENAME_EXCHANGE)` in a loop) while R's version of `d/f` is put in place "if
    /// unchanged". Their `f` is exactly what zync-apply saw before E's user edited `d/f`.
    /// Returns how many times E's edit was replaced, and how many tries reached the check.
    fn swap_during(
        swap_with_symlink: bool,
        op: impl Fn(&Path, &Current) -> anyhow::Result<()>,
    ) -> (u32, u32) {
        use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
        const SEEN: &[u8] = b"as staged against";
        let tmp = tempfile::tempdir().expect("tempdir");
        let root = tmp.path().join("root");
        std::fs::create_dir_all(root.join("d")).expect("mkdir");
        std::fs::write(root.join("d/f"), SEEN).expect("write");
        let expected = probe::probe(&root, &rel("d/f")).expect("probe");
        std::fs::write(root.join("d/f"), b"edited on E").expect("write");
        let theirs = tmp.path().join("theirs");
        std::fs::create_dir(&theirs).expect("mkdir");
        std::fs::write(theirs.join("f"), SEEN).expect("write");
        let swapped = if swap_with_symlink {
            let link = tmp.path().join("link");
            std::os::unix::fs::symlink(&theirs, &link).expect("symlink");
            link
        } else {
            theirs.clone()
        };
        // Both directories wherever the exchanges leave them.
        let real = File::open(root.join("d")).expect("open d");
        let real_f = PathBuf::from(format!("/proc/self/fd/{}/f", real.as_raw_fd()));
        let their_dir = File::open(&theirs).expect("open theirs");
        let their_f = PathBuf::from(format!("/proc/self/fd/{}/f", their_dir.as_raw_fd()));
        let d = root.join("d");

        let stop = AtomicBool::new(false);
        let swaps = AtomicU64::new(0);
        let (mut edits_replaced, mut checked) = (0u32, 0u32);
        std::thread::scope(|scope| {
            scope.spawn(|| crate::testkit::exchange_until(&d, &swapped, &stop, &swaps));
            // At least 2 s and 50 checks (a loaded machine flushes slowly), at most 20 s.
            let started = std::time::Instant::now();
            let enough = |checked: u32| {
                let spent = started.elapsed();
                spent > std::time::Duration::from_secs(20)
                    || (spent > std::time::Duration::from_secs(2) && checked >= 50)
            };
            while !enough(checked) {
                // While d is the symlink the change is refused before any check.
                match op(&root, &expected) {
                    Ok(()) => checked += 1,
                    Err(e) if e.to_string() == "changed" => checked += 1,
                    Err(_) => {}
                }
                if std::fs::read(&real_f).ok().as_deref() != Some(&b"edited on E"[..]) {
                    edits_replaced += 1;
                    std::fs::write(&real_f, b"edited on E").expect("edit again");
                }
                // Written into their directory while it stood at d: fine, and they put
                // back the bait.
                if std::fs::read(&their_f).ok().as_deref() != Some(SEEN) {
                    std::fs::write(&their_f, SEEN).expect("bait again");
                }
            }
            stop.store(true, Ordering::Relaxed);
        });
        assert!(
            swaps.load(Ordering::Relaxed) > 100,
            "the swapper barely ran"
        );
        (edits_replaced, checked)
    }

    /// R's version put in place "if unchanged" (apply, undo).
    fn replace(root: &Path, expected: &Current) -> anyhow::Result<()> {
        let src = root.with_file_name("staged");
        if !src.exists() {
            std::fs::write(&src, b"R's version").expect("write");
        }
        let sha = zync_fs::hash_bytes(b"R's version");
        replace_if_unchanged(root, &rel("d/f"), &src, &sha, 0o644, 0, expected, || {
            anyhow::anyhow!("changed")
        })
    }

    /// E's file removed "if unchanged" (apply of R's deletion, undo of a file apply made).
    fn remove(root: &Path, expected: &Current) -> anyhow::Result<()> {
        remove_if_unchanged(root, &rel("d/f"), expected, || anyhow::anyhow!("changed"))
    }

    /// Runs [`swap_during`] and asserts that E's edit was never lost to `op`.
    fn assert_edit_survives(
        swap_with_symlink: bool,
        op: fn(&Path, &Current) -> anyhow::Result<()>,
    ) {
        let (lost, checked) = swap_during(swap_with_symlink, op);
        assert!(checked > 20, "only {checked} tries reached the check");
        assert_eq!(lost, 0, "E's edit was lost {lost} times in {checked}");
    }

    #[test]
    fn an_edit_is_never_replaced_because_a_look_was_led_through_a_symlink_swapped_in() {
        assert_edit_survives(true, replace);
    }

    #[test]
    fn an_edit_is_never_replaced_because_a_look_was_made_in_a_directory_swapped_in() {
        assert_edit_survives(false, replace);
    }

    #[test]
    fn an_edit_is_never_removed_because_a_look_was_led_through_a_symlink_swapped_in() {
        assert_edit_survives(true, remove);
    }

    #[test]
    fn an_edit_is_never_removed_because_a_look_was_made_in_a_directory_swapped_in() {
        assert_edit_survives(false, remove);
    }

    /// E's user saves `f` (a new file renamed over it, as editors do) at moments swept across
    /// the apply's last check, which reads the whole 32 MiB file E had. A save landing while
    /// the check reads must make it look again, not approve the version it started reading:
    /// R's version would then replace the save.
    #[test]
    fn a_save_on_e_while_the_last_check_reads_the_file_is_never_replaced() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let root = tmp.path().join("root");
        std::fs::create_dir(&root).expect("mkdir");
        let mut big = vec![0u8; 32 << 20];
        for (i, b) in big.iter_mut().enumerate() {
            *b = (i % 251) as u8;
        }
        let master = tmp.path().join("master");
        std::fs::write(&master, &big).expect("write");
        std::fs::copy(&master, root.join("f")).expect("copy");
        let expected = probe::probe(&root, &rel("f")).expect("probe");
        let src = tmp.path().join("staged");
        std::fs::write(&src, b"R's version").expect("write");
        let sha = zync_fs::hash_bytes(b"R's version");
        let (mut lost, mut refused) = (0u32, 0u32);
        // Delays from 0 to 60 ms after the apply starts, in steps of 0.5 ms.
        for step in 0..120u64 {
            let _ = std::fs::remove_file(root.join("f"));
            std::fs::hard_link(&master, root.join("f")).expect("link");
            let save = root.join(".save");
            std::fs::write(&save, b"saved on E").expect("write");
            let start = std::time::Instant::now();
            let at = std::time::Duration::from_micros(step * 500);
            let result = std::thread::scope(|scope| {
                scope.spawn(|| {
                    // The other side of the race: the save lands at `at`.
                    while start.elapsed() < at {
                        std::hint::spin_loop();
                    }
                    std::fs::rename(&save, root.join("f")).expect("save");
                });
                replace_if_unchanged(&root, &rel("f"), &src, &sha, 0o644, 0, &expected, || {
                    anyhow::anyhow!("changed")
                })
            });
            match std::fs::read(root.join("f")).expect("read").as_slice() {
                b"R's version" => lost += 1,
                b"saved on E" => refused += u32::from(result.is_err()),
                other => panic!("f holds {} bytes of something else", other.len()),
            }
        }
        assert_eq!(
            lost, 0,
            "the save was replaced {lost} times in 120 ({refused} refused)"
        );
        assert!(refused > 0, "no save landed before the check");
    }

    #[test]
    fn backup_keeps_content_mode_and_mtime_and_picks_a_free_name() {
        let e = tempfile::tempdir().expect("tempdir");
        let s = tempfile::tempdir().expect("tempdir");
        let f = e.path().join("f");
        std::fs::write(&f, b"precious").expect("write");
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o640)).expect("chmod");
        zync_fs::set_mtime(&f, 1_600_000_000_000_000_007).expect("mtime");
        let session = s.path().join("sync.db.staging/session");
        let b1 = backup(e.path(), &rel("f"), &session).expect("backup");
        let b2 = backup(e.path(), &rel("f"), &session).expect("backup");
        assert_eq!(
            (b1.name.as_str(), b2.name.as_str()),
            ("backup-1", "backup-2")
        );
        assert_eq!(std::fs::read(&b1.path).expect("read"), b"precious");
        let meta = &b1.meta;
        assert_eq!(meta.mode, 0o640);
        assert_eq!(meta.mtime_ns, 1_600_000_000_000_000_007);
        assert_eq!(meta.sha256, zync_fs::hash_bytes(b"precious"));
    }

    #[test]
    fn backups_and_a_new_session_directory_are_private() {
        let e = tempfile::tempdir().expect("tempdir");
        let s = tempfile::tempdir().expect("tempdir");
        let f = e.path().join("f");
        std::fs::write(&f, b"E's file").expect("write");
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o644)).expect("chmod");
        let session = s.path().join("sync.db.staging/session");
        let b = backup(e.path(), &rel("f"), &session).expect("backup");
        let mode = |p: &Path| std::fs::metadata(p).expect("stat").mode() & 0o7777;
        for (path, want) in [
            (session.parent().expect("staging root").to_path_buf(), 0o700),
            (session.clone(), 0o700),
            (b.path.clone(), 0o600),
        ] {
            assert_eq!(mode(&path), want, "mode of {}", path.display());
        }
        assert!(
            !meta_path(&b.path).exists(),
            "the backup's metadata is the database's, not a file beside it"
        );
    }

    #[test]
    fn ensure_parents_reports_new_dirs_and_refuses_symlinks() {
        let e = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir(e.path().join("a")).expect("mkdir");
        let made = ensure_parents(e.path(), &rel("a/b/c/f")).expect("ensure");
        assert_eq!(made, vec![rel("a/b"), rel("a/b/c")]);
        let outside = tempfile::tempdir().expect("tempdir");
        std::os::unix::fs::symlink(outside.path(), e.path().join("l")).expect("symlink");
        assert!(ensure_parents(e.path(), &rel("l/x/f")).is_err());
        assert!(!outside.path().join("x").exists(), "created a dir outside");
    }

    #[test]
    fn copy_paths_round_trip_as_plain_names() {
        let rel = RelPath::parse("a/b%2F/c.txt").expect("path");
        let enc = encode_copy(&rel);
        assert!(zync_db::is_plain_name(&enc), "{enc}");
        assert_eq!(decode_copy(&enc).as_deref(), Some("a/b%2F/c.txt"));
        assert_eq!(decode_copy("backup-1"), None);
    }
}
