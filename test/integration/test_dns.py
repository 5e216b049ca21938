"""STRICT_DNS and LOGICAL_DNS clusters against a DNS server on loopback
that the test controls (dnslib), with test upstreams on 127.0.0.2,
127.0.0.3, ... (distinct hosts on one port) and ::1."""
import http.client
import json
import os
import socket
import subprocess
import sys
import textwrap
import threading
import time
import urllib.error
import urllib.request

import pytest

from conftest import (SHARP, UPSTREAM, Proc, Sharp, admin_get, bootstrap_yaml, file_access_log, free_port, log_lines,
                      stat)

try:
    import dnslib
    import dnslib.server
except ImportError:  # Debian's python3-dnslib, when pytest runs on another Python
    sys.path.append("/usr/lib/python3/dist-packages")
    import dnslib
    import dnslib.server


class Zone(dnslib.server.BaseResolver):
    """Answers that the test changes at run time: name -> {"A": [...],
    "AAAA": [...], "ttl": s, "mode": "ok" | "nxdomain" | "drop" | "drop6"
    (no answer to AAAA queries)}. Counts
    the queries per (name, type)."""

    def __init__(self):
        self.lock = threading.Lock()
        self.records = {}
        self.queries = {}
        self.tcp_queries = 0

    def set(self, name, a=(), aaaa=(), ttl=30, mode="ok"):
        with self.lock:
            self.records[name.rstrip(".")] = {"A": list(a), "AAAA": list(aaaa), "ttl": ttl, "mode": mode}

    def count(self, name, qtype="A"):
        with self.lock:
            return self.queries.get((name, qtype), 0)

    def resolve(self, request, handler):
        name = str(request.q.qname).rstrip(".")
        qtype = dnslib.QTYPE[request.q.qtype]
        with self.lock:
            self.queries[(name, qtype)] = self.queries.get((name, qtype), 0) + 1
            if getattr(handler, "protocol", "udp") == "tcp":
                self.tcp_queries += 1
            rec = self.records.get(name)
        reply = request.reply()
        if rec is None or rec["mode"] == "nxdomain":
            reply.header.rcode = dnslib.RCODE.NXDOMAIN
            return reply
        if rec["mode"] == "drop" or (rec["mode"] == "drop6" and qtype == "AAAA"):
            raise dnslib.DNSError("not answering")
        for ip in rec.get(qtype, []):
            rd = dnslib.A(ip) if qtype == "A" else dnslib.AAAA(ip)
            reply.add_answer(dnslib.RR(request.q.qname, request.q.qtype, rdata=rd, ttl=rec["ttl"]))
        return reply


class QuietLogger(dnslib.server.DNSLogger):
    def __init__(self):
        super().__init__(log="-recv,-send,-request,-reply,-truncated,-data,-error", prefix=False)


@pytest.fixture
def dns():
    zone = Zone()
    port = free_port()
    udp = dnslib.server.DNSServer(zone, port=port, address="127.0.0.1", logger=QuietLogger())
    udp.start_thread()
    zone.port = port
    yield zone
    udp.stop()
    udp.server.server_close()


class Upstream(Proc):
    """The test upstream on a given address and port."""

    def __init__(self, address, port, name, extra=()):
        super().__init__([UPSTREAM, "--address", address, "--port", str(port), "--name", name, "--quiet", *extra],
                         stdout=subprocess.PIPE)
        line = self.p.stdout.readline().decode()
        assert line.startswith("listening on"), line


def has_ipv6_loopback():
    try:
        s = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
        s.bind(("::1", 0))
        s.close()
        return True
    except OSError:
        return False


def dns_cluster(name, host, port, dns_port, kind="STRICT_DNS", extra="", endpoints=None):
    eps = endpoints or [(host, port)]
    lb = "".join(f"        - endpoint: {{ address: {{ socket_address: {{ address: {h}, port_value: {p} }} }} }}\n"
                 for h, p in eps)
    return (f"  - name: {name}\n    type: {kind}\n    connect_timeout: 1s\n"
            f"    dns_resolvers: [{{ socket_address: {{ address: 127.0.0.1, port_value: {dns_port} }} }}]\n"
            f"{textwrap.indent(extra, '    ')}"
            f"    load_assignment:\n      cluster_name: {name}\n      endpoints:\n      - lb_endpoints:\n{lb}")


def config(listen, admin, clusters_yaml, route_cluster="dns", hcm_extra=""):
    base = bootstrap_yaml(listen, admin, {"unused": [1]}, hcm_extra=hcm_extra,
                          routes=f'- match: {{ prefix: "/" }}\n  route: {{ cluster: {route_cluster} }}\n')
    head, _ = base.split("  clusters:\n")
    return head + "  clusters:\n" + clusters_yaml


def start(procs, yaml_text, admin, ready=True, env=None, timeout=20):
    old = {}
    for k, v in (env or {}).items():
        old[k] = os.environ.get(k)
        os.environ[k] = v
    try:
        s = Sharp(yaml_text)
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    procs.append(s)
    if ready:
        s.wait_ready(admin, timeout=timeout)
    return s


def get(port, path="/echo", conn=None):
    c = conn or http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    c.request("GET", path)
    r = c.getresponse()
    body = r.read()
    if conn is None:
        c.close()
    return r.status, r.getheader("x-upstream-name"), body


def h2_get(port, n, path="/echo"):
    """n requests one after the other on one HTTP/2 connection (prior
    knowledge): [(status, x-upstream-name)]."""
    import h2.config
    import h2.connection
    import h2.events
    s = socket.create_connection(("127.0.0.1", port), timeout=10)
    c = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True, header_encoding="utf-8"))
    c.initiate_connection()
    s.sendall(c.data_to_send())
    out = []
    for _ in range(n):
        sid = c.get_next_available_stream_id()
        c.send_headers(sid, [(":method", "GET"), (":path", path), (":scheme", "http"), (":authority", "x")],
                       end_stream=True)
        s.sendall(c.data_to_send())
        status = name = None
        done = False
        while not done:
            data = s.recv(65536)
            assert data, "connection closed"
            for ev in c.receive_data(data):
                if isinstance(ev, h2.events.ResponseReceived):
                    h = dict(ev.headers)
                    status, name = h.get(":status"), h.get("x-upstream-name")
                elif isinstance(ev, h2.events.DataReceived):
                    c.acknowledge_received_data(ev.flow_controlled_length, ev.stream_id)
                elif isinstance(ev, h2.events.StreamEnded) and ev.stream_id == sid:
                    done = True
            s.sendall(c.data_to_send())
        out.append((status, name))
    s.close()
    return out


def names(port, n=20):
    seen = {}
    for _ in range(n):
        st, who, _ = get(port)
        assert st == 200
        seen[who] = seen.get(who, 0) + 1
    return seen


def wait_for(pred, timeout=10.0, step=0.05):
    deadline = time.time() + timeout
    while time.time() < deadline:
        v = pred()
        if v:
            return v
        time.sleep(step)
    return pred()


