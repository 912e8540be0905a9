//! End-to-end: the barriers for scripts, `zync-apply wait` on E and `zync-client --wait` on R.
//! A loop client reaches the daemon through a proxy that slows every chunk, so a change takes
//! a second or more to land on R and a barrier that did not really wait would return before
//! it. Each file is written on E right before the barrier starts: the barrier must also wait
//! for the daemon to take it in.

use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

use crate::common::proxy::Proxy;
use crate::common::*;

const IGNORED: &[&str] = &["node_modules", ".git"];

/// A file big enough that the slowed proxy takes a while over it (64 chunks).
fn big(seed: u64) -> Vec<u8> {
    pseudo_random(4 << 20, seed)
}

/// E and R with one file synced by a loop client behind a proxy; returns what the tests
/// need, the proxy not slowed yet.
struct Setup {
    /// Kept for the setup's life: dropping it removes the trees.
    _tmp: tempfile::TempDir,
    e: std::path::PathBuf,
    r: std::path::PathBuf,
    daemon: Daemon,
    client: ClientSpec,
    proxy: Proxy,
    running: Running,
}

fn setup() -> Setup {
    let tmp = tempfile::tempdir().unwrap();
    let e = tmp.path().join("e");
    write(&e.join("first.txt"), "first\n");
    let daemon = Daemon::start(tmp.path(), &[("code", &e)]);
    let r = tmp.path().join("r");
    let client = ClientSpec::new(&tmp.path().join("client"), &daemon, &[("code", &r)]);
    let proxy = Proxy::to_port(daemon.port);
    let running = client.spawn(&proxy.url(), &tmp.path().join("client.log"));
    wait_same_tree(&e, &r, IGNORED);
    // A file lands on R before the client acknowledges it: wait for the acknowledgement too,
    // so that a test stalling the proxy next has it on E.
    run_ok(zync_apply(&daemon.db, &["wait", "--timeout", "60"]));
    Setup {
        _tmp: tmp,
        e,
        r,
        daemon,
        client,
        proxy,
        running,
    }
}

fn json_of(out: &Output) -> serde_json::Value {
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "no JSON ({e}; {}):\n{}\nstderr:\n{}",
            out.status,
            stdout(out),
            stderr(out)
        )
    })
}

/// R's copy of `name` has E's content.
fn landed(e: &Path, r: &Path, name: &str) -> bool {
    std::fs::read(r.join(name)).ok() == std::fs::read(e.join(name)).ok()
}

#[test]
fn zync_apply_wait_returns_only_once_a_slowed_client_has_what_e_just_wrote() {
    let s = setup();
    s.proxy.delay(Duration::from_millis(20));
    write(&s.e.join("big.bin"), big(1));
    let out = run_ok(zync_apply(
        &s.daemon.db,
        &["wait", "--timeout", "100", "--json"],
    ));
    assert!(
        landed(&s.e, &s.r, "big.bin"),
        "zync-apply wait exited 0 before R had big.bin:\n{}",
        stdout(&out)
    );
    let report = json_of(&out);
    assert_eq!(report["in_sync"], true, "{report}");
    assert_eq!(
        report["clients"].as_array().map(Vec::len),
        Some(1),
        "{report}"
    );
    assert!(report["targets"]["code"].as_u64() >= Some(2), "{report}");

    // Named, and in text.
    let id = report["clients"][0]["client_id"]
        .as_str()
        .expect("client id")
        .to_string();
    write(&s.e.join("second.bin"), big(2));
    let text = zync_apply_ok(&s.daemon.db, &["wait", "--client", &id]);
    assert!(landed(&s.e, &s.r, "second.bin"), "{text}");
    assert!(text.starts_with("in sync: 1 client(s)"), "{text}");
    drop(s.running);
}

#[test]
fn zync_apply_wait_times_out_naming_the_client_that_is_behind() {
    let s = setup();
    s.proxy.stall(true);
    write(&s.e.join("stuck.txt"), "held back by the stalled tunnel\n");
    // Indexed first, so that even on a loaded machine the short timeout is spent waiting for
    // the client, not for the daemon.
    s.daemon.wait_indexed(&["stuck.txt"], &[]);
    let out = output_within_deadline(zync_apply(&s.daemon.db, &["wait", "--timeout", "4"]));
    assert_eq!(out.status.code(), Some(7), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.contains("timed out") && err.contains("code at ") && err.contains("1 behind"),
        "{err}"
    );
    let out = output_within_deadline(zync_apply(
        &s.daemon.db,
        &["wait", "--timeout", "3", "--json"],
    ));
    assert_eq!(out.status.code(), Some(7));
    let report = json_of(&out);
    assert_eq!(report["in_sync"], false, "{report}");
    assert_eq!(report["daemon_settled"], true, "{report}");
    assert_eq!(
        report["outstanding"].as_array().map(Vec::len),
        Some(1),
        "{report}"
    );

    s.proxy.stall(false);
    run_ok(zync_apply(&s.daemon.db, &["wait", "--timeout", "100"]));
    assert!(landed(&s.e, &s.r, "stuck.txt"));
    drop(s.running);
}

