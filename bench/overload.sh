#!/usr/bin/env bash
# Overload benchmark for adaptive concurrency (issue 3), on loopback only.
#
# A service with a real capacity limit (sharp-test-upstream /work: SLOTS slots
# of SERVICE_MS each, FIFO queue, capacity = SLOTS*1000/SERVICE_MS req/s) sits
# behind SHARP in four set-ups: no limiter, a static circuit-breaker limit
# (max_requests), Envoy's gradient controller and SHARP's AIMD controller. For
# each, the open-loop sharp-loadgen offers 0.5x, 1x and 3x the capacity, then
# runs a slowdown phase in which the service time doubles and later recovers,
# and a capacity phase in which half the service's slots go away and come back.
# Prints one table (goodput, admitted success, shed rate, admitted latency,
# pass/fail of the 3x targets) and writes raw JSON, CSV time series and PNG
# plots to bench/results/. A variant whose bootstrap does not validate
# (filter not built) is skipped with the reason.
#
#   bench/overload.sh                       (about 8 minutes with all variants)
#   DUR=6 WARMUP=2 VARIANTS="none static" BUILD=build-bench bench/overload.sh
#
# Environment (defaults in brackets): BUILD [build], DUR measured seconds per
# load level [20], WARMUP [3], SLOW_SEG seconds per slowdown segment [DUR/2],
# SLOTS [8], SERVICE_MS [20], WORKERS SHARP workers [2], VARIANTS [none static
# gradient aimd], LOADS [0.5 1 3], SLOW_LOAD [1.5], STATIC_LIMIT [2*SLOTS],
# BASE_LOAD [0.25], BASE_DUR [10], TIMEOUT_MS [5000], MAX_CONNS [2000],
# ARRIVAL [poisson], RESULTS [bench/results], STAT_PREFIX [overload].
set -euo pipefail
cd "$(dirname "$0")/.."

BUILD=${BUILD:-build}
DUR=${DUR:-20}
WARMUP=${WARMUP:-3}
SLOW_SEG=${SLOW_SEG:-$(( (DUR + 1) / 2 ))}
SLOTS=${SLOTS:-8}
SERVICE_MS=${SERVICE_MS:-20}
WORKERS=${WORKERS:-2}
VARIANTS=${VARIANTS:-none static gradient aimd}
LOADS=${LOADS:-0.5 1 3}
SLOW_LOAD=${SLOW_LOAD:-1.5}
STATIC_LIMIT=${STATIC_LIMIT:-$((2 * SLOTS))}
BASE_LOAD=${BASE_LOAD:-0.25}
BASE_DUR=${BASE_DUR:-10}
TIMEOUT_MS=${TIMEOUT_MS:-5000}
MAX_CONNS=${MAX_CONNS:-2000}
ARRIVAL=${ARRIVAL:-poisson}
RESULTS=${RESULTS:-bench/results}
POLL_S=0.2

# Stats: the HCM stat_prefix, and where each controller's gauges live.
STAT_PREFIX=${STAT_PREFIX:-overload}
GRADIENT_STATS=${GRADIENT_STATS:-http.$STAT_PREFIX.adaptive_concurrency.gradient_controller}
AIMD_STATS=${AIMD_STATS:-http.$STAT_PREFIX.adaptive_concurrency.aimd_controller}

# ---- controller configs (the only place to edit them) -----------------------
# Envoy's gradient controller (typed_config AdaptiveConcurrency).
GRADIENT_CONTROLLER_CONFIG='
  sample_aggregate_percentile: { value: 50 }
  concurrency_limit_params:
    concurrency_update_interval: 0.1s
    max_concurrency_limit: 1000
  min_rtt_calc_params:
    interval: 10s
    request_count: 50
    jitter: { value: 15 }
    min_concurrency: 3
    buffer: { value: 25 }'
