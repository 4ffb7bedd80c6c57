use crate::buf::fixed::FixedBuffers;
use crate::runtime::driver::op::{Completable, Lifecycle, MultiCQEFuture, Op, Updateable};
use io_uring::opcode::AsyncCancel;
use io_uring::{cqueue, squeue, IoUring};
use slab::Slab;
use std::cell::RefCell;
use std::os::unix::io::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::rc::Rc;
use std::task::{Context, Poll};
use std::{io, mem};

pub(crate) use handle::*;

mod handle;
pub(crate) mod op;

pub(crate) struct Driver {
    /// In-flight operations
    ops: Ops,

    /// IoUring bindings
    uring: IoUring,

    /// Reference to the currently registered buffers.
    /// Ensures that the buffers are not dropped until
    /// after the io-uring runtime has terminated.
    fixed_buffers: Option<Rc<RefCell<dyn FixedBuffers>>>,

    /// On a `DEFER_TASKRUN` ring (`Builder::defer_taskrun`), the eventfd
    /// registered with the ring: what the runtime waits for instead of the
    /// ring's fd, which does not become readable for deferred work.
    deferred: Option<OwnedFd>,
}

/// Rounds of `GETEVENTS` enters one wake-up makes at most while the kernel
/// says deferred work is left (it runs a bounded batch per enter). Past it
/// the driver signals its own eventfd and comes back after other tasks ran,
/// so a flag that stayed set could never pin the thread in a loop.
const DEFERRED_ROUNDS: usize = 8;

/// `io_uring_enter`'s `IORING_ENTER_GETEVENTS` (the io-uring crate keeps
/// its constants private).
const IORING_ENTER_GETEVENTS: u32 = 1;

struct Ops {
    // When dropping the driver, all in-flight operations must have completed. This
    // type wraps the slab and ensures that, on drop, the slab is empty.
    lifecycle: Slab<op::Lifecycle>,

    /// Received but unserviced Op completions
    completions: Slab<op::Completion>,
}

