#!/usr/bin/env bash
# Server CPU seconds per million requests: both Shorty backends and the
# usual stack, side by side, in one run, on this machine.
#
#   scenario                         Shorty load          peer
#   pipelined SHORTEN, no fsync      shorty bench -P16    Redis SET -P 16, no AOF
#   pipelined SHORTEN, fsync         --sync always        Redis SET -P 16, appendfsync always
#   pipelined RESOLVE                shorty bench -P16    Redis GET -P 16
#   RESOLVE request/response         50 connections       Redis GET, 50 connections
#   HTTP redirects, keep-alive       wrk -t1 -c50         nginx `return 302`
#   connect, SHORTEN, close          64 at a time         tokio + LengthDelimitedCodec (shorty-baseline)
#   memory per idle connection       10,000 idle          Redis, 10,000 idle
#
# Two tables. First every server on one thread (shorty --threads 1, nginx
# worker_processes 1, the tokio baseline on one worker; Redis always serves
# from one): the cost per core, like for like. Then every server on every
# core, its default: on this 2-core machine the load generator then shares a
# core with one of the server's threads, so each request also pays context
# switches and half-empty wake-ups, whatever the server.
#
# Server CPU is user + system time from /proc/PID/stat (all threads; for
# nginx, master and workers), read before and after each load, so the load
# generator's own CPU (it shares the cores) is not counted. Pipelined loads
# use --burst (send 16, wait for 16, as redis-benchmark -P does). Each cell
# is the median of ROUNDS runs (default 3), and each round measures every
# column of a row in turn, so drift on a shared machine hits all of them.
#
# Needs: redis-server, redis-benchmark, nginx, wrk, python3 (apt-get install
# redis-server nginx wrk). Usage: [ROUNDS=3] [TABLES=both|one|all]
# scripts/bench-peers.sh [N] where N scales the request counts (default 1).
#
# scripts/bench-floor.sh sources this file for its helpers (everything above
# the tables at the end): PIN_SERVER / PIN_LOAD (e.g. `taskset -c 0`) prefix
# every server and every load generator, WRK_ARGS adds arguments to wrk.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
SCALE=${1:-1}
ROUNDS=${ROUNDS:-3}
# One cargo invocation for everything a run needs (BUILD_ALSO: more
# packages), so features unify once and nothing is rebuilt twice.
# shellcheck disable=SC2086
cargo build --release --quiet -p shorty-server-uring -p shorty-server-glommio -p shorty-client ${BUILD_ALSO:-}
BIN=$PWD/target/release
TMP=$(mktemp -d)
PORT=${PORT:-9600}
cleanup() {
  redis-cli -p $((PORT + 5)) shutdown nosave >/dev/null 2>&1 || true
  [ -f "$TMP/nginx.pid" ] && kill "$(cat "$TMP/nginx.pid")" 2>/dev/null
  [ -n "${SERVER:-}" ] && kill "$SERVER" 2>/dev/null
  [ -n "${BASE:-}" ] && kill "$BASE" 2>/dev/null
  rm -rf "$TMP"
}
trap cleanup EXIT
N_PIPE=$((2000000 * SCALE))
N_RR=$((300000 * SCALE))
N_CONN=$((100000 * SCALE))
HTTP_SECONDS=$((5 * SCALE))

ticks=$(getconf CLK_TCK)
cpu() { # pid... -> CPU seconds, all of them together
  local total=0 p
  for p in "$@"; do
    total=$(awk -v t="$total" -v hz="$ticks" '{sub(/.*\) /, ""); print t + ($12 + $13) / hz}' "/proc/$p/stat")
  done
  echo "$total"
}
per_million() { awk -v b="$1" -v a="$2" -v n="$3" 'BEGIN { printf "%.2f", (a - b) * 1e6 / n }'; }
ratio() { awk -v x="$1" -v y="$2" 'BEGIN { if (y > 0) printf "%.2f", x / y; else print "-" }'; }
median() { # the middle value; for an even count, the mean of the two middle ones
  printf '%s\n' "$@" | sort -g | awk '{ v[NR] = $1 } END { m = int((NR + 1) / 2); if (NR % 2) print v[m]; else printf "%.2f\n", (v[m] + v[m + 1]) / 2 }'
}

