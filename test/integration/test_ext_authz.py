"""envoy.filters.http.ext_authz with an http_service authorization server in
the data path: a Python HTTP authorization server on loopback that allows
(its allowed headers reach the project's test upstream, which echoes them),
denies (its status, body and client headers reach the client, response flag
UAEX), answers slowly (timeout: status_on_error, or failure_mode_allow with
its header), answers 5xx, or is not there at all; the authorization
request's head (method, prefixed path, allowed headers, headers_to_add,
content-length) and body (with_request_body, 413 beyond
max_request_bytes); the per-route disabled config; Envoy's stats; refused
fields; and the Envoy corpus bootstraps."""
import http.server
import json
import os
import threading
import time

import pytest

from conftest import (PROTOS, SLOW, as_aggregate, bootstrap_yaml, file_access_log, free_port, log_lines, protos,
                      run_sharp_config, stat, validate_config, wait_for)

TYPE = "type.googleapis.com/envoy.extensions.filters.http.ext_authz.v3.ExtAuthz"
ROUTE_TYPE = "type.googleapis.com/envoy.extensions.filters.http.ext_authz.v3.ExtAuthzPerRoute"
CORPUS = "/work/shared/envoy-corpus"
PROTOS_H1 = PROTOS["h1"]


class AuthzServer:
    """An HTTP authorization server: the path of the check request (after
    the configured prefix) decides the answer. It records every check
    request as {"method", "path", "headers" (lower-case name -> list of
    values), "body"}."""

    def __init__(self, prefix="/authz"):
        self.requests = []
        self.prefix = prefix
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _answer(self):
                n = int(self.headers.get("content-length") or 0)
                body = self.rfile.read(n) if n else b""
                hdrs = {}
                for k, v in self.headers.items():
                    hdrs.setdefault(k.lower(), []).append(v)
                outer.requests.append({"method": self.command, "path": self.path, "headers": hdrs, "body": body})
                path = self.path[len(outer.prefix):] if self.path.startswith(outer.prefix) else self.path
                path = self.headers.get("x-allowed-mode") or path
                if path.startswith("/slow"):
                    time.sleep(1.5)
                if path.startswith("/deny"):
                    out = b"denied by the test server"
                    self.send_response(403)
                    self.send_header("x-deny-reason", "not-today")
                    self.send_header("content-type", "text/x-denied")
                    self.send_header("set-cookie", "a=1")
                    self.send_header("set-cookie", "b=2")
                elif path.startswith("/unauthorized"):
                    out = b"who are you"
                    self.send_response(401)
                    self.send_header("www-authenticate", "Basic realm=test")
                    self.send_header("x-deny-reason", "hidden-when-allow-listed")
                elif path.startswith("/huge"):
                    out = b"x" * (2 << 20)
                    self.send_response(403)
                elif path.startswith("/error"):
                    out = b"broken"
                    self.send_response(503)
                else:
                    out = b""
                    self.send_response(200)
                    self.send_header("x-current-user", "alice")
                    self.send_header("x-append-me", "from-authz")
                    self.send_header("x-on-success", "yes")
                    self.send_header("x-not-allowed", "dropped")
                    self.send_header("x-envoy-auth-headers-to-remove", "x-remove-me, x-also-removed")
                self.send_header("content-length", str(len(out)))
                self.end_headers()
                self.wfile.write(out)

            do_GET = do_POST = do_PUT = do_DELETE = _answer

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def authz():
    a = AuthzServer()
    yield a
    a.close()


HTTP_SERVICE = """\
http_service:
  server_uri: {{ uri: "http://authz", cluster: authz, timeout: {timeout} }}
  path_prefix: /authz
  authorization_request:
    allowed_headers: {{ patterns: [{{ prefix: x-allowed }}] }}
    headers_to_add: [{{ key: x-added-by-proxy, value: "%REQ(x-allowed-a)%-checked" }}]
  authorization_response:
    allowed_upstream_headers: {{ patterns: [{{ exact: x-current-user }}] }}
    allowed_upstream_headers_to_append: {{ patterns: [{{ exact: x-append-me }}] }}
    allowed_client_headers_on_success: {{ patterns: [{{ exact: x-on-success }}] }}
"""


