//! Code generation and index throughput under 2 threads, and memory per
//! stored 60-byte URL, for the crate we use (scc, through `Index`) and the
//! candidates it was chosen over (papaya, dashmap).
//!
//! `cargo bench -p shorty-service --bench index`
#![allow(missing_docs)]
// The counting allocator below needs `unsafe impl GlobalAlloc`; it only
// forwards to `System`.
#![allow(unsafe_code)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::hint::black_box;
use std::sync::atomic::{AtomicIsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{criterion_group, Criterion, Throughput};
use shorty_service::codes::{CodeKey, Codec, IdAllocator, IdSpace, MAX_CODE_LEN};
use shorty_service::{Index, Store};

struct Counting;
static ALLOCATED: AtomicIsize = AtomicIsize::new(0);

// SAFETY: every call forwards to `System` with the caller's arguments; the
// counter has no effect on the returned memory.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATED.fetch_add(layout.size() as isize, Ordering::Relaxed);
        // SAFETY: forwarded contract.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        ALLOCATED.fetch_sub(layout.size() as isize, Ordering::Relaxed);
        // SAFETY: forwarded contract.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

const THREADS: usize = 2;

trait Candidate: Send + Sync + 'static {
    const NAME: &'static str;
    fn new() -> Self;
    fn put(&self, k: u64, v: &str);
    fn has(&self, k: u64) -> bool;
}

impl Candidate for Index {
    const NAME: &'static str = "scc (Index)";
    fn new() -> Self {
        Index::new()
    }
    fn put(&self, k: u64, v: &str) {
        self.insert(k, v)
    }
    fn has(&self, k: u64) -> bool {
        self.lookup(k, |url| url.len()).is_some()
    }
}

impl Candidate for papaya::HashMap<u64, Box<str>> {
    const NAME: &'static str = "papaya";
    fn new() -> Self {
        papaya::HashMap::new()
    }
    fn put(&self, k: u64, v: &str) {
        self.pin().insert(k, v.into());
    }
    fn has(&self, k: u64) -> bool {
        self.pin().get(&k).map(|url| url.len()).is_some()
    }
}

impl Candidate for dashmap::DashMap<u64, Box<str>> {
    const NAME: &'static str = "dashmap";
    fn new() -> Self {
        dashmap::DashMap::new()
    }
    fn put(&self, k: u64, v: &str) {
        self.insert(k, v.into());
    }
    fn has(&self, k: u64) -> bool {
        self.get(&k).map(|url| url.len()).is_some()
    }
}

fn url60(i: u64) -> String {
    let url = format!("https://example.com/some/long/path/{i:0>25}");
    debug_assert_eq!(url.len(), 60);
    url
}

/// Runs `work(thread, ops)` on THREADS threads at once, returning wall time.
fn on_threads(ops: u64, work: impl Fn(usize, u64) + Send + Sync + 'static) -> Duration {
    let work = Arc::new(work);
    let start = Instant::now();
    let handles: Vec<_> = (0..THREADS)
        .map(|t| {
            let work = work.clone();
            std::thread::spawn(move || work(t, ops / THREADS as u64))
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
    start.elapsed()
}

fn bench_candidate<M: Candidate>(c: &mut Criterion) {
    let mut group = c.benchmark_group(format!("index/{}", M::NAME));
    group.throughput(Throughput::Elements(1));
    // Inserts: each thread its own key range, as shards do.
    group.bench_function("insert 60B URL, 2 threads", |b| {
        b.iter_custom(|iters| {
            let map = Arc::new(M::new());
            on_threads(iters, move |t, n| {
                for i in 0..n {
                    map.put((t as u64) << 40 | i, &url60(i));
                }
            })
        })
    });
    // Lookups on a 1M-entry map, 9 hits to 1 miss.
    let map = Arc::new(M::new());
    for i in 0..1_000_000 {
        map.put(i, &url60(i));
    }
    group.bench_function("lookup, 2 threads", |b| {
        b.iter_custom(|iters| {
            let map = map.clone();
            on_threads(iters, move |t, n| {
                let mut k = t as u64 * 7919;
                for _ in 0..n {
                    k = (k + 104_729) % 1_111_111;
                    black_box(map.has(k));
                }
            })
        })
    });
    group.finish();
}

fn bench_codes(c: &mut Criterion) {
    let mut group = c.benchmark_group("codes");
    group.throughput(Throughput::Elements(1));
    group.bench_function("allocate id + permute + base62, 2 threads", |b| {
        b.iter_custom(|iters| {
            let space = Arc::new(IdSpace::new(0));
            let codec = Arc::new(Codec::new(&CodeKey([7; 16])));
            on_threads(iters, move |_, n| {
                let mut ids = IdAllocator::new(space.clone());
                let mut buf = [0; MAX_CODE_LEN];
                for _ in 0..n {
                    let key = codec.key_of(ids.next_id());
                    black_box(codec.code(key, &mut buf));
                }
            })
        })
    });
    group.finish();
}

fn memory_per_url<M: Candidate>() -> f64 {
    const N: u64 = 1_000_000;
    let before = ALLOCATED.load(Ordering::Relaxed);
    let map = M::new();
    for i in 0..N {
        map.put(i, &url60(i));
    }
    // Let epoch-based maps reclaim retired tables before measuring.
    for _ in 0..3 {
        black_box(map.has(0));
    }
    let after = ALLOCATED.load(Ordering::Relaxed);
    drop(map);
    (after - before) as f64 / N as f64
}

fn bench(c: &mut Criterion) {
    bench_codes(c);
    bench_candidate::<Index>(c);
    bench_candidate::<papaya::HashMap<u64, Box<str>>>(c);
    bench_candidate::<dashmap::DashMap<u64, Box<str>>>(c);
}

criterion_group!(benches, bench);

fn main() {
    benches();
    Criterion::default().configure_from_args().final_summary();
    println!("\nHeap bytes per stored 60-byte URL (1,000,000 URLs, u64 key + Box<str>):");
    println!("  scc     {:6.1}", memory_per_url::<Index>());
    println!(
        "  papaya  {:6.1}",
        memory_per_url::<papaya::HashMap<u64, Box<str>>>()
    );
    println!(
        "  dashmap {:6.1}",
        memory_per_url::<dashmap::DashMap<u64, Box<str>>>()
    );
}
