//! What a request's handler works with, apart from the socket: the daemon's shared state,
//! who the client is, this connection's own read connection to the index (opened on first
//! use, queried off the reactor) and the upstream session open on the connection. Handlers
//! take it instead of the whole connection, so the simple ones run without a network.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use zync_db::Index;
use zync_fs::RelPath;
use zync_proto::ErrorCode;

use crate::refusal::Refusal;
use crate::shared::{ServedRoot, Shared};
use crate::staging::{Discard, OpenSession};

/// A file request's directory and path, checked: the root's path, the dir's name, the path in
/// it, and the offset to start from.
pub(crate) type Located = (PathBuf, String, RelPath, u64);

/// Whether the parent directories of a batch of file requests are ignored, each evaluated
/// once ([`Context::locate_in_batch`]): a batch of files in one directory evaluated the rules
/// for every ancestor of every file, a tenth of the daemon's work serving small files.
#[derive(Debug, Default)]
pub(crate) struct KeptDirs {
    /// By served dir and directory path: ignored or not.
    ignored: HashMap<(String, String), bool>,
    /// How many directories were evaluated.
    pub(crate) evaluated: usize,
}

/// The state a connection's handlers share.
pub(crate) struct Context {
    /// What every connection shares.
    pub(crate) shared: Arc<Shared>,
    /// The client's stable id from HELLO.
    pub(crate) client_id: String,
    /// This connection's read connection to the index, once opened.
    db: Option<Arc<Mutex<Index>>>,
    /// The upstream session open on this connection, if any.
    pub(crate) upstream: Option<OpenSession>,
    /// Content frames of a refused upload, dropped as they arrive.
    pub(crate) discard: Option<Discard>,
    /// Set by a handler whose client must be cut off once answered (an upload that stalled):
    /// the reason the connection is closed with.
    pub(crate) hang_up: Option<String>,
}

impl Context {
    /// The context of a connection from `client_id`.
    pub(crate) fn new(shared: Arc<Shared>, client_id: String) -> Context {
        Context {
            shared,
            client_id,
            db: None,
            upstream: None,
            discard: None,
            hang_up: None,
        }
    }

    /// This connection's own read connection to the index, opened on first use.
    pub(crate) async fn index(&mut self) -> Result<Arc<Mutex<Index>>, Refusal> {
        if let Some(db) = &self.db {
            return Ok(db.clone());
        }
        let path = self.shared.db_path.clone();
        let index = tokio::task::spawn_blocking(move || Index::open(&path))
            .await
            .map_err(|e| Refusal::new(ErrorCode::Internal, e.to_string()))??;
        let db = Arc::new(Mutex::new(index));
        self.db = Some(db.clone());
        Ok(db)
    }

    /// Runs a query on this connection's own read connection, off the reactor.
    pub(crate) async fn query<T, F>(&mut self, f: F) -> Result<T, Refusal>
    where
        T: Send + 'static,
        F: FnOnce(&Index) -> Result<T, zync_db::DbError> + Send + 'static,
    {
        let db = self.index().await?;
        tokio::task::spawn_blocking(move || {
            let index = db
                .lock()
                .map_err(|_| Refusal::new(ErrorCode::Internal, "index lock poisoned"))?;
            f(&index).map_err(Refusal::from)
        })
        .await
        .map_err(|e| Refusal::new(ErrorCode::Internal, e.to_string()))?
    }

    /// The served directory called `dir`, or the `unknown_dir` refusal naming those served.
    pub(crate) fn served(&self, dir: &str) -> Result<&ServedRoot, Refusal> {
        self.shared.root(dir).ok_or_else(|| {
            let names: Vec<&str> = self.shared.roots.iter().map(|r| r.name.as_str()).collect();
            Refusal::new(
                ErrorCode::UnknownDir,
                format!(
                    "this daemon serves no directory named {dir:?} (it serves: {})",
                    names.join(", ")
                ),
            )
        })
    }

    /// Checks a file request's directory and path: the root, the directory name, the path
    /// (parsed once here, invariant 3 (docs/ARCHITECTURE.md)), and that the daemon's rules do
    /// not ignore it.
    pub(crate) fn locate(
        &self,
        dir: String,
        path: &str,
        offset: Option<u64>,
    ) -> Result<Located, Refusal> {
        self.locate_in_batch(dir, path, offset, &mut KeptDirs::default())
    }

