//! The connection state machine, driven by hand: a fake clock, no sockets,
//! the log's I/O answered by the test.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use shorty_protocol::frame::{FrameDecoder, Status};
use shorty_protocol::{ErrorCode, Reply, Request};
use shorty_service::codes::{parse_code, CodeKey, Codec, IdSpace};
use shorty_service::connection::{CloseReason, Connection, Kind};
use shorty_service::http::Front;
use shorty_service::keydir::KeyDir;
use shorty_service::log::segments::SegmentTable;
use shorty_service::log::{IoResult, LogIo};
use shorty_service::settings::Settings;
use shorty_service::shard::{LocalStore, Shard, Shared, StoreMode};

const SEC: Duration = Duration::from_secs(1);

struct Rig {
    shard: Shard,
    t0: Instant,
    /// What the log wrote, by segment: reads are served from it.
    disk: std::collections::HashMap<u32, Vec<u8>>,
}

fn rig_with(settings: Settings) -> Rig {
    Rig {
        shard: Shard::new(Arc::new(Shared::for_tests(settings)), 0),
        t0: Instant::now(),
        disk: Default::default(),
    }
}

fn rig() -> Rig {
    rig_with(Settings::for_tests("http://s.example/"))
}

/// A rig whose store is `keydir`, counting ids from `first_id`, with the
/// code secret `codec` was made with.
fn rig_on_store(keydir: Arc<KeyDir>, codec: &Codec, first_id: u64) -> Rig {
    let store = LocalStore {
        keydir,
        segments: Arc::new(SegmentTable::new(std::path::Path::new("/data"), 1)),
        ids: Arc::new(IdSpace::new(first_id)),
    };
    let shared = Shared::new(
        Settings::for_tests("http://s.example/"),
        codec.clone(),
        StoreMode::Local(store),
        1,
    );
    Rig {
        shard: Shard::new(Arc::new(shared), 0),
        t0: Instant::now(),
        disk: Default::default(),
    }
}

fn wire(requests: &[Request<&[u8]>]) -> Vec<u8> {
    let mut out = Vec::new();
    for r in requests {
        r.encode_frame(&mut out).unwrap();
    }
    out
}

impl Rig {
    /// Runs every pending log operation with `result`; returns how many.
    fn run_log(&mut self, now: Instant, result: IoResult) -> usize {
        let mut n = 0;
        while let Some(io) = self.shard.poll_log_io(now) {
            if let (LogIo::Write(batch), IoResult::Ok) = (&io, &result) {
                let file = self.disk.entry(batch.segment.idx).or_default();
                file.truncate(batch.offset as usize);
                file.extend_from_slice(&batch.bytes);
            }
            self.shard.log_done(&io, result.clone(), now);
            n += 1;
        }
        n
    }

    /// Serves every URL read the shard asked for from what was written.
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

    /// Shortens `url` on a fresh connection, completing the log write;
    /// returns the code.
    fn shorten(&mut self, url: &[u8], now: Instant) -> Vec<u8> {
        let mut conn = Connection::new(9, Kind::Framed, now);
        conn.handle_input(&mut self.shard, &wire(&[Request::Shorten(url)]), now);
        self.run_log(now, IoResult::Ok);
        let Reply::Shortened(short) = &self.replies(&mut conn, now)[0] else {
            panic!("no short URL")
        };
        short.rsplit(|&b| b == b'/').next().unwrap().to_vec()
    }

    /// Takes one log operation without completing it.
    fn take_log(&mut self, now: Instant) -> Option<LogIo> {
        self.shard.poll_log_io(now)
    }

    /// Everything the connection writes now, as replies (the writes
    /// complete at once).
    fn replies(&mut self, conn: &mut Connection, now: Instant) -> Vec<Reply> {
        let mut bytes = BytesMut::new();
        while let Some(chunk) = conn.poll_transmit(&mut self.shard, now) {
            bytes.extend_from_slice(&chunk);
            conn.transmitted();
        }
        let mut out = Vec::new();
        while let Status::Complete(p) = FrameDecoder::with_max_frame_len(1 << 24)
            .decode(&mut bytes)
            .unwrap()
        {
            out.push(Reply::decode_payload(p).unwrap());
        }
        out
    }
}

fn is_error(reply: &Reply, code: ErrorCode) -> bool {
    reply.as_error().is_some_and(|(c, _)| c == code)
}

#[test]
fn pipelined_replies_wait_in_order_for_durability() {
    let mut rig = rig();
    let t = rig.t0;
    let mut conn = Connection::new(1, Kind::Framed, t);
    let input = wire(&[
        Request::Ping(b"a"),
        Request::Shorten(b"https://e.com/1"),
        Request::Ping(b"b"),
    ]);
    conn.handle_input(&mut rig.shard, &input, t);
    // The first PING goes out at once; the second waits behind the
    // SHORTEN, whose record is not durable yet.
    assert_eq!(rig.replies(&mut conn, t), [Reply::Pong(Bytes::from("a"))]);
    assert_eq!(rig.run_log(t, IoResult::Ok), 1);
    assert_eq!(rig.shard.take_wakes().collect::<Vec<_>>(), [1]);
    let replies = rig.replies(&mut conn, t);
    assert!(matches!(&replies[0], Reply::Shortened(url) if url.starts_with(b"http://s.example/")));
    assert_eq!(replies[1], Reply::Pong(Bytes::from("b")));
}

