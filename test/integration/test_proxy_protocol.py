"""The PROXY protocol listener filter (envoy.filters.listener.proxy_protocol):
clients on raw sockets send v1 lines and v2 binary headers (whole, or cut
into several segments) before their HTTP request. The header's source
becomes the connection's remote address (x-forwarded-for with
use_remote_address, %DOWNSTREAM_REMOTE_ADDRESS%, RBAC's remote_ip, filter
chain matching on source_prefix_ranges) and its destination the local one
(%DOWNSTREAM_LOCAL_ADDRESS%, destination_port); the socket's peer stays
the directly connected address. Malformed headers, missing ones, disallowed
versions and stalled clients close the connection and count, as Envoy."""
import json
import os
import socket
import struct
import tempfile
import time

import pytest

from conftest import SLOW, bootstrap_yaml, free_port, run_sharp_config, stat, validate_config, wait_for

PP = "type.googleapis.com/envoy.extensions.filters.listener.proxy_protocol.v3.ProxyProtocol"
SIG = b"\r\n\r\n\x00\r\nQUIT\n"
LOG_FORMAT = ("%DOWNSTREAM_REMOTE_ADDRESS% %DOWNSTREAM_DIRECT_REMOTE_ADDRESS_WITHOUT_PORT% "
              "%DOWNSTREAM_LOCAL_ADDRESS% %REQ(:PATH)%\\n")
REQ = b"GET /%s HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"


def indent(text, n):
    return "".join(" " * n + line if line.strip() else line for line in text.splitlines(True))


def pp_filter(cfg=""):
    f = f"- name: envoy.filters.listener.proxy_protocol\n  typed_config:\n    \"@type\": {PP}\n"
    return f + indent(cfg, 4)


def v1(src, dst, sport, dport, fam="TCP4"):
    return f"PROXY {fam} {src} {dst} {sport} {dport}\r\n".encode()


def v2(src, dst, sport, dport, cmd=0x21, tlvs=b""):
    if ":" in src:
        fam, a = 0x21, socket.inet_pton(socket.AF_INET6, src) + socket.inet_pton(socket.AF_INET6, dst)
    else:
        fam, a = 0x11, socket.inet_aton(src) + socket.inet_aton(dst)
    body = a + struct.pack("!HH", sport, dport) + tlvs
    return SIG + bytes([cmd, fam]) + struct.pack("!H", len(body)) + body


def v2_local():
    return SIG + bytes([0x20, 0x00, 0, 0])


def tlv(t, value):
    return bytes([t]) + struct.pack("!H", len(value)) + value


class Proxy:
    def __init__(self, procs, upstream, pp_cfg="", hcm_extra="", listener_extra="", rbac=None, log=True):
        self.listen, self.admin = free_port(), free_port()
        self.log = os.path.join(tempfile.mkdtemp(prefix="sharp-al-"), "access.log")
        al = ("access_log:\n- name: envoy.access_loggers.file\n  typed_config:\n"
              "    \"@type\": type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog\n"
              f"    path: {self.log}\n"
              f"    log_format: {{ text_format_source: {{ inline_string: \"{LOG_FORMAT}\" }} }}\n") if log else ""
        lx = "listener_filters:\n" + indent(pp_filter(pp_cfg), 0) + listener_extra
        y = bootstrap_yaml(self.listen, self.admin, {"app": [upstream.port]}, hcm_extra=al + hcm_extra,
                           listener_extra=lx)
        if rbac:
            f = ("- name: envoy.filters.http.rbac\n  typed_config:\n"
                 "    \"@type\": type.googleapis.com/envoy.extensions.filters.http.rbac.v3.RBAC\n" + indent(rbac, 4))
            out = y.replace("          http_filters:\n", "          http_filters:\n" + indent(f, 10), 1)
            assert out != y
            y = out
        run_sharp_config(procs, y, self.admin)

    def stat(self, name):
        return stat(self.admin, name)

    def log_line(self, path):
        def find():
            if os.path.exists(self.log):
                for line in open(self.log).read().splitlines():
                    if line.endswith(" /" + path):
                        return line
            return None
        return wait_for(find, 5, f"the access log line of /{path}")


