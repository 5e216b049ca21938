"""gRPC-aware routing with python3-grpcio on both sides of SHARP (HTTP/2
both ways): retry_on's gRPC conditions and x-envoy-retry-grpc-on, a route's
max_stream_duration (grpc_timeout_header_max / _offset) and the deprecated
max_grpc_timeout / grpc_timeout_offset, with grpc-timeout rewritten on the
upstream request as Envoy's router and connection manager do."""
import collections
import json
import threading
import time

import grpc
import pytest

from conftest import SLOW, bootstrap_yaml, file_access_log, free_port, log_lines, run_sharp_config, stat

H2 = "http2_protocol_options: {}\n"
C = "cluster.grpc."
IDENT = lambda b: b  # noqa: E731
# grpc-core's clock is a little coarse: a deadline may read a few ms over
EPS = 0.1
TRUST_LOOPBACK = """\
use_remote_address: true
internal_address_config:
  cidr_ranges: [{ address_prefix: 127.0.0.1, prefix_len: 32 }]
"""


class Server:
    """Generic handlers: Flaky fails its first `fail[0]` calls with status
    `fail[1]` (trailers-only, as grpcio answers an abort before any
    message), Info answers the deadline it was given and the request
    metadata as JSON, Slow answers after 2 s."""

    def __init__(self):
        import concurrent.futures
        self.lock = threading.Lock()
        self.calls = collections.Counter()
        self.fail = (0, grpc.StatusCode.OK)
        self.server = grpc.server(concurrent.futures.ThreadPoolExecutor(max_workers=8))
        handlers = {
            "Flaky": grpc.unary_unary_rpc_method_handler(self._flaky, IDENT, IDENT),
            "Info": grpc.unary_unary_rpc_method_handler(self._info, IDENT, IDENT),
            "Slow": grpc.unary_unary_rpc_method_handler(self._slow, IDENT, IDENT),
            "Late": grpc.unary_unary_rpc_method_handler(self._late, IDENT, IDENT),
        }
        self.server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler("sharp.test.Echo", handlers),))
        self.port = self.server.add_insecure_port("127.0.0.1:0")
        self.server.start()

    def _flaky(self, req, ctx):
        with self.lock:
            self.calls["Flaky"] += 1
            n = self.calls["Flaky"]
        if n <= self.fail[0]:
            ctx.abort(self.fail[1], f"failure {n}")
        return req

    def _info(self, req, ctx):
        with self.lock:
            self.calls["Info"] += 1
        return json.dumps({"remaining": ctx.time_remaining(), "md": dict(ctx.invocation_metadata())}).encode()

    @staticmethod
    def _late(req, ctx):
        # response headers first: the status comes in trailers
        ctx.send_initial_metadata((("x-late", "1"),))
        ctx.abort(grpc.StatusCode.INTERNAL, "late failure")

    def _slow(self, req, ctx):
        with self.lock:
            self.calls["Slow"] += 1
        time.sleep(2)
        return req

    def stop(self):
        self.server.stop(0)


@pytest.fixture
def server():
    s = Server()
    yield s
    s.stop()


# The upstream's own deadline (the grpc-timeout SHARP sends) would race
# SHARP's timer to end a Slow call: those tests remove the header on the
# upstream request (the route's header mutations come after the timeouts,
# as in Envoy), so the stream's limit is SHARP's alone.
NO_UPSTREAM_DEADLINE = '- match: { prefix: "/sharp.test.Echo/Slow" }\n  request_headers_to_remove: [grpc-timeout]\n'


def start(procs, server, route_extra="", hcm_extra=""):
    listen, admin = free_port(), free_port()
    al, log = file_access_log("%REQ(:PATH)% %RESPONSE_CODE% %GRPC_STATUS% %RESPONSE_FLAGS% %RESPONSE_CODE_DETAILS%\\n")
    action = '  route:\n    cluster: grpc\n' + "".join("    " + line + "\n" for line in route_extra.splitlines())
    routes = NO_UPSTREAM_DEADLINE + action + '- match: { prefix: "/" }\n' + action
    y = bootstrap_yaml(listen, admin, {"grpc": [server.port]}, routes=routes, hcm_extra=al + hcm_extra,
                       cluster_extra=H2)
    run_sharp_config(procs, y, admin)
    return listen, admin, log


