//! A core's listener on tokio-uring: one multishot accept.
//!
//! **Multishot accept** (`--uring-multishot-accept on`, Linux 5.19): one
//! `IORING_OP_ACCEPT` with `IORING_ACCEPT_MULTISHOT` per listener stays
//! armed and posts a completion, a new connection's descriptor, for each
//! connection the kernel accepts, instead of one accept submitted per
//! connection (tokio-uring's `TcpListener::accept`). Measured on the raw
//! null server (issue 23): an accept per connection costs ~10-14 % more
//! CPU per connection-per-request redirect. The completion carries no peer
//! address (one address buffer would be shared by every completion), so the
//! peer's is asked with `getpeername(2)`.
//!
//! The kernel accepts as long as the operation is armed, whether or not the
//! core takes the connections: a burst is accepted in one go. So once the
//! core is at its connection limit (a client had to queue for a slot:
//! `Listener::pause`) the operation is cancelled and the listener accepts
//! one connection per call, as before, until no client is queued
//! (`Listener::resume`): when the accept loop stops calling it (its queue
//! full) later clients wait in the kernel's backlog. What the operation
//! accepted before its cancel landed comes out first; when the queue is
//! full, the accept loop still takes those (`Listener::accepted_ahead`) and
//! queues them beyond the bound (review 17 saw a burst of 2,000 clients
//! held as 2,021 descriptors, 976 of them never handed out, so never
//! answered; review 18, bursts refused at once that an accept per
//! connection served).
//!
//! A completion without `IORING_CQE_F_MORE` ends the operation: an error
//! (returned to the accept loop, which backs off; the next accept arms a new
//! one), or our cancel (a new one is armed at the next accept after
//! `resume`). A kernel that refuses
//! it (`EINVAL`) gets an accept per connection from then on, on that
//! listener. When the listener is dropped (shutdown), the connections
//! accepted but not handed out are closed (`Multishot::discard_with`,
//! vendored tokio-uring patch 5): otherwise their clients would wait,
//! unanswered, until the process exits.

use std::cell::{Cell, RefCell};
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::rc::Rc;
use std::task::{Context, Poll};

use io_uring::{opcode, types};
use shorty_runtime::driver::Listener;
use tokio_uring::{Multishot, MultishotCqe, OneshotOutputTransform, UnsubmittedOneshot};

use crate::buffers::BufferPool;
use crate::connection::UringConn;

pub(crate) struct UringListener {
    inner: tokio_uring::net::TcpListener,
    /// The same socket (a duplicate descriptor), to stop it with.
    stop: std::net::TcpListener,
    pool: Rc<BufferPool>,
    /// Multishot accept is on, and the kernel has not refused it.
    multishot: Cell<bool>,
    /// The core is below its connection limit: connections may be taken
    /// ahead (a multishot accept armed). `Listener::pause` clears it.
    ahead: Cell<bool>,
    /// The armed multishot accept, if any.
    armed: RefCell<Option<Multishot>>,
}

impl UringListener {
    pub(crate) fn new(
        listener: std::net::TcpListener,
        pool: Rc<BufferPool>,
        multishot: bool,
    ) -> io::Result<Self> {
        Ok(Self {
            stop: listener.try_clone()?,
            inner: tokio_uring::net::TcpListener::from_std(listener),
            pool,
            multishot: Cell::new(multishot),
            ahead: Cell::new(true),
            armed: RefCell::new(None),
        })
    }