#[test]
fn zync_apply_wait_without_a_client_or_a_daemon_says_so() {
    let tmp = tempfile::tempdir().unwrap();
    let e = tmp.path().join("e");
    write(&e.join("a.txt"), "a\n");
    let mut daemon = Daemon::start(tmp.path(), &[("code", &e)]);
    daemon.wait_scanned();
    let out = output_within_deadline(zync_apply(&daemon.db, &["wait", "--timeout", "1"]));
    assert_eq!(out.status.code(), Some(7), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("no client is connected"),
        "{}",
        stderr(&out)
    );

    let out = output_within_deadline(zync_apply(
        &daemon.db,
        &["wait", "--client", "nobody-knows"],
    ));
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("no client with id nobody-knows"),
        "{}",
        stderr(&out)
    );

    // A daemon that hangs still holds its database's lock: the wait names it and times out.
    let pid = daemon.pid();
    unsafe { libc::kill(pid as i32, libc::SIGSTOP) };
    let out = output_within_deadline(zync_apply(&daemon.db, &["wait", "--timeout", "4"]));
    unsafe { libc::kill(pid as i32, libc::SIGCONT) };
    assert_eq!(out.status.code(), Some(7), "{}", stderr(&out));
    assert!(
        stderr(&out).contains(&format!("zync-daemon (pid {pid})")),
        "{}",
        stderr(&out)
    );

    // With no daemon, nothing can answer: an error once none has held the lock for a few
    // seconds, not a wait until the timeout.
    daemon.stop();
    let out = output_within_deadline(zync_apply(&daemon.db, &["wait", "--timeout", "20"]));
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("zync-daemon is not running: no process holds the lock"),
        "{}",
        stderr(&out)
    );
}

/// A daemon that stops while `zync-apply wait` waits for a client ends the wait with an error:
/// clients' progress reaches the database through the daemon only.
#[test]
fn zync_apply_wait_ends_when_the_daemon_stops() {
    let tmp = tempfile::tempdir().unwrap();
    let e = tmp.path().join("e");
    write(&e.join("a.txt"), "a\n");
    let mut daemon = Daemon::start(tmp.path(), &[("code", &e)]);
    daemon.wait_scanned();
    let mut wait = zync_apply(&daemon.db, &["wait", "--timeout", "20", "--json"]);
    let waiting = wait
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn zync-apply wait");
    // The daemon answers the barrier; no client is connected, so the wait goes on.
    wait_until("the daemon answered the wait's ticket", || {
        settled_ticket(&daemon.db) > 0
    });
    let pid = daemon.pid();
    daemon.kill();
    let out = waiting.wait_with_output().expect("zync-apply wait");
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(
        stderr(&out).contains(&format!("zync-daemon (pid {pid}) stopped while waiting")),
        "{}",
        stderr(&out)
    );
}

#[test]
fn zync_client_wait_beside_a_loop_client_only_reads_and_returns_once_r_has_it() {
    let s = setup();
    s.proxy.delay(Duration::from_millis(20));
    write(&s.e.join("big.bin"), big(3));
    // Straight to the daemon: only the loop client, through the slow proxy, may download.
    let mut cmd = s.client.command(&s.daemon.url());
    cmd.args(["--wait", "--json", "--timeout", "100"]);
    let out = run_ok(cmd);
    assert!(
        landed(&s.e, &s.r, "big.bin"),
        "zync-client --wait exited 0 before R had big.bin:\n{}",
        stdout(&out)
    );
    let report = json_of(&out);
    assert_eq!(report["in_sync"], true, "{report}");
    assert_eq!(report["by"], "loop-client", "{report}");
    assert_eq!(report["dirs"][0]["dir"], "code", "{report}");
    let mut running = s.running;
    assert!(
        running.is_running(),
        "the loop client stopped:\n{}",
        running.log_text()
    );
}

