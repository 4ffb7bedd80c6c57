//! The sans-IO handler driven the way a backend drives it, with blocking
//! file I/O standing in for io_uring.

use std::fs::OpenOptions;
use std::io::{Seek, SeekFrom, Write};

use bytes::{Bytes, BytesMut};
use clap::Parser;
use shorty_protocol::frame::{FrameDecoder, Status};
use shorty_protocol::{ErrorCode, Reply, Request};
use shorty_service::log::WriteBatch;
use shorty_service::{Config, Index, ReplyQueue, Service, Shard, Store};

fn config(dir: &std::path::Path) -> Config {
    Config::try_parse_from([
        "shorty",
        "--data-dir",
        dir.to_str().unwrap(),
        "--max-url-bytes",
        "200",
    ])
    .unwrap()
}

fn write(batch: &WriteBatch) -> std::io::Result<()> {
    let mut file = OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(false)
        .open(&batch.path)?;
    file.seek(SeekFrom::Start(batch.offset))?;
    file.write_all(&batch.bytes)?;
    file.sync_data()
}

fn frames(requests: &[Request<&[u8]>]) -> Vec<u8> {
    let mut wire = Vec::new();
    for r in requests {
        r.encode(&mut wire).unwrap();
    }
    wire
}

fn replies(queue: &mut ReplyQueue) -> Vec<Reply> {
    let mut buf = BytesMut::new();
    while let Some(bytes) = queue.take_ready() {
        buf.extend_from_slice(&bytes);
    }
    let mut out = Vec::new();
    while let Status::Complete(p) = FrameDecoder::new().decode(&mut buf).unwrap() {
        out.push(Reply::decode(p).unwrap());
    }
    assert!(buf.is_empty());
    out
}

fn sync_all(shard: &mut Shard<Index>, queue: &mut ReplyQueue) {
    while let Some(batch) = shard.poll_batch() {
        let result = write(&batch);
        shard.batch_done(&batch, result);
    }
    shard.release(queue);
}

fn text(b: &Bytes) -> &str {
    std::str::from_utf8(b).unwrap()
}

#[test]
fn pipelined_requests_are_answered_in_order_after_the_sync() {
    let dir = tempfile::tempdir().unwrap();
    let (service, _) = Service::open(config(dir.path())).unwrap();
    let mut shard = service.shard();
    let mut queue = ReplyQueue::new();

    let wire = frames(&[
        Request::Ping(b"1"),
        Request::Shorten(b"https://example.com/a"),
        Request::Ping(b"2"),
        Request::Bare(b"http://127.0.0.1:5000/0f8fad5b-d9cb-469f-a165-70867728950e"),
        Request::Resolve(b"0000000"),
    ]);
    // Half a frame more at the end: consumed stops before it.
    let mut input = wire.clone();
    input.extend_from_slice(&[9, 0, 0, 0, 3]);
    let outcome = shard.handle_input(&input, &mut queue);
    assert_eq!(outcome.consumed, wire.len());
    assert!(outcome.mid_frame && !outcome.close);

    // Only the PING before the first SHORTEN may go out before the sync.
    assert_eq!(replies(&mut queue), [Reply::Pong(Bytes::from_static(b"1"))]);
    assert!(queue.has_pending());
    assert!(shard.has_log_work());
    sync_all(&mut shard, &mut queue);
    assert!(!queue.has_pending());

    let got = replies(&mut queue);
    assert_eq!(got.len(), 4);
    let Reply::Shortened(short) = &got[0] else {
        panic!("{got:?}")
    };
    assert!(text(short).starts_with("http://127.0.0.1:5000/"));
    assert_eq!(text(short).len(), "http://127.0.0.1:5000/".len() + 7);
    assert_eq!(got[1], Reply::Pong(Bytes::from_static(b"2")));
    let Reply::Bare(bare) = &got[2] else {
        panic!("{got:?}")
    };
    assert_ne!(bare, short);
    assert_eq!(got[3].as_error().unwrap().0, ErrorCode::NOT_FOUND);

    // The code resolves, and shortening the short URL is refused.
    let code = &text(short)["http://127.0.0.1:5000/".len()..];
    shard.handle_input(
        &frames(&[Request::Resolve(code.as_bytes()), Request::Shorten(short)]),
        &mut queue,
    );
    let got = replies(&mut queue);
    assert_eq!(
        got[0],
        Reply::Resolved(Bytes::from_static(b"https://example.com/a"))
    );
    assert_eq!(got[1].as_error().unwrap().0, ErrorCode::ALREADY_SHORT);
    assert_eq!(service.store().len(), 2);
}

