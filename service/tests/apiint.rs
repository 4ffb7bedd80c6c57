//! The JSON API joined to the lifecycle operations (round 3's APIINT):
//! one principal on both fronts, wire AUTH against the key table, and the
//! API's link calls run by `ops::lifecycle`, sans-IO (the log's I/O and
//! URL reads answered by the test, a fixed wall clock).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use bytes::BytesMut;
use shorty_protocol::frame::{FrameDecoder, Status};
use shorty_protocol::link::LinkOptions;
use shorty_protocol::{Reply, Request, PROTOCOL_V2};
use shorty_service::api::auth::{hash_key, key_text, KeyRecord, KeyTable, KeysFile};
use shorty_service::connection::{Connection, Kind};
use shorty_service::http::Front;
use shorty_service::log::{IoResult, LogIo};
use shorty_service::settings::Settings;
use shorty_service::shard::{Shard, Shared};

/// Unix ms of the rig's start.
const T0_MS: u64 = 1_800_000_000_000;

/// One core over an empty log, with these keys installed: `(id, scopes)`.
#[allow(dead_code)] // `shared` and `keys` serve the later cases.
struct Rig {
    shard: Shard,
    shared: Arc<Shared>,
    t0: Instant,
    disk: HashMap<u32, Vec<u8>>,
    /// The key texts, by id.
    keys: HashMap<u32, String>,
}

fn rig(auth_required: bool, keys: &[(u32, &str)]) -> Rig {
    let mut settings = Settings::for_tests("http://s.example/");
    settings.auth_required = auth_required;
    rig_with(settings, keys)
}

fn rig_with(settings: Settings, keys: &[(u32, &str)]) -> Rig {
    let shared = Arc::new(Shared::for_tests(settings));
    let mut file = KeysFile::default();
    let mut texts = HashMap::new();
    for &(id, scopes) in keys {
        let text = key_text(&[u8::try_from(id).unwrap(); 32]);
        file.keys.push(KeyRecord {
            id,
            name: format!("k{id}"),
            sha256: hash_key(text.as_bytes())
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect(),
            scopes: scopes.into(),
            created_at_ms: 0,
            expires_at_ms: None,
            revoked_at_ms: None,
            rate_create: None,
        });
        texts.insert(id, text);
    }
    shared.keys.install(KeyTable::from_file(&file, 0).unwrap());
    let t0 = Instant::now();
    let mut shard = Shard::new(shared.clone(), 0);
    shard.set_wall_clock(t0, T0_MS);
    Rig {
        shard,
        shared,
        t0,
        disk: HashMap::new(),
        keys: texts,
    }
}

impl Rig {
    /// Completes every log write and URL read the shard asks for.
    fn run(&mut self) {
        let now = self.t0;
        loop {
            let mut busy = false;
            while let Some(io) = self.shard.poll_log_io(now) {
                if let LogIo::Write(batch) = &io {
                    let file = self.disk.entry(batch.segment.idx).or_default();
                    file.truncate(batch.offset as usize);
                    file.extend_from_slice(&batch.bytes);
                }
                self.shard.log_done(&io, IoResult::Ok, now);
                busy = true;
            }
            while let Some(read) = self.shard.poll_read() {
                let file = &self.disk[&read.file];
                let at = read.offset as usize;
                let bytes =
                    bytes::Bytes::copy_from_slice(&file[at..(at + read.len).min(file.len())]);
                self.shard.read_done(read, Ok(bytes));
                busy = true;
            }
            if !busy {
                return;
            }
        }
    }

    /// Feeds `input` to `conn`, runs the I/O, returns what it wrote.
    fn exchange(&mut self, conn: &mut Connection, input: &[u8]) -> Vec<u8> {
        let now = self.t0;
        conn.handle_input(&mut self.shard, input, now);
        let mut written = Vec::new();
        for _ in 0..16 {
            self.run();
            while let Some(chunk) = conn.poll_transmit(&mut self.shard, now) {
                written.extend_from_slice(&chunk);
                conn.transmitted();
            }
            if self.shard.ops_in_flight() == 0 {
                break;
            }
        }
        written
    }

