"""SkyWalking tracing (envoy.tracers.skywalking): the real sharp binary in
front of an upstream that echoes the request headers it received, reporting
its trace segments to a small SkyWalking collector on loopback (a grpcio
server implementing the client-streaming
skywalking.v3.TraceSegmentReportService/collect with a generic handler; the
SegmentObject messages are decoded by hand here). Checks the segments (ids,
service and instance, the Entry and Exit spans, their tags, peers, refs
from the caller's sw8), the sw8 the upstream saw, unsampled and malformed
contexts, errors, the stats, a collector that is down (bounded cache, drops
counted, no request lost, the cache flushed once it is up), refusals by
name and the corpus configs."""
import base64
import json
import threading
from concurrent import futures

import pytest

from conftest import PathEchoUpstream, Sharp, bootstrap_yaml, free_port, h1_request, stat, validate_config, wait_for
from test_tracing_otel import fields, get1, getall

CORPUS = "/work/shared/envoy-corpus"

grpc = pytest.importorskip("grpc")


def b64(s):
    return base64.b64encode(s.encode()).decode()


def unb64(s):
    return base64.b64decode(s).decode()


def int32(v):
    """A varint read as protobuf's int32 (negatives are sign-extended)."""
    return v - (1 << 64) if v >= 1 << 63 else v


def decode_segment(raw):
    f = fields(raw)
    spans = []
    for sp in getall(f, 3):
        s = fields(sp)
        refs = []
        for r in getall(s, 5):
            rf = fields(r)
            refs.append({"type": get1(rf, 1, 0), "trace": get1(rf, 2, b"").decode(),
                         "segment": get1(rf, 3, b"").decode(), "span": int32(get1(rf, 4, 0)),
                         "service": get1(rf, 5, b"").decode(), "instance": get1(rf, 6, b"").decode(),
                         "endpoint": get1(rf, 7, b"").decode(), "target": get1(rf, 8, b"").decode()})
        tags = []
        for t in getall(s, 12):
            tf = fields(t)
            tags.append((get1(tf, 1, b"").decode(), get1(tf, 2, b"").decode()))
        spans.append({"id": int32(get1(s, 1, 0)), "parent": int32(get1(s, 2, 0)), "start": get1(s, 3, 0),
                      "end": get1(s, 4, 0), "refs": refs, "name": get1(s, 6, b"").decode(),
                      "peer": get1(s, 7, b"").decode(), "type": get1(s, 8, 0), "layer": get1(s, 9, 0),
                      "component": get1(s, 10, 0), "error": bool(get1(s, 11, 0)), "tags": tags,
                      "tagmap": dict(tags), "skip": bool(get1(s, 14, 0))})
    return {"trace": get1(f, 1, b"").decode(), "segment": get1(f, 2, b"").decode(), "spans": spans,
            "service": get1(f, 4, b"").decode(), "instance": get1(f, 5, b"").decode()}


class Collector:
    """TraceSegmentReportService/collect: keeps every SegmentObject of every
    stream and the streams' metadata."""

    def __init__(self, port=0):
        self.segments = []
        self.metadata = []
        self.lock = threading.Lock()
        outer = self

        def collect(it, ctx):
            with outer.lock:
                outer.metadata.append(dict(ctx.invocation_metadata()))
            for raw in it:
                with outer.lock:
                    outer.segments.append(decode_segment(raw))
            return b""  # Commands {}

        handler = grpc.method_handlers_generic_handler("skywalking.v3.TraceSegmentReportService", {
            "collect": grpc.stream_unary_rpc_method_handler(collect)})
        self.server = grpc.server(futures.ThreadPoolExecutor(max_workers=8))
        self.server.add_generic_rpc_handlers((handler,))
        self.port = self.server.add_insecure_port(f"127.0.0.1:{port}")
        self.server.start()

    def got(self, n):
        with self.lock:
            return list(self.segments) if len(self.segments) >= n else None

    def close(self):
        self.server.stop(0)


@pytest.fixture
def collector():
    c = Collector()
    yield c
    c.close()


@pytest.fixture
def echo():
    u = PathEchoUpstream()
    yield u
    u.close()


ROUTES = ('- match: { prefix: "/deco" }\n  route: { cluster: backend }\n  decorator: { operation: checkout }\n'
          '- match: { prefix: "/" }\n  route: { cluster: backend }\n')

H2 = ("typed_extension_protocol_options:\n"
      "  envoy.extensions.upstreams.http.v3.HttpProtocolOptions:\n"
      '    "@type": type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions\n'
      "    explicit_http_config: { http2_protocol_options: {} }\n")

