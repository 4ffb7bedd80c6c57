//! Stateless Shorty nodes over a real Redis Cluster (3 primaries, 3
//! replicas, AOF always), one node of each backend. Skipped, saying so,
//! where `redis-server` is not installed; under CI (`CI=true`) that fails.
//!
//! In one sequence on one cluster (a cluster takes seconds to form):
//! a link made on the shorty-uring node redirects on the shorty-glommio
//! node; links from a local data directory move into the cluster with
//! their codes; a node restarted with an empty data directory resolves
//! everything; `kill -9` of a primary during a stream of SHORTENs loses no
//! acknowledged link, and new SHORTENs succeed after the failover; the
//! whole cluster down is 503 (not 404, not a hang), and back is serving.

use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use shorty_conformance::cluster::{or_skip, RedisCluster};
use shorty_conformance::harness::{run_to_exit, workspace_binary, Server};
use shorty_conformance::wire::{code_of, Conn, Read2};
use shorty_protocol::{ErrorCode, Reply, Request};

fn get(url: &str) -> (u16, Option<String>) {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .max_redirects(0)
        .http_status_as_error(false)
        .build()
        .into();
    let response = agent.get(url).call().unwrap();
    let location = response
        .headers()
        .get("location")
        .map(|v| v.to_str().unwrap().to_owned());
    (response.status().as_u16(), location)
}

fn node(bin: &Path, dir: &Path, seeds: &str) -> Server {
    Server::start(
        bin,
        dir,
        &[
            "--store",
            seeds,
            "--store-timeout",
            "2s",
            "--cache-bytes",
            "0",
        ],
    )
}

fn resolve_all(server: &Server, links: &HashMap<String, String>) {
    let mut conn = server.connect();
    for (code, url) in links {
        assert_eq!(
            conn.resolve(code),
            Reply::Resolved(Bytes::from(url.clone())),
            "{code}"
        );
    }
}

