"""OpenTelemetry tracing (envoy.tracers.opentelemetry): the real sharp
binary in front of an upstream that echoes the request headers it received,
exporting its spans to a small OTLP collector on loopback: over HTTP (a
server keeping every POSTed ExportTraceServiceRequest) and over gRPC (a
grpcio server implementing TraceService/Export). The protobuf is decoded by
hand here for the fields checked. Checks the spans (trace, span and parent
ids, kind, name, attributes, status, service.name), the traceparent and
tracestate the upstream saw, sampled-out and malformed contexts, the stats,
that a dead collector costs no proxied request, refusals by name and the
corpus configs."""
import http.server
import json
import threading
from concurrent import futures

import pytest

from conftest import (PathEchoUpstream, Sharp, bootstrap_yaml, free_port, h1_request, stat, validate_config,
                      wait_for)

CORPUS = "/work/shared/envoy-corpus"


# ---- protobuf wire format, by hand ----

def fields(buf):
    """[(field number, value)]: ints for varints, bytes for the rest."""
    out, i = [], 0
    while i < len(buf):
        key, i = varint(buf, i)
        num, wt = key >> 3, key & 7
        if wt == 0:
            v, i = varint(buf, i)
        elif wt == 1:
            v, i = int.from_bytes(buf[i:i + 8], "little"), i + 8
        elif wt == 2:
            n, i = varint(buf, i)
            v, i = bytes(buf[i:i + n]), i + n
        elif wt == 5:
            v, i = int.from_bytes(buf[i:i + 4], "little"), i + 4
        else:
            raise ValueError(f"wire type {wt}")
        out.append((num, v))
    return out


def varint(buf, i):
    v = shift = 0
    while True:
        b = buf[i]
        i += 1
        v |= (b & 0x7f) << shift
        shift += 7
        if not b & 0x80:
            return v, i


def get1(fs, num, default=None):
    for n, v in fs:
        if n == num:
            return v
    return default


def getall(fs, num):
    return [v for n, v in fs if n == num]


def kv_list(raw):
    """KeyValue messages -> {key: string_value}."""
    out = {}
    for kv in raw:
        f = fields(kv)
        out[get1(f, 1).decode()] = get1(fields(get1(f, 2, b"")), 1, b"").decode()
    return out


def decode_request(body):
    """ExportTraceServiceRequest -> [(resource attributes, scope name, span dict)]."""
    spans = []
    for rs in getall(fields(body), 1):
        rf = fields(rs)
        res = kv_list(getall(fields(get1(rf, 1, b"")), 1))
        for ss in getall(rf, 2):
            sf = fields(ss)
            scope = get1(fields(get1(sf, 1, b"")), 1, b"").decode()
            for sp in getall(sf, 2):
                f = fields(sp)
                status = fields(get1(f, 15, b""))
                spans.append((res, scope, {
                    "trace_id": get1(f, 1, b"").hex(), "span_id": get1(f, 2, b"").hex(),
                    "trace_state": get1(f, 3, b"").decode(), "parent": get1(f, 4, b"").hex(),
                    "name": get1(f, 5, b"").decode(), "kind": get1(f, 6, 0), "start": get1(f, 7, 0),
                    "end": get1(f, 8, 0), "attrs": kv_list(getall(f, 9)), "status": get1(status, 3, 0)}))
    return spans


class HttpCollector:
    """An OTLP/HTTP collector: answers every POST 200 and keeps (path,
    headers, body)."""

    def __init__(self):
        self.reports = []
        self.lock = threading.Lock()
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("content-length") or 0))
                with outer.lock:
                    outer.reports.append((self.path, {k.lower(): v for k, v in self.headers.items()}, body))
                self.send_response(200)
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def spans(self):
        with self.lock:
            return [s for _, _, body in self.reports for s in decode_request(body)]

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def collector():
    c = HttpCollector()
    yield c
    c.close()


@pytest.fixture
def echo():
    u = PathEchoUpstream()
    yield u
    u.close()


ROUTES = ('- match: { prefix: "/deco" }\n  route: { cluster: backend }\n  decorator: { operation: checkout }\n'
          '- match: { prefix: "/" }\n  route: { cluster: backend }\n')

