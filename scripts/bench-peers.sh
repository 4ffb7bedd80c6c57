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
# Server CPU is user + system time from /proc/PID/stat (all threads; for
# nginx, master and workers), read before and after each load, so the load
# generator's own CPU (it shares the cores) is not counted. Pipelined loads
# use --burst (send 16, wait for 16, as redis-benchmark -P does).
#
# Needs: redis-server, redis-benchmark, nginx, wrk, python3 (apt-get install
# redis-server nginx wrk). Usage: scripts/bench-peers.sh [N] where N scales
# the request counts (default 1).
set -euo pipefail
cd "$(dirname "$0")/.."
SCALE=${1:-1}
cargo build --release --quiet -p shorty-server-uring -p shorty-server-glommio -p shorty-client
BIN=$PWD/target/release
TMP=$(mktemp -d)
PORT=9600
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

SERVER=
start_shorty() { # backend extra-args...
  local backend=$1; shift
  rm -rf "$TMP/data"
  "$BIN/$backend" --listen "127.0.0.1:$PORT" --http "127.0.0.1:$((PORT + 1))" --admin off \
    --data-dir "$TMP/data" --log-level warn "$@" 2>>"$TMP/server.log" &
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
}

# shorty bench against $SERVER; prints CPU s per million.
shorty_load() { # bench-args...
  local b a ok
  b=$(cpu "$SERVER")
  ok=$("$BIN/shorty" -s "127.0.0.1:$PORT" bench --json "$@" 2>/dev/null \
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
  redis-server --port $((PORT + 5)) --dir "$TMP/redis" --save "" --maxclients 20000 \
    --logfile "$TMP/redis.log" "$@" &
  REDIS=$!
  for _ in $(seq 100); do redis-cli -p $((PORT + 5)) ping >/dev/null 2>&1 && return; sleep 0.1; done
  echo "redis-server did not start" >&2; exit 1
}
stop_redis() { redis-cli -p $((PORT + 5)) shutdown nosave >/dev/null 2>&1 || true; wait "$REDIS" 2>/dev/null || true; }
redis_load() { # n redis-benchmark-args...
  local n=$1 b a; shift
  b=$(cpu "$REDIS")
  redis-benchmark -p $((PORT + 5)) -q -n "$n" "$@" >/dev/null
  a=$(cpu "$REDIS")
  per_million "$b" "$a" "$n"
}

row() { # scenario uring glommio peer-name peer
  printf '| %s | %s | %s | %s %s | %s | %s | %s |\n' "$1" "$2" "$3" "$4" "$5" \
    "$(ratio "$2" "$5")" "$(ratio "$3" "$5")" "$(ratio "$3" "$2")"
}

echo "| scenario | shorty-uring | shorty-glommio | peer | uring / peer | glommio / peer | glommio / uring |"
echo "|---|---:|---:|---|---:|---:|---:|"

# 1, 2: pipelined SHORTEN, without and with fsync.
for sync in never always; do
  declare -A r=()
  for backend in shorty-uring shorty-glommio; do
    start_shorty "$backend" --sync "$sync"
    r[$backend]=$(shorty_load --mode pipeline --burst -c 50 --depth 16 -n "$N_PIPE" --op shorten)
    stop_shorty
  done
  if [ "$sync" = never ]; then
    start_redis --appendonly no
    peer=$(redis_load "$N_PIPE" -t set -P 16 -c 50 -r 100000000)
    label="Redis SET -P 16, no AOF"
  else
    start_redis --appendonly yes --appendfsync always
    peer=$(redis_load "$N_PIPE" -t set -P 16 -c 50 -r 100000000)
    label="Redis SET -P 16, appendfsync always"
  fi
  stop_redis
  row "pipelined SHORTEN, --sync $sync" "${r[shorty-uring]}" "${r[shorty-glommio]}" "$label:" "$peer"
done

# 3, 4: RESOLVE pipelined and request/response (1,000 hot codes).
declare -A p=() q=()
for backend in shorty-uring shorty-glommio; do
  start_shorty "$backend"
  p[$backend]=$(shorty_load --mode pipeline --burst -c 50 --depth 16 -n "$N_PIPE" --op resolve)
  q[$backend]=$(shorty_load --mode pipeline -c 50 --depth 1 -n "$N_RR" --op resolve)
  stop_shorty
done
start_redis --appendonly no
redis-benchmark -p $((PORT + 5)) -q -t set -r 1000 -n 100000 >/dev/null
peer_p=$(redis_load "$N_PIPE" -t get -P 16 -c 50 -r 1000)
peer_q=$(redis_load "$N_RR" -t get -c 50 -r 1000)
stop_redis
row "pipelined RESOLVE" "${p[shorty-uring]}" "${p[shorty-glommio]}" "Redis GET -P 16:" "$peer_p"
row "RESOLVE request/response" "${q[shorty-uring]}" "${q[shorty-glommio]}" "Redis GET:" "$peer_q"

# 5: HTTP redirects with keep-alive.
declare -A h=()
for backend in shorty-uring shorty-glommio; do
  start_shorty "$backend"
  code=$("$BIN/shorty" -s "127.0.0.1:$PORT" shorten https://example.com/wrk-target | sed 's#.*/##')
  b=$(cpu "$SERVER")
  n=$(wrk -t1 -c50 -d10s "http://127.0.0.1:$((PORT + 1))/$code" | awk '/requests in/ {print $1}')
  a=$(cpu "$SERVER")
  h[$backend]=$(per_million "$b" "$a" "$n")
  stop_shorty
done
cat >"$TMP/nginx.conf" <<EOF
worker_processes auto;
pid $TMP/nginx.pid;
error_log $TMP/nginx-error.log;
events { worker_connections 4096; }
http {
  access_log off;
  server {
    listen 127.0.0.1:$((PORT + 6));
    location / { return 302 https://example.com/wrk-target; }
  }
}
EOF
nginx -c "$TMP/nginx.conf" -p "$TMP" -g 'daemon on;'
sleep 0.5
master=$(cat "$TMP/nginx.pid")
pids="$master $(pgrep -P "$master" | tr '\n' ' ')"
# shellcheck disable=SC2086
b=$(cpu $pids)
n=$(wrk -t1 -c50 -d10s "http://127.0.0.1:$((PORT + 6))/x" | awk '/requests in/ {print $1}')
# shellcheck disable=SC2086
a=$(cpu $pids)
kill "$master"
row "HTTP redirects, keep-alive (wrk -t1 -c50)" "${h[shorty-uring]}" "${h[shorty-glommio]}" "nginx return 302:" "$(per_million "$b" "$a" "$n")"

# 6: connect, one SHORTEN, close; 64 at a time. Shorty with --sync always.
declare -A c=()
for backend in shorty-uring shorty-glommio; do
  start_shorty "$backend"
  c[$backend]=$(shorty_load --mode connect -c 64 -n "$N_CONN" --op shorten)
  stop_shorty
done
"$BIN/shorty-baseline" "127.0.0.1:$((PORT + 7))" 2>/dev/null &
BASE=$!
for _ in $(seq 50); do "$BIN/shorty" -s "127.0.0.1:$((PORT + 7))" ping >/dev/null 2>&1 && break; sleep 0.1; done
b=$(cpu "$BASE")
ok=$("$BIN/shorty" -s "127.0.0.1:$((PORT + 7))" bench --json --mode connect -c 64 -n "$N_CONN" --op shorten 2>/dev/null \
  | python3 -c 'import json,sys; print(json.load(sys.stdin)["ok"])')
a=$(cpu "$BASE")
kill "$BASE"
row "connect, SHORTEN, close (64 at a time)" "${c[shorty-uring]}" "${c[shorty-glommio]}" "tokio + LengthDelimitedCodec:" "$(per_million "$b" "$a" "$ok")"

# 7: memory per idle connection, 10,000 idle (kB of RSS per connection).
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
declare -A m=()
for backend in shorty-uring shorty-glommio; do
  start_shorty "$backend"
  m[$backend]=$(idle "$SERVER" "$PORT")
  stop_shorty
done
start_redis --appendonly no
peer=$(idle "$REDIS" $((PORT + 5)))
stop_redis
row "bytes of RSS per idle connection (10,000 idle)" "${m[shorty-uring]}" "${m[shorty-glommio]}" "Redis:" "$peer"
