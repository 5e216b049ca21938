#!/usr/bin/env bash
# bench/hygiene.sh: request hygiene and slow clients, SHARP next to HAProxy
# and nginx on loopback. Each proxy (SHARP 1 worker on its embedded default
# bootstrap, HAProxy nbthread 1, nginx 1 worker) gets LANES listeners, each
# in front of its own recording backend (bench/hygiene_suite.py: a raw
# HTTP/1.1 server that keeps every byte it receives and checks it with a
# strict RFC 9112 parser). Two phases:
#   corpus  ~140 hand-written smuggling / malformed-input cases and MUTATIONS
#           seeded mutations of valid requests, each on a fresh connection:
#           the client's outcome and what reached the backend, per proxy
#   slow    N slowloris heads and N trickled POST bodies per proxy: RSS and
#           CPU of the proxy, connections still open after HOLD seconds
# Summary table on stdout and in $RESULTS/hygiene/hygiene-summary.txt,
# per-input lines in $RESULTS/hygiene/hygiene-details.txt. About 2 minutes.
#
#   bench/hygiene.sh
#   N=500 MUTATIONS=300 PHASES=corpus bench/hygiene.sh        # quick look
#   env: N=2000 MUTATIONS=2000 SEED=1 LANES=8 TIMEOUT=3 HOLD=15 AFTER=5
#        INTERVAL=2 PHASES=corpus,slow BUILD=build RESULTS=bench/results
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD=${BUILD:-build}
RESULTS=${RESULTS:-bench/results}
N=${N:-2000}
MUTATIONS=${MUTATIONS:-2000}
SEED=${SEED:-1}
LANES=${LANES:-8}
TIMEOUT=${TIMEOUT:-3}
HOLD=${HOLD:-15}
AFTER=${AFTER:-5}
INTERVAL=${INTERVAL:-2}
PHASES=${PHASES:-corpus,slow}
SHARP=$BUILD/proxy/sharp
[ -x "$SHARP" ] || { echo "build first: make build"; exit 1; }
for t in nginx haproxy; do command -v $t >/dev/null || [ -x /usr/sbin/$t ] || { echo "missing $t (make deps)"; exit 1; }; done
NGINX=$(command -v nginx || echo /usr/sbin/nginx)
HAPROXY=$(command -v haproxy || echo /usr/sbin/haproxy)
python3 -c 'import yaml' 2>/dev/null || { echo "missing python3-yaml (make deps)"; exit 1; }

# The slow phase holds 2N client sockets and N backend sockets in the
# suite's process, and as many in each proxy: raise the soft limit to the
# hard one when it is lower.
NEED=$((3 * N + 8 * LANES + 200))
if [ "$(ulimit -n)" -lt "$NEED" ]; then ulimit -n "$(ulimit -Hn)" 2>/dev/null || true; fi
if [ "$(ulimit -n)" -lt "$NEED" ] && [[ $PHASES == *slow* ]]; then
    echo "ulimit -n is $(ulimit -n), the slow phase with N=$N needs about $NEED: lower N"; exit 1
fi

. bench/lib.sh
W=$(mktemp -d /tmp/sharp-hygiene.XXXXXX)
OUT=$RESULTS/hygiene
mkdir -p "$OUT"

