#!/usr/bin/env bash
# The allocator A/B: the same SHARP built with glibc's malloc
# (the default) and with mimalloc (-Dallocator=mimalloc), one worker each,
# side by side on loopback, interleaved rounds (the order alternates every
# round, so drift on a shared machine hits both alike).
#
# Per round and allocator:
#   h2    h2load -c 8 -m 100 -n $H2_N, HTTP/2 cleartext (prior knowledge)
#         to SHARP, HTTP/2 to sharp-test-upstream --h2
#   h1    h2load --h1 -c 64 -n $H1_N, HTTP/1.1 keep-alive, HTTP/1.1 upstream
#   tls   openssl s_time -new -www / for $TLS_S s ($TLS_CLIENTS clients):
#         full TLS handshakes (TLS 1.3, P-256 certificate made now), one
#         HTTP/1.0 request per connection
# SHARP's CPU per request (or handshake) is utime+stime of its process from
# /proc/<pid>/stat over the run; printed per round, then mean and spread
# (min..max) per allocator. RSS (VmRSS): after start, with $IDLE idle
# HTTP/2 connections on the fresh process, 3 s after the last load (the
# idle release has run), and /memory at that point. With perf, the
# allocator's share of SHARP's CPU samples in one more h2 run each.
#
#   bench/alloc.sh
#   env: REPEAT=5 H2_N=300000 H1_N=200000 TLS_S=5 TLS_CLIENTS=2 IDLE=1000
#        BUILD=build (glibc) MI_BUILD=build-mimalloc (configured and
#        built here when missing: meson setup $MI_BUILD -Dallocator=mimalloc)
#        RESULTS=bench/results (output also in $RESULTS/alloc.txt)
set -euo pipefail
cd "$(dirname "$0")/.."
REPEAT=${REPEAT:-5}
H2_N=${H2_N:-300000}
H1_N=${H1_N:-200000}
TLS_S=${TLS_S:-5}
TLS_CLIENTS=${TLS_CLIENTS:-2}
IDLE=${IDLE:-1000}
BUILD=${BUILD:-build}
MI_BUILD=${MI_BUILD:-build-mimalloc}
RESULTS=${RESULTS:-bench/results}
UPSTREAM=$BUILD/test/upstream/sharp-test-upstream
[ -x "$BUILD/proxy/sharp" ] && [ -x "$UPSTREAM" ] || { echo "build first: make build"; exit 1; }
if [ ! -f "$MI_BUILD/build.ninja" ]; then
    meson setup "$MI_BUILD" -Dallocator=mimalloc -Dtests=false > /dev/null
fi
ninja -C "$MI_BUILD" -j2 proxy/sharp > /dev/null
declare -A BIN=([glibc]=$BUILD/proxy/sharp [mimalloc]=$MI_BUILD/proxy/sharp)
# each binary is what its name says: mimalloc linked in, or not
ldd "${BIN[mimalloc]}" | grep -q libmimalloc || { echo "${BIN[mimalloc]} does not link mimalloc"; exit 1; }
! ldd "${BIN[glibc]}" | grep -q libmimalloc || { echo "${BIN[glibc]} links mimalloc"; exit 1; }
for t in h2load openssl; do command -v $t > /dev/null || { echo "missing $t (make deps)"; exit 1; }; done
NEED=$((IDLE + 500))
if [ "$(ulimit -n)" -lt "$NEED" ]; then ulimit -n "$(ulimit -Hn)" 2>/dev/null || true; fi
[ "$(ulimit -n)" -ge "$NEED" ] || { echo "ulimit -n is $(ulimit -n), need about $NEED: lower IDLE"; exit 1; }

. bench/lib.sh
W=$(mktemp -d /tmp/sharp-allocbench.XXXXXX)
mkdir -p "$RESULTS"
exec > >(tee "$RESULTS/alloc.txt")

openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout "$W/tls.key" -out "$W/tls.crt" \
    -days 2 -subj /CN=localhost -addext subjectAltName=DNS:localhost 2> /dev/null

start_test_upstream "$UPSTREAM" "$W/up1.out" --port 0 --name alloc-h1
UP1=$STARTED_PORT
start_test_upstream "$UPSTREAM" "$W/up2.out" --port 0 --name alloc-h2 --h2
UP2=$STARTED_PORT