CLIENT = ("client_config:\n  service_name: front-svc\n  instance_name: front-1\n  backend_token: tok-1\n")


def config(listen, admin, upstream_port, collector_port, client=CLIENT, child=True, sampling="", grpc_extra="",
           provider=None, direction="INBOUND"):
    if provider is None:
        provider = ("grpc_service:\n  envoy_grpc: { cluster_name: skywalking }\n  timeout: 0.250s\n" + grpc_extra +
                    client)
    hcm = ("tracing:\n" + sampling +
           "  provider:\n    name: envoy.tracers.skywalking\n    typed_config:\n"
           '      "@type": type.googleapis.com/envoy.config.trace.v3.SkyWalkingConfig\n' +
           "".join("      " + ln + "\n" for ln in provider.splitlines()))
    y = bootstrap_yaml(listen, admin, {"backend": [upstream_port], "skywalking": [collector_port]}, routes=ROUTES,
                       hcm_extra=hcm, listener_extra=f"traffic_direction: {direction}\n")
    # the collector's cluster speaks HTTP/2
    head = "  - name: skywalking\n    type: STATIC\n    connect_timeout: 1s\n"
    assert head in y
    y = y.replace(head, head + "".join("    " + ln + "\n" for ln in H2.splitlines()))
    if child:
        router = '"@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router\n'
        y = y.replace(router, router + "              start_child_span: true\n")
    return "node: { id: node-1, cluster: front }\n" + y


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


def parse_sw8(v):
    f = v.split("-")
    assert len(f) == 8, v
    return {"sample": f[0], "trace": unb64(f[1]), "segment": unb64(f[2]), "span": int(f[3]),
            "service": unb64(f[4]), "instance": unb64(f[5]), "endpoint": unb64(f[6]), "target": unb64(f[7])}


CALLER = "-".join(["1", b64("trace-abc"), b64("seg-parent"), "3", b64("caller-svc"), b64("caller-1"), b64("/caller"),
                   b64("10.0.0.1:8080")])


def test_segment_spans_and_propagation(procs, echo, collector):
    listen, admin = free_port(), free_port()
    md = "  initial_metadata: [ { key: X-Tenant, value: t1 } ]\n"
    start(procs, config(listen, admin, echo.port, collector.port, grpc_extra=md), admin)
    st, _, e = get(listen, {"sw8": CALLER, "user-agent": "it-client"})
    assert st == 200
    # the upstream got the Exit span's context
    ctx = parse_sw8(seen(e, "sw8"))
    assert ctx["sample"] == "1" and ctx["trace"] == "trace-abc" and ctx["span"] == 1
    assert ctx["service"] == "front-svc" and ctx["instance"] == "front-1"
    assert ctx["endpoint"] == "/deco/shop?item=1"  # the entry span's name: the path, not the decorator
    assert ctx["target"] == f"127.0.0.1:{echo.port}"
    assert len(ctx["segment"]) == 36 and ctx["segment"][14] == "4"
    seg = wait_for(lambda: collector.got(1), 10, "the segment")[0]
    assert seg["trace"] == "trace-abc" and seg["segment"] == ctx["segment"]
    assert seg["service"] == "front-svc" and seg["instance"] == "front-1"
    assert len(seg["spans"]) == 2
    entry, exit_ = seg["spans"]
    ref = {"type": 0, "trace": "trace-abc", "segment": "seg-parent", "span": 3, "service": "caller-svc",
           "instance": "caller-1", "endpoint": "/caller", "target": "10.0.0.1:8080"}
    assert entry["refs"] == [ref] and exit_["refs"] == [ref]  # cpp2sky refs every span
    assert entry["id"] == 0 and entry["parent"] == -1 and entry["type"] == 0  # Entry
    assert exit_["id"] == 1 and exit_["parent"] == 0 and exit_["type"] == 1  # Exit
    for sp in (entry, exit_):
        assert sp["layer"] == 3 and sp["component"] == 9000 and not sp["error"] and not sp["skip"]
        assert 0 < sp["start"] <= sp["end"]
    assert entry["name"] == "/deco/shop?item=1" and exit_["name"] == "/deco/shop?item=1"
    assert entry["peer"] == "127.0.0.1" and exit_["peer"] == f"127.0.0.1:{echo.port}"
    t = entry["tagmap"]
    assert t["node_id"] == "node-1" and t["zone"] == ""
    assert t["http.method"] == "GET" and t["status_code"] == "200" and t["user_agent"] == "it-client"
    assert t["url"].endswith("/deco/shop?item=1") and "http.url" not in t and "peer.address" not in t
    assert t["upstream_cluster"] == "backend" and t["component"] == "proxy" and t["http.protocol"] == "HTTP/1.1"
    assert "error" not in t
    x = exit_["tagmap"]
    assert x["upstream_address"] == f"127.0.0.1:{echo.port}" and x["http.protocol"] == "HTTP/1.1"
    assert x["response_flags"] == "-" and "canceled" not in x and "error" not in x
    assert x["status_code"] == "200" and x["component"] == "proxy" and x["upstream_cluster"] == "backend"
    # the stream's metadata: the token as authentication
    assert collector.metadata[0].get("authentication") == "tok-1"
    assert collector.metadata[0].get("x-tenant") == "t1"
    assert stat(admin, "tracing.skywalking.segments_sent") == 1
    assert stat(admin, "tracing.skywalking.segments_dropped") == 0
    # no caller context: a new trace, no refs
    st, _, e2 = get(listen, path="/plain")
    ctx2 = parse_sw8(seen(e2, "sw8"))
    assert ctx2["trace"] != "trace-abc" and len(ctx2["trace"]) == 36 and ctx2["endpoint"] == "/plain"
    seg2 = wait_for(lambda: collector.got(2), 10, "the second segment")[1]
    assert seg2["trace"] == ctx2["trace"] and seg2["segment"] == ctx2["segment"]
    assert all(sp["refs"] == [] for sp in seg2["spans"])
    assert stat(admin, "tracing.skywalking.segments_sent") == 2