def cluster_hosts(admin, cluster="dns"):
    data = json.loads(admin_get(admin, "/clusters?format=json"))
    for c in data["cluster_statuses"]:
        if c["name"] == cluster:
            return sorted(h["address"]["socket_address"]["address"] for h in c.get("host_statuses", []))
    return None


@pytest.fixture
def ports():
    return free_port(), free_port(), free_port()


def test_strict_dns_balances_over_every_address(procs, dns, ports):
    listen, admin, up = ports
    dns.set("svc.sharp.test", a=["127.0.0.2", "127.0.0.3"])
    procs.append(Upstream("127.0.0.2", up, "two"))
    procs.append(Upstream("127.0.0.3", up, "three"))
    static = ("  - name: static\n    type: STATIC\n    connect_timeout: 1s\n    load_assignment:\n"
              "      cluster_name: static\n      endpoints:\n      - lb_endpoints:\n"
              f"        - endpoint: {{ address: {{ socket_address: {{ address: 127.0.0.2, port_value: {up} }} }} }}\n")
    start(procs, config(listen, admin, dns_cluster("dns", "svc.sharp.test", up, dns.port,
                                                   extra="dns_lookup_family: V4_ONLY\n") + static), admin)
    seen = names(listen)
    assert set(seen) == {"two", "three"}, seen
    assert cluster_hosts(admin) == ["127.0.0.2", "127.0.0.3"]
    text = admin_get(admin, "/clusters")
    assert f"dns::127.0.0.2:{up}::hostname::svc.sharp.test" in text
    assert stat(admin, "cluster.dns.membership_total") == 2
    assert stat(admin, "cluster.dns.membership_change") == 1
    assert stat(admin, "cluster.dns.update_attempt") >= 1
    assert stat(admin, "cluster.dns.update_success") >= 1
    assert stat(admin, "dns.cares.resolve_total") >= 1
    # /config_dump shows the cluster as configured (the name, not addresses)
    dump = admin_get(admin, "/config_dump")
    assert '"STRICT_DNS"' in dump and "svc.sharp.test" in dump
    # the STATIC cluster beside it: its one membership change at load
    assert stat(admin, "cluster.static.membership_change") == 1
    assert stat(admin, "cluster.static.update_attempt") == 0


def under_load(listen, path, keepalives, change):
    """GETs `path` from one thread per entry of keepalives (True: one
    keep-alive connection, False: a connection per request) while change()
    runs, and 0.5 s more; returns every (status, upstream name) or
    (exception, None), and how many had been collected when change() ended
    (the requests after that mark saw only the final host set)."""
    stop = threading.Event()
    results = []

    def load(keepalive):
        conn = http.client.HTTPConnection("127.0.0.1", listen, timeout=10) if keepalive else None
        while not stop.is_set():
            try:
                results.append(get(listen, path, conn=conn)[:2])
            except Exception as e:  # a failure is what the tests look for
                results.append((repr(e), None))

    threads = [threading.Thread(target=load, args=(k,)) for k in keepalives]
    for t in threads:
        t.start()
    try:
        change()
        mark = len(results)
        time.sleep(0.5)
    finally:
        stop.set()
        for t in threads:
            t.join()
    return results, mark


def test_answers_change_under_load_without_failed_requests(procs, dns, ports):
    listen, admin, up = ports
    dns.set("svc.sharp.test", a=["127.0.0.2", "127.0.0.3"])
    for i, n in ((2, "two"), (3, "three"), (4, "four")):
        procs.append(Upstream(f"127.0.0.{i}", up, n))
    start(procs, config(listen, admin, dns_cluster("dns", "svc.sharp.test", up, dns.port,
                                                   extra="dns_refresh_rate: 0.1s\ndns_lookup_family: V4_ONLY\n")),
          admin)

    def change():
        time.sleep(0.5)
        dns.set("svc.sharp.test", a=["127.0.0.3", "127.0.0.4"])
        assert wait_for(lambda: cluster_hosts(admin) == ["127.0.0.3", "127.0.0.4"])
        time.sleep(0.5)
        dns.set("svc.sharp.test", a=["127.0.0.4"])
        assert wait_for(lambda: cluster_hosts(admin) == ["127.0.0.4"])
        time.sleep(0.5)

    # some requests stay in flight across the changes
    results, mark = under_load(listen, "/echo?delay_ms=30", (True, True, False, False), change)
    bad = [r for r in results if r[0] != 200]
    assert not bad, bad[:5]
    assert {r[1] for r in results} == {"two", "three", "four"}
    # once the set is [127.0.0.4], every request goes there
    assert {r[1] for r in results[mark:]} == {"four"}
    assert stat(admin, "cluster.dns.membership_change") == 3
    assert stat(admin, "cluster.dns.update_no_rebuild") >= 1
    assert stat(admin, "cluster.dns.membership_total") == 1


def test_http2_hosts_change_under_load_without_failed_requests(procs, dns, ports):
    """The same with HTTP/2 to the hosts: streams in flight on a removed
    host's multiplexed connections complete, new ones go to the new set."""
    listen, admin, up = ports
    dns.set("svc.sharp.test", a=["127.0.0.2", "127.0.0.3"])
    for i, n in ((2, "two"), (3, "three"), (4, "four")):
        procs.append(Upstream(f"127.0.0.{i}", up, n, extra=("--h2",)))
    start(procs, config(listen, admin, dns_cluster(
        "dns", "svc.sharp.test", up, dns.port,
        extra="dns_refresh_rate: 0.1s\ndns_lookup_family: V4_ONLY\nhttp2_protocol_options: {}\n")), admin)

    def change():
        time.sleep(0.5)
        dns.set("svc.sharp.test", a=["127.0.0.4"])
        assert wait_for(lambda: cluster_hosts(admin) == ["127.0.0.4"])
        time.sleep(0.3)

    results, mark = under_load(listen, "/echo?delay_ms=40", (True,) * 6, change)
    bad = [r for r in results if r[0] != 200]
    assert not bad, bad[:5]
    assert {r[1] for r in results} == {"two", "three", "four"}
    assert {r[1] for r in results[mark:]} == {"four"}
    assert stat(admin, "cluster.dns.upstream_cx_http2_total") >= 3
    # the removed hosts' connections closed once their streams were done
    assert wait_for(lambda: stat(admin, "cluster.dns.upstream_cx_active") <= 2)


def test_downstream_protocol_cluster_follows_the_host_set(procs, dns, ports):
    """use_downstream_protocol_config: HTTP/2 requests use the hosts'
    HTTP/2 pools, which move to the new set like the HTTP/1.1 ones."""
    listen, admin, up = ports
    dns.set("svc.sharp.test", a=["127.0.0.2"])
    procs.append(Upstream("127.0.0.2", up, "two", extra=("--h2",)))
    procs.append(Upstream("127.0.0.3", up, "three", extra=("--h2",)))
    ext = ("typed_extension_protocol_options:\n"
           "  envoy.extensions.upstreams.http.v3.HttpProtocolOptions:\n"
           "    '@type': type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions\n"
           "    use_downstream_protocol_config: { http2_protocol_options: {} }\n")
    start(procs, config(listen, admin, dns_cluster(
        "dns", "svc.sharp.test", up, dns.port,
        extra="dns_refresh_rate: 0.1s\ndns_lookup_family: V4_ONLY\n" + ext)), admin)

    assert set(h2_get(listen, 4)) == {("200", "two")}
    dns.set("svc.sharp.test", a=["127.0.0.3"])
    assert wait_for(lambda: cluster_hosts(admin) == ["127.0.0.3"])
    assert set(h2_get(listen, 4)) == {("200", "three")}
    assert stat(admin, "cluster.dns.upstream_cx_http2_total") >= 2


