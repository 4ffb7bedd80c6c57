//! What is stored per link, and the read side's view of it.

use super::{Pending, MAX_HOST_BYTES};

/// An hour in milliseconds.
pub const HOUR_MS: u64 = 3_600_000;
/// A day in milliseconds (UTC days: a bucket starts at midnight UTC).
pub const DAY_MS: u64 = 24 * HOUR_MS;
/// Referring hosts kept per link: twice the reported top, so that the top
/// ten of a space-saving summary are nearly exact.
pub const REFERRER_SLOTS: usize = 20;
/// Referring hosts reported.
pub const TOP_REFERRERS: usize = 10;
/// Most buckets one view holds (a little over a year of days, or 400 days
/// of hours): a wider range is cut at its start.
pub const MAX_BUCKETS: u64 = 9_600;

/// The hour (since the Unix epoch) of `ms`.
pub fn hour_of(ms: u64) -> u32 {
    u32::try_from(ms / HOUR_MS).unwrap_or(u32::MAX)
}

/// The UTC day (since the Unix epoch) of `ms`.
pub fn day_of(ms: u64) -> u32 {
    u32::try_from(ms / DAY_MS).unwrap_or(u32::MAX)
}

/// A series' resolution.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Granularity {
    /// Hourly buckets (kept at least 30 days).
    Hour,
    /// Daily (UTC) buckets (kept at least a year).
    Day,
}

impl Granularity {
    /// A bucket's length in milliseconds.
    pub fn millis(self) -> u64 {
        match self {
            Granularity::Hour => HOUR_MS,
            Granularity::Day => DAY_MS,
        }
    }
}

/// One stored bucket of one link.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SeriesRow {
    /// The bucket: hours or days since the epoch, by the granularity.
    pub bucket: u32,
    /// Human clicks.
    pub human: u64,
    /// Bot clicks.
    pub bot: u64,
}

/// Approximate top referring hosts (space-saving: a host not in the
/// summary takes the least counted slot and inherits its count, so a
/// reported count may exceed the truth by at most the evicted count, and
/// every host with more clicks than that is in it).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct TopReferrers {
    entries: Vec<(String, u64)>,
}

impl TopReferrers {
    /// Adds `count` clicks from `host`.
    pub fn add(&mut self, host: &str, count: u64) {
        if let Some(entry) = self.entries.iter_mut().find(|(h, _)| h == host) {
            entry.1 = entry.1.saturating_add(count);
        } else if self.entries.len() < REFERRER_SLOTS {
            self.entries.push((host.to_owned(), count));
        } else if let Some(min) = self.entries.iter_mut().min_by_key(|(_, c)| *c) {
            *min = (host.to_owned(), min.1.saturating_add(count));
        }
    }

    /// The top `n`, most clicks first (ties by name, so the order is
    /// stable).
    pub fn top(&self, n: usize) -> Vec<(String, u64)> {
        let mut all = self.entries.clone();
        all.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        all.truncate(n);
        all
    }
}

/// One link's stored totals.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct LinkTotals {
    /// Human clicks.
    pub human: u64,
    /// Bot clicks.
    pub bot: u64,
    /// First click (Unix ms); 0 before any.
    pub first_ms: u64,
    /// Last click (Unix ms); 0 before any.
    pub last_ms: u64,
    /// Top referring hosts.
    pub referrers: TopReferrers,
}

impl LinkTotals {
    /// Adds one interval's deltas.
    pub fn merge(&mut self, pending: &Pending) {
        self.first_ms = if self.human + self.bot == 0 {
            pending.first_ms
        } else {
            self.first_ms.min(pending.first_ms)
        };
        self.last_ms = self.last_ms.max(pending.last_ms);
        self.human += pending.human;
        self.bot += pending.bot;
        for (host, count) in &pending.referrers {
            self.referrers.add(host, u64::from(*count));
        }
    }

    /// Adds another node's or store's totals (counts add, times widen).
    pub fn absorb(&mut self, other: &LinkTotals) {
        if other.human + other.bot == 0 {
            return;
        }
        self.first_ms = if self.human + self.bot == 0 {
            other.first_ms
        } else {
            self.first_ms.min(other.first_ms)
        };
        self.last_ms = self.last_ms.max(other.last_ms);
        self.human += other.human;
        self.bot += other.bot;
        for (host, count) in &other.referrers.entries {
            self.referrers.add(host, *count);
        }
    }
}

