"""Envoy's RBAC filters with the real sharp binary: envoy.filters.http.rbac
(ALLOW/DENY by path, header, remote address, destination port, dynamic
metadata set by an earlier filter; shadow rules
only counted and in dynamic metadata; RBACPerRoute disabling or overriding;
the 403 local reply and its response code details; PERMISSION_DENIED for a
gRPC client; the authenticated principal of an mTLS client certificate made
by the openssl CLI) and envoy.filters.network.rbac in front of the TCP
proxy and the HTTP connection manager (a denied connection is closed, an
allowed one echoed; ONE_TIME_ON_FIRST_BYTE and CONTINUOUS), Envoy's stat
names, and configs SHARP refuses."""
import http.client
import json
import socket

import grpc
import pytest

from conftest import (PROTOS, SLOW, TLS_HOST, bootstrap_yaml, file_access_log, free_port, log_lines, protos,
                      run_sharp_config, stat, validate_config, wait_for)
from test_tcp_proxy import bootstrap as tcp_bootstrap
from test_tcp_proxy import cluster_yaml, recv_exact, server, servers  # noqa: F401 (servers is a fixture)
from test_tls_downstream import curl, tls_context, with_tls

RBAC = "type.googleapis.com/envoy.extensions.filters.http.rbac.v3.RBAC"
RBAC_ROUTE = "type.googleapis.com/envoy.extensions.filters.http.rbac.v3.RBACPerRoute"
NET_RBAC = "type.googleapis.com/envoy.extensions.filters.network.rbac.v3.RBAC"
H1 = PROTOS["h1"]
DETAILS = "%RESPONSE_CODE% %RESPONSE_CODE_DETAILS% %DYNAMIC_METADATA(envoy.filters.http.rbac)%\\n"


def indent(text, n):
    return "".join(" " * n + ln + "\n" for ln in text.splitlines())


def with_rbac(yaml_text, cfg):
    """The connection manager's http_filters with the RBAC filter first."""
    f = f"- name: envoy.filters.http.rbac\n  typed_config:\n    \"@type\": {RBAC}\n" + indent(cfg, 4)
    out = yaml_text.replace("          http_filters:\n", "          http_filters:\n" + indent(f, 10), 1)
    assert out != yaml_text
    return out


class P:
    pass


def start(procs, upstream, cfg, routes=None, hcm_extra="", log=True):
    p = P()
    p.listen, p.admin = free_port(), free_port()
    al, p.log = file_access_log(DETAILS) if log else ("", None)
    y = bootstrap_yaml(p.listen, p.admin, {"backend": [upstream.port]}, routes=routes, hcm_extra=al + hcm_extra)
    run_sharp_config(procs, with_rbac(y, cfg), p.admin)
    return p


def get(port, path="/echo", headers=None, src="127.0.0.1"):
    """A GET over HTTP/1.1 from the source address `src` (another loopback
    address is another client): (status, headers, body)."""
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=10 * SLOW, source_address=(src, 0))
    try:
        c.request("GET", path, headers=headers or {})
        r = c.getresponse()
        return r.status, {k.lower(): v for k, v in r.getheaders()}, r.read()
    finally:
        c.close()


def rbac_stats(admin, prefix="http.ingress_http.rbac."):
    return {k: stat(admin, prefix + k) for k in ("allowed", "denied", "shadow_allowed", "shadow_denied")}


# ---- the HTTP filter ----

ALLOW_PUBLIC = """\
rules:
  action: ALLOW
  policies:
    public:
      permissions: [{url_path: {path: {prefix: /echo/public}}}]
      principals: [{any: true}]
"""


