//! Typed messages carried in frame payloads.
//!
//! A payload whose first byte is a control byte (`0x00..=0x1F`) is a typed
//! message and that byte is its opcode; any other payload is a *bare URL*,
//! the seed's format (a URL never starts with a control byte). Replies to
//! requests use the request's opcode with bit `0x10` set; error replies use
//! [`opcode::ERROR`].
//!
//! Message types are generic over their body type `B`: `Request<&[u8]>`
//! borrows from a read buffer (see [`Request::parse_payload`]) and
//! `Request<Bytes>` owns zero-copy slices of a frame (see
//! [`Request::decode_payload`]). Anything `AsRef<[u8]>` can be encoded.
//!
//! # Frames and payloads
//!
//! Every method says in its name which level it works at, because the two
//! are easy to mix up and the bytes alone cannot always tell:
//! - `*_payload` methods read or write the **payload** only, what
//!   [`frame::parse_frame`](crate::frame::parse_frame),
//!   [`FrameDecoder`](crate::frame::FrameDecoder) or tokio-util's
//!   `LengthDelimitedCodec` hand out;
//! - [`Request::encode_frame`] and [`Reply::encode_frame`] write a whole
//!   **frame** (4-byte length header, then the payload), ready for the wire.
//!
//! Passing a whole frame where a payload is expected is refused with an
//! error wherever the bytes allow it: the header's zero bytes are control
//! bytes, which no URL, short URL or error code holds (see
//! [`Reply::parse_payload`]).

use bytes::{BufMut, Bytes};
use nom::Parser;

use crate::error::ReplyError;
use crate::error_code::ErrorCode;
use crate::frame::{put_header, HEADER_LEN};
use crate::link::{
    is_valid_code, Granularity, LinkInfo, LinkOptions, LinkPatch, LinkStats, StatsQuery,
};
use crate::Error;

/// Protocol version 1, the version `PROTOCOL.md` describes.
///
/// A client that handles only what version 1 defines asks for exactly this
/// in HELLO, so that a newer server never switches it to a version it cannot
/// read. This value never changes.
pub const PROTOCOL_V1: u8 = 1;

/// The highest protocol version this crate can encode and decode.
///
/// Grows with minor releases as versions are added (a server built on this
/// crate answers HELLO with the lower of this and the client's version). A
/// client should not blindly send it: it would then announce a version as
/// soon as the crate learns it, whether or not the client's own code handles
/// it. Ask for the version your code speaks, e.g. [`PROTOCOL_V1`].
pub const MAX_PROTOCOL_VERSION: u8 = PROTOCOL_V2;

/// Protocol version 2: version 1 plus links with options (SHORTEN2,
/// UPDATE, DELETE, INFO), AUTH and STATS (`PROTOCOL.md`, section 6).
///
/// A connection speaks it only once HELLO has negotiated it: parse its
/// messages with [`Request::parse_payload_for`] and
/// [`Reply::parse_payload_for`] and the negotiated version. This value
/// never changes.
pub const PROTOCOL_V2: u8 = 2;

/// The longest API key AUTH carries, in bytes.
pub const MAX_API_KEY_LEN: usize = 256;

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
    /// (v2) SHORTEN2 request: a TLV list of link options, the URL among them.
    pub const SHORTEN2: u8 = 0x05;
    /// (v2) UPDATE request: `u8` code length, code, TLV patch.
    pub const UPDATE: u8 = 0x06;
    /// (v2) DELETE request: body is a code.
    pub const DELETE: u8 = 0x07;
    /// (v2) INFO request: body is a code.
    pub const INFO: u8 = 0x08;
    /// (v2) AUTH request: body is an API key.
    pub const AUTH: u8 = 0x09;
    /// (v2) STATS request: `u64` from, `u64` to, `u8` granularity, code.
    pub const STATS: u8 = 0x0A;
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
    /// (v2) SHORTENED2 reply: the new link, a TLV list.
    pub const SHORTENED2: u8 = SHORTEN2 | REPLY;
    /// (v2) UPDATED reply: the link after the change, a TLV list.
    pub const UPDATED: u8 = UPDATE | REPLY;
    /// (v2) DELETED reply: empty.
    pub const DELETED: u8 = DELETE | REPLY;
    /// (v2) INFO reply: the link, a TLV list.
    pub const INFO_REPLY: u8 = INFO | REPLY;
    /// (v2) AUTHED reply: empty.
    pub const AUTHED: u8 = AUTH | REPLY;
    /// (v2) STATS reply: the link's statistics, a TLV list.
    pub const STATS_REPLY: u8 = STATS | REPLY;
    /// ERROR reply to any request: `u16` code and UTF-8 message.
    pub const ERROR: u8 = 0x1F;
    /// Payloads whose first byte is above this are bare URLs, not typed
    /// messages.
    pub const MAX_CONTROL: u8 = 0x1F;
}

/// The code in a short URL: what RESOLVE takes, given what SHORTENED (or a
/// bare reply) returns.
///
/// A short URL is the server's public base URL followed by the code, so the
/// code is its last path segment (a trailing `/` is ignored). Text without a
/// `/` is taken to be a code already and returned unchanged, so this can be
/// applied to whatever a user typed.
///
/// # Examples
/// ```
/// use shorty_protocol::{short_code, Request};
///
/// assert_eq!(short_code("http://127.0.0.1:5000/867nv"), "867nv");
/// assert_eq!(short_code("https://sho.rt/s/867nv/"), "867nv");
/// assert_eq!(short_code("867nv"), "867nv");
/// // Sending the whole URL would get NOT_FOUND; send the code:
/// let request = Request::Resolve(short_code("http://127.0.0.1:5000/867nv"));
/// assert_eq!(request.body(), Some(&b"867nv"[..]));
/// ```
pub fn short_code(short_url: &str) -> &str {
    let trimmed = short_url.trim_end_matches('/');
    trimmed.rsplit('/').next().unwrap_or(trimmed)
}

