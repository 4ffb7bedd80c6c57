//! The rate limiters' memory under an address spray: 100,000 client
//! addresses (a fake clock; `SHORTY_SPRAY=N` sprays N instead) must not
//! grow a limiter past `--rate-max-clients` entries, and the bytes they
//! hold stay under the bound stated in `shorty_service::limits`
//! (measured here with a counting allocator).

// A global allocator is unsafe to implement; this one only forwards to
// `System` and counts.
#![allow(unsafe_code)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::atomic::{AtomicIsize, Ordering};
use std::time::{Duration, Instant};

use shorty_service::limits::{Action, LimitSettings, Limits, Rate};

struct Counting;

static LIVE: AtomicIsize = AtomicIsize::new(0);

// SAFETY: every call is forwarded to `System` unchanged; only a counter
// is kept on the side.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE.fetch_add(layout.size() as isize, Ordering::Relaxed);
        // SAFETY: the caller's contract is `System::alloc`'s.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size() as isize, Ordering::Relaxed);
        // SAFETY: as above.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

/// Bytes per client entry the limiter may hold at most, all included
/// (the cache's slot and index, the shared state's allocation).
const BYTES_PER_ENTRY: usize = 160;

#[test]
fn an_address_spray_stays_within_the_stated_memory() {
    let spray: u32 = std::env::var("SHORTY_SPRAY")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(100_000);
    let max_clients = 10_000;
    let settings = LimitSettings {
        create_per_client: Rate::parse("10/min").unwrap(),
        max_clients,
        ..LimitSettings::default()
    };
    let t0 = Instant::now();
    let before = LIVE.load(Ordering::Relaxed);
    let limits = Limits::new(&settings, t0);
    let mut peak = 0;
    for i in 0..spray {
        // Half IPv4 (one per address), half IPv6 (one per /64).
        let ip = if i % 2 == 0 {
            IpAddr::V4(Ipv4Addr::from(0x0a00_0000 + i))
        } else {
            IpAddr::V6(Ipv6Addr::new(
                0x2001,
                0xdb8,
                (i >> 16) as u16,
                i as u16,
                0,
                0,
                0,
                1,
            ))
        };
        let now = t0 + Duration::from_micros(u64::from(i));
        assert!(limits.check(Action::Create, Some(ip), None, now).is_ok());
        if i % 1000 == 0 {
            peak = peak.max(LIVE.load(Ordering::Relaxed) - before);
        }
    }
    peak = peak.max(LIVE.load(Ordering::Relaxed) - before);
    let entries = limits.entries();
    eprintln!(
        "{spray} addresses: {entries} entries, peak {peak} bytes ({} per entry kept)",
        peak as usize / max_clients
    );
    // quick_cache may hold a little over its nominal capacity (its ghost
    // and hot/cold split); never the spray.
    assert!(entries <= max_clients + max_clients / 10, "{entries}");
    assert!(
        (peak as usize) <= max_clients * BYTES_PER_ENTRY,
        "{peak} bytes for {max_clients} entries"
    );
    // A client sprayed early and evicted is simply new again: allowed.
    assert!(limits
        .check(
            Action::Create,
            Some("10.0.0.0".parse().unwrap()),
            None,
            t0 + Duration::from_secs(1)
        )
        .is_ok());
}
