#!/usr/bin/env bash
# Memory of the gateway during a streamed upload: a locator, the `upload`
# demo app and the release gateway (its `upload` service with
# stream_request_body = true, body_limit 1 GiB), then SIZE bytes (default
# 1 GiB) sent with curl from a generator as one chunked upload (`-T -`
# streams stdin; `--data-binary @-` would read it all into curl first).
# Prints the gateway's VmRSS before and after and its VmHWM (peak), and
# checks the peak stays within 32 MB of the RSS before. Loopback only;
# bounded (curl --max-time), everything stops by itself.
#
#   benches/upload_rss.sh [SIZE]
set -euo pipefail
cd "$(dirname "$0")/.."
size="${1:-1073741824}"
. benches/support/harness.sh
need_tools curl
build_release
GW=127.0.0.1:18480; LOCATOR=127.0.0.1:20453
dir=$(mktemp -d /tmp/rpcgate-upload.XXXXXX)
cat >"$dir/rpcgate.toml" <<CONF
listen = "$GW"
admin = ""
locators = ["$LOCATOR"]
[request]
body_limit = 1073741824
timeout_ms = 600000
[services.upload]
stream_request_body = true
CONF
$RELEASE_DIR/rpcgate --log-level warn locator --listen $LOCATOR >"$dir/locator.out" 2>&1 &
locator=$!
gw=; app=
trap 'kill $gw $app $locator 2>/dev/null || true; rm -rf "$dir"' EXIT
$RELEASE_DIR/rpcgate --log-level warn demo-app upload --locator $LOCATOR >"$dir/app.out" 2>&1 &
app=$!
$RELEASE_DIR/rpcgate --log-level warn --config "$dir/rpcgate.toml" >"$dir/gw.out" 2>&1 &
gw=$!
# Readiness (bounded): the app published and the gateway serving it.
for _ in $(seq 1 100); do
    curl -sf -o /dev/null --data-binary x "http://$GW/upload/http/" && break
    sleep 0.1
done
curl -sf -o /dev/null --data-binary x "http://$GW/upload/http/" \
    || { echo "upload_rss.sh: the gateway never served /upload/http/" >&2; cat "$dir"/*.out >&2; exit 1; }
kb() { awk -v k="$2" '$1 == k":" {print $2}' "/proc/$1/status"; }
# A small upload first, so the buffers any upload needs are in place.
head -c 1048576 /dev/zero | curl -sf -o /dev/null -T - -X POST -H 'Expect:' "http://$GW/upload/http/"
before=$(kb $gw VmRSS)
start=$(date +%s.%N)
# (`yes` ends by SIGPIPE when `head` has enough: not a failure.)
answer=$({ yes 'rpcgate streamed upload 0123456789' || true; } | head -c "$size" \
    | curl -sS --max-time 600 -T - -X POST -H 'Expect:' \
        -H 'Content-Type: application/octet-stream' "http://$GW/upload/http/")
end=$(date +%s.%N)
after=$(kb $gw VmRSS); peak=$(kb $gw VmHWM)
echo "app answered: $answer"
echo "$answer" | grep -q "\"bytes\":$size" || { echo "upload_rss.sh: the app did not get $size bytes" >&2; exit 1; }
awk -v b="$before" -v a="$after" -v p="$peak" -v s="$size" -v t0="$start" -v t1="$end" 'BEGIN {
    printf "uploaded %.0f MiB in %.1f s (%.0f MiB/s)\n", s / 1048576, t1 - t0, s / 1048576 / (t1 - t0)
    printf "gateway VmRSS before %.1f MB, after %.1f MB; VmHWM (peak) %.1f MB\n", b / 1024, a / 1024, p / 1024
    printf "peak - before: %.1f MB (limit 32 MB): %s\n", (p - b) / 1024, (p - b < 32 * 1024) ? "ok" : "OVER"
    exit (p - b < 32 * 1024) ? 0 : 1
}'
