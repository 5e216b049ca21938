"""HttpConnectionManager normalize_path, merge_slashes and
path_with_escaped_slashes_action through the real binary: the path that is
routed is the path that goes upstream, and the classic traversal and
double-slash bypasses of a `prefix: /admin` deny rule are answered as Envoy
answers them."""
import json
import subprocess

import pytest

from conftest import (bootstrap_yaml, free_port, raw_request, run_sharp_config, stat)

ADMIN_DENY_ROUTES = """\
- match: { prefix: "/admin" }
  direct_response: { status: 403, body: { inline_string: "forbidden" } }
- match: { prefix: "/" }
  route: { cluster: app }
"""


def start(procs, upstream, hcm_extra=""):
    listen, admin = free_port(), free_port()
    run_sharp_config(procs, bootstrap_yaml(listen, admin, {"app": [upstream.port]}, routes=ADMIN_DENY_ROUTES,
                                           hcm_extra=hcm_extra), admin)
    return listen, admin


def get(listen, path, extra=b""):
    return raw_request(listen, b"GET " + path.encode() + b" HTTP/1.1\r\nHost: x\r\n" + extra + b"\r\n")


def upstream_path(body):
    return json.loads(body)["path"]


BYPASSES = ["/x/../admin/secret", "//admin", "/%2e%2e/admin", "/%2E%2e/admin/x", "/public/./../admin",
            "/public\\..\\admin", "/%61dmin", "///admin//secret", "/./admin", "/public/..;x/admin"]


def test_bypasses_reach_the_app_when_normalization_is_off(procs, path_upstream):
    # Envoy's default: normalize_path false (runtime key off), merge_slashes false.
    listen, admin = start(procs, path_upstream)
    for p in ["/x/../admin/secret", "//admin", "/%2e%2e/admin"]:
        st, _, body, _ = get(listen, p)
        assert st == 200, p
        assert upstream_path(body) == p
    assert stat(admin, "http.ingress_http.downstream_rq_failed_path_normalization") == 0


@pytest.mark.parametrize("path", BYPASSES)
def test_bypasses_denied_with_normalize_path_and_merge_slashes(procs, path_upstream, path):
    listen, admin = start(procs, path_upstream, "normalize_path: true\nmerge_slashes: true\n")
    st, _, body, _ = get(listen, path)
    assert (st, body) == (403, b"forbidden"), path


def test_normalized_path_goes_upstream(procs, path_upstream):
    listen, admin = start(procs, path_upstream, "normalize_path: true\nmerge_slashes: true\n")
    cases = {
        "/app/./x/../y": "/app/y",
        "/app//a///b/": "/app/a/b/",
        "/app/%7Euser/%41%2d%5f": "/app/~user/A-_",   # unreserved characters decoded
        "/app/%3f%2F%25": "/app/%3f%2F%25",            # others kept as written
        "/app/a b": None,                              # not valid HTTP/1: llhttp refuses it
        "/app/../../..": "/",
        "/app/x?q=/../a//b&%41": "/app/x?q=/../a//b&%41",  # the query is untouched
        "/app\\x": "/app/x",
        "/app/..;p/other": "/other",
    }
    for sent, want in cases.items():
        st, _, body, _ = get(listen, sent)
        if want is None:
            assert st == 400
            continue
        assert st == 200, (sent, st, body)
        assert upstream_path(body) == want, sent
    # real curl (--path-as-is: curl would squash the dots itself otherwise)
    out = subprocess.run(["curl", "-s", "--path-as-is", "-o", "-", "-w", "\n%{http_code}",
                          f"http://127.0.0.1:{listen}/app/one/../two//three"],
                         capture_output=True, timeout=10, text=True).stdout
    body, code = out.rsplit("\n", 1)
    assert code == "200" and json.loads(body)["path"] == "/app/two/three"
    out = subprocess.run(["curl", "-s", "--path-as-is", "-o", "/dev/null", "-w", "%{http_code}",
                          f"http://127.0.0.1:{listen}/x/../admin/secret"],
                         capture_output=True, timeout=10, text=True).stdout
    assert out == "403"


def test_merge_slashes_alone_and_normalize_alone(procs, path_upstream):
    listen, _ = start(procs, path_upstream, "merge_slashes: true\n")
    st, _, body, _ = get(listen, "//admin")
    assert st == 403
    st, _, body, _ = get(listen, "/x/../admin")  # dots untouched without normalize_path
    assert st == 200 and upstream_path(body) == "/x/../admin"
    listen, _ = start(procs, path_upstream, "normalize_path: true\n")
    st, _, body, _ = get(listen, "//admin")  # RFC 3986 keeps empty segments
    assert st == 200 and upstream_path(body) == "//admin"
    st, _, _, _ = get(listen, "/x/../admin")
    assert st == 403


