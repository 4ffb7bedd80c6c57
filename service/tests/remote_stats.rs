//! Click statistics with a remote store, on the sans-IO shard: a read is
//! an operation the store thread answers (`RemoteRequest::Stats`), never a
//! wait on the core, and its answer is added to the core's pending clicks.

use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use shorty_protocol::ErrorCode;
use shorty_service::codes::{format_code, CodeKey, Codec, MAX_CODE_LEN};
use shorty_service::link::Principal;
use shorty_service::ops::stats::{self as stats_ops, StatsQuery};
use shorty_service::ops::{lifecycle, Step};
use shorty_service::settings::Settings;
use shorty_service::shard::{OpResult, RemoteReply, RemoteRequest, Shard, Shared, StoreMode};
use shorty_service::stats::{ClickMeta, Granularity, LinkTotals, SeriesRow, StoredStats, HOUR_MS};

/// 2024-03-01T00:00:00Z.
const MIDNIGHT: u64 = 1_709_251_200_000;
const KEY: u64 = 4_242;

/// One core over a remote store, with statistics on or off.
fn remote_shard(stats: bool) -> Shard {
    let mut settings = Settings::for_tests("http://s.example/");
    settings.stats = stats;
    remote_shard_with(settings)
}

/// One core over a remote store with `settings`.
fn remote_shard_with(settings: Settings) -> Shard {
    let shared = Arc::new(Shared::new(
        settings,
        Codec::new(&CodeKey([7; 16])),
        StoreMode::Remote,
        1,
    ));
    Shard::new(shared, 0)
}

/// One core over a remote store, statistics on and no reader of their
/// own (as the server runs with `--store redis://…`), with two clicks of
/// `KEY` pending at midnight's hour.
fn shard() -> Shard {
    let mut shard = remote_shard(true);
    shard.set_wall_clock(Instant::now(), MIDNIGHT);
    for _ in 0..2 {
        shard
            .stats
            .record(KEY, &ClickMeta::default(), MIDNIGHT + 10);
    }
    shard
}

fn code() -> String {
    let mut buf = [0; MAX_CODE_LEN];
    format_code(KEY, &mut buf).to_owned()
}

/// Answers the link read `step` asked for with a plain link.
fn link_read(shard: &mut Shard, step: Step) -> u32 {
    let Step::Pending(op) = step else {
        panic!("{step:?}")
    };
    match shard.poll_remote() {
        Some(RemoteRequest::Read { op: asked, code: c }) => {
            assert_eq!((asked, &*c), (op, code().as_str()));
        }
        other => panic!("{other:?}"),
    }
    shard.remote_done(
        op,
        RemoteReply::Link {
            url: Bytes::from_static(b"https://example.com/"),
            meta: None,
            version: 0,
        },
    );
    op
}

/// What the store holds: 5 human clicks in midnight's hour.
fn stored() -> StoredStats {
    StoredStats {
        totals: Some(LinkTotals {
            human: 5,
            first_ms: MIDNIGHT + 1,
            last_ms: MIDNIGHT + 5,
            ..LinkTotals::default()
        }),
        rows: vec![SeriesRow {
            bucket: u32::try_from(MIDNIGHT / HOUR_MS).unwrap(),
            human: 5,
            bot: 0,
        }],
        applied: None,
    }
}