def test_logical_dns_new_connections_use_the_latest_address(procs, dns, ports):
    listen, admin, up = ports
    dns.set("svc.sharp.test", a=["127.0.0.2", "127.0.0.3"])
    procs.append(Upstream("127.0.0.2", up, "two"))
    procs.append(Upstream("127.0.0.3", up, "three"))
    start(procs, config(listen, admin, dns_cluster("dns", "svc.sharp.test", up, dns.port, kind="LOGICAL_DNS",
                                                   extra="dns_refresh_rate: 0.1s\ndns_lookup_family: V4_ONLY\n")),
          admin)
    # one logical host: the first address of the answer
    assert names(listen, 10) == {"two": 10}
    assert cluster_hosts(admin) == ["127.0.0.2"]
    # a request in flight on the old address when the answer changes
    slow = {}

    def slow_request():
        slow["r"] = get(listen, "/echo?delay_ms=1500")[:2]

    t = threading.Thread(target=slow_request)
    t.start()
    time.sleep(0.3)
    dns.set("svc.sharp.test", a=["127.0.0.3", "127.0.0.2"])
    assert wait_for(lambda: cluster_hosts(admin) == ["127.0.0.3"])
    assert names(listen, 10) == {"three": 10}
    t.join()
    assert slow["r"] == (200, "two")
    assert stat(admin, "cluster.dns.membership_total") == 1
    assert stat(admin, "cluster.dns.membership_change") == 1


def test_respect_dns_ttl_refreshes_at_the_ttl(procs, dns, ports):
    listen, admin, up = ports
    dns.set("ttl.sharp.test", a=["127.0.0.2"], ttl=1)
    dns.set("fixed.sharp.test", a=["127.0.0.2"], ttl=1)
    procs.append(Upstream("127.0.0.2", up, "two"))
    clusters = (dns_cluster("dns", "ttl.sharp.test", up, dns.port,
                            extra="dns_refresh_rate: 60s\nrespect_dns_ttl: true\ndns_lookup_family: V4_ONLY\n") +
                dns_cluster("fixed", "fixed.sharp.test", up, dns.port,
                            extra="dns_refresh_rate: 60s\ndns_lookup_family: V4_ONLY\n"))
    start(procs, config(listen, admin, clusters), admin)
    time.sleep(3.5)
    # TTL 1 s: about one query a second; the other cluster waits its 60 s
    assert dns.count("ttl.sharp.test") >= 3
    assert dns.count("fixed.sharp.test") == 1
    assert stat(admin, "cluster.dns.update_attempt") >= 3
    assert stat(admin, "cluster.fixed.update_attempt") == 1


def test_dns_jitter_is_added_to_the_refresh(procs, dns, ports):
    listen, admin, up = ports
    dns.set("svc.sharp.test", a=["127.0.0.2"])
    procs.append(Upstream("127.0.0.2", up, "two"))
    # refresh 0.2 s plus up to 3 s of jitter: far fewer than the 10 queries
    # 2 s of plain 0.2 s refreshes make
    start(procs, config(listen, admin, dns_cluster("dns", "svc.sharp.test", up, dns.port,
                                                   extra="dns_refresh_rate: 0.2s\ndns_jitter: 3s\n"
                                                         "dns_lookup_family: V4_ONLY\n")), admin)
    time.sleep(2.0)
    assert 1 <= dns.count("svc.sharp.test") <= 5


def test_failed_resolution_keeps_the_previous_hosts(procs, dns, ports):
    listen, admin, up = ports
    dns.set("svc.sharp.test", a=["127.0.0.2"])
    procs.append(Upstream("127.0.0.2", up, "two"))
    start(procs, config(listen, admin, dns_cluster("dns", "svc.sharp.test", up, dns.port,
                                                   extra="dns_refresh_rate: 0.1s\ndns_lookup_family: V4_ONLY\n")),
          admin, env={"RES_OPTIONS": "retrans:1000 retry:1"})
    assert names(listen, 5) == {"two": 5}
    dns.set("svc.sharp.test", mode="nxdomain")
    assert wait_for(lambda: (stat(admin, "cluster.dns.update_failure") or 0) >= 2)
    assert stat(admin, "dns.cares.not_found") >= 2
    assert names(listen, 5) == {"two": 5}
    assert cluster_hosts(admin) == ["127.0.0.2"]
    # a server that does not answer: c-ares times out, the hosts stay
    dns.set("svc.sharp.test", mode="drop")
    assert wait_for(lambda: (stat(admin, "dns.cares.timeouts") or 0) >= 1, timeout=10), admin_get(admin, "/stats?filter=dns")
    assert names(listen, 5) == {"two": 5}
    assert stat(admin, "cluster.dns.membership_total") == 1


def test_resolver_down_then_back(procs, ports):
    """A DNS server that is gone (queries refused: ICMP port unreachable on
    loopback) fails resolutions, the hosts stay; once it is back the next
    refresh gets its answer (Envoy re-creates the c-ares channel after
    ECONNREFUSED, which c-ares could otherwise keep failing)."""
    listen, admin, up = ports
    zone = Zone()
    port = free_port()
    zone.set("svc.sharp.test", a=["127.0.0.2"])
    srv = dnslib.server.DNSServer(zone, port=port, address="127.0.0.1", logger=QuietLogger())
    srv.start_thread()
    procs.append(Upstream("127.0.0.2", up, "two"))
    procs.append(Upstream("127.0.0.3", up, "three"))
    try:
        start(procs, config(listen, admin, dns_cluster("dns", "svc.sharp.test", up, port,
                                                       extra="dns_refresh_rate: 0.1s\ndns_lookup_family: V4_ONLY\n")),
              admin, env={"RES_OPTIONS": "retrans:500 retry:1"})
        assert names(listen, 3) == {"two": 3}
    finally:
        srv.stop()
        srv.server.server_close()
    assert wait_for(lambda: (stat(admin, "cluster.dns.update_failure") or 0) >= 3)
    assert stat(admin, "dns.cares.get_addr_failure") >= 1
    assert names(listen, 3) == {"two": 3}
    zone.set("svc.sharp.test", a=["127.0.0.3"])
    srv = dnslib.server.DNSServer(zone, port=port, address="127.0.0.1", logger=QuietLogger())
    srv.start_thread()
    try:
        assert wait_for(lambda: cluster_hosts(admin) == ["127.0.0.3"], timeout=10), admin_get(admin, "/stats?filter=dns")
        assert names(listen, 3) == {"three": 3}
    finally:
        srv.stop()
        srv.server.server_close()


