//! A small blocking client over `std::net`, speaking through
//! `shorty-protocol`, for the suite's own use.

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use shorty_protocol::frame::{FrameDecoder, Status};
use shorty_protocol::{ErrorCode, Reply, Request};

/// How long any single read may block before the test fails.
const READ_TIMEOUT: Duration = Duration::from_secs(20);

/// What a read ended with.
#[derive(Debug, PartialEq, Eq)]
pub enum Read2 {
    /// A whole frame's payload.
    Frame(Bytes),
    /// The server closed the connection.
    Closed,
    /// Nothing arrived in time.
    TimedOut,
}

/// One client connection.
pub struct Conn {
    stream: TcpStream,
    buf: BytesMut,
}

impl Conn {
    /// Connects to `addr`.
    pub fn connect(addr: SocketAddr) -> Conn {
        let stream = TcpStream::connect(addr).unwrap_or_else(|e| panic!("connect {addr}: {e}"));
        stream.set_read_timeout(Some(READ_TIMEOUT)).unwrap();
        stream.set_nodelay(true).unwrap();
        Conn {
            stream,
            buf: BytesMut::new(),
        }
    }

    /// Connects to `addr`, or `None` when nothing listens there (a server
    /// that was just killed).
    pub fn try_connect(addr: SocketAddr) -> Option<Conn> {
        let stream = TcpStream::connect(addr).ok()?;
        stream.set_read_timeout(Some(READ_TIMEOUT)).ok()?;
        stream.set_nodelay(true).ok()?;
        Some(Conn {
            stream,
            buf: BytesMut::new(),
        })
    }

    /// Writes raw bytes, saying whether the peer took them (it may have
    /// died).
    ///
    /// # Errors
    /// The write failed.
    pub fn try_send_raw(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.stream.write_all(bytes)
    }

    /// Writes raw bytes.
    pub fn send_raw(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).expect("write");
    }

    /// Writes one request.
    pub fn send(&mut self, request: Request<&[u8]>) {
        let mut wire = Vec::new();
        request.encode_frame(&mut wire).unwrap();
        self.send_raw(&wire);
    }

    /// Reads one frame, waiting at most `timeout`.
    pub fn read_frame_within(&mut self, timeout: Duration) -> Read2 {
        self.stream.set_read_timeout(Some(timeout)).unwrap();
        let result = loop {
            match FrameDecoder::with_max_frame_len(usize::MAX)
                .decode(&mut self.buf)
                .unwrap()
            {
                Status::Complete(payload) => break Read2::Frame(payload),
                Status::Partial { .. } => {}
            }
            let mut chunk = [0u8; 64 * 1024];
            match self.stream.read(&mut chunk) {
                Ok(0) => break Read2::Closed,
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                    break Read2::TimedOut
                }
                Err(e) if e.kind() == ErrorKind::ConnectionReset => break Read2::Closed,
                Err(e) => panic!("read: {e}"),
            }
        };
        self.stream.set_read_timeout(Some(READ_TIMEOUT)).unwrap();
        result
    }

    /// Reads one frame's payload; panics if the server closes or stalls.
    pub fn read_payload(&mut self) -> Bytes {
        match self.read_frame_within(READ_TIMEOUT) {
            Read2::Frame(payload) => payload,
            other => panic!("expected a frame, got {other:?}"),
        }
    }

    /// Reads one typed reply.
    pub fn reply(&mut self) -> Reply {
        Reply::decode_payload(self.read_payload()).expect("a valid reply")
    }

    /// Reads one reply and expects it to be an error with `code`.
    pub fn expect_error(&mut self, code: ErrorCode) -> String {
        let reply = self.reply();
        match reply.as_error() {
            Some((got, message)) if got == code => message.to_owned(),
            _ => panic!("expected error {code}, got {reply:?}"),
        }
    }

    /// SHORTEN, returning the short URL.
    pub fn shorten(&mut self, url: &str) -> String {
        self.send(Request::Shorten(url.as_bytes()));
        match self.reply() {
            Reply::Shortened(short) => String::from_utf8(short.to_vec()).unwrap(),
            other => panic!("SHORTEN {url}: {other:?}"),
        }
    }

    /// RESOLVE, returning the reply.
    pub fn resolve(&mut self, code: &str) -> Reply {
        self.send(Request::Resolve(code.as_bytes()));
        self.reply()
    }

    /// `true` once the server has closed the connection (reads EOF within
    /// `timeout`).
    pub fn is_closed_within(&mut self, timeout: Duration) -> bool {
        matches!(self.read_frame_within(timeout), Read2::Closed)
    }

    /// Half-closes the sending side, as the seed's client does by closing.
    pub fn shutdown_write(&self) {
        let _ = self.stream.shutdown(std::net::Shutdown::Write);
    }
}

