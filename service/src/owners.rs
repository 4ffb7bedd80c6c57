//! The owner index: each API key's links, newest first, so `GET
//! /api/v1/links` pages through a key's links without scanning the key
//! directory (issue 21).
//!
//! **Where it lives.** In memory, beside the key directory, and only for
//! links that record an owner (link option tag 6): a link made without a
//! key (the seed's SHORTEN, a loopback caller) costs nothing here, so a
//! billion anonymous links add no byte. A restart rebuilds it from what
//! recovery already reads: hints carry each owned link's owner and
//! creation time in their extras (`crate::log::hint`), so no segment is
//! read for it.
//!
//! **Order.** Entries sort by `(created_at, member)`; a page walks them
//! downwards from a cursor that names the last entry shown. A link created
//! while someone pages lands at the top (or, if its creation time is older
//! than the cursor's, further down), so the links that existed when paging
//! began are each listed exactly once, and an update keeps its place (it
//! keeps its creation time).
//!
//! **Deletions** leave entries behind until the next listing of the owner
//! meets them: the listing checks each entry against the key directory
//! (live, same owner) and drops the dead ones ([`OwnerIndex::remove`]);
//! the next restart does not load them at all.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Mutex, PoisonError};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;

/// Owner-index shards: owners are spread over this many locks so cores
/// listing or creating for different keys rarely wait on each other.
const SHARDS: usize = 16;

/// Which link an entry names: a key of the key directory (a generated
/// code, or an alias spelled like one), or an alias of the side map.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Member {
    /// A key of the key directory.
    Key(u64),
    /// An alias that is not a code.
    Alias(Box<str>),
}

/// One owned link: when it was made, and which it is.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Entry {
    /// Its creation time (Unix ms, link option tag 9).
    pub created_at_ms: u64,
    /// The link.
    pub member: Member,
}

/// What a link record says about its owner: the key id (tag 6) and its
/// creation time (tag 9; 0 when absent).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ownership {
    /// The API key id that made the link.
    pub owner: u32,
    /// When the link was made (Unix ms).
    pub created_at_ms: u64,
}

impl Ownership {
    /// The ownership an option list (link option TLVs) records, if any.
    pub fn of_options(options: &[u8]) -> Option<Self> {
        use crate::log::tlv;
        let owner = tlv::find(options, tlv::OWNER)?;
        let owner = u32::from_le_bytes(owner.try_into().ok()?);
        let created_at_ms = tlv::find(options, tlv::CREATED_AT)
            .and_then(tlv::u64_of)
            .unwrap_or(0);
        Some(Self {
            owner,
            created_at_ms,
        })
    }
}

impl Entry {
    /// The opaque cursor that continues a listing after this entry:
    /// base64url of the creation time, a kind byte and the member.
    pub fn cursor(&self) -> String {
        let mut bytes = Vec::with_capacity(17);
        bytes.extend_from_slice(&self.created_at_ms.to_be_bytes());
        match &self.member {
            Member::Key(key) => {
                bytes.push(0);
                bytes.extend_from_slice(&key.to_be_bytes());
            }
            Member::Alias(alias) => {
                bytes.push(1);
                bytes.extend_from_slice(alias.as_bytes());
            }
        }
        URL_SAFE_NO_PAD.encode(bytes)
    }

    /// The entry a cursor names; `None` for anything [`Entry::cursor`]
    /// did not make.
    pub fn from_cursor(cursor: &str) -> Option<Self> {
        // Bounded before decoding: a cursor is at most 8 + 1 + 64 bytes.
        if cursor.len() > 100 {
            return None;
        }
        let bytes = URL_SAFE_NO_PAD.decode(cursor).ok()?;
        let (time, rest) = bytes.split_at_checked(8)?;
        let created_at_ms = u64::from_be_bytes(time.try_into().ok()?);
        let member = match rest.split_first()? {
            (0, key) => Member::Key(u64::from_be_bytes(key.try_into().ok()?)),
            (1, alias) => {
                let alias = std::str::from_utf8(alias).ok()?;
                crate::link::check_alias(alias).ok()?;
                Member::Alias(alias.into())
            }
            _ => return None,
        };
        Some(Self {
            created_at_ms,
            member,
        })
    }
}

/// Each owner's links, newest first. Shared by every core (it lives in
/// the [`KeyDir`](crate::keydir::KeyDir)).
#[derive(Debug)]
pub struct OwnerIndex {
    shards: Box<[Mutex<Owners>]>,
}

