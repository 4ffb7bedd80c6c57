//! The lifecycle operations (issue 19) on the embedded log, sans-IO: two
//! cores sharing one key directory, a fake wall clock, the log's I/O and
//! the URL reads answered by the test, restarts recovered from what was
//! written.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use shorty_protocol::frame::{FrameDecoder, Status};
use shorty_protocol::{ErrorCode, Reply, Request};
use shorty_service::codes::{CodeKey, Codec, IdSpace};
use shorty_service::connection::{Connection, Kind};
use shorty_service::http::Front;
use shorty_service::keydir::KeyDir;
use shorty_service::link::{Field, LinkMeta, LinkPatch, Principal, Scopes};
use shorty_service::log::hint::HintEntry;
use shorty_service::log::scan::scan_segment;
use shorty_service::log::segments::SegmentTable;
use shorty_service::log::{IoResult, LogIo};
use shorty_service::ops::lifecycle::{self, CreateRequest};
use shorty_service::ops::{self, Step};
use shorty_service::settings::Settings;
use shorty_service::shard::{LocalStore, OpResult, Shard, Shared, StoreMode};

/// Unix ms of the rig's start.
const T0_MS: u64 = 1_800_000_000_000;
const SEC: Duration = Duration::from_secs(1);

struct Rig {
    shards: Vec<Shard>,
    keydir: Arc<KeyDir>,
    t0: Instant,
    /// What the logs wrote, by segment index.
    disk: HashMap<u32, Vec<u8>>,
}

fn rig_on(keydir: Arc<KeyDir>, cores: usize, disk: HashMap<u32, Vec<u8>>) -> Rig {
    let store = LocalStore {
        keydir: keydir.clone(),
        // Past the segments a previous run wrote.
        segments: Arc::new(SegmentTable::new(
            std::path::Path::new("/data"),
            disk.len() as u64,
        )),
        ids: Arc::new(IdSpace::new(0)),
    };
    let shared = Arc::new(Shared::new(
        Settings::for_tests("http://s.example/"),
        Codec::new(&CodeKey([7; 16])),
        StoreMode::Local(store),
        cores,
    ));
    let t0 = Instant::now();
    let shards = (0..cores)
        .map(|core| {
            let mut shard = Shard::new(shared.clone(), core);
            shard.set_wall_clock(t0, T0_MS);
            shard
        })
        .collect();
    Rig {
        shards,
        keydir,
        t0,
        disk,
    }
}

fn rig(cores: usize) -> Rig {
    rig_on(Arc::new(KeyDir::new()), cores, HashMap::new())
}

fn owner(id: u32) -> Principal {
    Principal {
        key_id: Some(id),
        scopes: Scopes::LINKS_WRITE,
    }
}

impl Rig {
    /// Runs every core's log I/O and URL reads until nothing is left.
    fn run(&mut self, now: Instant) {
        loop {
            let mut busy = false;
            for shard in &mut self.shards {
                while let Some(io) = shard.poll_log_io(now) {
                    if let LogIo::Write(batch) = &io {
                        let file = self.disk.entry(batch.segment.idx).or_default();
                        file.truncate(batch.offset as usize);
                        file.extend_from_slice(&batch.bytes);
                    }
                    shard.log_done(&io, IoResult::Ok, now);
                    busy = true;
                }
                while let Some(read) = shard.poll_read() {
                    let file = &self.disk[&read.file];
                    let at = read.offset as usize;
                    let bytes = Bytes::copy_from_slice(&file[at..(at + read.len).min(file.len())]);
                    shard.read_done(read, Ok(bytes));
                    busy = true;
                }
            }
            if !busy {
                return;
            }
        }
    }

    fn settle(&mut self, core: usize, step: Step, now: Instant) -> OpResult {
        match step {
            Step::Now(result) => result,
            Step::Pending(op) => {
                self.run(now);
                self.shards[core].take_result(op).expect("settled")
            }
        }
    }

