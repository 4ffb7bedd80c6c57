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

use crate::abuse::BlocklistRing;
use crate::api::auth::{AuthError, KeyRing};
use crate::cache::UrlCache;
use crate::clicks::{ClickLimiter, LocalClicks};
use crate::codes::{Codec, IdAllocator, IdSpace};
use crate::health::{Health, StorageHealth};
use crate::keydir::{Ident, OwnedIdent, Target, TOMBSTONE};
use crate::keydir::{KeyDir, Location};
use crate::limits::{Action, Limited, Limits};
use crate::link::{Gone, LinkMeta, LinkPatch, Principal};
use crate::log::record::Seal;
use crate::log::record::{Keyed, ALIAS_KEY};
use crate::log::segments::{FileIdx, SegmentRef, SegmentTable};
use crate::log::{IoResult, LogIo, LogState, LogWriter};
use crate::metrics::CoreMetrics;
use crate::output::{OpId, Wait};
use crate::owners::Ownership;
use crate::settings::Settings;
use crate::stats::{self, ClickCounter, ClickMeta};
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
    /// `true` when that request's head is in and its body is arriving (a
    /// JSON API request): `--api-body-timeout` is added to its deadline.
    pub in_body: bool,
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
    /// Counts the clicks of links with a click limit (in memory unless
    /// the runtime gives it a durable one: [`Shared::with_clicks`]).
    pub clicks: Arc<dyn ClickLimiter>,
    /// Set by the runtime when click statistics are stored locally.
    pub stats: OnceLock<Box<dyn stats::StatsReader>>,
    /// The API keys valid now (the runtime re-reads them every second).
    pub keys: KeyRing,
    /// Rate limits (off unless configured).
    pub limits: Limits,
    /// Destinations refused (`--blocklist`, reloaded on `SIGHUP`).
    pub blocklist: BlocklistRing,
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
    /// Checks a key presented on the wire (the AUTH request's payload)
    /// exactly as the HTTP front checks `Authorization`: the caller whose
    /// scopes then govern the connection.
    ///
    /// # Errors
    /// [`AuthError::Invalid`] for a key that is not valid now.
    pub fn authenticate(&self, key: &[u8]) -> Result<Principal, AuthError> {
        self.keys.current().authenticate(key)
    }

    /// The creation limit key `key_id` has of its own, if any (`keys
    /// create --rate-create`), for `action`.
    pub fn key_create_rate(
        &self,
        action: crate::limits::Action,
        key_id: Option<u32>,
    ) -> Option<crate::limits::Rate> {
        match (action, key_id) {
            (crate::limits::Action::Create, Some(_)) => self.keys.current().create_rate(key_id),
            _ => None,
        }
    }

    /// Shared state for `cores` cores.
    pub fn new(settings: Settings, codec: Codec, store: StoreMode, cores: usize) -> Self {
        // The page's assets are compressed and hashed now, at start, not
        // by the first visitor's request on some core.
        if settings.ui {
            std::sync::LazyLock::force(&crate::page::ASSETS);
        }
        Self {
            policy: UrlPolicy::new(settings.max_url_bytes, settings.public_url.clone())
                .allow_userinfo(settings.allow_userinfo)
                .refuse_self_links(settings.refuse_self_links),
            settings,
            codec,
            store,
            health: Arc::new(Health::new(cores)),
            metrics: (0..cores).map(|_| CoreMetrics::default()).collect(),
            admin: OnceLock::new(),
            clicks: Arc::new(LocalClicks::default()),
            stats: OnceLock::new(),
            keys: KeyRing::default(),
            limits: Limits::default(),
            blocklist: BlocklistRing::default(),
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

    /// The same, with rate limits.
    pub fn with_limits(mut self, limits: Limits) -> Self {
        self.limits = limits;
        self
    }

    /// Counts click limits with `clicks` (the runtime's durable counter).
    pub fn with_clicks(mut self, clicks: Arc<dyn ClickLimiter>) -> Self {
        self.clicks = clicks;
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
    /// A link with options: redirect to `url` with its own status and
    /// query forwarding (the server's when `None`).
    Redirect {
        /// The long URL.
        url: Bytes,
        /// The link's own redirect status.
        status: Option<u16>,
        /// The link's own query forwarding.
        forward_query: Option<bool>,
    },
    /// The link is gone (expired, click limit, disabled): 410, or a
    /// redirect to its expired-URL.
    Gone {
        /// Why.
        reason: Gone,
        /// Where visitors go instead (expiry and click limit only).
        expired_url: Option<Box<str>>,
    },
    /// A link created, changed or read through the lifecycle operations.
    Link(Box<LinkView>),
    /// A link deleted.
    Deleted,
    /// A link's click statistics ([`crate::ops::stats`]).
    Stats(Box<stats::StatsView>),
    /// A page of one API key's links, newest first, from the remote
    /// store's per-key index (`RemoteRequest::List`).
    Page {
        /// The links, each still the key's.
        links: Vec<LinkView>,
        /// The store's cursor after the last one (`None`: no more).
        next: Option<Box<str>>,
    },
}

/// A link as the lifecycle operations return it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkView {
    /// Its code: the generated code or the alias.
    pub code: Box<str>,
    /// The long URL.
    pub url: Bytes,
    /// Its options.
    pub meta: LinkMeta,
    /// Its click statistics as the remote store holds them, read before
    /// the view was answered ([`RemoteRequest::Stats`]) so that rendering
    /// it waits on nothing; `None`: read from the local store when
    /// rendered (or no statistics).
    pub clicks: Option<stats::StoredRead>,
}

/// What an operation does once its read or its write is done.
#[derive(Debug)]
pub(crate) enum Then {
    /// After the read of the current record: write the update.
    Update {
        ident: OwnedIdent,
        version: u64,
        patch: Box<LinkPatch>,
        principal: Principal,
        now_ms: u64,
    },
    /// After the read: write the tombstone.
    Delete {
        ident: OwnedIdent,
        version: u64,
        principal: Principal,
        now_ms: u64,
    },
    /// After the read: answer with the link.
    Info { principal: Principal },
    /// After the read: answer with the link's click statistics (totals
    /// only without a query).
    Stats {
        principal: Principal,
        query: Option<crate::ops::stats::StatsQuery>,
    },
    /// The remote store is reading the link's statistics (under its
    /// statistics key `key`; totals only without a query): answer with
    /// them and this core's pending deltas. The caller's right to read
    /// them was checked before the read was asked.
    StatsRead {
        key: u64,
        query: Option<crate::ops::stats::StatsQuery>,
    },
    /// The remote store is reading the click totals of the links in
    /// `result` (a link or a page of them): answer with `result`, each
    /// link carrying its totals ([`LinkView::clicks`]).
    Totals { result: OpResult },
    /// A limited link's click is being counted by the remote store
    /// ([`RemoteRequest::Count`]): answer with `url` or 410 by its reply.
    Count { url: Bytes, meta: Arc<LinkMeta> },
    /// A mutation's record is being written with `version`: on failure,
    /// release the reservation; on durability, answer `outcome`.
    Written {
        ident: OwnedIdent,
        version: u64,
        outcome: OpResult,
    },
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
    /// What follows its read or write (lifecycle operations only).
    pub(crate) then: Option<Box<Then>>,
    /// The click a GET redirect waiting for its URL will count if it is
    /// answered with a redirect ([`crate::ops::resolve`]).
    pub(crate) click: Option<Box<stats::PendingClick>>,
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
    /// Read a link by its code or alias (a lifecycle operation's read, an
    /// alias's redirect): answered with [`RemoteReply::Link`], or
    /// `NotFound` (none, or deleted).
    Read {
        /// The operation waiting for it.
        op: OpId,
        /// Its code or alias.
        code: Box<str>,
    },
    /// Store a new link with options (version 0) under `alias`, only if
    /// that name holds nothing (nor a deleted alias's quarantine), or
    /// under a generated code: answered with [`RemoteReply::Written`].
    Create {
        /// The operation waiting for it.
        op: OpId,
        /// The alias, or `None` for a generated code.
        alias: Option<Box<str>>,
        /// The long URL.
        url: Bytes,
        /// The option list (format 3's TLVs, without the version: the
        /// store keeps it).
        options: Bytes,
    },
    /// Replace the live link `code` with this URL and options at the next
    /// version, atomically in the store (`NotFound` if it is gone).
    Update {
        /// The operation waiting for it.
        op: OpId,
        /// Its code or alias.
        code: Box<str>,
        /// The new URL.
        url: Bytes,
        /// The new option list (without the version).
        options: Bytes,
        /// The version the change was made from: the store refuses it if
        /// the link has changed since (another node's update), so no
        /// acknowledged change is undone.
        expected: u64,
    },
    /// Delete the live link `code` (`NotFound` if it is gone): a
    /// tombstone that keeps the name taken, for `quarantine_ms` (an alias)
    /// or for ever (`None`: a code is never handed out again).
    Delete {
        /// The operation waiting for it.
        op: OpId,
        /// Its code or alias.
        code: Box<str>,
        /// How long a deleted alias stays taken.
        quarantine_ms: Option<u64>,
        /// The click count to remove with it, named by the link's
        /// `created_at_ms` (see `Count`): asked for every delete, since
        /// an update may have removed the limit and left the count.
        count: Option<u64>,
    },
    /// A click of the limited link `code` (one life of it: created at
    /// `created_at_ms`), counted in the store so that every node shares
    /// one count: take one of `max` clicks if any is left (`take`), or
    /// only look. Answered with [`RemoteReply::Counted`].
    Count {
        /// The operation waiting for it.
        op: OpId,
        /// Its code or alias.
        code: Box<str>,
        /// The link's `created_at_ms` (0 if it has none).
        created_at_ms: u64,
        /// Its click limit.
        max: u64,
        /// A click (take one) or a look.
        take: bool,
        /// The link's expiry (Unix ms): a count the click creates expires
        /// with the link, so an expired link leaves no count behind.
        expires_at_ms: Option<u64>,
    },
    /// The click statistics of the links `keys` (statistics keys) over
    /// `[from_ms, to_ms)` (totals only when the range is empty), as the
    /// store holds them: answered with [`RemoteReply::Stats`], one entry
    /// per key in order. A read asked of the store thread like any other,
    /// so a core never waits on the store for statistics.
    Stats {
        /// The operation waiting for it.
        op: OpId,
        /// The links' statistics keys.
        keys: Vec<u64>,
        /// The first instant (inclusive).
        from_ms: u64,
        /// The end (exclusive).
        to_ms: u64,
        /// Hourly or daily rows.
        granularity: stats::Granularity,
    },
    /// A page of the links API key `owner` made, newest first, from the
    /// store's per-key index: answered with [`OpResult::Page`].
    List {
        /// The operation waiting for it.
        op: OpId,
        /// The key's id.
        owner: u32,
        /// The store's cursor: list what comes after it.
        after: Option<Box<str>>,
        /// At most this many links.
        limit: u32,
    },
}

impl RemoteRequest {
    /// The operation waiting for this request.
    pub fn op(&self) -> OpId {
        match self {
            RemoteRequest::Get { op, .. }
            | RemoteRequest::Put { op, .. }
            | RemoteRequest::Read { op, .. }
            | RemoteRequest::Create { op, .. }
            | RemoteRequest::Update { op, .. }
            | RemoteRequest::Delete { op, .. }
            | RemoteRequest::List { op, .. }
            | RemoteRequest::Stats { op, .. }
            | RemoteRequest::Count { op, .. } => *op,
        }
    }
}

/// A remote store's answer to a [`RemoteRequest`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RemoteReply {
    /// The outcome as it is (a plain link's URL, a SHORTEN's key, 404, a
    /// failure).
    Done(OpResult),
    /// A link with options, or any link a `Read` asked for.
    Link {
        /// The long URL.
        url: Bytes,
        /// Its options (`None`: a plain link).
        meta: Option<LinkMeta>,
        /// Its version (0: never changed).
        version: u64,
    },
    /// A `Count`: whether a click was left (and, for a click, taken).
    Counted {
        /// `false`: the limit is reached.
        left: bool,
    },
    /// A `Stats` read: each key's stored statistics, in the request's
    /// order, or why they could not be read (an error, or no answer
    /// within its bound).
    Stats(Result<Vec<stats::StoredStats>, Box<str>>),
    /// A `Create`, `Update` or `Delete` is stored and confirmed.
    Written {
        /// The generated code's key (a `Create` without alias).
        key: Option<u64>,
        /// The version written.
        version: u64,
    },
}

