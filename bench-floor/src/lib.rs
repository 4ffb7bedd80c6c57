//! Null HTTP servers: each answers every request with a `302` and does no
//! other work, so their CPU per request is the floor a real server on the
//! same I/O stack can approach (issue 23; `scripts/bench-floor.sh` measures
//! Shorty's backends, nginx and these side by side).
//!
//! Three binaries share this crate's request counting ([`Heads`]) and reply
//! bytes, so they differ only in how they move bytes:
//! - `null-uring`: raw `io-uring` (multishot accept and recv, a registered
//!   buffer ring, `COOP_TASKRUN` + `SINGLE_ISSUER` + `DEFER_TASKRUN`);
//!   the `unsafe` lives in [`ring`] alone;
//! - `null-tokio`: tokio's current-thread runtime (epoll);
//! - `null-tokio-uring`: tokio-uring, as Shorty's uring backend uses it.
//!
//! Each takes `[ADDR] [--ring MODE]`, binds `ADDR` (default
//! `127.0.0.1:0`), prints `listening on ADDR` on stdout and serves on one
//! thread until killed.

pub mod ring;

use std::io::Write;
use std::net::{SocketAddr, TcpListener};
use std::time::Duration;

/// The reply to a keep-alive request: what nginx's `return 302` sends,
/// minus its body and `Server`/`Date` headers (no work: a null server).
pub const REPLY: &[u8] =
    b"HTTP/1.1 302 Found\r\nLocation: https://example.com/wrk-target\r\nContent-Length: 0\r\n\r\n";

/// The reply to a request that asked for `Connection: close`.
pub const REPLY_CLOSE: &[u8] = b"HTTP/1.1 302 Found\r\nLocation: https://example.com/wrk-target\r\nContent-Length: 0\r\nConnection: close\r\n\r\n";

/// Longest request head accepted: a peer sending more without ending its
/// head is closed (a null server still bounds what one peer may hold).
pub const MAX_HEAD_BYTES: usize = 8192;

/// What a run of bytes completed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Fed {
    /// Request heads completed (each gets one reply).
    pub requests: usize,
    /// The last of them asked for `Connection: close`: reply, then close,
    /// and ignore whatever followed it.
    pub close: bool,
}

/// A request head longer than [`MAX_HEAD_BYTES`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HeadTooLarge;

/// The bytes of `connection: close` a header line is compared with.
const CLOSE_LINE: &[u8] = b"connection: close";

/// Counts request heads in a byte stream (bodies are not expected: a null
/// server answers `GET`s), across reads, without buffering: one pass, a
/// few bytes of state.
#[derive(Debug, Default)]
pub struct Heads {
    /// Bytes of the current head so far.
    head_bytes: usize,
    /// The current line, lower-cased, as far as it can still be
    /// `connection: close` (longer lines are only counted).
    line: [u8; 20],
    line_len: usize,
    /// The current head holds `Connection: close`.
    close: bool,
}

impl Heads {
    /// Feeds the next bytes of the stream.
    pub fn feed(&mut self, bytes: &[u8]) -> Result<Fed, HeadTooLarge> {
        let mut fed = Fed::default();
        for &b in bytes {
            self.head_bytes += 1;
            if self.head_bytes > MAX_HEAD_BYTES {
                return Err(HeadTooLarge);
            }
            match b {
                b'\n' => {
                    let line = &self.line[..self.line_len.min(self.line.len())];
                    let line = line.strip_suffix(b"\r").unwrap_or(line);
                    if line.is_empty() && self.head_bytes > 2 {
                        fed.requests += 1;
                        let close = self.close;
                        *self = Self::default();
                        if close {
                            fed.close = true;
                            return Ok(fed);
                        }
                        continue;
                    }
                    if line == CLOSE_LINE {
                        self.close = true;
                    }
                    self.line_len = 0;
                }
                _ => {
                    if let Some(slot) = self.line.get_mut(self.line_len) {
                        *slot = b.to_ascii_lowercase();
                    }
                    self.line_len = self.line_len.saturating_add(1);
                }
            }
        }
        Ok(fed)
    }
}