    /// An HTTP request on the public front; the response's status and
    /// text.
    #[allow(dead_code)]
    fn http(&mut self, request: &str) -> (u16, String) {
        let mut conn = Connection::new(7, Kind::Http(Front::Public), self.t0);
        let text = String::from_utf8(self.exchange(&mut conn, request.as_bytes())).unwrap();
        (text[9..12].parse().unwrap(), text)
    }
}

/// A framed connection that negotiated protocol version 2.
struct Wire {
    conn: Connection,
}

impl Wire {
    fn v2(rig: &mut Rig) -> Wire {
        let mut wire = Wire {
            conn: Connection::new(1, Kind::Framed, rig.t0),
        };
        let replies = wire.ask(rig, &Request::hello(PROTOCOL_V2));
        assert!(matches!(replies, Reply::Hello(_)), "{replies:?}");
        wire
    }

    /// Sends one request; its one reply.
    fn ask(&mut self, rig: &mut Rig, request: &Request<&[u8]>) -> Reply<bytes::Bytes> {
        let mut frame = Vec::new();
        request.encode_frame(&mut frame).unwrap();
        let mut bytes = BytesMut::from(&rig.exchange(&mut self.conn, &frame)[..]);
        let Status::Complete(payload) = FrameDecoder::with_max_frame_len(1 << 20)
            .decode(&mut bytes)
            .unwrap()
        else {
            panic!("no reply to {request:?}");
        };
        assert!(bytes.is_empty(), "one reply");
        Reply::decode_payload_for(PROTOCOL_V2, payload).unwrap()
    }
}

fn error_code(reply: &Reply<bytes::Bytes>) -> Option<u16> {
    reply.as_error().map(|(code, _)| code.0)
}

fn shorten2(url: &str) -> Vec<u8> {
    LinkOptions::new(url).to_vec().unwrap()
}

#[test]
fn without_a_key_the_wire_may_write_only_when_auth_is_optional() {
    // --auth required: the caller without a key is nobody on every write.
    let mut rig = rig(true, &[]);
    let mut wire = Wire::v2(&mut rig);
    let options = shorten2("https://e.com/a");
    let reply = wire.ask(&mut rig, &Request::Shorten2(&options[..]));
    assert_eq!(error_code(&reply), Some(401), "{reply:?}");
    let reply = wire.ask(&mut rig, &Request::Shorten(&b"https://e.com/b"[..]));
    assert_eq!(error_code(&reply), Some(401), "{reply:?}");
    // --auth optional (the loopback default): anyone may.
    let mut rig = self::rig(false, &[]);
    let mut wire = Wire::v2(&mut rig);
    let reply = wire.ask(&mut rig, &Request::Shorten2(&options[..]));
    assert!(matches!(reply, Reply::Shortened2(_)), "{reply:?}");
    let reply = wire.ask(&mut rig, &Request::Shorten(&b"https://e.com/b"[..]));
    assert!(matches!(reply, Reply::Shortened(_)), "{reply:?}");
}

/// The link a SHORTENED2/UPDATED/INFO reply describes: `(code, owner)`.
fn link_of(reply: &Reply<bytes::Bytes>) -> (String, Option<u32>) {
    let info = reply
        .link()
        .unwrap_or_else(|| panic!("not a link reply: {reply:?}"))
        .unwrap();
    (info.code.to_owned(), info.owner_key_id)
}

