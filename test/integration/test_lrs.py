"""cluster_manager.load_stats_config: Envoy's load reporting service client
against a python3-grpcio LRS server on loopback implementing
envoy.service.load_stats.v3.LoadReportingService/StreamLoadStats (the
messages encoded and decoded here from the wire format by hand). SHARP
opens the stream at start and sends a LoadStatsRequest with the node at
once; each LoadStatsResponse names the clusters to report (or
send_all_clusters) and the interval; every interval SHARP sends one
ClusterStats per such cluster: per locality the requests completed
without a 5xx, failed, issued since the previous report and in progress
now, the requests maintenance mode dropped, and the interval measured. A
stream that ends is opened again 5 s later (Envoy's fixed retry delay),
and what happened meanwhile is in its first report."""
import concurrent.futures
import json
import queue
import textwrap
import threading
import time
import urllib.error
import urllib.request

import grpc
import pytest

from conftest import SLOW, Sharp, Upstream, dead_port, free_port, stat, validate_config, wait_for
from test_metrics_service import CORPUS, fields

IDENT = lambda b: b  # noqa: E731
FEATURE = "envoy.lrs.supports_send_all_clusters"


# ---- the wire format, by hand ----

def enc_varint(v):
    out = b""
    while True:
        b = v & 0x7F
        v >>= 7
        if v:
            out += bytes([b | 0x80])
        else:
            return out + bytes([b])


def enc_field(num, wt, payload):
    key = enc_varint(num << 3 | wt)
    if wt == 0:
        return key + enc_varint(payload)
    return key + enc_varint(len(payload)) + payload


def response(clusters=(), interval_ms=300, send_all=False, endpoints=False):
    """A LoadStatsResponse."""
    out = b"".join(enc_field(1, 2, c.encode()) for c in clusters)
    dur = enc_field(1, 0, interval_ms // 1000) + enc_field(2, 0, interval_ms % 1000 * 1000000)
    out += enc_field(2, 2, dur)
    if endpoints:
        out += enc_field(3, 0, 1)
    if send_all:
        out += enc_field(4, 0, 1)
    return out


def s(b):
    return b.decode()


def decode_request(buf):
    f = fields(buf)
    node = None
    if 1 in f:
        nf = fields(f[1][0])
        node = {"id": s(nf.get(1, [b""])[0]), "cluster": s(nf.get(2, [b""])[0]),
                "client_features": [s(x) for x in nf.get(10, [])]}
    stats = []
    for cs in f.get(2, []):
        cf = fields(cs)
        d = fields(cf.get(4, [b""])[0])
        c = {"name": s(cf[1][0]), "service_name": s(cf.get(6, [b""])[0]),
             "dropped": cf.get(3, [0])[0],
             "interval": d.get(1, [0])[0] + d.get(2, [0])[0] / 1e9, "localities": []}
        for ls in cf.get(2, []):
            lf = fields(ls)
            loc = fields(lf.get(1, [b""])[0])
            eps = []
            for es in lf.get(7, []):
                ef = fields(es)
                sa = fields(fields(ef[1][0])[1][0])
                eps.append({"address": f"{s(sa[2][0])}:{sa.get(3, [0])[0]}",
                            "success": ef.get(2, [0])[0], "in_progress": ef.get(3, [0])[0],
                            "error": ef.get(4, [0])[0], "issued": ef.get(7, [0])[0]})
            c["localities"].append({
                "locality": tuple(s(loc.get(i, [b""])[0]) for i in (1, 2, 3)),
                "priority": lf.get(6, [0])[0],
                "success": lf.get(2, [0])[0], "in_progress": lf.get(3, [0])[0],
                "error": lf.get(4, [0])[0], "issued": lf.get(8, [0])[0], "endpoints": eps})
        stats.append(c)
    return {"node": node, "stats": stats}


# ---- the LRS server ----

class LrsServer:
    """StreamLoadStats: records every request (stream number, arrival time,
    decoded) and sends what the test queues on a stream; `initial`, if
    set, is sent on each new stream once its first request came."""

    def __init__(self, port=0, initial=None):
        self.requests = []
        self.queues = {}
        self.initial = initial
        self.streams = 0
        self.lock = threading.Lock()
        self.server = grpc.server(concurrent.futures.ThreadPoolExecutor(max_workers=8))
        self.server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(
            "envoy.service.load_stats.v3.LoadReportingService",
            {"StreamLoadStats": grpc.stream_stream_rpc_method_handler(self._stream, IDENT, IDENT)}),))
        self.port = self.server.add_insecure_port(f"127.0.0.1:{port}")
        assert self.port
        self.server.start()

    def _stream(self, requests, ctx):
        q = queue.Queue()
        with self.lock:
            self.streams += 1
            n = self.streams
            self.queues[n] = q

        def read():
            first = True
            try:
                for m in requests:
                    with self.lock:
                        self.requests.append((n, time.monotonic(), decode_request(m)))
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

    def snapshot(self, stream=None):
        with self.lock:
            return [(n, t, r) for n, t, r in self.requests if stream is None or n == stream]

    def stop(self):
        self.server.stop(0).wait(5)


