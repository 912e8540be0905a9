//! `zync-client --wait`: a barrier for scripts on R (`zync-client --wait && make`). It asks the
//! daemon for a FLUSH (its sequences once its index holds every change made on E before the
//! request; docs/ARCHITECTURE.md, "Barriers"), then waits until R's database records each
//! mapped directory as durably applied that far.
//!
//! Beside a running loop client it is a reader: it does not take the writer lock, opens the
//! database read-only and lets the loop client do the work. With no client running it takes
//! the lock and syncs once itself, like `--once`.

use std::collections::BTreeMap;
use std::io::Write;
use std::time::Duration;

use anyhow::Context;
use serde::Serialize;
use tokio::time::Instant;
use zync_db::ClientState;
use zync_proto::{ErrorCode, LastSequence, Op, Reply};

use crate::cli::Config;
use crate::connection::Connection;
use crate::error::{exit, ClientError};
use crate::writer;

/// How often R's database is read while a loop client works.
const POLL: Duration = Duration::from_millis(50);
/// How long to wait between FLUSH requests the daemon answered `busy`.
const BUSY_RETRY: Duration = Duration::from_millis(500);

/// What `--json` prints.
#[derive(Debug, Serialize)]
pub struct WaitReport {
    /// True when R holds every change E had when the command started (exit code 0).
    pub in_sync: bool,
    /// How long the command waited, in milliseconds.
    pub waited_ms: u64,
    /// `loop-client` when a running client did the work, `synced-once` when this command did.
    pub by: &'static str,
    /// Per mapped directory: E's sequence once it settled, and what R has applied.
    pub dirs: Vec<DirWait>,
    /// Directories E cannot see now (nothing new is recorded for them), with why.
    pub unavailable: BTreeMap<String, String>,
    /// Edits made on R that a sync by this command kept as conflict copies.
    pub conflict_copies: Vec<String>,
    /// Why the wait did not end in sync, one line each; empty when in sync.
    pub outstanding: Vec<String>,
}

/// One directory.
#[derive(Debug, Serialize)]
pub struct DirWait {
    /// The daemon's name for it.
    pub dir: String,
    /// The sequence R must reach.
    pub target: u64,
    /// The sequence R has durably applied (of the daemon's current index).
    pub applied: u64,
}

/// Runs `--wait` and returns the exit code: [`exit::OK`] or [`exit::TIMED_OUT`].
///
/// # Errors
///
/// As `--once`: an unreachable daemon (exit 5), a refused token (6), a mapping the daemon
/// does not serve (2), paths that could not be applied when this command synced (4).
pub async fn run(config: &Config, timeout: Duration, json: bool) -> anyhow::Result<u8> {
    let started = Instant::now();
    let deadline = (!timeout.is_zero()).then(|| started + timeout);
    let mut report = match writer::acquire(&config.db, "--wait") {
        Ok(lock) => sync_once(config, lock, deadline).await?,
        Err(ClientError::Busy(_)) => follow_loop(config, deadline).await?,
        Err(e) => return Err(e.into()),
    };
    report.waited_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
    print(&report, json, timeout)?;
    Ok(if report.in_sync {
        exit::OK
    } else {
        exit::TIMED_OUT
    })
}

/// No client runs: take E's sequences, sync once under the lock, and compare.
async fn sync_once(
    config: &Config,
    lock: zync_fs::LockFile,
    deadline: Option<Instant>,
) -> anyhow::Result<WaitReport> {
    let (mut state, _lock) = crate::open_locked(config, lock)?;
    let mut conn = crate::connect(config, state.client_id()).await?;
    let Some(targets) = flush(&mut conn, deadline).await? else {
        conn.close().await;
        return Ok(daemon_busy(config, "synced-once"));
    };
    let reports = crate::sync_until_settled(&mut conn, &mut state, config).await?;
    let index_id = conn.hello.index_id.clone();
    conn.close().await;
    crate::all_applied(&reports)?;
    let mut report = compare(config, &state, &index_id, &targets, "synced-once")?;
    report.conflict_copies = reports.into_iter().flat_map(|r| r.conflicts).collect();
    report.outstanding = outstanding(&report, &state)?;
    Ok(report)
}

