//! The fronts: parse requests, call the operations ([`crate::ops`]),
//! render their outcomes. `wire` speaks the framed protocol, `http` the
//! redirect and admin listeners; an operation waiting for I/O is rendered
//! here too, once settled ([`Shard::settle`]).
//!
//! The fronts are `impl Shard` blocks, so the runtime keeps calling
//! `shard.handle_frames(..)`; they sit above [`crate::ops`] and
//! [`crate::shard`], which never import them.

pub mod api;
pub mod http;
pub mod wire;

use std::time::Instant;

use bytes::BytesMut;
use shorty_protocol::{ErrorCode, Reply};

use crate::codes::MAX_CODE_LEN;
use crate::metrics::{Op, Proto};
use crate::ops::{self, Step};
use crate::output::{LinkReply, OpId, Output, Released, Render, Wait};
use crate::shard::{OpResult, OpState, Shard};
use crate::stats::ClickMeta;

/// An error reply.
pub(crate) fn error(code: ErrorCode, message: &str) -> Reply<&[u8]> {
    Reply::error(code, message.as_bytes())
}

/// The status a result is counted under in the metrics.
pub(crate) fn status_of(result: &OpResult) -> u16 {
    match result {
        OpResult::Url(_)
        | OpResult::Stored(_)
        | OpResult::Redirect { .. }
        | OpResult::Link(_)
        | OpResult::Stats(_)
        | OpResult::Deleted
        | OpResult::Page { .. } => 0,
        OpResult::NotFound => 404,
        OpResult::Gone { .. } => crate::link::GONE.0,
        OpResult::Failed(code, _) => code.0,
    }
}

/// The metrics op a version-2 link reply is counted under (SHORTEN2 is a
/// SHORTEN).
pub(crate) fn link_op(reply: LinkReply) -> Op {
    match reply {
        LinkReply::Shortened2 => Op::Shorten,
        LinkReply::Updated => Op::Update,
        LinkReply::Deleted => Op::Delete,
        LinkReply::Info => Op::Info,
        LinkReply::Stats => Op::Stats,
    }
}

fn encode<B: AsRef<[u8]>>(reply: &Reply<B>, dst: &mut BytesMut) {
    crate::output::encode_reply(reply, dst);
}

impl Shard {
    /// Creates a link ([`ops::lifecycle::create`]) for a front. One that
    /// claims an alias holds the connection's later requests until it is
    /// settled ([`Step::held_for`]): they may name it. A generated code is
    /// not held for: nothing can name it before its reply.
    pub(crate) fn create_in_order(
        &mut self,
        conn: u32,
        request: ops::lifecycle::CreateRequest<'_>,
        principal: crate::link::Principal,
        now: Instant,
        out: &mut Output,
    ) -> Step {
        let claims_alias = request.alias.is_some();
        let step = ops::lifecycle::create(self, conn, request, principal, now);
        if claims_alias {
            step.held_for(out)
        } else {
            step
        }
    }

    /// RESOLVE or a redirect: rendered at once from the cache, else queued
    /// as a wait on the operation. Never a click ([`Shard::resolve_click`]
    /// is a GET redirect's).
    pub(crate) fn resolve(
        &mut self,
        conn: u32,
        code: &[u8],
        out: &mut Output,
        now: Instant,
        render: Render,
        proto: Proto,
    ) {
        self.resolve_click(conn, code, out, now, render, proto, None, None);
    }

