//! Test fixtures: a temp database with a mapped dir on "E", sessions staged directly through
//! the staging API, and helpers to run commands and read back E and the database.

use std::path::{Path, PathBuf};

use clap::Parser;
use zync_db::{
    is_conflict, merge_mode, Action, BaseMode, FileState, Index, ModeMerge, OnE, SessionStatus,
    StagedFile,
};

use crate::outcome::Outcome;
use crate::probe::{self, Current};
use crate::prompt::Prompter;
use crate::{run_with, Cli};

/// One file to stage.
pub struct Spec<'a> {
    pub path: &'a str,
    /// R's content; `None` for a delete.
    pub content: Option<&'a [u8]>,
    /// What R last synced from E; `None` = new on R.
    pub base: Option<&'a [u8]>,
    /// The mode R sent.
    pub mode: u32,
    /// The mode of R's base, as R sent it; `None`: E's mode when staged, as the daemon
    /// records for a client that sends none (or nothing, when E has no file).
    pub base_mode: Option<u32>,
}

impl Spec<'_> {
    /// The same file with mode `mode` from R.
    pub fn mode(self, mode: u32) -> Self {
        Spec { mode, ..self }
    }

    /// The same file with R's base at mode `mode`.
    pub fn base_mode(self, mode: u32) -> Self {
        Spec {
            base_mode: Some(mode),
            ..self
        }
    }
}

pub fn write(
    path: &'static str,
    content: &'static [u8],
    base: Option<&'static [u8]>,
) -> Spec<'static> {
    Spec {
        path,
        content: Some(content),
        base,
        mode: 0o644,
        base_mode: None,
    }
}

pub fn delete(path: &'static str, base: Option<&'static [u8]>) -> Spec<'static> {
    Spec {
        path,
        content: None,
        base,
        mode: 0o644,
        base_mode: None,
    }
}

/// The root `dir` at `path` as the daemon records it: with the directory it leads to now.
pub fn served(dir: &str, path: &Path) -> zync_db::StoredRoot {
    let id = zync_fs::RootId::of(path).expect("the root's identity");
    zync_db::StoredRoot {
        dir: dir.into(),
        path: path.display().to_string(),
        identity: Some(zync_db::RootIdentity {
            dev: id.dev,
            ino: id.ino,
            born_ns: id.born_ns,
        }),
    }
}

pub struct Fixture {
    pub _tmp: tempfile::TempDir,
    pub db: PathBuf,
    /// E's directory mapped as "docs".
    pub root: PathBuf,
}

impl Fixture {
    pub fn new() -> Fixture {
        let tmp = tempfile::tempdir().expect("tempdir");
        let db = tmp.path().join("sync.db");
        let root = tmp.path().join("e-docs");
        std::fs::create_dir(&root).expect("mkdir");
        let mut index = Index::open(&db).expect("open db");
        index
            .set_roots(&[served("docs", &root)])
            .expect("set roots");
        Fixture {
            _tmp: tmp,
            db,
            root,
        }
    }

    pub fn index(&self) -> Index {
        Index::open(&self.db).expect("open db")
    }

    /// Another user's move: E's directory goes to `<root>.real` and a symlink to `theirs`
    /// takes its place.
    pub fn swap_root_for(&self, theirs: &Path) {
        std::fs::rename(&self.root, self.real_root()).expect("move the root away");
        std::os::unix::fs::symlink(theirs, &self.root).expect("symlink");
    }

    /// Undoes [`Fixture::swap_root_for`].
    pub fn put_root_back(&self) {
        std::fs::remove_file(&self.root).expect("remove the symlink");
        std::fs::rename(self.real_root(), &self.root).expect("put the root back");
    }

    fn real_root(&self) -> PathBuf {
        self.root.with_file_name("e-docs.real")
    }

