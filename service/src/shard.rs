//! One core's state and its I/O hand-off, sans-IO.
//!
//! A [`Shard`] owns what one core serves with: its log writer, its URL
//! cache, its operations in flight. The operations themselves live in
//! [`crate::ops`] (functions over the shard) and the request parsing and
//! reply rendering in [`crate::front`] (`impl Shard` blocks there add
//! `handle_frames`, `handle_http` and `settle`): this module imports
//! neither, so the layers stay `shard` < `ops` < `front`. A reply that cannot be given at once becomes an
//! *operation*: a SHORTEN waiting for its record to be durable, a RESOLVE
//! waiting for its URL to be read from the log or fetched from the remote
//! store. The shard hands the I/O to the backend ([`Shard::poll_log_io`],
//! [`Shard::poll_read`], [`Shard::poll_remote`]), takes the results back
//! ([`Shard::log_done`], [`Shard::read_done`], [`Shard::remote_done`]), and
//! names the connections to wake ([`Shard::take_wakes`]): only those whose
//! operations settled, never all of them.

use std::borrow::Cow;
use std::io;
use std::sync::{Arc, OnceLock};
use std::time::Instant;

use bytes::Bytes;
use shorty_protocol::ErrorCode;
use slab::Slab;

use crate::cache::UrlCache;
use crate::codes::{Codec, IdAllocator, IdSpace};
use crate::health::{Health, StorageHealth};
use crate::keydir::{KeyDir, Location};
use crate::log::record::Seal;
use crate::log::record::{decode_record, Decoded, Record, RECORD_HEADER_LEN};
use crate::log::segments::{FileIdx, SegmentRef, SegmentTable};
use crate::log::{IoResult, LogIo, LogState, LogWriter};
use crate::metrics::CoreMetrics;
use crate::output::{OpId, Wait};
use crate::settings::Settings;
use crate::url::UrlPolicy;

/// Bytes read speculatively for a URL: most link records fit, so one read
/// usually suffices; a longer record is read again in full.
pub const URL_READ_LEN: usize = 512;

/// What [`Shard::handle_frames`] and [`Shard::handle_http`] did with the
/// bytes they were given.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct InputOutcome {
    /// Bytes consumed from the front of the input (whole requests only).
    pub consumed: usize,
    /// `true` when the rest holds the start of a request: its timeout runs.
    pub mid_frame: bool,
    /// `true` when the connection must be closed once the queued replies
    /// are written.
    pub close: bool,
}

/// The links' home: this process's own log, or a remote store.
#[derive(Debug)]
pub enum StoreMode {
    /// The embedded log and its key directory.
    Local(LocalStore),
    /// A remote store (Redis Cluster), served by the runtime.
    Remote,
}

/// The embedded log's shared parts.
#[derive(Debug)]
pub struct LocalStore {
    /// Code → record location.
    pub keydir: Arc<KeyDir>,
    /// Every segment file.
    pub segments: Arc<SegmentTable>,
    /// The id counter.
    pub ids: Arc<IdSpace>,
}

/// What the admin listener needs from the runtime.
pub trait AdminView: Send + Sync {
    /// The Prometheus text exposition of every metric.
    fn metrics_text(&self) -> String;
}

/// Everything the shards of one process share.
pub struct Shared {
    /// Limits and timeouts.
    pub settings: Settings,
    /// Ids to codes and back.
    pub codec: Codec,
    /// Which URLs are accepted.
    pub policy: UrlPolicy,
    /// Where links live.
    pub store: StoreMode,
    /// Every core's storage health.
    pub health: Arc<Health>,
    /// Every core's counters.
    pub metrics: Box<[CoreMetrics]>,
    /// Set by the runtime once it can render metrics.
    pub admin: OnceLock<Box<dyn AdminView>>,
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared")
            .field("settings", &self.settings)
            .field("store", &self.store)
            .finish_non_exhaustive()
    }
}

impl Shared {
    /// Shared state for `cores` cores.
    pub fn new(settings: Settings, codec: Codec, store: StoreMode, cores: usize) -> Self {
        Self {
            policy: UrlPolicy::new(settings.max_url_bytes, settings.public_url.clone()),
            settings,
            codec,
            store,
            health: Arc::new(Health::new(cores)),
            metrics: (0..cores).map(|_| CoreMetrics::default()).collect(),
            admin: OnceLock::new(),
        }
    }

    /// For tests, examples and fuzz targets: one core over an empty
    /// embedded log (segments under `/data`, never touched: the caller
    /// performs the shard's I/O), a fixed code key.
    pub fn for_tests(settings: Settings) -> Self {
        let store = LocalStore {
            keydir: Arc::new(KeyDir::new()),
            segments: Arc::new(SegmentTable::new(std::path::Path::new("/data"), 0)),
            ids: Arc::new(IdSpace::new(0)),
        };
        Self::new(
            settings,
            Codec::new(&crate::codes::CodeKey([7; 16])),
            StoreMode::Local(store),
            1,
        )
    }

