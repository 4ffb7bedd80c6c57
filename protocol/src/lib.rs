//! The wire format of Shorty, a URL shortener over TCP.
//!
//! Everything travels in **frames**: a `u32` little-endian payload length
//! followed by that many bytes ([`frame`]). This is the framing of the seed
//! server from the talk "Concurrency with Gevent", kept byte-compatible: a
//! client that sends a frame holding a bare URL receives a frame holding the
//! bare short URL. **Typed messages** ([`message`]) ride in the same frames,
//! told apart by their first payload byte, an opcode in `0x00..=0x1F`, which a
//! URL can never start with. `PROTOCOL.md` beside this crate is the byte-level
//! specification, with test vectors.
//!
//! The crate is sans-IO and `no_std` (with `alloc`): it turns bytes into
//! frames and messages and back, and leaves sockets to the caller. Parsing is
//! done with `nom` and never panics on input; a frame's announced length is
//! checked against the limit from its 4-byte header, before any payload is
//! buffered. Partial input is not an error: [`frame::Status::Partial`] says
//! how many more bytes are needed.
//!
//! # Example
//! ```
//! use bytes::BytesMut;
//! use shorty_protocol::{frame::{FrameDecoder, Status}, Reply, Request};
//!
//! // Client: encode a pipelined pair of requests into one buffer.
//! let mut wire = BytesMut::new();
//! Request::Shorten("https://example.com/a/long/path").encode(&mut wire)?;
//! Request::Resolve("867nv").encode(&mut wire)?;
//!
//! // Server: take frames off the buffer and decode them.
//! let decoder = FrameDecoder::new();
//! let mut seen = Vec::new();
//! while let Status::Complete(payload) = decoder.decode(&mut wire)? {
//!     seen.push(Request::decode(payload)?);
//! }
//! assert_eq!(seen.len(), 2);
//! assert!(matches!(&seen[1], Request::Resolve(code) if code == "867nv"));
//! # Ok::<(), shorty_protocol::Error>(())
//! ```
//!
//! # Features
//! - `std` (default): links the standard library (`bytes/std`); needed by
//!   the two features below.
//! - `tokio-codec`: [`codec`] with `tokio_util::codec` implementations.
//! - `arbitrary`: `arbitrary::Arbitrary` for the message types.
#![no_std]
#![forbid(unsafe_code)]
#![deny(missing_docs)]
// Untrusted input must never reach a panicking index, unwrap or expect.
#![cfg_attr(
    not(test),
    deny(
        clippy::indexing_slicing,
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::panic
    )
)]

extern crate alloc;
// `std` is linked only when asked for, so any accidental use of it elsewhere
// fails the `--no-default-features` build (the rustls approach).
#[cfg(feature = "std")]
extern crate std;

#[cfg(feature = "tokio-codec")]
pub mod codec;
mod error;
mod error_code;
pub mod frame;
pub mod message;

pub use error::Error;
pub use error_code::ErrorCode;
pub use message::{Reply, Request, ServerInfo, PROTOCOL_VERSION};