/// One shard of the index: each owner's entries.
type Owners = HashMap<u32, BTreeSet<Entry>>;

impl Default for OwnerIndex {
    fn default() -> Self {
        Self {
            shards: (0..SHARDS).map(|_| Mutex::default()).collect(),
        }
    }
}

impl OwnerIndex {
    fn shard(&self, owner: u32) -> std::sync::MutexGuard<'_, Owners> {
        // A poisoned lock (a panic aborts the process, so only in tests)
        // is used as is: a set is never left half-changed.
        self.shards[owner as usize % SHARDS]
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Records that `owner` made `entry` (again: idempotent).
    pub fn add(&self, owner: u32, entry: Entry) {
        self.shard(owner).entry(owner).or_default().insert(entry);
    }

    /// Forgets `entry` of `owner` (a deleted link, or one that is no longer
    /// theirs).
    pub fn remove(&self, owner: u32, entry: &Entry) {
        let mut shard = self.shard(owner);
        if let Some(set) = shard.get_mut(&owner) {
            set.remove(entry);
            if set.is_empty() {
                shard.remove(&owner);
            }
        }
    }

    /// Up to `limit` of `owner`'s entries, newest first, strictly after
    /// `after` (a cursor's entry) when given.
    pub fn page(&self, owner: u32, after: Option<&Entry>, limit: usize) -> Vec<Entry> {
        let shard = self.shard(owner);
        let Some(set) = shard.get(&owner) else {
            return Vec::new();
        };
        match after {
            Some(after) => set.range(..after).rev().take(limit).cloned().collect(),
            None => set.iter().rev().take(limit).cloned().collect(),
        }
    }

    /// Entries held, over all owners.
    pub fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|s| {
                s.lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .values()
                    .map(BTreeSet::len)
                    .sum::<usize>()
            })
            .sum()
    }

    /// `true` when no owned link is indexed.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(t: u64, k: u64) -> Entry {
        Entry {
            created_at_ms: t,
            member: Member::Key(k),
        }
    }

    #[test]
    fn pages_walk_newest_first_without_repeats_or_gaps_while_links_are_added() {
        let index = OwnerIndex::default();
        for i in 0..45 {
            index.add(7, key(1_000 + i, i));
        }
        index.add(8, key(5_000, 99));
        let mut seen = Vec::new();
        let mut after = None;
        let mut sizes = Vec::new();
        loop {
            let page = index.page(7, after.as_ref(), 20);
            sizes.push(page.len());
            // Links made meanwhile: newer than everything, and one older
            // than the cursor (a slow durability).
            index.add(
                7,
                key(10_000 + seen.len() as u64, 1_000 + seen.len() as u64),
            );
            seen.extend(page.iter().cloned());
            match page.last() {
                Some(last) if page.len() == 20 => {
                    after = Some(Entry::from_cursor(&last.cursor()).unwrap())
                }
                _ => break,
            }
        }
        assert_eq!(sizes, [20, 20, 5]);
        let expected: Vec<_> = (0..45).rev().map(|i| key(1_000 + i, i)).collect();
        assert_eq!(seen, expected);
    }

    #[test]
    fn cursors_round_trip_and_garbage_is_refused() {
        let alias = Entry {
            created_at_ms: u64::MAX,
            member: Member::Alias("spring-sale".into()),
        };
        for entry in [key(0, 0), key(1_700_000_000_000, u64::MAX), alias] {
            assert_eq!(Entry::from_cursor(&entry.cursor()), Some(entry));
        }
        for bad in [
            "",
            "x",
            "AAAAAAAAAAAA",
            &"A".repeat(200),
            "!!!!",
            "AAAAAAAAAAIA",
        ] {
            assert_eq!(Entry::from_cursor(bad), None, "{bad}");
        }
        // An alias the model would refuse.
        let mut bytes = 5u64.to_be_bytes().to_vec();
        bytes.push(1);
        bytes.extend_from_slice(b"no spaces");
        assert_eq!(Entry::from_cursor(&URL_SAFE_NO_PAD.encode(bytes)), None);
    }

    #[test]
    fn removing_the_last_entry_forgets_the_owner() {
        let index = OwnerIndex::default();
        index.add(3, key(1, 1));
        index.add(3, key(1, 1));
        assert_eq!(index.len(), 1);
        index.remove(3, &key(1, 1));
        assert!(index.is_empty());
        assert!(index.shard(3).is_empty());
    }
}
