//! A keep-alive HTTP redirect of a cached plain link through the sans-IO
//! core (parse, resolve, render), the per-request cost issue 19 bounds at
//! 1.03x of before the lifecycle checks. Builds against the shard's API of
//! round 2 too, so the same file measures both (see the README).
#![allow(missing_docs)]

use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, Criterion};
use shorty_protocol::Request;
use shorty_service::connection::{Connection, Kind};
use shorty_service::http::Front;
use shorty_service::log::{IoResult, LogIo};
use shorty_service::settings::Settings;
use shorty_service::shard::{Shard, Shared};

/// `on`/`off` from environment variable `name`, `default` when unset.
fn switch(name: &str, default: bool) -> bool {
    match std::env::var(name).as_deref() {
        Ok("on") => true,
        Ok("off") => false,
        _ => default,
    }
}

fn redirect(c: &mut Criterion) {
    let mut settings = Settings::for_tests("http://s.example/");
    // Knobs for side-by-side instruction counts (issue 24's forwarding on
    // vs off, issue 20's statistics on vs off); round 2's settings had
    // neither field, so the round-2 comparison builds this file without
    // these two lines.
    settings.forward_query = switch("REDIRECT_FORWARD", settings.forward_query);
    settings.stats = switch("REDIRECT_STATS", settings.stats);
    // `REDIRECT_QUERY=?utm_source=mail`: the visitor's query string.
    let query = std::env::var("REDIRECT_QUERY").unwrap_or_default();
    let mut shard = Shard::new(Arc::new(Shared::for_tests(settings)), 0);
    let now = Instant::now();
    let mut disk = std::collections::HashMap::<u32, Vec<u8>>::new();
    let mut framed = Connection::new(1, Kind::Framed, now);
    let mut frame = Vec::new();
    // `REDIRECT_TARGET=https://example.com/p`: the link's URL (with a query
    // of its own by default, the case where forwarding must look for
    // clashing names).
    let target = std::env::var("REDIRECT_TARGET")
        .unwrap_or_else(|_| "https://example.com/some/path?x=1".to_owned());
    Request::Shorten(target.as_bytes())
        .encode_frame(&mut frame)
        .unwrap();
    framed.handle_input(&mut shard, &frame, now);
    while let Some(io) = shard.poll_log_io(now) {
        if let LogIo::Write(batch) = &io {
            let file = disk.entry(batch.segment.idx).or_default();
            file.truncate(batch.offset as usize);
            file.extend_from_slice(&batch.bytes);
        }
        shard.log_done(&io, IoResult::Ok, now);
    }
    let mut reply = Vec::new();
    while let Some(chunk) = framed.poll_transmit(&mut shard, now) {
        reply.extend_from_slice(&chunk);
        framed.transmitted();
    }
    let code = reply.rsplit(|&b| b == b'/').next().unwrap().to_vec();
    let mut request = b"GET /".to_vec();
    request.extend_from_slice(&code);
    request.extend_from_slice(query.as_bytes());
    request.extend_from_slice(b" HTTP/1.1\r\nHost: s.example\r\nUser-Agent: bench\r\n\r\n");
    let mut http = Connection::new(2, Kind::Http(Front::Public), now);
    let round = |shard: &mut Shard, http: &mut Connection| {
        http.handle_input(shard, &request, now);
        while let Some(read) = shard.poll_read() {
            let file = &disk[&read.file];
            let at = read.offset as usize;
            let bytes = Bytes::copy_from_slice(&file[at..(at + read.len).min(file.len())]);
            shard.read_done(read, Ok(bytes));
        }
        let mut n = 0;
        while let Some(chunk) = http.poll_transmit(shard, now) {
            n += chunk.len();
            http.transmitted();
        }
        n
    };
    // The first click reads the log and fills the cache.
    assert!(round(&mut shard, &mut http) > 0);
    // `REDIRECT_ROUNDS=n`: run n redirects and stop, for an instruction
    // count under `valgrind --tool=cachegrind` (deterministic, unlike time
    // on a shared machine): the difference of two counts over the
    // difference of their n is the instructions per redirect.
    if let Some(n) = std::env::var("REDIRECT_ROUNDS")
        .ok()
        .and_then(|n| n.parse::<u64>().ok())
    {
        let bytes: usize = (0..n).map(|_| round(&mut shard, &mut http)).sum();
        println!("{n} redirects, {bytes} bytes");
        std::process::exit(0);
    }
    c.bench_function("keep-alive redirect, cached plain link", |b| {
        b.iter(|| round(&mut shard, &mut http))
    });
}

criterion_group!(benches, redirect);
criterion_main!(benches);
