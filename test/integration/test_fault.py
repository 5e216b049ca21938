"""envoy.filters.http.fault in the data path: fixed and header-controlled
aborts (HTTP and gRPC statuses), delays (fixed and by header, then an
abort), percentages (0, 100, fractional over many samples, the header
percentage capped by the configured one, a runtime override), the targets
(headers, upstream_cluster, downstream_nodes), max_active_faults across
workers, the per-route config replacing the filter's (and disabling it),
the response rate limit (timed, bounded, the upstream paused), a client
abandoning a delayed request, Envoy's stats and the DI/FI response flags,
refused configs, and Envoy's fault injection example."""
import json
import os
import socket
import threading
import time

import grpc
import pytest

from conftest import (PROTOS, SLOW, bootstrap_yaml, file_access_log, free_port, log_lines, protos, run_sharp_config,
                      stat, upstream_admin, validate_config, wait_for, Upstream)

H1 = PROTOS["h1"]
TYPE = "type.googleapis.com/envoy.extensions.filters.http.fault.v3.HTTPFault"
CORPUS = "/work/shared/envoy-corpus"
LOG = "%RESPONSE_CODE% %RESPONSE_FLAGS% %RESPONSE_CODE_DETAILS% %REQ(:PATH)%\\n"
P = "http.ingress_http.fault."


def indent(text, n):
    return "".join(" " * n + ln + "\n" for ln in text.splitlines())


def with_filter(yaml_text, cfg):
    f = "- name: envoy.filters.http.fault\n  typed_config:\n" + indent(f'"@type": {TYPE}\n' + cfg, 4)
    return yaml_text.replace("          http_filters:\n", "          http_filters:\n" + indent(f, 10))


def start(procs, upstream, cfg, routes=None, clusters=None, runtime=None, cluster_extra=""):
    """SHARP with the fault filter (`cfg`, an HTTPFault in YAML) before the
    router and an access log of LOG; returns (port, admin, log path)."""
    listen, admin = free_port(), free_port()
    al, log = file_access_log(LOG)
    y = bootstrap_yaml(listen, admin, clusters or {"backend": [upstream.port]}, routes=routes, hcm_extra=al,
                       cluster_extra=cluster_extra)
    y = with_filter(y, cfg)
    if runtime:
        y += "layered_runtime:\n  layers:\n  - name: static\n    static_layer:\n" + indent(runtime, 6)
    run_sharp_config(procs, y, admin)
    return listen, admin, log


def upstream_requests(u):
    return upstream_admin(u, "/admin/stats")["requests"]


def timed(port, path="/", headers=None, proto=H1, timeout=10):
    t0 = time.monotonic()
    s, h, b = proto.request(port, path, headers=headers, timeout=timeout * SLOW)
    return s, h, b, time.monotonic() - t0


def grpc_call(port, metadata=None, timeout=5):
    with grpc.insecure_channel(f"127.0.0.1:{port}") as ch:
        stub = ch.unary_unary("/sharp.test.Echo/Say", request_serializer=lambda b: b,
                              response_deserializer=lambda b: b)
        with pytest.raises(grpc.RpcError) as e:
            stub(b"\x0a\x02hi", timeout=timeout * SLOW, metadata=metadata)
        return e.value


ABORT_503 = "abort: { http_status: 503, percentage: { numerator: 100 } }\n"


@protos("h1", "h2-down")
def test_fixed_abort(procs, upstream, proto):
    """http_status 503 at 100%: every request gets the local reply "fault
    filter abort" with FI and details fault_filter_abort; the upstream sees
    none of them; aborts_injected counts them; active_faults is back at 0."""
    port, admin, log = start(procs, upstream, ABORT_503)
    before = upstream_requests(upstream)
    again = upstream_requests(upstream)
    per_admin = again - before  # the upstream may count its own admin requests
    for _ in range(4):
        s, h, b = proto.request(port, "/echo")
        assert s == 503 and b == b"fault filter abort", (s, b)
        assert h["content-type"] == "text/plain"
    assert upstream_requests(upstream) - again == per_admin
    assert stat(admin, P + "aborts_injected") == 4
    assert stat(admin, P + "delays_injected") == 0
    assert stat(admin, P + "active_faults") == 0
    assert set(log_lines(log, 4)) == {"503 FI fault_filter_abort /echo"}