/// A request from client to server.
///
/// Not `Copy`, and `#[non_exhaustive]`, so that later protocol versions can
/// add requests (and fields to [`Request::Hello`]) that hold owned data
/// without a breaking release: match with a `_` arm.
///
/// `Debug` prints every field as a derived `Debug` would, except the key of
/// [`Request::Auth`], which it leaves out, so that a
/// request logged at debug level leaks no credential.
#[derive(Clone, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
#[non_exhaustive]
pub enum Request<B = Bytes> {
    /// The seed's request: the payload is the long URL itself. Answered with
    /// [`Reply::Bare`] on success. Must be non-empty and must not start with a
    /// control byte.
    Bare(B),
    /// Asks for the server's protocol version and limits. Build it with
    /// [`Request::hello`]; match it with `Request::Hello { version, .. }`.
    #[non_exhaustive]
    Hello {
        /// The highest protocol version the client speaks (e.g.
        /// [`PROTOCOL_V1`]).
        version: u8,
    },
    /// Liveness check; the server echoes the body in [`Reply::Pong`].
    Ping(B),
    /// Shorten a long URL; answered with [`Reply::Shortened`].
    Shorten(B),
    /// Look a short code up; answered with [`Reply::Resolved`]. The body is
    /// the code, not the whole short URL (see [`short_code`]).
    Resolve(B),
    /// (v2) Shorten with options; answered with [`Reply::Shortened2`]. The
    /// body is a TLV list: read it with
    /// [`LinkOptions::parse`], write it with [`LinkOptions::to_vec`].
    Shorten2(B),
    /// (v2) Change a link; answered with [`Reply::Updated`]. Build it with
    /// [`Request::update`]; `patch` is a TLV list ([`LinkPatch`]).
    #[non_exhaustive]
    Update {
        /// The link's code.
        code: B,
        /// What changes, a [`LinkPatch`] list.
        patch: B,
    },
    /// (v2) Delete a link; answered with [`Reply::Deleted`]. The body is the
    /// code.
    Delete(B),
    /// (v2) Describe a link; answered with [`Reply::Info`]. The body is the
    /// code.
    Info(B),
    /// (v2) Present an API key for the rest of the connection; answered
    /// with [`Reply::Authed`], or ERROR 401. The body is the key (1 to
    /// [`MAX_API_KEY_LEN`] bytes).
    Auth(B),
    /// (v2) A link's click statistics; answered with [`Reply::Stats`].
    /// Build it with [`Request::stats`].
    #[non_exhaustive]
    Stats {
        /// The link's code.
        code: B,
        /// The range and bucket width.
        query: StatsQuery,
    },
}

impl<B: core::fmt::Debug> core::fmt::Debug for Request<B> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        let one = |f: &mut core::fmt::Formatter<'_>, name: &str, b: &B| {
            f.debug_tuple(name).field(b).finish()
        };
        match self {
            Request::Bare(b) => one(f, "Bare", b),
            Request::Hello { version } => {
                f.debug_struct("Hello").field("version", version).finish()
            }
            Request::Ping(b) => one(f, "Ping", b),
            Request::Shorten(b) => one(f, "Shorten", b),
            Request::Resolve(b) => one(f, "Resolve", b),
            Request::Shorten2(b) => one(f, "Shorten2", b),
            Request::Update { code, patch } => f
                .debug_struct("Update")
                .field("code", code)
                .field("patch", patch)
                .finish(),
            Request::Delete(b) => one(f, "Delete", b),
            Request::Info(b) => one(f, "Info", b),
            // The same bound as a derived `Debug` (no `AsRef`), so not even
            // the key's length.
            Request::Auth(_) => f.write_str("Auth(<redacted>)"),
            Request::Stats { code, query } => f
                .debug_struct("Stats")
                .field("code", code)
                .field("query", query)
                .finish(),
        }
    }
}

/// What a server announces in its HELLO reply.
///
/// `#[non_exhaustive]`: later versions may announce more. Read the fields;
/// build one with [`ServerInfo::new`].
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
#[non_exhaustive]
pub struct ServerInfo {
    /// The protocol version the server will speak on this connection: the
    /// lower of the client's and the server's highest versions.
    pub version: u8,
    /// The largest frame payload the server accepts, in bytes.
    pub max_frame_len: u32,
    /// The longest URL the server accepts in SHORTEN, in bytes.
    pub max_url_len: u32,
}

impl ServerInfo {
    /// A HELLO answer: the version spoken and the server's limits.
    pub const fn new(version: u8, max_frame_len: u32, max_url_len: u32) -> Self {
        Self {
            version,
            max_frame_len,
            max_url_len,
        }
    }
}

