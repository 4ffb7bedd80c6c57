#!/usr/bin/env bash
# Measures the click statistics figures the README quotes (issue 20), in one
# run, against release builds:
#   1. the statistics store candidates (fjall, redb) on one schema:
#      LINKS links (default 1,000,000) clicked CLICKS times each (3) over a
#      simulated month at RATE clicks per flush (5,000): flush cost per
#      second of traffic, disk bytes per link, memory added, one link's
#      30-day hourly series read time (median, p99);
#   2. one hot link under `wrk -c50` (keep-alive): the server's click count
#      (shorty_clicks_total) against wrk's request count;
#   3. redirect CPU per request with --stats on and --stats off, keep-alive
#      and one connection per click (wrk -H 'Connection: close'), and the
#      ratio.
# Needs `wrk` (apt-get install wrk). Usage: scripts/bench-stats.sh [backend]
# (SKIP_STORES=1: only the server figures; DURATION=10s per wrk run.)
set -euo pipefail
cd "$(dirname "$0")/.."
BACKEND=${1:-shorty-uring}
cargo build --release --quiet -p shorty-stats-bench -p "shorty-server-${BACKEND#shorty-}" -p shorty-client
BIN=target/release
PORT=${PORT:-9400}
DURATION=${DURATION:-10s}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

if [ -z "${SKIP_STORES:-}" ]; then
  echo "=== statistics stores: LINKS=${LINKS:-1000000} CLICKS=${CLICKS:-3} RATE=${RATE:-5000}"
  for store in fjall redb; do
    STATS_BENCH_DIR=$tmp "$BIN/shorty-stats-bench" "$store"
  done
fi

start() { # data-dir extra-args...
  local dir=$1; shift
  rm -rf "$dir"
  "$BIN/$BACKEND" --listen "127.0.0.1:$PORT" --http "127.0.0.1:$((PORT + 1))" \
    --admin "127.0.0.1:$((PORT + 2))" --data-dir "$dir" --log-level warn "$@" &
  SERVER=$!
  for _ in $(seq 100); do "$BIN/shorty" -s "127.0.0.1:$PORT" ping >/dev/null 2>&1 && return; sleep 0.1; done
  echo "$BACKEND did not start" >&2; exit 1
}
stop() { kill -TERM "$SERVER"; wait "$SERVER" || true; }
cpu() { awk '{sub(/.*\) /, ""); print ($12 + $13) / 100}' "/proc/$1/stat"; }
clicks() { curl -s "http://127.0.0.1:$((PORT + 2))/metrics" | awk '/^shorty_clicks_total/ {s += $2} END {print s + 0}'; }

echo "=== one hot link, wrk -c50 keep-alive, $DURATION: server count vs wrk"
start "$tmp/hot"
code=$("$BIN/shorty" -s "127.0.0.1:$PORT" shorten https://example.com/hot | sed 's#.*/##')
out=$(wrk -t1 -c50 -d"$DURATION" "http://127.0.0.1:$((PORT + 1))/$code")
sent=$(echo "$out" | awk '/requests in/ {print $1}')
sleep 0.5
echo "wrk completed $sent requests; server counted $(clicks) clicks (wrk stops with up to 50 requests in flight: answered and counted, not read)"
stop

declare -A PER
for mode in keep-alive close; do
  for stats in on off; do
    start "$tmp/cpu-$mode-$stats" --stats "$stats"
    code=$("$BIN/shorty" -s "127.0.0.1:$PORT" shorten https://example.com/cpu | sed 's#.*/##')
    header=()
    [ "$mode" = close ] && header=(-H "Connection: close")
    before=$(cpu "$SERVER")
    out=$(wrk -t1 -c50 -d"$DURATION" "${header[@]}" "http://127.0.0.1:$((PORT + 1))/$code")
    after=$(cpu "$SERVER")
    n=$(echo "$out" | awk '/requests in/ {print $1}')
    PER[$mode-$stats]=$(awk -v b="$before" -v a="$after" -v n="$n" 'BEGIN { printf "%.3f", (a - b) * 1e6 / n }')
    echo "$mode, --stats $stats: $n redirects, ${PER[$mode-$stats]} CPU s per million"
    stop
  done
  awk -v on="${PER[$mode-on]}" -v off="${PER[$mode-off]}" -v m="$mode" \
    'BEGIN { printf "%s: stats on / off = %.3f x\n", m, on / off }'
done
