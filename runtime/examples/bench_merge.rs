//! Measures the merge (run by `scripts/bench-merge.sh`): fills a data
//! directory with `--links` links in sealed, hinted 64 MiB segments (batches
//! of 64 links, each opened by a commit marker, as the log writer lays them
//! out), deletes every other link (a tombstone each, version 1, in further
//! sealed segments, as the lifecycle's delete writes them; recovery loads
//! them into the key directory), then reports disk and key directory bytes
//! before and after (the tombstones in force are carried forward), the merge's time and I/O rate, and
//! the URL reads per second that `--readers` threads make (key directory
//! lookup, `pread` of the record, decode) without a merge and during one.
//!
//! In-process, against the storage layer the servers use (the key
//! directory, the segment table, the merge thread's code): the wire and
//! the URL cache are left out, so the reads measured are exactly the ones
//! a merge competes with.
//!
//! `bench_merge --links N --dir D [--readers R] [--rate BYTES_PER_S]`

use std::collections::HashMap;
use std::fs::{self, File};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use shorty_runtime::merge::{MergeSettings, Merger};
use shorty_service::keydir::KeyDir;
use shorty_service::keydir::{Ident, Target};
use shorty_service::log::hint::{build_hint, hint_file_name};
use shorty_service::log::record::{
    decode_record, link_len, Decoded, Keyed, Link, Record, Tombstone, TOMBSTONE_LEN,
};
use shorty_service::log::segments::{
    encode_sealed_records, encode_sealed_segment, segment_file_name, SegmentTable,
};
use shorty_service::metrics::MergeMetrics;

fn arg(name: &str) -> Option<String> {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
}

fn url(key: u64) -> String {
    // ~70 bytes, a typical long URL.
    format!("https://www.example.com/articles/2026/12/{key:012}/a-title-of-some-length")
}

