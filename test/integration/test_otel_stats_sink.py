"""Bootstrap stats_sinks: envoy.stat_sinks.open_telemetry, Envoy's
OpenTelemetry stats sink, exporting to a python3-grpcio collector that
implements opentelemetry.proto.collector.metrics.v1.MetricsService/Export
on loopback. At every stats flush SHARP makes one unary Export call: one
ResourceMetrics (Envoy's telemetry.sdk.* resource attributes, plus those of
static_config resource detectors) with one ScopeMetrics holding a Metric
per used gauge (Gauge), counter (monotonic Sum, CUMULATIVE or DELTA) and
histogram (Histogram with Envoy's bucket bounds), named by the
tag-extracted name with the tags as attributes (or the full name), after
the optional prefix. The requests are decoded here from the wire format by
hand. A collector that is down gets the flushes once it is up."""
import concurrent.futures
import os
import struct
import subprocess
import textwrap
import threading
import time
import urllib.request

import grpc
import pytest

from conftest import SHARP, SLOW, Sharp, bootstrap_yaml, free_port, stat, validate_config, wait_for

FLUSH = "0.2s"
IDENT = lambda b: b  # noqa: E731
DELTA, CUMULATIVE = 1, 2
CORPUS = next((d for d in (os.path.normpath(os.path.join(os.path.dirname(__file__), "..", "..", "..", "shared",
                                                        "envoy-corpus")), "/work/shared/envoy-corpus")
               if os.path.isdir(d)), "/work/shared/envoy-corpus")
DEFAULT_BOUNDS = [0.5, 1, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000, 30000, 60000, 300000, 600000,
                  1800000, 3600000]


# ---- the protobuf wire format, by hand ----

def fields(buf):
    """{field number: [value, ...]}: varints as int, 64-bit as bytes,
    length-delimited as bytes."""
    out, i = {}, 0
    while i < len(buf):
        key, i = varint(buf, i)
        num, wt = key >> 3, key & 7
        if wt == 0:
            v, i = varint(buf, i)
        elif wt == 1:
            v, i = buf[i:i + 8], i + 8
        elif wt == 2:
            n, i = varint(buf, i)
            v, i = buf[i:i + n], i + n
        elif wt == 5:
            v, i = buf[i:i + 4], i + 4
        else:
            raise ValueError(f"wire type {wt}")
        out.setdefault(num, []).append(v)
    return out


def varint(buf, i):
    v = shift = 0
    while True:
        b = buf[i]
        i += 1
        v |= (b & 0x7F) << shift
        shift += 7
        if not b & 0x80:
            return v, i


def u64(b):
    return struct.unpack("<Q", b)[0]


def i64(b):
    return struct.unpack("<q", b)[0]


def dbl(b):
    return struct.unpack("<d", b)[0]


def packed(chunks, size, fmt):
    out = []
    for c in chunks:
        out += [struct.unpack(fmt, c[i:i + size])[0] for i in range(0, len(c), size)]
    return out


def attrs(kvs):
    out = {}
    for kv in kvs:
        f = fields(kv)
        out[f[1][0].decode()] = fields(f[2][0])[1][0].decode()
    return out


def number_point(buf):
    f = fields(buf)
    return {"attrs": attrs(f.get(7, [])), "start": u64(f[2][0]) if 2 in f else 0, "time": u64(f[3][0]),
            "value": i64(f[6][0]) if 6 in f else None}


def hist_point(buf):
    f = fields(buf)
    return {"attrs": attrs(f.get(9, [])), "start": u64(f[2][0]) if 2 in f else 0, "time": u64(f[3][0]),
            "count": u64(f[4][0]) if 4 in f else 0, "sum": dbl(f[5][0]) if 5 in f else None,
            "buckets": packed(f.get(6, []), 8, "<Q"), "bounds": packed(f.get(7, []), 8, "<d")}


def decode_metric(buf):
    f = fields(buf)
    m = {"name": f[1][0].decode()}
    if 5 in f:
        m["type"] = "gauge"
        m["points"] = [number_point(p) for p in fields(f[5][0]).get(1, [])]
    elif 7 in f:
        sf = fields(f[7][0])
        m["type"] = "sum"
        m["points"] = [number_point(p) for p in sf.get(1, [])]
        m["temporality"] = sf.get(2, [0])[0]
        m["monotonic"] = bool(sf.get(3, [0])[0])
    elif 9 in f:
        hf = fields(f[9][0])
        m["type"] = "histogram"
        m["points"] = [hist_point(p) for p in hf.get(1, [])]
        m["temporality"] = hf.get(2, [0])[0]
    return m


