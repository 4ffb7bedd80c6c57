//! The client's error type.

use std::fmt;
use std::io;

use shorty_protocol::ErrorCode;

/// Why a call failed.
#[derive(Debug)]
#[non_exhaustive]
pub enum Error {
    /// Connecting, reading or writing failed (including timeouts, as
    /// `io::ErrorKind::TimedOut` / `WouldBlock`). The connection is dropped
    /// and the next call reconnects.
    Io(io::Error),
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
            Error::Protocol(err) => write!(f, "protocol error: {err}"),
            Error::Server { code, message } => write!(f, "server error {code}: {message}"),
            Error::UnexpectedReply(what) => write!(f, "unexpected reply: {what}"),
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
