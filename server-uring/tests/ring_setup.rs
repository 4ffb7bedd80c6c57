//! The io_uring setup the README and the code claim (`COOP_TASKRUN` and
//! `SINGLE_ISSUER` on every core's ring, `DEFER_TASKRUN` with
//! `--uring-defer-taskrun on`), read back from
//! the running server rather than from the code (`shorty_conformance::rings`
//! says how), and what a ring driven that way must still do: answer, and
//! go quiet after the load.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::time::Duration;

use shorty_conformance::harness::Server;
use shorty_conformance::rings::{self, COOP_TASKRUN, DEFER_TASKRUN, SINGLE_ISSUER, TASKRUN_FLAG};
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

/// The flags of every `io_uring_setup` the server made with `extra`
/// arguments (two cores), read back through strace; `None` without strace
/// outside CI.
fn traced_ring_flags(extra: &[&str]) -> Option<Vec<u32>> {
    if !rings::strace_available() {
        return None;
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
    ]
    .iter()
    .chain(extra)
    .map(std::ffi::OsStr::new);
    let args: Vec<_> = args
        .chain([std::ffi::OsStr::new("--data-dir"), data.as_os_str()])
        .collect();
    let found = rings::traced_setups(Path::new(BINARY), &args, 2);
    assert_eq!(found.len(), 2, "one ring per core: {found:?}");
    Some(
        found
            .into_iter()
            .map(|(flags, result)| {
                assert!(result >= 0, "io_uring_setup failed: {result}");
                flags
            })
            .collect(),
    )
}

#[test]
fn rings_are_set_up_with_coop_taskrun_and_single_issuer() {
    for flags in traced_ring_flags(&[]).unwrap_or_default() {
        assert_eq!(
            flags & (COOP_TASKRUN | SINGLE_ISSUER | DEFER_TASKRUN | TASKRUN_FLAG),
            COOP_TASKRUN | SINGLE_ISSUER | TASKRUN_FLAG,
            "ring set up with flags {flags:#x}: COOP_TASKRUN, TASKRUN_FLAG and SINGLE_ISSUER \
             expected, and DEFER_TASKRUN only when asked for"
        );
    }
}

#[test]
fn defer_taskrun_when_asked_for() {
    let want = COOP_TASKRUN | SINGLE_ISSUER | DEFER_TASKRUN | TASKRUN_FLAG;
    for flags in traced_ring_flags(&["--uring-defer-taskrun", "on"]).unwrap_or_default() {
        assert_eq!(
            flags & want,
            want,
            "ring set up with flags {flags:#x}: COOP_TASKRUN, SINGLE_ISSUER, DEFER_TASKRUN and \
             TASKRUN_FLAG expected"
        );
    }
}

/// A core that parks with nothing to submit does not enter its ring
/// (vendor/PATCHES.md, tokio-uring patch 4): tokio-uring 0.5 made an
/// `io_uring_enter` at every park, submitting nothing most of the time
/// (0.34-0.45 per `Connection: close` request, and once a second on an idle
/// core, whose timer task wakes it). Completion work the kernel holds for
/// the core interrupts the park's `epoll_wait` instead, and a ring set up
/// with `TASKRUN_FLAG` says when there is some. Counted with strace over
/// 2.5 s of an idle core (at least two timer wake-ups) after a request:
/// no enter that submits nothing.
#[test]
fn an_idle_core_does_not_enter_its_ring() {
    if !rings::strace_available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(Path::new(BINARY), dir.path(), &["--threads", "1"]);
    let mut conn = server.connect();
    let code = code_of(&conn.shorten("https://example.com/idle-enters")).to_owned();
    let first = conn.resolve(&code);
    let calls = rings::traced_calls(server.pid(), "io_uring_enter,epoll_wait", || {
        std::thread::sleep(Duration::from_millis(2_500));
    });
    let parks = calls
        .iter()
        .filter(|c| c.starts_with("epoll_wait("))
        .count();
    assert!(
        parks >= 2,
        "the idle core parked {parks} times in 2.5 s: its timer task should wake it every \
         second: {calls:#?}"
    );
    // `io_uring_enter(fd, to_submit, min_complete, flags, ...)`.
    let empty: Vec<_> = calls
        .iter()
        .filter(|c| c.starts_with("io_uring_enter(") && c.split(", ").nth(1) == Some("0"))
        .collect();
    assert!(
        empty.is_empty(),
        "the idle core entered its ring {} times with nothing to submit: {calls:#?}",
        empty.len()
    );
    // Still answers.
    assert_eq!(conn.resolve(&code), first);
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
    request_costs(&["--uring-multishot-recv", "off"], 25);
}

/// The same on a `DEFER_TASKRUN` ring: it answers, at the same count.
#[test]
fn a_request_costs_the_same_on_a_defer_taskrun_ring() {
    request_costs(&["--uring-defer-taskrun", "on"], 25);
}

