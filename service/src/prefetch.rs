//! A cache-line prefetch hint: the one `unsafe` of this crate.
//!
//! Why by hand: the standard library's `core::hint::prefetch_read` is
//! unstable, and what the hint crates offer is either `unsafe` to call or
//! a volatile read, which waits for the line as a load does. A probe of the
//! key directory is a cache miss on a large table (its slots are spread
//! evenly by design); prefetching the slot a later probe will read lets
//! that miss overlap other work (see `KeyDir::prefetch`).
//!
//! Invariants (audited): `_mm_prefetch` is a hint. It reads no memory
//! architecturally, never faults (a dangling or out-of-bounds address is
//! allowed and ignored), and changes no value any later load returns. Its
//! only requirement is the `sse` feature, part of every x86_64 target's
//! baseline. So it is sound for any pointer value.

/// Asks the CPU to bring the cache line holding `ptr` into the cache. A
/// no-op on targets other than x86_64.
#[inline(always)]
pub(crate) fn prefetch<T>(ptr: *const T) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: see the module's invariants: a prefetch never dereferences
    // `ptr` and `sse` is in the x86_64 baseline.
    unsafe {
        std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(ptr.cast::<i8>());
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = ptr;
}
