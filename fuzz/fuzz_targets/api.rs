//! Arbitrary JSON API requests (heads and bodies, in arbitrary chunks) to
//! the public HTTP front, through the real connection state machine and
//! request handling (no sockets). Asserts, not only "no panic":
//! - what comes out is a sequence of whole HTTP/1.1 responses whose
//!   `Content-Length` matches its body;
//! - every API error is `application/problem+json` whose `status` is the
//!   response's, and every API success body is JSON;
//! - the connection never holds more input than one head and one body
//!   allow.
#![no_main]

use std::sync::Arc;
use std::time::{Duration, Instant};

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use shorty_service::connection::{Connection, Kind};
use shorty_service::http::Front;
use shorty_service::settings::Settings;
use shorty_service::shard::{Shard, Shared};

#[derive(Debug, Arbitrary)]
struct Call {
    method: u8,
    path: u8,
    tail: String,
    query: Option<String>,
    headers: Vec<(u8, String)>,
    body: Vec<u8>,
    /// Declare a length other than the body's.
    length_delta: Option<i8>,
    json_body: Option<JsonBody>,
}

#[derive(Debug, Arbitrary)]
struct JsonBody {
    url: Option<String>,
    slug: Option<String>,
    max_clicks: Option<i64>,
    extra: Option<(String, String)>,
}

#[derive(Debug, Arbitrary)]
struct Input {
    calls: Vec<Call>,
    /// Where to cut the bytes into reads.
    cuts: Vec<u16>,
    max_body: u16,
}

const METHODS: [&str; 6] = ["GET", "HEAD", "POST", "PATCH", "DELETE", "PUT"];
const PATHS: [&str; 7] = [
    "/api/v1/links",
    "/api/v1/links/bulk",
    "/api/v1/links/abc",
    "/api/v1/links/abc/stats",
    "/api/v1/openapi.json",
    "/api/",
    "/api/v1/",
];
const HEADERS: [&str; 5] = [
    "Authorization",
    "X-Api-Key",
    "Content-Type",
    "Transfer-Encoding",
    "Connection",
];

fn encode(call: &Call) -> Vec<u8> {
    let method = METHODS[call.method as usize % METHODS.len()];
    let mut path = PATHS[call.path as usize % PATHS.len()].to_owned();
    path.extend(call.tail.chars().filter(|c| c.is_ascii_graphic()).take(40));
    if let Some(q) = &call.query {
        path.push('?');
        path.extend(q.chars().filter(|c| c.is_ascii_graphic()).take(60));
    }
    let body = match &call.json_body {
        Some(j) => {
            let mut map = serde_json::Map::new();
            if let Some(u) = &j.url {
                map.insert("url".into(), u.clone().into());
            }
            if let Some(s) = &j.slug {
                map.insert("slug".into(), s.clone().into());
            }
            if let Some(m) = j.max_clicks {
                map.insert("maxClicks".into(), m.into());
            }
            if let Some((k, v)) = &j.extra {
                map.insert(k.clone(), v.clone().into());
            }
            serde_json::Value::Object(map).to_string().into_bytes()
        }
        None => call.body.clone(),
    };
    let len = (body.len() as i64 + i64::from(call.length_delta.unwrap_or(0))).max(0);
    let mut out = format!("{method} {path} HTTP/1.1\r\nHost: s\r\nContent-Length: {len}\r\n");
    for (h, v) in call.headers.iter().take(6) {
        let value: String = v
            .chars()
            .filter(|c| c.is_ascii_graphic() || *c == ' ')
            .take(80)
            .collect();
        out.push_str(&format!(
            "{}: {value}\r\n",
            HEADERS[*h as usize % HEADERS.len()]
        ));
    }
    out.push_str("\r\n");
    let mut out = out.into_bytes();
    out.extend_from_slice(&body);
    out
}

fn check_responses(out: &[u8]) {
    let mut rest = out;
    while !rest.is_empty() {
        let mut headers = [httparse::EMPTY_HEADER; 16];
        let mut response = httparse::Response::new(&mut headers);
        let head = match response.parse(rest) {
            Ok(httparse::Status::Complete(n)) => n,
            other => panic!(
                "not a whole response: {other:?}: {:?}",
                String::from_utf8_lossy(rest)
            ),
        };
        let status = response.code.unwrap();
        let find = |name: &str| {
            response
                .headers
                .iter()
                .find(|h| h.name.eq_ignore_ascii_case(name))
                .map(|h| std::str::from_utf8(h.value).unwrap().to_owned())
        };
        let len: usize = find("content-length").expect("a length").parse().unwrap();
        let typed = find("content-type");
        // HEAD responses carry the length of the body they omit.
        let body_present =
            rest.len() >= head + len && (len == 0 || !rest[head..].starts_with(b"HTTP/1.1 "));
        if body_present && len > 0 {
            let body = &rest[head..head + len];
            match typed.as_deref() {
                Some("application/problem+json") => {
                    let p: serde_json::Value = serde_json::from_slice(body).expect("problem JSON");
                    assert_eq!(p["status"], status, "problem status matches");
                    assert!(status >= 400);
                }
                Some("application/json") => {
                    serde_json::from_slice::<serde_json::Value>(body).expect("JSON");
                    assert!(status < 300);
                }
                // Refusals from the head (400, 411, 413, 431, 408) are
                // plain text, as on every route.
                _ => assert!(status >= 400, "{status}"),
            }
        }
        rest = &rest[head + if body_present { len } else { 0 }..];
    }
}

fuzz_target!(|input: Input| {
    let mut settings = Settings::for_tests("http://s.example/");
    settings.api_max_body = 64 + input.max_body as usize % 4096;
    let bound = settings.http_max_head_bytes + settings.api_max_body;
    let mut shard = Shard::new(Arc::new(Shared::for_tests(settings.clone())), 0);
    let now = Instant::now();
    let mut conn = Connection::new(1, Kind::Http(Front::Public), now);
    let bytes: Vec<u8> = input.calls.iter().take(8).flat_map(encode).collect();
    let mut cuts: Vec<usize> = input
        .cuts
        .iter()
        .map(|&c| c as usize % (bytes.len() + 1))
        .collect();
    cuts.push(bytes.len());
    cuts.sort_unstable();
    let mut out = Vec::new();
    let mut from = 0;
    for (i, to) in cuts.into_iter().enumerate() {
        let t = now + Duration::from_millis(i as u64);
        conn.handle_input(&mut shard, &bytes[from..to], t);
        from = to;
        // Capacity may round up, never past twice what one request holds.
        assert!(
            conn.buffered_input() <= 2 * bound,
            "{}",
            conn.buffered_input()
        );
        // Creations are made durable at once (no disk here: every write
        // "succeeds").
        while let Some(io) = shard.poll_log_io(t) {
            shard.log_done(&io, shorty_service::log::IoResult::Ok, t);
        }
        while let Some(bytes) = conn.poll_transmit(&mut shard, t) {
            out.extend_from_slice(&bytes);
            conn.transmitted();
        }
        conn.poll_shutdown(&settings, t);
        if conn.is_closed() {
            break;
        }
    }
    check_responses(&out);
});
