"""Datadog tracing (envoy.tracers.datadog): the real sharp binary in front
of an upstream that echoes the request headers it received, reporting to a
fake Datadog agent on loopback (an HTTP server decoding the msgpack traces
POSTed to /v0.4/traces with python3-msgpack). Checks the spans (trace,
span and parent ids from incoming x-datadog-* and W3C headers, name,
resource, service, type, meta, metrics, error), the headers the upstream
saw (Datadog and W3C), the sampling priority kept or decided, malformed
contexts, the report's headers, the stats with a live, a failing and a
dead agent, refusals by name and the corpus configs."""
import concurrent.futures
import http.server
import json
import threading

import msgpack
import pytest

from conftest import (PathEchoUpstream, Sharp, bootstrap_yaml, free_port, h1_request, stat, validate_config,
                      wait_for)

CORPUS = "/work/shared/envoy-corpus"
FLUSH_WAIT = 10  # the reporter flushes every 2 s


class FakeAgent:
    """A Datadog agent: keeps (method, path, headers, decoded traces) of
    every report and answers `status` with a rate_by_service body."""

    def __init__(self, status=200):
        self.reports = []
        self.sizes = []
        self.status = status
        self.answer = b'{"rate_by_service":{"service:,env:":1}}'
        self.lock = threading.Lock()
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _report(self):
                body = self.rfile.read(int(self.headers.get("content-length") or 0))
                traces = msgpack.unpackb(body, raw=False, strict_map_key=False)
                with outer.lock:
                    outer.sizes.append(len(body))
                    outer.reports.append((self.command, self.path, {k.lower(): v for k, v in self.headers.items()},
                                          traces))
                answer = outer.answer
                self.send_response(outer.status)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            do_POST = do_PUT = _report

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def spans(self):
        with self.lock:
            return [sp for _, _, _, traces in self.reports for trace in traces for sp in trace]

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def agent():
    a = FakeAgent()
    yield a
    a.close()


@pytest.fixture
def echo():
    u = PathEchoUpstream()
    yield u
    u.close()


ROUTES = ('- match: { prefix: "/deco" }\n  route: { cluster: backend }\n  decorator: { operation: checkout }\n'
          '- match: { prefix: "/" }\n  route: { cluster: backend }\n')


def config(listen, admin, upstream_port, agent_port, provider=None, direction="INBOUND", random_sampling=None):
    if provider is None:
        provider = "collector_cluster: datadog_agent\nservice_name: front-dd\n"
    hcm = ("tracing:\n" + (f"  random_sampling: {{ value: {random_sampling} }}\n" if random_sampling is not None else "")
           + "  provider:\n    name: envoy.tracers.datadog\n    typed_config:\n"
           + '      "@type": type.googleapis.com/envoy.config.trace.v3.DatadogConfig\n'
           + "".join("      " + ln + "\n" for ln in provider.splitlines()))
    y = bootstrap_yaml(listen, admin, {"backend": [upstream_port], "datadog_agent": [agent_port]}, routes=ROUTES,
                       hcm_extra=hcm, listener_extra=f"traffic_direction: {direction}\n")
    return "node: { id: node-1, cluster: front, locality: { zone: z1 } }\n" + y


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


def n_spans(agent, n, what):
    return wait_for(lambda: len(agent.spans()) >= n and agent.spans(), FLUSH_WAIT, what)


