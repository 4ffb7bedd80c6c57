//! One connection's outgoing replies, in request order.
//!
//! Replies carry no request id, so they must leave in the order requests
//! came. A reply that waits — for its record to be durable, a URL to be
//! read, the remote store, or the `--delay` demo — holds back every reply
//! behind it. The queue keeps the bytes that may go out now (`ready`) and,
//! behind the first waiting reply, a list of waiting entries, each a
//! wait followed by the encoded replies that came after it. A waiting
//! reply is encoded only when its outcome is known, so a failure becomes an
//! error reply in the right place.
//!
//! The queue counts its bytes, so the connection can stop reading once
//! `--max-output-bytes` are queued (back-pressure).

use std::collections::VecDeque;
use std::time::Instant;

use bytes::{Bytes, BytesMut};
use shorty_protocol::{ErrorCode, Reply};

/// Output bytes a waiting SHORTEN (or `--delay` hold) counts as until it
/// is encoded: a short URL's reply, generously.
pub const WAIT_COST: usize = 256;

/// An operation of the core's shard a reply waits for.
pub type OpId = u32;

/// How a waiting reply is encoded once its operation is done.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Render {
    /// A SHORTEN: SHORTENED, or the seed's bare URL.
    Shortened {
        /// The seed's format.
        bare: bool,
    },
    /// A RESOLVE: RESOLVED.
    Resolved,
    /// An HTTP redirect.
    Redirect {
        /// HEAD: no body.
        head_only: bool,
        /// Keep the connection open.
        keep_alive: bool,
        /// The visitor's query, to forward into the URL (only when
        /// forwarding is on and there is one).
        query: Option<Box<str>>,
    },
    /// The QR code of a link's short URL (the web page's API), once the
    /// code is known to hold a link.
    Qr {
        /// The link's code.
        code: Box<str>,
        /// SVG or PNG.
        format: crate::page::qr::Format,
        /// HEAD: no body.
        head_only: bool,
        /// Keep the connection open.
        keep_alive: bool,
    },
    /// A JSON API response ([`crate::api`]).
    Api {
        /// What the API call wants shown.
        view: ApiView,
        /// HEAD: no body.
        head_only: bool,
        /// Keep the connection open.
        keep_alive: bool,
    },
    /// A protocol-version-2 link request: its reply carries the link (or
    /// nothing, for DELETE).
    Link(LinkReply),
}

/// Which version-2 reply a link operation's outcome is rendered as.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LinkReply {
    /// SHORTEN2: SHORTENED2.
    Shortened2,
    /// UPDATE: UPDATED.
    Updated,
    /// DELETE: DELETED.
    Deleted,
    /// INFO: INFO.
    Info,
    /// STATS: STATS (a link's click statistics).
    Stats,
}

/// What a JSON API call renders once its operation is done.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ApiView {
    /// `POST /api/v1/links`: 201 and the new link, made for this URL.
    Created {
        /// The long URL (the store's answer holds only the key).
        url: Box<str>,
    },
    /// `GET /api/v1/links/{code}`: the link (with its click totals when
    /// `principal` may read them).
    Link {
        /// The code asked for.
        code: Box<str>,
        /// Who asked.
        principal: crate::link::Principal,
    },
    /// `PATCH /api/v1/links/{code}`: 200 and the changed link.
    Updated,
    /// `DELETE /api/v1/links/{code}`: 204.
    Deleted,
    /// `GET /api/v1/links/{code}/stats`: the series.
    Stats {
        /// `hour` or `day`, as asked.
        granularity: &'static str,
    },
    /// `GET /api/v1/links`: one INFO per index entry, in this order
    /// ([`crate::owners`]).
    Page {
        /// Whose links.
        owner: u32,
        /// The entries read, newest first.
        entries: Box<[crate::owners::Entry]>,
        /// The cursor of the next page (`None`: this is the last).
        next: Option<String>,
        /// Who asked.
        principal: crate::link::Principal,
    },
    /// `POST /api/v1/links/bulk`: one create per item, in order.
    Bulk {
        /// Each item in order: its long URL (a plain store's answer holds
        /// only the key) when it was created, or the problem that kept it
        /// from being tried (invalid, rate-limited).
        items: Box<[Result<Box<str>, crate::api::Problem>]>,
    },
}

