//! The lifecycle (issue 19) on the Redis store: the real operations
//! (sans-IO shards, the same `ops` code as the local log) over the real
//! store thread, against a real Redis and a real Redis Cluster started by
//! the test. Two "nodes" are two shards, each with its own store thread
//! and cache, sharing the store.
//!
//! Needs `redis-server` and `redis-cli`: under `CI=true` a missing Redis
//! fails the test.

use std::sync::Arc;
use std::time::{Duration, Instant};

use shorty_conformance::cluster::{or_skip, Redis, RedisCluster};
use shorty_runtime::config::RedisSpec;
use shorty_runtime::redis_store::{self, StoreSettings, StoreThread};
use shorty_runtime::remote::Envelope;
use shorty_service::codes::Codec;
use shorty_service::connection::{Connection, Kind};
use shorty_service::health::Health;
use shorty_service::http::Front;
use shorty_service::link::{Field, Gone, LinkMeta, LinkPatch, Principal, Scopes};
use shorty_service::ops::lifecycle::{self, CreateRequest};
use shorty_service::ops::{self, Step};
use shorty_service::settings::Settings;
use shorty_service::shard::{LinkView, OpResult, Shard, Shared, StoreMode};

/// Unix ms of the nodes' wall clock at the test's start.
const T0_MS: u64 = 1_800_000_000_000;
const TTL: Duration = Duration::from_secs(1);
const QUARANTINE: Duration = Duration::from_millis(400);

struct Node {
    shard: Shard,
    store: StoreThread,
    /// Requests sent to the store thread and not answered yet.
    outstanding: usize,
}

fn node(spec: &RedisSpec, replicas: u32, t0: Instant) -> Node {
    node_at(spec, replicas, t0, T0_MS)
}

/// [`node`] whose wall clock reads `wall_ms` at `t0` (Redis's own clock
/// decides when a key's `PEXPIREAT` comes).
fn node_at(spec: &RedisSpec, replicas: u32, t0: Instant, wall_ms: u64) -> Node {
    let health = Arc::new(Health::new(1));
    let settings = StoreSettings {
        spec: spec.clone(),
        replicas,
        timeout: Duration::from_secs(3),
        read_from_replicas: false,
        stats_marker: None,
    };
    let store = redis_store::start(settings, 1, health.clone()).expect("the store thread starts");
    let mut service = Settings::for_tests("http://s.example/");
    service.alias_quarantine = QUARANTINE;
    service.remote_cache_ttl = TTL;
    let shared =
        Shared::new(service, Codec::new(&store.key), StoreMode::Remote, 1).with_health(health);
    let mut shard = Shard::new(Arc::new(shared), 0);
    shard.set_wall_clock(t0, wall_ms);
    Node {
        shard,
        store,
        outstanding: 0,
    }
}

impl Node {
    /// Hands the shard's queued requests to the store thread and takes
    /// every answer back (which may queue more requests: not sent yet).
    fn round(&mut self) {
        while let Some(request) = self.shard.poll_remote() {
            self.store.ports[0]
                .requests
                .send(Envelope { core: 0, request })
                .unwrap();
            self.outstanding += 1;
        }
        while self.outstanding > 0 {
            let (op, reply) = self.store.ports[0]
                .replies
                .blocking_recv()
                .expect("an answer");
            self.outstanding -= 1;
            self.shard.remote_done(op, reply);
        }
    }

    /// Rounds until nothing is queued.
    fn pump(&mut self) {
        while self.shard.has_remote() {
            self.round();
        }
    }

    fn settle(&mut self, step: Step) -> OpResult {
        match step {
            Step::Now(result) => result,
            Step::Pending(op) => {
                self.pump();
                self.shard.take_result(op).expect("settled")
            }
        }
    }

    fn create(
        &mut self,
        url: &str,
        alias: Option<&str>,
        options: LinkMeta,
        who: Principal,
        now: Instant,
    ) -> OpResult {
        let request = CreateRequest {
            url: url.as_bytes(),
            alias,
            options,
        };
        let step = lifecycle::create(&mut self.shard, 1, request, who, now);
        self.settle(step)
    }

