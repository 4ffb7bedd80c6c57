//! The core's remote-store task (`--store redis://...`): forwards the
//! shard's remote requests to the store thread and delivers its answers,
//! over the channels of [`crate::remote`].

use std::rc::Rc;

use futures_lite::future;
use shorty_service::shard::OpResult;
use tokio::sync::mpsc;

use crate::driver::state::{Core, RemoteHandle};
use crate::driver::Runtime;
use crate::remote::Envelope;

/// The core's remote task: forwards requests, delivers answers.
pub async fn run<R: Runtime>(core: Rc<Core<R>>, remote: RemoteHandle) {
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
                core.shard.borrow_mut().remote_done(
                    envelope.request.op(),
                    OpResult::Failed(
                        shorty_protocol::ErrorCode::OVERLOADED,
                        "the store is not available".into(),
                    )
                    .into(),
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
