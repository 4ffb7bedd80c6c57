//! Click statistics on a real Redis: what several nodes' stats writers
//! flush, in whatever order, reads back as one link's sum.
//!
//! Needs `redis-server` and `redis-cli`: under `CI=true` a missing Redis
//! fails the test.

use std::time::Duration;

use shorty_conformance::cluster::{or_skip, Redis};
use shorty_runtime::config::RedisSpec;
use shorty_runtime::redis_store::connect;
use shorty_runtime::stats::StatsSink;
use shorty_runtime::stats_redis::{read_stored, Marker, RedisStats, RedisStatsReader};
use shorty_service::stats::{ClickCounter, ClickMeta, Granularity, StatsReader};

const TIMEOUT: Duration = Duration::from_secs(3);

/// The start of the hour two days ago: reads fetch only the day hashes
/// that can hold clicks (none past tomorrow, none older than their expiry).
fn two_days_ago() -> u64 {
    (shorty_runtime::keys::now_ms() / 3_600_000 - 48) * 3_600_000
}

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
    let t = two_days_ago();
    let key = 42;
    let (mut early, mut late) = (ClickCounter::new(true), ClickCounter::new(true));
    early.record(key, &ClickMeta::default(), t);
    early.record(key, &ClickMeta::default(), t + 10);
    late.record(key, &ClickMeta::default(), t + 20);
    late.record(key, &ClickMeta::default(), t + 30);
    let mut one = RedisStats::connect(&spec, TIMEOUT, None).unwrap();
    let mut two = RedisStats::connect(&spec, TIMEOUT, None).unwrap();
    two.apply(&[late.take().into()], 0).unwrap();
    one.apply(&[early.take().into()], 0).unwrap();
    let reader = RedisStatsReader::connect(&spec, TIMEOUT).unwrap();
    let totals = reader.totals(key).unwrap().expect("the link's totals");
    assert_eq!(
        (totals.human + totals.bot, totals.first_ms, totals.last_ms),
        (4, t, t + 30)
    );
    // A third flush inside the span moves neither end.
    let mut middle = ClickCounter::new(true);
    middle.record(key, &ClickMeta::default(), t + 15);
    one.apply(&[middle.take().into()], 0).unwrap();
    let totals = reader.totals(key).unwrap().expect("the link's totals");
    assert_eq!(
        (totals.human + totals.bot, totals.first_ms, totals.last_ms),
        (5, t, t + 30)
    );
}

/// A Redis that refuses writes (out of memory) applies none of a link's
/// counts, and the writer sends them again once it takes writes: nothing
/// lost, nothing counted twice (review 4, F4: every click counted during
/// the refusal was lost, and one command of a link's batch applied).
#[test]
fn counts_refused_by_a_full_redis_are_sent_again_once_it_takes_writes() {
    let Some(redis) = or_skip(Redis::start(&["--maxmemory-policy", "noeviction"])) else {
        return;
    };
    let spec = RedisSpec {
        nodes: vec![redis.url()],
    };
    let t = two_days_ago();
    let mut sink = RedisStats::connect(&spec, TIMEOUT, None).unwrap();
    let reader = RedisStatsReader::connect(&spec, TIMEOUT).unwrap();
    let mut counter = ClickCounter::new(true);
    let click = |counter: &mut ClickCounter, key, at| {
        let meta = ClickMeta {
            referrer_host: Some("t.co"),
            ..ClickMeta::default()
        };
        counter.record(key, &meta, at);
    };
    click(&mut counter, 7, t);
    sink.apply(&[counter.take().into()], 0).unwrap();
    redis.must(&["CONFIG", "SET", "maxmemory", "1"]);
    // Two flushes refused, across an hour boundary.
    for i in 0..3 {
        click(&mut counter, 7, t + 1_000 + i);
        click(&mut counter, 8, t + 1_000 + i);
    }
    assert!(sink.apply(&[counter.take().into()], 0).is_err());
    for i in 0..2 {
        click(&mut counter, 7, t + 3_600_000 + i);
    }
    assert!(sink.apply(&[counter.take().into()], 0).is_err());
    // Nothing of the refused flushes was applied.
    let totals = reader.totals(7).unwrap().expect("link 7's earlier click");
    assert_eq!(totals.human, 1);
    assert!(reader.totals(8).unwrap().is_none_or(|t| t.human == 0));
    redis.must(&["CONFIG", "SET", "maxmemory", "0"]);
    click(&mut counter, 8, t + 3_600_000 + 5);
    sink.apply(&[counter.take().into()], 0).unwrap();
    // And again with nothing new: nothing is sent twice.
    sink.apply(&[], 0).unwrap();
    let seven = reader.totals(7).unwrap().unwrap();
    let eight = reader.totals(8).unwrap().unwrap();
    assert_eq!(
        (seven.human, seven.first_ms, seven.last_ms),
        (6, t, t + 3_600_001)
    );
    assert_eq!((eight.human, eight.first_ms), (4, t + 1_000));
    assert_eq!(seven.referrers.top(10), vec![("t.co".to_owned(), 6)]);
    let view = reader
        .view(
            7,
            t - 1,
            t + 2 * 3_600_000,
            shorty_service::stats::Granularity::Hour,
        )
        .unwrap();
    assert_eq!(
        view.series.iter().map(|(_, n)| n).sum::<u64>(),
        6,
        "{view:?}"
    );
}

