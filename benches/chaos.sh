#!/usr/bin/env bash
# Chaos drills: each one breaks a part of the system while a steady load
# runs through the gateway, and the script prints one table: per drill,
# the requests the load sent, the answers by status class, the requests
# that failed on an open connection, the connects refused, the requests
# that hung (no whole answer within HUNG_MS, longer than the gateway's
# 5 s request deadline), the slowest answer, and the gateway's RSS before
# and after.
#
#   benches/chaos.sh [SECONDS] [RATE]      (defaults 10 s of load per drill, 2000 req/s)
#   CHAOS_DRILLS=4b benches/chaos.sh       (only the drills listed, by number)
#
# Drills: kill -9 of one of two app instances; the locator down for 10 s;
# a backend that answers with a corrupt frame; 1,000 slowloris clients;
# 1,000 clients that ask for a 64 MB reply and read nothing (beside a load
# on the same service);
# 10,000 idle keep-alive connections; an HTTP/2 rapid-reset flood; SIGHUP
# during load; in a cluster of two locators sharing a real etcd, one
# locator killed and etcd stopped for 10 s; SIGTERM during load (last).
# The load is examples/chaos_load
# (32 keep-alive connections, GET /hello/http/ at RATE); the hostile
# clients are python3 (asyncio; `h2` for the flood, installed with apt if
# missing); etcd is Debian's `etcd-server` (installed with apt if missing). Each drill gets a fresh gateway (a fresh locator and apps
# where it breaks them). CHAOS_LOGS=DIR keeps the logs. Loopback only;
# every step is bounded and everything stops by itself.
set -euo pipefail
cd "$(dirname "$0")/.."
secs="${1:-10}"; rate="${2:-2000}"
HUNG_MS=8000
. benches/support/harness.sh
PY=/usr/bin/python3
[ -x "$PY" ] || { echo "chaos.sh: $PY is missing" >&2; exit 1; }
if ! $PY -c 'import h2' 2>/dev/null; then
    echo "installing python3-h2 (apt)..." >&2
    apt-get update -qq >/dev/null && apt-get install -y -qq python3-h2 >/dev/null
fi
if ! command -v etcd >/dev/null; then
    echo "installing etcd-server (apt)..." >&2
    apt-get update -qq >/dev/null && apt-get install -y -qq etcd-server >/dev/null
fi
command -v etcd >/dev/null || { echo "chaos.sh: etcd is missing and could not be installed" >&2; exit 1; }
want=12000
if [ "$(ulimit -n)" != unlimited ] && [ "$(ulimit -n)" -lt "$want" ]; then
    ulimit -n "$want" || { echo "chaos.sh: cannot raise the open-file limit to $want" >&2; exit 1; }
