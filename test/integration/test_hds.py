"""hds_config: Envoy's health discovery service client against a
python3-grpcio HDS server on loopback implementing
envoy.service.health.v3.HealthDiscoveryService/StreamHealthCheck (the
messages encoded and decoded here from the wire format by hand). SHARP
opens the stream at start and sends a HealthCheckRequest with the node and
its capability (HTTP and TCP, as Envoy); each HealthCheckSpecifier gives
the clusters to check (their endpoints by locality and their health
checks) and the report interval; SHARP checks them itself and every
interval sends an EndpointHealthResponse with each endpoint's health. A
new specifier replaces the set, an unchanged cluster keeping its state; a
stream that ends is opened again after Envoy's back-off."""
import concurrent.futures
import os
import queue
import socket
import subprocess
import textwrap
import threading
import time

import grpc
import pytest

from conftest import SHARP, SLOW, Sharp, Upstream, dead_port, free_port, stat, validate_config, wait_for
from test_lrs import H2, cluster, enc_field, s
from test_metrics_service import CORPUS, fields, varint

IDENT = lambda b: b  # noqa: E731
HEALTHY, UNHEALTHY, TIMEOUT = 1, 2, 4
KUMA = ["kuma__pkg__xds__bootstrap__testdata__bootstrap.overridden.golden.yaml",
        "kuma__pkg__xds__bootstrap__testdata__generator.custom-config-minimal-request.golden.yaml",
        "kuma__pkg__xds__bootstrap__testdata__generator.custom-config.golden.yaml",
        "kuma__pkg__xds__bootstrap__testdata__generator.default-config.golden.yaml"]


# ---- the wire format, by hand ----

