"""Zipkin tracing (envoy.tracers.zipkin): the real sharp binary in front of
an upstream that echoes the request headers it received, reporting its
spans to a small Zipkin collector on loopback that keeps every POSTed
Zipkin v2 JSON array. Checks the spans (ids, parent, kind, name, tags),
the B3 headers the upstream saw, the sampling decisions, batching, the
stats, and that a dead collector costs no proxied request."""
import http.server
import json
import os
import threading

import pytest

from conftest import (PathEchoUpstream, Sharp, as_aggregate, free_port, h1_request, h2_request, stat, validate_config,
                      wait_for, wait_port, bootstrap_yaml)

CORPUS = "/work/shared/envoy-corpus"


class Collector:
    """A Zipkin collector: answers every POST with `status` (202 as
    Zipkin does) and keeps (path, headers, parsed body)."""

    def __init__(self, status=202):
        self.reports = []
        self.lock = threading.Lock()
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self):
                n = int(self.headers.get("content-length") or 0)
                body = self.rfile.read(n)
                with outer.lock:
                    outer.reports.append((self.path, {k.lower(): v for k, v in self.headers.items()},
                                          json.loads(body)))
                self.send_response(status)
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
            return [s for _, _, body in self.reports for s in body]

    def close(self):
        self.server.shutdown()
        self.server.server_close()


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


ZIPKIN = """\
tracing:
  provider:
    name: envoy.tracers.zipkin
    typed_config:
      "@type": type.googleapis.com/envoy.config.trace.v3.ZipkinConfig
      collector_cluster: zipkin
      collector_endpoint: "/api/v2/spans"
      collector_endpoint_version: HTTP_JSON
{extra}"""


def config(listen, admin, upstream_port, collector_port, zipkin_extra="", hcm_tracing_extra="",
           direction="INBOUND", runtime="", bootstrap_tracing=False):
    routes = ('- match: { prefix: "/quiet" }\n  route: { cluster: backend }\n'
              '  tracing: { random_sampling: { numerator: 0 } }\n'
              '- match: { prefix: "/" }\n  route: { cluster: backend }\n'
              '  decorator: { operation: checkout }\n')
    hcm = ZIPKIN.format(extra="".join("      " + ln + "\n" for ln in zipkin_extra.splitlines()))
    hcm += "".join("  " + ln + "\n" for ln in hcm_tracing_extra.splitlines())
    if bootstrap_tracing:
        # the provider in the bootstrap, the connection manager's tracing
        # without one (Istio's layout)
        hcm = "tracing: { random_sampling: { value: 100 } }\n"
    y = bootstrap_yaml(listen, admin, {"backend": [upstream_port], "zipkin": [collector_port]}, routes=routes,
                       hcm_extra=hcm, listener_extra=f"traffic_direction: {direction}\n")
    y = "node: { id: node-1, cluster: front, locality: { zone: zone-a } }\n" + y
    if bootstrap_tracing:
        y += ("tracing:\n  http:\n    name: envoy.tracers.zipkin\n    typed_config:\n"
              '      "@type": type.googleapis.com/envoy.config.trace.v3.ZipkinConfig\n'
              "      collector_cluster: zipkin\n      collector_endpoint: /api/v2/spans\n"
              "      collector_endpoint_version: HTTP_JSON\n      trace_id_128bit: true\n")
    if runtime:
        y += "layered_runtime:\n  layers:\n  - name: static\n    static_layer: {" + runtime + "}\n"
    return y


def start(procs, yaml_text, admin):
    s = Sharp(yaml_text, concurrency=1)
    procs.append(s)
    s.wait_ready(admin)
    return s


def get(port, headers=None, path="/shop?item=1"):
    status, hdrs, body = h1_request(port, path, headers=headers or {})
    return status, hdrs, json.loads(body) if status == 200 else None


def seen(echoed, name):
    """The value of request header `name` the upstream saw (None if absent)."""
    for k, v in echoed["headers"]:
        if k.lower() == name:
            return v
    return None