    fn create(&mut self, core: usize, request: CreateRequest<'_>, who: Principal) -> OpResult {
        let now = self.t0;
        let step = lifecycle::create(&mut self.shards[core], 1, request, who, now);
        self.settle(core, step, now)
    }

    /// Creates a link and returns its code.
    fn created(&mut self, core: usize, request: CreateRequest<'_>) -> String {
        match self.create(core, request, Principal::ANYONE) {
            OpResult::Link(view) => view.code.into(),
            other => panic!("{other:?}"),
        }
    }

    fn update(&mut self, core: usize, code: &str, patch: LinkPatch, who: Principal) -> OpResult {
        let now = self.t0;
        let step = lifecycle::update(&mut self.shards[core], 1, code.as_bytes(), patch, who, now);
        self.settle(core, step, now)
    }

    fn delete(&mut self, core: usize, code: &str, who: Principal) -> OpResult {
        let now = self.t0;
        let step = lifecycle::delete(&mut self.shards[core], 1, code.as_bytes(), who, now);
        self.settle(core, step, now)
    }

    fn resolve(&mut self, core: usize, code: &str, now: Instant) -> OpResult {
        let step = ops::resolve::resolve(&mut self.shards[core], 1, code.as_bytes(), now, None);
        self.settle(core, step, now)
    }

    /// The URL a RESOLVE gets, or why not.
    fn url(&mut self, core: usize, code: &str) -> Result<String, OpResult> {
        match self.resolve(core, code, self.t0) {
            OpResult::Url(url) | OpResult::Redirect { url, .. } => {
                Ok(String::from_utf8(url.to_vec()).unwrap())
            }
            other => Err(other),
        }
    }

    /// An HTTP GET of `/code` at `now` on `core`: the whole response.
    fn http_get(&mut self, core: usize, code: &str, now: Instant) -> String {
        self.http_path(core, &format!("/{code}?ref=x"), now)
    }

    /// An HTTP GET of `path` at `now` on `core`: the whole response.
    fn http_path(&mut self, core: usize, path: &str, now: Instant) -> String {
        let mut conn = Connection::new(2, Kind::Http(Front::Public), now);
        let request = format!("GET {path} HTTP/1.1\r\nHost: s\r\n\r\n");
        conn.handle_input(&mut self.shards[core], request.as_bytes(), now);
        self.run(now);
        let mut text = Vec::new();
        while let Some(chunk) = conn.poll_transmit(&mut self.shards[core], now) {
            text.extend_from_slice(&chunk);
            conn.transmitted();
        }
        String::from_utf8(text).unwrap()
    }

    /// A wire RESOLVE at `now` on `core`.
    fn wire_resolve(&mut self, core: usize, code: &str, now: Instant) -> Reply {
        let mut conn = Connection::new(3, Kind::Framed, now);
        let mut frame = Vec::new();
        Request::Resolve(code.as_bytes())
            .encode_frame(&mut frame)
            .unwrap();
        conn.handle_input(&mut self.shards[core], &frame, now);
        self.run(now);
        let mut bytes = BytesMut::new();
        while let Some(chunk) = conn.poll_transmit(&mut self.shards[core], now) {
            bytes.extend_from_slice(&chunk);
            conn.transmitted();
        }
        match FrameDecoder::with_max_frame_len(1 << 24)
            .decode(&mut bytes)
            .unwrap()
        {
            Status::Complete(p) => Reply::decode_payload(p).unwrap(),
            Status::Partial { .. } => panic!("no reply"),
        }
    }

    /// A restart: a fresh key directory recovered from what was written,
    /// segment by segment in file order, by the rule recovery applies.
    fn restart(self, cores: usize) -> Rig {
        let keydir = Arc::new(KeyDir::new());
        let mut files: Vec<_> = self.disk.iter().collect();
        files.sort_by_key(|(idx, _)| **idx);
        for (idx, bytes) in files {
            // The test's segment numbers are the table's indexes.
            scan_segment(bytes, u64::from(*idx), |record, offset| {
                let entry = HintEntry::of(&record, offset);
                keydir
                    .recover(entry.ident(), entry.target(*idx), entry.version)
                    .unwrap();
            })
            .unwrap();
        }
        rig_on(keydir, cores, self.disk)
    }
}

