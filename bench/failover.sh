#!/usr/bin/env bash
# Failover benchmark for circuit breaking (outlier detection + retries), on
# loopback only.
#
# Four sharp-test-upstream hosts sit behind SHARP (2 workers, round robin).
# Under a steady open-loop load (sharp-loadgen, RATE req/s), one host fails
# for FAULT_S seconds and then recovers, in three ways: it answers 503 to
# everything, it stops answering (requests hang), it refuses connections
# (the process is killed, then restarted on the same port). Each fault runs
# twice: with outlier detection + retries ("protected") and with neither
# ("plain"). Printed per fault and set-up, for the phases before / during /
# after the fault: client-visible error rate (non-2xx, timeouts, connection
# errors) and the p99 of successful responses; for "protected" also when the
# bad host was ejected, from the ejections_active gauge polled every 100 ms.
#
#   bench/failover.sh                 (about 2 minutes)
#   RATE=2000 FAULT_S=20 BUILD=build-bench bench/failover.sh
#
# Environment (defaults in brackets): BUILD [build], RATE [1000], PRE_S [5],
# FAULT_S [10], POST_S [5], WORKERS [2], FAULTS [503 hang refuse],
# TIMEOUT_MS client timeout [2000], RESULTS [bench/results].
set -euo pipefail
cd "$(dirname "$0")/.."

BUILD=${BUILD:-build}
RATE=${RATE:-1000}
PRE_S=${PRE_S:-5}
FAULT_S=${FAULT_S:-10}
POST_S=${POST_S:-5}
WORKERS=${WORKERS:-2}
FAULTS=${FAULTS:-503 hang refuse}
TIMEOUT_MS=${TIMEOUT_MS:-2000}
RESULTS=${RESULTS:-bench/results}
NHOSTS=4

# ---- the two set-ups (the only place to edit them) ---------------------------
# Envoy's fields; the route part goes under route:, the cluster part under the cluster.
# The retry budget matters: with Envoy's default max_retries (3 concurrent
# retries) the burst of per-try timeouts when a host starts hanging overflows
# the retry breaker and those requests fail.
PROTECTED_ROUTE='
                  retry_policy:
                    retry_on: 5xx,reset,connect-failure
                    num_retries: 2
                    per_try_timeout: 0.25s
                    retry_host_predicate: [{ name: envoy.retry_host_predicates.previous_hosts }]
                    host_selection_retry_max_attempts: 3'
PROTECTED_CLUSTER='
    circuit_breakers:
      thresholds:
      - priority: DEFAULT
        retry_budget: { budget_percent: { value: 25 }, min_retry_concurrency: 10 }
    outlier_detection:
      consecutive_5xx: 5
      interval: 1s
      base_ejection_time: 3s
      max_ejection_percent: 50'
# -----------------------------------------------------------------------------

SHARP=$BUILD/proxy/sharp
UPSTREAM=$BUILD/test/upstream/sharp-test-upstream
LOADGEN=$BUILD/bench/loadgen/sharp-loadgen
for b in "$SHARP" "$UPSTREAM" "$LOADGEN"; do
    [ -x "$b" ] || { echo "missing $b: build first (meson setup $BUILD && ninja -C $BUILD)"; exit 1; }
done
for t in curl python3; do command -v $t >/dev/null || { echo "missing $t (make deps)"; exit 1; }; done

. bench/lib.sh
mkdir -p "$RESULTS"
W=$(mktemp -d /tmp/sharp-failover.XXXXXX)

UP_PIDS=(); UP_PORTS=()
start_host() { # index [port]
    start_test_upstream "$UPSTREAM" "$W/up$1.out" --port "${2:-0}" --name "host$1"
    UP_PIDS[$1]=$STARTED_PID; UP_PORTS[$1]=$STARTED_PORT
}

bootstrap() { # setup listen_port admin_port
    local route="
                  timeout: 1.5s" cluster="
    lb_policy: ROUND_ROBIN"
    if [ "$1" = protected ]; then route="$route$PROTECTED_ROUTE"; cluster="$cluster$PROTECTED_CLUSTER"; fi
    bench_bootstrap failover "$2" "$3" 0.25s "$route" "" "$cluster" "${UP_PORTS[@]}"
}

SHARP_PID=; LPORT=; APORT=
start_sharp() { # setup
    LPORT=$(port); APORT=$(port)
    bootstrap "$1" "$LPORT" "$APORT" > "$W/$1.yaml"
    start_sharp_on "$SHARP" "$W/$1.yaml" "$W/$1.sharp.log" "$WORKERS" "$LPORT" "$APORT"
    SHARP_PID=$STARTED_PID
}