/// What a reply waits for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Wait {
    /// An operation of the shard.
    Op {
        /// The operation.
        op: OpId,
        /// How to encode the reply.
        render: Render,
        /// When to give up and answer 503.
        deadline: Instant,
    },
    /// The `--delay` demo: nothing before this time.
    Until(Instant),
    /// Several operations answered as one reply (a listing, a bulk
    /// creation): rendered once every one is done, in this order; one
    /// still waiting at the deadline is answered 503 in its place.
    Many {
        /// The operations (an outcome known at once is a settled op).
        ops: Box<[OpId]>,
        /// How to encode the reply.
        render: Render,
        /// When to give up on the ones still waiting.
        deadline: Instant,
    },
}

impl Wait {
    /// When this wait needs the clock.
    pub fn deadline(&self) -> Instant {
        match *self {
            Wait::Op { deadline, .. } | Wait::Until(deadline) | Wait::Many { deadline, .. } => {
                deadline
            }
        }
    }
}

#[derive(Debug)]
struct Waiting {
    wait: Wait,
    after: BytesMut,
    /// What the wait counts against the cap until it is encoded.
    cost: usize,
}

/// The largest output buffer a connection keeps for its next replies
/// (see [`Output::take_ready`]): room for a redirect with a long URL, small
/// enough that idle connections hold little.
pub const REUSED_BUFFER: usize = 4096;

/// The outgoing side of one connection.
#[derive(Debug, Default)]
pub struct Output {
    ready: BytesMut,
    waiting: VecDeque<Waiting>,
    /// Bytes in `ready` and every `after`, plus [`WAIT_COST`] per wait.
    queued: usize,
    /// Bytes of the write in flight (taken by [`Output::take_ready`], not
    /// yet [`written`](Output::written)): they still count against the
    /// cap, or a peer could hold a full write plus a full queue.
    in_flight: usize,
    /// This connection's writes (an alias created, a link updated or
    /// deleted) that its later requests wait for: see
    /// [`Shard::held_back`](crate::shard::Shard::held_back).
    holds: Vec<OpId>,
}

/// What [`Output::release`]'s callback says of the front wait.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Released {
    /// Settled: its reply (if any) was written; go on.
    Done,
    /// Still waiting.
    Pending,
}

impl Output {
    /// An empty queue.
    pub fn new() -> Self {
        Self::default()
    }

    /// Lets `write` append bytes (an encoded reply, an HTTP response)
    /// behind everything queued, and returns what it returns.
    pub fn push_with<R>(&mut self, write: impl FnOnce(&mut BytesMut) -> R) -> R {
        let dst = match self.waiting.back_mut() {
            Some(last) => &mut last.after,
            None => &mut self.ready,
        };
        let before = dst.len();
        let result = write(dst);
        self.queued += dst.len() - before;
        result
    }

    /// Appends an encoded reply behind everything queued.
    pub fn push<B: AsRef<[u8]>>(&mut self, reply: &Reply<B>) {
        self.push_with(|dst| encode_reply(reply, dst));
    }

    /// Queues a reply that waits, counted as `cost` bytes against the cap
    /// until it is encoded: what the reply can grow to (for a RESOLVE, the
    /// largest URL), so that waiting replies cannot hold more than the cap
    /// once they settle.
    pub fn push_wait(&mut self, wait: Wait, cost: usize) {
        self.queued += cost;
        self.waiting.push_back(Waiting {
            wait,
            after: BytesMut::new(),
            cost,
        });
    }