/// With `--uring-multishot-recv on` (the default) a connection's receive
/// is submitted once and stays armed (vendor/PATCHES.md, tokio-uring patch
/// 3): a
/// request/response costs the ring its send only, 1.0 (2.0 with a receive
/// per read). 1.5 leaves room for a partial send now and then, and none for
/// a receive per request.
#[test]
fn a_request_costs_only_its_send_with_multishot_recv() {
    request_costs(&["--uring-multishot-recv", "on"], 15);
}

/// Over `REQUESTS` request/response RESOLVEs on one connection, the ring
/// takes at most `tenths` / 10 submissions per request.
fn request_costs(extra: &[&str], tenths: u64) {
    let dir = tempfile::tempdir().unwrap();
    let args: Vec<&str> = ["--threads", "1"].iter().chain(extra).copied().collect();
    let server = Server::start(Path::new(BINARY), dir.path(), &args);
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
    // 2.0 each (1.0 with a multishot receive); a partial send or an empty
    // pool (`ENOBUFS`) adds one now and then, and an idle core's log marker
    // once: half a submission per request leaves room for those and none
    // for an operation per request.
    assert!(
        submitted * 10 <= requests * tenths,
        "{submitted} submissions for {requests} request/response RESOLVEs (over {}.{} each): \
         an operation per request too many (a buffer given back as an operation, or a receive \
         per read with multishot receive on)",
        tenths / 10,
        tenths % 10
    );
}

/// With multishot receive, a connection that closes after one request
/// (HTTP `Connection: close`, the seed's pattern) costs what it costs
/// without: its receive and its send, and its accept when that is one
/// operation per connection (`--uring-multishot-accept off`): 3
/// submissions. Its one read is a receive of its own; a multishot armed
/// from the first read would still be armed when the server closes, and be
/// cancelled: 4.
#[test]
fn a_connection_per_request_costs_no_more_with_multishot_recv() {
    per_connection_costs(&["--uring-multishot-accept", "off"], 35);
}

/// With a multishot accept (the default), the listener's one armed accept
/// takes every connection: a connection per request costs its receive and
/// its send, 2 submissions (3 with an accept per connection, as it was).
#[test]
fn a_multishot_accept_takes_connections_without_an_operation_each() {
    per_connection_costs(&["--uring-multishot-accept", "on"], 25);
}

/// Submissions per HTTP `Connection: close` redirect, at most
/// `tenths`/10 each.
fn per_connection_costs(extra: &[&str], tenths: u64) {
    use std::io::{Read, Write};
    let dir = tempfile::tempdir().unwrap();
    let args: Vec<&str> = ["--threads", "1", "--uring-multishot-recv", "on"]
        .iter()
        .chain(extra)
        .copied()
        .collect();
    let server = Server::start(Path::new(BINARY), dir.path(), &args);
    let code = code_of(&server.connect().shorten("https://example.com/per-request")).to_owned();
    let request = format!("GET /{code} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    let get = || {
        let mut http = std::net::TcpStream::connect(server.http_addr()).unwrap();
        http.write_all(request.as_bytes()).unwrap();
        let mut reply = String::new();
        http.read_to_string(&mut reply).unwrap();
        assert!(reply.contains("example.com/per-request"), "{reply}");
    };
    get();
    let before = rings::sqes_submitted(server.pid());
    let connections = requests() / 10;
    for _ in 0..connections {
        get();
    }
    let submitted = rings::sqes_submitted(server.pid()) - before;
    assert!(
        submitted * 10 <= connections * tenths,
        "{submitted} submissions for {connections} connections of one request each (over {}.{} \
         each): an operation per connection too many (an accept each with a multishot accept, \
         or a receive left armed at the close and cancelled)",
        tenths / 10,
        tenths % 10
    );
}