HTTP_PROVIDER = """\
tracing:
  provider:
    name: envoy.tracers.opentelemetry
    typed_config:
      "@type": type.googleapis.com/envoy.config.trace.v3.OpenTelemetryConfig
{body}"""


def config(listen, admin, upstream_port, collector_port, provider=None, direction="INBOUND", min_flush=1,
           grpc=False, flush_ms=5000):
    if provider is None:
        provider = ("service_name: front-otel\n"
                    "http_service:\n"
                    "  http_uri: { uri: \"http://otel.example:4318/v1/traces\", cluster: otel, timeout: 1s }\n"
                    "  request_headers_to_add:\n"
                    "  - header: { key: X-Token, value: secret }\n")
    hcm = HTTP_PROVIDER.format(body="".join("      " + ln + "\n" for ln in provider.splitlines()))
    y = bootstrap_yaml(listen, admin, {"backend": [upstream_port], "otel": [collector_port]}, routes=ROUTES,
                       hcm_extra=hcm, listener_extra=f"traffic_direction: {direction}\n")
    if grpc:
        y = y.replace("  - name: otel\n    type: STATIC\n    connect_timeout: 1s\n",
                      "  - name: otel\n    type: STATIC\n    connect_timeout: 1s\n"
                      "    typed_extension_protocol_options:\n"
                      "      envoy.extensions.upstreams.http.v3.HttpProtocolOptions:\n"
                      '        "@type": type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions\n'
                      "        explicit_http_config: { http2_protocol_options: {} }\n")
        assert "http2_protocol_options" in y
    y = "node: { id: node-1, cluster: front }\n" + y
    y += ("layered_runtime:\n  layers:\n  - name: static\n    static_layer: "
          f"{{ tracing.opentelemetry.min_flush_spans: {min_flush}, "
          f"tracing.opentelemetry.flush_interval_ms: {flush_ms} }}\n")
    return y


def start(procs, yaml_text, admin):
    s = Sharp(yaml_text, concurrency=1)
    procs.append(s)
    s.wait_ready(admin)
    return s


def get(port, headers=None, path="/deco/shop?item=1"):
    status, hdrs, body = h1_request(port, path, headers=headers or {})
    return status, hdrs, json.loads(body) if status == 200 else None


def seen(echoed, name):
    for k, v in echoed["headers"]:
        if k.lower() == name:
            return v
    return None


TRACE = "0af7651916cd43dd8448eb211c80319c"
PARENT = "b7ad6b7169203331"


