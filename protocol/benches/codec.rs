//! Decoding and encoding throughput of `shorty-protocol` next to
//! tokio-util's `LengthDelimitedCodec` (u32 little-endian header), on the
//! same bytes in the same run.
//!
//! `cargo bench -p shorty-protocol --bench codec` runs the criterion groups
//! and then prints the ratios, measured interleaved so machine noise hits
//! both sides alike.
#![allow(missing_docs)]

use std::hint::black_box;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use criterion::{criterion_group, BatchSize, Criterion, Throughput};
use shorty_protocol::frame::{encode_frame, parse_frame, FrameDecoder, Status};
use shorty_protocol::Request;
use tokio_util::codec::{Decoder, Encoder, LengthDelimitedCodec};

const MAX: usize = 64 * 1024;

struct Workload {
    name: &'static str,
    payloads: Vec<Bytes>,
    wire: BytesMut,
}

/// A stream of SHORTEN requests carrying 64-byte URLs, and one of 8 KiB
/// payloads, each about 64 KiB on the wire.
fn workloads() -> Vec<Workload> {
    let url = |i: usize| format!("https://example.com/{:0>44}", i);
    let small: Vec<Bytes> = (0..1000)
        .map(|i| {
            let mut p = Vec::new();
            Request::Shorten(url(i)).encode_payload(&mut p).unwrap();
            Bytes::from(p)
        })
        .collect();
    assert_eq!(small[0].len(), 1 + 64);
    let large: Vec<Bytes> = (0..8u8)
        .map(|i| Bytes::from(vec![b'a' + i; 8192]))
        .collect();
    [("64B-url", small), ("8KiB", large)]
        .into_iter()
        .map(|(name, payloads)| {
            let mut wire = BytesMut::new();
            for p in &payloads {
                encode_frame(p, &mut wire).unwrap();
            }
            Workload {
                name,
                payloads,
                wire,
            }
        })
        .collect()
}

fn ldc() -> LengthDelimitedCodec {
    LengthDelimitedCodec::builder()
        .little_endian()
        .length_field_length(4)
        .max_frame_length(MAX)
        .new_codec()
}

fn decode_ours(mut buf: BytesMut) -> usize {
    let decoder = FrameDecoder::with_max_frame_len(MAX);
    let mut n = 0;
    while let Status::Complete(payload) = decoder.decode(&mut buf).unwrap() {
        n += black_box(payload).len();
    }
    n
}

/// Owned batch: every complete frame split off at once, payloads iterated.
fn decode_batch(mut buf: BytesMut) -> usize {
    let decoder = FrameDecoder::with_max_frame_len(MAX);
    let mut n = 0;
    loop {
        let frames = decoder.decode_all(&mut buf).unwrap();
        if frames.is_empty() {
            return n;
        }
        for payload in frames.iter() {
            n += black_box(payload).len();
        }
    }
}

fn decode_borrowed(mut rest: &[u8]) -> usize {
    let mut n = 0;
    while let Status::Complete(frame) = parse_frame(rest, MAX).unwrap() {
        n += black_box(frame.payload()).len();
        rest = &rest[frame.encoded_len()..];
    }
    n
}

fn decode_ldc(mut buf: BytesMut) -> usize {
    let mut codec = ldc();
    let mut n = 0;
    while let Some(payload) = codec.decode(&mut buf).unwrap() {
        n += black_box(payload).len();
    }
    n
}

fn encode_ours(payloads: &[Bytes], dst: &mut BytesMut) {
    dst.clear();
    for p in payloads {
        encode_frame(p, dst).unwrap();
    }
}

fn encode_ldc(payloads: &[Bytes], dst: &mut BytesMut) {
    dst.clear();
    let mut codec = ldc();
    for p in payloads {
        codec.encode(p.clone(), dst).unwrap();
    }
}

fn bench(c: &mut Criterion) {
    for w in workloads() {
        let mut group = c.benchmark_group(format!("decode/{}", w.name));
        group.throughput(Throughput::Bytes(w.wire.len() as u64));
        group.bench_function("shorty FrameDecoder", |b| {
            b.iter_batched(|| w.wire.clone(), decode_ours, BatchSize::SmallInput)
        });
        group.bench_function("shorty FrameDecoder::decode_all (owned batch)", |b| {
            b.iter_batched(|| w.wire.clone(), decode_batch, BatchSize::SmallInput)
        });
        group.bench_function("shorty parse_frame (borrowed)", |b| {
            b.iter(|| decode_borrowed(&w.wire))
        });
        group.bench_function("tokio-util LengthDelimitedCodec", |b| {
            b.iter_batched(|| w.wire.clone(), decode_ldc, BatchSize::SmallInput)
        });
        group.finish();

        let mut group = c.benchmark_group(format!("encode/{}", w.name));
        group.throughput(Throughput::Bytes(w.wire.len() as u64));
        let mut dst = BytesMut::with_capacity(w.wire.len());
        group.bench_function("shorty encode_frame", |b| {
            b.iter(|| encode_ours(&w.payloads, &mut dst))
        });
        group.bench_function("tokio-util LengthDelimitedCodec", |b| {
            b.iter(|| encode_ldc(&w.payloads, &mut dst))
        });
        group.finish();
    }
}

/// Time of one run of `f`; the setup (`clone` of the
/// input) is done outside the timed region. `print_ratios` takes medians.
fn time<I>(mut setup: impl FnMut() -> I, mut f: impl FnMut(I)) -> Duration {
    let input = setup();
    let start = Instant::now();
    f(input);
    start.elapsed()
}

fn print_ratios() {
    println!(
        "\nSide-by-side ratios (LengthDelimitedCodec time / shorty time; >1 = shorty faster):"
    );
    for w in workloads() {
        let rounds = 301;
        let mut samples: [Vec<Duration>; 6] = Default::default();
        let mut dst = BytesMut::with_capacity(w.wire.len());
        for _ in 0..rounds {
            samples[0].push(time(
                || w.wire.clone(),
                |b| {
                    black_box(decode_ldc(b));
                },
            ));
            samples[1].push(time(
                || w.wire.clone(),
                |b| {
                    black_box(decode_ours(b));
                },
            ));
            samples[2].push(time(
                || (),
                |_| {
                    black_box(decode_borrowed(&w.wire));
                },
            ));
            samples[3].push(time(|| (), |_| encode_ldc(&w.payloads, &mut dst)));
            samples[4].push(time(|| (), |_| encode_ours(&w.payloads, &mut dst)));
            samples[5].push(time(
                || w.wire.clone(),
                |b| {
                    black_box(decode_batch(b));
                },
            ));
        }
        let median = |v: &mut Vec<Duration>| {
            v.sort_unstable();
            v[v.len() / 2].as_secs_f64()
        };
        let m: Vec<f64> = samples.iter_mut().map(median).collect();
        println!(
            "  {:8} decode: decode {:5.2}x  decode_all {:5.2}x  parse_frame {:5.2}x   encode {:5.2}x",
            w.name,
            m[0] / m[1],
            m[0] / m[5],
            m[0] / m[2],
            m[3] / m[4]
        );
    }
}

criterion_group!(benches, bench);

fn main() {
    benches();
    Criterion::default().configure_from_args().final_summary();
    print_ratios();
}
