//! `shorty-glommio`: Shorty on glommio, one io_uring executor per core.
//!
//! Everything that is not I/O (request handling, codes, the log format,
//! group commit, the per-core loops, the CLI, the process scaffolding and
//! signal handling) comes from `shorty-service`; this crate supplies
//! glommio's I/O calls, in the same files as `shorty-uring`:
//! - `listener.rs`: one core's executor and listener;
//! - `connection.rs`: a client connection's reads and writes;
//! - `log_writer.rs`: log segment writes through `DmaStreamWriter`.

mod connection;
mod listener;
mod log_writer;

fn main() -> std::process::ExitCode {
    shorty_service::server::run("shorty-glommio", listener::serve)
}
