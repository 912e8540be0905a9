//! CPU time and peak memory of a long-lived server (zync's daemon, rsync's daemon) over one
//! timed run: `wait4` cannot measure a process that outlives the run, so its counters in /proc
//! are read before and after, and its peak resident set is reset at the start.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::process::hwm_tree;

/// What one server spent on one run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Usage {
    /// user + system time of all its threads, plus that of the children it forked and reaped
    /// during the run (rsync's daemon forks one sender per connection).
    pub cpu: Duration,
    /// The largest resident set, in KiB, of the server and its children during the run; since
    /// the server started when the kernel cannot reset the high-water mark (see `reset`).
    pub peak_kib: u64,
    /// Whether the server's high-water mark was reset at the start (`/proc/PID/clear_refs`).
    pub reset: bool,
}

/// CPU clock ticks of one process from the text of its `/proc/PID/stat`: its own user + system
/// time (all threads) and that of its reaped children (`cutime` + `cstime`), fields 14 to 17.
/// `None` when the text is not a stat line.
pub fn stat_ticks(stat: &str) -> Option<(u64, u64)> {
    // The command name (field 2) is in parentheses and may hold spaces or ')' itself: the
    // fields that follow begin after the last ')'.
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<u64> = rest
        .split_whitespace()
        .skip(11) // state (field 3) ... cmajflt (field 13)
        .take(4)
        .map(str::parse)
        .collect::<Result<_, _>>()
        .ok()?;
    match fields[..] {
        [utime, stime, cutime, cstime] => Some((utime + stime, cutime + cstime)),
        _ => None,
    }
}

/// Own and reaped children's CPU ticks of `pid` now, summed; `None` when it is gone.
fn ticks(pid: u32) -> Option<u64> {
    let (own, children) = stat_ticks(&std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?)?;
    Some(own + children)
}

fn ticks_to_duration(ticks: u64) -> Duration {
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
    Duration::from_secs(ticks / hz) + Duration::from_nanos((ticks % hz) * 1_000_000_000 / hz)
}

/// The children `pid`'s main thread has now (not yet reaped).
fn children(pid: u32) -> Vec<u32> {
    std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"))
        .unwrap_or_default()
        .split_whitespace()
        .filter_map(|c| c.parse().ok())
        .collect()
}

/// Waits until none of `pids` has used CPU for `quiet` (they are idle), or `limit` passed;
/// returns how long it waited. Between two timed turns, so that what one tool still does in
/// the background after its turn (zync's daemon hashes a burst's files again once they are
/// two seconds old: `RACY` in the daemon's indexer) is not timed as part of the next turn,
/// the other tool's.
pub fn wait_idle(pids: &[u32], quiet: Duration, limit: Duration) -> Duration {
    let start = std::time::Instant::now();
    let total = || pids.iter().filter_map(|&p| ticks(p)).sum::<u64>();
    let (mut last, mut since) = (total(), std::time::Instant::now());
    while since.elapsed() < quiet && start.elapsed() < limit {
        std::thread::sleep(Duration::from_millis(50));
        let now = total();
        if now != last {
            (last, since) = (now, std::time::Instant::now());
        }
    }
    start.elapsed()
}

/// A measurement of one server over one run: `start` before the client starts, `finish` after
/// it exited.
pub struct Meter {
    pid: u32,
    ticks: u64,
    reset: bool,
    peak: Arc<AtomicU64>,
    on: Arc<AtomicBool>,
    sampler: JoinHandle<()>,
}

impl Meter {
    /// Resets the high-water mark of `pid`'s resident set (`echo 5 > /proc/PID/clear_refs`,
    /// Linux 4.0 and later), reads its CPU time, and samples the resident set of its children
    /// every 5 ms (forks that come and go within the run have high-water marks of their own).
    pub fn start(pid: u32) -> Meter {
        let reset = std::fs::write(format!("/proc/{pid}/clear_refs"), "5").is_ok();
        let ticks = ticks(pid).unwrap_or(0);
        let peak = Arc::new(AtomicU64::new(hwm_tree(pid, 3)));
        let on = Arc::new(AtomicBool::new(true));
        let (p, o) = (Arc::clone(&peak), Arc::clone(&on));
        let sampler = std::thread::spawn(move || {
            while o.load(Ordering::Relaxed) {
                p.fetch_max(hwm_tree(pid, 3), Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(5));
            }
        });
        Meter {
            pid,
            ticks,
            reset,
            peak,
            on,
            sampler,
        }
    }