def duration(ms):
    return enc_field(1, 0, ms // 1000) + enc_field(2, 0, ms % 1000 * 1000000)


def http_check(path="/", timeout_ms=1000, no_traffic_ms=None):
    """A HealthCheck with an http_health_check (thresholds 1)."""
    out = enc_field(1, 2, duration(timeout_ms)) + enc_field(2, 2, duration(1000))
    out += enc_field(4, 2, enc_field(1, 0, 1)) + enc_field(5, 2, enc_field(1, 0, 1))
    out += enc_field(8, 2, enc_field(2, 2, path.encode()))
    if no_traffic_ms:
        out += enc_field(12, 2, duration(no_traffic_ms))
    return out


def tcp_check():
    out = enc_field(1, 2, duration(1000)) + enc_field(2, 2, duration(1000))
    out += enc_field(4, 2, enc_field(1, 0, 1)) + enc_field(5, 2, enc_field(1, 0, 1))
    return out + enc_field(9, 2, b"")


def endpoint(port, address="127.0.0.1"):
    sa = enc_field(2, 2, address.encode()) + enc_field(3, 0, port)
    return enc_field(1, 2, enc_field(1, 2, sa))


def cluster_check(name, checks, localities):
    """localities: [((region, zone, sub_zone) or None, [port, ...])]"""
    out = enc_field(1, 2, name.encode()) if name is not None else b""
    out += b"".join(enc_field(2, 2, c) for c in checks)
    for loc, ports in localities:
        le = b""
        if loc:
            le += enc_field(1, 2, b"".join(enc_field(i + 1, 2, v.encode()) for i, v in enumerate(loc)))
        le += b"".join(enc_field(2, 2, endpoint(p) if isinstance(p, int) else p) for p in ports)
        out += enc_field(3, 2, le)
    return out


def specifier(clusters, interval_ms=None):
    out = b"".join(enc_field(1, 2, c) for c in clusters)
    if interval_ms is not None:
        out += enc_field(2, 2, duration(interval_ms))
    return out


def packed_varints(b):
    out, i = [], 0
    while i < len(b):
        v, i = varint(b, i)
        out.append(v)
    return out


def decode(buf):
    """A HealthCheckRequestOrEndpointHealthResponse: ("request", {...}) or
    ("health", {"clusters": {name: [(locality, {address: status})]},
    "flat": {address: status}})."""
    f = fields(buf)
    if 1 in f:
        r = fields(f[1][0])
        nf = fields(r.get(1, [b""])[0])
        cap = fields(r.get(2, [b""])[0])
        protos = []
        for v in cap.get(1, []):
            protos += packed_varints(v) if isinstance(v, bytes) else [v]
        return "request", {"node": {"id": s(nf.get(1, [b""])[0]), "cluster": s(nf.get(2, [b""])[0])},
                           "protocols": protos}
    r = fields(f.get(2, [b""])[0])

    def ep_health(b):
        ef = fields(b)
        addr = fields(fields(ef[1][0])[1][0])
        if 2 in addr:  # a pipe
            return "unix:" + s(fields(addr[2][0])[1][0]), ef.get(2, [0])[0]
        sa = fields(addr[1][0])
        return f"{s(sa[2][0])}:{sa.get(3, [0])[0]}", ef.get(2, [0])[0]
    clusters = {}
    for c in r.get(2, []):
        cf = fields(c)
        locs = []
        for le in cf.get(2, []):
            lf = fields(le)
            loc = fields(lf.get(1, [b""])[0])
            locs.append((tuple(s(loc.get(i, [b""])[0]) for i in (1, 2, 3)),
                         dict(ep_health(e) for e in lf.get(2, []))))
        clusters[s(cf.get(1, [b""])[0])] = locs
    return "health", {"clusters": clusters, "flat": dict(ep_health(e) for e in r.get(1, []))}


# ---- the HDS server ----

class HdsServer:
    """StreamHealthCheck: records every message (stream number, arrival
    time, decoded) and sends what the test queues on a stream; `initial`,
    if set, is sent on each new stream once its first message came."""

    def __init__(self, port=0, initial=None):
        self.msgs = []
        self.queues = {}
        self.initial = initial
        self.streams = 0
        self.metadata = []
        self.lock = threading.Lock()
        self.server = grpc.server(concurrent.futures.ThreadPoolExecutor(max_workers=8))
        self.server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(
            "envoy.service.health.v3.HealthDiscoveryService",
            {"StreamHealthCheck": grpc.stream_stream_rpc_method_handler(self._stream, IDENT, IDENT)}),))
        self.port = self.server.add_insecure_port(f"127.0.0.1:{port}")
        assert self.port
        self.server.start()

    def _stream(self, requests, ctx):
        q = queue.Queue()
        with self.lock:
            self.streams += 1
            n = self.streams
            self.queues[n] = q
            self.metadata.append(dict(ctx.invocation_metadata()))

        def read():
            first = True
            try:
                for m in requests:
                    with self.lock:
                        self.msgs.append((n, time.monotonic(), decode(m)))
                    if first and self.initial is not None:
                        q.put(self.initial)
                    first = False
            except Exception:  # noqa: BLE001 - the stream was cancelled
                pass
            q.put(None)
        threading.Thread(target=read, daemon=True).start()
        while ctx.is_active():
            try:
                item = q.get(timeout=0.2)
            except queue.Empty:
                continue
            if item is None:
                return
            yield item

    def send(self, stream, msg):
        self.queues[stream].put(msg)

    def snapshot(self, stream=None, kind=None):
        with self.lock:
            return [(n, t, m) for n, t, (k, m) in self.msgs
                    if (stream is None or n == stream) and (kind is None or k == kind)]

    def reports(self, stream=None):
        return self.snapshot(stream, "health")

    def last(self):
        r = self.reports()
        return r[-1][2] if r else None

    def stop(self):
        self.server.stop(0).wait(5)


@pytest.fixture
def servers():
    started = []
    yield started
    for x in started:
        x.stop()


class Silent:
    """Accepts connections (the kernel's backlog) and never answers: a
    health check times out."""

    def __init__(self):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]


HDS = textwrap.dedent("""\
    hds_config:
      api_type: GRPC
      transport_api_version: V3
      set_node_on_first_message_only: true
      grpc_services:
      - envoy_grpc: { cluster_name: hds_cluster }
        initial_metadata: [{ key: authorization, value: token }]
    """)