/// A reply from server to client. Replies come in request order.
///
/// Not `Copy`, and `#[non_exhaustive]`, so that later protocol versions can
/// add replies that hold owned data without a breaking release. A reply
/// whose opcode this version does not know is not an error: it is
/// [`Reply::Unknown`], so a stream of replies stays in step with its
/// requests.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
#[non_exhaustive]
pub enum Reply<B = Bytes> {
    /// The seed's reply to a [`Request::Bare`]: the payload is the short URL
    /// itself. Must be non-empty and hold no control byte.
    Bare(B),
    /// Answer to HELLO.
    Hello(ServerInfo),
    /// Answer to PING, with its body.
    Pong(B),
    /// Answer to SHORTEN: the short URL (no control bytes).
    Shortened(B),
    /// Answer to RESOLVE: the long URL (no control bytes).
    Resolved(B),
    /// (v2) Answer to SHORTEN2: the new link, a [`LinkInfo`] list.
    Shortened2(B),
    /// (v2) Answer to UPDATE: the link after the change, a [`LinkInfo`]
    /// list.
    Updated(B),
    /// (v2) Answer to DELETE.
    Deleted,
    /// (v2) Answer to INFO: the link, a [`LinkInfo`] list.
    Info(B),
    /// (v2) Answer to AUTH: the key is accepted.
    Authed,
    /// (v2) Answer to STATS: a [`LinkStats`] list.
    Stats(B),
    /// Any request failed. Build it with [`Reply::error`]; match it with
    /// `Reply::Error { code, message, .. }`.
    #[non_exhaustive]
    Error {
        /// Stable numeric code, 400–599.
        code: ErrorCode,
        /// Human-readable explanation, UTF-8.
        message: B,
    },
    /// A typed reply whose opcode this version of the crate does not know
    /// (sent by a newer server), or that the connection's version does not
    /// assign. It still answers one request: skip it or report it
    /// ([`Reply::into_result`] makes it [`ReplyError::Unexpected`]). Its
    /// opcode is one version 1 does not assign (`0x15`–`0x1A` included, so
    /// it reads back as itself with [`Reply::parse_payload`]; a version-2
    /// reader takes those for version-2 replies).
    #[non_exhaustive]
    Unknown {
        /// The reply's opcode, a control byte no known reply uses.
        opcode: u8,
        /// The rest of the payload.
        body: B,
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

fn is_control(byte: u8) -> bool {
    byte <= opcode::MAX_CONTROL
}

/// A bare request URL: only its first byte is constrained (the server judges
/// the rest and answers INVALID_URL).
fn check_bare_request(url: &[u8]) -> Result<(), Error> {
    match url.first() {
        Some(&first) if !is_control(first) => Ok(()),
        _ => Err(Error::InvalidBareUrl),
    }
}

/// A URL a server sends back holds no control byte at all. Checking it
/// catches a whole frame read as a payload: a frame header of a payload
/// under 16 MiB ends in a zero byte.
fn check_reply_url(opcode: Option<u8>, url: &[u8]) -> Result<(), Error> {
    match (opcode, url.iter().position(|&b| is_control(b))) {
        (None, _) if url.is_empty() => Err(Error::InvalidBareUrl),
        (_, None) => Ok(()),
        (None, Some(_)) => Err(Error::InvalidBareUrl),
        (Some(opcode), Some(at)) => Err(Error::ControlByteInUrl { opcode, at }),
    }
}

fn check_error_reply(code: ErrorCode, message: &[u8]) -> Result<(), Error> {
    if !code.is_error() {
        return Err(Error::InvalidErrorCode { code: code.0 });
    }
    core::str::from_utf8(message).map_err(|_| Error::InvalidUtf8)?;
    Ok(())
}

/// `true` for an opcode [`Reply::Unknown`] may carry: a control byte that
/// no reply of this version uses (anything else would read back as another
/// reply).
fn is_unknown_reply_opcode(op: u8) -> bool {
    is_control(op)
        && !matches!(
            op,
            opcode::HELLO_REPLY
                | opcode::PONG
                | opcode::SHORTENED
                | opcode::RESOLVED
                | opcode::ERROR
        )
}

fn utf8(body: &[u8]) -> Option<&str> {
    core::str::from_utf8(body).ok()
}

/// A code in a version-2 request: 1–64 of `[A-Za-z0-9_-]`.
fn check_code(opcode: u8, code: &[u8]) -> Result<(), Error> {
    match utf8(code) {
        Some(code) if is_valid_code(code) => Ok(()),
        _ => Err(Error::InvalidField {
            opcode,
            field: "code",
        }),
    }
}

fn check_key(key: &[u8]) -> Result<(), Error> {
    if (1..=MAX_API_KEY_LEN).contains(&key.len()) {
        Ok(())
    } else {
        Err(Error::InvalidField {
            opcode: opcode::AUTH,
            field: "key",
        })
    }
}

/// Checks a version-2 request's body, as both the decoder and the encoder
/// do.
fn check_v2_request(request: &Request<&[u8]>) -> Result<(), Error> {
    match *request {
        Request::Shorten2(options) => LinkOptions::parse(options).map(drop),
        Request::Update { code, patch } => {
            check_code(opcode::UPDATE, code)?;
            LinkPatch::parse(patch).map(drop)
        }
        Request::Delete(code) => check_code(opcode::DELETE, code),
        Request::Info(code) => check_code(opcode::INFO, code),
        Request::Stats { code, .. } => check_code(opcode::STATS, code),
        Request::Auth(key) => check_key(key),
        _ => Ok(()),
    }
}

/// Checks a version-2 reply's body, as both the decoder and the encoder do.
fn check_v2_reply(reply: &Reply<&[u8]>) -> Result<(), Error> {
    match *reply {
        Reply::Shortened2(link) | Reply::Updated(link) | Reply::Info(link) => {
            LinkInfo::parse(link).map(drop)
        }
        Reply::Stats(stats) => LinkStats::parse(stats).map(drop),
        _ => Ok(()),
    }
}

/// `version` as the parsers read it: 0 and 1 are version 1, anything above
/// [`MAX_PROTOCOL_VERSION`] the highest this crate knows.
fn speaks_v2(version: u8) -> bool {
    version >= PROTOCOL_V2
}

impl<B> Request<B> {
    /// A HELLO request asking for `version` (e.g. [`PROTOCOL_V1`]).
    pub const fn hello(version: u8) -> Self {
        Request::Hello { version }
    }

    /// (v2) An UPDATE request: `patch` is a [`LinkPatch`] list
    /// ([`LinkPatch::to_vec`]).
    pub const fn update(code: B, patch: B) -> Self {
        Request::Update { code, patch }
    }

    /// (v2) A STATS request.
    pub const fn stats(code: B, query: StatsQuery) -> Self {
        Request::Stats { code, query }
    }
}

impl<'a> Request<&'a [u8]> {
    /// Parses a frame's **payload** (not a whole frame: see
    /// [`frame::parse_frame`](crate::frame::parse_frame)) into a request
    /// borrowing from it.
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
    /// assert_eq!(Request::parse_payload(b"\x03http://a.example/")?, Request::Shorten(&b"http://a.example/"[..]));
    /// // The seed's bare URL:
    /// assert_eq!(Request::parse_payload(b"http://a.example/")?, Request::Bare(&b"http://a.example/"[..]));
    /// # Ok::<(), shorty_protocol::Error>(())
    /// ```
    pub fn parse_payload(payload: &'a [u8]) -> Result<Self, Error> {
        Self::parse_payload_for(PROTOCOL_V1, payload)
    }

    /// Parses a frame's **payload** as a request of protocol `version`, the
    /// version HELLO negotiated on the connection ([`PROTOCOL_V1`] before
    /// any HELLO).
    ///
    /// A version-2 opcode on a connection that did not negotiate version 2
    /// is [`Error::UnknownOpcode`] (a server answers ERROR 501), exactly as
    /// a version-1 server would answer it.
    ///
    /// # Errors
    /// As [`Request::parse_payload`], and for version-2 requests
    /// [`Error::InvalidTlv`] and [`Error::InvalidField`].
    ///
    /// # Examples
    /// ```
    /// use shorty_protocol::{Error, Request, PROTOCOL_V1, PROTOCOL_V2};
    ///
    /// let delete = b"\x07867nvAB";
    /// assert_eq!(Request::parse_payload_for(PROTOCOL_V2, delete)?, Request::Delete(&b"867nvAB"[..]));
    /// assert_eq!(Request::parse_payload_for(PROTOCOL_V1, delete), Err(Error::UnknownOpcode(0x07)));
    /// # Ok::<(), shorty_protocol::Error>(())
    /// ```
    pub fn parse_payload_for(version: u8, payload: &'a [u8]) -> Result<Self, Error> {
        use nom::number::complete::{le_u64, u8};

        let Some((op, body)) = split_opcode(payload)? else {
            return Ok(Request::Bare(payload));
        };
        let request = match op {
            opcode::HELLO => Request::Hello {
                version: fixed(op, body, u8)?,
            },
            opcode::PING => Request::Ping(body),
            opcode::SHORTEN => Request::Shorten(body),
            opcode::RESOLVE => Request::Resolve(body),
            opcode::SHORTEN2 if speaks_v2(version) => Request::Shorten2(body),
            opcode::UPDATE if speaks_v2(version) => {
                let (code, patch) = body
                    .split_first()
                    .and_then(|(&len, rest)| rest.split_at_checked(usize::from(len)))
                    .ok_or(Error::Truncated { opcode: op })?;
                Request::Update { code, patch }
            }
            opcode::DELETE if speaks_v2(version) => Request::Delete(body),
            opcode::INFO if speaks_v2(version) => Request::Info(body),
            opcode::AUTH if speaks_v2(version) => Request::Auth(body),
            opcode::STATS if speaks_v2(version) => {
                let (code, (from_ms, to_ms, granularity)) = (le_u64, le_u64, u8)
                    .parse(body)
                    .map_err(|_: nom::Err<NomError<'_>>| Error::Truncated { opcode: op })?;
                let granularity = Granularity::from_u8(granularity).ok_or(Error::InvalidField {
                    opcode: op,
                    field: "granularity",
                })?;
                Request::Stats {
                    code,
                    query: StatsQuery::new(from_ms, to_ms, granularity),
                }
            }
            other => return Err(Error::UnknownOpcode(other)),
        };
        check_v2_request(&request)?;
        Ok(request)
    }
}

impl Request<Bytes> {
    /// Decodes a frame's **payload** into a request whose body shares the
    /// payload's allocation.
    ///
    /// # Errors
    /// As [`Request::parse_payload`].
    pub fn decode_payload(payload: Bytes) -> Result<Self, Error> {
        Self::decode_payload_for(PROTOCOL_V1, payload)
    }

    /// Decodes a frame's **payload** as a request of protocol `version`
    /// (see [`Request::parse_payload_for`]), sharing the payload's
    /// allocation.
    ///
    /// # Errors
    /// As [`Request::parse_payload_for`].
    pub fn decode_payload_for(version: u8, payload: Bytes) -> Result<Self, Error> {
        let parsed = Request::parse_payload_for(version, &payload)?;
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
            Request::Shorten2(options) => Request::Shorten2(options.as_ref()),
            Request::Update { code, patch } => Request::Update {
                code: code.as_ref(),
                patch: patch.as_ref(),
            },
            Request::Delete(code) => Request::Delete(code.as_ref()),
            Request::Info(code) => Request::Info(code.as_ref()),
            Request::Auth(key) => Request::Auth(key.as_ref()),
            Request::Stats { code, query } => Request::Stats {
                code: code.as_ref(),
                query: *query,
            },
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
            Request::Shorten2(options) => Request::Shorten2(f(options)),
            Request::Update { code, patch } => Request::Update {
                code: f(code),
                patch: f(patch),
            },
            Request::Delete(code) => Request::Delete(f(code)),
            Request::Info(code) => Request::Info(f(code)),
            Request::Auth(key) => Request::Auth(f(key)),
            Request::Stats { code, query } => Request::Stats {
                code: f(code),
                query,
            },
        }
    }

    /// The request's name as `PROTOCOL.md` spells it (`"SHORTEN"`, ...;
    /// `"BARE"` for the seed's bare URL).
    pub fn name(&self) -> &'static str {
        match self {
            Request::Bare(_) => "BARE",
            Request::Hello { .. } => "HELLO",
            Request::Ping(_) => "PING",
            Request::Shorten(_) => "SHORTEN",
            Request::Resolve(_) => "RESOLVE",
            Request::Shorten2(_) => "SHORTEN2",
            Request::Update { .. } => "UPDATE",
            Request::Delete(_) => "DELETE",
            Request::Info(_) => "INFO",
            Request::Auth(_) => "AUTH",
            Request::Stats { .. } => "STATS",
        }
    }

    /// The body: the URL, code or ping bytes (`None` for HELLO); for
    /// SHORTEN2 its TLV list, for UPDATE and STATS the code, for AUTH the
    /// key.
    pub fn body(&self) -> Option<&[u8]> {
        match self.as_borrowed() {
            Request::Bare(b)
            | Request::Ping(b)
            | Request::Shorten(b)
            | Request::Resolve(b)
            | Request::Shorten2(b)
            | Request::Delete(b)
            | Request::Info(b)
            | Request::Auth(b)
            | Request::Update { code: b, .. }
            | Request::Stats { code: b, .. } => Some(b),
            Request::Hello { .. } => None,
        }
    }

    /// The lowest protocol version that has this request (1 or 2).
    pub fn min_version(&self) -> u8 {
        match self {
            Request::Bare(_)
            | Request::Hello { .. }
            | Request::Ping(_)
            | Request::Shorten(_)
            | Request::Resolve(_) => PROTOCOL_V1,
            _ => PROTOCOL_V2,
        }
    }

    /// The body as text, when there is one and it is UTF-8.
    pub fn as_str(&self) -> Option<&str> {
        self.body().and_then(utf8)
    }

    /// The length of the encoded payload (without the frame header).
    pub fn payload_len(&self) -> usize {
        match self.as_borrowed() {
            Request::Bare(url) => url.len(),
            Request::Hello { .. } => 2,
            Request::Ping(b)
            | Request::Shorten(b)
            | Request::Resolve(b)
            | Request::Shorten2(b)
            | Request::Delete(b)
            | Request::Info(b)
            | Request::Auth(b) => 1 + b.len(),
            Request::Update { code, patch } => 1 + 1 + code.len() + patch.len(),
            Request::Stats { code, .. } => 1 + 8 + 8 + 1 + code.len(),
        }
    }

    /// The length of the encoded frame, header included.
    pub fn frame_len(&self) -> usize {
        HEADER_LEN + self.payload_len()
    }

    fn check(&self) -> Result<(), Error> {
        match self.as_borrowed() {
            Request::Bare(url) => check_bare_request(url),
            other => check_v2_request(&other),
        }
    }

    fn put_payload<M: BufMut>(&self, dst: &mut M) {
        match self.as_borrowed() {
            Request::Bare(url) => dst.put_slice(url),
            Request::Hello { version } => {
                dst.put_u8(opcode::HELLO);
                dst.put_u8(version);
            }
            Request::Ping(body) => put_tagged(dst, opcode::PING, body),
            Request::Shorten(url) => put_tagged(dst, opcode::SHORTEN, url),
            Request::Resolve(code) => put_tagged(dst, opcode::RESOLVE, code),
            Request::Shorten2(options) => put_tagged(dst, opcode::SHORTEN2, options),
            Request::Update { code, patch } => {
                dst.put_u8(opcode::UPDATE);
                // `check` has made sure the code is at most 64 bytes.
                dst.put_u8(u8::try_from(code.len()).unwrap_or(u8::MAX));
                dst.put_slice(code);
                dst.put_slice(patch);
            }
            Request::Delete(code) => put_tagged(dst, opcode::DELETE, code),
            Request::Info(code) => put_tagged(dst, opcode::INFO, code),
            Request::Auth(key) => put_tagged(dst, opcode::AUTH, key),
            Request::Stats { code, query } => {
                dst.put_u8(opcode::STATS);
                dst.put_u64_le(query.from_ms);
                dst.put_u64_le(query.to_ms);
                dst.put_u8(query.granularity.to_u8());
                dst.put_slice(code);
            }
        }
    }

    /// Appends the request as one whole **frame** (length header, then
    /// payload) to `dst`: what goes on the wire.
    ///
    /// `dst` must have room for [`frame_len`](Self::frame_len) bytes when it
    /// cannot grow (a `&mut [u8]`): `BufMut` panics otherwise.
    ///
    /// # Errors
    /// [`Error::InvalidBareUrl`] for a bare URL that would not read back as
    /// one; for version-2 requests what [`Request::parse_payload_for`]
    /// would refuse ([`Error::InvalidTlv`], [`Error::InvalidField`]);
    /// [`Error::FrameTooLarge`] past `u32::MAX` bytes. Nothing is written
    /// then.
    ///
    /// # Examples
    /// ```
    /// use shorty_protocol::Request;
    ///
    /// let mut out = Vec::new();
    /// Request::Resolve("867nv").encode_frame(&mut out)?;
    /// assert_eq!(out, b"\x06\x00\x00\x00\x04867nv");
    /// # Ok::<(), shorty_protocol::Error>(())
    /// ```
    pub fn encode_frame<M: BufMut>(&self, dst: &mut M) -> Result<(), Error> {
        self.check()?;
        put_header(self.payload_len(), dst)?;
        self.put_payload(dst);
        Ok(())
    }

    /// Appends the request's **payload** only (no length header) to `dst`,
    /// for callers that frame it themselves (e.g. with tokio-util's
    /// `LengthDelimitedCodec`).
    ///
    /// # Errors
    /// [`Error::InvalidBareUrl`] for a bare URL that would not read back as
    /// one. Nothing is written then.
    ///
    /// # Examples
    /// ```
    /// use shorty_protocol::Request;
    ///
    /// let mut out = Vec::new();
    /// Request::Resolve("867nv").encode_payload(&mut out)?;
    /// assert_eq!(out, b"\x04867nv");
    /// assert_eq!(Request::parse_payload(&out)?, Request::Resolve(&b"867nv"[..]));
    /// # Ok::<(), shorty_protocol::Error>(())
    /// ```
    pub fn encode_payload<M: BufMut>(&self, dst: &mut M) -> Result<(), Error> {
        self.check()?;
        self.put_payload(dst);
        Ok(())
    }
}

fn put_tagged<M: BufMut>(dst: &mut M, op: u8, body: &[u8]) {
    dst.put_u8(op);
    dst.put_slice(body);
}

impl<B> Reply<B> {
    /// An ERROR reply. `code` must be 400–599 and `message` UTF-8 for the
    /// reply to encode.
    pub const fn error(code: ErrorCode, message: B) -> Self {
        Reply::Error { code, message }
    }
}

impl<'a> Reply<&'a [u8]> {
    /// Parses a frame's **payload** (not a whole frame: see
    /// [`frame::parse_frame`](crate::frame::parse_frame)) into a reply
    /// borrowing from it.
    ///
    /// A typed reply with an opcode this version does not know is
    /// [`Reply::Unknown`], not an error.
    ///
    /// Reply bodies are validated as far as the protocol allows, so that a
    /// whole frame passed here by mistake is not taken for the reply it
    /// holds: its header's zero bytes make a bare or SHORTENED/RESOLVED URL
    /// hold a control byte, or an ERROR code fall outside 400–599 (errors);
    /// or its first byte is taken for an opcode no reply uses
    /// ([`Reply::Unknown`], which [`Reply::into_result`] refuses). The one
    /// frame that reads as a plausible reply is a PONG whose payload is 18,
    /// 274, ... bytes long: a PING body is opaque.
    ///
    /// # Errors
    /// [`Error::EmptyPayload`], [`Error::Truncated`], [`Error::TrailingData`],
    /// [`Error::InvalidBareUrl`] or [`Error::ControlByteInUrl`] (a URL with a
    /// control byte), [`Error::InvalidErrorCode`], or [`Error::InvalidUtf8`]
    /// (an error message that is not UTF-8).
    ///
    /// # Examples
    /// ```
    /// use shorty_protocol::{Error, ErrorCode, Reply, Request};
    ///
    /// let reply = Reply::parse_payload(b"\x1f\x94\x01not found")?;
    /// assert_eq!(reply, Reply::error(ErrorCode::NOT_FOUND, &b"not found"[..]));
    /// // A reply cut short is an error, not a partial result: frames are
    /// // always complete by the time their payload is parsed.
    /// assert!(Reply::parse_payload(b"\x1f\x94").is_err());
    ///
    /// // A whole frame is not a payload. Read as one, it is refused, or (as
    /// // here, its length byte 0x1c taken for an opcode) read as an unknown
    /// // reply, which answers no request:
    /// let request = Request::Shorten("https://example.com/");
    /// let mut frame = Vec::new();
    /// Reply::Shortened("http://127.0.0.1:5000/867nv").encode_frame(&mut frame)?;
    /// assert!(Reply::parse_payload(&frame).map_or(true, |r| r.into_answer(&request).is_err()));
    /// // What a frame decoder hands out is the payload:
    /// assert!(Reply::parse_payload(&frame[4..])?.into_answer(&request).is_ok());
    /// # Ok::<(), shorty_protocol::Error>(())
    /// ```
    pub fn parse_payload(payload: &'a [u8]) -> Result<Self, Error> {
        Self::parse_payload_for(PROTOCOL_V1, payload)
    }