#[test]
fn a_series_waits_for_the_store_and_adds_this_core_s_pending_clicks() {
    let mut shard = shard();
    let query = StatsQuery {
        from_ms: MIDNIGHT - HOUR_MS,
        to_ms: MIDNIGHT + HOUR_MS,
        granularity: Granularity::Hour,
    };
    let step = stats_ops::series(&mut shard, 1, code().as_bytes(), Principal::ANYONE, query);
    let op = link_read(&mut shard, step);
    // The statistics are asked of the store; the operation waits.
    assert_eq!(
        shard.poll_remote(),
        Some(RemoteRequest::Stats {
            op,
            keys: vec![KEY],
            from_ms: query.from_ms,
            to_ms: query.to_ms,
            granularity: Granularity::Hour,
        })
    );
    assert_eq!(shard.take_result(op), None);
    shard.remote_done(op, RemoteReply::Stats(Ok(vec![stored()])));
    let Some(OpResult::Stats(view)) = shard.take_result(op) else {
        panic!("no statistics")
    };
    assert_eq!((view.total, view.human, view.bot), (7, 7, 0));
    assert_eq!(
        view.series,
        vec![(MIDNIGHT - HOUR_MS, 0), (MIDNIGHT, 7)],
        "{view:?}"
    );
    assert_eq!(
        (view.first_click_ms, view.last_click_ms),
        (Some(MIDNIGHT + 1), Some(MIDNIGHT + 10))
    );
}

#[test]
fn a_read_the_store_could_not_answer_is_an_error_that_says_so() {
    let mut shard = shard();
    let step = stats_ops::totals(&mut shard, 1, code().as_bytes(), Principal::ANYONE);
    let op = link_read(&mut shard, step);
    assert!(matches!(
        shard.poll_remote(),
        Some(RemoteRequest::Stats { .. })
    ));
    shard.remote_done(
        op,
        RemoteReply::Stats(Err("the store did not answer within 1s".into())),
    );
    assert_eq!(
        shard.take_result(op),
        Some(OpResult::Failed(
            ErrorCode::INTERNAL,
            "the statistics could not be read".into()
        ))
    );
}

/// A core keeps at most `MAX_REMOTE_STATS_READS` statistics reads in
/// flight: past it a read is refused at once, with nothing sent, and one
/// answered makes room (review 16: clients that asked and hung up queued
/// reads without bound).
#[test]
fn statistics_reads_in_flight_are_bounded_per_core() {
    let mut shard = shard();
    let mut ops = Vec::new();
    for conn in 0..stats_ops::MAX_REMOTE_STATS_READS as u32 {
        let step = stats_ops::totals(&mut shard, conn, code().as_bytes(), Principal::ANYONE);
        let op = link_read(&mut shard, step);
        assert!(matches!(
            shard.poll_remote(),
            Some(RemoteRequest::Stats { .. })
        ));
        ops.push(op);
    }
    let late = stats_ops::totals(&mut shard, 999, code().as_bytes(), Principal::ANYONE);
    let op = link_read(&mut shard, late);
    assert_eq!(shard.poll_remote(), None, "nothing more is asked");
    assert!(matches!(
        shard.take_result(op),
        Some(OpResult::Failed(ErrorCode::OVERLOADED, _))
    ));
    // One answered (an error counts too): room for one more.
    shard.remote_done(ops[0], RemoteReply::Stats(Ok(vec![stored()])));
    assert!(matches!(
        shard.take_result(ops[0]),
        Some(OpResult::Stats(_))
    ));
    let again = stats_ops::totals(&mut shard, 1000, code().as_bytes(), Principal::ANYONE);
    link_read(&mut shard, again);
    assert!(matches!(
        shard.poll_remote(),
        Some(RemoteRequest::Stats { .. })
    ));
}

#[test]
fn a_link_view_is_answered_with_its_totals_read_first() {
    let mut shard = shard();
    let step = lifecycle::info(&mut shard, 1, code().as_bytes(), Principal::ANYONE);
    let op = link_read(&mut shard, step);
    // Totals only: an empty range.
    assert_eq!(
        shard.poll_remote(),
        Some(RemoteRequest::Stats {
            op,
            keys: vec![KEY],
            from_ms: 0,
            to_ms: 0,
            granularity: Granularity::Hour,
        })
    );
    assert_eq!(shard.take_result(op), None);
    shard.remote_done(op, RemoteReply::Stats(Ok(vec![stored()])));
    let Some(OpResult::Link(view)) = shard.take_result(op) else {
        panic!("no link")
    };
    assert_eq!(view.clicks, Some(Ok(stored())));
    // Nothing else is asked of the store.
    assert_eq!(shard.poll_remote(), None);
}

