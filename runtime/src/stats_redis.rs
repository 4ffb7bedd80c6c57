//! Click statistics in the Redis store: every node's stats writer adds its
//! deltas to the cluster, one script call per link ([`LINK_SCRIPT`], all or
//! nothing) in pipelines, so every node's counts add up there. A link whose
//! call Redis refused (out of memory, read-only) had nothing applied and
//! goes again with the next flush; one whose answer never came may have
//! been applied and is not sent again, and the pipelines after it are not
//! sent into the stall but kept for the next flush. With a single Redis each flush
//! first checks its connection is live (`live`), so a Redis that
//! restarted since the last flush loses none of the next one's counts.
//!
//! Keys carry the code as a hash tag, so one link's keys live in one slot:
//! - `{CODE}:clicks`: a hash with `human`, `bot`, `first` (the least
//!   first click any node reported) and `last` (the greatest last click):
//!   nodes flush in any order, so both are widened, not "set once" and
//!   "latest writer wins" (a node that flushed earlier clicks after
//!   another's later ones left `first` past `last`);
//! - `{CODE}:clicks:YYYYMMDD`: a hash per UTC day with `h00`..`h23` (the
//!   hour's clicks), `human` and `bot`; it expires after
//!   [`DAY_TTL_SECS`] (hourly resolution is kept as long as the day);
//! - `{CODE}:refs`: a sorted set of referring hosts by clicks, cut to the
//!   top [`REFERRER_SLOTS`] after each increment (approximate top 10).
//!
//! The read side ([`read_stored`], which the store thread runs for a
//! core's `RemoteRequest::Stats`; [`RedisStatsReader`] for tools) reads
//! the same keys back in one pipeline (not a `MULTI`: see
//! [`read_commands`]): what every node added is already summed in them.
//!
//! **Which hand-overs a link's counts hold.** Each server process's writer
//! has a marker ([`Marker`], random per process): every script call also
//! sets `w:MARKER` in `{CODE}:clicks` to the last hand-over of the batch
//! (`StatsSender::send`'s numbers) and `t:MARKER` to the time, in the
//! same atomic call. A read of the same process finds its own `w:` field
//! and the core adds only the maps it handed over after it: clicks on
//! their way to Redis are then neither missing from a read nor counted
//! twice. Fields of writers silent for [`MARKER_TTL_SECS`] are deleted by
//! the next call that finds the hash has more than [`MARKER_PRUNE_AT`]
//! fields, so restarts do not grow the hash. Both values are integers, so
//! a reader that knows nothing of them (an older node) still parses the
//! hash.

use std::collections::HashMap;
use std::io;
use std::time::Duration;

use redis::{Pipeline, Value};
use shorty_service::codes::{format_code, MAX_CODE_LEN};
use shorty_service::stats::{
    day_of, series, ClickMap, Granularity, LinkTotals, SeriesRow, StoredStats, DAY_MS, HOUR_MS,
    REFERRER_SLOTS,
};

use crate::config::RedisSpec;
use crate::redis_store::{connect, Conn};
use crate::stats::StatsSink;

/// How long a day's hash lives: a little over a year.
pub const DAY_TTL_SECS: u64 = 400 * 24 * 3600;

/// How long a writer's marker fields outlive its last call: a hand-over
/// is settled by its core within a few flushes (`--stats-flush` is at most
/// a minute), far less than this.
pub const MARKER_TTL_SECS: u64 = 3600;

/// Fields of `{CODE}:clicks` past which a call looks for markers of
/// writers gone silent: `human`, `bot`, `first`, `last` and a pair per
/// writer, so up to four writers at once never pay for the look.
pub const MARKER_PRUNE_AT: usize = 12;

/// A server process's writer marker: the field names it records its
/// hand-overs under in every link's `{CODE}:clicks`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Marker(String);

impl Marker {
    /// A new random marker (one per server process).
    ///
    /// # Errors
    /// The system has no randomness to give.
    pub fn random() -> io::Result<Self> {
        let mut bytes = [0u8; 8];
        getrandom::fill(&mut bytes).map_err(io::Error::other)?;
        Ok(Self(format!("{:016x}", u64::from_le_bytes(bytes))))
    }

    /// The field holding the last hand-over applied.
    pub fn applied_field(&self) -> String {
        format!("w:{}", self.0)
    }

    /// The field holding when it was written (Redis's clock, seconds).
    pub fn time_field(&self) -> String {
        format!("t:{}", self.0)
    }
}