def test_datadog_context_spans_and_report(procs, echo, agent):
    listen, admin = free_port(), free_port()
    start(procs, config(listen, admin, echo.port, agent.port), admin)
    st, _, e = get(listen, {"x-datadog-trace-id": "1234", "x-datadog-parent-id": "5678",
                            "x-datadog-sampling-priority": "2", "x-datadog-origin": "synthetics",
                            "x-datadog-tags": "_dd.p.dm=-4,other=x", "user-agent": "it-client"})
    assert st == 200
    # propagated to the upstream: the same trace, this span as the parent
    assert seen(e, "x-datadog-trace-id") == "1234"
    child = int(seen(e, "x-datadog-parent-id"))
    assert child not in (5678, 0) and child < 2 ** 63
    assert seen(e, "x-datadog-sampling-priority") == "2"
    assert seen(e, "x-datadog-origin") == "synthetics"
    assert seen(e, "x-datadog-tags") == "_dd.p.dm=-4"
    assert seen(e, "traceparent") == f"00-{1234:032x}-{child:016x}-01"
    assert seen(e, "tracestate") == f"dd=s:2;p:{child:016x};o:synthetics;t.dm:-4"
    sp = n_spans(agent, 1, "the span")[0]
    assert sp["trace_id"] == 1234 and sp["parent_id"] == 5678 and sp["span_id"] == child
    assert sp["name"] == "envoy.proxy" and sp["resource"] == "checkout"  # the decorator
    assert sp["service"] == "front-dd" and sp["type"] == "web" and sp["error"] == 0
    assert sp["start"] > 10 ** 18 and 0 < sp["duration"] < 10 ** 10  # nanoseconds
    m = sp["meta"]
    assert m["_dd.origin"] == "synthetics" and m["_dd.p.dm"] == "-4" and "other" not in m
    assert "_dd.parent_id" not in m and "_dd.propagation_error" not in m
    assert m["http.method"] == "GET" and m["http.status_code"] == "200" and m["user_agent"] == "it-client"
    assert m["upstream_cluster"] == "backend" and m["component"] == "proxy"
    assert m["node_id"] == "node-1" and m["zone"] == "z1"
    assert m["http.url"].endswith("/deco/shop?item=1")
    assert m["language"] == "cpp" and len(m["runtime-id"]) == 36 and m["version"].startswith("envoy ")
    assert sp["metrics"]["_sampling_priority_v1"] == 2 and sp["metrics"]["process_id"] > 0
    assert "_dd.agent_psr" not in sp["metrics"]
    method, path, hdrs, traces = agent.reports[0]
    assert (method, path) == ("POST", "/v0.4/traces")
    assert hdrs["content-type"] == "application/msgpack"
    assert hdrs["datadog-meta-lang"] == "cpp" and hdrs["datadog-meta-tracer-version"]
    assert hdrs["datadog-meta-lang-version"]
    assert hdrs["x-datadog-trace-count"] == str(len(traces)) == "1"
    assert hdrs["host"] == "datadog_agent"
    wait_for(lambda: stat(admin, "tracing.datadog.reports_sent") == 1, 10, "reports_sent")
    assert stat(admin, "tracing.datadog.reports_dropped") == 0
    assert stat(admin, "tracing.datadog.reports_failed") == 0
    assert stat(admin, "tracing.datadog.reports_skipped_no_cluster") == 0


def test_new_trace_batched_and_runtime_id(procs, echo, agent):
    listen, admin = free_port(), free_port()
    agent.answer = b"{}"  # no rates: every trace is decided by the default rate ("-0")
    start(procs, config(listen, admin, echo.port, agent.port), admin)
    echoed = []
    for _ in range(3):
        st, _, e = get(listen, path="/plain")
        assert st == 200
        echoed.append(e)
    spans = n_spans(agent, 3, "3 spans")
    assert len(spans) == 3
    by_id = {sp["span_id"]: sp for sp in spans}
    for e in echoed:
        tid, sid = int(seen(e, "x-datadog-trace-id")), int(seen(e, "x-datadog-parent-id"))
        assert tid == sid  # a root span's id is its trace id's low half
        sp = by_id[sid]
        assert sp["trace_id"] == tid and sp["parent_id"] == 0 and sp["resource"] == "ingress"
        assert seen(e, "x-datadog-sampling-priority") == "1"
        hi = sp["meta"]["_dd.p.tid"]
        assert len(hi) == 16 and hi.endswith("00000000")  # the start's seconds in the top 32 bits
        assert seen(e, "x-datadog-tags") == f"_dd.p.tid={hi},_dd.p.dm=-0"
        assert seen(e, "traceparent") == f"00-{hi}{tid:016x}-{sid:016x}-01"
        assert seen(e, "tracestate") == f"dd=s:1;p:{sid:016x};t.dm:-0"
        assert sp["meta"]["_dd.p.dm"] == "-0"
        assert sp["metrics"]["_sampling_priority_v1"] == 1 and sp["metrics"]["_dd.agent_psr"] == 1.0
    # one runtime id for the process; the three traces most likely in one report
    assert len({sp["meta"]["runtime-id"] for sp in spans}) == 1
    total = sum(int(h["x-datadog-trace-count"]) for _, _, h, _ in agent.reports)
    assert total == 3