# Polls the ejection gauge every 100 ms: "t_ms value" lines.
poll_ejections() { # out
    while :; do
        local v
        v=$(curl -s --max-time 1 "http://127.0.0.1:$APORT/stats?filter=^cluster\.service\.outlier_detection\.ejections_active$" |
            awk '{ print $2 }')
        echo "$(now_ms) ${v:-0}" >> "$1"
        sleep 0.1
    done
}

load() { # seconds out.json
    "$LOADGEN" --url "http://127.0.0.1:$LPORT/" --rate "$RATE" --duration "$1" --warmup 0 \
        --interval-ms 0 --timeout-ms "$TIMEOUT_MS" --output json > "$2"
}

fault_on() { # kind
    case $1 in
    503) curl -s "http://127.0.0.1:${UP_PORTS[0]}/admin/fault?status=503" > /dev/null ;;
    hang) curl -s "http://127.0.0.1:${UP_PORTS[0]}/admin/fault?hang=1" > /dev/null ;;
    refuse) stop "${UP_PIDS[0]}" ;;
    esac
}

fault_off() { # kind
    case $1 in
    503|hang) curl -s "http://127.0.0.1:${UP_PORTS[0]}/admin/fault" > /dev/null ;;
    refuse) start_host 0 "${UP_PORTS[0]}" ;;
    esac
}

echo "$NHOSTS hosts, $RATE req/s open loop, SHARP $WORKERS workers; ${PRE_S}s before, ${FAULT_S}s fault on host0, ${POST_S}s after"
rm -f "$RESULTS"/failover-*
for f in $FAULTS; do
    for setup in protected plain; do
        echo "$f / $setup: running"
        for i in $(seq 0 $(( NHOSTS - 1 ))); do start_host "$i"; done
        start_sharp "$setup"
        curl -s "http://127.0.0.1:$LPORT/" > /dev/null
        out="$RESULTS/failover-$f-$setup"
        : > "$out-ejections.txt"
        poll_ejections "$out-ejections.txt" & POLL=$!; PIDS+=("$POLL")
        load "$PRE_S" "$out-before.json"
        t_fault=$(now_ms)
        fault_on "$f"
        echo "$t_fault" > "$out-fault-start.txt"
        load "$FAULT_S" "$out-during.json"
        fault_off "$f"
        load "$POST_S" "$out-after.json"
        curl -s "http://127.0.0.1:$APORT/stats?filter=^cluster\.service\." > "$out-stats.txt"
        stop "$POLL"
        stop "$SHARP_PID"
        for i in $(seq 0 $(( NHOSTS - 1 ))); do stop "${UP_PIDS[$i]}"; done
    done
done

python3 - "$RESULTS" "$FAULTS" <<'PY' | tee "$RESULTS/failover-summary.txt"
import json, sys
res, faults = sys.argv[1], sys.argv[2].split()
print("\nclient-visible errors (non-2xx + timeouts + connection errors) and p99 of 2xx responses")
fmt = "{:<7} {:<10} {:>9} {:>9} {:>9}   {:>9} {:>9} {:>9}   {}"
print(fmt.format("fault", "setup", "err% pre", "during", "after", "p99 pre", "during", "after", "ejected after"))
for f in faults:
    for setup in ("protected", "plain"):
        base = f"{res}/failover-{f}-{setup}"
        errs, p99s = [], []
        for ph in ("before", "during", "after"):
            d = json.load(open(f"{base}-{ph}.json"))
            t = d["totals"]
            done = t["responses"] + t["errors"] + t["timeouts"] + t["client_dropped"]
            bad = done - t["2xx"]
            errs.append(f"{100.0 * bad / done:.3f}" if done else "-")
            p = d["latency_ms"]["p99"]
            p99s.append("-" if p is None else f"{p:.1f}ms")
        ej = "-"
        if setup == "protected":
            t0 = int(open(f"{base}-fault-start.txt").read())
            for line in open(f"{base}-ejections.txt"):
                ts, v = line.split()
                if int(ts) >= t0 and float(v) > 0:
                    ej = f"{(int(ts) - t0) / 1000:.2f} s"
                    break
        print(fmt.format(f, setup, *errs, *p99s, ej))
print("\ntargets: protected errors during the fault < 0.1%; bad host ejected within 2 s")
PY
