//! Click statistics, sans-IO: counting on the redirect path, the stored
//! rows' formats, and the read side's view.
//!
//! Counting ([`ClickCounter`]) happens on the core that answered the
//! redirect, in a plain map of pending deltas: no lock, no syscall, and no
//! allocation for a link already in the map this interval (a link's first
//! click of an interval inserts it; a click in a second hour of the same
//! interval, or from a referring host not yet seen this interval, stores
//! that hour or host). Every `--stats-flush` the runtime swaps the map out
//! ([`ClickCounter::take`]) and hands it to a writer off the serving cores;
//! what a crash loses is the map not yet handed over: at most one interval.
//!
//! Nothing personal is kept: no address, no full user agent, only whether
//! the user agent is a bot's and the host of `Referer`.

mod bots;
mod view;

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

pub use bots::BotDetector;
pub use view::{
    day_of, decode_totals, encode_totals, hour_of, series, Granularity, LinkTotals, SeriesRow,
    StatsView, TopReferrers, DAY_MS, HOUR_MS, MAX_BUCKETS, REFERRER_SLOTS, TOP_REFERRERS,
};

/// What the fronts read statistics through: the runtime's store, set once
/// at start ([`crate::shard::Shared::stats`]).
pub trait StatsReader: Send + Sync {
    /// One link's stored totals and rows over `[from_ms, to_ms)`, all read
    /// at one instant, with the last hand-over ([`ClickCounter::handed`])
    /// they hold, if the store keeps count: what a core adds its own
    /// deltas to ([`ClickCounter::unstored`]).
    ///
    /// # Errors
    /// The store's.
    fn stored(
        &self,
        key: u64,
        from_ms: u64,
        to_ms: u64,
        granularity: Granularity,
    ) -> std::io::Result<StoredStats>;

    /// One link's stored totals.
    ///
    /// # Errors
    /// The store's.
    fn totals(&self, key: u64) -> std::io::Result<Option<LinkTotals>> {
        Ok(self.stored(key, 0, 0, Granularity::Hour)?.totals)
    }

    /// One link's stored statistics over `[from_ms, to_ms)`, without any
    /// core's deltas (for tools).
    ///
    /// # Errors
    /// The store's.
    fn view(
        &self,
        key: u64,
        from_ms: u64,
        to_ms: u64,
        granularity: Granularity,
    ) -> std::io::Result<StatsView> {
        let stored = self.stored(key, from_ms, to_ms, granularity)?;
        Ok(series(
            stored.totals.as_ref(),
            &stored.rows,
            [],
            from_ms,
            to_ms,
            granularity,
        ))
    }
}

/// One link's statistics as a store holds them, before any core's pending
/// deltas are added: what a remote store answers a statistics read with
/// ([`crate::shard::RemoteRequest::Stats`]), so that the core builds the
/// view ([`series`]) without waiting on the store.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct StoredStats {
    /// The totals (`None`: the store has none).
    pub totals: Option<LinkTotals>,
    /// The stored buckets in the range read: hours or days since the
    /// epoch, by the read's granularity.
    pub rows: Vec<SeriesRow>,
    /// The last hand-over of this process's cores ([`ClickCounter::handed`])
    /// whose deltas these hold, if the store keeps count (the data
    /// directory's store per batch, Redis per link; a tool's read knows
    /// none): the reading core then adds those of its handed-over deltas
    /// the store did not have yet, so that a read never misses clicks on
    /// their way to the store, nor counts them twice.
    pub applied: Option<u64>,
}

/// What a statistics read of a remote store gives: each link's stored
/// statistics, or why they could not be read.
pub type StoredRead = Result<StoredStats, Box<str>>;

/// Longest referring host kept (DNS names are at most 253 bytes).
pub const MAX_HOST_BYTES: usize = 253;

/// Distinct referring hosts one link keeps per interval; past it the
/// least counted one gives its slot to the new host (space-saving, so the
/// heavy hitters survive).
pub const PENDING_REFERRERS: usize = 16;

/// What the HTTP front knows about one redirect, for counting it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ClickMeta<'a> {
    /// A `HEAD` request: never counted.
    pub head: bool,
    /// The user agent is a bot's (link previewers, crawlers, tools).
    pub bot: bool,
    /// The host of `Referer` (see [`referrer_host`]), if it had one; stored
    /// lowercased.
    pub referrer_host: Option<&'a str>,
}

