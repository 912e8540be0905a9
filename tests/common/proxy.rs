//! A fault-injecting TCP proxy for the network tests: it listens on 127.0.0.1 (a free port)
//! and forwards each connection to a target address (the daemon), while the test cuts
//! connections, stalls them, delays them, counts the bytes that went each way, and reads the
//! client's requests (its WebSocket text frames) so a test can tell which files were
//! downloaded without reading a log.
//!
//! Plain std threads: one accept thread, and two pump threads per connection (one each way).
//! A cut shuts both sockets down, which wakes any pump blocked in a read.

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

/// How much one pump reads (and forwards) at a time: a "chunk" for [`Proxy::delay`].
const CHUNK: usize = 64 * 1024;

/// One proxied connection: both sockets, so a cut can close them from any thread.
struct Conn {
    id: u64,
    client: TcpStream,
    upstream: TcpStream,
    closed: Arc<AtomicBool>,
}

impl Conn {
    fn close(&self) {
        self.closed.store(true, Ordering::SeqCst);
        let _ = self.client.shutdown(Shutdown::Both);
        let _ = self.upstream.shutdown(Shutdown::Both);
    }
}

#[derive(Default)]
struct Shared {
    stop: AtomicBool,
    stalled: AtomicBool,
    /// Per-chunk delay, in microseconds.
    delay_us: AtomicU64,
    /// Close each connection after this many bytes daemon -> client; 0 = never.
    cut_after: AtomicU64,
    /// Bytes forwarded daemon -> client, over all connections.
    to_client: AtomicU64,
    /// Bytes forwarded client -> daemon, over all connections.
    to_daemon: AtomicU64,
    /// Connections accepted so far.
    accepted: AtomicU64,
    /// Connections closed by a cut (cut_all or cut_after_bytes).
    cuts: AtomicU64,
    /// Flip one byte in the middle of the next binary frame daemon -> client (file content).
    corrupt_next: AtomicBool,
    /// Binary frames corrupted so far.
    corrupted: AtomicU64,
    /// Rename every GET_WINDOWS request on its way to the daemon ([`Proxy::hide_get_windows`]).
    hide_windows: AtomicBool,
    /// Rename every GET_FILES request on its way to the daemon ([`Proxy::hide_get_files`]).
    hide_files: AtomicBool,
    next_id: AtomicU64,
    conns: Mutex<Vec<Conn>>,
    /// Every JSON request clients sent, with the connection it came on, in the order the
    /// proxy forwarded them.
    requests: Mutex<Vec<(u64, serde_json::Value)>>,
}

impl Shared {
    fn forget(&self, id: u64) {
        let mut conns = self.conns.lock().unwrap();
        if let Some(i) = conns.iter().position(|c| c.id == id) {
            conns.swap_remove(i).close();
        }
    }
}

/// The proxy; stops (closing every connection) when dropped.
pub struct Proxy {
    shared: Arc<Shared>,
    addr: SocketAddr,
    accept: Option<JoinHandle<()>>,
}

