#!/usr/bin/env bash
# Per core, at the floor (issue 23): server CPU seconds per million HTTP
# redirects for Shorty's two backends, nginx, and null servers that answer
# a 302 and do nothing else (`bench-floor/`: raw io_uring, tokio, tokio-uring),
# then Shorty against Redis on pipelined RESOLVE and durable SHORTEN.
#
# Every server runs one thread pinned to CPU 0 (shorty --threads 1, nginx
# worker_processes 1, Redis); every load generator is pinned to CPU 1
# (wrk -t1 -c50, shorty bench, redis-benchmark). Server CPU is user +
# system time from /proc/PID/stat, before and after each load (the
# generator's own CPU is not counted). HTTP is measured keep-alive and with
# `Connection: close` on every request (a connection per request, the
# seed's pattern). Each cell is the median of ROUNDS rounds (default 3);
# each round measures every server in turn, so drift on a shared machine
# hits all of them. The helpers (servers, loads, /proc, medians) are
# scripts/bench-peers.sh's, sourced.
#
# Needs: taskset, wrk, nginx, redis-server, redis-benchmark, python3.
# Usage: [ROUNDS=3] [ONLY=REGEX] [REDIS_ROWS=0|REGEX] scripts/bench-floor.sh [N]
#   N scales the request counts and wrk's 5 s (default 1); ONLY keeps the
#   HTTP servers whose key matches (keys: null-uring null-uring-deferred
#   null-uring-coop null-uring-epoll null-uring-plain nginx nginx-deferred
#   null-tokio null-tokio-uring-plain null-tokio-uring shorty-uring-undeferred
#   shorty-uring shorty-glommio; ONLY=none skips the HTTP
#   table); REDIS_ROWS=0 skips the Redis rows, REDIS_ROWS=shorten (or
#   resolve) keeps only that row.
set -euo pipefail
BUILD_ALSO="-p shorty-bench-floor"
# shellcheck source=scripts/bench-peers.sh
source "$(dirname "${BASH_SOURCE[0]}")/bench-peers.sh" "${1:-1}"

PIN_SERVER="taskset -c 0"
PIN_LOAD="taskset -c 1"
THREADS_ARG="--threads 1"
NGINX_WORKERS=1
NULL=
floor_cleanup() {
  [ -n "$NULL" ] && kill "$NULL" 2>/dev/null
  cleanup
}
trap floor_cleanup EXIT

# One null server under wrk; prints its CPU s per million.
null_http() { # binary [ring-mode [more args...]]
  local port=$((PORT + 8)) line
  # An io_uring server's listener outlives its process for a moment (the
  # ring's teardown is asynchronous): wait for the last one's to go.
  for _ in $(seq 100); do
    [ -z "$(ss -Hltn "sport = :$port")" ] && break
    sleep 0.05
  done
  # shellcheck disable=SC2086
  $PIN_SERVER "$BIN/$1" "127.0.0.1:$port" ${2:+--ring "$2"} "${@:3}" >"$TMP/null.out" 2>>"$TMP/server.log" &
  NULL=$!
  for _ in $(seq 100); do
    line=$(head -1 "$TMP/null.out")
    [ -n "$line" ] && break
    sleep 0.05
  done
  # A server that said it listens and died at once (e.g. its ring setup
  # refused with ENOMEM on a busy machine) fails the run, not the cell.
  sleep 0.1
  if [ -z "$line" ] || ! kill -0 "$NULL" 2>/dev/null; then
    echo "$1 did not start" >&2; cat "$TMP/server.log" >&2; exit 1
  fi
  wrk_load "http://127.0.0.1:$port/x" "$NULL"
  kill "$NULL"; wait "$NULL" 2>/dev/null || true
  NULL=
}

KEYS=(null-uring null-uring-deferred null-uring-coop null-uring-epoll null-uring-plain nginx nginx-deferred
  null-tokio null-tokio-uring-plain null-tokio-uring shorty-uring-undeferred shorty-uring shorty-glommio)
declare -A LABEL=(
  [null-uring]="null, raw io_uring (COOP_TASKRUN + SINGLE_ISSUER + DEFER_TASKRUN, multishot accept/recv, buffer ring)"
  [null-uring-deferred]="same, accepts deferred (TCP_DEFER_ACCEPT 1 s)"
  [null-uring-coop]="same, no DEFER_TASKRUN"
  [null-uring-epoll]="same, waiting in epoll_wait on the ring (tokio-uring's park)"
  [null-uring-plain]="same, plain ring (no setup flags)"
  [nginx]="nginx \`return 302\`, one worker"
  [nginx-deferred]="same, \`listen ... deferred\` (TCP_DEFER_ACCEPT 1 s)"
  [null-tokio]="null, tokio (epoll)"
  [null-tokio-uring-plain]="null, tokio-uring 0.5 as shipped (plain ring)"
  [null-tokio-uring]="same + COOP_TASKRUN + SINGLE_ISSUER"
  [shorty-uring-undeferred]="shorty-uring --threads 1 --defer-accept 0s"
  [shorty-uring]="**shorty-uring --threads 1** (defers accepts 1 s, the default)"
  [shorty-glommio]="**shorty-glommio --threads 1**"
)
declare -A CMD=(
  [null-uring]="null_http null-uring defer"
  [null-uring-deferred]="null_http null-uring defer --defer-accept"
  [null-uring-coop]="null_http null-uring coop"
  [null-uring-epoll]="null_http null-uring epoll"
  [null-uring-plain]="null_http null-uring plain"
  [nginx]="http_nginx"
  [nginx-deferred]="http_nginx deferred"
  [null-tokio]="null_http null-tokio"
  [null-tokio-uring-plain]="null_http null-tokio-uring plain"
  [null-tokio-uring]="null_http null-tokio-uring coop"
  [shorty-uring-undeferred]="http_shorty shorty-uring --defer-accept 0s"
  [shorty-uring]="http_shorty shorty-uring"
  [shorty-glommio]="http_shorty shorty-glommio"
)
SELECTED=()
for key in "${KEYS[@]}"; do
  [[ $key =~ ${ONLY:-.} ]] && SELECTED+=("$key")
