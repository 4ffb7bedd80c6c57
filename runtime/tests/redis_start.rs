//! A starting node and a store that is slow or down for a moment.
//!
//! In its own test binary: it starts Redis processes, and a fork of the
//! lib tests' process would hold their data directories' locks for a
//! moment (a CI run: "data directory ... is in use by pid" of itself).
//!
//! Needs `redis-server` and `redis-cli`: under `CI=true` a missing Redis
//! fails the test.

use std::time::Duration;

use shorty_runtime::redis_store::{connect_patiently, connect_with, probe};

/// A store that does not answer for a moment when a node starts (its
/// cluster down, then back) is waited for until the start's deadline
/// instead of refusing the start at the first failed connect (a CI
/// run: "cannot use the store ...: timed out").
#[test]
fn a_start_waits_for_a_store_that_comes_back() {
    use shorty_conformance::cluster::{or_skip, RedisCluster};
    let Some(mut cluster) = or_skip(RedisCluster::start(3)) else {
        return;
    };
    let spec = shorty_runtime::config::parse_spec(&cluster.seeds()).unwrap();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let timeout = Duration::from_millis(500);
    let probe = runtime.block_on(probe(&spec, timeout)).unwrap();
    assert!(probe.cluster);
    cluster.kill_all();
    let once = runtime.block_on(connect_with(&probe, &spec, timeout, false));
    assert!(
        once.is_err(),
        "a cluster that is down cannot be connected to"
    );
    let back = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_secs(1));
        cluster.restart_all().unwrap();
        cluster
    });
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    let patient = runtime.block_on(connect_patiently(&probe, &spec, timeout, false, deadline));
    let _cluster = back.join().unwrap();
    assert!(patient.is_ok(), "{:?}", patient.err());
}
