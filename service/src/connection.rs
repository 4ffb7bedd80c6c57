//! One client connection as a state machine with no I/O, after
//! quinn-proto's `Connection`.
//!
//! The backend's I/O loop feeds it what it reads
//! ([`handle_input`](Connection::handle_input), with `now`), writes what it
//! hands out ([`poll_transmit`](Connection::poll_transmit), then
//! [`transmitted`](Connection::transmitted)), asks whether to read at all
//! ([`wants_read`](Connection::wants_read)), arms the core's timer with
//! [`poll_timeout`](Connection::poll_timeout) and reports it with
//! [`handle_timeout`](Connection::handle_timeout), and closes the socket
//! once [`is_closed`](Connection::is_closed) (first shutting down the
//! write side when [`poll_shutdown`](Connection::poll_shutdown) asks for a
//! lingering close). Everything else lives here:
//! request order and pipelining, every timeout (idle, frame or HTTP head,
//! write stall, the wait for durability or a read), close-after-error, the
//! `--delay` demo, and back-pressure.
//!
//! **Full duplex.** Reading never waits for replies: while earlier replies
//! wait for a sync or a read, later requests keep arriving and queue
//! (their records join the next batch), up to the output cap.
//!
//! **Bounded memory.** Reply bytes queued, in flight, plus a fixed cost per
//! waiting reply, are capped at `--max-output-bytes`: past it the
//! connection stops reading (and stops taking requests out of what it has
//! read), so a peer that pipelines and never reads holds at most the cap; if
//! it still does not read within `--write-timeout`, it is closed.
//!
//! **No read buffer while idle.** Input is handed in by reference; only the
//! unfinished part of a request is copied into the connection, and that
//! buffer is freed as soon as the request completes.

use std::time::{Duration, Instant};

use bytes::Bytes;
use shorty_protocol::{ErrorCode, Reply};

use crate::front::wire::Session;
use crate::http::{self, Front, Response};
use crate::metrics::{Op, Proto};
use crate::output::Output;
use crate::settings::Settings;
use crate::shard::{InputOutcome, Shard};

/// What a connection speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Length-prefixed frames: the Shorty protocol.
    Framed,
    /// HTTP/1.1, on one of the fronts.
    Http(Front),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Reading requests.
    Open,
    /// No more reading; close once everything queued is written (after
    /// the peer's end of stream, an error reply, a request timeout, or at
    /// shutdown).
    Draining,
    /// Everything is written and the write side shut down: read and
    /// discard what the peer still sends, until it closes, `left` more
    /// bytes arrive, or `until` (lingering close).
    Lingering {
        /// When to stop waiting for the peer's close.
        until: Instant,
        /// Bytes still to discard before giving up.
        left: usize,
    },
    /// Close now, dropping what is queued (idle, write stall, transport
    /// failure).
    Closed,
}

/// Why a connection closed, for logs and tests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CloseReason {
    /// Still open.
    None,
    /// Everything was answered and the connection drained.
    Drained,
    /// Nothing arrived for `--idle-timeout`.
    Idle,
    /// The peer did not read its replies for `--write-timeout`.
    WriteStall,
    /// The transport failed.
    Error,
}

/// One connection.
#[derive(Debug)]
pub struct Connection {
    id: u32,
    kind: Kind,
    state: State,
    reason: CloseReason,
    out: Output,
    /// Input kept between reads: an unfinished request, or requests held
    /// back by the output cap. Empty (no allocation) when idle.
    input: Vec<u8>,
    /// `input` holds whole requests not yet handled (back-pressure).
    held: bool,
    /// When the unfinished request at the end of `input` began.
    request_started: Option<Instant>,
    /// That request's head is in and its body is arriving.
    in_body: bool,
    last_input: Instant,
    /// Since when the write in flight has been (its bytes are counted by
    /// `out`).
    writing: Option<Instant>,
    /// Once drained, shut down the write side and linger rather than
    /// close: the server is closing while the peer may still be sending.
    linger: bool,
    /// A framed connection's negotiated version and caller.
    session: Session,
    /// The peer's address (rate limits per client).
    peer: Option<std::net::IpAddr>,
}

