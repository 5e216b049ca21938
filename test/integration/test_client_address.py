"""The trusted client address and what follows from it, as in Envoy's
ConnectionManagerUtility::mutateRequestHeaders: use_remote_address with
xff_num_trusted_hops, internal_address_config (x-envoy-internal and the
sanitizing of x-envoy-* headers), x-envoy-external-address, the access
log's %DOWNSTREAM_REMOTE_ADDRESS%, preserve_external_request_id and
server_header_transformation."""
import json
import os
import subprocess
import tempfile
import time

import pytest

from conftest import PROTOS, SHARP, bootstrap_yaml, free_port, protos, raw_request, run_sharp_config

H1 = PROTOS["h1"]
# the upstream here is an HTTP/1 echo: HTTP/2 on the client side
DOWN = protos("h1", "h2-down")

LOG_FORMAT = "%DOWNSTREAM_REMOTE_ADDRESS% %DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT% %DOWNSTREAM_DIRECT_REMOTE_ADDRESS_WITHOUT_PORT% %REQ(:PATH)%\\n"

# x-envoy-* request headers Envoy removes from requests that are not internal
SANITIZED = {"x-envoy-retry-on": "5xx", "x-envoy-max-retries": "1", "x-envoy-upstream-rq-timeout-ms": "9000",
             "x-envoy-retriable-status-codes": "418", "x-envoy-force-trace": "1", "x-envoy-original-url": "/x",
             "x-envoy-hedge-on-per-try-timeout": "true", "x-envoy-ip-tags": "t"}
EDGE_ONLY = {"x-envoy-decorator-operation": "op", "x-envoy-downstream-service-cluster": "c"}
# those of them the router does not consume, so an internal client's reach the upstream
PASSED_ON = ["x-envoy-force-trace", "x-envoy-original-url", "x-envoy-ip-tags"]


class Proxy:
    def __init__(self, procs, upstream, hcm_extra="", routes=None, vhost_extra="", proto=H1):
        self.proto = proto
        self.listen, self.admin = free_port(), free_port()
        self.log = os.path.join(tempfile.mkdtemp(prefix="sharp-al-"), "access.log")
        al = ("access_log:\n- name: envoy.access_loggers.file\n  typed_config:\n"
              "    \"@type\": type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog\n"
              f"    path: {self.log}\n"
              f"    log_format: {{ text_format_source: {{ inline_string: \"{LOG_FORMAT}\" }} }}\n")
        run_sharp_config(procs, bootstrap_yaml(self.listen, self.admin, {"app": [upstream.port]}, routes=routes,
                                               hcm_extra=al + hcm_extra, vhost_extra=vhost_extra), self.admin)

    def get(self, path="/", headers=None):
        if self.proto.down == "h2":
            return self.proto.request(self.listen, path, headers=dict({"host": "x"}, **(headers or {})))
        hdr = "".join(f"{k}: {v}\r\n" for k, v in (headers or {}).items())
        st, h, body, _ = raw_request(self.listen, f"GET {path} HTTP/1.1\r\nHost: x\r\n{hdr}\r\n".encode())
        return st, h, body

    def upstream_headers(self, path="/", headers=None):
        st, _, body = self.get(path, headers)
        assert st == 200, body
        out = {}
        for k, v in json.loads(body)["headers"]:
            out.setdefault(k.lower(), v)
        return out

    def log_lines(self, n):
        """The access log's lines ordered by request path (the last field):
        each worker flushes its own lines, so the file's order is not the
        order the requests were sent in."""
        deadline = time.time() + 5
        while time.time() < deadline:
            if os.path.exists(self.log):
                lines = open(self.log).read().splitlines()
                if len(lines) >= n:
                    return sorted(lines, key=lambda line: line.split()[-1])
            time.sleep(0.05)
        raise AssertionError("access log has fewer than %d lines" % n)


