"""Listeners from LDS files (dynamic_resources.lds_config, Envoy's
filesystem subscription), with Envoy's listener update semantics: a listener
the file no longer names is removed and its connections drain (HTTP/1
"connection: close" on the next response, HTTP/2 GOAWAY, idle ones closed,
what is left closed after --drain-time-s); a modified listener serves new
connections with the new version at once on the same sockets while the old
connections drain; an update that changes only filter chains is done in
place (connections on the unchanged chains stay open); a listener that
cannot be built is rejected and its previous version keeps serving.
Clients keep sending through thirty updates and no request fails."""
import concurrent.futures
import http.client
import json
import os
import shutil
import socket
import subprocess
import tempfile
import time

import pytest

from conftest import (SLOW, H2Client, Sharp, Upstream, admin_get, free_port, stat, validate_config,
                      wait_for)
from test_xds_file import Traffic, discovery, route_config, write_atomic

LISTENER = "type.googleapis.com/envoy.config.listener.v3.Listener"
HCM = "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager"
ROUTER = "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"


def hcm(cluster="ca", header="v1", rds=None, codec=None, drain_timeout=None):
    h = {"@type": HCM, "stat_prefix": "lds",
         "http_filters": [{"name": "envoy.filters.http.router", "typed_config": {"@type": ROUTER}}]}
    if rds:
        h["rds"] = {"config_source": {"path_config_source": {"path": rds}}, "route_config_name": "dyn_routes"}
    else:
        rc = route_config("r", cluster)
        del rc["@type"]  # inline, not a resource
        rc["virtual_hosts"][0]["response_headers_to_add"] = [{"header": {"key": "x-version", "value": header}}]
        h["route_config"] = rc
    if codec:
        h["codec_type"] = codec
    if drain_timeout:
        h["drain_timeout"] = drain_timeout
    return h


def chain(name="default", match=None, **kw):
    c = {"name": name, "filters": [{"name": "envoy.filters.network.http_connection_manager",
                                    "typed_config": hcm(**kw)}]}
    if match:
        c["filter_chain_match"] = match
    return c


def listener(name, port, chains=None, buffer_limit=None, **kw):
    lst = {"@type": LISTENER, "name": name,
           "address": {"socket_address": {"address": "127.0.0.1", "port_value": port}},
           "filter_chains": chains or [chain(**kw)]}
    if buffer_limit:
        lst["per_connection_buffer_limit_bytes"] = buffer_limit
    return lst