def test_unnormalizable_path_is_400_and_closes(procs, path_upstream):
    listen, admin = start(procs, path_upstream, "normalize_path: true\n")
    st, hdrs, body, closed = get(listen, "/a/%00/b")
    assert st == 400 and body == b"" and closed
    assert hdrs.get("connection") == "close"
    assert stat(admin, "http.ingress_http.downstream_rq_failed_path_normalization") == 1
    assert stat(admin, "cluster.app.upstream_rq_total") in (0, None)


def test_fragment_rejected(procs, path_upstream):
    # envoy.reloadable_features.http_reject_path_with_fragment (on by default)
    listen, admin = start(procs, path_upstream)
    st, _, _, closed = get(listen, "/app#frag")
    assert st == 400 and closed
    assert stat(admin, "http.ingress_http.downstream_rq_failed_path_normalization") == 1


ESCAPED = "/public%2F..%2Fadmin"


@pytest.mark.parametrize("action", [None, "IMPLEMENTATION_SPECIFIC_DEFAULT", "KEEP_UNCHANGED"])
def test_escaped_slashes_kept(procs, path_upstream, action):
    extra = "normalize_path: true\nmerge_slashes: true\n"
    if action:
        extra += f"path_with_escaped_slashes_action: {action}\n"
    listen, admin = start(procs, path_upstream, extra)
    st, _, body, _ = get(listen, ESCAPED)
    # %2F is not a separator for Envoy: "..%2F" is no dot segment
    assert st == 200 and upstream_path(body) == ESCAPED
    st, _, body, _ = get(listen, "/app%5cx")
    assert st == 200 and upstream_path(body) == "/app%5cx"


def test_escaped_slashes_reject(procs, path_upstream):
    listen, admin = start(procs, path_upstream, "normalize_path: true\npath_with_escaped_slashes_action: REJECT_REQUEST\n")
    for p in [ESCAPED, "/admin%2Fsecret", "/app%2fx", "/app%5Cx"]:
        st, _, body, closed = get(listen, p)
        assert st == 400 and closed, p
    assert stat(admin, "http.ingress_http.downstream_rq_failed_path_normalization") == 4
    st, _, body, _ = get(listen, "/app/x?next=%2F")  # only the path part counts
    assert st == 200 and upstream_path(body) == "/app/x?next=%2F"


def test_escaped_slashes_unescape_and_redirect(procs, path_upstream):
    listen, admin = start(procs, path_upstream,
                          "normalize_path: true\nmerge_slashes: true\npath_with_escaped_slashes_action: UNESCAPE_AND_REDIRECT\n")
    st, hdrs, body, closed = get(listen, "/admin%2Fsecret")
    assert st == 307 and hdrs["location"] == "/admin/secret" and not closed
    st, hdrs, _, _ = get(listen, ESCAPED)
    assert st == 307 and hdrs["location"] == "/admin"
    st, hdrs, _, _ = get(listen, "/app%2F%2Fx%5Cy?q=%2F")
    assert st == 307 and hdrs["location"] == "/app/x/y?q=%2F"
    assert stat(admin, "http.ingress_http.downstream_rq_redirected_with_normalized_path") == 3
    # gRPC clients cannot follow a redirect: Envoy's 400, which a gRPC
    # request gets as a trailers-only reply with grpc-status 13 (INTERNAL)
    st, hdrs, _, _ = get(listen, "/svc%2FMethod", b"content-type: application/grpc\r\n")
    assert st == 200 and hdrs["grpc-status"] == "13" and hdrs["content-type"] == "application/grpc"
    assert stat(admin, "http.ingress_http.downstream_rq_failed_path_normalization") == 1
    # following the redirect lands on the deny rule
    out = subprocess.run(["curl", "-s", "-L", "-o", "/dev/null", "-w", "%{http_code} %{num_redirects}",
                          f"http://127.0.0.1:{listen}/admin%2Fsecret"], capture_output=True, timeout=10,
                         text=True).stdout
    assert out == "403 1"
    # no escaped slash: forwarded as usual
    st, _, body, _ = get(listen, "/app/x")
    assert st == 200 and upstream_path(body) == "/app/x"


def test_escaped_slashes_unescape_and_forward(procs, path_upstream):
    listen, admin = start(procs, path_upstream,
                          "normalize_path: true\npath_with_escaped_slashes_action: UNESCAPE_AND_FORWARD\n")
    for p in [ESCAPED, "/admin%2Fsecret", "/public%5C..%5Cadmin"]:
        st, _, body, _ = get(listen, p)
        assert (st, body) == (403, b"forbidden"), p
    st, _, body, _ = get(listen, "/app%2Fx%2f%5cy")
    assert st == 200 and upstream_path(body) == "/app/x//y"  # no merge_slashes here
    assert stat(admin, "http.ingress_http.downstream_rq_redirected_with_normalized_path") == 0