@protos("h1", "h2-down")
def test_allow_by_path(procs, upstream, proto):
    """ALLOW: only a request matching a policy goes upstream; the others get
    403 "RBAC: access denied" with details naming no policy. url_path
    ignores the query."""
    p = start(procs, upstream, ALLOW_PUBLIC)
    s, _, b = proto.request(p.listen, "/echo/public/x?a=/private")
    assert s == 200 and b == b"hello from upstream\n"
    s, h, b = proto.request(p.listen, "/echo/private?x=/echo/public")
    assert s == 403 and b == b"RBAC: access denied"
    assert h["content-type"] == "text/plain"
    assert rbac_stats(p.admin) == {"allowed": 1, "denied": 1, "shadow_allowed": 0, "shadow_denied": 0}
    lines = sorted(log_lines(p.log, 2))
    assert lines[0].startswith("200 via_upstream"), lines
    assert lines[1].startswith("403 rbac_access_denied_matched_policy[none]"), lines


def test_deny_by_header_names_the_policy(procs, upstream):
    """DENY: a request matching a policy is denied, with the policy's name
    (whitespace made '_') in the details; the others pass."""
    cfg = """\
rules:
  action: DENY
  policies:
    "no beta":
      permissions: [{header: {name: x-beta, string_match: {exact: "on"}}}]
      principals: [{any: true}]
    "z-admin":
      permissions: [{url_path: {path: {prefix: /echo/admin}}}]
      principals: [{not_id: {header: {name: x-role, string_match: {exact: admin}}}}]
"""
    p = start(procs, upstream, cfg)
    assert get(p.listen, "/echo/a")[0] == 200
    assert get(p.listen, "/echo/a", {"x-beta": "off"})[0] == 200
    assert get(p.listen, "/echo/a", {"x-beta": "on"})[0] == 403
    assert get(p.listen, "/echo/admin/1")[0] == 403
    assert get(p.listen, "/echo/admin/1", {"x-role": "admin"})[0] == 200
    assert rbac_stats(p.admin)["allowed"] == 3 and rbac_stats(p.admin)["denied"] == 2
    lines = log_lines(p.log, 5)
    assert sum("rbac_access_denied_matched_policy[no_beta]" in ln for ln in lines) == 1, lines
    assert sum("rbac_access_denied_matched_policy[z-admin]" in ln for ln in lines) == 1, lines


def test_remote_addresses(procs, upstream):
    """direct_remote_ip sees the connection's peer (a client bound to
    127.0.0.2 is another client than 127.0.0.1); remote_ip the trusted
    client address, which x-forwarded-for gives."""
    cfg = """\
rules:
  action: ALLOW
  policies:
    local-one:
      permissions: [{any: true}]
      principals: [{direct_remote_ip: {address_prefix: 127.0.0.1, prefix_len: 32}}]
    tenant-net:
      permissions: [{url_path: {path: {prefix: /echo/xff}}}]
      principals: [{remote_ip: {address_prefix: 10.0.0.0, prefix_len: 8}}]
"""
    p = start(procs, upstream, cfg, hcm_extra="use_remote_address: false\n")
    assert get(p.listen, src="127.0.0.1")[0] == 200
    assert get(p.listen, src="127.0.0.2")[0] == 403
    assert get(p.listen, "/echo/xff", src="127.0.0.2")[0] == 403
    assert get(p.listen, "/echo/xff", {"x-forwarded-for": "10.1.2.3"}, src="127.0.0.2")[0] == 200
    assert get(p.listen, "/echo/xff", {"x-forwarded-for": "11.1.2.3"}, src="127.0.0.2")[0] == 403
    assert rbac_stats(p.admin)["allowed"] == 2 and rbac_stats(p.admin)["denied"] == 3


def test_destination_port(procs, upstream):
    """destination_port and destination_port_range see the listener's
    port."""
    port = free_port()
    cfg = f"""\
rules:
  action: ALLOW
  policies:
    this-port:
      permissions: [{{and_rules: {{rules: [{{url_path: {{path: {{prefix: /echo/a}}}}}}, {{destination_port: {port}}}]}}}}]
      principals: [{{any: true}}]
    other-ports:
      permissions: [{{and_rules: {{rules: [{{url_path: {{path: {{prefix: /echo/b}}}}}},
                                           {{destination_port_range: {{start: {port + 1}, end: 65536}}}}]}}}}]
      principals: [{{any: true}}]
    range:
      permissions: [{{and_rules: {{rules: [{{url_path: {{path: {{prefix: /echo/c}}}}}},
                                           {{destination_port_range: {{start: {port}, end: {port + 1}}}}}]}}}}]
      principals: [{{any: true}}]
"""
    p = P()
    p.listen, p.admin = port, free_port()
    y = bootstrap_yaml(p.listen, p.admin, {"backend": [upstream.port]})
    run_sharp_config(procs, with_rbac(y, cfg), p.admin)
    assert get(p.listen, "/echo/a")[0] == 200
    assert get(p.listen, "/echo/b")[0] == 403
    assert get(p.listen, "/echo/c")[0] == 200