def test_http_exporter_spans_and_context(procs, echo, collector):
    listen, admin = free_port(), free_port()
    start(procs, config(listen, admin, echo.port, collector.port), admin)
    # 1: the caller's context, sampled, with tracestate
    st, _, e1 = get(listen, {"traceparent": f"00-{TRACE}-{PARENT}-01", "tracestate": "vendor=1",
                             "user-agent": "it-client"})
    assert st == 200
    tp = seen(e1, "traceparent")
    assert tp and tp.startswith(f"00-{TRACE}-") and tp.endswith("-01") and len(tp) == 55
    child = tp[36:52]
    assert child != PARENT
    assert seen(e1, "tracestate") == "vendor=1"
    spans = wait_for(lambda: collector.spans() or None, 10, "the first span")
    assert len(spans) == 1
    res, scope, sp = spans[0]
    assert res == {"service.name": "front-otel"}
    assert scope == "envoy"
    assert sp["trace_id"] == TRACE and sp["parent"] == PARENT and sp["span_id"] == child
    assert sp["trace_state"] == "vendor=1"
    assert sp["kind"] == 2  # SPAN_KIND_SERVER
    assert sp["name"] == "checkout"  # the decorator
    a = sp["attrs"]
    assert a["http.method"] == "GET" and a["http.status_code"] == "200" and a["user_agent"] == "it-client"
    assert a["upstream_cluster"] == "backend" and a["component"] == "proxy" and a["node_id"] == "node-1"
    assert a["http.url"].endswith("/deco/shop?item=1")
    assert "error" not in a and sp["status"] == 0
    assert 0 < sp["start"] <= sp["end"]
    path, hdrs, _ = collector.reports[0]
    assert path == "/v1/traces"
    assert hdrs["content-type"] == "application/x-protobuf"
    assert hdrs["host"] == "otel.example:4318"
    assert hdrs["x-token"] == "secret"
    # 2: no context: a new sampled trace, a root span named "ingress"
    st, _, e2 = get(listen, path="/plain")
    tp2 = seen(e2, "traceparent")
    assert tp2 and tp2.endswith("-01") and seen(e2, "tracestate") is None
    spans = wait_for(lambda: len(collector.spans()) >= 2 and collector.spans(), 10, "the second span")
    sp2 = spans[1][2]
    assert sp2["trace_id"] == tp2[3:35] and sp2["span_id"] == tp2[36:52] and sp2["parent"] == ""
    assert sp2["name"] == "ingress"
    # 3: sampled out by the caller (flags 00): propagated, no span
    st, _, e3 = get(listen, {"traceparent": f"00-{TRACE}-{PARENT}-00"})
    assert st == 200
    tp3 = seen(e3, "traceparent")
    assert tp3.startswith(f"00-{TRACE}-") and tp3.endswith("-00")
    # 4: a malformed traceparent: no span, nothing injected (Envoy's NullSpan)
    bad = f"00-{TRACE}-{PARENT}-1"
    st, _, e4 = get(listen, {"traceparent": bad})
    assert st == 200 and seen(e4, "traceparent") == bad
    st, _, e5 = get(listen, {"traceparent": f"00-{'0' * 32}-{PARENT}-01"})
    assert st == 200 and seen(e5, "traceparent") == f"00-{'0' * 32}-{PARENT}-01"
    # 5: a sampled one after them: only it is added
    get(listen, {"traceparent": f"00-{TRACE}-{PARENT}-01"}, path="/plain")
    spans = wait_for(lambda: len(collector.spans()) >= 3 and collector.spans(), 10, "the third span")
    assert len(spans) == 3 and spans[2][2]["parent"] == PARENT
    wait_for(lambda: stat(admin, "tracing.opentelemetry.http_reports_success") == 3, 10, "3 successful reports")
    assert stat(admin, "tracing.opentelemetry.spans_sent") == 3
    assert stat(admin, "tracing.opentelemetry.http_reports_sent") == 3
    assert stat(admin, "tracing.opentelemetry.http_reports_failed") == 0


def test_egress_client_span_batching_and_error(procs, echo, collector):
    listen, admin = free_port(), free_port()
    start(procs, config(listen, admin, echo.port, collector.port, direction="OUTBOUND", min_flush=3), admin)
    for _ in range(2):
        assert get(listen, path="/plain")[0] == 200
    # the third names the request's host in its span name
    st, _, _ = h1_request(listen, "/plain", headers={"host": "svc.local"})
    assert st == 200
    wait_for(lambda: len(collector.reports) == 1, 10, "one batch of 3 spans")
    spans = collector.spans()
    assert len(spans) == 3
    for _, _, sp in spans:
        assert sp["kind"] == 3  # SPAN_KIND_CLIENT
        assert sp["name"].startswith("egress ")
    assert spans[2][2]["name"] == "egress svc.local"
    assert stat(admin, "tracing.opentelemetry.spans_sent") == 3


def test_timer_flush(procs, echo, collector):
    listen, admin = free_port(), free_port()
    start(procs, config(listen, admin, echo.port, collector.port, min_flush=5, flush_ms=200), admin)
    assert get(listen)[0] == 200
    # one span, below min_flush_spans: the flush timer sends it
    wait_for(lambda: len(collector.spans()) == 1, 10, "the span flushed by the timer")
    assert stat(admin, "tracing.opentelemetry.timer_flushed") >= 1
    assert stat(admin, "tracing.opentelemetry.spans_sent") == 1


def test_error_status(procs, collector):
    listen, admin = free_port(), free_port()
    dead = free_port()  # nothing listens: the router answers 503
    start(procs, config(listen, admin, dead, collector.port), admin)
    st, _, _ = h1_request(listen, "/plain")
    assert st == 503
    sp = wait_for(lambda: collector.spans() or None, 10, "the span")[0][2]
    assert sp["attrs"]["http.status_code"] == "503" and sp["attrs"]["error"] == "true"
    assert sp["status"] == 2  # STATUS_CODE_ERROR


