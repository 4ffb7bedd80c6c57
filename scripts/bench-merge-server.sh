#!/usr/bin/env bash
# Measures the merge through a running server (issue 19), the way an
# operator meets it: LINKS links imported (`import` of generated JSON
# lines), the server started (`--threads 1 --sync never`, pinned to CPU
# $SERVER_CPU, merges only on SIGUSR1), every other link DELETEd through
# the wire (scripts/delete_many.py), then:
#   - disk bytes of the data directory and the key directory's bytes
#     (`shorty_keydir_bytes`) after the import, after the deletes, after
#     the merge and after a restart;
#   - the merge's time (SIGUSR1 until `shorty_log_merges_total` last moved) and
#     its I/O rate (bytes read = the sealed segments' bytes before, bytes
#     written = after, over that time);
#   - pipelined RESOLVE of live codes (`shorty bench`, CPU $CLIENT_CPU)
#     per second without a merge (before it and after it) and during it:
#     the mean over the seconds that fell wholly inside the merge, against
#     the mean of the runs without (before and after, so a drift of the
#     machine's load shows as their difference);
#   - counted, per phase: the serving thread's (`shorty-core-0`) and the
#     merge thread's CPU seconds and context switches (voluntary: it
#     waited; involuntary: it was preempted, e.g. by the merge), and the
#     process's disk reads and writes (/proc/PID/io read_bytes and
#     write_bytes: what reached the disk, not the page cache).
# The merge thread shares CPU $SERVER_CPU with the serving thread (the
# whole process is pinned): as on a one-core server.
# Usage: LINKS=2000000 [RATE=bytes/s] [THRESHOLD=30%] [NICE=10] [IDLE=10] [DURING=s] scripts/bench-merge-server.sh   (needs ~300 B of disk
# per link in $DIR, twice over during the merge)
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_INCREMENTAL=${CARGO_INCREMENTAL:-0}
# BIN=target/debug (with those built) tries the script out quickly.
BIN=${BIN:-target/release}
[ "$BIN" != target/release ] || cargo build --release --quiet -p shorty-server-uring -p shorty-client
LINKS=${LINKS:-2000000}
IDLE=${IDLE:-10}
SERVER_CPU=${SERVER_CPU:-0}
CLIENT_CPU=${CLIENT_CPU:-1}
PORT=${PORT:-9500}
DIR=${DIR:-${TMPDIR:-/tmp}}
# Deleting every other link leaves a sealed segment about half dead; the
# default --merge-threshold 50% may just miss it, so the bench asks for less.
THRESHOLD=${THRESHOLD:-30%}
RATE=${RATE:-33554432}
# --merge-nice (the server's default 19; NICE=0: the merge thread competes
# as an equal).
NICE=${NICE:-19}
tmp=$(mktemp -d "$DIR/bench-merge-server.XXXXXX")
SERVER=
bench=
# Stops the background RESOLVE run: the subshell and the `shorty bench` it
# started (killing the subshell alone left the generator running, so until
# this fix every 'after' run below shared the server with the 'during' run's
# generator, which nobody counted).
stop_bench() {
  [ -n "$bench" ] || return 0
  pkill -TERM -P "$bench" 2>/dev/null || true
  kill -TERM "$bench" 2>/dev/null || true
}
cleanup() {
  stop_bench
  [ -n "$SERVER" ] && kill -TERM "$SERVER" 2>/dev/null && wait "$SERVER" 2>/dev/null
  rm -rf "$tmp"
}
trap cleanup EXIT
data=$tmp/data
wire=127.0.0.1:$PORT
admin=127.0.0.1:$((PORT + 2))

echo "=== $LINKS links: generating and importing"
python3 - "$LINKS" "$tmp" <<'EOF'
import sys
n, out = int(sys.argv[1]), sys.argv[2]
alphabet = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
def code(v):
    s = ""
    for _ in range(7):
        v, d = divmod(v, 62)
        s = alphabet[d] + s
    return s
with open(f"{out}/links.jsonl", "w") as all_, open(f"{out}/live.jsonl", "w") as live:
    for i in range(n):
        # Spread over the key space, as the generator's permutation does.
        c = code((i * 2654435761) % 62**7)
        all_.write(f'{{"code":"{c}","url":"https://example.com/landing/{i}?utm_source=bench"}}\n')
        if i % 2:
            live.write(f'{{"code":"{c}"}}\n')
