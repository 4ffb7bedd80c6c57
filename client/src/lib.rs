//! `shorty-client`: the portable client library and `shorty` CLI. Not built yet
//! (tracked in its own issue); the conformance suite carries its own small client.
