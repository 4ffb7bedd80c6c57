//! The JSON API through the connection state machine: bodies arriving in
//! pieces, their timeout, keys and scopes, and the routes today's core
//! serves end to end (a fake clock; the log's I/O answered by the test).

use std::sync::Arc;
use std::time::{Duration, Instant};

use shorty_service::api::auth::{hash_key, key_text, KeyRecord, KeyTable, KeysFile};
use shorty_service::connection::{Connection, Kind};
use shorty_service::http::Front;
use shorty_service::log::{IoResult, LogIo};
use shorty_service::settings::Settings;
use shorty_service::shard::{Shard, Shared};

const SEC: Duration = Duration::from_secs(1);

fn shard(settings: Settings) -> Shard {
    Shard::new(Arc::new(Shared::for_tests(settings)), 0)
}

thread_local! {
    /// What the log wrote, by segment: reads are served from it.
    static DISK: std::cell::RefCell<std::collections::HashMap<u32, Vec<u8>>> =
        Default::default();
}

/// Completes every log write the shard asks for, then every URL read.
fn run_log(shard: &mut Shard, now: Instant) {
    while let Some(io) = shard.poll_log_io(now) {
        if let LogIo::Write(batch) = &io {
            DISK.with_borrow_mut(|disk| {
                let file = disk.entry(batch.segment.idx).or_default();
                file.truncate(batch.offset as usize);
                file.extend_from_slice(&batch.bytes);
            });
        }
        shard.log_done(&io, IoResult::Ok, now);
    }
    while let Some(read) = shard.poll_read() {
        let bytes = DISK.with_borrow(|disk| {
            let file = &disk[&read.file];
            let at = read.offset as usize;
            bytes::Bytes::copy_from_slice(&file[at..(at + read.len).min(file.len())])
        });
        shard.read_done(read, Ok(bytes));
    }
}

/// Everything the connection writes now, as text.
fn text(shard: &mut Shard, conn: &mut Connection, now: Instant) -> String {
    let mut text = String::new();
    while let Some(chunk) = conn.poll_transmit(shard, now) {
        text.push_str(std::str::from_utf8(&chunk).unwrap());
        conn.transmitted();
    }
    text
}

fn post(path: &str, body: &str, extra: &str) -> String {
    format!(
        "POST {path} HTTP/1.1\r\nHost: s\r\nContent-Length: {}\r\n{extra}\r\n{body}",
        body.len()
    )
}

fn status(response: &str) -> u16 {
    response[9..12].parse().unwrap()
}

fn json_body(response: &str) -> serde_json::Value {
    let body = &response[response.find("\r\n\r\n").unwrap() + 4..];
    serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {response}"))
}

