//! `zync-client`, machine R: pulls changes from the daemon on E and applies them to local
//! directories, once (`--once`) or continuously over one connection that the daemon notifies.
#![deny(missing_docs)]

mod cli;
mod connection;
mod download;
mod dry_run;
pub mod error;
mod failures;
mod ledger;
mod mapping;
pub mod status;
mod sync;
pub mod transport;
mod upstream;
pub mod wait;
pub mod writer;

use std::future::Future;
use std::time::Duration;

use anyhow::Context;
use zync_db::ClientState;

pub use cli::{parse_mappings, Args, Config};
pub use connection::{Connection, Credentials, STALL_TIMEOUT};
pub use error::{exit, ClientError};
pub use mapping::Mapping;
pub use sync::{sync_dir, DirReport};
pub use upstream::{collect, push, Outgoing, PushSummary};

/// Retries of a `--once` run while single paths fail (a file changing on E mid-transfer).
const ONCE_ATTEMPTS: usize = 5;
/// Reconnect backoff bounds in loop mode.
const BACKOFF_MIN: Duration = Duration::from_millis(250);
const BACKOFF_MAX: Duration = Duration::from_secs(30);

/// Runs the client as the command line says, until done (`--once`) or SIGINT/SIGTERM.
///
/// # Errors
/// Bad arguments; with `--once`, anything that left R out of sync; in loop mode, only errors
/// that reconnecting cannot fix (a refused token).
///
/// Returns the exit code of a run that ended without an error: [`exit::OK`], or
/// [`exit::CONFLICTS`] when `--once` kept edits made on R as conflict copies.
pub fn main_with_args(args: Args) -> anyhow::Result<u8> {
    let config = Config::from_args(&args)?;
    let runtime = zync_cli::runtime(Some(2))?;
    runtime.block_on(async {
        if args.dry_run {
            let listed = if args.update_upstream {
                dry_run::upstream(&config, args.json).await
            } else {
                dry_run::once(&config, args.json).await
            };
            return quiet_on_broken_pipe(listed);
        }
        if args.update_upstream {
            let summary = run_upstream(&config).await?;
            print_summary(&summary, args.json)?;
            match &summary.refused {
                // Scripts must notice that part of R's changes did not reach E.
                Some(why) => {
                    eprintln!(
                        "zync-client: E refused the push part way; {} file(s) not sent: {}",
                        summary.not_sent,
                        zync_cli::visible::line(why)
                    );
                    Ok(exit::PARTIAL)
                }
                None if summary.changing > 0 => {
                    eprintln!(
                        "zync-client: {} file(s) not sent: they changed on R each time they were sent; push again once they are quiet",
                        summary.changing
                    );
                    Ok(exit::PARTIAL)
                }
                None => Ok(exit::OK),
            }
        } else if args.wait {
            wait::run(&config, Duration::from_secs(args.timeout), args.json).await
        } else if args.once {
            let reports = run_once(&config).await?;
            let copies: Vec<&String> = reports.iter().flat_map(|r| &r.conflicts).collect();
            if copies.is_empty() {
                return Ok(exit::OK);
            }
            eprintln!(
                "zync-client: in sync; {} edit(s) made on R were kept as conflict copies: {}",
                copies.len(),
                copies
                    .iter()
                    .map(|c| zync_cli::visible::line(c))
                    .collect::<Vec<_>>()
                    .join(", ")
            );
            Ok(exit::CONFLICTS)
        } else {
            run_loop(&config, zync_cli::shutdown_signal("stopping"))
                .await
                .map(|()| exit::OK)
        }
    })
}

/// A listing cut short because its reader went away (`| head`) ends quietly, as ripgrep's
/// does: there is nobody left to tell.
fn quiet_on_broken_pipe(result: anyhow::Result<u8>) -> anyhow::Result<u8> {
    match result {
        Err(e)
            if e.downcast_ref::<std::io::Error>()
                .is_some_and(|e| e.kind() == std::io::ErrorKind::BrokenPipe) =>
        {
            Ok(exit::OK)
        }
        other => other,
    }
}