@pytest.fixture
def servers():
    started = []
    yield started
    for x in started:
        x.stop()


def cluster(name, endpoints, extra=""):
    """endpoints: [(port, (region, zone, sub_zone) or None, priority)]"""
    eps = ""
    for port, loc, prio in endpoints:
        eps += "      - "
        if loc:
            eps += f"locality: {{ region: {loc[0]}, zone: {loc[1]}, sub_zone: {loc[2]} }}\n        "
        eps += (f"priority: {prio}\n        lb_endpoints:\n        - endpoint: {{ address: {{ socket_address: "
                f"{{ address: 127.0.0.1, port_value: {port} }} }} }}\n")
    return (f"  - name: {name}\n    type: STATIC\n    connect_timeout: 1s\n{textwrap.indent(extra, '    ')}"
            f"    load_assignment:\n      cluster_name: {name}\n      endpoints:\n{eps}")


H2 = textwrap.dedent("""\
    typed_extension_protocol_options:
      envoy.extensions.upstreams.http.v3.HttpProtocolOptions:
        "@type": type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions
        explicit_http_config: { http2_protocol_options: {} }
    """)


def config(listen, admin, up_a, up_b, lrs_port, lrs_extra="", load_stats=None, extra_clusters="", extra_routes=""):
    if load_stats is None:
        load_stats = textwrap.dedent(f"""\
            load_stats_config:
              api_type: GRPC
              transport_api_version: V3
              grpc_services:
              - envoy_grpc: {{ cluster_name: lrs_cluster }}
            {lrs_extra}""")
    clusters = (cluster("backend", [(up_a, ("r1", "z1", ""), 0), (up_b, ("r1", "z2", "s2"), 0)])
                + cluster("other", [(up_a, None, 0)])
                + cluster("maint", [(up_a, None, 0)])
                + cluster("lrs_cluster", [(lrs_port, None, 0)], H2) + extra_clusters)
    text = textwrap.dedent(f"""\
        node: {{ id: node-1, cluster: cluster-1 }}
        admin:
          address: {{ socket_address: {{ address: 127.0.0.1, port_value: {admin} }} }}
        layered_runtime:
          layers:
          - name: static
            static_layer: {{ upstream.maintenance_mode.maint: 100 }}
          - name: admin
            admin_layer: {{}}
        cluster_manager:
        """) + textwrap.indent(load_stats.rstrip("\n") + "\n", "  ") + textwrap.dedent(f"""\
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
                    - name: all
                      domains: ["*"]
                      routes:
                      - match: {{ prefix: "/other" }}
                        route: {{ cluster: other, prefix_rewrite: "/" }}
                      - match: {{ prefix: "/maint" }}
                        route: {{ cluster: maint }}
                      - match: {{ prefix: "/" }}
                        route: {{ cluster: backend, timeout: 20s }}
                  http_filters:
                  - name: envoy.filters.http.router
                    typed_config:
                      "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router
          clusters:
        """) + clusters
    if extra_routes:
        last = '- match: { prefix: "/" }'
        at = text.index(last)
        indent = at - text.rindex("\n", 0, at) - 1
        text = text[:at] + textwrap.indent(extra_routes, " " * indent).lstrip() + "\n" + " " * indent + text[at:]
    return text


@pytest.fixture
def two_upstreams(procs):
    a, b = Upstream("a"), Upstream("b")
    procs.extend([a, b])
    return a, b


def start(procs, yaml_text, admin):
    sh = Sharp(yaml_text)
    procs.append(sh)
    sh.wait_ready(admin)
    return sh


