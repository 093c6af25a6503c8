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
for tool in wrk openssl; do
    if ! command -v "$tool" >/dev/null; then
        echo "installing $tool (apt)..." >&2
        apt-get update -qq >/dev/null && apt-get install -y -qq "$tool" >/dev/null
    fi
done
cargo build --release --bin rpcgate >&2
B=target/release/rpcgate
dir=$(mktemp -d)
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 \
    -subj /CN=localhost -keyout "$dir/key.pem" -out "$dir/cert.pem" 2>/dev/null
LOC=127.0.0.1:21053; HTTP=127.0.0.1:21080; HTTPS=127.0.0.1:21443
cat > "$dir/rpcgate.toml" <<CONF
listen = "$HTTP"
admin = ""
locators = ["$LOC"]
[tls]
listen = "$HTTPS"
[[tls.certificates]]
cert = "cert.pem"
key = "key.pem"
CONF
pids=()
trap 'kill "${pids[@]}" 2>/dev/null || true; rm -rf "$dir"' EXIT
taskset -c 0 $B locator --listen $LOC --log-level warn >/dev/null 2>&1 & pids+=($!)
taskset -c 0 $B demo-app hello --locator $LOC --log-level warn >/dev/null 2>&1 & pids+=($!)
taskset -c 0 $B --config "$dir/rpcgate.toml" --log-level warn >/dev/null 2>&1 & pids+=($!)
for url in "http://$HTTP/hello/http/" "https://$HTTPS/hello/http/"; do
    for _ in $(seq 1 100); do
        curl -skf -o /dev/null "$url" && break
        sleep 0.1
    done
    curl -skf -o /dev/null "$url" || { echo "tls_load.sh: $url never answered" >&2; exit 1; }
done
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
median() { grep "^$1 " "$dir/rps" | awk '{print $2}' | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
p=$(median http); s=$(median https)
awk -v p="$p" -v s="$s" 'BEGIN {printf "median req/s: http %s, https %s, ratio https/http = %.2f\n", p, s, s / p}'
