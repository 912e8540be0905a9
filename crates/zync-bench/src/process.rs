//! Child processes the benchmark runs: stderr collected line by line with arrival times (to wait
//! for a log line such as "startup scan complete"), and peak memory from `wait4`'s rusage.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

/// A running child whose stderr lines are kept with the instant each arrived.
pub struct Proc {
    child: Child,
    name: String,
    /// When the child was spawned.
    pub started: Instant,
    lines: Arc<Mutex<Vec<(Instant, String)>>>,
    peak: Arc<AtomicU64>,
    sampling: Arc<AtomicBool>,
}

/// How a child ended: its exit status and its peak resident set in KiB: the largest `VmHWM`
/// of the child and its children (rsync forks), sampled from /proc every 5 ms. (`wait4`'s
/// `ru_maxrss` is not used: after exec it still holds the benchmark's own RSS at fork time.)
#[derive(Debug, Clone, Copy)]
pub struct Exit {
    pub success: bool,
    pub max_rss_kib: u64,
    /// CPU time in user space and in the kernel, of the child and the children it reaped.
    pub user: Duration,
    pub sys: Duration,
}

impl Proc {
    /// Spawns `cmd` with stdin and stdout closed and stderr collected.
    ///
    /// # Errors
    /// When the program cannot be started.
    pub fn spawn(name: &str, mut cmd: Command) -> Result<Proc> {
        cmd.stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .env("NO_COLOR", "1");
        let started = Instant::now();
        let mut child = cmd
            .spawn()
            .with_context(|| format!("cannot start {name} ({cmd:?})"))?;
        let lines = Arc::new(Mutex::new(Vec::new()));
        let stderr = child.stderr.take().expect("stderr is piped");
        let sink = Arc::clone(&lines);
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                sink.lock().unwrap().push((Instant::now(), line));
            }
        });
        let peak = Arc::new(AtomicU64::new(0));
        let sampling = Arc::new(AtomicBool::new(true));
        let (p, on, pid) = (Arc::clone(&peak), Arc::clone(&sampling), child.id());
        std::thread::spawn(move || {
            while on.load(Ordering::Relaxed) {
                p.fetch_max(hwm_tree(pid, 3), Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(5));
            }
        });
        Ok(Proc {
            child,
            name: name.into(),
            started,
            lines,
            peak,
            sampling,
        })
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Waits until a stderr line containing `needle` arrives; returns that line and when it
    /// arrived. Lines seen by an earlier call count too.
    ///
    /// # Errors
    /// When `timeout` passes or the child exits first.
    pub fn wait_for_line(&mut self, needle: &str, timeout: Duration) -> Result<(Instant, String)> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(hit) = self
                .lines
                .lock()
                .unwrap()
                .iter()
                .find(|(_, l)| l.contains(needle))
            {
                return Ok(hit.clone());
            }
            if let Some(status) = self.child.try_wait()? {
                bail!(
                    "{} exited ({status}) before logging {needle:?}; its log:\n{}",
                    self.name,
                    self.log()
                );
            }
            if Instant::now() > deadline {
                bail!(
                    "{} did not log {needle:?} within {timeout:?}; its log:\n{}",
                    self.name,
                    self.log()
                );
            }
            std::thread::sleep(Duration::from_millis(2));
        }
    }

    /// Everything the child wrote to stderr so far.
    pub fn log(&self) -> String {
        let lines = self.lines.lock().unwrap();
        let all: Vec<&str> = lines.iter().map(|(_, l)| l.as_str()).collect();
        all.join("\n")
    }

    /// Waits for the child to exit by itself.
    ///
    /// # Errors
    /// When waiting fails.
    pub fn wait(&self) -> Result<Exit> {
        self.reap()
    }

    /// Waits until the child has exited without reaping it, stops sampling, then reaps it (so
    /// its pid cannot be recycled while the sampler still reads it).
    fn reap(&self) -> Result<Exit> {
        let pid = self.child.id();
        loop {
            // SAFETY: valid pointer; WNOWAIT leaves the child waitable.
            let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
            let r = unsafe {
                libc::waitid(
                    libc::P_PID,
                    pid as libc::id_t,
                    &mut info,
                    libc::WEXITED | libc::WNOWAIT,
                )
            };
            if r == 0 {
                break;
            }
            if std::io::Error::last_os_error().kind() != std::io::ErrorKind::Interrupted {
                break;
            }
        }
        self.sampling.store(false, Ordering::Relaxed);
        let mut exit = wait_rusage(pid)?;
        exit.max_rss_kib = self.peak.load(Ordering::Relaxed);
        Ok(exit)
    }

    /// Asks the child to stop (SIGTERM), then SIGKILL after 10 s, and reaps it.
    ///
    /// # Errors
    /// When waiting fails.
    pub fn stop(mut self) -> Result<Exit> {
        let pid = self.child.id() as libc::pid_t;
        // SAFETY: the pid is our own unreaped child, so it cannot have been recycled.
        unsafe { libc::kill(pid, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            // Peek without reaping, so wait4 below still gets the rusage.
            let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
            // SAFETY: valid pointer; WNOWAIT leaves the child waitable.
            let r = unsafe {
                libc::waitid(
                    libc::P_PID,
                    pid as libc::id_t,
                    &mut info,
                    libc::WEXITED | libc::WNOHANG | libc::WNOWAIT,
                )
            };
            // SAFETY: reading the pid field of a siginfo filled by waitid.
            if r == 0 && unsafe { info.si_pid() } != 0 {
                break;
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                break;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        self.reap()
    }
}

/// Reaps child `pid` with `wait4`, returning its status and peak RSS.
fn wait_rusage(pid: u32) -> Result<Exit> {
    let mut status = 0;
    // SAFETY: zeroed rusage is a valid out-parameter.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    loop {
        // SAFETY: valid pointers; pid is our child.
        let r = unsafe { libc::wait4(pid as libc::pid_t, &mut status, 0, &mut usage) };
        if r == pid as libc::pid_t {
            break;
        }
        let err = std::io::Error::last_os_error();
        if err.kind() != std::io::ErrorKind::Interrupted {
            return Err(err).context("wait4 failed");
        }
    }
    let success = libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0;
    let time = |t: libc::timeval| {
        Duration::from_secs(t.tv_sec.max(0) as u64) + Duration::from_micros(t.tv_usec.max(0) as u64)
    };
    Ok(Exit {
        success,
        max_rss_kib: usage.ru_maxrss as u64,
        user: time(usage.ru_utime),
        sys: time(usage.ru_stime),
    })
}

/// The resident set of process `pid` now, in KiB (`VmRSS`); `None` when it cannot be read.
pub fn rss_kib(pid: u32) -> Option<u64> {
    status_kib(
        &std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?,
        "VmRSS:",
    )
}

/// A `kB` field of a /proc status file.
fn status_kib(status: &str, field: &str) -> Option<u64> {
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

/// The largest VmHWM (KiB) of `pid` and its descendants down to `depth` levels; 0 when gone.
pub(crate) fn hwm_tree(pid: u32, depth: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let own = status_kib(&status, "VmHWM:").unwrap_or(0);
    if depth == 0 {
        return own;
    }
    let children =
        std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children")).unwrap_or_default();
    children
        .split_whitespace()
        .filter_map(|c| c.parse().ok())
        .map(|c| hwm_tree(c, depth - 1))
        .fold(own, u64::max)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kib_fields_are_read_from_a_status_file() {
        let status = "Name:\tzync-daemon\nVmHWM:\t   13640 kB\nVmRSS:\t   12001 kB\n";
        assert_eq!(status_kib(status, "VmRSS:"), Some(12001));
        assert_eq!(status_kib(status, "VmHWM:"), Some(13640));
        assert_eq!(status_kib(status, "VmSwap:"), None);
        assert_eq!(status_kib("VmRSS:\tlots kB\n", "VmRSS:"), None);
        // This process has a resident set.
        assert!(rss_kib(std::process::id()).is_some_and(|k| k > 0));
    }
}
