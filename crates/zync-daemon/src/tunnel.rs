//! `--tunnel [USER@]HOST` (issue 6): the daemon opens the reverse ssh tunnel itself
//! (`ssh -N -R PORT:ADDR:PORT HOST`), so R's client reaches it at 127.0.0.1:PORT on R, and
//! restarts ssh with capped exponential backoff whenever it dies.
//!
//! When is the tunnel "up"? ssh runs with `-v` and `ExitOnForwardFailure=yes`: it logs
//! `remote forward success for: listen PORT…` once R's sshd has opened the port, and exits if
//! it cannot. That line is the signal. Should it never come (an ssh other than OpenSSH), an ssh
//! still alive [`Timing::up_grace`] after it started counts as up: longer than its
//! `ConnectTimeout`, and with `ExitOnForwardFailure=yes` a refused forward would have ended it.

use std::collections::VecDeque;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use anyhow::{bail, Context};
use tokio::io::{AsyncBufReadExt, BufReader, Lines};
use tokio::process::{Child, ChildStderr, Command};
use tokio::sync::watch;
use tokio::time::Instant;

use crate::cli::Args;

/// Options zync relies on, given first so that nothing later can change them (ssh keeps the
/// first value it reads for each option): never prompt (no one is there to answer), and exit
/// when the forward is refused (that exit is how a taken port on R becomes visible).
const REQUIRED_OPTIONS: &[&str] = &["BatchMode=yes", "ExitOnForwardFailure=yes"];

/// Keep-alive and connect defaults, given after the user's `--ssh-option`s so those win. With
/// these, ssh notices a dead link within about 45 s and exits, and the supervisor restarts it.
const DEFAULT_OPTIONS: &[&str] = &[
    "ServerAliveInterval=15",
    "ServerAliveCountMax=3",
    "ConnectTimeout=20",
];

/// How many of ssh's last stderr lines (debug lines aside) an exit report shows.
const TAIL_LINES: usize = 8;

/// The tunnel the command line asks for, validated before the daemon binds its port.
#[derive(Debug, Clone)]
pub struct Tunnel {
    /// The ssh program, found on disk.
    program: PathBuf,
    /// `[USER@]HOST` of machine R.
    destination: String,
    /// `ssh -p`, when given.
    ssh_port: Option<u16>,
    /// The user's `-o` options, in order.
    options: Vec<String>,
    /// The port opened on R; the daemon's own port when `None`.
    remote_port: Option<u16>,
}

impl Tunnel {
    /// The tunnel `--tunnel` asks for, or `None` without it.
    ///
    /// # Errors
    /// A destination or ssh option that ssh would misread, an option zync cannot let change,
    /// or an ssh program that does not exist (saying to install openssh-client).
    pub fn from_args(args: &Args) -> anyhow::Result<Option<Tunnel>> {
        let Some(destination) = &args.tunnel else {
            return Ok(None);
        };
        if destination.is_empty()
            || destination.starts_with('-')
            || destination.chars().any(char::is_whitespace)
        {
            bail!(
                "--tunnel {destination:?} is not [USER@]HOST; write it as, for example, --tunnel me@build-box"
            );
        }
        for option in &args.ssh_options {
            check_option(option)?;
        }
        Ok(Some(Tunnel {
            program: find_program(&args.ssh_command)?,
            destination: destination.clone(),
            ssh_port: args.ssh_port,
            options: args.ssh_options.clone(),
            remote_port: args.tunnel_remote_port,
        }))
    }

    /// ssh's arguments for a daemon listening on `listen`.
    pub fn ssh_args(&self, listen: SocketAddr) -> Vec<String> {
        let (host, port) = forward_target(listen);
        let mut args: Vec<String> = vec!["-N".into(), "-T".into(), "-v".into()];
        let options = REQUIRED_OPTIONS
            .iter()
            .map(|o| o.to_string())
            .chain(self.options.iter().cloned())
            .chain(DEFAULT_OPTIONS.iter().map(|o| o.to_string()));
        for option in options {
            args.push("-o".into());
            args.push(option);
        }
        if let Some(ssh_port) = self.ssh_port {
            args.push("-p".into());
            args.push(ssh_port.to_string());
        }
        args.push("-R".into());
        args.push(format!("{}:{host}:{port}", self.remote_port(listen)));
        // `--` so that no destination is ever read as an option.
        args.push("--".into());
        args.push(self.destination.clone());
        args
    }