def config(admin, hds_port, hds=HDS):
    return textwrap.dedent(f"""\
        node: {{ id: node-1, cluster: cluster-1 }}
        admin:
          address: {{ socket_address: {{ address: 127.0.0.1, port_value: {admin} }} }}
        """) + hds + "static_resources:\n  clusters:\n" + cluster("hds_cluster", [(hds_port, None, 0)], H2) \
        + cluster("plain", [(hds_port, None, 0)])


def start(procs, yaml_text, admin):
    sh = Sharp(yaml_text)
    procs.append(sh)
    sh.wait_ready(admin)
    return sh


def health(report, name):
    """{address: status} of every locality of cluster `name`."""
    out = {}
    for _, eps in (report or {}).get("clusters", {}).get(name, []):
        out.update(eps)
    return out


# ---- configuration ----

def test_config_loads_and_envoy_refusals():
    admin = free_port()
    rc, out = validate_config(config(admin, 1))
    assert rc == 0, out

    def refused(hds, msg):
        rc, out = validate_config(config(admin, 1, hds + "\n"))
        assert rc != 0 and msg in out, out
    refused("hds_config: { api_type: GRPC, transport_api_version: V3 }",
            "hds_config: API configs must have either a gRPC service or a cluster name defined")
    refused("hds_config: { api_type: GRPC, grpc_services: [{ envoy_grpc: { cluster_name: hds_cluster } }] }",
            "hds_config.transport_api_version: V2 (and AUTO) xDS transport protocol versions are deprecated")
    refused("hds_config: { api_type: REST, transport_api_version: V3, "
            "grpc_services: [{ envoy_grpc: { cluster_name: hds_cluster } }] }",
            "if not a gRPC type, must not have a gRPC service specified")
    refused("hds_config: { api_type: GRPC, transport_api_version: V3, "
            "grpc_services: [{ envoy_grpc: { cluster_name: nope } }] }",
            "must have a statically defined non-EDS cluster: 'nope' does not exist")
    refused("hds_config: { api_type: GRPC, transport_api_version: V3, "
            "grpc_services: [{ envoy_grpc: { cluster_name: plain } }] }",
            "gRPC client cluster 'plain' does not use HTTP/2")


@pytest.mark.parametrize("name", KUMA)
def test_kuma_bootstraps_validate(name):
    """Kuma's bootstraps, refused before only for their hds_config."""
    r = subprocess.run([SHARP, "--mode", "validate", "-c", name], capture_output=True, text=True,
                       timeout=20 * SLOW, cwd=CORPUS)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "OK" in r.stdout + r.stderr


# ---- behaviour ----

