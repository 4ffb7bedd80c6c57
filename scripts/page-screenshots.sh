#!/usr/bin/env bash
# Screenshots of the web page for docs/ and the README (issue 22), taken
# with headless Chromium (`apt-get install chromium`) from a real server:
#   docs/page.png       the page on a phone-sized screen
#   docs/link-chart.png a link's page with its click chart (a link made
#                       through POST /api/v1/links, clicked, flushed)
# Usage: scripts/page-screenshots.sh [SERVER_BINARY]   (run from the repo root)
set -euo pipefail
bin=${1:-target/debug/shorty-uring}
chromium=${CHROMIUM:-chromium}
work=$(mktemp -d)
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
base="http://127.0.0.1:$port"
"$bin" --listen 127.0.0.1:0 --http "127.0.0.1:$port" --admin off --threads 1 \
  --data-dir "$work/data" >"$work/server.log" 2>&1 &
server=$!
trap 'kill "$server" 2>/dev/null; wait "$server" 2>/dev/null; rm -rf "$work"' EXIT
for _ in $(seq 100); do curl -sf -o /dev/null "$base/healthz" && break; sleep 0.1; done

shot() { # FILE URL: the page after its script's requests settled
  "$chromium" --headless=new --no-sandbox --disable-gpu --hide-scrollbars \
    --user-data-dir="$work/profile" --window-size=412,1000 --virtual-time-budget=5000 \
    --screenshot="$1" "$2" 2>/dev/null
  echo "wrote $1"
}

shot docs/page.png "$base/"
if curl -sf -o /dev/null -H 'Content-Type: application/json' \
    -d '{"url":"https://example.com/a/long/path","slug":"Demo123"}' "$base/api/v1/links"; then
  for _ in $(seq 7); do curl -s -o /dev/null "$base/Demo123"; done
  curl -s -o /dev/null -H 'Referer: https://news.example/' "$base/Demo123"
  sleep 2 # the statistics flush every second
  shot docs/link-chart.png "$base/#/links/Demo123"
else
  echo "POST /api/v1/links does not work here: no docs/link-chart.png" >&2
  exit 1
fi