fn failed(result: &OpResult) -> Option<u16> {
    match result {
        OpResult::Failed(code, _) => Some(code.0),
        OpResult::NotFound => Some(404),
        _ => None,
    }
}

fn request<'a>(url: &'a str, alias: Option<&'a str>, options: LinkMeta) -> CreateRequest<'a> {
    CreateRequest {
        url: url.as_bytes(),
        alias,
        options,
    }
}

#[test]
fn an_alias_is_taken_once_and_route_words_are_refused() {
    let mut rig = rig(2);
    let code = rig.created(
        0,
        request("https://e.com/a", Some("promo"), LinkMeta::default()),
    );
    assert_eq!(code, "promo");
    assert_eq!(rig.url(1, "promo").unwrap(), "https://e.com/a");
    let again = rig.create(
        1,
        request("https://e.com/b", Some("promo"), LinkMeta::default()),
        Principal::ANYONE,
    );
    assert_eq!(failed(&again), Some(409), "{again:?}");
    for word in ["healthz", "api", "Metrics", "robots.txt", "a b", ""] {
        let refused = rig.create(
            0,
            request("https://e.com/c", Some(word), LinkMeta::default()),
            Principal::ANYONE,
        );
        assert_eq!(failed(&refused), Some(422), "{word}: {refused:?}");
    }
    // An alias spelled like a code lives in the main key directory: the
    // generator never hands it out and RESOLVE finds it as a code.
    let code_like = rig.created(
        0,
        request("https://e.com/d", Some("Abc1234"), LinkMeta::default()),
    );
    assert_eq!(rig.url(1, &code_like).unwrap(), "https://e.com/d");
    let key = shorty_service::codes::parse_code(b"Abc1234").unwrap();
    assert!(rig.keydir.contains(key));
}

#[test]
fn an_expired_link_is_gone_on_http_and_on_the_wire() {
    let mut rig = rig(1);
    let t = rig.t0;
    let expires = LinkMeta {
        expires_at_ms: Some(T0_MS + 10_000),
        ..LinkMeta::default()
    };
    let plain_gone = rig.created(0, request("https://e.com/x", None, expires.clone()));
    let to_elsewhere = rig.created(
        0,
        request(
            "https://e.com/y",
            None,
            LinkMeta {
                expired_url: Some("https://e.com/over".into()),
                ..expires
            },
        ),
    );
    let before = rig.http_get(0, &plain_gone, t);
    assert!(before.starts_with("HTTP/1.1 302"), "{before}");
    let later = t + 11 * SEC;
    let after = rig.http_get(0, &plain_gone, later);
    assert!(after.starts_with("HTTP/1.1 410"), "{after}");
    assert!(
        after.contains("text/html") && after.contains("This link has expired"),
        "{after}"
    );
    let elsewhere = rig.http_get(0, &to_elsewhere, later);
    assert!(elsewhere.starts_with("HTTP/1.1 302"), "{elsewhere}");
    assert!(
        elsewhere.contains("Location: https://e.com/over\r\n"),
        "no query forwarded there: {elsewhere}"
    );
    let reply = rig.wire_resolve(0, &plain_gone, later);
    assert_eq!(
        reply.as_error().map(|(c, _)| c),
        Some(ErrorCode(410)),
        "{reply:?}"
    );
    // An expiry in the past is refused at creation.
    let past = LinkMeta {
        expires_at_ms: Some(T0_MS - 1),
        ..LinkMeta::default()
    };
    assert_eq!(
        failed(&rig.create(0, request("https://e.com/z", None, past), Principal::ANYONE)),
        Some(422)
    );
}

