//! The framed protocol's front: frames in, replies out.
//!
//! Protocol version 2 (`protocol/PROTOCOL.md`, section 6) is served here
//! too: HELLO negotiates it per connection ([`Session`]), and its link
//! requests are the lifecycle operations ([`ops::lifecycle`]) with the
//! connection's [`Principal`]; this module only translates the TLV views
//! into the operations' types and renders their outcomes.

use std::time::{Duration, Instant};

use bytes::BytesMut;
use shorty_protocol::frame::{parse_frame, Status};
use shorty_protocol::link::{LinkInfo, LinkOptions, LinkPatch as WirePatch};
use shorty_protocol::{ErrorCode, Reply, Request, ServerInfo, PROTOCOL_V1, PROTOCOL_V2};

use crate::api::auth::AuthError;
use crate::limits::Action;
use crate::link::{Field, LinkMeta, LinkPatch, Principal};
use crate::metrics::{Op, Proto};
use crate::ops::lifecycle::{self, CreateRequest};
use crate::ops::{self, Step};
use crate::output::{LinkReply, Output, Render, Wait, WAIT_COST};
use crate::shard::{InputOutcome, LinkView, OpResult, Shard};

use super::error;

/// The highest protocol version this server implements: what HELLO
/// negotiates at most (not the protocol crate's highest, which may grow
/// before the server learns it).
pub const SERVER_VERSION: u8 = PROTOCOL_V2;

/// What one framed connection has negotiated: its protocol version (how
/// its payloads parse) and who it speaks for.
///
/// A connection is version 1 until HELLO negotiates 2, so v1 clients and
/// the seed's bare frames are read exactly as before. Without AUTH it is
/// [`Principal::ANYONE`], the unauthenticated caller the operations
/// define (a loopback server without keys lets it do everything).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Session {
    /// The negotiated protocol version.
    pub version: u8,
    /// The caller, as AUTH established it.
    pub principal: Principal,
}

impl Default for Session {
    fn default() -> Self {
        Self {
            version: PROTOCOL_V1,
            principal: Principal::ANYONE,
        }
    }
}

/// Translates UPDATE's wire patch into the operations' [`LinkPatch`].
fn patch_of(wire: &WirePatch<'_>) -> LinkPatch {
    fn field<T, U>(slot: Option<Option<T>>, f: impl FnOnce(T) -> U) -> Field<U> {
        match slot {
            None => Field::Keep,
            Some(None) => Field::Clear,
            Some(Some(v)) => Field::Set(f(v)),
        }
    }
    LinkPatch {
        url: wire.url.map(str::to_owned),
        expires_at_ms: field(wire.expires_at_ms, |v| v),
        max_clicks: field(wire.max_clicks, |v| v),
        redirect_status: field(wire.redirect_status, |v| v),
        expired_url: field(wire.expired_url, Box::from),
        disabled: match wire.disabled {
            None => Field::Keep,
            Some(true) => Field::Set(()),
            Some(false) => Field::Clear,
        },
        title: field(wire.title, Box::from),
        forward_query: field(wire.forward_query, |v| v),
    }
}

/// Translates SHORTEN2's options into a [`CreateRequest`].
fn create_request<'a>(options: &LinkOptions<'a>) -> CreateRequest<'a> {
    CreateRequest {
        url: options.url.as_bytes(),
        alias: options.alias,
        options: LinkMeta {
            expires_at_ms: options.expires_at_ms,
            max_clicks: options.max_clicks,
            redirect_status: options.redirect_status,
            expired_url: options.expired_url.map(Box::from),
            title: options.title.map(Box::from),
            forward_query: options.forward_query,
            ..LinkMeta::default()
        },
    }
}

impl Shard {
    /// Checks an API key presented with AUTH against the key store
    /// ([`Shared::authenticate`](crate::shard::Shared::authenticate), the
    /// table the HTTP front checks `Authorization` with), giving the
    /// principal it speaks for. A connection that never sends AUTH stays
    /// the unauthenticated caller ([`Principal::unauthenticated`]).
    ///
    /// # Errors
    /// The error code (401) and message to answer AUTH with.
    pub fn authenticate(&self, key: &[u8]) -> Result<Principal, (ErrorCode, String)> {
        self.shared
            .authenticate(key)
            .map_err(|err| (ErrorCode(err.status()), err.message()))
    }

