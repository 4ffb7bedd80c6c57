//! A `no_std` Shorty client: no allocator, no operating system, just a byte
//! transport (a UART bridge, an embedded TCP stack, ...) and two buffers the
//! caller owns. CI builds it for `thumbv7em-none-eabihf`:
//!
//! ```sh
//! cargo build -p shorty-protocol-no-std-client --target thumbv7em-none-eabihf
//! ```
//!
//! It uses only what `shorty-protocol` offers with `default-features =
//! false`: [`Request::encode_frame`] into a fixed buffer,
//! [`frame::parse_frame`] over what has been read so far (partial input says
//! how much more it needs), and [`Reply::parse_payload`] on the payload.
// `std` only for the host-side tests below.
#![cfg_attr(not(test), no_std)]

use shorty_protocol::frame::{self, Status};
use shorty_protocol::{short_code, ErrorCode, Reply, ReplyError, Request};

/// A blocking byte transport.
pub trait Transport {
    /// The transport's error.
    type Error;
    /// Writes all of `bytes`.
    fn write_all(&mut self, bytes: &[u8]) -> Result<(), Self::Error>;
    /// Reads at least one byte into `buf`, returning how many; 0 means the
    /// peer closed.
    fn read(&mut self, buf: &mut [u8]) -> Result<usize, Self::Error>;
}

impl<T: Transport + ?Sized> Transport for &mut T {
    type Error = T::Error;
    fn write_all(&mut self, bytes: &[u8]) -> Result<(), Self::Error> {
        (**self).write_all(bytes)
    }
    fn read(&mut self, buf: &mut [u8]) -> Result<usize, Self::Error> {
        (**self).read(buf)
    }
}

/// Why a call failed.
#[derive(Debug)]
pub enum ClientError<E> {
    /// The transport failed.
    Transport(E),
    /// The peer closed before the reply was complete.
    Closed,
    /// The request or reply does not fit the caller's buffer.
    BufferTooSmall,
    /// The bytes broke the protocol.
    Protocol(shorty_protocol::Error),
    /// The server answered with an error.
    Server(ErrorCode),
    /// The server answered with a reply that does not answer the request.
    Unexpected,
    /// A URL in the reply is not UTF-8.
    NotUtf8,
}

impl<E> From<shorty_protocol::Error> for ClientError<E> {
    fn from(err: shorty_protocol::Error) -> Self {
        ClientError::Protocol(err)
    }
}

/// A client over `transport`, reading replies into `buf`.
pub struct Client<'b, T> {
    transport: T,
    buf: &'b mut [u8],
}

impl<'b, T: Transport> Client<'b, T> {
    /// A client; `buf` holds one request or one reply at a time, so it must
    /// fit the longest URL plus a few bytes.
    pub fn new(transport: T, buf: &'b mut [u8]) -> Self {
        Self { transport, buf }
    }

    /// Shortens `url`, returning the short URL (borrowed from the buffer).
    ///
    /// # Errors
    /// See [`ClientError`].
    pub fn shorten(&mut self, url: &str) -> Result<&str, ClientError<T::Error>> {
        self.call(&Request::Shorten(url.as_bytes()))
    }

    /// Resolves a short URL (or a bare code) to its long URL.
    ///
    /// # Errors
    /// See [`ClientError`].
    pub fn resolve(&mut self, short_url: &str) -> Result<&str, ClientError<T::Error>> {
        self.call(&Request::Resolve(short_code(short_url).as_bytes()))
    }

