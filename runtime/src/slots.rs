//! The process-wide connection limit (`--max-connections`) and the limit
//! per client address (`--max-connections-per-ip`).
//!
//! A `tokio::sync::Semaphore` (it needs no tokio runtime: it only holds
//! wakers, and both backends' wakers may be woken from another thread). A
//! slot freed on any core goes straight to the longest-waiting core, first
//! come first served; releasing costs one atomic when nobody waits.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Open connections per client address (an IPv6 address counts by its
/// /64: one subscriber's whole prefix), shared by every core.
type ByAddress = Arc<Mutex<HashMap<IpAddr, usize>>>;

/// Counts client connections across all cores.
#[derive(Debug)]
pub struct ConnectionSlots {
    max: usize,
    permits: Arc<Semaphore>,
    /// Most connections one address may hold (0: no limit).
    per_ip: usize,
    by_ip: ByAddress,
    /// Client sockets open (served, queued or being refused), and the most
    /// there may be: what the open-file limit leaves beside the process's
    /// own files (see [`socket_budget`]).
    sockets: Arc<AtomicUsize>,
    socket_budget: usize,
    /// Admin listener connections open (at most [`ADMIN_SOCKETS`], out of
    /// the reserve).
    admin_sockets: Arc<AtomicUsize>,
}

/// Admin listener connections open at once, all cores together: they are
/// not client sockets (operators reach `/metrics` while clients have spent
/// the budget), so they come out of the reserve, and are bounded so they
/// cannot spend it (review 18b: 256 idle admin connections under
/// `ulimit -n 256` stopped the process as client sockets used to).
pub const ADMIN_SOCKETS: usize = 16;

/// Client sockets a process of `threads` cores whose open-file limit is
/// `limit` may hold: the limit less a reserve for its own files (log
/// segments being written, hint files, the statistics store, Redis
/// connections, [`ADMIN_SOCKETS`]; an eighth of the limit, at least 64 and
/// at most 512) and less the cores' segment files open for reads
/// ([`read_handles`] each). A client beyond it is closed as soon as it is
/// accepted. Without the reserve, clients could take every
/// descriptor and the next log segment could not be created, which stopped
/// the process (review 18: 400 idle connections under `ulimit -n 256`).
pub fn socket_budget(limit: u64, threads: usize) -> usize {
    let reserve = (limit / 8).clamp(64, 512);
    let reads = (threads * read_handles(limit, threads)) as u64;
    usize::try_from(limit.saturating_sub(reserve + reads)).unwrap_or(usize::MAX)
}

/// Segment files each of `threads` cores keeps open for reads under an
/// open-file limit of `limit`: a sixteenth of the limit shared by the
/// cores, at least 4 and at most `FileCache::CAPACITY` (256). They are
/// taken out of the socket budget too: review 18c saw reads of links in
/// 235 segments keep 235 descriptors open under a limit of 256, after which
/// a third of the redirects failed and no new link was taken again.
pub fn read_handles(limit: u64, threads: usize) -> usize {
    let share = limit / 16 / threads.max(1) as u64;
    usize::try_from(share)
        .unwrap_or(usize::MAX)
        .clamp(4, crate::driver::FileCache::<()>::CAPACITY)
}

/// What one address's connections are counted under: an IPv4 address
/// (an IPv4-mapped IPv6 one too) as itself, an IPv6 address by its /64.
fn counted_as(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(v4) => IpAddr::V4(v4),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6((u128::from(v6) & !u128::from(u64::MAX)).into()),
        },
    }
}

impl ConnectionSlots {
    /// Slots for `max` connections (at most `Semaphore::MAX_PERMITS`), no
    /// limit per address.
    pub fn new(max: usize) -> Self {
        Self::with_per_ip(max, 0)
    }

    /// Slots for `max` connections, at most `per_ip` of them (0: any
    /// number) from one address.
    pub fn with_per_ip(max: usize, per_ip: usize) -> Self {
        let max = max.min(Semaphore::MAX_PERMITS);
        Self {
            max,
            permits: Arc::new(Semaphore::new(max)),
            per_ip,
            by_ip: ByAddress::default(),
            sockets: Arc::default(),
            socket_budget: usize::MAX,
            admin_sockets: Arc::default(),
        }
    }

    /// At most `budget` client sockets open at once ([`socket_budget`]).
    pub fn with_socket_budget(mut self, budget: usize) -> Self {
        self.socket_budget = budget;
        self
    }

    /// Counts one more client socket, or `None` when the budget is spent
    /// (then the socket is to be closed at once). The count drops with the
    /// guard.
    pub fn open_socket(&self) -> Option<SocketGuard> {
        SocketGuard::below(&self.sockets, self.socket_budget)
    }

    /// Counts one more admin connection, or `None` when
    /// [`ADMIN_SOCKETS`] are open (then it is to be closed at once).
    pub fn open_admin_socket(&self) -> Option<SocketGuard> {
        SocketGuard::below(&self.admin_sockets, ADMIN_SOCKETS)
    }

    /// Whether another client socket fits the budget now.
    pub fn has_socket_room(&self) -> bool {
        self.sockets() < self.socket_budget
    }

    /// Client sockets open now.
    pub fn sockets(&self) -> usize {
        self.sockets.load(Ordering::Relaxed)
    }

