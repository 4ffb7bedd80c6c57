//! Click statistics through the wire, the JSON API and the CLI (issue 20,
//! engineer STATS): aliases, the Redis store's read side, and durability.

use std::io::{Read, Write};
use std::path::Path;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use shorty_client::{Client, LinkOptions, LinkPatch, Stats};
use shorty_protocol::link::{Granularity, StatsQuery};

use crate::cases::{http, tmp};
use crate::harness::Server;

const HOUR_MS: u64 = 3_600_000;

fn now_ms() -> u64 {
    let since = SystemTime::now().duration_since(UNIX_EPOCH).unwrap();
    u64::try_from(since.as_millis()).unwrap()
}

/// The current and the previous hour, hourly: a click made during the
/// case is in it even if the hour turned meanwhile.
fn two_hours() -> StatsQuery {
    let hour = now_ms() / HOUR_MS * HOUR_MS;
    StatsQuery::new(hour - HOUR_MS, hour + HOUR_MS, Granularity::Hour)
}

/// The code of a new link to `url`, made with the default options.
fn new_code(c: &mut Client, url: &str) -> String {
    c.shorten_with(url, &LinkOptions::default()).unwrap().code
}

/// One HTTP request for `/{code}` on a connection of its own (so clicks
/// spread over the cores), expecting `status`.
fn visit(http_addr: std::net::SocketAddr, method: &str, code: &str, headers: &str, status: u16) {
    let mut stream = std::net::TcpStream::connect(http_addr).unwrap();
    let request =
        format!("{method} /{code} HTTP/1.1\r\nHost: s\r\nConnection: close\r\n{headers}\r\n");
    stream.write_all(request.as_bytes()).unwrap();
    let mut reply = String::new();
    stream.read_to_string(&mut reply).unwrap();
    assert!(
        reply.starts_with(&format!("HTTP/1.1 {status} ")),
        "{method} /{code}: {reply}"
    );
}

const HUMAN: &str = "User-Agent: Mozilla/5.0\r\nReferer: https://news.example.org/a?b=1\r\n";
const BOT: &str = "User-Agent: Slackbot-LinkExpanding 1.0\r\n";

