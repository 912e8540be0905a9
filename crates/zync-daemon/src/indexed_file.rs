//! A regular file opened for serving (GET_FILE, GET_DELTA): found live in the index, opened
//! without following a symlink, and checked to be still what its index row says, before it is
//! served and again after it was read whole. Anything else is `stale`: a newer change is on
//! its way.

use std::path::{Path, PathBuf};
use zync_proto::Kind;

use zync_db::Index;
use zync_fs::{Parents, RelPath};
use zync_proto::ErrorCode;

use crate::refusal::Refusal;

/// A regular file opened for serving (GET_FILE, GET_DELTA), with the index row it matched.
pub(crate) struct IndexedFile {
    /// The path within its directory.
    pub(crate) rel: RelPath,
    /// The absolute path.
    pub(crate) abs: PathBuf,
    /// Opened without following a symlink.
    pub(crate) file: std::fs::File,
    /// Size, mtime, mode and checksum, as indexed.
    pub(crate) size: u64,
    pub(crate) mtime_ns: i64,
    pub(crate) mode: u32,
    pub(crate) sha256: String,
}

impl IndexedFile {
    /// The `stale` refusal for `rel`: it changed, a newer change is coming.
    pub(crate) fn stale_refusal(rel: &RelPath, why: &str) -> Refusal {
        Refusal::new(
            ErrorCode::Stale,
            format!("{rel} {why}; ask again after the next change"),
        )
    }

    /// Checks the open file is still a regular file of the indexed size and its path has the
    /// indexed mtime: after reading it whole (GET_DELTA). [`open`] checked it before.
    pub(crate) fn check_unchanged(&self) -> Result<(), Refusal> {
        let meta = self
            .file
            .metadata()
            .map_err(|e| Self::stale_refusal(&self.rel, &format!("cannot be read ({e})")))?;
        let mtime_ns = zync_fs::lstat(&self.abs)
            .ok()
            .and_then(|s| match s {
                zync_fs::Stat::Entry(m) => Some(m.mtime_ns),
                _ => None,
            })
            .unwrap_or(i64::MIN);
        if meta.len() != self.size || mtime_ns != self.mtime_ns || !meta.is_file() {
            return Err(Self::stale_refusal(
                &self.rel,
                "changed since it was indexed",
            ));
        }
        Ok(())
    }
}