    /// Counts one more connection from `ip`, or `None` when that address
    /// already holds `--max-connections-per-ip` (an unknown address, or no
    /// limit: always admitted). The count drops with the guard.
    pub fn admit(&self, ip: Option<IpAddr>) -> Option<AddressGuard> {
        let (Some(ip), true) = (ip, self.per_ip > 0) else {
            return Some(AddressGuard { held: None });
        };
        let ip = counted_as(ip);
        let mut by_ip = self.by_ip.lock().unwrap_or_else(|e| e.into_inner());
        let open = by_ip.entry(ip).or_insert(0);
        if *open >= self.per_ip {
            return None;
        }
        *open += 1;
        Some(AddressGuard {
            held: Some((ip, self.by_ip.clone())),
        })
    }

    /// Addresses holding connections now (for tests and metrics).
    pub fn addresses(&self) -> usize {
        self.by_ip.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    /// Takes a slot, or `None` at the limit. The slot frees when dropped.
    pub fn try_acquire(&self) -> Option<ConnectionSlot> {
        self.permits
            .clone()
            .try_acquire_owned()
            .ok()
            .map(|permit| ConnectionSlot {
                _permit: permit,
                _address: None,
            })
    }

    /// Waits for a slot (cancel by dropping the future).
    pub async fn acquire(&self) -> ConnectionSlot {
        match self.permits.clone().acquire_owned().await {
            Ok(permit) => ConnectionSlot {
                _permit: permit,
                _address: None,
            },
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
    /// The connection's count against its address.
    _address: Option<AddressGuard>,
}

impl ConnectionSlot {
    /// The slot, also holding the connection's count against its address.
    pub fn with_address(mut self, guard: AddressGuard) -> Self {
        self._address = Some(guard);
        self
    }
}

/// One socket counted against a bound; dropping it uncounts it.
#[derive(Debug)]
pub struct SocketGuard(Arc<AtomicUsize>);

impl SocketGuard {
    /// Counts one more in `open`, or `None` when `max` are counted.
    fn below(open: &Arc<AtomicUsize>, max: usize) -> Option<Self> {
        if open.fetch_add(1, Ordering::Relaxed) >= max {
            open.fetch_sub(1, Ordering::Relaxed);
            return None;
        }
        Some(Self(open.clone()))
    }
}

impl Drop for SocketGuard {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// One connection counted against its address; dropping it uncounts it.
#[derive(Debug)]
pub struct AddressGuard {
    held: Option<(IpAddr, ByAddress)>,
}

impl Drop for AddressGuard {
    fn drop(&mut self) {
        if let Some((ip, by_ip)) = self.held.take() {
            let mut by_ip = by_ip.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(open) = by_ip.get_mut(&ip) {
                *open -= 1;
                if *open == 0 {
                    // Addresses gone leave nothing behind.
                    by_ip.remove(&ip);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_socket_budget_keeps_a_reserve_and_counts_guards() {
        assert_eq!(read_handles(256, 1), 16);
        assert_eq!(read_handles(256, 8), 4);
        assert_eq!(read_handles(20_000, 2), 256);
        assert_eq!(socket_budget(256, 1), 256 - 64 - 16);
        assert_eq!(socket_budget(20_000, 2), 20_000 - 512 - 512);
        assert_eq!(socket_budget(16, 1), 0);
        let slots = ConnectionSlots::new(1);
        let held: Vec<_> = (0..ADMIN_SOCKETS)
            .map(|_| slots.open_admin_socket().unwrap())
            .collect();
        assert!(slots.open_admin_socket().is_none());
        drop(held);
        assert!(slots.open_admin_socket().is_some());
        let slots = ConnectionSlots::new(10).with_socket_budget(2);
        let a = slots.open_socket().unwrap();
        let b = slots.open_socket().unwrap();
        assert!(slots.open_socket().is_none());
        assert_eq!(slots.sockets(), 2);
        drop(a);
        let c = slots.open_socket().unwrap();
        drop((b, c));
        assert_eq!(slots.sockets(), 0);
    }

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

    #[test]
    fn one_address_holds_at_most_its_share_and_gets_it_back() {
        let slots = ConnectionSlots::with_per_ip(100, 2);
        let a: IpAddr = "203.0.113.7".parse().unwrap();
        let b: IpAddr = "203.0.113.8".parse().unwrap();
        let (one, two) = (slots.admit(Some(a)).unwrap(), slots.admit(Some(a)).unwrap());
        assert!(slots.admit(Some(a)).is_none(), "a third from one address");
        // The same address written as IPv4-mapped IPv6 is the same client.
        assert!(slots
            .admit(Some("::ffff:203.0.113.7".parse().unwrap()))
            .is_none());
        let other = slots.admit(Some(b)).unwrap();
        assert!(
            slots.admit(None).is_some(),
            "unknown addresses are not limited"
        );
        drop(one);
        let three = slots.admit(Some(a)).expect("a slot given back");
        // An IPv6 /64 is one client.
        let (x, y) = (
            slots.admit(Some("2001:db8::1".parse().unwrap())).unwrap(),
            slots
                .admit(Some("2001:db8::ffff:2".parse().unwrap()))
                .unwrap(),
        );
        assert!(slots.admit(Some("2001:db8::3".parse().unwrap())).is_none());
        assert!(slots
            .admit(Some("2001:db8:0:1::3".parse().unwrap()))
            .is_some());
        drop((two, three, other, x, y));
        assert_eq!(slots.addresses(), 0, "nothing left behind");
        // 0: no limit.
        let open = ConnectionSlots::with_per_ip(100, 0);
        let held: Vec<_> = (0..50).map(|_| open.admit(Some(a)).unwrap()).collect();
        assert_eq!((held.len(), open.addresses()), (50, 0));
    }
}
