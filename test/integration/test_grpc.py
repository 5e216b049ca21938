"""gRPC through SHARP with Debian's python3-grpcio as the client: SHARP's
own replies to a gRPC request are trailers-only gRPC responses with Envoy's
HTTP-to-gRPC status mapping and grpc-message, and the access log's
%GRPC_STATUS% renders the status."""
import grpc
import pytest

from conftest import SLOW, bootstrap_yaml, file_access_log, free_port, log_lines, run_sharp_config

LOG = "%RESPONSE_CODE% %GRPC_STATUS% %GRPC_STATUS(SNAKE_STRING)% %GRPC_STATUS(NUMBER)% %RESPONSE_FLAGS%\\n"


def call(port, method="/sharp.test.Echo/Say", timeout=5):
    with grpc.insecure_channel(f"127.0.0.1:{port}") as ch:
        stub = ch.unary_unary(method, request_serializer=lambda b: b, response_deserializer=lambda b: b)
        with pytest.raises(grpc.RpcError) as e:
            stub(b"\x0a\x02hi", timeout=timeout * SLOW)
        return e.value


def start(procs, clusters, routes=None, hcm_extra=""):
    listen, admin = free_port(), free_port()
    al, log = file_access_log(LOG)
    run_sharp_config(procs, bootstrap_yaml(listen, admin, clusters, routes=routes, hcm_extra=al + hcm_extra), admin)
    return listen, log


def test_no_upstream_is_unavailable(procs):
    """A dead upstream: Envoy's 503 becomes grpc-status 14 with the local
    reply's text as grpc-message."""
    listen, log = start(procs, {"app": [free_port()]})
    err = call(listen)
    assert err.code() == grpc.StatusCode.UNAVAILABLE
    assert "upstream connect error" in err.details()
    assert log_lines(log, 1)[0] == "200 Unavailable UNAVAILABLE 14 UF"


def test_no_route_is_unimplemented(procs):
    routes = '- match: { prefix: "/other" }\n  route: { cluster: app }\n'
    listen, log = start(procs, {"app": [free_port()]}, routes=routes)
    err = call(listen)
    assert err.code() == grpc.StatusCode.UNIMPLEMENTED
    assert log_lines(log, 1)[0] == "200 Unimplemented UNIMPLEMENTED 12 NR"


def test_direct_response_status_maps(procs):
    routes = ('- match: { prefix: "/" }\n'
              '  direct_response: { status: 403, body: { inline_string: "go away 100%" } }\n')
    listen, log = start(procs, {"app": [free_port()]}, routes=routes)
    err = call(listen)
    assert err.code() == grpc.StatusCode.PERMISSION_DENIED
    assert err.details() == "go away 100%"  # percent-encoded on the wire, decoded by the client
    assert log_lines(log, 1)[0] == "200 PermissionDenied PERMISSION_DENIED 7 -"


def test_grpc_status_not_logged_for_plain_http(procs):
    import subprocess
    listen, log = start(procs, {"app": [free_port()]})
    subprocess.run(["curl", "-sS", f"http://127.0.0.1:{listen}/"], capture_output=True, timeout=10)
    assert log_lines(log, 1)[0] == "503 - - - UF"


@pytest.mark.parametrize("exclude", [False, True])
def test_grpc_status_access_log_filter(procs, exclude):
    """grpc_status_filter: only UNAVAILABLE calls are logged (or, with
    exclude, all others); a plain HTTP request without a grpc-status counts
    by its mapped status (404 -> UNIMPLEMENTED)."""
    import subprocess
    routes = ('- match: { prefix: "/sharp.test.Echo/" }\n  route: { cluster: app }\n')
    listen, admin = free_port(), free_port()
    al, log = file_access_log("%RESPONSE_CODE% %GRPC_STATUS% %REQ(:PATH)%\\n")
    al += ("  filter: { grpc_status_filter: { statuses: [UNAVAILABLE], exclude: " + ("true" if exclude else "false")
           + " } }\n")
    run_sharp_config(procs, bootstrap_yaml(listen, admin, {"app": [free_port()]}, routes=routes, hcm_extra=al), admin)
    assert call(listen).code() == grpc.StatusCode.UNAVAILABLE
    assert call(listen, method="/other.Svc/M").code() == grpc.StatusCode.UNIMPLEMENTED
    subprocess.run(["curl", "-sS", f"http://127.0.0.1:{listen}/plain"], capture_output=True, timeout=10)
    import time
    time.sleep(0.5)
    if exclude:
        # two connections, possibly two workers: each writes its own line
        assert sorted(log_lines(log, 2)) == ["200 Unimplemented /other.Svc/M", "404 - /plain"]
    else:
        assert log_lines(log, 1) == ["200 Unavailable /sharp.test.Echo/Say"]


