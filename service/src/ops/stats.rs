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
//!
//! With a remote store the stored counts are asked of the store thread
//! like a link read ([`RemoteRequest::Stats`]): the operation waits for
//! them and the core serves other requests meanwhile. A link view (INFO,
//! the API's link and page views) gets its links' totals the same way
//! before it is answered (`complete_views`), so rendering reads nothing.

use shorty_protocol::ErrorCode;

use crate::link::{LinkMeta, Principal, UNPROCESSABLE};
use crate::log::record::ALIAS_KEY;
use crate::output::OpId;
use crate::shard::{OpResult, RemoteRequest, Shard, Then};
use crate::stats::{self, Granularity, StoredRead, StoredStats, MAX_BUCKETS};

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

/// The query of a totals-only read: an empty range.
const TOTALS_ONLY: StatsQuery = StatsQuery {
    from_ms: 0,
    to_ms: 0,
    granularity: Granularity::Hour,
};

/// The statistics key of the link `key` whose current record holds
/// `meta`, if `principal` may read its statistics; else the refusal.
fn readable(
    shard: &Shard,
    key: u64,
    meta: &LinkMeta,
    principal: Principal,
) -> Result<u64, OpResult> {
    if !principal.may_read_stats(meta.owner_key_id) {
        return Err(OpResult::Failed(
            principal.refusal(),
            "this key may not read this link's statistics".into(),
        ));
    }
    // A side-map alias's record always names its alias; one that does
    // not is damage, not a request to refuse.
    stats_key(shard, key, Some(meta)).ok_or(OpResult::Failed(
        ErrorCode::INTERNAL,
        "this link's record names no alias".into(),
    ))
}

/// The statistics of the link `key` whose current record holds `meta`,
/// once read: what [`totals`] and [`series`] answer. `read` is what a
/// remote store answered for it ([`LinkView::clicks`]); without one the
/// local store's reader is asked.
///
/// [`LinkView::clicks`]: crate::shard::LinkView::clicks
pub(crate) fn answer(
    shard: &Shard,
    key: u64,
    meta: &LinkMeta,
    principal: Principal,
    query: Option<StatsQuery>,
    read: Option<&StoredRead>,
) -> OpResult {
    match readable(shard, key, meta, principal) {
        Ok(key) => view_of(shard, key, query.unwrap_or(TOTALS_ONLY), read),
        Err(refused) => refused,
    }
}

/// The view of statistics key `key` over `query`: `read` (a remote
/// store's answer) or the local store's, with this core's pending deltas.
fn view_of(shard: &Shard, key: u64, query: StatsQuery, read: Option<&StoredRead>) -> OpResult {
    let StatsQuery {
        from_ms,
        to_ms,
        granularity,
    } = query;
    let view = match read {
        Some(Ok(stored)) => shard.stats.view(key, stored, from_ms, to_ms, granularity),
        Some(Err(why)) => return unreadable(key, why),
        None => match shard.stats_view(key, from_ms, to_ms, granularity) {
            Some(Ok(view)) => view,
            // No store to read (none set up): this core's pending counts.
            None => shard
                .stats
                .view(key, &StoredStats::default(), from_ms, to_ms, granularity),
            Some(Err(err)) => return unreadable(key, &err),
        },
    };
    OpResult::Stats(Box::new(view))
}

/// A link view's click totals for protocol v2's link list: `read` (what
/// the remote store answered) or the local store's, with this core's
/// pending deltas; `None` when there are none to show (statistics off, or
/// unreadable).
pub(crate) fn link_totals(
    shard: &Shard,
    key: u64,
    read: Option<&StoredRead>,
) -> Option<stats::StatsView> {
    match read {
        Some(Ok(_)) => match view_of(shard, key, TOTALS_ONLY, read) {
            OpResult::Stats(view) => Some(*view),
            _ => None,
        },
        Some(Err(_)) => None,
        None => shard
            .stats_view(key, 0, 0, Granularity::Hour)
            .and_then(Result::ok),
    }
}

/// A read that failed: logged with why, and answered as an internal error
/// that says so (the API's `clicksError`, an ERROR on the wire) without
/// the store's own words (addresses, its error replies).
fn unreadable(key: u64, why: &dyn std::fmt::Display) -> OpResult {
    tracing::error!(key, "reading click statistics failed: {why}");
    OpResult::Failed(
        ErrorCode::INTERNAL,
        "the statistics could not be read".into(),
    )
}

