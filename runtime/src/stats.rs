//! Click statistics' durable side: the stats writer thread and its store.
//!
//! Every `--stats-flush` each core swaps its map of pending click deltas
//! out ([`shorty_service::stats::ClickCounter::take`]) and sends it here;
//! one writer thread, off the serving cores, writes the deltas into an
//! embedded LSM store (fjall) under `DATA_DIR/stats/` and makes the batch
//! durable (`fsync`) before taking the next. A crash loses the deltas not
//! yet written: at most one interval (plus a batch the writer was still
//! writing). Nothing is kept in memory per link once written (the fold
//! tracker below is bounded, whatever the number of links).
//!
//! **Reads count each click once, at every moment.** Maps are numbered as
//! they are handed over ([`StatsSender::send`]); each batch records the
//! last number it holds (`APPLIED_KEY`) atomically with its rows, and a
//! read ([`StatsDb::stored`]) is one snapshot of every partition. The core
//! keeps what it handed over until the writer is done with it, and adds
//! the maps after the snapshot's number: clicks on their way to the store
//! are neither missing from a read nor counted twice.
//!
//! Layout (keys big-endian so that one link's rows are contiguous and in
//! time order):
//! - `links`: link key → totals, first/last click and top referrers
//!   ([`shorty_service::stats::encode_totals`]).
//! - `hourly-N`: link key ‖ hour → human u32, bot u32 (LE). `N` is a block
//!   of [`HOUR_BLOCK`] hours; blocks older than the two before the current
//!   one are dropped whole (retention: hourly rows live at least 64 days).
//! - `daily-N`: link key ‖ day → human u64, bot u64. `N` is a block of
//!   [`DAY_BLOCK`] days; blocks older than the two before the current one
//!   are dropped (daily rows live at least two years).
//!
//! No partition has Bloom filters (see `partition_options`); a store of
//! the layout before (`totals`, `hours-N`, `days-N`, with them) is moved
//! into these partitions when it is opened.
//!
//! **Blind delta rows, folded later.** A flush does not read the rows it
//! adds to: each one is written as a *delta row*, the same value under the
//! row's key followed by a big-endian flush sequence number (`key ‖ seq`,
//! `key ‖ hour ‖ seq`, `key ‖ day ‖ seq`), and a read adds up the row and
//! its deltas (they sort right after it). Reading three rows per link
//! before writing them made a flush cost 3.2 s per second of traffic at
//! 20,000 clicks/s over 1M distinct links; blind writes cost no read at
//! all (README, "Click statistics"). So that a hot link's deltas do not pile
//! up, the writer counts the deltas it wrote per link (a bounded map, see
//! [`FOLD_TRACKED`]) and at every [`FOLD_AT`]th *folds* the link: reads its
//! totals and the buckets this flush touches, and writes each back as one
//! row under the plain key, deleting the deltas, in the same atomic batch.
//! A link clicked a few times a month is never folded: its few deltas are
//! what its rows would have been. Rows written before this scheme are
//! plain rows and read as before.
//!
//! Dropping a partition is a file deletion, so retention costs nothing per
//! row, and the daily rows are written at flush time (a roll-up as it
//! happens, not a pass over old hours).

use std::borrow::Borrow;
use std::collections::{HashMap, HashSet};
use std::io;
use std::path::Path;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::thread::JoinHandle;

use fjall::{Keyspace, PartitionCreateOptions, PartitionHandle, PersistMode};
use shorty_service::stats::{
    day_of, decode_totals, encode_totals, hour_of, series, ClickMap, Granularity, LinkTotals,
    SeriesRow, StatsReader, StatsView, StoredStats, DAY_MS, HOUR_MS,
};

/// Hours per `hours-N` partition (32 days).
pub const HOUR_BLOCK: u32 = 32 * 24;
/// Days per `days-N` partition.
pub const DAY_BLOCK: u32 = 366;
/// Blocks kept before the current one.
const BLOCKS_KEPT: u32 = 2;
/// Interval maps queued for the writer at most; a core whose maps would go
/// beyond it keeps counting into its current map (memory grows with the
/// links clicked, never with the clicks) until the writer catches up.
pub const MAX_QUEUED: usize = 8;
/// A link's deltas written since it was last folded, at which the writer
/// folds it: a bucket or a link's totals hold at most this many rows while
/// the link is tracked, so a read adds up at most this many per row.
pub const FOLD_AT: u16 = 8;
/// Links whose unfolded deltas the writer tracks at most (about 32 bytes
/// each). When full it forgets the links with the fewest deltas: cold links,
/// whose few deltas never needed folding; a hot one is back within a few
/// flushes.
pub const FOLD_TRACKED: usize = 1 << 17;
/// The key (in `totals`) of the last flush sequence number written: one
/// byte, so that no link's prefix (eight bytes) ever matches it.
const SEQ_KEY: &[u8] = b"s";
/// The key (in `totals`) of the last hand-over a batch applied
/// ([`StatsSender::send`]'s numbers), written in the same batch: a read at
/// one instant knows which maps the cores handed over it already holds
/// ([`StoredStats::applied`]). One byte, like [`SEQ_KEY`].
const APPLIED_KEY: &[u8] = b"a";

fn io_err(e: impl std::fmt::Display) -> io::Error {
    io::Error::other(e.to_string())
}

/// Moves the rows of every partition of the layout with Bloom filters
/// ([`legacy_name`]) into a partition created with [`partition_options`],
/// then deletes the old one. The copy is made durable before the old
/// partition goes, and keys are copied as they are, so a crash during it
/// only means it is done again at the next open (nothing is written to the
/// store before `open` returns).
fn migrate(keyspace: &Keyspace) -> io::Result<()> {
    for name in keyspace.list_partitions() {
        let Some(new_name) = legacy_name(&name) else {
            continue;
        };
        let old = keyspace
            .open_partition(&name, PartitionCreateOptions::default())
            .map_err(io_err)?;
        let new = keyspace
            .open_partition(&new_name, partition_options())
            .map_err(io_err)?;
        let mut batch = keyspace.batch();
        let mut rows = 0;
        for item in old.iter() {
            let (k, v) = item.map_err(io_err)?;
            batch.insert(&new, k, v);
            rows += 1;
            if rows % MIGRATE_BATCH == 0 {
                std::mem::replace(&mut batch, keyspace.batch())
                    .commit()
                    .map_err(io_err)?;
            }
        }
        batch.commit().map_err(io_err)?;
        keyspace.persist(PersistMode::SyncAll).map_err(io_err)?;
        keyspace.delete_partition(old).map_err(io_err)?;
        tracing::info!(
            "click statistics: {rows} rows of {name} moved to {new_name} (no Bloom filters)"
        );
    }
    Ok(())
}

/// The statistics store under a data directory.
pub struct StatsDb {
    keyspace: Keyspace,
    totals: PartitionHandle,
    blocks: Mutex<HashMap<String, PartitionHandle>>,
    /// The writer's state (one writer; a lock for `&self`, never contended).
    writer: Mutex<WriterState>,
}

/// What the writer keeps between flushes.
#[derive(Debug, Default)]
struct WriterState {
    /// The last flush sequence number written (delta rows' suffix).
    seq: u64,
    /// Per link, the deltas written since it was last folded.
    unfolded: HashMap<u64, u16>,
}

impl WriterState {
    /// Counts one more delta of `key`; whether the link is due a fold.
    fn count(&mut self, key: u64) -> bool {
        if self.unfolded.len() >= FOLD_TRACKED && !self.unfolded.contains_key(&key) {
            // Forget the coldest links first (one delta), then any.
            self.unfolded.retain(|_, n| *n > 1);
            if self.unfolded.len() >= FOLD_TRACKED / 2 {
                self.unfolded.clear();
            }
        }
        let n = self.unfolded.entry(key).or_default();
        *n += 1;
        if *n >= FOLD_AT {
            self.unfolded.remove(&key);
            return true;
        }
        false
    }
}