def test_spans_b3_and_batching(procs, echo, collector):
    listen, admin = free_port(), free_port()
    start(procs, config(listen, admin, echo.port, collector.port), admin)
    trace = "463ac35c9f6413ad48485a3953bb6124"
    # 1: the caller's context: a SERVER span sharing its span id
    st, hdrs, e1 = get(listen, {"x-b3-traceid": trace, "x-b3-spanid": "a2fb4a1d1a96d312",
                                "x-b3-parentspanid": "0020000000000001", "x-b3-sampled": "1",
                                "user-agent": "it-client", "x-client-trace-id": "abc"})
    assert st == 200
    assert hdrs.get("x-envoy-decorator-operation") == "checkout"  # ingress: propagated in the response
    assert seen(e1, "x-b3-traceid") == trace
    assert seen(e1, "x-b3-spanid") == "a2fb4a1d1a96d312"
    assert seen(e1, "x-b3-parentspanid") == "0020000000000001"
    assert seen(e1, "x-b3-sampled") == "1"
    # 2: the single b3 header (64-bit trace id, no parent)
    _, _, e2 = get(listen, {"b3": "80f198ee56343ba8-e457b5a2e4d86bd1-1"})
    assert seen(e2, "x-b3-traceid") == "80f198ee56343ba8"
    assert seen(e2, "x-b3-spanid") == "e457b5a2e4d86bd1"
    assert seen(e2, "x-b3-parentspanid") is None
    # 3: sampled out by the caller: no span, the flag goes on
    _, _, e3 = get(listen, {"x-b3-sampled": "0"})
    assert seen(e3, "x-b3-sampled") == "0"
    # 4: a malformed context: no span and nothing injected (Envoy's NullSpan)
    _, _, e4 = get(listen, {"x-b3-traceid": "not-hex", "x-b3-spanid": "1"})
    assert seen(e4, "x-b3-spanid") == "1" and seen(e4, "x-b3-sampled") is None
    # 5..7: no context: root spans, sampled by random_sampling (100%)
    roots = [get(listen)[2] for _ in range(3)]
    for e in roots:
        assert seen(e, "x-b3-traceid") == seen(e, "x-b3-spanid")
        assert len(seen(e, "x-b3-traceid")) == 16
        # the x-request-id carries the sampling decision ('9' at position 14)
        assert seen(e, "x-request-id")[14] == "9"
    # five sampled spans: one report of five, at min_flush_spans
    wait_for(lambda: len(collector.reports) == 1, 10, "the collector's report")
    path, rh, spans = collector.reports[0]
    assert path == "/api/v2/spans"
    assert rh["content-type"] == "application/json"
    assert rh["host"] == "zipkin"  # collector_hostname defaults to the cluster's name
    assert len(spans) == 5
    s1 = next(s for s in spans if s["traceId"] == trace)
    assert s1["id"] == "a2fb4a1d1a96d312" and s1["parentId"] == "0020000000000001"
    assert s1["kind"] == "SERVER" and s1["shared"] is True
    assert s1["name"] == "checkout"
    assert s1["localEndpoint"]["serviceName"] == "front"
    assert s1["duration"] >= 0 and s1["timestamp"] > 1.6e15
    # Envoy's finish adds "ss" (SERVER) or "cr" (CLIENT), listed in annotations
    assert s1["annotations"] == [{"timestamp": s1["annotations"][0]["timestamp"], "value": "ss"}]
    assert s1["annotations"][0]["timestamp"] >= s1["timestamp"]
    tags = s1["tags"]
    assert tags["component"] == "proxy"
    assert tags["node_id"] == "node-1" and tags["zone"] == "zone-a"
    assert tags["http.method"] == "GET"
    assert tags["http.url"] == f"http://127.0.0.1:{listen}/shop?item=1"
    assert tags["http.status_code"] == "200"
    assert tags["http.protocol"] == "HTTP/1.1"
    assert tags["upstream_cluster"] == "backend" and tags["upstream_cluster.name"] == "backend"
    assert tags["user_agent"] == "it-client" and tags["downstream_cluster"] == "-"
    assert tags["guid:x-request-id"] == seen(e1, "x-request-id")
    assert tags["guid:x-client-trace-id"] == "abc"
    assert tags["response_flags"] == "-" and tags["peer.address"] == "127.0.0.1"
    assert tags["request_size"] == "0" and int(tags["response_size"]) > 0
    assert "error" not in tags
    s2 = next(s for s in spans if s["traceId"] == "80f198ee56343ba8")
    assert s2["id"] == "e457b5a2e4d86bd1" and "parentId" not in s2
    ids = {s["id"] for s in spans}
    for e in roots:
        assert seen(e, "x-b3-spanid") in ids
    assert stat(admin, "tracing.zipkin.spans_sent") == 5
    wait_for(lambda: stat(admin, "tracing.zipkin.reports_sent") == 1, 5, "reports_sent")
    assert stat(admin, "tracing.zipkin.reports_failed") == 0
    # the first request was forced by its x-client-trace-id, the others
    # sampled by random_sampling (x-b3-sampled only decides the span's flag)
    assert stat(admin, "http.ingress_http.tracing.client_enabled") == 1
    assert stat(admin, "http.ingress_http.tracing.random_sampling") == 6
    assert stat(admin, "http.ingress_http.tracing.not_traceable") == 0


