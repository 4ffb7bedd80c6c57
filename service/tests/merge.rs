//! The merge (`log::merge`): what it keeps, what it gives back, the key
//! directory's compare-and-swap, and crash safety: a crash at every step
//! of a merge, then recovery, loses no live link and leaves no link in two
//! places.
//!
//! Dead records are made the way updates and deletes will make them: a key
//! the key directory maps to a later record (superseded) or to nothing
//! (deleted). `MERGE_SEEDS=n` runs more random directories.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::io;
use std::path::Path;

use shorty_service::keydir::{KeyDir, Location};
use shorty_service::log::hint::{build_hint, hint_file_name};
use shorty_service::log::merge::{
    finish_interrupted, merging_file_name, plan, record_bytes, run_merge, usage_from_hint,
    Liveness, Manifest, MergeFiles, MANIFEST_FILE,
};
use shorty_service::log::record::{decode_record, Decoded, Link, Record, MARKER_LEN, SEAL_LEN};
use shorty_service::log::recovery::{recover_segment, RecoveryFiles};
use shorty_service::log::segments::{
    encode_sealed_segment, parse_segment_file_name, segment_file_name, SegmentRef, SegmentTable,
};

/// A directory in memory whose process "dies" at mutation number
/// `crash_at`: that operation happens in part (a create leaves a prefix of
/// its bytes, an atomic write or a rename happens or not, a removal
/// happens or not) and every later one fails.
#[derive(Default, Clone)]
struct Disk {
    files: BTreeMap<String, Vec<u8>>,
    ops: usize,
    crash_at: Option<usize>,
    /// How the crashing operation goes: a create keeps this share of its
    /// bytes (0..=3 of 4); the others happen when it is odd.
    partial: usize,
    dead: bool,
    /// Creates that succeed before the disk is full (ENOSPC, the process
    /// lives on).
    creates_left: Option<usize>,
    /// Every mutation, in order, by name (`remove NAME`, `rename TO`, ...),
    /// shared with the test so it can note its own events in between.
    journal: std::rc::Rc<std::cell::RefCell<Vec<String>>>,
}

fn missing() -> io::Error {
    io::ErrorKind::NotFound.into()
}

fn crashed() -> io::Error {
    io::Error::other("crashed")
}

impl Disk {
    /// `Ok(true)`: do it; `Ok(false)`: the crash hits it (partly done by the
    /// caller); `Err`: the process is dead.
    fn mutate(&mut self) -> io::Result<bool> {
        if self.dead {
            return Err(crashed());
        }
        let n = self.ops;
        self.ops += 1;
        self.journal.borrow_mut().push(format!("op {n}"));
        if self.crash_at == Some(n) {
            self.dead = true;
            return Ok(false);
        }
        Ok(true)
    }

    fn revive(&mut self) {
        self.dead = false;
        self.crash_at = None;
    }
}

impl RecoveryFiles for Disk {
    fn read(&mut self, name: &str) -> io::Result<Vec<u8>> {
        self.files.get(name).cloned().ok_or_else(missing)
    }
    fn read_tail(&mut self, name: &str, n: usize) -> io::Result<(u64, Vec<u8>)> {
        let f = self.files.get(name).ok_or_else(missing)?;
        Ok((f.len() as u64, f[f.len().saturating_sub(n)..].to_vec()))
    }
    fn read_if_exists(&mut self, name: &str) -> io::Result<Option<Vec<u8>>> {
        Ok(self.files.get(name).cloned())
    }
    fn truncate_and_append(&mut self, name: &str, len: u64, tail: &[u8]) -> io::Result<()> {
        if !self.mutate()? {
            return Err(crashed());
        }
        let f = self.files.get_mut(name).ok_or_else(missing)?;
        f.truncate(len as usize);
        f.extend_from_slice(tail);
        Ok(())
    }
    fn remove(&mut self, name: &str) -> io::Result<()> {
        if !self.mutate()? && self.partial.is_multiple_of(2) {
            return Err(crashed());
        }
        self.files.remove(name);
        self.journal.borrow_mut().push(format!("remove {name}"));
        if self.dead {
            return Err(crashed());
        }
        Ok(())
    }
    fn write_atomic(&mut self, name: &str, bytes: &[u8]) -> io::Result<()> {
        if !self.mutate()? && self.partial.is_multiple_of(2) {
            return Err(crashed());
        }
        self.files.insert(name.to_owned(), bytes.to_vec());
        if self.dead {
            return Err(crashed());
        }
        Ok(())
    }
}