/// Opens the indexed regular file `rel` of `dir`, checked in the order docs/PROTOCOL.md gives
/// for GET_FILE: the index has a live regular-file row for it, and the file on disk is still
/// what that row says (parents are real directories, no symlink followed, same size and mtime,
/// checksum known), else `stale`: a newer change is on its way. The file is opened relative to
/// its directory's handle from `parents` (one name, `O_NOFOLLOW`), so what is checked is what
/// is read. Blocking: runs off the reactor.
pub(crate) fn open(
    index: &Index,
    parents: &mut Parents,
    root: &Path,
    dir: &str,
    rel: RelPath,
) -> Result<IndexedFile, Refusal> {
    let entry = match index.to_serve(dir, rel.as_str())? {
        Some(e) => e,
        None => {
            return Err(Refusal::new(
                ErrorCode::NotFound,
                format!("{rel} is not in the index"),
            ))
        }
    };
    if entry.kind != Kind::File {
        return Err(Refusal::new(
            ErrorCode::NotAFile,
            format!("{rel} is a {}, not a regular file", entry.kind.as_str()),
        ));
    }
    let stale = |why: String| IndexedFile::stale_refusal(&rel, &why);
    let parent = parents
        .of(root, &rel)
        .map_err(|e| stale(format!("changed: {e}")))?;
    // The open file itself is what is served: its size and mtime, from `fstat` on the
    // descriptor once opened, must be the indexed ones.
    let opened = match parent.open_file_to_read(rel.file_name()) {
        Ok(Some(opened)) => opened,
        Ok(None) => return Err(stale("is no longer a regular file".to_string())),
        Err(e) => return Err(stale(format!("cannot be opened ({e})"))),
    };
    let Some(sha256) = entry.sha256 else {
        return Err(stale("has no checksum yet".to_string()));
    };
    if opened.size != entry.size || opened.mtime_ns != entry.mtime_ns {
        return Err(stale("changed since it was indexed".to_string()));
    }
    let file = opened.file;
    Ok(IndexedFile {
        abs: rel.to_path(root),
        rel,
        file,
        size: entry.size,
        mtime_ns: entry.mtime_ns,
        mode: entry.mode,
        sha256,
    })
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::io::Read;
    use zync_db::EntryMeta;

    /// Indexes the regular file `rel` under `root` as it is now, in dir `d`.
    pub(crate) fn index_file(index: &mut Index, root: &Path, rel: &str) {
        let Ok(zync_fs::Stat::Entry(m)) = zync_fs::lstat(&root.join(rel)) else {
            panic!("{rel} is not there to index");
        };
        let meta = EntryMeta {
            kind: m.kind,
            size: m.size,
            mtime_ns: m.mtime_ns,
            mode: m.mode,
            inode: m.inode,
            sha256: Some("0".repeat(64)),
            target: None,
        };
        let mut w = index.writer().expect("writer");
        w.upsert("d", rel, &meta).expect("upsert");
        w.commit().expect("commit");
    }

    fn content(opened: Result<IndexedFile, Refusal>) -> String {
        let mut file = match opened {
            Ok(opened) => opened.file,
            Err(refusal) => panic!("refused: {}", refusal.message()),
        };
        let mut s = String::new();
        file.read_to_string(&mut s).expect("read");
        s
    }

    fn rel(s: &str) -> RelPath {
        RelPath::parse(s).expect("relpath")
    }

    /// Copies `from`'s mtime to `to`, so that only the directory tells them apart.
    fn same_mtime(from: &Path, to: &Path) {
        let mtime = std::fs::metadata(from)
            .and_then(|m| m.modified())
            .expect("mtime");
        std::fs::File::options()
            .write(true)
            .open(to)
            .and_then(|f| f.set_modified(mtime))
            .expect("set mtime");
    }

    #[test]
    fn a_directory_swapped_for_a_symlink_mid_batch_is_never_read_through() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let root = tmp.path().join("root");
        let outside = tmp.path().join("outside");
        std::fs::create_dir_all(root.join("sub")).expect("mkdir");
        std::fs::create_dir_all(&outside).expect("mkdir");
        for name in ["x", "y"] {
            std::fs::write(root.join("sub").join(name), "inside!\n").expect("write");
            // The same size and mtime outside: only the directory tells them apart.
            std::fs::write(outside.join(name), "SECRET!\n").expect("write");
            same_mtime(&root.join("sub").join(name), &outside.join(name));
        }
        let mut index = Index::open_in_memory().expect("index");
        index_file(&mut index, &root, "sub/x");
        index_file(&mut index, &root, "sub/y");

        let mut batch = Parents::default();
        let x = open(&index, &mut batch, &root, "d", rel("sub/x"));
        assert_eq!(content(x), "inside!\n");
        // Another user swaps the directory for a symlink to the outside mid-batch.
        std::fs::rename(root.join("sub"), root.join("moved")).expect("move");
        std::os::unix::fs::symlink(&outside, root.join("sub")).expect("symlink");
        // The batch's handle is still the real directory: its file, never the outside's.
        let y = open(&index, &mut batch, &root, "d", rel("sub/y"));
        assert_eq!(content(y), "inside!\n");
        // A new batch looks again and finds the symlink: stale, nothing read.
        let again = open(&index, &mut Parents::default(), &root, "d", rel("sub/y"));
        match again {
            Ok(_) => panic!("served sub/y through a symlinked directory"),
            Err(refusal) => assert_eq!(refusal.code(), ErrorCode::Stale, "{}", refusal.message()),
        }
    }

    #[test]
    fn a_file_changed_or_replaced_since_it_was_indexed_is_stale() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let root = tmp.path();
        std::fs::write(root.join("a"), "indexed\n").expect("write");
        std::fs::write(root.join("b"), "indexed\n").expect("write");
        let mut index = Index::open_in_memory().expect("index");
        index_file(&mut index, root, "a");
        index_file(&mut index, root, "b");
        let mut batch = Parents::default();
        assert_eq!(
            content(open(&index, &mut batch, root, "d", rel("a"))),
            "indexed\n"
        );

        // Grown, and replaced by a symlink to a file of the same size and mtime.
        std::fs::write(root.join("a"), "indexed, then more\n").expect("write");
        std::fs::write(root.join("target"), "SECRET!!\n").expect("write");
        same_mtime(&root.join("b"), &root.join("target"));
        std::fs::remove_file(root.join("b")).expect("rm");
        std::os::unix::fs::symlink(root.join("target"), root.join("b")).expect("symlink");
        for path in ["a", "b"] {
            match open(&index, &mut batch, root, "d", rel(path)) {
                Ok(_) => panic!("{path} was served though it is not what the index says"),
                Err(r) => assert_eq!(r.code(), ErrorCode::Stale, "{path}: {}", r.message()),
            }
        }
        // Not in the index at all.
        match open(&index, &mut batch, root, "d", rel("target")) {
            Ok(_) => panic!("an unindexed file was served"),
            Err(r) => assert_eq!(r.code(), ErrorCode::NotFound, "{}", r.message()),
        }
    }
}
