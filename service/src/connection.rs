//! One connection's outgoing replies, kept in request order.
//!
//! A SHORTEN's reply may only go out once its log record is durable, and the
//! replies after it must wait for it, since replies carry no request id. The
//! queue holds encoded bytes that may go out now (`ready`) and, behind the
//! first pending SHORTEN, a list of waiting entries, each a pending SHORTEN
//! followed by the encoded replies that came after it. The success reply of
//! a SHORTEN is encoded only when its fate is known, so a failed sync turns
//! into an error reply in the right place.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use shorty_protocol::Reply;

use crate::handler::InputOutcome;
use crate::log::{Ticket, TicketStatus};

/// A SHORTEN waiting for its record to become durable.
#[derive(Debug)]
pub(crate) struct PendingShorten {
    pub(crate) ticket: Ticket,
    pub(crate) key: u64,
    /// Answer in the seed's bare format rather than SHORTENED.
    pub(crate) bare: bool,
    /// Replies to later requests, encoded, waiting behind this one.
    after: BytesMut,
}

/// The outgoing side of one connection.
#[derive(Debug, Default)]
pub struct ReplyQueue {
    ready: BytesMut,
    waiting: VecDeque<PendingShorten>,
    close_after_flush: bool,
}

impl ReplyQueue {
    /// An empty queue.
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends an encoded reply behind everything queued.
    pub(crate) fn push<B: AsRef<[u8]>>(&mut self, reply: &Reply<B>) {
        self.push_with(|dst| {
            dst.reserve(reply.encoded_len());
            // Replies built by the service are valid by construction; a
            // failure here would be a bug, and dropping the reply would
            // desynchronise the client, so it is surfaced loudly in debug
            // builds only.
            let encoded = reply.encode(dst);
            debug_assert!(encoded.is_ok(), "service built an unencodable reply");
        });
    }

    /// Lets `write` append bytes (an encoded reply, HTTP responses) behind
    /// everything queued, and returns what it returns.
    pub(crate) fn push_with<R>(&mut self, write: impl FnOnce(&mut BytesMut) -> R) -> R {
        let dst = match self.waiting.back_mut() {
            Some(last) => &mut last.after,
            None => &mut self.ready,
        };
        write(dst)
    }

    /// Queues a SHORTEN whose reply waits for `ticket`.
    pub(crate) fn push_pending(&mut self, ticket: Ticket, key: u64, bare: bool) {
        self.waiting.push_back(PendingShorten {
            ticket,
            key,
            bare,
            after: BytesMut::new(),
        });
    }

    /// Moves every reply whose SHORTENs are settled to the ready bytes,
    /// encoding each settled SHORTEN's reply with `settle`.
    pub(crate) fn release(
        &mut self,
        status: impl Fn(Ticket) -> TicketStatus,
        mut settle: impl FnMut(&PendingShorten, TicketStatus, &mut BytesMut),
    ) {
        while let Some(front) = self.waiting.front() {
            let state = status(front.ticket);
            if state == TicketStatus::Pending {
                break;
            }
            if let Some(entry) = self.waiting.pop_front() {
                settle(&entry, state, &mut self.ready);
                self.ready.extend_from_slice(&entry.after);
            }
        }
    }

    /// Takes the bytes that may be written now.
    pub fn take_ready(&mut self) -> Option<Bytes> {
        (!self.ready.is_empty()).then(|| self.ready.split().freeze())
    }

    /// `true` when replies wait for a sync.
    pub fn has_pending(&self) -> bool {
        !self.waiting.is_empty()
    }

    /// Marks the connection to be closed once everything queued is written.
    pub(crate) fn close_after_flush(&mut self) {
        self.close_after_flush = true;
    }

    /// `true` when the connection must be closed after the queued replies.
    pub fn closing(&self) -> bool {
        self.close_after_flush
    }
}

/// Which limit the next read runs under.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReadLimit {
    /// No frame has started: `--idle-timeout` from the last activity.
    Idle,
    /// A frame has started: it must be complete within `--frame-timeout`
    /// of its first byte (slowloris defence).
    Frame,
}

/// Tracks when the frame (or HTTP request head) in progress started, to
/// pick the next read's timeout. Sans-IO: the caller passes `now`.
#[derive(Debug, Clone)]
pub struct ReadTimer {
    idle: Duration,
    frame: Duration,
    frame_started: Option<Instant>,
}

impl ReadTimer {
    /// A timer with no frame in progress: `idle` between frames, `frame`
    /// for a whole frame from its first byte.
    pub fn new(idle: Duration, frame: Duration) -> Self {
        Self {
            idle,
            frame,
            frame_started: None,
        }
    }

    /// Records what the last read's bytes amounted to.
    pub fn after_input(&mut self, outcome: &InputOutcome, now: Instant) {
        self.frame_started = match (outcome.mid_frame, outcome.consumed) {
            (false, _) => None,
            // A frame completed and the next one began in this read.
            (true, consumed) if consumed > 0 => Some(now),
            // The same frame is still arriving.
            (true, _) => Some(self.frame_started.unwrap_or(now)),
        };
    }

    /// How long the next read may wait, and under which limit.
    pub fn next_timeout(&self, now: Instant) -> (Duration, ReadLimit) {
        match self.frame_started {
            Some(start) => (
                (start + self.frame).saturating_duration_since(now),
                ReadLimit::Frame,
            ),
            None => (self.idle, ReadLimit::Idle),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_frame_timeout_runs_from_a_frame_s_first_byte() {
        let t0 = Instant::now();
        let mut timer = ReadTimer::new(Duration::from_secs(60), Duration::from_secs(5));
        assert_eq!(
            timer.next_timeout(t0),
            (Duration::from_secs(60), ReadLimit::Idle)
        );
        let partial = InputOutcome {
            consumed: 0,
            mid_frame: true,
            close: false,
        };
        timer.after_input(&partial, t0);
        // More bytes of the same frame do not restart the clock.
        timer.after_input(&partial, t0 + Duration::from_secs(3));
        let (left, limit) = timer.next_timeout(t0 + Duration::from_secs(4));
        assert_eq!((left, limit), (Duration::from_secs(1), ReadLimit::Frame));
        // A completed frame followed by a new partial one restarts it.
        let next = InputOutcome {
            consumed: 10,
            mid_frame: true,
            close: false,
        };
        timer.after_input(&next, t0 + Duration::from_secs(4));
        assert_eq!(
            timer.next_timeout(t0 + Duration::from_secs(4)).0,
            Duration::from_secs(5)
        );
        let done = InputOutcome {
            consumed: 10,
            mid_frame: false,
            close: false,
        };
        timer.after_input(&done, t0 + Duration::from_secs(6));
        assert_eq!(timer.next_timeout(t0).1, ReadLimit::Idle);
    }
}