/// The calendar date (year, month, day) of a day since the Unix epoch
/// (Howard Hinnant's `civil_from_days`).
pub fn civil(day: u32) -> (i64, u32, u32) {
    let z = i64::from(day) + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

/// The Redis stats writer's sink.
pub struct RedisStats {
    runtime: tokio::runtime::Runtime,
    conn: Conn,
    /// Where, and each request's bound: for a new connection.
    spec: RedisSpec,
    timeout: Duration,
    /// A pipeline went unanswered on a cluster connection: the next flush
    /// first connects anew (below).
    reconnect: bool,
    /// Links' counts a Redis refused (out of memory, read-only, ...):
    /// nothing of them was applied; they go again with the next flush.
    retry: ClickMap,
    /// [`LINK_SCRIPT`]'s SHA1 once `SCRIPT LOAD` put it on every node:
    /// calls then send the hash (`EVALSHA`), not the script's 1.2 KB. A
    /// node that lost it (a restart, a failover, `SCRIPT FLUSH`) refuses
    /// the call with `NOSCRIPT`, nothing applied: the link is kept, and
    /// the next flush loads the script again.
    loaded: Option<String>,
    /// This process's marker (module doc), if its reads use one.
    marker: Option<Marker>,
}

impl RedisStats {
    /// Connects to `spec` (its own connection, on the stats writer's
    /// thread, off the serving cores and the link store's thread).
    ///
    /// # Errors
    /// The store cannot be reached.
    pub fn connect(
        spec: &RedisSpec,
        timeout: Duration,
        marker: Option<Marker>,
    ) -> Result<Self, String> {
        // A worker thread of its own: a cluster connection repairs itself
        // (slot refreshes, reconnects) in a background task, which on a
        // current-thread runtime ran only inside a flush's `block_on` and
        // stood still between flushes, a repair begun in one flush frozen
        // until the next (review 24 saw a refresh that never ended).
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("shorty-stats-io")
            .enable_all()
            .build()
            .map_err(|e| e.to_string())?;
        let conn = runtime.block_on(connect(spec, timeout, false))?;
        Ok(Self {
            runtime,
            conn,
            spec: spec.clone(),
            timeout,
            reconnect: false,
            retry: ClickMap::default(),
            loaded: None,
            marker,
        })
    }
}

/// Adds one link's deltas of a flush, all or nothing: the `#!lua` line
/// makes Redis (7.0+) refuse the whole script before it runs when it is out
/// of memory (no `allow-oom` flag), read-only or cannot persist, so a
/// refused link's counts were not applied and can be sent again without
/// counting twice.
///
/// `KEYS`: `{CODE}:clicks`, `{CODE}:refs`, then the day hashes. `ARGV`:
/// human, bot, first and last click (ms: `first`/`last` are widened, as
/// nodes flush in any order), the number of referrers, then host and count
/// of each, the referrer slots kept, the day hashes' TTL, the number of
/// hours, then for each hour its day's index in `KEYS`, its field
/// (`h00`..`h23`), human and bot; then the writer's marker fields (empty:
/// none), the last hand-over the call holds, [`MARKER_PRUNE_AT`] and
/// [`MARKER_TTL_SECS`] (see the module's doc).
pub const LINK_SCRIPT: &str = "#!lua
local clicks, refs = KEYS[1], KEYS[2]
redis.call('HINCRBY', clicks, 'human', ARGV[1])
redis.call('HINCRBY', clicks, 'bot', ARGV[2])
local f = tonumber(redis.call('HGET', clicks, 'first'))
if not f or tonumber(ARGV[3]) < f then redis.call('HSET', clicks, 'first', ARGV[3]) end
local l = tonumber(redis.call('HGET', clicks, 'last'))
if not l or tonumber(ARGV[4]) > l then redis.call('HSET', clicks, 'last', ARGV[4]) end
local i = 5
local nrefs = tonumber(ARGV[i])
i = i + 1
for _ = 1, nrefs do
  redis.call('ZINCRBY', refs, ARGV[i + 1], ARGV[i])
  i = i + 2
end
if nrefs > 0 then redis.call('ZREMRANGEBYRANK', refs, 0, -tonumber(ARGV[i]) - 1) end
local ttl = ARGV[i + 1]
local nhours = tonumber(ARGV[i + 2])
i = i + 3
for _ = 1, nhours do
  local day = KEYS[tonumber(ARGV[i])]
  local h, b = tonumber(ARGV[i + 2]), tonumber(ARGV[i + 3])
  redis.call('HINCRBY', day, ARGV[i + 1], h + b)
  redis.call('HINCRBY', day, 'human', h)
  redis.call('HINCRBY', day, 'bot', b)
  redis.call('EXPIRE', day, ttl)
  i = i + 4
end
local applied, at = ARGV[i], ARGV[i + 1]
if applied ~= '' then
  local now = tonumber(redis.call('TIME')[1])
  local last = tonumber(redis.call('HGET', clicks, applied))
  if not last or tonumber(ARGV[i + 2]) > last then
    redis.call('HSET', clicks, applied, ARGV[i + 2])
  end
  redis.call('HSET', clicks, at, now)
  if redis.call('HLEN', clicks) > tonumber(ARGV[i + 3]) then
    local all = redis.call('HGETALL', clicks)
    for j = 1, #all, 2 do
      local name = all[j]
      if string.sub(name, 1, 2) == 't:' and tonumber(all[j + 1]) < now - tonumber(ARGV[i + 4]) then
        redis.call('HDEL', clicks, name, 'w:' .. string.sub(name, 3))
      end
    end
  end
end
return 0";

/// Links per pipeline at most (a flush of many links is sent in several).
/// Small enough that one pipeline (about 1.3 KB per link with its script)
/// is answered well within `--store-timeout` on a busy Redis: a pipeline
/// whose answer does not come loses its links' counts (review 8: a
/// catch-up flush of 23,100 links in pipelines of 4,096, all in flight on
/// one connection, timed out whole and lost half the clicks of an
/// outage).
pub const PIPELINE_COMMANDS: usize = 512;

/// Pipelines a single Redis's flush keeps in flight at once, on its one
/// connection: the pipelines behind the first wait for it, and each is
/// timed from when it was sent.
pub const SINGLE_PIPELINES_IN_FLIGHT: usize = 2;

pub use crate::stats::MAX_RETRY_LINKS;

/// One link's deltas of a flush, merged over every map handed over.
#[derive(Debug, Default)]
struct LinkDeltas {
    totals: LinkTotals,
    /// Hour → (human, bot).
    hours: HashMap<u32, (u64, u64)>,
}

/// Merges `maps` per link.
fn per_link<'a>(maps: impl IntoIterator<Item = &'a ClickMap>) -> HashMap<u64, LinkDeltas> {
    let mut links: HashMap<u64, LinkDeltas> = HashMap::new();
    for map in maps {
        for (&key, pending) in map {
            let link = links.entry(key).or_default();
            link.totals.merge(pending);
            for h in pending.hours() {
                let e = link.hours.entry(h.hour).or_default();
                *e = (e.0 + u64::from(h.human), e.1 + u64::from(h.bot));
            }
        }
    }
    links
}