def decode(buf):
    """An ExportMetricsServiceRequest: {"resource": {attrs}, "metrics":
    [metric]} (one ResourceMetrics of one ScopeMetrics, as Envoy sends)."""
    f = fields(buf)
    rms = f.get(1, [])
    if not rms:
        return {"resource": None, "metrics": []}
    assert len(rms) == 1
    rf = fields(rms[0])
    resource = attrs(fields(rf[1][0]).get(1, [])) if 1 in rf else {}
    sms = rf.get(2, [])
    assert len(sms) == 1
    sf = fields(sms[0])
    assert 1 not in sf, "no instrumentation scope, as Envoy"
    return {"resource": resource, "metrics": [decode_metric(m) for m in sf.get(2, [])]}


# ---- the collector ----

class Collector:
    """MetricsService/Export: records every request and its metadata."""

    def __init__(self, port=0):
        self.requests = []
        self.metadata = []
        self.lock = threading.Lock()
        self.server = grpc.server(concurrent.futures.ThreadPoolExecutor(max_workers=4))
        self.server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(
            "opentelemetry.proto.collector.metrics.v1.MetricsService",
            {"Export": grpc.unary_unary_rpc_method_handler(self._export, IDENT, IDENT)}),))
        self.port = self.server.add_insecure_port(f"127.0.0.1:{port}")
        assert self.port
        self.server.start()

    def _export(self, req, ctx):
        d = decode(req)
        with self.lock:
            self.requests.append(d)
            self.metadata.append(dict(ctx.invocation_metadata()))
        return b""

    def snapshot(self):
        with self.lock:
            return list(self.requests)

    def stop(self):
        self.server.stop(0).wait(5)


@pytest.fixture
def collectors():
    started = []
    yield started
    for c in started:
        c.stop()


def config(listen, admin, backend_port, collector_port, sink_extra="",
           grpc_service="{ envoy_grpc: { cluster_name: otel_collector } }"):
    collector = textwrap.indent(textwrap.dedent(f"""\
        - name: otel_collector
          type: STATIC
          connect_timeout: 1s
          typed_extension_protocol_options:
            envoy.extensions.upstreams.http.v3.HttpProtocolOptions:
              "@type": type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions
              explicit_http_config: {{ http2_protocol_options: {{}} }}
          load_assignment:
            cluster_name: otel_collector
            endpoints:
            - lb_endpoints:
              - endpoint: {{ address: {{ socket_address: {{ address: 127.0.0.1, port_value: {collector_port} }} }} }}
        """), "  ")
    sink = textwrap.dedent(f"""\
        stats_flush_interval: {FLUSH}
        stats_sinks:
        - name: envoy.stat_sinks.open_telemetry
          typed_config:
            "@type": type.googleapis.com/envoy.extensions.stat_sinks.open_telemetry.v3.SinkConfig
            grpc_service: {grpc_service}
        """) + textwrap.indent(sink_extra, "    ")
    return ("node: { id: node-1, cluster: cluster-1 }\n"
            + bootstrap_yaml(listen, admin, {"backend": [backend_port]}) + collector + sink)


def start(procs, yaml_text, admin):
    s = Sharp(yaml_text)
    procs.append(s)
    s.wait_ready(admin)
    return s


def get(listen, n):
    for _ in range(n):
        with urllib.request.urlopen(f"http://127.0.0.1:{listen}/", timeout=5) as r:
            assert r.status == 200
            r.read()


def metrics(req, name, attrs_=None):
    return [m for m in req["metrics"] if m["name"] == name
            and (attrs_ is None or (m["points"] and m["points"][0]["attrs"] == attrs_))]


def test_config_loads():
    listen, admin = free_port(), free_port()
    rc, out = validate_config(config(listen, admin, 1, 2))
    assert rc == 0, out


