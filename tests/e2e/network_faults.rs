//! End-to-end: the client and daemon over a bad network. A fault-injecting TCP proxy
//! (tests/common/proxy.rs) sits between a loop-mode client and the daemon and cuts, stalls or
//! delays the connection; and the daemon meets many clients at once and hostile frame sizes.
//!
//! docs/PROTOCOL.md: GET_FILE `offset` (partial downloads resume), "Timeouts and liveness"
//! (the client's stall timeout and pings), "Limits" (frame and message sizes).

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::common::peer::{self, Frame, Peer};
use crate::common::proxy::Proxy;
use crate::common::*;
use serde_json::json;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::Message;

const IGNORED: &[&str] = &["node_modules", ".git"];
const MIB: u64 = 1 << 20;

/// Polls `cond` until it holds, failing with `what` after `limit`.
fn wait_within(limit: Duration, what: &str, mut cond: impl FnMut() -> bool) {
    let start = Instant::now();
    while !cond() {
        assert!(
            start.elapsed() < limit,
            "timed out after {limit:?} waiting for: {what}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Waits until R's tree equals E's within `limit`, printing the difference and `log` on
/// timeout.
fn wait_same_tree_within(limit: Duration, e: &Path, r: &Path, log: impl Fn() -> String) {
    let start = Instant::now();
    while !same_tree(e, r, IGNORED) {
        if start.elapsed() > limit {
            eprintln!("client log:\n{}", log());
            assert_same_tree(e, r, IGNORED);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Writes `data` to `path` on E in one step (written in `staging`, outside E, then renamed),
/// so the daemon never indexes a half-written big file.
fn write_whole(staging: &Path, path: &Path, data: &[u8]) {
    let outside = staging.join("staged-file");
    write(&outside, data);
    std::fs::create_dir_all(path.parent().expect("a parent")).expect("create parents");
    std::fs::rename(&outside, path).expect("move the file into E");
}

/// What a sampler saw of one file on R while transfers ran.
#[derive(Debug, Default)]
struct Samples {
    absent: u32,
    complete: u32,
    /// Sizes and hashes of anything that was neither absent nor E's full content.
    bad: Vec<String>,
    /// Times a `.zync-tmp-partial-` file was seen beside it.
    partial_seen: u32,
}

/// Reads R's copy of `name` over and over until `stop`, recording whether each read saw it
/// absent, complete (E's sha256), or anything else (a partial or corrupt file).
fn sample_until(
    r: &Path,
    name: &str,
    expected_sha: &str,
    stop: &AtomicBool,
    samples: &Mutex<Samples>,
) {
    while !stop.load(Ordering::SeqCst) {
        let partial = std::fs::read_dir(r)
            .map(|rd| {
                rd.flatten().any(|e| {
                    let n = e.file_name().to_string_lossy().to_string();
                    n.starts_with(".zync-tmp-partial-") && n.ends_with(name)
                })
            })
            .unwrap_or(false);
        let seen = match std::fs::read(r.join(name)) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => Some(Err(e.to_string())),
            Ok(data) => Some(Ok(data)),
        };
        let mut s = samples.lock().unwrap();
        if partial {
            s.partial_seen += 1;
        }
        match seen {
            None => s.absent += 1,
            Some(Ok(data)) => {
                let sha = sha256(&data);
                if sha == expected_sha {
                    s.complete += 1;
                } else {
                    s.bad.push(format!("{} bytes, sha256 {sha}", data.len()));
                }
            }
            Some(Err(e)) => s.bad.push(format!("unreadable: {e}")),
        }
        drop(s);
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// (a) + (d): a tunnel that drops every 4 MiB still delivers a 48 MiB
/// file, because each new connection resumes the partial download where the last one stopped
/// (GET_FILE `offset`), within the file's time budget.
#[test]
fn a_tunnel_cut_every_4_mib_still_delivers_48_mib_quickly() {
    cut_transfer(4 * MIB, Duration::from_secs(50));
}

/// (a) + (d): a tunnel that drops every 12 MiB still delivers a 48 MiB file (no connection
/// carries it whole: without resuming it could never arrive), because each new connection
/// resumes the partial download where the last one stopped (GET_FILE `offset`), so the bytes
/// sent stay near the data's size; and at no moment does R's file hold anything but E's
/// complete content (invariant 1). 12 MiB, not 4: see the ignored test above.
#[test]
fn cut_connections_resume_downloads_and_never_expose_partial_files() {
    cut_transfer(12 * MIB, Duration::from_secs(40));
}

/// E has a 48 MiB file and 200 small ones; a loop-mode client reaches it through a proxy that
/// cuts every connection after `cut_every` bytes daemon -> client; R must equal E within
/// `limit`, with R's files never seen partial.
fn cut_transfer(cut_every: u64, limit: Duration) {
    const BIG: u64 = 48 << 20;
    let tmp = tempfile::tempdir().unwrap();
    let e = tmp.path().join("e");
    std::fs::create_dir_all(&e).unwrap();
    let big = pseudo_random(BIG as usize, 4242);
    let big_sha = sha256(&big);
    write_whole(tmp.path(), &e.join("big.bin"), &big);
    let mut data_bytes = big.len() as u64;
    for i in 0..200u64 {
        let small = pseudo_random(500 + (i as usize * 37) % 3000, 1000 + i);
        data_bytes += small.len() as u64;
        write(&e.join(format!("small/{i:03}.txt")), small);
    }
    drop(big);
    let daemon = Daemon::start(tmp.path(), &[("code", &e)]);
    daemon.wait_scanned();

    let proxy = Proxy::to_port(daemon.port);
    proxy.cut_after_bytes(cut_every);
    let r = tmp.path().join("r");
    std::fs::create_dir_all(&r).unwrap();
    let client = ClientSpec::new(&tmp.path().join("client"), &daemon, &[("code", &r)]);

    // (d): watch R's big file (and one small file) while the transfer runs.
    let stop = Arc::new(AtomicBool::new(false));
    // The samplers stop with the test, also when it fails.
    struct StopOnDrop(Arc<AtomicBool>);
    impl Drop for StopOnDrop {
        fn drop(&mut self) {
            self.0.store(true, Ordering::SeqCst);
        }
    }
    let _stop_samplers = StopOnDrop(Arc::clone(&stop));
    let samples = Arc::new(Mutex::new(Samples::default()));
    let small_samples = Arc::new(Mutex::new(Samples::default()));
    let sampler = {
        let (r, stop, samples, sha) = (
            r.clone(),
            Arc::clone(&stop),
            Arc::clone(&samples),
            big_sha.clone(),
        );
        std::thread::spawn(move || sample_until(&r, "big.bin", &sha, &stop, &samples))
    };
    let small_sampler = {
        let small_sha = sha256(&std::fs::read(e.join("small/199.txt")).unwrap());
        let (r, stop, samples) = (
            r.join("small"),
            Arc::clone(&stop),
            Arc::clone(&small_samples),
        );
        std::thread::spawn(move || sample_until(&r, "199.txt", &small_sha, &stop, &samples))
    };

    let mut running = client.spawn(&proxy.url(), &tmp.path().join("client.log"));
    let started = Instant::now();
    let state = || {
        format!(
            "{}\nproxy: {} connections, {} cuts, {} bytes to the client",
            running.log_text(),
            proxy.connections(),
            proxy.cuts(),
            proxy.bytes_to_client()
        )
    };
    while !same_tree(&e, &r, IGNORED) {
        // (d) fails as soon as a partial file is seen, not only at the end.
        for (name, samples) in [("big.bin", &samples), ("small/199.txt", &small_samples)] {
            let bad = samples.lock().unwrap().bad.clone();
            assert!(
                bad.is_empty(),
                "R's {name} was seen with partial or foreign content: {bad:?}\n{}",
                state()
            );
        }
        if started.elapsed() > limit {
            eprintln!("{}", state());
            assert_same_tree(&e, &r, IGNORED);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let took = started.elapsed();
    stop.store(true, Ordering::SeqCst);
    sampler.join().unwrap();
    small_sampler.join().unwrap();

    let log = running.log_text();
    assert!(running.is_running(), "the client exited:\n{log}");
    let sent = proxy.bytes_to_client();
    eprintln!(
        "converged in {took:?}: {} connections, {} cuts, {sent} bytes to the client for \
         {data_bytes} bytes of data",
        proxy.connections(),
        proxy.cuts()
    );
    // The big file arrived whole, although no connection carried more than 4 MiB of it.
    assert_eq!(
        sha256(&std::fs::read(r.join("big.bin")).unwrap()),
        big_sha,
        "R's big file is not E's"
    );
    let resumed: Vec<u64> = proxy
        .requests()
        .iter()
        .filter(|r| r["operation"] == "GET_FILE" && r["path"] == "big.bin")
        .filter_map(|r| r["offset"].as_u64())
        .filter(|&offset| offset > 0)
        .collect();
    assert!(
        !resumed.is_empty(),
        "no GET_FILE of big.bin asked for an offset past 0: the download never resumed"
    );
    let least = BIG / cut_every;
    assert!(
        proxy.cuts() >= least,
        "the proxy cut only {} connections; 48 MiB through {} MiB connections takes at least \
         {least}",
        proxy.cuts(),
        cut_every / MIB
    );
    // Resumed, not restarted: the bytes sent stay near the data's size.
    assert!(
        sent < 2 * data_bytes,
        "{sent} bytes went to the client for {data_bytes} bytes of data: downloads restarted \
         instead of resuming"
    );
    let left = temp_files(&r);
    assert!(left.is_empty(), "temp files left on R: {left:?}");

    // (d): every look at R's files saw either nothing or E's complete content.
    for (name, samples) in [("big.bin", &samples), ("small/199.txt", &small_samples)] {
        let s = samples.lock().unwrap();
        eprintln!("{name}: {s:?}");
        assert!(
            s.bad.is_empty(),
            "R's {name} was seen with partial or foreign content: {:?}",
            s.bad
        );
        assert!(s.complete >= 1, "{name} was never seen complete: {s:?}");
    }
    let s = samples.lock().unwrap();
    assert!(
        s.absent >= 3,
        "the sampler did not look at big.bin while it was being transferred: {s:?}"
    );
}

/// (b): a hung tunnel (nothing forwarded, nothing closed) is noticed by an idle loop-mode
/// client within its stall timeout (it pings every third of it); once the tunnel is replaced,
/// the change made meanwhile arrives.
#[test]
fn a_stalled_tunnel_is_given_up_and_the_change_arrives_after_it_recovers() {
    let tmp = tempfile::tempdir().unwrap();
    let e = tmp.path().join("e");
    write(&e.join("a.txt"), "a, first version\n");
    write(&e.join("b.txt"), "b\n");
    let daemon = Daemon::start(tmp.path(), &[("code", &e)]);
    daemon.wait_scanned();
    let proxy = Proxy::to_port(daemon.port);
    let r = tmp.path().join("r");
    let client = ClientSpec::new(&tmp.path().join("client"), &daemon, &[("code", &r)]);
    let log_path = tmp.path().join("client.log");
    let file = std::fs::File::create(&log_path).unwrap();
    let mut child = client
        .command(&proxy.url())
        // The safety-net poll (a request, itself subject to the stall timeout) must not be
        // what notices the stall: only the idle wait's pings can.
        .args(["--stall-timeout", "3", "--interval", "600"])
        .stdout(std::process::Stdio::null())
        .stderr(file)
        .spawn()
        .expect("spawn zync-client");
    let log = || std::fs::read_to_string(&log_path).unwrap_or_default();
    struct Kill<'a>(&'a mut std::process::Child);
    impl Drop for Kill<'_> {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let child = Kill(&mut child);
    wait_same_tree_within(DEADLINE, &e, &r, log);
    // The round is over (its ACK sent and answered, nothing crossing the proxy since): the
    // client waits idle, with no request outstanding whose own timeout could notice the stall.
    wait_until("the client to finish its first round", || {
        proxy
            .requests()
            .iter()
            .any(|r| r["operation"] == "ACK_CHANGES")
    });
    let mut quiet_since = (Instant::now(), proxy.bytes_to_client());
    wait_until("the client to go idle", || {
        let bytes = proxy.bytes_to_client();
        if bytes != quiet_since.1 {
            quiet_since = (Instant::now(), bytes);
        }
        quiet_since.0.elapsed() > Duration::from_millis(300)
    });

    proxy.stall(true);
    let stalled_at = Instant::now();
    let connections = proxy.connections();
    write(&e.join("a.txt"), "a, changed while the tunnel hung\n");
    // 3 s of silence, then the Timeout error and a reconnect (a new connection through the
    // proxy, which accepts while it stalls); 20 s is a generous bound.
    wait_within(
        Duration::from_secs(20),
        "the client to give up on the stalled connection and connect again",
        || proxy.connections() > connections,
    );
    eprintln!("stall noticed after {:?}", stalled_at.elapsed());
    assert_eq!(
        std::fs::read_to_string(r.join("a.txt")).unwrap(),
        "a, first version\n",
        "the change crossed a stalled tunnel"
    );

    // The tunnel is replaced: the held connections go away, new ones work.
    proxy.stall(false);
    proxy.cut_all();
    wait_same_tree_within(DEADLINE, &e, &r, log);
    assert!(
        child.0.try_wait().unwrap().is_none(),
        "the client exited:\n{}",
        log()
    );
}

/// (c): 25 ms of latency on every chunk each way slows the client down but changes still
/// arrive.
#[test]
fn a_slow_tunnel_still_converges() {
    let tmp = tempfile::tempdir().unwrap();
    let e = tmp.path().join("e");
    for i in 0..5 {
        write(&e.join(format!("f{i}.txt")), format!("file {i}\n"));
    }
    write(&e.join("sub/big.bin"), pseudo_random(3 << 20, 5));
    let daemon = Daemon::start(tmp.path(), &[("code", &e)]);
    daemon.wait_scanned();
    let proxy = Proxy::to_port(daemon.port);
    proxy.delay(Duration::from_millis(25));
    let r = tmp.path().join("r");
    let client = ClientSpec::new(&tmp.path().join("client"), &daemon, &[("code", &r)]);
    let mut running = client.spawn(&proxy.url(), &tmp.path().join("client.log"));
    wait_same_tree_within(DEADLINE, &e, &r, || running.log_text());

    write(&e.join("f0.txt"), "file 0, changed\n");
    write(&e.join("new/g.txt"), "new\n");
    std::fs::remove_file(e.join("f1.txt")).unwrap();
    write_whole(
        tmp.path(),
        &e.join("sub/big.bin"),
        &pseudo_random(2 << 20, 6),
    );
    wait_same_tree_within(DEADLINE, &e, &r, || running.log_text());
    assert!(
        running.is_running(),
        "the client exited:\n{}",
        running.log_text()
    );
    assert!(
        proxy.bytes_to_client() > 5 * MIB,
        "the content did not go through the proxy ({} bytes)",
        proxy.bytes_to_client()
    );
}

/// The daemon's peak resident memory (VmHWM), in bytes.
fn peak_memory(pid: u32) -> u64 {
    memory_of(pid, "VmHWM").expect("VmHWM in /proc/PID/status")
}

/// (e): 20 loop-mode clients at once, each with its own database and directory, all get the
/// tree and later changes, and the daemon's peak memory stays bounded.
#[test]
fn twenty_clients_converge_and_the_daemon_memory_stays_bounded() {
    const CLIENTS: usize = 20;
    const BOUND: u64 = 256 * MIB;
    let tmp = tempfile::tempdir().unwrap();
    let e = tmp.path().join("e");
    for i in 0..300u64 {
        write(
            &e.join(format!("d{}/f{i:03}.bin", i % 10)),
            pseudo_random(1000 + (i as usize * 131) % 20_000, 7000 + i),
        );
    }
    let daemon = Daemon::start(tmp.path(), &[("code", &e)]);
    daemon.wait_scanned();
    let at_start = peak_memory(daemon.pid());

    let mut clients = Vec::new();
    for c in 0..CLIENTS {
        let r = tmp.path().join(format!("r{c}"));
        let spec = ClientSpec::new(
            &tmp.path().join(format!("client{c}")),
            &daemon,
            &[("code", &r)],
        );
        let running = spec.spawn(&daemon.url(), &tmp.path().join(format!("client{c}.log")));
        clients.push((r, running));
    }
    for (r, running) in &clients {
        wait_same_tree_within(DEADLINE, &e, r, || running.log_text());
    }

    for i in (0..300u64).step_by(20) {
        write(
            &e.join(format!("d{}/f{i:03}.bin", i % 10)),
            pseudo_random(5000, 9000 + i),
        );
    }
    write(&e.join("new/added.txt"), "added while 20 clients watch\n");
    std::fs::remove_file(e.join("d1/f001.bin")).unwrap();
    for (r, running) in &clients {
        wait_same_tree_within(DEADLINE, &e, r, || running.log_text());
    }
    for (_, running) in &mut clients {
        assert!(
            running.is_running(),
            "a client exited:\n{}",
            running.log_text()
        );
    }
    let peak = peak_memory(daemon.pid());
    eprintln!(
        "daemon VmHWM: {} KiB after the scan, {} KiB after serving {CLIENTS} clients",
        at_start / 1024,
        peak / 1024
    );
    assert!(
        peak < BOUND,
        "the daemon's peak memory reached {} MiB serving {CLIENTS} clients (bound {} MiB)",
        peak / MIB,
        BOUND / MIB
    );
}

/// A connection through the handshake that may send frames of any size (its own limits far
/// above the daemon's).
async fn hello(daemon: &Daemon, client_id: &str) -> Peer {
    let config = WebSocketConfig::default()
        .max_message_size(Some(64 << 20))
        .max_frame_size(Some(64 << 20));
    let mut peer = Peer::connect_with(daemon, config).await;
    peer.handshake_ok(&peer::token_of(daemon), client_id).await;
    peer
}

/// Sends `frame` (over the 4 MiB transport limit) and checks the daemon ends the
/// connection: a close with 1009 (message too big), or the transport ending.
async fn expect_closed_after(peer: &mut Peer, frame: Message, what: &str) {
    // The daemon may close while the frame is still being written: a send error is fine.
    let _ = peer.try_send(frame).await;
    let ended = peer.recv().await;
    match &ended {
        Frame::Text(value) => panic!("{what}: the daemon answered instead of closing: {value}"),
        Frame::Binary(data) => panic!(
            "{what}: the daemon sent {} bytes instead of closing",
            data.len()
        ),
        Frame::Closed(Some(code)) => assert_eq!(*code, 1009, "{what}: wrong close code"),
        Frame::Closed(None) | Frame::Failed(_) => {} // ended or reset before the close frame
    }
    eprintln!("{what}: {ended:?}");
}

/// (f): frames over the size limits end (only) the connection that sent them, or get an
/// error; other clients are served meanwhile; a 5000-byte path is `invalid_path`.
#[tokio::test(flavor = "multi_thread")]
async fn hostile_sizes_end_only_the_offending_connection() {
    let tmp = tempfile::tempdir().unwrap();
    let e = tmp.path().join("e");
    write(&e.join("a.txt"), "a\n");
    write(&e.join("sub/b.txt"), "b\n");
    let daemon = Daemon::start(tmp.path(), &[("code", &e)]);
    daemon.wait_scanned();

    // A well-behaved connection open through it all.
    let mut good = hello(&daemon, "good-peer").await;

    // A text message over MAX_TEXT_MESSAGE (4 MiB): valid JSON, just too big.
    let mut peer = hello(&daemon, "hostile-text").await;
    let pad = "x".repeat((4 << 20) + 1024);
    let text = json!({"id": 2, "operation": "PING", "pad": pad}).to_string();
    expect_closed_after(&mut peer, Message::text(text), "a 4 MiB + 1 KiB text frame").await;

    // A binary frame over MAX_BINARY_FRAME but under the transport limit: not a frame the
    // daemon expects, so `bad_request`, and the connection goes on (docs/PROTOCOL.md).
    let mut peer = hello(&daemon, "hostile-binary").await;
    let mut frame = 7u64.to_be_bytes().to_vec();
    frame.extend(pseudo_random(2 << 20, 3));
    peer.send(Message::binary(frame)).await;
    let reply = peer.recv_text().await;
    assert_eq!(reply["status"], "error", "{reply}");
    assert_eq!(reply["code"], "bad_request", "{reply}");
    let pong = peer.call(json!({"operation": "PING"})).await;
    assert_eq!(pong["status"], "ok", "the connection did not go on: {pong}");

    // A binary frame over the transport limit: the connection is closed.
    let mut frame = 8u64.to_be_bytes().to_vec();
    frame.extend(pseudo_random(5 << 20, 4));
    expect_closed_after(&mut peer, Message::binary(frame), "a 5 MiB binary frame").await;

    // The daemon still serves: the open connection, and a new client's whole sync.
    let pong = good.call(json!({"operation": "PING"})).await;
    assert_eq!(pong["status"], "ok", "{pong}");
    let r = tmp.path().join("r");
    let client = ClientSpec::new(&tmp.path().join("client"), &daemon, &[("code", &r)]);
    let url = daemon.url();
    let out = tokio::task::spawn_blocking(move || client.once(&url))
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "--once failed after the hostile frames:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_same_tree(&e, &r, IGNORED);

    // A 5000-byte path (components of 99 bytes: only the total is too long).
    let path = vec!["p".repeat(99); 50].join("/");
    assert_eq!(path.len(), 4999);
    let path = format!("{path}q");
    assert_eq!(path.len(), 5000);
    let reply = good
        .call(json!({"operation": "GET_FILE", "dir": "code", "path": path}))
        .await;
    assert_eq!(reply["status"], "error", "{reply}");
    assert_eq!(reply["code"], "invalid_path", "{reply}");
    let pong = good.call(json!({"operation": "PING"})).await;
    assert_eq!(pong["status"], "ok", "{pong}");
}

/// A tunnel cut while the client plans a page in parts (docs/ARCHITECTURE.md, "Memory"): the
/// rest of the page was never planned, so nothing is recorded past it, and the next run
/// brings R to E's tree from where the first run was durable, without downloading again what
/// it had recorded (invariant 2).
#[test]
fn a_cut_while_a_page_is_planned_in_parts_loses_nothing() {
    const FILES: usize = 9000;
    let tmp = tempfile::tempdir().unwrap();
    let e = tmp.path().join("e");
    // Two pages (5,000 changes each at most). The client plans the second page only up to
    // 2,048 queued downloads while 4,096 are in flight, so `z`, near its end, is not made
    // until thousands of files have landed.
    for i in 0..FILES {
        write(
            &e.join(format!("a/{i:04}.txt")),
            pseudo_random(100 + (i * 7) % 200, i as u64),
        );
    }
    let daemon = Daemon::start(tmp.path(), &[("code", &e)]);
    daemon.wait_scanned();
    // Made after the scan, so that `z` comes after all of `a` in the change log.
    for i in 0..20u64 {
        write(&e.join(format!("z/{i:02}.txt")), format!("late {i}\n"));
    }
    daemon.wait_indexed(&["z", "z/19.txt"], &[]);
    let proxy = Proxy::to_port(daemon.port);
    // Past the two pages of changes (about 0.8 MiB each) and some 3,000 files of the first
    // (about 210 bytes each on the wire, asked for a few hundred per GET_FILES).
    proxy.cut_after_bytes(2 * MIB + MIB / 4);
    let r = tmp.path().join("r");
    std::fs::create_dir_all(&r).unwrap();
    let client = ClientSpec::new(&tmp.path().join("client"), &daemon, &[("code", &r)]);

    let z_seq = {
        let db = rusqlite::Connection::open_with_flags(
            &daemon.db,
            rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
        )
        .unwrap();
        db.query_row("SELECT seq FROM entries WHERE path = 'z'", [], |row| {
            row.get::<_, i64>(0)
        })
        .unwrap()
    };
    let cut = client.once(&proxy.url());
    assert!(
        !cut.status.success(),
        "the run through a tunnel cut after 3 MiB succeeded:\n{}",
        stderr(&cut)
    );
    assert_eq!(proxy.connections(), 1, "the run reconnected");
    let landed: Vec<String> = tree(&r.join("a"), &[]).into_keys().collect();
    assert!(
        !landed.is_empty() && landed.len() < FILES,
        "{} of the {FILES} files landed before the cut: the cut did not fall within the sync",
        landed.len()
    );
    assert!(
        !r.join("z").exists(),
        "the directory at the end of the second page was made before the cut, when {} files \
         had landed: the page was planned whole, not in parts",
        landed.len()
    );

    // What the cut run stored is past what landed and short of the unplanned rest.
    let stored = rusqlite::Connection::open_with_flags(
        &client.db,
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
    )
    .unwrap()
    .query_row("SELECT last_seq FROM dirs WHERE dir = 'code'", [], |row| {
        row.get::<_, i64>(0)
    })
    .unwrap_or(0);
    assert!(
        0 < stored && stored < z_seq,
        "the cut run stored sequence {stored}; `z` is {z_seq}, never planned"
    );

    proxy.cut_after_bytes(0);
    proxy.reset_counts();
    client.once_ok(&proxy.url());
    assert_same_tree(&e, &r, IGNORED);
    assert!(temp_files(&r).is_empty(), "temp files left on R");
    let again: Vec<String> = proxy
        .downloads()
        .into_iter()
        .filter(|d| landed.iter().any(|l| d == &format!("code/a/{l}")))
        .collect();
    assert!(
        again.is_empty(),
        "{} files that had landed before the cut were downloaded again, \
         e.g. {:?}",
        again.len(),
        &again[..again.len().min(3)]
    );
}