    /// [`Context::locate`] for one request of a batch: the ignore rules of each parent
    /// directory are evaluated once for the batch (`kept`), then only each file's own name.
    pub(crate) fn locate_in_batch(
        &self,
        dir: String,
        path: &str,
        offset: Option<u64>,
        kept: &mut KeptDirs,
    ) -> Result<Located, Refusal> {
        let root = self.served(&dir)?;
        let rel = RelPath::parse(path)
            .map_err(|e| Refusal::new(ErrorCode::InvalidPath, e.to_string()))?;
        let ignored = match rel.parent() {
            None => root.rules.is_ignored(&rel, false),
            Some(parent) => {
                let key = (dir.clone(), parent.as_str().to_string());
                let parent_ignored = match kept.ignored.get(&key) {
                    Some(&known) => known,
                    None => {
                        kept.evaluated += 1;
                        let ignored = root.rules.is_ignored(&parent, true);
                        kept.ignored.insert(key, ignored);
                        ignored
                    }
                };
                parent_ignored || root.rules.is_ignored_in_kept_dir(&rel, false)
            }
        };
        if ignored {
            return Err(Refusal::new(
                ErrorCode::NotAFile,
                format!("{rel} is ignored by the daemon's rules"),
            ));
        }
        Ok((root.path.clone(), dir, rel, offset.unwrap_or(0)))
    }

    /// Called when the connection ends: an unfinished upstream session is aborted, its files
    /// removed and its files' rows deleted (`Index::abort_session`: only the newest aborted
    /// sessions keep a row, with no files), so a client that keeps opening sessions and
    /// leaving them cannot grow E's database or staging area (invariant 9
    /// (docs/ARCHITECTURE.md)).
    pub(crate) async fn abort_upstream(&mut self) {
        let Some(session) = self.upstream.take() else {
            return;
        };
        if !session.created {
            // Nothing was recorded or written for it.
            return;
        }
        let id = session.id.clone();
        let aborted = self
            .query(move |index| {
                index.set_commits_wait(true)?;
                index.abort_session(&id)
            })
            .await;
        match aborted {
            Ok(true) => {}
            Ok(false) => {
                // Not receiving any more: its files are not this connection's to remove.
                tracing::warn!(session = %session.id, "the session left open by the client is no longer receiving; left as it is");
                return;
            }
            Err(e) => {
                tracing::warn!(session = %session.id, "cannot mark the session aborted: {}", e.message());
            }
        }
        let dir = session.dir.clone();
        let removed = tokio::task::spawn_blocking(move || zync_db::remove_dir(&dir))
            .await
            .unwrap_or_else(|e| Err(std::io::Error::other(e)));
        if let Err(e) = removed {
            tracing::warn!(dir = %session.dir.display(), "cannot remove an aborted session's files: {e}");
        }
        tracing::info!(session = %session.id, "upstream session aborted: the client left before finalizing");
    }
}

/// A context over a database in a temp dir, serving one directory, `docs`, for handler tests
/// that need no network.
#[cfg(test)]
pub(crate) mod testing {
    use std::sync::Arc;

    use tokio::sync::watch;

    use super::Context;
    use crate::indexer::Status;
    use crate::shared::{Limits, ServedRoot, Shared};
    use crate::token::Auth;

