//! HTTP/1.1 for the redirect front and the admin listener: parsing request
//! heads (with `httparse`) and writing responses. Sans-IO; what a request
//! does is decided in [`crate::shard`].
//!
//! Limits, all configuration: `--http-max-head-bytes` (8 KiB) and
//! `--http-max-headers` (32), answered with 431 (414 when the request line
//! alone is over the limit) and a close, lingering (see
//! [`crate::connection`]);
//! `--http-header-timeout` (10 s) for a head to arrive once begun, answered
//! with 408 and a close.
//!
//! **Refused, so that a proxy in front cannot read a request differently
//! (RFC 9112 §6.3, request smuggling):** a body outside the JSON API
//! (`Transfer-Encoding`, or a non-zero `Content-Length`: no redirect or
//! health route takes one); a `Content-Length` that is not a number, or
//! several that differ; `Transfer-Encoding` together with
//! `Content-Length`; an HTTP/1.1 request without exactly one `Host`. Each
//! gets 400 and a close, so no byte after it is ever taken for a request.
//!
//! **Bodies** are read only for [`API_PREFIX`] routes, only with a
//! `Content-Length` (at most `--api-max-body`, else 413 and a lingering
//! close, before a byte of it is buffered). A `Transfer-Encoding` there
//! gets 411 Length Required and a close: RFC 9112 §6.3 lets a server
//! refuse a body without a length with 411, which tells the client exactly
//! what to resend (a `Content-Length`); decoding chunked bodies would be a
//! second framing for a proxy to disagree with, for bodies that are never
//! large.
//!
//! **Caching.** Redirects carry `Date` and a `Cache-Control` matching
//! their status: `private, max-age=90` for 302 and 307 (a browser may
//! reuse it briefly; shared caches must not, so every click still reaches
//! the server), `public, max-age=2592000` (30 days) for 301 and 308
//! (permanent: links never change once made). Errors and 404 are
//! `no-store`: a code unknown now may exist later.

use std::fmt::Write as _;
use std::mem::MaybeUninit;

use bytes::BytesMut;

use crate::settings::{Settings, MAX_HEADERS_CAP};

/// The path of the health check on the public front (and on the admin
/// listener).
pub const HEALTH_PATH: &str = "/healthz";
/// The readiness check on the admin listener.
pub const READY_PATH: &str = "/readyz";
/// Prometheus metrics on the admin listener.
pub const METRICS_PATH: &str = "/metrics";
/// The JSON API's routes (public front only) begin with this.
pub const API_PREFIX: &str = "/api/";

/// `true` for a path of the JSON API, the only routes that take a body.
pub fn is_api_path(path: &str) -> bool {
    path.starts_with(API_PREFIX) || path == "/api"
}

/// Which HTTP listener a connection came in on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Front {
    /// The public redirect front (`--http`).
    Public,
    /// The operators' listener (`--admin`).
    Admin,
}

/// The request methods the fronts know.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    /// GET.
    Get,
    /// HEAD: as GET, without a body.
    Head,
    /// POST (JSON API).
    Post,
    /// PATCH (JSON API).
    Patch,
    /// DELETE (JSON API).
    Delete,
    /// Anything else: 405.
    Other,
}

/// A parsed request head.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Request<'a> {
    /// Its method.
    pub method: Method,
    /// The path, without query or fragment (from an absolute-form target,
    /// its path).
    pub path: &'a str,
    /// The query, without `?` (and without any fragment), if there is one.
    pub query: Option<&'a str>,
    /// Whether the connection stays open after the response.
    pub keep_alive: bool,
    /// `If-None-Match` (the web page's revalidation), if sent.
    pub if_none_match: Option<&'a [u8]>,
    /// `Accept-Encoding` (the web page's compression), if sent.
    pub accept_encoding: Option<&'a [u8]>,
    /// The `User-Agent` value, if it is one valid UTF-8 header (for bot
    /// detection; never stored).
    pub user_agent: Option<&'a str>,
    /// The `Referer` value, likewise (only its host is ever kept).
    pub referer: Option<&'a str>,
    /// Bytes of body after the head (`Content-Length`; only ever non-zero
    /// on [`API_PREFIX`] routes, bounded by `--api-max-body`).
    pub body_len: usize,
    /// `Authorization`, if present.
    pub authorization: Option<&'a [u8]>,
    /// `X-Api-Key`, if present.
    pub api_key: Option<&'a [u8]>,
    /// `X-Forwarded-For` (the last one), read only from trusted proxies.
    pub forwarded_for: Option<&'a [u8]>,
    /// `Forwarded` (the last one), read only from trusted proxies.
    pub forwarded: Option<&'a [u8]>,
}

