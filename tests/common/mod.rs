//! Test harness for the end-to-end tests: builds and runs the real `zync-daemon` and
//! `zync-client` binaries on temp directories and loopback ports, and waits on conditions
//! with deadlines (never a bare sleep).
#![allow(dead_code)]

pub mod peer;
pub mod proxy;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

/// How long any condition may take before a test fails. Generous: CI machines are shared.
pub const DEADLINE: Duration = Duration::from_secs(30);

/// The directory holding the workspace's binaries, built once per test process.
/// `CARGO_BIN_EXE_*` exists only for a package's own binaries, so build the members' binaries
/// with the same cargo and profile (as assert_cmd/escargot do).
pub fn bin_dir() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let status = Command::new(cargo)
            .args([
                "build",
                "--quiet",
                "-p",
                "zync-daemon",
                "-p",
                "zync-client",
                "-p",
                "zync-apply",
                "--bins",
            ])
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .status()
            .expect("cannot run cargo to build the binaries");
        assert!(
            status.success(),
            "building zync-daemon, zync-client and zync-apply failed"
        );
        // tests/… executable lives in target/<profile>/deps/
        let exe = std::env::current_exe().expect("current_exe");
        exe.parent()
            .and_then(Path::parent)
            .expect("target dir")
            .to_path_buf()
    })
}

/// A command for one of the workspace binaries.
pub fn command(name: &str) -> Command {
    let path = bin_dir().join(name);
    assert!(
        path.exists(),
        "{} is missing; run `cargo test --workspace`",
        path.display()
    );
    let mut cmd = Command::new(path);
    cmd.env_remove("ZYNC_TOKEN");
    cmd.env_remove("RUST_LOG");
    no_user_config(&mut cmd);
    cmd
}

/// Points the binaries' default config files (`~/.config/zync/*.toml`) at a directory that
/// does not exist, so a config file of the user running the tests never changes them.
pub fn no_user_config(cmd: &mut Command) {
    cmd.env(
        "XDG_CONFIG_HOME",
        std::env::temp_dir().join(format!("zync-tests-no-config-{}", std::process::id())),
    );
}

/// Makes `cmd` run under umask `mask`, whatever the test process's is.
pub fn with_umask(cmd: &mut Command, mask: u32) -> &mut Command {
    use std::os::unix::process::CommandExt;
    // SAFETY: umask is async-signal-safe and cannot fail, as pre_exec requires of its closure.
    unsafe {
        cmd.pre_exec(move || {
            libc::umask(mask as libc::mode_t);
            Ok(())
        })
    }
}

/// Polls `cond` until it holds, failing the test with `what` after [`DEADLINE`].
pub fn wait_until(what: &str, cond: impl FnMut() -> bool) {
    wait_until_else(what, cond, String::new);
}

