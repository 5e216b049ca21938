"""ORIGINAL_DST clusters (lb_policy CLUSTER_PROVIDED) and the original_dst
listener filter, as Envoy's Istio sidecars use them for their
PassthroughCluster: the host of a request is the address an
x-envoy-original-dst-host style header names, or the connection's original
destination (SO_ORIGINAL_DST after an iptables REDIRECT); hosts are made on
demand and removed by the cleanup once idle.

The SO_ORIGINAL_DST tests build a network namespace of their own (as root):
loopback up, an iptables nat OUTPUT REDIRECT of the client's connections to
SHARP's port, and SHARP, the upstreams and the client all inside it; the
namespace is deleted afterwards (which takes its rules along)."""
import ctypes
import json
import os
import shutil
import socket
import subprocess
import textwrap
import threading
import time
import uuid

import pytest

from conftest import (SANITIZER_MARKS, SHARP, SLOW, UPSTREAM, Proc, Sharp, Upstream, admin_get, free_port,
                      h1_request, stat, validate_config, wait_for)


def odst_cluster(name="odst", extra=""):
    return f"""\
  - name: {name}
    type: ORIGINAL_DST
    lb_policy: CLUSTER_PROVIDED
    connect_timeout: 1s
{textwrap.indent(extra, '    ')}"""


def http_bootstrap(listen, admin, cluster_text, listener_filters=""):
    return f"""\
admin:
  address: {{ socket_address: {{ address: 127.0.0.1, port_value: {admin} }} }}
static_resources:
  listeners:
  - name: listener_0
    address: {{ socket_address: {{ address: 127.0.0.1, port_value: {listen} }} }}
{textwrap.indent(listener_filters, '    ')}    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: ingress_http
          route_config:
            virtual_hosts:
            - name: all
              domains: ["*"]
              routes:
              - match: {{ prefix: "/" }}
                route: {{ cluster: odst }}
          http_filters:
          - name: envoy.filters.http.router
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router
  clusters:
{cluster_text}"""


def start(procs, text, admin):
    s = Sharp(text)
    procs.append(s)
    s.wait_ready(admin)
    return s


class AddrUpstream(Proc):
    """The test upstream on a given loopback address."""

    def __init__(self, addr, name, port=0, netns=None):
        pre = ["ip", "netns", "exec", netns] if netns else []
        super().__init__([*pre, UPSTREAM, "--address", addr, "--port", str(port), "--name", name, "--quiet"],
                         stdout=subprocess.PIPE)
        line = self.p.stdout.readline().decode()
        assert line.startswith("listening on"), line
        self.port = int(line.strip().rsplit(":", 1)[1])


def hosts_of(admin, cluster="odst"):
    data = json.loads(admin_get(admin, "/clusters?format=json"))
    for c in data["cluster_statuses"]:
        if c["name"] == cluster:
            return sorted(f'{h["address"]["socket_address"]["address"]}:{h["address"]["socket_address"]["port_value"]}'
                          for h in c.get("host_statuses", []))
    return None


def test_header_routes_each_request_to_the_address_it_names(procs):
    a = AddrUpstream("127.0.0.1", "one")
    b = AddrUpstream("127.0.0.2", "two")
    procs += [a, b]
    listen, admin = free_port(), free_port()
    start(procs, http_bootstrap(listen, admin, odst_cluster(extra="original_dst_lb_config: { use_http_header: true }\n")),
          admin)
    for _ in range(3):
        for u, name, ip in ((a, "one", "127.0.0.1"), (b, "two", "127.0.0.2")):
            st, h, _ = h1_request(listen, headers={"x-envoy-original-dst-host": f"{ip}:{u.port}"})
            assert st == 200 and h["x-upstream-name"] == name
    # both hosts reach the main thread: /clusters, membership, the hostname Envoy gives them
    want = sorted([f"127.0.0.1:{a.port}", f"127.0.0.2:{b.port}"])
    wait_for(lambda: hosts_of(admin) == want, 5, "both hosts in /clusters")
    assert stat(admin, "cluster.odst.membership_total") == 2
    text = admin_get(admin, "/clusters")
    assert f"odst::127.0.0.1:{a.port}::hostname::odst127.0.0.1:{a.port}" in text
    assert f"odst::127.0.0.2:{b.port}::rq_success::3" in text
    assert stat(admin, "cluster.odst.upstream_rq_200") == 6
    assert stat(admin, "cluster.odst.original_dst_host_invalid") == 0