/// Prints what `--update-upstream` did, as text or (`--json`) one JSON object.
fn print_summary(summary: &PushSummary, json: bool) -> anyhow::Result<()> {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    if json {
        serde_json::to_writer_pretty(&mut out, summary)?;
        writeln!(out)?;
        return Ok(());
    }
    match &summary.session_id {
        None if summary.refused.is_some() => writeln!(
            out,
            "nothing was staged: E refused the push before any file was staged (see below)"
        )?,
        None if summary.changing > 0 => writeln!(
            out,
            "nothing was staged: {} file(s) changed on R each time they were sent (see the warnings above); push again once they are quiet",
            summary.changing
        )?,
        None if summary.skipped > 0 => writeln!(
            out,
            "nothing was staged: all {} changed file(s) are refused by E ({}; see the warnings above for each)",
            summary.skipped,
            zync_cli::visible::line(summary.skipped_because.as_deref().unwrap_or("ignored there"))
        )?,
        None => writeln!(
            out,
            "nothing to send: R has no changes against what it last synced"
        )?,
        Some(id) => {
            writeln!(out, "session {id}")?;
            writeln!(
                out,
                "{} file(s), {} bytes, {} conflict(s); review and apply it on E with `zync-apply show {id}` and `zync-apply apply {id}`",
                summary.files, summary.bytes, summary.conflicts
            )?;
            if summary.skipped > 0 {
                writeln!(
                    out,
                    "{} file(s) not sent: E refuses their paths (see the warnings above)",
                    summary.skipped
                )?;
            }
            if summary.changing > 0 {
                writeln!(
                    out,
                    "{} file(s) not sent: they changed on R each time they were sent (see the warnings above); push again once they are quiet",
                    summary.changing
                )?;
            }
            if summary.refused.is_some() {
                writeln!(
                    out,
                    "incomplete: {} file(s) not sent (see below); this session holds only what was sent before; apply it, or drop it on E with `zync-apply drop {id}`, then push again",
                    summary.not_sent
                )?;
            }
        }
    }
    Ok(())
}

/// Takes the writer lock (before anything is touched), then opens R's state and removes the
/// temp files an interrupted run left.
fn open_state(config: &Config, mode: &str) -> anyhow::Result<(ClientState, zync_fs::LockFile)> {
    let lock = writer::acquire(&config.db, mode)?;
    open_locked(config, lock)
}

/// Opens R's state under a writer lock already held, and removes the temp files an
/// interrupted run left.
fn open_locked(
    config: &Config,
    lock: zync_fs::LockFile,
) -> anyhow::Result<(ClientState, zync_fs::LockFile)> {
    let state = ClientState::open(&config.db)
        .with_context(|| format!("cannot open the client database {}", config.db.display()))?;
    // Temp files left by a crash are never a version anyone wants (invariant 1).
    for mapping in &config.mappings {
        let removed = zync_fs::remove_temp_files(&mapping.root)?;
        if removed > 0 {
            tracing::info!(dir = %mapping.name, removed, "removed temp files left by an interrupted run");
        }
    }
    Ok((state, lock))
}

/// Syncs every mapping once and returns the reports; fails unless R ends up in sync with
/// what the daemon had when the client asked.
///
/// # Errors
/// An unreachable daemon, a refused token, a mapping the daemon does not serve, or paths
/// that could not be applied.
pub async fn run_once(config: &Config) -> anyhow::Result<Vec<DirReport>> {
    let (mut state, _lock) = open_state(config, "--once")?;
    let mut conn = connect(config, state.client_id()).await?;
    wait_for_scan(&mut conn).await?;
    let reports = sync_until_settled(&mut conn, &mut state, config).await?;
    conn.close().await;
    all_applied(&reports)?;
    Ok(reports)
}

/// Syncs every mapping, retrying while only transient failures remain (a file changing on E
/// mid-transfer), at most [`ONCE_ATTEMPTS`] times.
async fn sync_until_settled(
    conn: &mut Connection,
    state: &mut ClientState,
    config: &Config,
) -> Result<Vec<DirReport>, ClientError> {
    let mut reports = Vec::new();
    for attempt in 1..=ONCE_ATTEMPTS {
        reports = sync_all(conn, state, config).await?;
        // Retry at once only what can clear by itself; a blocked path needs the user.
        if reports.iter().all(|r| r.transient == 0) {
            break;
        }
        if attempt < ONCE_ATTEMPTS {
            tokio::time::sleep(Duration::from_millis(200 * attempt as u64)).await;
        }
    }
    Ok(reports)
}

/// Fails with the paths that could not be applied, the first of them by name (exit code
/// [`exit::PARTIAL`]).
fn all_applied(reports: &[DirReport]) -> Result<(), crate::error::PathsFailed> {
    let count = reports.iter().map(|r| r.failed).sum();
    let shown: Vec<String> = reports
        .iter()
        // Printed to a terminal: a path from E is shown as it is, never drawn.
        .flat_map(|r| {
            r.failures
                .iter()
                .map(|(p, e)| zync_cli::visible::line(&format!("{p}: {e}")).into_owned())
        })
        .take(failures::SHOWN)
        .collect();
    if count == 0 {
        Ok(())
    } else {
        Err(crate::error::PathsFailed { count, shown })
    }
}

/// Collects R's local changes in every mapping and sends them as one upstream session.
///
/// # Errors
/// An unreachable daemon, a refused token, unreadable files, or a refused upload.
pub async fn run_upstream(config: &Config) -> anyhow::Result<PushSummary> {
    let (state, _lock) = open_state(config, "--update-upstream")?;
    let mut changes = Vec::new();
    for mapping in &config.mappings {
        changes.extend(collect(&state, mapping)?);
    }
    if changes.is_empty() {
        return Ok(PushSummary::default());
    }
    let mut conn = connect(config, state.client_id()).await?;
    let summary = push(&mut conn, &config.mappings, &changes).await?;
    conn.close().await;
    Ok(summary)
}