#[test]
fn without_statistics_a_link_view_asks_the_store_nothing_more() {
    let mut shard = remote_shard(false);
    let step = lifecycle::info(&mut shard, 1, code().as_bytes(), Principal::ANYONE);
    let op = link_read(&mut shard, step);
    assert_eq!(shard.poll_remote(), None);
    assert!(matches!(shard.take_result(op), Some(OpResult::Link(_))));
}

/// A page of the API's listing asks the store for every link's totals in
/// one request and is answered once they are in: each link with its own,
/// or with `clicksError` when they could not be read.
#[test]
fn a_page_of_links_waits_for_all_their_totals_in_one_read() {
    use shorty_service::api::auth::{hash_key, key_text, KeyRecord, KeyTable, KeysFile};
    use shorty_service::connection::{Connection, Kind};
    use shorty_service::http::Front;
    use shorty_service::shard::LinkView;

    let mut settings = Settings::for_tests("http://s.example/");
    settings.stats = true;
    let shared = Arc::new(Shared::new(
        settings,
        Codec::new(&CodeKey([7; 16])),
        StoreMode::Remote,
        1,
    ));
    let text = key_text(&[3; 32]);
    let record = KeyRecord {
        id: 3,
        name: "k3".into(),
        sha256: hash_key(text.as_bytes())
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect(),
        scopes: "links:read,stats:read".into(),
        created_at_ms: 0,
        expires_at_ms: None,
        revoked_at_ms: None,
        rate_create: None,
    };
    let file = KeysFile { keys: vec![record] };
    shared.keys.install(KeyTable::from_file(&file, 0).unwrap());
    let mut codes = Vec::new();
    for key in [KEY, KEY + 1] {
        let mut buf = [0; MAX_CODE_LEN];
        codes.push((key, format_code(key, &mut buf).to_owned()));
    }
    let page = || OpResult::Page {
        links: codes
            .iter()
            .map(|(_, code)| LinkView {
                code: code.as_str().into(),
                url: Bytes::from_static(b"https://example.com/"),
                meta: Default::default(),
                clicks: None,
            })
            .collect(),
        next: None,
    };
    for failed in [false, true] {
        let mut shard = Shard::new(shared.clone(), 0);
        let t = Instant::now();
        let mut conn = Connection::new(1, Kind::Http(Front::Public), t);
        let request = format!("GET /api/v1/links HTTP/1.1\r\nHost: s\r\nX-Api-Key: {text}\r\n\r\n");
        conn.handle_input(&mut shard, request.as_bytes(), t);
        let Some(RemoteRequest::List { op, .. }) = shard.poll_remote() else {
            panic!("no listing asked")
        };
        shard.remote_done(op, RemoteReply::Done(page()));
        assert_eq!(
            shard.poll_remote(),
            Some(RemoteRequest::Stats {
                op,
                keys: vec![KEY, KEY + 1],
                from_ms: 0,
                to_ms: 0,
                granularity: Granularity::Hour,
            })
        );
        assert_eq!(conn.poll_transmit(&mut shard, t), None, "answered early");
        let read = if failed {
            Err("the store did not answer".into())
        } else {
            Ok(vec![stored(), StoredStats::default()])
        };
        shard.remote_done(op, RemoteReply::Stats(read));
        let mut response = String::new();
        while let Some(chunk) = conn.poll_transmit(&mut shard, t) {
            response.push_str(std::str::from_utf8(&chunk).unwrap());
            conn.transmitted();
        }
        assert!(response.starts_with("HTTP/1.1 200 "), "{response}");
        let body = &response[response.find("\r\n\r\n").unwrap() + 4..];
        let json: serde_json::Value = serde_json::from_str(body).unwrap();
        let links = json["links"].as_array().expect("links");
        let totals: Vec<_> = links
            .iter()
            .map(|l| l["clicks"]["total"].as_u64())
            .collect();
        let errors: Vec<_> = links.iter().map(|l| l["clicksError"].as_str()).collect();
        if failed {
            assert_eq!(totals, vec![None, None], "{body}");
            assert_eq!(
                errors,
                vec![Some("the statistics could not be read"); 2],
                "{body}"
            );
        } else {
            // As stored: this shard has no pending clicks.
            assert_eq!(totals, vec![Some(5), Some(0)], "{body}");
            assert_eq!(errors, vec![None, None], "{body}");
        }
    }
}

