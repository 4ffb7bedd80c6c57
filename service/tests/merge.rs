//! The merge (`log::merge`): what it keeps, what it gives back, the key
//! directory's compare-and-swap, and crash safety: a crash at every step
//! of a merge, then recovery, loses no live link and leaves no link in two
//! places.
//!
//! Histories hold creates (codes and aliases), updates (a higher version)
//! and deletes (tombstones), loaded by recovery's version rule: superseded
//! records are dead, tombstones in force are carried forward, so a deleted
//! link stays deleted across merges and restarts. `MERGE_SEEDS=n` runs more
//! random histories.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::io;
use std::path::Path;

use shorty_service::keydir::{Ident, KeyDir, Location, Target, TOMBSTONE};
use shorty_service::log::hint::{build_hint, hint_file_name, HintEntry};
use shorty_service::log::merge::{
    finish_interrupted, merging_file_name, plan, record_bytes, run_merge, run_merge_forgetting,
    usage_from_hint, Forgetting, Liveness, Manifest, MergeFiles, MANIFEST_FILE,
};
use shorty_service::log::record::{
    decode_record, Decoded, Keyed, Link, Record, Tombstone, ALIAS_KEY, MARKER_LEN, NO_ID, SEAL_LEN,
};
use shorty_service::log::recovery::{recover_segment, RecoveryFiles};
use shorty_service::log::scan::scan_segment;
use shorty_service::log::segments::{
    encode_sealed_records, parse_segment_file_name, segment_file_name, SegmentRef, SegmentTable,
};
use shorty_service::log::tlv;

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

/// A key as the tests name it: `k123` for a code's, `aNAME` for an alias's.
fn ident_name(entry: &HintEntry) -> String {
    match &entry.alias {
        Some(alias) if entry.key == ALIAS_KEY => format!("a{alias}"),
        _ => format!("k{}", entry.key),
    }
}

/// One record of a history, owned.
#[derive(Clone)]
enum Spec {
    Link {
        key: u64,
        alias: Option<String>,
        url: String,
        options: Vec<u8>,
    },
    Tomb {
        key: u64,
        alias: Option<String>,
        version: u64,
        at_ms: u64,
    },
}

impl Spec {
    fn link(key: u64, alias: Option<String>, version: u64) -> Self {
        let mut options = Vec::new();
        if let Some(alias) = &alias {
            tlv::put(&mut options, tlv::ALIAS, alias.as_bytes());
        }
        if version > 0 {
            tlv::put(&mut options, tlv::VERSION, &version.to_le_bytes());
        }
        Spec::Link {
            key,
            alias,
            url: url(key, version),
            options,
        }
    }

    fn keyed(&self) -> Keyed<'_> {
        match self {
            Spec::Link {
                key, url, options, ..
            } => Keyed::Link(Link {
                key: *key,
                id: if *key == ALIAS_KEY { NO_ID } else { *key },
                url: url.as_bytes(),
                options,
            }),
            Spec::Tomb {
                key,
                alias,
                version,
                at_ms,
            } => Keyed::Tombstone(Tombstone {
                key: *key,
                version: *version,
                deleted_at_ms: *at_ms,
                alias: alias.as_deref().map(str::as_bytes),
            }),
        }
    }

    fn name(&self) -> String {
        let (key, alias) = match self {
            Spec::Link { key, alias, .. } | Spec::Tomb { key, alias, .. } => (key, alias),
        };
        match alias {
            Some(alias) => format!("a{alias}"),
            None => format!("k{key}"),
        }
    }
}