def test_two_proxies_chain_their_segments(procs, echo, collector):
    # front (OUTBOUND) -> back (INBOUND) -> echo, as the sandbox's proxies
    back, back_admin = free_port(), free_port()
    front, front_admin = free_port(), free_port()
    cb = CLIENT.replace("front-svc", "back-svc").replace("front-1", "back-1")
    start(procs, config(back, back_admin, echo.port, collector.port, client=cb), back_admin)
    start(procs, config(front, front_admin, back, collector.port, direction="OUTBOUND"), front_admin)
    st, _, e = get(front, path="/trace/1")
    assert st == 200
    ctx = parse_sw8(seen(e, "sw8"))  # what the echo got: the back proxy's context
    assert ctx["service"] == "back-svc" and ctx["target"] == f"127.0.0.1:{echo.port}"
    segs = wait_for(lambda: collector.got(2), 10, "both segments")
    by = {sg["service"]: sg for sg in segs}
    f, b = by["front-svc"], by["back-svc"]
    assert f["trace"] == b["trace"] == ctx["trace"]
    assert all(sp["refs"] == [] for sp in f["spans"])
    ref = b["spans"][0]["refs"][0]
    assert ref["segment"] == f["segment"] and ref["span"] == 1 and ref["service"] == "front-svc"
    assert ref["instance"] == "front-1" and ref["endpoint"] == "/trace/1"
    assert ref["target"] == f"127.0.0.1:{back}"
    assert f["spans"][1]["peer"] == f"127.0.0.1:{back}"
    assert b["segment"] == ctx["segment"]


def test_without_child_span_nothing_is_injected(procs, echo, collector):
    listen, admin = free_port(), free_port()
    start(procs, config(listen, admin, echo.port, collector.port, child=False), admin)
    st, _, e = get(listen, {"sw8": CALLER})
    assert st == 200
    # Envoy injects from the Entry span: no sw8 of its own, the caller's passes
    assert seen(e, "sw8") == CALLER
    seg = wait_for(lambda: collector.got(1), 10, "the segment")[0]
    assert len(seg["spans"]) == 1 and seg["spans"][0]["type"] == 0 and seg["trace"] == "trace-abc"


