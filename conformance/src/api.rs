//! The JSON HTTP API, keys and `--auth` (issue 21), through a real HTTP
//! client (`ureq`) and the server binaries.

use std::path::Path;
use std::time::{Duration, Instant};

use shorty_protocol::{ErrorCode, Request};

use crate::cases::tmp;
use crate::harness::{run_to_exit, Server};

/// Status, headers' lookup and body of one API call.
pub(crate) struct Answer {
    pub(crate) status: u16,
    pub(crate) headers: Vec<(String, String)>,
    pub(crate) body: String,
}

impl Answer {
    pub(crate) fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub(crate) fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body)
            .unwrap_or_else(|e| panic!("{e}: {} {}", self.status, self.body))
    }
}

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .max_redirects(0)
        .http_status_as_error(false)
        .allow_non_standard_methods(true)
        .build()
        .into()
}

/// One API call: `method`, `path` on the server's HTTP front, a JSON body
/// (for POST and PATCH), a key.
pub(crate) fn call(
    server: &Server,
    method: &str,
    path: &str,
    body: Option<&str>,
    key: Option<&str>,
) -> Answer {
    let url = server.http_url(path);
    let agent = agent();
    let mut request = ureq::http::Request::builder().method(method).uri(&url);
    if let Some(key) = key {
        request = request.header("Authorization", format!("Bearer {key}"));
    }
    let result = match body {
        Some(body) => agent.run(
            request
                .header("Content-Type", "application/json")
                .body(body.to_owned())
                .unwrap(),
        ),
        None => agent.run(request.body(()).unwrap()),
    };
    let mut response = result.unwrap_or_else(|e| panic!("{method} {path}: {e}"));
    let headers = response
        .headers()
        .iter()
        .map(|(n, v)| {
            (
                n.as_str().to_owned(),
                v.to_str().unwrap_or_default().to_owned(),
            )
        })
        .collect();
    Answer {
        status: response.status().as_u16(),
        headers,
        body: response.body_mut().read_to_string().unwrap_or_default(),
    }
}

/// Raw bytes in, the first response's status and whether the server then
/// closed.
fn raw(server: &Server, request: &[u8]) -> (u16, bool) {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(server.http_addr()).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    // The server may close before taking all of a refused body: the write
    // failing then is part of what is tested, not an error.
    let _ = stream.write_all(request);
    let mut text = Vec::new();
    let mut buf = [0; 4096];
    loop {
        match stream.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => text.extend_from_slice(&buf[..n]),
        }
    }
    let text = String::from_utf8_lossy(&text);
    let status = text.get(9..12).and_then(|s| s.parse().ok()).unwrap_or(0);
    (status, true)
}

/// `keys ...` on the binary, returning its output.
pub(crate) fn keys(bin: &Path, dir: &Path, args: &[&str]) -> String {
    let mut all = vec!["keys", "--data-dir", dir.to_str().unwrap()];
    all.extend_from_slice(args);
    let (status, out) = run_to_exit(bin, &all, Duration::from_secs(30));
    assert!(status.success(), "keys {args:?}: {out}");
    out
}