def test_shadow_rules_only_counted(procs, upstream):
    """Shadow rules decide nothing: every request goes upstream; their
    result is counted (with shadow_rules_stat_prefix) and in the dynamic
    metadata envoy.filters.http.rbac, the keys prefixed too."""
    cfg = """\
shadow_rules_stat_prefix: "sh_"
shadow_rules:
  action: DENY
  policies:
    "would deny":
      permissions: [{url_path: {path: {prefix: /echo/secret}}}]
      principals: [{any: true}]
"""
    p = start(procs, upstream, cfg)
    assert [get(p.listen, path)[0] for path in ("/echo/a", "/echo/secret", "/echo/secret/2")] == [200] * 3
    assert stat(p.admin, "http.ingress_http.rbac.sh_.shadow_allowed") == 1
    assert stat(p.admin, "http.ingress_http.rbac.sh_.shadow_denied") == 2
    assert stat(p.admin, "http.ingress_http.rbac.allowed") == 0
    assert stat(p.admin, "http.ingress_http.rbac.denied") == 0
    lines = log_lines(p.log, 3)
    mds = [json.loads(ln.split(" ", 2)[2]) for ln in lines if ln.startswith("200 ")]
    assert {"sh_shadow_engine_result": "allowed"} in mds, mds
    assert mds.count({"sh_shadow_effective_policy_id": "would deny", "sh_shadow_engine_result": "denied"}) == 2, mds


def test_rules_stat_prefix_and_log_action(procs, upstream):
    """rules_stat_prefix goes between rbac. and the counter; LOG allows all
    and sets envoy.common access_log_hint."""
    cfg = """\
rules_stat_prefix: audit
rules:
  action: LOG
  policies:
    writes:
      permissions: [{header: {name: ":method", string_match: {exact: POST}}}]
      principals: [{any: true}]
"""
    listen, admin = free_port(), free_port()
    al, log = file_access_log("%RESPONSE_CODE% %DYNAMIC_METADATA(envoy.common:access_log_hint)%\\n")
    y = bootstrap_yaml(listen, admin, {"backend": [upstream.port]}, hcm_extra=al)
    run_sharp_config(procs, with_rbac(y, cfg), admin)
    assert get(listen)[0] == 200
    c = http.client.HTTPConnection("127.0.0.1", listen, timeout=10 * SLOW)
    c.request("POST", "/echo", body=b"x")
    assert c.getresponse().status == 200
    c.close()
    assert stat(admin, "http.ingress_http.rbac.audit.allowed") == 2
    assert stat(admin, "http.ingress_http.rbac.audit.denied") == 0
    assert sorted(log_lines(log, 2)) == ["200 false", "200 true"]