def test_default_tag_extracted_cumulative(procs, upstream, collectors):
    c = Collector()
    collectors.append(c)
    listen, admin = free_port(), free_port()
    t0 = time.time_ns()
    start(procs, config(listen, admin, upstream.port, c.port), admin)
    get(listen, 5)
    backend = {"envoy.cluster_name": "backend"}

    def rq_total_5():
        for r in c.snapshot():
            for m in metrics(r, "cluster.upstream_rq_total", backend):
                if m["points"][0]["value"] == 5:
                    return True
    wait_for(rq_total_5, 10, "a flush with cluster.upstream_rq_total{backend} == 5")
    n = len(c.snapshot())
    wait_for(lambda: len(c.snapshot()) >= n + 2, 10, "two more flushes")
    reqs = c.snapshot()
    last = reqs[-1]
    assert last["resource"]["telemetry.sdk.language"] == "cpp"
    assert last["resource"]["telemetry.sdk.name"] == "envoy"
    assert "telemetry.sdk.version" in last["resource"]
    assert "service.name" not in last["resource"]
    # order: gauges, counters, histograms
    kinds = [m["type"] for m in last["metrics"]]
    assert kinds == sorted(kinds, key=["gauge", "sum", "histogram"].index), kinds
    # tag-extracted names, tags as attributes; full names are not sent
    assert not metrics(last, "cluster.backend.upstream_rq_total")
    rq = metrics(last, "cluster.upstream_rq_total", backend)[0]
    assert rq["type"] == "sum" and rq["monotonic"] and rq["temporality"] == CUMULATIVE
    p = rq["points"][0]
    assert p["value"] == 5
    now = time.time_ns()
    assert t0 - 5e9 <= p["start"] <= p["time"] <= now + 5e9
    hcm = metrics(last, "http.downstream_rq_total", {"envoy.http_conn_manager_prefix": "ingress_http"})
    assert hcm and hcm[0]["points"][0]["value"] == 5
    g = metrics(last, "cluster.membership_total", backend)[0]
    assert g["type"] == "gauge" and g["points"][0]["value"] == 1 and g["points"][0]["start"] == 0
    # only used stats
    assert not metrics(last, "cluster.upstream_rq_retry_overflow")
    # a cumulative histogram: every request, at Envoy's default bounds
    h = metrics(last, "cluster.upstream_rq_time", backend)[0]
    assert h["type"] == "histogram" and h["temporality"] == CUMULATIVE
    hp = h["points"][0]
    assert hp["count"] == 5 and hp["sum"] is not None and hp["sum"] >= 0
    assert hp["bounds"] == DEFAULT_BOUNDS
    assert len(hp["buckets"]) == len(DEFAULT_BOUNDS) + 1 and sum(hp["buckets"]) == 5
    assert hp["start"] == p["start"]
    # cumulative points keep their start; every flush has a later time
    first = metrics(reqs[n - 1], "cluster.upstream_rq_total", backend)[0]["points"][0]
    assert first["start"] == p["start"] and first["time"] < p["time"]


def test_deltas_full_names_prefix(procs, upstream, collectors):
    c = Collector()
    collectors.append(c)
    listen, admin = free_port(), free_port()
    start(procs, config(listen, admin, upstream.port, c.port,
                        "report_counters_as_deltas: true\nreport_histograms_as_deltas: true\n"
                        "use_tag_extracted_name: false\nemit_tags_as_attributes: false\nprefix: edge\n",
                        "{ envoy_grpc: { cluster_name: otel_collector, authority: otel.example }, "
                        "initial_metadata: [{ key: x-tenant, value: t1 }] }"),
          admin)
    get(listen, 3)

    def points(name):
        return [m["points"][0] for r in c.snapshot() for m in metrics(r, name)]
    wait_for(lambda: sum(p["value"] for p in points("edge.cluster.backend.upstream_rq_total")) == 3, 10,
             "deltas adding up to 3")
    get(listen, 4)
    wait_for(lambda: sum(p["value"] for p in points("edge.cluster.backend.upstream_rq_total")) == 7, 10,
             "deltas adding up to 7")
    n = len(points("edge.cluster.backend.upstream_rq_total"))
    wait_for(lambda: len(points("edge.cluster.backend.upstream_rq_total")) > n + 1, 10, "two more flushes")
    pts = points("edge.cluster.backend.upstream_rq_total")
    assert pts[-1]["value"] == 0 and max(p["value"] for p in pts) <= 4
    # delta points: each starts where the previous one ended
    for a, b in zip(pts, pts[1:]):
        assert b["start"] == a["time"], (a, b)
        assert b["start"] < b["time"]
    reqs = c.snapshot()
    for r in reqs:
        for m in r["metrics"]:
            assert m["name"].startswith("edge."), m["name"]
            assert all(not p["attrs"] for p in m["points"])
            if m["type"] == "sum":
                assert m["temporality"] == DELTA
    hs = [m["points"][0] for r in reqs for m in metrics(r, "edge.cluster.backend.upstream_rq_time")]
    assert hs and all(m["temporality"] == DELTA for r in reqs
                      for m in metrics(r, "edge.cluster.backend.upstream_rq_time"))
    assert sum(h["count"] for h in hs) == 7
    assert c.metadata[0].get("x-tenant") == "t1"
    assert not metrics(reqs[-1], "cluster.upstream_rq_total")