def get(listen, path, n=1):
    codes = []
    for _ in range(n):
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{listen}{path}", timeout=20) as r:
                r.read()
                codes.append(r.status)
        except urllib.error.HTTPError as e:
            codes.append(e.code)
    return codes


def totals(reqs, name):
    """Sums over every report of cluster `name`."""
    t = {"success": 0, "error": 0, "issued": 0, "dropped": 0}
    for _, _, r in reqs:
        for c in r["stats"]:
            if c["name"] == name:
                t["dropped"] += c["dropped"]
                for ls in c["localities"]:
                    for k in ("success", "error", "issued"):
                        t[k] += ls[k]
    return t


def reporting(lrs):
    """A report with clusters came: the response has been taken."""
    return any(r["stats"] for _, _, r in lrs.snapshot())


# ---- configuration ----

def test_config_loads_and_envoy_refusals():
    listen, admin = free_port(), free_port()
    rc, out = validate_config(config(listen, admin, 1, 2, 3))
    assert rc == 0, out

    def refused(load_stats, msg, extra_clusters=""):
        rc, out = validate_config(config(listen, admin, 1, 2, 3, load_stats=load_stats,
                                         extra_clusters=extra_clusters))
        assert rc != 0 and msg in out, out
    refused("load_stats_config: { api_type: GRPC, transport_api_version: V3 }",
            "cluster_manager.load_stats_config: API configs must have either a gRPC service or a cluster name defined")
    refused("load_stats_config: { api_type: GRPC, grpc_services: [{ envoy_grpc: { cluster_name: lrs_cluster } }] }",
            "cluster_manager.load_stats_config.transport_api_version: V2 (and AUTO) xDS transport protocol versions "
            "are deprecated")
    refused("load_stats_config: { api_type: REST, transport_api_version: V3, "
            "grpc_services: [{ envoy_grpc: { cluster_name: lrs_cluster } }] }",
            "if not a gRPC type, must not have a gRPC service specified")
    refused("load_stats_config: { api_type: GRPC, transport_api_version: V3, "
            "grpc_services: [{ envoy_grpc: { cluster_name: lrs_cluster } }, "
            "{ envoy_grpc: { cluster_name: lrs_cluster } }] }",
            "must have a single gRPC service specified")
    refused("load_stats_config: { api_type: GRPC, transport_api_version: V3, "
            "grpc_services: [{ envoy_grpc: { cluster_name: nope } }] }",
            "must have a statically defined non-EDS cluster: 'nope' does not exist")
    refused("load_stats_config: { api_type: GRPC, transport_api_version: V3, "
            "grpc_services: [{ envoy_grpc: { cluster_name: other } }] }",
            "gRPC client cluster 'other' does not use HTTP/2")
    # an aggregate cluster is no primary cluster: refused as Envoy refuses it
    agg = ("  - name: agg\n    connect_timeout: 1s\n    lb_policy: CLUSTER_PROVIDED\n    cluster_type:\n"
           "      name: envoy.clusters.aggregate\n      typed_config:\n"
           '        "@type": type.googleapis.com/envoy.extensions.clusters.aggregate.v3.ClusterConfig\n'
           "        clusters: [lrs_cluster]\n")
    refused("load_stats_config: { api_type: GRPC, transport_api_version: V3, "
            "grpc_services: [{ envoy_grpc: { cluster_name: agg } }] }",
            "cluster_manager.load_stats_config.grpc_services[0].envoy_grpc.cluster_name: "
            "envoy.config.core.v3.ApiConfigSource must have a statically defined non-EDS cluster: 'agg' does not "
            "exist, was added via api, or is an EDS cluster (it is an aggregate cluster, which is not supported "
            "here)", extra_clusters=agg)
    refused("load_stats_config: { api_type: GRPC, transport_api_version: V3, config_validators: "
            "[{ name: x, typed_config: { '@type': type.googleapis.com/google.protobuf.Empty } }], "
            "grpc_services: [{ envoy_grpc: { cluster_name: lrs_cluster } }] }",
            "config_validators")


