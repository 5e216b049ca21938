#!/usr/bin/env python3
"""What one stats flush (stats_flush_interval) costs SHARP's main thread:
instructions per flush under callgrind, counted inside
sharp_server_flush_stats only (--toggle-collect), with N STATIC clusters
(default 1,000) and, with TRAFFIC=1, requests to four of them meanwhile.
The flush interval is 1 s; SHARP runs uninstrumented until it is ready.
With SINK=statsd (or SINK=dog) the bootstrap has that stats sink, sending
to a UDP socket of this script, which counts the lines it receives.

    BUILD=build python3 bench/stats_flush_cost.py [N] [SECONDS]
    SINK=statsd BUILD=build python3 bench/stats_flush_cost.py 1000 8

Needs valgrind (callgrind) and curl. Everything on 127.0.0.1; it ends only
the processes it started."""
import os
import re
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request

BUILD = os.environ.get("BUILD", "build")
SHARP = os.path.join(BUILD, "proxy", "sharp")
UPSTREAM = os.path.join(BUILD, "test", "upstream", "sharp-test-upstream")


def port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


def sink(kind, port):
    if not kind:
        return ""
    name, typ = {"statsd": ("envoy.stat_sinks.statsd", "envoy.config.metrics.v3.StatsdSink"),
                 "dog": ("envoy.stat_sinks.dog_statsd", "envoy.config.metrics.v3.DogStatsdSink")}[kind]
    return f"""stats_sinks:
- name: {name}
  typed_config:
    "@type": type.googleapis.com/{typ}
    address: {{ socket_address: {{ address: 127.0.0.1, port_value: {port} }} }}
"""


def bootstrap(n, admin, listen, up, sink_yaml=""):
    routes = "".join(f'              - match: {{ prefix: "/c{i}/" }}\n'
                     f'                route: {{ cluster: c{i} }}\n' for i in range(min(n, 4)))
    clusters = "".join(f"""  - name: c{i}
    type: STATIC
    connect_timeout: 1s
    load_assignment:
      cluster_name: c{i}
      endpoints:
      - lb_endpoints:
        - endpoint: {{ address: {{ socket_address: {{ address: 127.0.0.1, port_value: {up} }} }} }}
""" for i in range(n))
    return f"""stats_flush_interval: 1s
{sink_yaml}admin:
  address: {{ socket_address: {{ address: 127.0.0.1, port_value: {admin} }} }}
static_resources:
  listeners:
  - name: listener_0
    address: {{ socket_address: {{ address: 127.0.0.1, port_value: {listen} }} }}
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: ingress_http
          route_config:
            virtual_hosts:
            - name: backend
              domains: ["*"]
              routes:
{routes}          http_filters:
          - name: envoy.filters.http.router
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router
  clusters:
{clusters}"""


def ready(admin):
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{admin}/ready", timeout=2) as r:
            return r.status == 200
    except Exception:
        return False


def per_flush(path):
    """Instructions collected and the calls of sharp_stats_flush."""
    txt = open(path).read()
    total = int(re.search(r"^(?:summary|totals): (\d+)", txt, re.M).group(1))
    fid = None
    for m in re.finditer(r"\((\d+)\) sharp_stats_flush$", txt, re.M):
        fid = m.group(1)
        break
    lines, calls = txt.split("\n"), 0
    for i, line in enumerate(lines):
        if fid and re.match(rf"cfn=\({fid}\)( |$)", line):
            calls += int(re.match(r"calls=(\d+)", lines[i + 1]).group(1))
    return total, calls


def main():
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 1000
    secs = float(sys.argv[2]) if len(sys.argv) > 2 else 8
    traffic = os.environ.get("TRAFFIC") == "1"
    d = tempfile.mkdtemp(prefix="sharp-flushcost-")
    procs = []
    try:
        up = subprocess.Popen([UPSTREAM, "--address", "127.0.0.1", "--port", "0", "--name", "up", "--quiet"],
                              stdout=subprocess.PIPE)
        procs.append(up)
        up_port = int(up.stdout.readline().decode().strip().rsplit(":", 1)[1])
        admin, listen = port(), port()
        kind = os.environ.get("SINK", "")
        rx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        rx.bind(("127.0.0.1", 0))
        rx.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 24)
        rx.setblocking(False)
        lines = [0]

        def drain():
            while True:
                try:
                    lines[0] += rx.recv(65536).count(b"\n") + 1
                except BlockingIOError:
                    return

        cfg = os.path.join(d, "bootstrap.yaml")
        with open(cfg, "w") as f:
            f.write(bootstrap(n, admin, listen, up_port, sink(kind, rx.getsockname()[1])))
        out = os.path.join(d, "callgrind.out")
        sharp = subprocess.Popen(["valgrind", "--tool=callgrind", "--instr-atstart=no",
                                  "--toggle-collect=sharp_server_flush_stats", f"--callgrind-out-file={out}",
                                  SHARP, "-c", cfg, "--concurrency", "2", "-l", "warning"],
                                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        procs.append(sharp)
        deadline = time.time() + 600
        while not ready(admin):
            if sharp.poll() is not None or time.time() > deadline:
                sys.exit("SHARP did not become ready")
            time.sleep(0.5)
        subprocess.run(["callgrind_control", "-i", "on", str(sharp.pid)], stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL, check=True)
        end, sent = time.time() + secs, 0
        while time.time() < end:
            if traffic:
                for c in range(min(n, 4)):
                    subprocess.run(["curl", "-s", "-o", "/dev/null", f"http://127.0.0.1:{listen}/c{c}/x"])
                    sent += 1
            time.sleep(0.05)
            drain()
        sharp.terminate()
        sharp.wait()
        total, calls = per_flush(out)
        drain()
        print(f"clusters={n} traffic={'yes' if traffic else 'no'} sink={kind or 'none'} requests={sent} "
              f"flushes={calls} instructions={total} per_flush={total // max(calls, 1)}"
              + (f" lines_received={lines[0]}" if kind else ""))
    finally:
        for p in procs:
            if p.poll() is None:
                p.terminate()
                p.wait()
        if os.environ.get("KEEP"):
            print(f"kept {d}")
        else:
            subprocess.run(["rm", "-rf", d])


if __name__ == "__main__":
    main()
