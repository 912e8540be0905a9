//! `zync-apply wait`: a barrier for scripts on E (`zync-apply wait && ssh R 'cd proj && make'`).
//! It takes a ticket in the daemon's database, waits for the daemon's indexer to answer it (the
//! index then holds every change made on E before the command started), notes each served
//! directory's sequence at that point, and waits until every connected client (or the one
//! named) has acknowledged, durably applied, that far in each directory it mirrors
//! (docs/ARCHITECTURE.md, "Barriers"). It talks to nobody: the daemon and the clients'
//! acknowledgements are read from the database.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use serde::Serialize;
use zync_cli::visible;
use zync_db::Index;

use crate::outcome::Outcome;

/// How often the database is read while waiting.
const POLL: Duration = Duration::from_millis(50);
/// After this long without an answer from the daemon, say on stderr what is being waited for.
const NOTICE_AFTER: Duration = Duration::from_secs(3);
/// After this long with no daemon holding the database's lock, stop waiting: nothing can
/// answer. Long enough for a daemon started just before the command to take its lock.
const GONE_AFTER: Duration = Duration::from_secs(3);

/// What `--json` prints.
#[derive(Debug, Serialize)]
pub struct WaitReport {
    /// True when every client waited for has applied everything (exit code 0).
    pub in_sync: bool,
    /// How long the command waited, in milliseconds.
    pub waited_ms: u64,
    /// Whether the daemon answered the barrier (false: it is not running on this database, or
    /// it was busy past the timeout).
    pub daemon_settled: bool,
    /// Each served directory's sequence once the daemon settled: what the clients must reach.
    pub targets: BTreeMap<String, u64>,
    /// Directories the daemon cannot see now (nothing new is recorded for them), with why.
    pub unavailable: BTreeMap<String, String>,
    /// The clients waited for, by id.
    pub clients: Vec<ClientWait>,
    /// Why the wait did not end in sync, one line each; empty when in sync.
    pub outstanding: Vec<String>,
}

/// One client waited for.
#[derive(Debug, Serialize)]
pub struct ClientWait {
    /// Its id.
    pub client_id: String,
    /// Whether it has a connection open now.
    pub connected: bool,
    /// Per directory it mirrors: how far it acknowledged, against the target.
    pub dirs: Vec<DirWait>,
}

/// One client's progress in one directory.
#[derive(Debug, Serialize)]
pub struct DirWait {
    /// The directory name.
    pub dir: String,
    /// The sequence to reach.
    pub target: u64,
    /// The highest sequence it acknowledged (0: none).
    pub acked: u64,
}

impl ClientWait {
    fn caught_up(&self) -> bool {
        self.dirs.iter().all(|d| d.acked >= d.target)
    }
}

