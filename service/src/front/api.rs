//! The JSON API front (`/api/v1`, issue 21): a request already parsed
//! into an [`ApiCall`] by the sans-IO [`crate::api`] module is authorised,
//! rate-limited and run through the operations ([`crate::ops`]) the wire
//! protocol uses; outcomes are rendered as JSON or RFC 9457 problems.

use std::time::{Duration, Instant};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use bytes::BytesMut;
use shorty_protocol::ErrorCode;

use crate::api::auth::{presented_key, AuthError};
use crate::api::model::{rfc3339_ms, Clicks};
use crate::api::{self, ApiCall, LinkView, Patch, Problem};
use crate::codes::MAX_CODE_LEN;
use crate::http::{self, Method, Response};
use crate::limits::{Action, Limited};
use crate::link::{Field, LinkMeta, Principal};
use crate::log::record::ALIAS_KEY;
use crate::metrics::{Op, Proto};
use crate::ops::lifecycle::{self, CreateRequest};
use crate::ops::stats::StatsQuery;
use crate::ops::{self, Step};
use crate::output::{ApiView, OpId, Output, Render, Wait};
use crate::shard::{OpResult, Shard};
use crate::stats;

/// Dead entries (links deleted since their key last listed) one listing
/// drops from the owner index at most: the work a listing does on its core
/// is bounded whatever the backlog (review of f02450a: 50,000 deletes made
/// one listing stall that core's redirects for 0.15 s).
const MAX_PRUNED_PER_PAGE: usize = 1_000;

impl Shard {
    /// Counts `action` for an HTTP request: behind a trusted proxy, the
    /// client its forwarding headers name.
    pub(super) fn limit_http(
        &self,
        request: &http::Request<'_>,
        action: Action,
        key_id: Option<u32>,
        now: Instant,
    ) -> Result<(), Limited> {
        let limits = &self.shared.limits;
        let key_rate = self.shared.key_create_rate(action, key_id);
        if limits.is_off() && key_rate.is_none() {
            return Ok(());
        }
        let client = crate::limits::client_behind(
            self.peer,
            request.forwarded_for,
            request.forwarded,
            self.shared.settings.client_ip_header,
            &self.shared.settings.trusted_proxies,
        );
        limits.check_with(action, client, key_id, key_rate, now)
    }