impl Connection {
    /// A new connection `id` (unique on its core), accepted at `now`.
    pub fn new(id: u32, kind: Kind, now: Instant) -> Self {
        Self {
            id,
            kind,
            state: State::Open,
            reason: CloseReason::None,
            out: Output::new(),
            input: Vec::new(),
            held: false,
            request_started: None,
            in_body: false,
            last_input: now,
            writing: None,
            linger: false,
            session: Session::default(),
            peer: None,
        }
    }

    /// Sets the peer's address, which per-client rate limits count.
    pub fn set_peer(&mut self, peer: Option<std::net::IpAddr>) {
        self.peer = peer;
    }

    /// Its id.
    pub fn id(&self) -> u32 {
        self.id
    }

    fn proto(&self) -> Proto {
        match self.kind {
            Kind::Framed => Proto::Framed,
            Kind::Http(_) => Proto::Http,
        }
    }

    /// Bytes counted against the output cap.
    fn committed(&self) -> usize {
        self.out.committed_bytes()
    }

    fn handle(&mut self, shard: &mut Shard, input: &[u8], now: Instant) -> InputOutcome {
        shard.set_peer(self.peer);
        match self.kind {
            Kind::Framed => {
                shard.handle_frames(self.id, &mut self.session, input, &mut self.out, now)
            }
            Kind::Http(front) => shard.handle_http(self.id, front, input, &mut self.out, now),
        }
    }

    /// Records what handling the input amounted to.
    fn after_input(&mut self, outcome: &InputOutcome, rest: usize, now: Instant) {
        if outcome.close {
            // Input left unread (a refused head, bytes after a last
            // request) means the peer is likely still sending.
            self.linger_if(rest > 0 || outcome.mid_frame);
            self.state = State::Draining;
            self.input = Vec::new();
            self.held = false;
            self.request_started = None;
            return;
        }
        self.held = !outcome.mid_frame && rest > 0;
        self.in_body = outcome.in_body;
        self.request_started = match (outcome.mid_frame, outcome.consumed) {
            (false, _) => None,
            // A request completed and the next one began in this input.
            (true, consumed) if consumed > 0 => Some(now),
            // The same request is still arriving.
            (true, _) => Some(self.request_started.unwrap_or(now)),
        };
    }

    /// Chooses a lingering close for a connection the server closes while
    /// the peer may still be sending, whatever it speaks. Closing with
    /// unread bytes in the socket makes the kernel answer with a reset,
    /// which can destroy the answer before the client reads it (an HTTP
    /// 414 after a 100 KB request line, a framed ERROR 413 after a frame
    /// over the limit, either's 408); nginx's `lingering_close` is the same
    /// remedy. The bounds are `--linger-bytes` and
    /// `--linger-timeout` for both protocols.
    fn linger_if(&mut self, peer_may_send: bool) {
        if peer_may_send {
            self.linger = true;
        }
    }

    /// Bytes from the peer.
    pub fn handle_input(&mut self, shard: &mut Shard, bytes: &[u8], now: Instant) {
        if let State::Lingering { until, left } = self.state {
            // Discarded: only their count matters.
            match left.checked_sub(bytes.len()) {
                Some(left) if left > 0 => self.state = State::Lingering { until, left },
                _ => self.close(CloseReason::Drained),
            }
            return;
        }
        if self.state != State::Open || bytes.is_empty() {
            return;
        }
        self.last_input = now;
        if self.input.is_empty() {
            let outcome = self.handle(shard, bytes, now);
            let rest = bytes.get(outcome.consumed..).unwrap_or_default();
            self.after_input(&outcome, rest.len(), now);
            if self.state == State::Open {
                self.input.extend_from_slice(rest);
            }
        } else {
            self.input.extend_from_slice(bytes);
            self.handle_held(shard, now);
        }
    }

    /// Handles what `input` holds.
    fn handle_held(&mut self, shard: &mut Shard, now: Instant) {
        let input = std::mem::take(&mut self.input);
        let outcome = self.handle(shard, &input, now);
        let rest = input.len() - outcome.consumed.min(input.len());
        self.after_input(&outcome, rest, now);
        if self.state != State::Closed && !outcome.close {
            if rest == 0 {
                // Idle again: give the buffer back.
                self.input = Vec::new();
            } else {
                let mut input = input;
                input.drain(..outcome.consumed);
                self.input = input;
            }
        }
    }

