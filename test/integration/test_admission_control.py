"""envoy.filters.http.admission_control with the real binary: the test
upstream failing a share of the requests (its /status/503) makes the filter
reject requests with Envoy's 503 (empty body, details
denied_by_admission_control, no response flag), a healthy upstream or a
rate below rps_threshold gets none rejected, the rq_* stats count every
sample, and gRPC responses (python3-grpcio server) are judged by their
grpc-status against grpc_criteria."""
import http.client
import textwrap
import urllib.request

import grpc
import pytest

from conftest import (SLOW, bootstrap_yaml, file_access_log, free_port, log_lines, run_sharp_config, stat,
                      wait_for)

PREFIX = "http.ingress_http.admission_control."


def ac_filter(body):
    """http_filters with the admission control filter (typed_config `body`)
    before the router."""
    return ("http_filters:\n"
            "- name: envoy.filters.http.admission_control\n"
            "  typed_config:\n"
            "    \"@type\": type.googleapis.com/envoy.extensions.filters.http.admission_control.v3.AdmissionControl\n"
            + textwrap.indent(textwrap.dedent(body), "    ")
            + "- name: envoy.filters.http.router\n"
            "  typed_config:\n"
            "    \"@type\": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router\n")


def start(procs, upstream_port, body, log_format=None, cluster_extra="", top_extra=""):
    listen, admin = free_port(), free_port()
    extra, log = "", None
    if log_format:
        extra, log = file_access_log(log_format)
    y = bootstrap_yaml(listen, admin, {"backend": [upstream_port]}, hcm_extra=extra, cluster_extra=cluster_extra)
    # our filter list replaces the router-only one bootstrap_yaml writes
    head, tail = y.split("          http_filters:\n", 1)
    tail = tail.split("  clusters:\n", 1)[1]
    y = head + textwrap.indent(ac_filter(body), "          ") + "  clusters:\n" + tail + top_extra
    run_sharp_config(procs, y, admin)
    return listen, admin, log


def send(conn, path):
    """One request on a keep-alive connection (so all go to one worker and
    its history): (status, headers, body)."""
    conn.request("GET", path)
    r = conn.getresponse()
    return r.status, dict((k.lower(), v) for k, v in r.getheaders()), r.read()


def is_rejection(status, headers, body):
    return status == 503 and "x-upstream-name" not in headers and body == b""


def stats(admin):
    return {k: stat(admin, PREFIX + k) for k in ("rq_rejected", "rq_success", "rq_failure")}


def test_rejects_when_upstream_fails_a_large_share(procs, upstream):
    """80% of the requests fail upstream: with sr_threshold 95% and the
    default 80% cap the probability approaches (n - 0.2n/0.95)/(n+1) = 0.79,
    so most later requests are rejected; each rejection is Envoy's local
    reply and is not sampled."""
    listen, admin, log = start(procs, upstream.port, "success_criteria: {}\n",
                               log_format="%RESPONSE_CODE% %RESPONSE_FLAGS% %RESPONSE_CODE_DETAILS%\\n")
    conn = http.client.HTTPConnection("127.0.0.1", listen, timeout=10 * SLOW)
    results = []
    for i in range(400):
        results.append(send(conn, "/" if i % 5 == 0 else "/status/503"))
    conn.close()
    rejected = [r for r in results if is_rejection(*r)]
    served = [r for r in results if not is_rejection(*r)]
    assert all(r[1].get("x-upstream-name") == "upstream" for r in served)
    # the first requests cannot be rejected: the window is empty
    assert not is_rejection(*results[0])
    late = results[200:]
    share = sum(1 for r in late if is_rejection(*r)) / len(late)
    assert 0.6 <= share <= 0.95, share
    s = stats(admin)
    assert s["rq_rejected"] == len(rejected)
    assert s["rq_success"] + s["rq_failure"] == len(served)
    assert s["rq_failure"] == sum(1 for r in served if r[0] == 503)
    assert s["rq_success"] == sum(1 for r in served if r[0] == 200)
    # Envoy's local reply: no response flag, its details
    lines = log_lines(log, 400)
    assert lines.count("503 - denied_by_admission_control") == len(rejected)


