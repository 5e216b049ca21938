"""envoy.filters.http.ext_authz with a grpc_service in the data path: a
python3-grpcio server implementing envoy.service.auth.v3.Authorization/Check
(generic handlers; the messages come from SHARP's own proto/ files, compiled
to a descriptor set with protoc-c at test time) allows with header
mutations, denies with its own status, headers and body, fails (gRPC
UNAVAILABLE, a timeout) into status_on_error or failure_mode_allow; the
CheckRequest's attribute context (method, path, host, headers, protocol,
peers, stream id, per-route context extensions, the held body) over HTTP/1
and HTTP/2 clients; and the Envoy corpus gRPC bootstraps."""
import os
import subprocess
import tempfile
import time
from concurrent import futures

import pytest

from conftest import (SLOW, Upstream, bootstrap_yaml, file_access_log, free_port, log_lines, protos,
                      run_sharp_config, stat, validate_config)

grpc = pytest.importorskip("grpc")

TYPE = "type.googleapis.com/envoy.extensions.filters.http.ext_authz.v3.ExtAuthz"
ROUTE_TYPE = "type.googleapis.com/envoy.extensions.filters.http.ext_authz.v3.ExtAuthzPerRoute"
CORPUS = "/work/shared/envoy-corpus"
PROTO = os.path.join(os.path.dirname(__file__), "..", "..", "proto")


def _messages():
    from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
    out = os.path.join(tempfile.mkdtemp(prefix="sharp-ea-"), "auth.pb")
    subprocess.run(["protoc-c", f"--proto_path={PROTO}", f"--descriptor_set_out={out}", "--include_imports",
                    "envoy/service/auth/v3/external_auth.proto"], check=True, timeout=60)
    fds = descriptor_pb2.FileDescriptorSet.FromString(open(out, "rb").read())
    pool = descriptor_pool.DescriptorPool()
    for f in fds.file:
        pool.Add(f)
    factory = message_factory.MessageFactory(pool)
    return (factory.GetPrototype(pool.FindMessageTypeByName("envoy.service.auth.v3.CheckRequest")),
            factory.GetPrototype(pool.FindMessageTypeByName("envoy.service.auth.v3.CheckResponse")))


CheckRequest, CheckResponse = _messages()


class AuthzGrpc:
    """The Authorization service: the request's path decides. Every
    CheckRequest is recorded."""

    def __init__(self):
        self.requests = []
        self.server = grpc.server(futures.ThreadPoolExecutor(max_workers=8))
        handler = grpc.unary_unary_rpc_method_handler(
            self._check, CheckRequest.FromString, lambda m: m if isinstance(m, bytes) else m.SerializeToString())
        self.server.add_generic_rpc_handlers(
            (grpc.method_handlers_generic_handler("envoy.service.auth.v3.Authorization", {"Check": handler}),))
        self.port = self.server.add_insecure_port("127.0.0.1:0")
        self.server.start()

    def _check(self, req, ctx):
        self.requests.append(req)
        path = req.attributes.request.http.path
        r = CheckResponse()
        if path.startswith("/slow"):
            time.sleep(1.5)
        if path.startswith("/garbage"):
            return b"\xff\xff\xff not a CheckResponse"
        if path.startswith("/fail"):
            ctx.abort(grpc.StatusCode.UNAVAILABLE, "authz down")
        if path.startswith("/deny"):
            r.status.code = 7  # PERMISSION_DENIED
            r.denied_response.status.code = 401
            h = r.denied_response.headers.add()
            h.header.key, h.header.value = "x-deny", "grpc"
            r.denied_response.body = "grpc says no"
        elif path.startswith("/meta-deny"):
            r.status.code = 7
            r.dynamic_metadata["why"] = "no"
        elif path.startswith("/plain-deny"):
            r.status.code = 16  # UNAUTHENTICATED, no denied_response: 403
        else:
            r.status.code = 0
            h = r.ok_response.headers.add()
            h.header.key, h.header.value = "x-current-user", "bob"
            h = r.ok_response.headers.add()
            h.header.key, h.header.value = "x-append-me", "more"
            h.append.value = True
            r.ok_response.headers_to_remove.append("x-remove-me")
            h = r.ok_response.response_headers_to_add.add()
            h.header.key, h.header.value = "x-resp", "r1"
            if path.startswith("/meta-old"):
                # OkHttpResponse.dynamic_metadata (deprecated) overrides the CheckResponse's
                r.dynamic_metadata["outer"] = "x"
                r.ok_response.dynamic_metadata["user"] = "old"
            elif path.startswith("/meta"):
                r.dynamic_metadata["user"] = "bob"
                r.dynamic_metadata["level"] = 3
                r.dynamic_metadata["nested"] = {"a": [1, True]}
        return r

    def close(self):
        self.server.stop(0)


