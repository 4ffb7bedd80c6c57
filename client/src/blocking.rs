//! The blocking client, on `std::net`.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use shorty_protocol::frame::{FrameDecoder, Status};
use shorty_protocol::{ErrorCode, Reply, Request, ServerInfo, PROTOCOL_V1};

use crate::error::{Error, Result};
use crate::options::{code_of, window_full, Options};
use crate::reply::{expect, expect_url};

/// A blocking client holding one connection, reused across calls.
///
/// After an I/O error, or an error reply after which the server closes
/// (413, 408), the connection is dropped and the next call reconnects; other
/// server error replies ([`Error::Server`]) keep it.
///
/// # Examples
/// ```no_run
/// let mut client = shorty_client::Client::connect("127.0.0.1:9000")?;
/// let short = client.shorten("https://example.com/a/long/path")?;
/// assert_eq!(client.resolve(&short)?, "https://example.com/a/long/path");
/// # Ok::<(), shorty_client::Error>(())
/// ```
#[derive(Debug)]
pub struct Client {
    addrs: Vec<SocketAddr>,
    options: Options,
    conn: Option<Conn>,
}

#[derive(Debug)]
struct Conn {
    stream: TcpStream,
    buf: BytesMut,
}

impl Client {
    /// Connects with default [`Options`].
    ///
    /// # Errors
    /// [`Error::Io`] when no address accepts the connection.
    pub fn connect(addr: impl ToSocketAddrs) -> Result<Self> {
        Self::connect_with(addr, Options::default())
    }

    /// Connects with `options`.
    ///
    /// # Errors
    /// [`Error::Io`] when no address accepts the connection.
    pub fn connect_with(addr: impl ToSocketAddrs, options: Options) -> Result<Self> {
        let mut client = Self {
            addrs: addr.to_socket_addrs()?.collect(),
            options,
            conn: None,
        };
        client.conn()?;
        Ok(client)
    }

    fn conn(&mut self) -> Result<&mut Conn> {
        if self.conn.is_none() {
            let mut last = None;
            for addr in &self.addrs {
                match TcpStream::connect_timeout(addr, self.options.connect_timeout) {
                    Ok(stream) => {
                        stream.set_read_timeout(self.options.read_timeout)?;
                        stream.set_write_timeout(self.options.write_timeout)?;
                        stream.set_nodelay(true)?;
                        self.conn = Some(Conn {
                            stream,
                            buf: BytesMut::new(),
                        });
                        break;
                    }
                    Err(err) => last = Some(err),
                }
            }
            if self.conn.is_none() {
                let err = last.unwrap_or_else(|| std::io::Error::other("no address to connect to"));
                return Err(Error::from_io(err, Some(self.options.connect_timeout)));
            }
        }
        self.conn.as_mut().ok_or(Error::Closed)
    }

    /// Sends `requests` in one write and reads one reply for each, in order
    /// (pipelining). Error replies are returned as replies, not as `Err`.
    ///
    /// # Errors
    /// [`Error::Io`], [`Error::Protocol`] or [`Error::Closed`] for the
    /// connection as a whole.
    pub fn batch<B: AsRef<[u8]>>(&mut self, requests: &[Request<B>]) -> Result<Vec<Reply>> {
        let result = self.batch_inner(requests);
        let closes = |r: &Reply| {
            // After these the server may close the connection (PROTOCOL.md,
            // section 3); reconnect rather than write into a dead socket.
            r.as_error()
                .is_some_and(|(code, _)| code == ErrorCode::TOO_LARGE || code == ErrorCode::TIMEOUT)
        };
        match &result {
            Err(Error::Io(_) | Error::Timeout(_) | Error::Protocol(_) | Error::Closed) => {
                self.conn = None
            }
            Ok(replies) if replies.iter().any(closes) => self.conn = None,
            _ => {}
        }
        result
    }