#[test]
fn zync_client_wait_times_out_when_the_loop_client_cannot_catch_up() {
    let s = setup();
    s.proxy.stall(true);
    write(&s.e.join("stuck.txt"), "held back\n");
    s.daemon.wait_indexed(&["stuck.txt"], &[]);
    let mut cmd = s.client.command(&s.daemon.url());
    cmd.args(["--wait", "--timeout", "4"]);
    let out = output_within_deadline(cmd);
    assert_eq!(out.status.code(), Some(7), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.contains("timed out") && err.contains("code at ") && err.contains("1 behind"),
        "{err}"
    );
    s.proxy.stall(false);
    let mut cmd = s.client.command(&s.daemon.url());
    cmd.args(["--wait", "--timeout", "100"]);
    run_ok(cmd);
    assert!(landed(&s.e, &s.r, "stuck.txt"));
    drop(s.running);
}

#[test]
fn zync_client_wait_with_no_client_running_syncs_once() {
    let tmp = tempfile::tempdir().unwrap();
    let e = tmp.path().join("e");
    write(&e.join("a.txt"), "a\n");
    let daemon = Daemon::start(tmp.path(), &[("code", &e)]);
    let r = tmp.path().join("r");
    let client = ClientSpec::new(&tmp.path().join("client"), &daemon, &[("code", &r)]);
    client.once_ok(&daemon.url());
    write(&e.join("b.txt"), "written right before the wait\n");
    let mut cmd = client.command(&daemon.url());
    cmd.args(["--wait", "--json"]);
    let out = run_ok(cmd);
    let report = json_of(&out);
    assert_eq!(report["by"], "synced-once", "{report}");
    assert_eq!(report["in_sync"], true, "{report}");
    assert_same_tree(&e, &r, IGNORED);

    // Unreachable: the same exit code as --once.
    let mut cmd = client.command("ws://127.0.0.1:9");
    cmd.arg("--wait");
    let out = output_within_deadline(cmd);
    assert_eq!(out.status.code(), Some(5), "{}", stderr(&out));
    drop(tmp);
}

#[test]
fn a_wait_started_right_after_a_burst_of_writes_covers_every_file_of_the_burst() {
    let s = setup();
    // Written as fast as possible, then the barrier at once: the daemon is still taking the
    // burst in (several watcher batches) when the ticket is taken.
    for i in 0..3000 {
        write(
            &s.e.join(format!("burst/d{}/f{i}.txt", i % 30)),
            format!("{i}\n"),
        );
    }
    let out = run_ok(zync_apply(
        &s.daemon.db,
        &["wait", "--timeout", "100", "--json"],
    ));
    let missing: Vec<String> = (0..3000)
        .map(|i| format!("burst/d{}/f{i}.txt", i % 30))
        .filter(|path| !s.r.join(path).exists())
        .collect();
    assert!(
        missing.is_empty(),
        "zync-apply wait exited 0 with {} file(s) of the burst not on R: {}\n{}",
        missing.len(),
        missing
            .iter()
            .map(|path| format!("{path} ({})", indexed_as(&s.daemon.db, path)))
            .collect::<Vec<_>>()
            .join(", "),
        stdout(&out)
    );
    // Again, with the barrier on R.
    for i in 0..3000 {
        write(
            &s.e.join(format!("burst2/d{}/f{i}.txt", i % 30)),
            format!("{i}\n"),
        );
    }
    let mut cmd = s.client.command(&s.daemon.url());
    cmd.args(["--wait", "--timeout", "100"]);
    run_ok(cmd);
    let missing = (0..3000)
        .filter(|i| !s.r.join(format!("burst2/d{}/f{i}.txt", i % 30)).exists())
        .count();
    assert_eq!(
        missing, 0,
        "zync-client --wait exited 0 with {missing} file(s) of the burst not on R"
    );
    assert_same_tree(&s.e, &s.r, IGNORED);
    drop(s.running);
}