    /// Shares `health` (with a remote store's thread, which reports into
    /// it) instead of a fresh one.
    pub fn with_health(mut self, health: Arc<Health>) -> Self {
        self.health = health;
        self
    }

    /// The key directory, with the embedded log.
    pub fn keydir(&self) -> Option<&KeyDir> {
        match &self.store {
            StoreMode::Local(local) => Some(&local.keydir),
            StoreMode::Remote => None,
        }
    }
}

/// An operation's outcome.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OpResult {
    /// The URL of a code.
    Url(Bytes),
    /// No such code.
    NotFound,
    /// A SHORTEN is stored under this key.
    Stored(u64),
    /// It failed; answer with this code and message.
    Failed(ErrorCode, Cow<'static, str>),
}

/// Where an operation stands.
#[derive(Debug)]
pub(crate) enum OpState {
    Waiting,
    Done(OpResult),
    /// The connection stopped waiting; drop the result when it comes.
    Abandoned,
}

/// One operation in flight.
#[derive(Debug)]
pub(crate) struct OpEntry {
    /// The connection waiting for it.
    pub(crate) conn: u32,
    /// The code key it is about.
    pub(crate) key: u64,
    /// Where it stands.
    pub(crate) state: OpState,
}

/// A URL to read from the log for a RESOLVE or a redirect.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UrlRead {
    /// The operation waiting for it.
    pub op: OpId,
    /// The code key.
    pub key: u64,
    /// The segment.
    pub file: FileIdx,
    /// The record's offset.
    pub offset: u64,
    /// Bytes to read.
    pub len: usize,
}

/// A request for the remote store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RemoteRequest {
    /// Look a key up.
    Get {
        /// The operation waiting for it.
        op: OpId,
        /// The code key.
        key: u64,
    },
    /// Store a new link; the store picks the id.
    Put {
        /// The operation waiting for it.
        op: OpId,
        /// The long URL.
        url: Bytes,
    },
}

/// This core's part of the embedded log.
#[derive(Debug)]
pub(crate) struct LocalShard {
    /// This core's block of ids.
    pub(crate) ids: IdAllocator,
    /// This core's log writer.
    pub(crate) log: LogWriter,
    /// The shared key directory.
    pub(crate) keydir: Arc<KeyDir>,
}

/// One core's share of the service.
#[derive(Debug)]
///
/// It owns the core's state and the I/O hand-off; the operations
/// ([`crate::ops`]) are functions over it, and the fronts
/// ([`crate::front`]) parse requests, call them and render their outcomes.
pub struct Shard {
    pub(crate) shared: Arc<Shared>,
    pub(crate) core: usize,
    pub(crate) local: Option<LocalShard>,
    pub(crate) cache: UrlCache,
    pub(crate) ops: Slab<OpEntry>,
    pub(crate) reads: std::collections::VecDeque<UrlRead>,
    /// Keys being read, and the other operations waiting for the same read.
    pub(crate) reading: std::collections::HashMap<u64, Vec<OpId>>,
    pub(crate) remote: std::collections::VecDeque<RemoteRequest>,
    pub(crate) wake: Vec<u32>,
    pub(crate) date: String,
}

impl Shard {
    /// Core `core`'s shard.
    pub fn new(shared: Arc<Shared>, core: usize) -> Self {
        let local = match &shared.store {
            StoreMode::Local(store) => Some(LocalShard {
                ids: IdAllocator::new(store.ids.clone()),
                log: LogWriter::new(shared.settings.log.clone(), store.segments.clone()),
                keydir: store.keydir.clone(),
            }),
            StoreMode::Remote => None,
        };
        Self {
            cache: UrlCache::new(shared.settings.cache_bytes_per_core),
            shared,
            core,
            local,
            ops: Slab::new(),
            reads: Default::default(),
            reading: Default::default(),
            remote: Default::default(),
            wake: Vec::new(),
            date: httpdate_fallback(),
        }
    }

    /// The shared state.
    pub fn shared(&self) -> &Arc<Shared> {
        &self.shared
    }

    /// This core's counters.
    pub fn metrics(&self) -> &CoreMetrics {
        &self.shared.metrics[self.core]
    }

    /// Sets the HTTP `Date` value (an IMF-fixdate), which the runtime
    /// refreshes every second.
    pub fn set_date(&mut self, date: &str) {
        self.date.clear();
        self.date.push_str(date);
    }

    /// The HTTP `Date` value.
    pub fn date(&self) -> &str {
        &self.date
    }