    /// Parses a frame's **payload** as a reply of protocol `version`, the
    /// version HELLO negotiated on the connection. Under version 1 the
    /// version-2 reply opcodes (`0x15`–`0x1A`) read as [`Reply::Unknown`].
    ///
    /// # Errors
    /// As [`Reply::parse_payload`], and for version-2 replies
    /// [`Error::InvalidTlv`] (a link or statistics list that does not read)
    /// or [`Error::TrailingData`] (a DELETED or AUTHED reply with a body).
    ///
    /// # Examples
    /// ```
    /// use shorty_protocol::{Reply, PROTOCOL_V1, PROTOCOL_V2};
    ///
    /// assert_eq!(Reply::parse_payload_for(PROTOCOL_V2, b"\x17")?, Reply::Deleted);
    /// assert!(matches!(Reply::parse_payload_for(PROTOCOL_V1, b"\x17")?, Reply::Unknown { opcode: 0x17, .. }));
    /// # Ok::<(), shorty_protocol::Error>(())
    /// ```
    pub fn parse_payload_for(version: u8, payload: &'a [u8]) -> Result<Self, Error> {
        let Some((op, body)) = split_opcode(payload)? else {
            check_reply_url(None, payload)?;
            return Ok(Reply::Bare(payload));
        };
        let empty = |body: &[u8]| match body.len() {
            0 => Ok(()),
            extra => Err(Error::TrailingData { opcode: op, extra }),
        };
        let reply = match op {
            opcode::SHORTENED2 if speaks_v2(version) => Reply::Shortened2(body),
            opcode::UPDATED if speaks_v2(version) => Reply::Updated(body),
            opcode::DELETED if speaks_v2(version) => {
                empty(body)?;
                Reply::Deleted
            }
            opcode::INFO_REPLY if speaks_v2(version) => Reply::Info(body),
            opcode::AUTHED if speaks_v2(version) => {
                empty(body)?;
                Reply::Authed
            }
            opcode::STATS_REPLY if speaks_v2(version) => Reply::Stats(body),
            _ => return Self::parse_v1(op, body),
        };
        check_v2_reply(&reply)?;
        Ok(reply)
    }