/// After the link's read, with a remote store: asks the store for its
/// statistics, and `op` waits for them ([`remote_stats`]). `Some` when it
/// is answered at once (a refusal).
pub(crate) fn ask_remote(
    shard: &mut Shard,
    op: OpId,
    key: u64,
    meta: &LinkMeta,
    principal: Principal,
    query: Option<StatsQuery>,
) -> Option<OpResult> {
    let key = match readable(shard, key, meta, principal) {
        Ok(key) => key,
        Err(refused) => return Some(refused),
    };
    let range = query.unwrap_or(TOTALS_ONLY);
    match ask(shard, op, vec![key], range, Then::StatsRead { key, query }) {
        Ok(()) => None,
        Err(_) => Some(OpResult::Failed(ErrorCode::OVERLOADED, BUSY.into())),
    }
}

/// Statistics reads of a remote store one core keeps in flight at most;
/// past it a read is refused at once (`OVERLOADED`, "retry"; a link view
/// is answered with its clicks unread). A read of a wide range is hundreds
/// of commands, and a client may ask and hang up as fast as it can: the
/// reads it left behind are still sent and answered. Unbounded, that queue
/// held 1.1 GB and pushed other clients' redirects past `--store-timeout`
/// (review 16).
pub const MAX_REMOTE_STATS_READS: usize = 64;

/// Why a statistics read was refused at once.
const BUSY: &str = "too many statistics reads in flight on this core: retry";

/// Registers `then` on `op` and asks the remote store for `keys`'
/// statistics over `query`; when [`MAX_REMOTE_STATS_READS`] are in flight,
/// asks nothing and gives `then` back.
fn ask(
    shard: &mut Shard,
    op: OpId,
    keys: Vec<u64>,
    query: StatsQuery,
    then: Then,
) -> Result<(), Then> {
    if shard.stats.reads_out() >= MAX_REMOTE_STATS_READS {
        return Err(then);
    }
    if let Some(entry) = shard.ops.get_mut(op as usize) {
        entry.then = Some(Box::new(then));
    }
    shard.stats.read_started(op);
    shard.remote.push_back(RemoteRequest::Stats {
        op,
        keys,
        from_ms: query.from_ms,
        to_ms: query.to_ms,
        granularity: query.granularity,
    });
    Ok(())
}

/// Answers `op` with `result`; with a remote store, a link or a page of
/// links first waits for their click totals (one [`RemoteRequest::Stats`]
/// for all of them), so that rendering them reads no store.
pub(crate) fn complete_views(shard: &mut Shard, op: OpId, result: OpResult) {
    if !shard.reads_stats_remotely() {
        return shard.complete(op, result);
    }
    let keys: Vec<u64> = match &result {
        OpResult::Link(view) => view_key(shard, view).into_iter().collect(),
        OpResult::Page { links, .. } => links.iter().filter_map(|v| view_key(shard, v)).collect(),
        _ => Vec::new(),
    };
    if keys.is_empty() {
        return shard.complete(op, result);
    }
    if let Err(then) = ask(shard, op, keys, TOTALS_ONLY, Then::Totals { result }) {
        // Answered now, the clicks unread (`clicksError`).
        if let Some(entry) = shard.ops.get_mut(op as usize) {
            entry.then = Some(Box::new(then));
        }
        remote_stats(shard, op, Err(BUSY.into()));
    }
}

/// The statistics key of a link view that has no totals yet.
fn view_key(shard: &Shard, view: &crate::shard::LinkView) -> Option<u64> {
    if view.clicks.is_some() {
        return None;
    }
    stats_key_of_code(shard, &view.code, &view.meta)
}

/// The remote store answered `op`'s statistics read.
pub(crate) fn remote_stats(shard: &mut Shard, op: OpId, read: Result<Vec<StoredStats>, Box<str>>) {
    let Some(then) = shard
        .ops
        .get_mut(op as usize)
        .and_then(|entry| entry.then.take())
    else {
        return;
    };
    let result = match *then {
        Then::StatsRead { key, query } => {
            let read = read.map(|mut all| all.pop().unwrap_or_default());
            view_of(shard, key, query.unwrap_or(TOTALS_ONLY), Some(&read))
        }
        Then::Totals { mut result } => {
            let mut answers = read.map(Vec::into_iter);
            let mut attach = |view: &mut crate::shard::LinkView| {
                if view.clicks.is_some() || view_key(shard, view).is_none() {
                    return;
                }
                view.clicks = Some(match &mut answers {
                    Ok(each) => Ok(each.next().unwrap_or_default()),
                    Err(why) => Err(why.clone()),
                });
            };
            match &mut result {
                OpResult::Link(view) => attach(view),
                OpResult::Page { links, .. } => links.iter_mut().for_each(attach),
                _ => {}
            }
            result
        }
        // Not a statistics read: nothing else asks for one.
        _ => OpResult::Failed(ErrorCode::INTERNAL, "unexpected store reply".into()),
    };
    shard.complete(op, result);
}
