//! One core's pool of receive buffers the kernel picks from when bytes
//! arrive (io_uring provided buffers), so an idle connection holds no read
//! buffer. The one module of this crate with more than a line of `unsafe`.
//!
//! **How buffers go back.** On a kernel with buffer rings (Linux 5.19,
//! `IORING_REGISTER_PBUF_RING`) the pool is a ring shared with the kernel:
//! a buffer goes back by writing a ring entry and advancing the ring's
//! tail, in user space. Older kernels get `IORING_OP_PROVIDE_BUFFERS`, an
//! operation (an SQE, a completion, an entry in tokio-uring's operation
//! slab) per buffer given back, i.e. per read: a request/response costs
//! three ring operations instead of two (`tests/ring_setup.rs` counts them).
//!
//! Invariants (each `unsafe` block names the one it relies on):
//! 1. **The memory outlives the kernel's use of it.** The buffers and the
//!    ring's entries are allocated once per core and never freed (leaked):
//!    the kernel may write into a buffer, or read the ring, until the
//!    io_uring is gone, and a ring's teardown is asynchronous.
//! 2. **A buffer is read only while it is ours.** A completion hands buffer
//!    `bid` to us; [`BufferPool::bytes`] lends it and [`BufferPool::give_back`]
//!    returns it, and the connection (`connection.rs`) calls `give_back` only
//!    after the borrow has ended. Buffers are reached through raw pointers
//!    only, so no Rust reference covers memory the kernel may be writing.
//! 3. **An entry is written before it is published.** Only entries past the
//!    published tail are written (the kernel reads up to the tail), then
//!    the tail advances with a release store. Every buffer id is in the
//!    ring at most once (it goes back only after the kernel handed it out),
//!    so the ring, with one entry per buffer, never overflows.

#![allow(unsafe_code)]

use std::alloc::{alloc_zeroed, Layout};
use std::cell::Cell;
use std::io;
use std::rc::Rc;
use std::sync::atomic::{AtomicU16, Ordering};

use io_uring::cqueue;
use io_uring::opcode;
use io_uring::types::BufRingEntry;
use tokio_uring::{OneshotOutputTransform, UnsubmittedOneshot};

/// Bytes per provided buffer: a read takes at most this much.
pub(crate) const BUFFER_SIZE: usize = 16 * 1024;

/// Buffers per core (a power of two, as a buffer ring needs). Buffers are
/// handed back as soon as a read is handled, so this bounds how many reads
/// may complete between two turns of the core's loop, not how many
/// connections there are.
pub(crate) const BUFFER_COUNT: u16 = 256;

/// The buffer group id of the pool (one pool per ring).
pub(crate) const GROUP: u16 = 1;

/// How buffers go back to the kernel.
enum Returns {
    /// A registered buffer ring: its entries and our copy of its tail.
    Ring {
        entries: *mut BufRingEntry,
        tail: Cell<u16>,
    },
    /// An `IORING_OP_PROVIDE_BUFFERS` per buffer (kernels before 5.19).
    Provide,
}

/// One core's pool of provided buffers.
pub(crate) struct BufferPool {
    /// `BUFFER_COUNT` buffers of `BUFFER_SIZE` bytes, leaked (invariant 1).
    base: *mut u8,
    returns: Returns,
    /// Whether connections receive with a multishot receive
    /// (`--uring-multishot-recv`), until the kernel refuses one.
    multishot: Cell<bool>,
}

/// The result of giving buffers to the kernel with an operation.
struct Provided;

impl OneshotOutputTransform for Provided {
    type Output = io::Result<u32>;
    type StoredData = ();

    fn transform_oneshot_output(self, _: (), cqe: cqueue::Entry) -> Self::Output {
        let res = cqe.result();
        if res < 0 {
            Err(io::Error::from_raw_os_error(-res))
        } else {
            Ok(res as u32)
        }
    }
}

impl BufferPool {
    /// Allocates the pool and gives every buffer to the kernel: as a buffer
    /// ring where the kernel has them, else with `PROVIDE_BUFFERS`.
    /// `multishot`: connections receive with a multishot receive (only on
    /// a buffer ring: a kernel without those has no multishot receive).
    pub(crate) async fn new(multishot: bool) -> io::Result<Rc<Self>> {
        // Invariant 1: leaked, once per core.
        let memory: &'static mut [u8] =
            Box::leak(vec![0u8; BUFFER_SIZE * usize::from(BUFFER_COUNT)].into_boxed_slice());
        let base = memory.as_mut_ptr();
        if let Some(pool) = Self::ring(base, multishot)? {
            return Ok(Rc::new(pool));
        }
        let sqe =
            opcode::ProvideBuffers::new(base, BUFFER_SIZE as i32, BUFFER_COUNT, GROUP, 0).build();
        UnsubmittedOneshot::new((), Provided, sqe)
            .submit()
            .await
            .map_err(|e| {
                io::Error::new(
                    e.kind(),
                    format!("io_uring provided buffers (Linux 5.7 or newer) are unavailable: {e}"),
                )
            })?;
        Ok(Rc::new(Self {
            base,
            returns: Returns::Provide,
            multishot: Cell::new(false),
        }))
    }