impl From<OpResult> for RemoteReply {
    fn from(result: OpResult) -> Self {
        RemoteReply::Done(result)
    }
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
    /// The keys of the next few ids, for the generator's prefetch.
    pub(crate) ahead: crate::codes::KeysAhead,
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
    /// Shared, not copied, by each response that needs it (a redirect
    /// allocates nothing); replaced once a second.
    pub(crate) date: Arc<str>,
    /// The wall clock: Unix ms at an instant, set with the date.
    pub(crate) wall: (Instant, u64),
    /// The key directory's mutation epoch this core's cache reflects.
    pub(crate) seen_epoch: u64,
    /// The latest request's `now`: what a read that completes later
    /// judges expiry by (sans-IO: no clock is read). Kept as an `Instant`
    /// and turned into Unix ms only for links with options, so a plain
    /// link's redirect pays nothing for it.
    pub(crate) last_now: Instant,
    /// Failed URL reads are logged at most once a second.
    pub(crate) read_failures: crate::throttle::Throttle,
    /// This core's pending click deltas, handed to the stats writer every
    /// `--stats-flush`.
    pub stats: ClickCounter,
    /// With a remote store: when this core's cache is emptied next.
    pub(crate) cache_until: Instant,
    /// The peer of the connection whose input is being handled.
    pub(crate) peer: Option<std::net::IpAddr>,
}

