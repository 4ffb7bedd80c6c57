//! The shared conformance suite, against `shorty-glommio`.
shorty_conformance::suite!(env!("CARGO_BIN_EXE_shorty-glommio"));
