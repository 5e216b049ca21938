"""Per-route filter configuration (typed_per_filter_config) in the data path:
the compressor's CompressorPerRoute (disabled, overrides) at the route
table, virtual host, route and weighted cluster levels, the most specific
winning; the generic FilterConfig turning a filter off on a route (the
compressor, the health check filter) and on where HttpFilter.disabled turns
it off by default; and Envoy's refusals at load (per-route types of filters
SHARP lacks, the router, a type that is not the named filter's, an empty
FilterConfig). Requests go through curl with Accept-Encoding: gzip."""
import json
import subprocess
import zlib

import pytest

from conftest import SLOW, bootstrap_yaml, free_port, run_sharp_config, stat, validate_config

PREFIX = "http.ingress_http.compressor.text.gzip"
CPR = "type.googleapis.com/envoy.extensions.filters.http.compressor.v3.CompressorPerRoute"
FC = "type.googleapis.com/envoy.config.route.v3.FilterConfig"
TEXT = "hdr=content-type:text/plain"


def compressor_filter(extra="", disabled=False):
    text = ("- name: envoy.filters.http.compressor\n"
            + ("  disabled: true\n" if disabled else "")
            + "  typed_config:\n"
              "    \"@type\": type.googleapis.com/envoy.extensions.filters.http.compressor.v3.Compressor\n"
              "    compressor_library:\n"
              "      name: text\n"
              "      typed_config:\n"
              "        \"@type\": type.googleapis.com/envoy.extensions.compression.gzip.compressor.v3.Gzip\n")
    return text + "".join("    " + ln + "\n" for ln in extra.splitlines())


HEALTH_CHECK = ("- name: envoy.filters.http.health_check\n"
                "  typed_config:\n"
                "    \"@type\": type.googleapis.com/envoy.extensions.filters.http.health_check.v3.HealthCheck\n"
                "    pass_through_mode: false\n"
                "    headers:\n"
                "    - name: \":path\"\n"
                "      string_match: { exact: /healthz }\n")


def pfc(entries, indent=0):
    """A typed_per_filter_config map: {filter name: yaml lines of its Any}."""
    out = "typed_per_filter_config:\n"
    for name, body in entries.items():
        out += f"  {name}:\n" + "".join("    " + ln + "\n" for ln in body.splitlines())
    return "".join(" " * indent + ln + "\n" for ln in out.splitlines())


def cpr(body):
    return f"\"@type\": {CPR}\n{body}"


DISABLED = cpr("disabled: true")
ENABLED = cpr("overrides: { response_direction_config: {} }")


def config(listen, admin, up, routes, filters, vhost_extra="", table_extra="", clusters=("backend",)):
    y = bootstrap_yaml(listen, admin, {c: [up] for c in clusters}, routes=routes, vhost_extra=vhost_extra)
    if table_extra:
        y = y.replace("            name: local_route\n",
                      "            name: local_route\n" + "".join("            " + ln + "\n"
                                                                 for ln in table_extra.splitlines()))
    return y.replace("          http_filters:\n",
                     "          http_filters:\n" + "".join("          " + ln + "\n" for ln in filters.splitlines()))


def start(procs, up, routes, filters, **kw):
    listen, admin = free_port(), free_port()
    run_sharp_config(procs, config(listen, admin, up, routes, filters, **kw), admin)
    return listen, admin


def curl(port, path, headers=(), h2=False):
    """curl with Accept-Encoding: gzip and no decoding (HTTP/1.1, or HTTP/2
    with prior knowledge): status, headers (lower-cased names), raw body."""
    args = ["curl", "-sS", "-D", "-", "-o", "-", "-H", "Accept-Encoding: gzip"]
    if h2:
        args.append("--http2-prior-knowledge")
    for h in headers:
        args += ["-H", h]
    r = subprocess.run(args + [f"http://127.0.0.1:{port}{path}"], capture_output=True, timeout=20 * SLOW)
    assert r.returncode == 0, r.stderr
    head, _, body = r.stdout.partition(b"\r\n\r\n")
    lines = head.decode().split("\r\n")
    status = int(lines[0].split()[1])
    assert lines[0].startswith("HTTP/2" if h2 else "HTTP/1.1"), lines[0]
    hdrs = {}
    for ln in lines[1:]:
        k, _, v = ln.partition(":")
        hdrs[k.strip().lower()] = v.strip()
    return status, hdrs, body


