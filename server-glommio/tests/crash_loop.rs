//! The crash loop through the wire (issue 18): shorty-glommio and
//! shorty-uring killed under load, in turn, on one data directory; every
//! acknowledged link resolves after every restart. `CRASH_CYCLES=n` runs
//! more cycles.
use std::path::Path;

use shorty_conformance::crash_loop::crash_loop;
use shorty_conformance::harness::workspace_binary;

#[test]
fn killed_under_load_in_turn_every_acknowledged_link_survives() {
    let uring = workspace_binary("shorty-uring", "shorty-server-uring");
    let glommio = Path::new(env!("CARGO_BIN_EXE_shorty-glommio"));
    crash_loop(&[glommio, &uring]);
}
