"""envoy.filters.http.ratelimit with a python3-grpcio rate limit service
implementing envoy.service.ratelimit.v3.RateLimitService/ShouldRateLimit
(generic handlers; the messages come from SHARP's own proto/ files, compiled
to a descriptor set with protoc-c at test time): the descriptors the route
and virtual host rate_limits make, OK with header mutations, OVER_LIMIT
into 429 (x-envoy-ratelimited, raw_body, x-ratelimit-* headers, RL),
dynamic metadata, errors and timeouts into failure_mode_deny (RLSE) or through, stats, and
the fields SHARP refuses."""
import os
import subprocess
import tempfile
import time
from concurrent import futures

import pytest

from conftest import (SLOW, Upstream, as_aggregate, bootstrap_yaml, file_access_log, free_port, h1_request, log_lines,
                      protos, run_sharp_config, stat, validate_config, wait_for)

grpc = pytest.importorskip("grpc")

TYPE = "type.googleapis.com/envoy.extensions.filters.http.ratelimit.v3.RateLimit"
ROUTE_TYPE = "type.googleapis.com/envoy.extensions.filters.http.ratelimit.v3.RateLimitPerRoute"
PROTO = os.path.join(os.path.dirname(__file__), "..", "..", "proto")


def _messages():
    from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
    out = os.path.join(tempfile.mkdtemp(prefix="sharp-rl-"), "rls.pb")
    subprocess.run(["protoc-c", f"--proto_path={PROTO}", f"--descriptor_set_out={out}", "--include_imports",
                    "envoy/service/ratelimit/v3/rls.proto"], check=True, timeout=60)
    fds = descriptor_pb2.FileDescriptorSet.FromString(open(out, "rb").read())
    pool = descriptor_pool.DescriptorPool()
    for f in fds.file:
        pool.Add(f)
    factory = message_factory.MessageFactory(pool)
    return (factory.GetPrototype(pool.FindMessageTypeByName("envoy.service.ratelimit.v3.RateLimitRequest")),
            factory.GetPrototype(pool.FindMessageTypeByName("envoy.service.ratelimit.v3.RateLimitResponse")))


RateLimitRequest, RateLimitResponse = _messages()


def descriptors(req):
    return [[(e.key, e.value) for e in d.entries] for d in req.descriptors]


class RateLimitService:
    """The service: a descriptor entry ("mode", X) decides; OK otherwise.
    Every request is recorded."""

    def __init__(self):
        self.requests = []
        self.metadata = []
        self.deadlines = []
        self.server = grpc.server(futures.ThreadPoolExecutor(max_workers=8))
        handler = grpc.unary_unary_rpc_method_handler(
            self._should, RateLimitRequest.FromString, lambda m: m if isinstance(m, bytes) else m.SerializeToString())
        self.server.add_generic_rpc_handlers(
            (grpc.method_handlers_generic_handler("envoy.service.ratelimit.v3.RateLimitService",
                                                  {"ShouldRateLimit": handler}),))
        self.port = self.server.add_insecure_port("127.0.0.1:0")
        self.server.start()

    def _should(self, req, ctx):
        self.requests.append(req)
        self.metadata.append(dict(ctx.invocation_metadata()))
        self.deadlines.append(ctx.time_remaining())
        modes = [v for d in descriptors(req) for k, v in d if k == "mode"]
        mode = modes[0] if modes else "ok"
        r = RateLimitResponse()
        if mode == "slow":
            time.sleep(1.5)
        if mode == "fail":
            ctx.abort(grpc.StatusCode.UNAVAILABLE, "rls down")
        if mode == "garbage":
            return b"\xff\xff\xff not a RateLimitResponse"
        r.overall_code = 2 if mode.startswith("over") else 1  # OVER_LIMIT, OK
        for i, _ in enumerate(req.descriptors):
            s = r.statuses.add()
            s.code = r.overall_code
            s.current_limit.requests_per_unit = 10 * (i + 1)
            s.current_limit.unit = 2  # MINUTE
            s.current_limit.name = f"d{i}"
            s.limit_remaining = 5 - i
            s.duration_until_reset.seconds = 30 + i
        h = r.response_headers_to_add.add()
        h.key, h.value = "x-rls-resp", mode
        h = r.request_headers_to_add.add()
        h.key, h.value = "x-rls-req", mode
        if mode == "evil":
            for k, v in (("X-Upper", "up"), ("bad name", "v"), ("x-split", "a\r\nx-injected: 1"), (":status", "500")):
                h = r.response_headers_to_add.add()
                h.key, h.value = k, v
                h = r.request_headers_to_add.add()
                h.key, h.value = k, v
        if mode == "framing":
            for k, v in (("content-length", "0"), ("transfer-encoding", "chunked"), ("connection", "close"),
                         ("host", "elsewhere"), ("upgrade", "websocket"), ("keep-alive", "timeout=1")):
                h = r.response_headers_to_add.add()
                h.key, h.value = k, v
                h = r.request_headers_to_add.add()
                h.key, h.value = k, v
        if mode == "meta":
            r.dynamic_metadata["tier"] = "gold"
            r.dynamic_metadata["n"] = 3
        if mode == "over-json":
            h = r.response_headers_to_add.add()
            h.key, h.value = "content-type", "application/json"
            r.raw_body = b'{"limited": true}'
        return r

    def close(self):
        self.server.stop(0)


