//! The wire format of Shorty, a URL shortener over TCP.
//!
//! Everything travels in **frames**: a `u32` little-endian payload length
//! followed by that many bytes ([`frame`]). This is the framing of the seed
//! server from the talk "Concurrency with Gevent", kept byte-compatible: a
//! client that sends a frame holding a bare URL receives a frame holding the
//! bare short URL. It is exactly tokio-util's `LengthDelimitedCodec` built
//! with `.little_endian().length_field_length(4)` (and no length
//! adjustment), so users of that codec can exchange payloads with
//! [`Request::encode_payload`] / [`Reply::parse_payload`] and keep their
//! framing. **Typed messages** ([`message`]) ride in the same frames, told
//! apart by their first payload byte, an opcode in `0x00..=0x1F`, which a
//! URL can never start with. The byte-level specification, with test
//! vectors, is in the [`spec`] module (`PROTOCOL.md`).
//!
//! The crate is sans-IO and `no_std` (with `alloc`): it turns bytes into
//! frames and messages and back, and leaves sockets to the caller. Parsing is
//! done with `nom` and never panics on input; a frame's announced length is
//! checked against the limit from its 4-byte header, before any payload is
//! buffered. Partial input is not an error: [`frame::Status::Partial`] says
//! how many more bytes are needed.
//!
//! Frames and payloads are two levels that method names keep apart:
//! `encode_frame` writes a whole frame, `parse_payload` / `decode_payload`
//! read the payload a frame decoder handed out (see [`message`]).
//!
//! # Example
//! ```
//! use shorty_protocol::bytes::BytesMut;
//! use shorty_protocol::{frame::{FrameDecoder, Status}, Reply, Request};
//!
//! // Client: encode a pipelined pair of requests into one buffer.
//! let mut wire = BytesMut::new();
//! Request::Shorten("https://example.com/a/long/path").encode_frame(&mut wire)?;
//! Request::Resolve("867nv").encode_frame(&mut wire)?;
//!
//! // Server: take frames off the buffer and decode their payloads.
//! let decoder = FrameDecoder::new();
//! let mut seen = Vec::new();
//! while let Status::Complete(payload) = decoder.decode(&mut wire)? {
//!     seen.push(Request::decode_payload(payload)?);
//! }
//! assert_eq!(seen.len(), 2);
//! assert!(matches!(&seen[1], Request::Resolve(code) if code == "867nv"));
//! # Ok::<(), shorty_protocol::Error>(())
//! ```
//!
//! # Versions
//! HELLO negotiates the protocol version. [`PROTOCOL_V1`] is the version a
//! client that handles version 1 asks for, [`PROTOCOL_V2`] the one that
//! adds links with options, AUTH and STATS ([`link`], over the TLV lists of
//! [`tlv`]); [`MAX_PROTOCOL_VERSION`] is the highest this crate speaks and
//! grows in minor releases, with new `#[non_exhaustive]` variants. A
//! connection's messages are parsed for its negotiated version
//! ([`Request::parse_payload_for`]); `parse_payload` is version 1, byte for
//! byte. A reply this crate does not know is a value, [`Reply::Unknown`],
//! not an error.
//!
//! # Features
//! - `std` (default): links the standard library (`bytes/std`); needed by
//!   the two features below.
// The `codec` module exists only with its feature: link it only then, so
// that the docs of a default build have no broken link.
#![cfg_attr(
    feature = "tokio-codec",
    doc = " - `tokio-codec`: [`codec`] with `tokio_util::codec` implementations."
)]
#![cfg_attr(
    not(feature = "tokio-codec"),
    doc = " - `tokio-codec`: the `codec` module with `tokio_util::codec` implementations."
)]
//! - `arbitrary`: `arbitrary::Arbitrary` for the message types.
#![no_std]
#![cfg_attr(docsrs, feature(doc_cfg))]
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

/// The `bytes` crate this one is built on: its [`Bytes`](bytes::Bytes),
/// [`BytesMut`](bytes::BytesMut) and [`BufMut`](bytes::BufMut) are in this
/// API, so use them from here to be sure the versions match.
pub use bytes;

#[cfg(feature = "tokio-codec")]
#[cfg_attr(docsrs, doc(cfg(feature = "tokio-codec")))]
pub mod codec;
mod error;
mod error_code;
pub mod frame;
pub mod link;
pub mod message;
pub mod tlv;

#[doc = include_str!("../PROTOCOL.md")]
pub mod spec {}

pub use error::TlvProblem;
pub use error::{Error, ReplyError};
pub use error_code::ErrorCode;
pub use link::{Granularity, LinkInfo, LinkOptions, LinkPatch, LinkStats, StatsQuery};
pub use message::{
    short_code, Reply, Request, ServerInfo, MAX_API_KEY_LEN, MAX_PROTOCOL_VERSION, PROTOCOL_V1,
    PROTOCOL_V2,
};

// The crate README's examples are compiled and run as doctests.
#[doc = include_str!("../README.md")]
#[cfg(doctest)]
pub struct ReadmeDoctests;