    /// The pool on a registered buffer ring holding every buffer, or `None`
    /// if this kernel has no buffer rings.
    fn ring(base: *mut u8, multishot: bool) -> io::Result<Option<Self>> {
        let size = usize::from(BUFFER_COUNT) * std::mem::size_of::<BufRingEntry>();
        let layout = Layout::from_size_align(size, 4096).map_err(io::Error::other)?;
        // SAFETY: the layout's size is not zero (BUFFER_COUNT > 0).
        let entries: *mut BufRingEntry = unsafe { alloc_zeroed(layout) }.cast();
        if entries.is_null() {
            return Err(io::ErrorKind::OutOfMemory.into());
        }
        // SAFETY: `entries` is BUFFER_COUNT page-aligned entries, never
        // freed (invariant 1); the buffers they will name likewise, and
        // none is published before the loop below.
        let registered =
            unsafe { tokio_uring::register_buf_ring(entries as u64, BUFFER_COUNT, GROUP) };
        match registered {
            Ok(()) => {}
            // Before Linux 5.19. (The entries' page is leaked: once.)
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) => return Ok(None),
            Err(e) => {
                return Err(io::Error::new(
                    e.kind(),
                    format!("cannot register the io_uring buffer ring: {e}"),
                ))
            }
        }
        let pool = Self {
            base,
            returns: Returns::Ring {
                entries,
                tail: Cell::new(0),
            },
            multishot: Cell::new(multishot),
        };
        for bid in 0..BUFFER_COUNT {
            pool.give_back(bid);
        }
        Ok(Some(pool))
    }

    /// Whether buffers go back through a registered buffer ring (Linux
    /// 5.19), not an operation each.
    pub(crate) fn has_ring(&self) -> bool {
        matches!(self.returns, Returns::Ring { .. })
    }

    /// Whether connections receive with a multishot receive.
    pub(crate) fn multishot(&self) -> bool {
        self.multishot.get()
    }

    /// The kernel refused a multishot receive: a receive per read from now
    /// on, on this core.
    pub(crate) fn refuse_multishot(&self) {
        self.multishot.set(false);
    }

    /// The first `len` bytes of buffer `bid`, which a completion handed us.
    pub(crate) fn bytes(&self, bid: u16, len: usize) -> &[u8] {
        assert!(bid < BUFFER_COUNT, "buffer id {bid} outside the pool");
        let len = len.min(BUFFER_SIZE);
        // SAFETY: in bounds (checked above); the kernel wrote `len` bytes
        // into it and will not touch it again until it is handed back
        // (`give_back`), which happens after this borrow ends (invariant 2).
        unsafe { std::slice::from_raw_parts(self.buffer(bid), len) }
    }

    /// The start of buffer `bid` (`bid < BUFFER_COUNT`).
    fn buffer(&self, bid: u16) -> *mut u8 {
        // SAFETY: `bid < BUFFER_COUNT`, so the offset stays inside the
        // allocation of `BUFFER_COUNT * BUFFER_SIZE` bytes.
        unsafe { self.base.add(usize::from(bid) * BUFFER_SIZE) }
    }

    /// Hands buffer `bid` back to the kernel.
    pub(crate) fn give_back(&self, bid: u16) {
        assert!(bid < BUFFER_COUNT, "buffer id {bid} outside the pool");
        match &self.returns {
            Returns::Ring { entries, tail } => {
                let t = tail.get();
                let slot = usize::from(t & (BUFFER_COUNT - 1));
                // SAFETY: `slot < BUFFER_COUNT`; the entry past the
                // published tail is ours to write (invariant 3). The
                // setters leave alone the field that doubles as entry 0's
                // tail.
                let entry = unsafe { &mut *entries.add(slot) };
                entry.set_addr(self.buffer(bid) as u64);
                entry.set_len(BUFFER_SIZE as u32);
                entry.set_bid(bid);
                tail.set(t.wrapping_add(1));
                // SAFETY: the tail field of entry 0 is an aligned u16 inside
                // the ring that the kernel only reads; AtomicU16 has u16's
                // layout. Release: the entry is visible before the tail.
                let shared = unsafe { &*BufRingEntry::tail(*entries).cast::<AtomicU16>() };
                shared.store(t.wrapping_add(1), Ordering::Release);
            }
            Returns::Provide => {
                let sqe = opcode::ProvideBuffers::new(
                    self.buffer(bid),
                    BUFFER_SIZE as i32,
                    1,
                    GROUP,
                    bid,
                )
                .build();
                // Fire and forget: tokio-uring keeps a dropped operation
                // until its completion arrives.
                drop(UnsubmittedOneshot::new((), Provided, sqe).submit());
            }
        }
    }
}