/// Clicks flushed after a single Redis restarted are all counted, and the
/// first read after it is answered (review 6, F5: the writer's connection
/// still held its dead socket, so the first flush after the restart met it
/// and its counts were dropped as "may have been applied": 44 of 60; the
/// reader's first read failed the same way).
#[test]
fn clicks_flushed_after_a_redis_restart_are_all_counted() {
    let Some(mut redis) = or_skip(Redis::start(&[])) else {
        return;
    };
    let spec = RedisSpec {
        nodes: vec![redis.url()],
    };
    let t = two_days_ago();
    let key = 9;
    let mut sink = RedisStats::connect(&spec, TIMEOUT, None).unwrap();
    let reader = RedisStatsReader::connect(&spec, TIMEOUT).unwrap();
    let mut counter = ClickCounter::new(true);
    let mut flush = |sink: &mut RedisStats, round: u64| {
        for i in 0..20 {
            counter.record(key, &ClickMeta::default(), t + round * 100 + i);
        }
        sink.apply(&[counter.take().into()], 0)
    };
    flush(&mut sink, 0).unwrap();
    assert_eq!(reader.totals(key).unwrap().map(|t| t.human), Some(20));
    redis.restart();
    let first = flush(&mut sink, 1);
    let second = flush(&mut sink, 2);
    let read = reader.totals(key);
    assert!(
        first.is_ok() && second.is_ok(),
        "flushes after the restart: {first:?}, {second:?} (read: {read:?})"
    );
    let totals = read
        .expect("the first read after the restart")
        .expect("the link's totals");
    assert_eq!(
        (totals.human, totals.first_ms, totals.last_ms),
        (60, t, t + 219)
    );
    // A flush while Redis is down sends nothing (no PING answered): its
    // counts go with the next flush, once Redis is back.
    redis.kill9();
    assert!(flush(&mut sink, 3).is_err());
    redis.restart();
    flush(&mut sink, 4).unwrap();
    let totals = reader.totals(key).unwrap().expect("the link's totals");
    assert_eq!((totals.human, totals.last_ms), (100, t + 419));
}

/// A flush of many links meets a stalled Redis (writes paused longer than
/// the store timeout): the pipelines in flight go unanswered, and the ones
/// not yet sent are kept for the next flush instead of being sent into
/// the stall and lost with them (review 8: a catch-up flush after an
/// outage timed out whole and lost its counts). No link is ever counted
/// twice.
#[test]
fn a_flush_that_meets_a_stalled_redis_keeps_what_it_did_not_send() {
    let Some(redis) = or_skip(Redis::start(&[])) else {
        return;
    };
    let spec = RedisSpec {
        nodes: vec![redis.url()],
    };
    let t = two_days_ago();
    let links = 5 * shorty_runtime::stats_redis::PIPELINE_COMMANDS as u64;
    let mut sink = RedisStats::connect(&spec, Duration::from_secs(1), None).unwrap();
    let mut counter = ClickCounter::new(true);
    for key in 0..links {
        counter.record(key + 1, &ClickMeta::default(), t);
    }
    // PING is not a write: the flush's liveness check passes, its scripts
    // wait.
    redis.must(&["client", "pause", "3000", "write"]);
    let stalled = sink.apply(&[counter.take().into()], 0);
    assert!(stalled.is_err(), "the stall is reported");
    assert!(
        sink.waiting(),
        "the pipelines not sent into the stall wait for the next flush: {stalled:?}"
    );
    std::thread::sleep(Duration::from_millis(3200));
    let retried = sink.apply(&[], 0);
    assert!(retried.is_ok(), "the kept links go again: {retried:?}");
    let reader = RedisStatsReader::connect(&spec, TIMEOUT).unwrap();
    let mut counted = 0;
    for key in 1..=links {
        let human = reader.totals(key).unwrap().map_or(0, |t| t.human);
        assert!(human <= 1, "link {key} counted {human} times");
        counted += human;
    }
    let in_flight = (shorty_runtime::stats_redis::SINGLE_PIPELINES_IN_FLIGHT
        * shorty_runtime::stats_redis::PIPELINE_COMMANDS) as u64;
    assert!(
        counted >= links - in_flight,
        "{counted} of {links} links counted: more than the pipelines in flight lost"
    );
}