    /// A JSON API request ([`crate::api`]): checked, authorised, then run
    /// through the operations SHORTEN and RESOLVE use.
    pub(super) fn api_request(
        &mut self,
        conn: u32,
        request: &http::Request<'_>,
        body: &[u8],
        out: &mut Output,
        now: Instant,
    ) {
        let head_only = request.method == Method::Head;
        let keep_alive = request.keep_alive;
        let problem = |shard: &Self, out: &mut Output, problem: Problem| {
            shard
                .metrics()
                .request(Proto::Http, Op::Api, problem.status);
            let date = &shard.date;
            out.push_with(|dst| write_problem(dst, date, &problem, head_only, keep_alive));
        };
        let call = match api::parse_call(request.method, request.path, request.query, body) {
            Ok(call) => call,
            Err(p) => return problem(self, out, p),
        };
        let mut principal = Principal::unauthenticated(false);
        if let Some(scope) = call.scope() {
            let presented = presented_key(request.authorization, request.api_key);
            // The operations check a link's owner and the scopes for reads,
            // changes and statistics (one rule for both fronts); the front
            // checks the scope only of calls no operation checks: creations
            // (the plain SHORTEN path has no owner) and listings.
            let front_checked = matches!(
                call,
                ApiCall::Create(_) | ApiCall::Bulk(_) | ApiCall::List { .. }
            );
            let caller = self
                .shared
                .keys
                .current()
                .caller(presented, self.shared.settings.auth_required)
                .and_then(|caller| {
                    if !front_checked || caller.scopes.allows(scope) {
                        Ok(caller)
                    } else {
                        Err(AuthError::Forbidden(scope))
                    }
                });
            if let Ok(caller) = caller {
                principal = caller;
            }
            match caller {
                Err(err) => return problem(self, out, err.problem()),
                // A bulk creation counts each item apart (below).
                Ok(caller) if call.is_write() && !matches!(call, ApiCall::Bulk(_)) => {
                    if let Err(limited) =
                        self.limit_http(request, Action::Create, caller.key_id, now)
                    {
                        let mut p = Problem::new(429, limited.message());
                        for (name, value) in limited.headers() {
                            p = p.with_header(name, value);
                        }
                        return problem(self, out, p);
                    }
                }
                Ok(_) => {}
            }
        }
        let render = |view| Render::Api {
            view,
            head_only,
            keep_alive,
        };
        match call {
            ApiCall::OpenApi => {
                self.metrics().request(Proto::Http, Op::Api, 200);
                let date = &self.date;
                out.push_with(|dst| {
                    http::write(
                        dst,
                        date,
                        &Response {
                            status: 200,
                            headers: &[("Content-Type", "application/json")],
                            body: api::OPENAPI.as_bytes(),
                            head_only,
                            keep_alive,
                        },
                    )
                })
            }
            // The Redis store keeps plain links only: SHORTEN's path.
            // (A link made with a key takes the lifecycle's path: it
            // records its owner, for the listing.)
            ApiCall::Create(link)
                if link.is_plain() && self.local.is_none() && principal.key_id.is_none() =>
            {
                let view = ApiView::Created {
                    url: link.url.as_str().into(),
                };
                let step = ops::create::shorten(self, conn, link.url.as_bytes());
                let timeout = self.shared.settings.commit_timeout;
                self.api_step(step, render(view), timeout, out, now);
            }
            ApiCall::Create(link) => {
                let view = ApiView::Created {
                    url: link.url.as_str().into(),
                };
                let step = self.create_in_order(conn, create_request(&link), principal, now, out);
                let timeout = self.shared.settings.commit_timeout;
                self.api_step(step, render(view), timeout, out, now);
            }
            ApiCall::Get { code } => {
                let view = ApiView::Link {
                    code: code.as_str().into(),
                    principal,
                };
                let step = lifecycle::info(self, conn, code.as_bytes(), principal);
                let timeout = self.shared.settings.store_timeout;
                self.api_step(step, render(view), timeout, out, now);
            }
            ApiCall::Update { code, patch } => {
                let step = lifecycle::update(
                    self,
                    conn,
                    code.as_bytes(),
                    link_patch(patch),
                    principal,
                    now,
                )
                .held_for(out);
                // A read of the current record, then a durable write.
                let settings = &self.shared.settings;
                let timeout = settings.store_timeout + settings.commit_timeout;
                self.api_step(step, render(ApiView::Updated), timeout, out, now);
            }
            ApiCall::Delete { code } => {
                let step =
                    lifecycle::delete(self, conn, code.as_bytes(), principal, now).held_for(out);
                let settings = &self.shared.settings;
                let timeout = settings.store_timeout + settings.commit_timeout;
                self.api_step(step, render(ApiView::Deleted), timeout, out, now);
            }
            ApiCall::Stats {
                code,
                from_ms,
                to_ms,
                granularity,
            } => {
                let (granularity, name, span) = match granularity {
                    api::Granularity::Hour => (stats::Granularity::Hour, "hour", 48 * HOUR_MS),
                    api::Granularity::Day => (stats::Granularity::Day, "day", 30 * 24 * HOUR_MS),
                };
                // Defaults: the last 48 hours (hourly) or 30 days (daily),
                // up to the end of the bucket holding now.
                let step = granularity.millis();
                let to_ms = to_ms.unwrap_or_else(|| (self.now_ms(now) / step + 1) * step);
                let from_ms = from_ms.unwrap_or_else(|| to_ms.saturating_sub(span));
                let query = StatsQuery {
                    from_ms,
                    to_ms,
                    granularity,
                };
                let step = ops::stats::series(self, conn, code.as_bytes(), principal, query);
                let timeout = self.shared.settings.store_timeout;
                let view = ApiView::Stats { granularity: name };
                self.api_step(step, render(view), timeout, out, now);
            }
            ApiCall::List { cursor, limit } if self.local.is_none() => {
                let Some(owner) = principal.key_id else {
                    let p = Problem::new(
                        401,
                        "links are listed per API key (the key that made them): send one",
                    );
                    return problem(self, out, p);
                };
                let after = match cursor.as_deref().map(remote_cursor) {
                    None => None,
                    Some(Some(after)) => Some(after),
                    Some(None) => {
                        let p = Problem::invalid("cursor", "is not a cursor this server made");
                        return problem(self, out, p);
                    }
                };
                let op = self.new_op(conn, 0);
                self.remote.push_back(crate::shard::RemoteRequest::List {
                    op,
                    owner,
                    after,
                    limit,
                });
                let view = ApiView::Page {
                    owner,
                    entries: Box::default(),
                    next: None,
                    principal,
                };
                let timeout = self.shared.settings.store_timeout;
                self.api_step(Step::Pending(op), render(view), timeout, out, now);
            }
            ApiCall::List { cursor, limit } => {
                let after = match cursor.as_deref().map(crate::owners::Entry::from_cursor) {
                    None => None,
                    Some(Some(entry)) => Some(entry),
                    Some(None) => {
                        let p = Problem::invalid("cursor", "is not a cursor this server made");
                        return problem(self, out, p);
                    }
                };
                // Links are listed per key: the key that made them.
                let Some(owner) = principal.key_id else {
                    let p = Problem::new(
                        401,
                        "links are listed per API key (the key that made them): send one",
                    );
                    return problem(self, out, p);
                };
                // The remote store's listing is the arm above.
                let (entries, next) = self
                    .owned_page(owner, after, limit as usize)
                    .unwrap_or_default();
                let next = next.as_ref().map(crate::owners::Entry::cursor);
                let ops: Box<[OpId]> = entries
                    .iter()
                    .map(|entry| {
                        let code = member_code(&entry.member);
                        match lifecycle::info(self, conn, code.as_bytes(), principal) {
                            Step::Pending(op) => op,
                            Step::Now(result) => self.settled_op(conn, result),
                        }
                    })
                    .collect();
                let view = ApiView::Page {
                    owner,
                    entries: entries.into(),
                    next,
                    principal,
                };
                self.api_many(
                    ops,
                    render(view),
                    self.shared.settings.store_timeout,
                    out,
                    now,
                );
            }
            ApiCall::Bulk(items) => {
                let mut ops = Vec::with_capacity(items.len());
                let mut views = Vec::with_capacity(items.len());
                for item in items {
                    let link = match item {
                        Ok(link) => link,
                        Err(p) => {
                            views.push(Err(p));
                            continue;
                        }
                    };
                    // Each item is a creation for the rate limits.
                    if let Err(limited) =
                        self.limit_http(request, Action::Create, principal.key_id, now)
                    {
                        views.push(Err(Problem::new(429, limited.message())));
                        continue;
                    }
                    let step =
                        if link.is_plain() && self.local.is_none() && principal.key_id.is_none() {
                            ops::create::shorten(self, conn, link.url.as_bytes())
                        } else {
                            self.create_in_order(conn, create_request(&link), principal, now, out)
                        };
                    ops.push(match step {
                        Step::Pending(op) => op,
                        Step::Now(result) => self.settled_op(conn, result),
                    });
                    views.push(Ok(link.url.into_boxed_str()));
                }
                let view = ApiView::Bulk {
                    items: views.into(),
                };
                let timeout = self.shared.settings.commit_timeout;
                self.api_many(ops.into(), render(view), timeout, out, now);
            }
        }
    }