def exchange(port, *pieces, pause=0.05, timeout=5):
    """Sends the pieces as separate segments (TCP_NODELAY, a pause between
    them) and reads until the proxy closes. Returns (status, body) with
    status 0 when the connection was closed without a response."""
    s = socket.create_connection(("127.0.0.1", port), timeout=timeout * SLOW)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    try:
        for i, p in enumerate(pieces):
            if i:
                time.sleep(pause)
            s.sendall(p)
        out = b""
        while True:
            try:
                c = s.recv(65536)
            except ConnectionResetError:
                break
            if not c:
                break
            out += c
    finally:
        s.close()
    if not out.startswith(b"HTTP/"):
        return 0, out
    head, _, body = out.partition(b"\r\n\r\n")
    return int(head.split()[1]), body


def upstream_headers(body):
    out = {}
    for k, v in json.loads(body)["headers"]:
        out.setdefault(k.lower(), v)
    return out


def test_v1_header_is_the_client_address(procs, path_upstream):
    p = Proxy(procs, path_upstream, hcm_extra="use_remote_address: true\n")
    st, body = exchange(p.listen, v1("192.0.2.10", "198.51.100.1", 40000, 443) + REQ % b"v1")
    assert st == 200, body
    h = upstream_headers(body)
    assert h["x-forwarded-for"] == "192.0.2.10"
    assert p.log_line("v1") == "192.0.2.10:40000 127.0.0.1 198.51.100.1:443 /v1"
    assert p.stat("proxy_proto.versions.v1.found") == 1
    assert p.stat("proxy_proto.versions.v2.found") == 0
    assert p.stat("downstream_cx_proxy_proto_error") == 0


def test_v2_tcp4_and_tcp6_in_fragments(procs, path_upstream):
    p = Proxy(procs, path_upstream, hcm_extra="use_remote_address: true\n")
    # the header cut inside the signature, inside the address block, then the request
    h4 = v2("203.0.113.5", "198.51.100.2", 1234, 8080)
    st, body = exchange(p.listen, h4[:5], h4[5:20], h4[20:], REQ % b"frag4")
    assert st == 200, body
    assert upstream_headers(body)["x-forwarded-for"] == "203.0.113.5"
    assert p.log_line("frag4") == "203.0.113.5:1234 127.0.0.1 198.51.100.2:8080 /frag4"
    h6 = v2("2001:db8::7", "2001:db8::8", 5555, 443, tlvs=tlv(0x04, b"\x00" * 4))
    st, body = exchange(p.listen, h6[:30], h6[30:] + REQ % b"frag6")
    assert st == 200, body
    assert upstream_headers(body)["x-forwarded-for"] == "2001:db8::7"
    assert p.log_line("frag6") == "[2001:db8::7]:5555 127.0.0.1 [2001:db8::8]:443 /frag6"
    # byte by byte
    st, body = exchange(p.listen, *[bytes([b]) for b in h4], REQ % b"bytes", pause=0.005)
    assert st == 200, body
    assert p.stat("proxy_proto.versions.v2.found") == 3


def test_local_command_and_unknown_keep_the_peer(procs, path_upstream):
    p = Proxy(procs, path_upstream, hcm_extra="use_remote_address: true\n")
    st, body = exchange(p.listen, v2_local() + REQ % b"local")
    assert st == 200, body
    assert upstream_headers(body)["x-forwarded-for"] == "127.0.0.1"
    line = p.log_line("local").split()
    assert line[0].startswith("127.0.0.1:") and line[2] == f"127.0.0.1:{p.listen}"
    st, body = exchange(p.listen, b"PROXY UNKNOWN\r\n" + REQ % b"unknown")
    assert st == 200, body
    assert upstream_headers(body)["x-forwarded-for"] == "127.0.0.1"
    assert p.stat("proxy_proto.versions.v1.found") == 1 and p.stat("proxy_proto.versions.v2.found") == 1