    /// Makes this connection's later requests wait until operation `op`
    /// is no longer in flight (see
    /// [`Shard::held_back`](crate::shard::Shard::held_back)).
    pub fn hold_after(&mut self, op: OpId) {
        self.holds.push(op);
    }

    /// Keeps the holds `in_flight` says are still in flight; `true` if
    /// any is.
    pub fn holds_in_flight(&mut self, mut in_flight: impl FnMut(OpId) -> bool) -> bool {
        self.holds.retain(|&op| in_flight(op));
        !self.holds.is_empty()
    }

    /// Settles waits from the front while `settle` says they are done,
    /// moving their replies and what came after them to the ready bytes.
    /// `settle` writes the reply (if any) into the buffer it is given.
    pub fn release(&mut self, mut settle: impl FnMut(&Wait, &mut BytesMut) -> Released) {
        while let Some(front) = self.waiting.front() {
            let before = self.ready.len();
            if settle(&front.wait, &mut self.ready) == Released::Pending {
                debug_assert_eq!(self.ready.len(), before, "a pending wait wrote bytes");
                break;
            }
            self.queued += self.ready.len() - before;
            if let Some(entry) = self.waiting.pop_front() {
                self.queued -= entry.cost;
                self.ready.extend_from_slice(&entry.after);
            }
        }
    }

    /// Takes the bytes that may be written now.
    pub fn take_ready(&mut self) -> Option<Bytes> {
        if self.ready.is_empty() {
            return None;
        }
        // A small buffer (a redirect, a RESOLVED) is split off: the write
        // and the next replies share its allocation, and once the write is
        // done (the socket drops its bytes) the next reply that needs the
        // room reclaims the whole buffer in place, so a keep-alive
        // connection's replies allocate nothing at steady state. A large
        // one is taken whole: split, it would leave the rest of its
        // capacity here, sharing one allocation with the write in flight,
        // so the next replies would grow a second buffer beside it: a peer
        // that never reads then held about twice the cap (300 such peers:
        // 157 MiB at a 256 KiB cap; now 87 MiB), and an idle connection
        // kept its last buffer's spare capacity (now at most
        // `REUSED_BUFFER`).
        let bytes = if self.ready.capacity() <= REUSED_BUFFER {
            self.ready.split().freeze()
        } else {
            std::mem::take(&mut self.ready).freeze()
        };
        self.queued -= bytes.len();
        self.in_flight += bytes.len();
        Some(bytes)
    }

    /// The write handed out by [`take_ready`](Self::take_ready) completed.
    pub fn written(&mut self) {
        self.in_flight = 0;
    }

    /// The front wait, if any.
    pub fn front(&self) -> Option<&Wait> {
        self.waiting.front().map(|w| &w.wait)
    }

    /// `true` when a reply waits.
    pub fn has_waiting(&self) -> bool {
        !self.waiting.is_empty()
    }

    /// `true` when nothing is queued at all.
    pub fn is_empty(&self) -> bool {
        self.waiting.is_empty() && self.ready.is_empty()
    }

    /// Reply bytes queued, counting each wait as its cost.
    pub fn queued_bytes(&self) -> usize {
        self.queued
    }

    /// Bytes counted against `--max-output-bytes`: those queued and those
    /// of the write in flight.
    pub fn committed_bytes(&self) -> usize {
        self.queued + self.in_flight
    }

    /// Removes every wait (the connection is going away), calling `drop`
    /// for each so its operation can be abandoned.
    pub fn abandon(&mut self, mut drop: impl FnMut(&Wait)) {
        for entry in self.waiting.drain(..) {
            drop(&entry.wait);
        }
        self.ready.clear();
        self.queued = 0;
        self.in_flight = 0;
    }
}