def unary(port, method, timeout=10, metadata=None, payload=b"hi"):
    with grpc.insecure_channel(f"127.0.0.1:{port}") as ch:
        stub = ch.unary_unary(f"/sharp.test.Echo/{method}", request_serializer=IDENT, response_deserializer=IDENT)
        return stub(payload, timeout=timeout, metadata=metadata)


def failing(port, method, **kw):
    with pytest.raises(grpc.RpcError) as e:
        unary(port, method, **kw)
    return e.value


# ---- retry_on: gRPC conditions ----

@pytest.mark.parametrize("cond,code", [
    ("cancelled", grpc.StatusCode.CANCELLED),
    ("deadline-exceeded", grpc.StatusCode.DEADLINE_EXCEEDED),
    ("internal", grpc.StatusCode.INTERNAL),
    ("resource-exhausted", grpc.StatusCode.RESOURCE_EXHAUSTED),
    ("unavailable", grpc.StatusCode.UNAVAILABLE),
])
def test_retry_on_grpc_status(procs, server, cond, code):
    """A trailers-only response whose grpc-status retry_on names is
    retried: two failures, then the third try answers."""
    server.fail = (2, code)
    listen, admin, log = start(procs, server, f"retry_policy: {{ retry_on: \"{cond}\", num_retries: 3 }}")
    assert unary(listen, "Flaky") == b"hi"
    assert server.calls["Flaky"] == 3
    assert stat(admin, C + "upstream_rq_retry") == 2
    assert stat(admin, C + "upstream_rq_retry_success") == 1
    assert log_lines(log, 1)[0] == "/sharp.test.Echo/Flaky 200 OK - via_upstream"


def test_grpc_status_not_named_is_not_retried(procs, server):
    """retry_on names other statuses (and 5xx, which a gRPC error with HTTP
    200 is not): the failure goes to the client after one try."""
    server.fail = (1, grpc.StatusCode.UNAVAILABLE)
    listen, admin, log = start(procs, server, 'retry_policy: { retry_on: "5xx,cancelled,internal", num_retries: 3 }')
    err = failing(listen, "Flaky")
    assert err.code() == grpc.StatusCode.UNAVAILABLE and err.details() == "failure 1"
    assert server.calls["Flaky"] == 1
    assert not stat(admin, C + "upstream_rq_retry")


def test_retry_limit_exceeded_is_urx(procs, server):
    server.fail = (5, grpc.StatusCode.RESOURCE_EXHAUSTED)
    listen, admin, log = start(procs, server, 'retry_policy: { retry_on: "resource-exhausted", num_retries: 2 }')
    err = failing(listen, "Flaky")
    assert err.code() == grpc.StatusCode.RESOURCE_EXHAUSTED and err.details() == "failure 3"
    assert server.calls["Flaky"] == 3
    assert stat(admin, C + "upstream_rq_retry") == 2
    assert stat(admin, C + "upstream_rq_retry_limit_exceeded") == 1
    assert log_lines(log, 1)[0] == "/sharp.test.Echo/Flaky 200 ResourceExhausted URX via_upstream"


def test_x_envoy_retry_grpc_on_header(procs, server):
    """x-envoy-retry-grpc-on alone allows one retry; it is consumed. The
    gRPC names mean nothing in x-envoy-retry-on (Envoy parses each header
    with its own list). Envoy honours these headers from internal clients
    only: the loopback client is made one."""
    server.fail = (1, grpc.StatusCode.UNAVAILABLE)
    listen, admin, _ = start(procs, server, hcm_extra=TRUST_LOOPBACK)
    err = failing(listen, "Flaky", metadata=(("x-envoy-retry-on", "unavailable"),))
    assert err.code() == grpc.StatusCode.UNAVAILABLE
    assert server.calls["Flaky"] == 1
    server.calls.clear()
    assert unary(listen, "Flaky", metadata=(("x-envoy-retry-grpc-on", "unavailable"),)) == b"hi"
    assert server.calls["Flaky"] == 2
    assert stat(admin, C + "upstream_rq_retry") == 1
    md = json.loads(unary(listen, "Info", metadata=(("x-envoy-retry-grpc-on", "unavailable"),)))["md"]
    assert "x-envoy-retry-grpc-on" not in md