PIN_SERVER=${PIN_SERVER:-}
PIN_LOAD=${PIN_LOAD:-}
WRK_ARGS=()

# Per-table settings (set by the table's caller).
THREADS_ARG=""
NGINX_WORKERS=auto
BASE_THREADS=""

SERVER=
start_shorty() { # backend extra-args...
  local backend=$1; shift
  rm -rf "$TMP/data"
  # shellcheck disable=SC2086
  $PIN_SERVER "$BIN/$backend" --listen "127.0.0.1:$PORT" --http "127.0.0.1:$((PORT + 1))" --admin off \
    --data-dir "$TMP/data" --log-level warn $THREADS_ARG "$@" >/dev/null 2>>"$TMP/server.log" &
  SERVER=$!
  for _ in $(seq 100); do "$BIN/shorty" -s "127.0.0.1:$PORT" ping >/dev/null 2>&1 && return; sleep 0.1; done
  echo "$backend did not start" >&2; exit 1
}
stop_shorty() {
  if ! kill -TERM "$SERVER" 2>/dev/null; then
    echo "the server died; its log:" >&2
    cat "$TMP/server.log" >&2
    exit 1
  fi
  wait "$SERVER" 2>/dev/null || true
  SERVER=
}

# shorty bench against $SERVER; prints CPU s per million.
shorty_load() { # bench-args...
  local b a ok
  b=$(cpu "$SERVER")
  # shellcheck disable=SC2086
  ok=$($PIN_LOAD "$BIN/shorty" -s "127.0.0.1:$PORT" bench --json "$@" 2>/dev/null \
    | python3 -c 'import json,sys; print(json.load(sys.stdin)["ok"])')
  a=$(cpu "$SERVER")
  per_million "$b" "$a" "$ok"
}

REDIS=
start_redis() { # redis-server args...
  rm -rf "$TMP/redis"; mkdir -p "$TMP/redis"
  if redis-cli -p $((PORT + 5)) ping >/dev/null 2>&1; then
    echo "port $((PORT + 5)) is taken by another redis-server" >&2; exit 1
  fi
  # shellcheck disable=SC2086
  $PIN_SERVER redis-server --port $((PORT + 5)) --dir "$TMP/redis" --save "" --maxclients 20000 \
    --logfile "$TMP/redis.log" "$@" >/dev/null &
  REDIS=$!
  for _ in $(seq 100); do redis-cli -p $((PORT + 5)) ping >/dev/null 2>&1 && return; sleep 0.1; done
  echo "redis-server did not start" >&2; exit 1
}
stop_redis() { redis-cli -p $((PORT + 5)) shutdown nosave >/dev/null 2>&1 || true; wait "$REDIS" 2>/dev/null || true; }
redis_load() { # n redis-benchmark-args...
  local n=$1 b a; shift
  b=$(cpu "$REDIS")
  # shellcheck disable=SC2086
  $PIN_LOAD redis-benchmark -p $((PORT + 5)) -q -n "$n" "$@" >/dev/null
  a=$(cpu "$REDIS")
  per_million "$b" "$a" "$n"
}

# wrk against a URL; prints the CPU s per million of the given pids.
wrk_load() { # url pid...
  local url=$1 b a n; shift
  b=$(cpu "$@")
  # shellcheck disable=SC2086
  n=$($PIN_LOAD wrk -t1 -c50 -d"${HTTP_SECONDS}s" ${WRK_ARGS[@]+"${WRK_ARGS[@]}"} "$url" \
    | awk '/requests in/ {print $1}')
  a=$(cpu "$@")
  per_million "$b" "$a" "$n"
}

# --- One measurement each: prints server CPU s per million requests. ---

