//! Stable numeric error codes carried by error replies.

use core::fmt;

/// The numeric code of an error reply.
///
/// A newtype over `u16` rather than an enum so that a client built against
/// this version still decodes codes that a newer server sends: unknown codes
/// are kept as they are and can be matched by class ([`is_client_error`]).
/// The values follow the HTTP status code that means the same thing, so a
/// reader can guess them; the table in `PROTOCOL.md` is normative.
///
/// `Debug` and `Display` print the name of a code this version knows
/// (`ErrorCode::NOT_FOUND`, `404 NOT_FOUND`), the number otherwise.
///
/// # Examples
/// ```
/// use shorty_protocol::ErrorCode;
///
/// let code = ErrorCode::NOT_FOUND;
/// assert_eq!(format!("{code:?}"), "ErrorCode::NOT_FOUND");
/// assert_eq!(code.to_string(), "404 NOT_FOUND");
/// assert!(code.is_client_error());
///
/// // A code from a newer server: kept, and still classified.
/// let newer = ErrorCode(418);
/// assert_eq!(newer.name(), None);
/// assert_eq!(format!("{newer:?}"), "ErrorCode(418)");
/// assert!(newer.is_client_error() && newer.is_error());
/// ```
///
/// [`is_client_error`]: ErrorCode::is_client_error
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub struct ErrorCode(pub u16);

impl ErrorCode {
    /// A typed message whose body does not match its opcode's layout
    /// (truncated, trailing bytes, empty frame). The connection stays usable.
    pub const MALFORMED: ErrorCode = ErrorCode(400);
    /// RESOLVE of a code that does not exist.
    pub const NOT_FOUND: ErrorCode = ErrorCode(404);
    /// A frame did not arrive completely within the server's frame timeout.
    /// The server closes the connection after sending it.
    pub const TIMEOUT: ErrorCode = ErrorCode(408);
    /// SHORTEN of a URL that is already one of this server's short URLs
    /// (shortening it again would only build a redirect chain). The same
    /// number as [`CONFLICT`](Self::CONFLICT), which names it since
    /// version 2 gave 409 a second use; the bytes on the wire are unchanged.
    pub const ALREADY_SHORT: ErrorCode = ErrorCode(409);
    /// (Version 2.) The request needs an API key (AUTH) and has none, or its
    /// key is unknown or revoked.
    pub const UNAUTHORIZED: ErrorCode = ErrorCode(401);
    /// (Version 2.) The key lacks the scope, the link is another key's, or
    /// the destination is blocked.
    pub const FORBIDDEN: ErrorCode = ErrorCode(403);
    /// A conflict: the alias is taken or quarantined (version 2), or the
    /// URL is already a short URL ([`ALREADY_SHORT`](Self::ALREADY_SHORT),
    /// the same code).
    pub const CONFLICT: ErrorCode = ErrorCode(409);
    /// (Version 2.) The link has expired, reached its click limit or is
    /// disabled.
    pub const GONE: ErrorCode = ErrorCode(410);
    /// (Version 2.) Too many requests for this key or address; retry later.
    pub const RATE_LIMITED: ErrorCode = ErrorCode(429);
    /// A frame or URL over the server's limits (see HELLO). After a frame that
    /// is too large the server closes the connection without reading it.
    pub const TOO_LARGE: ErrorCode = ErrorCode(413);
    /// SHORTEN of something that is not an acceptable `http`/`https` URL.
    pub const INVALID_URL: ErrorCode = ErrorCode(422);
    /// The server failed; the request may be retried.
    pub const INTERNAL: ErrorCode = ErrorCode(500);
    /// A typed message with an opcode the server does not know.
    pub const UNKNOWN_OPCODE: ErrorCode = ErrorCode(501);
    /// The server is shedding load; retry later.
    pub const OVERLOADED: ErrorCode = ErrorCode(503);
    /// HELLO asked for a protocol version the server does not speak.
    pub const UNSUPPORTED_VERSION: ErrorCode = ErrorCode(505);

    /// A short upper-case name for the codes this version knows, `None` for
    /// others.
    pub const fn name(self) -> Option<&'static str> {
        Some(match self {
            ErrorCode::MALFORMED => "MALFORMED",
            ErrorCode::NOT_FOUND => "NOT_FOUND",
            ErrorCode::TIMEOUT => "TIMEOUT",
            ErrorCode::UNAUTHORIZED => "UNAUTHORIZED",
            ErrorCode::FORBIDDEN => "FORBIDDEN",
            ErrorCode::CONFLICT => "CONFLICT",
            ErrorCode::GONE => "GONE",
            ErrorCode::RATE_LIMITED => "RATE_LIMITED",
            ErrorCode::TOO_LARGE => "TOO_LARGE",
            ErrorCode::INVALID_URL => "INVALID_URL",
            ErrorCode::INTERNAL => "INTERNAL",
            ErrorCode::UNKNOWN_OPCODE => "UNKNOWN_OPCODE",
            ErrorCode::OVERLOADED => "OVERLOADED",
            ErrorCode::UNSUPPORTED_VERSION => "UNSUPPORTED_VERSION",
            _ => return None,
        })
    }

    /// `true` for 400–599, the codes an ERROR reply may carry (the HTTP
    /// error statuses). A reply with another code is refused as malformed.
    pub const fn is_error(self) -> bool {
        self.0 >= 400 && self.0 < 600
    }

    /// `true` for 400–499: the request was at fault, retrying it unchanged
    /// fails again.
    pub const fn is_client_error(self) -> bool {
        self.0 >= 400 && self.0 < 500
    }

    /// `true` for 500–599: the server was at fault, the request may succeed
    /// later.
    pub const fn is_server_error(self) -> bool {
        self.0 >= 500 && self.0 < 600
    }
}

impl fmt::Debug for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.name() {
            Some(name) => write!(f, "ErrorCode::{name}"),
            None => write!(f, "ErrorCode({})", self.0),
        }
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.name() {
            Some(name) => write!(f, "{} {}", self.0, name),
            None => write!(f, "{}", self.0),
        }
    }
}

impl From<u16> for ErrorCode {
    fn from(code: u16) -> Self {
        ErrorCode(code)
    }
}

impl From<ErrorCode> for u16 {
    fn from(code: ErrorCode) -> Self {
        code.0
    }
}
