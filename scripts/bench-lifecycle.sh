#!/usr/bin/env bash
# Measures what issues 19 and 24 ask of the per-request cost, side by side
# in one run, interleaved (every round runs every workload once, so a load
# change on a shared machine hits all of them alike):
#   a. HTTP redirect of a URL with a visitor's query (`?utm_source=mail`)
#      with forwarding on (the default) vs `--forward-query false`;
#   c. key directory bytes per generated link (`shorty_keydir_bytes` after
#      importing KEYDIR_LINKS generated links) on this build vs $OLD;
#   b. HTTP redirect (no query) and pipelined RESOLVE on this build vs an
#      older build ($OLD, e.g. the last commit before the lifecycle); this
#      build also with `--stats off`, to tell the lifecycle checks from the
#      click counting.
# Every server is `--threads 1 --sync never`, pinned to CPU $SERVER_CPU;
# the generators (wrk, `shorty bench`) run on CPU $CLIENT_CPU. The cost is
# server CPU seconds per million requests (utime + stime from
# /proc/PID/stat over the run, divided by the requests completed), not
# throughput: a shared machine moves the rate far more than the CPU a
# request takes. Prints each round's figures and ratios, then each ratio's
# median, min and max over the rounds.
# Usage: OLD=/path/to/old/shorty-uring ROUNDS=7 DURATION=5 scripts/bench-lifecycle.sh
#   Building OLD: git worktree add ../shorty-old <commit> &&
#   (cd ../shorty-old && cargo build --release -p shorty-server-uring)
# Needs wrk (apt-get install wrk) and taskset.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_INCREMENTAL=${CARGO_INCREMENTAL:-0}
# BIN=target/debug (with those built) tries the script out quickly.
BIN=${BIN:-target/release}
[ "$BIN" != target/release ] || cargo build --release --quiet -p shorty-server-uring -p shorty-client
NEW=${NEW:-$BIN/shorty-uring}
OLD=${OLD:-}
ROUNDS=${ROUNDS:-7}
DURATION=${DURATION:-5}
SERVER_CPU=${SERVER_CPU:-0}
CLIENT_CPU=${CLIENT_CPU:-1}
PORT=${PORT:-9400}
KEYDIR_LINKS=${KEYDIR_LINKS:-500000}
command -v wrk >/dev/null || { echo "needs wrk (apt-get install wrk)" >&2; exit 1; }
tmp=$(mktemp -d)
PIDS=()
cleanup() {
  for pid in "${PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$tmp"
}
trap cleanup EXIT

declare -A PID WIRE HTTP ADMIN
start() { # name binary extra-args...
  local name=$1 bin=$2; shift 2
  local wire=$PORT http=$((PORT + 1)) admin=$((PORT + 2))
  PORT=$((PORT + 3))
  ADMIN[$name]=$admin
  taskset -c "$SERVER_CPU" "$bin" --listen "127.0.0.1:$wire" --http "127.0.0.1:$http" --admin "127.0.0.1:$admin" \
    --data-dir "$tmp/$name" --threads 1 --sync never --log-level warn "$@" &
  PID[$name]=$!
  PIDS+=($!)
  WIRE[$name]=$wire
  HTTP[$name]=$http
  for _ in $(seq 100); do "$BIN/shorty" -s "127.0.0.1:$wire" ping >/dev/null 2>&1 && return; sleep 0.1; done
  echo "$name did not start" >&2
  exit 1
}
# User + system CPU seconds of a process (USER_HZ = 100).
cpu() { awk '{sub(/.*\) /, ""); print ($12 + $13) / 100}' "/proc/$1/stat"; }

# c. The same generated links imported into this build's directory and
# the old one's (codes spread over the key space as the generator's are).
python3 - "$KEYDIR_LINKS" "$tmp/links.jsonl" <<'EOF'
import sys
n, out = int(sys.argv[1]), sys.argv[2]
alphabet = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
with open(out, "w") as f:
    for i in range(n):
        v, c = (i * 2654435761) % 62**7, ""
        for _ in range(7):
            v, d = divmod(v, 62)
            c = alphabet[d] + c
        f.write(f'{{"code":"{c}","url":"https://example.com/landing/{i}"}}\n')
EOF
# Every server gets them, so that all serve from key directories alike.
for d in on off nostats; do "$NEW" import --data-dir "$tmp/$d" "$tmp/links.jsonl" >/dev/null; done
if [ -n "$OLD" ]; then "$OLD" import --data-dir "$tmp/old" "$tmp/links.jsonl" >/dev/null; fi
keydir() { curl -s "http://127.0.0.1:${ADMIN[$1]}/metrics" | awk '$1 == "shorty_keydir_bytes" {print $2}'; }

