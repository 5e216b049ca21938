#!/usr/bin/env python3
"""The scaling agent in a closed loop, for real, on loopback.

Replicas are sharp-test-upstream processes serving /work (SLOTS requests at once, each
held SERVICE_MS: SLOTS / SERVICE_MS requests/s per replica, 100 by default,
from MIN_REPLICAS 4). SHARP sends the traffic to them through an EDS
cluster read from a file. A replica controller stands in for Kubernetes
and KEDA: every POLL_S it calls SHARP's KEDA external scaler
(externalscaler.ExternalScaler/GetMetrics on the admin port, the desired
replica count), starts the replicas asked for, which turn ready (enter the
EDS file) BOOT_S later, and stops the ones no longer asked for (the booting
ones first, then the newest; out of the EDS file, stopped after a drain).
sharp-loadgen runs the flash crowd open-loop: BASE req/s for BASE_S, a
ramp to PEAK over RAMP_S, PEAK for PEAK_S (100 -> 1,000 req/s by default:
scaled to a 2-core machine, which 10,000 req/s saturated).

The same run once per controller in CONTROLLERS:
  agent  the scaling agent in ACTIVE mode (the shipped PPO policy behind
         the guardian, which falls back to the HPA rule on observations
         outside the policy's training range)
  hpa    the agent in OFF mode: SHARP's Kubernetes HPA rule alone (70%
         utilization of SLOTS requests in flight per ready replica)

Reported per controller: SLO-violation seconds (a second whose p99 exceeds
SLO_P99_MS or whose failures exceed 1% of its requests), replica-seconds
(every replica started, booting or ready), scaling actions, errors, the
guardian's fallbacks, and the ratios agent / HPA; a per-second timeline in
RESULTS/flash_crowd.tsv plotted to RESULTS/flash_crowd.png (gnuplot).

Everything on 127.0.0.1; the processes started here are stopped by PID.
"""
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, os.path.join(ROOT, "test", "integration"))

BUILD = os.environ.get("BUILD", "build")
SHARP = os.path.join(ROOT, BUILD, "proxy", "sharp")
UPSTREAM = os.path.join(ROOT, BUILD, "test", "upstream", "sharp-test-upstream")
LOADGEN = os.path.join(ROOT, BUILD, "bench", "loadgen", "sharp-loadgen")
RESULTS = os.environ.get("RESULTS", os.path.join(ROOT, "bench", "results"))
WEIGHTS = os.path.abspath(os.environ.get("WEIGHTS", os.path.join(ROOT, "proxy", "agent", "policies", "scaling.pol")))


def env_num(name, default):
    return type(default)(os.environ.get(name, default))


