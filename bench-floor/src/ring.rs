//! The one module of this crate that uses `unsafe`: an io_uring with a
//! registered buffer ring, behind a safe interface for `null-uring`.
//!
//! Invariants (each `unsafe` block below names the one it relies on):
//! 1. **Buffer memory outlives the kernel's use of it.** The buffer ring's
//!    entries and the buffers are allocated once and never freed: the kernel
//!    may still write into them after the ring's descriptor is closed (ring
//!    teardown is asynchronous), so [`Ring`]'s `Drop` leaks them (one ring
//!    per process, made once). Send buffers in flight are owned by
//!    `Ring::sends` until their completion is taken, and leaked too if the
//!    ring is dropped before.
//! 2. **A buffer is read only while it is ours.** The kernel hands a buffer
//!    to us in a completion; [`Ring::buffer`] lends it (`&self`) and
//!    [`Ring::recycle`] (`&mut self`) gives it back, so no borrow of it
//!    survives its return. Buffers are reached through raw pointers only, so
//!    no Rust reference ever covers memory the kernel may be writing.
//! 3. **The tail is published after the entry.** An entry is written, then
//!    the ring's tail is advanced with a release store (the kernel reads it
//!    with an acquire load).

#![allow(unsafe_code)]

use std::alloc::{alloc_zeroed, Layout};
use std::collections::HashMap;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicU16, Ordering};

use io_uring::types::{BufRingEntry, Fd};
use io_uring::{cqueue, opcode, squeue, IoUring};

/// The ring's setup flags: what issue 23 measures against each other.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// `COOP_TASKRUN` + `SINGLE_ISSUER` + `DEFER_TASKRUN`: completions run
    /// only when this thread asks for them (the default).
    Defer,
    /// `COOP_TASKRUN` + `SINGLE_ISSUER`: no inter-processor interrupt per
    /// completion, but completions may run at any system call.
    Coop,
    /// No setup flags: every completion interrupts the thread.
    Plain,
    /// `COOP_TASKRUN` + `SINGLE_ISSUER`, but waiting as tokio-uring does:
    /// submit without waiting, then sleep in `epoll_wait(2)` on an epoll
    /// that holds the ring's descriptor (tokio's park), reaping completions
    /// after. Measures what that structure costs against waiting in
    /// `io_uring_enter(2)` itself.
    Epoll,
}

impl Mode {
    /// `defer`, `coop` or `plain`.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "defer" => Some(Self::Defer),
            "coop" => Some(Self::Coop),
            "plain" => Some(Self::Plain),
            "epoll" => Some(Self::Epoll),
            _ => None,
        }
    }
}

/// One completion, copied out of the completion queue.
#[derive(Debug, Clone, Copy)]
pub struct Completion {
    /// The submission's tag.
    pub user_data: u64,
    /// The result: a length, a descriptor, or `-errno`.
    pub result: i32,
    /// A multishot submission stays armed (`IORING_CQE_F_MORE`).
    pub more: bool,
    /// The buffer the kernel picked from the buffer ring, if any: pass it to
    /// [`Ring::buffer`], then [`Ring::recycle`].
    pub buffer: Option<u16>,
}

/// The buffer group every receive picks from.
const GROUP: u16 = 0;

/// The buffer ring: `count` buffers of `size` bytes, registered as
/// [`GROUP`].
struct BufRing {
    entries: *mut BufRingEntry,
    data: *mut u8,
    count: u16,
    size: usize,
    /// Our copy of the tail (the kernel reads the one in the ring).
    tail: u16,
}

/// An io_uring whose receives pick from a registered buffer ring.
pub struct Ring {
    uring: IoUring,
    bufs: BufRing,
    /// Send buffers in flight, by their submission's tag (invariant 1).
    sends: HashMap<u64, Vec<u8>>,
    /// [`Mode::Epoll`]: where the thread sleeps.
    epoll: Option<Epoll>,
}

/// An epoll instance watching one descriptor for input (the ring's:
/// readable when completions are posted).
struct Epoll(OwnedFd);

impl Epoll {
    fn watching(fd: RawFd) -> io::Result<Self> {
        // SAFETY: no pointers.
        let ep = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
        if ep < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `ep` is a descriptor we just opened and own alone.
        let ep = unsafe { OwnedFd::from_raw_fd(ep) };
        let mut event = libc::epoll_event {
            events: libc::EPOLLIN as u32,
            u64: 0,
        };
        // SAFETY: `event` is a valid epoll_event for the call's duration.
        let r = unsafe { libc::epoll_ctl(ep.as_raw_fd(), libc::EPOLL_CTL_ADD, fd, &mut event) };
        if r < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(Self(ep))
    }

