//! The state one core's tasks share (its shard, connections, timers and
//! wake-ups). Its own module, below [`super::core`] (which starts the
//! tasks) and the tasks themselves, so none of them imports a module that
//! imports it back.

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::sync::Arc;
use std::task::Waker;
use std::time::{Duration, Instant};

use shorty_service::settings::Settings;
use shorty_service::shard::Shard;
use shorty_service::throttle::Throttle;
use shorty_service::timer::{Armed, Timers};
use slab::Slab;
use tokio::sync::mpsc;

use crate::datadir::HintSender;
use crate::driver::context::ShutdownSignal;
use crate::driver::{Runtime, Signal};
use crate::remote::{Envelope, RemotePort, Replies};
use crate::slots::ConnectionSlots;

/// A connection's entry in its core's table.
#[derive(Debug, Default)]
pub struct ConnEntry {
    /// Its task's waker.
    pub waker: Option<Waker>,
    /// The deadline armed in the core's timers.
    pub armed: Armed,
}

/// A core's handle on the remote store (on the core's thread).
#[derive(Debug, Clone)]
pub struct RemoteHandle {
    /// Wakes the core's remote task: requests wait in the shard.
    pub signal: Rc<Signal>,
    pub(super) requests: mpsc::UnboundedSender<Envelope>,
    /// Taken by the core's remote task when it starts.
    pub(super) replies: Rc<RefCell<Option<Replies>>>,
}

impl RemoteHandle {
    /// Wraps a core's port.
    pub fn new(port: RemotePort) -> Self {
        Self {
            signal: Rc::new(Signal::default()),
            requests: port.requests,
            replies: Rc::new(RefCell::new(Some(port.replies))),
        }
    }
}

/// The state one core's tasks share. Single-threaded: `Rc`, `RefCell`,
/// `Cell`; no borrow is held across an `.await`.
pub struct Core<R> {
    /// The backend's runtime.
    pub rt: R,
    /// The core's index.
    pub index: usize,
    /// Request handling and the log.
    pub shard: RefCell<Shard>,
    /// The settings (a copy, read without borrowing the shard).
    pub settings: Settings,
    /// Open connections.
    pub conns: RefCell<Slab<ConnEntry>>,
    /// Their deadlines.
    pub timers: RefCell<Timers>,
    /// Wakes the timer task (an earlier deadline was armed).
    pub timer_signal: Signal,
    /// Wakes the log task (records wait for a batch).
    pub log_signal: Signal,
    /// The log task did something (for the shutdown sequence).
    pub log_progress: Signal,
    /// Wakes the read task (URL reads wait).
    pub read_signal: Signal,
    /// A connection closed, or a queued client was answered (for the
    /// shutdown sequence).
    pub conn_closed: Signal,
    /// Clients queued for a slot (beyond `--max-connections`), until they
    /// get one or have been refused: the drain waits for them too.
    pub queued: Cell<usize>,
    /// When this core last warned that the socket budget was spent.
    pub budget_warned: RefCell<Throttle>,
    /// When this core last warned that an accept failed.
    pub accept_warned: RefCell<Throttle>,
    /// Shutdown has begun.
    pub shutting_down: Cell<bool>,
    /// The process-wide connection limit.
    pub slots: Arc<ConnectionSlots>,
    /// How long a client beyond the limit waits for a slot.
    pub queue_timeout: Duration,
    /// Sealed segments go here for their hint files.
    pub hints: Option<HintSender>,
    /// The remote store, when there is one.
    pub remote: Option<RemoteHandle>,
    /// Bumped by the timer task every second (the systemd watchdog checks
    /// every core is alive).
    pub heartbeat: Arc<std::sync::atomic::AtomicU64>,
    pub(crate) shutdown: ShutdownSignal,
    /// Where the core hands its click counts every `--stats-flush`.
    pub stats: Option<crate::stats::CoreStats>,
}

impl<R: Runtime> Core<R> {
    /// Wakes the connections whose operations settled.
    pub fn wake_settled(&self) {
        let mut shard = self.shard.borrow_mut();
        let conns = self.conns.borrow();
        for id in shard.take_wakes() {
            if let Some(waker) = conns.get(id as usize).and_then(|c| c.waker.as_ref()) {
                waker.wake_by_ref();
            }
        }
    }

    /// Tells the tasks that serve the shard's I/O that work is waiting.
    pub fn kick(&self) {
        let shard = self.shard.borrow();
        if shard.log_has_work() {
            self.log_signal.notify();
        }
        if shard.has_reads() {
            self.read_signal.notify();
        }
        if shard.has_remote() {
            if let Some(remote) = &self.remote {
                remote.signal.notify();
            }
        }
    }

    /// Arms connection `id`'s next deadline.
    pub fn arm(&self, id: u32, at: Option<Instant>) {
        let mut conns = self.conns.borrow_mut();
        let Some(entry) = conns.get_mut(id as usize) else {
            return;
        };
        if self.timers.borrow_mut().arm(&mut entry.armed, id, at) {
            self.timer_signal.notify();
        }
    }

    /// Wakes every connection (shutdown).
    pub(crate) fn wake_all(&self) {
        for (_, entry) in self.conns.borrow().iter() {
            if let Some(waker) = &entry.waker {
                waker.wake_by_ref();
            }
        }
    }
}