# LANES (listen, backend) port pairs per proxy and SHARP's admin port. One
# call holds all the sockets until it has them all: port() called 6*LANES+1
# times could hand out the same port twice.
mapfile -t FREE < <(python3 -c '
import socket, sys
socks = [socket.socket() for _ in range(int(sys.argv[1]))]
for s in socks: s.bind(("127.0.0.1", 0))
print("\n".join(str(s.getsockname()[1]) for s in socks))' $((6 * LANES + 1)))
declare -A LS BE
k=0
for p in sharp haproxy nginx; do
    for i in $(seq 0 $((LANES - 1))); do LS[$p.$i]=${FREE[k]}; BE[$p.$i]=${FREE[k + 1]}; k=$((k + 2)); done
done
ADMIN=${FREE[k]}

# SHARP: the embedded default bootstrap (edge limits: request_headers_timeout
# 10s, 32 KiB buffers, ...), one listener + cluster per lane.
lanes=()
for i in $(seq 0 $((LANES - 1))); do lanes+=(--lane "${LS[sharp.$i]}:${BE[sharp.$i]}"); done
python3 bench/hygiene_suite.py bootstrap --default config/default_bootstrap.c --admin "$ADMIN" "${lanes[@]}" \
    > "$W/sharp.yaml"
"$SHARP" -c "$W/sharp.yaml" --concurrency 1 -l error > "$W/sharp-access.log" 2> "$W/sharp.log" &
SHARP_PID=$!; PIDS+=("$SHARP_PID")

# HAProxy: defaults plus the timeouts comparable to SHARP's (request headers
# 10 s, inactivity 300 s like stream_idle_timeout).
{
    cat <<CONF
global
    nbthread 1
    maxconn $((2 * N + 8 * LANES + 100))
defaults
    mode http
    timeout connect 5s
    timeout http-request 10s
    timeout client 300s
    timeout server 300s
    option http-keep-alive
CONF
    for i in $(seq 0 $((LANES - 1))); do
        printf 'frontend fe%d\n    bind 127.0.0.1:%d\n    default_backend be%d\n' "$i" "${LS[haproxy.$i]}" "$i"
        printf 'backend be%d\n    server s1 127.0.0.1:%d\n' "$i" "${BE[haproxy.$i]}"
    done
} > "$W/haproxy.cfg"
"$HAPROXY" -f "$W/haproxy.cfg" -db > "$W/haproxy.log" 2>&1 &
HAPROXY_PID=$!; PIDS+=("$HAPROXY_PID")

# nginx: proxy_pass with HTTP/1.1 and upstream keep-alive as in compare.sh,
# client_header_timeout 10s, body/send inactivity 300 s.
mkdir -p "$W/nginx/logs"
{
    cat <<CONF
worker_processes 1;
worker_rlimit_nofile $(ulimit -n);
daemon off;
pid $W/nginx/nginx.pid;
error_log $W/nginx/logs/error.log crit;
events { worker_connections $((3 * N + 8 * LANES + 100)); }
http {
    access_log off;
    client_header_timeout 10s;
    client_body_timeout 300s;
    send_timeout 300s;
CONF
    for i in $(seq 0 $((LANES - 1))); do
        printf '    upstream b%d { server 127.0.0.1:%d; keepalive 16; }\n' "$i" "${BE[nginx.$i]}"
        printf '    server { listen 127.0.0.1:%d; location / { proxy_pass http://b%d; proxy_http_version 1.1; proxy_set_header Connection ""; } }\n' \
            "${LS[nginx.$i]}" "$i"
    done
    echo "}"
} > "$W/nginx/nginx.conf"
"$NGINX" -p "$W/nginx" -c "$W/nginx/nginx.conf" 2> "$W/nginx.log" &
NGINX_PID=$!; PIDS+=("$NGINX_PID")

for p in sharp haproxy nginx; do
    for i in $(seq 0 $((LANES - 1))); do
        for _ in $(seq 100); do (echo > "/dev/tcp/127.0.0.1/${LS[$p.$i]}") 2>/dev/null && break; sleep 0.05; done
    done
done
for pid in "$SHARP_PID" "$HAPROXY_PID" "$NGINX_PID"; do
    kill -0 "$pid" 2>/dev/null || { echo "a proxy did not start:"; tail -5 "$W"/*.log; exit 1; }
done
NGINX_WORKER=$(pgrep -P "$NGINX_PID" | head -1)

lanes_json() { # proxy
    local i sep=""
    for i in $(seq 0 $((LANES - 1))); do
        printf '%s{"listen": %d, "backend": %d}' "$sep" "${LS[$1.$i]}" "${BE[$1.$i]}"; sep=", "
    done
}
cat > "$W/conf.json" <<CONF
{"proxies": [
  {"name": "sharp", "rss_pid": $SHARP_PID, "watch_pids": [$SHARP_PID], "lanes": [$(lanes_json sharp)]},
  {"name": "haproxy", "rss_pid": $HAPROXY_PID, "watch_pids": [$HAPROXY_PID], "lanes": [$(lanes_json haproxy)]},
  {"name": "nginx", "rss_pid": $NGINX_WORKER, "watch_pids": [$NGINX_PID, $NGINX_WORKER], "lanes": [$(lanes_json nginx)]}
]}
CONF

echo "SHARP $("$SHARP" --version 2>&1 | head -1), $("$HAPROXY" -v | head -1 | cut -d' ' -f1-3), $("$NGINX" -v 2>&1 | cut -d' ' -f3); $(nproc) cores, ulimit -n $(ulimit -n)"
python3 bench/hygiene_suite.py run --conf "$W/conf.json" --results "$OUT" --phases "$PHASES" \
    --seed "$SEED" --mutations "$MUTATIONS" --timeout "$TIMEOUT" --n "$N" --interval "$INTERVAL" \
    --hold "$HOLD" --after "$AFTER"
echo
echo "details: $OUT/hygiene-details.txt"
if grep -q . "$W/sharp.log"; then echo "SHARP's log (errors):"; tail -5 "$W/sharp.log"; fi
