//! The HTTP/1.1 front: short URLs that work in a browser. Sans-IO.
//!
//! `GET /{code}` (under `--public-url`'s path) answers with a redirect to
//! the long URL (`--redirect-status`, 302 by default), `HEAD` likewise
//! without a body; an unknown code gets 404, `GET /healthz` 200 (503 once
//! the log has failed, so a load balancer takes the server out). Requests
//! are parsed with `httparse`; keep-alive and pipelining work, responses in
//! request order.
//!
//! Limits, all configuration: `--http-max-head-bytes` (8 KiB) and
//! `--http-max-headers` (32), answered with 431 and a close;
//! `--http-header-timeout` (10 s) for a request head to arrive once begun,
//! answered with 408 and a close. Requests with a body are refused (400,
//! close): no route takes one, and skipping it safely is not worth the code.

use std::fmt::Write as _;

use bytes::BytesMut;

use crate::config::Config;
use crate::handler::InputOutcome;
use crate::index::Store;
use crate::service::Service;

/// The most headers `--http-max-headers` may allow (the parser's header
/// array lives on the stack).
pub const MAX_HEADERS_CAP: usize = 128;

/// The path of the health check.
pub const HEALTH_PATH: &str = "/healthz";

/// What a request asked for, once parsed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Route<'a> {
    Health,
    Code(&'a str),
    NotFound,
}

/// The response to send for a request head that timed out.
pub fn timeout_response() -> &'static [u8] {
    b"HTTP/1.1 408 Request Timeout\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
}

/// Handles every complete request at the front of `input`, appending one
/// response per request to `out`.
pub fn handle_input<S: Store>(
    service: &Service<S>,
    log_failed: bool,
    input: &[u8],
    out: &mut BytesMut,
) -> InputOutcome {
    let config = &service.config;
    let mut consumed = 0;
    loop {
        let rest = input.get(consumed..).unwrap_or_default();
        if rest.is_empty() {
            return InputOutcome {
                consumed,
                mid_frame: false,
                close: false,
            };
        }
        let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS_CAP];
        let max_headers = config.http_max_headers.clamp(1, MAX_HEADERS_CAP);
        let mut request = httparse::Request::new(&mut headers[..max_headers]);
        let closing = |out: &mut BytesMut, status, reason, body: &str| {
            respond(out, status, reason, &[], body, false, false);
            InputOutcome {
                consumed,
                mid_frame: false,
                close: true,
            }
        };
        match request.parse(rest) {
            Ok(httparse::Status::Complete(len)) if len <= config.http_max_head_bytes => {
                consumed += len;
                let keep_alive = respond_to(service, log_failed, &request, out);
                if !keep_alive {
                    return InputOutcome {
                        consumed,
                        mid_frame: false,
                        close: true,
                    };
                }
            }
            Ok(httparse::Status::Partial) if rest.len() <= config.http_max_head_bytes => {
                return InputOutcome {
                    consumed,
                    mid_frame: true,
                    close: false,
                };
            }
            // A complete head over the limit, or a partial one already
            // past it.
            Ok(_) => {
                return closing(
                    out,
                    431,
                    "Request Header Fields Too Large",
                    "request head too large\n",
                );
            }
            Err(httparse::Error::TooManyHeaders) => {
                return closing(
                    out,
                    431,
                    "Request Header Fields Too Large",
                    "too many headers\n",
                );
            }
            Err(err) => {
                let body = format!("malformed request: {err}\n");
                return closing(out, 400, "Bad Request", &body);
            }
        }
    }
}

/// Answers one parsed request; returns whether the connection stays open.
fn respond_to<S: Store>(
    service: &Service<S>,
    log_failed: bool,
    request: &httparse::Request<'_, '_>,
    out: &mut BytesMut,
) -> bool {
    let header = |name: &str| {
        request
            .headers
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case(name))
            .map(|h| h.value)
    };
    let connection = header("connection").map(|v| v.to_ascii_lowercase());
    let keep_alive = match request.version {
        Some(1) => connection.as_deref() != Some(b"close".as_slice()),
        _ => connection.as_deref() == Some(b"keep-alive".as_slice()),
    };
    let has_body = header("transfer-encoding").is_some()
        || header("content-length").is_some_and(|v| v.iter().any(|&b| b != b'0'));
    if has_body {
        respond(
            out,
            400,
            "Bad Request",
            &[],
            "request bodies are not accepted\n",
            false,
            false,
        );
        return false;
    }
    let head_only = match request.method {
        Some("GET") => false,
        Some("HEAD") => true,
        _ => {
            let extra = [("Allow", "GET, HEAD")];
            respond(
                out,
                405,
                "Method Not Allowed",
                &extra,
                "only GET and HEAD\n",
                false,
                keep_alive,
            );
            return keep_alive;
        }
    };
    let path = request.path.unwrap_or("/");
    match route(&service.config, path) {
        Route::Health if log_failed => respond(
            out,
            503,
            "Service Unavailable",
            &[],
            "log unavailable: new URLs are refused\n",
            head_only,
            keep_alive,
        ),
        Route::Health => respond(out, 200, "OK", &[], "ok\n", head_only, keep_alive),
        Route::Code(code) => {
            let found = service.codec.parse(code.as_bytes()).and_then(|key| {
                service.store.lookup(key, |url| {
                    let location = location(url);
                    let (status, reason) = redirect_reason(service.config.redirect_status);
                    respond(
                        out,
                        status,
                        reason,
                        &[("Location", &location)],
                        "",
                        head_only,
                        keep_alive,
                    );
                })
            });
            if found.is_none() {
                respond(
                    out,
                    404,
                    "Not Found",
                    &[],
                    "no URL is stored under this code\n",
                    head_only,
                    keep_alive,
                );
            }
        }
        Route::NotFound => respond(
            out,
            404,
            "Not Found",
            &[],
            "not found\n",
            head_only,
            keep_alive,
        ),
    }
    keep_alive
}