def ext_authz(timeout="1s", extra=""):
    return f'"@type": {TYPE}\n' + HTTP_SERVICE.format(timeout=timeout) + extra


def with_filter(yaml_text, cfg):
    f = "- name: envoy.filters.http.ext_authz\n  typed_config:\n" + "".join(
        "    " + ln + "\n" for ln in cfg.splitlines())
    return yaml_text.replace("          http_filters:\n",
                             "          http_filters:\n" + "".join("          " + ln + "\n" for ln in f.splitlines()))


def start(procs, upstream, authz_port, cfg, routes=None, hcm_extra="", aggregate=False):
    listen, admin = free_port(), free_port()
    y = bootstrap_yaml(listen, admin, {"backend": [upstream.port], "authz": [authz_port]}, routes=routes,
                       hcm_extra=hcm_extra)
    if aggregate:
        y = as_aggregate(y, "authz")
    run_sharp_config(procs, with_filter(y, cfg), admin)
    return listen, admin


ROUTES = '- match: { prefix: "/" }\n  route: { cluster: backend }\n'


def echoed(body):
    """The request headers the test upstream echoed: name -> list of values."""
    out = {}
    for k, v in json.loads(body)["headers"]:
        out.setdefault(k.lower(), []).append(v)
    return out


@protos("h1", "h2-down")
def test_allow_forwards_allowed_headers(procs, upstream, authz, proto):
    """A 200 from the authorization server lets the request through: its
    allowed_upstream_headers are set on the request, its
    allowed_upstream_headers_to_append added, x-envoy-auth-headers-to-remove
    names removed, the other headers not passed on; the client gets
    allowed_client_headers_on_success. The check request carried the
    original method, the prefixed path, the allowed headers and
    headers_to_add, content-length 0, and nothing else of the client's."""
    port, admin = start(procs, upstream, authz.port, ext_authz(), routes=ROUTES)
    st, h, b = proto.request(port, "/echo?q=1", method="GET", headers={
        "authorization": "Bearer t0k3n", "x-allowed-a": "A", "x-secret": "s", "x-current-user": "mallory",
        "x-append-me": "client", "x-remove-me": "r", "x-also-removed": "r2", "x-kept": "k"})
    assert st == 200, b
    assert h.get("x-on-success") == "yes"
    seen = echoed(b)
    assert seen["x-current-user"] == ["alice"]
    assert seen["x-append-me"] == ["client", "from-authz"]
    assert "x-remove-me" not in seen and "x-also-removed" not in seen
    assert "x-not-allowed" not in seen and "x-on-success" not in seen
    assert seen["x-kept"] == ["k"]
    assert len(authz.requests) == 1
    r = authz.requests[0]
    assert r["method"] == "GET"
    assert r["path"] == "/authz/echo?q=1"
    hd = r["headers"]
    assert hd["authorization"] == ["Bearer t0k3n"]
    assert hd["x-allowed-a"] == ["A"]
    assert hd["x-added-by-proxy"] == ["A-checked"]
    assert hd["content-length"] == ["0"]
    assert hd["host"] == [f"127.0.0.1:{port}"]
    assert hd["x-envoy-internal"] == ["true"]
    for name in ("x-secret", "x-current-user", "x-kept", "x-remove-me"):
        assert name not in hd, name
    assert stat(admin, "http.ingress_http.ext_authz.ok") == 1
    assert stat(admin, "cluster.backend.ext_authz.ok") == 1
    assert stat(admin, "cluster.authz.upstream_rq_200") == 1


@protos("h1", "h2-down")
def test_deny_returns_the_answer(procs, upstream, authz, proto):
    """Another status denies: the client gets the authorization server's
    status, body and headers (every one when allowed_client_headers is
    unset, repeated ones kept), response flag UAEX; the upstream sees
    nothing."""
    al, path = file_access_log("%RESPONSE_CODE% %RESPONSE_FLAGS% %RESPONSE_CODE_DETAILS%\\n")
    port, admin = start(procs, upstream, authz.port, ext_authz(), routes=ROUTES, hcm_extra=al)
    st, h, b = proto.request(port, "/deny/me", method="POST", body=b"payload")
    assert st == 403
    assert b == b"denied by the test server"
    assert h.get("x-deny-reason") == "not-today"
    assert h.get("content-type") == "text/x-denied"
    assert authz.requests[0]["method"] == "POST"
    assert authz.requests[0]["body"] == b""
    assert log_lines(path, 1)[0] == "403 UAEX ext_authz_denied"
    assert stat(admin, "http.ingress_http.ext_authz.denied") == 1
    assert stat(admin, "cluster.backend.ext_authz.denied") == 1
    assert stat(admin, "cluster.backend.upstream_rq_403") == 1
    assert stat(admin, "cluster.backend.upstream_rq_total") == 0


