//! The channels between the cores and a remote store's thread
//! (`--store redis://...`): each core hands its shard's remote requests to
//! the store thread over one channel and takes the answers back over its
//! own. The store thread (one per process, with its own runtime) owns the
//! client and its connections; the cores never block on it. The core's
//! task at its end of these channels is [`crate::driver::store`].
//!
//! Channels: `tokio::sync::mpsc`, which needs no tokio runtime (it only
//! holds wakers), so glommio's and tokio-uring's tasks alike await them.
//! This module imports nothing of this crate: both the driver and the
//! store thread ([`crate::redis_store`]) sit above it.

use shorty_service::output::OpId;
use shorty_service::shard::{RemoteReply, RemoteRequest};
use tokio::sync::mpsc;

/// A core's end of the answers channel.
pub type Replies = mpsc::UnboundedReceiver<(OpId, RemoteReply)>;

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