def test_corpus_configs():
    """The Envoy example loads once it names the V3 transport, which the
    corpus copy does not (Envoy refuses AUTO, and the example upstream now
    sets V3); Istio's golden file has no gRPC service, which Envoy refuses
    when it starts the load reporter."""
    with open(f"{CORPUS}/examples__load-reporting-service__envoy.yaml") as f:
        example = f.read()
    rc, out = validate_config(example)
    assert rc != 0 and "load_stats_config.transport_api_version: V2 (and AUTO)" in out, out
    fixed = example.replace("    api_type: GRPC\n", "    api_type: GRPC\n    transport_api_version: V3\n")
    assert fixed != example
    rc, out = validate_config(fixed)
    assert rc == 0, out
    with open(f"{CORPUS}/istio__pkg__bootstrap__testdata__lrs_golden.json") as f:
        rc, out = validate_config(f.read(), suffix=".json")
    assert rc != 0 and "API configs must have either a gRPC service or a cluster name defined" in out, out


# ---- behaviour ----

def test_node_interval_counts_and_named_clusters(procs, two_upstreams, servers):
    a, b = two_upstreams
    lrs = LrsServer(initial=response(["backend", "maint", "missing"], interval_ms=300))
    servers.append(lrs)
    listen, admin = free_port(), free_port()
    start(procs, config(listen, admin, a.port, b.port, lrs.port), admin)
    first = wait_for(lambda: lrs.snapshot(), 10, "the first LoadStatsRequest")[0][2]
    # the first request: the node, Envoy's client feature, nothing to report yet
    assert first["node"] == {"id": "node-1", "cluster": "cluster-1", "client_features": [FEATURE]}
    assert first["stats"] == []
    # the requests after the response: the clusters' counts start from zero there
    wait_for(lambda: reporting(lrs), 10, "the first report of the clusters")
    assert get(listen, "/", 6) == [200] * 6
    assert get(listen, "/status/503", 2) == [503] * 2
    assert get(listen, "/other/", 3) == [200] * 3
    assert get(listen, "/maint", 2) == [503] * 2
    wait_for(lambda: totals(lrs.snapshot(), "backend")["issued"] == 8, 10, "the requests reported")
    n0 = len(lrs.snapshot())
    wait_for(lambda: len(lrs.snapshot()) >= n0 + 4, 10, "four more reports")
    reqs = lrs.snapshot()
    # every request carries the node
    assert all(r["node"] and r["node"]["id"] == "node-1" for _, _, r in reqs)
    # only the named clusters that exist; each report has both
    for _, _, r in reqs[1:]:
        assert sorted(c["name"] for c in r["stats"]) == ["backend", "maint"], r
    # deltas: summed over the reports, the requests sent
    t = totals(reqs, "backend")
    assert t == {"success": 6, "error": 2, "issued": 8, "dropped": 0}, t
    assert totals(reqs, "maint") == {"success": 0, "error": 0, "issued": 0, "dropped": 2}
    # localities of the backend: r1/z1 and r1/z2/s2 at priority 0
    locs = {}
    for _, _, r in reqs:
        for c in r["stats"]:
            for ls in c["localities"] if c["name"] == "backend" else []:
                assert ls["priority"] == 0
                assert ls["endpoints"] == []
                locs[ls["locality"]] = locs.get(ls["locality"], 0) + ls["issued"]
    # each worker balances on its own: both localities, not necessarily 4 and 4
    assert set(locs) == {("r1", "z1", ""), ("r1", "z2", "s2")} and sum(locs.values()) == 8, locs
    # reports at the interval the server asked for, which they measure
    times = [t for _, t, _ in reqs[2:]]
    gaps = [y - x for x, y in zip(times, times[1:])]
    assert 0.25 < sum(gaps) / len(gaps) < 0.3 + 0.3 * SLOW, gaps
    for _, _, r in reqs[2:]:
        for c in r["stats"]:
            assert 0.29 < c["interval"] < 0.3 + 0.5 * SLOW, c
    # quiet intervals report the clusters with no localities
    assert any(all(not c["localities"] for c in r["stats"]) for _, _, r in reqs[-2:])
    assert stat(admin, "load_reporter.requests") == 1
    # (a report may go out between the snapshot and this read)
    assert len(reqs) <= stat(admin, "load_reporter.responses") <= len(reqs) + 3
    assert stat(admin, "load_reporter.errors") == 0


