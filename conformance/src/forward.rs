//! Query forwarding as a link's own option (issue 24, link tag 8): set
//! through every front (protocol v2 and its CLI, the JSON API), kept by
//! every store (the local log across restarts, export/import, Redis), and
//! winning over the server's `--forward-query` either way. The flag's own
//! rules (clash, fragment, length) are `cases::http_redirects_forward_*`;
//! here the same rules hold for a link that forwards on its own.

use std::path::Path;
use std::time::Duration;

use shorty_client::{Client, LinkOptions, LinkPatch};

use crate::cases::{raw_http, tmp, EXIT_TIMEOUT};
use crate::harness::{run_to_exit, workspace_binary, Server};
use crate::wire::code_of;

/// Status and `Location` of `GET /{code}{query}`.
fn visit(server: &Server, code: &str, query: &str) -> (u16, Option<String>) {
    let request = format!("GET /{code}{query} HTTP/1.1\r\nHost: s\r\n\r\n");
    let (responses, _) = raw_http(server, request.as_bytes(), 1);
    let (status, headers, _) = responses.into_iter().next().expect("a response");
    let location = headers
        .into_iter()
        .find(|(n, _)| n == "location")
        .map(|(_, v)| v);
    (status, location)
}

/// Asserts where a visit with the query `?utm_source=mail` lands: with it
/// forwarded (`true`) or on `url` as stored.
fn forwards(server: &Server, code: &str, url: &str, forwarded: bool, why: &str) {
    // Every fresh connection may land on another core: try a few, so the
    // option is seen on each (two cores in the harness).
    for i in 0..4 {
        let want = if forwarded {
            format!("{url}?utm_source=mail")
        } else {
            url.to_owned()
        };
        assert_eq!(
            visit(server, code, "?utm_source=mail"),
            (302, Some(want)),
            "{why} (connection {i})"
        );
    }
}

fn with_forward(forward: Option<bool>) -> LinkOptions<'static> {
    let mut o = LinkOptions::default();
    o.forward_query = forward;
    o
}

fn set_forward(forward: Option<bool>) -> LinkPatch<'static> {
    let mut p = LinkPatch::default();
    p.forward_query = Some(forward);
    p
}

