//! The state all shards of a server share, and how it is opened.

use std::fmt;
use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use crate::codes::{CodeKey, Codec, IdAllocator, IdSpace};
use crate::config::Config;
use crate::handler::Shard;
use crate::index::{Index, Store};
use crate::log::{LogWriter, SegmentNumbers};
use crate::recovery::{recover, RecoveryError, RecoveryReport};
use crate::url::UrlPolicy;

/// Name of the code key file in the data directory.
pub const KEY_FILE: &str = "code.key";

/// Why a server could not start.
#[derive(Debug)]
#[non_exhaustive]
pub enum StartError {
    /// The data directory's key file could not be read or created.
    Key {
        /// The key file.
        path: PathBuf,
        /// The failure.
        source: io::Error,
    },
    /// Replaying the log failed.
    Recovery(RecoveryError),
}

impl fmt::Display for StartError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StartError::Key { path, source } => {
                write!(f, "code key {}: {source}", path.display())
            }
            StartError::Recovery(err) => write!(f, "recovery failed: {err}"),
        }
    }
}

impl std::error::Error for StartError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            StartError::Key { source, .. } => Some(source),
            StartError::Recovery(err) => Some(err),
        }
    }
}

/// Reads the code key, creating it (randomly, durably) on first start.
fn load_or_create_key(dir: &Path) -> io::Result<CodeKey> {
    let path = dir.join(KEY_FILE);
    match fs::read(&path) {
        Ok(bytes) => {
            let key: [u8; 16] = bytes.try_into().map_err(|_| {
                io::Error::new(
                    io::ErrorKind::InvalidData,
                    "key file must hold exactly 16 bytes",
                )
            })?;
            Ok(CodeKey(key))
        }
        Err(err) if err.kind() == io::ErrorKind::NotFound => {
            let mut key = [0u8; 16];
            getrandom::fill(&mut key).map_err(io::Error::other)?;
            // Write-then-rename, each synced, so a crash never leaves a
            // half-written key (which would change every code).
            let tmp = dir.join(format!("{KEY_FILE}.tmp"));
            let mut file = fs::File::create(&tmp)?;
            file.write_all(&key)?;
            file.sync_all()?;
            fs::rename(&tmp, &path)?;
            fs::File::open(dir)?.sync_all()?;
            Ok(CodeKey(key))
        }
        Err(err) => Err(err),
    }
}

/// Counts client connections across all threads (`--max-connections`).
#[derive(Debug)]
pub struct ConnectionSlots {
    max: usize,
    used: AtomicUsize,
}

impl ConnectionSlots {
    /// Slots for `max` connections.
    pub fn new(max: usize) -> Self {
        Self {
            max,
            used: AtomicUsize::new(0),
        }
    }

    /// Takes a slot, or `None` at the limit. The slot frees when dropped.
    pub fn try_acquire(self: &Arc<Self>) -> Option<ConnectionSlot> {
        self.used
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |used| {
                (used < self.max).then_some(used + 1)
            })
            .ok()
            .map(|_| ConnectionSlot(self.clone()))
    }

    /// Connections currently open.
    pub fn in_use(&self) -> usize {
        self.used.load(Ordering::Acquire)
    }
}

/// One taken connection slot.
#[derive(Debug)]
pub struct ConnectionSlot(Arc<ConnectionSlots>);

impl Drop for ConnectionSlot {
    fn drop(&mut self) {
        self.0.used.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Everything the shards of one server share.
#[derive(Debug)]
pub struct Service<S: Store = Index> {
    pub(crate) config: Config,
    pub(crate) store: S,
    pub(crate) codec: Codec,
    pub(crate) policy: UrlPolicy,
    ids: Arc<IdSpace>,
    segments: Arc<SegmentNumbers>,
    slots: Arc<ConnectionSlots>,
}

impl Service<Index> {
    /// Opens the data directory: loads (or creates) the code key and replays
    /// the log into a fresh index. Blocking; call before starting runtimes.
    ///
    /// # Errors
    /// [`StartError`] when the key cannot be read or written, or the log is
    /// damaged before a tail.
    pub fn open(mut config: Config) -> Result<(Arc<Self>, RecoveryReport), StartError> {
        let given = config.data_dir.clone();
        let key_err = |source| StartError::Key {
            path: given.join(KEY_FILE),
            source,
        };
        fs::create_dir_all(&given).map_err(key_err)?;
        // Absolute from here on: log lines then name real paths, and some
        // I/O APIs (glommio's directory and DMA file handling) fail on
        // relative ones.
        config.data_dir = fs::canonicalize(&given).map_err(key_err)?;
        let dir = config.data_dir.clone();
        let codec = Codec::new(&load_or_create_key(&dir).map_err(key_err)?);
        let store = Index::new();
        let report = recover(&dir, |id, url| store.insert(codec.key_of(id), url))
            .map_err(StartError::Recovery)?;
        tracing::info!(
            urls = report.urls,
            segments = report.segments,
            torn_tails = report.torn_tails,
            elapsed_ms = report.elapsed.as_millis() as u64,
            data_dir = %dir.display(),
            "recovered the log"
        );
        let service = Service {
            policy: UrlPolicy::new(config.max_url_bytes, config.public_url.clone()),
            slots: Arc::new(ConnectionSlots::new(config.max_connections)),
            ids: Arc::new(IdSpace::new(report.next_id)),
            segments: Arc::new(SegmentNumbers::new(report.next_segment)),
            config,
            store,
            codec,
        };
        Ok((Arc::new(service), report))
    }
}

impl<S: Store> Service<S> {
    /// The configuration the service was opened with.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The index.
    pub fn store(&self) -> &S {
        &self.store
    }

    /// The connection limit shared by all threads.
    pub fn connection_slots(&self) -> &Arc<ConnectionSlots> {
        &self.slots
    }

    /// A new shard: one per thread, owning its log writer and id block.
    pub fn shard(self: &Arc<Self>) -> Shard<S> {
        let log = LogWriter::new(
            &self.config.data_dir,
            self.segments.clone(),
            self.config.segment_bytes,
            self.config.sync,
        );
        Shard::new(self.clone(), IdAllocator::new(self.ids.clone()), log)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_key_is_created_once_and_kept() {
        let dir = tempfile::tempdir().unwrap();
        let a = load_or_create_key(dir.path()).unwrap();
        let b = load_or_create_key(dir.path()).unwrap();
        assert_eq!(a, b);
        assert_ne!(a.0, [0; 16]);
        fs::write(dir.path().join(KEY_FILE), b"short").unwrap();
        assert!(
            load_or_create_key(dir.path()).is_err(),
            "a damaged key is an error"
        );
    }

    #[test]
    fn connection_slots_stop_at_the_limit_and_free_on_drop() {
        let slots = Arc::new(ConnectionSlots::new(2));
        let a = slots.try_acquire().unwrap();
        let _b = slots.try_acquire().unwrap();
        assert!(slots.try_acquire().is_none());
        drop(a);
        assert_eq!(slots.in_use(), 1);
        assert!(slots.try_acquire().is_some());
    }
}