def test_header_name_and_port_override(procs):
    u = AddrUpstream("127.0.0.2", "override")
    procs.append(u)
    listen, admin = free_port(), free_port()
    cfg = ("original_dst_lb_config:\n  use_http_header: true\n  http_header_name: X-Dst\n"
           f"  upstream_port_override: {u.port}\n")
    start(procs, http_bootstrap(listen, admin, odst_cluster(extra=cfg)), admin)
    # the header's port is replaced; the default header name is not read
    st, h, _ = h1_request(listen, headers={"x-dst": "127.0.0.2:1"})
    assert st == 200 and h["x-upstream-name"] == "override"
    st, _, _ = h1_request(listen, headers={"x-envoy-original-dst-host": f"127.0.0.2:{u.port}"})
    assert st == 503
    wait_for(lambda: hosts_of(admin) == [f"127.0.0.2:{u.port}"], 5, "the overridden host in /clusters")


def test_authority_as_the_header(procs):
    """terminate_http1_connect.yaml's form: http_header_name ":authority"."""
    u = AddrUpstream("127.0.0.1", "auth")
    procs.append(u)
    listen, admin = free_port(), free_port()
    cfg = 'original_dst_lb_config: { use_http_header: true, http_header_name: ":authority" }\n'
    start(procs, http_bootstrap(listen, admin, odst_cluster(extra=cfg)), admin)
    st, h, _ = h1_request(listen, headers={"host": f"127.0.0.1:{u.port}"})
    assert st == 200 and h["x-upstream-name"] == "auth"


@pytest.mark.parametrize("value", ["not-an-address", "127.0.0.1", "127.0.0.1:65536", "[::1]", "::1:80",
                                   "example.com:80", "127.0.0.1:8x"])
def test_bad_header_value_is_503(procs, value):
    listen, admin = free_port(), free_port()
    start(procs, http_bootstrap(listen, admin, odst_cluster(extra="original_dst_lb_config: { use_http_header: true }\n")),
          admin)
    st, _, body = h1_request(listen, headers={"x-envoy-original-dst-host": value})
    assert st == 503 and b"no healthy upstream" in body
    assert stat(admin, "cluster.odst.original_dst_host_invalid") == 1
    # no header and no original destination: no host either, nothing invalid
    st, _, _ = h1_request(listen)
    assert st == 503
    assert stat(admin, "cluster.odst.original_dst_host_invalid") == 1
    assert hosts_of(admin) == []


def test_ipv6_header(procs):
    try:
        u = AddrUpstream("::1", "six")
    except AssertionError:
        pytest.skip("no IPv6 loopback")
    procs.append(u)
    listen, admin = free_port(), free_port()
    start(procs, http_bootstrap(listen, admin, odst_cluster(extra="original_dst_lb_config: { use_http_header: true }\n")),
          admin)
    st, h, _ = h1_request(listen, headers={"x-envoy-original-dst-host": f"[::1]:{u.port}"})
    assert st == 200 and h["x-upstream-name"] == "six"


