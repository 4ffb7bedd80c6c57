//! `tokio_util::codec` implementations (feature `tokio-codec`).
//!
//! [`FrameCodec`] moves raw payloads; [`ClientCodec`] and [`ServerCodec`]
//! move typed messages, so a tokio user can write
//! `Framed::new(stream, ClientCodec::new())` and exchange [`Request`]s and
//! [`Reply`]s. Decoding follows the `Decoder` contract: `Ok(None)` means
//! more bytes are needed, an error ends the stream.
//!
//! What ends a stream: a frame over the limit (the stream cannot be
//! resynchronised) and a malformed message. A reply with an opcode this
//! version does not know does **not**: it is decoded as
//! [`Reply::Unknown`] and takes its place in the reply order, so a client
//! talking to a newer server stays in step. A server that wants to answer a
//! malformed request and carry on decodes frames with [`FrameCodec`] and
//! parses them with [`Request::decode_payload`] itself.
//!
//! [`FrameCodec`] is byte-for-byte tokio-util's `LengthDelimitedCodec` with
//! `.little_endian().length_field_length(4)`.
//!
//! # Examples
//! A client over `Framed` (here talking to an in-process server over an
//! in-memory pipe; a `TcpStream` works the same way):
//! ```
//! use futures_util::{SinkExt, StreamExt};
//! use shorty_protocol::codec::{ClientCodec, ServerCodec};
//! use shorty_protocol::{short_code, Reply, Request};
//! use tokio_util::codec::Framed;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let (client_io, server_io) = tokio::io::duplex(4096);
//! // A toy server: every SHORTEN gets code "867nv", every RESOLVE a URL.
//! tokio::spawn(async move {
//!     let mut server = Framed::new(server_io, ServerCodec::new());
//!     while let Some(Ok(request)) = server.next().await {
//!         let reply = match request {
//!             Request::Shorten(_) => Reply::Shortened("http://127.0.0.1:5000/867nv"),
//!             Request::Resolve(_) => Reply::Resolved("https://example.com/"),
//!             _ => Reply::error(shorty_protocol::ErrorCode::UNKNOWN_OPCODE, ""),
//!         };
//!         server.send(reply).await.unwrap();
//!     }
//! });
//!
//! let mut client = Framed::new(client_io, ClientCodec::new());
//! let request = Request::Shorten("https://example.com/");
//! client.send(request.clone()).await?;
//! let reply = client.next().await.ok_or("closed")??.into_answer(&request)?;
//! let short = reply.as_str().ok_or("not UTF-8")?;
//! assert_eq!(short, "http://127.0.0.1:5000/867nv");
//!
//! let request = Request::Resolve(short_code(short));
//! client.send(request.clone()).await?;
//! let reply = client.next().await.ok_or("closed")??.into_answer(&request)?;
//! assert_eq!(reply.as_str(), Some("https://example.com/"));
//! # Ok(())
//! # }
//! ```

use bytes::{Buf, BufMut, Bytes, BytesMut};
use tokio_util::codec::{Decoder, Encoder};

use crate::frame::{FrameDecoder, Status, HEADER_LEN};
use crate::{Error, Reply, Request, PROTOCOL_V1};

/// The error type of the codecs: the transport's or the protocol's.
///
/// A second enum rather than an `io::Error` variant in [`Error`], so that
/// the protocol layer stays free of I/O (and of `std`).
#[derive(Debug)]
#[non_exhaustive]
pub enum CodecError {
    /// Reading or writing the transport failed.
    Io(std::io::Error),
    /// The bytes violated the protocol, or a message could not be encoded.
    Protocol(Error),
}

impl core::fmt::Display for CodecError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            CodecError::Io(err) => write!(f, "I/O error: {err}"),
            CodecError::Protocol(err) => write!(f, "protocol error: {err}"),
        }
    }
}

impl core::error::Error for CodecError {
    fn source(&self) -> Option<&(dyn core::error::Error + 'static)> {
        match self {
            CodecError::Io(err) => Some(err),
            CodecError::Protocol(err) => Some(err),
        }
    }
}

impl From<std::io::Error> for CodecError {
    fn from(err: std::io::Error) -> Self {
        CodecError::Io(err)
    }
}

impl From<Error> for CodecError {
    fn from(err: Error) -> Self {
        CodecError::Protocol(err)
    }
}

/// Raw frames: decodes payloads as [`Bytes`], encodes any byte slice as one
/// frame. Frames over the limit are refused in both directions.
#[derive(Debug, Clone, Default)]
pub struct FrameCodec {
    decoder: FrameDecoder,
}

impl FrameCodec {
    /// A codec with [`DEFAULT_MAX_FRAME_LEN`](crate::frame::DEFAULT_MAX_FRAME_LEN).
    pub const fn new() -> Self {
        Self {
            decoder: FrameDecoder::new(),
        }
    }

    /// A codec accepting and producing payloads up to `max_frame_len` bytes.
    pub const fn with_max_frame_len(max_frame_len: usize) -> Self {
        Self {
            decoder: FrameDecoder::with_max_frame_len(max_frame_len),
        }
    }

    /// The largest payload accepted or produced.
    pub const fn max_frame_len(&self) -> usize {
        self.decoder.max_frame_len()
    }

