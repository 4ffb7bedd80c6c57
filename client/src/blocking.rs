//! The blocking client, on `std::net`.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use shorty_protocol::frame::{FrameDecoder, Status};
use shorty_protocol::link::{LinkOptions, LinkPatch, StatsQuery};
use shorty_protocol::{ErrorCode, Reply, Request, ServerInfo, PROTOCOL_V1, PROTOCOL_V2};

use crate::error::{Error, Result};
use crate::link::{Link, Stats};
use crate::options::{code_of, window_full, ApiKey, Options};
use crate::reply::{expect, expect_empty, expect_link, expect_stats, expect_url};

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
    /// Presented (AUTH) on every new connection before a version-2 call.
    api_key: Option<ApiKey>,
}

#[derive(Debug)]
struct Conn {
    stream: TcpStream,
    buf: BytesMut,
    /// The protocol version HELLO negotiated; 0 before any HELLO (replies
    /// are then read as version 1).
    version: u8,
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
            api_key: None,
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
                            version: 0,
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
                replies.push(Reply::decode_payload_for(conn.version, frame)?);
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

    /// Negotiates protocol version 2 (HELLO 2) on the current connection,
    /// returning what the server answered: `info.version` is 1 when it
    /// speaks only version 1. The version-2 calls do this themselves.
    ///
    /// # Errors
    /// Any [`Error`].
    pub fn hello_v2(&mut self) -> Result<ServerInfo> {
        let reply = self.call(Request::hello(PROTOCOL_V2))?;
        let info = expect(reply, |r| match r {
            Reply::Hello(info) => Ok(info),
            other => Err(other),
        })?;
        if let Some(conn) = self.conn.as_mut() {
            conn.version = info.version;
        }
        Ok(info)
    }

    /// Makes sure the connection speaks version 2 (and has presented the
    /// API key), negotiating on a new connection.
    fn ensure_v2(&mut self) -> Result<()> {
        if self.conn()?.version >= PROTOCOL_V2 {
            return Ok(());
        }
        let info = self.hello_v2()?;
        if info.version < PROTOCOL_V2 {
            return Err(Error::VersionUnsupported {
                wanted: PROTOCOL_V2,
                server: info.version,
            });
        }
        if let Some(ApiKey(key)) = self.api_key.clone() {
            let reply = self.call(Request::Auth(&key))?;
            expect_empty(reply, |r| matches!(r, Reply::Authed))?;
        }
        Ok(())
    }

    /// A version-2 call: negotiates first when needed.
    fn call_v2(&mut self, request: Request<&[u8]>) -> Result<Reply> {
        self.ensure_v2()?;
        self.call(request)
    }

    /// Presents an API key (AUTH): its scopes govern this connection, and
    /// the key is presented again on every new one.
    ///
    /// # Errors
    /// [`Error::Server`] with 401 for a key the server does not accept
    /// (the key is then forgotten), or any other [`Error`].
    pub fn auth(&mut self, key: &str) -> Result<()> {
        self.api_key = None;
        self.ensure_v2()?;
        let reply = self.call(Request::Auth(key.as_bytes()))?;
        expect_empty(reply, |r| matches!(r, Reply::Authed))?;
        self.api_key = Some(ApiKey(key.as_bytes().to_vec()));
        Ok(())
    }

    /// Shortens `url` with `options` (SHORTEN2; `options.url` is ignored),
    /// returning the new link.
    ///
    /// # Errors
    /// [`Error::Server`]: 409 alias taken, 422 invalid URL, 401/403 without
    /// the right key, ...; [`Error::Protocol`] for options that do not
    /// encode (an invalid alias or status); any other [`Error`].
    pub fn shorten_with(&mut self, url: &str, options: &LinkOptions<'_>) -> Result<Link> {
        let mut options = options.clone();
        options.url = url;
        let body = options.to_vec()?;
        let reply = self.call_v2(Request::Shorten2(&body))?;
        expect_link(reply, |r| match r {
            Reply::Shortened2(body) => Ok(body),
            other => Err(other),
        })
    }

    /// Changes a link, returning it as it is now.
    ///
    /// # Errors
    /// [`Error::Server`] with 404 when there is no such link, 403 when it is
    /// not the key's; any other [`Error`].
    pub fn update(&mut self, code_or_short_url: &str, patch: &LinkPatch<'_>) -> Result<Link> {
        let body = patch.to_vec()?;
        let code = code_of(code_or_short_url).as_bytes();
        let reply = self.call_v2(Request::update(code, &body))?;
        expect_link(reply, |r| match r {
            Reply::Updated(body) => Ok(body),
            other => Err(other),
        })
    }

    /// Deletes a link.
    ///
    /// # Errors
    /// [`Error::Server`] with 404 when there is no such link; any other
    /// [`Error`].
    pub fn delete(&mut self, code_or_short_url: &str) -> Result<()> {
        let reply = self.call_v2(Request::Delete(code_of(code_or_short_url).as_bytes()))?;
        expect_empty(reply, |r| matches!(r, Reply::Deleted))
    }

    /// A link's description: URL, options, click totals.
    ///
    /// # Errors
    /// [`Error::Server`] with 404 when there is no such link; any other
    /// [`Error`].
    pub fn info(&mut self, code_or_short_url: &str) -> Result<Link> {
        let reply = self.call_v2(Request::Info(code_of(code_or_short_url).as_bytes()))?;
        expect_link(reply, |r| match r {
            Reply::Info(body) => Ok(body),
            other => Err(other),
        })
    }

    /// A link's click statistics over `query`'s range.
    ///
    /// # Errors
    /// [`Error::Server`] with 404 when there is no such link; any other
    /// [`Error`].
    pub fn stats(&mut self, code_or_short_url: &str, query: StatsQuery) -> Result<Stats> {
        let code = code_of(code_or_short_url).as_bytes();
        let reply = self.call_v2(Request::stats(code, query))?;
        expect_stats(reply)
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