@pytest.mark.parametrize("data,stat_name", [
    (b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", "proxy_proto.not_found_disallowed"),
    (b"PROXY TCP4 192.0.2.1 198.51.100.1 1 99999\r\n" + REQ % b"x", "proxy_proto.versions.v1.error"),
    (b"PROXY TCP4 ::1 ::2 1 2\r\n" + REQ % b"x", "proxy_proto.versions.v1.error"),
    (b"PROXY " + b"A" * 200 + b"\r\n", "proxy_proto.versions.v1.error"),  # a line above 108 bytes
    (b"PROXY " + b"A" * 200, "proxy_proto.not_found_disallowed"),  # no line end within 108 bytes
    (SIG + bytes([0x21, 0x00, 0, 0]) + REQ % b"x", "proxy_proto.versions.v2.error"),     # PROXY over UNSPEC
    (SIG + bytes([0x21, 0x11, 0, 4]) + b"\0" * 4, "proxy_proto.versions.v2.error"),     # address block too short
    (v2("192.0.2.1", "198.51.100.1", 1, 2, tlvs=b"\x02\x00\x09ab") + REQ % b"x", "proxy_proto.versions.v2.error"),
    (v2("0.0.0.0", "198.51.100.1", 1, 2) + REQ % b"x", "proxy_proto.versions.v2.error"),
])
def test_malformed_headers_close_and_count(procs, path_upstream, data, stat_name):
    p = Proxy(procs, path_upstream, log=False)
    st, body = exchange(p.listen, data)
    assert st == 0 and body == b""
    assert p.stat(stat_name) == 1
    assert p.stat("downstream_cx_proxy_proto_error") == 1
    # the next client is served
    st, _ = exchange(p.listen, v1("192.0.2.1", "198.51.100.1", 1, 2) + REQ % b"ok")
    assert st == 200


def test_largest_v2_header_with_tlvs(procs, path_upstream):
    """A header of 16 + 65535 bytes (TLVs filling it) is read whole."""
    p = Proxy(procs, path_upstream, log=False, hcm_extra="use_remote_address: true\n")
    pad = 65535 - 12 - 3
    h = v2("192.0.2.99", "198.51.100.1", 1, 2, tlvs=tlv(0xee, b"z" * pad))
    assert len(h) == 16 + 65535
    st, body = exchange(p.listen, h[:1000], h[1000:] + REQ % b"big")
    assert st == 200
    assert upstream_headers(body)["x-forwarded-for"] == "192.0.2.99"


def client_hello(sni, pad):
    """A TLS ClientHello with server_name `sni` and a padding extension of
    `pad` bytes, cut into records of at most 16384 bytes."""
    name = sni.encode()
    sni_ext = struct.pack("!HHHBH", 0, len(name) + 5, len(name) + 3, 0, len(name)) + name
    exts = sni_ext + struct.pack("!HH", 0x15, pad) + b"\0" * pad
    body = b"\x03\x03" + b"r" * 32 + b"\x00" + b"\x00\x02\x13\x01" + b"\x01\x00" + struct.pack("!H", len(exts)) + exts
    msg = b"\x01" + struct.pack("!I", len(body))[1:] + body
    return b"".join(b"\x16\x03\x01" + struct.pack("!H", len(msg[i:i + 16384])) + msg[i:i + 16384]
                    for i in range(0, len(msg), 16384))


def test_largest_v2_header_then_a_large_client_hello(procs, path_upstream):
    """The largest header, then a ClientHello of 30 KB (within the TLS
    inspector's 64 KB): the inspector reads all of it after the header and
    finds its server name."""
    listen, admin = free_port(), free_port()
    tls_inspector = ("- name: envoy.filters.listener.tls_inspector\n  typed_config:\n    \"@type\": "
                     "type.googleapis.com/envoy.extensions.filters.listener.tls_inspector.v3.TlsInspector\n")
    y = bootstrap_yaml(listen, admin, {"app": [path_upstream.port]},
                       listener_extra="listener_filters:\n" + pp_filter() + tls_inspector)
    run_sharp_config(procs, y, admin)
    h = v2("192.0.2.99", "198.51.100.1", 1, 2, tlvs=tlv(0xee, b"z" * (65535 - 12 - 3)))
    ch = client_hello("big.example", 30000)
    s = socket.create_connection(("127.0.0.1", listen), timeout=5 * SLOW)
    s.sendall(h + ch)
    wait_for(lambda: stat(admin, "tls_inspector.sni_found") + stat(admin, "tls_inspector.tls_not_found") > 0,
             5, "the TLS inspector's verdict")
    s.close()
    assert stat(admin, "tls_inspector.tls_not_found") == 0
    assert stat(admin, "tls_inspector.sni_found") == 1
    assert stat(admin, "proxy_proto.versions.v2.found") == 1


def test_allow_requests_without_proxy_protocol(procs, path_upstream):
    p = Proxy(procs, path_upstream, "allow_requests_without_proxy_protocol: true\n",
              hcm_extra="use_remote_address: true\n")
    st, body = exchange(p.listen, REQ % b"plain")
    assert st == 200
    assert upstream_headers(body)["x-forwarded-for"] == "127.0.0.1"
    st, body = exchange(p.listen, v1("192.0.2.3", "198.51.100.1", 1, 2) + REQ % b"with")
    assert st == 200
    assert upstream_headers(body)["x-forwarded-for"] == "192.0.2.3"
    assert p.stat("proxy_proto.not_found_allowed") == 1
    assert p.stat("proxy_proto.versions.v1.found") == 1


def test_disallowed_versions_and_stat_prefix(procs, path_upstream):
    p = Proxy(procs, path_upstream, "disallowed_versions: [V1]\nstat_prefix: edge\n", log=False)
    st, _ = exchange(p.listen, v1("192.0.2.3", "198.51.100.1", 1, 2) + REQ % b"x")
    assert st == 0
    assert p.stat("proxy_proto.edge.versions.v1.found") == 1
    assert p.stat("proxy_proto.edge.versions.v1.disallowed") == 1
    assert p.stat("downstream_cx_proxy_proto_error") == 0  # a denial is not an error
    st, _ = exchange(p.listen, v2("192.0.2.3", "198.51.100.1", 1, 2) + REQ % b"y")
    assert st == 200
    assert p.stat("proxy_proto.edge.versions.v2.found") == 1
    assert p.stat("proxy_proto.versions.v2.found") is None


def test_stalled_client_is_closed_at_listener_filters_timeout(procs, path_upstream):
    p = Proxy(procs, path_upstream, listener_extra="listener_filters_timeout: 0.3s\n", log=False)
    t0 = time.time()
    st, _ = exchange(p.listen, b"PROXY TCP4 192.0.2.1", timeout=10)
    assert st == 0 and time.time() - t0 < 5 * SLOW
    t0 = time.time()
    st, _ = exchange(p.listen, SIG[:8], timeout=10)
    assert st == 0 and time.time() - t0 < 5 * SLOW
    assert p.stat(f"listener.127.0.0.1_{p.listen}.downstream_pre_cx_timeout") == 2
    assert p.stat("downstream_cx_proxy_proto_error") == 0
    wait_for(lambda: p.stat(f"listener.127.0.0.1_{p.listen}.downstream_pre_cx_active") == 0, 5,
             "no connection left in the listener filters")


def test_continue_on_timeout_keeps_the_bytes(procs, path_upstream):
    """With continue_on_listener_filters_timeout an incomplete header is
    given up: the connection goes on with its own address and all its bytes
    (here an HTTP/1 parser then refuses them)."""
    p = Proxy(procs, path_upstream, "allow_requests_without_proxy_protocol: true\n",
              listener_extra="listener_filters_timeout: 0.2s\ncontinue_on_listener_filters_timeout: true\n",
              log=False)
    st, _ = exchange(p.listen, b"PROX", b"Y garbage\r\n\r\n", pause=0.6)
    assert st == 400
    assert p.stat(f"listener.127.0.0.1_{p.listen}.downstream_pre_cx_timeout") == 1


def test_rbac_sees_the_header_source(procs, path_upstream):
    rbac = """\
rules:
  action: ALLOW
  policies:
    clients:
      permissions: [{url_path: {path: {prefix: /c}}}]
      principals: [{remote_ip: {address_prefix: 192.0.2.0, prefix_len: 24}}]
    direct:
      permissions: [{url_path: {path: {prefix: /d}}}]
      principals: [{direct_remote_ip: {address_prefix: 192.0.2.0, prefix_len: 24}}]
"""
    p = Proxy(procs, path_upstream, rbac=rbac, log=False)
    assert exchange(p.listen, v1("192.0.2.44", "198.51.100.1", 1, 2) + REQ % b"c")[0] == 200
    assert exchange(p.listen, v1("203.0.113.44", "198.51.100.1", 1, 2) + REQ % b"c")[0] == 403
    # the directly connected peer is still 127.0.0.1
    assert exchange(p.listen, v1("192.0.2.44", "198.51.100.1", 1, 2) + REQ % b"d")[0] == 403


def chain(name, match=""):
    m = f"  filter_chain_match: {match}\n" if match else ""
    return f"""\
- name: {name}
{m}  filters:
  - name: envoy.filters.network.http_connection_manager
    typed_config:
      "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
      stat_prefix: {name}
      route_config:
        virtual_hosts:
        - name: all
          domains: ["*"]
          routes:
          - match: {{ prefix: "/" }}
            direct_response: {{ status: 200, body: {{ inline_string: "{name}" }} }}
      http_filters:
      - name: envoy.filters.http.router
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router
"""


def test_filter_chain_match_after_the_header(procs):
    """Envoy runs listener filters before choosing the chain: the header's
    destination port and source address pick it; direct_source_prefix_ranges
    still sees the socket's peer."""
    listen, admin = free_port(), free_port()
    chains = (chain("byport", "{ destination_port: 8443 }") +
              chain("bysrc", "{ direct_source_prefix_ranges: [{ address_prefix: 127.0.0.1, prefix_len: 32 }], "
                             "source_prefix_ranges: [{ address_prefix: 192.0.2.0, prefix_len: 24 }], "
                             "source_ports: [4000] }") +
              chain("notdirect", "{ direct_source_prefix_ranges: [{ address_prefix: 203.0.113.0, prefix_len: 24 }] }"))
    y = f"""\
admin:
  address: {{ socket_address: {{ address: 127.0.0.1, port_value: {admin} }} }}
static_resources:
  listeners:
  - name: pp
    address: {{ socket_address: {{ address: 127.0.0.1, port_value: {listen} }} }}
    listener_filters:
{indent(pp_filter(), 4)}    filter_chains:
{indent(chains, 4)}"""
    run_sharp_config(procs, y, admin)
    assert exchange(listen, v1("192.0.2.5", "198.51.100.1", 4000, 80) + REQ % b"a") == (200, b"bysrc")
    assert exchange(listen, v1("192.0.2.5", "198.51.100.1", 4000, 8443) + REQ % b"a") == (200, b"byport")
    # a source the header gives, not the peer, fails direct_source_prefix_ranges: no chain
    assert exchange(listen, v1("203.0.113.9", "198.51.100.1", 4000, 80) + REQ % b"a")[0] == 0
    assert exchange(listen, v1("192.0.2.5", "198.51.100.1", 4001, 80) + REQ % b"a")[0] == 0
    assert stat(admin, f"listener.127.0.0.1_{listen}.no_filter_chain_match") == 2


def tcp_proxy_yaml(listen, admin, upstream_port, pp_cfg="", pre_filters="", tp_extra=""):
    return f"""\
admin:
  address: {{ socket_address: {{ address: 127.0.0.1, port_value: {admin} }} }}
static_resources:
  listeners:
  - name: pp
    address: {{ socket_address: {{ address: 127.0.0.1, port_value: {listen} }} }}
    listener_filters:
{indent(pp_filter(pp_cfg), 4)}    filter_chains:
    - filters:
{indent(pre_filters, 6)}      - name: envoy.filters.network.tcp_proxy
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy
          stat_prefix: tcp
          cluster: app
{indent(tp_extra, 10)}  clusters:
  - name: app
    type: STATIC
    connect_timeout: 1s
    load_assignment:
      cluster_name: app
      endpoints:
      - lb_endpoints:
        - endpoint: {{ address: {{ socket_address: {{ address: 127.0.0.1, port_value: {upstream_port} }} }} }}
"""


def test_network_rbac_sees_both_addresses(procs, path_upstream):
    """Network RBAC in front of a TCP proxy: remote_ip is the header's
    source, direct_remote_ip the socket's peer; a TLV rule's metadata is
    there for its metadata principal."""
    listen, admin = free_port(), free_port()
    rbac = """\
- name: envoy.filters.network.rbac
  typed_config:
    "@type": type.googleapis.com/envoy.extensions.filters.network.rbac.v3.RBAC
    stat_prefix: pp
    rules:
      action: ALLOW
      policies:
        both:
          permissions: [{any: true}]
          principals:
          - and_ids:
              ids:
              - remote_ip: {address_prefix: 192.0.2.0, prefix_len: 24}
              - direct_remote_ip: {address_prefix: 127.0.0.1, prefix_len: 32}
              - metadata: {filter: envoy.filters.listener.proxy_protocol, path: [{key: tenant}],
                           value: {string_match: {exact: t1}}}
"""
    run_sharp_config(procs, tcp_proxy_yaml(listen, admin, path_upstream.port,
                                           "rules: [{ tlv_type: 0xe0, on_tlv_present: { key: tenant } }]\n", rbac),
                     admin)
    ok = v2("192.0.2.5", "198.51.100.1", 1, 2, tlvs=tlv(0xe0, b"t1"))
    assert exchange(listen, ok + REQ % b"n")[0] == 200
    assert exchange(listen, v2("203.0.113.5", "198.51.100.1", 1, 2, tlvs=tlv(0xe0, b"t1")) + REQ % b"n")[0] == 0
    assert exchange(listen, v2("192.0.2.5", "198.51.100.1", 1, 2, tlvs=tlv(0xe0, b"t2")) + REQ % b"n")[0] == 0
    assert stat(admin, "pp.rbac.allowed") == 1 and stat(admin, "pp.rbac.denied") == 2


def test_tcp_proxy_logs_tlv_metadata(procs, path_upstream):
    listen, admin = free_port(), free_port()
    log = os.path.join(tempfile.mkdtemp(prefix="sharp-al-"), "tcp.log")
    fmt = ("%DOWNSTREAM_REMOTE_ADDRESS% %DOWNSTREAM_DIRECT_REMOTE_ADDRESS_WITHOUT_PORT% "
           "%DYNAMIC_METADATA(envoy.filters.listener.proxy_protocol:authority)% %DYNAMIC_METADATA(tenant:id)%\\n")
    rules = """\
rules:
- tlv_type: 2
  on_tlv_present: { key: authority }
- tlv_type: 0xe1
  on_tlv_present: { metadata_namespace: tenant, key: id }
"""
    y = f"""\
admin:
  address: {{ socket_address: {{ address: 127.0.0.1, port_value: {admin} }} }}
static_resources:
  listeners:
  - name: pp
    address: {{ socket_address: {{ address: 127.0.0.1, port_value: {listen} }} }}
    listener_filters:
{indent(pp_filter(rules), 4)}    filter_chains:
    - filters:
      - name: envoy.filters.network.tcp_proxy
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy
          stat_prefix: tcp
          cluster: app
          access_log:
          - name: envoy.access_loggers.file
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog
              path: {log}
              log_format: {{ text_format_source: {{ inline_string: "{fmt}" }} }}
  clusters:
  - name: app
    type: STATIC
    connect_timeout: 1s
    load_assignment:
      cluster_name: app
      endpoints:
      - lb_endpoints:
        - endpoint: {{ address: {{ socket_address: {{ address: 127.0.0.1, port_value: {path_upstream.port} }} }} }}
"""
    run_sharp_config(procs, y, admin)
    h = v2("192.0.2.77", "198.51.100.1", 7777, 443, tlvs=tlv(2, b"example.com") + tlv(0xe1, b"t-\xff1"))
    st, _ = exchange(listen, h + REQ % b"tcp")
    assert st == 200
    line = wait_for(lambda: os.path.exists(log) and open(log).read().strip(), 5, "the TCP proxy's log line")
    assert line == "192.0.2.77:7777 127.0.0.1 example.com t-!1"


def test_config_refusals():
    def cfg(listener_filters):
        return f"""\
static_resources:
  listeners:
  - name: pp
    address: {{ socket_address: {{ address: 127.0.0.1, port_value: 10000 }} }}
    listener_filters:
{indent(listener_filters, 4)}    filter_chains:
{indent(chain("c"), 4)}"""
    rc, out = validate_config(cfg(pp_filter("pass_through_tlvs: { match_type: INCLUDE_ALL }\n")))
    assert rc != 0 and "pass_through_tlvs" in out, out
    rc, out = validate_config(cfg(pp_filter("disallowed_versions: [V1, V2]\n")))
    assert rc != 0 and "all proxy protocol versions are disallowed" in out, out
    rc, out = validate_config(cfg(pp_filter("rules: [{ tlv_type: 256, on_tlv_present: { key: k } }]\n")))
    assert rc != 0 and "tlv_type" in out, out
    rc, out = validate_config(cfg(pp_filter("rules: [{ tlv_type: 1, on_tlv_present: { key: '' } }]\n")))
    assert rc != 0 and "key" in out, out
    tls = ("- name: envoy.filters.listener.tls_inspector\n  typed_config:\n"
           "    \"@type\": type.googleapis.com/envoy.extensions.filters.listener.tls_inspector.v3.TlsInspector\n")
    rc, out = validate_config(cfg(tls + pp_filter()))
    assert rc != 0 and "proxy_protocol" in out, out
    rc, out = validate_config(cfg(pp_filter() + tls))
    assert rc == 0, out
    rc, out = validate_config(cfg("- name: envoy.filters.listener.proxy_protocol\n"))
    assert rc == 0, out
    rc, out = validate_config(cfg(pp_filter()).replace("    listener_filters:\n", "    use_original_dst: true\n"
                                                        "    listener_filters:\n", 1))
    assert rc != 0 and "use_original_dst" in out, out


def test_original_dst_cluster_connects_to_the_header_destination(procs, path_upstream):
    """The header's destination is the restored local address an
    ORIGINAL_DST cluster connects to (Envoy's localAddressRestored)."""
    listen, admin = free_port(), free_port()
    y = bootstrap_yaml(listen, admin, {"unused": [1]}, routes='- match: { prefix: "/" }\n  route: { cluster: odst }\n',
                       listener_extra="listener_filters:\n" + pp_filter())
    y += ("  - name: odst\n    type: ORIGINAL_DST\n    lb_policy: CLUSTER_PROVIDED\n    connect_timeout: 1s\n")
    run_sharp_config(procs, y, admin)
    st, body = exchange(listen, v1("192.0.2.1", "127.0.0.1", 1234, path_upstream.port) + REQ % b"odst")
    assert st == 200, body
    assert json.loads(body)["path"] == "/odst"
    # a destination where nothing listens: the cluster fails to connect
    st, _ = exchange(listen, v1("192.0.2.1", "127.0.0.1", 1234, free_port()) + REQ % b"odst")
    assert st == 503


def test_inspectors_read_the_bytes_after_the_header(procs):
    """The HTTP inspector sees the request line after the header (the
    header cut across segments, the request in the same one as its end)."""
    listen, admin = free_port(), free_port()
    http_inspector = "- name: envoy.filters.listener.http_inspector\n"
    dflt = "  " + chain("other")[2:]  # the chain's fields, as a mapping
    y = f"""\
admin:
  address: {{ socket_address: {{ address: 127.0.0.1, port_value: {admin} }} }}
static_resources:
  listeners:
  - name: pp
    address: {{ socket_address: {{ address: 127.0.0.1, port_value: {listen} }} }}
    listener_filters:
{indent(pp_filter() + http_inspector, 4)}    filter_chains:
{indent(chain("h1", "{ application_protocols: [http/1.1] }"), 4)}    default_filter_chain:
{indent(dflt, 4)}"""
    run_sharp_config(procs, y, admin)
    h = v2("192.0.2.1", "198.51.100.1", 1, 2)
    assert exchange(listen, h[:10], h[10:] + REQ % b"i") == (200, b"h1")
    # HTTP/1.0 takes the default chain (whose connection manager refuses it)
    assert exchange(listen, h, b"GET / HTTP/1.0\r\n\r\n")[0] == 426
    assert stat(admin, "http.other.downstream_cx_total") == 1
    assert stat(admin, "http.h1.downstream_cx_total") == 1
    assert stat(admin, "http_inspector.http11_found") == 1
    assert stat(admin, "http_inspector.http10_found") == 1


def test_tls_after_the_header(procs, path_upstream, pki):
    """The header, then a TLS handshake: the TLS inspector reads the
    ClientHello after the header and the chain's TLS terminates it."""
    import ssl
    from conftest import TLS_HOST
    listen, admin = free_port(), free_port()
    tls_inspector = ("- name: envoy.filters.listener.tls_inspector\n  typed_config:\n    \"@type\": "
                     "type.googleapis.com/envoy.extensions.filters.listener.tls_inspector.v3.TlsInspector\n")
    y = bootstrap_yaml(listen, admin, {"app": [path_upstream.port]}, hcm_extra="use_remote_address: true\n",
                       listener_extra="listener_filters:\n" + pp_filter() + tls_inspector)
    ctx = {"@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext",
           "common_tls_context": {"tls_certificates": [{"certificate_chain": {"filename": f"{pki}/rsa.crt"},
                                                        "private_key": {"filename": f"{pki}/rsa.key"}}]}}
    ts = "transport_socket: {name: envoy.transport_sockets.tls, typed_config: " + json.dumps(ctx) + "}"
    out = y.replace("    filter_chains:\n    - filters:\n", f"    filter_chains:\n    - {ts}\n      filters:\n", 1)
    assert out != y
    run_sharp_config(procs, out, admin)
    raw = socket.create_connection(("127.0.0.1", listen), timeout=10 * SLOW)
    raw.sendall(v2("192.0.2.200", "198.51.100.1", 999, 443))
    c = ssl.create_default_context(cafile=f"{pki}/ca.crt").wrap_socket(raw, server_hostname=TLS_HOST)
    c.sendall(REQ % b"tls")
    out = b""
    while True:
        d = c.recv(65536)
        if not d:
            break
        out += d
    c.close()
    head, _, body = out.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200"), head
    assert upstream_headers(body)["x-forwarded-for"] == "192.0.2.200"
    assert stat(admin, "tls_inspector.sni_found") == 1