def test_pending_traces_bounded_by_bytes(procs, echo, agent):
    """Traces of ~50 KB each (a large x-datadog-tags lands in the span's
    meta): a reporter holds at most 4 MiB of them between flushes, the
    rest dropped and counted in reports_dropped; every trace taken is sent."""
    listen, admin = free_port(), free_port()
    start(procs, config(listen, admin, echo.port, agent.port), admin)
    tags = ",".join(f"_dd.p.k{i}={'v' * 40}" for i in range(1000))
    headers = {"x-datadog-trace-id": "77", "x-datadog-parent-id": "88", "x-datadog-tags": tags}
    sent = 0
    with concurrent.futures.ThreadPoolExecutor(16) as pool:
        while not stat(admin, "tracing.datadog.reports_dropped") and sent < 1200:
            statuses = list(pool.map(lambda _: get(listen, headers, path="/plain")[0], range(100)))
            assert statuses == [200] * 100
            sent += 100
    dropped = stat(admin, "tracing.datadog.reports_dropped")
    assert dropped >= 1, "no trace dropped"
    wait_for(lambda: len(agent.spans()) + stat(admin, "tracing.datadog.reports_dropped") >= sent, FLUSH_WAIT,
             "every trace sent or dropped")
    with agent.lock:
        assert agent.sizes and max(agent.sizes) <= 4 * 1024 * 1024 + 16
    sp = agent.spans()[0]
    assert sp["meta"]["_dd.p.k999"] == "v" * 40 and sp["trace_id"] == 77
    assert stat(admin, "tracing.datadog.reports_failed") == 0


def test_sampling_priority(procs, echo, agent):
    listen, admin = free_port(), free_port()
    # Envoy's decision drops every trace without a priority of its own
    start(procs, config(listen, admin, echo.port, agent.port, random_sampling=0), admin)
    st, _, e = get(listen, path="/plain")
    assert st == 200
    assert seen(e, "x-datadog-sampling-priority") == "-1"
    assert seen(e, "traceparent").endswith("-00")
    assert "_dd.p.dm" not in (seen(e, "x-datadog-tags") or "")
    # a priority the caller sends is honoured over the decision
    st, _, e2 = get(listen, {"x-datadog-trace-id": "77", "x-datadog-parent-id": "88",
                             "x-datadog-sampling-priority": "1"}, path="/plain")
    assert seen(e2, "x-datadog-sampling-priority") == "1" and seen(e2, "traceparent").endswith("-01")
    st, _, e3 = get(listen, {"x-datadog-trace-id": "79", "x-datadog-parent-id": "88",
                             "x-datadog-sampling-priority": "0"}, path="/plain")
    assert seen(e3, "x-datadog-sampling-priority") == "0"
    # every trace goes to the agent, the dropped ones too, with their priority
    spans = n_spans(agent, 3, "3 spans")
    prio = {sp["trace_id"]: sp["metrics"]["_sampling_priority_v1"] for sp in spans}
    assert prio[77] == 1 and prio[79] == 0
    dropped = [sp for sp in spans if sp["trace_id"] not in (77, 79)][0]
    assert prio[dropped["trace_id"]] == -1 and "_dd.p.dm" not in dropped["meta"]