impl Driver {
    pub(crate) fn new(b: &crate::Builder) -> io::Result<Driver> {
        let uring = b.urb.build(b.entries)?;
        let deferred = if b.defer_taskrun {
            // SAFETY: `eventfd` takes no pointers; a non-negative result is a
            // new fd that nothing else owns.
            let fd = unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) };
            if fd < 0 {
                return Err(io::Error::last_os_error());
            }
            // SAFETY: `fd` was just created and is owned here only.
            let fd = unsafe { OwnedFd::from_raw_fd(fd) };
            // Not `register_eventfd_async`: that one is signalled only for
            // completions from io-wq workers, and a socket's deferred work is
            // queued from the network stack.
            uring.submitter().register_eventfd(fd.as_raw_fd())?;
            Some(fd)
        } else {
            None
        };

        Ok(Driver {
            ops: Ops::new(),
            uring,
            fixed_buffers: None,
            deferred,
        })
    }

    /// The fd the runtime's reactor waits on for completions: the ring's
    /// own, or on a `DEFER_TASKRUN` ring its eventfd.
    pub(crate) fn wake_fd(&self) -> RawFd {
        match &self.deferred {
            Some(fd) => fd.as_raw_fd(),
            None => self.uring.as_raw_fd(),
        }
    }

    /// On a `DEFER_TASKRUN` ring, runs the kernel's deferred work (which
    /// posts the completions) before the completions are read: while the
    /// kernel's `IORING_SQ_TASKRUN` flag (`TASKRUN_FLAG`) says work is
    /// queued, enter with `GETEVENTS` and no minimum (the kernel runs a
    /// bounded batch per enter, and sets the flag again if it left some;
    /// bounded here too, see [`DEFERRED_ROUNDS`]).
    ///
    /// The eventfd is never read. tokio's reactor (mio) registers it
    /// edge-triggered, and every signal the kernel sends it is a new edge:
    /// work queued after the flag was read signals again and wakes the
    /// driver again, so nothing is lost, and a wake-up costs no `read`. The
    /// completions an enter posts signal the eventfd too; on that wake-up
    /// the flag is clear, and the driver only reads the completion queue,
    /// without entering the kernel.
    fn run_deferred(&mut self, fd: RawFd) {
        for _ in 0..DEFERRED_ROUNDS {
            if !self.uring.submission().taskrun() {
                self.reap_completions();
                return;
            }
            let to_submit = self.uring.submission().len() as u32;
            // SAFETY: no argument pointer is passed; the submission queue's
            // entries were all written (pushed) before `to_submit` was read.
            let entered = unsafe {
                self.uring.submitter().enter::<libc::sigset_t>(
                    to_submit,
                    0,
                    IORING_ENTER_GETEVENTS,
                    None,
                )
            };
            self.reap_completions();
            if let Err(e) = entered {
                if e.raw_os_error() != Some(libc::EINTR) && e.raw_os_error() != Some(libc::EBUSY)
                {
                    break;
                }
            }
        }
        // Work is (or may be) left after the rounds: come back to it after
        // other tasks ran, through the reactor, rather than loop here.
        let one = 1u64;
        // SAFETY: `one` is 8 readable bytes, what an eventfd write needs.
        let _ = unsafe { libc::write(fd, (&one as *const u64).cast(), 8) };
    }

    /// Submits what the tasks queued, when the thread is about to park.
    ///
    /// On a `DEFER_TASKRUN` ring the same enter also runs the deferred work
    /// queued so far (`GETEVENTS`, no minimum) when the kernel's flag says
    /// there is some: its completions are posted now, which signals the
    /// eventfd, so the park returns at once and the driver reads them
    /// without an enter of its own; the round trip would otherwise cost a
    /// second enter. Nothing to submit and no work queued: no enter at all
    /// (on such a ring a bare enter does nothing).
    pub(crate) fn flush(&mut self) -> io::Result<usize> {
        if self.deferred.is_none() {
            // Nothing to submit: no enter. Completion work the kernel has
            // queued for this thread interrupts the `epoll_wait` the park
            // makes next (it returns at once, and the work runs on the way
            // back), so an empty enter only ran it one system call sooner;
            // a ring set up with `TASKRUN_FLAG` says so, and is entered.
            // Measured (shorty, issue 23, `Connection: close` requests):
            // 0.45 empty enters per request as shipped, 0.34 once the park
            // hooks read completions, none with this.
            let sq = self.uring.submission();
            if sq.is_empty() && !sq.taskrun() && !sq.cq_overflow() {
                return Ok(0);
            }
            drop(sq);
            return self.uring.submit();
        }
        let sq = self.uring.submission();
        let to_submit = sq.len() as u32;
        let flags = if sq.taskrun() || sq.cq_overflow() {
            IORING_ENTER_GETEVENTS
        } else {
            0
        };
        drop(sq);
        if to_submit == 0 && flags == 0 {
            return Ok(0);
        }
        // SAFETY: no argument pointer is passed; the submission queue's
        // entries were all written (pushed) before `to_submit` was read.
        unsafe {
            self.uring
                .submitter()
                .enter::<libc::sigset_t>(to_submit, 0, flags, None)
        }
    }

    fn wait(&self) -> io::Result<usize> {
        self.uring.submit_and_wait(1)
    }

    // only used in tests rn
    #[allow(unused)]
    pub(super) fn num_operations(&self) -> usize {
        self.ops.lifecycle.len()
    }

    pub(crate) fn submit(&mut self) -> io::Result<()> {
        loop {
            match self.uring.submit() {
                Ok(_) => {
                    self.uring.submission().sync();
                    return Ok(());
                }
                Err(ref e) if e.raw_os_error() == Some(libc::EBUSY) => {
                    self.dispatch_completions();
                }
                Err(e) if e.raw_os_error() != Some(libc::EINTR) => {
                    return Err(e);
                }
                _ => continue,
            }
        }
    }

    pub(crate) fn dispatch_completions(&mut self) {
        match self.deferred.as_ref().map(|fd| fd.as_raw_fd()) {
            Some(fd) => self.run_deferred(fd),
            None => self.reap_completions(),
        }
    }

    /// Hands each completion in the completion queue to its operation.
    pub(crate) fn reap_completions(&mut self) {
        let mut cq = self.uring.completion();
        cq.sync();

        for cqe in cq {
            if cqe.user_data() == u64::MAX {
                // Result of the cancellation action. There isn't anything we
                // need to do here. We must wait for the CQE for the operation
                // that was canceled.
                continue;
            }

            let index = cqe.user_data() as _;

            self.ops.complete(index, cqe);
        }
    }

    pub(crate) fn register_buffers(
        &mut self,
        buffers: Rc<RefCell<dyn FixedBuffers>>,
    ) -> io::Result<()> {
        unsafe {
            self.uring
                .submitter()
                .register_buffers(buffers.borrow().iovecs())
        }?;

        self.fixed_buffers = Some(buffers);
        Ok(())
    }

    pub(crate) fn unregister_buffers(
        &mut self,
        buffers: Rc<RefCell<dyn FixedBuffers>>,
    ) -> io::Result<()> {
        if let Some(currently_registered) = &self.fixed_buffers {
            if Rc::ptr_eq(&buffers, currently_registered) {
                self.uring.submitter().unregister_buffers()?;
                self.fixed_buffers = None;
                return Ok(());
            }
        }
        Err(io::Error::new(
            io::ErrorKind::Other,
            "fixed buffers are not currently registered",
        ))
    }

    /// Registers a ring of provided buffers (`IORING_REGISTER_PBUF_RING`).
    ///
    /// # Safety
    ///
    /// See [`crate::register_buf_ring`].
    pub(crate) unsafe fn register_buf_ring(
        &mut self,
        ring_addr: u64,
        ring_entries: u16,
        bgid: u16,
    ) -> io::Result<()> {
        self.uring
            .submitter()
            .register_buf_ring(ring_addr, ring_entries, bgid)
    }

    pub(crate) fn unregister_buf_ring(&mut self, bgid: u16) -> io::Result<()> {
        self.uring.submitter().unregister_buf_ring(bgid)
    }

    pub(crate) fn submit_op_2(&mut self, sqe: squeue::Entry) -> usize {
        let index = self.ops.insert();

        // Configure the SQE
        let sqe = sqe.user_data(index as _);

        // Push the new operation
        while unsafe { self.uring.submission().push(&sqe).is_err() } {
            // If the submission queue is full, flush it to the kernel
            self.submit().expect("Internal error, failed to submit ops");
        }

        index
    }

    pub(crate) fn submit_op<T, S, F>(
        &mut self,
        mut data: T,
        f: F,
        handle: WeakHandle,
    ) -> io::Result<Op<T, S>>
    where
        T: Completable,
        F: FnOnce(&mut T) -> squeue::Entry,
    {
        let index = self.ops.insert();

        // Configure the SQE
        let sqe = f(&mut data).user_data(index as _);

        // Create the operation
        let op = Op::new(handle, data, index);

        // Push the new operation
        while unsafe { self.uring.submission().push(&sqe).is_err() } {
            // If the submission queue is full, flush it to the kernel
            self.submit()?;
        }

        Ok(op)
    }

    pub(crate) fn remove_op<T, CqeType>(&mut self, op: &mut Op<T, CqeType>) {
        // Get the Op Lifecycle state from the driver
        let (lifecycle, completions) = match self.ops.get_mut(op.index()) {
            Some(val) => val,
            None => {
                // Op dropped after the driver
                return;
            }
        };

        match mem::replace(lifecycle, Lifecycle::Submitted) {
            Lifecycle::Submitted | Lifecycle::Waiting(_) => {
                *lifecycle = Lifecycle::Ignored(Box::new(op.take_data()));
            }
            Lifecycle::Completed(..) => {
                self.ops.remove(op.index());
            }
            Lifecycle::CompletionList(indices) => {
                // Deallocate list entries, recording if more CQE's are expected
                let more = {
                    let mut list = indices.into_list(completions);
                    cqueue::more(list.peek_end().unwrap().flags)
                    // Dropping list deallocates the list entries
                };
                if more {
                    // If more are expected, we have to keep the op around
                    *lifecycle = Lifecycle::Ignored(Box::new(op.take_data()));
                } else {
                    self.ops.remove(op.index());
                }
            }
            Lifecycle::Ignored(..) => unreachable!(),
        }
    }

    pub(crate) fn remove_op_2<T: 'static>(&mut self, index: usize, data: T) {
        // Get the Op Lifecycle state from the driver
        let (lifecycle, completions) = match self.ops.get_mut(index) {
            Some(val) => val,
            None => {
                // Op dropped after the driver
                return;
            }
        };

        match mem::replace(lifecycle, Lifecycle::Submitted) {
            Lifecycle::Submitted | Lifecycle::Waiting(_) => {
                *lifecycle = Lifecycle::Ignored(Box::new(data));
            }
            Lifecycle::Completed(..) => {
                self.ops.remove(index);
            }
            Lifecycle::CompletionList(indices) => {
                // Deallocate list entries, recording if more CQE's are expected
                let more = {
                    let mut list = indices.into_list(completions);
                    cqueue::more(list.peek_end().unwrap().flags)
                    // Dropping list deallocates the list entries
                };
                if more {
                    // If more are expected, we have to keep the op around
                    *lifecycle = Lifecycle::Ignored(Box::new(data));
                } else {
                    self.ops.remove(index);
                }
            }
            Lifecycle::Ignored(..) => unreachable!(),
        }
    }

    /// The next completion of multishot operation `index` (patch 3,
    /// `op::Multishot`), in the order they were posted. The final one (no
    /// `F_MORE`) removes the operation's entry; until then it stays, with
    /// the waker to wake when a completion arrives on an empty list.
    pub(crate) fn poll_multishot_next(
        &mut self,
        index: usize,
        cx: &mut Context<'_>,
    ) -> Poll<op::CqeResult> {
        let (lifecycle, completions) = self.ops.get_mut(index).expect("invalid internal state");

        let (cqe, remove) = match mem::replace(lifecycle, Lifecycle::Submitted) {
            Lifecycle::Submitted => {
                *lifecycle = Lifecycle::Waiting(cx.waker().clone());
                return Poll::Pending;
            }
            Lifecycle::Waiting(waker) => {
                *lifecycle = if waker.will_wake(cx.waker()) {
                    Lifecycle::Waiting(waker)
                } else {
                    Lifecycle::Waiting(cx.waker().clone())
                };
                return Poll::Pending;
            }
            Lifecycle::Ignored(..) => unreachable!("a multishot polled after its drop"),
            // The first completion was the final one.
            Lifecycle::Completed(cqe) => (op::CqeResult::from(cqe), true),
            Lifecycle::CompletionList(indices) => {
                let mut list = indices.into_list(completions);
                let cqe = list.pop().expect("a completion list is never empty");
                if !cqueue::more(cqe.flags) {
                    // Nothing follows the final completion; dropping the
                    // list frees whatever would.
                    (cqe, true)
                } else if list.is_empty() {
                    // `Lifecycle::complete` wakes only from `Waiting`: the
                    // next completion must find the waker there.
                    drop(list);
                    *lifecycle = Lifecycle::Waiting(cx.waker().clone());
                    (cqe, false)
                } else {
                    *lifecycle = Lifecycle::CompletionList(list.into_indices());
                    (cqe, false)
                }
            }
        };
        if remove {
            self.ops.remove(index);
        }
        Poll::Ready(cqe)
    }

    /// Submits an `IORING_OP_ASYNC_CANCEL` for operation `index` (its
    /// completion carries `user_data` `u64::MAX` and is skipped, as the
    /// driver's own cancels at drop are). The caller guarantees `index` is
    /// live (`op::multishot`, invariant 2).
    pub(crate) fn cancel_op(&mut self, index: usize) {
        let sqe = AsyncCancel::new(index as u64).build().user_data(u64::MAX);
        // SAFETY: a cancel references no memory.
        while unsafe { self.uring.submission().push(&sqe).is_err() } {
            self.submit().expect("Internal error, failed to submit ops");
        }
    }

    /// A multishot operation's handle was dropped before its final
    /// completion was handed out: forget the completions waiting (each
    /// given to `discard` first, if there is one: vendored patch 5), cancel
    /// it when still armed (unless `cancel` is false: a cancel is already
    /// on its way) and keep the entry (`Ignored`, holding `discard` for the
    /// completions still to come) until the final completion.
    pub(crate) fn remove_multishot(
        &mut self,
        index: usize,
        cancel: bool,
        discard: Option<op::Discard>,
    ) {
        let (lifecycle, completions) = match self.ops.get_mut(index) {
            Some(val) => val,
            // Dropped after the driver.
            None => return,
        };
        let armed = match mem::replace(lifecycle, Lifecycle::Submitted) {
            Lifecycle::Submitted | Lifecycle::Waiting(_) => true,
            Lifecycle::Completed(cqe) => {
                if let Some(discard) = &discard {
                    let op::CqeResult { result, flags } = cqe.into();
                    discard.discard(result, flags);
                }
                false
            }
            Lifecycle::CompletionList(indices) => {
                let mut list = indices.into_list(completions);
                let armed =
                    cqueue::more(list.peek_end().expect("a completion list is never empty").flags);
                // Popping frees each entry.
                for op::CqeResult { result, flags } in list.by_ref() {
                    if let Some(discard) = &discard {
                        discard.discard(result, flags);
                    }
                }
                armed
            }
            Lifecycle::Ignored(..) => unreachable!("a multishot dropped twice"),
        };
        if armed {
            *lifecycle = match discard {
                Some(discard) => Lifecycle::Ignored(Box::new(discard)),
                None => Lifecycle::Ignored(Box::new(())),
            };
            if cancel {
                self.cancel_op(index);
            }
        } else {
            self.ops.remove(index);
        }
    }

    pub(crate) fn poll_op_2(&mut self, index: usize, cx: &mut Context<'_>) -> Poll<cqueue::Entry> {
        let (lifecycle, _) = self.ops.get_mut(index).expect("invalid internal state");

        match mem::replace(lifecycle, Lifecycle::Submitted) {
            Lifecycle::Submitted => {
                *lifecycle = Lifecycle::Waiting(cx.waker().clone());
                Poll::Pending
            }
            Lifecycle::Waiting(waker) if !waker.will_wake(cx.waker()) => {
                *lifecycle = Lifecycle::Waiting(cx.waker().clone());
                Poll::Pending
            }
            Lifecycle::Waiting(waker) => {
                *lifecycle = Lifecycle::Waiting(waker);
                Poll::Pending
            }
            Lifecycle::Ignored(..) => unreachable!(),
            Lifecycle::Completed(cqe) => {
                self.ops.remove(index);
                Poll::Ready(cqe)
            }
            Lifecycle::CompletionList(..) => {
                unreachable!("No `more` flag set for SingleCQE")
            }
        }
    }

    pub(crate) fn poll_op<T>(&mut self, op: &mut Op<T>, cx: &mut Context<'_>) -> Poll<T::Output>
    where
        T: Unpin + 'static + Completable,
    {
        let (lifecycle, _) = self
            .ops
            .get_mut(op.index())
            .expect("invalid internal state");

        match mem::replace(lifecycle, Lifecycle::Submitted) {
            Lifecycle::Submitted => {
                *lifecycle = Lifecycle::Waiting(cx.waker().clone());
                Poll::Pending
            }
            Lifecycle::Waiting(waker) if !waker.will_wake(cx.waker()) => {
                *lifecycle = Lifecycle::Waiting(cx.waker().clone());
                Poll::Pending
            }
            Lifecycle::Waiting(waker) => {
                *lifecycle = Lifecycle::Waiting(waker);
                Poll::Pending
            }
            Lifecycle::Ignored(..) => unreachable!(),
            Lifecycle::Completed(cqe) => {
                self.ops.remove(op.index());
                Poll::Ready(op.take_data().unwrap().complete(cqe.into()))
            }
            Lifecycle::CompletionList(..) => {
                unreachable!("No `more` flag set for SingleCQE")
            }
        }
    }

    pub(crate) fn poll_multishot_op<T>(
        &mut self,
        op: &mut Op<T, MultiCQEFuture>,
        cx: &mut Context<'_>,
    ) -> Poll<T::Output>
    where
        T: Unpin + 'static + Completable + Updateable,
    {
        let (lifecycle, completions) = self
            .ops
            .get_mut(op.index())
            .expect("invalid internal state");

        match mem::replace(lifecycle, Lifecycle::Submitted) {
            Lifecycle::Submitted => {
                *lifecycle = Lifecycle::Waiting(cx.waker().clone());
                Poll::Pending
            }
            Lifecycle::Waiting(waker) if !waker.will_wake(cx.waker()) => {
                *lifecycle = Lifecycle::Waiting(cx.waker().clone());
                Poll::Pending
            }
            Lifecycle::Waiting(waker) => {
                *lifecycle = Lifecycle::Waiting(waker);
                Poll::Pending
            }
            Lifecycle::Ignored(..) => unreachable!(),
            Lifecycle::Completed(cqe) => {
                // This is possible. We may have previously polled a CompletionList,
                // and the final CQE registered as Completed
                self.ops.remove(op.index());
                Poll::Ready(op.take_data().unwrap().complete(cqe.into()))
            }
            Lifecycle::CompletionList(indices) => {
                let mut data = op.take_data().unwrap();
                let mut status = Poll::Pending;
                // Consume the CqeResult list, calling update on the Op on all Cqe's flagged `more`
                // If the final Cqe is present, clean up and return Poll::Ready
                for cqe in indices.into_list(completions) {
                    if cqueue::more(cqe.flags) {
                        data.update(cqe);
                    } else {
                        status = Poll::Ready(cqe);
                        break;
                    }
                }
                match status {
                    Poll::Pending => {
                        // We need more CQE's. Restore the op state
                        op.insert_data(data);
                        *lifecycle = Lifecycle::Waiting(cx.waker().clone());
                        Poll::Pending
                    }
                    Poll::Ready(cqe) => {
                        self.ops.remove(op.index());
                        Poll::Ready(data.complete(cqe))
                    }
                }
            }
        }
    }
}

