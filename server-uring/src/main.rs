//! `shorty-uring`: Shorty on tokio-uring, one io_uring runtime per core.
//!
//! Everything that is not I/O comes from `shorty-service` (the sans-IO
//! core) and `shorty-runtime` (the CLI, the data directory, the per-core
//! driver, the process scaffolding); this crate supplies tokio-uring's I/O
//! calls:
//! - `listener.rs`: one core's runtime;
//! - `accept.rs`: its listeners (a multishot accept each);
//! - `buffers.rs`: each core's pool of receive buffers (a registered
//!   buffer ring), the crate's `unsafe` with its invariants;
//! - `connection.rs`: a client connection's reads (provided buffers) and
//!   writes;
//! - `log_writer.rs`: log segment writes through `tokio_uring::fs::File`;
//! - `log_reader.rs`: URL reads from the log.

mod accept;
mod buffers;
mod connection;
mod listener;
mod log_reader;
mod log_writer;

fn main() -> std::process::ExitCode {
    shorty_runtime::server::run("shorty-uring", listener::serve)
}
