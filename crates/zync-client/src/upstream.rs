//! `--update-upstream`: R's own changes against what it last synced (new, modified and deleted
//! files), sent as one session for review on E. Each file carries the base sha256 and mode (the
//! version R started from) so E can decide conflicts three-way, for the content and the mode.

use zync_cli::progress::Progress;
use zync_db::ClientState;
use zync_fs::{IgnoreRules, RelPath, Stat};
use zync_proto::Kind;
use zync_proto::{FinalizeUpstream, Op, PrepareUpstream, Reply, UpstreamAction, UpstreamFile};

use crate::connection::Connection;
use crate::error::ClientError;
use crate::mapping::Mapping;

/// One local change to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outgoing {
    /// The daemon's directory name.
    pub dir: String,
    /// The path.
    pub path: RelPath,
    /// Write or delete.
    pub action: UpstreamAction,
    /// Permission bits.
    pub mode: u32,
    /// Size in bytes.
    pub size: u64,
    /// Modification time.
    pub mtime_ns: i64,
    /// R's content hash (writes).
    pub sha256: Option<String>,
    /// What R last synced from E (None: new on R).
    pub base_sha256: Option<String>,
    /// The mode R last synced (its synced record's), with `base_sha256`: E keeps a mode
    /// its user set since then unless R changed the mode too (invariant 5).
    pub base_mode: Option<u32>,
}

/// What a push did.
#[derive(Debug, Default, serde::Serialize)]
pub struct PushSummary {
    /// The staged session, when anything was sent.
    pub session_id: Option<String>,
    /// Files sent.
    pub files: u64,
    /// Bytes sent.
    pub bytes: u64,
    /// Files E flagged as conflicts.
    pub conflicts: u64,
    /// Files not sent because E refuses their paths (ignored there, or the daemon's own).
    pub skipped: u64,
    /// E's reason for the first refused path, when some were skipped.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub skipped_because: Option<String>,
    /// Files not sent because E's staging limits refused the push part way.
    pub not_sent: u64,
    /// E's refusal that stopped the push part way (a staging limit: its value and the flag
    /// that raises it). What was sent before it is staged in `session_id`, if anything.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub refused: Option<String>,
    /// Files not sent because they changed on R each of the [`SEND_TRIES`] times they were
    /// sent, or became something that is not sent (not a regular file, or behind a symlink on
    /// their path): push again once they are quiet.
    pub changing: u64,
}

/// How many times a file that changes on R while it is sent is sent: each time as it is then.
pub const SEND_TRIES: usize = 3;