impl Shard {
    /// Core `core`'s shard.
    pub fn new(shared: Arc<Shared>, core: usize) -> Self {
        let local = match &shared.store {
            StoreMode::Local(store) => Some(LocalShard {
                ids: IdAllocator::new(store.ids.clone()),
                log: LogWriter::new(shared.settings.log.clone(), store.segments.clone()),
                keydir: store.keydir.clone(),
                ahead: Default::default(),
            }),
            StoreMode::Remote => None,
        };
        Self {
            cache: UrlCache::new(shared.settings.cache_bytes_per_core),
            stats: ClickCounter::new(shared.settings.stats),
            shared,
            core,
            local,
            ops: Slab::new(),
            reads: Default::default(),
            reading: Default::default(),
            remote: Default::default(),
            wake: Vec::new(),
            date: Arc::from(httpdate_fallback()),
            wall: (Instant::now(), 0),
            seen_epoch: 0,
            last_now: Instant::now(),
            read_failures: Default::default(),
            cache_until: Instant::now(),
            peer: None,
        }
    }

    /// Sets the wall clock: `unix_ms` at `at` (the runtime sets it with the
    /// date; tests set what they like). Expiry is judged by it, so by the
    /// serving node's clock.
    pub fn set_wall_clock(&mut self, at: Instant, unix_ms: u64) {
        self.wall = (at, unix_ms);
    }

