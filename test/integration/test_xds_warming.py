"""Warming over gRPC xDS (state of the world and incremental, ADS), against
the test control plane on Envoy's official protos, which can hold back the
responses of a type:

- an EDS cluster from CDS is not used before its first ClusterLoadAssignment
  (or its subscription's initial_fetch_timeout): it shows in
  /config_dump's dynamic_warming_clusters and cluster_manager.warming_clusters,
  a changed one serves on its previous version meanwhile (no request fails
  under steady traffic), and the start waits for the first clusters' endpoints;
- a listener from LDS whose connection manager takes its routes from RDS
  warms (warming_state, listener_manager.total_listeners_warming, connection
  attempts refused, or the previous version serving) until its route
  configuration came or its initial_fetch_timeout passed; one whose route
  configuration is known serves at once;
- a CDS or LDS response with some invalid resources: the valid ones are
  applied, the response is NACKed naming each invalid one, and the ACKed
  version stays (Envoy's CdsApiHelper and LdsApiImpl).
Every wait is bounded; every process is stopped by PID."""
import json
import socket
import time
import urllib.error
import urllib.request

import pytest

from conftest import SLOW, admin_get, free_port, stat, wait_for
from test_xds_ads import (ADS, CDS, EDS, HCM, LDS, MODES, RDS, ROUTER, bootstrap, cla, eds_cluster, env,  # noqa: F401
                          nacks, ready_state, routes, start, wait_acked)
from test_xds_file import Traffic, get

H2 = "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions"


def hold(cp, type_url):
    cp.call("POST", "/hold", {"type_url": type_url})


def release(cp, type_url):
    cp.call("POST", "/hold", {"type_url": type_url, "hold": False})


def config(admin, kind):
    dump = json.loads(admin_get(admin, "/config_dump"))["configs"]
    return next(c for c in dump if c["@type"].endswith(kind))


def clusters(admin):
    """(warming names, active names) of CDS."""
    cd = config(admin, "ClustersConfigDump")
    return (sorted(c["cluster"]["name"] for c in cd.get("dynamic_warming_clusters", [])),
            sorted(c["cluster"]["name"] for c in cd.get("dynamic_active_clusters", [])))


def active_clusters(admin):
    cd = config(admin, "ClustersConfigDump")
    return {c["cluster"]["name"]: c for c in cd.get("dynamic_active_clusters", [])}


def listeners(admin):
    """name -> the states /config_dump shows for it."""
    ld = config(admin, "ListenersConfigDump")
    return {e["name"]: sorted(k for k in ("active_state", "warming_state", "draining_state") if k in e)
            for e in ld.get("dynamic_listeners", []) if "name" in e}


def refused(port):
    """Whether a connection attempt to 127.0.0.1:port is refused."""
    try:
        socket.create_connection(("127.0.0.1", port), timeout=2).close()
        return False
    except ConnectionRefusedError:
        return True


def status_body(port, path):
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def try_get(port, path="/"):
    try:
        return get(port, path)
    except OSError:
        return None


def eds_requested(cp, name):
    """Whether SHARP subscribed to `name`'s endpoints."""
    for e in cp.requests(EDS):
        if name in (e.get("resource_names") or []) or name in (e.get("resource_names_subscribe") or []):
            return True
    return False


def eds_sent(cp, name):
    """Whether the control plane sent `name`'s endpoints."""
    return any(e["dir"] == "out" and e["type_url"] == EDS and name in e["resource_names"] for e in cp.entries())


def warming_count(admin):
    return stat(admin, "cluster_manager.warming_clusters")


# ---- EDS cluster warming --------------------------------------------------------