#[test]
fn wire_auth_checks_the_key_table_and_the_key_owns_what_it_makes() {
    let mut rig = rig(
        true,
        &[(1, "links:write"), (2, "links:write"), (3, "links:read")],
    );
    let key = |rig: &Rig, id: u32| rig.keys[&id].clone();
    // A bad key: 401, and the connection stays without one.
    let mut wire = Wire::v2(&mut rig);
    let reply = wire.ask(&mut rig, &Request::Auth(&b"shorty_not-a-key"[..]));
    assert_eq!(error_code(&reply), Some(401), "{reply:?}");
    let options = shorten2("https://e.com/owned");
    let reply = wire.ask(&mut rig, &Request::Shorten2(&options[..]));
    assert_eq!(error_code(&reply), Some(401), "{reply:?}");
    // Key 1 authenticates; what it makes is its own.
    let k1 = key(&rig, 1);
    let reply = wire.ask(&mut rig, &Request::Auth(k1.as_bytes()));
    assert!(matches!(reply, Reply::Authed), "{reply:?}");
    let reply = wire.ask(&mut rig, &Request::Shorten2(&options[..]));
    let (code, owner) = link_of(&reply);
    assert_eq!(owner, Some(1));
    let reply = wire.ask(&mut rig, &Request::Shorten(&b"https://e.com/v1"[..]));
    assert!(matches!(reply, Reply::Shortened(_)), "{reply:?}");
    // Key 2 may neither change nor delete key 1's link.
    let mut other = Wire::v2(&mut rig);
    let k2 = key(&rig, 2);
    let reply = other.ask(&mut rig, &Request::Auth(k2.as_bytes()));
    assert!(matches!(reply, Reply::Authed), "{reply:?}");
    let mut patch = shorty_protocol::link::LinkPatch::default();
    patch.url = Some("https://e.com/stolen");
    let patch = patch.to_vec().unwrap();
    let reply = other.ask(&mut rig, &Request::update(code.as_bytes(), &patch[..]));
    assert_eq!(error_code(&reply), Some(403), "{reply:?}");
    let reply = other.ask(&mut rig, &Request::Delete(code.as_bytes()));
    assert_eq!(error_code(&reply), Some(403), "{reply:?}");
    // Its owner may.
    let reply = wire.ask(&mut rig, &Request::update(code.as_bytes(), &patch[..]));
    assert!(matches!(reply, Reply::Updated(_)), "{reply:?}");
    // A read-only key may not create, on either request.
    let mut reader = Wire::v2(&mut rig);
    let k3 = key(&rig, 3);
    let reply = reader.ask(&mut rig, &Request::Auth(k3.as_bytes()));
    assert!(matches!(reply, Reply::Authed), "{reply:?}");
    let reply = reader.ask(&mut rig, &Request::Shorten2(&options[..]));
    assert_eq!(error_code(&reply), Some(403), "{reply:?}");
    let reply = reader.ask(&mut rig, &Request::Shorten(&b"https://e.com/r"[..]));
    assert_eq!(error_code(&reply), Some(403), "{reply:?}");
}

#[test]
fn wire_creations_answer_429_over_the_per_key_limit() {
    use shorty_service::limits::{LimitSettings, Limits, Rate};
    let mut settings = Settings::for_tests("http://s.example/");
    settings.auth_required = true;
    let mut rig = rig_with(settings, &[(1, "links:write")]);
    // The rig's shared state is rebuilt with limits: one new link a minute
    // per key.
    let limits = Limits::new(
        &LimitSettings {
            create_per_key: Rate::parse("1/min").unwrap(),
            ..LimitSettings::default()
        },
        rig.t0,
    );
    let mut settings = Settings::for_tests("http://s.example/");
    settings.auth_required = true;
    let shared = Arc::new(Shared::for_tests(settings).with_limits(limits));
    shared.keys.install((*rig.shared.keys.current()).clone());
    rig.shard = Shard::new(shared.clone(), 0);
    rig.shard.set_wall_clock(rig.t0, T0_MS);
    rig.shared = shared;
    let mut wire = Wire::v2(&mut rig);
    let k1 = rig.keys[&1].clone();
    let reply = wire.ask(&mut rig, &Request::Auth(k1.as_bytes()));
    assert!(matches!(reply, Reply::Authed), "{reply:?}");
    let options = shorten2("https://e.com/limited");
    let reply = wire.ask(&mut rig, &Request::Shorten2(&options[..]));
    assert!(matches!(reply, Reply::Shortened2(_)), "{reply:?}");
    let reply = wire.ask(&mut rig, &Request::Shorten2(&options[..]));
    assert_eq!(error_code(&reply), Some(429), "{reply:?}");
    let reply = wire.ask(&mut rig, &Request::Shorten(&b"https://e.com/v1"[..]));
    assert_eq!(error_code(&reply), Some(429), "{reply:?}");
}

fn json_of(response: &str) -> serde_json::Value {
    let body = &response[response.find("\r\n\r\n").unwrap() + 4..];
    serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {response}"))
}

