#!/usr/bin/env bash
# WebSocket echo messages per second through rpcgate, side by side with a
# plain tokio-tungstenite echo server, in one run: a locator, the `chat`
# demo app (each client in a room of its own, so the room echoes) and the
# gateway run as processes of their own; examples/ws_echo_bench.rs is both
# the plain server and the client driver. Each target gets the same load
# (CONNECTIONS connections, 16 messages of SIZE bytes in flight on each)
# for SECONDS, one after the other; prints both rates and their ratio.
# Loopback only, bounded in time; everything stops by itself.
#
#   benches/ws_load.sh [SECONDS] [CONNECTIONS] [SIZE]   (defaults 5 50 64)
set -euo pipefail
cd "$(dirname "$0")/.."
secs="${1:-5}"; conns="${2:-50}"; size="${3:-64}"
. benches/support/harness.sh
build_release ws_echo_bench
dir=$(mktemp -d)
LOC=127.0.0.1:20653; GW=127.0.0.1:18680; PLAIN=127.0.0.1:18690
cat > "$dir/rpcgate.toml" <<CONF
listen = "$GW"
admin = ""
locators = ["$LOC"]
[limits]
# A benchmark client sends far more than a person would.
websocket_max_frames_per_sec = 1000000
stream_queue = 1024
CONF
$RELEASE_DIR/rpcgate locator --log-level warn --listen $LOC >/dev/null 2>&1 &
loc=$!
trap 'kill $loc ${app:-} ${gw:-} ${plain:-} 2>/dev/null || true; rm -rf "$dir"' EXIT
for _ in $(seq 1 100); do (exec 3<>/dev/tcp/${LOC%:*}/${LOC#*:}) 2>/dev/null && break; sleep 0.1; done
$RELEASE_DIR/rpcgate demo-app chat --log-level warn --locator $LOC >/dev/null 2>&1 &
app=$!
$RELEASE_DIR/rpcgate --log-level warn --config "$dir/rpcgate.toml" >/dev/null 2>&1 &
gw=$!
$RELEASE_DIR/examples/ws_echo_bench server $PLAIN >/dev/null 2>&1 &
plain=$!
wait_for_urls "http://$GW/chat/http/"
for _ in $(seq 1 100); do (exec 3<>/dev/tcp/${PLAIN%:*}/${PLAIN#*:}) 2>/dev/null && break; sleep 0.1; done
run() { timeout $((secs + 60)) $RELEASE_DIR/examples/ws_echo_bench client "$1" "$conns" "$secs" "$size" | awk '/messages_per_sec/ {print $2}'; }
direct=$(run "ws://$PLAIN/r/{i}")
gateway=$(run "ws://$GW/chat/http/rooms/bench-{i}")
echo "WebSocket echo, $conns connections x 16 in flight, $size-byte text messages, ${secs}s each:"
echo "  plain tokio-tungstenite echo server : $direct msg/s"
echo "  rpcgate + chat app (two hops)       : $gateway msg/s"
awk -v g="$gateway" -v d="$direct" 'BEGIN { printf "  rpcgate / plain                     : %.2f\n", g / d }'
