#!/usr/bin/env bash
# Cells benchmark: SHARP as an edge proxy in front of eight cells with
# shuffle sharding, and a poison customer, live, on loopback only.
#
# Eight sharp-test-upstream processes (cell0..cell7) are started with
# --exit-on-header x-poison: a request carrying that header kills the cell
# that receives it (exit 3, no response). SHARP runs the example edge config
# (config/examples/edge.yaml: cluster `cells`, shuffle shard with
# shard_size 2 and on_shard_unhealthy FAIL, hash_policy on x-customer-id,
# active health checks, outlier detection, retries with previous_hosts),
# with its ports rewritten to free loopback ports.
#
# CUSTOMERS customers (200) send a steady load of about RATE req/s (800) for
# DURATION s (20), spread evenly over the customers. At POISON_AT s (5) the
# poison customer (the first one, "customer-000") sends a request with
# x-poison, and then one more every POISON_EVERY s (1) until the end, so it
# keeps trying to take more cells down. Each customer's shard is read from
# SHARP's /shuffle_shard admin page before the load starts.
#
# Printed (and written to RESULTS/cells-*.txt):
#   - which cells died (expected: exactly the poison customer's two);
#   - per-customer errors, grouped by how many cells the customer shares
#     with the poison customer's shard (0, 1, 2), with the customers that
#     share any listed one by one (the full table is cells-customers.txt);
#   - the timeline: requests and errors per second for each group;
#   - SHARP's shuffle_shard.* counters and retry stats;
#   - with gnuplot, RESULTS/cells-timeline.png.
#
#   bench/cells.sh                              (about 30 s)
#   DURATION=10 POISON_AT=3 BUILD=build-bench bench/cells.sh
#
# Environment (defaults in brackets): BUILD [build], CONFIG
# [config/examples/edge.yaml], CUSTOMERS [200], RATE [800], DURATION [20],
# POISON_AT [5], POISON_EVERY [1], THREADS [16], WORKERS [2],
# RESULTS [bench/results].
set -euo pipefail
cd "$(dirname "$0")/.."

BUILD=${BUILD:-build}
CONFIG=${CONFIG:-config/examples/edge.yaml}
CUSTOMERS=${CUSTOMERS:-200}
RATE=${RATE:-800}
DURATION=${DURATION:-20}
POISON_AT=${POISON_AT:-5}
POISON_EVERY=${POISON_EVERY:-1}
THREADS=${THREADS:-16}
WORKERS=${WORKERS:-2}
RESULTS=${RESULTS:-bench/results}
NCELLS=8

SHARP=$BUILD/proxy/sharp
UPSTREAM=$BUILD/test/upstream/sharp-test-upstream
for b in "$SHARP" "$UPSTREAM"; do
    [ -x "$b" ] || { echo "missing $b: build first (meson setup $BUILD && ninja -C $BUILD)"; exit 1; }
done
command -v python3 > /dev/null || { echo "missing python3"; exit 1; }

. bench/lib.sh
mkdir -p "$RESULTS"
W=$(mktemp -d /tmp/sharp-cells.XXXXXX)

# ---- cells and the edge ---------------------------------------------------------
CELL_PIDS=(); CELL_PORTS=()
for i in $(seq 0 $((NCELLS - 1))); do
    start_test_upstream "$UPSTREAM" "$W/cell$i.out" --port 0 --name "cell$i" --exit-on-header x-poison
    CELL_PIDS[$i]=$STARTED_PID; CELL_PORTS[$i]=$STARTED_PORT
done
LPORT=$(port); APORT=$(port)
# The example with loopback addresses, free ports for the listener, admin and
# cells (cell<i> is port_value 8100+i there), and no access log on stdout.
python3 - "$CONFIG" "$W/edge.yaml" "$LPORT" "$APORT" "${CELL_PORTS[@]}" <<'EOF'
import re, sys
src, dst, lport, aport, *cells = sys.argv[1:]
y = open(src).read().replace("0.0.0.0", "127.0.0.1").replace("path: /dev/stdout", "path: /dev/null")
y = y.replace("port_value: 8000 ", f"port_value: {lport} ").replace("port_value: 9902 ", f"port_value: {aport} ")
for i, p in enumerate(cells):
    y, n = re.subn(rf"port_value: {8100 + i} ", f"port_value: {p} ", y)
    assert n == 1, f"cell{i} (port_value {8100 + i}) not found once in {src}"
open(dst, "w").write(y)
EOF
"$SHARP" --mode validate -c "$W/edge.yaml" > /dev/null
start_sharp_on "$SHARP" "$W/edge.yaml" "$W/sharp.log" "$WORKERS" "$LPORT" "$APORT"
SHARP_PID=$STARTED_PID

