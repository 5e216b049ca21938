"""Bootstrap stats_sinks: envoy.stat_sinks.metrics_service, Envoy's gRPC
metrics service sink, streaming to a python3-grpcio collector that
implements envoy.service.metrics.v3.MetricsService/StreamMetrics on
loopback. At every stats flush SHARP sends one StreamMetricsMessage: the
node identifier in the first message of a stream only, and one
io.prometheus.client.MetricFamily per used counter (value, or delta),
gauge, and histogram (SUMMARY and/or HISTOGRAM of the flush interval),
named by the full stat name or, with emit_tags_as_labels, the
tag-extracted name with the tags as labels. The messages are decoded here
from the wire format by hand. A collector that is down at start, or goes
away, gets a new stream (with the identifier) at a later flush."""
import concurrent.futures
import math
import os
import struct
import textwrap
import threading
import time
import urllib.request

import grpc
import pytest

from conftest import Sharp, bootstrap_yaml, free_port, stat, validate_config, wait_for

FLUSH = "0.2s"
IDENT = lambda b: b  # noqa: E731
COUNTER, GAUGE, SUMMARY, HISTOGRAM = 0, 1, 2, 4
CORPUS = next((d for d in (os.path.normpath(os.path.join(os.path.dirname(__file__), "..", "..", "..", "shared",
                                                        "envoy-corpus")), "/work/shared/envoy-corpus")
               if os.path.isdir(d)), "/work/shared/envoy-corpus")


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


def dbl(b):
    return struct.unpack("<d", b)[0]


def decode_metric(buf):
    f = fields(buf)
    m = {"labels": {}, "timestamp_ms": f.get(6, [None])[0]}
    for lp in f.get(1, []):
        lf = fields(lp)
        m["labels"][lf[1][0].decode()] = lf[2][0].decode()
    if 2 in f:
        m["gauge"] = dbl(fields(f[2][0])[1][0])
    if 3 in f:
        m["counter"] = dbl(fields(f[3][0])[1][0])
    if 4 in f:
        sf = fields(f[4][0])
        m["summary"] = {"count": sf.get(1, [0])[0], "sum": dbl(sf[2][0]),
                        "quantiles": [(dbl(fields(q)[1][0]), dbl(fields(q)[2][0])) for q in sf.get(3, [])]}
    if 7 in f:
        hf = fields(f[7][0])
        m["histogram"] = {"count": hf.get(1, [0])[0], "sum": dbl(hf[2][0]),
                          "buckets": [(dbl(fields(b)[2][0]), fields(b).get(1, [0])[0]) for b in hf.get(3, [])]}
    return m


def decode(buf):
    """A StreamMetricsMessage: {"node": (id, cluster) or None, "families":
    [(name, type, metric)]}."""
    f = fields(buf)
    node = None
    if 1 in f:
        nf = fields(fields(f[1][0])[1][0])
        node = (nf[1][0].decode(), nf[2][0].decode())
    fams = []
    for fam in f.get(2, []):
        ff = fields(fam)
        assert len(ff[4]) == 1, "one metric per family, as Envoy"
        fams.append((ff[1][0].decode(), ff.get(3, [0])[0], decode_metric(ff[4][0])))
    return {"node": node, "families": fams}


# ---- the collector ----

class Collector:
    """MetricsService/StreamMetrics: records every message with the number
    of the stream it came on."""

    def __init__(self, port=0):
        self.messages = []  # (stream number, decoded message)
        self.metadata = []  # per stream: the request headers
        self.streams = 0
        self.lock = threading.Lock()
        self.server = grpc.server(concurrent.futures.ThreadPoolExecutor(max_workers=4))
        self.server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(
            "envoy.service.metrics.v3.MetricsService",
            {"StreamMetrics": grpc.stream_unary_rpc_method_handler(self._stream, IDENT, IDENT)}),))
        self.port = self.server.add_insecure_port(f"127.0.0.1:{port}")
        assert self.port
        self.server.start()

    def _stream(self, requests, ctx):
        with self.lock:
            self.streams += 1
            n = self.streams
            self.metadata.append(dict(ctx.invocation_metadata()))
        for m in requests:
            d = decode(m)
            with self.lock:
                self.messages.append((n, d))
        return b""

    def snapshot(self):
        with self.lock:
            return list(self.messages)

    def stop(self):
        self.server.stop(0).wait(5)


@pytest.fixture
def collectors():
    started = []
    yield started
    for c in started:
        c.stop()


