#!/usr/bin/env bash
# Long fuzzing runs: every libFuzzer target (make fuzz builds them) for
# SECONDS each (default 600), starting from the committed seeds. Prints each
# target's executions, corpus growth and findings, and keeps the grown
# corpora and any reproducers in RESULTS/fuzz/ (bench/results/ is ignored by
# git; copy new interesting inputs into test/fuzz/corpus/<target>/ by hand).
#
#   bench/fuzz.sh [seconds per target] [target ...]     env: BUILD=build-fuzz RESULTS=bench/results
set -uo pipefail
cd "$(dirname "$0")/.."
SECS=${1:-600}
shift $(( $# > 0 ? 1 : 0 ))
BUILD=${BUILD:-build-fuzz}
RESULTS=${RESULTS:-bench/results}
[ -d "$BUILD/test/fuzz" ] || { echo "build the fuzz targets first: make fuzz"; exit 1; }
rm -rf "$RESULTS/fuzz"
mkdir -p "$RESULTS/fuzz"
KEEP=$(cd "$RESULTS/fuzz" && pwd) scripts/fuzz.sh "$BUILD" "$SECS" "$@" | tee "$RESULTS/fuzz/summary.txt"
exit "${PIPESTATUS[0]}"