/// What the bytes at the front of the input hold.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Head<'a> {
    /// A whole request head of `len` bytes.
    Complete {
        /// Bytes the head occupies.
        len: usize,
        /// The request.
        request: Request<'a>,
    },
    /// The head is not complete yet.
    Partial,
    /// A request that must be refused, and the connection closed.
    Refused {
        /// The status.
        status: u16,
        /// The body, saying why.
        body: String,
    },
}

/// Parses the request head at the front of `input`.
pub fn parse<'a>(input: &'a [u8], settings: &Settings) -> Head<'a> {
    // Left uninitialized: httparse writes only the headers it finds.
    // Zeroing all `MAX_HEADERS_CAP` of them (32 bytes each) was most of
    // this function's time on a keep-alive redirect (`perf annotate`).
    let mut headers = [const { MaybeUninit::<httparse::Header<'a>>::uninit() }; MAX_HEADERS_CAP];
    let max_headers = settings.http_max_headers.clamp(1, MAX_HEADERS_CAP);
    let mut request = httparse::Request::new(&mut []);
    let refused = |status, body: &str| Head::Refused {
        status,
        body: body.to_owned(),
    };
    let len = match request.parse_with_uninit_headers(input, &mut headers[..max_headers]) {
        Ok(httparse::Status::Complete(len)) if len <= settings.http_max_head_bytes => len,
        Ok(httparse::Status::Partial) if input.len() <= settings.http_max_head_bytes => {
            return Head::Partial
        }
        // A complete head over the limit, or a partial one already past it:
        // 414 when the request line alone is, so the client learns which
        // part to shorten.
        Ok(_) => {
            let line = input
                .iter()
                .position(|&b| b == b'\n')
                .unwrap_or(input.len());
            return if line >= settings.http_max_head_bytes {
                refused(414, "request line (URI) too long\n")
            } else {
                refused(431, "request head too large\n")
            };
        }
        Err(httparse::Error::TooManyHeaders) => return refused(431, "too many headers\n"),
        Err(err) => return refused(400, &format!("malformed request: {err}\n")),
    };
    let mut content_length: Option<&[u8]> = None;
    let mut transfer_encoding = false;
    let mut hosts = 0;
    // `Connection` is a list of options, over any number of headers (RFC
    // 9110 §7.6.1): `close, Upgrade` closes.
    let (mut close, mut keep_alive_asked) = (false, false);
    let (mut if_none_match, mut accept_encoding) = (None, None);
    let mut user_agent: Option<&str> = None;
    let mut referer: Option<&str> = None;
    let (mut authorization, mut api_key) = (None, None);
    let (mut forwarded_for, mut forwarded) = (None, None);
    for header in request.headers.iter() {
        let name = header.name;
        if name.eq_ignore_ascii_case("transfer-encoding") {
            transfer_encoding = true;
        } else if name.eq_ignore_ascii_case("content-length") {
            let value = header.value;
            if value.is_empty() || !value.iter().all(u8::is_ascii_digit) {
                return refused(400, "invalid Content-Length\n");
            }
            if content_length.is_some_and(|first| first != value) {
                return refused(400, "conflicting Content-Length headers\n");
            }
            content_length = Some(value);
        } else if name.eq_ignore_ascii_case("host") {
            hosts += 1;
        } else if name.eq_ignore_ascii_case("connection") {
            for option in header.value.split(|&b| b == b',') {
                let option = option.trim_ascii();
                close |= option.eq_ignore_ascii_case(b"close");
                keep_alive_asked |= option.eq_ignore_ascii_case(b"keep-alive");
            }
        } else if name.eq_ignore_ascii_case("if-none-match") {
            if_none_match = Some(header.value);
        } else if name.eq_ignore_ascii_case("accept-encoding") {
            accept_encoding = Some(header.value);
        } else if name.eq_ignore_ascii_case("user-agent") {
            user_agent = std::str::from_utf8(header.value).ok();
        } else if name.eq_ignore_ascii_case("referer") {
            referer = std::str::from_utf8(header.value).ok();
        } else if name.eq_ignore_ascii_case("authorization") {
            authorization = Some(header.value);
        } else if name.eq_ignore_ascii_case("x-api-key") {
            api_key = Some(header.value);
        } else if name.eq_ignore_ascii_case("x-forwarded-for") {
            forwarded_for = Some(header.value);
        } else if name.eq_ignore_ascii_case("forwarded") {
            forwarded = Some(header.value);
        }
    }
    if transfer_encoding && content_length.is_some() {
        // RFC 9112 §6.1: both framings at once is the smuggling shape.
        return refused(400, "Transfer-Encoding and Content-Length together\n");
    }
    let has_body = content_length.is_some_and(|v| v.iter().any(|&b| b != b'0'));
    let version = request.version.unwrap_or(1);
    if version == 1 && hosts != 1 {
        return refused(400, "an HTTP/1.1 request needs exactly one Host header\n");
    }
    let keep_alive = !close && (version == 1 || keep_alive_asked);
    let method = match request.method {
        Some("GET") => Method::Get,
        Some("HEAD") => Method::Head,
        Some("POST") => Method::Post,
        Some("PATCH") => Method::Patch,
        Some("DELETE") => Method::Delete,
        _ => Method::Other,
    };
    let target = request.path.unwrap_or("/");
    let Some(target) = origin_form(target) else {
        return refused(400, "invalid absolute-form request target\n");
    };
    // The path ends at the first `?` or `#`; the query (after a `?`) at
    // the first `#`. Byte scans: `split('#')` and `split_once('?')` went
    // through the general `char` searcher, ~190 instructions a request
    // for a short path (issue 23).
    let (path, query) = match target.bytes().position(|b| b == b'?' || b == b'#') {
        Some(at) if target.as_bytes().get(at) == Some(&b'?') => {
            let query = target.get(at + 1..).unwrap_or_default();
            let end = query.bytes().position(|b| b == b'#').unwrap_or(query.len());
            (
                target.get(..at).unwrap_or_default(),
                Some(query.get(..end).unwrap_or_default()),
            )
        }
        Some(at) => (target.get(..at).unwrap_or_default(), None),
        None => (target, None),
    };
    // An absolute form without a path (`http://host?q`, `http://host#f`)
    // asks for the root, as `origin_form` says (review 24: 404).
    let path = if path.is_empty() { "/" } else { path };
    let body_len = if !is_api_path(path) {
        if transfer_encoding || has_body {
            return refused(400, "request bodies are not accepted\n");
        }
        0
    } else if transfer_encoding {
        return refused(411, "send the body with a Content-Length\n");
    } else {
        // Digits only (checked above); too many of them is too large.
        let len = content_length
            .and_then(|v| std::str::from_utf8(v).ok()?.parse::<usize>().ok())
            .unwrap_or(if has_body { usize::MAX } else { 0 });
        if len > settings.api_max_body {
            return refused(413, "request body larger than --api-max-body\n");
        }
        len
    };
    Head::Complete {
        len,
        request: Request {
            method,
            path,
            query,
            keep_alive,
            if_none_match,
            accept_encoding,
            user_agent,
            referer,
            body_len,
            authorization,
            api_key,
            forwarded_for,
            forwarded,
        },
    }
}

/// The origin form (path and query) of a request target. An absolute-form
/// target (`http://host/CODE`, RFC 9112 §3.2.2, sent to proxies and
/// accepted by every server) gives its path and query; its authority is
/// judged as `Host` is: any name is accepted (none is routed on), but it
/// must be one, without user information. `None` for an absolute form
/// that is not a plain `http` or `https` URL with a host.
fn origin_form(target: &str) -> Option<&str> {
    if target.starts_with('/') {
        return Some(target);
    }
    let Some((scheme, rest)) = target.split_once("://") else {
        // `*` (OPTIONS) or an authority (CONNECT): routed nowhere, as
        // before.
        return Some(target);
    };
    if !(scheme.eq_ignore_ascii_case("http") || scheme.eq_ignore_ascii_case("https")) {
        return None;
    }
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, rest) = rest.split_at(end);
    if authority.is_empty() || authority.contains('@') {
        return None;
    }
    // `http://host` and `http://host?q` have an empty path: the root (the
    // query, if any, stays with it).
    Some(if rest.starts_with(['/', '?']) {
        rest
    } else {
        "/"
    })
}

