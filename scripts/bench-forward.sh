#!/usr/bin/env bash
# Measures what query forwarding costs a redirect (issue 24: forwarding on
# within 1.03x of off), side by side in one run: two servers of this build,
# `on` (the default, `--forward-query true`) and `off`
# (`--forward-query false`), each `--threads 1 --sync never` pinned to CPU
# $SERVER_CPU, wrk (keep-alive, one thread, 50 connections) pinned to CPU
# $CLIENT_CPU. Every request carries the same three-pair campaign query
# ($QUERY), so both servers parse the same bytes and only the merge and the
# longer Location differ. Two links: a target with a query of its own
# (`?id=7`: forwarding looks for clashing names) and one without.
# Rounds are interleaved (each round runs every workload once, the order
# rotated), so a load change on a shared machine hits all of them alike.
# Figures per workload: server CPU seconds per million redirects (utime +
# stime from /proc/PID/stat over the run / requests completed) and, with
# perf, the server's user-space instructions per redirect (`perf stat -e
# instructions:u -p PID`, far less noisy). Prints each round, then the
# on/off ratios' median, min and max.
# Usage: ROUNDS=7 DURATION=5 scripts/bench-forward.sh
#   (BIN=target/debug with the binaries built tries it out quickly.)
# Needs wrk (apt-get install wrk), taskset; perf is optional (PERF=0: off).
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_INCREMENTAL=${CARGO_INCREMENTAL:-0}
BIN=${BIN:-target/release}
[ "$BIN" != target/release ] || cargo build --release --quiet -p shorty-server-uring -p shorty-client
SERVER=${SERVER:-$BIN/shorty-uring}
ROUNDS=${ROUNDS:-7}
DURATION=${DURATION:-5}
SERVER_CPU=${SERVER_CPU:-0}
CLIENT_CPU=${CLIENT_CPU:-1}
PORT=${PORT:-$((20000 + RANDOM % 20000))}
QUERY=${QUERY:-utm_source=mail&utm_medium=email&utm_campaign=dec}
TCK=$(getconf CLK_TCK)
PERF=${PERF:-1}
# perf exits 0 with `<not supported>` where the counters are not there (VMs).
if [ "$PERF" = 1 ] && ! perf stat -e instructions:u -x, true 2>&1 | grep -q '^[0-9]'; then
  echo "perf cannot count instructions here: CPU time only" >&2
  PERF=0
fi
command -v wrk >/dev/null || { echo "needs wrk (apt-get install wrk)" >&2; exit 1; }
tmp=$(mktemp -d)
PIDS=()
cleanup() {
  for pid in "${PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
  rm -rf "$tmp"
}
trap cleanup EXIT

declare -A PID WIRE HTTP
start() { # name extra-args...
  local name=$1
  shift
  local wire=$PORT http=$((PORT + 1)) admin=$((PORT + 2))
  PORT=$((PORT + 3))
  taskset -c "$SERVER_CPU" "$SERVER" --listen "127.0.0.1:$wire" --http "127.0.0.1:$http" \
    --admin "127.0.0.1:$admin" --data-dir "$tmp/$name" --threads 1 --sync never --log-level warn "$@" &
  PID[$name]=$!
  PIDS+=($!)
  WIRE[$name]=$wire
  HTTP[$name]=$http
  for _ in $(seq 100); do "$BIN/shorty" -s "127.0.0.1:$wire" ping >/dev/null 2>&1 && return; sleep 0.1; done
  echo "$name did not start" >&2
  exit 1
}
# User + system CPU seconds of a process.
cpu() { awk -v tck="$TCK" '{sub(/.*\) /, ""); print ($12 + $13) / tck}' "/proc/$1/stat"; }

start on
start off --forward-query false
declare -A CODE
for s in on off; do
  CODE[$s.query]=$("$BIN/shorty" -s "127.0.0.1:${WIRE[$s]}" shorten "https://example.com/a/landing-page?id=7" | sed 's#.*/##')
  CODE[$s.plain]=$("$BIN/shorty" -s "127.0.0.1:${WIRE[$s]}" shorten "https://example.com/a/landing-page" | sed 's#.*/##')
done
# The merge is really made (and not made with forwarding off).
for s in on off; do
  curl -s -o /dev/null -w "$s: %{redirect_url}\n" "http://127.0.0.1:${HTTP[$s]}/${CODE[$s.query]}?$QUERY"
done

# One workload: "CPU-s-per-million instructions-per-redirect" of redirects
# to link `kind` on server `s`.
redirects() { # s kind
  local s=$1 kind=$2 before after out n instr=0
  local url="http://127.0.0.1:${HTTP[$s]}/${CODE[$s.$kind]}?$QUERY"
  before=$(cpu "${PID[$s]}")
  if [ "$PERF" = 1 ]; then
    out=$(perf stat -e instructions:u -x, -o "$tmp/perf" -p "${PID[$s]}" -- \
      taskset -c "$CLIENT_CPU" wrk -t1 -c50 -d"${DURATION}s" "$url")
    instr=$(awk -F, '/instructions/ {print $1}' "$tmp/perf")
  else
    out=$(taskset -c "$CLIENT_CPU" wrk -t1 -c50 -d"${DURATION}s" "$url")
  fi
  after=$(cpu "${PID[$s]}")
  n=$(echo "$out" | awk '/requests in/ {print $1}')
  awk -v b="$before" -v a="$after" -v n="$n" -v i="$instr" 'BEGIN { printf "%.3f %.0f\n", (a - b) * 1e6 / n, i / n }'
}

results=$tmp/results
: >"$results"
for round in $(seq "$ROUNDS"); do
  jobs=(on.query off.query on.plain off.plain)
  shift_by=$(((round - 1) % ${#jobs[@]}))
  jobs=("${jobs[@]:shift_by}" "${jobs[@]:0:shift_by}")
  line="round $round:"
  for job in "${jobs[@]}"; do
    read -r cpu_s instr < <(redirects "${job%.*}" "${job#*.}")
    echo "$round $job $cpu_s $instr" >>"$results"
    line="$line $job=${cpu_s}s/M,${instr}i"
  done
  echo "$line (load $(cut -d' ' -f1 /proc/loadavg))"
done

python3 - "$results" "$PERF" <<'EOF'
import sys, statistics
rows, perf = {}, sys.argv[2] == "1"
for line in open(sys.argv[1]):
    r, job, c, i = line.split()
    rows.setdefault(int(r), {})[job] = (float(c), float(i))
def show(name, num, den, k):
    rs = [rows[r][num][k] / rows[r][den][k] for r in sorted(rows)]
    print(f"  {name:<44} median {statistics.median(rs):.3f}x  min {min(rs):.3f}  max {max(rs):.3f}"
          f"  (rounds: {' '.join(f'{x:.3f}' for x in rs)})")
print("medians over rounds (server CPU s per million redirects; user instructions per redirect):")
for job in sorted({j for r in rows.values() for j in r}):
    c = statistics.median(r[job][0] for r in rows.values())
    i = statistics.median(r[job][1] for r in rows.values())
    print(f"  {job:<10} {c:8.3f} s/M" + (f"  {i:8.0f} instr" if perf else ""))
print("forwarding on / off:")
show("server CPU, target with a query (?id=7)", "on.query", "off.query", 0)
show("server CPU, target without a query", "on.plain", "off.plain", 0)
if perf:
    show("user instructions, target with a query", "on.query", "off.query", 1)
    show("user instructions, target without a query", "on.plain", "off.plain", 1)
EOF
