//! `--tunnel [USER@]HOST`: the daemon opens the reverse ssh tunnel itself
//! (`ssh -N -R SOCKET:ADDR:PORT HOST`), so R's client reaches it through a Unix socket on R
//! (`--server unix:~/.zync/zync.sock`), or with `--tunnel-remote-port` at 127.0.0.1:PORT on R;
//! and restarts ssh with capped exponential backoff (with jitter) whenever it dies.
//!
//! Why a socket by default: any local user on R can connect to a TCP port on R's loopback, or
//! bind it first while the tunnel is down; a socket in a directory only the user can enter
//! (mode 0700) is the user's alone (invariant 8). ssh needs the socket's path absolute and its
//! directory in place, so before each forward a short ssh run makes the directory, removes a
//! stale socket (sshd on R only replaces one when its own `StreamLocalBindUnlink` says so) and
//! prints the absolute path.
//!
//! When is the tunnel "up"? ssh runs with `-v` and `ExitOnForwardFailure=yes`: it logs
//! `remote forward success for: listen PORT…` (or `listen /path…`) once R's sshd has opened
//! the port or socket, and exits if it cannot. That line is the signal. Should it never come (an ssh other than OpenSSH), an ssh
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
/// first value it reads for each option): never prompt (no one is there to answer), exit
/// when the forward is refused (that exit is how a taken port on R becomes visible), and
/// replace a stale socket (for `-R` it is sshd's own setting on R that counts; the
/// preparatory run removes a stale socket for sshds that keep the default `no`).
const REQUIRED_OPTIONS: &[&str] = &[
    "BatchMode=yes",
    "ExitOnForwardFailure=yes",
    "StreamLocalBindUnlink=yes",
];

/// Keep-alive and connect defaults, given after the user's `--ssh-option`s so those win. With
/// these, ssh notices a dead link within about 45 s and exits, and the supervisor restarts it.
const DEFAULT_OPTIONS: &[&str] = &[
    "ServerAliveInterval=15",
    "ServerAliveCountMax=3",
    "ConnectTimeout=20",
];

/// How many of ssh's last stderr lines (debug lines aside) an exit report shows.
const TAIL_LINES: usize = 8;

/// The socket the tunnel opens on R unless told otherwise.
pub const DEFAULT_SOCKET: &str = "~/.zync/zync.sock";

/// What the preparatory run prints before the socket's absolute directory, and before its
/// `ls -ld` line: markers, so that whatever a login script on R prints is skipped.
const DIR_MARKER: &str = "zync-socket-dir ";
const MODE_MARKER: &str = "zync-socket-mode ";
const USER_MARKER: &str = "zync-socket-user ";

/// The longest socket path Linux accepts (`sun_path` holds 108 bytes with the final NUL).
const MAX_SOCKET_PATH: usize = 107;

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
    /// What the tunnel opens on R.
    remote: Remote,
}

/// What the tunnel opens on R.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Remote {
    /// A Unix socket (the default).
    Socket(RemoteSocket),
    /// A TCP port on R's loopback: this one, or the daemon's own port when `None`.
    Port(Option<u16>),
}

/// A socket path on R, checked so that it can be written into a shell command and an `-R`
/// spec as it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteSocket {
    /// As the user wrote it, for messages.
    given: String,
    /// Its directory: absolute, or relative to the home directory (starting with `./`, so
    /// that no command reads it as an option).
    dir: String,
    /// The socket's file name in `dir`.
    name: String,
    /// True for zync's own directory (`~/.zync`), which is made mode 0700 even when it
    /// exists; a directory the user chose is only created 0700, never changed.
    own_dir: bool,
}

impl RemoteSocket {
    /// Parses `--tunnel-socket`: an absolute path, or one relative to the home directory on R
    /// (a leading `~/` says so too).
    ///
    /// # Errors
    /// A path with characters outside letters, digits and `._-+@%,=/` (it travels through a
    /// shell on R and ssh's `-R` syntax, where `:` separates fields), or one that does not end
    /// in a file name.
    pub fn parse(given: &str) -> anyhow::Result<RemoteSocket> {
        let path = given.strip_prefix("~/").unwrap_or(given);
        let safe = |c: char| c.is_ascii_alphanumeric() || "._-+@%,=/".contains(c);
        if path.is_empty() || !path.chars().all(safe) {
            bail!(
                "--tunnel-socket {given:?} is not a path zync can pass to ssh: use letters, digits and ._-+@%,=/ only (a leading ~/ is your home on R), for example --tunnel-socket ~/.zync/zync.sock"
            );
        }
        let (dir, name) = match path.rsplit_once('/') {
            Some(("", name)) => ("/".to_string(), name),
            Some((dir, name)) if dir.starts_with('/') => (dir.to_string(), name),
            Some((dir, name)) => (format!("./{dir}"), name),
            None => (".".to_string(), path),
        };
        if name.is_empty() || name == "." || name == ".." {
            bail!(
                "--tunnel-socket {given:?} does not end in a file name; write it as, for example, ~/.zync/zync.sock"
            );
        }
        Ok(RemoteSocket {
            given: given.to_string(),
            own_dir: given == DEFAULT_SOCKET,
            dir,
            name: name.to_string(),
        })
    }