impl AsRawFd for Driver {
    fn as_raw_fd(&self) -> RawFd {
        self.uring.as_raw_fd()
    }
}

/// Drop the driver, cancelling any in-progress ops and waiting for them to terminate.
///
/// This first cancels all ops and then waits for them to be moved to the completed lifecycle phase.
///
/// It is possible for this to be run without previously dropping the runtime, but this should only
/// be possible in the case of [`std::process::exit`].
///
/// This depends on us knowing when ops are completed and done firing.
/// When multishot ops are added (support exists but none are implemented), a way to know if such
/// an op is finished MUST be added, otherwise our shutdown process is unsound.
impl Drop for Driver {
    fn drop(&mut self) {
        // get all ops in flight for cancellation
        while !self.uring.submission().is_empty() {
            self.submit().expect("Internal error when dropping driver");
        }

        // Pre-determine what to cancel
        // After this pass, all LifeCycles will be marked either as Completed or Ignored, as appropriate
        for (_, cycle) in self.ops.lifecycle.iter_mut() {
            match std::mem::replace(cycle, Lifecycle::Ignored(Box::new(()))) {
                lc @ Lifecycle::Completed(_) => {
                    // don't cancel completed items
                    *cycle = lc;
                }

                Lifecycle::CompletionList(indices) => {
                    let mut list = indices.clone().into_list(&mut self.ops.completions);
                    if !io_uring::cqueue::more(list.peek_end().unwrap().flags) {
                        // This op is complete. Replace with a null Completed entry
                        // safety: zeroed memory is entirely valid with this underlying
                        // representation
                        *cycle = Lifecycle::Completed(unsafe { mem::zeroed() });
                    }
                }

                _ => {
                    // All other states need cancelling.
                    // The mem::replace means these are now marked Ignored.
                }
            }
        }

        // Submit cancellation for all ops marked Ignored
        for (id, cycle) in self.ops.lifecycle.iter_mut() {
            if let Lifecycle::Ignored(..) = cycle {
                unsafe {
                    while self
                        .uring
                        .submission()
                        .push(&AsyncCancel::new(id as u64).build().user_data(u64::MAX))
                        .is_err()
                    {
                        self.uring
                            .submit_and_wait(1)
                            .expect("Internal error when dropping driver");
                    }
                }
            }
        }

        // Wait until all Lifetimes have been removed from the slab.
        //
        // Ignored entries will be removed from the Lifecycle slab
        // by the complete logic called by `tick()`
        //
        // Completed Entries are removed here directly
        let mut id = 0;
        loop {
            if self.ops.lifecycle.is_empty() {
                break;
            }
            // Cycles are either all ignored or complete
            // If there is at least one Ignored still to process, call wait
            match self.ops.lifecycle.get(id) {
                Some(Lifecycle::Ignored(..)) => {
                    // If waiting fails, ignore the error. The wait will be attempted
                    // again on the next loop.
                    let _ = self.wait();
                    self.dispatch_completions();
                }

                Some(_) => {
                    // Remove Completed entries
                    let _ = self.ops.lifecycle.remove(id);
                    id += 1;
                }

                None => {
                    id += 1;
                }
            }
        }
    }
}