@pytest.fixture
def rls():
    s = RateLimitService()
    yield s
    s.close()


@pytest.fixture
def upstream(procs):
    u = Upstream()
    procs.append(u)
    return u


def ratelimit(extra="", timeout="1s"):
    return (f'"@type": {TYPE}\ndomain: edge\ntimeout: {timeout}\n'
            "rate_limit_service:\n  transport_api_version: V3\n"
            "  grpc_service:\n    envoy_grpc: { cluster_name: rls }\n"
            "    initial_metadata: [{ key: x-from-config, value: meta }]\n" + extra)


def with_filter(yaml_text, cfg):
    f = "- name: envoy.filters.http.ratelimit\n  typed_config:\n" + "".join(
        "    " + ln + "\n" for ln in cfg.splitlines())
    return yaml_text.replace("          http_filters:\n",
                             "          http_filters:\n" + "".join("          " + ln + "\n" for ln in f.splitlines()))


# the "mode" header picks the service's answer; a request without it gets
# no descriptor from this RateLimit (request_headers without skip_if_absent)
MODE = "{ request_headers: { header_name: x-mode, descriptor_key: mode } }"
ROUTES = f"""\
- match: {{ prefix: "/" }}
  route:
    cluster: backend
    rate_limits:
    - actions: [{MODE}]
"""


def start(procs, upstream, rls_port, cfg, routes=ROUTES, hcm_extra="", vhost_extra="", runtime=None,
          aggregate=False):
    listen, admin = free_port(), free_port()
    y = bootstrap_yaml(listen, admin, {"backend": [upstream.port], "rls": [rls_port]}, routes=routes,
                       hcm_extra=hcm_extra, vhost_extra=vhost_extra)
    y = with_filter(y, cfg)
    # the rate limit service's cluster speaks HTTP/2
    y = y.replace("  - name: rls\n    type: STATIC\n",
                  "  - name: rls\n    type: STATIC\n    http2_protocol_options: {}\n")
    if aggregate:
        y = as_aggregate(y, "rls")
    y = "node: { id: n1, cluster: front }\n" + y
    if runtime:
        y += "layered_runtime:\n  layers:\n  - name: static\n    static_layer: { " + runtime + " }\n"
    run_sharp_config(procs, y, admin)
    return listen, admin


def echoed(body):
    import json
    out = {}
    for k, v in json.loads(body)["headers"]:
        out.setdefault(k.lower(), []).append(v)
    return out


def test_descriptors_from_actions(procs, upstream, rls):
    """Every action of a stage-0 RateLimit adds its entry, in order; a
    RateLimit whose action fails, or of another stage, adds nothing; the
    virtual host's are not used while the route has its own (OVERRIDE)."""
    routes = f"""\
- match: {{ prefix: "/" }}
  route:
    cluster: backend
    rate_limits:
    - actions:
      - source_cluster: {{}}
      - destination_cluster: {{}}
      - generic_key: {{ descriptor_value: gv }}
      - generic_key: {{ descriptor_value: gv2, descriptor_key: gk2 }}
      - request_headers: {{ header_name: x-user, descriptor_key: user }}
      - request_headers: {{ header_name: x-absent, descriptor_key: absent, skip_if_absent: true }}
      - remote_address: {{}}
      - masked_remote_address: {{ v4_prefix_mask_len: 16 }}
      - header_value_match: {{ descriptor_value: is-get, headers: [{{ name: ":method", exact_match: GET }}] }}
      - header_value_match: {{ descriptor_value: not-post, expect_match: false, descriptor_key: hk,
                               headers: [{{ name: ":method", exact_match: POST }}] }}
      - query_parameter_value_match: {{ descriptor_value: q1, query_parameters: [{{ name: a, string_match: {{ exact: b }} }}] }}
    - actions: [{{ request_headers: {{ header_name: x-absent, descriptor_key: never }} }}]
    - actions: [{{ header_value_match: {{ descriptor_value: post, headers: [{{ name: ":method", exact_match: POST }}] }} }}]
    - stage: 1
      actions: [{{ generic_key: {{ descriptor_value: stage-one }} }}]
    - disable_key: on_key
      actions: [{{ generic_key: {{ descriptor_value: runtime-on }} }}]
    - disable_key: off_key
      actions: [{{ generic_key: {{ descriptor_value: runtime-off }} }}]
"""
    vhost = "rate_limits:\n- actions: [{ generic_key: { descriptor_value: vhost } }]\n"
    port, admin = start(procs, upstream, rls.port, ratelimit(), routes=routes, vhost_extra=vhost,
                        runtime="ratelimit.off_key.http_filter_enabled: 0")
    st, _, b = h1_request(port, "/echo?a=b", headers={"x-user": "alice"})
    assert st == 200, b
    assert len(rls.requests) == 1
    req = rls.requests[0]
    assert req.domain == "edge"
    # initial_metadata, and the filter's timeout as the call's deadline
    assert rls.metadata[0].get("x-from-config") == "meta"
    assert rls.deadlines[0] is not None and 0 < rls.deadlines[0] <= 1.0
    assert descriptors(req) == [
        [("source_cluster", "front"), ("destination_cluster", "backend"), ("generic_key", "gv"), ("gk2", "gv2"),
         ("user", "alice"), ("remote_address", "127.0.0.1"), ("masked_remote_address", "127.0.0.0/16"),
         ("header_match", "is-get"), ("hk", "not-post"), ("query_match", "q1")],
        [("generic_key", "runtime-on")],
    ]
    # the answer's request_headers_to_add reach the upstream, its
    # response_headers_to_add the client
    assert echoed(b)["x-rls-req"] == ["ok"]
    assert stat(admin, "cluster.backend.ratelimit.ok") == 1
    assert stat(admin, "cluster.rls.upstream_rq_200") == 1
    # a query that does not match makes the first RateLimit fail: only the
    # runtime-keyed one left on is
    st, h, _ = h1_request(port, "/echo?a=c", headers={"x-user": "alice"})
    assert st == 200 and h.get("x-rls-resp") == "ok"
    assert descriptors(rls.requests[1]) == [[("generic_key", "runtime-on")]]


