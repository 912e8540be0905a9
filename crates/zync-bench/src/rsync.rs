//! Running rsync the way a user would over a network: an rsync daemon on 127.0.0.1 serving the
//! source as module `mod`, and `rsync -a --delete rsync://…` pulling it.

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::process::{Exit, Proc};

/// Checks that rsync is installed; never installs it.
///
/// # Errors
/// When `rsync --version` cannot run, with the command that installs it.
pub fn check() -> Result<String> {
    let out = Command::new("rsync")
        .arg("--version")
        .output()
        .map_err(|e| {
            anyhow::anyhow!("rsync is not installed ({e}); install it with: apt-get install rsync")
        })?;
    if !out.status.success() {
        bail!("rsync --version failed; install rsync with: apt-get install rsync");
    }
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .next()
        .unwrap_or("rsync")
        .to_string())
}

/// An rsync daemon serving `src` read-only as module `mod`.
pub struct RsyncDaemon {
    proc: Proc,
    /// Where it listens.
    pub addr: SocketAddr,
}

impl RsyncDaemon {
    /// Writes `state/rsyncd.conf` and starts `rsync --daemon --no-detach` on a free port.
    ///
    /// # Errors
    /// When it cannot start or does not accept connections within 10 s.
    pub fn start(state: &Path, src: &Path) -> Result<RsyncDaemon> {
        std::fs::create_dir_all(state)?;
        // SAFETY: getuid/getgid cannot fail.
        let (uid, gid) = unsafe { (libc::getuid(), libc::getgid()) };
        let conf = state.join("rsyncd.conf");
        std::fs::write(
            &conf,
            format!(
                "use chroot = no\nuid = {uid}\ngid = {gid}\npid file = {pid}\nlog file = {log}\n\
                 [mod]\npath = {src}\nread only = yes\n",
                pid = state.join("rsyncd.pid").display(),
                log = state.join("rsyncd.log").display(),
                src = src.display()
            ),
        )?;
        // A free port: bind, read, release. Another process could take it in between; then
        // the daemon fails to start and the error says so.
        let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let mut cmd = Command::new("rsync");
        cmd.args([
            "--daemon",
            "--no-detach",
            "--address",
            "127.0.0.1",
            "--config",
        ])
        .arg(&conf)
        .arg("--port")
        .arg(port.to_string());
        let proc = Proc::spawn("rsync --daemon", cmd)?;
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(addr).is_err() {
            if Instant::now() > deadline {
                bail!("rsync daemon did not listen on {addr}: {}", proc.log());
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        Ok(RsyncDaemon { proc, addr })
    }

    /// The daemon's process id (the parent of the sender it forks per connection).
    pub fn pid(&self) -> u32 {
        self.proc.pid()
    }

    /// Stops the daemon; its peak memory covers the per-connection processes it forked.
    ///
    /// # Errors
    /// When it cannot be reaped.
    pub fn stop(self) -> Result<Exit> {
        self.proc.stop()
    }
}

/// Runs `rsync -a --delete rsync://127.0.0.1:PORT/mod/ dst/` (PORT is the proxy's), with
/// `--fsync` when `fsync` is set: every file it writes is then flushed to disk before rsync
/// moves on, as zync does.
///
/// # Errors
/// When rsync fails.
pub fn sync(port: u16, dst: &Path, fsync: bool) -> Result<(Duration, Exit)> {
    let mut cmd = Command::new("rsync");
    cmd.args(["-a", "--delete"])
        .args(fsync.then_some("--fsync"))
        .arg(format!("rsync://127.0.0.1:{port}/mod/"))
        .arg(format!("{}/", dst.display()));
    let start = Instant::now();
    let proc = Proc::spawn("rsync", cmd).context("cannot run rsync")?;
    let exit = proc.wait()?;
    let took = start.elapsed();
    if !exit.success {
        std::thread::sleep(Duration::from_millis(50)); // let the log reader drain
                                                       // --fsync came with rsync 3.2.4: an older one refuses the option.
        let hint = if fsync {
            "; `rsync --fsync` needs rsync 3.2.4 or newer (rsync --version shows yours)"
        } else {
            ""
        };
        bail!("rsync into {} failed{hint}:\n{}", dst.display(), proc.log());
    }
    Ok((took, exit))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failed_rsync_says_why_and_what_fsync_needs() {
        // A port nobody listens on: rsync fails to connect and says so.
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let dst = tempfile::tempdir().expect("a temp dir");
        let err = sync(port, dst.path(), true)
            .expect_err("nothing listens there")
            .to_string();
        assert!(err.contains("failed"), "{err}");
        assert!(err.contains("rsync 3.2.4 or newer"), "{err}");
        assert!(
            err.to_lowercase().contains("connect"),
            "rsync's own words are missing: {err}"
        );
        let plain = sync(port, dst.path(), false)
            .expect_err("nothing listens there")
            .to_string();
        assert!(!plain.contains("3.2.4"), "{plain}");
    }
}
