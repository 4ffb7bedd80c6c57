//! One core's group-commit task: runs the log's operations through the
//! backend and reports them back; sends sealed segments to the hint
//! writer; stops the process if the log fails for good.

use std::future::Future;
use std::rc::Rc;
use std::time::Instant;

use futures_lite::future;
use shorty_service::log::{is_disk_full, IoResult, LogIo};

use crate::driver::state::Core;
use crate::driver::{Runtime, SegmentWriter, Step, WriteFailure};

/// Runs `f` on a thread of its own and waits for it without blocking the
/// core (for the rare blocking file operation, a disk-full repair).
pub fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> T + Send + 'static,
) -> impl Future<Output = Option<T>> {
    let (tx, rx) = tokio::sync::oneshot::channel();
    let spawned = std::thread::Builder::new()
        .name("shorty-blocking".into())
        .spawn(move || {
            let _ = tx.send(f());
        });
    async move {
        spawned.ok()?;
        rx.await.ok()
    }
}

/// Turns a backend's failure into what the log writer needs to know: a
/// full disk while creating or writing is retried; anything else, and any
/// failed sync, is fatal (after a failed `fsync` the kernel may have
/// dropped the dirty pages, so retrying could report success for lost
/// data: PostgreSQL's rule since 2018). Running out of file descriptors
/// is retried at any step, the same way as a full disk (the batch is
/// refused, the segment repaired, a probe retried every second): only a
/// call that makes a descriptor (an `open`, of a segment or of the
/// directory to sync it) fails so, never a write or an `fsync`, so nothing
/// was lost. A multishot accept can take the descriptors the socket budget
/// leaves (the kernel installs a burst's before the accept loop counts
/// them); review 18b saw the process stop on "Sync failed: Too many open
/// files".
pub fn classify(result: Result<(), WriteFailure>) -> IoResult {
    match result {
        Ok(()) => IoResult::Ok,
        Err(WriteFailure { error, .. }) if is_out_of_descriptors(&error) => {
            out_of_descriptors(&error)
        }
        Err(WriteFailure { step, error }) if step != Step::Sync && is_disk_full(&error) => {
            IoResult::DiskFull(error.to_string())
        }
        Err(WriteFailure { step, error }) => IoResult::Fatal(format!("{step:?} failed: {error}")),
    }
}

/// How a retried failure says it ran out of descriptors (not space).
const OUT_OF_DESCRIPTORS: &str = "out of file descriptors";

/// The retried failure for `err`, which ran out of descriptors: told apart
/// from a full disk by its prefix, [`OUT_OF_DESCRIPTORS`].
fn out_of_descriptors(err: &std::io::Error) -> IoResult {
    IoResult::DiskFull(format!("{OUT_OF_DESCRIPTORS}: {err}"))
}