# 100 -> 1,000 req/s: 1 to 5 replicas' full capacity, which a 2-core machine
# serves with room to spare (at 10,000 req/s the machine itself saturates,
# and the latency measured is the machine's, not the replicas')
BASE, PEAK = env_num("BASE", 100), env_num("PEAK", 1000)
BASE_S, RAMP_S, PEAK_S = env_num("BASE_S", 45), env_num("RAMP_S", 60), env_num("PEAK_S", 150)
BOOT_S, POLL_S, SYNC_S = env_num("BOOT_S", 30.0), env_num("POLL_S", 15.0), env_num("SYNC_S", 15)
# replicas of 100 req/s (10 slots x 100 ms): 1 -> 10 replicas' capacity in
# the crowd, from a floor of 4 (from 2 or 3, growth's 4 pods, the HPA's own
# allowance, would put more than half the count in boot, a state the
# policy never met in training: the guardian would fall back)
SLOTS, SERVICE_MS = env_num("SLOTS", 10), env_num("SERVICE_MS", 100)
MIN_R, MAX_R = env_num("MIN_REPLICAS", 4), env_num("MAX_REPLICAS", 100)
# the simulator's cluster: Envoy's default max_requests (1024) for its 40 ms
# requests; the same bound in time for these replicas' requests (1024 x
# SERVICE_MS / 40 in flight), or the breaker sheds where the simulator's
# would not
MAX_REQUESTS = env_num("MAX_REQUESTS", -(-1024 * SERVICE_MS // 40))
# the start, as the simulator's: the base load at 70% of the replicas' capacity
INITIAL = env_num("INITIAL_REPLICAS", max(MIN_R, -(-BASE * SERVICE_MS // (700 * SLOTS))))
SLO_P99_MS = env_num("SLO_P99_MS", 500.0)
CONTROLLERS = os.environ.get("CONTROLLERS", "agent hpa").split()


def write_atomic(path, text):
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        f.write(text)
    os.rename(tmp, path)


class Replicas:
    """The replica set: processes, their state, and the EDS file SHARP reads."""

    def __init__(self, work):
        self.work = work
        self.eds = os.path.join(work, "eds.json")
        self.lock = threading.Lock()
        self.items = []  # dicts: proc, port, ready_at (monotonic), ready
        self.version = 0
        self.actions = 0
        self.write_eds()

    def start_one(self, now, boot_s):
        p = subprocess.Popen([UPSTREAM, "--address", "127.0.0.1", "--port", "0", "--name", "r", "--quiet",
                              "--slots", str(SLOTS), "--service-time-ms", str(SERVICE_MS)], stdout=subprocess.PIPE)
        port = int(p.stdout.readline().decode().strip().rsplit(":", 1)[1])
        self.items.append({"proc": p, "port": port, "ready_at": now + boot_s, "ready": False})

    def write_eds(self):
        self.version += 1
        eps = [{"endpoint": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": r["port"]}}}}
               for r in self.items if r["ready"]]
        doc = {"version_info": str(self.version), "resources": [{
            "@type": "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment",
            "cluster_name": "backend", "endpoints": [{"lb_endpoints": eps}]}]}
        write_atomic(self.eds, json.dumps(doc))

    def tick(self, now):
        """Replicas whose boot is over turn ready."""
        with self.lock:
            changed = False
            for r in self.items:
                if not r["ready"] and now >= r["ready_at"]:
                    r["ready"] = changed = True
            if changed:
                self.write_eds()

    def scale_to(self, want, now):
        with self.lock:
            want = max(MIN_R, min(MAX_R, want))
            have = len(self.items)
            if want == have:
                return
            self.actions += 1
            if want > have:
                for _ in range(want - have):
                    self.start_one(now, BOOT_S)
                return
            # the ReplicaSet's order: not ready first, then the newest
            gone = [r for r in reversed(self.items) if not r["ready"]]
            gone += [r for r in reversed(self.items) if r["ready"] and r not in gone]
            gone = gone[:have - want]
            self.items = [r for r in self.items if r not in gone]
            self.write_eds()
        for r in gone:  # out of the EDS file first; stopped after a drain
            threading.Timer(2.0, lambda p=r["proc"]: p.terminate()).start()

    def counts(self):
        with self.lock:
            return len(self.items), sum(r["ready"] for r in self.items)

    def stop(self):
        for r in self.items:
            r["proc"].terminate()
        for r in self.items:
            try:
                r["proc"].wait(timeout=5)
            except subprocess.TimeoutExpired:
                r["proc"].kill()


def bootstrap(listen, admin, eds, mode):
    return f"""admin:
  address: {{ socket_address: {{ address: 127.0.0.1, port_value: {admin} }} }}
static_resources:
  listeners:
  - name: ingress
    address: {{ socket_address: {{ address: 127.0.0.1, port_value: {listen} }} }}
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: ingress
          route_config:
            virtual_hosts:
            - name: all
              domains: ["*"]
              routes: [{{ match: {{ prefix: "/" }}, route: {{ cluster: backend, timeout: 5s }} }}]
          http_filters:
          - name: envoy.filters.http.router
            typed_config: {{ "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router }}
  clusters:
  - name: backend
    type: EDS
    connect_timeout: 1s
    eds_cluster_config: {{ eds_config: {{ path_config_source: {{ path: {eds} }} }} }}
    circuit_breakers:
      thresholds: [{{ max_requests: {MAX_REQUESTS}, max_pending_requests: {MAX_REQUESTS}, max_connections: {4 * MAX_REQUESTS} }}]
bootstrap_extensions:
- name: sharp.bootstrap.scaling_agent
  typed_config:
    "@type": type.googleapis.com/sharp.extensions.scaling.v1.ScalingAgent
    clusters:
    - cluster_name: backend
      weights_path: {WEIGHTS}
      mode: {mode}
      min_replicas: {MIN_R}
      max_replicas: {MAX_R}
      initial_replicas: {INITIAL}
      sync_period: {SYNC_S}s
      objective: {{ p99_latency: {SLO_P99_MS / 1000}s, error_rate: 0.01 }}
      hpa: {{ target_utilization: 70, per_replica_concurrency: {SLOTS} }}
"""


def http_json(url):
    with urllib.request.urlopen(url, timeout=5) as r:
        return json.loads(r.read())


def schedule():
    """sharp-loadgen's --rate-schedule: BASE, a ramp of one step a second, PEAK."""
    steps = [f"{BASE_S + i}:{BASE + (PEAK - BASE) * i / RAMP_S:.0f}" for i in range(1, RAMP_S + 1)]
    return ",".join(steps)


def record_decision(admin, t, decisions):
    """The agent's last decision from /scaling (new ones only): what it
    observed, what the policy proposed and what the guardian made of it."""
    try:
        doc = http_json(f"http://127.0.0.1:{admin}/scaling")
    except Exception:
        return
    for c in doc.get("clusters", []):
        if c.get("last_update_unix") is None:
            continue
        if decisions and decisions[-1]["unix"] == c["last_update_unix"]:
            continue
        g = c.get("guardian") or {}
        decisions.append({"t": round(t), "unix": c["last_update_unix"], "current": c.get("current"),
                          "action": (c.get("action") or {}).get("name"), "verdict": g.get("verdict"),
                          "applied": g.get("applied"), "observation": g.get("observation"),
                          "reason": g.get("reason"), "obs": c.get("observation")})


def run(controller, work):
    import grpc
    from conftest import free_port, stat
    from keda_client import M, call
    reps = Replicas(work)
    t0 = time.monotonic()
    for _ in range(INITIAL):
        reps.start_one(t0, 0.0)
    reps.tick(t0)
    listen, admin = free_port(), free_port()
    path = os.path.join(work, "bootstrap.yaml")
    with open(path, "w") as f:
        f.write(bootstrap(listen, admin, reps.eds, "ACTIVE" if controller == "agent" else "OFF"))
    log = open(os.path.join(work, "sharp.log"), "w")
    sharp = subprocess.Popen([SHARP, "-c", path, "--concurrency", "1", "-l", "warning"], stdout=log,
                             stderr=subprocess.STDOUT)
    timeline = []
    stop = threading.Event()
    try:
        deadline = time.time() + 20
        while True:
            try:
                if http_json(f"http://127.0.0.1:{admin}/scaling"):
                    break
            except Exception:
                if time.time() > deadline or sharp.poll() is not None:
                    raise RuntimeError("sharp did not start; see " + log.name)
                time.sleep(0.1)
        total = BASE_S + RAMP_S + PEAK_S
        lg = subprocess.Popen([LOADGEN, "--url", f"http://127.0.0.1:{listen}/work", "--rate", str(BASE),
                               "--rate-schedule", schedule(), "--duration", str(total), "--output", "json",
                               "--interval-ms", "1000", "--timeout-ms", "5000", "--max-connections", "4000",
                               "--seed", "1"], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        start = time.monotonic()
        desired = [INITIAL]
        decisions = []

        def control():
            ch = grpc.insecure_channel(f"127.0.0.1:{admin}")
            get = call(ch, "GetMetrics", "GetMetricsRequest", "GetMetricsResponse")
            ref = M["ScaledObjectRef"](name="backend", namespace="bench")
            ref.scalerMetadata["cluster"] = "backend"
            next_poll = time.monotonic() + POLL_S
            next_look = time.monotonic()
            while not stop.wait(0.2):
                now = time.monotonic()
                reps.tick(now)
                if now >= next_poll:
                    next_poll += POLL_S
                    try:
                        rsp = get(M["GetMetricsRequest"](scaledObjectRef=ref, metricName="desired"), timeout=5)
                        desired[0] = int(rsp.metricValues[0].metricValue)
                    except grpc.RpcError as e:
                        print(f"  GetMetrics failed: {e.code()}", file=sys.stderr)
                        continue
                    reps.scale_to(desired[0], now)
                if now >= next_look:  # every decision, once a second
                    next_look = now + 1.0
                    record_decision(admin, now - start, decisions)
            ch.close()

        ctl = threading.Thread(target=control, daemon=True)
        ctl.start()
        while lg.poll() is None:
            time.sleep(1.0)
            n, ready = reps.counts()
            timeline.append((time.monotonic() - start, n, ready, desired[0]))
        out, err = lg.communicate()
        stop.set()
        ctl.join(timeout=10)
        summary = json.loads(out.decode())
        fallbacks = stat(admin, "scaling.backend.fallbacks") or 0
        with open(os.path.join(RESULTS, f"flash_crowd-decisions-{controller}.jsonl"), "w") as f:
            for d in decisions:
                f.write(json.dumps(d) + "\n")
        return summary, timeline, reps.actions, fallbacks, decisions
    finally:
        stop.set()
        if sharp.poll() is None:
            sharp.terminate()
            try:
                sharp.wait(timeout=20)
            except subprocess.TimeoutExpired:
                sharp.kill()
        reps.stop()
        log.close()


def evaluate(summary, timeline):
    series = summary["series"]
    viol = 0
    for s in series:
        n = s["sent"]
        bad = s["errors"] + s["timeouts"] + s["shed"] + s["other"] + s["client_dropped"]
        # a second with requests but no response has no p99: a violation
        if (s["p99"] is None and n) or (s["p99"] or 0) > SLO_P99_MS or (n and bad / n > 0.01):
            viol += 1
    replica_s = sum(n for _, n, _, _ in timeline)
    tot = summary["totals"]
    errors = tot["sent"] - tot["2xx"] + tot["client_dropped"]
    peak = max((n for _, n, _, _ in timeline), default=0)
    return {"violation_s": viol, "replica_s": replica_s, "errors": errors, "sent": tot["sent"],
            "p99": summary["latency_ms"]["p99"], "peak": peak}


def plot(rows, path_tsv, path_png):
    with open(path_tsv, "w") as f:
        f.write("controller\tt\treplicas\tready\tdesired\trate\tp99_ms\n")
        for ctl, (summary, timeline, _, _, _) in rows.items():
            series = summary["series"]
            for i, (t, n, ready, want) in enumerate(timeline):
                s = series[i] if i < len(series) else {"sent": 0, "p99": 0}
                p99 = s["p99"] if s["p99"] is not None else "NaN"
                f.write(f"{ctl}\t{t:.0f}\t{n}\t{ready}\t{want}\t{s['sent']}\t{p99}\n")
    if not shutil.which("gnuplot"):
        return False
    plots = []
    for i, ctl in enumerate(rows):
        plots.append(f"'< grep ^{ctl} {path_tsv}' using 2:3 with steps lw 2 lc {i + 1} title '{ctl}: replicas'")
        plots.append(f"'< grep ^{ctl} {path_tsv}' using 2:4 with steps dt 2 lc {i + 1} title '{ctl}: ready'")
    lat = [f"'< grep ^{ctl} {path_tsv}' using 2:7 with lines lc {i + 1} title '{ctl}: p99 ms'"
           for i, ctl in enumerate(rows)]
    rate = f"'< grep ^{list(rows)[0]} {path_tsv}' using 2:6 with lines lc 8 title 'requests/s'"
    script = f"""set terminal pngcairo size 1100,800
set output '{path_png}'
set multiplot layout 3,1 title 'flash crowd {BASE} -> {PEAK} req/s in {RAMP_S} s, replicas boot in {BOOT_S:.0f} s'
set xlabel 's'
set ylabel 'req/s'
plot {rate}
set ylabel 'replicas'
plot {", ".join(plots)}
set ylabel 'p99 ms'
set logscale y
plot {", ".join(lat)}
unset multiplot
"""
    r = subprocess.run(["gnuplot"], input=script.encode(), capture_output=True)
    if r.returncode != 0:
        print(r.stderr.decode(), file=sys.stderr)
    return r.returncode == 0


def main():
    for path in (SHARP, UPSTREAM, LOADGEN, WEIGHTS):
        if not os.path.exists(path):
            sys.exit(f"missing {path}: build first (make build)")
    os.makedirs(RESULTS, exist_ok=True)
    cap = SLOTS * 1000 / SERVICE_MS
    print(f"flash crowd: {BASE} req/s for {BASE_S} s, to {PEAK} req/s over {RAMP_S} s, {PEAK_S} s at the peak; "
          f"replicas of {cap:.0f} req/s ({SLOTS} slots x {SERVICE_MS} ms), boot {BOOT_S:.0f} s, "
          f"{MIN_R}..{MAX_R} replicas ({INITIAL} at the start), max_requests {MAX_REQUESTS}; KEDA polled every {POLL_S:.0f} s, the agent's sync every {SYNC_S} s; "
          f"SLO p99 {SLO_P99_MS:.0f} ms and 1% failures; weights {os.path.relpath(WEIGHTS, ROOT)}")
    rows = {}
    for ctl in CONTROLLERS:
        work = tempfile.mkdtemp(prefix=f"sharp-flash-{ctl}-")
        try:
            rows[ctl] = run(ctl, work)
        finally:
            if os.environ.get("KEEP") != "1":
                shutil.rmtree(work, ignore_errors=True)
    with open(os.path.join(RESULTS, "flash_crowd.json"), "w") as f:
        json.dump({c: {"summary": r[0], "timeline": r[1], "actions": r[2], "fallbacks": r[3], "decisions": r[4]}
                   for c, r in rows.items()},
                  f)
    print(f"\n{'controller':<10} {'SLO-viol s':>10} {'replica-s':>10} {'actions':>8} {'errors':>8} {'requests':>9} "
          f"{'p99 ms':>8} {'peak':>5} {'fallbacks':>9}")
    ev = {}
    for ctl, (summary, timeline, actions, fallbacks, _) in rows.items():
        e = evaluate(summary, timeline)
        ev[ctl] = e
        print(f"{ctl:<10} {e['violation_s']:>10} {e['replica_s']:>10} {actions:>8} {e['errors']:>8} {e['sent']:>9} "
              f"{e['p99']:>8.1f} {e['peak']:>5} {fallbacks:>9}")
    if "agent" in rows:
        # why the guardian fell back, if it did: the observation outside the
        # policy's trained range (or missing) and its value
        falls = [d for d in rows["agent"][4] if d["verdict"] == "fallback"]
        for d in falls:
            print(f"agent fallback at {d['t']} s: {d['reason']}")
    if "agent" in ev and "hpa" in ev:
        a, h = ev["agent"], ev["hpa"]

        def ratio(x, y):
            return f"{x / y:.2f}" if y else ("1.00" if x == 0 else "inf")
        print(f"agent / HPA: SLO-violation seconds {ratio(a['violation_s'], h['violation_s'])}, "
              f"replica-seconds {ratio(a['replica_s'], h['replica_s'])}, errors {ratio(a['errors'], h['errors'])}")
    tsv, png = os.path.join(RESULTS, "flash_crowd.tsv"), os.path.join(RESULTS, "flash_crowd.png")
    if plot(rows, tsv, png):
        print(f"timeline: {os.path.relpath(tsv, ROOT)}, plot: {os.path.relpath(png, ROOT)}")


if __name__ == "__main__":
    main()