    fn parse_v1(op: u8, body: &'a [u8]) -> Result<Self, Error> {
        use nom::number::complete::{le_u16, le_u32, u8};

        Ok(match op {
            opcode::HELLO_REPLY => {
                let (version, max_frame_len, max_url_len) = fixed(op, body, (u8, le_u32, le_u32))?;
                Reply::Hello(ServerInfo::new(version, max_frame_len, max_url_len))
            }
            opcode::PONG => Reply::Pong(body),
            opcode::SHORTENED => {
                check_reply_url(Some(op), body)?;
                Reply::Shortened(body)
            }
            opcode::RESOLVED => {
                check_reply_url(Some(op), body)?;
                Reply::Resolved(body)
            }
            opcode::ERROR => {
                let (message, code) =
                    le_u16::<_, NomError<'_>>(body).map_err(|_| Error::Truncated { opcode: op })?;
                check_error_reply(ErrorCode(code), message)?;
                Reply::Error {
                    code: ErrorCode(code),
                    message,
                }
            }
            other => Reply::Unknown {
                opcode: other,
                body,
            },
        })
    }
}

impl Reply<Bytes> {
    /// Decodes a frame's **payload** into a reply whose body shares the
    /// payload's allocation.
    ///
    /// # Errors
    /// As [`Reply::parse_payload`].
    pub fn decode_payload(payload: Bytes) -> Result<Self, Error> {
        Self::decode_payload_for(PROTOCOL_V1, payload)
    }