/// The [`LINK_SCRIPT`] call that adds `link`'s deltas to `code`'s keys:
/// by its hash when the script is loaded (`sha`), else with its text.
fn link_command(
    code: &str,
    link: &LinkDeltas,
    sha: Option<&str>,
    applied: Option<(&Marker, u64)>,
) -> redis::Cmd {
    let mut cmd = match sha {
        Some(sha) => {
            let mut cmd = redis::cmd("EVALSHA");
            cmd.arg(sha);
            cmd
        }
        None => {
            let mut cmd = redis::cmd("EVAL");
            cmd.arg(LINK_SCRIPT);
            cmd
        }
    };
    let mut hours: Vec<_> = link.hours.iter().collect();
    hours.sort_unstable();
    let mut days: Vec<String> = Vec::new();
    let mut hour_args: Vec<(usize, String, u64, u64)> = Vec::new();
    for (hour, (human, bot)) in hours {
        let (y, m, d) = civil(day_of(u64::from(*hour) * HOUR_MS));
        let day = format!("{{{code}}}:clicks:{y:04}{m:02}{d:02}");
        let index = match days.iter().position(|k| *k == day) {
            Some(i) => i,
            None => {
                days.push(day);
                days.len() - 1
            }
        };
        let field = format!("h{:02}", (u64::from(*hour) * HOUR_MS % DAY_MS) / HOUR_MS);
        // KEYS[1] and KEYS[2] are the totals and the referrers.
        hour_args.push((index + 3, field, *human, *bot));
    }
    cmd.arg(2 + days.len())
        .arg(format!("{{{code}}}:clicks"))
        .arg(format!("{{{code}}}:refs"));
    for day in &days {
        cmd.arg(day);
    }
    let t = &link.totals;
    cmd.arg(t.human).arg(t.bot).arg(t.first_ms).arg(t.last_ms);
    let refs = t.referrers.top(REFERRER_SLOTS);
    cmd.arg(refs.len());
    for (host, count) in &refs {
        cmd.arg(host.as_str()).arg(*count);
    }
    cmd.arg(REFERRER_SLOTS)
        .arg(DAY_TTL_SECS)
        .arg(hour_args.len());
    for (index, field, human, bot) in hour_args {
        cmd.arg(index).arg(field).arg(human).arg(bot);
    }
    match applied {
        Some((marker, through)) => cmd
            .arg(marker.applied_field())
            .arg(marker.time_field())
            .arg(through),
        None => cmd.arg("").arg("").arg(0),
    };
    cmd.arg(MARKER_PRUNE_AT).arg(MARKER_TTL_SECS);
    cmd
}

/// The commands that add `maps` to the store: one [`LINK_SCRIPT`] call per
/// link, in pipelines of at most [`PIPELINE_COMMANDS`], each with the keys
/// of the links it holds. With `one_slot`, each pipeline holds one link: a
/// Redis Cluster refuses a pipeline whose keys lie in more than one slot
/// (`CROSSSLOT`), and one link's keys share its code's hash tag, so one
/// slot. A single Redis takes many links per pipeline. `sha`: the
/// script's hash, when it is loaded. `applied`: the writer's marker and
/// the last hand-over `maps` hold, recorded with each link.
pub fn commands<'a>(
    maps: impl IntoIterator<Item = &'a ClickMap>,
    one_slot: bool,
    sha: Option<&str>,
    applied: Option<(&Marker, u64)>,
) -> Vec<(Pipeline, Vec<u64>)> {
    let links = per_link(maps);
    let mut out = Vec::new();
    let mut pipe = redis::pipe();
    let mut keys = Vec::new();
    let mut code_buf = [0; MAX_CODE_LEN];
    for (key, link) in &links {
        let code = format_code(*key, &mut code_buf).to_owned();
        pipe.add_command(link_command(&code, link, sha, applied));
        keys.push(*key);
        if one_slot || keys.len() >= PIPELINE_COMMANDS {
            out.push((
                std::mem::replace(&mut pipe, redis::pipe()),
                std::mem::take(&mut keys),
            ));
        }
    }
    if !keys.is_empty() {
        out.push((pipe, keys));
    }
    out
}

/// Pipelines a cluster flush keeps in flight at once (one per link).
pub const PIPELINES_IN_FLIGHT: usize = 64;

/// What became of one pipeline of links.
#[derive(Debug, Default)]
struct Sent {
    /// Links Redis refused before running their script (error replies):
    /// nothing of them was applied, so they may be sent again.
    refused: Vec<u64>,
    /// Links whose answer never came (a timeout, a dropped connection):
    /// they may have been applied, so they are never sent again.
    unknown: usize,
    /// The first error met.
    error: Option<String>,
    /// A node did not know the script (`NOSCRIPT`).
    noscript: bool,
}

/// Sends one pipeline and sorts every link's reply: an error reply (OOM,
/// READONLY, ...) arrives as a value, not as a failed pipeline.
async fn send(mut conn: Conn, pipe: Pipeline, keys: Vec<u64>) -> Sent {
    let mut sent = Sent::default();
    match conn.pipeline(&pipe, keys.len()).await {
        Ok(replies) if replies.len() == keys.len() => {
            for (key, reply) in keys.iter().zip(&replies) {
                if let Value::ServerError(err) = reply {
                    sent.noscript |= err.code() == "NOSCRIPT";
                    sent.refused.push(*key);
                    sent.error
                        .get_or_insert_with(|| format!("{:?}: {:?}", err.code(), err.details()));
                }
            }
        }
        Ok(replies) => {
            sent.unknown = keys.len();
            sent.error = Some(format!("{} replies to {} links", replies.len(), keys.len()));
        }
        Err(err) => {
            sent.unknown = keys.len();
            sent.error = Some(err.to_string());
        }
    }
    sent
}