@pytest.mark.parametrize("mode", MODES)
def test_new_eds_cluster_warms_until_its_endpoints_arrive(env, mode):
    cp, ups, s, listen, admin = start(env, mode, n_up=3)
    wait_acked(cp, EDS, 1)
    hold(cp, EDS)
    cp.set(EDS, [cla("c3", ups[2].port)])
    cp.set(RDS, [routes("r1", ("/c", "c3"), ("/a", "c1"), ("/", "c2"))])
    wait_acked(cp, RDS, 2)
    cp.set(CDS, [eds_cluster("c3")])
    wait_for(lambda: warming_count(admin) == 1, 10, "c3 warming")
    wait_acked(cp, CDS, 2)  # the CDS update itself is accepted
    wait_for(lambda: eds_requested(cp, "c3"), 10, "the subscription to c3's endpoints")
    assert clusters(admin) == (["c3"], ["c1", "c2"])
    assert "CDS: cluster 'c3' warming (its first ClusterLoadAssignment)" in s.output()
    # not in use before its endpoints: a route naming it finds no cluster
    # (Envoy: 503, no_cluster), and the other clusters serve on
    time.sleep(0.5)
    assert get(listen, "/c")[0] == 503
    assert stat(admin, "http.ingress.no_cluster") == 1
    assert get(listen, "/a") == (200, "u1") and get(listen, "/b") == (200, "u2")
    assert warming_count(admin) == 1
    release(cp, EDS)
    wait_for(lambda: warming_count(admin) == 0, 10, "c3 warmed")
    assert clusters(admin) == ([], ["c1", "c2", "c3"])
    assert get(listen, "/c") == (200, "u3")
    assert stat(admin, "cluster_manager.cluster_added") == 3
    assert stat(admin, "cluster.c3.update_success") == 1
    assert not nacks(cp, CDS) and not nacks(cp, EDS)


@pytest.mark.parametrize("mode", MODES)
def test_changed_eds_cluster_serves_on_its_old_version_while_the_new_one_warms(env, mode):
    """c1 changes to another EDS service name whose endpoints the server
    holds back: under steady traffic (keep-alive and new connections), the
    previous version of c1 serves until the new one has its endpoints, and
    no request fails (without warming, the new version would answer 503
    until they come)."""
    cp, ups, s, listen, admin = start(env, mode, n_up=3)
    wait_acked(cp, EDS, 1)
    traffic = Traffic(listen, [(True, "/a"), (False, "/a"), (True, "/b"), (True, "/a")], pause=0.002).start()
    try:
        time.sleep(0.3)
        hold(cp, EDS)
        cp.set(EDS, [cla("c1-v2", ups[2].port)])
        c1 = eds_cluster("c1", timeout="2s")
        c1["resource"]["eds_cluster_config"]["service_name"] = "c1-v2"
        cp.set(CDS, [c1])
        wait_for(lambda: warming_count(admin) == 1, 10, "the new c1 warming")
        assert clusters(admin) == (["c1"], ["c1", "c2"])
        wait_for(lambda: eds_requested(cp, "c1-v2"), 10, "the subscription to c1-v2")
        time.sleep(1.0)
        assert warming_count(admin) == 1
        assert {get(listen, "/a")[1] for _ in range(10)} == {"u1"}  # the previous version
        release(cp, EDS)
        wait_for(lambda: get(listen, "/a") == (200, "u3"), 10, "the new version")
        assert clusters(admin) == ([], ["c1", "c2"])
        assert active_clusters(admin)["c1"]["cluster"]["connect_timeout"] == "2s"
        time.sleep(0.3)
    finally:
        traffic.stop()
    print(f"changed EDS cluster ({mode}): {traffic.sent} requests, {traffic.failed} failed")
    assert traffic.failed == 0, traffic.errors[:5]
    assert traffic.sent > 100
    assert stat(admin, "cluster_manager.cluster_modified") == 1
    # the previous version's subscription went with it
    if mode == "GRPC":
        wait_for(lambda: sorted(cp.requests(EDS)[-1]["resource_names"]) == ["c1-v2", "c2"], 10, "EDS names")
    else:
        wait_for(lambda: any(e["resource_names_unsubscribe"] == ["c1"] for e in cp.requests(EDS)), 10,
                 "c1 unsubscribed")


@pytest.mark.parametrize("mode", MODES)
def test_pushes_of_new_eds_clusters_and_routes_under_traffic_fail_no_request(env, mode):
    """The control plane pushes in the order xDS asks for (a new EDS cluster
    and its endpoints, then the route to it once the endpoints went out)
    while clients send to the route that moves: no request fails."""
    cp, ups, s, listen, admin = start(env, mode, n_up=3)
    wait_acked(cp, EDS, 1)
    traffic = Traffic(listen, [(True, "/"), (False, "/"), (True, "/a")], pause=0.002).start()
    try:
        for i in range(1, 7):
            name = f"g{i}"
            up, up_name = ups[i % 3], f"u{i % 3 + 1}"
            cp.set(EDS, [cla(name, up.port)])
            cp.set(CDS, [eds_cluster(name)])
            wait_for(lambda: eds_sent(cp, name), 10, f"{name}'s endpoints sent")
            cp.set(RDS, [routes("r1", ("/a", "c1"), ("/", name))])
            wait_for(lambda: get(listen, "/")[1] == up_name, 10, f"the route to {name}")
            time.sleep(0.2)
    finally:
        traffic.stop()
    print(f"new EDS clusters under traffic ({mode}): {traffic.sent} requests, {traffic.failed} failed")
    assert traffic.failed == 0, traffic.errors[:5]
    assert traffic.sent > 100
    assert warming_count(admin) == 0
    assert stat(admin, "cluster_manager.cluster_added") == 8
    for t in (CDS, EDS, RDS):
        assert not nacks(cp, t)