start on "$NEW"
start off "$NEW" --forward-query false
start nostats "$NEW" --stats off
SERVERS=(on off nostats)
if [ -n "$OLD" ]; then
  start old "$OLD"
  SERVERS+=(old)
fi
for s in on ${OLD:+old}; do
  k=$(keydir "$s")
  awk -v k="$k" -v n="$KEYDIR_LINKS" -v s="$s" \
    'BEGIN { printf "c. key directory, %s: %d B for %d imported links = %.2f B per link\n", s, k, n, k / n }'
done
declare -A CODE
for s in "${SERVERS[@]}"; do
  CODE[$s]=$("$BIN/shorty" -s "127.0.0.1:${WIRE[$s]}" shorten "https://example.com/a/landing-page?id=7" | sed 's#.*/##')
done

# Server CPU s per million redirects of `path` on server `s`.
redirects() { # s path
  local s=$1 path=$2 before after out n
  before=$(cpu "${PID[$s]}")
  out=$(taskset -c "$CLIENT_CPU" wrk -t1 -c50 -d"${DURATION}s" "http://127.0.0.1:${HTTP[$s]}$path")
  after=$(cpu "${PID[$s]}")
  n=$(echo "$out" | awk '/requests in/ {print $1}')
  awk -v b="$before" -v a="$after" -v n="$n" 'BEGIN { printf "%.3f", (a - b) * 1e6 / n }'
}
# Server CPU s per million pipelined RESOLVEs on server `s`.
resolves() { # s
  local s=$1
  taskset -c "$CLIENT_CPU" "$BIN/shorty" -s "127.0.0.1:${WIRE[$s]}" bench --op resolve --mode pipeline \
    -c 10 --depth 16 -d "${DURATION}s" --server-pid "${PID[$s]}" --json 2>/dev/null |
    python3 -c 'import json,sys; print("%.3f" % json.load(sys.stdin)["server_cpu_secs_per_million"])'
}

results=$tmp/results
: >"$results"
for round in $(seq "$ROUNDS"); do
  # Rotate the order each round, so no workload always runs first.
  jobs=("fwd_on" "fwd_off" "redirect_new" "redirect_nostats" "resolve_new" "resolve_nostats")
  [ -n "$OLD" ] && jobs+=("redirect_old" "resolve_old")
  shift_by=$(((round - 1) % ${#jobs[@]}))
  jobs=("${jobs[@]:shift_by}" "${jobs[@]:0:shift_by}")
  line="round $round:"
  for job in "${jobs[@]}"; do
    case $job in
      fwd_on) v=$(redirects on "/${CODE[on]}?utm_source=mail") ;;
      fwd_off) v=$(redirects off "/${CODE[off]}?utm_source=mail") ;;
      redirect_new) v=$(redirects on "/${CODE[on]}") ;;
      redirect_nostats) v=$(redirects nostats "/${CODE[nostats]}") ;;
      redirect_old) v=$(redirects old "/${CODE[old]}") ;;
      resolve_new) v=$(resolves on) ;;
      resolve_nostats) v=$(resolves nostats) ;;
      resolve_old) v=$(resolves old) ;;
    esac
    echo "$round $job $v" >>"$results"
    line="$line $job=$v"
  done
  echo "$line (server CPU s per million; load $(cut -d' ' -f1 /proc/loadavg))"
done

python3 - "$results" <<'EOF'
import sys, statistics
rows = {}
for line in open(sys.argv[1]):
    r, job, v = line.split()
    rows.setdefault(int(r), {})[job] = float(v)
def ratio(name, num, den):
    rs = [rows[r][num] / rows[r][den] for r in sorted(rows) if num in rows[r] and den in rows[r]]
    if not rs:
        return
    print(f"{name:<48} median {statistics.median(rs):.3f}x  min {min(rs):.3f}  max {max(rs):.3f}"
          f"  (per round: {' '.join(f'{x:.3f}' for x in rs)})")
print("server CPU s per million, median over rounds:")
for job in sorted({j for r in rows.values() for j in r}):
    print(f"  {job:<18} {statistics.median(r[job] for r in rows.values() if job in r):.3f}")
ratio("a. redirect with a query, forwarding on / off", "fwd_on", "fwd_off")
ratio("b. redirect, this build / old", "redirect_new", "redirect_old")
ratio("b. redirect, this build --stats off / old", "redirect_nostats", "redirect_old")
ratio("b. RESOLVE, this build / old", "resolve_new", "resolve_old")
ratio("b. RESOLVE, this build --stats off / old", "resolve_nostats", "resolve_old")
EOF
