//! The key directory: code → where its link record lies in the log
//! (Bitcask's keydir). URLs are not kept here; they are read from the log
//! (through the per-core cache, [`crate::cache`]).
//!
//! **Layout.** 256 shards, each an open-addressing table with linear
//! probing over 12-byte slots: the key + 1 (42 bits; 0 marks an empty
//! slot) and the segment's [`FileIdx`] (22 bits) packed into 8 bytes, then
//! the record's offset (4 bytes). A table grows by half when it is 85% full,
//! so it is 57–85% full and a link costs 14–21 bytes. Keys of 8-character
//! codes (ids past `62^7`, trillions of links away) do not fit in 42 bits
//! and live in a small side map.
//!
//! **Why shared and sharded.** Any core may resolve a code written by any
//! other, so the directory is shared; each shard has its own `RwLock`, so a
//! write (one per new link) locks 1/256 of it, and a table grows one shard
//! at a time, so growing never needs twice the memory of the whole
//! directory. Reads mostly do not reach it at all: the per-core URL cache
//! answers hot codes first.
//!
//! Hand-written because it is the product: the general-purpose maps
//! (hashbrown, scc, dashmap) store a full `u64` key and a 16-byte value per
//! entry at a 50–87% load, 28–48 bytes per link, which is what this replaces.

use std::collections::HashMap;
use std::sync::{PoisonError, RwLock};

use crate::codes::PERMUTED_IDS;
use crate::log::segments::{FileIdx, FILE_IDX_BITS};

/// Where a link record lies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Location {
    /// The segment's index in [`crate::log::segments::SegmentTable`].
    pub file: FileIdx,
    /// The record's byte offset in it.
    pub offset: u32,
}

const SHARDS: usize = 256;
const KEY_BITS: u32 = 64 - FILE_IDX_BITS;
const KEY_MASK: u64 = (1 << KEY_BITS) - 1;
const MIN_CAPACITY: usize = 16;

// Every key of a 7-character code, plus one, fits in the key bits.
const _: () = assert!(PERMUTED_IDS < KEY_MASK);

/// One packed slot: `lo`/`hi` hold `(key + 1) | file << 42`.
#[derive(Debug, Clone, Copy, Default)]
#[repr(C)]
struct Slot {
    lo: u32,
    hi: u32,
    offset: u32,
}

impl Slot {
    fn word(&self) -> u64 {
        u64::from(self.lo) | u64::from(self.hi) << 32
    }

    fn new(key: u64, loc: Location) -> Self {
        let word = (key + 1) | u64::from(loc.file) << KEY_BITS;
        Self {
            lo: word as u32,
            hi: (word >> 32) as u32,
            offset: loc.offset,
        }
    }

    fn location(&self) -> Location {
        Location {
            file: (self.word() >> KEY_BITS) as FileIdx,
            offset: self.offset,
        }
    }
}

#[derive(Debug, Default)]
struct Table {
    slots: Vec<Slot>,
    len: usize,
}

/// A well-mixed 64-bit hash of a key (murmur3's finaliser): its top byte
/// picks the shard, the rest the slot, so even sequential keys (an import
/// of another shortener's codes) spread evenly.
fn mix(mut x: u64) -> u64 {
    x ^= x >> 33;
    x = x.wrapping_mul(0xff51_afd7_ed55_8ccd);
    x ^= x >> 33;
    x = x.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    x ^ (x >> 33)
}

impl Table {
    fn start(hash: u64, capacity: usize) -> usize {
        // Lemire's fast range reduction of the bits below the shard byte.
        (((hash << 8) as u128 * capacity as u128) >> 64) as usize
    }

    /// The slot holding `key`, or the empty slot where it would go.
    fn probe(&self, key: u64, hash: u64) -> (usize, bool) {
        let capacity = self.slots.len();
        let want = key + 1;
        let mut i = Self::start(hash, capacity);
        loop {
            let word = self.slots[i].word();
            if word == 0 {
                return (i, false);
            }
            if word & KEY_MASK == want {
                return (i, true);
            }
            i += 1;
            if i == capacity {
                i = 0;
            }
        }
    }

    fn get(&self, key: u64, hash: u64) -> Option<Location> {
        if self.slots.is_empty() {
            return None;
        }
        match self.probe(key, hash) {
            (i, true) => Some(self.slots[i].location()),
            _ => None,
        }
    }

    fn insert(&mut self, key: u64, hash: u64, loc: Location) -> bool {
        if (self.len + 1) * 100 > self.slots.len() * 85 {
            self.grow((self.slots.len() * 3 / 2).max(MIN_CAPACITY));
        }
        match self.probe(key, hash) {
            (_, true) => false,
            (i, false) => {
                self.slots[i] = Slot::new(key, loc);
                self.len += 1;
                true
            }
        }
    }

