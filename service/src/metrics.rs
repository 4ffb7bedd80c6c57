//! Counters each core keeps for `/metrics`.
//!
//! Counted per core and summed at scrape time: each core writes only its
//! own [`CoreMetrics`] (plain relaxed loads and stores, no read-modify-write
//! and no cache line shared with another core on the hot path); a scrape
//! reads every core's and adds them up ([`Snapshot`]).

use std::sync::atomic::{AtomicU64, Ordering};

/// Which listener a request came in on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Proto {
    /// The framed protocol.
    Framed = 0,
    /// The HTTP front.
    Http = 1,
}

/// What a request asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// SHORTEN (typed or the seed's bare URL).
    Shorten = 0,
    /// RESOLVE.
    Resolve = 1,
    /// PING.
    Ping = 2,
    /// HELLO.
    Hello = 3,
    /// An HTTP redirect lookup.
    Redirect = 4,
    /// `/healthz`, `/readyz` or `/metrics`.
    Health = 5,
    /// Anything else (malformed, unknown).
    Other = 6,
    /// (v2) UPDATE.
    Update = 7,
    /// (v2) DELETE.
    Delete = 8,
    /// (v2) INFO.
    Info = 9,
    /// (v2) AUTH.
    Auth = 10,
    /// (v2) STATS.
    Stats = 11,
    /// A JSON API call (`/api/v1`).
    Api = 12,
}

/// The protocol label values, in index order.
pub const PROTOS: [&str; 2] = ["framed", "http"];
/// The op label values, in index order.
pub const OPS: [&str; 13] = [
    "shorten", "resolve", "ping", "hello", "redirect", "health", "other", "update", "delete",
    "info", "auth", "stats", "api",
];
/// The result label values, in index order: `ok`, then status codes.
pub const RESULTS: [&str; 20] = [
    "ok", "400", "404", "405", "408", "409", "413", "422", "431", "500", "501", "503", "505",
    "3xx", "other", "401", "403", "410", "411", "429",
];

fn result_index(status: u16) -> usize {
    match status {
        200 | 201 | 204 | 0 => 0,
        400 => 1,
        404 => 2,
        405 => 3,
        408 => 4,
        409 => 5,
        413 => 6,
        422 => 7,
        431 => 8,
        500 => 9,
        501 => 10,
        503 => 11,
        505 => 12,
        300..=399 => 13,
        401 => 15,
        403 => 16,
        410 => 17,
        411 => 18,
        429 => 19,
        _ => 14,
    }
}

const REQUEST_COUNTERS: usize = PROTOS.len() * OPS.len() * RESULTS.len();

/// Upper bounds of the fsync-duration histogram, in seconds.
pub const FSYNC_BUCKETS: [f64; 12] = [
    0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
];
/// Upper bounds of the records-per-batch histogram.
pub const BATCH_BUCKETS: [f64; 11] = [
    1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0, 1024.0,
];

/// What the merge thread reports (`shorty_log_dead_bytes`,
/// `shorty_log_merges_total`, `shorty_log_merge_reclaimed_bytes_total`,
/// `shorty_log_merge_read_bytes_total`).
/// Written by that one thread only.
#[derive(Debug, Default)]
pub struct MergeMetrics {
    /// Dead bytes in sealed segments at the last check.
    pub dead_bytes: AtomicU64,
    /// Merges completed.
    pub merges: AtomicU64,
    /// Bytes of log the merges gave back.
    pub reclaimed_bytes: AtomicU64,
    /// Bytes the merge thread read: segments merged, hints and, once per
    /// sealed segment, the segment itself to count its records.
    pub read_bytes: AtomicU64,
}

/// A histogram one core writes.
#[derive(Debug)]
pub struct Histogram<const N: usize> {
    bounds: [f64; N],
    /// Per bucket (not cumulative), then the overflow bucket.
    counts: Vec<AtomicU64>,
    sum_micros: AtomicU64,
}