/// Flushes call the script by its hash once it is loaded, so a flush
/// sends a fraction of the bytes it did with the script's text in every
/// call; a Redis that lost the script (`SCRIPT FLUSH`, as after a restart
/// or a failover) refuses the calls with `NOSCRIPT`, nothing applied, and
/// the flush loads it again and sends them again: every click counted
/// once.
#[test]
fn flushes_call_the_script_by_its_hash_and_survive_a_script_flush() {
    let Some(redis) = or_skip(Redis::start(&[])) else {
        return;
    };
    let spec = RedisSpec {
        nodes: vec![redis.url()],
    };
    let t = two_days_ago();
    let links = 1_000;
    let mut sink = RedisStats::connect(&spec, TIMEOUT, None).unwrap();
    let mut counter = ClickCounter::new(true);
    let input_bytes = || -> u64 {
        let info = redis.must(&["info", "stats"]);
        info.lines()
            .find_map(|l| l.strip_prefix("total_net_input_bytes:"))
            .expect("total_net_input_bytes")
            .trim()
            .parse()
            .unwrap()
    };
    let mut flush = |sink: &mut RedisStats| {
        for key in 1..=links {
            counter.record(key, &ClickMeta::default(), t);
        }
        sink.apply(&[counter.take().into()], 0)
    };
    // The first flush loads the script.
    flush(&mut sink).unwrap();
    let before = input_bytes();
    flush(&mut sink).unwrap();
    let per_link = (input_bytes() - before) / links;
    eprintln!("{per_link} bytes per link and flush");
    assert!(
        per_link < shorty_runtime::stats_redis::LINK_SCRIPT.len() as u64 / 2,
        "{per_link} bytes per link: the script's text is still sent"
    );
    redis.must(&["script", "flush"]);
    let after = flush(&mut sink);
    assert!(after.is_ok(), "loaded again and sent again: {after:?}");
    assert!(!sink.waiting());
    let reader = RedisStatsReader::connect(&spec, TIMEOUT).unwrap();
    for key in [1, links / 2, links] {
        let human = reader.totals(key).unwrap().map_or(0, |t| t.human);
        assert_eq!(human, 3, "link {key}");
    }
}

/// A writer records, in each link's totals hash and atomically with its
/// counts, the last hand-over they hold; a read by the same process finds
/// its own record (another process's is not its own), a late call never
/// moves it back, and the records of writers silent for an hour are
/// deleted once the hash grows past `MARKER_PRUNE_AT` fields, so restarts
/// do not grow every link's hash.
#[test]
fn a_link_s_counts_say_which_hand_overs_they_hold_and_old_records_go() {
    let Some(redis) = or_skip(Redis::start(&[])) else {
        return;
    };
    let spec = RedisSpec {
        nodes: vec![redis.url()],
    };
    let key = 77;
    let mut buf = [0; shorty_service::codes::MAX_CODE_LEN];
    let code = shorty_service::codes::format_code(key, &mut buf).to_owned();
    let hash = format!("{{{code}}}:clicks");
    // Six writers gone for a day (12 fields) and one still here.
    let day_ago = (std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        - 86_400)
        .to_string();
    for i in 0..6 {
        let (w, t) = (format!("w:dead{i}"), format!("t:dead{i}"));
        redis.must(&["hset", &hash, &w, "9", &t, &day_ago]);
    }
    let alive_at = (std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        - 60)
        .to_string();
    redis.must(&["hset", &hash, "w:alive", "3", "t:alive", &alive_at]);
    let ours = Marker::random().unwrap();
    let mut sink = RedisStats::connect(&spec, TIMEOUT, Some(ours.clone())).unwrap();
    let mut counter = ClickCounter::new(true);
    let t = two_days_ago();
    counter.record(key, &ClickMeta::default(), t);
    counter.record(key, &ClickMeta::default(), t + 1);
    sink.apply(&[counter.take().into()], 5).unwrap();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let read = |marker: Option<&Marker>| {
        runtime.block_on(async {
            let mut conn = connect(&spec, TIMEOUT, false).await.unwrap();
            read_stored(&mut conn, key, t, t + 3_600_000, Granularity::Hour, marker)
                .await
                .unwrap()
        })
    };
    let stored = read(Some(&ours));
    assert_eq!(stored.applied, Some(5));
    assert_eq!(stored.totals.map(|t| t.human), Some(2));
    assert_eq!(stored.rows.iter().map(|r| r.human).sum::<u64>(), 2);
    let other = Marker::random().unwrap();
    assert_eq!(read(Some(&other)).applied, Some(0), "not another writer's");
    // A call holding an earlier hand-over (a late one) leaves the record.
    counter.record(key, &ClickMeta::default(), t + 2);
    sink.apply(&[counter.take().into()], 4).unwrap();
    let stored = read(Some(&ours));
    assert_eq!(
        (stored.applied, stored.totals.map(|t| t.human)),
        (Some(5), Some(3))
    );
    // The dead writers' records are gone; the live one's and ours stay.
    let fields = redis.must(&["hkeys", &hash]);
    assert!(!fields.contains("dead"), "{fields}");
    assert!(
        fields.contains("w:alive") && fields.contains("t:alive"),
        "{fields}"
    );
    assert!(fields.contains(&ours.applied_field()), "{fields}");
    assert!(fields.contains(&ours.time_field()), "{fields}");
    // A reader that knows nothing of the records (a tool) still reads.
    let reader = RedisStatsReader::connect(&spec, TIMEOUT).unwrap();
    assert_eq!(reader.totals(key).unwrap().map(|t| t.human), Some(3));
}