@DOWN
def test_xff_num_trusted_hops_picks_the_client(procs, path_upstream, proto):
    p = Proxy(procs, path_upstream, "use_remote_address: true\nxff_num_trusted_hops: 1\n", proto=proto)
    h = p.upstream_headers("/a", {"x-forwarded-for": "203.0.113.7", "x-forwarded-proto": "https"})
    # the entry the trusted proxy appended is the client; ours is appended after it
    assert h["x-envoy-external-address"] == "203.0.113.7"
    assert h["x-forwarded-for"] == "203.0.113.7,127.0.0.1"
    # a trusted hop's x-forwarded-proto is kept
    assert h["x-forwarded-proto"] == "https"
    # two entries, one trusted hop: the last one
    h = p.upstream_headers("/b", {"x-forwarded-for": "198.51.100.1, 203.0.113.9"})
    assert h["x-envoy-external-address"] == "203.0.113.9"
    # no x-forwarded-for: the peer itself
    h = p.upstream_headers("/c")
    assert h["x-envoy-external-address"] == "127.0.0.1"
    lines = p.log_lines(3)
    assert lines[0].split()[:3] == ["203.0.113.7:0", "203.0.113.7", "127.0.0.1"]
    assert lines[1].split()[:2] == ["203.0.113.9:0", "203.0.113.9"]
    assert lines[2].split()[1:3] == ["127.0.0.1", "127.0.0.1"]

    p2 = Proxy(procs, path_upstream, "use_remote_address: true\nxff_num_trusted_hops: 2\n", proto=proto)
    h = p2.upstream_headers("/", {"x-forwarded-for": "192.0.2.44, 198.51.100.1,203.0.113.9"})
    assert h["x-envoy-external-address"] == "198.51.100.1"
    # fewer entries than trusted hops: fall back to the peer
    h = p2.upstream_headers("/", {"x-forwarded-for": "203.0.113.9"})
    assert h["x-envoy-external-address"] == "127.0.0.1"


@DOWN
def test_no_trusted_hops_means_the_peer(procs, path_upstream, proto):
    p = Proxy(procs, path_upstream, "use_remote_address: true\n", proto=proto)
    h = p.upstream_headers("/", {"x-forwarded-for": "203.0.113.7", "x-forwarded-proto": "https"})
    assert h["x-envoy-external-address"] == "127.0.0.1"
    assert h["x-forwarded-proto"] == "http"  # an untrusted peer's value is overwritten
    assert p.log_lines(1)[0].split()[1] == "127.0.0.1"


@DOWN
def test_xff_without_use_remote_address(procs, path_upstream, proto):
    # Envoy's default original IP detection reads x-forwarded-for with
    # xff_num_trusted_hops; internal only if it holds a single internal address.
    p = Proxy(procs, path_upstream, "xff_num_trusted_hops: 1\ninternal_address_config: {}\n", proto=proto)
    h = p.upstream_headers("/", {"x-forwarded-for": "8.8.8.8,10.0.0.5"})
    assert "x-envoy-internal" not in h and "x-envoy-external-address" not in h  # not an edge request
    assert p.log_lines(1)[0].split()[:3] == ["8.8.8.8:0", "8.8.8.8", "127.0.0.1"]
    p0 = Proxy(procs, path_upstream, "internal_address_config: {}\n", proto=proto)
    h = p0.upstream_headers("/", dict({"x-forwarded-for": "10.0.0.5"}, **SANITIZED))
    assert h["x-envoy-internal"] == "true"
    for k in PASSED_ON:
        assert k in h, k
    assert h["x-envoy-expected-rq-timeout-ms"] == "9000"  # x-envoy-upstream-rq-timeout-ms was honoured
    h = p0.upstream_headers("/", dict({"x-forwarded-for": "10.0.0.5,10.0.0.6"}, **SANITIZED))
    assert "x-envoy-internal" not in h
    for k in SANITIZED:
        assert k not in h, k
    # no x-forwarded-for at all: external, even from loopback
    h = p0.upstream_headers("/", dict(SANITIZED, **EDGE_ONLY))
    assert "x-envoy-internal" not in h
    for k in SANITIZED:
        assert k not in h, k
    for k in EDGE_ONLY:  # removed at the edge only
        assert k in h, k