/// R's changes in one mapping. Unchanged files are recognised by size and mtime against the
/// synced state before any hashing; conflict copies and ignored paths are never sent.
///
/// # Errors
/// Database errors and unreadable files.
pub fn collect(state: &ClientState, mapping: &Mapping) -> Result<Vec<Outgoing>, ClientError> {
    let dir = mapping.name.as_str();
    let rules = IgnoreRules::new(&mapping.root, &[], true).map_err(|e| {
        ClientError::Config(format!(
            "ignore rules for {dir}: {e}; fix or remove the .zyncignore file it names"
        ))
    })?;
    let scan = zync_fs::scan(&mapping.root, &rules, None);
    for error in &scan.errors {
        tracing::warn!(dir, "{error}");
    }
    let mut out = Vec::new();
    // What the scan found, for the deletions below: judged from the scan's own look (through
    // the root's handles), not from a second look by path, which a swapped parent could
    // redirect (a file elsewhere missing, and R's file sent to E as deleted).
    let present: std::collections::HashSet<String> = scan
        .entries
        .iter()
        .map(|e| e.path.as_str().to_string())
        .collect();
    for entry in scan.entries.iter() {
        if entry.meta.kind != Kind::File
            || zync_fs::is_conflict_copy(entry.path.file_name())
            || mapping.own.contains(&entry.path.to_path(&mapping.root))
        {
            continue;
        }
        let synced = state
            .synced(dir, entry.path.as_str())?
            .filter(|s| s.kind == Kind::File);
        let mode = entry.meta.mode & 0o777;
        if let Some(s) = &synced {
            if s.size == entry.meta.size
                && s.mtime_ns == entry.meta.mtime_ns
                && s.mode & 0o777 == mode
            {
                continue;
            }
        }
        let abs = entry.path.to_path(&mapping.root);
        // The file the scan saw (through the root's directory handles), or nothing: a parent
        // another user on R swapped for a symlink since leads elsewhere, and that file is not
        // read (its sha256 would go to E as R's version of this path).
        let identity = (entry.meta.device, entry.meta.inode);
        let (sha, size) = match zync_fs::hash::hash_file_identified(&abs, identity) {
            Ok(hashed) => (hashed.sha256, hashed.len),
            // Gone, another file, no longer a regular file, or a parent no longer a
            // directory: not the file the scan saw.
            Err(e) if is_not_the_file_seen(&e) => {
                tracing::warn!(
                    dir,
                    path = %entry.path,
                    "not sent: it changed while it was looked at ({e}); push again"
                );
                continue;
            }
            Err(source) => {
                return Err(ClientError::Io {
                    what: "read",
                    path: abs.display().to_string(),
                    source,
                })
            }
        };
        if state.was_inflight(dir, entry.path.as_str(), &sha)? {
            // Written by a sync run that stopped before recording it: E's content, not R's.
            tracing::debug!(dir, path = %entry.path, "not sent: zync's own unrecorded download");
            continue;
        }
        let base = synced.as_ref().and_then(|s| s.sha256.clone());
        let base_mode = synced
            .as_ref()
            .filter(|s| s.sha256.is_some())
            .map(|s| s.mode & 0o777);
        if base.as_deref() == Some(sha.as_str())
            && synced.as_ref().is_some_and(|s| s.mode & 0o777 == mode)
        {
            continue;
        }
        out.push(Outgoing {
            dir: dir.to_string(),
            path: entry.path.clone(),
            action: UpstreamAction::Write,
            mode,
            size,
            mtime_ns: entry.meta.mtime_ns,
            sha256: Some(sha),
            base_sha256: base,
            base_mode,
        });
    }
    for (path, synced) in state.synced_all(dir)? {
        if synced.kind != Kind::File {
            continue;
        }
        let Ok(rel) = RelPath::parse(&path) else {
            continue;
        };
        if rules.is_ignored(&rel, false) {
            continue;
        }
        if !present.contains(rel.as_str()) && scan.covers(&rel) {
            out.push(Outgoing {
                dir: dir.to_string(),
                path: rel,
                action: UpstreamAction::Delete,
                mode: 0,
                size: 0,
                mtime_ns: 0,
                sha256: None,
                base_mode: synced.sha256.is_some().then_some(synced.mode & 0o777),
                base_sha256: synced.sha256,
            });
        }
    }
    Ok(out)
}

/// True when hashing a file the scan listed found another one, or none: it went, it is no
/// longer a regular file, or a directory on its path is no longer one (swapped for a symlink).
fn is_not_the_file_seen(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        std::io::ErrorKind::NotFound | std::io::ErrorKind::InvalidInput
    ) || matches!(e.raw_os_error(), Some(libc::ELOOP | libc::ENOTDIR))
}

