//! A TCP proxy the benchmark puts between client and server, for both tools: it counts the
//! bytes on the wire (each direction on its own) and can add a fixed delay each way, standing for
//! a tunnel.

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use anyhow::Result;

/// A running proxy on 127.0.0.1; stops accepting when dropped.
pub struct Proxy {
    /// The port clients connect to.
    pub port: u16,
    /// Bytes from the client to the server (R to E), and from the server to the client.
    bytes: [Arc<AtomicU64>; 2],
    stop: Arc<AtomicBool>,
}

/// Bytes forwarded each way.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Traffic {
    /// From the client to the server: requests, and for a delta its signature.
    pub up: u64,
    /// From the server to the client: listings and file data.
    pub down: u64,
}

impl Traffic {
    /// Both directions together.
    pub fn total(self) -> u64 {
        self.up + self.down
    }
}

impl Proxy {
    /// Listens on 127.0.0.1:0 and forwards every connection to `target`, each chunk delayed by
    /// `delay` in each direction.
    ///
    /// # Errors
    /// When the listener cannot be bound.
    pub fn start(target: SocketAddr, delay: Duration) -> Result<Proxy> {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        let port = listener.local_addr()?.port();
        let bytes = [Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0))];
        let stop = Arc::new(AtomicBool::new(false));
        let (b, s) = (bytes.clone(), Arc::clone(&stop));
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                if s.load(Ordering::Relaxed) {
                    break;
                }
                let Ok(down) = conn else { continue };
                let Ok(up) = TcpStream::connect(target) else {
                    continue;
                };
                let _ = (down.set_nodelay(true), up.set_nodelay(true));
                let (Ok(d2), Ok(u2)) = (down.try_clone(), up.try_clone()) else {
                    continue;
                };
                pump(down, up, delay, Arc::clone(&b[0]));
                pump(u2, d2, delay, Arc::clone(&b[1]));
            }
        });
        Ok(Proxy { port, bytes, stop })
    }

    /// The bytes forwarded since the last call, each way.
    pub fn take_bytes(&self) -> Traffic {
        Traffic {
            up: self.bytes[0].swap(0, Ordering::Relaxed),
            down: self.bytes[1].swap(0, Ordering::Relaxed),
        }
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        // Wake the accept loop so it sees the flag.
        let _ = TcpStream::connect(("127.0.0.1", self.port));
    }
}

/// Copies `from` to `to` on threads of its own; with a delay, a reader stamps each chunk and a
/// writer releases it `delay` later, so throughput is kept and only latency is added. Without
/// a delay one thread copies straight through, so that the proxy takes as little of the
/// machine's CPU as it can from the tools being timed.
fn pump(mut from: TcpStream, mut to: TcpStream, delay: Duration, bytes: Arc<AtomicU64>) {
    if delay.is_zero() {
        std::thread::spawn(move || {
            let mut buf = vec![0u8; 256 * 1024];
            loop {
                match from.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        bytes.fetch_add(n as u64, Ordering::Relaxed);
                        if to.write_all(&buf[..n]).is_err() {
                            break;
                        }
                    }
                }
            }
            let _ = (from.shutdown(Shutdown::Read), to.shutdown(Shutdown::Write));
        });
        return;
    }
    let (tx, rx) = mpsc::sync_channel::<(Instant, Vec<u8>)>(256);
    std::thread::spawn(move || {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            match from.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    bytes.fetch_add(n as u64, Ordering::Relaxed);
                    if tx
                        .send((Instant::now() + delay, buf[..n].to_vec()))
                        .is_err()
                    {
                        break;
                    }
                }
            }
        }
        let _ = from.shutdown(Shutdown::Read);
    });
    std::thread::spawn(move || {
        for (due, chunk) in rx {
            let now = Instant::now();
            if due > now {
                std::thread::sleep(due - now);
            }
            if to.write_all(&chunk).is_err() {
                break;
            }
        }
        let _ = to.shutdown(Shutdown::Write);
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytes_are_counted_each_way() {
        // A server that reads 3 bytes and answers with 10.
        let server = TcpListener::bind("127.0.0.1:0").expect("bind");
        let target = server.local_addr().expect("address");
        let serve = std::thread::spawn(move || {
            let (mut conn, _) = server.accept().expect("accept");
            let mut asked = [0u8; 3];
            conn.read_exact(&mut asked).expect("read");
            conn.write_all(&[7u8; 10]).expect("write");
        });
        let proxy = Proxy::start(target, Duration::ZERO).expect("proxy");
        let mut client = TcpStream::connect(("127.0.0.1", proxy.port)).expect("connect");
        client.write_all(b"abc").expect("write");
        let mut answer = Vec::new();
        client.read_to_end(&mut answer).expect("read");
        serve.join().expect("server");
        assert_eq!(answer, [7u8; 10]);
        let counted = proxy.take_bytes();
        assert_eq!(counted, Traffic { up: 3, down: 10 });
        assert_eq!(counted.total(), 13);
        assert_eq!(proxy.take_bytes(), Traffic::default());
    }
}
