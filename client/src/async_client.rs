//! The async client on tokio (feature `tokio`), built on
//! `shorty_protocol::codec::ClientCodec`.

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use shorty_protocol::codec::{ClientCodec, CodecError};
use shorty_protocol::link::{LinkOptions, LinkPatch, StatsQuery};
use shorty_protocol::{Reply, Request, ServerInfo, PROTOCOL_V1, PROTOCOL_V2};
use tokio::net::{TcpStream, ToSocketAddrs};
use tokio_util::codec::Framed;

use crate::error::{Error, Result};
use crate::link::{Link, Stats};
use crate::options::{code_of, window_full, ApiKey, Options};
use crate::reply::{expect, expect_empty, expect_link, expect_stats, expect_url};

/// An async client holding one connection.
///
/// After a timeout (or any failure of the connection) the connection is
/// dropped: a reply that arrives late could otherwise be taken for the
/// answer to the next request. Calls then fail with [`Error::Closed`]
/// until [`reconnect`](Self::reconnect).
///
/// # Examples
/// ```no_run
/// # async fn demo() -> Result<(), shorty_client::Error> {
/// let mut client = shorty_client::AsyncClient::connect("127.0.0.1:9000").await?;
/// let short = client.shorten("https://example.com/").await?;
/// println!("{short}");
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct AsyncClient {
    framed: Option<Framed<TcpStream, ClientCodec>>,
    addrs: Vec<std::net::SocketAddr>,
    options: Options,
    /// Presented (AUTH) on every new connection before a version-2 call.
    api_key: Option<ApiKey>,
    /// Whether HELLO 2 was answered with version 2 on this connection.
    negotiated: bool,
}

impl From<CodecError> for Error {
    fn from(err: CodecError) -> Self {
        match err {
            CodecError::Io(err) => Error::Io(err),
            CodecError::Protocol(err) => Error::Protocol(err),
            other => Error::UnexpectedReply(other.to_string()),
        }
    }
}

async fn within<T>(
    limit: Option<Duration>,
    f: impl std::future::Future<Output = Result<T>>,
) -> Result<T> {
    match limit {
        Some(limit) => tokio::time::timeout(limit, f)
            .await
            .map_err(|_| Error::Timeout(limit))?,
        None => f.await,
    }
}

impl AsyncClient {
    /// Connects with default [`Options`].
    ///
    /// # Errors
    /// [`Error::Io`] when the connection fails or times out.
    pub async fn connect(addr: impl ToSocketAddrs) -> Result<Self> {
        Self::connect_with(addr, Options::default()).await
    }

    /// Connects with `options`.
    ///
    /// # Errors
    /// [`Error::Io`] when the connection fails or times out.
    pub async fn connect_with(addr: impl ToSocketAddrs, options: Options) -> Result<Self> {
        let addrs: Vec<std::net::SocketAddr> = tokio::net::lookup_host(addr).await?.collect();
        let mut client = Self {
            framed: None,
            addrs,
            options,
            api_key: None,
            negotiated: false,
        };
        client.reconnect().await?;
        Ok(client)
    }

    /// Opens a new connection (after a timeout or a failure dropped the
    /// last one).
    ///
    /// # Errors
    /// [`Error::Io`] or [`Error::Timeout`] when connecting fails.
    pub async fn reconnect(&mut self) -> Result<()> {
        let addrs = self.addrs.clone();
        let stream = within(Some(self.options.connect_timeout), async {
            Ok(TcpStream::connect(&addrs[..]).await?)
        })
        .await?;
        stream.set_nodelay(true)?;
        self.negotiated = false;
        self.framed = Some(Framed::new(
            stream,
            ClientCodec::with_max_frame_len(self.options.max_frame_len),
        ));
        Ok(())
    }

    /// Sends `requests` together and reads one reply each, in order.
    ///
    /// # Errors
    /// For the connection as a whole.
    pub async fn batch<B: AsRef<[u8]>>(&mut self, requests: Vec<Request<B>>) -> Result<Vec<Reply>> {
        let Some(framed) = self.framed.as_mut() else {
            return Err(Error::Closed);
        };
        let (read_timeout, write_timeout) = (self.options.read_timeout, self.options.write_timeout);
        let result = async {
            let mut replies = Vec::with_capacity(requests.len());
            let mut requests = requests.into_iter().peekable();
            // In windows, reading replies between them (`window_full`).
            while requests.peek().is_some() {
                let (mut taken, mut bytes) = (0, 0);
                within(write_timeout, async {
                    while !window_full(taken, bytes) {
                        let Some(request) = requests.next() else {
                            break;
                        };
                        bytes += request.frame_len();
                        framed.feed(request).await?;
                        taken += 1;
                    }
                    SinkExt::<Request<B>>::flush(framed).await?;
                    Ok(())
                })
                .await?;
                within(read_timeout, async {
                    for _ in 0..taken {
                        match framed.next().await {
                            Some(reply) => replies.push(reply?),
                            None => return Err(Error::Closed),
                        }
                    }
                    Ok(())
                })
                .await?;
            }
            Ok(replies)
        }
        .await;
        if result.is_err() {
            // Never reuse a connection whose replies may still arrive.
            self.framed = None;
        }
        result
    }

    async fn call(&mut self, request: Request<&[u8]>) -> Result<Reply> {
        self.batch(vec![request]).await?.pop().ok_or(Error::Closed)
    }

    /// The server's protocol version and limits.
    ///
    /// # Errors
    /// Any [`Error`].
    pub async fn hello(&mut self) -> Result<ServerInfo> {
        let reply = self.call(Request::hello(PROTOCOL_V1)).await?;
        expect(reply, |r| match r {
            Reply::Hello(info) => Ok(info),
            other => Err(other),
        })
    }

