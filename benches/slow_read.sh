#!/usr/bin/env bash
# The slow-read attack (slowhttptest -X) against one gateway binary: a
# gateway with `pool.size = 1` in front of the `stream` demo app; two
# clients each ask for a 64 MB reply and read nothing; then 8 ordinary
# requests to the same service are sent at once. Prints each one's status
# and time, and how the stalled readers ended.
#
#   benches/slow_read.sh [BINARY]      (default: the release build)
#
# Before issue 25 the one backend connection stopped reading for the
# stalled clients, and 7 of the 8 requests waited out the 10 s deadline.
# With the defaults (a 64 MiB reply buffer, a 60 s send timeout) the two
# 64 MB replies fit in their buffers, so the stalled readers are cut by
# the send timeout; the script watches them for 75 s.
# Loopback only; everything stops by itself within about 90 s.
set -euo pipefail
cd "$(dirname "$0")/.."
. benches/support/harness.sh
need_tools curl
if [ $# -ge 1 ]; then B=$1; else build_release; B=$RELEASE_DIR/rpcgate; fi
PY=/usr/bin/python3
dir=$(mktemp -d /tmp/rpcgate-slowread.XXXXXX)
LOC=127.0.0.1:20853; GW=127.0.0.1:18880; ADMIN=127.0.0.1:19890
pids=()
trap 'kill "${pids[@]}" 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$dir"' EXIT
cat > "$dir/locator.toml" <<CONF
listen = "$LOC"
CONF
cat > "$dir/rpcgate.toml" <<CONF
listen = "$GW"
admin = "$ADMIN"
locators = ["$LOC"]
[request]
timeout_ms = 10000
[pool]
size = 1
[services.stream]
CONF
$B locator --log-level warn --config "$dir/locator.toml" >"$dir/locator.log" 2>&1 &
pids+=($!)
for _ in $(seq 1 100); do (exec 3<>"/dev/tcp/${LOC%:*}/${LOC#*:}") 2>/dev/null && break; sleep 0.1; done
$B demo-app stream --log-level warn --locator $LOC >"$dir/app.log" 2>&1 &
pids+=($!)
$B --log-level warn --config "$dir/rpcgate.toml" >"$dir/gateway.log" 2>&1 &
pids+=($!)
wait_for_urls "http://$GW/stream/http/?chunks=1&delay_ms=0"
$PY - "$GW" 75 >"$dir/stalled.out" 2>&1 <<'PY' &
# Two clients ask for 64 MB and read nothing (4 KiB receive buffers) for
# HOLD seconds; then each reads what reaches it (5 s without a byte ends
# the wait) and reports whether the gateway had ended the connection,
# after how many bytes. (A gateway that cuts a stalled reader closes its
# socket; the client sees the end only once it reads the bytes before it.)
import socket, sys, time
host, port = sys.argv[1].split(":")
hold = float(sys.argv[2])
socks = []
for _ in range(2):
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    s.connect((host, int(port)))
    s.sendall(b"GET /stream/http/?chunks=1000&size=65536&delay_ms=0 HTTP/1.1\r\nHost: x\r\n\r\n")
    socks.append(s)
print("ready", flush=True)
time.sleep(hold)
for i, s in enumerate(socks):
    s.settimeout(5)
    got, ended = 0, "still open"
    while True:
        try:
            chunk = s.recv(1 << 20)
        except socket.timeout:
            break
        except OSError:
            ended = "reset"
            break
        if not chunk:
            ended = "closed"
            break
        got += len(chunk)
    print(f"stalled reader {i + 1}: {ended} by the gateway after {got} bytes of {1000 * 65536} (the head included)")
PY
stalled=$!
pids+=($stalled)
for _ in $(seq 1 100); do grep -q ready "$dir/stalled.out" 2>/dev/null && break; sleep 0.1; done
# Let the two replies start pouring in.
sleep 1
curls=()
for i in $(seq 1 8); do
    curl -s -o /dev/null -m 15 -w "request $i: %{http_code} in %{time_total} s\n" \
        "http://$GW/stream/http/?chunks=2&delay_ms=0" >"$dir/req$i.out" 2>&1 &
    curls+=($!)
done
wait "${curls[@]}" 2>/dev/null || true
cat "$dir"/req*.out
wait $stalled 2>/dev/null || true
grep -v ready "$dir/stalled.out"
metrics=$(curl -s "http://$ADMIN/metrics")
for limit in slow_client send_timeout; do
    echo "$limit cuts: $(awk -v l="$limit" '$1 == "rpcgate_limit_hits_total{limit=\"" l "\"}" {print $2}' <<<"$metrics")"
done