def host_counts(admin, port):
    from conftest import admin_get
    out = {}
    for line in admin_get(admin, "/clusters").splitlines():
        parts = line.split("::")
        if len(parts) == 4 and parts[0] == "grpc" and parts[1] == f"127.0.0.1:{port}":
            out[parts[2]] = parts[3]
    return out


def test_grpc_status_for_outlier_detection_and_host_stats(procs, server):
    """A trailers-only grpc-status counts for outlier detection as its HTTP
    equivalent (UNAVAILABLE: 503, so consecutive_5xx ejects) and as the
    host's error; a status in trailers decides the host's success or error
    when they come."""
    server.fail = (3, grpc.StatusCode.UNAVAILABLE)
    listen, admin = free_port(), free_port()
    od = "outlier_detection: { consecutive_5xx: 3, interval: 30s, base_ejection_time: 30s, max_ejection_percent: 100 }\n"
    run_sharp_config(procs, bootstrap_yaml(listen, admin, {"grpc": [server.port]}, cluster_extra=H2 + od), admin)
    for _ in range(3):
        assert failing(listen, "Flaky").code() == grpc.StatusCode.UNAVAILABLE
    assert stat(admin, C + "outlier_detection.ejections_enforced_consecutive_5xx") == 1
    counts = host_counts(admin, server.port)
    assert (counts["rq_error"], counts["rq_success"]) == ("3", "0"), counts
    assert failing(listen, "Late").code() == grpc.StatusCode.INTERNAL
    json.loads(unary(listen, "Info"))
    counts = host_counts(admin, server.port)
    assert (counts["rq_error"], counts["rq_success"]) == ("4", "1"), counts


# ---- route max_stream_duration ----

def test_grpc_timeout_header_max_caps_the_stream(procs, server):
    """grpc_timeout_header_max: the client's grpc-timeout (10 s) capped to
    300 ms becomes the stream's limit: a DEADLINE_EXCEEDED local reply,
    and the upstream is told the capped deadline."""
    listen, admin, log = start(procs, server, "max_stream_duration: { grpc_timeout_header_max: 0.3s }")
    t0 = time.time()
    err = failing(listen, "Slow", timeout=10)
    took = time.time() - t0
    assert err.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    assert err.details() == "downstream duration timeout"
    assert took < 1.5 * SLOW, took
    assert stat(admin, "http.ingress_http.downstream_rq_max_duration_reached") == 1
    assert log_lines(log, 1)[0] == "/sharp.test.Echo/Slow 200 DeadlineExceeded - max_duration_timeout"
    info = json.loads(unary(listen, "Info", timeout=10))
    assert 0 < info["remaining"] <= 0.3 + EPS, info


def test_grpc_timeout_header_offset_and_no_cap(procs, server):
    """grpc_timeout_header_max 0s: the header is used uncapped, less the
    offset; the upstream sees the reduced deadline."""
    listen, _, _ = start(procs, server,
                         "max_stream_duration: { grpc_timeout_header_max: 0s, grpc_timeout_header_offset: 1s }")
    info = json.loads(unary(listen, "Info", timeout=5))
    assert 2.0 < info["remaining"] <= 4.0 + EPS, info  # lower bound loose: a loaded client may be late
    # no route timeout applies under max_stream_duration (Envoy's "new timeouts")
    assert "x-envoy-expected-rq-timeout-ms" not in info["md"], info


def test_route_max_stream_duration(procs, server):
    """max_stream_duration without the gRPC fields limits any stream; the
    grpc-timeout sent upstream says so."""
    listen, admin, log = start(procs, server, "max_stream_duration: { max_stream_duration: 0.4s }")
    info = json.loads(unary(listen, "Info", timeout=10))
    assert 0 < info["remaining"] <= 0.4 + EPS, info
    err = failing(listen, "Slow", timeout=10)
    assert err.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    assert stat(admin, "http.ingress_http.downstream_rq_max_duration_reached") == 1