def test_unsampled_and_malformed(procs, echo, collector):
    listen, admin = free_port(), free_port()
    start(procs, config(listen, admin, echo.port, collector.port, sampling="  random_sampling: { value: 0 }\n"),
          admin)
    # not traced, no context: no segment, nothing injected
    st, _, e = get(listen, path="/plain")
    assert st == 200 and seen(e, "sw8") is None
    # not traced, with a context: a segment anyway (the caller's header decides)
    st, _, e = get(listen, {"sw8": CALLER}, path="/plain")
    assert st == 200 and parse_sw8(seen(e, "sw8"))["trace"] == "trace-abc"
    # malformed contexts, not traced: nothing, the header passes unchanged
    for bad in ("1-abc", "2-" + CALLER[2:], CALLER.replace("-3-", "-x-"), CALLER + "-extra"):
        st, _, e = get(listen, {"sw8": bad}, path="/plain")
        assert st == 200 and seen(e, "sw8") == bad
    # malformed, forced traced: a new trace
    st, _, e = get(listen, {"sw8": "1-abc", "x-client-trace-id": "c1"}, path="/plain")
    assert st == 200 and len(parse_sw8(seen(e, "sw8"))["trace"]) == 36
    segs = wait_for(lambda: collector.got(2), 10, "two segments")
    assert segs[0]["trace"] == "trace-abc" and segs[1]["trace"] != "trace-abc"
    assert all(sp["refs"] == [] for sp in segs[1]["spans"])
    assert stat(admin, "tracing.skywalking.segments_sent") == 2


def test_error_spans(procs, collector):
    listen, admin = free_port(), free_port()
    dead = free_port()  # nothing listens: the router answers 503
    start(procs, config(listen, admin, dead, collector.port), admin)
    st, _, _ = h1_request(listen, "/plain", headers={"sw8": CALLER})
    assert st == 503
    seg = wait_for(lambda: collector.got(1), 10, "the segment")[0]
    entry, exit_ = seg["spans"]
    assert entry["error"] and entry["tagmap"]["error"] == "true" and entry["tagmap"]["status_code"] == "503"
    assert exit_["error"] and exit_["tagmap"]["error.reason"] == "connection failure"
    assert exit_["tagmap"]["status_code"] == "0" and exit_["peer"] == f"127.0.0.1:{dead}"
    assert exit_["tagmap"]["response_flags"] == "UF" and "canceled" not in exit_["tagmap"]


def test_timed_out_try_is_canceled(procs, collector):
    import socket
    silent = socket.socket()  # accepts, never answers
    silent.bind(("127.0.0.1", 0))
    silent.listen(8)
    try:
        listen, admin = free_port(), free_port()
        y = config(listen, admin, silent.getsockname()[1], collector.port)
        y = y.replace("route: { cluster: backend }", "route: { cluster: backend, timeout: 0.3s }")
        start(procs, y, admin)
        st, _, _ = h1_request(listen, "/plain")
        assert st == 504
        entry, exit_ = wait_for(lambda: collector.got(1), 10, "the segment")[0]["spans"]
        assert entry["error"] and entry["tagmap"]["status_code"] == "504"
        x = exit_["tagmap"]
        assert x["canceled"] == "true" and x["status_code"] == "0" and x["error"] == "true" and exit_["error"]
        assert "error.reason" not in x
    finally:
        silent.close()


def test_retry_exit_spans(procs, echo, collector):
    listen, admin = free_port(), free_port()
    dead = free_port()
    y = config(listen, admin, echo.port, collector.port)
    # the backend: a host that refuses connections and the echo, with retries
    ep = f"        - endpoint: {{ address: {{ socket_address: {{ address: 127.0.0.1, port_value: {echo.port} }} }} }}\n"
    assert ep in y
    y = y.replace(ep, ep.replace(str(echo.port), str(dead)) + ep, 1)
    y = y.replace("route: { cluster: backend }",
                  "route: { cluster: backend, retry_policy: { retry_on: connect-failure, num_retries: 2 } }")
    start(procs, y, admin)
    for _ in range(2):
        st, _, e = get(listen, path="/plain")
        assert st == 200
    segs = wait_for(lambda: collector.got(2), 10, "two segments")
    retried = [sg for sg in segs if len(sg["spans"]) == 3]
    assert retried, segs
    entry, first, second = retried[0]["spans"]
    assert first["type"] == 1 and second["type"] == 1 and first["parent"] == 0 and second["parent"] == 0
    assert first["peer"] == f"127.0.0.1:{dead}" and first["error"]
    assert first["tagmap"]["error.reason"] == "connection failure" and "retry.count" not in first["tagmap"]
    assert second["id"] == 2 and second["tagmap"]["retry.count"] == "1" and not second["error"]
    assert second["peer"] == f"127.0.0.1:{echo.port}" and second["tagmap"]["status_code"] == "200"
    assert not entry["error"]