    /// Sends one request and reads the reply that answers it; returns its
    /// body as text.
    fn call(&mut self, request: &Request<&[u8]>) -> Result<&str, ClientError<T::Error>> {
        // `&mut [u8]` as a `BufMut` panics when full: check the size first.
        let len = request.frame_len();
        let mut out = self.buf.get_mut(..len).ok_or(ClientError::BufferTooSmall)?;
        request.encode_frame(&mut out)?;
        let sent = self.buf.get(..len).ok_or(ClientError::BufferTooSmall)?;
        self.transport
            .write_all(sent)
            .map_err(ClientError::Transport)?;

        // Read until one whole frame is in; its announced length is checked
        // against the buffer before a byte of payload is awaited.
        let max_payload = self.buf.len().saturating_sub(frame::HEADER_LEN);
        let mut filled = 0;
        loop {
            let input = self.buf.get(..filled).unwrap_or_default();
            match frame::parse_frame(input, max_payload) {
                Ok(Status::Complete(_)) => break,
                Ok(Status::Partial { needed }) => {
                    let room = self
                        .buf
                        .get_mut(filled..filled + needed)
                        .ok_or(ClientError::BufferTooSmall)?;
                    let n = self.transport.read(room).map_err(ClientError::Transport)?;
                    if n == 0 {
                        return Err(ClientError::Closed);
                    }
                    filled += n;
                }
                Err(shorty_protocol::Error::FrameTooLarge { .. }) => {
                    return Err(ClientError::BufferTooSmall)
                }
                Err(other) => return Err(other.into()),
            }
        }
        let input = self.buf.get(..filled).unwrap_or_default();
        let Ok(Status::Complete(frame)) = frame::parse_frame(input, max_payload) else {
            return Err(ClientError::BufferTooSmall);
        };
        // The payload, not the frame: `parse_payload` takes what
        // `parse_frame` found.
        let reply = Reply::parse_payload(frame.payload())?;
        match reply.into_answer(request) {
            Ok(reply) => reply
                .into_body()
                .and_then(|body| core::str::from_utf8(body).ok())
                .ok_or(ClientError::NotUtf8),
            Err(ReplyError::Server { code, .. }) => Err(ClientError::Server(code)),
            Err(_) => Err(ClientError::Unexpected),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use shorty_protocol::ServerInfo;

    /// A transport to a scripted server: it answers each request frame it
    /// is sent with the next canned reply, handed back one byte per read
    /// (the worst case for the frame loop).
    struct Scripted {
        replies: std::vec::Vec<Reply<&'static [u8]>>,
        sent: std::vec::Vec<std::vec::Vec<u8>>,
        pending: std::collections::VecDeque<u8>,
    }

    impl Transport for Scripted {
        type Error = ();
        fn write_all(&mut self, bytes: &[u8]) -> Result<(), ()> {
            self.sent.push(bytes.to_vec());
            let mut frame = std::vec::Vec::new();
            self.replies.remove(0).encode_frame(&mut frame).unwrap();
            self.pending.extend(frame);
            Ok(())
        }
        fn read(&mut self, buf: &mut [u8]) -> Result<usize, ()> {
            match (self.pending.pop_front(), buf.first_mut()) {
                (Some(byte), Some(slot)) => {
                    *slot = byte;
                    Ok(1)
                }
                _ => Ok(0),
            }
        }
    }

    fn scripted(replies: std::vec::Vec<Reply<&'static [u8]>>) -> Scripted {
        Scripted {
            replies,
            sent: std::vec::Vec::new(),
            pending: std::collections::VecDeque::new(),
        }
    }

    #[test]
    fn shortens_and_resolves_with_the_code() {
        let mut buf = [0u8; 128];
        let mut transport = scripted(std::vec![
            Reply::Shortened(b"http://127.0.0.1:5000/867nv"),
            Reply::Resolved(b"https://example.com/"),
        ]);
        let mut client = Client::new(&mut transport, &mut buf);
        assert_eq!(
            client.shorten("https://example.com/").unwrap(),
            "http://127.0.0.1:5000/867nv"
        );
        assert_eq!(
            client.resolve("http://127.0.0.1:5000/867nv").unwrap(),
            "https://example.com/"
        );
        // RESOLVE carried the code, not the whole short URL.
        assert_eq!(transport.sent[1], b"\x06\x00\x00\x00\x04867nv");
    }

    #[test]
    fn errors_wrong_replies_and_small_buffers_are_reported() {
        let mut buf = [0u8; 64];
        let mut transport = scripted(std::vec![
            Reply::error(ErrorCode::NOT_FOUND, b"unknown code"),
            Reply::Hello(ServerInfo::new(1, 65_536, 8_192)),
            Reply::Resolved(&[b'x'; 100]),
        ]);
        let mut client = Client::new(&mut transport, &mut buf);
        assert!(matches!(
            client.resolve("zzz"),
            Err(ClientError::Server(ErrorCode::NOT_FOUND))
        ));
        assert!(matches!(
            client.resolve("zzz"),
            Err(ClientError::Unexpected)
        ));
        // A reply longer than the buffer is refused from its header.
        assert!(matches!(
            client.resolve("zzz"),
            Err(ClientError::BufferTooSmall)
        ));
        let long = "x".repeat(100);
        assert!(matches!(
            client.shorten(&long),
            Err(ClientError::BufferTooSmall)
        ));
    }
}
