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
//! **Writes.** `IORING_OP_SEND` of the reply bytes, resubmitted for the
//! rest after a partial send.
//!
//! **Close.** tokio-uring cannot cancel an operation: `close` shuts the
//! socket down, which completes any read or write in flight, waits for
//! them (so a selected buffer returns to the pool), then drops the socket.

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
use tokio_uring::{InFlightOneshot, OneshotOutputTransform, UnsubmittedOneshot};

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
}

pub(crate) struct UringConn {
    stream: TcpStream,
    fd: RawFd,
    pool: Rc<BufferPool>,
    recv: Option<Recv>,
    send: Option<InFlightOneshot<Bytes, Sent>>,
    /// The peer's address, from the accept.
    pub(crate) peer: Option<std::net::IpAddr>,
}

fn recv_selected(fd: RawFd) -> Recv {
    let sqe = opcode::Recv::new(types::Fd(fd), std::ptr::null_mut(), BUFFER_SIZE as u32)
        .buf_group(GROUP)
        .build()
        .flags(squeue::Flags::BUFFER_SELECT);
    Recv::Selected(UnsubmittedOneshot::new((), Selected, sqe).submit())
}

fn recv_owned(fd: RawFd) -> Recv {
    let mut buf = Vec::with_capacity(BUFFER_SIZE);
    let sqe = opcode::Recv::new(types::Fd(fd), buf.as_mut_ptr(), BUFFER_SIZE as u32).build();
    Recv::Owned(UnsubmittedOneshot::new(buf, Owned, sqe).submit())
}

fn send(fd: RawFd, bytes: Bytes) -> InFlightOneshot<Bytes, Sent> {
    let sqe = opcode::Send::new(types::Fd(fd), bytes.as_ptr(), bytes.len() as u32).build();
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
        }
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
            let recv = self.recv.get_or_insert_with(|| recv_selected(self.fd));
            match recv {
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
                    return Poll::Ready(Ok(n));
                }
            }
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

    fn poll_shutdown_write(&mut self, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        // shutdown(2) does not block: no ring operation needed.
        Poll::Ready(self.stream.shutdown(Shutdown::Write))
    }

    async fn close(mut self) {
        if self.recv.is_none() && self.send.is_none() {
            // Nothing in flight (the peer closed first, the usual end):
            // dropping the socket closes it.
            return;
        }
        let _ = self.stream.shutdown(Shutdown::Both);
        // Wait for what is in flight, so a selected buffer returns to the
        // pool and no operation outlives the socket's descriptor.
        let _ = std::future::poll_fn(|cx| match self.recv.as_mut() {
            None => Poll::Ready(()),
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