def test_sampling_decisions(procs, echo, collector):
    """random_sampling 0: not traced unless forced by x-client-trace-id or,
    for an internal request, x-envoy-force-trace; overall_sampling 0 would
    veto even those."""
    listen, admin = free_port(), free_port()
    start(procs, config(listen, admin, echo.port, collector.port,
                        hcm_tracing_extra="random_sampling: { value: 0 }",
                        runtime="tracing.zipkin.flush_interval_ms: 100"), admin)
    _, _, e = get(listen)
    assert seen(e, "x-b3-sampled") == "0" and seen(e, "x-request-id")[14] == "4"
    _, _, e = get(listen, {"x-client-trace-id": "client-1"})
    assert seen(e, "x-b3-sampled") == "1" and seen(e, "x-request-id")[14] == "b"
    # an already decided request id keeps its decision
    rid = "aaaaaaaa-bbbb-9ccc-8ddd-eeeeeeeeeeee"
    _, _, e = get(listen, {"x-request-id": rid})
    assert seen(e, "x-request-id") == rid and seen(e, "x-b3-sampled") == "1"
    # x-envoy-force-trace from an external client is removed first
    _, _, e = get(listen, {"x-envoy-force-trace": "true"})
    assert seen(e, "x-b3-sampled") == "0" and seen(e, "x-envoy-force-trace") is None
    # a long id that is not a UUID is decided too, and left as it is
    long_id = "0" * 100
    _, _, e = get(listen, {"x-request-id": long_id, "x-client-trace-id": "c"})
    assert seen(e, "x-request-id") == long_id and seen(e, "x-b3-sampled") == "1"
    wait_for(lambda: len(collector.spans()) == 3, 10, "the three traced spans, flushed by the timer")
    assert stat(admin, "tracing.zipkin.timer_flushed") >= 1
    assert stat(admin, "http.ingress_http.tracing.not_traceable") == 2
    assert stat(admin, "http.ingress_http.tracing.client_enabled") == 2
    assert stat(admin, "http.ingress_http.tracing.random_sampling") == 1


def test_force_trace_from_internal_client(procs, echo, collector):
    """An internal request's x-envoy-force-trace forces the trace ('a')."""
    listen, admin = free_port(), free_port()
    y = config(listen, admin, echo.port, collector.port, hcm_tracing_extra="random_sampling: { value: 0 }")
    y = y.replace("          stat_prefix: ingress_http\n",
                  "          stat_prefix: ingress_http\n          use_remote_address: true\n"
                  "          internal_address_config: { cidr_ranges: [ { address_prefix: 127.0.0.0, prefix_len: 8 } ] }\n")
    start(procs, y, admin)
    _, _, e = get(listen, {"x-envoy-force-trace": "true"})
    assert seen(e, "x-b3-sampled") == "1" and seen(e, "x-request-id")[14] == "a"
    assert stat(admin, "http.ingress_http.tracing.service_forced") == 1
    _, _, e = get(listen)
    assert seen(e, "x-b3-sampled") == "0"
    assert stat(admin, "http.ingress_http.tracing.not_traceable") == 1


def test_route_tracing_overrides(procs, echo, collector):
    """A route's tracing replaces the connection manager's fractions: its
    random_sampling 0% leaves its requests untraced, the other route's
    are traced by the connection manager's 100%."""
    listen, admin = free_port(), free_port()
    start(procs, config(listen, admin, echo.port, collector.port), admin)
    _, _, e = get(listen, path="/quiet")
    assert seen(e, "x-b3-sampled") == "0" and seen(e, "x-request-id")[14] == "4"
    _, _, e = get(listen, path="/loud")
    assert seen(e, "x-b3-sampled") == "1" and seen(e, "x-request-id")[14] == "9"
    assert stat(admin, "http.ingress_http.tracing.not_traceable") == 1
    assert stat(admin, "http.ingress_http.tracing.random_sampling") == 1


