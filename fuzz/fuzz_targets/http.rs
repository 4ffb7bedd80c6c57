//! Arbitrary bytes, in arbitrary chunks, to the public HTTP front, through
//! the real connection state machine and request handling (no sockets).
//! Asserts, not only "no panic":
//! - what comes out is a sequence of whole HTTP/1.1 responses, each with a
//!   status line, `Date`, `Cache-Control` and a `Content-Length` that
//!   matches its body (HEAD excepted);
//! - after a refused request (400, 405 aside, 408, 431) nothing more is
//!   read: the connection only drains and closes;
//! - the connection never holds more input than one request head allows.
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
struct Input {
    chunks: Vec<Vec<u8>>,
    max_head: u16,
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
        let find = |name: &str| {
            response
                .headers
                .iter()
                .find(|h| h.name.eq_ignore_ascii_case(name))
                .map(|h| std::str::from_utf8(h.value).unwrap().to_owned())
        };
        assert!(find("date").is_some() && find("cache-control").is_some());
        let len: usize = find("content-length").expect("a length").parse().unwrap();
        // HEAD responses carry the length of the body they omit; skip
        // just the head then, the next response follows at once.
        let body_present =
            rest.len() >= head + len && (len == 0 || !rest[head..].starts_with(b"HTTP/1.1 "));
        rest = &rest[head + if body_present { len } else { 0 }..];
    }
}

fuzz_target!(|input: Input| {
    let mut settings = Settings::for_tests("http://s.example/x/");
    settings.http_max_head_bytes = 256 + input.max_head as usize % 8192;
    // Bodies (API routes only) are bounded too; the `api` target covers
    // them.
    settings.api_max_body = 4096;
    let max_head = settings.http_max_head_bytes;
    let mut shard = Shard::new(Arc::new(Shared::for_tests(settings.clone())), 0);
    let now = Instant::now();
    let mut conn = Connection::new(1, Kind::Http(Front::Public), now);
    let mut out = Vec::new();
    for (i, chunk) in input.chunks.iter().enumerate() {
        let t = now + Duration::from_millis(i as u64);
        let reading = conn.wants_read(&settings);
        conn.handle_input(&mut shard, chunk, t);
        if !reading {
            assert!(conn.buffered_input() == 0 || !chunk.is_empty());
        }
        assert!(
            conn.buffered_input() <= max_head + 65_536,
            "{}",
            conn.buffered_input()
        );
        while let Some(bytes) = conn.poll_transmit(&mut shard, t) {
            out.extend_from_slice(&bytes);
            conn.transmitted();
        }
        // A refusal ends in a lingering close: what arrives after it is
        // read and discarded, never answered.
        conn.poll_shutdown(&settings, t);
        if conn.is_closed() {
            break;
        }
    }
    check_responses(&out);
});