/// What a request's path asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route<'a> {
    /// A short code, on the public front.
    Code(&'a str),
    /// `/healthz`.
    Health,
    /// `/readyz` (admin only).
    Ready,
    /// `/metrics` (admin only).
    Metrics,
    /// The JSON API ([`API_PREFIX`], public front only): the whole path.
    Api(&'a str),
    /// Nothing here.
    NotFound,
}

/// Routes `path` on `front`.
pub fn route<'a>(settings: &Settings, front: Front, path: &'a str) -> Route<'a> {
    match (front, path) {
        (_, HEALTH_PATH) => Route::Health,
        (Front::Admin, READY_PATH) => Route::Ready,
        (Front::Admin, METRICS_PATH) => Route::Metrics,
        (Front::Admin, _) => Route::NotFound,
        (Front::Public, _) if is_api_path(path) => Route::Api(path),
        (Front::Public, _) => match path.strip_prefix(settings.public_url.path()) {
            Some(code) if !code.is_empty() && !code.contains('/') => Route::Code(code),
            _ => Route::NotFound,
        },
    }
}

/// The reason phrase of a status.
pub fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        201 => "Created",
        204 => "No Content",
        301 => "Moved Permanently",
        302 => "Found",
        307 => "Temporary Redirect",
        308 => "Permanent Redirect",
        304 => "Not Modified",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        409 => "Conflict",
        410 => "Gone",
        411 => "Length Required",
        413 => "Content Too Large",
        414 => "URI Too Long",
        415 => "Unsupported Media Type",
        422 => "Unprocessable Content",
        429 => "Too Many Requests",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        503 => "Service Unavailable",
        _ => "Unknown",
    }
}