def test_egress_client_span_and_bootstrap_provider(procs, echo, collector):
    """OUTBOUND: a CLIENT span, child of the caller's; the decorator goes
    upstream in x-envoy-decorator-operation. The provider comes from the
    bootstrap's tracing.http (trace_id_128bit)."""
    listen, admin = free_port(), free_port()
    start(procs, config(listen, admin, echo.port, collector.port, direction="OUTBOUND", bootstrap_tracing=True,
                        runtime="tracing.zipkin.min_flush_spans: 2"), admin)
    _, _, e1 = get(listen, {"x-b3-traceid": "0000000000000001", "x-b3-spanid": "00000000000000aa",
                            "x-b3-sampled": "1"})
    assert seen(e1, "x-b3-traceid") == "0000000000000001"
    assert seen(e1, "x-b3-parentspanid") == "00000000000000aa"
    child = seen(e1, "x-b3-spanid")
    assert child != "00000000000000aa"
    assert seen(e1, "x-envoy-decorator-operation") == "checkout"
    _, _, e2 = get(listen)
    assert len(seen(e2, "x-b3-traceid")) == 32  # a new 128-bit trace
    wait_for(lambda: len(collector.spans()) == 2, 10, "the report of two spans")
    spans = collector.spans()
    c = next(s for s in spans if s["id"] == child)
    assert c["kind"] == "CLIENT" and c["parentId"] == "00000000000000aa" and "shared" not in c
    assert c["traceId"] == "0000000000000001" and c["name"] == "checkout"
    assert [a["value"] for a in c["annotations"]] == ["cr"]


def test_custom_tags(procs, echo, collector, monkeypatch):
    """custom_tags: a literal, an environment variable, a request header
    (its default when absent); a route's tag wins over the connection
    manager's of the same name, and a custom tag replaces a built-in one."""
    monkeypatch.setenv("SHARP_IT_REGION", "eu-west")
    listen, admin = free_port(), free_port()
    tags = ("custom_tags:\n"
            "- { tag: team, literal: { value: payments } }\n"
            "- { tag: region, environment: { name: SHARP_IT_REGION } }\n"
            "- { tag: missing_env, environment: { name: SHARP_IT_UNSET_VARIABLE, default_value: none } }\n"
            "- { tag: tenant, request_header: { name: X-Tenant, default_value: anonymous } }\n"
            "- { tag: user_agent, literal: { value: replaced } }\n"
            "- { tag: quiet, literal: { value: from-hcm } }\n")
    y = config(listen, admin, echo.port, collector.port, hcm_tracing_extra=tags,
               runtime="tracing.zipkin.min_flush_spans: 2")
    y = y.replace("  tracing: { random_sampling: { numerator: 0 } }\n",
                  "  tracing: { random_sampling: { numerator: 10000, denominator: TEN_THOUSAND },"
                  " custom_tags: [ { tag: quiet, literal: { value: from-route } } ] }\n")
    start(procs, y, admin)
    get(listen, {"x-tenant": "acme", "user-agent": "ua"})
    get(listen, path="/quiet")
    wait_for(lambda: len(collector.spans()) == 2, 10, "two spans")
    a = next(s for s in collector.spans() if s["tags"]["http.url"].endswith("/shop?item=1"))["tags"]
    b = next(s for s in collector.spans() if s["tags"]["http.url"].endswith("/quiet"))["tags"]
    assert a["team"] == "payments" and a["region"] == "eu-west" and a["missing_env"] == "none"
    assert a["tenant"] == "acme" and b["tenant"] == "anonymous"
    assert a["user_agent"] == "replaced"
    assert a["quiet"] == "from-hcm" and b["quiet"] == "from-route"


def test_aggregate_collector_cluster(procs, echo, collector):
    """collector_cluster is an aggregate cluster: the report goes to the
    member its balancer chooses (it was dropped for "no healthy host"
    before)."""
    listen, admin = free_port(), free_port()
    y = config(listen, admin, echo.port, collector.port, runtime="tracing.zipkin.min_flush_spans: 1")
    start(procs, as_aggregate(y, "zipkin"), admin)
    assert get(listen)[0] == 200
    wait_for(lambda: collector.spans(), 10, "the span")
    wait_for(lambda: stat(admin, "tracing.zipkin.reports_sent") == 1, 5, "reports_sent")
    assert stat(admin, "cluster.zipkin_m.upstream_rq_total") == 1
    assert not stat(admin, "tracing.zipkin.reports_dropped")