impl Proxy {
    /// Starts a proxy on 127.0.0.1 (a free port) forwarding to `target`.
    pub fn start(target: SocketAddr) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the proxy");
        let addr = listener.local_addr().expect("proxy address");
        listener
            .set_nonblocking(true)
            .expect("nonblocking listener");
        let shared = Arc::new(Shared::default());
        let accept = {
            let shared = Arc::clone(&shared);
            std::thread::spawn(move || accept_loop(&listener, target, &shared))
        };
        Proxy {
            shared,
            addr,
            accept: Some(accept),
        }
    }

    /// Starts a proxy in front of a daemon listening on 127.0.0.1:`port`.
    pub fn to_port(port: u16) -> Proxy {
        Proxy::start(SocketAddr::from(([127, 0, 0, 1], port)))
    }

    /// The proxy's address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The WebSocket URL a client uses to reach the daemon through the proxy.
    pub fn url(&self) -> String {
        format!("ws://{}", self.addr)
    }

    /// Closes every open connection now. New connections are accepted as before.
    pub fn cut_all(&self) {
        let conns = std::mem::take(&mut *self.shared.conns.lock().unwrap());
        self.shared
            .cuts
            .fetch_add(conns.len() as u64, Ordering::SeqCst);
        for conn in &conns {
            conn.close();
        }
    }

    /// Closes each connection once it has forwarded `n` bytes daemon -> client (counted per
    /// connection); `0` turns the cutting off. Applies to open connections too.
    pub fn cut_after_bytes(&self, n: u64) {
        self.shared.cut_after.store(n, Ordering::SeqCst);
    }

    /// Stops forwarding in both directions, without closing anything (a hung tunnel); `false`
    /// forwards again, including what was held back.
    pub fn stall(&self, on: bool) {
        self.shared.stalled.store(on, Ordering::SeqCst);
    }

    /// Waits this long before forwarding each chunk (each read of up to 64 KiB), each way.
    pub fn delay(&self, delay: Duration) {
        self.shared
            .delay_us
            .store(delay.as_micros() as u64, Ordering::SeqCst);
    }

    /// Bytes forwarded daemon -> client so far, over all connections.
    pub fn bytes_to_client(&self) -> u64 {
        self.shared.to_client.load(Ordering::SeqCst)
    }

    /// Bytes forwarded client -> daemon so far, over all connections.
    pub fn bytes_to_daemon(&self) -> u64 {
        self.shared.to_daemon.load(Ordering::SeqCst)
    }

    /// Connections accepted so far.
    pub fn connections(&self) -> u64 {
        self.shared.accepted.load(Ordering::SeqCst)
    }

    /// Connections the proxy closed on purpose so far (cut_all, cut_after_bytes).
    pub fn cuts(&self) -> u64 {
        self.shared.cuts.load(Ordering::SeqCst)
    }

    /// Flips one byte in the middle of the payload of the next binary frame the daemon sends
    /// (a chunk of file content, or of a delta), once: content corrupted on the way, which
    /// the client must catch (its sha256 check) and recover from.
    pub fn corrupt_next_binary_frame(&self) {
        self.shared.corrupt_next.store(true, Ordering::SeqCst);
    }

    /// Binary frames corrupted so far.
    /// Plays a daemon older than GET_WINDOWS: the name of every GET_WINDOWS request is changed
    /// on its way (to GET_WINDOWZ), so the daemon answers `unknown_operation` with its id, as an
    /// older one does.
    pub fn hide_get_windows(&self) {
        self.shared.hide_windows.store(true, Ordering::SeqCst);
    }

    /// Plays a daemon that advertised GET_FILES and does not know it: the name of every
    /// GET_FILES request is changed on its way, so the daemon answers `unknown_operation`.
    pub fn hide_get_files(&self) {
        self.shared.hide_files.store(true, Ordering::SeqCst);
    }

    pub fn corrupted(&self) -> u64 {
        self.shared.corrupted.load(Ordering::SeqCst)
    }

    /// Every JSON request clients sent through the proxy so far.
    pub fn requests(&self) -> Vec<serde_json::Value> {
        let requests = self.shared.requests.lock().unwrap();
        requests.iter().map(|(_, r)| r.clone()).collect()
    }

    /// The paths whose content clients asked for (GET_FILE, GET_FILES and GET_DELTA), in order, as
    /// `dir/path`: what was downloaded, whole or as a delta. Fails unless a handshake went
    /// through the proxy since it started (or since [`Proxy::reset_counts`]), so that "nothing
    /// was downloaded" cannot pass because the client went around the proxy.
    pub fn downloads(&self) -> Vec<String> {
        self.downloads_per_connection().concat()
    }

    /// [`Proxy::downloads`], one list per connection that completed a HELLO, in the order the
    /// connections were accepted (one `zync-client --once` run is one connection unless it
    /// reconnects).
    pub fn downloads_per_connection(&self) -> Vec<Vec<String>> {
        let requests = self.shared.requests.lock().unwrap();
        let hellos: Vec<u64> = requests
            .iter()
            .filter(|(_, r)| r["operation"] == "HELLO")
            .map(|(conn, _)| *conn)
            .collect();
        assert!(
            !hellos.is_empty(),
            "no handshake went through the proxy; requests seen: {:?}",
            requests.iter().map(|(_, r)| r).collect::<Vec<_>>()
        );
        hellos
            .iter()
            .map(|conn| {
                requests
                    .iter()
                    .filter(|(c, _)| c == conn)
                    .flat_map(|(_, r)| {
                        let dir = r["dir"].as_str().unwrap_or_default();
                        let paths: Vec<&str> = match r["operation"].as_str() {
                            Some("GET_FILE" | "GET_DELTA") => {
                                vec![r["path"].as_str().unwrap_or_default()]
                            }
                            Some("GET_FILES") => r["files"]
                                .as_array()
                                .into_iter()
                                .flatten()
                                .map(|f| f["path"].as_str().unwrap_or_default())
                                .collect(),
                            _ => Vec::new(),
                        };
                        paths.into_iter().map(move |p| format!("{dir}/{p}"))
                    })
                    .collect()
            })
            .collect()
    }

    /// Forgets the requests and bytes counted so far (connections stay open).
    pub fn reset_counts(&self) {
        self.shared.requests.lock().unwrap().clear();
        self.shared.to_client.store(0, Ordering::SeqCst);
        self.shared.to_daemon.store(0, Ordering::SeqCst);
    }

    /// Connections open right now.
    pub fn open_connections(&self) -> usize {
        self.shared.conns.lock().unwrap().len()
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        self.shared.stalled.store(false, Ordering::SeqCst);
        for conn in std::mem::take(&mut *self.shared.conns.lock().unwrap()) {
            conn.close();
        }
        if let Some(accept) = self.accept.take() {
            let _ = accept.join();
        }
    }
}