/// STATS of `code` once its total is `total` (every core's clicks reach
/// the store within a flush or two), or as it is after 10 s.
fn stats_once(c: &mut Client, code: &str, total: u64) -> Stats {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let stats = c.stats(code, two_hours()).unwrap();
        if stats.total == total || Instant::now() > deadline {
            return stats;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// GETs `url` until its JSON's `pointer` is `total` (other cores' clicks
/// show a `--stats-flush` later) or 10 s have passed; answers the last
/// JSON and its text, which the caller checks.
fn json_once(url: &str, pointer: &str, total: u64) -> (serde_json::Value, String) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (status, _, body) = http("GET", url);
        assert_eq!(status, 200, "{body}");
        let json: serde_json::Value = serde_json::from_str(&body).unwrap();
        if json.pointer(pointer).and_then(|v| v.as_u64()) == Some(total) {
            return (json, body);
        }
        assert!(
            Instant::now() < deadline,
            "{pointer} never became {total}: {body}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A core's own clicks read back exactly at every moment, while they are
/// on their way to the store: one core (`--threads 1`), a flush every
/// 10 ms, and after each click a STATS and an INFO on the same core must
/// say exactly the clicks made. Before, a read between a flush's hand-over
/// and the writer storing it missed that flush's clicks (STATS said 8,
/// then INFO fewer), in the data directory's store and in Redis alike.
fn own_clicks_read_back_exactly(bin: &Path, store: &[&str], clicks: u64) {
    let dir = tmp();
    let mut args = vec!["--threads", "1", "--stats-flush", "10ms"];
    args.extend_from_slice(store);
    let server = Server::start(bin, dir.path(), &args);
    let mut c = Client::connect(server.addr()).unwrap();
    let code = new_code(&mut c, "https://example.com/exactly");
    let http_addr = server.http_addr();
    for made in 1..=clicks {
        visit(http_addr, "GET", &code, HUMAN, 302);
        let stats = c.stats(&code, two_hours()).unwrap();
        assert_eq!(stats.total, made, "STATS after {made} clicks: {stats:?}");
        let series: u64 = stats.series.iter().map(|b| b.count).sum();
        assert_eq!(series, made, "STATS' series after {made} clicks: {stats:?}");
        let info = c.info(&code).unwrap();
        assert_eq!(info.clicks_total, Some(made), "INFO after {made} clicks");
    }
}

/// `own_clicks_read_back_exactly` with the data directory's store.
pub fn own_clicks_read_back_exactly_while_they_are_flushed(bin: &Path) {
    own_clicks_read_back_exactly(bin, &[], 200);
}

/// `own_clicks_read_back_exactly` with a Redis Cluster store (the reads
/// are one `MULTI`/`EXEC` on the link's slot).
pub fn own_clicks_read_back_exactly_while_they_are_flushed_to_redis(bin: &Path) {
    let Some(cluster) = crate::cluster::or_skip(crate::cluster::RedisCluster::start(3)) else {
        return;
    };
    let store = cluster.seeds();
    own_clicks_read_back_exactly(bin, &["--store", store.as_str()], 300);
}

/// Clicks on a custom alias that is not spelled like a code (it lives in
/// the key directory's side map) are counted like a code's and shown by
/// STATS, INFO and the JSON API; an update keeps them; the alias deleted
/// and claimed again after its quarantine starts from zero; the counts
/// survive a restart.
pub fn alias_clicks_are_counted_and_a_reclaimed_alias_starts_from_zero(bin: &Path) {
    let dir = tmp();
    let args = [
        "--threads",
        "2",
        "--stats-flush",
        "20ms",
        "--alias-quarantine",
        "1ms",
    ];
    let server = Server::start(bin, dir.path(), &args);
    let mut c = Client::connect(server.addr()).unwrap();
    let alias = "spring-sale";
    let mut options = LinkOptions::default();
    options.alias = Some(alias);
    let link = c
        .shorten_with("https://example.com/spring", &options)
        .unwrap();
    assert_eq!(link.code, alias);
    let http_addr = server.http_addr();
    for _ in 0..6 {
        visit(http_addr, "GET", alias, HUMAN, 302);
    }
    for _ in 0..2 {
        visit(http_addr, "GET", alias, BOT, 302);
    }
    visit(http_addr, "HEAD", alias, "", 302);
    let stats = stats_once(&mut c, alias, 8);
    assert_eq!(
        (stats.total, stats.human, stats.bot),
        (8, 6, 2),
        "{stats:?}"
    );
    assert_eq!(stats.series.iter().map(|b| b.count).sum::<u64>(), 8);
    assert_eq!(stats.referrers, vec![("news.example.org".to_string(), 6)]);
    let info = c.info(alias).unwrap();
    assert_eq!(
        (info.clicks_total, info.clicks_human, info.clicks_bot),
        (Some(8), Some(6), Some(2))
    );
    // The JSON API (what the page shows) reads the same numbers, once the
    // other core has them: with two cores its request may land on the one
    // that did not count the last clicks (a flush later, by design).
    let (json, body) = json_once(
        &server.http_url(&format!("/api/v1/links/{alias}")),
        "/clicks/total",
        8,
    );
    assert_eq!(
        (
            json["clicks"]["human"].as_u64(),
            json["clicks"]["bot"].as_u64()
        ),
        (Some(6), Some(2)),
        "{body}"
    );
    let (json, body) = json_once(
        &server.http_url(&format!("/api/v1/links/{alias}/stats")),
        "/total",
        8,
    );
    assert_eq!(
        (json["total"].as_u64(), json["bot"].as_u64()),
        (Some(8), Some(2)),
        "{body}"
    );
    // An update is the same link: its clicks go on.
    let mut patch = LinkPatch::default();
    patch.title = Some(Some("Spring sale"));
    c.update(alias, &patch).unwrap();
    visit(http_addr, "GET", alias, HUMAN, 302);
    assert_eq!(stats_once(&mut c, alias, 9).total, 9);
    // Deleted, then claimed again: a new link, whose count starts at zero.
    c.delete(alias).unwrap();
    visit(http_addr, "GET", alias, HUMAN, 404);
    std::thread::sleep(Duration::from_millis(10));
    let again = c
        .shorten_with("https://example.com/summer", &options)
        .unwrap();
    assert_eq!(again.code, alias);
    let fresh = c.stats(alias, two_hours()).unwrap();
    assert_eq!((fresh.total, fresh.human), (0, 0), "{fresh:?}");
    assert!(fresh.referrers.is_empty(), "{fresh:?}");
    visit(http_addr, "GET", alias, BOT, 302);
    visit(http_addr, "GET", alias, HUMAN, 302);
    let stats = stats_once(&mut c, alias, 2);
    assert_eq!((stats.total, stats.bot), (2, 1), "{stats:?}");
    // Durable like a code's: a clean stop writes the last counts.
    drop(c);
    assert!(server.stop().success());
    let server = Server::start(bin, dir.path(), &args);
    let mut c = Client::connect(server.addr()).unwrap();
    let stats = c.stats(alias, two_hours()).unwrap();
    assert_eq!(
        (stats.total, stats.human, stats.bot),
        (2, 1, 1),
        "{stats:?}"
    );
}

/// With a Redis Cluster store, INFO, STATS and the API read what every
/// node counted: clicks on two nodes, for a generated code and for an
/// alias, are summed, by kind, per hour and per day, with the referrers.
pub fn redis_cluster_stats_are_read_back_summed_across_nodes(bin: &Path) {
    let Some(cluster) = crate::cluster::or_skip(crate::cluster::RedisCluster::start(3)) else {
        return;
    };
    let store = cluster.seeds();
    let args = [
        "--store",
        store.as_str(),
        "--store-timeout",
        "2s",
        "--stats-flush",
        "50ms",
        "--threads",
        "2",
    ];
    let (d1, d2) = (tmp(), tmp());
    let one = Server::start(bin, d1.path(), &args);
    let two = Server::start(bin, d2.path(), &args);
    let mut c1 = Client::connect(one.addr()).unwrap();
    let mut c2 = Client::connect(two.addr()).unwrap();
    let code = new_code(&mut c1, "https://example.com/summed");
    let alias = "launch-day";
    let mut options = LinkOptions::default();
    options.alias = Some(alias);
    c2.shorten_with("https://example.com/launch", &options)
        .unwrap();
    let from_t = "User-Agent: Mozilla/5.0\r\nReferer: https://t.co/x\r\n";
    let hour_before = now_ms() / HOUR_MS;
    for _ in 0..30 {
        visit(one.http_addr(), "GET", &code, from_t, 302);
    }
    for _ in 0..12 {
        visit(two.http_addr(), "GET", &code, from_t, 302);
    }
    for _ in 0..4 {
        visit(two.http_addr(), "GET", &code, BOT, 302);
    }
    visit(two.http_addr(), "HEAD", &code, "", 302);
    for (server, n) in [(&one, 5), (&two, 3)] {
        for _ in 0..n {
            visit(server.http_addr(), "GET", alias, HUMAN, 302);
        }
    }
    let hour_after = now_ms() / HOUR_MS;
    // Each node reads the sum once both have flushed.
    for c in [&mut c1, &mut c2] {
        let stats = stats_once(c, &code, 46);
        assert_eq!(
            (stats.total, stats.human, stats.bot),
            (46, 42, 4),
            "{stats:?}\n--- node one:\n{}\n--- node two:\n{}",
            one.log(),
            two.log()
        );
        assert_eq!(stats.referrers, vec![("t.co".to_string(), 42)]);
        assert!(stats.first_click_at_ms <= stats.last_click_at_ms);
        let counted: Vec<(u64, u64)> = stats
            .series
            .iter()
            .filter(|b| b.count > 0)
            .map(|b| (b.start_ms / HOUR_MS, b.count))
            .collect();
        assert_eq!(
            counted.iter().map(|(_, n)| n).sum::<u64>(),
            46,
            "{counted:?}"
        );
        assert!(
            counted
                .iter()
                .all(|(h, _)| (hour_before..=hour_after).contains(h)),
            "{counted:?} outside hours {hour_before}..={hour_after}"
        );
        if hour_before == hour_after {
            assert_eq!(counted, vec![(hour_before, 46)]);
        }
        // Daily buckets hold the same clicks.
        let day = now_ms() / (24 * HOUR_MS) * (24 * HOUR_MS);
        let days = c
            .stats(
                &code,
                StatsQuery::new(day - 24 * HOUR_MS, day + 24 * HOUR_MS, Granularity::Day),
            )
            .unwrap();
        assert_eq!(
            days.series.iter().map(|b| b.count).sum::<u64>(),
            46,
            "{days:?}"
        );
        let info = c.info(&code).unwrap();
        assert_eq!(
            (info.clicks_total, info.clicks_human, info.clicks_bot),
            (Some(46), Some(42), Some(4))
        );
        let alias_stats = stats_once(c, alias, 8);
        assert_eq!(
            (alias_stats.total, alias_stats.human),
            (8, 8),
            "{alias_stats:?}"
        );
    }
    // The JSON API reads the same sums.
    let (status, _, body) = http("GET", &one.http_url(&format!("/api/v1/links/{code}/stats")));
    assert_eq!(status, 200, "{body}");
    let json: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        (json["total"].as_u64(), json["bot"].as_u64()),
        (Some(46), Some(4)),
        "{body}"
    );
    drop((c1, c2));
    assert!(one.stop().success());
    assert!(two.stop().success());
}

/// `kill -9` loses at most the clicks of the last flush interval, and
/// nothing is counted twice, read back through the wire after each
/// restart: clicks answered several intervals before the kill are all in
/// STATS, for a code and for an alias, cycle after cycle.
pub fn clicks_survive_kill_9_read_back_through_the_wire(bin: &Path) {
    let dir = tmp();
    let args = ["--stats-flush", "100ms", "--threads", "2"];
    let mut server = Server::start(bin, dir.path(), &args);
    let mut c = Client::connect(server.addr()).unwrap();
    let code = new_code(&mut c, "https://example.com/crash");
    let mut options = LinkOptions::default();
    options.alias = Some("crash-test");
    c.shorten_with("https://example.com/crash-alias", &options)
        .unwrap();
    drop(c);
    let (durable, maybe) = (40u64, 10u64);
    let mut sure = 0u64;
    for cycle in 0..2u64 {
        let http_addr = server.http_addr();
        for _ in 0..durable {
            visit(http_addr, "GET", &code, HUMAN, 302);
            visit(http_addr, "GET", "crash-test", HUMAN, 302);
        }
        // Several intervals: the writer has made these durable.
        std::thread::sleep(Duration::from_millis(1000));
        sure += durable;
        // These may or may not be in when the process dies.
        for _ in 0..maybe {
            visit(http_addr, "GET", &code, HUMAN, 302);
            visit(http_addr, "GET", "crash-test", HUMAN, 302);
        }
        server.kill9();
        server = Server::start(bin, dir.path(), &args);
        let mut c = Client::connect(server.addr()).unwrap();
        for name in [code.as_str(), "crash-test"] {
            let stats = c.stats(name, two_hours()).unwrap();
            let most = (cycle + 1) * (durable + maybe);
            assert!(
                (sure..=most).contains(&stats.total),
                "cycle {cycle}, {name}: {sure} durable clicks, at most {most}: {stats:?}"
            );
        }
    }
    assert!(server.stop().success());
}

// ----- engineer STATS6: Redis statistics reads off the core (issue 20) -----

/// The cluster node that serves `key` (a primary answers `EXISTS` for its
/// own slots, every other node `MOVED`).
fn node_serving(cluster: &crate::cluster::RedisCluster, key: &str) -> usize {
    (0..cluster.node_count())
        .find(|&i| {
            cluster
                .cli(i, &["exists", key])
                .is_some_and(|out| out.trim().parse::<u64>().is_ok())
        })
        .unwrap_or_else(|| panic!("no node serves {key}"))
}

/// A raw `GET /{code}` on a connection of its own: its status line.
fn status_of_visit(http_addr: std::net::SocketAddr, code: &str) -> String {
    let mut stream = std::net::TcpStream::connect(http_addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let request = format!("GET /{code} HTTP/1.1\r\nHost: s\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).unwrap();
    let mut reply = String::new();
    let _ = stream.read_to_string(&mut reply);
    reply.lines().next().unwrap_or_default().to_owned()
}

/// With a Redis store, a statistics read does not hold its core: while a
/// STATS waits on a stalled Redis node, a redirect on the same (only)
/// core is answered first, and the STATS is answered once the node
/// serves again. A read the store does not answer in time is an error
/// that says so (ERROR on the wire, `clicksError` in the API's link
/// view), never a hang. (The link's own key lives on another node than
/// its statistics, so only the statistics read stalls; before, the core
/// waited on it and the redirect came after the STATS.)
pub fn redis_stats_reads_leave_the_core_serving(bin: &Path) {
    let Some(cluster) = crate::cluster::or_skip(crate::cluster::RedisCluster::start(3)) else {
        return;
    };
    let store = cluster.seeds();
    let dir = tmp();
    let server = Server::start(
        bin,
        dir.path(),
        &[
            "--store",
            store.as_str(),
            "--store-timeout",
            "10s",
            "--store-cache-ttl",
            "120s",
            "--stats-flush",
            "50ms",
            "--threads",
            "1",
        ],
    );
    let mut c = Client::connect(server.addr()).unwrap();
    // A link served from the core's cache: its redirect needs no store.
    let cached = new_code(&mut c, "https://example.com/cached");
    visit(server.http_addr(), "GET", &cached, "", 302);
    // A link whose statistics live on another node than the link.
    let (code, stats_node) = (0..64)
        .find_map(|i| {
            let code = c
                .shorten_with(
                    &format!("https://example.com/apart/{i}"),
                    &LinkOptions::default(),
                )
                .unwrap()
                .code;
            let link_node = node_serving(&cluster, &format!("shorty:l:{code}"));
            let stats_node = node_serving(&cluster, &format!("{{{code}}}:clicks"));
            (link_node != stats_node).then_some((code, stats_node))
        })
        .expect("a link whose statistics live on another node");
    for _ in 0..3 {
        visit(server.http_addr(), "GET", &code, HUMAN, 302);
    }
    // In the store itself, not only in the core's pending clicks: a flush
    // still on its way when the node stalls could be applied after the
    // read (a rerun read 0).
    let clicks_key = format!("{{{code}}}:clicks");
    let deadline = Instant::now() + Duration::from_secs(10);
    while cluster
        .cli(stats_node, &["hget", &clicks_key, "human"])
        .is_none_or(|out| out.trim() != "3")
    {
        assert!(
            Instant::now() < deadline,
            "the clicks never reached the store"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(stats_once(&mut c, &code, 3).total, 3);

    // The statistics' node stalls for 4 s; the STATS goes out.
    cluster
        .cli(stats_node, &["client", "pause", "4000", "all"])
        .expect("CLIENT PAUSE");
    let (done_tx, done_rx) = std::sync::mpsc::channel();
    let addr = server.addr();
    let asked = code.clone();
    let reader = std::thread::spawn(move || {
        let mut c = Client::connect(addr).unwrap();
        let stats = c.stats(&asked, two_hours());
        let _ = done_tx.send(());
        stats
    });
    std::thread::sleep(Duration::from_millis(300));
    // Another request on the same core is answered while it is out.
    let status = status_of_visit(server.http_addr(), &cached);
    assert!(status.starts_with("HTTP/1.1 302 "), "{status}");
    assert!(
        done_rx.try_recv().is_err(),
        "the redirect waited for the statistics read: the core was blocked on the store"
    );
    let stats = reader.join().unwrap().expect("STATS once the node serves");
    assert_eq!((stats.total, stats.human), (3, 3), "{stats:?}");

    // Longer than a statistics read's bound (half of --store-timeout):
    // an error that says so, on the wire and in the API's link view.
    cluster
        .cli(stats_node, &["client", "pause", "8000", "all"])
        .expect("CLIENT PAUSE");
    let api_url = server.http_url(&format!("/api/v1/links/{code}"));
    let api = std::thread::spawn(move || http("GET", &api_url));
    let started = Instant::now();
    let err = c
        .stats(&code, two_hours())
        .expect_err("a STATS the store did not answer");
    assert!(
        err.to_string().contains("could not be read"),
        "{err} after {:?}",
        started.elapsed()
    );
    let (status, _, body) = api.join().unwrap();
    assert_eq!(status, 200, "{body}");
    let json: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert!(
        json["clicksError"]
            .as_str()
            .is_some_and(|e| e.contains("could not be read")),
        "{body}"
    );
    assert!(json["clicks"].is_null(), "{body}");
    // And the same core still redirects.
    let status = status_of_visit(server.http_addr(), &cached);
    assert!(status.starts_with("HTTP/1.1 302 "), "{status}");
    let _ = cluster.cli(stats_node, &["client", "unpause"]);
    drop(c);
    assert!(server.stop().success());
}

/// A single Redis that refuses writes once its `maxmemory` is set to 1
/// (`noeviction`: out of memory), and its URL; `None` where the harness
/// skips (no Redis outside CI).
fn refusable_redis() -> Option<(crate::cluster::Redis, String)> {
    let redis = crate::cluster::or_skip(crate::cluster::Redis::start(&[
        "--maxmemory-policy",
        "noeviction",
    ]))?;
    let url = redis.url();
    Some((redis, url))
}

/// A one-core server's arguments, its clicks flushed every 10 ms to the
/// single Redis at `url`.
fn one_core_flushing_to(url: &str) -> [&str; 8] {
    [
        "--threads",
        "1",
        "--stats-flush",
        "10ms",
        "--store",
        url,
        "--store-replicas",
        "0",
    ]
}

/// Clicks a Redis refuses to store (out of memory) are still in every
/// read while the writer holds them for the next flush, and stay there
/// once it stores them: a count never goes down and up again. Before, the
/// core let go of a refused flush's clicks as soon as the writer had tried
/// it, and reads lacked them until the store took writes again (a Redis
/// Cluster failover does the same with `CLUSTERDOWN`; CI once read STATS
/// 49, then INFO 48).
pub fn clicks_a_full_redis_refuses_are_read_back_until_it_stores_them(bin: &Path) {
    let Some((redis, url)) = refusable_redis() else {
        return;
    };
    let dir = tmp();
    let args = one_core_flushing_to(&url);
    let server = Server::start(bin, dir.path(), &args);
    let mut c = Client::connect(server.addr()).unwrap();
    let code = new_code(&mut c, "https://example.com/refused");
    let http_addr = server.http_addr();
    let read_back = |c: &mut Client, made: u64, when: &str| {
        let stats = c.stats(&code, two_hours()).unwrap();
        assert_eq!(stats.total, made, "STATS {when}: {stats:?}");
        let info = c.info(&code).unwrap();
        assert_eq!(info.clicks_total, Some(made), "INFO {when}");
    };
    for made in 1..=3 {
        visit(http_addr, "GET", &code, HUMAN, 302);
        read_back(&mut c, made, "before the store is full");
    }
    redis.must(&["CONFIG", "SET", "maxmemory", "1"]);
    for made in 4..=8 {
        visit(http_addr, "GET", &code, HUMAN, 302);
        // Several flushes refused meanwhile.
        std::thread::sleep(Duration::from_millis(50));
        read_back(&mut c, made, "while the store refuses them");
    }
    redis.must(&["CONFIG", "SET", "maxmemory", "0"]);
    // The writer retries within a second; every read meanwhile and after
    // says 8, and the store ends up holding all of them.
    let deadline = Instant::now() + Duration::from_secs(3);
    while Instant::now() < deadline {
        read_back(&mut c, 8, "once the store takes writes again");
        std::thread::sleep(Duration::from_millis(20));
    }
    drop(c);
    assert!(server.stop().success());
    let server = Server::start(bin, dir.path(), &args);
    let mut c = Client::connect(server.addr()).unwrap();
    read_back(&mut c, 8, "after a restart");
}

/// A clean stop while a Redis refuses the counts (out of memory) retries
/// them for a few seconds (`STOP_RETRY_FOR`, a second apart): a store back within
/// them gets every click; one still refusing after them loses those
/// counts, and the log says so (review 20: a stop dropped them after a
/// last "kept for the next flush", silently).
pub fn clicks_refused_at_a_stop_are_retried_then_reported_lost(bin: &Path) {
    let Some((redis, url)) = refusable_redis() else {
        return;
    };
    let dir = tmp();
    let args = one_core_flushing_to(&url);
    let mut server = Server::start(bin, dir.path(), &args);
    let mut c = Client::connect(server.addr()).unwrap();
    let code = new_code(&mut c, "https://example.com/stopped");
    let http_addr = server.http_addr();
    let clicks = |n: u64| {
        for _ in 0..n {
            visit(http_addr, "GET", &code, HUMAN, 302);
        }
    };
    clicks(2);
    assert_eq!(stats_once(&mut c, &code, 2).total, 2);
    redis.must(&["CONFIG", "SET", "maxmemory", "1"]);
    clicks(3);
    // Refused by a flush or two before the stop.
    std::thread::sleep(Duration::from_millis(100));
    drop(c);
    server.terminate();
    std::thread::sleep(Duration::from_millis(1500));
    redis.must(&["CONFIG", "SET", "maxmemory", "0"]);
    assert!(server.wait(Duration::from_secs(20)).success());
    assert!(!server.log().contains("lost"), "{}", server.log());
    let mut server = Server::start(bin, dir.path(), &args);
    let mut c = Client::connect(server.addr()).unwrap();
    assert_eq!(
        c.stats(&code, two_hours()).unwrap().total,
        5,
        "the store back within the stop's retries has every click"
    );
    // Still refusing after them: lost, and said.
    redis.must(&["CONFIG", "SET", "maxmemory", "1"]);
    let http_addr = server.http_addr();
    for _ in 0..2 {
        visit(http_addr, "GET", &code, HUMAN, 302);
    }
    std::thread::sleep(Duration::from_millis(100));
    drop(c);
    server.terminate();
    assert!(server.wait(Duration::from_secs(20)).success());
    let log = server.log();
    assert!(
        log.contains("click counts of 1 links that the store still refuses"),
        "{log}"
    );
    redis.must(&["CONFIG", "SET", "maxmemory", "0"]);
    let mut server = Server::start(bin, dir.path(), &args);
    let mut c = Client::connect(server.addr()).unwrap();
    assert_eq!(c.stats(&code, two_hours()).unwrap().total, 5);
    // A second signal exits without the retries, and says what it loses
    // (review 20b: it said nothing).
    redis.must(&["CONFIG", "SET", "maxmemory", "1"]);
    visit(server.http_addr(), "GET", &code, HUMAN, 302);
    std::thread::sleep(Duration::from_millis(100));
    drop(c);
    server.terminate();
    std::thread::sleep(Duration::from_millis(300));
    server.terminate();
    let _ = server.wait(Duration::from_secs(5));
    let log = server.log();
    assert!(
        log.contains("exiting with the click counts of 1 links that the store refused"),
        "{log}"
    );
    // A store gone altogether: the retries are bounded in time, not in
    // tries (review 20b: each try took 5 s against a dead Redis, and the
    // stop 31 s).
    redis.must(&["CONFIG", "SET", "maxmemory", "0"]);
    let mut server = Server::start(bin, dir.path(), &args);
    redis.must(&["CONFIG", "SET", "maxmemory", "1"]);
    visit(server.http_addr(), "GET", &code, HUMAN, 302);
    std::thread::sleep(Duration::from_millis(100));
    drop(redis);
    let stopping = Instant::now();
    server.terminate();
    assert!(server.wait(Duration::from_secs(30)).success());
    assert!(
        stopping.elapsed() < Duration::from_secs(15),
        "a stop with the store gone took {:?}",
        stopping.elapsed()
    );
    assert!(server.log().contains("they are lost"), "{}", server.log());
}

// ----- lead: the stats writer after a failover and a fail-back (review 24) -----

/// Clicks reach a Redis Cluster after a primary failed over to its
/// replica, came back as a replica and took its slots back (`CLUSTER
/// FAILOVER`), with clicks flowing throughout: every link's clicks made
/// after that are in the store within seconds. (Review 24: the stats
/// writer's cluster connection began a slot refresh that never ended;
/// every flush timed out, nothing reached Redis for minutes, and the
/// counts were lost as "unanswered".)
pub fn redis_cluster_clicks_are_stored_after_a_fail_back(bin: &Path) {
    let Some(mut cluster) = crate::cluster::or_skip(crate::cluster::RedisCluster::start(3)) else {
        return;
    };
    let store = cluster.seeds();
    let dir = tmp();
    let server = Server::start(
        bin,
        dir.path(),
        &[
            "--store",
            store.as_str(),
            "--store-timeout",
            "1s",
            "--stats-flush",
            "100ms",
            "--threads",
            "1",
        ],
    );
    let mut c = Client::connect(server.addr()).unwrap();
    let codes: Vec<String> = (0..24)
        .map(|i| new_code(&mut c, &format!("https://example.com/fail-back/{i}")))
        .collect();
    let http_addr = server.http_addr();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let clicking = {
        let (stop, codes) = (stop.clone(), codes.clone());
        std::thread::spawn(move || {
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                for code in &codes {
                    let mut stream = std::net::TcpStream::connect(http_addr).unwrap();
                    let request = format!(
                        "GET /{code} HTTP/1.1\r\nHost: s\r\nConnection: close\r\n{HUMAN}\r\n"
                    );
                    stream.write_all(request.as_bytes()).unwrap();
                    let _ = stream.read_to_end(&mut Vec::new());
                }
            }
        })
    };
    let primary = cluster.a_primary();
    let replica = cluster.replica_of(primary);
    cluster.kill9(primary);
    cluster.wait_until_primary(replica).unwrap();
    cluster.restart(primary).unwrap();
    cluster.wait_until_replicated().unwrap();
    let out = cluster.cli(primary, &["cluster", "failover"]);
    assert!(out.is_some_and(|o| o.contains("OK")), "CLUSTER FAILOVER");
    cluster.wait_until_primary(primary).unwrap();
    std::thread::sleep(Duration::from_secs(2));
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    clicking.join().unwrap();
    // What the store holds now (clicks of the failover itself may be lost
    // as unanswered, and refused ones may still arrive: only a lower
    // bound is asserted), then two clicks each.
    let human = |code: &str| -> u64 {
        cluster
            .hget(&format!("{{{code}}}:clicks"), "human")
            .map_or(0, |n| n.parse().unwrap())
    };
    let before: Vec<u64> = codes.iter().map(|code| human(code)).collect();
    for code in &codes {
        visit(http_addr, "GET", code, HUMAN, 302);
        visit(http_addr, "GET", code, HUMAN, 302);
    }
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let missing: Vec<(&String, u64, u64)> = codes
            .iter()
            .zip(&before)
            .map(|(code, &b)| (code, b, human(code)))
            .filter(|&(_, b, now)| now < b + 2)
            .collect();
        if missing.is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "clicks not in the store 20 s after they were made: (code, before, now) \
             {missing:?}\n{}",
            server.log()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    drop(c);
    assert!(server.stop().success());
}