def test_enforced_metadata_and_per_rule_stats(procs, upstream):
    """The enforced result and policy go into envoy.filters.http.rbac too,
    under rules_stat_prefix; track_per_rule_stats counts the matched
    policy under <prefix>.policy.<name>; a per-route config's prefixes
    rename the metadata keys only, its track_per_rule_stats applies on its
    route."""
    cfg = """\
rules_stat_prefix: "r_"
track_per_rule_stats: true
rules:
  action: DENY
  policies:
    "no.admin":
      permissions: [{url_path: {path: {prefix: /echo/admin}}}]
      principals: [{any: true}]
shadow_rules_stat_prefix: "s_"
shadow_rules:
  action: ALLOW
  policies:
    everyone:
      permissions: [{any: true}]
      principals: [{any: true}]
"""
    routes = f"""\
- match: {{ prefix: "/echo/route" }}
  route: {{ cluster: backend }}
  typed_per_filter_config:
    envoy.filters.http.rbac:
      "@type": {RBAC_ROUTE}
      rbac:
        rules_stat_prefix: "route_"
        rules:
          action: ALLOW
          policies:
            route-policy: {{permissions: [{{any: true}}], principals: [{{any: true}}]}}
- match: {{ prefix: "/" }}
  route: {{ cluster: backend }}
"""
    p = start(procs, upstream, cfg, routes=routes)
    assert get(p.listen, "/echo/a")[0] == 200
    assert get(p.listen, "/echo/admin")[0] == 403
    assert get(p.listen, "/echo/route")[0] == 200
    base = "http.ingress_http.rbac."
    assert stat(p.admin, base + "r_.allowed") == 2 and stat(p.admin, base + "r_.denied") == 1
    assert stat(p.admin, base + "r_.policy.no.admin.denied") == 1
    assert stat(p.admin, base + "s_.policy.everyone.shadow_allowed") == 2
    assert stat(p.admin, base + "r_.policy.route-policy.allowed") is None  # the route does not track
    lines = log_lines(p.log, 3)
    mds = {ln.split(" ", 1)[0] + ("-route" if "route_" in ln else ""): json.loads(ln.split(" ", 2)[2])
           for ln in lines}
    assert mds["403"] == {"r_enforced_effective_policy_id": "no.admin", "r_enforced_engine_result": "denied",
                          "s_shadow_effective_policy_id": "everyone", "s_shadow_engine_result": "allowed"}, mds
    assert mds["200"] == {"r_enforced_engine_result": "allowed", "s_shadow_effective_policy_id": "everyone",
                          "s_shadow_engine_result": "allowed"}, mds
    assert mds["200-route"] == {"route_enforced_effective_policy_id": "route-policy",
                                "route_enforced_engine_result": "allowed"}, mds


def test_per_route_disable_and_override(procs, upstream):
    """RBACPerRoute without rbac turns the filter off for its route; with
    rbac its rules replace the filter's (counted in the filter's stats); a
    virtual host's config applies to routes without their own."""
    deny_all = "rules: {action: ALLOW}\n"
    routes = f"""\
- match: {{ prefix: "/echo/open" }}
  route: {{ cluster: backend }}
  typed_per_filter_config:
    envoy.filters.http.rbac: {{"@type": {RBAC_ROUTE}}}
- match: {{ prefix: "/echo/team" }}
  route: {{ cluster: backend }}
  typed_per_filter_config:
    envoy.filters.http.rbac:
      "@type": {RBAC_ROUTE}
      rbac:
        rules:
          action: ALLOW
          policies:
            team:
              permissions: [{{any: true}}]
              principals: [{{header: {{name: x-team, string_match: {{exact: blue}}}}}}]
- match: {{ prefix: "/" }}
  route: {{ cluster: backend }}
"""
    p = start(procs, upstream, deny_all, routes=routes)
    assert get(p.listen, "/echo/closed")[0] == 403
    assert get(p.listen, "/echo/open/1")[0] == 200
    assert get(p.listen, "/echo/team")[0] == 403
    assert get(p.listen, "/echo/team", {"x-team": "blue"})[0] == 200
    assert rbac_stats(p.admin) == {"allowed": 1, "denied": 2, "shadow_allowed": 0, "shadow_denied": 0}

    vhost = (f"typed_per_filter_config:\n  envoy.filters.http.rbac: {{\"@type\": {RBAC_ROUTE}}}\n")
    listen, admin = free_port(), free_port()
    y = bootstrap_yaml(listen, admin, {"backend": [upstream.port]}, vhost_extra=vhost)
    run_sharp_config(procs, with_rbac(y, deny_all), admin)
    assert get(listen, "/echo/anything")[0] == 200