def gunzip(data):
    d = zlib.decompressobj(16 + zlib.MAX_WBITS)
    out = d.decompress(data)
    assert d.eof
    return out


def compressed(port, path, headers=(), h2=False):
    st, h, body = curl(port, path, headers, h2)
    assert st == 200, (st, h, body)
    if h.get("content-encoding") == "gzip":
        assert len(gunzip(body)) > 0
        return True
    assert "content-encoding" not in h
    return False


def echo_headers(port, path):
    """The request header names the upstream's /echo saw (gzip or not)."""
    st, h, body = curl(port, path)
    assert st == 200
    if h.get("content-encoding") == "gzip":
        body = gunzip(body)
    return [k.lower() for k, _ in json.loads(body)["headers"]]


def route(prefix, extra="", cluster="backend"):
    """A route for prefix (its requests reach the upstream without it)."""
    if prefix == "/":
        r = f"- match: {{ prefix: \"/\" }}\n  route: {{ cluster: {cluster} }}\n"
    else:
        r = f"- match: {{ prefix: \"{prefix}/\" }}\n  route: {{ cluster: {cluster}, prefix_rewrite: \"/\" }}\n"
    return r + "".join("  " + ln + "\n" for ln in extra.splitlines())


# ---- CompressorPerRoute ---------------------------------------------------------------------------

@pytest.mark.parametrize("h2", [False, True], ids=["h1", "h2"])
def test_compressor_disabled_on_one_route(procs, upstream, h2):
    """CompressorPerRoute disabled on /plain: those responses go out as the
    upstream sent them (counted not_compressed, no vary), while / is gzip."""
    routes = route("/plain", pfc({"envoy.filters.http.compressor": DISABLED})) + route("/")
    listen, admin = start(procs, upstream.port, routes, compressor_filter())
    assert compressed(listen, f"/bytes/5000?{TEXT}", h2=h2)
    st, h, body = curl(listen, f"/plain/bytes/5000?{TEXT}", h2=h2)
    assert st == 200 and "content-encoding" not in h and "vary" not in h
    assert len(body) == 5000
    assert stat(admin, f"{PREFIX}.compressed") == 1
    assert stat(admin, f"{PREFIX}.not_compressed") == 1


def test_overrides_enable_compression_where_the_filter_is_off(procs, upstream):
    """overrides.response_direction_config, even empty, turns response
    compression on for the route although the filter's enabled flag is
    false: Envoy's CompressorPerRoute."""
    f = compressor_filter("response_direction_config:\n"
                          "  common_config: { enabled: { default_value: false, runtime_key: comp.on } }")
    routes = route("/on", pfc({"envoy.filters.http.compressor": ENABLED})) + route("/")
    listen, _ = start(procs, upstream.port, routes, f)
    assert compressed(listen, f"/on/bytes/5000?{TEXT}")
    assert not compressed(listen, f"/bytes/5000?{TEXT}")


def test_overrides_remove_accept_encoding_header(procs, upstream):
    """overrides.response_direction_config.remove_accept_encoding_header
    replaces the filter's per route: /rm strips Accept-Encoding before the
    upstream, /keep keeps it where the filter strips it."""
    f = compressor_filter("response_direction_config:\n"
                          "  remove_accept_encoding_header: true\n"
                          "  common_config: { content_type: [application/json] }")
    keep = cpr("overrides: { response_direction_config: { remove_accept_encoding_header: false } }")
    routes = route("/keep", pfc({"envoy.filters.http.compressor": keep})) + route("/")
    listen, _ = start(procs, upstream.port, routes, f)
    assert "accept-encoding" in echo_headers(listen, "/keep/echo")
    assert "accept-encoding" not in echo_headers(listen, "/echo")
    # and the other way round
    f2 = compressor_filter("response_direction_config:\n  common_config: { content_type: [application/json] }")
    rm = cpr("overrides: { response_direction_config: { remove_accept_encoding_header: true } }")
    routes = route("/rm", pfc({"envoy.filters.http.compressor": rm})) + route("/")
    listen, _ = start(procs, upstream.port, routes, f2)
    assert "accept-encoding" not in echo_headers(listen, "/rm/echo")
    assert "accept-encoding" in echo_headers(listen, "/echo")