    /// The context, the temp dir holding the database (`sync.db`) and the served `docs/`.
    pub(crate) fn context(client_id: &str) -> (Context, tempfile::TempDir) {
        let tmp = tempfile::tempdir().expect("tempdir");
        let root = tmp.path().join("docs");
        std::fs::create_dir(&root).expect("mkdir docs");
        let db_path = tmp.path().join("sync.db");
        let index = zync_db::Index::open(&db_path).expect("index");
        let rules = zync_fs::IgnoreRules::new(&root, &[], true).expect("ignore rules");
        let (_, status) = watch::channel(Status::default());
        let shared = Shared {
            index_id: index.index_id().to_string(),
            roots: vec![ServedRoot {
                name: zync_fs::DirName::parse("docs").expect("name"),
                path: root,
                rules: Arc::new(rules),
            }],
            db_path,
            auth: Auth::Disabled,
            limits: Limits::default(),
            status,
            own: crate::own::OwnPaths::default(),
            staging: crate::budget::StagingLimits::default(),
            budget: crate::budget::Budget::default(),
        };
        (Context::new(Arc::new(shared), client_id.to_string()), tmp)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Whether `path` is located (true) or refused as ignored (false) within the batch `kept`.
    fn served(cx: &Context, path: &str, kept: &mut KeptDirs) -> bool {
        match cx.locate_in_batch("docs".to_string(), path, None, kept) {
            Ok(_) => true,
            Err(refusal) => {
                assert_eq!(refusal.code(), ErrorCode::NotAFile, "{}", refusal.message());
                false
            }
        }
    }

    #[test]
    fn a_batch_evaluates_each_directory_once_and_refuses_what_is_ignored() {
        let (cx, _tmp) = testing::context("client-1");
        let mut kept = KeptDirs::default();
        for i in 0..100 {
            assert!(served(&cx, &format!("src/m/f{i}.rs"), &mut kept));
            assert!(served(&cx, &format!("top{i}.txt"), &mut kept));
        }
        assert_eq!(kept.evaluated, 1, "src/m once, top-level files need none");
        // Ignored by the directory (node_modules/, .git), by an ancestor, by the name, and
        // zync's own temp files; each directory evaluated once however often it is asked.
        let refused = [
            "node_modules/x.js",
            "src/node_modules/y.js",
            "src/node_modules/deeper/z.js",
            ".git/config",
            "src/m/f.pyc",
            "src/m/.zync-tmp-123",
            "x.swp",
        ];
        for _ in 0..3 {
            for path in refused {
                assert!(!served(&cx, path, &mut kept), "{path} was served");
            }
        }
        assert_eq!(
            kept.evaluated, 5,
            "node_modules, src/node_modules(/deeper), .git"
        );
        // The same decisions as one request at a time.
        for path in refused {
            assert!(cx.locate("docs".to_string(), path, None).is_err(), "{path}");
        }
        assert!(cx.locate("docs".to_string(), "src/m/f1.rs", None).is_ok());
    }

    /// A delete of `path` in session `id`, as UPSTREAM_FILE stages one.
    fn delete(id: &str, path: &str) -> zync_db::StagedFile {
        zync_db::StagedFile {
            session_id: id.to_string(),
            dir: "docs".to_string(),
            path: path.to_string(),
            action: zync_db::Action::Delete,
            mode: 0,
            size: 0,
            mtime_ns: 0,
            sha256: None,
            base_sha256: None,
            conflict: false,
            state: zync_db::FileState::Staged,
            staged_name: None,
            backup_name: None,
            e_existed: false,
            base_mode: None,
        }
    }

    #[tokio::test]
    async fn an_abandoned_session_leaves_no_rows_of_its_files_and_no_directory() {
        let (mut cx, tmp) = testing::context("hostile-r");
        let db = tmp.path().join("sync.db");
        let index = Index::open(&db).expect("index");
        let mut ids = Vec::new();
        for round in 0..3 {
            let id = format!("{round:08x}-0000-4000-8000-000000000000");
            let dir = zync_db::session_dir(&db, &id);
            index.create_session(&id, "hostile-r").expect("create");
            for k in 0..200 {
                let path = format!("{}/{k}", "long-name-".repeat(20));
                index.add_staged_file(&delete(&id, &path)).expect("delete");
            }
            std::fs::create_dir_all(&dir).expect("session dir");
            let mut open = crate::staging::OpenSession::new(id.clone(), dir.clone());
            open.created = true;
            cx.upstream = Some(open);
            cx.abort_upstream().await;
            assert!(!dir.exists(), "{id}: its directory is left");
            ids.push(id);
        }
        for id in &ids {
            let rows = index.staged_files(id).expect("files").len();
            assert_eq!(rows, 0, "{id}: its files' rows stay in the database");
            let s = index.session(id).expect("session").expect("listed");
            assert_eq!(s.status, zync_db::SessionStatus::Aborted, "{id}");
        }
    }
}
