//! Process scaffolding both backends share: listeners, limits, pinning,
//! signals, and the thread-per-core launcher. Blocking `std` code run once
//! at start; no async runtime.
//!
//! A backend's `main` is one call to [`run`] with a function that serves one
//! core: it receives that core's listener, the shared [`Service`] and a
//! [`ShutdownSignal`], runs its runtime until shutdown, and returns.

use std::io;
use std::net::{SocketAddr, TcpListener};
use std::process::ExitCode;
use std::sync::Arc;

use clap::Parser;
use socket2::{Domain, Protocol, Socket, Type};
use tokio::sync::watch;

use crate::config::{init_logging, Config};
use crate::index::Store;
use crate::service::Service;

/// Backlog used when `/proc/sys/net/core/somaxconn` cannot be read.
const FALLBACK_BACKLOG: i32 = 4096;

/// The kernel's cap on a listen backlog. Listening with it lets a burst of
/// simultaneous connects (10,000 clients at once) queue instead of being
/// dropped while the accept loops catch up.
pub fn somaxconn() -> i32 {
    std::fs::read_to_string("/proc/sys/net/core/somaxconn")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(FALLBACK_BACKLOG)
}

fn bind_one(addr: SocketAddr) -> io::Result<TcpListener> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    // One listener per core on the same port; the kernel spreads incoming
    // connections over them, so cores never share an accept queue.
    socket.set_reuse_port(true)?;
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(somaxconn())?;
    Ok(socket.into())
}

/// Binds `count` `SO_REUSEPORT` listeners on `addr`. With port 0 the first
/// bind picks the port and the others join it.
///
/// # Errors
/// The bind error, e.g. the address is in use.
pub fn bind_listeners(addr: SocketAddr, count: usize) -> io::Result<Vec<TcpListener>> {
    let first = bind_one(addr)?;
    let addr = first.local_addr()?;
    let mut listeners = vec![first];
    for _ in 1..count {
        listeners.push(bind_one(addr)?);
    }
    Ok(listeners)
}

/// Raises the soft open-file limit to the hard limit, returning the new
/// soft limit. Each connection is a descriptor.
pub fn raise_fd_limit() -> io::Result<u64> {
    rlimit::increase_nofile_limit(u64::MAX)
}

/// Tells a core's runtime that the process is shutting down. Clone one per
/// core; any async runtime can await it.
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

/// Triggers shutdown on the first SIGTERM or SIGINT; a second one exits at
/// once (status 130), for an operator who does not want to wait.
fn install_signal_handlers(trigger: ShutdownTrigger) -> io::Result<()> {
    use signal_hook::consts::{SIGINT, SIGTERM};
    let mut signals = signal_hook::iterator::Signals::new([SIGTERM, SIGINT])?;
    std::thread::Builder::new()
        .name("shorty-signals".into())
        .spawn(move || {
            let mut seen = 0;
            for signal in signals.forever() {
                seen += 1;
                if seen > 1 {
                    tracing::warn!(signal, "second signal: exiting without draining");
                    std::process::exit(130);
                }
                tracing::info!(
                    signal,
                    "shutting down: no new connections, draining in-flight requests"
                );
                trigger.trigger();
            }
        })?;
    Ok(())
}

/// What one core's worker gets.
#[derive(Debug)]
pub struct Worker {
    /// The core's index, `0..threads`.
    pub index: usize,
    /// The shared service.
    pub service: Arc<Service>,
    /// The core's own listener for the framed protocol (non-blocking).
    pub listener: TcpListener,
    /// The core's own HTTP listener, unless `--http off`.
    pub http_listener: Option<TcpListener>,
    /// Fires on SIGTERM/SIGINT.
    pub shutdown: ShutdownSignal,
}

