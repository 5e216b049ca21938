"""Bootstrap stats_sinks: envoy.stat_sinks.statsd and envoy.stat_sinks.dog_statsd
over UDP to a statsd server on loopback (a Python UDP socket here). At every
stats flush SHARP sends used counters as deltas ("|c"), used gauges ("|g")
and the interval's histogram values as timers ("|ms"); DogStatsD uses
tag-extracted names with "|#tag:value" tags and packs lines into datagrams
of at most max_bytes_per_datagram bytes. Other sink types are refused."""
import socket
import textwrap
import threading
import time
import urllib.request

import pytest

from conftest import Sharp, admin_get, bootstrap_yaml, free_port, validate_config

FLUSH = "0.2s"


class StatsdServer:
    """Collects datagrams sent to a UDP socket on 127.0.0.1 (or ::1), read
    by a thread so that the socket buffer never overflows."""

    def __init__(self, family=socket.AF_INET):
        self.sock = socket.socket(family, socket.SOCK_DGRAM)
        self.sock.bind(("::1" if family == socket.AF_INET6 else "127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.sock.settimeout(0.1)
        self.datagrams = []
        self.stopped = False
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        while not self.stopped:
            try:
                self.datagrams.append(self.sock.recv(65535).decode())
            except socket.timeout:
                pass
            except OSError:
                return

    def drain(self, seconds):
        time.sleep(seconds)
        return self.datagrams

    def lines(self):
        return [ln for d in list(self.datagrams) for ln in d.split("\n")]

    def close(self):
        self.stopped = True
        self.thread.join(5)
        self.sock.close()


@pytest.fixture
def statsd():
    s = StatsdServer()
    yield s
    s.close()


def sink_yaml(sinks):
    return f"stats_flush_interval: {FLUSH}\nstats_sinks:\n" + textwrap.indent(textwrap.dedent(sinks), "")


def statsd_sink(port, prefix=None, host="127.0.0.1"):
    p = f"\n    prefix: {prefix}" if prefix else ""
    return f"""\
- name: envoy.stat_sinks.statsd
  typed_config:
    "@type": type.googleapis.com/envoy.config.metrics.v3.StatsdSink
    address: {{ socket_address: {{ address: "{host}", port_value: {port} }} }}{p}
"""


def dog_sink(port, max_bytes=None, prefix=None):
    extra = f"\n    max_bytes_per_datagram: {max_bytes}" if max_bytes else ""
    extra += f"\n    prefix: {prefix}" if prefix else ""
    return f"""\
- name: envoy.stat_sinks.dog_statsd
  typed_config:
    "@type": type.googleapis.com/envoy.config.metrics.v3.DogStatsdSink
    address: {{ socket_address: {{ address: 127.0.0.1, port_value: {port} }} }}{extra}
"""


def start(procs, upstream, sinks):
    listen, admin = free_port(), free_port()
    y = bootstrap_yaml(listen, admin, {"backend": [upstream.port]}) + sink_yaml(sinks)
    s = Sharp(y)
    procs.append(s)
    s.wait_ready(admin)
    return listen, admin


def get(port, n):
    for _ in range(n):
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=5) as r:
            assert r.status == 200
            r.read()


def parse(line):
    """'name:value|type[|...]' -> (name, value, type, rest)."""
    name, rest = line.split(":", 1)
    parts = rest.split("|")
    return name, parts[0], parts[1], parts[2:]


def counter_total(lines, name):
    return sum(int(parse(ln)[1]) for ln in lines if ln.startswith(name + ":") and parse(ln)[2] == "c")


def test_statsd_counters_gauges_timers(procs, upstream, statsd):
    listen, _ = start(procs, upstream, statsd_sink(statsd.port))
    statsd.drain(0.6)  # flushes before any request: upstream_rq_total has no delta yet
    assert counter_total(statsd.lines(), "envoy.cluster.backend.upstream_rq_total") == 0
    statsd.datagrams = []
    get(listen, 7)
    statsd.drain(1.0)
    lines = statsd.lines()
    # Plain statsd: one line per datagram (Envoy's UDP sink without a buffer size).
    assert all("\n" not in d for d in statsd.datagrams)
    # The deltas over the flushes add up to the requests made, and the
    # counter keeps being sent with delta 0 once used.
    assert counter_total(lines, "envoy.cluster.backend.upstream_rq_total") == 7
    assert "envoy.cluster.backend.upstream_rq_total:0|c" in lines
    assert counter_total(lines, "envoy.http.ingress_http.downstream_rq_completed") == 7
    # Gauges: absolute values.
    gauges = {parse(ln)[0]: int(parse(ln)[1]) for ln in lines if parse(ln)[2] == "g"}
    assert gauges["envoy.cluster.backend.membership_total"] == 1
    assert gauges["envoy.server.concurrency"] == 2
    # Histograms: the interval's values as timers; sample rates add up to the count.
    timers = [parse(ln) for ln in lines if ln.startswith("envoy.cluster.backend.upstream_rq_time:")]
    assert timers and all(t[2] == "ms" for t in timers)
    n = sum(round(1 / float(t[3][0][1:])) if t[3] else 1 for t in timers)
    assert n == 7
    # Full names, no tags.
    assert not any("|#" in ln for ln in lines)


def test_statsd_prefix_and_ipv6(procs, upstream):
    s6 = StatsdServer(socket.AF_INET6)
    try:
        listen, _ = start(procs, upstream, statsd_sink(s6.port, prefix="edge", host="::1"))
        get(listen, 3)
        s6.drain(1.0)
        lines = s6.lines()
        assert counter_total(lines, "edge.cluster.backend.upstream_rq_total") == 3
        assert all(ln.startswith("edge.") for ln in lines)
    finally:
        s6.close()


def test_dog_statsd_tags_and_datagram_size(procs, upstream, statsd):
    listen, _ = start(procs, upstream, dog_sink(statsd.port, max_bytes=300))
    get(listen, 5)
    statsd.drain(1.0)
    lines = statsd.lines()
    # Tag-extracted name with Envoy's default tags.
    rq = [ln for ln in lines if ln.startswith("envoy.cluster.upstream_rq_total:")]
    assert rq and all(ln.endswith("|c|#envoy.cluster_name:backend") for ln in rq)
    assert sum(int(parse(ln)[1]) for ln in rq) == 5
    xx = [ln for ln in lines if ln.startswith("envoy.cluster.upstream_rq_xx:")]
    assert any("|#envoy.response_code_class:2,envoy.cluster_name:backend" in ln for ln in xx)
    hcm = [ln for ln in lines if ln.startswith("envoy.http.downstream_rq_completed:")]
    assert hcm and all(ln.endswith("|#envoy.http_conn_manager_prefix:ingress_http") for ln in hcm)
    t = [ln for ln in lines if ln.startswith("envoy.cluster.upstream_rq_time:")]
    assert t and all("|ms" in ln and ln.endswith("|#envoy.cluster_name:backend") for ln in t)
    # Several lines per datagram, none above the bound.
    assert max(len(d.encode()) for d in statsd.datagrams) <= 300
    assert any("\n" in d for d in statsd.datagrams)


def test_dog_statsd_default_one_line_per_datagram(procs, upstream, statsd):
    start(procs, upstream, dog_sink(statsd.port, prefix="p"))
    statsd.drain(0.6)
    assert statsd.datagrams and all("\n" not in d for d in statsd.datagrams)
    assert all(d.startswith("p.") for d in statsd.datagrams)


def test_stats_matcher_applies_to_sinks(procs, upstream, statsd):
    listen, admin = free_port(), free_port()
    y = bootstrap_yaml(listen, admin, {"backend": [upstream.port]}) + sink_yaml(statsd_sink(statsd.port)) + \
        textwrap.dedent("""\
        stats_config:
          stats_matcher:
            exclusion_list:
              patterns:
              - prefix: "cluster.backend.upstream_rq"
        """)
    s = Sharp(y)
    procs.append(s)
    s.wait_ready(admin)
    get(listen, 2)
    statsd.drain(0.8)
    lines = statsd.lines()
    assert any(ln.startswith("envoy.cluster.backend.") for ln in lines)
    assert not any(ln.startswith("envoy.cluster.backend.upstream_rq") for ln in lines)


def test_unreachable_sink_does_not_affect_proxy(procs, upstream, statsd):
    # Nobody listens on this port: ICMP port unreachable on every datagram.
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as dead:
        dead.bind(("127.0.0.1", 0))
        dead_port = dead.getsockname()[1]
    listen, admin = start(procs, upstream, statsd_sink(dead_port) + statsd_sink(statsd.port))
    for _ in range(5):
        get(listen, 4)
        time.sleep(0.25)
    statsd.drain(0.6)
    # The second sink still gets everything.
    assert counter_total(statsd.lines(), "envoy.cluster.backend.upstream_rq_total") == 20


@pytest.mark.parametrize("typ,name,why", [
    ("envoy.config.metrics.v3.HystrixSink", "envoy.stat_sinks.hystrix", "hystrix"),
    ("envoy.extensions.stat_sinks.wasm.v3.Wasm", "envoy.stat_sinks.wasm", "Wasm"),
])
def test_other_sinks_refused(typ, name, why):
    y = bootstrap_yaml(free_port(), free_port(), {"backend": [free_port()]}) + textwrap.dedent(f"""\
        stats_sinks:
        - name: {name}
          typed_config:
            "@type": type.googleapis.com/{typ}
        """)
    rc, out = validate_config(y)
    assert rc != 0
    assert "stats_sinks[0].typed_config" in out and name in out and why in out and "not supported" in out, out


def test_statsd_config_refusals():
    base = bootstrap_yaml(free_port(), free_port(), {"backend": [free_port()]})
    rc, out = validate_config(base + textwrap.dedent("""\
        stats_sinks:
        - name: envoy.stat_sinks.statsd
          typed_config:
            "@type": type.googleapis.com/envoy.config.metrics.v3.StatsdSink
            tcp_cluster_name: backend
        """))
    # statsd over TCP needs the node's id and cluster, as in Envoy (test_statsd_tcp.py)
    assert rc != 0 and "tcp statsd: node 'id' and 'cluster' are required" in out, out
    rc, out = validate_config(base + textwrap.dedent("""\
        stats_sinks:
        - name: envoy.stat_sinks.statsd
          typed_config:
            "@type": type.googleapis.com/envoy.config.metrics.v3.StatsdSink
            prefix: x
        """))
    assert rc != 0 and "address" in out, out
    rc, out = validate_config(base + textwrap.dedent("""\
        stats_sinks:
        - name: envoy.stat_sinks.dog_statsd
          typed_config:
            "@type": type.googleapis.com/envoy.config.metrics.v3.DogStatsdSink
            address: { socket_address: { address: 127.0.0.1, port_value: 8125 } }
            max_bytes_per_datagram: 0
        """))
    assert rc != 0 and "max_bytes_per_datagram" in out, out
    rc, out = validate_config(base + "stats_sinks:\n" + dog_sink(8125))
    assert rc == 0, out


def test_stats_flush_on_admin(procs, upstream, statsd):
    """No flush timer: the sinks are sent when /stats or /stats/prometheus
    is queried, as in Envoy."""
    listen, admin = free_port(), free_port()
    y = bootstrap_yaml(listen, admin, {"backend": [upstream.port]}) + \
        "stats_flush_on_admin: true\nstats_sinks:\n" + statsd_sink(statsd.port)
    s = Sharp(y)
    procs.append(s)
    s.wait_ready(admin)
    get(listen, 3)
    statsd.drain(1.5)
    assert statsd.datagrams == []
    admin_get(admin, "/stats?filter=nothing_matches_this")
    statsd.drain(0.3)
    assert counter_total(statsd.lines(), "envoy.cluster.backend.upstream_rq_total") == 3
    statsd.datagrams = []
    get(listen, 2)
    admin_get(admin, "/stats/prometheus")
    statsd.drain(0.3)
    assert counter_total(statsd.lines(), "envoy.cluster.backend.upstream_rq_total") == 2


def test_stats_flush_on_admin_rules():
    base = bootstrap_yaml(free_port(), free_port(), {"backend": [free_port()]})
    rc, out = validate_config(base + "stats_flush_on_admin: true\nstats_flush_interval: 1s\n")
    assert rc != 0 and "Only one of stats_flush_interval or stats_flush_on_admin" in out, out
    rc, out = validate_config(base + "stats_flush_on_admin: false\n")
    assert rc != 0 and "stats_flush_on_admin" in out, out
    rc, out = validate_config(base + "stats_flush_on_admin: true\n")
    assert rc == 0, out