/// Creates a link through `POST /api/v1/links`, reads it back, follows its
/// redirect; invalid input gets a problem naming the field; a body over
/// `--api-max-body` gets 413 and `Transfer-Encoding` 411; the OpenAPI
/// document lists every route served.
pub fn api_creates_and_reads_links(bin: &Path) {
    let dir = tmp();
    let server = Server::start(bin, dir.path(), &["--api-max-body", "1024"]);
    let created = call(
        &server,
        "POST",
        "/api/v1/links",
        Some(r#"{"url":"https://example.com/api"}"#),
        None,
    );
    assert_eq!(created.status, 201, "{}", created.body);
    let link = created.json();
    let code = link["code"].as_str().unwrap().to_owned();
    assert_eq!(link["url"], "https://example.com/api");
    assert_eq!(link["shortUrl"], server.http_url(&format!("/{code}")));
    assert_eq!(
        created.header("location"),
        Some(format!("/api/v1/links/{code}").as_str())
    );
    let read = call(&server, "GET", &format!("/api/v1/links/{code}"), None, None);
    assert_eq!(
        (read.status, read.json()["url"].clone()),
        (200, link["url"].clone())
    );
    let (status, location, _) = crate::cases::http("GET", &server.http_url(&format!("/{code}")));
    assert_eq!(
        (status, location.as_deref()),
        (302, Some("https://example.com/api"))
    );
    // The wire sees the same link.
    let mut conn = server.connect();
    assert!(
        matches!(conn.resolve(&code), shorty_protocol::Reply::Resolved(u) if &u[..] == b"https://example.com/api")
    );

    let bad = call(
        &server,
        "POST",
        "/api/v1/links",
        Some(r#"{"url":"https://example.com/","maxClicks":"many"}"#),
        None,
    );
    assert_eq!(bad.status, 400);
    assert_eq!(bad.header("content-type"), Some("application/problem+json"));
    assert_eq!(bad.json()["errors"][0]["field"], "maxClicks");
    let unknown = call(
        &server,
        "POST",
        "/api/v1/links",
        Some(r#"{"url":"https://e.com/","colour":1}"#),
        None,
    );
    assert_eq!(
        (unknown.status, unknown.json()["errors"][0]["field"].clone()),
        (400, "colour".into())
    );
    let missing = call(&server, "GET", "/api/v1/links/zzzzzzz", None, None);
    assert_eq!(missing.status, 404);

    let big = format!(r#"{{"url":"https://example.com/{}"}}"#, "a".repeat(2000));
    let request = format!(
        "POST /api/v1/links HTTP/1.1\r\nHost: s\r\nContent-Length: {}\r\n\r\n{big}",
        big.len()
    );
    assert_eq!(raw(&server, request.as_bytes()), (413, true));
    let chunked = b"POST /api/v1/links HTTP/1.1\r\nHost: s\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n";
    assert_eq!(raw(&server, chunked), (411, true));
    // Redirect routes still refuse every body.
    let smuggle = format!("GET /{code} HTTP/1.1\r\nHost: s\r\nContent-Length: 5\r\n\r\nGET /");
    assert_eq!(raw(&server, smuggle.as_bytes()), (400, true));

    let doc = call(&server, "GET", "/api/v1/openapi.json", None, None);
    assert_eq!(doc.status, 200);
    let doc = doc.json();
    assert!(doc["openapi"].as_str().unwrap().starts_with("3.1"));
    let mut listed = 0;
    // DELETE last: the other routes of the same code must find its link.
    for method in ["get", "post", "patch", "delete"] {
        for (template, item) in doc["paths"].as_object().unwrap() {
            if item.get(method).is_none() {
                continue;
            }
            listed += 1;
            let path = template.replace("{code}", &code);
            let body = match method {
                "post" if path.ends_with("bulk") => {
                    Some(r#"{"links":[{"url":"https://e.com/b"}]}"#)
                }
                "post" => Some(r#"{"url":"https://e.com/o"}"#),
                "patch" => Some(r#"{"title":"t"}"#),
                _ => None,
            };
            let answer = call(&server, &method.to_ascii_uppercase(), &path, body, None);
            // Served, never "no such route", and with a status the
            // document lists for it.
            assert!(
                !matches!(answer.status, 404 | 405 | 501),
                "{method} {path}: {} {}",
                answer.status,
                answer.body
            );
            assert!(
                item[method]["responses"]
                    .get(answer.status.to_string())
                    .is_some(),
                "{method} {template} answered {}, not documented: {}",
                answer.status,
                answer.body
            );
        }
    }
    assert_eq!(listed, shorty_service::api::ROUTES.len());
}

/// Under `--auth required`: 401 without a key, 403 without the scope, 201
/// with it; a revoke takes effect within seconds without a restart; the
/// wire's SHORTEN is refused without a key while RESOLVE and redirects
/// stay open.
pub fn api_keys_scopes_and_revoke(bin: &Path) {
    let dir = tmp();
    let writer = keys(
        bin,
        dir.path(),
        &[
            "create",
            "--name",
            "writer",
            "--scopes",
            "links:write,links:read",
        ],
    );
    let writer = writer.lines().next().unwrap().trim().to_owned();
    let reader = keys(
        bin,
        dir.path(),
        &["create", "--name", "reader", "--scopes", "links:read"],
    );
    let reader = reader.lines().next().unwrap().trim().to_owned();
    let listed = keys(bin, dir.path(), &["list"]);
    assert!(listed.contains("writer") && listed.contains("reader"));
    assert!(
        !listed.contains(&writer[7..]),
        "the key is never shown again"
    );
    let server = Server::start(bin, dir.path(), &["--auth", "required"]);
    let body = Some(r#"{"url":"https://example.com/keyed"}"#);
    let none = call(&server, "POST", "/api/v1/links", body, None);
    assert_eq!(none.status, 401, "{}", none.body);
    assert!(none.header("www-authenticate").is_some());
    let scoped = call(&server, "POST", "/api/v1/links", body, Some(&reader));
    assert_eq!(scoped.status, 403, "{}", scoped.body);
    let made = call(&server, "POST", "/api/v1/links", body, Some(&writer));
    assert_eq!(made.status, 201, "{}", made.body);
    let code = made.json()["code"].as_str().unwrap().to_owned();
    // Redirects and RESOLVE need no key; SHORTEN does.
    let (status, _, _) = crate::cases::http("GET", &server.http_url(&format!("/{code}")));
    assert_eq!(status, 302);
    let mut conn = server.connect();
    conn.send(Request::Shorten(b"https://example.com/wire"));
    conn.expect_error(ErrorCode(401));
    assert!(matches!(
        conn.resolve(&code),
        shorty_protocol::Reply::Resolved(_)
    ));

    // A wire connection that sent AUTH before the revoke.
    let mut authed = shorty_client::Client::connect(server.addr()).expect("connect");
    authed.auth(&writer).expect("AUTH with a valid key");
    let options = shorty_client::LinkOptions::default();
    authed
        .shorten_with("https://example.com/authed", &options)
        .expect("SHORTEN2 after AUTH");
    // A version-1 SHORTEN on a keyed connection makes a link that key
    // owns: it may delete it (review of 4647e0a: 403, the link had no
    // owner).
    let v1 = authed
        .shorten("https://example.com/v1-keyed")
        .expect("SHORTEN");
    assert!(v1.starts_with(&server.public_base()), "{v1}");
    authed
        .delete(&v1)
        .expect("the key that made a link deletes it");

    keys(bin, dir.path(), &["revoke", "writer"]);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let answer = call(&server, "POST", "/api/v1/links", body, Some(&writer));
        if answer.status == 401 {
            break;
        }
        assert_eq!(answer.status, 201);
        assert!(Instant::now() < deadline, "the revoke did not take effect");
        std::thread::sleep(Duration::from_millis(100));
    }
    // The revoke reaches the connection already open, not only new ones.
    let refused = authed.shorten_with("https://example.com/revoked", &options);
    assert_eq!(
        refused.as_ref().err().and_then(|e| e.code()).map(|c| c.0),
        Some(401),
        "a revoked key's open connection still writes: {refused:?}"
    );
    // The other key is untouched.
    let read = call(
        &server,
        "GET",
        &format!("/api/v1/links/{code}"),
        None,
        Some(&reader),
    );
    assert_eq!(read.status, 200);
}

/// A server listening beyond loopback requires keys by default, on both
/// fronts, while redirects stay open.
pub fn a_public_bind_requires_keys_for_writes(bin: &Path) {
    let dir = tmp();
    let server = Server::start(bin, dir.path(), &["--listen", "0.0.0.0:0"]);
    let mut conn = crate::wire::Conn::connect(std::net::SocketAddr::from((
        [127, 0, 0, 1],
        server.addr().port(),
    )));
    conn.send(Request::Shorten(b"https://example.com/public"));
    conn.expect_error(ErrorCode(401));
    let answer = call(
        &server,
        "POST",
        "/api/v1/links",
        Some(r#"{"url":"https://example.com/public"}"#),
        None,
    );
    assert_eq!(answer.status, 401);
    assert_eq!(
        crate::cases::http("GET", &server.http_url("/zzzzzzz")).0,
        404
    );
    assert_eq!(
        crate::cases::http("GET", &server.http_url("/healthz")).0,
        200
    );
}

/// Over `--rate-create`, the API answers 429 with `Retry-After` and the
/// `RateLimit-*` headers, the wire `ERROR 429`; redirects have their own
/// budget.
pub fn rate_limits_answer_429_with_retry_after(bin: &Path) {
    let dir = tmp();
    let server = Server::start(
        bin,
        dir.path(),
        &[
            "--rate-create",
            "2/min",
            "--rate-redirect",
            "3/min",
            "--rate-limit-loopback",
            "true",
        ],
    );
    let body = Some(r#"{"url":"https://example.com/limited"}"#);
    for _ in 0..2 {
        assert_eq!(
            call(&server, "POST", "/api/v1/links", body, None).status,
            201
        );
    }
    let limited = call(&server, "POST", "/api/v1/links", body, None);
    assert_eq!(limited.status, 429, "{}", limited.body);
    let retry: u64 = limited.header("retry-after").unwrap().parse().unwrap();
    assert!((1..=30).contains(&retry), "{retry}");
    assert_eq!(limited.header("ratelimit-limit"), Some("2"));
    assert_eq!(limited.header("ratelimit-remaining"), Some("0"));
    let mut conn = server.connect();
    conn.send(Request::Shorten(b"https://example.com/wire-limited"));
    conn.expect_error(ErrorCode(429));
    for _ in 0..3 {
        assert_eq!(
            crate::cases::http("GET", &server.http_url("/zzzzzzz")).0,
            404
        );
    }
    assert_eq!(
        crate::cases::http("GET", &server.http_url("/zzzzzzz")).0,
        429
    );
}

/// `--blocklist`: a blocked destination is refused with 403 naming the
/// rule on both fronts; the file is re-read on SIGHUP without a restart.
/// Credentials in URLs are refused (400) unless `--allow-userinfo`.
pub fn blocked_destinations_and_credentials_are_refused(bin: &Path) {
    let dir = tmp();
    let list = dir.path().join("blocklist.txt");
    std::fs::write(&list, "# test\nevil.example\n").unwrap();
    let server = Server::start(
        bin,
        &dir.path().join("data"),
        &["--blocklist", list.to_str().unwrap()],
    );
    let blocked = call(
        &server,
        "POST",
        "/api/v1/links",
        Some(r#"{"url":"https://www.evil.example/x"}"#),
        None,
    );
    assert_eq!(blocked.status, 403, "{}", blocked.body);
    assert!(blocked.json()["detail"]
        .as_str()
        .unwrap()
        .contains("evil.example"));
    let mut conn = server.connect();
    conn.send(Request::Shorten(b"https://evil.example/"));
    let message = conn.expect_error(ErrorCode(403));
    assert!(message.contains("line 2"), "{message}");
    // Not yet blocked; then blocked after the file changes and SIGHUP.
    let later = Some(r#"{"url":"https://later.example/"}"#);
    assert_eq!(
        call(&server, "POST", "/api/v1/links", later, None).status,
        201
    );
    std::fs::write(&list, "evil.example\nlater.example\n").unwrap();
    let status = std::process::Command::new("kill")
        .args(["-HUP", &server.pid().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let deadline = Instant::now() + Duration::from_secs(10);
    while call(&server, "POST", "/api/v1/links", later, None).status != 403 {
        assert!(
            Instant::now() < deadline,
            "SIGHUP did not reload the blocklist"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let creds = call(
        &server,
        "POST",
        "/api/v1/links",
        Some(r#"{"url":"https://u:p@ok.example/"}"#),
        None,
    );
    assert_eq!(creds.status, 400, "{}", creds.body);
    assert_eq!(creds.json()["errors"][0]["field"], "url");
    conn.send(Request::Shorten(b"https://u:p@ok.example/"));
    conn.expect_error(ErrorCode(400));

    // Visitors of an expired link go to its expired-URL: the blocklist
    // judges it too, at creation and in a PATCH, on both fronts.
    let soon = "2099-01-01T00:00:00Z";
    let sneaky = format!(
        r#"{{"url":"https://ok.example/","slug":"exp-sneaky","expiresAt":"{soon}","expiredUrl":"https://www.evil.example/phish"}}"#
    );
    let refused = call(&server, "POST", "/api/v1/links", Some(&sneaky), None);
    assert_eq!(refused.status, 403, "{}", refused.body);
    let fine = format!(r#"{{"url":"https://ok.example/","slug":"exp-fine","expiresAt":"{soon}"}}"#);
    assert_eq!(
        call(&server, "POST", "/api/v1/links", Some(&fine), None).status,
        201
    );
    let patch = Some(r#"{"expiredUrl":"https://evil.example/p2"}"#);
    let patched = call(&server, "PATCH", "/api/v1/links/exp-fine", patch, None);
    assert_eq!(patched.status, 403, "{}", patched.body);
    let mut wire = shorty_client::Client::connect(server.addr()).expect("connect");
    let mut options = shorty_client::LinkOptions::default();
    options.expired_url = Some("https://evil.example/w");
    options.expires_at_ms = Some(4_070_908_800_000);
    let answer = wire.shorten_with("https://ok.example/wire", &options);
    assert_eq!(
        answer.as_ref().err().and_then(|e| e.code()).map(|c| c.0),
        Some(403),
        "{answer:?}"
    );

    // A link to one of our aliases could close a redirect loop: refused
    // like a link to one of our generated codes.
    let base = server.public_base();
    let a = call(
        &server,
        "POST",
        "/api/v1/links",
        Some(r#"{"url":"https://ok.example/a","slug":"loop-a"}"#),
        None,
    );
    assert_eq!(a.status, 201, "{}", a.body);
    let to_a = format!(r#"{{"url":"{base}loop-a","slug":"loop-b"}}"#);
    let b = call(&server, "POST", "/api/v1/links", Some(&to_a), None);
    assert!(
        b.status >= 400,
        "a link to our own alias: {} {}",
        b.status,
        b.body
    );
    assert!(b.body.contains("short URL"), "{}", b.body);
    let b = call(
        &server,
        "POST",
        "/api/v1/links",
        Some(r#"{"url":"https://ok.example/b","slug":"loop-b"}"#),
        None,
    );
    assert_eq!(b.status, 201, "{}", b.body);
    let to_b = format!(r#"{{"url":"{base}loop-b"}}"#);
    let patched = call(&server, "PATCH", "/api/v1/links/loop-a", Some(&to_b), None);
    assert!(
        patched.status >= 400,
        "PATCH to our own alias: {} {}",
        patched.status,
        patched.body
    );

    // Review 2: a link to the alias it claims (a loop of one), and two
    // links of one bulk request naming each other, are refused as well.
    let selfie = format!(r#"{{"url":"{base}selfie","slug":"selfie"}}"#);
    let selfie = call(&server, "POST", "/api/v1/links", Some(&selfie), None);
    assert!(
        selfie.status >= 400,
        "a link to itself: {} {}",
        selfie.status,
        selfie.body
    );
    let cycle = format!(
        r#"{{"links":[{{"url":"{base}cyc-b","slug":"cyc-a"}},{{"url":"{base}cyc-a","slug":"cyc-b"}}]}}"#
    );
    let bulk = call(&server, "POST", "/api/v1/links/bulk", Some(&cycle), None);
    let statuses: Vec<u64> = bulk.json()["results"]
        .as_array()
        .map(|items| items.iter().filter_map(|r| r["status"].as_u64()).collect())
        .unwrap_or_default();
    assert_eq!(statuses.len(), 2, "{}", bulk.body);
    assert_eq!(statuses[0], 201, "{}", bulk.body);
    assert!(
        statuses[1] >= 400,
        "a cycle within one bulk request: {}",
        bulk.body
    );
    drop(server);
    let open = Server::start(bin, &dir.path().join("data2"), &["--allow-userinfo"]);
    let creds = call(
        &open,
        "POST",
        "/api/v1/links",
        Some(r#"{"url":"https://u:p@ok.example/"}"#),
        None,
    );
    assert_eq!(creds.status, 201, "{}", creds.body);
}

// ----- engineer APIINT: the API's link calls on the lifecycle operations -----

/// Through HTTP under `--auth required`: a taken slug is 409; a link whose
/// `expiresAt` has passed is 410 to visitors while the API still reads it;
/// another key's PATCH and DELETE are 403, its owner's 200 and 204.
pub fn api_links_conflict_expire_and_belong_to_their_key(bin: &Path) {
    let dir = tmp();
    let key = |name: &str| {
        let out = keys(
            bin,
            dir.path(),
            &[
                "create",
                "--name",
                name,
                "--scopes",
                "links:write,links:read",
            ],
        );
        out.lines().next().unwrap().trim().to_owned()
    };
    let (mine, theirs) = (key("mine"), key("theirs"));
    let server = Server::start(bin, dir.path(), &["--auth", "required"]);
    let body = Some(r#"{"url":"https://example.com/slugged","slug":"conf-slug_1"}"#);
    let made = call(&server, "POST", "/api/v1/links", body, Some(&mine));
    assert_eq!(made.status, 201, "{}", made.body);
    assert_eq!(made.json()["code"], "conf-slug_1");
    let taken = call(&server, "POST", "/api/v1/links", body, Some(&theirs));
    assert_eq!(taken.status, 409, "{}", taken.body);
    assert_eq!(taken.json()["status"], 409);
    let (status, _, _) = crate::cases::http("GET", &server.http_url("/conf-slug_1"));
    assert_eq!(status, 302);

    // Another key may neither change nor delete it; its owner may.
    let link = "/api/v1/links/conf-slug_1";
    let patch = Some(r#"{"url":"https://example.com/taken-over","title":null}"#);
    let refused = call(&server, "PATCH", link, patch, Some(&theirs));
    assert_eq!(refused.status, 403, "{}", refused.body);
    let refused = call(&server, "DELETE", link, None, Some(&theirs));
    assert_eq!(refused.status, 403, "{}", refused.body);
    let changed = call(&server, "PATCH", link, patch, Some(&mine));
    assert_eq!(changed.status, 200, "{}", changed.body);
    assert_eq!(changed.json()["url"], "https://example.com/taken-over");
    let deleted = call(&server, "DELETE", link, None, Some(&mine));
    assert_eq!(deleted.status, 204, "{}", deleted.body);
    assert_eq!(call(&server, "GET", link, None, Some(&mine)).status, 404);
    let (status, _, _) = crate::cases::http("GET", &server.http_url("/conf-slug_1"));
    assert_eq!(status, 404);

    // Expiry: a second from now, then gone for visitors.
    let unix_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis();
    let expires = shorty_service::api::model::rfc3339_ms(u64::try_from(unix_ms).unwrap() + 1000);
    let body = format!(r#"{{"url":"https://example.com/soon","expiresAt":"{expires}"}}"#);
    let made = call(&server, "POST", "/api/v1/links", Some(&body), Some(&mine));
    assert_eq!(made.status, 201, "{}", made.body);
    assert_eq!(made.json()["expiresAt"], expires.as_str());
    let code = made.json()["code"].as_str().unwrap().to_owned();
    std::thread::sleep(Duration::from_millis(1200));
    let (status, _, _) = crate::cases::http("GET", &server.http_url(&format!("/{code}")));
    assert_eq!(status, 410);
    let read = call(
        &server,
        "GET",
        &format!("/api/v1/links/{code}"),
        None,
        Some(&mine),
    );
    assert_eq!(read.status, 200, "{}", read.body);
}

/// SIGHUP to a server without `--blocklist` (an operator's or
/// logrotate's habit with daemons) reloads nothing and harms nothing: the
/// server goes on answering and still stops cleanly (review 8: it died of
/// the signal's default action, exit 129, with no clean stop).
pub fn sighup_without_a_blocklist_is_harmless(bin: &Path) {
    let dir = tmp();
    let server = Server::start(bin, &dir.path().join("data"), &[]);
    let mut conn = server.connect();
    let short = conn.shorten("https://example.com/before-hup");
    let code = short.rsplit('/').next().unwrap().to_owned();
    for _ in 0..3 {
        let status = std::process::Command::new("kill")
            .args(["-HUP", &server.pid().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    }
    std::thread::sleep(Duration::from_millis(300));
    let mut conn = server.connect();
    assert_eq!(
        conn.resolve(&code),
        shorty_protocol::Reply::Resolved(bytes::Bytes::from_static(
            b"https://example.com/before-hup"
        ))
    );
    drop(conn);
    assert!(server.stop().success());
}
