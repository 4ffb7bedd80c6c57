//! The runtime-free core both Shorty servers share.
//!
//! Sans-IO in the manner of quinn-proto: this crate takes request bytes and
//! returns reply bytes, log records to append and decisions; the backends
//! (`shorty-uring`, `shorty-glommio`) own sockets, files and timers. Both
//! therefore behave identically by construction.
//!
//! - [`config`]: the command line both binaries share.
//! - [`service`]: the shared state, opened from the data directory.
//! - [`handler`]: one shard's request handling.
//! - [`connection`]: one connection's in-order reply queue.
//! - [`driver`]: the per-core loops (accept, connection, group commit,
//!   drain) both backends run, generic over their I/O.
//! - [`codes`]: short codes (block-allocated ids, keyed permutation, base62).
//! - [`url`]: which URLs are accepted.
//! - [`http`]: the HTTP/1.1 redirect front.
//! - [`index`]: the code → URL index behind the [`index::Store`] seam.
//! - [`log`]: the durable log's record format and group commit.
//! - [`recovery`]: replaying the log at start.
//! - [`server`]: process scaffolding (listeners, signals, one thread per
//!   core) that both binaries' `main` is made of.
#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod codes;
pub mod config;
pub mod connection;
pub mod driver;
pub mod handler;
pub mod http;
pub mod index;
pub mod log;
pub mod recovery;
pub mod server;
pub mod service;
pub mod url;

pub use config::Config;
pub use connection::{ReadTimer, ReplyQueue};
pub use handler::{InputOutcome, Shard};
pub use index::{Index, Store};
pub use service::{ConnectionSlot, ConnectionSlots, Service, StartError};
