#!/usr/bin/env bash
# The scaling agent in a closed loop on loopback: replica processes, a
# replica controller that polls SHARP's KEDA external scaler and starts or
# stops replicas with a boot delay, sharp-loadgen running a flash crowd
# scaled to this machine; the agent (ACTIVE) against SHARP's HPA rule (OFF)
# in the same harness. See bench/flash_crowd.py for the method and the
# knobs. About 9 minutes with the defaults.
#
#   bench/flash_crowd.sh
#   env: BASE=100 PEAK=1000 BASE_S=45 RAMP_S=60 PEAK_S=150 BOOT_S=30 POLL_S=15
#        SYNC_S=15 SLOTS=10 SERVICE_MS=100 MIN_REPLICAS=4 MAX_REPLICAS=100
#        INITIAL_REPLICAS=(the base load at 70% of their capacity)
#        MAX_REQUESTS=(1024 x SERVICE_MS / 40: the simulator's breaker in time)
#        SLO_P99_MS=500 CONTROLLERS="agent hpa" WEIGHTS=... BUILD=build
#        RESULTS=bench/results KEEP=1 (keep the work directories)
set -euo pipefail
cd "$(dirname "$0")/.."
RESULTS=${RESULTS:-bench/results}
mkdir -p "$RESULTS"
ulimit -n 65536 2>/dev/null || true
/usr/bin/python3 bench/flash_crowd.py | tee "$RESULTS/flash_crowd.txt"
