#!/usr/bin/env bash
# Coverage-guided fuzzing on a *stable* toolchain: the same sancov
# instrumentation cargo-fuzz uses, without a sanitizer (which needs nightly).
#
#   fuzz/run.sh [SECONDS_PER_TARGET] [TARGET...]
#   fuzz/run.sh --runs N [--max-time SECONDS] [TARGET...]
#   fuzz/run.sh --build-only
#   fuzz/run.sh --no-build ...   (reuse the last build)
#
# Bounded: each target stops by itself after SECONDS (default 30), or with
# --runs after N executions or --max-time SECONDS (default 3600), whichever
# comes first. Per target it prints the executions, the seconds, exec/s and
# the coverage, then a table of all of them. New inputs go to a scratch copy
# of the corpus, so the committed seeds stay small. A crash leaves its input
# in fuzz/artifacts/ and fails the script.
#
# On a shared machine, build under the cargo lock and fuzz without it:
#   flock /tmp/cargo.lock fuzz/run.sh --build-only
#   nice -n 19 fuzz/run.sh --no-build --runs 10000000 --max-time 1200
set -euo pipefail
cd "$(dirname "$0")"
all=(frame_decode split_stream header_table mux_ops proxy_header
    jsonrpc_convert route websocket_pack etcd_json)
secs=30
runs=""
build=1
fuzz=1
targets=()
while [ $# -gt 0 ]; do
    case "$1" in
    --runs) runs="$2"; secs=3600; shift 2 ;;
    --max-time) secs="$2"; shift 2 ;;
    --build-only) fuzz=0; shift ;;
    --no-build) build=0; shift ;;
    -h | --help) sed -n '2,19p' "$0"; exit 0 ;;
    [0-9]*) secs="$1"; shift ;;
    -*) echo "fuzz/run.sh: unknown option $1" >&2; exit 2 ;;
    *) targets+=("$1"); shift ;;
    esac
done
# --runs then --max-time, or --max-time then --runs: the cap given wins.
[ ${#targets[@]} -gt 0 ] || targets=("${all[@]}")
triple="$(rustc -vV | sed -n 's/^host: //p')"
if [ "$build" = 1 ]; then
    export RUSTFLAGS="-Cpasses=sancov-module -Cllvm-args=-sanitizer-coverage-level=4 \
-Cllvm-args=-sanitizer-coverage-inline-8bit-counters -Cllvm-args=-sanitizer-coverage-pc-table \
-Cllvm-args=-sanitizer-coverage-trace-compares --cfg fuzzing -Cdebug-assertions -Coverflow-checks"
    # An explicit --target keeps these flags off build scripts, as cargo-fuzz does.
    cargo build --release --target "$triple" --target-dir target/cov --bins
fi
[ "$fuzz" = 1 ] || exit 0
scratch="$(mktemp -d)"
trap 'rm -rf "$scratch"' EXIT
mkdir -p artifacts
summary=()
for t in "${targets[@]}"; do
    bin="target/cov/$triple/release/$t"
    [ -x "$bin" ] || { echo "fuzz/run.sh: no binary $bin (build first)" >&2; exit 1; }
    cp -r "corpus/$t" "$scratch/$t"
    limit=(-max_total_time="$secs")
    [ -z "$runs" ] || limit+=(-runs="$runs")
    echo "== $t (${runs:+$runs runs or }${secs}s)"
    start=$(date +%s.%N)
    "$bin" "$scratch/$t" "${limit[@]}" -rss_limit_mb=2048 -artifact_prefix="artifacts/$t-" \
        -print_final_stats=1 >"$scratch/$t.log" 2>&1 || true
    took=$(echo "$(date +%s.%N) - $start" | bc)
    grep -E '^(Done|#[0-9]+ *DONE)|panicked|ERROR|SUMMARY' "$scratch/$t.log" || true
    execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$scratch/$t.log" | tail -1)
    cov=$(grep -oE 'cov: [0-9]+' "$scratch/$t.log" | tail -1 | cut -d' ' -f2)
    rate=$(echo "${execs:-0} / $took" | bc)
    line="$(printf '%-16s %12s execs %8.1f s %8s exec/s  cov %s' "$t" "${execs:-?}" "$took" "$rate" "${cov:-?}")"
    echo "$line"
    summary+=("$line")
    if ls "artifacts/$t-"* >/dev/null 2>&1; then
        echo "fuzz/run.sh: $t found a crash: $(ls "artifacts/$t-"*)" >&2
        exit 1
    fi
done
echo "== summary ($(date -u +%Y-%m-%dT%H:%MZ), ${runs:+runs=$runs, }max ${secs}s per target, 0 crashes)"
printf '%s\n' "${summary[@]}"