    /// The peer closed its sending side: answer what was asked, then close.
    pub fn handle_eof(&mut self) {
        if matches!(self.state, State::Lingering { .. }) {
            return self.close(CloseReason::Drained);
        }
        if self.state == State::Open {
            self.state = State::Draining;
            if !self.held {
                self.input = Vec::new();
                self.request_started = None;
            }
        }
    }

    /// The transport failed: close at once.
    pub fn handle_error(&mut self) {
        self.close(CloseReason::Error);
    }

    fn close(&mut self, reason: CloseReason) {
        self.state = State::Closed;
        self.reason = reason;
    }

    /// The bytes to write next, if a write may start now. At most one
    /// write is in flight: call [`transmitted`](Self::transmitted) when it
    /// completes.
    pub fn poll_transmit(&mut self, shard: &mut Shard, now: Instant) -> Option<Bytes> {
        if self.state == State::Closed {
            return None;
        }
        let cap = shard.shared().settings.max_output_bytes;
        if self.held && self.committed() < cap {
            self.handle_held(shard, now);
        }
        self.out.release(|wait, dst| shard.settle(wait, dst, now));
        if self.writing.is_some() {
            return None;
        }
        let bytes = self.out.take_ready()?;
        self.writing = Some(now);
        Some(bytes)
    }

    /// `true` once, when the I/O loop should shut down the socket's write
    /// side (everything is written, the peer may still be sending) and go
    /// on reading: the connection then discards what arrives, and closes
    /// at the peer's end of stream or after `--linger-bytes` or
    /// `--linger-timeout`, whichever comes first.
    pub fn poll_shutdown(&mut self, settings: &Settings, now: Instant) -> bool {
        if self.state != State::Draining
            || !self.linger
            || !self.out.is_empty()
            || self.writing.is_some()
            || self.held
        {
            return false;
        }
        self.linger = false;
        self.state = State::Lingering {
            until: now + settings.linger_timeout,
            left: settings.linger_bytes.max(1),
        };
        true
    }

    /// The write handed out by [`poll_transmit`](Self::poll_transmit)
    /// completed.
    pub fn transmitted(&mut self) {
        self.writing = None;
        self.out.written();
    }

    /// `true` when the I/O loop should read: open, not held back by the
    /// output cap.
    pub fn wants_read(&self, settings: &Settings) -> bool {
        matches!(self.state, State::Lingering { .. })
            || (self.state == State::Open
                && !self.held
                && self.committed() < settings.max_output_bytes)
    }

    /// `true` when a write is in flight and its completion alone would
    /// change nothing the I/O loop does before the connection's next
    /// input, deadline or settled operation: the connection is open and
    /// reading, and no other reply is queued behind the write. Each of
    /// those wakes the loop anyway, and the loop then learns of the
    /// completion in passing, so it need not be woken for the completion
    /// itself: on a keep-alive connection that is one wake-up fewer per
    /// request (issue 23). The write-stall deadline stays armed meanwhile,
    /// so a write that never completes is still closed after
    /// `--write-timeout`; the loop must check the write before it judges
    /// that deadline. And the idle deadline the completion would arm must
    /// come no earlier than that stall deadline, so the loop learns of the
    /// completion before an idle close can be due: otherwise (an
    /// `--idle-timeout` shorter than `--write-timeout`, or input last read
    /// long before the write began) an idle connection stayed open, holding
    /// its slot, until the stall deadline (review 19).
    pub fn write_completion_can_wait(&self, settings: &Settings) -> bool {
        self.writing.is_some_and(|since| {
            self.last_input + settings.idle_timeout >= since + settings.write_timeout
        }) && self.state == State::Open
            && self.out.is_empty()
            && self.wants_read(settings)
    }

    fn request_timeout(&self, settings: &Settings) -> Duration {
        match self.kind {
            Kind::Framed => settings.frame_timeout,
            // A body gets its own time once the head is in (measured from
            // the request's start, so the head's unused time carries over).
            Kind::Http(_) if self.in_body => {
                settings.http_header_timeout + settings.api_body_timeout
            }
            Kind::Http(_) => settings.http_header_timeout,
        }
    }

