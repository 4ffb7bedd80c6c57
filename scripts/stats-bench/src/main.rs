//! Measures the candidate stores for click statistics (issue 20) on one
//! schema: per link a totals row, per link and hour a row (`key ‖ hour`),
//! per link and day a row; each flush reads, adds and writes the rows its
//! deltas touch, in one durable batch.
//!
//! `LINKS` links (default 1,000,000) are each clicked `CLICKS` times
//! (default 3) over a simulated 30 days, `RATE` clicks (default 5,000) per
//! flush: each flush is one second of traffic at that rate. Printed per
//! store: flush time (mean, p99: the cost of one second of traffic), disk
//! bytes per link, memory added (resident set), and one link's 30-day
//! hourly series read time (median, p99 over `READS` random links).
//! `REOPEN=1` also closes and reopens the store before the reads and
//! prints the memory then (what a restarted server holds for the same
//! data).
//!
//! `shorty` runs the server's own store (`shorty_runtime::stats::StatsDb`)
//! the same way; `fjall` and `redb` are the candidates it was chosen from.
//!
//! Run it with `scripts/bench-stats.sh` (release build).

use std::collections::HashMap;
use std::path::Path;
use std::time::{Duration, Instant};

use redb::ReadableTable;

/// Counts live heap bytes, so that resident memory can be told apart from
/// what the heap holds (allocator caches, fragmentation).
#[global_allocator]
static HEAP: cap::Cap<std::alloc::System> = cap::Cap::new(std::alloc::System, usize::MAX);

use shorty_service::stats::{
    day_of, decode_totals, encode_totals, series, ClickCounter, ClickMap, ClickMeta, Granularity,
    LinkTotals, SeriesRow, StatsReader, DAY_MS, HOUR_MS,
};

fn env(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// A store under test.
trait Store {
    fn apply(&mut self, map: &ClickMap);
    fn view(&self, key: u64, from: u64, to: u64) -> (u64, usize);
    /// The store's own accounting of its memory, if it has one.
    fn memory(&self) -> String {
        String::new()
    }
    /// Writes out what the store holds in memtables, if it has them.
    fn flush_memtables(&self) {}
    /// Closes the store and opens it again from `dir` (`REOPEN=1`): what
    /// memory it holds for what is on disk, without what writing it left
    /// behind (lsm-tree gives a segment written to or moved through
    /// levels 0-1 a whole block index, and keeps it).
    fn reopen(&mut self, _dir: &Path) {}
}

fn row_key(key: u64, bucket: u32) -> [u8; 12] {
    let mut k = [0; 12];
    k[..8].copy_from_slice(&key.to_be_bytes());
    k[8..].copy_from_slice(&bucket.to_be_bytes());
    k
}

fn add_pair(old: Option<&[u8]>, human: u64, bot: u64) -> [u8; 16] {
    let (h0, b0) = match old {
        Some(v) if v.len() == 16 => (
            u64::from_le_bytes(v[..8].try_into().unwrap()),
            u64::from_le_bytes(v[8..].try_into().unwrap()),
        ),
        _ => (0, 0),
    };
    let mut v = [0; 16];
    v[..8].copy_from_slice(&(h0 + human).to_le_bytes());
    v[8..].copy_from_slice(&(b0 + bot).to_le_bytes());
    v
}

/// Every row one map touches: totals, hours, days.
type Rows = (
    HashMap<u64, LinkTotals>,
    HashMap<(u64, u32), (u64, u64)>,
    HashMap<(u64, u32), (u64, u64)>,
);

fn rows_of(map: &ClickMap) -> Rows {
    let (mut totals, mut hours, mut days): Rows = Default::default();
    for (&key, p) in map {
        totals.entry(key).or_default().merge(p);
        for h in p.hours() {
            let (hu, bo) = (u64::from(h.human), u64::from(h.bot));
            let e: &mut (u64, u64) = hours.entry((key, h.hour)).or_default();
            *e = (e.0 + hu, e.1 + bo);
            let e: &mut (u64, u64) = days
                .entry((key, day_of(u64::from(h.hour) * HOUR_MS)))
                .or_default();
            *e = (e.0 + hu, e.1 + bo);
        }
    }
    (totals, hours, days)
}

fn decode_rows<'a>(items: impl Iterator<Item = (&'a [u8], &'a [u8])>) -> Vec<SeriesRow> {
    items
        .map(|(k, v)| SeriesRow {
            bucket: u32::from_be_bytes(k[8..12].try_into().unwrap()),
            human: u64::from_le_bytes(v[..8].try_into().unwrap()),
            bot: u64::from_le_bytes(v[8..].try_into().unwrap()),
        })
        .collect()
}

