#!/usr/bin/env bash
# Side-by-side HTTP/2 proxy benchmark on loopback, one run, same machine.
# Downstream is HTTP/2 cleartext with prior knowledge (h2load); upstream is
# sharp-test-upstream over HTTP/1.1 ("h1") and, with --h2, over HTTP/2
# ("h2"). Proxies, one worker/thread each: SHARP (--concurrency 1), h2o
# (num-threads 1; h2o 2.2 proxies over HTTP/1.1 only, so no h2 row), nghttpx
# (--workers=1, master + worker counted) and HAProxy (nbthread 1); plus the
# upstreams directly (h1: h2load --h1, pipelined STREAMS deep).
#
# Per target and upstream protocol, REPEAT rounds (the order of the targets
# rotates every round), medians printed: requests/s, p50/p99 from h2load's
# per-request log, proxy CPU microseconds per request (utime+stime of the
# proxy's processes from /proc/<pid>/stat over the measured run), the
# upstream's CPU per request, and the proxies' RSS with IDLE idle HTTP/2
# connections open. Ratios SHARP / best peer. About 4 minutes.
#
#   bench/h2.sh
#   env: DURATION=5 WARMUP=1 CONNS=8 STREAMS=100 REPEAT=3 IDLE=1000 HOLD=2
#        URLPATH=/ PROXIES="sharp h2o nghttpx haproxy" BUILD=build
#        RESULTS=bench/results (the output is also written to $RESULTS/h2.txt)
set -euo pipefail
cd "$(dirname "$0")/.."
DURATION=${DURATION:-5}
WARMUP=${WARMUP:-1}
CONNS=${CONNS:-8}
STREAMS=${STREAMS:-100}
REPEAT=${REPEAT:-3}
IDLE=${IDLE:-1000}
HOLD=${HOLD:-2}
URLPATH=${URLPATH:-/}
PROXIES=${PROXIES:-sharp h2o nghttpx haproxy}
BUILD=${BUILD:-build}
RESULTS=${RESULTS:-bench/results}
SHARP=$BUILD/proxy/sharp
UPSTREAM=$BUILD/test/upstream/sharp-test-upstream
[ -x "$SHARP" ] && [ -x "$UPSTREAM" ] || { echo "build first: make build"; exit 1; }
for t in h2load h2o nghttpx haproxy; do
    command -v $t >/dev/null || [ -x /usr/sbin/$t ] || { echo "missing $t (make deps)"; exit 1; }
done
H2O=$(command -v h2o || echo /usr/sbin/h2o)
NGHTTPX=$(command -v nghttpx || echo /usr/sbin/nghttpx)
HAPROXY=$(command -v haproxy || echo /usr/sbin/haproxy)
NEED=$((2 * IDLE + 4 * CONNS * STREAMS + 200))
if [ "$(ulimit -n)" -lt "$NEED" ]; then ulimit -n "$(ulimit -Hn)" 2>/dev/null || true; fi
[ "$(ulimit -n)" -ge "$NEED" ] || { echo "ulimit -n is $(ulimit -n), need about $NEED: lower IDLE"; exit 1; }

. bench/lib.sh
W=$(mktemp -d /tmp/sharp-h2bench.XXXXXX)
mkdir -p "$RESULTS"; rm -rf "$RESULTS/h2-problems"
exec > >(tee "$RESULTS/h2.txt")

# Concurrent streams every frontend (and SHARP's HCM) allows: at least the
# load's STREAMS, never below the peers' usual default of 100.
MCS=$((STREAMS > 100 ? STREAMS : 100))
INFLIGHT=$((CONNS * STREAMS))

