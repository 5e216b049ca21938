#!/usr/bin/env bash
# xDS at scale: time from a push to its application and to the first request
# served by it, for 10, 1,000 and 10,000 clusters, SHARP's RSS after each,
# and steady open-loop traffic with and without one push a second (CDS of
# 1,000 clusters, a 1,000-endpoint EDS assignment, routes). The pushes go
# through Envoy's filesystem subscription (files moved into place). See
# bench/xds_bench.py for the method; part 1b pushes the same from the test
# gRPC control plane over ADS (GRPC=0 skips it). In part 2, the worker's
# event loop turns longer than 1 ms and 5 ms during each run, from its
# enable_dispatcher_stats histogram: a push's stall of the data path seen
# directly rather than through the noise of a 2-core machine's p99. About
# 2.5 minutes.
#
#   bench/xds.sh
#   env: SIZES="10 1000 10000" RATE=2000 DURATION=15 STEADY_CLUSTERS=1000
#        EDS_ENDPOINTS=1000 BUILD=build RESULTS=bench/results KEEP=1 (keep the work dir)
set -euo pipefail
cd "$(dirname "$0")/.."
RESULTS=${RESULTS:-bench/results}
mkdir -p "$RESULTS"
/usr/bin/python3 bench/xds_bench.py | tee "$RESULTS/xds.txt"