    fn grow(&mut self, capacity: usize) {
        if capacity <= self.slots.len() {
            return;
        }
        let old = std::mem::replace(&mut self.slots, vec![Slot::default(); capacity]);
        for slot in old.into_iter().filter(|s| s.word() != 0) {
            let key = (slot.word() & KEY_MASK) - 1;
            let (i, _) = self.probe(key, mix(key));
            self.slots[i] = slot;
        }
    }
}

/// The key directory shared by all cores.
#[derive(Debug)]
pub struct KeyDir {
    shards: Box<[RwLock<Table>]>,
    /// Keys too large for a slot (codes of 8 or more characters).
    big: RwLock<HashMap<u64, Location>>,
}

impl Default for KeyDir {
    fn default() -> Self {
        Self::new()
    }
}

/// Locks for reading; a poisoned lock (a panic aborts the process, so
/// only in tests) is used as is: the tables are never left half-written.
fn read<T>(lock: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    lock.read().unwrap_or_else(PoisonError::into_inner)
}

fn write<T>(lock: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    lock.write().unwrap_or_else(PoisonError::into_inner)
}

impl KeyDir {
    /// An empty directory.
    pub fn new() -> Self {
        Self {
            shards: (0..SHARDS).map(|_| RwLock::default()).collect(),
            big: RwLock::default(),
        }
    }

    fn shard(&self, hash: u64) -> &RwLock<Table> {
        &self.shards[(hash >> 56) as usize]
    }

    /// Where `key`'s link lies, if it exists.
    pub fn get(&self, key: u64) -> Option<Location> {
        if key >= PERMUTED_IDS {
            return read(&self.big).get(&key).copied();
        }
        let hash = mix(key);
        read(self.shard(hash)).get(key, hash)
    }

    /// `true` if `key` exists.
    pub fn contains(&self, key: u64) -> bool {
        self.get(key).is_some()
    }

    /// Records `key` at `loc`. Returns `false`, changing nothing, if the
    /// key already exists: a link, once acknowledged, never changes.
    pub fn insert(&self, key: u64, loc: Location) -> bool {
        if key >= PERMUTED_IDS {
            let mut big = write(&self.big);
            return match big.entry(key) {
                std::collections::hash_map::Entry::Occupied(_) => false,
                std::collections::hash_map::Entry::Vacant(v) => {
                    v.insert(loc);
                    true
                }
            };
        }
        let hash = mix(key);
        write(self.shard(hash)).insert(key, hash, loc)
    }

    /// Moves `key` from `from` to `to`, only if it is still at `from`
    /// (compare-and-swap, under the shard's lock): the merge moves a live
    /// record, and a concurrent update or delete of the key wins over it.
    /// Returns whether the key moved.
    pub fn replace(&self, key: u64, from: Location, to: Location) -> bool {
        if key >= PERMUTED_IDS {
            return match write(&self.big).get_mut(&key) {
                Some(loc) if *loc == from => {
                    *loc = to;
                    true
                }
                _ => false,
            };
        }
        let hash = mix(key);
        let mut table = write(self.shard(hash));
        if table.slots.is_empty() {
            return false;
        }
        match table.probe(key, hash) {
            (i, true) if table.slots[i].location() == from => {
                table.slots[i] = Slot::new(key, to);
                true
            }
            _ => false,
        }
    }

    /// Makes room for `additional` more links at once (recovery knows how
    /// many its hint files hold), so loading them never regrows a table.
    pub fn reserve(&self, additional: usize) {
        let per_shard = additional.div_ceil(SHARDS);
        for shard in self.shards.iter() {
            let mut table = write(shard);
            let want = (table.len + per_shard) * 100 / 80 + 1;
            table.grow(want.max(MIN_CAPACITY));
        }
    }

    /// Links stored.
    pub fn len(&self) -> usize {
        let small: usize = self
            .shards
            .iter()
            .map(|s| s.read().unwrap_or_else(PoisonError::into_inner).len)
            .sum();
        small
            + self
                .big
                .read()
                .unwrap_or_else(PoisonError::into_inner)
                .len()
    }

