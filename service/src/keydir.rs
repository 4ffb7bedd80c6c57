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
//! **Mutations** (docs/round3-design.md §4). A deleted key keeps its slot
//! as a *tombstone* (offset [`TOMBSTONE`]) until the merge drops it, so a
//! deleted generated code is never handed out again and a deleted alias's
//! quarantine is known. Keys that were ever updated, deleted, or are being
//! mutated right now also have a [`KeyState`] in their shard's small side
//! map (the version installed, the highest version reserved by a mutation
//! in flight, when it was deleted): memory only for mutated keys, nothing
//! for the generated links that are never touched. A version is taken
//! under the shard's write lock as one more than the highest installed *or
//! reserved*, so two cores mutating one key never take the same version;
//! on durability a record is installed only if its version is higher than
//! the installed one. Recovery applies the same rule ([`KeyDir::recover`]).
//! Aliases that are not codes live in a side map keyed by their text with
//! the same rules ([`Ident::Alias`]).
//!
//! **Invalidation.** Every installed mutation bumps [`KeyDir::epoch`] and
//! records its key in a short ring; a core whose cache saw an older epoch
//! evicts the keys mutated since (or everything, if it fell further behind
//! than the ring remembers) before its next lookup: one atomic load per
//! request when nothing changed.
//!
//! Hand-written because it is the product: the general-purpose maps
//! (hashbrown, scc, dashmap) store a full `u64` key and a 16-byte value per
//! entry at a 50–87% load, 28–48 bytes per link, which is what this replaces.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError, RwLock};

use crate::cache::MixHasher;

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

/// The offset of a tombstone's slot: no record starts there (segments are
/// bounded far below 4 GiB).
pub const TOMBSTONE: u32 = u32::MAX;

/// Mutated keys an epoch ring remembers; a core further behind clears its
/// whole cache.
pub const EPOCH_RING: usize = 4096;

/// What a key's slot holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// A live link's record.
    Live(Location),
    /// Deleted at this instant (Unix ms).
    Deleted {
        /// The segment its tombstone lies in.
        file: FileIdx,
        /// When.
        deleted_at_ms: u64,
    },
}

/// A mutated key's bookkeeping.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct KeyState {
    /// The version installed.
    pub installed: u64,
    /// The highest version a mutation in flight took (0: none).
    pub reserved: u64,
    /// When it was deleted (Unix ms), if its slot is a tombstone.
    pub deleted_at_ms: u64,
}

/// Which key: a code's (generated, imported, or a 7-character alias), or
/// an alias that is not a code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Ident<'a> {
    /// A code key.
    Key(u64),
    /// An alias of the side map.
    Alias(&'a str),
}

/// An owned [`Ident`].
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum OwnedIdent {
    /// A code key.
    Key(u64),
    /// An alias of the side map.
    Alias(Box<str>),
}

impl OwnedIdent {
    /// Borrowed.
    pub fn as_ident(&self) -> Ident<'_> {
        match self {
            OwnedIdent::Key(key) => Ident::Key(*key),
            OwnedIdent::Alias(alias) => Ident::Alias(alias),
        }
    }
}

/// Why a key cannot be claimed for a new link.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Claim {
    /// A live link holds it, or a create of it is in flight.
    Taken,
    /// Deleted, and quarantined until this instant (Unix ms).
    Quarantined {
        /// When it may be claimed again.
        until_ms: u64,
    },
}

/// Two records of one key with the same version: damage (or two writers
/// that did not take versions from one key directory). Recovery refuses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SameVersion {
    /// The version both have.
    pub version: u64,
    /// What the key directory held already.
    pub existing: Target,
}

type VersionMap<K> = HashMap<K, KeyState, std::hash::BuildHasherDefault<MixHasher>>;

/// One key's view for the mutation rules, wherever it is stored.
trait Cell {
    fn target(&self) -> Option<Target>;
    fn state(&self) -> KeyState;
    fn set_target(&mut self, target: Target);
    fn set_state(&mut self, state: KeyState);
}

/// The version a new mutation takes, reserved.
fn reserve(cell: &mut (impl Cell + ?Sized)) -> u64 {
    let mut state = cell.state();
    let version = state.installed.max(state.reserved) + 1;
    state.reserved = version;
    cell.set_state(state);
    version
}

/// Why a mutation could not begin ([`KeyDir::begin_mutation`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mutation {
    /// No live link has this name (never made, or deleted).
    NotLive,
    /// Another change of it is in flight: retry once it is answered.
    Busy,
}

