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

use crate::link::{LinkMeta, Principal, FORBIDDEN, UNPROCESSABLE};
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
/// statistics are off or not kept for it.
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
            FORBIDDEN,
            "this key may not read this link's statistics".into(),
        );
    }
    if key == ALIAS_KEY {
        // The statistics store is keyed by code keys; an alias that is not
        // spelled like a code has none, so its clicks are not counted.
        return OpResult::Failed(
            ErrorCode::UNKNOWN_OPCODE,
            "statistics are not kept for aliases that are not codes yet".into(),
        );
    }
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
