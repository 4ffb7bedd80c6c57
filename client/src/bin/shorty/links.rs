//! The link commands of protocol version 2 (`shorten` with options,
//! `update`, `delete`, `info CODE`, `stats`): their arguments, time parsing
//! and output, kept apart from the I/O so that tests can check the text.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use clap::Args;
use serde_json::{json, Value};
use shorty_client::{Granularity, Link, LinkOptions, LinkPatch, Stats};

/// Options of a new link (`shorty shorten`).
#[derive(Debug, Default, Args)]
pub(crate) struct CreateArgs {
    /// A custom code: 1–64 of `A-Z a-z 0-9 _ -` (one URL only).
    #[arg(long)]
    pub(crate) alias: Option<String>,
    /// Expiry: a duration from now (`7d`, `12h`) or an RFC 3339 instant
    /// (`2027-01-01T00:00:00Z`, `2027-01-01T02:00:00+02:00`).
    #[arg(long, value_name = "WHEN")]
    pub(crate) expires: Option<String>,
    /// Clicks the link serves before it is gone (410).
    #[arg(long, value_name = "N")]
    pub(crate) max_clicks: Option<u64>,
    /// Its redirect status: 301, 302, 307 or 308.
    #[arg(long, value_name = "CODE", value_parser = parse_status)]
    pub(crate) status: Option<u16>,
    /// Where visitors go once the link has expired.
    #[arg(long, value_name = "URL")]
    pub(crate) expired_url: Option<String>,
    /// A title.
    #[arg(long)]
    pub(crate) title: Option<String>,
    /// Forward a visitor's query into the redirect (`on`) or not (`off`);
    /// absent: the server's `--forward-query`.
    #[arg(long, value_name = "on|off", value_parser = parse_on_off)]
    pub(crate) forward_query: Option<bool>,
}

impl CreateArgs {
    /// `true` when any option asks for protocol version 2.
    pub(crate) fn any(&self) -> bool {
        self.alias.is_some()
            || self.expires.is_some()
            || self.max_clicks.is_some()
            || self.status.is_some()
            || self.expired_url.is_some()
            || self.title.is_some()
            || self.forward_query.is_some()
    }

    /// The options (`url` left empty: the call sets it).
    pub(crate) fn options(&self, now: SystemTime) -> Result<LinkOptions<'_>, String> {
        let mut o = LinkOptions::default();
        o.alias = self.alias.as_deref();
        o.expires_at_ms = self
            .expires
            .as_deref()
            .map(|e| parse_expiry(e, now))
            .transpose()?;
        o.max_clicks = self.max_clicks;
        o.redirect_status = self.status;
        o.expired_url = self.expired_url.as_deref();
        o.title = self.title.as_deref();
        o.forward_query = self.forward_query;
        Ok(o)
    }
}

/// What `shorty update` changes.
#[derive(Debug, Default, Args)]
pub(crate) struct UpdateArgs {
    /// New expiry: a duration from now or an RFC 3339 instant.
    #[arg(long, value_name = "WHEN", conflicts_with = "no_expiry")]
    pub(crate) expires: Option<String>,
    /// Remove the expiry.
    #[arg(long)]
    pub(crate) no_expiry: bool,
    /// New click limit.
    #[arg(long, value_name = "N", conflicts_with = "no_max_clicks")]
    pub(crate) max_clicks: Option<u64>,
    /// Remove the click limit.
    #[arg(long)]
    pub(crate) no_max_clicks: bool,
    /// New redirect status: 301, 302, 307 or 308.
    #[arg(long, value_name = "CODE", value_parser = parse_status)]
    pub(crate) status: Option<u16>,
    /// New URL for visitors after expiry (`""` removes it).
    #[arg(long, value_name = "URL")]
    pub(crate) expired_url: Option<String>,
    /// New title (`""` removes it).
    #[arg(long)]
    pub(crate) title: Option<String>,
    /// Disable the link (410 "disabled" for visitors).
    #[arg(long, conflicts_with = "enable")]
    pub(crate) disable: bool,
    /// Enable it again.
    #[arg(long)]
    pub(crate) enable: bool,
    /// Forward a visitor's query (`on`), not (`off`), or follow the
    /// server's `--forward-query` again (`default`).
    #[arg(long, value_name = "on|off|default")]
    pub(crate) forward_query: Option<ForwardChange>,
}

