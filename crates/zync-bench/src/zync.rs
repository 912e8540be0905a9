//! Running zync's real binaries: locating (or building) them, a daemon on 127.0.0.1:0 whose
//! port and scan completion are read from its log, and clients in `--once` or loop mode.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::process::{Exit, Proc};

/// Paths of the two binaries the benchmark runs.
pub struct Bins {
    pub daemon: PathBuf,
    pub client: PathBuf,
}

/// Uses `bin_dir` when given; otherwise runs `cargo build --release` for the daemon and client
/// (a no-op when they are up to date, so a stale binary is never timed).
///
/// # Errors
/// When the build fails or a binary is missing.
pub fn locate(bin_dir: Option<&Path>) -> Result<Bins> {
    let dir = match bin_dir {
        Some(d) => d.to_path_buf(),
        None => {
            let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
            eprintln!("building zync-daemon and zync-client (release)...");
            let status = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
                .args([
                    "build",
                    "--release",
                    "-p",
                    "zync-daemon",
                    "-p",
                    "zync-client",
                ])
                .current_dir(&root)
                .status()
                .context("cannot run cargo to build the zync binaries")?;
            if !status.success() {
                bail!("cargo build --release -p zync-daemon -p zync-client failed");
            }
            let target = std::env::var_os("CARGO_TARGET_DIR")
                .map_or_else(|| root.join("target"), PathBuf::from);
            target.join("release")
        }
    };
    let bins = Bins {
        daemon: dir.join("zync-daemon"),
        client: dir.join("zync-client"),
    };
    for b in [&bins.daemon, &bins.client] {
        if !b.is_file() {
            bail!(
                "{} not found (build with cargo build --release, or pass --bin-dir)",
                b.display()
            );
        }
    }
    Ok(bins)
}

/// A daemon serving one directory as `bench`, with its database and token under `state`.
pub struct Daemon {
    proc: Proc,
    /// Where it listens.
    pub addr: SocketAddr,
    /// The token file clients must present.
    pub token: PathBuf,
    /// From spawn to the "startup scan complete" log line.
    pub scan_time: Duration,
    /// How many files the startup scan hashed, from that line (`hashed=N`), when it says.
    pub hashed: Option<u64>,
}

impl Daemon {
    /// Starts a daemon and waits for its startup scan to complete.
    ///
    /// # Errors
    /// When it cannot start or does not finish its scan within 10 minutes.
    pub fn start(bins: &Bins, state: &Path, src: &Path) -> Result<Daemon> {
        std::fs::create_dir_all(state)?;
        let mut cmd = Command::new(&bins.daemon);
        cmd.args([
            "--host",
            "127.0.0.1",
            "--port",
            "0",
            "--log-level",
            "info",
            "--db",
        ])
        .arg(state.join("sync.db"))
        .arg("--dirs")
        .arg(format!("bench:{}", src.display()));
        let mut proc = Proc::spawn("zync-daemon", cmd)?;
        let (_, line) = proc.wait_for_line("listening on ws://", Duration::from_secs(60))?;
        let port: String = line
            .split("ws://127.0.0.1:")
            .nth(1)
            .context("no address in the listening line")?
            .chars()
            .take_while(char::is_ascii_digit)
            .collect();
        let addr = SocketAddr::from(([127, 0, 0, 1], port.parse().context("bad port in the log")?));
        let (at, line) = proc.wait_for_line("startup scan complete", Duration::from_secs(600))?;
        let scan_time = at - proc.started;
        Ok(Daemon {
            addr,
            token: state.join("zync.token"),
            scan_time,
            hashed: hashed_count(&line),
            proc,
        })
    }

    /// The daemon's process id.
    pub fn pid(&self) -> u32 {
        self.proc.pid()
    }

    /// Stops the daemon and returns its peak memory.
    ///
    /// # Errors
    /// When it cannot be reaped.
    pub fn stop(self) -> Result<Exit> {
        self.proc.stop()
    }
}

/// The `hashed=N` field of a log line.
fn hashed_count(line: &str) -> Option<u64> {
    let digits: String = line
        .split("hashed=")
        .nth(1)?
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    digits.parse().ok()
}

fn client_cmd(bins: &Bins, port: u16, token: &Path, db: &Path, dst: &Path) -> Command {
    let mut cmd = Command::new(&bins.client);
    cmd.arg("--server")
        .arg(format!("ws://127.0.0.1:{port}"))
        .arg("--token-file")
        .arg(token)
        .arg("--db")
        .arg(db)
        .arg("--dirs")
        .arg(format!("bench:{}", dst.display()));
    cmd
}

/// Runs `zync-client --once` against `port` (the proxy); returns its wall time and exit.
///
/// # Errors
/// When the client fails.
pub fn sync_once(
    bins: &Bins,
    port: u16,
    token: &Path,
    db: &Path,
    dst: &Path,
) -> Result<(Duration, Exit)> {
    let mut cmd = client_cmd(bins, port, token, db, dst);
    cmd.arg("--once");
    let start = Instant::now();
    let proc = Proc::spawn("zync-client", cmd)?;
    let exit = proc.wait()?;
    let took = start.elapsed();
    if !exit.success {
        std::thread::sleep(Duration::from_millis(50)); // let the log reader drain
        bail!("zync-client --once failed:\n{}", proc.log());
    }
    Ok((took, exit))
}

/// Starts a client in loop mode (it keeps applying changes until stopped).
///
/// # Errors
/// When it cannot start.
pub fn start_loop(bins: &Bins, port: u16, token: &Path, db: &Path, dst: &Path) -> Result<Proc> {
    Proc::spawn("zync-client", client_cmd(bins, port, token, db, dst))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_hashed_count_is_read_from_the_startup_line() {
        let line = "2026-01-01T00:00:00Z  INFO zync_daemon::indexer: startup scan complete \
                    last_seq=101101 hashed=0 ms=846";
        assert_eq!(hashed_count(line), Some(0));
        assert_eq!(
            hashed_count("startup scan complete hashed=1234 ms=5"),
            Some(1234)
        );
        assert_eq!(hashed_count("startup scan complete last_seq=3"), None);
    }
}