impl std::fmt::Debug for StatsDb {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StatsDb").finish_non_exhaustive()
    }
}

/// A big-endian u64 value ([`SEQ_KEY`], [`APPLIED_KEY`]); 0 if it is not
/// eight bytes.
fn be_u64(value: &[u8]) -> u64 {
    value.try_into().map_or(0, u64::from_be_bytes)
}

fn row_key(key: u64, bucket: u32) -> [u8; 12] {
    let mut k = [0; 12];
    k[..8].copy_from_slice(&key.to_be_bytes());
    k[8..].copy_from_slice(&bucket.to_be_bytes());
    k
}

/// `key ‖ seq`: a delta of a link's totals.
fn totals_delta_key(key: u64, seq: u64) -> [u8; 16] {
    let mut k = [0; 16];
    k[..8].copy_from_slice(&key.to_be_bytes());
    k[8..].copy_from_slice(&seq.to_be_bytes());
    k
}

/// `key ‖ bucket ‖ seq`: a delta of an hour's or a day's row.
fn row_delta_key(key: u64, bucket: u32, seq: u64) -> [u8; 20] {
    let mut k = [0; 20];
    k[..12].copy_from_slice(&row_key(key, bucket));
    k[12..].copy_from_slice(&seq.to_be_bytes());
    k
}

/// The rows (plain and deltas) of `key`'s buckets `first..=last`.
fn row_range(key: u64, first: u32, last: u32) -> std::ops::RangeInclusive<Vec<u8>> {
    row_key(key, first).to_vec()..=row_delta_key(key, last, u64::MAX).to_vec()
}

/// An hour row's value (two u32 LE), if it is one.
fn decode_hour(v: &[u8]) -> Option<(u64, u64)> {
    Some((
        u64::from(u32::from_le_bytes(v.get(..4)?.try_into().ok()?)),
        u64::from(u32::from_le_bytes(v.get(4..8)?.try_into().ok()?)),
    ))
    .filter(|_| v.len() == 8)
}

fn encode_hour(human: u64, bot: u64) -> [u8; 8] {
    let mut v = [0u8; 8];
    v[..4].copy_from_slice(&u32::try_from(human).unwrap_or(u32::MAX).to_le_bytes());
    v[4..].copy_from_slice(&u32::try_from(bot).unwrap_or(u32::MAX).to_le_bytes());
    v
}

/// A day row's value (two u64 LE), if it is one.
fn decode_day(v: &[u8]) -> Option<(u64, u64)> {
    Some((
        u64::from_le_bytes(v.get(..8)?.try_into().ok()?),
        u64::from_le_bytes(v.get(8..16)?.try_into().ok()?),
    ))
    .filter(|_| v.len() == 16)
}

fn encode_day(human: u64, bot: u64) -> [u8; 16] {
    let mut v = [0u8; 16];
    v[..8].copy_from_slice(&human.to_le_bytes());
    v[8..].copy_from_slice(&bot.to_le_bytes());
    v
}

/// A row value's decoder: [`decode_hour`] or [`decode_day`].
type Decode = fn(&[u8]) -> Option<(u64, u64)>;

fn hours_block(hour: u32) -> String {
    format!("{HOURS}-{}", hour / HOUR_BLOCK)
}

fn days_block(day: u32) -> String {
    format!("{DAYS}-{}", day / DAY_BLOCK)
}

/// The totals partition.
const TOTALS: &str = "links";
/// Prefix of the hourly partitions' names.
const HOURS: &str = "hourly";
/// Prefix of the daily partitions' names.
const DAYS: &str = "daily";

/// A partition of the layout before [`partition_options`] (`totals`,
/// `hours-N`, `days-N`, created with Bloom filters) and the name its rows
/// move to.
fn legacy_name(name: &str) -> Option<String> {
    match name.split_once('-') {
        None if name == "totals" => Some(TOTALS.to_owned()),
        Some(("hours", n)) => Some(format!("{HOURS}-{n}")),
        Some(("days", n)) => Some(format!("{DAYS}-{n}")),
        _ => None,
    }
}

/// Rows copied per batch when a legacy partition moves.
const MIGRATE_BATCH: usize = 100_000;

/// The options every partition is created with (fjall keeps them with the
/// partition; they are not changed on reopen).
///
/// **No Bloom filters.** Every read here is a prefix or range scan (a
/// link's totals and deltas, a link's buckets), which a Bloom filter does
/// not serve, and fjall holds every segment's filter in memory: with the
/// default settings (10 bits per key, and 1-in-100,000 false positives in
/// levels 0 and 1) they were 17-26 bytes per link (README, "Click
/// statistics"), 26 GB at a billion links. Without them what stays in
/// memory is bounded by settings, not by links: memtables, the block cache,
/// and the block index of levels 0 and 1 (see the compaction strategy
/// below); deeper levels' index blocks go through the cache.
fn partition_options() -> PartitionCreateOptions {
    PartitionCreateOptions::default().bloom_filter_bits(None)
}

impl StatsDb {
    /// Opens (or creates) the store in `dir`.
    ///
    /// # Errors
    /// The store's.
    pub fn open(dir: &Path) -> io::Result<Self> {
        let keyspace = fjall::Config::new(dir)
            // The writer makes each batch durable itself (one fsync per
            // flush); fjall's own periodic fsync is not needed.
            .fsync_ms(None)
            .cache_size(16 << 20)
            // One background flush and one compaction thread: the serving
            // cores are busier than the statistics.
            .flush_workers(1)
            .compaction_workers(1)
            .open()
            .map_err(io_err)?;
        migrate(&keyspace)?;
        let totals = keyspace
            .open_partition(TOTALS, partition_options())
            .map_err(io_err)?;
        // Delta rows of a later flush must sort after (and never replace)
        // those of an earlier one, across restarts too.
        let seq = totals
            .get(SEQ_KEY)
            .map_err(io_err)?
            .map_or(0, |v| be_u64(&v));
        Ok(Self {
            keyspace,
            totals,
            blocks: Mutex::new(HashMap::new()),
            writer: Mutex::new(WriterState {
                seq,
                unfolded: HashMap::default(),
            }),
        })
    }

    fn block(&self, name: &str, create: bool) -> io::Result<Option<PartitionHandle>> {
        let mut blocks = self.blocks.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(p) = blocks.get(name) {
            return Ok(Some(p.clone()));
        }
        if !create && !self.keyspace.partition_exists(name) {
            return Ok(None);
        }
        let p = self
            .keyspace
            .open_partition(name, partition_options())
            .map_err(io_err)?;
        blocks.insert(name.to_owned(), p.clone());
        Ok(Some(p))
    }

    /// Adds one interval's deltas (of any number of cores) and makes them
    /// durable.
    ///
    /// # Errors
    /// The store's; nothing of the batch is then applied.
    pub fn apply<M: Borrow<ClickMap>>(&self, maps: &[M]) -> io::Result<()> {
        self.apply_through(maps, None)
    }

