//! Telling systemd that a long start is progressing.
//!
//! A unit's `TimeoutStartSec=` bounds the time from exec to `READY=1`;
//! recovery of a large log (the README estimates ~100 s for a billion
//! links, more where segments have no hints) can outlast any fixed value.
//! While recovery runs, [`StartExtender`] sends `EXTEND_TIMEOUT_USEC=` at
//! once and then every [`EXTEND_EVERY`], each granting [`EXTEND_BY`] from
//! that moment: a start that is still recovering is never killed, and one
//! that stops sending (the process is gone) times out as before.

use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::Duration;

/// How often the extension is renewed.
pub const EXTEND_EVERY: Duration = Duration::from_secs(10);

/// How much time each renewal grants: several periods, so a late tick of a
/// busy machine does not let the start time out.
pub const EXTEND_BY: Duration = Duration::from_secs(30);

/// Renews systemd's start timeout from a thread of its own until dropped.
pub struct StartExtender {
    stop: Option<mpsc::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl StartExtender {
    /// Starts renewing through `sd_notify` (nothing is sent when the
    /// process was not started by systemd: `NOTIFY_SOCKET` is unset).
    pub fn start() -> Self {
        Self::with(EXTEND_EVERY, EXTEND_BY, |state| {
            let _ = sd_notify::notify(&[state]);
        })
    }

    /// Starts renewing every `every`, granting `by` each time, through
    /// `send`.
    pub fn with(
        every: Duration,
        by: Duration,
        send: impl Fn(sd_notify::NotifyState<'_>) + Send + 'static,
    ) -> Self {
        let usec = u32::try_from(by.as_micros()).unwrap_or(u32::MAX);
        let (stop, stopped) = mpsc::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("shorty-start-extender".into())
            .spawn(move || loop {
                send(sd_notify::NotifyState::ExtendTimeoutUsec(usec));
                // Woken early (disconnected) when the extender is dropped.
                if !matches!(
                    stopped.recv_timeout(every),
                    Err(mpsc::RecvTimeoutError::Timeout)
                ) {
                    return;
                }
            })
            .ok();
        Self {
            stop: Some(stop),
            thread,
        }
    }
}

impl Drop for StartExtender {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    #[test]
    fn renews_at_once_then_periodically_and_stops_when_dropped() {
        let (tx, rx) = mpsc::channel();
        let extender = StartExtender::with(
            Duration::from_millis(20),
            Duration::from_secs(30),
            move |state| {
                let _ = tx.send(state.to_string());
            },
        );
        let first = rx.recv_timeout(Duration::from_secs(5)).unwrap();
        assert_eq!(first, "EXTEND_TIMEOUT_USEC=30000000");
        // More renewals while it lives.
        for _ in 0..3 {
            let next = rx.recv_timeout(Duration::from_secs(5)).unwrap();
            assert_eq!(next, first);
        }
        let dropped = Instant::now();
        drop(extender);
        assert!(
            dropped.elapsed() < Duration::from_secs(5),
            "drop waits a whole period"
        );
        // The thread is gone: the sender it held is dropped, nothing more.
        while let Ok(_late) = rx.try_recv() {}
        assert!(matches!(
            rx.recv_timeout(Duration::from_millis(100)),
            Err(mpsc::RecvTimeoutError::Disconnected)
        ));
    }
}
