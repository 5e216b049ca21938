"""The gRPC HTTP/1 bridges in the data path, with python3-grpcio clients and
servers and http.client.

envoy.filters.http.grpc_http1_bridge: an HTTP/1.1 client speaking gRPC to a
grpcio server gets the unary response whole, grpc-status and grpc-message
moved from the trailers into the headers (503 for a failure), with a
content-length; upgrade_protobuf_to_grpc frames an application/x-protobuf
request and unframes its response; ignore_query_parameters; HTTP/2 gRPC
clients pass untouched; bodies beyond the buffer limit.

envoy.filters.http.grpc_http1_reverse_bridge: a grpcio client calls a plain
HTTP/1 upstream: content-type and accept rewritten, the frame header
withheld and restored (held, or streamed with response_size_header), the
upstream's HTTP status as grpc-status, Envoy's errors for a wrong
content-type, a missing or wrong size header and a truncated frame,
per-route disabling; the Envoy corpus configs."""
import http.client
import http.server
import json
import struct
import threading
from concurrent import futures

import grpc
import pytest

from conftest import (SLOW, H2Client, bootstrap_yaml, file_access_log, free_port, h1_request, log_lines,
                      run_sharp_config, stat, validate_config)

CORPUS = "/work/shared/envoy-corpus"
BRIDGE = "type.googleapis.com/envoy.extensions.filters.http.grpc_http1_bridge.v3.Config"
REVERSE = "type.googleapis.com/envoy.extensions.filters.http.grpc_http1_reverse_bridge.v3.FilterConfig"
REVERSE_ROUTE = "type.googleapis.com/envoy.extensions.filters.http.grpc_http1_reverse_bridge.v3.FilterConfigPerRoute"


def indent(text, n):
    return "".join(" " * n + ln + "\n" for ln in text.splitlines())


def frame(msg):
    return struct.pack(">BI", 0, len(msg)) + msg


def with_filter(y, name, type_url, body=""):
    f = f"- name: {name}\n  typed_config:\n    \"@type\": {type_url}\n" + indent(body, 4)
    return y.replace("          http_filters:\n", "          http_filters:\n" + indent(f, 10))


# ---- a grpcio server ------------------------------------------------------

class GrpcServer:
    """Unary methods on raw bytes: Echo answers "echo:" + request, Fail
    answers a message then INVALID_ARGUMENT "bad thing" in the trailers,
    Abort answers trailers-only PERMISSION_DENIED, Big answers 200 KiB.
    Every method's request bytes and path are recorded."""

    def __init__(self):
        self.seen = []

        def handler(name):
            def h(req, ctx):
                self.seen.append((name, req, dict(ctx.invocation_metadata())))
                if name == "Fail":
                    ctx.set_code(grpc.StatusCode.INVALID_ARGUMENT)
                    ctx.set_details("bad thing")
                    return b"partial"
                if name == "Abort":
                    ctx.abort(grpc.StatusCode.PERMISSION_DENIED, "denied")
                if name == "Big":
                    return b"b" * (200 * 1024)
                return b"echo:" + req
            return grpc.unary_unary_rpc_method_handler(h, request_deserializer=lambda b: b,
                                                       response_serializer=lambda b: b)

        svc = grpc.method_handlers_generic_handler("sharp.test.Bridge", {
            n: handler(n) for n in ("Echo", "Fail", "Abort", "Big")})
        self.server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
        self.server.add_generic_rpc_handlers((svc,))
        self.port = self.server.add_insecure_port("127.0.0.1:0")
        self.server.start()

    def close(self):
        self.server.stop(0)


@pytest.fixture
def grpc_server():
    s = GrpcServer()
    yield s
    s.close()


def start_bridge(procs, port, body="", listener_extra="", admin=None):
    listen, admin = free_port(), admin or free_port()
    y = bootstrap_yaml(listen, admin, {"grpc": [port]}, cluster_extra="http2_protocol_options: {}\n",
                       listener_extra=listener_extra)
    run_sharp_config(procs, with_filter(y, "envoy.filters.http.grpc_http1_bridge", BRIDGE, body), admin)
    return listen