/// The `Cache-Control` value for a response of `status`.
pub fn cache_control(status: u16) -> &'static str {
    match status {
        301 | 308 => "public, max-age=2592000",
        302 | 307 => "private, max-age=90",
        _ => "no-store",
    }
}

/// A response to write.
#[derive(Debug, Clone, Copy)]
pub struct Response<'a> {
    /// Status code.
    pub status: u16,
    /// Extra headers.
    pub headers: &'a [(&'a str, &'a str)],
    /// Body (`text/plain` unless a `Content-Type` is among `headers`).
    pub body: &'a [u8],
    /// HEAD: headers only.
    pub head_only: bool,
    /// `Connection: keep-alive` or `close`.
    pub keep_alive: bool,
}

/// Appends `response` to `out`, with `date` (an IMF-fixdate) as `Date`.
/// `Cache-Control` follows the status unless `headers` has its own (the
/// web page's assets).
pub fn write(out: &mut BytesMut, date: &str, response: &Response<'_>) {
    let has = |name: &str| {
        response
            .headers
            .iter()
            .any(|(n, _)| n.eq_ignore_ascii_case(name))
    };
    out.reserve(192 + response.body.len());
    status_line(out, response.status, date, !has("cache-control"));
    for (name, value) in response.headers {
        for part in [name.as_bytes(), b": ", value.as_bytes(), b"\r\n"] {
            out.extend_from_slice(part);
        }
    }
    if !response.body.is_empty() && !has("content-type") {
        out.extend_from_slice(b"Content-Type: text/plain; charset=utf-8\r\n");
    }
    // A 304 has no body, and a Content-Length on it would have to be the
    // 200's (RFC 9110 §8.6): none is sent; nor on a 204 (§8.6: MUST NOT).
    if !matches!(response.status, 204 | 304) {
        // Writing to a BytesMut cannot fail.
        let _ = write!(out, "Content-Length: {}\r\n", response.body.len());
    }
    end_of_head(out, response.keep_alive);
    if !response.head_only {
        out.extend_from_slice(response.body);
    }
}

/// Appends a redirect to `out`: [`write()`] of a `status` with only a
/// `Location` header and no body (so HEAD looks the same), the value
/// written by `location` straight into `out` (the merged URL of query
/// forwarding, [`crate::forward::merge_into`]) rather than built apart
/// first. `location` must write a valid header value (ASCII, no CR/LF).
pub fn write_redirect(
    out: &mut BytesMut,
    date: &str,
    status: u16,
    keep_alive: bool,
    location: impl FnOnce(&mut BytesMut),
) {
    out.reserve(256);
    status_line(out, status, date, true);
    out.extend_from_slice(b"Location: ");
    location(out);
    out.extend_from_slice(b"\r\nContent-Length: 0\r\n");
    end_of_head(out, keep_alive);
}