def test_metadata_from_an_earlier_filter(procs, upstream):
    """metadata permissions and principals read the stream's dynamic
    metadata, here set by the header-to-metadata filter before RBAC; the
    shadow result goes into the metadata after the rules ran, so they do
    not see it (as in Envoy)."""
    cfg = """\
shadow_rules:
  action: ALLOW
  policies:
    any: {permissions: [{any: true}], principals: [{any: true}]}
rules:
  action: ALLOW
  policies:
    tenant:
      permissions: [{metadata: {filter: tenants, path: [{key: id}], value: {string_match: {suffix: "-prod"}}}}]
      principals: [{not_id: {metadata: {filter: tenants, path: [{key: blocked}], value: {present_match: true}}}}]
    shadowed:
      permissions: [{url_path: {path: {prefix: /echo/shadowed}}}]
      principals: [{metadata: {filter: envoy.filters.http.rbac, path: [{key: shadow_engine_result}],
                               value: {string_match: {exact: allowed}}}}]
"""
    h2m = ("- name: envoy.filters.http.header_to_metadata\n  typed_config:\n"
           "    \"@type\": type.googleapis.com/envoy.extensions.filters.http.header_to_metadata.v3.Config\n"
           "    request_rules:\n"
           "    - header: x-tenant\n"
           "      on_header_present: { metadata_namespace: tenants, key: id, type: STRING }\n"
           "    - header: x-blocked\n"
           "      on_header_present: { metadata_namespace: tenants, key: blocked, type: STRING }\n")
    listen, admin = free_port(), free_port()
    y = with_rbac(bootstrap_yaml(listen, admin, {"backend": [upstream.port]}), cfg)
    y = y.replace("          http_filters:\n", "          http_filters:\n" + indent(h2m, 10), 1)
    run_sharp_config(procs, y, admin)
    assert get(listen)[0] == 403
    assert get(listen, headers={"x-tenant": "acme-prod"})[0] == 200
    assert get(listen, headers={"x-tenant": "acme-dev"})[0] == 403
    assert get(listen, headers={"x-tenant": "acme-prod", "x-blocked": "1"})[0] == 403
    assert get(listen, "/echo/shadowed")[0] == 403


def test_grpc_client_sees_permission_denied(procs, upstream):
    """A denied gRPC request: the local reply's gRPC mapping turns 403 into
    PERMISSION_DENIED with the body as grpc-message."""
    p = start(procs, upstream, "rules: {action: DENY, policies: {all: {permissions: [{any: true}], "
                               "principals: [{any: true}]}}}\n")
    with grpc.insecure_channel(f"127.0.0.1:{p.listen}") as ch:
        stub = ch.unary_unary("/sharp.test.Echo/Say", request_serializer=lambda b: b,
                              response_deserializer=lambda b: b)
        with pytest.raises(grpc.RpcError) as e:
            stub(b"\x0a\x02hi", timeout=5 * SLOW)
    assert e.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert e.value.details() == "RBAC: access denied"
    assert stat(p.admin, "http.ingress_http.rbac.denied") == 1
    assert log_lines(p.log, 1)[0].startswith("200 rbac_access_denied_matched_policy[all]")


def test_mtls_principal(procs, upstream, pki):
    """authenticated.principal_name against the client certificate (made
    by the openssl CLI): its URI SAN, else its subject; a client without a
    certificate, or with a plaintext connection, is no authenticated
    principal."""
    cfg = """\
rules:
  action: ALLOW
  policies:
    by-uri:
      permissions: [{url_path: {path: {prefix: /echo/uri}}}]
      principals: [{authenticated: {principal_name: {exact: "spiffe://example/client"}}}]
    by-subject:
      permissions: [{url_path: {path: {prefix: /echo/subject}}}]
      principals: [{authenticated: {principal_name: {exact: "O=Example,CN=client"}}}]
    any-tls:
      permissions: [{url_path: {path: {prefix: /echo/tls}}}]
      principals: [{authenticated: {}}]
    wrong:
      permissions: [{url_path: {path: {prefix: /echo/wrong}}}]
      principals: [{authenticated: {principal_name: {exact: "spiffe://example/other"}}}]
    sni:
      permissions: [{and_rules: {rules: [{url_path: {path: {prefix: /echo/sni}}},
                                         {requested_server_name: {exact: "www.example.com"}}]}}]
      principals: [{any: true}]
"""
    listen, admin = free_port(), free_port()
    y = bootstrap_yaml(listen, admin, {"backend": [upstream.port]})
    run_sharp_config(procs, with_tls(with_rbac(y, cfg), tls_context(pki, client_ca=True)), admin)

    class T:
        pass
    t = T()
    t.listen, t.pki = listen, pki
    cert = ("--cert", f"{pki}/client.crt", "--key", f"{pki}/client.key")

    def code(path, *args):
        r = curl(t, path, "-o", "/dev/null", "-w", "%{http_code}", *args)
        assert r.returncode == 0, r.stderr
        return int(r.stdout)

    assert code("/echo/uri", *cert) == 200
    assert code("/echo/subject", *cert) == 200
    assert code("/echo/tls", *cert) == 200
    assert code("/echo/wrong", *cert) == 403
    assert code("/echo/sni", *cert) == 200
    assert code("/echo/uri") == 403
    assert code("/echo/tls") == 200  # a TLS connection without a client certificate
    assert stat(admin, "http.ingress_http.rbac.denied") == 2