    /// Decodes a frame's **payload** as a reply of protocol `version` (see
    /// [`Reply::parse_payload_for`]), sharing the payload's allocation.
    ///
    /// # Errors
    /// As [`Reply::parse_payload_for`].
    pub fn decode_payload_for(version: u8, payload: Bytes) -> Result<Self, Error> {
        let parsed = Reply::parse_payload_for(version, &payload)?;
        Ok(parsed.map(|body| payload.slice_ref(body)))
    }
}

impl<B: AsRef<[u8]>> Reply<B> {
    /// Borrows the body, giving a `Reply<&[u8]>`.
    pub fn as_borrowed(&self) -> Reply<&[u8]> {
        match self {
            Reply::Bare(url) => Reply::Bare(url.as_ref()),
            Reply::Hello(info) => Reply::Hello(info.clone()),
            Reply::Pong(body) => Reply::Pong(body.as_ref()),
            Reply::Shortened(url) => Reply::Shortened(url.as_ref()),
            Reply::Resolved(url) => Reply::Resolved(url.as_ref()),
            Reply::Shortened2(link) => Reply::Shortened2(link.as_ref()),
            Reply::Updated(link) => Reply::Updated(link.as_ref()),
            Reply::Deleted => Reply::Deleted,
            Reply::Info(link) => Reply::Info(link.as_ref()),
            Reply::Authed => Reply::Authed,
            Reply::Stats(stats) => Reply::Stats(stats.as_ref()),
            Reply::Error { code, message } => Reply::Error {
                code: *code,
                message: message.as_ref(),
            },
            Reply::Unknown { opcode, body } => Reply::Unknown {
                opcode: *opcode,
                body: body.as_ref(),
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
            Reply::Shortened2(link) => Reply::Shortened2(f(link)),
            Reply::Updated(link) => Reply::Updated(f(link)),
            Reply::Deleted => Reply::Deleted,
            Reply::Info(link) => Reply::Info(f(link)),
            Reply::Authed => Reply::Authed,
            Reply::Stats(stats) => Reply::Stats(f(stats)),
            Reply::Error { code, message } => Reply::Error {
                code,
                message: f(message),
            },
            Reply::Unknown { opcode, body } => Reply::Unknown {
                opcode,
                body: f(body),
            },
        }
    }

    /// The reply's name as `PROTOCOL.md` spells it (`"SHORTENED"`, ...;
    /// `"BARE"` for the seed's bare URL, `"UNKNOWN"` for [`Reply::Unknown`]).
    pub fn name(&self) -> &'static str {
        match self {
            Reply::Bare(_) => "BARE",
            Reply::Hello(_) => "HELLO",
            Reply::Pong(_) => "PONG",
            Reply::Shortened(_) => "SHORTENED",
            Reply::Resolved(_) => "RESOLVED",
            Reply::Shortened2(_) => "SHORTENED2",
            Reply::Updated(_) => "UPDATED",
            Reply::Deleted => "DELETED",
            Reply::Info(_) => "INFO",
            Reply::Authed => "AUTHED",
            Reply::Stats(_) => "STATS",
            Reply::Error { .. } => "ERROR",
            Reply::Unknown { .. } => "UNKNOWN",
        }
    }