    /// The next connection's descriptor from the multishot accept, arming
    /// one when none is if `arm_one`; `Ok(None)` when none is armed and
    /// `arm_one` is false, or the kernel refuses it.
    fn poll_multishot(
        &self,
        cx: &mut Context<'_>,
        arm_one: bool,
    ) -> Poll<io::Result<Option<OwnedFd>>> {
        let mut armed = self.armed.borrow_mut();
        loop {
            if armed.is_none() && !arm_one {
                return Poll::Ready(Ok(None));
            }
            let op = armed.get_or_insert_with(|| arm(self.stop.as_raw_fd()));
            let Some(cqe) = std::task::ready!(op.poll_next(cx)) else {
                // It ended (only after its final completion was handed out).
                *armed = None;
                continue;
            };
            if !cqe.more() {
                *armed = None;
            }
            match cqe.result {
                Ok(fd) => {
                    // SAFETY: the kernel's accept made this descriptor and
                    // handed it to this completion only, which is consumed
                    // here: nothing else owns or closes it.
                    #[allow(unsafe_code)]
                    let fd = unsafe { OwnedFd::from_raw_fd(fd as RawFd) };
                    return Poll::Ready(Ok(Some(fd)));
                }
                // Our cancel (`pause`): armed again only if wanted.
                Err(e) if e.raw_os_error() == Some(libc::ECANCELED) => {}
                Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {
                    tracing::warn!(
                        "this kernel refuses io_uring multishot accept (Linux 5.19 or newer has \
                         it): accepting one connection per operation"
                    );
                    self.multishot.set(false);
                    return Poll::Ready(Ok(None));
                }
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
    }

    /// A connection from a descriptor the multishot accept made.
    fn conn(&self, fd: OwnedFd) -> UringConn {
        let stream = std::net::TcpStream::from(fd);
        let peer = stream.peer_addr().ok().map(|a| a.ip());
        let mut conn = UringConn::new(
            tokio_uring::net::TcpStream::from_std(stream),
            self.pool.clone(),
        );
        conn.peer = peer;
        conn
    }
}

/// The outcome of a no-op: none.
struct Nop;

impl OneshotOutputTransform for Nop {
    type Output = ();
    type StoredData = ();

    fn transform_oneshot_output(self, _: (), _: io_uring::cqueue::Entry) {}
}

/// A no-op through the ring: completes after what was submitted before it.
async fn ring_round_trip() {
    UnsubmittedOneshot::new((), Nop, opcode::Nop::new().build())
        .submit()
        .await;
}

/// Arms a multishot accept on `listener`.
fn arm(listener: RawFd) -> Multishot {
    let sqe = opcode::AcceptMulti::new(types::Fd(listener))
        .flags(libc::SOCK_CLOEXEC)
        .build();
    // SAFETY: a multishot accept without an address names no memory.
    #[allow(unsafe_code)]
    let mut op = unsafe { Multishot::submit(sqe) };
    op.discard_with(close_accepted);
    op
}

/// A connection the multishot accept made after its handle was dropped:
/// closed, so its client is told (a reset) instead of waiting.
fn close_accepted(cqe: &MultishotCqe) {
    if let Ok(fd) = cqe.result {
        // SAFETY: as in `poll_multishot`: the descriptor is this
        // completion's alone, and the completion is handed out to no one.
        #[allow(unsafe_code)]
        drop(unsafe { OwnedFd::from_raw_fd(fd as RawFd) });
    }
}

impl Drop for UringListener {
    /// Stops listening when the core stops accepting (shutdown). tokio-uring
    /// cannot cancel the accept in flight, which holds the socket open
    /// until it completes: the listener went on completing handshakes into
    /// its backlog all through the drain, and those clients hung until the
    /// process exited and reset them (review 15; glommio's listener closes
    /// at once, and refuses). `shutdown(SHUT_RD)` on a listening socket
    /// stops it (Linux: the listen is torn down, its backlog reset, new
    /// connections refused, and the pending accept completes with an
    /// error, which lets the descriptor close). A multishot accept is
    /// dropped with the listener: it is cancelled, and the connections it
    /// accepted and did not hand out are closed (its discard hook).
    fn drop(&mut self) {
        let _ = socket2::SockRef::from(&self.stop).shutdown(std::net::Shutdown::Read);
    }
}

impl Listener for UringListener {
    type Socket = UringConn;

    // The multishot accept's state lives in the listener, not in this
    // future: a dropped accept loses no connection. tokio-uring cannot
    // cancel an accept per connection: the driver drops this future only at
    // shutdown, with the listener, whose `Drop` makes the accept fail.
    async fn accept(&self) -> io::Result<UringConn> {
        // Paused: what the cancelled multishot accept still holds first,
        // then an accept per call.
        if self.multishot.get() {
            let ahead = self.ahead.get();
            if let Some(fd) = std::future::poll_fn(|cx| self.poll_multishot(cx, ahead)).await? {
                return Ok(self.conn(fd));
            }
        }
        let (stream, peer) = self.inner.accept().await?;
        let mut conn = UringConn::new(stream, self.pool.clone());
        conn.peer = Some(peer.ip());
        Ok(conn)
    }

    /// With a multishot accept, connections come out of a burst without a
    /// ring round trip between them, so one accepted earlier in the burst
    /// whose peer has gone may not know it yet, and hold its address's
    /// count (review 14b; glommio's listener has the same need). A turn:
    /// first a yield, so the connections' tasks run and submit their
    /// receives, then a no-op through the ring, submitted after those
    /// receives: by its completion theirs (an `ECONNRESET`) are in, and
    /// their tasks, woken first, have run.
    async fn io_turn(&self) {
        tokio::task::yield_now().await;
        ring_round_trip().await;
    }

    /// Cancels the multishot accept, and arms none until `resume`.
    fn pause(&self) {
        self.ahead.set(false);
        if let Some(op) = self.armed.borrow_mut().as_mut() {
            op.cancel();
        }
    }

    fn resume(&self) {
        self.ahead.set(true);
    }

    async fn accepted_ahead(&self) -> Option<UringConn> {
        match std::future::poll_fn(|cx| self.poll_multishot(cx, false)).await {
            Ok(Some(fd)) => Some(self.conn(fd)),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Connections the multishot accept took but never handed out are
    /// closed when the listener is dropped, so their clients learn it
    /// (end of stream or a reset) instead of waiting for the process to
    /// exit. Without the discard hook their descriptors stay open and each
    /// client's read times out.
    #[test]
    fn a_dropped_listener_closes_the_connections_it_did_not_hand_out() {
        let std_listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = std_listener.local_addr().unwrap();
        let clients = tokio_uring::start(async move {
            let pool = BufferPool::new(true).await.unwrap();
            let listener = UringListener::new(std_listener, pool, true).unwrap();
            let first = std::net::TcpStream::connect(addr).unwrap();
            // Arms the multishot accept; hands out the first connection.
            let conn = listener.accept().await.unwrap();
            let clients: Vec<_> = (0..3)
                .map(|_| std::net::TcpStream::connect(addr).unwrap())
                .collect();
            // Until the accept's completions for them are in.
            for _ in 0..100 {
                listener.io_turn().await;
            }
            drop(listener);
            drop(conn);
            // A few turns of the ring, for the cancel to land.
            for _ in 0..10 {
                ring_round_trip().await;
            }
            drop(first);
            clients
        });
        shorty_conformance::wire::assert_closed_by_peer(clients);
    }
}