impl MergeFiles for Disk {
    fn create_synced(&mut self, name: &str, bytes: &[u8]) -> io::Result<()> {
        if let Some(left) = &mut self.creates_left {
            if *left == 0 {
                // Half of it landed before the space ran out.
                self.files
                    .insert(name.to_owned(), bytes[..bytes.len() / 2].to_vec());
                return Err(io::ErrorKind::StorageFull.into());
            }
            *left -= 1;
        }
        if !self.mutate()? {
            let keep = bytes.len() * self.partial / 4;
            self.files.insert(name.to_owned(), bytes[..keep].to_vec());
            return Err(crashed());
        }
        self.files.insert(name.to_owned(), bytes.to_vec());
        Ok(())
    }
    fn rename(&mut self, from: &str, to: &str) -> io::Result<()> {
        if !self.mutate()? && self.partial.is_multiple_of(2) {
            return Err(crashed());
        }
        let f = self.files.remove(from).ok_or_else(missing)?;
        assert!(!self.files.contains_key(to), "a rename never replaces");
        self.files.insert(to.to_owned(), f);
        self.journal.borrow_mut().push(format!("rename {to}"));
        if self.dead {
            return Err(crashed());
        }
        Ok(())
    }
    fn list(&mut self) -> io::Result<Vec<String>> {
        Ok(self.files.keys().cloned().collect())
    }
}

/// A small xorshift, so a failing seed reproduces.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

fn url(key: u64, version: u64) -> String {
    format!("https://example.com/{key}/v{version}")
}

/// A directory of `segments` sealed, hinted segments (numbered from 1),
/// registered in a table and loaded into a key directory. Each key is
/// written once; `deleted` of them are then dropped from the key
/// directory (dead, and a restart would bring them back: no tombstones
/// yet, so they count as "may come back", never as "must").
struct World {
    disk: Disk,
    table: SegmentTable,
    keydir: KeyDir,
    /// Key → URL of every live link.
    live: HashMap<u64, String>,
    /// Keys that are dead but whose records a restart may bring back.
    deleted: HashSet<u64>,
}

fn world(seed: u64, segments: u64, per_segment: u64, delete_share: u64) -> World {
    let mut rng = Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1);
    let mut disk = Disk::default();
    let table = SegmentTable::new(Path::new("/d"), 1);
    let keydir = KeyDir::new();
    let mut live = HashMap::new();
    let mut deleted = HashSet::new();
    let mut next_key = 1_000u64;
    for number in 1..=segments {
        let urls: Vec<(u64, String)> = (0..per_segment)
            .map(|_| {
                next_key += 1 + rng.below(5);
                (next_key, url(next_key, 0))
            })
            .collect();
        let links: Vec<Link<'_>> = urls
            .iter()
            .map(|(k, u)| Link {
                key: *k,
                id: *k,
                url: u.as_bytes(),
            })
            .collect();
        let batches: Vec<&[Link<'_>]> = links.chunks(3).collect();
        let bytes = encode_sealed_segment(number, &batches);
        let hint = build_hint(number, &bytes).unwrap();
        disk.files.insert(segment_file_name(number), bytes);
        disk.files.insert(hint_file_name(number), hint);
        let idx = table.register(number).unwrap();
        recover_segment(&mut disk, number, |key, offset| {
            assert!(keydir.insert(key, Location { file: idx, offset }));
        })
        .unwrap();
        for (k, u) in urls {
            if rng.below(100) < delete_share {
                deleted.insert(k);
            } else {
                live.insert(k, u);
            }
        }
    }
    // Deletes: the key directory forgets the key (what a tombstone does).
    let fresh = KeyDir::new();
    for (key, _) in live.iter() {
        fresh.insert(*key, keydir.get(*key).unwrap());
    }
    World {
        disk,
        table,
        keydir: fresh,
        live,
        deleted,
    }
}

fn sealed_refs(table: &SegmentTable) -> Vec<SegmentRef> {
    (0..table.len() as u32)
        .filter_map(|i| table.get(i))
        .collect()
}