    /// The command the preparatory ssh run gives R: create the directory (mode 0700 when it
    /// is new; zync's own directory is made 0700 in any case), remove a stale socket (a socket
    /// only: never a file the user keeps there), and print the directory's absolute path, its
    /// `ls -ldn` line (numeric owner) and the user's uid. Wrapped in `sh -c '…'` so that any login shell (bash, zsh, fish,
    /// csh) hands it to a POSIX shell unchanged; [`RemoteSocket::parse`] keeps quotes out.
    pub fn prepare_command(&self) -> String {
        let RemoteSocket { dir, name, .. } = self;
        let chmod = if self.own_dir {
            format!(" && chmod 700 {dir}")
        } else {
            String::new()
        };
        format!(
            "sh -c 'umask 077 && mkdir -p {dir}{chmod} && cd {dir} && if [ -S {name} ]; then rm -f {name}; fi && echo \"{DIR_MARKER}$(pwd)\" && echo \"{MODE_MARKER}$(ls -ldn .)\" && echo \"{USER_MARKER}$(id -u)\"'"
        )
    }

    /// The socket's absolute path from the preparatory run's output.
    ///
    /// # Errors
    /// Output without the markers, a directory that other users may write to or that another
    /// user owns (they could replace the socket), or a path ssh or the kernel cannot take.
    pub fn resolve(&self, output: &str) -> Result<String, String> {
        let line = |marker: &str| {
            output
                .lines()
                .find_map(|l| l.strip_prefix(marker))
                .map(str::trim_end)
        };
        let (Some(dir), Some(mode)) = (line(DIR_MARKER), line(MODE_MARKER)) else {
            return Err(format!(
                "the preparatory run printed no directory for the socket {}: {:?}",
                self.given,
                output.trim()
            ));
        };
        let perms = mode
            .split_whitespace()
            .next()
            .unwrap_or_default()
            .as_bytes();
        if perms.len() < 10 || perms[0] != b'd' {
            return Err(format!(
                "cannot tell the mode of {dir} on R from `ls -ld`: {mode:?}"
            ));
        }
        let owner = mode.split_whitespace().nth(2).unwrap_or_default();
        let user = line(USER_MARKER).unwrap_or_default();
        if user.is_empty() || owner.parse::<u32>().is_err() {
            return Err(format!(
                "cannot tell who owns {dir} on R from `ls -ldn` and `id -u`: {mode:?}, {user:?}"
            ));
        }
        if owner != user && owner != "0" {
            return Err(format!(
                "the socket's directory {dir} on R belongs to another user (uid {owner}; you are uid {user}): they could replace the socket; give --tunnel-socket a directory of your own"
            ));
        }
        if perms[5] == b'w' || perms[8] == b'w' {
            return Err(format!(
                "the socket's directory {dir} on R is writable by other users ({}): one of them could replace the socket; run `chmod 700 {dir}` on R, or give --tunnel-socket a directory of its own",
                String::from_utf8_lossy(&perms[..10])
            ));
        }
        let path = if dir.ends_with('/') {
            format!("{dir}{}", self.name)
        } else {
            format!("{dir}/{}", self.name)
        };
        if path.contains(':') || path.chars().any(char::is_whitespace) {
            return Err(format!(
                "the socket path {path:?} on R holds a ':' or a space, which ssh's -R cannot carry; give --tunnel-socket an absolute path without them"
            ));
        }
        if path.len() > MAX_SOCKET_PATH {
            return Err(format!(
                "the socket path {path} on R is {} bytes long, more than a Unix socket path may be ({MAX_SOCKET_PATH}); give --tunnel-socket a shorter path",
                path.len()
            ));
        }
        Ok(path)
    }
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
        let remote = match (args.tunnel_remote_port, &args.tunnel_socket) {
            (Some(port), None) => Remote::Port(Some(port)),
            (Some(_), Some(_)) => {
                bail!("--tunnel-socket and --tunnel-remote-port exclude each other; give one")
            }
            (None, socket) => Remote::Socket(RemoteSocket::parse(
                socket.as_deref().unwrap_or(DEFAULT_SOCKET),
            )?),
        };
        Ok(Some(Tunnel {
            program: find_program(&args.ssh_command)?,
            destination: destination.clone(),
            ssh_port: args.ssh_port,
            options: args.ssh_options.clone(),
            remote,
        }))
    }

    /// ssh's arguments for a daemon listening on `listen`. A socket forward names the socket
    /// as `--tunnel-socket` gave it; the supervisor puts in its absolute path once the
    /// preparatory run has told it ([`forward_args`]).
    pub fn ssh_args(&self, listen: SocketAddr) -> Vec<String> {
        let (host, port) = forward_target(listen);
        let mut args: Vec<String> = vec!["-N".into(), "-T".into(), "-v".into()];
        args.extend(self.option_args());
        let listen_on = match &self.remote {
            Remote::Socket(socket) => socket.given.clone(),
            Remote::Port(_) => self.remote_port(listen).to_string(),
        };
        args.push("-R".into());
        args.push(format!("{listen_on}:{host}:{port}"));
        // `--` so that no destination is ever read as an option.
        args.push("--".into());
        args.push(self.destination.clone());
        args
    }

    /// The preparatory run's arguments (same options and destination, the remote command
    /// last), for a socket forward.
    pub fn prepare_args(&self) -> Option<Vec<String>> {
        let Remote::Socket(socket) = &self.remote else {
            return None;
        };
        let mut args: Vec<String> = vec!["-T".into()];
        args.extend(self.option_args());
        args.push("--".into());
        args.push(self.destination.clone());
        args.push(socket.prepare_command());
        Some(args)
    }

    /// `-o` options in the order ssh must read them, then `-p`.
    fn option_args(&self) -> Vec<String> {
        let mut args = Vec::new();
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
        args
    }

    /// The port the tunnel opens on R, for a TCP forward.
    pub fn remote_port(&self, listen: SocketAddr) -> u16 {
        match self.remote {
            Remote::Port(port) => port.unwrap_or(listen.port()),
            Remote::Socket(_) => listen.port(),
        }
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
        let (what, remote) = match &self.remote {
            Remote::Port(_) => (
                format!(
                    "127.0.0.1:{} on {} -> this daemon ({listen}); R's client uses --server ws://127.0.0.1:{}",
                    self.remote_port(listen),
                    self.destination,
                    self.remote_port(listen),
                ),
                Listen::Port(self.remote_port(listen)),
            ),
            Remote::Socket(socket) => (
                format!("{{socket}} on {} -> this daemon ({listen}); R's client uses --server unix:{{socket}}", self.destination),
                Listen::Socket(socket.given.clone()),
            ),
        };
        let launch = Launch {
            program: self.program.clone(),
            args: self.ssh_args(listen),
            prepare: match (&self.remote, self.prepare_args()) {
                (Remote::Socket(socket), Some(args)) => Some(Prepare {
                    args,
                    socket: socket.clone(),
                }),
                _ => None,
            },
            what,
            hints: Hints {
                destination: self.destination.clone(),
                remote,
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
    /// The longest a preparatory run may take (longer than ssh's `ConnectTimeout`).
    pub prepare_timeout: Duration,
}

impl Default for Timing {
    fn default() -> Timing {
        Timing {
            up_grace: Duration::from_secs(30),
            stable_after: Duration::from_secs(60),
            backoff_initial: Duration::from_secs(1),
            backoff_max: Duration::from_secs(60),
            stop_grace: Duration::from_secs(3),
            prepare_timeout: Duration::from_secs(60),
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
    /// For a socket forward: the run before each forward that makes the socket's directory
    /// and tells its absolute path.
    pub prepare: Option<Prepare>,
    /// "R's port -> this daemon", for log lines; `{socket}` stands for the socket's path.
    pub what: String,
    /// What exit hints need to know.
    pub hints: Hints,
}

/// The preparatory ssh run of a socket forward.
#[derive(Debug, Clone)]
pub struct Prepare {
    /// Its arguments, the remote command last.
    pub args: Vec<String>,
    /// The socket it prepares.
    pub socket: RemoteSocket,
}

/// `args` with the socket's absolute path as the listening end of the `-R` forward.
pub fn forward_args(args: &[String], socket: &str) -> Vec<String> {
    let mut args = args.to_vec();
    if let Some(i) = args.iter().position(|a| a == "-R") {
        if let Some(spec) = args.get_mut(i + 1) {
            // The spec is `GIVEN:HOST:PORT`, and GIVEN holds no ':'.
            if let Some((_, target)) = spec.split_once(':') {
                *spec = format!("{socket}:{target}");
            }
        }
    }
    args
}

/// Facts that turn ssh's error messages into advice.
#[derive(Debug, Clone)]
pub struct Hints {
    /// `[USER@]HOST`.
    pub destination: String,
    /// What the tunnel opens on R.
    pub remote: Listen,
}

/// What the tunnel opens on R, for messages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Listen {
    /// A TCP port.
    Port(u16),
    /// A Unix socket, as `--tunnel-socket` gave it.
    Socket(String),
}

impl Hints {
    /// What to do about an ssh exit whose last lines are `tail`, when the cause is known.
    fn for_tail(&self, tail: &[String]) -> Option<String> {
        let text = tail.join("\n");
        let Hints {
            destination,
            remote,
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
            Some(match remote {
                Listen::Port(remote_port) => format!(
                    "port {remote_port} on {destination} is taken (another tunnel or daemon?): stop that, or choose another port with --tunnel-remote-port and give R's client the same port in --server"
                ),
                Listen::Socket(socket) => format!(
                    "sshd on {destination} could not create the socket {socket}: its directory is not writable by you there, something other than a socket stands at that path, or R's sshd forbids socket forwarding (AllowStreamLocalForwarding no, DisableForwarding yes) or is older than OpenSSH 6.7; fix that, choose another --tunnel-socket, or forward a TCP port with --tunnel-remote-port PORT"
                ),
            })
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
    /// The preparatory run of a socket forward failed; the forward was not tried.
    PrepareFailed(String),
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
    let mut backoff = zync_cli::Backoff::new(timing.backoff_initial, timing.backoff_max);
    let mut emit = |run: &Launch, event: Event| {
        log(run, &timing, &event);
        observe(&event);
    };
    loop {
        if *stop.borrow() {
            break;
        }
        // This attempt's launch: a socket forward learns its absolute path first.
        let mut run = launch.clone();
        let prepared = match &launch.prepare {
            None => Ok(()),
            Some(prepare) => match prepare_socket(&launch, prepare, &timing, &mut stop).await {
                Prepared::Socket(path) => {
                    run.args = forward_args(&launch.args, &path);
                    run.what = launch.what.replace("{socket}", &path);
                    Ok(())
                }
                Prepared::Failed(why) => Err(why),
                Prepared::Stopped => break,
            },
        };
        match prepared.map(|()| {
            tracing::info!(
                "tunnel: starting {} {}",
                run.program.display(),
                run.args.join(" ")
            );
            spawn(&run.program, &run.args, Stdio::null())
        }) {
            Err(why) => emit(&run, Event::PrepareFailed(why)),
            Ok(Err(e)) => {
                let hint = if e.kind() == std::io::ErrorKind::NotFound {
                    "; install openssh-client (apt-get install openssh-client) or name the ssh program with --ssh-command"
                } else {
                    ""
                };
                emit(
                    &run,
                    Event::SpawnFailed(format!("cannot run {}: {e}{hint}", run.program.display())),
                )
            }
            Ok(Ok(mut child)) => {
                emit(
                    &run,
                    Event::Started {
                        pid: child.id().unwrap_or_default(),
                    },
                );
                let mut emit_run = |event| emit(&run, event);
                match run_once(&mut child, &timing, &mut stop, &mut emit_run).await {
                    Ended::Stopped => break,
                    Ended::Exited {
                        status,
                        up_for,
                        tail,
                    } => {
                        if up_for.is_some_and(|t| t >= timing.stable_after) {
                            backoff.reset();
                        }
                        emit_run(Event::Exited {
                            code: status.code(),
                            signal: std::os::unix::process::ExitStatusExt::signal(&status),
                            tail,
                        });
                    }
                }
            }
        }
        let delay = backoff.next_delay();
        emit(&run, Event::Retrying(delay));
        tokio::select! {
            () = tokio::time::sleep(delay) => {}
            () = stop_requested(&mut stop) => break,
        }
    }
    emit(&launch, Event::Stopped);
}

/// How a preparatory run ended.
enum Prepared {
    /// The socket's absolute path on R.
    Socket(String),
    /// Why there is no path, with advice.
    Failed(String),
    /// A stop was requested meanwhile.
    Stopped,
}

/// Runs the preparatory ssh of a socket forward: makes the socket's directory on R and
/// learns the socket's absolute path (ssh needs one for `-R`).
async fn prepare_socket(
    launch: &Launch,
    prepare: &Prepare,
    timing: &Timing,
    stop: &mut watch::Receiver<bool>,
) -> Prepared {
    tracing::info!(
        "tunnel: preparing the socket's directory on R: {} {}",
        launch.program.display(),
        prepare.args.join(" ")
    );
    let child = match spawn(&launch.program, &prepare.args, Stdio::piped()) {
        Ok(child) => child,
        Err(e) => {
            return Prepared::Failed(format!(
                "cannot run {}: {e}; install openssh-client (apt-get install openssh-client) or name the ssh program with --ssh-command",
                launch.program.display()
            ))
        }
    };
    // Dropping the wait (a timeout, a stop) drops the child, which kills it.
    let finished = tokio::time::timeout(timing.prepare_timeout, child.wait_with_output());
    let output = tokio::select! {
        output = finished => output,
        () = stop_requested(stop) => return Prepared::Stopped,
    };
    let output = match output {
        Err(_) => {
            return Prepared::Failed(format!(
                "ssh did not finish preparing the socket's directory on {} within {:?}",
                launch.hints.destination, timing.prepare_timeout
            ))
        }
        Ok(Err(e)) => return Prepared::Failed(format!("cannot wait for ssh: {e}")),
        Ok(Ok(output)) => output,
    };
    if !output.status.success() {
        let mut tail = VecDeque::new();
        for line in String::from_utf8_lossy(&output.stderr).lines() {
            keep(&mut tail, line.to_string());
        }
        let tail: Vec<String> = tail.into();
        let hint = launch
            .hints
            .for_tail(&tail)
            .map(|h| format!("; {h}"))
            .unwrap_or_default();
        let said = if tail.is_empty() {
            "no output".to_string()
        } else {
            tail.join(" | ")
        };
        return Prepared::Failed(format!(
            "ssh could not prepare the socket's directory on {} ({}): {said}{hint}",
            launch.hints.destination, output.status
        ));
    }
    match prepare
        .socket
        .resolve(&String::from_utf8_lossy(&output.stdout))
    {
        Ok(path) => Prepared::Socket(path),
        Err(why) => Prepared::Failed(why),
    }
}

/// Logs one state change, with advice when ssh's output makes the cause clear.
fn log(launch: &Launch, timing: &Timing, event: &Event) {
    match event {
        Event::Started { pid } => tracing::info!(pid, "tunnel: ssh started"),
        Event::SpawnFailed(e) => tracing::error!("tunnel: {e}"),
        Event::PrepareFailed(e) => tracing::warn!("tunnel: {e}"),
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
            tracing::info!("tunnel: retrying in {:.1} s", delay.as_secs_f64())
        }
        Event::Stopped => tracing::info!("tunnel: stopped"),
    }
}

/// Starts ssh: no stdin, stderr read by the supervisor, in a process group of its own (a
/// Ctrl-C at the terminal reaches the daemon, which then ends ssh; ssh does not die first and
/// look like a failure), killed when its handle drops, and killed when the daemon dies.
fn spawn(program: &Path, args: &[String], stdout: Stdio) -> std::io::Result<Child> {
    let mut cmd = Command::new(program);
    cmd.args(args)
        .stdin(Stdio::null())
        .stdout(stdout)
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
            remote: Remote::Port(None),
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
            "StreamLocalBindUnlink=yes",
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
        t.remote = Remote::Port(Some(9000));
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
        let cases: [(&[&str], &str); 6] = [
            (
                &["--tunnel", "r", "--tunnel-socket", "~/my socket"],
                "--tunnel-socket",
            ),
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
    fn exit_hints_name_the_fix() {
        let hints = Hints {
            destination: "me@r".into(),
            remote: Listen::Port(8000),
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
        let socket = Hints {
            destination: "me@r".into(),
            remote: Listen::Socket("~/.zync/zync.sock".into()),
        };
        let hint = socket
            .for_tail(&[
                "Error: remote port forwarding failed for listen path /home/me/.zync/zync.sock"
                    .into(),
            ])
            .expect("a hint for a refused socket");
        for expected in [
            "~/.zync/zync.sock",
            "AllowStreamLocalForwarding",
            "--tunnel-remote-port",
        ] {
            assert!(
                hint.contains(expected),
                "{expected:?} missing from {hint:?}"
            );
        }
    }

    #[test]
    fn both_kinds_of_forward_confirmation_count() {
        assert!(confirms_forward(
            "debug1: remote forward success for: listen 8000, connect 127.0.0.1:8000"
        ));
        assert!(confirms_forward(
            "debug1: remote forward success for: listen /home/me/.zync/zync.sock, connect 127.0.0.1:8000"
        ));
        assert!(!confirms_forward(
            "Error: remote port forwarding failed for listen path /home/me/.zync/zync.sock"
        ));
    }

    fn parsed(extra: &[&str]) -> Tunnel {
        use clap::Parser;
        let mut argv = vec![
            "zync-daemon",
            "--dirs",
            "a:/tmp",
            "--ssh-command",
            "/bin/sh",
            "--tunnel",
            "me@r-box",
        ];
        argv.extend_from_slice(extra);
        let args = Args::try_parse_from(argv).expect("the command line parses");
        Tunnel::from_args(&args)
            .expect("a valid tunnel")
            .expect("--tunnel was given")
    }

    #[test]
    fn a_socket_in_a_private_directory_is_the_default_forward() {
        let t = parsed(&[]);
        let args = t.ssh_args(addr("127.0.0.1:8000"));
        assert_eq!(
            args[position(&args, "-R") + 1],
            "~/.zync/zync.sock:127.0.0.1:8000"
        );
        assert!(position(&args, "StreamLocalBindUnlink=yes") < position(&args, "-R"));
        let resolved = forward_args(&args, "/home/me/.zync/zync.sock");
        assert_eq!(
            resolved[position(&resolved, "-R") + 1],
            "/home/me/.zync/zync.sock:127.0.0.1:8000"
        );
        assert_eq!(&resolved[resolved.len() - 2..], ["--", "me@r-box"]);
        let prepare = t.prepare_args().expect("a socket forward is prepared");
        assert!(!prepare.contains(&"-N".to_string()) && !prepare.contains(&"-R".to_string()));
        assert!(position(&prepare, "BatchMode=yes") < position(&prepare, "--"));
        assert_eq!(prepare[prepare.len() - 2], "me@r-box");
        let command = &prepare[prepare.len() - 1];
        for expected in [
            "umask 077",
            "mkdir -p ./.zync",
            "chmod 700 ./.zync",
            "cd ./.zync",
        ] {
            assert!(
                command.contains(expected),
                "{expected:?} missing from {command:?}"
            );
        }
        // A TCP port instead, when asked for: no preparation.
        let t = parsed(&["--tunnel-remote-port", "9000"]);
        assert!(t.prepare_args().is_none());
        let args = t.ssh_args(addr("127.0.0.1:8000"));
        assert_eq!(args[position(&args, "-R") + 1], "9000:127.0.0.1:8000");
        // A socket of the user's choice: created 0700 if missing, never chmod-ed.
        let t = parsed(&["--tunnel-socket", "/run/user/1000/zync.sock"]);
        let prepare = t.prepare_args().expect("prepared");
        let command = &prepare[prepare.len() - 1];
        assert!(
            command.contains("mkdir -p /run/user/1000") && !command.contains("chmod"),
            "{command}"
        );
    }

    #[test]
    fn socket_paths_split_into_a_directory_and_a_name_or_are_refused() {
        let cases = [
            ("~/.zync/zync.sock", "./.zync", "zync.sock", true),
            ("~/run/z.sock", "./run", "z.sock", false),
            ("run/z.sock", "./run", "z.sock", false),
            (
                "/run/user/1000/zync.sock",
                "/run/user/1000",
                "zync.sock",
                false,
            ),
            ("/z.sock", "/", "z.sock", false),
            ("z.sock", ".", "z.sock", false),
            ("~/-x/z.sock", "./-x", "z.sock", false),
        ];
        for (given, dir, name, own_dir) in cases {
            let socket = RemoteSocket::parse(given).expect(given);
            assert_eq!(
                (socket.dir.as_str(), socket.name.as_str(), socket.own_dir),
                (dir, name, own_dir),
                "{given}"
            );
        }
        for given in [
            "",
            "~/",
            "~/dir/",
            "a b.sock",
            "x:y.sock",
            "~other/z.sock",
            "'; rm -rf ~'",
            "$HOME/z",
            "/a/..",
        ] {
            let err = format!("{:#}", RemoteSocket::parse(given).expect_err(given));
            assert!(err.contains("--tunnel-socket"), "{given:?}: {err}");
        }
    }

    #[test]
    fn the_preparatory_output_gives_the_absolute_path_in_a_private_directory() {
        let socket = RemoteSocket::parse(DEFAULT_SOCKET).expect("default");
        let output = |mode: &str| {
            format!("Welcome to R!\nzync-socket-dir /home/me/.zync\nzync-socket-mode {mode} 2 1000 1000 40 Jan  1 00:00 .\nzync-socket-user 1000\n")
        };
        for mode in ["drwx------", "drwx------.", "drwx------+", "drwxr-xr-x"] {
            assert_eq!(
                socket.resolve(&output(mode)).as_deref(),
                Ok("/home/me/.zync/zync.sock"),
                "{mode}"
            );
        }
        for mode in ["drwxrwxrwt", "drwxrwx---", "drwx---rwx"] {
            let err = socket.resolve(&output(mode)).expect_err(mode);
            assert!(err.contains("chmod 700 /home/me/.zync"), "{mode}: {err}");
        }
        for bad in [
            "",
            "zync-socket-dir /x\n",
            "zync-socket-dir /x\nzync-socket-mode -rw------- 1 7 7 .\nzync-socket-user 7\n",
            "zync-socket-dir /x\nzync-socket-mode drwx------ 1 7 7 .\n",
            "zync-socket-dir /x\nzync-socket-mode drwx------ 1 me me .\nzync-socket-user 7\n",
        ] {
            assert!(socket.resolve(bad).is_err(), "{bad:?}");
        }
        // A private directory of another user's: they could replace the socket. Root's is fine.
        let theirs = "zync-socket-dir /x\nzync-socket-mode drwxr-xr-x 2 65534 65534 .\nzync-socket-user 1000\n";
        let err = socket
            .resolve(theirs)
            .expect_err("another user's directory");
        assert!(err.contains("belongs to another user (uid 65534"), "{err}");
        let roots =
            "zync-socket-dir /x\nzync-socket-mode drwxr-xr-x 2 0 0 .\nzync-socket-user 1000\n";
        assert_eq!(socket.resolve(roots).as_deref(), Ok("/x/zync.sock"));
        let long = format!(
            "zync-socket-dir /{}\nzync-socket-mode drwx------ 2 0 0 .\nzync-socket-user 0\n",
            "d".repeat(100)
        );
        assert!(socket.resolve(&long).is_err_and(|e| e.contains("shorter")));
        let root = RemoteSocket::parse("/z.sock").expect("root");
        assert_eq!(
            root.resolve(
                "zync-socket-dir /\nzync-socket-mode drwxr-xr-x 2 0 0 .\nzync-socket-user 0\n"
            )
            .as_deref(),
            Ok("/z.sock")
        );
    }

    /// Runs a socket's preparatory command with /bin/sh in `home`, as sshd would run it.
    fn run_prepare(socket: &RemoteSocket, home: &Path) -> std::process::Output {
        std::process::Command::new("/bin/sh")
            .arg("-c")
            .arg(socket.prepare_command())
            .current_dir(home)
            .output()
            .expect("run /bin/sh")
    }

    #[test]
    fn the_preparatory_command_makes_a_private_directory_and_removes_only_a_stale_socket() {
        use std::os::unix::fs::{FileTypeExt, PermissionsExt};
        let home = tempfile::tempdir().expect("home");
        let socket = RemoteSocket::parse(DEFAULT_SOCKET).expect("default");
        let out = run_prepare(&socket, home.path());
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let dir = home.path().join(".zync");
        let mode = |p: &Path| std::fs::metadata(p).expect("stat").permissions().mode() & 0o777;
        assert_eq!(mode(&dir), 0o700);
        let real = std::fs::canonicalize(&dir).expect("canonical");
        assert_eq!(
            socket.resolve(&String::from_utf8_lossy(&out.stdout)),
            Ok(format!("{}/zync.sock", real.display()))
        );
        // An existing ~/.zync that others may enter is closed again; a stale socket goes.
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o777)).expect("chmod");
        let stale = std::os::unix::net::UnixListener::bind(dir.join("zync.sock")).expect("bind");
        drop(stale);
        let out = run_prepare(&socket, home.path());
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(mode(&dir), 0o700);
        assert!(
            !dir.join("zync.sock").exists(),
            "the stale socket is still there"
        );
        // Anything but a socket at that path stays.
        std::fs::write(dir.join("zync.sock"), "keep me").expect("write");
        assert!(run_prepare(&socket, home.path()).status.success());
        assert!(!std::fs::symlink_metadata(dir.join("zync.sock"))
            .expect("stat")
            .file_type()
            .is_socket());
        assert_eq!(
            std::fs::read(dir.join("zync.sock")).expect("read"),
            b"keep me"
        );
        // A directory of the user's choice is created 0700 but an existing one is left as is.
        let theirs = home.path().join("shared");
        std::fs::create_dir(&theirs).expect("mkdir");
        std::fs::set_permissions(&theirs, std::fs::Permissions::from_mode(0o777)).expect("chmod");
        let custom = RemoteSocket::parse("shared/z.sock").expect("custom");
        let out = run_prepare(&custom, home.path());
        assert_eq!(
            mode(&theirs),
            0o777,
            "a directory of the user's was chmod-ed"
        );
        let err = custom
            .resolve(&String::from_utf8_lossy(&out.stdout))
            .expect_err("a world-writable directory");
        assert!(err.contains("chmod 700"), "{err}");
        let fresh = RemoteSocket::parse("new/deeper/z.sock").expect("fresh");
        assert!(run_prepare(&fresh, home.path()).status.success());
        assert_eq!(mode(&home.path().join("new")), 0o700);
        assert_eq!(mode(&home.path().join("new/deeper")), 0o700);
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
            prepare: None,
            what: "test".into(),
            hints: Hints {
                destination: "r".into(),
                remote: Listen::Port(1),
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
            prepare_timeout: Duration::from_secs(10),
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
        // Each wait is its step with jitter: somewhere in the step's upper half.
        within_steps(&waits, &[10, 20, 40, 40]);
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
        within_steps(&waits, &[10, 10, 10]);
    }

    /// Asserts that `waits` (ms) are the backoff `steps` (ms) with jitter: each in the upper
    /// half of its step (rounded down to whole milliseconds).
    fn within_steps(waits: &[u128], steps: &[u128]) {
        assert_eq!(waits.len(), steps.len(), "{waits:?}");
        for (wait, step) in waits.iter().zip(steps) {
            assert!(
                (step / 2 - 1..=*step).contains(wait),
                "wait {wait} ms is not in the upper half of step {step} ms: {waits:?}"
            );
        }
    }

    #[tokio::test]
    async fn a_program_that_cannot_run_is_reported_and_retried() {
        let launch = Launch {
            program: PathBuf::from("/nonexistent/ssh"),
            args: vec![],
            prepare: None,
            what: "test".into(),
            hints: Hints {
                destination: "r".into(),
                remote: Listen::Port(1),
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

    /// A fake ssh for a socket forward: its preparatory run prints `mode` for the directory;
    /// its forward records its arguments in `dir/forward-args` and confirms.
    fn fake_socket_ssh(dir: &Path, mode: &str) -> Launch {
        let record = dir.join("forward-args");
        let body = format!(
            "case \"$*\" in\n*zync-socket-dir*) echo 'motd noise'; echo 'zync-socket-dir /home/me/.zync'; echo 'zync-socket-mode {mode} 2 1000 1000 40 Jan  1 00:00 .'; echo 'zync-socket-user 1000'; exit 0;;\nesac\necho \"$@\" > {record}\necho 'debug1: remote forward success for: listen /home/me/.zync/zync.sock, connect 127.0.0.1:8000' >&2\nexec sleep 60",
            record = record.display()
        );
        let mut launch = fake_ssh(dir, &body);
        let mut t = tunnel(&[]);
        t.remote = Remote::Socket(RemoteSocket::parse(DEFAULT_SOCKET).expect("default"));
        launch.args = t.ssh_args(addr("127.0.0.1:8000"));
        launch.prepare = t.prepare_args().map(|args| Prepare {
            args,
            socket: RemoteSocket::parse(DEFAULT_SOCKET).expect("default"),
        });
        launch
    }

    #[tokio::test]
    async fn a_socket_forward_runs_with_the_path_the_preparation_reported() {
        let dir = tempfile::tempdir().expect("temp dir");
        let launch = fake_socket_ssh(dir.path(), "drwx------");
        let events = supervise_until(launch, fast(), |e| {
            e.contains(&Event::Up { confirmed: true })
        })
        .await;
        // The last run is the one that came up (an earlier try may have met the script still
        // open for writing in another test's forked child: "Text file busy").
        assert!(
            matches!(
                &events[events.len().saturating_sub(3)..],
                [
                    Event::Started { .. },
                    Event::Up { confirmed: true },
                    Event::Stopped
                ]
            ),
            "{events:?}"
        );
        let args = std::fs::read_to_string(dir.path().join("forward-args")).expect("forward ran");
        assert!(
            args.contains("-R /home/me/.zync/zync.sock:127.0.0.1:8000 -- me@r-box"),
            "{args}"
        );
    }

    #[tokio::test]
    async fn a_directory_others_can_write_stops_the_forward_and_is_retried() {
        let dir = tempfile::tempdir().expect("temp dir");
        let launch = fake_socket_ssh(dir.path(), "drwxrwxrwx");
        let refused = |e: &Event| matches!(e, Event::PrepareFailed(why) if why.contains("chmod 700 /home/me/.zync"));
        let events = supervise_until(launch, fast(), |e| {
            e.iter().filter(|e| refused(e)).count() >= 2
        })
        .await;
        assert!(
            events.iter().filter(|e| refused(e)).count() >= 2,
            "the refusal was not reported and retried: {events:?}"
        );
        assert!(
            !events.iter().any(|e| matches!(e, Event::Started { .. })),
            "{events:?}"
        );
        assert!(!dir.path().join("forward-args").exists(), "the forward ran");
    }
}