impl ClickMeta<'_> {
    /// An owned copy, for a redirect answered after an asynchronous read.
    pub fn to_owned_click(&self, key: u64) -> PendingClick {
        PendingClick {
            key,
            head: self.head,
            bot: self.bot,
            referrer_host: self.referrer_host.map(Box::from),
        }
    }
}

/// A click waiting for its link's URL (a log read or a remote GET): counted
/// when the redirect is answered, not before.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingClick {
    /// The link.
    pub key: u64,
    /// A `HEAD` request.
    pub head: bool,
    /// A bot's.
    pub bot: bool,
    /// The host of `Referer`.
    pub referrer_host: Option<Box<str>>,
}

impl PendingClick {
    /// Its [`ClickMeta`].
    pub fn meta(&self) -> ClickMeta<'_> {
        ClickMeta {
            head: self.head,
            bot: self.bot,
            referrer_host: self.referrer_host.as_deref(),
        }
    }
}

/// The host of a `Referer` value (`https://Host:port/path` → `host`), or
/// `None` when it is not an absolute http(s) URL with a sane host. Only the
/// host is ever kept: paths and queries can be personal.
pub fn referrer_host(referer: &str) -> Option<&str> {
    let (scheme, rest) = referer.split_once("://")?;
    if !scheme.eq_ignore_ascii_case("http") && !scheme.eq_ignore_ascii_case("https") {
        return None;
    }
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    // Drop user information, then the port (an IPv6 literal keeps its
    // brackets).
    let host = authority.rsplit('@').next().unwrap_or_default();
    let host = if host.starts_with('[') {
        host.split_inclusive(']').next().unwrap_or_default()
    } else {
        host.split(':').next().unwrap_or_default()
    };
    let valid = !host.is_empty()
        && host.len() <= MAX_HOST_BYTES
        && host.bytes().all(|b| {
            b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_' | b'[' | b']' | b':')
        });
    valid.then_some(host)
}

/// Clicks of one hour within one interval.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct HourDelta {
    /// Hours since the Unix epoch.
    pub hour: u32,
    /// Human clicks.
    pub human: u32,
    /// Bot clicks.
    pub bot: u32,
}

/// One link's clicks during one interval.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pending {
    /// Human clicks.
    pub human: u64,
    /// Bot clicks.
    pub bot: u64,
    /// The first click's time (Unix ms).
    pub first_ms: u64,
    /// The last click's time (Unix ms).
    pub last_ms: u64,
    /// The hour of the interval's latest clicks, kept inline: an interval
    /// (at most a minute) rarely spans two hours.
    pub hour: HourDelta,
    /// Earlier hours of the same interval (empty, unallocated, nearly
    /// always).
    pub earlier_hours: Vec<HourDelta>,
    /// Referring hosts and their clicks this interval (at most
    /// [`PENDING_REFERRERS`]).
    pub referrers: Vec<(Box<str>, u32)>,
}

impl Pending {
    fn new(hour: u32, now_ms: u64) -> Self {
        Self {
            human: 0,
            bot: 0,
            first_ms: now_ms,
            last_ms: now_ms,
            hour: HourDelta {
                hour,
                human: 0,
                bot: 0,
            },
            earlier_hours: Vec::new(),
            referrers: Vec::new(),
        }
    }

    /// Every hour this interval touched, oldest first.
    pub fn hours(&self) -> impl Iterator<Item = &HourDelta> {
        self.earlier_hours.iter().chain(std::iter::once(&self.hour))
    }

    /// The slot of `hour`, made if the interval has none yet.
    fn hour_slot(&mut self, hour: u32) -> &mut HourDelta {
        if hour == self.hour.hour {
            &mut self.hour
        } else if let Some(i) = self.earlier_hours.iter().position(|h| h.hour == hour) {
            &mut self.earlier_hours[i]
        } else if hour > self.hour.hour {
            // A new hour began within the interval.
            let previous = std::mem::replace(
                &mut self.hour,
                HourDelta {
                    hour,
                    human: 0,
                    bot: 0,
                },
            );
            self.earlier_hours.push(previous);
            &mut self.hour
        } else {
            // The wall clock stepped back across an hour.
            self.earlier_hours.push(HourDelta {
                hour,
                human: 0,
                bot: 0,
            });
            self.earlier_hours.last_mut().expect("just pushed")
        }
    }

