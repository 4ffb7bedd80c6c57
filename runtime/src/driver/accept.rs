//! Accepting connections under the process-wide limit.
//!
//! A connection is accepted first and then given a slot, so a core never
//! holds a slot while idle in `accept` (with `SO_REUSEPORT` a slot held by a
//! core whose listener has no one waiting would be wasted). At the limit, a
//! client waits for a slot up to `--queue-timeout` (woken when any core frees
//! one) and is then answered 503 OVERLOADED and closed, rather than left in
//! silence; at most [`MAX_QUEUED`] wait per core, beyond which the core stops
//! accepting and later clients wait in the kernel's backlog. A listener that
//! takes connections ahead (shorty-uring's multishot accept) stops doing so
//! while any client is queued ([`Listener::pause`]); what it took ahead
//! queues too, beyond the bound (at most what the kernel's backlog held),
//! and is served or told 503 within `--queue-timeout`. Every client socket
//! counts against the open-file limit's budget (`slots::socket_budget`);
//! beyond it one is closed at once. The admin listener is not counted
//! (operators can always reach `/metrics`) but takes at most
//! `slots::ADMIN_SOCKETS` connections.

use std::rc::Rc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_lite::future;
use shorty_protocol::{ErrorCode, Reply};
use shorty_service::connection::Kind;
use shorty_service::http::Front;

use crate::driver::state::Core;
use crate::driver::{Listener, Runtime, Socket};
use crate::slots::AddressGuard;

/// Clients one core keeps waiting for a slot; past it, it stops accepting.
pub const MAX_QUEUED: usize = 1024;

/// How long to back off after a failed accept (out of descriptors, or the
/// peer gave up before accept) instead of spinning.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(10);

/// How long the OVERLOADED answer may take to write before the connection
/// is closed regardless.
const REFUSAL_WRITE_TIMEOUT: Duration = Duration::from_secs(1);

/// Accepts connections of `kind` until dropped (at shutdown).
pub async fn run<R: Runtime, L: Listener>(core: Rc<Core<R>>, listener: L, kind: Kind) {
    let queued = Rc::new(std::cell::Cell::new(0usize));
    loop {
        if queued.get() == 0 && core.slots.has_socket_room() {
            listener.resume();
        }
        let conn = if queued.get() >= MAX_QUEUED {
            // The queue is full: accept nothing until a slot frees, so
            // further clients wait in the kernel's backlog. Connections the
            // listener took before it paused (a burst a multishot accept
            // took in one go) are already accepted: they queue too, beyond
            // the bound (at most what the backlog held), and are served or
            // told 503 within `--queue-timeout` like the rest. Refusing
            // them at once turned away clients an accept per connection
            // would have served within seconds (review 18); leaving them
            // in the listener held them in silence (review 17).
            let ahead = async {
                match listener.accepted_ahead().await {
                    Some(conn) => Some(conn),
                    None => std::future::pending().await,
                }
            };
            let freed = async {
                drop(core.slots.acquire().await);
                None
            };
            match future::or(freed, ahead).await {
                Some(conn) => conn,
                None => continue,
            }
        } else {
            match listener.accept().await {
                Ok(conn) => conn,
                Err(err) => {
                    // At most once a second: out of descriptors, this
                    // repeats every `ACCEPT_BACKOFF` (review 18b: 420 lines
                    // in 5 s).
                    if core
                        .accept_warned
                        .borrow_mut()
                        .admit(Instant::now())
                        .is_some()
                    {
                        tracing::warn!(core = core.index, "accept failed: {err}");
                    }
                    core.rt.sleep(ACCEPT_BACKOFF).await;
                    continue;
                }
            }
        };
        if kind == Kind::Http(Front::Admin) {
            // Not counted against the socket budget, so operators reach
            // `/metrics` while clients have spent it: at most
            // `slots::ADMIN_SOCKETS`, out of the reserve.
            let Some(admin) = core.slots.open_admin_socket() else {
                drop(conn);
                continue;
            };
            let serve = crate::driver::conn::serve(core.clone(), conn, kind, None);
            core.rt.spawn(async move {
                serve.await;
                drop(admin);
            });
            continue;
        }
        // Within the open-file limit's budget for client sockets, or closed
        // at once: the process's own files (the next log segment) keep
        // their descriptors.
        let Some((conn, socket)) = open_socket(&core, conn) else {
            // Take nothing ahead (a multishot accept) while the budget is
            // spent: resumed once there is room again.
            listener.pause();
            continue;
        };
        // One address may hold only its share (`--max-connections-per-ip`):
        // refused at once, never queued, so it cannot fill the queue either.
        let mut address = core.slots.admit(conn.peer_ip());
        if address.is_none() {
            // Connections accepted before it may be gone without knowing
            // it yet (`Listener::io_turn`); one turn of the I/O, then ask
            // again. Only on this path: it costs a round trip.
            listener.io_turn().await;
            address = core.slots.admit(conn.peer_ip());
        }
        let Some(address) = address else {
            let c = core.clone();
            core.rt.spawn(async move {
                refuse(&c, conn, kind, PER_IP_REFUSAL).await;
                drop(socket);
            });
            continue;
        };
        if let Some(slot) = core.slots.try_acquire() {
            let serve = crate::driver::conn::serve(
                core.clone(),
                conn,
                kind,
                Some(slot.with_address(address)),
            );
            core.rt.spawn(async move {
                serve.await;
                drop(socket);
            });
            continue;
        }
        // At the limit: from now on one connection per accept, none taken
        // ahead (`Listener::pause`), until no client is queued.
        listener.pause();
        queued.set(queued.get() + 1);
        let (c, q) = (core.clone(), queued.clone());
        core.rt.spawn(async move {
            wait_for_slot(c, conn, kind, address).await;
            q.set(q.get() - 1);
            drop(socket);
        });
    }
}

