//! Sync rounds: pull one directory's changes page by page, apply them, make them durable,
//! then advance and acknowledge the last sequence (DESIGN invariant 2).

use std::path::PathBuf;

use zync_db::{ClientState, DirState};
use zync_fs::DirName;
use zync_proto::{AckChanges, GetChanges, Op, Reply};

use crate::apply::{Applier, Record};
use crate::connection::Connection;
use crate::error::ClientError;

/// A local directory and the daemon's name for it.
#[derive(Debug, Clone)]
pub struct Mapping {
    /// The daemon's directory name.
    pub name: DirName,
    /// The local directory (canonical).
    pub root: PathBuf,
    /// The client's own files (database, token) that lie inside this directory: never
    /// overwritten by a change from E, never sent upstream.
    pub own: Vec<PathBuf>,
}

/// What one sync of one directory did.
#[derive(Debug, Default)]
pub struct DirReport {
    /// Changes applied.
    pub applied: usize,
    /// Files downloaded.
    pub downloaded: usize,
    /// Bytes downloaded.
    pub bytes: u64,
    /// Conflict copies made.
    pub conflicts: Vec<String>,
    /// Paths that could not be applied, with the reason; retried next round.
    pub failures: Vec<(String, String)>,
    /// How many of the failures may clear by themselves soon (a file that changed on E during
    /// its transfer): worth an immediate retry.
    pub transient: usize,
    /// The sequence stored as durably applied.
    pub last_seq: u64,
}

/// Pulls and applies everything the daemon has for `mapping` beyond the stored sequence.
///
/// # Errors
/// Connection and database errors. Failures of single paths are reported in the
/// [`DirReport`] instead, and hold the stored sequence below them.
pub async fn sync_dir(
    conn: &mut Connection,
    state: &mut ClientState,
    mapping: &Mapping,
) -> Result<DirReport, ClientError> {
    let name = mapping.name.as_str();
    let index_id = conn.hello.index_id.clone();
    let mut resynced = false;
    let mut since = match state.dir_state(name)? {
        Some(s) if s.index_id == index_id => s.last_seq,
        Some(_) => {
            tracing::info!(
                dir = name,
                "the daemon's index is new; resyncing, downloading only files that differ"
            );
            0
        }
        None => 0,
    };
    let mut report = DirReport {
        last_seq: since,
        ..DirReport::default()
    };
    let mut blocked = false;
    loop {
        let page = match conn
            .call(Op::GetChanges(GetChanges {
                dir: name.to_string(),
                since,
                limit: None,
            }))
            .await?
        {
            Reply::GetChanges(page) => page,
            other => {
                return Err(ClientError::Protocol(format!(
                    "expected GET_CHANGES, got {other:?}"
                )))
            }
        };
        let Some(last) = page.changes.last().map(|c| c.seq) else {
            if page.last_sequence < since && !resynced {
                // The daemon's index went back (restored from a backup) under the same id:
                // what this client stored cannot be trusted, so compare everything again.
                tracing::warn!(
                    dir = name,
                    stored = since,
                    daemon = page.last_sequence,
                    "the daemon's sequence is behind this client's; resyncing"
                );
                since = 0;
                resynced = true;
                report.last_seq = 0;
                continue;
            }
            break;
        };
        // Note what this page is about to write first: after a crash between a rename and the
        // page's commit, the next run recognises those files as zync's own writes.
        let mut batch = state.batch()?;
        for change in page.changes.iter().filter(|c| !c.deleted) {
            if let Some(sha) = &change.sha256 {
                batch.set_inflight(name, &change.path, sha)?;
            }
        }
        batch.commit()?;
        let mut records = Vec::with_capacity(page.changes.len());
        let mut failed = Vec::new();
        let mut durable = report.last_seq;
        let mut lost: Option<ClientError> = None;
        {
            let mut applier = Applier::new(mapping, state);
            for change in &page.changes {
                match applier.apply(conn, change).await {
                    Ok(record) => {
                        records.push((change.path.clone(), record));
                        report.applied += 1;
                        if !blocked {
                            durable = change.seq;
                        }
                    }
                    Err(e) if e.is_connection() => {
                        lost = Some(e);
                        break;
                    }
                    Err(e) => {
                        tracing::warn!(dir = name, path = %change.path, "{e}");
                        report.failures.push((change.path.clone(), e.to_string()));
                        failed.push((change.path.clone(), e.to_string()));
                        if e.is_transient() {
                            report.transient += 1;
                        }
                        blocked = true;
                    }
                }
            }
            applier.finish()?;
            report.downloaded += applier.downloaded;
            report.bytes += applier.bytes;
            report.conflicts.append(&mut applier.conflicts);
        }
        commit(state, name, &index_id, records, &failed, durable)?;
        report.last_seq = durable;
        if let Some(e) = lost {
            return Err(e);
        }
        conn.call(Op::AckChanges(AckChanges {
            dir: name.to_string(),
            sequence: durable,
        }))
        .await?;
        since = last;
        if !page.more {
            break;
        }
    }
    if report.failures.is_empty() {
        // Everything up to the daemon's sequence is recorded: no write of an unfinished run
        // is left to recognise.
        let mut batch = state.batch()?;
        batch.clear_inflight(name)?;
        batch.commit()?;
    }
    Ok(report)
}

/// Records a page's results and the new durable sequence in one transaction. Runs only after
/// the page's files and directories were fsynced.
fn commit(
    state: &mut ClientState,
    name: &str,
    index_id: &str,
    records: Vec<(String, Record)>,
    failed: &[(String, String)],
    durable: u64,
) -> Result<(), ClientError> {
    let mut batch = state.batch()?;
    for (change_path, record) in records {
        match record {
            Record::Set(path, synced) => batch.set_synced(name, &path, &synced)?,
            Record::Remove(path) => batch.remove_synced_tree(name, &path)?,
            Record::Nothing => {}
        }
        batch.clear_failing(name, &change_path)?;
        batch.clear_inflight_path(name, &change_path)?;
    }
    for (path, error) in failed {
        batch.set_failing(name, path, error)?;
    }
    batch.set_dir_state(
        name,
        &DirState {
            index_id: index_id.to_string(),
            last_seq: durable,
        },
    )?;
    batch.commit()?;
    Ok(())
}