/// Connects, authenticates, handshakes, and checks that the daemon serves every mapping.
async fn connect(config: &Config, client_id: &str) -> Result<Connection, ClientError> {
    let conn = Connection::open(
        &config.server,
        &config.credentials,
        client_id,
        Some(config.dir_names()),
        config.stall_timeout,
    )
    .await?;
    check_dirs(&conn, config)?;
    Ok(conn)
}

fn check_dirs(conn: &Connection, config: &Config) -> Result<(), ClientError> {
    for mapping in &config.mappings {
        if !conn.hello.dirs.iter().any(|d| d == mapping.name.as_str()) {
            return Err(ClientError::Config(format!(
                "the daemon serves no directory named {} (it serves: {}); fix --dirs",
                mapping.name,
                conn.hello.dirs.join(", ")
            )));
        }
    }
    for served in &conn.hello.dirs {
        if !config.mappings.iter().any(|m| m.name.as_str() == served) {
            tracing::warn!(dir = %served, "the daemon serves this directory but --dirs does not map it; skipping it");
        }
    }
    Ok(())
}

/// `--once` must not report "in sync" against a half-built index.
async fn wait_for_scan(conn: &mut Connection) -> Result<(), ClientError> {
    if !conn.hello.scanning {
        return Ok(());
    }
    tracing::info!("the daemon is scanning its directories; waiting for it to finish");
    loop {
        match conn
            .call(zync_proto::Op::GetLastSequence { ignored: None })
            .await?
        {
            zync_proto::Reply::GetLastSequence(s) if !s.scanning => return Ok(()),
            _ => {}
        }
        if !conn.seen.scan_complete {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

async fn sync_all(
    conn: &mut Connection,
    state: &mut ClientState,
    config: &Config,
) -> Result<Vec<DirReport>, ClientError> {
    let mut reports = Vec::new();
    for mapping in &config.mappings {
        let report = sync_dir(conn, state, mapping).await?;
        if report.applied > 0 || report.failed > 0 {
            tracing::info!(
                dir = %mapping.name,
                applied = report.applied,
                downloaded = report.downloaded,
                copied = report.copied,
                bytes = report.bytes,
                conflicts = report.conflicts.len(),
                failing = report.failed,
                sequence = report.last_seq,
                "synced"
            );
        }
        reports.push(report);
    }
    Ok(reports)
}

/// Loop mode: one connection, synced on every CHANGED notification and every `interval`;
/// reconnects with backoff on any transient error. Returns when `shutdown` completes.
///
/// # Errors
/// Only errors that reconnecting cannot fix (a refused token, a mapping the daemon lacks).
pub async fn run_loop(config: &Config, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
    let (mut state, _lock) = open_state(config, "loop")?;
    tokio::pin!(shutdown);
    let mut backoff = zync_cli::Backoff::new(BACKOFF_MIN, BACKOFF_MAX);
    loop {
        let mut connected = false;
        let result = tokio::select! {
            result = session(config, &mut state, &mut connected) => result,
            () = &mut shutdown => return Ok(()),
        };
        // A connection that got through the handshake was progress: a tunnel that drops
        // every few megabytes must not wait longer and longer between resumed downloads.
        if connected {
            backoff.reset();
        }
        let wait = backoff.next_delay();
        if let Err(e) = result {
            if e.is_permanent() {
                return Err(e.into());
            }
            // Whatever answered on the daemon's port may have put words in the error.
            let e = e.to_string();
            tracing::warn!("{}; reconnecting in {wait:.1?}", e);
        }
        tokio::select! {
            () = tokio::time::sleep(wait) => {}
            () = &mut shutdown => return Ok(()),
        }
    }
}

/// One connection's life in loop mode; returns only with an error.
async fn session(
    config: &Config,
    state: &mut ClientState,
    connected: &mut bool,
) -> Result<(), ClientError> {
    let mut conn = connect(config, state.client_id()).await?;
    *connected = true;
    tracing::info!(server = %config.server, dirs = conn.hello.dirs.len(), "connected");
    let mut give_back = zync_cli::GiveBack::default();
    loop {
        sync_all(&mut conn, state, config).await?;
        // An initial sync, or a big change on E, leaves megabytes freed that glibc would keep
        // until the client stops (off the reactor: the allocator's locks are held meanwhile).
        give_back = tokio::task::spawn_blocking(move || {
            give_back.if_grown();
            give_back
        })
        .await
        .unwrap_or_default();
        // A pushed CHANGED event, or the safety-net interval, starts the next round; the wait
        // itself pings the daemon so a stalled tunnel is noticed (--stall-timeout).
        conn.wait_event(config.interval).await?;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_paths_that_failed_are_listed_as_they_are_not_as_a_terminal_draws_them() {
        let report = DirReport {
            failed: 1,
            failures: vec![("x\r\x1b[2Kok.txt".into(), "disk full".into())],
            ..DirReport::default()
        };
        let text = all_applied(&[report])
            .expect_err("a path failed")
            .to_string();
        assert!(text.contains("x^M^[[2Kok.txt: disk full"), "{text:?}");
        assert!(!text.contains('\x1b'), "{text:?}");
    }
}
