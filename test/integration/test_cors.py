"""envoy.filters.http.cors in the data path: preflights answered by SHARP
(200, no body, access-control-allow-* headers, max-age, credentials,
private network access, "*" echoing the request), preflights with an origin
not allowed (forwarded upstream by default, answered without
access-control-allow-origin with forward_not_matching_preflights: false),
actual requests getting access-control-allow-origin/-credentials/
-expose-headers on the upstream's response, origin matchers, the precedence
of route over virtual host and of typed_per_filter_config over the
deprecated cors field, filter_enabled 0% and its runtime key, shadow mode,
direct responses passed over, the origin_valid/origin_invalid stats, bad
configs refused, and the Envoy corpus files that use CORS."""
import glob
import json
import os
import urllib.request

import pytest

from conftest import (PROTOS, bootstrap_yaml, file_access_log, free_port, log_lines, protos, run_sharp_config, stat,
                      validate_config)

H1 = PROTOS["h1"]
POLICY = "type.googleapis.com/envoy.extensions.filters.http.cors.v3.CorsPolicy"
CORS = "type.googleapis.com/envoy.extensions.filters.http.cors.v3.Cors"
CORPUS = next((d for d in (os.path.normpath(os.path.join(os.path.dirname(__file__), "..", "..", "..", "shared",
                                                        "envoy-corpus")), "/work/shared/envoy-corpus")
               if os.path.isdir(d)), "/work/shared/envoy-corpus")
ADMIN_LAYER = "layered_runtime:\n  layers:\n  - name: admin\n    admin_layer: {}\n"


def indent(text, n):
    return "".join(" " * n + ln + "\n" for ln in text.splitlines())


def typed_policy(body):
    """A typed_per_filter_config map with a CorsPolicy for the filter."""
    return "typed_per_filter_config:\n  envoy.filters.http.cors:\n    \"@type\": " + POLICY + "\n" + indent(body, 4)


def with_cors(yaml_text, name="envoy.filters.http.cors"):
    f = f"- name: {name}\n  typed_config:\n    \"@type\": {CORS}\n"
    return yaml_text.replace("          http_filters:\n", "          http_filters:\n" + indent(f, 10))


def start(procs, upstream, routes=None, vhost_extra="", extra="", filt=True, cluster_extra="", hcm_extra=""):
    listen, admin = free_port(), free_port()
    y = bootstrap_yaml(listen, admin, {"backend": [upstream.port]}, routes=routes, vhost_extra=vhost_extra,
                       cluster_extra=cluster_extra, hcm_extra=hcm_extra)
    if filt:
        y = with_cors(y)
    run_sharp_config(procs, y + extra, admin)
    return listen, admin


def preflight(proto, port, path="/echo", origin="https://a.example", method="PUT", extra=None):
    h = {"origin": origin, "access-control-request-method": method}
    h.update(extra or {})
    return proto.request(port, path, method="OPTIONS", headers=h)


def upstream_saw(body):
    """The request as the echo upstream saw it, or None (not upstream)."""
    try:
        return json.loads(body)
    except ValueError:
        return None


ROUTE = '- match: { prefix: "/" }\n  route: { cluster: backend }\n'

FULL = """\
allow_origin_string_match:
- exact: https://a.example
- suffix: .b.example
- safe_regex: { regex: "https://c[0-9]+\\\\.example" }
allow_methods: GET,PUT
allow_headers: x-one,x-two
expose_headers: x-exposed
max_age: "600"
allow_credentials: true
allow_private_network_access: true
"""


@protos("h1", "h2-down")
def test_preflight_allowed(procs, upstream, proto):
    """An allowed preflight is answered by SHARP: 200 without body and
    without reaching the upstream, with every configured header; the answer
    passes the filter's own response step, so expose-headers is on it too
    (as in Envoy)."""
    port, admin = start(procs, upstream, vhost_extra=typed_policy(FULL))
    s, h, b = preflight(proto, port, extra={"access-control-request-private-network": "true"})
    assert s == 200 and b == b""
    assert "x-upstream-name" not in h
    assert h["access-control-allow-origin"] == "https://a.example"
    assert h["access-control-allow-methods"] == "GET,PUT"
    assert h["access-control-allow-headers"] == "x-one,x-two"
    assert h["access-control-max-age"] == "600"
    assert h["access-control-allow-credentials"] == "true"
    assert h["access-control-allow-private-network"] == "true"
    assert h["access-control-expose-headers"] == "x-exposed"
    # the other matchers
    for origin in ("https://x.b.example", "https://c42.example"):
        s, h, _ = preflight(proto, port, origin=origin)
        assert s == 200 and h["access-control-allow-origin"] == origin
        # no access-control-request-private-network: no answer for it
        assert "access-control-allow-private-network" not in h
    assert stat(admin, "http.ingress_http.cors.origin_valid") == 3
    assert stat(admin, "http.ingress_http.cors.origin_invalid") == 0


