#!/usr/bin/env bash
# Where a request's time goes: the per-request cost table of
# benches/README.md for a plain keep-alive GET of `hello` at c64.
#
#   benches/cost.sh [BINARY] [SECONDS]     (defaults target/release/rpcgate, 6)
#
# The standalone gateway runs on core 0 and wrk -t1 -c64 on core 1. While
# wrk runs, three windows of SECONDS each, one after the other:
#  1. `perf record` (flat, no call graph) of the gateway: its CPU by stage,
#     each symbol put in the stage its module names (see `stage` below;
#     with fat LTO a function inlined into another counts as the other);
#  2. `perf stat` of the gateway: syscalls, context switches and
#     migrations per request;
#  3. `strace -c` of the gateway: syscalls per request by kind (ptrace
#     slows it, so its requests are counted in the same window).
# COST_TOP=N also prints the N costliest user-space symbols.
# Requests per window come from the gateway's own rpcgate_requests_total.
# Needs perf (Debian linux-perf), strace and wrk. Loopback only; every
# window is bounded and the script stops by itself.
set -euo pipefail
cd "$(dirname "$0")/.."
bin="${1:-target/release/rpcgate}"; secs="${2:-6}"
. benches/support/harness.sh
need_tools wrk strace curl
command -v perf >/dev/null || {
    echo "installing linux-perf (apt)..." >&2
    apt-get update -qq >/dev/null && apt-get install -y -qq linux-perf >/dev/null
}
GW=127.0.0.1:18480; ADMIN=127.0.0.1:19490
taskset -c 0 "$bin" --listen $GW --admin $ADMIN --locator 127.0.0.1:20453 \
    --log-level warn >/dev/null 2>&1 &
gw=$!
out=$(mktemp -d /tmp/rpcgate-cost.XXXXXX)
trap 'kill $gw 2>/dev/null || true; kill $wrk 2>/dev/null || true; rm -rf "$out"' EXIT
wait_for_urls "http://$GW/hello/http/"
requests() {
    curl -s "http://$ADMIN/metrics" |
        awk '/^rpcgate_requests_total\{/ && /service="hello"/ {n += $NF} END {printf "%d\n", n}'
}
total=$((3 * secs + 4))
taskset -c 1 wrk -t1 -c64 -d"${total}s" "http://$GW/hello/http/" >"$out/wrk" 2>&1 &
wrk=$!
sleep 2 # wrk's connections up and the pools warm (not a synchronisation)

r0=$(requests)
perf record -q -F 2999 -o "$out/perf.data" -p $gw -- sleep "$secs" >/dev/null 2>&1
r1=$(requests)
perf stat -x, -e raw_syscalls:sys_enter,context-switches,cpu-migrations,task-clock \
    -p $gw -- sleep "$secs" 2>"$out/stat" >/dev/null
r2=$(requests)
# SIGINT after the window: strace detaches and writes its summary.
timeout -s INT "$secs" strace -c -f -p $gw -o "$out/strace" >/dev/null 2>&1 || true
r3=$(requests)
wait $wrk 2>/dev/null || true

echo "== CPU by stage (perf record, $((r1 - r0)) requests in ${secs}s)"
perf report -i "$out/perf.data" --no-children --sort dso,sym --stdio -q 2>/dev/null |
    awk -v reqs=$((r1 - r0)) '
    function stage(dso, sym) {
        if (dso ~ /kernel/)                              return "kernel (syscalls, TCP, scheduler)"
        if (sym ~ /mi_|mimalloc|_mi_/)                   return "allocator (mimalloc)"
        if (sym ~ /memcpy|memmove|memset|memcmp/)        return "memcpy and friends"
        if (sym ~ /rpcgate::app::|rpcgate::session/)     return "in-process demo app (hello)"
        if (sym ~ /rpcgate::http::observer|metrics/)     return "observer: metrics"
        if (sym ~ /rpcgate::http::/)                     return "rpcgate http glue (connection, service, response)"
        if (sym ~ /rpcgate::dispatch::pack|proto::http/) return "packing (5-tuple, headers)"
        if (sym ~ /rpcgate::dispatch::|rpcgate::route/)  return "exchange (route, admit, attempt, reply body)"
        if (sym ~ /rpcgate::pool::/)                     return "pool and member choice"
        if (sym ~ /rpcgate::mux::/)                      return "mux (channels, batching, write)"
        if (sym ~ /rpcgate::proto::/)                    return "codec (frames, msgpack)"
        if (sym ~ /hyper::proto::h1|httparse/)           return "hyper HTTP/1.1 parse and encode"
        if (sym ~ /hyper::/)                             return "hyper other (dispatch, body)"
        if (sym ~ /tokio::runtime|tokio::sync|tokio::io|mio::|tokio::net/) return "tokio (scheduler, wakers, IO)"
        if (sym ~ /http::header|http::/)                 return "http crate (header maps)"
        if (sym ~ /bytes::/)                             return "bytes"
        if (sym ~ /rand|chacha/)                         return "rand (trace ids)"
        return "other user space"
    }
    {
        pct = $1; sub(/%/, "", pct); dso = $2
        sym = ""; for (i = 4; i <= NF; i++) sym = sym " " $i
        share[stage(dso, sym)] += pct
    }
    END { for (s in share) printf "%6.1f%%  %s\n", share[s], s }' | sort -rn
if [ -n "${COST_TOP:-}" ]; then
    echo
    echo "== the top ${COST_TOP} user-space symbols"
    perf report -i "$out/perf.data" --no-children --sort sym --stdio -q 2>/dev/null |
        grep -v '\[k\]' | head -"$COST_TOP" || true
fi
echo
echo "== per request (perf stat, $((r2 - r1)) requests in ${secs}s)"
awk -F, -v reqs=$((r2 - r1)) '
    $3 ~ /sys_enter/        { printf "syscalls            %.2f\n", $1 / reqs }
    $3 ~ /context-switches/ { printf "context switches    %.3f\n", $1 / reqs }
    $3 ~ /cpu-migrations/   { printf "cpu migrations      %.4f\n", $1 / reqs }
    $3 ~ /task-clock/       { printf "CPU µs              %.2f\n", $1 * 1000 / reqs }' "$out/stat"
echo
echo "== syscalls per request by kind (strace -c, $((r3 - r2)) requests in ${secs}s)"
awk -v reqs=$((r3 - r2)) '
    $1 ~ /^[0-9.]+$/ && NF >= 5 { name = $NF; calls = $4; printf "%-16s %.3f\n", name, calls / reqs }' \
    "$out/strace" | sort -k2 -rn | head -12
echo
grep -E "Requests/sec" "$out/wrk" || true
