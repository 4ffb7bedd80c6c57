//! `shorty-glommio`: Shorty on glommio, one io_uring executor per core.
//!
//! Everything that is not I/O comes from `shorty-service` (the sans-IO
//! core) and `shorty-runtime` (the CLI, the data directory, the per-core
//! driver, the process scaffolding); this crate supplies glommio's I/O
//! calls, in the same files as `shorty-uring`:
//! - `listener.rs`: one core's executor and listeners;
//! - `connection.rs`: a client connection's reads (into one buffer per
//!   core) and writes;
//! - `log_writer.rs`: log segment writes through `DmaFile` (O_DIRECT
//!   blocks, zero-padded, one write at a time);
//! - `log_reader.rs`: URL reads from the log.

mod connection;
mod listener;
mod log_reader;
mod log_writer;

fn main() -> std::process::ExitCode {
    shorty_runtime::server::run("shorty-glommio", listener::serve)
}