    /// [`apply`](Self::apply), recording in the same batch that it holds
    /// the hand-overs up to `through` ([`StatsDb::stored`]'s `applied`).
    ///
    /// # Errors
    /// The store's; nothing of the batch is then applied.
    pub fn apply_through<M: Borrow<ClickMap>>(
        &self,
        maps: &[M],
        through: Option<u64>,
    ) -> io::Result<()> {
        // Deltas of one link from several cores are added up first, so
        // each row is read and written once per batch.
        // Sized once: nearly every link touches one hour and one day.
        let links: usize = maps.iter().map(|m| m.borrow().len()).sum();
        let mut totals: HashMap<u64, LinkTotals> = HashMap::with_capacity(links);
        let mut hours: HashMap<(u64, u32), (u64, u64)> = HashMap::with_capacity(links);
        let mut days: HashMap<(u64, u32), (u64, u64)> = HashMap::with_capacity(links);
        for map in maps {
            for (&key, pending) in map.borrow() {
                totals.entry(key).or_default().merge(pending);
                for h in pending.hours() {
                    let (human, bot) = (u64::from(h.human), u64::from(h.bot));
                    let e = hours.entry((key, h.hour)).or_default();
                    *e = (e.0 + human, e.1 + bot);
                    let day = day_of(u64::from(h.hour) * HOUR_MS);
                    let e = days.entry((key, day)).or_default();
                    *e = (e.0 + human, e.1 + bot);
                }
            }
        }
        if totals.is_empty() {
            return Ok(());
        }
        let mut state = self.writer.lock().unwrap_or_else(|e| e.into_inner());
        // Advanced even if the batch fails: a sequence number is never
        // used twice, whatever part of a failed batch reached the disk.
        state.seq += 1;
        let seq = state.seq;
        let mut batch = self.keyspace.batch();
        let mut buf = Vec::new();
        let mut fold: HashSet<u64> = HashSet::new();
        // Each partition's rows in key order: the memtable (a skip list)
        // then finds each insert's place next to the last one's, in cache
        // (random order spent 40% of a flush searching it; perf).
        let mut totals: Vec<_> = totals.into_iter().collect();
        totals.sort_unstable_by_key(|&(key, _)| key);
        for (key, delta) in &totals {
            let key = *key;
            buf.clear();
            if !state.count(key) {
                // A blind write: no read.
                encode_totals(delta, &mut buf);
                batch.insert(&self.totals, totals_delta_key(key, seq), buf.as_slice());
                continue;
            }
            fold.insert(key);
            let mut stored = LinkTotals::default();
            for item in self.totals.prefix(key.to_be_bytes()) {
                let (k, v) = item.map_err(io_err)?;
                if let Some(t) = decode_totals(&v) {
                    stored.absorb(&t);
                }
                if k.len() != 8 {
                    batch.remove(&self.totals, k);
                }
            }
            stored.absorb(delta);
            encode_totals(&stored, &mut buf);
            batch.insert(&self.totals, key.to_be_bytes(), buf.as_slice());
        }
        for (rows, block, len, decode, wide) in [
            (
                hours,
                hours_block as fn(u32) -> String,
                HOUR_BLOCK,
                decode_hour as Decode,
                false,
            ),
            (days, days_block, DAY_BLOCK, decode_day, true),
        ] {
            let mut rows: Vec<_> = rows.into_iter().collect();
            rows.sort_unstable_by_key(|&((key, bucket), _)| (bucket / len, key, bucket));
            let mut current: Option<(u32, PartitionHandle)> = None;
            for ((key, bucket), (human, bot)) in rows {
                let part = match &current {
                    Some((n, part)) if *n == bucket / len => part.clone(),
                    _ => {
                        let part = self.block(&block(bucket), true)?.expect("created");
                        current = Some((bucket / len, part.clone()));
                        part
                    }
                };
                let encode = |h, b| -> Vec<u8> {
                    if wide {
                        encode_day(h, b).to_vec()
                    } else {
                        encode_hour(h, b).to_vec()
                    }
                };
                if !fold.contains(&key) {
                    batch.insert(&part, row_delta_key(key, bucket, seq), encode(human, bot));
                    continue;
                }
                let (mut h, mut b) = (human, bot);
                for item in part.range(row_range(key, bucket, bucket)) {
                    let (k, v) = item.map_err(io_err)?;
                    if let Some((h0, b0)) = decode(&v) {
                        h += h0;
                        b += b0;
                    }
                    if k.len() != 12 {
                        batch.remove(&part, k);
                    }
                }
                batch.insert(&part, row_key(key, bucket), encode(h, b));
            }
        }
        batch.insert(&self.totals, SEQ_KEY, seq.to_be_bytes());
        if let Some(through) = through {
            batch.insert(&self.totals, APPLIED_KEY, through.to_be_bytes());
        }
        batch.commit().map_err(io_err)?;
        self.keyspace.persist(PersistMode::SyncData).map_err(io_err)
    }

    /// Drops the hourly and daily blocks too old to keep at `now_ms`.
    ///
    /// # Errors
    /// The store's.
    pub fn retain(&self, now_ms: u64) -> io::Result<()> {
        let hour_floor = (hour_of(now_ms) / HOUR_BLOCK).saturating_sub(BLOCKS_KEPT);
        let day_floor = (day_of(now_ms) / DAY_BLOCK).saturating_sub(BLOCKS_KEPT);
        for name in self.keyspace.list_partitions() {
            let name: &str = &name;
            let old = match name.split_once('-') {
                Some((HOURS, n)) => n.parse::<u32>().is_ok_and(|n| n < hour_floor),
                Some((DAYS, n)) => n.parse::<u32>().is_ok_and(|n| n < day_floor),
                _ => false,
            };
            if old {
                if let Some(p) = self.block(name, false)? {
                    self.blocks
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .remove(name);
                    self.keyspace.delete_partition(p).map_err(io_err)?;
                }
            }
        }
        Ok(())
    }

    /// The last hand-over a batch applied (`APPLIED_KEY`; 0 for none).
    ///
    /// # Errors
    /// The store's.
    pub fn applied(&self) -> io::Result<u64> {
        Ok(self
            .totals
            .get(APPLIED_KEY)
            .map_err(io_err)?
            .map_or(0, |v| be_u64(&v)))
    }

    /// One link's totals, its rows over `[from_ms, to_ms)` and the last
    /// hand-over applied, all read at one instant (a snapshot of every
    /// partition at the same sequence number): a batch is either wholly in
    /// the read or not at all, so a core that adds its hand-overs after
    /// `applied` counts each click once ([`StoredStats::applied`]).
    ///
    /// # Errors
    /// The store's.
    pub fn stored(
        &self,
        key: u64,
        from_ms: u64,
        to_ms: u64,
        granularity: Granularity,
    ) -> io::Result<StoredStats> {
        let instant = self.keyspace.instant();
        let totals_at = self.totals.snapshot_at(instant);
        let applied = totals_at
            .get(APPLIED_KEY)
            .map_err(io_err)?
            .map_or(0, |v| be_u64(&v));
        // The folded row, then the deltas written since (all under the
        // link's eight bytes).
        let mut totals: Option<LinkTotals> = None;
        for item in totals_at.prefix(key.to_be_bytes()) {
            let (_, v) = item.map_err(io_err)?;
            if let Some(t) = decode_totals(&v) {
                totals.get_or_insert_with(LinkTotals::default).absorb(&t);
            }
        }
        let mut rows = Vec::new();
        // The same range `series` keeps, so a wide range reads no more rows
        // than it shows.
        let empty = series(None, &[], [], from_ms, to_ms, granularity);
        if let (Some(&(start, _)), Some(&(last, _))) = (empty.series.first(), empty.series.last()) {
            let end = last + granularity.millis();
            let (first, stop, block, name, wide): (u32, u32, u32, fn(u32) -> String, bool) =
                match granularity {
                    Granularity::Hour => (
                        hour_of(start),
                        hour_of(end.saturating_sub(1)),
                        HOUR_BLOCK,
                        hours_block,
                        false,
                    ),
                    Granularity::Day => (
                        day_of(start),
                        day_of(end.saturating_sub(1)),
                        DAY_BLOCK,
                        days_block,
                        true,
                    ),
                };
            let mut b = first / block;
            while b <= stop / block {
                if let Some(part) = self.block(&name(b * block), false)? {
                    // A bucket's row and its deltas (see the module's doc).
                    let part = part.snapshot_at(instant);
                    for item in part.range(row_range(key, first, stop)) {
                        let (k, v) = item.map_err(io_err)?;
                        let bucket = u32::from_be_bytes(k[8..12].try_into().unwrap_or_default());
                        let value = if wide {
                            decode_day(&v)
                        } else {
                            decode_hour(&v)
                        };
                        let Some((human, bot)) = value else {
                            continue;
                        };
                        rows.push(SeriesRow { bucket, human, bot });
                    }
                }
                b += 1;
            }
        }
        Ok(StoredStats {
            totals,
            rows,
            applied: Some(applied),
        })
    }