/// Runs `zync-apply wait`.
///
/// # Errors
///
/// No database at `db`, it cannot be read or written, or `client` names a client that never
/// connected.
pub fn wait(
    db: &Path,
    client: Option<&str>,
    timeout: Duration,
    json: bool,
    out: &mut dyn Write,
) -> anyhow::Result<Outcome> {
    let started = Instant::now();
    let deadline = (!timeout.is_zero()).then(|| started + timeout);
    let expired = || deadline.is_some_and(|d| Instant::now() >= d);
    if !db.exists() {
        bail!(
            "no database at {}; pass --db with the path given to zync-daemon --db (or set `db` in its config file)",
            db.display()
        );
    }
    let index = Index::open(db)
        .with_context(|| format!("cannot open the daemon database {}", db.display()))?;
    let read = || format!("cannot read the daemon database {}", db.display());
    if let Some(id) = client {
        let known = index
            .clients()
            .with_context(read)?
            .iter()
            .any(|c| c.client_id == id)
            || index
                .acks()
                .with_context(read)?
                .iter()
                .any(|a| a.client_id == id);
        if !known {
            bail!(
                "no client with id {} is known to this daemon (it never connected, or it was forgotten as one of more than 1,000 clients); `zync-apply status` lists the clients",
                visible::line(id)
            );
        }
    }
    let ticket = index
        .request_settle()
        .with_context(|| format!("cannot write the daemon database {}", db.display()))?;
    let mut noticed = false;
    let mut daemon = DaemonLock::new(db);
    let mut report = WaitReport {
        in_sync: false,
        waited_ms: 0,
        daemon_settled: false,
        targets: BTreeMap::new(),
        unavailable: BTreeMap::new(),
        clients: Vec::new(),
        outstanding: Vec::new(),
    };
    loop {
        if index.settled().with_context(read)? >= ticket {
            report.daemon_settled = true;
            break;
        }
        daemon.check()?;
        if expired() {
            report.outstanding.push(match daemon.pid {
                Some(pid) => format!(
                    "zync-daemon (pid {pid}) did not take in E's latest changes within {}s: it runs, but is busy or hung (it answers within a second unless it is scanning)",
                    timeout.as_secs()
                ),
                None => format!(
                    "zync-daemon did not take in E's latest changes within {}s: is it running with --db {}? (it answers within a second unless it is scanning)",
                    timeout.as_secs(),
                    db.display()
                ),
            });
            return finish(report, started, json, out);
        }
        if !noticed && started.elapsed() >= NOTICE_AFTER {
            match daemon.pid {
                Some(pid) => eprintln!(
                    "zync-apply: waiting for zync-daemon (pid {pid}) to take in E's latest changes; it is busy (a startup scan of a big tree takes a while)"
                ),
                None => eprintln!(
                    "zync-apply: waiting for zync-daemon to take in E's latest changes (is it running with --db {}?)",
                    db.display()
                ),
            }
            noticed = true;
        }
        std::thread::sleep(POLL);
    }
    for name in index.roots().with_context(read)?.into_iter().map(|r| r.dir) {
        report
            .targets
            .insert(name.clone(), index.dir_last_seq(&name).with_context(read)?);
        if let Some(why) = index.unavailable(&name).with_context(read)? {
            report.unavailable.insert(name, why);
        }
    }
    // Clients connected at any point of the wait stay waited for: one that drops its tunnel
    // before it caught up has not got E's changes. A status probe or a dry run of an R that
    // never synced mirrors nothing and is not waited for.
    let mut waited: BTreeSet<String> = client.map(str::to_string).into_iter().collect();
    loop {
        let clients = index.clients().with_context(read)?;
        if client.is_none() {
            waited.extend(
                clients
                    .iter()
                    .filter(|c| c.connections > 0)
                    .filter(|c| !zync_proto::PROBE_IDS.contains(&c.client_id.as_str()))
                    .map(|c| c.client_id.clone()),
            );
        }
        report.clients = progress(&index, &report.targets, &waited, &clients).with_context(read)?;
        if !report.clients.is_empty() && report.clients.iter().all(ClientWait::caught_up) {
            report.in_sync = true;
            return finish(report, started, json, out);
        }
        // Clients' acknowledgements reach the database through the daemon only.
        daemon.check()?;
        if expired() {
            report.outstanding = outstanding(&report.clients);
            return finish(report, started, json, out);
        }
        std::thread::sleep(POLL);
    }
}

/// The daemon serving the database, as its lock file tells ([`zync_fs::lock::holder`]):
/// nothing answers a wait while no daemon runs, so the wait ends with an error once none has
/// held the lock for [`GONE_AFTER`], instead of at its timeout.
struct DaemonLock {
    lock: std::path::PathBuf,
    db: std::path::PathBuf,
    /// The daemon's pid, once seen running.
    pid: Option<u32>,
    /// Since when no daemon was seen holding the lock.
    gone_since: Option<Instant>,
}

impl DaemonLock {
    fn new(db: &Path) -> DaemonLock {
        DaemonLock {
            lock: zync_fs::lock::path_beside(db),
            db: db.to_path_buf(),
            pid: None,
            gone_since: None,
        }
    }

    /// Looks at the lock again.
    ///
    /// # Errors
    /// No daemon has held the database's lock for [`GONE_AFTER`].
    fn check(&mut self) -> anyhow::Result<()> {
        match zync_fs::lock::holder(&self.lock) {
            zync_fs::Holder::Running(pid) => {
                self.pid = Some(pid);
                self.gone_since = None;
            }
            // Another user's daemon, or no /proc: wait as before, until the timeout.
            zync_fs::Holder::Unknown => self.gone_since = None,
            zync_fs::Holder::Gone => {
                let since = *self.gone_since.get_or_insert_with(Instant::now);
                if since.elapsed() >= GONE_AFTER {
                    let was = match self.pid {
                        Some(pid) => format!("zync-daemon (pid {pid}) stopped while waiting"),
                        None => "zync-daemon is not running".to_string(),
                    };
                    bail!(
                        "{was}: no process holds the lock {} of the database {}; start zync-daemon with --db {}, then run this again",
                        self.lock.display(),
                        self.db.display(),
                        self.db.display()
                    );
                }
            }
        }
        Ok(())
    }
}