def test_preflight_not_allowed_forwarded_or_answered(procs, upstream):
    """An origin no matcher allows: by default the preflight goes upstream
    untouched (no CORS headers on the answer); with
    forward_not_matching_preflights false SHARP answers 200 with the other
    headers but no access-control-allow-origin."""
    port, admin = start(procs, upstream, vhost_extra=typed_policy(FULL))
    s, h, b = preflight(H1, port, origin="https://evil.example")
    saw = upstream_saw(b)
    assert s == 200 and saw and saw["method"] == "OPTIONS"
    assert not [k for k in h if k.startswith("access-control-")]
    assert stat(admin, "http.ingress_http.cors.origin_invalid") == 1

    port, admin = start(procs, upstream, vhost_extra=typed_policy(FULL + "forward_not_matching_preflights: false\n"))
    s, h, b = preflight(H1, port, origin="https://evil.example")
    assert s == 200 and b == b"" and "x-upstream-name" not in h
    assert "access-control-allow-origin" not in h and "access-control-expose-headers" not in h
    assert h["access-control-allow-methods"] == "GET,PUT"
    assert h["access-control-allow-credentials"] == "true"


@protos("h1", "h2-down")
def test_actual_request_headers(procs, upstream, proto):
    """A request with an allowed Origin goes upstream (with its Origin) and
    its response gets allow-origin, allow-credentials and expose-headers;
    a disallowed origin's response gets none; a request without Origin is
    not counted."""
    port, admin = start(procs, upstream, vhost_extra=typed_policy(FULL))
    s, h, b = proto.request(port, "/echo", headers={"origin": "https://a.example"})
    assert s == 200 and upstream_saw(b)
    assert h["access-control-allow-origin"] == "https://a.example"
    assert h["access-control-allow-credentials"] == "true"
    assert h["access-control-expose-headers"] == "x-exposed"
    assert "access-control-allow-methods" not in h and "access-control-max-age" not in h
    s, h, _ = proto.request(port, "/echo", headers={"origin": "https://evil.example"})
    assert s == 200 and not [k for k in h if k.startswith("access-control-")]
    s, h, _ = proto.request(port, "/echo")
    assert s == 200 and not [k for k in h if k.startswith("access-control-")]
    assert stat(admin, "http.ingress_http.cors.origin_valid") == 1
    assert stat(admin, "http.ingress_http.cors.origin_invalid") == 1


def test_options_without_request_method_goes_upstream(procs, upstream):
    """OPTIONS without Access-Control-Request-Method is not a preflight: it
    goes upstream and its response gets the CORS headers of an actual
    request."""
    port, _ = start(procs, upstream, vhost_extra=typed_policy(FULL))
    s, h, b = H1.request(port, "/echo", method="OPTIONS", headers={"origin": "https://a.example"})
    assert s == 200 and upstream_saw(b)["method"] == "OPTIONS"
    assert h["access-control-allow-origin"] == "https://a.example"
    assert "access-control-allow-methods" not in h


def test_wildcards_echo_the_request(procs, upstream):
    """allow_methods/allow_headers "*" answer with the preflight's
    access-control-request-method/-headers; an origin matcher matching "*"
    allows every origin; without credentials/max_age none is sent."""
    pol = 'allow_origin_string_match: [{ exact: "*" }]\nallow_methods: "*"\nallow_headers: "*"\n'
    port, _ = start(procs, upstream, vhost_extra=typed_policy(pol))
    s, h, _ = preflight(H1, port, origin="https://any.example", method="PATCH",
                        extra={"access-control-request-headers": "x-a,x-b"})
    assert s == 200
    assert h["access-control-allow-origin"] == "https://any.example"
    assert h["access-control-allow-methods"] == "PATCH"
    assert h["access-control-allow-headers"] == "x-a,x-b"
    for k in ("access-control-allow-credentials", "access-control-max-age", "access-control-expose-headers"):
        assert k not in h


