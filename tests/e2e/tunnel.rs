//! End-to-end: `zync-daemon --tunnel` against a real sshd started by the test on loopback,
//! as a user on E would run it. The client talks only to the socket or port sshd opens for the tunnel, never to
//! the daemon's own port, so every sync here crossed the tunnel.
//!
//! Needs Debian's openssh-server (`/usr/sbin/sshd`) and openssh-client. Without them these
//! tests fail, saying what to install: a silently skipped tunnel test would prove nothing.

use std::net::{TcpListener, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::*;

const SSHD: &str = "/usr/sbin/sshd";
const IGNORED: &[&str] = &["node_modules", ".git"];

/// A throwaway sshd on 127.0.0.1, with its own host key, one authorised user key, and
/// everything (config, pid file, log) in a temp dir. Killed on drop.
struct Sshd {
    child: Option<Child>,
    port: u16,
    /// The private key it accepts.
    identity: PathBuf,
    /// Its stderr (`-e`).
    log: PathBuf,
}

impl Sshd {
    fn start(dir: &Path) -> Sshd {
        assert!(
            Path::new(SSHD).exists(),
            "{SSHD} is missing: the tunnel tests run a real sshd; install it with \
             `apt-get install openssh-server` (CI's .ci/run does)"
        );
        std::fs::create_dir_all(dir).expect("create the sshd dir");
        let host_key = dir.join("host_key");
        let identity = dir.join("user_key");
        keygen(&host_key);
        keygen(&identity);
        let authorized = dir.join("authorized_keys");
        std::fs::copy(identity.with_extension("pub"), &authorized).expect("authorized_keys");
        // As root, sshd refuses to start without its privilege separation directory, which
        // only the openssh-server service creates (on a fresh or container system it is absent).
        if is_root() {
            std::fs::create_dir_all("/run/sshd").expect("create /run/sshd");
            std::fs::set_permissions("/run/sshd", std::fs::Permissions::from_mode(0o755))
                .expect("chmod /run/sshd");
        }
        let log = dir.join("sshd.log");
        // Another program may take the free port before sshd binds it: try a few.
        for _ in 0..5 {
            let port = free_port();
            let config = dir.join("sshd_config");
            std::fs::write(
                &config,
                format!(
                    "ListenAddress 127.0.0.1\n\
                     Port {port}\n\
                     AddressFamily inet\n\
                     HostKey {host_key}\n\
                     PidFile {pid}\n\
                     AuthorizedKeysFile {authorized}\n\
                     StrictModes no\n\
                     UsePAM no\n\
                     PubkeyAuthentication yes\n\
                     PasswordAuthentication no\n\
                     KbdInteractiveAuthentication no\n\
                     PermitRootLogin prohibit-password\n\
                     AllowTcpForwarding yes\n\
                     AllowStreamLocalForwarding yes\n\
                     StreamLocalBindUnlink no\n\
                     GatewayPorts no\n",
                    host_key = host_key.display(),
                    pid = dir.join("sshd.pid").display(),
                    authorized = authorized.display(),
                ),
            )
            .expect("write sshd_config");
            let child = Command::new(SSHD)
                .arg("-D")
                .arg("-e")
                .arg("-f")
                .arg(&config)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(std::fs::File::create(&log).expect("sshd log"))
                .spawn()
                .expect("spawn sshd");
            let mut sshd = Sshd {
                child: Some(child),
                port,
                identity: identity.clone(),
                log: log.clone(),
            };
            let mut exited = false;
            wait_until("sshd to listen", || {
                exited = sshd
                    .child
                    .as_mut()
                    .is_some_and(|c| c.try_wait().ok().flatten().is_some());
                exited || sshd.log_text().contains("Server listening on 127.0.0.1")
            });
            if !exited {
                return sshd;
            }
            let text = sshd.log_text();
            assert!(
                text.contains("Address already in use"),
                "sshd did not start:\n{text}"
            );
        }
        panic!("sshd found no free port in 5 tries");
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The daemon arguments that open the tunnel through this sshd to `remote_port`, logging in
    /// with the private key `identity`.
    fn tunnel_args(&self, remote_port: u16, identity: &Path) -> Vec<String> {
        self.tunnel_args_to(
            &["--tunnel-remote-port".into(), remote_port.to_string()],
            identity,
        )
    }

    /// The daemon arguments that open the tunnel through this sshd, with `forward` choosing
    /// what it opens on "R", logging in with the private key `identity`.
    fn tunnel_args_to(&self, forward: &[String], identity: &Path) -> Vec<String> {
        let mut args: Vec<String> = vec!["--tunnel".into(), format!("{}@127.0.0.1", user_name())];
        args.extend_from_slice(forward);
        args.extend([
            "--ssh-port".into(),
            self.port.to_string(),
            "--ssh-option".into(),
            format!("IdentityFile={}", identity.display()),
            "--ssh-option".into(),
            "IdentitiesOnly=yes".into(),
            "--ssh-option".into(),
            "UserKnownHostsFile=/dev/null".into(),
            "--ssh-option".into(),
            "StrictHostKeyChecking=no".into(),
        ]);
        args
    }
}

impl Drop for Sshd {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn keygen(path: &Path) {
    let out = Command::new("ssh-keygen")
        .args([
            "-q",
            "-t",
            "ed25519",
            "-N",
            "",
            "-C",
            "zync-tunnel-test",
            "-f",
        ])
        .arg(path)
        .output()
        .expect("run ssh-keygen; install it with `apt-get install openssh-client`");
    assert!(out.status.success(), "ssh-keygen failed:\n{}", stderr(&out));
}

/// The user sshd lets in: the one running the test (sshd run by anyone else than root can
/// only log in its own user).
fn user_name() -> String {
    let out = Command::new("id").arg("-un").output().expect("run id -un");
    assert!(out.status.success(), "id -un failed:\n{}", stderr(&out));
    stdout(&out).trim().to_string()
}

/// A port nothing listens on right now.
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("bind a free port")
        .port()
}

/// A daemon serving `e` that opens the tunnel through `sshd` to `remote_port`, logging in with
/// the key sshd accepts.
fn tunnel_daemon(state: &Path, e: &Path, sshd: &Sshd, remote_port: u16) -> Daemon {
    tunnel_daemon_with_key(state, e, sshd, remote_port, &sshd.identity)
}

/// As [`tunnel_daemon`], logging in with the private key `identity`.
fn tunnel_daemon_with_key(
    state: &Path,
    e: &Path,
    sshd: &Sshd,
    remote_port: u16,
    identity: &Path,
) -> Daemon {
    std::fs::create_dir_all(state).expect("daemon state dir");
    let args = sshd.tunnel_args(remote_port, identity);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let daemon = Daemon::start_with(state, &[("code", e)], &args);
    assert_ne!(
        daemon.port, remote_port,
        "the daemon's own port must differ from the tunnel's, or the test proves nothing"
    );
    daemon
}

/// Waits until the daemon has logged "tunnel up" `times` times.
fn wait_tunnel_up(daemon: &Daemon, sshd: &Sshd, times: usize) {
    let start = Instant::now();
    while daemon.log_text().matches("tunnel up").count() < times {
        assert!(
            start.elapsed() < DEADLINE,
            "the tunnel did not come up (time {times}) within {DEADLINE:?}\n--- daemon:\n{}\n--- sshd:\n{}",
            daemon.log_text(),
            sshd.log_text()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A process as /proc shows it.
#[derive(Debug, Clone, PartialEq)]
struct Proc {
    pid: u32,
    command: String,
    state: char,
}

/// The processes whose parent is `parent`.
fn children(parent: u32) -> Vec<Proc> {
    let mut found = Vec::new();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return found;
    };
    for entry in entries.flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Some(p) = proc_stat(pid) else { continue };
        if p.1 == parent {
            found.push(p.0);
        }
    }
    found
}

/// `/proc/PID/stat`: the process and its parent's pid.
fn proc_stat(pid: u32) -> Option<(Proc, u32)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // "PID (COMMAND) STATE PPID ...", where COMMAND may hold spaces and parentheses.
    let open = stat.find('(')?;
    let close = stat.rfind(')')?;
    let command = stat.get(open + 1..close)?.to_string();
    let mut rest = stat.get(close + 1..)?.split_whitespace();
    let state = rest.next()?.chars().next()?;
    let ppid = rest.next()?.parse().ok()?;
    Some((
        Proc {
            pid,
            command,
            state,
        },
        ppid,
    ))
}

/// True while `pid` runs (a zombie, dead but not yet reaped, does not count).
fn running(pid: u32) -> bool {
    proc_stat(pid).is_some_and(|(p, _)| p.state != 'Z' && p.state != 'X')
}

/// The daemon's one live ssh child.
fn ssh_child(daemon: &Daemon) -> u32 {
    let mut pid = 0;
    wait_until("the daemon's ssh child", || {
        let live: Vec<Proc> = children(daemon.pid())
            .into_iter()
            .filter(|p| p.command == "ssh" && p.state != 'Z')
            .collect();
        pid = live.first().map_or(0, |p| p.pid);
        live.len() == 1
    });
    pid
}

/// True when something accepts TCP connections on 127.0.0.1:`port`.
fn accepts(port: u16) -> bool {
    TcpStream::connect_timeout(
        &format!("127.0.0.1:{port}").parse().expect("an address"),
        Duration::from_secs(2),
    )
    .is_ok()
}

#[test]
fn a_client_syncs_through_the_tunnel_the_daemon_opens() {
    let tmp = tempfile::tempdir().expect("temp dir");
    let sshd = Sshd::start(&tmp.path().join("sshd"));
    let e = tmp.path().join("e");
    write(&e.join("hello.txt"), "through the tunnel\n");
    write(&e.join("sub/big.bin"), pseudo_random(3 << 20, 6));
    let remote_port = free_port();
    let tunnel_url = format!("ws://127.0.0.1:{remote_port}");
    assert!(
        !accepts(remote_port),
        "port {remote_port} is in use before the tunnel exists"
    );

    let daemon = tunnel_daemon(&tmp.path().join("daemon"), &e, &sshd, remote_port);
    wait_tunnel_up(&daemon, &sshd, 1);
    let log = daemon.log_text();
    assert!(
        log.contains(&format!("-R {remote_port}:127.0.0.1:{}", daemon.port)),
        "the forward does not target the daemon's listen address:\n{log}"
    );
    assert!(
        log.contains("BatchMode=yes") && log.contains("ServerAliveInterval="),
        "ssh runs without the keep-alive and batch options:\n{log}"
    );
    assert!(
        sshd.log_text().contains("Accepted publickey"),
        "sshd did not see the daemon's login:\n{}",
        sshd.log_text()
    );

    let r = tmp.path().join("r");
    let client = ClientSpec::new(&tmp.path().join("client"), &daemon, &[("code", &r)]);
    client.once_ok(&tunnel_url);
    assert_same_tree(&e, &r, IGNORED);
}

#[test]
fn killing_ssh_makes_the_daemon_restart_it_and_sync_continues() {
    let tmp = tempfile::tempdir().expect("temp dir");
    let sshd = Sshd::start(&tmp.path().join("sshd"));
    let e = tmp.path().join("e");
    write(&e.join("before.txt"), "before the cut\n");
    let remote_port = free_port();
    let tunnel_url = format!("ws://127.0.0.1:{remote_port}");
    let daemon = tunnel_daemon(&tmp.path().join("daemon"), &e, &sshd, remote_port);
    wait_tunnel_up(&daemon, &sshd, 1);

    let r = tmp.path().join("r");
    let client = ClientSpec::new(&tmp.path().join("client"), &daemon, &[("code", &r)]);
    let mut running_client = client.spawn(&tunnel_url, &tmp.path().join("client.log"));
    wait_same_tree(&e, &r, IGNORED);

    let first = ssh_child(&daemon);
    // SAFETY: kill(2) on a pid we just found as the daemon's child.
    unsafe { libc::kill(first as i32, libc::SIGKILL) };
    wait_tunnel_up(&daemon, &sshd, 2);
    let second = ssh_child(&daemon);
    assert_ne!(first, second, "the daemon did not start a new ssh");
    let log = daemon.log_text();
    assert!(
        log.contains("ssh was killed by signal 9") && log.contains("tunnel: retrying in "),
        "the daemon did not log the exit and the retry:\n{log}"
    );

    write(&e.join("after.txt"), "after the cut\n");
    write(&e.join("before.txt"), "before the cut, changed after it\n");
    wait_same_tree(&e, &r, IGNORED);
    assert!(
        running_client.is_running(),
        "the client exited:\n{}",
        running_client.log_text()
    );
}

#[test]
fn ssh_ends_with_the_daemon_whether_stopped_or_killed() {
    let tmp = tempfile::tempdir().expect("temp dir");
    let sshd = Sshd::start(&tmp.path().join("sshd"));
    let e = tmp.path().join("e");
    write(&e.join("a.txt"), "a\n");
    for (how, signal) in [("SIGTERM", libc::SIGTERM), ("SIGKILL", libc::SIGKILL)] {
        let remote_port = free_port();
        let mut daemon = tunnel_daemon(
            &tmp.path().join(format!("daemon-{how}")),
            &e,
            &sshd,
            remote_port,
        );
        wait_tunnel_up(&daemon, &sshd, 1);
        let ssh = ssh_child(&daemon);
        assert!(accepts(remote_port), "the tunnel's port is closed while up");
        if signal == libc::SIGTERM {
            daemon.stop();
            assert!(
                daemon.log_text().contains("tunnel: stopped"),
                "the daemon did not stop the tunnel:\n{}",
                daemon.log_text()
            );
        } else {
            daemon.kill();
        }
        wait_until(
            &format!("ssh (pid {ssh}) to end after the daemon's {how}"),
            || !running(ssh),
        );
        wait_until(
            &format!("R's port {remote_port} to close after the daemon's {how}"),
            || !accepts(remote_port),
        );
    }
}

#[test]
fn a_taken_port_on_r_is_reported_and_retried_until_it_is_free() {
    let tmp = tempfile::tempdir().expect("temp dir");
    let sshd = Sshd::start(&tmp.path().join("sshd"));
    let e = tmp.path().join("e");
    write(&e.join("a.txt"), "a\n");
    let squatter = TcpListener::bind("127.0.0.1:0").expect("bind a port");
    let remote_port = squatter.local_addr().expect("its address").port();
    let daemon = tunnel_daemon(&tmp.path().join("daemon"), &e, &sshd, remote_port);
    wait_until("the daemon to report the refused forward", || {
        let log = daemon.log_text();
        log.contains("remote port forwarding failed")
            && log.contains("--tunnel-remote-port")
            && log.contains("retrying in")
    });
    assert!(
        !daemon.log_text().contains("tunnel up"),
        "a refused forward was reported as up:\n{}",
        daemon.log_text()
    );

    drop(squatter);
    wait_tunnel_up(&daemon, &sshd, 1);
    let r = tmp.path().join("r");
    let client = ClientSpec::new(&tmp.path().join("client"), &daemon, &[("code", &r)]);
    client.once_ok(&format!("ws://127.0.0.1:{remote_port}"));
    assert_same_tree(&e, &r, IGNORED);
}

#[test]
fn a_refused_login_never_prompts_and_says_how_to_fix_it() {
    let tmp = tempfile::tempdir().expect("temp dir");
    let sshd = Sshd::start(&tmp.path().join("sshd"));
    let stranger = tmp.path().join("stranger_key");
    keygen(&stranger);
    let e = tmp.path().join("e");
    std::fs::create_dir_all(&e).expect("e");
    let remote_port = free_port();
    let daemon = tunnel_daemon_with_key(
        &tmp.path().join("daemon"),
        &e,
        &sshd,
        remote_port,
        &stranger,
    );
    wait_until("the daemon to report the refused login", || {
        let log = daemon.log_text();
        log.contains("Permission denied") && log.contains("ssh-copy-id")
    });
    assert!(!accepts(remote_port), "a refused login opened the port");
}

#[test]
fn a_missing_ssh_is_a_clear_error_naming_openssh_client() {
    let tmp = tempfile::tempdir().expect("temp dir");
    let e = tmp.path().join("e");
    std::fs::create_dir_all(&e).expect("e");
    let db = tmp.path().join("sync.db");
    let base = |cmd: &mut Command| {
        cmd.args(["--host", "127.0.0.1", "--port", "0", "--db"])
            .arg(&db)
            .arg("--dirs")
            .arg(format!("code:{}", e.display()))
            .args(["--tunnel", "me@r"]);
    };
    let mut by_flag = command("zync-daemon");
    base(&mut by_flag);
    by_flag.args(["--ssh-command", "/nonexistent/bin/ssh"]);
    let mut by_env = command("zync-daemon");
    base(&mut by_env);
    by_env.env("ZYNC_SSH", "zync-no-such-ssh");
    for cmd in [by_flag, by_env] {
        let out = output_within_deadline(cmd);
        let err = stderr(&out);
        assert!(
            !out.status.success(),
            "the daemon started without ssh:\n{err}"
        );
        assert!(
            err.contains("install openssh-client"),
            "no install hint in:\n{err}"
        );
    }
    assert!(
        !db.exists() && !tmp.path().join("zync.token").exists(),
        "the daemon made its database or token before refusing"
    );
}

/// What user nobody gets when connecting to the Unix socket `path`: `Ok` when connected, or
/// the error Python reports.
fn connect_as_nobody(path: &Path) -> Result<(), String> {
    use std::os::unix::process::CommandExt;
    let python = Path::new("/usr/bin/python3");
    assert!(
        python.exists(),
        "{} is missing: install python3 (CI's .ci/run does)",
        python.display()
    );
    let mut cmd = Command::new(python);
    cmd.args([
        "-c",
        "import socket,sys\ns=socket.socket(socket.AF_UNIX)\ns.connect(sys.argv[1])\nprint('connected')",
    ])
    .arg(path)
    .uid(65534)
    .gid(65534);
    let out = output_within_deadline(cmd);
    if out.status.success() && stdout(&out).contains("connected") {
        Ok(())
    } else {
        Err(stderr(&out))
    }
}

#[test]
fn the_socket_forward_is_private_to_the_user_and_carries_the_sync() {
    use std::os::unix::fs::{FileTypeExt, MetadataExt};
    assert!(
        is_root(),
        "this test connects as user nobody and must run as root (CI's .ci/run does)"
    );
    let tmp = tempfile::tempdir().expect("temp dir");
    // Everything on the way to the socket's directory is open to nobody, so that the
    // directory the daemon makes is all that keeps nobody out.
    std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(0o711))
        .expect("chmod the temp dir");
    let sshd = Sshd::start(&tmp.path().join("sshd"));
    let e = tmp.path().join("e");
    write(&e.join("hello.txt"), "through the socket\n");
    write(&e.join("sub/big.bin"), pseudo_random(2 << 20, 9));
    // "R's home": the tunnel would use ~/.zync/zync.sock there; the test keeps the socket out
    // of the real home directory of the user running it.
    let home = tmp.path().join("rhome");
    std::fs::create_dir_all(&home).expect("R's home");
    std::fs::set_permissions(&home, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let socket = home.join(".zync/zync.sock");
    let forward = ["--tunnel-socket".to_string(), socket.display().to_string()];
    let state = tmp.path().join("daemon");
    std::fs::create_dir_all(&state).expect("daemon state dir");
    let args = sshd.tunnel_args_to(&forward, &sshd.identity);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let daemon = Daemon::start_with(&state, &[("code", &e)], &args);
    wait_tunnel_up(&daemon, &sshd, 1);

    let log = daemon.log_text();
    let server = format!("unix:{}", socket.display());
    assert!(
        log.contains(&format!(
            "-R {}:127.0.0.1:{}",
            socket.display(),
            daemon.port
        )) && log.contains("StreamLocalBindUnlink=yes"),
        "the forward does not go from the socket to the daemon:\n{log}"
    );
    assert!(
        log.contains(&format!("--server {server}")),
        "the daemon does not tell R's client what to use:\n{log}"
    );
    let meta = std::fs::symlink_metadata(&socket).expect("the socket exists on R");
    assert!(
        meta.file_type().is_socket(),
        "{} is not a socket",
        socket.display()
    );
    let dir = std::fs::metadata(home.join(".zync")).expect("its directory");
    assert_eq!(
        dir.permissions().mode() & 0o777,
        0o700,
        "the socket's directory is open to other users"
    );
    // SAFETY: geteuid cannot fail.
    assert_eq!(dir.uid(), unsafe { libc::geteuid() });

    let r = tmp.path().join("r");
    let client = ClientSpec::new(&tmp.path().join("client"), &daemon, &[("code", &r)]);
    client.once_ok(&server);
    assert_same_tree(&e, &r, IGNORED);

    // Another user on R cannot even connect. The same helper does connect to a socket that is
    // open to it, so the refusal is the directory's doing.
    let denied = connect_as_nobody(&socket).expect_err("nobody connected to the tunnel's socket");
    assert!(denied.contains("Permission denied"), "{denied}");
    let open_dir = tmp.path().join("open");
    std::fs::create_dir_all(&open_dir).expect("mkdir");
    std::fs::set_permissions(&open_dir, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let open = std::os::unix::net::UnixListener::bind(open_dir.join("open.sock")).expect("bind");
    std::fs::set_permissions(
        open_dir.join("open.sock"),
        std::fs::Permissions::from_mode(0o666),
    )
    .expect("chmod the open socket");
    connect_as_nobody(&open_dir.join("open.sock")).expect("nobody reaches an open socket");
    drop(open);

    // A restarted ssh finds its old socket on R (sshd here keeps StreamLocalBindUnlink no)
    // and forwards again.
    let first = ssh_child(&daemon);
    // SAFETY: kill(2) on a pid we just found as the daemon's child.
    unsafe { libc::kill(first as i32, libc::SIGKILL) };
    wait_tunnel_up(&daemon, &sshd, 2);
    write(&e.join("after.txt"), "after the restart\n");
    once_until(
        &client,
        &server,
        "after.txt to reach R through the new forward",
        || same_tree(&e, &r, IGNORED),
    );
}