impl<const N: usize> Histogram<N> {
    fn new(bounds: [f64; N]) -> Self {
        Self {
            bounds,
            counts: (0..=N).map(|_| AtomicU64::new(0)).collect(),
            sum_micros: AtomicU64::new(0),
        }
    }

    /// Records `value` (single writer: its core).
    pub fn observe(&self, value: f64) {
        let i = self.bounds.iter().position(|&b| value <= b).unwrap_or(N);
        bump(&self.counts[i], 1);
        bump(&self.sum_micros, (value * 1e6) as u64);
    }
}

/// Adds to a counter only its core writes: a plain load and store, which is
/// all a single writer needs (readers see a recent value).
fn bump(counter: &AtomicU64, by: u64) {
    counter.store(counter.load(Ordering::Relaxed) + by, Ordering::Relaxed);
}

/// One core's counters.
#[derive(Debug)]
pub struct CoreMetrics {
    requests: Vec<AtomicU64>,
    connections_open: [AtomicU64; 3],
    connections_total: [AtomicU64; 3],
    /// Seconds per log `fdatasync`.
    pub fsync_seconds: Histogram<12>,
    /// Records per group-commit batch.
    pub batch_records: Histogram<11>,
    cache_hits: AtomicU64,
    cache_misses: AtomicU64,
    url_reads: AtomicU64,
    /// Clicks counted: human, bot.
    clicks: [AtomicU64; 2],
}

impl Default for CoreMetrics {
    fn default() -> Self {
        Self {
            requests: (0..REQUEST_COUNTERS).map(|_| AtomicU64::new(0)).collect(),
            connections_open: Default::default(),
            connections_total: Default::default(),
            fsync_seconds: Histogram::new(FSYNC_BUCKETS),
            batch_records: Histogram::new(BATCH_BUCKETS),
            cache_hits: AtomicU64::new(0),
            cache_misses: AtomicU64::new(0),
            url_reads: AtomicU64::new(0),
            clicks: Default::default(),
        }
    }
}

/// The listeners counted by `shorty_connections_*`.
pub const LISTENERS: [&str; 3] = ["framed", "http", "admin"];

impl CoreMetrics {
    /// Counts one request: `status` 0 or 200 means ok, else the protocol
    /// error code or HTTP status it was answered with.
    pub fn request(&self, proto: Proto, op: Op, status: u16) {
        let i = ((proto as usize) * OPS.len() + op as usize) * RESULTS.len() + result_index(status);
        bump(&self.requests[i], 1);
    }

    /// A connection opened on listener `listener` (index in [`LISTENERS`]).
    pub fn connection_opened(&self, listener: usize) {
        bump(&self.connections_open[listener], 1);
        bump(&self.connections_total[listener], 1);
    }

    /// A connection closed.
    pub fn connection_closed(&self, listener: usize) {
        let open = &self.connections_open[listener];
        open.store(
            open.load(Ordering::Relaxed).saturating_sub(1),
            Ordering::Relaxed,
        );
    }

    /// A cache lookup.
    pub fn cache(&self, hit: bool) {
        bump(
            if hit {
                &self.cache_hits
            } else {
                &self.cache_misses
            },
            1,
        );
    }

    /// A click counted (`shorty_clicks_total`).
    pub fn click(&self, bot: bool) {
        bump(&self.clicks[usize::from(bot)], 1);
    }

    /// A URL read from the log.
    pub fn url_read(&self) {
        bump(&self.url_reads, 1);
    }
}

