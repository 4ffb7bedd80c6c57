//! Click counting on the redirect path, driven by hand: a fake clock, no
//! sockets, the log's I/O answered by the test.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use shorty_protocol::frame::{FrameDecoder, Status};
use shorty_protocol::{Reply, Request};
use shorty_service::connection::{Connection, Kind};
use shorty_service::http::Front;
use shorty_service::log::{IoResult, LogIo};
use shorty_service::settings::Settings;
use shorty_service::shard::{Shard, Shared};
use shorty_service::stats::{
    hour_of, Granularity, LinkTotals, StatsReader, StoredStats, DAY_MS, HOUR_MS,
};

/// 2024-03-01T00:00:00Z.
const MIDNIGHT: u64 = 1_709_251_200_000;

struct Rig {
    shard: Shard,
    t0: Instant,
    disk: std::collections::HashMap<u32, Vec<u8>>,
}

impl Rig {
    fn new(stats: bool) -> Self {
        let mut settings = Settings::for_tests("http://s.example/");
        settings.stats = stats;
        let mut shard = Shard::new(Arc::new(Shared::for_tests(settings)), 0);
        let t0 = Instant::now();
        // The wall clock: one ms before midnight at t0.
        shard.set_wall_clock(t0, MIDNIGHT - 1);
        Self {
            shard,
            t0,
            disk: Default::default(),
        }
    }

    fn run_log(&mut self, now: Instant) {
        while let Some(io) = self.shard.poll_log_io(now) {
            if let LogIo::Write(batch) = &io {
                let file = self.disk.entry(batch.segment.idx).or_default();
                file.truncate(batch.offset as usize);
                file.extend_from_slice(&batch.bytes);
            }
            self.shard.log_done(&io, IoResult::Ok, now);
        }
    }

    fn serve_reads(&mut self) -> usize {
        let mut n = 0;
        while let Some(read) = self.shard.poll_read() {
            let file = &self.disk[&read.file];
            let at = read.offset as usize;
            let bytes = Bytes::copy_from_slice(&file[at..(at + read.len).min(file.len())]);
            self.shard.read_done(read, Ok(bytes));
            n += 1;
        }
        n
    }

    /// Shortens `url`; returns its code.
    fn shorten(&mut self, url: &[u8]) -> String {
        let t = self.t0;
        let mut conn = Connection::new(9, Kind::Framed, t);
        let mut wire = Vec::new();
        Request::Shorten(url).encode_frame(&mut wire).unwrap();
        conn.handle_input(&mut self.shard, &wire, t);
        self.run_log(t);
        let mut bytes = BytesMut::new();
        while let Some(chunk) = conn.poll_transmit(&mut self.shard, t) {
            bytes.extend_from_slice(&chunk);
            conn.transmitted();
        }
        let Status::Complete(p) = FrameDecoder::with_max_frame_len(1 << 20)
            .decode(&mut bytes)
            .unwrap()
        else {
            panic!("no reply")
        };
        let Reply::Shortened(short) = Reply::decode_payload(p).unwrap() else {
            panic!("not shortened")
        };
        String::from_utf8(short.to_vec())
            .unwrap()
            .rsplit('/')
            .next()
            .unwrap()
            .to_owned()
    }

    /// Sends one HTTP request head and returns the status line once it is
    /// answered (serving the log read if it needs one).
    fn http(&mut self, head: &str, now: Instant) -> String {
        let mut conn = Connection::new(2, Kind::Http(Front::Public), now);
        conn.handle_input(&mut self.shard, head.as_bytes(), now);
        self.serve_reads();
        let mut text = String::new();
        while let Some(chunk) = conn.poll_transmit(&mut self.shard, now) {
            text.push_str(std::str::from_utf8(&chunk).unwrap());
            conn.transmitted();
        }
        text.lines().next().unwrap_or_default().to_owned()
    }

    fn key(&self, code: &str) -> u64 {
        self.shard.shared().codec.parse(code.as_bytes()).unwrap()
    }
}

fn get(code: &str, extra: &str) -> String {
    format!("GET /{code} HTTP/1.1\r\nHost: s\r\n{extra}\r\n")
}