def test_most_specific_level_wins(procs, upstream):
    """The route table disables compression; a virtual host under it
    re-enables it; a route below disables it again and a weighted cluster of
    that route's sibling enables it: weighted cluster > route > virtual host
    > route table."""
    routes = (route("/route-off", pfc({"envoy.filters.http.compressor": DISABLED}))
              + "- match: { prefix: \"/wc-on/\" }\n"
                "  route:\n"
                "    prefix_rewrite: \"/\"\n"
                "    weighted_clusters:\n"
                "      clusters:\n"
                "      - name: backend\n"
                "        weight: 1\n"
              + pfc({"envoy.filters.http.compressor": ENABLED}, indent=8)
              + pfc({"envoy.filters.http.compressor": DISABLED}, indent=2)
              + "- match: { prefix: \"/wc-inherit/\" }\n"
                "  route:\n"
                "    prefix_rewrite: \"/\"\n"
                "    weighted_clusters:\n"
                "      clusters:\n"
                "      - name: backend\n"
                "        weight: 1\n"
              + pfc({"envoy.filters.http.compressor": DISABLED}, indent=2)
              + route("/"))
    listen, _ = start(procs, upstream.port, routes, compressor_filter(),
                      vhost_extra=pfc({"envoy.filters.http.compressor": ENABLED}),
                      table_extra=pfc({"envoy.filters.http.compressor": DISABLED}))
    assert compressed(listen, f"/bytes/3000?{TEXT}")             # virtual host over table
    assert not compressed(listen, f"/route-off/bytes/3000?{TEXT}")  # route over virtual host
    assert compressed(listen, f"/wc-on/bytes/3000?{TEXT}")       # weighted cluster over route
    assert not compressed(listen, f"/wc-inherit/bytes/3000?{TEXT}")  # the route's, no cluster entry
    # the table alone (no virtual host entry) disables
    listen2, _ = start(procs, upstream.port, route("/"), compressor_filter(),
                       table_extra=pfc({"envoy.filters.http.compressor": DISABLED}))
    assert not compressed(listen2, f"/bytes/3000?{TEXT}")


# ---- FilterConfig and HttpFilter.disabled ----------------------------------------------------------

def test_filter_config_disabled_takes_the_compressor_out(procs, upstream):
    """FilterConfig disabled: true: the compressor is not in the chain on
    /raw (it counts nothing at all, unlike CompressorPerRoute disabled), and
    Accept-Encoding reaches the upstream despite remove_accept_encoding_header."""
    f = compressor_filter("response_direction_config:\n  remove_accept_encoding_header: true")
    routes = route("/raw", pfc({"envoy.filters.http.compressor": f"\"@type\": {FC}\ndisabled: true"})) + route("/")
    listen, admin = start(procs, upstream.port, routes, f)
    assert not compressed(listen, f"/raw/bytes/5000?{TEXT}")
    assert stat(admin, f"{PREFIX}.response.not_compressed") == 0
    assert stat(admin, f"{PREFIX}.response.compressed") == 0
    assert "accept-encoding" in echo_headers(listen, "/raw/echo")
    assert compressed(listen, f"/bytes/5000?{TEXT}")
    assert stat(admin, f"{PREFIX}.response.compressed") == 1


def test_filter_config_disabled_takes_the_health_check_out(procs, upstream):
    """The health check filter answers /healthz itself, except on the route
    that disables it with a FilterConfig (selected by a header): there the
    request reaches the upstream, whose answer is its hello body."""
    routes = ("- match: { prefix: \"/\", headers: [{ name: x-deep, present_match: true }] }\n"
              "  route: { cluster: backend }\n"
              + pfc({"envoy.filters.http.health_check": f"\"@type\": {FC}\ndisabled: true"}, indent=2)
              + route("/"))
    listen, _ = start(procs, upstream.port, routes, HEALTH_CHECK)
    st, h, body = curl(listen, "/healthz")
    assert st == 200 and body == b""
    assert "x-envoy-upstream-service-time" not in h
    st, h, body = curl(listen, "/healthz", headers=["x-deep: 1"])
    assert st == 200 and len(body) > 0
    assert "x-envoy-upstream-service-time" in h


