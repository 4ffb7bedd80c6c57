//! What accepting a connection costs the core in system calls, counted by
//! `strace` on the running server (vendor/PATCHES.md, glommio 4). glommio
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
    if !rings::strace_available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(Path::new(BINARY), dir.path(), &["--threads", "1"]);
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
    // A debug build's standard library checks with `F_GETFD` that a
    // descriptor it closes is open: not the accept's.
    let fcntl = calls
        .iter()
        .filter(|c| c.starts_with("fcntl(") && !c.contains("F_GETFD"))
        .collect::<Vec<_>>();
    assert!(fcntl.is_empty(), "no fcntl per accept: {fcntl:#?}");
    assert_eq!(
        count("getpeername("),
        0,
        "the peer's address came with the accept: {calls:#?}"
    );
}
