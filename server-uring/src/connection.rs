//! A client connection's reads and writes on tokio-uring, with io_uring
//! provided buffers, so an idle connection holds no read buffer.
//!
//! **Reads.** Each core has a pool of buffers the kernel picks from
//! (`buffers.rs`: a registered buffer ring, or `IORING_OP_PROVIDE_BUFFERS`
//! on kernels before 5.19). A connection's read is an `IORING_OP_RECV`
//! with `IOSQE_BUFFER_SELECT`: it waits with no buffer at all, and the
//! kernel picks one from the pool only when bytes arrive. The driver
//! handles the bytes at once and the buffer goes straight back to the pool.
//! In the rare case the pool is empty at that moment (`ENOBUFS`), that one
//! read falls back to a buffer of its own. tokio-uring has no API for
//! either, but exports its one-shot operation type
//! (`UnsubmittedOneshot`), through which these are plain SQEs built with
//! the `io-uring` crate it uses.
//!
//! **Multishot receive** (`--uring-multishot-recv on`, Linux 6.0): from a
//! connection's second read on, one `IORING_OP_RECV` with
//! `IORING_RECV_MULTISHOT`, from the same pool, instead of one receive per
//! read: it stays armed and posts a completion each time bytes arrive
//! (vendored tokio-uring patch 3, `tokio_uring::Multishot`;
//! vendor/PATCHES.md). The first read is a receive of its own: a connection
//! that closes after one request (HTTP's `Connection: close`) would
//! otherwise leave a receive armed that its close must cancel, an
//! operation and a system call more per connection. It ends with a completion
//! without `IORING_CQE_F_MORE`: end of stream (0), an error, `ENOBUFS` (the
//! pool was empty: that one read falls back to a buffer of its own, as
//! above, and the next is a multishot again) or our cancel. While the
//! driver wants no input (`Socket::pause_read`: the connection's output is
//! at its cap, a peer that does not read) the receive is cancelled, because
//! an armed one would go on taking the core's shared buffers for bytes
//! nobody reads (README, "Peers that never read"); what arrived before the
//! cancel landed is handed over when reading resumes, and the receive is
//! armed again. A kernel that refuses it (`EINVAL`) gets a receive per read
//! from then on, on that core.
//!
//! **Writes.** `IORING_OP_SEND` of the reply bytes with `MSG_WAITALL`: the
//! kernel (Linux 5.18) sends the rest of a partial send by itself, waiting
//! for the peer's window, and completes once all is sent or the send
//! failed, so a write goes out in full without being polled again, and the
//! driver need not be woken for a keep-alive reply's completion
//! (`Socket::writes_finish_unattended`). A kernel without buffer rings
//! (before 5.19) is taken for one that may not, and a short completion is
//! resubmitted for the rest either way.
//!
//! **Close.** tokio-uring cannot cancel a oneshot operation: `close` shuts
//! the socket down, which completes any read or write in flight (an armed
//! multishot receive ends with end of stream, and is cancelled as well),
//! waits for them (so every selected buffer returns to the pool), then
//! drops the socket.

use std::future::Future;
use std::io;
use std::net::Shutdown;
use std::os::fd::{AsRawFd, RawFd};
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll};

use bytes::Bytes;
use io_uring::{cqueue, opcode, squeue, types};
use shorty_runtime::driver::Socket;
use tokio_uring::net::TcpStream;
use tokio_uring::{
    InFlightOneshot, Multishot, MultishotCqe, OneshotOutputTransform, UnsubmittedOneshot,
};

use crate::buffers::{BufferPool, BUFFER_SIZE, GROUP};

/// The `-errno` of a result.
fn result(cqe: &cqueue::Entry) -> io::Result<u32> {
    let res = cqe.result();
    if res < 0 {
        Err(io::Error::from_raw_os_error(-res))
    } else {
        Ok(res as u32)
    }
}

/// The outcome of a buffer-select receive: bytes and the buffer they are
/// in.
struct Selected;