#[test]
fn a_click_limit_lets_exactly_that_many_through_on_every_core() {
    let mut rig = rig(2);
    let t = rig.t0;
    let limited = LinkMeta {
        max_clicks: Some(3),
        ..LinkMeta::default()
    };
    let code = rig.created(0, request("https://e.com/l", None, limited));
    let statuses: Vec<_> = (0..6)
        .map(|i| {
            let response = rig.http_get(i % 2, &code, t);
            response[9..12].to_owned()
        })
        .collect();
    assert_eq!(statuses, ["302", "302", "302", "410", "410", "410"]);
}

#[test]
fn a_link_s_own_redirect_status_and_query_forwarding() {
    let mut rig = rig(1);
    let t = rig.t0;
    let own = LinkMeta {
        redirect_status: Some(308),
        forward_query: Some(false),
        ..LinkMeta::default()
    };
    let code = rig.created(0, request("https://e.com/s", None, own));
    let response = rig.http_get(0, &code, t);
    assert!(response.starts_with("HTTP/1.1 308"), "{response}");
    assert!(
        response.contains("Location: https://e.com/s\r\n"),
        "{response}"
    );
    let bad = LinkMeta {
        redirect_status: Some(303),
        ..LinkMeta::default()
    };
    assert_eq!(
        failed(&rig.create(0, request("https://e.com/s", None, bad), Principal::ANYONE)),
        Some(422)
    );
}

