#!/usr/bin/env bash
# Measures the click statistics figures the README quotes (issue 20), in one
# run, against release builds:
#   1. the statistics store: LINKS links (default 1,000,000) clicked CLICKS
#      times each (3) over a simulated month at RATE clicks per flush
#      (5,000), through the server's own store API (`shorty`:
#      shorty_runtime::stats::StatsDb) and the two candidates it was chosen
#      from (STORES="shorty fjall redb"): flush cost per second of traffic,
#      disk bytes per link, memory added, one link's 30-day hourly series
#      read time (median, p99);
#   2. one hot link under `wrk -c50` (keep-alive): the server's click count
#      (shorty_clicks_total, then the durable store after a clean stop)
#      against wrk's request count;
#   3. redirect CPU per request with --stats on and --stats off, keep-alive
#      and one connection per click (wrk -H 'Connection: close'): both
#      servers run at once, `--threads 1` pinned to CPU 0, wrk pinned to
#      CPU 1; ROUNDS interleaved rounds (on/off order alternating), server
#      CPU from /proc/PID/stat; the ratio per round, its median and spread.
# Needs `wrk` (apt-get install wrk). Usage: scripts/bench-stats.sh [backend]
# (SKIP_STORES=1: only the server figures; DURATION=5s per wrk run;
# ROUNDS=5.)
set -euo pipefail
cd "$(dirname "$0")/.."
BACKEND=${1:-shorty-uring}
cargo build --release --quiet -p shorty-stats-bench -p "shorty-server-${BACKEND#shorty-}" -p shorty-client
BIN=target/release
PORT=${PORT:-$((20000 + RANDOM % 20000))}
DURATION=${DURATION:-5s}
ROUNDS=${ROUNDS:-5}
TCK=$(getconf CLK_TCK)
SERVER_CPU=${SERVER_CPU:-0}
LOAD_CPU=${LOAD_CPU:-1}
tmp=$(mktemp -d)
PIDS=()
cleanup() {
  for pid in "${PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  # Each server removes its lock and files as it stops: wait for them.
  for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
  rm -rf "$tmp"
}
trap cleanup EXIT

if [ -z "${SKIP_STORES:-}" ]; then
  echo "=== statistics stores: LINKS=${LINKS:-1000000} CLICKS=${CLICKS:-3} RATE=${RATE:-5000}"
  for store in ${STORES:-shorty}; do
    STATS_BENCH_DIR=$tmp "$BIN/shorty-stats-bench" "$store"
  done
fi

# start NAME PORT ARGS...: a server on PORT (framed), PORT+1 (HTTP),
# PORT+2 (admin), pinned to SERVER_CPU; its pid in PID_<NAME>.
start() {
  local name=$1 port=$2; shift 2
  local dir="$tmp/$name"
  rm -rf "$dir"
  taskset -c "$SERVER_CPU" "$BIN/$BACKEND" --threads 1 --listen "127.0.0.1:$port" \
    --http "127.0.0.1:$((port + 1))" --admin "127.0.0.1:$((port + 2))" \
    --data-dir "$dir" --log-level warn "$@" &
  local pid=$!
  PIDS+=("$pid")
  printf -v "PID_$name" '%s' "$pid"
  for _ in $(seq 100); do
    "$BIN/shorty" -s "127.0.0.1:$port" ping >/dev/null 2>&1 && return
    sleep 0.1
  done
  echo "$BACKEND did not start" >&2
  exit 1
}
stop() { kill -TERM "$1"; wait "$1" || true; }
ticks() { awk '{sub(/.*\) /, ""); print $12 + $13}' "/proc/$1/stat"; }
clicks() { curl -s "http://127.0.0.1:$1/metrics" | awk '/^shorty_clicks_total/ {s += $2} END {print s + 0}'; }
shorten() { "$BIN/shorty" -s "127.0.0.1:$1" shorten "$2" | sed 's#.*/##'; }
load() { # url [wrk args]
  local url=$1; shift
  taskset -c "$LOAD_CPU" wrk -t1 -c50 -d"$DURATION" "$@" "$url" | awk '/requests in/ {print $1}'
}

echo "=== one hot link, wrk -c50 keep-alive, $DURATION: server count vs wrk"
start hot "$PORT"
code=$(shorten "$PORT" https://example.com/hot)
sent=$(load "http://127.0.0.1:$((PORT + 1))/$code")
sleep 0.5
counted=$(clicks $((PORT + 2)))
stop "$PID_hot"
stored=$("$BIN/$BACKEND" stats --data-dir "$tmp/hot" "$code" | grep '^{' |
  sed 's/.*"total":\([0-9]*\).*/\1/')
echo "wrk completed $sent requests; server counted $counted clicks, $stored in the store after a clean stop" \
  "(wrk stops with up to 50 requests in flight: answered and counted, not read by wrk)"

echo "=== redirect CPU per request, --stats on vs off: $ROUNDS interleaved rounds of $DURATION," \
  "server --threads 1 on CPU $SERVER_CPU, wrk on CPU $LOAD_CPU"
ON=$((PORT + 10))
OFF=$((PORT + 20))
start on "$ON" --stats on
start off "$OFF" --stats off
code_on=$(shorten "$ON" https://example.com/cpu)
code_off=$(shorten "$OFF" https://example.com/cpu)
# run SERVER-NAME PORT CODE MODE: CPU µs per redirect.
run() {
  local pid_var="PID_$1" header=()
  [ "$4" = close ] && header=(-H "Connection: close")
  local before after n
  before=$(ticks "${!pid_var}")
  n=$(load "http://127.0.0.1:$(($2 + 1))/$3" "${header[@]}")
  after=$(ticks "${!pid_var}")
  awk -v b="$before" -v a="$after" -v n="$n" -v t="$TCK" 'BEGIN { printf "%.3f", (a - b) / t * 1e6 / n }'
}
for mode in keep-alive close; do
  ratios=()
  for round in $(seq "$ROUNDS"); do
    if [ $((round % 2)) = 1 ]; then
      on=$(run on "$ON" "$code_on" "$mode")
      off=$(run off "$OFF" "$code_off" "$mode")
    else
      off=$(run off "$OFF" "$code_off" "$mode")
      on=$(run on "$ON" "$code_on" "$mode")
    fi
    ratio=$(awk -v a="$on" -v b="$off" 'BEGIN { printf "%.3f", a / b }')
    ratios+=("$ratio")
    echo "$mode round $round: on $on µs, off $off µs per redirect: $ratio x"
  done
  printf '%s\n' "${ratios[@]}" | sort -n | awk -v m="$mode" '
    { r[NR] = $1 }
    END { printf "%s: stats on / off median %.3f x (min %.3f, max %.3f, %d rounds)\n",
          m, r[int((NR + 1) / 2)], r[1], r[NR], NR }'
done
echo "on-server clicks counted: $(clicks $((ON + 2))) (its redirects; the off server: $(clicks $((OFF + 2))))"
