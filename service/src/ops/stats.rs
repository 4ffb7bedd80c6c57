//! A link's click statistics (issue 20), for every front: its totals
//! (INFO's click tags) and its series (protocol v2's STATS, the JSON API).
//!
//! Both read the link's record first, like INFO: who may read a link's
//! statistics depends on its owner. `stats:read` reads any link's, and a
//! key that may change a link (its owner with `links:write`, or
//! `links:all`) reads that link's ([`Principal::may_read_stats`]). The
//! counts are what the store holds plus this core's pending deltas
//! ([`Shard::stats_view`]): other cores' reach the store within one
//! `--stats-flush`.

use shorty_protocol::ErrorCode;

use crate::link::{LinkMeta, Principal, UNPROCESSABLE};
use crate::log::record::ALIAS_KEY;
use crate::shard::{OpResult, Shard, Then};
use crate::stats::{self, Granularity, MAX_BUCKETS};

use super::Step;

/// The range a series covers: `[from_ms, to_ms)` in Unix ms, in buckets of
/// `granularity`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StatsQuery {
    /// The first instant (inclusive).
    pub from_ms: u64,
    /// The end (exclusive).
    pub to_ms: u64,
    /// Hourly or daily buckets.
    pub granularity: Granularity,
}

/// The link `code`'s click totals (total, human, bot, first and last
/// click, top referrers), with an empty series. 404 if there is no such
/// link, 403 if `principal` may not read its statistics, 501 when
/// statistics are off (`--stats off`).
pub fn totals(shard: &mut Shard, conn: u32, code: &[u8], principal: Principal) -> Step {
    begin(shard, conn, code, principal, None)
}

/// The link `code`'s statistics over `query`'s range: the totals and one
/// bucket per hour or day, zeros included. As [`totals`], and 422 for a
/// range that ends before it starts or holds more than
/// [`MAX_BUCKETS`] buckets (a view never grows past that, whatever a
/// client asks).
pub fn series(
    shard: &mut Shard,
    conn: u32,
    code: &[u8],
    principal: Principal,
    query: StatsQuery,
) -> Step {
    let step = query.granularity.millis();
    let buckets = query.to_ms.div_ceil(step).checked_sub(query.from_ms / step);
    match buckets {
        None => Step::refused(UNPROCESSABLE, "the range ends before it starts"),
        Some(n) if n > MAX_BUCKETS => Step::refused(
            UNPROCESSABLE,
            format!("the range holds more than {MAX_BUCKETS} buckets"),
        ),
        Some(_) => begin(shard, conn, code, principal, Some(query)),
    }
}

fn begin(
    shard: &mut Shard,
    conn: u32,
    code: &[u8],
    principal: Principal,
    query: Option<StatsQuery>,
) -> Step {
    if !shard.stats.enabled() {
        return Step::refused(
            ErrorCode::UNKNOWN_OPCODE,
            "click statistics are off on this server (--stats off)",
        );
    }
    super::lifecycle::begin(
        shard,
        conn,
        code,
        |_, _| Then::Stats { principal, query },
        false,
    )
}

/// The key a link's clicks are counted under: its code key, or for a
/// side-map alias (record key [`ALIAS_KEY`]) the alias's own statistics
/// key ([`Codec::alias_stats_key`](crate::codes::Codec::alias_stats_key):
/// its name and creation time under the code secret). `None` for a
/// side-map record without its alias (never written so).
pub(crate) fn stats_key(shard: &Shard, key: u64, meta: Option<&LinkMeta>) -> Option<u64> {
    if key != ALIAS_KEY {
        return Some(key);
    }
    let meta = meta?;
    let alias = meta.alias.as_deref()?;
    Some(
        shard
            .shared
            .codec
            .alias_stats_key(alias, meta.created_at_ms.unwrap_or(0)),
    )
}

/// [`stats_key`] of the link reached by `code` whose record holds `meta`.
pub(crate) fn stats_key_of_code(shard: &Shard, code: &str, meta: &LinkMeta) -> Option<u64> {
    let key = shard
        .shared
        .codec
        .parse(code.as_bytes())
        .unwrap_or(ALIAS_KEY);
    stats_key(shard, key, Some(meta))
}

/// The statistics of the link `key` whose current record holds `meta`,
/// once read: what [`totals`] and [`series`] answer.
pub(crate) fn answer(
    shard: &Shard,
    key: u64,
    meta: &LinkMeta,
    principal: Principal,
    query: Option<StatsQuery>,
) -> OpResult {
    if !principal.may_read_stats(meta.owner_key_id) {
        return OpResult::Failed(
            principal.refusal(),
            "this key may not read this link's statistics".into(),
        );
    }
    let Some(key) = stats_key(shard, key, Some(meta)) else {
        // A side-map alias's record always names its alias; one that does
        // not is damage, not a request to refuse.
        return OpResult::Failed(
            ErrorCode::INTERNAL,
            "this link's record names no alias".into(),
        );
    };
    let StatsQuery {
        from_ms,
        to_ms,
        granularity,
    } = query.unwrap_or(StatsQuery {
        from_ms: 0,
        to_ms: 0,
        granularity: Granularity::Hour,
    });
    let view = match shard.stats_view(key, from_ms, to_ms, granularity) {
        Some(Ok(view)) => view,
        // No store to read (none set up): this core's pending counts.
        None => stats::series(
            None,
            &[],
            shard.stats.pending(key),
            from_ms,
            to_ms,
            granularity,
        ),
        Some(Err(err)) => {
            tracing::error!(key, "reading click statistics failed: {err}");
            return OpResult::Failed(
                ErrorCode::INTERNAL,
                "the statistics could not be read".into(),
            );
        }
    };
    OpResult::Stats(Box::new(view))
}
