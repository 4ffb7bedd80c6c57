//! The one error type of the protocol layer.

use core::fmt;

use crate::error_code::ErrorCode;

/// Why bytes could not be decoded, or a message could not be encoded.
///
/// Decoding errors come from untrusted input; none of them is a panic and none
/// carries an `std::io::Error` (I/O belongs to the caller). Every value that
/// encodes successfully decodes back to itself: the encoder refuses exactly
/// what the decoder would reject.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Error {
    /// A frame header announced a payload longer than the configured maximum.
    ///
    /// Reported from the 4-byte header alone, before any of the payload is
    /// buffered. The stream cannot be resynchronised: close it.
    FrameTooLarge {
        /// The payload length the header announced (saturated to `usize`).
        len: usize,
        /// The maximum payload length in force.
        max: usize,
    },
    /// A frame with an empty payload: neither a bare URL nor a typed message.
    EmptyPayload,
    /// A typed message whose opcode (first payload byte, `0x00..=0x1F`) is not
    /// one this side of the protocol knows.
    UnknownOpcode(u8),
    /// A typed message whose body is shorter than its fixed fields.
    Truncated {
        /// The message's opcode.
        opcode: u8,
    },
    /// A typed message with bytes after its last field.
    TrailingData {
        /// The message's opcode.
        opcode: u8,
        /// How many bytes were left over.
        extra: usize,
    },
    /// An error reply whose message is not valid UTF-8.
    InvalidUtf8,
    /// A bare URL (seed format) that is empty or starts with a control byte
    /// (`0x00..=0x1F`), so it would be read back as a typed message.
    InvalidBareUrl,
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
            Error::InvalidBareUrl => {
                f.write_str("bare URL is empty or starts with a control byte (0x00-0x1f)")
            }
        }
    }
}

impl core::error::Error for Error {}