/// A loop client runs: take E's sequences, then read R's database until it has them.
async fn follow_loop(config: &Config, deadline: Option<Instant>) -> anyhow::Result<WaitReport> {
    // The running client creates the database first thing; wait for it if it is that new.
    let state = loop {
        if config.db.exists() {
            break ClientState::open_read_only(&config.db).with_context(|| {
                format!("cannot read the client database {}", config.db.display())
            })?;
        }
        if deadline.is_some_and(|d| Instant::now() >= d) {
            anyhow::bail!(
                "the running client has not created its database {} yet",
                config.db.display()
            );
        }
        tokio::time::sleep(POLL).await;
    };
    let mut conn = crate::connect(config, state.client_id()).await?;
    let targets = flush(&mut conn, deadline).await?;
    let index_id = conn.hello.index_id.clone();
    conn.close().await;
    let Some(targets) = targets else {
        return Ok(daemon_busy(config, "loop-client"));
    };
    loop {
        let mut report = compare(config, &state, &index_id, &targets, "loop-client")?;
        if report.in_sync || deadline.is_some_and(|d| Instant::now() >= d) {
            report.outstanding = outstanding(&report, &state)?;
            return Ok(report);
        }
        tokio::time::sleep(POLL).await;
    }
}

/// FLUSH, asked again while the daemon answers `busy`, until `deadline`; None when it passed.
async fn flush(
    conn: &mut Connection,
    deadline: Option<Instant>,
) -> Result<Option<LastSequence>, ClientError> {
    loop {
        let asked = conn.call(Op::Flush {});
        let answer = match deadline {
            Some(d) => match tokio::time::timeout_at(d, asked).await {
                Ok(answer) => answer,
                Err(_) => return Ok(None),
            },
            None => asked.await,
        };
        match answer {
            Ok(Reply::Flush(sequences)) => return Ok(Some(sequences)),
            Ok(other) => {
                return Err(ClientError::Protocol(format!(
                    "expected a FLUSH reply, got {other:?}"
                )))
            }
            Err(ClientError::Server {
                code: ErrorCode::Busy,
                ..
            }) => tokio::time::sleep(BUSY_RETRY).await,
            Err(ClientError::Server {
                code: ErrorCode::UnknownOperation,
                ..
            }) => {
                return Err(ClientError::Incompatible(
                    "the daemon is older than this client and has no FLUSH: update zync-daemon on E to use --wait".into(),
                ))
            }
            Err(e) => return Err(e),
        }
    }
}

/// Each mapped directory's target against what R's database records.
fn compare(
    config: &Config,
    state: &ClientState,
    index_id: &str,
    targets: &LastSequence,
    by: &'static str,
) -> anyhow::Result<WaitReport> {
    let mut dirs = Vec::new();
    for mapping in &config.mappings {
        let name = mapping.name.to_string();
        let target = targets.dirs.get(&name).copied().unwrap_or(0);
        // A sequence of another index (the daemon's database was recreated) counts as none:
        // the client resyncs from 0.
        let applied = state
            .dir_state(&name)
            .context("cannot read the client database")?
            .filter(|s| s.index_id == index_id)
            .map_or(0, |s| s.last_seq);
        dirs.push(DirWait {
            dir: name,
            target,
            applied,
        });
    }
    Ok(WaitReport {
        in_sync: dirs.iter().all(|d| d.applied >= d.target),
        waited_ms: 0,
        by,
        dirs,
        unavailable: targets.unavailable.clone(),
        conflict_copies: Vec::new(),
        outstanding: Vec::new(),
    })
}