def test_route_over_virtual_host(procs, upstream):
    """The route's policy comes first, attribute by attribute: its origins
    and methods, the virtual host's max_age and expose_headers where the
    route sets none; a route without a policy uses the virtual host's."""
    vh = typed_policy('allow_origin_string_match: [{ exact: https://vh.example }]\n'
                      'allow_methods: GET\nmax_age: "100"\nexpose_headers: x-vh\n')
    routes = ('- match: { prefix: "/r" }\n  route: { cluster: backend }\n' +
              indent(typed_policy('allow_origin_string_match: [{ exact: https://route.example }]\n'
                                  'allow_methods: POST\n'), 2) + ROUTE)
    port, _ = start(procs, upstream, routes=routes, vhost_extra=vh)
    s, h, _ = preflight(H1, port, path="/r", origin="https://route.example")
    assert s == 200 and h["access-control-allow-origin"] == "https://route.example"
    assert h["access-control-allow-methods"] == "POST" and h["access-control-max-age"] == "100"
    assert h["access-control-expose-headers"] == "x-vh"
    # the route's origins replace the virtual host's: vh.example goes upstream
    s, h, b = preflight(H1, port, path="/r", origin="https://vh.example")
    assert "x-upstream-name" in h and "access-control-allow-origin" not in h
    s, h, _ = preflight(H1, port, path="/other", origin="https://vh.example")
    assert h["access-control-allow-origin"] == "https://vh.example"
    assert h["access-control-allow-methods"] == "GET"


def test_deprecated_cors_field(procs, upstream):
    """The route's and virtual host's cors field (route over virtual
    host); a typed_per_filter_config policy at any level replaces both."""
    vh = ('cors:\n  allow_origin_string_match: [{ exact: https://vh.example }]\n'
          '  allow_methods: GET\n  max_age: "50"\n')
    routes = ('- match: { prefix: "/r" }\n  route:\n    cluster: backend\n    cors:\n'
              '      allow_origin_string_match: [{ prefix: https://route }]\n      allow_credentials: true\n'
              '- match: { prefix: "/typed" }\n  route:\n    cluster: backend\n    cors:\n'
              '      allow_origin_string_match: [{ exact: https://route.example }]\n' +
              indent(typed_policy('allow_origin_string_match: [{ exact: https://typed.example }]\n'), 2) + ROUTE)
    port, admin = start(procs, upstream, routes=routes, vhost_extra=vh)
    s, h, _ = preflight(H1, port, path="/r", origin="https://route.example")
    assert h["access-control-allow-origin"] == "https://route.example"
    assert h["access-control-allow-credentials"] == "true"
    assert h["access-control-allow-methods"] == "GET" and h["access-control-max-age"] == "50"
    s, h, _ = H1.request(port, "/other", headers={"origin": "https://vh.example"})
    assert h["access-control-allow-origin"] == "https://vh.example"
    # typed policy wins: the route's and the virtual host's cors are not used
    s, h, b = preflight(H1, port, path="/typed", origin="https://route.example")
    assert "x-upstream-name" in h and "access-control-allow-origin" not in h
    s, h, _ = preflight(H1, port, path="/typed", origin="https://typed.example")
    assert h["access-control-allow-origin"] == "https://typed.example"
    assert "access-control-allow-methods" not in h
    # without the filter in the chain, the cors field does nothing
    port, _ = start(procs, upstream, routes=routes, vhost_extra=vh, filt=False)
    s, h, b = preflight(H1, port, path="/r", origin="https://route.example")
    assert "x-upstream-name" in h and "access-control-allow-origin" not in h


def test_filter_enabled_zero_and_runtime(procs, upstream):
    """filter_enabled 0%: nothing done and nothing counted; its runtime key
    turns it on."""
    pol = FULL + "filter_enabled: { runtime_key: cors.on, default_value: { numerator: 0 } }\n"
    port, admin = start(procs, upstream, vhost_extra=typed_policy(pol), extra=ADMIN_LAYER)
    s, h, b = preflight(H1, port)
    assert "x-upstream-name" in h and not [k for k in h if k.startswith("access-control-")]
    s, h, _ = H1.request(port, "/echo", headers={"origin": "https://a.example"})
    assert "access-control-allow-origin" not in h
    assert not stat(admin, "http.ingress_http.cors.origin_valid")
    with urllib.request.urlopen(urllib.request.Request(f"http://127.0.0.1:{admin}/runtime_modify?cors.on=100",
                                                       method="POST"), timeout=5) as r:
        assert r.status == 200
    s, h, b = preflight(H1, port)
    assert b == b"" and h["access-control-allow-origin"] == "https://a.example"
    assert stat(admin, "http.ingress_http.cors.origin_valid") == 1