def test_cleanup_removes_idle_hosts(procs):
    """cleanup_interval: a host not chosen since the previous pass and with
    no connection left (the upstream idle timeout closed it) is removed;
    the address gets a new host when it is used again."""
    u = AddrUpstream("127.0.0.1", "idle")
    procs.append(u)
    listen, admin = free_port(), free_port()
    cfg = ("cleanup_interval: 1s\noriginal_dst_lb_config: { use_http_header: true }\n"
           "common_http_protocol_options: { idle_timeout: 0.3s }\n")
    start(procs, http_bootstrap(listen, admin, odst_cluster(extra=cfg)), admin)
    hdr = {"x-envoy-original-dst-host": f"127.0.0.1:{u.port}"}
    assert h1_request(listen, headers=hdr)[0] == 200
    wait_for(lambda: hosts_of(admin) == [f"127.0.0.1:{u.port}"], 5, "the host in /clusters")
    t0 = time.time()
    wait_for(lambda: hosts_of(admin) == [], 10, "the idle host removed")
    assert time.time() - t0 >= 0.9  # not before a full interval unused
    assert stat(admin, "cluster.odst.membership_total") == 0
    assert stat(admin, "cluster.odst.upstream_cx_destroy") >= 1
    assert h1_request(listen, headers=hdr)[0] == 200
    wait_for(lambda: hosts_of(admin) == [f"127.0.0.1:{u.port}"], 5, "the host back")


def test_busy_host_is_kept(procs):
    """A host whose request is in flight outlives several cleanups; the
    request completes."""
    u = AddrUpstream("127.0.0.1", "slow")
    procs.append(u)
    listen, admin = free_port(), free_port()
    cfg = "cleanup_interval: 1s\noriginal_dst_lb_config: { use_http_header: true }\n"
    start(procs, http_bootstrap(listen, admin, odst_cluster(extra=cfg)), admin)
    hdr = {"x-envoy-original-dst-host": f"127.0.0.1:{u.port}"}
    st, _, body = h1_request(listen, path="/?delay_ms=3500", headers=hdr)
    assert st == 200
    assert hosts_of(admin) == [f"127.0.0.1:{u.port}"]


BAD = [
    ("lb_policy: ROUND_ROBIN", "cluster: LB policy ROUND_ROBIN is not valid for Cluster type ORIGINAL_DST. Only "
     "'CLUSTER_PROVIDED' is allowed with cluster type 'ORIGINAL_DST'"),
    ("load_assignment: { cluster_name: odst }", "ORIGINAL_DST clusters must have no load assignment configured"),
    ("original_dst_lb_config: { http_header_name: x-dst }", "invalid config http_header_name=x-dst and "
     "use_http_header is false"),
    ("original_dst_lb_config: { metadata_key: { key: k, path: [{ key: p }] } }", "metadata_key"),
    ("original_dst_lb_config: { use_http_header: true, upstream_port_override: 70000 }", "upstream_port_override"),
    ("cleanup_interval: 0s", "cleanup_interval"),
    ("health_checks: [{ timeout: 1s, interval: 1s, unhealthy_threshold: 1, healthy_threshold: 1, "
     "tcp_health_check: {} }]", "health_checks"),
    ("outlier_detection: {}", "outlier_detection"),
    ("common_lb_config: { healthy_panic_threshold: { value: 10 } }", "common_lb_config"),
    ("load_balancing_policy: { policies: [{ typed_extension_config: { name: rr, typed_config: { '@type': "
     "type.googleapis.com/envoy.extensions.load_balancing_policies.round_robin.v3.RoundRobin } } }] }",
     "load_balancing_policy"),
]


@pytest.mark.parametrize("extra,msg", BAD)
def test_refused_like_envoy(extra, msg):
    text = http_bootstrap(free_port(), free_port(), odst_cluster(extra=extra + "\n"))
    if extra.startswith("lb_policy"):
        text = text.replace("    lb_policy: CLUSTER_PROVIDED\n", "")
    rc, out = validate_config(text)
    assert rc != 0 and msg in out, out


def test_original_dst_fields_refused_elsewhere():
    static = """\
  - name: odst
    type: STATIC
    connect_timeout: 1s
    load_assignment: { cluster_name: odst }
"""
    for extra, msg in (("    lb_policy: CLUSTER_PROVIDED\n", "cluster provided LB specified but cluster 'odst' did not "
                        "provide one"),
                       ("    cleanup_interval: 2s\n", "cleanup_interval only applies to ORIGINAL_DST clusters"),
                       ("    original_dst_lb_config: { use_http_header: true }\n",
                        "original_dst_lb_config only applies to ORIGINAL_DST clusters")):
        rc, out = validate_config(http_bootstrap(free_port(), free_port(), static + extra))
        assert rc != 0 and msg in out, out


