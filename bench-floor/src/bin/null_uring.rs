//! A null HTTP server on raw io_uring: multishot accept, multishot recv
//! from a registered buffer ring, one send per batch of replies, on a ring
//! set up with `COOP_TASKRUN` + `SINGLE_ISSUER` + `DEFER_TASKRUN`
//! (`--ring coop` drops the last, `--ring plain` all three; `--ring epoll`
//! is `coop` waiting in `epoll_wait` on the ring, as tokio-uring does).

use std::io;
use std::os::fd::{AsRawFd, RawFd};

use shorty_bench_floor::ring::{Completion, Mode, Ring};
use shorty_bench_floor::{replies, Args, Heads};

/// What a completion completes: the low bits of its tag (the descriptor is
/// above them).
const ACCEPT: u64 = 0;
const RECV: u64 = 1;
const SEND: u64 = 2;
const SHUTDOWN: u64 = 3;
const CLOSE: u64 = 4;
const KIND_BITS: u32 = 3;

fn tag(fd: RawFd, kind: u64) -> u64 {
    (u64::from(fd.unsigned_abs()) << KIND_BITS) | kind
}

#[derive(Default)]
struct Conn {
    heads: Heads,
    /// Replies not yet handed to a send.
    out: Vec<u8>,
    /// A spare buffer for the next send (no allocation per send).
    spare: Vec<u8>,
    sending: bool,
    recv_armed: bool,
    /// Read no more: reply what is owed, then close.
    closing: bool,
    shut: bool,
}

/// The connection on `fd` (a free function: the ring is borrowed beside it).
fn conn_of(conns: &mut [Option<Conn>], fd: RawFd) -> Option<&mut Conn> {
    conns.get_mut(usize::try_from(fd).ok()?)?.as_mut()
}

struct Server {
    ring: Ring,
    listener: RawFd,
    /// Connections by descriptor (a descriptor is reused only after its
    /// close completes, when no operation on it is left in flight).
    conns: Vec<Option<Conn>>,
}

impl Server {
    fn on_completion(&mut self, c: Completion) -> io::Result<()> {
        let fd = RawFd::try_from(c.user_data >> KIND_BITS).map_err(io::Error::other)?;
        match c.user_data & ((1 << KIND_BITS) - 1) {
            ACCEPT => {
                if c.result >= 0 {
                    let conn = c.result;
                    let i = usize::try_from(conn).map_err(io::Error::other)?;
                    if self.conns.len() <= i {
                        self.conns.resize_with(i + 1, || None);
                    }
                    self.conns[i] = Some(Conn {
                        recv_armed: true,
                        ..Conn::default()
                    });
                    self.ring.recv_multi(conn, tag(conn, RECV))?;
                }
                if !c.more {
                    self.ring
                        .accept_multi(self.listener, tag(self.listener, ACCEPT))?;
                }
            }
            RECV => {
                let Some(conn) = conn_of(&mut self.conns, fd) else {
                    return Ok(());
                };
                if let Some(bid) = c.buffer {
                    let len = usize::try_from(c.result).unwrap_or(0);
                    if !conn.closing {
                        match conn.heads.feed(self.ring.buffer(bid, len)) {
                            Ok(fed) => {
                                replies(fed, &mut conn.out);
                                conn.closing |= fed.close;
                            }
                            Err(_) => conn.closing = true,
                        }
                    }
                    self.ring.recycle(bid);
                } else if c.result != -libc::ENOBUFS {
                    // End of stream (0) or an error: nothing more to read.
                    conn.closing = true;
                }
                if !c.more {
                    conn.recv_armed = false;
                    if !conn.closing {
                        conn.recv_armed = true;
                        self.ring.recv_multi(fd, tag(fd, RECV))?;
                    }
                }
                self.flush(fd)?;
            }
            SEND => {
                let mut sent = self.ring.take_sent(c.user_data).unwrap_or_default();
                let Some(conn) = conn_of(&mut self.conns, fd) else {
                    return Ok(());
                };
                conn.sending = false;
                match usize::try_from(c.result) {
                    Ok(n) if n < sent.len() => {
                        // A short send: the rest goes first.
                        sent.drain(..n);
                        sent.append(&mut conn.out);
                        conn.out = sent;
                    }
                    Ok(_) => {
                        sent.clear();
                        conn.spare = sent;
                    }
                    Err(_) => conn.closing = true,
                }
                self.flush(fd)?;
            }
            SHUTDOWN => {}
            CLOSE => {
                if let Some(slot) = usize::try_from(fd).ok().and_then(|i| self.conns.get_mut(i)) {
                    *slot = None;
                }
            }
            _ => {}
        }
        Ok(())
    }

    /// Sends what is owed; once a closing connection owes nothing, ends its
    /// receive (shutdown) and then closes it.
    fn flush(&mut self, fd: RawFd) -> io::Result<()> {
        let Some(conn) = conn_of(&mut self.conns, fd) else {
            return Ok(());
        };
        if conn.sending {
            return Ok(());
        }
        if !conn.out.is_empty() {
            let data = std::mem::replace(&mut conn.out, std::mem::take(&mut conn.spare));
            conn.sending = true;
            return self.ring.send(fd, data, tag(fd, SEND));
        }
        if conn.closing {
            if conn.recv_armed {
                if !conn.shut {
                    conn.shut = true;
                    self.ring.shutdown(fd, tag(fd, SHUTDOWN))?;
                }
            } else {
                // No operation on it is in flight: the descriptor may go.
                conn.sending = true; // nothing more is sent or closed twice
                self.ring.close(fd, tag(fd, CLOSE))?;
            }
        }
        Ok(())
    }
}

fn main() -> io::Result<()> {
    let args = Args::parse();
    let mode = match args.ring.as_deref() {
        None => Mode::Defer,
        Some(s) => Mode::parse(s).ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                "--ring: defer, coop, epoll or plain",
            )
        })?,
    };
    let listener = args.bind()?;
    let mut server = Server {
        ring: Ring::new(mode, 1024, 256, 4096)?,
        listener: listener.as_raw_fd(),
        conns: Vec::new(),
    };
    server
        .ring
        .accept_multi(server.listener, tag(server.listener, ACCEPT))?;
    let mut completions = Vec::new();
    loop {
        server.ring.wait(&mut completions)?;
        for c in completions.drain(..) {
            server.on_completion(c)?;
        }
    }
}
