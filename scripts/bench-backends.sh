#!/usr/bin/env bash
# Measures the figures the README and the backend issues quote, for every
# backend binary given (default: all that are built), side by side in one
# run, against release builds:
#   0. --delay accuracy: single requests on a fresh server, --delay 200ms;
#   1. 10,000 clients connecting at once with --delay 1s (the seed's demo);
#   2. connect-per-request SHORTEN: connections/s, server CPU s per million;
#   3. pipelined SHORTEN, 50 connections x 16 in flight, --sync always and
#      --sync never: requests/s, server CPU s per million;
#   4. HTTP redirects with wrk (50 connections, keep-alive): redirects/s,
#      server CPU s per million redirects (needs `wrk`: apt-get install wrk).
# Usage: scripts/bench-backends.sh [shorty-uring] [shorty-glommio]
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --quiet -p shorty-server-uring -p shorty-server-glommio -p shorty-client
BIN=target/release
BACKENDS=("$@")
[ ${#BACKENDS[@]} -gt 0 ] || BACKENDS=(shorty-uring shorty-glommio)
PORT=${PORT:-9300}
DURATION=${DURATION:-10s}

start() { # backend data-dir extra-args...
  local backend=$1 dir=$2; shift 2
  rm -rf "$dir"
  "$BIN/$backend" --listen "127.0.0.1:$PORT" --http "127.0.0.1:$((PORT + 1))" --admin off --data-dir "$dir" --log-level warn "$@" &
  SERVER=$!
  for _ in $(seq 100); do "$BIN/shorty" -s "127.0.0.1:$PORT" ping >/dev/null 2>&1 && return; sleep 0.1; done
  echo "$backend did not start" >&2; exit 1
}
stop() { kill -TERM "$SERVER"; wait "$SERVER" || true; }
bench() { "$BIN/shorty" -s "127.0.0.1:$PORT" bench --server-pid "$SERVER" "$@" | grep -vE '/second: [0-9]+$'; }
# User + system CPU seconds of a process (USER_HZ = 100).
cpu() { awk '{sub(/.*\) /, ""); print ($12 + $13) / 100}' "/proc/$1/stat"; }

for backend in "${BACKENDS[@]}"; do
  [ -x "$BIN/$backend" ] || { echo "skipping $backend: not built"; continue; }
  tmp=$(mktemp -d)
  echo "##### $backend"
  echo "=== --delay 200ms accuracy: 3 fresh servers, 4 sequential requests each"
  for run in 1 2 3; do
    start "$backend" "$tmp/d0" --delay 200ms
    bench --mode connect -c 1 -n 4 | grep latency
    stop
  done
  echo "=== 10,000 clients at once, --delay 1s (generator: 4 processes)"
  start "$backend" "$tmp/d1" --delay 1s
  bench --mode connect -c 10000 -n 10000 --processes 4
  stop
  echo "=== connect per request, 50 agents, $DURATION"
  start "$backend" "$tmp/d2"
  bench --mode connect -c 50 -d "$DURATION"
  stop
  for sync in always never; do
    echo "=== pipelined SHORTEN, 50 connections x 16 in flight, --sync $sync, $DURATION"
    start "$backend" "$tmp/d3-$sync" --sync "$sync"
    bench --mode pipeline -c 50 --depth 16 -d "$DURATION"
    stop
  done
  if command -v wrk >/dev/null; then
    echo "=== HTTP redirects, wrk, 50 connections, $DURATION"
    start "$backend" "$tmp/d4"
    code=$("$BIN/shorty" -s "127.0.0.1:$PORT" shorten https://example.com/wrk-target | sed 's#.*/##')
    before=$(cpu "$SERVER")
    out=$(wrk -t1 -c50 -d"$DURATION" "http://127.0.0.1:$((PORT + 1))/$code")
    after=$(cpu "$SERVER")
    echo "$out" | grep -E 'Requests/sec|Latency|requests in|Non-2xx'
    total=$(echo "$out" | awk '/requests in/ {print $1}')
    awk -v b="$before" -v a="$after" -v n="$total" \
      'BEGIN { printf "server CPU: %.2f s, %.1f s per million redirects\n", a - b, (a - b) * 1e6 / n }'
    stop
  fi
  rm -rf "$tmp"
done