/// With multishot receive, a peer that sends and never reads must not take
/// the core's shared receive buffers (README, "Peers that never read"): an
/// armed receive keeps taking a buffer for every segment that arrives,
/// whether or not the connection wants input, so the receive is cancelled
/// while its output is at the cap (`Socket::pause_read`). Checked through
/// what another connection's requests cost meanwhile: with the pool taken
/// by the hog, each of its reads ends in `ENOBUFS` and falls back to a
/// receive into a buffer of its own, 3 submissions per request instead of
/// 1.
#[test]
fn a_peer_that_never_reads_leaves_the_receive_buffers_to_the_others() {
    use std::io::Write;
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(
        Path::new(BINARY),
        dir.path(),
        &[
            "--threads",
            "1",
            "--uring-multishot-recv",
            "on",
            "--max-output-bytes",
            "65536",
            // Neither closed while the test runs.
            "--write-timeout",
            "60s",
            "--idle-timeout",
            "60s",
        ],
    );
    let mut conn = server.connect();
    let long = format!("https://example.com/{}", "z".repeat(8000));
    let code = code_of(&conn.shorten(&long)).to_owned();
    let short = code_of(&conn.shorten("https://example.com/short")).to_owned();
    let flood = shorty_conformance::wire::resolve_flood(&code, 4096);
    // The pool is 4 MiB (256 buffers of 16 KiB); send more than that plus
    // what the sockets buffer, until the server has stopped taking bytes
    // for a while (or 20 MiB, or 5 s).
    let mut hog = std::net::TcpStream::connect(server.addr()).unwrap();
    hog.set_nonblocking(true).unwrap();
    let started = std::time::Instant::now();
    let (mut sent, mut stalled) = (0usize, 0);
    while sent < 20 << 20 && stalled < 30 && started.elapsed() < Duration::from_secs(5) {
        match hog.write(&flood) {
            Ok(n) => {
                sent += n;
                stalled = 0;
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                stalled += 1;
                std::thread::sleep(Duration::from_millis(10));
            }
            Err(e) => panic!("the hog's connection failed after {sent} bytes: {e}"),
        }
    }
    let first = conn.resolve(&short);
    let before = rings::sqes_submitted(server.pid());
    let requests = requests() / 4;
    for _ in 0..requests {
        assert_eq!(conn.resolve(&short), first);
    }
    let submitted = rings::sqes_submitted(server.pid()) - before;
    assert!(
        submitted * 10 <= requests * 15,
        "{submitted} submissions for {requests} request/response RESOLVEs (over 1.5 each) on \
         one connection while another ({sent} bytes sent, none read) was at its output cap: \
         the hog's receive took the pool's buffers"
    );
    drop(hog);
}

/// Bursts of request/response RESOLVEs the idleness check below loads the
/// core with first (`BURSTS` env var for more).
fn bursts() -> usize {
    std::env::var("BURSTS")
        .ok()
        .and_then(|t| t.parse().ok())
        .unwrap_or(100)
}

/// After a load, the core thread sleeps: a `DEFER_TASKRUN` ring's driver
/// (vendor/PATCHES.md, tokio-uring patch 2) must not keep entering the
/// kernel once the work is done. A first attempt looped on the kernel's
/// `IORING_SQ_TASKRUN` flag, which stayed set, and spun at a full core after
/// load while every other test passed. The load: 48 connections, each with
/// a RESOLVE in flight at once, so a wake-up finds more completions than
/// the kernel runs per enter. Then the core thread's CPU time and read
/// calls over an idle second are counted (`/proc/PID/task/TID`): a spinning
/// driver reads its eventfd hundreds of thousands of times a second; an
/// idle one a handful. The CPU bound is loose (a spinner on this shared
/// machine still gets far more than 10 % of a core); the read count is the
/// sharp one.
#[test]
fn the_core_goes_idle_after_a_load() {
    idle_after_load(&[]);
}

/// The same on a `DEFER_TASKRUN` ring, whose driver is the new one.
#[test]
fn the_core_goes_idle_after_a_load_on_a_defer_taskrun_ring() {
    idle_after_load(&["--uring-defer-taskrun", "on"]);
}

fn idle_after_load(extra: &[&str]) {
    let dir = tempfile::tempdir().unwrap();
    let args: Vec<&str> = ["--threads", "1"].iter().chain(extra).copied().collect();
    let server = Server::start(Path::new(BINARY), dir.path(), &args);
    let mut conns: Vec<_> = (0..48).map(|_| server.connect()).collect();
    let code = code_of(&conns[0].shorten("https://example.com/idle")).to_owned();
    let first = conns[0].resolve(&code);
    for _ in 0..bursts() {
        for conn in &mut conns {
            conn.send(shorty_protocol::Request::Resolve(code.as_bytes()));
        }
        for conn in &mut conns {
            assert_eq!(conn.reply(), first);
        }
    }
    let core = rings::thread_named(server.pid(), "shorty-core-0").expect("the core thread");
    // Let what the load left (closing nothing; timers) settle.
    std::thread::sleep(Duration::from_millis(300));
    let (cpu0, reads0) = rings::thread_usage(server.pid(), core);
    let idle = Duration::from_secs(1);
    std::thread::sleep(idle);
    let (cpu1, reads1) = rings::thread_usage(server.pid(), core);
    let (cpu, reads) = (cpu1 - cpu0, reads1 - reads0);
    assert!(
        reads < 1_000,
        "the core thread made {reads} read calls in an idle second after the load: its driver \
         spins ({cpu:?} of CPU)"
    );
    assert!(
        cpu < idle / 10,
        "the core thread used {cpu:?} of CPU in an idle second after the load: its driver \
         spins ({reads} read calls)"
    );
    drop(conns);
}
