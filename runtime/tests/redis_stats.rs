//! Click statistics on a real Redis: what several nodes' stats writers
//! flush, in whatever order, reads back as one link's sum.
//!
//! Needs `redis-server` and `redis-cli`: under `CI=true` a missing Redis
//! fails the test.

use std::time::Duration;

use shorty_conformance::cluster::{or_skip, Redis};
use shorty_runtime::config::RedisSpec;
use shorty_runtime::stats::StatsSink;
use shorty_runtime::stats_redis::{RedisStats, RedisStatsReader};
use shorty_service::stats::{ClickCounter, ClickMeta, StatsReader};

const TIMEOUT: Duration = Duration::from_secs(3);

/// Two nodes flush out of order: the node whose clicks came later flushes
/// first. The link's first click is still the earliest of all and its last
/// the latest (CI once read `first` past `last` when `first` was "set
/// once" and `last` "the latest writer's").
#[test]
fn first_and_last_clicks_span_every_node_s_whatever_the_flush_order() {
    let Some(redis) = or_skip(Redis::start(&[])) else {
        return;
    };
    let spec = RedisSpec {
        nodes: vec![redis.url()],
    };
    let t = 1_800_000_000_000;
    let key = 42;
    let (mut early, mut late) = (ClickCounter::new(true), ClickCounter::new(true));
    early.record(key, &ClickMeta::default(), t);
    early.record(key, &ClickMeta::default(), t + 10);
    late.record(key, &ClickMeta::default(), t + 20);
    late.record(key, &ClickMeta::default(), t + 30);
    let mut one = RedisStats::connect(&spec, TIMEOUT).unwrap();
    let mut two = RedisStats::connect(&spec, TIMEOUT).unwrap();
    two.apply(&[late.take()]).unwrap();
    one.apply(&[early.take()]).unwrap();
    let reader = RedisStatsReader::connect(&spec, TIMEOUT).unwrap();
    let totals = reader.totals(key).unwrap().expect("the link's totals");
    assert_eq!(
        (totals.human + totals.bot, totals.first_ms, totals.last_ms),
        (4, t, t + 30)
    );
    // A third flush inside the span moves neither end.
    let mut middle = ClickCounter::new(true);
    middle.record(key, &ClickMeta::default(), t + 15);
    one.apply(&[middle.take()]).unwrap();
    let totals = reader.totals(key).unwrap().expect("the link's totals");
    assert_eq!(
        (totals.human + totals.bot, totals.first_ms, totals.last_ms),
        (5, t, t + 30)
    );
}
