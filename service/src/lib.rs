//! The core of Shorty, shared by both servers: everything that is not I/O.
#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod codes;
pub mod keydir;
pub mod log;
pub mod url;