/// `EMFILE` or `ENFILE`: the process (or the system) has no descriptor to
/// give. Also when it is the source of the error a backend reports (glommio
/// wraps the OS error in a description of the operation and path).
fn is_out_of_descriptors(err: &std::io::Error) -> bool {
    let mut next: Option<&(dyn std::error::Error + 'static)> = Some(err);
    while let Some(e) = next {
        if let Some(io) = e.downcast_ref::<std::io::Error>() {
            if matches!(io.raw_os_error(), Some(libc::EMFILE | libc::ENFILE)) {
                return true;
            }
            if let Some(inner) = io.get_ref() {
                next = Some(inner);
                continue;
            }
        }
        next = e.source();
    }
    false
}

/// Runs one core's log until the runtime stops.
pub async fn run<R: Runtime, W: SegmentWriter>(core: Rc<Core<R>>, mut writer: W) {
    let mut disk_full = false;
    loop {
        let now = Instant::now();
        let next = core.shard.borrow_mut().poll_log_io(now);
        let Some(io) = next else {
            let timeout = core.shard.borrow().log_timeout();
            match timeout {
                Some(at) => {
                    let sleep = core.rt.sleep(at.saturating_duration_since(now));
                    future::or(sleep, core.log_signal.wait()).await;
                }
                None => core.log_signal.wait().await,
            }
            continue;
        };
        let started = Instant::now();
        let result = match &io {
            LogIo::Write(batch) => {
                let result = classify(writer.write(batch).await);
                if batch.sync && result == IoResult::Ok {
                    core.shard
                        .borrow()
                        .metrics()
                        .fsync_seconds
                        .observe(started.elapsed().as_secs_f64());
                }
                result
            }
            LogIo::Repair(repair) => {
                writer.forget();
                let repair = repair.clone();
                match blocking(move || crate::datadir::repair(&repair)).await {
                    Some(Ok(())) => IoResult::Ok,
                    Some(Err(err)) if is_out_of_descriptors(&err) => out_of_descriptors(&err),
                    Some(Err(err)) if is_disk_full(&err) => IoResult::DiskFull(err.to_string()),
                    Some(Err(err)) => IoResult::Fatal(format!("repair failed: {err}")),
                    None => IoResult::Fatal("repair thread failed".into()),
                }
            }
        };
        if let IoResult::DiskFull(err) = &result {
            if !disk_full {
                let what = if err.starts_with(OUT_OF_DESCRIPTORS) {
                    "the process is out of file descriptors"
                } else {
                    "the disk is full"
                };
                tracing::warn!(
                    core = core.index,
                    "{what} ({err}): new links are refused; retrying every second"
                );
            }
            disk_full = true;
        } else if disk_full && result == IoResult::Ok && matches!(io, LogIo::Write(_)) {
            disk_full = false;
            tracing::info!(core = core.index, "the log takes new links again");
        }
        let sealed = core
            .shard
            .borrow_mut()
            .log_done(&io, result, Instant::now());
        core.wake_settled();
        core.log_progress.notify();
        if let (Some((segment, _)), Some(hints)) = (sealed, &core.hints) {
            hints.send(segment.number);
        }
        let broken = core.shard.borrow().log_broken().map(str::to_owned);
        if let Some(reason) = broken {
            crate::driver::context::fatal(&format!(
                "core {}: the log cannot be written ({reason}); stopping so that a restart \
                 recovers from what is durable",
                core.index
            ));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io;

    #[test]
    fn only_a_full_disk_before_syncing_is_retried() {
        let full = || io::Error::from(io::ErrorKind::StorageFull);
        assert!(matches!(
            classify(Err(WriteFailure {
                step: Step::Write,
                error: full()
            })),
            IoResult::DiskFull(_)
        ));
        assert!(matches!(
            classify(Err(WriteFailure {
                step: Step::Create,
                error: io::Error::from(io::ErrorKind::QuotaExceeded)
            })),
            IoResult::DiskFull(_)
        ));
        assert!(matches!(
            classify(Err(WriteFailure {
                step: Step::Sync,
                error: full()
            })),
            IoResult::Fatal(_)
        ));
        assert!(matches!(
            classify(Err(WriteFailure {
                step: Step::Write,
                error: io::Error::other("EIO")
            })),
            IoResult::Fatal(_)
        ));
    }

    /// Out of descriptors is retried at every step, sync included: only an
    /// `open` fails so (review 18b: "Sync failed: Too many open files"
    /// stopped the process).
    #[test]
    fn running_out_of_descriptors_is_retried_at_every_step() {
        for step in [Step::Create, Step::Write, Step::Sync] {
            for errno in [libc::EMFILE, libc::ENFILE] {
                assert!(matches!(
                    classify(Err(WriteFailure {
                        step,
                        error: io::Error::from_raw_os_error(errno)
                    })),
                    IoResult::DiskFull(_)
                ));
            }
        }
        assert!(matches!(
            classify(Err(WriteFailure {
                step: Step::Sync,
                error: io::Error::from_raw_os_error(libc::EIO)
            })),
            IoResult::Fatal(_)
        ));
        // Inside a backend's description of the operation (glommio's).
        #[derive(Debug)]
        struct Described(io::Error);
        impl std::fmt::Display for Described {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                write!(f, "opening a segment: {}", self.0)
            }
        }
        impl std::error::Error for Described {
            fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
                Some(&self.0)
            }
        }
        let wrapped = io::Error::other(Described(io::Error::from_raw_os_error(libc::EMFILE)));
        assert!(matches!(
            classify(Err(WriteFailure {
                step: Step::Create,
                error: wrapped
            })),
            IoResult::DiskFull(_)
        ));
    }
}
