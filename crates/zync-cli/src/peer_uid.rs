//! Which user owns the other end of a TCP connection, when that end is on this machine: the
//! daemon's admission keeps its own user's connections (the tunnel's `ssh`) safe from other
//! users', and the client refuses a server on its machine that another user holds, who could
//! relay the handshake to the real daemon and read everything (invariant 8,
//! docs/ARCHITECTURE.md "Trust").
//!
//! The kernel is asked through sock_diag netlink: one request naming the peer's socket by its
//! exact address and port pair, which the kernel answers from its connection hash table
//! (`ss` asks the same way). Never /proc/net/tcp: that lists every socket on the machine, so
//! reading it per connection would let a flood of sockets make each accept slower.

use std::io;
use std::net::SocketAddr;

/// The uid of the process that created the socket at the other end of this process's TCP
/// connection (accepted or connected), `local` being its own address and `peer` the other
/// end's.
///
/// Never blocks: the kernel answers the request before `sendto` returns, and the answer is
/// read without waiting.
///
/// # Errors
/// The owner is unknown: the peer is on another machine (or in another network namespace),
/// has closed its socket already (a socket no process holds any more has no owner worth
/// trusting), or the kernel could not be asked. [`io::ErrorKind::WouldBlock`]: the peer is on
/// this machine and has not accepted the connection yet (it waits in its listener's queue,
/// held by no process): ask again once it has.
pub fn lookup(local: SocketAddr, peer: SocketAddr) -> io::Result<u32> {
    imp::lookup(local, peer)
}

#[cfg(target_os = "linux")]
mod imp {
    use std::io;
    use std::net::{IpAddr, SocketAddr};
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

    /// `SOCK_DIAG_BY_FAMILY` from linux/sock_diag.h: the request and its answer.
    const SOCK_DIAG_BY_FAMILY: u16 = 20;
    /// `INET_DIAG_NOCOOKIE` from linux/inet_diag.h: find the socket by its addresses alone.
    const INET_DIAG_NOCOOKIE: u32 = !0;
    /// `struct nlmsghdr`.
    const NLMSG_HEADER: usize = 16;
    /// `struct inet_diag_req_v2`: family, protocol, ext, pad (one byte each), states (u32),
    /// then the socket id.
    const REQUEST: usize = 8 + SOCKID;
    /// `struct inet_diag_sockid`: sport and dport (big-endian u16), src and dst (16 bytes of
    /// address each, an IPv4 address in the first 4), the interface (u32) and the cookie
    /// (two u32).
    const SOCKID: usize = 4 + 16 + 16 + 4 + 8;
    /// `struct inet_diag_msg`: family, state, timer, retrans (one byte each), the socket id,
    /// then expires, rqueue, wqueue, uid and inode (u32 each).
    const MESSAGE: usize = 4 + SOCKID + 20;
    /// Where `idiag_state` sits in `struct inet_diag_msg`.
    const STATE_AT: usize = 1;
    /// `TCP_ESTABLISHED`, `TCP_SYN_RECV` and `TCP_NEW_SYN_RECV` from the kernel's tcp_states.h.
    const ESTABLISHED: u8 = 1;
    const SYN_RECV: u8 = 3;
    const NEW_SYN_RECV: u8 = 12;
    /// `TCP_LISTEN`.
    const LISTEN: u8 = 10;
    /// Where `idiag_uid` and `idiag_inode` sit in `struct inet_diag_msg`.
    const UID_AT: usize = 4 + SOCKID + 12;
    const INODE_AT: usize = UID_AT + 4;
    /// The request's sequence number, echoed in the answer.
    const SEQ: u32 = 1;

    /// The peer's socket as the kernel names it: its own address as the source, ours as the
    /// destination.
    struct SockId {
        family: u8,
        sport: u16,
        dport: u16,
        src: [u8; 16],
        dst: [u8; 16],
    }