def test_route_max_stream_duration_zero_lifts_the_hcm_limit(procs, server):
    """The connection manager limits streams to 500 ms; a route with
    max_stream_duration 0s lifts it, one without a duration keeps it."""
    hcm = "common_http_protocol_options: { max_stream_duration: 0.5s }\n"
    listen, admin, _ = start(procs, server, "max_stream_duration: { max_stream_duration: 0s }", hcm_extra=hcm)
    assert unary(listen, "Slow", timeout=10) == b"hi"
    assert not stat(admin, "http.ingress_http.downstream_rq_max_duration_reached")
    listen2, admin2, _ = start(procs, server, "max_stream_duration: {}", hcm_extra=hcm)
    # the HCM's 500 ms applies and, the route having max_stream_duration, is the upstream's grpc-timeout
    info = json.loads(unary(listen2, "Info", timeout=10))
    assert 0 < info["remaining"] <= 0.5 + EPS, info
    assert failing(listen2, "Slow", timeout=10).code() == grpc.StatusCode.DEADLINE_EXCEEDED


def test_route_max_stream_duration_plain_http(procs, upstream):
    """For any request: max_stream_duration ends it with Envoy's 504
    "downstream duration timeout", and a grpc-timeout header (read whatever
    the content-type) sets the limit when grpc_timeout_header_max is set;
    it is not rewritten for a request that is not gRPC."""
    import subprocess
    listen, admin = free_port(), free_port()
    al, log = file_access_log("%RESPONSE_CODE% %RESPONSE_FLAGS% %RESPONSE_CODE_DETAILS% %DURATION%\\n")
    routes = ('- match: { prefix: "/" }\n  route:\n    cluster: b\n'
              '    max_stream_duration: { max_stream_duration: 3s, grpc_timeout_header_max: 0s }\n')
    run_sharp_config(procs, bootstrap_yaml(listen, admin, {"b": [upstream.port]}, routes=routes, hcm_extra=al), admin)

    def curl(path, *hdrs):
        args = ["curl", "-sS", "-o", "/dev/stderr", "-w", "%{http_code}", f"http://127.0.0.1:{listen}{path}"]
        for h in hdrs:
            args += ["-H", h]
        r = subprocess.run(args, capture_output=True, timeout=20)
        return r.stdout.decode(), r.stderr.decode()

    t0 = time.time()
    code, body = curl("/?delay_ms=2000", "grpc-timeout: 300m")
    assert (code, body) == ("504", "downstream duration timeout") and time.time() - t0 < 1.5 * SLOW
    code, body = curl("/echo", "grpc-timeout: 300m")
    assert code == "200" and '["grpc-timeout", "300m"]' in body, body
    t0 = time.time()
    code, body = curl("/?delay_ms=5000")
    assert (code, body) == ("504", "downstream duration timeout")
    assert 2.5 < time.time() - t0 < 3 + 1.5 * SLOW
    lines = log_lines(log, 3)  # each curl on its own connection: any worker's order
    assert sum(line.startswith("504 - max_duration_timeout ") for line in lines) == 2, lines
    assert stat(admin, "http.ingress_http.downstream_rq_max_duration_reached") == 2


# ---- the deprecated max_grpc_timeout / grpc_timeout_offset ----

def test_max_grpc_timeout_caps_the_route_timeout(procs, server):
    """max_grpc_timeout: the grpc-timeout (10 s) capped to 500 ms is the
    router's timeout (an upstream timeout: 504 as UNAVAILABLE, UT), and the
    upstream request's grpc-timeout and x-envoy-expected-rq-timeout-ms say
    500 ms."""
    listen, admin, log = start(procs, server, "max_grpc_timeout: 0.5s")
    info = json.loads(unary(listen, "Info", timeout=10))
    assert info["md"]["x-envoy-expected-rq-timeout-ms"] == "500"
    assert 0 < info["remaining"] <= 0.5 + EPS, info
    t0 = time.time()
    err = failing(listen, "Slow", timeout=10)
    assert time.time() - t0 < 1.5 * SLOW
    assert err.code() == grpc.StatusCode.UNAVAILABLE and err.details() == "upstream request timeout"
    assert stat(admin, C + "upstream_rq_timeout") == 1
    assert "/sharp.test.Echo/Slow 200 Unavailable UT upstream_response_timeout" in log_lines(log, 2)