done

declare -A CELLS=()
for _ in $(seq "$((${#SELECTED[@]} > 0 ? ROUNDS : 0))"); do
  for mode in keep-alive close; do
    if [ "$mode" = close ]; then WRK_ARGS=(-H "Connection: close"); else WRK_ARGS=(); fi
    for key in "${SELECTED[@]}"; do
      CELLS[$key,$mode]+="$(eval "${CMD[$key]}") "
    done
  done
done
WRK_ARGS=()

declare -A MED=()
for key in "${SELECTED[@]}"; do
  for mode in keep-alive close; do
    # shellcheck disable=SC2086
    MED[$key,$mode]=$(median ${CELLS[$key,$mode]})
  done
done
of() { # key mode -> the median, or empty when not measured
  echo "${MED[$1,$2]:-}"
}
vs() { # key other mode -> ratio, or - when either is missing
  local a b
  a=$(of "$1" "$3"); b=$(of "$2" "$3")
  if [ -n "$a" ] && [ -n "$b" ]; then ratio "$a" "$b"; else echo -; fi
}
# key other mode -> the median over rounds of key / other within one round
# (both measured minutes apart at most), or - when either is missing: a
# slow stretch of the host that hits one round hits both sides of its
# ratio, so this moves less between runs than the ratio of two medians.
paired() {
  local -a a b r=()
  local i
  read -ra a <<<"${CELLS[$1,$3]:-}"
  read -ra b <<<"${CELLS[$2,$3]:-}"
  if [ ${#a[@]} -eq 0 ] || [ ${#a[@]} -ne ${#b[@]} ]; then echo -; return; fi
  for i in "${!a[@]}"; do r+=("$(ratio "${a[$i]}" "${b[$i]}")"); done
  median "${r[@]}"
}
both() { # key other mode -> "median ratio (paired P)"
  echo "$(vs "$@") (paired $(paired "$@"))"
}

if [ ${#SELECTED[@]} -gt 0 ]; then
echo "HTTP 302, one server thread on CPU 0, wrk -t1 -c50 on CPU 1, server CPU s per 1M requests, median of $ROUNDS (cells: every round's value in brackets):"
echo
echo "| server | keep-alive | / null io_uring | / nginx | Connection: close | / null io_uring | / nginx | / null, deferred | / nginx, deferred |"
echo "|---|---:|---:|---:|---:|---:|---:|---:|---:|"
for key in "${SELECTED[@]}"; do
  printf '| %s | %s [%s] | %s | %s | %s [%s] | %s | %s | %s | %s |\n' "${LABEL[$key]}" \
    "$(of "$key" keep-alive)" "$(echo ${CELLS[$key,keep-alive]})" \
    "$(vs "$key" null-uring keep-alive)" "$(vs "$key" nginx keep-alive)" \
    "$(of "$key" close)" "$(echo ${CELLS[$key,close]})" \
    "$(vs "$key" null-uring close)" "$(vs "$key" nginx close)" \
    "$(vs "$key" null-uring-deferred close)" "$(vs "$key" nginx-deferred close)"
done
echo
echo "Goals (issue 23), ratio of medians (paired: median of the rounds' own ratios):"
echo "shorty-uring / null io_uring: keep-alive $(both shorty-uring null-uring keep-alive) (<= 1.10), close $(both shorty-uring null-uring close) (<= 1.15);"
echo "  close like for like: deferred / deferred $(both shorty-uring null-uring-deferred close), undeferred / undeferred $(both shorty-uring-undeferred null-uring close);"
echo "shorty-uring / nginx: keep-alive $(both shorty-uring nginx keep-alive), close $(both shorty-uring nginx close) (<= 0.95);"
echo "  close like for like: deferred / deferred $(both shorty-uring nginx-deferred close), undeferred / undeferred $(both shorty-uring-undeferred nginx close);"
echo "shorty-glommio / shorty-uring: keep-alive $(both shorty-glommio shorty-uring keep-alive), close $(both shorty-glommio shorty-uring close) (<= 1.15)."
echo "The runtime's share: null tokio-uring / null io_uring, keep-alive $(both null-tokio-uring null-uring keep-alive); shorty-uring / null tokio-uring $(both shorty-uring null-tokio-uring keep-alive)."
fi

if [ "${REDIS_ROWS:-1}" != 0 ]; then
  echo
  echo "Against Redis (same pinning), median of $ROUNDS; goals: uring / peer <= 0.85, glommio / uring <= 1.15:"
  echo
  echo "| scenario | shorty-uring | shorty-glommio | peer | uring / peer | glommio / peer | glommio / uring |"
  echo "|---|---:|---:|---|---:|---:|---:|"
  if [[ resolve =~ ${REDIS_ROWS:-.} ]]; then
    row "pipelined RESOLVE" "Redis GET -P 16:" \
      "resolve_shorty shorty-uring 16" "resolve_shorty shorty-glommio 16" "resolve_redis 16"
  fi
  if [[ shorten =~ ${REDIS_ROWS:-.} ]]; then
    row "pipelined SHORTEN, --sync always" "Redis SET -P 16, appendfsync always:" \
      "shorten_shorty shorty-uring always" "shorten_shorty shorty-glommio always" "shorten_redis always"
  fi
fi