def test_rejected_response_shape(procs, upstream):
    """Every request fails upstream and nothing caps the probability: after
    the first failures the filter rejects; the reply is a bare 503."""
    listen, admin, _ = start(procs, upstream.port, """\
        success_criteria: {}
        max_rejection_probability: { default_value: { value: 100 }, runtime_key: ac.max_p }
        """)
    conn = http.client.HTTPConnection("127.0.0.1", listen, timeout=10 * SLOW)
    rejection = None
    for _ in range(200):
        st, h, body = send(conn, "/status/500")
        if is_rejection(st, h, body):
            rejection = (st, h, body)
            break
        assert st == 500 and h["x-upstream-name"] == "upstream"
    assert rejection, "no request was rejected"
    st, h, body = rejection
    assert st == 503 and body == b""
    assert h.get("content-length") == "0"
    assert "content-type" not in h
    assert stats(admin)["rq_rejected"] == 1


def test_unreachable_upstream_counts_as_failures(procs):
    """The router's own 503 for an upstream it cannot reach (UF) passes the
    filter like any response: a failure, and rejections follow."""
    listen, admin, log = start(procs, free_port(), "success_criteria: {}\n",
                               log_format="%RESPONSE_CODE% %RESPONSE_FLAGS%\\n")
    conn = http.client.HTTPConnection("127.0.0.1", listen, timeout=10 * SLOW)
    results = [send(conn, "/") for _ in range(100)]
    rejected = sum(1 for r in results if is_rejection(*r))
    assert 0 < rejected < 100
    assert all(r[0] == 503 for r in results)
    s = stats(admin)
    assert s == {"rq_rejected": rejected, "rq_success": 0, "rq_failure": 100 - rejected}
    lines = log_lines(log, 100)
    assert lines.count("503 UF") == 100 - rejected and lines.count("503 -") == rejected


def test_healthy_upstream_gets_nothing_rejected(procs, upstream):
    """4xx are successes by default: a healthy upstream and client errors
    give no rejections."""
    listen, admin, _ = start(procs, upstream.port, "success_criteria: {}\n")
    conn = http.client.HTTPConnection("127.0.0.1", listen, timeout=10 * SLOW)
    for i in range(300):
        st, h, _ = send(conn, "/status/404" if i % 2 else "/")
        assert st in (200, 404) and h["x-upstream-name"] == "upstream"
    assert stats(admin) == {"rq_rejected": 0, "rq_success": 300, "rq_failure": 0}


def test_below_rps_threshold_nothing_is_rejected(procs, upstream):
    """rps_threshold 5 over a 10 s window: the first 50 requests see an
    average below 5 per second and pass even though all of them fail; only
    then do rejections start. With a threshold out of reach none are."""
    listen, admin, _ = start(procs, upstream.port, """\
        success_criteria: {}
        sampling_window: 10s
        rps_threshold: { default_value: 5, runtime_key: ac.rps }
        """)
    conn = http.client.HTTPConnection("127.0.0.1", listen, timeout=10 * SLOW)
    results = [send(conn, "/status/503") for _ in range(250)]
    assert not any(is_rejection(*r) for r in results[:50])
    assert any(is_rejection(*r) for r in results[50:])

    listen2, admin2, _ = start(procs, upstream.port, """\
        success_criteria: {}
        rps_threshold: { default_value: 100000, runtime_key: ac.rps }
        """)
    conn2 = http.client.HTTPConnection("127.0.0.1", listen2, timeout=10 * SLOW)
    results = [send(conn2, "/status/503") for _ in range(200)]
    assert not any(is_rejection(*r) for r in results)
    assert stats(admin2) == {"rq_rejected": 0, "rq_success": 0, "rq_failure": 200}


