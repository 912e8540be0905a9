//! Upstream sessions: R's changes arrive as PREPARE_UPSTREAM, UPSTREAM_FILE per file and
//! FINALIZE_UPSTREAM. Content is verified and staged beside the database, never written into
//! E's directories (that is `zync-apply`'s job, with the user's say-so: DESIGN invariant 5).
//! A session not finalized when its connection ends is aborted and its staged files removed.

use std::path::{Path, PathBuf};

use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::{Bytes, Message};
use zync_db::{Action, FileState, OnE, SessionStatus, StagedFile};
use zync_fs::{AtomicFile, EntryKind, FsError, RelPath, Stat};
use zync_proto::{
    ErrorCode, FinalizeReply, FinalizeUpstream, PrepareUpstream, Reply, SessionReply,
    UpstreamAction, UpstreamFile, UpstreamFileReply,
};

use crate::connection::{Connection, Refusal};

/// The session open on a connection.
pub struct OpenSession {
    /// Its id.
    pub id: String,
    /// Where its staged files go.
    pub dir: PathBuf,
    /// Files received so far (names the staged files).
    pub count: u64,
}

/// Binary frames still expected for a refused UPSTREAM_FILE: dropped without an answer.
#[derive(Debug, Clone, Copy)]
pub struct Discard {
    /// The request id the frames carry.
    pub id: u64,
    /// How many remain.
    pub frames: u64,
}

impl Connection {
    pub(crate) async fn prepare_upstream(
        &mut self,
        prepare: PrepareUpstream,
    ) -> Result<Reply, Refusal> {
        if self.upstream.is_some() {
            return Err(Refusal::new(
                ErrorCode::BadRequest,
                "an upstream session is already open on this connection; finalize it first",
            ));
        }
        let id = uuid::Uuid::new_v4().to_string();
        let dir = zync_db::session_dir(&self.shared.db_path, &id);
        // R's content waits here for review: the area and each session's directory are E's
        // user's only (invariant 8), whatever the daemon's umask.
        zync_fs::create_private_dir_all(&dir).map_err(|e| {
            Refusal::new(
                ErrorCode::Internal,
                format!("cannot create the staging directory on E: {e}"),
            )
        })?;
        let client = self.client_id.clone();
        let session = id.clone();
        self.query(move |index| index.create_session(&session, &client))
            .await?;
        tracing::info!(session = %id, description = ?prepare.description, "upstream session opened");
        self.upstream = Some(OpenSession {
            id: id.clone(),
            dir,
            count: 0,
        });
        Ok(Reply::PrepareUpstream(SessionReply { session_id: id }))
    }

    /// Receives and stages one file. On a refusal before the content was read, the content's
    /// frames are discarded as they arrive.
    pub(crate) async fn upstream_file(
        &mut self,
        id: u64,
        file: UpstreamFile,
    ) -> Result<Reply, Refusal> {
        let frames = match file.action {
            UpstreamAction::Write => file.size.div_ceil(zync_proto::MAX_CHUNK as u64),
            UpstreamAction::Delete => 0,
        };
        match self.check_upstream_file(&file) {
            Ok(checked) => self.stage(id, file, frames, checked).await,
            Err(refusal) => {
                if frames > 0 {
                    self.discard = Some(Discard { id, frames });
                }
                Err(refusal)
            }
        }
    }

    fn check_upstream_file(&self, file: &UpstreamFile) -> Result<(RelPath, PathBuf), Refusal> {
        let session = self.upstream.as_ref().filter(|s| s.id == file.session_id).ok_or_else(|| {
            Refusal::new(
                ErrorCode::UnknownSession,
                format!("no open upstream session {} on this connection; send PREPARE_UPSTREAM first", file.session_id),
            )
        })?;
        let root = self.served(&file.dir)?;
        let rel = RelPath::parse(&file.path)
            .map_err(|e| Refusal::new(ErrorCode::InvalidPath, e.to_string()))?;
        if root.rules.is_ignored(&rel, false) {
            return Err(Refusal::new(
                ErrorCode::InvalidPath,
                format!("{rel} is ignored by the daemon's rules"),
            ));
        }
        if file.action == UpstreamAction::Write
            && !file.sha256.as_deref().is_some_and(zync_fs::is_sha256_hex)
        {
            return Err(Refusal::new(
                ErrorCode::BadRequest,
                "a write needs sha256: 64 lowercase hex digits",
            ));
        }
        if file
            .base_sha256
            .as_deref()
            .is_some_and(|b| !zync_fs::is_sha256_hex(b))
        {
            return Err(Refusal::new(
                ErrorCode::BadRequest,
                "base_sha256 must be 64 lowercase hex digits",
            ));
        }
        let _ = session;
        Ok((rel, root.path.clone()))
    }