@pytest.fixture
def authz():
    a = AuthzGrpc()
    yield a
    a.close()


@pytest.fixture
def h2_upstream(procs):
    u = Upstream(extra=("--h2",))
    procs.append(u)
    return u


def ext_authz(timeout="1s", extra=""):
    return (f'"@type": {TYPE}\ntransport_api_version: V3\n'
            f"grpc_service:\n  envoy_grpc: {{ cluster_name: authz }}\n  timeout: {timeout}\n"
            f"  initial_metadata: [{{ key: x-from-config, value: meta }}]\n" + extra)


def with_filter(yaml_text, cfg):
    f = "- name: envoy.filters.http.ext_authz\n  typed_config:\n" + "".join(
        "    " + ln + "\n" for ln in cfg.splitlines())
    return yaml_text.replace("          http_filters:\n",
                             "          http_filters:\n" + "".join("          " + ln + "\n" for ln in f.splitlines()))


ROUTES = '- match: { prefix: "/" }\n  route: { cluster: backend }\n'


def start(procs, upstream, authz_port, cfg, routes=ROUTES, hcm_extra="", vhost_extra=""):
    listen, admin = free_port(), free_port()
    y = bootstrap_yaml(listen, admin, {"backend": [upstream.port], "authz": [authz_port]}, routes=routes,
                       hcm_extra=hcm_extra, vhost_extra=vhost_extra, cluster_extra="http2_protocol_options: {}\n")
    run_sharp_config(procs, with_filter(y, cfg), admin)
    return listen, admin


def echoed(body):
    import json
    out = {}
    for k, v in json.loads(body)["headers"]:
        out.setdefault(k.lower(), []).append(v)
    return out


@protos("h1", "h2-down")
def test_allow_with_mutations(procs, h2_upstream, authz, proto):
    """Status OK: ok_response's headers are set (append false) or appended
    to an existing value (append true), headers_to_remove removed,
    response_headers_to_add reach the client. The CheckRequest describes the
    request, with the context extensions of the virtual host and route
    merged (the route's key wins)."""
    vhost = (f"typed_per_filter_config:\n  envoy.filters.http.ext_authz:\n    \"@type\": {ROUTE_TYPE}\n"
             "    check_settings: { context_extensions: { level: vhost, vh_only: v } }\n")
    routes = (f'- match: {{ prefix: "/" }}\n  route: {{ cluster: backend }}\n'
              f"  typed_per_filter_config:\n    envoy.filters.http.ext_authz:\n      \"@type\": {ROUTE_TYPE}\n"
              "      check_settings: { context_extensions: { level: route } }\n")
    port, admin = start(procs, h2_upstream, authz.port, ext_authz(), routes=routes, vhost_extra=vhost)
    st, h, b = proto.request(port, "/echo?a=b", headers={"x-custom": "c1", "x-current-user": "mallory",
                                                          "x-append-me": "client", "x-remove-me": "r"})
    assert st == 200, b
    assert h.get("x-resp") == "r1"
    seen = echoed(b)
    assert seen["x-current-user"] == ["bob"]
    assert seen["x-append-me"] == ["client,more"]
    assert "x-remove-me" not in seen
    assert len(authz.requests) == 1
    a = authz.requests[0].attributes
    http = a.request.http
    assert http.method == "GET"
    assert http.path == "/echo?a=b"
    assert http.host == f"127.0.0.1:{port}"
    assert http.headers["x-custom"] == "c1"
    assert http.headers[":method"] == "GET"
    assert http.protocol == ("HTTP/2" if proto.down == "h2" else "HTTP/1.1")
    assert http.id != ""
    assert a.source.address.socket_address.address == "127.0.0.1"
    assert a.destination.address.socket_address.port_value == port
    assert a.request.time.seconds > 0
    assert dict(a.context_extensions) == {"level": "route", "vh_only": "v"}
    assert stat(admin, "http.ingress_http.ext_authz.ok") == 1
    assert stat(admin, "cluster.authz.upstream_rq_200") == 1