    impl SockId {
        fn of_peer(local: SocketAddr, peer: SocketAddr) -> io::Result<SockId> {
            // A dual-stack listener sees an IPv4 peer as ::ffff:a.b.c.d; the kernel looks an
            // IPv4 connection up by its IPv4 addresses, whichever kind of socket holds it.
            let (src, dst) = (peer.ip().to_canonical(), local.ip().to_canonical());
            let (family, src, dst) = match (src, dst) {
                (IpAddr::V4(s), IpAddr::V4(d)) => {
                    (libc::AF_INET, widen(&s.octets()), widen(&d.octets()))
                }
                (IpAddr::V6(s), IpAddr::V6(d)) => (libc::AF_INET6, s.octets(), d.octets()),
                _ => {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidInput,
                        format!("{peer} and {local} are not of one address family"),
                    ))
                }
            };
            Ok(SockId {
                family: family as u8,
                sport: peer.port(),
                dport: local.port(),
                src,
                dst,
            })
        }

        /// `struct inet_diag_sockid`, as the request carries it.
        fn encode(&self, out: &mut Vec<u8>) {
            out.extend_from_slice(&self.sport.to_be_bytes());
            out.extend_from_slice(&self.dport.to_be_bytes());
            out.extend_from_slice(&self.src);
            out.extend_from_slice(&self.dst);
            out.extend_from_slice(&0u32.to_ne_bytes()); // any interface
            out.extend_from_slice(&INET_DIAG_NOCOOKIE.to_ne_bytes());
            out.extend_from_slice(&INET_DIAG_NOCOOKIE.to_ne_bytes());
        }

        /// True when `id` (a `struct inet_diag_sockid` from an answer) is the listener this
        /// socket's port is served by: its port, and its address or any address.
        fn is_listener_of(&self, id: &[u8]) -> bool {
            let len = if i32::from(self.family) == libc::AF_INET {
                4
            } else {
                16
            };
            let src = id.get(4..4 + len);
            id.get(0..2) == Some(&self.sport.to_be_bytes()[..])
                && (src == self.src.get(..len) || src.is_some_and(|a| a.iter().all(|&b| b == 0)))
        }

        /// True when `id` (a `struct inet_diag_sockid` from an answer) names this socket.
        fn is(&self, id: &[u8]) -> bool {
            let len = if i32::from(self.family) == libc::AF_INET {
                4
            } else {
                16
            };
            id.get(0..2) == Some(&self.sport.to_be_bytes()[..])
                && id.get(2..4) == Some(&self.dport.to_be_bytes()[..])
                && id.get(4..4 + len) == self.src.get(..len)
                && id.get(20..20 + len) == self.dst.get(..len)
        }
    }

    /// An IPv4 address in a 16-byte `idiag_src`/`idiag_dst`.
    fn widen(v4: &[u8; 4]) -> [u8; 16] {
        let mut out = [0; 16];
        out[..4].copy_from_slice(v4);
        out
    }

    fn protocol(why: &str) -> io::Error {
        io::Error::new(io::ErrorKind::InvalidData, format!("sock_diag: {why}"))
    }

    pub(super) fn lookup(local: SocketAddr, peer: SocketAddr) -> io::Result<u32> {
        let id = SockId::of_peer(local, peer)?;
        let socket = open()?;
        send(&socket, &request(&id))?;
        let mut answer = [0u8; 4096];
        let len = receive(&socket, &mut answer)?;
        parse(answer.get(..len).unwrap_or_default(), &id)
    }

    /// A netlink socket for one request; non-blocking, so a missing answer is an error
    /// rather than a wait on the reactor.
    fn open() -> io::Result<OwnedFd> {
        // SAFETY: socket(2) takes no pointers; its result is checked before use.
        let fd = unsafe {
            libc::socket(
                libc::AF_NETLINK,
                libc::SOCK_RAW | libc::SOCK_CLOEXEC | libc::SOCK_NONBLOCK,
                libc::NETLINK_SOCK_DIAG,
            )
        };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `fd` is a descriptor socket(2) just returned, owned by nothing else.
        Ok(unsafe { OwnedFd::from_raw_fd(fd) })
    }

    /// `struct nlmsghdr` followed by `struct inet_diag_req_v2`: an exact lookup of one TCP
    /// socket, no dump, no extensions.
    fn request(id: &SockId) -> Vec<u8> {
        let mut out = Vec::with_capacity(NLMSG_HEADER + REQUEST);
        out.extend_from_slice(&((NLMSG_HEADER + REQUEST) as u32).to_ne_bytes());
        out.extend_from_slice(&SOCK_DIAG_BY_FAMILY.to_ne_bytes());
        out.extend_from_slice(&(libc::NLM_F_REQUEST as u16).to_ne_bytes());
        out.extend_from_slice(&SEQ.to_ne_bytes());
        out.extend_from_slice(&0u32.to_ne_bytes()); // the kernel fills in our port id
        out.push(id.family);
        out.push(libc::IPPROTO_TCP as u8);
        out.push(0); // idiag_ext: no extensions
        out.push(0); // pad
        out.extend_from_slice(&u32::MAX.to_ne_bytes()); // idiag_states: any
        id.encode(&mut out);
        out
    }

    fn kernel() -> libc::sockaddr_nl {
        // SAFETY: sockaddr_nl is plain integers, for which all zeroes is valid: port id 0 and
        // no groups, which is the kernel.
        let mut to: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
        to.nl_family = libc::AF_NETLINK as libc::sa_family_t;
        to
    }

    fn send(socket: &OwnedFd, request: &[u8]) -> io::Result<()> {
        let to = kernel();
        // SAFETY: `request` and `to` are live for the call and their lengths are theirs.
        let sent = unsafe {
            libc::sendto(
                socket.as_raw_fd(),
                request.as_ptr().cast(),
                request.len(),
                0,
                std::ptr::from_ref(&to).cast(),
                std::mem::size_of::<libc::sockaddr_nl>() as libc::socklen_t,
            )
        };
        match usize::try_from(sent) {
            Ok(n) if n == request.len() => Ok(()),
            Ok(_) => Err(protocol("the request was cut short")),
            Err(_) => Err(io::Error::last_os_error()),
        }
    }

    /// Reads the answer, which must come from the kernel (port id 0).
    fn receive(socket: &OwnedFd, buf: &mut [u8]) -> io::Result<usize> {
        let mut from = kernel();
        let mut from_len = std::mem::size_of::<libc::sockaddr_nl>() as libc::socklen_t;
        // SAFETY: `buf` and `from` are live and writable for the call, with their lengths.
        let got = unsafe {
            libc::recvfrom(
                socket.as_raw_fd(),
                buf.as_mut_ptr().cast(),
                buf.len(),
                libc::MSG_DONTWAIT,
                std::ptr::from_mut(&mut from).cast(),
                &mut from_len,
            )
        };
        let Ok(got) = usize::try_from(got) else {
            return Err(io::Error::last_os_error());
        };
        if from.nl_pid != 0 {
            return Err(protocol("the answer did not come from the kernel"));
        }
        Ok(got)
    }

    fn u32_at(bytes: &[u8], at: usize) -> Option<u32> {
        let field = bytes.get(at..at + 4)?;
        Some(u32::from_ne_bytes(field.try_into().ok()?))
    }

    fn u16_at(bytes: &[u8], at: usize) -> Option<u16> {
        let field = bytes.get(at..at + 2)?;
        Some(u16::from_ne_bytes(field.try_into().ok()?))
    }

    /// The owner's uid from the kernel's answer: one `inet_diag_msg` for the socket asked
    /// about, or an error message (ENOENT: no such socket here).
    fn parse(answer: &[u8], id: &SockId) -> io::Result<u32> {
        let short = || protocol("the answer is too short");
        let len = u32_at(answer, 0).ok_or_else(short)? as usize;
        let kind = u16_at(answer, 4).ok_or_else(short)?;
        let seq = u32_at(answer, 8).ok_or_else(short)?;
        let message = answer
            .get(NLMSG_HEADER..len)
            .ok_or_else(|| protocol("the answer's length is wrong"))?;
        if seq != SEQ {
            return Err(protocol("the answer is not to this request"));
        }
        if i32::from(kind) == libc::NLMSG_ERROR {
            let code = u32_at(message, 0).ok_or_else(short)? as i32;
            return Err(if code < 0 {
                io::Error::from_raw_os_error(-code)
            } else {
                protocol("an acknowledgement instead of an answer")
            });
        }
        if kind != SOCK_DIAG_BY_FAMILY || message.len() < MESSAGE {
            return Err(protocol("an answer of an unexpected kind"));
        }
        let about = message.get(4..4 + SOCKID).unwrap_or_default();
        let uid = u32_at(message, UID_AT).ok_or_else(short)?;
        let inode = u32_at(message, INODE_AT).ok_or_else(short)?;
        let state = message.get(STATE_AT).copied().ok_or_else(short)?;
        if message.first() != Some(&id.family) {
            return Err(protocol("the answer is about another socket"));
        }
        // With no connected socket for the pair (the server has not made one yet: a SYN
        // cookie's connection is made when its first data arrives), the kernel answers with
        // the listener the port is served by: whoever holds it accepts the connection.
        if !id.is(about) {
            if state == LISTEN && inode != 0 && id.is_listener_of(about) {
                return Ok(uid);
            }
            return Err(protocol("the answer is about another socket"));
        }
        // Not accepted yet: a connection still in its listener's queue (or half-open, for
        // which the kernel says uid 0) has no process yet. Whoever accepts it will.
        if inode == 0 && matches!(state, ESTABLISHED | SYN_RECV | NEW_SYN_RECV) {
            return Err(io::Error::new(
                io::ErrorKind::WouldBlock,
                "the peer has not accepted the connection yet",
            ));
        }
        // Closed by its process already (orphaned, or in TIME_WAIT, for which the kernel says
        // uid 0): nobody owns it any more.
        if inode == 0 {
            return Err(io::Error::new(
                io::ErrorKind::NotFound,
                "the peer's socket is closed",
            ));
        }
        Ok(uid)
    }
}