def test_request_then_reports_healthy_unhealthy_timeout(procs, servers):
    up, silent = Upstream("a"), Silent()
    procs.append(up)
    dead = dead_port()
    spec = specifier([
        cluster_check("web", [http_check("/", timeout_ms=500)],
                      [(("r1", "z1", ""), [up.port, dead]), (("r1", "z2", "s2"), [silent.port])]),
        cluster_check("tcp", [tcp_check()], [(None, [up.port])]),
    ], interval_ms=300)
    hds = HdsServer(initial=spec)
    servers.append(hds)
    admin = free_port()
    start(procs, config(admin, hds.port), admin)
    first = wait_for(lambda: hds.snapshot(), 10, "the first message")[0][2]
    # the HealthCheckRequest: the node and Envoy's capability (HTTP, TCP)
    assert first == {"node": {"id": "node-1", "cluster": "cluster-1"}, "protocols": [0, 1]}
    # the service's initial_metadata
    assert hds.metadata[0].get("authorization") == "token", hds.metadata

    def settled():
        r = hds.last()
        h = health(r, "web")
        return r if h.get(f"127.0.0.1:{up.port}") == HEALTHY and h.get(f"127.0.0.1:{silent.port}") == TIMEOUT \
            and health(r, "tcp").get(f"127.0.0.1:{up.port}") == HEALTHY else None
    r = wait_for(settled, 10, "the checks' results reported")
    # per cluster and locality, in the specifier's order
    assert list(r["clusters"]) == ["web", "tcp"]
    web = r["clusters"]["web"]
    assert [loc for loc, _ in web] == [("r1", "z1", ""), ("r1", "z2", "s2")]
    assert web[0][1] == {f"127.0.0.1:{up.port}": HEALTHY, f"127.0.0.1:{dead}": UNHEALTHY}
    assert web[1][1] == {f"127.0.0.1:{silent.port}": TIMEOUT}
    assert r["clusters"]["tcp"] == [(("", "", ""), {f"127.0.0.1:{up.port}": HEALTHY})]
    # the deprecated flat list too
    assert r["flat"] == {**web[0][1], **web[1][1]}
    # no more requests: every later message is a report, at the interval
    n0 = len(hds.reports())
    wait_for(lambda: len(hds.reports()) >= n0 + 4, 10, "four more reports")
    msgs = hds.snapshot()
    assert [k for k in range(len(msgs)) if "protocols" in msgs[k][2]] == [0]
    times = [t for _, t, _ in hds.reports()[1:]]
    gaps = [y - x for x, y in zip(times, times[1:])]
    assert 0.25 < sum(gaps) / len(gaps) < 0.3 + 0.3 * SLOW, gaps
    assert stat(admin, "hds_delegate.requests") == 1
    assert stat(admin, "hds_delegate.updates") == 1
    assert stat(admin, "hds_delegate.errors") == 0
    assert len(msgs) <= stat(admin, "hds_delegate.responses") <= len(msgs) + 3
    assert stat(admin, "cluster.web.health_check.success") >= 1
    assert stat(admin, "cluster.web.health_check.network_failure") >= 2


def test_new_specifier_replaces_clusters(procs, servers):
    a, b = Upstream("a"), Upstream("b")
    procs.extend([a, b])
    dead = dead_port()
    keep = cluster_check("keep", [http_check()], [(None, [a.port])])
    spec1 = specifier([keep, cluster_check("gone", [http_check()], [(None, [dead])])], interval_ms=200)
    hds = HdsServer(initial=spec1)
    servers.append(hds)
    admin = free_port()
    start(procs, config(admin, hds.port), admin)
    wait_for(lambda: health(hds.last(), "keep").get(f"127.0.0.1:{a.port}") == HEALTHY, 10, "keep healthy")
    assert set(hds.last()["clusters"]) == {"keep", "gone"}
    # the first check runs at once, the next after no_traffic_interval (60 s): one attempt
    assert stat(admin, "cluster.keep.health_check.attempt") == 1
    # the same specifier again changes nothing
    hds.send(1, spec1)
    wait_for(lambda: stat(admin, "hds_delegate.requests") == 2, 10, "the second specifier")
    assert stat(admin, "hds_delegate.updates") == 1
    # a new set: keep unchanged, gone removed, new added
    hds.send(1, specifier([keep, cluster_check("new", [http_check()], [(None, [b.port])])], interval_ms=200))
    wait_for(lambda: health(hds.last(), "new").get(f"127.0.0.1:{b.port}") == HEALTHY, 10, "new healthy")
    r = hds.last()
    assert list(r["clusters"]) == ["keep", "new"]
    assert health(r, "keep") == {f"127.0.0.1:{a.port}": HEALTHY}
    assert stat(admin, "hds_delegate.updates") == 2
    # the unchanged cluster kept its hosts and sessions: no new first check
    assert stat(admin, "cluster.keep.health_check.attempt") == 1
    # a changed cluster: a new host starts unhealthy, then is checked
    hds.send(1, specifier([cluster_check("keep", [http_check()], [(None, [a.port, b.port])])], interval_ms=200))
    wait_for(lambda: health(hds.last(), "keep") == {f"127.0.0.1:{a.port}": HEALTHY, f"127.0.0.1:{b.port}": HEALTHY},
             10, "keep with two hosts")
    assert list(hds.last()["clusters"]) == ["keep"]
    assert stat(admin, "hds_delegate.errors") == 0