/// The whole `main` of a backend: parse the CLI, open the data directory,
/// bind one listener per core, start one pinned thread per core running
/// `serve`, and wait for them. Exit status 0 after a graceful shutdown, 1
/// when start-up fails or a worker fails.
pub fn run<F>(backend: &'static str, serve: F) -> ExitCode
where
    F: Fn(Worker) -> io::Result<()> + Send + Sync + 'static,
{
    let config = Config::parse();
    init_logging(&config);
    match start(backend, config, serve) {
        Ok(code) => code,
        Err(err) => {
            tracing::error!("{backend} failed to start: {err}");
            eprintln!("{backend}: {err}");
            ExitCode::FAILURE
        }
    }
}

fn start<F>(backend: &'static str, config: Config, serve: F) -> Result<ExitCode, String>
where
    F: Fn(Worker) -> io::Result<()> + Send + Sync + 'static,
{
    match raise_fd_limit() {
        Ok(limit) if (limit as usize) < config.max_connections + 64 => tracing::warn!(
            limit,
            max_connections = config.max_connections,
            "the open-file limit is below --max-connections; raise it (LimitNOFILE= in a systemd unit)"
        ),
        Ok(_) => {}
        Err(err) => tracing::warn!("could not raise the open-file limit: {err}"),
    }
    let threads = config.threads();
    let listen = config.listen;
    let (service, _report) = Service::open(config).map_err(|e| e.to_string())?;
    let listeners =
        bind_listeners(listen, threads).map_err(|e| format!("cannot listen on {listen}: {e}"))?;
    let http_listeners: Vec<Option<TcpListener>> = match service.config().http.0 {
        Some(addr) => bind_listeners(addr, threads)
            .map_err(|e| format!("cannot listen for HTTP on {addr}: {e}"))?
            .into_iter()
            .map(Some)
            .collect(),
        None => (0..threads).map(|_| None).collect(),
    };
    let (trigger, shutdown) = shutdown_channel();
    install_signal_handlers(trigger.clone())
        .map_err(|e| format!("cannot install signal handlers: {e}"))?;
    let cores = core_affinity::get_core_ids().unwrap_or_default();
    let serve = Arc::new(serve);
    let mut handles = Vec::with_capacity(threads);
    for (index, (listener, http_listener)) in listeners.into_iter().zip(http_listeners).enumerate()
    {
        if let Ok(addr) = listener.local_addr() {
            tracing::info!(backend, thread = index, protocol = "shorty", %addr, "listening");
        }
        if let Some(addr) = http_listener.as_ref().and_then(|l| l.local_addr().ok()) {
            tracing::info!(backend, thread = index, protocol = "http", %addr, "listening");
        }
        let worker = Worker {
            index,
            service: service.clone(),
            listener,
            http_listener,
            shutdown: shutdown.clone(),
        };
        let core = (!cores.is_empty()).then(|| cores[index % cores.len()]);
        let serve = serve.clone();
        let trigger = trigger.clone();
        let handle = std::thread::Builder::new()
            .name(format!("shorty-core-{index}"))
            .spawn(move || {
                if let Some(core) = core {
                    core_affinity::set_for_current(core);
                }
                let result = serve(worker);
                if result.is_err() {
                    // Fail fast: a server quietly running on fewer cores than
                    // asked for is worse than one that stops and says why.
                    trigger.trigger();
                }
                result
            })
            .map_err(|e| format!("cannot start worker thread: {e}"))?;
        handles.push(handle);
    }
    let mut failed = false;
    for (index, handle) in handles.into_iter().enumerate() {
        match handle.join() {
            Ok(Ok(())) => {}
            Ok(Err(err)) => {
                tracing::error!(thread = index, "worker failed: {err}");
                failed = true;
            }
            Err(_) => {
                tracing::error!(thread = index, "worker panicked");
                failed = true;
            }
        }
    }
    tracing::info!(urls = service.store().len(), "stopped");
    Ok(if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn port_zero_listeners_share_one_port() {
        let listeners = bind_listeners("127.0.0.1:0".parse().unwrap(), 3).unwrap();
        let ports: Vec<u16> = listeners
            .iter()
            .map(|l| l.local_addr().unwrap().port())
            .collect();
        assert_ne!(ports[0], 0);
        assert!(ports.iter().all(|&p| p == ports[0]), "{ports:?}");
    }

    #[test]
    fn shutdown_signal_reports_the_trigger() {
        let (trigger, signal) = shutdown_channel();
        let other = signal.clone();
        assert!(!signal.is_triggered());
        trigger.trigger();
        assert!(signal.is_triggered() && other.is_triggered());
    }
}