def test_no_descriptors_no_call(procs, upstream, rls):
    """Without descriptors the service is not asked."""
    port, admin = start(procs, upstream, rls.port, ratelimit())
    assert h1_request(port, "/echo")[0] == 200
    assert rls.requests == []
    assert stat(admin, "cluster.backend.ratelimit.ok") is None


@protos("h1", "h2-down")
def test_over_limit(procs, upstream, rls, proto):
    """OVER_LIMIT: 429 with x-envoy-ratelimited, the answer's headers and
    x-ratelimit-* (DRAFT_VERSION_03), response_headers_to_add, flag RL;
    the route cluster counts over_limit and the 429."""
    al, path = file_access_log("%RESPONSE_CODE% %RESPONSE_FLAGS% %RESPONSE_CODE_DETAILS%\\n")
    cfg = ratelimit("enable_x_ratelimit_headers: DRAFT_VERSION_03\n"
                    "response_headers_to_add: [{ header: { key: x-limited-by, value: sharp } }]\n")
    port, admin = start(procs, upstream, rls.port, cfg, hcm_extra=al)
    st, h, b = proto.request(port, "/echo", headers={"x-mode": "over"})
    assert st == 429 and b == b""
    assert h.get("x-envoy-ratelimited") == "true"
    assert h.get("x-rls-resp") == "over"
    assert h.get("x-limited-by") == "sharp"
    assert h.get("x-ratelimit-limit") == '10, 10;w=60;name="d0"'
    assert h.get("x-ratelimit-remaining") == "5"
    assert h.get("x-ratelimit-reset") == "30"
    # the answer's raw_body and content-type make the reply
    st, h, b = proto.request(port, "/echo", headers={"x-mode": "over-json"})
    assert st == 429 and b == b'{"limited": true}'
    assert h.get("content-type") == "application/json"
    assert log_lines(path, 2) == ["429 RL request_rate_limited"] * 2
    assert stat(admin, "cluster.backend.ratelimit.over_limit") == 2
    assert stat(admin, "cluster.backend.upstream_rq_429") == 2
    # OK: x-ratelimit-* on the upstream's response too
    st, h, _ = proto.request(port, "/echo", headers={"x-mode": "ok"})
    assert st == 200 and h.get("x-ratelimit-remaining") == "5" and "x-envoy-ratelimited" not in h


def test_hostile_answer_headers(procs, upstream, rls):
    """Header names are lower-cased; a name that is not a token, a value
    with CR/LF, a pseudo-header are dropped, on both sides."""
    port, _ = start(procs, upstream, rls.port, ratelimit())
    st, h, b = h1_request(port, "/echo", headers={"x-mode": "evil"})
    assert st == 200, b
    assert h.get("x-upper") == "up" and h.get("x-rls-resp") == "evil"
    assert "x-injected" not in h and "x-split" not in h and "bad name" not in h
    seen = echoed(b)
    assert seen.get("x-upper") == ["up"]
    assert "x-injected" not in seen and "x-split" not in seen


def test_answer_headers_do_not_touch_framing(procs, upstream, rls):
    """An answer's content-length, Host and connection-specific headers
    (transfer-encoding, connection, upgrade, keep-alive) are dropped on both
    sides: written beside the message's own framing they would make the
    upstream or the client read this message, and the next ones on the
    connection, differently."""
    port, _ = start(procs, upstream, rls.port, ratelimit())
    st, h, b = h1_request(port, "/echo", method="POST", body=b"hello", headers={"x-mode": "framing"})
    assert st == 200, b
    import json
    assert json.loads(b)["body_bytes"] == 5
    seen = echoed(b)
    assert seen.get("content-length") == ["5"], seen
    assert seen.get("host") == [f"127.0.0.1:{port}"], seen
    for k in ("transfer-encoding", "connection", "upgrade", "keep-alive"):
        assert k not in seen, seen
    assert seen.get("x-rls-req") == ["framing"]
    assert h.get("content-length") == str(len(b)), h
    for k in ("transfer-encoding", "connection", "upgrade", "keep-alive"):
        assert k not in h, h
    assert h.get("x-rls-resp") == "framing"


def test_dynamic_metadata(procs, upstream, rls):
    """The answer's dynamic_metadata lands in the stream's namespace
    envoy.filters.http.ratelimit."""
    al, path = file_access_log("%DYNAMIC_METADATA(envoy.filters.http.ratelimit)%\\n")
    port, _ = start(procs, upstream, rls.port, ratelimit(), hcm_extra=al)
    assert h1_request(port, "/echo", headers={"x-mode": "meta"})[0] == 200
    assert h1_request(port, "/echo", headers={"x-mode": "ok"})[0] == 200
    # the two requests may be logged by different workers, in either order
    assert sorted(log_lines(path, 2)) == ["-", '{"n":3,"tier":"gold"}']


