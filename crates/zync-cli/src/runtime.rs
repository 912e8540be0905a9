//! The async runtime and the end of a run: what the daemon and the client share around their
//! main loop.

use anyhow::Context;

/// A multi-threaded tokio runtime with I/O and timers, with `workers` threads (None: one per
/// core).
///
/// # Errors
/// The runtime cannot start (threads or the I/O driver cannot be created).
pub fn runtime(workers: Option<usize>) -> anyhow::Result<tokio::runtime::Runtime> {
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    if let Some(n) = workers {
        builder.worker_threads(n);
    }
    builder
        .enable_all()
        .build()
        .context("cannot start the async runtime")
}

/// The most malloc arenas the binaries let glibc keep ([`limit_malloc_arenas`]).
pub const MALLOC_ARENAS: i32 = 2;

/// Caps glibc's malloc arenas at [`MALLOC_ARENAS`], unless the user set `MALLOC_ARENA_MAX`.
/// By default each thread that allocates may get an arena of its own (up to 8 per core), and
/// each arena keeps what was freed in it: during a big transfer, the runtime's threads, the
/// hashing threads and the indexer each kept freed 1 MiB chunk buffers, and the daemon's peak
/// memory on a 1 GiB download was 16.1 MiB instead of 15.1. Call it first thing in `main`,
/// before any thread starts: arenas already made stay.
pub fn limit_malloc_arenas() {
    if std::env::var_os("MALLOC_ARENA_MAX").is_none() {
        // SAFETY: mallopt only sets a tunable of the allocator; no thread is allocating yet.
        unsafe { libc::mallopt(libc::M_ARENA_MAX, MALLOC_ARENAS) };
    }
}

/// Hands the memory the allocator holds freed back to the system, and returns by how many
/// bytes the process's resident memory shrank meanwhile (0 when it grew, or cannot be read).
///
/// glibc keeps what is freed in the middle of its heap for later allocations, so a daemon or a
/// client looping for days would hold the peak of its biggest burst (a startup scan of a big
/// tree, an initial sync) for as long as it runs: 23 MiB instead of 18 for a daemon that served
/// a 40,000-file tree. Returning it walks the allocator's free lists holding each arena's lock
/// (a millisecond or so for a heap of tens of MiB; every thread allocating in that arena waits
/// meanwhile, so call it at the priority of the threads that serve, never from a niced one),
/// and what is used again costs a page fault per page: call it through [`GiveBack`], once a
/// burst of work has ended. Logs at debug what it gave back, from 256 KiB on.
pub fn give_back_freed_memory() -> u64 {
    let before = resident_bytes();
    // SAFETY: malloc_trim has no preconditions: it returns free pages of the allocator's own
    // heap to the system, under the allocator's locks.
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    unsafe {
        libc::malloc_trim(0);
    }
    let returned = match (before, resident_bytes()) {
        (Some(before), Some(after)) => before.saturating_sub(after),
        _ => 0,
    };
    if returned >= 256 << 10 {
        tracing::debug!(kib = returned >> 10, "gave freed memory back to the system");
    }
    returned
}

/// Gives freed memory back only when there may be some worth it: when resident memory grew by
/// [`GiveBack::MIN_GROWTH`] or more since it last gave back (a process at rest then never
/// walks its heap for nothing).
#[derive(Debug, Default)]
pub struct GiveBack {
    /// Resident memory after the last give-back, in bytes.
    level: u64,
}

impl GiveBack {
    /// How much resident memory must have grown since the last give-back for another.
    pub const MIN_GROWTH: u64 = 1 << 20;

    /// Gives back what was freed ([`give_back_freed_memory`]) if resident memory grew by
    /// [`GiveBack::MIN_GROWTH`] since the last time; returns how much went back.
    pub fn if_grown(&mut self) -> u64 {
        let Some(now) = resident_bytes() else {
            return 0;
        };
        if now < self.level.saturating_add(Self::MIN_GROWTH) {
            return 0;
        }
        let returned = give_back_freed_memory();
        self.level = resident_bytes().unwrap_or(now);
        returned
    }
}

/// The process's resident memory in bytes, from `/proc/self/statm`.
fn resident_bytes() -> Option<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    // SAFETY: sysconf reads a constant of the system.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    Some(pages.saturating_mul(u64::try_from(page).ok()?))
}

/// The CPU time (user and system) the whole process has used so far; zero when it cannot be
/// read.
pub fn process_cpu() -> std::time::Duration {
    let mut usage = std::mem::MaybeUninit::<libc::rusage>::zeroed();
    // SAFETY: getrusage fills the struct it is given, which is zeroed and of the right type.
    let usage = unsafe {
        if libc::getrusage(libc::RUSAGE_SELF, usage.as_mut_ptr()) != 0 {
            return std::time::Duration::ZERO;
        }
        usage.assume_init()
    };
    let time = |t: libc::timeval| {
        std::time::Duration::new(
            u64::try_from(t.tv_sec).unwrap_or(0),
            u32::try_from(t.tv_usec).unwrap_or(0).saturating_mul(1000),
        )
    };
    time(usage.ru_utime) + time(usage.ru_stime)
}