#[test]
fn an_update_is_seen_by_every_core_and_after_a_restart() {
    let mut rig = rig(2);
    let code = rig.created(0, request("https://e.com/old", None, LinkMeta::default()));
    // Core 1 caches the old URL.
    assert_eq!(rig.url(1, &code).unwrap(), "https://e.com/old");
    assert_eq!(rig.url(1, &code).unwrap(), "https://e.com/old");
    let patch = LinkPatch {
        url: Some("https://e.com/new".into()),
        title: Field::Set("t".into()),
        ..LinkPatch::default()
    };
    match rig.update(0, &code, patch, Principal::ANYONE) {
        OpResult::Link(view) => {
            assert_eq!(&view.url[..], b"https://e.com/new");
            assert_eq!(view.meta.version, 1);
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(
        rig.url(1, &code).unwrap(),
        "https://e.com/new",
        "core 1's cache was invalidated"
    );
    assert_eq!(rig.url(0, &code).unwrap(), "https://e.com/new");
    let mut rig = rig.restart(2);
    assert_eq!(rig.url(1, &code).unwrap(), "https://e.com/new");
    // Disable: 410 with its own message.
    let disable = LinkPatch {
        disabled: Field::Set(()),
        ..LinkPatch::default()
    };
    assert!(matches!(
        rig.update(1, &code, disable, Principal::ANYONE),
        OpResult::Link(_)
    ));
    let t = rig.t0;
    let response = rig.http_get(0, &code, t);
    assert!(
        response.starts_with("HTTP/1.1 410") && response.contains("This link has been disabled"),
        "{response}"
    );
}

#[test]
fn a_delete_is_404_on_every_core_after_a_restart_and_its_code_is_never_reused() {
    let mut rig = rig(2);
    let code = rig.created(0, request("https://e.com/d", None, LinkMeta::default()));
    let alias = rig.created(
        0,
        request("https://e.com/e", Some("spring-sale"), LinkMeta::default()),
    );
    assert!(rig.url(1, &code).is_ok(), "cached on core 1");
    assert_eq!(rig.delete(0, &code, Principal::ANYONE), OpResult::Deleted);
    assert_eq!(rig.delete(0, &alias, Principal::ANYONE), OpResult::Deleted);
    for core in 0..2 {
        assert_eq!(rig.url(core, &code), Err(OpResult::NotFound));
        assert_eq!(rig.url(core, &alias), Err(OpResult::NotFound));
    }
    assert_eq!(rig.delete(1, &code, Principal::ANYONE), OpResult::NotFound);
    // The alias is quarantined; the code is never handed out again.
    let reclaim = rig.create(
        1,
        request("https://e.com/f", Some("spring-sale"), LinkMeta::default()),
        Principal::ANYONE,
    );
    assert_eq!(failed(&reclaim), Some(409), "{reclaim:?}");
    let mut rig = rig.restart(1);
    assert_eq!(rig.url(0, &code), Err(OpResult::NotFound));
    assert_eq!(rig.url(0, &alias), Err(OpResult::NotFound));
    let reclaim = rig.create(
        0,
        request("https://e.com/f", Some("spring-sale"), LinkMeta::default()),
        Principal::ANYONE,
    );
    assert_eq!(
        failed(&reclaim),
        Some(409),
        "the quarantine survives a restart"
    );
    let key = shorty_service::codes::parse_code(code.as_bytes()).unwrap();
    for _ in 0..50 {
        let new = rig.created(0, request("https://e.com/g", None, LinkMeta::default()));
        assert_ne!(new, code);
    }
    assert!(rig.keydir.contains(key));
}

#[test]
fn only_owners_or_links_all_change_a_link() {
    let mut rig = rig(1);
    let code = match rig.create(
        0,
        request("https://e.com/o", None, LinkMeta::default()),
        owner(5),
    ) {
        OpResult::Link(view) => {
            assert_eq!(view.meta.owner_key_id, Some(5));
            view.code.to_string()
        }
        other => panic!("{other:?}"),
    };
    let patch = || LinkPatch {
        url: Some("https://e.com/p".into()),
        ..LinkPatch::default()
    };
    assert_eq!(failed(&rig.update(0, &code, patch(), owner(6))), Some(403));
    assert_eq!(failed(&rig.delete(0, &code, owner(6))), Some(403));
    let reader = Principal {
        key_id: Some(7),
        scopes: Scopes::LINKS_READ,
    };
    assert_eq!(
        failed(&rig.create(
            0,
            request("https://e.com/r", None, LinkMeta::default()),
            reader
        )),
        Some(403)
    );
    // A refused mutation gave its version back: the owner's goes on.
    assert!(matches!(
        rig.update(0, &code, patch(), owner(5)),
        OpResult::Link(_)
    ));
    assert_eq!(rig.url(0, &code).unwrap(), "https://e.com/p");
    let admin = Principal {
        key_id: Some(1),
        scopes: Scopes::LINKS_ALL,
    };
    assert_eq!(rig.delete(0, &code, admin), OpResult::Deleted);
}

#[test]
fn a_change_while_another_is_in_flight_is_refused_and_none_is_undone() {
    // The review's repro: a DELETE and an UPDATE of one link at once, both
    // acknowledged, and the link alive afterwards (the update had read the
    // record before the tombstone and wrote the next version over it); and
    // two UPDATEs of different fields, one silently lost.
    let mut rig = rig(2);
    let t = rig.t0;
    let code = rig.created(0, request("https://e.com/0", None, LinkMeta::default()));
    let title = |s: &str| LinkPatch {
        title: Field::Set(s.into()),
        ..LinkPatch::default()
    };
    let disable = LinkPatch {
        disabled: Field::Set(()),
        ..LinkPatch::default()
    };
    // Core 0's DELETE is in flight (its read not even served) when core
    // 1's UPDATE arrives: the update is refused, not run from the old
    // record.
    let delete = lifecycle::delete(&mut rig.shards[0], 1, code.as_bytes(), Principal::ANYONE, t);
    let Step::Pending(d) = delete else { panic!() };
    let update = lifecycle::update(
        &mut rig.shards[1],
        1,
        code.as_bytes(),
        title("x"),
        Principal::ANYONE,
        t,
    );
    assert_eq!(
        failed(&settled(update)),
        Some(409),
        "a change in flight: retry"
    );
    rig.run(t);
    assert!(matches!(
        rig.shards[0].take_result(d),
        Some(OpResult::Deleted)
    ));
    // Retried after the delete is answered: the link is gone.
    assert_eq!(
        failed(&rig.update(1, &code, title("x"), Principal::ANYONE)),
        Some(404)
    );
    assert_eq!(rig.resolve(1, &code, t), OpResult::NotFound);
    // Two updates of different fields: the second waits for the first
    // (refused, retried), so both fields hold.
    let code = rig.created(0, request("https://e.com/1", None, LinkMeta::default()));
    let first = lifecycle::update(
        &mut rig.shards[0],
        1,
        code.as_bytes(),
        disable.clone(),
        Principal::ANYONE,
        t,
    );
    let Step::Pending(a) = first else { panic!() };
    let second = lifecycle::update(
        &mut rig.shards[1],
        1,
        code.as_bytes(),
        title("t"),
        Principal::ANYONE,
        t,
    );
    assert_eq!(failed(&settled(second)), Some(409));
    rig.run(t);
    assert!(matches!(
        rig.shards[0].take_result(a),
        Some(OpResult::Link(_))
    ));
    assert!(matches!(
        rig.update(1, &code, title("t"), Principal::ANYONE),
        OpResult::Link(_)
    ));
    let mut rig = rig.restart(1);
    match rig.resolve(0, &code, rig.t0) {
        OpResult::Gone { .. } => {}
        other => panic!("the disable was kept: {other:?}"),
    }
}

fn settled(step: Step) -> OpResult {
    match step {
        Step::Now(result) => result,
        Step::Pending(_) => panic!("expected an answer at once"),
    }
}

#[test]
fn a_plain_link_s_record_is_unchanged_by_options() {
    // SHORTEN's record: 26 bytes + URL, as in format 2.
    let mut rig = rig(1);
    let t = rig.t0;
    let mut conn = Connection::new(9, Kind::Framed, t);
    let mut frame = Vec::new();
    Request::Shorten(&b"https://e.com/plain"[..])
        .encode_frame(&mut frame)
        .unwrap();
    conn.handle_input(&mut rig.shards[0], &frame, t);
    let io = rig.shards[0].poll_log_io(t).unwrap();
    let LogIo::Write(batch) = &io else { panic!() };
    let link_bytes = batch.bytes.len() - shorty_service::log::record::PREAMBLE_LEN;
    assert_eq!(link_bytes, shorty_service::log::record::LINK_OVERHEAD + 19);
}

#[test]
fn a_generated_code_claimed_as_an_alias_before_it_is_durable_is_not_acknowledged() {
    let mut rig = rig(1);
    let t = rig.t0;
    let codec = Codec::new(&CodeKey([7; 16]));
    let step = lifecycle::create(
        &mut rig.shards[0],
        1,
        request("https://e.com/gen", None, LinkMeta::default()),
        Principal::ANYONE,
        t,
    );
    let Step::Pending(op) = step else { panic!() };
    // The generator took the first id; its code is claimed (as a
    // code-spelled alias would be) before the record is durable.
    let key = codec.key_of(0);
    let ident = shorty_service::keydir::Ident::Key(key);
    let version = rig
        .keydir
        .claim(ident, T0_MS, u64::MAX)
        .expect("free until durable");
    rig.run(t);
    let result = rig.shards[0].take_result(op).expect("settled");
    assert_eq!(failed(&result), Some(500), "{result:?}");
    rig.keydir.release(ident, version);
}

#[test]
fn a_read_that_raced_an_update_answers_no_one_with_the_old_url() {
    let mut rig = rig(2);
    let t = rig.t0;
    let code = rig.created(0, request("https://e.com/old", None, LinkMeta::default()));
    // Core 1 starts reading the old record (a cache miss)...
    let Step::Pending(early) =
        ops::resolve::resolve(&mut rig.shards[1], 1, code.as_bytes(), t, None)
    else {
        panic!()
    };
    let stale_read = rig.shards[1].poll_read().expect("a read");
    // ...core 0's update is acknowledged meanwhile...
    let patch = LinkPatch {
        url: Some("https://e.com/new".into()),
        ..LinkPatch::default()
    };
    let step = lifecycle::update(
        &mut rig.shards[0],
        1,
        code.as_bytes(),
        patch,
        Principal::ANYONE,
        t,
    );
    let Step::Pending(update) = step else {
        panic!()
    };
    while let Some(read) = rig.shards[0].poll_read() {
        let file = &rig.disk[&read.file];
        let at = read.offset as usize;
        let bytes = Bytes::copy_from_slice(&file[at..(at + read.len).min(file.len())]);
        rig.shards[0].read_done(read, Ok(bytes));
    }
    while let Some(io) = rig.shards[0].poll_log_io(t) {
        if let LogIo::Write(batch) = &io {
            let file = rig.disk.entry(batch.segment.idx).or_default();
            file.truncate(batch.offset as usize);
            file.extend_from_slice(&batch.bytes);
        }
        rig.shards[0].log_done(&io, IoResult::Ok, t);
    }
    assert!(matches!(
        rig.shards[0].take_result(update),
        Some(OpResult::Link(_))
    ));
    // ...then a request on core 1 joins the read still in flight.
    let Step::Pending(late) =
        ops::resolve::resolve(&mut rig.shards[1], 2, code.as_bytes(), t, None)
    else {
        panic!()
    };
    let file = &rig.disk[&stale_read.file];
    let at = stale_read.offset as usize;
    let bytes = Bytes::copy_from_slice(&file[at..(at + stale_read.len).min(file.len())]);
    rig.shards[1].read_done(stale_read, Ok(bytes));
    rig.run(t);
    for op in [early, late] {
        match rig.shards[1].take_result(op) {
            Some(OpResult::Url(url) | OpResult::Redirect { url, .. }) => {
                assert_eq!(&url[..], b"https://e.com/new")
            }
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(rig.url(1, &code).unwrap(), "https://e.com/new");
}

/// Review F4: an alias deleted and claimed again after its quarantine is a
/// new link, whose click limit starts at 0 (the count belongs to a link's
/// life, not to its name).
#[test]
fn a_re_created_alias_starts_its_click_limit_at_zero() {
    let mut rig = rig(1);
    let limited = LinkMeta {
        max_clicks: Some(2),
        ..LinkMeta::default()
    };
    let alias = rig.created(
        0,
        request("https://e.com/old", Some("flash-sale"), limited.clone()),
    );
    let t = rig.t0;
    let statuses: Vec<_> = (0..3)
        .map(|_| rig.http_get(0, &alias, t)[9..12].to_owned())
        .collect();
    assert_eq!(statuses, ["302", "302", "410"]);
    assert_eq!(rig.delete(0, &alias, Principal::ANYONE), OpResult::Deleted);
    let quarantine = rig.shards[0].shared().settings.alias_quarantine;
    let later = t + quarantine + Duration::from_millis(1);
    let step = lifecycle::create(
        &mut rig.shards[0],
        1,
        request("https://e.com/new", Some("flash-sale"), limited),
        Principal::ANYONE,
        later,
    );
    match rig.settle(0, step, later) {
        OpResult::Link(view) => assert_eq!(&*view.code, "flash-sale"),
        other => panic!("{other:?}"),
    }
    let statuses: Vec<_> = (0..3)
        .map(|_| rig.http_get(0, &alias, later)[9..12].to_owned())
        .collect();
    assert_eq!(
        statuses,
        ["302", "302", "410"],
        "the new link has its own clicks"
    );
}

/// Review: the QR code of a dead link is 410 like the link, never a
/// redirect to its expired-URL (an image request is not a visit); a live
/// link's is an image.
#[test]
fn a_dead_link_s_qr_code_is_gone() {
    let mut rig = rig(1);
    let t = rig.t0;
    let code = rig.created(
        0,
        request(
            "https://e.com/y",
            None,
            LinkMeta {
                expires_at_ms: Some(T0_MS + 10_000),
                expired_url: Some("https://e.com/over".into()),
                ..LinkMeta::default()
            },
        ),
    );
    let qr = format!("/api/v1/links/{code}/qr.svg");
    let live = rig.http_path(0, &qr, t);
    assert!(live.starts_with("HTTP/1.1 200"), "{live}");
    assert!(live.contains("image/svg+xml"), "{live}");
    let later = t + 11 * SEC;
    let dead = rig.http_path(0, &qr, later);
    assert!(dead.starts_with("HTTP/1.1 410"), "{dead}");
    assert!(!dead.contains("e.com/over"), "{dead}");
    // The link itself still sends visitors to its expired-URL.
    assert!(rig.http_get(0, &code, later).starts_with("HTTP/1.1 302"));
}

/// Review: claiming a deleted generated code as an alias is refused with
/// a message that says why, not "before 18446744073709551615".
#[test]
fn a_deleted_code_claimed_as_an_alias_is_refused_saying_never() {
    let mut rig = rig(1);
    let code = rig.created(0, request("https://e.com/d", None, LinkMeta::default()));
    assert_eq!(rig.delete(0, &code, Principal::ANYONE), OpResult::Deleted);
    let claim = rig.create(
        0,
        request("https://e.com/e", Some(&code), LinkMeta::default()),
        Principal::ANYONE,
    );
    match claim {
        OpResult::Failed(code, message) => {
            assert_eq!(code.0, 409);
            assert!(message.contains("never"), "{message}");
            assert!(!message.contains(&u64::MAX.to_string()), "{message}");
        }
        other => panic!("{other:?}"),
    }
}

/// An update is the same link: its click count goes on (only a new life,
/// a re-created alias, starts at 0).
#[test]
fn an_update_keeps_the_click_count() {
    let mut rig = rig(1);
    let limited = LinkMeta {
        max_clicks: Some(3),
        ..LinkMeta::default()
    };
    let code = rig.created(0, request("https://e.com/v1", Some("kept-count"), limited));
    let t = rig.t0;
    assert_eq!(&rig.http_get(0, &code, t)[9..12], "302");
    assert_eq!(&rig.http_get(0, &code, t)[9..12], "302");
    let patch = LinkPatch {
        url: Some("https://e.com/v2".into()),
        ..LinkPatch::default()
    };
    assert!(matches!(
        rig.update(0, &code, patch, Principal::ANYONE),
        OpResult::Link(_)
    ));
    let statuses: Vec<_> = (0..2)
        .map(|_| rig.http_get(0, &code, t)[9..12].to_owned())
        .collect();
    assert_eq!(statuses, ["302", "410"]);
}

/// A merge forgot a deleted code's tombstone (issue 19, round 4: its key
/// leaves the key directory, as `log::merge` does after its commit): the
/// code is still never handed out again, neither as a code-spelled alias
/// (the id floor says it was handed out) nor by the generator (its id is
/// below every core's cursor).
#[test]
fn a_deleted_code_whose_tombstone_was_forgotten_is_never_handed_out_again() {
    use shorty_service::keydir::{Ident, Target};
    let mut rig = rig(2);
    let code = rig.created(0, request("https://e.com/a", None, LinkMeta::default()));
    let key = shorty_service::codes::parse_code(code.as_bytes()).unwrap();
    assert_eq!(rig.delete(1, &code, Principal::ANYONE), OpResult::Deleted);
    let (target, state) = rig.keydir.lookup(Ident::Key(key)).unwrap();
    assert!(matches!(target, Target::Deleted { .. }));
    assert!(rig.keydir.forget(Ident::Key(key), target, state.installed));
    assert!(!rig.keydir.contains(key), "no trace left");
    let claim = rig.create(
        1,
        request("https://evil.example/", Some(&code), LinkMeta::default()),
        Principal::ANYONE,
    );
    assert_eq!(failed(&claim), Some(409), "{claim:?}");
    assert_eq!(rig.url(0, &code), Err(OpResult::NotFound));
    for i in 0..300 {
        let made = rig.created(i % 2, request("https://e.com/n", None, LinkMeta::default()));
        assert_ne!(made, code, "reissued after {i}");
    }
    // A code-spelled alias never handed out is still free to claim.
    let fresh = rig.created(
        0,
        request("https://e.com/z", Some("Zz9Zz9Z"), LinkMeta::default()),
    );
    assert_eq!(fresh, "Zz9Zz9Z");
}