def test_grpc_abort(procs, upstream):
    """grpc_status 8: a gRPC client gets RESOURCE_EXHAUSTED from a
    trailers-only HTTP 200; an http_status abort of a gRPC request maps as
    any local reply (503: UNAVAILABLE); a plain HTTP request to the gRPC
    abort gets HTTP 200 "fault filter abort" (Envoy sends the gRPC status
    only to gRPC requests)."""
    port, admin, log = start(procs, upstream, "abort: { grpc_status: 8, percentage: { numerator: 100 } }\n")
    err = grpc_call(port)
    assert err.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert err.details() == "fault filter abort"
    s, h, b = H1.request(port, "/plain")
    assert s == 200 and b == b"fault filter abort" and "grpc-status" not in h
    assert stat(admin, P + "aborts_injected") == 2
    assert sorted(log_lines(log, 2)) == ["200 FI fault_filter_abort /plain",
                                         "200 FI fault_filter_abort /sharp.test.Echo/Say"]

    port, _, _ = start(procs, upstream, ABORT_503)
    assert grpc_call(port).code() == grpc.StatusCode.UNAVAILABLE


def test_abort_by_header(procs, upstream):
    """header_abort: x-envoy-fault-abort-request (a status in [200, 600)),
    else x-envoy-fault-abort-grpc-request; without a usable header the
    request goes upstream; x-envoy-fault-abort-request-percentage 0 turns
    the abort off."""
    port, admin, _ = start(procs, upstream, "abort: { header_abort: {}, percentage: { numerator: 100 } }\n")
    assert H1.request(port, "/")[0] == 200
    s, _, b = H1.request(port, "/", headers={"x-envoy-fault-abort-request": "429"})
    assert (s, b) == (429, b"fault filter abort")
    assert H1.request(port, "/", headers={"x-envoy-fault-abort-request": " +418 "})[0] == 418
    for bad in ("199", "600", "abc", "-500", "5O3"):
        assert H1.request(port, "/", headers={"x-envoy-fault-abort-request": bad})[0] == 200, bad
    assert H1.request(port, "/", headers={"x-envoy-fault-abort-request": "500",
                                          "x-envoy-fault-abort-request-percentage": "0"})[0] == 200
    assert H1.request(port, "/", headers={"x-envoy-fault-abort-request": "500",
                                          "x-envoy-fault-abort-request-percentage": "100"})[0] == 500
    err = grpc_call(port, metadata=[("x-envoy-fault-abort-grpc-request", "5")])
    assert err.code() == grpc.StatusCode.NOT_FOUND
    assert stat(admin, P + "aborts_injected") == 4


def test_filter_metadata(procs, upstream):
    """filter_metadata replaces the filter's dynamic metadata namespace (its
    name) when a delay or abort begins, as the access log shows; a request
    without a fault has none, and a fault without filter_metadata sets it
    empty."""
    listen, admin = free_port(), free_port()
    al, log = file_access_log("%RESPONSE_CODE% %DYNAMIC_METADATA(envoy.filters.http.fault)%\\n")
    routes = ('- match: { prefix: "/plain" }\n  route: { cluster: backend }\n'
              "  typed_per_filter_config:\n    envoy.filters.http.fault:\n"
              + indent(f'"@type": {TYPE}\n' + ABORT_503, 6)
              + '- match: { prefix: "/" }\n  route: { cluster: backend }\n')
    y = bootstrap_yaml(listen, admin, {"backend": [upstream.port]}, routes=routes, hcm_extra=al)
    cfg = ("abort: { header_abort: {}, percentage: { numerator: 100 } }\n"
           "filter_metadata: { experiment: chaos-1, weight: 2 }\n")
    run_sharp_config(procs, with_filter(y, cfg), admin)
    assert H1.request(listen, "/")[0] == 200
    log_lines(log, 1)
    assert H1.request(listen, "/", headers={"x-envoy-fault-abort-request": "502"})[0] == 502
    log_lines(log, 2)
    assert H1.request(listen, "/plain")[0] == 503
    assert log_lines(log, 3) == ["200 -", '502 {"experiment":"chaos-1","weight":2}', "503 {}"]


