//! The framed protocol's front: frames in, replies out.

use std::time::Instant;

use shorty_protocol::frame::{parse_frame, Status};
use shorty_protocol::{ErrorCode, Reply, Request, ServerInfo, PROTOCOL_V1};

use crate::metrics::{Op, Proto};
use crate::ops::{self, Step};
use crate::output::{Output, Render, Wait, WAIT_COST};
use crate::shard::{InputOutcome, Shard};

use super::error;

impl Shard {
    /// Handles every complete frame at the front of `input` for connection
    /// `conn`, while fewer than `--max-output-bytes` are queued or in flight.
    pub fn handle_frames(
        &mut self,
        conn: u32,
        input: &[u8],
        out: &mut Output,
        now: Instant,
    ) -> InputOutcome {
        let settings = &self.shared.settings;
        let (max, cap, delay) = (
            settings.max_frame_len(),
            settings.max_output_bytes,
            settings.delay,
        );
        let mut outcome = InputOutcome::default();
        let mut delayed = false;
        loop {
            let rest = input.get(outcome.consumed..).unwrap_or_default();
            if out.committed_bytes() >= cap {
                // Back-pressure: the rest waits until replies drain.
                outcome.mid_frame = false;
                return outcome;
            }
            match parse_frame(rest, max) {
                Ok(Status::Complete(frame)) => {
                    outcome.consumed += frame.encoded_len();
                    if !delay.is_zero() && !delayed {
                        // The seed's artificial work: replies to requests
                        // read now are held for `--delay`. A timer, never a
                        // blocked core.
                        out.push_wait(Wait::Until(now + delay), WAIT_COST);
                        delayed = true;
                    }
                    self.handle_payload(conn, frame.payload(), out, now);
                }
                Ok(Status::Partial { .. }) => {
                    outcome.mid_frame = !rest.is_empty();
                    return outcome;
                }
                Err(err) => {
                    // The payload is never read: the stream cannot be
                    // resynchronised, so answer and close.
                    self.metrics()
                        .request(Proto::Framed, Op::Other, err.error_code().0);
                    out.push(&error(err.error_code(), &err.to_string()));
                    outcome.close = true;
                    return outcome;
                }
            }
        }
    }

    /// Handles one frame payload.
    fn handle_payload(&mut self, conn: u32, payload: &[u8], out: &mut Output, now: Instant) {
        let request = match Request::parse_payload(payload) {
            Ok(request) => request,
            Err(err) => {
                self.metrics()
                    .request(Proto::Framed, Op::Other, err.error_code().0);
                return out.push(&error(err.error_code(), &err.to_string()));
            }
        };
        let (op, status) = match request {
            Request::Bare(url) => return self.shorten(conn, url, true, out, now),
            Request::Shorten(url) => return self.shorten(conn, url, false, out, now),
            Request::Resolve(code) => {
                return self.resolve(conn, code, out, now, Render::Resolved, Proto::Framed)
            }
            Request::Ping(body) => {
                out.push(&Reply::Pong(body));
                (Op::Ping, 0)
            }
            Request::Hello { version: 0, .. } => {
                out.push(&error(
                    ErrorCode::UNSUPPORTED_VERSION,
                    "this server speaks protocol version 1",
                ));
                (Op::Hello, ErrorCode::UNSUPPORTED_VERSION.0)
            }
            Request::Hello { version, .. } => {
                let settings = &self.shared.settings;
                let clamp = |n: usize| u32::try_from(n).unwrap_or(u32::MAX);
                // The version this server implements, not the protocol
                // crate's highest: that grows before the server learns it.
                out.push(&Reply::<&[u8]>::Hello(ServerInfo::new(
                    version.min(PROTOCOL_V1),
                    clamp(settings.max_frame_len()),
                    clamp(settings.max_url_bytes),
                )));
                (Op::Hello, 0)
            }
            // `Request` is non-exhaustive: a kind this version does not
            // handle.
            _ => {
                out.push(&error(
                    ErrorCode::UNKNOWN_OPCODE,
                    "request kind not supported",
                ));
                (Op::Other, ErrorCode::UNKNOWN_OPCODE.0)
            }
        };
        self.metrics().request(Proto::Framed, op, status);
    }

    /// SHORTEN (or the seed's bare frame): the reply waits for the record
    /// to be durable.
    fn shorten(&mut self, conn: u32, url: &[u8], bare: bool, out: &mut Output, now: Instant) {
        let render = Render::Shortened { bare };
        match ops::create::shorten(self, conn, url) {
            Step::Pending(op) => {
                let deadline = now + self.shared.settings.commit_timeout;
                out.push_wait(
                    Wait::Op {
                        op,
                        render,
                        deadline,
                    },
                    WAIT_COST,
                )
            }
            Step::Now(result) => {
                self.metrics()
                    .request(Proto::Framed, Op::Shorten, super::status_of(&result));
                out.push_with(|dst| self.render(&result, &render, dst));
            }
        }
    }
}