def test_x_ratelimit_headers_of_several_statuses(procs, upstream, rls):
    """x-ratelimit-*: the status closest to its limit gives the numbers,
    every status its quota policy."""
    routes = ROUTES + "    - actions: [{ generic_key: { descriptor_value: second } }]\n"
    port, _ = start(procs, upstream, rls.port, ratelimit("enable_x_ratelimit_headers: DRAFT_VERSION_03\n"),
                    routes=routes)
    st, h, _ = h1_request(port, "/echo", headers={"x-mode": "ok"})
    assert st == 200
    assert h.get("x-ratelimit-limit") == '20, 10;w=60;name="d0", 20;w=60;name="d1"'
    assert h.get("x-ratelimit-remaining") == "4"
    assert h.get("x-ratelimit-reset") == "31"


def test_over_limit_options(procs, upstream, rls):
    """rate_limited_status, disable_x_envoy_ratelimited_header, stat_prefix,
    and gRPC RESOURCE_EXHAUSTED."""
    cfg = ratelimit("rate_limited_status: { code: 503 }\ndisable_x_envoy_ratelimited_header: true\n"
                    "stat_prefix: edge\nrate_limited_as_resource_exhausted: true\n")
    port, admin = start(procs, upstream, rls.port, cfg)
    st, h, _ = h1_request(port, "/echo", headers={"x-mode": "over"})
    assert st == 503 and "x-envoy-ratelimited" not in h
    st, h, _ = h1_request(port, "/echo", headers={"x-mode": "over", "content-type": "application/grpc"})
    assert st == 200 and h.get("grpc-status") == "8"
    assert stat(admin, "cluster.backend.ratelimit.edge.over_limit") == 2
    # a status below 400 means 429
    port2, _ = start(procs, upstream, rls.port, ratelimit("rate_limited_status: { code: 302 }\n"))
    assert h1_request(port2, "/echo", headers={"x-mode": "over"})[0] == 429


def test_errors(procs, upstream, rls):
    """A failed call (gRPC UNAVAILABLE, an unreadable answer, a timeout) lets
    the request through (failure_mode_allowed); failure_mode_deny answers
    status_on_error with RLSE."""
    port, admin = start(procs, upstream, rls.port, ratelimit(timeout="0.3s"))
    for mode in ("fail", "garbage"):
        st, _, b = h1_request(port, "/echo", headers={"x-mode": mode})
        assert st == 200, (mode, b)
        assert "x-rls-req" not in echoed(b)
    t0 = time.time()
    assert h1_request(port, "/echo", headers={"x-mode": "slow"})[0] == 200
    assert time.time() - t0 < 1.4 * SLOW
    assert stat(admin, "cluster.backend.ratelimit.error") == 3
    assert stat(admin, "cluster.backend.ratelimit.failure_mode_allowed") == 3

    al, path = file_access_log("%RESPONSE_CODE% %RESPONSE_FLAGS% %RESPONSE_CODE_DETAILS%\\n")
    port2, admin2 = start(procs, upstream, rls.port, ratelimit("failure_mode_deny: true\n", timeout="0.3s"),
                          hcm_extra=al)
    assert h1_request(port2, "/echo", headers={"x-mode": "fail"})[0] == 500
    assert h1_request(port2, "/echo", headers={"x-mode": "slow"})[0] == 500
    assert log_lines(path, 2) == ["500 RLSE rate_limiter_error"] * 2
    assert stat(admin2, "cluster.backend.ratelimit.error") == 2
    assert stat(admin2, "cluster.backend.ratelimit.failure_mode_allowed") is None
    port3, _ = start(procs, upstream, rls.port,
                     ratelimit("failure_mode_deny: true\nstatus_on_error: { code: 503 }\n"))
    assert h1_request(port3, "/echo", headers={"x-mode": "fail"})[0] == 503


def test_client_gone_during_call(procs, upstream, rls):
    """The client leaves while the call is in flight: the call is reset
    (cancelled with its stream), nothing reaches the upstream, and the
    proxy goes on serving."""
    import socket
    port, admin = start(procs, upstream, rls.port, ratelimit(timeout="5s"))
    c = socket.create_connection(("127.0.0.1", port))
    c.sendall(b"GET /echo HTTP/1.1\r\nhost: x\r\nx-mode: slow\r\n\r\n")
    wait_for(lambda: rls.requests, 5 * SLOW, "the ShouldRateLimit call")
    c.close()
    wait_for(lambda: stat(admin, "cluster.rls.upstream_rq_tx_reset") == 1, 5 * SLOW, "the call's reset")
    assert stat(admin, "cluster.backend.upstream_rq_total") in (None, 0)
    assert stat(admin, "cluster.backend.ratelimit.error") is None
    assert h1_request(port, "/echo", headers={"x-mode": "ok"})[0] == 200