/// The URL of the record at `loc` of segment `number`.
fn read_url(disk: &Disk, number: u64, offset: u32) -> String {
    let bytes = &disk.files[&segment_file_name(number)];
    match decode_record(&bytes[offset as usize..]) {
        Decoded::Record(Record::Link(link), _) => String::from_utf8(link.url.to_vec()).unwrap(),
        other => panic!("no link at {number}:{offset}: {other:?}"),
    }
}

/// Restarts on `disk` as the server does: settle an interrupted merge,
/// then recover every segment. Panics on a duplicate; returns key → URL.
fn restart(disk: &mut Disk) -> HashMap<u64, String> {
    finish_interrupted(disk).unwrap();
    assert!(
        disk.files.keys().all(|n| !n.ends_with(".merging")),
        "uncommitted outputs are discarded"
    );
    assert!(!disk.files.contains_key(MANIFEST_FILE));
    let numbers: Vec<u64> = disk
        .files
        .keys()
        .filter_map(|n| parse_segment_file_name(n))
        .collect();
    let mut found: HashMap<u64, (u64, u32)> = HashMap::new();
    for number in numbers {
        recover_segment(disk, number, |key, offset| {
            if let Some(first) = found.insert(key, (number, offset)) {
                panic!(
                    "key {key} in two places: {first:?} and {:?}",
                    (number, offset)
                );
            }
        })
        .unwrap();
    }
    found
        .into_iter()
        .map(|(key, (number, offset))| (key, read_url(disk, number, offset)))
        .collect()
}

#[test]
fn a_merge_keeps_live_links_gives_back_dead_bytes_and_moves_the_key_directory() {
    let mut w = world(7, 4, 40, 70);
    let inputs = sealed_refs(&w.table);
    let before: u64 = w.disk.files.values().map(|f| f.len() as u64).sum();
    let usages: Vec<_> = inputs
        .iter()
        .map(|s| {
            let bytes = &w.disk.files[&segment_file_name(s.number)];
            let hint = &w.disk.files[&hint_file_name(s.number)];
            let (seal, entries) = hint_entries(s.number, bytes, hint);
            usage_from_hint(
                s.number,
                s.idx,
                bytes.len() as u64,
                &seal,
                record_bytes(bytes, s.number).unwrap(),
                entries,
                &w.keydir,
            )
        })
        .collect();
    for u in &usages {
        assert!(u.dead_ratio() > 0.5, "{u:?}");
    }
    let picked = plan(&usages, 0.5, u64::MAX);
    assert_eq!(picked.len(), 4);
    assert!(plan(&usages, 0.99, u64::MAX).is_empty());
    let journal = w.disk.journal.clone();
    let report = {
        let (keydir, live) = (&w.keydir, &w.live);
        run_merge(&mut w.disk, &w.table, keydir, &inputs, 64 * 1024, || {
            // The swap is done before the wait for readers.
            for (key, _) in live.iter() {
                assert!(keydir.get(*key).unwrap().file >= 4, "moved first");
            }
            journal.borrow_mut().push("retire".into());
        })
        .unwrap()
    };
    // The inputs were still there while readers drained: a read that
    // looked a key up before the swap completes. Removed only after.
    let journal = journal.borrow();
    let at = |what: &str| journal.iter().position(|e| e == what);
    let retire = at("retire").expect("retire called");
    let first_removal = at(&format!("remove {}", segment_file_name(1))).unwrap();
    assert!(retire < first_removal, "{journal:?}");
    assert!(at(&format!("rename {}", segment_file_name(5))).unwrap() < retire);
    assert_eq!(report.moved, w.live.len() as u64);
    assert_eq!(report.lost_races, 0);
    assert_eq!(report.inputs, [1, 2, 3, 4]);
    assert!(!disk_has(&w.disk, 1) && !w.disk.files.contains_key(&hint_file_name(1)));
    let after: u64 = w.disk.files.values().map(|f| f.len() as u64).sum();
    assert!(after < before / 2, "{after} of {before} bytes left");
    assert_eq!(report.reclaimed(), report.bytes_before - report.bytes_after);
    // Every live link resolves through the key directory, at its new place.
    for (key, want) in &w.live {
        let loc = w.keydir.get(*key).unwrap();
        let number = w.table.get(loc.file).unwrap().number;
        assert!(number >= 5, "new segments are numbered past every old one");
        assert_eq!(&read_url(&w.disk, number, loc.offset), want);
    }
    // And after a restart, with their hints.
    assert_eq!(restart(&mut w.disk), w.live);
    for n in &report.outputs {
        assert!(w.disk.files.contains_key(&hint_file_name(*n)));
    }
    // Merged output holds no dead byte: nothing to merge again.
    assert!(plan(&usages_of(&mut w), 0.0, u64::MAX).is_empty());
}

