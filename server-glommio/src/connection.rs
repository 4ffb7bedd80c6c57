//! A client connection's reads and writes on glommio.
//!
//! glommio cancels an operation whose future is dropped, so an abandoned
//! read loses nothing here; the driver closes the connection after one
//! anyway, to behave exactly like the tokio-uring backend.

use std::io;
use std::net::Shutdown;

use bytes::Bytes;
use futures_lite::{AsyncReadExt, AsyncWriteExt};
use glommio::net::TcpStream;
use shorty_service::driver::Conn;

pub(crate) struct GlommioConn(TcpStream);

impl GlommioConn {
    pub(crate) fn new(stream: TcpStream) -> Self {
        // Replies go out as soon as they are ready; batching comes from
        // writing all ready replies at once, not from Nagle.
        let _ = stream.set_nodelay(true);
        Self(stream)
    }
}

impl Conn for GlommioConn {
    async fn read(&mut self, mut buf: Vec<u8>) -> (io::Result<usize>, Vec<u8>) {
        // `AsyncRead` wants initialised bytes: expose the spare capacity
        // (zeroed), read into it, and cut back to what arrived.
        let len = buf.len();
        buf.resize(buf.capacity(), 0);
        let result = self.0.read(&mut buf[len..]).await;
        buf.truncate(len + result.as_ref().map_or(0, |n| *n));
        (result, buf)
    }

    async fn write_all(&mut self, bytes: Bytes) -> io::Result<()> {
        self.0.write_all(&bytes).await
    }

    async fn close(&mut self) {
        let _ = self.0.shutdown(Shutdown::Both).await;
    }
}