    /// Up to `limit` of `owner`'s links after `after`, newest first, each
    /// still live in the key directory (dead entries met on the way are
    /// dropped from the index: a deleted link leaves the listing at once),
    /// and where the next page starts (`None`: nothing more). At most
    /// [`MAX_PRUNED_PER_PAGE`] dead entries are dropped per call, so a
    /// listing after many deletes answers a short page and a cursor rather
    /// than holding its core for the whole backlog. `None` without the
    /// embedded log.
    fn owned_page(
        &self,
        owner: u32,
        mut after: Option<crate::owners::Entry>,
        limit: usize,
    ) -> Option<(Vec<crate::owners::Entry>, Option<crate::owners::Entry>)> {
        let keydir = &self.local.as_ref()?.keydir;
        let owners = keydir.owners();
        let mut page = Vec::with_capacity(limit);
        let mut pruned = 0;
        // Each round drops every dead entry it meets, so it ends.
        loop {
            let wanted = limit - page.len();
            let batch = owners.page(owner, after.as_ref(), wanted);
            let got = batch.len();
            for entry in batch {
                let ident = match &entry.member {
                    crate::owners::Member::Key(key) => crate::keydir::Ident::Key(*key),
                    crate::owners::Member::Alias(alias) => crate::keydir::Ident::Alias(alias),
                };
                let live = matches!(
                    keydir.lookup(ident),
                    Some((crate::keydir::Target::Live(_), _))
                );
                after = Some(entry.clone());
                if live {
                    page.push(entry);
                } else {
                    owners.remove(owner, &entry);
                    pruned += 1;
                }
            }
            if got < wanted {
                return Some((page, None));
            }
            if page.len() == limit || pruned >= MAX_PRUNED_PER_PAGE {
                return Some((page, after));
            }
        }
    }

