//! The Redis fault matrix (`shorty_conformance::redis_faults`), against
//! `shorty-glommio`.
shorty_conformance::redis_suite!(env!("CARGO_BIN_EXE_shorty-glommio"));
