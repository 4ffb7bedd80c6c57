//! One core: its glommio executor and listeners.

use std::cell::{Cell, RefCell};
use std::future::Future;
use std::io;
use std::os::fd::{FromRawFd, IntoRawFd};
use std::rc::Rc;
use std::time::Duration;

use glommio::{LocalExecutorBuilder, Placement};
use shorty_runtime::driver::core::{run_core, CoreIo};
use shorty_runtime::driver::{Listener, Runtime};
use shorty_runtime::server::Worker;

use crate::connection::{GlommioConn, READ_BUFFER};
use crate::log_reader::Reader;
use crate::log_writer::Segment;

/// Registered I/O memory per executor. glommio locks it; its default
/// (10 MiB) times the cores exceeds the usual 8 MiB `RLIMIT_MEMLOCK`, and
/// Shorty's I/O (socket reads into its own buffer, log batches) needs
/// little of it.
const IO_MEMORY: usize = 512 * 1024;

/// Submission queue depth of each of the executor's rings. glommio queues
/// what does not fit, so it need not match the connection count.
const RING_DEPTH: usize = 1024;

/// Runs one core until shutdown. Called on the core's pinned thread, so the
/// executor itself is left unbound.
pub(crate) fn serve(worker: Worker) -> io::Result<()> {
    let index = worker.context.index;
    let executor = LocalExecutorBuilder::new(Placement::Unbound)
        .name(&format!("shorty-core-{index}"))
        .io_memory(IO_MEMORY)
        .ring_depth(RING_DEPTH)
        .make()
        .map_err(|err| {
            let limit = rlimit::getrlimit(rlimit::Resource::MEMLOCK).map_or_else(
                |_| "unknown".into(),
                |(soft, hard)| format!("{soft} (hard {hard})"),
            );
            io::Error::other(format!(
                "cannot create the glommio executor: {err}. glommio locks memory for io_uring \
                 ({IO_MEMORY} bytes of I/O memory per core plus its rings); RLIMIT_MEMLOCK is \
                 {limit} bytes. Raise it (`ulimit -l`, or LimitMEMLOCK= in a systemd unit) or \
                 run fewer --threads"
            ))
        })?;
    let Worker {
        context,
        listeners,
        glommio_multishot_accept: multishot,
        ..
    } = worker;
    executor.run(async move {
        let buffer = Rc::new(RefCell::new(vec![0u8; READ_BUFFER]));
        let adopt = |l| adopt(l, buffer.clone(), multishot);
        let io = CoreIo {
            framed: adopt(listeners.framed)?,
            http: listeners.http.map(adopt).transpose()?,
            admin: listeners.admin.map(adopt).transpose()?,
            writer: Segment::default(),
            reader: Reader::new(context.read_handles),
        };
        run_core(GlommioRuntime, context, io).await
    })
}

/// Hands a listener bound by `shorty_runtime` (SO_REUSEPORT, the kernel's
/// `somaxconn` backlog) to glommio. Hand-made rather than
/// `glommio::net::TcpListener::bind` because that fixes the backlog at 1024.
fn adopt(
    listener: std::net::TcpListener,
    buffer: Rc<RefCell<Vec<u8>>>,
    multishot: bool,
) -> io::Result<GlommioListener> {
    // SAFETY: `into_raw_fd` hands over sole ownership of a valid socket that
    // is bound and listening, which is what `from_raw_fd` requires.
    #[allow(unsafe_code)]
    let listener = unsafe { glommio::net::TcpListener::from_raw_fd(listener.into_raw_fd()) };
    Ok(GlommioListener {
        inner: listener,
        buffer,
        multishot: Cell::new(multishot),
        ahead: Cell::new(true),
    })
}

/// How long `io_turn` waits for the listener's poll when no connection is
/// waiting (the poll then never completes): a refusal is delayed by at
/// most this.
const IO_TURN_AT_MOST: Duration = Duration::from_millis(1);

#[derive(Clone, Copy)]
struct GlommioRuntime;

impl Runtime for GlommioRuntime {
    fn sleep(&self, duration: Duration) -> impl Future<Output = ()> {
        glommio::timer::sleep(duration)
    }

    fn spawn(&self, task: impl Future<Output = ()> + 'static) {
        glommio::spawn_local(task).detach();
    }
}