/// Through protocol v2 (SHORTEN2, UPDATE, INFO) and the `shorty` CLI: a
/// link's own choice wins over `--forward-query` whether the flag is on
/// (the default) or off, survives a restart, is changed by UPDATE and
/// cleared back to the flag's; the clash and fragment rules hold for a
/// link that forwards on its own under `--forward-query false`.
pub fn forward_query_per_link_wins_over_the_flag_through_the_wire(bin: &Path) {
    let dir = tmp();
    let server = Server::start(bin, dir.path(), &[]);
    let mut c = Client::connect(server.addr()).unwrap();
    let off = c
        .shorten_with("https://example.com/off", &with_forward(Some(false)))
        .unwrap();
    assert_eq!(off.forward_query, Some(false));
    let on = c
        .shorten_with("https://example.com/on", &with_forward(Some(true)))
        .unwrap();
    let flag = c
        .shorten_with("https://example.com/flag", &with_forward(None))
        .unwrap();
    assert_eq!(flag.forward_query, None, "no choice of its own");
    let clash = c
        .shorten_with(
            "https://example.com/c?utm_source=site&id=7#top",
            &with_forward(Some(true)),
        )
        .unwrap();
    // The CLI's `--forward-query off` makes a link that does not forward.
    let shorty = workspace_binary("shorty", "shorty-client");
    let addr = server.addr().to_string();
    let (status, out) = run_to_exit(
        &shorty,
        &[
            "--server",
            &addr,
            "shorten",
            "https://example.com/cli",
            "--forward-query",
            "off",
        ],
        Duration::from_secs(10),
    );
    assert!(status.success(), "{out}");
    // It prints the short URL (or the bare code): the code is its last
    // path segment.
    let cli = out
        .lines()
        .next()
        .and_then(|l| l.trim().rsplit('/').next())
        .filter(|code| !code.is_empty())
        .unwrap_or_else(|| panic!("a short URL in {out:?}"))
        .to_owned();
    assert_eq!(c.info(&cli).unwrap().forward_query, Some(false), "{out}");

    forwards(
        &server,
        &off.code,
        "https://example.com/off",
        false,
        "off, flag on",
    );
    forwards(
        &server,
        &on.code,
        "https://example.com/on",
        true,
        "on, flag on",
    );
    forwards(
        &server,
        &flag.code,
        "https://example.com/flag",
        true,
        "flag on",
    );
    forwards(
        &server,
        &cli,
        "https://example.com/cli",
        false,
        "CLI off, flag on",
    );
    drop(server);

    let server = Server::start(bin, dir.path(), &["--forward-query", "false"]);
    forwards(
        &server,
        &off.code,
        "https://example.com/off",
        false,
        "off, flag off",
    );
    forwards(
        &server,
        &on.code,
        "https://example.com/on",
        true,
        "on, flag off, restarted",
    );
    forwards(
        &server,
        &flag.code,
        "https://example.com/flag",
        false,
        "flag off",
    );
    // The flag's merge rules hold for a link's own forwarding: a name the
    // URL has keeps the URL's value, new names come last, fragment last.
    assert_eq!(
        visit(&server, &clash.code, "?utm_source=mail&utm_medium=email"),
        (
            302,
            Some("https://example.com/c?utm_source=site&id=7&utm_medium=email#top".into())
        ),
        "clash and fragment, forwarding by the link's choice"
    );
    let mut c = Client::connect(server.addr()).unwrap();
    assert_eq!(c.info(&on.code).unwrap().forward_query, Some(true));
    // UPDATE turns it on and off, and clears it back to the flag's.
    let changed = c.update(&off.code, &set_forward(Some(true))).unwrap();
    assert_eq!(changed.forward_query, Some(true));
    forwards(
        &server,
        &off.code,
        "https://example.com/off",
        true,
        "updated on",
    );
    let (status, out) = run_to_exit(
        &shorty,
        &[
            "--server",
            &server.addr().to_string(),
            "update",
            &on.code,
            "--forward-query",
            "off",
        ],
        Duration::from_secs(10),
    );
    assert!(status.success(), "{out}");
    forwards(
        &server,
        &on.code,
        "https://example.com/on",
        false,
        "CLI update off",
    );
    let cleared = c.update(&off.code, &set_forward(None)).unwrap();
    assert_eq!(cleared.forward_query, None);
    forwards(
        &server,
        &off.code,
        "https://example.com/off",
        false,
        "cleared, flag off",
    );
    assert!(server.stop().success());
    // The updates are in the log: after a restart with the flag on, the
    // cleared link follows it and the one switched off stays off.
    let server = Server::start(bin, dir.path(), &[]);
    forwards(
        &server,
        &off.code,
        "https://example.com/off",
        true,
        "cleared, flag on",
    );
    forwards(
        &server,
        &on.code,
        "https://example.com/on",
        false,
        "updated off, restarted",
    );
}

/// One JSON API call on the HTTP front: status and parsed body.
fn api(server: &Server, method: &str, path: &str, body: &str) -> (u16, serde_json::Value) {
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: s\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\n\r\n{body}",
        body.len()
    );
    let (responses, _) = raw_http(server, request.as_bytes(), 1);
    let (status, _, body) = responses.into_iter().next().expect("a response");
    let json = serde_json::from_slice(&body).unwrap_or(serde_json::Value::Null);
    (status, json)
}