fn disk_has(disk: &Disk, number: u64) -> bool {
    disk.files.contains_key(&segment_file_name(number))
}

fn hint_entries(
    number: u64,
    bytes: &[u8],
    hint: &[u8],
) -> (shorty_service::log::record::Seal, Vec<(u64, u32)>) {
    let (len, tail) = (bytes.len() as u64, &bytes[bytes.len() - SEAL_LEN..]);
    let seal = shorty_service::log::recovery::seal_at_end(len, tail).unwrap();
    let entries = shorty_service::log::hint::decode_hint(hint, number, &seal)
        .unwrap()
        .collect();
    (seal, entries)
}

fn usages_of(w: &mut World) -> Vec<shorty_service::log::merge::Usage> {
    sealed_refs(&w.table)
        .iter()
        .filter(|s| disk_has(&w.disk, s.number))
        .map(|s| {
            let bytes = &w.disk.files[&segment_file_name(s.number)];
            let hint = &w.disk.files[&hint_file_name(s.number)];
            let (seal, entries) = hint_entries(s.number, bytes, hint);
            usage_from_hint(
                s.number,
                s.idx,
                bytes.len() as u64,
                &seal,
                record_bytes(bytes, s.number).unwrap(),
                entries,
                &w.keydir,
            )
        })
        .collect()
}

/// A key directory beside which another core updates `key` while the
/// merge runs: after the merge read it, before the swap.
struct Racing<'a> {
    keydir: &'a KeyDir,
    key: u64,
    elsewhere: Location,
}

impl Liveness for Racing<'_> {
    fn is_live(&self, key: u64, at: Location) -> bool {
        self.keydir.is_live(key, at)
    }
    fn moved(&self, key: u64, from: Location, to: Location) -> bool {
        if key == self.key {
            // The update lands first.
            assert!(self.keydir.replace(key, from, self.elsewhere));
        }
        self.keydir.moved(key, from, to)
    }
}

#[test]
fn commit_markers_are_dead_bytes_and_a_merged_segment_has_none() {
    // Nothing deleted: only the markers between batches are dead.
    let mut w = world(5, 2, 30, 0);
    for u in usages_of(&mut w) {
        // 30 links in batches of 3: 9 markers.
        assert_eq!(u.dead(), 9 * MARKER_LEN as u64, "{u:?}");
    }
    let inputs = sealed_refs(&w.table);
    let picked = plan(&usages_of(&mut w), 0.0, u64::MAX);
    assert_eq!(picked.len(), 2, "0% merges any segment with a dead byte");
    run_merge(&mut w.disk, &w.table, &w.keydir, &inputs, 1 << 20, || {}).unwrap();
    let after = usages_of(&mut w);
    assert_eq!(after.len(), 1);
    assert_eq!(after[0].dead(), 0, "{after:?}");
    assert!(plan(&after, 0.0, u64::MAX).is_empty());
    assert_eq!(restart(&mut w.disk), w.live);
}

#[test]
fn a_full_disk_before_the_commit_changes_nothing_and_leaves_no_output() {
    let mut w = world(9, 3, 20, 50);
    let inputs = sealed_refs(&w.table);
    let files_before = w.disk.files.clone();
    let locations: Vec<_> = w.live.keys().map(|k| (*k, w.keydir.get(*k))).collect();
    w.disk.creates_left = Some(1);
    let err = run_merge(&mut w.disk, &w.table, &w.keydir, &inputs, 700, || {}).unwrap_err();
    assert!(err.to_string().contains(".merging"), "{err}");
    assert_eq!(w.disk.files, files_before, "outputs removed at once");
    for (k, loc) in locations {
        assert_eq!(w.keydir.get(k), loc);
    }
}

