//! The click-limit hook: how a link with `max_clicks` learns whether one
//! more click is allowed.
//!
//! [`ClickLimiter`] is the seam the statistics engine (issue 20) plugs its
//! persistent counter into. [`LocalClicks`] is the exact per-node count
//! kept until then: an atomic per *limited* link in the shared state (links
//! without a limit are never counted here, so the redirect path of an
//! ordinary link costs nothing). It lives in memory: a restart starts the
//! counts again, which the persistent counter of issue 20 fixes. Across
//! nodes each counts its own clicks (docs/round3-design.md §6).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, PoisonError, RwLock};

use crate::keydir::{Ident, OwnedIdent};

/// Counts clicks of limited links.
pub trait ClickLimiter: Send + Sync + std::fmt::Debug {
    /// Counts one click of `link` if fewer than `max` were counted;
    /// `false` when the limit is reached (the click is not counted).
    fn try_click(&self, link: Ident<'_>, max: u64) -> bool;

    /// Clicks counted for `link`.
    fn clicks(&self, link: Ident<'_>) -> u64;
}

/// The exact in-memory count of one node.
#[derive(Debug, Default)]
pub struct LocalClicks {
    counts: RwLock<HashMap<OwnedIdent, Arc<AtomicU64>>>,
}

impl LocalClicks {
    fn counter(&self, link: Ident<'_>) -> Arc<AtomicU64> {
        let key = owned(link);
        if let Some(c) = self
            .counts
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&key)
        {
            return c.clone();
        }
        self.counts
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .entry(key)
            .or_default()
            .clone()
    }
}

impl ClickLimiter for LocalClicks {
    fn try_click(&self, link: Ident<'_>, max: u64) -> bool {
        // Never past the limit, however many cores click at once.
        self.counter(link)
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < max).then_some(n + 1)
            })
            .is_ok()
    }

    fn clicks(&self, link: Ident<'_>) -> u64 {
        self.counts
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&owned(link))
            .map_or(0, |c| c.load(Ordering::Acquire))
    }
}

fn owned(link: Ident<'_>) -> OwnedIdent {
    match link {
        Ident::Key(key) => OwnedIdent::Key(key),
        Ident::Alias(alias) => OwnedIdent::Alias(alias.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exactly_max_clicks_pass_across_threads() {
        let clicks = Arc::new(LocalClicks::default());
        let passed: u64 = (0..4)
            .map(|_| {
                let clicks = clicks.clone();
                std::thread::spawn(move || {
                    (0..1000)
                        .filter(|_| clicks.try_click(Ident::Key(7), 1500))
                        .count()
                })
            })
            .collect::<Vec<_>>()
            .into_iter()
            .map(|t| t.join().unwrap() as u64)
            .sum();
        assert_eq!(passed, 1500);
        assert_eq!(clicks.clicks(Ident::Key(7)), 1500);
        assert_eq!(clicks.clicks(Ident::Key(8)), 0);
        assert!(clicks.try_click(Ident::Alias("promo"), 1));
        assert!(!clicks.try_click(Ident::Alias("promo"), 1));
    }
}