def test_resource_detector_and_buckets(procs, upstream, collectors):
    c = Collector()
    collectors.append(c)
    listen, admin = free_port(), free_port()
    text = config(listen, admin, upstream.port, c.port, textwrap.dedent("""\
        resource_detectors:
        - name: envoy.tracers.opentelemetry.resource_detectors.static_config
          typed_config:
            "@type": type.googleapis.com/envoy.extensions.tracers.opentelemetry.resource_detectors.v3.StaticConfigResourceDetectorConfig
            attributes: { service.name: edge, telemetry.sdk.name: custom }
        """))
    text += textwrap.dedent("""\
        stats_config:
          histogram_bucket_settings:
          - match: { prefix: cluster.backend.upstream_rq_time }
            buckets: [1, 10, 100]
        """)
    start(procs, text, admin)
    get(listen, 2)

    def hist():
        for r in reversed(c.snapshot()):
            for m in metrics(r, "cluster.upstream_rq_time", {"envoy.cluster_name": "backend"}):
                if m["points"][0]["count"] == 2:
                    return r, m["points"][0]
    r, p = wait_for(hist, 10, "the histogram with 2 values")
    assert p["bounds"] == [1, 10, 100] and len(p["buckets"]) == 4 and sum(p["buckets"]) == 2
    assert r["resource"]["service.name"] == "edge"
    assert r["resource"]["telemetry.sdk.name"] == "custom"
    assert r["resource"]["telemetry.sdk.language"] == "cpp"


def test_collector_down_then_up(procs, upstream, collectors):
    port = free_port()
    listen, admin = free_port(), free_port()
    start(procs, config(listen, admin, upstream.port, port), admin)
    wait_for(lambda: (stat(admin, "cluster.otel_collector.upstream_cx_connect_fail") or 0) >= 2, 10,
             "two failed connections to the collector")
    get(listen, 2)
    c = Collector(port)
    collectors.append(c)
    backend = {"envoy.cluster_name": "backend"}
    wait_for(lambda: any(m["points"][0]["value"] == 2 for r in c.snapshot()
                         for m in metrics(r, "cluster.upstream_rq_total", backend)), 15,
             "the counter at 2 once the collector is up")
    c.stop()
    collectors.remove(c)
    get(listen, 1)
    c2 = Collector(port)
    collectors.append(c2)
    wait_for(lambda: any(m["points"][0]["value"] == 3 for r in c2.snapshot()
                         for m in metrics(r, "cluster.upstream_rq_total", backend)), 15,
             "the counter at 3 on the restarted collector")
    assert stat(admin, "cluster.backend.upstream_rq_total") == 3


class SilentCollector(Collector):
    """Takes Export calls and never answers them."""

    def __init__(self):
        self.release = threading.Event()
        self.calls = 0
        super().__init__()

    def _export(self, req, ctx):
        with self.lock:
            self.calls += 1
        self.release.wait(30)
        return b""

    def stop(self):
        self.release.set()
        super().stop()


def test_unanswered_exports_are_bounded(procs, upstream, collectors):
    c = SilentCollector()
    collectors.append(c)
    listen, admin = free_port(), free_port()
    s = Sharp(config(listen, admin, upstream.port, c.port), extra=("--component-log-level", "stats:debug"))
    procs.append(s)
    s.wait_ready(admin)
    wait_for(lambda: "still pending: flush dropped" in s.output(), 20, "a dropped flush")
    assert c.calls == 4
    get(listen, 2)
    assert stat(admin, "cluster.backend.upstream_rq_total") == 2


def refused(text):
    rc, out = validate_config(text)
    assert rc != 0
    return out