/// A core's listener: one multishot accept (`--glommio-multishot-accept
/// on`, vendored glommio patch 5), or an `accept4` per connection.
///
/// The multishot accept is the same as shorty-uring's
/// (`server-uring/src/accept.rs`), with the same back-pressure: at the
/// connection limit (`Listener::pause`) it is cancelled and the listener
/// accepts one connection per call until no client is queued
/// (`Listener::resume`); what it took before the cancel landed comes out
/// first (`Listener::accepted_ahead`). Connections it took and never handed
/// out are closed by glommio when it ends after the listener is dropped.
struct GlommioListener {
    inner: glommio::net::TcpListener,
    /// The core's read buffer, for each connection.
    buffer: Rc<RefCell<Vec<u8>>>,
    /// Multishot accept is on, and the kernel has not refused it.
    multishot: Cell<bool>,
    /// Below the connection limit: connections may be taken ahead (a
    /// multishot accept armed). `Listener::pause` clears it.
    ahead: Cell<bool>,
}

impl GlommioListener {
    /// The next connection from the multishot accept, arming one if none is
    /// and `arm`; `Ok(None)` when none is armed and `arm` is false, or when
    /// the kernel refuses it (then never again on this listener).
    async fn multishot(&self, arm: bool) -> io::Result<Option<GlommioConn>> {
        match self
            .inner
            .multishot_accept(arm)
            .await
            .map_err(io::Error::from)
        {
            Ok(accepted) => Ok(accepted.map(|a| GlommioConn::new(a, self.buffer.clone()))),
            Err(e) if e.kind() == io::ErrorKind::InvalidInput => {
                tracing::warn!(
                    "this kernel refuses io_uring multishot accept (Linux 5.19 or newer has \
                     it): accepting with a system call per connection"
                );
                self.multishot.set(false);
                Ok(None)
            }
            Err(e) => Err(e),
        }
    }
}

impl Listener for GlommioListener {
    type Socket = GlommioConn;

    async fn accept(&self) -> io::Result<GlommioConn> {
        // Paused: what the cancelled multishot accept still holds first,
        // then an `accept4` per call.
        if self.multishot.get() {
            if let Some(conn) = self.multishot(self.ahead.get()).await? {
                return Ok(conn);
            }
        }
        let accepted = self.inner.shared_accept().await.map_err(io::Error::from)?;
        Ok(GlommioConn::new(accepted, self.buffer.clone()))
    }

    /// glommio's accept returns at once when a connection waits (one
    /// `accept4`), and a multishot accept's burst comes out without a
    /// reactor turn between connections: so connections accepted in a burst
    /// never waited for the reactor. A `POLL_ADD` on the listener, through
    /// the ring, is a round trip in which what the earlier connections
    /// submitted (the poll that sees a peer's reset) is submitted and
    /// completed first. When no other connection waits, the listener is not
    /// readable: a millisecond's timer, through the same reactor turn, ends
    /// the wait instead.
    async fn io_turn(&self) {
        let readable = async {
            let _ = self.inner.readable().await;
        };
        futures_lite::future::or(readable, glommio::timer::sleep(IO_TURN_AT_MOST)).await;
    }

    /// Cancels the multishot accept, and arms none until `resume`.
    fn pause(&self) {
        self.ahead.set(false);
        self.inner.cancel_multishot_accept();
    }

    fn resume(&self) {
        self.ahead.set(true);
    }

    async fn accepted_ahead(&self) -> Option<GlommioConn> {
        self.multishot(false).await.ok().flatten()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Connections the multishot accept took but never handed out are
    /// closed when the listener is dropped, so their clients learn it (end
    /// of stream or a reset) instead of waiting for the process to exit.
    /// glommio closes them when the cancelled operation's last completion
    /// drops its source; a source that leaked them would leave each
    /// client's read to time out.
    #[test]
    fn a_dropped_listener_closes_the_connections_it_did_not_hand_out() {
        let std_listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = std_listener.local_addr().unwrap();
        let executor = LocalExecutorBuilder::new(Placement::Unbound)
            .io_memory(IO_MEMORY)
            .make()
            .expect("a glommio executor");
        let clients = executor.run(async move {
            let buffer = Rc::new(RefCell::new(vec![0u8; READ_BUFFER]));
            let listener = adopt(std_listener, buffer, true).unwrap();
            let first = std::net::TcpStream::connect(addr).unwrap();
            // Arms the multishot accept; hands out the first connection.
            let conn = listener.accept().await.unwrap();
            let clients: Vec<_> = (0..3)
                .map(|_| std::net::TcpStream::connect(addr).unwrap())
                .collect();
            // Until the accept's completions for them are in.
            for _ in 0..20 {
                glommio::timer::sleep(Duration::from_millis(1)).await;
            }
            drop(listener);
            drop(conn);
            // Turns of the reactor, for the cancel to land.
            for _ in 0..20 {
                glommio::timer::sleep(Duration::from_millis(1)).await;
            }
            drop(first);
            clients
        });
        shorty_conformance::wire::assert_closed_by_peer(clients);
    }
}