    /// Waits (up to 5 s) until the children forked for the run have been reaped, so that their
    /// CPU time is in the server's, then reads the CPU time and the peak.
    pub fn finish(self) -> Usage {
        let deadline = Instant::now() + Duration::from_secs(5);
        while !children(self.pid).is_empty() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(2));
        }
        // A child still there (not reaped in time) counts with what it has spent so far.
        let unreaped: u64 = children(self.pid).into_iter().filter_map(ticks).sum();
        let now = ticks(self.pid).unwrap_or(self.ticks);
        self.on.store(false, Ordering::Relaxed);
        let _ = self.sampler.join();
        let peak = self.peak.load(Ordering::Relaxed).max(hwm_tree(self.pid, 3));
        Usage {
            cpu: ticks_to_duration(now.saturating_sub(self.ticks) + unreaped),
            peak_kib: peak,
            reset: self.reset,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_ticks_are_read_from_a_stat_line_even_with_a_tricky_name() {
        // Fields 14-17 (utime stime cutime cstime) are 250 40 7 3.
        let line = "4242 (zync-daemon) S 1 4242 4242 0 -1 4194304 9000 0 0 0 250 40 7 3 20 0 \
                    9 0 3687922 3133440 362 18446744073709551615";
        assert_eq!(stat_ticks(line), Some((290, 10)));
        let odd = "4242 (a) b (c) S 1 4242 4242 0 -1 4194304 9000 0 0 0 250 40 7 3 20 0";
        assert_eq!(stat_ticks(odd), Some((290, 10)));
        assert_eq!(stat_ticks("4242 (short) S 1 2 3"), None);
        assert_eq!(stat_ticks("no parenthesis here"), None);
        // This process's own line parses.
        assert!(ticks(std::process::id()).is_some());
    }

    /// A child process, killed however the test ends (a busy loop left running would keep
    /// the test's output open).
    struct Child(std::process::Child);

    impl Drop for Child {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }

    fn spawn(program: &str, args: &[&str]) -> Child {
        Child(
            std::process::Command::new(program)
                .args(args)
                .spawn()
                .unwrap(),
        )
    }

    #[test]
    fn waiting_for_idle_ends_once_a_process_is_quiet_and_not_while_it_works() {
        let (quiet, limit) = (Duration::from_millis(200), Duration::from_millis(1_500));
        let idle = spawn("sleep", &["10"]);
        let waited = wait_idle(&[idle.0.id()], quiet, limit);
        assert!(waited >= quiet && waited < limit, "idle: waited {waited:?}");
        let busy = spawn("sh", &["-c", "while :; do :; done"]);
        let waited = wait_idle(&[idle.0.id(), busy.0.id()], quiet, limit);
        assert!(waited >= limit, "busy: waited only {waited:?}");
    }

    #[test]
    fn ticks_become_durations_at_the_kernels_rate() {
        // SAFETY: sysconf has no preconditions.
        let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as u64;
        assert_eq!(ticks_to_duration(hz * 3), Duration::from_secs(3));
        assert_eq!(ticks_to_duration(hz / 2), Duration::from_millis(500));
    }

    #[test]
    fn a_run_of_this_process_measures_its_own_work_and_memory() {
        let meter = Meter::start(std::process::id());
        let start = Instant::now();
        let mut x = 0u64;
        while start.elapsed() < Duration::from_millis(300) {
            x = x.wrapping_mul(31).wrapping_add(7);
        }
        let buf = vec![1u8; 32 << 20];
        std::hint::black_box((x, &buf));
        let usage = meter.finish();
        // Not a timing assertion: busy for 300 ms of wall time costs some CPU, never none.
        assert!(usage.cpu > Duration::ZERO, "{usage:?}");
        assert!(usage.peak_kib >= 32 << 10, "{usage:?}");
        assert!(
            usage.reset,
            "clear_refs is refused on this kernel: {usage:?}"
        );
    }
}