/// Each waited-for client's acknowledgements against the targets, in the directories it
/// mirrors (all served ones when it never said which).
fn progress(
    index: &Index,
    targets: &BTreeMap<String, u64>,
    waited: &BTreeSet<String>,
    clients: &[zync_db::ClientRecord],
) -> zync_db::Result<Vec<ClientWait>> {
    let acks = index.acks()?;
    let mut report = Vec::new();
    for id in waited {
        let mirrored = index.client_dirs(id)?;
        let dirs = targets
            .iter()
            .filter(|(dir, _)| mirrored.as_ref().is_none_or(|m| m.contains(dir)))
            .map(|(dir, &target)| DirWait {
                dir: dir.clone(),
                target,
                acked: acks
                    .iter()
                    .find(|a| &a.client_id == id && &a.dir == dir)
                    .map_or(0, |a| a.seq),
            })
            .collect();
        report.push(ClientWait {
            client_id: id.clone(),
            connected: clients
                .iter()
                .any(|c| &c.client_id == id && c.connections > 0),
            dirs,
        });
    }
    Ok(report)
}

/// What keeps the wait from ending, one line per client and directory.
fn outstanding(clients: &[ClientWait]) -> Vec<String> {
    if clients.is_empty() {
        return vec![
            "no client is connected to the daemon: start zync-client on R (or check its tunnel)"
                .to_string(),
        ];
    }
    let mut lines = Vec::new();
    for c in clients.iter().filter(|c| !c.caught_up()) {
        let behind: Vec<String> = c
            .dirs
            .iter()
            .filter(|d| d.acked < d.target)
            .map(|d| {
                format!(
                    "{} at {} of {} ({} behind)",
                    d.dir,
                    d.acked,
                    d.target,
                    d.target - d.acked
                )
            })
            .collect();
        lines.push(format!(
            "client {}{}: {}",
            visible::line(&c.client_id),
            if c.connected { "" } else { " (not connected)" },
            behind.join(", ")
        ));
    }
    lines
}

/// Prints the report; exit 0 in sync, 7 otherwise.
fn finish(
    mut report: WaitReport,
    started: Instant,
    json: bool,
    out: &mut dyn Write,
) -> anyhow::Result<Outcome> {
    report.waited_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
    if json {
        serde_json::to_writer_pretty(&mut *out, &report)?;
        writeln!(out)?;
    } else if report.in_sync {
        let targets: Vec<String> = report
            .targets
            .iter()
            .map(|(d, s)| format!("{d} at {s}"))
            .collect();
        writeln!(
            out,
            "in sync: {} client(s) applied everything E had ({}) in {:.1}s",
            report.clients.len(),
            targets.join(", "),
            report.waited_ms as f64 / 1000.0
        )?;
    }
    for (dir, why) in &report.unavailable {
        eprintln!(
            "zync-apply: note: {dir} is unavailable on E: {}",
            visible::line(why)
        );
    }
    if report.in_sync {
        return Ok(Outcome::Done);
    }
    eprintln!(
        "zync-apply: timed out after {:.1}s; outstanding:",
        report.waited_ms as f64 / 1000.0
    );
    for line in &report.outstanding {
        eprintln!("  {line}");
    }
    Ok(Outcome::TimedOut)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn targets() -> BTreeMap<String, u64> {
        [("code".to_string(), 7), ("docs".to_string(), 4)]
            .into_iter()
            .collect()
    }

    #[test]
    fn a_client_waits_only_in_the_dirs_it_mirrors_and_until_its_ack_reaches_the_target() {
        let index = Index::open_in_memory().expect("index");
        index.client_connected("r1", None).expect("hello");
        index.client_connected("old", None).expect("hello");
        index
            .set_client_dirs("r1", &["docs".to_string()])
            .expect("dirs");
        let waited: BTreeSet<String> = ["r1".to_string(), "old".to_string()].into();
        let clients = index.clients().expect("clients");
        let got = progress(&index, &targets(), &waited, &clients).expect("progress");
        let r1 = got.iter().find(|c| c.client_id == "r1").expect("r1");
        assert_eq!(r1.dirs.len(), 1, "r1 mirrors docs only: {r1:?}");
        assert!(!r1.caught_up());
        let old = got.iter().find(|c| c.client_id == "old").expect("old");
        assert_eq!(
            old.dirs.len(),
            2,
            "a client that never said waits in all: {old:?}"
        );
        index.record_ack("r1", "docs", 4).expect("ack");
        index.record_ack("old", "docs", 4).expect("ack");
        index.record_ack("old", "code", 6).expect("ack");
        let got = progress(&index, &targets(), &waited, &clients).expect("progress");
        let lines = outstanding(&got);
        assert_eq!(
            lines,
            vec!["client old: code at 6 of 7 (1 behind)".to_string()],
            "{got:?}"
        );
    }

    #[test]
    fn without_a_client_the_wait_says_none_is_connected() {
        let lines = outstanding(&[]);
        assert!(lines[0].contains("no client is connected"), "{lines:?}");
    }
}
