//! Binding the per-core `SO_REUSEPORT` listeners, after making sure no
//! other process already serves the address.
//!
//! `SO_REUSEPORT` lets every core have its own listener on one port, and
//! the kernel spreads connections over them. It would equally let a second
//! process (a forgotten instance, or one whose io_uring listeners outlive a
//! `kill -9` for a moment) join the port silently and take part of the
//! traffic. So before binding, a plain socket without `SO_REUSEPORT` probes
//! the address: if any listener holds it, the bind fails and the server
//! refuses to start, saying why.
//!
//! The framed and HTTP listeners also defer accepts (`TCP_DEFER_ACCEPT`,
//! `--defer-accept`; the admin listener does not):
//! the kernel completes the handshake but hands the connection to the
//! accept loop only once its first bytes arrive (or the wait is over). Both
//! protocols have the client speak first, so a connection is accepted with
//! its request already readable: the first read completes at once instead
//! of costing the core another wake-up, and a peer that connects and says
//! nothing holds no slot, no task and no per-address count meanwhile.

use std::io;
use std::net::{SocketAddr, TcpListener};
use std::os::fd::AsFd;
use std::time::{Duration, Instant};

use socket2::{Domain, Protocol, Socket, Type};

/// Backlog used when `/proc/sys/net/core/somaxconn` cannot be read.
const FALLBACK_BACKLOG: i32 = 4096;

/// The kernel's cap on a listen backlog. Listening with it lets a burst of
/// simultaneous connects (10,000 clients at once) queue instead of being
/// dropped while the accept loops catch up.
pub fn somaxconn() -> i32 {
    std::fs::read_to_string("/proc/sys/net/core/somaxconn")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(FALLBACK_BACKLOG)
}

fn socket(addr: SocketAddr) -> io::Result<Socket> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    // Lets a restart bind over connections still in TIME_WAIT; never over a
    // listener.
    socket.set_reuse_address(true)?;
    Ok(socket)
}

fn bind_one(addr: SocketAddr, defer_accept: Duration) -> io::Result<TcpListener> {
    let socket = socket(addr)?;
    // One listener per core on the same port; the kernel spreads incoming
    // connections over them, so cores never share an accept queue.
    socket.set_reuse_port(true)?;
    // Replies go out as soon as they are ready (batching comes from writing
    // all ready replies at once, not from Nagle). Set on the listener,
    // accepted sockets inherit it: one setsockopt per core, not one per
    // connection.
    socket.set_tcp_nodelay(true)?;
    socket.set_nonblocking(true)?;
    if !defer_accept.is_zero() {
        set_defer_accept(&socket, defer_accept)?;
    }
    socket.bind(&addr.into())?;
    socket.listen(somaxconn())?;
    Ok(socket.into())
}

/// `Err` if some process listens on `addr` already.
fn probe(addr: SocketAddr) -> io::Result<()> {
    let probe = socket(addr)?;
    probe.bind(&addr.into())
}

/// Why listening failed.
#[derive(Debug)]
pub struct ListenError {
    /// What the address is for (`the framed protocol`, ...).
    pub what: &'static str,
    /// The address.
    pub addr: SocketAddr,
    /// The failure.
    pub source: io::Error,
    /// Another process serves it already.
    pub in_use: bool,
}

impl std::fmt::Display for ListenError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.in_use {
            write!(
                f,
                "cannot listen for {} on {}: another process is already serving it, still after \
                 {:?} (another shorty? an io_uring server's listeners can outlive its process \
                 for a moment: wait for the port to close)",
                self.what, self.addr, LINGERING_LISTENER_WAIT
            )
        } else {
            write!(
                f,
                "cannot listen for {} on {}: {}",
                self.what, self.addr, self.source
            )
        }
    }
}

impl std::error::Error for ListenError {}

impl ListenError {
    fn new(what: &'static str, addr: SocketAddr, source: io::Error) -> Self {
        Self {
            what,
            addr,
            in_use: source.kind() == io::ErrorKind::AddrInUse,
            source,
        }
    }
}