def test_allowed_client_headers_on_denial(procs, upstream, authz):
    """With allowed_client_headers set, a denial passes those and Envoy's
    defaults (www-authenticate among them) but no other header."""
    cfg = ext_authz().replace(
        "    allowed_client_headers_on_success:",
        "    allowed_client_headers: { patterns: [{ exact: x-other }] }\n    allowed_client_headers_on_success:")
    port, _ = start(procs, upstream, authz.port, cfg, routes=ROUTES)
    st, h, b = PROTOS_H1.request(port, "/unauthorized")
    assert st == 401 and b == b"who are you"
    assert h.get("www-authenticate") == "Basic realm=test"
    assert "x-deny-reason" not in h


def test_timeout_denies_with_status_on_error(procs, upstream, authz):
    """An authorization server slower than the timeout: the request gets
    status_on_error (403 by default, here 503) with response flag UAEX."""
    al, path = file_access_log("%RESPONSE_CODE% %RESPONSE_FLAGS% %RESPONSE_CODE_DETAILS%\\n")
    port, admin = start(procs, upstream, authz.port, ext_authz("0.2s", "status_on_error: { code: 503 }\n"),
                        routes=ROUTES, hcm_extra=al)
    t0 = time.time()
    st, _, _ = PROTOS_H1.request(port, "/slow")
    assert st == 503
    assert time.time() - t0 < 1.4 * SLOW
    assert log_lines(path, 1)[0] == "503 UAEX ext_authz_error"
    assert stat(admin, "http.ingress_http.ext_authz.error") == 1
    assert stat(admin, "cluster.authz.upstream_rq_timeout") == 1


def test_timeout_default_403(procs, upstream, authz):
    port, _ = start(procs, upstream, authz.port, ext_authz("0.2s"), routes=ROUTES)
    st, _, b = PROTOS_H1.request(port, "/slow")
    assert st == 403 and b == b""


@protos("h1", "h2-down")
def test_failure_mode_allow(procs, upstream, authz, proto):
    """failure_mode_allow lets the request through a failed check, with
    x-envoy-auth-failure-mode-allowed under failure_mode_allow_header_add."""
    port, admin = start(procs, upstream, authz.port,
                        ext_authz("0.2s", "failure_mode_allow: true\nfailure_mode_allow_header_add: true\n"),
                        routes=ROUTES)
    st, _, b = proto.request(port, "/echo", headers={"x-allowed-mode": "/slow"})
    assert st == 200
    assert echoed(b)["x-envoy-auth-failure-mode-allowed"] == ["true"]
    st, _, b = proto.request(port, "/echo", headers={"x-allowed-mode": "/error"})
    assert st == 200
    assert stat(admin, "http.ingress_http.ext_authz.error") == 2
    assert stat(admin, "http.ingress_http.ext_authz.failure_mode_allowed") == 2
    assert stat(admin, "cluster.backend.ext_authz.failure_mode_allowed") == 2


def test_5xx_is_an_error(procs, upstream, authz):
    """A 5xx from the authorization server is an error, not a denial: the
    client gets status_on_error, not the server's status or body."""
    port, admin = start(procs, upstream, authz.port, ext_authz(), routes=ROUTES)
    st, _, b = PROTOS_H1.request(port, "/error")
    assert st == 403 and b == b""
    assert stat(admin, "http.ingress_http.ext_authz.error") == 1
    assert stat(admin, "http.ingress_http.ext_authz.denied") == 0


