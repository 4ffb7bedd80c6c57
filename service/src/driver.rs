//! The per-core event loops both backends run, written once against small
//! traits so that each backend only supplies its runtime's I/O calls.
//!
//! Runtime-agnostic: only waker-based primitives (`tokio::sync::Notify`,
//! which needs no tokio runtime, and `futures-lite` combinators); timers
//! and spawning come from the backend through [`Runtime`].
//!
//! - [`run_core`]: accept loop, connection slots, shutdown, drain.
//! - [`serve_connection`]: one connection's read → handle → settle → write.
//! - [`run_log_writer`]: one core's group-commit task.

use std::cell::{Cell, RefCell};
use std::future::Future;
use std::io;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_lite::future;
use shorty_protocol::{ErrorCode, Reply};
use tokio::sync::Notify;

use crate::connection::{ReadLimit, ReadTimer, ReplyQueue};
use crate::handler::Shard;
use crate::index::Index;
use crate::log::WriteBatch;
use crate::server::ShutdownSignal;
use crate::service::{ConnectionSlot, Service};

/// Bytes of free space guaranteed in a connection's buffer before each read.
/// Small, because every open connection holds one buffer (10,000 idle
/// clients: 40 MiB) and typical frames are ~70 bytes; it grows by this much
/// whenever less than half is free, so large frames still arrive in few
/// reads.
pub const READ_CHUNK: usize = 4 * 1024;

/// How often a core at `--max-connections` checks whether a slot freed
/// (slots free on any core, so there is no local event to wait for).
const SLOT_POLL: Duration = Duration::from_millis(2);

/// How long to back off after a failed accept (out of descriptors, or the
/// peer gave up before accept) instead of spinning.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(10);

/// What a listener speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// Length-prefixed frames: the Shorty protocol.
    Framed,
    /// HTTP/1.1: the redirect front.
    Http,
}

/// The timers and task spawning of a backend's runtime.
pub trait Runtime: Clone + 'static {
    /// Completes after `duration`.
    fn sleep(&self, duration: Duration) -> impl Future<Output = ()>;
    /// Runs `task` on this core, detached.
    fn spawn(&self, task: impl Future<Output = ()> + 'static);
}

/// A core's listener.
pub trait Listener {
    /// The connection type it accepts.
    type Conn: Conn + 'static;
    /// Accepts one connection.
    fn accept(&self) -> impl Future<Output = io::Result<Self::Conn>>;
}

/// One client connection's byte stream.
pub trait Conn {
    /// Reads into the spare capacity of `buf` (appending; the caller
    /// guarantees some), returning the buffer and the bytes read, 0 at end
    /// of stream. Owned-buffer style, as io_uring needs. If the future is
    /// dropped before completing, the connection is closed without further
    /// reads (an abandoned read may still consume bytes).
    fn read(&mut self, buf: Vec<u8>) -> impl Future<Output = (io::Result<usize>, Vec<u8>)>;
    /// Writes all of `bytes`.
    fn write_all(&mut self, bytes: Bytes) -> impl Future<Output = io::Result<()>>;
    /// Closes the connection, both directions, so any read still pending
    /// completes and its resources are freed.
    fn close(&mut self) -> impl Future<Output = ()>;
}

/// A core's current log segment, written through the backend's file API.
pub trait SegmentFile: Sized {
    /// Writes (and, if `batch.sync`, syncs) one batch, opening or creating
    /// the segment it names as needed.
    fn write_batch(
        slot: &mut Option<Self>,
        batch: &WriteBatch,
    ) -> impl Future<Output = io::Result<()>>;
}

/// The state one core's tasks share. Single-threaded: `Rc`, `RefCell` and
/// `Cell`; no borrow is held across an `.await`.
pub struct CoreState {
    /// The shared service (the shard's own, held outside the `RefCell` so
    /// configuration and limits are read without borrowing the shard).
    service: Arc<Service>,
    /// The core's shard.
    pub shard: RefCell<Shard<Index>>,
    /// Connections → log writer: records are waiting for a batch.
    log_work: Notify,
    /// Log writer → connections: a batch settled, release replies.
    settled: Notify,
    /// Connections open on this core, and a wake-up when it drops to 0.
    open: Cell<usize>,
    drained: Notify,
    shutdown: ShutdownSignal,
}