@pytest.mark.parametrize("mode", MODES)
def test_eds_cluster_warming_ends_at_its_initial_fetch_timeout(env, mode):
    """Envoy's EdsClusterImpl: once its subscription's initial_fetch_timeout
    passes, the cluster is used with what it has (no endpoints: 503 no
    healthy upstream); its endpoints apply when they come."""
    cp, ups, s, listen, admin = start(env, mode, n_up=3)
    wait_acked(cp, EDS, 1)
    hold(cp, EDS)
    cp.set(RDS, [routes("r1", ("/c", "c3"), ("/a", "c1"), ("/", "c2"))])
    wait_acked(cp, RDS, 2)
    t0 = time.monotonic()
    cp.set(CDS, [eds_cluster("c3", source={**ADS, "initial_fetch_timeout": "1s"})])
    wait_for(lambda: warming_count(admin) == 1, 10, "c3 warming")
    assert status_body(listen, "/c") == (503, "")  # no cluster yet
    assert stat(admin, "http.ingress.no_cluster") == 1
    wait_for(lambda: warming_count(admin) == 0, 10 * SLOW, "the end of the initial fetch")
    assert time.monotonic() - t0 >= 0.9
    assert stat(admin, "cluster.c3.init_fetch_timeout") == 1
    assert clusters(admin) == ([], ["c1", "c2", "c3"])
    # in use now, without endpoints
    assert status_body(listen, "/c") == (503, "no healthy upstream")
    assert stat(admin, "http.ingress.no_cluster") == 1
    assert "initial fetch timed out for " + EDS + " (c3)" in s.output()
    cp.set(EDS, [cla("c3", ups[2].port)])
    release(cp, EDS)
    wait_for(lambda: get(listen, "/c") == (200, "u3"), 10, "c3's endpoints")


@pytest.mark.parametrize("mode", MODES)
def test_start_waits_for_the_endpoints_of_the_first_clusters(env, mode):
    """At the start the order stays Envoy's: the clusters of the first CDS
    response warm on their endpoints, and the server is INITIALIZING until
    they came."""
    mk_cp, mk_up, mk_sharp = env
    u = mk_up("u1")
    cp = mk_cp()
    cp.set(CDS, [eds_cluster("c1")])
    cp.set(EDS, [cla("c1", u.port)])
    cp.set(RDS, [routes("r1", ("/", "c1"))])
    hold(cp, EDS)
    listen, admin = free_port(), free_port()
    mk_sharp(bootstrap(listen, admin, cp.xds_port, mode))
    wait_for(lambda: ready_state(admin)[0] in (200, 503), 10 * SLOW, "the admin")
    wait_acked(cp, CDS, 1)
    wait_acked(cp, RDS, 1)
    wait_for(lambda: warming_count(admin) == 1, 10, "c1 warming")
    assert clusters(admin) == (["c1"], [])
    time.sleep(0.5)
    assert ready_state(admin) == (503, "INITIALIZING")
    release(cp, EDS)
    wait_for(lambda: ready_state(admin) == (200, "LIVE"), 10 * SLOW, "the start")
    assert clusters(admin) == ([], ["c1"])
    assert get(listen, "/") == (200, "u1")
    types = [e["type_url"] for e in cp.requests()]
    assert types.index(CDS) < types.index(EDS)


# ---- listener warming -------------------------------------------------------------

def listener(name, port, route_name, stat_prefix=None, rds_source=None):
    hcm = {"@type": HCM, "stat_prefix": stat_prefix or name,
           "rds": {"config_source": rds_source or ADS, "route_config_name": route_name},
           "http_filters": [{"name": "envoy.filters.http.router", "typed_config": {"@type": ROUTER}}]}
    return {"name": name, "resource": {
        "name": name, "address": {"socket_address": {"address": "127.0.0.1", "port_value": port}},
        "filter_chains": [{"filters": [{"name": "envoy.filters.network.http_connection_manager",
                                        "typed_config": hcm}]}]}}