/// Installs `target` at `version` if it is newer than what is installed;
/// clears the reservation it held. `Ok(false)`: overtaken (a newer version
/// is installed), `Err`: the same version is installed already.
fn install(
    cell: &mut (impl Cell + ?Sized),
    target: Target,
    version: u64,
) -> Result<bool, SameVersion> {
    let mut state = cell.state();
    if state.reserved == version {
        state.reserved = 0;
    }
    let result = match cell.target() {
        Some(existing) if version == state.installed => Err(SameVersion { version, existing }),
        Some(_) if version < state.installed => Ok(false),
        _ => {
            cell.set_target(target);
            state.installed = version;
            state.deleted_at_ms = match target {
                Target::Deleted { deleted_at_ms, .. } => deleted_at_ms,
                Target::Live(_) => 0,
            };
            Ok(true)
        }
    };
    cell.set_state(state);
    result
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
    /// Mutated keys only.
    versions: VersionMap<u64>,
}

/// The keys too large for a slot.
#[derive(Debug, Default)]
struct Big {
    slots: HashMap<u64, Location>,
    versions: VersionMap<u64>,
}

/// One entry of the alias side map.
#[derive(Debug, Clone, Copy, Default)]
struct AliasEntry {
    target: Option<Location>,
    state: KeyState,
}

fn live_or_tombstone(loc: Location, state: KeyState) -> Target {
    if loc.offset == TOMBSTONE {
        Target::Deleted {
            file: loc.file,
            deleted_at_ms: state.deleted_at_ms,
        }
    } else {
        Target::Live(loc)
    }
}

fn slot_of(target: Target) -> Location {
    match target {
        Target::Live(loc) => loc,
        Target::Deleted { file, .. } => Location {
            file,
            offset: TOMBSTONE,
        },
    }
}

fn put_state<K: std::hash::Hash + Eq>(map: &mut VersionMap<K>, key: K, state: KeyState) {
    if state == KeyState::default() {
        map.remove(&key);
    } else {
        map.insert(key, state);
    }
}

struct TableCell<'a> {
    table: &'a mut Table,
    key: u64,
    hash: u64,
}

impl Cell for TableCell<'_> {
    fn target(&self) -> Option<Target> {
        let loc = self.table.get(self.key, self.hash)?;
        Some(live_or_tombstone(loc, self.state()))
    }
    fn state(&self) -> KeyState {
        self.table
            .versions
            .get(&self.key)
            .copied()
            .unwrap_or_default()
    }
    fn set_target(&mut self, target: Target) {
        self.table.set(self.key, self.hash, slot_of(target));
    }
    fn set_state(&mut self, state: KeyState) {
        put_state(&mut self.table.versions, self.key, state);
    }
}

struct BigCell<'a> {
    big: &'a mut Big,
    key: u64,
}

impl Cell for BigCell<'_> {
    fn target(&self) -> Option<Target> {
        let loc = *self.big.slots.get(&self.key)?;
        Some(live_or_tombstone(loc, self.state()))
    }
    fn state(&self) -> KeyState {
        self.big
            .versions
            .get(&self.key)
            .copied()
            .unwrap_or_default()
    }
    fn set_target(&mut self, target: Target) {
        self.big.slots.insert(self.key, slot_of(target));
    }
    fn set_state(&mut self, state: KeyState) {
        put_state(&mut self.big.versions, self.key, state);
    }
}

impl Cell for AliasEntry {
    fn target(&self) -> Option<Target> {
        Some(live_or_tombstone(self.target?, self.state))
    }
    fn state(&self) -> KeyState {
        self.state
    }
    fn set_target(&mut self, target: Target) {
        self.target = Some(slot_of(target));
    }
    fn set_state(&mut self, state: KeyState) {
        self.state = state;
    }
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