    fn created(
        &mut self,
        url: &str,
        alias: Option<&str>,
        options: LinkMeta,
        now: Instant,
    ) -> String {
        view(self.create(url, alias, options, Principal::ANYONE, now))
            .code
            .into()
    }

    fn update(&mut self, code: &str, patch: LinkPatch, who: Principal, now: Instant) -> OpResult {
        let step = lifecycle::update(&mut self.shard, 1, code.as_bytes(), patch, who, now);
        self.settle(step)
    }

    fn delete(&mut self, code: &str, now: Instant) -> OpResult {
        let step = lifecycle::delete(&mut self.shard, 1, code.as_bytes(), Principal::ANYONE, now);
        self.settle(step)
    }

    fn info(&mut self, code: &str) -> OpResult {
        let step = lifecycle::info(&mut self.shard, 1, code.as_bytes(), Principal::ANYONE);
        self.settle(step)
    }

    fn resolve(&mut self, code: &str, now: Instant) -> OpResult {
        let step = ops::resolve::resolve(&mut self.shard, 1, code.as_bytes(), now, None);
        self.settle(step)
    }

    fn url(&mut self, code: &str, now: Instant) -> Result<String, OpResult> {
        match self.resolve(code, now) {
            OpResult::Url(url) | OpResult::Redirect { url, .. } => {
                Ok(String::from_utf8(url.to_vec()).unwrap())
            }
            other => Err(other),
        }
    }

    /// An HTTP GET of `/code` at `now`: the whole response.
    fn http_get(&mut self, code: &str, now: Instant) -> String {
        let mut conn = Connection::new(2, Kind::Http(Front::Public), now);
        let request = format!("GET /{code} HTTP/1.1\r\nHost: s\r\n\r\n");
        conn.handle_input(&mut self.shard, request.as_bytes(), now);
        self.pump();
        let mut text = Vec::new();
        while let Some(chunk) = conn.poll_transmit(&mut self.shard, now) {
            text.extend_from_slice(&chunk);
            conn.transmitted();
        }
        String::from_utf8(text).unwrap()
    }
}

fn status(result: &OpResult) -> Option<u16> {
    match result {
        OpResult::Failed(code, _) => Some(code.0),
        OpResult::NotFound => Some(404),
        _ => None,
    }
}

fn view(result: OpResult) -> Box<LinkView> {
    match result {
        OpResult::Link(view) => view,
        other => panic!("{other:?}"),
    }
}

fn new_url(url: &str) -> LinkPatch {
    LinkPatch {
        url: Some(url.into()),
        ..LinkPatch::default()
    }
}

fn plain() -> LinkMeta {
    LinkMeta::default()
}