@protos("h1", "h2-down")
def test_deny(procs, h2_upstream, authz, proto):
    """A non-OK status denies with denied_response's status, headers and
    body (UAEX); without a denied_response the status is 403."""
    al, path = file_access_log("%RESPONSE_CODE% %RESPONSE_FLAGS% %RESPONSE_CODE_DETAILS%\\n")
    port, admin = start(procs, h2_upstream, authz.port, ext_authz(), hcm_extra=al)
    st, h, b = proto.request(port, "/deny")
    assert st == 401 and b == b"grpc says no"
    assert h.get("x-deny") == "grpc"
    st, _, b = proto.request(port, "/plain-deny")
    assert st == 403 and b == b""
    assert sorted(log_lines(path, 2)) == ["401 UAEX ext_authz_denied", "403 UAEX ext_authz_denied"]
    assert stat(admin, "http.ingress_http.ext_authz.denied") == 2


def test_call_failure_and_timeout(procs, h2_upstream, authz):
    """A failed call (gRPC UNAVAILABLE) and a timeout are errors:
    status_on_error, or failure_mode_allow lets the request through."""
    port, admin = start(procs, h2_upstream, authz.port, ext_authz("0.3s", "status_on_error: { code: 503 }\n"))
    assert _h1(port, "/fail")[0] == 503
    t0 = time.time()
    assert _h1(port, "/slow")[0] == 503
    assert time.time() - t0 < 1.4 * SLOW
    assert stat(admin, "http.ingress_http.ext_authz.error") == 2
    port2, admin2 = start(procs, h2_upstream, authz.port,
                          ext_authz("0.3s", "failure_mode_allow: true\nfailure_mode_allow_header_add: true\n"))
    st, _, b = _h1(port2, "/fail/echo")
    assert st in (200, 404)  # the test upstream's answer for that path: the request went through
    assert stat(admin2, "http.ingress_http.ext_authz.failure_mode_allowed") == 1


def test_unreadable_check_response(procs, h2_upstream, authz):
    """A CheckResponse that does not parse is an error, not a decision."""
    port, admin = start(procs, h2_upstream, authz.port, ext_authz())
    assert _h1(port, "/garbage")[0] == 403
    assert stat(admin, "http.ingress_http.ext_authz.error") == 1
    assert _h1(port, "/echo")[0] == 200


def test_allowed_and_disallowed_headers(procs, h2_upstream, authz):
    """allowed_headers: only those go into the CheckRequest (no defaults for
    a gRPC server); disallowed_headers are left out."""
    cfg = ext_authz(extra="allowed_headers: { patterns: [{ prefix: x- }] }\n"
                          "disallowed_headers: { patterns: [{ exact: x-secret }] }\n")
    port, _ = start(procs, h2_upstream, authz.port, cfg)
    assert _h1(port, "/echo", headers={"x-custom": "c", "x-secret": "s", "cookie": "k"})[0] == 200
    hdrs = dict(authz.requests[0].attributes.request.http.headers)
    assert hdrs.get("x-custom") == "c"
    for name in ("x-secret", "cookie", ":method", "host", ":authority"):
        assert name not in hdrs, name
    # the request's own fields do not depend on the header lists
    assert authz.requests[0].attributes.request.http.method == "GET"
    assert authz.requests[0].attributes.request.http.path == "/echo"


def test_dead_cluster(procs, h2_upstream):
    port, admin = start(procs, h2_upstream, free_port(), ext_authz())
    assert _h1(port, "/echo")[0] == 403
    assert stat(admin, "http.ingress_http.ext_authz.error") == 1


