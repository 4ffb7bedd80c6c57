//! Clicks end to end on the sans-IO shard with a fake wall clock: what a
//! click is (one `GET` answered with a redirect, counted once by a link's
//! click limit and by the statistics), and `ops::stats`' totals and series
//! across hour and day boundaries, with its permission checks.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use shorty_protocol::ErrorCode;
use shorty_service::clicks::LimitId;
use shorty_service::codes::{CodeKey, Codec, IdSpace};
use shorty_service::connection::{Connection, Kind};
use shorty_service::http::Front;
use shorty_service::keydir::{Ident, KeyDir};
use shorty_service::link::{LinkMeta, Principal, Scopes};
use shorty_service::log::segments::SegmentTable;
use shorty_service::log::{IoResult, LogIo};
use shorty_service::ops::lifecycle::{self, CreateRequest};
use shorty_service::ops::stats::{self as stats_ops, StatsQuery};
use shorty_service::ops::{self, Step};
use shorty_service::settings::Settings;
use shorty_service::shard::{LocalStore, OpResult, Shard, Shared, StoreMode};
use shorty_service::stats::{
    Granularity, LinkTotals, StatsReader, StatsView, StoredStats, DAY_MS, HOUR_MS, MAX_BUCKETS,
};

/// 2024-03-01T00:00:00Z: a day (and hour) boundary.
const MIDNIGHT: u64 = 1_709_251_200_000;
const MS: Duration = Duration::from_millis(1);

struct Rig {
    shard: Shard,
    t0: Instant,
    disk: HashMap<u32, Vec<u8>>,
}

/// One core over an empty embedded log; its wall clock reads one ms
/// before midnight at `t0`.
fn rig(stats: bool) -> Rig {
    let store = LocalStore {
        keydir: Arc::new(KeyDir::new()),
        segments: Arc::new(SegmentTable::new(std::path::Path::new("/data"), 0)),
        ids: Arc::new(IdSpace::new(0)),
    };
    let mut settings = Settings::for_tests("http://s.example/");
    settings.stats = stats;
    let shared = Arc::new(Shared::new(
        settings,
        Codec::new(&CodeKey([7; 16])),
        StoreMode::Local(store),
        1,
    ));
    let t0 = Instant::now();
    let mut shard = Shard::new(shared, 0);
    shard.set_wall_clock(t0, MIDNIGHT - 1);
    Rig {
        shard,
        t0,
        disk: HashMap::new(),
    }
}

fn key_holder(id: u32, scopes: Scopes) -> Principal {
    Principal {
        key_id: Some(id),
        scopes,
    }
}

impl Rig {
    fn run(&mut self, now: Instant) {
        loop {
            let mut busy = false;
            while let Some(io) = self.shard.poll_log_io(now) {
                if let LogIo::Write(batch) = &io {
                    let file = self.disk.entry(batch.segment.idx).or_default();
                    file.truncate(batch.offset as usize);
                    file.extend_from_slice(&batch.bytes);
                }
                self.shard.log_done(&io, IoResult::Ok, now);
                busy = true;
            }
            while let Some(read) = self.shard.poll_read() {
                let file = &self.disk[&read.file];
                let at = read.offset as usize;
                let bytes = Bytes::copy_from_slice(&file[at..(at + read.len).min(file.len())]);
                self.shard.read_done(read, Ok(bytes));
                busy = true;
            }
            if !busy {
                return;
            }
        }
    }

    fn settle(&mut self, step: Step, now: Instant) -> OpResult {
        match step {
            Step::Now(result) => result,
            Step::Pending(op) => {
                self.run(now);
                self.shard.take_result(op).expect("settled")
            }
        }
    }

    /// Creates a link owned by key 5; returns its code.
    fn created(&mut self, alias: Option<&str>, options: LinkMeta) -> String {
        let request = CreateRequest {
            url: b"https://e.com/landing",
            alias,
            options,
        };
        let who = key_holder(5, Scopes::LINKS_WRITE);
        let step = lifecycle::create(&mut self.shard, 1, request, who, self.t0);
        match self.settle(step, self.t0) {
            OpResult::Link(view) => view.code.into(),
            other => panic!("{other:?}"),
        }
    }

    /// One HTTP request (`method` `/code`, extra header lines) at `now`:
    /// the status code.
    fn http(&mut self, method: &str, code: &str, extra: &str, now: Instant) -> u16 {
        let mut conn = Connection::new(2, Kind::Http(Front::Public), now);
        let head = format!("{method} /{code} HTTP/1.1\r\nHost: s\r\n{extra}\r\n");
        conn.handle_input(&mut self.shard, head.as_bytes(), now);
        self.run(now);
        let mut text = Vec::new();
        while let Some(chunk) = conn.poll_transmit(&mut self.shard, now) {
            text.extend_from_slice(&chunk);
            conn.transmitted();
        }
        let text = String::from_utf8(text).unwrap();
        text[9..12].parse().unwrap()
    }

