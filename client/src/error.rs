//! The client's error type.

use std::fmt;
use std::io;

use shorty_protocol::ErrorCode;

/// Why a call failed.
#[derive(Debug)]
#[non_exhaustive]
pub enum Error {
    /// Connecting, reading or writing failed. The connection is dropped
    /// and the next call reconnects.
    Io(io::Error),
    /// The server did not answer (or accept the request) in time
    /// ([`crate::Options`]). The connection is dropped, so a late reply can
    /// never be taken for the answer to a later request; the next call
    /// reconnects.
    Timeout(std::time::Duration),
    /// The server sent bytes that are not valid protocol.
    Protocol(shorty_protocol::Error),
    /// The server answered with an error reply.
    Server {
        /// The stable numeric code (see `PROTOCOL.md`).
        code: ErrorCode,
        /// The server's explanation.
        message: String,
    },
    /// The server answered with a reply of the wrong kind.
    UnexpectedReply(String),
    /// The server does not speak the protocol version a call needs (the
    /// version-2 calls: `shorten_with`, `update`, `delete`, `info`,
    /// `stats`, `auth`).
    #[non_exhaustive]
    VersionUnsupported {
        /// The version the call needs.
        wanted: u8,
        /// The version the server answered HELLO with.
        server: u8,
    },
    /// The server closed the connection before answering.
    Closed,
}

impl Error {
    /// The server's error code, for [`Error::Server`].
    pub fn code(&self) -> Option<ErrorCode> {
        match self {
            Error::Server { code, .. } => Some(*code),
            _ => None,
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Io(err) => write!(f, "{err}"),
            Error::Timeout(after) => {
                write!(f, "timed out: no answer within {}", humantime_lite(*after))
            }
            Error::Protocol(err) => write!(f, "protocol error: {err}"),
            Error::Server { code, message } => write!(f, "server error {code}: {message}"),
            Error::UnexpectedReply(what) => write!(f, "unexpected reply: {what}"),
            Error::VersionUnsupported { wanted, server } => write!(
                f,
                "the server speaks protocol version {server}, this needs version {wanted}"
            ),
            Error::Closed => f.write_str("the server closed the connection"),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Io(err) => Some(err),
            Error::Protocol(err) => Some(err),
            _ => None,
        }
    }
}

/// `1.5s`, `250ms`: short enough for a one-line error.
fn humantime_lite(d: std::time::Duration) -> String {
    if d.as_millis().is_multiple_of(1000) {
        format!("{}s", d.as_secs())
    } else {
        format!("{}ms", d.as_millis())
    }
}

impl Error {
    /// Maps an I/O error of a socket with a timeout set: a blocked read or
    /// write that gave up is a timeout (`WouldBlock` on Unix, `TimedOut`
    /// on Windows), not "os error 11".
    pub(crate) fn from_io(err: io::Error, limit: Option<std::time::Duration>) -> Self {
        match (err.kind(), limit) {
            (io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut, Some(limit)) => {
                Error::Timeout(limit)
            }
            _ => Error::Io(err),
        }
    }
}

impl From<io::Error> for Error {
    fn from(err: io::Error) -> Self {
        Error::Io(err)
    }
}

impl From<shorty_protocol::Error> for Error {
    fn from(err: shorty_protocol::Error) -> Self {
        Error::Protocol(err)
    }
}

/// The result of a client call.
pub type Result<T, E = Error> = std::result::Result<T, E>;