#[test]
fn an_input_found_damaged_midway_leaves_nothing_behind() {
    // Outputs are written as they fill; the third input is damaged, so the
    // outputs of the first two must go again.
    let mut w = world(13, 3, 20, 0);
    let inputs = sealed_refs(&w.table);
    let third = segment_file_name(3);
    let at = w.disk.files[&third].len() / 2;
    w.disk.files.get_mut(&third).unwrap()[at] ^= 1;
    let files_before = w.disk.files.clone();
    let err = run_merge(&mut w.disk, &w.table, &w.keydir, &inputs, 700, || {}).unwrap_err();
    assert!(err.to_string().contains(&third), "{err}");
    assert!(
        w.disk.ops > 1,
        "outputs were written before the damage was met"
    );
    assert_eq!(w.disk.files, files_before);
}

#[test]
fn a_concurrent_update_wins_over_the_merge() {
    let mut w = world(3, 2, 30, 0);
    let inputs = sealed_refs(&w.table);
    let key = *w.live.keys().min().unwrap();
    let elsewhere = Location {
        file: 999,
        offset: 26,
    };
    let racing = Racing {
        keydir: &w.keydir,
        key,
        elsewhere,
    };
    let report = run_merge(&mut w.disk, &w.table, &racing, &inputs, 1 << 20, || {}).unwrap();
    assert_eq!(report.lost_races, 1);
    assert_eq!(report.moved, w.live.len() as u64 - 1);
    assert_eq!(w.keydir.get(key), Some(elsewhere), "the update stays");
}

#[test]
fn superseded_records_are_dead_and_the_newest_is_kept() {
    // Key 5 written in segment 1, then again (an update) in segment 2: the
    // key directory points at segment 2's record.
    let mut disk = Disk::default();
    let table = SegmentTable::new(Path::new("/d"), 1);
    let keydir = KeyDir::new();
    let old = url(5, 0);
    let new = url(5, 1);
    let other = url(6, 0);
    let s1 = encode_sealed_segment(
        1,
        &[&[
            Link {
                key: 5,
                id: 5,
                url: old.as_bytes(),
            },
            Link {
                key: 6,
                id: 6,
                url: other.as_bytes(),
            },
        ]],
    );
    let s2 = encode_sealed_segment(
        2,
        &[&[Link {
            key: 5,
            id: 5,
            url: new.as_bytes(),
        }]],
    );
    for (n, bytes) in [(1, s1), (2, s2)] {
        disk.files
            .insert(hint_file_name(n), build_hint(n, &bytes).unwrap());
        disk.files.insert(segment_file_name(n), bytes);
        let idx = table.register(n).unwrap();
        recover_segment(&mut disk, n, |key, offset| {
            // The newest (the later segment) wins, as versions will decide.
            let loc = Location { file: idx, offset };
            if !keydir.insert(key, loc) {
                let prev = keydir.get(key).unwrap();
                assert!(keydir.replace(key, prev, loc));
            }
        })
        .unwrap();
    }
    let input = table.get(0).unwrap();
    let report = run_merge(&mut disk, &table, &keydir, &[input], 1 << 20, || {}).unwrap();
    assert_eq!((report.moved, report.lost_races), (1, 0), "only key 6");
    let loc = keydir.get(5).unwrap();
    assert_eq!(loc.file, 1, "key 5 still at segment 2");
    assert_eq!(read_url(&disk, 2, loc.offset), new);
    assert_eq!(restart(&mut disk), HashMap::from([(5, new), (6, other)]));
}

#[test]
fn the_manifest_round_trips_and_every_flip_is_caught() {
    let m = Manifest {
        inputs: vec![1, 2, 9],
        outputs: vec![40],
    };
    let bytes = m.encode();
    assert_eq!(Manifest::decode(&bytes), Some(m.clone()));
    for at in 0..bytes.len() {
        let mut bad = bytes.clone();
        bad[at] ^= 0x10;
        assert_eq!(Manifest::decode(&bad), None, "flip at {at}");
    }
    for len in 0..bytes.len() {
        assert_eq!(Manifest::decode(&bytes[..len]), None);
    }
    assert_eq!(
        Manifest::decode(&Manifest::default().encode()),
        Some(Manifest::default())
    );
}

#[test]
fn a_damaged_manifest_refuses_the_start() {
    let mut disk = Disk::default();
    disk.files.insert(MANIFEST_FILE.into(), b"junk".to_vec());
    let err = finish_interrupted(&mut disk).unwrap_err();
    assert!(err.to_string().contains("MERGE"), "{err}");
}