/// Every core's counters added up.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    /// `(protocol, op, result) → count`, non-zero entries only.
    pub requests: Vec<((&'static str, &'static str, &'static str), u64)>,
    /// Open connections per listener.
    pub connections_open: [u64; 3],
    /// Connections accepted per listener.
    pub connections_total: [u64; 3],
    /// The fsync histogram: count per bucket (not cumulative; the last is
    /// +Inf), sum, count.
    pub fsync: (Vec<u64>, f64, u64),
    /// The records-per-batch histogram, likewise.
    pub batch: (Vec<u64>, f64, u64),
    /// Cache hits and misses.
    pub cache: (u64, u64),
    /// URLs read from the log.
    pub url_reads: u64,
    /// Clicks counted: human, bot.
    pub clicks: [u64; 2],
}

fn sum_histogram<const N: usize>(cores: &[&Histogram<N>]) -> (Vec<u64>, f64, u64) {
    let mut buckets = vec![0u64; N + 1];
    let mut sum = 0u64;
    for h in cores {
        for (b, c) in buckets.iter_mut().zip(&h.counts) {
            *b += c.load(Ordering::Relaxed);
        }
        sum += h.sum_micros.load(Ordering::Relaxed);
    }
    let count = buckets.iter().sum();
    (buckets, sum as f64 / 1e6, count)
}

impl Snapshot {
    /// Adds up `cores`.
    pub fn of<'a>(cores: impl IntoIterator<Item = &'a CoreMetrics>) -> Self {
        let cores: Vec<&CoreMetrics> = cores.into_iter().collect();
        let mut snap = Snapshot::default();
        for i in 0..REQUEST_COUNTERS {
            let n: u64 = cores
                .iter()
                .map(|c| c.requests[i].load(Ordering::Relaxed))
                .sum();
            if n > 0 {
                let result = i % RESULTS.len();
                let op = (i / RESULTS.len()) % OPS.len();
                let proto = i / (RESULTS.len() * OPS.len());
                snap.requests
                    .push(((PROTOS[proto], OPS[op], RESULTS[result]), n));
            }
        }
        for l in 0..LISTENERS.len() {
            snap.connections_open[l] = cores
                .iter()
                .map(|c| c.connections_open[l].load(Ordering::Relaxed))
                .sum();
            snap.connections_total[l] = cores
                .iter()
                .map(|c| c.connections_total[l].load(Ordering::Relaxed))
                .sum();
        }
        let fsync: Vec<_> = cores.iter().map(|c| &c.fsync_seconds).collect();
        snap.fsync = sum_histogram(&fsync);
        let batch: Vec<_> = cores.iter().map(|c| &c.batch_records).collect();
        snap.batch = sum_histogram(&batch);
        snap.cache = (
            cores
                .iter()
                .map(|c| c.cache_hits.load(Ordering::Relaxed))
                .sum(),
            cores
                .iter()
                .map(|c| c.cache_misses.load(Ordering::Relaxed))
                .sum(),
        );
        snap.url_reads = cores
            .iter()
            .map(|c| c.url_reads.load(Ordering::Relaxed))
            .sum();
        for kind in 0..2 {
            snap.clicks[kind] = cores
                .iter()
                .map(|c| c.clicks[kind].load(Ordering::Relaxed))
                .sum();
        }
        snap
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cores_are_summed_at_scrape_time() {
        let (a, b) = (CoreMetrics::default(), CoreMetrics::default());
        a.request(Proto::Framed, Op::Shorten, 0);
        b.request(Proto::Framed, Op::Shorten, 0);
        b.request(Proto::Http, Op::Redirect, 404);
        a.connection_opened(1);
        b.connection_opened(1);
        b.connection_closed(1);
        a.fsync_seconds.observe(0.003);
        b.fsync_seconds.observe(5.0);
        let snap = Snapshot::of([&a, &b]);
        assert!(snap.requests.contains(&(("framed", "shorten", "ok"), 2)));
        assert!(snap.requests.contains(&(("http", "redirect", "404"), 1)));
        assert_eq!(
            (snap.connections_open[1], snap.connections_total[1]),
            (1, 2)
        );
        let (buckets, sum, count) = snap.fsync;
        assert_eq!(count, 2);
        assert_eq!(buckets[3], 1, "0.003 s is in the 0.005 bucket");
        assert_eq!(*buckets.last().unwrap(), 1, "5 s is past the last bound");
        assert!((sum - 5.003).abs() < 1e-6);
    }
}