/// The code at the end of a short URL.
pub fn code_of(short_url: &str) -> &str {
    short_url.rsplit('/').next().unwrap_or_default()
}

/// `copies` RESOLVE frames of `code`, back to back: a peer that sends
/// requests and never reads the answers.
pub fn resolve_flood(code: &str, copies: usize) -> Vec<u8> {
    let mut request = Vec::new();
    Request::Resolve(code.as_bytes())
        .encode_frame(&mut request)
        .expect("a code fits a frame");
    request.repeat(copies)
}

/// Asserts that the server closed (or reset) each of `clients` within 5 s,
/// rather than leaving it open and unanswered.
pub fn assert_closed_by_peer(clients: Vec<TcpStream>) {
    for mut client in clients {
        client
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        let mut byte = [0; 1];
        let read = loop {
            match client.read(&mut byte) {
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                other => break other,
            }
        };
        match read {
            Ok(0) => {}
            Err(e) if e.kind() == ErrorKind::ConnectionReset => {}
            other => panic!("an accepted connection was left open: {other:?}"),
        }
    }
}

/// Pipelines `count` PINGs of `body_len` bytes on `peer` from a thread of
/// its own (the server stops reading while its output is at the cap, so
/// the sending must not wait for the reading), reads nothing for `late`,
/// then reads every reply. Returns when all have arrived, and how long
/// that took from the first read; panics, saying how many arrived, if a
/// read fails or the connection closes first.
pub fn pipeline_pings_and_read_late(
    peer: &mut TcpStream,
    count: usize,
    body_len: usize,
    late: Duration,
) -> Duration {
    let body = vec![b'p'; body_len];
    let mut wire = Vec::new();
    let mut pong = Vec::new();
    Request::Ping(&body[..]).encode_frame(&mut wire).unwrap();
    Reply::Pong(Bytes::from(body))
        .encode_frame(&mut pong)
        .unwrap();
    let wire = wire.repeat(count);
    let want = count * pong.len();
    let mut writer = peer.try_clone().unwrap();
    let sender = std::thread::spawn(move || writer.write_all(&wire).unwrap());
    std::thread::sleep(late);
    peer.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let started = std::time::Instant::now();
    let (mut got, mut buf) = (0, vec![0u8; 65536]);
    while got < want {
        match peer.read(&mut buf) {
            Ok(0) => panic!("closed after {got} of {want} reply bytes"),
            Ok(n) => got += n,
            Err(err) => panic!(
                "{got} of {want} reply bytes after {:?}: {err}",
                started.elapsed()
            ),
        }
    }
    sender.join().unwrap();
    started.elapsed()
}

/// A connection to `addr` with a receive buffer of `size` bytes (the
/// kernel doubles it): a small window the server's sends fill at once.
pub fn connect_with_recv_buffer(addr: SocketAddr, size: usize) -> TcpStream {
    let socket = socket2::Socket::new(
        socket2::Domain::IPV4,
        socket2::Type::STREAM,
        Some(socket2::Protocol::TCP),
    )
    .unwrap();
    socket.set_recv_buffer_size(size).unwrap();
    socket.connect(&addr.into()).unwrap();
    socket.into()
}