def test_agent_rates_sample(procs, echo, agent):
    listen, admin = free_port(), free_port()
    # the agent answers rate 0 for this service: once its first answer
    # came, new traces Envoy traces are dropped by the sampler (AUTO_DROP)
    agent.answer = b'{"rate_by_service":{"service:,env:":1,"service:front-dd,env:":0}}'
    start(procs, config(listen, admin, echo.port, agent.port), admin)
    st, _, e = get(listen, path="/plain")
    assert seen(e, "x-datadog-sampling-priority") == "1"
    wait_for(lambda: stat(admin, "tracing.datadog.reports_sent") == 1, FLUSH_WAIT, "the first report answered")
    st, _, e = get(listen, path="/plain")
    assert seen(e, "x-datadog-sampling-priority") == "0" and seen(e, "traceparent").endswith("-00")
    spans = n_spans(agent, 2, "the second span")
    sp = spans[1]
    assert sp["metrics"]["_sampling_priority_v1"] == 0 and sp["metrics"]["_dd.agent_psr"] == 0
    assert "_dd.p.dm" not in sp["meta"]
    # an answer that is not JSON changes nothing
    agent.answer = b"not json"
    wait_for(lambda: stat(admin, "tracing.datadog.reports_sent") == 2, FLUSH_WAIT, "the second report answered")
    st, _, e = get(listen, path="/plain")
    assert seen(e, "x-datadog-sampling-priority") == "0"


def test_w3c_context(procs, echo, agent):
    listen, admin = free_port(), free_port()
    start(procs, config(listen, admin, echo.port, agent.port, direction="OUTBOUND"), admin)
    trace = "0af7651916cd43dd8448eb211c80319c"
    st, _, e = h1_request(listen, "/plain", headers={
        "host": "svc.local", "traceparent": f"00-{trace}-b7ad6b7169203331-01",
        "tracestate": "vendor=1,dd=s:2;o:rum;t.dm:-3;x:y,other=2"})
    assert st == 200
    e = json.loads(e)
    child = int(seen(e, "x-datadog-parent-id"))
    assert seen(e, "x-datadog-trace-id") == str(int(trace[16:], 16))
    assert seen(e, "traceparent") == f"00-{trace}-{child:016x}-01"
    assert seen(e, "tracestate") == f"dd=s:2;p:{child:016x};o:rum;t.dm:-3;x:y,vendor=1,other=2"
    assert seen(e, "x-datadog-tags") == f"_dd.p.dm=-3,_dd.p.tid={trace[:16]}"
    sp = n_spans(agent, 1, "the span")[0]
    assert sp["trace_id"] == int(trace[16:], 16) and sp["parent_id"] == 0xb7ad6b7169203331
    assert sp["resource"] == "egress svc.local"
    assert sp["meta"]["_dd.p.tid"] == trace[:16] and sp["meta"]["_dd.origin"] == "rum"
    assert sp["meta"]["_dd.parent_id"] == "0" * 16  # tracestate named no Datadog parent
    assert sp["metrics"]["_sampling_priority_v1"] == 2


def test_malformed_context_starts_a_new_trace(procs, echo, agent):
    listen, admin = free_port(), free_port()
    start(procs, config(listen, admin, echo.port, agent.port), admin)
    for hdrs in ({"x-datadog-trace-id": "12ab", "x-datadog-parent-id": "5"},  # not decimal
                 {"x-datadog-trace-id": "12"},  # no parent, no origin
                 {"x-datadog-parent-id": "12"},  # no trace
                 {"traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-1"}):
        st, _, e = get(listen, hdrs, path="/plain")
        assert st == 200
        assert seen(e, "x-datadog-trace-id") == seen(e, "x-datadog-parent-id")  # a new root
        assert seen(e, "x-datadog-trace-id") not in ("12", "5")
    # a trace id with an origin and no parent: this span roots that trace
    st, _, e = get(listen, {"x-datadog-trace-id": "42", "x-datadog-origin": "synthetics"}, path="/plain")
    assert seen(e, "x-datadog-trace-id") == "42"
    spans = n_spans(agent, 5, "5 spans")
    root = [sp for sp in spans if sp["trace_id"] == 42][0]
    assert root["parent_id"] == 0 and root["meta"]["_dd.origin"] == "synthetics"