    /// Handles every complete frame at the front of `input` for connection
    /// `conn` (whose negotiated state is `session`), while fewer than
    /// `--max-output-bytes` are queued or in flight.
    pub fn handle_frames(
        &mut self,
        conn: u32,
        session: &mut Session,
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
        // A connection starts as `Principal::ANYONE` (`Session::default`);
        // under `--auth required` the caller without a key is
        // `Principal::NOBODY`. A key's principal always has a key id, so
        // only the unauthenticated default is ever replaced here.
        if session.principal == Principal::ANYONE {
            session.principal = Principal::unauthenticated(settings.auth_required);
        }
        // A key revoked (or expired, or rescoped) since this connection's
        // AUTH stops working here too, within the key table's reload: the
        // connection is then without a key (401 until a new AUTH).
        if let Some(id) = session.principal.key_id {
            session.principal = self
                .shared
                .keys
                .current()
                .principal_of(id)
                .unwrap_or(Principal::NOBODY);
        }
        let mut outcome = InputOutcome::default();
        let mut delayed = false;
        loop {
            let rest = input.get(outcome.consumed..).unwrap_or_default();
            if out.committed_bytes() >= cap || (!rest.is_empty() && self.held_back(conn, out)) {
                // Back-pressure: the rest waits until replies drain, or
                // until this connection's earlier write is done.
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
                    self.handle_payload(conn, session, frame.payload(), out, now);
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
    fn handle_payload(
        &mut self,
        conn: u32,
        session: &mut Session,
        payload: &[u8],
        out: &mut Output,
        now: Instant,
    ) {
        // The negotiated version decides how the payload reads: before
        // HELLO 2 the version-2 opcodes are unknown (ERROR 501), as on a
        // version-1 server.
        let request = match Request::parse_payload_for(session.version, payload) {
            Ok(request) => request,
            Err(err) => {
                self.metrics()
                    .request(Proto::Framed, Op::Other, err.error_code().0);
                return out.push(&error(err.error_code(), &err.to_string()));
            }
        };
        let (op, status) = match request {
            Request::Bare(url) => return self.shorten(conn, session, url, true, out, now),
            Request::Shorten(url) => return self.shorten(conn, session, url, false, out, now),
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
                    "this server speaks protocol versions 1 and 2",
                ));
                (Op::Hello, ErrorCode::UNSUPPORTED_VERSION.0)
            }
            Request::Hello { version, .. } => {
                let settings = &self.shared.settings;
                let clamp = |n: usize| u32::try_from(n).unwrap_or(u32::MAX);
                // The version this server implements, not the protocol
                // crate's highest: that grows before the server learns it.
                session.version = version.min(SERVER_VERSION);
                out.push(&Reply::<&[u8]>::Hello(ServerInfo::new(
                    session.version,
                    clamp(settings.max_frame_len()),
                    clamp(settings.max_url_bytes),
                )));
                (Op::Hello, 0)
            }
            Request::Shorten2(body) => {
                let step = match LinkOptions::parse(body) {
                    Ok(options) => match self.over_create_limit(session.principal, now) {
                        Some(refusal) => refusal,
                        None => self.create_in_order(
                            conn,
                            create_request(&options),
                            session.principal,
                            now,
                            out,
                        ),
                    },
                    Err(err) => Step::refused(err.error_code(), err.to_string()),
                };
                let timeout = self.shared.settings.commit_timeout;
                return self.link_step(step, LinkReply::Shortened2, timeout, out, now);
            }
            Request::Update { code, patch, .. } => {
                let step = match WirePatch::parse(patch) {
                    Ok(patch) => lifecycle::update(
                        self,
                        conn,
                        code,
                        patch_of(&patch),
                        session.principal,
                        now,
                    )
                    .held_for(out),
                    Err(err) => Step::refused(err.error_code(), err.to_string()),
                };
                // A read of the current record, then a durable write.
                let settings = &self.shared.settings;
                let timeout = settings.store_timeout + settings.commit_timeout;
                return self.link_step(step, LinkReply::Updated, timeout, out, now);
            }
            Request::Delete(code) => {
                let step =
                    lifecycle::delete(self, conn, code, session.principal, now).held_for(out);
                let settings = &self.shared.settings;
                let timeout = settings.store_timeout + settings.commit_timeout;
                return self.link_step(step, LinkReply::Deleted, timeout, out, now);
            }
            Request::Info(code) => {
                let step = lifecycle::info(self, conn, code, session.principal);
                let timeout = self.shared.settings.store_timeout;
                return self.link_step(step, LinkReply::Info, timeout, out, now);
            }
            Request::Auth(key) => match self.authenticate(key) {
                Ok(principal) => {
                    session.principal = principal;
                    out.push(&Reply::<&[u8]>::Authed);
                    (Op::Auth, 0)
                }
                Err((code, message)) => {
                    // A refused key leaves the connection as it was.
                    out.push(&error(code, &message));
                    (Op::Auth, code.0)
                }
            },
            Request::Stats { code, query, .. } => {
                let granularity = match query.granularity {
                    shorty_protocol::link::Granularity::Day => crate::stats::Granularity::Day,
                    _ => crate::stats::Granularity::Hour,
                };
                // PROTOCOL.md 6.3: a longer range is answered with its
                // first buckets, never refused; so the range asked of the
                // operation ends after them (within its own limit).
                let step_ms = granularity.millis();
                let first_ms = query.from_ms - query.from_ms % step_ms;
                let cap_ms = first_ms.saturating_add(
                    step_ms.saturating_mul(shorty_protocol::link::MAX_STATS_BUCKETS as u64),
                );
                let query = ops::stats::StatsQuery {
                    from_ms: query.from_ms,
                    // A range that ends before it starts stays so: 422.
                    to_ms: query.to_ms.min(cap_ms.max(query.from_ms)),
                    granularity,
                };
                let step = ops::stats::series(self, conn, code, session.principal, query);
                let timeout = self.shared.settings.store_timeout;
                return self.link_step(step, LinkReply::Stats, timeout, out, now);
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

    /// Renders a version-2 link operation's step now, or queues its wait
    /// (given up after `timeout`).
    fn link_step(
        &mut self,
        step: Step,
        reply: LinkReply,
        timeout: Duration,
        out: &mut Output,
        now: Instant,
    ) {
        let render = Render::Link(reply);
        match step {
            Step::Pending(op) => out.push_wait(
                Wait::Op {
                    op,
                    render,
                    deadline: now + timeout,
                },
                // Counted as the largest reply a link can make until it
                // settles: its URL, expired-URL and title, and the rest.
                2 * self.shared.settings.max_url_bytes + 1024,
            ),
            Step::Now(result) => {
                self.metrics().request(
                    Proto::Framed,
                    super::link_op(reply),
                    super::status_of(&result),
                );
                out.push_with(|dst| self.render(&result, &render, dst));
            }
        }
    }

    /// ERROR 429 for a creation over the rate limits (per client address
    /// and per key), counted only for a caller that may create: one
    /// without the right is refused by the operation (401/403) uncounted.
    fn over_create_limit(&self, principal: Principal, now: Instant) -> Option<Step> {
        if !principal.may_create() {
            return None;
        }
        let limited = self.limit(Action::Create, principal.key_id, now).err()?;
        Some(Step::refused(ErrorCode::RATE_LIMITED, limited.message()))
    }

    /// SHORTEN (or the seed's bare frame): the reply waits for the record
    /// to be durable.
    fn shorten(
        &mut self,
        conn: u32,
        session: &Session,
        url: &[u8],
        bare: bool,
        out: &mut Output,
        now: Instant,
    ) {
        let render = Render::Shortened { bare };
        let principal = session.principal;
        let step = if !principal.may_create() {
            // Without a key under `--auth required` (401: AUTH first), or
            // a key without `links:write` (403).
            let message = match principal.key_id {
                None => AuthError::Missing.message(),
                Some(_) => "this key may not create links".into(),
            };
            Step::refused(principal.refusal(), message)
        } else if let Some(refusal) = self.over_create_limit(principal, now) {
            refusal
        } else if principal.key_id.is_some() {
            // A keyed SHORTEN makes a link its key owns (it may change,
            // delete and list it), as a keyed POST does: the same create
            // operation, without options.
            let request = ops::lifecycle::CreateRequest {
                url,
                ..Default::default()
            };
            ops::lifecycle::create(self, conn, request, principal, now)
        } else {
            ops::create::shorten(self, conn, url)
        };
        match step {
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

impl Shard {
    /// Encodes a version-2 link operation's outcome as its reply: the link
    /// as a TLV list (SHORTENED2, UPDATED, INFO), DELETED, or the error.
    pub(super) fn render_link(&self, result: &OpResult, reply: LinkReply, dst: &mut BytesMut) {
        let body;
        let encoded = match (result, reply) {
            (
                OpResult::Link(view),
                LinkReply::Shortened2 | LinkReply::Updated | LinkReply::Info,
            ) => match self.link_info(view) {
                Ok(list) => {
                    body = list;
                    match reply {
                        LinkReply::Shortened2 => Reply::Shortened2(&body[..]),
                        LinkReply::Updated => Reply::Updated(&body[..]),
                        _ => Reply::Info(&body[..]),
                    }
                }
                Err(message) => error(ErrorCode::INTERNAL, message),
            },
            (OpResult::Deleted, LinkReply::Deleted) => Reply::Deleted,
            (OpResult::Stats(view), LinkReply::Stats) => match stats_list(view) {
                Ok(list) => {
                    body = list;
                    Reply::Stats(&body[..])
                }
                Err(message) => error(ErrorCode::INTERNAL, message),
            },
            (OpResult::NotFound, _) => {
                error(ErrorCode::NOT_FOUND, "no link is stored under this code")
            }
            (OpResult::Failed(code, message), _) => error(*code, message),
            _ => error(ErrorCode::INTERNAL, "unexpected store reply"),
        };
        super::encode(&encoded, dst);
    }

    /// A link as protocol v2 describes it (`PROTOCOL.md` 6.3's link list).
    fn link_info(&self, view: &LinkView) -> Result<Vec<u8>, &'static str> {
        let url = std::str::from_utf8(&view.url).map_err(|_| "the stored URL is not UTF-8")?;
        let public = self.shared.settings.public_url.as_str();
        let short_url = format!("{public}{}", view.code);
        let meta = &view.meta;
        let mut info = LinkInfo::new(&view.code, url);
        info.short_url = Some(&short_url);
        info.created_at_ms = meta.created_at_ms;
        info.expires_at_ms = meta.expires_at_ms;
        info.max_clicks = meta.max_clicks;
        info.redirect_status = meta.redirect_status;
        info.expired_url = meta.expired_url.as_deref();
        info.disabled = meta.disabled;
        info.owner_key_id = meta.owner_key_id;
        info.title = meta.title.as_deref();
        info.forward_query = meta.forward_query;
        info.version = Some(meta.version);
        // The click totals: what the stats store holds plus this core's
        // pending clicks (other cores' reach the store within one
        // `--stats-flush`). A local store is read on the serving core, for
        // INFO only (never on the redirect path); a remote store's totals
        // were read before the reply was due; statistics off have none.
        if let Some(totals) = crate::ops::stats::stats_key_of_code(self, &view.code, meta)
            .and_then(|key| crate::ops::stats::link_totals(self, key, view.clicks.as_ref()))
        {
            info.clicks_total = Some(totals.total);
            info.clicks_human = Some(totals.human);
            info.clicks_bot = Some(totals.bot);
            info.last_click_at_ms = totals.last_click_ms;
        }
        // Refused only for a value a TLV cannot carry: a URL longer than
        // 65,535 bytes, stored by a version-1 SHORTEN under a large
        // `--max-url-bytes`.
        info.to_vec()
            .map_err(|_| "this link does not fit in a version-2 reply (its URL is too long)")
    }
}

/// A link's statistics as protocol v2's STATS reply (`PROTOCOL.md` 6.3):
/// the series as at most [`MAX_STATS_BUCKETS`] buckets (`ops::stats`
/// refuses ranges past its own, smaller limit) and the top referrers.
///
/// [`MAX_STATS_BUCKETS`]: shorty_protocol::link::MAX_STATS_BUCKETS
fn stats_list(view: &crate::stats::StatsView) -> Result<Vec<u8>, &'static str> {
    use shorty_protocol::link::{Bucket, LinkStats, Referrer, MAX_REFERRERS, MAX_STATS_BUCKETS};
    let mut stats = LinkStats::default();
    stats.total = view.total;
    stats.human = view.human;
    stats.bot = view.bot;
    stats.first_click_at_ms = view.first_click_ms;
    stats.last_click_at_ms = view.last_click_ms;
    stats.series = view
        .series
        .iter()
        .take(MAX_STATS_BUCKETS)
        .map(|&(start_ms, count)| Bucket { start_ms, count })
        .collect();
    stats.referrers = view
        .referrers
        .iter()
        .take(MAX_REFERRERS)
        .map(|(host, count)| Referrer {
            host,
            count: *count,
        })
        .collect();
    stats
        .to_vec()
        .map_err(|_| "these statistics do not fit in a version-2 reply")
}
