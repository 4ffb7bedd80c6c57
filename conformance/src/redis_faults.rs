//! The Redis fault matrix: the Redis store against real `redis-server`s
//! put in the states operators meet (out of memory, a failing disk, too
//! few replicas, a demoted primary, a lagging replica, a seed that is
//! down). Each case starts its own Redis (or Redis Cluster) on free ports.
//!
//! The oracle is the same for every fault: **no SHORTEN is acknowledged
//! unless its link is stored** (read back from Redis directly, not
//! through Shorty), and **no acknowledged link ever answers 404** through
//! the node. A refused SHORTEN must be a 503 (retryable), never silence.
//!
//! Where `redis-server` is missing a case says SKIPPED, except under CI
//! (`CI` set), where it fails ([`crate::cluster::or_skip`]).

use std::path::Path;
use std::time::Duration;

use bytes::Bytes;
use shorty_protocol::{ErrorCode, Reply, Request};

use crate::cluster::{or_skip, Redis, RedisCluster};
use crate::harness::{run_to_exit, Server};
use crate::wire::code_of;

// ----- engineer KEYS (issue 21) -----
pub use crate::keys::{
    redis_disable_destination_reaches_every_node,
    redis_keys_are_shared_by_every_node_and_revoked_on_all,
};

/// Where the store keeps a link (the layout documented in the runtime's
/// `redis_store`, which operators read with `redis-cli`).
const LINK_PREFIX: &str = "shorty:l:";

/// SHORTENs sent before reading their replies (pipelined, to keep the
/// cases quick).
const BATCH: usize = 16;

/// What a run of SHORTENs got.
#[derive(Debug, Default)]
struct Outcome {
    /// `(code, url)` of every acknowledged SHORTEN.
    acked: Vec<(String, String)>,
    /// SHORTENs answered 503, with the last message.
    refused: usize,
    last_refusal: String,
}

/// Sends `count` SHORTENs of distinct URLs of about `url_bytes` bytes,
/// pipelined in batches, and sorts the replies. Any reply other than a
/// short URL or a 503 fails the test.
fn shorten_many(server: &Server, tag: &str, count: usize, url_bytes: usize) -> Outcome {
    let mut conn = server.connect();
    let mut outcome = Outcome::default();
    let pad = "x".repeat(url_bytes.saturating_sub(40));
    let mut sent = 0;
    while sent < count {
        let batch: Vec<String> = (sent..count.min(sent + BATCH))
            .map(|i| format!("https://example.com/{tag}/{i}/{pad}"))
            .collect();
        for url in &batch {
            conn.send(Request::Shorten(url.as_bytes()));
        }
        for url in batch {
            match conn.reply() {
                Reply::Shortened(short) => {
                    let short = String::from_utf8(short.to_vec()).unwrap();
                    outcome.acked.push((code_of(&short).to_owned(), url));
                }
                reply => match reply.as_error() {
                    Some((ErrorCode::OVERLOADED, message)) => {
                        outcome.refused += 1;
                        message.clone_into(&mut outcome.last_refusal);
                    }
                    _ => panic!("SHORTEN answered {reply:?}"),
                },
            }
            sent += 1;
        }
    }
    outcome
}

/// The oracle: every acknowledged link is in the store (`stored` reads a
/// key straight from Redis) and resolves through `server` to its URL.
fn every_acked_link_is_stored(
    server: &Server,
    acked: &[(String, String)],
    stored: impl Fn(&str) -> Option<String>,
) {
    let mut conn = server.connect();
    for (code, url) in acked {
        assert_eq!(
            stored(&format!("{LINK_PREFIX}{code}")).as_deref(),
            Some(url.as_str()),
            "{code} was acknowledged but Redis does not hold its URL"
        );
        assert_eq!(
            conn.resolve(code),
            Reply::Resolved(Bytes::from(url.clone())),
            "{code} was acknowledged"
        );
    }
}

// ----- engineer LIST: the listing with Redis (issue 21) -----
pub use crate::listing::redis_cluster_lists_each_keys_links;

fn node(binary: &Path, dir: &Path, store: &str, args: &[&str]) -> Server {
    let mut all = vec![
        "--store",
        store,
        "--store-timeout",
        "1s",
        "--cache-bytes",
        "0",
    ];
    all.extend_from_slice(args);
    Server::start(binary, dir, &all)
}

fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while !done() {
        assert!(std::time::Instant::now() < deadline, "{what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A single Redis with no replica and the default `--store-replicas 1`
/// could never confirm a SHORTEN: the node refuses to start, naming the
/// flag, instead of answering every SHORTEN 503. With
/// `--store-replicas 0` it serves.
pub fn redis_single_without_replicas_is_refused_unless_asked_for(binary: &Path) {
    let Some(redis) = or_skip(Redis::start(&[])) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let url = redis.url();
    let (status, out) = run_to_exit(
        binary,
        &[
            "--listen",
            "127.0.0.1:0",
            "--http",
            "127.0.0.1:0",
            "--admin",
            "off",
            "--data-dir",
            dir.path().to_str().unwrap(),
            "--store",
            &url,
        ],
        Duration::from_secs(15),
    );
    assert!(!status.success(), "{out}");
    assert!(out.contains("--store-replicas"), "{out}");

    let server = node(binary, dir.path(), &url, &["--store-replicas", "0"]);
    let outcome = shorten_many(&server, "single", 20, 100);
    assert_eq!(outcome.acked.len(), 20, "{outcome:?}");
    every_acked_link_is_stored(&server, &outcome.acked, |k| redis.get(k));
}

/// A single Redis with a replica serves with the default
/// `--store-replicas 1`; once the replica is gone a SHORTEN is refused
/// with a message that says it was not confirmed, not that the store did
/// not answer.
pub fn redis_single_with_a_replica_confirms_or_says_why_not(binary: &Path) {
    let Some(primary) = or_skip(Redis::start(&[])) else {
        return;
    };
    let mut replica = Redis::start(&[]).unwrap();
    replica.replicate(&primary);
    let dir = tempfile::tempdir().unwrap();
    let server = node(binary, dir.path(), &primary.url(), &[]);
    let outcome = shorten_many(&server, "replicated", 20, 100);
    assert_eq!(outcome.acked.len(), 20, "{outcome:?}");
    every_acked_link_is_stored(&server, &outcome.acked, |k| replica.get(k));

    replica.kill9();
    let outcome = shorten_many(&server, "unconfirmed", 2, 100);
    assert_eq!(outcome.refused, 2, "{outcome:?}");
    assert!(
        outcome.last_refusal.contains("not confirmed by 1 replica"),
        "{outcome:?}"
    );
}

/// Out of memory (`maxmemory` + `noeviction`): the `SET` fails with OOM
/// while the `WAIT` after it still counts the replica. No such SHORTEN is
/// acknowledged.
pub fn redis_out_of_memory_acknowledges_nothing_unstored(binary: &Path) {
    let Some(primary) = or_skip(Redis::start(&[
        "--maxmemory",
        "3mb",
        "--maxmemory-policy",
        "noeviction",
    ])) else {
        return;
    };
    let replica = Redis::start(&[]).unwrap();
    replica.replicate(&primary);
    let dir = tempfile::tempdir().unwrap();
    let server = node(binary, dir.path(), &primary.url(), &[]);
    // 4 KB URLs: 3 MB fills within about 700 of them.
    let outcome = shorten_many(&server, "oom", 1500, 4096);
    every_acked_link_is_stored(&server, &outcome.acked, |k| primary.get(k));
    assert!(outcome.refused > 0, "the store never filled: {outcome:?}");
    assert!(!outcome.acked.is_empty());
    // A store that refuses writes is not ready for new links: a load
    // balancer must be told, not sent on with SHORTENs that all fail.
    // (Near the limit Redis takes some writes and refuses others as its
    // buffers move; well past it, it refuses every write.)
    primary.must(&["CONFIG", "SET", "maxmemory", "1mb"]);
    let refused = shorten_many(&server, "oom-refused", 3, 100);
    assert!(refused.acked.is_empty(), "{refused:?}");
    let health = server.http_url("/healthz");
    let (status, _, body) = crate::cases::http("GET", &health);
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("refuses writes"), "{body}");
    // A node (re)started while the store refuses writes says so too: its
    // first id block is refused (the id counter's INCRBY).
    assert!(server.stop().success());
    let server = node(binary, dir.path(), &primary.url(), &[]);
    let refused = shorten_many(&server, "oom-restarted", 2, 100);
    assert!(refused.acked.is_empty(), "{refused:?}");
    let health = server.http_url("/healthz");
    let (status, _, body) = crate::cases::http("GET", &health);
    assert_eq!(status, 503, "after a restart: {body}");
    assert!(body.contains("refuses writes"), "{body}");
    // Memory freed: the idle probe sees writes taken again, without a
    // SHORTEN and without a restart.
    primary.must(&["CONFIG", "SET", "maxmemory", "0"]);
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while crate::cases::http("GET", &health).0 != 200 {
        assert!(
            std::time::Instant::now() < deadline,
            "still not ready 10 s after the store took writes again"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let after = shorten_many(&server, "oom-after", 5, 4096);
    assert_eq!(after.acked.len(), 5, "{after:?}");
    every_acked_link_is_stored(&server, &after.acked, |k| primary.get(k));
    primary.must(&["CONFIG", "SET", "maxmemory", "3mb"]);

    // `import --store` into the full store: whatever it reports imported
    // is stored.
    let links: Vec<(String, String)> = (0..20)
        .map(|i| {
            (
                format!("Imp{i:04}"),
                format!("https://example.com/imported/{i}"),
            )
        })
        .collect();
    let dump = dir.path().join("links.jsonl");
    let lines: String = links
        .iter()
        .map(|(code, url)| format!("{{\"code\":\"{code}\",\"url\":\"{url}\"}}\n"))
        .collect();
    std::fs::write(&dump, lines).unwrap();
    let (status, out) = run_to_exit(
        binary,
        &["import", "--store", &primary.url(), dump.to_str().unwrap()],
        Duration::from_secs(30),
    );
    if status.success() {
        for (code, url) in &links {
            assert_eq!(
                primary.get(&format!("{LINK_PREFIX}{code}")).as_deref(),
                Some(url.as_str()),
                "import said it succeeded ({out}) but {code} is not stored"
            );
        }
    }
}

/// A failing disk (`MISCONF`: the last RDB save failed and
/// `stop-writes-on-bgsave-error` is on): no SHORTEN is acknowledged, and
/// once saving works again SHORTENs are taken again.
pub fn redis_failing_disk_acknowledges_nothing_unstored(binary: &Path) {
    let Some(redis) = or_skip(Redis::start(&[
        "--appendonly",
        "no",
        "--save",
        "3600 1",
        "--enable-protected-configs",
        "yes",
    ])) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let server = node(binary, dir.path(), &redis.url(), &["--store-replicas", "0"]);
    let before = shorten_many(&server, "misconf-before", 5, 100);
    assert_eq!(before.acked.len(), 5, "{before:?}");

    // Saving into /proc fails, even for root.
    let home = redis.must(&["config", "get", "dir"]);
    let home = home.lines().nth(1).unwrap().to_owned();
    redis.must(&["config", "set", "dir", "/proc"]);
    redis.must(&["bgsave"]);
    wait_until("the save did not fail", || {
        redis
            .cli(&["info", "persistence"])
            .is_some_and(|o| o.contains("rdb_last_bgsave_status:err"))
    });
    let during = shorten_many(&server, "misconf", 10, 100);
    every_acked_link_is_stored(&server, &during.acked, |k| redis.get(k));
    assert!(during.refused > 0, "writes were never refused: {during:?}");

    redis.must(&["config", "set", "dir", &home]);
    redis.must(&["bgsave"]);
    wait_until("the save did not succeed", || {
        redis
            .cli(&["info", "persistence"])
            .is_some_and(|o| o.contains("rdb_last_bgsave_status:ok"))
    });
    let after = shorten_many(&server, "misconf-after", 5, 100);
    assert_eq!(after.acked.len(), 5, "{after:?}");
    for outcome in [before, during, after] {
        every_acked_link_is_stored(&server, &outcome.acked, |k| redis.get(k));
    }
}

/// Too few replicas for `min-replicas-to-write` (`NOREPLICAS`): even with
/// `--store-replicas 0`, where `WAIT 0` proves nothing, no SHORTEN is
/// acknowledged.
pub fn redis_too_few_replicas_acknowledges_nothing_unstored(binary: &Path) {
    let Some(redis) = or_skip(Redis::start(&[])) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let server = node(binary, dir.path(), &redis.url(), &["--store-replicas", "0"]);
    let before = shorten_many(&server, "noreplicas-before", 5, 100);
    assert_eq!(before.acked.len(), 5, "{before:?}");
    redis.must(&["config", "set", "min-replicas-to-write", "1"]);
    let during = shorten_many(&server, "noreplicas", 10, 100);
    for outcome in [&before, &during] {
        every_acked_link_is_stored(&server, &outcome.acked, |k| redis.get(k));
    }
    assert_eq!(during.refused, 10, "{during:?}");
}

/// The store's node demoted to a replica behind the node's back (a manual
/// failover): writes answer `READONLY`, and `WAIT` on a replica is an
/// error. No SHORTEN is acknowledged; every link made before still
/// resolves (reads from the replica).
pub fn redis_demoted_primary_acknowledges_nothing_unstored(binary: &Path) {
    let Some(old) = or_skip(Redis::start(&[])) else {
        return;
    };
    let new = Redis::start(&[]).unwrap();
    new.replicate(&old);
    let dir = tempfile::tempdir().unwrap();
    let server = node(binary, dir.path(), &old.url(), &["--store-replicas", "0"]);
    let before = shorten_many(&server, "readonly-before", 10, 100);
    assert_eq!(before.acked.len(), 10, "{before:?}");
    // Let the replica catch up, then swap the roles.
    old.must(&["wait", "1", "5000"]);
    wait_until("the replica did not catch up", || {
        before
            .acked
            .iter()
            .all(|(code, _)| new.get(&format!("{LINK_PREFIX}{code}")).is_some())
    });
    new.must(&["replicaof", "no", "one"]);
    old.replicate(&new);
    let during = shorten_many(&server, "readonly", 10, 100);
    for outcome in [&before, &during] {
        every_acked_link_is_stored(&server, &outcome.acked, |k| new.get(k));
    }
    assert_eq!(during.refused, 10, "{during:?}");
}

/// `--store-read-replicas` with replicas that lag (`CLIENT PAUSE WRITE`
/// stops a replica applying its primary's stream, not answering reads): a
/// link just acknowledged is not on the replica yet, and must be read from
/// the primary, not answered 404.
pub fn redis_lagging_read_replicas_never_make_a_link_404(binary: &Path) {
    let Some(cluster) = or_skip(RedisCluster::start(3)) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let server = node(
        binary,
        dir.path(),
        &cluster.seeds(),
        &["--store-read-replicas", "--store-replicas", "0"],
    );
    for replica in cluster.replicas() {
        cluster
            .cli(replica, &["client", "pause", "15000", "write"])
            .expect("CLIENT PAUSE");
    }
    let outcome = shorten_many(&server, "lagging", 30, 100);
    assert_eq!(outcome.acked.len(), 30, "{outcome:?}");

    every_acked_link_is_stored(&server, &outcome.acked, |k| cluster.get(k));
    for replica in cluster.replicas() {
        let _ = cluster.cli(replica, &["client", "unpause"]);
    }
}

/// A cluster node down, and it is the first `--store` seed: a Shorty node
/// restarted meanwhile (the README's remedy) starts from any other seed,
/// resolves every link and takes new ones; `export --store` still covers
/// everything. With a shard that has no primary at all, `export` fails
/// rather than skip the shard's links.
pub fn redis_cluster_node_down_at_start_and_export(binary: &Path) {
    let Some(mut cluster) = or_skip(RedisCluster::start(3)) else {
        return;
    };
    let victim = cluster.a_primary();
    let seeds = cluster.seeds_from(victim);
    let dir = tempfile::tempdir().unwrap();
    let server = node(binary, dir.path(), &seeds, &[]);
    let before = shorten_many(&server, "seed-down-before", 30, 100);
    assert_eq!(before.acked.len(), 30, "{before:?}");
    assert!(server.stop().success());

    let promoted = cluster.replica_of(victim);
    cluster.kill9(victim);
    cluster.wait_until_primary(promoted).unwrap();
    let server = node(binary, dir.path(), &seeds, &[]);
    let after = shorten_many(&server, "seed-down-after", 30, 100);
    // The promoted replica has no replica of its own: codes that land on
    // its shard cannot be confirmed, and the node moves on to another.
    assert!(!after.acked.is_empty(), "{after:?}");
    for outcome in [&before, &after] {
        every_acked_link_is_stored(&server, &outcome.acked, |k| cluster.get(k));
    }
    let timeout = Duration::from_secs(30);
    let (status, out) = run_to_exit(binary, &["export", "--store", &seeds, "-"], timeout);
    assert!(status.success(), "{out}");
    for (code, url) in before.acked.iter().chain(&after.acked) {
        assert!(
            out.contains(&format!("{{\"code\":\"{code}\",\"url\":\"{url}\"}}")),
            "{code} missing from the export"
        );
    }

    // Now the shard loses its last node: its slots have no primary. The
    // rest keep serving (as operators often configure), so an export that
    // skipped the shard would succeed with links missing.
    for i in 0..cluster.node_count() {
        let _ = cluster.cli(i, &["config", "set", "cluster-require-full-coverage", "no"]);
    }
    cluster.kill9(promoted);
    cluster.wait_until_flagged_failed(promoted).unwrap();
    let (status, out) = run_to_exit(binary, &["export", "--store", &seeds, "-"], timeout);
    assert!(!status.success(), "{out}");
    assert!(out.contains("slot"), "{out}");
}

// ----- engineer REDIS (issue 19, Redis store) -----

/// A link with options as the Redis store lays it out (the runtime's
/// `redis_link`): `0x01`, the version in 16 hex digits, the URL's `u32`
/// length, the URL, the option TLVs. Written here independently, as an
/// operator's tool would, so a change of the layout fails this case.
fn link_value(version: u64, url: &str, meta: &shorty_service::link::LinkMeta) -> Vec<u8> {
    let mut value = vec![1];
    value.extend_from_slice(format!("{version:016x}").as_bytes());
    value.extend_from_slice(&(url.len() as u32).to_le_bytes());
    value.extend_from_slice(url.as_bytes());
    meta.encode(&mut value);
    value
}

/// `SET name value` with a binary value (`redis-cli -x` reads it from
/// standard input).
fn set_binary(redis: &Redis, name: &str, value: &[u8]) {
    use std::io::Write;
    let mut child = std::process::Command::new("redis-cli")
        .args(["-p", &redis.port().to_string(), "-x", "SET", name])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("redis-cli");
    child.stdin.take().unwrap().write_all(value).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("OK"),
        "SET {name}: {out:?}"
    );
}

/// The lifecycle's values in Redis are judged alike by every node, on both
/// backends: an expired link is 410 on HTTP (or a redirect to its
/// expired-URL) and ERROR 410 on the wire, a disabled one 410, a link's
/// own redirect status is used, a deleted link (tombstone) is 404, and a
/// link deleted behind a node's back stops redirecting there within
/// `--store-cache-ttl` although the node cached it.
pub fn redis_lifecycle_values_are_judged_alike_on_every_node(binary: &Path) {
    use shorty_service::link::LinkMeta;
    let Some(redis) = or_skip(Redis::start(&[])) else {
        return;
    };
    let long_ago = LinkMeta {
        expires_at_ms: Some(1),
        ..LinkMeta::default()
    };
    set_binary(
        &redis,
        "shorty:l:gone-1",
        &link_value(0, "https://e.com/g", &long_ago),
    );
    let over = LinkMeta {
        expired_url: Some("https://e.com/over".into()),
        ..long_ago.clone()
    };
    set_binary(
        &redis,
        "shorty:l:moved-1",
        &link_value(3, "https://e.com/m", &over),
    );
    let off = LinkMeta {
        disabled: true,
        ..LinkMeta::default()
    };
    set_binary(
        &redis,
        "shorty:l:off-1",
        &link_value(1, "https://e.com/o", &off),
    );
    let permanent = LinkMeta {
        redirect_status: Some(301),
        ..LinkMeta::default()
    };
    set_binary(
        &redis,
        "shorty:l:perm-1",
        &link_value(2, "https://e.com/p", &permanent),
    );
    let mut tombstone = vec![2];
    tombstone.extend_from_slice(b"0000000000000004");
    set_binary(&redis, "shorty:l:dead-1", &tombstone);
    redis.must(&["SET", "shorty:l:Abc1234", "https://e.com/plain"]);

    let dirs = [tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap()];
    let nodes: Vec<Server> = dirs
        .iter()
        .map(|dir| {
            let args = [
                "--store",
                &redis.url(),
                "--store-replicas",
                "0",
                "--store-cache-ttl",
                "300ms",
                // One core: the second GET meets the cache the first filled.
                "--threads",
                "1",
            ];
            Server::start(binary, dir.path(), &args)
        })
        .collect();
    for server in &nodes {
        let get = |code: &str| crate::cases::http("GET", &server.http_url(&format!("/{code}")));
        let (status, _, body) = get("gone-1");
        assert_eq!(status, 410, "{body}");
        assert!(body.contains("This link has expired"), "{body}");
        let (status, location, _) = get("moved-1");
        assert_eq!(
            (status, location.as_deref()),
            (302, Some("https://e.com/over"))
        );
        let (status, _, body) = get("off-1");
        assert_eq!(status, 410);
        assert!(body.contains("disabled"), "{body}");
        let (status, location, _) = get("perm-1");
        assert_eq!(
            (status, location.as_deref()),
            (301, Some("https://e.com/p"))
        );
        assert_eq!(get("dead-1").0, 404);
        let mut conn = server.connect();
        let reply = conn.resolve("gone-1");
        assert_eq!(
            reply.as_error().map(|(c, _)| c),
            Some(ErrorCode(410)),
            "{reply:?}"
        );
        assert_eq!(get("Abc1234").0, 302, "cached now");
    }
    // Deleted behind the nodes' backs (as another node's DELETE does).
    set_binary(&redis, "shorty:l:Abc1234", &tombstone);
    std::thread::sleep(Duration::from_millis(600));
    for server in &nodes {
        let url = server.http_url("/Abc1234");
        assert_eq!(crate::cases::http("GET", &url).0, 404, "a stale cache");
    }
}

// ----- engineer LIFE: click limits across nodes (issue 19) -----
pub use crate::life::redis_click_limits_are_exact_across_nodes;

// ----- lead: a restarted Redis (review 4, F1) -----

/// A single Redis that restarts (kill -9, then back with its AOF) is
/// served again without restarting the node: links made before and after
/// resolve, SHORTEN is acknowledged again and `/healthz` says ready. (A
/// bare multiplexed connection answered "broken pipe" for ever.)
pub fn redis_single_restarted_is_served_again(binary: &Path) {
    let Some(mut redis) = or_skip(Redis::start(&[])) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let server = node(binary, dir.path(), &redis.url(), &["--store-replicas", "0"]);
    let before = shorten_many(&server, "before", 3, 60);
    assert_eq!(before.acked.len(), 3, "{before:?}");
    redis.restart();
    let health = server.http_url("/healthz");
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    loop {
        // Each round may meet the dead connection once; then the
        // reconnected one answers.
        let after = shorten_many(&server, "after", 2, 60);
        if after.acked.len() == 2 && crate::cases::http("GET", &health).0 == 200 {
            every_acked_link_is_stored(&server, &after.acked, |k| redis.get(k));
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "not served 15 s after Redis came back: {after:?}\n{}",
            server.log()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    every_acked_link_is_stored(&server, &before.acked, |k| redis.get(k));
}

// ----- engineer REDIS: a restarted Redis's write connections (review 6, F4) -----

/// Once `/readyz` says ok after a single Redis restarted, SHORTENs are
/// acknowledged, more in a row than the store thread has write
/// connections (16). Readiness used to PING only the read connection, so
/// it said ok while every write connection still held its dead socket,
/// and each answered one SHORTEN 503 "broken pipe" before reconnecting.
pub fn redis_single_restarted_is_ready_only_when_writes_succeed(binary: &Path) {
    let Some(mut redis) = or_skip(Redis::start(&[])) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let server = node(binary, dir.path(), &redis.url(), &["--store-replicas", "0"]);
    // Every write connection used once before the restart.
    let before = shorten_many(&server, "before", 40, 60);
    assert_eq!(before.acked.len(), 40, "{before:?}");
    redis.restart();
    // Readiness is checked every second: past that, it is about the
    // restarted Redis, not the one before.
    std::thread::sleep(Duration::from_millis(1500));
    let ready = format!("http://{}/readyz", server.admin_addr());
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    while crate::cases::http("GET", &ready).0 != 200 {
        assert!(
            std::time::Instant::now() < deadline,
            "not ready 15 s after Redis came back\n{}",
            server.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let after = shorten_many(&server, "after", 40, 60);
    assert_eq!(
        (after.acked.len(), after.refused),
        (40, 0),
        "SHORTENs refused after /readyz said ok: {}\n{}",
        after.last_refusal,
        server.log()
    );
    every_acked_link_is_stored(&server, &after.acked, |k| redis.get(k));
    every_acked_link_is_stored(&server, &before.acked, |k| redis.get(k));
}

/// A store wiped (`FLUSHALL`) under a running node: the node goes on with
/// the ids of the block it holds, then refuses new links (503, and
/// `/readyz` says so) rather than take the counter's restarted blocks,
/// whose codes it handed out before: no code ever gets a second URL
/// (review 24: three old codes were given new URLs after 1,021 SHORTENs).
pub fn redis_a_wiped_store_never_gives_an_old_code_a_new_url(binary: &Path) {
    let Some(redis) = or_skip(Redis::start(&[])) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let server = node(binary, dir.path(), &redis.url(), &["--store-replicas", "0"]);
    let before = shorten_many(&server, "before", 3, 60);
    assert_eq!(before.acked.len(), 3, "{before:?}");
    redis.must(&["FLUSHALL"]);
    let after = shorten_many(&server, "after", 1100, 60);
    let old: std::collections::HashSet<&str> =
        before.acked.iter().map(|(code, _)| code.as_str()).collect();
    let reused: Vec<_> = after
        .acked
        .iter()
        .filter(|(code, _)| old.contains(code.as_str()))
        .collect();
    assert!(reused.is_empty(), "old codes given new URLs: {reused:?}");
    assert!(after.refused > 0, "{} acknowledged", after.acked.len());
    assert!(
        after.last_refusal.contains("went back"),
        "{}",
        after.last_refusal
    );
    every_acked_link_is_stored(&server, &after.acked, |k| redis.get(k));
    let ready = format!("http://{}/readyz", server.admin_addr());
    wait_until("/readyz to say the store refuses writes", || {
        crate::cases::http("GET", &ready).0 == 503
    });
}

/// Expands to one `#[test]` per Redis fault case against `$binary`.
#[macro_export]
macro_rules! redis_suite {
    ($binary:expr) => {
        $crate::redis_suite!(@cases $binary;
            redis_single_without_replicas_is_refused_unless_asked_for,
            redis_single_with_a_replica_confirms_or_says_why_not,
            redis_out_of_memory_acknowledges_nothing_unstored,
            redis_failing_disk_acknowledges_nothing_unstored,
            redis_too_few_replicas_acknowledges_nothing_unstored,
            redis_demoted_primary_acknowledges_nothing_unstored,
            redis_lagging_read_replicas_never_make_a_link_404,
            redis_cluster_node_down_at_start_and_export,
            // ----- engineer REDIS (issue 19, Redis store) -----
            redis_lifecycle_values_are_judged_alike_on_every_node,
            // ----- engineer LIFE: click limits across nodes (issue 19) -----
            redis_click_limits_are_exact_across_nodes,
            // ----- engineer LIST: the listing with Redis (issue 21) -----
            redis_cluster_lists_each_keys_links,
            // ----- engineer KEYS (issue 21: keys in Redis) -----
            redis_keys_are_shared_by_every_node_and_revoked_on_all,
            redis_disable_destination_reaches_every_node,
            // ----- lead: a restarted Redis (review 4, F1) -----
            redis_single_restarted_is_served_again,
            // ----- engineer REDIS: a restarted Redis's write connections (review 6, F4) -----
            redis_single_restarted_is_ready_only_when_writes_succeed,
            // ----- lead: a store wiped under a running node (review 24) -----
            redis_a_wiped_store_never_gives_an_old_code_a_new_url,
        );
    };
    (@cases $binary:expr; $($case:ident),* $(,)?) => {
        $(
            #[test]
            fn $case() {
                $crate::redis_faults::$case(::std::path::Path::new($binary));
            }
        )*
    };
}
