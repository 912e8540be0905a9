//! How the client reaches the daemon: a TCP WebSocket URL (`ws://HOST:PORT`), or a Unix
//! socket on R (`unix:PATH`) that only the user's own processes can serve.
//!
//! A TCP port on R's loopback is open to every local user, who can also bind it first while
//! the tunnel is down. A Unix socket in a directory only the user can enter is not, and its
//! peer's uid can be checked before a byte is sent (invariant 8: no other user on R can pose
//! as the daemon).

use std::fmt;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpStream, UnixStream};

use crate::error::ClientError;

/// What the WebSocket upgrade of a Unix socket connection asks for: the daemon does not look
/// at the host, but an HTTP request needs one.
const UNIX_REQUEST_URL: &str = "ws://localhost/";

/// The forms `--server` accepts, for error messages.
const ACCEPTED: &str = "ws://HOST:PORT (for example ws://localhost:8000) or unix:PATH (for example unix:~/.zync/zync.sock, the socket `zync-daemon --tunnel` opens on R)";

/// A byte stream to the daemon, whichever transport carries it.
pub trait Stream: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Stream for T {}

/// A connected stream, boxed so that one WebSocket type serves both transports.
pub type BoxStream = Box<dyn Stream>;

/// Where the daemon is, parsed from `--server` (or `server` in client.toml).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Server {
    /// A WebSocket URL over TCP, `ws://HOST:PORT[/PATH]`.
    Tcp {
        /// The URL as given.
        url: String,
        /// `HOST:PORT` to connect to.
        address: String,
    },
    /// A Unix socket on this machine, `~/` expanded.
    Unix(PathBuf),
}

/// Why the daemon could not be reached, or was refused.
#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    /// `--server` is neither form.
    #[error("--server {given:?} {problem}; write it as {ACCEPTED}")]
    BadServer {
        /// What was given.
        given: String,
        /// What is wrong with it.
        problem: String,
    },
    /// Nothing answered (no socket, nobody listening, connection refused).
    #[error("{0}")]
    Unreachable(String),
    /// The socket is served by another user's process.
    #[error("the socket {path} is served by a process of uid {owner}, not by you (uid {me}): another user may be posing as the daemon, so the client will not use it; remove that socket (or ask its owner to), point --server at a socket in a directory only you can enter, and let `zync-daemon --tunnel` create it there", path = path.display())]
    ForeignPeer {
        /// The socket.
        path: PathBuf,
        /// The uid of the process listening on it.
        owner: u32,
        /// The client's uid.
        me: u32,
    },
    /// A server on this machine held by another user's process.
    #[error("the server at {address} ({peer}) is held by a process of uid {owner}, not by you (uid {me}) nor root: another user may be relaying to the daemon to read what it sends, so the client will not use it; find who holds it with `ss -ltnp`, run the tunnel as yourself on an address only it can hold (ws://127.0.0.1:PORT when the tunnel binds 127.0.0.1), or use `zync-daemon --tunnel` and its socket (--server unix:~/.zync/zync.sock)")]
    ForeignServer {
        /// `--server`'s HOST:PORT.
        address: String,
        /// The address it reached.
        peer: std::net::SocketAddr,
        /// The uid of the process holding it.
        owner: u32,
        /// The client's uid.
        me: u32,
    },
    /// The socket's directory lets other users replace the socket.
    #[error("the socket {path} is in {dir}, which other users can write to (mode {mode:03o}): one of them could replace the socket with their own; run `chmod 700 {dir}`, or use a socket in a directory only you can enter (the default ~/.zync/zync.sock)", path = path.display(), dir = dir.display())]
    OpenDirectory {
        /// The socket.
        path: PathBuf,
        /// Its directory.
        dir: PathBuf,
        /// The directory's permission bits.
        mode: u32,
    },
    /// The socket's directory belongs to another user, who could replace the socket.
    #[error("the socket {path} is in {dir}, which belongs to another user (uid {owner}; you are uid {me}): they could replace the socket with their own; use a socket in a directory of your own (the default ~/.zync/zync.sock)", path = path.display(), dir = dir.display())]
    ForeignDirectory {
        /// The socket.
        path: PathBuf,
        /// Its directory.
        dir: PathBuf,
        /// The directory's owner.
        owner: u32,
        /// This process's effective uid.
        me: u32,
    },
}

impl TransportError {
    /// True when trying again cannot help until the user changes something.
    pub fn is_permanent(&self) -> bool {
        !matches!(self, TransportError::Unreachable(_))
    }

