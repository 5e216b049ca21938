"""UDP listeners and the UDP proxy listener filter
(envoy.filters.udp_listener.udp_proxy): datagrams relayed both ways through
SHARP to UDP echo servers the test starts on 127.0.0.1, one session per
downstream address, the idle timeout, a dead upstream, datagram sizes, the
matcher, per-packet load balancing, the max_connections bound, LDS removal
and drains, and Envoy's examples."""
import json
import os
import select
import socket
import subprocess
import threading
import time
import urllib.request

import pytest

from conftest import SHARP, SLOW, Sharp, admin_get, free_port, stat, validate_config, wait_for
from test_xds_file import discovery, write_atomic

UDP_PROXY = "type.googleapis.com/envoy.extensions.filters.udp.udp_proxy.v3.UdpProxyConfig"
ROUTE = "type.googleapis.com/envoy.extensions.filters.udp.udp_proxy.v3.Route"
LISTENER = "type.googleapis.com/envoy.config.listener.v3.Listener"
CORPUS = "/work/shared/envoy-corpus"


class UdpEcho:
    """A UDP server on 127.0.0.1 in a thread: answers each datagram with
    `prefix` + the datagram (or `reply_size` bytes when set), and records the
    source addresses it saw."""

    def __init__(self, prefix=b"", reply_size=None, port=0):
        self.prefix = prefix
        self.reply_size = reply_size
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", port))
        self.port = self.sock.getsockname()[1]
        self.peers = []
        self.received = []
        self.stopping = False
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        while not self.stopping:
            r, _, _ = select.select([self.sock], [], [], 0.05)
            if not r:
                continue
            try:
                data, peer = self.sock.recvfrom(65535)
            except OSError:
                continue
            self.peers.append(peer)
            self.received.append(data)
            reply = b"r" * self.reply_size if self.reply_size else self.prefix + data
            self.sock.sendto(reply, peer)

    def close(self):
        self.stopping = True
        self.thread.join(5)
        self.sock.close()


@pytest.fixture
def echo():
    servers = []

    def make(**kw):
        s = UdpEcho(**kw)
        servers.append(s)
        return s
    yield make
    for s in servers:
        s.close()


def udp_port():
    """A port free for both TCP (free_port's check) and UDP."""
    for _ in range(100):
        p = free_port()
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            try:
                s.bind(("127.0.0.1", p))
            except OSError:
                continue
        return p
    raise RuntimeError("no free UDP port")


def dead_udp_port():
    """A UDP port nothing reads: the kernel answers with ICMP port
    unreachable."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cluster(name, ports, extra=None):
    c = {"name": name, "type": "STATIC", "connect_timeout": "1s",
         "load_assignment": {"cluster_name": name, "endpoints": [{"lb_endpoints": [
             {"endpoint": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": p}}}}
             for p in ports]}]}}
    c.update(extra or {})
    return c


def udp_listener(name, port, proxy, listener_config=None):
    lst = {"name": name,
           "address": {"socket_address": {"protocol": "UDP", "address": "127.0.0.1", "port_value": port}},
           "listener_filters": [{"name": "envoy.filters.udp_listener.udp_proxy",
                                 "typed_config": dict({"@type": UDP_PROXY}, **proxy)}]}
    if listener_config:
        lst["udp_listener_config"] = listener_config
    return lst


def bootstrap(admin, listeners, clusters, dynamic=""):
    return f"""admin:
  address: {{ socket_address: {{ address: 127.0.0.1, port_value: {admin} }} }}
{dynamic}static_resources:
  listeners: {json.dumps(listeners)}
  clusters: {json.dumps(clusters)}