/// The status line, `Date` and (when `cache_control`) the status's
/// `Cache-Control`: how every response starts.
fn status_line(out: &mut BytesMut, status: u16, date: &str, cache_control: bool) {
    // The three digits by hand: `write!` costs more than the redirect's
    // other formatting together. (Every status made is three digits.)
    let digits = [
        b'0' + (status / 100 % 10) as u8,
        b'0' + (status / 10 % 10) as u8,
        b'0' + (status % 10) as u8,
    ];
    let digits: &[u8] = if (100..1000).contains(&status) {
        &digits
    } else {
        b"500"
    };
    for part in [
        b"HTTP/1.1 ".as_slice(),
        digits,
        b" ",
        reason(status).as_bytes(),
        b"\r\nDate: ",
        date.as_bytes(),
        b"\r\n",
    ] {
        out.extend_from_slice(part);
    }
    if cache_control {
        for part in [
            b"Cache-Control: ".as_slice(),
            self::cache_control(status).as_bytes(),
            b"\r\n",
        ] {
            out.extend_from_slice(part);
        }
    }
}

/// `Connection` and the blank line that ends a head.
fn end_of_head(out: &mut BytesMut, keep_alive: bool) {
    out.extend_from_slice(if keep_alive {
        b"Connection: keep-alive\r\n\r\n"
    } else {
        b"Connection: close\r\n\r\n"
    });
}

/// `true` when `url` can go into a header as it is: printable ASCII, no
/// space or control character. Written as a fold, not `all`, so that it
/// compiles to a vector loop: it runs on every redirect.
pub fn is_header_safe(url: &[u8]) -> bool {
    url.iter().fold(true, |ok, &b| ok & b.is_ascii_graphic())
}

