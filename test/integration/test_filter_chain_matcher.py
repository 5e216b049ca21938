"""A listener's filter_chain_matcher (Envoy's unified matcher selecting a
filter chain by name): network inputs (destination and source addresses and
ports, SNI, transport protocol, ...), exact and prefix trees, the IPMatcher
custom match; the chains' filter_chain_match are then ignored; no match
takes default_filter_chain, else the connection is closed and counted in
no_filter_chain_match, as is one whose action names no chain. Envoy's
documentation examples run as they are (with certificates made here), and
an LDS update that changes only the matcher is an in-place update. Clients
are curl from different loopback source addresses and openssl s_client."""
import os
import re
import shutil
import socket
import subprocess

from conftest import (SHARP, SLOW, Sharp, Upstream, admin_get, free_port, run_sharp_config, stat,
                      validate_config as validate, wait_for)
from test_filter_chains import TLS_INSPECTOR, chain, get, indent
from test_xds_file import discovery, write_atomic

CORPUS = next((d for d in (os.path.normpath(os.path.join(os.path.dirname(__file__), "..", "..", "..", "shared",
                                                        "envoy-corpus")), "/work/shared/envoy-corpus")
               if os.path.isdir(d)), "/work/shared/envoy-corpus")
DOCS = "envoy__docs__root__intro__arch_overview__advanced__matching___include__"
NET = "type.googleapis.com/envoy.extensions.matching.common_inputs.network.v3."


def action(name):
    return ("{ action: { name: %s, typed_config: { '@type': type.googleapis.com/google.protobuf.StringValue, "
            "value: %s } } }" % (name, name))


def net_input(kind):
    return "{ name: in, typed_config: { '@type': %s%s } }" % (NET, kind)


def bootstrap(listen, admin, chains, matcher, default=None, listener_filters=""):
    d = ""
    if default:
        body = chain(default)[len(f"- name: {default}\n"):]
        d = f"    default_filter_chain:\n      name: {default}\n{indent(body, 4)}"
    lf = f"    listener_filters:\n{indent(listener_filters, 4)}" if listener_filters else ""
    return f"""\
admin:
  address: {{ socket_address: {{ address: 127.0.0.1, port_value: {admin} }} }}
static_resources:
  listeners:
  - name: m
    address: {{ socket_address: {{ address: 127.0.0.1, port_value: {listen} }} }}
{lf}    filter_chains:
{indent("".join(chains), 4)}{d}    filter_chain_matcher:
{indent(matcher, 6)}"""


def start(procs, chains, matcher, default=None, **kw):
    listen, admin = free_port(), free_port()
    run_sharp_config(procs, bootstrap(listen, admin, chains, matcher(listen) if callable(matcher) else matcher,
                                      default, **kw), admin)
    return listen, admin


def port_then_source(listen):
    """The docs' listener_complicated example on this listener's port: from
    127.0.0.2, or 127.0.0.16/28, "internal"; any other IPv4 source "lo"."""
    return f"""\
matcher_tree:
  input: {net_input("DestinationPortInput")}
  exact_match_map:
    map:
      "{listen}":
        matcher:
          matcher_tree:
            input: {net_input("SourceIPInput")}
            custom_match:
              name: ip
              typed_config:
                "@type": type.googleapis.com/xds.type.matcher.v3.IPMatcher
                range_matchers:
                - ranges: [{{ address_prefix: 127.0.0.2, prefix_len: 32 }}, {{ address_prefix: 127.0.0.16, prefix_len: 28 }}]
                  on_match: {action("internal")}
                - ranges: [{{ address_prefix: 0.0.0.0 }}]
                  on_match: {action("lo")}
      "1": {{ action: {{ name: x, typed_config: {{ "@type": type.googleapis.com/google.protobuf.StringValue, value: one }} }} }}
"""


def test_tree_on_port_and_source_ip(procs):
    # the chains' filter_chain_match would send everything to "lo"; with a
    # matcher they are ignored (and identical ones are no overlap)
    lo_only = "{ source_prefix_ranges: [{ address_prefix: 127.0.0.1, prefix_len: 32 }] }"
    listen, admin = start(procs, [chain("internal", lo_only), chain("lo", lo_only), chain("one", lo_only)],
                          port_then_source)
    assert get(listen, "127.0.0.2") == (0, "internal")
    assert get(listen, "127.0.0.20") == (0, "internal")
    assert get(listen, "127.0.0.1") == (0, "lo")
    assert get(listen, "127.0.0.33") == (0, "lo")
    assert stat(admin, "http.internal.downstream_rq_total") == 2
    assert stat(admin, "http.lo.downstream_rq_total") == 2
    assert stat(admin, f"listener.127.0.0.1_{listen}.no_filter_chain_match") == 0
    # the config dump shows the matcher, its IPMatcher unpacked
    dump = admin_get(admin, "/config_dump")
    assert "filter_chain_matcher" in dump and "xds.type.matcher.v3.IPMatcher" in dump and "127.0.0.16" in dump