fi
build_release chaos_load
B=$RELEASE_DIR/rpcgate; LOAD=$RELEASE_DIR/examples/chaos_load
dir=$(mktemp -d /tmp/rpcgate-chaos.XXXXXX)
LOC=127.0.0.1:20753; GW=127.0.0.1:18780; ADMIN=127.0.0.1:19790; CORRUPT=127.0.0.1:20791
# The cluster drills' second locator and etcd.
LOC2=127.0.0.1:20754; ETCD=127.0.0.1:22379; ETCD_PEER=127.0.0.1:22380
loc=; gw=; apps=(); extra=(); loc2=; etcd_pid=
cleanup() {
    kill -9 $loc $loc2 $etcd_pid $gw "${apps[@]}" "${extra[@]}" 2>/dev/null || true
    wait 2>/dev/null || true
    # CHAOS_LOGS=DIR keeps the processes' logs and the load's tallies.
    [ -z "${CHAOS_LOGS:-}" ] || { mkdir -p "$CHAOS_LOGS"; cp "$dir"/*.log "$dir"/*.json "$dir"/*.out "$CHAOS_LOGS"/ 2>/dev/null || true; }
    rm -rf "$dir"
}
trap cleanup EXIT
cat > "$dir/locator.toml" <<CONF
listen = "$LOC"
[services.corrupt]
endpoints = ["$CORRUPT"]
version = 1
CONF
cat > "$dir/rpcgate.toml" <<CONF
listen = "$GW"
admin = "$ADMIN"
locators = ["$LOC"]
[request]
timeout_ms = 5000
[pool]
size = 8
# Short, so that connections are re-resolved during the drills.
lifespan_ms = 3000
[services.hello]
# The stalled-reader drill's service, at the default pool size.
[services.stream]
pool_size = 32
CONF

# CHAOS_DRILLS=4b,6 runs only those drills (numbers as in the headings).
want() { [ -z "${CHAOS_DRILLS:-}" ] || [[ ",$CHAOS_DRILLS," == *",$1,"* ]]; }
port_open() { (exec 3<>"/dev/tcp/${1%:*}/${1#*:}") 2>/dev/null; }
start_locator() {
    $B locator --log-level warn --config "$dir/locator.toml" >>"$dir/locator.log" 2>&1 &
    loc=$!
    for _ in $(seq 1 100); do port_open $LOC && return; sleep 0.1; done
    echo "chaos.sh: the locator never listened" >&2; exit 1
}
start_app() { # NAME
    $B demo-app "$1" --log-level warn --locator $LOC >>"$dir/apps.log" 2>&1 &
    apps+=($!)
}
start_gateway() {
    $B --log-level warn --config "$dir/rpcgate.toml" >>"$dir/gateway.log" 2>&1 &
    gw=$!
    wait_for_urls "http://$GW/hello/http/"
}
stop_all() { # gateway, apps, locator, helpers
    kill $gw "${apps[@]}" $loc "${extra[@]}" 2>/dev/null || true
    for pid in $gw "${apps[@]}" $loc "${extra[@]}"; do
        timeout 10 tail --pid="$pid" -f /dev/null 2>/dev/null || kill -9 "$pid" 2>/dev/null || true
    done
    wait 2>/dev/null || true
    gw=; loc=; apps=(); extra=()
}
# A fresh locator, N hello instances and a gateway.
fresh() { # [INSTANCES]
    start_locator
    for _ in $(seq 1 "${1:-1}"); do start_app hello; done
    start_gateway
    # Every pool connection made (the readiness probe made one).
    for _ in $(seq 1 50); do
        curl -s "http://$ADMIN/metrics" | grep -q 'rpcgate_pool_connections{service="hello",state="live"} 8' && break
        sleep 0.1
    done
}
rss_mb() { awk '/^VmRSS/ {printf "%.1f", $2 / 1024}' "/proc/$1/status" 2>/dev/null || echo "-"; }
# Starts the load in the background: PATH OUT [SECS [RATE [CONNS]]].
load() {
    $LOAD $GW "$1" --secs "${3:-$secs}" --rate "${4:-$rate}" --conns "${5:-32}" \
        --timeout-ms $HUNG_MS >"$2" &
    load_pid=$!
}
# An outage under load: SECS + 12 s of load; 2 s in, PID is killed
# (SIGKILL) and 10 s later START brings it back.
outage() { # JSON PID START
    load /hello/http/ "$1" $((secs + 12))
    sleep 2
    kill -9 "$2"
    sleep 10
    "$3"
    wait $load_pid
}
field() { grep -o "\"$1\":[0-9]*" "$2" | cut -d: -f2; }
table="$dir/table"
: > "$table"
row() { # DRILL JSON RSS_BEFORE RSS_AFTER NOTE
    local codes note="$5"
    codes=$(grep -o '"codes":{[^}]*}' "$2" | sed 's/"codes":{//; s/}//; s/"//g; s/:/ ×/g; s/,/, /g')
    [ -z "$codes" ] || note="$note; statuses other than 200: $codes"
    printf '| %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s |\n' "$1" \
        "$(field sent "$2")" "$(field 2xx "$2")" "$(field 4xx "$2")" "$(field 5xx "$2")" \
        "$(field failed "$2")" "$(field refused "$2")" "$(field hung "$2")" \
        "$(field max_ms "$2")" "$3" "$4" "$note" >> "$table"
    echo "chaos.sh: $1 done" >&2
}

# --- 1. kill -9 of one of two instances of an app --------------------------
if want 1; then
fresh 2
before=$(rss_mb $gw)
load /hello/http/ "$dir/kill.json"
sleep $((secs / 3))
kill -9 "${apps[1]}"
wait $load_pid
row "kill -9 of 1 of 2 app instances" "$dir/kill.json" "$before" "$(rss_mb $gw)" \
    "killed at $((secs / 3)) s; any 5xx were in flight on it"
stop_all
fi

# --- 2. the locator down for 10 s --------------------------------------------
if want 2; then
fresh 1
before=$(rss_mb $gw)
outage "$dir/locator.json" $loc start_locator
row "locator down 10 s (kill -9, restart)" "$dir/locator.json" "$before" "$(rss_mb $gw)" \
    "pool lifespan 3 s: connections re-resolve during the outage"
stop_all
fi

# --- 3. a backend that sends a corrupt frame ----------------------------------
if want 3; then
fresh 1
$PY - "$CORRUPT" >"$dir/corrupt.out" 2>&1 <<'PY' &
# Accepts connections; once a request arrives (any bytes), answers with a
# frame that is not msgpack (0xc1 is a never-used marker), then waits for
# the gateway to close. Stops after 60 s at most.
import asyncio, sys
host, port = sys.argv[1].split(":")
conns = 0
async def serve(r, w):
    global conns
    conns += 1
    try:
        if await r.read(65536):
            w.write(b"\x94\xc1\xc1\xc1\xc1")
            await w.drain()
        await r.read(65536)
    except ConnectionError:
        pass
    w.close()
async def main():
    server = await asyncio.start_server(serve, host, int(port))
    print("listening", flush=True)
    try:
        await asyncio.wait_for(asyncio.sleep(3600), 60)
    except asyncio.TimeoutError:
        pass
    server.close()
asyncio.run(main())
PY
extra+=($!)
for _ in $(seq 1 50); do port_open $CORRUPT && break; sleep 0.1; done
before=$(rss_mb $gw)
load /hello/http/ "$dir/corrupt-hello.json"
hello_load=$load_pid
load /corrupt/http/ "$dir/corrupt.json" "$secs" 20 2
wait $hello_load $load_pid
after=$(rss_mb $gw)
row "corrupt frame: /hello (healthy)" "$dir/corrupt-hello.json" "$before" "$after" "beside the corrupt backend"
row "corrupt frame: /corrupt" "$dir/corrupt.json" "$before" "$after" "the corrupt backend, 20 req/s"
stop_all
fi

# --- 4. 1,000 slowloris clients beside the load -------------------------------
if want 4; then
fresh 1
before=$(rss_mb $gw)
$PY - "$GW" 1000 $((secs + 5)) >"$dir/slowloris.out" 2>&1 <<'PY' &
# N connections from 127.1.0.2 each send a request head one header line a
# second and never finish it; reports how many the gateway closed, and when.
import asyncio, sys, time
host, port = sys.argv[1].split(":")
n, hold = int(sys.argv[2]), float(sys.argv[3])
start = time.monotonic()
closed = []
async def one(i):
    try:
        r, w = await asyncio.open_connection(host, int(port), local_addr=("127.1.0.2", 0))
    except OSError:
        closed.append(-1.0)
        return
    try:
        w.write(b"GET /hello/http/ HTTP/1.1\r\nHost: slow\r\n")
        while time.monotonic() - start < hold:
            w.write(b"X-Slow-%d: x\r\n" % i)
            await w.drain()
            try:
                if await asyncio.wait_for(r.read(4096), 1.0) == b"":
                    closed.append(time.monotonic() - start)
                    return
            except asyncio.TimeoutError:
                pass
    except ConnectionError:
        closed.append(time.monotonic() - start)
    finally:
        w.close()
async def main():
    await asyncio.gather(*(one(i) for i in range(n)))
    refused = sum(1 for t in closed if t < 0)
    cut = sorted(t for t in closed if t >= 0)
    span = f", between {cut[0]:.1f} and {cut[-1]:.1f} s" if cut else ""
    print(f"{len(cut)} of {n} slowloris connections cut by the gateway{span}; {refused} refused")
asyncio.run(main())
PY
slow=$!
extra+=($slow)
sleep 1
load /hello/http/ "$dir/slowloris.json"
wait $load_pid
after=$(rss_mb $gw)
wait $slow || true
row "1,000 slowloris clients" "$dir/slowloris.json" "$before" "$after" "$(cat "$dir/slowloris.out")"
stop_all
fi

# --- 4b. 1,000 stalled readers of 64 MB replies, at the default pool ---------
if want 4b; then
start_locator
start_app hello
start_app stream
start_gateway
wait_for_urls "http://$GW/stream/http/?chunks=1&delay_ms=0"
before=$(rss_mb $gw)
# RSS sampled every 100 ms while the drill runs: its peak.
( peak=0; while kill -0 $gw 2>/dev/null && [ ! -e "$dir/stalled.done" ]; do
      r=$(awk '/^VmRSS/ {print int($2 / 1024)}' "/proc/$gw/status" 2>/dev/null || echo 0)
      [ "$r" -gt "$peak" ] && peak=$r; echo "$peak" > "$dir/stalled.peak"; sleep 0.1
  done ) &
extra+=($!)
$PY - "$GW" 1000 $((secs + 5)) >"$dir/stalled.out" 2>&1 <<'PY' &
# N clients from 127.1.0.3 each ask for a 64 MB reply (1,000 chunks of
# 64 KiB, written by the app as fast as it can) with a 4 KiB receive
# buffer, and read nothing for HOLD seconds; then each reads what reaches
# it (3 s without a byte ends the wait) and counts whether the gateway had
# ended the connection (a cut reader sees the end only after the bytes
# before it) and whether its reply was whole.
import asyncio, socket, sys
host, port = sys.argv[1].split(":")
n, hold = int(sys.argv[2]), float(sys.argv[3])
ended = refused = whole = 0
async def one(i):
    global ended, refused, whole
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    s.bind(("127.1.0.3", 0))
    s.setblocking(False)
    loop = asyncio.get_running_loop()
    try:
        await loop.sock_connect(s, (host, int(port)))
        await loop.sock_sendall(s, b"GET /stream/http/?chunks=1000&size=65536&delay_ms=0 HTTP/1.1\r\nHost: stalled\r\n\r\n")
    except OSError:
        refused += 1; s.close(); return
    await asyncio.sleep(hold)
    tail = b""
    while True:
        try:
            chunk = await asyncio.wait_for(loop.sock_recv(s, 1 << 20), 3)
        except asyncio.TimeoutError:
            break
        except OSError:
            ended += 1; break
        if not chunk:
            ended += 1; break
        tail = (tail + chunk)[-8:]
    if tail.endswith(b"0\r\n\r\n"):
        whole += 1
    s.close()
async def main():
    await asyncio.gather(*(one(i) for i in range(n)))
    print(f"{ended} of {n} stalled readers ended by the gateway, {whole} with their whole reply; {refused} refused")
asyncio.run(main())
PY
stalled=$!
extra+=($stalled)
sleep 1
load "/stream/http/?chunks=1&delay_ms=0" "$dir/stalled.json"
wait $load_pid
wait $stalled || true
touch "$dir/stalled.done"
after=$(rss_mb $gw)
metrics=$(curl -s "http://$ADMIN/metrics")
hits=$(awk '$1 == "rpcgate_limit_hits_total{limit=\"slow_client\"}" {print $2}' <<<"$metrics")
timeouts=$(awk '$1 == "rpcgate_limit_hits_total{limit=\"send_timeout\"}" {print $2}' <<<"$metrics")
row "1,000 stalled readers of 64 MB replies (default pool of 32)" "$dir/stalled.json" "$before" "$after" \
    "$(cat "$dir/stalled.out"); gateway cuts: slow_client ${hits:-0}, send_timeout ${timeouts:-0}; peak RSS $(cat "$dir/stalled.peak" 2>/dev/null || echo -) MB (reply_buffer_total 512 MiB); the load shares the stream service's connections"
stop_all
fi

# --- 5. 10,000 idle connections -----------------------------------------------
if want 5; then
fresh 1
before=$(rss_mb $gw)
$PY - "$GW" 10000 "$dir/idle.ready" >"$dir/idle.out" 2>&1 <<'PY' &
# N keep-alive connections (from 100 loopback addresses: at most 1,000 per
# client address) each send one GET and then stay idle until
# READY_FILE.done appears (90 s at most); reports how many the gateway
# closed meanwhile.
import asyncio, os, sys, time
host, port = sys.argv[1].split(":")
n, ready = int(sys.argv[2]), sys.argv[3]
REQ = b"GET /hello/http/ HTTP/1.1\r\nHost: idle\r\n\r\n"
async def one(sem, i):
    async with sem:
        r, w = await asyncio.open_connection(host, int(port), local_addr=(f"127.1.1.{1 + i % 100}", 0))
        w.write(REQ)
        await w.drain()
        await r.readuntil(b"Hello, World!")
        return r, w
async def main():
    sem = asyncio.Semaphore(500)
    conns = await asyncio.wait_for(asyncio.gather(*(one(sem, i) for i in range(n))), 90)
    open(ready, "w").write(f"{len(conns)}\n")
    deadline = time.monotonic() + 90
    while not os.path.exists(ready + ".done") and time.monotonic() < deadline:
        await asyncio.sleep(0.2)
    closed = 0
    for r, w in conns:
        try:
            if await asyncio.wait_for(r.read(1), 0.001) == b"":
                closed += 1
        except asyncio.TimeoutError:
            pass
        except ConnectionError:
            closed += 1
    print(f"{len(conns)} idle connections held; {closed} closed by the gateway meanwhile")
    for _, w in conns:
        w.close()
asyncio.run(main())
PY
idle=$!
extra+=($idle)
for _ in $(seq 1 900); do [ -e "$dir/idle.ready" ] && break; kill -0 $idle 2>/dev/null || break; sleep 0.1; done
[ -e "$dir/idle.ready" ] || { echo "chaos.sh: the idle connections never opened: $(cat "$dir/idle.out")" >&2; exit 1; }
held=$(rss_mb $gw)
load /hello/http/ "$dir/idle.json"
wait $load_pid
after=$(rss_mb $gw)
touch "$dir/idle.ready.done"
wait $idle || true
row "10,000 idle keep-alive connections" "$dir/idle.json" "$before" "$after" \
    "RSS with them open before the load: $held MB; $(cat "$dir/idle.out")"
stop_all
fi

# --- 6. HTTP/2 rapid reset flood ----------------------------------------------
if want 6; then
fresh 1
before=$(rss_mb $gw)
load /hello/http/ "$dir/reset.json"
$PY - "$GW" "$secs" >"$dir/reset.out" 2>&1 <<'PY' || true
# Opens h2c connections one after another for SECS seconds; on each, sends
# HEADERS + RST_STREAM pairs (CVE-2023-44487) until the gateway closes it
# (GOAWAY or EOF) or 10,000 streams; counts them.
import socket, sys, time
import h2.config, h2.connection, h2.events, h2.exceptions
host, port = sys.argv[1].split(":")
until = time.monotonic() + float(sys.argv[2])
conns = streams = goaways = 0
HEADERS = [(":method", "GET"), (":path", "/hello/http/"), (":scheme", "http"), (":authority", "flood")]
while time.monotonic() < until and conns < 2000:
    s = socket.create_connection((host, int(port)), timeout=2)
    c = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
    c.initiate_connection()
    s.sendall(c.data_to_send())
    conns += 1
    s.setblocking(False)
    done = False
    sid = 1
    while not done and sid < 20000 and time.monotonic() < until:
        try:
            c.send_headers(sid, HEADERS, end_stream=True)
            c.reset_stream(sid)
            s.sendall(c.data_to_send())
            streams += 1
            sid += 2
        except (OSError, h2.exceptions.ProtocolError):
            done = True
        try:
            data = s.recv(65536)
            if not data:
                done = True
            else:
                for e in c.receive_data(data):
                    if isinstance(e, h2.events.ConnectionTerminated):
                        goaways += 1
                        done = True
        except BlockingIOError:
            pass
        except (OSError, h2.exceptions.ProtocolError):
            done = True
    s.close()
print(f"flood: {streams} streams reset on {conns} connections; {goaways} GOAWAYs")
PY
wait $load_pid
row "HTTP/2 rapid-reset flood" "$dir/reset.json" "$before" "$(rss_mb $gw)" "$(tail -1 "$dir/reset.out")"
stop_all
fi

# --- 7. SIGHUP during load -----------------------------------------------------
if want 7; then
fresh 1
before=$(rss_mb $gw)
load /hello/http/ "$dir/hup.json"
hups=0
for _ in $(seq 1 $((secs / 2 - 1))); do sleep 2; kill -HUP $gw; hups=$((hups + 1)); done
wait $load_pid
row "SIGHUP during load" "$dir/hup.json" "$before" "$(rss_mb $gw)" "$hups reloads, one every 2 s"
stop_all
fi

# --- 8, 9. a cluster: two locators sharing etcd ---------------------------------
if want 8; then
# Each locator writes its apps to etcd under a 3 s lease and serves the
# view of both; each hello instance publishes to one locator and falls back
# to the other; the gateway knows both locators, L1 first.
cat > "$dir/cluster.toml" <<CONF
[cluster]
etcd = ["http://$ETCD"]
prefix = "/chaos"
lease_ttl_ms = 3000
CONF
cat > "$dir/gateway-cluster.toml" <<CONF
$(grep -v '^locators' "$dir/rpcgate.toml")
CONF
sed -i "s|^admin = .*|&\nlocators = [\"$LOC\", \"$LOC2\"]|" "$dir/gateway-cluster.toml"
etcd_healthy() { curl -sf -m 1 "http://$ETCD/health" 2>/dev/null | grep -q '"health":"true"'; }
start_etcd() {
    etcd --name chaos --data-dir "$dir/etcd" --log-level error \
        --listen-client-urls "http://$ETCD" --advertise-client-urls "http://$ETCD" \
        --listen-peer-urls "http://$ETCD_PEER" --initial-advertise-peer-urls "http://$ETCD_PEER" \
        --initial-cluster "chaos=http://$ETCD_PEER" >>"$dir/etcd.log" 2>&1 &
    etcd_pid=$!
    for _ in $(seq 1 100); do etcd_healthy && return; sleep 0.1; done
    echo "chaos.sh: etcd never became healthy (see CHAOS_LOGS=DIR, etcd.log)" >&2; exit 1
}
start_cluster_locator() { # ADDR -> pid in $started
    $B locator --log-level warn --config "$dir/cluster.toml" --listen "$1" >>"$dir/locator.log" 2>&1 &
    started=$!
    for _ in $(seq 1 100); do port_open "$1" && return; sleep 0.1; done
    echo "chaos.sh: the locator on $1 never listened" >&2; exit 1
}
fresh_cluster() {
    start_etcd
    start_cluster_locator $LOC; loc=$started
    start_cluster_locator $LOC2; loc2=$started
    $B demo-app hello --log-level warn --locator $LOC --locator $LOC2 >>"$dir/apps.log" 2>&1 &
    apps+=($!)
    $B demo-app hello --log-level warn --locator $LOC2 --locator $LOC >>"$dir/apps.log" 2>&1 &
    apps+=($!)
    # Both instances in both views before the gateway starts.
    for _ in $(seq 1 100); do
        [ "$($B resolve hello --count 8 --locator $LOC 2>/dev/null | grep -c '127.0.0.1:')" -ge 2 ] \
            && [ "$($B resolve hello --count 8 --locator $LOC2 2>/dev/null | grep -c '127.0.0.1:')" -ge 2 ] && break
        sleep 0.1
    done
    $B --log-level warn --config "$dir/gateway-cluster.toml" >>"$dir/gateway.log" 2>&1 &
    gw=$!
    wait_for_urls "http://$GW/hello/http/"
}
stop_cluster() { # (stop_all waits for every child: these first)
    extra+=($loc2 $etcd_pid)
    stop_all
    loc2=; etcd_pid=
    rm -rf "$dir/etcd"
}

fresh_cluster
before=$(rss_mb $gw)
load /hello/http/ "$dir/cluster-locator.json"
sleep $((secs / 3))
kill -9 $loc
wait $load_pid
row "cluster: kill -9 of locator 1 of 2" "$dir/cluster-locator.json" "$before" "$(rss_mb $gw)" \
    "at $((secs / 3)) s; the gateway's first locator; its app re-publishes to the other"
stop_cluster

fresh_cluster
before=$(rss_mb $gw)
outage "$dir/cluster-etcd.json" $etcd_pid start_etcd
row "cluster: etcd down 10 s (kill -9, restart)" "$dir/cluster-etcd.json" "$before" "$(rss_mb $gw)" \
    "locators serve their last view meanwhile; pool lifespan 3 s"
stop_cluster
fi

# --- 10. SIGTERM during load (last) ---------------------------------------------
if want 10; then
fresh 1
before=$(rss_mb $gw)
load /hello/http/ "$dir/term.json"
sleep $((secs / 3))
kill -TERM $gw
code=0
wait $gw || code=$?
gw=
wait $load_pid
row "SIGTERM during load" "$dir/term.json" "$before" "exited $code" \
    "at $((secs / 3)) s; afterwards connects are refused"
stop_all
fi


echo
echo "chaos drills, $secs s of load each at $rate req/s over 32 connections (GET /hello/http/);"
echo "hung = no whole answer within $HUNG_MS ms (the gateway's request deadline is 5 s)"
echo
echo "| drill | sent | 2xx | 4xx | 5xx | failed | refused | hung | max ms | RSS before MB | RSS after MB | note |"
echo "|---|---|---|---|---|---|---|---|---|---|---|---|"
cat "$table"