def test_shadow_mode(procs, upstream):
    """shadow_enabled 100% with filter_enabled 0%: origins are evaluated and
    counted, nothing is enforced (preflights go upstream, no headers)."""
    pol = (FULL + "filter_enabled: { default_value: { numerator: 0 } }\n"
           "shadow_enabled: { default_value: { numerator: 100 } }\n")
    port, admin = start(procs, upstream, vhost_extra=typed_policy(pol))
    s, h, b = preflight(H1, port)
    assert "x-upstream-name" in h and not [k for k in h if k.startswith("access-control-")]
    s, h, _ = H1.request(port, "/echo", headers={"origin": "https://evil.example"})
    assert not [k for k in h if k.startswith("access-control-")]
    assert stat(admin, "http.ingress_http.cors.origin_valid") == 1
    assert stat(admin, "http.ingress_http.cors.origin_invalid") == 1
    # both on: filter_enabled takes precedence
    pol = FULL + "shadow_enabled: { default_value: { numerator: 100 } }\n"
    port, admin = start(procs, upstream, vhost_extra=typed_policy(pol))
    s, h, b = preflight(H1, port)
    assert b == b"" and h["access-control-allow-origin"] == "https://a.example"


def test_access_log_details_and_weighted_cluster(procs, upstream):
    """The preflight answer's response code details are "cors_response"
    (Envoy's); a weighted cluster's policy is the most specific level."""
    al, path = file_access_log("%RESPONSE_CODE% %RESPONSE_CODE_DETAILS% %UPSTREAM_CLUSTER%\\n")
    routes = ('- match: { prefix: "/" }\n  route:\n    weighted_clusters:\n      clusters:\n'
              '      - name: backend\n        weight: 1\n' +
              indent(typed_policy('allow_origin_string_match: [{ exact: https://wc.example }]\n'), 8))
    port, _ = start(procs, upstream, routes=routes, vhost_extra=typed_policy(FULL), hcm_extra=al)
    s, h, b = preflight(H1, port, origin="https://wc.example")
    assert s == 200 and b == b"" and h["access-control-allow-origin"] == "https://wc.example"
    # attributes the weighted cluster's policy lacks come from the virtual host's
    assert h["access-control-allow-methods"] == "GET,PUT"
    s, h, _ = preflight(H1, port, origin="https://a.example")
    assert "x-upstream-name" in h and "access-control-allow-origin" not in h
    lines = sorted(log_lines(path, 2))
    assert lines[0].startswith("200 cors_response ") and "via_upstream" in lines[1], lines


def test_filters_after_cors_see_the_answer(procs, upstream):
    """The preflight answer passes the encode side of the filters after
    the CORS filter too (as Envoy's), here a compressor that leaves a
    headers-only answer alone; an actual request's body is compressed and
    gets the CORS headers."""
    comp = ("- name: envoy.filters.http.compressor\n  typed_config:\n"
            "    \"@type\": type.googleapis.com/envoy.extensions.filters.http.compressor.v3.Compressor\n"
            "    compressor_library:\n      name: gzip\n      typed_config:\n"
            "        \"@type\": type.googleapis.com/envoy.extensions.compression.gzip.compressor.v3.Gzip\n")
    listen, admin = free_port(), free_port()
    y = bootstrap_yaml(listen, admin, {"backend": [upstream.port]}, vhost_extra=typed_policy(FULL))
    y = with_cors(y.replace("          http_filters:\n", "          http_filters:\n" + indent(comp, 10)))
    assert y.index("envoy.filters.http.cors") < y.index("envoy.filters.http.compressor")
    run_sharp_config(procs, y, admin)
    s, h, b = preflight(H1, listen, extra={"accept-encoding": "gzip"})
    assert s == 200 and b == b"" and "content-encoding" not in h
    assert h["access-control-allow-origin"] == "https://a.example"
    s, h, b = H1.request(listen, "/bytes/4000?hdr=content-type:text/plain",
                         headers={"origin": "https://a.example", "accept-encoding": "gzip"})
    assert s == 200 and h.get("content-encoding") == "gzip"
    assert h["access-control-allow-origin"] == "https://a.example"


def test_direct_response_passed_over(procs, upstream):
    """A direct response route has no route entry: the filter does
    nothing there, as in Envoy."""
    routes = '- match: { prefix: "/direct" }\n  direct_response: { status: 204 }\n' + ROUTE
    port, admin = start(procs, upstream, routes=routes, vhost_extra=typed_policy(FULL))
    s, h, _ = preflight(H1, port, path="/direct")
    assert s == 204 and not [k for k in h if k.startswith("access-control-")]
    assert not stat(admin, "http.ingress_http.cors.origin_valid")