def test_in_progress_endpoints_and_send_all_clusters(procs, two_upstreams, servers):
    a, b = two_upstreams
    lrs = LrsServer()
    servers.append(lrs)
    listen, admin = free_port(), free_port()
    start(procs, config(listen, admin, a.port, b.port, lrs.port), admin)
    wait_for(lambda: lrs.snapshot(), 10, "the first LoadStatsRequest")
    # no response yet: no reports either
    assert get(listen, "/", 2) == [200, 200]
    lrs.send(1, response(send_all=True, interval_ms=200, endpoints=True))
    wait_for(lambda: len(lrs.snapshot()) >= 3, 10, "reports")
    names = {c["name"] for _, _, r in lrs.snapshot()[1:] for c in r["stats"]}
    assert names == {"backend", "other", "maint", "lrs_cluster"}
    # a newly tracked cluster starts from zero: the two earlier requests are not reported
    slow = threading.Thread(target=get, args=(listen, "/work?ms=2500"))
    slow.start()
    try:
        def in_progress():
            for _, _, r in lrs.snapshot():
                for c in r["stats"]:
                    for ls in c["localities"] if c["name"] == "backend" else []:
                        if ls["in_progress"] == 1:
                            return ls
        ls = wait_for(in_progress, 10, "a report with the request in progress")
        assert len(ls["endpoints"]) == 1
        ep = ls["endpoints"][0]
        assert ep["in_progress"] == 1 and ep["address"] in (f"127.0.0.1:{a.port}", f"127.0.0.1:{b.port}"), ep
    finally:
        slow.join()
    wait_for(lambda: totals(lrs.snapshot(), "backend")["success"] == 1, 10, "the slow request completed")
    assert totals(lrs.snapshot(), "backend")["issued"] == 1


def test_server_goes_away_and_comes_back(procs, two_upstreams, servers):
    a, b = two_upstreams
    lrs = LrsServer(initial=response(["backend"], interval_ms=200))
    servers.append(lrs)
    port = lrs.port
    listen, admin = free_port(), free_port()
    start(procs, config(listen, admin, a.port, b.port, lrs.port), admin)
    wait_for(lambda: len(lrs.snapshot()) >= 2, 10, "reports")
    assert get(listen, "/", 3) == [200] * 3
    wait_for(lambda: totals(lrs.snapshot(), "backend")["success"] == 3, 10, "the requests reported")
    lrs.stop()
    servers.remove(lrs)
    wait_for(lambda: stat(admin, "load_reporter.errors") >= 1, 10, "the stream's end counted")
    # what happens while the server is away is in the next stream's first report
    assert get(listen, "/", 4) == [200] * 4
    t_down = time.monotonic()
    back = LrsServer(port=port, initial=response(["backend"], interval_ms=200))
    servers.append(back)
    first = wait_for(lambda: back.snapshot(), 15, "a new stream")
    n, t, r = first[0]
    assert t - t_down > 2, "Envoy's fixed retry delay is 5 s"
    assert r["node"]["id"] == "node-1" and FEATURE in r["node"]["client_features"]
    assert [c["name"] for c in r["stats"]] == ["backend"]
    assert totals(first[:1], "backend")["success"] == 4
    wait_for(lambda: len(back.snapshot()) >= 3, 10, "reports on the new stream")
    assert stat(admin, "load_reporter.retries") >= 1
    assert stat(admin, "load_reporter.requests") >= 2


def test_dead_server_at_start_costs_nothing(procs, two_upstreams):
    a, b = two_upstreams
    listen, admin = free_port(), free_port()
    start(procs, config(listen, admin, a.port, b.port, dead_port()), admin)
    assert get(listen, "/", 3) == [200] * 3
    wait_for(lambda: stat(admin, "load_reporter.errors") >= 1, 10, "the failed stream counted")
    # as Envoy, the report the stream opened with counts as sent
    wait_for(lambda: stat(admin, "load_reporter.retries") >= 1, 10, "a retry 5 s later")
    assert stat(admin, "load_reporter.requests") == 0
    assert get(listen, "/", 2) == [200] * 2



def test_malformed_response_ends_the_stream(procs, two_upstreams, servers):
    """A LoadStatsResponse that does not decode ends the stream (INTERNAL),
    which is counted and opened again later; traffic is not affected."""
    a, b = two_upstreams
    lrs = LrsServer(initial=b"\xff\xff\xff")
    servers.append(lrs)
    listen, admin = free_port(), free_port()
    start(procs, config(listen, admin, a.port, b.port, lrs.port), admin)
    wait_for(lambda: stat(admin, "load_reporter.errors") >= 1, 10, "the stream's end counted")
    assert stat(admin, "load_reporter.requests") == 0
    assert get(listen, "/", 2) == [200, 200]
    wait_for(lambda: lrs.streams >= 2, 15, "a new stream 5 s later")


