//! One core's timer task: wakes connections at their deadlines from one
//! sorted structure (no runtime timer per read), refreshes the HTTP `Date`
//! every second, notices a log batch stuck longer than `--commit-timeout`
//! (health), and beats the core's heartbeat for the systemd watchdog.

use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant, SystemTime};

use futures_lite::future;

use crate::driver::state::Core;
use crate::driver::Runtime;

/// Runs the core's timers until the runtime stops.
pub async fn run<R: Runtime>(core: Rc<Core<R>>) {
    let mut next_tick = Instant::now();
    let mut next_flush = core.stats.as_ref().map(|s| next_tick + s.flush);
    let mut stalled = false;
    loop {
        let now = Instant::now();
        if let Some(stats) = core
            .stats
            .as_ref()
            .filter(|_| next_flush.is_some_and(|at| now >= at))
        {
            next_flush = Some(now + stats.flush);
            stats.flush(&mut core.shard.borrow_mut());
        }
        if now >= next_tick {
            next_tick = now + Duration::from_secs(1);
            let wall = SystemTime::now();
            let date = httpdate::fmt_http_date(wall);
            core.shard.borrow_mut().set_date(&date);
            // Expiry is judged by this node's clock (sans-IO: the shard
            // reads none).
            let unix_ms = wall
                .duration_since(SystemTime::UNIX_EPOCH)
                .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
            core.shard.borrow_mut().set_wall_clock(now, unix_ms);
            core.heartbeat.fetch_add(1, Ordering::Relaxed);
            let stuck = core
                .shard
                .borrow()
                .log_in_flight_since()
                .is_some_and(|since| now.duration_since(since) > core.settings.commit_timeout);
            if stuck != stalled {
                stalled = stuck;
                core.shard.borrow().set_stalled(stuck);
                if stuck {
                    tracing::error!(
                        core = core.index,
                        "a log write has not completed within --commit-timeout"
                    );
                }
            }
        }
        {
            let mut conns = core.conns.borrow_mut();
            core.timers.borrow_mut().expire(now, |id, at| {
                if let Some(entry) = conns.get_mut(id as usize) {
                    if entry.armed.fired(at) {
                        if let Some(waker) = &entry.waker {
                            waker.wake_by_ref();
                        }
                    }
                }
            });
        }
        let next = core
            .timers
            .borrow()
            .next()
            .map_or(next_tick, |t| t.min(next_tick))
            .min(next_flush.unwrap_or(next_tick));
        let sleep = core
            .rt
            .sleep(next.saturating_duration_since(Instant::now()));
        future::or(sleep, core.timer_signal.wait()).await;
    }
}