def h1_grpc(listen, method, body, ct="application/grpc", path=None):
    return h1_request(listen, path or f"/sharp.test.Bridge/{method}", method="POST",
                      headers={"content-type": ct, "te": "trailers"}, body=body)


def test_bridge_unary_ok(procs, grpc_server):
    listen = start_bridge(procs, grpc_server.port)
    st, h, body = h1_grpc(listen, "Echo", frame(b"hi"))
    assert st == 200
    assert h["grpc-status"] == "0"
    assert body == frame(b"echo:hi")
    assert h["content-length"] == str(len(body))
    assert "transfer-encoding" not in h


def test_bridge_failure_in_trailers_becomes_503(procs, grpc_server):
    listen = start_bridge(procs, grpc_server.port)
    st, h, body = h1_grpc(listen, "Fail", frame(b"x"))
    assert st == 503
    assert h["grpc-status"] == "3"
    assert h["grpc-message"] == "bad thing"
    assert h["content-length"] == str(len(body))


def test_bridge_trailers_only_passes(procs, grpc_server):
    """A response that ends with its headers is not held: its grpc-status is
    already in the headers, and Envoy leaves its status alone."""
    listen = start_bridge(procs, grpc_server.port)
    st, h, body = h1_grpc(listen, "Abort", frame(b"x"))
    assert st == 200
    assert h["grpc-status"] == "7"
    assert h["grpc-message"] == "denied"
    assert body == b""


def test_bridge_upgrade_protobuf(procs, grpc_server):
    """application/x-protobuf becomes a framed gRPC request; the response
    body loses its frame header."""
    listen = start_bridge(procs, grpc_server.port, "upgrade_protobuf_to_grpc: true\n")
    st, h, body = h1_grpc(listen, "Echo", b"raw-proto", ct="application/x-protobuf")
    assert st == 200
    assert body == b"echo:raw-proto"
    assert h["grpc-status"] == "0"
    assert h["content-length"] == str(len(body))
    assert grpc_server.seen[-1][1] == b"raw-proto"
    # without the option the request is not gRPC: it passes as it is
    listen2 = start_bridge(procs, grpc_server.port)
    st, h, body = h1_grpc(listen2, "Echo", b"raw-proto", ct="application/x-protobuf")
    assert not (st == 200 and body == b"echo:raw-proto")


def test_bridge_ignore_query_parameters(procs, grpc_server):
    listen = start_bridge(procs, grpc_server.port, "ignore_query_parameters: true\n")
    st, h, body = h1_grpc(listen, None, frame(b"q"), path="/sharp.test.Bridge/Echo?a=1&b=2")
    assert (st, h["grpc-status"], body) == (200, "0", frame(b"echo:q"))
    # without it the query reaches the server, which knows no such method
    listen2 = start_bridge(procs, grpc_server.port)
    st, h, body = h1_grpc(listen2, None, frame(b"q"), path="/sharp.test.Bridge/Echo?a=1")
    assert h.get("grpc-status") != "0"


def test_bridge_leaves_http2_grpc_alone(procs, grpc_server):
    listen = start_bridge(procs, grpc_server.port)
    with grpc.insecure_channel(f"127.0.0.1:{listen}") as ch:
        stub = ch.unary_unary("/sharp.test.Bridge/Echo", request_serializer=lambda b: b,
                              response_deserializer=lambda b: b)
        assert stub(b"h2", timeout=5 * SLOW) == b"echo:h2"
        fail = ch.unary_unary("/sharp.test.Bridge/Fail", request_serializer=lambda b: b,
                              response_deserializer=lambda b: b)
        with pytest.raises(grpc.RpcError) as e:
            fail(b"x", timeout=5 * SLOW)
        assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_bridge_bounded_by_buffer_limit(procs, grpc_server):
    """A response held past the buffer limit becomes a 500 local reply (a
    gRPC one, counted in rs_too_large as Envoy's filter manager counts it);
    an upgraded request body past it a 413; neither grows without bound."""
    admin = free_port()
    listen = start_bridge(procs, grpc_server.port, "upgrade_protobuf_to_grpc: true\n",
                          listener_extra="per_connection_buffer_limit_bytes: 32768\n", admin=admin)
    st, h, body = h1_grpc(listen, "Big", frame(b"x"))
    # Envoy's 500 local reply, to a gRPC request: trailers-only, Unknown
    assert (st, h["grpc-status"], h["grpc-message"]) == (200, "2", "Internal Server Error")
    assert stat(admin, "http.ingress_http.rs_too_large") == 1
    # the upgraded request was no gRPC request when the filters first saw it
    st, h, body = h1_grpc(listen, "Echo", b"p" * (256 * 1024), ct="application/x-protobuf")
    assert st == 413
    assert stat(admin, "http.ingress_http.downstream_rq_too_large") == 1
    st, h, body = h1_grpc(listen, "Echo", frame(b"still fine"))
    assert (st, body) == (200, frame(b"echo:still fine"))