#[cfg(not(target_os = "linux"))]
mod imp {
    use std::io;
    use std::net::SocketAddr;

    pub(super) fn lookup(_local: SocketAddr, _peer: SocketAddr) -> io::Result<u32> {
        Err(io::Error::new(
            io::ErrorKind::Unsupported,
            "telling who owns a peer's socket needs Linux's sock_diag",
        ))
    }
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use std::net::{TcpListener, TcpStream};
    use std::time::{Duration, Instant};

    use super::*;

    fn euid() -> u32 {
        // SAFETY: geteuid cannot fail.
        unsafe { libc::geteuid() }
    }

    /// A connection to a listener on `at`: the accepted end's own address and its peer's,
    /// with both sockets.
    fn connection(at: &str) -> (SocketAddr, SocketAddr, TcpStream, TcpStream) {
        let listener = TcpListener::bind(at).expect("bind a loopback port");
        let client =
            TcpStream::connect(listener.local_addr().expect("its address")).expect("connect to it");
        let (accepted, peer) = listener.accept().expect("accept");
        let local = accepted.local_addr().expect("the accepted end's address");
        (local, peer, accepted, client)
    }

    #[test]
    fn the_peer_of_a_loopback_connection_is_this_process_s_user() {
        let (local, peer, _accepted, _client) = connection("127.0.0.1:0");
        let found = lookup(local, peer);
        assert_eq!(found.ok(), Some(euid()), "for {peer} -> {local}");
    }

