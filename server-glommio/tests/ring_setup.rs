//! glommio's io_uring setup as patched in `vendor/glommio` (PATCHES.md),
//! read back from the running server rather than from the code
//! (`shorty_conformance::rings` says how): each core's main ring, where the
//! sockets' and files' operations go, is `COOP_TASKRUN` + `TASKRUN_FLAG` +
//! `SINGLE_ISSUER`; its latency ring, whose preemption timer must interrupt
//! a running task, is `SINGLE_ISSUER` only; its poll ring is glommio's
//! `IOPOLL` ring, unchanged.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;

use shorty_conformance::harness::Server;
use shorty_conformance::rings::{self, COOP_TASKRUN, IOPOLL, SINGLE_ISSUER};

const BINARY: &str = env!("CARGO_BIN_EXE_shorty-glommio");

/// `IORING_SETUP_TASKRUN_FLAG`: without it glommio could not see that
/// completions wait for a kernel entry.
const TASKRUN_FLAG: u32 = 1 << 9;

const THREADS: usize = 2;

#[test]
fn main_and_latency_rings_refuse_a_second_issuer() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(Path::new(BINARY), dir.path(), &["--threads", "2"]);
    let fds = rings::ring_fds(server.pid());
    assert_eq!(
        fds.len(),
        3 * THREADS,
        "main, latency and poll ring per core: {fds:?}"
    );
    let refused = fds
        .iter()
        .filter(|&&fd| rings::refuses_second_issuer(server.pid(), fd))
        .count();
    assert_eq!(
        refused,
        2 * THREADS,
        "rings set up with IORING_SETUP_SINGLE_ISSUER: the main and the latency ring of each core"
    );
}

#[test]
fn main_rings_are_coop_taskrun_and_latency_rings_are_not() {
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
    let found = rings::traced_setups(Path::new(BINARY), &args, 3 * THREADS);
    for (flags, result) in &found {
        assert!(*result >= 0, "io_uring_setup({flags:#x}) failed: {result}");
    }
    let with = |want: u32, without: u32| {
        found
            .iter()
            .filter(|(flags, _)| flags & want == want && flags & without == 0)
            .count()
    };
    let main = COOP_TASKRUN | TASKRUN_FLAG | SINGLE_ISSUER;
    assert_eq!(with(main, 0), THREADS, "one main ring per core: {found:x?}");
    assert_eq!(
        with(SINGLE_ISSUER, COOP_TASKRUN),
        THREADS,
        "one latency ring per core, SINGLE_ISSUER without COOP_TASKRUN: {found:x?}"
    );
    assert_eq!(
        with(COOP_TASKRUN, 0),
        THREADS,
        "no other ring is COOP_TASKRUN: {found:x?}"
    );
    assert_eq!(
        with(IOPOLL, 0),
        THREADS,
        "one poll ring per core: {found:x?}"
    );
}
