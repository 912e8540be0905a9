//! End-to-end: the client reaches the daemon through a Unix socket (`--server unix:PATH`), as
//! it does on R through the socket `zync-daemon --tunnel` forwards, and refuses a socket that
//! another user could serve or replace (invariant 8).
//!
//! The test plays ssh's part: a Unix listener in a private temp directory whose connections
//! are forwarded to the daemon's TCP port.

use std::io::Read;
use std::net::{Shutdown, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

use crate::common::*;

const IGNORED: &[&str] = &["node_modules", ".git"];

/// The uid and gid of `nobody`, another user for the tests.
const NOBODY: u32 = 65534;

/// Forwards each connection to a Unix socket to the daemon's TCP port, as ssh's `-R
/// SOCKET:ADDR:PORT` does on R. Stops accepting on drop.
struct SocketForward {
    path: PathBuf,
    /// Connections accepted so far.
    accepted: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
}

impl SocketForward {
    fn start(path: &Path, port: u16) -> SocketForward {
        let listener = UnixListener::bind(path).expect("bind the test's socket");
        let accepted = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (count, stopping) = (accepted.clone(), stop.clone());
        std::thread::spawn(move || {
            for client in listener.incoming() {
                if stopping.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(client) = client else { break };
                count.fetch_add(1, Ordering::SeqCst);
                let Ok(upstream) = TcpStream::connect(("127.0.0.1", port)) else {
                    continue;
                };
                pump_both_ways(client, upstream);
            }
        });
        SocketForward {
            path: path.to_path_buf(),
            accepted,
            stop,
        }
    }

    fn accepted(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }
}

impl Drop for SocketForward {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wakes the accept loop so that it sees the stop.
        let _ = UnixStream::connect(&self.path);
    }
}

/// Copies bytes each way on threads of their own; an end's EOF is passed on as a shutdown.
fn pump_both_ways(client: UnixStream, upstream: TcpStream) {
    let (Ok(mut client_in), Ok(mut upstream_in)) = (client.try_clone(), upstream.try_clone())
    else {
        return;
    };
    let (mut client_out, mut upstream_out) = (client, upstream);
    std::thread::spawn(move || {
        let _ = std::io::copy(&mut client_in, &mut upstream_out);
        let _ = upstream_out.shutdown(Shutdown::Write);
    });
    std::thread::spawn(move || {
        let _ = std::io::copy(&mut upstream_in, &mut client_out);
        let _ = client_out.shutdown(Shutdown::Write);
    });
}

/// A directory with `mode`, made inside `parent`.
fn dir_with_mode(parent: &Path, name: &str, mode: u32) -> PathBuf {
    let dir = parent.join(name);
    std::fs::create_dir_all(&dir).expect("mkdir");
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(mode)).expect("chmod");
    dir
}

/// A daemon serving `e` as `code`, its state in `tmp/daemon`.
fn daemon_for(tmp: &Path, e: &Path) -> Daemon {
    let state = tmp.join("daemon");
    std::fs::create_dir_all(&state).expect("daemon state dir");
    Daemon::start(&state, &[("code", e)])
}

#[test]
fn a_client_syncs_through_a_unix_socket() {
    let tmp = tempfile::tempdir().expect("temp dir");
    let e = tmp.path().join("e");
    write(&e.join("hello.txt"), "through a socket\n");
    write(&e.join("sub/big.bin"), pseudo_random(2 << 20, 11));
    let daemon = daemon_for(tmp.path(), &e);
    let private = dir_with_mode(tmp.path(), "zync", 0o700);
    let socket = private.join("zync.sock");
    let forward = SocketForward::start(&socket, daemon.port);
    let server = format!("unix:{}", socket.display());

    let r = tmp.path().join("r");
    let client = ClientSpec::new(&tmp.path().join("client"), &daemon, &[("code", &r)]);
    client.once_ok(&server);
    assert_same_tree(&e, &r, IGNORED);
    assert!(
        forward.accepted() >= 1,
        "the client synced without using the socket"
    );

    // Loop mode follows a change through the socket too, and --status reaches the daemon.
    let running = client.spawn(&server, &tmp.path().join("client.log"));
    write(&e.join("later.txt"), "a change after the first sync\n");
    wait_same_tree(&e, &r, IGNORED);
    // The file lands before its change is recorded: wait for the record too, or stopping the
    // client now leaves R one change behind.
    wait_until("the loop client to record the change", || {
        client.status_json(&server)["in_sync"] == true
    });
    drop(running);
    let out = output_within_deadline({
        let mut cmd = client.command(&server);
        cmd.arg("--status");
        cmd
    });
    assert!(
        out.status.success(),
        "--status over the socket failed ({}):\n{}\n{}",
        out.status,
        stdout(&out),
        stderr(&out)
    );
    assert!(stdout(&out).contains(&server), "{}", stdout(&out));
}