#[test]
fn reading_goes_on_while_a_batch_syncs() {
    let mut rig = rig();
    let t = rig.t0;
    let mut conn = Connection::new(1, Kind::Framed, t);
    conn.handle_input(
        &mut rig.shard,
        &wire(&[Request::Shorten(b"https://e.com/1")]),
        t,
    );
    let first = rig.take_log(t).expect("a batch");
    // While it is in flight the connection still reads, and the next
    // record waits for the next batch.
    assert!(conn.wants_read(&rig.shard.shared().settings));
    conn.handle_input(
        &mut rig.shard,
        &wire(&[Request::Shorten(b"https://e.com/2")]),
        t,
    );
    assert!(rig.take_log(t).is_none(), "one batch in flight at a time");
    rig.shard.log_done(&first, IoResult::Ok, t);
    assert_eq!(
        rig.replies(&mut conn, t).len(),
        1,
        "the first is acknowledged alone"
    );
    let second = rig.take_log(t).expect("the next batch");
    let LogIo::Write(batch) = &second else {
        panic!()
    };
    assert_eq!(batch.links().count(), 1);
    rig.shard.log_done(&second, IoResult::Ok, t);
    assert_eq!(rig.replies(&mut conn, t).len(), 1);
}

#[test]
fn a_peer_that_does_not_read_holds_at_most_the_cap_and_is_closed() {
    let mut settings = Settings::for_tests("http://s.example/");
    settings.max_output_bytes = 64 * 1024;
    let mut rig = rig_with(settings.clone());
    let t = rig.t0;
    // An 8 KB URL, resolvable from the cache.
    let long = format!("https://e.com/{}", "x".repeat(8000));
    let code = rig.shorten(long.as_bytes(), t);

    // One RESOLVE reads the URL from the log and caches it.
    let mut setup = Connection::new(9, Kind::Framed, t);
    setup.handle_input(&mut rig.shard, &wire(&[Request::Resolve(&code)]), t);
    // A record longer than the speculative read takes a second, whole read.
    assert_eq!(rig.serve_reads(), 2);
    assert!(matches!(rig.replies(&mut setup, t)[0], Reply::Resolved(_)));
    let mut conn = Connection::new(1, Kind::Framed, t);
    let request = wire(&[Request::Resolve(&code)]);
    let flood: Vec<u8> = request
        .iter()
        .copied()
        .cycle()
        .take(request.len() * 1000)
        .collect();
    conn.handle_input(&mut rig.shard, &flood, t);
    assert!(!conn.wants_read(&settings), "stops reading past the cap");
    // Replies go out in one write; the peer never reads it.
    let bytes = conn.poll_transmit(&mut rig.shard, t).expect("a write");
    assert!(
        bytes.len() <= settings.max_output_bytes + 9000,
        "{}",
        bytes.len()
    );
    assert!(conn.buffered_input() <= flood.len());
    assert!(
        conn.poll_transmit(&mut rig.shard, t).is_none(),
        "one write in flight"
    );
    assert!(!conn.wants_read(&settings));
    // No progress for --write-timeout: closed.
    let deadline = conn.poll_timeout(&settings).unwrap();
    assert_eq!(deadline, t + settings.write_timeout);
    conn.handle_timeout(&mut rig.shard, deadline);
    assert!(conn.is_closed());
    assert_eq!(conn.close_reason(), CloseReason::WriteStall);
}

#[test]
fn bytes_in_flight_count_against_the_output_cap() {
    let mut settings = Settings::for_tests("http://s.example/");
    let cap = 64 * 1024;
    settings.max_output_bytes = cap;
    let mut rig = rig_with(settings.clone());
    let t = rig.t0;
    let body = [b'p'; 1000];
    let reply_len = wire(&[Request::Ping(&body[..])]).len();
    let pings = |n: usize| wire(&(0..n).map(|_| Request::Ping(&body[..])).collect::<Vec<_>>());
    let mut conn = Connection::new(1, Kind::Framed, t);
    // Just under the cap, so reading goes on once it is in flight.
    let first = cap / reply_len - 2;
    conn.handle_input(&mut rig.shard, &pings(first), t);
    let in_flight = conn.poll_transmit(&mut rig.shard, t).expect("a write");
    assert_eq!(in_flight.len(), first * reply_len);
    assert!(conn.wants_read(&settings));
    // The peer pipelines far more while that write is still in flight.
    conn.handle_input(&mut rig.shard, &pings(200), t);
    assert!(!conn.wants_read(&settings), "stops reading at the cap");
    assert!(
        conn.poll_transmit(&mut rig.shard, t).is_none(),
        "one write at a time"
    );
    // What is in flight and what queued behind it never exceed the cap by
    // more than the one request that crossed it.
    assert!(
        conn.output_bytes() <= cap + reply_len,
        "{} in flight + queued > cap {cap}",
        conn.output_bytes()
    );
    // Once the write completes, the held requests go on, within the cap.
    conn.transmitted();
    let next = conn
        .poll_transmit(&mut rig.shard, t)
        .expect("the next write");
    assert!(next.len() <= cap + reply_len);
}

#[test]
fn held_requests_are_handled_as_the_output_drains() {
    let mut settings = Settings::for_tests("http://s.example/");
    settings.max_output_bytes = 1024;
    let mut rig = rig_with(settings.clone());
    let t = rig.t0;
    let mut conn = Connection::new(1, Kind::Framed, t);
    let body = [b'p'; 100];
    let pings: Vec<Request<&[u8]>> = (0..50).map(|_| Request::Ping(&body[..])).collect();
    conn.handle_input(&mut rig.shard, &wire(&pings), t);
    let mut total = 0;
    for _ in 0..100 {
        let replies = rig.replies(&mut conn, t);
        if replies.is_empty() {
            break;
        }
        total += replies.len();
    }
    assert_eq!(total, 50, "every held request was answered");
    assert!(conn.wants_read(&settings));
    assert_eq!(conn.buffered_input(), 0, "idle again: no input buffer");
}