def test_header_percentage_capped_by_config(procs, upstream):
    """The header's percentage is capped by the configured numerator (0
    here): no abort whatever the header says."""
    port, admin, _ = start(procs, upstream, "abort: { header_abort: {}, percentage: { numerator: 0 } }\n")
    for _ in range(5):
        assert H1.request(port, "/", headers={"x-envoy-fault-abort-request": "503",
                                              "x-envoy-fault-abort-request-percentage": "100"})[0] == 200
    assert stat(admin, P + "aborts_injected") == 0


@protos("h1", "h2-down")
def test_fixed_delay(procs, upstream, proto):
    """fixed_delay 400ms at 100%: the response comes after at least the
    delay (and well within a bound), flagged DI, counted."""
    port, admin, log = start(procs, upstream, "delay: { fixed_delay: 0.4s, percentage: { numerator: 100 } }\n")
    s, _, _, took = timed(port, "/echo", proto=proto)
    assert s == 200
    assert 0.4 <= took < 0.4 + 3 * SLOW, took
    assert stat(admin, P + "delays_injected") == 1
    assert log_lines(log, 1) == ["200 DI via_upstream /echo"]
    wait_for(lambda: stat(admin, P + "active_faults") == 0, 5, "active_faults back to 0")


@protos("h1", "h2-down")
def test_delayed_request_body(procs, upstream, proto):
    """The body of a delayed request waits (more than the buffer limit of
    it: the downstream is read no further meanwhile) and then goes upstream
    whole."""
    port, _, _ = start(procs, upstream, "delay: { fixed_delay: 0.3s, percentage: { numerator: 100 } }\n")
    body = os.urandom(3 * 1024 * 1024)
    t0 = time.monotonic()
    s, _, b = proto.request(port, "/upload", method="POST", body=body, timeout=20 * SLOW)
    assert s == 200 and time.monotonic() - t0 >= 0.3
    assert json.loads(b)["body_bytes"] == len(body)


def test_delay_then_abort(procs, upstream):
    """A delay and an abort: the delay first, then the abort (DI,FI); the
    upstream is not contacted."""
    cfg = "delay: { fixed_delay: 0.3s, percentage: { numerator: 100 } }\n" + ABORT_503
    port, admin, log = start(procs, upstream, cfg)
    before = upstream_requests(upstream)
    s, _, b, took = timed(port, "/x")
    assert (s, b) == (503, b"fault filter abort") and 0.3 <= took < 0.3 + 3 * SLOW, (s, took)
    after = upstream_requests(upstream)
    assert after - before <= 1  # at most the second admin request
    assert log_lines(log, 1) == ["503 DI,FI fault_filter_abort /x"]
    assert stat(admin, P + "delays_injected") == 1 and stat(admin, P + "aborts_injected") == 1


def test_header_delay_and_percentages(procs, upstream):
    """header_delay: x-envoy-fault-delay-request ms; none without the
    header or with 0; x-envoy-fault-delay-request-percentage 0 turns it off."""
    port, admin, _ = start(procs, upstream, "delay: { header_delay: {}, percentage: { numerator: 100 } }\n")
    s, _, _, took = timed(port, "/", headers={"x-envoy-fault-delay-request": "300"})
    assert s == 200 and 0.3 <= took < 0.3 + 3 * SLOW, took
    for hdrs in ({}, {"x-envoy-fault-delay-request": "0"},
                 {"x-envoy-fault-delay-request": "3000", "x-envoy-fault-delay-request-percentage": "0"},
                 {"x-envoy-fault-delay-request": "soon"}):
        s, _, _, took = timed(port, "/", headers=hdrs)
        assert s == 200 and took < 2.5, (hdrs, took)
    assert stat(admin, P + "delays_injected") == 1


def test_zero_percent_does_nothing(procs, upstream):
    cfg = ("delay: { fixed_delay: 5s, percentage: { numerator: 0 } }\n"
           "abort: { http_status: 503 }\n")  # no percentage: 0%
    port, admin, _ = start(procs, upstream, cfg)
    for _ in range(5):
        s, _, _, took = timed(port, "/")
        assert s == 200 and took < 2.5
    assert stat(admin, P + "delays_injected") == 0 and stat(admin, P + "aborts_injected") == 0