    /// Counts `count` clicks from `host` (lowercased), within
    /// [`PENDING_REFERRERS`] hosts: past it the least counted host gives
    /// its slot (space-saving, so the heavy hitters survive).
    fn add_referrer(&mut self, host: &str, count: u32) {
        if let Some(entry) = self
            .referrers
            .iter_mut()
            .find(|(h, _)| h.eq_ignore_ascii_case(host))
        {
            entry.1 = entry.1.saturating_add(count);
        } else if self.referrers.len() < PENDING_REFERRERS {
            self.referrers
                .push((host.to_ascii_lowercase().into_boxed_str(), count));
        } else if let Some(min) = self.referrers.iter_mut().min_by_key(|(_, c)| *c) {
            // Space-saving: the new host inherits the evicted count.
            *min = (
                host.to_ascii_lowercase().into_boxed_str(),
                min.1.saturating_add(count),
            );
        }
    }

    fn add(&mut self, meta: &ClickMeta<'_>, hour: u32, now_ms: u64) {
        self.first_ms = self.first_ms.min(now_ms);
        self.last_ms = self.last_ms.max(now_ms);
        let slot = self.hour_slot(hour);
        if meta.bot {
            slot.bot = slot.bot.saturating_add(1);
            self.bot += 1;
        } else {
            slot.human = slot.human.saturating_add(1);
            self.human += 1;
        }
        if let Some(host) = meta.referrer_host {
            // Host names are case-insensitive: stored lowercased.
            self.add_referrer(host, 1);
        }
    }

    /// Adds `other`'s clicks (the same link's, of another interval) into
    /// this one, as if they had been counted here.
    pub fn absorb(&mut self, other: &Pending) {
        self.human += other.human;
        self.bot += other.bot;
        self.first_ms = self.first_ms.min(other.first_ms);
        self.last_ms = self.last_ms.max(other.last_ms);
        for h in other.hours() {
            let slot = self.hour_slot(h.hour);
            slot.human = slot.human.saturating_add(h.human);
            slot.bot = slot.bot.saturating_add(h.bot);
        }
        for (host, count) in &other.referrers {
            self.add_referrer(host, *count);
        }
    }

    /// Total clicks this interval.
    pub fn total(&self) -> u64 {
        self.human + self.bot
    }
}

/// One core's pending click deltas: key → [`Pending`].
///
/// Hashed with foldhash (seeded per process), not std's SipHash: the map is
/// touched on every counted click, and SipHash was most of a click's cost
/// (cachegrind, README); a random seed keeps its resistance to keys chosen
/// to collide.
pub type ClickMap = HashMap<u64, Pending, foldhash::fast::RandomState>;

/// One core's click counter.
#[derive(Debug)]
pub struct ClickCounter {
    enabled: bool,
    bots: BotDetector,
    map: ClickMap,
    /// The map's capacity after the last interval, so the next one starts
    /// at a size that needs no growth.
    capacity: usize,
    /// Maps handed to the store ([`handed`](Self::handed)) and not yet
    /// known to be in it, by hand-over number (rising): a read adds those
    /// the store had not applied when it was read, so clicks on their way
    /// to the store are never missing from a read (they were, for a flush's
    /// moment: a count went down, then up again).
    handed: VecDeque<(u64, Arc<ClickMap>)>,
    /// The last `done` [`settle`](Self::settle) was told.
    known_done: u64,
    /// Statistics reads of a remote store still out: the operation, and
    /// `known_done` when it was asked. A map the writer finished after
    /// that may have reached the store after the read did, so it is kept
    /// until the read is answered ([`read_finished`](Self::read_finished)).
    reads: Vec<(u32, u64)>,
}

impl ClickCounter {
    /// A counter; a disabled one (`--stats off`) counts nothing.
    pub fn new(enabled: bool) -> Self {
        Self {
            enabled,
            bots: BotDetector::new(),
            map: ClickMap::default(),
            capacity: 0,
            handed: VecDeque::new(),
            known_done: 0,
            reads: Vec::new(),
        }
    }

    /// Whether clicks are counted.
    pub fn enabled(&self) -> bool {
        self.enabled
    }

    /// Whether `user_agent` is a bot's (see [`BotDetector`]).
    pub fn is_bot(&mut self, user_agent: Option<&str>) -> bool {
        self.bots.is_bot(user_agent)
    }