/// `shorty update --forward-query`: a choice of the link's own, or none.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum ForwardChange {
    /// Forward the visitor's query.
    On,
    /// Redirect to the URL as stored.
    Off,
    /// Follow the server's `--forward-query` again.
    Default,
}

impl UpdateArgs {
    /// The patch; `url` is the new URL, if any.
    pub(crate) fn patch<'a>(
        &'a self,
        url: Option<&'a str>,
        now: SystemTime,
    ) -> Result<LinkPatch<'a>, String> {
        // An empty text clears the field, as on the wire.
        let text = |v: &'a Option<String>| v.as_deref().map(|s| Some(s).filter(|s| !s.is_empty()));
        let mut p = LinkPatch::default();
        p.url = url;
        p.expires_at_ms = match (&self.expires, self.no_expiry) {
            (Some(e), _) => Some(Some(parse_expiry(e, now)?)),
            (None, true) => Some(None),
            (None, false) => None,
        };
        p.max_clicks = match (self.max_clicks, self.no_max_clicks) {
            (Some(n), _) => Some(Some(n)),
            (None, true) => Some(None),
            (None, false) => None,
        };
        p.redirect_status = self.status.map(Some);
        p.expired_url = text(&self.expired_url);
        p.title = text(&self.title);
        p.disabled = match (self.disable, self.enable) {
            (true, _) => Some(true),
            (false, true) => Some(false),
            (false, false) => None,
        };
        p.forward_query = self.forward_query.map(|c| match c {
            ForwardChange::On => Some(true),
            ForwardChange::Off => Some(false),
            ForwardChange::Default => None,
        });
        if p.is_empty() {
            return Err("nothing to change: give a URL or an option (see --help)".into());
        }
        Ok(p)
    }
}

fn parse_status(text: &str) -> Result<u16, String> {
    match text.parse() {
        Ok(status @ (301 | 302 | 307 | 308)) => Ok(status),
        _ => Err(format!("{text:?} is not 301, 302, 307 or 308")),
    }
}

fn parse_on_off(text: &str) -> Result<bool, String> {
    match text {
        "on" => Ok(true),
        "off" => Ok(false),
        _ => Err(format!("{text:?} is not on or off")),
    }
}

fn millis(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// An expiry as Unix milliseconds: a duration from `now` (humantime:
/// `7d`, `1h 30m`) or an RFC 3339 instant.
///
/// humantime reads RFC 3339 in UTC only (`Z`, or no zone); a numeric offset
/// (`+02:00`) is split off here and applied, which is all RFC 3339 adds.
pub(crate) fn parse_expiry(text: &str, now: SystemTime) -> Result<u64, String> {
    if let Ok(duration) = humantime::parse_duration(text) {
        return Ok(millis(now + duration));
    }
    let invalid = || format!("--expires {text:?}: not a duration (7d) or an RFC 3339 instant");
    let (instant, offset) = split_offset(text).ok_or_else(invalid)?;
    let utc = humantime::parse_rfc3339_weak(instant).map_err(|_| invalid())?;
    let ms = i128::from(millis(utc)) - i128::from(offset) * 60_000;
    u64::try_from(ms).map_err(|_| invalid())
}

/// Splits a trailing `+HH:MM` / `-HH:MM` off, giving the offset in minutes
/// (0 for `Z` or none).
fn split_offset(text: &str) -> Option<(&str, i64)> {
    let Some(at) = text.len().checked_sub(6) else {
        return Some((text, 0));
    };
    let (instant, zone) = text.split_at_checked(at)?;
    let sign = match zone.as_bytes().first() {
        Some(b'+') => 1,
        Some(b'-') if instant.contains('T') || instant.contains(' ') => -1,
        _ => return Some((text, 0)),
    };
    let (hours, minutes) = zone.get(1..)?.split_once(':')?;
    let minutes: i64 = hours.parse::<i64>().ok()? * 60 + minutes.parse::<i64>().ok()?;
    Some((instant, sign * minutes))
}

fn instant(ms: u64) -> String {
    humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_millis(ms)).to_string()
}

fn opt_instant(ms: Option<u64>) -> Value {
    ms.map_or(Value::Null, |ms| Value::String(instant(ms)))
}