struct Fjall {
    ks: fjall::Keyspace,
    totals: fjall::PartitionHandle,
    hours: fjall::PartitionHandle,
    days: fjall::PartitionHandle,
}

impl Fjall {
    fn open(dir: &Path) -> Self {
        let ks = fjall::Config::new(dir)
            .fsync_ms(None)
            .cache_size(16 << 20)
            .flush_workers(1)
            .compaction_workers(1)
            .open()
            .unwrap();
        let p = |name| {
            ks.open_partition(name, fjall::PartitionCreateOptions::default())
                .unwrap()
        };
        Self {
            totals: p("totals"),
            hours: p("hours"),
            days: p("days"),
            ks,
        }
    }
}

impl Store for Fjall {
    fn apply(&mut self, map: &ClickMap) {
        let (totals, hours, days) = rows_of(map);
        let mut batch = self.ks.batch();
        let mut buf = Vec::new();
        for (key, delta) in totals {
            let mut t = self
                .totals
                .get(key.to_be_bytes())
                .unwrap()
                .and_then(|v| decode_totals(&v))
                .unwrap_or_default();
            t.absorb(&delta);
            buf.clear();
            encode_totals(&t, &mut buf);
            batch.insert(&self.totals, key.to_be_bytes(), buf.as_slice());
        }
        for (part, rows) in [(&self.hours, hours), (&self.days, days)] {
            for ((key, bucket), (h, b)) in rows {
                let k = row_key(key, bucket);
                let old = part.get(k).unwrap();
                batch.insert(part, k, add_pair(old.as_deref(), h, b));
            }
        }
        batch.commit().unwrap();
        self.ks.persist(fjall::PersistMode::SyncData).unwrap();
    }

    fn view(&self, key: u64, from: u64, to: u64) -> (u64, usize) {
        let totals = self
            .totals
            .get(key.to_be_bytes())
            .unwrap()
            .and_then(|v| decode_totals(&v));
        let items: Vec<_> = self
            .hours
            .range(row_key(key, (from / HOUR_MS) as u32)..row_key(key, (to / HOUR_MS) as u32))
            .map(|r| r.unwrap())
            .collect();
        let rows = decode_rows(items.iter().map(|(k, v)| (&k[..], &v[..])));
        let v = series(totals.as_ref(), &rows, [], from, to, Granularity::Hour);
        (v.total, v.series.len())
    }
}

/// The store the server runs: `shorty_runtime::stats::StatsDb` (fjall,
/// hour and day partitions by block, one fsync per flush), driven through
/// its own API with the generator's timestamps.
struct Shorty(Option<shorty_runtime::stats::StatsDb>);

impl Shorty {
    fn db(&self) -> &shorty_runtime::stats::StatsDb {
        self.0.as_ref().expect("the store is open")
    }
}

impl Store for Shorty {
    fn apply(&mut self, map: &ClickMap) {
        self.db().apply(std::slice::from_ref(map)).unwrap();
    }

    fn view(&self, key: u64, from: u64, to: u64) -> (u64, usize) {
        let v = self.db().view(key, from, to, Granularity::Hour).unwrap();
        (v.total, v.series.len())
    }

    fn flush_memtables(&self) {
        self.db().flush_memtables().unwrap();
    }