def test_route_disables_filter(procs, upstream):
    """A FilterConfig disabling the filter on a route takes it out there."""
    routes = ('- match: { prefix: "/off" }\n  route: { cluster: backend }\n  typed_per_filter_config:\n'
              '    envoy.filters.http.cors:\n      "@type": type.googleapis.com/envoy.config.route.v3.FilterConfig\n'
              '      disabled: true\n' + ROUTE)
    port, _ = start(procs, upstream, routes=routes, vhost_extra=typed_policy(FULL))
    s, h, b = preflight(H1, port, path="/off")
    assert "x-upstream-name" in h and "access-control-allow-origin" not in h
    s, h, b = preflight(H1, port, path="/on")
    assert b == b"" and h["access-control-allow-origin"] == "https://a.example"


def test_preflight_with_body_and_keepalive(procs, upstream):
    """A preflight answered locally keeps the HTTP/1.1 connection when the
    request is complete: a second request on it goes upstream."""
    import http.client
    port, _ = start(procs, upstream, vhost_extra=typed_policy(FULL))
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        c.request("OPTIONS", "/echo", headers={"origin": "https://a.example", "access-control-request-method": "GET"})
        r = c.getresponse()
        assert r.status == 200 and r.read() == b"" and r.getheader("content-length") == "0"
        c.request("GET", "/echo", headers={"origin": "https://a.example"})
        r = c.getresponse()
        assert r.status == 200 and upstream_saw(r.read())
        assert r.getheader("access-control-allow-origin") == "https://a.example"
    finally:
        c.close()


def base_config(routes=ROUTE, vhost_extra=""):
    y = bootstrap_yaml(free_port(), free_port(), {"backend": [free_port()]}, routes=routes, vhost_extra=vhost_extra)
    return with_cors(y)


@pytest.mark.parametrize("vhost_extra,routes,message", [
    (typed_policy("allow_origin_string_match: [{ suffix: \"\" }]\n"), ROUTE,
     "allow_origin_string_match[0].suffix: must be at least 1 character long"),
    (typed_policy("allow_origin_string_match: [{ safe_regex: { regex: \"(\" } }]\n"), ROUTE,
     "allow_origin_string_match[0].safe_regex.regex"),
    (typed_policy("filter_enabled: { runtime_key: k }\n"), ROUTE, "filter_enabled.default_value: is required"),
    (typed_policy("allow_origin: [x]\n"), ROUTE, "allow_origin"),
    ("cors:\n  shadow_enabled: { runtime_key: k }\n", ROUTE, "cors.shadow_enabled.default_value: is required"),
    ("", '- match: { prefix: "/" }\n  route:\n    cluster: backend\n    cors:\n'
         '      allow_origin_string_match: [{ prefix: "" }]\n',
     "routes[0].route.cors.allow_origin_string_match[0].prefix: must be at least 1 character long"),
], ids=["empty-suffix", "bad-regex", "no-default", "unknown-field", "vh-shadow", "route-prefix"])
def test_bad_configs_refused(vhost_extra, routes, message):
    rc, out = validate_config(base_config(routes, vhost_extra))
    assert rc != 0 and message in out, out


def test_filter_config_takes_no_fields_and_validates():
    rc, out = validate_config(base_config(vhost_extra=typed_policy(FULL)))
    assert rc == 0, out
    y = base_config().replace(f"\"@type\": {CORS}\n", f"\"@type\": {CORS}\n              allow_methods: GET\n")
    rc, out = validate_config(y)
    assert rc != 0 and "allow_methods" in out, out


CORPUS_FILES = sorted(f for f in glob.glob(os.path.join(CORPUS, "*")) if os.path.isfile(f) and
                      "envoy.filters.http.cors" in open(f, errors="replace").read())


@pytest.mark.skipif(not CORPUS_FILES, reason="no Envoy corpus file uses the CORS filter")
def test_corpus_files_with_cors():
    """Every corpus bootstrap that uses the CORS filter gets past it: any
    refusal names something other than CORS."""
    for path in CORPUS_FILES:
        text = open(path, errors="replace").read()
        rc, out = validate_config(text, suffix=os.path.splitext(path)[1] or ".yaml")
        if rc != 0:
            low = out.lower()
            assert "cors" not in low, (path, out)
    # Envoy's CORS example, both sides
    for name in ("examples__cors__backend__envoy.yaml", "examples__cors__frontend__envoy.yaml"):
        path = os.path.join(CORPUS, name)
        if os.path.exists(path):
            rc, out = validate_config(open(path).read())
            assert rc == 0, (name, out)
