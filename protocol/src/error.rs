//! The errors of the protocol layer: [`Error`] for bytes that do not decode
//! (or values that do not encode), [`ReplyError`] for a reply that decoded
//! but is not the answer a client wanted.

use core::fmt;

use bytes::Bytes;

use crate::error_code::ErrorCode;
use crate::message::Reply;

/// Why bytes could not be decoded, or a message could not be encoded.
///
/// Decoding errors come from untrusted input; none of them is a panic and none
/// carries an `std::io::Error` (I/O belongs to the caller). Every value that
/// encodes successfully decodes back to itself: the encoder refuses exactly
/// what the decoder would reject.
///
/// Not `Copy`, and `#[non_exhaustive]` down to its variants, so that later
/// versions can add errors and details: match with `..` and a `_` arm.
///
/// # Examples
/// ```
/// use shorty_protocol::{frame::{parse_frame, DEFAULT_MAX_FRAME_LEN}, Error, ErrorCode, Request};
///
/// // A header announcing 4 GiB is refused from its 4 bytes alone.
/// let err = parse_frame(b"\xff\xff\xff\xff", DEFAULT_MAX_FRAME_LEN).unwrap_err();
/// assert!(matches!(err, Error::FrameTooLarge { len: 0xffff_ffff, .. }));
/// assert_eq!(err.error_code(), ErrorCode::TOO_LARGE); // what a server answers
///
/// // An opcode this version does not know, in a request:
/// let err = Request::parse_payload(b"\x09").unwrap_err();
/// assert_eq!(err, Error::UnknownOpcode(9));
/// assert_eq!(err.to_string(), "unknown opcode 0x09");
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Error {
    /// A frame header announced a payload longer than the configured maximum.
    ///
    /// Reported from the 4-byte header alone, before any of the payload is
    /// buffered. The stream cannot be resynchronised: close it.
    #[non_exhaustive]
    FrameTooLarge {
        /// The payload length the header announced (saturated to `usize`).
        len: usize,
        /// The maximum payload length in force.
        max: usize,
    },
    /// A frame with an empty payload: neither a bare URL nor a typed message.
    EmptyPayload,
    /// A typed request whose opcode (first payload byte, `0x00..=0x1F`) is
    /// not one this side of the protocol knows. (An unknown *reply* opcode
    /// is not an error: it decodes as [`Reply::Unknown`].)
    UnknownOpcode(u8),
    /// A typed message whose body is shorter than its fixed fields.
    #[non_exhaustive]
    Truncated {
        /// The message's opcode.
        opcode: u8,
    },
    /// A typed message with bytes after its last field.
    #[non_exhaustive]
    TrailingData {
        /// The message's opcode.
        opcode: u8,
        /// How many bytes were left over.
        extra: usize,
    },
    /// An error reply whose message is not valid UTF-8.
    InvalidUtf8,
    /// A bare URL (seed format) that is empty or starts with a control byte
    /// (`0x00..=0x1F`), so it would be read back as a typed message; in a
    /// reply, a bare URL with a control byte anywhere (likely a whole frame
    /// read as a payload).
    InvalidBareUrl,
    /// A reply URL (SHORTENED, RESOLVED) holding a control byte, which no
    /// URL a server hands out does: most likely a whole frame was read as a
    /// payload.
    #[non_exhaustive]
    ControlByteInUrl {
        /// The reply's opcode.
        opcode: u8,
        /// Offset of the first control byte in the URL.
        at: usize,
    },
    /// An error reply whose code is not 400–599 (codes follow HTTP's error
    /// statuses): most likely a whole frame was read as a payload.
    #[non_exhaustive]
    InvalidErrorCode {
        /// The code found.
        code: u16,
    },
    /// A [`Reply::Unknown`] to encode whose opcode is not a control byte, or
    /// is one a known reply uses: it would not read back as itself.
    #[non_exhaustive]
    InvalidOpcode {
        /// The opcode refused.
        opcode: u8,
    },
    /// A TLV list (protocol version 2) that does not read: see
    /// [`TlvProblem`] for why. `tag` is the TLV's tag (for
    /// [`TlvProblem::Missing`], the tag that is missing).
    #[non_exhaustive]
    InvalidTlv {
        /// The tag concerned.
        tag: u8,
        /// What is wrong with it.
        problem: TlvProblem,
    },
    /// A fixed field of a version-2 message with a value the protocol does
    /// not define (a STATS granularity other than 0 or 1, a code that is not
    /// 1–64 of `[A-Za-z0-9_-]`, an AUTH key that is empty or too long).
    #[non_exhaustive]
    InvalidField {
        /// The message's opcode.
        opcode: u8,
        /// The field's name as `PROTOCOL.md` spells it.
        field: &'static str,
    },
}