impl Ops {
    fn new() -> Ops {
        Ops {
            lifecycle: Slab::with_capacity(64),
            completions: Slab::with_capacity(64),
        }
    }

    fn get_mut(&mut self, index: usize) -> Option<(&mut op::Lifecycle, &mut Slab<op::Completion>)> {
        let completions = &mut self.completions;
        self.lifecycle
            .get_mut(index)
            .map(|lifecycle| (lifecycle, completions))
    }

    // Insert a new operation
    fn insert(&mut self) -> usize {
        self.lifecycle.insert(op::Lifecycle::Submitted)
    }

    // Remove an operation
    fn remove(&mut self, index: usize) {
        self.lifecycle.remove(index);
    }

    fn complete(&mut self, index: usize, cqe: cqueue::Entry) {
        let completions = &mut self.completions;
        if self.lifecycle[index].complete(completions, cqe) {
            self.lifecycle.remove(index);
        }
    }
}

impl Drop for Ops {
    fn drop(&mut self) {
        assert!(self
            .lifecycle
            .iter()
            .all(|(_, cycle)| matches!(cycle, Lifecycle::Completed(_))))
    }
}

#[cfg(test)]
mod test {
    use std::rc::Rc;

    use crate::runtime::driver::op::{Completable, CqeResult, Op};
    use crate::runtime::CONTEXT;
    use tokio_test::{assert_pending, assert_ready, task};