/// Adds the deltas of the links `keys` in `maps` (every map's share of
/// them) into one map, within [`MAX_RETRY_LINKS`] links in all (`room`);
/// returns how many links did not fit.
fn keep_for_retry(
    maps: &[&ClickMap],
    keys: &[u64],
    room: &mut usize,
    into: &mut ClickMap,
) -> usize {
    let mut dropped = 0;
    for key in keys {
        if !into.contains_key(key) {
            if *room == 0 {
                dropped += 1;
                continue;
            }
            *room -= 1;
        }
        for map in maps {
            if let Some(pending) = map.get(key) {
                match into.get_mut(key) {
                    Some(kept) => kept.absorb(pending),
                    None => {
                        into.insert(*key, pending.clone());
                    }
                }
            }
        }
    }
    dropped
}

/// With a single Redis, makes sure `conn` is live before a flush: a PING,
/// and if that fails, another. The connection manager reconnects only
/// after a request on its connection failed, so after Redis restarted the
/// first request met the dead socket; when that was the flush, its links'
/// counts were dropped as "may have been applied" though Redis never saw
/// them (review 6, F5). A failed PING starts the reconnect, the second
/// PING waits for it, and the flush goes to the new connection; if the
/// second fails too, nothing was sent. (A cluster connection reconnects to
/// each node itself.)
///
/// # Errors
/// The store did not answer the second PING.
async fn live(conn: &Conn) -> redis::RedisResult<()> {
    if !matches!(conn, Conn::Single(_)) {
        return Ok(());
    }
    let ping = redis::cmd("PING");
    if conn.clone().query(&ping).await.is_ok() {
        return Ok(());
    }
    conn.clone().query(&ping).await.map(drop)
}

/// What one round of a flush's pipelines came to.
struct Round {
    /// Links refused before their script ran, or not sent after an
    /// unanswered pipeline: nothing of them applied.
    refused: Vec<u64>,
    /// Links whose answer never came.
    unknown: usize,
    /// The first error met.
    first_error: Option<String>,
    /// A node did not know the script.
    noscript: bool,
}

impl RedisStats {
    /// Sends every link of `all` once, loading the script first if it is
    /// not loaded.
    fn send_round(
        &mut self,
        all: &[&ClickMap],
        conn: &Conn,
        one_slot: bool,
        through: u64,
    ) -> Round {
        if self.loaded.is_none() {
            // On every node (the cluster client sends SCRIPT LOAD to all);
            // if it fails, this flush sends the script's text.
            let mut load = redis::cmd("SCRIPT");
            load.arg("LOAD").arg(LINK_SCRIPT);
            if let Ok(value) = self.runtime.block_on(conn.clone().query(&load)) {
                self.loaded = redis::from_redis_value::<String>(value).ok();
            }
        }
        let sha = self.loaded.clone();
        let marker = self.marker.clone();
        let applied = marker.as_ref().map(|m| (m, through));
        let in_flight = if one_slot {
            PIPELINES_IN_FLIGHT
        } else {
            SINGLE_PIPELINES_IN_FLIGHT
        };
        // Once a pipeline goes unanswered, the store is struggling (or the
        // connection is being replaced, dropping what it had not written):
        // the pipelines not yet sent are kept for the next flush instead,
        // so an unanswered flush loses the links in flight, not all.
        let (sent, unsent): (Vec<Sent>, Vec<u64>) = self.runtime.block_on(async {
            let mut flight = tokio::task::JoinSet::<Sent>::new();
            let (mut sent, mut unsent) = (Vec::new(), Vec::new());
            let mut stalled = false;
            for (pipe, keys) in commands(all.iter().copied(), one_slot, sha.as_deref(), applied) {
                while !stalled && flight.len() >= in_flight {
                    if let Some(Ok(done)) = flight.join_next().await {
                        stalled = done.unknown > 0;
                        sent.push(done);
                    }
                }
                if stalled {
                    unsent.extend(keys);
                    continue;
                }
                flight.spawn(send(conn.clone(), pipe, keys));
            }
            while let Some(done) = flight.join_next().await {
                if let Ok(done) = done {
                    sent.push(done);
                }
            }
            (sent, unsent)
        });
        let mut round = Round {
            refused: unsent,
            unknown: 0,
            first_error: None,
            noscript: false,
        };
        for s in sent {
            if s.noscript {
                self.loaded = None;
                round.noscript = true;
            }
            round.refused.extend(s.refused);
            round.unknown += s.unknown;
            if round.first_error.is_none() {
                round.first_error = s.error;
            }
        }
        round
    }
}

impl RedisStats {
    /// After an unanswered pipeline on a cluster connection, a new one
    /// from the seeds (see [`StatsSink::apply`]); bounded as the store
    /// thread's first connection is, since a cluster client's connect can
    /// wait on a node that never answers.
    fn reconnect_if_asked(&mut self) -> Result<(), String> {
        if !self.reconnect {
            return Ok(());
        }
        let (spec, timeout) = (&self.spec, self.timeout);
        let conn = self.runtime.block_on(async {
            tokio::time::timeout(timeout * 5, connect(spec, timeout, false))
                .await
                .unwrap_or_else(|_| Err("timed out".to_owned()))
        })?;
        tracing::info!("statistics: connected to the store anew after an unanswered flush");
        self.conn = conn;
        self.loaded = None;
        self.reconnect = false;
        Ok(())
    }
}

impl StatsSink for RedisStats {
    fn waiting_links(&self) -> usize {
        self.retry.len()
    }

