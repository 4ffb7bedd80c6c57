//! `shorty-uring`: Shorty on tokio-uring, one io_uring runtime per core.
//!
//! Everything that is not I/O (request handling, codes, the log format,
//! group commit, the per-core loops, the CLI, the process scaffolding) comes
//! from `shorty-service`; this crate supplies tokio-uring's I/O calls:
//! - `listener.rs`: one core's runtime and listener;
//! - `connection.rs`: a client connection's reads and writes;
//! - `log_writer.rs`: log segment writes through `tokio_uring::fs::File`.

mod connection;
mod listener;
mod log_writer;

fn main() -> std::process::ExitCode {
    shorty_service::server::run("shorty-uring", listener::serve)
}
