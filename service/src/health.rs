//! Process-wide health: can this server take new links right now, and if
//! not, why. Every core reports its log's state here; `/healthz` and
//! `/readyz` on any core read all of them, so the answer does not depend on
//! which core a probe lands on.

use std::sync::atomic::{AtomicU8, Ordering};

/// What one core's storage is doing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum StorageHealth {
    /// Taking new links.
    Ok = 0,
    /// The disk is full; retrying.
    DiskFull = 1,
    /// A batch has been in flight longer than `--commit-timeout`.
    Stalled = 2,
    /// The remote store cannot be reached.
    StoreUnreachable = 3,
    /// The log failed for good; the process is stopping.
    Broken = 4,
    /// The remote store answers but refuses writes (out of memory, a
    /// failing disk, too few replicas, read-only).
    StoreRefusing = 5,
}

impl StorageHealth {
    fn from_u8(v: u8) -> Self {
        match v {
            1 => Self::DiskFull,
            2 => Self::Stalled,
            3 => Self::StoreUnreachable,
            4 => Self::Broken,
            5 => Self::StoreRefusing,
            _ => Self::Ok,
        }
    }

    /// Why new links are refused, for people.
    pub fn reason(self) -> &'static str {
        match self {
            Self::Ok => "ok",
            Self::DiskFull => {
                "disk full (or out of file descriptors): new URLs are refused until the log can \
                 write again"
            }
            Self::Stalled => "the log is not completing writes (a stalled disk?)",
            Self::StoreUnreachable => "the store cannot be reached",
            Self::Broken => "the log failed; the server is stopping",
            Self::StoreRefusing => {
                "the store refuses writes (out of memory, read-only, a failing disk or too few \
                 replicas: see the log)"
            }
        }
    }
}

/// The health of every core.
#[derive(Debug)]
pub struct Health {
    cores: Box<[AtomicU8]>,
}

impl Health {
    /// Health for `cores` cores, all well.
    pub fn new(cores: usize) -> Self {
        Self {
            cores: (0..cores).map(|_| AtomicU8::new(0)).collect(),
        }
    }

    /// Core `core` reports its storage's state.
    pub fn set(&self, core: usize, state: StorageHealth) {
        if let Some(slot) = self.cores.get(core) {
            slot.store(state as u8, Ordering::Relaxed);
        }
    }

    /// The first problem of any core, as (core, state); `None` when every
    /// core can take new links.
    pub fn problem(&self) -> Option<(usize, StorageHealth)> {
        self.cores.iter().enumerate().find_map(|(i, s)| {
            let state = StorageHealth::from_u8(s.load(Ordering::Relaxed));
            (state != StorageHealth::Ok).then_some((i, state))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn any_core_s_problem_is_the_process_s() {
        let health = Health::new(3);
        assert_eq!(health.problem(), None);
        health.set(2, StorageHealth::DiskFull);
        assert_eq!(health.problem(), Some((2, StorageHealth::DiskFull)));
        health.set(2, StorageHealth::Ok);
        assert_eq!(health.problem(), None);
    }
}
