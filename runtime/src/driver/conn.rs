//! One connection's I/O loop: feed the sans-IO
//! [`Connection`] what the socket
//! reads, write what it hands out, arm the core's timer with its next
//! deadline. Reads and writes proceed at the same time; the task sleeps
//! until the socket, the core's timer, or an operation it waits for (a
//! sync, a read) wakes it. A write's completion wakes it only when
//! something hangs on it ([`Connection::write_completion_can_wait`]) or the
//! backend must send the rest of a partial write itself
//! ([`Socket::writes_finish_unattended`]): a keep-alive reply's completion
//! is learnt at the next request.

use std::rc::Rc;
use std::task::{Context, Poll, Waker};
use std::time::Instant;

use shorty_service::connection::{Connection, Kind};
use shorty_service::http::Front;

use crate::driver::state::{ConnEntry, Core};
use crate::driver::{Runtime, Socket};
use crate::slots::ConnectionSlot;

/// Index of a connection's listener in the connection metrics.
fn listener_index(kind: Kind) -> usize {
    match kind {
        Kind::Framed => 0,
        Kind::Http(Front::Public) => 1,
        Kind::Http(Front::Admin) => 2,
    }
}

struct Io<C> {
    conn: C,
    writing: bool,
    shutdown_seen: bool,
    /// A shutdown of the write side was asked for and has not completed.
    shutting_write: bool,
}

/// Serves one connection until it closes. `slot` (none for the admin
/// listener) is released at the end.
pub async fn serve<R: Runtime, C: Socket>(
    core: Rc<Core<R>>,
    conn: C,
    kind: Kind,
    slot: Option<ConnectionSlot>,
) {
    let listener = listener_index(kind);
    core.shard.borrow().metrics().connection_opened(listener);
    let id = core.conns.borrow_mut().insert(ConnEntry::default()) as u32;
    let mut connection = Connection::new(id, kind, Instant::now());
    connection.set_peer(conn.peer_ip());
    let mut io = Io {
        conn,
        writing: false,
        shutdown_seen: false,
        shutting_write: false,
    };
    std::future::poll_fn(|cx| drive(&core, &mut connection, &mut io, cx)).await;
    tracing::debug!(core = core.index, conn = id, reason = ?connection.close_reason(), "closed");
    connection.abandon(&mut core.shard.borrow_mut());
    core.conns.borrow_mut().remove(id as usize);
    io.conn.close().await;
    drop(slot);
    // Counted closed only once the socket and its slot are released, so
    // the gauge never hides a connection still being torn down.
    core.shard.borrow().metrics().connection_closed(listener);
    core.conn_closed.notify();
}

/// Whether the write in flight may be polled without this task's waker:
/// nothing hangs on its completion, and the backend finishes it unpolled.
fn completion_can_wait<C: Socket>(
    io: &Io<C>,
    connection: &Connection,
    settings: &shorty_service::settings::Settings,
) -> bool {
    io.conn.writes_finish_unattended() && connection.write_completion_can_wait(settings)
}

fn drive<R: Runtime, C: Socket>(
    core: &Core<R>,
    connection: &mut Connection,
    io: &mut Io<C>,
    cx: &mut Context<'_>,
) -> Poll<()> {
    let id = connection.id();
    {
        let mut conns = core.conns.borrow_mut();
        if let Some(entry) = conns.get_mut(id as usize) {
            if !entry
                .waker
                .as_ref()
                .is_some_and(|w| w.will_wake(cx.waker()))
            {
                entry.waker = Some(cx.waker().clone());
            }
        }
    }
    let settings = &core.settings;
    // Once per wake-up, not per turn of the loop below: the turns take
    // microseconds, and a clock read per turn (three to five a keep-alive
    // request) was ~1.5 % of the core's CPU on a redirect (issue 23).
    let now = Instant::now();
    // Whether the write in flight was last polled with the no-op waker.
    let mut quiet_write = false;
    loop {
        let mut progress = false;
        if core.shutting_down.get() && !io.shutdown_seen {
            io.shutdown_seen = true;
            connection.begin_shutdown();
        }
        // The write first, before the deadlines: a write that completed
        // while nobody was woken for it (below) must not be judged stalled.
        if io.writing {
            // Woken for its completion only when something hangs on it (and
            // the backend finishes a partial send by itself); else the next
            // input, deadline or settled operation finds it done, and a
            // keep-alive request costs one wake-up, not two (issue 23). The
            // read is polled below, so that wake-up is registered.
            let mut quiet = Context::from_waker(Waker::noop());
            quiet_write = completion_can_wait(io, connection, settings);
            let cx = if quiet_write { &mut quiet } else { &mut *cx };
            match io.conn.poll_write(cx) {
                Poll::Ready(Ok(())) => {
                    io.writing = false;
                    connection.transmitted();
                    progress = true;
                }
                Poll::Ready(Err(err)) => {
                    tracing::debug!(conn = id, "write failed: {err}");
                    io.writing = false;
                    connection.handle_error();
                }
                Poll::Pending => {}
            }
        }
        if connection
            .poll_timeout(settings)
            .is_some_and(|at| at <= now)
        {
            connection.handle_timeout(&mut core.shard.borrow_mut(), now);
        }
        if connection.wants_read(settings) {
            let read = {
                let mut shard = core.shard.borrow_mut();
                io.conn.poll_read(cx, &mut |bytes| {
                    connection.handle_input(&mut shard, bytes, now)
                })
            };
            match read {
                Poll::Ready(Ok(0)) => {
                    connection.handle_eof();
                    progress = true;
                }
                Poll::Ready(Ok(_)) => progress = true,
                Poll::Ready(Err(err)) => {
                    tracing::debug!(conn = id, "read failed: {err}");
                    connection.handle_error();
                }
                Poll::Pending => {}
            }
        } else {
            io.conn.pause_read();
        }
        // Releases settled replies (and requests held by the output cap)
        // even while a write is in flight.
        let transmit = connection.poll_transmit(&mut core.shard.borrow_mut(), now);
        core.kick();
        if let Some(bytes) = transmit {
            io.conn.start_write(bytes);
            io.writing = true;
            progress = true;
        }
        // Lingering close: everything is written; send the FIN and go on
        // reading (the connection discards what arrives).
        if io.shutting_write || connection.poll_shutdown(settings, now) {
            match io.conn.poll_shutdown_write(cx) {
                Poll::Ready(result) => {
                    io.shutting_write = false;
                    progress = true;
                    if let Err(err) = result {
                        tracing::debug!(conn = id, "shutdown failed: {err}");
                        connection.handle_error();
                    }
                }
                Poll::Pending => io.shutting_write = true,
            }
        }
        // Not waiting for a write in flight: a connection closes with one
        // only when it must close now (write stall, idle, transport error;
        // a draining one has nothing in flight by then), and the write may
        // never complete (a peer that does not read). `Socket::close` ends it.
        if connection.is_closed() {
            return Poll::Ready(());
        }
        if !progress {
            // A write polled quietly above that something now hangs on (a
            // deadline queued a 408 and began the close, a reply was
            // queued): one more turn polls it with this task's waker, or
            // its completion would go unnoticed until the write-stall
            // deadline (review 19b: a 408 held 5 s, with its slot).
            if io.writing && quiet_write && !completion_can_wait(io, connection, settings) {
                continue;
            }
            break;
        }
    }
    core.arm(id, connection.poll_timeout(settings));
    Poll::Pending
}
