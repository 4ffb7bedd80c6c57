//! The code → URL index every core reads.
//!
//! [`Store`] is the narrow seam between request handling and storage: look
//! a key up, insert a key. [`Index`], the in-process implementation, is a
//! `papaya::HashMap`. Chosen by `cargo bench -p shorty-service --bench index`
//! (papaya, scc and dashmap, 2 threads, 90% reads): papaya's reads take no
//! lock and write nothing shared (epoch-based reclamation), so the hot
//! RESOLVE/redirect path scales with cores; dashmap takes a shard read lock
//! per lookup, scc is close on reads but slower on inserts here. The numbers
//! are in the README.
//!
//! A networked store (Redis/Valkey, for deployments beyond one machine)
//! would implement `Store` as a read-through cache in front of the remote
//! one, filled by the durable log's replay, without touching protocol
//! handling.

/// Key → URL storage as request handling sees it.
pub trait Store: Send + Sync + 'static {
    /// Calls `f` with the URL stored under `key`, if any.
    fn lookup<R>(&self, key: u64, f: impl FnOnce(&str) -> R) -> Option<R>;
    /// Stores `url` under `key`, replacing nothing (keys are unique).
    fn insert(&self, key: u64, url: &str);
    /// How many URLs are stored.
    fn len(&self) -> usize;
    /// `true` when nothing is stored.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// `true` if `key` is stored.
    fn contains(&self, key: u64) -> bool {
        self.lookup(key, |_| ()).is_some()
    }
}

/// The in-process index.
///
/// URLs are stored as `Box<str>`: 16 bytes inline and exactly the URL's
/// length on the heap, no spare capacity.
#[derive(Debug, Default)]
pub struct Index {
    map: papaya::HashMap<u64, Box<str>>,
}

impl Index {
    /// An empty index.
    pub fn new() -> Self {
        Self::default()
    }
}

impl Store for Index {
    fn lookup<R>(&self, key: u64, f: impl FnOnce(&str) -> R) -> Option<R> {
        self.map.pin().get(&key).map(|url| f(url))
    }

    fn insert(&self, key: u64, url: &str) {
        self.map.pin().insert(key, url.into());
    }

    fn len(&self) -> usize {
        self.map.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn inserts_are_visible_from_other_threads() {
        let index = Arc::new(Index::new());
        let writers: Vec<_> = (0..2u64)
            .map(|t| {
                let index = index.clone();
                std::thread::spawn(move || {
                    for i in 0..1000 {
                        index.insert(t * 10_000 + i, &format!("http://e.com/{t}/{i}"));
                    }
                })
            })
            .collect();
        for w in writers {
            w.join().unwrap();
        }
        assert_eq!(index.len(), 2000);
        assert_eq!(
            index.lookup(10_007, str::to_owned).as_deref(),
            Some("http://e.com/1/7")
        );
        assert!(index.contains(999) && !index.contains(5000));
    }
}
