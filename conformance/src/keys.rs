//! Keys in a shared store, per-key limits and the operators' abuse tools
//! (issue 21, engineer KEYS), through the server binaries.

use std::path::Path;
use std::time::{Duration, Instant};

use crate::api::call;
use crate::cluster::{or_skip, RedisCluster};
use crate::harness::{run_to_exit, Server};

/// `keys --store STORE ARGS...` on the binary, its output.
fn store_keys(bin: &Path, store: &str, args: &[&str]) -> (bool, String) {
    let mut all = vec!["keys", "--store", store];
    all.extend_from_slice(args);
    let (status, out) = run_to_exit(bin, &all, Duration::from_secs(30));
    (status.success(), out)
}

/// With `--store redis://` the key table is in the store: a key made once
/// (by `keys --store`, on no node's data directory) works on two nodes,
/// only its SHA-256 is stored, names are unique across the cluster, and a
/// revoke answers 401 on both nodes within seconds, without a restart.
pub fn redis_keys_are_shared_by_every_node_and_revoked_on_all(bin: &Path) {
    let Some(cluster) = or_skip(RedisCluster::start(3)) else {
        return;
    };
    let seeds = cluster.seeds();
    let (ok, out) = store_keys(
        bin,
        &seeds,
        &[
            "create",
            "--name",
            "shared",
            "--scopes",
            "links:write,links:read",
        ],
    );
    assert!(ok, "{out}");
    let key = out.lines().next().unwrap().trim().to_owned();
    assert!(key.starts_with("shorty_"), "{out}");
    let (ok, out) = store_keys(
        bin,
        &seeds,
        &["create", "--name", "shared", "--scopes", "links:read"],
    );
    assert!(!ok && out.contains("already exists"), "{out}");
    let (ok, listed) = store_keys(bin, &seeds, &["list"]);
    assert!(ok && listed.contains("shared"), "{listed}");
    assert!(!listed.contains(&key[7..]), "{listed}");
    let stored = cluster
        .cli(0, &["-c", "hget", "shorty:keys", "shared"])
        .unwrap();
    assert!(stored.contains("sha256"), "{stored}");
    assert!(!stored.contains(&key[7..]), "only the hash is stored");

    let args = ["--store", seeds.as_str(), "--auth", "required"];
    let (d1, d2) = (crate::cases::tmp(), crate::cases::tmp());
    let nodes = [
        Server::start(bin, d1.path(), &args),
        Server::start(bin, d2.path(), &args),
    ];
    let body = Some(r#"{"url":"https://example.com/shared-key"}"#);
    for node in &nodes {
        let made = call(node, "POST", "/api/v1/links", body, Some(&key));
        assert_eq!(made.status, 201, "{}", made.body);
        let none = call(node, "POST", "/api/v1/links", body, None);
        assert_eq!(none.status, 401, "{}", none.body);
    }
    // A key made while the nodes run is taken by both within seconds.
    let (ok, out) = store_keys(
        bin,
        &seeds,
        &["create", "--name", "later", "--scopes", "links:write"],
    );
    assert!(ok, "{out}");
    let later = out.lines().next().unwrap().trim().to_owned();
    for node in &nodes {
        wait_for_status(node, body, &later, 201);
    }

    let (ok, out) = store_keys(bin, &seeds, &["revoke", "shared"]);
    assert!(ok, "{out}");
    let revoked = Instant::now();
    for node in &nodes {
        wait_for_status(node, body, &key, 401);
    }
    eprintln!(
        "revoked on both nodes after {} ms",
        revoked.elapsed().as_millis()
    );
    for node in &nodes {
        let still = call(node, "POST", "/api/v1/links", body, Some(&later));
        assert_eq!(still.status, 201, "the other key is untouched");
    }
}

/// Posts until `key` gets `status` (at most 10 s: the nodes reload every
/// second); any other answer than `status` or its opposite fails.
fn wait_for_status(node: &Server, body: Option<&str>, key: &str, status: u16) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let answer = call(node, "POST", "/api/v1/links", body, Some(key));
        if answer.status == status {
            return;
        }
        assert!(
            matches!(answer.status, 201 | 401),
            "{} {}",
            answer.status,
            answer.body
        );
        assert!(
            Instant::now() < deadline,
            "still {} after 10 s",
            answer.status
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// `keys create --rate-create`: a key's own limit replaces the defaults for
/// requests made with it: a lower one answers 429 with `Retry-After` where
/// the defaults would not, a higher one is not held to the defaults, a key
/// without one keeps them. The wire's SHORTEN after AUTH obeys the same.
pub fn a_key_s_own_create_rate_replaces_the_defaults(bin: &Path) {
    let dir = crate::cases::tmp();
    let make = |name: &str, rate: Option<&str>| {
        let mut args = vec!["create", "--name", name, "--scopes", "links:write"];
        if let Some(rate) = rate {
            args.extend(["--rate-create", rate]);
        }
        let out = crate::api::keys(bin, dir.path(), &args);
        out.lines().next().unwrap().trim().to_owned()
    };
    let low = make("low", Some("1/min"));
    let high = make("high", Some("100/min"));
    let plain = make("plain", None);
    let listed = crate::api::keys(bin, dir.path(), &["list"]);
    assert!(
        listed.contains("1/min") && listed.contains("100/min"),
        "{listed}"
    );
    let (status, out) = run_to_exit(
        bin,
        &[
            "keys",
            "--data-dir",
            dir.path().to_str().unwrap(),
            "create",
            "--name",
            "bad",
            "--scopes",
            "links:write",
            "--rate-create",
            "off",
        ],
        Duration::from_secs(30),
    );
    assert!(!status.success(), "{out}");
    let server = Server::start(
        bin,
        dir.path(),
        &[
            "--auth",
            "required",
            "--rate-create-key",
            "3/min",
            "--rate-create",
            "3/min",
            "--rate-limit-loopback",
            "true",
        ],
    );
    let body = Some(r#"{"url":"https://example.com/per-key"}"#);
    let post = |key: &str| call(&server, "POST", "/api/v1/links", body, Some(key));
    assert_eq!(post(&low).status, 201);
    let limited = post(&low);
    assert_eq!(limited.status, 429, "{}", limited.body);
    let retry: u64 = limited.header("retry-after").unwrap().parse().unwrap();
    assert!((30..=60).contains(&retry), "one creation a minute: {retry}");
    assert_eq!(limited.header("ratelimit-limit"), Some("1"));
    for i in 0..10 {
        let answer = post(&high);
        assert_eq!(answer.status, 201, "request {i}: {}", answer.body);
    }
    // The high key's creations came from this address and did not use up
    // its --rate-create budget: the plain key gets the defaults' 3.
    for _ in 0..3 {
        assert_eq!(post(&plain).status, 201);
    }
    assert_eq!(post(&plain).status, 429);

    // The wire: AUTH with the low key, its one creation is used up.
    use shorty_protocol::{Reply, Request, PROTOCOL_V2};
    let mut conn = server.connect();
    conn.send(Request::hello(PROTOCOL_V2));
    assert!(matches!(conn.reply(), Reply::Hello(_)), "HELLO");
    conn.send(Request::Auth(low.as_bytes()));
    let authed = Reply::decode_payload_for(PROTOCOL_V2, conn.read_payload());
    assert!(matches!(authed, Ok(Reply::Authed)), "AUTH: {authed:?}");
    conn.send(shorty_protocol::Request::Shorten(
        b"https://example.com/wire",
    ));
    conn.expect_error(shorty_protocol::ErrorCode(429));
}

/// `disable-destination`: links already made to a destination since
/// blocked are disabled in bulk through the running server: the domain's
/// and its subdomains' links answer 410 (and say `disabled` in the API),
/// others are untouched, and it holds after a restart. Under
/// `--auth required` it needs a key with `links:all`.
pub fn disable_destination_disables_links_already_made(bin: &Path) {
    let dir = crate::cases::tmp();
    let key = |name: &str, scopes: &str| {
        let out = crate::api::keys(
            bin,
            dir.path(),
            &["create", "--name", name, "--scopes", scopes],
        );
        out.lines().next().unwrap().trim().to_owned()
    };
    let writer = key("writer", "links:write,links:read");
    let admin = key("admin", "links:all,links:read");
    let args = ["--auth", "required"];
    let server = Server::start(bin, dir.path(), &args);
    let make = |url: &str, slug: Option<&str>| {
        let body = match slug {
            Some(s) => format!(r#"{{"url":"{url}","slug":"{s}"}}"#),
            None => format!(r#"{{"url":"{url}"}}"#),
        };
        let made = call(&server, "POST", "/api/v1/links", Some(&body), Some(&writer));
        assert_eq!(made.status, 201, "{}", made.body);
        made.json()["code"].as_str().unwrap().to_owned()
    };
    let blocked = [
        make("https://evil.example/a", None),
        make("https://www.EVIL.example/b?x=1", None),
        make("https://deep.sub.evil.example/c", Some("evil-alias")),
    ];
    let kept = [
        make("https://notevil.example/d", None),
        make("https://example.com/?next=evil.example", None),
        make("https://good.example/evil.example", Some("good-alias")),
    ];
    let run = |extra: &[&str]| {
        let server_addr = server.addr().to_string();
        let mut all = vec![
            "disable-destination",
            "--data-dir",
            dir.path().to_str().unwrap(),
            "--server",
            server_addr.as_str(),
        ];
        all.extend_from_slice(extra);
        all.push("evil.example");
        run_to_exit(bin, &all, Duration::from_secs(30))
    };
    // Records are readable once vouched for, milliseconds after their
    // acknowledgement (the loop below allows for it too).
    std::thread::sleep(Duration::from_millis(200));
    let (status, out) = run(&[]);
    assert!(!status.success(), "no key under --auth required: {out}");
    assert!(out.contains("401"), "{out}");
    let (status, out) = run(&["--api-key", &writer]);
    // The writer owns these links, so it may disable them: what matters
    // is that the tool runs as the key it is given.
    assert!(status.success(), "{out}");
    // A link is readable by the tool once its record is vouched for
    // (milliseconds after its acknowledgement): a second run finds any it
    // missed and counts the rest as already disabled.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (status, out) = run(&["--api-key", &admin]);
        assert!(status.success(), "{out}");
        let all_gone = blocked.iter().all(|code| {
            call(
                &server,
                "GET",
                &format!("/api/v1/links/{code}"),
                None,
                Some(&admin),
            )
            .json()["disabled"]
                == true
        });
        if all_gone {
            break;
        }
        assert!(Instant::now() < deadline, "not all disabled: {out}");
        std::thread::sleep(Duration::from_millis(100));
    }
    let check = |server: &Server| {
        for code in &blocked {
            let (status, _, _) = crate::cases::http("GET", &server.http_url(&format!("/{code}")));
            assert_eq!(status, 410, "{code} is disabled");
        }
        for code in &kept {
            let (status, _, _) = crate::cases::http("GET", &server.http_url(&format!("/{code}")));
            assert_eq!(status, 302, "{code} is untouched");
            let link = call(
                server,
                "GET",
                &format!("/api/v1/links/{code}"),
                None,
                Some(&admin),
            );
            assert_eq!(link.json()["disabled"], false, "{}", link.body);
        }
    };
    check(&server);
    assert!(server.stop().success());
    let server = Server::start(bin, dir.path(), &args);
    check(&server);
}

/// With an explicit `--public-url`, a URL under it (not only an existing
/// code) is refused, 400 on the API (saying why) and `ERROR 400` on the
/// wire: it would redirect back here. Other paths of the same host, and
/// other hosts, are fine. (Without `--public-url` the seed's client's URLs
/// on the HTTP front's address stay accepted: `seed_exchange`.)
pub fn links_to_this_server_itself_are_refused(bin: &Path) {
    let dir = crate::cases::tmp();
    let server = Server::start(bin, dir.path(), &["--public-url", "https://sho.rt/s/"]);
    for url in ["https://sho.rt/s/anything", "http://SHO.RT/s/x?y=1"] {
        let body = format!(r#"{{"url":"{url}"}}"#);
        let refused = call(&server, "POST", "/api/v1/links", Some(&body), None);
        assert_eq!(refused.status, 400, "{url}: {}", refused.body);
        assert!(refused.body.contains("this server"), "{}", refused.body);
        let mut conn = server.connect();
        conn.send(shorty_protocol::Request::Shorten(url.as_bytes()));
        let message = conn.expect_error(shorty_protocol::ErrorCode(400));
        assert!(message.contains("this server"), "{message}");
    }
    for url in ["https://sho.rt/blog", "https://example.com/s/x"] {
        let body = format!(r#"{{"url":"{url}"}}"#);
        let made = call(&server, "POST", "/api/v1/links", Some(&body), None);
        assert_eq!(made.status, 201, "{url}: {}", made.body);
    }
}

/// `disable-destination --store redis://`: the links are read from the
/// store, disabled through one node, and every node answers 410 for them
/// (within `--store-cache-ttl`) while other links still redirect.
pub fn redis_disable_destination_reaches_every_node(bin: &Path) {
    let Some(cluster) = or_skip(RedisCluster::start(3)) else {
        return;
    };
    let seeds = cluster.seeds();
    let args = ["--store", seeds.as_str()];
    let (d1, d2) = (crate::cases::tmp(), crate::cases::tmp());
    let nodes = [
        Server::start(bin, d1.path(), &args),
        Server::start(bin, d2.path(), &args),
    ];
    let make = |node: &Server, url: &str| {
        let body = format!(r#"{{"url":"{url}"}}"#);
        let made = call(node, "POST", "/api/v1/links", Some(&body), None);
        assert_eq!(made.status, 201, "{}", made.body);
        made.json()["code"].as_str().unwrap().to_owned()
    };
    let blocked = [
        make(&nodes[0], "https://evil.example/a"),
        make(&nodes[1], "https://cdn.evil.example/b"),
    ];
    let kept = make(&nodes[1], "https://example.com/fine");
    let server_addr = nodes[0].addr().to_string();
    let (status, out) = run_to_exit(
        bin,
        &[
            "disable-destination",
            "--store",
            &seeds,
            "--server",
            &server_addr,
            "evil.example",
        ],
        Duration::from_secs(30),
    );
    assert!(status.success(), "{out}");
    for code in &blocked {
        assert!(out.contains(code.as_str()), "{code} not disabled: {out}");
    }
    for node in &nodes {
        for code in &blocked {
            let deadline = Instant::now() + Duration::from_secs(10);
            loop {
                let (status, _, _) = crate::cases::http("GET", &node.http_url(&format!("/{code}")));
                if status == 410 {
                    break;
                }
                assert_eq!(status, 302, "{code}");
                assert!(Instant::now() < deadline, "{code} still redirects");
                std::thread::sleep(Duration::from_millis(100));
            }
        }
        let (status, _, _) = crate::cases::http("GET", &node.http_url(&format!("/{kept}")));
        assert_eq!(status, 302, "{kept} is untouched");
    }
}