def inline_listener(name, port, cluster):
    """A listener whose connection manager has its routes inline."""
    hcm = {"@type": HCM, "stat_prefix": name,
           "route_config": {"name": name, "virtual_hosts": [{"name": "all", "domains": ["*"], "routes": [
               {"match": {"prefix": "/"}, "route": {"cluster": cluster}}]}]},
           "http_filters": [{"name": "envoy.filters.http.router", "typed_config": {"@type": ROUTER}}]}
    return {"name": name, "resource": {
        "name": name, "address": {"socket_address": {"address": "127.0.0.1", "port_value": port}},
        "filter_chains": [{"filters": [{"name": "envoy.filters.network.http_connection_manager",
                                        "typed_config": hcm}]}]}}


def lds_start(env, mode, p1):
    """Clusters c1, c2 (u1, u2), routes r1 (/ -> c1), listener dyn1 on p1
    with r1, from LDS over ADS; SHARP ready and dyn1 serving."""
    mk_cp, mk_up, mk_sharp = env
    ups = [mk_up("u1"), mk_up("u2")]
    cp = mk_cp()
    cp.set(CDS, [eds_cluster("c1"), eds_cluster("c2")])
    cp.set(EDS, [cla("c1", ups[0].port), cla("c2", ups[1].port)])
    cp.set(RDS, [routes("r1", ("/", "c1"))])
    cp.set(LDS, [listener("dyn1", p1, "r1")])
    listen, admin = free_port(), free_port()
    b = bootstrap(listen, admin, cp.xds_port, mode)
    b["dynamic_resources"]["lds_config"] = ADS
    s = mk_sharp(b)
    s.wait_ready(admin, timeout=20 * SLOW)
    wait_for(lambda: try_get(p1) == (200, "u1"), 10, "dyn1")
    wait_acked(cp, LDS, 1)
    return cp, ups, s, admin


@pytest.mark.parametrize("mode", MODES)
def test_new_listener_warms_until_its_route_configuration_arrives(env, mode):
    p1, p2, p3 = free_port(), free_port(), free_port()
    cp, ups, s, admin = lds_start(env, mode, p1)
    assert stat(admin, "listener_manager.total_listeners_warming") == 0
    hold(cp, RDS)
    cp.set(RDS, [routes("r2", ("/", "c2"))])
    cp.set(LDS, [listener("dyn2", p2, "r2")])
    wait_for(lambda: stat(admin, "listener_manager.total_listeners_warming") == 1, 10, "dyn2 warming")
    wait_acked(cp, LDS, 2)  # the LDS update is accepted
    states = listeners(admin)
    assert states["dyn2"] == ["warming_state"] and states["dyn1"] == ["active_state"]
    ld = config(admin, "ListenersConfigDump")
    dyn2 = next(e for e in ld["dynamic_listeners"] if e.get("name") == "dyn2")
    assert dyn2["warming_state"]["version_info"] == "2"
    assert dyn2["warming_state"]["listener"]["name"] == "dyn2"
    # bound, but no connection is accepted before its routes came
    assert refused(p2)
    time.sleep(0.5)
    assert refused(p2) and stat(admin, "listener_manager.total_listeners_warming") == 1
    assert get(p1, "/") == (200, "u1")
    release(cp, RDS)
    wait_for(lambda: try_get(p2) == (200, "u2"), 10, "dyn2 warmed")
    assert stat(admin, "listener_manager.total_listeners_warming") == 0
    assert listeners(admin)["dyn2"] == ["active_state"]
    assert stat(admin, "listener_manager.listener_added") == 3  # l0 (static), dyn1, dyn2
    # a warming listener that the next update removes goes without ever serving
    hold(cp, RDS)
    cp.set(RDS, [routes("r3", ("/", "c1"))])
    cp.set(LDS, [listener("dyn3", p3, "r3")])
    wait_for(lambda: stat(admin, "listener_manager.total_listeners_warming") == 1, 10, "dyn3 warming")
    assert refused(p3)
    cp.set(LDS, [], remove=["dyn3"])
    wait_for(lambda: stat(admin, "listener_manager.total_listeners_warming") == 0, 10, "dyn3 removed")
    assert "dyn3" not in listeners(admin)
    assert stat(admin, "listener_manager.listener_removed") == 1
    release(cp, RDS)
    time.sleep(0.3)
    assert refused(p3)
    assert get(p2, "/") == (200, "u2")
    assert not nacks(cp, LDS)