/// Everything the lifecycle promises, through two nodes on one store.
fn lifecycle_on(spec: &RedisSpec, replicas: u32) {
    let t0 = Instant::now();
    let (mut a, mut b) = (node(spec, replicas, t0), node(spec, replicas, t0));
    let anyone = Principal::ANYONE;

    // A plain SHORTEN keeps its representation (the bare URL, as existing
    // data is) and can be updated; another node sees the update within
    // --store-cache-ttl.
    let step = ops::create::shorten(&mut a.shard, 1, b"https://e.com/plain");
    let OpResult::Stored(key) = a.settle(step) else {
        panic!("not stored")
    };
    let mut buf = [0; shorty_service::codes::MAX_CODE_LEN];
    let code = shorty_service::codes::format_code(key, &mut buf).to_owned();
    assert_eq!(b.url(&code, t0).unwrap(), "https://e.com/plain");
    let updated = view(a.update(&code, new_url("https://e.com/plain2"), anyone, t0));
    assert_eq!(updated.meta.version, 1);
    assert_eq!(a.url(&code, t0).unwrap(), "https://e.com/plain2");
    // B may serve its cached copy for at most the TTL.
    let later = t0 + TTL + Duration::from_millis(1);
    assert_eq!(b.url(&code, later).unwrap(), "https://e.com/plain2");
    let info = view(b.info(&code));
    assert_eq!(
        (&info.url[..], info.meta.version),
        (&b"https://e.com/plain2"[..], 1)
    );

    // Aliases: taken once, across nodes; route words refused.
    let who = Principal {
        key_id: Some(1),
        scopes: Scopes::LINKS_WRITE,
    };
    let alias = view(a.create("https://e.com/a", Some("promo-1"), plain(), who, t0));
    assert_eq!((&*alias.code, alias.meta.version), ("promo-1", 0));
    let again = b.create("https://e.com/b", Some("promo-1"), plain(), anyone, t0);
    assert_eq!(status(&again), Some(409), "{again:?}");
    assert_eq!(b.url("promo-1", later).unwrap(), "https://e.com/a");
    // An alias spelled like a code is found as a code, on any node.
    let code_like = a.created("https://e.com/k", Some("Abc1234"), plain(), t0);
    assert_eq!(b.url(&code_like, t0).unwrap(), "https://e.com/k");
    let taken = b.create("https://e.com/b", Some("Abc1234"), plain(), anyone, t0);
    assert_eq!(status(&taken), Some(409), "{taken:?}");
    let reserved = b.create("https://e.com/b", Some("healthz"), plain(), anyone, t0);
    assert_eq!(status(&reserved), Some(422), "{reserved:?}");
    // Only its owner (or a links:all key) changes it.
    let other = Principal {
        key_id: Some(2),
        scopes: Scopes::LINKS_WRITE,
    };
    let refused = b.update("promo-1", new_url("https://evil.example/"), other, later);
    assert_eq!(status(&refused), Some(403), "{refused:?}");

    // Concurrent updates from two nodes, both read before either writes:
    // the first script applies (version 1), the second finds the link
    // changed since its read and is refused 409 (retry) rather than
    // undoing the first; retried, it applies at version 2.
    let from_a = new_url("https://e.com/from-a");
    let from_b = new_url("https://e.com/from-b");
    let sa = lifecycle::update(&mut a.shard, 1, b"promo-1", from_a, who, later);
    let sb = lifecycle::update(&mut b.shard, 1, b"promo-1", from_b.clone(), who, later);
    a.round();
    b.round();
    let (ra, rb) = (a.settle(sa), b.settle(sb));
    let (won, lost) = match (&ra, &rb) {
        (OpResult::Link(_), _) => (ra, rb),
        _ => (rb, ra),
    };
    assert_eq!(view(won).meta.version, 1);
    assert_eq!(status(&lost), Some(409), "{lost:?}");
    let retried = view(b.update("promo-1", from_b, who, later));
    assert_eq!(retried.meta.version, 2);
    for n in [&mut a, &mut b] {
        let info = view(n.info("promo-1"));
        assert_eq!(
            (&*info.url, info.meta.version),
            (&b"https://e.com/from-b"[..], 2)
        );
        assert_eq!(info.meta.owner_key_id, Some(1), "the owner is kept");
    }

    // Expiry is judged on read by the serving node's clock: 410, or the
    // expired-URL, never a vanished key.
    let expiring = |url| LinkMeta {
        expires_at_ms: Some(T0_MS + 60_000),
        expired_url: url,
        ..LinkMeta::default()
    };
    let gone = a.created("https://e.com/x", None, expiring(None), t0);
    let over = Some("https://e.com/over".into());
    let elsewhere = a.created("https://e.com/y", Some("exp-alias"), expiring(over), t0);
    let before = b.http_get(&gone, later);
    assert!(before.starts_with("HTTP/1.1 302"), "{before}");
    let after = later + Duration::from_secs(61);
    let page = b.http_get(&gone, after);
    assert!(
        page.starts_with("HTTP/1.1 410") && page.contains("This link has expired"),
        "{page}"
    );
    assert_eq!(
        b.resolve(&elsewhere, after),
        OpResult::Gone {
            reason: Gone::Expired,
            expired_url: Some("https://e.com/over".into())
        }
    );

    // Disabled through an update on A: 410 on B once its cache turns over.
    let disable = LinkPatch {
        disabled: Field::Set(()),
        ..LinkPatch::default()
    };
    view(a.update(&code, disable, anyone, after));
    let after2 = after + TTL + Duration::from_millis(1);
    assert!(
        matches!(
            b.resolve(&code, after2),
            OpResult::Gone {
                reason: Gone::Disabled,
                ..
            }
        ),
        "disabled"
    );

    // Delete: 404 everywhere; a change after it is 404 too.
    assert_eq!(b.delete(&code, after2), OpResult::Deleted);
    let after3 = after2 + TTL + Duration::from_millis(1);
    assert_eq!(a.resolve(&code, after3), OpResult::NotFound);
    let page = a.http_get(&code, after3);
    assert!(page.starts_with("HTTP/1.1 404"), "{page}");
    assert_eq!(a.delete(&code, after3), OpResult::NotFound);
    let late = a.update(&code, new_url("https://e.com/z"), anyone, after3);
    assert_eq!(status(&late), Some(404), "{late:?}");
    // A deleted code is never taken again, not even by an alias spelled
    // like it (and the generator never reissues its id).
    let reuse = a.create("https://e.com/z", Some(&code), plain(), anyone, after3);
    assert_eq!(status(&reuse), Some(409), "{reuse:?}");

    // A deleted alias is quarantined, then free again.
    assert_eq!(a.delete("promo-1", after3), OpResult::Deleted);
    assert_eq!(b.resolve("promo-1", after3), OpResult::NotFound);
    let quarantined = b.create("https://e.com/c", Some("promo-1"), plain(), anyone, after3);
    assert_eq!(status(&quarantined), Some(409), "{quarantined:?}");
    std::thread::sleep(QUARANTINE + Duration::from_millis(200));
    let reclaimed = view(b.create("https://e.com/c", Some("promo-1"), plain(), anyone, after3));
    assert_eq!((&*reclaimed.code, reclaimed.meta.version), ("promo-1", 0));
    assert_eq!(a.url("promo-1", after3).unwrap(), "https://e.com/c");
}