def test_aggregate_service_cluster(procs, upstream, rls):
    """The rate limit service's cluster is an aggregate cluster: the call
    goes to the member its balancer chooses (it failed with "no healthy
    upstream" before, and the request went through unchecked)."""
    port, admin = start(procs, upstream, rls.port, ratelimit(extra="failure_mode_deny: true\n"), aggregate=True)
    assert h1_request(port, "/echo", headers={"x-mode": "ok"})[0] == 200
    st, _, _ = h1_request(port, "/echo", headers={"x-mode": "over"})
    assert st == 429
    assert [descriptors(r) for r in rls.requests] == [[[("mode", "ok")]], [[("mode", "over")]]]
    assert stat(admin, "cluster.rls_m.upstream_rq_total") == 2
    assert stat(admin, "cluster.backend.ratelimit.ok") == 1
    assert stat(admin, "cluster.backend.ratelimit.over_limit") == 1
    assert not stat(admin, "cluster.backend.ratelimit.error")


def test_dead_service(procs, upstream):
    """No rate limit service listening: an error; the request goes on."""
    port, admin = start(procs, upstream, free_port(), ratelimit())
    assert h1_request(port, "/echo", headers={"x-mode": "ok"})[0] == 200
    assert stat(admin, "cluster.backend.ratelimit.error") == 1


def test_virtual_host_rate_limits(procs, upstream, rls):
    """The virtual host's rate_limits: used when the route has none, added
    with include_vh_rate_limits or vh_rate_limits INCLUDE, never with
    IGNORE; RateLimitPerRoute's domain replaces the filter's."""
    vhost = f"rate_limits:\n- actions: [{{ generic_key: {{ descriptor_value: vhost }} }}, {MODE}]\n"
    own = f"    rate_limits: [{{ actions: [{{ generic_key: {{ descriptor_value: route }} }}, {MODE}] }}]\n"
    routes = (
        '- match: { prefix: "/none" }\n  route:\n    cluster: backend\n'
        '- match: { prefix: "/own" }\n  route:\n    cluster: backend\n' + own +
        '- match: { prefix: "/incl" }\n  route:\n    cluster: backend\n    include_vh_rate_limits: true\n' + own +
        '- match: { prefix: "/perroute" }\n  route:\n    cluster: backend\n' + own +
        f"  typed_per_filter_config:\n    envoy.filters.http.ratelimit:\n      \"@type\": {ROUTE_TYPE}\n"
        "      vh_rate_limits: INCLUDE\n      domain: other\n"
        '- match: { prefix: "/ignore" }\n  route:\n    cluster: backend\n'
        f"  typed_per_filter_config:\n    envoy.filters.http.ratelimit:\n      \"@type\": {ROUTE_TYPE}\n"
        "      vh_rate_limits: IGNORE\n")
    port, _ = start(procs, upstream, rls.port, ratelimit(), routes=routes, vhost_extra=vhost)
    seen = {}
    for p in ("/none", "/own", "/incl", "/perroute", "/ignore"):
        n = len(rls.requests)
        assert h1_request(port, p, headers={"x-mode": "ok"})[0] in (200, 404)
        seen[p] = [(r.domain, [d[0][1] for d in descriptors(r)]) for r in rls.requests[n:]]
    assert seen == {
        "/none": [("edge", ["vhost"])],
        "/own": [("edge", ["route"])],
        "/incl": [("edge", ["route", "vhost"])],
        "/perroute": [("other", ["route", "vhost"])],
        "/ignore": [],
    }


def test_request_type(procs, upstream, rls):
    """request_type internal: only x-envoy-internal requests are limited."""
    port, _ = start(procs, upstream, rls.port, ratelimit("request_type: internal\n"))
    assert h1_request(port, "/echo", headers={"x-mode": "over"})[0] == 200
    assert rls.requests == []


def test_per_route_rate_limits(procs, upstream, rls):
    """A RateLimitPerRoute's rate_limits alone make the descriptors (the
    route's and virtual host's are not read, whatever vh_rate_limits says),
    each with its hits_addend; its domain replaces the filter's; a
    descriptor with apply_on_stream_done is asked for when the stream ends,
    in a call of its own after the response."""
    vhost = "rate_limits:\n- actions: [{ generic_key: { descriptor_value: vhost } }]\n"
    routes = (
        '- match: { prefix: "/quota" }\n  route:\n    cluster: backend\n'
        "    rate_limits: [{ actions: [{ generic_key: { descriptor_value: route } }] }]\n"
        f"  typed_per_filter_config:\n    envoy.filters.http.ratelimit:\n      \"@type\": {ROUTE_TYPE}\n"
        "      vh_rate_limits: INCLUDE\n      override_option: INCLUDE_POLICY\n      domain: quota\n"
        "      rate_limits:\n"
        "      - actions: [{ generic_key: { descriptor_key: service, descriptor_value: s1 } }]\n"
        "        hits_addend: { number: 0 }\n"
        f"      - actions: [{{ generic_key: {{ descriptor_key: service, descriptor_value: s2 }} }}, {MODE}]\n"
        "        hits_addend: { number: 5 }\n"
        "      - actions: [{ generic_key: { descriptor_key: service, descriptor_value: s3 } }]\n"
        "      - actions: [{ request_headers: { header_name: x-cost, descriptor_key: cost } }]\n"
        "        hits_addend: { number: 7 }\n"
        "        apply_on_stream_done: true\n")
    port, admin = start(procs, upstream, rls.port, ratelimit(), routes=routes, vhost_extra=vhost)

    def seen(r):
        return (r.domain, [(d.entries[0].value, d.hits_addend.value if d.HasField("hits_addend") else None)
                           for d in r.descriptors])

    st, _, b = h1_request(port, "/quota/a", headers={"x-mode": "ok", "x-cost": "3"})
    assert st == 200, b
    assert seen(rls.requests[0]) == ("quota", [("s1", 0), ("s2", 5), ("s3", None)])
    # the stream's end: a call of its own with the stream-done descriptor
    assert wait_for(lambda: len(rls.requests) == 2, 5, "the stream-end call")
    assert seen(rls.requests[1]) == ("quota", [("3", 7)])
    assert descriptors(rls.requests[1]) == [[("cost", "3")]]
    # over the limit at the request: 429, and the stream's end still asks
    st, h, _ = h1_request(port, "/quota/b", headers={"x-mode": "over", "x-cost": "4"})
    assert st == 429 and h.get("x-envoy-ratelimited") == "true"
    assert wait_for(lambda: len(rls.requests) == 4, 5, "the stream-end call")
    assert descriptors(rls.requests[3]) == [[("cost", "4")]]
    # a stream-end descriptor whose action fails (no x-cost) makes no call
    assert h1_request(port, "/quota/c", headers={"x-mode": "ok"})[0] == 200
    assert wait_for(lambda: len(rls.requests) == 5, 5, "the stream-end call")
    time.sleep(0.3 * SLOW)
    assert len(rls.requests) == 5
    assert stat(admin, "cluster.backend.ratelimit.ok") == 2