# ---- the network filter ----

def net_rbac(cfg, stat_prefix="tcp."):
    return (f"      - name: envoy.filters.network.rbac\n        typed_config:\n          \"@type\": {NET_RBAC}\n"
            f"          stat_prefix: {stat_prefix}\n" + indent(cfg, 10))


def tcp_chain(rbac_filters, tp_extra=""):
    return ("    - filters:\n" + rbac_filters + "      - name: envoy.filters.network.tcp_proxy\n"
            "        typed_config:\n"
            "          \"@type\": type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy\n"
            "          stat_prefix: tp\n          cluster: backend\n" + indent(tp_extra, 10))


def start_tcp(procs, servers, rbac_filters, tp_extra=""):  # noqa: F811
    echo = server(servers)
    p = P()
    p.listen, p.admin = free_port(), free_port()
    y = tcp_bootstrap(p.listen, p.admin, cluster_yaml("backend", [echo.port]),
                      chains=tcp_chain(rbac_filters, tp_extra))
    run_sharp_config(procs, y, p.admin)
    p.echo = echo
    return p


def connect(port, src="127.0.0.1"):
    return socket.create_connection(("127.0.0.1", port), timeout=10 * SLOW, source_address=(src, 0))


def closed(s):
    try:
        return s.recv(1) == b""
    except ConnectionResetError:
        return True


DENY_SECOND_LOOPBACK = """\
rules:
  action: DENY
  policies:
    second-loopback:
      permissions: [{any: true}]
      principals: [{direct_remote_ip: {address_prefix: 127.0.0.2, prefix_len: 32}}]
"""


def test_network_rbac_before_tcp_proxy(procs, servers):  # noqa: F811
    """A denied connection is closed on its first data, which never reaches
    the upstream; an allowed one is echoed, checked once
    (ONE_TIME_ON_FIRST_BYTE)."""
    p = start_tcp(procs, servers, net_rbac(DENY_SECOND_LOOPBACK))
    ok = connect(p.listen)
    for i in range(3):
        ok.sendall(b"ping%d" % i)
        assert recv_exact(ok, 5) == b"ping%d" % i
    bad = connect(p.listen, "127.0.0.2")
    bad.sendall(b"secret")
    assert closed(bad)
    bad.close()
    ok.close()
    assert stat(p.admin, "tcp.rbac.allowed") == 1
    assert stat(p.admin, "tcp.rbac.denied") == 1
    assert p.echo.received == 15