def test_no_match_takes_the_default_chain_else_closes(procs):
    only2 = f"""\
matcher_list:
  matchers:
  - predicate: {{ single_predicate: {{ input: {net_input("SourceIPInput")}, value_match: {{ exact: 127.0.0.2 }} }} }}
    on_match: {action("two")}
"""
    listen, admin = start(procs, [chain("two")], only2, default="fallback")
    assert get(listen, "127.0.0.2") == (0, "two")
    assert get(listen, "127.0.0.3") == (0, "fallback")
    assert stat(admin, f"listener.127.0.0.1_{listen}.no_filter_chain_match") == 0

    listen, admin = start(procs, [chain("two")], only2)
    assert get(listen, "127.0.0.2") == (0, "two")
    rc, body = get(listen, "127.0.0.3")
    assert rc != 0 and body == ""
    assert stat(admin, f"listener.127.0.0.1_{listen}.no_filter_chain_match") == 1
    assert stat(admin, f"listener.127.0.0.1_{listen}.downstream_cx_active") == 0


def test_an_action_naming_no_chain_closes_the_connection(procs):
    """Envoy's FilterChainNameAction finds no chain: the connection has none
    (not the default chain) and is closed."""
    m = f"""\
matcher_tree:
  input: {net_input("SourceIPInput")}
  exact_match_map:
    map:
      "127.0.0.2": {action("gone")}
      "127.0.0.3": {action("fallback")}
on_no_match: {action("here")}
"""
    listen, admin = start(procs, [chain("here")], m, default="fallback")
    assert get(listen, "127.0.0.1") == (0, "here")
    for source in ("127.0.0.2", "127.0.0.3"):  # the default chain is not among the named ones
        rc, body = get(listen, source)
        assert rc != 0 and body == "", source
    assert stat(admin, f"listener.127.0.0.1_{listen}.no_filter_chain_match") == 2
    assert stat(admin, "http.fallback.downstream_cx_total") == 0


def test_source_type_and_ports(procs):
    sport = free_port()
    m = f"""\
matcher_list:
  matchers:
  - predicate: {{ single_predicate: {{ input: {net_input("SourcePortInput")}, value_match: {{ exact: "{sport}" }} }} }}
    on_match: {action("by_port")}
  - predicate:
      and_matcher:
        predicate:
        - {{ single_predicate: {{ input: {net_input("SourceTypeInput")}, value_match: {{ exact: local }} }} }}
        - {{ single_predicate: {{ input: {net_input("DestinationIPInput")}, value_match: {{ exact: 127.0.0.1 }} }} }}
    on_match: {action("local")}
"""
    listen, admin = start(procs, [chain("by_port"), chain("local")], m)
    assert get(listen, "127.0.0.1", sport) == (0, "by_port")
    assert get(listen, "127.0.0.9") == (0, "local")


def test_server_name_and_transport_protocol_with_tls_inspector(procs, pki):
    """tls_inspector fills the transport protocol and the SNI: TLS with
    server name www.example.com takes "www", other TLS "tls", plaintext
    "plain"."""
    tls = f"""\
  transport_socket:
    name: envoy.transport_sockets.tls
    typed_config:
      "@type": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext
      common_tls_context:
        tls_certificates:
        - certificate_chain: {{ filename: {pki}/rsa.crt }}
          private_key: {{ filename: {pki}/rsa.key }}
"""

    def tls_chain(name):
        c = chain(name)
        return c.replace(f"- name: {name}\n", f"- name: {name}\n{tls}", 1)
    m = f"""\
matcher_tree:
  input: {net_input("TransportProtocolInput")}
  exact_match_map:
    map:
      tls:
        matcher:
          matcher_tree:
            input: {net_input("ServerNameInput")}
            exact_match_map:
              map:
                www.example.com: {action("www")}
          on_no_match: {action("tls")}
on_no_match: {action("plain")}
"""
    listen, admin = start(procs, [tls_chain("www"), tls_chain("tls"), chain("plain")], m,
                          listener_filters=TLS_INSPECTOR)

    def https(host):
        r = subprocess.run(["curl", "-sS", "-k", "--max-time", str(5 * SLOW), "--resolve",
                            f"{host}:{listen}:127.0.0.1", f"https://{host}:{listen}/"],
                           capture_output=True, timeout=10 * SLOW)
        return r.stdout.decode()
    assert https("www.example.com") == "www"
    assert https("other.test") == "tls"
    assert get(listen) == (0, "plain")
    assert stat(admin, "tls_inspector.sni_found") == 2