#[test]
fn shorty_nodes_over_a_redis_cluster() {
    let Some(mut cluster) = or_skip(RedisCluster::start(3)) else {
        return;
    };
    let seeds = cluster.seeds();
    let uring_bin = workspace_binary("shorty-uring", "shorty-server-uring");
    let glommio_bin = Path::new(env!("CARGO_BIN_EXE_shorty-glommio"));
    let (d1, d2) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let uring = node(&uring_bin, d1.path(), &seeds);
    let glommio = node(glommio_bin, d2.path(), &seeds);

    // Made on one node, redirects on the other at once (a miss is not
    // cached).
    let mut links = HashMap::new();
    let mut conn = uring.connect();
    for i in 0..50 {
        let url = format!("https://example.com/cluster/{i}");
        let short = conn.shorten(&url);
        assert_eq!(code_of(&short).len(), 7);
        links.insert(code_of(&short).to_owned(), url);
    }
    let (code, url) = links.iter().next().unwrap();
    let (status, location) = get(&glommio.http_url(&format!("/{code}")));
    assert_eq!((status, location.as_deref()), (302, Some(url.as_str())));
    resolve_all(&glommio, &links);
    assert_eq!(
        glommio.connect().resolve("zzzzzzz").as_error().map(|e| e.0),
        Some(ErrorCode::NOT_FOUND)
    );

    // Migration: a local data directory's links, with their codes.
    let local_dir = tempfile::tempdir().unwrap();
    let local = Server::start(&uring_bin, local_dir.path(), &[]);
    let mut moved = HashMap::new();
    let mut conn = local.connect();
    for i in 0..30 {
        let url = format!("https://example.com/moved/{i}");
        moved.insert(code_of(&conn.shorten(&url)).to_owned(), url);
    }
    drop(conn);
    assert!(local.stop().success());
    let dump = local_dir.path().join("links.jsonl");
    let timeout = Duration::from_secs(60);
    let (status, out) = run_to_exit(
        &uring_bin,
        &[
            "export",
            "--data-dir",
            local_dir.path().to_str().unwrap(),
            dump.to_str().unwrap(),
        ],
        timeout,
    );
    assert!(status.success(), "{out}");
    let (status, out) = run_to_exit(
        glommio_bin,
        &["import", "--store", &seeds, dump.to_str().unwrap()],
        timeout,
    );
    assert!(
        status.success() && out.contains("imported 30 links"),
        "{out}"
    );
    resolve_all(&glommio, &moved);
    let (status, out) = run_to_exit(&uring_bin, &["export", "--store", &seeds, "-"], timeout);
    assert!(
        status.success() && out.contains("exported 80 links"),
        "{out}"
    );

    // A node restarted with an empty data directory resolves everything.
    drop(uring);
    let fresh = tempfile::tempdir().unwrap();
    let uring = node(&uring_bin, fresh.path(), &seeds);
    resolve_all(&uring, &links);

    // kill -9 of a primary during a stream of SHORTENs.
    let acked: Arc<Mutex<HashMap<String, String>>> = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let writers: Vec<_> = (0..4)
        .map(|w| {
            let (acked, stop, addr) = (acked.clone(), stop.clone(), uring.addr());
            std::thread::spawn(move || {
                let mut conn = Conn::connect(addr);
                let mut i = 0;
                while !stop.load(Ordering::Relaxed) {
                    let url = format!("https://example.com/failover/{w}/{i}");
                    conn.send(Request::Shorten(url.as_bytes()));
                    match conn.read_frame_within(Duration::from_secs(10)) {
                        Read2::Frame(p) => match Reply::decode_payload(p).unwrap() {
                            Reply::Shortened(short) => {
                                let short = String::from_utf8(short.to_vec()).unwrap();
                                acked
                                    .lock()
                                    .unwrap()
                                    .insert(code_of(&short).to_owned(), url);
                            }
                            // 503 while the slot has no primary: fine, not
                            // acknowledged.
                            reply => assert_eq!(
                                reply.as_error().map(|e| e.0),
                                Some(ErrorCode::OVERLOADED),
                                "{reply:?}"
                            ),
                        },
                        other => panic!("no answer during the failover: {other:?}"),
                    }
                    i += 1;
                }
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(700));
    let victim = cluster.a_primary();
    cluster.kill9(victim);
    std::thread::sleep(Duration::from_secs(4));
    stop.store(true, Ordering::Relaxed);
    for w in writers {
        w.join().unwrap();
    }
    cluster.wait_until_ok().unwrap();
    let acked = acked.lock().unwrap().clone();
    assert!(
        acked.len() > 50,
        "the stream ran ({} acknowledged)",
        acked.len()
    );
    resolve_all(&uring, &acked);
    resolve_all(&glommio, &acked);
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let mut conn = uring.connect();
        conn.send(Request::Shorten(b"https://example.com/after-failover"));
        match conn.reply() {
            Reply::Shortened(_) => break,
            other => assert!(
                Instant::now() < deadline,
                "no new SHORTEN after the failover: {other:?}"
            ),
        }
        std::thread::sleep(Duration::from_millis(200));
    }

    // The whole cluster down: 503 within the store timeout, never 404 or
    // silence; /healthz says so; back up, serving again.
    cluster.kill_all();
    let mut conn = glommio.connect();
    let started = Instant::now();
    conn.send(Request::Shorten(b"https://example.com/down"));
    let reply = conn.reply();
    assert_eq!(
        reply.as_error().map(|e| e.0),
        Some(ErrorCode::OVERLOADED),
        "{reply:?}"
    );
    let (code, _) = links.iter().next().unwrap();
    let reply = conn.resolve(code);
    assert_eq!(
        reply.as_error().map(|e| e.0),
        Some(ErrorCode::OVERLOADED),
        "{reply:?}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(8),
        "{:?}",
        started.elapsed()
    );
    let deadline = Instant::now() + Duration::from_secs(5);
    while get(&glommio.http_url("/healthz")).0 != 503 {
        assert!(
            Instant::now() < deadline,
            "/healthz still 200 with the store down"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    cluster.restart_all().unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let mut conn = glommio.connect();
        conn.send(Request::Shorten(b"https://example.com/back"));
        if matches!(conn.reply(), Reply::Shortened(_)) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "not serving after the cluster came back"
        );
        std::thread::sleep(Duration::from_millis(250));
    }
    resolve_all(&glommio, &links);
    resolve_all(&uring, &acked);
}
