//! The shared conformance suite, against `shorty-uring`.
shorty_conformance::suite!(env!("CARGO_BIN_EXE_shorty-uring"));
