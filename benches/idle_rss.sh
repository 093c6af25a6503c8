#!/usr/bin/env bash
# Memory of the gateway holding many idle keep-alive connections: starts
# rpcgate standalone, opens N connections (default 10,000), sends one
# request on each and keeps it open, then reads the gateway's RSS. The
# connections come from one asyncio process (python3). Raises the open-file
# limit for both. Loopback only; bounded in time, everything stops by itself.
#
#   benches/idle_rss.sh [CONNECTIONS]
set -euo pipefail
cd "$(dirname "$0")/.."
n="${1:-10000}"
# Each side (gateway, client) holds N sockets in its own process.
want=$((n + 1024))
if [ "$(ulimit -n)" != unlimited ] && [ "$(ulimit -n)" -lt "$want" ]; then
    ulimit -n "$want" || { echo "idle_rss.sh: cannot raise the open-file limit to $want (hard limit $(ulimit -Hn))" >&2; exit 1; }
fi
command -v python3 >/dev/null || { echo "idle_rss.sh: python3 is missing" >&2; exit 1; }
cargo build --release --bin rpcgate >&2
GW=127.0.0.1:18380
target/release/rpcgate --listen $GW --admin 127.0.0.1:19390 --locator 127.0.0.1:20353 \
    --log-level warn >/dev/null 2>&1 &
gw=$!
trap 'kill $gw 2>/dev/null || true' EXIT
. benches/support/harness.sh
wait_for_urls "http://$GW/hello/http/"
rss() { awk '/VmRSS/ {print $2}' "/proc/$gw/status"; }
before=$(rss)
python3 - "$GW" "$n" "$gw" "$before" <<'PY'
import asyncio, sys
host, port = sys.argv[1].split(":"); n = int(sys.argv[2]); pid = sys.argv[3]; before = int(sys.argv[4])
REQ = b"GET /hello/http/ HTTP/1.1\r\nHost: t\r\n\r\n"
async def one(sem):
    async with sem:
        r, w = await asyncio.open_connection(host, int(port))
        w.write(REQ); await w.drain()
        head = await r.readuntil(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200"), head[:40]
        return r, w
def rss():
    with open(f"/proc/{pid}/status") as f:
        return next(int(l.split()[1]) for l in f if l.startswith("VmRSS"))
async def main():
    sem = asyncio.Semaphore(500)  # connect in waves, not all at once
    conns = await asyncio.wait_for(asyncio.gather(*(one(sem) for _ in range(n))), 60)
    after = rss()
    print(f"connections: {len(conns)} idle keep-alive (one request served on each)")
    print(f"gateway RSS: {before/1024:.1f} MB before, {after/1024:.1f} MB with them "
          f"({(after-before)/len(conns):.1f} KB per connection)")
    for _, w in conns:
        w.close()
asyncio.run(main())
PY
