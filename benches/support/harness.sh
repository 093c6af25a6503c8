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

# Builds the release gateway (and the given examples) and sets RELEASE_DIR
# to where they are. The gateway is built on its own, with exactly the
# features `cargo build --release` gives it, so that the PGO profile
# (pgo/rustc-wrapper) matches it; examples unify dev-dependency features
# and are built apart. RPCGATE_PGO=0 builds without the profile into
# target/no-pgo: cargo does not track the wrapper's flag, so the two kinds
# of build must not share a directory.
build_release() { # [EXAMPLE...]
    local dir="${CARGO_TARGET_DIR:-target}" example
    [ "${RPCGATE_PGO:-1}" = 0 ] && dir="$dir/no-pgo"
    CARGO_TARGET_DIR="$dir" cargo build --release --bin rpcgate >&2
    for example in "$@"; do
        CARGO_TARGET_DIR="$dir" cargo build --release --example "$example" >&2
    done
    RELEASE_DIR="$dir/release"
    echo "$(basename "$0"): rpcgate built $(pgo/rustc-wrapper --status)" >&2
}

# Writes DIR/rpcgate.toml: a gateway config with an HTTP and an HTTPS
# listener and the given locator, and a throwaway certificate for it
# (openssl).
write_tls_config() { # DIR LOCATOR HTTP HTTPS
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 \
        -subj /CN=localhost -keyout "$1/key.pem" -out "$1/cert.pem" 2>/dev/null
    cat > "$1/rpcgate.toml" <<CONF
listen = "$3"
admin = ""
locators = ["$2"]
[tls]
listen = "$4"
[[tls.certificates]]
cert = "cert.pem"
key = "key.pem"
CONF
}