def test_fractional_percentage(procs, upstream):
    """5000 out of TEN_THOUSAND: about half of 300 requests are aborted (a
    wide bound: the chance of falling outside is below 1e-9)."""
    port, admin, _ = start(procs, upstream,
                           "abort: { http_status: 503, percentage: { numerator: 5000, denominator: TEN_THOUSAND } }\n")
    n = 300
    aborted = sum(H1.request(port, "/")[0] == 503 for _ in range(n))
    assert 80 <= aborted <= 220, aborted
    assert stat(admin, P + "aborts_injected") == aborted


def test_runtime_overrides(procs, upstream):
    """Envoy's default runtime keys override the config: the abort percent
    (0 over the configured 100) and status, the delay's percent and
    duration; a configured key name replaces the default one."""
    cfg = ABORT_503 + "delay: { fixed_delay: 5s, percentage: { numerator: 0 } }\n"
    rt = ("fault.http.abort.abort_percent: 0\n"
          "fault.http.delay.fixed_delay_percent: 100\n"
          "fault.http.delay.fixed_duration_ms: 200\n")
    port, admin, _ = start(procs, upstream, cfg, runtime=rt)
    s, _, _, took = timed(port, "/")
    assert s == 200 and 0.2 <= took < 2.5, (s, took)

    rt = "fault.http.abort.http_status: 418\nmy.abort.percent: 0\n"
    port, _, _ = start(procs, upstream, ABORT_503, runtime=rt)
    assert H1.request(port, "/")[0] == 418
    port, _, _ = start(procs, upstream, ABORT_503 + "abort_percent_runtime: my.abort.percent\n", runtime=rt)
    assert H1.request(port, "/")[0] == 200


def test_downstream_cluster_stats_and_keys(procs, upstream):
    """x-envoy-downstream-service-cluster: fault.<cluster>.aborts_injected
    and .delays_injected (none with disable_downstream_cluster_stats), and
    the cluster's runtime keys replace the default ones."""
    cfg = "delay: { fixed_delay: 0.05s, percentage: { numerator: 100 } }\n" + ABORT_503
    rt = "fault.http.spared.abort.abort_percent: 0\n"
    port, admin, _ = start(procs, upstream, cfg, runtime=rt)
    assert H1.request(port, "/", headers={"x-envoy-downstream-service-cluster": "web"})[0] == 503
    assert H1.request(port, "/", headers={"x-envoy-downstream-service-cluster": "spared"})[0] == 200
    assert stat(admin, P + "web.aborts_injected") == 1
    assert stat(admin, P + "web.delays_injected") == 1
    assert stat(admin, P + "spared.delays_injected") == 1
    assert stat(admin, P + "spared.aborts_injected") is None

    port, admin, _ = start(procs, upstream, ABORT_503 + "disable_downstream_cluster_stats: true\n")
    assert H1.request(port, "/", headers={"x-envoy-downstream-service-cluster": "web"})[0] == 503
    assert stat(admin, P + "aborts_injected") == 1
    assert stat(admin, P + "web.aborts_injected") is None


def test_max_active_faults(procs, upstream):
    """max_active_faults 1: while one request is delayed (active_faults 1,
    on one worker), the next is not faulted (faults_overflow) and goes
    upstream at once; once the delay is over the gauge is back at 0."""
    cfg = "max_active_faults: 1\ndelay: { fixed_delay: 2s, percentage: { numerator: 100 } }\n"
    port, admin, _ = start(procs, upstream, cfg)
    res = {}
    t = threading.Thread(target=lambda: res.setdefault("first", timed(port, "/first")))
    t.start()
    try:
        wait_for(lambda: stat(admin, P + "active_faults") == 1, 5, "the first delay")
        s, _, _, took = timed(port, "/second")
        assert s == 200 and took < 1.5, took
        assert stat(admin, P + "faults_overflow") == 1
    finally:
        t.join(15 * SLOW)
    s, _, _, took = res["first"]
    assert s == 200 and took >= 2.0
    assert stat(admin, P + "delays_injected") == 1
    wait_for(lambda: stat(admin, P + "active_faults") == 0, 5, "active_faults back to 0")


