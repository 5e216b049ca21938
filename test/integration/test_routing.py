"""Route configuration features: matchers, actions, rewrites, header mutations."""
import http.client
import json
from collections import Counter

from conftest import PROTOS, Upstream, bootstrap_yaml, free_port, protos, run_sharp_config

H1 = PROTOS["h1"]


def start(procs, routes, clusters, vhost_extra="", hcm_extra="", cluster_extra=""):
    listen, admin = free_port(), free_port()
    run_sharp_config(procs, bootstrap_yaml(listen, admin, clusters, routes=routes, vhost_extra=vhost_extra,
                                           hcm_extra=hcm_extra, cluster_extra=cluster_extra), admin)
    return listen, admin


class Resp:
    def __init__(self, status, headers):
        self.status, self.headers = status, headers

    def getheader(self, name):
        return self.headers.get(name.lower())


def req(port, path, method="GET", headers=None, proto=H1):
    """(response, body) over proto's client side; a Host header is the
    :authority over HTTP/2."""
    st, h, body = proto.request(port, path, method=method, headers=headers, timeout=5)
    return Resp(st, h), body


def echo_headers(body):
    """The upstream's view of the request headers; over HTTP/2 the
    :authority is the host."""
    h = {k.lower(): v for k, v in json.loads(body)["headers"]}
    if ":authority" in h:
        h["host"] = h[":authority"]
    return h


def test_prefix_path_regex_header_query_matching(procs):
    a, b = Upstream("a"), Upstream("b")
    procs += [a, b]
    routes = """\
- match: { path: "/exact" }
  route: { cluster: a }
- match: { safe_regex: { regex: "/re/[0-9]+" } }
  route: { cluster: b }
- match:
    prefix: "/h"
    headers: [{ name: x-tenant, string_match: { exact: gold } }]
  route: { cluster: b }
- match:
    prefix: "/q"
    query_parameters: [{ name: debug, present_match: true }]
  route: { cluster: b }
- match: { prefix: "/CASE", case_sensitive: false }
  route: { cluster: b }
- match: { prefix: "/" }
  route: { cluster: a }
"""
    port, _ = start(procs, routes, {"a": [a.port], "b": [b.port]})
    who = lambda path, h=None: req(port, path, headers=h)[0].getheader("x-upstream-name")
    assert who("/exact") == "a"
    assert who("/exact/no") == "a"
    assert who("/re/123") == "b"
    assert who("/re/12x") == "a"
    assert who("/h", {"x-tenant": "gold"}) == "b"
    assert who("/h", {"x-tenant": "silver"}) == "a"
    assert who("/q?debug=1") == "b"
    assert who("/q?x=1") == "a"
    assert who("/case/x") == "b"


def test_safe_regex_re2_syntax(procs):
    """safe_regex is RE2 with full-match semantics: Perl classes, (?i),
    POSIX bracket classes, non-greedy operators, Unicode classes."""
    a, b = Upstream("a"), Upstream("b")
    procs += [a, b]
    routes = r"""- match: { safe_regex: { regex: '/users/\d+' } }
  route: { cluster: b }
- match: { safe_regex: { regex: '(?i)/Admin/.*' } }
  route: { cluster: b }
- match: { safe_regex: { regex: '/tags/[[:alpha:]]+' } }
  route: { cluster: b }
- match: { safe_regex: { regex: '/lazy/.+?-end' } }
  route: { cluster: b }
- match: { safe_regex: { regex: '/l/\p{Greek}+' } }
  route: { cluster: b }
- match:
    prefix: /h
    headers:
    - { name: x-id, safe_regex_match: { regex: '\w+-\d{3}' } }
    - { name: x-mode, string_match: { safe_regex: { regex: '(?i)fast|slow' } } }
  route: { cluster: b }
- match:
    prefix: /q
    query_parameters: [{ name: v, string_match: { safe_regex: { regex: 'v\d+(\.\d+)?' } } }]
  route: { cluster: b }
- match: { prefix: "/" }
  route: { cluster: a }
"""
    port, _ = start(procs, routes, {"a": [a.port], "b": [b.port]})
    who = lambda path, h=None: req(port, path, headers=h)[0].getheader("x-upstream-name")
    assert who("/users/123") == "b"
    assert who("/users/123?x=abc") == "b"       # the query is not part of the path
    assert who("/users/123/x") == "a"           # full match, not a search
    assert who("/users/") == "a"
    assert who("/ADMIN/panel") == "b"
    assert who("/admin/") == "b"
    assert who("/tags/abcXYZ") == "b"
    assert who("/tags/abc1") == "a"
    assert who("/lazy/a-end-b-end") == "b"
    assert who("/lazy/a-end-b") == "a"
    assert who("/l/%CE%B1") == "a"              # not decoded: '%' is no Greek letter
    assert who("/h", {"x-id": "ab_9-123", "x-mode": "FAST"}) == "b"
    assert who("/h", {"x-id": "ab-12", "x-mode": "fast"}) == "a"
    assert who("/h", {"x-id": "ab-123", "x-mode": "faster"}) == "a"
    assert who("/q?v=v2.1") == "b"
    assert who("/q?v=v2.") == "a"