/// Sends `changes` as one session; nothing is sent (and no session made) when empty.
///
/// A path E refuses (ignored there, or one of the daemon's own files) is skipped. A file that
/// changed on R after it was hashed (E finds other bytes than its sha256 or size announced,
/// `checksum_mismatch`) is read and sent again as it is now, up to [`SEND_TRIES`] times in
/// all, then left out and counted in `changing`, as is one that is no longer a regular file
/// or lies behind a symlink on its path (files are opened from the root, never through one). A file E's staging limits refuse
/// (`too_large`) stops the push: what was sent before it is finalized so that it can be
/// reviewed on E, and the summary's `refused` says why the rest was not sent. A session in
/// which E staged nothing leaves nothing on E, and the summary names no session.
///
/// # Errors
/// Connection errors, or another refused file: the session is then left unfinalized, and the
/// daemon aborts it.
pub async fn push(
    conn: &mut Connection,
    mappings: &[Mapping],
    changes: &[Outgoing],
) -> Result<PushSummary, ClientError> {
    if changes.is_empty() {
        return Ok(PushSummary::default());
    }
    let session_id = match conn
        .call(Op::PrepareUpstream(PrepareUpstream {
            description: hostname(),
        }))
        .await?
    {
        Reply::PrepareUpstream(r) => r.session_id,
        other => {
            return Err(ClientError::Protocol(format!(
                "expected PREPARE_UPSTREAM, got {other:?}"
            )))
        }
    };
    let mut skipped = 0u64;
    let mut skipped_because = None;
    let mut refused = None;
    let mut not_sent = 0u64;
    let mut changing = 0u64;
    let written = changes.iter().filter(|c| c.action == UpstreamAction::Write);
    let progress =
        Progress::start_if_large("sent", changes.len() as u64, written.map(|c| c.size).sum());
    for (n, change) in changes.iter().enumerate() {
        let Some(root) = mappings
            .iter()
            .find(|m| m.name.as_str() == change.dir)
            .map(|m| &m.root)
        else {
            continue;
        };
        let mut sent = change.clone();
        let mut tries = 1;
        let uploaded = loop {
            let request = upstream_file(&session_id, &sent);
            // Why this attempt did not stage the file because it changed on R, if it did not.
            let changed = match sent.action {
                UpstreamAction::Delete => {
                    break Resent::Uploaded(conn.upload(request, None, &progress).await)
                }
                UpstreamAction::Write => match look(root, &sent.path) {
                    There::File(opened) => {
                        let path = sent.path.to_path(root);
                        match conn
                            .upload(request, Some((opened.file, &path)), &progress)
                            .await
                        {
                            Err(ClientError::Server {
                                code: zync_proto::ErrorCode::ChecksumMismatch,
                                message,
                            }) => message,
                            other => break Resent::Uploaded(other),
                        }
                    }
                    // Nothing of it was sent: the session goes on.
                    There::Missing => "it was deleted".to_string(),
                    There::Other(why) => break Resent::StillChanging(why),
                },
            };
            if tries == SEND_TRIES {
                break Resent::StillChanging(changed);
            }
            tries += 1;
            match as_it_is_now(root, &sent) {
                Now::Send(now) => {
                    tracing::info!(dir = %sent.dir, path = %sent.path, "changed on R while it was sent ({changed}); sending it again as it is now");
                    sent = now;
                }
                Now::Gone => {
                    tracing::info!(dir = %sent.dir, path = %sent.path, "deleted on R while it was sent, and E never had it: nothing to send");
                    break Resent::Gone;
                }
                Now::Unsendable(why) => break Resent::StillChanging(why),
            }
        };
        let uploaded = match uploaded {
            Resent::Uploaded(uploaded) => uploaded,
            Resent::Gone => {
                progress.files(1);
                continue;
            }
            Resent::StillChanging(why) => {
                tracing::warn!(dir = %change.dir, path = %change.path, "not sent: it changed on R while it was sent, {tries} time(s) ({why}); push again once it is quiet");
                changing += 1;
                progress.files(1);
                continue;
            }
        };
        let conflict = match uploaded {
            Ok(reply) => reply.conflict,
            Err(ClientError::Server {
                code: zync_proto::ErrorCode::InvalidPath,
                message,
            }) => {
                // E ignores this path (its --ignore rules), or it is one of the daemon's own
                // files: it cannot be applied there anyway.
                tracing::warn!(dir = %change.dir, path = %change.path, "not sent: {message}");
                skipped += 1;
                skipped_because.get_or_insert(message);
                progress.files(1);
                continue;
            }
            Err(ClientError::Server {
                code: zync_proto::ErrorCode::TooLarge,
                message,
            }) => {
                // A staging limit on E: the rest would be refused as well. What was sent is
                // kept and finalized, so nothing staged is lost.
                tracing::warn!(dir = %change.dir, path = %change.path, "not sent: {message}");
                not_sent = (changes.len() - n) as u64;
                refused = Some(message);
                break;
            }
            Err(e) => return Err(e),
        };
        if conflict {
            tracing::warn!(dir = %change.dir, path = %change.path, "E changed this file too: flagged as a conflict for review on E");
        }
        progress.files(1);
    }
    progress.finish();
    match conn
        .call(Op::FinalizeUpstream(FinalizeUpstream {
            session_id: session_id.clone(),
        }))
        .await?
    {
        // A daemon keeps no session in which it staged nothing (an older one kept an empty
        // one): either way there is nothing to review on E.
        Reply::FinalizeUpstream(f) => Ok(PushSummary {
            session_id: (f.files > 0).then_some(f.session_id),
            files: f.files,
            bytes: f.bytes,
            conflicts: f.conflicts,
            skipped,
            skipped_because,
            not_sent,
            refused,
            changing,
        }),
        other => Err(ClientError::Protocol(format!(
            "expected FINALIZE_UPSTREAM, got {other:?}"
        ))),
    }
}