    /// The port the tunnel opens on R.
    pub fn remote_port(&self, listen: SocketAddr) -> u16 {
        self.remote_port.unwrap_or(listen.port())
    }

    /// Starts supervising ssh for a daemon listening on `listen`, on a thread of its own.
    ///
    /// The thread matters: ssh is asked to get SIGTERM when its parent dies
    /// (`PR_SET_PDEATHSIG`, so even a `kill -9` of the daemon takes ssh along), and Linux
    /// counts the spawning *thread* as that parent. A runtime worker could come and go; this
    /// thread lives exactly as long as the tunnel.
    ///
    /// # Errors
    /// When the thread or its runtime cannot be started.
    pub fn start(self, listen: SocketAddr) -> anyhow::Result<TunnelHandle> {
        let launch = Launch {
            program: self.program.clone(),
            args: self.ssh_args(listen),
            what: format!(
                "127.0.0.1:{} on {} -> this daemon ({})",
                self.remote_port(listen),
                self.destination,
                listen
            ),
            hints: Hints {
                destination: self.destination.clone(),
                remote_port: self.remote_port(listen),
            },
        };
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .context("cannot start the tunnel's async runtime")?;
        let (stop, stopped) = watch::channel(false);
        let thread = std::thread::Builder::new()
            .name("zync-tunnel".into())
            .spawn(move || runtime.block_on(supervise(launch, Timing::default(), stopped, |_| {})))
            .context("cannot start the tunnel thread")?;
        Ok(TunnelHandle {
            stop,
            thread: Some(thread),
        })
    }
}

/// The running supervisor. [`TunnelHandle::stop`] ends ssh and waits for it; dropping the
/// handle only asks for the stop (and `PR_SET_PDEATHSIG` covers a process that exits first).
pub struct TunnelHandle {
    stop: watch::Sender<bool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl TunnelHandle {
    /// Stops ssh (SIGTERM, then SIGKILL after a grace period) and waits until it is gone.
    pub async fn stop(mut self) {
        let _ = self.stop.send(true);
        if let Some(thread) = self.thread.take() {
            let _ = tokio::task::spawn_blocking(move || thread.join()).await;
        }
    }
}

impl Drop for TunnelHandle {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
    }
}

/// Refuses `--ssh-option` values ssh would misread, and those that would undo
/// [`REQUIRED_OPTIONS`] (ssh would silently ignore them; better to say so).
fn check_option(option: &str) -> anyhow::Result<()> {
    let key = option
        .split(|c: char| c == '=' || c.is_whitespace())
        .next()
        .unwrap_or_default();
    if key.is_empty() || option.starts_with('-') {
        bail!(
            "--ssh-option {option:?} is not an ssh_config option; write KEY=VALUE without -o, for example --ssh-option IdentityFile=~/.ssh/id_zync"
        );
    }
    for required in REQUIRED_OPTIONS {
        let (required_key, _) = required.split_once('=').unwrap_or((required, ""));
        if key.eq_ignore_ascii_case(required_key) {
            bail!(
                "--ssh-option {option:?}: the tunnel always runs with {required} (it runs unattended and must notice a refused forward); drop this option"
            );
        }
    }
    Ok(())
}

/// Finds `command` the way a shell would: as a path when it has a `/`, else in `PATH`.
///
/// # Errors
/// When there is no such executable, saying to install openssh-client.
pub fn find_program(command: &str) -> anyhow::Result<PathBuf> {
    let install = "install openssh-client (apt-get install openssh-client), or name the ssh program with --ssh-command PATH or ZYNC_SSH";
    if command.is_empty() {
        bail!("--ssh-command is empty; {install}");
    }
    if command.contains('/') {
        let path = PathBuf::from(command);
        if is_executable(&path) {
            return Ok(path);
        }
        bail!("--tunnel needs ssh, and {command} is not an executable file; {install}");
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|dir| dir.join(command))
        .find(|candidate| is_executable(candidate))
        .with_context(|| format!("--tunnel needs ssh, and {command:?} is not in PATH; {install}"))
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// Where the forward lands on E: the daemon's own address, as ssh writes it. A daemon
/// listening on every address is reached on loopback.
fn forward_target(listen: SocketAddr) -> (String, u16) {
    let host = match listen.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => Ipv4Addr::LOCALHOST.to_string(),
        IpAddr::V6(ip) if ip.is_unspecified() => format!("[{}]", Ipv6Addr::LOCALHOST),
        IpAddr::V4(ip) => ip.to_string(),
        IpAddr::V6(ip) => format!("[{ip}]"),
    };
    (host, listen.port())
}