def test_eds_cluster_service_name(procs, two_upstreams, servers, tmp_path):
    """An EDS cluster's report names its eds_cluster_config.service_name
    (cluster_service_name); its hosts' localities come from the
    ClusterLoadAssignment."""
    a, b = two_upstreams
    eds = tmp_path / "eds.json"
    eds.write_text(json.dumps({"version_info": "1", "resources": [{
        "@type": "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment",
        "cluster_name": "svc-a",
        "endpoints": [{"locality": {"region": "eu", "zone": "eu-1"}, "lb_endpoints": [
            {"endpoint": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": a.port}}}}]}]}]}))
    extra = textwrap.indent(textwrap.dedent(f"""\
        - name: eds_backend
          type: EDS
          connect_timeout: 1s
          eds_cluster_config:
            service_name: svc-a
            eds_config: {{ path_config_source: {{ path: {eds} }} }}
        """), "  ")
    routes = '- match: { prefix: "/eds" }\n  route: { cluster: eds_backend, prefix_rewrite: "/" }'
    lrs = LrsServer(initial=response(["eds_backend", "other"], interval_ms=200))
    servers.append(lrs)
    listen, admin = free_port(), free_port()
    start(procs, config(listen, admin, a.port, b.port, lrs.port, extra_clusters=extra, extra_routes=routes), admin)
    wait_for(lambda: reporting(lrs), 10, "the first report of the clusters")
    assert get(listen, "/eds", 3) == [200] * 3
    wait_for(lambda: totals(lrs.snapshot(), "eds_backend")["success"] == 3, 10, "the EDS cluster's requests")
    cs = [c for _, _, r in lrs.snapshot() for c in r["stats"]]
    assert {c["service_name"] for c in cs if c["name"] == "eds_backend"} == {"svc-a"}
    assert {c["service_name"] for c in cs if c["name"] == "other"} == {""}
    locs = {ls["locality"] for c in cs if c["name"] == "eds_backend" for ls in c["localities"]}
    assert locs == {("eu", "eu-1", "")}


def test_response_naming_many_clusters(procs, two_upstreams, servers):
    """A response naming 200000 clusters (repeats included) costs little:
    the reports name each existing cluster once, and the proxy answers."""
    a, b = two_upstreams
    names = [f"c{i}" for i in range(100000)] * 2 + ["backend", "backend"]
    lrs = LrsServer(initial=response(names, interval_ms=200))
    servers.append(lrs)
    listen, admin = free_port(), free_port()
    start(procs, config(listen, admin, a.port, b.port, lrs.port), admin)
    wait_for(lambda: len(lrs.snapshot()) >= 4, 10, "reports")
    for _, _, r in lrs.snapshot()[1:]:
        assert [c["name"] for c in r["stats"]] == ["backend"], r
    assert get(listen, "/", 2) == [200, 200]
    assert stat(admin, "load_reporter.errors") == 0


def test_out_of_range_interval_refused(procs, two_upstreams, servers):
    """A load_reporting_interval past what Envoy's DurationUtil converts
    (9223372036 s) is refused, as Envoy's conversion throws: no epoch starts
    (requests not counted, no cluster reported), nothing overflows, and a
    valid response afterwards starts reporting."""
    a, b = two_upstreams
    bad = enc_field(1, 2, b"backend") + enc_field(2, 2, enc_field(1, 0, 2 ** 62))
    lrs = LrsServer(initial=bad)
    servers.append(lrs)
    listen, admin = free_port(), free_port()
    s = start(procs, config(listen, admin, a.port, b.port, lrs.port), admin)
    wait_for(lambda: lrs.snapshot(), 10, "the first LoadStatsRequest")
    wait_for(lambda: "load_reporting_interval" in s.output(), 10, "the refusal logged")
    assert stat(admin, "load_reporter.requests") == 0
    assert get(listen, "/", 2) == [200, 200]
    assert all(r["stats"] == [] for _, _, r in lrs.snapshot())
    lrs.send(1, response(["backend"], interval_ms=200))
    wait_for(lambda: reporting(lrs), 10, "reports of backend")
    assert stat(admin, "load_reporter.requests") == 1
    assert stat(admin, "load_reporter.errors") == 0
