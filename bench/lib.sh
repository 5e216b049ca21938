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