# health checks mark every cell down until its first check passes
for _ in $(seq 200); do
    [ "$(curl -s "http://127.0.0.1:$APORT/clusters" | grep -c '^cells::.*::health_flags::healthy$')" = $NCELLS ] && break
    sleep 0.05
done

echo "cells: ${NCELLS} (ports ${CELL_PORTS[*]}), SHARP pid $SHARP_PID on :$LPORT (admin :$APORT), config $CONFIG"
echo "load: $CUSTOMERS customers, ~$RATE req/s for ${DURATION}s, poison customer-000 from ${POISON_AT}s every ${POISON_EVERY}s"
echo

# ---- load, poison and the report (python3, loopback only) ---------------------------
CELL_PIDS_STR="${CELL_PIDS[*]}" python3 - "$LPORT" "$APORT" "$CUSTOMERS" "$RATE" "$DURATION" "$POISON_AT" \
    "$POISON_EVERY" "$THREADS" "$RESULTS" <<'EOF'
import http.client, json, os, sys, threading, time, urllib.parse, urllib.request

lport, aport, ncust, rate = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4])
duration, poison_at, poison_every = float(sys.argv[5]), float(sys.argv[6]), float(sys.argv[7])
nthreads, results = int(sys.argv[8]), sys.argv[9]
cell_pids = [int(p) for p in os.environ["CELL_PIDS_STR"].split()]

def admin(path):
    with urllib.request.urlopen(f"http://127.0.0.1:{aport}{path}", timeout=5) as r:
        return r.read().decode()

customers = [f"customer-{i:03d}" for i in range(ncust)]
x = customers[0]
shard = {}
for c in customers:
    js = json.loads(admin("/shuffle_shard?" + urllib.parse.urlencode({"cluster": "cells", "key": c})))
    shard[c] = [cell["hostname"] for cell in js["cells"] if cell["in_shard"]]
sx = set(shard[x])
overlap = {c: len(set(shard[c]) & sx) for c in customers}

log = []  # (t, customer, ok, status)
lock = threading.Lock()
t0 = time.time()
stop_at = t0 + duration

def client(k):
    """Closed loop paced to rate/nthreads, customers in turn (the poison
    customer's normal requests included)."""
    conn = None
    interval = nthreads / rate
    nxt = time.time()
    i = k
    while True:
        now = time.time()
        if now >= stop_at:
            break
        if now < nxt:
            time.sleep(nxt - now)
        nxt += interval
        cust = customers[i % ncust]
        i += nthreads
        st = 0
        try:
            if conn is None:
                conn = http.client.HTTPConnection("127.0.0.1", lport, timeout=5)
            conn.request("GET", "/", headers={"x-customer-id": cust})
            r = conn.getresponse()
            r.read()
            st = r.status
        except (OSError, http.client.HTTPException):
            conn = None
        with lock:
            log.append((time.time() - t0, cust, st == 200, st))

poison = []
def poisoner():
    t = t0 + poison_at
    while t < stop_at:
        time.sleep(max(0.0, t - time.time()))
        st = 0
        try:
            c = http.client.HTTPConnection("127.0.0.1", lport, timeout=5)
            c.request("GET", "/", headers={"x-customer-id": x, "x-poison": "1"})
            r = c.getresponse()
            r.read()
            st = r.status
            c.close()
        except (OSError, http.client.HTTPException):
            pass
        poison.append((round(time.time() - t0, 2), st))
        t += poison_every

threads = [threading.Thread(target=client, args=(k,)) for k in range(nthreads)] + [threading.Thread(target=poisoner)]
for t in threads:
    t.start()
for t in threads:
    t.join()

# ---- report ----
out = []
def p(s=""):
    print(s)
    out.append(s)

dead = []
for i, pid in enumerate(cell_pids):
    try:
        os.kill(pid, 0)
        alive = True
    except ProcessLookupError:
        alive = False
    if not alive or open(f"/proc/{pid}/stat").read().split()[2] == "Z":
        dead.append(f"cell{i}")
p(f"poison customer {x}: shard {sorted(sx)}; poison requests (t, status): {poison[:6]}{' ...' if len(poison) > 6 else ''}")
p(f"cells dead at the end: {sorted(dead)}  ->  {'only the poison shard' if set(dead) == sx else 'UNEXPECTED'}")
p()

per = {c: [0, 0] for c in customers}
for t, c, ok, st in log:
    per[c][0] += 1
    per[c][1] += not ok
p("Per-customer errors by cells shared with the poison customer's shard")
p(f"{'shared':>6} {'customers':>9} {'requests':>9} {'errors':>7} {'error %':>8} {'cust. w/ errors':>15} {'max err/cust':>12}")
for k in (0, 1, 2):
    cs = [c for c in customers if overlap[c] == k and c != x]
    rq = sum(per[c][0] for c in cs)
    er = sum(per[c][1] for c in cs)
    p(f"{k:>6} {len(cs):>9} {rq:>9} {er:>7} {100.0 * er / rq if rq else 0:>8.2f} "
      f"{sum(1 for c in cs if per[c][1]):>15} {max([per[c][1] for c in cs] or [0]):>12}")