    /// Stages a session the way the daemon would: content in the session dir, the conflict
    /// flag (content and mode) decided against E as it is now.
    pub fn stage(&self, id: &str, specs: &[Spec<'_>]) {
        self.stage_from(id, "client-r", specs);
    }

    /// As [`Fixture::stage`], pushed by client `client`.
    pub fn stage_from(&self, id: &str, client: &str, specs: &[Spec<'_>]) {
        let index = self.index();
        index.create_session(id, client).expect("create session");
        let dir = zync_db::session_dir(&self.db, id);
        std::fs::create_dir_all(&dir).expect("mkdir session");
        for (n, s) in specs.iter().enumerate() {
            let rel = zync_fs::RelPath::parse(s.path).expect("path");
            let current = probe::probe(&self.root, &rel).expect("probe");
            let sha = s.content.map(zync_fs::hash_bytes);
            let base = s.base.map(zync_fs::hash_bytes);
            let action = if s.content.is_some() {
                Action::Write
            } else {
                Action::Delete
            };
            let staged_name = s.content.map(|c| {
                let name = format!("staged-{n}");
                std::fs::write(dir.join(&name), c).expect("write staged");
                name
            });
            let (on_e, e_mode) = match &current {
                Current::Missing => (OnE::Missing, None),
                Current::File { sha256, mode, .. } => (OnE::File(sha256), Some(*mode & 0o777)),
                Current::Other(_) => (OnE::Other, None),
            };
            let base_mode = base.as_ref().and(s.base_mode.or(e_mode));
            let mode_conflict = merge_mode(
                action,
                BaseMode::of(base.as_deref(), base_mode),
                s.mode,
                zync_fs::mask_mode(s.mode),
                e_mode,
            ) == ModeMerge::Conflict;
            index
                .add_staged_file(&StagedFile {
                    session_id: id.to_string(),
                    dir: "docs".into(),
                    path: s.path.into(),
                    action,
                    mode: s.mode,
                    size: s.content.map_or(0, |c| c.len() as u64),
                    mtime_ns: 1_700_000_000_000_000_000,
                    conflict: is_conflict(action, base.as_deref(), sha.as_deref(), on_e)
                        || mode_conflict,
                    sha256: sha,
                    base_sha256: base,
                    state: FileState::Staged,
                    staged_name,
                    backup_name: None,
                    e_existed: false,
                    base_mode,
                })
                .expect("add staged file");
        }
        index
            .set_session_status(id, SessionStatus::Staged)
            .expect("status");
    }

    pub fn e_write(&self, path: &str, content: &[u8]) {
        let p = self.root.join(path);
        if let Some(parent) = p.parent() {
            std::fs::create_dir_all(parent).expect("mkdir");
        }
        std::fs::write(p, content).expect("write E");
    }

    /// Every file under E's directory with its content: what "E unchanged" compares.
    pub fn e_tree(&self) -> std::collections::BTreeMap<String, Vec<u8>> {
        let mut found = std::collections::BTreeMap::new();
        let mut stack = vec![self.root.clone()];
        while let Some(dir) = stack.pop() {
            for entry in std::fs::read_dir(&dir).expect("read E").flatten() {
                let path = entry.path();
                if path.is_dir() {
                    stack.push(path);
                } else {
                    let rel = path.strip_prefix(&self.root).expect("under E");
                    found.insert(
                        rel.display().to_string(),
                        std::fs::read(&path).expect("read"),
                    );
                }
            }
        }
        found
    }

    pub fn e_read(&self, path: &str) -> Option<Vec<u8>> {
        match std::fs::read(self.root.join(path)) {
            Ok(d) => Some(d),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => panic!("read {path}: {e}"),
        }
    }

    pub fn cli(&self, args: &[&str]) -> Cli {
        let db = self.db.display().to_string();
        let mut all = vec!["zync-apply", "--db", db.as_str()];
        all.extend_from_slice(args);
        Cli::try_parse_from(all).expect("parse command line")
    }

    /// Runs a command; returns its result and its stdout.
    pub fn run(
        &self,
        args: &[&str],
        prompter: &mut dyn Prompter,
    ) -> (anyhow::Result<Outcome>, String) {
        let mut out = Vec::new();
        let r = run_with(&self.cli(args), &mut out, prompter);
        (r, String::from_utf8(out).expect("utf-8 output"))
    }

    pub fn file(&self, id: &str, path: &str) -> StagedFile {
        self.index()
            .staged_files(id)
            .expect("files")
            .into_iter()
            .find(|f| f.path == path)
            .unwrap_or_else(|| panic!("no staged file {path}"))
    }

    pub fn state(&self, id: &str, path: &str) -> FileState {
        self.file(id, path).state
    }

    pub fn status(&self, id: &str) -> SessionStatus {
        self.index()
            .session(id)
            .expect("session")
            .expect("exists")
            .status
    }

    pub fn session_dir(&self, id: &str) -> PathBuf {
        zync_db::session_dir(&self.db, id)
    }

    /// The index's live sha256 for docs/path, `None` when absent or a tombstone.
    pub fn indexed(&self, path: &str) -> Option<String> {
        self.index()
            .get("docs", path)
            .expect("get")
            .filter(|e| !e.deleted)
            .map(|e| e.meta.sha256.unwrap_or_default())
    }

    /// Whether the index has a tombstone for docs/path.
    pub fn tombstoned(&self, path: &str) -> bool {
        self.index()
            .get("docs", path)
            .expect("get")
            .is_some_and(|e| e.deleted)
    }
}

pub fn sha(data: &[u8]) -> String {
    zync_fs::hash_bytes(data)
}

pub fn exists(p: &Path) -> bool {
    std::fs::symlink_metadata(p).is_ok()
}

pub use zync_fs::race::exchange_until;