    /// The client's error for a failed connection to `server` (as the user wrote it).
    pub fn into_client_error(self, server: &str) -> ClientError {
        match self {
            TransportError::BadServer { .. } => ClientError::Config(self.to_string()),
            TransportError::Unreachable(reason) => ClientError::Unreachable {
                url: server.to_string(),
                reason,
            },
            TransportError::ForeignPeer { .. }
            | TransportError::ForeignServer { .. }
            | TransportError::OpenDirectory { .. }
            | TransportError::ForeignDirectory { .. } => ClientError::Untrusted(self.to_string()),
        }
    }
}

impl Server {
    /// Parses `--server`: `ws://HOST:PORT[/PATH]` or `unix:PATH`, where a leading `~/` in
    /// PATH is the home directory (`$HOME`).
    ///
    /// # Errors
    /// Any other form, an empty path, or `~/` without `$HOME`; the message names the forms
    /// accepted.
    pub fn parse(given: &str) -> Result<Server, TransportError> {
        let bad = |problem: &str| TransportError::BadServer {
            given: given.to_string(),
            problem: problem.to_string(),
        };
        if let Some(path) = given.strip_prefix("unix:") {
            if path.is_empty() {
                return Err(bad("has no socket path after unix:"));
            }
            let path = match path.strip_prefix("~/") {
                Some(rest) => match std::env::var_os("HOME").filter(|h| !h.is_empty()) {
                    Some(home) => PathBuf::from(home).join(rest),
                    None => {
                        return Err(bad(
                            "starts with ~/ but HOME is not set; write the whole path",
                        ))
                    }
                },
                None => PathBuf::from(path),
            };
            return Ok(Server::Unix(path));
        }
        let Some(rest) = given.strip_prefix("ws://") else {
            let problem = if given.starts_with("wss://") {
                "asks for TLS, which zync does not speak (the ssh tunnel encrypts)"
            } else {
                "is neither a ws:// URL nor a unix: socket"
            };
            return Err(bad(problem));
        };
        let address = rest.split(['/', '?', '#']).next().unwrap_or_default();
        let port = address
            .rsplit_once(':')
            .map(|(host, port)| (host, port.parse::<u16>()));
        match port {
            Some((host, Ok(port))) if !host.is_empty() && port != 0 => Ok(Server::Tcp {
                url: given.to_string(),
                address: address.to_string(),
            }),
            _ => Err(bad("has no HOST:PORT after ws://")),
        }
    }

    /// The URL of the WebSocket upgrade request sent over the connected stream.
    pub fn request_url(&self) -> &str {
        match self {
            Server::Tcp { url, .. } => url,
            Server::Unix(_) => UNIX_REQUEST_URL,
        }
    }
}

impl fmt::Display for Server {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Server::Tcp { url, .. } => f.write_str(url),
            Server::Unix(path) => write!(f, "unix:{}", path.display()),
        }
    }
}

/// Opens a stream to the daemon. A Unix socket is used only when its directory is closed to
/// other users and the process listening on it runs as the client's own uid.
///
/// # Errors
/// Nothing listening ([`TransportError::Unreachable`], saying for a socket that
/// `zync-daemon --tunnel` creates it), or a socket another user could serve or replace.
pub async fn connect(server: &Server) -> Result<BoxStream, TransportError> {
    match server {
        Server::Tcp { address, .. } => {
            let stream = TcpStream::connect(address.as_str()).await.map_err(|e| {
                TransportError::Unreachable(format!("cannot connect to {address}: {e}"))
            })?;
            check_tcp_peer(&stream, address).await?;
            // Small requests must not wait for Nagle's algorithm.
            let _ = stream.set_nodelay(true);
            Ok(Box::new(stream))
        }
        Server::Unix(path) => Ok(Box::new(connect_unix(path).await?)),
    }
}

async fn connect_unix(path: &Path) -> Result<UnixStream, TransportError> {
    let missing = |e: std::io::Error| {
        TransportError::Unreachable(format!(
            "the socket {} is missing or nobody listens on it ({e}); `zync-daemon --tunnel` on E creates it while its tunnel is up (see --tunnel-socket): check that the daemon runs and its log says \"tunnel up\"",
            path.display()
        ))
    };
    // Check the directory the socket is really in (a symlink could point elsewhere) before
    // connecting at all.
    let real = std::fs::canonicalize(path).map_err(missing)?;
    let dir = real.parent().unwrap_or(Path::new("/"));
    let meta = std::fs::metadata(dir).map_err(missing)?;
    check_directory(&real, dir, meta.permissions().mode())?;
    check_directory_owner(&real, dir, meta.uid(), effective_uid())?;
    let stream = UnixStream::connect(&real).await.map_err(missing)?;
    let peer = stream.peer_cred().map_err(|e| {
        TransportError::Unreachable(format!(
            "cannot tell who serves the socket {} ({e})",
            path.display()
        ))
    })?;
    check_peer(&real, peer.uid(), effective_uid())?;
    Ok(stream)
}