impl CoreState {
    /// State for a core running `shard`.
    pub fn new(shard: Shard<Index>, shutdown: ShutdownSignal) -> Rc<Self> {
        Rc::new(Self {
            service: shard.service().clone(),
            shard: RefCell::new(shard),
            log_work: Notify::new(),
            settled: Notify::new(),
            open: Cell::new(0),
            drained: Notify::new(),
            shutdown,
        })
    }
}

/// Counts a connection as open for as long as it lives.
struct OpenGuard<'a>(&'a CoreState);

impl<'a> OpenGuard<'a> {
    fn new(core: &'a CoreState) -> Self {
        core.open.set(core.open.get() + 1);
        Self(core)
    }
}

impl Drop for OpenGuard<'_> {
    fn drop(&mut self) {
        let open = self.0.open.get() - 1;
        self.0.open.set(open);
        if open == 0 {
            self.0.drained.notify_waiters();
        }
    }
}

/// Runs one core: spawns its log writer, accepts until shutdown, then
/// drains its connections (at most `--shutdown-timeout`) and syncs its log
/// if `--sync never`.
///
/// # Errors
/// Only the final sync can fail.
pub async fn run_core<R, L, F>(
    rt: R,
    core: Rc<CoreState>,
    listener: L,
    http: Option<L>,
    index: usize,
) -> io::Result<()>
where
    R: Runtime,
    L: Listener,
    F: SegmentFile + 'static,
{
    rt.spawn(run_log_writer::<F>(core.clone()));
    let framed = accept_loop(&rt, &core, listener, Protocol::Framed);
    let http = async {
        match http {
            Some(listener) => accept_loop(&rt, &core, listener, Protocol::Http).await,
            None => future::pending().await,
        }
    };
    let mut shutdown = core.shutdown.clone();
    // The accept future is dropped only here, at shutdown; a connection an
    // uncancellable accept completes afterwards is closed with the runtime.
    future::or(future::or(framed, http), shutdown.triggered()).await;

    let drained = async {
        loop {
            // Created before the check, so a close in between is not missed.
            let wait = core.drained.notified();
            if core.open.get() == 0 {
                return true;
            }
            wait.await;
        }
    };
    let deadline = async {
        rt.sleep(core.service.config().shutdown_timeout).await;
        false
    };
    if !future::or(drained, deadline).await {
        tracing::warn!(
            thread = index,
            open = core.open.get(),
            "drain deadline passed; closing anyway"
        );
    }
    core.shard.borrow().sync_at_shutdown()?;
    tracing::info!(thread = index, "stopped");
    Ok(())
}

/// Accepts connections for one protocol until dropped (at shutdown).
async fn accept_loop<R: Runtime, L: Listener>(
    rt: &R,
    core: &Rc<CoreState>,
    listener: L,
    protocol: Protocol,
) {
    let slots = core.service.connection_slots();
    // Accept first, then wait for a slot: a core never holds a slot while
    // idle in `accept` (with SO_REUSEPORT the freed slot could otherwise sit
    // on a core whose listener has no waiting connection). At the limit a
    // core holds at most one accepted connection unserved and accepts no
    // more; the rest wait in the kernel's backlog.
    loop {
        let conn = match listener.accept().await {
            Ok(conn) => conn,
            Err(err) => {
                tracing::warn!("accept failed: {err}");
                rt.sleep(ACCEPT_BACKOFF).await;
                continue;
            }
        };
        let slot = loop {
            if let Some(slot) = slots.try_acquire() {
                break slot;
            }
            rt.sleep(SLOT_POLL).await;
        };
        rt.spawn(serve_connection(
            rt.clone(),
            core.clone(),
            conn,
            slot,
            protocol,
        ));
    }
}

/// Why a connection's read side stopped without input.
enum Interrupted {
    Timeout(ReadLimit),
    Shutdown,
}

