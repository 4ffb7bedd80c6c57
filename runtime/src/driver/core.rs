//! A core's life: start its tasks, accept until shutdown, drain its
//! connections, seal its log. (What the tasks share is [`Core`], in
//! [`super::state`].)

use std::cell::{Cell, RefCell};
use std::io;
use std::rc::Rc;
use std::time::{Duration, Instant};

use futures_lite::future;
use shorty_service::connection::Kind;
use shorty_service::http::Front;
use shorty_service::shard::Shard;
use shorty_service::timer::Timers;
use slab::Slab;

use crate::driver::context::CoreContext;
use crate::driver::state::{Core, RemoteHandle};
use crate::driver::{Listener, Runtime, SegmentReader, SegmentWriter, Signal};

/// A core's listeners and storage, in the backend's types.
pub struct CoreIo<L, W, Rd> {
    /// The framed protocol's listener.
    pub framed: L,
    /// The public HTTP front's, unless `--http off`.
    pub http: Option<L>,
    /// The admin listener's, on core 0 only, unless `--admin off`.
    pub admin: Option<L>,
    /// The log's writer.
    pub writer: W,
    /// URL reads.
    pub reader: Rd,
}

/// Runs one core until shutdown: its log, read and timer tasks, its accept
/// loops; then drains its connections (at most `--shutdown-timeout`) and
/// seals its log.
///
/// # Errors
/// Never, today; the signature leaves room for a backend failure.
pub async fn run_core<R, L, W, Rd>(
    rt: R,
    mut context: CoreContext,
    io: CoreIo<L, W, Rd>,
) -> io::Result<()>
where
    R: Runtime,
    L: Listener,
    W: SegmentWriter,
    Rd: SegmentReader,
{
    context.started();
    let mut shard = Shard::new(context.shared.clone(), context.index);
    // The wall clock before the first redirect (the timer task keeps it).
    let wall = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    shard.set_wall_clock(Instant::now(), wall);
    let core = Rc::new(Core {
        rt: rt.clone(),
        index: context.index,
        settings: context.shared.settings.clone(),
        shard: RefCell::new(shard),
        conns: RefCell::new(Slab::new()),
        timers: RefCell::new(Timers::new()),
        timer_signal: Signal::default(),
        log_signal: Signal::default(),
        log_progress: Signal::default(),
        read_signal: Signal::default(),
        conn_closed: Signal::default(),
        queued: Cell::new(0),
        budget_warned: Default::default(),
        accept_warned: Default::default(),
        shutting_down: Cell::new(false),
        slots: context.slots.clone(),
        queue_timeout: context.queue_timeout,
        hints: context.hints.clone(),
        remote: context.remote.take().map(RemoteHandle::new),
        heartbeat: context.heartbeat.clone(),
        shutdown: context.shutdown.clone(),
        stats: context.stats.take(),
    });
    rt.spawn(crate::driver::log::run(core.clone(), io.writer));
    rt.spawn(crate::driver::reads::run(core.clone(), Rc::new(io.reader)));
    rt.spawn(crate::driver::timer::run(core.clone()));
    if let Some(remote) = &core.remote {
        rt.spawn(crate::driver::store::run(core.clone(), remote.clone()));
    }

    // Each listener accepts in a task of its own, which stops when shutdown
    // begins. One task polling all three would poll the idle listeners'
    // accepts every time the busy one completes, and glommio keeps a waker
    // clone per poll of a pending accept: an idle HTTP listener would
    // collect one per framed connection until the task's `i16` reference
    // count overflows and aborts the process (at about 16,000 connections;
    // conformance case `a_core_accepts_more_connections_than_a_counter_holds`).
    let listeners = [
        Some((io.framed, Kind::Framed)),
        io.http.map(|l| (l, Kind::Http(Front::Public))),
        io.admin.map(|l| (l, Kind::Http(Front::Admin))),
    ];
    // Each accept task stops on a signal of its own, set below when
    // shutdown begins: cheaper to poll on every accept than the
    // process-wide shutdown channel (a lock and a notification future).
    let mut stops = Vec::new();
    for (listener, kind) in listeners.into_iter().flatten() {
        let stop = Rc::new(Signal::default());
        stops.push(stop.clone());
        let accept = crate::driver::accept::run(core.clone(), listener, kind);
        // The accept future is dropped when shutdown begins; a connection
        // an uncancellable accept completes afterwards is closed with the
        // runtime.
        rt.spawn(async move { future::or(accept, stop.wait()).await });
    }
    core.shutdown.clone().triggered().await;
    for stop in &stops {
        stop.notify();
    }

    core.shutting_down.set(true);
    core.wake_all();
    let deadline = Instant::now() + context.shutdown_timeout;
    // Clients queued for a slot are told at once that the server is
    // shutting down (`accept::wait_for_slot`); the drain waits for that
    // answer too, or the runtime's end would drop it unsent.
    let drained = async {
        while !core.conns.borrow().is_empty() || core.queued.get() > 0 {
            core.conn_closed.wait().await;
        }
        true
    };
    let late = async {
        rt.sleep(deadline.saturating_duration_since(Instant::now()))
            .await;
        false
    };
    if !future::or(drained, late).await {
        tracing::warn!(
            core = core.index,
            open = core.conns.borrow().len(),
            "the drain deadline passed; closing anyway"
        );
    }
    // Seal the log: what is pending is written, then the segment's seal.
    core.shard.borrow_mut().begin_shutdown();
    core.log_signal.notify();
    let sealed = async {
        while !core.shard.borrow().is_shut_down() {
            core.log_progress.wait().await;
        }
        true
    };
    let late = async {
        rt.sleep(deadline.saturating_duration_since(Instant::now()) + Duration::from_secs(5))
            .await;
        false
    };
    if !future::or(sealed, late).await {
        tracing::warn!(core = core.index, "the log did not finish sealing in time");
    }
    // The last clicks, after the last redirect.
    if let Some(stats) = &core.stats {
        stats.sender.send(core.shard.borrow_mut().stats.take());
    }
    tracing::info!(core = core.index, "stopped");
    Ok(())
}