def test_regex_rewrite(procs, upstream):
    """RouteAction.regex_rewrite and RedirectAction.regex_rewrite: RE2's
    GlobalReplace on the path with \\N groups; the query is kept."""
    routes = r"""- match: { prefix: /svc/ }
  route:
    cluster: b
    regex_rewrite: { pattern: { regex: '^/svc/([a-z]+)/v(\d+)$' }, substitution: '/\1' }
- match: { prefix: /X }
  route:
    cluster: b
    regex_rewrite: { pattern: { regex: 'X+' }, substitution: '' }
- match: { prefix: /old/ }
  redirect:
    regex_rewrite: { pattern: { regex: '^/old/(\d+)/(.*)$' }, substitution: '/new/\2/\1' }
    response_code: FOUND
"""
    port, _ = start(procs, routes, {"b": [upstream.port]})
    r, body = req(port, "/svc/echo/v2?x=/svc/a/v1")
    assert r.status == 200, body
    echo = json.loads(body)
    assert echo["path"] == "/echo?x=/svc/a/v1"
    assert echo_headers(body)["x-envoy-original-path"] == "/svc/echo/v2?x=/svc/a/v1"
    # every match is replaced
    r, body = req(port, "/XXeXcXhXoX?a=X")
    assert r.status == 200, body
    assert json.loads(body)["path"] == "/echo?a=X"
    # no match: the path is left alone
    r, body = req(port, "/svc/echo/latest")
    assert r.status == 200 and body == b"hello from upstream\n"
    r, _ = req(port, "/old/12/page?q=1", headers={"Host": "example.com"})
    assert r.status == 302
    assert r.getheader("location") == "http://example.com/new/page/12?q=1"


def test_regex_config_errors(procs):
    """RE2's error text and Envoy's program size limits, with the field path."""
    import subprocess
    import tempfile
    from conftest import SHARP

    def validate(routes, extra=""):
        y = extra + bootstrap_yaml(free_port(), free_port(), {"b": [1]}, routes=routes)
        d = tempfile.mkdtemp()
        with open(d + "/c.yaml", "w") as f:
            f.write(y)
        r = subprocess.run([SHARP, "--mode", "validate", "-c", d + "/c.yaml"], capture_output=True, timeout=20)
        return r.returncode, (r.stdout + r.stderr).decode()

    rc, out = validate("- match: { safe_regex: { regex: '/a(' } }\n  route: { cluster: b }\n")
    assert rc == 1
    assert "routes[0].match.safe_regex.regex: invalid regex '/a(': missing ): /a(" in out, out
    big = r"- match: { safe_regex: { regex: '/\p{L}+' } }" + "\n  route: { cluster: b }\n"
    rc, out = validate(big)
    assert rc == 1
    assert "routes[0].match.safe_regex.regex: regex '/\\p{L}+' RE2 program size of " in out, out
    assert ("> max program size of 100 set for the error level threshold. Increase configured max "
            "program size if necessary.") in out, out
    # the deprecated per-matcher limit, and the runtime's error level
    rc, out = validate(big.replace("safe_regex: {", "safe_regex: { google_re2: { max_program_size: 5000 },"))
    assert rc == 0, out
    rc, out = validate(big.replace("safe_regex: {", "safe_regex: { google_re2: { max_program_size: 50 },"))
    assert rc == 1 and "> max program size of 50. Increase configured" in out, out
    runtime = "layered_runtime:\n  layers:\n  - name: static\n    static_layer:\n      re2.max_program_size.error_level: %s\n"
    rc, out = validate(big, runtime % 5000)
    assert rc == 0, out
    rc, out = validate("- match: { safe_regex: { regex: '/abcdef' } }\n  route: { cluster: b }\n", runtime % 5)
    assert rc == 1 and "> max program size of 5 set for the error level threshold" in out, out
    nested = "layered_runtime:\n  layers:\n  - name: s\n    static_layer: { re2: { max_program_size: { error_level: 5000 } } }\n"
    rc, out = validate(big, nested)
    assert rc == 0, out
    # a later layer overrides an earlier one
    rc, out = validate(big, nested + "  - name: t\n    static_layer: { re2.max_program_size.error_level: 5 }\n")
    assert rc == 1 and "> max program size of 5 set for the error level threshold" in out, out
    rc, out = validate(big, runtime % "-1")
    assert rc == 1 and "layered_runtime.layers[0].static_layer.re2.max_program_size.error_level: must be a " \
                       "non-negative integer" in out, out
    rc, out = validate("- match: { prefix: / }\n  route: { cluster: b, regex_rewrite: "
                       "{ pattern: { regex: '(a)' }, substitution: '\\3' } }\n")
    assert rc == 1 and "route.regex_rewrite.substitution: invalid substitution" in out, out