/// A request with a JSON body (empty: none) and key `key` (`None`: none).
fn call(method: &str, path: &str, body: &str, key: Option<&str>) -> String {
    let auth = key.map_or(String::new(), |k| format!("Authorization: Bearer {k}\r\n"));
    format!(
        "{method} {path} HTTP/1.1\r\nHost: s\r\nContent-Length: {}\r\n{auth}\r\n{body}",
        body.len()
    )
}

#[test]
fn the_api_s_link_calls_run_the_lifecycle_operations() {
    let mut rig = rig(true, &[(1, "links:write"), (2, "links:write")]);
    let (k1, k2) = (rig.keys[&1].clone(), rig.keys[&2].clone());
    let (k1, k2) = (Some(k1.as_str()), Some(k2.as_str()));
    // A slug and options: 201 and the link object, owned by the key.
    let body = r#"{"url":"https://e.com/x","slug":"my-link_1","title":"T","maxClicks":5}"#;
    let (status, response) = rig.http(&call("POST", "/api/v1/links", body, k1));
    assert_eq!(status, 201, "{response}");
    assert!(response.contains("Location: /api/v1/links/my-link_1\r\n"));
    let link = json_of(&response);
    assert_eq!(link["code"], "my-link_1");
    assert_eq!(link["shortUrl"], "http://s.example/my-link_1");
    assert_eq!(link["title"], "T");
    assert_eq!(link["maxClicks"], 5);
    assert!(link["createdAt"].is_string(), "{link}");
    // The slug is taken: 409.
    let (status, response) = rig.http(&call("POST", "/api/v1/links", body, k2));
    assert_eq!(status, 409, "{response}");
    assert_eq!(json_of(&response)["status"], 409);
    // GET: the link with its options.
    let (status, response) = rig.http(&call("GET", "/api/v1/links/my-link_1", "", k1));
    assert_eq!(status, 200, "{response}");
    assert_eq!(json_of(&response)["url"], "https://e.com/x");
    // Another key may neither change nor delete it.
    let patch = r#"{"title":null,"url":"https://e.com/y"}"#;
    let (status, response) = rig.http(&call("PATCH", "/api/v1/links/my-link_1", patch, k2));
    assert_eq!(status, 403, "{response}");
    let (status, _) = rig.http(&call("DELETE", "/api/v1/links/my-link_1", "", k2));
    assert_eq!(status, 403);
    // Its owner may: null clears the title.
    let (status, response) = rig.http(&call("PATCH", "/api/v1/links/my-link_1", patch, k1));
    assert_eq!(status, 200, "{response}");
    let link = json_of(&response);
    assert_eq!(link["url"], "https://e.com/y");
    assert!(link["title"].is_null(), "{link}");
    assert_eq!(link["maxClicks"], 5);
    let (status, response) = rig.http(&call("DELETE", "/api/v1/links/my-link_1", "", k1));
    assert_eq!(status, 204, "{response}");
    assert!(!response.contains("Content-Length"), "{response}");
    let (status, _) = rig.http(&call("GET", "/api/v1/links/my-link_1", "", k1));
    assert_eq!(status, 404);
    // Without a key under --auth required: 401.
    let (status, _) = rig.http(&call("GET", "/api/v1/links/my-link_1", "", None));
    assert_eq!(status, 401);
}

#[test]
fn a_used_up_link_is_gone_and_its_clicks_and_series_are_served() {
    let mut rig = rig(false, &[]);
    let body = r#"{"url":"https://e.com/once","maxClicks":1}"#;
    let (status, response) = rig.http(&call("POST", "/api/v1/links", body, None));
    assert_eq!(status, 201, "{response}");
    let code = json_of(&response)["code"].as_str().unwrap().to_owned();
    let visit = format!("GET /{code} HTTP/1.1\r\nHost: s\r\n\r\n");
    let (status, _) = rig.http(&visit);
    assert_eq!(status, 302);
    let (status, _) = rig.http(&visit);
    assert_eq!(status, 410, "the one click is used up");
    let (status, response) = rig.http(&call("GET", &format!("/api/v1/links/{code}"), "", None));
    assert_eq!(status, 200, "{response}");
    assert_eq!(json_of(&response)["clicks"]["total"], 1, "{response}");
    let path = format!("/api/v1/links/{code}/stats?granularity=hour");
    let (status, response) = rig.http(&call("GET", &path, "", None));
    assert_eq!(status, 200, "{response}");
    let stats = json_of(&response);
    assert_eq!(stats["total"], 1, "{stats}");
    let series = stats["series"].as_array().unwrap();
    assert_eq!(series.len(), 48, "48 hourly buckets by default");
    let counted: u64 = series.iter().map(|b| b["clicks"].as_u64().unwrap()).sum();
    assert_eq!(counted, 1, "{stats}");
}