def test_istio_passthrough_shape_validates():
    lf = """\
listener_filters:
- name: envoy.filters.listener.original_dst
  typed_config:
    "@type": type.googleapis.com/envoy.extensions.filters.listener.original_dst.v3.OriginalDst
use_original_dst: true
"""
    text = http_bootstrap(free_port(), free_port(), odst_cluster(extra="cleanup_interval: 60s\n"), lf)
    rc, out = validate_config(text)
    assert rc == 0, out


# ---- SO_ORIGINAL_DST, in a network namespace of the test's own ----

CLONE_NEWNET = 0x40000000
_libc = ctypes.CDLL("libc.so.6", use_errno=True)


def _netns_problem():
    if os.geteuid() != 0:
        return "needs root: a network namespace and iptables nat rules"
    for tool in ("ip", "iptables"):
        if shutil.which(tool) is None:
            return f"needs {tool}"
    return None


needs_netns = pytest.mark.skipif(_netns_problem() is not None, reason=_netns_problem() or "")


def _run(*args):
    r = subprocess.run(args, capture_output=True, text=True, timeout=30)
    if r.returncode != 0:
        raise RuntimeError(f"{' '.join(args)}: {r.stderr.strip()}")
    return r.stdout


class Netns:
    """A network namespace with loopback up, deleted by close()."""

    def __init__(self):
        self.name = "sharp-odst-" + uuid.uuid4().hex[:8]
        _run("ip", "netns", "add", self.name)
        try:
            _run("ip", "netns", "exec", self.name, "ip", "link", "set", "lo", "up")
        except Exception:
            self.close()
            raise

    def iptables(self, *args):
        try:
            _run("ip", "netns", "exec", self.name, "iptables", *args)
        except RuntimeError as e:
            pytest.skip(f"iptables nat REDIRECT unavailable in a network namespace: {e}")

    def call(self, fn, *args):
        """fn(*args) on a thread inside the namespace (a namespace is per
        thread: the sockets fn makes live there)."""
        out = {}

        def body():
            fd = os.open(f"/var/run/netns/{self.name}", os.O_RDONLY)
            try:
                if _libc.setns(fd, CLONE_NEWNET) != 0:
                    raise OSError(ctypes.get_errno(), "setns")
            finally:
                os.close(fd)
            try:
                out["v"] = fn(*args)
            except BaseException as e:  # noqa: BLE001 - handed to the caller
                out["e"] = e

        t = threading.Thread(target=body)
        t.start()
        t.join(60 * SLOW)
        if "e" in out:
            raise out["e"]
        return out.get("v")

    def close(self):
        subprocess.run(["ip", "netns", "del", self.name], capture_output=True, timeout=30)


@pytest.fixture
def netns(procs):
    ns = Netns()
    yield ns
    # the processes in it first (procs' teardown runs after this one: stop
    # them here); SHARP must exit 0 from SIGTERM
    bad = []
    for p in reversed(procs):
        if p.p.poll() is None:
            rc = p.stop()
            if SHARP in p.args and rc != 0:
                bad.append(f"sharp exited {rc}:\n{p.output()[-2000:]}")
    ns.close()
    assert not bad, "\n".join(bad)


SHARP_PORT, ADMIN = 15001, 15000
CLIENT_SRC = "127.0.0.3"  # only the client's connections are redirected, not SHARP's own


def ns_sharp(procs, ns, text):
    d = os.path.join("/tmp", ns.name)
    os.makedirs(d, exist_ok=True)
    path = os.path.join(d, "bootstrap.yaml")
    with open(path, "w") as f:
        f.write(text)
    s = Proc(["ip", "netns", "exec", ns.name, SHARP, "-c", path, "--concurrency", "2", "-l", "info"])
    procs.append(s)

    def ready():
        if s.p.poll() is not None:
            raise RuntimeError("sharp exited: " + s.output())
        try:
            return ns.call(lambda: admin_get(ADMIN, "/ready"))
        except Exception:
            return None
    wait_for(ready, 15, "sharp ready in the namespace")
    return s