/// Serves one connection until the peer closes, a timeout or error ends it,
/// or shutdown.
pub async fn serve_connection<R: Runtime, C: Conn>(
    rt: R,
    core: Rc<CoreState>,
    mut conn: C,
    slot: ConnectionSlot,
    protocol: Protocol,
) {
    let _open = OpenGuard::new(&core);
    if let Err(Interrupted::Timeout(ReadLimit::Frame)) =
        drive(&rt, &core, &mut conn, protocol).await
    {
        // Best effort: tell the client why before closing.
        let mut bytes = Vec::new();
        match protocol {
            Protocol::Framed => {
                let reply = Reply::Error {
                    code: ErrorCode::TIMEOUT,
                    message: &b"frame not completed within the frame timeout"[..],
                };
                let _ = reply.encode(&mut bytes);
            }
            Protocol::Http => bytes.extend_from_slice(crate::http::timeout_response()),
        }
        let write = async { conn.write_all(Bytes::from(bytes)).await.is_ok() };
        let give_up = async {
            rt.sleep(Duration::from_secs(1)).await;
            false
        };
        future::or(write, give_up).await;
    }
    conn.close().await;
    drop(slot);
}

async fn drive<R: Runtime, C: Conn>(
    rt: &R,
    core: &CoreState,
    conn: &mut C,
    protocol: Protocol,
) -> Result<(), Interrupted> {
    let config = core.service.config();
    let mut shutdown = core.shutdown.clone();
    let mut buf: Vec<u8> = Vec::with_capacity(READ_CHUNK);
    let mut queue = ReplyQueue::new();
    let mut timer = ReadTimer::new(
        config.idle_timeout,
        match protocol {
            Protocol::Framed => config.frame_timeout,
            Protocol::Http => config.http_header_timeout,
        },
    );
    loop {
        if buf.capacity() - buf.len() < READ_CHUNK / 2 {
            buf.reserve(READ_CHUNK);
        }
        let (timeout, limit) = timer.next_timeout(Instant::now());
        let read = async { Ok(conn.read(buf).await) };
        let expire = async {
            rt.sleep(timeout).await;
            Err(Interrupted::Timeout(limit))
        };
        let stop = async {
            shutdown.triggered().await;
            Err(Interrupted::Shutdown)
        };
        // Biased towards the read: `or` polls its first future first.
        let (result, returned) = future::or(read, future::or(expire, stop)).await?;
        buf = returned;
        match result {
            Ok(0) => return Ok(()),
            Ok(_) => {}
            Err(err) => {
                tracing::debug!("read failed: {err}");
                return Ok(());
            }
        }

        let outcome = match protocol {
            Protocol::Framed => core.shard.borrow_mut().handle_input(&buf, &mut queue),
            Protocol::Http => core.shard.borrow_mut().handle_http(&buf, &mut queue),
        };
        buf.drain(..outcome.consumed);
        timer.after_input(&outcome, Instant::now());
        if core.shard.borrow().has_log_work() {
            core.log_work.notify_one();
        }
        if protocol == Protocol::Framed && outcome.consumed > 0 && !config.delay.is_zero() {
            // The seed's artificial work (on the framed protocol only; the
            // redirect front answers at once): a timer, never a blocked core.
            rt.sleep(config.delay).await;
        }
        // Wait until every SHORTEN read so far is durable. No await lies
        // between the check and creating the `notified` future, so a batch
        // settling in between cannot be missed.
        loop {
            core.shard.borrow_mut().release(&mut queue);
            if !queue.has_pending() {
                break;
            }
            core.settled.notified().await;
        }
        if let Some(bytes) = queue.take_ready() {
            let write = async { conn.write_all(bytes).await.is_ok() };
            // A peer that stops reading is treated like an idle one.
            let stalled = async {
                rt.sleep(config.idle_timeout).await;
                false
            };
            if !future::or(write, stalled).await {
                return Ok(());
            }
        }
        if queue.closing() {
            return Ok(());
        }
    }
}

/// One core's group-commit task: runs until the runtime stops.
pub async fn run_log_writer<F: SegmentFile>(core: Rc<CoreState>) {
    let mut file: Option<F> = None;
    loop {
        let batch = core.shard.borrow_mut().poll_batch();
        let Some(batch) = batch else {
            core.log_work.notified().await;
            continue;
        };
        // After a failure the log takes no more batches (see
        // `LogWriter::fail`), so the file is never needed again.
        let result = F::write_batch(&mut file, &batch).await;
        core.shard.borrow_mut().batch_done(&batch, result);
        core.settled.notify_waiters();
    }
}
