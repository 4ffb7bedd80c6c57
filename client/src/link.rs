//! Owned forms of the protocol's version-2 link views, for callers that keep
//! them past the reply they came in.

use shorty_protocol::link::{Bucket, Granularity, LinkInfo, LinkStats};

/// A link as the server describes it (SHORTENED2, UPDATED and INFO
/// replies): [`LinkInfo`] with owned strings. Times are Unix milliseconds.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Link {
    /// Its code (generated, or its alias).
    pub code: String,
    /// The short URL, when the server sent it.
    pub short_url: Option<String>,
    /// The long URL.
    pub url: String,
    /// Creation time.
    pub created_at_ms: Option<u64>,
    /// Expiry.
    pub expires_at_ms: Option<u64>,
    /// Click limit.
    pub max_clicks: Option<u64>,
    /// Its own redirect status (`None`: the server's default).
    pub redirect_status: Option<u16>,
    /// Where visitors go once it has expired.
    pub expired_url: Option<String>,
    /// Disabled.
    pub disabled: bool,
    /// The API key id that made it.
    pub owner_key_id: Option<u32>,
    /// Title.
    pub title: Option<String>,
    /// Query forwarding (`None`: the server's default).
    pub forward_query: Option<bool>,
    /// Clicks in total.
    pub clicks_total: Option<u64>,
    /// Clicks by people.
    pub clicks_human: Option<u64>,
    /// Clicks by bots.
    pub clicks_bot: Option<u64>,
    /// Last click.
    pub last_click_at_ms: Option<u64>,
}

impl From<LinkInfo<'_>> for Link {
    fn from(i: LinkInfo<'_>) -> Self {
        let owned = |s: Option<&str>| s.map(str::to_owned);
        Self {
            code: i.code.to_owned(),
            short_url: owned(i.short_url),
            url: i.url.to_owned(),
            created_at_ms: i.created_at_ms,
            expires_at_ms: i.expires_at_ms,
            max_clicks: i.max_clicks,
            redirect_status: i.redirect_status,
            expired_url: owned(i.expired_url),
            disabled: i.disabled,
            owner_key_id: i.owner_key_id,
            title: owned(i.title),
            forward_query: i.forward_query,
            clicks_total: i.clicks_total,
            clicks_human: i.clicks_human,
            clicks_bot: i.clicks_bot,
            last_click_at_ms: i.last_click_at_ms,
        }
    }
}

/// A link's click statistics (the STATS reply): [`LinkStats`] with owned
/// strings.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Stats {
    /// Clicks in total, all time.
    pub total: u64,
    /// Clicks by people.
    pub human: u64,
    /// Clicks by bots.
    pub bot: u64,
    /// First click, Unix milliseconds.
    pub first_click_at_ms: Option<u64>,
    /// Last click, Unix milliseconds.
    pub last_click_at_ms: Option<u64>,
    /// The series' bucket width, when the server said.
    pub granularity: Option<Granularity>,
    /// The series, oldest first (buckets without clicks may be absent).
    pub series: Vec<Bucket>,
    /// Top referring hosts and their clicks, most first.
    pub referrers: Vec<(String, u64)>,
}

impl From<LinkStats<'_>> for Stats {
    fn from(s: LinkStats<'_>) -> Self {
        Self {
            total: s.total,
            human: s.human,
            bot: s.bot,
            first_click_at_ms: s.first_click_at_ms,
            last_click_at_ms: s.last_click_at_ms,
            granularity: s.granularity,
            series: s.series,
            referrers: s
                .referrers
                .into_iter()
                .map(|r| (r.host.to_owned(), r.count))
                .collect(),
        }
    }
}
