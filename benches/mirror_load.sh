#!/usr/bin/env bash
# The cost of mirroring, side by side: two gateways in front of one locator
# and the `hello` and `echo` demo apps, one plain and one with
# `[services.hello] mirror = "echo"` (mirror_share SHARE), both on core 0,
# each driven by its own wrk on core 1 at the same time. Prints, per round,
# each one's req/s and CPU per request and the ratio mirrored/plain, then
# the mirrored gateway's rpcgate_mirror_total.
#
#   benches/mirror_load.sh [SECONDS] [ROUNDS] [SHARE]   (defaults 8 3 0.1)
#
# Needs wrk (installed with apt if missing). Loopback only; every run is
# bounded by SECONDS and stops by itself.
set -euo pipefail
cd "$(dirname "$0")/.."
secs="${1:-8}"; rounds="${2:-3}"; share="${3:-0.1}"
. benches/support/harness.sh
need_tools wrk curl
build_release
B=$RELEASE_DIR/rpcgate
dir=$(mktemp -d)
LOC=127.0.0.1:22053; PLAIN=127.0.0.1:22080; MIRRORED=127.0.0.1:22081; MADMIN=127.0.0.1:22091
cat >"$dir/plain.toml" <<CONF
listen = "$PLAIN"
admin = "127.0.0.1:22090"
locators = ["$LOC"]
CONF
cat >"$dir/mirrored.toml" <<CONF
listen = "$MIRRORED"
admin = "$MADMIN"
locators = ["$LOC"]
[services.hello]
mirror = "echo"
mirror_share = $share
CONF
pids=()
trap 'kill "${pids[@]}" 2>/dev/null || true; rm -rf "$dir"' EXIT
taskset -c 0 $B locator --listen $LOC --log-level warn >/dev/null 2>&1 & pids+=($!)
taskset -c 0 $B demo-app hello --locator $LOC --log-level warn >/dev/null 2>&1 & pids+=($!)
taskset -c 0 $B demo-app echo --locator $LOC --log-level warn >/dev/null 2>&1 & pids+=($!)
taskset -c 0 $B --config "$dir/plain.toml" --log-level warn >/dev/null 2>&1 & plain=$!; pids+=($plain)
taskset -c 0 $B --config "$dir/mirrored.toml" --log-level warn >/dev/null 2>&1 & mirrored=$!; pids+=($mirrored)
wait_for_urls "http://$PLAIN/hello/http/" "http://$MIRRORED/hello/http/" "http://$PLAIN/echo/http/"
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
hz=$(getconf CLK_TCK)
for _ in $(seq 1 "$rounds"); do
    a0=$(cpu_ticks $plain); b0=$(cpu_ticks $mirrored)
    taskset -c 1 wrk -t1 -c64 -d"${secs}s" "http://$PLAIN/hello/http/" >"$dir/a" & wa=$!
    taskset -c 1 wrk -t1 -c64 -d"${secs}s" "http://$MIRRORED/hello/http/" >"$dir/b" & wb=$!
    wait $wa $wb
    a1=$(cpu_ticks $plain); b1=$(cpu_ticks $mirrored)
    ra=$(awk '/requests in/ {print $1}' "$dir/a"); rb=$(awk '/requests in/ {print $1}' "$dir/b")
    awk -v ra="$ra" -v rb="$rb" -v ta=$((a1 - a0)) -v tb=$((b1 - b0)) -v hz="$hz" -v s="$secs" 'BEGIN {
        printf "plain %7.0f req/s %5.1f us/req | mirrored %7.0f req/s %5.1f us/req | mirrored/plain req/s %.3f\n",
            ra / s, ta / hz * 1e6 / ra, rb / s, tb / hz * 1e6 / rb, rb / ra }'
done
curl -s "http://$MADMIN/metrics" | grep '^rpcgate_mirror_total' || true