"""


def start(procs, text, admin, concurrency=2, extra=()):
    s = Sharp(text, concurrency=concurrency, extra=extra)
    procs.append(s)
    s.wait_ready(admin)
    return s


class Client:
    """A UDP client socket with a port of its own."""

    def __init__(self, port, bind_port=0):
        self.port = port
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", bind_port))
        self.local = self.sock.getsockname()

    def send(self, data):
        self.sock.sendto(data, ("127.0.0.1", self.port))

    def recv(self, timeout=5):
        self.sock.settimeout(timeout * SLOW)
        try:
            data, _ = self.sock.recvfrom(65535)
            return data
        except (socket.timeout, TimeoutError):
            return None

    def exchange(self, data, timeout=5):
        self.send(data)
        return self.recv(timeout)

    def close(self):
        self.sock.close()


def counter(admin, name):
    return stat(admin, name) or 0


def test_relay_both_ways_and_stats(procs, echo):
    e = echo(prefix=b"echo:")
    admin, port = free_port(), udp_port()
    start(procs, bootstrap(admin, [udp_listener("udp", port, {"stat_prefix": "svc", "cluster": "c"})],
                           [cluster("c", [e.port])]), admin)
    c = Client(port)
    assert c.exchange(b"hello") == b"echo:hello"
    assert c.exchange(b"again") == b"echo:again"
    assert e.received == [b"hello", b"again"]
    # one session: the same upstream socket for both datagrams, not the client's port
    assert e.peers[0] == e.peers[1] and e.peers[0][1] != c.local[1]
    wait_for(lambda: counter(admin, "udp.svc.downstream_sess_tx_datagrams") == 2, 5, "two datagrams down")
    assert counter(admin, "udp.svc.downstream_sess_total") == 1
    assert stat(admin, "udp.svc.downstream_sess_active") == 1
    assert counter(admin, "udp.svc.downstream_sess_rx_datagrams") == 2
    assert counter(admin, "udp.svc.downstream_sess_rx_bytes") == 10
    assert counter(admin, "udp.svc.downstream_sess_tx_bytes") == 20
    assert counter(admin, "cluster.c.udp.sess_tx_datagrams") == 2
    assert counter(admin, "cluster.c.udp.sess_rx_datagrams") == 2
    assert counter(admin, "cluster.c.upstream_cx_tx_bytes_total") == 10
    assert counter(admin, "cluster.c.upstream_cx_rx_bytes_total") == 20
    assert counter(admin, "udp.svc.downstream_sess_no_route") == 0
    # the listener stats Envoy keeps for every listener, which no datagram moves
    assert stat(admin, "listener.127.0.0.1_%d.downstream_cx_total" % port) == 0
    assert stat(admin, "listener.127.0.0.1_%d.udp.downstream_rx_datagram_dropped" % port) == 0
    c.close()


def test_listening_port_cannot_be_shared(procs, echo):
    """The UDP listener's sockets have no SO_REUSEADDR (libuv sets it when
    it adopts a socket; SHARP clears it): another socket cannot bind the
    same address and port and take datagrams meant for the proxy."""
    e = echo()
    admin, port = free_port(), udp_port()
    start(procs, bootstrap(admin, [udp_listener("udp", port, {"stat_prefix": "svc", "cluster": "c"})],
                           [cluster("c", [e.port])]), admin)
    thief = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    thief.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    with pytest.raises(OSError):
        thief.bind(("127.0.0.1", port))
    thief.close()
    c = Client(port)
    assert c.exchange(b"mine") == b"mine"
    c.close()


def test_ipv6_listener_to_ipv4_upstream(procs, echo):
    e = echo(prefix=b"v4:")
    admin = free_port()
    with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as probe:
        probe.bind(("::1", 0))
        port = probe.getsockname()[1]
    lst = udp_listener("udp6", port, {"stat_prefix": "v6", "cluster": "c"})
    lst["address"]["socket_address"]["address"] = "::1"
    start(procs, bootstrap(admin, [lst], [cluster("c", [e.port])]), admin)
    c = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
    c.settimeout(5 * SLOW)
    c.sendto(b"hi", ("::1", port))
    data, src = c.recvfrom(100)
    assert data == b"v4:hi" and src[1] == port
    assert counter(admin, "udp.v6.downstream_sess_total") == 1
    c.close()


def test_sessions_per_source_address(procs, echo):
    e = echo()
    admin, port = free_port(), udp_port()
    start(procs, bootstrap(admin, [udp_listener("udp", port, {"stat_prefix": "svc", "cluster": "c"})],
                           [cluster("c", [e.port])]), admin, concurrency=3)
    clients = [Client(port) for _ in range(6)]
    for round_ in range(3):
        for i, c in enumerate(clients):
            msg = f"client{i}-round{round_}".encode()
            assert c.exchange(msg) == msg, (i, round_)
    # each client its own upstream socket, kept for all its datagrams
    by_client = {}
    for data, peer in zip(e.received, e.peers):
        by_client.setdefault(data.split(b"-")[0], set()).add(peer)
    assert len(by_client) == 6 and all(len(p) == 1 for p in by_client.values())
    assert len({next(iter(p)) for p in by_client.values()}) == 6
    wait_for(lambda: counter(admin, "udp.svc.downstream_sess_total") == 6, 5, "six sessions")
    assert stat(admin, "udp.svc.downstream_sess_active") == 6
    for c in clients:
        c.close()


def test_idle_timeout_ends_the_session(procs, echo):
    e = echo()
    admin, port = free_port(), udp_port()
    start(procs, bootstrap(admin, [udp_listener("udp", port, {"stat_prefix": "svc", "cluster": "c",
                                                              "idle_timeout": "0.3s"})],
                           [cluster("c", [e.port])]), admin)
    c = Client(port)
    assert c.exchange(b"one") == b"one"
    assert stat(admin, "udp.svc.downstream_sess_active") == 1
    wait_for(lambda: counter(admin, "udp.svc.idle_timeout") == 1, 5, "the idle timeout")
    assert stat(admin, "udp.svc.downstream_sess_active") == 0
    # the next datagram opens a new session, with a new upstream socket
    assert c.exchange(b"two") == b"two"
    assert counter(admin, "udp.svc.downstream_sess_total") == 2
    assert e.peers[0] != e.peers[1]
    c.close()


def test_activity_keeps_the_session(procs, echo):
    e = echo()
    admin, port = free_port(), udp_port()
    start(procs, bootstrap(admin, [udp_listener("udp", port, {"stat_prefix": "svc", "cluster": "c",
                                                              "idle_timeout": "1s"})],
                           [cluster("c", [e.port])]), admin)
    c = Client(port)
    for i in range(8):  # 2 s of traffic, 0.25 s apart
        assert c.exchange(b"x%d" % i) == b"x%d" % i
        time.sleep(0.25)
    assert counter(admin, "udp.svc.idle_timeout") == 0
    assert counter(admin, "udp.svc.downstream_sess_total") == 1
    c.close()


def test_dead_upstream_is_counted(procs, echo):
    e = echo()
    admin, port, port2 = free_port(), udp_port(), udp_port()
    dead = dead_udp_port()
    start(procs, bootstrap(admin, [udp_listener("dead", port, {"stat_prefix": "dead", "cluster": "dead"}),
                                   udp_listener("live", port2, {"stat_prefix": "live", "cluster": "live"})],
                           [cluster("dead", [dead]), cluster("live", [e.port])]), admin)
    c = Client(port)
    for i in range(5):
        c.send(b"nobody %d" % i)
        time.sleep(0.05)

    def errors():
        return counter(admin, "cluster.dead.udp.sess_rx_errors") + counter(admin, "cluster.dead.udp.sess_tx_errors")
    wait_for(lambda: errors() >= 1, 5, "the port unreachable counted")
    assert counter(admin, "udp.dead.downstream_sess_total") == 1
    assert counter(admin, "udp.dead.downstream_sess_rx_datagrams") == 5
    assert c.recv(0.2) is None
    # the process and the other listener are unaffected
    c2 = Client(port2)
    assert c2.exchange(b"alive") == b"alive"
    assert "live" in admin_get(admin, "/listeners")
    # the session survives the errors: once the host answers, it relays
    back = echo(prefix=b"back:", port=dead)
    wait_for(lambda: c.exchange(b"again", timeout=0.3) == b"back:again", 10, "the host back")
    assert counter(admin, "udp.dead.downstream_sess_total") == 1
    assert back.peers and all(p == back.peers[0] for p in back.peers)
    c.close()
    c2.close()


def test_large_datagrams(procs, echo):
    e = echo()
    big = udp_port()
    dflt = udp_port()
    admin = free_port()
    sock = {"max_rx_datagram_size": 9000}
    start(procs, bootstrap(admin, [udp_listener("big", big, {"stat_prefix": "big", "cluster": "c",
                                                             "upstream_socket_config": sock},
                                                listener_config={"downstream_socket_config": sock}),
                                   udp_listener("dflt", dflt, {"stat_prefix": "dflt", "cluster": "c"})],
                           [cluster("c", [e.port])]), admin)
    c = Client(big)
    payload = bytes(range(256)) * 31 + b"end"  # 7939 bytes
    assert c.exchange(payload) == payload
    # Envoy's default 1500: a longer datagram is dropped, either way
    d = Client(dflt)
    d.send(b"a" * 4000)
    wait_for(lambda: counter(admin, "listener.127.0.0.1_%d.udp.downstream_rx_datagram_dropped" % dflt) == 1, 5,
             "the downstream drop")
    assert d.recv(0.2) is None
    assert payload in e.received and b"a" * 4000 not in e.received
    assert d.exchange(b"b" * 1500) == b"b" * 1500  # the largest that fits
    e.reply_size = 3000
    d.send(b"small")
    wait_for(lambda: counter(admin, "cluster.c.udp.sess_rx_datagrams_dropped") == 1, 5, "the upstream drop")
    assert d.recv(0.2) is None
    assert c.exchange(b"to big") == b"r" * 3000  # 9000 upstream: it fits
    c.close()
    d.close()


def test_matcher_routes_by_source(procs, echo):
    a, b = echo(prefix=b"a:"), echo(prefix=b"b:")
    admin, port = free_port(), udp_port()
    special = Client(port)
    sport = special.local[1]
    matcher = {"matcher_tree": {
        "input": {"name": "envoy.matching.inputs.source_port", "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.matching.common_inputs.network.v3.SourcePortInput"}},
        "exact_match_map": {"map": {str(sport): {"action": {"name": "route", "typed_config": {
            "@type": ROUTE, "cluster": "a"}}}}}},
        "on_no_match": {"action": {"name": "route", "typed_config": {"@type": ROUTE, "cluster": "b"}}}}
    outer = {"matcher_list": {"matchers": [{
        "predicate": {"single_predicate": {
            "input": {"name": "envoy.matching.inputs.source_ip", "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.matching.common_inputs.network.v3.SourceIPInput"}},
            "value_match": {"exact": "127.0.0.1"}}},
        "on_match": {"matcher": matcher}}]}}
    start(procs, bootstrap(admin, [udp_listener("udp", port, {"stat_prefix": "m", "matcher": outer})],
                           [cluster("a", [a.port]), cluster("b", [b.port])]), admin)
    assert special.exchange(b"x") == b"a:x"
    other = Client(port)
    assert other.exchange(b"y") == b"b:y"
    # a source the outer list does not match has no route
    other2 = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    other2.bind(("127.0.0.2", 0))
    other2.sendto(b"z", ("127.0.0.1", port))
    wait_for(lambda: counter(admin, "udp.m.downstream_sess_no_route") == 1, 5, "no route")
    other2.close()
    special.close()
    other.close()


def test_unknown_cluster_is_no_route(procs, echo):
    admin, port = free_port(), udp_port()
    e = echo()
    start(procs, bootstrap(admin, [udp_listener("udp", port, {"stat_prefix": "nr", "cluster": "missing"})],
                           [cluster("c", [e.port])]), admin)
    c = Client(port)
    c.send(b"lost")
    wait_for(lambda: counter(admin, "udp.nr.downstream_sess_no_route") == 1, 5, "no route")
    assert counter(admin, "udp.nr.downstream_sess_total") == 0
    c.close()


def eds_doc(version, name, *ports):
    return {"version_info": str(version), "resources": [{
        "@type": "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment", "cluster_name": name,
        "endpoints": [{"lb_endpoints": [{"endpoint": {"address": {"socket_address": {
            "address": "127.0.0.1", "port_value": p}}}} for p in ports]}]}]}


def eds_cluster(name, path):
    return {"name": name, "type": "EDS", "connect_timeout": "1s",
            "eds_cluster_config": {"eds_config": {"path_config_source": {"path": path}}}}


def housekeeping_passes(admin, n):
    """Waits until the main thread's housekeeping (one pass a second, which
    frees the hosts that left a cluster once nothing uses them) has run n
    more times: server.uptime moves with it."""
    start_ = stat(admin, "server.uptime")
    wait_for(lambda: stat(admin, "server.uptime") >= start_ + n, n + 5, f"{n} housekeeping passes")


def test_eds_removes_the_session_host(procs, echo, tmp_path):
    """A session's host leaves the cluster (EDS): the host stays alive while
    the session points at it (under ASan a freed host read by the next
    datagram is reported), and the next datagram moves the session to a host
    of the new set."""
    a, b = echo(prefix=b"a:"), echo(prefix=b"b:")
    admin, port = free_port(), udp_port()
    eds = str(tmp_path / "eds.json")
    write_atomic(eds, eds_doc(1, "c", a.port))
    start(procs, bootstrap(admin, [udp_listener("udp", port, {"stat_prefix": "eds", "cluster": "c"})],
                           [eds_cluster("c", eds)]), admin, concurrency=1)
    c = Client(port)
    wait_for(lambda: c.exchange(b"1", timeout=0.3) == b"a:1", 10, "the first host")
    write_atomic(eds, eds_doc(2, "c", b.port))
    wait_for(lambda: stat(admin, "cluster.c.update_success") == 2, 10, "the EDS update")
    # long enough for the departed host to be collected, were it unpinned
    housekeeping_passes(admin, 3)
    assert c.exchange(b"2") == b"b:2"
    assert counter(admin, "udp.eds.downstream_sess_total") == 2
    assert stat(admin, "udp.eds.downstream_sess_active") == 1
    # the host, once no session has it, is collected
    housekeeping_passes(admin, 3)
    assert c.exchange(b"3") == b"b:3"
    c.close()


def test_cluster_removed_ends_the_session(procs, echo, tmp_path):
    """CDS removes the session's cluster: the peer's next datagram has no
    route, and its session ends (it no longer relays the host's answers)."""
    e = echo()
    admin, port = free_port(), udp_port()
    cds = str(tmp_path / "cds.json")
    cl = dict(cluster("c", [e.port]), **{"@type": "type.googleapis.com/envoy.config.cluster.v3.Cluster"})
    other = dict(cluster("other", [e.port]), **{"@type": "type.googleapis.com/envoy.config.cluster.v3.Cluster"})
    write_atomic(cds, discovery(1, cl, other))
    dyn = "dynamic_resources:\n  cds_config: {\"path_config_source\": {\"path\": \"%s\"}}\n" % cds
    start(procs, bootstrap(admin, [udp_listener("udp", port, {"stat_prefix": "rm", "cluster": "c"})], [],
                           dynamic=dyn), admin, concurrency=1)
    c = Client(port)
    wait_for(lambda: c.exchange(b"1", timeout=0.3) == b"1", 10, "the session")
    assert stat(admin, "udp.rm.downstream_sess_active") == 1
    write_atomic(cds, discovery(2, other))
    wait_for(lambda: stat(admin, "cluster_manager.cds.update_success") == 2, 10, "the CDS update")
    c.send(b"2")
    wait_for(lambda: counter(admin, "udp.rm.downstream_sess_no_route") == 1, 5, "no route")
    wait_for(lambda: stat(admin, "udp.rm.downstream_sess_active") == 0, 5, "the session ended")
    assert c.recv(0.2) is None
    c.close()


def test_per_packet_load_balancing(procs, echo):
    a, b = echo(prefix=b"a:"), echo(prefix=b"b:")
    admin, port = free_port(), udp_port()
    start(procs, bootstrap(admin, [udp_listener("udp", port, {"stat_prefix": "pp", "cluster": "c",
                                                              "use_per_packet_load_balancing": True})],
                           [cluster("c", [a.port, b.port])]), admin, concurrency=1)
    c = Client(port)
    answers = [c.exchange(b"%d" % i) for i in range(6)]
    assert {x[:2] for x in answers} == {b"a:", b"b:"}, answers
    # a session per host
    assert counter(admin, "udp.pp.downstream_sess_total") == 2
    c.close()


def test_sticky_sessions_spread_by_the_balancer(procs, echo):
    a, b = echo(prefix=b"a:"), echo(prefix=b"b:")
    admin, port = free_port(), udp_port()
    start(procs, bootstrap(admin, [udp_listener("udp", port, {"stat_prefix": "st", "cluster": "c"})],
                           [cluster("c", [a.port, b.port])]), admin, concurrency=1)
    clients = [Client(port) for _ in range(4)]
    first = [c.exchange(b"1")[:2] for c in clients]
    assert set(first) == {b"a:", b"b:"}
    # each session stays with its host
    assert [c.exchange(b"2")[:2] for c in clients] == first
    for c in clients:
        c.close()


def test_max_connections_bounds_the_sessions(procs, echo):
    e = echo()
    admin, port = free_port(), udp_port()
    breakers = {"circuit_breakers": {"thresholds": [{"max_connections": 2}]}}
    start(procs, bootstrap(admin, [udp_listener("udp", port, {"stat_prefix": "cb", "cluster": "c",
                                                              "idle_timeout": "0.5s"})],
                           [cluster("c", [e.port], breakers)]), admin, concurrency=1)
    c1, c2, c3 = Client(port), Client(port), Client(port)
    assert c1.exchange(b"1") == b"1"
    assert c2.exchange(b"2") == b"2"
    c3.send(b"3")
    wait_for(lambda: counter(admin, "cluster.c.upstream_cx_overflow") == 1, 5, "the overflow")
    assert c3.recv(0.2) is None
    assert counter(admin, "udp.cb.downstream_sess_total") == 2
    # once the others are idle, a session is free again
    wait_for(lambda: stat(admin, "udp.cb.downstream_sess_active") == 0, 5, "idle sessions ended")
    assert c3.exchange(b"3") == b"3"
    for c in (c1, c2, c3):
        c.close()


def test_drain_listeners_stops_the_udp_listener(procs, echo):
    e = echo()
    admin, port = free_port(), udp_port()
    start(procs, bootstrap(admin, [udp_listener("udp", port, {"stat_prefix": "dr", "cluster": "c"})],
                           [cluster("c", [e.port])]), admin)
    c = Client(port)
    assert c.exchange(b"before") == b"before"
    urllib.request.urlopen(urllib.request.Request(f"http://127.0.0.1:{admin}/drain_listeners", method="POST"),
                           timeout=5).read()
    wait_for(lambda: stat(admin, "udp.dr.downstream_sess_active") == 0, 5, "the sessions ended")
    c.send(b"after")
    time.sleep(0.3)
    assert b"after" not in e.received
    c.close()


def test_lds_removal_stops_the_udp_listener_only(procs, echo, tmp_path):
    e = echo()
    admin, port, tcp_port = free_port(), udp_port(), free_port()
    lds = str(tmp_path / "lds.json")
    udp = dict(udp_listener("udp", port, {"stat_prefix": "lds", "cluster": "c"}), **{"@type": LISTENER})
    # a TCP proxy listener on the same port number stays
    tcp = {"@type": LISTENER, "name": "tcp",
           "address": {"socket_address": {"address": "127.0.0.1", "port_value": port}},
           "filter_chains": [{"filters": [{"name": "envoy.filters.network.tcp_proxy", "typed_config": {
               "@type": "type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy",
               "stat_prefix": "t", "cluster": "c"}}]}]}
    write_atomic(lds, discovery(1, udp, tcp))
    dyn = "dynamic_resources:\n  lds_config: {\"path_config_source\": {\"path\": \"%s\"}}\n" % lds
    start(procs, bootstrap(admin, [], [cluster("c", [e.port])], dynamic=dyn), admin, extra=("--drain-time-s", "1"))
    c = Client(port)
    assert c.exchange(b"v1") == b"v1"
    assert stat(admin, "udp.lds.downstream_sess_active") == 1
    write_atomic(lds, discovery(2, tcp))
    wait_for(lambda: stat(admin, "listener_manager.lds.update_success") == 2, 10, "the update")
    wait_for(lambda: stat(admin, "udp.lds.downstream_sess_active") == 0, 10, "the session ended")
    c.send(b"gone")
    time.sleep(0.3)
    assert b"gone" not in e.received
    with socket.create_connection(("127.0.0.1", port), timeout=5):
        pass  # the TCP listener on that port still accepts
    # and the listener comes back on the same port
    write_atomic(lds, discovery(3, udp, tcp))
    wait_for(lambda: stat(admin, "listener_manager.lds.update_success") == 3, 10, "the update")
    wait_for(lambda: c.exchange(b"v3", timeout=0.3) == b"v3", 10, "the listener again")
    # a changed listener takes the socket: the old version's sessions end
    udp2 = dict(udp_listener("udp", port, {"stat_prefix": "lds2", "cluster": "c"}), **{"@type": LISTENER})
    write_atomic(lds, discovery(4, udp2, tcp))
    wait_for(lambda: stat(admin, "listener_manager.lds.update_success") == 4, 10, "the update")
    wait_for(lambda: stat(admin, "udp.lds.downstream_sess_active") == 0, 10, "the old version's session ended")
    assert c.exchange(b"v4") == b"v4"
    assert counter(admin, "udp.lds2.downstream_sess_total") == 1
    c.close()


# Envoy's UDP proxy example and the two configurations of its UDP proxy
# documentation.
@pytest.mark.parametrize("name", ["examples__udp__envoy.yaml",
                                  "envoy__docs__root__configuration__listeners__udp_filters___include__udp-proxy.yaml",
                                  "envoy__docs__root__configuration__listeners__udp_filters___include__udp-proxy-router.yaml"])
def test_corpus_examples_validate(name):
    if not os.path.exists(os.path.join(CORPUS, name)):
        pytest.skip("the Envoy corpus is not on this machine")
    r = subprocess.run([SHARP, "--mode", "validate", "-c", name], cwd=CORPUS, capture_output=True, text=True,
                       timeout=20 * SLOW)
    assert r.returncode == 0, r.stdout + r.stderr


def test_docs_example_runs(procs, echo):
    """The documentation's udp-proxy.yaml, its ports moved: relays."""
    path = os.path.join(CORPUS, "envoy__docs__root__configuration__listeners__udp_filters___include__udp-proxy.yaml")
    if not os.path.exists(path):
        pytest.skip("the Envoy corpus is not on this machine")
    e = echo()
    admin, port = free_port(), udp_port()
    text = open(path).read()
    text = text.replace("9901", str(admin)).replace("1234", str(port)).replace("1235", str(e.port))
    start(procs, text, admin)
    c = Client(port)
    assert c.exchange(b"doc") == b"doc"
    assert counter(admin, "udp.service.downstream_sess_total") == 1
    c.close()


REFUSED = [
    ({"use_original_src_ip": True}, {}, "use_original_src_ip"),
    ({"hash_policies": [{"source_ip": True}]}, {}, "hash_policies"),
    ({"access_log": [{"name": "x"}]}, {}, "access_log"),
    ({"session_filters": [{"name": "x"}]}, {}, "session_filters"),
    ({}, {"udp_listener_config": {"quic_options": {}}}, "QUIC"),
    ({"stat_prefix": ""}, {}, "stat_prefix"),
    # Envoy's DurationUtil: a negative duration is no "never"
    ({"idle_timeout": "-1s"}, {}, "idle_timeout: Expected positive duration"),
    ({"idle_timeout": "-0.5s"}, {}, "idle_timeout: Expected positive duration"),
    ({"idle_timeout": "1s", "cluster": None}, {}, "cluster and matcher"),
    ({}, {"udp_listener_config": {"downstream_socket_config": {"max_rx_datagram_size": 70000}}},
     "max_rx_datagram_size"),
]


@pytest.mark.parametrize("proxy_extra,listener_extra,what", REFUSED)
def test_refused_fields_are_named(proxy_extra, listener_extra, what):
    proxy = {"stat_prefix": "s", "cluster": "c"}
    proxy.update(proxy_extra)
    proxy = {k: v for k, v in proxy.items() if v is not None}
    lst = udp_listener("udp", 1234, proxy)
    lst.update(listener_extra)
    rc, out = validate_config(bootstrap(free_port(), [lst], [cluster("c", [1])]))
    assert rc != 0 and what in out, out


def test_listener_shape_is_checked():
    base = udp_listener("udp", 1234, {"stat_prefix": "s", "cluster": "c"})
    # a UDP listener needs its listener filter
    lst = dict(base, listener_filters=[])
    rc, out = validate_config(bootstrap(free_port(), [lst], [cluster("c", [1])]))
    assert rc != 0 and "no read filter registered for the udp listener" in out, out
    # and has no filter chains
    lst = dict(base, filter_chains=[{"filters": []}])
    rc, out = validate_config(bootstrap(free_port(), [lst], [cluster("c", [1])]))
    assert rc != 0 and "filter_chains" in out and "QUIC" in out, out
    # nor a matcher choosing between them
    lst = dict(base, filter_chain_matcher={"on_no_match": {"action": {"name": "a", "typed_config": {
        "@type": "type.googleapis.com/google.protobuf.StringValue", "value": "x"}}}})
    rc, out = validate_config(bootstrap(free_port(), [lst], [cluster("c", [1])]))
    assert rc != 0 and "filter_chain_matcher" in out and "no filter chains" in out, out
    # other listener filters on it
    lst = dict(base, listener_filters=[{"name": "envoy.filters.listener.tls_inspector", "typed_config": {
        "@type": "type.googleapis.com/envoy.extensions.filters.listener.tls_inspector.v3.TlsInspector"}}])
    rc, out = validate_config(bootstrap(free_port(), [lst], [cluster("c", [1])]))
    assert rc != 0 and "UDP proxy" in out, out
    # the UDP proxy on a TCP listener
    lst = dict(base, address={"socket_address": {"address": "127.0.0.1", "port_value": 1234}})
    rc, out = validate_config(bootstrap(free_port(), [lst], [cluster("c", [1])]))
    assert rc != 0 and "needs a UDP listener" in out, out
    # destination_ip on a wildcard listener, whose datagrams do not say their address
    m = {"matcher_list": {"matchers": [{"predicate": {"single_predicate": {
        "input": {"name": "d", "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.matching.common_inputs.network.v3.DestinationIPInput"}},
        "value_match": {"exact": "10.0.0.1"}}},
        "on_match": {"action": {"name": "r", "typed_config": {"@type": ROUTE, "cluster": "c"}}}}]}}
    lst = udp_listener("udp", 1234, {"stat_prefix": "s", "matcher": m})
    lst["address"]["socket_address"]["address"] = "0.0.0.0"
    rc, out = validate_config(bootstrap(free_port(), [lst], [cluster("c", [1])]))
    assert rc != 0 and "DestinationIPInput" in out, out
    lst["address"]["socket_address"]["address"] = "127.0.0.1"
    rc, out = validate_config(bootstrap(free_port(), [lst], [cluster("c", [1])]))
    assert rc == 0, out
    # the inputs Envoy has no datagram implementation of
    for name in ("ServerNameInput", "DirectSourceIPInput", "TransportProtocolInput"):
        m = {"matcher_tree": {"input": {"name": "in", "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.matching.common_inputs.network.v3." + name}},
            "exact_match_map": {"map": {"x": {"action": {"name": "r", "typed_config": {
                "@type": ROUTE, "cluster": "c"}}}}}}}
        rc, out = validate_config(bootstrap(free_port(), [udp_listener("udp", 1234, {"stat_prefix": "s",
                                                                                     "matcher": m})],
                                            [cluster("c", [1])]))
        assert rc != 0 and "matcher.matcher_tree.input" in out and \
            "Didn't find a registered implementation for 'in'" in out and name in out, out
    # a TCP and a UDP listener may share an address; two UDP ones may not
    tcp = {"name": "tcp", "address": {"socket_address": {"address": "127.0.0.1", "port_value": 1234}},
           "filter_chains": [{"filters": [{"name": "envoy.filters.network.tcp_proxy", "typed_config": {
               "@type": "type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy",
               "stat_prefix": "t", "cluster": "c"}}]}]}
    rc, out = validate_config(bootstrap(free_port(), [base, tcp], [cluster("c", [1])]))
    assert rc == 0, out
    rc, out = validate_config(bootstrap(free_port(), [base, dict(base, name="udp2")], [cluster("c", [1])]))
    assert rc != 0 and "duplicate address" in out, out


