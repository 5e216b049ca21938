#!/usr/bin/env bash
# The eBPF probes' cost: CPU per request with the probes on and off (the
# kernel's run_time_ns per program), and memory with 10,000 upstream
# connections. See bench/probe_overhead.py for what is measured. Needs root
# (eBPF); everything runs over the loopback of a network namespace created
# here and deleted at the end.
#
#   bench/probe_overhead.sh                    (about 4 minutes)
#   MODE=cpu ROUNDS=5 bench/probe_overhead.sh
#   MODE=memory NCONN=10000 bench/probe_overhead.sh
#   MODE=cpu REQ_PATH='/?hdr=connection:close' PERF=1 bench/probe_overhead.sh
#
# Environment (defaults in brackets): BUILD [build], MODE [both: cpu,
# memory], REQ_PATH [/; /?hdr=connection:close: a connection per request],
# MODES [off auto], PERF [0; 1: perf record -a per round: the probes'
# programs and the kernel's dispatch to them, bpf_stats off], ROUNDS [3],
# DURATION_S [5], CONNS [32],
# NCONN [10000], H2_CONNS [20], CYCLES [2], HOLD_MS [20000], SETTLE_S [3],
# FLOOR [1; 0: no empty program measuring the accounting's floor per run].
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD=${BUILD:-build}
[ -x "$BUILD/proxy/sharp" ] && [ -x "$BUILD/test/upstream/sharp-test-upstream" ] || { echo "build first (make build)"; exit 1; }
[ "$(id -u)" = 0 ] || { echo "probe_overhead: needs root (eBPF)"; exit 1; }
command -v wrk >/dev/null || { echo "probe_overhead: needs wrk"; exit 1; }
command -v bpftool >/dev/null || [ -x /usr/sbin/bpftool ] || { echo "probe_overhead: needs bpftool"; exit 1; }
export PATH=$PATH:/usr/sbin
NS="sharp-cost-$$"
ip netns add "$NS"
trap 'ip netns del "$NS" 2>/dev/null || true' EXIT
ip -n "$NS" link set lo up
ip netns exec "$NS" /usr/bin/python3 bench/probe_overhead.py
