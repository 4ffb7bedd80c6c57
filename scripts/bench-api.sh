#!/usr/bin/env bash
# The JSON API's figures (issue 21), ratios from one run on one machine,
# against a release build of shorty-uring (or the binary given). The
# server runs on CPU 0 with --threads 1, the load generators on CPU 1
# (taskset), so "server CPU" (user + system from /proc/PID/stat) is one
# core's work; each measurement is repeated ROUNDS times (default 3) with
# the two sides interleaved, and every ratio is printed per round plus its
# min / median / max (a shared machine is noisy: read the spread).
#   1. server CPU per new link: POST /api/v1/links (wrk, 50 keep-alive
#      connections, one API key) vs binary SHORTEN (50 connections, one
#      request in flight each); --sync never, so the fronts' cost is what
#      differs, not fsync. Goal: <= 2x.
#   2. server CPU per redirect with rate limiting on (a limit never reached,
#      loopback counted) vs off. Goal: <= 1.05x.
#   3. rate-limiter memory under a 100,000-address spray (the `limits`
#      test's counting allocator);
#   4. with BASE_BIN=path/to/an/older/shorty-uring: server CPU per redirect,
#      default flags, that binary vs this build, runs interleaved 3 times
#      (the redirect path must not get slower).
# Needs wrk (apt-get install wrk). Usage: scripts/bench-api.sh [shorty-uring]
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --quiet -p shorty-server-uring -p shorty-client
BIN=target/release
BACKEND=${1:-shorty-uring}
PORT=${PORT:-9400}
DURATION=${DURATION:-10s}
ROUNDS=${ROUNDS:-3}
SERVER_CPU=${SERVER_CPU:-0}
LOAD_CPU=${LOAD_CPU:-1}
HTTP="127.0.0.1:$((PORT + 1))"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

start() { # data-dir extra-args...
  local dir=$1; shift
  taskset -c "$SERVER_CPU" "$BIN/$BACKEND" --listen "127.0.0.1:$PORT" --http "$HTTP" \
    --admin off --data-dir "$dir" --threads 1 --sync never --log-level warn "$@" &
  SERVER=$!
  for _ in $(seq 100); do "$BIN/shorty" -s "127.0.0.1:$PORT" ping >/dev/null 2>&1 && return; sleep 0.1; done
  echo "$BACKEND did not start" >&2; exit 1
}
stop() { kill -TERM "$SERVER"; wait "$SERVER" || true; }
# User + system CPU seconds of a process (USER_HZ = 100).
cpu() { awk '{sub(/.*\) /, ""); print ($12 + $13) / 100}' "/proc/$1/stat"; }
per_million() { awk -v b="$1" -v a="$2" -v n="$3" 'BEGIN { printf "%.2f", (a - b) * 1e6 / n }'; }
wrk_count() { awk '/requests in/ {print $1}'; }
load() { taskset -c "$LOAD_CPU" "$@"; }
# min / median / max of the numbers given.
spread() { printf '%s\n' "$@" | sort -g | awk '{ v[NR] = $1 } END {
  printf "min %.2f, median %.2f, max %.2f", v[1], v[int((NR + 1) / 2)], v[NR] }'; }

echo "=== 1. new links: binary SHORTEN vs POST /api/v1/links ($DURATION each, $ROUNDS rounds)"
ratios1=()
for round in $(seq "$ROUNDS"); do
  rm -rf "$tmp/links"
  key=$("$BIN/$BACKEND" keys --data-dir "$tmp/links" create --name bench --scopes links:write 2>/dev/null)
  start "$tmp/links" --rate-create off --rate-create-key off
  before=$(cpu "$SERVER")
  out=$(load "$BIN/shorty" -s "127.0.0.1:$PORT" bench --mode pipeline -c 50 --depth 1 -d "$DURATION" --json 2>/dev/null)
  after=$(cpu "$SERVER")
  n=$(echo "$out" | python3 -c 'import json,sys; d=json.load(sys.stdin); print(d.get("requests") or d.get("ok") or d["completed"])')
  shorten=$(per_million "$before" "$after" "$n")
  cat >"$tmp/post.lua" <<LUA