    /// Bytes the store holds on disk.
    pub fn disk_space(&self) -> u64 {
        self.keyspace.disk_space()
    }

    /// Every partition: the links' and each period's.
    fn partitions(&self) -> Vec<fjall::PartitionHandle> {
        let mut parts = vec![self.totals.clone()];
        parts.extend(
            self.blocks
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .values()
                .cloned(),
        );
        parts
    }

    /// Writes every partition's memtable out to segments and waits (for
    /// benchmarks: memory measured without the memtables, whose size
    /// depends on the moment).
    ///
    /// # Errors
    /// The store's.
    pub fn flush_memtables(&self) -> io::Result<()> {
        let parts = self.partitions();
        for p in parts {
            p.rotate_memtable_and_wait().map_err(io_err)?;
        }
        Ok(())
    }

    /// What the store holds in memory by its own accounting (for the
    /// benchmark's attribution of resident memory).
    pub fn memory(&self) -> StoreMemory {
        use fjall::AbstractTree;
        let parts = self.partitions();
        let mut m = StoreMemory {
            write_buffer: self.keyspace.write_buffer_size(),
            cache_capacity: self.keyspace.cache_capacity(),
            fold_tracked: self
                .writer
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .unfolded
                .len(),
            ..StoreMemory::default()
        };
        for p in parts {
            m.bloom += p.tree.bloom_filter_size() as u64;
            m.segments += p.tree.segment_count();
            // Levels 0 and 1 keep their whole block index in memory.
            m.full_index_segments += (0..2)
                .filter_map(|l| p.tree.level_segment_count(l))
                .sum::<usize>();
        }
        m
    }
}

/// The statistics store's memory by its own accounting
/// ([`StatsDb::memory`]).
#[derive(Debug, Default, Clone, Copy)]
pub struct StoreMemory {
    /// Bytes of Bloom filters held for every segment.
    pub bloom: u64,
    /// Bytes in memtables (active and sealed, not yet flushed).
    pub write_buffer: u64,
    /// The block cache's capacity.
    pub cache_capacity: u64,
    /// Segments on disk.
    pub segments: usize,
    /// Segments in levels 0 and 1, whose block index is held whole.
    pub full_index_segments: usize,
    /// Links the fold tracker holds.
    pub fold_tracked: usize,
}

