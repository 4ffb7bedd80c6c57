//! Request handling for one shard (one thread), sans-IO.
//!
//! The backend reads bytes, hands them to [`Shard::handle_input`], writes
//! what [`ReplyQueue::take_ready`] gives it, and runs the log batches that
//! [`Shard::poll_batch`] hands out, reporting back with
//! [`Shard::batch_done`]. Nothing here blocks, sleeps or does I/O.

use std::sync::Arc;

use bytes::BytesMut;
use shorty_protocol::frame::{parse_frame, Status};
use shorty_protocol::{ErrorCode, Reply, Request, ServerInfo, PROTOCOL_VERSION};

use crate::codes::{IdAllocator, MAX_CODE_LEN};
use crate::connection::{PendingShorten, ReplyQueue};
use crate::index::Store;
use crate::log::{LogWriter, TicketStatus, WriteBatch};
use crate::service::Service;

/// What [`Shard::handle_input`] did with the bytes it was given.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InputOutcome {
    /// Bytes consumed from the front of the input (whole frames only).
    pub consumed: usize,
    /// `true` when the unconsumed rest holds the start of a frame: the
    /// frame timeout is running.
    pub mid_frame: bool,
    /// `true` when the connection must be closed once the queued replies
    /// are written (a frame over the limit: its payload will not be read).
    pub close: bool,
}

/// One thread's share of the service: its id block and its log.
#[derive(Debug)]
pub struct Shard<S: Store> {
    service: Arc<Service<S>>,
    ids: IdAllocator,
    log: LogWriter,
    /// Reused for composing short URLs.
    scratch: Vec<u8>,
}

impl<S: Store> Shard<S> {
    pub(crate) fn new(service: Arc<Service<S>>, ids: IdAllocator, log: LogWriter) -> Self {
        Self {
            service,
            ids,
            log,
            scratch: Vec::new(),
        }
    }

    /// The service this shard belongs to.
    pub fn service(&self) -> &Arc<Service<S>> {
        &self.service
    }

    /// Handles every complete frame at the front of `input`, queueing one
    /// reply per request in `replies`.
    pub fn handle_input(&mut self, input: &[u8], replies: &mut ReplyQueue) -> InputOutcome {
        let max = self.service.config.max_frame_len();
        let mut consumed = 0;
        loop {
            let rest = input.get(consumed..).unwrap_or_default();
            match parse_frame(rest, max) {
                Ok(Status::Complete(frame)) => {
                    consumed += frame.encoded_len();
                    self.handle_payload(frame.payload(), replies);
                }
                Ok(Status::Partial { .. }) => {
                    return InputOutcome {
                        consumed,
                        mid_frame: !rest.is_empty(),
                        close: false,
                    };
                }
                Err(err) => {
                    // The payload is never read: the stream cannot be
                    // resynchronised, so answer and close.
                    replies.push(&error(err.error_code(), &err.to_string()));
                    replies.close_after_flush();
                    return InputOutcome {
                        consumed,
                        mid_frame: false,
                        close: true,
                    };
                }
            }
        }
    }

    /// Handles every complete HTTP request at the front of `input` (the
    /// HTTP front, see [`crate::http`]).
    pub fn handle_http(&mut self, input: &[u8], replies: &mut ReplyQueue) -> InputOutcome {
        let (service, failed) = (&self.service, self.log.is_failed());
        let outcome =
            replies.push_with(|out| crate::http::handle_input(service, failed, input, out));
        if outcome.close {
            replies.close_after_flush();
        }
        outcome
    }

    /// Handles one frame payload.
    pub fn handle_payload(&mut self, payload: &[u8], replies: &mut ReplyQueue) {
        let request = match Request::parse(payload) {
            Ok(request) => request,
            Err(err) => return replies.push(&error(err.error_code(), &err.to_string())),
        };
        match request {
            Request::Bare(url) => self.shorten(url, true, replies),
            Request::Shorten(url) => self.shorten(url, false, replies),
            Request::Resolve(code) => {
                let service = &self.service;
                let found = service.codec.parse(code).and_then(|key| {
                    service
                        .store
                        .lookup(key, |url| replies.push(&Reply::Resolved(url)))
                });
                if found.is_none() {
                    replies.push(&error(
                        ErrorCode::NOT_FOUND,
                        "no URL is stored under this code",
                    ));
                }
            }
            Request::Ping(body) => replies.push(&Reply::Pong(body)),
            Request::Hello { version: 0 } => replies.push(&error(
                ErrorCode::UNSUPPORTED_VERSION,
                "this server speaks protocol version 1",
            )),
            Request::Hello { version } => {
                let config = &self.service.config;
                let clamp = |n: usize| u32::try_from(n).unwrap_or(u32::MAX);
                replies.push(&Reply::<&[u8]>::Hello(ServerInfo {
                    version: version.min(PROTOCOL_VERSION),
                    max_frame_len: clamp(config.max_frame_len()),
                    max_url_len: clamp(config.max_url_bytes),
                }));
            }
            // `Request` is non-exhaustive: a request kind this version does
            // not handle yet.
            _ => replies.push(&error(
                ErrorCode::UNKNOWN_OPCODE,
                "request kind not supported",
            )),
        }
    }