#[test]
fn idle_and_slow_connections_time_out() {
    let mut rig = rig();
    let settings = rig.shard.shared().settings.clone();
    let t = rig.t0;
    let mut idle = Connection::new(1, Kind::Framed, t);
    assert_eq!(
        idle.poll_timeout(&settings),
        Some(t + settings.idle_timeout)
    );
    idle.handle_timeout(&mut rig.shard, t + settings.idle_timeout - SEC);
    assert!(!idle.is_closed());
    idle.handle_timeout(&mut rig.shard, t + settings.idle_timeout);
    assert_eq!(idle.close_reason(), CloseReason::Idle);

    // Half a frame, then bytes trickling in: the frame timeout runs from
    // its first byte and is not reset by more bytes.
    let mut slow = Connection::new(2, Kind::Framed, t);
    slow.handle_input(&mut rig.shard, &[40, 0, 0, 0, 3], t);
    slow.handle_input(&mut rig.shard, b"h", t + 5 * SEC);
    assert_eq!(
        slow.poll_timeout(&settings),
        Some(t + settings.frame_timeout)
    );
    slow.handle_timeout(&mut rig.shard, t + settings.frame_timeout);
    let replies = rig.replies(&mut slow, t + settings.frame_timeout);
    assert!(is_error(&replies[0], ErrorCode::TIMEOUT));
    // The rest of the frame may still be on its way: a lingering close.
    assert!(!slow.is_closed());
    assert!(slow.poll_shutdown(&settings, t + settings.frame_timeout));
    slow.handle_eof();
    assert!(slow.is_closed(), "closed at the peer's end of stream");
}

#[test]
fn a_shorten_never_made_durable_gets_503_and_the_connection_goes_on() {
    let mut rig = rig();
    let settings = rig.shard.shared().settings.clone();
    let t = rig.t0;
    let mut conn = Connection::new(1, Kind::Framed, t);
    conn.handle_input(
        &mut rig.shard,
        &wire(&[Request::Shorten(b"https://e.com/hung"), Request::Ping(b"x")]),
        t,
    );
    let _hung = rig.take_log(t).expect("a batch that will never complete");
    let deadline = conn.poll_timeout(&settings).unwrap();
    assert_eq!(deadline, t + settings.commit_timeout);
    conn.handle_timeout(&mut rig.shard, deadline);
    let replies = rig.replies(&mut conn, deadline);
    assert!(is_error(&replies[0], ErrorCode::OVERLOADED), "{replies:?}");
    assert_eq!(replies[1], Reply::Pong(Bytes::from("x")));
    assert!(!conn.is_closed());
}

#[test]
fn delay_holds_replies_without_blocking_anything() {
    let mut settings = Settings::for_tests("http://s.example/");
    settings.delay = Duration::from_millis(200);
    let mut rig = rig_with(settings.clone());
    let t = rig.t0;
    let mut conn = Connection::new(1, Kind::Framed, t);
    conn.handle_input(&mut rig.shard, &wire(&[Request::Ping(b"1")]), t);
    assert!(rig.replies(&mut conn, t).is_empty());
    assert_eq!(conn.poll_timeout(&settings), Some(t + settings.delay));
    let later = t + settings.delay;
    assert_eq!(
        rig.replies(&mut conn, later),
        [Reply::Pong(Bytes::from("1"))]
    );
}

#[test]
fn an_oversized_frame_is_answered_from_its_header_and_closed() {
    let mut rig = rig();
    let t = rig.t0;
    let mut conn = Connection::new(1, Kind::Framed, t);
    conn.handle_input(&mut rig.shard, &(1u32 << 30).to_le_bytes(), t);
    let replies = rig.replies(&mut conn, t);
    assert!(is_error(&replies[0], ErrorCode::TOO_LARGE));
    assert_eq!(conn.buffered_input(), 0, "nothing buffered for the payload");
    let settings = rig.shard.shared().settings.clone();
    assert!(conn.poll_shutdown(&settings, t), "then a lingering close");
    conn.handle_eof();
    assert!(conn.is_closed());
}

