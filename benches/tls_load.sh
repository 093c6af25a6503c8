#!/usr/bin/env bash
# HTTPS against cleartext on keep-alive connections, same gateway, same run:
# a locator, the `hello` demo app and rpcgate --config (HTTP and HTTPS
# listeners) on core 0, wrk on core 1, alternating ROUNDS times.
#
#   benches/tls_load.sh [SECONDS] [CONNECTIONS] [ROUNDS]   (defaults 10 64 3)
#
# Needs wrk (installed with apt if missing) and openssl (for a throwaway
# certificate). Loopback only; every run stops by itself.
set -euo pipefail
cd "$(dirname "$0")/.."
secs="${1:-10}"; conns="${2:-64}"; rounds="${3:-3}"
. benches/support/harness.sh
need_tools wrk openssl
build_release
B=$RELEASE_DIR/rpcgate
dir=$(mktemp -d)
LOC=127.0.0.1:21053; HTTP=127.0.0.1:21080; HTTPS=127.0.0.1:21443
write_tls_config "$dir" $LOC $HTTP $HTTPS
pids=()
trap 'kill "${pids[@]}" 2>/dev/null || true; rm -rf "$dir"' EXIT
taskset -c 0 $B locator --listen $LOC --log-level warn >/dev/null 2>&1 & pids+=($!)
taskset -c 0 $B demo-app hello --locator $LOC --log-level warn >/dev/null 2>&1 & pids+=($!)
taskset -c 0 $B --config "$dir/rpcgate.toml" --log-level warn >/dev/null 2>&1 & pids+=($!)
wait_for_urls "http://$HTTP/hello/http/" "https://$HTTPS/hello/http/"
: > "$dir/rps"
printf '%-8s %12s %10s %10s\n' target req/s p50 p99
for _ in $(seq 1 "$rounds"); do
    for target in http https; do
        if [ $target = http ]; then url="http://$HTTP/hello/http/"; else url="https://$HTTPS/hello/http/"; fi
        out=$(taskset -c 1 wrk -t1 -c"$conns" -d"${secs}s" --latency "$url")
        rps=$(awk '/^Requests\/sec/ {print $2}' <<<"$out")
        printf '%-8s %12s %10s %10s\n' $target "$rps" "$(awk '$1 == "50%" {print $2}' <<<"$out")" \
            "$(awk '$1 == "99%" {print $2}' <<<"$out")"
        echo "$target $rps" >> "$dir/rps"
    done
done
p=$(median http "$dir/rps"); s=$(median https "$dir/rps")
awk -v p="$p" -v s="$s" 'BEGIN {printf "median req/s: http %s, https %s, ratio https/http = %.2f\n", p, s, s / p}'
