#!/usr/bin/env bash
# Memory of the gateway holding many idle server-sent-event streams: a
# locator and the `ticker` demo app run as processes of their own, the
# gateway in front; N clients (default 10,000) each open
# /ticker/http/?interval_ms=3600000 (a stream whose app stays quiet; the
# gateway sends its keepalive comments) and read the first bytes, then the
# gateway's RSS is read. The clients are one asyncio process (python3).
# Raises the open-file limit. Loopback only; bounded in time, everything
# stops by itself.
#
#   benches/sse_rss.sh [STREAMS]
set -euo pipefail
cd "$(dirname "$0")/.."
n="${1:-10000}"
want=$((n + 1024))
if [ "$(ulimit -n)" != unlimited ] && [ "$(ulimit -n)" -lt "$want" ]; then
    ulimit -n "$want" || { echo "sse_rss.sh: cannot raise the open-file limit to $want (hard limit $(ulimit -Hn))" >&2; exit 1; }
fi
command -v python3 >/dev/null || { echo "sse_rss.sh: python3 is missing" >&2; exit 1; }
. benches/support/harness.sh
build_release
dir=$(mktemp -d)
LOC=127.0.0.1:20453; GW=127.0.0.1:18480; ADMIN=127.0.0.1:19490
cat > "$dir/rpcgate.toml" <<CONF
listen = "$GW"
admin = "$ADMIN"
locators = ["$LOC"]
[limits]
max_connections = $((n + 100))
[services.ticker]
pool_size = 8
CONF
$RELEASE_DIR/rpcgate locator --log-level warn --listen $LOC >/dev/null 2>&1 &
loc=$!
trap 'kill $loc ${app:-} ${gw:-} 2>/dev/null || true; rm -rf "$dir"' EXIT
# The locator's port first (10 s at most): the app publishes to it.
for _ in $(seq 1 100); do (exec 3<>/dev/tcp/${LOC%:*}/${LOC#*:}) 2>/dev/null && break; sleep 0.1; done
$RELEASE_DIR/rpcgate demo-app ticker --log-level warn --locator $LOC --concurrency $((n + 100)) >/dev/null 2>&1 &
app=$!
$RELEASE_DIR/rpcgate --log-level warn --config "$dir/rpcgate.toml" >/dev/null 2>&1 &
gw=$!
wait_for_urls "http://$GW/ticker/http/?count=0"
python3 - "$GW" "$gw" "$n" <<'PY'
import asyncio, sys
addr, pid, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
host, port = addr.split(":")
REQ = b"GET /ticker/http/?interval_ms=3600000 HTTP/1.1\r\nHost: t\r\n\r\n"
def rss():
    with open(f"/proc/{pid}/status") as f:
        return next(int(l.split()[1]) for l in f if l.startswith("VmRSS"))
async def one(sem, i):
    async with sem:
        # From 100 loopback addresses: one client address gets at most
        # limits.max_connections_per_client (1,000) connections.
        r, w = await asyncio.open_connection(host, int(port), local_addr=(f"127.1.0.{1 + i % 100}", 0))
        w.write(REQ); await w.drain()
        head = await r.readuntil(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200") and b"text/event-stream" in head, head[:200]
        return r, w
async def main():
    # Warm: the pool connected, one stream served and ended.
    r, w = await one(asyncio.Semaphore(1), 0)
    w.close()
    await asyncio.sleep(1)
    before = rss()
    sem = asyncio.Semaphore(500)  # connect in waves, not all at once
    conns = await asyncio.wait_for(asyncio.gather(*(one(sem, i) for i in range(n))), 120)
    await asyncio.sleep(2)
    after = rss()
    per = (after - before) / len(conns)
    print(f"rpcgate RSS {before/1024:6.1f} MB before, {after/1024:6.1f} MB with {len(conns)} "
          f"idle SSE streams: {per:.1f} KB per stream (goal: at most 10 KB)")
    for _, w in conns:
        w.close()
asyncio.run(main())
PY