def test_failure_refresh_rate_backs_off(procs, dns, ports):
    listen, admin, up = ports
    dns.set("svc.sharp.test", mode="nxdomain")
    procs.append(Upstream("127.0.0.2", up, "two"))
    start(procs, config(listen, admin, dns_cluster(
        "dns", "svc.sharp.test", up, dns.port,
        extra="dns_refresh_rate: 60s\ndns_lookup_family: V4_ONLY\n"
              "dns_failure_refresh_rate: { base_interval: 0.1s, max_interval: 0.2s }\n")), admin)
    time.sleep(2.0)
    # failures retry within the back-off's 0.2 s, not the 60 s refresh
    assert dns.count("svc.sharp.test") >= 5
    assert stat(admin, "cluster.dns.update_failure") >= 5
    assert stat(admin, "cluster.dns.update_success") == 0


def test_first_resolution_failed_answers_503_until_dns_answers(procs, dns, ports):
    listen, admin, up = ports
    dns.set("svc.sharp.test", mode="nxdomain")
    procs.append(Upstream("127.0.0.2", up, "two"))
    al, path = file_access_log("%RESPONSE_CODE% %RESPONSE_FLAGS%\\n")
    start(procs, config(listen, admin, dns_cluster("dns", "svc.sharp.test", up, dns.port,
                                                   extra="dns_refresh_rate: 0.2s\ndns_lookup_family: V4_ONLY\n"),
                        hcm_extra=al), admin)
    st, _, body = get(listen)
    assert st == 503 and b"no healthy upstream" in body
    assert log_lines(path, 1)[0] == "503 UH"
    assert stat(admin, "cluster.dns.membership_total") == 0
    dns.set("svc.sharp.test", a=["127.0.0.2"])
    assert wait_for(lambda: get(listen)[0] == 200)
    assert names(listen, 5) == {"two": 5}


def test_startup_waits_for_the_first_resolution(procs, dns, ports):
    listen, admin, up = ports
    dns.set("svc.sharp.test", mode="drop")
    procs.append(Upstream("127.0.0.2", up, "two"))
    s = start(procs, config(listen, admin, dns_cluster("dns", "svc.sharp.test", up, dns.port,
                                                       extra="dns_refresh_rate: 0.2s\ndns_lookup_family: V4_ONLY\n")),
              admin, ready=False, env={"RES_OPTIONS": "retrans:2000 retry:1"})
    time.sleep(1.0)
    # still initializing: not ready, the workers do not run yet
    with pytest.raises(urllib.error.HTTPError) as e:
        admin_get(admin, "/ready")
    assert e.value.code == 503
    assert "INITIALIZING" in admin_get(admin, "/server_info")
    dns.set("svc.sharp.test", a=["127.0.0.2"])
    # the first query times out (bounded by c-ares), the server starts; the
    # next refresh finds the host
    s.wait_ready(admin, timeout=10)
    assert wait_for(lambda: get(listen)[0] == 200)
    assert "first DNS resolution of every DNS cluster done" in s.output()


def test_wait_for_warm_on_init_false_does_not_wait(procs, dns, ports):
    listen, admin, up = ports
    dns.set("svc.sharp.test", mode="drop")
    procs.append(Upstream("127.0.0.2", up, "two"))
    t0 = time.time()
    start(procs, config(listen, admin, dns_cluster("dns", "svc.sharp.test", up, dns.port,
                                                   extra="dns_refresh_rate: 0.2s\ndns_lookup_family: V4_ONLY\n"
                                                         "wait_for_warm_on_init: false\n")),
          admin, env={"RES_OPTIONS": "retrans:3000 retry:1"})
    # ready before c-ares' 3 s timeout: the first resolution is still running
    assert time.time() - t0 < 2.5
    assert stat(admin, "cluster.dns.update_attempt") == 1
    assert (stat(admin, "cluster.dns.update_failure") or 0) == 0
    assert get(listen)[0] == 503
    dns.set("svc.sharp.test", a=["127.0.0.2"])
    assert wait_for(lambda: get(listen)[0] == 200, timeout=15)


def test_startup_serves_once_resolved(procs, dns, ports):
    listen, admin, up = ports
    dns.set("svc.sharp.test", a=["127.0.0.2"])
    procs.append(Upstream("127.0.0.2", up, "two"))
    start(procs, config(listen, admin, dns_cluster("dns", "svc.sharp.test", up, dns.port,
                                                   extra="dns_lookup_family: V4_ONLY\n")), admin)
    # the first request after ready already has the host
    assert get(listen)[:2] == (200, "two")


@pytest.mark.parametrize("family,expect", [
    ("V4_ONLY", {"v4"}),
    ("V6_ONLY", {"v6"}),
    ("AUTO", {"v6"}),
    ("V4_PREFERRED", {"v4"}),
    ("ALL", {"v4", "v6"}),
])
def test_dns_lookup_family(procs, dns, ports, family, expect):
    if not has_ipv6_loopback():
        pytest.skip("no ::1 in this sandbox")
    listen, admin, up = ports
    dns.set("svc.sharp.test", a=["127.0.0.2"], aaaa=["::1"])
    procs.append(Upstream("127.0.0.2", up, "v4"))
    procs.append(Upstream("::1", up, "v6"))
    start(procs, config(listen, admin, dns_cluster("dns", "svc.sharp.test", up, dns.port,
                                                   extra=f"dns_lookup_family: {family}\n")), admin)
    assert set(names(listen, 10)) == expect


def test_auto_falls_back_to_ipv4(procs, dns, ports):
    listen, admin, up = ports
    dns.set("svc.sharp.test", a=["127.0.0.2"])  # no AAAA
    procs.append(Upstream("127.0.0.2", up, "v4"))
    start(procs, config(listen, admin, dns_cluster("dns", "svc.sharp.test", up, dns.port)), admin)
    assert names(listen, 5) == {"v4": 5}
    assert dns.count("svc.sharp.test", "AAAA") >= 1


def test_auto_falls_back_to_ipv4_when_ipv6_times_out(procs, dns, ports):
    listen, admin, up = ports
    dns.set("svc.sharp.test", a=["127.0.0.2"], mode="drop6")
    procs.append(Upstream("127.0.0.2", up, "v4"))
    start(procs, config(listen, admin, dns_cluster("dns", "svc.sharp.test", up, dns.port)), admin,
          env={"RES_OPTIONS": "retrans:500 retry:1"})
    assert names(listen, 3) == {"v4": 3}
    assert stat(admin, "dns.cares.timeouts") >= 1
    assert stat(admin, "cluster.dns.update_success") >= 1


def test_all_families_logical_dns_takes_the_first_ipv4(procs, dns, ports):
    """ALL asks A then AAAA (Envoy's order of results): a LOGICAL_DNS
    cluster's one host is the first IPv4 address."""
    if not has_ipv6_loopback():
        pytest.skip("no ::1 in this sandbox")
    listen, admin, up = ports
    dns.set("svc.sharp.test", a=["127.0.0.3", "127.0.0.2"], aaaa=["::1"])
    procs.append(Upstream("127.0.0.2", up, "two"))
    procs.append(Upstream("127.0.0.3", up, "three"))
    procs.append(Upstream("::1", up, "v6"))
    start(procs, config(listen, admin, dns_cluster("dns", "svc.sharp.test", up, dns.port, kind="LOGICAL_DNS",
                                                   extra="dns_lookup_family: ALL\n")), admin)
    assert names(listen, 5) == {"three": 5}


