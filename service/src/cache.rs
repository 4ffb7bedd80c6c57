//! Each core's cache of hot URLs, so a popular link costs no disk read.
//!
//! One cache per core, unshared: thread-per-core, no locks, no atomics.
//! The policy is quick_cache's (a CLOCK-Pro variant: new entries start
//! cold and must be hit again to become hot, and a ghost list remembers
//! recent evictions), which keeps a scan of cold links from flushing the
//! hot set. `--cache-bytes` is split evenly over the cores; a link clicked
//! on several cores is cached on each.

use std::sync::Arc;

use bytes::Bytes;
use quick_cache::Weighter;

use crate::link::LinkMeta;

/// A cached link: its URL and, for a link with options, the options (so a
/// hit can judge expiry, click limits and the redirect status without a
/// read).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CachedLink {
    /// The long URL.
    pub url: Bytes,
    /// The options, `None` for a plain link.
    pub meta: Option<Arc<LinkMeta>>,
}

/// Bytes an entry costs besides its URL (key, value handle, the policy's
/// bookkeeping), for weighing.
const ENTRY_OVERHEAD: u64 = 64;

/// The cache's hasher: keys are code values, uniformly spread already
/// (permuted ids), and only links that exist are ever inserted (a miss is
/// not cached), so a client cannot choose what lands in the table; a
/// multiply-xorshift mix is enough, and far cheaper than SipHash.
#[derive(Debug, Clone, Copy, Default)]
pub struct MixHasher(u64);

impl std::hash::Hasher for MixHasher {
    fn finish(&self) -> u64 {
        let x = self.0.wrapping_mul(0x9E37_79B9_7F4A_7C15);
        x ^ (x >> 29)
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0 << 8 | u64::from(b)).rotate_left(5);
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 ^= n;
    }
}

type MixState = std::hash::BuildHasherDefault<MixHasher>;

#[derive(Debug, Clone, Copy)]
struct ByLength;

/// What the cache holds: a link and the generation it was cached in.
#[derive(Debug, Clone)]
struct Entry {
    link: CachedLink,
    generation: u32,
}

impl Weighter<u64, Entry> for ByLength {
    fn weight(&self, _key: &u64, entry: &Entry) -> u64 {
        let link = &entry.link;
        let meta = link.meta.as_ref().map_or(0, |m| {
            (std::mem::size_of::<LinkMeta>() + m.encoded_len()) as u64
        });
        link.url.len() as u64 + ENTRY_OVERHEAD + meta
    }
}

/// A core's URL cache: code key → URL.
pub struct UrlCache {
    inner: Option<quick_cache::unsync::Cache<u64, Entry, ByLength, MixState>>,
    /// Entries of an older generation are misses ([`Self::expire_all`]).
    generation: u32,
    hits: u64,
    misses: u64,
}

impl std::fmt::Debug for UrlCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UrlCache")
            .field("hits", &self.hits)
            .field("misses", &self.misses)
            .finish_non_exhaustive()
    }
}

impl UrlCache {
    /// A cache holding at most about `bytes` of URLs (0 disables it).
    pub fn new(bytes: usize) -> Self {
        let inner = (bytes > 0).then(|| {
            // Start small and grow: an idle server should not hold the
            // whole budget's worth of empty table.
            let estimated = (bytes / 2048).clamp(16, 4096);
            quick_cache::unsync::Cache::with(
                estimated,
                bytes as u64,
                ByLength,
                MixState::default(),
                Default::default(),
            )
        });
        Self {
            inner,
            generation: 0,
            hits: 0,
            misses: 0,
        }
    }

    /// The link of `key`, if cached. Counts a hit or a miss.
    pub fn get(&mut self, key: u64) -> Option<CachedLink> {
        let found = self
            .inner
            .as_ref()
            .and_then(|c| c.get(&key))
            .filter(|e| e.generation == self.generation)
            .map(|e| e.link.clone());
        if found.is_some() {
            self.hits += 1;
        } else {
            self.misses += 1;
        }
        found
    }