    fn is_idle(&self) -> bool {
        self.state == State::Open
            && self.out.is_empty()
            && self.writing.is_none()
            && self.input.is_empty()
    }

    /// When the connection next needs [`handle_timeout`](Self::handle_timeout)
    /// (or, for a waiting reply's deadline,
    /// [`poll_transmit`](Self::poll_transmit)).
    pub fn poll_timeout(&self, settings: &Settings) -> Option<Instant> {
        match self.state {
            State::Closed => return None,
            State::Lingering { until, .. } => return Some(until),
            _ => {}
        }
        let request = self
            .request_started
            .filter(|_| self.state == State::Open)
            .map(|t| t + self.request_timeout(settings));
        let stall = self.writing.map(|since| since + settings.write_timeout);
        let wait = self.out.front().map(|w| w.deadline());
        let idle = self
            .is_idle()
            .then(|| self.last_input + settings.idle_timeout);
        [request, stall, wait, idle].into_iter().flatten().min()
    }

    /// Applies every timeout due at `now`.
    pub fn handle_timeout(&mut self, shard: &mut Shard, now: Instant) {
        let settings = shard.shared().settings.clone();
        if let State::Lingering { until, .. } = self.state {
            if now >= until {
                self.close(CloseReason::Drained);
            }
            return;
        }
        if self
            .writing
            .is_some_and(|since| now >= since + settings.write_timeout)
        {
            return self.close(CloseReason::WriteStall);
        }
        if self.is_idle() && now >= self.last_input + settings.idle_timeout {
            return self.close(CloseReason::Idle);
        }
        let request_due = self
            .request_started
            .is_some_and(|t| now >= t + self.request_timeout(&settings));
        if self.state == State::Open && request_due {
            // Slowloris: tell the client why, behind the replies it is
            // owed, and close.
            shard.metrics().request(self.proto(), Op::Other, 408);
            match self.kind {
                Kind::Framed => self.out.push(&Reply::error(
                    ErrorCode::TIMEOUT,
                    &b"frame not completed within the frame timeout"[..],
                )),
                Kind::Http(_) => self.out.push_with(|dst| {
                    http::write(
                        dst,
                        shard.date(),
                        &Response {
                            status: 408,
                            headers: &[],
                            body: b"request not completed in time\n",
                            head_only: false,
                            keep_alive: false,
                        },
                    )
                }),
            }
            self.linger_if(true);
            self.state = State::Draining;
            self.input = Vec::new();
            self.held = false;
            self.request_started = None;
        }
    }

    /// Begins shutdown: no more reading; requests already read are
    /// answered, then the connection closes. An idle connection closes now.
    pub fn begin_shutdown(&mut self) {
        // Lingering is a courtesy the shutdown deadline has no room for.
        self.linger = false;
        if self.is_idle() || matches!(self.state, State::Lingering { .. }) {
            return self.close(CloseReason::Drained);
        }
        if self.state == State::Open {
            self.state = State::Draining;
            if !self.held {
                self.input = Vec::new();
                self.request_started = None;
            }
        }
    }

    /// `true` when the socket should be closed now.
    pub fn is_closed(&self) -> bool {
        self.state == State::Closed
            || (self.state == State::Draining
                && self.out.is_empty()
                && self.writing.is_none()
                && !self.held
                && !self.linger)
    }

    /// Why it closed.
    pub fn close_reason(&self) -> CloseReason {
        match self.reason {
            CloseReason::None if self.is_closed() => CloseReason::Drained,
            reason => reason,
        }
    }

    /// Drops what is still queued; operations waited for are abandoned.
    /// Call once the connection is done with.
    pub fn abandon(&mut self, shard: &mut Shard) {
        self.out.abandon(|wait| shard.abandon(wait));
    }

    /// Reply bytes counted against `--max-output-bytes`: queued, and of
    /// the write in flight.
    pub fn output_bytes(&self) -> usize {
        self.committed()
    }

    /// Bytes of input the connection holds (0 when idle).
    pub fn buffered_input(&self) -> usize {
        self.input.capacity()
    }
}