    #[test]
    fn an_ipv6_and_a_dual_stack_peer_are_found_too() {
        let (local, peer, _accepted, _client) = connection("[::1]:0");
        assert_eq!(
            lookup(local, peer).ok(),
            Some(euid()),
            "IPv6: {peer} -> {local}"
        );

        // A listener on [::] sees an IPv4 client as ::ffff:127.0.0.1.
        let listener = TcpListener::bind("[::]:0").expect("bind [::]");
        let port = listener.local_addr().expect("its address").port();
        let _client = TcpStream::connect(("127.0.0.1", port)).expect("connect over IPv4");
        let (accepted, peer) = listener.accept().expect("accept");
        let local = accepted.local_addr().expect("its address");
        assert!(
            matches!(peer.ip(), std::net::IpAddr::V6(ip) if ip.to_ipv4_mapped().is_some()),
            "expected a v4-mapped peer, found {peer}"
        );
        assert_eq!(
            lookup(local, peer).ok(),
            Some(euid()),
            "mapped: {peer} -> {local}"
        );
    }

    /// With no connected socket for a pair on this machine, the kernel answers with the
    /// listener of the peer's port: its owner is the one who would accept the connection (a
    /// server that has not made the connection's socket yet, as with SYN cookies, is judged
    /// by its listener, not let through).
    #[test]
    fn a_peer_port_with_only_a_listener_is_judged_by_the_listener() {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let server = listener.local_addr().expect("its address");
        let stranger = SocketAddr::from(([127, 0, 0, 1], 9));
        assert_eq!(lookup(stranger, server).ok(), Some(euid()), "{server}");
        drop(listener);
        let gone = lookup(stranger, server);
        assert!(
            gone.is_err(),
            "a port nobody listens on is owned by {gone:?}"
        );
    }