    fn reopen(&mut self, dir: &Path) {
        // The keyspace's lock goes with the old one.
        self.0 = None;
        self.0 = Some(shorty_runtime::stats::StatsDb::open(dir).unwrap());
    }

    fn memory(&self) -> String {
        let m = self.db().memory();
        format!(
            "Bloom filters {:.1} MiB, memtables {:.1} MiB, cache capacity {:.1} MiB, \
             {} segments ({} in levels 0-1, whose block index is held whole), {} links tracked \
             for folding",
            m.bloom as f64 / MIB,
            m.write_buffer as f64 / MIB,
            m.cache_capacity as f64 / MIB,
            m.segments,
            m.full_index_segments,
            m.fold_tracked,
        )
    }
}

const MIB: f64 = (1 << 20) as f64;

const TOTALS: redb::TableDefinition<u64, &[u8]> = redb::TableDefinition::new("totals");
const HOURS: redb::TableDefinition<&[u8], &[u8]> = redb::TableDefinition::new("hours");
const DAYS: redb::TableDefinition<&[u8], &[u8]> = redb::TableDefinition::new("days");

struct Redb(redb::Database);

impl Store for Redb {
    fn apply(&mut self, map: &ClickMap) {
        let (totals, hours, days) = rows_of(map);
        let tx = self.0.begin_write().unwrap();
        {
            let mut t = tx.open_table(TOTALS).unwrap();
            let mut buf = Vec::new();
            for (key, delta) in totals {
                let mut stored = t
                    .get(key)
                    .unwrap()
                    .and_then(|v| decode_totals(v.value()))
                    .unwrap_or_default();
                stored.absorb(&delta);
                buf.clear();
                encode_totals(&stored, &mut buf);
                t.insert(key, buf.as_slice()).unwrap();
            }
            for (def, rows) in [(HOURS, hours), (DAYS, days)] {
                let mut table = tx.open_table(def).unwrap();
                for ((key, bucket), (h, b)) in rows {
                    let k = row_key(key, bucket);
                    let new = {
                        let old = table.get(&k[..]).unwrap();
                        add_pair(old.as_ref().map(|v| v.value()), h, b)
                    };
                    table.insert(&k[..], &new[..]).unwrap();
                }
            }
        }
        tx.commit().unwrap();
    }

    fn view(&self, key: u64, from: u64, to: u64) -> (u64, usize) {
        let tx = self.0.begin_read().unwrap();
        let totals = tx
            .open_table(TOTALS)
            .unwrap()
            .get(key)
            .unwrap()
            .and_then(|v| decode_totals(v.value()));
        let hours = tx.open_table(HOURS).unwrap();
        let (a, b) = (
            row_key(key, (from / HOUR_MS) as u32),
            row_key(key, (to / HOUR_MS) as u32),
        );
        let items: Vec<(Vec<u8>, Vec<u8>)> = hours
            .range(&a[..]..&b[..])
            .unwrap()
            .map(|r| {
                let (k, v) = r.unwrap();
                (k.value().to_vec(), v.value().to_vec())
            })
            .collect();
        let rows = decode_rows(items.iter().map(|(k, v)| (&k[..], &v[..])));
        let v = series(totals.as_ref(), &rows, [], from, to, Granularity::Hour);
        (v.total, v.series.len())
    }
}

fn rss_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|kb| kb.parse::<u64>().ok())
        .unwrap_or(0)
        * 1024
}

fn dir_bytes(dir: &Path) -> u64 {
    let mut total = 0;
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let meta = entry.metadata().unwrap();
        total += if meta.is_dir() {
            dir_bytes(&entry.path())
        } else {
            meta.len()
        };
    }
    total
}

/// A small deterministic generator (xorshift), so runs compare.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() - 1) as f64 * p) as usize]
}