def ns_http(port, dst, headers=None, path="/"):
    """An HTTP/1.1 request to dst (ip, port) from CLIENT_SRC; returns status, headers, body."""
    with socket.create_connection(dst, timeout=10 * SLOW, source_address=(CLIENT_SRC, 0)) as c:
        hs = "".join(f"{k}: {v}\r\n" for k, v in (headers or {}).items())
        c.sendall(f"GET {path} HTTP/1.1\r\nhost: x\r\nconnection: close\r\n{hs}\r\n".encode())
        data = b""
        while True:
            b = c.recv(65536)
            if not b:
                break
            data += b
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode().split("\r\n")
    hdrs = dict((k.lower(), v.strip()) for k, _, v in (ln.partition(":") for ln in lines[1:]))
    return int(lines[0].split()[1]), hdrs, body


ODST_LF = """\
listener_filters:
- name: envoy.filters.listener.original_dst
  typed_config:
    "@type": type.googleapis.com/envoy.extensions.filters.listener.original_dst.v3.OriginalDst
"""


def ns_http_bootstrap(cluster_extra="", lf=ODST_LF):
    text = http_bootstrap(SHARP_PORT, ADMIN, odst_cluster(extra=cluster_extra), lf)
    return text.replace("address: 127.0.0.1, port_value: 15001", "address: 0.0.0.0, port_value: 15001")


def redirect(ns, port):
    ns.iptables("-t", "nat", "-A", "OUTPUT", "-p", "tcp", "-s", CLIENT_SRC, "--dport", str(port), "-j", "REDIRECT",
                "--to-ports", str(SHARP_PORT))


@needs_netns
def test_http_to_the_original_destination(procs, netns):
    a = AddrUpstream("127.0.0.1", "first", netns=netns.name)
    b = AddrUpstream("127.0.0.2", "second", netns=netns.name)
    procs += [a, b]
    redirect(netns, a.port)
    redirect(netns, b.port)
    ns_sharp(procs, netns, ns_http_bootstrap())
    st, h, _ = netns.call(ns_http, SHARP_PORT, ("127.0.0.1", a.port))
    assert st == 200 and h["x-upstream-name"] == "first"
    st, h, _ = netns.call(ns_http, SHARP_PORT, ("127.0.0.2", b.port))
    assert st == 200 and h["x-upstream-name"] == "second"
    # the downstream local address is the original destination
    want = sorted([f"127.0.0.1:{a.port}", f"127.0.0.2:{b.port}"])
    wait_for(lambda: netns.call(hosts_of, ADMIN) == want, 5, "both hosts in /clusters")


@needs_netns
def test_without_the_listener_filter_there_is_no_destination(procs, netns):
    a = AddrUpstream("127.0.0.1", "first", netns=netns.name)
    procs.append(a)
    redirect(netns, a.port)
    ns_sharp(procs, netns, ns_http_bootstrap(lf=""))
    st, _, _ = netns.call(ns_http, SHARP_PORT, ("127.0.0.1", a.port))
    assert st == 503


@needs_netns
def test_header_wins_over_the_original_destination(procs, netns):
    a = AddrUpstream("127.0.0.1", "first", netns=netns.name)
    b = AddrUpstream("127.0.0.2", "second", netns=netns.name)
    procs += [a, b]
    redirect(netns, a.port)
    ns_sharp(procs, netns, ns_http_bootstrap("original_dst_lb_config: { use_http_header: true }\n"))
    st, h, _ = netns.call(ns_http, SHARP_PORT, ("127.0.0.1", a.port),
                          {"x-envoy-original-dst-host": f"127.0.0.2:{b.port}"})
    assert st == 200 and h["x-upstream-name"] == "second"
    # an invalid header falls back to the original destination, as in Envoy
    st, h, _ = netns.call(ns_http, SHARP_PORT, ("127.0.0.1", a.port), {"x-envoy-original-dst-host": "bad"})
    assert st == 200 and h["x-upstream-name"] == "first"
    assert netns.call(stat, ADMIN, "cluster.odst.original_dst_host_invalid") == 1


