//! The per-core event loops both backends run, written once against a few
//! small traits, so each backend only supplies its runtime's I/O calls.
//!
//! - [`context`]: what the process scaffolding hands a core.
//! - [`state`]: what one core's tasks share.
//! - [`core`]: a core's life: start its tasks, accept, drain, seal.
//! - [`accept`]: accept loops, the connection limit and its queue.
//! - [`conn`]: one connection's I/O loop around the sans-IO
//!   [`shorty_service::connection::Connection`].
//! - [`log`]: the core's group-commit task.
//! - [`reads`]: URL reads from the log for cache misses.
//! - [`store`]: the remote store's requests and answers (`--store redis://`).
//! - [`timer`]: the core's one timer task over all its deadlines.
//!
//! Runtime-agnostic: tasks are spawned and timers made through
//! [`Runtime`]; the only other primitives are wakers.
//!
//! This file holds only what a backend implements (the traits) and the
//! primitives every task uses; it imports none of its submodules, so they
//! all sit above it and none imports a module that imports it back. A
//! backend starts a core with [`core::run_core`].

pub mod accept;
pub mod conn;
pub mod context;
pub mod core;
pub mod log;
pub mod reads;
pub mod state;
pub mod store;
pub mod timer;

use std::cell::{Cell, RefCell};
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use bytes::Bytes;
use shorty_service::log::segments::SegmentRef;
use shorty_service::log::WriteBatch;

/// The timers and task spawning of a backend's runtime.
pub trait Runtime: Clone + 'static {
    /// Completes after `duration`.
    fn sleep(&self, duration: Duration) -> impl Future<Output = ()>;
    /// Runs `task` on this core, detached.
    fn spawn(&self, task: impl Future<Output = ()> + 'static);
}

/// A core's listener.
pub trait Listener: 'static {
    /// The connection type it accepts.
    type Socket: Socket;
    /// Accepts one connection.
    fn accept(&self) -> impl Future<Output = io::Result<Self::Socket>>;
    /// Completes once the core's I/O has had a turn, for a listener whose
    /// `accept` can return without passing through it (glommio's: one
    /// `accept4` that finds the connection waiting). The accept loop awaits
    /// it before it refuses a connection for its address's
    /// `--max-connections-per-ip`: a backlog accepted in one go may hold
    /// connections whose peers have gone but which have not yet seen it,
    /// because what tells them (a receive, a commit) waits for the I/O
    /// (review 14b). The default does nothing: a ring accept completes
    /// through the driver, after what was submitted before it.
    fn io_turn(&self) -> impl Future<Output = ()> {
        std::future::ready(())
    }
    /// The core is at its connection limit (a client had to queue for a
    /// slot): until [`resume`](Self::resume), take one connection per
    /// [`accept`](Self::accept) and none ahead, so that when the accept loop
    /// stops calling it (at [`accept::MAX_QUEUED`]) later clients wait in
    /// the kernel's backlog. A listener whose accept stays armed across
    /// connections (shorty-uring's multishot accept) stops it here; what it
    /// took before the stop landed comes out of
    /// [`accepted_ahead`](Self::accepted_ahead) or the next `accept`. By
    /// default nothing: an accept per call takes nothing ahead.
    fn pause(&self) {}
    /// The core is below its limit again (no client queued): `accept` may
    /// take connections ahead again. By default nothing.
    fn resume(&self) {}
    /// A connection taken ahead before [`pause`](Self::pause) landed, if
    /// any is left; `None` once there is none (then none comes until the
    /// next `accept`). The accept loop takes these while its queue is full
    /// (it accepts nothing then) and queues them beyond the bound: they
    /// were accepted already. By default `None`.
    fn accepted_ahead(&self) -> impl Future<Output = Option<Self::Socket>> {
        std::future::ready(None)
    }
}

/// One client connection's byte stream, poll-style, so the driver can read
/// and write at the same time (full duplex). (Not named `Conn`: the Redis
/// store has a `Conn` of its own, and the sans-IO state machine is the
/// `Connection`.)
pub trait Socket: 'static {
    /// Polls for input. When some arrives, hands it to `input` (the bytes
    /// are only valid during the call: the backend reads into a buffer of
    /// its own, not the connection's) and returns how many; 0 at end of
    /// stream.
    fn poll_read(
        &mut self,
        cx: &mut Context<'_>,
        input: &mut dyn FnMut(&[u8]),
    ) -> Poll<io::Result<usize>>;
    /// The driver does not want input for now (the connection's output is
    /// at its cap, or it is closing): called instead of
    /// [`poll_read`](Self::poll_read), on every turn it is not called. A
    /// backend whose receive stays armed across reads (shorty-uring's
    /// multishot receive) stops it here, so a peer that never reads cannot
    /// fill the core's shared receive buffers; the next `poll_read`
    /// resumes. By default nothing: a receive per `poll_read` takes nothing
    /// while `poll_read` is not called.
    fn pause_read(&mut self) {}
    /// Starts writing all of `bytes`; no other write is in flight.
    fn start_write(&mut self, bytes: Bytes);
    /// Polls the write in flight; `Ready(Ok(()))` once it is all written
    /// (at once when none is in flight).
    fn poll_write(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>>;
    /// `true` when a write in flight goes out in full without
    /// [`poll_write`](Self::poll_write) being called again (the kernel
    /// finishes a partial send by itself): the driver then need not be
    /// woken for the write's completion while nothing hangs on it, and
    /// learns of it at its next wake-up. By default `false`: a backend that
    /// sends the rest of a partial write from `poll_write` must be woken
    /// for every completion, or the rest would wait for the peer's next
    /// request.
    fn writes_finish_unattended(&self) -> bool {
        false
    }
    /// Shuts down the sending side (a FIN after what was written), keeping
    /// the receiving side open: the start of a lingering close.
    fn poll_shutdown_write(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>>;
    /// Closes both directions, ending any operation in flight (a write to a
    /// peer that does not read included), and waits for it to end.
    fn close(self) -> impl Future<Output = ()>;
    /// The peer's address, for per-client rate limits (`None`: unknown,
    /// never limited per client).
    fn peer_ip(&self) -> Option<std::net::IpAddr> {
        None
    }
}

/// Which step of writing a batch failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// Creating the segment file.
    Create,
    /// Writing the bytes.
    Write,
    /// `fdatasync` of the file or its directory.
    Sync,
}