# Three listeners: h2c to an HTTP/2 cluster, HTTP/1.1 to an HTTP/1.1
# cluster, TLS (HTTP/1.0 accepted for s_time) to the HTTP/1.1 cluster.
sharp_yaml() { # h2_port h1_port tls_port admin_port
    local hcm='"@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager'
    local router='http_filters: [{ name: envoy.filters.http.router, typed_config: { "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router } }]'
    listener() { # name port cluster transport_socket
        cat <<CONF
  - name: $1
    address: { socket_address: { address: 127.0.0.1, port_value: $2 } }
    filter_chains:
    - $4filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          $hcm
          stat_prefix: $1
          http2_protocol_options: { max_concurrent_streams: 100 }
          http_protocol_options: { accept_http_10: true, default_host_for_http_10: localhost }
          route_config:
            virtual_hosts:
            - name: all
              domains: ["*"]
              routes: [{ match: { prefix: "/" }, route: { cluster: $3 } }]
          $router
CONF
    }
    local ts="transport_socket:
        name: envoy.transport_sockets.tls
        typed_config:
          \"@type\": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext
          common_tls_context:
            tls_certificates:
            - certificate_chain: { filename: $W/tls.crt }
              private_key: { filename: $W/tls.key }
      "
    cat <<CONF
admin:
  address: { socket_address: { address: 127.0.0.1, port_value: $4 } }
static_resources:
  listeners:
$(listener h2 "$1" up_h2 "")
$(listener h1 "$2" up_h1 "")
$(listener tls "$3" up_h1 "$ts")
  clusters:
  - name: up_h1
    connect_timeout: 1s
    load_assignment:
      cluster_name: up_h1
      endpoints: [{ lb_endpoints: [{ endpoint: { address: { socket_address: { address: 127.0.0.1, port_value: $UP1 } } } }] }]
  - name: up_h2
    connect_timeout: 1s
    typed_extension_protocol_options:
      envoy.extensions.upstreams.http.v3.HttpProtocolOptions:
        "@type": type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions
        explicit_http_config: { http2_protocol_options: {} }
    load_assignment:
      cluster_name: up_h2
      endpoints: [{ lb_endpoints: [{ endpoint: { address: { socket_address: { address: 127.0.0.1, port_value: $UP2 } } } }] }]
CONF
}

