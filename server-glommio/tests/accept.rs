//! What accepting a connection costs the core in system calls, counted by
//! `strace` on the running server (vendor/PATCHES.md, glommio 4 and 5).
//! With the multishot accept (glommio 5, the default) the ring accepts and
//! a connection costs no accept system call at all. Without it: glommio
//! 0.9 as released wrapped each optimistic `accept` in three `fcntl`s (the
//! listener was blocking, for its ring's `ACCEPT`, and was made
//! non-blocking around the call and back), and Shorty then asked the new
//! stream for its peer with a `getpeername`: five system calls where one
//! `accept4` does (it gives the peer's address too). On the seed's
//! connection-per-request pattern that was a tenth of the core's work.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;

use shorty_conformance::harness::Server;
use shorty_conformance::rings;
use shorty_conformance::wire::Conn;

const BINARY: &str = env!("CARGO_BIN_EXE_shorty-glommio");

const CONNECTIONS: u64 = 200;

#[test]
fn a_connection_costs_one_accept4_and_no_fcntl_or_getpeername() {
    let Some(calls) = accept_calls(&["--glommio-multishot-accept", "off"]) else {
        return;
    };
    let count = |what: &str| calls.iter().filter(|c| c.starts_with(what)).count() as u64;
    assert!(
        count("accept4(") >= CONNECTIONS,
        "each connection was accepted with accept4: {calls:#?}"
    );
    // One that finds the connection waiting, or one that finds none and
    // one more once the listener polls readable.
    assert!(
        count("accept4(") <= 2 * CONNECTIONS + 2,
        "at most two accept4 per connection: {calls:#?}"
    );
    assert_eq!(count("accept("), 0, "{calls:#?}");
    assert_eq!(
        count("getpeername("),
        0,
        "the peer's address came with the accept: {calls:#?}"
    );
}

/// The multishot accept (the default): the ring's one armed accept takes
/// every connection, so none costs an accept system call (each costs a
/// `getpeername`: the completion carries no address). Before glommio
/// patch 5 every connection cost at least one `accept4`.
#[test]
fn a_multishot_accept_takes_connections_without_an_accept_call_each() {
    let Some(calls) = accept_calls(&[]) else {
        return;
    };
    let count = |what: &str| calls.iter().filter(|c| c.starts_with(what)).count() as u64;
    assert_eq!(count("accept4("), 0, "{calls:#?}");
    assert_eq!(count("accept("), 0, "{calls:#?}");
    assert!(
        count("getpeername(") <= CONNECTIONS,
        "at most one getpeername per connection: {calls:#?}"
    );
}

/// The accept-related system calls the server makes while `CONNECTIONS`
/// clients each make one request on a connection of their own (no `fcntl`
/// among them: checked here for both modes). None without strace (which
/// fails the test under `CI`).
fn accept_calls(extra: &[&str]) -> Option<Vec<String>> {
    if !rings::strace_available() {
        return None;
    }
    let dir = tempfile::tempdir().unwrap();
    let args: Vec<&str> = ["--threads", "1"].iter().chain(extra).copied().collect();
    let server = Server::start(Path::new(BINARY), dir.path(), &args);
    let long = "https://example.com/accept-cost";
    let short = server.connect().shorten(long);
    let code = shorty_conformance::wire::code_of(&short).to_owned();
    let calls = rings::traced_calls(server.pid(), "accept,accept4,fcntl,getpeername", || {
        for _ in 0..CONNECTIONS {
            // One request per connection, answered before the next
            // connects: the seed's pattern. Answered means the peer's
            // address did its work too (admission is per address).
            let mut conn = Conn::connect(server.addr());
            let reply = conn.resolve(&code);
            assert_eq!(reply.as_str(), Some(long), "{reply:?}");
        }
    });
    // A debug build's standard library checks with `F_GETFD` that a
    // descriptor it closes is open: not the accept's.
    let fcntl = calls
        .iter()
        .filter(|c| c.starts_with("fcntl(") && !c.contains("F_GETFD"))
        .collect::<Vec<_>>();
    assert!(fcntl.is_empty(), "no fcntl per accept: {fcntl:#?}");
    Some(calls)
}
