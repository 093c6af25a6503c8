#!/usr/bin/env bash
# Side-by-side A/B of two rpcgate builds (or any two `rpcgate` binaries):
# both run standalone on core 0 at the same time, each driven by its own
# wrk on core 1, so whatever else the machine does hits both alike. Prints,
# per round, each one's req/s and CPU per request and the ratio B/A.
#
#   benches/ab_load.sh A_BINARY B_BINARY [SECONDS] [ROUNDS]   (defaults 8 3)
#
# A_ARGS and B_ARGS (optional) are more flags for each side, e.g.
# B_ARGS="--otlp-endpoint http://127.0.0.1:4318" to measure span export
# against a sink there (benches/otlp_sink.py). AB_PATH (default
# /hello/http/) is the path both are loaded with, and AB_HEADER (optional)
# one request header both get, e.g. AB_HEADER="Accept-Encoding: gzip".
# benches/ab_layers.sh uses these to price CORS, compression and the JSON
# access log.
#
# AB_H2=1 loads both over HTTP/2 (h2c, prior knowledge) with
# `h2load -c4 -m64` (Debian nghttp2-client, installed with apt if missing)
# instead of wrk over HTTP/1.1.
#
# e.g. keep a copy of target/release/rpcgate, rebuild, then compare. The
# absolute figures are lower than benches/load.sh's (two servers share one
# core); the ratio is what this is for. Loopback only, bounded by SECONDS.
set -euo pipefail
cd "$(dirname "$0")/.."
[ $# -ge 2 ] || { echo "usage: $0 A_BINARY B_BINARY [SECONDS] [ROUNDS]" >&2; exit 2; }
a_bin=$1; b_bin=$2; secs="${3:-8}"; rounds="${4:-3}"
. benches/support/harness.sh
need_tools wrk
if [ "${AB_H2:-0}" = 1 ] && ! command -v h2load >/dev/null; then
    echo "installing nghttp2-client (apt) for h2load..." >&2
    apt-get update -qq >/dev/null && apt-get install -y -qq nghttp2-client >/dev/null
fi
command -v taskset >/dev/null || { echo "ab_load.sh: taskset is missing (util-linux)" >&2; exit 1; }
# Builds whose standalone serves a locator admin API get one port each.
locator_admin() { if "$1" --help 2>/dev/null | grep -q -- --locator-admin; then echo "--locator-admin $2"; fi; }
taskset -c 0 "$a_bin" --listen 127.0.0.1:18180 --admin 127.0.0.1:19190 --locator 127.0.0.1:20153 \
    $(locator_admin "$a_bin" 127.0.0.1:20154) --log-level warn ${A_ARGS:-} >/dev/null 2>&1 &
a_pid=$!
taskset -c 0 "$b_bin" --listen 127.0.0.1:18280 --admin 127.0.0.1:19290 --locator 127.0.0.1:20253 \
    $(locator_admin "$b_bin" 127.0.0.1:20254) --log-level warn ${B_ARGS:-} >/dev/null 2>&1 &
b_pid=$!
trap 'kill $a_pid $b_pid 2>/dev/null || true' EXIT
path="${AB_PATH:-/hello/http/}"
wrk_header=()
[ -z "${AB_HEADER:-}" ] || wrk_header=(-H "$AB_HEADER")
wait_for_urls "http://127.0.0.1:18180$path" "http://127.0.0.1:18280$path"
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
hz=$(getconf CLK_TCK)
for _ in $(seq 1 "$rounds"); do
    a0=$(cpu_ticks $a_pid); b0=$(cpu_ticks $b_pid)
    if [ "${AB_H2:-0}" = 1 ]; then
        h2_header=()
        [ -z "${AB_HEADER:-}" ] || h2_header=(-H "$AB_HEADER")
        taskset -c 1 h2load -c4 -m64 -D "$secs" "${h2_header[@]}" "http://127.0.0.1:18180$path" >/tmp/rpcgate-ab.a 2>&1 &
        wa=$!
        taskset -c 1 h2load -c4 -m64 -D "$secs" "${h2_header[@]}" "http://127.0.0.1:18280$path" >/tmp/rpcgate-ab.b 2>&1 &
        wb=$!
    else
        taskset -c 1 wrk -t1 -c64 -d"${secs}s" "${wrk_header[@]}" "http://127.0.0.1:18180$path" >/tmp/rpcgate-ab.a &
        wa=$!
        taskset -c 1 wrk -t1 -c64 -d"${secs}s" "${wrk_header[@]}" "http://127.0.0.1:18280$path" >/tmp/rpcgate-ab.b &
        wb=$!
    fi
    wait $wa $wb
    a1=$(cpu_ticks $a_pid); b1=$(cpu_ticks $b_pid)
    # wrk: "N requests in"; h2load: "requests: T total, S started, D done, N succeeded".
    count() { awk '/requests in/ {print $1} /^requests:/ {print $8}' "$1"; }
    ra=$(count /tmp/rpcgate-ab.a)
    rb=$(count /tmp/rpcgate-ab.b)
    awk -v ra="$ra" -v rb="$rb" -v ta=$((a1 - a0)) -v tb=$((b1 - b0)) -v hz="$hz" -v s="$secs" 'BEGIN {
        printf "A %7.0f req/s %5.1f us/req | B %7.0f req/s %5.1f us/req | B/A req/s %.3f\n",
            ra / s, ta / hz * 1e6 / ra, rb / s, tb / hz * 1e6 / rb, rb / ra }'
done