    fn decode_payload(&self, src: &mut BytesMut) -> Result<Option<Bytes>, Error> {
        match self.decoder.decode(src)? {
            Status::Complete(payload) => Ok(Some(payload)),
            Status::Partial { needed } => {
                // Reserve only what the header already justifies (at most one
                // maximum frame), never what a peer merely announces beyond it.
                if src.len() >= HEADER_LEN {
                    src.reserve(needed);
                }
                Ok(None)
            }
        }
    }

    fn check_len(&self, payload_len: usize) -> Result<(), Error> {
        if payload_len > self.max_frame_len() {
            return Err(Error::FrameTooLarge {
                len: payload_len,
                max: self.max_frame_len(),
            });
        }
        Ok(())
    }
}

impl Decoder for FrameCodec {
    type Item = Bytes;
    type Error = CodecError;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<Bytes>, CodecError> {
        Ok(self.decode_payload(src)?)
    }
}

impl<T: Buf> Encoder<T> for FrameCodec {
    type Error = CodecError;

    fn encode(&mut self, payload: T, dst: &mut BytesMut) -> Result<(), CodecError> {
        self.check_len(payload.remaining())?;
        dst.reserve(HEADER_LEN + payload.remaining());
        crate::frame::put_header(payload.remaining(), dst)?;
        dst.put(payload);
        Ok(())
    }
}

/// The client side: encodes [`Request`]s, decodes [`Reply`]s.
#[derive(Debug, Clone, Default)]
pub struct ClientCodec {
    frames: FrameCodec,
    // The protocol version HELLO negotiated (0, the derived default, reads
    // as version 1).
    version: u8,
}

impl ClientCodec {
    /// A codec with the default maximum frame length, speaking protocol
    /// version 1 until [`set_version`](Self::set_version).
    pub const fn new() -> Self {
        Self {
            frames: FrameCodec::new(),
            version: PROTOCOL_V1,
        }
    }

    /// A codec accepting and producing payloads up to `max_frame_len` bytes.
    pub const fn with_max_frame_len(max_frame_len: usize) -> Self {
        Self {
            frames: FrameCodec::with_max_frame_len(max_frame_len),
            version: PROTOCOL_V1,
        }
    }

    /// Decodes later messages as protocol `version`: call it with the
    /// version a HELLO reply announced (see
    /// [`Reply::decode_payload_for`]).
    pub fn set_version(&mut self, version: u8) {
        self.version = version;
    }

    /// The protocol version messages are decoded as.
    pub const fn version(&self) -> u8 {
        if self.version < PROTOCOL_V1 {
            PROTOCOL_V1
        } else {
            self.version
        }
    }
}

impl Decoder for ClientCodec {
    type Item = Reply;
    type Error = CodecError;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<Reply>, CodecError> {
        match self.frames.decode_payload(src)? {
            Some(payload) => Ok(Some(Reply::decode_payload_for(self.version, payload)?)),
            None => Ok(None),
        }
    }
}

impl<B: AsRef<[u8]>> Encoder<Request<B>> for ClientCodec {
    type Error = CodecError;

    fn encode(&mut self, request: Request<B>, dst: &mut BytesMut) -> Result<(), CodecError> {
        self.frames.check_len(request.payload_len())?;
        dst.reserve(request.frame_len());
        Ok(request.encode_frame(dst)?)
    }
}

/// The server side: decodes [`Request`]s, encodes [`Reply`]s.
#[derive(Debug, Clone, Default)]
pub struct ServerCodec {
    frames: FrameCodec,
    // The protocol version HELLO negotiated (0, the derived default, reads
    // as version 1).
    version: u8,
}

impl ServerCodec {
    /// A codec with the default maximum frame length, speaking protocol
    /// version 1 until [`set_version`](Self::set_version).
    pub const fn new() -> Self {
        Self {
            frames: FrameCodec::new(),
            version: PROTOCOL_V1,
        }
    }

    /// A codec accepting and producing payloads up to `max_frame_len` bytes.
    pub const fn with_max_frame_len(max_frame_len: usize) -> Self {
        Self {
            frames: FrameCodec::with_max_frame_len(max_frame_len),
            version: PROTOCOL_V1,
        }
    }

    /// Decodes later messages as protocol `version`: call it with the
    /// version a HELLO reply announced (see
    /// [`Request::decode_payload_for`]).
    pub fn set_version(&mut self, version: u8) {
        self.version = version;
    }

    /// The protocol version messages are decoded as.
    pub const fn version(&self) -> u8 {
        if self.version < PROTOCOL_V1 {
            PROTOCOL_V1
        } else {
            self.version
        }
    }
}

impl Decoder for ServerCodec {
    type Item = Request;
    type Error = CodecError;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<Request>, CodecError> {
        match self.frames.decode_payload(src)? {
            Some(payload) => Ok(Some(Request::decode_payload_for(self.version, payload)?)),
            None => Ok(None),
        }
    }
}

impl<B: AsRef<[u8]>> Encoder<Reply<B>> for ServerCodec {
    type Error = CodecError;

    fn encode(&mut self, reply: Reply<B>, dst: &mut BytesMut) -> Result<(), CodecError> {
        self.frames.check_len(reply.payload_len())?;
        dst.reserve(reply.frame_len());
        Ok(reply.encode_frame(dst)?)
    }
}