@protos("h1", "h2-down")  # the virtual host from :authority
def test_domains_and_vhost_selection(procs, proto, upstream):
    listen, admin = free_port(), free_port()
    y = bootstrap_yaml(listen, admin, {"b": [upstream.port]})
    # add a second virtual host ahead of the catch-all
    y = y.replace("            virtual_hosts:\n", """            virtual_hosts:
            - name: api
              domains: ["api.example.com", "*.svc.local"]
              routes:
              - match: { prefix: "/" }
                direct_response: { status: 200, body: { inline_string: "api vhost" } }
""")
    run_sharp_config(procs, y, admin)
    assert req(listen, "/", proto=proto, headers={"Host": "api.example.com"})[1] == b"api vhost"
    assert req(listen, "/", proto=proto, headers={"Host": "API.EXAMPLE.COM"})[1] == b"api vhost"
    assert req(listen, "/", proto=proto, headers={"Host": "x.svc.local"})[1] == b"api vhost"
    assert req(listen, "/", proto=proto, headers={"Host": "other"})[1] == b"hello from upstream\n"


@protos("h1", "h2-down")  # redirects built from :authority
def test_direct_response_and_redirect(procs, proto, upstream):
    routes = """\
- match: { prefix: "/direct" }
  direct_response: { status: 418, body: { inline_string: "teapot" } }
- match: { prefix: "/old" }
  redirect: { prefix_rewrite: "/new", response_code: FOUND }
- match: { prefix: "/secure" }
  redirect: { https_redirect: true }
- match: { prefix: "/" }
  route: { cluster: b }
"""
    port, _ = start(procs, routes, {"b": [upstream.port]})
    r, body = req(port, "/direct", proto=proto)
    assert r.status == 418 and body == b"teapot"
    r, _ = req(port, "/old/page?x=1", proto=proto, headers={"Host": "example.com"})
    assert r.status == 302
    assert r.getheader("location") == "http://example.com/new/page?x=1"
    r, _ = req(port, "/secure", proto=proto, headers={"Host": "example.com"})
    assert r.status == 301
    assert r.getheader("location") == "https://example.com/secure"


@protos("h1", "h2-both")  # host_rewrite_literal becomes the upstream's :authority
def test_rewrites_and_header_mutations(procs, proto, upstream):
    routes = """\
- match: { prefix: "/api" }
  route: { cluster: b, prefix_rewrite: "/echo", host_rewrite_literal: "internal.svc" }
  request_headers_to_add:
  - header: { key: x-route, value: r1 }
  response_headers_to_add:
  - header: { key: x-resp, value: added }
  response_headers_to_remove: [x-upstream-name]
  request_headers_to_remove: [x-secret]
"""
    vhost_extra = """\
request_headers_to_add:
- header: { key: x-vhost, value: v1 }
  append_action: OVERWRITE_IF_EXISTS_OR_ADD
"""
    if proto.up == "h2":
        upstream = proto.upstream(procs)
    port, _ = start(procs, routes, {"b": [upstream.port]}, vhost_extra=vhost_extra, cluster_extra=proto.cluster)
    r, body = req(port, "/api?thing=1", proto=proto, headers={"x-secret": "s", "x-vhost": "client"})
    assert r.status == 200
    echo = json.loads(body)
    h = echo_headers(body)
    assert echo["path"] == "/echo?thing=1"
    assert h["host"] == "internal.svc"
    assert h["x-envoy-original-path"] == "/api?thing=1"
    assert h["x-route"] == "r1"
    assert h["x-vhost"] == "v1"
    assert "x-secret" not in h
    assert r.getheader("x-resp") == "added"
    assert r.getheader("x-upstream-name") is None


def test_weighted_clusters(procs):
    a, b = Upstream("a"), Upstream("b")
    procs += [a, b]
    routes = """\
- match: { prefix: "/" }
  route:
    weighted_clusters:
      clusters:
      - { name: a, weight: 80 }
      - { name: b, weight: 20 }
"""
    port, _ = start(procs, routes, {"a": [a.port], "b": [b.port]})
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    seen = Counter()
    for _ in range(400):
        c.request("GET", "/")
        r = c.getresponse()
        r.read()
        seen[r.getheader("x-upstream-name")] += 1
    assert 250 < seen["a"] < 370, seen
    assert seen["a"] + seen["b"] == 400


def test_round_robin_and_least_request(procs):
    ups = [Upstream(f"u{i}") for i in range(3)]
    procs += ups
    for policy in ("ROUND_ROBIN", "LEAST_REQUEST", "RANDOM"):
        listen, admin = free_port(), free_port()
        y = bootstrap_yaml(listen, admin, {"b": [u.port for u in ups]}, cluster_extra=f"lb_policy: {policy}\n")
        s = run_sharp_config(procs, y, admin, concurrency=1)
        c = http.client.HTTPConnection("127.0.0.1", listen, timeout=5)
        seen = Counter()
        for _ in range(300):
            c.request("GET", "/")
            r = c.getresponse()
            r.read()
            seen[r.getheader("x-upstream-name")] += 1
        assert set(seen) == {"u0", "u1", "u2"}, (policy, seen)
        if policy == "ROUND_ROBIN":
            assert all(v == 100 for v in seen.values()), seen
        c.close()  # SIGTERM drains: an open connection would hold the stop for the drain time
        s.stop()