/// The framed protocol's closes-after-error linger as HTTP's refusals do:
/// the payload the client is still sending after a frame over the limit
/// would otherwise sit unread when the server closes, and the kernel's
/// reset could destroy the `ERROR 413` before the client reads it.
#[test]
fn a_refused_frame_is_answered_then_the_write_side_shut_and_the_rest_discarded() {
    let mut settings = Settings::for_tests("http://s.example/");
    settings.linger_bytes = 150_000;
    let mut rig = rig_with(settings.clone());
    let t = rig.t0;
    // A 100 KB frame whose header announces more than the limit, its first
    // 16 KiB read.
    let len = 100_000u32;
    assert!(len as usize > settings.max_frame_len());
    let mut frame = len.to_le_bytes().to_vec();
    frame.resize(4 + len as usize, b'a');
    let mut conn = Connection::new(1, Kind::Framed, t);
    conn.handle_input(&mut rig.shard, &frame[..16_384], t);
    assert!(
        !conn.wants_read(&settings),
        "no reading while the answer is owed"
    );
    let bytes = conn.poll_transmit(&mut rig.shard, t).unwrap();
    assert!(
        !conn.poll_shutdown(&settings, t),
        "not before the answer is written"
    );
    conn.transmitted();
    let mut bytes = BytesMut::from(&bytes[..]);
    let Status::Complete(payload) = FrameDecoder::new().decode(&mut bytes).unwrap() else {
        panic!("a whole reply")
    };
    assert!(is_error(
        &Reply::decode_payload(payload).unwrap(),
        ErrorCode::TOO_LARGE
    ));
    assert!(
        !conn.is_closed(),
        "lingers instead of closing with unread input"
    );
    assert!(conn.poll_shutdown(&settings, t), "shut the write side");
    assert!(!conn.poll_shutdown(&settings, t), "once");
    assert!(conn.wants_read(&settings));
    // The rest of the payload, and anything after it, is discarded.
    conn.handle_input(&mut rig.shard, &frame[16_384..], t);
    conn.handle_input(&mut rig.shard, &wire(&[Request::Ping(b"x")]), t);
    assert_eq!(conn.poll_transmit(&mut rig.shard, t), None);
    assert!(!conn.is_closed());
    assert_eq!(conn.buffered_input(), 0, "discarding holds no memory");
    conn.handle_eof();
    assert!(conn.is_closed());
    assert_eq!(conn.close_reason(), CloseReason::Drained);

    // Bounded in bytes and in time, as for HTTP.
    let mut conn = Connection::new(2, Kind::Framed, t);
    conn.handle_input(&mut rig.shard, &frame[..4], t);
    rig.replies(&mut conn, t);
    assert!(conn.poll_shutdown(&settings, t));
    conn.handle_input(&mut rig.shard, &frame[4..], t);
    assert!(!conn.is_closed());
    conn.handle_input(&mut rig.shard, &frame[4..], t);
    assert!(conn.is_closed(), "past --linger-bytes");
    let mut conn = Connection::new(3, Kind::Framed, t);
    conn.handle_input(&mut rig.shard, &frame[..4], t);
    rig.replies(&mut conn, t);
    assert!(conn.poll_shutdown(&settings, t));
    let until = conn.poll_timeout(&settings).unwrap();
    assert_eq!(until, t + settings.linger_timeout);
    conn.handle_timeout(&mut rig.shard, until);
    assert!(conn.is_closed(), "past --linger-timeout");

    // A frame timeout lingers too: the rest of the frame may be coming.
    let mut conn = Connection::new(4, Kind::Framed, t);
    conn.handle_input(&mut rig.shard, &[40, 0, 0, 0, 3], t);
    let due = t + settings.frame_timeout;
    conn.handle_timeout(&mut rig.shard, due);
    assert!(is_error(
        &rig.replies(&mut conn, due)[0],
        ErrorCode::TIMEOUT
    ));
    assert!(conn.poll_shutdown(&settings, due));
    conn.handle_input(&mut rig.shard, &[b'a'; 39], due);
    assert!(!conn.is_closed());
    conn.handle_eof();
    assert!(conn.is_closed());

    // A peer that closed its sending side is not waited for.
    let mut conn = Connection::new(5, Kind::Framed, t);
    conn.handle_input(&mut rig.shard, &wire(&[Request::Ping(b"x")]), t);
    conn.handle_eof();
    assert_eq!(rig.replies(&mut conn, t), [Reply::Pong(Bytes::from("x"))]);
    assert!(!conn.poll_shutdown(&settings, t));
    assert!(conn.is_closed());
}

#[test]
fn disk_full_fails_its_batch_refuses_new_links_and_recovers_by_itself() {
    let mut rig = rig();
    let t = rig.t0;
    let mut conn = Connection::new(1, Kind::Framed, t);
    conn.handle_input(
        &mut rig.shard,
        &wire(&[Request::Shorten(b"https://e.com/a")]),
        t,
    );
    let io = rig.take_log(t).unwrap();
    rig.shard
        .log_done(&io, IoResult::DiskFull("No space left on device".into()), t);
    let replies = rig.replies(&mut conn, t);
    let (code, message) = replies[0].as_error().unwrap();
    assert_eq!(code, ErrorCode::OVERLOADED);
    assert!(message.contains("disk full"), "{message}");
    assert!(rig.shard.shared().health.problem().is_some());
    // New links are refused at once, not queued.
    conn.handle_input(
        &mut rig.shard,
        &wire(&[Request::Shorten(b"https://e.com/b")]),
        t,
    );
    assert!(is_error(
        &rig.replies(&mut conn, t)[0],
        ErrorCode::OVERLOADED
    ));
    // A second later: repair the broken segment, probe a fresh one.
    let later = t + 2 * SEC;
    let repair = rig.take_log(later).expect("a repair");
    assert!(matches!(repair, LogIo::Repair(_)));
    rig.shard.log_done(&repair, IoResult::Ok, later);
    let probe = rig.take_log(later).expect("a probe");
    let LogIo::Write(batch) = &probe else {
        panic!()
    };
    assert!(batch.create && batch.sync && batch.links().count() == 0);
    rig.shard.log_done(&probe, IoResult::Ok, later);
    assert!(rig.shard.shared().health.problem().is_none());
    conn.handle_input(
        &mut rig.shard,
        &wire(&[Request::Shorten(b"https://e.com/c")]),
        later,
    );
    rig.run_log(later, IoResult::Ok);
    assert!(matches!(
        rig.replies(&mut conn, later)[0],
        Reply::Shortened(_)
    ));
}