fn fill(dir: &Path, links: u64) -> u64 {
    let per_segment = (64 << 20) / link_len(url(0).len()) as u64 * 63 / 64;
    let mut number = 0;
    let mut key = 0;
    while key < links {
        let n = per_segment.min(links - key);
        let urls: Vec<(u64, String)> = (key..key + n).map(|k| (k, url(k))).collect();
        let batch: Vec<Link<'_>> = urls
            .iter()
            .map(|(k, u)| Link::plain(*k, *k, u.as_bytes()))
            .collect();
        let batches: Vec<&[Link<'_>]> = batch.chunks(64).collect();
        let bytes = encode_sealed_segment(number, &batches);
        fs::write(
            dir.join(hint_file_name(number)),
            build_hint(number, &bytes).unwrap(),
        )
        .unwrap();
        fs::write(dir.join(segment_file_name(number)), bytes).unwrap();
        key += n;
        number += 1;
    }
    number
}

/// Deletes every even key below `links`: tombstones in sealed, hinted
/// segments numbered from `number`. Returns the next number.
fn delete_half(dir: &Path, links: u64, mut number: u64) -> u64 {
    let per_segment = (64 << 20) / TOMBSTONE_LEN as u64 * 63 / 64;
    let keys: Vec<u64> = (0..links).step_by(2).collect();
    for chunk in keys.chunks(per_segment as usize) {
        let records: Vec<Keyed<'_>> = chunk
            .iter()
            .map(|&key| {
                Keyed::Tombstone(Tombstone {
                    key,
                    version: 1,
                    deleted_at_ms: 1_800_000_000_000,
                    alias: None,
                })
            })
            .collect();
        let batches: Vec<&[Keyed<'_>]> = records.chunks(64).collect();
        let bytes = encode_sealed_records(number, &batches);
        fs::write(
            dir.join(hint_file_name(number)),
            build_hint(number, &bytes).unwrap(),
        )
        .unwrap();
        fs::write(dir.join(segment_file_name(number)), bytes).unwrap();
        number += 1;
    }
    number
}

/// Every odd key live, every even one deleted.
fn check_all(keydir: &KeyDir, links: u64) {
    for key in 0..links {
        let deleted = matches!(
            keydir.lookup(Ident::Key(key)),
            Some((Target::Deleted { .. }, _))
        );
        assert_eq!(deleted, key % 2 == 0, "key {key}");
        assert_eq!(keydir.get(key).is_some(), key % 2 == 1, "key {key}");
    }
}

fn disk_bytes(dir: &Path) -> u64 {
    fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| e.ok()?.metadata().ok())
        .map(|m| m.len())
        .sum()
}

/// URL reads per second by `readers` threads until `stop`.
fn read_links(
    table: Arc<SegmentTable>,
    keydir: Arc<KeyDir>,
    links: u64,
    readers: u64,
    stop: Arc<AtomicBool>,
) -> (u64, u64, Duration) {
    let done = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let threads: Vec<_> = (0..readers)
        .map(|t| {
            let (table, keydir, stop, done, failed) = (
                table.clone(),
                keydir.clone(),
                stop.clone(),
                done.clone(),
                failed.clone(),
            );
            std::thread::spawn(move || {
                let mut files: HashMap<u32, File> = HashMap::new();
                let mut x = 0x9e37_79b9_7f4a_7c15u64 ^ (t + 1);
                let mut buf = vec![0; 256];
                while !stop.load(Ordering::Relaxed) {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    // Live keys are the odd ones.
                    let key = (x % (links / 2)) * 2 + 1;
                    let ok = (|| {
                        let loc = keydir.get(key)?;
                        let f = match files.entry(loc.file) {
                            std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
                            std::collections::hash_map::Entry::Vacant(v) => {
                                v.insert(File::open(table.get(loc.file)?.path).ok()?)
                            }
                        };
                        let n = f.read_at(&mut buf, u64::from(loc.offset)).ok()?;
                        match decode_record(&buf[..n]) {
                            Decoded::Record(Record::Link(l), _) => Some(l.key == key),
                            _ => None,
                        }
                    })();
                    if ok == Some(true) {
                        done.fetch_add(1, Ordering::Relaxed);
                    } else {
                        failed.fetch_add(1, Ordering::Relaxed);
                    }
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    (
        done.load(Ordering::Relaxed),
        failed.load(Ordering::Relaxed),
        started.elapsed(),
    )
}

fn main() {
    let links: u64 = arg("--links").map_or(1_000_000, |s| s.parse().unwrap());
    let readers: u64 = arg("--readers").map_or(1, |s| s.parse().unwrap());
    let rate: u64 = arg("--rate").map_or(32 << 20, |s| s.parse().unwrap());
    let base = PathBuf::from(arg("--dir").unwrap_or_else(|| ".".into()));
    let tmp = tempfile::tempdir_in(&base).unwrap();
    let dir = tmp.path();
    fs::write(dir.join("code.key"), [7; 16]).unwrap();
    let t = Instant::now();
    let segments = fill(dir, links);
    println!(
        "filled {links} links in {segments} segments in {:.1} s",
        t.elapsed().as_secs_f64()
    );
    let keydir_before = {
        let (table, full) = (SegmentTable::new(dir, 0), KeyDir::new());
        shorty_runtime::datadir::recover(dir, &table, &full, 2).unwrap();
        full.memory_bytes()
    };
    let disk_filled = disk_bytes(dir);
    // Deletes: a tombstone for every even key.
    let total = delete_half(dir, links, segments);
    let table = Arc::new(SegmentTable::new(dir, 0));
    let keydir = Arc::new(KeyDir::new());
    shorty_runtime::datadir::recover(dir, &table, &keydir, 2).unwrap();
    check_all(&keydir, links);
    let disk_before = disk_bytes(dir);
    println!(
        "before: disk {disk_filled} B filled, {disk_before} B with the deletes' {} tombstone \
         segments; key directory {keydir_before} B with every link, {} B with half deleted",
        total - segments,
        keydir.memory_bytes()
    );

    let secs = Duration::from_secs(arg("--seconds").map_or(5, |s| s.parse().unwrap()));
    let stop = Arc::new(AtomicBool::new(false));
    let reader = {
        let (table, keydir, stop) = (table.clone(), keydir.clone(), stop.clone());
        std::thread::spawn(move || read_links(table, keydir, links, readers, stop))
    };
    std::thread::sleep(secs);
    stop.store(true, Ordering::Relaxed);
    let (ok, failed, took) = reader.join().unwrap();
    let idle_rate = ok as f64 / took.as_secs_f64();
    println!("reads without a merge: {idle_rate:.0}/s ({failed} failed) over {readers} threads");

    let stop = Arc::new(AtomicBool::new(false));
    let reader = {
        let (table, keydir, stop) = (table.clone(), keydir.clone(), stop.clone());
        std::thread::spawn(move || read_links(table, keydir, links, readers, stop))
    };
    let settings = MergeSettings {
        threshold: 0.5,
        rate,
        interval: Duration::ZERO,
        segment_bytes: 64 << 20,
        grace: Duration::from_millis(100),
        forget: None,
        nice: 0,
    };
    let metrics = MergeMetrics::default();
    let mut merger = Merger::new(&table, &keydir, &settings, &metrics);
    let t = Instant::now();
    let (mut io, mut merges, mut reclaimed) = (0u64, 0, 0u64);
    while let Some(report) = merger.merge_once().unwrap() {
        io += report.io_bytes;
        merges += 1;
        reclaimed += report.reclaimed();
    }
    let merge_time = t.elapsed();
    stop.store(true, Ordering::Relaxed);
    let (ok, failed, took) = reader.join().unwrap();
    let busy_rate = ok as f64 / took.as_secs_f64();
    let disk_after = disk_bytes(dir);
    // What a restart holds: the key directory rebuilt from the new hints.
    let (t2, k2) = (SegmentTable::new(dir, 0), KeyDir::new());
    shorty_runtime::datadir::recover(dir, &t2, &k2, 2).unwrap();
    check_all(&k2, links);
    // The first check also reads every segment once (marker bytes).
    let total_io = io + disk_before;
    println!(
        "merge: {merges} merges in {:.2} s, {io} B read+written by the merge and {disk_before} B \
         read once to count marker bytes: {:.1} MB/s (rate limit {:.1} MB/s), {reclaimed} B \
         reclaimed",
        merge_time.as_secs_f64(),
        total_io as f64 / merge_time.as_secs_f64() / 1e6,
        rate as f64 / 1e6,
    );
    println!(
        "after: disk {disk_after} B ({:.2}x), key directory after a restart {} B",
        disk_after as f64 / disk_before as f64,
        k2.memory_bytes()
    );
    println!(
        "reads during the merge: {busy_rate:.0}/s ({failed} failed) = {:.2}x of without",
        busy_rate / idle_rate
    );
}