# ---- a plain HTTP/1 upstream ----------------------------------------------

class PlainUpstream:
    """HTTP/1.1 upstream for the reverse bridge. By path: .../Echo answers
    200 "reply:" + body as application/x-protobuf, .../Raw the body as it
    came; .../NotFound 404 with
    that content-type; .../Html text/html; .../Sized names the body's
    length in x-size (.../Missized names a wrong one, .../Unsized none),
    sending it in chunks; .../Big 200 KiB. Requests are recorded as
    (path, headers, body)."""

    CT = "application/x-protobuf"

    def __init__(self):
        seen = self.seen = []
        ct = self.CT

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self):
                n = int(self.headers.get("content-length") or 0)
                if self.headers.get("transfer-encoding") == "chunked":
                    data = b""
                    while True:
                        size = int(self.rfile.readline().strip(), 16)
                        if size == 0:
                            self.rfile.readline()
                            break
                        data += self.rfile.read(size)
                        self.rfile.readline()
                else:
                    data = self.rfile.read(n) if n else b""
                seen.append((self.path, {k.lower(): v for k, v in self.headers.items()}, data))
                name = self.path.rsplit("/", 1)[-1]
                reply = data if name == "Raw" else b"reply:" + data
                status, rct, extra = 200, ct, {}
                if name == "NotFound":
                    status = 404
                elif name == "Html":
                    rct = "text/html"
                elif name == "Big":
                    reply = b"B" * (200 * 1024)
                elif name in ("Sized", "Missized", "Unsized"):
                    if name != "Unsized":
                        extra["x-size"] = str(len(reply) + (7 if name == "Missized" else 0))
                    self.send_response(status)
                    self.send_header("content-type", rct)
                    for k, v in extra.items():
                        self.send_header(k, v)
                    self.send_header("transfer-encoding", "chunked")
                    self.end_headers()
                    for i in range(0, len(reply), 4):
                        piece = reply[i:i + 4]
                        self.wfile.write(b"%x\r\n%s\r\n" % (len(piece), piece))
                    self.wfile.write(b"0\r\n\r\n")
                    return
                self.send_response(status)
                self.send_header("content-type", rct)
                self.send_header("content-length", str(len(reply)))
                self.end_headers()
                self.wfile.write(reply)

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def plain_upstream():
    u = PlainUpstream()
    yield u
    u.close()


def start_reverse(procs, port, body, listener_extra="", hcm_extra="", admin=None):
    listen, admin = free_port(), admin or free_port()
    routes = ("- match: { prefix: \"/sharp.test.Off/\" }\n  route: { cluster: plain }\n"
              "  typed_per_filter_config:\n    envoy.filters.http.grpc_http1_reverse_bridge:\n"
              f"      \"@type\": {REVERSE_ROUTE}\n      disabled: true\n"
              "- match: { prefix: \"/\" }\n  route: { cluster: plain }\n")
    y = bootstrap_yaml(listen, admin, {"plain": [port]}, routes=routes, listener_extra=listener_extra,
                       hcm_extra=hcm_extra)
    run_sharp_config(procs, with_filter(y, "envoy.filters.http.grpc_http1_reverse_bridge", REVERSE, body), admin)
    return listen


def grpc_call(listen, method, req=b"hello", service="sharp.test.Plain"):
    with grpc.insecure_channel(f"127.0.0.1:{listen}") as ch:
        stub = ch.unary_unary(f"/{service}/{method}", request_serializer=lambda b: b,
                              response_deserializer=lambda b: b)
        return stub.with_call(req, timeout=5 * SLOW)


