//! The click limit: how a link with `max_clicks` learns whether one more
//! click is allowed, and how its count outlives the process.
//!
//! [`ClickLimiter`] is the seam. [`LocalClicks`] is the exact count of one
//! node: an atomic per *limited* link in the shared state (links without
//! a limit are never counted here, so the redirect path of an ordinary
//! link costs nothing). A count belongs to one link's *life*
//! ([`LimitId`]: its code or alias and its creation time), so an alias
//! deleted and claimed again after its quarantine starts again at 0 while
//! an update of a link keeps its count.
//!
//! Durability is the runtime's: [`LocalClicks::with_source`] gives it a
//! [`CountSource`] that a link's count is loaded from the first time this
//! process sees it, and the runtime saves [`LocalClicks::changed`] every
//! interval (then reports it with [`LocalClicks::saved`]). A crash thus
//! gives back at most the clicks counted since the last save; a clean
//! stop saves everything. With a Redis store the limit is not counted
//! here but in the store, shared by every node
//! (`ops::resolve::count_remotely`).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, PoisonError, RwLock};

use crate::keydir::Ident;
use crate::link::MAX_ALIAS_LEN;

/// One link's life, whose clicks a limit counts: a code or alias, and
/// when that link was created (0 for a link that does not record it: a
/// generated code, never handed out again, so it has one life).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LimitId<'a> {
    /// The code key or side-map alias.
    pub link: Ident<'a>,
    /// The link's `created_at_ms` (0 if it has none).
    pub created_at_ms: u64,
}

/// The longest [`LimitId::encode`]d form.
pub const MAX_LIMIT_ID_LEN: usize = 1 + 8 + 8 + MAX_ALIAS_LEN;

impl LimitId<'_> {
    /// The bytes that name this life in a store: a code is `0`, its key
    /// and the creation time (both big-endian); an alias `1`, the creation
    /// time and the alias. Returns the length written into `buf`.
    pub fn encode(&self, buf: &mut [u8; MAX_LIMIT_ID_LEN]) -> usize {
        match self.link {
            Ident::Key(key) => {
                buf[0] = 0;
                buf[1..9].copy_from_slice(&key.to_be_bytes());
                buf[9..17].copy_from_slice(&self.created_at_ms.to_be_bytes());
                17
            }
            Ident::Alias(alias) => {
                buf[0] = 1;
                buf[1..9].copy_from_slice(&self.created_at_ms.to_be_bytes());
                // Aliases are checked to be at most MAX_ALIAS_LEN bytes
                // before they are stored; a longer one is cut rather than
                // trusted with a panic.
                let n = alias.len().min(MAX_ALIAS_LEN);
                buf[9..9 + n].copy_from_slice(&alias.as_bytes()[..n]);
                9 + n
            }
        }
    }
}