fn run(name: &str, mut store: impl Store, dir: &Path) {
    let links = env("LINKS", 1_000_000);
    let clicks = links * env("CLICKS", 3);
    let rate = env("RATE", 5_000);
    let reads = env("READS", 2_000) as usize;
    let t0: u64 = 1_709_251_200_000;
    let month = 30 * DAY_MS;
    let rss0 = rss_bytes();
    let heap0 = HEAP.allocated();
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let mut counter = ClickCounter::new(true);
    let mut flushes = Vec::new();
    let batches = clicks.div_ceil(rate);
    let started = Instant::now();
    for b in 0..batches {
        // The simulated clock: batch b is second b of traffic, spread over
        // the month.
        let at = t0 + b * month / batches;
        for _ in 0..rate.min(clicks - b * rate) {
            let key = rng.next() % links;
            let bot = rng.next().is_multiple_of(10);
            counter.record(
                key,
                &ClickMeta {
                    head: false,
                    bot,
                    referrer_host: Some(["t.co", "news.example", "mail.example"][key as usize % 3]),
                },
                at,
            );
        }
        let map = counter.take();
        let t = Instant::now();
        store.apply(&map);
        flushes.push(t.elapsed());
    }
    let load = started.elapsed();
    let rss = rss_bytes().saturating_sub(rss0);
    let heap = HEAP.allocated().saturating_sub(heap0);
    let memory = store.memory();
    store.flush_memtables();
    let settled = format!(
        "; with memtables written out: RSS added {:.1} MiB, live heap added {:.1} MiB",
        rss_bytes().saturating_sub(rss0) as f64 / MIB,
        HEAP.allocated().saturating_sub(heap0) as f64 / MIB,
    );
    let reopened = if env("REOPEN", 0) == 1 {
        store.reopen(dir);
        format!(
            "; reopened: RSS added {:.1} MiB, live heap added {:.1} MiB ({})",
            rss_bytes().saturating_sub(rss0) as f64 / MIB,
            HEAP.allocated().saturating_sub(heap0) as f64 / MIB,
            store.memory(),
        )
    } else {
        String::new()
    };
    let mut times = Vec::with_capacity(reads);
    let mut seen = 0;
    for _ in 0..reads {
        let key = rng.next() % links;
        let t = Instant::now();
        let (total, buckets) = store.view(key, t0, t0 + month);
        times.push(t.elapsed());
        seen += total;
        assert_eq!(buckets, 720);
    }
    times.sort();
    flushes.sort();
    let mean = flushes.iter().sum::<Duration>() / flushes.len() as u32;
    drop(store);
    let disk = dir_bytes(dir);
    println!(
        "{name}: {links} links, {clicks} clicks, {rate}/flush: load {load:.1?}; flush mean {mean:.2?} \
         p99 {:.2?} (per second of traffic at {rate} clicks/s); disk {:.1} B/link; RSS added \
         {:.1} MiB (live heap added {:.1} MiB{}{memory}){settled}{reopened}; 30-day hourly series median {:.1?} \
         p99 {:.1?} ({seen} clicks read)",
        percentile(&flushes, 0.99),
        disk as f64 / links as f64,
        rss as f64 / MIB,
        heap as f64 / MIB,
        if memory.is_empty() { "" } else { ": " },
        percentile(&times, 0.5),
        percentile(&times, 0.99),
    );
}

fn main() {
    let which = std::env::args().nth(1).unwrap_or_else(|| "all".into());
    let base = std::env::var("STATS_BENCH_DIR").unwrap_or_else(|_| ".".into());
    if which == "shorty" || which == "all" {
        let dir = tempfile::tempdir_in(&base).unwrap();
        let db = shorty_runtime::stats::StatsDb::open(dir.path()).unwrap();
        run("shorty (StatsDb)", Shorty(Some(db)), dir.path());
    }
    if which == "fjall" || which == "all" {
        let dir = tempfile::tempdir_in(&base).unwrap();
        run("fjall", Fjall::open(dir.path()), dir.path());
    }
    if which == "redb" || which == "all" {
        let dir = tempfile::tempdir_in(&base).unwrap();
        let db = redb::Database::builder()
            .set_cache_size(16 << 20)
            .create(dir.path().join("stats.redb"))
            .unwrap();
        run("redb", Redb(db), dir.path());
    }
}