def grpc_error(listen, method, **kw):
    with pytest.raises(grpc.RpcError) as e:
        grpc_call(listen, method, **kw)
    return e.value


WITHHOLD = "content_type: application/x-protobuf\nwithhold_grpc_frames: true\n"


def test_reverse_bridge_withheld_frames(procs, plain_upstream):
    listen = start_reverse(procs, plain_upstream.port, WITHHOLD)
    resp, call = grpc_call(listen, "Echo")
    assert resp == b"reply:hello"
    assert call.code() == grpc.StatusCode.OK
    path, h, body = plain_upstream.seen[-1]
    assert path == "/sharp.test.Plain/Echo"
    assert body == b"hello"  # no frame header
    assert h["content-type"] == "application/x-protobuf"
    assert h["accept"] == "application/x-protobuf"


def test_reverse_bridge_frames_kept(procs, plain_upstream):
    """Without withhold_grpc_frames the upstream sees and sends frames."""
    listen = start_reverse(procs, plain_upstream.port, "content_type: application/x-protobuf\n")
    resp, call = grpc_call(listen, "Raw")
    assert resp == b"hello"
    assert plain_upstream.seen[-1][2] == frame(b"hello")


def test_reverse_bridge_http_status_to_grpc(procs, plain_upstream):
    listen = start_reverse(procs, plain_upstream.port, WITHHOLD)
    err = grpc_error(listen, "NotFound")
    assert err.code() == grpc.StatusCode.UNIMPLEMENTED


def test_reverse_bridge_wrong_content_type(procs, plain_upstream):
    """Envoy's gRPC local reply; the access log sees it, not the upstream's
    response it replaced."""
    al, log = file_access_log("%RESPONSE_CODE% %RESP(content-type)% %RESP(grpc-status)% %RESPONSE_CODE_DETAILS%\\n")
    listen = start_reverse(procs, plain_upstream.port, WITHHOLD, hcm_extra=al)
    err = grpc_error(listen, "Html")
    assert err.code() == grpc.StatusCode.UNKNOWN
    assert err.details() == ("envoy reverse bridge: upstream responded with unsupported content-type "
                             "text/html, status code 200")
    assert log_lines(log, 1) == ["200 application/grpc 2 grpc_bridge_content_type_wrong"]


def test_reverse_bridge_response_size_header(procs, plain_upstream):
    listen = start_reverse(procs, plain_upstream.port, WITHHOLD + "response_size_header: X-Size\n")
    resp, call = grpc_call(listen, "Sized", req=b"streamed body")
    assert resp == b"reply:streamed body"
    err = grpc_error(listen, "Unsized")
    assert err.code() == grpc.StatusCode.INTERNAL
    assert err.details() == "envoy reverse bridge: upstream did not set content length"
    err = grpc_error(listen, "Missized")
    assert err.code() != grpc.StatusCode.OK
    # the proxy is still fine
    assert grpc_call(listen, "Sized", req=b"again")[0] == b"reply:again"


def test_reverse_bridge_per_route_disabled(procs, plain_upstream):
    listen = start_reverse(procs, plain_upstream.port, WITHHOLD)
    with pytest.raises(grpc.RpcError):
        grpc_call(listen, "Echo", service="sharp.test.Off")
    path, h, body = plain_upstream.seen[-1]
    assert path == "/sharp.test.Off/Echo"
    assert h["content-type"] == "application/grpc"
    assert body == frame(b"hello")