AGG = "type.googleapis.com/envoy.extensions.clusters.aggregate.v3.ClusterConfig"


def aggregate_cluster(name, *members):
    return {"name": name, "connect_timeout": "1s", "lb_policy": "CLUSTER_PROVIDED",
            "cluster_type": {"name": "envoy.clusters.aggregate",
                             "typed_config": {"@type": AGG, "clusters": list(members)}}}


@pytest.mark.parametrize("route", ["cluster", "matcher"])
def test_aggregate_cluster_refused(route):
    """The UDP proxy does not take an aggregate cluster: a static one is
    refused at load, naming the field (never accepted and answered with
    "no route")."""
    if route == "cluster":
        proxy = {"stat_prefix": "agg", "cluster": "agg"}
        where = "listener_filters[0].typed_config.cluster"
    else:
        proxy = {"stat_prefix": "agg", "matcher": {"on_no_match": {"action": {
            "name": "route", "typed_config": {"@type": ROUTE, "cluster": "agg"}}}}}
        where = "typed_config.matcher.on_no_match.action.typed_config.cluster"
    rc, out = validate_config(bootstrap(free_port(), [udp_listener("udp", udp_port(), proxy)],
                                        [cluster("m", [dead_udp_port()]), aggregate_cluster("agg", "m")]))
    assert rc != 0, out
    assert where in out, out
    assert "cluster 'agg' is an aggregate cluster (envoy.clusters.aggregate), which is not supported" in out, out