def test_runtime_max_active_faults(procs, upstream):
    """fault.http.max_active_faults 0: no fault at all, each an overflow."""
    port, admin, _ = start(procs, upstream, ABORT_503, runtime="fault.http.max_active_faults: 0\n")
    assert [H1.request(port, "/")[0] for _ in range(3)] == [200] * 3
    assert stat(admin, P + "faults_overflow") == 3


def test_headers_and_downstream_nodes(procs, upstream):
    """headers: all must match (a HeaderMatcher as in routes);
    downstream_nodes: x-envoy-downstream-service-node must be listed."""
    cfg = ABORT_503 + ("headers:\n- name: x-fault\n  string_match: { exact: please }\n"
                       "- name: x-skip\n  present_match: true\n  invert_match: true\n"
                       "downstream_nodes: [node-a, node-b]\n")
    port, _, _ = start(procs, upstream, cfg)
    node = {"x-envoy-downstream-service-node": "node-b"}
    assert H1.request(port, "/", headers={"x-fault": "please", **node})[0] == 503
    assert H1.request(port, "/", headers={"x-fault": "please"})[0] == 200
    assert H1.request(port, "/", headers={"x-fault": "please", "x-envoy-downstream-service-node": "node-c"})[0] == 200
    assert H1.request(port, "/", headers={"x-fault": "nope", **node})[0] == 200
    assert H1.request(port, "/", headers={"x-fault": "please", "x-skip": "1", **node})[0] == 200


def test_upstream_cluster(procs, upstream):
    """upstream_cluster: only requests whose route entry goes to that
    cluster; a direct response route has none."""
    other = Upstream(name="other")
    procs.append(other)
    routes = ('- match: { prefix: "/a" }\n  route: { cluster: backend }\n'
              '- match: { prefix: "/b" }\n  route: { cluster: other }\n'
              '- match: { prefix: "/d" }\n  direct_response: { status: 204 }\n')
    port, _, _ = start(procs, upstream, ABORT_503 + "upstream_cluster: other\n", routes=routes,
                       clusters={"backend": [upstream.port], "other": [other.port]})
    assert H1.request(port, "/a")[0] == 200
    assert H1.request(port, "/b")[0] == 503
    assert H1.request(port, "/d")[0] == 204
    assert upstream_requests(other) <= 1  # its own admin request at most


def test_per_route_override(procs, upstream):
    """A route's HTTPFault replaces the filter's whole config (its abort
    429 instead of 503; a delay-only one aborts nothing); FilterConfig
    disabled turns the filter off for the route."""
    per = lambda cfg: ("  typed_per_filter_config:\n    envoy.filters.http.fault:\n"
                       + indent(f'"@type": {TYPE}\n' + cfg, 6))
    routes = ('- match: { prefix: "/override" }\n  route: { cluster: backend }\n'
              + per("abort: { http_status: 429, percentage: { numerator: 100 } }\n")
              + '- match: { prefix: "/delay-only" }\n  route: { cluster: backend }\n'
              + per("delay: { fixed_delay: 0.2s, percentage: { numerator: 100 } }\n")
              + '- match: { prefix: "/off" }\n  route: { cluster: backend }\n'
              + "  typed_per_filter_config:\n    envoy.filters.http.fault:\n"
                '      "@type": type.googleapis.com/envoy.config.route.v3.FilterConfig\n      disabled: true\n'
              + '- match: { prefix: "/" }\n  route: { cluster: backend }\n')
    port, admin, _ = start(procs, upstream, ABORT_503, routes=routes)
    assert H1.request(port, "/any")[0] == 503
    assert H1.request(port, "/override")[0] == 429
    s, _, _, took = timed(port, "/delay-only")
    assert s == 200 and took >= 0.2
    assert H1.request(port, "/off")[0] == 200
    # per-route faults count in the filter's stats
    assert stat(admin, P + "aborts_injected") == 2
    assert stat(admin, P + "delays_injected") == 1


def rate_cfg(kbps):
    return f"response_rate_limit: {{ fixed_limit: {{ limit_kbps: {kbps} }}, percentage: {{ numerator: 100 }} }}\n"


