//! `zync-client --status`: the state of the sync in one command, for a user asking whether R
//! is up to date. It reads the client
//! database read-only, asks the daemon (connect + HELLO, GET_LAST_SEQUENCE, one GET_CHANGES
//! page per directory) under a short deadline, and walks each local root for conflict copies.
//! It changes nothing: no database is created, no directory made, no change acknowledged.
//!
//! What is ignored is never a secret: per directory it reports what E's daemon ignores (so
//! never sends), counted by rule, and what R's own walk ignores (so `--update-upstream` never
//! pushes); `--ignored` lists the paths too.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use serde::Serialize;
use zync_db::ClientState;
use zync_proto::{GetChanges, IgnoredCount, IgnoredPath, IgnoredReport, Op, Reply};

use crate::cli::{credentials, parse_mappings_with, Args};
use crate::connection::{Connection, Credentials};
use crate::error::ClientError;
use crate::mapping::Mapping;

/// How long the whole conversation with the daemon may take: an unreachable daemon is a normal
/// answer for a status command, to be given quickly.
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(5);
/// Pending changes are counted on one GET_CHANGES page of at most this many; beyond it the
/// count is reported as "at least" (`pending_more`).
pub const PENDING_CAP: u32 = 1000;
/// The client id a client that never synced (no database, so no id of its own) says HELLO
/// with.
pub const PROBE_CLIENT_ID: &str = zync_proto::STATUS_PROBE_ID;

/// The whole report; `--json` prints it as is (README, "zync-client --status").
#[derive(Debug, Serialize)]
pub struct Status {
    /// The daemon's URL.
    pub server: String,
    /// The client database's path.
    pub db: String,
    /// The client id, or null when the database does not exist (never synced).
    pub client_id: Option<String>,
    /// The daemon's side.
    pub daemon: DaemonStatus,
    /// Every directory in sync with a reachable daemon that is not scanning (exit code 0).
    pub in_sync: bool,
    /// One entry per mapping, in `--dirs` order.
    pub dirs: Vec<DirStatus>,
}

/// What the daemon said, or why it could not be asked.
#[derive(Debug, Default, Serialize)]
pub struct DaemonStatus {
    /// Connect and HELLO succeeded within the deadline.
    pub reachable: bool,
    /// Why not, when not reachable (or why a later request failed).
    pub error: Option<String>,
    /// The daemon's index id.
    pub index_id: Option<String>,
    /// The daemon's program version.
    pub version: Option<String>,
    /// True while the daemon scans (its index is incomplete).
    pub scanning: Option<bool>,
}

/// One mapping's state.
#[derive(Debug, Serialize)]
pub struct DirStatus {
    /// The dir name.
    pub name: String,
    /// The local directory.
    pub root: String,
    /// Whether the local directory exists.
    pub root_exists: bool,
    /// The summary, see [`DirState`].
    pub state: DirState,
    /// The last sequence R applied durably, or null when it never synced this dir.
    pub client_sequence: Option<u64>,
    /// The daemon's last sequence for the dir, or null when it could not be asked.
    pub daemon_sequence: Option<u64>,
    /// Changes R has yet to apply (counted on one page), or null when unknown.
    pub pending: Option<u64>,
    /// True when there are more pending changes than `pending` counts.
    pub pending_more: bool,
    /// Paths that failed to apply and are retried.
    pub failing: Vec<FailingPath>,
    /// Conflict copies under the local root, relative paths.
    pub conflict_copies: Vec<String>,
    /// Why the daemon cannot see this directory on E now (gone, emptied at once, unmounted),
    /// when state is `unavailable`; R keeps its files meanwhile.
    pub unavailable: Option<String>,
    /// What E's daemon ignores in this directory (and so never sends), counted by rule, with
    /// the paths under `--ignored` (at most [`zync_proto::MAX_IGNORED_LISTED`], `more`
    /// counting the rest); null when the daemon could not be asked or does not report it
    /// (older than this client).
    pub ignored_on_e: Option<IgnoredReport>,
    /// What R ignores under the local directory (and so `--update-upstream` never sends),
    /// counted by rule, with every path under `--ignored`.
    pub ignored_on_r: IgnoredReport,
}

