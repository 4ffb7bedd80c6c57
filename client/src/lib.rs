//! Client library for Shorty, the URL shortener over TCP.
//!
//! [`Client`] is blocking (`std::net`) and [`AsyncClient`] runs on tokio
//! (feature `tokio`); both speak the protocol through `shorty-protocol`,
//! reuse one connection across calls, surface server error replies as
//! [`Error::Server`] with their stable code, and take their timeouts from
//! [`Options`]. Portable: Linux, macOS and Windows.
//!
//! The crate also builds the `shorty` command-line tool (feature `cli`, on
//! by default; library users can turn it off with `default-features =
//! false`).
//!
//! ```no_run
//! use shorty_client::{Client, Error, ErrorCode};
//!
//! let mut client = Client::connect("127.0.0.1:9000")?;
//! let short = client.shorten("https://example.com/a/long/path")?;
//! match client.resolve("0000000") {
//!     Err(Error::Server { code: ErrorCode::NOT_FOUND, .. }) => {}
//!     other => panic!("{other:?}"),
//! }
//! // Many at once, pipelined on the one connection:
//! let shorts = client.shorten_all(&["https://a.example/", "https://b.example/"])?;
//! # Ok::<(), Error>(())
//! ```
#![forbid(unsafe_code)]
#![deny(missing_docs)]

#[cfg(feature = "tokio")]
mod async_client;
mod blocking;
mod error;
mod link;
mod options;
mod reply;

#[cfg(feature = "tokio")]
pub use async_client::AsyncClient;
pub use blocking::Client;
pub use error::{Error, Result};
pub use link::{Link, Stats};
pub use options::{code_of, Options};
pub use shorty_protocol::link::{Bucket, Granularity, LinkOptions, LinkPatch, StatsQuery};
pub use shorty_protocol::{ErrorCode, Reply, Request, ServerInfo};