#[test]
fn the_lifecycle_on_a_single_redis() {
    let Some(redis) = or_skip(Redis::start(&[])) else {
        return;
    };
    lifecycle_on(
        &RedisSpec {
            nodes: vec![redis.url()],
        },
        0,
    );
}

#[test]
fn the_lifecycle_on_a_redis_cluster() {
    let Some(cluster) = or_skip(RedisCluster::start(3)) else {
        return;
    };
    let seeds = cluster.seeds();
    let spec = RedisSpec {
        nodes: seeds
            .trim_start_matches("redis://")
            .split(',')
            .map(|s| format!("redis://{s}"))
            .collect(),
    };
    lifecycle_on(&spec, 1);
}

/// A Redis that refuses writes must never have a change acknowledged:
/// the update, delete and create answer 503, the link is unchanged, and
/// once the fault is gone the same changes go through.
fn refused_writes_acknowledge_no_change(
    args: &[&str],
    inject: impl Fn(&Redis),
    repair: impl Fn(&Redis),
) {
    let Some(redis) = or_skip(Redis::start(args)) else {
        return;
    };
    let spec = RedisSpec {
        nodes: vec![redis.url()],
    };
    let t0 = Instant::now();
    let anyone = Principal::ANYONE;
    let mut a = node(&spec, 0, t0);
    let code = a.created("https://e.com/keep", Some("fault-alias"), plain(), t0);
    inject(&redis);
    let update = a.update(&code, new_url("https://e.com/lost"), anyone, t0);
    assert_eq!(status(&update), Some(503), "{update:?}");
    let delete = a.delete(&code, t0);
    assert_eq!(status(&delete), Some(503), "{delete:?}");
    let create = a.create("https://e.com/new", Some("fault-new"), plain(), anyone, t0);
    assert_eq!(status(&create), Some(503), "{create:?}");
    let info = view(a.info(&code));
    assert_eq!(
        (&info.url[..], info.meta.version),
        (&b"https://e.com/keep"[..], 0)
    );
    assert_eq!(a.resolve("fault-new", t0), OpResult::NotFound);
    repair(&redis);
    let now = view(a.update(&code, new_url("https://e.com/now"), anyone, t0));
    assert_eq!(now.meta.version, 1);
    assert_eq!(a.delete(&code, t0), OpResult::Deleted);
}