@pytest.mark.parametrize("mode", MODES)
def test_listener_update_warms_while_its_previous_version_serves(env, mode):
    """dyn1 moves to a route configuration the server holds back: under
    steady traffic its previous version serves until the new one is warm,
    then the new routes apply, and no request fails."""
    p1 = free_port()
    cp, ups, s, admin = lds_start(env, mode, p1)
    traffic = Traffic(p1, [(True, "/"), (False, "/"), (True, "/")], pause=0.002).start()
    try:
        time.sleep(0.3)
        hold(cp, RDS)
        cp.set(RDS, [routes("r2", ("/", "c2"))])
        cp.set(LDS, [listener("dyn1", p1, "r2")])
        wait_for(lambda: stat(admin, "listener_manager.total_listeners_warming") == 1, 10, "dyn1's new version")
        assert listeners(admin)["dyn1"] == ["active_state", "warming_state"]
        time.sleep(1.0)
        assert {get(p1, "/")[1] for _ in range(10)} == {"u1"}  # the previous version
        release(cp, RDS)
        wait_for(lambda: get(p1, "/") == (200, "u2"), 10, "the new version")
        assert stat(admin, "listener_manager.total_listeners_warming") == 0
        time.sleep(0.3)
    finally:
        traffic.stop()
    print(f"listener update under traffic ({mode}): {traffic.sent} requests, {traffic.failed} failed")
    assert traffic.failed == 0, traffic.errors[:5]
    assert traffic.sent > 100
    assert stat(admin, "listener_manager.listener_modified") == 1
    wait_for(lambda: listeners(admin)["dyn1"] == ["active_state"], 10 * SLOW, "the old version drained")


@pytest.mark.parametrize("mode", MODES)
def test_listener_whose_routes_are_known_serves_at_once(env, mode):
    """r1 is known: a listener naming it serves at once, with the same
    config source (the same subscription) or another one (a subscription of
    its own, which finds r1 on the stream)."""
    p1, p2, p3 = free_port(), free_port(), free_port()
    cp, ups, s, admin = lds_start(env, mode, p1)
    hold(cp, RDS)  # nothing of RDS may come: r1 is known already
    cp.set(LDS, [listener("dyn1", p1, "r1", stat_prefix="dyn1b"), listener("dyn2", p2, "r1"),
                 listener("dyn3", p3, "r1", rds_source={**ADS, "initial_fetch_timeout": "30s"})])
    wait_acked(cp, LDS, 2)
    assert stat(admin, "listener_manager.total_listeners_warming") == 0
    assert get(p2, "/") == (200, "u1")
    assert get(p3, "/") == (200, "u1")
    assert get(p1, "/") == (200, "u1")
    wait_for(lambda: (stat(admin, "http.dyn1b.downstream_rq_total") or 0) >= 1, 10, "the new version of dyn1")
    states = listeners(admin)
    assert states["dyn1"][0] == "active_state" and states["dyn2"] == states["dyn3"] == ["active_state"]
    ld = config(admin, "ListenersConfigDump")
    assert ld["version_info"] == "2"


@pytest.mark.parametrize("mode", MODES)
def test_listener_warming_ends_at_the_rds_initial_fetch_timeout(env, mode):
    """Envoy: the listener's init target is the RDS subscription's; after
    its initial_fetch_timeout the listener serves without routes (404).
    The server has no r9: state of the world, its response does not name
    it; incremental, it says r9 does not exist, which Envoy's RDS ignores
    (the initial fetch goes on)."""
    p1, p2 = free_port(), free_port()
    cp, ups, s, admin = lds_start(env, mode, p1)
    t0 = time.monotonic()
    cp.set(LDS, [listener("dyn2", p2, "r9", rds_source={**ADS, "initial_fetch_timeout": "1s"})])
    wait_for(lambda: stat(admin, "listener_manager.total_listeners_warming") == 1, 10, "dyn2 warming")
    assert refused(p2)
    wait_for(lambda: try_get(p2) is not None, 10 * SLOW, "dyn2 after the timeout")
    assert time.monotonic() - t0 >= 0.9
    assert get(p2, "/")[0] == 404
    assert stat(admin, "http.dyn2.rds.r9.init_fetch_timeout") == 1
    assert stat(admin, "listener_manager.total_listeners_warming") == 0
    if mode == "DELTA_GRPC":
        sent = [e for e in cp.entries() if e["dir"] == "out" and e["type_url"] == RDS]
        assert any(e["removed_resources"] == ["r9"] for e in sent), sent
    cp.set(RDS, [routes("r9", ("/", "c2"))])
    wait_for(lambda: get(p2, "/") == (200, "u2"), 10, "r9 when it came")


# ---- CDS and LDS responses with invalid resources ---------------------------------

