//! Typed messages carried in frame payloads.
//!
//! A payload whose first byte is a control byte (`0x00..=0x1F`) is a typed
//! message and that byte is its opcode; any other payload is a *bare URL*,
//! the seed's format (a URL never starts with a control byte). Replies to
//! requests use the request's opcode with bit `0x10` set; error replies use
//! [`opcode::ERROR`].
//!
//! Message types are generic over their body type `B`: `Request<&[u8]>`
//! borrows from a read buffer (see [`Request::parse`]) and
//! `Request<Bytes>` owns zero-copy slices of a frame (see
//! [`Request::decode`]). Anything `AsRef<[u8]>` can be encoded.

use bytes::{BufMut, Bytes};
use nom::Parser;

use crate::error_code::ErrorCode;
use crate::frame::{put_header, HEADER_LEN};
use crate::Error;

/// The protocol version this crate speaks, announced in HELLO.
pub const PROTOCOL_VERSION: u8 = 1;

/// Opcodes: the first payload byte of a typed message.
pub mod opcode {
    /// HELLO request: version negotiation and server limits.
    pub const HELLO: u8 = 0x01;
    /// PING request: liveness check, body echoed back.
    pub const PING: u8 = 0x02;
    /// SHORTEN request: body is the long URL.
    pub const SHORTEN: u8 = 0x03;
    /// RESOLVE request: body is a short code.
    pub const RESOLVE: u8 = 0x04;
    /// Bit set in a reply's opcode: reply opcode = request opcode | `REPLY`.
    pub const REPLY: u8 = 0x10;
    /// HELLO reply: negotiated version and server limits.
    pub const HELLO_REPLY: u8 = HELLO | REPLY;
    /// PONG reply: the PING body.
    pub const PONG: u8 = PING | REPLY;
    /// SHORTENED reply: the short URL.
    pub const SHORTENED: u8 = SHORTEN | REPLY;
    /// RESOLVED reply: the long URL.
    pub const RESOLVED: u8 = RESOLVE | REPLY;
    /// ERROR reply to any request: `u16` code and UTF-8 message.
    pub const ERROR: u8 = 0x1F;
    /// Payloads whose first byte is above this are bare URLs, not typed
    /// messages.
    pub const MAX_CONTROL: u8 = 0x1F;
}

/// A request from client to server.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
#[non_exhaustive]
pub enum Request<B = Bytes> {
    /// The seed's request: the payload is the long URL itself. Answered with
    /// [`Reply::Bare`] on success. Must be non-empty and must not start with a
    /// control byte.
    Bare(B),
    /// Asks for the server's protocol version and limits.
    Hello {
        /// The highest protocol version the client speaks.
        version: u8,
    },
    /// Liveness check; the server echoes the body in [`Reply::Pong`].
    Ping(B),
    /// Shorten a long URL; answered with [`Reply::Shortened`].
    Shorten(B),
    /// Look a short code up; answered with [`Reply::Resolved`].
    Resolve(B),
}

/// What a server announces in its HELLO reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub struct ServerInfo {
    /// The protocol version the server will speak on this connection: the
    /// lower of the client's and the server's highest versions.
    pub version: u8,
    /// The largest frame payload the server accepts, in bytes.
    pub max_frame_len: u32,
    /// The longest URL the server accepts in SHORTEN, in bytes.
    pub max_url_len: u32,
}

/// A reply from server to client. Replies come in request order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
#[non_exhaustive]
pub enum Reply<B = Bytes> {
    /// The seed's reply to a [`Request::Bare`]: the payload is the short URL
    /// itself. Must be non-empty and must not start with a control byte.
    Bare(B),
    /// Answer to HELLO.
    Hello(ServerInfo),
    /// Answer to PING, with its body.
    Pong(B),
    /// Answer to SHORTEN: the short URL.
    Shortened(B),
    /// Answer to RESOLVE: the long URL.
    Resolved(B),
    /// Any request failed.
    Error {
        /// Stable numeric code.
        code: ErrorCode,
        /// Human-readable explanation, UTF-8.
        message: B,
    },
}

type NomError<'a> = nom::error::Error<&'a [u8]>;

