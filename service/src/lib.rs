//! The core of Shorty, shared by both servers: everything that is not I/O.
// `unsafe` is denied everywhere but in `prefetch`, a one-line hint with its
// invariants written down there.
#![deny(unsafe_code)]
#![deny(missing_docs)]

pub mod abuse;
pub mod api;
pub mod cache;
pub mod clicks;
pub mod codes;
pub mod connection;
pub mod forward;
#[cfg(test)]
mod forward_reference;
pub mod front;
pub mod health;
pub mod http;
pub mod keydir;
pub mod limits;
pub mod link;
pub mod log;
pub mod metrics;
pub mod ops;
pub mod output;
pub mod owners;
pub mod page;
#[allow(unsafe_code)]
mod prefetch;
pub mod settings;
pub mod shard;
pub mod stats;
pub mod throttle;
pub mod timer;
pub mod url;