def test_disabled_by_runtime_and_custom_http_criteria(procs, upstream):
    """enabled false passes everything and samples nothing; http_criteria
    [200, 300) makes a 404 a failure."""
    listen, admin, _ = start(procs, upstream.port, """\
        enabled: { default_value: false, runtime_key: ac.enabled }
        success_criteria: {}
        max_rejection_probability: { default_value: { value: 100 }, runtime_key: ac.max_p }
        """)
    conn = http.client.HTTPConnection("127.0.0.1", listen, timeout=10 * SLOW)
    assert all(send(conn, "/status/503")[0] == 503 for _ in range(100))
    assert stats(admin) == {"rq_rejected": 0, "rq_success": 0, "rq_failure": 0}

    listen2, admin2, _ = start(procs, upstream.port, """\
        success_criteria:
          http_criteria:
            http_success_status: [{ start: 200, end: 300 }]
        max_rejection_probability: { default_value: { value: 100 }, runtime_key: ac.max_p }
        """)
    conn2 = http.client.HTTPConnection("127.0.0.1", listen2, timeout=10 * SLOW)
    results = [send(conn2, "/status/404") for _ in range(100)]
    assert any(is_rejection(*r) for r in results)
    s = stats(admin2)
    assert s["rq_success"] == 0 and s["rq_failure"] == sum(1 for r in results if r[0] == 404)


def runtime_modify(admin, query):
    req = urllib.request.Request(f"http://127.0.0.1:{admin}/runtime_modify?{query}", method="POST")
    with urllib.request.urlopen(req, timeout=5) as r:
        assert r.status == 200


def test_runtime_keys_override_the_defaults(procs, upstream):
    """enabled and max_rejection_probability from the runtime (an admin
    layer): a runtime max_rejection_probability outside [0, 100] is ignored
    (Envoy's Runtime::Percentage), 100 lets the filter reject."""
    listen, admin, _ = start(procs, upstream.port, """\
        enabled: { default_value: false, runtime_key: ac.enabled }
        success_criteria: {}
        max_rejection_probability: { default_value: { value: 0 }, runtime_key: ac.max_p }
        """, top_extra="layered_runtime:\n  layers:\n  - name: admin\n    admin_layer: {}\n")
    conn = http.client.HTTPConnection("127.0.0.1", listen, timeout=10 * SLOW)
    assert all(send(conn, "/status/503")[0] == 503 for _ in range(50))
    assert stats(admin) == {"rq_rejected": 0, "rq_success": 0, "rq_failure": 0}
    # one snapshot: enabled, and a cap out of range (the default 0 applies)
    runtime_modify(admin, "ac.enabled=true&ac.max_p=150")
    wait_for(lambda: send(conn, "/status/503") and stats(admin)["rq_failure"] > 0, 5, "the filter enabled")
    results = [send(conn, "/status/503") for _ in range(100)]
    assert not any(is_rejection(*r) for r in results)
    assert stats(admin)["rq_rejected"] == 0
    runtime_modify(admin, "ac.max_p=100")
    wait_for(lambda: is_rejection(*send(conn, "/status/503")), 5, "a rejection")
    assert stats(admin)["rq_rejected"] >= 1


def test_invalid_configs_are_refused(procs, upstream):
    from conftest import validate_config
    for body, msg in [
        ("sr_threshold: { default_value: { value: 0.5 }, runtime_key: k }\nsuccess_criteria: {}\n",
         "Success rate threshold cannot be less than 1.0%."),
        ("sr_threshold: { runtime_key: k }\nsuccess_criteria: {}\n", "Success rate threshold cannot be less than 1.0%."),
        ("success_criteria: { http_criteria: { http_success_status: [{ start: 99, end: 200 }] } }\n",
         "invalid HTTP range: [99, 200)"),
        ("success_criteria: { grpc_criteria: { grpc_success_status: [0, 17] } }\n", "invalid gRPC code 17"),
        ("sampling_window: 10s\n", "success_criteria"),
        ("success_criteria: {}\naggression: { default_value: 2 }\n", "runtime_key"),
    ]:
        y = bootstrap_yaml(free_port(), free_port(), {"backend": [upstream.port]})
        head, tail = y.split("          http_filters:\n", 1)
        tail = tail.split("  clusters:\n", 1)[1]
        y = head + textwrap.indent(ac_filter(body), "          ") + "  clusters:\n" + tail
        rc, out = validate_config(y)
        assert rc != 0 and msg in out, (body, out)


# ---- gRPC ----