/// A path the client keeps failing on.
#[derive(Debug, Serialize)]
pub struct FailingPath {
    /// The path relative to the root.
    pub path: String,
    /// The last error.
    pub error: String,
    /// How many rounds it failed in.
    pub attempts: u64,
    /// When it first failed, seconds since the Unix epoch.
    pub since_unix: i64,
}

/// One word for a directory's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DirState {
    /// R applied everything the daemon has.
    InSync,
    /// The daemon has changes R has not applied.
    Behind,
    /// R never synced this directory.
    NeverSynced,
    /// The daemon's index id differs from the one R stored: the next sync starts over
    /// (downloading only what differs).
    Resync,
    /// Some paths keep failing to apply.
    Failing,
    /// The daemon does not serve this dir name.
    NotServed,
    /// The daemon serves it, but its directory on E is gone, was emptied at once or is
    /// unmounted: nothing is recorded for it (R keeps its files) until it is back.
    Unavailable,
    /// The daemon could not be asked.
    Unknown,
}

impl DirState {
    fn label(self) -> &'static str {
        match self {
            DirState::InSync => "in sync",
            DirState::Behind => "behind",
            DirState::NeverSynced => "never synced",
            DirState::Resync => "resync",
            DirState::Failing => "failing",
            DirState::NotServed => "not served",
            DirState::Unavailable => "UNAVAILABLE on E",
            DirState::Unknown => "unknown",
        }
    }
}

/// What the daemon knows about one dir, when it could be asked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Remote {
    /// Whether the daemon serves the dir name.
    pub served: bool,
    /// Whether the daemon said the directory is unavailable on E.
    pub unavailable: bool,
    /// Its last sequence for the dir.
    pub sequence: u64,
    /// Pending changes counted, and whether there are more.
    pub pending: (u64, bool),
}

/// The state of one dir from what R stored and what the daemon said. `stored` is R's
/// (index id matches, last sequence); `remote` is None when the daemon could not be asked.
pub fn classify(stored: Option<(bool, u64)>, failing: usize, remote: Option<Remote>) -> DirState {
    if remote.is_some_and(|r| !r.served) {
        return DirState::NotServed;
    }
    if remote.is_some_and(|r| r.unavailable) {
        return DirState::Unavailable;
    }
    let Some((same_index, client_seq)) = stored else {
        return DirState::NeverSynced;
    };
    if failing > 0 {
        return DirState::Failing;
    }
    let Some(remote) = remote else {
        return DirState::Unknown;
    };
    if !same_index {
        DirState::Resync
    } else if remote.pending.0 > 0 || remote.pending.1 || client_seq != remote.sequence {
        DirState::Behind
    } else {
        DirState::InSync
    }
}