# SHARP's AIMD controller (typed_config AimdAdaptiveConcurrency). Its fields are
# not final: {} keeps the filter's defaults.
AIMD_CONTROLLER_CONFIG='{}'
# -----------------------------------------------------------------------------

SHARP=$BUILD/proxy/sharp
UPSTREAM=$BUILD/test/upstream/sharp-test-upstream
LOADGEN=$BUILD/bench/loadgen/sharp-loadgen
for b in "$SHARP" "$UPSTREAM" "$LOADGEN"; do
    [ -x "$b" ] || { echo "missing $b: build first (meson setup $BUILD && ninja -C $BUILD)"; exit 1; }
done
for t in curl python3; do command -v $t >/dev/null || { echo "missing $t (make deps)"; exit 1; }; done
HAVE_GNUPLOT=1
command -v gnuplot >/dev/null || { HAVE_GNUPLOT=0; echo "gnuplot not found (make deps): no plots"; }

CAP=$(( SLOTS * 1000 / SERVICE_MS ))
. bench/lib.sh
mkdir -p "$RESULTS"
W=$(mktemp -d /tmp/sharp-overload.XXXXXX)
rate_of() { awk -v x="$1" -v c="$CAP" 'BEGIN { printf "%g", x * c }'; }

# ---- processes ----------------------------------------------------------------

UP_PID=; UPORT=
start_upstream() {
    start_test_upstream "$UPSTREAM" "$W/upstream.out" --port 0 --slots "$SLOTS" \
        --service-time-ms "$SERVICE_MS" --name overload
    UP_PID=$STARTED_PID; UPORT=$STARTED_PORT
}

# Waits until the service has neither requests in service nor queued.
wait_upstream_idle() {
    for _ in $(seq 150); do
        curl -s --max-time 1 "http://127.0.0.1:$UPORT/admin/stats" |
            grep -q '"in_service": 0, "queued": 0' && return 0
        sleep 0.1
    done
    echo "  (upstream still busy after 15 s)"
}

bootstrap() { # variant listener_port admin_port upstream_port
    local filter="" breakers
    local big=1000000 maxrq=1000000
    [ "$1" = static ] && maxrq=$STATIC_LIMIT
    case $1 in
    gradient) filter="
          - name: envoy.filters.http.adaptive_concurrency
            typed_config:
              \"@type\": type.googleapis.com/envoy.extensions.filters.http.adaptive_concurrency.v3.AdaptiveConcurrency
              gradient_controller_config:$(sed 's/^/              /' <<<"$GRADIENT_CONTROLLER_CONFIG")" ;;
    aimd) filter="
          - name: envoy.filters.http.adaptive_concurrency
            typed_config:
              \"@type\": type.googleapis.com/sharp.extensions.filters.http.adaptive_concurrency.v1.AimdAdaptiveConcurrency
              aimd_controller_config: $AIMD_CONTROLLER_CONFIG" ;;
    esac
    # Only max_requests may limit: the other thresholds (SHARP's defaults are
    # Envoy's 1024) are lifted so that "no limiter" really has none.
    breakers="
    circuit_breakers:
      thresholds:
      - { max_connections: $big, max_pending_requests: $big, max_requests: $maxrq, max_retries: 3 }"
    bench_bootstrap "$STAT_PREFIX" "$2" "$3" 1s "" "$filter" "$breakers" "$4"
}

SHARP_PID=; LPORT=; APORT=
start_sharp() { # variant
    LPORT=$(port); APORT=$(port)
    bootstrap "$1" "$LPORT" "$APORT" "$UPORT" > "$W/$1.yaml"
    start_sharp_on "$SHARP" "$W/$1.yaml" "$W/$1.sharp.log" "$WORKERS" "$LPORT" "$APORT"
    SHARP_PID=$STARTED_PID
}