    fn shorten(&mut self, url: &[u8], bare: bool, replies: &mut ReplyQueue) {
        let service = &self.service;
        if self.log.is_failed() {
            return replies.push(&error(
                ErrorCode::INTERNAL,
                "the log cannot be written; this server accepts no new URLs until restarted",
            ));
        }
        let checked = service.policy.check(url, |code| {
            service
                .codec
                .parse(code.as_bytes())
                .is_some_and(|key| service.store.contains(key))
        });
        let url = match checked {
            Ok(url) => url,
            Err(err) => return replies.push(&error(err.error_code(), &err.to_string())),
        };
        let id = self.ids.next_id();
        let ticket = self.log.append(id, url.as_bytes());
        replies.push_pending(ticket, service.codec.key_of(id), bare);
    }

    /// Moves replies whose SHORTENs have settled into the connection's
    /// ready bytes. Call after [`batch_done`](Self::batch_done), for every
    /// connection with [`ReplyQueue::has_pending`].
    pub fn release(&mut self, replies: &mut ReplyQueue) {
        let Self {
            service,
            log,
            scratch,
            ..
        } = self;
        replies.release(
            |ticket| log.status(ticket),
            |pending, status, ready| settle(service, scratch, pending, status, ready),
        );
    }

    /// The next group-commit batch to write, if one is due.
    pub fn poll_batch(&mut self) -> Option<WriteBatch> {
        self.log.poll_batch()
    }

    /// `true` when records wait for a batch and none is in flight.
    pub fn has_log_work(&self) -> bool {
        self.log.has_work()
    }

    /// Syncs this shard's segments at graceful shutdown (see
    /// [`LogWriter::sync_at_shutdown`]).
    pub fn sync_at_shutdown(&self) -> std::io::Result<()> {
        self.log.sync_at_shutdown()
    }

    /// Reports a batch's outcome. On success its URLs enter the index (so a
    /// code resolves exactly when its SHORTEN can be acknowledged).
    pub fn batch_done(&mut self, batch: &WriteBatch, result: std::io::Result<()>) {
        match result {
            Ok(()) => {
                for record in batch.records() {
                    // Written by this shard from a validated `&str`.
                    if let Ok(url) = std::str::from_utf8(record.url) {
                        let key = self.service.codec.key_of(record.id);
                        self.service.store.insert(key, url);
                    }
                }
                self.log.complete(batch);
            }
            Err(err) => {
                tracing::error!(
                    path = %batch.path.display(),
                    error = %err,
                    "writing the log failed; refusing new URLs until restart"
                );
                self.log.fail(batch);
            }
        }
    }
}

fn settle<S: Store>(
    service: &Service<S>,
    scratch: &mut Vec<u8>,
    pending: &PendingShorten,
    status: TicketStatus,
    ready: &mut BytesMut,
) {
    let reply = match status {
        TicketStatus::Durable => {
            scratch.clear();
            scratch.extend_from_slice(service.config.public_url.as_str().as_bytes());
            let mut code = [0; MAX_CODE_LEN];
            scratch.extend_from_slice(service.codec.code(pending.key, &mut code).as_bytes());
            if pending.bare {
                Reply::Bare(&scratch[..])
            } else {
                Reply::Shortened(&scratch[..])
            }
        }
        _ => error(ErrorCode::INTERNAL, "the URL could not be stored durably"),
    };
    ready.reserve(reply.encoded_len());
    let encoded = reply.encode(ready);
    debug_assert!(encoded.is_ok());
}

fn error(code: ErrorCode, message: &str) -> Reply<&[u8]> {
    Reply::Error {
        code,
        message: message.as_bytes(),
    }
}