    /// Unix ms at `now`.
    pub fn now_ms(&self, now: Instant) -> u64 {
        let since = now.saturating_duration_since(self.wall.0).as_millis();
        self.wall
            .1
            .saturating_add(u64::try_from(since).unwrap_or(u64::MAX))
    }

    /// Evicts from this core's cache what other cores (or this one)
    /// changed since it last looked: one atomic load when nothing did.
    #[inline]
    pub(crate) fn sync_epoch(&mut self) {
        let Some(local) = &self.local else {
            return;
        };
        let epoch = local.keydir.epoch();
        if epoch == self.seen_epoch {
            return;
        }
        match local.keydir.mutated_since(self.seen_epoch) {
            Some(keys) => keys.into_iter().for_each(|key| self.cache.remove(key)),
            None => self.cache.clear(),
        }
        self.seen_epoch = epoch;
    }

    /// One link's statistics over `[from_ms, to_ms)`: what the store holds
    /// plus this core's deltas it does not hold yet (pending, or handed
    /// over and not yet applied; other cores' reach the store within one
    /// `--stats-flush`). `None` when no reader is set (`--stats off`,
    /// or a Redis store, read through [`RemoteRequest::Stats`] instead).
    /// For INFO's totals and the STATS request / JSON API.
    ///
    /// # Errors
    /// The store's.
    pub fn stats_view(
        &self,
        key: u64,
        from_ms: u64,
        to_ms: u64,
        granularity: stats::Granularity,
    ) -> Option<io::Result<stats::StatsView>> {
        let reader = self.shared.stats.get()?;
        Some(
            reader
                .stored(key, from_ms, to_ms, granularity)
                .map(|stored| self.stats.view(key, &stored, from_ms, to_ms, granularity)),
        )
    }

