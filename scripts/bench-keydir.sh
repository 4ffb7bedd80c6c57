#!/usr/bin/env bash
# The key directory's figures, for each size N (default 2,000,000 and
# 10,000,000 links of ~60-byte URLs), on shorty-uring:
#   - anonymous memory (RssAnon) per link after a restart, raw and net of an
#     empty server's, with the cache empty (the key directory alone);
#   - restart time: exec to the first answered PING, and recovery's own time;
#   - RESOLVE throughput: hot (1,000 codes, from the cache) and cold (codes
#     spread over all N links, cache off: every RESOLVE reads its URL from
#     the log; with the page cache warm, and after dropping it);
#   - Redis 7's memory for N keys of 60-byte values (DEBUG POPULATE), in the
#     same run.
# Usage: scripts/bench-keydir.sh [N...]. Needs redis-server; root to drop
# the page cache (skipped otherwise).
set -euo pipefail
cd "$(dirname "$0")/.."
SIZES=("$@")
[ ${#SIZES[@]} -gt 0 ] || SIZES=(2000000 10000000)
cargo build --release --quiet -p shorty-server-uring -p shorty-client
BIN=$PWD/target/release
TMP=$(mktemp -d -p "${TMPDIR:-/var/tmp}")
PORT=9700
SERVER=
cleanup() {
  [ -n "$SERVER" ] && kill "$SERVER" 2>/dev/null
  redis-cli -p $((PORT + 5)) shutdown nosave >/dev/null 2>&1 || true
  rm -rf "$TMP"
}
trap cleanup EXIT

start() { # data-dir extra-args...
  local dir=$1; shift
  local t0=$(date +%s.%N)
  "$BIN/shorty-uring" --listen "127.0.0.1:$PORT" --http "127.0.0.1:$((PORT + 1))" --admin off \
    --data-dir "$dir" --log-level info "$@" 2>"$TMP/server.log" &
  SERVER=$!
  until "$BIN/shorty" -s "127.0.0.1:$PORT" ping >/dev/null 2>&1; do sleep 0.01; done
  STARTED=$(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN { printf "%.2f", b - a }')
}
stop() { kill -TERM "$SERVER"; wait "$SERVER" 2>/dev/null || true; SERVER=; }
anon() { awk '/^RssAnon/ {print $2 * 1024}' "/proc/$1/status"; }
rate() { # bench args... -> requests/s
  "$BIN/shorty" -s "127.0.0.1:$PORT" bench --json "$@" 2>/dev/null \
    | python3 -c 'import json,sys; print(round(json.load(sys.stdin)["per_second"]))'
}
drop_page_cache() { sync; echo 3 >/proc/sys/vm/drop_caches 2>/dev/null; }

echo "| links | RssAnon per link (net of an empty server) | restart: exec to first PING (recovery) | RESOLVE hot | RESOLVE cold, page cache warm | RESOLVE cold, page cache dropped | Redis 7, per key |"
echo "|---:|---:|---:|---:|---:|---:|---:|"
for N in "${SIZES[@]}"; do
  dir=$TMP/data-$N
  rm -rf "$dir"
  start "$dir" --sync never --cache-bytes 0
  empty=$(anon "$SERVER")
  "$BIN/shorty" -s "127.0.0.1:$PORT" bench --mode pipeline --burst -c 50 --depth 64 -n "$N" --op shorten >/dev/null 2>&1
  stop
  "$BIN/shorty-uring" export --data-dir "$dir" "$TMP/codes.jsonl" 2>/dev/null
  links=$(wc -l <"$TMP/codes.jsonl")

  # Restart, the cache off: memory is the key directory's.
  drop_page_cache
  start "$dir" --cache-bytes 0
  recovery=$(sed -n 's/.*recovered the log.*elapsed_ms=\([0-9]*\).*/\1/p' "$TMP/server.log" | head -1)
  sleep 1
  used=$(anon "$SERVER")
  per_link=$(awk -v u="$used" -v n="$links" 'BEGIN { printf "%.1f", u / n }')
  net=$(awk -v u="$used" -v e="$empty" -v n="$links" 'BEGIN { printf "%.1f", (u - e) / n }')
  cold_warm=$(rate --mode pipeline -c 50 --depth 16 -d 10s --op resolve --codes "$TMP/codes.jsonl")
  drop_page_cache
  cold_dropped=$(rate --mode pipeline -c 50 --depth 16 -d 10s --op resolve --codes "$TMP/codes.jsonl")
  stop
  start "$dir"
  hot=$(rate --mode pipeline -c 50 --depth 16 -d 10s --op resolve)
  stop

  redis-server --port $((PORT + 5)) --save "" --appendonly no --enable-debug-command yes \
    --daemonize yes --logfile "$TMP/redis.log" --dir "$TMP"
  until redis-cli -p $((PORT + 5)) ping >/dev/null 2>&1; do sleep 0.05; done
  rpid=$(redis-cli -p $((PORT + 5)) info server | sed -n 's/^process_id:\([0-9]*\).*/\1/p' | tr -d '\r')
  rempty=$(awk '/^VmRSS/ {print $2 * 1024}' "/proc/$rpid/status")
  redis-cli -p $((PORT + 5)) debug populate "$N" key 60 >/dev/null
  rfull=$(awk '/^VmRSS/ {print $2 * 1024}' "/proc/$rpid/status")
  redis-cli -p $((PORT + 5)) shutdown nosave >/dev/null 2>&1 || true
  redis_per=$(awk -v a="$rfull" -v b="$rempty" -v n="$N" 'BEGIN { printf "%.1f", (a - b) / n }')

  printf '| %s | %s B (%s B) | %s s (%s ms) | %s/s | %s/s | %s/s | %s B |\n' \
    "$links" "$per_link" "$net" "$STARTED" "$recovery" "$hot" "$cold_warm" "$cold_dropped" "$redis_per"
  rm -rf "$dir"
done