    /// [`Shard::resolve`] for a request that may be a click (`click` is
    /// `Some` for a GET redirect only). `query` is a redirect's visitor
    /// query (a [`Render::Redirect`] is passed without it): borrowed from
    /// the request when the redirect is answered at once, so a cached
    /// link's redirect copies nothing, and moved into the render only when
    /// it waits.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn resolve_click(
        &mut self,
        conn: u32,
        code: &[u8],
        out: &mut Output,
        now: Instant,
        render: Render,
        proto: Proto,
        click: Option<ClickMeta<'_>>,
        query: Option<&str>,
    ) {
        let op_kind = match (&render, proto) {
            (Render::Qr { .. }, _) => Op::Other,
            (Render::Api { .. }, _) => Op::Api,
            (_, Proto::Http) => Op::Redirect,
            _ => Op::Resolve,
        };
        let op: OpId = match ops::resolve::resolve(self, conn, code, now, click) {
            Step::Now(result) => {
                self.metrics().request(proto, op_kind, status_of(&result));
                return out.push_with(|dst| match render {
                    Render::Redirect {
                        head_only,
                        keep_alive,
                        query: None,
                    } => self.render_redirect(&result, head_only, keep_alive, query, dst),
                    _ => self.render(&result, &render, dst),
                });
            }
            Step::Pending(op) => op,
        };
        let render = match render {
            Render::Redirect {
                head_only,
                keep_alive,
                query: None,
            } => Render::Redirect {
                head_only,
                keep_alive,
                query: query.map(Box::from),
            },
            other => other,
        };
        let deadline = now + self.shared.settings.store_timeout;
        // Counted as the largest reply a URL can make until it settles.
        let cost = self.shared.settings.max_url_bytes + 512;
        out.push_wait(
            Wait::Op {
                op,
                render,
                deadline,
            },
            cost,
        );
    }

    /// Encodes the reply of an operation's `result` into `dst`.
    fn render(&self, result: &OpResult, render: &Render, dst: &mut BytesMut) {
        match render {
            Render::Redirect {
                head_only,
                keep_alive,
                query,
            } => self.render_redirect(result, *head_only, *keep_alive, query.as_deref(), dst),
            Render::Qr {
                code,
                format,
                head_only,
                keep_alive,
            } => self.render_qr(result, code, *format, *head_only, *keep_alive, dst),
            Render::Api {
                view,
                head_only,
                keep_alive,
            } => self.render_api(result, view, *head_only, *keep_alive, dst),
            &Render::Shortened { bare } => {
                let mut buf = [0; MAX_CODE_LEN];
                let code = match result {
                    OpResult::Stored(key) => Ok(self.shared.codec.code(*key, &mut buf)),
                    // A keyed SHORTEN runs the lifecycle's create.
                    OpResult::Link(view) => Ok(&*view.code),
                    OpResult::Failed(code, message) => Err(error(*code, message)),
                    _ => Err(error(ErrorCode::INTERNAL, "unexpected store reply")),
                };
                let short;
                let reply = match code {
                    Ok(code) => {
                        let public = self.shared.settings.public_url.as_str();
                        short = format!("{public}{code}");
                        if bare {
                            Reply::Bare(short.as_bytes())
                        } else {
                            Reply::Shortened(short.as_bytes())
                        }
                    }
                    Err(reply) => reply,
                };
                encode(&reply, dst);
            }
            &Render::Link(reply) => self.render_link(result, reply, dst),
            Render::Resolved => {
                let reply = match result {
                    OpResult::Url(url) | OpResult::Redirect { url, .. } => {
                        Reply::Resolved(&url[..])
                    }
                    OpResult::NotFound => {
                        error(ErrorCode::NOT_FOUND, "no URL is stored under this code")
                    }
                    // The wire has no redirect to an expired-URL: a client
                    // asking for the URL learns the link is gone.
                    OpResult::Gone { reason, .. } => error(crate::link::GONE, reason.message()),
                    OpResult::Failed(code, message) => error(*code, message),
                    OpResult::Stored(_)
                    | OpResult::Link(_)
                    | OpResult::Stats(_)
                    | OpResult::Deleted
                    | OpResult::Page { .. } => error(ErrorCode::INTERNAL, "unexpected store reply"),
                };
                encode(&reply, dst);
            }
        }
    }

    /// Settles `wait` if it can be: used by [`Output::release`]. An
    /// operation past its deadline is abandoned and answered 503.
    pub fn settle(&mut self, wait: &Wait, dst: &mut BytesMut, now: Instant) -> Released {
        let (op, render, deadline) = match wait {
            Wait::Until(at) => {
                return if now >= *at {
                    Released::Done
                } else {
                    Released::Pending
                }
            }
            Wait::Op {
                op,
                render,
                deadline,
            } => (*op, render, *deadline),
            Wait::Many {
                ops,
                render,
                deadline,
            } => return self.settle_many(ops, render, *deadline, dst, now),
        };
        let (proto, kind) = match render {
            Render::Shortened { .. } => (Proto::Framed, Op::Shorten),
            Render::Resolved => (Proto::Framed, Op::Resolve),
            Render::Redirect { .. } => (Proto::Http, Op::Redirect),
            Render::Qr { .. } => (Proto::Http, Op::Other),
            Render::Api { .. } => (Proto::Http, Op::Api),
            &Render::Link(reply) => (Proto::Framed, link_op(reply)),
        };
        let done = match self.ops.get(op as usize).map(|e| &e.state) {
            Some(OpState::Done(_)) => match self.ops.remove(op as usize).state {
                OpState::Done(result) => result,
                _ => return Released::Pending,
            },
            Some(OpState::Waiting) if now >= deadline => {
                if let Some(entry) = self.ops.get_mut(op as usize) {
                    entry.state = OpState::Abandoned;
                }
                let message = match render {
                    Render::Shortened { .. }
                    | Render::Link(LinkReply::Shortened2)
                    | Render::Api {
                        view: crate::output::ApiView::Created { .. },
                        ..
                    } => {
                        "the log did not confirm the URL within --commit-timeout; it may still \
                         have been stored: retry"
                    }
                    // A mutation's wait covers a read and a durable write.
                    Render::Link(LinkReply::Updated | LinkReply::Deleted) => {
                        "the change was not confirmed within --store-timeout plus \
                         --commit-timeout; it may still have been made: read the link back"
                    }
                    _ => "the store did not answer within --store-timeout",
                };
                OpResult::Failed(ErrorCode::OVERLOADED, message.into())
            }
            Some(_) => return Released::Pending,
            None => OpResult::Failed(ErrorCode::INTERNAL, "lost operation".into()),
        };
        self.metrics().request(proto, kind, status_of(&done));
        self.render(&done, render, dst);
        Released::Done
    }

    /// [`settle`](Self::settle) of a [`Wait::Many`]: done once every
    /// operation is, or at the deadline (the ones still waiting are
    /// abandoned and answered 503 in their place).
    fn settle_many(
        &mut self,
        ops: &[OpId],
        render: &Render,
        deadline: Instant,
        dst: &mut BytesMut,
        now: Instant,
    ) -> Released {
        let waiting = |op: &OpId| {
            matches!(
                self.ops.get(*op as usize).map(|e| &e.state),
                Some(OpState::Waiting)
            )
        };
        if now < deadline && ops.iter().any(waiting) {
            return Released::Pending;
        }
        let results: Vec<OpResult> = ops
            .iter()
            .map(|&op| match self.ops.get(op as usize).map(|e| &e.state) {
                Some(OpState::Done(_)) => match self.ops.remove(op as usize).state {
                    OpState::Done(result) => result,
                    _ => OpResult::Failed(ErrorCode::INTERNAL, "lost operation".into()),
                },
                Some(OpState::Waiting) => {
                    if let Some(entry) = self.ops.get_mut(op as usize) {
                        entry.state = OpState::Abandoned;
                    }
                    OpResult::Failed(
                        ErrorCode::OVERLOADED,
                        "the store did not answer in time; a creation may still have been \
                         made: read it back"
                            .into(),
                    )
                }
                _ => OpResult::Failed(ErrorCode::INTERNAL, "lost operation".into()),
            })
            .collect();
        match render {
            Render::Api {
                view,
                head_only,
                keep_alive,
            } => {
                let status = self.render_api_many(&results, view, *head_only, *keep_alive, dst);
                self.metrics().request(Proto::Http, Op::Api, status);
            }
            // Only the API gathers operations.
            _ => self.render(
                &OpResult::Failed(ErrorCode::INTERNAL, "unexpected reply".into()),
                render,
                dst,
            ),
        }
        Released::Done
    }
}
