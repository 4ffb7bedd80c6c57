//! Clicks end to end on the sans-IO shard with a fake wall clock: what a
//! click is (one `GET` answered with a redirect, counted once by a link's
//! click limit and by the statistics).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use shorty_service::codes::{CodeKey, Codec, IdSpace};
use shorty_service::connection::{Connection, Kind};
use shorty_service::http::Front;
use shorty_service::keydir::{Ident, KeyDir};
use shorty_service::link::{LinkMeta, Principal, Scopes};
use shorty_service::log::segments::SegmentTable;
use shorty_service::log::{IoResult, LogIo};
use shorty_service::ops::lifecycle::{self, CreateRequest};
use shorty_service::ops::{self, Step};
use shorty_service::settings::Settings;
use shorty_service::shard::{LocalStore, OpResult, Shard, Shared, StoreMode};

/// 2024-03-01T00:00:00Z: a day (and hour) boundary.
const MIDNIGHT: u64 = 1_709_251_200_000;

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
    assert_eq!(rig.shard.shared().clicks.clicks(Ident::Key(key)), 2);
    // The statistics saw the same two clicks, never the 410.
    let pending = rig.shard.stats.pending(key).unwrap();
    assert_eq!((pending.human, pending.bot), (1, 1));
    assert_eq!(&*pending.referrers, [("news.example".into(), 1)]);
    // A 404 counts nowhere.
    assert_eq!(rig.http("GET", "zzzzzzz", "", t), 404);
    assert_eq!(rig.shard.stats.pending_links(), 1);
}