#[test]
fn a_socket_in_a_directory_others_can_write_is_refused() {
    let tmp = tempfile::tempdir().expect("temp dir");
    let e = tmp.path().join("e");
    write(&e.join("secret.txt"), "must not cross\n");
    let daemon = daemon_for(tmp.path(), &e);
    let open = dir_with_mode(tmp.path(), "open", 0o777);
    let socket = open.join("zync.sock");
    let forward = SocketForward::start(&socket, daemon.port);

    let r = tmp.path().join("r");
    let client = ClientSpec::new(&tmp.path().join("client"), &daemon, &[("code", &r)]);
    let out = client.once(&format!("unix:{}", socket.display()));
    let err = stderr(&out);
    assert!(
        !out.status.success(),
        "the client used a socket in a world-writable directory:\n{err}"
    );
    assert!(
        err.contains(&open.display().to_string()) && err.contains("chmod 700"),
        "the refusal does not name the directory and the fix:\n{err}"
    );
    assert_eq!(
        forward.accepted(),
        0,
        "the client connected before checking the directory"
    );
    assert!(!r.join("secret.txt").exists(), "a file crossed anyway");

    // Loop mode gives up too, rather than retrying a setup only the user can fix.
    let out = output_within_deadline(client.command(&format!("unix:{}", socket.display())));
    assert!(!out.status.success(), "loop mode kept going");
}

#[test]
fn a_socket_served_by_another_user_is_refused() {
    assert!(
        is_root(),
        "this test runs a listener as user nobody and must run as root (CI's .ci/run does)"
    );
    let tmp = tempfile::tempdir().expect("temp dir");
    // nobody must reach its own directory inside the temp dir.
    std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(0o711))
        .expect("chmod the temp dir");
    let e = tmp.path().join("e");
    write(&e.join("secret.txt"), "must not cross\n");
    let daemon = daemon_for(tmp.path(), &e);
    // A directory nobody alone may write: the directory check passes, so the peer check must
    // refuse the socket.
    let theirs = dir_with_mode(tmp.path(), "theirs", 0o700);
    std::os::unix::fs::chown(&theirs, Some(NOBODY), Some(NOBODY)).expect("chown to nobody");
    let socket = theirs.join("zync.sock");
    let mut listener = listen_as_nobody(&socket);

    let r = tmp.path().join("r");
    let client = ClientSpec::new(&tmp.path().join("client"), &daemon, &[("code", &r)]);
    let out = client.once(&format!("unix:{}", socket.display()));
    let _ = listener.kill();
    let _ = listener.wait();
    let err = stderr(&out);
    assert!(
        !out.status.success(),
        "the client used a socket served by nobody:\n{err}"
    );
    assert!(
        err.contains(&socket.display().to_string()) && err.contains(&format!("uid {NOBODY}")),
        "the refusal does not name the socket and its owner:\n{err}"
    );
    assert!(!r.join("secret.txt").exists(), "a file crossed anyway");
}

/// A process of user nobody listening on `socket` (it never accepts: a connect succeeds
/// through the backlog, which is all the client's check needs).
fn listen_as_nobody(socket: &Path) -> Child {
    let python = Path::new("/usr/bin/python3");
    assert!(
        python.exists(),
        "{} is missing: install python3 (CI's .ci/run does)",
        python.display()
    );
    let mut child = Command::new(python)
        .args([
            "-c",
            "import socket,sys,time\ns=socket.socket(socket.AF_UNIX)\ns.bind(sys.argv[1])\ns.listen(8)\nprint('ready',flush=True)\ntime.sleep(120)",
        ])
        .arg(socket)
        .uid(NOBODY)
        .gid(NOBODY)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start a listener as nobody");
    let mut ready = [0u8; 5];
    let read = child.stdout.as_mut().map(|out| out.read_exact(&mut ready));
    assert!(
        matches!(read, Some(Ok(()))) && &ready == b"ready",
        "the listener as nobody did not start"
    );
    child
}