fn route<'a>(config: &Config, target: &'a str) -> Route<'a> {
    let path = target.split(['?', '#']).next().unwrap_or_default();
    if path == HEALTH_PATH {
        return Route::Health;
    }
    match path.strip_prefix(config.public_url.path()) {
        Some(code) if !code.is_empty() && !code.contains('/') => Route::Code(code),
        _ => Route::NotFound,
    }
}

/// The `Location` value for a stored URL: as stored when it is ASCII (the
/// usual case), otherwise its ASCII serialisation (punycode host,
/// percent-encoded path), since header values must be ASCII. Stored URLs
/// were validated: no whitespace or control characters, so no header
/// injection.
fn location(url: &str) -> std::borrow::Cow<'_, str> {
    if url.is_ascii() {
        return url.into();
    }
    url::Url::parse(url).map_or_else(|_| url.into(), |u| String::from(u).into())
}

/// The status line text of a redirect status.
pub fn redirect_reason(status: u16) -> (u16, &'static str) {
    match status {
        301 => (301, "Moved Permanently"),
        307 => (307, "Temporary Redirect"),
        308 => (308, "Permanent Redirect"),
        _ => (302, "Found"),
    }
}

fn respond(
    out: &mut BytesMut,
    status: u16,
    reason: &str,
    headers: &[(&str, &str)],
    body: &str,
    head_only: bool,
    keep_alive: bool,
) {
    let mut head = String::with_capacity(128);
    // Writing to a String cannot fail.
    let _ = write!(head, "HTTP/1.1 {status} {reason}\r\n");
    for (name, value) in headers {
        let _ = write!(head, "{name}: {value}\r\n");
    }
    if !body.is_empty() {
        head.push_str("Content-Type: text/plain; charset=utf-8\r\n");
    }
    let _ = write!(
        head,
        "Content-Length: {}\r\nConnection: {}\r\n\r\n",
        body.len(),
        if keep_alive { "keep-alive" } else { "close" }
    );
    out.extend_from_slice(head.as_bytes());
    if !head_only {
        out.extend_from_slice(body.as_bytes());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;
    use std::sync::Arc;

    fn service(args: &[&str]) -> (tempfile::TempDir, Arc<Service>) {
        let dir = tempfile::tempdir().unwrap();
        let mut argv = vec!["shorty", "--data-dir", dir.path().to_str().unwrap()];
        argv.extend_from_slice(args);
        let (service, _) = Service::open(Config::try_parse_from(argv).unwrap()).unwrap();
        (dir, service)
    }

    fn run(service: &Service, failed: bool, input: &[u8]) -> (String, InputOutcome) {
        let mut out = BytesMut::new();
        let outcome = handle_input(service, failed, input, &mut out);
        (String::from_utf8(out.to_vec()).unwrap(), outcome)
    }

    #[test]
    fn http_1_0_closes_unless_asked_to_keep_alive() {
        let (_dir, service) = service(&[]);
        let (out, outcome) = run(&service, false, b"GET /healthz HTTP/1.0\r\n\r\n");
        assert!(out.starts_with("HTTP/1.1 200 OK\r\n") && out.contains("Connection: close"));
        assert!(outcome.close);
        let (out, outcome) = run(
            &service,
            false,
            b"GET /healthz HTTP/1.0\r\nConnection: keep-alive\r\n\r\n",
        );
        assert!(out.contains("Connection: keep-alive") && !outcome.close);
    }

    #[test]
    fn codes_live_under_the_public_url_path() {
        let (_dir, service) = service(&["--public-url", "https://sho.rt/s/"]);
        assert_eq!(route(&service.config, "/s/abcdefg"), Route::Code("abcdefg"));
        assert_eq!(route(&service.config, "/abcdefg"), Route::NotFound);
        assert_eq!(route(&service.config, "/s/"), Route::NotFound);
        assert_eq!(route(&service.config, "/healthz?x"), Route::Health);
    }

    #[test]
    fn health_reports_a_failed_log_and_partial_heads_wait() {
        let (_dir, service) = service(&[]);
        let (out, _) = run(&service, true, b"HEAD /healthz HTTP/1.1\r\n\r\n");
        assert!(
            out.starts_with("HTTP/1.1 503 ") && out.ends_with("\r\n\r\n"),
            "HEAD has no body"
        );
        let (out, outcome) = run(&service, false, b"GET /healthz HTTP/1.1\r\nHost:");
        assert!(out.is_empty());
        assert_eq!(
            (outcome.consumed, outcome.mid_frame, outcome.close),
            (0, true, false)
        );
    }
}