/// Out of memory (`maxmemory` + `noeviction`): the scripts' writes get OOM.
#[test]
fn an_out_of_memory_redis_acknowledges_no_change() {
    refused_writes_acknowledge_no_change(
        &["--maxmemory-policy", "noeviction"],
        |r| drop(r.must(&["CONFIG", "SET", "maxmemory", "1"])),
        |r| drop(r.must(&["CONFIG", "SET", "maxmemory", "0"])),
    );
}

/// Too few replicas for `min-replicas-to-write` (`NOREPLICAS`), where
/// `WAIT 0` proves nothing.
#[test]
fn a_redis_without_its_replicas_acknowledges_no_change() {
    refused_writes_acknowledge_no_change(
        &[],
        |r| drop(r.must(&["CONFIG", "SET", "min-replicas-to-write", "1"])),
        |r| drop(r.must(&["CONFIG", "SET", "min-replicas-to-write", "0"])),
    );
}

/// The store's Redis demoted to a replica behind the node's back (a
/// manual failover): the scripts' writes get `READONLY`.
#[test]
fn a_demoted_redis_acknowledges_no_change() {
    let other: std::sync::Mutex<Option<Redis>> = std::sync::Mutex::new(None);
    let link_up = |r: &Redis| {
        let deadline = Instant::now() + Duration::from_secs(30);
        while !r
            .cli(&["info", "replication"])
            .is_some_and(|o| o.contains("master_link_status:up"))
        {
            assert!(Instant::now() < deadline, "replication never started");
            std::thread::sleep(Duration::from_millis(50));
        }
    };
    refused_writes_acknowledge_no_change(
        &[],
        |r| {
            // Another Redis takes a copy, becomes the primary, and the
            // store's Redis replicates it (same data, read-only).
            let b = Redis::start(&[]).unwrap();
            b.replicate(r);
            b.must(&["replicaof", "no", "one"]);
            r.must(&["replicaof", "127.0.0.1", &b.port().to_string()]);
            link_up(r);
            *other.lock().unwrap() = Some(b);
        },
        |r| drop(r.must(&["replicaof", "no", "one"])),
    );
}

/// A failing disk (`MISCONF`: the last RDB save failed): saving into
/// /proc fails, even for root.
#[test]
fn a_redis_with_a_failing_disk_acknowledges_no_change() {
    let saved = |r: &Redis, status: &str| {
        let deadline = Instant::now() + Duration::from_secs(30);
        while !r
            .cli(&["info", "persistence"])
            .is_some_and(|o| o.contains(&format!("rdb_last_bgsave_status:{status}")))
        {
            assert!(Instant::now() < deadline, "the save never ended {status}");
            std::thread::sleep(Duration::from_millis(50));
        }
    };
    let home = std::sync::Mutex::new(String::new());
    refused_writes_acknowledge_no_change(
        &[
            "--appendonly",
            "no",
            "--save",
            "3600 1",
            "--enable-protected-configs",
            "yes",
        ],
        |r| {
            let dir = r.must(&["config", "get", "dir"]);
            *home.lock().unwrap() = dir.lines().nth(1).unwrap().to_owned();
            r.must(&["config", "set", "dir", "/proc"]);
            r.must(&["bgsave"]);
            saved(r, "err");
        },
        |r| {
            r.must(&["config", "set", "dir", &home.lock().unwrap()]);
            r.must(&["bgsave"]);
            saved(r, "ok");
        },
    );
}

