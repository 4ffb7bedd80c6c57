//! Click limits' durable side: the counts of links with `max_clicks`
//! under `DATA_DIR/clicks/`, so a restart does not give a limited link its
//! clicks back.
//!
//! The serving cores count in memory ([`LocalClicks`], exact on one
//! node). The first time this process sees a limited link, its count is
//! loaded from here (one read per link per process, on the core that
//! meets it); a saver thread writes every changed count every
//! `--stats-flush` (1 s) and makes it durable (`fsync`), and once more at a
//! clean stop. **The bound:** a crash (kill -9, power loss) gives a limited
//! link back at most the clicks it was served during the last interval
//! before the crash (plus a save in progress); a clean stop (SIGTERM)
//! gives back none.
//!
//! One fjall partition, `counts`: [`LimitId::encode`](shorty_service::clicks::LimitId::encode)
//! → count (u64 LE). Only limited links that were clicked (or looked at)
//! have a row; a row of a deleted link stays (a few dozen bytes).

use std::io;
use std::path::Path;
use std::sync::{mpsc, Arc};
use std::thread::JoinHandle;
use std::time::Duration;

use fjall::{Keyspace, PartitionCreateOptions, PartitionHandle, PersistMode};
use shorty_service::clicks::{CountSource, LocalClicks};

fn io_err(e: impl std::fmt::Display) -> io::Error {
    io::Error::other(e.to_string())
}

/// The saved counts.
#[derive(Clone)]
pub struct ClickCounts {
    keyspace: Keyspace,
    counts: PartitionHandle,
}

impl std::fmt::Debug for ClickCounts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClickCounts").finish_non_exhaustive()
    }
}

impl ClickCounts {
    /// Opens (or creates) the store in `dir`.
    ///
    /// # Errors
    /// The store cannot be opened.
    pub fn open(dir: &Path) -> io::Result<Self> {
        let keyspace = fjall::Config::new(dir)
            // The saver makes each batch durable itself.
            .fsync_ms(None)
            .cache_size(4 << 20)
            .flush_workers(1)
            .compaction_workers(1)
            .open()
            .map_err(io_err)?;
        let counts = keyspace
            .open_partition("counts", PartitionCreateOptions::default())
            .map_err(io_err)?;
        Ok(Self { keyspace, counts })
    }

    /// Writes `counts` and makes them durable. A count never goes down
    /// (a row holds the highest count saved).
    ///
    /// # Errors
    /// A write or the `fsync` failed: nothing is known to be saved.
    pub fn save(&self, counts: &[(Box<[u8]>, u64)]) -> io::Result<()> {
        let mut batch = self.keyspace.batch();
        for (id, n) in counts {
            let n = (*n).max(self.read(id)?);
            batch.insert(&self.counts, id.as_ref(), n.to_le_bytes());
        }
        batch.commit().map_err(io_err)?;
        self.keyspace.persist(PersistMode::SyncData).map_err(io_err)
    }

    fn read(&self, id: &[u8]) -> io::Result<u64> {
        Ok(match self.counts.get(id).map_err(io_err)? {
            Some(v) => v
                .as_ref()
                .try_into()
                .map(u64::from_le_bytes)
                .unwrap_or_default(),
            None => 0,
        })
    }
}

impl CountSource for ClickCounts {
    fn load(&self, id: &[u8]) -> u64 {
        self.read(id).unwrap_or_else(|err| {
            // Serving on is better than refusing every limited link; the
            // count restarts from what this process counts.
            tracing::error!("cannot read a click limit's count: {err}");
            0
        })
    }
}

/// The saver thread; [`finish`](Self::finish) saves the last counts.
#[derive(Debug)]
pub struct ClickSaver {
    stop: mpsc::Sender<()>,
    thread: JoinHandle<()>,
}

impl ClickSaver {
    /// Saves what is left and waits for the thread.
    pub fn finish(self) {
        let _ = self.stop.send(());
        let _ = self.thread.join();
    }
}

/// Opens `DATA_DIR/clicks` and starts saving `every` interval: the
/// counter for [`Shared::with_clicks`](shorty_service::shard::Shared::with_clicks)
/// and its saver.
///
/// # Errors
/// The store cannot be opened or the thread started.
pub fn start(data_dir: &Path, every: Duration) -> io::Result<(Arc<LocalClicks>, ClickSaver)> {
    let store = ClickCounts::open(&data_dir.join("clicks"))?;
    let clicks = Arc::new(LocalClicks::with_source(Box::new(store.clone())));
    let (stop, stopped) = mpsc::channel();
    let thread = {
        let clicks = clicks.clone();
        std::thread::Builder::new()
            .name("click-limits".into())
            .spawn(move || loop {
                let last = !matches!(
                    stopped.recv_timeout(every),
                    Err(mpsc::RecvTimeoutError::Timeout)
                );
                let changed = clicks.changed();
                if !changed.is_empty() {
                    match store.save(&changed) {
                        Ok(()) => clicks.saved(&changed),
                        // Kept as changed: the next interval tries again.
                        Err(err) => tracing::error!("cannot save click limits' counts: {err}"),
                    }
                }
                if last {
                    return;
                }
            })?
    };
    Ok((clicks, ClickSaver { stop, thread }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use shorty_service::clicks::{ClickLimiter, LimitId};
    use shorty_service::keydir::Ident;

    #[test]
    fn counts_outlive_the_process_and_never_go_down() {
        let dir = tempfile::tempdir().unwrap();
        let id = LimitId {
            link: Ident::Alias("promo"),
            created_at_ms: 42,
        };
        {
            let (clicks, saver) = start(dir.path(), Duration::from_secs(3600)).unwrap();
            for _ in 0..3 {
                assert!(clicks.try_click(id, 5));
            }
            saver.finish();
        }
        let (clicks, saver) = start(dir.path(), Duration::from_millis(10)).unwrap();
        assert_eq!(clicks.clicks(id), 3);
        assert!(clicks.try_click(id, 5));
        assert!(clicks.try_click(id, 5));
        assert!(!clicks.try_click(id, 5));
        // Saved by the interval, not only at the stop.
        let mut buf = [0; shorty_service::clicks::MAX_LIMIT_ID_LEN];
        let n = id.encode(&mut buf);
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while clicks.changed().iter().any(|(k, _)| **k == buf[..n]) {
            assert!(std::time::Instant::now() < deadline, "never saved");
            std::thread::sleep(Duration::from_millis(5));
        }
        saver.finish();
        drop(clicks);
        let counts = ClickCounts::open(&dir.path().join("clicks")).unwrap();
        assert_eq!(counts.load(&buf[..n]), 5);
        counts.save(&[(Box::from(&buf[..n]), 2)]).unwrap();
        assert_eq!(counts.load(&buf[..n]), 5, "a count never goes down");
    }
}