    async fn stage(
        &mut self,
        id: u64,
        file: UpstreamFile,
        frames: u64,
        (rel, root): (RelPath, PathBuf),
    ) -> Result<Reply, Refusal> {
        let Some(session) = self.upstream.as_mut() else {
            return Err(Refusal::new(
                ErrorCode::UnknownSession,
                "no open upstream session",
            ));
        };
        session.count += 1;
        let staged_name = format!("file-{:06}", session.count);
        let (session_id, session_dir) = (session.id.clone(), session.dir.clone());
        if file.action == UpstreamAction::Write {
            self.receive_content(id, &file, frames, (&session_dir, &staged_name))
                .await?;
        }
        // Three-way decision against what E has now (DESIGN invariant 5).
        let (probe_root, probe_rel) = (root.clone(), rel.clone());
        let on_e = tokio::task::spawn_blocking(move || e_state(&probe_root, &probe_rel))
            .await
            .map_err(|e| Refusal::new(ErrorCode::Internal, e.to_string()))?;
        let current = match &on_e {
            EState::Missing => OnE::Missing,
            EState::File(sha) => OnE::File(sha),
            EState::Other => OnE::Other,
        };
        let action = match file.action {
            UpstreamAction::Write => Action::Write,
            UpstreamAction::Delete => Action::Delete,
        };
        let conflict = zync_db::is_conflict(
            action,
            file.base_sha256.as_deref(),
            file.sha256.as_deref(),
            current,
        );
        let staged = StagedFile {
            session_id,
            dir: file.dir.clone(),
            path: rel.to_string(),
            action,
            // No setuid/setgid/sticky bits from R: whoever holds the token must not plant them on E.
            mode: file.mode & 0o777,
            size: file.size,
            mtime_ns: file.mtime_ns,
            sha256: file.sha256.clone(),
            base_sha256: file.base_sha256.clone(),
            conflict,
            state: FileState::Staged,
            staged_name: (action == Action::Write).then_some(staged_name),
            backup_name: None,
            e_existed: !matches!(on_e, EState::Missing),
        };
        self.query(move |index| index.add_staged_file(&staged))
            .await?;
        tracing::debug!(path = %rel, conflict, "staged");
        Ok(Reply::UpstreamFile(UpstreamFileReply {
            dir: file.dir,
            path: rel.to_string(),
            conflict,
        }))
    }

    /// Reads the content frames into the staging file, verifying size and sha256. The file is
    /// created, and its size reserved, before any frame is read: when E has no room for it the
    /// refusal goes out at once and the client can stop sending.
    async fn receive_content(
        &mut self,
        id: u64,
        file: &UpstreamFile,
        frames: u64,
        (dir, name): (&Path, &str),
    ) -> Result<(), Refusal> {
        let mut stager = match Stager::start(dir, name, file).await {
            Ok(stager) => stager,
            Err(refusal) => {
                if frames > 0 {
                    self.discard = Some(Discard { id, frames });
                }
                return Err(refusal);
            }
        };
        let mut received = 0u64;
        let mut got = 0u64;
        let mut failure = None;
        while got < frames {
            let frame = match self.inbox.next().await {
                Some(Ok(Message::Binary(data))) => data,
                // Control frames are answered by the WebSocket layer and carry no content.
                Some(Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_))) => continue,
                _ => {
                    failure = Some(Refusal::new(
                        ErrorCode::BadRequest,
                        format!(
                            "expected {} more content frames for {}",
                            frames - got,
                            file.path
                        ),
                    ));
                    break;
                }
            };
            got += 1;
            let (chunk_id, len) = match zync_proto::decode_chunk(&frame) {
                Ok((chunk_id, data)) => (chunk_id, data.len()),
                Err(e) => {
                    failure = Some(Refusal::new(ErrorCode::TooLarge, e.to_string()));
                    break;
                }
            };
            if chunk_id != id {
                failure = Some(Refusal::new(
                    ErrorCode::BadRequest,
                    format!("content frame for request {chunk_id} while receiving {id}"),
                ));
                break;
            }
            received += len as u64;
            if received > file.size {
                failure = Some(Refusal::new(
                    ErrorCode::ChecksumMismatch,
                    format!("{}: more than the announced {} bytes", file.path, file.size),
                ));
                break;
            }
            if let Err(refusal) = stager.write(frame.slice(zync_proto::CHUNK_HEADER..)).await {
                failure = Some(refusal);
                break;
            }
        }
        if failure.is_none() && received != file.size {
            failure = Some(Refusal::new(
                ErrorCode::ChecksumMismatch,
                format!(
                    "{}: received {received} bytes, announced {}",
                    file.path, file.size
                ),
            ));
        }
        if let Some(refusal) = failure {
            // Nothing half-received stays staged (the writer removes its temp file); the rest
            // of this upload's frames are dropped.
            stager.abandon().await;
            if got < frames {
                self.discard = Some(Discard {
                    id,
                    frames: frames - got,
                });
            }
            return Err(refusal);
        }
        stager.finish().await
    }

    pub(crate) async fn finalize_upstream(
        &mut self,
        finalize: FinalizeUpstream,
    ) -> Result<Reply, Refusal> {
        match &self.upstream {
            Some(s) if s.id == finalize.session_id => {}
            _ => {
                return Err(Refusal::new(
                    ErrorCode::UnknownSession,
                    format!(
                        "no open upstream session {} on this connection",
                        finalize.session_id
                    ),
                ))
            }
        }
        if let Some(open) = &self.upstream {
            // The staged files' names are made durable before the session counts as staged.
            let dir = open.dir.clone();
            tokio::task::spawn_blocking(move || zync_fs::fsync_dir(&dir))
                .await
                .map_err(|e| Refusal::new(ErrorCode::Internal, e.to_string()))?
                .map_err(|e| {
                    Refusal::new(
                        ErrorCode::Internal,
                        format!("cannot stage the session: {e}"),
                    )
                })?;
        }
        let id = finalize.session_id.clone();
        let session = self
            .query(move |index| {
                index.set_session_status(&id, SessionStatus::Staged)?;
                index.session(&id)
            })
            .await?
            .ok_or_else(|| {
                Refusal::new(ErrorCode::Internal, "the session vanished from the index")
            })?;
        self.upstream = None;
        tracing::info!(session = %session.id, files = session.files, conflicts = session.conflicts, "upstream session staged; review it with zync-apply");
        Ok(Reply::FinalizeUpstream(FinalizeReply {
            session_id: session.id,
            files: session.files,
            bytes: session.bytes,
            conflicts: session.conflicts,
        }))
    }

    /// Called when the connection ends: an unfinished session is aborted and its files removed.
    pub(crate) async fn abort_upstream(&mut self) {
        let Some(session) = self.upstream.take() else {
            return;
        };
        let id = session.id.clone();
        if let Err(e) = self
            .query(move |index| index.set_session_status(&id, SessionStatus::Aborted))
            .await
        {
            tracing::warn!(session = %session.id, "cannot mark the session aborted: {}", e.message());
        }
        let dir = session.dir.clone();
        let removed = tokio::task::spawn_blocking(move || std::fs::remove_dir_all(dir))
            .await
            .unwrap_or_else(|e| Err(std::io::Error::other(e)));
        if let Err(e) = removed {
            tracing::warn!(dir = %session.dir.display(), "cannot remove an aborted session's files: {e}");
        }
        tracing::info!(session = %session.id, "upstream session aborted: the client left before finalizing");
    }
}