def test_network_rbac_continuous_and_shadow(procs, servers, tmp_path):  # noqa: F811
    """CONTINUOUS checks every data; shadow rules are counted under their
    prefix and their result is in the TCP proxy's dynamic metadata, where
    the rules see it; a header permission never matches a connection."""
    cfg = """\
enforcement_type: CONTINUOUS
shadow_rules_stat_prefix: shadow_
shadow_rules:
  action: ALLOW
  policies:
    headers-never:
      permissions: [{header: {name: x-any, present_match: true}}]
      principals: [{any: true}]
rules:
  action: ALLOW
  policies:
    loopback:
      permissions: [{any: true}]
      principals: [{and_ids: {ids: [
        {remote_ip: {address_prefix: 127.0.0.0, prefix_len: 8}},
        {metadata: {filter: envoy.filters.network.rbac, path: [{key: shadow_shadow_engine_result}],
                    value: {string_match: {exact: denied}}}}]}}]
"""
    log = tmp_path / "tcp.log"
    al = (f"access_log:\n- name: envoy.access_loggers.file\n  typed_config:\n"
          f"    \"@type\": type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog\n"
          f"    path: {log}\n"
          f"    log_format: {{ text_format_source: {{ inline_string: "
          f"\"%DYNAMIC_METADATA(envoy.filters.network.rbac)%\\n\" }} }}\n")
    p = start_tcp(procs, servers, net_rbac(cfg, stat_prefix="net"), tp_extra=al)
    s = connect(p.listen)
    for i in range(3):
        s.sendall(b"x%d" % i)
        assert recv_exact(s, 2) == b"x%d" % i
    s.close()
    assert stat(p.admin, "net.rbac.allowed") == 3
    assert stat(p.admin, "net.rbac.shadow_.shadow_denied") == 3
    assert stat(p.admin, "net.rbac.shadow_.shadow_allowed") == 0
    line = log_lines(str(log), 1)[0]
    assert json.loads(line) == {"shadow_shadow_engine_result": "denied"}, line


def test_network_rbac_before_http(procs, upstream):
    """Before the connection manager: the connection of a denied client is
    closed without a response; two RBAC filters apply in order."""
    listen, admin = free_port(), free_port()
    y = bootstrap_yaml(listen, admin, {"backend": [upstream.port]})
    second = """\
rules:
  action: ALLOW
  policies:
    port:
      permissions: [{destination_port: %d}]
      principals: [{any: true}]
""" % listen
    y = y.replace("    - filters:\n", "    - filters:\n" + net_rbac(DENY_SECOND_LOOPBACK, "first.")
                  + net_rbac(second, "second."), 1)
    run_sharp_config(procs, y, admin)
    assert get(listen)[0] == 200
    s = connect(listen, "127.0.0.2")
    s.sendall(b"GET /echo HTTP/1.1\r\nhost: x\r\n\r\n")
    assert closed(s)
    s.close()
    assert stat(admin, "first.rbac.denied") == 1 and stat(admin, "first.rbac.allowed") == 1
    assert stat(admin, "second.rbac.allowed") == 1 and stat(admin, "second.rbac.denied") == 0
    wait_for(lambda: stat(admin, "http.ingress_http.downstream_rq_total") == 1, 5 * SLOW, "one request")


def test_network_rbac_after_tls(procs, upstream, pki):
    """Over TLS the network filter sees the decrypted first data, with the
    client certificate: only the authenticated principal gets an answer."""
    listen, admin = free_port(), free_port()
    cfg = """\
rules:
  action: ALLOW
  policies:
    client:
      permissions: [{requested_server_name: {exact: "www.example.com"}}]
      principals: [{authenticated: {principal_name: {exact: "spiffe://example/client"}}}]
"""
    y = bootstrap_yaml(listen, admin, {"backend": [upstream.port]})
    y = y.replace("    - filters:\n", "    - filters:\n" + net_rbac(cfg, "mtls."), 1)
    run_sharp_config(procs, with_tls(y, tls_context(pki, client_ca=True)), admin)

    class T:
        pass
    t = T()
    t.listen, t.pki = listen, pki
    r = curl(t, "/echo", "-o", "/dev/null", "-w", "%{http_code}", "--cert", f"{pki}/client.crt", "--key",
             f"{pki}/client.key")
    assert r.returncode == 0 and r.stdout == b"200", r.stderr
    r = curl(t, "/echo", "-o", "/dev/null", "-w", "%{http_code}")
    assert r.returncode != 0 and r.stdout == b"000", (r.stdout, r.stderr)
    assert stat(admin, "mtls.rbac.allowed") == 1 and stat(admin, "mtls.rbac.denied") == 1
    assert stat(admin, "http.ingress_http.downstream_rq_total") == 1