def test_grpc_timeout_offset(procs, server):
    """max_grpc_timeout 0s: the client's grpc-timeout, less the offset,
    with no cap; without a grpc-timeout there is no timeout at all."""
    listen, _, _ = start(procs, server, "max_grpc_timeout: 0s\ngrpc_timeout_offset: 1s")
    info = json.loads(unary(listen, "Info", timeout=5))
    # at most 5 s less the 1 s offset; a loaded machine may spend a second
    # before the call leaves the client, so only the upper bound is tight.
    # gRPC core rounds the grpc-timeout it sends up (5 s left can go out as
    # "5010m"), hence EPS above it.
    assert 2000 < int(info["md"]["x-envoy-expected-rq-timeout-ms"]) <= 4000 + EPS * 1000, info
    assert 2.0 < info["remaining"] <= 4.0 + EPS, info
    info = json.loads(unary(listen, "Info", timeout=None))
    assert "x-envoy-expected-rq-timeout-ms" not in info["md"] and info["remaining"] > 1e6, info


def test_route_timeout_without_max_grpc_timeout(procs, server):
    """Without max_grpc_timeout the route's timeout applies to gRPC too and
    grpc-timeout passes unchanged."""
    listen, _, _ = start(procs, server, "timeout: 3s")
    info = json.loads(unary(listen, "Info", timeout=8))
    assert info["md"]["x-envoy-expected-rq-timeout-ms"] == "3000"
    assert 6.0 < info["remaining"] <= 8.0 + EPS, info  # lower bound loose: a loaded client may be late


# ---- gRPC active health checks ----

def health_response(status):
    """HealthCheckResponse{status}, protobuf-encoded by hand."""
    return b"\x08" + bytes([status]) if status else b""


class HealthServer(Server):
    """Adds grpc.health.v1.Health/Check: `health[service]` is the status to
    answer (1 SERVING, 2 NOT_SERVING) or a grpc.StatusCode to fail with."""

    def __init__(self):
        super().__init__()
        self.health = {}
        self.checks = []
        handler = grpc.unary_unary_rpc_method_handler(self._check, IDENT, IDENT)
        self.server.add_generic_rpc_handlers(
            (grpc.method_handlers_generic_handler("grpc.health.v1.Health", {"Check": handler}),))

    def _check(self, req, ctx):
        with self.lock:
            self.checks.append((req, dict(ctx.invocation_metadata())))
        service = req[2:].decode() if req[:1] == b"\x0a" else ""
        st = self.health.get(service, grpc.StatusCode.NOT_FOUND)
        if isinstance(st, grpc.StatusCode):
            ctx.abort(st, "unknown service")
        return health_response(st)


@pytest.fixture
def hserver():
    s = HealthServer()
    yield s
    s.stop()


def hc_yaml(grpc_check, interval="0.2s"):
    return (f"health_checks:\n- timeout: 1s\n  interval: {interval}\n  no_traffic_interval: {interval}\n"
            f"  unhealthy_threshold: 2\n  healthy_threshold: 1\n  grpc_health_check: {grpc_check}\n")


def wait_for(cond, what, timeout=5):
    deadline = time.time() + timeout * SLOW
    while time.time() < deadline:
        if cond():
            return
        time.sleep(0.05)
    raise AssertionError("timed out waiting for " + what)


