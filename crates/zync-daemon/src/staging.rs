//! Upstream staging on E, apart from the requests that fill it: the session open on a
//! connection, the content frames of a refused upload still to be dropped, the [`Stager`] that
//! writes one upload's content into its staged file off the reactor, and the clean-up of
//! sessions a stopped daemon left unfinished. Staged content waits beside the database for
//! `zync-apply` and is never written into E's directories (invariant 5 (docs/ARCHITECTURE.md)).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Bytes;
use zync_db::SessionStatus;
use zync_fs::{AtomicFile, FsError, RelPath};
use zync_proto::{ErrorCode, UpstreamFile};

use crate::budget::SessionLoad;
use crate::refusal::Refusal;

/// The session open on a connection. It is recorded in the index, and its directory made,
/// only when its first file is about to be staged: a push whose files are all refused leaves
/// nothing on E.
pub(crate) struct OpenSession {
    /// Its id.
    pub(crate) id: String,
    /// Where its staged files go.
    pub(crate) dir: PathBuf,
    /// Files received so far (names the staged files).
    pub(crate) count: u64,
    /// Whether its row and directory exist yet.
    pub(crate) created: bool,
    /// What it holds, for the per-session limits.
    pub(crate) load: SessionLoad,
    /// The bytes staged for each (dir, path), 0 for a delete: a path sent again replaces its
    /// earlier version and counts once.
    pub(crate) paths: HashMap<(String, String), u64>,
}

impl OpenSession {
    /// A session about to open, with nothing recorded yet.
    pub(crate) fn new(id: String, dir: PathBuf) -> OpenSession {
        OpenSession {
            id,
            dir,
            count: 0,
            created: false,
            load: SessionLoad::default(),
            paths: HashMap::new(),
        }
    }

    /// Counts a staged file of `bytes` at (dir, path), replacing what that path held.
    pub(crate) fn staged(&mut self, dir: &str, path: &str, bytes: u64) {
        match self
            .paths
            .insert((dir.to_string(), path.to_string()), bytes)
        {
            Some(old) => self.load.bytes = self.load.bytes.saturating_sub(old),
            None => self.load.files += 1,
        }
        self.load.bytes = self.load.bytes.saturating_add(bytes);
    }
}

/// Binary frames still expected for a refused UPSTREAM_FILE: dropped without an answer.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Discard {
    /// The request id the frames carry.
    pub(crate) id: u64,
    /// How many remain.
    pub(crate) frames: u64,
}

/// Sessions of at most this many files are flushed file by file when finalized; larger ones
/// with one `syncfs` of the staging area's file system (as the client flushes its batches).
const OWN_FLUSH_FILES: usize = 16;

/// Makes a finalized session's staged files durable, and their names: each file, or the whole
/// file system when there are many, then the session's directory. Blocking.
///
/// # Errors
/// When a file or the file system cannot be flushed.
pub(crate) fn flush_session(dir: &Path) -> Result<(), FsError> {
    let listed = |e: std::io::Error| FsError::io("list the staged files of", dir.to_path_buf(), e);
    let files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(listed)?
        .map(|entry| entry.map(|e| e.path()))
        .collect::<Result<_, _>>()
        .map_err(listed)?;
    if files.len() <= OWN_FLUSH_FILES {
        for file in &files {
            std::fs::File::open(file)
                .and_then(|f| f.sync_all())
                .map_err(|e| FsError::io("flush the staged file", file, e))?;
        }
    } else {
        zync_fs::sync_filesystems([dir])?;
    }
    zync_fs::fsync_dir(dir)
}

/// Aborts sessions left receiving by a daemon that stopped mid-upload: their staged files are
/// removed and their files' rows deleted (`Index::abort_session`). Then forgets what older
/// versions kept of the sessions they aborted (every file's row), so a database grown by
/// abandoned sessions shrinks back at the first start (`Index::forget_aborted`), and of the
/// sessions that expired, were dropped or settled (every row of every one of them): only the
/// newest `zync_db::ENDED_KEPT` of each keep theirs (`Index::forget_ended`; each end does the
/// same from then on), so a database grown by R's junk, dropped or left to expire, shrinks
/// back too (invariant 9 (docs/ARCHITECTURE.md)).
///
/// # Errors
/// Database errors.
pub fn abort_stale_sessions(index: &zync_db::Index, db: &Path) -> zync_db::Result<()> {
    for session in index.sessions_with_status(SessionStatus::Receiving)? {
        if !index.abort_session(&session.id)? {
            continue;
        }
        let dir = zync_db::session_dir(db, &session.id);
        if let Err(e) = zync_db::remove_dir(&dir) {
            tracing::warn!(dir = %dir.display(), "cannot remove an aborted session's files: {e}");
        }
        tracing::info!(session = %session.id, "aborted an upstream session left unfinished by the last run");
    }
    let (sessions, files) = index.forget_aborted()?;
    if sessions + files > 0 {
        tracing::info!(
            sessions,
            files,
            "deleted the rows aborted upstream sessions had left in the database"
        );
    }
    let (sessions, files) = index.forget_ended()?;
    if sessions + files > 0 {
        tracing::info!(
            sessions,
            files,
            kept = zync_db::ENDED_KEPT,
            "deleted the expired, dropped and settled upstream sessions older than the newest of each, rows and all"
        );
    }
    Ok(())
}