    fn apply(&mut self, maps: &[std::sync::Arc<ClickMap>], through: u64) -> io::Result<()> {
        // After an unanswered pipeline on a cluster connection, a new one
        // from the seeds: review 24 saw the old one time out every flush
        // for minutes after a fail-back (its slot refresh never ended),
        // each flush losing its pipelines in flight as "unanswered". A
        // single Redis's connection manager reconnects by itself (`live`).
        let fresh = self.reconnect_if_asked();
        let conn = self.conn.clone();
        let one_slot = matches!(conn, Conn::Cluster(_));
        // What a Redis refused last time goes again, first.
        let waiting = std::mem::take(&mut self.retry);
        let all: Vec<&ClickMap> = std::iter::once(&waiting)
            .chain(maps.iter().map(|map| &**map))
            .collect();
        let live = match fresh {
            Ok(()) => self
                .runtime
                .block_on(live(&conn))
                .map_err(|e| e.to_string()),
            Err(err) => Err(format!("a new connection failed: {err}")),
        };
        if let Err(err) = live {
            // Nothing was sent: every link waits for the next flush.
            let mut keys: Vec<u64> = all.iter().flat_map(|map| map.keys().copied()).collect();
            keys.sort_unstable();
            keys.dedup();
            let mut room = MAX_RETRY_LINKS;
            let dropped = keep_for_retry(&all, &keys, &mut room, &mut self.retry);
            return Err(io::Error::other(format!(
                "the store did not answer a PING, nothing sent: {} links kept for the next \
                 flush ({dropped} of them dropped past {MAX_RETRY_LINKS}): {err}",
                keys.len() - dropped
            )));
        }
        let mut round = self.send_round(&all, &conn, one_slot, through);
        let again;
        let mut all = all;
        if round.noscript && round.unknown == 0 {
            // A node lost the script (a restart, a failover, SCRIPT
            // FLUSH): its calls were refused before running, nothing
            // applied. Load it again and send those links once more now,
            // rather than make them wait a flush.
            let (mut map, mut room) = (ClickMap::default(), usize::MAX);
            keep_for_retry(&all, &round.refused, &mut room, &mut map);
            again = map;
            all = vec![&again];
            round = self.send_round(&all, &conn, one_slot, through);
        }
        let Round {
            refused,
            unknown,
            first_error,
            ..
        } = round;
        self.reconnect |= unknown > 0 && one_slot;
        let mut room = MAX_RETRY_LINKS;
        let dropped = keep_for_retry(&all, &refused, &mut room, &mut self.retry);
        match first_error {
            None => Ok(()),
            Some(err) => Err(io::Error::other(format!(
                "{} links refused by the store or not sent after an unanswered pipeline, kept \
                 for the next flush ({dropped} of them dropped past {MAX_RETRY_LINKS}); \
                 {unknown} links unanswered, not sent again (they may have been counted): {err}",
                refused.len() - dropped
            ))),
        }
    }
}

/// A synchronous read side over the Redis store: what every node added,
/// read back ([`shorty_service::stats::StatsReader`]), for tools and tests.
///
/// The server does not use it: a core asks the store thread instead
/// (`RemoteRequest::Stats`, answered with [`read_stored`]) and serves
/// other requests while the read is out. A read through this reader waits
/// on one round trip to the store, bounded by `--store-timeout`; it goes
/// to a thread of its own with its own connection and tokio runtime.
pub struct RedisStatsReader {
    jobs: tokio::sync::mpsc::UnboundedSender<Job>,
    timeout: Duration,
}

/// One read asked of the reader's thread.
struct Job {
    key: u64,
    from_ms: u64,
    to_ms: u64,
    granularity: Granularity,
    reply: std::sync::mpsc::SyncSender<io::Result<StoredStats>>,
}

impl RedisStatsReader {
    /// Connects to `spec` on a thread of its own.
    ///
    /// # Errors
    /// The store cannot be reached, or the thread cannot start.
    pub fn connect(spec: &RedisSpec, timeout: Duration) -> Result<Self, String> {
        let (jobs, mut rx) = tokio::sync::mpsc::unbounded_channel::<Job>();
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let spec = spec.clone();
        std::thread::Builder::new()
            .name("shorty-stats-read".into())
            .spawn(move || {
                let runtime = match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(runtime) => runtime,
                    Err(e) => return drop(ready_tx.send(Err(e.to_string()))),
                };
                runtime.block_on(async move {
                    let conn = match connect(&spec, timeout, false).await {
                        Ok(conn) => conn,
                        Err(e) => return drop(ready_tx.send(Err(e))),
                    };
                    let _ = ready_tx.send(Ok(()));
                    // Ends when the reader (every sender) is dropped.
                    while let Some(job) = rx.recv().await {
                        let mut conn = conn.clone();
                        tokio::spawn(async move {
                            let read = read(&mut conn, &job);
                            let result = tokio::time::timeout(timeout, read)
                                .await
                                .unwrap_or_else(|_| Err(timed_out(timeout)));
                            let _ = job.reply.send(result);
                        });
                    }
                });
            })
            .map_err(|e| e.to_string())?;
        ready_rx
            .recv()
            .map_err(|_| "the statistics reader stopped".to_owned())??;
        Ok(Self { jobs, timeout })
    }
}

fn timed_out(timeout: Duration) -> io::Error {
    io::Error::new(
        io::ErrorKind::TimedOut,
        format!("the store did not answer within --store-timeout ({timeout:?})"),
    )
}

async fn read(conn: &mut Conn, job: &Job) -> io::Result<StoredStats> {
    // A tool's read: no process's hand-overs to add.
    read_stored(conn, job.key, job.from_ms, job.to_ms, job.granularity, None).await
}