def test_http2_downstream_and_post_body(procs, echo, collector):
    """An HTTP/2 request with a body: the span says HTTP/2, its request
    and response sizes, and its name comes from the caller's
    x-envoy-decorator-operation (ingress), which the upstream does not see."""
    listen, admin = free_port(), free_port()
    start(procs, config(listen, admin, echo.port, collector.port, runtime="tracing.zipkin.min_flush_spans: 1"),
          admin)
    # with its length, so that the upstream (which reads a body only by its
    # content-length) answers after the body: a response before it would end
    # the stream with none of the body received
    st, hdrs, body = h2_request(listen, "/upload", method="POST", body=b"x" * 1000,
                                headers={"x-envoy-decorator-operation": "caller-op", "content-length": "1000"})
    assert st == 200
    e = json.loads(body)
    assert seen(e, "x-envoy-decorator-operation") is None
    # the caller's operation replaced the decorator's: none goes back
    assert "x-envoy-decorator-operation" not in hdrs
    wait_for(lambda: collector.spans(), 10, "the span")
    sp = collector.spans()[0]
    assert sp["name"] == "caller-op"
    assert sp["tags"]["http.protocol"] == "HTTP/2" and sp["tags"]["http.method"] == "POST"
    assert sp["tags"]["request_size"] == "1000" and sp["tags"]["response_size"] == str(len(body))


def test_lds_listener_with_bootstrap_provider(procs, echo, collector, tmp_path):
    """A listener from LDS (a file) whose connection manager has tracing and
    no provider takes the bootstrap's tracing.http; its egress spans reach
    the collector through the reporter made when the listener arrived."""
    listen, admin = free_port(), free_port()
    hcm = {"@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3."
                    "HttpConnectionManager",
           "stat_prefix": "lds_http", "tracing": {},
           "route_config": {"virtual_hosts": [{"name": "all", "domains": ["*"], "routes": [
               {"match": {"prefix": "/"}, "route": {"cluster": "backend"},
                "decorator": {"operation": "from-lds"}}]}]},
           "http_filters": [{"name": "router", "typed_config": {
               "@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"}}]}
    listener = {"@type": "type.googleapis.com/envoy.config.listener.v3.Listener", "name": "lds",
                "address": {"socket_address": {"address": "127.0.0.1", "port_value": listen}},
                "traffic_direction": "OUTBOUND", "filter_chains": [{"filters": [
                    {"name": "envoy.filters.network.http_connection_manager", "typed_config": hcm}]}]}
    lds = tmp_path / "lds.json"
    lds.write_text(json.dumps({"version_info": "1", "resources": [listener]}))
    y = f"""node: {{ id: lds-node, cluster: lds-proxy }}
admin:
  address: {{ socket_address: {{ address: 127.0.0.1, port_value: {admin} }} }}
dynamic_resources:
  lds_config: {{ path_config_source: {{ path: {lds} }} }}
static_resources:
  clusters:
  - name: backend
    type: STATIC
    load_assignment:
      cluster_name: backend
      endpoints: [ {{ lb_endpoints: [ {{ endpoint: {{ address: {{ socket_address: {{ address: 127.0.0.1, port_value: {echo.port} }} }} }} }} ] }} ]
  - name: zipkin
    type: STATIC
    load_assignment:
      cluster_name: zipkin
      endpoints: [ {{ lb_endpoints: [ {{ endpoint: {{ address: {{ socket_address: {{ address: 127.0.0.1, port_value: {collector.port} }} }} }} }} ] }} ]
tracing:
  http:
    name: envoy.tracers.zipkin
    typed_config:
      "@type": type.googleapis.com/envoy.config.trace.v3.ZipkinConfig
      collector_cluster: zipkin
      collector_endpoint: /api/v2/spans
      collector_endpoint_version: HTTP_JSON
layered_runtime:
  layers:
  - name: static
    static_layer: {{ tracing.zipkin.min_flush_spans: 1 }}
"""
    start(procs, y, admin)
    wait_port(listen)
    _, _, e = get(listen)
    assert seen(e, "x-envoy-decorator-operation") == "from-lds"
    wait_for(lambda: collector.spans(), 10, "the span of the LDS listener")
    sp = collector.spans()[0]
    assert sp["kind"] == "CLIENT" and sp["name"] == "from-lds"
    assert sp["localEndpoint"]["serviceName"] == "lds-proxy"
    assert seen(e, "x-b3-spanid") == sp["id"]