def test_istio_shape(procs, upstream):
    """What Istio's VirtualService fault programs: an empty HTTPFault in the
    connection manager (no fault anywhere) and the route's HTTPFault with
    MILLION percentages."""
    routes = ('- match: { prefix: "/faulty" }\n  route: { cluster: backend }\n'
              "  typed_per_filter_config:\n    envoy.filters.http.fault:\n"
              + indent(f'"@type": {TYPE}\n'
                       "delay: { fixed_delay: 0.2s, percentage: { numerator: 1000000, denominator: MILLION } }\n"
                       "abort: { http_status: 418, percentage: { numerator: 1000000, denominator: MILLION } }\n", 6)
              + '- match: { prefix: "/" }\n  route: { cluster: backend }\n')
    port, admin, log = start(procs, upstream, "", routes=routes)
    assert H1.request(port, "/fine")[0] == 200
    s, _, b, took = timed(port, "/faulty")
    assert (s, b) == (418, b"fault filter abort") and took >= 0.2
    assert stat(admin, P + "delays_injected") == 1 and stat(admin, P + "aborts_injected") == 1
    assert sorted(log_lines(log, 2)) == ["200 - via_upstream /fine", "418 DI,FI fault_filter_abort /faulty"]


def fetch_all(port, path, headers=None, timeout=30, proto=H1):
    """A GET read to its end; returns (status, body length, seconds)."""
    t0 = time.monotonic()
    s, _, b = proto.request(port, path, headers=headers, timeout=timeout * SLOW)
    return s, len(b), time.monotonic() - t0


@protos("h1", "h2-down", "h2-up")
def test_response_rate_limit(procs, proto):
    """fixed_limit 100 KiB/s: a 200 KiB body takes about 2 s (5 KiB at
    once, then 100 KiB a second), arrives whole; counted in
    response_rl_injected; the request is an active fault until it ends."""
    port, admin, log = start(procs, proto.upstream(procs),
                             rate_cfg(100),
                             cluster_extra=proto.cluster)
    s, n, took = fetch_all(port, "/bytes/204800", proto=proto)
    assert s == 200 and n == 204800
    assert 1.5 <= took < 1.95 + 4 * SLOW, took
    assert stat(admin, P + "response_rl_injected") == 1
    wait_for(lambda: stat(admin, P + "active_faults") == 0, 5, "active_faults back to 0")
    # no delay or abort: no DI/FI flag
    assert log_lines(log, 1) == ["200 - via_upstream /bytes/204800"]


def test_response_rate_limit_by_header(procs, upstream):
    """header_limit: x-envoy-fault-throughput-response KiB/s; no limit
    without it, with 0, or with a percentage header of 0; a chunked
    response is limited too."""
    port, admin, _ = start(procs, upstream,
                           "response_rate_limit: { header_limit: {}, percentage: { numerator: 100 } }\n")
    s, n, took = fetch_all(port, "/bytes/204800?chunked=1", headers={"x-envoy-fault-throughput-response": "200"})
    assert s == 200 and n == 204800 and 0.7 <= took < 1.0 + 4 * SLOW, took
    for hdrs in ({}, {"x-envoy-fault-throughput-response": "0"},
                 {"x-envoy-fault-throughput-response": "1", "x-envoy-fault-throughput-response-percentage": "0"}):
        s, n, took = fetch_all(port, "/bytes/204800", headers=hdrs)
        assert s == 200 and n == 204800 and took < 1.0, (hdrs, took)
    assert stat(admin, P + "response_rl_injected") == 1


@protos("h1", "h2-up")
def test_response_rate_limit_is_bounded(procs, proto):
    """A 64 MB body at 1000 KiB/s: the fault filter holds at most about
    the buffer limit, so the router pauses the upstream; after 1.5 s far
    less than the body has come from the upstream. The client then leaves,
    and the stream (and its buffer) goes. An HTTP/2 upstream stops at its
    stream's flow-control window (1 MiB here; Envoy's default is 256 MiB),
    as for a downstream above its watermark."""
    cluster = proto.cluster
    if cluster:
        cluster = "http2_protocol_options: { initial_stream_window_size: 1048576 }\n"
    port, admin, _ = start(procs, proto.upstream(procs),
                           rate_cfg(1000),
                           cluster_extra=cluster)
    c = socket.create_connection(("127.0.0.1", port))
    try:
        c.sendall(b"GET /bytes/64000000 HTTP/1.1\r\nhost: x\r\n\r\n")
        c.settimeout(5 * SLOW)
        got, t0 = 0, time.monotonic()
        while time.monotonic() - t0 < 1.5:
            d = c.recv(65536)
            assert d
            got += len(d)
        rx = stat(admin, "cluster.backend.upstream_cx_rx_bytes_total")
        # 1.5 s at 1000 KiB/s is ~1.5 MB; the buffer limit (1 MiB) and the
        # sockets' buffers are all that may be on top of it
        assert got < 3_000_000, got
        assert rx < 16_000_000, rx
    finally:
        c.close()
    wait_for(lambda: stat(admin, P + "active_faults") == 0, 5, "the stream to go")