    /// Sleeps until the watched descriptor is readable (or a signal).
    fn wait(&self) -> io::Result<()> {
        let mut event = libc::epoll_event { events: 0, u64: 0 };
        // SAFETY: room for one event, as the call is told.
        let r = unsafe { libc::epoll_wait(self.0.as_raw_fd(), &mut event, 1, -1) };
        if r < 0 {
            let e = io::Error::last_os_error();
            if e.raw_os_error() != Some(libc::EINTR) {
                return Err(e);
            }
        }
        Ok(())
    }
}

impl Ring {
    /// A ring of `entries` submissions, set up as `mode` says, with `count`
    /// (a power of two) receive buffers of `size` bytes.
    pub fn new(mode: Mode, entries: u32, count: u16, size: usize) -> io::Result<Self> {
        let mut builder = IoUring::builder();
        match mode {
            Mode::Defer => {
                builder
                    .setup_coop_taskrun()
                    .setup_single_issuer()
                    .setup_defer_taskrun();
            }
            Mode::Coop | Mode::Epoll => {
                builder.setup_coop_taskrun().setup_single_issuer();
            }
            Mode::Plain => {}
        }
        let uring = builder.build(entries)?;
        let epoll = if mode == Mode::Epoll {
            Some(Epoll::watching(uring.as_raw_fd())?)
        } else {
            None
        };
        assert!(
            count.is_power_of_two(),
            "the buffer count must be a power of two"
        );
        let entries_layout = Layout::from_size_align(
            usize::from(count) * std::mem::size_of::<BufRingEntry>(),
            4096,
        )
        .map_err(io::Error::other)?;
        let data_layout =
            Layout::from_size_align(usize::from(count) * size, 64).map_err(io::Error::other)?;
        assert!(size > 0, "empty receive buffers");
        // SAFETY: both layouts have a non-zero size (count is a power of two,
        // so at least 1, and size > 0).
        let (entries, data) = unsafe { (alloc_zeroed(entries_layout), alloc_zeroed(data_layout)) };
        if entries.is_null() || data.is_null() {
            return Err(io::ErrorKind::OutOfMemory.into());
        }
        let mut bufs = BufRing {
            entries: entries.cast(),
            data,
            count,
            size,
            tail: 0,
        };
        // SAFETY: the entries are `count` page-aligned `io_uring_buf`s that
        // are never freed (invariant 1).
        unsafe {
            uring
                .submitter()
                .register_buf_ring(entries as u64, count, GROUP)?;
        }
        for bid in 0..count {
            bufs.push(bid);
        }
        bufs.publish();
        Ok(Self {
            uring,
            bufs,
            sends: HashMap::new(),
            epoll,
        })
    }

    /// Queues `sqe`, submitting what is queued first if the queue is full.
    ///
    /// # Safety
    /// Whatever memory `sqe` points to must stay valid until its completion.
    unsafe fn push(&mut self, sqe: squeue::Entry) -> io::Result<()> {
        loop {
            // SAFETY: the caller's promise.
            if unsafe { self.uring.submission().push(&sqe) }.is_ok() {
                return Ok(());
            }
            self.uring.submit()?;
        }
    }

    /// Accepts connections on `listener` until it fails (one completion per
    /// connection, `more` while still armed).
    pub fn accept_multi(&mut self, listener: RawFd, user_data: u64) -> io::Result<()> {
        let sqe = opcode::AcceptMulti::new(Fd(listener))
            .build()
            .user_data(user_data);
        // SAFETY: an accept without an address points to no memory.
        unsafe { self.push(sqe) }
    }

    /// Receives from `fd` into buffers of the buffer ring, one completion
    /// per read, until end of stream or an error (`more` while armed).
    pub fn recv_multi(&mut self, fd: RawFd, user_data: u64) -> io::Result<()> {
        let sqe = opcode::RecvMulti::new(Fd(fd), GROUP)
            .build()
            .user_data(user_data);
        // SAFETY: the buffers are the ring's, valid forever (invariant 1).
        unsafe { self.push(sqe) }
    }

    /// Sends `data` on `fd`. `user_data` must not tag another send in
    /// flight; take the buffer back with [`Ring::take_sent`] on completion.
    pub fn send(&mut self, fd: RawFd, data: Vec<u8>, user_data: u64) -> io::Result<()> {
        let len = u32::try_from(data.len()).map_err(io::Error::other)?;
        let sqe = opcode::Send::new(Fd(fd), data.as_ptr(), len)
            .build()
            .user_data(user_data);
        let previous = self.sends.insert(user_data, data);
        assert!(previous.is_none(), "two sends in flight with one tag");
        // SAFETY: the Vec's heap memory does not move when the Vec does,
        // and `sends` keeps it until the completion is taken (invariant 1).
        unsafe { self.push(sqe) }
    }