def test_reverse_bridge_truncated_and_hostile_frames(procs, plain_upstream):
    """First data shorter than a frame header: Envoy's grpc-status 2
    "invalid request body", nothing reaches the upstream. A frame header
    announcing 4 GiB over a short body is stripped like any other (the
    upstream gets the rest, and the call completes). A content-length too
    short for a frame header is refused the same way."""
    listen = start_reverse(procs, plain_upstream.port, WITHHOLD)
    c = H2Client(listen)
    try:
        n = len(plain_upstream.seen)
        sid = c.send("/sharp.test.Plain/Echo", method="POST",
                     headers={"content-type": "application/grpc", "te": "trailers"}, body=b"\x00\x00\x01",
                     end=True)
        st, h, body = c.response(sid, timeout=5 * SLOW)
        assert st == 200
        assert h["grpc-status"] == "2"
        assert h["grpc-message"] == "invalid request body"
        sid = c.send("/sharp.test.Plain/Echo", method="POST",
                     headers={"content-type": "application/grpc", "te": "trailers"},
                     body=b"\x00\xff\xff\xff\xffshort")
        st, h, body = c.response(sid, timeout=5 * SLOW)
        assert st == 200
        assert c.streams[sid]["trailers"]["grpc-status"] == "0"
        assert body == frame(b"reply:short")
        assert plain_upstream.seen[-1][2] == b"short"
        sid = c.send("/sharp.test.Plain/Echo", method="POST",
                     headers={"content-type": "application/grpc", "content-length": "3"}, body=b"\x00\x00\x01")
        st, h, body = c.response(sid, timeout=5 * SLOW)
        assert h["grpc-status"] == "2"
        assert len(plain_upstream.seen) == n + 1  # only the well-formed one
    finally:
        c.close()


def test_reverse_bridge_bounded_by_buffer_limit(procs, plain_upstream):
    admin = free_port()
    listen = start_reverse(procs, plain_upstream.port, WITHHOLD,
                           listener_extra="per_connection_buffer_limit_bytes: 32768\n", admin=admin)
    err = grpc_error(listen, "Big")
    assert err.code() != grpc.StatusCode.OK
    assert stat(admin, "http.ingress_http.rs_too_large") == 1
    assert grpc_call(listen, "Echo")[0] == b"reply:hello"


def test_reverse_bridge_plain_requests_pass(procs, plain_upstream):
    """A request that is not gRPC passes untouched."""
    listen = start_reverse(procs, plain_upstream.port, WITHHOLD)
    st, h, body = h1_request(listen, "/x/Echo", method="POST", headers={"content-type": "application/x-protobuf"},
                             body=b"plain")
    assert (st, body) == (200, b"reply:plain")
    assert "grpc-status" not in h


@pytest.mark.parametrize("body,msg", [
    ("withhold_grpc_frames: true\n", "content_type"),
    ("content_type: a/b\nresponse_size_header: \"bad\\r\\nname\"\n", "response_size_header"),
])
def test_reverse_bridge_config_errors(body, msg):
    y = with_filter(bootstrap_yaml(free_port(), free_port(), {"plain": [free_port()]}),
                    "envoy.filters.http.grpc_http1_reverse_bridge", REVERSE, body)
    rc, out = validate_config(y)
    assert rc != 0 and msg in out, out


@pytest.mark.parametrize("name", ["examples__grpc-bridge__client__envoy-proxy.yaml",
                                  "envoy__docs__root__configuration__http__http_filters___include__"
                                  "grpc-reverse-bridge-filter.yaml"])
def test_corpus_configs_load(name):
    rc, out = validate_config(open(f"{CORPUS}/{name}").read())
    assert rc == 0, out


def test_bridge_hostile_http1_requests(procs, grpc_server):
    """An upgraded body ending with chunked trailers, a gRPC request with a
    truncated frame and one whose frame header announces 4 GiB: each gets
    an answer, nothing hangs, and the proxy serves the next request."""
    from conftest import raw_request
    listen = start_bridge(procs, grpc_server.port, "upgrade_protobuf_to_grpc: true\n")
    path = b"/sharp.test.Bridge/Echo"
    st, h, body, _ = raw_request(listen, b"POST " + path + b" HTTP/1.1\r\nhost: x\r\n"
                                 b"content-type: application/x-protobuf\r\nte: trailers\r\ntransfer-encoding: chunked\r\n\r\n"
                                 b"5\r\nhello\r\n0\r\nx-trailer: t\r\n\r\n", timeout=5 * SLOW)
    # the held body goes framed at the end of the body, the trailers after it
    assert (st, h["grpc-status"], body) == (200, "0", b"echo:hello")
    for bad in (b"\x00\x00\x00", b"\x00\xff\xff\xff\xffabc"):
        st, h, body = h1_grpc(listen, "Echo", bad)
        assert h.get("grpc-status") not in (None, "0"), (st, h, body)
    st, h, body = h1_grpc(listen, "Echo", frame(b"after"))
    assert (st, body) == (200, frame(b"echo:after"))