/// Splits a payload into its opcode and body, or says it is a bare URL.
fn split_opcode(payload: &[u8]) -> Result<Option<(u8, &[u8])>, Error> {
    let (body, first) =
        nom::number::complete::u8::<_, NomError<'_>>(payload).map_err(|_| Error::EmptyPayload)?;
    Ok((first <= opcode::MAX_CONTROL).then_some((first, body)))
}

/// Runs a complete-input parser over a fixed-layout body, which must be
/// consumed exactly.
fn fixed<'a, P>(opcode: u8, body: &'a [u8], mut parser: P) -> Result<P::Output, Error>
where
    P: Parser<&'a [u8], Error = NomError<'a>>,
{
    match parser.parse(body) {
        Ok(([], value)) => Ok(value),
        Ok((rest, _)) => Err(Error::TrailingData {
            opcode,
            extra: rest.len(),
        }),
        Err(_) => Err(Error::Truncated { opcode }),
    }
}

fn check_bare(url: &[u8]) -> Result<(), Error> {
    match url.first() {
        Some(&first) if first > opcode::MAX_CONTROL => Ok(()),
        _ => Err(Error::InvalidBareUrl),
    }
}

impl<'a> Request<&'a [u8]> {
    /// Parses a frame payload into a request borrowing from it.
    ///
    /// # Errors
    /// [`Error::EmptyPayload`], [`Error::UnknownOpcode`],
    /// [`Error::Truncated`] or [`Error::TrailingData`]; a server answers them
    /// with [`Error::error_code`] and keeps the connection.
    ///
    /// # Examples
    /// ```
    /// use shorty_protocol::Request;
    ///
    /// assert_eq!(Request::parse(b"\x03http://a.example/")?, Request::Shorten(&b"http://a.example/"[..]));
    /// // The seed's bare URL:
    /// assert_eq!(Request::parse(b"http://a.example/")?, Request::Bare(&b"http://a.example/"[..]));
    /// # Ok::<(), shorty_protocol::Error>(())
    /// ```
    pub fn parse(payload: &'a [u8]) -> Result<Self, Error> {
        let Some((op, body)) = split_opcode(payload)? else {
            return Ok(Request::Bare(payload));
        };
        Ok(match op {
            opcode::HELLO => Request::Hello {
                version: fixed(op, body, nom::number::complete::u8)?,
            },
            opcode::PING => Request::Ping(body),
            opcode::SHORTEN => Request::Shorten(body),
            opcode::RESOLVE => Request::Resolve(body),
            other => return Err(Error::UnknownOpcode(other)),
        })
    }
}

impl Request<Bytes> {
    /// Decodes a frame payload into a request whose body shares the
    /// payload's allocation.
    ///
    /// # Errors
    /// As [`Request::parse`].
    pub fn decode(payload: Bytes) -> Result<Self, Error> {
        let parsed = Request::parse(&payload)?;
        Ok(parsed.map(|body| payload.slice_ref(body)))
    }
}

impl<B: AsRef<[u8]>> Request<B> {
    /// Borrows the body, giving a `Request<&[u8]>`.
    pub fn as_borrowed(&self) -> Request<&[u8]> {
        match self {
            Request::Bare(url) => Request::Bare(url.as_ref()),
            Request::Hello { version } => Request::Hello { version: *version },
            Request::Ping(body) => Request::Ping(body.as_ref()),
            Request::Shorten(url) => Request::Shorten(url.as_ref()),
            Request::Resolve(code) => Request::Resolve(code.as_ref()),
        }
    }

    /// Converts the body type.
    pub fn map<C>(self, mut f: impl FnMut(B) -> C) -> Request<C> {
        match self {
            Request::Bare(url) => Request::Bare(f(url)),
            Request::Hello { version } => Request::Hello { version },
            Request::Ping(body) => Request::Ping(f(body)),
            Request::Shorten(url) => Request::Shorten(f(url)),
            Request::Resolve(code) => Request::Resolve(f(code)),
        }
    }

    /// The length of the encoded payload (without the frame header).
    pub fn payload_len(&self) -> usize {
        match self.as_borrowed() {
            Request::Bare(url) => url.len(),
            Request::Hello { .. } => 2,
            Request::Ping(b) | Request::Shorten(b) | Request::Resolve(b) => 1 + b.len(),
        }
    }

