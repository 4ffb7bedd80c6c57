//! Engineer LIFE's cases (issue 19's review leftovers): click limits that
//! outlive the process, across nodes of a Redis store.

use std::path::Path;
use std::time::Duration;

use shorty_client::{Client, LinkOptions};

use crate::cases::{http, tmp};
use crate::harness::Server;

fn limited(server: &Server, alias: &str, max: u64) {
    let mut options = LinkOptions::default();
    options.alias = Some(alias);
    options.max_clicks = Some(max);
    Client::connect(server.addr())
        .expect("connect")
        .shorten_with("https://example.com/limited", &options)
        .expect("shorten");
}

/// The statuses of `n` HTTP GETs of `/code`.
fn clicks(server: &Server, code: &str, n: usize) -> Vec<u16> {
    (0..n)
        .map(|_| http("GET", &server.http_url(&format!("/{code}"))).0)
        .collect()
}

/// Review F3: a restart gives a max-clicks link none of its clicks back.
/// A clean stop (SIGTERM) saves every count; a kill -9 loses at most the
/// clicks of the last `--stats-flush` interval (here none: it comes long
/// after the clicks).
pub fn click_limits_survive_sigterm_and_kill_9(bin: &Path) {
    let dir = tmp();
    let args = ["--stats-flush", "50ms"];
    let server = Server::start(bin, dir.path(), &args);
    limited(&server, "five-term", 5);
    limited(&server, "five-kill", 5);
    assert_eq!(clicks(&server, "five-term", 3), [302; 3]);
    assert!(server.stop().success());

    let server = Server::start(bin, dir.path(), &args);
    assert_eq!(
        clicks(&server, "five-term", 3),
        [302, 302, 410],
        "after SIGTERM, 2 clicks are left"
    );
    assert_eq!(clicks(&server, "five-kill", 3), [302; 3]);
    // Many intervals: the count is durable before the kill.
    std::thread::sleep(Duration::from_millis(1000));
    server.kill9();

    let server = Server::start(bin, dir.path(), &args);
    assert_eq!(
        clicks(&server, "five-kill", 3),
        [302, 302, 410],
        "after kill -9, 2 clicks are left"
    );
    assert_eq!(clicks(&server, "five-term", 1), [410]);
}

/// Review: with a Redis store each node counted a link's clicks alone, so
/// N nodes served up to N × max-clicks. Now the count is in the store:
/// two nodes on a Redis Cluster, clicked alternately, serve exactly
/// max-clicks redirects between them, then 410 (a RESOLVE too).
pub fn redis_click_limits_are_exact_across_nodes(bin: &Path) {
    let Some(cluster) = crate::cluster::or_skip(crate::cluster::RedisCluster::start(3)) else {
        return;
    };
    let seeds = cluster.seeds();
    let args = [
        "--store",
        seeds.as_str(),
        "--store-timeout",
        "2s",
        "--alias-quarantine",
        "300ms",
        // Another node's delete is seen within this (and the sleep below).
        "--store-cache-ttl",
        "200ms",
    ];
    let (d1, d2) = (tmp(), tmp());
    let nodes = [
        Server::start(bin, d1.path(), &args),
        Server::start(bin, d2.path(), &args),
    ];
    limited(&nodes[0], "four-everywhere", 4);
    let statuses: Vec<u16> = (0..8)
        .map(|i| clicks(&nodes[i % 2], "four-everywhere", 1)[0])
        .collect();
    assert_eq!(statuses, [302, 302, 302, 302, 410, 410, 410, 410]);
    for node in &nodes {
        let reply = node.connect().resolve("four-everywhere");
        assert_eq!(reply.as_error().map(|(c, _)| c.0), Some(410), "{reply:?}");
    }
    // Deleted and claimed again after its quarantine, the alias is a new
    // link with a count of its own.
    Client::connect(nodes[1].addr())
        .expect("connect")
        .delete("four-everywhere")
        .expect("delete");
    std::thread::sleep(Duration::from_millis(600));
    limited(&nodes[1], "four-everywhere", 2);
    let statuses: Vec<u16> = (0..4)
        .map(|i| clicks(&nodes[i % 2], "four-everywhere", 1)[0])
        .collect();
    assert_eq!(statuses, [302, 302, 410, 410], "the new link's own clicks");
}