impl OneshotOutputTransform for Selected {
    type Output = (io::Result<u32>, Option<u16>);
    type StoredData = ();

    fn transform_oneshot_output(self, _: (), cqe: cqueue::Entry) -> Self::Output {
        (result(&cqe), cqueue::buffer_select(cqe.flags()))
    }
}

/// The outcome of a receive into a buffer of its own.
struct Owned;

impl OneshotOutputTransform for Owned {
    type Output = (io::Result<u32>, Vec<u8>);
    type StoredData = Vec<u8>;

    fn transform_oneshot_output(self, buf: Vec<u8>, cqe: cqueue::Entry) -> Self::Output {
        (result(&cqe), buf)
    }
}

/// The outcome of a send: bytes sent.
struct Sent;

impl OneshotOutputTransform for Sent {
    type Output = (io::Result<u32>, Bytes);
    type StoredData = Bytes;

    fn transform_oneshot_output(self, bytes: Bytes, cqe: cqueue::Entry) -> Self::Output {
        (result(&cqe), bytes)
    }
}

enum Recv {
    Selected(InFlightOneshot<(), Selected>),
    Owned(InFlightOneshot<Vec<u8>, Owned>),
    /// A multishot receive, armed until a completion without `F_MORE`.
    Multi(Multishot),
}

pub(crate) struct UringConn {
    stream: TcpStream,
    fd: RawFd,
    pool: Rc<BufferPool>,
    recv: Option<Recv>,
    send: Option<InFlightOneshot<Bytes, Sent>>,
    /// The peer's address, from the accept.
    pub(crate) peer: Option<std::net::IpAddr>,
    /// A read completed on this connection: the next ones may use a
    /// multishot receive. The first is a receive of its own, so a
    /// connection that closes after one request (`Connection: close`)
    /// costs no more than without multishot (no receive left armed to
    /// cancel).
    read_once: bool,
}

fn recv_selected(fd: RawFd) -> Recv {
    let sqe = opcode::Recv::new(types::Fd(fd), std::ptr::null_mut(), BUFFER_SIZE as u32)
        .buf_group(GROUP)
        .build()
        .flags(squeue::Flags::BUFFER_SELECT);
    Recv::Selected(UnsubmittedOneshot::new((), Selected, sqe).submit())
}

fn recv_multishot(fd: RawFd) -> Recv {
    let sqe = opcode::RecvMulti::new(types::Fd(fd), GROUP).build();
    // SAFETY: the entry names no memory of ours: each receive's buffer
    // comes from the pool's group, whose memory is never freed
    // (buffers.rs, invariant 1).
    #[allow(unsafe_code)]
    let op = unsafe { Multishot::submit(sqe) };
    Recv::Multi(op)
}

fn recv_owned(fd: RawFd) -> Recv {
    let mut buf = Vec::with_capacity(BUFFER_SIZE);
    let sqe = opcode::Recv::new(types::Fd(fd), buf.as_mut_ptr(), BUFFER_SIZE as u32).build();
    Recv::Owned(UnsubmittedOneshot::new(buf, Owned, sqe).submit())
}

fn send(fd: RawFd, bytes: Bytes) -> InFlightOneshot<Bytes, Sent> {
    let sqe = opcode::Send::new(types::Fd(fd), bytes.as_ptr(), bytes.len() as u32)
        .flags(libc::MSG_WAITALL)
        .build();
    UnsubmittedOneshot::new(bytes, Sent, sqe).submit()
}

impl UringConn {
    pub(crate) fn new(stream: TcpStream, pool: Rc<BufferPool>) -> Self {
        // (TCP_NODELAY is inherited from the listener.)
        let fd = stream.as_raw_fd();
        Self {
            stream,
            fd,
            pool,
            recv: None,
            send: None,
            peer: None,
            read_once: false,
        }
    }
}

