# Shared by the load scripts in benches/ (sourced, not run): tools, a
# bounded readiness wait, and the median of recorded runs.

# Installs each missing tool with apt (the machines here run as root).
need_tools() {
    local tool
    for tool in "$@"; do
        if ! command -v "$tool" >/dev/null; then
            echo "installing $tool (apt)..." >&2
            apt-get update -qq >/dev/null && apt-get install -y -qq "$tool" >/dev/null
        fi
    done
}

# Waits (10 s at most) until every URL answers; exits otherwise.
wait_for_urls() {
    local url
    for url in "$@"; do
        for _ in $(seq 1 100); do
            curl -skf -o /dev/null "$url" && break
            sleep 0.1
        done
        curl -skf -o /dev/null "$url" || { echo "$(basename "$0"): $url never answered" >&2; exit 1; }
    done
}

# The median of the values recorded as "NAME VALUE" lines in FILE.
median() { # NAME FILE
    grep "^$1 " "$2" | awk '{print $2}' | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'
}