/// Encodes `totals` for the store: four u64 LE (human, bot, first, last),
/// a u8 count of referrers, each a u64 LE count, a u8 length and the host.
pub fn encode_totals(totals: &LinkTotals, out: &mut Vec<u8>) {
    for v in [totals.human, totals.bot, totals.first_ms, totals.last_ms] {
        out.extend_from_slice(&v.to_le_bytes());
    }
    let entries = &totals.referrers.entries;
    out.push(entries.len().min(REFERRER_SLOTS) as u8);
    for (host, count) in entries.iter().take(REFERRER_SLOTS) {
        let host = &host.as_bytes()[..host.len().min(MAX_HOST_BYTES)];
        out.extend_from_slice(&count.to_le_bytes());
        out.push(host.len() as u8);
        out.extend_from_slice(host);
    }
}

/// Decodes [`encode_totals`]' bytes; `None` if they are not that.
pub fn decode_totals(bytes: &[u8]) -> Option<LinkTotals> {
    fn u64_at(bytes: &[u8], at: usize) -> Option<u64> {
        Some(u64::from_le_bytes(bytes.get(at..at + 8)?.try_into().ok()?))
    }
    let mut totals = LinkTotals {
        human: u64_at(bytes, 0)?,
        bot: u64_at(bytes, 8)?,
        first_ms: u64_at(bytes, 16)?,
        last_ms: u64_at(bytes, 24)?,
        referrers: TopReferrers::default(),
    };
    let n = *bytes.get(32)? as usize;
    if n > REFERRER_SLOTS {
        return None;
    }
    let mut at = 33;
    for _ in 0..n {
        let count = u64_at(bytes, at)?;
        let len = *bytes.get(at + 8)? as usize;
        let host = std::str::from_utf8(bytes.get(at + 9..at + 9 + len)?).ok()?;
        totals.referrers.entries.push((host.to_owned(), count));
        at += 9 + len;
    }
    (at == bytes.len()).then_some(totals)
}

/// One link's statistics over a range.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct StatsView {
    /// Every click ever counted (not only the range's).
    pub total: u64,
    /// Human clicks ever.
    pub human: u64,
    /// Bot clicks ever.
    pub bot: u64,
    /// The first click (Unix ms), if any.
    pub first_click_ms: Option<u64>,
    /// The last click (Unix ms), if any.
    pub last_click_ms: Option<u64>,
    /// `(bucket start in Unix ms, clicks)` for every bucket of the range,
    /// zeros included, oldest first.
    pub series: Vec<(u64, u64)>,
    /// Up to [`TOP_REFERRERS`] referring hosts, most clicks first
    /// (approximate: see [`TopReferrers`]).
    pub referrers: Vec<(String, u64)>,
}

