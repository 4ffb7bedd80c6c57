//! The operation set (docs/round3-design.md §1): what a request *does*,
//! whichever front it came through.
//!
//! Each family is a module of functions over a [`Shard`]: they look codes
//! up, append records and register operations, and return a [`Step`]; they
//! never parse a request or render a reply, so the wire front
//! ([`crate::front::wire`]) and the HTTP fronts ([`crate::front::http`])
//! share every rule. `ops` imports [`crate::shard`] and never
//! [`crate::front`].
//!
//! The fronts of round 3 call these directly: protocol v2's SHORTEN2 is
//! [`lifecycle::create`], UPDATE [`lifecycle::update`], DELETE
//! [`lifecycle::delete`], INFO [`lifecycle::info`] (each with the
//! connection's [`Principal`](crate::link::Principal)); RESOLVE and the
//! redirect are [`resolve::resolve`]; a link's click statistics are
//! [`stats::totals`] (INFO's click tags) and [`stats::series`] (STATS, the
//! JSON API). A pending step is settled like any other (a `Wait::Op`
//! rendered by the front, or
//! [`Shard::take_result`](crate::shard::Shard::take_result)).
//!
//! [`Shard`]: crate::shard::Shard

pub mod create;
pub mod lifecycle;
pub mod resolve;
pub mod stats;

use std::borrow::Cow;

use shorty_protocol::ErrorCode;

use crate::log::LogFailure;
use crate::output::OpId;
use crate::shard::OpResult;

/// What an operation did with a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Settled at once: render this.
    Now(OpResult),
    /// Waits for I/O: the front queues a wait for this operation, which
    /// [`Shard::settle`](crate::shard::Shard::settle) renders once done.
    Pending(OpId),
}

impl Step {
    /// For a write a later request of the same connection could observe
    /// (an alias created, a link updated or deleted): makes the
    /// connection's later requests wait for it while it is in flight
    /// ([`Shard::held_back`](crate::shard::Shard::held_back)). Returns
    /// the step.
    pub fn held_for(self, out: &mut crate::output::Output) -> Self {
        if let Step::Pending(op) = self {
            out.hold_after(op);
        }
        self
    }

    /// A refusal with `code` and `message`.
    pub fn refused(code: ErrorCode, message: impl Into<Cow<'static, str>>) -> Self {
        Self::Now(OpResult::Failed(code, message.into()))
    }
}

/// The protocol error a log refusal maps to: a broken log is an internal
/// error, a full disk or a busy log is an overload the client may retry.
pub fn log_failure_code(failure: LogFailure) -> ErrorCode {
    match failure {
        LogFailure::Broken => ErrorCode::INTERNAL,
        _ => ErrorCode::OVERLOADED,
    }
}