/// Lowers the CPU priority of the calling thread, and of every thread it starts afterwards,
/// to the nice value `nice` (0 to 19), unless it already runs at that or a lower priority.
/// Returns the nice value it runs at now.
///
/// Linux keeps a nice value per thread and a new thread takes its creator's: called first thing
/// on a thread, it covers the threads that thread starts (the daemon calls it on its indexer's);
/// called in `main` before any thread starts, the whole process.
///
/// # Errors
/// The priority cannot be read or set (a seccomp filter, say); nothing changed.
pub fn lower_priority(nice: i32) -> std::io::Result<i32> {
    // SAFETY: getpriority and setpriority read and write a scheduling attribute of this
    // thread (who 0) and nothing else. -1 is a valid answer of getpriority: errno tells.
    unsafe {
        *libc::__errno_location() = 0;
        let now = libc::getpriority(libc::PRIO_PROCESS, 0);
        if now == -1 && *libc::__errno_location() != 0 {
            return Err(std::io::Error::last_os_error());
        }
        if now >= nice {
            return Ok(now);
        }
        if libc::setpriority(libc::PRIO_PROCESS, 0, nice) != 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(nice)
}

/// Completes on SIGINT or SIGTERM, logging `what` (for example "stopping") at info. Never
/// completes when the handlers cannot be installed.
pub async fn shutdown_signal(what: &'static str) {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        std::future::pending::<()>().await;
        return;
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
    tracing::info!("{what}");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_runtime_runs_on_the_threads_asked_for() {
        let rt = runtime(Some(2)).expect("runtime");
        assert_eq!(rt.metrics().num_workers(), 2);
        assert_eq!(rt.block_on(async { 1 + 1 }), 2);
    }

    /// Frees `blocks` blocks of 16 KiB between blocks that stay (as a long run leaves the
    /// heap: glibc keeps such blocks; a freed block next to the heap's end, or a long run of
    /// them, may go back by itself), and returns those that stay.
    fn free_between_kept(blocks: usize) -> Vec<Vec<u8>> {
        let mut freed = Vec::new();
        let mut kept = Vec::new();
        for _ in 0..blocks {
            freed.push(vec![1u8; 16 << 10]);
            kept.push(vec![1u8; 64]);
        }
        kept
    }

    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    #[test]
    fn freed_memory_goes_back_to_the_system() {
        // On a thread of its own, so its blocks come from an arena other tests hardly use.
        let returned = std::thread::spawn(|| {
            let kept = free_between_kept(4096);
            let returned = give_back_freed_memory();
            drop(kept);
            returned
        })
        .join()
        .expect("test thread");
        assert!(
            returned >= 32 << 20,
            "only {returned} bytes of 64 MiB freed went back to the system"
        );
    }

    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    #[test]
    fn memory_goes_back_only_once_it_grew() {
        std::thread::spawn(|| {
            let mut give_back = GiveBack::default();
            let kept = free_between_kept(4096);
            assert!(
                give_back.if_grown() >= 32 << 20,
                "64 MiB freed, after growth"
            );
            // A quarter of a MiB freed since: less growth than makes a give-back worth it.
            let kept_too = free_between_kept(16);
            assert_eq!(give_back.if_grown(), 0, "given back with little growth");
            drop((kept, kept_too));
        })
        .join()
        .expect("test thread");
    }

    #[test]
    fn the_process_cpu_time_grows_with_work() {
        let before = process_cpu();
        let start = std::time::Instant::now();
        let mut x = 0u64;
        while start.elapsed() < std::time::Duration::from_millis(30) {
            x = std::hint::black_box(x.wrapping_add(1));
        }
        assert!(
            process_cpu() > before,
            "no CPU time counted for 30 ms of work"
        );
    }

    #[test]
    fn lower_priority_lowers_and_never_raises() {
        // On a thread of its own: the nice value stays with the thread, not the test binary.
        std::thread::spawn(|| {
            // SAFETY: reads this thread's nice value.
            let nice_now = || unsafe { libc::getpriority(libc::PRIO_PROCESS, 0) };
            let start = nice_now();
            assert!(
                start < 12,
                "the test needs a thread below nice 12, not {start}"
            );
            assert_eq!(lower_priority(12).expect("lower"), 12);
            assert_eq!(nice_now(), 12);
            let child = std::thread::spawn(nice_now).join().expect("child");
            assert_eq!(child, 12, "a thread started later takes the lower priority");
            // Asking for a higher priority (a lower nice value) changes nothing.
            assert_eq!(lower_priority(5).expect("keep"), 12);
            assert_eq!(nice_now(), 12);
        })
        .join()
        .expect("test thread");
    }

    #[test]
    fn sigterm_completes_the_shutdown_future() {
        let rt = runtime(Some(1)).expect("runtime");
        rt.block_on(async {
            use tokio::signal::unix::{signal, SignalKind};
            // Tokio's handler stays installed once registered, so SIGTERM cannot kill the test
            // process before the future under test has registered its own.
            let _installed = signal(SignalKind::terminate()).expect("handler");
            let waiting = tokio::spawn(shutdown_signal("stopping"));
            // The handlers are installed when the task first runs; signal until it completes.
            let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
            while !waiting.is_finished() {
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "SIGTERM was not seen"
                );
                // SAFETY: raise only sends a signal to this process, whose handler tokio owns.
                unsafe { libc::raise(libc::SIGTERM) };
                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            }
        });
    }
}
