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
        assert log_lines(log, 2) == ["200 Unimplemented /other.Svc/M", "404 - /plain"]
    else:
        assert log_lines(log, 1) == ["200 Unavailable /sharp.test.Echo/Say"]