    /// `true` when click statistics are read from the remote store
    /// (asked through [`RemoteRequest::Stats`], never on this core): a
    /// remote store with statistics on and no reader of their own.
    pub(crate) fn reads_stats_remotely(&self) -> bool {
        self.local.is_none() && self.stats.enabled() && self.shared.stats.get().is_none()
    }

    /// Counts an answered redirect of `key` in the statistics: called by
    /// [`crate::ops::resolve`] only, where a GET's redirect is decided (see
    /// ARCHITECTURE.md, "Clicks: statistics and limits").
    pub(crate) fn count_click(&mut self, key: u64, meta: &ClickMeta<'_>, now: Instant) {
        if meta.head || !self.stats.enabled() || key == ALIAS_KEY {
            return;
        }
        let now_ms = self.now_ms(now);
        self.stats.record(key, meta, now_ms);
        self.shared.metrics[self.core].click(meta.bot);
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
        if *self.date != *date {
            self.date = Arc::from(date);
        }
    }

    /// Sets the peer whose input the next `handle_*` calls handle (rate
    /// limits count per client).
    pub fn set_peer(&mut self, peer: Option<std::net::IpAddr>) {
        self.peer = peer;
    }

    /// Counts `action` against the limits.
    pub(crate) fn limit(
        &self,
        action: Action,
        key_id: Option<u32>,
        now: Instant,
    ) -> Result<(), Limited> {
        let key_rate = self.shared.key_create_rate(action, key_id);
        self.shared
            .limits
            .check_with(action, self.peer, key_id, key_rate, now)
    }

    /// The HTTP `Date` value.
    pub fn date(&self) -> &str {
        &self.date
    }

    /// Operations in flight.
    pub fn ops_in_flight(&self) -> usize {
        self.ops.len()
    }

    /// `true` while a write connection `conn` asked for earlier (an alias
    /// created, a link updated or deleted: [`Output::hold_after`](crate::output::Output::hold_after)) is in
    /// flight: its later requests must wait, unread, for it.
    ///
    /// Why: a connection's requests take effect in the order they were
    /// sent, as its replies come back in that order (Redis does the same
    /// for a pipeline). Without the wait, a RESOLVE or DELETE pipelined
    /// behind the SHORTEN2 that creates its alias ran before the alias
    /// was durable, and answered 404 while the create answered OK (review
    /// 11). A generated code is not held for: no request can name it
    /// before its reply, so pipelined SHORTENs still share one commit.
    pub fn held_back(&mut self, conn: u32, out: &mut crate::output::Output) -> bool {
        // A finished operation's slot may be reused by another
        // connection's: only this connection's, still in flight, holds.
        // One answered 503 at its deadline (`--commit-timeout`: "it may
        // still have been stored") is abandoned but still in flight, and
        // holds until its outcome is known (review 12: the requests behind
        // it ran at once, and the write landed after them).
        out.holds_in_flight(|op| {
            self.ops.get(op as usize).is_some_and(|e| {
                e.conn == conn && matches!(e.state, OpState::Waiting | OpState::Abandoned)
            })
        })
    }