class EchoServer:
    """A python3-grpcio server with generic handlers: unary echo, server
    streaming (n copies), client streaming (joined), bidi (echo each), and
    a method that fails with a given status."""

    def __init__(self):
        import concurrent.futures
        self.server = grpc.server(concurrent.futures.ThreadPoolExecutor(max_workers=8))
        ident = lambda b: b  # noqa: E731
        handlers = {
            "Say": grpc.unary_unary_rpc_method_handler(lambda req, ctx: req, ident, ident),
            "Many": grpc.unary_stream_rpc_method_handler(lambda req, ctx: (req for _ in range(5)), ident, ident),
            "Join": grpc.stream_unary_rpc_method_handler(lambda it, ctx: b"".join(it), ident, ident),
            "Chat": grpc.stream_stream_rpc_method_handler(lambda it, ctx: (m.upper() for m in it), ident, ident),
            "Fail": grpc.unary_unary_rpc_method_handler(self._fail, ident, ident),
            "Slow": grpc.unary_unary_rpc_method_handler(self._slow, ident, ident),
        }
        self.server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler("sharp.test.Echo", handlers),))
        self.port = self.server.add_insecure_port("127.0.0.1:0")
        self.server.start()

    @staticmethod
    def _fail(req, ctx):
        ctx.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, "too much: " + req.decode())

    @staticmethod
    def _slow(req, ctx):
        import time
        time.sleep(2)
        return req

    def stop(self):
        self.server.stop(0)


@pytest.fixture
def echo_server():
    s = EchoServer()
    yield s
    s.stop()


def grpc_proxy(procs, echo_server):
    listen, admin = free_port(), free_port()
    al, log = file_access_log("%REQ(:PATH)% %RESPONSE_CODE% %GRPC_STATUS% %PROTOCOL% %UPSTREAM_CLUSTER%\\n")
    y = bootstrap_yaml(listen, admin, {"grpc": [echo_server.port]}, hcm_extra=al,
                       cluster_extra="http2_protocol_options: {}\n")
    run_sharp_config(procs, y, admin)
    return listen, admin, log


def test_grpc_end_to_end_all_call_kinds(procs, echo_server):
    """Unary, server streaming, client streaming and bidi calls through
    SHARP (HTTP/2 both sides) with grpc-status carried in trailers."""
    listen, _, log = grpc_proxy(procs, echo_server)
    ident = lambda b: b  # noqa: E731
    with grpc.insecure_channel(f"127.0.0.1:{listen}") as ch:
        say = ch.unary_unary("/sharp.test.Echo/Say", request_serializer=ident, response_deserializer=ident)
        assert say(b"hello", timeout=10 * SLOW) == b"hello"
        many = ch.unary_stream("/sharp.test.Echo/Many", request_serializer=ident, response_deserializer=ident)
        assert list(many(b"x", timeout=10 * SLOW)) == [b"x"] * 5
        join = ch.stream_unary("/sharp.test.Echo/Join", request_serializer=ident, response_deserializer=ident)
        assert join(iter([b"a", b"b", b"c"]), timeout=10 * SLOW) == b"abc"
        chat = ch.stream_stream("/sharp.test.Echo/Chat", request_serializer=ident, response_deserializer=ident)
        assert list(chat(iter([b"p", b"q"]), timeout=10 * SLOW)) == [b"P", b"Q"]
        big = bytes(range(256)) * 4096  # 1 MiB message, flow control both ways
        assert say(big, timeout=20 * SLOW) == big
    lines = log_lines(log, 5)
    assert lines[0] == "/sharp.test.Echo/Say 200 OK HTTP/2 grpc", lines
    assert all(" 200 OK HTTP/2 grpc" in line for line in lines), lines


def test_grpc_error_status_from_upstream_trailers(procs, echo_server):
    listen, _, log = grpc_proxy(procs, echo_server)
    err = call(listen, method="/sharp.test.Echo/Fail")
    assert err.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert err.details() == "too much: \n\x02hi"
    assert log_lines(log, 1)[0] == "/sharp.test.Echo/Fail 200 ResourceExhausted HTTP/2 grpc"


def test_grpc_client_deadline_cancels_upstream(procs, echo_server):
    """The client's deadline passes while the upstream works: the client
    sees DEADLINE_EXCEEDED and resets its stream, which SHARP logs (DR).
    The route removes grpc-timeout: forwarded (as Envoy forwards it), the
    upstream's own deadline would end the call at the same moment, and
    SHARP would relay that answer rather than see the reset."""
    listen, admin = free_port(), free_port()
    routes = ('- match: { prefix: "/" }\n  route: { cluster: grpc }\n'
              '  request_headers_to_remove: [grpc-timeout]\n')
    run_sharp_config(procs, bootstrap_yaml(listen, admin, {"grpc": [echo_server.port]}, routes=routes,
                                           cluster_extra="http2_protocol_options: {}\n"), admin)
    err = call(listen, method="/sharp.test.Echo/Slow", timeout=0.3)
    assert err.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    import time
    deadline = time.time() + 5
    from conftest import stat
    while stat(admin, "http.ingress_http.downstream_rq_rx_reset") != 1 and time.time() < deadline:
        time.sleep(0.05)
    assert stat(admin, "http.ingress_http.downstream_rq_rx_reset") == 1


def test_hcm_max_stream_duration_is_deadline_exceeded(procs, echo_server):
    """The connection manager's max_stream_duration ends a gRPC call with
    DEADLINE_EXCEEDED (Envoy's local reply sets it), not the 504's
    UNAVAILABLE."""
    listen, admin = free_port(), free_port()
    y = bootstrap_yaml(listen, admin, {"grpc": [echo_server.port]},
                       hcm_extra="common_http_protocol_options: { max_stream_duration: 0.3s }\n",
                       cluster_extra="http2_protocol_options: {}\n")
    run_sharp_config(procs, y, admin)
    err = call(listen, method="/sharp.test.Echo/Slow")
    assert err.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    assert err.details() == "downstream duration timeout"
