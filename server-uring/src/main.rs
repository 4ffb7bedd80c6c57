//! `shorty-uring`: Shorty on tokio-uring, one io_uring runtime per core.
//!
//! Everything that is not I/O (request handling, codes, the log format,
//! group commit, the CLI, the process scaffolding) comes from
//! `shorty-service`; this crate only moves bytes:
//! - `listener.rs`: one core's runtime, accept loop and drain;
//! - `connection.rs`: one client connection;
//! - `log_writer.rs`: one core's group-commit task;
//! - `core.rs`: the state a core's tasks share.

mod connection;
mod core;
mod listener;
mod log_writer;

fn main() -> std::process::ExitCode {
    shorty_service::server::run("shorty-uring", listener::serve)
}