/// The UPSTREAM_FILE request for `change` in session `session_id`.
fn upstream_file(session_id: &str, change: &Outgoing) -> UpstreamFile {
    UpstreamFile {
        session_id: session_id.to_string(),
        dir: change.dir.clone(),
        path: change.path.to_string(),
        action: change.action,
        mode: change.mode,
        size: change.size,
        mtime_ns: change.mtime_ns,
        sha256: change.sha256.clone(),
        base_sha256: change.base_sha256.clone(),
        base_mode: change.base_mode,
    }
}

/// How one file's upload ended, with the attempts it took.
enum Resent {
    /// E answered the last attempt (the file staged, or another refusal).
    Uploaded(Result<zync_proto::UpstreamFileReply, ClientError>),
    /// Deleted on R meanwhile, and E never had it: nothing to send.
    Gone,
    /// It changed on every attempt, or became something that cannot be sent: why.
    StillChanging(String),
}

/// What to send for a file after it changed on R while it was sent.
enum Now {
    /// The file as it is now (hashed again), or its deletion when E had it.
    Send(Outgoing),
    /// Deleted, and E never had it.
    Gone,
    /// No longer a regular file, or unreadable: why. `collect` would not send it either.
    Unsendable(String),
}

/// What R has at a path now, looked up from the root without following a symlink in any
/// component: another user on R can swap a directory on the path for a symlink at any
/// instant, and zync never reads through one (the content would be from outside the root).
enum There {
    /// A regular file, open to read.
    File(zync_fs::OpenedFile),
    /// Nothing.
    Missing,
    /// Something that cannot be sent: why.
    Other(String),
}

/// What R has at `rel` under `root` now (see [`There`]).
fn look(root: &std::path::Path, rel: &RelPath) -> There {
    let dir = match zync_fs::Dir::parent_of(root, rel) {
        Ok(dir) => dir,
        Err(zync_fs::FsError::Io { source, .. })
            if source.kind() == std::io::ErrorKind::NotFound =>
        {
            return There::Missing
        }
        Err(zync_fs::FsError::SymlinkInPath { path }) => {
            return There::Other(format!(
                "{} on its path is now a symlink, and zync never reads through one",
                path.display()
            ))
        }
        Err(e) => return There::Other(e.to_string()),
    };
    match dir.open_file_to_read(rel.file_name()) {
        Ok(Some(opened)) => There::File(opened),
        Ok(None) => match dir.lstat(rel.file_name()) {
            Ok(Stat::Missing) => There::Missing,
            _ => There::Other("it is no longer a regular file".into()),
        },
        Err(e) => There::Other(format!("it cannot be read: {e}")),
    }
}

/// `change` read again from R's disk under `root`, after it changed while it was sent.
fn as_it_is_now(root: &std::path::Path, change: &Outgoing) -> Now {
    use std::os::unix::fs::PermissionsExt;
    let mut opened = match look(root, &change.path) {
        There::File(opened) => opened,
        There::Missing => {
            return match change.base_sha256 {
                Some(_) => Now::Send(Outgoing {
                    action: UpstreamAction::Delete,
                    mode: 0,
                    size: 0,
                    mtime_ns: 0,
                    sha256: None,
                    ..change.clone()
                }),
                None => Now::Gone,
            }
        }
        There::Other(why) => return Now::Unsendable(why),
    };
    let hashed = opened.file.metadata().and_then(|meta| {
        let (sha, size) = zync_fs::hash_open(&mut opened.file, opened.size)?;
        Ok((sha, size, meta.permissions().mode()))
    });
    match hashed {
        Ok((sha, size, mode)) => Now::Send(Outgoing {
            mode: mode & 0o777,
            size,
            mtime_ns: opened.mtime_ns,
            sha256: Some(sha),
            ..change.clone()
        }),
        Err(e) => Now::Unsendable(format!("it cannot be read again: {e}")),
    }
}