def test_grpc_health_check(procs, hserver):
    """grpc.health.v1 Check with service_name and initial_metadata: SERVING
    is healthy; NOT_SERVING fails the host at once (no healthy upstream);
    an error status (the service unknown) fails it too; SERVING again
    brings it back."""
    hserver.health["svc.A"] = 1
    listen, admin = free_port(), free_port()
    check = '{ service_name: svc.A, initial_metadata: [ { header: { key: x-hc-token, value: t1 } } ] }'
    # no panic mode: with its one host unhealthy the cluster has none to offer
    nopanic = "common_lb_config: { healthy_panic_threshold: { value: 0 } }\n"
    y = bootstrap_yaml(listen, admin, {"grpc": [hserver.port]}, cluster_extra=H2 + nopanic + hc_yaml(check))
    run_sharp_config(procs, y, admin)
    wait_for(lambda: stat(admin, C + "membership_healthy") == 1, "healthy")
    assert stat(admin, C + "health_check.success") >= 1
    req, md = hserver.checks[0]
    assert req == b"\x0a\x05svc.A"
    assert md["x-hc-token"] == "t1" and md["user-agent"].startswith("Envoy/HC"), md
    with grpc.insecure_channel(f"127.0.0.1:{listen}") as ch:
        stub = ch.unary_unary("/sharp.test.Echo/Flaky", request_serializer=IDENT, response_deserializer=IDENT)
        assert stub(b"x", timeout=5) == b"x"

    hserver.health["svc.A"] = 2  # NOT_SERVING: an active failure, no threshold
    wait_for(lambda: stat(admin, C + "membership_healthy") == 0, "unhealthy")
    assert stat(admin, C + "health_check.failure") >= 1
    assert not stat(admin, C + "health_check.network_failure")
    err = failing(listen, "Flaky")
    assert err.code() == grpc.StatusCode.UNAVAILABLE and err.details() == "no healthy upstream"

    hserver.health["svc.A"] = 1
    wait_for(lambda: stat(admin, C + "membership_healthy") == 1, "healthy again")
    del hserver.health["svc.A"]  # NOT_FOUND from the server: unhealthy
    wait_for(lambda: stat(admin, C + "membership_healthy") == 0, "unhealthy on an error status")


def test_grpc_health_check_server_name_default(procs, hserver):
    """No service_name checks the server as a whole (an empty request)."""
    hserver.health[""] = 1
    listen, admin = free_port(), free_port()
    y = bootstrap_yaml(listen, admin, {"grpc": [hserver.port]}, cluster_extra=H2 + hc_yaml("{}"))
    run_sharp_config(procs, y, admin)
    wait_for(lambda: stat(admin, C + "membership_healthy") == 1, "healthy")
    assert hserver.checks[0][0] == b""


@pytest.mark.parametrize("authority,healthy", [("hc.example", True), ("other.example", False), (None, False)])
def test_grpc_health_check_authority(procs, hserver, authority, healthy):
    """authority (default: the cluster name) is the check's :authority. The
    checked cluster is SHARP's own listener, which routes only
    hc.example to the gRPC server and answers others with a 404 (a
    trailers-only UNIMPLEMENTED: unhealthy)."""
    hserver.health[""] = 1
    listen, admin = free_port(), free_port()
    routes = ('- match: { prefix: "/", headers: [ { name: ":authority", string_match: { exact: hc.example } } ] }\n'
              '  route: { cluster: grpc }\n'
              '- match: { prefix: "/" }\n  direct_response: { status: 404 }\n')
    check = "{ authority: %s }" % authority if authority else "{}"
    clusters = {"grpc": [hserver.port], "self": [listen]}
    y = bootstrap_yaml(listen, admin, clusters, routes=routes, cluster_extra=H2)
    # only the "self" cluster is checked
    y = y.replace("  - name: self\n    type: STATIC\n    connect_timeout: 1s\n",
                  "  - name: self\n    type: STATIC\n    connect_timeout: 1s\n" + "".join(
                      "    " + line + "\n" for line in hc_yaml(check).splitlines()))
    run_sharp_config(procs, y, admin)
    wait_for(lambda: (stat(admin, "cluster.self.health_check.success") or 0) +
             (stat(admin, "cluster.self.health_check.failure") or 0) >= 2, "two checks")
    assert stat(admin, "cluster.self.membership_healthy") == (1 if healthy else 0)
    assert bool(hserver.checks) == healthy