    /// Sets `key`'s slot, inserting it if needed.
    fn set(&mut self, key: u64, hash: u64, loc: Location) {
        if !self.insert(key, hash, loc) {
            let (i, _) = self.probe(key, hash);
            self.slots[i] = Slot::new(key, loc);
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

    /// Removes `key`'s slot (backward-shift deletion: the entries after it
    /// in its probe run move up, so every probe still finds its key
    /// without a deleted marker); shrinks the table once it is under a
    /// third full, so slots given back by the merge are memory given back.
    fn remove(&mut self, key: u64, hash: u64) -> bool {
        if self.slots.is_empty() {
            return false;
        }
        let (mut hole, found) = self.probe(key, hash);
        if !found {
            return false;
        }
        let capacity = self.slots.len();
        let mut i = hole;
        loop {
            i = if i + 1 == capacity { 0 } else { i + 1 };
            let word = self.slots[i].word();
            if word == 0 {
                break;
            }
            let home = Self::start(mix((word & KEY_MASK) - 1), capacity);
            // Moves up unless its home lies cyclically in (hole, i].
            let stays = if hole <= i {
                hole < home && home <= i
            } else {
                hole < home || home <= i
            };
            if !stays {
                self.slots[hole] = self.slots[i];
                hole = i;
            }
        }
        self.slots[hole] = Slot::default();
        self.len -= 1;
        if capacity > MIN_CAPACITY && self.len * 3 < capacity {
            // To about 60% full: well below the 85% that grows it again.
            self.rebuild((self.len * 100 / 60).max(MIN_CAPACITY));
        }
        true
    }

    fn grow(&mut self, capacity: usize) {
        if capacity <= self.slots.len() {
            return;
        }
        self.rebuild(capacity);
    }

    fn rebuild(&mut self, capacity: usize) {
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
    big: RwLock<Big>,
    /// Aliases that are not codes.
    aliases: RwLock<HashMap<Box<str>, AliasEntry>>,
    /// Installed mutations so far.
    epoch: AtomicU64,
    /// The keys of the last [`EPOCH_RING`] mutations, by epoch.
    mutated: Mutex<VecDeque<(u64, u64)>>,
    /// Each API key's links, for listings (only links with an owner).
    owners: crate::owners::OwnerIndex,
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
            aliases: RwLock::default(),
            epoch: AtomicU64::new(0),
            mutated: Mutex::default(),
            owners: crate::owners::OwnerIndex::default(),
        }
    }

    /// Each API key's links, newest first ([`crate::owners`]).
    pub fn owners(&self) -> &crate::owners::OwnerIndex {
        &self.owners
    }

    /// Indexes `ident` under its owner if its record at `version` is the
    /// live one (recovery, after every segment is loaded; the cores, once a
    /// record is installed). `false` when it is not (overtaken, deleted).
    pub fn index_owned(
        &self,
        ident: Ident<'_>,
        version: u64,
        ownership: crate::owners::Ownership,
    ) -> bool {
        let live = matches!(
            self.lookup(ident),
            Some((Target::Live(_), state)) if state.installed == version
        );
        if live {
            let member = match ident {
                Ident::Key(key) => crate::owners::Member::Key(key),
                Ident::Alias(alias) => crate::owners::Member::Alias(alias.into()),
            };
            self.owners.add(
                ownership.owner,
                crate::owners::Entry {
                    created_at_ms: ownership.created_at_ms,
                    member,
                },
            );
        }
        live
    }

    /// Runs `f` on `ident`'s cell under its lock (the write lock).
    fn with_cell<R>(&self, ident: Ident<'_>, f: impl FnOnce(&mut dyn Cell) -> R) -> R {
        match ident {
            Ident::Key(key) if key >= PERMUTED_IDS => {
                let mut big = write(&self.big);
                f(&mut BigCell { big: &mut big, key })
            }
            Ident::Key(key) => {
                let hash = mix(key);
                let mut table = write(self.shard(hash));
                f(&mut TableCell {
                    table: &mut table,
                    key,
                    hash,
                })
            }
            Ident::Alias(alias) => {
                let mut aliases = write(&self.aliases);
                let entry = aliases.entry(alias.into()).or_default();
                let result = f(entry);
                if entry.target.is_none() && entry.state == KeyState::default() {
                    aliases.remove(alias);
                }
                result
            }
        }
    }

    /// What `ident` holds and its state.
    pub fn lookup(&self, ident: Ident<'_>) -> Option<(Target, KeyState)> {
        match ident {
            Ident::Key(key) if key >= PERMUTED_IDS => {
                let big = read(&self.big);
                let cell = big.slots.get(&key)?;
                let state = big.versions.get(&key).copied().unwrap_or_default();
                Some((live_or_tombstone(*cell, state), state))
            }
            Ident::Key(key) => {
                let hash = mix(key);
                let table = read(self.shard(hash));
                let loc = table.get(key, hash)?;
                let state = table.versions.get(&key).copied().unwrap_or_default();
                Some((live_or_tombstone(loc, state), state))
            }
            Ident::Alias(alias) => {
                let aliases = read(&self.aliases);
                let entry = aliases.get(alias)?;
                Some((entry.target()?, entry.state))
            }
        }
    }

    /// Claims `ident` for a new link at `now_ms`: free, or deleted longer
    /// than `quarantine_ms` ago (an alias's; a deleted code is never
    /// reused: pass `u64::MAX`). Returns the version the new link's record
    /// carries, reserved until [`install`](Self::install) or
    /// [`release`](Self::release).
    ///
    /// # Errors
    /// Why it cannot be claimed.
    pub fn claim(&self, ident: Ident<'_>, now_ms: u64, quarantine_ms: u64) -> Result<u64, Claim> {
        self.with_cell(ident, |cell| {
            let state = cell.state();
            if state.reserved != 0 {
                return Err(Claim::Taken);
            }
            match cell.target() {
                None => Ok(reserve(cell)),
                Some(Target::Live(_)) => Err(Claim::Taken),
                Some(Target::Deleted { deleted_at_ms, .. }) => {
                    let until_ms = deleted_at_ms.saturating_add(quarantine_ms);
                    if now_ms >= until_ms {
                        Ok(reserve(cell))
                    } else {
                        Err(Claim::Quarantined { until_ms })
                    }
                }
            }
        })
    }

    /// Begins a mutation (update, delete) of a live `ident`: its record
    /// and the version the mutation's record carries, reserved until
    /// [`install`](Self::install) or [`release`](Self::release).
    ///
    /// One mutation of a key at a time: an update is a read of the
    /// current record, then a whole new record, so two in flight at once
    /// would each start from the same record and the later one would undo
    /// the earlier (a delete, or another update's field), though both were
    /// acknowledged. The second is refused instead ([`Mutation::Busy`]);
    /// its client retries and then starts from the first one's result.
    ///
    /// # Errors
    /// [`Mutation::NotLive`] if it is not live, [`Mutation::Busy`] while
    /// another mutation (or the create) of it is in flight.
    pub fn begin_mutation(&self, ident: Ident<'_>) -> Result<(Location, u64), Mutation> {
        self.with_cell(ident, |cell| match cell.target() {
            Some(Target::Live(_)) if cell.state().reserved != 0 => Err(Mutation::Busy),
            Some(Target::Live(loc)) => Ok((loc, reserve(cell))),
            _ => Err(Mutation::NotLive),
        })
    }

    /// A mutation's record of `version` is durable: installs it unless a
    /// newer one is (then it was overtaken: `false`, still a valid order
    /// of two concurrent requests), and bumps the epoch.
    pub fn install(&self, ident: Ident<'_>, target: Target, version: u64) -> bool {
        let installed = self.with_cell(ident, |cell| install(cell, target, version));
        let installed = installed.unwrap_or(false);
        if installed {
            self.bump(ident);
        }
        installed
    }

    /// A mutation of `version` failed: its reservation is dropped.
    pub fn release(&self, ident: Ident<'_>, version: u64) {
        self.with_cell(ident, |cell| {
            let mut state = cell.state();
            if state.reserved == version {
                state.reserved = 0;
                cell.set_state(state);
            }
        });
    }

    /// Recovery's rule: the highest version of a key wins, whatever file it
    /// came from.
    ///
    /// # Errors
    /// The same version is there already: damage, recovery refuses.
    pub fn recover(
        &self,
        ident: Ident<'_>,
        target: Target,
        version: u64,
    ) -> Result<(), SameVersion> {
        self.with_cell(ident, |cell| install(cell, target, version).map(drop))
    }

    /// Installed mutations so far.
    pub fn epoch(&self) -> u64 {
        self.epoch.load(Ordering::Acquire)
    }

    /// The code keys mutated after epoch `since`, or `None` if the ring no
    /// longer remembers them all (the caller forgets everything it cached).
    pub fn mutated_since(&self, since: u64) -> Option<Vec<u64>> {
        let ring = self.mutated.lock().unwrap_or_else(PoisonError::into_inner);
        let oldest = ring.front().map_or(u64::MAX, |&(epoch, _)| epoch);
        if since + 1 < oldest && self.epoch() > since {
            return None;
        }
        Some(
            ring.iter()
                .filter(|&&(epoch, _)| epoch > since)
                .map(|&(_, key)| key)
                .collect(),
        )
    }

    fn bump(&self, ident: Ident<'_>) {
        let mut ring = self.mutated.lock().unwrap_or_else(PoisonError::into_inner);
        // Under the ring's lock, so epochs enter the ring in order.
        let epoch = self.epoch.load(Ordering::Relaxed) + 1;
        if let Ident::Key(key) = ident {
            if ring.len() == EPOCH_RING {
                ring.pop_front();
            }
            ring.push_back((epoch, key));
        }
        self.epoch.store(epoch, Ordering::Release);
    }

    /// Aliases in the side map, and a rough count of their bytes.
    pub fn alias_memory(&self) -> (usize, usize) {
        let aliases = read(&self.aliases);
        let text: usize = aliases.keys().map(|a| a.len()).sum();
        let table = aliases.capacity() * (std::mem::size_of::<(Box<str>, AliasEntry)>() + 1);
        (aliases.len(), table + text)
    }

    fn shard(&self, hash: u64) -> &RwLock<Table> {
        &self.shards[(hash >> 56) as usize]
    }

    /// Where `key`'s live link lies, if it has one.
    pub fn get(&self, key: u64) -> Option<Location> {
        self.slot(key).filter(|loc| loc.offset != TOMBSTONE)
    }

    /// `key`'s slot: a live link's location, or a tombstone's.
    fn slot(&self, key: u64) -> Option<Location> {
        if key >= PERMUTED_IDS {
            return read(&self.big).slots.get(&key).copied();
        }
        let hash = mix(key);
        read(self.shard(hash)).get(key, hash)
    }

    /// `true` if `ident` is taken, as [`contains`](Self::contains) says
    /// of a key: a live link, a tombstone, or a create in flight (an
    /// alias's entry exists only then).
    pub fn names(&self, ident: Ident<'_>) -> bool {
        match ident {
            Ident::Key(key) => self.contains(key),
            Ident::Alias(alias) => read(&self.aliases).contains_key(alias),
        }
    }

    /// `true` if `key` is taken: a live link, a tombstone (a deleted code
    /// is never handed out again), or a create in flight.
    pub fn contains(&self, key: u64) -> bool {
        if key >= PERMUTED_IDS {
            let big = read(&self.big);
            return big.slots.contains_key(&key) || big.versions.contains_key(&key);
        }
        let hash = mix(key);
        let table = read(self.shard(hash));
        table.get(key, hash).is_some()
            || (!table.versions.is_empty() && table.versions.contains_key(&key))
    }

    /// Starts bringing the slot where a probe for `key` begins into the
    /// cache, and returns at once. A hint: it changes nothing, and a table
    /// rebuilt before the probe only makes it useless.
    ///
    /// Why: slots are spread evenly over a table of up to gigabytes, so
    /// nearly every probe of a new key is a cache miss. A SHORTEN probes
    /// twice (the generator's [`contains`](Self::contains) and the
    /// acknowledgment's [`insert`](Self::insert)), and each miss was a
    /// tenth of a durable SHORTEN's CPU (issue 23). Prefetched a few
    /// requests ahead, or for a whole batch before its inserts, the misses
    /// overlap instead of stalling one by one.
    pub fn prefetch(&self, key: u64) {
        if key >= PERMUTED_IDS {
            return;
        }
        let hash = mix(key);
        let (slots, len) = {
            let table = read(self.shard(hash));
            (table.slots.as_ptr(), table.slots.len())
        };
        // After the lock's release: a locked instruction after the
        // prefetch waits for its line (measured: the release took the
        // whole miss), and a prefetch of a table rebuilt meanwhile is
        // harmless (see `prefetch`).
        if len > 0 {
            crate::prefetch::prefetch(slots.wrapping_add(Table::start(hash, len)));
        }
    }

    /// Records `key` at `loc`. Returns `false`, changing nothing, if the
    /// key already exists: a link, once acknowledged, never changes.
    pub fn insert(&self, key: u64, loc: Location) -> bool {
        if key >= PERMUTED_IDS {
            let mut big = write(&self.big);
            if big.versions.contains_key(&key) {
                return false;
            }
            return match big.slots.entry(key) {
                std::collections::hash_map::Entry::Occupied(_) => false,
                std::collections::hash_map::Entry::Vacant(v) => {
                    v.insert(loc);
                    true
                }
            };
        }
        let hash = mix(key);
        let mut table = write(self.shard(hash));
        if !table.versions.is_empty() && table.versions.contains_key(&key) {
            // A claim in flight.
            return false;
        }
        table.insert(key, hash, loc)
    }

    /// Moves `ident` from `from` to `to` (a live link's record or a
    /// tombstone's segment), only if it still holds `from` (compare-and-swap,
    /// under the shard's lock): the merge moves a record in force, and a
    /// concurrent update or delete of the key wins over it. The version
    /// stays: the record moved is the same record. Returns whether it moved.
    pub fn replace(&self, ident: Ident<'_>, from: Target, to: Target) -> bool {
        self.with_cell(ident, |cell| {
            if cell.target() == Some(from) {
                cell.set_target(to);
                true
            } else {
                false
            }
        })
    }

    /// Forgets `ident` (a merge dropped its tombstone `target` of
    /// `version` from the log: no record of it is left, `log::merge`),
    /// only if it still holds exactly that tombstone and no mutation of it
    /// is in flight; its slot and its version go, as if it never existed.
    /// Returns whether it was forgotten.
    pub fn forget(&self, ident: Ident<'_>, target: Target, version: u64) -> bool {
        let holds = |t: Option<Target>, s: KeyState| {
            t == Some(target)
                && matches!(target, Target::Deleted { .. })
                && s.installed == version
                && s.reserved == 0
        };
        match ident {
            Ident::Key(key) if key >= PERMUTED_IDS => {
                let mut big = write(&self.big);
                let cell = BigCell { big: &mut big, key };
                if !holds(cell.target(), cell.state()) {
                    return false;
                }
                big.slots.remove(&key);
                big.versions.remove(&key);
                true
            }
            Ident::Key(key) => {
                let hash = mix(key);
                let mut table = write(self.shard(hash));
                let cell = TableCell {
                    table: &mut table,
                    key,
                    hash,
                };
                if !holds(cell.target(), cell.state()) {
                    return false;
                }
                table.versions.remove(&key);
                table.remove(key, hash)
            }
            Ident::Alias(alias) => {
                let mut aliases = write(&self.aliases);
                let Some(entry) = aliases.get(alias) else {
                    return false;
                };
                if !holds(entry.target(), entry.state) {
                    return false;
                }
                aliases.remove(alias);
                true
            }
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

    /// Code keys held: links, and tombstones until a merge drops them
    /// (aliases of the side map are not counted: see
    /// [`alias_memory`](Self::alias_memory)).
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
                .slots
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
                .slots
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
        // `u32::MAX` is the tombstone's offset: no record starts there.
        assert!(dir.insert(PERMUTED_IDS - 1, loc(max_file, TOMBSTONE - 1)));
        assert!(dir.insert(0, loc(0, 0)));
        assert!(dir.insert(u64::MAX, loc(3, 4)), "an 11-character code");
        assert_eq!(
            dir.get(PERMUTED_IDS - 1),
            Some(loc(max_file, TOMBSTONE - 1))
        );
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

    const DAY: u64 = 86_400_000;

    #[test]
    fn a_deleted_key_is_never_live_and_never_free_again() {
        let dir = KeyDir::new();
        for key in [5, PERMUTED_IDS + 5] {
            let ident = Ident::Key(key);
            assert!(dir.insert(key, loc(1, 100)));
            let (at, version) = dir.begin_mutation(ident).unwrap();
            assert_eq!((at, version), (loc(1, 100), 1));
            let deleted = Target::Deleted {
                file: 1,
                deleted_at_ms: 50,
            };
            assert!(dir.install(ident, deleted, version));
            assert_eq!(dir.get(key), None, "404 once deleted");
            assert!(dir.contains(key), "the generator skips it");
            assert!(!dir.insert(key, loc(2, 2)), "a SHORTEN cannot take it");
            assert_eq!(dir.begin_mutation(ident), Err(Mutation::NotLive));
            // A deleted code is never reused: its quarantine is forever.
            assert_eq!(
                dir.claim(ident, u64::MAX - 1, u64::MAX),
                Err(Claim::Quarantined { until_ms: u64::MAX })
            );
            assert_eq!(
                dir.lookup(ident),
                Some((
                    deleted,
                    KeyState {
                        installed: 1,
                        reserved: 0,
                        deleted_at_ms: 50
                    }
                ))
            );
        }
    }

    #[test]
    fn an_alias_is_claimed_once_and_again_only_after_its_quarantine() {
        let dir = KeyDir::new();
        let alias = Ident::Alias("promo");
        let v = dir.claim(alias, 0, 30 * DAY).unwrap();
        assert_eq!(
            dir.claim(alias, 0, 30 * DAY),
            Err(Claim::Taken),
            "in flight"
        );
        assert!(dir.install(alias, Target::Live(loc(1, 10)), v));
        assert_eq!(dir.claim(alias, 0, 30 * DAY), Err(Claim::Taken));
        let (_, v) = dir.begin_mutation(alias).unwrap();
        assert!(dir.install(
            alias,
            Target::Deleted {
                file: 1,
                deleted_at_ms: DAY
            },
            v
        ));
        assert_eq!(
            dir.claim(alias, 2 * DAY, 30 * DAY),
            Err(Claim::Quarantined { until_ms: 31 * DAY })
        );
        let again = dir.claim(alias, 31 * DAY, 30 * DAY).unwrap();
        assert!(again > v, "a reclaimed alias's versions go on");
        assert!(dir.install(alias, Target::Live(loc(2, 20)), again));
        assert_eq!(
            dir.lookup(alias).map(|(t, _)| t),
            Some(Target::Live(loc(2, 20)))
        );
        // A failed create gives the alias back.
        let other = Ident::Alias("other");
        let v = dir.claim(other, 0, 0).unwrap();
        dir.release(other, v);
        assert_eq!(dir.lookup(other), None);
        assert!(dir.claim(other, 0, 0).is_ok());
    }

    #[test]
    fn one_mutation_of_a_key_at_a_time_and_versions_only_grow() {
        let dir = Arc::new(KeyDir::new());
        dir.insert(9, loc(0, 0));
        let ident = Ident::Key(9);
        // A second change while the first is in flight is refused: it
        // would start from the same record and undo the first.
        let (_, first) = dir.begin_mutation(ident).unwrap();
        assert_eq!(dir.begin_mutation(ident), Err(Mutation::Busy));
        assert!(dir.install(ident, Target::Live(loc(1, 100)), first));
        let (_, second) = dir.begin_mutation(ident).unwrap();
        assert_eq!((first, second), (1, 2));
        // A failed one frees the key for the next.
        dir.release(ident, second);
        let (_, third) = dir.begin_mutation(ident).unwrap();
        assert_eq!(third, 2, "a released version is taken again");
        assert!(dir.install(ident, Target::Live(loc(2, 200)), third));
        assert_eq!(dir.get(9), Some(loc(2, 200)));
        // Four threads racing: every begun mutation installs, none is
        // overtaken, and the versions installed are 3, 4, ... in order.
        let threads: Vec<_> = (0..4)
            .map(|t| {
                let dir = dir.clone();
                std::thread::spawn(move || {
                    let mut mine = Vec::new();
                    while mine.len() < 200 {
                        match dir.begin_mutation(ident) {
                            Ok((_, v)) => {
                                assert!(dir.install(ident, Target::Live(loc(t, 0)), v));
                                mine.push(v);
                            }
                            Err(Mutation::Busy) => std::thread::yield_now(),
                            Err(Mutation::NotLive) => panic!("the link is live"),
                        }
                    }
                    mine
                })
            })
            .collect();
        let mut all: Vec<u64> = threads
            .into_iter()
            .flat_map(|t| t.join().unwrap())
            .collect();
        all.sort_unstable();
        assert_eq!(
            all,
            (3..3 + 800).collect::<Vec<_>>(),
            "no version taken twice or skipped"
        );
    }

    #[test]
    fn recovery_keeps_the_highest_version_and_refuses_equal_ones() {
        let dir = KeyDir::new();
        let ident = Ident::Key(3);
        // Files are read in any order, by any thread.
        dir.recover(ident, Target::Live(loc(2, 20)), 2).unwrap();
        dir.recover(ident, Target::Live(loc(1, 10)), 0).unwrap();
        dir.recover(ident, Target::Live(loc(1, 30)), 1).unwrap();
        assert_eq!(dir.get(3), Some(loc(2, 20)));
        dir.recover(
            ident,
            Target::Deleted {
                file: 1,
                deleted_at_ms: 7,
            },
            3,
        )
        .unwrap();
        assert_eq!(dir.get(3), None);
        assert_eq!(
            dir.recover(ident, Target::Live(loc(4, 4)), 3),
            Err(SameVersion {
                version: 3,
                existing: Target::Deleted {
                    file: 1,
                    deleted_at_ms: 7
                }
            })
        );
        // A version-0 record twice: today's duplicate key.
        dir.recover(Ident::Key(4), Target::Live(loc(1, 1)), 0)
            .unwrap();
        assert!(dir
            .recover(Ident::Key(4), Target::Live(loc(1, 2)), 0)
            .is_err());
        // Untouched keys keep no side state.
        assert!(read(dir.shard(mix(4))).versions.is_empty());
    }

    #[test]
    fn mutations_are_announced_by_epoch() {
        let dir = KeyDir::new();
        dir.insert(1, loc(0, 0));
        let seen = dir.epoch();
        let (_, v) = dir.begin_mutation(Ident::Key(1)).unwrap();
        assert_eq!(dir.mutated_since(seen), Some(vec![]), "not yet durable");
        dir.install(Ident::Key(1), Target::Live(loc(0, 50)), v);
        assert_eq!(dir.epoch(), seen + 1);
        assert_eq!(dir.mutated_since(seen), Some(vec![1]));
        assert_eq!(dir.mutated_since(dir.epoch()), Some(vec![]));
        for _ in 0..EPOCH_RING {
            let (_, v) = dir.begin_mutation(Ident::Key(1)).unwrap();
            dir.install(Ident::Key(1), Target::Live(loc(0, 50)), v);
        }
        assert_eq!(dir.mutated_since(seen), None, "too far behind: forget all");
    }

    /// The alias side map's cost per alias: run with `--nocapture` to see
    /// it. Bounded so a change that bloats it fails.
    #[test]
    fn bytes_per_alias() {
        let dir = KeyDir::new();
        let n = 20_000;
        for i in 0..n {
            let alias = format!("campaign-{i:08}");
            let v = dir.claim(Ident::Alias(&alias), 0, 0).unwrap();
            dir.install(Ident::Alias(&alias), Target::Live(loc(1, i)), v);
        }
        let (count, bytes) = dir.alias_memory();
        assert_eq!(count, n as usize);
        // The text's heap block is counted at its length: allocators round
        // up to 16 or 32 bytes, so add about 8 more on average.
        let per_alias = bytes as f64 / count as f64;
        eprintln!("alias side map: {per_alias:.1} bytes per 17-byte alias");
        assert!(per_alias < 17.0 + 120.0, "{per_alias} bytes per alias");
    }

    #[test]
    fn replace_moves_only_from_the_expected_place() {
        let dir = KeyDir::new();
        let live = |f, o| Target::Live(loc(f, o));
        dir.insert(9, loc(1, 100));
        dir.insert(u64::MAX, loc(1, 200));
        let (k9, big) = (Ident::Key(9), Ident::Key(u64::MAX));
        assert!(
            !dir.replace(k9, live(1, 101), live(5, 0)),
            "moved meanwhile"
        );
        assert!(
            !dir.replace(Ident::Key(10), live(1, 100), live(5, 0)),
            "absent"
        );
        assert_eq!(dir.get(10), None);
        assert!(dir.replace(k9, live(1, 100), live(5, 8)));
        assert_eq!(dir.get(9), Some(loc(5, 8)));
        assert!(!dir.replace(big, live(1, 100), live(5, 0)));
        assert!(dir.replace(big, live(1, 200), live(6, 0)));
        assert_eq!(dir.get(u64::MAX), Some(loc(6, 0)));
        assert_eq!(dir.len(), 2);
        assert!(!KeyDir::new().replace(Ident::Key(1), live(0, 0), live(1, 1)));
        // A tombstone moves by its segment, keeping its version and time;
        // an absent alias stays absent.
        let alias = Ident::Alias("gone");
        let v = dir.claim(alias, 0, 0).unwrap();
        let dead = |file| Target::Deleted {
            file,
            deleted_at_ms: 7,
        };
        assert!(dir.install(alias, dead(2), v));
        assert!(!dir.replace(alias, dead(3), dead(8)));
        assert!(dir.replace(alias, dead(2), dead(8)));
        let (target, state) = dir.lookup(alias).unwrap();
        assert_eq!((target, state.installed), (dead(8), v));
        assert!(!dir.replace(Ident::Alias("never"), dead(2), dead(8)));
        assert_eq!(dir.lookup(Ident::Alias("never")), None);
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

    /// A forgotten tombstone's slot is gone, every other key is still
    /// found (backward-shift deletion keeps the probe runs whole), only a
    /// tombstone still in force is forgotten, and the tables shrink.
    #[test]
    fn forgetting_tombstones_frees_their_slots_and_keeps_every_other_key() {
        let dir = KeyDir::new();
        let n = 40_000u64;
        for key in 0..n {
            assert!(dir.insert(key * 7, loc(1, key as u32)));
        }
        let full = dir.memory_bytes();
        let deleted = |at| Target::Deleted {
            file: 2,
            deleted_at_ms: at,
        };
        for key in (0..n).filter(|k| k % 4 != 0) {
            let ident = Ident::Key(key * 7);
            let (_, v) = dir.begin_mutation(ident).unwrap();
            assert!(dir.install(ident, deleted(key), v));
        }
        // Not the tombstone it holds (another file, another version), or
        // a live link: nothing happens.
        assert!(!dir.forget(Ident::Key(7), deleted(0), 1), "another time");
        assert!(!dir.forget(Ident::Key(7), deleted(1), 2), "another version");
        assert!(!dir.forget(Ident::Key(0), deleted(0), 0), "live");
        assert!(dir.get(0).is_some());
        for key in (0..n).filter(|k| k % 4 != 0) {
            assert!(dir.forget(Ident::Key(key * 7), deleted(key), 1), "{key}");
        }
        assert_eq!(dir.len(), n as usize / 4);
        for key in 0..n {
            if key % 4 == 0 {
                assert_eq!(dir.get(key * 7), Some(loc(1, key as u32)), "{key}");
            } else {
                assert!(!dir.contains(key * 7), "{key} forgotten");
                assert_eq!(dir.lookup(Ident::Key(key * 7)), None);
            }
        }
        assert!(
            dir.memory_bytes() < full / 2,
            "{} of {full} bytes",
            dir.memory_bytes()
        );
        // A forgotten key starts over: free, at version 1.
        assert_eq!(dir.claim(Ident::Key(7), 0, u64::MAX), Ok(1));
        // Big keys and aliases too; an alias with a claim in flight stays.
        let big = Ident::Key(PERMUTED_IDS + 9);
        assert!(dir.insert(PERMUTED_IDS + 9, loc(1, 1)));
        let (_, v) = dir.begin_mutation(big).unwrap();
        assert!(dir.install(big, deleted(3), v));
        assert!(dir.forget(big, deleted(3), v));
        assert!(!dir.contains(PERMUTED_IDS + 9));
        let alias = Ident::Alias("spring");
        let v = dir.claim(alias, 0, 0).unwrap();
        assert!(dir.install(alias, Target::Live(loc(1, 5)), v));
        let (_, v) = dir.begin_mutation(alias).unwrap();
        assert!(dir.install(alias, deleted(9), v));
        let again = dir.claim(alias, 100, 10).unwrap();
        assert!(!dir.forget(alias, deleted(9), v), "a claim is in flight");
        dir.release(alias, again);
        assert!(dir.forget(alias, deleted(9), v));
        assert!(!dir.names(alias));
    }

    proptest! {
        /// Removal from the open-addressing table against a model, with
        /// keys that collide in few slots.
        #[test]
        fn table_removal_matches_a_model(ops in proptest::collection::vec((0u64..64, any::<bool>()), 1..400)) {
            let mut table = Table::default();
            let mut model = std::collections::HashMap::new();
            for (i, (key, add)) in ops.into_iter().enumerate() {
                let key = key * 1_000_003;
                let hash = mix(key);
                if add {
                    table.set(key, hash, loc(1, i as u32));
                    model.insert(key, loc(1, i as u32));
                } else {
                    prop_assert_eq!(table.remove(key, hash), model.remove(&key).is_some());
                }
                prop_assert_eq!(table.len, model.len());
                for (k, l) in &model {
                    prop_assert_eq!(table.get(*k, mix(*k)), Some(*l));
                }
            }
        }
    }
}