/// The watcher's thread lagging behind the kernel's queue of file events (a loaded machine:
/// here every read it makes of the queue waits 20 ms): a barrier must still cover every file
/// written before it started, in what it waits for on E and on R.
#[test]
fn a_wait_covers_a_burst_the_watchers_thread_has_not_read_yet() {
    let s = setup();
    let tid = thread_named(s.daemon.pid(), "notify-rs")
        .expect("the daemon has a notify-rs inotify thread");
    for (round, cmd) in ["apply", "client"].into_iter().enumerate() {
        let slowed = SlowedThread::start(tid, "read", 20_000);
        for i in 0..300 {
            write(&s.e.join(format!("lag{round}/f{i}.txt")), format!("{i}\n"));
        }
        let out = match cmd {
            "apply" => run_ok(zync_apply(&s.daemon.db, &["wait", "--timeout", "100"])),
            _ => {
                let mut cmd = s.client.command(&s.daemon.url());
                cmd.args(["--wait", "--timeout", "100"]);
                run_ok(cmd)
            }
        };
        drop(slowed);
        let missing = (0..300)
            .filter(|i| !s.r.join(format!("lag{round}/f{i}.txt")).exists())
            .count();
        assert_eq!(
            missing,
            0,
            "the {cmd} barrier exited 0 with {missing} file(s) of 300 not on R:\n{}",
            stderr(&out)
        );
        // The barrier's cookies are gone from E and never reached R.
        for (side, dir) in [("E", &s.e), ("R", &s.r)] {
            let cookies: Vec<String> = names_in(dir)
                .into_iter()
                .filter(|n| n.starts_with(".zync-tmp-cookie-"))
                .collect();
            assert!(cookies.is_empty(), "cookies left on {side}: {cookies:?}");
        }
    }
    assert_same_tree(&s.e, &s.r, IGNORED);
    drop(s.running);
}

/// A served directory the daemon may not write to (here it runs as nobody over root's tree)
/// takes no barrier cookie: each barrier rescans it instead, and still covers a burst the
/// lagging watcher has not read yet.
#[test]
fn a_barrier_rescans_a_directory_the_daemon_cannot_write_to() {
    let tmp = tempfile::tempdir().unwrap();
    let state = Daemon::state_for_nobody(tmp.path());
    let e = tmp.path().join("e");
    write(&e.join("first.txt"), "first\n");
    let m = Mirror::start_through_proxy(
        tmp.path(),
        Daemon::start_as_nobody(&state, &[("code", &e)]),
        &e,
    );
    let (daemon, r) = (&m.daemon, &m.r);
    let tid = thread_named(daemon.pid(), "notify-rs").expect("the daemon's inotify thread");
    let slowed = SlowedThread::start(tid, "read", 20_000);
    for i in 0..300 {
        write(&e.join(format!("f{i}.txt")), format!("{i}\n"));
    }
    // As the daemon's user: zync-apply trusts only a database of its own user's.
    let out = run_ok(zync_apply_as_nobody(
        &state,
        &daemon.db,
        &["wait", "--timeout", "100"],
    ));
    drop(slowed);
    let missing = (0..300)
        .filter(|i| !r.join(format!("f{i}.txt")).exists())
        .count();
    assert_eq!(
        missing,
        0,
        "zync-apply wait exited 0 with {missing} file(s) of 300 not on R:\n{}",
        stderr(&out)
    );
    let log = daemon.log_text();
    assert!(
        log.contains("cannot write a barrier cookie") && log.contains("rescans this directory"),
        "the daemon must say why barriers rescan:\n{log}"
    );
}

/// Another local user who may write to a served directory (here nobody, in a directory open
/// to all) creates files named like the daemon's barrier cookies for the coming tickets,
/// right before E's owner writes a burst and waits. The watcher lags (its reads slowed 40 ms
/// each), so the forged names come out of it after the ticket was taken and before the burst:
/// they must not answer the barrier.
#[test]
fn cookies_forged_by_another_user_do_not_answer_a_barrier() {
    use std::os::unix::process::CommandExt;
    let tmp = tempfile::tempdir().unwrap();
    let e = tmp.path().join("e");
    write(&e.join("first.txt"), "first\n");
    std::fs::set_permissions(&e, std::os::unix::fs::PermissionsExt::from_mode(0o777)).unwrap();
    let m = Mirror::start(tmp.path(), Daemon::start(tmp.path(), &[("code", &e)]), &e);
    let next = settled_ticket(&m.daemon.db) + 1;
    let tid = thread_named(m.daemon.pid(), "notify-rs").expect("the daemon's inotify thread");
    let slowed = SlowedThread::start(tid, "read", 40_000);
    let forged = format!(
        "for n in $(seq {} {}); do : > .zync-tmp-cookie-{}-$n; done",
        next + 1,
        next + 100,
        m.daemon.pid()
    );
    let status = Command::new("sh")
        .args(["-c", &forged])
        .current_dir(&e)
        .uid(65534)
        .gid(65534)
        .status()
        .expect("forge cookies as nobody");
    assert!(status.success(), "the forger failed: {status}");
    for i in 0..300 {
        write(&e.join(format!("f{i}.txt")), format!("{i}\n"));
    }
    let out = run_ok(zync_apply(&m.daemon.db, &["wait", "--timeout", "100"]));
    drop(slowed);
    let missing = (0..300)
        .filter(|i| !m.r.join(format!("f{i}.txt")).exists())
        .count();
    assert_eq!(
        missing,
        0,
        "forged cookies answered the barrier: {missing} file(s) of 300 not on R:\n{}",
        stderr(&out)
    );
}

