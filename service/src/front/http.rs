//! The HTTP fronts' request handling: redirects, health, metrics.

use std::time::Instant;

use bytes::BytesMut;

use crate::forward;
use crate::http::{self, Front, Head, Method, Response, Route};
use crate::limits::Action;
use crate::metrics::{Op, Proto};
use crate::output::{Output, Render};
use crate::page::{self, PageRoute};
use crate::shard::{InputOutcome, OpResult, Shard};
use crate::stats::{self, ClickMeta};

impl Shard {
    /// Handles every complete HTTP request at the front of `input`.
    pub fn handle_http(
        &mut self,
        conn: u32,
        front: Front,
        input: &[u8],
        out: &mut Output,
        now: Instant,
    ) -> InputOutcome {
        let cap = self.shared.settings.max_output_bytes;
        let mut outcome = InputOutcome::default();
        loop {
            let rest = input.get(outcome.consumed..).unwrap_or_default();
            // Back-pressure, or this connection's earlier write still in
            // flight (`held_back`): the rest waits.
            if rest.is_empty() || out.committed_bytes() >= cap || self.held_back(conn, out) {
                return outcome;
            }
            match http::parse(rest, &self.shared.settings) {
                Head::Complete { len, request } => {
                    // A body (API routes only, bounded by `--api-max-body`
                    // in `parse`) must be in whole before the request runs.
                    let Some(body) = rest.get(len..len + request.body_len) else {
                        outcome.mid_frame = true;
                        outcome.in_body = true;
                        return outcome;
                    };
                    outcome.consumed += len + request.body_len;
                    self.http_request(conn, front, &request, body, out, now);
                    if !request.keep_alive {
                        outcome.close = true;
                        return outcome;
                    }
                }
                Head::Partial => {
                    outcome.mid_frame = true;
                    return outcome;
                }
                Head::Refused { status, body } => {
                    self.metrics().request(Proto::Http, Op::Other, status);
                    out.push_with(|dst| {
                        http::write(
                            dst,
                            &self.date,
                            &Response {
                                status,
                                headers: &[],
                                body: body.as_bytes(),
                                head_only: false,
                                keep_alive: false,
                            },
                        )
                    });
                    outcome.close = true;
                    return outcome;
                }
            }
        }
    }

    fn http_request(
        &mut self,
        conn: u32,
        front: Front,
        request: &http::Request<'_>,
        body: &[u8],
        out: &mut Output,
        now: Instant,
    ) {
        let head_only = request.method == Method::Head;
        let keep_alive = request.keep_alive;
        // `date` is passed in, not captured: the shard is borrowed mutably
        // between responses, and a clone of the `Arc`s (the date, the
        // shared state) per request was three atomic increments and three
        // decrements on every redirect (issue 23).
        let respond =
            |out: &mut Output, date: &str, status: u16, headers: &[(&str, &str)], body: &[u8]| {
                out.push_with(|dst| {
                    http::write(
                        dst,
                        date,
                        &Response {
                            status,
                            headers,
                            body,
                            head_only,
                            keep_alive,
                        },
                    )
                })
            };
        // The web page and QR codes (issue 22): paths no code can have.
        if front == Front::Public && matches!(request.method, Method::Get | Method::Head) {
            if let Some(page) = page::route(&self.shared.settings, request.path, request.query) {
                return self.page_request(conn, page, request, out, now);
            }
        }
        let route = http::route(&self.shared.settings, front, request.path);
        if let Route::Api(_) = route {
            return self.api_request(conn, request, body, out, now);
        }
        if !matches!(request.method, Method::Get | Method::Head) {
            self.metrics().request(Proto::Http, Op::Other, 405);
            return respond(
                out,
                &self.date,
                405,
                &[("Allow", "GET, HEAD")],
                b"only GET and HEAD\n",
            );
        }
        if let Route::Code(_) = route {
            if let Err(limited) = self.limit_http(request, Action::Redirect, None, now) {
                self.metrics().request(Proto::Http, Op::Redirect, 429);
                let headers = limited.headers();
                let headers: Vec<(&str, &str)> =
                    headers.iter().map(|(n, v)| (*n, v.as_str())).collect();
                let body = format!("{}\n", limited.message());
                return respond(out, &self.date, 429, &headers, body.as_bytes());
            }
        }
        // Only a GET of a link is a click (a HEAD is neither counted nor
        // classified); whether it counts is decided in `ops::resolve`.
        let click = (matches!(route, Route::Code(_)) && !head_only).then(|| ClickMeta {
            head: false,
            bot: self.stats.enabled() && self.stats.is_bot(request.user_agent),
            referrer_host: request.referer.and_then(stats::referrer_host),
        });
        match route {
            Route::Code(code) => self.resolve_click(
                conn,
                code.as_bytes(),
                out,
                now,
                Render::Redirect {
                    head_only,
                    keep_alive,
                    query: None,
                },
                Proto::Http,
                click,
                // Kept whenever there is one: a link's own option may
                // forward it even when the server's default does not.
                request.query.filter(|q| !q.is_empty()),
            ),
            // The public front's health check is readiness (a load
            // balancer should stop sending new links to a server that
            // cannot take them; redirects still work there); the admin
            // listener's is liveness.
            Route::Health if front == Front::Admin => {
                self.metrics().request(Proto::Http, Op::Health, 200);
                respond(out, &self.date, 200, &[], b"alive\n")
            }
            Route::Health | Route::Ready => match self.shared.health.problem() {
                Some((core, state)) => {
                    self.metrics().request(Proto::Http, Op::Health, 503);
                    let body = format!("not ready: core {core}: {}\n", state.reason());
                    respond(out, &self.date, 503, &[], body.as_bytes())
                }
                None => {
                    self.metrics().request(Proto::Http, Op::Health, 200);
                    respond(out, &self.date, 200, &[], b"ok\n")
                }
            },
            Route::Metrics => {
                self.metrics().request(Proto::Http, Op::Health, 200);
                let text = self
                    .shared
                    .admin
                    .get()
                    .map(|a| a.metrics_text())
                    .unwrap_or_default();
                respond(
                    out,
                    &self.date,
                    200,
                    &[(
                        "Content-Type",
                        "application/openmetrics-text; version=1.0.0; charset=utf-8",
                    )],
                    text.as_bytes(),
                )
            }
            Route::NotFound | Route::Api(_) => {
                self.metrics().request(Proto::Http, Op::Other, 404);
                respond(out, &self.date, 404, &[], b"not found\n")
            }
        }
    }

