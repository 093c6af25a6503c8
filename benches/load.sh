#!/usr/bin/env bash
# Load harness: rpcgate standalone (gateway → `hello` demo app) against a
# plain hyper hello server, both serving a 13-byte body.
#
#   benches/load.sh [SECONDS] [CONNECTIONS] [ROUNDS]     (defaults 10 64 3)
#
# With WITH_NGINX=1, nginx (one worker, installed with apt if missing)
# proxying to the same hello server over keep-alive joins the rounds as a
# third target: the reference the ratio is usually compared with.
#
# Servers run on core 0, wrk on core 1 (taskset). The two targets alternate,
# ROUNDS times each, and the script prints req/s, p50/p99 latency, server
# CPU per request, and the rpcgate/hello ratio of the medians. Loopback
# only; every run is bounded by SECONDS and stops by itself.
set -euo pipefail
cd "$(dirname "$0")/.."
secs="${1:-10}"; conns="${2:-64}"; rounds="${3:-3}"
. benches/support/harness.sh
need_tools wrk
command -v taskset >/dev/null || { echo "load.sh: taskset is missing (util-linux)" >&2; exit 1; }
build_release hello_server
GW=127.0.0.1:18080; HELLO=127.0.0.1:18081
taskset -c 0 $RELEASE_DIR/rpcgate --listen $GW --admin 127.0.0.1:19090 --locator 127.0.0.1:20053 \
    --log-level warn >/tmp/rpcgate-load.out 2>&1 &
gw_pid=$!
taskset -c 0 $RELEASE_DIR/examples/hello_server $HELLO >/dev/null 2>&1 &
hello_pid=$!
nginx_pid=
trap 'kill $gw_pid $hello_pid $nginx_pid 2>/dev/null || true' EXIT
NGINX=127.0.0.1:18082
if [ "${WITH_NGINX:-0}" = 1 ]; then
    need_tools nginx
    dir=$(mktemp -d /tmp/rpcgate-nginx.XXXXXX)
    cat >"$dir/nginx.conf" <<CONF
worker_processes 1;
daemon off;
pid $dir/nginx.pid;
error_log $dir/error.log warn;
events { worker_connections 1024; }
http {
    access_log off;
    client_body_temp_path $dir; proxy_temp_path $dir; fastcgi_temp_path $dir;
    uwsgi_temp_path $dir; scgi_temp_path $dir;
    upstream hello { server $HELLO; keepalive 64; }
    server {
        listen $NGINX;
        location / {
            proxy_pass http://hello;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }
    }
}
CONF
    taskset -c 0 nginx -p "$dir" -c "$dir/nginx.conf" >/dev/null 2>&1 &
    nginx_pid=$!
fi
# Readiness: wait (bounded) until every target answers.
wait_for_urls "http://$GW/hello/http/" "http://$HELLO/"
nginx_cpu=
if [ -n "$nginx_pid" ]; then
    wait_for_urls "http://$NGINX/"
    # nginx's CPU is its master's and worker's plus the hello server's,
    # as rpcgate's includes its in-process app.
    nginx_cpu="$nginx_pid $(pgrep -P "$nginx_pid" | tr '\n' ' ') $hello_pid"
fi
cpu_ticks() { # PID...: their user + system time, summed
    local pid total=0
    for pid in "$@"; do
        total=$((total + $(awk '{print $14 + $15}' "/proc/$pid/stat")))
    done
    echo "$total"
}
hz=$(getconf CLK_TCK)
run() { # name pid url
    local before after out rps p50 p99 reqs
    before=$(cpu_ticks $2)
    out=$(taskset -c 1 wrk -t1 -c"$conns" -d"${secs}s" --latency "$3")
    after=$(cpu_ticks $2)
    rps=$(awk '/^Requests\/sec/ {print $2}' <<<"$out")
    reqs=$(awk '/requests in/ {print $1}' <<<"$out")
    p50=$(awk '$1 == "50%" {print $2}' <<<"$out")
    p99=$(awk '$1 == "99%" {print $2}' <<<"$out")
    local cpu_us
    cpu_us=$(awk -v t=$((after - before)) -v hz="$hz" -v n="$reqs" 'BEGIN {printf "%.1f", t / hz * 1e6 / n}')
    printf '%-8s %12s %10s %10s %14s\n' "$1" "$rps" "$p50" "$p99" "${cpu_us} us"
    echo "$1 $rps" >> /tmp/rpcgate-load.rps
    echo "$1 $cpu_us" >> /tmp/rpcgate-load.cpu
}
: > /tmp/rpcgate-load.rps; : > /tmp/rpcgate-load.cpu
printf '%-8s %12s %10s %10s %14s\n' target req/s p50 p99 cpu/request
for _ in $(seq 1 "$rounds"); do
    run rpcgate $gw_pid "http://$GW/hello/http/"
    run hello $hello_pid "http://$HELLO/"
    [ -z "$nginx_pid" ] || run nginx "$nginx_cpu" "http://$NGINX/"
done
g=$(median rpcgate /tmp/rpcgate-load.rps); h=$(median hello /tmp/rpcgate-load.rps)
awk -v g="$g" -v h="$h" 'BEGIN {printf "median req/s: rpcgate %s, hello %s, ratio rpcgate/hello = %.2f\n", g, h, g / h}'
# The same comparison by CPU time per request, which moves less when the
# machine's other tenants take core 0 away for a while.
gc=$(median rpcgate /tmp/rpcgate-load.cpu); hc=$(median hello /tmp/rpcgate-load.cpu)
awk -v g="$gc" -v h="$hc" 'BEGIN {printf "median CPU per request: rpcgate %s us, hello %s us, ratio hello/rpcgate = %.2f\n", g, h, h / g}'
if [ -n "$nginx_pid" ]; then
    n=$(median nginx /tmp/rpcgate-load.rps); nc=$(median nginx /tmp/rpcgate-load.cpu)
    awk -v n="$n" -v h="$h" -v g="$g" 'BEGIN {printf "median req/s: nginx %s, ratio nginx/hello = %.2f, rpcgate/nginx = %.2f\n", n, n / h, g / n}'
    awk -v n="$nc" -v h="$hc" 'BEGIN {printf "median CPU per request: nginx + hello %s us, ratio hello/nginx = %.2f\n", n, h / n}'
fi
