//! A counted click of a link already seen this interval allocates nothing
//! (issue 20: "no allocation for a link already seen this interval"): the
//! redirect path's `resolve` → `judge` → click counter is driven by hand
//! over a sans-IO shard under a global allocator that counts calls. A
//! whole keep-alive HTTP redirect of a cached link allocates nothing either.

// A counting global allocator needs `unsafe impl GlobalAlloc` (as in
// tests/limits.rs): it forwards every call to the system allocator.
#![allow(unsafe_code)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use shorty_protocol::frame::{FrameDecoder, Status};
use shorty_protocol::{Reply, Request};
use shorty_service::connection::{Connection, Kind};
use shorty_service::http::Front;
use shorty_service::log::{IoResult, LogIo};
use shorty_service::ops::resolve::resolve;
use shorty_service::ops::Step;
use shorty_service::settings::Settings;
use shorty_service::shard::{OpResult, Shard, Shared};
use shorty_service::stats::ClickMeta;

struct Counting;

static ALLOCATIONS: AtomicUsize = AtomicUsize::new(0);

// SAFETY: every call is forwarded to the system allocator unchanged; the
// counter only counts calls.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: the caller's layout, as GlobalAlloc requires.
        unsafe { System.alloc(layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: `ptr` came from this allocator with `layout`.
        unsafe { System.realloc(ptr, layout, new_size) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` came from `alloc` with this layout.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// 2024-03-01T00:30:00Z: far from an hour's end, so the clicks below stay
/// in one hour.
const HALF_PAST: u64 = 1_709_253_000_000;

/// A shard with one link shortened and its redirect answered once over
/// HTTP (so the link is cached); returns the shard, the code, and the
/// shard's time.
fn rig(stats: bool, forward: bool) -> (Shard, String, Instant) {
    let mut settings = Settings::for_tests("http://s.example/");
    settings.stats = stats;
    settings.forward_query = forward;
    let mut shard = Shard::new(Arc::new(Shared::for_tests(settings)), 0);
    let t = Instant::now();
    shard.set_wall_clock(t, HALF_PAST);
    let mut disk: Vec<u8> = Vec::new();

    let mut conn = Connection::new(9, Kind::Framed, t);
    let mut wire = Vec::new();
    Request::Shorten(b"https://example.com/hot")
        .encode_frame(&mut wire)
        .unwrap();
    conn.handle_input(&mut shard, &wire, t);
    while let Some(io) = shard.poll_log_io(t) {
        if let LogIo::Write(batch) = &io {
            disk.truncate(batch.offset as usize);
            disk.extend_from_slice(&batch.bytes);
        }
        shard.log_done(&io, IoResult::Ok, t);
    }
    let mut bytes = BytesMut::new();
    while let Some(chunk) = conn.poll_transmit(&mut shard, t) {
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
    let code = std::str::from_utf8(&short)
        .unwrap()
        .rsplit('/')
        .next()
        .unwrap()
        .to_owned();

    // One redirect over HTTP: the log read puts the link in the cache.
    let mut http = Connection::new(2, Kind::Http(Front::Public), t);
    let head = format!("GET /{code} HTTP/1.1\r\nHost: s\r\n\r\n");
    http.handle_input(&mut shard, head.as_bytes(), t);
    while let Some(read) = shard.poll_read() {
        let at = read.offset as usize;
        let bytes = Bytes::copy_from_slice(&disk[at..(at + read.len).min(disk.len())]);
        shard.read_done(read, Ok(bytes));
    }
    let mut status = String::new();
    while let Some(chunk) = http.poll_transmit(&mut shard, t) {
        status.push_str(std::str::from_utf8(&chunk).unwrap());
        http.transmitted();
    }
    assert!(status.starts_with("HTTP/1.1 30"), "{status}");
    (shard, code, t)
}

/// Clicks `code` once at `now`; panics unless it is answered at once.
fn click(shard: &mut Shard, code: &[u8], meta: ClickMeta<'_>, now: Instant) {
    match resolve(shard, 1, code, now, Some(meta)) {
        Step::Now(OpResult::Url(_) | OpResult::Redirect { .. }) => {}
        other => panic!("not a redirect at once: {other:?}"),
    }
}

#[test]
fn a_counted_click_of_a_link_seen_this_interval_allocates_nothing() {
    // One test in this binary: nothing else allocates meanwhile.
    let n: u32 = std::env::var("CLICK_ALLOC_CLICKS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10_000);
    let (mut shard, code, t) = rig(true, false);
    let human = ClickMeta {
        head: false,
        bot: false,
        referrer_host: Some("news.example"),
    };
    let bot = ClickMeta {
        head: false,
        bot: true,
        referrer_host: None,
    };
    // The link's first click of the interval (the HTTP one above) and a
    // first click from each referring host may allocate; from here on the
    // link, its hour and its host are in the map.
    click(&mut shard, code.as_bytes(), human, t);
    click(&mut shard, code.as_bytes(), bot, t);
    let before = ALLOCATIONS.load(Ordering::Relaxed);
    for i in 0..n {
        let now = t + Duration::from_millis(u64::from(i % 1000));
        let meta = if i % 10 == 0 { bot } else { human };
        click(&mut shard, code.as_bytes(), meta, now);
    }
    let allocations = ALLOCATIONS.load(Ordering::Relaxed) - before;
    // Every click was counted (so the loop did exercise the counter).
    let key = shard.shared().codec.parse(code.as_bytes()).unwrap();
    let pending = shard.stats.pending(key).expect("counted");
    assert_eq!(pending.total(), u64::from(n) + 3);
    assert_eq!(allocations, 0, "{allocations} allocations for {n} clicks");

    // The whole HTTP redirect of a cached link on a keep-alive connection
    // allocates nothing once warm (issue 20: the visitor's query is
    // borrowed from the request, the `Date` is not copied, the
    // connection's output buffer is reused), with statistics on or off, a
    // query or none, forwarding on or off.
    for stats in [true, false] {
        for query in ["", "?utm_source=mail&utm_medium=email&x=1"] {
            for forward in [true, false] {
                let allocations = http_allocations(stats, n, query, forward);
                assert_eq!(
                    allocations, 0,
                    "{n} redirects (stats {stats}, query {query:?}, forwarding {forward}): \
                     {allocations} allocations"
                );
            }
        }
    }
}

/// Allocations of `n` GET redirects of `code` (with `query` after it) on
/// one keep-alive HTTP connection, after two first ones.
fn http_allocations(stats: bool, n: u32, query: &str, forward: bool) -> usize {
    let (mut shard, code, t) = rig(stats, forward);
    let mut conn = Connection::new(3, Kind::Http(Front::Public), t);
    let head = format!(
        "GET /{code}{query} HTTP/1.1\r\nHost: s\r\nUser-Agent: Mozilla/5.0\r\n\
         Referer: https://news.example/a\r\n\r\n"
    );
    let target = if forward && !query.is_empty() {
        format!("Location: https://example.com/hot{query}\r\n")
    } else {
        "Location: https://example.com/hot\r\n".to_owned()
    };
    let mut answered = 0;
    let mut serve = |shard: &mut Shard, conn: &mut Connection| {
        conn.handle_input(shard, head.as_bytes(), t);
        while let Some(chunk) = conn.poll_transmit(shard, t) {
            assert!(chunk.starts_with(b"HTTP/1.1 30"));
            // What the runtime does: the write ends (the socket drops its
            // bytes), then the connection hears of it.
            let text = std::str::from_utf8(&chunk).unwrap();
            assert!(text.contains(&target), "{text}");
            drop(chunk);
            conn.transmitted();
            answered += 1;
        }
    };
    serve(&mut shard, &mut conn);
    serve(&mut shard, &mut conn);
    let before = ALLOCATIONS.load(Ordering::Relaxed);
    for _ in 0..n {
        serve(&mut shard, &mut conn);
    }
    let allocations = ALLOCATIONS.load(Ordering::Relaxed) - before;
    assert_eq!(answered, n + 2);
    allocations
}