# ---- refused configs ----

def http_config(cfg):
    return with_rbac(bootstrap_yaml(free_port(), free_port(), {"backend": [free_port()]}), cfg)


@pytest.mark.parametrize("cfg,msg", [
    ("rules: {policies: {p: {permissions: [], principals: [{any: true}]}}}", "permissions"),
    ("rules: {policies: {p: {permissions: [{any: true}], principals: [{}]}}}", "identifier: value is required"),
    ("rules: {policies: {p: {permissions: [{metadata: {filter: f, path: [{key: k}], value: {or_match: "
     "{value_matchers: [{present_match: true}]}}}}], principals: [{any: true}]}}}",
     "or_match.value_matchers: needs at least 2 items"),
    ("rules: {policies: {p: {permissions: [{any: true}], principals: [{any: true}], condition: {id: 1}}}}",
     "condition is not supported by SHARP"),
    ("rules: {policies: {p: {permissions: [{destination_port_range: {start: 9, end: 9}}], "
     "principals: [{any: true}]}}}", "range start 9 cannot be greater or equal than range end 9"),
    ("rules: {policies: {p: {permissions: [{any: true}], principals: [{remote_ip: {address_prefix: 300.1.1.1}}]}}}",
     "invalid ip/mask combo"),
    ("matcher: {matcher_list: {}}", "matcher is not supported by SHARP"),
    ("rules: {audit_logging_options: {audit_condition: ON_DENY}}", "audit_logging_options"),
])
def test_refused_http_configs(cfg, msg):
    rc, out = validate_config(http_config(cfg))
    assert rc != 0 and msg in out, out


def test_refused_per_route_config():
    routes = (f"- match: {{ prefix: \"/\" }}\n  route: {{ cluster: backend }}\n  typed_per_filter_config:\n"
              f"    envoy.filters.http.rbac:\n      \"@type\": {RBAC_ROUTE}\n"
              f"      rbac: {{rules: {{policies: {{p: {{permissions: [{{uri_template: {{name: t}}}}], "
              f"principals: [{{any: true}}]}}}}}}}}\n")
    y = with_rbac(bootstrap_yaml(free_port(), free_port(), {"backend": [free_port()]}, routes=routes), "")
    rc, out = validate_config(y)
    assert rc != 0 and "uri_template" in out, out


@pytest.mark.parametrize("chain,msg", [
    # no stat_prefix
    (lambda: tcp_chain(f"      - name: envoy.filters.network.rbac\n        typed_config:\n"
                       f"          \"@type\": {NET_RBAC}\n"), "stat_prefix"),
    # after the terminal filter
    (lambda: tcp_chain("") + net_rbac("rules: {}"), "terminal"),
    # a network filter SHARP does not have
    (lambda: tcp_chain("      - name: envoy.filters.network.local_ratelimit\n        typed_config:\n"
                       "          \"@type\": type.googleapis.com/envoy.extensions.filters.network.local_ratelimit"
                       ".v3.LocalRateLimit\n          stat_prefix: x\n"), "local_ratelimit"),
    (lambda: tcp_chain(net_rbac("delay_deny: 1s")), "delay_deny is not supported by SHARP"),
    (lambda: tcp_chain(net_rbac("enforce_on_transport_ready: true")),
     "enforce_on_transport_ready is not supported by SHARP"),
    (lambda: tcp_chain(net_rbac("shadow_matcher: {matcher_list: {}}")), "shadow_matcher is not supported by SHARP"),
    (lambda: tcp_chain(net_rbac("rules: {policies: {p: {permissions: [{any: true}], "
                                "principals: [{filter_state: {key: k}}]}}}")), "filter_state is not supported"),
])
def test_refused_network_configs(chain, msg):
    y = tcp_bootstrap(free_port(), free_port(), cluster_yaml("backend", [free_port()]), chains=chain())
    rc, out = validate_config(y)
    assert rc != 0 and msg in out, out
