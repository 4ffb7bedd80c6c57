//! Connection settings shared by the blocking and async clients.

use std::time::Duration;

use shorty_protocol::frame::DEFAULT_MAX_FRAME_LEN;

/// Timeouts and limits of a client connection.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Options {
    /// Time allowed to establish the TCP connection. Default 5 s.
    pub connect_timeout: Duration,
    /// Time a read may wait for the server; `None` waits forever.
    /// Default 10 s.
    pub read_timeout: Option<Duration>,
    /// Time a write may wait; `None` waits forever. Default 10 s.
    pub write_timeout: Option<Duration>,
    /// Largest reply payload accepted. Default 64 KiB.
    pub max_frame_len: usize,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            connect_timeout: Duration::from_secs(5),
            read_timeout: Some(Duration::from_secs(10)),
            write_timeout: Some(Duration::from_secs(10)),
            max_frame_len: DEFAULT_MAX_FRAME_LEN,
        }
    }
}

impl Options {
    /// Sets the connect timeout.
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// Sets the read timeout.
    pub fn read_timeout(mut self, timeout: Option<Duration>) -> Self {
        self.read_timeout = timeout;
        self
    }

    /// Sets the write timeout.
    pub fn write_timeout(mut self, timeout: Option<Duration>) -> Self {
        self.write_timeout = timeout;
        self
    }

    /// Sets the largest reply accepted.
    pub fn max_frame_len(mut self, len: usize) -> Self {
        self.max_frame_len = len;
        self
    }
}

/// The code in `code_or_short_url`: the text after its last `/`, so both
/// `867nvAB` and `http://127.0.0.1:5000/867nvAB` give `867nvAB`.
pub fn code_of(code_or_short_url: &str) -> &str {
    // One rule for every client: the protocol crate's.
    shorty_protocol::short_code(code_or_short_url)
}

/// Most requests a batch writes before reading their replies.
const WINDOW_REQUESTS: usize = 64;
/// Most request bytes a batch writes before reading their replies.
const WINDOW_BYTES: usize = 32 * 1024;

/// `true` when a batch window holding `requests` requests of `bytes` bytes
/// takes no more (a window always holds at least one). Batches go out in
/// windows, reading each window's replies before writing the next: the
/// server stops reading while too many replies wait for us
/// (back-pressure), so writing a whole large batch before reading any
/// reply could leave both sides blocked. Both clients use it.
pub(crate) fn window_full(requests: usize, bytes: usize) -> bool {
    requests > 0 && (requests >= WINDOW_REQUESTS || bytes >= WINDOW_BYTES)
}

/// An API key held by a client: `Debug` never prints it.
#[derive(Clone)]
pub(crate) struct ApiKey(pub(crate) Vec<u8>);

impl std::fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ApiKey(<redacted>)")
    }
}