fn accept_loop(listener: &TcpListener, target: SocketAddr, shared: &Arc<Shared>) {
    while !shared.stop.load(Ordering::SeqCst) {
        let client = match listener.accept() {
            Ok((stream, _)) => stream,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                std::thread::sleep(Duration::from_millis(5));
                continue;
            }
            Err(_) => {
                std::thread::sleep(Duration::from_millis(5));
                continue;
            }
        };
        shared.accepted.fetch_add(1, Ordering::SeqCst);
        let _ = client.set_nonblocking(false);
        let _ = client.set_nodelay(true);
        let Ok(upstream) = TcpStream::connect_timeout(&target, Duration::from_secs(5)) else {
            let _ = client.shutdown(Shutdown::Both);
            continue;
        };
        let _ = upstream.set_nodelay(true);
        let id = shared.next_id.fetch_add(1, Ordering::SeqCst);
        let closed = Arc::new(AtomicBool::new(false));
        let clones = (
            client.try_clone(),
            upstream.try_clone(),
            client.try_clone(),
            upstream.try_clone(),
        );
        let (Ok(c_read), Ok(u_write), Ok(c_write), Ok(u_read)) = clones else {
            let _ = client.shutdown(Shutdown::Both);
            let _ = upstream.shutdown(Shutdown::Both);
            continue;
        };
        shared.conns.lock().unwrap().push(Conn {
            id,
            client,
            upstream,
            closed: Arc::clone(&closed),
        });
        if shared.stop.load(Ordering::SeqCst) {
            shared.forget(id);
            break;
        }
        // Per connection: bytes daemon -> client, for cut_after_bytes.
        let sent = Arc::new(AtomicU64::new(0));
        {
            let (shared, closed) = (Arc::clone(shared), Arc::clone(&closed));
            std::thread::spawn(move || {
                pump(c_read, u_write, &shared, &closed, Direction::ToDaemon(id));
                shared.forget(id);
            });
        }
        {
            let (shared, closed) = (Arc::clone(shared), Arc::clone(&closed));
            std::thread::spawn(move || {
                pump(
                    u_read,
                    c_write,
                    &shared,
                    &closed,
                    Direction::ToClient(&sent),
                );
                shared.forget(id);
            });
        }
    }
}

/// Which way a pump carries a connection's bytes.
enum Direction<'a> {
    /// Daemon -> client, with the connection's counter for cut_after_bytes.
    ToClient(&'a AtomicU64),
    /// Client -> daemon on connection `id`, whose requests are read.
    ToDaemon(u64),
}