EOF
start_s=$(date +%s)
"$BIN/shorty-uring" import --data-dir "$data" "$tmp/links.jsonl"
echo "import: $(($(date +%s) - start_s)) s"

start() {
  taskset -c "$SERVER_CPU" "$BIN/shorty-uring" --listen "$wire" --http "127.0.0.1:$((PORT + 1))" \
    --admin "$admin" --data-dir "$data" --threads 1 --sync never --log-level warn \
    --merge-interval 0s --merge-threshold "$THRESHOLD" --merge-rate "$RATE" \
    --merge-nice "$NICE" "$@" &
  SERVER=$!
  for _ in $(seq 600); do "$BIN/shorty" -s "$wire" ping >/dev/null 2>&1 && return; sleep 0.1; done
  echo "server did not start" >&2
  exit 1
}
metric() { curl -s "http://$admin/metrics" | awk -v m="$1" '$1 == m || index($1, m "{") == 1 {s += $2} END {print s + 0}'; }
disk() { du -sb "$data" | cut -f1; }
report() { echo "$1: disk $(disk) B, key directory $(metric shorty_keydir_bytes) B, dead $(metric shorty_log_dead_bytes) B"; }
# RESOLVEs per second of a run, one line a second on standard error.
resolve_run() { # seconds file
  taskset -c "$CLIENT_CPU" "$BIN/shorty" -s "$wire" bench --op resolve --mode pipeline -c 10 --depth 16 \
    --codes "$tmp/live.jsonl" -d "${1}s" --json 2>"$2" >/dev/null
}

start
report "imported"
python3 scripts/delete_many.py "$wire" "$tmp/links.jsonl" 8 64
sleep 1
report "deleted half"

