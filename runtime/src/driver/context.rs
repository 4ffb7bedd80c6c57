//! What a core's driver is handed by the process scaffolding
//! ([`crate::server`]): its context, the shutdown signal, and the way out
//! when the log cannot be written. Defined here, below the scaffolding,
//! so the driver never imports the module that starts it.

use std::sync::atomic::AtomicU64;
use std::sync::{mpsc, Arc};
use std::time::Duration;

use shorty_service::shard::Shared;
use tokio::sync::watch;

use crate::datadir::HintSender;
use crate::remote::RemotePort;
use crate::slots::ConnectionSlots;

/// Tells a core's runtime that the process is shutting down.
#[derive(Debug, Clone)]
pub struct ShutdownSignal(watch::Receiver<bool>);

impl ShutdownSignal {
    /// `true` once shutdown has begun.
    pub fn is_triggered(&self) -> bool {
        *self.0.borrow()
    }

    /// Completes when shutdown begins (at once if it already has).
    pub async fn triggered(&mut self) {
        // An error means the sender is gone, which only happens at exit.
        let _ = self.0.wait_for(|&down| down).await;
    }
}

/// Starts shutdown; held by whoever may trigger it.
#[derive(Debug, Clone)]
pub struct ShutdownTrigger(Arc<watch::Sender<bool>>);

impl ShutdownTrigger {
    /// Begins shutdown on every core.
    pub fn trigger(&self) {
        self.0.send_replace(true);
    }
}

/// A connected trigger and signal.
pub fn shutdown_channel() -> (ShutdownTrigger, ShutdownSignal) {
    let (tx, rx) = watch::channel(false);
    (ShutdownTrigger(Arc::new(tx)), ShutdownSignal(rx))
}

/// Stops the process at once, saying why. For a log that cannot be written
/// any more: everything acknowledged is durable, and a restart recovers
/// from exactly that (a supervisor restarts the process).
pub fn fatal(message: &str) -> ! {
    tracing::error!("{message}");
    eprintln!("fatal: {message}");
    std::process::exit(1)
}

/// What a core's driver needs besides its listeners and files.
#[derive(Debug)]
pub struct CoreContext {
    /// The core's index, `0..threads`.
    pub index: usize,
    /// The shared state.
    pub shared: Arc<Shared>,
    /// The connection limit.
    pub slots: Arc<ConnectionSlots>,
    /// How long a client beyond the limit waits.
    pub queue_timeout: Duration,
    /// Segment files the core keeps open for reads (`slots::read_handles`).
    pub read_handles: usize,
    /// How long shutdown may take.
    pub shutdown_timeout: Duration,
    /// The hint writer.
    pub hints: Option<HintSender>,
    /// The remote store.
    pub remote: Option<RemotePort>,
    /// The stats writer, unless `--stats off` (or no store for counts).
    pub stats: Option<crate::stats::CoreStats>,
    /// The core's heartbeat, for the watchdog.
    pub heartbeat: Arc<AtomicU64>,
    /// Fires on SIGTERM/SIGINT.
    pub shutdown: ShutdownSignal,
    pub(crate) started: mpsc::Sender<usize>,
}

impl CoreContext {
    /// Reports that the core's runtime is up (its listeners will be served).
    pub fn started(&self) {
        let _ = self.started.send(self.index);
    }
}