/// Capped exponential backoff between ssh runs.
#[derive(Debug, Clone)]
pub struct Backoff {
    initial: Duration,
    max: Duration,
    next: Duration,
}

impl Backoff {
    /// Starts at `initial`, doubling up to `max`.
    pub fn new(initial: Duration, max: Duration) -> Backoff {
        Backoff {
            initial,
            max,
            next: initial.min(max),
        }
    }

    /// The wait before the next attempt; the one after will be twice as long, up to the cap.
    pub fn next_delay(&mut self) -> Duration {
        let delay = self.next;
        self.next = (self.next * 2).min(self.max);
        delay
    }

    /// Back to the initial wait (the tunnel stayed up a while: the next failure is news).
    pub fn reset(&mut self) {
        self.next = self.initial.min(self.max);
    }
}

/// The supervisor's clock.
#[derive(Debug, Clone)]
pub struct Timing {
    /// An ssh alive this long without confirming the forward counts as up.
    pub up_grace: Duration,
    /// A tunnel up this long resets the backoff.
    pub stable_after: Duration,
    /// First wait before a restart.
    pub backoff_initial: Duration,
    /// Longest wait before a restart.
    pub backoff_max: Duration,
    /// Time ssh gets to exit on SIGTERM before SIGKILL.
    pub stop_grace: Duration,
}

impl Default for Timing {
    fn default() -> Timing {
        Timing {
            up_grace: Duration::from_secs(30),
            stable_after: Duration::from_secs(60),
            backoff_initial: Duration::from_secs(1),
            backoff_max: Duration::from_secs(60),
            stop_grace: Duration::from_secs(3),
        }
    }
}

/// What to run, and how to describe it in logs.
#[derive(Debug, Clone)]
pub struct Launch {
    /// The ssh program.
    pub program: PathBuf,
    /// Its arguments.
    pub args: Vec<String>,
    /// "R's port -> this daemon", for log lines.
    pub what: String,
    /// What exit hints need to know.
    pub hints: Hints,
}

/// Facts that turn ssh's error messages into advice.
#[derive(Debug, Clone)]
pub struct Hints {
    /// `[USER@]HOST`.
    pub destination: String,
    /// The port opened on R.
    pub remote_port: u16,
}

impl Hints {
    /// What to do about an ssh exit whose last lines are `tail`, when the cause is known.
    fn for_tail(&self, tail: &[String]) -> Option<String> {
        let text = tail.join("\n");
        let Hints {
            destination,
            remote_port,
        } = self;
        if text.contains("Permission denied") {
            Some(format!(
                "ssh cannot log in to {destination} without a prompt: set up key login (ssh-copy-id {destination}) or pass --ssh-option IdentityFile=PATH"
            ))
        } else if text.contains("Host key verification failed") {
            Some(format!(
                "{destination}'s host key is not known yet: run `ssh {destination}` once by hand and accept it"
            ))
        } else if text.contains("remote port forwarding failed") {
            Some(format!(
                "port {remote_port} on {destination} is taken (another tunnel or daemon?): stop that, or choose another port with --tunnel-remote-port and give R's client the same port in --server"
            ))
        } else {
            None
        }
    }
}

/// A state change of the supervisor; each is logged, and handed to the observer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// ssh was started.
    Started {
        /// Its process id.
        pid: u32,
    },
    /// ssh could not be started at all.
    SpawnFailed(String),
    /// The forward is open on R.
    Up {
        /// True when ssh confirmed it; false when assumed after [`Timing::up_grace`].
        confirmed: bool,
    },
    /// ssh ended.
    Exited {
        /// Its exit code, `None` when a signal killed it.
        code: Option<i32>,
        /// The signal that killed it.
        signal: Option<i32>,
        /// Its last stderr lines (debug lines aside).
        tail: Vec<String>,
    },
    /// The next start comes after this wait.
    Retrying(Duration),
    /// Asked to stop; ssh is gone.
    Stopped,
}

/// How one ssh run ended.
enum Ended {
    Exited {
        status: ExitStatus,
        up_for: Option<Duration>,
        tail: Vec<String>,
    },
    Stopped,
}

