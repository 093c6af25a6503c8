#!/usr/bin/env bash
# Coverage-guided fuzzing on a *stable* toolchain: the same sancov
# instrumentation cargo-fuzz uses, without a sanitizer (which needs nightly).
#
#   fuzz/run.sh [SECONDS_PER_TARGET] [TARGET...]
#
# Bounded: each target stops by itself after SECONDS (default 30). New
# inputs go to a scratch copy of the corpus, so the committed seeds stay
# small. A crash leaves its input in fuzz/artifacts/ and fails the script.
set -euo pipefail
cd "$(dirname "$0")"
secs="${1:-30}"
shift || true
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(frame_decode split_stream header_table mux_ops proxy_header)
triple="$(rustc -vV | sed -n 's/^host: //p')"
export RUSTFLAGS="-Cpasses=sancov-module -Cllvm-args=-sanitizer-coverage-level=4 \
-Cllvm-args=-sanitizer-coverage-inline-8bit-counters -Cllvm-args=-sanitizer-coverage-pc-table \
-Cllvm-args=-sanitizer-coverage-trace-compares --cfg fuzzing -Cdebug-assertions -Coverflow-checks"
# An explicit --target keeps these flags off build scripts, as cargo-fuzz does.
cargo build --release --target "$triple" --target-dir target/cov --bins
scratch="$(mktemp -d)"
trap 'rm -rf "$scratch"' EXIT
mkdir -p artifacts
for t in "${targets[@]}"; do
    cp -r "corpus/$t" "$scratch/$t"
    echo "== $t (${secs}s)"
    "target/cov/$triple/release/$t" "$scratch/$t" -max_total_time="$secs" \
        -rss_limit_mb=2048 -artifact_prefix="artifacts/$t-" -print_final_stats=1 2>&1 \
        | grep -E '^(Done|#[0-9]+ *DONE|stat::number_of_executed_units)|panicked|ERROR|SUMMARY' || true
    if ls "artifacts/$t-"* >/dev/null 2>&1; then
        echo "fuzz/run.sh: $t found a crash: $(ls "artifacts/$t-"*)" >&2
        exit 1
    fi
done
