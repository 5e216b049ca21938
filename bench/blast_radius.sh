#!/usr/bin/env bash
# Shuffle sharding's blast radius, by simulation (no network, no processes
# besides the simulator). Runs sharp-blast-radius: 1,000,000 customers on
# N in {10, 100} cells with shards of k in {1, 2, 3}; the share of customers
# that lose all their cells when f in {1, 2, 3} random cells fail, against
# the ideal C(f,k)/C(N,k) and plain sharding's f/N; how evenly customers
# spread over the k-sets; and how many move when a cell is added. Prints the
# tables, writes them to bench/results/blast-radius.txt, and exits non-zero
# when a row fails.
#
#   bench/blast_radius.sh                        (about 5 s on 2 cores)
#   BUILD=build-bench bench/blast_radius.sh --trials 1000 --threads 4
#
# Environment: BUILD [build], RESULTS [bench/results]. Arguments are passed
# to sharp-blast-radius (--customers, --trials, --seed, --shard-seed,
# --threads).
set -euo pipefail
cd "$(dirname "$0")/.."

BUILD=${BUILD:-build}
RESULTS=${RESULTS:-bench/results}
BIN=$BUILD/bench/blast_radius/sharp-blast-radius
if [[ ! -x $BIN ]]; then
    echo "blast_radius.sh: $BIN not found; build first (ninja -C $BUILD)" >&2
    exit 2
fi
mkdir -p "$RESULTS"
"$BIN" "$@" | tee "$RESULTS/blast-radius.txt"