    /// A connection the server has not accepted yet is held by no process: the lookup says
    /// to ask again (it said "closed", and a client took that for a server on another
    /// machine, not judged), and gives the owner once the server accepted it.
    #[test]
    fn a_peer_that_has_not_accepted_yet_is_asked_about_again() {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let server = listener.local_addr().expect("its address");
        let client = TcpStream::connect(server).expect("connect");
        let local = client.local_addr().expect("the client's address");
        let start = Instant::now();
        let queued = loop {
            match lookup(local, server) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break e,
                other => assert!(
                    start.elapsed() < Duration::from_secs(5),
                    "a connection in the listener's queue: {other:?}"
                ),
            }
        };
        assert!(queued.to_string().contains("not accepted"), "{queued}");
        let (_accepted, _) = listener.accept().expect("accept");
        assert_eq!(lookup(local, server).ok(), Some(euid()));
    }

    #[test]
    fn a_peer_that_is_gone_or_never_was_is_unknown() {
        let (local, peer, accepted, client) = connection("127.0.0.1:0");
        drop(client);
        // Its socket lingers in FIN_WAIT2 or TIME_WAIT, held by no process.
        let gone = lookup(local, peer);
        assert!(gone.is_err(), "a closed peer was owned by {gone:?}");
        drop(accepted);
        // Both ends closed: the peer's socket waits in TIME_WAIT, which the kernel reports
        // as uid 0.
        let start = Instant::now();
        while start.elapsed() < Duration::from_millis(200) {
            let gone = lookup(local, peer);
            assert!(gone.is_err(), "a closed peer was owned by {gone:?}");
            std::thread::sleep(Duration::from_millis(20));
        }

        // No socket at all with this pair: what a peer on another machine looks like.
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let here = listener.local_addr().expect("its address");
        let nowhere = SocketAddr::from(([127, 0, 0, 1], 9));
        let never = lookup(here, nowhere);
        assert_eq!(
            never.as_ref().map_err(io::Error::kind).err(),
            Some(io::ErrorKind::NotFound),
            "{never:?}"
        );
    }
}