def test_changed_cluster_keeps_its_hosts_health(procs, servers):
    """Envoy's HdsCluster::update: an endpoint of a changed cluster keeps
    its health while the new version's first check runs (a slow one here,
    1.5 s), and a new endpoint is UNHEALTHY until its own first check."""
    a, b = Upstream("a"), Upstream("b")
    procs.extend([a, b])
    slow = http_check("/work?ms=1500", timeout_ms=5000)
    hds = HdsServer(initial=specifier([cluster_check("c", [slow], [(None, [a.port])])], interval_ms=100))
    servers.append(hds)
    admin = free_port()
    start(procs, config(admin, hds.port), admin)
    ea, eb = f"127.0.0.1:{a.port}", f"127.0.0.1:{b.port}"
    wait_for(lambda: health(hds.last(), "c").get(ea) == HEALTHY, 10, "a healthy")
    for checks, what in (([slow], "the same checks"), ([http_check("/work?ms=1500", timeout_ms=4000)], "new checks")):
        n = stat(admin, "hds_delegate.updates")
        hds.send(1, specifier([cluster_check("c", checks, [(None, [a.port, b.port])])], interval_ms=100))
        wait_for(lambda: stat(admin, "hds_delegate.updates") == n + 1, 10, f"the update ({what})")
        r0 = len(hds.reports())
        wait_for(lambda: len(hds.reports()) > r0 + 1, 10, "a report of the changed cluster")
        assert len(health(hds.last(), "c")) == 2
        t0 = time.monotonic()
        # while the new version's first checks run, a keeps its health, b has none yet
        while time.monotonic() - t0 < 1.0:
            h = health(hds.last(), "c")
            assert h[ea] == HEALTHY, (what, h)
            if h[eb] == HEALTHY:
                break
            time.sleep(0.05)
        wait_for(lambda: health(hds.last(), "c") == {ea: HEALTHY, eb: HEALTHY}, 10, f"both healthy ({what})")
    assert stat(admin, "hds_delegate.errors") == 0


def test_unhealthy_transition_at_no_traffic_interval(procs, servers):
    """The checks run at no_traffic_interval (HDS clusters carry no traffic,
    as in Envoy); an upstream that goes away turns UNHEALTHY."""
    up = Upstream("a")
    procs.append(up)
    hds = HdsServer(initial=specifier([cluster_check("c", [http_check(no_traffic_ms=200)], [(None, [up.port])])],
                                      interval_ms=100))
    servers.append(hds)
    admin = free_port()
    start(procs, config(admin, hds.port), admin)
    addr = f"127.0.0.1:{up.port}"
    wait_for(lambda: health(hds.last(), "c").get(addr) == HEALTHY, 10, "healthy")
    up.stop()
    procs.remove(up)
    wait_for(lambda: health(hds.last(), "c").get(addr) == UNHEALTHY, 10, "unhealthy once the upstream is gone")


def test_server_goes_away_and_comes_back(procs, servers):
    up = Upstream("a")
    procs.append(up)
    spec = specifier([cluster_check("c", [http_check()], [(None, [up.port])])], interval_ms=200)
    hds = HdsServer(initial=spec)
    servers.append(hds)
    port = hds.port
    admin = free_port()
    start(procs, config(admin, hds.port), admin)
    wait_for(lambda: health(hds.last(), "c").get(f"127.0.0.1:{up.port}") == HEALTHY, 10, "healthy")
    hds.stop()
    servers.remove(hds)
    wait_for(lambda: stat(admin, "hds_delegate.errors") >= 1, 10, "the stream's end counted")
    # while away, the checks keep their state; the next stream starts with the request again
    back = HdsServer(port=port, initial=spec)
    servers.append(back)
    first = wait_for(lambda: back.snapshot(), 15, "a new stream")[0][2]
    assert first["node"]["id"] == "node-1" and first["protocols"] == [0, 1]
    wait_for(lambda: health(back.last(), "c").get(f"127.0.0.1:{up.port}") == HEALTHY, 10, "reports again")
    # the same cluster: kept, with its one first check
    assert stat(admin, "cluster.c.health_check.attempt") == 1
    assert stat(admin, "hds_delegate.requests") == 2