def test_oversized_answer_is_an_error(procs, upstream, authz):
    """An answer whose body is beyond the stream's buffer limit (1 MiB) is
    not held: the check fails (status_on_error, no body), the proxy stays
    up."""
    port, admin = start(procs, upstream, authz.port, ext_authz("5s"), routes=ROUTES)
    st, _, b = PROTOS_H1.request(port, "/huge")
    assert st == 403 and b == b""
    assert stat(admin, "http.ingress_http.ext_authz.error") == 1
    assert PROTOS_H1.request(port, "/echo")[0] == 200


def test_dead_authorization_cluster(procs, upstream):
    """Nothing listens at the authorization cluster's address: every
    request gets 403 quickly, the proxy stays up, and with
    failure_mode_allow requests pass."""
    dead = free_port()
    port, admin = start(procs, upstream, dead, ext_authz(), routes=ROUTES)
    for _ in range(3):
        st, _, _ = PROTOS_H1.request(port, "/echo")
        assert st == 403
    assert stat(admin, "http.ingress_http.ext_authz.error") == 3
    port2, _ = start(procs, upstream, dead, ext_authz(extra="failure_mode_allow: true\n"), routes=ROUTES)
    assert PROTOS_H1.request(port2, "/echo")[0] == 200


def test_unknown_cluster_is_an_error(procs, upstream, authz):
    """A server_uri cluster the configuration lacks fails every check (as
    Envoy, which looks it up per request)."""
    cfg = ext_authz().replace("cluster: authz", "cluster: missing")
    port, admin = start(procs, upstream, authz.port, cfg, routes=ROUTES)
    assert PROTOS_H1.request(port, "/echo")[0] == 403
    assert stat(admin, "http.ingress_http.ext_authz.error") == 1
    assert authz.requests == []


def test_aggregate_authorization_cluster(procs, upstream, authz):
    """server_uri's cluster is an aggregate cluster: the check goes to the
    host of the member its balancer chooses, counted in the member's
    stats (it got "no healthy upstream" and a 403 before)."""
    port, admin = start(procs, upstream, authz.port, ext_authz(), routes=ROUTES, aggregate=True)
    for _ in range(3):
        assert PROTOS_H1.request(port, "/echo")[0] == 200
    assert len(authz.requests) == 3
    assert stat(admin, "http.ingress_http.ext_authz.ok") == 3
    assert stat(admin, "cluster.authz_m.upstream_rq_total") == 3
    assert not stat(admin, "http.ingress_http.ext_authz.error")


def test_per_route_disabled(procs, upstream, authz):
    """ExtAuthzPerRoute disabled: the route's requests are not checked;
    other routes are."""
    routes = f"""\
- match: {{ prefix: "/public" }}
  route: {{ cluster: backend, prefix_rewrite: /echo }}
  typed_per_filter_config:
    envoy.filters.http.ext_authz:
      "@type": {ROUTE_TYPE}
      disabled: true
- match: {{ prefix: "/" }}
  route: {{ cluster: backend }}
"""
    port, _ = start(procs, upstream, authz.port, ext_authz(), routes=routes)
    assert PROTOS_H1.request(port, "/public/x")[0] == 200
    assert authz.requests == []
    assert PROTOS_H1.request(port, "/deny")[0] == 403
    assert len(authz.requests) == 1


@protos("h1", "h2-down")
def test_with_request_body(procs, upstream, authz, proto):
    """with_request_body: the authorization request carries the client's
    body with its length; the upstream still gets the whole body."""
    cfg = ext_authz(extra="with_request_body: { max_request_bytes: 1024 }\n")
    port, _ = start(procs, upstream, authz.port, cfg, routes=ROUTES)
    st, _, b = proto.request(port, "/echo", method="POST", body=b"hello authz")
    assert st == 200, b
    r = authz.requests[0]
    assert r["body"] == b"hello authz"
    assert r["headers"]["content-length"] == ["11"]
    assert r["headers"]["x-envoy-auth-partial-body"] == ["false"]


