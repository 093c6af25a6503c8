#!/usr/bin/env bash
# Soak: a locator, the hello and ticker demo apps and a gateway hold about
# half of the measured capacity for MINUTES: plain requests (GET
# /hello/http/ over 32 keep-alive connections) and server-sent-event
# streams (50 clients, each stream 50 ticks of 100 ms, then the next),
# with a SIGHUP reload every minute. Every minute it prints the gateway's
# RSS, open file descriptors and requests answered so far; at the end the
# load's tally and the RSS growth from the first minute to the last, PASS
# under 5%, FAIL otherwise (exit 1).
#
#   benches/soak.sh MINUTES [RATE]
#
# Without RATE, capacity is measured first by a 5 s closed-loop burst
# (64 connections) and RATE is half of it. Loopback only; bounded by
# MINUTES, everything stops by itself.
set -euo pipefail
cd "$(dirname "$0")/.."
minutes="${1:?usage: benches/soak.sh MINUTES [RATE]}"
rate="${2:-}"
[ "$minutes" -ge 2 ] && [ "$minutes" -le 1440 ] || { echo "soak.sh: MINUTES is 2 to 1440" >&2; exit 1; }
. benches/support/harness.sh
build_release chaos_load
B=$RELEASE_DIR/rpcgate; LOAD=$RELEASE_DIR/examples/chaos_load
dir=$(mktemp -d /tmp/rpcgate-soak.XXXXXX)
LOC=127.0.0.1:20853; GW=127.0.0.1:18880; ADMIN=127.0.0.1:19890
pids=()
trap 'kill ${pids[*]} 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$dir"' EXIT
cat > "$dir/rpcgate.toml" <<CONF
listen = "$GW"
admin = "$ADMIN"
locators = ["$LOC"]
[pool]
size = 8
[services.hello]
[services.ticker]
pool_size = 4
CONF
$B locator --log-level warn --listen $LOC >"$dir/locator.log" 2>&1 &
pids+=($!)
for _ in $(seq 1 100); do (exec 3<>/dev/tcp/${LOC%:*}/${LOC#*:}) 2>/dev/null && break; sleep 0.1; done
for app in hello ticker; do
    $B demo-app $app --log-level warn --locator $LOC >>"$dir/apps.log" 2>&1 &
    pids+=($!)
done
$B --log-level warn --config "$dir/rpcgate.toml" >"$dir/gateway.log" 2>&1 &
gw=$!
pids+=($gw)
wait_for_urls "http://$GW/hello/http/" "http://$GW/ticker/http/?count=0"
field() { grep -o "\"$1\":[0-9]*" "$2" | cut -d: -f2; }
if [ -z "$rate" ]; then
    $LOAD $GW /hello/http/ --secs 5 --conns 64 >"$dir/burst.json"
    capacity=$(( $(field 2xx "$dir/burst.json") / 5 ))
    rate=$((capacity / 2))
    echo "capacity: $capacity req/s (5 s burst, 64 connections); holding $rate req/s"
else
    echo "holding $rate req/s (given)"
fi
secs=$((minutes * 60))
$LOAD $GW /hello/http/ --secs $secs --conns 32 --rate "$rate" --timeout-ms 8000 >"$dir/plain.json" &
plain=$!
pids+=($plain)
$LOAD $GW "/ticker/http/?interval_ms=100&count=50" --secs $secs --conns 50 --rate 10 \
    --timeout-ms 15000 >"$dir/sse.json" &
sse=$!
pids+=($sse)
answered() {
    curl -s "http://$ADMIN/metrics" |
        awk '/^rpcgate_requests_total\{/ && /status="2xx"/ {n += $NF} END {printf "%d", n}'
}
rss_kb() { awk '/^VmRSS/ {print $2}' "/proc/$gw/status"; }
printf '%6s %10s %6s %8s %14s %s\n' minute RSS_MB fds streams answered_2xx reload
start=$(date +%s)
first=; last=
for m in $(seq 1 "$minutes"); do
    # Sample just before the minute ends, then reload.
    wait_s=$((start + m * 60 - 2 - $(date +%s)))
    [ "$wait_s" -le 0 ] || sleep "$wait_s"
    kb=$(rss_kb); fds=$(ls "/proc/$gw/fd" | wc -l)
    streams=$(curl -s "http://$ADMIN/metrics" | awk '/^rpcgate_streams_open/ {n += $NF} END {printf "%d", n}')
    [ -n "$first" ] || first=$kb
    last=$kb
    reload=-
    if [ "$m" -lt "$minutes" ]; then kill -HUP $gw; reload=SIGHUP; fi
    printf '%6s %10.1f %6s %8s %14s %s\n' "$m" "$(echo "$kb" | awk '{print $1 / 1024}')" "$fds" \
        "$streams" "$(answered)" "$reload"
done
wait $plain $sse
echo "plain: $(cat "$dir/plain.json")"
echo "sse:   $(cat "$dir/sse.json")"
kill -0 $gw 2>/dev/null || { echo "FAIL: the gateway died"; exit 1; }
growth=$(awk -v a="$first" -v b="$last" 'BEGIN {printf "%.1f", (b - a) * 100 / a}')
bad=$(( $(field hung "$dir/plain.json") + $(field failed "$dir/plain.json") + $(field hung "$dir/sse.json") + $(field failed "$dir/sse.json") ))
echo "RSS growth, minute 1 → minute $minutes: $growth% (limit 5%); failed or hung requests: $bad"
if awk -v g="$growth" 'BEGIN {exit !(g < 5)}' && [ "$bad" -eq 0 ]; then
    echo PASS
else
    echo FAIL
    exit 1
fi