# All listen ports (7 proxy instances, 2 SHARP admin ports) in one call that
# holds every socket until it has them all.
mapfile -t FREE < <(python3 -c '
import socket, sys
socks = [socket.socket() for _ in range(int(sys.argv[1]))]
for s in socks: s.bind(("127.0.0.1", 0))
print("\n".join(str(s.getsockname()[1]) for s in socks))' 9)
declare -A PORT PIDS_OF
PORT[sharp.h1]=${FREE[0]}; PORT[sharp.h2]=${FREE[1]}
PORT[h2o.h1]=${FREE[2]}
PORT[nghttpx.h1]=${FREE[3]}; PORT[nghttpx.h2]=${FREE[4]}
PORT[haproxy.h1]=${FREE[5]}; PORT[haproxy.h2]=${FREE[6]}
ADMIN1=${FREE[7]}; ADMIN2=${FREE[8]}

# Upstreams: the project's test upstream, HTTP/1.1 and HTTP/2.
start_test_upstream "$UPSTREAM" "$W/up1.out" --port 0 --name h1
UP[1]=$STARTED_PORT; UPPID_h1=$STARTED_PID
start_test_upstream "$UPSTREAM" "$W/up2.out" --port 0 --name h2 --h2
UP[2]=$STARTED_PORT; UPPID_h2=$STARTED_PID
PORT[direct.h1]=${UP[1]}; PORT[direct.h2]=${UP[2]}
PIDS_OF[direct.h1]=""; PIDS_OF[direct.h2]=""

has() { [[ " $PROXIES " == *" $1 "* ]]; }
wait_port() { for _ in $(seq 200); do (echo > "/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0; sleep 0.05; done; return 1; }
# A process and its descendants running the same program (nghttpx: master
# and worker; h2o's crash-handler helper, an idle perl script, is left out).
tree() { local p c; for p in "$@"; do echo "$p"; for c in $(pgrep -P "$p" || true); do tree "$c"; done; done; }
proc_tree() { local p; for p in $(tree "$1"); do if [ "$(cat /proc/$p/comm 2>/dev/null)" = "$(cat /proc/$1/comm)" ]; then echo "$p"; fi; done; }

# SHARP: compare.sh's bootstrap (bench_bootstrap, connect_timeout 1s, router
# only) plus the HCM's http2_protocol_options and, for h2, the cluster's.
sharp_yaml() { # case listen admin upstream_port
    local cluster="" hcm="          http2_protocol_options: { max_concurrent_streams: $MCS }"
    [ "$1" = h2 ] && cluster="
    http2_protocol_options: { max_concurrent_streams: $MCS }"
    if [ "$INFLIGHT" -gt 1000 ]; then  # above Envoy's default breakers (1024)
        cluster="$cluster
    circuit_breakers:
      thresholds: [{ max_connections: $((2 * INFLIGHT)), max_pending_requests: $((2 * INFLIGHT)), max_requests: $((2 * INFLIGHT)) }]"
    fi
    bench_bootstrap h2bench "$2" "$3" 1s "" "" "$cluster" "$4" | awk -v hcm="$hcm" '{ print } /stat_prefix:/ { print hcm }'
}
if has sharp; then
    sharp_yaml h1 "${PORT[sharp.h1]}" "$ADMIN1" "${UP[1]}" > "$W/sharp.h1.yaml"
    sharp_yaml h2 "${PORT[sharp.h2]}" "$ADMIN2" "${UP[2]}" > "$W/sharp.h2.yaml"
    start_sharp_on "$SHARP" "$W/sharp.h1.yaml" "$W/sharp.h1.log" 1 "${PORT[sharp.h1]}" "$ADMIN1"
    PIDS_OF[sharp.h1]=$STARTED_PID
    start_sharp_on "$SHARP" "$W/sharp.h2.yaml" "$W/sharp.h2.log" 1 "${PORT[sharp.h2]}" "$ADMIN2"
    PIDS_OF[sharp.h2]=$STARTED_PID
fi

# h2o 2.2: h2c with prior knowledge on a cleartext listener, proxy.reverse.url
# (HTTP/1.1 upstream with keep-alive; 2.2 has no HTTP/2 upstream).
if has h2o; then
    cat > "$W/h2o.h1.conf" <<CONF
listen:
  host: 127.0.0.1
  port: ${PORT[h2o.h1]}
num-threads: 1
max-connections: $((2 * IDLE + INFLIGHT + 100))
http2-max-concurrent-requests-per-connection: $MCS
error-log: $W/h2o.h1.log
pid-file: $W/h2o.h1.pid
$([ "$(id -u)" = 0 ] && echo "user: root")
hosts:
  default:
    paths:
      /:
        proxy.reverse.url: http://127.0.0.1:${UP[1]}/
CONF
    "$H2O" -c "$W/h2o.h1.conf" > "$W/h2o.h1.out" 2>&1 &
    PIDS+=($!); PIDS_OF[h2o.h1]=$!
fi

# nghttpx: clear-text frontend (h2c prior knowledge), one worker process;
# backend connections per host raised so HTTP/1.1 requests do not queue
# behind its default of 8.
if has nghttpx; then
    for c in h1 h2; do
        b="127.0.0.1,${UP[1]}"; [ $c = h2 ] && b="127.0.0.1,${UP[2]};;proto=h2"
        cmd=("$NGHTTPX" --conf=/dev/null --workers=1 -f "127.0.0.1,${PORT[nghttpx.$c]};no-tls" -b "$b"
             --frontend-http2-max-concurrent-streams=$MCS --backend-connections-per-host=$((2 * INFLIGHT))
             --worker-frontend-connections=0 --errorlog-file="$W/nghttpx.$c.log")
        printf '%q ' "${cmd[@]}" > "$W/nghttpx.$c.cmd"
        "${cmd[@]}" > "$W/nghttpx.$c.out" 2>&1 &
        PIDS+=($!); PIDS_OF[nghttpx.$c]=$!
    done
fi

# HAProxy 2.6: `proto h2` on a clear-text bind; h2 upstream with `proto h2`
# on the server line; connections reused across streams (http-reuse always).
if has haproxy; then
    for c in h1 h2; do
        srv="server s1 127.0.0.1:${UP[1]}"; [ $c = h2 ] && srv="server s1 127.0.0.1:${UP[2]} proto h2"
        cat > "$W/haproxy.$c.cfg" <<CONF
global
    nbthread 1
    maxconn $((IDLE + INFLIGHT + 100))
    tune.h2.max-concurrent-streams $MCS
defaults
    mode http
    timeout connect 5s
    timeout client 30s
    timeout server 30s
    option http-keep-alive
frontend fe
    bind 127.0.0.1:${PORT[haproxy.$c]} proto h2
    default_backend be
backend be
    http-reuse always
    $srv
CONF
        "$HAPROXY" -f "$W/haproxy.$c.cfg" -db > "$W/haproxy.$c.log" 2>&1 &
        PIDS+=($!); PIDS_OF[haproxy.$c]=$!
    done
fi

TARGETS=(direct)
for p in sharp h2o nghttpx haproxy; do has $p && TARGETS+=("$p"); done
for k in "${!PIDS_OF[@]}"; do
    [[ $k == direct.* ]] && continue
    wait_port "${PORT[$k]}" && kill -0 "${PIDS_OF[$k]}" 2>/dev/null \
        || { echo "$k did not start:"; for f in "$W/$k".*; do tail -5 "$f"; done; exit 1; }
done
sleep 0.5  # nghttpx forks its worker after binding
declare -A TREE
for k in "${!PIDS_OF[@]}"; do [ -n "${PIDS_OF[$k]}" ] && TREE[$k]=$(proc_tree "${PIDS_OF[$k]}" | tr '\n' ' '); done

HZ=$(getconf CLK_TCK)
cpu_ticks() { local p t=0 v; for p in "$@"; do v=$(awk '{print $14 + $15}' /proc/$p/stat 2>/dev/null || echo 0); t=$((t + v)); done; echo $t; }
# read and write system calls (the counts of /proc/PID/io) of processes
io_calls() { local p t=0 v; for p in "$@"; do v=$(awk '/^sysc[rw]:/ { s += $2 } END { print s + 0 }' /proc/$p/io 2>/dev/null || echo 0); t=$((t + v)); done; echo $t; }
alive() { local p; for p in "$@"; do kill -0 "$p" 2>/dev/null || return 1; done; }

declare -A RPS P50 P99 CPU UPCPU SYSC UPSYSC UPCX RSS0 RSS1 RSSF0 RSSF1 NOTE
PROBLEMS=()
H2LOAD_ARGS=(-c "$CONNS" -m "$STREAMS")

# One measured h2load run against target.case: appends to the per-key lists.
run() { # target case round
    local k=$1.$2 port=${PORT[$1.$2]} pids=${TREE[$1.$2]:-} url h1=() out rc=0
    local uppid; uppid=$([ "$2" = h1 ] && echo "$UPPID_h1" || echo "$UPPID_h2")
    url="http://127.0.0.1:$port$URLPATH"
    [ "$k" = direct.h1 ] && h1=(--h1)
    [ "$WARMUP" != 0 ] && { timeout $((WARMUP + 30)) h2load "${h1[@]}" "${H2LOAD_ARGS[@]}" -D "$WARMUP" "$url" > /dev/null 2>&1 || true; }
    local t0 t1 u0 u1
    t0=$(cpu_ticks $pids); u0=$(cpu_ticks "$uppid")
    local i0 i1 ui0 ui1
    i0=$(io_calls $pids); ui0=$(io_calls "$uppid")
    out=$(timeout $((DURATION + 30)) h2load "${h1[@]}" "${H2LOAD_ARGS[@]}" -D "$DURATION" --log-file "$W/log" "$url" 2>&1) || rc=$?
    t1=$(cpu_ticks $pids); u1=$(cpu_ticks "$uppid")
    i1=$(io_calls $pids); ui1=$(io_calls "$uppid")
    # the connections the target keeps to the upstream after the run
    local upport upcx
    upport=$([ "$2" = h1 ] && echo "${UP[1]}" || echo "${UP[2]}")
    upcx=$([ "$1" = direct ] && echo - || ss -Htn state established "( dport = :$upport )" 2>/dev/null | wc -l)
    echo "$out" > "$W/$k.h2load-$3.txt"
    local rps done failed errored tmo s3 s4 s5 n p50 p99 bad
    rps=$(sed -n 's/^finished in .*, \([0-9.]*\) req\/s.*/\1/p' <<<"$out")
    read -r done failed errored tmo < <(sed -n 's/^requests: .* \([0-9]*\) done, [0-9]* succeeded, \([0-9]*\) failed, \([0-9]*\) errored, \([0-9]*\) timeout.*/\1 \2 \3 \4/p' <<<"$out") || true
    # status codes are counted when a response's headers arrive, "done" when
    # the stream ends: streams cut by h2load at the end of -D count only in
    # the former, so only 3xx-5xx are compared.
    read -r s3 s4 s5 < <(sed -n 's/^status codes: [0-9]* 2xx, \([0-9]*\) 3xx, \([0-9]*\) 4xx, \([0-9]*\) 5xx.*/\1 \2 \3/p' <<<"$out") || true
    read -r n p50 p99 bad < <(python3 bench/h2_tool.py pct "$W/log")
    rm -f "$W/log"
    local cpu upcpu
    cpu=$([ -n "$pids" ] && awk -v d=$((t1 - t0)) -v hz="$HZ" -v n="${done:-0}" 'BEGIN { if (n > 0) printf "%.2f", d / hz / n * 1e6; else print "n/a" }' || echo -)
    upcpu=$(awk -v d=$((u1 - u0)) -v hz="$HZ" -v n="${done:-0}" 'BEGIN { if (n > 0) printf "%.2f", d / hz / n * 1e6; else print "n/a" }')
    local sysc upsysc
    sysc=$([ -n "$pids" ] && awk -v d=$((i1 - i0)) -v n="${done:-0}" 'BEGIN { if (n > 0) printf "%.2f", d / n; else print "n/a" }' || echo -)
    upsysc=$(awk -v d=$((ui1 - ui0)) -v n="${done:-0}" 'BEGIN { if (n > 0) printf "%.2f", d / n; else print "n/a" }')
    RPS[$k]+="${rps:-0} "; P50[$k]+="$p50 "; P99[$k]+="$p99 "; CPU[$k]+="$cpu "; UPCPU[$k]+="$upcpu "
    SYSC[$k]+="$sysc "; UPSYSC[$k]+="$upsysc "; UPCX[$k]+="$upcx "
    local problem=""
    [ "$rc" != 0 ] && problem+=" h2load exit $rc$([ "$rc" = 124 ] && echo ' (stalled: killed after DURATION+30s)');"
    [ "${failed:-0}" != 0 ] || [ "${errored:-0}" != 0 ] || [ "${tmo:-0}" != 0 ] && problem+=" failed=$failed errored=$errored timeout=$tmo;"
    [ "$((${s3:-0} + ${s4:-0} + ${s5:-0}))" != 0 ] && problem+=" 3xx=$s3 4xx=$s4 5xx=$s5;"
    [ "${bad:-0}" != 0 ] && problem+=" logged non-2xx=$bad;"
    [ -z "$done" ] || [ "$done" = 0 ] && problem+=" no request done;"
    [ -n "$pids" ] && ! alive $pids && problem+=" process gone;"
    printf "  round %-2d %-3s %-8s %10s req/s  p50 %8s ms  p99 %8s ms  cpu %7s us/req  upstream cpu %7s us/req  r/w calls/req %5s upstream %5s  upstream conns %s%s\n" \
        "$3" "$2" "$1" "${rps:-0}" "$p50" "$p99" "$cpu" "$upcpu" "$sysc" "$upsysc" "$upcx" "${problem:+  PROBLEM:$problem}"
    if [ -n "$problem" ]; then
        NOTE[$k]="!"
        # keep what reproduces it: the target's config, logs and h2load output
        mkdir -p "$RESULTS/h2-problems"; cp "$W/$k".* "$RESULTS/h2-problems/" 2>/dev/null || true
        PROBLEMS+=("$k round $3:$problem h2load ${h1[*]} ${H2LOAD_ARGS[*]} -D $DURATION $URLPATH (config, logs, output in $RESULTS/h2-problems/$k.*)")
        if [ -n "$pids" ] && ! alive $pids; then echo "$k died; its log:"; for f in "$W/$k".*; do tail -20 "$f"; done; exit 1; fi
    fi
}

# RSS of a target's processes with IDLE idle HTTP/2 connections.
idle_rss() { # key round
    local k=$1 pids before held ready open r
    pids=$(tr ' ' ',' <<<"${TREE[$k]:-$UPPID_h2}")
    r=$(python3 bench/h2_tool.py idle --port "${PORT[$k]}" --conns "$IDLE" --hold "$HOLD" --pids "$pids")
    eval "$(sed 's/_kib//g' <<<"$r" | tr ' ' '\n' | sed 's/^/local /')"
    if [ "$2" = fresh ]; then RSSF0[$k]=$rss_before; RSSF1[$k]=$rss_held
    else RSS0[$k]+="$rss_before "; RSS1[$k]+="$rss_held "; fi
    printf "  %-7s idle     %-8s %5d connections: RSS %6d KiB -> %6d KiB  (%d ready, %d open after %ss)\n" \
        "$([ "$2" = fresh ] && echo fresh || echo "round $2")" "${k%%.*}" "$IDLE" "$rss_before" "$rss_held" "$ready" "$open_after_hold" "$HOLD"
    [ "$ready" = "$IDLE" ] && [ "$open_after_hold" = "$IDLE" ] || {
        NOTE[$k]="!"; PROBLEMS+=("$k idle round $2: $ready of $IDLE connections got SETTINGS, $open_after_hold still open after ${HOLD}s")
    }
}

median() { tr ' ' '\n' | awk '/^[0-9.]+$/' | sort -g | awk '{ v[NR] = $1 } END { if (NR == 0) print "n/a"; else if (NR % 2) print v[(NR + 1) / 2]; else printf "%.2f\n", (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }

ver() { "$@" 2>&1 | head -1; }
echo "bench/h2.sh: h2load -c $CONNS -m $STREAMS -D ${DURATION}s (warm-up run ${WARMUP}s) GET $URLPATH, $REPEAT rounds, medians; idle RSS with $IDLE connections"
echo "machine: $(nproc) cores; load before: $(uptime | sed 's/.*load average: //')"
echo "peers: $(ver "$H2O" --version), $(ver "$NGHTTPX" --version), $(ver "$HAPROXY" -v | cut -d' ' -f1-3), $(h2load --version 2>&1 | head -1)"
echo "upstreams: sharp-test-upstream HTTP/1.1 on :${UP[1]}, HTTP/2 (--h2) on :${UP[2]}"
echo "processes counted:$(for k in $(printf '%s\n' "${!TREE[@]}" | sort); do printf ' %s=%d' "$k" "$(wc -w <<<"${TREE[$k]}")"; done)"
# Idle connections to the fresh processes first (no load served yet), then
# after every round's load.
for t in "${TARGETS[@]}"; do
    if [ "$t" = direct ]; then idle_rss direct.h2 fresh; else idle_rss "$t.h1" fresh; fi
done
for r in $(seq "$REPEAT"); do
    # rotate the order of the targets every round
    n=${#TARGETS[@]}; order=()
    for i in $(seq 0 $((n - 1))); do order+=("${TARGETS[(i + r - 1) % n]}"); done
    for c in h1 h2; do
        for t in "${order[@]}"; do
            [ -n "${PORT[$t.$c]:-}" ] && run "$t" "$c" "$r"
        done
    done
    for t in "${order[@]}"; do
        if [ "$t" = direct ]; then idle_rss direct.h2 "$r"; else idle_rss "$t.h1" "$r"; fi
    done
done
echo "load after: $(uptime | sed 's/.*load average: //')"

ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (a ~ /^[0-9.]+$/ && b > 0) printf "%.2f", a / b; else print "n/a" }'; }
for c in h1 h2; do
    echo
    echo "upstream $( [ $c = h1 ] && echo HTTP/1.1 || echo HTTP/2 ) (medians of $REPEAT; proxy CPU = all its processes)"
    printf "%-9s %11s %9s %9s %12s %15s %10s %10s %9s\n" target "req/s" "p50 ms" "p99 ms" "CPU us/req" "upstream us/req" "calls/req" "up calls" "up conns"
    declare -A M_RPS=() M_P99=() M_CPU=()
    for t in "${TARGETS[@]}"; do
        k=$t.$c
        if [ -z "${PORT[$k]:-}" ]; then printf "%-9s %11s\n" "$t" "n/a (no HTTP/2 upstream in $t 2.2)"; continue; fi
        M_RPS[$t]=$(median <<<"${RPS[$k]}"); M_P99[$t]=$(median <<<"${P99[$k]}"); M_CPU[$t]=$(median <<<"${CPU[$k]}")
        printf "%-9s %11s %9s %9s %12s %15s %10s %10s %9s%s\n" "$t${NOTE[$k]:-}" "${M_RPS[$t]}" "$(median <<<"${P50[$k]}")" "${M_P99[$t]}" \
            "$([ $t = direct ] && echo - || echo "${M_CPU[$t]}")" "$(median <<<"${UPCPU[$k]}")" \
            "$([ $t = direct ] && echo - || median <<<"${SYSC[$k]}")" "$(median <<<"${UPSYSC[$k]}")" "$([ $t = direct ] && echo - || median <<<"${UPCX[$k]}")" \
            "$([ $k = direct.h1 ] && echo "  (h2load --h1, pipelined)")"
    done
    if has sharp; then
        best_rps="" best_p99="" best_cpu=""
        for t in "${TARGETS[@]}"; do
            [ "$t" = direct ] || [ "$t" = sharp ] || [ -z "${M_RPS[$t]:-}" ] && continue
            [ -z "$best_rps" ] || awk -v a="${M_RPS[$t]}" -v b="${M_RPS[$best_rps]}" 'BEGIN { exit !(a > b) }' && best_rps=$t
            [ -z "$best_p99" ] || awk -v a="${M_P99[$t]}" -v b="${M_P99[$best_p99]}" 'BEGIN { exit !(a < b) }' && best_p99=$t
            [ -z "$best_cpu" ] || awk -v a="${M_CPU[$t]}" -v b="${M_CPU[$best_cpu]}" 'BEGIN { exit !(a < b) }' && best_cpu=$t
        done
        if [ -n "$best_rps" ]; then
            echo "SHARP / best peer: req/s $(ratio "${M_RPS[sharp]}" "${M_RPS[$best_rps]}") ($best_rps)" \
                 "  p99 $(ratio "${M_P99[sharp]}" "${M_P99[$best_p99]}") ($best_p99)" \
                 "  CPU/req $(ratio "${M_CPU[sharp]}" "${M_CPU[$best_cpu]}") ($best_cpu)"
        fi
    fi
done

echo
echo "RSS with $IDLE idle HTTP/2 connections open (KiB; proxy = all its processes; direct = the --h2 upstream)"
printf "%-9s %10s %10s %9s   %12s %12s\n" target "fresh" "fresh+idle" "KiB/conn" "after load" "+idle (med.)"
for t in "${TARGETS[@]}"; do
    k=$t.h1; [ $t = direct ] && k=direct.h2
    printf "%-9s %10s %10s %9s   %12s %12s\n" "$t${NOTE[$k]:-}" "${RSSF0[$k]}" "${RSSF1[$k]}" \
        "$(awk -v b="${RSSF0[$k]}" -v h="${RSSF1[$k]}" -v n="$IDLE" 'BEGIN { printf "%.1f", (h - b) / n }')" \
        "$(median <<<"${RSS0[$k]}")" "$(median <<<"${RSS1[$k]}")"
done

if [ ${#PROBLEMS[@]} -gt 0 ]; then
    echo
    echo "problems (rows marked !):"
    for p in "${PROBLEMS[@]}"; do echo "  $p"; done
fi
