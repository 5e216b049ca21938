# bench/lib.sh: helpers shared by the benchmark scripts (sourced, not run).
# The caller sets W (its scratch directory) before using start_* helpers.
# Every process a script starts goes into PIDS; the EXIT trap ends them by
# PID and removes W.

PIDS=()
bench_cleanup() {
    for p in "${PIDS[@]+"${PIDS[@]}"}"; do kill "$p" 2>/dev/null || true; done
    for p in "${PIDS[@]+"${PIDS[@]}"}"; do wait "$p" 2>/dev/null || true; done
    [ -n "${W:-}" ] && rm -rf "$W"
}
trap bench_cleanup EXIT
trap 'exit 130' INT TERM

# A free loopback port.
port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
now_ms() { date +%s%3N; }
sleep_until() { # epoch ms
    local d; d=$(( $1 - $(now_ms) ))
    [ "$d" -gt 0 ] && sleep "$(awk -v d="$d" 'BEGIN { printf "%.3f", d / 1000 }')" || true
}

# Stops one process this script started.
stop() { # pid
    kill "$1" 2>/dev/null || true
    wait "$1" 2>/dev/null || true
    local keep=() p
    for p in "${PIDS[@]}"; do [ "$p" != "$1" ] && keep+=("$p"); done
    PIDS=("${keep[@]+"${keep[@]}"}")
}

# Starts sharp-test-upstream (extra args after the log file); sets
# STARTED_PID and STARTED_PORT from its "listening on" line.
start_test_upstream() { # binary log [args...]
    local bin=$1 log=$2; shift 2
    : > "$log"
    "$bin" --address 127.0.0.1 --quiet "$@" > "$log" &
    STARTED_PID=$!; PIDS+=("$STARTED_PID")
    for _ in $(seq 100); do grep -q listening "$log" && break; sleep 0.05; done
    STARTED_PORT=$(sed -n 's/^listening on .*:\([0-9]*\)$/\1/p' "$log")
    [ -n "$STARTED_PORT" ] || { echo "upstream did not start: $*"; exit 1; }
}

# Starts SHARP on a bootstrap file and waits for its listener and admin
# ports; sets STARTED_PID.
start_sharp_on() { # binary yaml log workers listen_port admin_port
    "$1" -c "$2" --concurrency "$4" -l error 2> "$3" &
    STARTED_PID=$!; PIDS+=("$STARTED_PID")
    local p
    for p in "$5" "$6"; do
        for _ in $(seq 100); do (echo > "/dev/tcp/127.0.0.1/$p") 2>/dev/null && break; sleep 0.05; done
    done
    kill -0 "$STARTED_PID" 2>/dev/null || { echo "sharp exited:"; tail -5 "$3"; exit 1; }
}

# An Envoy v3 bootstrap for the benchmarks: admin, one listener whose HCM
# routes "/" to the STATIC cluster `service` over the given ports. The extra
# pieces are YAML appended, each starting with a newline and indented for
# its place: route_extra under `route:` (10 + 8 spaces), filters_extra before
# the router in `http_filters:`, cluster_extra under the cluster.
bench_bootstrap() { # stat_prefix listen_port admin_port connect_timeout route_extra filters_extra cluster_extra port...
    local prefix=$1 listen=$2 admin=$3 ct=$4 route=$5 filters=$6 cluster=$7 eps="" p
    shift 7
    for p in "$@"; do
        eps="$eps
        - endpoint: { address: { socket_address: { address: 127.0.0.1, port_value: $p } } }"
    done
    cat <<CONF
admin:
  address: { socket_address: { address: 127.0.0.1, port_value: $admin } }
static_resources:
  listeners:
  - name: $prefix
    address: { socket_address: { address: 127.0.0.1, port_value: $listen } }
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: $prefix
          route_config:
            virtual_hosts:
            - name: all
              domains: ["*"]
              routes:
              - match: { prefix: "/" }
                route:
                  cluster: service$route
          http_filters:$filters
          - name: envoy.filters.http.router
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router
  clusters:
  - name: service
    type: STATIC
    connect_timeout: $ct$cluster
    load_assignment:
      cluster_name: service
      endpoints:
      - lb_endpoints:$eps
CONF
}
