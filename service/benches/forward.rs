//! What query forwarding adds to a redirect: `forward::merge` against the
//! redirect's other per-request work (issue 24 asks for forwarding on
//! within 1.03x of off; a keep-alive redirect costs ~8 µs of server CPU on
//! the reference machine, see the README).
#![allow(missing_docs)]

use criterion::{criterion_group, criterion_main, Criterion};
use shorty_service::forward::{merge, Clash};
use std::hint::black_box;

fn forward(c: &mut Criterion) {
    let target = "https://example.com/some/long/path?id=7&utm_source=site#top";
    let query = "utm_source=mail&utm_medium=email&utm_campaign=dec";
    c.bench_function("merge, forwarding off", |b| {
        b.iter(|| {
            merge(
                black_box(target),
                black_box(Some(query)),
                false,
                Clash::KeepTarget,
                8192,
            )
            .len()
        })
    });
    c.bench_function("merge, no query", |b| {
        b.iter(|| {
            merge(
                black_box(target),
                black_box(None),
                true,
                Clash::KeepTarget,
                8192,
            )
            .len()
        })
    });
    c.bench_function("merge, three utm parameters, one clash", |b| {
        b.iter(|| {
            merge(
                black_box(target),
                black_box(Some(query)),
                true,
                Clash::KeepTarget,
                8192,
            )
            .len()
        })
    });

    c.bench_function(
        "merge, three utm parameters, one clash, visitor wins",
        |b| {
            b.iter(|| {
                merge(
                    black_box(target),
                    black_box(Some(query)),
                    true,
                    Clash::VisitorWins,
                    8192,
                )
                .len()
            })
        },
    );
}

criterion_group!(benches, forward);
criterion_main!(benches);