/// Runs ssh, restarting it with backoff, until `stop` turns true (or its sender goes away).
/// Every state change is logged and passed to `observe`.
pub async fn supervise(
    launch: Launch,
    timing: Timing,
    mut stop: watch::Receiver<bool>,
    mut observe: impl FnMut(&Event),
) {
    let mut backoff = Backoff::new(timing.backoff_initial, timing.backoff_max);
    let mut emit = |event: Event| {
        log(&launch, &timing, &event);
        observe(&event);
    };
    loop {
        if *stop.borrow() {
            break;
        }
        tracing::info!(
            "tunnel: starting {} {}",
            launch.program.display(),
            launch.args.join(" ")
        );
        match spawn(&launch) {
            Err(e) => {
                let hint = if e.kind() == std::io::ErrorKind::NotFound {
                    "; install openssh-client (apt-get install openssh-client) or name the ssh program with --ssh-command"
                } else {
                    ""
                };
                emit(Event::SpawnFailed(format!(
                    "cannot run {}: {e}{hint}",
                    launch.program.display()
                )))
            }
            Ok(mut child) => {
                emit(Event::Started {
                    pid: child.id().unwrap_or_default(),
                });
                match run_once(&mut child, &timing, &mut stop, &mut emit).await {
                    Ended::Stopped => break,
                    Ended::Exited {
                        status,
                        up_for,
                        tail,
                    } => {
                        if up_for.is_some_and(|t| t >= timing.stable_after) {
                            backoff.reset();
                        }
                        emit(Event::Exited {
                            code: status.code(),
                            signal: std::os::unix::process::ExitStatusExt::signal(&status),
                            tail,
                        });
                    }
                }
            }
        }
        let delay = backoff.next_delay();
        emit(Event::Retrying(delay));
        tokio::select! {
            () = tokio::time::sleep(delay) => {}
            () = stop_requested(&mut stop) => break,
        }
    }
    emit(Event::Stopped);
}

/// Logs one state change, with advice when ssh's output makes the cause clear.
fn log(launch: &Launch, timing: &Timing, event: &Event) {
    match event {
        Event::Started { pid } => tracing::info!(pid, "tunnel: ssh started"),
        Event::SpawnFailed(e) => tracing::error!("tunnel: {e}"),
        Event::Up { confirmed: true } => tracing::info!("tunnel up: {}", launch.what),
        Event::Up { confirmed: false } => tracing::info!(
            "tunnel up (assumed: ssh is still running after {:?} but did not confirm the forward): {}",
            timing.up_grace,
            launch.what
        ),
        Event::Exited { code, signal, tail } => {
            let how = match (code, signal) {
                (Some(code), _) => format!("exited with status {code}"),
                (None, Some(signal)) => format!("was killed by signal {signal}"),
                (None, None) => "ended".to_string(),
            };
            let output = if tail.is_empty() {
                "no output".to_string()
            } else {
                tail.join(" | ")
            };
            match launch.hints.for_tail(tail) {
                Some(hint) => tracing::warn!("tunnel: ssh {how}: {output}; {hint}"),
                None => tracing::warn!("tunnel: ssh {how}: {output}"),
            }
        }
        Event::Retrying(delay) => {
            tracing::info!("tunnel: retrying in {} s", delay.as_secs_f64())
        }
        Event::Stopped => tracing::info!("tunnel: stopped"),
    }
}