def test_error_span_and_collector_hostname(procs, agent):
    listen, admin = free_port(), free_port()
    dead = free_port()  # nothing listens: the router answers 503
    provider = "collector_cluster: datadog_agent\nservice_name: svc\ncollector_hostname: agent.example:8126\n"
    start(procs, config(listen, admin, dead, agent.port, provider=provider), admin)
    st, _, _ = h1_request(listen, "/plain")
    assert st == 503
    sp = n_spans(agent, 1, "the span")[0]
    assert sp["error"] == 1 and sp["meta"]["http.status_code"] == "503" and "error" not in sp["meta"]
    assert agent.reports[0][2]["host"] == "agent.example:8126"


def test_agent_answering_an_error_counts_dropped(procs, echo):
    a = FakeAgent(status=500)
    try:
        listen, admin = free_port(), free_port()
        start(procs, config(listen, admin, echo.port, a.port), admin)
        assert get(listen)[0] == 200
        wait_for(lambda: stat(admin, "tracing.datadog.reports_dropped") == 1, FLUSH_WAIT, "reports_dropped")
        assert stat(admin, "tracing.datadog.reports_sent") == 0
    finally:
        a.close()


def test_dead_agent_loses_no_request(procs, echo):
    listen, admin = free_port(), free_port()
    dead = free_port()
    start(procs, config(listen, admin, echo.port, dead), admin)
    for _ in range(30):
        assert get(listen, {"x-datadog-trace-id": "1", "x-datadog-parent-id": "2"})[0] == 200
    # the router's 503 for the dead agent is a response: reports_dropped
    wait_for(lambda: (stat(admin, "tracing.datadog.reports_dropped") or 0) >= 1, FLUSH_WAIT, "a dropped report")
    assert stat(admin, "tracing.datadog.reports_sent") == 0
    assert get(listen)[0] == 200


def test_silent_agent_times_out(procs, echo):
    """An agent that takes the connection and never answers: each report
    ends at the 2 s timeout as the router's 504, reports_dropped."""
    import socket
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(16)
    held = []
    stop = threading.Event()

    def accept():
        srv.settimeout(0.2)
        while not stop.is_set():
            try:
                c, _ = srv.accept()
                held.append(c)
            except OSError:
                pass

    t = threading.Thread(target=accept, daemon=True)
    t.start()
    try:
        listen, admin = free_port(), free_port()
        start(procs, config(listen, admin, echo.port, srv.getsockname()[1]), admin)
        assert get(listen)[0] == 200
        wait_for(lambda: stat(admin, "tracing.datadog.reports_dropped") == 1, FLUSH_WAIT, "the timed out report")
        assert stat(admin, "tracing.datadog.reports_sent") == 0
        assert stat(admin, "cluster.datadog_agent.upstream_rq_timeout") == 1
        assert get(listen)[0] == 200
    finally:
        stop.set()
        t.join(5)
        for c in held:
            c.close()
        srv.close()


@pytest.mark.parametrize("provider, needle", [
    ("collector_cluster: datadog_agent\nservice_name: s\nremote_config: { polling_interval: 5s }\n",
     "remote_config"),
    ("collector_cluster: nowhere\nservice_name: s\n", "nowhere"),
    ("collector_cluster: datadog_agent\n", "service_name"),
])
def test_refused(provider, needle):
    rc, out = validate_config(config(free_port(), free_port(), 1, 2, provider=provider))
    assert rc != 0 and needle in out, out


def test_corpus_configs_validate():
    with open(f"{CORPUS}/examples__datadog-tracing__envoy.yaml") as f:
        rc, out = validate_config(f.read())
    assert rc == 0, out
    with open(f"{CORPUS}/istio__pkg__bootstrap__testdata__tracing_datadog_golden.json") as f:
        rc, out = validate_config(f.read(), suffix=".json")
    assert rc == 0, out