    /// `true` if `key` is cached (not counted as a hit or miss).
    pub fn contains(&self, key: u64) -> bool {
        self.inner
            .as_ref()
            .and_then(|c| c.peek(&key))
            .is_some_and(|e| e.generation == self.generation)
    }

    /// Caches `url` under `key` (copied: the cache must not pin a larger
    /// buffer the URL was sliced from).
    pub fn insert(&mut self, key: u64, url: &[u8], meta: Option<Arc<LinkMeta>>) {
        if let Some(cache) = self.inner.as_mut() {
            let url = Bytes::copy_from_slice(url);
            let link = CachedLink { url, meta };
            cache.insert(
                key,
                Entry {
                    link,
                    generation: self.generation,
                },
            );
        }
    }

    /// Forgets `key` (it was changed or deleted).
    pub fn remove(&mut self, key: u64) {
        if let Some(cache) = self.inner.as_mut() {
            cache.remove(&key);
        }
    }

    /// Makes every entry cached so far a miss, in O(1): they are replaced
    /// when read again, or evicted. For a remote store's bound on
    /// staleness (`--store-cache-ttl`), which must not stall the core the
    /// way dropping a large cache every second would.
    pub fn expire_all(&mut self) {
        self.generation = self.generation.wrapping_add(1);
    }

    /// Forgets everything.
    pub fn clear(&mut self) {
        if let Some(cache) = self.inner.as_mut() {
            cache.clear();
        }
    }

    /// Hits and misses so far.
    pub fn stats(&self) -> (u64, u64) {
        (self.hits, self.misses)
    }

    /// Entries and their weight in bytes.
    pub fn usage(&self) -> (usize, u64) {
        self.inner
            .as_ref()
            .map_or((0, 0), |c| (c.len(), c.weight()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expired_entries_are_misses_until_cached_again() {
        let mut cache = UrlCache::new(1 << 20);
        cache.insert(1, b"https://e.com/old", None);
        cache.insert(2, b"https://e.com/two", None);
        assert!(cache.contains(1));
        cache.expire_all();
        assert_eq!(cache.get(1), None);
        assert!(!cache.contains(2));
        cache.insert(1, b"https://e.com/new", None);
        assert_eq!(
            cache.get(1).map(|l| l.url),
            Some(Bytes::from("https://e.com/new"))
        );
        assert_eq!(cache.stats(), (1, 1));
    }

    #[test]
    fn holds_what_fits_and_counts() {
        let mut cache = UrlCache::new(10_000);
        cache.insert(1, b"https://a.example/", None);
        assert_eq!(
            cache.get(1).map(|l| l.url).as_deref(),
            Some(&b"https://a.example/"[..])
        );
        assert_eq!(cache.get(2), None);
        assert_eq!(cache.stats(), (1, 1));
        for key in 10..1000 {
            cache.insert(key, &[b'x'; 100], None);
        }
        assert!(cache.usage().1 <= 10_000, "bounded: {:?}", cache.usage());
    }

    #[test]
    fn a_scan_does_not_flush_the_hot_set() {
        let mut cache = UrlCache::new(64 * 200);
        for key in 0..50 {
            cache.insert(key, &[b'h'; 100], None);
        }
        for _ in 0..3 {
            for key in 0..50 {
                cache.get(key);
            }
        }
        // One pass over many cold links, each seen once.
        for key in 1000..5000 {
            cache.insert(key, &[b'c'; 100], None);
        }
        let hot = (0..50).filter(|&k| cache.get(k).is_some()).count();
        assert!(hot >= 40, "only {hot} of 50 hot links survived the scan");
    }

    #[test]
    fn zero_disables() {
        let mut cache = UrlCache::new(0);
        cache.insert(1, b"x", None);
        assert_eq!(cache.get(1), None);
    }
}