def test_config_errors():
    listen, admin = free_port(), free_port()
    m = f"matcher_tree:\n  input: {net_input('SourceIPInput')}\n  exact_match_map: {{ map: {{ a: {action('a')} }} }}\n"
    unnamed = chain("x").replace("- name: x\n", "- name: ''\n", 1)
    rc, out = validate(bootstrap(listen, admin, [chain("a"), unnamed], m))
    assert rc == 1 and '"name" field is required when using a listener matcher' in out, out
    rc, out = validate(bootstrap(listen, admin, [chain("a"), chain("a")], m))
    assert rc == 1 and "\"name\" field is duplicated with value 'a'" in out, out
    # HTTP inputs do not apply to connections
    http = ("matcher_tree:\n  input: { name: h, typed_config: { '@type': "
            "type.googleapis.com/envoy.type.matcher.v3.HttpRequestHeaderMatchInput, header_name: x } }\n"
            f"  exact_match_map: {{ map: {{ a: {action('a')} }} }}\n")
    rc, out = validate(bootstrap(listen, admin, [chain("a")], http))
    assert rc == 1 and "filter_chain_matcher.matcher_tree.input" in out and "HttpRequestHeaderMatchInput" in out, out
    # an action that is not a chain name
    skip = ("matcher_tree:\n  input: " + net_input("SourceIPInput") + "\n  exact_match_map: { map: { a: { action: "
            "{ name: s, typed_config: { '@type': type.googleapis.com/envoy.extensions.filters.common.matcher.action."
            "v3.SkipFilter } } } } }\n")
    rc, out = validate(bootstrap(listen, admin, [chain("a")], skip))
    assert rc == 1 and "Didn't find a registered implementation for 's'" in out, out
    # custom matchers SHARP does not implement are refused by name
    dom = ("matcher_tree:\n  input: " + net_input("ServerNameInput") + "\n  custom_match: { name: d, typed_config: "
           "{ '@type': type.googleapis.com/xds.type.matcher.v3.ServerNameMatcher } }\n")
    rc, out = validate(bootstrap(listen, admin, [chain("a")], dom))
    assert rc == 1 and "ServerNameMatcher" in out, out
    # filter state: SHARP's listener filters set none, so no value
    fs = (f"matcher_tree:\n  input: {{ name: f, typed_config: {{ '@type': {NET}FilterStateInput, key: k }} }}\n"
          f"  exact_match_map: {{ map: {{ a: {action('a')} }} }}\non_no_match: {action('a')}\n")
    rc, out = validate(bootstrap(listen, admin, [chain("a")], fs))
    assert rc == 0, out
    # a matcher with every input of the table loads
    for kind in ("DestinationIPInput", "DestinationPortInput", "SourceIPInput", "SourcePortInput",
                 "DirectSourceIPInput", "SourceTypeInput", "ServerNameInput", "TransportProtocolInput",
                 "ApplicationProtocolInput"):
        m = f"matcher_tree:\n  input: {net_input(kind)}\n  prefix_match_map: {{ map: {{ x: {action('a')} }} }}\n"
        rc, out = validate(bootstrap(listen, admin, [chain("a")], m))
        assert rc == 0, (kind, out)


def certs(d):
    os.makedirs(os.path.join(d, "certs"), exist_ok=True)
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "certs/serverkey.pem",
                    "-out", "certs/servercert.pem", "-subj", "/CN=example.com", "-days", "2"],
                   cwd=d, check=True, capture_output=True)


def validate_in(d, name, text):
    path = os.path.join(d, name)
    with open(path, "w") as f:
        f.write(text)
    r = subprocess.run([SHARP, "--mode", "validate", "-c", name], cwd=d, capture_output=True, timeout=30)
    return r.returncode, (r.stdout + r.stderr).decode()


def test_docs_examples_load(tmp_path):
    """Envoy's documentation examples: from the corpus directory, without
    its certificates, they fail as Envoy does, naming the file; with
    certificates beside them they load."""
    for ex in ("listener_complicated", "listener_tls"):
        src = os.path.join(CORPUS, DOCS + ex + ".yaml")
        r = subprocess.run([SHARP, "--mode", "validate", "-c", src], cwd=CORPUS, capture_output=True, timeout=30)
        out = (r.stdout + r.stderr).decode()
        assert r.returncode == 1 and "Invalid path: certs/servercert.pem" in out, out
        certs(str(tmp_path))
        shutil.copy(src, tmp_path / "ex.yaml")
        r = subprocess.run([SHARP, "--mode", "validate", "-c", "ex.yaml"], cwd=tmp_path, capture_output=True,
                           timeout=30)
        assert r.returncode == 0, (ex, (r.stdout + r.stderr).decode())


