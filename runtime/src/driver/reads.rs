//! URL reads from the log on a cache miss, through the backend's
//! asynchronous file I/O: a serving core never blocks on (or page-faults
//! into) the disk.

use std::cell::Cell;
use std::rc::Rc;

use shorty_service::shard::StoreMode;

use crate::driver::state::Core;
use crate::driver::{Runtime, SegmentReader};

/// Reads one core keeps in flight; more wait in the shard's queue.
pub const MAX_READS_IN_FLIGHT: usize = 256;

/// Issues the shard's URL reads until the runtime stops.
pub async fn run<R: Runtime, Rd: SegmentReader>(core: Rc<Core<R>>, reader: Rc<Rd>) {
    let shared = core.shard.borrow().shared().clone();
    let StoreMode::Local(local) = &shared.store else {
        return;
    };
    let segments = local.segments.clone();
    let in_flight = Rc::new(Cell::new(0usize));
    loop {
        while in_flight.get() < MAX_READS_IN_FLIGHT {
            let next = core.shard.borrow_mut().poll_read();
            let Some(read) = next else { break };
            let Some(segment) = segments.get(read.file) else {
                core.shard
                    .borrow_mut()
                    .read_done(read, Err(std::io::Error::other("unknown segment")));
                core.wake_settled();
                continue;
            };
            in_flight.set(in_flight.get() + 1);
            let (task_core, reader, in_flight) = (core.clone(), reader.clone(), in_flight.clone());
            let task = async move {
                let core = task_core;
                let result = reader.read(segment, read.offset, read.len).await;
                core.shard.borrow_mut().read_done(read, result);
                in_flight.set(in_flight.get() - 1);
                core.wake_settled();
                // A longer record may need a second read; an update or a
                // delete that waited for this read has just appended its
                // record, which the log task must be told about (it
                // otherwise sleeps until some request or timer wakes it).
                core.read_signal.notify();
                core.kick();
            };
            core.rt.spawn(task);
        }
        core.read_signal.wait().await;
    }
}
