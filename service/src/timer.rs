//! One core's deadlines: a single sorted structure for every connection's
//! timeouts, instead of a runtime timer per read.
//!
//! Connections say when they next need the clock
//! ([`crate::connection::Connection::poll_timeout`]); the driver arms that
//! deadline here with [`Timers::arm`], sleeps until [`Timers::next`], and
//! wakes whoever [`Timers::expire`] returns. Entries are lazy: a deadline
//! that moves later (the idle timeout after every read) is not re-armed;
//! the old entry fires, the connection finds nothing due, and arms the new
//! one. So the common path costs nothing, and a heap push only happens when
//! a deadline moves earlier.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::time::Instant;

/// What a connection has armed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Armed(Option<Instant>);

/// A core's deadlines.
#[derive(Debug, Default)]
pub struct Timers {
    heap: BinaryHeap<Reverse<(Instant, u32)>>,
}

impl Timers {
    /// No deadlines.
    pub fn new() -> Self {
        Self::default()
    }

    /// Makes sure connection `id` is woken at or before `at` (`None`: it
    /// needs no clock). Returns `true` when this is now the earliest
    /// deadline, so the sleeping timer task must be told.
    pub fn arm(&mut self, armed: &mut Armed, id: u32, at: Option<Instant>) -> bool {
        let Some(at) = at else {
            return false;
        };
        if armed.0.is_some_and(|current| current <= at) {
            return false;
        }
        armed.0 = Some(at);
        let earliest = self.next().is_none_or(|next| at < next);
        self.heap.push(Reverse((at, id)));
        earliest
    }

    /// The earliest deadline.
    pub fn next(&self) -> Option<Instant> {
        self.heap.peek().map(|Reverse((at, _))| *at)
    }

    /// Pops every deadline at or before `now`, calling `due(id, at)`; the
    /// caller wakes `id` if `at` is what it has armed (and clears it with
    /// [`Armed::fired`]), and ignores stale entries.
    pub fn expire(&mut self, now: Instant, mut due: impl FnMut(u32, Instant)) {
        while let Some(Reverse((at, id))) = self.heap.peek().copied() {
            if at > now {
                break;
            }
            self.heap.pop();
            due(id, at);
        }
    }

    /// Deadlines queued (live and stale).
    pub fn len(&self) -> usize {
        self.heap.len()
    }

    /// `true` when nothing is queued.
    pub fn is_empty(&self) -> bool {
        self.heap.is_empty()
    }
}

impl Armed {
    /// Nothing armed.
    pub fn none() -> Self {
        Self(None)
    }

    /// If `at` is the armed deadline, clears it and returns `true`: the
    /// connection is due. A stale entry returns `false`.
    pub fn fired(&mut self, at: Instant) -> bool {
        if self.0 == Some(at) {
            self.0 = None;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn later_deadlines_are_lazy_and_earlier_ones_are_armed() {
        let t0 = Instant::now();
        let s = Duration::from_secs(1);
        let mut timers = Timers::new();
        let mut a = Armed::none();
        assert!(timers.arm(&mut a, 1, Some(t0 + 10 * s)));
        // Moving later (the idle timeout after a read) pushes nothing.
        assert!(!timers.arm(&mut a, 1, Some(t0 + 20 * s)));
        assert_eq!(timers.len(), 1);
        // Moving earlier (a frame started) does.
        assert!(timers.arm(&mut a, 1, Some(t0 + 2 * s)));
        let mut b = Armed::none();
        assert!(!timers.arm(&mut b, 2, Some(t0 + 5 * s)));
        assert_eq!(timers.next(), Some(t0 + 2 * s));

        let mut fired = Vec::new();
        timers.expire(t0 + 6 * s, |id, at| {
            let slot = if id == 1 { &mut a } else { &mut b };
            if slot.fired(at) {
                fired.push(id);
            }
        });
        assert_eq!(fired, [1, 2]);
        // The stale entry at +10 s fires for nobody.
        let mut stale = 0;
        timers.expire(t0 + 30 * s, |id, at| {
            let slot = if id == 1 { &mut a } else { &mut b };
            if !slot.fired(at) {
                stale += 1;
            }
        });
        assert_eq!((stale, timers.is_empty()), (1, true));
    }
}
