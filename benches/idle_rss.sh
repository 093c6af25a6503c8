#!/usr/bin/env bash
# Memory of the gateway holding many idle keep-alive connections, beside
# the plain hyper server of load.sh (the same auto builder) as a baseline:
# each server gets N connections (default 10,000), one request served on
# each and kept open, then its RSS is read. The connections come from one
# asyncio process (python3). Raises the open-file limit for both sides.
# Loopback only; bounded in time, everything stops by itself.
#
#   benches/idle_rss.sh [CONNECTIONS]
set -euo pipefail
cd "$(dirname "$0")/.."
n="${1:-10000}"
# Each side (server, client) holds N sockets in its own process.
want=$((n + 1024))
if [ "$(ulimit -n)" != unlimited ] && [ "$(ulimit -n)" -lt "$want" ]; then
    ulimit -n "$want" || { echo "idle_rss.sh: cannot raise the open-file limit to $want (hard limit $(ulimit -Hn))" >&2; exit 1; }
fi
command -v python3 >/dev/null || { echo "idle_rss.sh: python3 is missing" >&2; exit 1; }
. benches/support/harness.sh
build_release hello_server
GW=127.0.0.1:18380; HELLO=127.0.0.1:18381
$RELEASE_DIR/rpcgate --listen $GW --admin 127.0.0.1:19390 --locator 127.0.0.1:20353 \
    --log-level warn >/dev/null 2>&1 &
gw=$!
$RELEASE_DIR/examples/hello_server $HELLO >/dev/null 2>&1 &
hello=$!
trap 'kill $gw $hello 2>/dev/null || true' EXIT
wait_for_urls "http://$GW/hello/http/" "http://$HELLO/"
measure() { # NAME ADDR PATH PID
    python3 - "$@" "$n" <<'PY'
import asyncio, sys
name, addr, path, pid, n = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4], int(sys.argv[5])
host, port = addr.split(":")
REQ = f"GET {path} HTTP/1.1\r\nHost: t\r\n\r\n".encode()
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
        assert head.startswith(b"HTTP/1.1 200"), head[:40]
        return r, w
async def main():
    before = rss()
    sem = asyncio.Semaphore(500)  # connect in waves, not all at once
    conns = await asyncio.wait_for(asyncio.gather(*(one(sem, i) for i in range(n))), 60)
    # Idle HTTP/1.1 connections give back their buffers after
    # limits.idle_release_ms (default 100 ms): measure the steady state.
    await asyncio.sleep(2)
    after = rss()
    per = (after - before) / len(conns)
    print(f"{name:8} RSS {before/1024:6.1f} MB before, {after/1024:6.1f} MB with {len(conns)} "
          f"idle keep-alive connections ({per:.1f} KB per connection)")
    with open("/tmp/rpcgate-idle.kb", "a") as f:
        f.write(f"{name} {per}\n")
    for _, w in conns:
        w.close()
asyncio.run(main())
PY
}
: > /tmp/rpcgate-idle.kb
measure rpcgate "$GW" /hello/http/ "$gw"
measure hello "$HELLO" / "$hello"
awk '{kb[$1] = $2} END {printf "per connection: rpcgate %.1f KB, plain hyper %.1f KB, ratio %.2f\n", kb["rpcgate"], kb["hello"], kb["rpcgate"] / kb["hello"]}' /tmp/rpcgate-idle.kb