# One line of counters: per thread (core-0, merge) the CPU time and the
# time spent runnable but waiting for a CPU (/proc/.../schedstat, ns),
# voluntary and involuntary switches; the process's read_bytes and
# write_bytes.
counters() {
  local line="" t comm
  for comm in shorty-core-0 shorty-merge; do
    for t in /proc/"$SERVER"/task/*; do
      [ "$(cat "$t/comm" 2>/dev/null)" = "$comm" ] || continue
      line="$line $(awk '{print $1, $2}' "$t/schedstat")"
      line="$line $(awk '/^voluntary_ctxt_switches/ {v=$2} /^nonvoluntary_ctxt_switches/ {n=$2} END {print v, n}' "$t/status")"
    done
  done
  line="$line $(awk '/^read_bytes/ {r=$2} /^write_bytes/ {w=$2} END {print r, w}' /proc/"$SERVER"/io)"
  echo "$line"
}
# Prints the counters' change over a phase; with a rate file, the serving
# thread's CPU per RESOLVE (the server's own cost, which the machine's
# load does not change).
phase() { # name before after seconds [rates]
  python3 - "$@" <<'PY'
import re, sys
name, a, b, secs = sys.argv[1], sys.argv[2].split(), sys.argv[3].split(), float(sys.argv[4])
d = [int(y) - int(x) for x, y in zip(a, b)]
line = (f"{name} ({secs:.1f} s): core-0 {d[0] / 1e9:.1f} CPU s, waited {d[1] / 1e9:.2f} s for a CPU,"
        f" {d[2]} voluntary / {d[3]} involuntary switches; merge {d[4] / 1e9:.1f} CPU s, waited"
        f" {d[5] / 1e9:.2f} s, {d[6]} / {d[7]}; disk read {d[8] / 1e6:.1f} MB, written {d[9] / 1e6:.1f} MB")
if len(sys.argv) > 5:
    n = sum(int(m.group(1)) for m in (re.search(r"/second: (\d+)$", l.strip()) for l in open(sys.argv[5])) if m)
    if n:
        line += f"; {n} RESOLVEs, core-0 {d[0] / n / 1e3:.2f} us CPU each"
print(line)
PY
}

disk_before=$(disk)
echo "=== RESOLVE without a merge, ${IDLE}s"
c0=$(counters)
resolve_run "$IDLE" "$tmp/idle.txt"
phase "without (before)" "$c0" "$(counters)" "$IDLE" "$tmp/idle.txt"
merges_before=$(metric shorty_log_merges_total)
echo "=== SIGUSR1: merge, RESOLVE during it"
resolve_run "${DURING:-$((IDLE * 6))}" "$tmp/during.txt" &
bench=$!
bench_start=$(date +%s.%N)
sleep 1
merge_start=$(date +%s.%N)
c1=$(counters)
kill -USR1 "$SERVER"
# The merge thread merges what its one check planned (until round 3
# session 8 it checked every segment's dead bytes again after each merge:
# seconds of CPU at 10M links): done once a merge has completed and
# neither the count nor the merge thread's CPU time has moved for 2 s.
merge_cpu() {
  local t
  for t in /proc/"$SERVER"/task/*; do
    [ "$(cat "$t/comm" 2>/dev/null)" = shorty-merge ] && awk '{print $1}' "$t/schedstat"
  done
  return 0
}
last=$merges_before
last_cpu=$(merge_cpu)
merged=
merge_end=
stable=0
while kill -0 "$bench" 2>/dev/null; do
  sleep 0.2
  now=$(metric shorty_log_merges_total)
  cpu=$(merge_cpu)
  [ "$now" != "$merges_before" ] && merged=1
  busy_cpu=$last_cpu
  last_cpu=$cpu
  # Its idle loop wakes every 100 ms: busy means over 5 ms of CPU a 0.2 s.
  if [ "$now" != "$last" ] || [ $((cpu - busy_cpu)) -gt 5000000 ]; then
    last=$now
    merge_end=$(date +%s.%N)
    stable=0
  elif [ -n "$merged" ]; then
    stable=$((stable + 1))
    [ "$stable" -ge 10 ] && break
  fi
done
[ -n "$merged" ] || merge_end=
c2=$(counters)
stop_bench
wait "$bench" 2>/dev/null || true
[ -n "$merge_end" ] || { echo "no merge completed while the reads ran" >&2; exit 1; }
phase "during (SIGUSR1 until the merge thread has been idle for 2 s)" "$c1" "$c2" \
  "$(python3 -c "import sys; print(float(sys.argv[2]) - float(sys.argv[1]))" "$merge_start" "$(date +%s.%N)")" \
  "$tmp/during.txt"
report "merged ($((last - merges_before)) merges, $(metric shorty_log_merge_reclaimed_bytes_total) B reclaimed)"
echo "=== RESOLVE without a merge again (after it), ${IDLE}s"
c3=$(counters)
resolve_run "$IDLE" "$tmp/after.txt"
phase "without (after)" "$c3" "$(counters)" "$IDLE" "$tmp/after.txt"
cat "$tmp/after.txt" >>"$tmp/idle.txt"
python3 - "$tmp/idle.txt" "$tmp/during.txt" "$bench_start" "$merge_start" "$merge_end" "$disk_before" "$(disk)" "$tmp/after.txt" <<'EOF'
import re, statistics, sys
def rates(path):
    return [int(m.group(1)) for m in (re.search(r"/second: (\d+)$", l.strip()) for l in open(path)) if m]
idle, during, again = rates(sys.argv[1]), rates(sys.argv[2]), rates(sys.argv[8])
b, s, e = map(float, sys.argv[3:6])
# Second k of the run covers [b + k, b + k + 1): keep those wholly inside the merge.
inside = [r for k, r in enumerate(during) if b + k >= s and b + k + 1 <= e]
before, after = int(sys.argv[6]), int(sys.argv[7])
print(f"merge took {e - s:.1f} s (to within 0.2 s); I/O at most {before / (e - s) / 1e6:.1f} MB/s read"
      f" + {after / (e - s) / 1e6:.1f} MB/s written (whole directory before / after over the merge's time)")
first = idle[: len(idle) - len(again)]
print(f"RESOLVE/s without a merge: mean {statistics.mean(idle):.0f} over {len(idle)} s"
      f" (min {min(idle)}, max {max(idle)}; before {statistics.mean(first):.0f},"
      f" after {statistics.mean(again):.0f})")
if inside:
    m = statistics.mean(inside)
    print(f"RESOLVE/s during the merge: mean {m:.0f} over {len(inside)} s (min {min(inside)}, max {max(inside)})")
    print(f"during / without: {m / statistics.mean(idle):.3f}x"
          f" (/ before: {m / statistics.mean(first):.3f}x, / after: {m / statistics.mean(again):.3f}x)")
else:
    print("the merge ended within a second: no whole second inside it")
EOF
kill -TERM "$SERVER"; wait "$SERVER" || true; SERVER=
start
report "restarted"
