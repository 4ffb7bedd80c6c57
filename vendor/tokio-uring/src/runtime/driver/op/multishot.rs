//! A multishot operation read one completion at a time (vendored patch 3,
//! `vendor/PATCHES.md`).
//!
//! A multishot operation (`IORING_OP_RECV` with `IORING_RECV_MULTISHOT`,
//! multishot accept, ...) is one submission that posts a completion per
//! event, each with `IORING_CQE_F_MORE`, until one comes without it: the
//! operation has ended (an error, end of stream, `ENOBUFS` when its buffer
//! group ran dry, or a cancel) and the kernel will post nothing more for it.
//!
//! tokio-uring 0.5 already keeps such an operation in its slab across
//! completions (`Lifecycle::CompletionList`), but its only reader
//! (`poll_multishot_op`) folds every completion but the last into one
//! future's output, and dropping an armed one does not cancel it.
//! [`Multishot`] hands out each completion in order ([`Multishot::poll_next`])
//! and cancels the operation when asked ([`Multishot::cancel`]) or dropped.
//!
//! Invariants:
//! 1. **The slab entry lives until the final completion.** It is removed
//!    only when the completion without `F_MORE` has been handed out (or, for
//!    a dropped one, has arrived: `Lifecycle::Ignored`), so a later operation
//!    never reuses the index (the `user_data`) while the kernel may still
//!    post completions under it.
//! 2. **A cancel names only a live operation.** [`Multishot::cancel`] and the
//!    drop submit `IORING_OP_ASYNC_CANCEL` for the index only while the
//!    entry is live (invariant 1); submissions reach the kernel in order, so
//!    even when the entry is removed before the cancel is submitted, an
//!    operation that reuses the index is submitted after the cancel and
//!    cannot be its target.
//! 3. **The submitted entry borrows no memory** (the caller's promise in
//!    [`Multishot::submit`]): unlike a oneshot's, a multishot operation keeps
//!    no data alive, and one that was dropped runs until its cancel lands.
//!    Buffers come from a provided-buffer group that outlives the ring.

use std::io;
use std::task::{Context, Poll};

use io_uring::{cqueue, squeue};

use crate::runtime::driver::WeakHandle;
use crate::runtime::CONTEXT;

/// What becomes of the completions of a [`Multishot`] dropped before it
/// handed them out (see [`Multishot::discard_with`]). Kept by the driver,
/// in the operation's `Lifecycle::Ignored`, until the final completion.
pub(crate) struct Discard(pub(crate) fn(&MultishotCqe));

impl Discard {
    /// Passes a completion nobody will read to the hook.
    pub(crate) fn discard(&self, result: io::Result<u32>, flags: u32) {
        (self.0)(&MultishotCqe { result, flags });
    }
}

/// One completion of a [`Multishot`] operation.
#[derive(Debug)]
pub struct MultishotCqe {
    /// The completion's result: a count (bytes, a descriptor) or the error.
    pub result: io::Result<u32>,
    /// The completion's flags (`IORING_CQE_F_MORE`, `IORING_CQE_F_BUFFER`
    /// and the buffer id: see [`io_uring::cqueue::buffer_select`]).
    pub flags: u32,
}

impl MultishotCqe {
    /// Whether more completions follow: `false` on the final one.
    pub fn more(&self) -> bool {
        cqueue::more(self.flags)
    }
}

/// A submitted multishot operation: its completions, one at a time, until
/// the final one (without `IORING_CQE_F_MORE`).
pub struct Multishot {
    driver: WeakHandle,
    index: usize,
    /// The final completion was handed out and the slab entry removed.
    finished: bool,
    /// A cancel was submitted (at most one is).
    cancelled: bool,
    /// Called with each completion never handed out (the handle dropped
    /// first).
    discard: Option<fn(&MultishotCqe)>,
}

impl Multishot {
    /// Submits `sqe`, a multishot operation, to the current thread's ring.
    ///
    /// # Safety
    ///
    /// `sqe` must reference no memory of the caller's (a multishot
    /// receive takes its buffers from a provided-buffer group, which must
    /// outlive the ring): the operation may run until its cancel lands,
    /// after this value is dropped.
    ///
    /// # Panics
    ///
    /// Outside a tokio-uring runtime.
    pub unsafe fn submit(sqe: squeue::Entry) -> Self {
        let handle = CONTEXT
            .with(|x| x.handle())
            .expect("Could not submit op; not in runtime context");
        let index = handle.submit_op_2(sqe);
        Self {
            driver: (&handle).into(),
            index,
            finished: false,
            cancelled: false,
            discard: None,
        }
    }

    /// Has `discard` called with every completion this handle will never
    /// hand out because it is dropped first: those already posted, and
    /// those that arrive until the final one (the cancel's). A multishot
    /// accept needs it: each completion is a connection's descriptor, which
    /// would otherwise stay open, its client waiting for an answer that
    /// never comes.
    pub fn discard_with(&mut self, discard: fn(&MultishotCqe)) {
        self.discard = Some(discard);
    }

    /// The next completion, in the order the kernel posted them;
    /// `Ready(None)` after the final one was handed out, or once the
    /// runtime is gone (its drop cancelled the operation and waited for
    /// it: nothing more will come). Not a panic there, because a value
    /// dropped during the runtime's teardown may drain it.
    pub fn poll_next(&mut self, cx: &mut Context<'_>) -> Poll<Option<MultishotCqe>> {
        if self.finished {
            return Poll::Ready(None);
        }
        let Some(driver) = self.driver.upgrade() else {
            self.finished = true;
            return Poll::Ready(None);
        };
        let cqe = ready!(driver.poll_multishot_next(self.index, cx));
        if !cqueue::more(cqe.flags) {
            // The driver removed the entry with it (invariant 1).
            self.finished = true;
        }
        Poll::Ready(Some(MultishotCqe {
            result: cqe.result,
            flags: cqe.flags,
        }))
    }

    /// Asks the kernel to end the operation (`IORING_OP_ASYNC_CANCEL`,
    /// submitted with the next batch). Completions posted before the cancel
    /// landed are still handed out, then a final one (`ECANCELED` as a
    /// rule). Does nothing once the final completion was handed out, or
    /// after a first cancel.
    pub fn cancel(&mut self) {
        if self.finished || self.cancelled {
            return;
        }
        if let Some(driver) = self.driver.upgrade() {
            // Invariant 2: the entry is live until `finished`.
            driver.cancel_op(self.index);
            self.cancelled = true;
        }
    }

    /// Whether the final completion was handed out.
    pub fn is_finished(&self) -> bool {
        self.finished
    }

    /// Whether [`cancel`](Self::cancel) was called (and did something).
    pub fn is_cancelled(&self) -> bool {
        self.cancelled
    }
}

impl Drop for Multishot {
    /// Still armed: the operation is cancelled and the driver keeps its slab
    /// entry until the final completion arrives (invariant 1). Completions
    /// not yet handed out are dropped, with any buffer they name (hand them
    /// out first, `cancel` then `poll_next` until `None`, to get those
    /// back), or given to the [`discard_with`](Self::discard_with) hook.
    fn drop(&mut self) {
        if self.finished {
            return;
        }
        if let Some(driver) = self.driver.upgrade() {
            driver.remove_multishot(self.index, !self.cancelled, self.discard.map(Discard));
        }
    }
}