/// Writes sealed, hinted segment `number` of `records` (batches of 3) and
/// registers it.
fn put_segment(disk: &mut Disk, table: &SegmentTable, number: u64, records: &[Spec]) -> u32 {
    let keyed: Vec<Keyed<'_>> = records.iter().map(Spec::keyed).collect();
    let batches: Vec<&[Keyed<'_>]> = keyed.chunks(3).collect();
    let bytes = encode_sealed_records(number, &batches);
    let hint = build_hint(number, &bytes).unwrap();
    disk.files.insert(segment_file_name(number), bytes);
    disk.files.insert(hint_file_name(number), hint);
    table.register(number).unwrap()
}

/// Loads segment `number` (at `idx`) into `keydir` by the version rule.
fn load(disk: &mut Disk, keydir: &KeyDir, number: u64, idx: u32) {
    recover_segment(disk, number, |entry| {
        keydir
            .recover(entry.ident(), entry.target(idx), entry.version)
            .unwrap();
    })
    .unwrap();
}

/// What every key must read as: its URL, or `None` once deleted.
type Expected = HashMap<String, Option<String>>;

/// A directory of `segments` sealed, hinted segments (numbered from 1),
/// registered in a table and loaded into a key directory. Each record
/// creates a link (a code's, one in six an alias's) or, `mutate_share` %
/// of the time, updates (a new version of the URL) or deletes (a
/// tombstone) a live one written earlier: superseded records and deleted
/// links are the dead bytes, tombstones and newest versions the live ones.
struct World {
    disk: Disk,
    table: SegmentTable,
    keydir: KeyDir,
    /// Key name → URL of every live link, `None` for a deleted one.
    live: Expected,
}

fn world(seed: u64, segments: u64, per_segment: u64, mutate_share: u64) -> World {
    let numbers: Vec<u64> = (1..=segments).collect();
    world_numbered(seed, &numbers, per_segment, mutate_share)
}

/// As [`world`], the history's `i`th segment written as number
/// `numbers[i]`: several cores write at once, so a later record of a key
/// can lie in a lower-numbered segment (the one its core opened first).
fn world_numbered(seed: u64, numbers: &[u64], per_segment: u64, mutate_share: u64) -> World {
    let segments = numbers.len() as u64;
    let mut rng = Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1);
    let mut disk = Disk::default();
    let table = SegmentTable::new(Path::new("/d"), 1);
    let keydir = KeyDir::new();
    let mut expected = Expected::new();
    // Live keys: (key, alias, version).
    let mut alive: Vec<(u64, Option<String>, u64)> = Vec::new();
    let mut next_key = 1_000u64;
    for number in 1..=segments {
        let mut records = Vec::new();
        let mut touched = HashSet::new();
        for _ in 0..per_segment {
            let pick = (!alive.is_empty() && rng.below(100) < mutate_share)
                .then(|| rng.below(alive.len() as u64) as usize)
                // One record of a key per segment: the writer's order within
                // a segment is not what the test is about.
                .filter(|&i| !touched.contains(&alive[i].0));
            let Some(i) = pick else {
                next_key += 1 + rng.below(5);
                let alias = rng.below(6).eq(&0).then(|| format!("al-{next_key}"));
                let key = if alias.is_some() { ALIAS_KEY } else { next_key };
                let spec = Spec::link(key, alias.clone(), 0);
                expected.insert(spec.name(), Some(url(key, 0)));
                touched.insert(if alias.is_some() { next_key } else { key });
                alive.push((if alias.is_some() { next_key } else { key }, alias, 0));
                records.push(spec);
                continue;
            };
            let (id, alias, version) = alive[i].clone();
            touched.insert(id);
            let key = if alias.is_some() { ALIAS_KEY } else { id };
            if rng.below(2) == 0 {
                let spec = Spec::link(key, alias, version + 1);
                expected.insert(spec.name(), Some(url(key, version + 1)));
                alive[i].2 += 1;
                records.push(spec);
            } else {
                let spec = Spec::Tomb {
                    key,
                    alias,
                    version: version + 1,
                    at_ms: 1_000 * number,
                };
                expected.insert(spec.name(), None);
                alive.swap_remove(i);
                records.push(spec);
            }
        }
        let number = numbers[number as usize - 1];
        let idx = put_segment(&mut disk, &table, number, &records);
        load(&mut disk, &keydir, number, idx);
    }
    World {
        disk,
        table,
        keydir,
        live: expected,
    }
}