/// A GET redirect of a limited alias on a remote store, once the store
/// has taken its click, is counted in the statistics under the alias's
/// statistics key, as an unlimited alias's is (review 9: it was counted
/// under the alias marker key, which statistics skip, so a limited alias
/// never had a click in its statistics on Redis).
#[test]
fn a_limited_alias_s_click_on_a_remote_store_is_counted_in_its_statistics() {
    use shorty_service::link::LinkMeta;
    use shorty_service::ops::resolve;
    let mut shard = remote_shard(true);
    shard.set_wall_clock(Instant::now(), MIDNIGHT);
    let now = Instant::now();
    let meta = LinkMeta {
        alias: Some("s-lim".into()),
        created_at_ms: Some(MIDNIGHT - 5),
        max_clicks: Some(10),
        ..LinkMeta::default()
    };
    let step = resolve::resolve(&mut shard, 1, b"s-lim", now, Some(ClickMeta::default()));
    let Step::Pending(op) = step else {
        panic!("{step:?}")
    };
    assert!(matches!(
        shard.poll_remote(),
        Some(RemoteRequest::Read { code, .. }) if &*code == "s-lim"
    ));
    shard.remote_done(
        op,
        RemoteReply::Link {
            url: Bytes::from_static(b"https://example.com/"),
            meta: Some(meta),
            version: 1,
        },
    );
    // The click is taken in the store, every node counting against one count.
    assert!(matches!(
        shard.poll_remote(),
        Some(RemoteRequest::Count { take: true, .. })
    ));
    shard.remote_done(op, RemoteReply::Counted { left: true });
    assert!(matches!(
        shard.take_result(op),
        Some(OpResult::Url(_) | OpResult::Redirect { .. })
    ));
    let key = Codec::new(&CodeKey([7; 16])).alias_stats_key("s-lim", MIDNIGHT - 5);
    assert_eq!(
        shard.stats.pending(key).map(|p| p.total()),
        Some(1),
        "the click is pending under the alias's statistics key"
    );
}

/// `--store-cache-ttl 0` means no cache: every request of a remote link
/// asks the store again (review 9: the flag refused 0, which the README
/// documents as "no cache").
#[test]
fn a_remote_cache_ttl_of_zero_asks_the_store_every_time() {
    use shorty_service::ops::resolve;
    let mut settings = Settings::for_tests("http://s.example/");
    settings.remote_cache_ttl = std::time::Duration::ZERO;
    let mut shard = remote_shard_with(settings);
    let now = Instant::now();
    shard.set_wall_clock(now, MIDNIGHT);
    for _ in 0..2 {
        let step = resolve::resolve(&mut shard, 1, code().as_bytes(), now, None);
        let Step::Pending(op) = step else {
            panic!("served from a cache: {step:?}")
        };
        assert_eq!(
            shard.poll_remote(),
            Some(RemoteRequest::Get { op, key: KEY })
        );
        shard.remote_done(
            op,
            RemoteReply::Done(OpResult::Url(Bytes::from_static(b"https://example.com/"))),
        );
        assert!(shard.take_result(op).is_some());
    }
}
