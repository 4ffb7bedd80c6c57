//! A client connection's reads and writes on tokio-uring.
//!
//! tokio-uring cannot cancel a read: an abandoned read (timeout, shutdown)
//! keeps its buffer and may still consume bytes. The driver therefore ends
//! the connection after abandoning a read, and `close` shuts the socket
//! down first so that the pending read completes at once and the
//! descriptor is released.

use std::io;
use std::net::Shutdown;

use bytes::Bytes;
use shorty_service::driver::Conn;
use tokio_uring::buf::BoundedBuf;
use tokio_uring::net::TcpStream;

pub(crate) struct UringConn(TcpStream);

impl UringConn {
    pub(crate) fn new(stream: TcpStream) -> Self {
        // Replies go out as soon as they are ready; batching comes from
        // writing all ready replies at once, not from Nagle.
        let _ = stream.set_nodelay(true);
        Self(stream)
    }
}

impl Conn for UringConn {
    async fn read(&mut self, buf: Vec<u8>) -> (io::Result<usize>, Vec<u8>) {
        // io_uring reads at the buffer's start; a slice of the spare
        // capacity appends instead.
        let (len, cap) = (buf.len(), buf.capacity());
        let (result, slice) = self.0.read(buf.slice(len..cap)).await;
        (result, slice.into_inner())
    }

    async fn write_all(&mut self, bytes: Bytes) -> io::Result<()> {
        self.0.write_all(bytes).await.0
    }

    async fn close(&mut self) {
        let _ = self.0.shutdown(Shutdown::Both);
    }
}