/// `shorty info CODE`: one field a line.
pub(crate) fn render_link(link: &Link) -> String {
    let mut out = String::new();
    let mut line = |name: &str, value: String| out.push_str(&format!("{name:<16} {value}\n"));
    line("code:", link.code.clone());
    if let Some(short) = &link.short_url {
        line("short URL:", short.clone());
    }
    line("URL:", link.url.clone());
    if let Some(title) = &link.title {
        line("title:", title.clone());
    }
    if let Some(created) = link.created_at_ms {
        line("created:", instant(created));
    }
    line(
        "expires:",
        link.expires_at_ms.map_or("never".into(), instant),
    );
    if let Some(url) = &link.expired_url {
        line("expired URL:", url.clone());
    }
    line(
        "max clicks:",
        link.max_clicks
            .map_or("unlimited".into(), |n| n.to_string()),
    );
    line(
        "redirect:",
        link.redirect_status
            .map_or("server default".into(), |s| s.to_string()),
    );
    line("disabled:", if link.disabled { "yes" } else { "no" }.into());
    line(
        "forward query:",
        match link.forward_query {
            Some(true) => "on",
            Some(false) => "off",
            None => "server default",
        }
        .into(),
    );
    if let Some(total) = link.clicks_total {
        let (human, bot) = (link.clicks_human.unwrap_or(0), link.clicks_bot.unwrap_or(0));
        line("clicks:", format!("{total} ({human} human, {bot} bot)"));
    }
    if let Some(last) = link.last_click_at_ms {
        line("last click:", instant(last));
    }
    out
}

/// `shorty info CODE --json`: the link object of the HTTP API's shape.
pub(crate) fn link_json(link: &Link) -> Value {
    json!({
        "code": link.code,
        "shortUrl": link.short_url,
        "url": link.url,
        "createdAt": opt_instant(link.created_at_ms),
        "expiresAt": opt_instant(link.expires_at_ms),
        "maxClicks": link.max_clicks,
        "expiredUrl": link.expired_url,
        "redirectStatus": link.redirect_status,
        "disabled": link.disabled,
        "title": link.title,
        "forwardQuery": link.forward_query,
        "clicks": {
            "total": link.clicks_total,
            "human": link.clicks_human,
            "bot": link.clicks_bot,
        },
        "lastClickAt": opt_instant(link.last_click_at_ms),
    })
}

/// One hour, in milliseconds.
pub(crate) const HOUR_MS: u64 = 3_600_000;

/// The range `shorty stats` asks for: the `hours` whole hours up to and
/// including the one holding `now_ms`.
pub(crate) fn stats_range(now_ms: u64, hours: u64) -> (u64, u64) {
    let to = (now_ms / HOUR_MS + 1) * HOUR_MS;
    (to.saturating_sub(hours * HOUR_MS), to)
}

/// The eight heights of a sparkline, lowest first.
const BARS: [char; 8] = ['▁', '▂', '▃', '▄', '▅', '▆', '▇', '█'];

/// One character per hour of `[from, to)`: `·` without clicks, else a bar
/// as high as its share of the busiest hour. A few lines, so no crate:
/// the sparkline crates on crates.io are small and unmaintained.
fn sparkline(series: &[shorty_client::Bucket], from: u64, to: u64) -> (String, u64) {
    let slots = usize::try_from((to - from) / HOUR_MS).unwrap_or(0);
    let mut counts = vec![0u64; slots];
    for bucket in series {
        if (from..to).contains(&bucket.start_ms) {
            let slot = usize::try_from((bucket.start_ms - from) / HOUR_MS).unwrap_or(0);
            counts[slot] += bucket.count;
        }
    }
    let peak = counts.iter().copied().max().unwrap_or(0);
    let line = counts
        .iter()
        .map(|&count| match count {
            0 => '·',
            // 1..=8, rounded up so that one click still shows.
            n => {
                BARS[usize::try_from((n * 8).div_ceil(peak) - 1)
                    .unwrap_or(7)
                    .min(7)]
            }
        })
        .collect();
    (line, peak)
}

