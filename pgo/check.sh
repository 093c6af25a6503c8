#!/usr/bin/env bash
# Fails when the committed PGO profile (pgo/rpcgate.profdata) no longer
# covers the request path: when a source file of pgo/request-path changed
# (code, not comments), appeared or went away since pgo/refresh.sh recorded
# the profile, or the profile changed without being re-recorded. A function
# whose code changed builds without profile (LLVM's hash no longer matches),
# and one that moved loses its record, so a stale profile costs throughput
# silently (issue 26: 0.587 → 0.532 of plain hyper over 28 commits).
#
#   pgo/check.sh        exit 0 when current, 1 with the files that differ
#
# The fix is always `pgo/refresh.sh` (a few minutes), then committing
# pgo/rpcgate.profdata, pgo/request-path.sum and pgo/rustc-wrapper
# together. A CI step (.ci/run); it reads files only, about a second.
set -euo pipefail
cd "$(dirname "$0")/.."
. pgo/manifest.sh

if [ ! -f pgo/request-path.sum ]; then
    echo "pgo: pgo/request-path.sum is missing: run pgo/refresh.sh" >&2
    exit 1
fi
now=$(manifest)
if [ "$now" = "$(cat pgo/request-path.sum)" ]; then
    echo "pgo: the profile covers the request path ($(grep -c . pgo/request-path.sum) entries as recorded)"
    exit 0
fi
echo "pgo: pgo/rpcgate.profdata is stale: the request path changed since it was recorded:" >&2
{ diff <(cat pgo/request-path.sum) <(printf '%s\n' "$now") || true; } |
    sed -n 's/^[<>] [0-9a-f]*  //p' | LC_ALL=C sort -u | sed 's/^/  /' >&2
echo "pgo: run pgo/refresh.sh and commit pgo/rpcgate.profdata with pgo/request-path.sum (pgo/README.md)" >&2
exit 1