fn hostname() -> Option<String> {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| format!("zync-client on {}", h.trim()))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Deletions are what the scan did not find of what was synced, and only where the scan
    /// could look: a file present is not deleted, one gone is, and nothing under a directory
    /// the rules ignore (the scan does not go in) is taken for deleted.
    #[test]
    fn a_push_deletes_what_the_scan_did_not_find_where_it_looked() {
        let tmp = tempfile::tempdir().expect("tmp");
        let root = tmp.path().join("root");
        std::fs::create_dir_all(root.join("keep")).expect("mkdir");
        std::fs::create_dir_all(root.join("skipped")).expect("mkdir");
        std::fs::write(root.join("keep/f"), b"kept\n").expect("write");
        std::fs::write(root.join("skipped/x"), b"ignored\n").expect("write");
        std::fs::write(root.join(".zyncignore"), b"skipped/\n").expect("write");
        let mut state = ClientState::open_in_memory().expect("state");
        let meta = |path: &str| {
            let m = std::fs::metadata(root.join(path)).ok();
            zync_db::Synced {
                kind: Kind::File,
                size: m.as_ref().map_or(3, |m| m.len()),
                mtime_ns: m.as_ref().map_or(1, |m| {
                    use std::os::unix::fs::MetadataExt;
                    m.mtime() * 1_000_000_000 + m.mtime_nsec()
                }),
                mode: 0o644,
                sha256: Some("ab".repeat(32)),
                target: None,
            }
        };
        let rows: Vec<(&str, zync_db::Synced)> = ["keep/f", "gone/g", "skipped/x", "skipped/y"]
            .into_iter()
            .map(|p| (p, meta(p)))
            .collect();
        let mut batch = state.batch().expect("batch");
        let refs: Vec<(&str, &zync_db::Synced)> = rows.iter().map(|(p, s)| (*p, s)).collect();
        batch.set_synced_many("code", &refs).expect("record");
        batch.commit().expect("commit");
        let mapping = Mapping {
            name: zync_fs::DirName::parse("code").expect("name"),
            root: root.clone(),
            own: Vec::new(),
        };
        let deleted: Vec<String> = collect(&state, &mapping)
            .expect("collect")
            .into_iter()
            .filter(|o| o.action == UpstreamAction::Delete)
            .map(|o| o.path.to_string())
            .collect();
        assert_eq!(deleted, ["gone/g"]);
    }

    /// Another user on R who can write in the tree swaps a directory of it and a symlink to
    /// elsewhere, again and again, while R's changes are collected for a push: a file outside
    /// the tree is never hashed as R's version of a path (its sha256 would reach E).
    #[test]
    fn a_parent_swapped_for_a_symlink_never_makes_a_push_hash_a_file_elsewhere() {
        let bait = zync_fs::race::Bait::new(b"ours\n", b"secret\n");
        let secret = zync_fs::hash::hash_bytes(b"secret\n");
        let state = ClientState::open_in_memory().expect("state");
        let mapping = Mapping {
            name: zync_fs::DirName::parse("code").expect("name"),
            root: bait.root.clone(),
            own: Vec::new(),
        };
        let d = bait.root.join("d");
        let ((leaked, ours), swaps) = zync_fs::race::exchanging(&d, &bait.link, || {
            let (mut leaked, mut ours) = (0, 0);
            for _ in 0..3_000 {
                for out in collect(&state, &mapping).expect("collect") {
                    match out.sha256.as_deref() {
                        Some(sha) if sha == secret => leaked += 1,
                        Some(_) => ours += 1,
                        None => {}
                    }
                }
            }
            (leaked, ours)
        });
        assert_eq!(
            leaked, 0,
            "the outside file was hashed for a push {leaked} times"
        );
        assert!(
            ours > 0 && swaps > 0,
            "{ours} files of ours collected, {swaps} swaps"
        );
    }
}