def test_dead_server_at_start(procs):
    admin = free_port()
    start(procs, config(admin, dead_port()), admin)
    # Envoy's back-off starts at 1 s and is reset when a stream opens: retries within about a second
    wait_for(lambda: stat(admin, "hds_delegate.errors") >= 3, 10, "failed streams retried")
    assert stat(admin, "hds_delegate.requests") == 0


def test_bad_specifiers_change_nothing(procs, servers):
    up = Upstream("a")
    procs.append(up)
    good = specifier([cluster_check("c", [http_check()], [(None, [up.port])])], interval_ms=150)
    hds = HdsServer(initial=good)
    servers.append(hds)
    admin = free_port()
    sh = start(procs, config(admin, hds.port), admin)
    addr = f"127.0.0.1:{up.port}"
    wait_for(lambda: health(hds.last(), "c").get(addr) == HEALTHY, 10, "healthy")
    no_timeout = enc_field(2, 2, duration(1000)) + enc_field(4, 2, enc_field(1, 0, 1)) \
        + enc_field(5, 2, enc_field(1, 0, 1)) + enc_field(8, 2, enc_field(2, 2, b"/"))
    custom = http_check() + enc_field(13, 2, enc_field(1, 2, b"envoy.health_checkers.redis"))
    bad = [
        specifier([cluster_check("x", [no_timeout], [(None, [up.port])])]),        # a required field
        specifier([cluster_check("x", [custom], [(None, [up.port])])]),            # not implemented
        specifier([cluster_check(None, [http_check()], [(None, [up.port])])]),     # no name
        specifier([cluster_check("x", [http_check()], [(None, [endpoint(80, "not-an-ip")])])]),
        specifier([cluster_check("x", [http_check(), tcp_check()], [(None, [up.port])])]),  # two checks
        specifier([cluster_check("x", [http_check()], [(None, [up.port])])]) + enc_field(2, 2, enc_field(1, 0, (1 << 64) - 5)),
    ]
    for i, m in enumerate(bad):
        hds.send(1, m)
        wait_for(lambda: stat(admin, "hds_delegate.errors") == i + 1, 10, f"bad specifier {i} refused")
    assert stat(admin, "hds_delegate.updates") == 1
    n0 = len(hds.reports())
    wait_for(lambda: len(hds.reports()) >= n0 + 2, 10, "reports go on")
    assert list(hds.last()["clusters"]) == ["c"] and health(hds.last(), "c") == {addr: HEALTHY}
    # bytes that are no specifier end the stream, which opens again
    hds.send(1, b"\xff\xff\xff")
    wait_for(lambda: hds.streams >= 2, 10, "a new stream")
    assert sh.p.poll() is None
    wait_for(lambda: health(hds.last(), "c").get(addr) == HEALTHY, 10, "reports on the new stream")


class GrpcHealth:
    """grpc.health.v1.Health/Check answering `status` (1 SERVING, 2 NOT_SERVING)."""

    def __init__(self, status):
        self.server = grpc.server(concurrent.futures.ThreadPoolExecutor(max_workers=2))
        self.server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(
            "grpc.health.v1.Health",
            {"Check": grpc.unary_unary_rpc_method_handler(lambda req, ctx: enc_field(1, 0, status), IDENT, IDENT)}),))
        self.port = self.server.add_insecure_port("127.0.0.1:0")
        self.server.start()

    def stop(self):
        self.server.stop(0).wait(5)


