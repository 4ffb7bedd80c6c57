//! The process-wide connection limit (`--max-connections`).
//!
//! A `tokio::sync::Semaphore` (it needs no tokio runtime: it only holds
//! wakers, and both backends' wakers may be woken from another thread). A
//! slot freed on any core goes straight to the longest-waiting core, first
//! come first served; releasing costs one atomic when nobody waits.

use std::sync::Arc;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Counts client connections across all cores.
#[derive(Debug)]
pub struct ConnectionSlots {
    max: usize,
    permits: Arc<Semaphore>,
}

impl ConnectionSlots {
    /// Slots for `max` connections (at most `Semaphore::MAX_PERMITS`).
    pub fn new(max: usize) -> Self {
        let max = max.min(Semaphore::MAX_PERMITS);
        Self {
            max,
            permits: Arc::new(Semaphore::new(max)),
        }
    }

    /// Takes a slot, or `None` at the limit. The slot frees when dropped.
    pub fn try_acquire(&self) -> Option<ConnectionSlot> {
        self.permits
            .clone()
            .try_acquire_owned()
            .ok()
            .map(|permit| ConnectionSlot { _permit: permit })
    }

    /// Waits for a slot (cancel by dropping the future).
    pub async fn acquire(&self) -> ConnectionSlot {
        match self.permits.clone().acquire_owned().await {
            Ok(permit) => ConnectionSlot { _permit: permit },
            // The semaphore is never closed.
            Err(_) => std::future::pending().await,
        }
    }

    /// Connections currently open.
    pub fn in_use(&self) -> usize {
        self.max - self.permits.available_permits()
    }
}

/// One taken connection slot.
#[derive(Debug)]
pub struct ConnectionSlot {
    /// Held for the connection's life; dropping it frees the slot.
    _permit: OwnedSemaphorePermit,
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
