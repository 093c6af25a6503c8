#!/usr/bin/env bash
# Prices the operator layers side by side: one rpcgate binary, two
# gateways in config mode (A with every layer off, B with one on), each
# with its own locator and demo apps, loaded at once by benches/ab_load.sh.
# Prints one block per layer:
#
#   cors         B has [cors] allow_origins, requests carry an Origin
#   compression  B has [compression] enabled; GET /echo/http/ (about 600
#                bytes of JSON) with Accept-Encoding: gzip on both sides,
#                so B gzips every answer and A sends it as it is
#   json_log     B writes the JSON access log (to a file), A logs nothing
#
#   benches/ab_layers.sh BINARY [SECONDS] [ROUNDS] [LAYER...]   (defaults 8 3, all)
#
# The apps run in their own processes (not pinned), so the absolute req/s
# are not benches/load.sh's; the ratio B/A is the figure. Loopback only,
# bounded by SECONDS x ROUNDS per layer.
set -euo pipefail
cd "$(dirname "$0")/.."
[ $# -ge 1 ] || { echo "usage: $0 BINARY [SECONDS] [ROUNDS] [LAYER...]" >&2; exit 2; }
bin=$1; secs="${2:-8}"; rounds="${3:-3}"
shift $(($# < 3 ? $# : 3))
layers=("$@")
[ ${#layers[@]} -gt 0 ] || layers=(cors compression json_log)
[ -x "$bin" ] || { echo "ab_layers.sh: $bin is not an executable" >&2; exit 2; }
. benches/support/harness.sh
dir=$(mktemp -d /tmp/rpcgate-ab-layers.XXXXXX)
pids=()
trap 'kill ${pids[*]} 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$dir"' EXIT
# A locator and the hello and echo apps behind each side's locator port
# (the ports benches/ab_load.sh gives its two gateways).
for loc in 127.0.0.1:20153 127.0.0.1:20253; do
    "$bin" locator --log-level warn --listen $loc >/dev/null 2>&1 &
    pids+=($!)
    for _ in $(seq 1 100); do (exec 3<>"/dev/tcp/${loc%:*}/${loc#*:}") 2>/dev/null && break; sleep 0.1; done
    for app in hello echo; do
        "$bin" demo-app $app --log-level warn --locator $loc >/dev/null 2>&1 &
        pids+=($!)
    done
done
# Both configs name the apps, so their pools connect at start.
base='[services.hello]
[services.echo]'
printf '%s\n' "$base" > "$dir/off.toml"
for layer in "${layers[@]}"; do
    case $layer in
    cors)
        printf '%s\n[cors]\nallow_origins = ["https://app.example"]\n' "$base" > "$dir/on.toml"
        path=/hello/http/; header="Origin: https://app.example" ;;
    compression)
        printf '%s\n[compression]\nenabled = true\n' "$base" > "$dir/on.toml"
        path=/echo/http/; header="Accept-Encoding: gzip" ;;
    json_log)
        printf 'access_log = "json"\naccess_log_file = "%s"\n%s\n' "$dir/access.log" "$base" > "$dir/on.toml"
        path=/hello/http/; header= ;;
    *) echo "ab_layers.sh: no layer $layer (cors, compression, json_log)" >&2; exit 2 ;;
    esac
    echo "== $layer: A every layer off, B $layer on ($path${header:+, $header})"
    A_ARGS="--config $dir/off.toml" B_ARGS="--config $dir/on.toml" AB_PATH=$path AB_HEADER=$header \
        benches/ab_load.sh "$bin" "$bin" "$secs" "$rounds"
    rm -f "$dir/access.log"
done
