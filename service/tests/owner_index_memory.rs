//! RAM of the owner index per owned link (`shorty_service::owners`),
//! counted by a global allocator that tracks live bytes: the listing's
//! index must stay small beside the key directory's own cost per link.
//! Anonymous links are never in it (nothing to measure).
#![allow(clippy::unwrap_used)]
// A counting global allocator needs `unsafe impl GlobalAlloc` (as in
// tests/limits.rs): it forwards every call to the system allocator.
#![allow(unsafe_code)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicIsize, Ordering};

use shorty_service::owners::{Entry, Member, OwnerIndex};

struct Counting;

static LIVE: AtomicIsize = AtomicIsize::new(0);

// SAFETY: every call is forwarded to the system allocator unchanged; the
// counter only observes sizes.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE.fetch_add(layout.size() as isize, Ordering::Relaxed);
        // SAFETY: the caller's layout, as GlobalAlloc requires.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size() as isize, Ordering::Relaxed);
        // SAFETY: `ptr` came from `alloc` with this layout.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

#[test]
fn bytes_per_owned_link() {
    // One test in this binary: nothing else allocates meanwhile.
    let n: u64 = std::env::var("OWNED_LINKS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200_000);
    let index = OwnerIndex::default();
    let before = LIVE.load(Ordering::Relaxed);
    for i in 0..n {
        // 100 keys; generated codes, one link in 50 an alias.
        let member = if i % 50 == 0 {
            Member::Alias(format!("campaign-{i:08}").into())
        } else {
            Member::Key(i.wrapping_mul(0x9E37_79B9_7F4A_7C15))
        };
        index.add(
            (i % 100) as u32,
            Entry {
                created_at_ms: 1_700_000_000_000 + i,
                member,
            },
        );
    }
    let bytes = LIVE.load(Ordering::Relaxed) - before;
    let per_link = bytes as f64 / n as f64;
    eprintln!("owner index: {per_link:.1} bytes per owned link ({n} links, 100 keys, 2% aliases)");
    assert_eq!(index.len() as u64, n);
    assert!(per_link < 80.0, "{per_link} bytes per owned link");
}
