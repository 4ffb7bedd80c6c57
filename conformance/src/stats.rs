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
    // The JSON API (what the page shows) reads the same numbers.
    let (status, _, body) = http("GET", &server.http_url(&format!("/api/v1/links/{alias}")));
    assert_eq!(status, 200, "{body}");
    let json: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(json["clicks"]["total"], 8, "{body}");
    let (status, _, body) = http(
        "GET",
        &server.http_url(&format!("/api/v1/links/{alias}/stats")),
    );
    assert_eq!(status, 200, "{body}");
    let json: serde_json::Value = serde_json::from_str(&body).unwrap();
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