/// Refuses a socket whose directory group or others may write to: they could unlink the
/// socket and bind their own in its place while the tunnel restarts.
fn check_directory(path: &Path, dir: &Path, mode: u32) -> Result<(), TransportError> {
    if mode & 0o022 != 0 {
        return Err(TransportError::OpenDirectory {
            path: path.to_path_buf(),
            dir: dir.to_path_buf(),
            mode: mode & 0o7777,
        });
    }
    Ok(())
}

/// Refuses a socket whose directory another user owns (not this user, not root): however
/// private its mode, they may unlink the socket and bind their own, or change the mode.
fn check_directory_owner(
    path: &Path,
    dir: &Path,
    owner: u32,
    me: u32,
) -> Result<(), TransportError> {
    if owner != me && owner != 0 {
        return Err(TransportError::ForeignDirectory {
            path: path.to_path_buf(),
            dir: dir.to_path_buf(),
            owner,
            me,
        });
    }
    Ok(())
}

/// Refuses a server on this machine that a process of another user holds (not this user's,
/// not root's): that user could be relaying the handshake to the real daemon, whose proofs
/// then pass, and read or change everything that follows (another user who bound `[::1]:PORT`
/// before the tunnel did, say, when `localhost` resolves there first). A server on another
/// machine, or one the kernel cannot tell about, is not judged here. A server on this machine
/// that has not accepted the connection yet is waited for (up to [`ACCEPT_WAIT`]): until then
/// no process holds its end, and a busy machine's relay is slow to accept.
async fn check_tcp_peer(stream: &TcpStream, address: &str) -> Result<(), TransportError> {
    let (Ok(local), Ok(peer)) = (stream.local_addr(), stream.peer_addr()) else {
        return Ok(());
    };
    let start = std::time::Instant::now();
    loop {
        match zync_cli::peer_uid::lookup(local, peer) {
            Ok(owner) if owner != 0 && owner != effective_uid() => {
                return Err(TransportError::ForeignServer {
                    address: address.to_string(),
                    peer,
                    owner,
                    me: effective_uid(),
                })
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                if start.elapsed() >= ACCEPT_WAIT {
                    return Err(TransportError::Unreachable(format!(
                        "the server at {address} ({peer}, on this machine) has not accepted the \
                         connection after {} s, so who holds it cannot be told; check what \
                         listens there (`ss -ltnp`) and try again",
                        ACCEPT_WAIT.as_secs()
                    )));
                }
                tokio::time::sleep(std::time::Duration::from_millis(2)).await;
            }
            _ => return Ok(()),
        }
    }
}

/// How long a server on this machine may take to accept the connection before the client can
/// tell who holds it.
const ACCEPT_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

/// Refuses a socket served by a process of another uid.
fn check_peer(path: &Path, owner: u32, me: u32) -> Result<(), TransportError> {
    if owner != me {
        return Err(TransportError::ForeignPeer {
            path: path.to_path_buf(),
            owner,
            me,
        });
    }
    Ok(())
}