/// `stats`: one link's statistics as one JSON object on standard output.
pub fn tool(
    dir: &Path,
    code: &str,
    from: Option<u64>,
    to: Option<u64>,
    granularity: crate::config::StatsGranularity,
) -> std::process::ExitCode {
    let result = (|| -> Result<serde_json::Value, String> {
        let data = crate::datadir::DataDir::open(dir).map_err(|e| e.to_string())?;
        let key = data.load_or_create_key().map_err(|e| e.to_string())?;
        let codec = shorty_service::codes::Codec::new(&key);
        // A whole short URL names its code last.
        let code = code
            .trim_end_matches('/')
            .rsplit('/')
            .next()
            .unwrap_or(code);
        let link = codec
            .parse(code.as_bytes())
            .ok_or_else(|| format!("{code} is not a code of this server"))?;
        let db = StatsDb::open(&data.path().join("stats")).map_err(|e| e.to_string())?;
        let to = to.unwrap_or_else(crate::keys::now_ms);
        let from = from.unwrap_or(to.saturating_sub(48 * HOUR_MS));
        let granularity = match granularity {
            crate::config::StatsGranularity::Hour => Granularity::Hour,
            crate::config::StatsGranularity::Day => Granularity::Day,
        };
        let view = db
            .view(link, from, to, granularity)
            .map_err(|e| e.to_string())?;
        Ok(view_json(code, &view))
    })();
    match result {
        Ok(json) => {
            println!("{json}");
            std::process::ExitCode::SUCCESS
        }
        Err(err) => {
            eprintln!("stats: {err}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// A view as JSON: `{"code", "total", "human", "bot", "first_click_ms",
/// "last_click_ms", "series": [[bucket_start_ms, clicks], ...],
/// "referrers": [[host, clicks], ...]}`.
pub fn view_json(code: &str, view: &StatsView) -> serde_json::Value {
    serde_json::json!({
        "code": code,
        "total": view.total,
        "human": view.human,
        "bot": view.bot,
        "first_click_ms": view.first_click_ms,
        "last_click_ms": view.last_click_ms,
        "series": view.series,
        "referrers": view.referrers,
    })
}

/// A core's statistics hand-off: where its maps go, and how often.
#[derive(Debug, Clone)]
pub struct CoreStats {
    /// The writer.
    pub sender: StatsSender,
    /// `--stats-flush`.
    pub flush: std::time::Duration,
}

impl CoreStats {
    /// Forgets the hand-overs the writer is done with, then hands `shard`'s
    /// pending clicks to the writer, if it has room (else they stay
    /// pending, and are handed over at a later flush). The core keeps what
    /// it handed over readable until the writer is done with it
    /// ([`shorty_service::stats::ClickCounter::handed`]).
    pub fn flush(&self, shard: &mut shorty_service::shard::Shard) {
        shard.stats.settle(self.sender.done());
        if shard.stats.pending_links() > 0 && self.sender.has_room() {
            if let Some((number, map)) = self.sender.send(shard.stats.take()) {
                shard.stats.handed(number, map);
            }
        }
    }
}

/// One map on its way to the writer, with its hand-over number.
type Handed = (u64, Arc<ClickMap>);

/// A core's way to the stats writer.
#[derive(Debug, Clone)]
pub struct StatsSender {
    tx: mpsc::Sender<Option<Handed>>,
    queued: Arc<AtomicUsize>,
    /// The next hand-over number. Taken and sent under this lock, so that
    /// the writer receives maps in number order: a batch then holds every
    /// hand-over up to its last one, which is what the store records.
    next: Arc<Mutex<u64>>,
    /// The last hand-over the writer is done with: applied, or lost with a
    /// batch the store refused (and logged).
    done: Arc<AtomicU64>,
}

impl StatsSender {
    /// Whether the writer can take another map now; when not, the core
    /// keeps counting into the map it has.
    pub fn has_room(&self) -> bool {
        self.queued.load(Ordering::Relaxed) < MAX_QUEUED
    }

    /// Hands one interval's map over: its hand-over number and the map, or
    /// `None` if it was empty or the writer has stopped.
    pub fn send(&self, map: ClickMap) -> Option<(u64, Arc<ClickMap>)> {
        if map.is_empty() {
            return None;
        }
        let map = Arc::new(map);
        let mut next = self.next.lock().unwrap_or_else(|e| e.into_inner());
        let number = *next;
        self.queued.fetch_add(1, Ordering::Relaxed);
        if self.tx.send(Some((number, map.clone()))).is_err() {
            self.queued.fetch_sub(1, Ordering::Relaxed);
            return None;
        }
        *next += 1;
        Some((number, map))
    }

    /// The last hand-over the writer is done with.
    pub fn done(&self) -> u64 {
        self.done.load(Ordering::Acquire)
    }

    /// Asks the writer to write what it has and stop (after every core's
    /// last map).
    pub fn finish(&self) {
        let _ = self.tx.send(None);
    }
}

impl StatsReader for StatsDb {
    fn stored(
        &self,
        key: u64,
        from_ms: u64,
        to_ms: u64,
        granularity: Granularity,
    ) -> io::Result<StoredStats> {
        StatsDb::stored(self, key, from_ms, to_ms, granularity)
    }
}

/// Shares one store between the writer and the readers.
struct SharedDb(Arc<StatsDb>);

impl StatsReader for SharedDb {
    fn stored(
        &self,
        key: u64,
        from_ms: u64,
        to_ms: u64,
        granularity: Granularity,
    ) -> io::Result<StoredStats> {
        self.0.stored(key, from_ms, to_ms, granularity)
    }
}

/// A reader over `db` for [`shorty_service::shard::Shared::stats`].
pub fn reader(db: Arc<StatsDb>) -> Box<dyn shorty_service::stats::StatsReader> {
    Box::new(SharedDb(db))
}

/// Where the stats writer puts the counts: the data directory's store, or
/// the Redis store ([`crate::stats_redis::RedisStats`]).
pub trait StatsSink: Send + 'static {
    /// Adds the deltas of `maps` (one or more intervals of any cores),
    /// which are the hand-overs up to `through` not yet applied.
    ///
    /// # Errors
    /// The store's; the batch may then be lost (never applied twice).
    fn apply(&mut self, maps: &[Arc<ClickMap>], through: u64) -> io::Result<()>;

    /// The last hand-over the store recorded applying, if it records them
    /// ([`StoredStats::applied`]): the writer numbers the next ones after
    /// it, so that a restarted server's hand-overs are never taken for ones
    /// the store already holds.
    ///
    /// # Errors
    /// The store's.
    fn applied(&self) -> io::Result<u64> {
        Ok(0)
    }

    /// Drops what is too old to keep at `now_ms`.
    ///
    /// # Errors
    /// The store's.
    fn retain(&mut self, _now_ms: u64) -> io::Result<()> {
        Ok(())
    }

    /// Links whose counts the store refused or that could not be sent,
    /// waiting for a retry (at most [`MAX_RETRY_LINKS`]).
    fn waiting_links(&self) -> usize {
        0
    }

    /// Counts are waiting ([`waiting_links`](Self::waiting_links)): the
    /// writer then calls [`apply`](Self::apply) again after
    /// [`RETRY_EVERY`] even when no core sends a new map.
    fn waiting(&self) -> bool {
        self.waiting_links() > 0
    }
}

/// Links whose counts a store that refuses writes can leave waiting for
/// the next flush; past it, the counts of the links beyond are dropped
/// (and logged): an outage must not grow the writer without bound.
pub const MAX_RETRY_LINKS: usize = 100_000;

/// How long a stopping writer keeps retrying, at [`RETRY_EVERY`], counts
/// the store still holds back before it says they are lost: a failover or
/// a restart of the store ends within seconds, an outage that outlasts it
/// does not end with the stop. A try begun before it ends may take up to
/// its own timeout beyond (review 20b: counted in tries, a store that was
/// gone made each take 5 s, and the stop 31 s).
pub const STOP_RETRY_FOR: std::time::Duration = std::time::Duration::from_secs(5);

/// Links whose counts this process's stats writer holds back for a retry
/// (what [`StatsSink::waiting_links`] said last), for an exit that does not
/// wait for the writer (a second signal) to say what it loses.
/// Process-wide: a server process has one writer.
pub static HELD_BACK_LINKS: AtomicUsize = AtomicUsize::new(0);

/// Links (map entries, counted by the maps' capacity: what they hold in
/// memory) of the hand-overs the writer keeps the
/// cores holding while the store holds counts of theirs back for a retry
/// ([`StatsSink::waiting`]): a refused flush's clicks then stay in every
/// read until the store takes them (a count never goes down and up again).
/// Past it (a long outage of a busy store), the cores let go, bounding
/// their memory, and reads lack the held-back counts until the store is
/// back. Never above [`MAX_RETRY_LINKS`]: a hold begins with the writer
/// holding nothing back, so while it lasts the writer holds back at most
/// this many links and drops none, and no read shows a click the writer
/// then drops (review 20 saw reads of 20,000 links go from 1 to 0 when
/// this bound was twice the writer's).
pub const MAX_HELD_LINKS: usize = MAX_RETRY_LINKS;

/// What the writer keeps the cores holding ([`MAX_HELD_LINKS`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Hold {
    /// Nothing held back: the cores may let go of every map applied.
    Nothing,
    /// The hand-overs from `first` on, `links` links in all.
    From { first: u64, links: usize },
    /// Held back past the bound: the cores let go, and no hold begins
    /// again until the store has taken everything it held back.
    LetGo,
}

impl Hold {
    /// The hold after a batch: whether the store still holds counts back
    /// (`waiting`), the batch's first hand-over and its links.
    fn after(self, waiting: bool, first: Option<u64>, links: usize) -> Hold {
        let within = |first, links| {
            if links <= MAX_HELD_LINKS {
                Hold::From { first, links }
            } else {
                Hold::LetGo
            }
        };
        match (self, first) {
            _ if !waiting => Hold::Nothing,
            (Hold::LetGo, _) => Hold::LetGo,
            (Hold::From { first, links: held }, _) => within(first, held + links),
            (Hold::Nothing, Some(first)) => within(first, links),
            // Held back with no batch of this hold's to keep: nothing to
            // hold (after `Nothing` the store held nothing back).
            (Hold::Nothing, None) => Hold::LetGo,
        }
    }

    /// The last hand-over the cores may let go of, of those up to
    /// `through`.
    fn done(self, through: u64) -> u64 {
        match self {
            Hold::From { first, .. } => first - 1,
            _ => through,
        }
    }
}

/// How soon the writer retries counts a store kept back ([`StatsSink::waiting`])
/// when no new clicks come: without it they waited for the node's next
/// click, however late, and a crash meanwhile lost them long after the
/// store was back (review 7, N2).
pub const RETRY_EVERY: std::time::Duration = std::time::Duration::from_secs(1);

impl StatsSink for Arc<StatsDb> {
    fn apply(&mut self, maps: &[Arc<ClickMap>], through: u64) -> io::Result<()> {
        StatsDb::apply_through(self, maps, Some(through))
    }

    fn applied(&self) -> io::Result<u64> {
        StatsDb::applied(self)
    }

    fn retain(&mut self, now_ms: u64) -> io::Result<()> {
        StatsDb::retain(self, now_ms)
    }
}

/// Starts the stats writer over `sink`: it writes each map it is handed
/// (several queued maps in one batch) and stops at [`StatsSender::finish`]
/// or once every sender is gone.
///
/// # Errors
/// When the thread cannot start.
pub fn spawn_writer(mut db: impl StatsSink) -> io::Result<(StatsSender, JoinHandle<()>)> {
    let (tx, rx) = mpsc::channel::<Option<Handed>>();
    let queued = Arc::new(AtomicUsize::new(0));
    let counter = queued.clone();
    let applied = db.applied()?;
    let done = Arc::new(AtomicU64::new(applied));
    let done_by_writer = done.clone();
    let handle = std::thread::Builder::new()
        .name("shorty-stats".into())
        .spawn(move || {
            let mut last_retain = 0u64;
            let mut stop = false;
            // Maps applied that a core may still read
            // ([`ClickCounter::settle`]): dropped here once the core has
            // let go, so that freeing a big map never falls to a serving
            // core.
            let mut retired: Vec<Arc<ClickMap>> = Vec::new();
            let mut through = applied;
            // The hand-overs the cores are kept holding while the store
            // holds counts of theirs back for a retry.
            let mut held = Hold::Nothing;
            while !stop {
                let mut maps = Vec::new();
                let next = if db.waiting() {
                    match rx.recv_timeout(RETRY_EVERY) {
                        Ok(next) => Some(next),
                        // Nothing new: apply nothing, which retries.
                        Err(mpsc::RecvTimeoutError::Timeout) => None,
                        Err(mpsc::RecvTimeoutError::Disconnected) => Some(None),
                    }
                } else {
                    Some(rx.recv().unwrap_or(None))
                };
                let mut first = None;
                let mut take = |next: Option<Handed>, stop: &mut bool| match next {
                    Some((number, map)) => {
                        through = through.max(number);
                        first = first.or(Some(number));
                        maps.push(map);
                    }
                    None => *stop = true,
                };
                if let Some(next) = next {
                    take(next, &mut stop);
                }
                while let Ok(next) = rx.try_recv() {
                    take(next, &mut stop);
                }
                let n = maps.len();
                if let Err(err) = db.apply(&maps, through) {
                    // Counts are not worth stopping redirects for: say so
                    // and go on (the next batch retries the store).
                    tracing::error!("cannot write click statistics: {err}");
                }
                // By capacity, not length: a core's map starts each interval
                // at the largest capacity it has needed, so a few clicks
                // can hold a big map (review 20 saw 1.2 KB held per link).
                let links: usize = maps.iter().map(|map| map.capacity()).sum();
                held = held.after(db.waiting(), first, links);
                HELD_BACK_LINKS.store(db.waiting_links(), Ordering::Relaxed);
                // After the batch is in the store (or lost): a core that
                // forgets these maps now finds them in any later read. Not
                // past counts the store holds back for a retry: the cores
                // keep reading those from their maps until they are in.
                let done = held.done(through);
                done_by_writer.store(done, Ordering::Release);
                counter.fetch_sub(n, Ordering::Relaxed);
                retired.retain(|map| Arc::strong_count(map) > 1);
                retired.extend(maps);
                let now_ms = crate::keys::now_ms();
                if now_ms.saturating_sub(last_retain) >= DAY_MS / 24 {
                    last_retain = now_ms;
                    if let Err(err) = db.retain(now_ms) {
                        tracing::warn!("cannot drop old click statistics: {err}");
                    }
                }
            }
            // Stopping while the store holds counts back: a few more
            // tries, then say what is lost. Before, a clean stop during a
            // refusal dropped them after a last "kept for the next flush"
            // (review 20).
            let deadline = std::time::Instant::now() + STOP_RETRY_FOR;
            while db.waiting() && std::time::Instant::now() + RETRY_EVERY <= deadline {
                std::thread::sleep(RETRY_EVERY);
                if let Err(err) = db.apply(&[], through) {
                    tracing::error!("cannot write click statistics: {err}");
                }
                HELD_BACK_LINKS.store(db.waiting_links(), Ordering::Relaxed);
            }
            if db.waiting() {
                tracing::error!(
                    "stopping with the click counts of {} links that the store still refuses \
                     after {STOP_RETRY_FOR:?} of retries: they are lost",
                    db.waiting_links()
                );
            }
        })?;
    let sender = StatsSender {
        tx,
        queued,
        next: Arc::new(Mutex::new(applied + 1)),
        done,
    };
    Ok((sender, handle))
}

#[cfg(test)]
mod tests {
    use super::*;
    use shorty_service::stats::{ClickCounter, ClickMeta};
    use std::time::{SystemTime, UNIX_EPOCH};

    const T0: u64 = 1_709_251_200_000; // 2024-03-01T00:00:00Z

    #[test]
    fn a_hold_spans_the_batches_a_retry_came_from_within_its_bound() {
        use Hold::*;
        // Nothing held back: nothing held.
        assert_eq!(Nothing.after(false, Some(3), 10), Nothing);
        // Held back from batch 3 on, through the retries without new maps
        // and the batches after it, until the store takes them.
        let held = Nothing.after(true, Some(3), 10);
        assert_eq!(
            held,
            From {
                first: 3,
                links: 10
            }
        );
        assert_eq!(held.done(4), 2);
        let held = held.after(true, None, 0);
        assert_eq!(
            held,
            From {
                first: 3,
                links: 10
            }
        );
        let held = held.after(true, Some(5), 7);
        assert_eq!(
            held,
            From {
                first: 3,
                links: 17
            }
        );
        assert_eq!(held.after(false, Some(6), 1), Nothing);
        assert_eq!(Nothing.done(6), 6);
        // Past the bound the cores let go, and no new hold begins while
        // anything is still held back (it could then hold more links than
        // the writer keeps, and show clicks the writer drops).
        let gone = held.after(true, Some(6), MAX_HELD_LINKS);
        assert_eq!(gone, LetGo);
        assert_eq!(gone.done(6), 6);
        assert_eq!(gone.after(true, Some(7), 1), LetGo);
        assert_eq!(gone.after(false, None, 0), Nothing);
        assert_eq!(Nothing.after(true, None, 0), LetGo);
        const { assert!(MAX_HELD_LINKS <= MAX_RETRY_LINKS) };
    }

    /// A store that refuses its first batch and keeps it (as the Redis
    /// sink does), then takes everything.
    struct RefusesOnce {
        calls: Arc<AtomicUsize>,
        kept: bool,
    }

    impl StatsSink for RefusesOnce {
        fn apply(&mut self, maps: &[Arc<ClickMap>], _through: u64) -> io::Result<()> {
            let call = self.calls.fetch_add(1, Ordering::SeqCst);
            self.kept = call == 0 && !maps.is_empty();
            Ok(())
        }

        fn waiting(&self) -> bool {
            self.kept
        }
    }

    #[test]
    fn kept_counts_are_retried_without_waiting_for_a_new_click() {
        let calls = Arc::new(AtomicUsize::new(0));
        let sink = RefusesOnce {
            calls: calls.clone(),
            kept: false,
        };
        let (sender, handle) = spawn_writer(sink).unwrap();
        let mut c = ClickCounter::new(true);
        click(&mut c, 1, T0, false, None);
        sender.send(c.take());
        // No more clicks: the kept batch goes again on the writer's own.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        while calls.load(Ordering::SeqCst) < 2 {
            assert!(
                std::time::Instant::now() < deadline,
                "kept counts waited for a new click"
            );
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        sender.finish();
        handle.join().unwrap();
    }

    fn click(c: &mut ClickCounter, key: u64, at: u64, bot: bool, host: Option<&str>) {
        c.record(
            key,
            &ClickMeta {
                head: false,
                bot,
                referrer_host: host,
            },
            at,
        );
    }

    #[test]
    fn cores_intervals_and_restarts_add_up() {
        let dir = tempfile::tempdir().unwrap();
        {
            let db = StatsDb::open(dir.path()).unwrap();
            let (mut a, mut b) = (ClickCounter::new(true), ClickCounter::new(true));
            click(&mut a, 1, T0 - 1, false, Some("x.example"));
            click(&mut b, 1, T0, true, None);
            click(&mut b, 2, T0 + HOUR_MS, false, Some("y.example"));
            db.apply(&[a.take(), b.take()]).unwrap();
            click(&mut a, 1, T0 + 5, false, Some("x.example"));
            db.apply(&[a.take()]).unwrap();
        }
        let db = StatsDb::open(dir.path()).unwrap();
        let v = db
            .view(1, T0 - HOUR_MS, T0 + 2 * HOUR_MS, Granularity::Hour)
            .unwrap();
        assert_eq!((v.total, v.human, v.bot), (3, 2, 1));
        assert_eq!(
            v.series,
            vec![(T0 - HOUR_MS, 1), (T0, 2), (T0 + HOUR_MS, 0)]
        );
        assert_eq!(v.first_click_ms, Some(T0 - 1));
        assert_eq!(v.last_click_ms, Some(T0 + 5));
        assert_eq!(v.referrers, vec![("x.example".to_owned(), 2)]);
        let d = db
            .view(1, T0 - DAY_MS, T0 + DAY_MS, Granularity::Day)
            .unwrap();
        assert_eq!(d.series, vec![(T0 - DAY_MS, 1), (T0, 2)]);
        let other = db.view(2, T0, T0 + 2 * HOUR_MS, Granularity::Hour).unwrap();
        assert_eq!(other.series, vec![(T0, 0), (T0 + HOUR_MS, 1)]);
        assert_eq!(db.view(3, T0, T0 + 1, Granularity::Hour).unwrap().total, 0);
    }

    #[test]
    fn retention_drops_old_hours_but_keeps_days_and_totals() {
        let dir = tempfile::tempdir().unwrap();
        let db = StatsDb::open(dir.path()).unwrap();
        let mut c = ClickCounter::new(true);
        click(&mut c, 7, T0, false, None);
        db.apply(&[c.take()]).unwrap();
        // 30 days later the hours are still there.
        let later = T0 + 30 * DAY_MS;
        db.retain(later).unwrap();
        let v = db.view(7, T0, T0 + HOUR_MS, Granularity::Hour).unwrap();
        assert_eq!(v.series, vec![(T0, 1)]);
        // A year later the hours are gone, the day and the totals stay.
        let year = T0 + 366 * DAY_MS;
        db.retain(year).unwrap();
        let v = db.view(7, T0, T0 + HOUR_MS, Granularity::Hour).unwrap();
        assert_eq!(v.series, vec![(T0, 0)]);
        assert_eq!(v.total, 1);
        let d = db.view(7, T0, T0 + DAY_MS, Granularity::Day).unwrap();
        assert_eq!(d.series, vec![(T0, 1)]);
    }

    /// What a core's read of `key` answers: the store at one instant plus
    /// the core's deltas it did not hold, as a core builds it.
    fn read(db: &StatsDb, c: &ClickCounter, key: u64, t0: u64) -> StatsView {
        let (from, to) = (t0, t0 + DAY_MS);
        let stored = db.stored(key, from, to, Granularity::Hour).unwrap();
        c.view(key, &stored, from, to, Granularity::Hour)
    }

    #[test]
    fn clicks_on_their_way_to_the_store_are_counted_once_at_every_step() {
        let dir = tempfile::tempdir().unwrap();
        let db = StatsDb::open(dir.path()).unwrap();
        let mut c = ClickCounter::new(true);
        for i in 0..3 {
            click(&mut c, 7, T0 + i, false, None);
        }
        assert_eq!(read(&db, &c, 7, T0).total, 3, "pending");
        // Handed over, not yet applied: the store does not have them (a
        // read without the hand-over said 0 here).
        let map = Arc::new(c.take());
        c.handed(1, map.clone());
        assert_eq!(read(&db, &c, 7, T0).total, 3, "handed over");
        click(&mut c, 7, T0 + 10, true, None);
        // Applied, the core not yet told: the store's count of hand-overs
        // keeps the core's copy out.
        db.apply_through(&[map], Some(1)).unwrap();
        let view = read(&db, &c, 7, T0);
        assert_eq!((view.total, view.bot), (4, 1), "applied, not settled");
        assert_eq!(view.series.iter().map(|(_, n)| n).sum::<u64>(), 4);
        c.settle(1);
        assert_eq!(c.unsettled(), 0);
        assert_eq!(read(&db, &c, 7, T0).total, 4, "settled");
        // A restart: the store's count survives, and the writer numbers
        // the next hand-overs after it.
        drop(db);
        let db = Arc::new(StatsDb::open(dir.path()).unwrap());
        assert_eq!(db.applied().unwrap(), 1);
        let (tx, handle) = spawn_writer(db.clone()).unwrap();
        let (number, _) = tx.send(c.take()).unwrap();
        assert_eq!(number, 2);
        tx.finish();
        handle.join().unwrap();
        assert_eq!(tx.done(), 2);
        assert_eq!(db.totals(7).unwrap().unwrap().human, 3);
    }

    #[test]
    fn a_core_reading_while_it_flushes_never_sees_its_count_go_down() {
        // One core, clicking, handing over and reading as fast as it can
        // while the writer applies on its own thread: every read must be
        // exactly the clicks so far (they are all this core's).
        let dir = tempfile::tempdir().unwrap();
        let db = Arc::new(StatsDb::open(dir.path()).unwrap());
        let (tx, handle) = spawn_writer(db.clone()).unwrap();
        let mut c = ClickCounter::new(true);
        // Clicks of this hour: the writer's retention runs on the wall
        // clock and drops hourly rows of T0's year.
        let t0 = hour_of(
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap()
                .as_millis() as u64,
        ) as u64
            * HOUR_MS;
        let mut clicks = 0u64;
        let mut handed = 0;
        while handed < 300 {
            click(&mut c, 3, t0 + clicks, clicks.is_multiple_of(5), None);
            clicks += 1;
            c.settle(tx.done());
            if tx.has_room() {
                if let Some((number, map)) = tx.send(c.take()) {
                    c.handed(number, map);
                    handed += 1;
                }
            }
            for _ in 0..3 {
                let view = read(&db, &c, 3, t0);
                assert_eq!(view.total, clicks, "after {handed} hand-overs");
                assert_eq!(view.series.iter().map(|(_, n)| n).sum::<u64>(), clicks);
            }
        }
        tx.finish();
        handle.join().unwrap();
        c.settle(tx.done());
        assert_eq!(c.unsettled(), 0);
        assert_eq!(read(&db, &c, 3, t0).total, clicks);
    }

    #[test]
    fn the_writer_writes_every_map_it_was_handed_before_it_stops() {
        let dir = tempfile::tempdir().unwrap();
        let db = Arc::new(StatsDb::open(dir.path()).unwrap());
        let (tx, handle) = spawn_writer(db.clone()).unwrap();
        let mut c = ClickCounter::new(true);
        for i in 0..100u64 {
            click(&mut c, i % 10, T0 + i, false, None);
            if i % 7 == 0 {
                tx.send(c.take());
            }
        }
        tx.send(c.take());
        tx.finish();
        handle.join().unwrap();
        let total: u64 = (0..10).map(|k| db.totals(k).unwrap().unwrap().human).sum();
        assert_eq!(total, 100);
        assert!(tx.has_room());
    }

    /// Rows under `prefix` in `part` (plain and deltas).
    fn rows(part: &PartitionHandle, prefix: &[u8]) -> usize {
        part.prefix(prefix).count()
    }

    #[test]
    fn rows_written_before_delta_rows_are_read_and_added_to() {
        let dir = tempfile::tempdir().unwrap();
        let hour = hour_of(T0);
        let day = day_of(T0);
        {
            // The layout as the read-modify-write store left it: one plain
            // row per link, hour and day.
            let db = StatsDb::open(dir.path()).unwrap();
            let old = LinkTotals {
                human: 4,
                bot: 1,
                first_ms: T0 - 10,
                last_ms: T0 - 5,
                referrers: Default::default(),
            };
            let mut buf = Vec::new();
            encode_totals(&old, &mut buf);
            db.totals.insert(9u64.to_be_bytes(), buf).unwrap();
            let hours = db.block(&hours_block(hour), true).unwrap().unwrap();
            hours.insert(row_key(9, hour), encode_hour(4, 1)).unwrap();
            let days = db.block(&days_block(day), true).unwrap().unwrap();
            days.insert(row_key(9, day), encode_day(4, 1)).unwrap();
            db.keyspace.persist(PersistMode::SyncData).unwrap();
        }
        let db = StatsDb::open(dir.path()).unwrap();
        let v = db.view(9, T0, T0 + HOUR_MS, Granularity::Hour).unwrap();
        assert_eq!((v.total, v.human, v.bot), (5, 4, 1));
        assert_eq!(v.series, vec![(T0, 5)]);
        let mut c = ClickCounter::new(true);
        click(&mut c, 9, T0 + 1, false, None);
        click(&mut c, 9, T0 + 2, true, None);
        db.apply(&[c.take()]).unwrap();
        let v = db.view(9, T0, T0 + HOUR_MS, Granularity::Hour).unwrap();
        assert_eq!((v.total, v.human, v.bot), (7, 5, 2));
        assert_eq!(v.series, vec![(T0, 7)]);
        assert_eq!(
            (v.first_click_ms, v.last_click_ms),
            (Some(T0 - 10), Some(T0 + 2))
        );
        let d = db.view(9, T0, T0 + DAY_MS, Granularity::Day).unwrap();
        assert_eq!(d.series, vec![(T0, 7)]);
    }

    #[test]
    fn deltas_of_a_later_run_never_replace_an_earlier_runs() {
        // Each run's first flush of the same link and hour: a sequence
        // number that restarted would write the same delta key again.
        let dir = tempfile::tempdir().unwrap();
        for run in 1..=3u64 {
            let db = StatsDb::open(dir.path()).unwrap();
            let mut c = ClickCounter::new(true);
            click(&mut c, 5, T0 + run, false, None);
            db.apply(&[c.take()]).unwrap();
            let v = db.view(5, T0, T0 + HOUR_MS, Granularity::Hour).unwrap();
            assert_eq!(v.total, run);
            assert_eq!(v.series, vec![(T0, run)]);
        }
    }

    #[test]
    fn a_hot_link_is_folded_so_its_rows_stay_few() {
        let dir = tempfile::tempdir().unwrap();
        let db = StatsDb::open(dir.path()).unwrap();
        let flushes = 5 * u64::from(FOLD_AT) + 3;
        for i in 0..flushes {
            let mut c = ClickCounter::new(true);
            // Link 1 in every flush, link 2 (cold) once.
            click(&mut c, 1, T0 + i, i % 3 == 0, Some("hot.example"));
            if i == 4 {
                click(&mut c, 2, T0 + i, false, None);
            }
            db.apply(&[c.take()]).unwrap();
            let v = db.view(1, T0, T0 + HOUR_MS, Granularity::Hour).unwrap();
            assert_eq!(v.total, i + 1);
        }
        let hours = db.block(&hours_block(hour_of(T0)), false).unwrap().unwrap();
        let days = db.block(&days_block(day_of(T0)), false).unwrap().unwrap();
        let at_most = usize::from(FOLD_AT);
        assert!(rows(&db.totals, &1u64.to_be_bytes()) <= at_most);
        assert!(rows(&hours, &row_key(1, hour_of(T0))) <= at_most);
        assert!(rows(&days, &row_key(1, day_of(T0))) <= at_most);
        let v = db.view(1, T0, T0 + HOUR_MS, Granularity::Hour).unwrap();
        assert_eq!((v.total, v.bot), (flushes, flushes.div_ceil(3)));
        assert_eq!(v.series, vec![(T0, flushes)]);
        assert_eq!(v.referrers, vec![("hot.example".to_owned(), flushes)]);
        assert_eq!(
            (v.first_click_ms, v.last_click_ms),
            (Some(T0), Some(T0 + flushes - 1))
        );
        let d = db.view(1, T0, T0 + DAY_MS, Granularity::Day).unwrap();
        assert_eq!(d.series, vec![(T0, flushes)]);
        assert_eq!(
            db.view(2, T0, T0 + HOUR_MS, Granularity::Hour)
                .unwrap()
                .total,
            1
        );
    }

    #[test]
    fn a_store_with_bloom_filters_is_moved_to_partitions_without_them() {
        // The layout before: `totals`, `hours-N`, `days-N` with fjall's
        // default options (Bloom filters), rows flushed to segments.
        let dir = tempfile::tempdir().unwrap();
        let (hour, day) = (hour_of(T0), day_of(T0));
        {
            let ks = fjall::Config::new(dir.path()).open().unwrap();
            let open = |name: &str| {
                ks.open_partition(name, PartitionCreateOptions::default())
                    .unwrap()
            };
            let totals = open("totals");
            let hours = open(&format!("hours-{}", hour / HOUR_BLOCK));
            let days = open(&format!("days-{}", day / DAY_BLOCK));
            let t = LinkTotals {
                human: 3,
                bot: 1,
                first_ms: T0,
                last_ms: T0 + 9,
                referrers: Default::default(),
            };
            let mut buf = Vec::new();
            for key in 0..1000u64 {
                buf.clear();
                encode_totals(&t, &mut buf);
                totals.insert(key.to_be_bytes(), &buf).unwrap();
                hours.insert(row_key(key, hour), encode_hour(3, 1)).unwrap();
                days.insert(row_key(key, day), encode_day(3, 1)).unwrap();
            }
            totals.insert(SEQ_KEY, 41u64.to_be_bytes()).unwrap();
            ks.persist(PersistMode::SyncAll).unwrap();
            for p in [&totals, &hours, &days] {
                p.rotate_memtable_and_wait().unwrap();
            }
            use fjall::AbstractTree;
            assert!(
                totals.tree.bloom_filter_size() > 0,
                "the old layout has them"
            );
        }
        let db = StatsDb::open(dir.path()).unwrap();
        for name in ["totals", "hours-", "days-"] {
            assert!(
                !db.keyspace
                    .list_partitions()
                    .iter()
                    .any(|p| p.starts_with(name)),
                "{name} is gone"
            );
        }
        let v = db.view(999, T0, T0 + HOUR_MS, Granularity::Hour).unwrap();
        assert_eq!((v.total, v.human, v.bot), (4, 3, 1));
        assert_eq!(v.series, vec![(T0, 4)]);
        let d = db.view(0, T0, T0 + DAY_MS, Granularity::Day).unwrap();
        assert_eq!(d.series, vec![(T0, 4)]);
        // The sequence moved too: the next flush's deltas come after 41.
        assert_eq!(db.writer.lock().unwrap().seq, 41);
        let mut c = ClickCounter::new(true);
        click(&mut c, 999, T0 + 1, false, None);
        db.apply(&[c.take()]).unwrap();
        db.totals.rotate_memtable_and_wait().unwrap();
        let v = db.view(999, T0, T0 + HOUR_MS, Granularity::Hour).unwrap();
        assert_eq!((v.total, v.human), (5, 4));
        // Nothing held per link: no segment has a Bloom filter.
        let m = db.memory();
        assert!(m.segments > 0);
        assert_eq!(m.bloom, 0);
        drop(db);
        // Opened again, nothing moves twice.
        let db = StatsDb::open(dir.path()).unwrap();
        let v = db.view(999, T0, T0 + HOUR_MS, Granularity::Hour).unwrap();
        assert_eq!((v.total, v.human), (5, 4));
    }

    #[test]
    fn the_fold_tracker_stays_bounded() {
        let mut state = WriterState::default();
        for key in 0..(FOLD_TRACKED as u64 + 1000) {
            state.count(key);
        }
        assert!(state.unfolded.len() <= FOLD_TRACKED);
        // A link counted every flush is still folded.
        assert!((0..FOLD_AT).any(|_| state.count(u64::MAX)));
    }
}