/// Expires the sessions staged longer than `max_age` ago and never touched since
/// (`zync_db::expire`: their staged files removed, status `expired`), and settles the sessions
/// whose apply ended longer than `max_age` ago (their backups removed, status `settled`: what
/// they applied stays on E, they can no longer be undone), so that every apply does not keep
/// a copy of each E file it replaced for good (invariant 9 (docs/ARCHITECTURE.md)); partly
/// applied sessions are kept and named in the log. Each session's lock is taken first, as
/// `zync-apply` takes it (`zync_fs::try_lock_in` on `zync_db::SESSION_LOCK_FILE`): a session an
/// interactive apply is working on is still `staged`, but its directory already holds the
/// backups of the files it replaced on E, and an undo restores from an applied session's
/// backups, so a busy session is left alone and named in the log.
///
/// # Errors
/// Database errors.
pub fn expire_sessions(
    index: &zync_db::Index,
    db: &Path,
    max_age: Duration,
) -> zync_db::Result<()> {
    // Shown to an apply refused meanwhile (zync-apply's `lock.rs` prints a note in words as is).
    let note = format!(
        "zync-daemon (pid {}, expiring old sessions at its start)",
        std::process::id()
    );
    let expiry = zync_db::expire(index, db, max_age, zync_db::now_unix(), |dir| {
        Ok(
            match zync_fs::try_lock_in(dir, zync_db::SESSION_LOCK_FILE, note.as_bytes())? {
                zync_fs::Locked::Held(lock) => Some(lock),
                zync_fs::Locked::Busy(_) => None,
            },
        )
    })?;
    let age = zync_cli::units::format_duration(max_age);
    for session in &expiry.expired {
        tracing::info!(session = %session.id, files = session.files, bytes = session.bytes, "expired an upstream session staged more than {age} ago (--staging-max-age); its staged files are removed");
    }
    for session in &expiry.settled {
        tracing::info!(session = %session.id, "removed the backups of an upstream session applied more than {age} ago (--staging-max-age): what it applied stays on E, and it can no longer be undone (status settled)");
    }
    for session in &expiry.busy {
        tracing::info!(session = %session.id, status = %session.status, "an upstream session older than {age} is kept for now: zync-apply is working on it (it holds the session's lock)");
    }
    for session in &expiry.kept_partial {
        tracing::warn!(session = %session.id, "an upstream session partly applied more than {age} ago is kept: finish it with zync-apply apply, or undo it and drop it, or keep what it applied with zync-apply drop ID --discard-backups");
    }
    for (dir, e) in &expiry.failures {
        tracing::warn!(dir = %dir.display(), "cannot lock or remove an old session's staged files: {e}");
    }
    Ok(())
}

/// Content frames waiting for the staging thread: enough to keep it busy while the next ones
/// are read, few enough that a slow disk slows the client down instead of filling memory.
const PIECES_IN_FLIGHT: usize = 4;

/// What the connection hands the thread that writes an upload.
enum Piece {
    /// The next bytes of the content.
    Data(Bytes),
    /// All of it was received: verify, flush and name the staged file.
    End,
}

/// One upload's content on its way into its staged file. A blocking thread writes and hashes
/// it (an [`AtomicFile`]: a temp file beside the staged name, renamed once verified and
/// flushed), so that a big upload's disk work and hashing never hold up the daemon's other
/// connections; dropped or abandoned before [`Stager::finish`], it leaves nothing behind.
pub(crate) struct Stager {
    pieces: mpsc::Sender<Piece>,
    /// Taken once awaited (a writer that failed part way).
    writer: Option<tokio::task::JoinHandle<Result<(), Refusal>>>,
}