def test_strict_dns_several_endpoints(procs, dns, ports):
    listen, admin, up = ports
    dns.set("a.sharp.test", a=["127.0.0.2"])
    dns.set("b.sharp.test", a=["127.0.0.3"])
    procs.append(Upstream("127.0.0.2", up, "two"))
    procs.append(Upstream("127.0.0.3", up, "three"))
    start(procs, config(listen, admin, dns_cluster(
        "dns", None, None, dns.port, extra="dns_lookup_family: V4_ONLY\n",
        endpoints=[("a.sharp.test", up), ("b.sharp.test", up)])), admin)
    assert set(names(listen)) == {"two", "three"}
    text = admin_get(admin, "/clusters")
    assert f"dns::127.0.0.2:{up}::hostname::a.sharp.test" in text
    assert f"dns::127.0.0.3:{up}::hostname::b.sharp.test" in text


def test_numeric_and_hosts_file_names(procs, dns, ports):
    """An IP literal resolves without a query (c-ares answers at once, inside
    the call), "localhost" from /etc/hosts; neither asks the DNS server."""
    listen, admin, up = ports
    procs.append(Upstream("127.0.0.2", up, "two"))
    procs.append(Upstream("127.0.0.1", up, "one"))
    start(procs, config(listen, admin, dns_cluster(
        "dns", None, None, dns.port, extra="dns_lookup_family: V4_ONLY\n",
        endpoints=[("127.0.0.2", up), ("localhost", up)])), admin)
    assert set(names(listen)) == {"one", "two"}
    assert cluster_hosts(admin) == ["127.0.0.1", "127.0.0.2"]
    assert dns.queries == {}


def test_dns_resolution_config_resolvers(procs, dns, ports):
    listen, admin, up = ports
    dns.set("svc.sharp.test", a=["127.0.0.2"])
    procs.append(Upstream("127.0.0.2", up, "two"))
    cl = (f"  - name: dns\n    type: STRICT_DNS\n    connect_timeout: 1s\n    dns_lookup_family: V4_ONLY\n"
          f"    dns_resolution_config:\n"
          f"      resolvers: [{{ socket_address: {{ address: 127.0.0.1, port_value: {dns.port} }} }}]\n"
          f"      dns_resolver_options: {{ no_default_search_domain: true }}\n"
          f"    load_assignment:\n      cluster_name: dns\n      endpoints:\n      - lb_endpoints:\n"
          f"        - endpoint: {{ address: {{ socket_address: {{ address: svc.sharp.test, port_value: {up} }} }} }}\n")
    start(procs, config(listen, admin, cl), admin)
    assert names(listen, 3) == {"two": 3}


def test_no_default_search_domain(procs, dns, ports, tmp_path):
    """A single-label name: with the search domain of LOCALDOMAIN it
    resolves as name.<domain>; with no_default_search_domain only the name
    itself is asked."""
    listen, admin, up = ports
    dns.set("svc.search.test", a=["127.0.0.2"])
    procs.append(Upstream("127.0.0.2", up, "two"))

    def cluster(opts):
        return (f"  - name: dns\n    type: STRICT_DNS\n    connect_timeout: 1s\n    dns_lookup_family: V4_ONLY\n"
                f"    dns_resolution_config:\n"
                f"      resolvers: [{{ socket_address: {{ address: 127.0.0.1, port_value: {dns.port} }} }}]\n"
                f"      dns_resolver_options: {{ no_default_search_domain: {opts} }}\n"
                f"    load_assignment:\n      cluster_name: dns\n      endpoints:\n      - lb_endpoints:\n"
                f"        - endpoint: {{ address: {{ socket_address: {{ address: svc, port_value: {up} }} }} }}\n")

    start(procs, config(listen, admin, cluster("false")), admin, env={"LOCALDOMAIN": "search.test"})
    assert names(listen, 3) == {"two": 3}
    listen2, admin2 = free_port(), free_port()
    start(procs, config(listen2, admin2, cluster("true")), admin2, env={"LOCALDOMAIN": "search.test"})
    assert get(listen2)[0] == 503, dns.queries
    assert stat(admin2, "cluster.dns.update_failure") >= 1


def host_line(admin, address, key, cluster="dns"):
    prefix = f"{cluster}::{address}::{key}::"
    for line in admin_get(admin, "/clusters").splitlines():
        if line.startswith(prefix):
            return line[len(prefix):]
    return None


HC = """health_checks:
- timeout: 0.5s
  interval: 0.2s
  no_traffic_interval: 0.2s
  unhealthy_threshold: 1
  healthy_threshold: 1
  tcp_health_check: {}
"""


def test_health_checks_follow_the_host_set(procs, dns, ports):
    listen, admin, up = ports
    dns.set("svc.sharp.test", a=["127.0.0.2"])
    procs.append(Upstream("127.0.0.2", up, "two"))
    procs.append(Upstream("127.0.0.3", up, "three"))  # nothing listens on 127.0.0.4
    start(procs, config(listen, admin, dns_cluster("dns", "svc.sharp.test", up, dns.port,
                                                   extra="dns_refresh_rate: 0.1s\ndns_lookup_family: V4_ONLY\n" + HC)),
          admin)
    assert stat(admin, "cluster.dns.health_check.healthy") == 1
    assert names(listen, 5) == {"two": 5}
    # two hosts added: each is checked; the one without a server fails and
    # never gets a request, the other joins once its first check passes
    dns.set("svc.sharp.test", a=["127.0.0.2", "127.0.0.3", "127.0.0.4"])
    assert wait_for(lambda: cluster_hosts(admin) == ["127.0.0.2", "127.0.0.3", "127.0.0.4"])
    results = []
    deadline = time.time() + 2
    while time.time() < deadline:
        results.append(get(listen)[:2])
    assert all(r[0] == 200 for r in results), [r for r in results if r[0] != 200][:3]
    assert {r[1] for r in results} == {"two", "three"}
    assert wait_for(lambda: stat(admin, "cluster.dns.health_check.healthy") == 2)
    assert host_line(admin, f"127.0.0.4:{up}", "health_flags") == "/failed_active_hc"
    assert host_line(admin, f"127.0.0.3:{up}", "health_flags") == "healthy"
    assert stat(admin, "cluster.dns.membership_healthy") == 2
    assert stat(admin, "cluster.dns.membership_total") == 3
    # removed hosts are no longer checked
    dns.set("svc.sharp.test", a=["127.0.0.3"])
    assert wait_for(lambda: cluster_hosts(admin) == ["127.0.0.3"])
    assert wait_for(lambda: stat(admin, "cluster.dns.health_check.healthy") == 1)
    attempts = stat(admin, "cluster.dns.health_check.attempt")
    time.sleep(0.6)
    # one host checked every 0.2 s: about 3 attempts, not 9
    assert stat(admin, "cluster.dns.health_check.attempt") - attempts <= 5
    assert names(listen, 5) == {"three": 5}