def test_dead_collector_loses_no_request(procs, echo):
    """A collector port nobody listens on: every proxied request succeeds;
    each report gets the router's 503 (connection failure), which Envoy's
    async client delivers as a response: reports_dropped."""
    listen, admin, dead = free_port(), free_port(), free_port()
    start(procs, config(listen, admin, echo.port, dead), admin)
    for _ in range(20):
        st, _, e = get(listen)
        assert st == 200
    wait_for(lambda: stat(admin, "tracing.zipkin.reports_dropped") == 4, 15, "four dropped reports")
    assert stat(admin, "tracing.zipkin.spans_sent") == 20
    assert stat(admin, "tracing.zipkin.reports_sent") == 0
    assert stat(admin, "tracing.zipkin.reports_failed") == 0
    assert stat(admin, "cluster.zipkin.upstream_rq_503") == 4
    st, _, _ = get(listen)
    assert st == 200


class RawCollector:
    """A collector on a raw socket: `answer` (bytes, or None to say
    nothing) is written once a request head arrived, then the connection
    stays open (hold) or is closed."""

    def __init__(self, answer, hold):
        import socket
        self.srv = socket.socket()
        self.srv.bind(("127.0.0.1", 0))
        self.srv.listen(64)
        self.port = self.srv.getsockname()[1]
        self.held = []
        self.stop = threading.Event()

        def serve():
            self.srv.settimeout(0.1)
            while not self.stop.is_set():
                try:
                    c = self.srv.accept()[0]
                except OSError:
                    continue
                c.settimeout(5)
                data = b""
                try:
                    while b"\r\n\r\n" not in data:
                        chunk = c.recv(65536)
                        if not chunk:
                            break
                        data += chunk
                    if answer:
                        c.sendall(answer)
                except OSError:
                    pass
                if hold:
                    self.held.append(c)
                else:
                    c.close()

        self.t = threading.Thread(target=serve, daemon=True)
        self.t.start()

    def close(self):
        self.stop.set()
        self.t.join()
        for c in self.held:
            c.close()
        self.srv.close()


def test_slow_collector_times_out(procs, echo):
    """A collector that never answers: each report gets the router's 504 at
    tracing.zipkin.request_timeout (reports_dropped); proxied requests do
    not wait."""
    rc = RawCollector(None, hold=True)
    try:
        listen, admin = free_port(), free_port()
        start(procs, config(listen, admin, echo.port, rc.port,
                            runtime="tracing.zipkin.min_flush_spans: 1, tracing.zipkin.request_timeout: 300"), admin)
        for _ in range(3):
            assert get(listen)[0] == 200
        wait_for(lambda: stat(admin, "tracing.zipkin.reports_dropped") == 3, 10, "three timed out reports")
        assert stat(admin, "cluster.zipkin.upstream_rq_timeout") == 3
        assert stat(admin, "cluster.zipkin.upstream_rq_504") == 3
        assert stat(admin, "tracing.zipkin.reports_sent") == 0
    finally:
        rc.close()


def test_collector_cutting_its_answer_counts_failed(procs, echo):
    """A 202 whose body never comes whole (the collector closes): the
    response was cut, a stream reset for Envoy's async client:
    reports_failed."""
    rc = RawCollector(b"HTTP/1.1 202 Accepted\r\ncontent-length: 100\r\n\r\nabc", hold=False)
    try:
        listen, admin = free_port(), free_port()
        start(procs, config(listen, admin, echo.port, rc.port, runtime="tracing.zipkin.min_flush_spans: 1"), admin)
        assert get(listen)[0] == 200
        wait_for(lambda: stat(admin, "tracing.zipkin.reports_failed") == 1, 10, "a failed report")
        assert stat(admin, "tracing.zipkin.reports_sent") == 0
        assert stat(admin, "tracing.zipkin.reports_dropped") == 0
    finally:
        rc.close()