    /// The buffer of the completed send tagged `user_data`.
    pub fn take_sent(&mut self, user_data: u64) -> Option<Vec<u8>> {
        self.sends.remove(&user_data)
    }

    /// Shuts `fd` down both ways (ends its multishot receive).
    pub fn shutdown(&mut self, fd: RawFd, user_data: u64) -> io::Result<()> {
        let sqe = opcode::Shutdown::new(Fd(fd), libc::SHUT_RDWR)
            .build()
            .user_data(user_data);
        // SAFETY: points to no memory.
        unsafe { self.push(sqe) }
    }

    /// Closes `fd`.
    pub fn close(&mut self, fd: RawFd, user_data: u64) -> io::Result<()> {
        let sqe = opcode::Close::new(Fd(fd)).build().user_data(user_data);
        // SAFETY: points to no memory.
        unsafe { self.push(sqe) }
    }

    /// Submits what is queued, waits for at least one completion and moves
    /// every completion ready into `out`.
    pub fn wait(&mut self, out: &mut Vec<Completion>) -> io::Result<()> {
        let submitted = match &self.epoll {
            // tokio-uring's park: submit (entering the ring only when there
            // is something to submit), and sleep in epoll only when no
            // completion is ready.
            Some(epoll) => {
                let submitted = if self.uring.submission().is_empty() {
                    Ok(0)
                } else {
                    self.uring.submit()
                };
                if submitted.is_ok() && self.uring.completion().is_empty() {
                    epoll.wait()?;
                }
                submitted
            }
            None => self.uring.submit_and_wait(1),
        };
        match submitted {
            Ok(_) => {}
            Err(e) if e.raw_os_error() == Some(libc::EINTR) => {}
            Err(e) => return Err(e),
        }
        out.extend(self.uring.completion().map(|cqe| Completion {
            user_data: cqe.user_data(),
            result: cqe.result(),
            more: cqueue::more(cqe.flags()),
            buffer: cqueue::buffer_select(cqe.flags()),
        }));
        Ok(())
    }

    /// The first `len` bytes of buffer `bid`, which a completion handed us.
    pub fn buffer(&self, bid: u16, len: usize) -> &[u8] {
        assert!(bid < self.bufs.count && len <= self.bufs.size);
        // SAFETY: in bounds (checked above); the kernel handed this buffer
        // to us and does not write it until `recycle` (invariant 2).
        unsafe {
            std::slice::from_raw_parts(self.bufs.data.add(usize::from(bid) * self.bufs.size), len)
        }
    }

    /// Gives buffer `bid` back to the kernel.
    pub fn recycle(&mut self, bid: u16) {
        assert!(bid < self.bufs.count);
        self.bufs.push(bid);
        self.bufs.publish();
    }
}

impl BufRing {
    /// Writes buffer `bid` into the next free entry (not yet visible).
    fn push(&mut self, bid: u16) {
        let slot = usize::from(self.tail & (self.count - 1));
        // SAFETY: `slot < count`; entries past the published tail are ours
        // to write (the kernel reads only up to the tail). The setters do
        // not touch the `resv` field that doubles as entry 0's tail.
        let entry = unsafe { &mut *self.entries.add(slot) };
        // SAFETY: `bid < count`: in bounds of the data allocation.
        entry.set_addr(unsafe { self.data.add(usize::from(bid) * self.size) } as u64);
        entry.set_len(u32::try_from(self.size).unwrap_or(u32::MAX));
        entry.set_bid(bid);
        self.tail = self.tail.wrapping_add(1);
    }

    /// Makes every pushed entry visible to the kernel (invariant 3).
    fn publish(&self) {
        // SAFETY: the tail field of entry 0 is a valid, aligned u16 the
        // kernel only reads; AtomicU16 has u16's layout.
        let tail = unsafe { &*(BufRingEntry::tail(self.entries).cast::<AtomicU16>()) };
        tail.store(self.tail, Ordering::Release);
    }
}

impl Drop for Ring {
    fn drop(&mut self) {
        // Invariant 1: the kernel may still use these after the ring's
        // descriptor closes; leak them rather than free memory it writes.
        for (_, data) in self.sends.drain() {
            std::mem::forget(data);
        }
    }
}