    /// A RESOLVE (no click) at `now`.
    fn resolve(&mut self, code: &str, now: Instant) -> OpResult {
        let step = ops::resolve::resolve(&mut self.shard, 1, code.as_bytes(), now, None);
        self.settle(step, now)
    }

    fn totals(&mut self, code: &str, who: Principal) -> Result<StatsView, OpResult> {
        let step = stats_ops::totals(&mut self.shard, 1, code.as_bytes(), who);
        match self.settle(step, self.t0) {
            OpResult::Stats(view) => Ok(*view),
            other => Err(other),
        }
    }

    fn series(
        &mut self,
        code: &str,
        who: Principal,
        query: StatsQuery,
    ) -> Result<StatsView, OpResult> {
        let step = stats_ops::series(&mut self.shard, 1, code.as_bytes(), who, query);
        match self.settle(step, self.t0) {
            OpResult::Stats(view) => Ok(*view),
            other => Err(other),
        }
    }
}

fn failed(result: Result<StatsView, OpResult>) -> u16 {
    match result {
        Err(OpResult::Failed(code, _)) => code.0,
        Err(OpResult::NotFound) => 404,
        other => panic!("{other:?}"),
    }
}

fn query(from_ms: u64, to_ms: u64, granularity: Granularity) -> StatsQuery {
    StatsQuery {
        from_ms,
        to_ms,
        granularity,
    }
}

#[test]
fn a_get_redirect_is_one_click_for_the_limit_and_the_statistics_and_nothing_else_is() {
    let mut rig = rig(true);
    let t = rig.t0;
    let limited = LinkMeta {
        max_clicks: Some(2),
        ..LinkMeta::default()
    };
    let code = rig.created(None, limited);
    // HEADs and RESOLVEs are not clicks: they take none of the limit.
    for _ in 0..3 {
        assert_eq!(rig.http("HEAD", &code, "", t), 302);
        assert!(matches!(rig.resolve(&code, t), OpResult::Redirect { .. }));
    }
    // Two GETs pass (one from a bot), the third finds the limit reached.
    assert_eq!(
        rig.http("GET", &code, "Referer: https://news.example/a\r\n", t),
        302
    );
    assert_eq!(rig.http("GET", &code, "User-Agent: curl/8.5.0\r\n", t), 302);
    assert_eq!(rig.http("GET", &code, "", t), 410);
    // Now a HEAD and a RESOLVE see the link gone too, and take nothing.
    assert_eq!(rig.http("HEAD", &code, "", t), 410);
    assert!(matches!(rig.resolve(&code, t), OpResult::Gone { .. }));
    let key = rig.shard.shared().codec.parse(code.as_bytes()).unwrap();
    // The link was made at the rig's wall clock: its life's count.
    let life = LimitId {
        link: Ident::Key(key),
        created_at_ms: MIDNIGHT - 1,
    };
    assert_eq!(rig.shard.shared().clicks.clicks(life), 2);
    // The statistics saw the same two clicks, never the 410.
    let view = rig.totals(&code, Principal::ANYONE).unwrap();
    assert_eq!((view.total, view.human, view.bot), (2, 1, 1));
    assert_eq!(view.referrers, vec![("news.example".to_owned(), 1)]);
    assert!(view.series.is_empty());
    // A 404 counts nowhere.
    assert_eq!(rig.http("GET", "zzzzzzz", "", t), 404);
    assert_eq!(rig.shard.stats.pending_links(), 1);
}