/// Counts clicks of limited links.
pub trait ClickLimiter: Send + Sync + std::fmt::Debug {
    /// Counts one click of `link` if fewer than `max` were counted;
    /// `false` when the limit is reached (the click is not counted).
    fn try_click(&self, link: LimitId<'_>, max: u64) -> bool;

    /// Clicks counted for `link`.
    fn clicks(&self, link: LimitId<'_>) -> u64;
}

/// Where [`LocalClicks`] finds the count a link had before this process
/// started (the runtime's durable store).
pub trait CountSource: Send + Sync + std::fmt::Debug {
    /// The saved count of the life named `id` ([`LimitId::encode`]), 0 if
    /// none was saved.
    fn load(&self, id: &[u8]) -> u64;
}

#[derive(Debug, Default)]
struct Count {
    /// Clicks counted.
    now: AtomicU64,
    /// The highest count known to be saved.
    saved: AtomicU64,
}

/// The exact count of one node, loaded from a [`CountSource`] if it has
/// one.
#[derive(Debug, Default)]
pub struct LocalClicks {
    counts: RwLock<HashMap<Box<[u8]>, Arc<Count>>>,
    source: Option<Box<dyn CountSource>>,
}

impl LocalClicks {
    /// Counts that start from what `source` saved.
    pub fn with_source(source: Box<dyn CountSource>) -> Self {
        Self {
            counts: RwLock::default(),
            source: Some(source),
        }
    }

    fn counter(&self, id: &[u8]) -> Arc<Count> {
        if let Some(c) = self
            .counts
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(id)
        {
            return c.clone();
        }
        // Loaded outside the lock: other links' clicks do not wait for
        // this read. If another core inserted it meanwhile, its entry
        // (which may have counted already) wins.
        let saved = self.source.as_ref().map_or(0, |s| s.load(id));
        self.counts
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .entry(id.into())
            .or_insert_with(|| {
                Arc::new(Count {
                    now: AtomicU64::new(saved),
                    saved: AtomicU64::new(saved),
                })
            })
            .clone()
    }

    /// Every count that changed since it was last [`saved`](Self::saved):
    /// `(id, count)`, for the runtime to make durable.
    pub fn changed(&self) -> Vec<(Box<[u8]>, u64)> {
        self.counts
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .filter_map(|(id, c)| {
                let now = c.now.load(Ordering::Acquire);
                (now > c.saved.load(Ordering::Acquire)).then(|| (id.clone(), now))
            })
            .collect()
    }

    /// The runtime made these counts durable.
    pub fn saved(&self, counts: &[(Box<[u8]>, u64)]) {
        let map = self.counts.read().unwrap_or_else(PoisonError::into_inner);
        for (id, n) in counts {
            if let Some(c) = map.get(id) {
                c.saved.fetch_max(*n, Ordering::AcqRel);
            }
        }
    }
}

impl ClickLimiter for LocalClicks {
    fn try_click(&self, link: LimitId<'_>, max: u64) -> bool {
        let mut buf = [0; MAX_LIMIT_ID_LEN];
        let n = link.encode(&mut buf);
        // Never past the limit, however many cores click at once.
        self.counter(&buf[..n])
            .now
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < max).then_some(n + 1)
            })
            .is_ok()
    }

    fn clicks(&self, link: LimitId<'_>) -> u64 {
        let mut buf = [0; MAX_LIMIT_ID_LEN];
        let n = link.encode(&mut buf);
        self.counter(&buf[..n]).now.load(Ordering::Acquire)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(key: u64, created_at_ms: u64) -> LimitId<'static> {
        LimitId {
            link: Ident::Key(key),
            created_at_ms,
        }
    }

    #[test]
    fn exactly_max_clicks_pass_across_threads() {
        let clicks = Arc::new(LocalClicks::default());
        let passed: u64 = (0..4)
            .map(|_| {
                let clicks = clicks.clone();
                std::thread::spawn(move || {
                    (0..1000)
                        .filter(|_| clicks.try_click(key(7, 0), 1500))
                        .count()
                })
            })
            .collect::<Vec<_>>()
            .into_iter()
            .map(|t| t.join().unwrap() as u64)
            .sum();
        assert_eq!(passed, 1500);
        assert_eq!(clicks.clicks(key(7, 0)), 1500);
        assert_eq!(clicks.clicks(key(8, 0)), 0);
        let promo = LimitId {
            link: Ident::Alias("promo"),
            created_at_ms: 5,
        };
        assert!(clicks.try_click(promo, 1));
        assert!(!clicks.try_click(promo, 1));
    }

    #[test]
    fn a_new_life_of_a_name_starts_at_zero() {
        let clicks = LocalClicks::default();
        let old = LimitId {
            link: Ident::Alias("promo"),
            created_at_ms: 1_000,
        };
        let new = LimitId {
            created_at_ms: 2_000,
            ..old
        };
        assert!(clicks.try_click(old, 1));
        assert!(!clicks.try_click(old, 1));
        assert_eq!(clicks.clicks(new), 0);
        assert!(clicks.try_click(new, 1));
        assert!(clicks.try_click(key(9, 1_000), 1));
        assert!(clicks.try_click(key(9, 2_000), 1));
    }

    #[derive(Debug)]
    struct Saved(HashMap<Box<[u8]>, u64>);

    impl CountSource for Saved {
        fn load(&self, id: &[u8]) -> u64 {
            self.0.get(id).copied().unwrap_or(0)
        }
    }

    #[test]
    fn counts_start_from_the_source_and_changes_are_reported_until_saved() {
        let mut buf = [0; MAX_LIMIT_ID_LEN];
        let n = key(3, 10).encode(&mut buf);
        let source = Saved([(Box::from(&buf[..n]), 4)].into_iter().collect());
        let clicks = LocalClicks::with_source(Box::new(source));
        assert_eq!(clicks.clicks(key(3, 10)), 4);
        assert!(clicks.changed().is_empty(), "a loaded count is saved");
        assert!(clicks.try_click(key(3, 10), 5));
        assert!(!clicks.try_click(key(3, 10), 5));
        let changed = clicks.changed();
        assert_eq!(changed, vec![(Box::from(&buf[..n]), 5)]);
        clicks.saved(&changed);
        assert!(clicks.changed().is_empty());
    }
}