#[test]
fn resolve_reads_the_log_on_a_cache_miss() {
    let mut settings = Settings::for_tests("http://s.example/");
    settings.cache_bytes_per_core = 0;
    let mut rig = rig_with(settings);
    let t = rig.t0;
    let mut conn = Connection::new(1, Kind::Framed, t);
    conn.handle_input(
        &mut rig.shard,
        &wire(&[Request::Shorten(b"https://e.com/read")]),
        t,
    );
    let io = rig.take_log(t).unwrap();
    let LogIo::Write(batch) = io.clone() else {
        panic!()
    };
    rig.shard.log_done(&io, IoResult::Ok, t);
    let Reply::Shortened(short) = &rig.replies(&mut conn, t)[0] else {
        panic!()
    };
    let code = short.rsplit(|&b| b == b'/').next().unwrap().to_vec();

    conn.handle_input(
        &mut rig.shard,
        &wire(&[Request::Resolve(&code), Request::Ping(b"z")]),
        t,
    );
    assert!(rig.replies(&mut conn, t).is_empty(), "waits for the read");
    let read = rig.shard.poll_read().expect("a URL read");
    // Serve the read from the batch's bytes, as the file would.
    let at = (read.offset - batch.offset) as usize;
    let bytes = batch
        .bytes
        .slice(at..(at + read.len).min(batch.bytes.len()));
    rig.shard.read_done(read, Ok(bytes));
    let replies = rig.replies(&mut conn, t);
    assert_eq!(
        replies[0],
        Reply::Resolved(Bytes::from("https://e.com/read"))
    );
    assert_eq!(replies[1], Reply::Pong(Bytes::from("z")));
    // A damaged record is never served as a URL.
    conn.handle_input(&mut rig.shard, &wire(&[Request::Resolve(&code)]), t);
    let read = rig.shard.poll_read().unwrap();
    let mut damaged = batch.bytes.slice(at..).to_vec();
    damaged[20] ^= 1;
    rig.shard.read_done(read, Ok(Bytes::from(damaged)));
    assert!(is_error(&rig.replies(&mut conn, t)[0], ErrorCode::INTERNAL));
}

#[test]
fn http_redirects_and_shutdown() {
    let mut rig = rig();
    let t = rig.t0;
    let mut framed = Connection::new(1, Kind::Framed, t);
    framed.handle_input(
        &mut rig.shard,
        &wire(&[Request::Shorten(b"https://e.com/h")]),
        t,
    );
    rig.run_log(t, IoResult::Ok);
    let Reply::Shortened(short) = &rig.replies(&mut framed, t)[0] else {
        panic!()
    };
    let path = &short[b"http://s.example".len()..];
    let mut http = Connection::new(2, Kind::Http(Front::Public), t);
    let mut request = b"GET ".to_vec();
    request.extend_from_slice(path);
    request.extend_from_slice(b" HTTP/1.1\r\nHost: s\r\n\r\n");
    http.handle_input(&mut rig.shard, &request, t);
    assert!(
        http.poll_transmit(&mut rig.shard, t).is_none(),
        "waits for the read"
    );
    assert_eq!(rig.serve_reads(), 1);
    let bytes = http.poll_transmit(&mut rig.shard, t).unwrap();
    http.transmitted();
    let text = String::from_utf8(bytes.to_vec()).unwrap();
    assert!(text.starts_with("HTTP/1.1 302 Found\r\n"), "{text}");
    assert!(text.contains("Location: https://e.com/h\r\n"));
    // Shutdown: the idle connection closes at once.
    http.begin_shutdown();
    assert!(http.is_closed());
    // One with a request in flight finishes it first.
    framed.handle_input(
        &mut rig.shard,
        &wire(&[Request::Shorten(b"https://e.com/i")]),
        t,
    );
    framed.begin_shutdown();
    assert!(!framed.is_closed());
    rig.run_log(t, IoResult::Ok);
    assert_eq!(rig.replies(&mut framed, t).len(), 1);
    assert!(framed.is_closed());
}

#[test]
fn new_links_skip_codes_that_imported_links_hold() {
    let keydir = Arc::new(KeyDir::new());
    let codec = Codec::new(&CodeKey([7; 16]));
    // Imported links that happen to hold the codes of ids 0, 1 and 2.
    for id in 0..3 {
        keydir.insert(
            codec.key_of(id),
            shorty_service::keydir::Location {
                file: 0,
                offset: 16,
            },
        );
    }
    let mut rig = rig_on_store(keydir, &codec, 0);
    let t = rig.t0;
    let code = rig.shorten(b"https://e.com/new", t);
    let key = shorty_service::codes::parse_code(&code).unwrap();
    assert_eq!(key, codec.key_of(3), "ids 0 to 2 were skipped");
}

#[test]
fn a_code_taken_after_the_generator_looked_ahead_at_it_is_still_skipped() {
    // The generator computes (and prefetches) the keys of the next few ids
    // early; what decides is the key directory when the id's turn comes.
    let keydir = Arc::new(KeyDir::new());
    let codec = Codec::new(&CodeKey([7; 16]));
    let mut rig = rig_on_store(keydir.clone(), &codec, 0);
    let t = rig.t0;
    let first = rig.shorten(b"https://e.com/first", t);
    assert_eq!(parse_code(&first), Some(codec.key_of(0)));
    // Imports take the codes of ids 1 to 3, already computed ahead.
    for id in 1..=shorty_service::codes::KEYS_AHEAD as u64 - 1 {
        assert!(keydir.insert(
            codec.key_of(id),
            shorty_service::keydir::Location {
                file: 0,
                offset: 16,
            },
        ));
    }
    let next = rig.shorten(b"https://e.com/next", t);
    assert_eq!(
        parse_code(&next),
        Some(codec.key_of(shorty_service::codes::KEYS_AHEAD as u64)),
        "the ids whose codes were taken meanwhile were skipped"
    );
}

