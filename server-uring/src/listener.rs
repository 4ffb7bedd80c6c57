//! One core: its tokio-uring runtime and listeners.

use std::future::Future;
use std::io;
use std::time::Duration;

use shorty_runtime::driver::core::{run_core, CoreIo};
use shorty_runtime::driver::Runtime;
use shorty_runtime::server::Worker;

use crate::accept::UringListener;
use crate::buffers::BufferPool;
use crate::log_reader::Reader;
use crate::log_writer::Segment;

/// Submission queue entries per ring. Each connection has at most one read
/// and one write in flight; tokio-uring queues what does not fit, so the
/// ring need not match the connection count.
const RING_ENTRIES: u32 = 4096;

/// Runs one core until shutdown. Called on the core's pinned thread.
pub(crate) fn serve(worker: Worker) -> io::Result<()> {
    let Worker {
        context,
        listeners,
        defer_taskrun,
        multishot_recv,
        multishot_accept,
        ..
    } = worker;
    let runtime = new_runtime(defer_taskrun)?;
    runtime.block_on(async move {
        let pool = BufferPool::new(multishot_recv).await?;
        let wrap = |l: std::net::TcpListener| UringListener::new(l, pool.clone(), multishot_accept);
        let io = CoreIo {
            framed: wrap(listeners.framed)?,
            http: listeners.http.map(wrap).transpose()?,
            admin: listeners.admin.map(wrap).transpose()?,
            writer: Segment::default(),
            reader: Reader::new(context.read_handles),
        };
        run_core(UringRuntime, context, io).await
    })
}

/// The core's tokio-uring runtime, on a ring set up for one thread.
///
/// - `COOP_TASKRUN`: a completion does not interrupt the core with an
///   inter-processor interrupt to run its task work; the work runs at the
///   core's next transition into the kernel, which comes soon because the
///   core enters the kernel whenever it parks or submits. Measured (issue
///   23): without it every completion costs an IPI, and a keep-alive
///   redirect ~15-20 % more CPU.
/// - `TASKRUN_FLAG`: the kernel says, in the ring's shared flags, when
///   completion work waits for the core; a park with nothing to submit
///   then enters the ring only if some does (vendor/PATCHES.md,
///   tokio-uring patch 4).
/// - `SINGLE_ISSUER`: only this thread ever submits (a core's ring is never
///   shared), which lets the kernel skip its locking; the kernel enforces it
///   (another task's `io_uring_enter`/`register` gets `EEXIST`).
/// - `DEFER_TASKRUN`, only with `--uring-defer-taskrun on`: the completion
///   work waits until the core asks for it (an `io_uring_enter` with
///   `GETEVENTS`) instead of running at whatever kernel entry comes next;
///   tokio-uring 0.5 never asked, so the vendored copy drives such a ring
///   through an eventfd (vendor/PATCHES.md, tokio-uring patch 2). Off by
///   default: measured, it did not cost less (PATCHES.md has the numbers).
///
/// Kernels older than 6.1 refuse `DEFER_TASKRUN` (6.0 `SINGLE_ISSUER`,
/// 5.19 `COOP_TASKRUN` and `TASKRUN_FLAG`) with `EINVAL`: the core then
/// steps down to a ring without it, then to a plain ring, and says so,
/// rather than not run at all (the README asks for 5.11).
fn new_runtime(defer_taskrun: bool) -> io::Result<tokio_uring::Runtime> {
    let mut flags = tokio_uring::uring_builder();
    flags
        .setup_coop_taskrun()
        .setup_taskrun_flag()
        .setup_single_issuer();
    let tuned = || {
        tokio_uring::Runtime::new(
            tokio_uring::builder()
                .entries(RING_ENTRIES)
                .uring_builder(&flags),
        )
    };
    let runtime = if defer_taskrun {
        let deferred = tokio_uring::Runtime::new(
            tokio_uring::builder()
                .entries(RING_ENTRIES)
                .uring_builder(&flags)
                .defer_taskrun(),
        );
        match deferred {
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {
                tracing::warn!(
                    "this kernel refuses io_uring DEFER_TASKRUN (Linux 6.1 or newer has it): \
                     running without it"
                );
                tuned()
            }
            other => other,
        }
    } else {
        tuned()
    };
    let runtime = match runtime {
        Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {
            tracing::warn!(
                "this kernel refuses io_uring COOP_TASKRUN/SINGLE_ISSUER (Linux 6.0 or newer has \
                 them): running on a plain ring, at more CPU per request"
            );
            tokio_uring::Runtime::new(tokio_uring::builder().entries(RING_ENTRIES))
        }
        other => other,
    };
    runtime
        .map_err(|e| io::Error::new(e.kind(), format!("cannot create the io_uring runtime: {e}")))
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
