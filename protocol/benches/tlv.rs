//! Cost of the version-2 TLV lists: reading a SHORTEN2 body with every
//! option, reading and writing the link list of an INFO reply, and reading
//! a STATS reply with 48 hourly buckets and 10 referrers.
//!
//! `cargo bench -p shorty-protocol --bench tlv`.
#![allow(missing_docs)]

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion};
use shorty_protocol::link::{Bucket, LinkInfo, LinkOptions, LinkStats, Referrer};

const URL: &str = "https://example.com/a/long/path/of/sixty/four/bytes/0123456789ab";

fn options() -> Vec<u8> {
    let mut o = LinkOptions::new(URL);
    o.alias = Some("docs-2027");
    o.expires_at_ms = Some(1_798_761_600_000);
    o.max_clicks = Some(1_000);
    o.redirect_status = Some(301);
    o.expired_url = Some("https://example.com/gone");
    o.title = Some("Documentation");
    o.forward_query = Some(false);
    o.to_vec().unwrap()
}

fn info() -> LinkInfo<'static> {
    let mut i = LinkInfo::new("docs-2027", URL);
    i.short_url = Some("http://127.0.0.1:5000/docs-2027");
    i.created_at_ms = Some(1_764_547_200_000);
    i.expires_at_ms = Some(1_798_761_600_000);
    i.max_clicks = Some(1_000);
    i.redirect_status = Some(301);
    i.clicks_total = Some(5);
    i.clicks_human = Some(4);
    i.clicks_bot = Some(1);
    i.last_click_at_ms = Some(1_764_550_800_000);
    i
}

fn stats() -> Vec<u8> {
    let hosts: Vec<String> = (0..10).map(|i| format!("host{i}.example.org")).collect();
    let mut s = LinkStats::default();
    (s.total, s.human, s.bot) = (5_000, 4_000, 1_000);
    s.series = (0..48)
        .map(|h| Bucket {
            start_ms: 1_764_547_200_000 + h * 3_600_000,
            count: h,
        })
        .collect();
    s.referrers = hosts
        .iter()
        .map(|host| Referrer { host, count: 10 })
        .collect();
    s.to_vec().unwrap()
}

fn bench(c: &mut Criterion) {
    let body = options();
    c.bench_function("parse SHORTEN2 options (all 8 fields)", |b| {
        b.iter(|| LinkOptions::parse(black_box(&body)).unwrap())
    });
    let link = info();
    let list = link.to_vec().unwrap();
    c.bench_function("parse INFO link list (12 fields)", |b| {
        b.iter(|| LinkInfo::parse(black_box(&list)).unwrap())
    });
    let mut out = Vec::with_capacity(list.len());
    c.bench_function("encode INFO link list (12 fields)", |b| {
        b.iter(|| {
            out.clear();
            black_box(&link).encode(&mut out).unwrap();
        })
    });
    let stats = stats();
    c.bench_function("parse STATS (48 buckets, 10 referrers)", |b| {
        b.iter(|| LinkStats::parse(black_box(&stats)).unwrap())
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