#[test]
fn the_id_whose_code_is_healthz_is_skipped() {
    let codec = Codec::new(&CodeKey([7; 16]));
    let healthz = shorty_service::codes::parse_code(b"healthz").unwrap();
    let id = codec.id_of(healthz);
    // Start the id counter at the block holding that id.
    let block_start = id - id % shorty_service::codes::BLOCK_SIZE;
    let mut rig = rig_on_store(Arc::new(KeyDir::new()), &codec, block_start);
    let t = rig.t0;
    let mut codes = Vec::new();
    for n in block_start..=id {
        codes.push(rig.shorten(format!("https://e.com/{n}").as_bytes(), t));
    }
    assert!(
        !codes.iter().any(|c| c == b"healthz"),
        "a new link got the code /healthz shadows"
    );
    let last = shorty_service::codes::parse_code(codes.last().unwrap()).unwrap();
    assert_eq!(last, codec.key_of(id + 1), "the id after it took its turn");
}

#[test]
fn a_failed_read_fails_every_request_that_joined_it_and_the_next_one_reads_again() {
    let mut settings = Settings::for_tests("http://s.example/");
    settings.cache_bytes_per_core = 0;
    let mut rig = rig_with(settings);
    let t = rig.t0;
    let code = rig.shorten(b"https://e.com/flaky", t);
    let (mut a, mut b) = (
        Connection::new(1, Kind::Framed, t),
        Connection::new(2, Kind::Framed, t),
    );
    a.handle_input(&mut rig.shard, &wire(&[Request::Resolve(&code)]), t);
    b.handle_input(&mut rig.shard, &wire(&[Request::Resolve(&code)]), t);
    let read = rig.shard.poll_read().expect("one read for both");
    assert!(
        rig.shard.poll_read().is_none(),
        "the second joined the first"
    );
    rig.shard.read_done(read, Err(std::io::Error::other("EIO")));
    assert!(is_error(&rig.replies(&mut a, t)[0], ErrorCode::INTERNAL));
    assert!(is_error(&rig.replies(&mut b, t)[0], ErrorCode::INTERNAL));
    // The key is not left "being read": a later RESOLVE reads it again.
    a.handle_input(&mut rig.shard, &wire(&[Request::Resolve(&code)]), t);
    assert_eq!(rig.serve_reads(), 1);
    assert_eq!(
        rig.replies(&mut a, t)[0],
        Reply::Resolved(Bytes::from("https://e.com/flaky"))
    );
}

#[test]
fn a_cold_flood_reads_once_and_stays_within_the_cap() {
    let mut settings = Settings::for_tests("http://s.example/");
    settings.max_output_bytes = 64 * 1024;
    let mut rig = rig_with(settings.clone());
    let t = rig.t0;
    let long = format!("https://e.com/{}", "x".repeat(8000));
    let code = rig.shorten(long.as_bytes(), t);

    // Not in the cache: every RESOLVE waits for the log. A waiting RESOLVE
    // counts as the largest reply it can become, so few are admitted.
    let mut conn = Connection::new(1, Kind::Framed, t);
    let request = wire(&[Request::Resolve(&code)]);
    let flood: Vec<u8> = request
        .iter()
        .copied()
        .cycle()
        .take(request.len() * 1000)
        .collect();
    conn.handle_input(&mut rig.shard, &flood, t);
    assert!(!conn.wants_read(&settings));
    let admitted = rig.shard.ops_in_flight();
    assert!(
        admitted <= settings.max_output_bytes / 8000 + 1,
        "{admitted} waiting"
    );
    // One read answers all of them (and a second for the long record).
    assert_eq!(rig.serve_reads(), 2);
    let mut written = 0;
    while let Some(bytes) = conn.poll_transmit(&mut rig.shard, t) {
        written += bytes.len();
        assert!(
            bytes.len() <= settings.max_output_bytes + 9000,
            "{}",
            bytes.len()
        );
        conn.transmitted();
        let more = rig.serve_reads();
        assert!(more <= 2, "single flight: {more} reads");
    }
    // Every request answered: a RESOLVED frame is 5 bytes and the URL.
    assert_eq!(written, 1000 * (long.len() + 5));
}

/// Everything the connection writes now, as text (the writes complete at
/// once).
fn http_text(rig: &mut Rig, conn: &mut Connection, now: Instant) -> String {
    let mut text = String::new();
    while let Some(chunk) = conn.poll_transmit(&mut rig.shard, now) {
        text.push_str(std::str::from_utf8(&chunk).unwrap());
        conn.transmitted();
    }
    text
}