def test_collector_down_then_up(procs, echo):
    listen, admin = free_port(), free_port()
    cport = free_port()  # the collector is not there yet
    client = CLIENT + "  max_cache_size: 3\n"
    start(procs, config(listen, admin, echo.port, cport, client=client), admin)
    wait_for(lambda: (stat(admin, "cluster.skywalking.upstream_cx_connect_fail") or 0) >= 1, 10,
             "a failed connection to the collector")
    for _ in range(10):
        assert get(listen)[0] == 200  # requests are not affected

    def counts():
        return (stat(admin, "tracing.skywalking.segments_sent"), stat(admin, "tracing.skywalking.segments_dropped"))

    # every segment went on a stream (which then failed), into the cache, or
    # pushed an older one out of it: at most 3 are cached
    sent, dropped = counts()
    assert 7 <= sent + dropped <= 10, (sent, dropped)
    # each new stream first takes the cache (Envoy's establishNewStream): a
    # retry empties it, into a stream that fails while the collector is down
    wait_for(lambda: sum(counts()) == 10, 10, "the cache taken by a new stream")
    assert stat(admin, "tracing.skywalking.cache_flushed") >= 1
    assert stat(admin, "tracing.skywalking.segments_flushed") >= 10 - sent - dropped
    c = Collector(cport)
    try:
        # the reporter reconnects within its back-off, reset at every new stream
        segs = wait_for(lambda: get(listen, path="/after")[0] == 200 and c.got(1), 10,
                        "segments on the collector once it is up")
        assert all(s["spans"][0]["name"] == "/after" for s in segs)
        assert c.metadata and c.metadata[0].get("authentication") == "tok-1"
    finally:
        c.close()


def test_dead_collector_memory_is_bounded(procs, echo):
    from conftest import dead_port
    listen, admin = free_port(), free_port()
    client = CLIENT + "  max_cache_size: 5\n"
    start(procs, config(listen, admin, echo.port, dead_port(), client=client), admin)
    for _ in range(200):
        assert get(listen, {"sw8": CALLER})[0] == 200
    sent = stat(admin, "tracing.skywalking.segments_sent")
    dropped = stat(admin, "tracing.skywalking.segments_dropped")
    assert dropped >= 195 - sent, (sent, dropped)
    assert stat(admin, "cluster.skywalking.upstream_cx_connect_fail") >= 1


@pytest.mark.parametrize("provider, needle", [
    ("grpc_service:\n  google_grpc: { target_uri: \"127.0.0.1:1\", stat_prefix: x }\n", "google_grpc"),
    ("grpc_service:\n  envoy_grpc: { cluster_name: skywalking, retry_policy: { num_retries: 1 } }\n",
     "retry_policy"),
    ("client_config: { service_name: x }\n", "grpc_service"),
    ("grpc_service:\n  envoy_grpc: { cluster_name: skywalking }\nclient_config: { unknown_field: 1 }\n",
     "unknown_field"),
])
def test_refused(provider, needle):
    rc, out = validate_config(config(free_port(), free_port(), 1, 2, provider=provider))
    assert rc != 0 and needle in out, out


def test_unknown_cluster_accepted(procs, echo):
    # Envoy builds the SkyWalking client without checking its cluster: the
    # segments wait in the cache
    listen, admin = free_port(), free_port()
    y = config(listen, admin, echo.port, 1).replace("cluster_name: skywalking", "cluster_name: nowhere")
    rc, out = validate_config(y)
    assert rc == 0, out
    start(procs, y + "", admin)
    for _ in range(4):
        assert get(listen)[0] == 200
    assert stat(admin, "tracing.skywalking.segments_sent") == 0


def test_start_child_span_refused_with_zipkin():
    hcm = ("tracing:\n  provider:\n    name: envoy.tracers.zipkin\n    typed_config:\n"
           '      "@type": type.googleapis.com/envoy.config.trace.v3.ZipkinConfig\n'
           "      collector_cluster: zipkin\n      collector_endpoint: /api/v2/spans\n"
           "      collector_endpoint_version: HTTP_JSON\n")
    y = bootstrap_yaml(free_port(), free_port(), {"backend": [1], "zipkin": [2]}, hcm_extra=hcm)
    router = '"@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router\n'
    rc, out = validate_config(y.replace(router, router + "              start_child_span: true\n"))
    assert rc != 0 and "start_child_span" in out and "envoy.tracers.zipkin" in out, out
    rc, out = validate_config(y)
    assert rc == 0, out


@pytest.mark.parametrize("name", ["envoy-1", "envoy-2", "envoy-front-proxy"])
def test_corpus_configs_validate(name):
    with open(f"{CORPUS}/examples__skywalking__{name}.yaml") as f:
        rc, out = validate_config(f.read())
    assert rc == 0, out