    /// Queues the wait of a call answered by several operations.
    fn api_many(
        &mut self,
        ops: Box<[OpId]>,
        render: Render,
        timeout: Duration,
        out: &mut Output,
        now: Instant,
    ) {
        // Counted as the largest replies the links can make until they
        // settle (see `api_step`).
        let cost = ops.len() * (2 * self.shared.settings.max_url_bytes + 2048);
        out.push_wait(
            Wait::Many {
                ops,
                render,
                deadline: now + timeout,
            },
            cost.max(crate::output::WAIT_COST),
        );
    }

    /// Renders the outcomes of a [`Wait::Many`]; returns the status for
    /// the metrics.
    pub(super) fn render_api_many(
        &self,
        results: &[OpResult],
        view: &ApiView,
        head_only: bool,
        keep_alive: bool,
        dst: &mut BytesMut,
    ) -> u16 {
        let body = match view {
            ApiView::Page {
                owner,
                entries,
                next,
                principal,
            } => {
                let mut links = Vec::with_capacity(results.len());
                for (entry, result) in entries.iter().zip(results) {
                    match result {
                        // The entry's link, still the owner's (an alias
                        // deleted and claimed again is another link).
                        OpResult::Link(link)
                            if link.meta.owner_key_id == Some(*owner)
                                && link.meta.created_at_ms.unwrap_or(0) == entry.created_at_ms =>
                        {
                            links.push(self.link_view(link, *principal));
                        }
                        OpResult::Link(_) | OpResult::NotFound => {
                            if let Some(local) = &self.local {
                                local.keydir.owners().remove(*owner, entry);
                            }
                        }
                        // A page with a hole would look complete: the
                        // listing fails as a whole (a retry reads again).
                        failed => {
                            let p = match self.api_outcome(failed, view) {
                                Err(p) => p,
                                Ok(_) => Problem::new(500, "unexpected store reply"),
                            };
                            write_problem(dst, &self.date, &p, head_only, keep_alive);
                            return p.status;
                        }
                    }
                }
                serde_json::json!({ "links": links, "nextCursor": next })
            }
            ApiView::Bulk { items } => {
                let mut results = results.iter();
                let items: Vec<_> = items
                    .iter()
                    .enumerate()
                    .map(|(i, item)| {
                        let outcome = match item {
                            Err(p) => Err(p.clone()),
                            Ok(url) => match results.next() {
                                Some(result) => {
                                    self.api_outcome(result, &ApiView::Created { url: url.clone() })
                                }
                                None => Err(Problem::new(500, "lost operation")),
                            },
                        };
                        match outcome {
                            Ok((status, link)) => {
                                serde_json::json!({ "status": status, "link": link })
                            }
                            Err(mut p) => {
                                // A field is named within the request, as
                                // the body's own parse names it
                                // (`links[3].url`), whichever check refused it.
                                for error in &mut p.errors {
                                    if !error.field.starts_with("links[") {
                                        error.field = format!("links[{i}].{}", error.field);
                                    }
                                }
                                serde_json::json!({ "status": p.status, "problem": p })
                            }
                        }
                    })
                    .collect();
                serde_json::json!({ "results": items })
            }
            _ => {
                let p = Problem::new(500, "unexpected reply");
                write_problem(dst, &self.date, &p, head_only, keep_alive);
                return p.status;
            }
        };
        write_json(
            dst,
            &self.date,
            body.to_string().as_bytes(),
            head_only,
            keep_alive,
        );
        200
    }