def test_filter_config_disabled_on_a_weighted_cluster(procs, upstream):
    """A FilterConfig disabled: true on one weighted cluster entry: the
    cluster is picked with the route (Envoy's weighted cluster route entry),
    so the compressor is out of the chain exactly for the requests that go
    to that cluster, and in it for the other's."""
    routes = ("- match: { prefix: \"/\" }\n"
              "  route:\n"
              "    weighted_clusters:\n"
              "      clusters:\n"
              "      - name: backend\n"
              "        weight: 1\n"
              "        response_headers_to_add: [{ header: { key: x-wc, value: raw } }]\n"
              + pfc({"envoy.filters.http.compressor": f"\"@type\": {FC}\ndisabled: true"}, indent=8)
              + "      - name: backend2\n"
                "        weight: 1\n"
                "        response_headers_to_add: [{ header: { key: x-wc, value: gz } }]\n")
    listen, admin = start(procs, upstream.port, routes, compressor_filter(), clusters=("backend", "backend2"))
    seen = {"raw": 0, "gz": 0}
    for _ in range(40):
        st, h, body = curl(listen, f"/bytes/3000?{TEXT}")
        assert st == 200
        seen[h["x-wc"]] += 1
        assert (h.get("content-encoding") == "gzip") == (h["x-wc"] == "gz"), h
    assert seen["raw"] and seen["gz"], seen
    assert stat(admin, f"{PREFIX}.compressed") == seen["gz"]
    assert stat(admin, f"{PREFIX}.not_compressed") == 0


def test_http_filter_disabled_enabled_per_route(procs, upstream):
    """HttpFilter.disabled: the compressor is off by default and on where a
    route names it: a CompressorPerRoute, a FilterConfig wrapping one, or a
    FilterConfig with disabled: false and a config (Envoy: a filter
    configured on a route is enabled there). A FilterConfig disabled: true
    on the virtual host is overridden by the route's enabling entry."""
    on_fc = f"\"@type\": {FC}\nconfig:\n  \"@type\": {CPR}\n  overrides: {{}}"
    routes = (route("/a", pfc({"envoy.filters.http.compressor": cpr("overrides: {}")}))
              + route("/b", pfc({"envoy.filters.http.compressor": on_fc}))
              + route("/"))
    listen, admin = start(procs, upstream.port, routes, compressor_filter(disabled=True),
                          vhost_extra=pfc({"envoy.filters.http.compressor": f"\"@type\": {FC}\ndisabled: true"}))
    assert not compressed(listen, f"/bytes/4000?{TEXT}")
    assert stat(admin, f"{PREFIX}.not_compressed") == 0  # not in the chain at all
    assert compressed(listen, f"/a/bytes/4000?{TEXT}")
    assert compressed(listen, f"/b/bytes/4000?{TEXT}")
    assert stat(admin, f"{PREFIX}.compressed") == 2


def test_per_route_config_for_a_filter_of_no_chain_is_accepted():
    """Envoy finds a per-route config's filter by its type, not by the key:
    a key naming no filter of this connection manager loads (the same route
    table may serve another)."""
    routes = route("/", pfc({"some.other.compressor": DISABLED}))
    rc, out = validate_config(config(10000, 10001, 10002, routes, compressor_filter()))
    assert rc == 0, out


