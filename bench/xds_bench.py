#!/usr/bin/env python3
"""xDS at scale (bench/xds.sh runs this): configuration pushed to SHARP while
it serves, through Envoy's filesystem subscription (CDS, EDS and RDS files
moved into place, as a control plane's sidecar or a ConfigMap would).

1. Push to applied and to first request served, for 10, 1,000 and 10,000
   clusters (one endpoint each): the route already names the cluster the
   push brings, so requests get 503 (no cluster) until the push is applied
   and 200 after. "applied" is cluster_manager.cds.update_success moving
   (the ACK point of a gRPC subscription); "first request" is the first 200.
   SHARP's RSS after each push.
1b. The same pushes from a gRPC control plane (the project's test control
   plane on Envoy's official protos, test/xds/control_plane.js), over ADS,
   state of the world and incremental: push to ACK as the control plane
   sees them (its timestamps of the response sent and of the request that
   ACKs it, in ms), push to the first request served, SHARP's RSS. GRPC=0
   skips it (it needs node and test/xds's npm packages: make deps).
2. Steady traffic (open loop, sharp-loadgen at a fixed rate) on a cluster of
   the push, measured three times in one run: without pushes; with one EDS
   push a second (a 1,000-endpoint assignment of another cluster, half its
   endpoints changed); with one push a second of each kind in turn (the
   1,000-cluster CDS with half its clusters changed, the EDS assignment, the
   route). Reported: achieved rate, p50/p99/max, failures, SHARP's CPU per
   request, and the ratio of p99 with pushes to p99 without. A control run
   writes the EDS documents each second to a file SHARP does not watch: the
   harness's own share of the machine (on 2 cores the load generator, the
   upstream, SHARP and this script share them), so "with pushes / not read"
   is what SHARP's handling of the pushes costs the requests.

Everything on 127.0.0.1; the processes started here are stopped by PID."""
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
BUILD = os.environ.get("BUILD", "build")
SHARP = os.path.join(BUILD, "proxy", "sharp")
UPSTREAM = os.path.join(BUILD, "test", "upstream", "sharp-test-upstream")
LOADGEN = os.path.join(BUILD, "bench", "loadgen", "sharp-loadgen")
SIZES = [int(x) for x in os.environ.get("SIZES", "10 1000 10000").split()]
RATE = int(os.environ.get("RATE", "2000"))
DURATION = int(os.environ.get("DURATION", "15"))
STEADY_CLUSTERS = int(os.environ.get("STEADY_CLUSTERS", "1000"))
EDS_ENDPOINTS = int(os.environ.get("EDS_ENDPOINTS", "1000"))

RC = "type.googleapis.com/envoy.config.route.v3.RouteConfiguration"
CL = "type.googleapis.com/envoy.config.cluster.v3.Cluster"
CLA = "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment"
HCM = "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager"
ROUTER = "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"


def free_port():
    import socket
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


def write_atomic(path, obj):
    tmp = f"{path}.tmp{time.time_ns()}"
    with open(tmp, "w") as f:
        json.dump(obj, f)
    os.replace(tmp, path)


def endpoint(port, addr="127.0.0.1"):
    return {"endpoint": {"address": {"socket_address": {"address": addr, "port_value": port}}}}


def cluster(name, port, timeout="1s"):
    return {"@type": CL, "name": name, "type": "STATIC", "connect_timeout": timeout,
            "load_assignment": {"cluster_name": name, "endpoints": [{"lb_endpoints": [endpoint(port)]}]}}


def eds_cluster(name, path):
    return {"@type": CL, "name": name, "type": "EDS", "connect_timeout": "1s",
            "eds_cluster_config": {"eds_config": {"path_config_source": {"path": path}}}}


