//! The state one core's tasks share. Single-threaded: `Rc`, `RefCell` and
//! `Cell`; no borrow is held across an `.await`.

use std::cell::{Cell, RefCell};

use shorty_service::server::ShutdownSignal;
use shorty_service::{Config, Index, Shard};
use tokio::sync::Notify;

pub(crate) struct Core {
    pub(crate) shard: RefCell<Shard<Index>>,
    pub(crate) config: Config,
    /// Connections → log writer: records are waiting for a batch.
    pub(crate) log_work: Notify,
    /// Log writer → connections: a batch settled, release replies.
    pub(crate) settled: Notify,
    /// Connections open on this core, and a wake-up when it drops to 0.
    pub(crate) open: Cell<usize>,
    pub(crate) drained: Notify,
    pub(crate) shutdown: ShutdownSignal,
}

impl Core {
    pub(crate) fn new(shard: Shard<Index>, shutdown: ShutdownSignal) -> Self {
        Self {
            config: shard.service().config().clone(),
            shard: RefCell::new(shard),
            log_work: Notify::new(),
            settled: Notify::new(),
            open: Cell::new(0),
            drained: Notify::new(),
            shutdown,
        }
    }
}

/// Counts a connection as open for as long as it lives.
pub(crate) struct OpenGuard<'a>(&'a Core);

impl<'a> OpenGuard<'a> {
    pub(crate) fn new(core: &'a Core) -> Self {
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