def test_outlier_detection_follows_the_host_set(procs, dns, ports):
    listen, admin, up = ports
    dns.set("svc.sharp.test", a=["127.0.0.2", "127.0.0.3"])
    two = Upstream("127.0.0.2", up, "two")
    procs.append(two)
    procs.append(Upstream("127.0.0.3", up, "three"))
    procs.append(Upstream("127.0.0.4", up, "four"))
    od = ("outlier_detection:\n  consecutive_5xx: 3\n  interval: 0.2s\n  base_ejection_time: 30s\n"
          "  max_ejection_percent: 50\n")
    start(procs, config(listen, admin, dns_cluster("dns", "svc.sharp.test", up, dns.port,
                                                   extra="dns_refresh_rate: 0.1s\ndns_lookup_family: V4_ONLY\n" + od)),
          admin)
    with urllib.request.urlopen(f"http://127.0.0.2:{up}/admin/fault?status=503", timeout=5) as r:
        r.read()
    # requests until 127.0.0.2 has had 3 5xx in a row and is ejected
    assert wait_for(lambda: (get(listen), stat(admin, "cluster.dns.outlier_detection.ejections_active") == 1)[1],
                    timeout=10, step=0)
    assert host_line(admin, f"127.0.0.2:{up}", "health_flags") == "/failed_outlier_check"
    assert names(listen, 6) == {"three": 6}
    # the ejected host leaves the set: it no longer counts as ejected; a
    # new host gets traffic and its own detector state
    dns.set("svc.sharp.test", a=["127.0.0.3", "127.0.0.4"])
    assert wait_for(lambda: cluster_hosts(admin) == ["127.0.0.3", "127.0.0.4"])
    assert wait_for(lambda: stat(admin, "cluster.dns.outlier_detection.ejections_active") == 0)
    assert set(names(listen, 10)) == {"three", "four"}
    assert host_line(admin, f"127.0.0.4:{up}", "outlier_state") == "closed"
    # the former host comes back healed, as a new host for the detector
    with urllib.request.urlopen(f"http://127.0.0.2:{up}/admin/fault", timeout=5) as r:
        r.read()
    dns.set("svc.sharp.test", a=["127.0.0.2", "127.0.0.3", "127.0.0.4"])
    assert wait_for(lambda: len(cluster_hosts(admin)) == 3)
    assert host_line(admin, f"127.0.0.2:{up}", "health_flags") == "healthy"
    assert set(names(listen, 12)) == {"two", "three", "four"}


CARES = ("typed_dns_resolver_config:\n  name: envoy.network.dns_resolver.cares\n  typed_config:\n"
         "    '@type': type.googleapis.com/envoy.extensions.network.dns_resolver.cares.v3.CaresDnsResolverConfig\n"
         "    resolvers: [{{ socket_address: {{ address: 127.0.0.1, port_value: {port} }} }}]\n"
         "    {extra}\n")


@pytest.fixture
def tcp_dns():
    """The same kind of server on TCP only (nothing on UDP at its port)."""
    zone = Zone()
    port = free_port()
    srv = dnslib.server.DNSServer(zone, port=port, address="127.0.0.1", tcp=True, logger=QuietLogger())
    srv.start_thread()
    zone.port = port
    yield zone
    srv.stop()
    srv.server.server_close()


@pytest.mark.parametrize("how", ["cluster", "options", "typed"])
def test_use_tcp_for_dns_lookups(procs, tcp_dns, ports, how):
    listen, admin, up = ports
    tcp_dns.set("svc.sharp.test", a=["127.0.0.2"])
    procs.append(Upstream("127.0.0.2", up, "two"))
    if how == "cluster":
        extra = "use_tcp_for_dns_lookups: true\n"
    elif how == "options":
        extra = ("dns_resolution_config:\n  resolvers: [{ socket_address: { address: 127.0.0.1, port_value: %d } }]\n"
                 "  dns_resolver_options: { use_tcp_for_dns_lookups: true }\n" % tcp_dns.port)
    else:
        extra = CARES.format(port=tcp_dns.port, extra="dns_resolver_options: { use_tcp_for_dns_lookups: true }")
    start(procs, config(listen, admin, dns_cluster("dns", "svc.sharp.test", up, tcp_dns.port,
                                                   extra="dns_lookup_family: V4_ONLY\n" + extra)), admin)
    assert names(listen, 3) == {"two": 3}
    assert tcp_dns.count("svc.sharp.test") >= 1


def test_dns_over_udp_does_not_reach_a_tcp_only_server(procs, tcp_dns, ports):
    """The control for the test above: without use_tcp_for_dns_lookups the
    TCP-only server is not reached (c-ares retries over TCP only for
    truncated answers)."""
    listen, admin, up = ports
    tcp_dns.set("svc.sharp.test", a=["127.0.0.2"])
    procs.append(Upstream("127.0.0.2", up, "two"))
    start(procs, config(listen, admin, dns_cluster("dns", "svc.sharp.test", up, tcp_dns.port,
                                                   extra="dns_lookup_family: V4_ONLY\n" +
                                                         CARES.format(port=tcp_dns.port,
                                                                      extra="query_timeout_seconds: 1\n"
                                                                            "    query_tries: 1"))), admin)
    assert get(listen)[0] == 503
    assert tcp_dns.count("svc.sharp.test") == 0


def test_typed_cares_resolver_bounds_the_startup_wait(procs, dns, ports):
    """query_timeout_seconds and query_tries bound the first resolution of a
    server that never answers: SHARP starts within about that, with no host."""
    listen, admin, up = ports
    dns.set("svc.sharp.test", mode="drop")
    procs.append(Upstream("127.0.0.2", up, "two"))
    t0 = time.time()
    start(procs, config(listen, admin, dns_cluster(
        "dns", "svc.sharp.test", up, dns.port,
        extra="dns_lookup_family: V4_ONLY\ndns_refresh_rate: 0.2s\n" +
              CARES.format(port=dns.port, extra="query_timeout_seconds: 1\n    query_tries: 2"))), admin)
    took = time.time() - t0
    # two tries: 1 s then 2 s (c-ares doubles the timeout per round)
    assert 1.0 <= took < 8, took
    assert stat(admin, "dns.cares.timeouts") >= 1
    assert get(listen)[0] == 503
    dns.set("svc.sharp.test", a=["127.0.0.2"])
    assert wait_for(lambda: get(listen)[0] == 200, timeout=15)