def static_cluster(name, port):
    return {"name": name, "type": "STATIC", "connect_timeout": "1s",
            "load_assignment": {"cluster_name": name, "endpoints": [{"lb_endpoints": [
                {"endpoint": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": port}}}}]}]}}


def bootstrap(admin, lds_source, clusters, static_listener_port=None):
    static_listeners = "[]"
    if static_listener_port:
        sl = listener("static", static_listener_port)
        del sl["@type"]
        static_listeners = json.dumps([sl])
    return f"""admin:
  address: {{ socket_address: {{ address: 127.0.0.1, port_value: {admin} }} }}
dynamic_resources:
  lds_config: {json.dumps(lds_source)}
static_resources:
  listeners: {static_listeners}
  clusters: {json.dumps(clusters)}
"""


def request(port, path="/", timeout=10, source=None):
    """(status, x-upstream-name, x-version, connection header) on a new connection."""
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout * SLOW,
                                   source_address=(source, 0) if source else None)
    try:
        c.request("GET", path)
        r = c.getresponse()
        r.read()
        return r.status, r.getheader("x-upstream-name"), r.getheader("x-version"), r.getheader("connection")
    finally:
        c.close()


class Conn:
    """One HTTP/1.1 keep-alive connection that never reconnects: each
    response says whether the proxy will close it."""

    def __init__(self, port, source=None):
        self.c = http.client.HTTPConnection("127.0.0.1", port, timeout=10 * SLOW,
                                            source_address=(source, 0) if source else None)
        self.c.connect()
        self.local = self.c.sock.getsockname()

    def get(self, path="/"):
        assert self.c.sock is not None and self.c.sock.getsockname() == self.local, "the connection was replaced"
        self.c.request("GET", path)
        r = self.c.getresponse()
        r.read()
        return r.status, r.getheader("x-version"), r.getheader("connection")

    def closed_by_peer(self, timeout):
        """True once the proxy closed the (idle) connection."""
        s = self.c.sock
        s.settimeout(timeout * SLOW)
        try:
            return s.recv(1) == b""
        except (socket.timeout, TimeoutError):
            return False
        except ConnectionResetError:
            return True

    def close(self):
        self.c.close()


def switched(admin, n):
    """Waits until the workers started serving n listener versions in all
    (listener_create_success counts one per worker and version, in the
    wake-up that also drains the old version's connections)."""
    wait_for(lambda: stat(admin, "listener_manager.listener_create_success") == n, 5, f"{n} listener versions")


def refused(port):
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=2):
            return False
    except ConnectionRefusedError:
        return True


def dynamic_listeners(admin):
    dump = json.loads(admin_get(admin, "/config_dump"))
    ld = [c for c in dump["configs"] if c["@type"].endswith("ListenersConfigDump")][0]
    return ld.get("version_info"), {d.get("name"): d for d in ld.get("dynamic_listeners", [])}


@pytest.fixture
def env(tmp_path, procs):
    def upstream(name):
        u = Upstream(name)
        procs.append(u)
        return u

    def sharp(text, drain_time=600, concurrency=2):
        p = Sharp(text, concurrency=concurrency, extra=("--drain-time-s", str(drain_time)))
        procs.append(p)
        return p
    yield tmp_path, upstream, sharp


def test_listeners_added_modified_in_place_and_removed(env):
    d, upstream, sharp = env
    a = upstream("a")
    lds = str(d / "lds.json")
    pa, pb = free_port(), free_port()
    write_atomic(lds, discovery(1, listener("la", pa)))
    admin = free_port()
    p = sharp(bootstrap(admin, {"path_config_source": {"path": lds}}, [static_cluster("ca", a.port)]), drain_time=2)
    p.wait_ready(admin)
    assert request(pa)[:3] == (200, "a", "v1")
    assert stat(admin, "listener_manager.listener_added") == 1
    assert stat(admin, "listener_manager.lds.update_success") == 1
    assert stat(admin, "listener_manager.total_listeners_active") == 1
    assert stat(admin, "listener_manager.listener_create_success") == 2  # once per worker
    version, dyn = dynamic_listeners(admin)
    assert version == "1" and dyn["la"]["active_state"]["version_info"] == "1"
    assert dyn["la"]["active_state"]["listener"]["name"] == "la"
    ka = Conn(pa)
    assert ka.get() == (200, "v1", None)

    # added: serves at once; the other listener's connections are untouched
    write_atomic(lds, discovery(2, listener("la", pa), listener("lb", pb, header="b1")))
    wait_for(lambda: not refused(pb), 5, "listener lb")
    assert request(pb)[:3] == (200, "a", "b1")
    assert ka.get() == (200, "v1", None)
    assert stat(admin, "listener_manager.listener_added") == 2
    assert stat(admin, "listener_manager.listener_modified") == 0

    # only the filter chain of la changed: in place; its one chain drains,
    # so the open connection is told to close on its next response
    write_atomic(lds, discovery(3, listener("la", pa, header="v2"), listener("lb", pb, header="b1")))
    switched(admin, 6)
    assert request(pa)[2] == "v2"
    assert ka.get() == (200, "v1", "close")
    ka.close()
    assert stat(admin, "listener_manager.listener_in_place_updated") == 1
    assert stat(admin, "listener_manager.listener_modified") == 1
    assert stat(admin, "listener_manager.total_filter_chains_draining") == 1
    assert stat(admin, "http.lds.downstream_cx_drain_close") >= 1
    version, dyn = dynamic_listeners(admin)
    assert version == "3" and dyn["la"]["active_state"]["version_info"] == "3"
    assert dyn["lb"]["active_state"]["version_info"] == "2"  # unchanged: the version it came with
    wait_for(lambda: stat(admin, "listener_manager.total_filter_chains_draining") == 0, 10, "the chain's drain time")

    # removed: its socket closes, it drains for --drain-time-s
    write_atomic(lds, discovery(4, listener("la", pa, header="v2")))
    wait_for(lambda: refused(pb), 5, "listener lb closed")
    assert stat(admin, "listener_manager.listener_removed") == 1
    assert stat(admin, "listener_manager.total_listeners_draining") == 1
    assert stat(admin, "listener_manager.total_listeners_active") == 1
    _, dyn = dynamic_listeners(admin)
    assert "active_state" not in dyn["lb"] and dyn["lb"]["draining_state"]["version_info"] == "2"
    wait_for(lambda: stat(admin, "listener_manager.total_listeners_draining") == 0, 10, "lb's drain time")
    _, dyn = dynamic_listeners(admin)
    assert "lb" not in dyn
    assert request(pa)[:3] == (200, "a", "v2")
    # the same file again: nothing changes (an unchanged listener is skipped)
    write_atomic(lds, discovery(5, listener("la", pa, header="v2")))
    wait_for(lambda: stat(admin, "listener_manager.lds.update_success") == 5, 5, "update 5")
    assert stat(admin, "listener_manager.listener_modified") == 1
    assert dynamic_listeners(admin)[0] == "4"  # Envoy's version: of the last update that changed something


def test_watched_directory_symlink_swap(env):
    d, upstream, sharp = env
    a = upstream("a")
    port = free_port()
    data = d / "cfg"
    for v in (1, 2):
        os.makedirs(data / f"v{v}")
        write_atomic(str(data / f"v{v}" / "lds.json"), discovery(v, listener("l", port, header=f"v{v}")))
    os.symlink("v1", data / "..data")
    os.symlink("..data/lds.json", data / "lds.json")
    admin = free_port()
    src = {"path_config_source": {"path": str(data / "lds.json"), "watched_directory": {"path": str(data)}}}
    p = sharp(bootstrap(admin, src, [static_cluster("ca", a.port)]))
    p.wait_ready(admin)
    assert request(port)[2] == "v1"
    os.symlink("v2", data / "..data_tmp")
    os.replace(data / "..data_tmp", data / "..data")  # Kubernetes' ConfigMap swap
    wait_for(lambda: request(port)[2] == "v2", 5, "the swapped listener")


def test_deprecated_path_source(env):
    d, upstream, sharp = env
    a = upstream("a")
    port, admin = free_port(), free_port()
    lds = str(d / "lds.yaml")
    write_atomic(lds, discovery(1, listener("l", port)))  # JSON is YAML
    p = sharp(bootstrap(admin, {"path": lds}, [static_cluster("ca", a.port)]))
    p.wait_ready(admin)
    assert request(port)[:3] == (200, "a", "v1")


def test_requests_in_flight_finish_on_removed_and_modified_listeners(env):
    d, upstream, sharp = env
    a, b = upstream("a"), upstream("b")
    lds = str(d / "lds.json")
    p1, p2 = free_port(), free_port()
    write_atomic(lds, discovery(1, listener("one", p1), listener("two", p2)))
    admin = free_port()
    p = sharp(bootstrap(admin, {"path": lds}, [static_cluster("ca", a.port), static_cluster("cb", b.port)]))
    p.wait_ready(admin)
    with concurrent.futures.ThreadPoolExecutor(8) as ex:
        slow = [ex.submit(request, port, "/?delay_ms=1500") for port in (p1, p1, p1, p1, p2, p2, p2, p2)]
        wait_for(lambda: stat(admin, "cluster.ca.upstream_rq_active") == 8, 5, "the requests in flight")
        # "one" modified whole (a listener field changed) to another cluster,
        # "two" removed
        write_atomic(lds, discovery(2, listener("one", p1, cluster="cb", header="v2", buffer_limit=65536)))
        wait_for(lambda: request(p1)[:3] == (200, "b", "v2"), 5, "the new version of one")
        assert refused(p2)
        assert stat(admin, "listener_manager.listener_in_place_updated") == 0
        assert stat(admin, "listener_manager.listener_modified") == 1
        assert stat(admin, "listener_manager.total_listeners_draining") == 2
        # each in-flight request finishes with its old version, and its
        # connection is closed after it
        assert [f.result() for f in slow] == [(200, "a", "v1", "close")] * 8


def test_drain_time_closes_what_is_left(env):
    d, upstream, sharp = env
    a = upstream("a")
    lds = str(d / "lds.json")
    port = free_port()
    write_atomic(lds, discovery(1, listener("l", port)))
    admin = free_port()
    p = sharp(bootstrap(admin, {"path": lds}, [static_cluster("ca", a.port)]), drain_time=1)
    p.wait_ready(admin)
    with concurrent.futures.ThreadPoolExecutor(1) as ex:
        long = ex.submit(request, port, "/?delay_ms=8000", 15)
        wait_for(lambda: stat(admin, "cluster.ca.upstream_rq_active") == 1, 5, "the request in flight")
        t0 = time.time()
        write_atomic(lds, discovery(2))
        # the listener goes once the drain time is over: its last connection is closed
        with pytest.raises((http.client.RemoteDisconnected, ConnectionResetError)):
            long.result()
        assert time.time() - t0 < 6 * SLOW
    wait_for(lambda: stat(admin, "listener_manager.total_listeners_draining") == 0, 5, "the end of the drain")
    assert stat(admin, "listener.127.0.0.1_%d.downstream_cx_active" % port) == 0


def test_http1_connection_close_and_http2_goaway(env):
    d, upstream, sharp = env
    a = upstream("a")
    lds = str(d / "lds.json")
    p1, p2 = free_port(), free_port()

    def update(v, limit):
        write_atomic(lds, discovery(v, listener("h1", p1, header=f"v{v}", buffer_limit=limit),
                                    listener("h2", p2, header=f"v{v}", buffer_limit=limit, codec="HTTP2")))
    update(1, 1048576)
    admin = free_port()
    p = sharp(bootstrap(admin, {"path": lds}, [static_cluster("ca", a.port)]))
    p.wait_ready(admin)
    h1 = Conn(p1)
    assert h1.get() == (200, "v1", None)
    idle = Conn(p1)  # stays idle: closed by the drain after drain_timeout (5 s)
    assert idle.get() == (200, "v1", None)
    h2 = H2Client(p2)
    sid = h2.send("/?delay_ms=1500")
    wait_for(lambda: stat(admin, "cluster.ca.upstream_rq_active") == 1, 5, "the HTTP/2 request in flight")
    update(2, 65536)  # a listener field: the whole listener is replaced
    switched(admin, 8)
    assert request(p1)[2] == "v2"
    # HTTP/1: the next response on the old connection closes it
    assert h1.get() == (200, "v1", "close")
    # HTTP/2: a GOAWAY, and the stream in flight completes
    assert h2.wait(lambda: h2.goaways, 5), "no GOAWAY"
    status, headers, _ = h2.response(sid, timeout=5)
    assert status == 200 and headers.get("x-version") == "v1"
    # no new stream is taken on the draining connection
    h2.close()
    assert idle.closed_by_peer(10), "the idle connection was not closed"
    assert stat(admin, "http.lds.downstream_cx_drain_close") >= 3


def test_in_place_update_keeps_the_connections_of_unchanged_chains(env):
    """Two filter chains chosen by the client's source address: an update
    changing one chain drains only the connections on it."""
    d, upstream, sharp = env
    a = upstream("a")
    lds = str(d / "lds.json")
    port = free_port()

    def chains(v_one, v_two):
        return [chain("one", {"source_prefix_ranges": [{"address_prefix": "127.0.0.1", "prefix_len": 32}]},
                      header=v_one),
                chain("two", {"source_prefix_ranges": [{"address_prefix": "127.0.0.2", "prefix_len": 32}]},
                      header=v_two)]
    write_atomic(lds, discovery(1, listener("l", port, chains=chains("one1", "two1"))))
    admin = free_port()
    p = sharp(bootstrap(admin, {"path": lds}, [static_cluster("ca", a.port)]), drain_time=2)
    p.wait_ready(admin)
    one, two = Conn(port, "127.0.0.1"), Conn(port, "127.0.0.2")
    assert one.get() == (200, "one1", None) and two.get() == (200, "two1", None)
    write_atomic(lds, discovery(2, listener("l", port, chains=chains("one1", "two2"))))
    switched(admin, 4)
    assert request(port, source="127.0.0.2")[2] == "two2"
    assert stat(admin, "listener_manager.listener_in_place_updated") == 1
    assert stat(admin, "listener_manager.total_filter_chains_draining") == 1
    # the connection on the changed chain drains; the other one stays
    assert two.get() == (200, "two1", "close")
    assert one.get() == (200, "one1", None)
    # past the drain time (chains closed), the unchanged chain's connection
    # still serves: it belongs to the new version now
    wait_for(lambda: stat(admin, "listener_manager.total_filter_chains_draining") == 0, 10, "the drain time")
    time.sleep(0.3)
    assert one.get() == (200, "one1", None)
    assert request(port, source="127.0.0.1")[2] == "one1"
    # a listener-wide change is a full update: every connection drains
    write_atomic(lds, discovery(3, listener("l", port, chains=chains("one1", "two2"), buffer_limit=65536)))
    switched(admin, 6)
    assert stat(admin, "listener_manager.listener_modified") == 2
    assert stat(admin, "listener_manager.listener_in_place_updated") == 1
    assert one.get() == (200, "one1", "close")
    one.close()
    two.close()


def test_rejected_listeners_keep_their_previous_version(env, tmp_path):
    d, upstream, sharp = env
    a = upstream("a")
    lds = str(d / "lds.json")
    port, other, static_port = free_port(), free_port(), free_port()
    write_atomic(lds, discovery(1, listener("l", port)))
    admin = free_port()
    p = sharp(bootstrap(admin, {"path": lds}, [static_cluster("ca", a.port)], static_listener_port=static_port))
    p.wait_ready(admin)
    assert request(port)[2] == "v1"
    rejected = 0

    def expect_rejected(version, *listeners, why):
        nonlocal rejected
        write_atomic(lds, discovery(version, *listeners))
        rejected += 1
        wait_for(lambda: stat(admin, "listener_manager.lds.update_rejected") == rejected, 5, f"rejection {version}")
        assert request(port)[2] == "v1"
        _, dyn = dynamic_listeners(admin)
        details = [x["error_state"]["details"] for x in dyn.values() if "error_state" in x]
        assert any(why in det for det in details), details
        return dyn

    # a route to a cluster that does not exist (inline routes are validated, as Envoy)
    dyn = expect_rejected(2, listener("l", port, cluster="nope", header="v2"), why="unknown cluster 'nope'")
    assert dyn["l"]["active_state"]["version_info"] == "1"
    assert dyn["l"]["error_state"]["failed_configuration"]["name"] == "l"
    assert "last_update_attempt" in dyn["l"]["error_state"]
    # a field SHARP does not implement: that listener is refused alone (the
    # rest of the file would apply) and keeps its version
    bad = listener("l", port, header="v2")
    bad["transparent"] = True
    dyn = expect_rejected(3, bad, why="transparent")
    assert dyn["l"]["active_state"]["version_info"] == "1"
    # the name of a static listener
    expect_rejected(4, listener("l", port), listener("static", other), why="static listener")
    # two listeners on one address
    expect_rejected(5, listener("l", port), listener("m", port), why="duplicate address")
    # a static listener's address
    expect_rejected(6, listener("l", port), listener("m", static_port), why="duplicate address")
    # one name twice
    expect_rejected(7, listener("l", port), listener("l", port, header="v9"), why="duplicate listener l found")
    # a port that cannot be bound (taken without SO_REUSEPORT)
    blocker = socket.socket()
    blocker.bind(("127.0.0.1", other))
    blocker.listen(1)
    try:
        failures = stat(admin, "listener_manager.listener_create_failure")
        expect_rejected(8, listener("l", port), listener("m", other), why="cannot bind")
        assert stat(admin, "listener_manager.listener_create_failure") == failures + 1
    finally:
        blocker.close()
    # the good listeners of a rejected update are applied (as Envoy)
    write_atomic(lds, discovery(9, listener("l", port, header="v9"), listener("m", other),
                                listener("n", port)))
    rejected += 1
    wait_for(lambda: stat(admin, "listener_manager.lds.update_rejected") == rejected, 5, "rejection 9")
    wait_for(lambda: request(other)[2] == "v1" and request(port)[2] == "v9", 5, "the applied listeners")
    _, dyn = dynamic_listeners(admin)
    assert "duplicate address" in dyn["n"]["error_state"]["details"] and "active_state" not in dyn["n"]
    # the next good update clears the error states
    write_atomic(lds, discovery(10, listener("l", port, header="v9"), listener("m", other)))
    wait_for(lambda: stat(admin, "listener_manager.lds.update_success") == 2, 5, "update 10")
    _, dyn = dynamic_listeners(admin)
    assert not any("error_state" in x for x in dyn.values()), dyn
    assert stat(admin, "listener_manager.lds.update_failure") == 0


def test_rds_listeners_from_lds(env):
    d, upstream, sharp = env
    a, b = upstream("a"), upstream("b")
    lds, rds = str(d / "lds.json"), str(d / "rds.json")
    port = free_port()
    write_atomic(rds, discovery(1, route_config("dyn_routes", "ca")))
    write_atomic(lds, discovery(1, listener("l", port, rds=rds)))
    admin = free_port()
    p = sharp(bootstrap(admin, {"path": lds}, [static_cluster("ca", a.port), static_cluster("cb", b.port)]))
    p.wait_ready(admin)
    ka = Conn(port)
    assert ka.get()[0] == 200 and request(port)[1] == "a"
    # an RDS change reaches the next request of the open connection, no drain
    write_atomic(rds, discovery(2, route_config("dyn_routes", "cb")))
    wait_for(lambda: request(port)[1] == "b", 5, "the RDS update")
    assert ka.get()[2] is None
    assert stat(admin, "http.lds.rds.dyn_routes.update_success") == 2
    ka.close()


def test_startup_refusals(tmp_path):
    lds = tmp_path / "lds.json"
    clusters = [static_cluster("ca", 1)]
    write_atomic(str(lds), discovery(1, listener("l", free_port(), cluster="nope")))
    rc, out = validate_config(bootstrap(free_port(), {"path": str(lds)}, clusters))
    assert rc != 0 and "dynamic_resources.lds_config" in out and "unknown cluster 'nope'" in out, out
    write_atomic(str(lds), discovery(1, listener("static", free_port())))
    rc, out = validate_config(bootstrap(free_port(), {"path": str(lds)}, clusters, static_listener_port=free_port()))
    assert rc != 0 and "static listener" in out, out
    write_atomic(str(lds), discovery(1, listener("l", free_port())))
    rc, out = validate_config(bootstrap(free_port(), {"path": str(lds)}, clusters))
    assert rc == 0, out
    rc, out = validate_config(bootstrap(free_port(), {"path": str(lds), "resource_api_version": "V3"}, clusters))
    assert rc == 0, out
    rc, out = validate_config(bootstrap(free_port(), {"path": str(lds), "resource_api_version": "V2"}, clusters))
    assert rc != 0 and "resource_api_version" in out, out
    # a listener without a name cannot be updated by the next state of the world
    write_atomic(str(lds), discovery(1, listener("", free_port())))
    rc, out = validate_config(bootstrap(free_port(), {"path": str(lds)}, clusters))
    assert rc != 0 and "needs a name" in out, out


def test_updates_under_load_lose_no_request(env):
    """Clients send continuously (keep-alive connections and new ones)
    through thirty modifications of the listener on the same address: in
    place (routes, headers) and whole (a listener field); no request fails
    and no connection attempt is refused."""
    d, upstream, sharp = env
    ups = [upstream(n) for n in ("a", "b")]
    lds = str(d / "lds.json")
    port = free_port()
    write_atomic(lds, discovery(0, listener("l", port, cluster="c0", header="h0", buffer_limit=1048576)))
    admin = free_port()
    p = sharp(bootstrap(admin, {"path": lds}, [static_cluster("c0", ups[0].port), static_cluster("c1", ups[1].port)]),
              drain_time=3)
    p.wait_ready(admin)
    traffic = Traffic(port, [(i % 2 == 0, "/?delay_ms=5") for i in range(6)]).start()
    updates = 0
    for i in range(1, 31):
        # odd: in place (the route's cluster and a header); even: the whole
        # listener (its buffer limit)
        limit = 1048576 - 4096 * (i // 2)
        write_atomic(lds, discovery(i, listener("l", port, cluster=f"c{i % 2}", header=f"h{i}", buffer_limit=limit)))
        updates += 1
        time.sleep(0.15)
    time.sleep(0.5)
    traffic.stop()
    print(f"zero-loss: {traffic.sent} requests, {traffic.failed} failed, {updates} listener updates")
    assert traffic.failed == 0, traffic.errors[:5]
    assert traffic.sent > 200
    assert request(port)[2] == "h30"
    assert stat(admin, "listener_manager.lds.update_success") == 31
    assert stat(admin, "listener_manager.listener_modified") == 30
    assert stat(admin, "listener_manager.listener_in_place_updated") == 15
    assert stat(admin, "listener_manager.lds.update_rejected") == 0


def test_address_change_is_a_new_socket(env):
    d, upstream, sharp = env
    a = upstream("a")
    lds = str(d / "lds.json")
    p1, p2 = free_port(), free_port()
    write_atomic(lds, discovery(1, listener("l", p1)))
    admin = free_port()
    p = sharp(bootstrap(admin, {"path": lds}, [static_cluster("ca", a.port)]), drain_time=1)
    p.wait_ready(admin)
    ka = Conn(p1)
    assert ka.get() == (200, "v1", None)
    write_atomic(lds, discovery(2, listener("l", p2, header="v2")))
    switched(admin, 4)
    assert request(p2)[2] == "v2"
    assert refused(p1)  # the old address's sockets are closed at once
    assert ka.get() == (200, "v1", "close")  # its connection drains
    ka.close()
    assert stat(admin, "listener_manager.listener_modified") == 1
    assert stat(admin, "listener_manager.listener_in_place_updated") == 0
    # a new listener may take a removed one's address in the same update
    write_atomic(lds, discovery(3, listener("m", p2, header="v3")))
    wait_for(lambda: request(p2)[2] == "v3", 5, "listener m on l's address")
    assert stat(admin, "listener_manager.listener_removed") == 1
    assert stat(admin, "listener_manager.listener_added") == 2


def test_unix_socket_listener(env):
    d, upstream, sharp = env
    a = upstream("a")
    sock = tempfile.mkdtemp(prefix="sl-", dir="/tmp") + "/l.sock"
    lds = str(d / "lds.json")

    def pipe_listener(header):
        lst = listener("p", 1, header=header)
        lst["address"] = {"pipe": {"path": sock}}
        return lst

    def curl(path="/"):
        r = subprocess.run(["curl", "-s", "-i", "--unix-socket", sock, f"http://sharp{path}"], capture_output=True,
                           text=True, timeout=10 * SLOW)
        return r.stdout
    write_atomic(lds, discovery(1, pipe_listener("u1")))
    admin = free_port()
    p = sharp(bootstrap(admin, {"path": lds}, [static_cluster("ca", a.port)]))
    p.wait_ready(admin)
    assert "x-version: u1" in curl()
    ino = os.stat(sock).st_ino
    write_atomic(lds, discovery(2, pipe_listener("u2")))
    wait_for(lambda: "x-version: u2" in curl(), 5, "the new version on the pipe")
    assert os.stat(sock).st_ino == ino  # the same socket: not bound again
    write_atomic(lds, discovery(3))
    wait_for(lambda: curl() == "", 5, "the pipe closed")
    shutil.rmtree(os.path.dirname(sock), ignore_errors=True)