/// `zync-client --status [--json]`: prints the report and returns the exit code (0 in sync,
/// 1 not in sync or an error, 2 a bad command line).
pub fn main(args: &Args) -> ExitCode {
    let report = match gather(args) {
        Ok(report) => report,
        Err(e) => {
            eprintln!("zync-client: {}", zync_cli::one_line(&e));
            return ExitCode::from(if e.downcast_ref::<ClientError>().is_some() {
                2
            } else {
                1
            });
        }
    };
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    let written = if args.json {
        serde_json::to_writer_pretty(&mut out, &report)
            .map_err(std::io::Error::from)
            .and_then(|()| writeln!(out))
    } else {
        render(&report, &mut out)
    };
    match written.and_then(|()| out.flush()) {
        Ok(()) if report.in_sync => ExitCode::SUCCESS,
        Ok(()) => ExitCode::FAILURE,
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("zync-client: cannot write the status: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Builds the report.
///
/// # Errors
///
/// A bad `--dirs` or token file ([`ClientError`], a usage error), or a client database that
/// exists but cannot be read.
pub fn gather(args: &Args) -> anyhow::Result<Status> {
    if args.dirs.is_empty() {
        return Err(ClientError::Config(
            "no directories to report on: give --dirs NAME:LOCAL_PATH (or `dirs` in the config file)".into(),
        )
        .into());
    }
    let mappings = parse_mappings_with(&args.dirs, false)?;
    let creds = credentials(args.token_file.as_deref(), &args.db)?;
    // Never create the database: a client that never synced says so.
    let state =
        if args.db.exists() {
            Some(ClientState::open_read_only(&args.db).with_context(|| {
                format!("cannot read the client database {}", args.db.display())
            })?)
        } else {
            None
        };
    let client_id = state.as_ref().map(|s| s.client_id().to_owned());
    let mut dirs = Vec::new();
    let mut stored = Vec::new();
    for mapping in &mappings {
        let (dir_state, failing) = match &state {
            Some(s) => (
                s.dir_state(mapping.name.as_str())?,
                s.failing(Some(mapping.name.as_str()))?,
            ),
            None => (None, Vec::new()),
        };
        stored.push(dir_state.clone());
        let (conflict_copies, ignored_on_r) = walk(&mapping.root, args.ignored);
        dirs.push(DirStatus {
            name: mapping.name.to_string(),
            root: mapping.root.display().to_string(),
            root_exists: mapping.root.is_dir(),
            state: DirState::Unknown,
            client_sequence: dir_state.as_ref().map(|d| d.last_seq),
            daemon_sequence: None,
            pending: None,
            pending_more: false,
            failing: failing
                .into_iter()
                .map(|f| FailingPath {
                    path: f.path,
                    error: f.error,
                    attempts: f.attempts,
                    since_unix: f.since_unix,
                })
                .collect(),
            conflict_copies,
            unavailable: None,
            ignored_on_e: None,
            ignored_on_r,
        });
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let probe_id = client_id.as_deref().unwrap_or(PROBE_CLIENT_ID);
    let asked = runtime.block_on(async {
        tokio::time::timeout(
            PROBE_TIMEOUT,
            probe(
                &args.server,
                &creds,
                probe_id,
                &mappings,
                &stored,
                args.ignored,
            ),
        )
        .await
        .unwrap_or_else(|_| {
            Err(ClientError::Unreachable {
                url: args.server.clone(),
                reason: format!("no complete answer within {PROBE_TIMEOUT:?}"),
            })
        })
    });
    let mut daemon = DaemonStatus::default();
    let mut reasons = BTreeMap::new();
    let mut ignored = BTreeMap::new();
    let remotes = match asked {
        Ok(Probed {
            hello,
            remotes,
            unavailable,
            ignored: on_e,
        }) => {
            reasons = unavailable;
            ignored = on_e;
            daemon.reachable = true;
            daemon.index_id = Some(hello.index_id.clone());
            daemon.version = Some(hello.server_version.clone());
            daemon.scanning = Some(hello.scanning);
            Some((hello.index_id, remotes))
        }
        Err(e) => {
            daemon.error = Some(e.to_string());
            None
        }
    };
    for (i, dir) in dirs.iter_mut().enumerate() {
        let remote = remotes.as_ref().map(|(_, r)| r[i]);
        dir.unavailable = reasons.remove(&dir.name);
        dir.ignored_on_e = ignored.remove(&dir.name);
        if let Some(r) = remote.filter(|r| r.served) {
            dir.daemon_sequence = Some(r.sequence);
            dir.pending = Some(r.pending.0);
            dir.pending_more = r.pending.1;
        }
        let index_id = remotes.as_ref().map(|(id, _)| id.as_str());
        let mine = stored[i]
            .as_ref()
            .map(|d| (index_id.is_none_or(|id| id == d.index_id), d.last_seq));
        dir.state = classify(mine, dir.failing.len(), remote);
    }
    let in_sync = daemon.reachable
        && daemon.scanning == Some(false)
        && dirs.iter().all(|d| d.state == DirState::InSync);
    Ok(Status {
        server: args.server.clone(),
        db: args.db.display().to_string(),
        client_id,
        daemon,
        in_sync,
        dirs,
    })
}

/// What the daemon said.
struct Probed {
    hello: zync_proto::Welcome,
    /// Per mapping, in order.
    remotes: Vec<Remote>,
    /// Unavailable dirs, with the reason.
    unavailable: BTreeMap<String, String>,
    /// What each served dir ignores.
    ignored: BTreeMap<String, IgnoredReport>,
}

/// Connects, then asks for the sequences, what each dir ignores (the paths too when
/// `list_ignored`), and one page of pending changes per dir.
async fn probe(
    url: &str,
    creds: &Credentials,
    client_id: &str,
    mappings: &[Mapping],
    stored: &[Option<zync_db::DirState>],
    list_ignored: bool,
) -> Result<Probed, ClientError> {
    // The directories are this client's only when the id is (a probe without a database
    // says HELLO under a shared id).
    let dirs = (client_id != PROBE_CLIENT_ID)
        .then(|| mappings.iter().map(|m| m.name.to_string()).collect());
    let mut conn = Connection::open(url, creds, client_id, dirs, PROBE_TIMEOUT).await?;
    let ask = Op::GetLastSequence {
        ignored: Some(if list_ignored {
            zync_proto::MAX_IGNORED_LISTED
        } else {
            0
        }),
    };
    let (sequences, unavailable, ignored) = match conn.call(ask).await? {
        Reply::GetLastSequence(s) => (s.dirs, s.unavailable, s.ignored),
        other => {
            return Err(ClientError::Protocol(format!(
                "expected a GET_LAST_SEQUENCE reply, got {other:?}"
            )))
        }
    };
    let mut remotes = Vec::new();
    for (mapping, stored) in mappings.iter().zip(stored) {
        let name = mapping.name.as_str();
        let Some(&sequence) = sequences.get(name) else {
            remotes.push(Remote {
                served: false,
                unavailable: false,
                sequence: 0,
                pending: (0, false),
            });
            continue;
        };
        // A different index id means the next sync starts from 0: all of it is pending.
        let since = stored
            .as_ref()
            .filter(|d| d.index_id == conn.hello.index_id)
            .map_or(0, |d| d.last_seq);
        let get = GetChanges {
            dir: name.to_owned(),
            since,
            limit: Some(PENDING_CAP),
        };
        let pending = match conn.call(Op::GetChanges(get)).await? {
            Reply::GetChanges(c) => (c.changes.len() as u64, c.more),
            other => {
                return Err(ClientError::Protocol(format!(
                    "expected a GET_CHANGES reply, got {other:?}"
                )))
            }
        };
        remotes.push(Remote {
            served: true,
            unavailable: unavailable.contains_key(name),
            sequence,
            pending,
        });
    }
    let hello = conn.hello.clone();
    conn.close().await;
    Ok(Probed {
        hello,
        remotes,
        unavailable,
        ignored,
    })
}

/// One walk of `root` with the rules `--update-upstream` uses: the conflict copies under it
/// (relative paths, sorted), skipping what the client ignores, and what it ignores, counted
/// by rule (listed too when `list`).
fn walk(root: &Path, list: bool) -> (Vec<String>, IgnoredReport) {
    if !root.is_dir() {
        return (Vec::new(), IgnoredReport::default());
    }
    let Ok(rules) = zync_fs::IgnoreRules::new(root, &[], true) else {
        return (Vec::new(), IgnoredReport::default());
    };
    let scan = zync_fs::scan(root, &rules, None);
    let mut found: Vec<String> = scan
        .entries
        .into_iter()
        .filter(|e| zync_fs::is_conflict_copy(e.path.file_name()))
        .map(|e| e.path.as_str().to_owned())
        .collect();
    found.sort();
    (found, ignored_report(&scan.ignored, list))
}

/// What a walk ignored, counted by rule (most first, then by pattern and source), with the
/// paths when `list`.
pub fn ignored_report(ignored: &[zync_fs::Ignored], list: bool) -> IgnoredReport {
    let mut counts: BTreeMap<(&str, &str), u64> = BTreeMap::new();
    for i in ignored {
        *counts
            .entry((i.rule.pattern.as_str(), i.rule.source.as_str()))
            .or_default() += 1;
    }
    let mut rules: Vec<IgnoredCount> = counts
        .into_iter()
        .map(|((pattern, source), count)| IgnoredCount {
            pattern: pattern.to_owned(),
            source: source.to_owned(),
            count,
        })
        .collect();
    // Stable: ties keep the map's (pattern, source) order, as the daemon's query does.
    rules.sort_by_key(|r| std::cmp::Reverse(r.count));
    let mut report = IgnoredReport::from_counts(rules);
    if list {
        report.paths = Some(
            ignored
                .iter()
                .map(|i| IgnoredPath {
                    path: i.path.as_str().to_owned(),
                    is_dir: i.is_dir,
                    pattern: i.rule.pattern.clone(),
                    source: i.rule.source.as_str().to_owned(),
                })
                .collect(),
        );
    }
    report
}

/// The human-readable report.
///
/// # Errors
///
/// Writing to `out` failed.
pub fn render(s: &Status, out: &mut dyn Write) -> std::io::Result<()> {
    let d = &s.daemon;
    if d.reachable {
        let scanning = if d.scanning == Some(true) {
            ", scanning"
        } else {
            ""
        };
        writeln!(
            out,
            "daemon   {}  reachable (zync {}{scanning})",
            s.server,
            zync_cli::visible::line(d.version.as_deref().unwrap_or("?"))
        )?;
    } else {
        writeln!(
            out,
            "daemon   {}  UNREACHABLE: {}",
            s.server,
            zync_cli::visible::line(d.error.as_deref().unwrap_or("no answer"))
        )?;
    }
    match &s.client_id {
        Some(id) => writeln!(out, "client   {}  (id {id})", s.db)?,
        None => writeln!(
            out,
            "client   {}  does not exist: this client never synced",
            s.db
        )?,
    }
    let rows: Vec<[String; 7]> = s
        .dirs
        .iter()
        .map(|dir| {
            let pending = match dir.pending {
                Some(n) if dir.pending_more => format!("{n}+"),
                Some(n) => n.to_string(),
                None => "?".into(),
            };
            let opt = |v: Option<u64>| v.map_or("-".to_owned(), |v| v.to_string());
            let root = if dir.root_exists {
                dir.root.clone()
            } else {
                format!("{} (missing)", dir.root)
            };
            [
                dir.name.clone(),
                dir.state.label().to_owned(),
                opt(dir.client_sequence),
                opt(dir.daemon_sequence),
                pending,
                format!("{}/{}", dir.failing.len(), dir.conflict_copies.len()),
                root,
            ]
        })
        .collect();
    let header = [
        "DIR",
        "STATE",
        "R SEQ",
        "E SEQ",
        "PENDING",
        "FAIL/CONFL",
        "LOCAL PATH",
    ];
    let width = |i: usize| {
        rows.iter()
            .map(|r| r[i].len())
            .chain([header[i].len()])
            .max()
            .unwrap_or(0)
    };
    let widths: Vec<usize> = (0..header.len()).map(width).collect();
    let line = |cells: [&str; 7]| {
        let mut l = String::new();
        for (i, cell) in cells.iter().enumerate() {
            if i == cells.len() - 1 {
                l.push_str(cell);
            } else if (2..6).contains(&i) {
                l.push_str(&format!("{cell:>w$}  ", w = widths[i]));
            } else {
                l.push_str(&format!("{cell:<w$}  ", w = widths[i]));
            }
        }
        l
    };
    writeln!(out)?;
    writeln!(out, "{}", line(header))?;
    for r in &rows {
        writeln!(out, "{}", line(r.each_ref().map(String::as_str)))?;
    }
    let unavailable: Vec<(&str, &str)> = s
        .dirs
        .iter()
        .filter_map(|d| Some((d.name.as_str(), d.unavailable.as_deref()?)))
        .collect();
    if !unavailable.is_empty() {
        writeln!(
            out,
            "\nunavailable on E (R keeps its files; syncing resumes when it is back):"
        )?;
        for (dir, why) in unavailable {
            // The daemon's words: shown as they are, never as a terminal would draw them.
            writeln!(out, "  {dir}: {}", zync_cli::visible::line(why))?;
        }
    }
    render_ignored(s, out)?;
    let failing: Vec<(&str, &FailingPath)> = s
        .dirs
        .iter()
        .flat_map(|d| d.failing.iter().map(move |f| (d.name.as_str(), f)))
        .collect();
    if !failing.is_empty() {
        writeln!(out, "\nfailing paths (retried every round):")?;
        for (dir, f) in failing {
            // Paths from either machine, and errors that quote them: shown as they are,
            // never as a terminal would draw them.
            writeln!(
                out,
                "  {dir}/{}: {} ({} attempt{}, since {})",
                zync_cli::visible::line(&f.path),
                zync_cli::visible::line(&f.error),
                f.attempts,
                if f.attempts == 1 { "" } else { "s" },
                local_time(f.since_unix)
            )?;
        }
    }
    let copies: Vec<String> = s
        .dirs
        .iter()
        .flat_map(|d| {
            d.conflict_copies
                .iter()
                .map(move |c| format!("{}", PathBuf::from(&d.root).join(c).display()))
        })
        .collect();
    if !copies.is_empty() {
        writeln!(
            out,
            "\nconflict copies (R's edits kept aside; merge them and delete the copy):"
        )?;
        for c in copies {
            writeln!(out, "  {}", zync_cli::visible::line(&c))?;
        }
    }
    writeln!(out)?;
    writeln!(out, "{}", verdict(s))
}

/// Per directory, what E does not send and what R does not push, with the paths when they
/// were asked for. Paths and rules are shown as they are, never as a terminal would draw them.
fn render_ignored(s: &Status, out: &mut dyn Write) -> std::io::Result<()> {
    use zync_cli::visible::line as visible;
    writeln!(
        out,
        "\nignored (E does not send them; R does not push its own with --update-upstream):"
    )?;
    for dir in &s.dirs {
        let sides = [
            ("on E", dir.ignored_on_e.as_ref()),
            ("on R", Some(&dir.ignored_on_r)),
        ];
        for (side, report) in sides {
            let Some(report) = report else {
                let why = if dir.state == DirState::NotServed {
                    "not served"
                } else if s.daemon.reachable {
                    "not reported (the daemon is older than this client)"
                } else {
                    "unknown (the daemon could not be asked)"
                };
                writeln!(out, "  {} {side}: {why}", dir.name)?;
                continue;
            };
            writeln!(out, "  {} {side}: {}", dir.name, visible(&report.summary()))?;
            for p in report.paths.iter().flatten() {
                writeln!(out, "      {}", visible(&p.line()))?;
            }
            if report.paths.is_some() && report.more > 0 {
                writeln!(
                    out,
                    "      ... and {} more (`zync-apply status --ignored` on E lists them all)",
                    report.more
                )?;
            }
        }
    }
    Ok(())
}

fn verdict(s: &Status) -> String {
    if s.in_sync {
        return "in sync".into();
    }
    if !s.daemon.reachable {
        return "NOT IN SYNC: the daemon is unreachable; check that zync-daemon runs on E and the tunnel is open".into();
    }
    if s.daemon.scanning == Some(true) {
        return "NOT IN SYNC: the daemon is still scanning its directories; ask again shortly"
            .into();
    }
    let not: Vec<String> = s
        .dirs
        .iter()
        .filter(|d| d.state != DirState::InSync)
        .map(|d| format!("{} {}", d.name, d.state.label()))
        .collect();
    format!(
        "NOT IN SYNC: {}; run zync-client (or --once) to catch up",
        not.join(", ")
    )
}

fn local_time(unix: i64) -> String {
    use chrono::TimeZone;
    match chrono::Local.timestamp_opt(unix, 0).single() {
        Some(t) => t.format("%Y-%m-%d %H:%M:%S").to_string(),
        None => format!("@{unix}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn remote(sequence: u64, pending: u64, more: bool) -> Option<Remote> {
        Some(Remote {
            served: true,
            unavailable: false,
            sequence,
            pending: (pending, more),
        })
    }

    #[test]
    fn classify_names_each_state() {
        let cases = [
            (Some((true, 5)), 0, remote(5, 0, false), DirState::InSync),
            (Some((true, 3)), 0, remote(5, 2, false), DirState::Behind),
            (
                Some((true, 3)),
                0,
                remote(9000, 1000, true),
                DirState::Behind,
            ),
            // Sequences apart but nothing to fetch still is not "in sync".
            (Some((true, 3)), 0, remote(5, 0, false), DirState::Behind),
            (None, 0, remote(5, 5, false), DirState::NeverSynced),
            (None, 0, None, DirState::NeverSynced),
            (Some((false, 5)), 0, remote(5, 5, false), DirState::Resync),
            (Some((true, 5)), 2, remote(5, 0, false), DirState::Failing),
            (Some((true, 5)), 2, None, DirState::Failing),
            (Some((true, 5)), 0, None, DirState::Unknown),
            (
                Some((true, 5)),
                0,
                Some(Remote {
                    served: false,
                    unavailable: false,
                    sequence: 0,
                    pending: (0, false),
                }),
                DirState::NotServed,
            ),
            // Unavailable on E wins over anything R stored: R keeps its files and waits.
            (
                Some((true, 5)),
                0,
                Some(Remote {
                    served: true,
                    unavailable: true,
                    sequence: 5,
                    pending: (0, false),
                }),
                DirState::Unavailable,
            ),
        ];
        for (stored, failing, remote, expected) in cases {
            assert_eq!(
                classify(stored, failing, remote),
                expected,
                "stored {stored:?}, failing {failing}, remote {remote:?}"
            );
        }
    }

    fn status(in_sync: bool, reachable: bool) -> Status {
        Status {
            server: "ws://localhost:8000".into(),
            db: "sync_client.db".into(),
            client_id: Some("c1".into()),
            daemon: DaemonStatus {
                reachable,
                error: (!reachable).then(|| "connection refused".into()),
                ..DaemonStatus::default()
            },
            in_sync,
            dirs: vec![DirStatus {
                name: "code".into(),
                root: "/srv/code".into(),
                root_exists: true,
                state: if in_sync {
                    DirState::InSync
                } else {
                    DirState::Failing
                },
                client_sequence: Some(7),
                daemon_sequence: reachable.then_some(9),
                pending: reachable.then_some(2),
                pending_more: false,
                failing: vec![FailingPath {
                    path: "a.txt".into(),
                    error: "permission denied".into(),
                    attempts: 3,
                    since_unix: 1_700_000_000,
                }],
                conflict_copies: vec!["b.zync-conflict-20240101T000000.txt".into()],
                unavailable: None,
                ignored_on_e: reachable.then(IgnoredReport::default),
                ignored_on_r: IgnoredReport::default(),
            }],
        }
    }

    #[test]
    fn the_text_report_lists_dirs_failures_copies_and_a_verdict() {
        let mut out = Vec::new();
        render(&status(false, true), &mut out).expect("render");
        let text = String::from_utf8(out).expect("utf-8");
        for expected in [
            "reachable",
            "code  failing",
            "a.txt: permission denied (3 attempts",
            "/srv/code/b.zync-conflict-20240101T000000.txt",
            "NOT IN SYNC: code failing",
        ] {
            assert!(text.contains(expected), "{expected:?} missing in:\n{text}");
        }
        let mut out = Vec::new();
        render(&status(false, false), &mut out).expect("render");
        let text = String::from_utf8(out).expect("utf-8");
        assert!(
            text.contains("UNREACHABLE: connection refused") && text.contains("?"),
            "{text}"
        );
    }

    #[test]
    fn failing_paths_and_conflict_copies_are_printed_as_they_are_not_as_a_terminal_draws_them() {
        let mut s = status(false, true);
        let dir = &mut s.dirs[0];
        dir.failing[0].path = "x\r\x1b[2Kok.txt".into();
        dir.failing[0].error = "cannot write x\r\x1b[2Kok.txt".into();
        dir.conflict_copies = vec!["y\u{202E}txt.zync-conflict-20240101T000000".into()];
        let mut out = Vec::new();
        render(&s, &mut out).expect("render");
        let text = String::from_utf8(out).expect("utf-8");
        assert!(!text.contains('\x1b') && !text.contains('\r'), "{text:?}");
        assert!(!text.contains('\u{202E}'), "{text:?}");
        assert!(
            text.contains("code/x^M^[[2Kok.txt: cannot write x^M^[[2Kok.txt"),
            "{text}"
        );
        assert!(text.contains("y<U+202E>txt.zync-conflict"), "{text}");
    }

    #[test]
    fn the_json_shape_is_stable() {
        let v = serde_json::to_value(status(true, true)).expect("json");
        for key in ["server", "db", "client_id", "daemon", "in_sync", "dirs"] {
            assert!(v.get(key).is_some(), "{key} missing in {v}");
        }
        let dir = &v["dirs"][0];
        assert_eq!(dir["state"], "in_sync");
        assert_eq!(dir["failing"][0]["attempts"], 3);
        for key in [
            "name",
            "root",
            "root_exists",
            "client_sequence",
            "daemon_sequence",
            "pending",
            "pending_more",
            "conflict_copies",
            "ignored_on_e",
            "ignored_on_r",
        ] {
            assert!(dir.get(key).is_some(), "{key} missing in {dir}");
        }
        for key in ["reachable", "error", "index_id", "version", "scanning"] {
            assert!(v["daemon"].get(key).is_some(), "{key} missing in {v}");
        }
    }

    fn ignored(path: &str, is_dir: bool, pattern: &str, source: &str) -> IgnoredPath {
        IgnoredPath {
            path: path.into(),
            is_dir,
            pattern: pattern.into(),
            source: source.into(),
        }
    }

    #[test]
    fn ignored_paths_are_counted_by_rule_and_listed_visibly() {
        let mut s = status(true, true);
        let walked = [
            ("node_modules", true, "node_modules/", "built-in"),
            ("a/x.pyc", false, "*.pyc", "proj/.zyncignore"),
            ("a/y.pyc", false, "*.pyc", "proj/.zyncignore"),
        ]
        .map(|(path, is_dir, pattern, source)| zync_fs::Ignored {
            path: zync_fs::RelPath::parse(path).expect("path"),
            is_dir,
            rule: zync_fs::IgnoreRule {
                pattern: pattern.into(),
                source: if source == "built-in" {
                    zync_fs::RuleSource::BuiltIn
                } else {
                    zync_fs::RuleSource::File(source.into())
                },
            },
        });
        s.dirs[0].ignored_on_r = ignored_report(&walked, false);
        assert_eq!(
            s.dirs[0].ignored_on_r.summary(),
            "3 paths (rule `*.pyc` from proj/.zyncignore: 2, rule `node_modules/`: 1)"
        );
        assert!(
            s.dirs[0].ignored_on_r.paths.is_none(),
            "listed only when asked"
        );
        let mut on_e = IgnoredReport::from_counts(vec![IgnoredCount {
            pattern: "build/".into(),
            source: "built-in".into(),
            count: 3,
        }]);
        on_e.paths = Some(vec![
            ignored("build", true, "build/", "built-in"),
            ignored("evil\u{1b}[2J", true, "build/", "built-in"),
        ]);
        on_e.more = 1;
        s.dirs[0].ignored_on_e = Some(on_e);
        let mut out = Vec::new();
        render(&s, &mut out).expect("render");
        let text = String::from_utf8(out).expect("utf-8");
        for expected in [
            "code on E: 3 paths (rule `build/`: 3)",
            "code on R: 3 paths (rule `*.pyc` from proj/.zyncignore: 2, rule `node_modules/`: 1)",
            "      build/  (rule `build/`)",
            "      evil^[[2J/  (rule `build/`)",
            "... and 1 more",
        ] {
            assert!(text.contains(expected), "{expected:?} missing in:\n{text}");
        }
        assert!(
            !text.contains('\u{1b}'),
            "an escape reached the terminal:\n{text}"
        );
        let listed = ignored_report(&walked, true);
        assert_eq!(
            listed.paths.as_deref().map(<[IgnoredPath]>::len),
            Some(3),
            "{listed:?}"
        );
        let v = serde_json::to_value(&s).expect("json");
        assert_eq!(v["dirs"][0]["ignored_on_e"]["rules"][0]["count"], 3);
        assert_eq!(v["dirs"][0]["ignored_on_e"]["more"], 1);
        assert_eq!(v["dirs"][0]["ignored_on_r"]["total"], 3);
    }
}