    /// The body: the URL, ping bytes, error message or unknown reply's body
    /// (`None` for HELLO, DELETED and AUTHED); a version-2 reply's TLV list.
    pub fn body(&self) -> Option<&[u8]> {
        match self.as_borrowed() {
            Reply::Bare(b)
            | Reply::Pong(b)
            | Reply::Shortened(b)
            | Reply::Resolved(b)
            | Reply::Shortened2(b)
            | Reply::Updated(b)
            | Reply::Info(b)
            | Reply::Stats(b) => Some(b),
            Reply::Error { message, .. } => Some(message),
            Reply::Unknown { body, .. } => Some(body),
            Reply::Hello(_) | Reply::Deleted | Reply::Authed => None,
        }
    }

    /// The link a SHORTENED2, UPDATED or INFO reply describes (`None` for
    /// other replies; an error for a list that does not read, possible only
    /// in a reply built by hand).
    pub fn link(&self) -> Option<Result<LinkInfo<'_>, Error>> {
        match self.as_borrowed() {
            Reply::Shortened2(b) | Reply::Updated(b) | Reply::Info(b) => Some(LinkInfo::parse(b)),
            _ => None,
        }
    }

    /// The body, by value (`None` for HELLO, DELETED and AUTHED): for a
    /// `Reply<&[u8]>`, a slice that outlives the reply.
    pub fn into_body(self) -> Option<B> {
        match self {
            Reply::Bare(b)
            | Reply::Pong(b)
            | Reply::Shortened(b)
            | Reply::Resolved(b)
            | Reply::Shortened2(b)
            | Reply::Updated(b)
            | Reply::Info(b)
            | Reply::Stats(b) => Some(b),
            Reply::Error { message, .. } => Some(message),
            Reply::Unknown { body, .. } => Some(body),
            Reply::Hello(_) | Reply::Deleted | Reply::Authed => None,
        }
    }

    /// The body as text, when there is one and it is UTF-8: the short URL
    /// of SHORTENED, the long URL of RESOLVED, an error's message.
    ///
    /// # Examples
    /// ```
    /// use shorty_protocol::{short_code, Reply};
    ///
    /// let reply = Reply::decode_payload("\x13http://127.0.0.1:5000/867nv".into())?;
    /// assert_eq!(reply.as_str(), Some("http://127.0.0.1:5000/867nv"));
    /// assert_eq!(reply.as_str().map(short_code), Some("867nv"));
    /// # Ok::<(), shorty_protocol::Error>(())
    /// ```
    pub fn as_str(&self) -> Option<&str> {
        self.body().and_then(utf8)
    }

    /// For an error reply, its code and message (a message that is not UTF-8,
    /// possible only in a reply built by hand, reads as an empty string).
    pub fn as_error(&self) -> Option<(ErrorCode, &str)> {
        match self.as_borrowed() {
            Reply::Error { code, message } => Some((code, utf8(message).unwrap_or_default())),
            _ => None,
        }
    }

    /// `true` if this reply can answer `request`: its own reply kind (PONG
    /// for PING, ...), or ERROR, which answers anything.
    pub fn answers<C: AsRef<[u8]>>(&self, request: &Request<C>) -> bool {
        matches!(
            (request, self),
            (_, Reply::Error { .. })
                | (Request::Bare(_), Reply::Bare(_))
                | (Request::Hello { .. }, Reply::Hello(_))
                | (Request::Ping(_), Reply::Pong(_))
                | (Request::Shorten(_), Reply::Shortened(_))
                | (Request::Resolve(_), Reply::Resolved(_))
                | (Request::Shorten2(_), Reply::Shortened2(_))
                | (Request::Update { .. }, Reply::Updated(_))
                | (Request::Delete(_), Reply::Deleted)
                | (Request::Info(_), Reply::Info(_))
                | (Request::Auth(_), Reply::Authed)
                | (Request::Stats { .. }, Reply::Stats(_))
        )
    }