/// Builds the view of `[from_ms, to_ms)` from the stored totals and rows
/// (at `granularity`) and any deltas still pending in memory.
pub fn series<'a>(
    stored: Option<&LinkTotals>,
    rows: &[SeriesRow],
    pending: impl IntoIterator<Item = &'a Pending>,
    from_ms: u64,
    to_ms: u64,
    granularity: Granularity,
) -> StatsView {
    let step = granularity.millis();
    let first = from_ms / step;
    let end = to_ms.div_ceil(step).max(first);
    let first = first.max(end.saturating_sub(MAX_BUCKETS));
    let mut counts = vec![0u64; (end - first) as usize];
    let mut add = |bucket: u64, n: u64| {
        if bucket >= first && bucket < end {
            counts[(bucket - first) as usize] += n;
        }
    };
    for row in rows {
        add(u64::from(row.bucket), row.human + row.bot);
    }
    let mut totals = stored.cloned().unwrap_or_default();
    for p in pending {
        totals.merge(p);
        for h in p.hours() {
            let bucket = u64::from(h.hour) * HOUR_MS / step;
            add(bucket, u64::from(h.human) + u64::from(h.bot));
        }
    }
    let any = totals.human + totals.bot > 0;
    StatsView {
        total: totals.human + totals.bot,
        human: totals.human,
        bot: totals.bot,
        first_click_ms: any.then_some(totals.first_ms),
        last_click_ms: any.then_some(totals.last_ms),
        series: counts
            .into_iter()
            .enumerate()
            .map(|(i, n)| ((first + i as u64).saturating_mul(step), n))
            .collect(),
        referrers: totals.referrers.top(TOP_REFERRERS),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stats::{ClickCounter, ClickMeta};

    #[test]
    fn totals_round_trip_and_refuse_garbage() {
        let mut t = LinkTotals {
            human: 5,
            bot: 2,
            first_ms: 10,
            last_ms: 99,
            ..Default::default()
        };
        t.referrers.add("a.example", 3);
        t.referrers.add("b.example", 1);
        let mut bytes = Vec::new();
        encode_totals(&t, &mut bytes);
        assert_eq!(decode_totals(&bytes), Some(t));
        for cut in 0..bytes.len() {
            assert_eq!(decode_totals(&bytes[..cut]), None, "cut at {cut}");
        }
        bytes.push(0);
        assert_eq!(decode_totals(&bytes), None);
    }

    #[test]
    fn series_buckets_hours_and_days_at_their_boundaries() {
        // 2024-03-01T00:00:00Z, a day boundary.
        let midnight = 1_709_251_200_000;
        assert_eq!(midnight % DAY_MS, 0);
        let mut c = ClickCounter::new(true);
        let meta = ClickMeta::default();
        c.record(1, &meta, midnight - 1); // last ms of Feb 29, hour 23
        c.record(1, &meta, midnight); // first ms of Mar 1, hour 0
        c.record(1, &meta, midnight + HOUR_MS - 1); // still hour 0
        c.record(1, &meta, midnight + HOUR_MS); // hour 1
        let map = c.take();
        let pending = map.get(&1);
        let view = series(
            None,
            &[],
            pending,
            midnight - HOUR_MS,
            midnight + 2 * HOUR_MS,
            Granularity::Hour,
        );
        assert_eq!(
            view.series,
            vec![
                (midnight - HOUR_MS, 1),
                (midnight, 2),
                (midnight + HOUR_MS, 1)
            ]
        );
        assert_eq!(view.total, 4);
        assert_eq!(view.first_click_ms, Some(midnight - 1));
        let days = series(
            None,
            &[],
            pending,
            midnight - DAY_MS,
            midnight + DAY_MS,
            Granularity::Day,
        );
        assert_eq!(days.series, vec![(midnight - DAY_MS, 1), (midnight, 3)]);
    }

    #[test]
    fn stored_rows_and_pending_add_up() {
        let stored = LinkTotals {
            human: 10,
            bot: 1,
            first_ms: 5 * HOUR_MS,
            last_ms: 6 * HOUR_MS,
            ..Default::default()
        };
        let rows = [
            SeriesRow {
                bucket: 5,
                human: 4,
                bot: 1,
            },
            SeriesRow {
                bucket: 6,
                human: 6,
                bot: 0,
            },
        ];
        let mut c = ClickCounter::new(true);
        c.record(
            1,
            &ClickMeta {
                referrer_host: Some("x.example"),
                ..Default::default()
            },
            6 * HOUR_MS + 1,
        );
        let map = c.take();
        let view = series(
            Some(&stored),
            &rows,
            map.get(&1),
            4 * HOUR_MS,
            7 * HOUR_MS,
            Granularity::Hour,
        );
        assert_eq!(
            view.series,
            vec![(4 * HOUR_MS, 0), (5 * HOUR_MS, 5), (6 * HOUR_MS, 7)]
        );
        assert_eq!((view.total, view.human, view.bot), (12, 11, 1));
        assert_eq!(view.last_click_ms, Some(6 * HOUR_MS + 1));
        assert_eq!(view.referrers, vec![("x.example".to_owned(), 1)]);
    }

    #[test]
    fn a_huge_range_is_cut_not_allocated() {
        let view = series(None, &[], [], 0, u64::MAX, Granularity::Hour);
        assert_eq!(view.series.len() as u64, MAX_BUCKETS);
        assert_eq!(view.first_click_ms, None);
    }
}