/// Review: PROTOCOL.md 6.3 says a STATS range longer than 1,000 buckets is
/// answered with its first 1,000; a range past the operation's own limit
/// (9,600 buckets) was refused 422 instead.
#[test]
fn a_stats_range_of_any_length_is_answered_with_its_first_buckets() {
    use shorty_protocol::link::{Granularity, LinkStats, StatsQuery, MAX_STATS_BUCKETS};
    const HOUR_MS: u64 = 3_600_000;
    let mut rig = rig(false, &[]);
    let mut wire = Wire::v2(&mut rig);
    let options = shorten2("https://e.com/stats");
    let (code, _) = link_of(&wire.ask(&mut rig, &Request::Shorten2(&options[..])));
    let from_ms = T0_MS - 20_000 * HOUR_MS;
    for (to_ms, buckets) in [
        (T0_MS, MAX_STATS_BUCKETS),
        (u64::MAX, MAX_STATS_BUCKETS),
        (from_ms + 10 * HOUR_MS, 10),
    ] {
        let query = StatsQuery::new(from_ms, to_ms, Granularity::Hour);
        let reply = wire.ask(&mut rig, &Request::stats(code.as_bytes(), query));
        let Reply::Stats(body) = &reply else {
            panic!("{to_ms}: {reply:?}");
        };
        let stats = LinkStats::parse(body).unwrap();
        assert_eq!(stats.series.len(), buckets, "to {to_ms}");
        let first = stats.series.first().unwrap().start_ms;
        assert_eq!(first, from_ms - from_ms % HOUR_MS, "the first buckets");
    }
    // A range that ends before it starts is still refused.
    let query = StatsQuery::new(T0_MS, T0_MS - HOUR_MS, Granularity::Hour);
    let reply = wire.ask(&mut rig, &Request::stats(code.as_bytes(), query));
    assert_eq!(error_code(&reply), Some(422), "{reply:?}");
}

/// Every reply a framed exchange wrote, in order.
fn replies(bytes: &[u8]) -> Vec<Reply<bytes::Bytes>> {
    let mut bytes = BytesMut::from(bytes);
    let decoder = FrameDecoder::with_max_frame_len(1 << 20);
    let mut replies = Vec::new();
    while let Status::Complete(payload) = decoder.decode(&mut bytes).unwrap() {
        replies.push(Reply::decode_payload_for(PROTOCOL_V2, payload).unwrap());
    }
    assert!(bytes.is_empty(), "only whole replies");
    replies
}

/// A SHORTEN2 payload creating alias `alias` for `url`.
fn alias_create(url: &str, alias: &str) -> Vec<u8> {
    let mut options = LinkOptions::new(url);
    options.alias = Some(alias);
    options.to_vec().unwrap()
}

/// `requests` as one pipelined input.
fn pipeline(requests: &[Request<&[u8]>]) -> Vec<u8> {
    let mut input = Vec::new();
    for request in requests {
        request.encode_frame(&mut input).unwrap();
    }
    input
}

#[test]
fn requests_pipelined_behind_a_write_see_it_on_the_wire() {
    // Review 11: a RESOLVE and a DELETE sent on one connection behind the
    // SHORTEN2 that creates their alias ran before the alias was durable:
    // 404 and 404, while the create answered OK and the alias stayed.
    let mut rig = rig(false, &[]);
    let mut wire = Wire::v2(&mut rig);
    let create = alias_create("https://e.com/promo", "promo1");
    let input = pipeline(&[
        Request::Shorten2(&create[..]),
        Request::Resolve(&b"promo1"[..]),
        Request::Delete(&b"promo1"[..]),
        Request::Resolve(&b"promo1"[..]),
    ]);
    let written = rig.exchange(&mut wire.conn, &input);
    let replies = replies(&written);
    assert_eq!(replies.len(), 4, "{replies:?}");
    assert!(matches!(replies[0], Reply::Shortened2(_)), "{replies:?}");
    assert!(
        matches!(&replies[1], Reply::Resolved(url) if &url[..] == b"https://e.com/promo"),
        "the alias resolves right after its create: {replies:?}"
    );
    assert!(matches!(replies[2], Reply::Deleted), "{replies:?}");
    assert_eq!(error_code(&replies[3]), Some(404), "{replies:?}");
}