def alpn_without_tls(name):
    """A cluster SHARP (and Envoy) cannot build: ALPN protocol selection
    with a plaintext transport socket."""
    c = eds_cluster(name)
    c["resource"]["typed_extension_protocol_options"] = {"envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
        "@type": H2, "auto_config": {}}}
    return c


@pytest.mark.parametrize("mode", MODES)
def test_cds_response_with_invalid_clusters_applies_the_valid_ones(env, mode):
    cp, ups, s, listen, admin = start(env, mode, n_up=3)
    wait_acked(cp, CDS, 1)
    wait_acked(cp, EDS, 1)
    cp.set(EDS, [cla("c3", ups[2].port), cla("c5", ups[2].port)])
    cp.set(RDS, [routes("r1", ("/a", "c1"), ("/c", "c3"), ("/", "c2"))])
    wait_acked(cp, RDS, 2)
    bad_c2 = eds_cluster("c2", timeout="3s")
    del bad_c2["resource"]["eds_cluster_config"]
    cp.set(CDS, [eds_cluster("c1", timeout="2s"), bad_c2, eds_cluster("c3"), alpn_without_tls("c4")], replace=True)
    wait_for(lambda: nacks(cp, CDS), 10, "the NACK")
    nack = nacks(cp, CDS)[-1]
    assert nack["error_detail"]["code"] == 13
    msg = nack["error_detail"]["message"]
    # as Envoy's CdsApiImpl: "Error adding/updating cluster(s) name: why, name: why"
    assert msg.startswith("Error adding/updating cluster(s) c2: "), msg
    assert "eds_cluster_config" in msg.split(", c4: ")[0], msg
    assert ", c4: " in msg and "ALPN configured for cluster c4 which has a non-ALPN transport socket" in msg, msg
    assert "c1:" not in msg and "c3:" not in msg, msg
    if mode == "GRPC":
        assert nack["version_info"] == "1"  # the version ACKed before stays
    assert stat(admin, "cluster_manager.cds.update_rejected") == 1
    assert stat(admin, "cluster_manager.cds.update_success") == 1
    # the valid ones are applied: c1 modified (it keeps its endpoints), c3
    # added (once its endpoints came); c2 keeps its previous version, c4 is not there
    wait_for(lambda: clusters(admin) == ([], ["c1", "c2", "c3"]), 10, "the valid clusters")
    dyn = active_clusters(admin)
    assert dyn["c1"]["version_info"] == "2" and dyn["c1"]["cluster"]["connect_timeout"] == "2s"
    assert dyn["c3"]["version_info"] == "2"
    assert dyn["c2"]["version_info"] == "1" and dyn["c2"]["cluster"]["connect_timeout"] == "1s"
    assert dyn["c2"]["error_state"]["version_info"] == "2"
    assert "eds_cluster_config" in dyn["c2"]["error_state"]["details"]
    assert "error_state" not in dyn["c1"] and "error_state" not in dyn["c3"]
    # Envoy's CDS version (system_version_info_): that of an update that applied something
    assert config(admin, "ClustersConfigDump")["version_info"] == "2"
    assert stat(admin, "cluster_manager.cluster_added") == 3
    assert stat(admin, "cluster_manager.cluster_modified") == 1
    assert get(listen, "/a") == (200, "u1")
    assert get(listen, "/b") == (200, "u2")
    assert get(listen, "/c") == (200, "u3")
    # a good push: ACKed. Incremental: only what changed is sent (c2, c5,
    # c4's removal); what the NACKed response applied stays
    cp.set(CDS, [eds_cluster("c1", timeout="2s"), eds_cluster("c2"), eds_cluster("c3"), eds_cluster("c5")],
           replace=True)
    wait_acked(cp, CDS, 3)
    if mode == "DELTA_GRPC":
        sent = [e for e in cp.entries() if e["dir"] == "out" and e["type_url"] == CDS][-1]
        assert sorted(sent["resource_names"]) == ["c2", "c5"] and sent["removed_resources"] == ["c4"]
    wait_for(lambda: clusters(admin) == ([], ["c1", "c2", "c3", "c5"]), 10, "the good push")
    dyn = active_clusters(admin)
    assert dyn["c1"]["cluster"]["connect_timeout"] == "2s" and dyn["c1"]["version_info"] == "2"
    assert all("error_state" not in c for c in dyn.values())
    assert get(listen, "/c") == (200, "u3")
    assert len(nacks(cp, CDS)) == 1


