//! The conformance cases that exercise a connection's reads (pipelining,
//! partial and oversized frames, slow and vanishing peers, peers that never
//! read, lingering closes, shutdown), against `shorty-uring` receiving with
//! a receive per read (`--uring-multishot-recv off`; the default is a
//! multishot receive, vendored tokio-uring patch 3): `tests/conformance.rs`
//! runs the whole suite on the default, this file the read cases on the
//! other path, so both stay tested.
//! The whole suite on either: `SHORTY_URING_MULTISHOT_RECV=on|off cargo
//! test -p shorty-server-uring --test conformance` (every server a test
//! starts inherits the environment).

use std::path::Path;
use std::sync::Once;

/// The binary, with every server this test binary starts receiving with a
/// receive per read.
fn binary() -> &'static Path {
    static SET: Once = Once::new();
    // Set once, before any test starts a server (each calls this first);
    // std's environment lock orders it before every spawn reads it. The
    // same value for every test in this binary.
    SET.call_once(|| std::env::set_var("SHORTY_URING_MULTISHOT_RECV", "off"));
    Path::new(env!("CARGO_BIN_EXE_shorty-uring"))
}

shorty_conformance::suite!(@cases binary();
    seed_exchange,
    typed_round_trips,
    pipelined_replies_in_order,
    oversized_frame_is_refused_from_its_header,
    bad_messages_get_errors_and_the_connection_survives,
    vanishing_peers_leak_nothing,
    idle_connections_are_closed,
    slow_frames_are_cut_off,
    max_connections_applies_back_pressure,
    graceful_shutdown_answers_in_flight_requests,
    delay_overlaps_across_clients,
    http_keep_alive_and_pipelining,
    http_bad_requests_are_answered_and_closed,
    http_slow_heads_time_out,
    a_peer_that_never_reads_is_closed_and_others_are_served,
    http_oversized_requests_are_read_before_the_close,
    oversized_frames_are_read_before_the_close,
    v2_is_negotiated_and_version_1_is_unchanged,
    api_creates_and_reads_links,
);