/// `export --store` and `import --store` carry the options, the newest
/// version, and skip deleted links; a plain link stays a bare URL.
#[test]
fn export_and_import_carry_options_and_skip_deleted_links() {
    let (Some(from), Some(to)) = (or_skip(Redis::start(&[])), or_skip(Redis::start(&[]))) else {
        return;
    };
    let spec = |r: &Redis| RedisSpec {
        nodes: vec![r.url()],
    };
    let t0 = Instant::now();
    let anyone = Principal::ANYONE;
    let mut a = node(&spec(&from), 0, t0);
    let step = ops::create::shorten(&mut a.shard, 1, b"https://e.com/plain");
    let OpResult::Stored(key) = a.settle(step) else {
        panic!("not stored")
    };
    let mut buf = [0; shorty_service::codes::MAX_CODE_LEN];
    let plain_code = shorty_service::codes::format_code(key, &mut buf).to_owned();
    let titled = LinkMeta {
        title: Some("T".into()),
        expires_at_ms: Some(T0_MS + 60_000),
        ..LinkMeta::default()
    };
    a.created("https://e.com/a", Some("kept"), titled, t0);
    view(a.update("kept", new_url("https://e.com/a2"), anyone, t0));
    a.created("https://e.com/d", Some("dropped"), plain(), t0);
    assert_eq!(a.delete("dropped", t0), OpResult::Deleted);

    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("links.jsonl");
    assert_eq!(
        shorty_runtime::tools::export_redis(&spec(&from), Some(&file)),
        std::process::ExitCode::SUCCESS
    );
    let text = std::fs::read_to_string(&file).unwrap();
    let mut lines: Vec<&str> = text.lines().collect();
    lines.sort_unstable();
    assert_eq!(lines.len(), 2, "{text}");
    assert!(!text.contains("dropped"), "{text}");
    assert!(
        text.contains(&format!(
            "{{\"code\":\"{plain_code}\",\"url\":\"https://e.com/plain\"}}"
        )),
        "{text}"
    );
    assert!(
        text.contains("\"code\":\"kept\",\"url\":\"https://e.com/a2\",\"version\":1")
            && text.contains("\"title\":\"T\"")
            && text.contains("\"alias\":true"),
        "{text}"
    );

    assert_eq!(
        shorty_runtime::tools::import_redis(&spec(&to), &file, None),
        std::process::ExitCode::SUCCESS
    );
    // The plain link is the bare URL in the new store too.
    assert_eq!(
        to.get(&format!("shorty:l:{plain_code}")).as_deref(),
        Some("https://e.com/plain")
    );
    let mut b = node(&spec(&to), 0, t0);
    assert_eq!(b.url(&plain_code, t0).unwrap(), "https://e.com/plain");
    let kept = view(b.info("kept"));
    assert_eq!(
        (&kept.url[..], kept.meta.version, kept.meta.title.as_deref()),
        (&b"https://e.com/a2"[..], 1, Some("T"))
    );
    assert_eq!(b.resolve("dropped", t0), OpResult::NotFound);
}