/// The link `key`'s statistics over `[from_ms, to_ms)` as the store holds
/// them, in one pipeline on `conn`: the store thread's answer to a core's
/// statistics read (`RemoteRequest::Stats`), and [`RedisStatsReader`]'s.
///
/// # Errors
/// The store's, or a reply that is not what the writer stores.
pub async fn read_stored(
    conn: &mut Conn,
    key: u64,
    from_ms: u64,
    to_ms: u64,
    granularity: Granularity,
    marker: Option<&Marker>,
) -> io::Result<StoredStats> {
    let (pipe, count, days) = read_commands(
        key,
        from_ms,
        to_ms,
        granularity,
        marker,
        crate::keys::now_ms(),
    );
    let mut attempt = 1;
    loop {
        let replies = match conn.pipeline(&pipe, count).await {
            // A dead connection (Redis restarted) fails the first request
            // on it and starts its reconnect; a read changes nothing, so
            // it is asked again on the new connection rather than
            // answered as an error (review 6, F5: the first link view
            // after a restart said `"clicks": null`). Bounded by the
            // caller's --store-timeout.
            Err(err) if err.is_unrecoverable_error() => conn.pipeline(&pipe, count).await,
            other => other,
        }
        .map_err(io::Error::other)?;
        match parse_read(replies, &days, granularity, marker) {
            Err(err) if err.kind() == io::ErrorKind::Interrupted && attempt < READ_ATTEMPTS => {
                attempt += 1;
            }
            read => return read,
        }
    }
}

impl shorty_service::stats::StatsReader for RedisStatsReader {
    fn stored(
        &self,
        key: u64,
        from_ms: u64,
        to_ms: u64,
        granularity: Granularity,
    ) -> io::Result<StoredStats> {
        let (reply, answer) = std::sync::mpsc::sync_channel(1);
        self.jobs
            .send(Job {
                key,
                from_ms,
                to_ms,
                granularity,
                reply,
            })
            .map_err(|_| io::Error::other("the statistics reader stopped"))?;
        // A little past the thread's own bound, which answers first.
        answer
            .recv_timeout(self.timeout + Duration::from_millis(100))
            .unwrap_or_else(|_| Err(timed_out(self.timeout)))
    }
}

/// The commands that read one link's statistics over `[from_ms, to_ms)`:
/// its totals hash, its referrers and one hash per UTC day the range
/// touches (the days `series` keeps, so a wide range reads no more than
/// it shows), and with `marker` the writer's record once more, last.
/// Returns the pipeline, its command count and the days read.
///
/// Not a `MULTI`: a Redis out of memory refuses every command queued in
/// one, reads too, and statistics must stay readable then. Instead the
/// record is read first (with the totals) and last: if this process's
/// writer added to the link in between, the two differ and the read is
/// asked again ([`read_stored`]), so the day rows always hold exactly the
/// hand-overs the record says.
pub fn read_commands(
    key: u64,
    from_ms: u64,
    to_ms: u64,
    granularity: Granularity,
    marker: Option<&Marker>,
    now_ms: u64,
) -> (Pipeline, usize, Vec<u32>) {
    let mut code_buf = [0; MAX_CODE_LEN];
    let code = format_code(key, &mut code_buf);
    let mut pipe = redis::pipe();
    pipe.cmd("HGETALL").arg(format!("{{{code}}}:clicks"));
    pipe.cmd("ZREVRANGE")
        .arg(format!("{{{code}}}:refs"))
        .arg(0)
        .arg(REFERRER_SLOTS - 1)
        .arg("WITHSCORES");
    let shown = series(None, &[], [], from_ms, to_ms, granularity);
    let days: Vec<u32> = match (shown.series.first(), shown.series.last()) {
        (Some(&(start, _)), Some(&(last, _))) if to_ms > from_ms => {
            let end = last + granularity.millis() - 1;
            (day_of(start)..=day_of(end)).collect()
        }
        _ => Vec::new(),
    };
    // Only days that can hold clicks: a day's hash expires after
    // DAY_TTL_SECS, and no node counts a click a day ahead of this clock.
    // A range of 9,600 days read 9,600 hashes (review 16).
    let today = day_of(now_ms);
    let oldest = today.saturating_sub((DAY_TTL_SECS / (DAY_MS / 1000)) as u32 + 1);
    let days: Vec<u32> = days
        .into_iter()
        .filter(|day| (oldest..=today + 1).contains(day))
        .collect();
    for &day in &days {
        let (y, m, d) = civil(day);
        let hash = format!("{{{code}}}:clicks:{y:04}{m:02}{d:02}");
        match granularity {
            Granularity::Hour => pipe.cmd("HGETALL").arg(hash),
            Granularity::Day => pipe.cmd("HMGET").arg(hash).arg("human").arg("bot"),
        };
    }
    if let Some(marker) = marker {
        pipe.cmd("HGET")
            .arg(format!("{{{code}}}:clicks"))
            .arg(marker.applied_field());
    }
    (pipe, 2 + days.len() + usize::from(marker.is_some()), days)
}