    /// Operations in flight.
    pub fn ops_in_flight(&self) -> usize {
        self.ops.len()
    }

    pub(crate) fn new_op(&mut self, conn: u32, key: u64) -> OpId {
        self.ops.insert(OpEntry {
            conn,
            key,
            state: OpState::Waiting,
        }) as OpId
    }

    pub(crate) fn complete(&mut self, op: OpId, result: OpResult) {
        let Some(entry) = self.ops.get_mut(op as usize) else {
            return;
        };
        match entry.state {
            OpState::Waiting => {
                entry.state = OpState::Done(result);
                self.wake.push(entry.conn);
            }
            OpState::Abandoned => {
                self.ops.remove(op as usize);
            }
            OpState::Done(_) => {}
        }
    }

    /// The connections whose operations settled since the last call.
    pub fn take_wakes(&mut self) -> std::vec::Drain<'_, u32> {
        self.wake.drain(..)
    }

    /// A connection going away stops waiting for `wait`.
    pub fn abandon(&mut self, wait: &Wait) {
        if let Wait::Op { op, .. } = wait {
            let op = *op;
            if let Some(entry) = self.ops.get_mut(op as usize) {
                if matches!(entry.state, OpState::Waiting) {
                    entry.state = OpState::Abandoned;
                } else {
                    self.ops.remove(op as usize);
                }
            }
        }
    }

    // ----- the log -----

    /// The next log operation for the backend.
    pub fn poll_log_io(&mut self, now: Instant) -> Option<LogIo> {
        self.local.as_mut()?.log.poll_io(now)
    }

    /// `true` when the log has an operation to hand out now.
    pub fn log_has_work(&self) -> bool {
        self.local.as_ref().is_some_and(|l| l.log.has_work())
    }

    /// When the log next needs [`poll_log_io`](Self::poll_log_io) even
    /// without new records.
    pub fn log_timeout(&self) -> Option<Instant> {
        self.local.as_ref()?.log.poll_timeout()
    }

    /// Since when the log's batch in flight has been running.
    pub fn log_in_flight_since(&self) -> Option<Instant> {
        self.local.as_ref()?.log.in_flight_since()
    }

    /// Reports a log operation's outcome. Links of a durable batch enter the
    /// key directory (and this core's cache) before any waiting reply is
    /// released, so a code resolves exactly when its SHORTEN is
    /// acknowledged. Returns the segment sealed, if one was (for its hint
    /// file).
    pub fn log_done(
        &mut self,
        io: &LogIo,
        result: IoResult,
        now: Instant,
    ) -> Option<(SegmentRef, Seal)> {
        let local = self.local.as_mut()?;
        // Keys whose insert failed: the code already maps to another link
        // (taken between the SHORTEN's check and its durability). Their
        // records are durable, but the code does not resolve to their
        // URL, so they are never acknowledged.
        let mut taken = Vec::new();
        if let (LogIo::Write(batch), IoResult::Ok) = (io, &result) {
            let mut records = 0;
            for (link, offset) in batch.links() {
                let location = Location {
                    file: batch.segment.idx,
                    // Segments are bounded far below 4 GiB.
                    offset: u32::try_from(offset).unwrap_or(u32::MAX),
                };
                // Not cached here: caching every new link costs more than
                // the one log read a link's first click costs; reads fill
                // the cache.
                if !local.keydir.insert(link.key, location) {
                    taken.push(link.key);
                }
                records += 1;
            }
            if records > 0 {
                self.shared.metrics[self.core]
                    .batch_records
                    .observe(f64::from(records));
            }
        }
        if let IoResult::Fatal(reason) = &result {
            tracing::error!(core = self.core, "the log failed: {reason}");
        }
        let settled = local.log.io_done(result, now);
        self.shared
            .health
            .set(self.core, log_health(local.log.state()));
        for token in settled.durable {
            let op = token as OpId;
            let key = self.ops.get(op as usize).map_or(0, |e| e.key);
            if taken.contains(&key) {
                tracing::error!(
                    core = self.core,
                    "a new link's code was taken while its record was being written; the \
                     SHORTEN fails"
                );
                self.complete(
                    op,
                    OpResult::Failed(
                        ErrorCode::INTERNAL,
                        Cow::Borrowed("the link's code is already taken"),
                    ),
                );
                continue;
            }
            self.complete(op, OpResult::Stored(key));
        }
        if let Some(failure) = settled.failure {
            let code = match failure {
                crate::log::LogFailure::Broken => ErrorCode::INTERNAL,
                _ => ErrorCode::OVERLOADED,
            };
            for token in settled.failed {
                self.complete(
                    token as OpId,
                    OpResult::Failed(code, Cow::Borrowed(failure.message())),
                );
            }
        }
        settled.sealed
    }

    /// `Some(reason)` once the log has failed for good (the process must
    /// stop).
    pub fn log_broken(&self) -> Option<&str> {
        match self.local.as_ref()?.log.state() {
            LogState::Broken(reason) => Some(reason),
            _ => None,
        }
    }

    /// Marks this core's log as stalled (or recovered from a stall) in the
    /// process-wide health.
    pub fn set_stalled(&self, stalled: bool) {
        let Some(local) = self.local.as_ref() else {
            return;
        };
        let state = if stalled {
            StorageHealth::Stalled
        } else {
            log_health(local.log.state())
        };
        self.shared.health.set(self.core, state);
    }

    /// Begins a clean stop of the log (seal the current segment).
    pub fn begin_shutdown(&mut self) {
        if let Some(local) = self.local.as_mut() {
            local.log.begin_shutdown();
        }
    }

    /// `true` once the log has nothing left to do at a clean stop.
    pub fn is_shut_down(&self) -> bool {
        self.local.as_ref().is_none_or(|l| l.log.is_shut_down())
    }

    // ----- URL reads -----

    /// The next URL read for the backend.
    pub fn poll_read(&mut self) -> Option<UrlRead> {
        self.reads.pop_front()
    }

    /// `true` when reads wait to be issued.
    pub fn has_reads(&self) -> bool {
        !self.reads.is_empty()
    }

    /// Reports a URL read: `bytes` from the record's offset (possibly fewer
    /// than asked, at the end of the file).
    pub fn read_done(&mut self, read: UrlRead, result: io::Result<Bytes>) {
        self.metrics().url_read();
        let settle = |shard: &mut Self, result: OpResult| {
            let others = shard.reading.remove(&read.key).unwrap_or_default();
            for op in others {
                shard.complete(op, result.clone());
            }
            shard.complete(read.op, result);
        };
        let bytes = match result {
            Ok(bytes) => bytes,
            Err(err) => {
                tracing::error!(
                    file = read.file,
                    offset = read.offset,
                    "reading a URL failed: {err}"
                );
                // Every request that joined this read fails with it, and
                // the key is no longer being read: the next RESOLVE tries
                // again.
                return settle(
                    self,
                    OpResult::Failed(ErrorCode::INTERNAL, "the URL could not be read".into()),
                );
            }
        };
        match decode_record(&bytes) {
            Decoded::Record(Record::Link(link), _) if link.key == read.key => {
                let url = bytes.slice_ref(link.url);
                self.cache.insert(read.key, link.url);
                settle(self, OpResult::Url(url));
            }
            Decoded::Incomplete if read.len == URL_READ_LEN && bytes.len() == URL_READ_LEN => {
                // A longer record: read it whole.
                let body = u32::from_le_bytes(bytes[..4].try_into().unwrap_or_default()) as usize;
                self.reads.push_back(UrlRead {
                    len: RECORD_HEADER_LEN + body,
                    ..read
                });
            }
            other => {
                tracing::error!(
                    file = read.file,
                    offset = read.offset,
                    key = read.key,
                    "a stored link is damaged ({}); run `verify`",
                    match other {
                        Decoded::Record(..) => "it holds another key",
                        other => other.reason(),
                    }
                );
                settle(
                    self,
                    OpResult::Failed(ErrorCode::INTERNAL, "the stored URL is damaged".into()),
                );
            }
        }
    }

    // ----- the remote store -----

    /// The next request for the remote store.
    pub fn poll_remote(&mut self) -> Option<RemoteRequest> {
        self.remote.pop_front()
    }

    /// `true` when requests wait for the remote store.
    pub fn has_remote(&self) -> bool {
        !self.remote.is_empty()
    }

    /// Reports a remote store answer.
    pub fn remote_done(&mut self, op: OpId, result: OpResult) {
        let key = self.ops.get(op as usize).map(|e| e.key);
        match (&result, key) {
            (OpResult::Url(url), Some(key)) => self.cache.insert(key, url),
            (OpResult::Stored(key), _) => {
                // The new link is likely clicked soon; the URL is not at
                // hand here, so nothing is cached.
                let _ = key;
            }
            _ => {}
        }
        self.complete(op, result);
    }

    /// Cache hits and misses, and its use.
    pub fn cache_usage(&self) -> (usize, u64) {
        self.cache.usage()
    }
}

/// What a log's state means for the core's health.
fn log_health(state: &LogState) -> StorageHealth {
    match state {
        LogState::Available => StorageHealth::Ok,
        LogState::DiskFull => StorageHealth::DiskFull,
        LogState::Broken(_) => StorageHealth::Broken,
    }
}

/// A valid `Date` until the runtime sets the real one.
fn httpdate_fallback() -> String {
    "Thu, 01 Jan 1970 00:00:00 GMT".to_owned()
}