@pytest.mark.parametrize("mode", MODES)
def test_lds_response_with_invalid_listeners_applies_the_valid_ones(env, mode):
    p1, p2, p3, p4 = free_port(), free_port(), free_port(), free_port()
    cp, ups, s, admin = lds_start(env, mode, p1)
    # dyn1 changes (inline routes to c2), dyn2 names a cluster that does not
    # exist, dyn3 is new and valid, dyn4 takes dyn1's address
    cp.set(LDS, [inline_listener("dyn1", p1, "c2"), inline_listener("dyn2", p2, "nope"),
                 inline_listener("dyn3", p3, "c1"), inline_listener("dyn4", p1, "c1")], replace=True)
    wait_for(lambda: nacks(cp, LDS), 10, "the NACK")
    nack = nacks(cp, LDS)[-1]
    msg = nack["error_detail"]["message"]
    assert msg.startswith("Error adding/updating listener(s) dyn2: "), msg
    assert "unknown cluster 'nope'" in msg, msg
    assert "dyn4: error adding listener: 'dyn4' has duplicate address" in msg, msg
    assert "dyn1:" not in msg and "dyn3:" not in msg, msg
    if mode == "GRPC":
        assert nack["version_info"] == "1"
    assert stat(admin, "listener_manager.lds.update_rejected") == 1
    wait_for(lambda: try_get(p3) == (200, "u1"), 10, "dyn3")
    wait_for(lambda: get(p1, "/") == (200, "u2"), 10, "dyn1's new version")
    assert refused(p2)
    ld = config(admin, "ListenersConfigDump")
    assert ld["version_info"] == "2"  # LdsApiImpl: an update that applied something
    by_name = {e["name"]: e for e in ld["dynamic_listeners"] if "name" in e}
    assert "active_state" not in by_name["dyn2"] and "unknown cluster" in by_name["dyn2"]["error_state"]["details"]
    assert by_name["dyn1"]["active_state"]["version_info"] == "2"
    # a good push: ACKed; incremental sends only what changed, and what the
    # NACKed response applied stays
    cp.set(LDS, [inline_listener("dyn1", p1, "c2"), inline_listener("dyn3", p3, "c1"),
                 inline_listener("dyn4", p4, "c1")], replace=True)
    wait_acked(cp, LDS, 3)
    if mode == "DELTA_GRPC":
        sent = [e for e in cp.entries() if e["dir"] == "out" and e["type_url"] == LDS][-1]
        assert sent["resource_names"] == ["dyn4"] and sent["removed_resources"] == ["dyn2"]
    wait_for(lambda: try_get(p4) == (200, "u1"), 10, "dyn4")
    assert get(p1, "/") == (200, "u2") and get(p3, "/") == (200, "u1")
    assert sorted(listeners(admin)) == ["dyn1", "dyn3", "dyn4"]
    assert len(nacks(cp, LDS)) == 1


# ---- resources using what SHARP does not implement ---------------------------------