    /// The length of the encoded frame, header included.
    pub fn encoded_len(&self) -> usize {
        HEADER_LEN + self.payload_len()
    }

    /// Appends the request as one frame to `dst`.
    ///
    /// # Errors
    /// [`Error::InvalidBareUrl`] for a bare URL that would not read back as
    /// one; [`Error::FrameTooLarge`] past `u32::MAX` bytes. Nothing is written
    /// then.
    ///
    /// # Examples
    /// ```
    /// use shorty_protocol::Request;
    ///
    /// let mut out = Vec::new();
    /// Request::Resolve("867nv").encode(&mut out)?;
    /// assert_eq!(out, b"\x06\x00\x00\x00\x04867nv");
    /// # Ok::<(), shorty_protocol::Error>(())
    /// ```
    pub fn encode<M: BufMut>(&self, dst: &mut M) -> Result<(), Error> {
        let msg = self.as_borrowed();
        if let Request::Bare(url) = msg {
            check_bare(url)?;
        }
        put_header(self.payload_len(), dst)?;
        match msg {
            Request::Bare(url) => dst.put_slice(url),
            Request::Hello { version } => {
                dst.put_u8(opcode::HELLO);
                dst.put_u8(version);
            }
            Request::Ping(body) => put_tagged(dst, opcode::PING, body),
            Request::Shorten(url) => put_tagged(dst, opcode::SHORTEN, url),
            Request::Resolve(code) => put_tagged(dst, opcode::RESOLVE, code),
        }
        Ok(())
    }
}

fn put_tagged<M: BufMut>(dst: &mut M, op: u8, body: &[u8]) {
    dst.put_u8(op);
    dst.put_slice(body);
}

impl<'a> Reply<&'a [u8]> {
    /// Parses a frame payload into a reply borrowing from it.
    ///
    /// # Errors
    /// [`Error::EmptyPayload`], [`Error::UnknownOpcode`],
    /// [`Error::Truncated`], [`Error::TrailingData`] or
    /// [`Error::InvalidUtf8`] (an error message that is not UTF-8).
    ///
    /// # Examples
    /// ```
    /// use shorty_protocol::{ErrorCode, Reply};
    ///
    /// let reply = Reply::parse(b"\x1f\x94\x01not found")?;
    /// assert_eq!(reply, Reply::Error { code: ErrorCode::NOT_FOUND, message: &b"not found"[..] });
    /// // A reply cut short is an error, not a partial result: frames are
    /// // always complete by the time their payload is parsed.
    /// assert!(Reply::parse(b"\x1f\x94").is_err());
    /// # Ok::<(), shorty_protocol::Error>(())
    /// ```
    pub fn parse(payload: &'a [u8]) -> Result<Self, Error> {
        use nom::number::complete::{le_u16, le_u32, u8};

        let Some((op, body)) = split_opcode(payload)? else {
            return Ok(Reply::Bare(payload));
        };
        Ok(match op {
            opcode::HELLO_REPLY => {
                let (version, max_frame_len, max_url_len) = fixed(op, body, (u8, le_u32, le_u32))?;
                Reply::Hello(ServerInfo {
                    version,
                    max_frame_len,
                    max_url_len,
                })
            }
            opcode::PONG => Reply::Pong(body),
            opcode::SHORTENED => Reply::Shortened(body),
            opcode::RESOLVED => Reply::Resolved(body),
            opcode::ERROR => {
                let (message, code) =
                    le_u16::<_, NomError<'_>>(body).map_err(|_| Error::Truncated { opcode: op })?;
                core::str::from_utf8(message).map_err(|_| Error::InvalidUtf8)?;
                Reply::Error {
                    code: ErrorCode(code),
                    message,
                }
            }
            other => return Err(Error::UnknownOpcode(other)),
        })
    }
}

impl Reply<Bytes> {
    /// Decodes a frame payload into a reply whose body shares the payload's
    /// allocation.
    ///
    /// # Errors
    /// As [`Reply::parse`].
    pub fn decode(payload: Bytes) -> Result<Self, Error> {
        let parsed = Reply::parse(&payload)?;
        Ok(parsed.map(|body| payload.slice_ref(body)))
    }
}