def tcp_bootstrap():
    return f"""\
admin:
  address: {{ socket_address: {{ address: 127.0.0.1, port_value: {ADMIN} }} }}
static_resources:
  listeners:
  - name: passthrough
    address: {{ socket_address: {{ address: 0.0.0.0, port_value: {SHARP_PORT} }} }}
{textwrap.indent(ODST_LF, '    ')}    filter_chains:
    - filters:
      - name: envoy.filters.network.tcp_proxy
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy
          stat_prefix: PassthroughCluster
          cluster: odst
  clusters:
{odst_cluster(extra="cleanup_interval: 1s")}"""


@needs_netns
def test_tcp_proxy_to_the_original_destination(procs, netns):
    """Istio's PassthroughCluster: TCP to wherever the client connected;
    the host stays while its connection is open, then the cleanup removes it."""
    a = AddrUpstream("127.0.0.1", "first", netns=netns.name)
    b = AddrUpstream("127.0.0.2", "second", netns=netns.name)
    procs += [a, b]
    redirect(netns, a.port)
    redirect(netns, b.port)
    ns_sharp(procs, netns, tcp_bootstrap())
    for u, ip, name in ((a, "127.0.0.1", "first"), (b, "127.0.0.2", "second")):
        st, h, _ = netns.call(ns_http, SHARP_PORT, (ip, u.port))
        assert st == 200 and h["x-upstream-name"] == name

    def held_open():
        c = socket.create_connection(("127.0.0.1", a.port), timeout=10 * SLOW, source_address=(CLIENT_SRC, 0))
        c.sendall(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n")
        assert b"x-upstream-name: first" in c.recv(65536)
        return c
    c = netns.call(held_open)
    try:
        # the other address goes once idle for a cleanup interval; the open connection keeps its host
        wait_for(lambda: netns.call(hosts_of, ADMIN) == [f"127.0.0.1:{a.port}"], 10, "only the busy host left")
        time.sleep(2.2)
        assert netns.call(hosts_of, ADMIN) == [f"127.0.0.1:{a.port}"]
    finally:
        c.close()
    wait_for(lambda: netns.call(hosts_of, ADMIN) == [], 10, "no host once the connection closed")
    assert netns.call(stat, ADMIN, "cluster.odst.upstream_cx_total") == 3


WILD = """\
- name: wildcard
  address: { socket_address: { address: 0.0.0.0, port_value: 18083 } }
  filter_chains:
"""


@needs_netns
def test_use_original_dst_hands_off_to_the_destination_listener(procs, netns):
    """use_original_dst: the listener bound to the original destination
    (exactly, else the wildcard address on its port) takes a redirected
    connection; one without such a listener stays."""
    other_port = 18081
    wild_listener = WILD + textwrap.indent(direct_chain("wildcard"), "  ")
    text = f"""\
admin:
  address: {{ socket_address: {{ address: 127.0.0.1, port_value: {ADMIN} }} }}
static_resources:
  listeners:
  - name: virtual
    address: {{ socket_address: {{ address: 0.0.0.0, port_value: {SHARP_PORT} }} }}
    use_original_dst: true
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: virtual
          route_config:
            virtual_hosts:
            - name: all
              domains: ["*"]
              routes:
              - match: {{ prefix: "/" }}
                direct_response: {{ status: 200, body: {{ inline_string: "virtual" }} }}
          http_filters:
          - name: envoy.filters.http.router
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router
  - name: service
    address: {{ socket_address: {{ address: 127.0.0.5, port_value: {other_port} }} }}
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: service
          route_config:
            virtual_hosts:
            - name: all
              domains: ["*"]
              routes:
              - match: {{ prefix: "/" }}
                direct_response: {{ status: 200, body: {{ inline_string: "service" }} }}
          http_filters:
          - name: envoy.filters.http.router
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router
{textwrap.indent(wild_listener, '  ')}"""
    redirect(netns, other_port)
    redirect(netns, 18082)
    redirect(netns, 18083)
    ns_sharp(procs, netns, text)
    st, _, body = netns.call(ns_http, SHARP_PORT, ("127.0.0.5", other_port))
    assert (st, body) == (200, b"service")
    st, _, body = netns.call(ns_http, SHARP_PORT, ("127.0.0.6", 18082))
    assert (st, body) == (200, b"virtual")
    st, _, body = netns.call(ns_http, SHARP_PORT, ("127.0.0.9", 18083))
    assert (st, body) == (200, b"wildcard")
    assert netns.call(stat, ADMIN, f"listener.127.0.0.5_{other_port}.downstream_cx_total") == 1
    assert netns.call(stat, ADMIN, "listener.0.0.0.0_18083.downstream_cx_total") == 1
    assert netns.call(stat, ADMIN, f"listener.0.0.0.0_{SHARP_PORT}.downstream_cx_total") == 1


def test_connect_terminated_to_the_authority(procs):
    """terminate_http1_connect.yaml: a CONNECT request's :authority names
    the ORIGINAL_DST host its tunnel goes to."""
    u = AddrUpstream("127.0.0.2", "tunnel")
    procs.append(u)
    listen, admin = free_port(), free_port()
    text = http_bootstrap(listen, admin, odst_cluster(
        extra='original_dst_lb_config: { use_http_header: true, http_header_name: ":authority" }\n'))
    text = text.replace("""              - match: { prefix: "/" }
                route: { cluster: odst }
""", """              - match: { connect_matcher: {} }
                route: { cluster: odst, upgrade_configs: [{ upgrade_type: CONNECT, connect_config: {} }] }
""").replace("          http_filters:\n", "          upgrade_configs: [{ upgrade_type: CONNECT }]\n          http_filters:\n", 1)
    start(procs, text, admin)
    with socket.create_connection(("127.0.0.1", listen), timeout=10 * SLOW) as c:
        c.sendall(f"CONNECT 127.0.0.2:{u.port} HTTP/1.1\r\nhost: 127.0.0.2:{u.port}\r\n\r\n".encode())
        head = b""
        while b"\r\n\r\n" not in head:
            b = c.recv(4096)
            assert b, head
            head += b
        assert head.startswith(b"HTTP/1.1 200"), head
        c.sendall(b"GET / HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
        data = b""
        while True:
            b = c.recv(65536)
            if not b:
                break
            data += b
    assert b"x-upstream-name: tunnel" in data
    wait_for(lambda: hosts_of(admin) == [f"127.0.0.2:{u.port}"], 5, "the tunnel's host in /clusters")


def test_mirror_to_an_original_dst_cluster(procs):
    """A mirrored copy goes to the host its own header names (Envoy's async
    client gives the copy's headers to the cluster's balancer)."""
    main = AddrUpstream("127.0.0.1", "main")
    copy = AddrUpstream("127.0.0.2", "copy")
    procs += [main, copy]
    listen, admin = free_port(), free_port()
    clusters = odst_cluster(extra="original_dst_lb_config: { use_http_header: true }\n") + f"""\
  - name: main
    type: STATIC
    connect_timeout: 1s
    load_assignment:
      cluster_name: main
      endpoints:
      - lb_endpoints:
        - endpoint: {{ address: {{ socket_address: {{ address: 127.0.0.1, port_value: {main.port} }} }} }}
"""
    text = http_bootstrap(listen, admin, clusters).replace(
        "route: { cluster: odst }", "route: { cluster: main, request_mirror_policies: [{ cluster: odst }] }")
    start(procs, text, admin)
    st, h, _ = h1_request(listen, headers={"x-envoy-original-dst-host": f"127.0.0.2:{copy.port}"})
    assert st == 200 and h["x-upstream-name"] == "main"
    wait_for(lambda: stat(admin, "cluster.odst.upstream_rq_200") == 1, 5, "the copy answered by its host")
    assert hosts_of(admin) == [f"127.0.0.2:{copy.port}"] or wait_for(
        lambda: hosts_of(admin) == [f"127.0.0.2:{copy.port}"], 5, "the copy's host in /clusters")


@needs_netns
def test_ipv6_original_destination(procs, netns):
    """IP6T_SO_ORIGINAL_DST: a redirected ::1 connection goes to its
    original destination. Only the client's connections (from a source
    port SHARP's ephemeral range does not use) are redirected."""
    if shutil.which("ip6tables") is None:
        pytest.skip("needs ip6tables")
    u = AddrUpstream("::1", "six", netns=netns.name)
    procs.append(u)
    _run("ip", "netns", "exec", netns.name, "sysctl", "-q", "-w", "net.ipv4.ip_local_port_range=20000 29999")
    try:
        _run("ip", "netns", "exec", netns.name, "ip6tables", "-t", "nat", "-A", "OUTPUT", "-p", "tcp", "-d", "::1",
             "--dport", str(u.port), "--sport", "40000:40999", "-j", "REDIRECT", "--to-ports", str(SHARP_PORT))
    except RuntimeError as e:
        pytest.skip(f"ip6tables nat REDIRECT unavailable: {e}")
    text = ns_http_bootstrap().replace("address: 0.0.0.0, port_value: 15001", 'address: "::", port_value: 15001')
    ns_sharp(procs, netns, text)

    def get():
        with socket.socket(socket.AF_INET6) as c:
            c.settimeout(10 * SLOW)
            c.bind(("::1", 40000 + os.getpid() % 1000))
            c.connect(("::1", u.port))
            c.sendall(b"GET / HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
            data = b""
            while True:
                b = c.recv(65536)
                if not b:
                    return data
                data += b
    data = netns.call(get)
    assert data.startswith(b"HTTP/1.1 200") and b"x-upstream-name: six" in data, data[:300]
    wait_for(lambda: netns.call(hosts_of, ADMIN) == [f"::1:{u.port}"], 5, "the IPv6 host in /clusters")


def direct_chain(body, match=""):
    return f"""\
- {match}filters:
  - name: envoy.filters.network.http_connection_manager
    typed_config:
      "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
      stat_prefix: {body}
      route_config:
        virtual_hosts:
        - name: all
          domains: ["*"]
          routes:
          - match: {{ prefix: "/" }}
            direct_response: {{ status: 200, body: {{ inline_string: "{body}" }} }}
      access_log:
      - name: envoy.access_loggers.stdout
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.access_loggers.stream.v3.StdoutAccessLog
          log_format: {{ text_format_source: {{ inline_string: "LOCAL=%DOWNSTREAM_LOCAL_ADDRESS%\\n" }} }}
      http_filters:
      - name: envoy.filters.http.router
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router
"""


@needs_netns
def test_filter_chain_matches_the_original_destination(procs, netns):
    """Istio's virtual outbound listener: the chain is chosen by the
    original destination's port and address, and %DOWNSTREAM_LOCAL_ADDRESS%
    is the original destination."""
    chains = (direct_chain("by-port", "filter_chain_match: { destination_port: 18090 }\n  ")
              + direct_chain("by-ip", "filter_chain_match: { prefix_ranges: [{ address_prefix: 127.0.0.7, "
                                      "prefix_len: 32 }] }\n  ")
              + direct_chain("other"))
    text = f"""\
admin:
  address: {{ socket_address: {{ address: 127.0.0.1, port_value: {ADMIN} }} }}
static_resources:
  listeners:
  - name: virtual
    address: {{ socket_address: {{ address: 0.0.0.0, port_value: {SHARP_PORT} }} }}
{textwrap.indent(ODST_LF, '    ')}    filter_chains:
{textwrap.indent(chains, '    ')}"""
    for port in (18090, 18091):
        redirect(netns, port)
    s = ns_sharp(procs, netns, text)
    assert netns.call(ns_http, SHARP_PORT, ("127.0.0.1", 18090))[2] == b"by-port"
    assert netns.call(ns_http, SHARP_PORT, ("127.0.0.7", 18091))[2] == b"by-ip"
    assert netns.call(ns_http, SHARP_PORT, ("127.0.0.1", 18091))[2] == b"other"
    wait_for(lambda: "LOCAL=127.0.0.7:18091" in s.output(), 5, "the original destination in the access log")