#[test]
fn a_refused_head_is_answered_then_the_write_side_shut_and_the_rest_discarded() {
    let mut settings = Settings::for_tests("http://s.example/");
    settings.linger_bytes = 50_000;
    let mut rig = rig_with(settings.clone());
    let t = rig.t0;
    // A request line longer than the head limit, still arriving.
    let line = format!("GET /{}", "a".repeat(20_000));
    let mut conn = Connection::new(1, Kind::Http(Front::Public), t);
    conn.handle_input(&mut rig.shard, line.as_bytes(), t);
    assert!(
        !conn.wants_read(&settings),
        "no reading while the answer is owed"
    );
    let bytes = conn.poll_transmit(&mut rig.shard, t).unwrap();
    assert!(
        !conn.poll_shutdown(&settings, t),
        "not before the answer is written"
    );
    conn.transmitted();
    let text = String::from_utf8(bytes.to_vec()).unwrap();
    assert!(text.starts_with("HTTP/1.1 414 URI Too Long\r\n"), "{text}");
    assert!(text.contains("Connection: close\r\n"));
    assert!(
        !conn.is_closed(),
        "lingers instead of closing with unread input"
    );
    assert!(conn.poll_shutdown(&settings, t), "shut the write side");
    assert!(!conn.poll_shutdown(&settings, t), "once");
    assert!(conn.wants_read(&settings));
    // What still arrives is discarded, whatever it is.
    conn.handle_input(&mut rig.shard, &[b'a'; 30_000], t);
    conn.handle_input(
        &mut rig.shard,
        b"\r\nHost: x\r\n\r\nGET / HTTP/1.1\r\n\r\n",
        t,
    );
    assert_eq!(conn.poll_transmit(&mut rig.shard, t), None);
    assert!(!conn.is_closed());
    assert_eq!(conn.buffered_input(), 0, "discarding holds no memory");
    conn.handle_eof();
    assert!(conn.is_closed());
    assert_eq!(conn.close_reason(), CloseReason::Drained);

    // Bounded in bytes: the peer that keeps sending is closed on.
    let mut conn = Connection::new(2, Kind::Http(Front::Public), t);
    conn.handle_input(&mut rig.shard, line.as_bytes(), t);
    http_text(&mut rig, &mut conn, t);
    assert!(conn.poll_shutdown(&settings, t));
    for _ in 0..3 {
        conn.handle_input(&mut rig.shard, &[b'a'; 16_384], t);
        assert!(!conn.is_closed());
    }
    conn.handle_input(&mut rig.shard, &[b'a'; 16_384], t);
    assert!(conn.is_closed(), "past --linger-bytes");

    // Bounded in time: the peer that neither sends nor closes.
    let mut conn = Connection::new(3, Kind::Http(Front::Public), t);
    let headers = format!("GET / HTTP/1.1\r\nHost: x\r\nX: {}\r\n", "b".repeat(9_000));
    conn.handle_input(&mut rig.shard, headers.as_bytes(), t);
    assert!(http_text(&mut rig, &mut conn, t).starts_with("HTTP/1.1 431 "));
    assert!(conn.poll_shutdown(&settings, t));
    let until = conn.poll_timeout(&settings).unwrap();
    assert_eq!(until, t + settings.linger_timeout);
    conn.handle_timeout(&mut rig.shard, until - Duration::from_millis(1));
    assert!(!conn.is_closed());
    conn.handle_timeout(&mut rig.shard, until);
    assert!(conn.is_closed(), "past --linger-timeout");

    // A last request with nothing after it closes at once: the peer is
    // done sending.
    let mut conn = Connection::new(4, Kind::Http(Front::Public), t);
    conn.handle_input(
        &mut rig.shard,
        b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        t,
    );
    assert!(http_text(&mut rig, &mut conn, t).starts_with("HTTP/1.1 200 "));
    assert!(!conn.poll_shutdown(&settings, t));
    assert!(conn.is_closed());

    // Shutdown does not wait for a lingering peer.
    let mut conn = Connection::new(5, Kind::Http(Front::Public), t);
    conn.handle_input(&mut rig.shard, line.as_bytes(), t);
    http_text(&mut rig, &mut conn, t);
    assert!(conn.poll_shutdown(&settings, t));
    conn.begin_shutdown();
    assert!(conn.is_closed());
}

#[test]
fn redirects_forward_the_visitors_query_unless_turned_off() {
    for forward in [true, false] {
        let mut settings = Settings::for_tests("http://s.example/");
        settings.forward_query = forward;
        // No cache: each redirect waits for its URL read, keeping the
        // visitor's query meanwhile.
        settings.cache_bytes_per_core = 0;
        let mut rig = rig_with(settings);
        let t = rig.t0;
        let code = rig.shorten(b"https://e.com/h?a=1#top", t);
        let code = std::str::from_utf8(&code).unwrap();
        let expected = if forward {
            "https://e.com/h?a=1&b=%C3%A9#top"
        } else {
            "https://e.com/h?a=1#top"
        };
        // The origin and the absolute form alike.
        let mut conn = Connection::new(1, Kind::Http(Front::Public), t);
        let request = format!("GET /{code}?a=2&b=\u{e9} HTTP/1.1\r\nHost: s\r\n\r\n");
        let absolute =
            format!("GET http://s.example/{code}?a=2&b=\u{e9}#x HTTP/1.1\r\nHost: s\r\n\r\n");
        for request in [&request, &request, &absolute] {
            conn.handle_input(&mut rig.shard, request.as_bytes(), t);
        }
        assert!(
            conn.poll_transmit(&mut rig.shard, t).is_none(),
            "waits for the read"
        );
        assert!(rig.serve_reads() >= 1);
        let text = http_text(&mut rig, &mut conn, t);
        let locations: Vec<&str> = text
            .lines()
            .filter_map(|l| l.strip_prefix("Location: "))
            .collect();
        assert_eq!(locations, [expected; 3], "forward={forward}: {text}");
    }
}

