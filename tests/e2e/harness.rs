//! The harness itself (tests/common): what the other tests lean on when a command misbehaves.

use std::process::Command;
use std::time::{Duration, Instant};

use crate::common::*;

/// A command that writes more than a pipe holds, on both outputs, is read to the end while
/// it runs: it exits, and all of its output comes back.
#[test]
fn output_within_reads_a_command_that_writes_more_than_a_pipe_holds() {
    let mut cmd = Command::new("sh");
    cmd.args([
        "-c",
        "head -c 1000000 /dev/zero; head -c 700000 /dev/zero >&2; echo done >&2",
    ]);
    let out = output_within(cmd, DEADLINE);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(out.stdout.len(), 1_000_000);
    assert_eq!(out.stderr.len(), 700_005);
}

/// A process the command left behind with its output open does not hang the test: the test
/// fails soon after the command exited, and says why.
#[test]
fn output_within_fails_soon_when_a_process_left_behind_holds_the_output() {
    let dir = tempfile::tempdir().unwrap();
    let pid_file = dir.path().join("pid");
    let mut cmd = Command::new("sh");
    cmd.arg("-c")
        .arg("sleep 60 & echo $! > \"$1\"; echo started")
        .arg("sh")
        .arg(&pid_file);
    let start = Instant::now();
    let failed = std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || {
        output_within_grace(cmd, DEADLINE, Duration::from_secs(1))
    }));
    let took = start.elapsed();
    if let Ok(pid) = std::fs::read_to_string(&pid_file) {
        let _ = Command::new("kill").arg(pid.trim()).status();
    }
    let message = match failed {
        Ok(out) => panic!("returned after {took:?} although a sleep held its output: {out:?}"),
        Err(e) => e
            .downcast_ref::<String>()
            .cloned()
            .unwrap_or_else(|| "a panic without a message".into()),
    };
    assert!(
        message.contains("exited but its stdout was still open"),
        "{message}"
    );
    assert!(took < Duration::from_secs(30), "took {took:?}");
}
