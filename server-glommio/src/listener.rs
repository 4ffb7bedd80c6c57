//! One core: its glommio executor and listener.

use std::future::Future;
use std::io;
use std::os::fd::{FromRawFd, IntoRawFd};
use std::time::Duration;

use glommio::{LocalExecutorBuilder, Placement};
use shorty_service::driver::{self, CoreState, Listener, Runtime};
use shorty_service::server::Worker;

use crate::connection::GlommioConn;
use crate::log_writer::Segment;

/// Registered I/O memory per executor. glommio locks it; its default
/// (10 MiB) times the cores exceeds the usual 8 MiB `RLIMIT_MEMLOCK`, and
/// Shorty's I/O (small socket reads, log batches) needs little of it.
const IO_MEMORY: usize = 512 * 1024;

/// Submission queue depth of each of the executor's rings. glommio queues
/// what does not fit, so it need not match the connection count.
const RING_DEPTH: usize = 1024;

/// Runs one core until shutdown. Called on the core's pinned thread, so the
/// executor itself is left unbound.
pub(crate) fn serve(worker: Worker) -> io::Result<()> {
    let executor = LocalExecutorBuilder::new(Placement::Unbound)
        .name(&format!("shorty-core-{}", worker.index))
        .io_memory(IO_MEMORY)
        .ring_depth(RING_DEPTH)
        .make()
        .map_err(|err| {
            let limit = memlock_limit();
            io::Error::other(format!(
                "cannot create the glommio executor: {err}. glommio locks memory for io_uring \
                 ({IO_MEMORY} bytes of I/O memory per core plus its rings); RLIMIT_MEMLOCK is \
                 {limit}. Raise it (`ulimit -l`, or LimitMEMLOCK= in a systemd unit) or run \
                 fewer --threads"
            ))
        })?;
    executor.run(async move {
        let Worker {
            index,
            service,
            listener,
            http_listener,
            shutdown,
        } = worker;
        let (listener, http) = (adopt(listener)?, http_listener.map(adopt).transpose()?);
        let core = CoreState::new(service.shard(), shutdown);
        driver::run_core::<_, _, Segment>(GlommioRuntime, core, listener, http, index).await
    })
}

/// Hands a listener bound by `shorty_service::server` (SO_REUSEPORT, the
/// kernel's `somaxconn` backlog) to glommio. Hand-made rather than
/// `glommio::net::TcpListener::bind` because that fixes the backlog at 1024.
fn adopt(listener: std::net::TcpListener) -> io::Result<GlommioListener> {
    // glommio's io_uring accept expects a blocking socket.
    listener.set_nonblocking(false)?;
    // SAFETY: `into_raw_fd` hands over sole ownership of a valid socket that
    // is bound and listening, which is what `from_raw_fd` requires.
    #[allow(unsafe_code)]
    let listener = unsafe { glommio::net::TcpListener::from_raw_fd(listener.into_raw_fd()) };
    Ok(GlommioListener(listener))
}

fn memlock_limit() -> String {
    std::fs::read_to_string("/proc/self/limits")
        .ok()
        .and_then(|limits| {
            limits
                .lines()
                .find(|l| l.starts_with("Max locked memory"))
                .map(|l| {
                    l.split_whitespace()
                        .skip(3)
                        .take(2)
                        .collect::<Vec<_>>()
                        .join(" ")
                        + " (soft hard, bytes)"
                })
        })
        .unwrap_or_else(|| "unknown".into())
}

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

struct GlommioListener(glommio::net::TcpListener);

impl Listener for GlommioListener {
    type Conn = GlommioConn;

    async fn accept(&self) -> io::Result<GlommioConn> {
        let stream = self.0.accept().await.map_err(io::Error::from)?;
        if let Ok(peer) = stream.peer_addr() {
            tracing::debug!(%peer, "accepted");
        }
        Ok(GlommioConn::new(stream))
    }
}
