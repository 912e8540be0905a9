//! End-to-end: another local user on E floods the daemon's port with connections that finish
//! their WebSocket upgrade (one cheap round trip) and then stay silent, as fast as it can,
//! while the real client reaches the daemon through a tunnel with a real round trip
//! (invariant 8: another user on E cannot starve a client). The tunnel's end on E is a
//! process of the daemon's own user (E's `ssh`; here the test's proxy), the flood is user
//! nobody's.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::common::proxy::Proxy;
use crate::common::*;

/// Opens connections to 127.0.0.1:PORT from THREADS threads for SECONDS seconds, sends each
/// a valid WebSocket upgrade, reads the 101 and keeps the socket open (the oldest beyond
/// KEEP are closed, so the flooder does not run out of descriptors). Prints `upgraded N`
/// after every 100 upgrades.
const FLOODER: &str = r#"
import resource, socket, sys, threading, time
port, threads, keep, seconds = (int(a) for a in sys.argv[1:5])
soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
try:
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
except (ValueError, OSError):
    pass
request = ("GET / HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nUpgrade: websocket\r\n"
           "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
           "Sec-WebSocket-Version: 13\r\n\r\n" % port).encode()
lock = threading.Lock()
upgraded = [0]
end = time.monotonic() + seconds

def flood():
    held = []
    while time.monotonic() < end:
        s = socket.socket()
        s.settimeout(2)
        try:
            s.connect(("127.0.0.1", port))
            s.sendall(request)
            answer = b""
            while b"\r\n\r\n" not in answer:
                chunk = s.recv(1024)
                if not chunk:
                    break
                answer += chunk
        except OSError:
            s.close()
            continue
        if not answer.startswith(b"HTTP/1.1 101"):
            s.close()
            continue
        held.append(s)
        if len(held) > keep:
            held.pop(0).close()
        with lock:
            upgraded[0] += 1
            if upgraded[0] % 100 == 0:
                print("upgraded", upgraded[0], flush=True)

workers = [threading.Thread(target=flood, daemon=True) for _ in range(threads)]
for w in workers:
    w.start()
for w in workers:
    w.join()
"#;

/// Threads of the flooder: thousands of upgrades a second on loopback. A few hundred a second
/// already kept the client out while every connection counted alike: its own connection sat
/// un-upgraded for a tunnel round trip, the first in line to be pushed out.
const THREADS: u32 = 2;
/// Sockets each flooder thread keeps open.
const KEEP: u32 = 200;
/// Latency the proxy adds to each chunk, each way: a real tunnel's.
const TUNNEL_DELAY: Duration = Duration::from_millis(40);
/// How long the real client may take to sync a small tree beside the flood: well under the
/// daemon's handshake deadline (5 s) times a few retries.
const SYNC_LIMIT: Duration = Duration::from_secs(10);

/// The flooder, run as user nobody; killed on drop.
struct Flooder {
    child: Child,
    /// Upgrades it has reported so far.
    upgraded: Arc<AtomicU64>,
}

impl Flooder {
    fn start(port: u16) -> Flooder {
        use std::os::unix::process::CommandExt;
        let python = Path::new("/usr/bin/python3");
        assert!(
            python.exists(),
            "{} is missing: install python3 (CI's .ci/run does)",
            python.display()
        );
        let seconds = (DEADLINE * 2).as_secs();
        let mut child = Command::new(python)
            .arg("-c")
            .arg(FLOODER)
            .args([port.to_string(), THREADS.to_string(), KEEP.to_string()])
            .arg(seconds.to_string())
            .current_dir("/")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .uid(65534)
            .gid(65534)
            .spawn()
            .expect("spawn the flooder");
        let upgraded = Arc::new(AtomicU64::new(0));
        let out = child.stdout.take().expect("the flooder's stdout");
        let seen = upgraded.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                if let Some(n) = line.strip_prefix("upgraded ") {
                    if let Ok(n) = n.trim().parse() {
                        seen.store(n, Ordering::SeqCst);
                    }
                }
            }
        });
        Flooder { child, upgraded }
    }

    fn upgraded(&self) -> u64 {
        self.upgraded.load(Ordering::SeqCst)
    }

    fn is_running(&mut self) -> bool {
        self.child.try_wait().ok().flatten().is_none()
    }
}

impl Drop for Flooder {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn another_user_s_flood_of_upgraded_connections_does_not_starve_the_real_client() {
    assert!(
        is_root(),
        "this test floods the daemon as user nobody and must run as root (CI's .ci/run does)"
    );
    let tmp = tempfile::tempdir().expect("temp dir");
    let e = tmp.path().join("e");
    write(&e.join("a.txt"), "hello\n");
    write(&e.join("src/main.rs"), "fn main() {}\n");
    write(&e.join("src/lib.rs"), "pub fn f() {}\n");
    let state = tmp.path().join("daemon");
    std::fs::create_dir_all(&state).expect("daemon state dir");
    let daemon = Daemon::start(&state, &[("code", &e)]);
    daemon.wait_scanned();

    let mut flooder = Flooder::start(daemon.port);
    wait_until("the flooder to upgrade its first 100 connections", || {
        flooder.upgraded() >= 100
    });

    let proxy = Proxy::to_port(daemon.port);
    proxy.delay(TUNNEL_DELAY);
    let r = tmp.path().join("r");
    let client = ClientSpec::new(&tmp.path().join("client"), &daemon, &[("code", &r)]);
    let mut once = client.command(&proxy.url());
    once.arg("--once");
    let (started, before) = (Instant::now(), flooder.upgraded());
    let out = output_within(once, SYNC_LIMIT);
    let took = started.elapsed();
    // While the client ran, not since the interpreter started.
    let rate = (flooder.upgraded() - before) as f64 / took.as_secs_f64();
    eprintln!("the flood upgraded {rate:.0} connections/s; the client ran for {took:?}");
    assert!(
        flooder.is_running() && rate > 200.0,
        "the flood ran at only {rate:.0} upgrades/s, or ended: the test proves nothing"
    );
    assert!(
        out.status.success(),
        "zync-client --once through a {TUNNEL_DELAY:?} tunnel failed ({}) beside another \
         user's flood of {rate:.0} upgraded connections/s:\n{}",
        out.status,
        stderr(&out)
    );
    assert_same_tree(&e, &r, &[]);
    assert!(
        proxy.connections() >= 1,
        "the client did not go through the tunnel's proxy"
    );
}