@pytest.mark.parametrize("mode", MODES)
def test_a_cluster_using_an_unimplemented_field_is_refused_alone(env, mode):
    """A cluster with a field SHARP refuses (upstream_bind_config) is refused
    as a cluster Envoy cannot build: the rest of the response applies, the
    refused one keeps its previous version, a new refused one is not added,
    and the NACK names them. A rule Envoy validates (a negative timeout)
    still refuses the whole response."""
    cp, ups, s, listen, admin = start(env, mode, n_up=3)
    wait_acked(cp, CDS, 1)
    wait_acked(cp, EDS, 1)
    cp.set(EDS, [cla("c3", ups[2].port)])
    cp.set(RDS, [routes("r1", ("/a", "c1"), ("/c", "c3"), ("/", "c2"))])
    wait_acked(cp, RDS, 2)
    bind = {"source_address": {"address": "127.0.0.1", "port_value": 0}}
    c2 = eds_cluster("c2", timeout="3s")
    c2["resource"]["upstream_bind_config"] = bind
    c4 = eds_cluster("c4")
    c4["resource"]["upstream_bind_config"] = bind
    cp.set(CDS, [eds_cluster("c1", timeout="2s"), c2, eds_cluster("c3"), c4], replace=True)
    wait_for(lambda: nacks(cp, CDS), 10, "the NACK")
    msg = nacks(cp, CDS)[-1]["error_detail"]["message"]
    assert msg.startswith("Error adding/updating cluster(s) c2: upstream_bind_config"), msg
    assert ", c4: upstream_bind_config" in msg and "is not supported by SHARP" in msg, msg
    assert "c1:" not in msg and "c3:" not in msg, msg
    if mode == "GRPC":
        assert nacks(cp, CDS)[-1]["version_info"] == "1"
    assert stat(admin, "cluster_manager.cds.update_rejected") == 1
    assert stat(admin, "cluster_manager.cds.update_success") == 1
    wait_for(lambda: clusters(admin) == ([], ["c1", "c2", "c3"]), 10, "the valid clusters")
    dyn = active_clusters(admin)
    assert dyn["c1"]["cluster"]["connect_timeout"] == "2s"
    assert dyn["c2"]["cluster"]["connect_timeout"] == "1s" and "upstream_bind_config" not in dyn["c2"]["cluster"]
    assert "upstream_bind_config" in dyn["c2"]["error_state"]["details"]
    assert "refused, the rest of version" in s.output()
    assert get(listen, "/a") == (200, "u1")
    assert get(listen, "/b") == (200, "u2")
    assert get(listen, "/c") == (200, "u3")
    # the same refused cluster again, with another valid change: c2 still
    # keeps its version (the mux kept it), c1 changes (incremental: the
    # server sends c1 alone, which is ACKed)
    cp.set(CDS, [eds_cluster("c1", timeout="4s"), c2, eds_cluster("c3")], replace=True)
    if mode == "GRPC":
        wait_for(lambda: len(nacks(cp, CDS)) == 2, 10, "the second NACK")
    wait_for(lambda: active_clusters(admin)["c1"]["cluster"]["connect_timeout"] == "4s", 10, "c1 changed")
    assert active_clusters(admin)["c2"]["cluster"]["connect_timeout"] == "1s"
    assert get(listen, "/b") == (200, "u2")
    # a response breaking one of Envoy's validation rules applies nothing
    bad = eds_cluster("c3", timeout="-1s")
    before = len(nacks(cp, CDS))
    cp.set(CDS, [eds_cluster("c1", timeout="5s"), eds_cluster("c2"), bad], replace=True)
    wait_for(lambda: len(nacks(cp, CDS)) == before + 1, 10, "the NACK of the invalid response")
    assert "c3: connect_timeout" in nacks(cp, CDS)[-1]["error_detail"]["message"]
    assert active_clusters(admin)["c1"]["cluster"]["connect_timeout"] == "4s"
    # and a good push: ACKed, everything applies (c1 changed again: an
    # incremental server sends what changed since its last response)
    cp.set(CDS, [eds_cluster("c1", timeout="6s"), eds_cluster("c2"), eds_cluster("c3")], replace=True)
    wait_acked(cp, CDS, 5)
    wait_for(lambda: active_clusters(admin)["c1"]["cluster"]["connect_timeout"] == "6s", 10, "the good push")
    assert all("error_state" not in c for c in active_clusters(admin).values())
    assert get(listen, "/b") == (200, "u2")


@pytest.mark.parametrize("mode", MODES)
def test_a_listener_using_an_unimplemented_field_is_refused_alone(env, mode):
    p1, p2, p3 = free_port(), free_port(), free_port()
    cp, ups, s, admin = lds_start(env, mode, p1)
    fb = inline_listener("dyn2", p2, "c1")
    fb["resource"]["transparent"] = True
    cp.set(LDS, [inline_listener("dyn1", p1, "c2"), fb, inline_listener("dyn3", p3, "c1")], replace=True)
    wait_for(lambda: nacks(cp, LDS), 10, "the NACK")
    msg = nacks(cp, LDS)[-1]["error_detail"]["message"]
    assert msg.startswith("Error adding/updating listener(s) dyn2: transparent"), msg
    assert "dyn1:" not in msg and "dyn3:" not in msg, msg
    assert stat(admin, "listener_manager.lds.update_rejected") == 1
    wait_for(lambda: try_get(p3) == (200, "u1"), 10, "dyn3")
    wait_for(lambda: get(p1, "/") == (200, "u2"), 10, "dyn1's new version")
    assert refused(p2)
    ld = config(admin, "ListenersConfigDump")
    by_name = {e["name"]: e for e in ld["dynamic_listeners"] if "name" in e}
    assert "active_state" not in by_name["dyn2"] and "transparent" in by_name["dyn2"]["error_state"]["details"]
    assert by_name["dyn2"]["error_state"]["failed_configuration"]["transparent"] is True
    # dyn2 without the field: ACKed and serving
    cp.set(LDS, [inline_listener("dyn1", p1, "c2"), inline_listener("dyn2", p2, "c1"),
                 inline_listener("dyn3", p3, "c1")], replace=True)
    wait_for(lambda: try_get(p2) == (200, "u1"), 10, "dyn2")
    assert len(nacks(cp, LDS)) == 1
