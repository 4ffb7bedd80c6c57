#!/usr/bin/env bash
# Shorty over a Redis Cluster: one node, then two nodes at once (one per
# backend), each under its own `shorty bench`, against a 3-primary,
# 3-replica cluster on this machine (AOF, appendfsync always). Prints
# requests/s, the Shorty nodes' CPU per million requests (and, of it, the
# store thread's: the cost of handing requests to the Redis client), and
# the cluster's CPU per million requests. RESOLVE runs with the nodes'
# caches off, so every request reaches the cluster.
# Needs redis-server and redis-cli. Usage: scripts/bench-cluster.sh
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --quiet -p shorty-server-uring -p shorty-server-glommio -p shorty-client
BIN=$PWD/target/release
TMP=$(mktemp -d)
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$TMP"; }
trap cleanup EXIT
ticks=$(getconf CLK_TCK)
cpu() { local t=0 p; for p in "$@"; do t=$(awk -v t="$t" -v hz="$ticks" '{sub(/.*\) /, ""); print t + ($12 + $13) / hz}' "/proc/$p/stat"); done; echo "$t"; }
thread_cpu() { # pid name
  local t
  for t in /proc/"$1"/task/*; do
    if [ "$(cat "$t/comm")" = "$2" ]; then awk -v hz="$ticks" '{sub(/.*\) /, ""); print ($12 + $13) / hz}' "$t/stat"; return; fi
  done
  echo 0
}

# The cluster.
REDIS=()
ports=()
for i in 0 1 2 3 4 5; do
  port=$((7100 + i))
  ports+=("127.0.0.1:$port")
  mkdir -p "$TMP/r$i"
  redis-server --port "$port" --bind 127.0.0.1 --cluster-enabled yes --cluster-config-file nodes.conf \
    --cluster-node-timeout 1000 --appendonly yes --appendfsync always --save "" \
    --dir "$TMP/r$i" --logfile "$TMP/r$i/log" --daemonize no >/dev/null &
  REDIS+=($!); PIDS+=($!)
done
for p in "${ports[@]}"; do until redis-cli -p "${p#*:}" ping >/dev/null 2>&1; do sleep 0.1; done; done
redis-cli --cluster create "${ports[@]}" --cluster-replicas 1 --cluster-yes >/dev/null
until redis-cli -p 7100 cluster info | grep -q cluster_state:ok; do sleep 0.2; done
sleep 3 # replicas finish their first sync
SEEDS="redis://$(IFS=,; echo "${ports[*]}")"

NODE=
node() { # backend port -> $NODE
  "$BIN/$1" --listen "127.0.0.1:$2" --http "127.0.0.1:$(($2 + 1))" --admin off --data-dir "$TMP/$1-$2" \
    --store "$SEEDS" --cache-bytes 0 --log-level warn >/dev/null 2>"$TMP/$1.log" &
  NODE=$!
  PIDS+=("$NODE")
  until "$BIN/shorty" -s "127.0.0.1:$2" ping >/dev/null 2>&1; do sleep 0.1; done
}
load() { # port op -> ok count
  "$BIN/shorty" -s "127.0.0.1:$1" bench --json --mode pipeline -c 50 --depth 16 -d 10s --op "$2" 2>/dev/null \
    | python3 -c 'import json,sys; print(json.load(sys.stdin)["ok"])'
}

node shorty-uring 9900
A=$NODE
echo "| nodes | op | requests/s (all nodes) | Shorty CPU s per million | of it, store threads | cluster CPU s per million |"
echo "|---|---|---:|---:|---:|---:|"
for op in shorten resolve; do
  b=$(cpu "$A"); bs=$(thread_cpu "$A" shorty-store); rb=$(cpu "${REDIS[@]}")
  n=$(load 9900 "$op")
  a=$(cpu "$A"); as=$(thread_cpu "$A" shorty-store); ra=$(cpu "${REDIS[@]}")
  awk -v n="$n" -v sa="$a" -v sb="$b" -v ta="$as" -v tb="$bs" -v ra="$ra" -v rb="$rb" -v op="$op" \
    'BEGIN { printf "| 1 (uring) | %s | %.0f | %.2f | %.2f | %.2f |\n", op, n / 10, (sa - sb) * 1e6 / n, (ta - tb) * 1e6 / n, (ra - rb) * 1e6 / n }'
done
node shorty-glommio 9910
B=$NODE
for op in shorten resolve; do
  b=$(cpu "$A" "$B"); bs=$(awk -v x="$(thread_cpu "$A" shorty-store)" -v y="$(thread_cpu "$B" shorty-store)" 'BEGIN { print x + y }'); rb=$(cpu "${REDIS[@]}")
  load 9900 "$op" >"$TMP/n1" &
  l1=$!
  n2=$(load 9910 "$op")
  wait "$l1"
  n=$(( $(cat "$TMP/n1") + n2 ))
  a=$(cpu "$A" "$B"); as=$(awk -v x="$(thread_cpu "$A" shorty-store)" -v y="$(thread_cpu "$B" shorty-store)" 'BEGIN { print x + y }'); ra=$(cpu "${REDIS[@]}")
  awk -v n="$n" -v sa="$a" -v sb="$b" -v ta="$as" -v tb="$bs" -v ra="$ra" -v rb="$rb" -v op="$op" \
    'BEGIN { printf "| 2 (uring + glommio) | %s | %.0f | %.2f | %.2f | %.2f |\n", op, n / 10, (sa - sb) * 1e6 / n, (ta - tb) * 1e6 / n, (ra - rb) * 1e6 / n }'
done
