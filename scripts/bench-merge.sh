#!/usr/bin/env bash
# Measures the merge (issue 19): a log of LINKS links in 64 MiB segments,
# every other link deleted (a tombstone each, in further segments, loaded
# by recovery), then merges at --merge-rate RATE until none is worth it. Prints disk and key
# directory bytes before and after, the merge's time and I/O rate, and the
# URL reads per second READERS threads make without a merge and during it
# (in-process: key directory lookup + pread + decode, the reads a merge
# competes with; see runtime/examples/bench_merge.rs).
# Usage: LINKS=10000000 READERS=1 RATE=33554432 DIR=/tmp scripts/bench-merge.sh
set -euo pipefail
cd "$(dirname "$0")/.."
LINKS=${LINKS:-1000000}
READERS=${READERS:-1}
RATE=${RATE:-33554432}
SECONDS_IDLE=${SECONDS_IDLE:-5}
DIR=${DIR:-${TMPDIR:-/tmp}}
cargo build --release --quiet -p shorty-runtime --example bench_merge
target/release/examples/bench_merge --links "$LINKS" --readers "$READERS" --rate "$RATE" \
  --seconds "$SECONDS_IDLE" --dir "$DIR"