impl UringConn {
    /// Handles one completion of the multishot receive (`cancelled`: a
    /// cancel had been asked for). `Some` is what `poll_read` returns;
    /// `None`: nothing for the driver, read on (the receive ended and the
    /// next one is armed, or an owned-buffer read stands in).
    fn multishot_read(
        &mut self,
        cqe: MultishotCqe,
        cancelled: bool,
        input: &mut dyn FnMut(&[u8]),
    ) -> Option<io::Result<usize>> {
        let bid = cqueue::buffer_select(cqe.flags);
        match cqe.result {
            Ok(n) => {
                if let Some(bid) = bid {
                    if n > 0 {
                        input(self.pool.bytes(bid, n as usize));
                    }
                    self.pool.give_back(bid);
                }
                // 0 is end of stream, which also ends the receive.
                Some(Ok(n as usize))
            }
            Err(err) => {
                if let Some(bid) = bid {
                    self.pool.give_back(bid);
                }
                match err.raw_os_error() {
                    // The pool was empty when bytes arrived, which ended
                    // the receive: read them into a buffer of this
                    // connection's own, once, then multishot again.
                    Some(libc::ENOBUFS) => {
                        self.recv = Some(recv_owned(self.fd));
                        None
                    }
                    // `pause_read`'s cancel landed: reading resumed, so
                    // arm again.
                    Some(libc::ECANCELED) if cancelled => None,
                    // A kernel without multishot receive (before 6.0).
                    Some(libc::EINVAL) if self.pool.multishot() => {
                        tracing::warn!(
                            "this kernel refuses io_uring multishot receive (Linux 6.0 or newer \
                             has it): a receive per read on this core"
                        );
                        self.pool.refuse_multishot();
                        None
                    }
                    _ => Some(Err(err)),
                }
            }
        }
    }
}

impl UringConn {
    /// Hands the multishot receive's completions already here back to the
    /// pool, their bytes unread (the connection is closing), and forgets
    /// the receive once its final completion was among them.
    fn drain_ready(&mut self) {
        if let Some(Recv::Multi(op)) = &mut self.recv {
            let mut cx = Context::from_waker(std::task::Waker::noop());
            while let Poll::Ready(Some(cqe)) = op.poll_next(&mut cx) {
                if let Some(bid) = cqueue::buffer_select(cqe.flags) {
                    self.pool.give_back(bid);
                }
            }
            if op.is_finished() {
                self.recv = None;
            }
        }
    }
}

impl Drop for UringConn {
    /// Without a `close` (the task dropped, at the runtime's end): the
    /// buffers of the receive's completions already here go back to the
    /// pool; the drop of the `Multishot` cancels it.
    fn drop(&mut self) {
        self.drain_ready();
    }
}

impl Socket for UringConn {
    fn peer_ip(&self) -> Option<std::net::IpAddr> {
        self.peer
    }

    fn poll_read(
        &mut self,
        cx: &mut Context<'_>,
        input: &mut dyn FnMut(&[u8]),
    ) -> Poll<io::Result<usize>> {
        loop {
            let (fd, multishot) = (self.fd, self.read_once && self.pool.multishot());
            let recv = self.recv.get_or_insert_with(|| {
                if multishot {
                    recv_multishot(fd)
                } else {
                    recv_selected(fd)
                }
            });
            match recv {
                Recv::Multi(op) => {
                    let cancelled = op.is_cancelled();
                    let Some(cqe) = std::task::ready!(op.poll_next(cx)) else {
                        // (Not reached: the op is dropped with its final
                        // completion.)
                        self.recv = None;
                        continue;
                    };
                    if !cqe.more() {
                        // Ended: the next read arms a new one.
                        self.recv = None;
                    }
                    if let Some(read) = self.multishot_read(cqe, cancelled, input) {
                        return Poll::Ready(read);
                    }
                }
                Recv::Selected(op) => {
                    let (res, bid) = std::task::ready!(Pin::new(op).poll(cx));
                    self.recv = None;
                    match res {
                        Ok(n) => {
                            if let Some(bid) = bid {
                                if n > 0 {
                                    input(self.pool.bytes(bid, n as usize));
                                }
                                self.pool.give_back(bid);
                            }
                            self.read_once = true;
                            return Poll::Ready(Ok(n as usize));
                        }
                        Err(err) if err.raw_os_error() == Some(libc::ENOBUFS) => {
                            // The pool is empty this instant (buffers go back
                            // on the next submission): read into a buffer of
                            // this connection's own, once.
                            self.recv = Some(recv_owned(self.fd));
                        }
                        Err(err) => return Poll::Ready(Err(err)),
                    }
                }
                Recv::Owned(op) => {
                    let (res, mut buf) = std::task::ready!(Pin::new(op).poll(cx));
                    self.recv = None;
                    let n = res? as usize;
                    // SAFETY: the kernel initialised `n` bytes of the
                    // spare capacity the read was given.
                    #[allow(unsafe_code)]
                    unsafe {
                        buf.set_len(n.min(buf.capacity()));
                    }
                    if n > 0 {
                        input(&buf);
                    }
                    self.read_once = true;
                    return Poll::Ready(Ok(n));
                }
            }
        }
    }