/// As [`wait_until`], adding `context()` (such as the logs' last lines) to the failure.
pub fn wait_until_else(what: &str, mut cond: impl FnMut() -> bool, context: impl Fn() -> String) {
    let start = Instant::now();
    while !cond() {
        if start.elapsed() >= DEADLINE {
            panic!(
                "timed out after {DEADLINE:?} waiting for: {what}\n{}",
                context()
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The last `n` lines of `text`.
pub fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// A running daemon; killed on drop.
pub struct Daemon {
    child: Option<Child>,
    /// Its port on 127.0.0.1.
    pub port: u16,
    /// The database file.
    pub db: PathBuf,
    /// The token file.
    pub token_file: PathBuf,
    /// Its stderr, captured to a file.
    pub log: PathBuf,
    args: Vec<String>,
    /// Run as this uid/gid instead of the test's user (permissions do not stop root).
    pub user: Option<u32>,
    /// A copy of the daemon binary that `user` can execute (the build directory may not be
    /// reachable by other users).
    exe: Option<PathBuf>,
    /// Run in a mount namespace of its own, with a tmpfs of this size (`mount -o size=`) at this
    /// path, which only the daemon sees.
    tmpfs: Option<(PathBuf, String)>,
    /// Run under this umask instead of the test process's.
    umask: Option<u32>,
}

impl Daemon {
    /// Starts a daemon serving `dirs` with its database and token in `state`.
    pub fn start(state: &Path, dirs: &[(&str, &Path)]) -> Daemon {
        Daemon::start_with(state, dirs, &[])
    }

    /// A state directory `tmp/state` that a daemon run as nobody may use
    /// ([`Daemon::start_as_nobody`]): `tmp` readable by all, `state` writable by all and
    /// sticky, as /tmp is (zync refuses a database in a directory every user may write
    /// without the sticky bit).
    pub fn state_for_nobody(tmp: &Path) -> PathBuf {
        std::fs::set_permissions(tmp, std::fs::Permissions::from_mode(0o755)).unwrap();
        let state = tmp.join("state");
        std::fs::create_dir(&state).unwrap();
        std::fs::set_permissions(&state, std::fs::Permissions::from_mode(0o1777)).unwrap();
        state
    }

    /// As [`Daemon::start`], but the daemon runs as user `nobody` (65534), so that file
    /// permissions apply to it even when the tests run as root. `state` must be writable by it
    /// ([`Daemon::state_for_nobody`]).
    pub fn start_as_nobody(state: &Path, dirs: &[(&str, &Path)]) -> Daemon {
        Daemon::start_with_user(state, dirs, &[], Some(65534))
    }

    /// As [`Daemon::start`], but the daemon runs under umask `mask`.
    pub fn start_with_umask(state: &Path, dirs: &[(&str, &Path)], mask: u32) -> Daemon {
        let mut daemon = Daemon::unlaunched(state, dirs, &[], None);
        daemon.umask = Some(mask);
        daemon.launch(0);
        daemon
    }

    /// As [`Daemon::start`], with extra command-line arguments.
    pub fn start_with(state: &Path, dirs: &[(&str, &Path)], extra: &[&str]) -> Daemon {
        Daemon::start_with_user(state, dirs, extra, None)
    }

    fn start_with_user(
        state: &Path,
        dirs: &[(&str, &Path)],
        extra: &[&str],
        user: Option<u32>,
    ) -> Daemon {
        let mut daemon = Daemon::unlaunched(state, dirs, extra, user);
        daemon.launch(0);
        daemon
    }

    /// A daemon with its database and token in `state`, not started yet.
    fn unlaunched(
        state: &Path,
        dirs: &[(&str, &Path)],
        extra: &[&str],
        user: Option<u32>,
    ) -> Daemon {
        let mut args: Vec<String> = vec![
            "--host".into(),
            "127.0.0.1".into(),
            "--log-level".into(),
            "debug".into(),
        ];
        args.push("--db".into());
        args.push(state.join("sync.db").display().to_string());
        args.push("--dirs".into());
        for (name, path) in dirs {
            args.push(format!("{name}:{}", path.display()));
        }
        args.extend(extra.iter().map(|s| s.to_string()));
        Daemon {
            child: None,
            port: 0,
            db: state.join("sync.db"),
            token_file: state.join("zync.token"),
            log: state.join("daemon.log"),
            args,
            user,
            exe: user.map(|_| {
                let exe = state.join("zync-daemon");
                std::fs::copy(bin_dir().join("zync-daemon"), &exe).expect("copy zync-daemon");
                std::fs::set_permissions(&exe, std::fs::Permissions::from_mode(0o755))
                    .expect("chmod zync-daemon");
                exe
            }),
            tmpfs: None,
            umask: None,
        }
    }

    /// Starts a daemon with its database at `db` (its token `zync.token` beside it) and its
    /// stderr in `log`, wherever those are: inside a served directory, or reached through a
    /// symlink. `db` is passed to the daemon exactly as given.
    pub fn start_at(db: &Path, log: &Path, dirs: &[(&str, &Path)], extra: &[&str]) -> Daemon {
        let mut args: Vec<String> = vec![
            "--host".into(),
            "127.0.0.1".into(),
            "--log-level".into(),
            "debug".into(),
            "--db".into(),
            db.display().to_string(),
            "--dirs".into(),
        ];
        for (name, path) in dirs {
            args.push(format!("{name}:{}", path.display()));
        }
        args.extend(extra.iter().map(|s| s.to_string()));
        let mut daemon = Daemon {
            child: None,
            port: 0,
            db: db.to_path_buf(),
            token_file: db.with_file_name("zync.token"),
            log: log.to_path_buf(),
            args,
            user: None,
            exe: None,
            tmpfs: None,
            umask: None,
        };
        daemon.launch(0);
        daemon
    }

    /// As [`Daemon::start`], but the daemon runs in a mount namespace of its own where `at` is
    /// a tmpfs of `size` (`8m`, say): a small disk for it alone. `unshare --user
    /// --map-root-user` needs no privileges where user namespaces are allowed (and none are
    /// needed as root).
    pub fn start_with_tmpfs(state: &Path, dirs: &[(&str, &Path)], at: &Path, size: &str) -> Daemon {
        std::fs::create_dir_all(at).expect("the tmpfs mount point");
        let mut daemon = Daemon::unlaunched(state, dirs, &[], None);
        daemon.tmpfs = Some((at.to_path_buf(), size.to_string()));
        daemon.launch(0);
        daemon
    }

    /// Starts the process (port 0 picks a free one) and waits until it listens.
    fn launch(&mut self, port: u16) {
        let log = std::fs::File::create(&self.log).expect("create daemon log");
        let mut cmd = match (&self.exe, &self.tmpfs) {
            (Some(exe), _) => Command::new(exe),
            (None, None) => command("zync-daemon"),
            (None, Some((at, size))) => {
                let script =
                    r#"mount -t tmpfs -o size="$ZT_SIZE" zync-test "$ZT_AT" || exit 97; exec "$@""#;
                let mut cmd = in_mount_namespace(script, bin_dir().join("zync-daemon"));
                cmd.env("ZT_AT", at)
                    .env("ZT_SIZE", size)
                    .env_remove("ZYNC_TOKEN");
                cmd
            }
        };
        no_user_config(&mut cmd);
        cmd.args(&self.args)
            .args(["--port", &port.to_string()])
            .stdout(Stdio::null())
            .stderr(log);
        if let Some(id) = self.user {
            use std::os::unix::process::CommandExt;
            cmd.uid(id).gid(id);
        }
        if let Some(mask) = self.umask {
            with_umask(&mut cmd, mask);
        }
        let child = spawn_retrying_busy(&mut cmd, "zync-daemon");
        self.child = Some(child);
        let mut found = None;
        wait_until("the daemon to listen", || {
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                panic!("zync-daemon exited with {status}:\n{}", self.log_text());
            }
            found = listening_port(&self.log);
            found.is_some()
        });
        self.port = found.unwrap_or_default();
    }

    /// The daemon process's id (0 when it is not running).
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }

    /// The daemon's URL.
    pub fn url(&self) -> String {
        format!("ws://127.0.0.1:{}", self.port)
    }

    /// The daemon's stderr so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits until the startup scan is done (the daemon logs it).
    pub fn wait_scanned(&self) {
        wait_until("the daemon's startup scan", || {
            self.log_text().contains("startup scan complete")
        });
    }

    /// Waits until the daemon's index holds each of `live` (paths in any served directory) and
    /// none of `gone`, read from its database: changes made on E in one go are then all
    /// recorded, so one sync sees them together.
    pub fn wait_indexed(&self, live: &[&str], gone: &[&str]) {
        let count = |path: &str, deleted: i64| {
            rusqlite::Connection::open_with_flags(
                &self.db,
                rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
            )
            .and_then(|db| {
                db.query_row(
                    "SELECT count(*) FROM entries WHERE path = ?1 AND deleted = ?2",
                    rusqlite::params![path, deleted],
                    |row| row.get::<_, i64>(0),
                )
            })
            .unwrap_or(0)
        };
        wait_until("the daemon to index E's changes", || {
            live.iter().all(|p| count(p, 0) > 0) && gone.iter().all(|p| count(p, 0) == 0)
        });
    }

    /// Waits until the index holds `sha` for `path` (in any served directory): a client asking
    /// earlier would be told the file is stale, and ask again.
    pub fn wait_indexed_as(&self, path: &str, sha: &str) {
        wait_until("the daemon to index the edit", || {
            rusqlite::Connection::open_with_flags(
                &self.db,
                rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
            )
            .and_then(|db| {
                db.query_row(
                    "SELECT sha256 FROM entries WHERE path = ?1 AND deleted = 0",
                    [path],
                    |row| row.get::<_, Option<String>>(0),
                )
            })
            .is_ok_and(|indexed| indexed.as_deref() == Some(sha))
        });
    }

    /// Stops the daemon with SIGTERM and waits for it.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
            let start = Instant::now();
            while child.try_wait().ok().flatten().is_none() {
                if start.elapsed() > DEADLINE {
                    let _ = child.kill();
                    panic!("zync-daemon did not stop on SIGTERM");
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }

    /// Kills the daemon with SIGKILL.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the daemon again on the same port, database and directories.
    pub fn restart(&mut self) {
        self.stop();
        let port = self.port;
        self.launch(port);
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The port a daemon logged in `log` that it listens on, once it has.
pub fn listening_port(log: &Path) -> Option<u16> {
    let file = std::fs::File::open(log).ok()?;
    BufReader::new(file)
        .lines()
        .map_while(Result::ok)
        .find_map(|line| {
            let rest = &line[line.find("listening on ws://")? + "listening on ws://".len()..];
            rest.split(|c: char| c.is_whitespace())
                .next()?
                .rsplit(':')
                .next()?
                .parse()
                .ok()
        })
}

/// A client's settings: its database, token file and mappings.
pub struct ClientSpec {
    /// The client database.
    pub db: PathBuf,
    /// The token file (a copy of the daemon's).
    pub token_file: PathBuf,
    /// NAME:LOCAL_PATH mappings.
    pub dirs: Vec<(String, PathBuf)>,
}

impl ClientSpec {
    /// A client with its state in `state`, holding a copy of the daemon's token.
    pub fn new(state: &Path, daemon: &Daemon, dirs: &[(&str, &Path)]) -> ClientSpec {
        std::fs::create_dir_all(state).expect("client state dir");
        let token_file = state.join("client.token");
        std::fs::copy(&daemon.token_file, &token_file).expect("copy the daemon's token");
        std::fs::set_permissions(&token_file, std::fs::Permissions::from_mode(0o600))
            .expect("chmod");
        ClientSpec {
            db: state.join("sync_client.db"),
            token_file,
            dirs: dirs
                .iter()
                .map(|(n, p)| (n.to_string(), p.to_path_buf()))
                .collect(),
        }
    }

    /// The client command for `daemon`, without `--once`.
    pub fn command(&self, url: &str) -> Command {
        let mut cmd = command("zync-client");
        cmd.args(["--server", url, "--log-level", "debug", "--db"])
            .arg(&self.db)
            .arg("--token-file")
            .arg(&self.token_file)
            .arg("--dirs");
        for (name, path) in &self.dirs {
            cmd.arg(format!("{name}:{}", path.display()));
        }
        cmd
    }

    /// Runs `zync-client --once` and returns its output.
    pub fn once(&self, url: &str) -> Output {
        self.command(url)
            .arg("--once")
            .output()
            .expect("run zync-client --once")
    }

    /// Runs `--once` and fails the test unless it succeeded.
    pub fn once_ok(&self, url: &str) -> Output {
        let out = self.once(url);
        assert!(
            out.status.success(),
            "zync-client --once failed ({}):\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        out
    }

    /// Runs `zync-client --once`, which must end in sync having kept edits made on R as
    /// conflict copies (exit code 3).
    pub fn once_conflicts(&self, url: &str) -> Output {
        let out = self.once(url);
        assert_eq!(
            out.status.code(),
            Some(3),
            "zync-client --once should have kept conflict copies (exit 3):\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        out
    }

    /// Runs `zync-client --update-upstream --json`, which must succeed, and returns its summary
    /// (`session_id`, null when nothing was sent; `files`, `bytes`, `conflicts`, `skipped`).
    pub fn push_json(&self, url: &str) -> serde_json::Value {
        let mut cmd = self.command(url);
        cmd.args(["--update-upstream", "--json"]);
        let out = run_ok(cmd);
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
            panic!(
                "the push summary is not JSON ({e}):\n{}\nstderr:\n{}",
                stdout(&out),
                stderr(&out)
            )
        })
    }

    /// `zync-client --status --json` (its exit code says whether R is in sync; any is
    /// accepted here): the client's state as it reports it.
    pub fn status_json(&self, url: &str) -> serde_json::Value {
        let mut cmd = self.command(url);
        cmd.args(["--status", "--json"]);
        let out = output_within_deadline(cmd);
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
            panic!(
                "--status --json printed no JSON ({e}; {}):\n{}\nstderr:\n{}",
                out.status,
                stdout(&out),
                stderr(&out)
            )
        })
    }

    /// Starts the client in loop mode; the process is killed when the handle drops.
    pub fn spawn(&self, url: &str, log: &Path) -> Running {
        let file = std::fs::File::create(log).expect("client log");
        let child = self
            .command(url)
            .stdout(Stdio::null())
            .stderr(file)
            .spawn()
            .expect("spawn zync-client");
        Running {
            child: Some(child),
            log: log.to_path_buf(),
        }
    }
}

/// A client in loop mode; killed on drop.
pub struct Running {
    child: Option<Child>,
    /// Its stderr.
    pub log: PathBuf,
}

impl Running {
    /// Its stderr so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }

    /// Sends a signal and waits for the exit; returns the exit code.
    pub fn signal_and_wait(&mut self, signal: i32) -> Option<i32> {
        let mut child = self.child.take()?;
        unsafe { libc::kill(child.id() as i32, signal) };
        let start = Instant::now();
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                return status.code();
            }
            if start.elapsed() > DEADLINE {
                let _ = child.kill();
                panic!("zync-client did not exit on signal {signal}");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// True while the process runs.
    pub fn is_running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| c.try_wait().ok().flatten().is_none())
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// One entry of a directory tree as the tests compare it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Node {
    /// A file: sha256 and permission bits.
    File { sha256: String, mode: u32 },
    /// A directory.
    Dir,
    /// A symlink and its target.
    Symlink(String),
}

/// Everything under `root` (not following symlinks), by relative path, skipping any path
/// with a component in `skip`.
pub fn tree(root: &Path, skip: &[&str]) -> BTreeMap<String, Node> {
    let mut out = BTreeMap::new();
    walk(root, root, skip, &mut out);
    out
}

fn walk(root: &Path, dir: &Path, skip: &[&str], out: &mut BTreeMap<String, Node>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().to_string();
        if skip.contains(&name.as_str()) {
            continue;
        }
        let path = entry.path();
        let rel = path
            .strip_prefix(root)
            .expect("under root")
            .to_string_lossy()
            .to_string();
        let Ok(meta) = std::fs::symlink_metadata(&path) else {
            continue;
        };
        if meta.file_type().is_symlink() {
            let target = std::fs::read_link(&path).map(|t| t.to_string_lossy().to_string());
            out.insert(rel, Node::Symlink(target.unwrap_or_default()));
        } else if meta.is_dir() {
            out.insert(rel, Node::Dir);
            walk(root, &path, skip, out);
        } else if meta.is_file() {
            let Ok(data) = std::fs::read(&path) else {
                continue;
            };
            out.insert(
                rel,
                Node::File {
                    sha256: sha256(&data),
                    mode: meta.permissions().mode() & 0o777,
                },
            );
        }
    }
}

/// Hex sha256.
pub fn sha256(data: &[u8]) -> String {
    Sha256::digest(data)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// True when the two trees are equal (skipping `skip`).
pub fn same_tree(a: &Path, b: &Path, skip: &[&str]) -> bool {
    tree(a, skip) == tree(b, skip)
}

/// Fails with a readable difference unless the trees are equal.
pub fn assert_same_tree(e: &Path, r: &Path, skip: &[&str]) {
    let (te, tr) = (tree(e, skip), tree(r, skip));
    if te != tr {
        let mut diff = String::new();
        for (k, v) in &te {
            match tr.get(k) {
                None => diff.push_str(&format!("  missing on R: {k} ({v:?})\n")),
                Some(w) if w != v => diff.push_str(&format!("  differs: {k}: E {v:?}, R {w:?}\n")),
                _ => {}
            }
        }
        for k in tr.keys().filter(|k| !te.contains_key(*k)) {
            diff.push_str(&format!("  only on R: {k}\n"));
        }
        panic!("trees differ:\n{diff}");
    }
}

/// A daemon serving E as `code` and a loop client mirroring it into R.
pub struct Mirror {
    /// The daemon.
    pub daemon: Daemon,
    /// R's copy.
    pub r: PathBuf,
    /// The loop client's settings.
    pub client: ClientSpec,
    /// The loop client.
    pub running: Running,
    /// The proxy the client reaches the daemon through, if any.
    _proxy: Option<proxy::Proxy>,
}

impl Mirror {
    /// Starts a loop client mirroring `daemon`'s `code` (served from `e`) into `tmp/r`, its
    /// state under `tmp/client`; returns once R has what E has.
    pub fn start(tmp: &Path, daemon: Daemon, e: &Path) -> Mirror {
        Mirror::start_with(tmp, daemon, e, None)
    }

    /// As [`Mirror::start`], the client reaching the daemon through a proxy of this test's
    /// user: for a daemon run as another user, whose server the client refuses.
    pub fn start_through_proxy(tmp: &Path, daemon: Daemon, e: &Path) -> Mirror {
        let proxy = proxy::Proxy::to_port(daemon.port);
        Mirror::start_with(tmp, daemon, e, Some(proxy))
    }

    fn start_with(tmp: &Path, daemon: Daemon, e: &Path, proxy: Option<proxy::Proxy>) -> Mirror {
        daemon.wait_scanned();
        let r = tmp.join("r");
        let client = ClientSpec::new(&tmp.join("client"), &daemon, &[("code", &r)]);
        let url = proxy
            .as_ref()
            .map_or_else(|| daemon.url(), proxy::Proxy::url);
        let running = client.spawn(&url, &tmp.join("client.log"));
        wait_same_tree(e, &r, &[]);
        Mirror {
            daemon,
            r,
            client,
            running,
            _proxy: proxy,
        }
    }
}

/// Waits until R's tree equals E's, printing the difference on timeout.
pub fn wait_same_tree(e: &Path, r: &Path, skip: &[&str]) {
    let start = Instant::now();
    while !same_tree(e, r, skip) {
        if start.elapsed() > DEADLINE {
            assert_same_tree(e, r, skip);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A memory figure of process `pid` from `/proc/PID/status` (`"VmRSS"` resident now, `"VmHWM"`
/// its peak so far), in bytes; `None` once it has exited.
pub fn memory_of(pid: u32, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    Some(kb * 1024)
}

/// Writes a file, creating parents.
pub fn write(path: &Path, data: impl AsRef<[u8]>) {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).expect("create parents");
    }
    std::fs::write(path, data).expect("write file");
}

/// Deterministic pseudo-random bytes (xorshift), so big files need no RNG crate.
pub fn pseudo_random(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.max(1);
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(len);
    out
}

/// Names of conflict copies in a directory.
pub fn conflict_copies(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .map(|rd| {
            rd.flatten()
                .map(|e| e.file_name().to_string_lossy().to_string())
                .filter(|n| n.contains(".zync-conflict-"))
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

/// Runs `zync-client --once` until `cond` holds after a run (E's watcher may not have seen a
/// change yet), failing after [`DEADLINE`]. Every run must succeed. Returns all runs' stderr.
pub fn once_until(
    client: &ClientSpec,
    url: &str,
    what: &str,
    mut cond: impl FnMut() -> bool,
) -> String {
    let mut logs = String::new();
    wait_until(what, || {
        // In sync, with or without conflict copies kept (exit 0 or 3).
        let out = client.once(url);
        assert!(
            matches!(out.status.code(), Some(0 | 3)),
            "zync-client --once failed ({}):\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        logs.push_str(&String::from_utf8_lossy(&out.stderr));
        cond()
    });
    logs
}

/// Whether the tests run as root (those that act as another local user, `nobody`, need it).
pub fn is_root() -> bool {
    // SAFETY: geteuid cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// Runs a command that must exit by itself, killing it and failing after [`DEADLINE`].
pub fn output_within_deadline(cmd: Command) -> Output {
    output_within(cmd, DEADLINE)
}

/// How long a command's output may stay open once it exited (or was killed): only a process
/// it left behind holds it longer, and the test fails then instead of hanging on it.
const OUTPUT_GRACE: Duration = Duration::from_secs(10);

/// Runs a command that must exit by itself, killing it and failing after `deadline`. Its
/// output is read as it comes: a command that writes more than a pipe holds (a debug log)
/// would otherwise block on its write and never exit. A process the command left running
/// with its output open fails the test [`OUTPUT_GRACE`] after the command exited.
pub fn output_within(cmd: Command, deadline: Duration) -> Output {
    output_within_grace(cmd, deadline, OUTPUT_GRACE)
}

/// [`output_within`], with the time the output may stay open after the command exited.
pub fn output_within_grace(mut cmd: Command, deadline: Duration, grace: Duration) -> Output {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let drain = |pipe: Option<Box<dyn std::io::Read + Send>>| {
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut bytes = Vec::new();
            if let Some(mut pipe) = pipe {
                let _ = pipe.read_to_end(&mut bytes);
            }
            let _ = tx.send(bytes);
        });
        rx
    };
    let stdout = drain(child.stdout.take().map(|p| Box::new(p) as _));
    let stderr = drain(child.stderr.take().map(|p| Box::new(p) as _));
    let start = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            break Some(status);
        }
        if start.elapsed() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let ended = Instant::now();
    let collect = |pipe: std::sync::mpsc::Receiver<Vec<u8>>, name: &str| {
        let left = grace.saturating_sub(ended.elapsed());
        pipe.recv_timeout(left).unwrap_or_else(|_| {
            panic!(
                "{cmd:?} {} but its {name} was still open {grace:?} later: a process it \
                 started holds it",
                if status.is_some() {
                    "exited"
                } else {
                    "was killed"
                }
            )
        })
    };
    let (stdout, stderr) = (collect(stdout, "stdout"), collect(stderr, "stderr"));
    match status {
        Some(status) => Output {
            status,
            stdout,
            stderr,
        },
        None => panic!(
            "{cmd:?} did not exit within {deadline:?}; stderr:\n{}",
            String::from_utf8_lossy(&stderr)
        ),
    }
}

/// `sh -c SCRIPT sh PROGRAM` (append its arguments) in a user and mount namespace of its own
/// (`unshare --user --map-root-user --mount`: no privileges needed where user namespaces are
/// allowed, and none as root), so that the script can mount a small tmpfs nothing else sees
/// and run `"$@"` there.
pub fn in_mount_namespace(script: &str, program: impl AsRef<std::ffi::OsStr>) -> Command {
    let mut cmd = Command::new("unshare");
    cmd.args([
        "--user",
        "--map-root-user",
        "--mount",
        "sh",
        "-c",
        script,
        "sh",
    ])
    .arg(program);
    cmd
}

/// `cmd`, its arguments and its environment included, run by `script` as `"$@"` in a namespace
/// of its own ([`in_mount_namespace`]).
pub fn namespaced(script: &str, cmd: &Command) -> Command {
    let mut inside = in_mount_namespace(script, cmd.get_program());
    inside.args(cmd.get_args());
    for (key, value) in cmd.get_envs() {
        match value {
            Some(value) => inside.env(key, value),
            None => inside.env_remove(key),
        };
    }
    inside
}

/// A command's stderr as text.
pub fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// A command's stdout as text.
pub fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Fails unless `shown` (what `what` printed or logged) holds none of the characters that
/// drive a terminal (ESC, BEL, CR, the C1 CSI) and no line starting with `forged`: text from
/// the other side, or a name another user made, must reach the user made visible.
pub fn assert_shown_visibly(what: &str, shown: &str, forged: &str) {
    assert!(
        !shown.contains(['\u{1b}', '\u{7}', '\r', '\u{9b}']),
        "{what}: control characters reached the terminal: {shown:?}"
    );
    assert!(
        !shown.lines().any(|l| l.starts_with(forged)),
        "{what}: a line of the program's own was forged: {shown:?}"
    );
}

/// The sha256 of a file's content (of nothing when it cannot be read).
pub fn file_sha(path: &Path) -> String {
    sha256(&std::fs::read(path).unwrap_or_default())
}

/// zync temp files (`.zync-tmp-*`, partial downloads included) anywhere under `root`, by
/// path relative to it, sorted.
pub fn temp_files(root: &Path) -> Vec<String> {
    let mut found = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if entry
                .file_name()
                .to_string_lossy()
                .starts_with(".zync-tmp-")
            {
                let rel = path.strip_prefix(root).unwrap_or(&path);
                found.push(rel.display().to_string());
            }
            if entry.file_type().is_ok_and(|t| t.is_dir()) {
                stack.push(path);
            }
        }
    }
    found.sort();
    found
}

/// `zync-apply --db DB ARGS...` (no --dirs: the daemon recorded its mapping in the database).
pub fn zync_apply(db: &Path, args: &[&str]) -> Command {
    let mut cmd = command("zync-apply");
    cmd.arg("--db").arg(db).args(args);
    cmd
}

/// As [`zync_apply`], run as user nobody (65534) from a copy of the binary in `state` (the
/// build directory may not be reachable by other users): for a daemon run as nobody
/// ([`Daemon::start_as_nobody`]), whose database zync-apply run as another user refuses.
pub fn zync_apply_as_nobody(state: &Path, db: &Path, args: &[&str]) -> Command {
    use std::os::unix::process::CommandExt;
    let exe = state.join("zync-apply");
    if !exe.exists() {
        std::fs::copy(bin_dir().join("zync-apply"), &exe).expect("copy zync-apply");
        std::fs::set_permissions(&exe, std::fs::Permissions::from_mode(0o755))
            .expect("chmod zync-apply");
    }
    let mut cmd = Command::new(exe);
    cmd.env_remove("ZYNC_TOKEN").env_remove("RUST_LOG");
    no_user_config(&mut cmd);
    cmd.arg("--db").arg(db).args(args).uid(65534).gid(65534);
    cmd
}

/// Runs a command that must end by itself within [`DEADLINE`] and exit 0; returns its
/// output, or fails showing the command, its status, stdout and stderr.
pub fn run_ok(cmd: Command) -> Output {
    let shown = format!("{cmd:?}");
    let out = output_within_deadline(cmd);
    assert!(
        out.status.success(),
        "{shown} failed ({}):\nstdout:\n{}\nstderr:\n{}",
        out.status,
        stdout(&out),
        stderr(&out)
    );
    out
}

/// `zync-apply --db DB ARGS...`, which must exit 0; returns its stdout.
pub fn zync_apply_ok(db: &Path, args: &[&str]) -> String {
    stdout(&run_ok(zync_apply(db, args)))
}

/// `zync-apply --db DB ARGS...` whose stdout is JSON (`--json` among `args`), which must exit 0.
pub fn zync_apply_json(db: &Path, args: &[&str]) -> serde_json::Value {
    let text = zync_apply_ok(db, args);
    serde_json::from_str(&text)
        .unwrap_or_else(|e| panic!("zync-apply {args:?} printed no JSON ({e}):\n{text}"))
}

/// `<db>.staging`, as crates/zync-db/src/staging.rs names it.
pub fn staging_root(db: &Path) -> PathBuf {
    let mut name = db.file_name().expect("db file name").to_os_string();
    name.push(".staging");
    db.with_file_name(name)
}

/// Names of the entries of a directory (empty when it does not exist).
pub fn names_in(dir: &Path) -> std::collections::BTreeSet<String> {
    std::fs::read_dir(dir)
        .map(|rd| {
            rd.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}

/// What `strace` (apt-get install strace) wrote about `pid` (all its threads) while `during`
/// ran, traced with `args` (`-e trace=...`, `-c`); only the traced calls stop the process
/// (`--seccomp-bpf`), so that it runs near full speed.
pub fn strace_during(pid: u32, args: &[&str], during: impl FnOnce()) -> String {
    let tmp = tempfile::tempdir().unwrap();
    let output = tmp.path().join("strace.txt");
    let mut cmd = Command::new("strace");
    cmd.args(["-f", "--seccomp-bpf"])
        .args(args)
        .arg("-o")
        .arg(&output);
    let mut strace = attach_strace(cmd, pid);
    during();
    strace.stop();
    std::fs::read_to_string(&output).unwrap_or_default()
}

/// A running `strace` and the pipe of its stderr, kept open: closed, strace's next message
/// (another thread attached, with `-f`) would kill it with SIGPIPE.
struct Strace {
    child: Child,
    _stderr: std::io::Lines<BufReader<std::process::ChildStderr>>,
}

impl Strace {
    /// Stops it (SIGINT, so it writes what it has) and waits for it.
    fn stop(&mut self) {
        // SAFETY: kill(2) on a child this test spawned and has not reaped.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGINT) };
        let _ = self.child.wait();
    }
}

/// Starts `strace` (apt-get install strace), given its options, on process or thread `pid`;
/// returns once it says it has attached.
fn attach_strace(mut strace: Command, pid: u32) -> Strace {
    let mut child = strace
        .args(["-p", &pid.to_string()])
        .stderr(Stdio::piped())
        .spawn()
        .expect("strace (apt-get install strace) must be installed");
    let mut lines = BufReader::new(child.stderr.take().expect("stderr")).lines();
    let attached = lines.next().and_then(Result::ok).unwrap_or_default();
    assert!(
        attached.contains("attached"),
        "strace did not attach: {attached:?}"
    );
    Strace {
        child,
        _stderr: lines,
    }
}

/// How many times `pid` (all its threads) made each of the system calls `names` while
/// `during` ran, counted by `strace -c`; a call never made is 0.
pub fn syscalls_of(pid: u32, names: &[&str], during: impl FnOnce()) -> BTreeMap<String, u64> {
    let trace = format!("trace={}", names.join(","));
    let text = strace_during(pid, &["-c", "-e", &trace], during);
    let mut calls: BTreeMap<String, u64> = names.iter().map(|n| (n.to_string(), 0)).collect();
    for line in text.lines() {
        let cols: Vec<&str> = line.split_whitespace().collect();
        // % time, seconds, usecs/call, calls, [errors,] syscall
        if let (Some(name), Some(n)) = (cols.last(), cols.get(3)) {
            if let (Some(count), Ok(n)) = (calls.get_mut(*name), n.parse::<u64>()) {
                *count += n;
            }
        }
    }
    calls
}

/// The thread of `pid` whose name starts with `name` (as /proc shows it: 15 bytes at most).
pub fn thread_named(pid: u32, name: &str) -> Option<u32> {
    let tasks = std::fs::read_dir(format!("/proc/{pid}/task")).ok()?;
    tasks.flatten().find_map(|task| {
        let comm = std::fs::read_to_string(task.path().join("comm")).ok()?;
        let tid = task.file_name().to_str()?.parse().ok()?;
        comm.trim_end().starts_with(name).then_some(tid)
    })
}

/// While it lives, every `syscall` that thread `tid` alone makes waits `delay_us` first
/// (`strace -e inject=...:delay_enter`), as on a machine so loaded that the thread lags.
pub struct SlowedThread {
    strace: Strace,
}

impl SlowedThread {
    /// Slows `syscall` of thread `tid`; returns once strace has attached.
    pub fn start(tid: u32, syscall: &str, delay_us: u64) -> SlowedThread {
        let mut cmd = Command::new("strace");
        cmd.args(["-e", &format!("trace={syscall}")])
            .args(["-e", &format!("inject={syscall}:delay_enter={delay_us}")])
            .args(["-o", "/dev/null"]);
        SlowedThread {
            strace: attach_strace(cmd, tid),
        }
    }
}

impl Drop for SlowedThread {
    fn drop(&mut self) {
        self.strace.stop();
    }
}

/// Spawns `cmd`. A binary copied just before (for another user) can fail with "text file
/// busy" while another test thread's child, forked between the copy's open and close, still
/// holds the write descriptor until it execs: retried until that passes.
fn spawn_retrying_busy(cmd: &mut Command, what: &str) -> std::process::Child {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match cmd.spawn() {
            Ok(child) => return child,
            Err(e) if e.raw_os_error() == Some(libc::ETXTBSY) && Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(e) => panic!("spawn {what}: {e}"),
        }
    }
}