async fn wait_for_slot<R: Runtime, C: Socket>(
    core: Rc<Core<R>>,
    conn: C,
    kind: Kind,
    address: AddressGuard,
) {
    /// How the wait ended.
    enum Waited {
        Slot(crate::slots::ConnectionSlot),
        TimedOut,
        ShuttingDown,
    }
    /// Counts the client in `Core::queued` while it lives.
    struct Queued<'a, R: Runtime>(&'a Core<R>);
    impl<R: Runtime> Drop for Queued<'_, R> {
        fn drop(&mut self) {
            self.0.queued.set(self.0.queued.get() - 1);
            self.0.conn_closed.notify();
        }
    }
    core.queued.set(core.queued.get() + 1);
    let queued = Queued(&core);
    let slots = core.slots.clone();
    let acquire = async { Waited::Slot(slots.acquire().await) };
    let give_up = async {
        core.rt.sleep(core.queue_timeout).await;
        Waited::TimedOut
    };
    // A queued client was never served and never will be once shutdown
    // begins: it is told so at once (503), instead of waiting for a slot the
    // drain may free only at its end, or for the process's exit to reset it
    // (review 17: on glommio with `--threads 2`, a core's 1,024 queued
    // clients stayed open and unanswered until the other core had drained,
    // ~14 s). The process-wide shutdown channel, cloned only on this path.
    let mut shutdown = core.shutdown.clone();
    let stopping = async {
        shutdown.triggered().await;
        Waited::ShuttingDown
    };
    match future::or(acquire, future::or(give_up, stopping)).await {
        Waited::Slot(slot) => {
            let slot = slot.with_address(address);
            drop(queued);
            crate::driver::conn::serve(core.clone(), conn, kind, Some(slot)).await;
        }
        Waited::TimedOut => refuse(&core, conn, kind, LIMIT_REFUSAL).await,
        Waited::ShuttingDown => refuse(&core, conn, kind, SHUTDOWN_REFUSAL).await,
    }
}

/// Counts `conn` against the socket budget (`slots::socket_budget`), or
/// closes it at once when the budget is spent: no answer (writing one would
/// hold the descriptor longer), and a warning at most once a second.
fn open_socket<R: Runtime, C: Socket>(
    core: &Core<R>,
    conn: C,
) -> Option<(C, crate::slots::SocketGuard)> {
    if let Some(guard) = core.slots.open_socket() {
        return Some((conn, guard));
    }
    drop(conn);
    if core
        .budget_warned
        .borrow_mut()
        .admit(Instant::now())
        .is_some()
    {
        tracing::warn!(
            core = core.index,
            sockets = core.slots.sockets(),
            "out of client sockets (the open-file limit, less a reserve for the log): \
             closing new connections at once"
        );
    }
    None
}

/// What a client beyond `--max-connections` is told.
const LIMIT_REFUSAL: &str =
    "the server is at its connection limit (--max-connections); retry later";

/// What a client still queued for a slot when shutdown begins is told.
const SHUTDOWN_REFUSAL: &str = "the server is shutting down; retry later";

/// What a client whose address holds `--max-connections-per-ip` is told.
const PER_IP_REFUSAL: &str =
    "too many connections from your address (--max-connections-per-ip); retry later";

/// Answers 503 with `message` and closes.
async fn refuse<R: Runtime, C: Socket>(core: &Core<R>, mut conn: C, kind: Kind, message: &str) {
    let mut bytes = Vec::new();
    match kind {
        Kind::Framed => {
            let _ =
                Reply::error(ErrorCode::OVERLOADED, message.as_bytes()).encode_frame(&mut bytes);
        }
        Kind::Http(_) => {
            let mut out = bytes::BytesMut::new();
            shorty_service::http::write(
                &mut out,
                core.shard.borrow().date(),
                &shorty_service::http::Response {
                    status: 503,
                    headers: &[("Retry-After", "1")],
                    body: format!("{message}\n").as_bytes(),
                    head_only: false,
                    keep_alive: false,
                },
            );
            bytes = out.to_vec();
        }
    }
    let proto = match kind {
        Kind::Framed => shorty_service::metrics::Proto::Framed,
        Kind::Http(_) => shorty_service::metrics::Proto::Http,
    };
    core.shard
        .borrow()
        .metrics()
        .request(proto, shorty_service::metrics::Op::Other, 503);
    conn.start_write(Bytes::from(bytes));
    let write = std::future::poll_fn(|cx| conn.poll_write(cx));
    let late = async {
        core.rt.sleep(REFUSAL_WRITE_TIMEOUT).await;
        Ok(())
    };
    let _ = future::or(write, late).await;
    conn.close().await;
}