wrk.method = "POST"
wrk.body = '{"url":"https://example.com/a/long/path/for/the/bench"}'
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer $key"
LUA
  before=$(cpu "$SERVER")
  out=$(load wrk -t1 -c50 -d"$DURATION" -s "$tmp/post.lua" "http://$HTTP/api/v1/links")
  after=$(cpu "$SERVER")
  echo "$out" | grep -E 'Non-2xx' || true
  m=$(echo "$out" | wrk_count)
  post=$(per_million "$before" "$after" "$m")
  ratio=$(awk -v p="$post" -v s="$shorten" 'BEGIN { printf "%.3f", p / s }')
  ratios1+=("$ratio")
  echo "round $round: SHORTEN $n links, $shorten s/M; POST $m links, $post s/M; POST / SHORTEN ${ratio}x"
  stop
done
echo "ratio POST / SHORTEN: $(spread "${ratios1[@]}") (goal <= 2x)"

echo "=== 2. redirects: rate limiting off vs on ($DURATION each, $ROUNDS rounds, interleaved)"
ratios2=()
for round in $(seq "$ROUNDS"); do
  declare -A per=()
  for mode in off on; do
    if [ "$mode" = on ]; then
      args=(--rate-redirect 4000000000/s --rate-limit-loopback true)
    else
      args=(--rate-redirect off)
    fi
    rm -rf "$tmp/redirect-$mode"
    start "$tmp/redirect-$mode" "${args[@]}"
    code=$("$BIN/shorty" -s "127.0.0.1:$PORT" shorten https://example.com/wrk-target | sed 's#.*/##')
    before=$(cpu "$SERVER")
    out=$(load wrk -t1 -c50 -d"$DURATION" "http://$HTTP/$code")
    after=$(cpu "$SERVER")
    echo "$out" | grep -E 'Non-2xx' || true
    n=$(echo "$out" | wrk_count)
    per[$mode]=$(per_million "$before" "$after" "$n")
    echo "round $round, limits $mode: $n redirects, server CPU ${per[$mode]} s per million"
    stop
  done
  ratios2+=("$(awk -v on="${per[on]}" -v off="${per[off]}" 'BEGIN { printf "%.3f", on / off }')")
  unset per
done
echo "ratio on / off: $(spread "${ratios2[@]}") (goal <= 1.05x)"

echo "=== 3. limiter memory under a 100,000-address spray"
# A debug build: allocation sizes do not depend on optimisation.
cargo test --quiet -p shorty-service --test limits -- --nocapture 2>&1 | grep addresses

if [ -n "${BASE_BIN:-}" ]; then
  echo "=== 4. redirects, default flags: $BASE_BIN vs this build ($DURATION each, interleaved)"
  for round in 1 2 3; do
    for which in base this; do
      if [ "$which" = base ]; then bin=$BASE_BIN; else bin=$BIN/$BACKEND; fi
      dir="$tmp/cmp-$which-$round"
      taskset -c "$SERVER_CPU" "$bin" --listen "127.0.0.1:$PORT" --http "$HTTP" --admin off \
        --data-dir "$dir" --threads 1 --sync never --log-level warn &
      SERVER=$!
      for _ in $(seq 100); do "$BIN/shorty" -s "127.0.0.1:$PORT" ping >/dev/null 2>&1 && break; sleep 0.1; done
      code=$("$BIN/shorty" -s "127.0.0.1:$PORT" shorten https://example.com/wrk-target | sed 's#.*/##')
      before=$(cpu "$SERVER")
      out=$(load wrk -t1 -c50 -d"$DURATION" "http://$HTTP/$code")
      after=$(cpu "$SERVER")
      n=$(echo "$out" | wrk_count)
      echo "round $round $which: $n redirects, server CPU $(per_million "$before" "$after" "$n") s per million"
      stop
    done
  done
fi
