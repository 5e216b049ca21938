#!/usr/bin/env bash
# Side-by-side TLS termination benchmark on loopback, one run, same machine:
# SHARP (--concurrency 1), HAProxy (nbthread 1) and nginx (worker_processes
# 1) terminate TLS with the same certificate (made at run time with the
# openssl CLI: ECDSA P-256 and/or RSA 2048) and the same policy (TLS 1.3
# TLS_AES_128_GCM_SHA256; TLS 1.2 ECDHE-ECDSA/RSA-AES128-GCM-SHA256; curves
# X25519, P-256) in front of the same plaintext upstream (sharp-test-upstream).
#
# Rows, per proxy, REPEAT rounds with the order of the proxies rotating,
# medians printed with SHARP / best peer ratios:
#   full     handshakes/s without resumption: HS_CLIENTS parallel
#            `openssl s_time -new -www /` (one HTTP/1.0 request per
#            connection), and the proxy's CPU us per handshake
#   resumed  the same with `openssl s_time -reuse` (session tickets)
#   h1       keep-alive HTTPS, h2load --h1 -c H1_CONNS: req/s, p50/p99, CPU us/req
#   h2       keep-alive HTTPS, h2load -c H2_CONNS -m STREAMS (ALPN h2)
# CPU = utime+stime of the proxy's processes from /proc/<pid>/stat over the
# measured run. About 4 minutes with the defaults.
#
#   bench/tls.sh
#   DURATION=2 REPEAT=1 bench/tls.sh                    # quick look
#   CERTS="ecdsa rsa" HS_VERSIONS="1.3 1.2" bench/tls.sh  # more handshake rows (about 9 min)
#   env: DURATION=5 WARMUP=1 REPEAT=3 CERTS=ecdsa HS_VERSIONS=1.3 HS_CLIENTS=4
#        H1_CONNS=64 H2_CONNS=8 STREAMS=100 URLPATH=/ BUILD=build
#        RESULTS=bench/results (the output is also written to $RESULTS/tls.txt)
set -euo pipefail
cd "$(dirname "$0")/.."
DURATION=${DURATION:-5}
WARMUP=${WARMUP:-1}
REPEAT=${REPEAT:-3}
CERTS=${CERTS:-ecdsa}
HS_VERSIONS=${HS_VERSIONS:-1.3}
HS_CLIENTS=${HS_CLIENTS:-4}
H1_CONNS=${H1_CONNS:-64}
H2_CONNS=${H2_CONNS:-8}
STREAMS=${STREAMS:-100}
URLPATH=${URLPATH:-/}
BUILD=${BUILD:-build}
RESULTS=${RESULTS:-bench/results}
SHARP=$BUILD/proxy/sharp
UPSTREAM=$BUILD/test/upstream/sharp-test-upstream
[ -x "$SHARP" ] && [ -x "$UPSTREAM" ] || { echo "build first: make build"; exit 1; }
for c in $CERTS; do [[ $c == ecdsa || $c == rsa ]] || { echo "CERTS: ecdsa and/or rsa, not $c"; exit 1; }; done
for v in $HS_VERSIONS; do [[ $v == 1.2 || $v == 1.3 ]] || { echo "HS_VERSIONS: 1.2 and/or 1.3, not $v"; exit 1; }; done
for t in openssl h2load haproxy nginx; do
    command -v $t >/dev/null || [ -x /usr/sbin/$t ] || { echo "missing $t (make deps)"; exit 1; }
done
HAPROXY=$(command -v haproxy || echo /usr/sbin/haproxy)
NGINX=$(command -v nginx || echo /usr/sbin/nginx)
NEED=$((4 * H2_CONNS * STREAMS + 4 * H1_CONNS + 200))
if [ "$(ulimit -n)" -lt "$NEED" ]; then ulimit -n "$(ulimit -Hn)" 2>/dev/null || true; fi
[ "$(ulimit -n)" -ge "$NEED" ] || { echo "ulimit -n is $(ulimit -n), need about $NEED: lower STREAMS"; exit 1; }

. bench/lib.sh
W=$(mktemp -d /tmp/sharp-tlsbench.XXXXXX)
mkdir -p "$RESULTS"; rm -rf "$RESULTS/tls-problems"
exec > >(tee "$RESULTS/tls.txt")