def test_collector_refusing_counts_dropped(procs, echo):
    c = Collector(status=500)
    try:
        listen, admin = free_port(), free_port()
        start(procs, config(listen, admin, echo.port, c.port, runtime="tracing.zipkin.min_flush_spans: 1"), admin)
        get(listen)
        wait_for(lambda: stat(admin, "tracing.zipkin.reports_dropped") == 1, 10, "a dropped report")
        assert stat(admin, "tracing.zipkin.reports_sent") == 0
    finally:
        c.close()


def test_error_tag_and_path_length(procs, echo, collector):
    """A 503 (no healthy upstream) is tagged error; http.url is cut at
    max_path_tag_length."""
    listen, admin, dead = free_port(), free_port(), free_port()
    y = config(listen, admin, dead, collector.port, hcm_tracing_extra="max_path_tag_length: 4",
               runtime="tracing.zipkin.min_flush_spans: 1")
    start(procs, y, admin)
    st, _, _ = h1_request(listen, "/abcdefgh")
    assert st == 503
    wait_for(lambda: collector.spans(), 10, "the span")
    tags = collector.spans()[0]["tags"]
    assert tags["error"] == "true" and tags["http.status_code"] == "503"
    assert tags["http.url"] == f"http://127.0.0.1:{listen}/abc"
    assert tags["response_flags"] == "UF"


def base(listen=10000, admin=10001):
    return config(listen, admin, 1, 2)


@pytest.mark.parametrize("change, message", [
    ("collector_endpoint_version: HTTP_JSON", None),
    ("collector_endpoint_version: HTTP_PROTO", "HTTP_PROTO (Zipkin protobuf over HTTP) is not supported"),
    ("collector_endpoint_version: GRPC", "GRPC is not supported"),
    ("collector_endpoint_version: DEPRECATED_AND_UNAVAILABLE_DO_NOT_USE", "hidden_envoy_deprecated_HTTP_JSON_V1"),
    ("collector_cluster: nowhere", "envoy.tracers.zipkin: unknown cluster 'nowhere'"),
    ("split_spans_for_request: true", "split_spans_for_request"),
])
def test_zipkin_config_validation(change, message):
    key = change.split(":")[0]
    lines = [ln for ln in base().splitlines() if ln.strip().split(":")[0] != key]
    i = next(i for i, ln in enumerate(lines) if "collector_endpoint:" in ln)
    lines.insert(i, " " * (len(lines[i]) - len(lines[i].lstrip())) + change)
    rc, out = validate_config("\n".join(lines) + "\n")
    if message is None:
        assert rc == 0, out
    else:
        assert rc != 0 and message in out, out


@pytest.mark.parametrize("extra, message", [
    ("verbose: true", "verbose tracing"),
    ("custom_tags: [ { tag: t, metadata: { kind: { request: {} } } } ]", "metadata custom tags"),
    ("custom_tags: [ { tag: t } ]", "custom_tags[0]: type: value is required"),
    ("custom_tags: [ { tag: t, literal: { value: '' } } ]", "literal.value"),
    ("spawn_upstream_span: true", "spawn_upstream_span"),
])
def test_refused_tracing_fields(extra, message):
    rc, out = validate_config(config(10000, 10001, 1, 2, hcm_tracing_extra=extra))
    assert rc != 0 and message in out, out


@pytest.mark.parametrize("extra", ["verbose: false", "spawn_upstream_span: false", "max_path_tag_length: 10",
                                   "client_sampling: { value: 50 }", "overall_sampling: { value: 99.99 }"])
def test_accepted_tracing_fields(extra):
    rc, out = validate_config(config(10000, 10001, 1, 2, hcm_tracing_extra=extra))
    assert rc == 0, out


CORPUS_FILES = ["examples__zipkin__envoy-1.yaml", "examples__zipkin__envoy-2.yaml",
                "examples__zipkin__envoy-front-proxy.yaml", "examples__jaeger-tracing__envoy.yaml",
                "istio__pkg__bootstrap__testdata__tracing_zipkin_golden.json"]


@pytest.mark.skipif(not os.path.isdir(CORPUS), reason="no Envoy corpus on this machine")
@pytest.mark.parametrize("name", CORPUS_FILES)
def test_corpus_zipkin_configs_validate(name):
    with open(os.path.join(CORPUS, name)) as f:
        text = f.read()
    rc, out = validate_config(text, suffix=os.path.splitext(name)[1])
    assert rc == 0, out
