//! One core: its tokio-uring runtime, its accept loop, and its drain at
//! shutdown.

use std::io;
use std::rc::Rc;
use std::time::Duration;

use shorty_service::server::Worker;
use tokio_uring::net::TcpListener;

use crate::connection;
use crate::core::Core;
use crate::log_writer;

/// Submission queue entries per ring. Each connection has at most one read
/// or write in flight, but tokio-uring submits in batches and overflowing
/// entries wait in its backlog, so the ring need not match the connection
/// count.
const RING_ENTRIES: u32 = 4096;

/// How often a core at `--max-connections` checks whether a slot freed
/// (slots free on any core, so there is no local event to wait for).
const SLOT_POLL: Duration = Duration::from_millis(2);

/// Runs one core until shutdown. Called on the core's pinned thread.
pub(crate) fn serve(worker: Worker) -> io::Result<()> {
    tokio_uring::builder()
        .entries(RING_ENTRIES)
        .start(run(worker))
}

async fn run(worker: Worker) -> io::Result<()> {
    let Worker {
        index,
        service,
        listener,
        mut shutdown,
    } = worker;
    let listener = TcpListener::from_std(listener);
    let core = Rc::new(Core::new(service.shard(), shutdown.clone()));
    tokio_uring::spawn(log_writer::run(core.clone()));
    let slots = service.connection_slots().clone();

    // Accept first, then wait for a slot: a core never holds a slot while
    // idle in `accept` (with SO_REUSEPORT the freed slot could otherwise sit
    // on a core whose listener has no waiting connection). At the limit a
    // core holds at most one accepted connection unserved and accepts no
    // more; the rest wait in the kernel's backlog.
    //
    // Accepting is cancelled only at shutdown: tokio-uring cannot cancel an
    // accept, and a connection it completes afterwards is closed when the
    // runtime drops.
    let accept_loop = async {
        loop {
            let (stream, peer) = match listener.accept().await {
                Ok(accepted) => accepted,
                // Out of descriptors, or the peer gave up before accept:
                // back off a moment instead of spinning.
                Err(err) => {
                    tracing::warn!("accept failed: {err}");
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
            };
            let slot = loop {
                if let Some(slot) = slots.try_acquire() {
                    break slot;
                }
                tokio::time::sleep(SLOT_POLL).await;
            };
            tracing::debug!(%peer, "accepted");
            tokio_uring::spawn(connection::serve(core.clone(), stream, slot));
        }
    };
    tokio::select! {
        () = accept_loop => {}
        () = shutdown.triggered() => {}
    }

    // Drain: connections finish what they have read, answer, and close.
    let deadline = core.config.shutdown_timeout;
    let drained = async {
        while core.open.get() > 0 {
            let wait = core.drained.notified();
            if core.open.get() == 0 {
                break;
            }
            wait.await;
        }
    };
    if tokio::time::timeout(deadline, drained).await.is_err() {
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
