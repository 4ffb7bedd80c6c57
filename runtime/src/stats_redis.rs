//! Click statistics in the Redis store: every node's stats writer adds its
//! deltas to the cluster with pipelined increments, so every node's counts
//! add up there.
//!
//! Keys carry the code as a hash tag, so one link's keys live in one slot:
//! - `{CODE}:clicks`: a hash with `human`, `bot`, `first` (set once,
//!   `HSETNX`) and `last` (the latest writer's: nodes' clocks and flushes
//!   make it exact to a flush interval);
//! - `{CODE}:clicks:YYYYMMDD`: a hash per UTC day with `h00`..`h23` (the
//!   hour's clicks), `human` and `bot`; it expires after
//!   [`DAY_TTL_SECS`] (hourly resolution is kept as long as the day);
//! - `{CODE}:refs`: a sorted set of referring hosts by clicks, cut to the
//!   top [`REFERRER_SLOTS`] after each increment (approximate top 10).

use std::collections::HashMap;
use std::io;
use std::time::Duration;

use redis::{Pipeline, Value};
use shorty_service::codes::{format_code, MAX_CODE_LEN};
use shorty_service::stats::{day_of, ClickMap, LinkTotals, DAY_MS, HOUR_MS, REFERRER_SLOTS};

use crate::config::RedisSpec;
use crate::redis_store::{connect, Conn};
use crate::stats::StatsSink;

/// How long a day's hash lives: a little over a year.
pub const DAY_TTL_SECS: u64 = 400 * 24 * 3600;

/// Commands per pipeline at most (a flush of many links is sent in
/// several).
pub const PIPELINE_COMMANDS: usize = 4096;

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
}

impl RedisStats {
    /// Connects to `spec` (its own connection, on the stats writer's
    /// thread, off the serving cores and the link store's thread).
    ///
    /// # Errors
    /// The store cannot be reached.
    pub fn connect(spec: &RedisSpec, timeout: Duration) -> Result<Self, String> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| e.to_string())?;
        let conn = runtime.block_on(connect(spec, timeout, false))?;
        Ok(Self { runtime, conn })
    }
}

/// The commands that add `maps` to the store, each a `Pipeline` of at most
/// [`PIPELINE_COMMANDS`].
pub fn commands(maps: &[ClickMap]) -> Vec<(Pipeline, usize)> {
    let mut totals: HashMap<u64, LinkTotals> = HashMap::new();
    let mut hours: HashMap<(u64, u32), (u64, u64)> = HashMap::new();
    for map in maps {
        for (&key, pending) in map {
            totals.entry(key).or_default().merge(pending);
            for h in pending.hours() {
                let e = hours.entry((key, h.hour)).or_default();
                *e = (e.0 + u64::from(h.human), e.1 + u64::from(h.bot));
            }
        }
    }
    let mut out = Vec::new();
    let mut pipe = redis::pipe();
    let mut n = 0;
    let mut code_buf = [0; MAX_CODE_LEN];
    let push = |pipe: &mut Pipeline, n: &mut usize, cmd: redis::Cmd| {
        pipe.add_command(cmd);
        *n += 1;
    };
    for (key, t) in &totals {
        let code = format_code(*key, &mut code_buf).to_owned();
        let link = format!("{{{code}}}:clicks");
        push(
            &mut pipe,
            &mut n,
            redis::cmd("HINCRBY")
                .arg(&link)
                .arg("human")
                .arg(t.human)
                .clone(),
        );
        push(
            &mut pipe,
            &mut n,
            redis::cmd("HINCRBY")
                .arg(&link)
                .arg("bot")
                .arg(t.bot)
                .clone(),
        );
        push(
            &mut pipe,
            &mut n,
            redis::cmd("HSETNX")
                .arg(&link)
                .arg("first")
                .arg(t.first_ms)
                .clone(),
        );
        push(
            &mut pipe,
            &mut n,
            redis::cmd("HSET")
                .arg(&link)
                .arg("last")
                .arg(t.last_ms)
                .clone(),
        );
        let refs = t.referrers.top(REFERRER_SLOTS);
        if !refs.is_empty() {
            let zset = format!("{{{code}}}:refs");
            for (host, count) in refs {
                push(
                    &mut pipe,
                    &mut n,
                    redis::cmd("ZINCRBY")
                        .arg(&zset)
                        .arg(count)
                        .arg(host)
                        .clone(),
                );
            }
            // Keep the top slots only: memory per link stays bounded.
            push(
                &mut pipe,
                &mut n,
                redis::cmd("ZREMRANGEBYRANK")
                    .arg(&zset)
                    .arg(0)
                    .arg(-(REFERRER_SLOTS as i64) - 1)
                    .clone(),
            );
        }
        if n >= PIPELINE_COMMANDS {
            out.push((std::mem::replace(&mut pipe, redis::pipe()), n));
            n = 0;
        }
    }
    for ((key, hour), (human, bot)) in &hours {
        let code = format_code(*key, &mut code_buf).to_owned();
        let day = day_of(u64::from(*hour) * HOUR_MS);
        let (y, m, d) = civil(day);
        let hash = format!("{{{code}}}:clicks:{y:04}{m:02}{d:02}");
        let field = format!("h{:02}", (u64::from(*hour) * HOUR_MS % DAY_MS) / HOUR_MS);
        push(
            &mut pipe,
            &mut n,
            redis::cmd("HINCRBY")
                .arg(&hash)
                .arg(field)
                .arg(human + bot)
                .clone(),
        );
        push(
            &mut pipe,
            &mut n,
            redis::cmd("HINCRBY")
                .arg(&hash)
                .arg("human")
                .arg(*human)
                .clone(),
        );
        push(
            &mut pipe,
            &mut n,
            redis::cmd("HINCRBY")
                .arg(&hash)
                .arg("bot")
                .arg(*bot)
                .clone(),
        );
        push(
            &mut pipe,
            &mut n,
            redis::cmd("EXPIRE").arg(&hash).arg(DAY_TTL_SECS).clone(),
        );
        if n >= PIPELINE_COMMANDS {
            out.push((std::mem::replace(&mut pipe, redis::pipe()), n));
            n = 0;
        }
    }
    if n > 0 {
        out.push((pipe, n));
    }
    out
}

impl StatsSink for RedisStats {
    fn apply(&mut self, maps: &[ClickMap]) -> io::Result<()> {
        let conn = &mut self.conn;
        self.runtime.block_on(async {
            for (pipe, count) in commands(maps) {
                let replies = conn
                    .pipeline(&pipe, count)
                    .await
                    .map_err(io::Error::other)?;
                // Every reply is checked: an error reply (OOM, READONLY,
                // ...) arrives as a value, not as a failed pipeline. A
                // batch is never re-sent (that would count twice): what
                // failed is reported and lost.
                let failed = replies
                    .iter()
                    .filter(|v| matches!(v, Value::ServerError(_)))
                    .count();
                if failed > 0 || replies.len() != count {
                    return Err(io::Error::other(format!(
                        "{failed} of {count} statistics commands failed ({} replies)",
                        replies.len()
                    )));
                }
            }
            Ok(())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use shorty_service::stats::{ClickCounter, ClickMeta};

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
        let cmds = commands(&[c.take()]);
        assert_eq!(cmds.len(), 1);
        let (pipe, n) = &cmds[0];
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
        // 4 totals + 2 referrer + 2 days x 4.
        assert_eq!(*n, 4 + 2 + 8);
    }
}