    /// Counts one answered redirect of `key` at `now_ms` (Unix ms). `HEAD`
    /// requests are not clicks.
    pub fn record(&mut self, key: u64, meta: &ClickMeta<'_>, now_ms: u64) {
        if !self.enabled || meta.head {
            return;
        }
        let hour = hour_of(now_ms);
        self.map
            .entry(key)
            .or_insert_with(|| Pending::new(hour, now_ms))
            .add(meta, hour, now_ms);
    }

    /// Links with clicks pending.
    pub fn pending_links(&self) -> usize {
        self.map.len()
    }

    /// The pending deltas of `key`, if it has any.
    pub fn pending(&self, key: u64) -> Option<&Pending> {
        self.map.get(&key)
    }

    /// The deltas of `key` a store read (`applied`:
    /// [`StoredStats::applied`]) did not include: those pending here, and
    /// those handed over after hand-over `applied`. A store that keeps no
    /// count (`None`) gets the pending ones only.
    pub fn unstored(&self, key: u64, applied: Option<u64>) -> impl Iterator<Item = &Pending> {
        // No count: no handed map is after `u64::MAX`.
        let after = applied.unwrap_or(u64::MAX);
        self.handed
            .iter()
            .filter(move |(n, _)| *n > after)
            .filter_map(move |(_, map)| map.get(&key))
            .chain(self.map.get(&key))
    }

    /// The view of `key` over `[from_ms, to_ms)`: what a store read
    /// (`stored`) holds plus the deltas it did not include
    /// ([`unstored`](Self::unstored)). Every read of a core, local store,
    /// remote store or none (an empty `stored`), is built here.
    pub fn view(
        &self,
        key: u64,
        stored: &StoredStats,
        from_ms: u64,
        to_ms: u64,
        granularity: Granularity,
    ) -> StatsView {
        series(
            stored.totals.as_ref(),
            &stored.rows,
            self.unstored(key, stored.applied),
            from_ms,
            to_ms,
            granularity,
        )
    }

    /// Records that `map` (this counter's [`take`](Self::take)) went to
    /// the store as hand-over `number`; it stays readable until
    /// [`settle`](Self::settle) says the store is done with it.
    pub fn handed(&mut self, number: u64, map: Arc<ClickMap>) {
        self.handed.push_back((number, map));
    }

    /// Forgets the maps handed over up to hand-over `done` (the writer is
    /// done with them: applied, or lost with a batch the store refused),
    /// except those a remote read still out may not have seen.
    pub fn settle(&mut self, done: u64) {
        self.known_done = self.known_done.max(done);
        let keep_after = self.reads.iter().map(|&(_, floor)| floor).min();
        let through = keep_after.map_or(done, |floor| floor.min(done));
        while self.handed.front().is_some_and(|(n, _)| *n <= through) {
            self.handed.pop_front();
        }
    }

    /// A statistics read of a remote store was asked for operation `op`:
    /// until it is answered, the maps the writer finishes are kept, since
    /// the store may have applied them after it read.
    pub fn read_started(&mut self, op: u32) {
        self.reads.push((op, self.known_done));
    }

    /// Remote statistics reads still out.
    pub fn reads_out(&self) -> usize {
        self.reads.len()
    }

    /// Operation `op`'s remote read (if it had one) was answered.
    pub fn read_finished(&mut self, op: u32) {
        if let Some(i) = self.reads.iter().position(|&(o, _)| o == op) {
            self.reads.swap_remove(i);
        }
    }

    /// Maps handed over and not yet settled.
    pub fn unsettled(&self) -> usize {
        self.handed.len()
    }

