//! One core: its tokio-uring runtime and listener.

use std::future::Future;
use std::io;
use std::time::Duration;

use shorty_service::driver::{self, CoreState, Listener, Runtime};
use shorty_service::server::Worker;

use crate::connection::UringConn;
use crate::log_writer::Segment;

/// Submission queue entries per ring. Each connection has at most one read
/// or write in flight, but tokio-uring submits in batches and queues what
/// does not fit, so the ring need not match the connection count.
const RING_ENTRIES: u32 = 4096;

/// Runs one core until shutdown. Called on the core's pinned thread.
pub(crate) fn serve(worker: Worker) -> io::Result<()> {
    tokio_uring::builder()
        .entries(RING_ENTRIES)
        .start(async move {
            let Worker {
                index,
                service,
                listener,
                http_listener,
                shutdown,
            } = worker;
            let wrap = |l| UringListener(tokio_uring::net::TcpListener::from_std(l));
            let (listener, http) = (wrap(listener), http_listener.map(wrap));
            let core = CoreState::new(service.shard(), shutdown);
            driver::run_core::<_, _, Segment>(UringRuntime, core, listener, http, index).await
        })
}

#[derive(Clone, Copy)]
struct UringRuntime;

impl Runtime for UringRuntime {
    fn sleep(&self, duration: Duration) -> impl Future<Output = ()> {
        tokio::time::sleep(duration)
    }

    fn spawn(&self, task: impl Future<Output = ()> + 'static) {
        // Detached: the join handle is not needed.
        drop(tokio_uring::spawn(task));
    }
}

struct UringListener(tokio_uring::net::TcpListener);

impl Listener for UringListener {
    type Conn = UringConn;

    // tokio-uring cannot cancel an accept: the driver drops this future only
    // at shutdown, and the runtime's drop cancels what is left.
    async fn accept(&self) -> io::Result<UringConn> {
        let (stream, peer) = self.0.accept().await?;
        tracing::debug!(%peer, "accepted");
        Ok(UringConn::new(stream))
    }
}