shorten_shorty() { # backend sync
  start_shorty "$1" --sync "$2"
  shorty_load --mode pipeline --burst -c 50 --depth 16 -n "$N_PIPE" --op shorten
  stop_shorty
}
shorten_redis() { # sync
  if [ "$1" = never ]; then start_redis --appendonly no
  else start_redis --appendonly yes --appendfsync always; fi
  redis_load "$N_PIPE" -t set -P 16 -c 50 -r 100000000
  stop_redis
}
# 1,000 links made before the measured window (as Redis's keys are set
# before redis_load), their codes in $TMP/codes.jsonl for bench --codes:
# otherwise `bench --op resolve` makes them itself, and their SHORTENs and
# fsyncs land inside shorty_load's CPU window.
seed_codes() {
  seq 0 999 | sed 's#^#https://example.com/bench/#' \
    | "$BIN/shorty" -s "127.0.0.1:$PORT" shorten - \
    | sed 's#.*/##; s#.*#{"code":"&"}#' >"$TMP/codes.jsonl"
  [ "$(wc -l <"$TMP/codes.jsonl")" = 1000 ] || { echo "seeding codes failed" >&2; exit 1; }
}
resolve_shorty() { # backend depth
  start_shorty "$1"
  seed_codes
  if [ "$2" = 16 ]; then
    shorty_load --mode pipeline --burst -c 50 --depth 16 -n "$N_PIPE" --op resolve --codes "$TMP/codes.jsonl"
  else
    shorty_load --mode pipeline -c 50 --depth 1 -n "$N_RR" --op resolve --codes "$TMP/codes.jsonl"
  fi
  stop_shorty
}
resolve_redis() { # depth (1,000 hot keys, as shorty bench resolves 1,000 codes)
  start_redis --appendonly no
  redis-benchmark -p $((PORT + 5)) -q -t set -r 1000 -n 100000 >/dev/null
  if [ "$1" = 16 ]; then redis_load "$N_PIPE" -t get -P 16 -c 50 -r 1000
  else redis_load "$N_RR" -t get -c 50 -r 1000; fi
  stop_redis
}
http_shorty() { # backend [server args...]
  local code
  start_shorty "$@"
  code=$("$BIN/shorty" -s "127.0.0.1:$PORT" shorten https://example.com/wrk-target | sed 's#.*/##')
  wrk_load "http://127.0.0.1:$((PORT + 1))/$code" "$SERVER"
  stop_shorty
}
http_nginx() { # [deferred]: listen ... deferred (TCP_DEFER_ACCEPT, 1 s)
  local master pids
  cat >"$TMP/nginx.conf" <<EOF
worker_processes $NGINX_WORKERS;
pid $TMP/nginx.pid;
error_log $TMP/nginx-error.log;
events { worker_connections 4096; }
http {
  access_log off;
  # The default (1,000) closes every thousandth keep-alive connection.
  keepalive_requests 1000000000;
  server {
    listen 127.0.0.1:$((PORT + 6))${1:+ $1};
    location / { return 302 https://example.com/wrk-target; }
  }
}
EOF
  # shellcheck disable=SC2086
  $PIN_SERVER nginx -c "$TMP/nginx.conf" -p "$TMP" -g 'daemon on;' >/dev/null
  sleep 0.5
  master=$(cat "$TMP/nginx.pid")
  pids="$master $(pgrep -P "$master" | tr '\n' ' ')"
  # shellcheck disable=SC2086
  wrk_load "http://127.0.0.1:$((PORT + 6))/x" $pids
  kill "$master"
  while kill -0 "$master" 2>/dev/null; do sleep 0.1; done
  rm -f "$TMP/nginx.pid"
}
connect_shorty() { # backend sync
  start_shorty "$1" --sync "$2"
  shorty_load --mode connect -c 64 -n "$N_CONN" --op shorten
  stop_shorty
}
connect_baseline() {
  local b a ok
  # shellcheck disable=SC2086
  $PIN_SERVER "$BIN/shorty-baseline" "127.0.0.1:$((PORT + 7))" $BASE_THREADS >/dev/null 2>&1 &
  BASE=$!
  for _ in $(seq 50); do "$BIN/shorty" -s "127.0.0.1:$((PORT + 7))" ping >/dev/null 2>&1 && break; sleep 0.1; done
  b=$(cpu "$BASE")
  # shellcheck disable=SC2086
  ok=$($PIN_LOAD "$BIN/shorty" -s "127.0.0.1:$((PORT + 7))" bench --json --mode connect -c 64 -n "$N_CONN" --op shorten 2>/dev/null \
    | python3 -c 'import json,sys; print(json.load(sys.stdin)["ok"])')
  a=$(cpu "$BASE")
  kill "$BASE"; wait "$BASE" 2>/dev/null || true
  BASE=
  per_million "$b" "$a" "$ok"
}

# One row: ROUNDS rounds of (uring, glommio, peer), then the medians.
row() { # scenario peer-label uring-cmd glommio-cmd peer-cmd
  local scenario=$1 label=$2 u=() g=() p=() mu mg mp
  for _ in $(seq "$ROUNDS"); do
    u+=("$(eval "$3")")
    g+=("$(eval "$4")")
    p+=("$(eval "$5")")
  done
  mu=$(median "${u[@]}"); mg=$(median "${g[@]}"); mp=$(median "${p[@]}")
  printf '| %s | %s | %s | %s %s | %s | %s | %s |\n' "$scenario" "$mu" "$mg" "$label" "$mp" \
    "$(ratio "$mu" "$mp")" "$(ratio "$mg" "$mp")" "$(ratio "$mg" "$mu")"
}

table() {
  echo "| scenario | shorty-uring | shorty-glommio | peer | uring / peer | glommio / peer | glommio / uring |"
  echo "|---|---:|---:|---|---:|---:|---:|"
  row "pipelined SHORTEN, --sync never" "Redis SET -P 16, no AOF:" \
    "shorten_shorty shorty-uring never" "shorten_shorty shorty-glommio never" "shorten_redis never"
  row "pipelined SHORTEN, --sync always" "Redis SET -P 16, appendfsync always:" \
    "shorten_shorty shorty-uring always" "shorten_shorty shorty-glommio always" "shorten_redis always"
  row "pipelined RESOLVE" "Redis GET -P 16:" \
    "resolve_shorty shorty-uring 16" "resolve_shorty shorty-glommio 16" "resolve_redis 16"
  row "RESOLVE request/response" "Redis GET:" \
    "resolve_shorty shorty-uring 1" "resolve_shorty shorty-glommio 1" "resolve_redis 1"
  row "HTTP redirects, keep-alive (wrk -t1 -c50)" "nginx return 302:" \
    "http_shorty shorty-uring" "http_shorty shorty-glommio" "http_nginx"
  # Shorty with --sync always (the target's terms) and, like for like,
  # --sync never: the baseline keeps links in memory and never syncs.
  row "connect, SHORTEN, close (64 at a time)" "tokio + LengthDelimitedCodec:" \
    "connect_shorty shorty-uring always" "connect_shorty shorty-glommio always" "connect_baseline"
  row "same, --sync never" "tokio + LengthDelimitedCodec:" \
    "connect_shorty shorty-uring never" "connect_shorty shorty-glommio never" "connect_baseline"
}

# Memory per idle connection: bytes of RSS per connection, 10,000 idle.
rss() { awk '/^VmRSS/ {print $2}' "/proc/$1/status"; }
idle() { # pid port -> bytes per connection
  local pid=$1 port=$2 before after
  before=$(rss "$pid")
  coproc HOLD { python3 scripts/hold_connections.py 127.0.0.1 "$port" 10000; }
  read -r _ <&"${HOLD[0]}"
  sleep 2
  after=$(rss "$pid")
  kill "${HOLD_PID:-}" 2>/dev/null; wait "${HOLD_PID:-}" 2>/dev/null || true
  awk -v b="$before" -v a="$after" 'BEGIN { printf "%.0f", (a - b) * 1024 / 10000 }'
}
idle_shorty() { start_shorty "$1"; idle "$SERVER" "$PORT"; stop_shorty; }
idle_redis() { start_redis --appendonly no; idle "$REDIS" $((PORT + 5)); stop_redis; }

# Sourced (by scripts/bench-floor.sh): the helpers only.
[ "${BASH_SOURCE[0]}" = "$0" ] || return 0

if [ "${TABLES:-both}" != all ]; then
  echo "One server thread each (shorty --threads 1, nginx worker_processes 1, tokio 1 worker; Redis), median of $ROUNDS:"
  echo
  THREADS_ARG="--threads 1" NGINX_WORKERS=1 BASE_THREADS=1 table
  echo
fi
if [ "${TABLES:-both}" != one ]; then
  echo "Every server on every core (shorty and tokio: one thread per core, nginx worker_processes auto; Redis: one thread), median of $ROUNDS:"
  echo
  table
  ROUNDS=1 row "bytes of RSS per idle connection (10,000 idle)" "Redis:" \
    "idle_shorty shorty-uring" "idle_shorty shorty-glommio" "idle_redis"
fi
