//! What query forwarding adds to a redirect: `forward::merge_into` (what
//! the redirect calls, writing into the response being built) against the
//! redirect's other per-request work (issue 24 asks for forwarding on
//! within 1.03x of off; see the README for the whole redirect's figures).
#![allow(missing_docs)]

use bytes::BytesMut;
use criterion::{criterion_group, criterion_main, Criterion};
use shorty_service::forward::{merge_into, Clash};
use std::hint::black_box;

fn forward(c: &mut Criterion) {
    let target = "https://example.com/some/long/path?id=7&utm_source=site#top";
    let plain = "https://example.com/some/long/path";
    let query = "utm_source=mail&utm_medium=email&utm_campaign=dec";
    // One buffer, cleared each time, as the response's output buffer is
    // reused.
    let mut out = BytesMut::with_capacity(512);
    let mut bench = |name: &str, target: &'static str, query: Option<&'static str>, clash| {
        c.bench_function(name, |b| {
            b.iter(|| {
                out.clear();
                merge_into(&mut out, black_box(target), black_box(query), clash, 8192);
                out.len()
            })
        });
    };
    bench(
        "merge, forwarding off (the target copied)",
        target,
        None,
        Clash::KeepTarget,
    );
    bench(
        "merge, three utm parameters, target without a query",
        plain,
        Some(query),
        Clash::KeepTarget,
    );
    bench(
        "merge, three utm parameters, one clash",
        target,
        Some(query),
        Clash::KeepTarget,
    );
    bench(
        "merge, three utm parameters, one clash, visitor wins",
        target,
        Some(query),
        Clash::VisitorWins,
    );
}

criterion_group!(benches, forward);
criterion_main!(benches);