    use super::*;

    #[derive(Debug)]
    pub(crate) struct Completion {
        result: io::Result<u32>,
        flags: u32,
        data: Rc<()>,
    }

    impl Completable for Rc<()> {
        type Output = Completion;

        fn complete(self, cqe: CqeResult) -> Self::Output {
            Completion {
                result: cqe.result,
                flags: cqe.flags,
                data: self.clone(),
            }
        }
    }

    #[test]
    fn op_stays_in_slab_on_drop() {
        let (op, data) = init();
        drop(op);

        assert_eq!(2, Rc::strong_count(&data));

        assert_eq!(1, num_operations());
        release();
    }

    #[test]
    fn poll_op_once() {
        let (op, data) = init();
        let mut op = task::spawn(op);
        assert_pending!(op.poll());
        assert_eq!(2, Rc::strong_count(&data));

        complete(&op);
        assert_eq!(1, num_operations());
        assert_eq!(2, Rc::strong_count(&data));

        assert!(op.is_woken());
        let Completion {
            result,
            flags,
            data: d,
        } = assert_ready!(op.poll());
        assert_eq!(2, Rc::strong_count(&data));
        assert_eq!(0, result.unwrap());
        assert_eq!(0, flags);

        drop(d);
        assert_eq!(1, Rc::strong_count(&data));

        drop(op);
        assert_eq!(0, num_operations());

        release();
    }