def test_health_check_filter_reads_the_workers_host_set(procs, dns, ports):
    """envoy.filters.http.health_check's cluster_min_healthy_percentages on a
    DNS cluster: empty until the first answer, then the resolved hosts."""
    listen, admin, up = ports
    dns.set("svc.sharp.test", mode="nxdomain")
    procs.append(Upstream("127.0.0.2", up, "two"))
    filt = ("          - name: envoy.filters.http.health_check\n"
            "            typed_config:\n"
            "              \"@type\": type.googleapis.com/envoy.extensions.filters.http.health_check.v3.HealthCheck\n"
            "              pass_through_mode: false\n"
            "              headers: [{ name: \":path\", string_match: { exact: /healthz } }]\n"
            "              cluster_min_healthy_percentages: { dns: { value: 100 } }\n")
    y = config(listen, admin, dns_cluster("dns", "svc.sharp.test", up, dns.port,
                                          extra="dns_refresh_rate: 0.1s\ndns_lookup_family: V4_ONLY\n"))
    marker = "          http_filters:\n"
    y = y.replace(marker, marker + filt)
    start(procs, y, admin)
    assert get(listen, "/healthz")[0] == 503
    dns.set("svc.sharp.test", a=["127.0.0.2"])
    assert wait_for(lambda: get(listen, "/healthz")[0] == 200)


def load_error(procs, yaml_text):
    s = Sharp(yaml_text)
    procs.append(s)
    rc = s.p.wait(timeout=10)
    assert rc != 0
    return s.output()


@pytest.mark.parametrize("extra,kind,message", [
    ("dns_refresh_rate: 0.001s\n", "STRICT_DNS", "dns_refresh_rate"),
    ("dns_failure_refresh_rate: { base_interval: 2s, max_interval: 1s }\n", "STRICT_DNS",
     "max_interval greater than or equal to the base_interval"),
    ("dns_failure_refresh_rate: { max_interval: 1s }\n", "STRICT_DNS", "base_interval"),
    ("typed_dns_resolver_config: { name: envoy.network.dns_resolver.getaddrinfo, typed_config: "
     "{ '@type': type.googleapis.com/envoy.extensions.network.dns_resolver.getaddrinfo.v3."
     "GetAddrInfoDnsResolverConfig } }\n", "STRICT_DNS", "getaddrinfo"),
    (CARES.format(port=53, extra="udp_max_queries: 10"), "STRICT_DNS", "udp_max_queries"),
    (CARES.format(port=53, extra="filter_unroutable_families: true"), "STRICT_DNS", "filter_unroutable_families"),
    (CARES.format(port=53, extra="query_tries: 0"), "STRICT_DNS", "query_tries"),
    (CARES.format(port=53, extra="query_timeout_seconds: 0"), "STRICT_DNS", "query_timeout_seconds"),
    ("use_tcp_for_dns_lookups: true\n", "STATIC", "dns_* fields only apply"),
    ("load_balancing_policy: { policies: [{ typed_extension_config: { name: x, typed_config: "
     "{ '@type': type.googleapis.com/sharp.extensions.load_balancing_policies.shuffle_shard.v1.ShuffleShard, "
     "shard_size: 1 } } }] }\n", "STRICT_DNS", "load_balancing_policy"),
    ("dns_refresh_rate: 1s\n", "STATIC", "dns_* fields only apply"),
])
def test_config_errors(procs, dns, extra, kind, message):
    listen, admin = free_port(), free_port()
    host = "127.0.0.1" if kind == "STATIC" else "svc.sharp.test"
    out = load_error(procs, config(listen, admin, dns_cluster("dns", host, 80, dns.port, kind=kind, extra=extra)))
    assert message in out, out


def test_static_cluster_rejects_hostnames(procs, dns):
    listen, admin = free_port(), free_port()
    out = load_error(procs, config(listen, admin, dns_cluster("dns", "svc.sharp.test", 80, dns.port, kind="STATIC")
                                   .replace("    dns_resolvers:", "    # dns_resolvers:")))
    assert "not a numeric IPv4 or IPv6 address" in out, out


def test_logical_dns_needs_one_endpoint(procs, dns):
    listen, admin = free_port(), free_port()
    out = load_error(procs, config(listen, admin, dns_cluster(
        "dns", None, None, dns.port, kind="LOGICAL_DNS", endpoints=[("a.sharp.test", 80), ("b.sharp.test", 80)])))
    assert "single locality_lb_endpoint and a single lb_endpoint" in out, out



# ---- the bootstrap's resolver: the default of clusters without their own ----

def bare_cluster(name, host, port, extra=""):
    """A STRICT_DNS cluster with no resolver of its own (V4_ONLY)."""
    return (f"  - name: {name}\n    type: STRICT_DNS\n    connect_timeout: 1s\n    dns_lookup_family: V4_ONLY\n"
            f"{textwrap.indent(extra, '    ')}"
            f"    load_assignment:\n      cluster_name: {name}\n      endpoints:\n      - lb_endpoints:\n"
            f"        - endpoint: {{ address: {{ socket_address: {{ address: {host}, port_value: {port} }} }} }}\n")


def with_bootstrap_dns(yaml_text, dns_yaml):
    """The bootstrap with top-level DNS settings added."""
    return dns_yaml + yaml_text


@pytest.fixture
def dns2():
    """A second DNS server, answering its own zone."""
    zone = Zone()
    port = free_port()
    udp = dnslib.server.DNSServer(zone, port=port, address="127.0.0.1", logger=QuietLogger())
    udp.start_thread()
    zone.port = port
    yield zone
    udp.stop()
    udp.server.server_close()


@pytest.mark.parametrize("how", ["resolution", "typed"])
def test_bootstrap_resolver_is_the_default(procs, dns, dns2, ports, how):
    """Bootstrap dns_resolution_config / typed_dns_resolver_config: a DNS
    cluster without resolvers of its own asks the bootstrap's resolver;
    one with dns_resolvers asks its own (Envoy's selectDnsResolver)."""
    listen, admin, up = ports
    dns.set("svc.sharp.test", a=["127.0.0.2"])
    dns2.set("svc.sharp.test", a=["127.0.0.3"])
    procs.append(Upstream("127.0.0.2", up, "two"))
    procs.append(Upstream("127.0.0.3", up, "three"))
    resolver = f"[{{ socket_address: {{ address: 127.0.0.1, port_value: {dns.port} }} }}]"
    if how == "resolution":
        top = f"dns_resolution_config: {{ resolvers: {resolver} }}\n"
    else:
        top = CARES.format(port=dns.port, extra="query_tries: 2")
    clusters = (bare_cluster("dns", "svc.sharp.test", up)
                + dns_cluster("own", "svc.sharp.test", up, dns2.port, extra="dns_lookup_family: V4_ONLY\n"))
    routes_cfg = config(listen, admin, clusters).replace(
        '              - match: { prefix: "/" }\n                route: { cluster: dns }\n',
        '              - match: { prefix: "/own" }\n                route: { cluster: own }\n'
        '              - match: { prefix: "/" }\n                route: { cluster: dns }\n')
    start(procs, with_bootstrap_dns(routes_cfg, top), admin)
    assert names(listen, 3) == {"two": 3}
    assert {get(listen, "/own")[1] for _ in range(3)} == {"three"}
    assert dns.count("svc.sharp.test") >= 1 and dns2.count("svc.sharp.test") >= 1


