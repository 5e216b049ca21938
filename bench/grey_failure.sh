#!/usr/bin/env bash
# Grey failure: 5% packet loss on one of three upstream hosts, plain SHARP
# (retries, Envoy's outlier detection) against SHARP with its kernel and latency outlier
# monitors; then the probes' overhead (--kernel-signals off / auto / tcp_info).
# See bench/grey_failure.py for what is measured. Needs root (network
# namespaces, iptables, eBPF); everything runs in namespaces it creates.
#
#   bench/grey_failure.sh                       (about 12 minutes)
#   LOSS_S=20 PRE_S=5 POST_S=10 OVERHEAD=0 bench/grey_failure.sh
#
# Environment (defaults in brackets): BUILD [build], RATE [200], PRE_S [10],
# LOSS_S [60], POST_S [20], LOSS [0.05], GREY [1], OVERHEAD [1], ROUNDS [3],
# OVERHEAD_S [10], CLEAN_S [180], SETUPS [plain kernel latency kernel+latency],
# RESULTS [bench/results].
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD=${BUILD:-build}
[ -x "$BUILD/proxy/sharp" ] && [ -x "$BUILD/bench/loadgen/sharp-loadgen" ] || { echo "build first (make build)"; exit 1; }
command -v wrk >/dev/null || { echo "grey_failure: needs wrk"; exit 1; }
exec /usr/bin/python3 bench/grey_failure.py