# ---- refusals ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("entries,filters,expect", [
    # per-route types of filters SHARP does not have: refused naming the feature
    ({"envoy.filters.http.ext_proc": "\"@type\": type.googleapis.com/envoy.extensions.filters.http."
                                     "ext_proc.v3.ExtProcPerRoute\n"
                                     "disabled: true"},
     "", "external processing per-route config"),
    ({"envoy.filters.http.rate_limit_quota": "\"@type\": type.googleapis.com/envoy.extensions.filters.http."
                                             "rate_limit_quota.v3.RateLimitQuotaBucketSettings\n"
                                             "expired_assignment_behavior_timeout: 1s"},
     "", "rate limit quota per-route bucket settings"),
    ({"envoy.filters.http.lua": f"\"@type\": {FC}\nconfig:\n  \"@type\": type.googleapis.com/"
                                "envoy.extensions.filters.http.lua.v3.LuaPerRoute\n"
                                "  disabled: true"},
     "", "Lua per-route config"),
    # the router takes no per-route config, and cannot be disabled on a route
    ({"envoy.filters.http.router": "\"@type\": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"},
     "", "The filter envoy.filters.http.router doesn't support virtual host or route specific configurations"),
    ({"envoy.filters.http.router": f"\"@type\": {FC}\ndisabled: true"},
     "", "the terminal filter envoy.filters.http.router cannot be disabled on a route"),
    # a per-route config of another filter's type under a filter's name
    ({"envoy.filters.http.health_check": DISABLED}, HEALTH_CHECK,
     "is the per-route config of envoy.filters.http.compressor, not of this connection manager's filter "
     "'envoy.filters.http.health_check'"),
    # a filter's main config type is not its per-route type
    ({"envoy.filters.http.compressor": "\"@type\": type.googleapis.com/envoy.extensions.filters.http.compressor."
                                       "v3.Compressor\ncompressor_library: { name: x, typed_config: { \"@type\": "
                                       "type.googleapis.com/envoy.extensions.compression.gzip.compressor.v3.Gzip } }"},
     compressor_filter(), "Unable to unpack as envoy.extensions.filters.http.compressor.v3.CompressorPerRoute"),
    # a filter without per-route support
    ({"envoy.filters.http.health_check": "\"@type\": type.googleapis.com/envoy.extensions.filters.http."
                                         "health_check.v3.HealthCheck\npass_through_mode: false"}, HEALTH_CHECK,
     "The filter envoy.filters.http.health_check doesn't support virtual host or route specific configurations"),
    # Envoy's PGV rules and FilterConfig's
    ({"envoy.filters.http.compressor": cpr("disabled: false")}, compressor_filter(),
     "invalid CompressorPerRoute.Disabled: value must equal true"),
    ({"envoy.filters.http.compressor": f"\"@type\": {CPR}"}, compressor_filter(),
     "invalid CompressorPerRoute.Override: value is required"),
    ({"envoy.filters.http.compressor": f"\"@type\": {FC}\nis_optional: true"}, compressor_filter(),
     "Empty route/virtual host per filter configuration for envoy.filters.http.compressor filter"),
], ids=["reverse-bridge", "ratelimit-quota", "lua-in-filterconfig", "router-config", "router-disabled", "type-mismatch",
        "main-type", "no-route-support", "cpr-disabled-false", "cpr-empty", "filterconfig-empty"])
def test_refused(entries, filters, expect):
    routes = route("/", pfc(entries))
    rc, out = validate_config(config(10000, 10001, 10002, routes, filters))
    assert rc != 0 and expect in out, out


def test_router_disabled_by_default_is_refused():
    """Envoy's processFilter: the last (terminal) filter cannot be disabled
    by default."""
    y = config(10000, 10001, 10002, route("/"), "")
    y = y.replace("          - name: envoy.filters.http.router\n",
                  "          - name: envoy.filters.http.router\n            disabled: true\n")
    rc, out = validate_config(y)
    assert rc != 0 and "the last (terminal) filter (envoy.filters.http.router) in the chain cannot be disabled" in out, out


def test_optional_config_of_a_filter_without_route_support_enables_it(procs, upstream):
    """FilterConfig.is_optional with a type whose filter takes no per-route
    config: Envoy skips the config with a warning, and the entry still
    enables the filter (here a health check filter disabled by default)."""
    hc_any = ("\"@type\": type.googleapis.com/envoy.extensions.filters.http.health_check.v3.HealthCheck\n"
              "pass_through_mode: false")
    entry = f"\"@type\": {FC}\nis_optional: true\nconfig:\n" + "".join("  " + ln + "\n" for ln in hc_any.splitlines())
    hc = HEALTH_CHECK.replace("- name: envoy.filters.http.health_check\n",
                              "- name: envoy.filters.http.health_check\n  disabled: true\n")
    routes = ("- match: { prefix: \"/\", headers: [{ name: x-hc, present_match: true }] }\n"
              "  route: { cluster: backend }\n"
              + pfc({"envoy.filters.http.health_check": entry}, indent=2)
              + route("/"))
    listen, _ = start(procs, upstream.port, routes, hc)
    st, h, body = curl(listen, "/healthz")
    assert st == 200 and len(body) > 0  # off by default: the upstream answers
    st, h, body = curl(listen, "/healthz", headers=["x-hc: 1"])
    assert st == 200 and body == b""  # enabled on this route: the filter answers