    pub(crate) fn new_op(&mut self, conn: u32, key: u64) -> OpId {
        self.ops.insert(OpEntry {
            conn,
            key,
            state: OpState::Waiting,
            then: None,
            click: None,
        }) as OpId
    }

    /// The click operation `op` carries, if its connection still waits for
    /// it: an abandoned operation's redirect is never answered, so it is
    /// no click.
    pub(crate) fn take_click(&mut self, op: OpId) -> Option<Box<stats::PendingClick>> {
        let entry = self.ops.get_mut(op as usize)?;
        match entry.state {
            OpState::Waiting => entry.click.take(),
            _ => None,
        }
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
                // Its connection may be held behind it (`held_back`).
                self.wake.push(self.ops.remove(op as usize).conn);
            }
            OpState::Done(_) => {}
        }
    }

    /// The outcome of operation `op` once it settled (it is then
    /// forgotten), `None` while it waits. For fronts that render outside
    /// [`Output`](crate::output::Output) waits, and for tests.
    pub fn take_result(&mut self, op: OpId) -> Option<OpResult> {
        match self.ops.get(op as usize).map(|e| &e.state) {
            Some(OpState::Done(_)) => match self.ops.remove(op as usize).state {
                OpState::Done(result) => Some(result),
                _ => None,
            },
            _ => None,
        }
    }

    /// The connections whose operations settled since the last call.
    pub fn take_wakes(&mut self) -> std::vec::Drain<'_, u32> {
        self.wake.drain(..)
    }

    /// A connection going away stops waiting for `wait`.
    pub fn abandon(&mut self, wait: &Wait) {
        let ops = match wait {
            Wait::Op { op, .. } => std::slice::from_ref(op),
            Wait::Many { ops, .. } => ops,
            Wait::Until(_) => &[],
        };
        for &op in ops {
            if let Some(entry) = self.ops.get_mut(op as usize) {
                if matches!(entry.state, OpState::Waiting) {
                    entry.state = OpState::Abandoned;
                } else {
                    self.ops.remove(op as usize);
                }
            }
        }
    }

    /// An operation whose outcome is known at once, for a [`Wait::Many`]
    /// that waits for others beside it.
    pub(crate) fn settled_op(&mut self, conn: u32, result: OpResult) -> OpId {
        self.ops.insert(OpEntry {
            conn,
            key: 0,
            state: OpState::Done(result),
            then: None,
            click: None,
        }) as OpId
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
            // Prefetch the slots of the whole batch's new keys first, so
            // their misses overlap instead of stalling one insert each.
            for (record, _) in batch.keyed() {
                if let Keyed::Link(link) = record {
                    if link.version() == 0 && link.key != ALIAS_KEY {
                        local.keydir.prefetch(link.key);
                    }
                }
            }
            let mut records = 0;
            for (record, offset) in batch.keyed() {
                let file = batch.segment.idx;
                // Segments are bounded far below 4 GiB.
                let offset = u32::try_from(offset).unwrap_or(TOMBSTONE - 1);
                match record {
                    // A generated link: new, version 0, as before options.
                    // Not cached here: caching every new link costs more
                    // than the one log read a link's first click costs;
                    // reads fill the cache.
                    Keyed::Link(link) if link.version() == 0 && link.key != ALIAS_KEY => {
                        if !local.keydir.insert(link.key, Location { file, offset }) {
                            taken.push(link.key);
                        } else if let Some(o) = Ownership::of_options(link.options) {
                            local.keydir.index_owned(Ident::Key(link.key), 0, o);
                        }
                    }
                    // A claimed alias, an update, a delete: its version was
                    // reserved under the key directory's lock; installed
                    // unless a newer one already is (then it was overtaken:
                    // still acknowledged, a valid order of two concurrent
                    // requests).
                    record => {
                        let alias = record
                            .side_alias()
                            .and_then(|a| std::str::from_utf8(a).ok());
                        let ident = match alias {
                            Some(alias) => Ident::Alias(alias),
                            None => Ident::Key(record.key()),
                        };
                        let target = match record {
                            Keyed::Link(_) => Target::Live(Location { file, offset }),
                            Keyed::Tombstone(t) => Target::Deleted {
                                file,
                                deleted_at_ms: t.deleted_at_ms,
                            },
                        };
                        let installed = local.keydir.install(ident, target, record.version());
                        // A claimed alias or an update of a link made with
                        // a key (an update keeps its owner and place).
                        if let (true, Keyed::Link(link)) = (installed, record) {
                            if let Some(o) = Ownership::of_options(link.options) {
                                local.keydir.index_owned(ident, link.version(), o);
                            }
                        }
                    }
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
        let keydir = local.keydir.clone();
        for token in settled.durable {
            let op = token as OpId;
            let (key, then) = match self.ops.get_mut(op as usize) {
                Some(e) => (e.key, e.then.take()),
                None => (0, None),
            };
            let then = then.map(|t| *t);
            // A new generated code (version 0) another create claimed
            // between the choice of its id and its durability: its record
            // is durable but the code is not its, so it is never
            // acknowledged (the claim's higher version wins on recovery).
            let plain_create = match &then {
                None => true,
                Some(Then::Written { version, .. }) => *version == 0,
                Some(_) => false,
            };
            if let (Some(Then::Written { outcome, .. }), false) =
                (then, plain_create && taken.contains(&key))
            {
                self.complete(op, outcome);
                continue;
            }
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
                let op = token as OpId;
                let then = self.ops.get_mut(op as usize).and_then(|e| e.then.take());
                if let Some(Then::Written { ident, version, .. }) = then.map(|t| *t) {
                    // Not written: the version and the claim are free again.
                    keydir.release(ident.as_ident(), version);
                }
                self.complete(op, OpResult::Failed(code, Cow::Borrowed(failure.message())));
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
    pub fn remote_done(&mut self, op: OpId, reply: RemoteReply) {
        // Any answer ends the operation's statistics read, if it had one
        // (an error or a timeout comes as `Done`).
        self.stats.read_finished(op);
        let key = self.ops.get(op as usize).map(|e| e.key);
        match reply {
            RemoteReply::Done(result) => {
                if let OpResult::Url(_) = result {
                    // A plain remote link has no options (no limit): a GET
                    // that is still waiting is answered with this
                    // redirect, so it is a click.
                    if let Some(click) = self.take_click(op) {
                        self.count_click(click.key, &click.meta(), self.last_now);
                    }
                }
                if let (OpResult::Url(url), Some(key)) = (&result, key) {
                    if key != ALIAS_KEY {
                        self.cache.insert(key, url, None);
                    }
                }
                // A lifecycle operation's read or write failed (or found
                // nothing): nothing is reserved with a remote store, so
                // what followed is merely dropped.
                if let Some(entry) = self.ops.get_mut(op as usize) {
                    entry.then = None;
                }
                // A page of links waits for their click totals.
                crate::ops::stats::complete_views(self, op, result);
            }
            RemoteReply::Link { url, meta, version } => {
                let meta = meta.map(|mut m| {
                    m.version = version;
                    m
                });
                crate::ops::lifecycle::remote_read(self, op, url, meta, version);
            }
            RemoteReply::Written { key: code, version } => {
                crate::ops::lifecycle::remote_written(self, op, code, version);
            }
            RemoteReply::Counted { left } => crate::ops::resolve::remote_counted(self, op, left),
            RemoteReply::Stats(read) => crate::ops::stats::remote_stats(self, op, read),
        }
    }

    /// With a remote store, links changed on another node are seen here
    /// within `--store-cache-ttl`: every entry of the core's cache expires
    /// that often (one counter, no time per entry, nothing dropped at
    /// once; a hot link costs one store read per interval and core).
    #[inline]
    pub(crate) fn expire_remote_cache(&mut self, now: Instant) {
        if self.local.is_none() && now >= self.cache_until {
            self.cache.expire_all();
            self.cache_until = now + self.shared.settings.remote_cache_ttl;
        }
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
fn httpdate_fallback() -> &'static str {
    "Thu, 01 Jan 1970 00:00:00 GMT"
}