def test_with_request_body_too_large(procs, upstream, authz):
    """A body beyond max_request_bytes gets 413 without a check; with
    allow_partial_message the check goes with the first max_request_bytes."""
    port, admin = start(procs, upstream, authz.port, ext_authz(extra="with_request_body: { max_request_bytes: 8 }\n"),
                        routes=ROUTES)
    st, _, _ = PROTOS_H1.request(port, "/echo", method="POST", body=b"0123456789abcdef")
    assert st == 413
    assert authz.requests == []
    # Envoy's connection manager answers it (the filter's decoder buffer limit)
    assert stat(admin, "http.ingress_http.downstream_rq_too_large") == 1
    port2, _ = start(procs, upstream, authz.port, ext_authz(
        extra="with_request_body: { max_request_bytes: 8, allow_partial_message: true }\n"), routes=ROUTES)
    st, _, _ = PROTOS_H1.request(port2, "/echo", method="POST", body=b"0123456789abcdef")
    assert st == 200
    assert authz.requests[0]["body"] == b"01234567"
    assert authz.requests[0]["headers"]["x-envoy-auth-partial-body"] == ["true"]


def test_filter_enabled_and_deny_at_disable(procs, upstream, authz):
    """filter_enabled at 0%: no check (counted as disabled); with
    deny_at_disable the skipped request gets status_on_error."""
    off = "filter_enabled: { default_value: { numerator: 0 } }\n"
    port, admin = start(procs, upstream, authz.port, ext_authz(extra=off), routes=ROUTES)
    assert PROTOS_H1.request(port, "/echo")[0] == 200
    assert authz.requests == []
    assert stat(admin, "http.ingress_http.ext_authz.disabled") == 1
    port2, _ = start(procs, upstream, authz.port,
                     ext_authz(extra=off + "deny_at_disable: { default_value: true, runtime_key: ea_deny }\n"),
                     routes=ROUTES)
    assert PROTOS_H1.request(port2, "/echo")[0] == 403
    assert authz.requests == []


def test_stat_prefix(procs, upstream, authz):
    port, admin = start(procs, upstream, authz.port, ext_authz(extra="stat_prefix: waf\n"), routes=ROUTES)
    assert PROTOS_H1.request(port, "/echo")[0] == 200
    assert stat(admin, "http.ingress_http.ext_authz.waf.ok") == 1
    assert stat(admin, "cluster.backend.ext_authz.waf.ok") == 1


def test_client_gone_while_checking(procs, upstream, authz):
    """A client that leaves while its check is in flight: the check is
    cancelled and the proxy goes on serving."""
    import socket
    port, admin = start(procs, upstream, authz.port, ext_authz("2s"), routes=ROUTES)
    s = socket.create_connection(("127.0.0.1", port))
    s.sendall(b"GET /slow HTTP/1.1\r\nhost: x\r\n\r\n")
    wait_for(lambda: len(authz.requests) == 1, 5 * SLOW, "the check request")
    s.close()
    assert PROTOS_H1.request(port, "/echo")[0] == 200


@pytest.mark.parametrize("extra,msg", [
    ("clear_route_cache: true\n", "clear_route_cache"),
    ("validate_mutations: true\n", "validate_mutations"),
    ("allowed_headers: { patterns: [{ exact: x-a }] }\n", "Invalid duplicate configuration for allowed_headers"),
])
def test_refused_fields(extra, msg):
    y = bootstrap_yaml(free_port(), free_port(), {"backend": [1], "authz": [2]})
    rc, out = validate_config(with_filter(y, ext_authz(extra=extra)))
    assert rc != 0 and msg in out, out


def test_google_grpc_refused_by_name():
    y = bootstrap_yaml(free_port(), free_port(), {"backend": [1], "authz": [2]})
    cfg = f'"@type": {TYPE}\ngrpc_service: {{ google_grpc: {{ target_uri: "127.0.0.1:1", stat_prefix: a }} }}\n'
    rc, out = validate_config(with_filter(y, cfg))
    assert rc != 0 and "google_grpc" in out and "not supported" in out, out


@pytest.mark.parametrize("name", [
    "examples__ext_authz__config__http-service.yaml",
    "envoy-main__docs__root__configuration__http__http_filters___include__ext-authz-http-filter.yaml",
])
def test_corpus_http_service_validates(name):
    path = os.path.join(CORPUS, name)
    if not os.path.exists(path):
        pytest.skip("no Envoy corpus")
    rc, out = validate_config(open(path).read())
    assert rc == 0, out