#[test]
fn series_buckets_clicks_at_hour_and_day_boundaries_with_the_stored_counts() {
    let mut rig = rig(true);
    let t = rig.t0;
    let code = rig.created(None, LinkMeta::default());
    // 23:59:59.999 on Feb 29, then 00:00:00.000 and 01:00:00.000 on Mar 1.
    for now in [t, t + MS, t + MS + Duration::from_millis(HOUR_MS)] {
        assert_eq!(rig.http("GET", &code, "", now), 302);
    }
    let hourly = rig
        .series(
            &code,
            Principal::ANYONE,
            query(
                MIDNIGHT - HOUR_MS,
                MIDNIGHT + 2 * HOUR_MS,
                Granularity::Hour,
            ),
        )
        .unwrap();
    assert_eq!(
        hourly.series,
        vec![
            (MIDNIGHT - HOUR_MS, 1),
            (MIDNIGHT, 1),
            (MIDNIGHT + HOUR_MS, 1)
        ]
    );
    assert_eq!(hourly.first_click_ms, Some(MIDNIGHT - 1));
    assert_eq!(hourly.last_click_ms, Some(MIDNIGHT + HOUR_MS));
    let daily = rig
        .series(
            &code,
            Principal::ANYONE,
            query(MIDNIGHT - DAY_MS, MIDNIGHT + DAY_MS, Granularity::Day),
        )
        .unwrap();
    assert_eq!(daily.series, vec![(MIDNIGHT - DAY_MS, 1), (MIDNIGHT, 2)]);
    assert_eq!(daily.total, 3);

    // With a store: what it holds (10 clicks two hours before midnight)
    // and this core's pending clicks add up.
    #[derive(Debug)]
    struct Stored;
    impl StatsReader for Stored {
        fn stored(&self, _: u64, _: u64, _: u64, g: Granularity) -> std::io::Result<StoredStats> {
            let at = MIDNIGHT - 2 * HOUR_MS;
            Ok(StoredStats {
                totals: Some(LinkTotals {
                    human: 10,
                    first_ms: at,
                    last_ms: at,
                    ..LinkTotals::default()
                }),
                rows: vec![shorty_service::stats::SeriesRow {
                    bucket: (at / g.millis()) as u32,
                    human: 10,
                    bot: 0,
                }],
                applied: None,
            })
        }
    }
    assert!(rig.shard.shared().stats.set(Box::new(Stored)).is_ok());
    let hourly = rig
        .series(
            &code,
            Principal::ANYONE,
            query(
                MIDNIGHT - 2 * HOUR_MS,
                MIDNIGHT + HOUR_MS,
                Granularity::Hour,
            ),
        )
        .unwrap();
    assert_eq!(
        hourly.series,
        vec![
            (MIDNIGHT - 2 * HOUR_MS, 10),
            (MIDNIGHT - HOUR_MS, 1),
            (MIDNIGHT, 1)
        ]
    );
    assert_eq!(
        (hourly.total, hourly.first_click_ms),
        (13, Some(MIDNIGHT - 2 * HOUR_MS))
    );
    let daily = rig
        .series(
            &code,
            Principal::ANYONE,
            query(MIDNIGHT - DAY_MS, MIDNIGHT + DAY_MS, Granularity::Day),
        )
        .unwrap();
    assert_eq!(daily.series, vec![(MIDNIGHT - DAY_MS, 11), (MIDNIGHT, 2)]);
}

#[test]
fn statistics_are_read_with_stats_read_or_by_whoever_may_change_the_link() {
    let mut rig = rig(true);
    let code = rig.created(None, LinkMeta::default());
    let owner = key_holder(5, Scopes::LINKS_WRITE);
    let other_writer = key_holder(6, Scopes::LINKS_WRITE);
    let link_reader = key_holder(6, Scopes::LINKS_READ);
    let stats_reader = key_holder(6, Scopes::STATS_READ);
    let admin = key_holder(7, Scopes::LINKS_ALL);
    for who in [owner, stats_reader, admin, Principal::ANYONE] {
        assert_eq!(rig.totals(&code, who).unwrap().total, 0, "{who:?}");
    }
    for who in [other_writer, link_reader] {
        assert_eq!(failed(rig.totals(&code, who)), 403, "{who:?}");
        let day = query(MIDNIGHT, MIDNIGHT + DAY_MS, Granularity::Day);
        assert_eq!(failed(rig.series(&code, who, day)), 403, "{who:?}");
    }
    assert_eq!(failed(rig.totals("zzzzzzz", Principal::ANYONE)), 404);
    // A range is bounded, and ends after it starts.
    let long = query(0, (MAX_BUCKETS + 1) * HOUR_MS, Granularity::Hour);
    assert_eq!(failed(rig.series(&code, owner, long)), 422);
    let backwards = query(MIDNIGHT, MIDNIGHT - DAY_MS, Granularity::Day);
    assert_eq!(failed(rig.series(&code, owner, backwards)), 422);
    let widest = query(0, MAX_BUCKETS * HOUR_MS, Granularity::Hour);
    let view = rig.series(&code, owner, widest).unwrap();
    assert_eq!(view.series.len() as u64, MAX_BUCKETS);
}

#[test]
fn statistics_off_answer_not_implemented_and_a_side_map_alias_is_counted() {
    let mut off = rig(false);
    let code = off.created(None, LinkMeta::default());
    assert_eq!(off.http("GET", &code, "", off.t0), 302);
    assert_eq!(
        failed(off.totals(&code, Principal::ANYONE)),
        ErrorCode::UNKNOWN_OPCODE.0
    );
    // An alias not spelled like a code has its own statistics key (it
    // answered 501 before).
    let mut on = rig(true);
    let alias = on.created(Some("spring-sale"), LinkMeta::default());
    assert_eq!(alias, "spring-sale");
    assert_eq!(on.http("GET", &alias, "", on.t0), 302);
    assert_eq!(on.http("HEAD", &alias, "", on.t0), 302);
    assert_eq!(on.shard.stats.pending_links(), 1);
    let view = on.totals(&alias, Principal::ANYONE).unwrap();
    assert_eq!((view.total, view.human), (1, 1));
}