impl Stager {
    /// Creates the temp file of the staged file `dir/name` and reserves `file.size` bytes for
    /// it.
    pub(crate) async fn start(
        dir: &Path,
        name: &str,
        file: &UpstreamFile,
    ) -> Result<Stager, Refusal> {
        let dir = dir.to_path_buf();
        let name =
            RelPath::parse(name).map_err(|e| Refusal::new(ErrorCode::Internal, e.to_string()))?;
        let (size, sha256, mtime_ns) = (
            file.size,
            file.sha256.clone().unwrap_or_default(),
            file.mtime_ns,
        );
        let path = file.path.clone();
        let out = tokio::task::spawn_blocking(move || {
            let mut out = AtomicFile::create(&dir, &name)?;
            out.reserve(size)?;
            Ok::<_, FsError>(out)
        })
        .await
        .map_err(|e| Refusal::new(ErrorCode::Internal, e.to_string()))?
        .map_err(|e| staging_refusal(&path, 0, e))?;
        let (pieces, mut incoming) = mpsc::channel(PIECES_IN_FLIGHT);
        let writer = tokio::task::spawn_blocking(move || {
            let mut out = out;
            while let Some(piece) = incoming.blocking_recv() {
                match piece {
                    Piece::Data(data) => {
                        out.write(&data).map_err(|e| staging_refusal(&path, 0, e))?;
                    }
                    Piece::End => {
                        let received = out.written();
                        // Flushed with the whole session when it is finalized: until then
                        // the session is not staged, and a crash aborts it.
                        return out
                            .commit_unflushed(&sha256, STAGED_MODE, mtime_ns)
                            .map_err(|e| staging_refusal(&path, received, e));
                    }
                }
            }
            // Abandoned: dropping `out` removes the temp file.
            Err(Refusal::new(
                ErrorCode::Internal,
                "the upload was abandoned",
            ))
        });
        Ok(Stager {
            pieces,
            writer: Some(writer),
        })
    }

    /// Hands the next bytes to the writer; the writer's error once it has failed.
    pub(crate) async fn write(&mut self, data: Bytes) -> Result<(), Refusal> {
        if self.pieces.send(Piece::Data(data)).await.is_ok() {
            return Ok(());
        }
        // The writer stops early only on an error: that error is the answer.
        Err(join(self.writer.take()).await.err().unwrap_or_else(|| {
            Refusal::new(
                ErrorCode::Internal,
                "the staging thread stopped before the end of the content",
            )
        }))
    }

    /// Verifies and flushes the content, then renames it to its staged name.
    pub(crate) async fn finish(self) -> Result<(), Refusal> {
        let Stager { pieces, writer } = self;
        // A writer that already failed has dropped its end: its error is in `writer`.
        let _ = pieces.send(Piece::End).await;
        drop(pieces);
        join(writer).await
    }

    /// Stops the writer, which removes what it wrote, and waits for it to be done.
    pub(crate) async fn abandon(self) {
        let Stager { pieces, writer } = self;
        drop(pieces);
        if let Some(writer) = writer {
            let _ = writer.await;
        }
    }
}

/// What the staging thread ended with.
async fn join(writer: Option<tokio::task::JoinHandle<Result<(), Refusal>>>) -> Result<(), Refusal> {
    match writer {
        Some(writer) => writer
            .await
            .map_err(|e| Refusal::new(ErrorCode::Internal, e.to_string()))?,
        None => Err(Refusal::new(
            ErrorCode::Internal,
            "the staging thread stopped",
        )),
    }
}

/// Staged files are R's content waiting for review: readable by E's user only.
const STAGED_MODE: u32 = 0o600;

