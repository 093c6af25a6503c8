# Sourced by pgo/refresh.sh and pgo/check.sh. `manifest` prints what the
# committed profile was recorded from: one `sha256  path` line per source
# file of the request path (pgo/request-path), with lines that are only a
# comment left out (so doc and comment edits do not count), then the
# profile's own hash. pgo/refresh.sh writes it to pgo/request-path.sum
# beside the profile; pgo/check.sh compares.

manifest() {
    local entry file
    grep -v '^\s*\(#\|$\)' pgo/request-path | while read -r entry; do
        if [ -d "$entry" ]; then
            find "$entry" -name '*.rs' -type f
        elif [ -f "$entry" ]; then
            echo "$entry"
        else
            echo "pgo/request-path: $entry does not exist" >&2
            return 1
        fi
    done | LC_ALL=C sort | while read -r file; do
        printf '%s  %s\n' "$(sed -e '/^[[:space:]]*\/\//d' "$file" | sha256sum | cut -d' ' -f1)" "$file"
    done
    printf '%s  %s\n' "$(sha256sum <pgo/rpcgate.profdata | cut -d' ' -f1)" pgo/rpcgate.profdata
}