#[test]
fn a_body_in_pieces_is_waited_for_then_a_link_is_created() {
    let mut shard = shard(Settings::for_tests("http://s.example/"));
    let t = Instant::now();
    let mut conn = Connection::new(1, Kind::Http(Front::Public), t);
    let request = post("/api/v1/links", r#"{"url":"https://e.com/api"}"#, "");
    let (head, body) = request.split_at(request.find("\r\n\r\n").unwrap() + 4);
    conn.handle_input(&mut shard, head.as_bytes(), t);
    conn.handle_input(&mut shard, &body.as_bytes()[..5], t);
    assert!(
        text(&mut shard, &mut conn, t).is_empty(),
        "waits for the body"
    );
    conn.handle_input(&mut shard, &body.as_bytes()[5..], t);
    run_log(&mut shard, t);
    let response = text(&mut shard, &mut conn, t);
    assert_eq!(status(&response), 201, "{response}");
    assert!(response.contains("Content-Type: application/json\r\n"));
    let link = json_body(&response);
    assert_eq!(link["url"], "https://e.com/api");
    let code = link["code"].as_str().unwrap().to_owned();
    assert_eq!(link["shortUrl"], format!("http://s.example/{code}"));
    assert!(response.contains(&format!("Location: /api/v1/links/{code}\r\n")));
    assert!(!conn.is_closed(), "keep-alive");
    // The same link, read back through the API (from the cache the write
    // filled, or a log read).
    let get = format!("GET /api/v1/links/{code} HTTP/1.1\r\nHost: s\r\n\r\n");
    conn.handle_input(&mut shard, get.as_bytes(), t);
    run_log(&mut shard, t);
    let response = text(&mut shard, &mut conn, t);
    assert_eq!(status(&response), 200, "{response}");
    assert_eq!(json_body(&response)["url"], "https://e.com/api");
    // The URL policy's refusal names the field.
    let bad = post("/api/v1/links", r#"{"url":"not a url"}"#, "");
    conn.handle_input(&mut shard, bad.as_bytes(), t);
    let response = text(&mut shard, &mut conn, t);
    assert_eq!(status(&response), 422, "{response}");
    assert!(response.contains("Content-Type: application/problem+json\r\n"));
    assert_eq!(json_body(&response)["errors"][0]["field"], "url");
}

#[test]
fn a_body_that_does_not_arrive_times_out() {
    let settings = Settings::for_tests("http://s.example/");
    let (head_t, body_t) = (settings.http_header_timeout, settings.api_body_timeout);
    let mut shard = shard(settings.clone());
    let t = Instant::now();
    let mut conn = Connection::new(1, Kind::Http(Front::Public), t);
    let request = post("/api/v1/links", r#"{"url":"https://e.com/"}"#, "");
    conn.handle_input(&mut shard, &request.as_bytes()[..request.len() - 3], t);
    // The body has its own time on top of the head's.
    let deadline = conn.poll_timeout(&settings).unwrap();
    assert_eq!(deadline, t + head_t + body_t);
    conn.handle_timeout(&mut shard, t + head_t + SEC);
    assert!(text(&mut shard, &mut conn, t + head_t + SEC).is_empty());
    conn.handle_timeout(&mut shard, deadline);
    let response = text(&mut shard, &mut conn, deadline);
    assert_eq!(status(&response), 408, "{response}");
}

#[test]
fn keys_and_scopes_govern_the_api_under_auth_required() {
    let mut settings = Settings::for_tests("http://s.example/");
    settings.auth_required = true;
    let shared = Arc::new(Shared::for_tests(settings));
    let key = |n: u8, scopes: &str| {
        let text = key_text(&[n; 32]);
        let hash = hash_key(text.as_bytes());
        let record = KeyRecord {
            id: u32::from(n),
            name: format!("k{n}"),
            sha256: hash.iter().map(|b| format!("{b:02x}")).collect(),
            scopes: scopes.into(),
            created_at_ms: 0,
            expires_at_ms: None,
            revoked_at_ms: None,
            rate_create: None,
        };
        (text, record)
    };
    let (writer, w) = key(1, "links:write");
    let (reader, r) = key(2, "links:read");
    let mut file = KeysFile { keys: vec![w, r] };
    shared.keys.install(KeyTable::from_file(&file, 0).unwrap());
    let mut shard = Shard::new(shared.clone(), 0);
    let t = Instant::now();
    let mut conn = Connection::new(1, Kind::Http(Front::Public), t);
    let mut ask = |shard: &mut Shard, request: String| {
        conn.handle_input(shard, request.as_bytes(), t);
        run_log(shard, t);
        text(shard, &mut conn, t)
    };
    let body = r#"{"url":"https://e.com/k"}"#;
    let response = ask(&mut shard, post("/api/v1/links", body, ""));
    assert_eq!(status(&response), 401, "{response}");
    assert!(response.contains("WWW-Authenticate: Bearer"));
    let response = ask(
        &mut shard,
        post("/api/v1/links", body, "X-Api-Key: shorty_nope\r\n"),
    );
    assert_eq!(status(&response), 401);
    let response = ask(
        &mut shard,
        post(
            "/api/v1/links",
            body,
            &format!("Authorization: Bearer {reader}\r\n"),
        ),
    );
    assert_eq!(status(&response), 403, "{response}");
    assert!(json_body(&response)["detail"]
        .as_str()
        .unwrap()
        .contains("links:write"));
    let response = ask(
        &mut shard,
        post(
            "/api/v1/links",
            body,
            &format!("Authorization: Bearer {writer}\r\n"),
        ),
    );
    assert_eq!(status(&response), 201, "{response}");
    // The document is open to all.
    let response = ask(
        &mut shard,
        "GET /api/v1/openapi.json HTTP/1.1\r\nHost: s\r\n\r\n".into(),
    );
    assert_eq!(status(&response), 200);
    // A revoked key stops working as soon as the new table is installed.
    file.keys[0].revoked_at_ms = Some(1);
    shared.keys.install(KeyTable::from_file(&file, 2).unwrap());
    let response = ask(
        &mut shard,
        post("/api/v1/links", body, &format!("X-Api-Key: {writer}\r\n")),
    );
    assert_eq!(status(&response), 401);
}

#[test]
fn a_listing_without_a_key_answers_401() {
    let mut shard = shard(Settings::for_tests("http://s.example/"));
    let t = Instant::now();
    let mut conn = Connection::new(1, Kind::Http(Front::Public), t);
    // Links are listed per API key (the key that made them): a loopback
    // caller without one has every scope but no links of its own.
    let request = "GET /api/v1/links HTTP/1.1\r\nHost: s\r\n\r\n";
    conn.handle_input(&mut shard, request.as_bytes(), t);
    let response = text(&mut shard, &mut conn, t);
    assert_eq!(status(&response), 401, "{response}");
    assert_eq!(json_body(&response)["status"], 401);
}

#[test]
fn auth_required_refuses_wire_writes_while_resolve_stays_open() {
    use shorty_protocol::frame::{FrameDecoder, Status};
    use shorty_protocol::{Reply, Request};
    let mut settings = Settings::for_tests("http://s.example/");
    settings.auth_required = true;
    let mut shard = shard(settings);
    let t = Instant::now();
    let mut conn = Connection::new(1, Kind::Framed, t);
    let mut wire = Vec::new();
    Request::Shorten(&b"https://e.com/w"[..])
        .encode_frame(&mut wire)
        .unwrap();
    Request::Resolve(&b"abcdefg"[..])
        .encode_frame(&mut wire)
        .unwrap();
    conn.handle_input(&mut shard, &wire, t);
    let mut bytes = bytes::BytesMut::new();
    while let Some(chunk) = conn.poll_transmit(&mut shard, t) {
        bytes.extend_from_slice(&chunk);
        conn.transmitted();
    }
    let mut codes = Vec::new();
    while let Status::Complete(frame) = FrameDecoder::with_max_frame_len(1 << 20)
        .decode(&mut bytes)
        .unwrap()
    {
        match Reply::decode_payload(frame).unwrap() {
            Reply::Error { code, .. } => codes.push(code.0),
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(codes, [401, 404], "SHORTEN needs a key; RESOLVE does not");
}

#[test]
fn over_the_limit_is_429_with_retry_after_on_both_fronts() {
    use shorty_service::limits::{LimitSettings, Limits, Rate};
    let t = Instant::now();
    let limits = Limits::new(
        &LimitSettings {
            create_per_client: Rate::parse("2/min").unwrap(),
            redirect_per_client: Rate::parse("1/min").unwrap(),
            ..LimitSettings::default()
        },
        t,
    );
    let shared =
        Arc::new(Shared::for_tests(Settings::for_tests("http://s.example/")).with_limits(limits));
    let mut shard = Shard::new(shared, 0);
    let peer = Some("192.0.2.9".parse().unwrap());
    let mut conn = Connection::new(1, Kind::Http(Front::Public), t);
    conn.set_peer(peer);
    let body = r#"{"url":"https://e.com/r"}"#;
    for _ in 0..2 {
        conn.handle_input(&mut shard, post("/api/v1/links", body, "").as_bytes(), t);
        run_log(&mut shard, t);
        assert_eq!(status(&text(&mut shard, &mut conn, t)), 201);
    }
    conn.handle_input(&mut shard, post("/api/v1/links", body, "").as_bytes(), t);
    let response = text(&mut shard, &mut conn, t);
    assert_eq!(status(&response), 429, "{response}");
    assert!(response.contains("Retry-After: 30\r\n"), "{response}");
    assert!(response.contains("RateLimit-Limit: 2\r\n"));
    assert!(response.contains("RateLimit-Remaining: 0\r\n"));
    assert!(response.contains("RateLimit-Reset: 30\r\n"));
    assert_eq!(json_body(&response)["status"], 429);
    // The wire shares the client's budget for new links.
    let mut framed = Connection::new(2, Kind::Framed, t);
    framed.set_peer(peer);
    let mut wire = Vec::new();
    shorty_protocol::Request::Shorten(&b"https://e.com/w"[..])
        .encode_frame(&mut wire)
        .unwrap();
    framed.handle_input(&mut shard, &wire, t);
    let mut bytes = bytes::BytesMut::new();
    while let Some(chunk) = framed.poll_transmit(&mut shard, t) {
        bytes.extend_from_slice(&chunk);
        framed.transmitted();
    }
    let frame = match shorty_protocol::frame::FrameDecoder::with_max_frame_len(1 << 20)
        .decode(&mut bytes)
        .unwrap()
    {
        shorty_protocol::frame::Status::Complete(frame) => frame,
        other => panic!("{other:?}"),
    };
    match shorty_protocol::Reply::decode_payload(frame).unwrap() {
        shorty_protocol::Reply::Error { code, .. } => assert_eq!(code.0, 429),
        other => panic!("{other:?}"),
    }
    // Redirects have their own budget: one, then 429.
    let get = b"GET /abcdefg HTTP/1.1\r\nHost: s\r\n\r\n";
    conn.handle_input(&mut shard, get, t);
    assert_eq!(status(&text(&mut shard, &mut conn, t)), 404);
    conn.handle_input(&mut shard, get, t);
    let response = text(&mut shard, &mut conn, t);
    assert_eq!(status(&response), 429);
    assert!(response.contains("Retry-After: 60\r\n"), "{response}");
}

#[test]
fn behind_a_trusted_proxy_each_forwarded_client_has_its_own_budget() {
    use shorty_service::limits::{Cidr, LimitSettings, Limits, Rate};
    let t = Instant::now();
    let limits = Limits::new(
        &LimitSettings {
            redirect_per_client: Rate::parse("1/min").unwrap(),
            ..LimitSettings::default()
        },
        t,
    );
    let mut settings = Settings::for_tests("http://s.example/");
    settings.trusted_proxies = vec![Cidr::parse("10.0.0.0/8").unwrap()];
    let mut shard = Shard::new(Arc::new(Shared::for_tests(settings).with_limits(limits)), 0);
    let mut ask = |peer: &str, xff: &str| {
        let mut conn = Connection::new(1, Kind::Http(Front::Public), t);
        conn.set_peer(Some(peer.parse().unwrap()));
        let request = format!("GET /abcdefg HTTP/1.1\r\nHost: s\r\nX-Forwarded-For: {xff}\r\n\r\n");
        conn.handle_input(&mut shard, request.as_bytes(), t);
        status(&text(&mut shard, &mut conn, t))
    };
    // Through the proxy: one budget per forwarded client.
    assert_eq!(ask("10.0.0.1", "198.51.100.1"), 404);
    assert_eq!(ask("10.0.0.1", "198.51.100.2"), 404);
    assert_eq!(ask("10.0.0.1", "198.51.100.1"), 429);
    // An untrusted peer cannot pick an address by sending the header.
    assert_eq!(ask("192.0.2.5", "198.51.100.3"), 404);
    assert_eq!(ask("192.0.2.5", "198.51.100.4"), 429);
}

/// A store whose statistics cannot be read (Redis not answering).
struct Unreadable;

impl shorty_service::stats::StatsReader for Unreadable {
    fn stored(
        &self,
        _key: u64,
        _from_ms: u64,
        _to_ms: u64,
        _granularity: shorty_service::stats::Granularity,
    ) -> std::io::Result<shorty_service::stats::StoredStats> {
        Err(std::io::Error::other("broken pipe"))
    }
}

/// A link whose statistics could not be read says so (`clicksError`),
/// rather than a bare `"clicks": null`, which means "not shown to this
/// key" (review 6, F5: the first read after a Redis restart failed and
/// the link view looked like one without statistics).
#[test]
fn a_link_view_says_when_its_statistics_could_not_be_read() {
    let mut settings = Settings::for_tests("http://s.example/");
    settings.stats = true;
    let mut shard = shard(settings);
    let t = Instant::now();
    let mut conn = Connection::new(1, Kind::Http(Front::Public), t);
    let create = post("/api/v1/links", r#"{"url":"https://e.com/s"}"#, "");
    conn.handle_input(&mut shard, create.as_bytes(), t);
    run_log(&mut shard, t);
    let response = text(&mut shard, &mut conn, t);
    assert_eq!(status(&response), 201, "{response}");
    let code = json_body(&response)["code"].as_str().unwrap().to_owned();
    let get = format!("GET /api/v1/links/{code} HTTP/1.1\r\nHost: s\r\n\r\n");
    conn.handle_input(&mut shard, get.as_bytes(), t);
    run_log(&mut shard, t);
    let link = json_body(&text(&mut shard, &mut conn, t));
    assert!(link["clicks"].is_object(), "{link}");
    assert!(link["clicksError"].is_null(), "{link}");
    assert!(shard.shared().stats.set(Box::new(Unreadable)).is_ok());
    conn.handle_input(&mut shard, get.as_bytes(), t);
    run_log(&mut shard, t);
    let response = text(&mut shard, &mut conn, t);
    assert_eq!(status(&response), 200, "{response}");
    let link = json_body(&response);
    assert!(link["clicks"].is_null(), "{link}");
    assert_eq!(
        link["clicksError"], "the statistics could not be read",
        "{link}"
    );
}