    /// `true` when nothing is stored.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Bytes of memory the tables hold (capacity, not just what is used).
    pub fn memory_bytes(&self) -> usize {
        let small: usize = self
            .shards
            .iter()
            .map(|s| {
                s.read().unwrap_or_else(PoisonError::into_inner).slots.len()
                    * std::mem::size_of::<Slot>()
            })
            .sum();
        small
            + self
                .big
                .read()
                .unwrap_or_else(PoisonError::into_inner)
                .capacity()
                * 24
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::sync::Arc;

    fn loc(file: u32, offset: u32) -> Location {
        Location { file, offset }
    }

    #[test]
    fn slots_are_twelve_bytes() {
        assert_eq!(std::mem::size_of::<Slot>(), 12);
    }

    #[test]
    fn inserts_and_lookups_across_growth() {
        let dir = KeyDir::new();
        for key in 0..50_000u64 {
            assert!(dir.insert(key * 7919, loc((key % 1000) as u32, key as u32)));
        }
        assert_eq!(dir.len(), 50_000);
        for key in 0..50_000u64 {
            assert_eq!(
                dir.get(key * 7919),
                Some(loc((key % 1000) as u32, key as u32))
            );
        }
        assert_eq!(dir.get(1), None);
        assert!(!dir.insert(7919, loc(1, 1)), "a link never changes");
        assert_eq!(dir.get(7919), Some(loc(1, 1)));
        let per_link = dir.memory_bytes() as f64 / dir.len() as f64;
        assert!(
            (12.0..=24.0).contains(&per_link),
            "{per_link} bytes per link"
        );
    }

    #[test]
    fn the_largest_values_fit() {
        let dir = KeyDir::new();
        let max_file = (1 << FILE_IDX_BITS) - 1;
        assert!(dir.insert(PERMUTED_IDS - 1, loc(max_file, u32::MAX)));
        assert!(dir.insert(0, loc(0, 0)));
        assert!(dir.insert(u64::MAX, loc(3, 4)), "an 11-character code");
        assert_eq!(dir.get(PERMUTED_IDS - 1), Some(loc(max_file, u32::MAX)));
        assert_eq!(dir.get(0), Some(loc(0, 0)));
        assert_eq!(dir.get(u64::MAX), Some(loc(3, 4)));
        assert_eq!(dir.len(), 3);
    }

    #[test]
    fn reserve_then_load_keeps_every_entry() {
        let dir = KeyDir::new();
        dir.insert(5, loc(1, 2));
        dir.reserve(10_000);
        for key in 100..10_100u64 {
            dir.insert(key, loc(2, key as u32));
        }
        assert_eq!(dir.get(5), Some(loc(1, 2)));
        assert_eq!(dir.get(10_099), Some(loc(2, 10_099)));
    }

    #[test]
    fn concurrent_writers_and_readers() {
        let dir = Arc::new(KeyDir::new());
        let writers: Vec<_> = (0..2u64)
            .map(|t| {
                let dir = dir.clone();
                std::thread::spawn(move || {
                    for i in 0..20_000 {
                        dir.insert(t * 1_000_000 + i, loc(t as u32, i as u32));
                        assert!(dir.contains(t * 1_000_000 + i / 2));
                    }
                })
            })
            .collect();
        for w in writers {
            w.join().unwrap();
        }
        assert_eq!(dir.len(), 40_000);
    }

    #[test]
    fn replace_moves_only_from_the_expected_place() {
        let dir = KeyDir::new();
        dir.insert(9, loc(1, 100));
        dir.insert(u64::MAX, loc(1, 200));
        assert!(!dir.replace(9, loc(1, 101), loc(5, 0)), "moved meanwhile");
        assert!(!dir.replace(10, loc(1, 100), loc(5, 0)), "absent");
        assert_eq!(dir.get(10), None);
        assert!(dir.replace(9, loc(1, 100), loc(5, 8)));
        assert_eq!(dir.get(9), Some(loc(5, 8)));
        assert!(!dir.replace(u64::MAX, loc(1, 100), loc(5, 0)));
        assert!(dir.replace(u64::MAX, loc(1, 200), loc(6, 0)));
        assert_eq!(dir.get(u64::MAX), Some(loc(6, 0)));
        assert_eq!(dir.len(), 2);
        assert!(!KeyDir::new().replace(1, loc(0, 0), loc(1, 1)));
    }

    proptest! {
        #[test]
        fn behaves_like_a_map(keys in proptest::collection::vec(0..PERMUTED_IDS, 1..400)) {
            let dir = KeyDir::new();
            let mut model = HashMap::new();
            for (i, &key) in keys.iter().enumerate() {
                let l = loc(i as u32, key as u32);
                prop_assert_eq!(dir.insert(key, l), !model.contains_key(&key));
                model.entry(key).or_insert(l);
            }
            prop_assert_eq!(dir.len(), model.len());
            for (key, l) in &model {
                prop_assert_eq!(dir.get(*key), Some(*l));
            }
        }
    }
}