impl<B: AsRef<[u8]>> Reply<B> {
    /// Borrows the body, giving a `Reply<&[u8]>`.
    pub fn as_borrowed(&self) -> Reply<&[u8]> {
        match self {
            Reply::Bare(url) => Reply::Bare(url.as_ref()),
            Reply::Hello(info) => Reply::Hello(*info),
            Reply::Pong(body) => Reply::Pong(body.as_ref()),
            Reply::Shortened(url) => Reply::Shortened(url.as_ref()),
            Reply::Resolved(url) => Reply::Resolved(url.as_ref()),
            Reply::Error { code, message } => Reply::Error {
                code: *code,
                message: message.as_ref(),
            },
        }
    }

    /// Converts the body type.
    pub fn map<C>(self, mut f: impl FnMut(B) -> C) -> Reply<C> {
        match self {
            Reply::Bare(url) => Reply::Bare(f(url)),
            Reply::Hello(info) => Reply::Hello(info),
            Reply::Pong(body) => Reply::Pong(f(body)),
            Reply::Shortened(url) => Reply::Shortened(f(url)),
            Reply::Resolved(url) => Reply::Resolved(f(url)),
            Reply::Error { code, message } => Reply::Error {
                code,
                message: f(message),
            },
        }
    }

    /// For an error reply, its code and message (a message that is not UTF-8,
    /// possible only in a reply built by hand, reads as an empty string).
    pub fn as_error(&self) -> Option<(ErrorCode, &str)> {
        match self.as_borrowed() {
            Reply::Error { code, message } => {
                Some((code, core::str::from_utf8(message).unwrap_or_default()))
            }
            _ => None,
        }
    }

    /// The length of the encoded payload (without the frame header).
    pub fn payload_len(&self) -> usize {
        match self.as_borrowed() {
            Reply::Bare(url) => url.len(),
            Reply::Hello(_) => 1 + 1 + 4 + 4,
            Reply::Pong(b) | Reply::Shortened(b) | Reply::Resolved(b) => 1 + b.len(),
            Reply::Error { message, .. } => 1 + 2 + message.len(),
        }
    }

    /// The length of the encoded frame, header included.
    pub fn encoded_len(&self) -> usize {
        HEADER_LEN + self.payload_len()
    }

    /// Appends the reply as one frame to `dst`.
    ///
    /// # Errors
    /// [`Error::InvalidBareUrl`] for a bare URL that would not read back as
    /// one, [`Error::InvalidUtf8`] for an error message that is not UTF-8,
    /// [`Error::FrameTooLarge`] past `u32::MAX` bytes. Nothing is written
    /// then.
    ///
    /// # Examples
    /// ```
    /// use shorty_protocol::Reply;
    ///
    /// let mut out = Vec::new();
    /// Reply::Bare("http://127.0.0.1:5000/867nv").encode(&mut out)?;
    /// assert_eq!(&out[..4], &[27, 0, 0, 0]);
    /// assert_eq!(&out[4..], b"http://127.0.0.1:5000/867nv");
    /// # Ok::<(), shorty_protocol::Error>(())
    /// ```
    pub fn encode<M: BufMut>(&self, dst: &mut M) -> Result<(), Error> {
        let msg = self.as_borrowed();
        match msg {
            Reply::Bare(url) => check_bare(url)?,
            Reply::Error { message, .. } => {
                core::str::from_utf8(message).map_err(|_| Error::InvalidUtf8)?;
            }
            _ => {}
        }
        put_header(self.payload_len(), dst)?;
        match msg {
            Reply::Bare(url) => dst.put_slice(url),
            Reply::Hello(info) => {
                dst.put_u8(opcode::HELLO_REPLY);
                dst.put_u8(info.version);
                dst.put_u32_le(info.max_frame_len);
                dst.put_u32_le(info.max_url_len);
            }
            Reply::Pong(body) => put_tagged(dst, opcode::PONG, body),
            Reply::Shortened(url) => put_tagged(dst, opcode::SHORTENED, url),
            Reply::Resolved(url) => put_tagged(dst, opcode::RESOLVED, url),
            Reply::Error { code, message } => {
                dst.put_u8(opcode::ERROR);
                dst.put_u16_le(code.0);
                dst.put_slice(message);
            }
        }
        Ok(())
    }
}