def test_aggregate_cluster_from_cds_fails_visibly(procs, echo, tmp_path):
    """An aggregate cluster that CDS brings under the name the UDP proxy
    routes to fails every datagram with an error log and
    downstream_sess_no_route, and ends the session of the cluster it
    replaced."""
    e = echo()
    admin, port = free_port(), udp_port()
    cds = str(tmp_path / "cds.json")
    typ = {"@type": "type.googleapis.com/envoy.config.cluster.v3.Cluster"}
    write_atomic(cds, discovery(1, dict(cluster("c", [e.port]), **typ), dict(cluster("m", [e.port]), **typ)))
    dyn = "dynamic_resources:\n  cds_config: {\"path_config_source\": {\"path\": \"%s\"}}\n" % cds
    s = start(procs, bootstrap(admin, [udp_listener("udp", port, {"stat_prefix": "ag", "cluster": "c"})], [],
                               dynamic=dyn), admin, concurrency=1)
    c = Client(port)
    wait_for(lambda: c.exchange(b"1", timeout=0.3) == b"1", 10, "the session")
    write_atomic(cds, discovery(2, dict(aggregate_cluster("c", "m"), **typ), dict(cluster("m", [e.port]), **typ)))
    wait_for(lambda: stat(admin, "cluster_manager.cds.update_success") == 2, 10, "the CDS update")
    c.send(b"2")
    c.send(b"3")
    wait_for(lambda: counter(admin, "udp.ag.downstream_sess_no_route") == 2, 5, "no route")
    wait_for(lambda: stat(admin, "udp.ag.downstream_sess_active") == 0, 5, "the session ended")
    assert c.recv(0.2) is None
    wait_for(lambda: "cluster 'c' is an aggregate cluster" in s.output(), 5, "the error log")
    # once per configuration, not per datagram
    assert s.output().count("cluster 'c' is an aggregate cluster") == 1, s.output()
    c.close()