    fn batch_inner<B: AsRef<[u8]>>(&mut self, requests: &[Request<B>]) -> Result<Vec<Reply>> {
        let decoder = FrameDecoder::with_max_frame_len(self.options.max_frame_len);
        let (read_limit, write_limit) = (self.options.read_timeout, self.options.write_timeout);
        let conn = self.conn()?;
        let mut replies = Vec::with_capacity(requests.len());
        // In windows (`window_full`): a window's requests fit in the
        // kernel's buffers, so its write completes; then its replies are
        // read.
        let mut rest = requests;
        let mut wire = Vec::new();
        while !rest.is_empty() {
            wire.clear();
            let mut taken = 0;
            for request in rest {
                if taken > 0 && window_full(taken, wire.len()) {
                    break;
                }
                request.encode_frame(&mut wire)?;
                taken += 1;
            }
            rest = &rest[taken..];
            conn.stream
                .write_all(&wire)
                .map_err(|e| Error::from_io(e, write_limit))?;
            for _ in 0..taken {
                let frame = conn.read_frame(&decoder, read_limit)?;
                replies.push(Reply::decode_payload(frame)?);
            }
        }
        Ok(replies)
    }

    fn call(&mut self, request: Request<&[u8]>) -> Result<Reply> {
        let mut replies = self.batch(&[request])?;
        replies.pop().ok_or(Error::Closed)
    }

    /// Asks for the server's protocol version and limits.
    ///
    /// # Errors
    /// Any [`Error`].
    pub fn hello(&mut self) -> Result<ServerInfo> {
        let reply = self.call(Request::hello(PROTOCOL_V1))?;
        expect(reply, |r| match r {
            Reply::Hello(info) => Ok(info),
            other => Err(other),
        })
    }

    /// Round trip time of a PING.
    ///
    /// # Errors
    /// Any [`Error`].
    pub fn ping(&mut self) -> Result<Duration> {
        let start = Instant::now();
        let reply = self.call(Request::Ping(b""))?;
        expect(reply, |r| match r {
            Reply::Pong(_) => Ok(()),
            other => Err(other),
        })?;
        Ok(start.elapsed())
    }

    /// Shortens `url`, returning the short URL.
    ///
    /// # Errors
    /// [`Error::Server`] when the server refuses the URL (code 422 invalid,
    /// 413 too long, 409 already a short URL), or any other [`Error`].
    pub fn shorten(&mut self, url: &str) -> Result<String> {
        let reply = self.call(Request::Shorten(url.as_bytes()))?;
        expect_url(reply, |r| match r {
            Reply::Shortened(short) => Ok(short),
            other => Err(other),
        })
    }

    /// Shortens `url` with the seed's bare-URL exchange.
    ///
    /// # Errors
    /// As [`shorten`](Self::shorten).
    pub fn shorten_legacy(&mut self, url: &str) -> Result<String> {
        let reply = self.call(Request::Bare(url.as_bytes()))?;
        expect_url(reply, |r| match r {
            Reply::Bare(short) => Ok(short),
            other => Err(other),
        })
    }

    /// Shortens every URL in one pipelined batch; each gets its own result.
    ///
    /// # Errors
    /// The outer `Err` is for the connection as a whole.
    pub fn shorten_all<S: AsRef<str>>(&mut self, urls: &[S]) -> Result<Vec<Result<String>>> {
        let requests: Vec<Request<&[u8]>> = urls
            .iter()
            .map(|u| Request::Shorten(u.as_ref().as_bytes()))
            .collect();
        Ok(self
            .batch(&requests)?
            .into_iter()
            .map(|reply| {
                expect_url(reply, |r| match r {
                    Reply::Shortened(short) => Ok(short),
                    other => Err(other),
                })
            })
            .collect())
    }

    /// The long URL behind a code or a short URL.
    ///
    /// # Errors
    /// [`Error::Server`] with code 404 when there is none, or any other
    /// [`Error`].
    pub fn resolve(&mut self, code_or_short_url: &str) -> Result<String> {
        let reply = self.call(Request::Resolve(code_of(code_or_short_url).as_bytes()))?;
        expect_url(reply, |r| match r {
            Reply::Resolved(url) => Ok(url),
            other => Err(other),
        })
    }
}

impl Conn {
    fn read_frame(&mut self, decoder: &FrameDecoder, limit: Option<Duration>) -> Result<Bytes> {
        loop {
            if let Status::Complete(payload) = decoder.decode(&mut self.buf)? {
                return Ok(payload);
            }
            let mut chunk = [0u8; 16 * 1024];
            let n = self
                .stream
                .read(&mut chunk)
                .map_err(|e| Error::from_io(e, limit))?;
            if n == 0 {
                return Err(Error::Closed);
            }
            self.buf
                .extend_from_slice(chunk.get(..n).unwrap_or_default());
        }
    }
}