def test_docs_tls_example_runs(procs, tmp_path):
    """listener_tls as it is, its port, admin and cluster pointed at this
    test: TLS connections take the tls chain (TLS terminated, then proxied),
    plaintext ones the plaintext chain."""
    certs(str(tmp_path))
    echo = Upstream("echo")
    procs.append(echo)
    listen, admin = free_port(), free_port()
    text = open(os.path.join(CORPUS, DOCS + "listener_tls.yaml")).read()
    text = text.replace("port_value: 8443", f"port_value: {listen}").replace("0.0.0.0", "127.0.0.1")
    text = text.replace("address: 10.1.2.10", "address: 127.0.0.1").replace("port_value: 10002",
                                                                           f"port_value: {echo.port}")
    text = re.sub(r'filename: "(certs/[a-z]+\.pem)"', lambda m: f'filename: "{tmp_path}/{m.group(1)}"', text)
    text = f"admin:\n  address: {{ socket_address: {{ address: 127.0.0.1, port_value: {admin} }} }}\n" + text
    run_sharp_config(procs, text, admin)
    r = subprocess.run(["curl", "-sS", "-k", "--max-time", str(5 * SLOW), f"https://127.0.0.1:{listen}/x"],
                       capture_output=True, timeout=10 * SLOW)
    assert r.returncode == 0 and r.stdout, r.stderr
    assert stat(admin, "tcp.tls.downstream_cx_total") == 1
    r = subprocess.run(["curl", "-sS", "--max-time", str(5 * SLOW), f"http://127.0.0.1:{listen}/x"],
                       capture_output=True, timeout=10 * SLOW)
    assert r.returncode == 0 and r.stdout, r.stderr
    assert stat(admin, "tcp.plaintext.downstream_cx_total") == 1
    assert stat(admin, "tls_inspector.tls_found") == 1


def lds_listener(port, target):
    def fc(name):
        return {"name": name, "filters": [{"name": "envoy.filters.network.http_connection_manager", "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3."
                     "HttpConnectionManager",
            "stat_prefix": name,
            "route_config": {"virtual_hosts": [{"name": "all", "domains": ["*"], "routes": [
                {"match": {"prefix": "/"}, "direct_response": {"status": 200, "body": {"inline_string": name}}}]}]},
            "http_filters": [{"name": "envoy.filters.http.router", "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"}}]}}]}
    return {"@type": "type.googleapis.com/envoy.config.listener.v3.Listener", "name": "l",
            "address": {"socket_address": {"address": "127.0.0.1", "port_value": port}},
            "filter_chains": [fc("a"), fc("b")],
            "filter_chain_matcher": {"on_no_match": {"action": {
                "name": target, "typed_config": {"@type": "type.googleapis.com/google.protobuf.StringValue",
                                                 "value": target}}}}}


def response(s):
    """One whole response (a direct response with content-length) from s."""
    data = b""
    while True:
        head, sep, body = data.partition(b"\r\n\r\n")
        if sep:
            n = int(re.search(rb"content-length: *(\d+)", head, re.I).group(1))
            if len(body) >= n:
                return data
        chunk = s.recv(4096)
        assert chunk, data
        data += chunk


def test_lds_update_of_the_matcher_alone_is_in_place(procs, tmp_path):
    """Only the matcher changes: an in-place update, no chain drains, and
    an open connection keeps its chain."""
    lds = str(tmp_path / "lds.json")
    port, admin = free_port(), free_port()
    write_atomic(lds, discovery(1, lds_listener(port, "a")))
    p = Sharp(f"""admin:
  address: {{ socket_address: {{ address: 127.0.0.1, port_value: {admin} }} }}
dynamic_resources:
  lds_config: {{ path: {lds} }}
""")
    procs.append(p)
    p.wait_ready(admin)
    wait_for(lambda: get(port) == (0, "a"), 5, "the listener from LDS")
    s = socket.create_connection(("127.0.0.1", port), timeout=5 * SLOW)
    s.sendall(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n")
    assert response(s).endswith(b"a")
    write_atomic(lds, discovery(2, lds_listener(port, "b")))
    wait_for(lambda: get(port) == (0, "b"), 5 * SLOW, "the new matcher")
    assert stat(admin, "listener_manager.listener_in_place_updated") == 1
    assert stat(admin, "listener_manager.total_filter_chains_draining") == 0
    # the open connection stays on its chain, not drained
    s.sendall(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n")
    resp = response(s)
    assert resp.endswith(b"a") and b"connection: close" not in resp.lower(), resp
    s.close()