#[test]
fn bad_input_gets_error_replies_and_an_oversized_frame_closes() {
    let dir = tempfile::tempdir().unwrap();
    let (service, _) = Service::open(config(dir.path())).unwrap();
    let mut shard = service.shard();
    let mut queue = ReplyQueue::new();
    let mut wire = frames(&[Request::Hello { version: 9 }, Request::Shorten(b"ftp://x/")]);
    wire.extend_from_slice(b"\x01\x00\x00\x00\x09"); // unknown opcode
    wire.extend_from_slice(b"\x00\x00\x00\x00"); // empty payload
    wire.extend_from_slice(b"\x01\x00\x00\x00\x01"); // truncated HELLO
    let long = format!("http://e.com/{}", "x".repeat(200));
    wire.extend_from_slice(&frames(&[Request::Shorten(long.as_bytes())]));
    wire.extend_from_slice(&frames(&[Request::Hello { version: 0 }]));
    let outcome = shard.handle_input(&wire, &mut queue);
    assert_eq!(outcome.consumed, wire.len());
    let got = replies(&mut queue);
    let Reply::Hello(info) = got[0] else {
        panic!("{got:?}")
    };
    assert_eq!(
        (info.version, info.max_url_len, info.max_frame_len),
        (1, 200, 264)
    );
    let codes: Vec<u16> = got[1..]
        .iter()
        .map(|r| r.as_error().unwrap().0 .0)
        .collect();
    assert_eq!(codes, [422, 501, 400, 400, 413, 505]);

    // A header over the limit: answered, nothing of its payload consumed.
    let outcome = shard.handle_input(b"\xff\xff\x00\x00partial", &mut queue);
    assert!(outcome.close);
    assert_eq!(outcome.consumed, 0);
    assert!(queue.closing());
    assert_eq!(
        replies(&mut queue)[0].as_error().unwrap().0,
        ErrorCode::TOO_LARGE
    );
}

#[test]
fn a_failed_sync_turns_into_error_replies_in_place() {
    let dir = tempfile::tempdir().unwrap();
    let (service, _) = Service::open(config(dir.path())).unwrap();
    let mut shard = service.shard();
    let mut queue = ReplyQueue::new();
    shard.handle_input(
        &frames(&[
            Request::Shorten(b"http://a.example/"),
            Request::Ping(b"after"),
        ]),
        &mut queue,
    );
    let batch = shard.poll_batch().unwrap();
    shard.batch_done(&batch, Err(std::io::Error::other("disk on fire")));
    shard.release(&mut queue);
    let got = replies(&mut queue);
    assert_eq!(got[0].as_error().unwrap().0, ErrorCode::INTERNAL);
    assert_eq!(got[1], Reply::Pong(Bytes::from_static(b"after")));
    assert_eq!(
        service.store().len(),
        0,
        "nothing unacknowledged enters the index"
    );
    // The log stays failed: later SHORTENs are refused at once.
    shard.handle_input(
        &frames(&[Request::Shorten(b"http://b.example/")]),
        &mut queue,
    );
    assert_eq!(
        replies(&mut queue)[0].as_error().unwrap().0,
        ErrorCode::INTERNAL
    );
}

#[test]
fn acknowledged_codes_survive_a_restart_and_are_never_reused() {
    let dir = tempfile::tempdir().unwrap();
    let mut acknowledged = Vec::new();
    for run in 0..3 {
        let (service, report) = Service::open(config(dir.path())).unwrap();
        assert_eq!(report.urls, acknowledged.len() as u64);
        let shards: Vec<Shard<Index>> = (0..2).map(|_| service.shard()).collect();
        for (s, mut shard) in shards.into_iter().enumerate() {
            let mut queue = ReplyQueue::new();
            let urls: Vec<String> = (0..30)
                .map(|i| format!("http://e.com/{run}/{s}/{i}"))
                .collect();
            let reqs: Vec<Request<&[u8]>> = urls
                .iter()
                .map(|u| Request::Shorten(u.as_bytes()))
                .collect();
            shard.handle_input(&frames(&reqs), &mut queue);
            sync_all(&mut shard, &mut queue);
            for (reply, url) in replies(&mut queue).into_iter().zip(urls) {
                let Reply::Shortened(short) = reply else {
                    panic!("{reply:?}")
                };
                acknowledged.push((text(&short).to_owned(), url));
            }
        }
        // Every code ever acknowledged resolves to its URL, and no code
        // was handed out twice.
        let mut shard = service.shard();
        let mut queue = ReplyQueue::new();
        for (short, url) in &acknowledged {
            let code = &short["http://127.0.0.1:5000/".len()..];
            shard.handle_input(&frames(&[Request::Resolve(code.as_bytes())]), &mut queue);
            assert_eq!(
                replies(&mut queue),
                [Reply::Resolved(Bytes::from(url.clone()))]
            );
        }
        let unique: std::collections::HashSet<_> = acknowledged.iter().map(|(s, _)| s).collect();
        assert_eq!(unique.len(), acknowledged.len());
    }
}