    /// Serves the web page's assets and QR codes (see [`crate::page`]).
    fn page_request(
        &mut self,
        conn: u32,
        route: PageRoute<'_>,
        request: &http::Request<'_>,
        out: &mut Output,
        now: Instant,
    ) {
        let head_only = request.method == Method::Head;
        let keep_alive = request.keep_alive;
        match route {
            PageRoute::Asset(asset) => {
                let response =
                    page::serve_asset(asset, request.if_none_match, request.accept_encoding);
                self.metrics().request(Proto::Http, Op::Other, 0);
                let date = self.date.clone();
                out.push_with(|dst| {
                    http::write(
                        dst,
                        &date,
                        &Response {
                            status: response.status,
                            headers: &response.headers,
                            body: response.body,
                            head_only,
                            keep_alive,
                        },
                    )
                });
            }
            PageRoute::Qr { code, format } => self.resolve(
                conn,
                code.as_bytes(),
                out,
                now,
                Render::Qr {
                    code: code.into(),
                    format,
                    head_only,
                    keep_alive,
                },
                Proto::Http,
            ),
        }
    }

    /// The QR code of `code`'s short URL once `result` says the code holds
    /// a live link; otherwise the redirect's answer (404, 410, 503, ...).
    pub(super) fn render_qr(
        &self,
        result: &OpResult,
        code: &str,
        format: page::qr::Format,
        head_only: bool,
        keep_alive: bool,
        dst: &mut BytesMut,
    ) {
        match result {
            OpResult::Url(_) | OpResult::Redirect { .. } => {}
            // A dead link's QR code is dead too (410), never the link's
            // expired-URL: an image request is not a visit to send on.
            OpResult::Gone { reason, .. } => {
                let gone = OpResult::Gone {
                    reason: *reason,
                    expired_url: None,
                };
                return self.render_redirect(&gone, head_only, keep_alive, None, dst);
            }
            _ => return self.render_redirect(result, head_only, keep_alive, None, dst),
        }
        let short = format!("{}{code}", self.shared.settings.public_url);
        let (status, headers, body) = match page::qr::render(&short, format) {
            Ok(image) => (
                200,
                vec![
                    ("Content-Type", format.content_type()),
                    // A link's short URL never changes while it exists.
                    ("Cache-Control", "private, max-age=3600"),
                    ("X-Content-Type-Options", "nosniff"),
                    ("Content-Security-Policy", page::qr::QR_CSP),
                ],
                image,
            ),
            Err(err) => (500, Vec::new(), format!("{err}\n").into_bytes()),
        };
        http::write(
            dst,
            &self.date,
            &Response {
                status,
                headers: &headers,
                body: &body,
                head_only,
                keep_alive,
            },
        );
    }