def test_route_rate_limits_on_stream_done(procs, upstream, rls):
    """A route RateLimit with apply_on_stream_done: not asked for at the
    request (which goes on without a call when it is the only one), asked
    for when the stream ends, also when the client went away first."""
    routes = ('- match: { prefix: "/" }\n  route:\n    cluster: backend\n'
              "    rate_limits:\n"
              "    - actions: [{ generic_key: { descriptor_value: done } }]\n"
              "      apply_on_stream_done: true\n")
    port, admin = start(procs, upstream, rls.port, ratelimit(), routes=routes)
    st, _, _ = h1_request(port, "/echo")
    assert st == 200
    assert wait_for(lambda: len(rls.requests) == 1, 5, "the stream-end call")
    assert descriptors(rls.requests[0]) == [[("generic_key", "done")]]
    assert stat(admin, "cluster.backend.ratelimit.ok") is None
    # the client resets before the upstream answers: the end still asks
    import socket
    with socket.create_connection(("127.0.0.1", port), timeout=5) as c:
        c.sendall(b"GET /?delay_ms=300 HTTP/1.1\r\nHost: x\r\n\r\n")
        time.sleep(0.1)
    assert wait_for(lambda: len(rls.requests) == 2, 5, "the stream-end call")


LOCALITY_ROUTES = ('- match: { prefix: "/" }\n  route:\n    cluster: backend\n'
                   "    rate_limits:\n"
                   "    - actions:\n"
                   "      - metadata: { descriptor_key: zone_tier, source: CLUSTER_LOCALITY_ENTRY,\n"
                   "                    metadata_key: { key: acme, path: [{ key: tier }] } }\n"
                   "      apply_on_stream_done: true\n"
                   "    - actions:\n"
                   "      - metadata: { descriptor_key: at_request, source: CLUSTER_LOCALITY_ENTRY, default_value: none,\n"
                   "                    metadata_key: { key: acme, path: [{ key: tier }] } }\n")


@pytest.mark.parametrize("cluster_type", ["STATIC", "STRICT_DNS"])
def test_metadata_action_cluster_locality(procs, upstream, rls, cluster_type):
    """source CLUSTER_LOCALITY_ENTRY: the upstream host's locality metadata
    (LocalityLbEndpoints.metadata), which a stream has once a host is
    chosen: at the request there is none (default_value), at the stream's
    end (apply_on_stream_done) the locality's value. A STRICT_DNS
    cluster's hosts (an IP literal: no DNS server asked) have it too."""
    listen, admin = free_port(), free_port()
    y = bootstrap_yaml(listen, admin, {"backend": [upstream.port], "rls": [rls.port]}, routes=LOCALITY_ROUTES)
    y = with_filter(y, ratelimit())
    y = y.replace("  - name: rls\n    type: STATIC\n", "  - name: rls\n    type: STATIC\n    http2_protocol_options: {}\n")
    old = "      cluster_name: backend\n      endpoints:\n      - lb_endpoints:\n"
    assert old in y
    assert "  - name: backend\n    type: STATIC\n" in y
    y = y.replace("  - name: backend\n    type: STATIC\n", f"  - name: backend\n    type: {cluster_type}\n")
    y = y.replace(old, "      cluster_name: backend\n      endpoints:\n"
                       "      - locality: { region: r1, zone: z1 }\n"
                       "        metadata: { filter_metadata: { acme: { tier: gold } } }\n"
                       "        lb_endpoints:\n")
    run_sharp_config(procs, y, admin)
    assert h1_request(listen, "/echo")[0] == 200
    assert wait_for(lambda: len(rls.requests) == 2, 5 * SLOW, "the request's and the stream-end call")
    assert descriptors(rls.requests[0]) == [[("at_request", "none")]]
    assert descriptors(rls.requests[1]) == [[("zone_tier", "gold")]]