/// Through the JSON API: `forwardQuery` in POST and PATCH (`null` clears
/// it) and in the link object (`null` when the link follows the flag),
/// with the same effect on redirects as through the wire.
pub fn forward_query_per_link_through_the_json_api(bin: &Path) {
    let dir = tmp();
    let server = Server::start(bin, dir.path(), &[]);
    let url = "https://example.com/api";
    let (status, link) = api(
        &server,
        "POST",
        "/api/v1/links",
        &format!(r#"{{"url":"{url}","forwardQuery":false}}"#),
    );
    assert_eq!(status, 201, "{link}");
    assert_eq!(link["forwardQuery"], false, "{link}");
    let code = link["code"].as_str().unwrap().to_owned();
    forwards(&server, &code, url, false, "API off, flag on");
    let (status, plain) = api(
        &server,
        "POST",
        "/api/v1/links",
        &format!(r#"{{"url":"{url}/plain"}}"#),
    );
    assert_eq!(status, 201, "{plain}");
    assert!(plain["forwardQuery"].is_null(), "{plain}");
    let (status, bad) = api(
        &server,
        "POST",
        "/api/v1/links",
        &format!(r#"{{"url":"{url}","forwardQuery":"no"}}"#),
    );
    assert_eq!(status, 400, "{bad}");
    let path = format!("/api/v1/links/{code}");
    let (status, got) = api(&server, "GET", &path, "");
    assert_eq!(
        (status, &got["forwardQuery"]),
        (200, &false.into()),
        "{got}"
    );
    let (status, patched) = api(&server, "PATCH", &path, r#"{"forwardQuery":true}"#);
    assert_eq!(
        (status, &patched["forwardQuery"]),
        (200, &true.into()),
        "{patched}"
    );
    forwards(&server, &code, url, true, "API patched on");
    drop(server);
    let server = Server::start(bin, dir.path(), &["--forward-query", "false"]);
    forwards(&server, &code, url, true, "API on, flag off");
    let (status, patched) = api(&server, "PATCH", &path, r#"{"forwardQuery":null}"#);
    assert_eq!(status, 200, "{patched}");
    assert!(patched["forwardQuery"].is_null(), "{patched}");
    forwards(&server, &code, url, false, "API cleared, flag off");
}

/// Export writes `forward_query` for a link with its own choice (and not
/// for one without); import carries it into another data directory; an
/// export line from before the option (no field) still imports and
/// follows the flag.
pub fn forward_query_is_carried_by_export_and_import(bin: &Path) {
    let (from, to) = (tmp(), tmp());
    let server = Server::start(bin, from.path(), &[]);
    let mut c = Client::connect(server.addr()).unwrap();
    let off = c
        .shorten_with("https://example.com/x-off", &with_forward(Some(false)))
        .unwrap();
    let on = c
        .shorten_with("https://example.com/x-on", &with_forward(Some(true)))
        .unwrap();
    let none = c
        .shorten_with("https://example.com/x-none", &with_forward(None))
        .unwrap();
    assert!(
        server.stop().success(),
        "a clean stop: every link vouched for"
    );
    let dump = from.path().join("links.jsonl");
    let (status, out) = run_to_exit(
        bin,
        &[
            "export",
            "--data-dir",
            from.path().to_str().unwrap(),
            dump.to_str().unwrap(),
        ],
        EXIT_TIMEOUT,
    );
    assert!(
        status.success() && out.contains("exported 3 links"),
        "{out}"
    );
    let text = std::fs::read_to_string(&dump).unwrap();
    let lines: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let line = |code: &str| {
        lines
            .iter()
            .find(|l| l["code"] == code)
            .unwrap_or_else(|| panic!("{code} in {text}"))
    };
    assert_eq!(line(&off.code)["forward_query"], false, "{text}");
    assert_eq!(line(&on.code)["forward_query"], true, "{text}");
    assert!(line(&none.code).get("forward_query").is_none(), "{text}");
    // A line as exports wrote it before links had options.
    let old = to.path().join("old.jsonl");
    std::fs::write(
        &old,
        "{\"code\":\"oldline\",\"url\":\"https://example.com/x-old\"}\n",
    )
    .unwrap();
    let target = to.path().join("data");
    for file in [&dump, &old] {
        let (status, out) = run_to_exit(
            bin,
            &[
                "import",
                "--data-dir",
                target.to_str().unwrap(),
                file.to_str().unwrap(),
            ],
            EXIT_TIMEOUT,
        );
        assert!(status.success() && out.contains("imported"), "{out}");
    }
    let server = Server::start(bin, &target, &["--forward-query", "false"]);
    forwards(
        &server,
        &off.code,
        "https://example.com/x-off",
        false,
        "imported off",
    );
    forwards(
        &server,
        &on.code,
        "https://example.com/x-on",
        true,
        "imported on, flag off",
    );
    forwards(
        &server,
        &none.code,
        "https://example.com/x-none",
        false,
        "imported, flag off",
    );
    forwards(
        &server,
        "oldline",
        "https://example.com/x-old",
        false,
        "old line, flag off",
    );
    drop(server);
    let server = Server::start(bin, &target, &[]);
    forwards(
        &server,
        "oldline",
        "https://example.com/x-old",
        true,
        "old line, flag on",
    );
    forwards(
        &server,
        &off.code,
        "https://example.com/x-off",
        false,
        "imported off, flag on",
    );
}

/// With the Redis store, a link's own choice is stored with it and seen by
/// another node (which never served it) as by the one that made it; an
/// UPDATE through one node is followed by the other.
pub fn forward_query_per_link_in_the_redis_store(bin: &Path) {
    let Some(redis) = crate::cluster::or_skip(crate::cluster::Redis::start(&[])) else {
        return;
    };
    let store = redis.url();
    let args = |forward: &'static str| {
        vec![
            "--store".to_owned(),
            store.clone(),
            "--store-replicas".to_owned(),
            "0".to_owned(),
            "--store-cache-ttl".to_owned(),
            "50ms".to_owned(),
            "--forward-query".to_owned(),
            forward.to_owned(),
        ]
    };
    let (d1, d2) = (tmp(), tmp());
    let on_args = args("true");
    let off_args = args("false");
    let on_args: Vec<&str> = on_args.iter().map(String::as_str).collect();
    let off_args: Vec<&str> = off_args.iter().map(String::as_str).collect();
    let one = Server::start(bin, d1.path(), &on_args);
    let two = Server::start(bin, d2.path(), &off_args);
    let mut c = Client::connect(one.addr()).unwrap();
    let off = c
        .shorten_with("https://example.com/r-off", &with_forward(Some(false)))
        .unwrap();
    let on = c
        .shorten_with("https://example.com/r-on", &with_forward(Some(true)))
        .unwrap();
    let plain = c.shorten("https://example.com/r-plain").unwrap();
    let plain = code_of(&plain).to_owned();
    forwards(
        &one,
        &off.code,
        "https://example.com/r-off",
        false,
        "redis: off, flag on",
    );
    forwards(
        &one,
        &on.code,
        "https://example.com/r-on",
        true,
        "redis: on, flag on",
    );
    forwards(
        &one,
        &plain,
        "https://example.com/r-plain",
        true,
        "redis: plain, flag on",
    );
    forwards(
        &two,
        &off.code,
        "https://example.com/r-off",
        false,
        "node 2: off, flag off",
    );
    forwards(
        &two,
        &on.code,
        "https://example.com/r-on",
        true,
        "node 2: on, flag off",
    );
    forwards(
        &two,
        &plain,
        "https://example.com/r-plain",
        false,
        "node 2: plain, flag off",
    );
    assert_eq!(
        Client::connect(two.addr())
            .unwrap()
            .info(&on.code)
            .unwrap()
            .forward_query,
        Some(true)
    );
    // Turned off through node 1, node 2 follows once its cache entry ends.
    c.update(&on.code, &set_forward(Some(false))).unwrap();
    std::thread::sleep(Duration::from_millis(300));
    forwards(
        &two,
        &on.code,
        "https://example.com/r-on",
        false,
        "node 2 after UPDATE",
    );
}