@pytest.mark.parametrize("config,internal", [
    ("", False),  # Envoy >= 1.33: no address is internal without internal_address_config
    ("internal_address_config: {}\n", True),  # RFC 1918 and loopback
    ("internal_address_config:\n  cidr_ranges: [{ address_prefix: 127.0.0.1, prefix_len: 32 }]\n", True),
    ("internal_address_config:\n  cidr_ranges: [{ address_prefix: 127.0.0.0, prefix_len: 8 }]\n", True),
    ("internal_address_config:\n  cidr_ranges: [{ address_prefix: 10.0.0.0, prefix_len: 8 }]\n", False),
    ("internal_address_config:\n  unix_sockets: true\n", True),
])
def test_internal_address_config(procs, path_upstream, config, internal):
    p = Proxy(procs, path_upstream, "use_remote_address: true\n" + config,
              vhost_extra="", routes=None)
    sent = dict(SANITIZED, **EDGE_ONLY)
    sent["x-request-id"] = "client-chosen-id"
    sent["x-envoy-internal"] = "true"
    h = p.upstream_headers("/", sent)
    if internal:
        assert h["x-envoy-internal"] == "true"
        assert "x-envoy-external-address" not in h
        for k in PASSED_ON + list(EDGE_ONLY):
            assert k in h, k
        assert h["x-envoy-expected-rq-timeout-ms"] == "9000"
        assert h["x-request-id"] == "client-chosen-id"
    else:
        assert "x-envoy-internal" not in h  # a client cannot claim it
        assert h["x-envoy-external-address"] == "127.0.0.1"
        for k in list(SANITIZED) + list(EDGE_ONLY):
            assert k not in h, k
        assert h["x-envoy-expected-rq-timeout-ms"] == "15000"  # the route's, not the client's
        assert h["x-request-id"] != "client-chosen-id"  # edge request: regenerated


def test_internal_only_headers_removed_for_external(procs, path_upstream):
    routes = "- match: { prefix: \"/\" }\n  route: { cluster: app }\n"
    listen, admin = free_port(), free_port()
    yaml = bootstrap_yaml(listen, admin, {"app": [path_upstream.port]}, routes=routes,
                          hcm_extra="use_remote_address: true\n")
    yaml = yaml.replace("            name: local_route\n",
                        "            name: local_route\n            internal_only_headers: [x-secret]\n")
    run_sharp_config(procs, yaml, admin)
    st, _, body, _ = raw_request(listen, b"GET / HTTP/1.1\r\nHost: x\r\nx-secret: 1\r\n\r\n")
    assert st == 200 and "x-secret" not in [k.lower() for k, _ in json.loads(body)["headers"]]


def test_bad_cidr_is_a_config_error(tmp_path):
    y = bootstrap_yaml(free_port(), free_port(), {"app": [9]}, hcm_extra=(
        "internal_address_config:\n  cidr_ranges: [{ address_prefix: 10.0.0.0, prefix_len: 33 }]\n"))
    f = tmp_path / "b.yaml"
    f.write_text(y)
    r = subprocess.run([SHARP, "--mode", "validate", "-c", str(f)], capture_output=True, text=True, timeout=20)
    assert r.returncode != 0 and "cidr_ranges[0]" in r.stderr + r.stdout


@pytest.mark.parametrize("preserve", [False, True])
def test_preserve_external_request_id(procs, path_upstream, preserve):
    extra = "use_remote_address: true\n" + ("preserve_external_request_id: true\n" if preserve else "")
    p = Proxy(procs, path_upstream, extra)
    h = p.upstream_headers("/", {"x-request-id": "abc-123"})
    if preserve:
        assert h["x-request-id"] == "abc-123"
    else:
        assert h["x-request-id"] != "abc-123" and len(h["x-request-id"]) == 36
    # a request without one always gets one
    assert len(p.upstream_headers("/")["x-request-id"]) == 36
    # not an edge request (use_remote_address off): kept either way
    p2 = Proxy(procs, path_upstream, "preserve_external_request_id: true\n" if preserve else "")
    assert p2.upstream_headers("/", {"x-request-id": "abc-123"})["x-request-id"] == "abc-123"


@pytest.mark.parametrize("mode,upstream_server,local_server", [
    (None, "custom", "custom"),
    ("OVERWRITE", "custom", "custom"),
    ("APPEND_IF_ABSENT", "upstream-server", "custom"),
    ("PASS_THROUGH", "upstream-server", None),
])
def test_server_header_transformation(procs, path_upstream, mode, upstream_server, local_server):
    routes = ("- match: { prefix: \"/local\" }\n  direct_response: { status: 200, body: { inline_string: \"x\" } }\n"
              "- match: { prefix: \"/\" }\n  route: { cluster: app }\n")
    extra = "server_name: custom\n" + (f"server_header_transformation: {mode}\n" if mode else "")
    p = Proxy(procs, path_upstream, extra, routes=routes)
    # the path echo upstream sends "Server: upstream-server"
    st, h, _ = p.get("/up")
    assert st == 200 and h.get("server") == upstream_server
    st, h, _ = p.get("/local")
    assert st == 200 and h.get("server") == local_server
