//! The io_uring setup the README and the code claim (`COOP_TASKRUN` and
//! `SINGLE_ISSUER` on every core's ring), read back from the running server
//! rather than from the code (`shorty_conformance::rings` says how).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;

use shorty_conformance::harness::Server;
use shorty_conformance::rings::{self, COOP_TASKRUN, SINGLE_ISSUER};
use shorty_conformance::wire::code_of;

const BINARY: &str = env!("CARGO_BIN_EXE_shorty-uring");

#[test]
fn every_ring_refuses_a_second_issuer() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(Path::new(BINARY), dir.path(), &["--threads", "2"]);
    let fds = rings::ring_fds(server.pid());
    assert_eq!(fds.len(), 2, "one ring per core: {fds:?}");
    for fd in fds {
        assert!(
            rings::refuses_second_issuer(server.pid(), fd),
            "ring fd {fd} of the server accepted a register from another task: \
             it was not set up with IORING_SETUP_SINGLE_ISSUER"
        );
    }
}

#[test]
fn rings_are_set_up_with_coop_taskrun_and_single_issuer() {
    if !rings::strace_available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let args = [
        "--threads",
        "2",
        "--listen",
        "127.0.0.1:0",
        "--http",
        "127.0.0.1:0",
        "--admin",
        "off",
        "--data-dir",
    ]
    .map(std::ffi::OsStr::new);
    let args: Vec<_> = args.into_iter().chain([data.as_os_str()]).collect();
    let found = rings::traced_setups(Path::new(BINARY), &args, 2);
    assert_eq!(found.len(), 2, "one ring per core: {found:?}");
    for (flags, result) in found {
        assert!(result >= 0, "io_uring_setup failed: {result}");
        assert_eq!(
            flags & (COOP_TASKRUN | SINGLE_ISSUER),
            COOP_TASKRUN | SINGLE_ISSUER,
            "ring set up with flags {flags:#x}: COOP_TASKRUN and SINGLE_ISSUER expected"
        );
    }
}

/// Request/response RESOLVEs the submission count below is taken over
/// (`REQUESTS` env var for more).
fn requests() -> u64 {
    std::env::var("REQUESTS")
        .ok()
        .and_then(|t| t.parse().ok())
        .unwrap_or(2_000)
}

/// A request/response costs the ring two operations, its receive and its
/// send: the buffer the receive took goes back through the registered
/// buffer ring, in user space (vendor/PATCHES.md, tokio-uring patch 1), not
/// as a third operation per read (`IORING_OP_PROVIDE_BUFFERS`: 3.0 per
/// request before). Counted, not timed: the count does not depend on how
/// busy the machine is.
#[test]
fn a_request_costs_a_receive_and_a_send_and_no_buffer_operation() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(Path::new(BINARY), dir.path(), &["--threads", "1"]);
    let mut conn = server.connect();
    let code = code_of(&conn.shorten("https://example.com/ring-ops")).to_owned();
    let first = conn.resolve(&code);
    assert!(
        format!("{first:?}").contains("example.com/ring-ops"),
        "{first:?}"
    );
    let before = rings::sqes_submitted(server.pid());
    let requests = requests();
    for _ in 0..requests {
        assert_eq!(conn.resolve(&code), first);
    }
    let submitted = rings::sqes_submitted(server.pid()) - before;
    // 2.0 each; a partial send or an empty pool (`ENOBUFS`) adds one now and
    // then, and an idle core's log marker once: 2.5 leaves room for those
    // and none for an operation per request.
    assert!(
        submitted * 10 <= requests * 25,
        "{submitted} submissions for {requests} request/response RESOLVEs (over 2.5 each): \
         a buffer goes back to the kernel as an operation per read"
    );
}