@pytest.mark.parametrize("pack", [False, True])
def test_with_request_body(procs, h2_upstream, authz, pack):
    """with_request_body: the CheckRequest carries the body (body, or
    raw_body with pack_as_bytes) and x-envoy-auth-partial-body; the upstream
    gets the whole request."""
    extra = "with_request_body: { max_request_bytes: 4, allow_partial_message: true%s }\n" % (
        ", pack_as_bytes: true" if pack else "")
    port, _ = start(procs, h2_upstream, authz.port, ext_authz(extra=extra))
    st, _, b = _h1(port, "/echo", method="POST", body=b"abcdefgh")
    assert st == 200, b
    http = authz.requests[0].attributes.request.http
    if pack:
        assert http.raw_body == b"abcd" and http.body == ""
    else:
        assert http.body == "abcd"
    assert http.headers["x-envoy-auth-partial-body"] == "true"


def test_dynamic_metadata_ingestion(procs, h2_upstream, authz):
    """The CheckResponse's dynamic_metadata lands in the stream's namespace
    envoy.filters.http.ext_authz (the access log's %DYNAMIC_METADATA%), with
    ext_authz_duration on an OK; ok_response's deprecated dynamic_metadata
    replaces it; a denial's metadata is kept too. With
    enable_dynamic_metadata_ingestion false it is only counted."""
    ns = "envoy.filters.http.ext_authz"
    al, path = file_access_log(f"%REQ(:PATH)% %DYNAMIC_METADATA({ns}:user)% %DYNAMIC_METADATA({ns}:level)% "
                               f"%DYNAMIC_METADATA({ns}:nested)% %DYNAMIC_METADATA({ns}:why)% "
                               f"%DYNAMIC_METADATA({ns}:outer)% %DYNAMIC_METADATA({ns}:ext_authz_duration)%\\n")
    port, admin = start(procs, h2_upstream, authz.port, ext_authz(), hcm_extra=al)
    assert _h1(port, "/meta/echo")[0] == 200
    assert _h1(port, "/meta-old/echo")[0] == 200
    assert _h1(port, "/meta-deny")[0] == 403
    assert _h1(port, "/echo")[0] == 200
    lines = {ln.split(" ", 1)[0]: ln.split(" ")[1:] for ln in log_lines(path, 4)}
    assert lines["/meta/echo"][:5] == ["bob", "3", '{"a":[1,true]}', "-", "-"], lines
    assert lines["/meta-old/echo"][:5] == ["old", "-", "-", "-", "-"], lines
    assert lines["/meta-deny"] == ["-", "-", "-", "no", "-", "-"], lines
    assert lines["/echo"] == ["-"] * 6, lines
    for p in ("/meta/echo", "/meta-old/echo"):
        assert lines[p][5].isdigit() and int(lines[p][5]) < 5000 * SLOW, lines
    assert stat(admin, "http.ingress_http.ext_authz.ignored_dynamic_metadata") == 0
    al2, path2 = file_access_log(f"%DYNAMIC_METADATA({ns})%\\n")
    port2, admin2 = start(procs, h2_upstream, authz.port,
                          ext_authz(extra="enable_dynamic_metadata_ingestion: false\n"), hcm_extra=al2)
    assert _h1(port2, "/meta/echo")[0] == 200
    assert log_lines(path2, 1) == ["-"]
    assert stat(admin2, "http.ingress_http.ext_authz.ignored_dynamic_metadata") == 1


def _h1(port, path, **kw):
    from conftest import h1_request
    return h1_request(port, path, **kw)


@pytest.mark.parametrize("extra,msg", [
    ("include_peer_certificate: true\n", "include_peer_certificate"),
    ("metadata_context_namespaces: [a]\n", "metadata_context_namespaces"),
    ("clear_route_cache: true\n", "clear_route_cache"),
])
def test_refused_with_grpc(extra, msg):
    y = bootstrap_yaml(free_port(), free_port(), {"backend": [1], "authz": [2]})
    rc, out = validate_config(with_filter(y, ext_authz(extra=extra)))
    assert rc != 0 and msg in out, out


@pytest.mark.parametrize("name", [
    "examples__ext_authz__config__grpc-service__v3.yaml",
    "examples__ext_authz__config__opa-service__v3.yaml",
    "envoy__test__extensions__filters__http__ext_authz__ext_authz.yaml",
])
def test_corpus_grpc_validates(name):
    path = os.path.join(CORPUS, name)
    if not os.path.exists(path):
        pytest.skip("no Envoy corpus")
    rc, out = validate_config(open(path).read())
    assert rc == 0, out