    /// Renders an API operation's step now, or queues its wait.
    fn api_step(
        &mut self,
        step: Step,
        render: Render,
        timeout: Duration,
        out: &mut Output,
        now: Instant,
    ) {
        match step {
            Step::Pending(op) => out.push_wait(
                Wait::Op {
                    op,
                    render,
                    deadline: now + timeout,
                },
                // Counted as the largest reply a link can make until it
                // settles: its URL, expired-URL and title, and the rest.
                2 * self.shared.settings.max_url_bytes + 2048,
            ),
            Step::Now(result) => {
                self.metrics()
                    .request(Proto::Http, Op::Api, super::status_of(&result));
                out.push_with(|dst| self.render(&result, &render, dst));
            }
        }
    }

    /// Renders an API call's outcome as JSON or a problem.
    pub(super) fn render_api(
        &self,
        result: &OpResult,
        view: &ApiView,
        head_only: bool,
        keep_alive: bool,
        dst: &mut BytesMut,
    ) {
        match (result, view) {
            (OpResult::Page { links, next }, ApiView::Page { principal, .. }) => {
                let links: Vec<_> = links
                    .iter()
                    .map(|link| self.link_view(link, *principal))
                    .collect();
                let next = next.as_deref().map(|n| URL_SAFE_NO_PAD.encode(n));
                let body = serde_json::json!({ "links": links, "nextCursor": next }).to_string();
                return write_json(dst, &self.date, body.as_bytes(), head_only, keep_alive);
            }
            (OpResult::Deleted, ApiView::Deleted) => {
                return http::write(
                    dst,
                    &self.date,
                    &Response {
                        status: 204,
                        headers: &[],
                        body: b"",
                        head_only,
                        keep_alive,
                    },
                );
            }
            (OpResult::Stats(view), ApiView::Stats { granularity }) => {
                let body = stats_json(view, granularity);
                return write_json(dst, &self.date, body.as_bytes(), head_only, keep_alive);
            }
            _ => {}
        }
        match self.api_outcome(result, view) {
            Ok((status, link)) => {
                // Serialising strings and numbers cannot fail.
                let body = serde_json::to_vec(&link).unwrap_or_default();
                let location = format!("{}/links/{}", api::API_V1, link.code);
                let created = [
                    ("Content-Type", "application/json"),
                    ("Location", location.as_str()),
                ];
                let headers = if status == 201 {
                    &created[..]
                } else {
                    &created[..1]
                };
                http::write(
                    dst,
                    &self.date,
                    &Response {
                        status,
                        headers,
                        body: &body,
                        head_only,
                        keep_alive,
                    },
                );
            }
            Err(problem) => write_problem(dst, &self.date, &problem, head_only, keep_alive),
        }
    }