p(f"{'X':>6} {1:>9} {per[x][0]:>9} {per[x][1]:>7} {100.0 * per[x][1] / max(per[x][0], 1):>8.2f}"
  "   (the poison customer's normal requests)")
p()
p("Per customer (customer-NNN: errors/requests), by cells shared with the poison shard (shards: cells-customers.txt)")
for k in (2, 1, 0):
    cs = [c for c in customers if overlap[c] == k and c != x]
    p(f"{k} shared{' (the same shard as the poison customer)' if k == 2 else ''}: {len(cs)} customers")
    for i in range(0, len(cs), 6):
        p("  " + "  ".join(f"{c[9:]}:{per[c][1]:>3}/{per[c][0]:<3}" for c in cs[i:i + 6]))
p()

secs = int(duration + 0.999)
tl = [[0] * 8 for _ in range(secs)]  # per group 0,1,2,X: requests, errors
for t, c, ok, st in log:
    s = min(int(t), secs - 1)
    g = 3 if c == x else overlap[c]
    tl[s][2 * g] += 1
    tl[s][2 * g + 1] += not ok
p("Timeline: requests / errors per second, by cells shared with the poison shard")
p(f"{'second':>6} {'0: rq':>7} {'err':>5} {'1: rq':>7} {'err':>5} {'2: rq':>7} {'err':>5} {'X: rq':>6} {'err':>4}")
for s, r in enumerate(tl):
    p(f"{s:>6} {r[0]:>7} {r[1]:>5} {r[2]:>7} {r[3]:>5} {r[4]:>7} {r[5]:>5} {r[6]:>6} {r[7]:>4}"
      f"{'   <- poison' if s == int(poison_at) else ''}")
p()
stats = admin("/stats?filter=" + urllib.parse.quote(r"^cluster\.cells\.(shuffle_shard\.|upstream_rq_retry|upstream_rq_5|"
                                                    r"upstream_rq_total|health_check\.|outlier_detection\.ejections_enforced_total)"))
p("SHARP stats")
for line in stats.splitlines():
    p("  " + line)
cl = [l.split("::") for l in admin("/clusters").splitlines() if l.startswith("cells::")]
names = {f[1]: f[3] for f in cl if len(f) == 4 and f[2] == "hostname"}
p("requests per cell (/clusters rq_total): "
  + ", ".join(f"{names.get(f[1], f[1])}={f[3]}" for f in cl if len(f) == 4 and f[2] == "rq_total"))

with open(os.path.join(results, "cells-summary.txt"), "w") as f:
    f.write("\n".join(out) + "\n")
with open(os.path.join(results, "cells-customers.txt"), "w") as f:
    f.write(f"# poison customer {x}, shard {sorted(sx)}\n# customer shard shared requests errors\n")
    for c in customers:
        f.write(f"{c} {','.join(shard[c])} {overlap[c]} {per[c][0]} {per[c][1]}\n")
with open(os.path.join(results, "cells-timeline.txt"), "w") as f:
    f.write("# second rq0 err0 rq1 err1 rq2 err2 rqX errX (groups: cells shared with the poison shard; X = poison customer)\n")
    for s, r in enumerate(tl):
        f.write(f"{s} " + " ".join(map(str, r)) + "\n")
EOF

if command -v gnuplot > /dev/null; then
    gnuplot <<EOF
set terminal pngcairo size 1000,560 font ",10"
set output "$RESULTS/cells-timeline.png"
set title "Shuffle sharding: errors per second by cells shared with the poison customer's shard (poison at ${POISON_AT}s)"
set xlabel "seconds"
set ylabel "errors / s"
set y2label "requests / s (all customers)"
set y2tics
set ytics nomirror
set key left center
set arrow from $POISON_AT, graph 0 to $POISON_AT, graph 1 nohead dashtype 2
set yrange [0:*]
set y2range [0:*]
# columns: second, then requests and errors of groups 0, 1, 2 shared and X
plot "$RESULTS/cells-timeline.txt" using 1:3 with linespoints title "0 shared: errors", \
     "" using 1:5 with linespoints title "1 shared: errors", \
     "" using 1:7 with linespoints title "2 shared (same shard): errors", \
     "" using 1:9 with linespoints title "poison customer: errors", \
     "" using 1:(\$2+\$4+\$6+\$8) axes x1y2 with lines dashtype 3 title "requests (right axis)"
EOF
    echo "plot: $RESULTS/cells-timeline.png"
fi
echo "results: $RESULTS/cells-summary.txt, cells-customers.txt, cells-timeline.txt"

# SHARP drains and exits on SIGTERM; a sanitized build reports here
stop "$SHARP_PID"
if grep -qE "ERROR: (Address|Leak)Sanitizer|runtime error:" "$W/sharp.log"; then
    echo "sanitizer report from SHARP:"; grep -A20 -E "ERROR: |runtime error:" "$W/sharp.log" | head -60; exit 1
fi