def test_bootstrap_resolver_options_apply(procs, tcp_dns, ports):
    """The bootstrap's dns_resolver_options (use_tcp_for_dns_lookups) reach
    the clusters that use its resolver: a TCP-only server answers them."""
    listen, admin, up = ports
    tcp_dns.set("svc.sharp.test", a=["127.0.0.2"])
    procs.append(Upstream("127.0.0.2", up, "two"))
    top = (f"dns_resolution_config:\n  resolvers: [{{ socket_address: {{ address: 127.0.0.1, port_value: {tcp_dns.port} }} }}]\n"
           "  dns_resolver_options: { use_tcp_for_dns_lookups: true }\n")
    start(procs, with_bootstrap_dns(config(listen, admin, bare_cluster("dns", "svc.sharp.test", up)), top), admin)
    assert names(listen, 3) == {"two": 3}
    assert tcp_dns.count("svc.sharp.test") >= 1


def test_cluster_use_tcp_without_resolvers_is_refused(procs, dns):
    """Envoy reads a cluster's deprecated use_tcp_for_dns_lookups only with
    its dns_resolvers; alone it would do nothing, so it is refused; a
    bootstrap resolver config with a bad resolver is an error at load even
    without a DNS cluster, as Envoy builds that resolver at start."""
    listen, admin = free_port(), free_port()
    out = load_error(procs, config(listen, admin, bare_cluster("dns", "svc.sharp.test", 80,
                                                               extra="use_tcp_for_dns_lookups: true\n")))
    assert "static_resources.clusters[0].use_tcp_for_dns_lookups: applies only with the cluster's dns_resolvers" \
        in out, out
    bad = "dns_resolution_config: { resolvers: [{ socket_address: { address: dns.example, port_value: 53 } }] }\n"
    out = load_error(procs, with_bootstrap_dns(bootstrap_yaml(listen, admin, {"b": [80]}), bad))
    assert "dns_resolution_config.resolvers[0].socket_address: address 'dns.example' is not a numeric" in out, out


# ---- resolv.conf: the system's name servers (a private mount namespace) ----

class SharpWithResolvConf(Sharp):
    """SHARP in a mount namespace of its own where /etc/resolv.conf is the
    given text (a bind mount nobody else sees)."""

    def __init__(self, yaml_text, resolv_conf):
        import tempfile
        self.dir = tempfile.mkdtemp(prefix="sharp-it-")
        self.config = os.path.join(self.dir, "bootstrap.yaml")
        with open(self.config, "w") as f:
            f.write(yaml_text)
        conf = os.path.join(self.dir, "resolv.conf")
        with open(conf, "w") as f:
            f.write(resolv_conf)
        Proc.__init__(self, ["unshare", "--mount", "--propagation", "private", "--", "sh", "-c",
                             'mount --bind "$0" /etc/resolv.conf && exec "$@"', conf,
                             SHARP, "-c", self.config, "--concurrency", "2", "-l", "info"])


def can_namespace():
    if os.geteuid() != 0:
        return False
    r = subprocess.run(["unshare", "--mount", "--propagation", "private", "true"], capture_output=True)
    return r.returncode == 0


@pytest.fixture
def system_dns():
    """A DNS server on port 53 of a loopback address (UDP and TCP), for a
    resolv.conf to name: resolv.conf has no port."""
    if not can_namespace():
        pytest.skip("needs root for a private mount namespace and port 53")
    import random
    zone = Zone()
    for _ in range(20):
        addr = f"127.53.{random.randint(1, 250)}.{random.randint(2, 250)}"
        try:
            udp = dnslib.server.DNSServer(zone, port=53, address=addr, logger=QuietLogger())
            tcp = dnslib.server.DNSServer(zone, port=53, address=addr, tcp=True, logger=QuietLogger())
        except OSError:
            continue
        break
    else:
        pytest.skip("no free port 53 on loopback")
    udp.start_thread()
    tcp.start_thread()
    zone.address = addr
    yield zone
    for srv in (udp, tcp):
        srv.stop()
        srv.server.server_close()


def start_with_resolv_conf(procs, yaml_text, admin, resolv_conf):
    s = SharpWithResolvConf(yaml_text, resolv_conf)
    procs.append(s)
    s.wait_ready(admin)
    return s


@pytest.mark.parametrize("fallback,resolv,asked", [
    (True, "system", "system"),       # resolv.conf names a server: the configured ones are only a fallback
    (True, "none", "configured"),     # resolv.conf names none: c-ares' default alone, the fallback is used
    (False, "system", "configured"),  # without the flag the configured resolvers replace the system's
])
def test_use_resolvers_as_fallback(procs, dns, system_dns, ports, fallback, resolv, asked):
    listen, admin, up = ports
    system_dns.set("svc.sharp.test", a=["127.0.0.2"])
    dns.set("svc.sharp.test", a=["127.0.0.3"])
    procs.append(Upstream("127.0.0.2", up, "system"))
    procs.append(Upstream("127.0.0.3", up, "configured"))
    extra = "use_resolvers_as_fallback: true" if fallback else "query_tries: 1"
    conf = f"nameserver {system_dns.address}\n" if resolv == "system" else "options ndots:1\n"
    cluster = dns_cluster("dns", "svc.sharp.test", up, dns.port, extra="dns_lookup_family: V4_ONLY\n" +
                          CARES.format(port=dns.port, extra=extra)).replace("    dns_resolvers:", "    # dns_resolvers:")
    start_with_resolv_conf(procs, config(listen, admin, cluster), admin, conf)
    assert names(listen, 3) == {asked: 3}
    other = dns if asked == "system" else system_dns
    assert other.count("svc.sharp.test") == 0


def test_bootstrap_fallback_and_legacy_tcp(procs, dns, system_dns, ports):
    """The bootstrap's typed c-ares config with use_resolvers_as_fallback,
    and its deprecated use_tcp_for_dns_lookups over the system's servers:
    both reach the clusters without resolvers of their own."""
    listen, admin, up = ports
    system_dns.set("svc.sharp.test", a=["127.0.0.2"])
    dns.set("svc.sharp.test", a=["127.0.0.3"])
    procs.append(Upstream("127.0.0.2", up, "system"))
    procs.append(Upstream("127.0.0.3", up, "configured"))
    top = CARES.format(port=dns.port, extra="use_resolvers_as_fallback: true")
    yaml_text = with_bootstrap_dns(config(listen, admin, bare_cluster("dns", "svc.sharp.test", up)), top)
    start_with_resolv_conf(procs, yaml_text, admin, f"nameserver {system_dns.address}\n")
    assert names(listen, 3) == {"system": 3}
    assert dns.count("svc.sharp.test") == 0
    # use_tcp_for_dns_lookups on the bootstrap: the system's server over TCP
    listen2, admin2 = free_port(), free_port()
    assert system_dns.tcp_queries == 0
    yaml_text = with_bootstrap_dns(config(listen2, admin2, bare_cluster("dns", "svc.sharp.test", up)),
                                   "use_tcp_for_dns_lookups: true\n")
    start_with_resolv_conf(procs, yaml_text, admin2, f"nameserver {system_dns.address}\n")
    assert names(listen2, 3) == {"system": 3}
    assert system_dns.tcp_queries >= 1