def route(name, cluster_name, version):
    return {"@type": RC, "name": name, "virtual_hosts": [{
        "name": "all", "domains": ["*"],
        "response_headers_to_add": [{"header": {"key": "x-config-version", "value": str(version)}}],
        "routes": [{"match": {"prefix": "/"}, "route": {"cluster": cluster_name}}]}]}


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def cpu_s(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class Bench:
    def __init__(self, work):
        self.w = work
        self.procs = []
        self.up = subprocess.Popen([UPSTREAM, "--address", "127.0.0.1", "--port", "0", "--name", "up", "--quiet"],
                                   stdout=subprocess.PIPE)
        self.procs.append(self.up)
        line = self.up.stdout.readline().decode()
        self.up_port = int(line.strip().rsplit(":", 1)[1])
        self.listen, self.admin = free_port(), free_port()
        self.cds, self.rds, self.eds = (os.path.join(work, n) for n in ("cds.json", "rds.json", "eds.json"))
        self.version = 1
        write_atomic(self.cds, {"version_info": "1", "resources": [cluster("boot", self.up_port)]})
        write_atomic(self.rds, {"version_info": "1", "resources": [route("routes", "boot", 1)]})
        boot = f"""admin:
  address: {{ socket_address: {{ address: 127.0.0.1, port_value: {self.admin} }} }}
enable_dispatcher_stats: true
dynamic_resources:
  cds_config: {{ path_config_source: {{ path: {self.cds} }} }}
static_resources:
  listeners:
  - name: l0
    address: {{ socket_address: {{ address: 127.0.0.1, port_value: {self.listen} }} }}
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": {HCM}
          stat_prefix: ingress
          rds: {{ config_source: {{ path_config_source: {{ path: {self.rds} }} }}, route_config_name: routes }}
          http_filters:
          - name: envoy.filters.http.router
            typed_config: {{ "@type": {ROUTER} }}
"""
        with open(os.path.join(work, "bootstrap.yaml"), "w") as f:
            f.write(boot)
        self.log = open(os.path.join(work, "sharp.log"), "w")
        self.sharp = subprocess.Popen([SHARP, "-c", os.path.join(work, "bootstrap.yaml"), "--concurrency", "1",
                                       "-l", "warning"] + os.environ.get("SHARP_ARGS", "").split(), stdout=self.log, stderr=subprocess.STDOUT)
        self.procs.append(self.sharp)
        deadline = time.time() + 20
        while time.time() < deadline:
            if self.get_status() == 200:
                return
            time.sleep(0.05)
        raise RuntimeError("sharp did not start; see " + self.log.name)

    def stop(self):
        for p in self.procs:
            if p.poll() is None:
                p.terminate()
                try:
                    p.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    p.kill()

    def get_status(self):
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.listen}/", timeout=5) as r:
                r.read()
                return r.status
        except urllib.error.HTTPError as e:
            return e.code
        except OSError:
            return None

    def counter(self, name):
        q = urllib.parse.quote("^" + re.escape(name) + "$")
        with urllib.request.urlopen(f"http://127.0.0.1:{self.admin}/stats?format=json&filter={q}", timeout=30) as r:
            for s in json.load(r)["stats"]:
                if s.get("name") == name:
                    return s["value"]
        return 0

    def wait_counter(self, name, above, timeout=120):
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.counter(name) > above:
                return True
            time.sleep(0.005)
        return False

    def push_rds(self, cluster_name):
        self.version += 1
        before = self.counter("http.ingress.rds.routes.update_success")
        write_atomic(self.rds, {"version_info": str(self.version),
                                "resources": [route("routes", cluster_name, self.version)]})
        if not self.wait_counter("http.ingress.rds.routes.update_success", before):
            raise RuntimeError("RDS push not applied")

    def cds_resources(self, n, target, salt=0):
        """n clusters, `target` among them; `salt` changes every other
        cluster's connect_timeout, so a push with another salt modifies
        half of them."""
        res = [cluster(target, self.up_port)]
        for i in range(n - 1):
            t = f"{1 + ((i + salt) % 2)}s" if salt else "1s"
            res.append(cluster(f"c{i}", self.up_port, t))
        return res

    def scale(self, n):
        target = f"t{n}"
        self.push_rds(target)
        assert self.get_status() == 503, "the route's cluster exists before the push"
        before = self.counter("cluster_manager.cds.update_success")
        self.version += 1
        doc = {"version_info": str(self.version), "resources": self.cds_resources(n, target)}
        body = json.dumps(doc)
        first = {}

        def first_ok():
            while "t" not in first and time.time() - t0 < 120:
                if self.get_status() == 200:
                    first["t"] = time.time()
                    return
                time.sleep(0.002)

        tmp = f"{self.cds}.tmp"
        with open(tmp, "w") as f:
            f.write(body)
        t0 = time.time()
        os.replace(tmp, self.cds)
        th = threading.Thread(target=first_ok)
        th.start()
        ok = self.wait_counter("cluster_manager.cds.update_success", before)
        t_applied = time.time()
        th.join()
        if not ok or "t" not in first:
            raise RuntimeError(f"CDS push of {n} clusters not applied")
        time.sleep(1)
        return {"clusters": n, "file_mb": len(body) / 1e6, "applied_ms": (t_applied - t0) * 1000,
                "first_request_ms": (first["t"] - t0) * 1000, "rss_kib": rss_kib(self.sharp.pid),
                "active_clusters": self.counter("cluster_manager.active_clusters")}

    def worker_turns(self, what="loop_duration"):
        """The worker's event loop turns so far, by duration: {bound in
        us: turns at most that long} (the Prometheus buckets of
        listener_manager.worker_0.dispatcher.loop_duration_us; with
        what="poll_delay", how late its polls returned)."""
        # filtered: rendering every stat of 1,000 clusters would cost SHARP
        # more CPU than the run's requests
        with urllib.request.urlopen(f"http://127.0.0.1:{self.admin}/stats/prometheus?filter=worker_0.dispatcher",
                                    timeout=30) as r:
            text = r.read().decode()
        out = {}
        for ln in text.splitlines():
            if ln.startswith(f"envoy_listener_manager_worker_dispatcher_{what}_us_bucket{{") and \
                    'envoy_worker_id="0"' in ln:
                le = ln.split('le="', 1)[1].split('"', 1)[0]
                out[float("inf") if le == "+Inf" else float(le)] = int(float(ln.rsplit(" ", 1)[1]))
        return out

    def loadgen(self, seconds, pushes):
        """Open-loop traffic for `seconds`; with pushes ("all": CDS, EDS and
        RDS in turn; "eds": EDS only), one per second while it runs.
        Returns loadgen's summary, the pushes made and SHARP's CPU seconds."""
        out = os.path.join(self.w, f"loadgen-{pushes or 'quiet'}.json")
        turns0, delays0 = self.worker_turns(), self.worker_turns("poll_delay")
        c0 = cpu_s(self.sharp.pid)
        lg = subprocess.Popen([LOADGEN, "--url", f"http://127.0.0.1:{self.listen}/", "--rate", str(RATE),
                               "--duration", str(seconds), "--warmup", "1", "--output", "json", "--seed", "7"],
                              stdout=open(out, "w"), stderr=subprocess.STDOUT)
        self.procs.append(lg)
        made = 0
        if pushes:
            time.sleep(1)
            k = 0
            while lg.poll() is None:
                t = time.time()
                kind = k % 3 if pushes == "all" else 1
                if pushes == "unread":  # the same work here, a file SHARP does not watch
                    self.version += 1
                    write_atomic(os.path.join(self.w, "unread-eds.json"), self.eds_doc(shift=made))
                    self.counter("cluster.e.update_success")  # as the pushes' one wait
                    kind = None
                if kind == 0:
                    before = self.counter("cluster_manager.cds.update_success")
                    self.version += 1
                    write_atomic(self.cds, {"version_info": str(self.version), "resources":
                                            self.cds_resources(STEADY_CLUSTERS, "steady", salt=1 + made % 2)
                                            + [eds_cluster("e", self.eds)]})
                    self.wait_counter("cluster_manager.cds.update_success", before, timeout=30)
                elif kind == 1:
                    before = self.counter("cluster.e.update_success")
                    self.version += 1
                    write_atomic(self.eds, self.eds_doc(shift=made))
                    self.wait_counter("cluster.e.update_success", before, timeout=30)
                elif kind == 2:
                    self.push_rds("steady")
                made += 1
                k += 1
                time.sleep(max(0.0, 1.0 - (time.time() - t)))
        lg.wait()
        cpu = cpu_s(self.sharp.pid) - c0
        turns1, delays1 = self.worker_turns(), self.worker_turns("poll_delay")  # after the CPU reading

        def over(h0, h1, us):
            """the run's values above `us` (a bucket bound)"""
            total = h1.get(float("inf"), 0) - h0.get(float("inf"), 0)
            b = max((k for k in h1 if k <= us), default=None)
            return total - ((h1.get(b, 0) - h0.get(b, 0)) if b is not None else 0)
        # the worker's long turns during the run (over 1 ms, over 5 ms, the
        # bucket bound of the longest), and its polls that returned more
        # than 1 ms late (the thread waited for a CPU)
        total = turns1.get(float("inf"), 0) - turns0.get(float("inf"), 0)
        longest = min((k for k in sorted(turns1) if turns1[k] - turns0.get(k, 0) == total), default=float("inf"))
        self.turns = (over(turns0, turns1, 1000), over(turns0, turns1, 5000), longest,
                      over(delays0, delays1, 1000))
        with open(out) as f:
            text = f.read()
        try:
            summary = json.loads(text[text.index("{"):])
        except ValueError:
            raise RuntimeError("loadgen output: " + text[-2000:])
        return summary, made, cpu

    def eds_doc(self, shift=0):
        """EDS_ENDPOINTS endpoints of cluster e (addresses nobody serves:
        no traffic goes to e); `shift` replaces half of them."""
        eps = [endpoint(20000 + ((i + (shift % 2) * (EDS_ENDPOINTS // 2)) % (2 * EDS_ENDPOINTS)))
               for i in range(EDS_ENDPOINTS)]
        return {"version_info": str(self.version),
                "resources": [{"@type": CLA, "cluster_name": "e", "endpoints": [{"lb_endpoints": eps}]}]}


def grpc_scale(work, mode):
    """Part 1b for one mode: yields a row per size."""
    sys.path.insert(0, os.path.join(os.path.dirname(HERE), "test", "integration"))
    os.environ.setdefault("SHARP_BUILD", os.path.abspath(BUILD))
    from test_xds_ads import CDS, CP, RDS, bootstrap as ads_bootstrap, routes
    up = subprocess.Popen([UPSTREAM, "--address", "127.0.0.1", "--port", "0", "--name", "up", "--quiet"],
                          stdout=subprocess.PIPE)
    port = int(up.stdout.readline().decode().strip().rsplit(":", 1)[1])
    cp = CP()
    sharp = None
    try:
        def cl(name):
            return {"name": name, "resource": {k: v for k, v in cluster(name, port).items() if k != "@type"}}
        cp.set(CDS, [cl("boot")])
        cp.set(RDS, [routes("r1", ("/", "boot"))])
        listen, admin = free_port(), free_port()
        path = os.path.join(work, f"ads-{mode}.json")
        with open(path, "w") as f:
            json.dump(ads_bootstrap(listen, admin, cp.xds_port, mode), f)
        log = open(os.path.join(work, f"sharp-ads-{mode}.log"), "w")
        sharp = subprocess.Popen([SHARP, "-c", path, "--concurrency", "1", "-l", "warning"], stdout=log,
                                 stderr=subprocess.STDOUT)

        def status():
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{listen}/", timeout=5) as r:
                    r.read()
                    return r.status
            except urllib.error.HTTPError as e:
                return e.code
            except OSError:
                return None

        deadline = time.time() + 30
        while status() != 200:
            if time.time() > deadline:
                raise RuntimeError(f"sharp on ADS ({mode}) did not start")
            time.sleep(0.05)

        def ack_ms(type_url, version, timeout=120):
            """(ms from the response of `version` to SHARP's ACK of it, as
            the control plane logged them), waiting for the ACK."""
            deadline = time.time() + timeout
            while time.time() < deadline:
                es = cp.entries()
                outs = [e for e in es if e["dir"] == "out" and e["type_url"] == type_url and
                        (e.get("version_info") == version or e.get("system_version_info") == version)]
                nonces = {e["nonce"] for e in outs}
                for e in es:
                    if e["dir"] != "in" or e["type_url"] != type_url or e["error_detail"]:
                        continue
                    if e.get("version_info") == version or e["response_nonce"] in nonces:
                        if outs:
                            return e["t"] - outs[0]["t"]
                time.sleep(0.02)
            raise RuntimeError(f"no ACK of {type_url} version {version}")

        for n in SIZES:
            target = f"t{n}"
            v = cp.set(RDS, [routes("r1", ("/", target))])["version"]
            ack_ms(RDS, v)
            assert status() == 503
            res = [cl(target)] + [cl(f"c{i}") for i in range(n - 1)]
            first = {}
            t0 = time.time()
            v = cp.set(CDS, res, replace=True)["version"]
            t_pushed = time.time()
            while "t" not in first and time.time() - t0 < 120:
                if status() == 200:
                    first["t"] = time.time()
                time.sleep(0.002)
            ack = ack_ms(CDS, v)
            time.sleep(1)
            yield {"clusters": n, "encode_ms": (t_pushed - t0) * 1000, "ack_ms": ack,
                   "first_request_ms": (first.get("t", float("nan")) - t_pushed) * 1000,
                   "rss_kib": rss_kib(sharp.pid)}
    finally:
        for p in (sharp, up):
            if p and p.poll() is None:
                p.terminate()
                p.wait(20)
        cp.stop()


def main():
    for path in (SHARP, UPSTREAM, LOADGEN):
        if not os.access(path, os.X_OK):
            sys.exit(f"missing {path}: build first (make build)")
    work = tempfile.mkdtemp(prefix="sharp-xdsbench-")
    b = Bench(work)
    try:
        print("1. push to applied and to first request served (CDS file moved into place; "
              "the route already names the new cluster)")
        print(f"{'clusters':>9} {'file MB':>8} {'applied ms':>11} {'first req ms':>13} {'RSS KiB':>9} "
              f"{'active':>7}")
        for n in SIZES:
            r = b.scale(n)
            print(f"{r['clusters']:>9} {r['file_mb']:>8.2f} {r['applied_ms']:>11.1f} {r['first_request_ms']:>13.1f} "
                  f"{r['rss_kib']:>9} {int(r['active_clusters']):>7}", flush=True)

        if os.environ.get("GRPC", "1") == "1":
            print("\n1b. the same from a gRPC control plane over ADS (test/xds/control_plane.js): push to ACK "
                  "(the control plane's clock), to the first request served")
            print(f"{'mode':>11} {'clusters':>9} {'CP encode ms':>13} {'ACK ms':>7} {'first req ms':>13} "
                  f"{'RSS KiB':>9}")
            for mode in ("GRPC", "DELTA_GRPC"):
                for r in grpc_scale(work, mode):
                    print(f"{mode:>11} {r['clusters']:>9} {r['encode_ms']:>13.1f} {r['ack_ms']:>7.0f} "
                          f"{r['first_request_ms']:>13.1f} {r['rss_kib']:>9}", flush=True)
            print()

        # steady state: STEADY_CLUSTERS clusters, "steady" among them, plus
        # the EDS cluster e; the route sends everything to "steady"
        b.version += 1
        write_atomic(b.eds, b.eds_doc())
        before = b.counter("cluster_manager.cds.update_success")
        write_atomic(b.cds, {"version_info": str(b.version),
                             "resources": b.cds_resources(STEADY_CLUSTERS, "steady") + [eds_cluster("e", b.eds)]})
        b.wait_counter("cluster_manager.cds.update_success", before)
        b.push_rds("steady")
        print(f"\n2. steady traffic at {RATE} req/s (open loop, sharp-loadgen), {DURATION} s each, "
              f"{STEADY_CLUSTERS} clusters + an EDS cluster of {EDS_ENDPOINTS} endpoints")
        print(f"{'run':<22} {'req/s':>9} {'p50 ms':>8} {'p99 ms':>8} {'max ms':>8} {'errors':>7} {'pushes':>7} "
              f"{'CPU us/req':>11} {'turns>1ms':>10} {'turns>5ms':>10} {'longest<=ms':>12} {'late>1ms':>9}")
        rows = {}
        for name, pushes in (("no pushes", None), ("EDS doc/s, not read", "unread"), ("1 EDS push/s", "eds"),
                             ("1 push/s (CDS/EDS/RDS)", "all")):
            s, made, cpu = b.loadgen(DURATION, pushes)
            tot = s["totals"]
            done = tot["completed"]
            errs = tot["sent"] - tot["2xx"] + tot["client_dropped"]
            rps = s["goodput_rps"]
            lat = s["latency_ms"]
            p50, p99, mx = lat["p50"], lat["p99"], lat["max"]
            rows[name] = (p99, s)
            cpu_us = cpu * 1e6 / done if done else float("nan")
            t1, t5, longest, late = b.turns
            print(f"{name:<22} {rps:>9.1f} {p50:>8.2f} {p99:>8.2f} {mx:>8.2f} {errs:>7} {made:>7} {cpu_us:>11.1f} "
                  f"{t1:>10} {t5:>10} {longest / 1000:>12g} {late:>9}", flush=True)
        q99 = rows["no pushes"][0]
        for name in ("1 EDS push/s", "1 push/s (CDS/EDS/RDS)"):
            print(f"p99 with {name[2:]} / without: {rows[name][0] / q99:.2f}")
        # what the pushes cost beyond the harness's own work (writing the
        # same documents each second where SHARP does not look)
        print(f"p99 with EDS push/s / with the same documents not read: "
              f"{rows['1 EDS push/s'][0] / rows['EDS doc/s, not read'][0]:.2f}")
    finally:
        b.stop()
        if os.environ.get("KEEP") != "1":
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