/// The replies of [`read_commands`] as totals and stored rows (hours or
/// days since the epoch, by `granularity`), and with `marker` the last of
/// this process's hand-overs the link's counts hold. An error reply, or a
/// value that is not what the writer stores, is an error: never shown as
/// zero; a record that changed during the read is `Interrupted`.
///
/// # Errors
/// What is wrong, naming the reply.
pub fn parse_read(
    replies: Vec<Value>,
    days: &[u32],
    granularity: Granularity,
    marker: Option<&Marker>,
) -> io::Result<StoredStats> {
    let bad = |what: &str, e: &dyn std::fmt::Display| {
        io::Error::new(io::ErrorKind::InvalidData, format!("{what}: {e}"))
    };
    if replies.len() != 2 + days.len() + usize::from(marker.is_some()) {
        return Err(bad("replies", &replies.len()));
    }
    let mut replies = replies.into_iter();
    let mut next = |what: &str| -> io::Result<Value> {
        let value = replies.next().unwrap_or(Value::Nil);
        value.extract_error().map_err(|e| bad(what, &e))
    };
    let link: HashMap<String, u64> =
        redis::from_redis_value(next("totals")?).map_err(|e| bad("totals", &e))?;
    let field = |name: &str| link.get(name).copied().unwrap_or(0);
    // No field: this process's writer has applied nothing of this link
    // (or not within MARKER_TTL_SECS, long after every core settled).
    let applied = marker.map(|m| field(&m.applied_field()));
    let mut totals = LinkTotals {
        human: field("human"),
        bot: field("bot"),
        first_ms: field("first"),
        last_ms: field("last"),
        ..LinkTotals::default()
    };
    let refs: Vec<(String, f64)> =
        redis::from_redis_value(next("referrers")?).map_err(|e| bad("referrers", &e))?;
    for (host, count) in refs {
        // Scores are sums of ZINCRBY by whole clicks.
        totals.referrers.add(&host, count.max(0.0) as u64);
    }
    let mut rows = Vec::new();
    for &day in days {
        match granularity {
            Granularity::Hour => {
                let hours: HashMap<String, u64> =
                    redis::from_redis_value(next("day")?).map_err(|e| bad("day", &e))?;
                for (name, n) in hours {
                    let Some(hour) = name.strip_prefix('h').and_then(|h| h.parse::<u32>().ok())
                    else {
                        continue; // `human`, `bot`
                    };
                    if hour < 24 && n > 0 {
                        rows.push(SeriesRow {
                            bucket: day * 24 + hour,
                            human: n,
                            bot: 0,
                        });
                    }
                }
            }
            Granularity::Day => {
                let pair: Vec<Option<u64>> =
                    redis::from_redis_value(next("day")?).map_err(|e| bad("day", &e))?;
                let count = |i: usize| pair.get(i).copied().flatten().unwrap_or(0);
                let (human, bot) = (count(0), count(1));
                if human + bot > 0 {
                    rows.push(SeriesRow {
                        bucket: day,
                        human,
                        bot,
                    });
                }
            }
        }
    }
    if marker.is_some() {
        let last: Option<u64> =
            redis::from_redis_value(next("record")?).map_err(|e| bad("record", &e))?;
        if last.unwrap_or(0) != applied.unwrap_or(0) {
            return Err(io::Error::new(io::ErrorKind::Interrupted, TORN));
        }
    }
    Ok(StoredStats {
        totals: (totals.human + totals.bot > 0).then_some(totals),
        rows,
        applied,
    })
}

/// Why a read is asked again: this process's writer added to the link
/// between the read's first and last command.
const TORN: &str = "the link's counts changed during the read";

/// Reads asked at most, when this process's writer keeps adding to the
/// link during them (each is one round trip; the writer adds once per
/// `--stats-flush`, so a second read nearly always finds it quiet).
pub const READ_ATTEMPTS: usize = 4;

#[cfg(test)]
mod tests {
    use super::*;
    use shorty_service::stats::{ClickCounter, ClickMeta};

    fn bulk(s: &str) -> Value {
        Value::BulkString(s.as_bytes().to_vec())
    }

    fn hash(pairs: &[(&str, &str)]) -> Value {
        Value::Array(pairs.iter().flat_map(|(k, v)| [bulk(k), bulk(v)]).collect())
    }