def test_null_response_direction_config_is_unset(procs, upstream):
    """Envoy's documentation example writes overrides.response_direction_config
    with a null value: in proto3 JSON that is the field unset, so the
    overrides change nothing and the filter's disabled response direction
    stays off, while an empty object turns it on."""
    f = compressor_filter("response_direction_config:\n"
                          "  common_config: { enabled: { default_value: false, runtime_key: comp.on } }")
    routes = (route("/null", pfc({"envoy.filters.http.compressor": cpr("overrides:\n  response_direction_config:")}))
              + route("/empty", pfc({"envoy.filters.http.compressor": ENABLED}))
              + route("/"))
    listen, _ = start(procs, upstream.port, routes, f)
    assert not compressed(listen, f"/null/bytes/5000?{TEXT}")
    assert compressed(listen, f"/empty/bytes/5000?{TEXT}")


# ---- from RDS ---------------------------------------------------------------------------------------

def rds_bootstrap(listen, admin, up, rds_path, filters):
    hcm_filters = "".join("          " + ln + "\n" for ln in filters.splitlines())
    return f"""admin:
  address: {{ socket_address: {{ address: 127.0.0.1, port_value: {admin} }} }}
static_resources:
  listeners:
  - name: l0
    address: {{ socket_address: {{ address: 127.0.0.1, port_value: {listen} }} }}
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: ingress_http
          rds: {{ config_source: {{ path_config_source: {{ path: {rds_path} }} }}, route_config_name: dyn }}
          http_filters:
{hcm_filters}          - name: envoy.filters.http.router
            typed_config: {{ "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router }}
  clusters:
  - name: backend
    type: STATIC
    connect_timeout: 1s
    load_assignment:
      cluster_name: backend
      endpoints:
      - lb_endpoints:
        - endpoint: {{ address: {{ socket_address: {{ address: 127.0.0.1, port_value: {up} }} }} }}
"""


def write_rds(path, version, vhost_pfc):
    rc = {"@type": "type.googleapis.com/envoy.config.route.v3.RouteConfiguration", "name": "dyn",
          "virtual_hosts": [{"name": "all", "domains": ["*"], "typed_per_filter_config": vhost_pfc,
                             "routes": [{"match": {"prefix": "/"}, "route": {"cluster": "backend"}}]}]}
    tmp = f"{path}.tmp"
    with open(tmp, "w") as f:
        json.dump({"version_info": str(version), "resources": [rc]}, f)
    import os
    os.replace(tmp, path)


def test_per_route_config_from_rds(procs, upstream, tmp_path):
    """A route table from RDS carries its per-route configs: the compressor
    off on the virtual host, then on after an update; an update with a
    per-route type of a filter SHARP lacks is refused and the table in
    force stays. A route table may serve several connection managers, so a
    type that is not the named filter's loads (as in Envoy) and that filter
    never reads it."""
    from conftest import wait_for
    rds = str(tmp_path / "rds.json")
    cpr_disabled = {"@type": CPR, "disabled": True}
    write_rds(rds, 1, {"envoy.filters.http.compressor": cpr_disabled})
    listen, admin = free_port(), free_port()
    run_sharp_config(procs, rds_bootstrap(listen, admin, upstream.port, rds, compressor_filter() + HEALTH_CHECK),
                     admin)
    assert not compressed(listen, f"/bytes/3000?{TEXT}")
    write_rds(rds, 2, {"envoy.filters.http.health_check": cpr_disabled})
    wait_for(lambda: stat(admin, "http.ingress_http.rds.dyn.update_success") == 2, 5 * SLOW, "update 2")
    assert compressed(listen, f"/bytes/3000?{TEXT}")
    st, h, body = curl(listen, "/healthz")  # the health check filter still answers
    assert st == 200 and body == b""
    write_rds(rds, 3, {"envoy.filters.http.ext_proc": {
        "@type": "type.googleapis.com/envoy.extensions.filters.http.ext_proc.v3.ExtProcPerRoute",
        "disabled": True}})
    # refused when the file is read (update_failure), as any type SHARP lacks
    wait_for(lambda: stat(admin, "http.ingress_http.rds.dyn.update_failure") == 1, 5 * SLOW, "update 3 refused")
    assert stat(admin, "http.ingress_http.rds.dyn.update_success") == 2
    assert compressed(listen, f"/bytes/3000?{TEXT}")