def config(listen, admin, backend_port, collector_port, sink_extra="",
           grpc_service="{ envoy_grpc: { cluster_name: metrics_collector } }"):
    """The proxy's bootstrap (a node, one listener to `backend`), a static
    HTTP/2 cluster for the collector, and the sink."""
    collector = textwrap.indent(textwrap.dedent(f"""\
        - name: metrics_collector
          type: STATIC
          connect_timeout: 1s
          typed_extension_protocol_options:
            envoy.extensions.upstreams.http.v3.HttpProtocolOptions:
              "@type": type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions
              explicit_http_config: {{ http2_protocol_options: {{}} }}
          load_assignment:
            cluster_name: metrics_collector
            endpoints:
            - lb_endpoints:
              - endpoint: {{ address: {{ socket_address: {{ address: 127.0.0.1, port_value: {collector_port} }} }} }}
        """), "  ")
    sink = textwrap.dedent(f"""\
        stats_flush_interval: {FLUSH}
        stats_sinks:
        - name: envoy.stat_sinks.metrics_service
          typed_config:
            "@type": type.googleapis.com/envoy.config.metrics.v3.MetricsServiceConfig
            transport_api_version: V3
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


def families(msg, name, type_=None):
    return [m for (n, t, m) in msg["families"] if n == name and (type_ is None or t == type_)]


def test_config_loads():
    listen, admin = free_port(), free_port()
    rc, out = validate_config(config(listen, admin, 1, 2))
    assert rc == 0, out


def test_stream_identifier_counters_gauges_histograms(procs, upstream, collectors):
    c = Collector()
    collectors.append(c)
    listen, admin = free_port(), free_port()
    start(procs, config(listen, admin, upstream.port, c.port), admin)
    get(listen, 5)

    def cumulative_5():
        for _, m in c.snapshot():
            f = families(m, "cluster.backend.upstream_rq_total", COUNTER)
            if f and f[0]["counter"] == 5:
                return True
    wait_for(cumulative_5, 10, "a flush with cluster.backend.upstream_rq_total == 5")
    msgs = wait_for(lambda: len(c.snapshot()) >= 3 and c.snapshot(), 10, "three flushes")
    # one stream; the identifier in its first message only
    assert {n for n, _ in msgs} == {1}
    assert msgs[0][1]["node"] == ("node-1", "cluster-1")
    assert all(m["node"] is None for _, m in msgs[1:])
    now_ms = time.time() * 1000
    last = msgs[-1][1]
    for name, type_, m in last["families"]:
        assert type_ in (COUNTER, GAUGE, SUMMARY, HISTOGRAM)
        assert abs(m["timestamp_ms"] - now_ms) < 60000, (name, m)
        assert not m["labels"]
    # full names, not prefixed; only used stats
    assert families(last, "cluster.backend.upstream_rq_total", COUNTER)[0]["counter"] == 5
    assert families(last, "http.ingress_http.downstream_rq_total", COUNTER)[0]["counter"] == 5
    assert families(last, "cluster.backend.membership_total", GAUGE)[0]["gauge"] == 1
    assert not families(last, "cluster.backend.upstream_rq_retry_overflow")
    # histograms: a SUMMARY and a HISTOGRAM of each flush interval, whose
    # counts add up to the requests
    summaries = [f for _, m in msgs for f in families(m, "cluster.backend.upstream_rq_time", SUMMARY)]
    hists = [f for _, m in msgs for f in families(m, "cluster.backend.upstream_rq_time", HISTOGRAM)]
    assert summaries and len(summaries) == len(hists)
    assert sum(s["summary"]["count"] for s in summaries) == 5
    assert sum(h["histogram"]["count"] for h in hists) == 5
    s = next(s["summary"] for s in summaries if s["summary"]["count"])
    assert [q for q, _ in s["quantiles"]] == [0, 0.25, 0.5, 0.75, 0.9, 0.95, 0.99, 0.995, 0.999, 1]
    assert all(v >= 0 for _, v in s["quantiles"])
    h = next(h["histogram"] for h in hists if h["histogram"]["count"])
    bounds = [b for b, _ in h["buckets"]]
    assert bounds[:3] == [0.5, 1, 5] and bounds[-1] == 3600000 and len(bounds) == 19
    assert h["buckets"][-1][1] == h["count"]
    assert [n for _, n in h["buckets"]] == sorted(n for _, n in h["buckets"])
    # an interval without requests: still sent, count 0, NaN quantiles
    empty = [s["summary"] for s in summaries if s["summary"]["count"] == 0]
    if empty:
        assert all(math.isnan(v) for _, v in empty[0]["quantiles"])
    # the counter keeps being sent with its value
    n = len(c.snapshot())
    wait_for(lambda: len(c.snapshot()) > n + 1, 10, "two more flushes")
    assert families(c.snapshot()[-1][1], "cluster.backend.upstream_rq_total", COUNTER)[0]["counter"] == 5


def test_deltas_labels_summary_only(procs, upstream, collectors):
    c = Collector()
    collectors.append(c)
    listen, admin = free_port(), free_port()
    start(procs, config(listen, admin, upstream.port, c.port,
                        "report_counters_as_deltas: true\nemit_tags_as_labels: true\nhistogram_emit_mode: SUMMARY\n",
                        "{ envoy_grpc: { cluster_name: metrics_collector, authority: metrics.example }, "
                        "initial_metadata: [{ key: x-tenant, value: t1 }] }"),
          admin)
    get(listen, 3)

    def rq_deltas():
        out = []
        for _, m in c.snapshot():
            for f in families(m, "cluster.upstream_rq_total", COUNTER):
                if f["labels"] == {"envoy.cluster_name": "backend"}:
                    out.append(f["counter"])
        return out
    wait_for(lambda: sum(rq_deltas()) == 3, 10, "deltas of cluster.upstream_rq_total adding up to 3")
    get(listen, 4)
    wait_for(lambda: sum(rq_deltas()) == 7, 10, "deltas adding up to 7")
    # no traffic: the next flushes send a delta of 0 (the counter is used)
    n = len(rq_deltas())
    wait_for(lambda: len(rq_deltas()) > n, 10, "one more flush")
    assert rq_deltas()[-1] == 0 and sum(rq_deltas()) == 7 and max(rq_deltas()) <= 4
    msgs = c.snapshot()
    for _, m in msgs:
        assert not any(t == HISTOGRAM for _, t, _ in m["families"])
        # tag-extracted names only
        assert not families(m, "cluster.backend.upstream_rq_total")
    summ = [f for _, m in msgs for f in families(m, "cluster.upstream_rq_time", SUMMARY)
            if f["labels"].get("envoy.cluster_name") == "backend"]
    assert sum(f["summary"]["count"] for f in summ) == 7
    # the GrpcService's initial_metadata on the stream
    assert c.metadata[0].get("x-tenant") == "t1"
    hcm = [f for _, m in msgs for f in families(m, "http.downstream_rq_total", COUNTER)]
    assert hcm and hcm[0]["labels"] == {"envoy.http_conn_manager_prefix": "ingress_http"}


def test_collector_down_at_start_and_restarted(procs, upstream, collectors):
    port = free_port()
    listen, admin = free_port(), free_port()
    start(procs, config(listen, admin, upstream.port, port), admin)
    # flushes fail to connect to nobody; traffic is unaffected
    wait_for(lambda: (stat(admin, "cluster.metrics_collector.upstream_cx_connect_fail") or 0) >= 2, 10,
             "two failed connections to the collector")
    get(listen, 2)
    c = Collector(port)
    collectors.append(c)
    wait_for(lambda: len(c.snapshot()) >= 2, 10, "messages once the collector is up")
    msgs = c.snapshot()
    assert msgs[0][1]["node"] == ("node-1", "cluster-1")
    assert msgs[1][1]["node"] is None
    # the collector goes away and comes back: a new stream, with the node
    c.stop()
    collectors.remove(c)
    c2 = Collector(port)
    collectors.append(c2)
    wait_for(lambda: len(c2.snapshot()) >= 2, 15, "messages on the restarted collector")
    m2 = c2.snapshot()
    assert m2[0][1]["node"] == ("node-1", "cluster-1")
    assert all(m["node"] is None for _, m in m2[1:])
    assert {n for n, _ in m2} == {1}
    get(listen, 1)
    wait_for(lambda: any(f and f[0]["counter"] == 3 for f in
                         (families(m, "cluster.backend.upstream_rq_total", COUNTER) for _, m in c2.snapshot())),
             10, "the counter at 3 on the new stream")


class StalledCollector(Collector):
    """Takes the stream and never reads it: HTTP/2 flow control stops the
    sender once the windows are full."""

    def __init__(self):
        self.release = threading.Event()
        super().__init__()

    def _stream(self, requests, ctx):
        with self.lock:
            self.streams += 1
        self.release.wait(30)
        return b""

    def stop(self):
        self.release.set()
        super().stop()


def test_stalled_collector_drops_flushes(procs, upstream, collectors):
    """A collector that does not read: the stream's send queue fills up to
    its bound and further flushes are dropped (logged at debug), while
    traffic goes on."""
    c = StalledCollector()
    collectors.append(c)
    listen, admin = free_port(), free_port()
    s = Sharp(config(listen, admin, upstream.port, c.port).replace(f"stats_flush_interval: {FLUSH}",
                                                                    "stats_flush_interval: 0.005s"),
              extra=("--component-log-level", "stats:debug"))
    procs.append(s)
    s.wait_ready(admin)
    wait_for(lambda: "cannot take this flush" in s.output(), 60, "a dropped flush")
    assert c.streams == 1
    get(listen, 3)
    assert stat(admin, "cluster.backend.upstream_rq_total") == 3


AGGREGATE = """\
  - name: agg
    connect_timeout: 1s
    lb_policy: CLUSTER_PROVIDED
    cluster_type:
      name: envoy.clusters.aggregate
      typed_config:
        "@type": type.googleapis.com/envoy.extensions.clusters.aggregate.v3.ClusterConfig
        clusters: [metrics_collector]
"""


def refused(extra_sink, cluster_extra="", collector="metrics_collector"):
    listen, admin = free_port(), free_port()
    text = config(listen, admin, 1, 2, extra_sink)
    text = text.replace("stats_flush_interval:", AGGREGATE + "stats_flush_interval:", 1)
    text = text.replace("cluster_name: metrics_collector } }", f"cluster_name: {collector} }} }}")
    if cluster_extra == "http1":
        text = text.replace("explicit_http_config: { http2_protocol_options: {} }",
                            "explicit_http_config: { http_protocol_options: {} }")
    rc, out = validate_config(text)
    assert rc != 0
    return out


def test_refusals():
    assert "Unknown gRPC client cluster 'nope'" in refused("", collector="nope")
    assert "does not use HTTP/2" in refused("", cluster_extra="http1")
    # an aggregate cluster: SHARP's gRPC client goes to the cluster's own
    # hosts, so it is refused by name (not "does not use HTTP/2")
    assert "gRPC client cluster 'agg' is an aggregate cluster (envoy.clusters.aggregate), which is not supported" \
        in refused("", collector="agg")
    listen, admin = free_port(), free_port()
    text = config(listen, admin, 1, 2).replace("    transport_api_version: V3\n", "")
    rc, out = validate_config(text)
    assert rc != 0 and "transport_api_version" in out and "V2 (and AUTO)" in out
    text = config(listen, admin, 1, 2).replace(
        "grpc_service: { envoy_grpc: { cluster_name: metrics_collector } }",
        "grpc_service: { google_grpc: { target_uri: 127.0.0.1:1, stat_prefix: m } }")
    rc, out = validate_config(text)
    assert rc != 0 and "google_grpc" in out
    text = config(listen, admin, 1, 2).replace(
        "    grpc_service: { envoy_grpc: { cluster_name: metrics_collector } }\n", "")
    rc, out = validate_config(text)
    assert rc != 0 and "grpc_service" in out and "required" in out
    text = config(listen, admin, 1, 2, "batch_size: 10\n")
    rc, out = validate_config(text)
    assert rc != 0 and "batch_size" in out


@pytest.mark.parametrize("name,expect", [
    ("istio__pkg__bootstrap__testdata__all_golden.json", None),
    ("istio__pkg__bootstrap__testdata__stats_flush_interval_golden.json", None),
    ("istio__pkg__bootstrap__testdata__metrics_no_statsd_golden.json", None),
    ("istio__pkg__bootstrap__testdata__stats_interval_golden.json", "stats_eviction_interval"),
    ("istio__pkg__bootstrap__testdata__stats_eviction_interval_golden.json", "stats_eviction_interval"),
    ("gateway__internal__xds__bootstrap__testdata__merge__stats_sinks.out.yaml", "node 'id' and 'cluster' are required"),
])
def test_corpus(name, expect):
    path = os.path.join(CORPUS, name)
    if not os.path.exists(path):
        pytest.skip(f"{path} is not here")
    with open(path) as f:
        text = f.read()
    rc, out = validate_config(text, suffix=os.path.splitext(name)[1])
    if expect is None:
        assert rc == 0, out
    else:
        assert rc != 0 and expect in out, out
        assert "metrics_service" not in out and "MetricsServiceConfig" not in out, out