/// Appends `reply` as one frame. Replies built by the core are valid by
/// construction, but one the protocol crate refuses (say, a stored URL with
/// a control byte, which no reply may carry) is answered `ERROR 500` in its
/// place: dropping it would desynchronise the client's replies.
pub(crate) fn encode_reply<B: AsRef<[u8]>>(reply: &Reply<B>, dst: &mut BytesMut) {
    dst.reserve(reply.frame_len());
    if reply.encode_frame(dst).is_err() {
        let internal = Reply::error(ErrorCode::INTERNAL, &b"the reply could not be encoded"[..]);
        let _ = internal.encode_frame(dst);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn replies_behind_a_wait_wait_with_it_and_bytes_are_counted() {
        let now = Instant::now();
        let mut out = Output::new();
        out.push(&Reply::Pong(&b"1"[..]));
        out.push_wait(Wait::Until(now + Duration::from_secs(1)), WAIT_COST);
        out.push(&Reply::Pong(&b"2"[..]));
        assert_eq!(out.queued_bytes(), 2 * 6 + WAIT_COST);
        let first = out.take_ready().unwrap();
        assert_eq!(first.len(), 6);
        assert!(out.take_ready().is_none(), "the second waits");
        out.release(|_, _| Released::Pending);
        assert!(out.take_ready().is_none());
        out.release(|_, dst| {
            dst.extend_from_slice(b"w");
            Released::Done
        });
        assert_eq!(&out.take_ready().unwrap()[..], b"w\x02\x00\x00\x00\x122");
        assert_eq!(out.queued_bytes(), 0);
        assert!(out.is_empty());
    }

    #[test]
    fn a_reply_the_protocol_refuses_is_answered_internal_in_its_place() {
        let mut out = Output::new();
        out.push(&Reply::Resolved(&b"https://e.com/\x01"[..]));
        out.push(&Reply::Pong(&b"next"[..]));
        let mut wire = BytesMut::from(&out.take_ready().unwrap()[..]);
        let decoder = shorty_protocol::frame::FrameDecoder::new();
        let mut replies = Vec::new();
        while let shorty_protocol::frame::Status::Complete(p) = decoder.decode(&mut wire).unwrap() {
            replies.push(Reply::decode_payload(p).unwrap());
        }
        assert_eq!(replies.len(), 2, "one reply per request, still in step");
        assert_eq!(
            replies[0].as_error().map(|e| e.0),
            Some(ErrorCode::INTERNAL)
        );
        assert_eq!(replies[1], Reply::Pong(Bytes::from_static(b"next")));
    }

    #[test]
    fn a_write_takes_its_whole_buffer() {
        let mut out = Output::new();
        for _ in 0..1000 {
            out.push(&Reply::Pong(&b"0123456789"[..]));
        }
        let in_flight = out.take_ready().unwrap();
        // Nothing is kept beside the write in flight: the next replies do
        // not grow a second buffer next to a shared one, and a connection
        // that goes idle holds no output buffer.
        assert_eq!(out.ready.capacity(), 0);
        out.push(&Reply::Pong(&b"x"[..]));
        let next = out.take_ready().unwrap();
        let span = in_flight.as_ptr_range();
        assert!(
            !span.contains(&next.as_ptr()),
            "the next write shares the buffer in flight"
        );
        // A small write's buffer is kept for the next replies, and no more.
        assert!(out.ready.capacity() <= REUSED_BUFFER);
    }

    #[test]
    fn replies_stay_whole_when_a_small_buffer_is_used_again() {
        // (That it is used again, so a keep-alive redirect allocates
        // nothing, is tests/click_alloc.rs's, under a counting allocator.)
        let mut out = Output::new();
        let reply = Reply::Resolved(&b"https://example.com/a/long/enough/url"[..]);
        out.push(&reply);
        let first = out.take_ready().unwrap();
        let expected = Bytes::copy_from_slice(&first);
        drop(first);
        out.written();
        for _ in 0..100 {
            out.push(&reply);
            let write = out.take_ready().unwrap();
            assert_eq!(write, expected);
            drop(write);
            out.written();
            assert!(out.ready.capacity() <= REUSED_BUFFER);
        }
    }
}
