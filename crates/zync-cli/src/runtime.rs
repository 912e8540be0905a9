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