#[test]
fn pipelined_shortens_are_not_held_for_each_other() {
    // A generated code cannot be named before its reply: pipelined
    // SHORTENs still go to the log together, in one commit.
    let mut rig = rig(false, &[]);
    let mut conn = Connection::new(1, Kind::Framed, rig.t0);
    let urls: Vec<String> = (0..8).map(|n| format!("https://e.com/{n}")).collect();
    let requests: Vec<_> = urls
        .iter()
        .map(|u| Request::Shorten(u.as_bytes()))
        .collect();
    let input = pipeline(&requests);
    conn.handle_input(&mut rig.shard, &input, rig.t0);
    assert_eq!(
        rig.shard.ops_in_flight(),
        8,
        "all eight wait for one commit"
    );
}

#[test]
fn requests_pipelined_behind_a_write_see_it_over_http() {
    let mut rig = rig(false, &[]);
    let body = r#"{"url":"https://e.com/promo","slug":"promo2"}"#;
    let input = format!(
        "POST /api/v1/links HTTP/1.1\r\nHost: s\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\n\r\n{body}\
         GET /promo2 HTTP/1.1\r\nHost: s\r\n\r\n\
         DELETE /api/v1/links/promo2 HTTP/1.1\r\nHost: s\r\n\r\n\
         GET /promo2 HTTP/1.1\r\nHost: s\r\n\r\n",
        body.len()
    );
    let mut conn = Connection::new(7, Kind::Http(Front::Public), rig.t0);
    let text = String::from_utf8(rig.exchange(&mut conn, input.as_bytes())).unwrap();
    let statuses: Vec<&str> = text
        .match_indices("HTTP/1.1 ")
        .map(|(at, _)| &text[at + 9..at + 12])
        .collect();
    assert_eq!(statuses, ["201", "302", "204", "404"], "{text}");
}

#[test]
fn requests_behind_a_write_that_timed_out_wait_until_its_outcome_is_known() {
    // Review 12: a write past `--commit-timeout` is answered 503 ("it may
    // still have been stored") but stays in flight; the requests behind
    // it ran at once and saw the state without it (DELETE 404, and the
    // alias appeared afterwards).
    let mut rig = rig(false, &[]);
    let mut wire = Wire::v2(&mut rig);
    let create = alias_create("https://e.com/slow", "slow1");
    let input = pipeline(&[
        Request::Shorten2(&create[..]),
        Request::Resolve(&b"slow1"[..]),
    ]);
    let t = rig.t0;
    wire.conn.handle_input(&mut rig.shard, &input, t);
    let late = t + rig.shared.settings.commit_timeout + std::time::Duration::from_millis(1);
    wire.conn.handle_timeout(&mut rig.shard, late);
    let mut written = Vec::new();
    while let Some(chunk) = wire.conn.poll_transmit(&mut rig.shard, late) {
        written.extend_from_slice(&chunk);
        wire.conn.transmitted();
    }
    let first = replies(&written);
    assert_eq!(first.len(), 1, "only the create is answered: {first:?}");
    assert_eq!(error_code(&first[0]), Some(503), "{first:?}");
    // The write lands: now the RESOLVE runs, and sees it.
    rig.run();
    let mut written = Vec::new();
    for _ in 0..4 {
        while let Some(chunk) = wire.conn.poll_transmit(&mut rig.shard, late) {
            written.extend_from_slice(&chunk);
            wire.conn.transmitted();
        }
        rig.run();
    }
    let rest = replies(&written);
    assert!(
        matches!(&rest[..], [Reply::Resolved(url)] if &url[..] == b"https://e.com/slow"),
        "{rest:?}"
    );
}