/// `Err` when another process serves `addr` (port 0 is always free).
///
/// # Errors
/// [`ListenError`] with `in_use`.
pub fn check_free(what: &'static str, addr: SocketAddr) -> Result<(), ListenError> {
    check_free_within(what, addr, LINGERING_LISTENER_WAIT)
}

/// How long a start waits for an address another process serves to be
/// freed before refusing: an io_uring server's listeners outlive its
/// process while the kernel tears its rings down (after `kill -9`, and for
/// glommio after a clean exit too), so a restart right after a stop would
/// otherwise fail; a live instance still holds it after this.
pub const LINGERING_LISTENER_WAIT: Duration = Duration::from_secs(3);

fn check_free_within(
    what: &'static str,
    addr: SocketAddr,
    wait: Duration,
) -> Result<(), ListenError> {
    if addr.port() == 0 {
        return Ok(());
    }
    let deadline = Instant::now() + wait;
    loop {
        match probe(addr) {
            Ok(()) => return Ok(()),
            Err(source)
                if source.kind() == io::ErrorKind::AddrInUse && Instant::now() < deadline =>
            {
                std::thread::sleep(Duration::from_millis(50));
            }
            Err(source) => return Err(ListenError::new(what, addr, source)),
        }
    }
}

/// Binds `count` `SO_REUSEPORT` listeners on `addr` (`what` names it in
/// errors). With port 0 the first bind picks a fresh port and the others
/// join it; otherwise the address is probed first. A `defer_accept` above
/// zero defers each accept until the connection's first bytes arrive, for
/// at most about that long (the module's comment); zero accepts at once.
///
/// # Errors
/// [`ListenError`], `in_use` when another process serves the address.
pub fn bind_listeners(
    what: &'static str,
    addr: SocketAddr,
    count: usize,
    defer_accept: Duration,
) -> Result<Vec<TcpListener>, ListenError> {
    let err = |source| ListenError::new(what, addr, source);
    check_free(what, addr)?;
    let first = bind_one(addr, defer_accept).map_err(err)?;
    let bound = first.local_addr().map_err(err)?;
    let mut listeners = vec![first];
    for _ in 1..count {
        listeners.push(bind_one(bound, defer_accept).map_err(err)?);
    }
    Ok(listeners)
}

/// Sets `TCP_DEFER_ACCEPT` on a listening socket to `wait`, in whole
/// seconds, a part of one rounded up (the kernel counts it in SYN-ACK
/// retransmissions, 1, 3, 7, 15 ... s, rounding up again); zero turns it
/// off. Public for the null servers of `bench-floor`, which must defer
/// like Shorty to be compared like for like.
///
/// # Errors
/// The `setsockopt` error, e.g. `ENOTSOCK`.
pub fn set_defer_accept(socket: &impl AsFd, wait: Duration) -> io::Result<()> {
    let seconds = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
    let value = libc::c_int::try_from(seconds).unwrap_or(libc::c_int::MAX);
    sockopt::set_int(
        socket.as_fd(),
        libc::IPPROTO_TCP,
        libc::TCP_DEFER_ACCEPT,
        value,
    )
}

/// The one socket option set by hand: neither `socket2` nor `std` (whose
/// `set_deferaccept` is unstable, rust-lang/rust#119639) sets
/// `TCP_DEFER_ACCEPT`.
#[allow(unsafe_code)]
mod sockopt {
    use std::io;
    use std::os::fd::{AsRawFd, BorrowedFd};