#[test]
fn only_answered_get_redirects_count_and_bots_and_referrers_apart() {
    let mut rig = Rig::new(true);
    let code = rig.shorten(b"https://e.com/a");
    let key = rig.key(&code);
    let t = rig.t0;
    // A cache miss: counted once the read answers it.
    assert_eq!(rig.http(&get(&code, ""), t), "HTTP/1.1 302 Found");
    // A cached one, one ms later: after midnight, in the next hour.
    let t1 = t + Duration::from_millis(1);
    let firefox = "User-Agent: Mozilla/5.0 (X11; Linux x86_64; rv:121.0) Gecko/20100101 \
                   Firefox/121.0\r\nReferer: https://News.Example/p?q=1\r\n";
    assert_eq!(rig.http(&get(&code, firefox), t1), "HTTP/1.1 302 Found");
    let bot = "User-Agent: facebookexternalhit/1.1\r\n";
    assert_eq!(rig.http(&get(&code, bot), t1), "HTTP/1.1 302 Found");
    // Never counted: HEAD, 404, another route.
    let head = format!("HEAD /{code} HTTP/1.1\r\nHost: s\r\n\r\n");
    assert_eq!(rig.http(&head, t1), "HTTP/1.1 302 Found");
    assert_eq!(rig.http(&get("zzzzzzz", ""), t1), "HTTP/1.1 404 Not Found");
    assert_eq!(rig.http(&get("healthz", ""), t1), "HTTP/1.1 200 OK");
    let p = rig.shard.stats.pending(key).expect("counted");
    assert_eq!((p.human, p.bot), (2, 1));
    assert_eq!((p.first_ms, p.last_ms), (MIDNIGHT - 1, MIDNIGHT));
    let hours: Vec<_> = p.hours().map(|h| (h.hour, h.human + h.bot)).collect();
    assert_eq!(
        hours,
        vec![(hour_of(MIDNIGHT - 1), 1), (hour_of(MIDNIGHT), 2)]
    );
    assert_eq!(p.referrers, vec![("news.example".into(), 1)]);
    assert_eq!(rig.shard.stats.pending_links(), 1);
    // The metrics count the same.
    let snap = shorty_service::metrics::Snapshot::of(rig.shard.shared().metrics.iter());
    assert_eq!(snap.clicks, [2, 1]);
    // Handed over: the core starts the next interval empty.
    let map = rig.shard.stats.take();
    assert_eq!(map[&key].total(), 3);
    assert_eq!(rig.shard.stats.pending_links(), 0);
}

#[test]
fn a_redirect_that_times_out_is_not_a_click() {
    let mut rig = Rig::new(true);
    let code = rig.shorten(b"https://e.com/slow");
    let key = rig.key(&code);
    let t = rig.t0;
    let mut conn = Connection::new(3, Kind::Http(Front::Public), t);
    conn.handle_input(&mut rig.shard, get(&code, "").as_bytes(), t);
    // The read never completes: past --store-timeout the answer is 503.
    let late = t + Duration::from_secs(60);
    let mut text = String::new();
    while let Some(chunk) = conn.poll_transmit(&mut rig.shard, late) {
        text.push_str(std::str::from_utf8(&chunk).unwrap());
        conn.transmitted();
    }
    assert!(text.starts_with("HTTP/1.1 503"), "{text}");
    assert!(rig.shard.stats.pending(key).is_none());
}

#[test]
fn stats_off_counts_nothing() {
    let mut rig = Rig::new(false);
    let code = rig.shorten(b"https://e.com/off");
    let t = rig.t0;
    assert_eq!(rig.http(&get(&code, ""), t), "HTTP/1.1 302 Found");
    assert_eq!(rig.http(&get(&code, ""), t), "HTTP/1.1 302 Found");
    assert_eq!(rig.shard.stats.pending_links(), 0);
}

/// A store that holds one link's stored totals and hourly rows.
struct Stored(LinkTotals, Vec<(u64, u64)>);

impl StatsReader for Stored {
    fn stored(
        &self,
        _key: u64,
        _from_ms: u64,
        _to_ms: u64,
        granularity: Granularity,
    ) -> std::io::Result<StoredStats> {
        let rows = self
            .1
            .iter()
            .map(|&(ms, n)| shorty_service::stats::SeriesRow {
                bucket: (ms / granularity.millis()) as u32,
                human: n,
                bot: 0,
            })
            .collect();
        Ok(StoredStats {
            totals: Some(self.0.clone()),
            rows,
            applied: None,
        })
    }
}

#[test]
fn a_view_adds_this_cores_pending_clicks_to_the_store() {
    let mut rig = Rig::new(true);
    let code = rig.shorten(b"https://e.com/v");
    let key = rig.key(&code);
    let from = MIDNIGHT - DAY_MS;
    assert!(rig
        .shard
        .stats_view(key, from, MIDNIGHT + HOUR_MS, Granularity::Hour)
        .is_none());
    let stored = LinkTotals {
        human: 5,
        first_ms: MIDNIGHT - 3 * HOUR_MS,
        last_ms: MIDNIGHT - 2 * HOUR_MS,
        ..Default::default()
    };
    let reader = Stored(stored, vec![(MIDNIGHT - 3 * HOUR_MS, 5)]);
    assert!(rig.shard.shared().stats.set(Box::new(reader)).is_ok());
    let t = rig.t0 + Duration::from_millis(1);
    assert_eq!(rig.http(&get(&code, ""), t), "HTTP/1.1 302 Found");
    let view = rig
        .shard
        .stats_view(
            key,
            MIDNIGHT - 4 * HOUR_MS,
            MIDNIGHT + HOUR_MS,
            Granularity::Hour,
        )
        .unwrap()
        .unwrap();
    assert_eq!(view.total, 6);
    assert_eq!(view.last_click_ms, Some(MIDNIGHT));
    assert_eq!(
        view.series,
        vec![
            (MIDNIGHT - 4 * HOUR_MS, 0),
            (MIDNIGHT - 3 * HOUR_MS, 5),
            (MIDNIGHT - 2 * HOUR_MS, 0),
            (MIDNIGHT - HOUR_MS, 0),
            (MIDNIGHT, 1),
        ]
    );
}