# Polls SHARP's admin every POLL_S into the variant's CSV until killed.
# Columns: phase,t_s,concurrency_limit,rq_blocked,min_rtt_msecs,sample_rtt_msecs,upstream_rq_active
poll_stats() { # variant phase t0_ms csv
    local ctrl="" fixed=""
    case $1 in gradient) ctrl=$GRADIENT_STATS ;; aimd) ctrl=$AIMD_STATS ;; static) fixed=$STATIC_LIMIT ;; esac
    while :; do
        local t body
        t=$(now_ms)
        body=$(curl -s --max-time 1 -G "http://127.0.0.1:$APORT/stats" \
            --data-urlencode "filter=adaptive_concurrency|^cluster\.service\.upstream_rq_active$" || true)
        awk -v ph="$2" -v t="$(( t - $3 ))" -v c="$ctrl." -v fixed="$fixed" '
            { sub(/:$/, "", $1); v[$1] = $2 }
            END {
                lim = (c != "." && (c "concurrency_limit") in v) ? v[c "concurrency_limit"] : fixed
                printf "%s,%.3f,%s,%s,%s,%s,%s\n", ph, t / 1000, lim, v[c "rq_blocked"],
                       v[c "min_rtt_msecs"], v[c "sample_rtt_msecs"], v["cluster.service.upstream_rq_active"]
            }' <<<"$body" >> "$4"
        sleep "$POLL_S"
    done
}

# One loadgen run with the stats poller alongside. Extra args go to the loadgen.
run_load() { # variant phase rate duration interval_ms [loadgen args...]
    local v=$1 ph=$2 rate=$3 dur=$4 iv=$5; shift 5
    local t0; t0=$(now_ms)
    poll_stats "$v" "$ph" "$t0" "$RESULTS/overload-$v-limit.csv" & POLL_PID=$!; PIDS+=("$POLL_PID")
    "$LOADGEN" --url "http://127.0.0.1:$LPORT/work" --rate "$rate" --duration "$dur" --warmup "$WARMUP" \
        --interval-ms "$iv" --timeout-ms "$TIMEOUT_MS" --max-connections "$MAX_CONNS" \
        --arrival "$ARRIVAL" --output json "$@" > "$RESULTS/overload-$v-$ph.json" & local lg=$!; PIDS+=("$lg")
    LOAD_T0=$t0
    LOAD_PID=$lg
}

finish_load() { # variant phase
    wait "$LOAD_PID" || { echo "loadgen failed ($1 $2)"; exit 1; }
    stop "$LOAD_PID"
    stop "$POLL_PID"
    python3 - "$RESULTS/overload-$1-$2.json" "$2" >> "$RESULTS/overload-$1-series.csv" <<'PY'
import json, sys
d = json.load(open(sys.argv[1]))
for s in d["series"]:
    p = lambda k: "" if s[k] is None else s[k]
    print(f'{sys.argv[2]},{s["t"]},{s["sent"]},{s["ok"]},{s["shed"]},{s["errors"]},{s["timeouts"]},'
          f'{s["client_dropped"]},{p("p50")},{p("p99")}')
PY
}

# ---- the run ------------------------------------------------------------------

# Every bootstrap is validated first; a set-up whose filter is not built is skipped.
RUN=(); SKIPPED=()
for v in $VARIANTS; do
    case $v in none|static|gradient|aimd) ;; *) echo "unknown variant $v"; exit 1 ;; esac
    bootstrap "$v" 1 2 3 > "$W/$v.validate.yaml"
    if "$SHARP" --mode validate -c "$W/$v.validate.yaml" > "$W/$v.validate.out" 2>&1; then
        RUN+=("$v")
    else
        reason=$(grep -v '^$' "$W/$v.validate.out" | tail -1 |
            sed -e "s|^error initializing configuration '[^']*': ||" -e "s|$W/||g")
        SKIPPED+=("$v: skipped: ${reason:-validation failed}")
        echo "${SKIPPED[-1]}"
    fi
done
[ "${#RUN[@]}" -gt 0 ] || { echo "nothing to run"; exit 0; }