    /// An operation's outcome as the API shows one link (with its status),
    /// or a problem.
    fn api_outcome(&self, result: &OpResult, view: &ApiView) -> Result<(u16, LinkView), Problem> {
        let public = self.shared.settings.public_url.as_str();
        match (result, view) {
            (OpResult::Stored(key), ApiView::Created { url }) => {
                let mut code = [0; MAX_CODE_LEN];
                let code = self.shared.codec.code(*key, &mut code);
                Ok((201, LinkView::plain(code, public, url)))
            }
            (OpResult::Url(url) | OpResult::Redirect { url, .. }, ApiView::Link { code, .. }) => {
                Ok((
                    200,
                    LinkView::plain(code, public, &String::from_utf8_lossy(url)),
                ))
            }
            (OpResult::Link(link), ApiView::Created { .. }) => {
                Ok((201, self.link_view(link, Principal::ANYONE)))
            }
            (OpResult::Link(link), ApiView::Link { principal, .. }) => {
                Ok((200, self.link_view(link, *principal)))
            }
            (OpResult::Link(link), ApiView::Updated) => {
                Ok((200, self.link_view(link, Principal::ANYONE)))
            }
            (OpResult::NotFound, _) => Err(Problem::new(404, "no link has this code")),
            (OpResult::Gone { reason, .. }, _) => Err(Problem::new(410, reason.message())),
            // The URL policy's refusals are about the URL field.
            (OpResult::Failed(code, message), ApiView::Created { .. } | ApiView::Updated)
                if matches!(code.0, 400 | 422) && message.contains("URL") =>
            {
                // 422 (a URL that parses as JSON but is not one we take)
                // keeps its status.
                let mut problem = Problem::invalid("url", message.as_ref());
                problem.status = code.0;
                problem.title = http::reason(code.0);
                Err(problem)
            }
            (OpResult::Failed(code, message), _) => {
                let status = if (400..600).contains(&code.0) {
                    code.0
                } else {
                    500
                };
                Err(Problem::new(status, message.as_ref()))
            }
            _ => Err(Problem::new(500, "unexpected store reply")),
        }
    }
}

/// The remote store's cursor (its index member: 16 hex digits of the
/// creation time, `:`, the code) from the API's opaque one.
fn remote_cursor(cursor: &str) -> Option<Box<str>> {
    if cursor.len() > 120 {
        return None;
    }
    let bytes = URL_SAFE_NO_PAD.decode(cursor).ok()?;
    let member = std::str::from_utf8(&bytes).ok()?;
    let (time, code) = member.split_once(':')?;
    let well_formed = time.len() == 16
        && time.bytes().all(|b| b.is_ascii_hexdigit())
        && crate::link::check_alias(code).is_ok();
    well_formed.then(|| member.into())
}

/// The code an owner-index entry's link is reached by.
fn member_code(member: &crate::owners::Member) -> Box<str> {
    match member {
        crate::owners::Member::Key(key) => {
            let mut buf = [0; MAX_CODE_LEN];
            crate::codes::format_code(*key, &mut buf).into()
        }
        crate::owners::Member::Alias(alias) => alias.clone(),
    }
}

const HOUR_MS: u64 = 3_600_000;

impl Shard {
    /// A link as the API shows it; its click totals (from the statistics
    /// operation's rule, [`ops::stats::answer`]) when `principal` may read
    /// them and they are kept for it, else `null` (with `clicksError` when
    /// they could not be read).
    fn link_view(&self, link: &crate::shard::LinkView, principal: Principal) -> LinkView {
        let public = self.shared.settings.public_url.as_str();
        let meta = &link.meta;
        let mut view = LinkView::plain(&link.code, public, &String::from_utf8_lossy(&link.url));
        view.created_at = meta.created_at_ms.map(rfc3339_ms);
        view.expires_at = meta.expires_at_ms.map(rfc3339_ms);
        view.max_clicks = meta.max_clicks;
        view.expired_url = meta.expired_url.as_deref().map(str::to_owned);
        view.redirect_status = meta.redirect_status;
        view.disabled = meta.disabled;
        view.title = meta.title.as_deref().map(str::to_owned);
        view.forward_query = meta.forward_query;
        let key = self
            .shared
            .codec
            .parse(link.code.as_bytes())
            .unwrap_or(ALIAS_KEY);
        match ops::stats::answer(self, key, meta, principal, None, link.clicks.as_ref()) {
            OpResult::Stats(totals) => {
                view.clicks = Some(Clicks {
                    total: totals.total,
                    human: totals.human,
                    bot: totals.bot,
                });
                view.last_click_at = totals.last_click_ms.map(rfc3339_ms);
            }
            // Unreadable statistics are said so, not shown as a bare
            // `null` (review 6, F5: a Redis restart's first read looked
            // like "no statistics for this key").
            OpResult::Failed(code, why) if code == ErrorCode::INTERNAL => {
                view.clicks_error = Some(why.into());
            }
            // Not this key's to read: `null`.
            _ => {}
        }
        view
    }
}