/// Starts ssh: no stdin, stderr read by the supervisor, in a process group of its own (a
/// Ctrl-C at the terminal reaches the daemon, which then ends ssh; ssh does not die first and
/// look like a failure), killed when its handle drops, and killed when the daemon dies.
fn spawn(launch: &Launch) -> std::io::Result<Child> {
    let mut cmd = Command::new(&launch.program);
    cmd.args(&launch.args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .process_group(0);
    let parent = std::process::id();
    // SAFETY: the closure runs between fork and exec and only makes async-signal-safe calls
    // (prctl, getppid), allocating nothing.
    unsafe {
        cmd.pre_exec(move || die_with_parent(parent));
    }
    cmd.spawn()
}

/// In the forked child: SIGTERM when the parent dies; fail the exec if it already has.
fn die_with_parent(parent: u32) -> std::io::Result<()> {
    #[cfg(target_os = "linux")]
    {
        // SAFETY: plain system calls on the calling process.
        if unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM) } == -1 {
            return Err(std::io::Error::last_os_error());
        }
        if u32::try_from(unsafe { libc::getppid() }).ok() != Some(parent) {
            return Err(std::io::Error::from_raw_os_error(libc::ESRCH));
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = parent;
    Ok(())
}

/// Waits for one ssh run to end: reads its stderr (a forward confirmation means up), declares
/// it up after the grace period, and ends it when asked to stop.
async fn run_once(
    child: &mut Child,
    timing: &Timing,
    stop: &mut watch::Receiver<bool>,
    emit: &mut impl FnMut(Event),
) -> Ended {
    let mut lines = child.stderr.take().map(|s| BufReader::new(s).lines());
    let mut tail: VecDeque<String> = VecDeque::new();
    let mut up_at: Option<Instant> = None;
    let grace = tokio::time::sleep(timing.up_grace);
    tokio::pin!(grace);
    loop {
        tokio::select! {
            status = child.wait() => {
                // ssh's last words (why it exited) may still sit in the pipe.
                let drain = async {
                    while let Some(line) = next_line(&mut lines).await {
                        keep(&mut tail, line);
                    }
                };
                let _ = tokio::time::timeout(Duration::from_millis(500), drain).await;
                let tail = tail.into_iter().collect();
                return match status {
                    Ok(status) => Ended::Exited { status, up_for: up_at.map(|t| t.elapsed()), tail },
                    Err(e) => {
                        tracing::error!("tunnel: cannot wait for ssh: {e}");
                        // Not waitable: kill it rather than lose track of it.
                        let _ = child.start_kill();
                        Ended::Exited {
                            status: ExitStatus::default(),
                            up_for: up_at.map(|t| t.elapsed()),
                            tail,
                        }
                    }
                };
            }
            line = next_line(&mut lines) => match line {
                Some(line) => {
                    if up_at.is_none() && confirms_forward(&line) {
                        up_at = Some(Instant::now());
                        emit(Event::Up { confirmed: true });
                    }
                    if is_noise(&line) {
                        tracing::debug!("ssh: {line}");
                    } else {
                        tracing::info!("ssh: {line}");
                    }
                    keep(&mut tail, line);
                }
                None => lines = None,
            },
            () = &mut grace, if up_at.is_none() => {
                up_at = Some(Instant::now());
                emit(Event::Up { confirmed: false });
            }
            () = stop_requested(stop) => {
                terminate(child, timing.stop_grace).await;
                return Ended::Stopped;
            }
        }
    }
}

/// The next stderr line; pending forever once stderr is closed or unreadable.
async fn next_line(lines: &mut Option<Lines<BufReader<ChildStderr>>>) -> Option<String> {
    match lines {
        Some(l) => l.next_line().await.ok().flatten(),
        None => std::future::pending().await,
    }
}

/// Keeps `line` in the exit report's tail unless it is [noise](is_noise).
fn keep(tail: &mut VecDeque<String>, line: String) {
    if is_noise(&line) {
        return;
    }
    if tail.len() == TAIL_LINES {
        tail.pop_front();
    }
    tail.push_back(line);
}

/// What `-v` adds to ssh's stderr: debug lines and the version banner. Logged at debug level,
/// never in an exit report.
fn is_noise(line: &str) -> bool {
    line.starts_with("debug") || line.starts_with("OpenSSH_")
}

/// ssh `-v` reports a granted remote forward as
/// `debug1: remote forward success for: listen 8000, connect 127.0.0.1:8000`.
fn confirms_forward(line: &str) -> bool {
    line.contains("remote forward success for")
}

/// Completes once a stop is requested or the handle that could request it is gone.
async fn stop_requested(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|stop| *stop).await;
}