/// A failed batch write.
#[derive(Debug)]
pub struct WriteFailure {
    /// Where it failed.
    pub step: Step,
    /// How.
    pub error: io::Error,
}

impl WriteFailure {
    /// A failure at `step`.
    pub fn at(step: Step) -> impl FnOnce(io::Error) -> Self {
        move |error| Self { step, error }
    }
}

/// A core's log segments, written through the backend's file API.
pub trait SegmentWriter: 'static {
    /// Writes one batch: create the file if asked (syncing its directory
    /// when `sync_dir`), write the bytes at the offset, `fdatasync` if
    /// `sync`, and close the file after a seal.
    fn write(&mut self, batch: &WriteBatch) -> impl Future<Output = Result<(), WriteFailure>>;
    /// Drops the current segment's handle without writing anything more
    /// (before a disk-full repair rewrites its end).
    fn forget(&mut self);
}

/// URL reads from the log, through the backend's file API.
pub trait SegmentReader: 'static {
    /// Reads up to `len` bytes of `segment` at `offset` (fewer at the end
    /// of the file).
    fn read(
        &self,
        segment: SegmentRef,
        offset: u64,
        len: usize,
    ) -> impl Future<Output = io::Result<Bytes>>;
}

/// A wake-up for one task on this core: `notify` sets a flag and wakes the
/// waiting task; `wait` completes once the flag is set, and clears it.
#[derive(Debug, Default)]
pub struct Signal {
    set: Cell<bool>,
    waker: RefCell<Option<Waker>>,
}

impl Signal {
    /// Sets the flag and wakes the waiter.
    pub fn notify(&self) {
        self.set.set(true);
        if let Some(waker) = self.waker.borrow_mut().take() {
            waker.wake();
        }
    }

    /// Completes once notified (at once if already notified).
    pub fn wait(&self) -> impl Future<Output = ()> + '_ {
        std::future::poll_fn(move |cx| {
            if self.set.replace(false) {
                return Poll::Ready(());
            }
            let mut waker = self.waker.borrow_mut();
            if !waker.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
                *waker = Some(cx.waker().clone());
            }
            Poll::Pending
        })
    }
}

/// Open read handles of one core, bounded: beyond its capacity (at most
/// [`FileCache::CAPACITY`]; `slots::read_handles` under a low open-file
/// limit) one is evicted (quick_cache's CLOCK-Pro policy,
/// as the URL cache uses), so a data directory with thousands of segments
/// does not hold thousands of descriptors per core. An evicted handle
/// closes when the last read that holds it is done.
pub struct FileCache<H> {
    handles: RefCell<quick_cache::unsync::Cache<u32, Rc<H>>>,
}

impl<H> Default for FileCache<H> {
    fn default() -> Self {
        Self::with_capacity(Self::CAPACITY)
    }
}

impl<H> FileCache<H> {
    /// Most handles kept open per core.
    pub const CAPACITY: usize = 256;

    /// A cache keeping at most `capacity` handles (at least one).
    pub fn with_capacity(capacity: usize) -> Self {
        Self {
            handles: RefCell::new(quick_cache::unsync::Cache::new(capacity.max(1))),
        }
    }

    /// The open handle of segment `idx`, if any.
    pub fn get(&self, idx: u32) -> Option<Rc<H>> {
        self.handles.borrow().get(&idx).cloned()
    }

    /// Keeps `handle` for segment `idx` and returns it.
    pub fn insert(&self, idx: u32, handle: H) -> Rc<H> {
        let handle = Rc::new(handle);
        self.handles.borrow_mut().insert(idx, handle.clone());
        handle
    }

    /// Handles kept.
    pub fn len(&self) -> usize {
        self.handles.borrow().len()
    }

    /// `true` when no handle is kept.
    pub fn is_empty(&self) -> bool {
        self.handles.borrow().is_empty()
    }
}

/// A boxed future, for storing operations of a type a backend cannot name.
pub type LocalBoxFuture<T> = Pin<Box<dyn Future<Output = T>>>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_file_cache_keeps_at_most_its_capacity_and_held_handles_stay_valid() {
        let cache = FileCache::<u32>::default();
        let first = cache.insert(0, 0);
        for idx in 1..(FileCache::<u32>::CAPACITY as u32 * 4) {
            let handle = cache.insert(idx, idx);
            assert_eq!(*handle, idx);
            assert_eq!(cache.get(idx).as_deref(), Some(&idx), "just inserted");
            assert!(cache.len() <= FileCache::<u32>::CAPACITY);
        }
        // Evicted or not, a handle a reader holds is still the one it got.
        assert_eq!(*first, 0);
        assert!(cache.get(0).is_none_or(|h| *h == 0));
    }
}