ALLOCS=(glibc mimalloc)
declare -A H2P H1P TLSP ADM PID
mapfile -t FREE < <(python3 -c '
import socket
socks = [socket.socket() for _ in range(8)]
for s in socks: s.bind(("127.0.0.1", 0))
print("\n".join(str(s.getsockname()[1]) for s in socks))')
i=0
for a in "${ALLOCS[@]}"; do
    H2P[$a]=${FREE[i]}; H1P[$a]=${FREE[i + 1]}; TLSP[$a]=${FREE[i + 2]}; ADM[$a]=${FREE[i + 3]}; i=$((i + 4))
    sharp_yaml "${H2P[$a]}" "${H1P[$a]}" "${TLSP[$a]}" "${ADM[$a]}" > "$W/$a.yaml"
    start_sharp_on "${BIN[$a]}" "$W/$a.yaml" "$W/$a.log" 1 "${H2P[$a]}" "${ADM[$a]}"
    PID[$a]=$STARTED_PID
done

rss() { awk '/^VmRSS:/ { print $2 }' "/proc/$1/status"; }
ticks() { awk '{ print $14 + $15 }' "/proc/$1/stat"; }
HZ=$(getconf CLK_TCK)
per_op() { awk -v t="$1" -v n="$2" -v hz="$HZ" 'BEGIN { if (n > 0) printf "%.2f", t * 1e6 / hz / n; else print "n/a" }'; }

echo "bench/alloc.sh: SHARP --concurrency 1, glibc malloc ($BUILD) vs mimalloc ($MI_BUILD), $REPEAT interleaved rounds"
echo "  h2:  h2load -c 8 -m 100 -n $H2_N h2c, HTTP/2 upstream"
echo "  h1:  h2load --h1 -c 64 -n $H1_N, HTTP/1.1 keep-alive upstream"
echo "  tls: $TLS_CLIENTS x openssl s_time -new -www / -time $TLS_S (full handshakes, one HTTP/1.0 request each)"
echo "  cpu: SHARP's utime+stime per request (us), from /proc (${HZ} ticks/s)"
echo

sleep 1.5
declare -A RSS_START RSS_IDLE0 RSS_IDLE1 RSS_AFTER MEM_AFTER
for a in "${ALLOCS[@]}"; do RSS_START[$a]=$(rss "${PID[$a]}"); done
idle_conns() { # alloc -> "before held ready open"
    python3 bench/h2_tool.py idle --port "${H2P[$1]}" --conns "$IDLE" --hold 2 --pids "${PID[$1]}" \
        | sed 's/[a-z_]*=//g'
}
for a in "${ALLOCS[@]}"; do
    read -r _ held ready open < <(idle_conns $a)
    RSS_IDLE0[$a]=$held
    [ "$ready" = "$IDLE" ] && [ "$open" = "$IDLE" ] || echo "  PROBLEM: $a idle: $ready ready, $open open of $IDLE"
done

declare -A CPU
run_h2load() { # alloc workload round
    local a=$1 w=$2 r=$3 t0 t1 out n url args
    if [ $w = h2 ]; then args=(-c 8 -m 100 -n "$H2_N"); url="http://127.0.0.1:${H2P[$a]}/"
    else args=(--h1 -c 64 -n "$H1_N"); url="http://127.0.0.1:${H1P[$a]}/"; fi
    t0=$(ticks "${PID[$a]}")
    out=$(h2load "${args[@]}" "$url" 2>&1) || true
    t1=$(ticks "${PID[$a]}")
    n=$(sed -n 's/^requests: .* \([0-9]*\) succeeded.*/\1/p' <<<"$out")
    local rps; rps=$(sed -n 's/^finished in .*, \([0-9.]*\) req\/s.*/\1/p' <<<"$out")
    [ "${n:-0}" -gt 0 ] || { echo "  PROBLEM: $a $w: $(grep -E '^requests:' <<<"$out")"; n=0; }
    CPU[$w.$a]+="$(per_op $((t1 - t0)) "$n") "
    printf "  round %d %-4s %-9s %9s req/s  cpu %6s us/req  (%s requests)\n" "$r" "$w" "$a" "$rps" "$(per_op $((t1 - t0)) "$n")" "$n"
}
run_tls() { # alloc round
    local a=$1 r=$2 t0 t1 n=0 i pids=()
    t0=$(ticks "${PID[$a]}")
    for i in $(seq "$TLS_CLIENTS"); do
        timeout $((TLS_S + 30)) openssl s_time -connect "127.0.0.1:${TLSP[$a]}" -new -www / -time "$TLS_S" \
            > "$W/stime.$i" 2>&1 &
        pids+=($!)
    done
    for i in "${pids[@]}"; do wait "$i" || true; done
    t1=$(ticks "${PID[$a]}")
    for i in $(seq "$TLS_CLIENTS"); do
        n=$((n + $(sed -n 's/^\([0-9]*\) connections in [0-9]* real seconds.*/\1/p' "$W/stime.$i" | tail -1)))
    done
    [ "$n" -gt 0 ] || echo "  PROBLEM: $a tls: no connection ($(tail -2 "$W/stime.1"))"
    CPU[tls.$a]+="$(per_op $((t1 - t0)) "$n") "
    printf "  round %d %-4s %-9s %9s handshakes  cpu %6s us/handshake\n" "$r" tls "$a" "$n" "$(per_op $((t1 - t0)) "$n")"
}

for r in $(seq "$REPEAT"); do
    if [ $((r % 2)) = 1 ]; then order=(glibc mimalloc); else order=(mimalloc glibc); fi
    for w in h2 h1 tls; do
        for a in "${order[@]}"; do
            if [ $w = tls ]; then run_tls $a $r; else run_h2load $a $w $r; fi
        done
    done
done

# Where the CPU goes, which load elsewhere on the machine does not skew as
# it skews CPU time: perf's cpu-clock samples of SHARP over one more h2 run
# each, the allocator's share (glibc: its malloc family in libc; mimalloc:
# all of libmimalloc). Skipped without perf or its permission.
declare -A SHARE
profile() { # alloc
    local a=$1 rec
    perf record -q -e cpu-clock -o "$W/perf.$a" -p "${PID[$a]}" > /dev/null 2>&1 &
    rec=$!
    sleep 0.3
    h2load -c 8 -m 100 -n "$H2_N" "http://127.0.0.1:${H2P[$a]}/" > /dev/null 2>&1 || true
    kill -INT "$rec" 2>/dev/null || true
    wait "$rec" 2>/dev/null || true
    SHARE[$a]=$(perf report -i "$W/perf.$a" --no-children --sort dso,sym --stdio 2>/dev/null | awk '
        /^ *[0-9.]+%/ { p = $1; sub(/%/, "", p)
            if ($2 ~ /libmimalloc/) alloc += p
            else if ($2 ~ /^libc\.so/ && $4 ~ /^(_int_|unlink_chunk|malloc|__libc_malloc|__libc_calloc|__libc_realloc|cfree|free|realloc|calloc|tcache|int_mallinfo|mallinfo|malloc_consolidate|sysmalloc|systrim|mtrim)/) {
                alloc += p; if ($4 ~ /mallinfo/) info += p } }
        END { printf "%.1f%% (mallinfo2 %.1f%%)", alloc, info }')
}
if command -v perf > /dev/null && perf record -q -e cpu-clock -o "$W/perf.probe" -- true > /dev/null 2>&1; then
    for a in "${ALLOCS[@]}"; do profile $a; done
fi

sleep 3
for a in "${ALLOCS[@]}"; do
    RSS_AFTER[$a]=$(rss "${PID[$a]}")
    MEM_AFTER[$a]=$(curl -s "127.0.0.1:${ADM[$a]}/memory" | tr -d ' \n')
    read -r _ held _ _ < <(idle_conns $a)
    RSS_IDLE1[$a]=$held
done

echo
echo "SHARP CPU per request (us; per handshake for tls): mean [min..max] over $REPEAT rounds"
stats() { tr ' ' '\n' <<<"$1" | awk 'NF { s += $1; n++; if (n == 1 || $1 < lo) lo = $1; if (n == 1 || $1 > hi) hi = $1 }
    END { if (n) printf "%.2f [%.2f..%.2f]", s / n, lo, hi }'; }
mean() { tr ' ' '\n' <<<"$1" | awk 'NF { s += $1; n++ } END { if (n) print s / n }'; }
# paired: each round's mimalloc figure over the same round's glibc one (the
# two ran back to back, so load from elsewhere on the machine mostly cancels)
paired() { # glibc-values mimalloc-values
    awk -v g="$1" -v m="$2" 'BEGIN { n = split(g, a, " "); split(m, b, " "); k = 0; w = 0
        for (i = 1; i <= n; i++) { r = 100 * (b[i] - a[i]) / a[i]; s += r; k++; if (b[i] < a[i]) w++
            if (k == 1 || r < lo) lo = r; if (k == 1 || r > hi) hi = r }
        if (k) printf "%+.1f%% [%+.1f..%+.1f], lower in %d of %d", s / k, lo, hi, w, k }'
}
printf "%-5s %-24s %-24s %-10s %s\n" workload glibc mimalloc "of means" "paired per round: mean [min..max]"
for w in h2 h1 tls; do
    printf "%-5s %-24s %-24s %-10s %s\n" $w "$(stats "${CPU[$w.glibc]}")" "$(stats "${CPU[$w.mimalloc]}")" \
        "$(awk -v g="$(mean "${CPU[$w.glibc]}")" -v m="$(mean "${CPU[$w.mimalloc]}")" 'BEGIN { printf "%+.1f%%", 100 * (m - g) / g }')" \
        "$(paired "${CPU[$w.glibc]}" "${CPU[$w.mimalloc]}")"
done
if [ -n "${SHARE[glibc]:-}" ]; then
    echo
    echo "the allocator's share of SHARP's CPU samples (perf cpu-clock, one h2 run each)"
    printf "  glibc %s, mimalloc %s\n" "${SHARE[glibc]}" "${SHARE[mimalloc]}"
fi
echo
echo "RSS (KiB)                       glibc   mimalloc"
printf "  after start                %8d   %8d\n" "${RSS_START[glibc]}" "${RSS_START[mimalloc]}"
printf "  fresh + %d idle h2 conns  %8d   %8d\n" "$IDLE" "${RSS_IDLE0[glibc]}" "${RSS_IDLE0[mimalloc]}"
printf "  3 s after the load         %8d   %8d\n" "${RSS_AFTER[glibc]}" "${RSS_AFTER[mimalloc]}"
printf "  then + %d idle h2 conns   %8d   %8d\n" "$IDLE" "${RSS_IDLE1[glibc]}" "${RSS_IDLE1[mimalloc]}"
echo
echo "/memory 3 s after the load"
for a in "${ALLOCS[@]}"; do echo "  $a: ${MEM_AFTER[$a]}"; done
