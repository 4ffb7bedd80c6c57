//! The cores' side of a remote store (`--store redis://...`): each core
//! hands its shard's remote requests to the store thread over a channel
//! and takes the answers back over its own. The store thread (one per
//! process, with its own runtime) owns the
//! client and its connections; the cores never block on it.
//!
//! Channels: `tokio::sync::mpsc`, which needs no tokio runtime (it only
//! holds wakers), so glommio's and tokio-uring's tasks alike await them.

use std::cell::RefCell;
use std::rc::Rc;

use futures_lite::future;
use shorty_service::output::OpId;
use shorty_service::shard::{OpResult, RemoteRequest};
use tokio::sync::mpsc;

use crate::driver::core::Core;
use crate::driver::{Runtime, Signal};

/// A core's end of the answers channel.
pub type Replies = mpsc::UnboundedReceiver<(OpId, OpResult)>;

/// A request to the store thread.
#[derive(Debug)]
pub struct Envelope {
    /// The core that asks (where the answer goes).
    pub core: usize,
    /// The request.
    pub request: RemoteRequest,
}

/// What a core is given to talk to the store thread (sendable to the
/// core's thread).
#[derive(Debug)]
pub struct RemotePort {
    /// Requests to the store thread.
    pub requests: mpsc::UnboundedSender<Envelope>,
    /// Answers for this core.
    pub replies: Replies,
}

/// A core's handle on the store (on the core's thread).
#[derive(Debug, Clone)]
pub struct RemoteHandle {
    /// Wakes the core's remote task: requests wait in the shard.
    pub signal: Rc<Signal>,
    requests: mpsc::UnboundedSender<Envelope>,
    /// Taken by the core's remote task when it starts.
    replies: Rc<RefCell<Option<Replies>>>,
}

impl RemoteHandle {
    /// Wraps a core's port.
    pub fn new(port: RemotePort) -> Self {
        Self {
            signal: Rc::new(Signal::default()),
            requests: port.requests,
            replies: Rc::new(RefCell::new(Some(port.replies))),
        }
    }
}

/// The core's remote task: forwards requests, delivers answers.
pub async fn run_core_side<R: Runtime>(core: Rc<Core<R>>, remote: RemoteHandle) {
    let Some(mut replies) = remote.replies.borrow_mut().take() else {
        return;
    };
    loop {
        loop {
            let next = core.shard.borrow_mut().poll_remote();
            let Some(request) = next else { break };
            let envelope = Envelope {
                core: core.index,
                request,
            };
            if let Err(mpsc::error::SendError(envelope)) = remote.requests.send(envelope) {
                // The store thread is gone (the process is stopping).
                let op = match envelope.request {
                    RemoteRequest::Get { op, .. } | RemoteRequest::Put { op, .. } => op,
                };
                core.shard.borrow_mut().remote_done(
                    op,
                    OpResult::Failed(
                        shorty_protocol::ErrorCode::OVERLOADED,
                        "the store is not available".into(),
                    ),
                );
            }
        }
        let answer = async {
            let mut batch = Vec::new();
            if replies.recv_many(&mut batch, 256).await == 0 {
                future::pending::<()>().await;
            }
            batch
        };
        let woken = async {
            remote.signal.wait().await;
            Vec::new()
        };
        let batch = future::or(answer, woken).await;
        if !batch.is_empty() {
            let mut shard = core.shard.borrow_mut();
            for (op, result) in batch {
                shard.remote_done(op, result);
            }
            drop(shard);
            core.wake_settled();
        }
    }
}