    #[test]
    fn poll_op_twice() {
        {
            let (op, ..) = init();
            let mut op = task::spawn(op);
            assert_pending!(op.poll());
            assert_pending!(op.poll());

            complete(&op);

            assert!(op.is_woken());
            let Completion { result, flags, .. } = assert_ready!(op.poll());
            assert_eq!(0, result.unwrap());
            assert_eq!(0, flags);
        }

        release();
    }

    #[test]
    fn poll_change_task() {
        {
            let (op, ..) = init();
            let mut op = task::spawn(op);
            assert_pending!(op.poll());

            let op = op.into_inner();
            let mut op = task::spawn(op);
            assert_pending!(op.poll());

            complete(&op);

            assert!(op.is_woken());
            let Completion { result, flags, .. } = assert_ready!(op.poll());
            assert_eq!(0, result.unwrap());
            assert_eq!(0, flags);
        }

        release();
    }

    #[test]
    fn complete_before_poll() {
        let (op, data) = init();
        let mut op = task::spawn(op);
        complete(&op);
        assert_eq!(1, num_operations());
        assert_eq!(2, Rc::strong_count(&data));

        let Completion { result, flags, .. } = assert_ready!(op.poll());
        assert_eq!(0, result.unwrap());
        assert_eq!(0, flags);

        drop(op);
        assert_eq!(0, num_operations());

        release();
    }