@protos("h1", "h2-down")
def test_client_abandons_delayed_request(procs, upstream, proto):
    """A client that leaves during a 30 s delay, its request body half
    sent: the stream ends, the delay's timer with it (active_faults back to
    0 at once), the upstream is never contacted, the access log has DI
    without a response, and the proxy goes on serving (leaks and
    use-after-free show under ASan at teardown)."""
    port, admin, log = start(procs, upstream, "delay: { header_delay: {}, percentage: { numerator: 100 } }\n")
    before = upstream_requests(upstream)
    if proto.name == "h1":
        c = socket.create_connection(("127.0.0.1", port))
        c.sendall(b"POST /left HTTP/1.1\r\nhost: x\r\nx-envoy-fault-delay-request: 30000\r\n"
                  b"content-length: 100000\r\n\r\n" + b"x" * 50000)
    else:
        from conftest import H2Client
        c = H2Client(port)
        sid = c.send("/left", method="POST", headers={"x-envoy-fault-delay-request": "30000"}, end=False)
        for _ in range(3):
            c.send_data(sid, b"x" * 16000)
    wait_for(lambda: stat(admin, P + "active_faults") == 1, 5, "the delay")
    if proto.name == "h1":
        c.close()
    else:
        # a reset of the stream alone, the connection left open
        c.conn.reset_stream(sid)
        c._flush()
    wait_for(lambda: stat(admin, P + "active_faults") == 0, 5, "the abandoned stream to go")
    c.close()
    assert stat(admin, P + "delays_injected") == 1
    code, flags = log_lines(log, 1)[0].split()[:2]
    assert code == "0" and "DI" in flags.split(","), (code, flags)
    assert upstream_requests(upstream) - before <= 1
    s, _, _, took = timed(port, "/later", proto=proto)
    assert s == 200 and took < 2.5


BAD = [
    ("abort: { http_status: 100, percentage: { numerator: 100 } }\n", "http_status"),
    ("abort: { http_status: 600 }\n", "http_status"),
    ("abort: { percentage: { numerator: 100 } }\n", "abort.error_type"),
    ("delay: { percentage: { numerator: 100 } }\n", "delay.fault_delay_secifier"),
    ("delay: { fixed_delay: 0s }\n", "fixed_delay"),
    ("response_rate_limit: { fixed_limit: { limit_kbps: 0 } }\n", "limit_kbps"),
    ("response_rate_limit: { percentage: { numerator: 10 } }\n", "response_rate_limit.limit_type"),
    ("headers: [ { name: '' , present_match: true } ]\n", "name"),
]


@pytest.mark.parametrize("cfg,msg", BAD, ids=[m for _, m in BAD])
def test_refused_configs(cfg, msg):
    y = with_filter(bootstrap_yaml(free_port(), free_port(), {"backend": [1]}), cfg)
    rc, out = validate_config(y)
    assert rc == 1 and msg in out, out


def test_refused_per_route_config():
    routes = ('- match: { prefix: "/" }\n  route: { cluster: backend }\n'
              "  typed_per_filter_config:\n    envoy.filters.http.fault:\n"
              + indent(f'"@type": {TYPE}\nabort: {{ http_status: 42 }}\n', 6))
    y = with_filter(bootstrap_yaml(free_port(), free_port(), {"backend": [1]}, routes=routes), ABORT_503)
    rc, out = validate_config(y)
    assert rc == 1 and "http_status" in out, out


@pytest.mark.skipif(not os.path.isdir(CORPUS), reason="no Envoy corpus")
def test_envoy_example_validates():
    with open(os.path.join(CORPUS, "examples__fault-injection__envoy.yaml")) as f:
        rc, out = validate_config(f.read())
    assert rc == 0, out