/// A fresh table and key directory over `disk`'s segments 1..=n, as a
/// restart before the merge would load them.
fn reload(disk: &mut Disk, n: u64) -> (SegmentTable, KeyDir) {
    let table = SegmentTable::new(Path::new("/d"), 1);
    let keydir = KeyDir::new();
    for number in 1..=n {
        let idx = table.register(number).unwrap();
        load(disk, &keydir, number, idx);
    }
    (table, keydir)
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
/// then recover every segment by the version rule (the highest version of
/// a key wins). Panics on two records of one version; returns every key
/// that has a record: its URL, or `None` if its newest is a tombstone.
fn restart(disk: &mut Disk) -> Expected {
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
    let mut found: HashMap<String, (u64, u64, u32)> = HashMap::new();
    for number in numbers {
        recover_segment(disk, number, |entry| {
            let here = (entry.version, number, entry.offset);
            match found.get(&ident_name(&entry)) {
                Some(first) if first.0 == entry.version => {
                    panic!(
                        "{} twice at version {}: {first:?} and {here:?}",
                        ident_name(&entry),
                        entry.version
                    )
                }
                Some(first) if first.0 > entry.version => {}
                _ => {
                    found.insert(ident_name(&entry), here);
                }
            }
        })
        .unwrap();
    }
    found
        .into_iter()
        .map(|(name, (_, number, offset))| {
            let url = (offset != TOMBSTONE).then(|| read_url(disk, number, offset));
            (name, url)
        })
        .collect()
}

/// Where the key directory has `name`'s live link: its URL.
fn resolve(w: &World, name: &str) -> Option<String> {
    let ident = match name.strip_prefix('a') {
        Some(alias) => Ident::Alias(alias),
        None => Ident::Key(name[1..].parse().unwrap()),
    };
    match w.keydir.lookup(ident)?.0 {
        Target::Live(loc) => {
            let number = w.table.get(loc.file).unwrap().number;
            Some(read_url(&w.disk, number, loc.offset))
        }
        Target::Deleted { .. } => None,
    }
}

#[test]
fn a_merge_keeps_live_links_gives_back_dead_bytes_and_moves_the_key_directory() {
    let mut w = world(7, 4, 40, 60);
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
    // The first segments are superseded or deleted most.
    assert!(usages[0].dead_ratio() > 0.4, "{usages:?}");
    assert!(!plan(&usages, 0.4, u64::MAX).is_empty());
    assert!(plan(&usages, 0.99, u64::MAX).is_empty());
    let in_force = w.live.len() as u64;
    let journal = w.disk.journal.clone();
    let report = {
        let (keydir, live) = (&w.keydir, &w.live);
        run_merge(&mut w.disk, &w.table, keydir, &inputs, 64 * 1024, || {
            // The swap is done before the wait for readers.
            for name in live.keys() {
                let ident = match name.strip_prefix('a') {
                    Some(alias) => Ident::Alias(alias),
                    None => Ident::Key(name[1..].parse().unwrap()),
                };
                let file = match keydir.lookup(ident).unwrap().0 {
                    Target::Live(loc) => loc.file,
                    Target::Deleted { file, .. } => file,
                };
                assert!(file >= 4, "moved first");
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
    // Every key's record in force moved: live links and tombstones.
    assert_eq!(report.moved, in_force);
    assert_eq!(report.lost_races, 0);
    assert_eq!(report.inputs, [1, 2, 3, 4]);
    assert!(!disk_has(&w.disk, 1) && !w.disk.files.contains_key(&hint_file_name(1)));
    let after: u64 = w.disk.files.values().map(|f| f.len() as u64).sum();
    assert!(after < before * 3 / 4, "{after} of {before} bytes left");
    assert_eq!(report.reclaimed(), report.bytes_before - report.bytes_after);
    // Every key resolves through the key directory at its new place:
    // updated ones to their newest URL, deleted ones to nothing.
    assert!(w.live.values().any(Option::is_none), "the history deletes");
    for (name, want) in &w.live {
        assert_eq!(&resolve(&w, name), want, "{name}");
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
) -> (shorty_service::log::record::Seal, Vec<HintEntry>) {
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
    fn is_live(&self, entry: &HintEntry, file: u32) -> bool {
        self.keydir.is_live(entry, file)
    }
    fn moved(&self, entry: &HintEntry, from: u32, to: &HintEntry, to_file: u32) -> bool {
        if entry.key == self.key {
            // The update lands first.
            let ident = entry.ident();
            assert!(self
                .keydir
                .replace(ident, entry.target(from), Target::Live(self.elsewhere)));
        }
        self.keydir.moved(entry, from, to, to_file)
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
    let locations: Vec<_> = w.live.keys().map(|k| (k.clone(), resolve(&w, k))).collect();
    w.disk.creates_left = Some(1);
    let err = run_merge(&mut w.disk, &w.table, &w.keydir, &inputs, 700, || {}).unwrap_err();
    assert!(err.to_string().contains(".merging"), "{err}");
    assert_eq!(w.disk.files, files_before, "outputs removed at once");
    for (k, loc) in locations {
        assert_eq!(resolve(&w, &k), loc);
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
    let key = w
        .live
        .keys()
        .filter_map(|n| n.strip_prefix('k')?.parse().ok())
        .min()
        .unwrap();
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
fn superseded_records_are_dead_tombstones_in_force_are_carried_forward() {
    // Segment 1: codes 5, 6, 7 and alias "promo"; segment 2: 5 updated,
    // 7 and "promo" deleted; segment 3: "promo" claimed again after its
    // quarantine. Merging 1 and 2 keeps 5's newest version, 6, and 7's
    // tombstone (a restart would otherwise resurrect nothing here, but the
    // merge cannot know that segment 3 and the active segments hold no
    // older record of 7); "promo"'s tombstone is superseded: dropped.
    let mut disk = Disk::default();
    let table = SegmentTable::new(Path::new("/d"), 1);
    let keydir = KeyDir::new();
    let promo = || Some("promo".to_string());
    let tomb = |key, alias, version| Spec::Tomb {
        key,
        alias,
        version,
        at_ms: 42,
    };
    let history = [
        vec![
            Spec::link(5, None, 0),
            Spec::link(6, None, 0),
            Spec::link(7, None, 0),
            Spec::link(ALIAS_KEY, promo(), 1),
        ],
        vec![
            Spec::link(5, None, 1),
            tomb(7, None, 1),
            tomb(ALIAS_KEY, promo(), 2),
        ],
        vec![Spec::link(ALIAS_KEY, promo(), 3)],
    ];
    for (n, records) in (1..).zip(&history) {
        let idx = put_segment(&mut disk, &table, n, records);
        load(&mut disk, &keydir, n, idx);
    }
    let inputs = [table.get(0).unwrap(), table.get(1).unwrap()];
    let report = run_merge(&mut disk, &table, &keydir, &inputs, 1 << 20, || {}).unwrap();
    assert_eq!(
        (report.moved, report.lost_races),
        (3, 0),
        "5 v1, 6, 7's tombstone"
    );
    let out = segment_file_name(report.outputs[0]);
    let len = |spec: &Spec| match spec.keyed() {
        Keyed::Link(l) => l.encoded_len(),
        Keyed::Tombstone(t) => t.encoded_len(),
    };
    let kept = len(&history[1][0]) + len(&history[0][1]) + len(&history[1][1]);
    let framing = disk.files[&segment_file_name(3)].len() - len(&history[2][0]);
    assert_eq!(
        disk.files[&out].len(),
        kept + framing,
        "exactly those three"
    );
    let (target, state) = keydir.lookup(Ident::Key(7)).unwrap();
    assert!(
        matches!(target, Target::Deleted { file, deleted_at_ms: 42 } if file == report_idx(&table, report.outputs[0]))
    );
    assert_eq!(state.installed, 1);
    let want: Expected = [
        ("k5", Some(url(5, 1))),
        ("k6", Some(url(6, 0))),
        ("k7", None),
        ("apromo", Some(url(ALIAS_KEY, 3))),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    assert_eq!(restart(&mut disk), want);
    // A second merge of the output keeps the tombstone again (segment 3
    // is outside it), and nothing else changes.
    let (table, keydir) = reload_numbers(&mut disk);
    let merged = table
        .get(table.len() as u32 - 1)
        .filter(|s| s.number == report.outputs[0])
        .unwrap();
    run_merge(&mut disk, &table, &keydir, &[merged], 1 << 20, || {}).unwrap();
    assert_eq!(restart(&mut disk), want);
}

/// The table index of segment `number`.
fn report_idx(table: &SegmentTable, number: u64) -> u32 {
    (0..table.len() as u32)
        .find(|&i| table.get(i).is_some_and(|s| s.number == number))
        .unwrap()
}

/// A table and key directory of every segment on `disk`, in number order.
fn reload_numbers(disk: &mut Disk) -> (SegmentTable, KeyDir) {
    let table = SegmentTable::new(Path::new("/d"), 1);
    let keydir = KeyDir::new();
    let numbers: Vec<u64> = disk
        .files
        .keys()
        .filter_map(|n| parse_segment_file_name(n))
        .collect();
    for number in numbers {
        let idx = table.register(number).unwrap();
        load(disk, &keydir, number, idx);
    }
    (table, keydir)
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
                let mut disk = base.disk.clone();
                let (table, keydir) = reload(&mut disk, 3);
                let mut w = World {
                    disk,
                    table,
                    keydir,
                    live: base.live.clone(),
                };
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
                    // Exactly the history's newest: no update lost, no
                    // deleted link back, nothing never written.
                    let got = restart(disk);
                    assert_eq!(got, w.live, "seed {seed} crash {crash_at}/{partial}");
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

// ---- Forgetting tombstones (issue 19, round 4) ----

/// Lets every tombstone go, so only the merge's own proof decides.
struct ForgetAll;

impl Forgetting for ForgetAll {
    fn may_forget(&self, _: &HintEntry) -> bool {
        true
    }
}

/// Loads `bytes` (segment `number` at `idx`, sealed or not) into `keydir`
/// by scanning it, as recovery does for a segment being written.
fn load_scanned(keydir: &KeyDir, bytes: &[u8], number: u64, idx: u32) {
    scan_segment(bytes, number, |record, offset| {
        let entry = HintEntry::of(&record, offset);
        keydir
            .recover(entry.ident(), entry.target(idx), entry.version)
            .unwrap();
    })
    .unwrap();
}

fn tomb(key: u64, alias: Option<String>, version: u64) -> Spec {
    Spec::Tomb {
        key,
        alias,
        version,
        at_ms: 42,
    }
}

fn expected(pairs: &[(&str, Option<String>)]) -> Expected {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.clone()))
        .collect()
}

/// Segment 1: codes 7, 9, 12 and alias "promo"; segment 2 (another
/// core's, opened first, so a lower number would not tell age either):
/// all four deleted, and 8 too; segment 3, sealed, not merged: 9's
/// first record (written by a third core); segment 4, still being
/// written (no seal, no hint): 8's first record. Merging 1 and 2 forgets
/// 7's, 12's and "promo"'s tombstones (nothing older is left) and keeps
/// 8's and 9's: dropping them would bring 8 and 9 back at the next
/// restart. A later merge that takes segment 3 forgets 9's.
#[test]
fn a_tombstone_is_forgotten_only_when_no_older_record_of_its_key_is_left() {
    let mut disk = Disk::default();
    let table = SegmentTable::new(Path::new("/d"), 1);
    let keydir = KeyDir::new();
    let promo = || Some("promo".to_string());
    let one = [
        Spec::link(7, None, 0),
        Spec::link(12, None, 0),
        Spec::link(ALIAS_KEY, promo(), 0),
    ];
    let three = [Spec::link(9, None, 0)];
    let two = [
        tomb(7, None, 1),
        tomb(8, None, 1),
        tomb(9, None, 1),
        tomb(12, None, 1),
        tomb(ALIAS_KEY, promo(), 1),
    ];
    let i1 = put_segment(&mut disk, &table, 1, &one);
    let i3 = put_segment(&mut disk, &table, 3, &three);
    // Segment 4: written, not sealed.
    let four = {
        let spec = Spec::link(8, None, 0);
        let sealed = encode_sealed_records(4, &[&[spec.keyed()]]);
        sealed[..sealed.len() - SEAL_LEN].to_vec()
    };
    disk.files.insert(segment_file_name(4), four.clone());
    let i4 = table.register(4).unwrap();
    let i2 = put_segment(&mut disk, &table, 2, &two);
    load(&mut disk, &keydir, 1, i1);
    load(&mut disk, &keydir, 3, i3);
    load_scanned(&keydir, &four, 4, i4);
    load(&mut disk, &keydir, 2, i2);
    let inputs = [table.get(i1).unwrap(), table.get(i2).unwrap()];
    let report = run_merge_forgetting(
        &mut disk,
        &table,
        &keydir,
        &ForgetAll,
        &inputs,
        1 << 20,
        || {},
    )
    .unwrap();
    assert_eq!(report.forgotten, 3, "{report:?}");
    assert_eq!(report.tombstones_kept, 2, "{report:?}");
    for ident in [Ident::Key(7), Ident::Key(12), Ident::Alias("promo")] {
        assert_eq!(keydir.lookup(ident), None, "{ident:?} forgotten");
        assert!(!keydir.names(ident));
    }
    // The merge's record of them, named by its first input, for imports
    // (review 6): exactly the forgotten ones, with their delete times.
    let record = &disk.files[&shorty_service::log::merge::forgotten_file_name(1)];
    let mut named: Vec<(u64, Option<String>, bool)> =
        shorty_service::log::merge::decode_forgotten(record, 1)
            .unwrap()
            .map(|e| {
                (
                    e.key,
                    e.alias.as_deref().map(String::from),
                    e.is_tombstone(),
                )
            })
            .collect();
    named.sort();
    let mut want_named = vec![
        (7, None, true),
        (12, None, true),
        (ALIAS_KEY, Some("promo".to_owned()), true),
    ];
    want_named.sort();
    assert_eq!(named, want_named);
    for key in [8, 9] {
        assert!(matches!(
            keydir.lookup(Ident::Key(key)),
            Some((Target::Deleted { .. }, _))
        ));
    }
    // The unsealed segment is still there as it was: the merge only read it.
    assert_eq!(disk.files[&segment_file_name(4)], four);
    // A restart: 8 and 9 stay deleted, 7, 12 and "promo" are unknown.
    let want = expected(&[("k8", None), ("k9", None)]);
    let mut copy = disk.clone();
    assert_eq!(restart(&mut copy), want);
    // Segment 3 merged with the output: 9's first record goes, and so can
    // its tombstone; 8's stays (segment 4).
    let output = report.outputs[0];
    let out_idx = report_idx(&table, output);
    let inputs = [table.get(i3).unwrap(), table.get(out_idx).unwrap()];
    let report = run_merge_forgetting(
        &mut disk,
        &table,
        &keydir,
        &ForgetAll,
        &inputs,
        1 << 20,
        || {},
    )
    .unwrap();
    assert_eq!((report.forgotten, report.tombstones_kept), (1, 1));
    assert_eq!(keydir.lookup(Ident::Key(9)), None);
    assert_eq!(restart(&mut disk), expected(&[("k8", None)]));
}

/// A key directory beside which key 11 is deleted by another core while
/// the merge runs: after the merge copied 11's link, before it reads the
/// tombstone.
struct DeletedMidway<'a> {
    keydir: &'a KeyDir,
    tombstone_file: u32,
}

impl Liveness for DeletedMidway<'_> {
    fn is_live(&self, entry: &HintEntry, file: u32) -> bool {
        let live = self.keydir.is_live(entry, file);
        if live && entry.key == 11 && !entry.is_tombstone() {
            assert!(self.keydir.install(
                Ident::Key(11),
                Target::Deleted {
                    file: self.tombstone_file,
                    deleted_at_ms: 42,
                },
                1,
            ));
        }
        live
    }
    fn moved(&self, entry: &HintEntry, from: u32, to: &HintEntry, to_file: u32) -> bool {
        self.keydir.moved(entry, from, to, to_file)
    }
    fn forget(&self, entry: &HintEntry, file: u32) -> bool {
        Liveness::forget(self.keydir, entry, file)
    }
}

/// The merge's own output can hold an older record of a key: 11's link,
/// copied while it was in force, then deleted before the merge reached the
/// tombstone. The tombstone must be carried forward (the copy lost its
/// race and is dead, but a restart would load it).
#[test]
fn a_tombstone_whose_link_this_merge_copied_is_kept() {
    let mut disk = Disk::default();
    let table = SegmentTable::new(Path::new("/d"), 1);
    let keydir = KeyDir::new();
    let i1 = put_segment(
        &mut disk,
        &table,
        1,
        &[Spec::link(11, None, 0), Spec::link(13, None, 0)],
    );
    let i2 = put_segment(&mut disk, &table, 2, &[tomb(11, None, 1)]);
    load(&mut disk, &keydir, 1, i1);
    let live = DeletedMidway {
        keydir: &keydir,
        tombstone_file: i2,
    };
    let inputs = [table.get(i1).unwrap(), table.get(i2).unwrap()];
    let report = run_merge_forgetting(
        &mut disk,
        &table,
        &live,
        &ForgetAll,
        &inputs,
        1 << 20,
        || {},
    )
    .unwrap();
    assert_eq!(report.lost_races, 1, "{report:?}");
    assert_eq!((report.forgotten, report.tombstones_kept), (0, 1));
    assert_eq!(
        restart(&mut disk),
        expected(&[("k11", None), ("k13", Some(url(13, 0)))])
    );
}

/// Restarts and checks `disk` against a history's newest state where
/// tombstones may have been forgotten: a live link reads its URL, a
/// deleted one is deleted or unknown, nothing else is there.
fn check_forgetting(disk: &mut Disk, live: &Expected, context: &str) {
    let got = restart(disk);
    for (name, want) in live {
        match want {
            Some(url) => assert_eq!(got.get(name), Some(&Some(url.clone())), "{name} {context}"),
            None => assert!(
                matches!(got.get(name), None | Some(None)),
                "{name} came back {context}: {:?}",
                got.get(name)
            ),
        }
    }
    for name in got.keys() {
        assert!(live.contains_key(name), "{name} never written {context}");
    }
}

/// Histories written by several cores at once (a later record of a key
/// in a lower-numbered segment), merged with every tombstone allowed to
/// go, cut by a crash at every step of the merge and of the restart that
/// follows: no live link lost, no deleted link back, nothing twice; and
/// tombstones do go when the whole history is merged.
#[test]
fn a_crash_at_any_step_of_a_merge_that_forgets_tombstones_brings_nothing_back() {
    let seeds: u64 = std::env::var("MERGE_SEEDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(4);
    let order = [3, 1, 2];
    let mut forgotten = 0;
    let mut kept = 0;
    for seed in 0..seeds {
        let base = world_numbered(seed, &order, 12, 60);
        let segment_bytes = 700 + 100 * seed;
        // Two merges: of segments 1 and 2 only (3, not merged, holds the
        // history's oldest records), and of all three.
        for merged in [&[1u64, 2][..], &[1, 2, 3]] {
            let pick = |table: &SegmentTable| -> Vec<SegmentRef> {
                sealed_refs(table)
                    .into_iter()
                    .filter(|s| merged.contains(&s.number))
                    .collect()
            };
            let total = {
                let mut disk = base.disk.clone();
                let (table, keydir) = reload(&mut disk, 3);
                let report = run_merge_forgetting(
                    &mut disk,
                    &table,
                    &keydir,
                    &ForgetAll,
                    &pick(&table),
                    segment_bytes,
                    || {},
                )
                .unwrap();
                forgotten += report.forgotten;
                kept += report.tombstones_kept;
                check_forgetting(&mut disk, &base.live, &format!("seed {seed} {merged:?}"));
                disk.ops
            };
            for crash_at in 0..total {
                for partial in 0..4 {
                    let mut disk = base.disk.clone();
                    let (table, keydir) = reload(&mut disk, 3);
                    disk.crash_at = Some(crash_at);
                    disk.partial = partial;
                    let result = run_merge_forgetting(
                        &mut disk,
                        &table,
                        &keydir,
                        &ForgetAll,
                        &pick(&table),
                        segment_bytes,
                        || {},
                    );
                    assert!(result.is_err(), "crash {crash_at} happened");
                    disk.revive();
                    let mut again = disk.clone();
                    again.ops = 0;
                    again.crash_at = Some(crash_at % 3);
                    again.partial = partial;
                    let _ = finish_interrupted(&mut again);
                    again.revive();
                    for disk in [&mut disk, &mut again] {
                        let context = format!("seed {seed} {merged:?} crash {crash_at}/{partial}");
                        check_forgetting(disk, &base.live, &context);
                        let files = disk.files.clone();
                        check_forgetting(disk, &base.live, &context);
                        assert_eq!(disk.files, files);
                    }
                }
            }
        }
    }
    assert!(forgotten > 0, "some tombstones go");
    assert!(kept > 0, "some are kept: segment 3 holds older records");
}

/// The lifecycle's rule: an alias's tombstone goes once its quarantine is
/// over; a code's once its id is below the floor.
#[test]
fn the_lifecycle_lets_a_tombstone_go_after_the_quarantine_or_below_the_id_floor() {
    use shorty_service::codes::{CodeKey, Codec};
    use shorty_service::log::merge::LifecycleForgetting;
    let codec = Codec::new(&CodeKey([3; 16]));
    let rule = |now_ms, id_floor| LifecycleForgetting {
        codec: codec.clone(),
        id_floor,
        now_ms,
        quarantine_ms: 1_000,
    };
    let alias = HintEntry {
        key: ALIAS_KEY,
        offset: TOMBSTONE,
        version: 2,
        deleted_at_ms: 5_000,
        alias: Some("promo".into()),
        owner: None,
    };
    assert!(!rule(5_999, u64::MAX).may_forget(&alias), "quarantined");
    assert!(rule(6_000, 0).may_forget(&alias));
    let code = HintEntry {
        key: codec.key_of(41),
        alias: None,
        ..alias.clone()
    };
    assert!(
        !rule(u64::MAX, 41).may_forget(&code),
        "41 may still be handed out"
    );
    assert!(rule(0, 42).may_forget(&code));
}

/// A segment moved aside with its hint left behind (the README's remedy
/// for a damaged segment) may be moved back: while its hint is there, a
/// merge forgets no tombstone, since the moved segment may hold an older
/// record of the key (review 5: a deleted link came back when its segment
/// was moved back after a merge). Once its hint is gone too, the segment
/// is gone for good and tombstones go as usual.
#[test]
fn no_tombstone_is_forgotten_while_a_segment_is_moved_aside() {
    let mut disk = Disk::default();
    let table = SegmentTable::new(Path::new("/d"), 1);
    let keydir = KeyDir::new();
    let i1 = put_segment(&mut disk, &table, 1, &[Spec::link(7, None, 0)]);
    let i2 = put_segment(&mut disk, &table, 2, &[tomb(7, None, 1)]);
    load(&mut disk, &keydir, 1, i1);
    load(&mut disk, &keydir, 2, i2);
    // Segment 1 moved aside, its hint left behind.
    let aside = disk.files.remove(&segment_file_name(1)).unwrap();
    let inputs = [table.get(i2).unwrap()];
    let report = run_merge_forgetting(
        &mut disk,
        &table,
        &keydir,
        &ForgetAll,
        &inputs,
        1 << 20,
        || {},
    )
    .unwrap();
    assert_eq!(
        (report.forgotten, report.tombstones_kept),
        (0, 1),
        "{report:?}"
    );
    // Moved back: 7 is still deleted after a restart.
    let mut back = disk.clone();
    back.files.insert(segment_file_name(1), aside);
    assert_eq!(restart(&mut back), expected(&[("k7", None)]));
    // Its hint gone, but the marker a refused start leaves beside a
    // damaged segment there (the segment a crash damages is usually being
    // written, with no hint: review 6): still kept.
    disk.files.remove(&hint_file_name(1));
    let marker = shorty_service::log::segments::damaged_file_name(1);
    disk.files.insert(marker.clone(), b"refused".to_vec());
    // The previous merge's output, merged again.
    let merge_again = |disk: &mut Disk, report: &shorty_service::log::merge::MergeReport| {
        let output = report_idx(&table, report.outputs[0]);
        run_merge_forgetting(
            disk,
            &table,
            &keydir,
            &ForgetAll,
            &[table.get(output).unwrap()],
            1 << 20,
            || {},
        )
        .unwrap()
    };
    let report = merge_again(&mut disk, &report);
    assert_eq!(
        (report.forgotten, report.tombstones_kept),
        (0, 1),
        "{report:?}"
    );
    // Given up for good (hint and marker deleted): the merge forgets it.
    disk.files.remove(&marker);
    let report = merge_again(&mut disk, &report);
    assert_eq!(report.forgotten, 1, "{report:?}");
}