/// Sequential creates, updates, reads and deletes through one node, each
/// checked; prints the mean latency of each (nothing timed is asserted).
/// `REDIS_LIFECYCLE_ROUNDS=n` runs more (default 50).
#[test]
fn sequential_changes_read_back_exactly() {
    let Some(redis) = or_skip(Redis::start(&[])) else {
        return;
    };
    let rounds: usize = std::env::var("REDIS_LIFECYCLE_ROUNDS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(50);
    let spec = RedisSpec {
        nodes: vec![redis.url()],
    };
    let t0 = Instant::now();
    let anyone = Principal::ANYONE;
    let mut a = node(&spec, 0, t0);
    let mut spent = [Duration::ZERO; 4];
    for i in 0..rounds {
        let alias = format!("seq-{i}");
        let started = Instant::now();
        let code = a.created("https://e.com/s", Some(&alias), plain(), t0);
        spent[0] += started.elapsed();
        let started = Instant::now();
        let url = format!("https://e.com/s/{i}");
        assert_eq!(
            view(a.update(&code, new_url(&url), anyone, t0))
                .meta
                .version,
            1
        );
        spent[1] += started.elapsed();
        let started = Instant::now();
        assert_eq!(a.url(&code, t0).unwrap(), url);
        spent[2] += started.elapsed();
        let started = Instant::now();
        assert_eq!(a.delete(&code, t0), OpResult::Deleted);
        spent[3] += started.elapsed();
    }
    for (what, total) in ["create", "update", "resolve", "delete"].iter().zip(spent) {
        eprintln!(
            "{what}: {:?} per operation over {rounds}",
            total / rounds as u32
        );
    }
}

/// `redis-cli EXISTS name` against `url`.
fn exists(url: &str, name: &str) -> bool {
    let out = std::process::Command::new("redis-cli")
        .args(["-u", url, "EXISTS", name])
        .output()
        .expect("redis-cli");
    assert!(out.status.success(), "{out:?}");
    String::from_utf8_lossy(&out.stdout).trim() == "1"
}

/// A limited link's click count (`shorty:n:CODE:CREATED`) is removed
/// with the link (issue 19, round 4): before, every deleted limited link
/// left its count behind for ever. A link without a limit has none, and
/// its delete does not need one.
#[test]
fn a_deleted_limited_link_takes_its_click_count_with_it() {
    let Some(redis) = or_skip(Redis::start(&[])) else {
        return;
    };
    let spec = RedisSpec {
        nodes: vec![redis.url()],
    };
    let t0 = Instant::now();
    let mut a = node(&spec, 0, t0);
    let limited = LinkMeta {
        max_clicks: Some(5),
        ..LinkMeta::default()
    };
    let made = view(a.create(
        "https://e.com/l",
        None,
        limited.clone(),
        Principal::ANYONE,
        t0,
    ));
    let alias = view(a.create(
        "https://e.com/m",
        Some("limited-1"),
        limited,
        Principal::ANYONE,
        t0,
    ));
    let mut counts = Vec::new();
    for link in [&made, &alias] {
        assert!(a.http_get(&link.code, t0).starts_with("HTTP/1.1 30"));
        let created = link.meta.created_at_ms.unwrap_or(0);
        let name = format!("shorty:n:{}:{created}", link.code);
        assert!(exists(&redis.url(), &name), "{name} counts the click");
        counts.push(name);
    }
    let plain_code = a.created("https://e.com/p", None, plain(), t0);
    for (link, name) in [&made, &alias].into_iter().zip(&counts) {
        assert_eq!(a.delete(&link.code, t0), OpResult::Deleted);
        assert!(!exists(&redis.url(), name), "{name} removed with its link");
    }
    assert_eq!(a.delete(&plain_code, t0), OpResult::Deleted);
    // A limit an update removed leaves its count: the delete still takes
    // it (review 8: it stayed for ever, without an expiry).
    let unlimited = view(a.create(
        "https://e.com/u",
        Some("limited-2"),
        LinkMeta {
            max_clicks: Some(5),
            ..LinkMeta::default()
        },
        Principal::ANYONE,
        t0,
    ));
    assert!(a.http_get(&unlimited.code, t0).starts_with("HTTP/1.1 30"));
    let name = format!(
        "shorty:n:{}:{}",
        unlimited.code,
        unlimited.meta.created_at_ms.unwrap_or(0)
    );
    assert!(exists(&redis.url(), &name), "{name} counts the click");
    let no_limit = LinkPatch {
        max_clicks: shorty_service::link::Field::Clear,
        ..LinkPatch::default()
    };
    view(a.update(&unlimited.code, no_limit, Principal::ANYONE, t0));
    assert_eq!(a.delete(&unlimited.code, t0), OpResult::Deleted);
    assert!(!exists(&redis.url(), &name), "{name} removed with its link");
}

/// `redis-cli GET name` against `url`: its value, if any.
fn get(url: &str, name: &str) -> Option<String> {
    let out = std::process::Command::new("redis-cli")
        .args(["-u", url, "--no-raw", "GET", name])
        .output()
        .expect("redis-cli");
    assert!(out.status.success(), "{out:?}");
    let text = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    (text != "(nil)").then(|| text.trim_matches('"').to_owned())
}

/// `redis-cli PTTL name`: -1 without an expiry, -2 when gone.
fn pttl(url: &str, name: &str) -> i64 {
    let out = std::process::Command::new("redis-cli")
        .args(["-u", url, "PTTL", name])
        .output()
        .expect("redis-cli");
    assert!(out.status.success(), "{out:?}");
    String::from_utf8_lossy(&out.stdout).trim().parse().unwrap()
}

/// A limited link's click count expires with the link (issue 19, round
/// 5: an expired limited link used to keep its count for ever); an
/// update that extends the expiry keeps the count (the clicks taken
/// still count: the limit is not reset), one that removes the expiry
/// keeps it for good.
#[test]
fn a_limited_link_s_click_count_expires_with_it_unless_an_update_extends_it() {
    let Some(redis) = or_skip(Redis::start(&[])) else {
        return;
    };
    let url = redis.url();
    let spec = RedisSpec {
        nodes: vec![url.clone()],
    };
    let t0 = Instant::now();
    // The node's clock is Redis's: expiry times mean the same to both.
    let wall = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    let life = Duration::from_millis(1500);
    let mut a = node_at(&spec, 0, t0, wall);
    let limited = LinkMeta {
        max_clicks: Some(3),
        expires_at_ms: Some(wall + life.as_millis() as u64),
        ..LinkMeta::default()
    };
    let mut made = Vec::new();
    for url_ in [
        "https://e.com/expires",
        "https://e.com/extended",
        "https://e.com/kept",
    ] {
        let link = view(a.create(url_, None, limited.clone(), Principal::ANYONE, t0));
        let name = format!(
            "shorty:n:{}:{}",
            link.code,
            link.meta.created_at_ms.unwrap()
        );
        made.push((link.code.to_string(), name));
    }
    let [(expires, expires_n), (extended, extended_n), (kept, kept_n)] = &made[..] else {
        unreachable!()
    };
    for (code, name) in &made {
        for _ in 0..2 {
            assert!(a.http_get(code, t0).starts_with("HTTP/1.1 30"));
        }
        assert_eq!(get(&url, name).as_deref(), Some("2"), "{name}");
        let ttl = pttl(&url, name);
        assert!(
            ttl > 0 && ttl <= life.as_millis() as i64,
            "{name} expires with its link: {ttl}"
        );
    }
    let hour = 3_600_000;
    let extend = LinkPatch {
        expires_at_ms: Field::Set(wall + hour),
        ..LinkPatch::default()
    };
    view(a.update(extended, extend, Principal::ANYONE, t0));
    let ttl = pttl(&url, extended_n);
    assert!(
        ttl > life.as_millis() as i64,
        "moved to the new expiry: {ttl}"
    );
    let forever = LinkPatch {
        expires_at_ms: Field::Clear,
        ..LinkPatch::default()
    };
    view(a.update(kept, forever, Principal::ANYONE, t0));
    assert_eq!(pttl(&url, kept_n), -1, "no expiry: the count persists");

    // Past the first expiry (Redis's clock and the node's).
    std::thread::sleep(life + Duration::from_millis(200));
    let later = Instant::now();
    assert!(!exists(&url, expires_n), "gone with its link");
    assert!(a.http_get(expires, later).starts_with("HTTP/1.1 410"));
    for (code, name) in [(extended, extended_n), (kept, kept_n)] {
        assert_eq!(
            get(&url, name).as_deref(),
            Some("2"),
            "{name} kept its count"
        );
        // One click left of 3, not 3 again.
        assert!(a.http_get(code, later).starts_with("HTTP/1.1 30"));
        assert!(
            a.http_get(code, later).starts_with("HTTP/1.1 410"),
            "{code}"
        );
    }
}
