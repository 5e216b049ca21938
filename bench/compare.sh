#!/usr/bin/env bash
# Side-by-side HTTP/1.1 proxy benchmark on loopback, one run, same machine:
# nginx as the upstream (small body), then SHARP (1 worker), HAProxy
# (nbthread 1) and nginx (1 worker) as proxies in front of it, each driven
# by wrk with 64 keep-alive connections. Prints requests/s, p50 and p99, the
# proxies' RSS, each proxy's CPU time per request (utime+stime from
# /proc/<pid>/stat over the measured run; steadier than req/s on shared
# cores) and the ratios SHARP/HAProxy, SHARP/nginx and SHARP/direct.
#
#   bench/compare.sh [duration_seconds]      (default 10)
set -euo pipefail
cd "$(dirname "$0")/.."
DUR=${1:-10}
CONNS=${CONNS:-64}
THREADS=${THREADS:-2}
BUILD=${BUILD:-build}
SHARP=$BUILD/proxy/sharp
[ -x "$SHARP" ] || { echo "build first: make build"; exit 1; }
for t in nginx haproxy wrk; do command -v $t >/dev/null || [ -x /usr/sbin/$t ] || { echo "missing $t (make deps)"; exit 1; }; done
NGINX=$(command -v nginx || echo /usr/sbin/nginx)
HAPROXY=$(command -v haproxy || echo /usr/sbin/haproxy)

. bench/lib.sh
W=$(mktemp -d /tmp/sharp-bench.XXXXXX)
UP=$(port); PS=$(port); PH=$(port); PN=$(port); ADMIN=$(port)

nginx_conf() { # $1 dir, $2 port, $3 body: 'upstream' or 'proxy'
    mkdir -p "$1/logs"
    local loc
    if [ "$3" = upstream ]; then
        loc='location / { return 200 "hello from nginx upstream\n"; }'
    else
        loc="location / { proxy_pass http://backend; proxy_http_version 1.1; proxy_set_header Connection \"\"; }"
    fi
    cat > "$1/nginx.conf" <<CONF
worker_processes 1;
daemon off;
pid $1/nginx.pid;
error_log $1/logs/error.log crit;
events { worker_connections 4096; }
http {
    access_log off;
    keepalive_requests 1000000;
    upstream backend { server 127.0.0.1:$UP; keepalive 128; }
    server { listen 127.0.0.1:$2; $loc }
}
CONF
}

nginx_conf "$W/up" "$UP" upstream
"$NGINX" -p "$W/up" -c "$W/up/nginx.conf" & PIDS+=($!)
nginx_conf "$W/np" "$PN" proxy
"$NGINX" -p "$W/np" -c "$W/np/nginx.conf" & PIDS+=($!); NGINX_PROXY=$!

cat > "$W/haproxy.cfg" <<CONF
global
    nbthread 1
    maxconn 4000
defaults
    mode http
    timeout connect 5s
    timeout client 30s
    timeout server 30s
    option http-keep-alive
frontend fe
    bind 127.0.0.1:$PH
    default_backend be
backend be
    http-reuse always
    server s1 127.0.0.1:$UP
CONF
"$HAPROXY" -f "$W/haproxy.cfg" -db & PIDS+=($!); HAPROXY_PID=$!

bench_bootstrap bench "$PS" "$ADMIN" 1s "" "" "" "$UP" > "$W/sharp.yaml"
"$SHARP" -c "$W/sharp.yaml" --concurrency 1 -l error & PIDS+=($!); SHARP_PID=$!

for p in $UP $PS $PH $PN; do
    for _ in $(seq 100); do (echo > /dev/tcp/127.0.0.1/$p) 2>/dev/null && break; sleep 0.05; done
done

rss() { awk '/VmRSS/ {print $2}' /proc/$1/status 2>/dev/null || echo 0; }
# nginx's worker is the child of the master
nginx_worker() { pgrep -P "$1" | head -1; }

# CPU seconds (user + system) a process has used so far, from /proc.
cpu_ticks() { awk '{print $14 + $15}' /proc/$1/stat 2>/dev/null || echo 0; }
HZ=$(getconf CLK_TCK)

declare -A RPS P50 P99 RSS CPU
to_ms() { # wrk prints 1.23ms / 456.00us / 1.20s
    awk -v v="$1" 'BEGIN { if (v ~ /us$/) { sub(/us$/,"",v); print v/1000 } else if (v ~ /ms$/) { sub(/ms$/,"",v); print v+0 } else if (v ~ /s$/) { sub(/s$/,"",v); print v*1000 } else print v }'
}
run() { # name port pid
    wrk -t"$THREADS" -c"$CONNS" -d2s "http://127.0.0.1:$2/" > /dev/null  # warm-up
    local out t0=0 t1=0
    [ -n "$3" ] && t0=$(cpu_ticks "$3")
    out=$(wrk -t"$THREADS" -c"$CONNS" -d"${DUR}s" --latency "http://127.0.0.1:$2/")
    [ -n "$3" ] && t1=$(cpu_ticks "$3")
    local n; n=$(awk '/requests in/ {print $1}' <<<"$out")
    CPU[$1]=$([ -n "$3" ] && awk -v d=$((t1 - t0)) -v hz="$HZ" -v n="$n" 'BEGIN { if (n > 0) printf "%.2f", d / hz / n * 1e6; else print "n/a" }' || echo -)
    RPS[$1]=$(awk '/^Requests\/sec/ {print $2}' <<<"$out")
    P50[$1]=$(to_ms "$(awk '$1=="50%" {print $2}' <<<"$out")")
    P99[$1]=$(to_ms "$(awk '$1=="99%" {print $2}' <<<"$out")")
    local errs; errs=$(grep -E "Non-2xx|Socket errors" <<<"$out" || true)
    [ -n "$errs" ] && echo "  $1: $errs"
    RSS[$1]=$([ -n "$3" ] && rss "$3" || echo -)
}

echo "wrk -t$THREADS -c$CONNS -d${DUR}s, upstream nginx on 127.0.0.1:$UP ($(nproc) cores)"
run direct "$UP" ""
run sharp "$PS" "$SHARP_PID"
run haproxy "$PH" "$HAPROXY_PID"
run nginx "$PN" "$(nginx_worker $NGINX_PROXY)"

printf "\n%-10s %12s %10s %10s %10s %12s\n" target "req/s" "p50 ms" "p99 ms" "RSS KiB" "CPU us/req"
for n in direct sharp haproxy nginx; do
    printf "%-10s %12s %10s %10s %10s %12s\n" "$n" "${RPS[$n]}" "${P50[$n]}" "${P99[$n]}" "${RSS[$n]}" "${CPU[$n]}"
done
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.2f", a / b; else print "n/a" }'; }
echo
echo "SHARP/HAProxy throughput: $(ratio "${RPS[sharp]}" "${RPS[haproxy]}")   p99: $(ratio "${P99[sharp]}" "${P99[haproxy]}")   CPU/req: $(ratio "${CPU[sharp]}" "${CPU[haproxy]}")"
echo "SHARP/nginx   throughput: $(ratio "${RPS[sharp]}" "${RPS[nginx]}")   p99: $(ratio "${P99[sharp]}" "${P99[nginx]}")   CPU/req: $(ratio "${CPU[sharp]}" "${CPU[nginx]}")"
echo "SHARP/direct  throughput: $(ratio "${RPS[sharp]}" "${RPS[direct]}")   p99: $(ratio "${P99[sharp]}" "${P99[direct]}")"