nload=$(wc -w <<<"$LOADS")
est=$(( BASE_DUR + WARMUP + ${#RUN[@]} * (nload * (DUR + WARMUP + 2) + 2 * (3 * SLOW_SEG + WARMUP + 2)) ))
echo "service: $SLOTS slots x ${SERVICE_MS} ms = capacity $CAP req/s; SHARP $WORKERS workers; $ARRIVAL arrivals"
echo "per level: ${WARMUP}s warm-up + ${DUR}s; slowdown: ${SLOW_SEG}s normal, ${SLOW_SEG}s at $((2 * SERVICE_MS)) ms, ${SLOW_SEG}s recovered, at ${SLOW_LOAD}x"
echo "halfcap: ${SLOW_SEG}s normal, ${SLOW_SEG}s with $((SLOTS / 2)) of $SLOTS slots, ${SLOW_SEG}s recovered, at ${SLOW_LOAD}x"
echo "running: ${RUN[*]}; estimated time ~$(( est / 60 ))m$(( est % 60 ))s; results in $RESULTS/"
rm -f "$RESULTS"/overload-*

# Unloaded latency: no limiter, BASE_LOAD x capacity.
start_upstream
start_sharp none
run_load baseline unloaded "$(rate_of "$BASE_LOAD")" "$BASE_DUR" 1000
finish_load baseline unloaded
stop "$SHARP_PID"; stop "$UP_PID"
rm -f "$RESULTS/overload-baseline-limit.csv" "$RESULTS/overload-baseline-series.csv"

for v in "${RUN[@]}"; do
    echo "$v: running"
    echo "phase,t_s,concurrency_limit,rq_blocked,min_rtt_msecs,sample_rtt_msecs,upstream_rq_active" \
        > "$RESULTS/overload-$v-limit.csv"
    echo "phase,t_s,sent,ok,shed,errors,timeouts,client_dropped,p50_ms,p99_ms" > "$RESULTS/overload-$v-series.csv"
    start_upstream
    start_sharp "$v"
    for x in $LOADS; do
        run_load "$v" "${x}x" "$(rate_of "$x")" "$DUR" 1000
        finish_load "$v" "${x}x"
        wait_upstream_idle
    done
    # Slowdown: SLOW_SEG s normal, SLOW_SEG s at twice the service time, SLOW_SEG s recovered.
    run_load "$v" slowdown "$(rate_of "$SLOW_LOAD")" "$(( 3 * SLOW_SEG ))" 500
    sleep_until $(( LOAD_T0 + (WARMUP + SLOW_SEG) * 1000 ))
    curl -s "http://127.0.0.1:$UPORT/admin/service-time?ms=$(( 2 * SERVICE_MS ))" > /dev/null
    sleep_until $(( LOAD_T0 + (WARMUP + 2 * SLOW_SEG) * 1000 ))
    curl -s "http://127.0.0.1:$UPORT/admin/service-time?ms=$SERVICE_MS" > /dev/null
    finish_load "$v" slowdown
    wait_upstream_idle
    # Capacity: SLOW_SEG s normal, SLOW_SEG s with half the slots, SLOW_SEG s recovered.
    run_load "$v" halfcap "$(rate_of "$SLOW_LOAD")" "$(( 3 * SLOW_SEG ))" 500
    sleep_until $(( LOAD_T0 + (WARMUP + SLOW_SEG) * 1000 ))
    curl -s "http://127.0.0.1:$UPORT/admin/service-time?slots=$(( SLOTS / 2 ))" > /dev/null
    sleep_until $(( LOAD_T0 + (WARMUP + 2 * SLOW_SEG) * 1000 ))
    curl -s "http://127.0.0.1:$UPORT/admin/service-time?slots=$SLOTS" > /dev/null
    finish_load "$v" halfcap
    stop "$SHARP_PID"; stop "$UP_PID"
done

# ---- report ---------------------------------------------------------------------

python3 - "$RESULTS" "$CAP" "$WARMUP" "$SLOW_SEG" "$SERVICE_MS" "$LOADS" "$SLOTS" "${RUN[@]}" \
    <<'PY' | tee "$RESULTS/overload-summary.txt"
import csv, json, statistics, sys
res, cap, warm, seg, svc, loads, slots = sys.argv[1], float(sys.argv[2]), float(sys.argv[3]), \
    float(sys.argv[4]), sys.argv[5], sys.argv[6].split(), int(sys.argv[7])
ran = sys.argv[8:]
base = json.load(open(f"{res}/overload-baseline-unloaded.json"))
unloaded_p99 = base["latency_ms"]["p99"]
print(f"\ncapacity {cap:.0f} req/s; unloaded p99 {unloaded_p99:.1f} ms "
      f"(no limiter, {base['rate']:.0f} req/s, p50 {base['latency_ms']['p50']:.1f} ms)")
print("targets at 3x: admitted success >= 99.9%, goodput >= 90% of capacity, "
      f"admitted p99 <= 2x unloaded ({2 * unloaded_p99:.1f} ms)\n")
f = lambda v, fmt: "-" if v is None else fmt.format(v)
hdr = ("setup", "load", "offered/s", "goodput/s", "admit ok%", "shed/s", "shed%", "p50 ms", "p99 ms",
       "p99.9 ms", "tmo+err", "dropped", "3x targets")
fmt = "{:<9} {:>8} {:>9} {:>9} {:>9} {:>7} {:>6} {:>8} {:>8} {:>8} {:>7} {:>7}  {}"
print(fmt.format(*hdr))
for v in ran:
    for ph in [f"{x}x" for x in loads] + ["slowdown", "halfcap"]:
        d = json.load(open(f"{res}/overload-{v}-{ph}.json"))
        t, lat = d["totals"], d["latency_ms"]
        ok = d["admitted_success_rate"]
        verdict = ""
        if ph == "3x":
            fails = []
            if ok is None or ok < 0.999: fails.append("success")
            if d["goodput_rps"] < 0.9 * cap: fails.append("goodput")
            if lat["p99"] is None or lat["p99"] > 2 * unloaded_p99: fails.append("p99")
            verdict = "PASS" if not fails else "FAIL (" + ", ".join(fails) + ")"
        print(fmt.format(v, ph, f(d["offered_rps"], "{:.0f}"), f(d["goodput_rps"], "{:.0f}"),
                         f(None if ok is None else 100 * ok, "{:.3f}"), f(d["shed_rps"], "{:.0f}"),
                         f(100 * d["shed_fraction"], "{:.1f}"), f(lat["p50"], "{:.1f}"),
                         f(lat["p99"], "{:.1f}"), f(lat["p99.9"], "{:.1f}"),
                         t["timeouts"] + t["errors"], t["client_dropped"], verdict))
def med(rs, key, k):
    lo, hi = warm + (k + 0.5) * seg, warm + (k + 1) * seg
    xs = [float(r[key]) for r in rs if r[key] not in ("", None) and lo <= float(r["t_s"]) <= hi]
    return "-" if not xs else f"{statistics.median(xs):.0f}"
for ph, what in (("slowdown", f"{seg:.0f} s at {svc} ms, {seg:.0f} s at {2 * int(svc)} ms, {seg:.0f} s at {svc} ms"),
                 ("halfcap", f"{seg:.0f} s with {slots} slots, {seg:.0f} s with {slots // 2}, {seg:.0f} s with {slots}")):
    print(f"\n{ph}: {what} (medians over the second half of each segment)")
    print("{:<9} {:>26} {:>26} {:>26}".format("setup", "limit normal/fault/recov", "in-flight normal/fault/recov",
                                              "p99 ms normal/fault/recov"))
    for v in ran:
        rows = [r for r in csv.DictReader(open(f"{res}/overload-{v}-limit.csv")) if r["phase"] == ph]
        ser = [r for r in csv.DictReader(open(f"{res}/overload-{v}-series.csv")) if r["phase"] == ph]
        print("{:<9} {:>26} {:>26} {:>26}".format(
            v, "/".join(med(rows, "concurrency_limit", k) for k in range(3)),
            "/".join(med(rows, "upstream_rq_active", k) for k in range(3)),
            "/".join(med(ser, "p99_ms", k) for k in range(3))))
PY
for s in "${SKIPPED[@]+"${SKIPPED[@]}"}"; do echo "$s" | tee -a "$RESULTS/overload-summary.txt"; done

# ---- plots: per set-up, one panel per phase: the limit and the requests in
# flight to the service (left axis; dashed: the service's slots), admitted p99
# per interval (right, log) ---------------------------------------------------------
if [ "$HAVE_GNUPLOT" = 1 ]; then
    phases=""; for x in $LOADS; do phases="$phases ${x}x"; done; phases="$phases slowdown halfcap"
    n=$(wc -w <<<"$phases")
    s1=$(( WARMUP + SLOW_SEG )); s2=$(( WARMUP + 2 * SLOW_SEG ))
    for v in "${RUN[@]}"; do
        lim="$RESULTS/overload-$v-limit.csv"; ser="$RESULTS/overload-$v-series.csv"
        cmds="set terminal pngcairo size 1000,$(( 250 * n )) font ',9';
              set output '$RESULTS/overload-$v.png'; set datafile separator ',';
              set multiplot layout $n,1 title 'SHARP overload: $v (service capacity $CAP req/s)';
              set key outside right top vertical; set grid; set xlabel 'seconds since load start';
              set ylabel 'concurrency'; set y2label 'admitted p99 ms'; set logscale y2;
              set y2range [1:$(( TIMEOUT_MS * 2 ))]; set y2tics; set ytics nomirror; set yrange [0:*];
              set offsets 0, 0, graph 0.1, 0;"
        for ph in $phases; do
            if [ "$ph" = slowdown ]; then
                cmds="$cmds set xrange [0:$(( WARMUP + 3 * SLOW_SEG ))];
                      set title 'slowdown at ${SLOW_LOAD}x: service time $((2 * SERVICE_MS)) ms between the dashed lines';
                      set arrow 1 from $s1, graph 0 to $s1, graph 1 nohead dt 2;
                      set arrow 2 from $s2, graph 0 to $s2, graph 1 nohead dt 2;"
            elif [ "$ph" = halfcap ]; then
                cmds="$cmds set xrange [0:$(( WARMUP + 3 * SLOW_SEG ))];
                      set title 'capacity at ${SLOW_LOAD}x: $((SLOTS / 2)) of $SLOTS slots between the dashed lines';
                      set arrow 1 from $s1, graph 0 to $s1, graph 1 nohead dt 2;
                      set arrow 2 from $s2, graph 0 to $s2, graph 1 nohead dt 2;"
            else
                cmds="$cmds set xrange [0:$(( WARMUP + DUR ))]; set title '$ph capacity';"
            fi
            cmds="$cmds plot $SLOTS with lines dt 2 lw 1.5 lc rgb '#505050' title 'service slots',
                  '$lim' every ::1 using 2:(strcol(1) eq '$ph' ? \$3 : NaN) with lines lw 2 title 'limit',
                  '' every ::1 using 2:(strcol(1) eq '$ph' ? \$7 : NaN) with lines title 'in flight',
                  '$ser' every ::1 using 2:(strcol(1) eq '$ph' ? \$10 : NaN) axes x1y2 with linespoints pt 7 ps 0.5 title 'p99 ms';"
        done
        if gnuplot -e "$cmds unset multiplot" 2> "$W/gnuplot.err"; then
            echo "plot: $RESULTS/overload-$v.png"
        else
            echo "gnuplot failed for $v:"; head -5 "$W/gnuplot.err"
        fi
    done
fi
