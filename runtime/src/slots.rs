//! The process-wide connection limit (`--max-connections`).
//!
//! A slot freed on any core wakes the cores waiting for one
//! (`tokio::sync::Notify`, which needs no tokio runtime: it only holds
//! wakers, and both backends' wakers may be woken from another thread).
//! Releasing costs one atomic when nobody waits.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use tokio::sync::Notify;

/// Counts client connections across all cores.
#[derive(Debug)]
pub struct ConnectionSlots {
    max: usize,
    used: AtomicUsize,
    waiting: AtomicUsize,
    freed: Notify,
}

impl ConnectionSlots {
    /// Slots for `max` connections.
    pub fn new(max: usize) -> Self {
        Self {
            max,
            used: AtomicUsize::new(0),
            waiting: AtomicUsize::new(0),
            freed: Notify::new(),
        }
    }

    /// Takes a slot, or `None` at the limit. The slot frees when dropped.
    pub fn try_acquire(self: &Arc<Self>) -> Option<ConnectionSlot> {
        self.used
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |used| {
                (used < self.max).then_some(used + 1)
            })
            .ok()
            .map(|_| ConnectionSlot(self.clone()))
    }

    /// Waits for a slot (cancel by dropping the future).
    pub async fn acquire(self: &Arc<Self>) -> ConnectionSlot {
        self.waiting.fetch_add(1, Ordering::AcqRel);
        let _waiting = WaitingGuard(self);
        loop {
            // Registered before the check, so a release in between is not
            // missed.
            let freed = self.freed.notified();
            let mut freed = std::pin::pin!(freed);
            freed.as_mut().enable();
            if let Some(slot) = self.try_acquire() {
                return slot;
            }
            freed.await;
        }
    }

    /// Connections currently open.
    pub fn in_use(&self) -> usize {
        self.used.load(Ordering::Acquire)
    }
}

struct WaitingGuard<'a>(&'a ConnectionSlots);

impl Drop for WaitingGuard<'_> {
    fn drop(&mut self) {
        self.0.waiting.fetch_sub(1, Ordering::AcqRel);
    }
}

/// One taken connection slot.
#[derive(Debug)]
pub struct ConnectionSlot(Arc<ConnectionSlots>);

impl Drop for ConnectionSlot {
    fn drop(&mut self) {
        let slots = &self.0;
        slots.used.fetch_sub(1, Ordering::AcqRel);
        if slots.waiting.load(Ordering::Acquire) > 0 {
            slots.freed.notify_waiters();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_stop_at_the_limit_and_a_release_wakes_a_waiter_on_another_thread() {
        let slots = Arc::new(ConnectionSlots::new(1));
        let held = slots.try_acquire().unwrap();
        assert!(slots.try_acquire().is_none());
        let waiter = {
            let slots = slots.clone();
            std::thread::spawn(move || futures_lite::future::block_on(slots.acquire()))
        };
        std::thread::sleep(std::time::Duration::from_millis(50));
        drop(held);
        let got = waiter.join().unwrap();
        assert_eq!(slots.in_use(), 1);
        drop(got);
        assert_eq!(slots.in_use(), 0);
    }
}