    /// `setsockopt` with an `int` value.
    pub(super) fn set_int(
        fd: BorrowedFd<'_>,
        level: libc::c_int,
        name: libc::c_int,
        value: libc::c_int,
    ) -> io::Result<()> {
        // SAFETY: the descriptor is open for the call (`BorrowedFd`), and the
        // option's value is a `c_int` on this stack whose size is the length
        // passed; the kernel only reads it.
        let result = unsafe {
            libc::setsockopt(
                fd.as_raw_fd(),
                level,
                name,
                (&value as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        if result == 0 {
            Ok(())
        } else {
            Err(io::Error::last_os_error())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A listener that goes away within the wait (a stopped io_uring
    /// server's, torn down with its ring) lets the start go on; one that
    /// stays is refused once the wait is over.
    #[test]
    fn a_start_waits_for_a_lingering_listener_then_refuses_a_live_one() {
        let held =
            bind_listeners("test", "127.0.0.1:0".parse().unwrap(), 1, Duration::ZERO).unwrap();
        let addr = held[0].local_addr().unwrap();
        let err = check_free_within("test", addr, Duration::from_millis(200)).unwrap_err();
        assert!(err.in_use, "{err}");
        let release = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(300));
            drop(held);
        });
        check_free_within("test", addr, Duration::from_secs(5)).unwrap();
        release.join().unwrap();
    }

    #[test]
    fn port_zero_listeners_share_one_port() {
        let listeners =
            bind_listeners("test", "127.0.0.1:0".parse().unwrap(), 3, Duration::ZERO).unwrap();
        let ports: Vec<u16> = listeners
            .iter()
            .map(|l| l.local_addr().unwrap().port())
            .collect();
        assert_ne!(ports[0], 0);
        assert!(ports.iter().all(|&p| p == ports[0]), "{ports:?}");
    }

    #[test]
    fn accepted_connections_inherit_nodelay() {
        let listeners =
            bind_listeners("test", "127.0.0.1:0".parse().unwrap(), 1, Duration::ZERO).unwrap();
        listeners[0].set_nonblocking(false).unwrap();
        let _client = std::net::TcpStream::connect(listeners[0].local_addr().unwrap()).unwrap();
        let (accepted, _) = listeners[0].accept().unwrap();
        assert!(accepted.nodelay().unwrap());
    }

    #[test]
    fn an_address_already_served_is_refused() {
        let first =
            bind_listeners("test", "127.0.0.1:0".parse().unwrap(), 2, Duration::ZERO).unwrap();
        let addr = first[0].local_addr().unwrap();
        let err = bind_listeners("the framed protocol", addr, 2, Duration::ZERO).unwrap_err();
        assert!(err.in_use);
        assert!(err.to_string().contains("another process"), "{err}");
        drop(first);
        assert!(
            bind_listeners("test", addr, 2, Duration::ZERO).is_ok(),
            "free again"
        );
    }

    /// A deferred listener hands over a connection once it has sent
    /// something, not at its handshake; an undeferred one at once. The
    /// listeners are non-blocking, so `accept` answers `WouldBlock` while
    /// the kernel holds the connection.
    #[test]
    fn a_deferred_listener_hands_over_a_connection_once_it_sends() {
        use std::io::Write;
        let accept_within = |listener: &TcpListener, wait: Duration| {
            let deadline = Instant::now() + wait;
            loop {
                match listener.accept() {
                    Ok((stream, _)) => return Some(stream),
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                    Err(e) => panic!("accept: {e}"),
                }
                if Instant::now() >= deadline {
                    return None;
                }
                std::thread::sleep(Duration::from_millis(10));
            }
        };
        let any = "127.0.0.1:0".parse().unwrap();
        let deferred = bind_listeners("test", any, 1, Duration::from_secs(5)).unwrap();
        let mut client = std::net::TcpStream::connect(deferred[0].local_addr().unwrap()).unwrap();
        assert!(
            accept_within(&deferred[0], Duration::from_millis(300)).is_none(),
            "a connection that sent nothing was handed over"
        );
        client.write_all(b"x").unwrap();
        assert!(
            accept_within(&deferred[0], Duration::from_secs(3)).is_some(),
            "a connection that sent a byte was not handed over"
        );

        let at_once = bind_listeners("test", any, 1, Duration::ZERO).unwrap();
        let _silent = std::net::TcpStream::connect(at_once[0].local_addr().unwrap()).unwrap();
        assert!(accept_within(&at_once[0], Duration::from_secs(3)).is_some());
    }
}