/// A link's statistics as JSON: totals, one `{start, clicks}` per bucket
/// (zeros included, oldest first) and the top referring hosts.
fn stats_json(view: &stats::StatsView, granularity: &str) -> String {
    let series: Vec<_> = view
        .series
        .iter()
        .map(|&(start, clicks)| serde_json::json!({ "start": rfc3339_ms(start), "clicks": clicks }))
        .collect();
    let referrers: Vec<_> = view
        .referrers
        .iter()
        .map(|(host, clicks)| serde_json::json!({ "referrer": host, "clicks": clicks }))
        .collect();
    serde_json::json!({
        "granularity": granularity,
        "total": view.total,
        "human": view.human,
        "bot": view.bot,
        "firstClickAt": view.first_click_ms.map(rfc3339_ms),
        "lastClickAt": view.last_click_ms.map(rfc3339_ms),
        "series": series,
        "referrers": referrers,
    })
    .to_string()
}

/// A checked API creation as the lifecycle operation's request.
fn create_request(link: &api::CreateLink) -> CreateRequest<'_> {
    CreateRequest {
        url: link.url.as_bytes(),
        alias: link.alias.as_deref(),
        options: LinkMeta {
            expires_at_ms: link.expires_at_ms,
            max_clicks: link.max_clicks,
            redirect_status: link.redirect_status,
            expired_url: link.expired_url.as_deref().map(Box::from),
            title: link.title.as_deref().map(Box::from),
            forward_query: link.forward_query,
            ..LinkMeta::default()
        },
    }
}

/// A checked API patch as the operations' (`null` clears a field).
fn link_patch(patch: api::LinkPatch) -> crate::link::LinkPatch {
    fn field<T, U>(p: Patch<T>, f: impl FnOnce(T) -> U) -> Field<U> {
        match p {
            Patch::Keep => Field::Keep,
            Patch::Clear => Field::Clear,
            Patch::Set(v) => Field::Set(f(v)),
        }
    }
    crate::link::LinkPatch {
        url: patch.url,
        expires_at_ms: field(patch.expires_at_ms, |v| v),
        max_clicks: field(patch.max_clicks, |v| v),
        redirect_status: field(patch.redirect_status, |v| v),
        expired_url: field(patch.expired_url, Box::from),
        disabled: match patch.disabled {
            None => Field::Keep,
            Some(true) => Field::Set(()),
            Some(false) => Field::Clear,
        },
        title: field(patch.title, Box::from),
        forward_query: field(patch.forward_query, |v| v),
    }
}

/// Writes `problem` as an `application/problem+json` response.
/// Writes a `200` with a JSON `body`.
fn write_json(dst: &mut BytesMut, date: &str, body: &[u8], head_only: bool, keep_alive: bool) {
    http::write(
        dst,
        date,
        &Response {
            status: 200,
            headers: &[("Content-Type", "application/json")],
            body,
            head_only,
            keep_alive,
        },
    );
}

pub(super) fn write_problem(
    dst: &mut BytesMut,
    date: &str,
    problem: &Problem,
    head_only: bool,
    keep_alive: bool,
) {
    let body = problem.body();
    let mut headers: Vec<(&str, &str)> = vec![("Content-Type", api::PROBLEM_JSON)];
    headers.extend(problem.headers.iter().map(|(n, v)| (*n, v.as_str())));
    http::write(
        dst,
        date,
        &Response {
            status: problem.status,
            headers: &headers,
            body: &body,
            head_only,
            keep_alive,
        },
    );
}