    /// `Ok` for a reply that is not an error and that this version knows;
    /// [`ReplyError::Server`] for an ERROR reply, [`ReplyError::Unexpected`]
    /// for [`Reply::Unknown`].
    ///
    /// # Errors
    /// As above: the error holds the reply's contents.
    ///
    /// # Examples
    /// ```
    /// use shorty_protocol::{bytes::Bytes, ErrorCode, Reply};
    ///
    /// let ok = Reply::decode_payload("\x14https://example.com/".into())?;
    /// assert_eq!(ok.into_result()?.as_str(), Some("https://example.com/"));
    ///
    /// let payload = Bytes::from_static(b"\x1f\x94\x01unknown code");
    /// let err = Reply::decode_payload(payload)?.into_result().unwrap_err();
    /// assert_eq!(err.code(), Some(ErrorCode::NOT_FOUND));
    /// assert_eq!(err.to_string(), "server error 404 NOT_FOUND: unknown code");
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn into_result(self) -> Result<Self, ReplyError<B>> {
        match self {
            Reply::Error { code, message } => Err(ReplyError::Server { code, message }),
            unknown @ Reply::Unknown { .. } => Err(ReplyError::Unexpected(unknown)),
            reply => Ok(reply),
        }
    }

    /// As [`into_result`](Self::into_result), and also
    /// [`ReplyError::Unexpected`] for a reply that does not answer
    /// `request` (see [`answers`](Self::answers)): the one call a client
    /// needs after reading the reply to `request`.
    ///
    /// # Errors
    /// As above: the error holds the reply's contents.
    ///
    /// # Examples
    /// ```
    /// use shorty_protocol::{Reply, ReplyError, Request};
    ///
    /// let request = Request::Shorten("https://example.com/");
    /// let pong = Reply::decode_payload("\x12".into())?;
    /// let err = pong.into_answer(&request).unwrap_err();
    /// assert!(matches!(err, ReplyError::Unexpected(Reply::Pong(_))));
    /// assert_eq!(err.to_string(), "unexpected PONG reply");
    /// # Ok::<(), shorty_protocol::Error>(())
    /// ```
    pub fn into_answer<C: AsRef<[u8]>>(self, request: &Request<C>) -> Result<Self, ReplyError<B>> {
        let reply = self.into_result()?;
        if reply.answers(request) {
            Ok(reply)
        } else {
            Err(ReplyError::Unexpected(reply))
        }
    }

    /// The length of the encoded payload (without the frame header).
    pub fn payload_len(&self) -> usize {
        match self.as_borrowed() {
            Reply::Bare(url) => url.len(),
            Reply::Hello(_) => 1 + 1 + 4 + 4,
            Reply::Pong(b)
            | Reply::Shortened(b)
            | Reply::Resolved(b)
            | Reply::Shortened2(b)
            | Reply::Updated(b)
            | Reply::Info(b)
            | Reply::Stats(b) => 1 + b.len(),
            Reply::Deleted | Reply::Authed => 1,
            Reply::Error { message, .. } => 1 + 2 + message.len(),
            Reply::Unknown { body, .. } => 1 + body.len(),
        }
    }

    /// The length of the encoded frame, header included.
    pub fn frame_len(&self) -> usize {
        HEADER_LEN + self.payload_len()
    }

    /// Refuses exactly what [`Reply::parse_payload`] would refuse, so that
    /// every reply that encodes decodes back to itself.
    fn check(&self) -> Result<(), Error> {
        match self.as_borrowed() {
            Reply::Bare(url) => check_reply_url(None, url),
            Reply::Shortened(url) => check_reply_url(Some(opcode::SHORTENED), url),
            Reply::Resolved(url) => check_reply_url(Some(opcode::RESOLVED), url),
            Reply::Error { code, message } => check_error_reply(code, message),
            Reply::Unknown { opcode, .. } if !is_unknown_reply_opcode(opcode) => {
                Err(Error::InvalidOpcode { opcode })
            }
            other => check_v2_reply(&other),
        }
    }

    fn put_payload<M: BufMut>(&self, dst: &mut M) {
        match self.as_borrowed() {
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
            Reply::Shortened2(link) => put_tagged(dst, opcode::SHORTENED2, link),
            Reply::Updated(link) => put_tagged(dst, opcode::UPDATED, link),
            Reply::Deleted => dst.put_u8(opcode::DELETED),
            Reply::Info(link) => put_tagged(dst, opcode::INFO_REPLY, link),
            Reply::Authed => dst.put_u8(opcode::AUTHED),
            Reply::Stats(stats) => put_tagged(dst, opcode::STATS_REPLY, stats),
            Reply::Error { code, message } => {
                dst.put_u8(opcode::ERROR);
                dst.put_u16_le(code.0);
                dst.put_slice(message);
            }
            Reply::Unknown { opcode, body } => put_tagged(dst, opcode, body),
        }
    }

    /// Appends the reply as one whole **frame** (length header, then
    /// payload) to `dst`: what goes on the wire.
    ///
    /// # Errors
    /// [`Error::InvalidBareUrl`] or [`Error::ControlByteInUrl`] for a URL
    /// that would not read back as one, [`Error::InvalidErrorCode`] and
    /// [`Error::InvalidUtf8`] for an error reply outside 400–599 or whose
    /// message is not UTF-8, [`Error::InvalidOpcode`] for an unknown reply
    /// with an opcode that is not unknown, [`Error::FrameTooLarge`] past
    /// `u32::MAX` bytes. Nothing is written then.
    ///
    /// # Examples
    /// ```
    /// use shorty_protocol::Reply;
    ///
    /// let mut out = Vec::new();
    /// Reply::Bare("http://127.0.0.1:5000/867nv").encode_frame(&mut out)?;
    /// assert_eq!(&out[..4], &[27, 0, 0, 0]);
    /// assert_eq!(&out[4..], b"http://127.0.0.1:5000/867nv");
    /// # Ok::<(), shorty_protocol::Error>(())
    /// ```
    pub fn encode_frame<M: BufMut>(&self, dst: &mut M) -> Result<(), Error> {
        self.check()?;
        put_header(self.payload_len(), dst)?;
        self.put_payload(dst);
        Ok(())
    }

    /// Appends the reply's **payload** only (no length header) to `dst`, for
    /// callers that frame it themselves.
    ///
    /// # Errors
    /// As [`Reply::encode_frame`], except the size limit.
    pub fn encode_payload<M: BufMut>(&self, dst: &mut M) -> Result<(), Error> {
        self.check()?;
        self.put_payload(dst);
        Ok(())
    }
}
