#!/usr/bin/env bash
# Records pgo/rpcgate.profdata, the profile pgo/rustc-wrapper feeds to
# optimised builds, and pgo/request-path.sum, what it was recorded from.
# Re-run it after changes to the request path: a function whose code
# changed since the recording gets no profile (it is optimised as without
# PGO), so a stale profile loses its gain gradually, never breaks a build;
# pgo/check.sh (a CI step) fails until it is re-run (pgo/README.md).
#
#   pgo/refresh.sh [SECONDS]      (default 8: the main load phase)
#
# 1. builds an instrumented rpcgate (target/pgo-generate);
# 2. trains it on loopback with the traffic its users send: the standalone
#    gateway (HTTP/1.1 keep-alive GETs to `hello`, POSTs with bodies to
#    `echo`, h2c, streamed replies, app errors, unknown routes, the
#    routing group) and the TLS listener (a locator, the `hello` demo app
#    and the gateway as separate processes, as in benches/tls_load.sh);
# 3. merges the profiles (llvm-profdata of rustc's LLVM version, installed
#    with apt if missing) into pgo/rpcgate.profdata, keeping only what ran.
#
# Needs wrk, curl and openssl (installed with apt if missing). Loopback
# only; every phase is bounded and stops by itself.
set -euo pipefail
cd "$(dirname "$0")/.."
secs="${1:-8}"
. benches/support/harness.sh
need_tools wrk curl openssl

info=$(rustc -vV)
llvm=$(sed -n 's/^LLVM version: \([0-9]*\).*/\1/p' <<<"$info")
host=$(sed -n 's/^host: //p' <<<"$info")
profdata=$(command -v "llvm-profdata-$llvm" || true)
if [ -z "$profdata" ]; then
    echo "installing llvm-$llvm (apt) for llvm-profdata..." >&2
    apt-get update -qq >/dev/null && apt-get install -y -qq "llvm-$llvm" >/dev/null
    profdata=$(command -v "llvm-profdata-$llvm")
fi

data=$(mktemp -d /tmp/rpcgate-pgo.XXXXXX)
pids=()
trap 'kill "${pids[@]}" 2>/dev/null || true; wait; rm -rf "$data"' EXIT
RUSTFLAGS="-Cprofile-generate=/tmp/rpcgate-pgo-default" RPCGATE_PGO=0 \
    cargo build --release --bin rpcgate --target-dir target/pgo-generate >&2
B=target/pgo-generate/release/rpcgate
export LLVM_PROFILE_FILE="$data/rpcgate-%p.profraw"

# Stops the processes started since the last call, gracefully (the
# profile is written at exit), and waits for them (bounded by their own
# shutdown deadline).
stop_all() {
    kill -TERM "${pids[@]}" 2>/dev/null || true
    wait "${pids[@]}" 2>/dev/null || true
    pids=()
}

echo "training: standalone gateway" >&2
GW=127.0.0.1:22080
$B --listen $GW --admin 127.0.0.1:22090 --locator 127.0.0.1:22053 --log-level warn \
    >/dev/null 2>&1 & pids+=($!)
wait_for_urls "http://$GW/hello/http/" "http://$GW/echo/http/"
wrk -t1 -c64 -d"${secs}s" "http://$GW/hello/http/" >/dev/null
cat > "$data/post.lua" <<'LUA'
wrk.method = "POST"
wrk.body = string.rep("0123456789abcdef", 256)
wrk.headers["Content-Type"] = "application/octet-stream"
LUA
wrk -t1 -c16 -d"$((secs / 4 + 1))s" -s "$data/post.lua" "http://$GW/echo/http/upload?x=1" >/dev/null
wrk -t1 -c16 -d"$((secs / 4 + 1))s" -H 'X-Cocaine-Service: echo' -H 'X-Cocaine-Event: http' \
    "http://$GW/any/uri" >/dev/null
# One request per connection: curl 7.88 fails a second h2c request on a
# reused connection ("Error in the HTTP2 framing layer"), against a plain
# hyper server too.
for _ in $(seq 1 50); do
    curl -s --http2-prior-knowledge -o /dev/null "http://$GW/hello/http/" || true
done
for path in stream/http/ canary/http/ 'fail/http/?category=43&code=7&message=boom' nowhere/ x; do
    for _ in $(seq 1 20); do curl -s -o /dev/null "http://$GW/$path" || true; done
done
stop_all

echo "training: TLS listener" >&2
LOC=127.0.0.1:22153; HTTP=127.0.0.1:22180; HTTPS=127.0.0.1:22443
write_tls_config "$data" $LOC $HTTP $HTTPS
$B locator --listen $LOC --log-level warn >/dev/null 2>&1 & pids+=($!)
$B demo-app hello --locator $LOC --log-level warn >/dev/null 2>&1 & pids+=($!)
$B --config "$data/rpcgate.toml" --log-level warn >/dev/null 2>&1 & pids+=($!)
wait_for_urls "https://$HTTPS/hello/http/"
wrk -t1 -c64 -d"$((secs / 2 + 1))s" "https://$HTTPS/hello/http/" >/dev/null
stop_all

"$profdata" merge --sparse -o pgo/rpcgate.profdata "$data"/rpcgate-*.profraw
# What it was recorded from, for pgo/check.sh (CI fails once the request
# path's code differs; pgo/README.md).
. pgo/manifest.sh
manifest >pgo/request-path.sum
# The wrapper applies the profile only where it can be read and matches.
sed -i -e "s/^profile_target=.*/profile_target=$host/" -e "s/^profile_llvm=.*/profile_llvm=$llvm/" \
    pgo/rustc-wrapper
echo "wrote pgo/rpcgate.profdata ($(wc -c <pgo/rpcgate.profdata) bytes, $host, LLVM $llvm);" \
    "run 'cargo clean --release' so the next release build uses it throughout" >&2
