#!/usr/bin/env bash
# Two builds of one backend, A and B, side by side (issue 23: what one
# change buys): server CPU seconds per million HTTP redirects, keep-alive
# and `Connection: close`, the pinning and the CPU accounting of
# scripts/bench-floor.sh (server on CPU 0, `wrk -t1 -c50` on CPU 1, CPU from
# /proc), A and B alternating within every round so drift on a shared
# machine hits both. Prints every measurement, then the medians and B / A.
#
# MODES=shorten measures durable pipelined SHORTEN instead (`--sync always`,
# the load of bench-floor.sh's Redis row: `shorty bench --mode pipeline
# --burst -c 50 --depth 16 --op shorten`, N_SHORTEN requests).
#
# Usage: [ROUNDS=6] [MODES="keep-alive close shorten"] [N_SHORTEN=1000000]
#        scripts/bench-ab.sh BINARY_A BINARY_B
#   e.g. copy target/release/shorty-uring aside, rebuild with the change,
#   and compare the copy with the new build. Needs taskset, wrk and a
#   release build of the client (`cargo build --release -p shorty-client`).
set -euo pipefail
[ $# -eq 2 ] || { echo "usage: $0 BINARY_A BINARY_B" >&2; exit 2; }
CLI=$PWD/target/release/shorty
ROUNDS=${ROUNDS:-6}
MODES=${MODES:-keep-alive close}
N_SHORTEN=${N_SHORTEN:-1000000}
PORT=${PORT:-9700}
ticks=$(getconf CLK_TCK)
TMP=$(mktemp -d)
SERVER=
cleanup() {
  [ -n "$SERVER" ] && kill "$SERVER" 2>/dev/null
  rm -rf "$TMP"
}
trap cleanup EXIT
cpu() { awk -v hz="$ticks" '{sub(/.*\) /, ""); print ($12 + $13) / hz}' "/proc/$1/stat"; }
median() { # the middle value; for an even count, the mean of the two middle ones
  printf '%s\n' "$@" | sort -g | awk '{ v[NR] = $1 } END { m = int((NR + 1) / 2); if (NR % 2) print v[m]; else printf "%.2f\n", (v[m] + v[m + 1]) / 2 }'
}

measure() { # binary mode -> CPU s per million
  local code b a n args=()
  rm -rf "$TMP/data"
  # An io_uring server's listener outlives its process for a moment (the
  # ring's teardown is asynchronous): wait for the last one's to go.
  for _ in $(seq 100); do
    [ -z "$(ss -Hltn "sport = :$PORT or sport = :$((PORT + 1))")" ] && break
    sleep 0.05
  done
  [ "$2" = shorten ] && args=(--sync always)
  taskset -c 0 "$1" --listen "127.0.0.1:$PORT" --http "127.0.0.1:$((PORT + 1))" --admin off \
    --data-dir "$TMP/data" --log-level warn --threads 1 ${args[@]+"${args[@]}"} >/dev/null 2>>"$TMP/server.log" &
  SERVER=$!
  args=()
  for _ in $(seq 100); do "$CLI" -s "127.0.0.1:$PORT" ping >/dev/null 2>&1 && break; sleep 0.1; done
  if [ "$2" = shorten ]; then
    b=$(cpu "$SERVER")
    n=$(taskset -c 1 "$CLI" -s "127.0.0.1:$PORT" bench --json --mode pipeline --burst -c 50 --depth 16 \
      -n "$N_SHORTEN" --op shorten 2>/dev/null | python3 -c 'import json,sys; print(json.load(sys.stdin)["ok"])')
  else
    code=$("$CLI" -s "127.0.0.1:$PORT" shorten https://example.com/wrk-target | sed 's#.*/##')
    [ "$2" = close ] && args=(-H "Connection: close")
    b=$(cpu "$SERVER")
    n=$(taskset -c 1 wrk -t1 -c50 -d5s ${args[@]+"${args[@]}"} "http://127.0.0.1:$((PORT + 1))/$code" \
      | awk '/requests in/ {print $1}')
  fi
  a=$(cpu "$SERVER")
  if [ -z "$n" ]; then echo "wrk measured nothing against $1; its log:" >&2; cat "$TMP/server.log" >&2; exit 1; fi
  kill -TERM "$SERVER"; wait "$SERVER" 2>/dev/null || true
  SERVER=
  awk -v b="$b" -v a="$a" -v n="$n" 'BEGIN { printf "%.2f", (a - b) * 1e6 / n }'
}

declare -A CELLS=()
for r in $(seq "$ROUNDS"); do
  for mode in $MODES; do
    for side in A B; do
      if [ $side = A ]; then bin=$1; else bin=$2; fi
      v=$(measure "$bin" "$mode")
      echo "round $r $mode $side $v"
      CELLS[$side,$mode]+="$v "
    done
  done
done
for mode in $MODES; do
  # shellcheck disable=SC2086
  a=$(median ${CELLS[A,$mode]}); b=$(median ${CELLS[B,$mode]})
  echo "$mode: A $a [${CELLS[A,$mode]% }], B $b [${CELLS[B,$mode]% }], B / A $(awk -v x="$b" -v y="$a" 'BEGIN { printf "%.2f", x / y }')"
done
