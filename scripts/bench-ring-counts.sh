#!/usr/bin/env bash
# Counted, not timed (issue 23): per HTTP redirect under `wrk -t1 -c50`
# for 3 s, shorty-uring's ring submissions and completions (the ring's
# SqHead and CqTail in /proc/PID/fdinfo), its system calls, its
# io_uring_enter calls and context switches (`perf stat` on the server).
# Server on CPU 0 `--threads 1`, wrk on CPU 1. Extra arguments go to the
# server, e.g. `--uring-multishot-recv off`.
#
# Usage: scripts/bench-ring-counts.sh keep-alive|close [SERVER ARGS...]
#   Needs taskset, wrk, perf and release builds of shorty-uring and the
#   client (`cargo build --release -p shorty-server-uring -p shorty-client`;
#   BIN=DIR for others).
set -euo pipefail
[ $# -ge 1 ] || { echo "usage: $0 keep-alive|close [SERVER ARGS...]" >&2; exit 2; }
MODE=$1; shift
BIN=${BIN:-$PWD/target/release}
PORT=${PORT:-9760}
TMP=$(mktemp -d)
S=
cleanup() {
  if [ -n "$S" ]; then kill "$S" 2>/dev/null; wait "$S" 2>/dev/null || true; fi
  rm -rf "$TMP"
}
trap cleanup EXIT
taskset -c 0 "$BIN/shorty-uring" --listen "127.0.0.1:$PORT" --http "127.0.0.1:$((PORT + 1))" \
  --admin off --data-dir "$TMP/data" --log-level warn --threads 1 "$@" >/dev/null 2>&1 &
S=$!
for _ in $(seq 100); do "$BIN/shorty" -s "127.0.0.1:$PORT" ping >/dev/null 2>&1 && break; sleep 0.1; done
code=$("$BIN/shorty" -s "127.0.0.1:$PORT" shorten https://example.com/wrk-target | sed 's#.*/##')
ring() { # SqHead and CqTail of the server's one ring
  for fd in /proc/"$S"/fd/*; do
    if [ "$(readlink "$fd")" = "anon_inode:[io_uring]" ]; then
      grep -E "^(SqHead|CqTail):" "/proc/$S/fdinfo/${fd##*/}" | awk '{printf "%s ", $2}'
    fi
  done
}
args=()
[ "$MODE" = close ] && args=(-H "Connection: close")
read -r sq0 cq0 <<<"$(ring)"
perf stat -x, -e raw_syscalls:sys_enter,syscalls:sys_enter_io_uring_enter,context-switches \
  -p "$S" -o "$TMP/perf" -- sleep 3.2 &
P=$!
n=$(taskset -c 1 wrk -t1 -c50 -d3s ${args[@]+"${args[@]}"} "http://127.0.0.1:$((PORT + 1))/$code" \
  | awk '/requests in/ {print $1}')
wait "$P"
read -r sq1 cq1 <<<"$(ring)"
field() { awk -F, -v e="$1" '$3 == e {print $1}' "$TMP/perf"; }
awk -v n="$n" -v sq=$((sq1 - sq0)) -v cq=$((cq1 - cq0)) -v sys="$(field raw_syscalls:sys_enter)" \
  -v ent="$(field syscalls:sys_enter_io_uring_enter)" -v cs="$(field context-switches)" -v mode="$MODE" \
  'BEGIN { printf "%s: %d requests; per request: submissions %.3f, completions %.3f, system calls %.3f, io_uring_enter %.3f, context switches %.4f\n",
    mode, n, sq / n, cq / n, sys / n, ent / n, cs / n }'