    fn pause_read(&mut self) {
        // The cancel's completion (and any bytes that arrived before it)
        // is handed over by the next `poll_read`, which then re-arms.
        if let Some(Recv::Multi(op)) = &mut self.recv {
            op.cancel();
        }
    }

    fn start_write(&mut self, bytes: Bytes) {
        debug_assert!(self.send.is_none());
        self.send = Some(send(self.fd, bytes));
    }

    fn poll_write(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while let Some(op) = self.send.as_mut() {
            let (res, bytes) = std::task::ready!(Pin::new(op).poll(cx));
            self.send = None;
            let n = res? as usize;
            if n == 0 && !bytes.is_empty() {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            if n < bytes.len() {
                self.send = Some(send(self.fd, bytes.slice(n..)));
            }
        }
        Poll::Ready(Ok(()))
    }

    fn writes_finish_unattended(&self) -> bool {
        // `MSG_WAITALL` sends are finished by the kernel since Linux 5.18
        // (`io_net_retry`); one with buffer rings (5.19) has that.
        self.pool.has_ring()
    }

    fn poll_shutdown_write(&mut self, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        // shutdown(2) does not block: no ring operation needed.
        Poll::Ready(self.stream.shutdown(Shutdown::Write))
    }

    async fn close(mut self) {
        // A multishot receive cancelled by `pause_read` (the connection
        // stopped reading to close) has usually ended by now: then there is
        // nothing to shut down for it.
        self.drain_ready();
        if self.recv.is_none() && self.send.is_none() {
            // Nothing in flight (the peer closed first, the usual end):
            // dropping the socket closes it.
            return;
        }
        let _ = self.stream.shutdown(Shutdown::Both);
        if let Some(Recv::Multi(op)) = &mut self.recv {
            // The shutdown ends it with end of stream; the cancel makes
            // sure, since the close waits for its final completion (one
            // more operation, and only when the server closes first).
            op.cancel();
        }
        // Wait for what is in flight, so a selected buffer returns to the
        // pool and no operation outlives the socket's descriptor.
        let pool = self.pool.clone();
        let _ = std::future::poll_fn(|cx| match self.recv.as_mut() {
            None => Poll::Ready(()),
            // What it received before the end is dropped, its buffers
            // returned.
            Some(Recv::Multi(op)) => loop {
                match std::task::ready!(op.poll_next(cx)) {
                    None => return Poll::Ready(()),
                    Some(cqe) => {
                        if let Some(bid) = cqueue::buffer_select(cqe.flags) {
                            pool.give_back(bid);
                        }
                    }
                }
            },
            Some(Recv::Selected(op)) => {
                let (_, bid) = std::task::ready!(Pin::new(op).poll(cx));
                if let Some(bid) = bid {
                    self.pool.give_back(bid);
                }
                Poll::Ready(())
            }
            Some(Recv::Owned(op)) => Pin::new(op).poll(cx).map(|_| ()),
        })
        .await;
        self.recv = None;
        if let Some(op) = self.send.take() {
            let _ = op.await;
        }
    }
}