    #[test]
    fn complete_after_drop() {
        let (op, data) = init();
        let index = op.index();
        drop(op);

        assert_eq!(2, Rc::strong_count(&data));

        assert_eq!(1, num_operations());

        CONTEXT.with(|cx| {
            cx.handle()
                .unwrap()
                .inner
                .borrow_mut()
                .ops
                .complete(index, unsafe { mem::zeroed() })
        });

        assert_eq!(1, Rc::strong_count(&data));
        assert_eq!(0, num_operations());

        release();
    }

    fn init() -> (Op<Rc<()>>, Rc<()>) {
        let driver = Driver::new(&crate::builder()).unwrap();
        let data = Rc::new(());

        let op = CONTEXT.with(|cx| {
            cx.set_handle(driver.into());

            let driver = cx.handle().unwrap();

            let index = driver.inner.borrow_mut().ops.insert();

            Op::new((&driver).into(), data.clone(), index)
        });

        (op, data)
    }

    fn num_operations() -> usize {
        CONTEXT.with(|cx| cx.handle().unwrap().inner.borrow().num_operations())
    }

    fn complete(op: &Op<Rc<()>>) {
        let cqe = unsafe { mem::zeroed() };

        CONTEXT.with(|cx| {
            let driver = cx.handle().unwrap();

            driver.inner.borrow_mut().ops.complete(op.index(), cqe);
        });
    }

    fn release() {
        CONTEXT.with(|cx| {
            let driver = cx.handle().unwrap();

            driver.inner.borrow_mut().ops.lifecycle.clear();
            driver.inner.borrow_mut().ops.completions.clear();

            cx.unset_driver();
        });
    }
}
