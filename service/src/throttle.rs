//! At most one log line a second for an error that can repeat on every
//! request: a flood of failing redirects (the log's files out of reach,
//! descriptors exhausted) would otherwise write a line each (review 18c saw
//! 4 MB of them). The lines let through say how many were left out. The
//! runtime's accept loop throttles its "accept failed" and "out of client
//! sockets" warnings with it too.

use std::time::{Duration, Instant};

/// How often a throttled report is let through.
pub const INTERVAL: Duration = Duration::from_secs(1);

/// Lets one report through per [`INTERVAL`] and counts the ones it holds
/// back. Sans-IO: the caller passes `now`.
#[derive(Debug, Default)]
pub struct Throttle {
    last: Option<Instant>,
    held: u64,
}

impl Throttle {
    /// `Some(held)`: report now; `held` reports were held back since the
    /// last one let through. `None`: hold this one back.
    pub fn admit(&mut self, now: Instant) -> Option<u64> {
        if self
            .last
            .is_some_and(|at| now.saturating_duration_since(at) < INTERVAL)
        {
            self.held += 1;
            return None;
        }
        self.last = Some(now);
        Some(std::mem::take(&mut self.held))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_report_a_second_with_the_count_held_back() {
        let t = Instant::now();
        let mut throttle = Throttle::default();
        assert_eq!(throttle.admit(t), Some(0));
        for i in 1..=5 {
            assert_eq!(throttle.admit(t + Duration::from_millis(100 * i)), None);
        }
        assert_eq!(throttle.admit(t + INTERVAL), Some(5));
        assert_eq!(throttle.admit(t + INTERVAL), None);
        assert_eq!(throttle.admit(t + 3 * INTERVAL), Some(1));
    }
}