def test_metadata_action_cluster_locality_eds_update(procs, upstream, rls, tmp_path):
    """An EDS update that changes only the locality metadata of the same
    endpoint: the next request's stream-end descriptor has the new value; a
    locality without metadata gives no descriptor (no default_value)."""
    import json
    eds = str(tmp_path / "eds.json")

    def write(version, md):
        loc = {"locality": {"region": "r1", "zone": "z1"}, "lb_endpoints": [
            {"endpoint": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": upstream.port}}}}]}
        if md is not None:
            loc["metadata"] = {"filter_metadata": {"acme": {"tier": md}}}
        obj = {"version_info": str(version), "resources": [{
            "@type": "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment",
            "cluster_name": "backend", "endpoints": [loc]}]}
        tmp = f"{eds}.tmp{version}"
        with open(tmp, "w") as f:
            f.write(json.dumps(obj))
        os.replace(tmp, eds)

    write(1, "gold")
    routes = LOCALITY_ROUTES.split("    - actions:\n      - metadata: { descriptor_key: at_request")[0]
    listen, admin = free_port(), free_port()
    y = bootstrap_yaml(listen, admin, {"backend": [upstream.port], "rls": [rls.port]}, routes=routes)
    y = with_filter(y, ratelimit())
    y = y.replace("  - name: rls\n    type: STATIC\n", "  - name: rls\n    type: STATIC\n    http2_protocol_options: {}\n")
    old = ("  - name: backend\n    type: STATIC\n    connect_timeout: 1s\n    load_assignment:\n"
           "      cluster_name: backend\n      endpoints:\n      - lb_endpoints:\n"
           f"        - endpoint: {{ address: {{ socket_address: {{ address: 127.0.0.1, port_value: {upstream.port} }} }} }}\n")
    assert old in y
    y = y.replace(old, "  - name: backend\n    type: EDS\n    connect_timeout: 1s\n"
                       f"    eds_cluster_config: {{ eds_config: {{ path_config_source: {{ path: {eds} }} }} }}\n")
    run_sharp_config(procs, y, admin)

    def ask():
        n = len(rls.requests)
        assert h1_request(listen, "/echo")[0] == 200
        assert wait_for(lambda: len(rls.requests) == n + 1, 5 * SLOW, "the stream-end call")
        return descriptors(rls.requests[n])

    assert ask() == [[("zone_tier", "gold")]]
    changes = stat(admin, "cluster.backend.membership_change")
    write(2, "silver")
    assert wait_for(lambda: stat(admin, "cluster.backend.update_success") == 2, 5 * SLOW, "EDS version 2")
    assert ask() == [[("zone_tier", "silver")]]
    # the host stayed the same one (updated in place)
    assert stat(admin, "cluster.backend.membership_change") == changes
    write(3, None)
    assert wait_for(lambda: stat(admin, "cluster.backend.update_success") == 3, 5 * SLOW, "EDS version 3")
    n = len(rls.requests)
    # no descriptor at the stream's end, so no call
    assert h1_request(listen, "/echo")[0] == 200
    assert h1_request(listen, "/echo")[0] == 200
    write(4, "bronze")
    assert wait_for(lambda: stat(admin, "cluster.backend.update_success") == 4, 5 * SLOW, "EDS version 4")
    assert ask() == [[("zone_tier", "bronze")]]
    assert len(rls.requests) == n + 1


def test_metadata_actions(procs, upstream, rls):
    """metadata actions: the string at metadata_key in the stream's dynamic
    metadata (set here by header_to_metadata, a filter before this one) or
    in the route's metadata; absent or empty takes default_value, else
    drops the descriptor, or with skip_if_absent leaves the entry out."""
    routes = (
        '- match: { prefix: "/" }\n'
        "  metadata:\n"
        "    filter_metadata:\n"
        "      acme: { plan: { tier: gold, count: 3 } }\n"
        "  route:\n    cluster: backend\n    rate_limits:\n"
        "    - actions:\n"
        "      - metadata: { descriptor_key: tenant, metadata_key: { key: acme, path: [{ key: tenant }] } }\n"
        "      - metadata: { descriptor_key: tier, source: ROUTE_ENTRY,\n"
        "                    metadata_key: { key: acme, path: [{ key: plan }, { key: tier }] } }\n"
        "    - actions:\n"
        "      - metadata: { descriptor_key: dflt, default_value: anon, metadata_key: { key: acme, path: [{ key: nope }] } }\n"
        "      - metadata: { descriptor_key: skipped, skip_if_absent: true,\n"
        "                    metadata_key: { key: acme, path: [{ key: nope }] } }\n"
        "      - metadata: { descriptor_key: notstring, skip_if_absent: true, source: ROUTE_ENTRY,\n"
        "                    metadata_key: { key: acme, path: [{ key: plan }, { key: count }] } }\n")
    h2m = ("- name: envoy.filters.http.header_to_metadata\n  typed_config:\n"
           "    \"@type\": type.googleapis.com/envoy.extensions.filters.http.header_to_metadata.v3.Config\n"
           "    request_rules:\n    - header: x-tenant\n"
           "      on_header_present: { metadata_namespace: acme, key: tenant, type: STRING }\n")
    listen, admin = free_port(), free_port()
    y = bootstrap_yaml(listen, admin, {"backend": [upstream.port], "rls": [rls.port]}, routes=routes)
    y = with_filter(y, ratelimit())
    y = y.replace("          http_filters:\n",
                  "          http_filters:\n" + "".join("          " + ln + "\n" for ln in h2m.splitlines()))
    y = y.replace("  - name: rls\n    type: STATIC\n", "  - name: rls\n    type: STATIC\n    http2_protocol_options: {}\n")
    run_sharp_config(procs, y, admin)
    assert h1_request(listen, "/echo", headers={"x-tenant": "t1"})[0] == 200
    assert descriptors(rls.requests[0]) == [[("tenant", "t1"), ("tier", "gold")], [("dflt", "anon")]]
    # no tenant in the dynamic metadata: the first RateLimit makes nothing
    assert h1_request(listen, "/echo")[0] == 200
    assert descriptors(rls.requests[1]) == [[("dflt", "anon")]]


PER_ROUTE = ("  typed_per_filter_config:\n    envoy.filters.http.ratelimit:\n"
             f"      \"@type\": {ROUTE_TYPE}\n")


@pytest.mark.parametrize("cfg,routes,msg", [
    (ratelimit("request_type: sometimes\n"), ROUTES, "request_type"),
    (ratelimit("stage: 11\n"), ROUTES, "stage"),
    (ratelimit().replace("envoy_grpc: { cluster_name: rls }",
                         "envoy_grpc: { cluster_name: rls }\n    google_grpc: { target_uri: x, stat_prefix: y }"),
     ROUTES, "grpc_service"),
    (ratelimit(), ROUTES.replace("- actions:", "- limit: { dynamic_metadata: { metadata_key: { key: k, path: [{ key: p }] } } }\n      actions:"),
     "limit"),
    (ratelimit(), ROUTES.replace(MODE, "{ metadata: { descriptor_key: k, source: 7, "
                                       "metadata_key: { key: k, path: [{ key: p }] } } }"),
     "metadata.source"),
    (ratelimit(), ROUTES.replace(MODE, "{ metadata: { descriptor_key: '', metadata_key: { key: k } } }"),
     "descriptor_key"),
    (ratelimit(), ROUTES.replace(MODE, "{ metadata: { descriptor_key: k } }"), "metadata_key"),
    # MetadataKey's own rules (Envoy's validation): a namespace, a path of at least one non-empty key
    (ratelimit(), ROUTES.replace(MODE, "{ metadata: { descriptor_key: k, metadata_key: { key: k } } }"),
     "metadata.metadata_key.path: needs at least 1 item"),
    (ratelimit(), ROUTES.replace(MODE, "{ metadata: { descriptor_key: k, metadata_key: { key: '', path: [{ key: p }] } } }"),
     "metadata.metadata_key.key: must be at least 1 character long"),
    (ratelimit(), ROUTES.replace(MODE, "{ metadata: { descriptor_key: k, metadata_key: { key: k, path: [{}] } } }"),
     "metadata.metadata_key.path[0].key: is required"),
    (ratelimit(), ROUTES.replace(MODE, "{ metadata: { descriptor_key: k, metadata_key: { key: k, path: [{ key: '' }] } } }"),
     "metadata.metadata_key.path[0].key: must be at least 1 character long"),
    (ratelimit(), ROUTES + PER_ROUTE + "      rate_limits: [{ actions: [{ metadata: { descriptor_key: k, metadata_key: { key: k } } }] }]\n",
     "metadata_key.path: needs at least 1 item"),
    (ratelimit(), ROUTES.replace(MODE, "{ generic_key: { descriptor_value: '' } }"), "descriptor_value"),
    (ratelimit(), ROUTES.replace(MODE, "{ masked_remote_address: { v4_prefix_mask_len: 33 } }"),
     "v4_prefix_mask_len"),
    (ratelimit(), ROUTES.replace("    - actions: [" + MODE + "]\n", "    - stage: 11\n      actions: [" + MODE + "]\n"),
     "stage"),
    (ratelimit(), ROUTES + PER_ROUTE + "      rate_limits: [{ stage: 0, actions: [{ generic_key: { descriptor_value: x } }] }]\n",
     "rate_limits[0]: 'stage' field and 'disable_key' field are not supported"),
    (ratelimit(), ROUTES + PER_ROUTE + "      rate_limits: [{ disable_key: k, actions: [{ generic_key: { descriptor_value: x } }] }]\n",
     "'stage' field and 'disable_key' field are not supported"),
    (ratelimit(), ROUTES + PER_ROUTE + "      rate_limits: [{ hits_addend: { format: '%BYTES_RECEIVED%' }, actions: [{ generic_key: { descriptor_value: x } }] }]\n",
     "format is not supported by SHARP"),
    (ratelimit(), ROUTES + PER_ROUTE + "      rate_limits: [{ hits_addend: {}, actions: [{ generic_key: { descriptor_value: x } }] }]\n",
     "hits_addend must contain either a format or a number"),
    (ratelimit(), ROUTES + PER_ROUTE + "      rate_limits: [{ hits_addend: { number: 1000000001 }, actions: [{ generic_key: { descriptor_value: x } }] }]\n",
     "hits_addend.number: must be at most 1000000000"),
    (ratelimit(), ROUTES + PER_ROUTE + "      rate_limits: [{ actions: [] }]\n", "actions"),
    (ratelimit(), ROUTES.replace("    - actions:", "    - hits_addend: { number: 2 }\n      actions:"),
     "hits_addend: supported only in the rate limit filter's per-route rate_limits"),
])
def test_refused(cfg, routes, msg):
    y = bootstrap_yaml(free_port(), free_port(), {"backend": [1], "rls": [2]}, routes=routes)
    rc, out = validate_config(with_filter(y, cfg))
    assert rc != 0 and msg in out, out