/// The I/O loop may learn of a write's completion only at the next input
/// (one wake-up fewer per keep-alive request) exactly while nothing else
/// hangs on it: open, reading, no other reply queued.
#[test]
fn a_write_completion_waits_only_while_nothing_hangs_on_it() {
    let mut settings = Settings::for_tests("http://s.example/");
    settings.max_output_bytes = 4096;
    let mut rig = rig_with(settings.clone());
    let t = rig.t0;
    let mut conn = Connection::new(1, Kind::Framed, t);
    assert!(
        !conn.write_completion_can_wait(&settings),
        "no write in flight"
    );
    conn.handle_input(&mut rig.shard, &wire(&[Request::Ping(b"a")]), t);
    conn.poll_transmit(&mut rig.shard, t).expect("a write");
    assert!(conn.write_completion_can_wait(&settings));
    // The stall deadline stays armed while it waits.
    assert_eq!(
        conn.poll_timeout(&settings),
        Some(t + settings.write_timeout)
    );

    // A reply queued behind the write needs it to complete.
    conn.handle_input(&mut rig.shard, &wire(&[Request::Ping(b"b")]), t);
    assert!(!conn.write_completion_can_wait(&settings));
    conn.transmitted();
    conn.poll_transmit(&mut rig.shard, t)
        .expect("the second write");
    assert!(conn.write_completion_can_wait(&settings));

    // Reading held back by the output cap needs it too.
    let body = [b'p'; 1000];
    let pings: Vec<Request<&[u8]>> = (0..8).map(|_| Request::Ping(&body[..])).collect();
    conn.handle_input(&mut rig.shard, &wire(&pings), t);
    assert!(!conn.wants_read(&settings));
    assert!(!conn.write_completion_can_wait(&settings));
    // The second write completes; what was held goes out.
    conn.transmitted();
    while conn.poll_transmit(&mut rig.shard, t).is_some() {
        conn.transmitted();
    }
    assert!(!conn.write_completion_can_wait(&settings), "all written");

    // So does a connection that closes once its output is out.
    conn.handle_input(&mut rig.shard, &wire(&[Request::Ping(b"c")]), t);
    conn.poll_transmit(&mut rig.shard, t).expect("a write");
    conn.begin_shutdown();
    assert!(!conn.is_closed());
    assert!(!conn.write_completion_can_wait(&settings));
    let mut eof = Connection::new(2, Kind::Framed, t);
    eof.handle_input(&mut rig.shard, &wire(&[Request::Ping(b"d")]), t);
    eof.poll_transmit(&mut rig.shard, t).expect("a write");
    eof.handle_eof();
    assert!(!eof.is_closed());
    assert!(!eof.write_completion_can_wait(&settings));

    // Nor where an idle close could fall due before the write-stall
    // deadline wakes the loop (review 19): an idle timeout shorter than the
    // write timeout, or input last read long before the write began.
    let mut short_idle = settings.clone();
    short_idle.idle_timeout = Duration::from_secs(1);
    short_idle.write_timeout = Duration::from_secs(8);
    let mut quick = Connection::new(3, Kind::Framed, t);
    quick.handle_input(&mut rig.shard, &wire(&[Request::Ping(b"e")]), t);
    quick.poll_transmit(&mut rig.shard, t).expect("a write");
    assert!(quick.write_completion_can_wait(&settings));
    assert!(!quick.write_completion_can_wait(&short_idle));
    let late = t + settings.idle_timeout - settings.write_timeout + SEC;
    let mut stale = Connection::new(4, Kind::Framed, t);
    stale.handle_input(&mut rig.shard, &wire(&[Request::Ping(b"f")]), t);
    stale.poll_transmit(&mut rig.shard, late).expect("a write");
    assert!(
        !stale.write_completion_can_wait(&settings),
        "input last read {:?} before the write",
        late - t
    );
}

/// A flood of failing reads (the log's files out of reach) logs one line a
/// second, saying how many it left out, not a line per request.
#[test]
fn failed_reads_are_logged_at_most_once_a_second() {
    use std::sync::Mutex;
    #[derive(Clone, Default)]
    struct Lines(Arc<Mutex<Vec<u8>>>);
    impl std::io::Write for Lines {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let lines = Lines::default();
    let writer = lines.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .finish();
    let mut settings = Settings::for_tests("http://s.example/");
    settings.cache_bytes_per_core = 0;
    let mut rig = rig_with(settings);
    let t = rig.t0;
    let code = rig.shorten(b"https://e.com/unreadable", t);
    let fail_reads = |rig: &mut Rig, n: usize, now: Instant| {
        for i in 0..n {
            let mut conn = Connection::new(100 + i as u32, Kind::Framed, now);
            conn.handle_input(&mut rig.shard, &wire(&[Request::Resolve(&code)]), now);
            let read = rig.shard.poll_read().expect("a read");
            rig.shard
                .read_done(read, Err(std::io::Error::other("EMFILE")));
            assert!(is_error(
                &rig.replies(&mut conn, now)[0],
                ErrorCode::INTERNAL
            ));
        }
    };
    tracing::subscriber::with_default(subscriber, || {
        fail_reads(&mut rig, 100, t);
        fail_reads(&mut rig, 1, t + 2 * SEC);
    });
    let text = String::from_utf8(lines.0.lock().unwrap().clone()).unwrap();
    let logged: Vec<&str> = text
        .lines()
        .filter(|l| l.contains("reading a URL failed"))
        .collect();
    assert_eq!(logged.len(), 2, "{text}");
    assert!(!logged[0].contains("more failed"), "{}", logged[0]);
    assert!(logged[1].contains("(99 more failed"), "{}", logged[1]);
}