def test_refusals():
    listen, admin = free_port(), free_port()
    base = config(listen, admin, 1, 2)
    assert "Unknown gRPC client cluster 'nope'" in refused(base.replace("cluster_name: otel_collector } }",
                                                                       "cluster_name: nope } }"))
    assert "does not use HTTP/2" in refused(base.replace("explicit_http_config: { http2_protocol_options: {} }",
                                                         "explicit_http_config: { http_protocol_options: {} }"))
    # an aggregate cluster: the sink's gRPC client pools the cluster's own
    # hosts, so it is refused by name (it was "does not use HTTP/2")
    agg = ("  - name: agg\n    connect_timeout: 1s\n    lb_policy: CLUSTER_PROVIDED\n    cluster_type:\n"
           "      name: envoy.clusters.aggregate\n      typed_config:\n"
           '        "@type": type.googleapis.com/envoy.extensions.clusters.aggregate.v3.ClusterConfig\n'
           "        clusters: [otel_collector]\n")
    text = base.replace("cluster_name: otel_collector } }", "cluster_name: agg } }").replace(
        "stats_flush_interval:", agg + "stats_flush_interval:", 1)
    assert ("stats_sinks: gRPC client cluster 'agg' is an aggregate cluster (envoy.clusters.aggregate), which is "
            "not supported by SHARP's OpenTelemetry stats sink") in refused(text)
    out = refused(base.replace("grpc_service: { envoy_grpc: { cluster_name: otel_collector } }",
                               "grpc_service: { google_grpc: { target_uri: 127.0.0.1:1, stat_prefix: m } }"))
    assert "google_grpc" in out
    out = refused(base.replace("    grpc_service: { envoy_grpc: { cluster_name: otel_collector } }\n",
                               "    prefix: x\n"))
    assert "grpc_service" in out and "required" in out
    out = refused(config(listen, admin, 1, 2, textwrap.dedent("""\
        custom_metric_conversions:
          matcher_list:
            matchers:
            - predicate:
                single_predicate:
                  input: { name: n, typed_config: { "@type": type.googleapis.com/xds.type.matcher.v3.HttpAttributesCelMatchInput } }
                  value_match: { exact: x }
              on_match: { action: { name: a, typed_config: { "@type": type.googleapis.com/google.protobuf.Empty } } }
        """)))
    assert "custom_metric_conversions" in out
    out = refused(config(listen, admin, 1, 2, textwrap.dedent("""\
        resource_detectors:
        - name: envoy.tracers.opentelemetry.resource_detectors.environment
          typed_config:
            "@type": type.googleapis.com/envoy.extensions.tracers.opentelemetry.resource_detectors.v3.EnvironmentResourceDetectorConfig
        """)))
    assert "resource_detectors[0]" in out and "EnvironmentResourceDetectorConfig is not supported" in out
    out = refused(config(listen, admin, 1, 2, textwrap.dedent("""\
        resource_detectors:
        - name: x
          typed_config: { "@type": type.googleapis.com/google.protobuf.Empty }
        """)))
    assert "resource detector 'x'" in out and "only envoy.tracers.opentelemetry.resource_detectors.static_config" in out


CORPUS_FILES = [f"gateway__internal__xds__bootstrap__testdata__render__otel-metrics-{n}.yaml"
                for n in ("backendref", "custom-ca", "delta-temporality", "headers", "tls")]


@pytest.mark.parametrize("name", CORPUS_FILES)
def test_corpus(name):
    """Envoy Gateway's bootstraps: without a node they hit Envoy's ADS rule;
    with --service-node/--service-cluster (as Envoy Gateway runs Envoy)
    nothing refuses the sink (what remains, if anything, is the SDS file
    path of the Envoy Gateway pod)."""
    path = os.path.join(CORPUS, name)
    if not os.path.exists(path):
        pytest.skip(f"{path} is not here")
    with open(path) as f:
        text = f.read()
    rc, out = validate_config(text)
    assert rc != 0 and "node 'id' and 'cluster' are required" in out, out
    r = subprocess.run([SHARP, "--mode", "validate", "--service-node", "n", "--service-cluster", "c", "-c", name],
                       capture_output=True, text=True, timeout=20 * SLOW, cwd=CORPUS)
    out = r.stdout + r.stderr
    assert "stats_sinks" not in out and "open_telemetry" not in out and "SinkConfig" not in out, out
    assert r.returncode == 0 or "/sds/" in out, out
