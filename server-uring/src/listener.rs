//! One core: its tokio-uring runtime and listeners.

use std::future::Future;
use std::io;
use std::rc::Rc;
use std::time::Duration;

use shorty_runtime::driver::{self, CoreIo, Listener, Runtime};
use shorty_runtime::server::Worker;

use crate::connection::{BufferPool, UringConn};
use crate::log_reader::Reader;
use crate::log_writer::Segment;

/// Submission queue entries per ring. Each connection has at most one read
/// and one write in flight; tokio-uring queues what does not fit, so the
/// ring need not match the connection count.
const RING_ENTRIES: u32 = 4096;

/// Runs one core until shutdown. Called on the core's pinned thread.
pub(crate) fn serve(worker: Worker) -> io::Result<()> {
    let Worker { context, listeners } = worker;
    let runtime =
        tokio_uring::Runtime::new(tokio_uring::builder().entries(RING_ENTRIES)).map_err(|e| {
            io::Error::new(e.kind(), format!("cannot create the io_uring runtime: {e}"))
        })?;
    runtime.block_on(async move {
        let pool = BufferPool::new().await?;
        let wrap = |l| UringListener(tokio_uring::net::TcpListener::from_std(l), pool.clone());
        let io = CoreIo {
            framed: wrap(listeners.framed),
            http: listeners.http.map(wrap),
            admin: listeners.admin.map(wrap),
            writer: Segment::default(),
            reader: Reader::default(),
        };
        driver::run_core(UringRuntime, context, io).await
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

struct UringListener(tokio_uring::net::TcpListener, Rc<BufferPool>);

impl Listener for UringListener {
    type Socket = UringConn;

    // tokio-uring cannot cancel an accept: the driver drops this future only
    // at shutdown, and the runtime's drop cancels what is left.
    async fn accept(&self) -> io::Result<UringConn> {
        let (stream, _peer) = self.0.accept().await?;
        Ok(UringConn::new(stream, self.1.clone()))
    }
}
