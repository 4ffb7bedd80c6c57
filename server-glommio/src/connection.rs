//! A client connection's reads and writes on glommio.
//!
//! glommio's stream reads by readiness: an io_uring poll on the socket,
//! then a non-blocking `recv` into whatever buffer the caller passes when
//! it polls. So a connection needs no buffer of its own: every read goes
//! into one buffer per core, handed to the driver at once. Writes are
//! glommio's (a direct `send`, an io_uring poll when the socket is full).

use std::cell::RefCell;
use std::io;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll};

use bytes::{Buf, Bytes};
use futures_lite::{AsyncRead, AsyncWrite};
use glommio::net::{AcceptedTcpStream, TcpStream};
use shorty_runtime::driver::Socket;

/// Bytes of the per-core read buffer: a read takes at most this much.
pub(crate) const READ_BUFFER: usize = 16 * 1024;

pub(crate) struct GlommioConn {
    stream: TcpStream,
    /// The core's read buffer, shared by all its connections.
    buffer: Rc<RefCell<Vec<u8>>>,
    writing: Option<Bytes>,
    /// The peer's address, from the accept: the driver asks for it twice
    /// per connection (admission and the connection's state), and each ask
    /// of glommio's stream is a `getpeername` system call.
    peer: Option<std::net::IpAddr>,
}

impl GlommioConn {
    pub(crate) fn new(accepted: AcceptedTcpStream, buffer: Rc<RefCell<Vec<u8>>>) -> Self {
        // The vendored glommio's accept keeps the address `accept4` gave
        // (vendor/PATCHES.md, glommio 4), so this costs no system call.
        let peer = accepted.peer_addr().ok().map(|a| a.ip());
        // (TCP_NODELAY is inherited from the listener.)
        let stream = accepted.bind_to_executor();
        Self {
            stream,
            buffer,
            writing: None,
            peer,
        }
    }
}

impl Socket for GlommioConn {
    fn peer_ip(&self) -> Option<std::net::IpAddr> {
        self.peer
    }

    fn poll_read(
        &mut self,
        cx: &mut Context<'_>,
        input: &mut dyn FnMut(&[u8]),
    ) -> Poll<io::Result<usize>> {
        let mut buffer = self.buffer.borrow_mut();
        let n = std::task::ready!(Pin::new(&mut self.stream).poll_read(cx, &mut buffer[..]))?;
        if n > 0 {
            input(&buffer[..n]);
        }
        Poll::Ready(Ok(n))
    }

    fn start_write(&mut self, bytes: Bytes) {
        debug_assert!(self.writing.is_none());
        self.writing = Some(bytes);
    }

    fn poll_write(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while let Some(bytes) = self.writing.as_mut() {
            if bytes.is_empty() {
                self.writing = None;
                break;
            }
            let n = std::task::ready!(Pin::new(&mut self.stream).poll_write(cx, bytes))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            bytes.advance(n);
        }
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown_write(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        // glommio's `poll_close` is `shutdown(Write)`.
        Pin::new(&mut self.stream).poll_close(cx)
    }

    async fn close(self) {
        // glommio cancels an operation whose future is dropped, so nothing
        // is left in flight: dropping the socket closes it.
        drop(self.stream);
    }
}