/// The refusal for a failure to stage R's file `path`, of which `received` bytes had arrived.
fn staging_refusal(path: &str, received: u64, e: FsError) -> Refusal {
    match e {
        FsError::HashMismatch {
            expected, actual, ..
        } => Refusal::new(
            ErrorCode::ChecksumMismatch,
            format!("{path}: received {received} bytes with sha256 {actual}, announced sha256 {expected}"),
        ),
        other => Refusal::new(
            ErrorCode::Internal,
            format!("cannot stage {path} on E: {other}"),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "aaaa1111-2222-4333-8444-555566667777";

    /// A database in a temp dir holding session [`ID`] with `status`, and its directory with
    /// a backup of one of E's files in it.
    fn session_with_backup(
        status: SessionStatus,
    ) -> (
        tempfile::TempDir,
        std::path::PathBuf,
        zync_db::Index,
        std::path::PathBuf,
    ) {
        let tmp = tempfile::tempdir().expect("tempdir");
        let db = tmp.path().join("sync.db");
        let index = zync_db::Index::open(&db).expect("index");
        index.create_session(ID, "r").expect("create");
        index.set_session_status(ID, status).expect("status");
        let dir = zync_db::session_dir(&db, ID);
        std::fs::create_dir_all(&dir).expect("session dir");
        std::fs::write(dir.join("backup-000001"), b"E's original").expect("backup");
        (tmp, db, index, dir)
    }

    #[test]
    fn expiry_at_start_leaves_a_session_an_apply_holds_and_takes_it_once_free() {
        let (_tmp, db, index, dir) = session_with_backup(SessionStatus::Staged);
        // As `zync-apply apply` holds it while it waits at a prompt.
        let zync_fs::Locked::Held(held) =
            zync_fs::try_lock_in(&dir, zync_db::SESSION_LOCK_FILE, b"apply").expect("lock")
        else {
            panic!("the lock must be ours");
        };
        // Created ten seconds ago: older than an age of zero.
        rusqlite::Connection::open(&db)
            .expect("open db")
            .execute(
                "UPDATE upstream_sessions SET created_unix = created_unix - 10 WHERE id = ?1",
                [ID],
            )
            .expect("age the session");
        let session = || index.session(ID).expect("session").expect("kept");
        expire_sessions(&index, &db, Duration::ZERO).expect("expire");
        assert_eq!(
            session().status,
            SessionStatus::Staged,
            "expired under a lock"
        );
        assert!(dir.join("backup-000001").exists(), "the backup was removed");

        drop(held);
        expire_sessions(&index, &db, Duration::ZERO).expect("expire");
        assert_eq!(session().status, SessionStatus::Expired);
        assert!(!dir.exists());
    }

    #[test]
    fn staging_expiry_at_start_removes_the_backups_of_applies_older_than_the_age() {
        let (_tmp, db, index, dir) = session_with_backup(SessionStatus::Applied);
        let status = || index.session(ID).expect("session").expect("kept").status;
        expire_sessions(&index, &db, Duration::from_secs(60)).expect("expire");
        assert_eq!(
            status(),
            SessionStatus::Applied,
            "a recent apply was settled"
        );
        assert!(dir.join("backup-000001").exists());
        // Applied ten seconds ago: older than an age of zero.
        rusqlite::Connection::open(&db)
            .expect("open db")
            .execute(
                "UPDATE upstream_sessions SET applied_unix = applied_unix - 10 WHERE id = ?1",
                [ID],
            )
            .expect("age the apply");
        expire_sessions(&index, &db, Duration::ZERO).expect("expire");
        assert_eq!(status(), SessionStatus::Settled);
        assert!(!dir.exists(), "its backups stay");
    }

    #[test]
    fn the_start_deletes_what_older_versions_kept_of_ended_sessions_but_the_newest() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let db = tmp.path().join("sync.db");
        let index = zync_db::Index::open(&db).expect("index");
        let rows = |status: &str| -> i64 {
            rusqlite::Connection::open(&db)
                .expect("open db")
                .query_row(
                    "SELECT count(*) FROM upstream_files AS f
                     JOIN upstream_sessions AS s ON s.id = f.session_id WHERE s.status = ?1",
                    [status],
                    |row| row.get(0),
                )
                .expect("count")
        };
        let kept = i64::try_from(zync_db::ENDED_KEPT).expect("small");
        let per_session = 30;
        // What an older daemon and zync-apply left: every row of every session that ended,
        // and a staged session, which stays.
        let mut n = 0u32;
        let mut session = |status: SessionStatus| {
            n += 1;
            let id = format!("{n:08x}-0000-4000-8000-000000000000");
            index.create_session(&id, "hostile-r").expect("create");
            for k in 0..per_session {
                index
                    .add_staged_file(&zync_db::StagedFile {
                        session_id: id.clone(),
                        dir: "code".into(),
                        path: format!("{}/{k}", "d".repeat(400)),
                        action: zync_db::Action::Delete,
                        mode: 0o644,
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
                    })
                    .expect("delete");
            }
            rusqlite::Connection::open(&db)
                .expect("open db")
                .execute(
                    "UPDATE upstream_sessions SET status = ?2, created_unix = ?3 WHERE id = ?1",
                    rusqlite::params![id, status.as_str(), 1_000 + i64::from(n)],
                )
                .expect("ended the old way");
            id
        };
        let staged = session(SessionStatus::Staged);
        for status in ["dropped", "expired", "settled"] {
            for _ in 0..kept + 5 {
                session(SessionStatus::parse(status).expect("status"));
            }
            assert_eq!(rows(status), (kept + 5) * per_session, "{status}");
        }

        abort_stale_sessions(&index, &db).expect("start");
        for status in ["dropped", "expired", "settled"] {
            assert_eq!(
                rows(status),
                kept * per_session,
                "the start kept the rows of more {status} sessions than the newest {kept}"
            );
        }
        let s = index.session(&staged).expect("session").expect("kept");
        assert_eq!(
            (s.status, s.files),
            (SessionStatus::Staged, per_session as u64)
        );
    }
}