    /// Negotiates protocol version 2 (HELLO 2), returning what the server
    /// answered: `info.version` is 1 when it speaks only version 1. The
    /// version-2 calls do this themselves.
    ///
    /// # Errors
    /// Any [`Error`].
    pub async fn hello_v2(&mut self) -> Result<ServerInfo> {
        let reply = self.call(Request::hello(PROTOCOL_V2)).await?;
        let info = expect(reply, |r| match r {
            Reply::Hello(info) => Ok(info),
            other => Err(other),
        })?;
        if let Some(framed) = self.framed.as_mut() {
            framed.codec_mut().set_version(info.version);
            self.negotiated = info.version >= PROTOCOL_V2;
        }
        Ok(info)
    }

    async fn ensure_v2(&mut self) -> Result<()> {
        if self.framed.is_none() {
            return Err(Error::Closed);
        }
        if self.negotiated {
            return Ok(());
        }
        let info = self.hello_v2().await?;
        if info.version < PROTOCOL_V2 {
            return Err(Error::VersionUnsupported {
                wanted: PROTOCOL_V2,
                server: info.version,
            });
        }
        if let Some(ApiKey(key)) = self.api_key.clone() {
            let reply = self.call(Request::Auth(&key)).await?;
            expect_empty(reply, |r| matches!(r, Reply::Authed))?;
        }
        Ok(())
    }

    async fn call_v2(&mut self, request: Request<&[u8]>) -> Result<Reply> {
        self.ensure_v2().await?;
        self.call(request).await
    }

    /// Presents an API key (AUTH); it is presented again after a
    /// [`reconnect`](Self::reconnect).
    ///
    /// # Errors
    /// [`Error::Server`] with 401 for a key the server does not accept (the
    /// key is then forgotten), or any other [`Error`].
    pub async fn auth(&mut self, key: &str) -> Result<()> {
        self.api_key = None;
        self.ensure_v2().await?;
        let reply = self.call(Request::Auth(key.as_bytes())).await?;
        expect_empty(reply, |r| matches!(r, Reply::Authed))?;
        self.api_key = Some(ApiKey(key.as_bytes().to_vec()));
        Ok(())
    }

    /// Shortens `url` with `options` (SHORTEN2; `options.url` is ignored).
    ///
    /// # Errors
    /// As [`Client::shorten_with`](crate::Client::shorten_with).
    pub async fn shorten_with(&mut self, url: &str, options: &LinkOptions<'_>) -> Result<Link> {
        let mut options = options.clone();
        options.url = url;
        let body = options.to_vec()?;
        let reply = self.call_v2(Request::Shorten2(&body)).await?;
        expect_link(reply, |r| match r {
            Reply::Shortened2(body) => Ok(body),
            other => Err(other),
        })
    }

    /// Changes a link, returning it as it is now.
    ///
    /// # Errors
    /// As [`Client::update`](crate::Client::update).
    pub async fn update(&mut self, code_or_short_url: &str, patch: &LinkPatch<'_>) -> Result<Link> {
        let body = patch.to_vec()?;
        let code = code_of(code_or_short_url).as_bytes();
        let reply = self.call_v2(Request::update(code, &body)).await?;
        expect_link(reply, |r| match r {
            Reply::Updated(body) => Ok(body),
            other => Err(other),
        })
    }

    /// Deletes a link.
    ///
    /// # Errors
    /// As [`Client::delete`](crate::Client::delete).
    pub async fn delete(&mut self, code_or_short_url: &str) -> Result<()> {
        let code = code_of(code_or_short_url).as_bytes();
        let reply = self.call_v2(Request::Delete(code)).await?;
        expect_empty(reply, |r| matches!(r, Reply::Deleted))
    }

    /// A link's description.
    ///
    /// # Errors
    /// As [`Client::info`](crate::Client::info).
    pub async fn info(&mut self, code_or_short_url: &str) -> Result<Link> {
        let code = code_of(code_or_short_url).as_bytes();
        let reply = self.call_v2(Request::Info(code)).await?;
        expect_link(reply, |r| match r {
            Reply::Info(body) => Ok(body),
            other => Err(other),
        })
    }

    /// A link's click statistics.
    ///
    /// # Errors
    /// As [`Client::stats`](crate::Client::stats).
    pub async fn stats(&mut self, code_or_short_url: &str, query: StatsQuery) -> Result<Stats> {
        let code = code_of(code_or_short_url).as_bytes();
        let reply = self.call_v2(Request::stats(code, query)).await?;
        expect_stats(reply)
    }

    /// Shortens `url`.
    ///
    /// # Errors
    /// [`Error::Server`] when refused, or any other [`Error`].
    pub async fn shorten(&mut self, url: &str) -> Result<String> {
        let reply = self.call(Request::Shorten(url.as_bytes())).await?;
        expect_url(reply, |r| match r {
            Reply::Shortened(short) => Ok(short),
            other => Err(other),
        })
    }

    /// The long URL behind a code or short URL.
    ///
    /// # Errors
    /// [`Error::Server`] with code 404 when there is none.
    pub async fn resolve(&mut self, code_or_short_url: &str) -> Result<String> {
        let reply = self
            .call(Request::Resolve(code_of(code_or_short_url).as_bytes()))
            .await?;
        expect_url(reply, |r| match r {
            Reply::Resolved(url) => Ok(url),
            other => Err(other),
        })
    }

    /// Checks the server answers.
    ///
    /// # Errors
    /// Any [`Error`].
    pub async fn ping(&mut self) -> Result<()> {
        let reply = self.call(Request::Ping(b"")).await?;
        expect(reply, |r| match r {
            Reply::Pong(_) => Ok(()),
            other => Err(other),
        })
    }
}
