//! One core: its glommio executor and listeners.

use std::cell::RefCell;
use std::future::Future;
use std::io;
use std::os::fd::{FromRawFd, IntoRawFd};
use std::rc::Rc;
use std::time::Duration;

use glommio::{LocalExecutorBuilder, Placement};
use shorty_runtime::driver::core::{run_core, CoreIo};
use shorty_runtime::driver::{Listener, Runtime};
use shorty_runtime::server::Worker;

use crate::connection::{GlommioConn, READ_BUFFER};
use crate::log_reader::Reader;
use crate::log_writer::Segment;

/// Registered I/O memory per executor. glommio locks it; its default
/// (10 MiB) times the cores exceeds the usual 8 MiB `RLIMIT_MEMLOCK`, and
/// Shorty's I/O (socket reads into its own buffer, log batches) needs
/// little of it.
const IO_MEMORY: usize = 512 * 1024;

/// Submission queue depth of each of the executor's rings. glommio queues
/// what does not fit, so it need not match the connection count.
const RING_DEPTH: usize = 1024;

/// Runs one core until shutdown. Called on the core's pinned thread, so the
/// executor itself is left unbound.
pub(crate) fn serve(worker: Worker) -> io::Result<()> {
    let index = worker.context.index;
    let executor = LocalExecutorBuilder::new(Placement::Unbound)
        .name(&format!("shorty-core-{index}"))
        .io_memory(IO_MEMORY)
        .ring_depth(RING_DEPTH)
        .make()
        .map_err(|err| {
            let limit = rlimit::getrlimit(rlimit::Resource::MEMLOCK).map_or_else(
                |_| "unknown".into(),
                |(soft, hard)| format!("{soft} (hard {hard})"),
            );
            io::Error::other(format!(
                "cannot create the glommio executor: {err}. glommio locks memory for io_uring \
                 ({IO_MEMORY} bytes of I/O memory per core plus its rings); RLIMIT_MEMLOCK is \
                 {limit} bytes. Raise it (`ulimit -l`, or LimitMEMLOCK= in a systemd unit) or \
                 run fewer --threads"
            ))
        })?;
    let Worker {
        context, listeners, ..
    } = worker;
    executor.run(async move {
        let buffer = Rc::new(RefCell::new(vec![0u8; READ_BUFFER]));
        let adopt = |l| adopt(l, buffer.clone());
        let io = CoreIo {
            framed: adopt(listeners.framed)?,
            http: listeners.http.map(adopt).transpose()?,
            admin: listeners.admin.map(adopt).transpose()?,
            writer: Segment::default(),
            reader: Reader::default(),
        };
        run_core(GlommioRuntime, context, io).await
    })
}

/// Hands a listener bound by `shorty_runtime` (SO_REUSEPORT, the kernel's
/// `somaxconn` backlog) to glommio. Hand-made rather than
/// `glommio::net::TcpListener::bind` because that fixes the backlog at 1024.
fn adopt(
    listener: std::net::TcpListener,
    buffer: Rc<RefCell<Vec<u8>>>,
) -> io::Result<GlommioListener> {
    // SAFETY: `into_raw_fd` hands over sole ownership of a valid socket that
    // is bound and listening, which is what `from_raw_fd` requires.
    #[allow(unsafe_code)]
    let listener = unsafe { glommio::net::TcpListener::from_raw_fd(listener.into_raw_fd()) };
    Ok(GlommioListener(listener, buffer))
}

/// How long `io_turn` waits for the listener's poll when no connection is
/// waiting (the poll then never completes): a refusal is delayed by at
/// most this.
const IO_TURN_AT_MOST: Duration = Duration::from_millis(1);

#[derive(Clone, Copy)]
struct GlommioRuntime;

impl Runtime for GlommioRuntime {
    fn sleep(&self, duration: Duration) -> impl Future<Output = ()> {
        glommio::timer::sleep(duration)
    }

    fn spawn(&self, task: impl Future<Output = ()> + 'static) {
        glommio::spawn_local(task).detach();
    }
}

struct GlommioListener(glommio::net::TcpListener, Rc<RefCell<Vec<u8>>>);

impl Listener for GlommioListener {
    type Socket = GlommioConn;

    async fn accept(&self) -> io::Result<GlommioConn> {
        let accepted = self.0.shared_accept().await.map_err(io::Error::from)?;
        Ok(GlommioConn::new(accepted, self.1.clone()))
    }

    /// glommio's accept returns at once when a connection waits (one
    /// `accept4`), so connections accepted in a burst never waited for the
    /// reactor: a `POLL_ADD` on the listener, through the ring, is a round
    /// trip in which what the earlier connections submitted (the poll that
    /// sees a peer's reset) is submitted and completed first. When no other
    /// connection waits, the listener is not readable: a millisecond's
    /// timer, through the same reactor turn, ends the wait instead.
    async fn io_turn(&self) {
        let readable = async {
            let _ = self.0.readable().await;
        };
        futures_lite::future::or(readable, glommio::timer::sleep(IO_TURN_AT_MOST)).await;
    }
}
