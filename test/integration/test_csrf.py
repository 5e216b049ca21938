"""envoy.filters.http.csrf in the data path: mutating requests (POST, PUT,
DELETE, PATCH) whose Origin, or else Referer, names the request's host
(Host over HTTP/1.1, :authority over HTTP/2, with its port) go upstream,
others get 403 "Invalid origin" from SHARP; safe methods pass unchecked;
additional_origins; shadow mode (counted, not enforced); per-route and
virtual host policies over the filter's, filter_enabled 0% and its runtime
key; Envoy's stats csrf.missing_source_origin, request_invalid and
request_valid; the config rules and the Envoy corpus example."""
import os
import urllib.request

from conftest import PROTOS, bootstrap_yaml, free_port, protos, run_sharp_config, stat, validate_config

H1 = PROTOS["h1"]
CSRF = "type.googleapis.com/envoy.extensions.filters.http.csrf.v3.CsrfPolicy"
CORPUS = "/work/shared/envoy-corpus"
ADMIN_LAYER = "layered_runtime:\n  layers:\n  - name: admin\n    admin_layer: {}\n"


def indent(text, n):
    return "".join(" " * n + ln + "\n" for ln in text.splitlines())


def policy(enabled=100, shadow=None, origins=(), key=None):
    p = f"filter_enabled:\n  default_value: {{ numerator: {enabled}, denominator: HUNDRED }}\n"
    if key:
        p += f"  runtime_key: {key}\n"
    if shadow is not None:
        p += f"shadow_enabled:\n  default_value: {{ numerator: {shadow}, denominator: HUNDRED }}\n"
    if origins:
        p += "additional_origins:\n" + "".join(f"- {o}\n" for o in origins)
    return p


def per_filter(body):
    return f"typed_per_filter_config:\n  envoy.filters.http.csrf:\n    \"@type\": {CSRF}\n" + indent(body, 4)


def start(procs, upstream, filter_policy=None, routes=None, vhost_extra="", extra="", cluster_extra=""):
    listen, admin = free_port(), free_port()
    y = bootstrap_yaml(listen, admin, {"backend": [upstream.port]}, routes=routes, vhost_extra=vhost_extra,
                       cluster_extra=cluster_extra)
    f = f"- name: envoy.filters.http.csrf\n  typed_config:\n    \"@type\": {CSRF}\n" + indent(
        filter_policy if filter_policy is not None else policy(), 4)
    y = y.replace("          http_filters:\n", "          http_filters:\n" + indent(f, 10))
    run_sharp_config(procs, y + extra, admin)
    return listen, admin


def counts(admin):
    return {n: stat(admin, f"http.ingress_http.csrf.{n}")
            for n in ("missing_source_origin", "request_invalid", "request_valid")}


@protos("h1", "h2-down", "h2-both")
def test_origin_checked(procs, proto):
    """Same origin (scheme and path ignored, the port part of the host)
    passes; another host or port, or no source at all, gets 403 "Invalid
    origin"; Referer stands in for a missing Origin; GET is not checked."""
    u = proto.upstream(procs)
    listen, admin = start(procs, u, cluster_extra=proto.cluster)
    host = f"127.0.0.1:{listen}"

    def req(method="POST", **h):
        return proto.request(listen, "/echo", method=method, headers={"host": host, **h}, body=b"x=1")

    st, h, body = req(origin=f"http://{host}")
    assert st == 200
    st, h, body = req("DELETE", origin=f"https://{host}/some/path")
    assert st == 200
    st, h, body = req("PATCH", referer=f"http://{host}/form?a=b")
    assert st == 200
    st, h, body = req("PUT", origin="http://evil.example")
    assert (st, body) == (403, b"Invalid origin")
    st, h, body = req(origin="http://127.0.0.1:1")  # another port
    assert st == 403
    st, h, body = req(origin="http://evil.example", referer=f"http://{host}/")  # Origin wins
    assert st == 403
    st, h, body = req()  # neither
    assert (st, body) == (403, b"Invalid origin")
    st, h, body = req("GET", origin="http://evil.example")
    assert st == 200
    st, h, body = req(origin="null")
    assert st == 403
    assert counts(admin) == {"missing_source_origin": 1, "request_invalid": 5, "request_valid": 3}


def test_host_without_port_and_additional_origins(procs, upstream):
    """A Host without a port is compared as it is; additional_origins
    matchers see the source's host and port."""
    listen, admin = start(procs, upstream, policy(origins=['exact: "partner.example:8443"',
                                                           'safe_regex: { regex: ".*\\\\.trusted\\\\.example" }']))

    def req(origin, host="shop.example"):
        return H1.request(listen, "/echo", method="POST", headers={"host": host, "origin": origin}, body=b"")

    assert req("https://shop.example")[0] == 200
    assert req("https://shop.example:443")[0] == 403
    assert req("https://partner.example:8443/x")[0] == 200
    assert req("https://partner.example")[0] == 403
    assert req("http://a.trusted.example")[0] == 200
    assert req("http://trusted.example.evil")[0] == 403
    assert counts(admin) == {"missing_source_origin": 0, "request_invalid": 3, "request_valid": 3}