    pub(super) fn render_redirect(
        &self,
        result: &OpResult,
        head_only: bool,
        keep_alive: bool,
        query: Option<&str>,
        dst: &mut BytesMut,
    ) {
        let date = &self.date;
        let respond = |dst: &mut BytesMut, status, headers: &[(&str, &str)], body: &str| {
            http::write(
                dst,
                date,
                &Response {
                    status,
                    headers,
                    body: body.as_bytes(),
                    head_only,
                    keep_alive,
                },
            )
        };
        let settings = &self.shared.settings;
        let redirect = |dst: &mut BytesMut, url: &[u8], status: u16, forward: bool| {
            let query = query.filter(|_| forward);
            let (clash, max) = (settings.forward_query_clash, settings.max_url_bytes);
            match std::str::from_utf8(url) {
                // The usual URL, stored as printable ASCII: merged straight
                // into the response (what forwarding adds is ASCII too).
                Ok(url) if http::is_header_safe(url.as_bytes()) => {
                    http::write_redirect(dst, date, status, keep_alive, |dst| {
                        forward::merge_into(dst, url, query, clash, max);
                    })
                }
                // Header values are ASCII: the URL's ASCII form (and
                // never a raw CR LF, see `http::location`).
                _ => {
                    let url = String::from_utf8_lossy(url);
                    let url = forward::merge(&url, query, true, clash, max);
                    let location = http::location(&url);
                    respond(dst, status, &[("Location", &location)], "");
                }
            }
        };
        match result {
            OpResult::Url(url) => {
                redirect(dst, url, settings.redirect_status, settings.forward_query)
            }
            OpResult::Redirect {
                url,
                status,
                forward_query,
            } => redirect(
                dst,
                url,
                status.unwrap_or(settings.redirect_status),
                forward_query.unwrap_or(settings.forward_query),
            ),
            // After expiry or the click limit, to the link's expired-URL
            // if it has one (never forwarding the visitor's query there).
            OpResult::Gone {
                expired_url: Some(url),
                ..
            } => redirect(dst, url.as_bytes(), 302, false),
            OpResult::Gone { reason, .. } => http::write(
                dst,
                date,
                &Response {
                    status: 410,
                    headers: &[("Content-Type", "text/html; charset=utf-8")],
                    body: gone_page(reason.message()).as_bytes(),
                    head_only,
                    keep_alive,
                },
            ),
            OpResult::NotFound => respond(dst, 404, &[], "no URL is stored under this code\n"),
            OpResult::Failed(code, message) => {
                let status = if code.0 == 503 { 503 } else { 500 };
                respond(dst, status, &[], &format!("{message}\n"))
            }
            OpResult::Stored(_)
            | OpResult::Link(_)
            | OpResult::Stats(_)
            | OpResult::Deleted
            | OpResult::Page { .. } => respond(dst, 500, &[], "unexpected store reply\n"),
        }
    }
}

/// The small page of a link that is gone (`message` is one of the fixed
/// texts of [`crate::link::Gone`], never user input).
fn gone_page(message: &str) -> String {
    format!(
        "<!doctype html>\n<html><head><meta charset=\"utf-8\"><title>410 Gone</title></head>\
         <body><h1>Gone</h1><p>{message}.</p></body></html>\n"
    )
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use bytes::{Bytes, BytesMut};

    use crate::link::Gone;
    use crate::settings::Settings;
    use crate::shard::{OpResult, Shard, Shared};

    fn rendered(result: &OpResult) -> String {
        let shard = Shard::new(
            Arc::new(Shared::for_tests(Settings::for_tests("http://s.example/"))),
            0,
        );
        let mut dst = BytesMut::new();
        shard.render_redirect(result, false, true, None, &mut dst);
        String::from_utf8(dst.to_vec()).unwrap()
    }

    /// A stored URL with a CR LF (data imported before `import` checked
    /// expired-URLs, review 23) cannot split the response: the redirect's
    /// head keeps its own headers only, and the value is percent-encoded.
    #[test]
    fn a_stored_url_with_a_line_break_cannot_split_the_response() {
        let injected = "https://ok.example/a\r\nSet-Cookie: a=b";
        for result in [
            OpResult::Gone {
                reason: Gone::Expired,
                expired_url: Some(injected.into()),
            },
            OpResult::Url(Bytes::from(injected)),
            // Not a URL the `url` crate parses: percent-encoded by hand.
            OpResult::Url(Bytes::from("no scheme\r\nSet-Cookie: a=b")),
        ] {
            let response = rendered(&result);
            let head = response.split("\r\n\r\n").next().unwrap();
            assert!(
                !head.lines().any(|line| line.starts_with("Set-Cookie")),
                "{response:?}"
            );
            let location = head
                .lines()
                .find_map(|line| line.strip_prefix("Location: "))
                .unwrap();
            assert!(
                location.bytes().all(|b| b.is_ascii_graphic()),
                "{location:?}"
            );
            assert!(
                location.contains("Set-Cookie:"),
                "kept, encoded: {location:?}"
            );
        }
        // The usual URL is written as it is.
        let plain = rendered(&OpResult::Url(Bytes::from("https://ok.example/a?b=c")));
        assert!(
            plain.contains("\r\nLocation: https://ok.example/a?b=c\r\n"),
            "{plain:?}"
        );
    }
}