/// Aborts sessions left receiving by a daemon that stopped mid-upload.
///
/// # Errors
/// Database errors.
pub fn abort_stale_sessions(index: &zync_db::Index, db: &std::path::Path) -> zync_db::Result<()> {
    for session in index.sessions_with_status(SessionStatus::Receiving)? {
        index.set_session_status(&session.id, SessionStatus::Aborted)?;
        let dir = zync_db::session_dir(db, &session.id);
        if dir.exists() {
            if let Err(e) = std::fs::remove_dir_all(&dir) {
                tracing::warn!(dir = %dir.display(), "cannot remove an aborted session's files: {e}");
            }
        }
        tracing::info!(session = %session.id, "aborted an upstream session left unfinished by the last run");
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
struct Stager {
    pieces: mpsc::Sender<Piece>,
    /// Taken once awaited (a writer that failed part way).
    writer: Option<tokio::task::JoinHandle<Result<(), Refusal>>>,
}

impl Stager {
    /// Creates the temp file of the staged file `dir/name` and reserves `file.size` bytes for
    /// it.
    async fn start(dir: &Path, name: &str, file: &UpstreamFile) -> Result<Stager, Refusal> {
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
                        return out
                            .commit(&sha256, STAGED_MODE, mtime_ns)
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
    async fn write(&mut self, data: Bytes) -> Result<(), Refusal> {
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
    async fn finish(self) -> Result<(), Refusal> {
        let Stager { pieces, writer } = self;
        // A writer that already failed has dropped its end: its error is in `writer`.
        let _ = pieces.send(Piece::End).await;
        drop(pieces);
        join(writer).await
    }

    /// Stops the writer, which removes what it wrote, and waits for it to be done.
    async fn abandon(self) {
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

enum EState {
    Missing,
    File(String),
    Other,
}

/// What E has at `rel` now, read from disk (the index may lag by a debounce).
fn e_state(root: &std::path::Path, rel: &RelPath) -> EState {
    if zync_fs::check_parents(root, rel).is_err() {
        return match zync_fs::lstat(&rel.to_path(root)) {
            Ok(Stat::Missing) => EState::Missing,
            _ => EState::Other,
        };
    }
    let path = rel.to_path(root);
    match zync_fs::lstat(&path) {
        Ok(Stat::Missing) => EState::Missing,
        Ok(Stat::Entry(meta)) if meta.kind == EntryKind::File => match zync_fs::hash_file(&path) {
            Ok((sha, _)) => EState::File(sha),
            Err(_) => EState::Other,
        },
        _ => EState::Other,
    }
}