/// Appends the replies `fed` asks for to `out`.
pub fn replies(fed: Fed, out: &mut Vec<u8>) {
    for i in 0..fed.requests {
        out.extend_from_slice(if fed.close && i + 1 == fed.requests {
            REPLY_CLOSE
        } else {
            REPLY
        });
    }
}

/// The command line every null server takes:
/// `[ADDR] [--ring MODE] [--defer-accept]`.
#[derive(Debug)]
pub struct Args {
    /// Where to listen.
    pub addr: SocketAddr,
    /// `--ring`'s value, if given (each binary says which it knows).
    pub ring: Option<String>,
    /// `--defer-accept`: the listener defers accepts for 1 s
    /// (`TCP_DEFER_ACCEPT`), as Shorty's does by default.
    pub defer_accept: bool,
}

impl Args {
    /// Parses the process's arguments, or exits with a usage line.
    pub fn parse() -> Self {
        let mut addr = None;
        let mut ring = None;
        let mut defer_accept = false;
        let mut args = std::env::args().skip(1);
        while let Some(arg) = args.next() {
            if arg == "--defer-accept" {
                defer_accept = true;
            } else if arg == "--ring" {
                ring = args.next();
                if ring.is_none() {
                    usage();
                }
            } else if let (None, Ok(a)) = (addr, arg.parse()) {
                addr = Some(a);
            } else {
                usage();
            }
        }
        let addr = addr.unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 0)));
        Self {
            addr,
            ring,
            defer_accept,
        }
    }

    /// Binds the listener (std: each runtime adopts it) and announces its
    /// address on stdout, the line the smoke test and the script wait for.
    pub fn bind(&self) -> std::io::Result<TcpListener> {
        let listener = TcpListener::bind(self.addr)?;
        if self.defer_accept {
            shorty_runtime::listen::set_defer_accept(&listener, Duration::from_secs(1))?;
        }
        let mut stdout = std::io::stdout().lock();
        writeln!(stdout, "listening on {}", listener.local_addr()?)?;
        stdout.flush()?;
        Ok(listener)
    }
}

fn usage() -> ! {
    eprintln!("usage: null-SERVER [ADDR] [--ring MODE] [--defer-accept]");
    std::process::exit(2);
}

#[cfg(test)]
mod tests {
    use super::*;

    const GET: &[u8] = b"GET /x HTTP/1.1\r\nHost: a\r\n\r\n";

    #[test]
    fn counts_heads_across_any_split() {
        let stream = [
            GET,
            GET,
            b"GET /y HTTP/1.1\r\nConnection: Close\r\n\r\n",
            GET,
        ]
        .concat();
        for split in 0..stream.len() {
            let mut heads = Heads::default();
            let (a, b) = stream.split_at(split);
            let first = heads.feed(a).unwrap();
            let second = if first.close {
                Fed::default()
            } else {
                heads.feed(b).unwrap()
            };
            assert_eq!(first.requests + second.requests, 3, "split at {split}");
            assert!(first.close || second.close, "split at {split}");
        }
    }

    #[test]
    fn a_header_named_like_close_is_not_close() {
        let mut heads = Heads::default();
        let fed = heads
            .feed(b"GET / HTTP/1.1\r\nX-Connection: close\r\nConnection: closed\r\n\r\n")
            .unwrap();
        assert_eq!(
            fed,
            Fed {
                requests: 1,
                close: false
            }
        );
    }

    #[test]
    fn an_endless_head_is_refused() {
        let mut heads = Heads::default();
        let line = [b'a'; 1000];
        let refused = (0..10).any(|_| heads.feed(&line).is_err());
        assert!(refused);
    }
}