/// The watcher's thread stalls (each read it makes of the kernel's queue waits 8 s): a
/// barrier's cookie does not come out within 5 s, so the daemon gives up on it and rescans
/// the root instead, and the barrier still covers what was written before it.
#[test]
fn a_cookie_that_does_not_come_back_is_replaced_by_a_rescan() {
    let tmp = tempfile::tempdir().unwrap();
    let e = tmp.path().join("e");
    write(&e.join("first.txt"), "first\n");
    let m = Mirror::start(tmp.path(), Daemon::start(tmp.path(), &[("code", &e)]), &e);
    let tid = thread_named(m.daemon.pid(), "notify-rs").expect("the daemon's inotify thread");
    let slowed = SlowedThread::start(tid, "read", 8_000_000);
    write(&e.join("stalled.txt"), "written while the watcher stalls\n");
    let out = run_ok(zync_apply(&m.daemon.db, &["wait", "--timeout", "100"]));
    assert!(
        landed(&e, &m.r, "stalled.txt"),
        "zync-apply wait exited 0 without stalled.txt on R:\n{}",
        stderr(&out)
    );
    let log = m.daemon.log_text();
    drop(slowed);
    assert!(
        log.contains("a barrier cookie did not come back; rescanning instead"),
        "the barrier was not answered by the rescan:\n{log}"
    );
}

/// A `zync-client --status` or dry run of an R that never synced says HELLO under a shared
/// probe id and mirrors nothing: `zync-apply wait` must not wait for it, even while it is
/// connected (here one is held open for the whole wait).
#[tokio::test(flavor = "multi_thread")]
async fn zync_apply_wait_does_not_wait_for_a_status_probe() {
    let s = setup();
    let (_probe, welcome) =
        crate::common::peer::Peer::authenticated(&s.daemon, zync_proto::STATUS_PROBE_ID).await;
    assert!(welcome["dirs"].is_array(), "{welcome}");
    write(&s.e.join("after-probe.txt"), "after the probe connected\n");
    let db = s.daemon.db.clone();
    let out = tokio::task::spawn_blocking(move || {
        output_within_deadline(zync_apply(&db, &["wait", "--timeout", "20", "--json"]))
    })
    .await
    .expect("zync-apply wait");
    assert_eq!(
        out.status.code(),
        Some(0),
        "zync-apply wait waited for the probe:\n{}\n{}",
        stdout(&out),
        stderr(&out)
    );
    assert!(landed(&s.e, &s.r, "after-probe.txt"));
    let report = json_of(&out);
    assert_eq!(
        report["clients"].as_array().map(Vec::len),
        Some(1),
        "{report}"
    );
    drop(s.running);
}

/// The last `zync-apply wait` ticket the daemon answered, from its database (0: none).
fn settled_ticket(db: &Path) -> u64 {
    let Ok(conn) =
        rusqlite::Connection::open_with_flags(db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
    else {
        return 0;
    };
    conn.query_row("SELECT value FROM meta WHERE key = 'settled'", [], |row| {
        row.get::<_, String>(0)
    })
    .ok()
    .and_then(|v| v.parse().ok())
    .unwrap_or(0)
}

/// What the daemon's index holds for `path` of `code`: its sequence and size, or that it has no
/// row, for a failure's message.
fn indexed_as(db: &std::path::Path, path: &str) -> String {
    rusqlite::Connection::open_with_flags(db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
        .and_then(|db| {
            db.query_row(
                "SELECT seq, size, deleted FROM entries WHERE dir = 'code' AND path = ?1",
                [path],
                |row| {
                    Ok(format!(
                        "indexed at seq {}, {} bytes, deleted {}",
                        row.get::<_, i64>(0)?,
                        row.get::<_, i64>(1)?,
                        row.get::<_, i64>(2)?
                    ))
                },
            )
        })
        .unwrap_or_else(|e| format!("not in the index: {e}"))
}