/// The report when the daemon never settled before the deadline.
fn daemon_busy(config: &Config, by: &'static str) -> WaitReport {
    WaitReport {
        in_sync: false,
        waited_ms: 0,
        by,
        dirs: Vec::new(),
        unavailable: BTreeMap::new(),
        conflict_copies: Vec::new(),
        outstanding: vec![format!(
            "the daemon at {} did not take in E's latest changes in time (it is scanning or hashing a large change)",
            config.server
        )],
    }
}

/// What keeps R behind, per directory, with the paths R's database records as failing.
fn outstanding(report: &WaitReport, state: &ClientState) -> anyhow::Result<Vec<String>> {
    let mut lines = Vec::new();
    for d in report.dirs.iter().filter(|d| d.applied < d.target) {
        let failing = state
            .failing(Some(&d.dir))
            .context("cannot read the client database")?;
        let mut line = format!(
            "{} at {} of {} ({} behind)",
            d.dir,
            d.applied,
            d.target,
            d.target - d.applied
        );
        if !failing.is_empty() {
            let paths: Vec<String> = failing
                .iter()
                .take(5)
                .map(|f| {
                    let (path, error) = (&f.path, &f.error);
                    zync_cli::visible::line(&format!("{path}: {error}")).into_owned()
                })
                .collect();
            line.push_str(&format!("; failing: {}", paths.join("; ")));
        }
        lines.push(line);
    }
    Ok(lines)
}

fn print(report: &WaitReport, json: bool, timeout: Duration) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    if json {
        serde_json::to_writer_pretty(&mut out, report)?;
        writeln!(out)?;
    } else if report.in_sync {
        let dirs: Vec<String> = report
            .dirs
            .iter()
            .map(|d| format!("{} at {}", d.dir, d.target))
            .collect();
        writeln!(
            out,
            "in sync: R has everything E had ({}) in {:.1}s",
            dirs.join(", "),
            report.waited_ms as f64 / 1000.0
        )?;
    }
    for (dir, why) in &report.unavailable {
        eprintln!(
            "zync-client: note: {dir} is unavailable on E: {}",
            zync_cli::visible::line(why)
        );
    }
    if !report.conflict_copies.is_empty() {
        eprintln!(
            "zync-client: edits made on R were kept as conflict copies: {}",
            report
                .conflict_copies
                .iter()
                .map(|c| zync_cli::visible::line(c))
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    if !report.in_sync {
        eprintln!(
            "zync-client: --wait timed out after {}s; outstanding:",
            timeout.as_secs()
        );
        for line in &report.outstanding {
            eprintln!("  {line}");
        }
        if report.by == "loop-client" {
            eprintln!("  (a running zync-client is syncing this database; see its log or `zync-client --status`)");
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The failing paths `--wait` lists when it times out are names from E or R, and their
    /// errors quote them: shown made visible, each directory on one line.
    #[test]
    fn failing_paths_are_listed_made_visible() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let mut state = ClientState::open(&tmp.path().join("c.db")).expect("client state");
        let name = "x\u{1b}]0;owned\u{7}\r\nzync-client: in sync";
        let mut batch = state.batch().expect("batch");
        batch
            .set_failing("code", name, &format!("cannot write {name}: no room"))
            .expect("failing");
        batch.commit().expect("commit");
        let report = WaitReport {
            in_sync: false,
            waited_ms: 0,
            by: "synced-once",
            dirs: vec![DirWait {
                dir: "code".into(),
                target: 9,
                applied: 3,
            }],
            unavailable: BTreeMap::new(),
            conflict_copies: Vec::new(),
            outstanding: Vec::new(),
        };
        let lines = outstanding(&report, &state).expect("outstanding");
        assert_eq!(lines.len(), 1, "{lines:?}");
        assert!(
            lines[0].chars().all(|c| !c.is_control()),
            "a name reached the terminal raw: {lines:?}"
        );
        assert!(
            lines[0].contains("failing: x^[]0;owned^G^M^Jzync-client: in sync: cannot write x^["),
            "{lines:?}"
        );
    }
}