/// `shorty stats CODE`: totals, an hourly chart of `[from, to)`, the top
/// referrers.
pub(crate) fn render_stats(code: &str, stats: &Stats, from: u64, to: u64) -> String {
    let mut out = format!(
        "{code}: {} clicks ({} human, {} bot)\n",
        stats.total, stats.human, stats.bot
    );
    if let Some(first) = stats.first_click_at_ms {
        out.push_str(&format!("first click: {}\n", instant(first)));
    }
    if let Some(last) = stats.last_click_at_ms {
        out.push_str(&format!("last click:  {}\n", instant(last)));
    }
    let (line, peak) = sparkline(&stats.series, from, to);
    out.push_str(&format!(
        "\nclicks per hour, {} to {} (busiest hour: {peak}):\n{line}\n",
        instant(from),
        instant(to)
    ));
    if !stats.referrers.is_empty() {
        out.push_str("\ntop referrers:\n");
        let width = stats
            .referrers
            .iter()
            .map(|(h, _)| h.len())
            .max()
            .unwrap_or(0);
        for (host, count) in &stats.referrers {
            out.push_str(&format!("  {host:<width$}  {count}\n"));
        }
    }
    out
}

/// `shorty stats CODE --json`.
pub(crate) fn stats_json(code: &str, stats: &Stats) -> Value {
    json!({
        "code": code,
        "clicks": {"total": stats.total, "human": stats.human, "bot": stats.bot},
        "firstClickAt": opt_instant(stats.first_click_at_ms),
        "lastClickAt": opt_instant(stats.last_click_at_ms),
        "granularity": match stats.granularity {
            Some(Granularity::Day) => "day",
            _ => "hour",
        },
        "series": stats.series.iter().map(|b| json!({
            "start": instant(b.start_ms),
            "count": b.count,
        })).collect::<Vec<_>>(),
        "referrers": stats.referrers.iter().map(|(host, count)| json!({
            "host": host,
            "count": count,
        })).collect::<Vec<_>>(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use shorty_client::Bucket;

    /// 2025-12-01T00:00:00Z.
    const DEC1: u64 = 1_764_547_200_000;

    fn at(ms: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_millis(ms)
    }

    #[test]
    fn expiry_is_a_duration_from_now_or_an_rfc3339_instant() {
        let now = at(DEC1);
        assert_eq!(parse_expiry("7d", now), Ok(DEC1 + 7 * 24 * HOUR_MS));
        assert_eq!(parse_expiry("1h 30m", now), Ok(DEC1 + 90 * 60_000));
        assert_eq!(
            parse_expiry("2027-01-01T00:00:00Z", now),
            Ok(1_798_761_600_000)
        );
        assert_eq!(
            parse_expiry("2027-01-01T02:00:00+02:00", now),
            Ok(1_798_761_600_000)
        );
        assert_eq!(
            parse_expiry("2026-12-31T21:30:00-02:30", now),
            Ok(1_798_761_600_000)
        );
        assert!(parse_expiry("tomorrow", now).is_err());
        assert!(parse_expiry("2027-13-01T00:00:00Z", now).is_err());
    }

    #[test]
    fn update_options_become_a_patch() {
        let now = at(DEC1);
        let args = UpdateArgs {
            no_expiry: true,
            disable: true,
            title: Some(String::new()),
            ..Default::default()
        };
        let p = args.patch(Some("https://example.org/"), now).unwrap();
        assert_eq!(p.url, Some("https://example.org/"));
        assert_eq!(p.expires_at_ms, Some(None));
        assert_eq!(p.disabled, Some(true));
        assert_eq!(p.title, Some(None), "an empty title clears it");
        assert_eq!(p.max_clicks, None, "absent: kept");
        assert!(UpdateArgs::default().patch(None, now).is_err());
    }

    #[test]
    fn forward_query_is_on_off_or_back_to_the_default() {
        use clap::Parser;
        #[derive(Parser)]
        struct Create {
            #[command(flatten)]
            args: CreateArgs,
        }
        #[derive(Parser)]
        struct Update {
            #[command(flatten)]
            args: UpdateArgs,
        }
        let now = at(DEC1);
        let create = |v: &str| Create::try_parse_from(["x", "--forward-query", v]);
        let off = create("off").unwrap().args;
        assert!(off.any(), "an option: SHORTEN2");
        assert_eq!(off.options(now).unwrap().forward_query, Some(false));
        assert_eq!(
            create("on")
                .unwrap()
                .args
                .options(now)
                .unwrap()
                .forward_query,
            Some(true)
        );
        assert!(
            create("default").is_err(),
            "a new link has no own choice to clear"
        );
        assert!(create("yes").is_err());
        let update = |v: &str| {
            let args = Update::try_parse_from(["x", "--forward-query", v])?.args;
            Ok::<_, clap::Error>(args.patch(None, now).unwrap().forward_query)
        };
        assert_eq!(update("off").unwrap(), Some(Some(false)));
        assert_eq!(update("on").unwrap(), Some(Some(true)));
        assert_eq!(update("default").unwrap(), Some(None), "cleared");
        assert!(update("1").is_err());
    }

    fn stats() -> Stats {
        let mut s = Stats::default();
        (s.total, s.human, s.bot) = (13, 12, 1);
        s.first_click_at_ms = Some(DEC1 - 47 * HOUR_MS + 60_000);
        s.last_click_at_ms = Some(DEC1 + 60_000);
        s.series = vec![
            // Outside the 48 hours: not drawn.
            Bucket {
                start_ms: DEC1 - 100 * HOUR_MS,
                count: 50,
            },
            Bucket {
                start_ms: DEC1 - 47 * HOUR_MS,
                count: 1,
            },
            Bucket {
                start_ms: DEC1 - 24 * HOUR_MS,
                count: 4,
            },
            Bucket {
                start_ms: DEC1 - HOUR_MS,
                count: 8,
            },
        ];
        s.referrers = vec![("news.example".into(), 7), ("example.org".into(), 2)];
        s
    }

    #[test]
    fn stats_render_totals_an_hourly_sparkline_and_referrers() {
        // Now is 2025-12-01T00:30Z: the chart ends with the current hour.
        let (from, to) = stats_range(DEC1 + 30 * 60_000, 48);
        assert_eq!((from, to), (DEC1 - 47 * HOUR_MS, DEC1 + HOUR_MS));
        let text = render_stats("docs", &stats(), from, to);
        let chart = format!("▁{}▄{}█·", "·".repeat(22), "·".repeat(22));
        assert_eq!(chart.chars().count(), 48);
        let expected = format!(
            "docs: 13 clicks (12 human, 1 bot)\n\
             first click: 2025-11-29T01:01:00Z\n\
             last click:  2025-12-01T00:01:00Z\n\
             \n\
             clicks per hour, 2025-11-29T01:00:00Z to 2025-12-01T01:00:00Z (busiest hour: 8):\n\
             {chart}\n\
             \n\
             top referrers:\n  \
             news.example  7\n  \
             example.org   2\n"
        );
        assert_eq!(text, expected);
    }

    #[test]
    fn stats_json_carries_every_figure() {
        let value = stats_json("docs", &stats());
        assert_eq!(value["clicks"], json!({"total": 13, "human": 12, "bot": 1}));
        assert_eq!(value["series"].as_array().unwrap().len(), 4);
        assert_eq!(
            value["series"][3],
            json!({"start": "2025-11-30T23:00:00Z", "count": 8})
        );
        assert_eq!(
            value["referrers"][0],
            json!({"host": "news.example", "count": 7})
        );
        assert_eq!(value["lastClickAt"], "2025-12-01T00:01:00Z");
    }

    #[test]
    fn a_link_renders_one_field_a_line_and_as_json() {
        let mut link = Link::default();
        link.code = "docs".into();
        link.url = "https://example.com/".into();
        link.created_at_ms = Some(DEC1);
        link.max_clicks = Some(10);
        link.clicks_total = Some(3);
        link.clicks_human = Some(2);
        link.clicks_bot = Some(1);
        let text = render_link(&link);
        assert_eq!(
            text,
            "code:            docs\n\
             URL:             https://example.com/\n\
             created:         2025-12-01T00:00:00Z\n\
             expires:         never\n\
             max clicks:      10\n\
             redirect:        server default\n\
             disabled:        no\n\
             forward query:   server default\n\
             clicks:          3 (2 human, 1 bot)\n"
        );
        let value = link_json(&link);
        assert_eq!(value["createdAt"], "2025-12-01T00:00:00Z");
        assert_eq!(value["expiresAt"], Value::Null);
        assert_eq!(value["clicks"]["bot"], 1);
    }
}