/// What is wrong with a TLV ([`Error::InvalidTlv`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum TlvProblem {
    /// The header, or the value its length announces, runs past the end.
    Truncated,
    /// A tag below `0x80` this version does not know: a newer writer meant
    /// it to change the message's meaning, so it cannot be skipped.
    UnknownTag,
    /// More TLVs than [`MAX_TLVS`](crate::tlv::MAX_TLVS).
    TooMany,
    /// A field given twice.
    Duplicate,
    /// A known tag this message does not take (e.g. `disabled` in SHORTEN2).
    NotAllowed,
    /// A value of the wrong length or out of range (a redirect status that
    /// is not 301/302/307/308, an alias with a `/`, text not UTF-8, a URL
    /// with a control byte, ...).
    BadValue,
    /// A field the message requires is absent (e.g. the URL of SHORTEN2).
    Missing,
    /// A value longer than a TLV can hold (65,535 bytes), or than the
    /// field's documented limit.
    ValueTooLong,
}

impl fmt::Display for TlvProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            TlvProblem::Truncated => "is truncated",
            TlvProblem::UnknownTag => "is unknown and not skippable",
            TlvProblem::TooMany => "is one TLV too many",
            TlvProblem::Duplicate => "is given twice",
            TlvProblem::NotAllowed => "is not allowed in this message",
            TlvProblem::BadValue => "has an invalid value",
            TlvProblem::Missing => "is missing",
            TlvProblem::ValueTooLong => "has a value over its length limit",
        })
    }
}

impl Error {
    /// The protocol error code a server answers with when a request fails to
    /// decode with this error.
    pub const fn error_code(&self) -> ErrorCode {
        match self {
            Error::FrameTooLarge { .. } => ErrorCode::TOO_LARGE,
            Error::UnknownOpcode(_) => ErrorCode::UNKNOWN_OPCODE,
            _ => ErrorCode::MALFORMED,
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::FrameTooLarge { len, max } => {
                write!(
                    f,
                    "frame payload of {len} bytes exceeds the limit of {max} bytes"
                )
            }
            Error::EmptyPayload => f.write_str("frame has an empty payload"),
            Error::UnknownOpcode(op) => write!(f, "unknown opcode 0x{op:02x}"),
            Error::Truncated { opcode } => {
                write!(f, "message with opcode 0x{opcode:02x} is truncated")
            }
            Error::TrailingData { opcode, extra } => write!(
                f,
                "message with opcode 0x{opcode:02x} has {extra} unexpected trailing bytes"
            ),
            Error::InvalidUtf8 => f.write_str("error message is not valid UTF-8"),
            Error::InvalidBareUrl => f.write_str(
                "bare URL is empty or holds a control byte (0x00-0x1f); \
                 was a whole frame passed as a payload?",
            ),
            Error::ControlByteInUrl { opcode, at } => write!(
                f,
                "URL in reply 0x{opcode:02x} has a control byte at offset {at}; \
                 was a whole frame passed as a payload?"
            ),
            Error::InvalidErrorCode { code } => write!(
                f,
                "error reply code {code} is not 400-599; was a whole frame passed as a payload?"
            ),
            Error::InvalidOpcode { opcode } => write!(
                f,
                "opcode 0x{opcode:02x} cannot be sent as an unknown reply"
            ),
            Error::InvalidTlv { tag, problem } => write!(f, "TLV tag {tag} {problem}"),
            Error::InvalidField { opcode, field } => write!(
                f,
                "message with opcode 0x{opcode:02x} has an invalid {field}"
            ),
        }
    }
}

impl core::error::Error for Error {}

/// A reply that decoded but is not the answer a client wanted: the server's
/// ERROR reply, or a reply of the wrong kind. Made by
/// [`Reply::into_result`] and [`Reply::into_answer`]; it holds the reply's
/// contents, so nothing is lost.
///
/// # Examples
/// ```
/// use shorty_protocol::{ErrorCode, Reply, ReplyError, Request};
///
/// let reply = Reply::error(ErrorCode::INVALID_URL, "not http(s)");
/// match reply.into_answer(&Request::Shorten("ftp://x/")) {
///     Err(ReplyError::Server { code, message, .. }) => {
///         assert!(code.is_client_error());
///         assert_eq!(message, "not http(s)");
///     }
///     other => panic!("{other:?}"),
/// }
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ReplyError<B = Bytes> {
    /// The server answered with an ERROR reply.
    #[non_exhaustive]
    Server {
        /// Its code.
        code: ErrorCode,
        /// Its message, UTF-8.
        message: B,
    },
    /// The reply does not answer the request (e.g. PONG to a SHORTEN), or
    /// is one this version does not know ([`Reply::Unknown`]).
    Unexpected(Reply<B>),
}

impl<B: AsRef<[u8]>> ReplyError<B> {
    /// The server's error code, for [`ReplyError::Server`].
    pub fn code(&self) -> Option<ErrorCode> {
        match self {
            ReplyError::Server { code, .. } => Some(*code),
            ReplyError::Unexpected(_) => None,
        }
    }
}

impl<B: AsRef<[u8]>> fmt::Display for ReplyError<B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ReplyError::Server { code, message } => {
                let message = core::str::from_utf8(message.as_ref()).unwrap_or_default();
                write!(f, "server error {code}: {message}")
            }
            ReplyError::Unexpected(Reply::Unknown { opcode, .. }) => {
                write!(f, "unexpected reply with unknown opcode 0x{opcode:02x}")
            }
            ReplyError::Unexpected(reply) => write!(f, "unexpected {} reply", reply.name()),
        }
    }
}

impl<B: AsRef<[u8]> + fmt::Debug> core::error::Error for ReplyError<B> {}