/// A crash at every mutation of a merge (and at every mutation of the
/// recovery that follows it), each leaving the crashing operation done in
/// part in every way: after the restart every live link is there with its
/// URL, nothing is in two places, nothing appears that was never written.
#[test]
fn a_crash_at_any_step_of_a_merge_loses_nothing_and_duplicates_nothing() {
    let seeds: u64 = std::env::var("MERGE_SEEDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(4);
    let mut histories = 0;
    for seed in 0..seeds {
        // Small segments so a merge writes several outputs.
        let base = world(seed, 3, 12, 60);
        let segment_bytes = 700 + 100 * seed;
        // Count the mutations of an uninterrupted merge.
        let total = {
            let mut w = world(seed, 3, 12, 60);
            let inputs = sealed_refs(&w.table);
            run_merge(
                &mut w.disk,
                &w.table,
                &w.keydir,
                &inputs,
                segment_bytes,
                || {},
            )
            .unwrap();
            w.disk.ops
        };
        assert!(total >= 8, "{total} steps");
        for crash_at in 0..total {
            for partial in 0..4 {
                let mut w = World {
                    disk: base.disk.clone(),
                    table: SegmentTable::new(Path::new("/d"), 1),
                    keydir: KeyDir::new(),
                    live: base.live.clone(),
                    deleted: base.deleted.clone(),
                };
                for n in 1..=3 {
                    w.table.register(n).unwrap();
                }
                for (k, _) in base.live.iter() {
                    w.keydir.insert(*k, base.keydir.get(*k).unwrap());
                }
                w.disk.crash_at = Some(crash_at);
                w.disk.partial = partial;
                let inputs = sealed_refs(&w.table);
                let result = run_merge(
                    &mut w.disk,
                    &w.table,
                    &w.keydir,
                    &inputs,
                    segment_bytes,
                    || {},
                );
                assert!(result.is_err(), "crash {crash_at} happened");
                w.disk.revive();
                // A crash during the restart's own settling, too.
                let mut again = w.disk.clone();
                again.ops = 0;
                again.crash_at = Some(crash_at % 3);
                again.partial = partial;
                let _ = finish_interrupted(&mut again);
                again.revive();
                for disk in [&mut w.disk, &mut again] {
                    let got = restart(disk);
                    for (key, want) in &w.live {
                        assert_eq!(
                            got.get(key),
                            Some(want),
                            "seed {seed} crash {crash_at}/{partial}: key {key}"
                        );
                    }
                    for key in got.keys() {
                        assert!(
                            w.live.contains_key(key) || w.deleted.contains(key),
                            "seed {seed}: key {key} was never written"
                        );
                    }
                    // A second restart changes nothing.
                    let files = disk.files.clone();
                    assert_eq!(restart(disk), got);
                    assert_eq!(disk.files, files);
                }
                histories += 1;
            }
        }
    }
    assert!(histories > 0);
}

#[test]
fn an_uncommitted_output_is_discarded_and_a_committed_one_finished() {
    let mut w = world(11, 2, 10, 50);
    let inputs = sealed_refs(&w.table);
    // Uncommitted: only a `.merging` file.
    w.disk
        .files
        .insert(merging_file_name(77), b"half a segment".to_vec());
    let done = finish_interrupted(&mut w.disk).unwrap();
    assert_eq!(done.discarded, [merging_file_name(77)]);
    assert!(done.rolled_forward.is_none() && done.rolled_back.is_none());
    // Committed, but an output was moved aside: rolled back, inputs kept.
    let mut disk = w.disk.clone();
    disk.files.insert(
        MANIFEST_FILE.into(),
        Manifest {
            inputs: vec![1, 2],
            outputs: vec![3, 4],
        }
        .encode(),
    );
    disk.files.insert(
        segment_file_name(3),
        w.disk.files[&segment_file_name(1)].clone(),
    );
    let done = finish_interrupted(&mut disk).unwrap();
    assert!(done.rolled_back.is_some());
    assert!(disk_has(&disk, 1) && disk_has(&disk, 2) && !disk_has(&disk, 3));
    // A full merge for comparison: rolled forward when it completes.
    let report = run_merge(&mut w.disk, &w.table, &w.keydir, &inputs, 1 << 20, || {}).unwrap();
    assert!(!disk_has(&w.disk, 1));
    assert_eq!(report.outputs.len(), 1);
}