class GrpcServer:
    """python3-grpcio: /t.S/Ok answers, /t.S/Fail aborts with the status
    named in the request (a trailers-only response), /t.S/Late sends a
    message and then fails (grpc-status in trailers)."""

    def __init__(self):
        import concurrent.futures
        self.server = grpc.server(concurrent.futures.ThreadPoolExecutor(max_workers=4))
        ident = lambda b: b  # noqa: E731

        def fail(req, ctx):
            ctx.abort(getattr(grpc.StatusCode, req.decode()), "upstream says no")

        def late(req, ctx):
            yield req
            ctx.abort(getattr(grpc.StatusCode, req.decode()), "upstream says no")

        handlers = {
            "Ok": grpc.unary_unary_rpc_method_handler(lambda req, ctx: req, ident, ident),
            "Fail": grpc.unary_unary_rpc_method_handler(fail, ident, ident),
            "Late": grpc.unary_stream_rpc_method_handler(late, ident, ident),
        }
        self.server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler("t.S", handlers),))
        self.port = self.server.add_insecure_port("127.0.0.1:0")
        self.server.start()

    def stop(self):
        self.server.stop(0)


@pytest.fixture
def grpc_server():
    s = GrpcServer()
    yield s
    s.stop()


def grpc_calls(listen, method, arg, n, stream=False):
    """n calls on one channel (one connection, one worker): a list of
    (code, details)."""
    ident = lambda b: b  # noqa: E731
    out = []
    with grpc.insecure_channel(f"127.0.0.1:{listen}") as ch:
        if stream:
            call = ch.unary_stream(method, request_serializer=ident, response_deserializer=ident)
        else:
            call = ch.unary_unary(method, request_serializer=ident, response_deserializer=ident)
        for _ in range(n):
            try:
                r = call(arg, timeout=10 * SLOW)
                if stream:
                    list(r)
                out.append((grpc.StatusCode.OK, ""))
            except grpc.RpcError as e:
                out.append((e.code(), e.details() or ""))
    return out


def test_grpc_default_criteria(procs, grpc_server):
    """Unavailable is a failure by default (rejections start: grpc-status
    14 without the upstream's message), NotFound a success (none)."""
    body = "success_criteria: {}\nmax_rejection_probability: { default_value: { value: 100 }, runtime_key: k }\n"
    listen, admin, _ = start(procs, grpc_server.port, body, cluster_extra="http2_protocol_options: {}\n")
    res = grpc_calls(listen, "/t.S/Fail", b"NOT_FOUND", 60)
    assert all(r == (grpc.StatusCode.NOT_FOUND, "upstream says no") for r in res)
    assert stats(admin) == {"rq_rejected": 0, "rq_success": 60, "rq_failure": 0}
    res = grpc_calls(listen, "/t.S/Fail", b"UNAVAILABLE", 100)
    rejected = [r for r in res if r == (grpc.StatusCode.UNAVAILABLE, "")]
    assert rejected, res
    assert all(r in ((grpc.StatusCode.UNAVAILABLE, ""), (grpc.StatusCode.UNAVAILABLE, "upstream says no"))
               for r in res)
    s = stats(admin)
    assert s["rq_rejected"] == len(rejected)
    assert s["rq_failure"] == 100 - len(rejected)


def test_grpc_status_in_trailers_and_configured_codes(procs, grpc_server):
    """grpc_criteria [0]: NotFound is a failure; a status that comes in
    the trailers after a message counts as well as a trailers-only one;
    successful calls (status in trailers) are successes."""
    body = """\
        success_criteria: { grpc_criteria: { grpc_success_status: [0] } }
        max_rejection_probability: { default_value: { value: 100 }, runtime_key: k }
        """
    listen, admin, _ = start(procs, grpc_server.port, body, cluster_extra="http2_protocol_options: {}\n")
    assert grpc_calls(listen, "/t.S/Ok", b"x", 20) == [(grpc.StatusCode.OK, "")] * 20
    assert stats(admin) == {"rq_rejected": 0, "rq_success": 20, "rq_failure": 0}
    res = grpc_calls(listen, "/t.S/Late", b"NOT_FOUND", 100, stream=True)
    rejected = [r for r in res if r == (grpc.StatusCode.UNAVAILABLE, "")]
    assert rejected, res
    s = stats(admin)
    assert s["rq_failure"] == 100 - len(rejected)
    assert s["rq_rejected"] == len(rejected)
    assert s["rq_success"] == 20