def test_shadow_and_disabled(procs, upstream):
    """filter_enabled 0% with shadow 100%: invalid requests go upstream
    but are counted; with both off nothing is checked or counted."""
    listen, admin = start(procs, upstream, policy(enabled=0, shadow=100))
    st, h, body = H1.request(listen, "/echo", method="POST", headers={"origin": "http://evil.example"}, body=b"")
    assert st == 200
    st, h, body = H1.request(listen, "/echo", method="POST", headers={}, body=b"")
    assert st == 200
    assert counts(admin) == {"missing_source_origin": 1, "request_invalid": 2, "request_valid": 0}
    listen, admin = start(procs, upstream, policy(enabled=0))
    st, h, body = H1.request(listen, "/echo", method="POST", headers={"origin": "http://evil.example"}, body=b"")
    assert st == 200
    assert counts(admin) == {"missing_source_origin": 0, "request_invalid": 0, "request_valid": 0}


def test_per_route_policies(procs, upstream):
    """The route's CsrfPolicy over the virtual host's over the filter's
    (off here): the route disables, the virtual host enforces, another
    route shadows."""
    routes = ('- match: { prefix: "/open" }\n  route: { cluster: backend }\n'
              + indent(per_filter(policy(enabled=0)), 2)
              + '- match: { prefix: "/shadow" }\n  route: { cluster: backend }\n'
              + indent(per_filter(policy(enabled=0, shadow=100)), 2)
              + '- match: { prefix: "/" }\n  route: { cluster: backend }\n')
    listen, admin = start(procs, upstream, policy(enabled=0), routes=routes, vhost_extra=per_filter(policy()))
    bad = {"origin": "http://evil.example"}
    assert H1.request(listen, "/echo", method="POST", headers=bad, body=b"")[0] == 403
    assert H1.request(listen, "/open/echo", method="POST", headers=bad, body=b"")[0] == 200
    assert H1.request(listen, "/shadow/echo", method="POST", headers=bad, body=b"")[0] == 200
    assert counts(admin) == {"missing_source_origin": 0, "request_invalid": 2, "request_valid": 0}


def test_runtime_key(procs, upstream):
    """filter_enabled's runtime key: 0 in the admin layer turns the check
    off, 100 back on."""
    listen, admin = start(procs, upstream, policy(key="csrf.on"), extra=ADMIN_LAYER)
    bad = {"origin": "http://evil.example"}
    assert H1.request(listen, "/echo", method="PUT", headers=bad, body=b"")[0] == 403

    def modify(v):
        r = urllib.request.Request(f"http://127.0.0.1:{admin}/runtime_modify?csrf.on={v}", method="POST")
        with urllib.request.urlopen(r, timeout=5) as resp:
            assert resp.status == 200

    modify(0)
    assert H1.request(listen, "/echo", method="PUT", headers=bad, body=b"")[0] == 200
    modify(100)
    assert H1.request(listen, "/echo", method="PUT", headers=bad, body=b"")[0] == 403


def test_config_rules():
    """filter_enabled is required (Envoy's rule), in the filter and per
    route; a bad matcher is named; the corpus example loads."""
    def check(p, vhost_extra=""):
        y = bootstrap_yaml(free_port(), free_port(), {"backend": [free_port()]}, vhost_extra=vhost_extra)
        f = f"- name: envoy.filters.http.csrf\n  typed_config:\n    \"@type\": {CSRF}\n" + indent(p, 4)
        return validate_config(y.replace("          http_filters:\n", "          http_filters:\n" + indent(f, 10)))
    assert check(policy(shadow=0, origins=['prefix: "https://"']))[0] == 0
    rc, out = check("additional_origins: [{ exact: x }]\n")
    assert rc != 0 and "filter_enabled" in out, out
    rc, out = check(policy(), vhost_extra=per_filter("shadow_enabled: { default_value: { numerator: 1 } }\n"))
    assert rc != 0 and "filter_enabled" in out, out
    rc, out = check(policy(origins=['safe_regex: { regex: "(" }']))
    assert rc != 0 and "additional_origins[0]" in out, out
    path = os.path.join(CORPUS, "examples__csrf__samesite__envoy.yaml")
    if os.path.exists(path):
        rc, out = validate_config(open(path).read())
        assert rc == 0, out