def test_dead_collector_loses_no_request(procs, echo):
    listen, admin = free_port(), free_port()
    dead = free_port()
    start(procs, config(listen, admin, echo.port, dead), admin)
    for _ in range(20):
        assert get(listen, {"traceparent": f"00-{TRACE}-{PARENT}-01"})[0] == 200
    wait_for(lambda: stat(admin, "tracing.opentelemetry.http_reports_success") == 20, 10,
             "the router's 503s delivered as responses")
    assert stat(admin, "tracing.opentelemetry.spans_sent") == 20
    assert get(listen)[0] == 200


class GrpcCollector:
    """An OTLP/gRPC collector: TraceService/Export keeping the raw request
    and its metadata."""

    def __init__(self):
        import grpc
        self.requests = []
        self.lock = threading.Lock()
        outer = self

        def export(req, ctx):
            with outer.lock:
                outer.requests.append((req, dict(ctx.invocation_metadata())))
            return b""

        handler = grpc.method_handlers_generic_handler("opentelemetry.proto.collector.trace.v1.TraceService", {
            "Export": grpc.unary_unary_rpc_method_handler(export)})
        self.server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
        self.server.add_generic_rpc_handlers((handler,))
        self.port = self.server.add_insecure_port("127.0.0.1:0")
        self.server.start()

    def spans(self):
        with self.lock:
            return [s for body, _ in self.requests for s in decode_request(body)]

    def close(self):
        self.server.stop(0)


def test_grpc_exporter(procs, echo):
    pytest.importorskip("grpc")
    c = GrpcCollector()
    try:
        listen, admin = free_port(), free_port()
        provider = ("grpc_service:\n  envoy_grpc: { cluster_name: otel }\n  timeout: 1s\n"
                    "  initial_metadata: [ { key: x-tenant, value: t1 } ]\n")
        start(procs, config(listen, admin, echo.port, c.port, provider=provider, grpc=True), admin)
        st, _, e = get(listen, {"traceparent": f"00-{TRACE}-{PARENT}-01"})
        assert st == 200
        spans = wait_for(lambda: c.spans() or None, 10, "the span over gRPC")
        res, _, sp = spans[0]
        assert res == {"service.name": "unknown_service:envoy"}
        assert sp["trace_id"] == TRACE and sp["parent"] == PARENT and sp["span_id"] == seen(e, "traceparent")[36:52]
        assert c.requests[0][1].get("x-tenant") == "t1"
        assert stat(admin, "tracing.opentelemetry.spans_sent") == 1
    finally:
        c.close()


@pytest.mark.parametrize("extra, needle", [
    ("sampler: { name: s, typed_config: { \"@type\": type.googleapis.com/envoy.extensions.tracers.opentelemetry"
     ".samplers.v3.AlwaysOnSamplerConfig } }\n", "sampler"),
    ("resource_detectors: [ { name: r, typed_config: { \"@type\": type.googleapis.com/google.protobuf.Empty } } ]\n",
     "resource_detectors"),
])
def test_refused_fields(extra, needle):
    provider = ("http_service:\n  http_uri: { uri: \"http://c/v1/traces\", cluster: otel, timeout: 1s }\n" + extra)
    rc, out = validate_config(config(free_port(), free_port(), 1, 2, provider=provider))
    assert rc != 0 and needle in out, out


def test_refused_google_grpc_and_unknown_cluster():
    provider = "grpc_service:\n  google_grpc: { target_uri: \"127.0.0.1:1\", stat_prefix: x }\n"
    rc, out = validate_config(config(free_port(), free_port(), 1, 2, provider=provider))
    assert rc != 0 and "google_grpc" in out, out
    provider = "grpc_service:\n  envoy_grpc: { cluster_name: nowhere }\n"
    rc, out = validate_config(config(free_port(), free_port(), 1, 2, provider=provider))
    assert rc != 0 and "nowhere" in out, out


@pytest.mark.parametrize("name", ["envoy-1", "envoy-2", "envoy-front-proxy"])
def test_corpus_configs_validate(name):
    with open(f"{CORPUS}/examples__opentelemetry__{name}.yaml") as f:
        rc, out = validate_config(f.read())
    assert rc == 0, out