    /// Hands the interval's deltas over (a swap: nothing is copied) and
    /// starts the next interval with a map of the same capacity, allocated
    /// here, off the redirect path's critical moment.
    pub fn take(&mut self) -> ClickMap {
        if self.map.is_empty() {
            return ClickMap::default();
        }
        self.capacity = self.capacity.max(self.map.capacity());
        std::mem::replace(
            &mut self.map,
            HashMap::with_capacity_and_hasher(self.capacity, Default::default()),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0: u64 = 1_700_000_000_000;

    fn human(host: Option<&str>) -> ClickMeta<'_> {
        ClickMeta {
            head: false,
            bot: false,
            referrer_host: host,
        }
    }

    #[test]
    fn handed_maps_stay_readable_until_settled_and_while_a_remote_read_is_out() {
        let mut c = ClickCounter::new(true);
        c.record(1, &human(None), T0);
        let map = Arc::new(c.take());
        c.handed(1, map);
        c.record(1, &human(None), T0 + 1);
        let total = |c: &ClickCounter, applied: Option<u64>| -> u64 {
            c.unstored(1, applied).map(Pending::total).sum()
        };
        assert_eq!(total(&c, Some(0)), 2, "handed over, not applied");
        assert_eq!(total(&c, Some(1)), 1, "applied: only the pending one");
        assert_eq!(total(&c, None), 1, "a store that keeps no count");
        // A remote read asked before the writer finished hand-over 1: the
        // store may have applied it after it read, so it stays.
        c.read_started(7);
        c.settle(1);
        assert_eq!(c.unsettled(), 1);
        assert_eq!(total(&c, Some(0)), 2);
        c.read_finished(8); // another operation's answer
        c.settle(1);
        assert_eq!(c.unsettled(), 1);
        // A read asked after the core knew of hand-over 1 does not hold it.
        c.read_finished(7);
        c.read_started(9);
        c.settle(1);
        assert_eq!(c.unsettled(), 0);
        c.read_finished(9);
        assert_eq!(total(&c, Some(0)), 1);
    }

    #[test]
    fn counts_humans_bots_and_never_head() {
        let mut c = ClickCounter::new(true);
        c.record(1, &human(None), T0);
        c.record(1, &human(None), T0 + 5);
        c.record(
            1,
            &ClickMeta {
                bot: true,
                ..Default::default()
            },
            T0 + 7,
        );
        c.record(
            1,
            &ClickMeta {
                head: true,
                ..Default::default()
            },
            T0 + 9,
        );
        let p = c.pending(1).unwrap();
        assert_eq!((p.human, p.bot, p.first_ms, p.last_ms), (2, 1, T0, T0 + 7));
        assert_eq!(c.pending_links(), 1);
        let map = c.take();
        assert_eq!(map.len(), 1);
        assert_eq!(c.pending_links(), 0);
        let mut off = ClickCounter::new(false);
        off.record(1, &human(None), T0);
        assert_eq!(off.pending_links(), 0);
    }

    #[test]
    fn an_interval_across_an_hour_keeps_both_hours() {
        let mut c = ClickCounter::new(true);
        let boundary = (T0 / HOUR_MS + 1) * HOUR_MS;
        c.record(9, &human(None), boundary - 1);
        c.record(9, &human(None), boundary);
        c.record(9, &human(None), boundary + 1);
        // The wall clock stepped back.
        c.record(9, &human(None), boundary - 2);
        let p = c.pending(9).unwrap();
        let hours: Vec<_> = p.hours().map(|h| (h.hour, h.human)).collect();
        let h = (boundary / HOUR_MS) as u32;
        assert_eq!(hours, vec![(h - 1, 2), (h, 2)]);
        assert_eq!(p.first_ms, boundary - 2);
    }

    #[test]
    fn referrers_are_bounded_and_keep_heavy_hitters() {
        let mut c = ClickCounter::new(true);
        for _ in 0..50 {
            c.record(3, &human(Some("news.example")), T0);
        }
        for i in 0..100 {
            let host = format!("h{i}.example");
            c.record(3, &human(Some(&host)), T0);
        }
        let p = c.pending(3).unwrap();
        assert_eq!(p.referrers.len(), PENDING_REFERRERS);
        assert!(p
            .referrers
            .iter()
            .any(|(h, n)| &**h == "news.example" && *n == 50));
        assert_eq!(p.total(), 150);
    }

    #[test]
    fn referrer_host_keeps_only_the_host() {
        assert_eq!(
            referrer_host("https://User:pw@News.Example:8443/a?b#c"),
            Some("News.Example")
        );
        assert_eq!(referrer_host("http://[::1]:80/x"), Some("[::1]"));
        assert_eq!(referrer_host("http://t.co"), Some("t.co"));
        assert_eq!(referrer_host("android-app://com.x/"), None);
        assert_eq!(referrer_host("/relative"), None);
        assert_eq!(referrer_host("http:///nohost"), None);
        assert_eq!(referrer_host("http://bad host/"), None);
    }
}