/// SIGTERM (ssh closes the session cleanly), then SIGKILL after `grace`; reaps the child.
async fn terminate(child: &mut Child, grace: Duration) {
    if let Some(pid) = child.id().and_then(|p| libc::pid_t::try_from(p).ok()) {
        // SAFETY: signals our own child, which is not reaped yet, so the pid is still its.
        unsafe { libc::kill(pid, libc::SIGTERM) };
    }
    if tokio::time::timeout(grace, child.wait()).await.is_err() {
        let _ = child.kill().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    fn tunnel(options: &[&str]) -> Tunnel {
        Tunnel {
            program: PathBuf::from("/usr/bin/ssh"),
            destination: "me@r-box".into(),
            ssh_port: None,
            options: options.iter().map(|o| o.to_string()).collect(),
            remote_port: None,
        }
    }

    fn addr(s: &str) -> SocketAddr {
        s.parse().expect("a socket address")
    }

    fn position(args: &[String], wanted: &str) -> usize {
        args.iter()
            .position(|a| a == wanted)
            .unwrap_or_else(|| panic!("{wanted:?} missing from {args:?}"))
    }

    #[test]
    fn ssh_args_forward_r_s_port_to_the_daemon() {
        let args = tunnel(&[]).ssh_args(addr("127.0.0.1:8000"));
        let expected: Vec<String> = [
            "-N",
            "-T",
            "-v",
            "-o",
            "BatchMode=yes",
            "-o",
            "ExitOnForwardFailure=yes",
            "-o",
            "ServerAliveInterval=15",
            "-o",
            "ServerAliveCountMax=3",
            "-o",
            "ConnectTimeout=20",
            "-R",
            "8000:127.0.0.1:8000",
            "--",
            "me@r-box",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        assert_eq!(args, expected);
    }

    #[test]
    fn user_options_come_after_the_required_ones_and_before_the_defaults() {
        let mut t = tunnel(&["ServerAliveInterval=5", "IdentityFile=/k"]);
        t.ssh_port = Some(2222);
        t.remote_port = Some(9000);
        let args = t.ssh_args(addr("127.0.0.1:8000"));
        // ssh keeps the first value of each option.
        assert!(position(&args, "ExitOnForwardFailure=yes") < position(&args, "IdentityFile=/k"));
        assert!(position(&args, "BatchMode=yes") < position(&args, "ServerAliveInterval=5"));
        assert!(
            position(&args, "ServerAliveInterval=5") < position(&args, "ServerAliveInterval=15")
        );
        assert_eq!(args[position(&args, "-p") + 1], "2222");
        assert_eq!(args[position(&args, "-R") + 1], "9000:127.0.0.1:8000");
        assert_eq!(&args[args.len() - 2..], ["--", "me@r-box"]);
    }

    #[test]
    fn the_forward_targets_the_daemon_s_actual_address() {
        let cases = [
            ("127.0.0.1:8000", "8000:127.0.0.1:8000"),
            ("[::1]:8001", "8001:[::1]:8001"),
            ("0.0.0.0:8002", "8002:127.0.0.1:8002"),
            ("[::]:8003", "8003:[::1]:8003"),
            ("10.1.2.3:8004", "8004:10.1.2.3:8004"),
        ];
        for (listen, forward) in cases {
            let args = tunnel(&[]).ssh_args(addr(listen));
            assert_eq!(
                args[position(&args, "-R") + 1],
                forward,
                "listening on {listen}"
            );
        }
    }

    #[test]
    fn bad_destinations_and_options_are_refused_with_a_reason() {
        use clap::Parser;
        let parse = |extra: &[&str]| {
            let mut argv = vec![
                "zync-daemon",
                "--dirs",
                "a:/tmp",
                "--ssh-command",
                "/bin/sh",
            ];
            argv.extend_from_slice(extra);
            let args = Args::try_parse_from(argv).expect("the command line parses");
            Tunnel::from_args(&args).map(|t| t.is_some())
        };
        assert!(!parse(&[]).expect("no --tunnel is fine"));
        assert!(parse(&["--tunnel", "me@r"]).expect("a plain destination"));
        assert!(parse(&["--tunnel", "me@r", "--ssh-option", "Compression=yes"]).expect("option"));
        let cases: [(&[&str], &str); 5] = [
            (&["--tunnel=-oProxyCommand=x"], "[USER@]HOST"),
            (&["--tunnel", "me@r box"], "[USER@]HOST"),
            (&["--tunnel", "r", "--ssh-option=-p 22"], "without -o"),
            (
                &["--tunnel", "r", "--ssh-option", "batchmode=no"],
                "BatchMode=yes",
            ),
            (
                &["--tunnel", "r", "--ssh-option", "ExitOnForwardFailure no"],
                "ExitOnForwardFailure=yes",
            ),
        ];
        for (extra, expected) in cases {
            let err = match parse(extra) {
                Ok(_) => panic!("{extra:?} was accepted"),
                Err(e) => format!("{e:#}"),
            };
            assert!(
                err.contains(expected),
                "{extra:?}: expected {expected:?} in {err:?}"
            );
        }
    }

    #[test]
    fn a_missing_ssh_says_to_install_openssh_client() {
        for command in ["/nonexistent/ssh", "zync-no-such-ssh-program", ""] {
            let err = format!("{:#}", find_program(command).expect_err(command));
            assert!(
                err.contains("install openssh-client"),
                "{command:?}: no install hint in {err:?}"
            );
        }
        // A directory is not a program.
        assert!(find_program("/tmp/").is_err());
        assert_eq!(
            find_program("/bin/sh").expect("/bin/sh exists"),
            PathBuf::from("/bin/sh")
        );
    }

    #[test]
    fn backoff_doubles_up_to_the_cap_and_resets() {
        let mut b = Backoff::new(Duration::from_secs(1), Duration::from_secs(60));
        let delays: Vec<u64> = (0..9).map(|_| b.next_delay().as_secs()).collect();
        assert_eq!(delays, [1, 2, 4, 8, 16, 32, 60, 60, 60]);
        b.reset();
        assert_eq!(b.next_delay(), Duration::from_secs(1));
        assert_eq!(b.next_delay(), Duration::from_secs(2));
        // An initial wait above the cap is capped too.
        let mut b = Backoff::new(Duration::from_secs(90), Duration::from_secs(60));
        assert_eq!(b.next_delay(), Duration::from_secs(60));
    }

    #[test]
    fn exit_hints_name_the_fix() {
        let hints = Hints {
            destination: "me@r".into(),
            remote_port: 8000,
        };
        let hint = |line: &str| hints.for_tail(&[line.to_string()]);
        assert!(
            hint("me@r: Permission denied (publickey).").is_some_and(|h| h.contains("ssh-copy-id"))
        );
        assert!(hint("Host key verification failed.").is_some_and(|h| h.contains("ssh me@r")));
        assert!(
            hint("Error: remote port forwarding failed for listen port 8000")
                .is_some_and(|h| h.contains("--tunnel-remote-port"))
        );
        assert_eq!(
            hint("ssh: connect to host r port 22: Connection refused"),
            None
        );
    }

    /// A stand-in for ssh: a shell script in a temp dir.
    fn fake_ssh(dir: &Path, body: &str) -> Launch {
        use std::os::unix::fs::PermissionsExt;
        let program = dir.join("fake-ssh");
        std::fs::write(&program, format!("#!/bin/sh\n{body}\n")).expect("write fake ssh");
        std::fs::set_permissions(&program, std::fs::Permissions::from_mode(0o755))
            .expect("chmod fake ssh");
        Launch {
            program,
            args: vec![],
            what: "test".into(),
            hints: Hints {
                destination: "r".into(),
                remote_port: 1,
            },
        }
    }

    fn fast() -> Timing {
        Timing {
            up_grace: Duration::from_secs(30),
            stable_after: Duration::from_secs(30),
            backoff_initial: Duration::from_millis(10),
            backoff_max: Duration::from_millis(40),
            stop_grace: Duration::from_secs(2),
        }
    }

    /// Runs the supervisor until `done` holds for its events (or 20 s pass), then stops it.
    async fn supervise_until(
        launch: Launch,
        timing: Timing,
        done: impl Fn(&[Event]) -> bool,
    ) -> Vec<Event> {
        let events = Arc::new(Mutex::new(Vec::new()));
        let (stop, stopped) = watch::channel(false);
        let seen = events.clone();
        let task = tokio::spawn(supervise(launch, timing, stopped, move |e| {
            seen.lock().expect("events lock").push(e.clone())
        }));
        let deadline = Instant::now() + Duration::from_secs(20);
        while !done(&events.lock().expect("events lock")) && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let _ = stop.send(true);
        tokio::time::timeout(Duration::from_secs(10), task)
            .await
            .expect("the supervisor stops within 10 s")
            .expect("the supervisor does not panic");
        let events = events.lock().expect("events lock").clone();
        events
    }

    fn alive(pid: u32) -> bool {
        let Ok(pid) = libc::pid_t::try_from(pid) else {
            return false;
        };
        // SAFETY: signal 0 only checks that the process exists.
        unsafe { libc::kill(pid, 0) == 0 }
    }

    #[tokio::test]
    async fn a_confirmed_forward_is_up_and_stopping_ends_ssh() {
        let dir = tempfile::tempdir().expect("temp dir");
        let launch = fake_ssh(
            dir.path(),
            "echo 'debug1: remote forward success for: listen 1, connect 127.0.0.1:1' >&2\nexec sleep 60",
        );
        let events = supervise_until(launch, fast(), |e| {
            e.contains(&Event::Up { confirmed: true })
        })
        .await;
        let Some(Event::Started { pid }) = events.first().cloned() else {
            panic!("expected Started first: {events:?}");
        };
        assert_eq!(
            events,
            [
                Event::Started { pid },
                Event::Up { confirmed: true },
                Event::Stopped
            ]
        );
        assert!(!alive(pid), "ssh (pid {pid}) outlived the supervisor");
    }

    #[tokio::test]
    async fn an_ssh_that_stays_silent_is_up_after_the_grace_period() {
        let dir = tempfile::tempdir().expect("temp dir");
        let launch = fake_ssh(dir.path(), "exec sleep 60");
        let timing = Timing {
            up_grace: Duration::from_millis(200),
            ..fast()
        };
        let events = supervise_until(launch, timing, |e| {
            e.contains(&Event::Up { confirmed: false })
        })
        .await;
        assert!(
            matches!(
                events.as_slice(),
                [
                    Event::Started { .. },
                    Event::Up { confirmed: false },
                    Event::Stopped
                ]
            ),
            "{events:?}"
        );
    }

    #[tokio::test]
    async fn a_dying_ssh_is_restarted_with_growing_waits_and_its_last_words() {
        let dir = tempfile::tempdir().expect("temp dir");
        let launch = fake_ssh(
            dir.path(),
            "echo 'OpenSSH_9.2p1, OpenSSL' >&2\necho 'debug1: noise' >&2\necho 'me@r: Permission denied (publickey).' >&2\nexit 255",
        );
        let events = supervise_until(launch, fast(), |e| {
            e.iter().filter(|e| matches!(e, Event::Retrying(_))).count() >= 4
        })
        .await;
        let exits: Vec<&Event> = events
            .iter()
            .filter(|e| matches!(e, Event::Exited { .. }))
            .collect();
        assert!(exits.len() >= 4, "{events:?}");
        assert_eq!(
            exits[0],
            &Event::Exited {
                code: Some(255),
                signal: None,
                tail: vec!["me@r: Permission denied (publickey).".into()]
            }
        );
        let waits: Vec<u128> = events
            .iter()
            .filter_map(|e| match e {
                Event::Retrying(d) => Some(d.as_millis()),
                _ => None,
            })
            .take(4)
            .collect();
        assert_eq!(waits, [10, 20, 40, 40]);
        assert!(
            !events.iter().any(|e| matches!(e, Event::Up { .. })),
            "{events:?}"
        );
    }

    #[tokio::test]
    async fn a_tunnel_that_stayed_up_restarts_after_the_initial_wait() {
        let dir = tempfile::tempdir().expect("temp dir");
        let launch = fake_ssh(
            dir.path(),
            "echo 'debug1: remote forward success for: listen 1' >&2\nsleep 0.3\nexit 255",
        );
        let timing = Timing {
            stable_after: Duration::from_millis(100),
            ..fast()
        };
        let events = supervise_until(launch, timing, |e| {
            e.iter().filter(|e| matches!(e, Event::Retrying(_))).count() >= 3
        })
        .await;
        let waits: Vec<u128> = events
            .iter()
            .filter_map(|e| match e {
                Event::Retrying(d) => Some(d.as_millis()),
                _ => None,
            })
            .take(3)
            .collect();
        assert_eq!(waits, [10, 10, 10], "{events:?}");
    }

    #[tokio::test]
    async fn a_program_that_cannot_run_is_reported_and_retried() {
        let launch = Launch {
            program: PathBuf::from("/nonexistent/ssh"),
            args: vec![],
            what: "test".into(),
            hints: Hints {
                destination: "r".into(),
                remote_port: 1,
            },
        };
        let events = supervise_until(launch, fast(), |e| {
            e.iter().filter(|e| matches!(e, Event::Retrying(_))).count() >= 2
        })
        .await;
        assert!(
            matches!(
                &events[..2],
                [Event::SpawnFailed(e), Event::Retrying(_)]
                    if e.contains("/nonexistent/ssh") && e.contains("install openssh-client")
            ),
            "{events:?}"
        );
    }
}