    #[test]
    fn reads_cover_the_days_of_the_range_and_parse_back_into_rows() {
        let t = 1_709_251_200_000; // 2024-03-01T00:00:00Z
        let day = day_of(t);
        // Two hours across midnight: two day hashes.
        let ours = Marker("00000000000000aa".into());
        let (pipe, n, days) = read_commands(
            5,
            t - HOUR_MS,
            t + HOUR_MS,
            Granularity::Hour,
            Some(&ours),
            t,
        );
        // The record is read again last.
        assert_eq!((n, days.clone()), (5, vec![day - 1, day]));
        let text = String::from_utf8_lossy(&pipe.get_packed_pipeline()).into_owned();
        let mut buf = [0; MAX_CODE_LEN];
        let code = format_code(5, &mut buf).to_owned();
        for key in [
            format!("{{{code}}}:clicks"),
            format!("{{{code}}}:refs"),
            format!("{{{code}}}:clicks:20240229"),
            format!("{{{code}}}:clicks:20240301"),
        ] {
            assert!(text.contains(&key), "{key} in {text}");
        }
        // Totals only: no day.
        assert_eq!(read_commands(5, 0, 0, Granularity::Hour, None, t).1, 2);
        // A range of 9,000 days reads only those that can hold clicks:
        // none past tomorrow, none older than a day's hash lives.
        let (_, n, wide) = read_commands(
            5,
            t - 9_000 * DAY_MS,
            t + 9 * DAY_MS,
            Granularity::Day,
            None,
            t,
        );
        let kept = (DAY_TTL_SECS / 86_400) as u32 + 1;
        assert_eq!(wide.first().copied(), Some(day - kept));
        assert_eq!(wide.last().copied(), Some(day + 1));
        assert_eq!(n, 2 + wide.len());
        let (_, _, future) = read_commands(5, 0, u64::MAX / 2, Granularity::Day, None, t);
        assert!(future.is_empty(), "{future:?}");
        let replies = vec![
            hash(&[
                ("human", "7"),
                ("bot", "2"),
                ("first", "10"),
                ("last", "99"),
                // A writer's marker fields: integers, not counts.
                ("w:00000000000000aa", "41"),
                ("t:00000000000000aa", "1700000000"),
            ]),
            Value::Array(vec![bulk("t.co"), bulk("6"), bulk("x.example"), bulk("1")]),
            hash(&[("h23", "4"), ("human", "4"), ("bot", "0")]),
            hash(&[("h00", "5"), ("human", "3"), ("bot", "2")]),
        ];
        let with = |last: Value| {
            let mut all = replies.clone();
            all.push(last);
            all
        };
        let theirs = Marker("00000000000000bb".into());
        let stored = parse_read(with(Value::Nil), &days, Granularity::Hour, Some(&theirs)).unwrap();
        assert_eq!(
            stored.applied,
            Some(0),
            "another writer's marker is not ours"
        );
        // Our writer added to the link between the first and last read.
        let torn = parse_read(with(bulk("42")), &days, Granularity::Hour, Some(&ours));
        assert_eq!(torn.unwrap_err().kind(), io::ErrorKind::Interrupted);
        let stored = parse_read(with(bulk("41")), &days, Granularity::Hour, Some(&ours)).unwrap();
        assert_eq!(stored.applied, Some(41));
        let (totals, rows) = (stored.totals.unwrap(), stored.rows);
        assert_eq!(
            (totals.human, totals.bot, totals.first_ms, totals.last_ms),
            (7, 2, 10, 99)
        );
        assert_eq!(
            totals.referrers.top(10),
            vec![("t.co".to_owned(), 6), ("x.example".to_owned(), 1)]
        );
        let view = series(
            Some(&totals),
            &rows,
            [],
            t - HOUR_MS,
            t + HOUR_MS,
            Granularity::Hour,
        );
        assert_eq!(view.series, vec![(t - HOUR_MS, 4), (t, 5)]);
        assert_eq!(view.total, 9);
        // Days: HMGET human bot per day; a missing day is nil.
        let (_, _, days) = read_commands(5, t - DAY_MS, t + DAY_MS, Granularity::Day, None, t);
        let replies = vec![
            hash(&[("human", "7"), ("bot", "2")]),
            Value::Array(vec![]),
            Value::Array(vec![Value::Nil, Value::Nil]),
            Value::Array(vec![bulk("3"), bulk("2")]),
        ];
        let stored = parse_read(replies, &days, Granularity::Day, None).unwrap();
        assert_eq!(stored.applied, None, "a tool's read knows no hand-overs");
        let rows = stored.rows;
        assert_eq!(
            rows,
            vec![SeriesRow {
                bucket: day,
                human: 3,
                bot: 2
            }]
        );
        // What the writer never stores is an error, never zero clicks.
        let replies = vec![bulk("oops"), Value::Array(vec![])];
        assert!(parse_read(replies, &[], Granularity::Hour, None).is_err());
        let replies = vec![hash(&[("human", "x")]), Value::Array(vec![])];
        assert!(parse_read(replies, &[], Granularity::Hour, None).is_err());
        assert!(parse_read(vec![], &[], Granularity::Hour, None).is_err());
    }

    #[test]
    fn civil_dates() {
        assert_eq!(civil(0), (1970, 1, 1));
        assert_eq!(civil(19_782), (2024, 2, 29));
        assert_eq!(civil(19_783), (2024, 3, 1));
    }

    #[test]
    fn commands_tag_every_key_with_the_code_and_count_each_hour() {
        let mut c = ClickCounter::new(true);
        let t = 1_709_251_200_000; // 2024-03-01T00:00:00Z
        c.record(5, &ClickMeta::default(), t - 1);
        c.record(
            5,
            &ClickMeta {
                bot: true,
                referrer_host: Some("t.co"),
                ..Default::default()
            },
            t,
        );
        let cmds = commands(&[c.take()], true, None, None);
        assert_eq!(cmds.len(), 1);
        let (pipe, keys) = &cmds[0];
        let text = String::from_utf8_lossy(&pipe.get_packed_pipeline()).into_owned();
        let mut buf = [0; MAX_CODE_LEN];
        let code = format_code(5, &mut buf);
        assert!(
            text.contains(&format!("{{{code}}}:clicks:20240229")),
            "{text}"
        );
        assert!(
            text.contains(&format!("{{{code}}}:clicks:20240301")),
            "{text}"
        );
        assert!(text.contains("h23") && text.contains("h00"), "{text}");
        assert!(text.contains(&format!("{{{code}}}:refs")), "{text}");
        // One script call for the link, its keys declared.
        assert_eq!(keys, &[5]);
        assert_eq!(text.matches("EVAL").count(), 1, "{text}");
    }

    /// A cluster refuses a pipeline over several slots (CROSSSLOT): each
    /// of a cluster's pipelines holds one link's keys, one hash tag.
    #[test]
    fn a_cluster_s_pipelines_each_hold_one_link_s_keys() {
        let mut c = ClickCounter::new(true);
        let t = 1_709_251_200_000;
        for key in [5, 6, 7_000_000] {
            c.record(key, &ClickMeta::default(), t);
        }
        let map = c.take();
        let tags = |pipe: &Pipeline| {
            let text = String::from_utf8_lossy(&pipe.get_packed_pipeline()).into_owned();
            let mut tags: Vec<String> = text
                .split('{')
                .skip(1)
                .filter_map(|rest| rest.split_once('}').map(|(tag, _)| tag.to_owned()))
                .collect();
            tags.sort();
            tags.dedup();
            tags
        };
        let cluster = commands(std::slice::from_ref(&map), true, None, None);
        assert_eq!(cluster.len(), 3);
        for (pipe, _) in &cluster {
            assert_eq!(tags(pipe).len(), 1, "{:?}", tags(pipe));
        }
        let single = commands(&[map], false, None, None);
        assert_eq!(single.len(), 1);
        assert_eq!(tags(&single[0].0).len(), 3);
    }
}
