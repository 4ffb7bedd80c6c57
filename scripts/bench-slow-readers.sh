#!/usr/bin/env bash
# Memory under peers that never read: 300 connections pipeline RESOLVEs of
# an 8 KB URL as fast as the server takes them and read nothing. Each
# connection may hold at most --max-output-bytes (256 KiB) of replies, then
# the server stops reading it (and closes it after --write-timeout). Prints
# each backend's RSS growth; the bound is 300 x 256 KiB = 75 MiB plus what
# the kernel's socket buffers hold (not RSS).
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --quiet -p shorty-server-uring -p shorty-server-glommio -p shorty-client
BIN=$PWD/target/release
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
PORT=9800
rss() { awk '/^VmRSS/ {print $2 * 1024}' "/proc/$1/status"; }
for backend in shorty-uring shorty-glommio; do
  "$BIN/$backend" --listen "127.0.0.1:$PORT" --http "127.0.0.1:$((PORT + 1))" --admin off \
    --data-dir "$TMP/$backend" --log-level warn &
  pid=$!
  until "$BIN/shorty" -s "127.0.0.1:$PORT" ping >/dev/null 2>&1; do sleep 0.1; done
  long="https://example.com/$(head -c 8000 /dev/zero | tr '\0' x)"
  code=$("$BIN/shorty" -s "127.0.0.1:$PORT" shorten "$long" | sed 's#.*/##')
  "$BIN/shorty" -s "127.0.0.1:$PORT" resolve "$code" >/dev/null # cached from now on
  before=$(rss "$pid")
  coproc PEERS { python3 scripts/slow_readers.py 127.0.0.1 "$PORT" "$code" 300 5; }
  read -r sent <&"${PEERS[0]}"
  after=$(rss "$pid")
  kill "$PEERS_PID" 2>/dev/null || true
  wait "$PEERS_PID" 2>/dev/null || true
  echo "$backend: 300 peers that never read sent $((sent / 1048576)) MiB of RESOLVEs; RSS grew by $(( (after - before) / 1048576 )) MiB"
  kill -TERM "$pid"; wait "$pid" 2>/dev/null || true
done