fn effective_uid() -> u32 {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_strings_parse_into_a_transport() {
        let tcp = Server::parse("ws://localhost:8000").expect("tcp");
        assert_eq!(
            tcp,
            Server::Tcp {
                url: "ws://localhost:8000".into(),
                address: "localhost:8000".into()
            }
        );
        assert_eq!(tcp.request_url(), "ws://localhost:8000");
        let with_path = Server::parse("ws://[::1]:9000/zync").expect("ipv6 with a path");
        assert!(matches!(&with_path, Server::Tcp { address, .. } if address == "[::1]:9000"));
        let unix = Server::parse("unix:/run/user/1000/zync.sock").expect("unix");
        assert_eq!(unix, Server::Unix("/run/user/1000/zync.sock".into()));
        assert_eq!(unix.request_url(), "ws://localhost/");
        assert_eq!(unix.to_string(), "unix:/run/user/1000/zync.sock");
        // Relative paths stay relative to the working directory.
        assert_eq!(
            Server::parse("unix:zync.sock").expect("relative"),
            Server::Unix("zync.sock".into())
        );
    }

    #[test]
    fn a_tilde_is_home() {
        let home = std::env::var_os("HOME").expect("HOME is set in tests");
        assert_eq!(
            Server::parse("unix:~/.zync/zync.sock").expect("tilde"),
            Server::Unix(PathBuf::from(home).join(".zync/zync.sock"))
        );
    }

    #[test]
    fn other_forms_are_refused_naming_the_accepted_ones() {
        for given in [
            "localhost:8000",
            "http://localhost:8000",
            "wss://localhost:8000",
            "ws://localhost",
            "ws://:8000",
            "ws://localhost:99999",
            "ws://localhost:0",
            "unix:",
            "unix",
            "/tmp/zync.sock",
            "",
        ] {
            let err = Server::parse(given).expect_err(given).to_string();
            assert!(
                err.contains("ws://HOST:PORT") && err.contains("unix:PATH"),
                "{given:?}: the accepted forms are not named in {err:?}"
            );
            assert!(
                err.contains(&format!("{given:?}")),
                "{given:?} not named in {err:?}"
            );
        }
    }

    #[test]
    fn a_directory_others_can_write_is_refused_with_the_chmod_fix() {
        let path = Path::new("/x/d/zync.sock");
        let dir = Path::new("/x/d");
        for mode in [0o40700, 0o40755, 0o40711, 0o40500] {
            assert!(check_directory(path, dir, mode).is_ok(), "{mode:o}");
        }
        for mode in [0o40777, 0o41777, 0o40770, 0o40720, 0o40702] {
            let err = check_directory(path, dir, mode).expect_err("writable by others");
            let shown = err.to_string();
            assert!(shown.contains("chmod 700 /x/d"), "{mode:o}: {shown}");
            assert!(err.is_permanent());
        }
    }

    #[test]
    fn a_directory_another_user_owns_is_refused_naming_its_owner() {
        let path = Path::new("/x/d/zync.sock");
        let dir = Path::new("/x/d");
        assert!(check_directory_owner(path, dir, 1000, 1000).is_ok());
        assert!(check_directory_owner(path, dir, 0, 1000).is_ok());
        let err = check_directory_owner(path, dir, 65534, 1000).expect_err("another user's");
        let shown = err.to_string();
        assert!(
            shown.contains("/x/d, which belongs to another user (uid 65534; you are uid 1000)"),
            "{shown}"
        );
        assert!(err.is_permanent());
    }

    #[test]
    fn a_peer_of_another_uid_is_refused_naming_the_socket_and_its_uid() {
        let path = Path::new("/x/d/zync.sock");
        assert!(check_peer(path, 1000, 1000).is_ok());
        let err = check_peer(path, 65534, 1000).expect_err("foreign peer");
        let shown = err.to_string();
        assert!(
            shown.contains("/x/d/zync.sock")
                && shown.contains("uid 65534")
                && shown.contains("uid 1000"),
            "{shown}"
        );
        assert!(err.is_permanent());
    }

    fn private_dir() -> tempfile::TempDir {
        let dir = tempfile::tempdir().expect("temp dir");
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o700))
            .expect("chmod 700");
        dir
    }

    #[tokio::test]
    async fn a_socket_of_ours_in_a_private_directory_connects() {
        let dir = private_dir();
        let path = dir.path().join("zync.sock");
        let listener = tokio::net::UnixListener::bind(&path).expect("bind");
        let accept = tokio::spawn(async move { listener.accept().await.map(|_| ()) });
        let server = Server::parse(&format!("unix:{}", path.display())).expect("parse");
        connect(&server).await.expect("our own socket");
        accept.await.expect("join").expect("accepted");
    }

    #[tokio::test]
    async fn a_socket_in_a_world_writable_directory_is_refused_before_connecting() {
        let dir = private_dir();
        let open = dir.path().join("open");
        std::fs::create_dir(&open).expect("mkdir");
        std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o777)).expect("chmod");
        let path = open.join("zync.sock");
        let _listener = tokio::net::UnixListener::bind(&path).expect("bind");
        // Through a symlink in a private directory: the socket's real directory counts.
        let link = dir.path().join("link.sock");
        std::os::unix::fs::symlink(&path, &link).expect("symlink");
        for given in [&path, &link] {
            let server = Server::Unix(given.clone());
            let err = match connect(&server).await {
                Ok(_) => panic!("{} was used", given.display()),
                Err(e) => e,
            };
            assert!(
                matches!(&err, TransportError::OpenDirectory { dir, .. } if dir == &open),
                "{}: {err}",
                given.display()
            );
        }
    }

    #[tokio::test]
    async fn a_missing_socket_says_the_tunnel_creates_it() {
        let dir = private_dir();
        let server = Server::Unix(dir.path().join("none.sock"));
        let err = match connect(&server).await {
            Ok(_) => panic!("connected to nothing"),
            Err(e) => e,
        };
        let shown = err.to_string();
        assert!(!err.is_permanent(), "{shown}");
        assert!(
            shown.contains("none.sock") && shown.contains("zync-daemon --tunnel"),
            "{shown}"
        );
    }
}