/// The `Location` value for a stored URL: as stored when it is printable
/// ASCII (the usual case), otherwise its ASCII serialisation (punycode
/// host, percent-encoded path), since header values must be ASCII.
///
/// Stored URLs were checked when they were made (no whitespace or control
/// characters), but a record is not re-checked when it is read, and data
/// imported before `import` checked expired-URLs (review 23) may hold a
/// CR LF: the value is never written raw unless [`is_header_safe`], and a
/// URL the `url` crate cannot parse has every other byte percent-encoded,
/// so no stored value can end the header (response splitting).
pub fn location(url: &str) -> std::borrow::Cow<'_, str> {
    if is_header_safe(url.as_bytes()) {
        return url.into();
    }
    match url::Url::parse(url) {
        // The `url` crate drops tabs and newlines and percent-encodes
        // spaces and controls in every component it serialises.
        Ok(parsed) if is_header_safe(parsed.as_str().as_bytes()) => String::from(parsed).into(),
        _ => {
            let mut safe = String::with_capacity(url.len());
            for &b in url.as_bytes() {
                if b.is_ascii_graphic() {
                    safe.push(char::from(b));
                } else {
                    let _ = write!(safe, "%{b:02X}");
                }
            }
            safe.into()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> Settings {
        Settings::for_tests("https://sho.rt/s/")
    }

    fn refused(input: &[u8]) -> Option<u16> {
        match parse(input, &settings()) {
            Head::Refused { status, .. } => Some(status),
            _ => None,
        }
    }

    #[test]
    fn a_plain_get_parses() {
        let head = parse(
            b"GET /s/abc?x=1 HTTP/1.1\r\nHost: a\r\n\r\nrest",
            &settings(),
        );
        assert_eq!(
            head,
            Head::Complete {
                len: 36,
                request: Request {
                    method: Method::Get,
                    path: "/s/abc",
                    query: Some("x=1"),
                    keep_alive: true,
                    if_none_match: None,
                    accept_encoding: None,
                    user_agent: None,
                    referer: None,
                    body_len: 0,
                    authorization: None,
                    api_key: None,
                    forwarded_for: None,
                    forwarded: None,
                }
            }
        );
        let with_headers = request(
            b"GET /s/abc HTTP/1.1\r\nHost: a\r\nuser-agent: curl/8.5.0\r\n\
              Referer: https://news.example/a?b\r\n\r\n",
        );
        assert_eq!(with_headers.user_agent, Some("curl/8.5.0"));
        assert_eq!(with_headers.referer, Some("https://news.example/a?b"));
        assert_eq!(
            parse(b"GET /s/abc HTTP/1.1\r\nHo", &settings()),
            Head::Partial
        );
        let Head::Complete { request, .. } = parse(b"GET / HTTP/1.0\r\n\r\n", &settings()) else {
            panic!()
        };
        assert!(!request.keep_alive, "HTTP/1.0 closes by default");
    }

    #[test]
    fn the_connection_header_is_a_list_of_options_in_any_case() {
        for (head, keep_alive) in [
            (
                &b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n"[..],
                false,
            ),
            (
                b"GET / HTTP/1.1\r\nHost: a\r\nconnection: CLOSE\r\n\r\n",
                false,
            ),
            (
                b"GET / HTTP/1.1\r\nHost: a\r\nConnection: keep-alive\r\n\r\n",
                true,
            ),
            (
                b"GET / HTTP/1.1\r\nHost: a\r\nConnection: closed\r\n\r\n",
                true,
            ),
            (b"GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n", true),
            (b"GET / HTTP/1.0\r\nConnection: close\r\n\r\n", false),
            (b"GET / HTTP/1.0\r\n\r\n", false),
            // A list of options, in one header or several.
            (
                b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close, Upgrade\r\n\r\n",
                false,
            ),
            (
                b"GET / HTTP/1.1\r\nHost: a\r\nConnection: Upgrade,close\r\n\r\n",
                false,
            ),
            (
                b"GET / HTTP/1.1\r\nHost: a\r\nConnection: keep-alive\r\nConnection: close\r\n\r\n",
                false,
            ),
            (
                b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\nConnection: keep-alive\r\n\r\n",
                false,
            ),
            (
                b"GET / HTTP/1.1\r\nHost: a\r\nConnection: Upgrade, TE\r\n\r\n",
                true,
            ),
            (
                b"GET / HTTP/1.0\r\nConnection: keep-alive, Upgrade\r\n\r\n",
                true,
            ),
            (
                b"GET / HTTP/1.0\r\nConnection: Upgrade\r\nConnection:  Keep-Alive \r\n\r\n",
                true,
            ),
            (
                b"GET / HTTP/1.0\r\nConnection: keep-alive, close\r\n\r\n",
                false,
            ),
        ] {
            assert_eq!(
                request(head).keep_alive,
                keep_alive,
                "{}",
                String::from_utf8_lossy(head)
            );
        }
    }

    fn request(input: &[u8]) -> Request<'_> {
        match parse(input, &settings()) {
            Head::Complete { request, .. } => request,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn absolute_form_targets_give_their_path_and_query() {
        let r = request(b"GET http://sho.rt/s/abc?utm=1#f HTTP/1.1\r\nHost: x\r\n\r\n");
        assert_eq!((r.path, r.query), ("/s/abc", Some("utm=1")));
        let r = request(b"HEAD HTTPS://Sho.rt:8080/s/abc HTTP/1.1\r\nHost: x\r\n\r\n");
        assert_eq!((r.path, r.query), ("/s/abc", None));
        let r = request(b"GET http://sho.rt?q HTTP/1.1\r\nHost: x\r\n\r\n");
        assert_eq!((r.path, r.query), ("/", Some("q")));
        let r = request(b"GET https://sho.rt? HTTP/1.1\r\nHost: x\r\n\r\n");
        assert_eq!((r.path, r.query), ("/", Some("")));
        assert_eq!(
            request(b"GET http://sho.rt HTTP/1.1\r\nHost: x\r\n\r\n").path,
            "/"
        );
        for bad in [
            &b"GET http:///s/abc HTTP/1.1\r\nHost: x\r\n\r\n"[..],
            b"GET http://user@sho.rt/s/abc HTTP/1.1\r\nHost: x\r\n\r\n",
            b"GET ftp://sho.rt/s/abc HTTP/1.1\r\nHost: x\r\n\r\n",
        ] {
            assert_eq!(refused(bad), Some(400), "{}", String::from_utf8_lossy(bad));
        }
        for (target, path, query) in [
            ("/s/a#x?y", "/s/a", None),
            ("/s/a?q=1#f?g", "/s/a", Some("q=1")),
            ("/s/a?", "/s/a", Some("")),
            ("/s/a?#", "/s/a", Some("")),
            ("/s/a??b", "/s/a", Some("?b")),
            ("/s/a#", "/s/a", None),
        ] {
            let line = format!("GET {target} HTTP/1.1\r\nHost: x\r\n\r\n");
            let r = request(line.as_bytes());
            assert_eq!((r.path, r.query), (path, query), "{target}");
        }
    }

    #[test]
    fn a_long_request_line_is_414_and_long_headers_431() {
        let max = settings().http_max_head_bytes;
        let line = format!("GET /{} HTTP/1.1\r\nHost: a\r\n\r\n", "a".repeat(max));
        assert_eq!(refused(line.as_bytes()), Some(414), "complete");
        assert_eq!(refused(&line.as_bytes()[..max + 10]), Some(414), "partial");
        let headers = format!(
            "GET / HTTP/1.1\r\nHost: a\r\nX: {}\r\n\r\n",
            "b".repeat(max)
        );
        assert_eq!(refused(headers.as_bytes()), Some(431), "complete");
        assert_eq!(
            refused(&headers.as_bytes()[..max + 10]),
            Some(431),
            "partial"
        );
    }

    #[test]
    fn smuggling_shapes_are_refused() {
        // Two differing lengths: a proxy may honour either.
        assert_eq!(
            refused(b"GET /x HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\nContent-Length: 5\r\n\r\nhello"),
            Some(400)
        );
        assert_eq!(
            refused(
                b"GET /x HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\nContent-Length: 0\r\n\r\n"
            ),
            None,
            "repeated identical zero lengths are harmless"
        );
        assert_eq!(
            refused(b"GET /x HTTP/1.1\r\nHost: a\r\nContent-Length: +0\r\n\r\n"),
            Some(400)
        );
        assert_eq!(
            refused(b"GET /x HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"),
            Some(400)
        );
        assert_eq!(refused(b"GET /x HTTP/1.1\r\n\r\n"), Some(400), "no Host");
        assert_eq!(
            refused(b"GET /x HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n"),
            Some(400)
        );
        assert_eq!(
            refused(b"GET /x HTTP/1.0\r\n\r\n"),
            None,
            "1.0 needs no Host"
        );
    }

    #[test]
    fn bodies_are_taken_only_by_api_routes_with_a_bounded_length() {
        let r = request(
            b"POST /api/v1/links HTTP/1.1\r\nHost: a\r\nContent-Length: 10\r\nX-Api-Key: k\r\n\r\n",
        );
        assert_eq!(
            (r.method, r.body_len, r.api_key),
            (Method::Post, 10, Some(&b"k"[..]))
        );
        let max = settings().api_max_body;
        let at_max =
            format!("POST /api/v1/links HTTP/1.1\r\nHost: a\r\nContent-Length: {max}\r\n\r\n");
        assert_eq!(request(at_max.as_bytes()).body_len, max);
        let over = format!(
            "POST /api/v1/links HTTP/1.1\r\nHost: a\r\nContent-Length: {}\r\n\r\n",
            max + 1
        );
        assert_eq!(refused(over.as_bytes()), Some(413));
        assert_eq!(
            refused(b"POST /api/v1/links HTTP/1.1\r\nHost: a\r\nContent-Length: 99999999999999999999999\r\n\r\n"),
            Some(413),
            "a length past usize is too large, not a panic"
        );
        assert_eq!(
            refused(
                b"POST /api/v1/links HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"
            ),
            Some(411)
        );
        assert_eq!(
            refused(b"POST /api/v1/links HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n"),
            Some(400),
            "both framings: smuggling"
        );
        // Every other route still refuses any body.
        assert_eq!(
            refused(b"POST /abcdefg HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\nabc"),
            Some(400)
        );
        assert_eq!(
            refused(b"GET /apix HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\nabc"),
            Some(400)
        );
    }

    #[test]
    fn routes_depend_on_the_front() {
        let s = settings();
        assert_eq!(
            route(&s, Front::Public, "/s/abcdefg"),
            Route::Code("abcdefg")
        );
        assert_eq!(route(&s, Front::Public, "/abcdefg"), Route::NotFound);
        assert_eq!(route(&s, Front::Public, "/healthz"), Route::Health);
        // Every route's word is reserved, so no code is shadowed by one.
        for path in [HEALTH_PATH, READY_PATH, METRICS_PATH] {
            let word = path.trim_start_matches('/');
            assert!(crate::codes::RESERVED_WORDS.contains(&word), "{path}");
        }
        assert_eq!(route(&s, Front::Public, "/metrics"), Route::NotFound);
        assert_eq!(route(&s, Front::Admin, "/metrics"), Route::Metrics);
        assert_eq!(route(&s, Front::Admin, "/readyz"), Route::Ready);
        assert_eq!(route(&s, Front::Admin, "/s/abcdefg"), Route::NotFound);
        assert_eq!(
            route(&s, Front::Public, "/api/v1/links"),
            Route::Api("/api/v1/links")
        );
        assert_eq!(route(&s, Front::Admin, "/api/v1/links"), Route::NotFound);
    }

    #[test]
    fn redirects_carry_date_and_a_matching_cache_control() {
        let mut out = BytesMut::new();
        let date = "Wed, 25 Nov 2026 12:00:00 GMT";
        write(
            &mut out,
            date,
            &Response {
                status: 302,
                headers: &[("Location", "https://e.com/")],
                body: b"",
                head_only: false,
                keep_alive: true,
            },
        );
        let text = String::from_utf8(out.to_vec()).unwrap();
        assert!(text.starts_with("HTTP/1.1 302 Found\r\n"));
        assert!(text.contains(&format!("Date: {date}\r\n")));
        assert!(text.contains("Cache-Control: private, max-age=90\r\n"));
        assert!(text.contains("Location: https://e.com/\r\n"));
        assert_eq!(cache_control(308), "public, max-age=2592000");
        assert_eq!(cache_control(404), "no-store");
    }

    /// `write`'s whole head, byte for byte: the order and spelling of its
    /// lines, written without an intermediate `String`.
    #[test]
    fn a_response_head_is_written_in_its_fixed_order() {
        let date = "Wed, 25 Nov 2026 12:00:00 GMT";
        let written = |status, headers: &[(&str, &str)], body: &[u8], head_only, keep_alive| {
            let mut out = BytesMut::from(&b"before"[..]);
            let response = Response {
                status,
                headers,
                body,
                head_only,
                keep_alive,
            };
            write(&mut out, date, &response);
            String::from_utf8(out.to_vec()).unwrap()
        };
        assert_eq!(
            written(302, &[("Location", "https://e.com/")], b"", false, true),
            format!(
                "beforeHTTP/1.1 302 Found\r\nDate: {date}\r\nCache-Control: private, \
                 max-age=90\r\nLocation: https://e.com/\r\nContent-Length: 0\r\n\
                 Connection: keep-alive\r\n\r\n"
            )
        );
        assert_eq!(
            written(404, &[], b"not found\n", false, false),
            format!(
                "beforeHTTP/1.1 404 Not Found\r\nDate: {date}\r\nCache-Control: no-store\r\n\
                 Content-Type: text/plain; charset=utf-8\r\nContent-Length: 10\r\n\
                 Connection: close\r\n\r\nnot found\n"
            )
        );
        assert_eq!(
            written(
                200,
                &[
                    ("Cache-Control", "max-age=1"),
                    ("Content-Type", "image/png")
                ],
                b"png",
                true,
                true
            ),
            format!(
                "beforeHTTP/1.1 200 OK\r\nDate: {date}\r\nCache-Control: max-age=1\r\n\
                 Content-Type: image/png\r\nContent-Length: 3\r\n\
                 Connection: keep-alive\r\n\r\n"
            ),
            "HEAD: no body, its length"
        );
        assert_eq!(
            written(204, &[], b"", false, true),
            format!(
                "beforeHTTP/1.1 204 No Content\r\nDate: {date}\r\nCache-Control: \
                 no-store\r\nConnection: keep-alive\r\n\r\n"
            )
        );
    }

    /// The redirect's own writer makes the bytes `write` makes of the
    /// same redirect.
    #[test]
    fn write_redirect_matches_write() {
        let date = "Wed, 25 Nov 2026 12:00:00 GMT";
        let url = "https://e.example/p?a=1#f";
        for status in [301, 302, 307, 308] {
            for keep_alive in [true, false] {
                for head_only in [true, false] {
                    let mut general = BytesMut::from(&b"x"[..]);
                    let response = Response {
                        status,
                        headers: &[("Location", url)],
                        body: b"",
                        head_only,
                        keep_alive,
                    };
                    write(&mut general, date, &response);
                    let mut redirect = BytesMut::from(&b"x"[..]);
                    write_redirect(&mut redirect, date, status, keep_alive, |out| {
                        out.extend_from_slice(url.as_bytes())
                    });
                    assert_eq!(redirect, general, "{status} {keep_alive} {head_only}");
                }
            }
        }
    }
}