/// Copies `from` to `to` until either side ends or the connection is cut.
fn pump(
    mut from: TcpStream,
    mut to: TcpStream,
    shared: &Shared,
    closed: &AtomicBool,
    direction: Direction<'_>,
) {
    let mut buf = vec![0u8; CHUNK];
    let (to_client, conn) = match direction {
        Direction::ToClient(sent) => (Some(sent), 0),
        Direction::ToDaemon(id) => (None, id),
    };
    let mut tap = to_client.is_none().then(RequestTap::default);
    let mut tamper = ResponseTamper::default();
    let mut renamer = RequestRenamer::default();
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        // A stalled tunnel holds the data (and, as nothing more is read, the sender's TCP
        // window fills up), without closing anything.
        while shared.stalled.load(Ordering::SeqCst) {
            if closed.load(Ordering::SeqCst) || shared.stop.load(Ordering::SeqCst) {
                return;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        let delay = shared.delay_us.load(Ordering::SeqCst);
        if delay > 0 {
            std::thread::sleep(Duration::from_micros(delay));
        }
        if closed.load(Ordering::SeqCst) {
            return;
        }
        let mut n = n;
        let mut cut = false;
        if let Some(sent) = to_client {
            let limit = shared.cut_after.load(Ordering::SeqCst);
            let so_far = sent.load(Ordering::SeqCst);
            if limit > 0 && so_far + n as u64 >= limit {
                n = limit.saturating_sub(so_far) as usize;
                cut = true;
            }
        }
        if to_client.is_some() {
            tamper.feed(&mut buf[..n], shared);
        } else {
            let windows = shared.hide_windows.load(Ordering::SeqCst);
            let files = shared.hide_files.load(Ordering::SeqCst);
            if windows || files {
                renamer.feed(&mut buf[..n], windows, files);
            }
        }
        if n > 0 && to.write_all(&buf[..n]).is_err() {
            return;
        }
        match to_client {
            Some(sent) => {
                sent.fetch_add(n as u64, Ordering::SeqCst);
                shared.to_client.fetch_add(n as u64, Ordering::SeqCst);
            }
            None => {
                shared.to_daemon.fetch_add(n as u64, Ordering::SeqCst);
                if let Some(tap) = tap.as_mut() {
                    let requests = tap.feed(&buf[..n]);
                    let mut seen = shared.requests.lock().unwrap();
                    seen.extend(requests.into_iter().map(|r| (conn, r)));
                }
            }
        }
        if cut {
            shared.cuts.fetch_add(1, Ordering::SeqCst);
            return;
        }
    }
}

/// Reads a client's side of a connection: the HTTP upgrade request, then WebSocket frames
/// (RFC 6455, section 5.2: masked, as every client frame is), returning the JSON of each
/// complete text frame.
#[derive(Default)]
struct RequestTap {
    buf: Vec<u8>,
    upgraded: bool,
}

impl RequestTap {
    fn feed(&mut self, data: &[u8]) -> Vec<serde_json::Value> {
        self.buf.extend_from_slice(data);
        if !self.upgraded {
            let Some(end) = self.buf.windows(4).position(|w| w == b"\r\n\r\n") else {
                return Vec::new();
            };
            self.buf.drain(..end + 4);
            self.upgraded = true;
        }
        let mut found = Vec::new();
        while let Some((opcode, payload, used)) = frame(&self.buf) {
            if opcode == 1 {
                if let Ok(value) = serde_json::from_slice(&payload) {
                    found.push(value);
                }
            }
            self.buf.drain(..used);
        }
        found
    }
}

/// Follows the daemon's side of a connection (the HTTP upgrade answer, then unmasked
/// WebSocket frames) across reads, and flips one payload byte of a binary frame when the
/// proxy is armed ([`Proxy::corrupt_next_binary_frame`]).
#[derive(Default)]
struct ResponseTamper {
    upgraded: bool,
    /// The last bytes of the HTTP answer seen (to find its end across reads).
    tail: Vec<u8>,
    /// The header of the frame being read, until it is whole.
    header: Vec<u8>,
    /// Payload bytes of the current frame still to come.
    remaining: u64,
    /// Payload bytes still to come before the byte to flip, in the current frame.
    flip_in: Option<u64>,
}

impl ResponseTamper {
    fn feed(&mut self, data: &mut [u8], shared: &Shared) {
        let mut at = 0;
        if !self.upgraded {
            while at < data.len() && !self.upgraded {
                self.tail.push(data[at]);
                at += 1;
                self.upgraded = self.tail.ends_with(b"\r\n\r\n");
            }
            if !self.upgraded {
                return;
            }
        }
        while at < data.len() {
            if self.remaining == 0 {
                self.header.push(data[at]);
                at += 1;
                let Some((opcode, len)) = frame_header(&self.header) else {
                    continue;
                };
                self.header.clear();
                self.remaining = len;
                self.flip_in = None;
                if opcode == 2 && len >= 64 && shared.corrupt_next.swap(false, Ordering::SeqCst) {
                    self.flip_in = Some(len / 2);
                }
                continue;
            }
            let take = self.remaining.min((data.len() - at) as u64);
            if let Some(k) = self.flip_in {
                if k < take {
                    data[at + k as usize] ^= 0xff;
                    shared.corrupted.fetch_add(1, Ordering::SeqCst);
                    self.flip_in = None;
                } else {
                    self.flip_in = Some(k - take);
                }
            }
            self.remaining -= take;
            at += take as usize;
        }
    }
}

/// Follows a client's side of a connection (the HTTP upgrade request, then masked WebSocket
/// frames) across reads, and turns "GET_WINDOWS" or "GET_FILES" in a text frame's payload into
/// "GET_WINDOWZ" or "GET_FILEZ" as the bytes pass ([`Proxy::hide_get_windows`],
/// [`Proxy::hide_get_files`]).
#[derive(Default)]
struct RequestRenamer {
    upgraded: bool,
    tail: Vec<u8>,
    header: Vec<u8>,
    remaining: u64,
    text: bool,
    mask: [u8; 4],
    /// Payload bytes of the current frame seen so far.
    index: u64,
    /// The last unmasked payload bytes, to find the name.
    recent: Vec<u8>,
}

impl RequestRenamer {
    const WINDOWS: &'static [u8] = b"GET_WINDOWS";
    const FILES: &'static [u8] = b"GET_FILES";

    fn feed(&mut self, data: &mut [u8], windows: bool, files: bool) {
        let mut at = 0;
        while !self.upgraded && at < data.len() {
            self.tail.push(data[at]);
            at += 1;
            self.upgraded = self.tail.ends_with(b"\r\n\r\n");
        }
        while at < data.len() {
            if self.remaining == 0 {
                self.header.push(data[at]);
                at += 1;
                let Some((opcode, len)) = masked_header(&self.header) else {
                    continue;
                };
                let n = self.header.len();
                self.mask.copy_from_slice(&self.header[n - 4..]);
                self.header.clear();
                (self.remaining, self.text, self.index) = (len, opcode == 1, 0);
                self.recent.clear();
                continue;
            }
            let plain = data[at] ^ self.mask[(self.index % 4) as usize];
            if self.text {
                self.recent.push(plain);
                if self.recent.len() > Self::WINDOWS.len() {
                    self.recent.remove(0);
                }
                if (windows && self.recent.ends_with(Self::WINDOWS))
                    || (files && self.recent.ends_with(Self::FILES))
                {
                    data[at] = b'Z' ^ self.mask[(self.index % 4) as usize];
                    self.recent.clear();
                }
            }
            self.index += 1;
            self.remaining -= 1;
            at += 1;
        }
    }
}

/// The opcode and payload length of a masked frame header (a client's), once `header` holds
/// all of it, mask key included.
fn masked_header(header: &[u8]) -> Option<(u8, u64)> {
    let (&b0, &b1) = (header.first()?, header.get(1)?);
    let (len, at) = match b1 & 0x7f {
        126 => (
            u64::from(u16::from_be_bytes(header.get(2..4)?.try_into().ok()?)),
            4,
        ),
        127 => (u64::from_be_bytes(header.get(2..10)?.try_into().ok()?), 10),
        n => (u64::from(n), 2),
    };
    (header.len() == at + 4).then_some((b0 & 0x0f, len))
}

/// The opcode and payload length of an unmasked frame header, once `header` holds all of it.
fn frame_header(header: &[u8]) -> Option<(u8, u64)> {
    let (&b0, &b1) = (header.first()?, header.get(1)?);
    let len = match b1 & 0x7f {
        126 if header.len() == 4 => u64::from(u16::from_be_bytes([header[2], header[3]])),
        127 if header.len() == 10 => u64::from_be_bytes(header[2..10].try_into().ok()?),
        126 | 127 => return None,
        n => u64::from(n),
    };
    Some((b0 & 0x0f, len))
}

/// The first complete frame in `buf`: its opcode, unmasked payload and length in `buf`.
fn frame(buf: &[u8]) -> Option<(u8, Vec<u8>, usize)> {
    let (&b0, &b1) = (buf.first()?, buf.get(1)?);
    let mut at = 2;
    let mut len = u64::from(b1 & 0x7f);
    if len == 126 {
        len = u64::from(u16::from_be_bytes(buf.get(2..4)?.try_into().ok()?));
        at = 4;
    } else if len == 127 {
        len = u64::from_be_bytes(buf.get(2..10)?.try_into().ok()?);
        at = 10;
    }
    let mask: Option<[u8; 4]> = if b1 & 0x80 != 0 {
        let key = buf.get(at..at + 4)?.try_into().ok()?;
        at += 4;
        Some(key)
    } else {
        None
    };
    let end = at + usize::try_from(len).ok()?;
    let mut payload = buf.get(at..end)?.to_vec();
    if let Some(key) = mask {
        for (i, byte) in payload.iter_mut().enumerate() {
            *byte ^= key[i % 4];
        }
    }
    Some((b0 & 0x0f, payload, end))
}