# The cipher policy, the same on every proxy and in every client.
TLS13_SUITE=TLS_AES_128_GCM_SHA256
TLS12_CIPHERS=ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256
PROXIES=(sharp haproxy nginx)
KA_CERT=${CERTS%% *}  # the keep-alive rows use the first certificate

# Certificates: self-signed, made now (the clients do not verify them).
for c in $CERTS; do
    if [ $c = ecdsa ]; then alg=(-newkey ec -pkeyopt ec_paramgen_curve:P-256); else alg=(-newkey rsa:2048); fi
    openssl req -x509 "${alg[@]}" -nodes -keyout "$W/$c.key" -out "$W/$c.crt" -days 2 \
        -subj /CN=localhost -addext subjectAltName=DNS:localhost 2> /dev/null
    cat "$W/$c.crt" "$W/$c.key" > "$W/$c.pem"  # HAProxy's crt: chain and key in one file
done

# One instance per proxy and certificate, plus a SHARP admin port each; all
# ports in one call that holds every socket until it has them all.
NCERTS=$(wc -w <<<"$CERTS")
mapfile -t FREE < <(python3 -c '
import socket, sys
socks = [socket.socket() for _ in range(int(sys.argv[1]))]
for s in socks: s.bind(("127.0.0.1", 0))
print("\n".join(str(s.getsockname()[1]) for s in socks))' $((4 * NCERTS)))
declare -A PORT ADMIN PID_OF
i=0
for c in $CERTS; do
    for p in "${PROXIES[@]}"; do PORT[$p.$c]=${FREE[i]}; i=$((i + 1)); done
    ADMIN[$c]=${FREE[i]}; i=$((i + 1))
done

start_test_upstream "$UPSTREAM" "$W/up.out" --port 0 --name tls
UP=$STARTED_PORT; UPPID=$STARTED_PID

# SHARP: compare.sh's bootstrap (bench_bootstrap, router only, connect_timeout
# 1s) with a DownstreamTlsContext on the filter chain; HTTP/1.0 accepted (the
# s_time rows send HTTP/1.0, which Envoy answers with 426 by default).
sharp_yaml() { # cert listen admin
    local ts="    - transport_socket:
        name: envoy.transport_sockets.tls
        typed_config:
          \"@type\": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext
          common_tls_context:
            alpn_protocols: [h2, http/1.1]
            tls_params:
              tls_minimum_protocol_version: TLSv1_2
              tls_maximum_protocol_version: TLSv1_3
              cipher_suites: [${TLS12_CIPHERS//:/, }]
              ecdh_curves: [X25519, P-256]
            tls_certificates:
            - certificate_chain: { filename: $W/$1.crt }
              private_key: { filename: $W/$1.key }
      filters:"
    local hcm="          http_protocol_options: { accept_http_10: true, default_host_for_http_10: localhost }"
    bench_bootstrap tlsbench "$2" "$3" 1s "" "" "" "$UP" \
        | awk -v ts="$ts" -v hcm="$hcm" '$0 == "    - filters:" { print ts; next } { print } /stat_prefix:/ { print hcm }'
}

for c in $CERTS; do
    sharp_yaml $c "${PORT[sharp.$c]}" "${ADMIN[$c]}" > "$W/sharp.$c.yaml"
    start_sharp_on "$SHARP" "$W/sharp.$c.yaml" "$W/sharp.$c.log" 1 "${PORT[sharp.$c]}" "${ADMIN[$c]}"
    PID_OF[sharp.$c]=$STARTED_PID

    # HAProxy 2.6: one thread, TLS on the bind line, upstream connections
    # reused (http-reuse always), as compare.sh.
    cat > "$W/haproxy.$c.cfg" <<CONF
global
    nbthread 1
    maxconn $((4 * H2_CONNS * STREAMS + 1000))
    ssl-default-bind-options ssl-min-ver TLSv1.2 ssl-max-ver TLSv1.3
    ssl-default-bind-ciphers $TLS12_CIPHERS
    ssl-default-bind-ciphersuites $TLS13_SUITE
    ssl-default-bind-curves X25519:P-256
defaults
    mode http
    timeout connect 5s
    timeout client 30s
    timeout server 30s
    option http-keep-alive
frontend fe
    bind 127.0.0.1:${PORT[haproxy.$c]} ssl crt $W/$c.pem alpn h2,http/1.1
    default_backend be
backend be
    http-reuse always
    server s1 127.0.0.1:$UP
CONF
    "$HAPROXY" -f "$W/haproxy.$c.cfg" -db > "$W/haproxy.$c.log" 2>&1 &
    PIDS+=($!); PID_OF[haproxy.$c]=$!

    # nginx 1.22: one worker, http2 on the TLS listener, upstream keep-alive
    # as compare.sh (pool raised to the requests in flight). 1.22's default
    # ssl_protocols lack TLSv1.3, so they are set; tickets are on by default.
    mkdir -p "$W/nginx.$c/logs"
    cat > "$W/nginx.$c/nginx.conf" <<CONF
worker_processes 1;
worker_rlimit_nofile $((4 * H2_CONNS * STREAMS + 1000));
daemon off;
pid $W/nginx.$c/nginx.pid;
error_log $W/nginx.$c/logs/error.log error;
events { worker_connections $((4 * H2_CONNS * STREAMS + 1000)); }
http {
    access_log off;
    keepalive_requests 1000000;
    upstream backend { server 127.0.0.1:$UP; keepalive $((H2_CONNS * STREAMS)); }
    server {
        listen 127.0.0.1:${PORT[nginx.$c]} ssl http2;
        ssl_certificate $W/$c.crt;
        ssl_certificate_key $W/$c.key;
        ssl_protocols TLSv1.2 TLSv1.3;
        ssl_ciphers $TLS12_CIPHERS;
        ssl_conf_command Ciphersuites $TLS13_SUITE;
        ssl_ecdh_curve X25519:prime256v1;
        location / { proxy_pass http://backend; proxy_http_version 1.1; proxy_set_header Connection ""; }
    }
}
CONF
    "$NGINX" -p "$W/nginx.$c" -c "$W/nginx.$c/nginx.conf" > "$W/nginx.$c/out" 2>&1 &
    PIDS+=($!); PID_OF[nginx.$c]=$!
done

wait_port() { for _ in $(seq 200); do (echo > "/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0; sleep 0.05; done; return 1; }
for k in "${!PID_OF[@]}"; do
    wait_port "${PORT[$k]}" && kill -0 "${PID_OF[$k]}" 2>/dev/null \
        || { echo "$k did not start:"; for f in "$W/$k".* "$W/$k"/*/*; do [ -f "$f" ] && tail -5 "$f"; done; exit 1; }
done
sleep 0.3  # nginx forks its worker after binding
# The counted processes: the proxy and its children of the same program
# (nginx: master + worker; the master is idle).
declare -A TREE
for k in "${!PID_OF[@]}"; do
    p=${PID_OF[$k]}; TREE[$k]="$p"
    for ch in $(pgrep -P "$p" || true); do
        [ "$(cat /proc/$ch/comm 2>/dev/null)" = "$(cat /proc/$p/comm)" ] && TREE[$k]+=" $ch"
    done
done

HZ=$(getconf CLK_TCK)
cpu_ticks() { local p t=0 v; for p in "$@"; do v=$(awk '{print $14 + $15}' /proc/$p/stat 2>/dev/null || echo 0); t=$((t + v)); done; echo $t; }
alive() { local p; for p in "$@"; do kill -0 "$p" 2>/dev/null || return 1; done; }
per_op() { awk -v d="$1" -v hz="$HZ" -v n="$2" 'BEGIN { if (n > 0) printf "%.2f", d / hz / n * 1e6; else print "n/a" }'; }

# A probe of every instance before the load: one HTTP/1.0 request as s_time
# sends it (the response must be the upstream's 200; its size is what the
# handshake rows expect per connection) and the negotiated protocol, cipher
# and key exchange, for each TLS version.
declare -A RESP_BYTES NEGOTIATED
probe() { # key
    local k=$1 out v
    for v in 1.3 1.2; do
        out=$(printf 'GET %s HTTP/1.0\r\n\r\n' "$URLPATH" | timeout 10 openssl s_client -connect "127.0.0.1:${PORT[$k]}" \
            -tls${v/./_} -ciphersuites $TLS13_SUITE -cipher $TLS12_CIPHERS -ign_eof 2>&1) || true
        local status cipher tmp
        status=$(grep -m1 '^HTTP/1' <<<"$out" | tr -d '\r' || true)
        cipher=$(sed -n 's/^New, \(TLSv[0-9.]*\), Cipher is \(.*\)/\1 \2/p' <<<"$out" | head -1)
        tmp=$(sed -n 's/^\(Server \|Peer \)\{0,1\}Temp Key: \([^,]*\).*/\2/p' <<<"$out" | head -1)
        NEGOTIATED[$k]+="${NEGOTIATED[$k]:+; }${cipher:-no TLS $v} ${tmp}"
        if [[ $status != *" 200"* ]]; then echo "$k: the TLS $v probe got '${status:-no response}':"; tail -5 <<<"$out"; exit 1; fi
        # bytes of the response: from the status line to the end
    done
    # the whole response's size, read until the proxy closes (what s_time counts)
    RESP_BYTES[$k]=$(python3 -c '
import socket, ssl, sys
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT); ctx.check_hostname = False; ctx.verify_mode = ssl.CERT_NONE
s = ctx.wrap_socket(socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=10))
s.sendall(b"GET " + sys.argv[2].encode() + b" HTTP/1.0\r\n\r\n")
data = b""
while True:
    try:
        b = s.recv(65536)
    except (ssl.SSLEOFError, ConnectionResetError):
        break
    if not b: break
    data += b
print(len(data) if data.startswith(b"HTTP/1.1 200") or data.startswith(b"HTTP/1.0 200") else 0)' "${PORT[$k]}" "$URLPATH")
    [ "${RESP_BYTES[$k]}" -gt 0 ] || { echo "$k: no 200 to an HTTP/1.0 request"; exit 1; }
}
for c in $CERTS; do for p in "${PROXIES[@]}"; do probe "$p.$c"; done; done

declare -A VAL P50 P99 CPU NOTE
PROBLEMS=()
problem() { # key row.proxy round text
    NOTE[$2]="!"; PROBLEMS+=("$1 round $3: $4")
    mkdir -p "$RESULTS/tls-problems"; cp -r "$W/$1".* "$RESULTS/tls-problems/" 2>/dev/null || true
}

# Handshake rows: HS_CLIENTS parallel s_time processes for DURATION s, each
# one connection at a time, one HTTP/1.0 request per connection.
run_stime() { # proxy cert version mode(new|reuse) round
    local p=$1 c=$2 v=$3 m=$4 r=$5 k=$1.$2 row port pids i t0 t1 c0 c1 n=0 reused=0 bytes=0 wall
    row=$([ $m = new ] && echo full || echo resumed).$c.$v
    port=${PORT[$k]}; pids=${TREE[$k]}
    local args=(-connect "127.0.0.1:$port" -$m -www "$URLPATH" -tls${v/./_} -ciphersuites $TLS13_SUITE -cipher $TLS12_CIPHERS)
    [ "$WARMUP" != 0 ] && timeout $((WARMUP + 30)) openssl s_time "${args[@]}" -time "$WARMUP" > /dev/null 2>&1 || true
    local spids=()
    c0=$(cpu_ticks $pids); t0=$(now_ms)
    for i in $(seq "$HS_CLIENTS"); do
        timeout $((DURATION + 30)) openssl s_time "${args[@]}" -time "$DURATION" > "$W/$k.stime.$i" 2>&1 &
        spids+=($!)
    done
    local rc=0
    for i in "${spids[@]}"; do wait "$i" || rc=$?; done
    t1=$(now_ms); c1=$(cpu_ticks $pids)
    for i in $(seq "$HS_CLIENTS"); do
        local f="$W/$k.stime.$i" cn cb
        # the -reuse runs also print a first, full-handshake block: count the last
        read -r cn cb < <(sed -n 's/^\([0-9]*\) connections in [0-9]* real seconds, \([0-9]*\) bytes read per connection/\1 \2/p' "$f" | tail -1) || true
        n=$((n + ${cn:-0})); bytes=$((bytes + ${cn:-0} * ${cb:-0}))
        # s_time prints one character per connection: r when resumed
        reused=$((reused + $(awk '/^[*rtT123]+$/ { s = $0 } END { print gsub(/r/, "", s) }' "$f")))
    done
    wall=$(awk -v a="$t0" -v b="$t1" 'BEGIN { print (b - a) / 1000 }')
    local rate cpu share per
    rate=$(awk -v n="$n" -v w="$wall" 'BEGIN { printf "%.1f", (w > 0 ? n / w : 0) }')
    cpu=$(per_op $((c1 - c0)) "$n")
    share=$(awk -v a="$reused" -v n="$n" 'BEGIN { if (n > 0) printf "%.0f", 100 * a / n; else print 0 }')
    per=$(awk -v b="$bytes" -v n="$n" 'BEGIN { if (n > 0) printf "%d", b / n; else print 0 }')
    VAL[$row.$p]+="$rate "; CPU[$row.$p]+="$cpu "
    local prob=""
    [ "$rc" != 0 ] && prob+=" s_time exit $rc;"
    [ "$n" = 0 ] && prob+=" no connection;"
    [ $m = new ] && [ "$reused" != 0 ] && prob+=" $reused connections resumed;"
    [ $m = reuse ] && [ "$share" -lt 95 ] && prob+=" only $share% resumed;"
    awk -v a="$per" -v b="${RESP_BYTES[$k]}" 'BEGIN { exit !(a < 0.8 * b || a > 1.2 * b) }' \
        && prob+=" $per bytes per connection, the probe's 200 had ${RESP_BYTES[$k]};"
    ! alive $pids && prob+=" process gone;"
    printf "  round %-2d %-16s %-8s %10s handshakes/s  cpu %8s us/handshake  (%d connections, %s%% resumed)%s\n" \
        "$r" "$row" "$p" "$rate" "$cpu" "$n" "$share" "${prob:+  PROBLEM:$prob}"
    if [ -n "$prob" ]; then
        problem "$k" "$row.$p" "$r" "$row:$prob openssl s_time ${args[*]} -time $DURATION x $HS_CLIENTS"
        alive $pids || { echo "$k died"; exit 1; }
    fi
}

# Keep-alive rows: h2load over HTTPS, HTTP/1.1 or HTTP/2 by ALPN.
run_h2load() { # proxy proto(h1|h2) round
    local p=$1 row=$2 r=$3 k=$1.$KA_CERT out rc=0 pids proto
    pids=${TREE[$k]}
    if [ $row = h1 ]; then proto=(--h1 -c "$H1_CONNS" -m 1); else proto=(-c "$H2_CONNS" -m "$STREAMS"); fi
    local args=("${proto[@]}" --ciphers=$TLS12_CIPHERS --tls13-ciphers=$TLS13_SUITE)
    local url="https://127.0.0.1:${PORT[$k]}$URLPATH"
    [ "$WARMUP" != 0 ] && { timeout $((WARMUP + 30)) h2load "${args[@]}" -D "$WARMUP" "$url" > /dev/null 2>&1 || true; }
    local c0 c1
    c0=$(cpu_ticks $pids)
    out=$(timeout $((DURATION + 30)) h2load "${args[@]}" -D "$DURATION" --log-file "$W/log" "$url" 2>&1) || rc=$?
    c1=$(cpu_ticks $pids)
    echo "$out" > "$W/$k.h2load-$row-$r.txt"
    local rps done failed errored tmo s3 s4 s5 n p50 p99 bad tlsp alpn
    rps=$(sed -n 's/^finished in .*, \([0-9.]*\) req\/s.*/\1/p' <<<"$out")
    read -r done failed errored tmo < <(sed -n 's/^requests: .* \([0-9]*\) done, [0-9]* succeeded, \([0-9]*\) failed, \([0-9]*\) errored, \([0-9]*\) timeout.*/\1 \2 \3 \4/p' <<<"$out") || true
    read -r s3 s4 s5 < <(sed -n 's/^status codes: [0-9]* 2xx, \([0-9]*\) 3xx, \([0-9]*\) 4xx, \([0-9]*\) 5xx.*/\1 \2 \3/p' <<<"$out") || true
    read -r n p50 p99 bad < <(python3 bench/h2_tool.py pct "$W/log")
    rm -f "$W/log"
    tlsp=$(sed -n 's/^TLS Protocol: //p' <<<"$out"); alpn=$(sed -n 's/^Application protocol: //p' <<<"$out")
    local cpu; cpu=$(per_op $((c1 - c0)) "${done:-0}")
    VAL[$row.$p]+="${rps:-0} "; P50[$row.$p]+="$p50 "; P99[$row.$p]+="$p99 "; CPU[$row.$p]+="$cpu "
    local prob="" want=http/1.1
    [ $row = h2 ] && want=h2
    [ "$rc" != 0 ] && prob+=" h2load exit $rc$([ "$rc" = 124 ] && echo ' (stalled)');"
    [ "${failed:-0}" != 0 ] || [ "${errored:-0}" != 0 ] || [ "${tmo:-0}" != 0 ] && prob+=" failed=$failed errored=$errored timeout=$tmo;"
    [ "$((${s3:-0} + ${s4:-0} + ${s5:-0}))" != 0 ] && prob+=" 3xx=$s3 4xx=$s4 5xx=$s5;"
    [ "${bad:-0}" != 0 ] && prob+=" logged non-2xx=$bad;"
    [ -z "$done" ] || [ "$done" = 0 ] && prob+=" no request done;"
    [ "$alpn" != "$want" ] && prob+=" ALPN '$alpn', not $want;"
    ! alive $pids && prob+=" process gone;"
    printf "  round %-2d %-16s %-8s %10s req/s  p50 %8s ms  p99 %8s ms  cpu %7s us/req  (%s %s)%s\n" \
        "$r" "$row" "$p" "${rps:-0}" "$p50" "$p99" "$cpu" "$tlsp" "$alpn" "${prob:+  PROBLEM:$prob}"
    if [ -n "$prob" ]; then
        problem "$k" "$row.$p" "$r" "$row:$prob h2load ${args[*]} -D $DURATION $url"
        alive $pids || { echo "$k died"; exit 1; }
    fi
}

median() { tr ' ' '\n' | awk '/^[0-9.]+$/' | sort -g | awk '{ v[NR] = $1 } END { if (NR == 0) print "n/a"; else if (NR % 2) print v[(NR + 1) / 2]; else printf "%.2f\n", (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (a ~ /^[0-9.]+$/ && b ~ /^[0-9.]+$/ && b > 0) printf "%.2f", a / b; else print "n/a" }'; }

HS_ROWS=()
for c in $CERTS; do for v in $HS_VERSIONS; do HS_ROWS+=("full.$c.$v" "resumed.$c.$v"); done; done
ROWS=("${HS_ROWS[@]}" h1 h2)

echo "bench/tls.sh: ${DURATION}s per run (warm-up ${WARMUP}s), $REPEAT rounds, medians; GET $URLPATH"
echo "machine: $(nproc) cores; load before: $(uptime | sed 's/.*load average: //')"
echo "peers: $("$HAPROXY" -v | head -1 | cut -d' ' -f1-3), $("$NGINX" -v 2>&1 | sed 's/.*: //'), $(openssl version | cut -d' ' -f1-2), $(h2load --version | head -1)"
echo "policy: TLS 1.2 and 1.3; TLS 1.3 $TLS13_SUITE; TLS 1.2 $TLS12_CIPHERS; curves X25519, P-256 (set on every proxy and client)"
echo "certificates (self-signed, made now): $(for c in $CERTS; do [ $c = ecdsa ] && printf 'ECDSA P-256 ' || printf 'RSA 2048 '; done)(keep-alive rows: $KA_CERT)"
echo "upstream: sharp-test-upstream HTTP/1.1 on :$UP (plaintext)"
echo "negotiated (openssl s_client, TLS 1.3; TLS 1.2):"
for c in $CERTS; do for p in "${PROXIES[@]}"; do echo "  $p.$c: ${NEGOTIATED[$p.$c]}"; done; done
echo "processes counted:$(for k in $(printf '%s\n' "${!TREE[@]}" | sort); do printf ' %s=%d' "$k" "$(wc -w <<<"${TREE[$k]}")"; done)"
echo "full / resumed: $HS_CLIENTS parallel 'openssl s_time -new|-reuse -www $URLPATH' (one HTTP/1.0 request per connection, no keep-alive)"
echo "h1: h2load --h1 -c $H1_CONNS (keep-alive); h2: h2load -c $H2_CONNS -m $STREAMS (ALPN h2)"
for r in $(seq "$REPEAT"); do
    n=${#PROXIES[@]}; order=()
    for i in $(seq 0 $((n - 1))); do order+=("${PROXIES[(i + r - 1) % n]}"); done
    for row in "${ROWS[@]}"; do
        for p in "${order[@]}"; do
            case $row in
                full.*) IFS=. read -r _ c v1 v2 <<<"$row"; run_stime "$p" "$c" "$v1.$v2" new "$r" ;;
                resumed.*) IFS=. read -r _ c v1 v2 <<<"$row"; run_stime "$p" "$c" "$v1.$v2" reuse "$r" ;;
                *) run_h2load "$p" "$row" "$r" ;;
            esac
        done
    done
done
echo "load after: $(uptime | sed 's/.*load average: //')"

echo
echo "medians of $REPEAT; CPU = the proxy's processes' user+system time per handshake (full/resumed, each with its one request) or per request"
printf "%-17s %-6s %12s %12s %12s %-22s %9s %9s %9s %s\n" row unit sharp haproxy nginx "SHARP/best peer" "CPU sharp" haproxy nginx "CPU SHARP/best"
for row in "${ROWS[@]}"; do
    declare -A M=() MC=()
    for p in "${PROXIES[@]}"; do M[$p]=$(median <<<"${VAL[$row.$p]:-}"); MC[$p]=$(median <<<"${CPU[$row.$p]:-}"); done
    best="" bestc=""
    for p in haproxy nginx; do
        [[ ${M[$p]} =~ ^[0-9.]+$ ]] && { [ -z "$best" ] || awk -v a="${M[$p]}" -v b="${M[$best]}" 'BEGIN { exit !(a > b) }'; } && best=$p
        [[ ${MC[$p]} =~ ^[0-9.]+$ ]] && { [ -z "$bestc" ] || awk -v a="${MC[$p]}" -v b="${MC[$bestc]}" 'BEGIN { exit !(a < b) }'; } && bestc=$p
    done
    unit=$([[ $row == h* ]] && echo req/s || echo hs/s)
    cu=$([[ $row == h* ]] && echo "us/req" || echo "us/hs")
    printf "%-17s %-6s %12s %12s %12s %-22s %9s %9s %9s %s\n" "$row" "$unit" \
        "${M[sharp]}${NOTE[$row.sharp]:-}" "${M[haproxy]}${NOTE[$row.haproxy]:-}" "${M[nginx]}${NOTE[$row.nginx]:-}" \
        "$(ratio "${M[sharp]}" "${M[${best:-x}]:-}") (${best:-none})" \
        "${MC[sharp]}" "${MC[haproxy]}" "${MC[nginx]}" "$(ratio "${MC[sharp]}" "${MC[${bestc:-x}]:-}") (${bestc:-none}) $cu"
done
echo
echo "keep-alive latency (ms, medians of the runs' nearest-rank percentiles from h2load's per-request log)"
printf "%-4s %10s %10s %10s %10s %10s %10s %s\n" row "sharp p50" p99 "haproxy p50" p99 "nginx p50" p99 "p99 SHARP/best peer"
for row in h1 h2; do
    declare -A Q=()
    for p in "${PROXIES[@]}"; do Q[$p]=$(median <<<"${P99[$row.$p]:-}"); done
    bq=haproxy; awk -v a="${Q[nginx]}" -v b="${Q[haproxy]}" 'BEGIN { exit !(a < b) }' && bq=nginx
    printf "%-4s %10s %10s %10s %10s %10s %10s %s\n" "$row" \
        "$(median <<<"${P50[$row.sharp]:-}")" "${Q[sharp]}" "$(median <<<"${P50[$row.haproxy]:-}")" "${Q[haproxy]}" \
        "$(median <<<"${P50[$row.nginx]:-}")" "${Q[nginx]}" "$(ratio "${Q[sharp]}" "${Q[$bq]}") ($bq)"
done

if [ ${#PROBLEMS[@]} -gt 0 ]; then
    echo
    echo "problems (their proxies' rows are suspect; configs, logs and outputs in $RESULTS/tls-problems/):"
    for p in "${PROBLEMS[@]}"; do echo "  $p"; done
fi