def test_grpc_health_checks(procs, servers):
    """A gRPC check: Envoy's HDS cluster speaks HTTP/2 for it."""
    serving, not_serving = GrpcHealth(1), GrpcHealth(2)
    servers.extend([serving, not_serving])
    grpc_check = enc_field(1, 2, duration(1000)) + enc_field(2, 2, duration(1000)) \
        + enc_field(4, 2, enc_field(1, 0, 1)) + enc_field(5, 2, enc_field(1, 0, 1)) + enc_field(11, 2, b"")
    hds = HdsServer(initial=specifier([cluster_check("g", [grpc_check], [(None, [serving.port, not_serving.port])])],
                                      interval_ms=100))
    servers.append(hds)
    admin = free_port()
    start(procs, config(admin, hds.port), admin)
    want = {f"127.0.0.1:{serving.port}": HEALTHY, f"127.0.0.1:{not_serving.port}": UNHEALTHY}
    wait_for(lambda: health(hds.last(), "g") == want and stat(admin, "cluster.g.health_check.success") >= 1,
             10, "the gRPC checks' results")
    assert stat(admin, "cluster.g.health_check.failure") >= 1


def test_upstream_bind_config(procs, servers):
    """upstream_bind_config.source_address (Kuma sets it with its
    transparent proxy): the checks connect from it; an address that is no
    IP refuses the specifier."""
    peers = []
    lsock = socket.socket()
    lsock.bind(("127.0.0.1", 0))
    lsock.listen(16)
    lsock.settimeout(0.2)
    done = threading.Event()

    def accept():
        while not done.is_set():
            try:
                c, addr = lsock.accept()
            except OSError:
                continue
            peers.append(addr[0])
            c.close()
    t = threading.Thread(target=accept, daemon=True)
    t.start()
    try:
        def bound(addr):
            sa = enc_field(2, 2, addr.encode()) + enc_field(3, 0, 0)
            return cluster_check("b", [tcp_check()], [(None, [lsock.getsockname()[1]])]) + enc_field(5, 2, enc_field(1, 2, sa))
        hds = HdsServer(initial=specifier([bound("127.0.0.2")], interval_ms=100))
        servers.append(hds)
        admin = free_port()
        start(procs, config(admin, hds.port), admin)
        wait_for(lambda: health(hds.last(), "b") == {f"127.0.0.1:{lsock.getsockname()[1]}": HEALTHY}, 10, "healthy")
        assert peers and set(peers) == {"127.0.0.2"}, peers
        hds.send(1, specifier([bound("not-an-ip")], interval_ms=100))
        wait_for(lambda: stat(admin, "hds_delegate.errors") == 1, 10, "the bad source address refused")
        assert stat(admin, "hds_delegate.updates") == 1
    finally:
        done.set()
        t.join()
        lsock.close()


def test_kuma_shaped_specifier(procs, servers, tmp_path):
    """What Kuma's HDS server sends: an HTTP check of the proxy's own admin
    /ready (over TCP, or its admin socket, a pipe), and TCP checks of the
    inbounds, with no_traffic_interval."""
    up = Upstream("a")
    procs.append(up)
    path = str(tmp_path / "admin.sock")
    usock = socket.socket(socket.AF_UNIX)
    usock.bind(path)
    usock.listen(16)
    try:
        admin = free_port()
        pipe_ep = enc_field(1, 2, enc_field(2, 2, enc_field(1, 2, path.encode())))
        hds = HdsServer(initial=specifier([
            cluster_check("kuma:envoy:admin", [http_check("/ready", no_traffic_ms=200)], [(None, [admin])]),
            cluster_check("pipe", [tcp_check()], [(None, [pipe_ep])]),
            cluster_check("localhost:%d" % up.port, [tcp_check()], [(None, [up.port])]),
        ], interval_ms=100))
        servers.append(hds)
        start(procs, config(admin, hds.port), admin)
        want = {"kuma:envoy:admin": {f"127.0.0.1:{admin}": HEALTHY}, "pipe": {f"unix:{path}": HEALTHY},
                "localhost:%d" % up.port: {f"127.0.0.1:{up.port}": HEALTHY}}
        wait_for(lambda: {k: health(hds.last(), k) for k in want} == want, 10, "every check healthy")
    finally:
        usock.close()
