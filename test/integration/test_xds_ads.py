"""gRPC xDS (ADS and a ConfigSource's own api_config_source stream), state of
the world and incremental, against the test control plane on Envoy's
official protos (test/xds/control_plane.js): clusters, endpoints and routes
pushed and used by traffic; NACKs (version, nonce, error_detail naming every
invalid resource) and recovery; duplicate resources; removals; the control
plane going away and coming back while a client sends; the initial fetch
timeout; updates under load with no failed request; the node SHARP sends;
Envoy's refusals of bad ADS configs. Every wait is bounded; every process is
stopped by PID."""
import json
import os
import time
import urllib.error
import urllib.request

import pytest

from conftest import SLOW, TLS_HOST, Sharp, Upstream, admin_get, dead_port, free_port, stat, validate_config, wait_for
from test_xds_control_plane import ControlPlane, Node
from test_xds_file import Traffic, get

CDS = "type.googleapis.com/envoy.config.cluster.v3.Cluster"
EDS = "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment"
RDS = "type.googleapis.com/envoy.config.route.v3.RouteConfiguration"
LDS = "type.googleapis.com/envoy.config.listener.v3.Listener"
HCM = "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager"
ROUTER = "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"
H2 = "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions"
MODES = ["GRPC", "DELTA_GRPC"]
ADS = {"ads": {}, "resource_api_version": "V3"}


class CP(ControlPlane):
    """The test control plane, maybe with TLS on its xDS port."""

    def __init__(self, extra=()):
        self.xds_port, self.control_port = free_port(), free_port()
        Node.__init__(self, ["control_plane.js", str(self.xds_port), str(self.control_port), *extra])
        self.next("ready")

    def entries(self):
        return self.call("GET", "/log")["entries"]

    def requests(self, type_url=None):
        return [e for e in self.entries() if e["dir"] == "in" and (type_url is None or e["type_url"] == type_url)]


@pytest.fixture
def env(procs):
    """(control plane factory, upstream factory, sharp factory)."""
    nodes = []

    def cp(extra=()):
        c = CP(extra)
        nodes.append(c)
        return c

    def upstream(name):
        u = Upstream(name)
        procs.append(u)
        return u

    def sharp(boot, concurrency=2):
        s = Sharp(json.dumps(boot), concurrency=concurrency)
        procs.append(s)
        return s
    yield cp, upstream, sharp
    for n in nodes:
        n.stop()


# ---- resources ----------------------------------------------------------------

def ep(port):
    return {"endpoint": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": port}}}}


def eds_cluster(name, timeout="1s", source=None):
    return {"name": name, "resource": {"name": name, "type": "EDS", "connect_timeout": timeout,
                                        "eds_cluster_config": {"eds_config": source or ADS}}}


def cla(name, *ports):
    return {"name": name, "resource": {"cluster_name": name, "endpoints": [{"lb_endpoints": [ep(p) for p in ports]}]}}


def routes(name, *pairs):
    """A RouteConfiguration: (prefix, cluster) pairs, first match wins."""
    return {"name": name, "resource": {"name": name, "virtual_hosts": [{"name": "all", "domains": ["*"], "routes": [
        {"match": {"prefix": p}, "route": {"cluster": c}} for p, c in pairs]}]}}


def ads_config(mode, cluster="xds", **extra):
    return {"api_type": mode, "transport_api_version": "V3",
            "grpc_services": [{"envoy_grpc": {"cluster_name": cluster}}], **extra}


def xds_cluster(port, name="xds", tls=None):
    c = {"name": name, "type": "STATIC", "connect_timeout": "1s",
         "typed_extension_protocol_options": {"envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
             "@type": H2, "explicit_http_config": {"http2_protocol_options": {}}}},
         "load_assignment": {"cluster_name": name, "endpoints": [{"lb_endpoints": [ep(port)]}]}}
    if tls:
        c["transport_socket"] = tls
    return c


def bootstrap(listen, admin, xds_port, mode="GRPC", ads=True, cds=ADS, rds=ADS, route_name="r1", node=None,
              ads_extra=None, xds_tls=None, clusters=()):
    dyn = {}
    if ads:
        dyn["ads_config"] = ads_config(mode, **(ads_extra or {}))
    if cds is not None:
        dyn["cds_config"] = cds
    hcm = {"@type": HCM, "stat_prefix": "ingress",
           "rds": {"config_source": rds, "route_config_name": route_name},
           "http_filters": [{"name": "envoy.filters.http.router", "typed_config": {"@type": ROUTER}}]}
    return {
        "node": node if node is not None else {"id": "sharp-1", "cluster": "edge"},
        "admin": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": admin}}},
        "dynamic_resources": dyn,
        "static_resources": {
            "listeners": [{"name": "l0", "address": {"socket_address": {"address": "127.0.0.1", "port_value": listen}},
                           "filter_chains": [{"filters": [{"name": "envoy.filters.network.http_connection_manager",
                                                           "typed_config": hcm}]}]}],
            "clusters": [xds_cluster(xds_port, tls=xds_tls), *clusters]}}


def ready_state(admin):
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{admin}/ready", timeout=2) as r:
            return r.status, r.read().decode().strip()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode().strip()
    except OSError:  # the admin is not listening yet
        return 0, ""


def acked(cp, type_url, version):
    """Whether SHARP has ACKed `version` of the type (state of the world: a
    request carrying it; incremental: a request carrying the nonce of the
    response of that version, without error_detail)."""
    es = cp.entries()
    nonces = {e["nonce"] for e in es if e["dir"] == "out" and e["type_url"] == type_url and
              (e.get("version_info") == version or e.get("system_version_info") == version)}
    for e in es:
        if e["dir"] != "in" or e["type_url"] != type_url or e["error_detail"]:
            continue
        if e.get("version_info") == version or (e["response_nonce"] in nonces and "version_info" not in e):
            return True
    return False


def wait_acked(cp, type_url, version, what=None):
    wait_for(lambda: acked(cp, type_url, str(version)), 10, what or f"the ACK of {type_url} version {version}")


def nacks(cp, type_url):
    return [e for e in cp.requests(type_url) if e["error_detail"]]


def start(env, mode, n_up=2, **kw):
    """A control plane with clusters c1, c2 (EDS, on upstreams u1, u2) and
    routes /a -> c1, / -> c2; SHARP on it, ready."""
    mk_cp, mk_up, mk_sharp = env
    ups = [mk_up(f"u{i + 1}") for i in range(n_up)]
    cp = mk_cp()
    cp.set(CDS, [eds_cluster("c1"), eds_cluster("c2")])
    cp.set(EDS, [cla("c1", ups[0].port), cla("c2", ups[1].port)])
    cp.set(RDS, [routes("r1", ("/a", "c1"), ("/", "c2"))])
    listen, admin = free_port(), free_port()
    s = mk_sharp(bootstrap(listen, admin, cp.xds_port, mode, **kw))
    s.wait_ready(admin, timeout=20 * SLOW)
    return cp, ups, s, listen, admin


def one_cluster(env, cp_extra=()):
    """A control plane serving cluster c1 (EDS, on upstream u1) and routes
    r1 sending everything to it: (control plane, upstream)."""
    mk_cp, mk_up, _ = env
    u = mk_up("u1")
    cp = mk_cp(cp_extra)
    cp.set(CDS, [eds_cluster("c1")])
    cp.set(EDS, [cla("c1", u.port)])
    cp.set(RDS, [routes("r1", ("/", "c1"))])
    return cp, u


# ---- tests --------------------------------------------------------------------

@pytest.mark.parametrize("mode", MODES)
def test_clusters_endpoints_and_routes_from_ads_carry_traffic(env, mode):
    node = {"id": "sharp-1", "cluster": "edge", "metadata": {"team": "sre"},
            "locality": {"region": "eu", "zone": "eu-1a"}, "client_features": ["envoy.lb.does_not_support_overprovisioning"]}
    cp, ups, s, listen, admin = start(env, mode, n_up=3, node=node)
    assert get(listen, "/a") == (200, "u1")
    assert get(listen, "/b") == (200, "u2")
    # one stream; the first request of each type in Envoy's order, CDS first
    es = cp.entries()
    opens = [e for e in es if e["dir"] == "open"]
    assert len(opens) == 1
    method = "DeltaAggregatedResources" if mode == "DELTA_GRPC" else "StreamAggregatedResources"
    assert opens[0]["method"].endswith("AggregatedDiscoveryService/" + method)
    reqs = [e for e in es if e["dir"] == "in"]
    assert reqs[0]["type_url"] == CDS
    # the node: the bootstrap's, with SHARP's user agent (Envoy sends "envoy" and its build)
    n = reqs[0]["node_full"]
    assert n["id"] == "sharp-1" and n["cluster"] == "edge"
    assert n["user_agent_name"] == "sharp"
    v = n["user_agent_build_version"]["version"]
    assert (v["major_number"], v["minor_number"]) == (0, 1)
    meta = n["user_agent_build_version"]["metadata"]["fields"]
    assert meta["build.type"]["stringValue"] in ("RELEASE", "DEBUG")
    assert meta["ssl.version"]["stringValue"].startswith("OpenSSL")
    assert n["metadata"]["fields"]["team"]["stringValue"] == "sre"
    assert n["locality"]["zone"] == "eu-1a"
    assert n["client_features"] == ["envoy.lb.does_not_support_overprovisioning"]
    # without set_node_on_first_message_only every request names the node
    assert all(e["node"] == "sharp-1" for e in reqs)
    # EDS and RDS name what the config needs; every response is ACKed
    eds = [e for e in reqs if e["type_url"] == EDS]
    if mode == "GRPC":
        assert sorted(eds[0]["resource_names"]) == ["c1", "c2"]
    else:
        assert sorted(eds[0]["resource_names_subscribe"]) == ["c1", "c2"]
    for t in (CDS, EDS, RDS):
        wait_acked(cp, t, 1)
    assert not nacks(cp, CDS) and not nacks(cp, EDS) and not nacks(cp, RDS)
    assert stat(admin, "control_plane.connected_state") == 1
    assert stat(admin, "cluster_manager.cds.update_success") == 1
    assert stat(admin, "http.ingress.rds.r1.update_success") == 1
    assert stat(admin, "cluster.c1.update_success") >= 1
    # an endpoint change moves the traffic
    cp.set(EDS, [cla("c1", ups[2].port)])
    wait_for(lambda: get(listen, "/a") == (200, "u3"), 10, "the new endpoint")
    # a route change too
    cp.set(RDS, [routes("r1", ("/", "c1"))])
    wait_for(lambda: get(listen, "/b") == (200, "u3"), 10, "the new route")
    # /config_dump: the dynamic resources with the versions that brought them
    dump = json.loads(admin_get(admin, "/config_dump"))["configs"]
    clusters = next(d for d in dump if d["@type"].endswith("ClustersConfigDump"))
    assert clusters["version_info"] == "1"
    dyn = {c["cluster"]["name"]: c for c in clusters["dynamic_active_clusters"]}
    assert sorted(dyn) == ["c1", "c2"] and dyn["c1"]["version_info"] == "1"
    rts = next(d for d in dump if d["@type"].endswith("RoutesConfigDump"))
    assert rts["dynamic_route_configs"][0]["version_info"] == "2"
    # the log says what the push changed, as Envoy's
    assert "cds: add 2 cluster(s), remove 0 cluster(s)" in s.output()
    assert "rds: loading new configuration: config_name=r1" in s.output()


@pytest.mark.parametrize("mode", MODES)
def test_invalid_resources_are_nacked_by_name_and_a_good_push_recovers(env, mode):
    cp, ups, s, listen, admin = start(env, mode)
    wait_acked(cp, CDS, 1)
    cds_out = [e for e in cp.entries() if e["dir"] == "out" and e["type_url"] == CDS]
    # two invalid clusters (one of them an update of c1) and a good one:
    # nothing of it is applied, and the NACK names both
    bad1 = eds_cluster("c1", timeout="-1s")
    bad2 = eds_cluster("c3")
    bad2["resource"]["upstream_bind_config"] = {"source_address": {"address": "127.0.0.1", "port_value": 0}}
    cp.set(CDS, [bad1, bad2, eds_cluster("c4")])
    wait_for(lambda: nacks(cp, CDS), 10, "the NACK")
    nack = nacks(cp, CDS)[-1]
    rejected = [e for e in cp.entries() if e["dir"] == "out" and e["type_url"] == CDS][-1]
    assert rejected["nonce"] != cds_out[-1]["nonce"]
    assert nack["response_nonce"] == rejected["nonce"]
    assert nack["error_detail"]["code"] == 13  # google.rpc.Code INTERNAL, as Envoy
    msg = nack["error_detail"]["message"]
    assert msg.startswith("Error adding/updating cluster(s) c1: connect_timeout"), msg
    assert ", c3: upstream_bind_config" in msg, msg
    if mode == "GRPC":
        assert nack["version_info"] == "1"  # the version still applied
    assert stat(admin, "cluster_manager.cds.update_rejected") == 1
    assert stat(admin, "cluster_manager.cds.update_success") == 1
    # the previous configuration stays and serves
    assert get(listen, "/a") == (200, "u1")
    dump = json.loads(admin_get(admin, "/config_dump?resource=dynamic_active_clusters"))["configs"]
    names = sorted(c["cluster"]["name"] for c in dump)
    assert names == ["c1", "c2"]
    c1 = next(c for c in dump if c["cluster"]["name"] == "c1")
    assert c1["version_info"] == "1"
    assert "connect_timeout" in c1["error_state"]["details"] and c1["error_state"]["version_info"] == "2"
    assert "last_update_attempt" in c1["error_state"]
    assert "cds update (version '2', nonce '%s') rejected" % rejected["nonce"] in s.output()
    # a good push: ACKed with its version, the error state gone (c3 is
    # active once its endpoints came: a new EDS cluster warms until then)
    cp.set(EDS, [cla("c3", ups[1].port)])
    cp.set(CDS, [eds_cluster("c1", timeout="2s"), eds_cluster("c3")], replace=True)
    wait_acked(cp, CDS, 3)
    assert get(listen, "/a") == (200, "u1")  # the replaced c1 kept its endpoints

    def active():
        return json.loads(admin_get(admin, "/config_dump?resource=dynamic_active_clusters"))["configs"]
    wait_for(lambda: sorted(c["cluster"]["name"] for c in active()) == ["c1", "c3"], 10, "c3 warmed")
    assert all("error_state" not in c for c in active())
    # an endpoint the support table refuses, in one cluster's endpoints: NACKed by name
    bad_cla = cla("c1", ups[0].port)
    bad_cla["resource"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]["hostname"] = "x"
    bad_cla["resource"]["endpoints"][0]["proximity"] = 1
    cp.set(EDS, [bad_cla])
    wait_for(lambda: nacks(cp, EDS), 10, "the EDS NACK")
    assert nacks(cp, EDS)[-1]["error_detail"]["message"].startswith("ClusterLoadAssignment 'c1': ")
    assert get(listen, "/a") == (200, "u1")


@pytest.mark.parametrize("mode", MODES)
def test_a_resource_named_twice_is_nacked(env, mode):
    cp, ups, s, listen, admin = start(env, mode)
    wait_acked(cp, CDS, 1)
    cp.call("POST", "/push", {"type_url": CDS, "bump": True, "duplicate": "c1"})
    wait_for(lambda: nacks(cp, CDS), 10, "the NACK")
    msg = nacks(cp, CDS)[-1]["error_detail"]["message"]
    if mode == "GRPC":
        assert "duplicate cluster c1 found" in msg, msg
    else:
        assert "duplicate name c1 found among added/updated resources" in msg, msg
    assert stat(admin, "cluster_manager.cds.update_rejected") == 1
    assert get(listen, "/a") == (200, "u1")
    # a new stream after the NACK subscribes everything again from what
    # SHARP applied: state of the world takes the (good) state the server
    # has now; incremental has every resource's version already
    before = len(cp.entries())
    cp.call("POST", "/drop")
    wait_for(lambda: any(e["dir"] == "in" and e["type_url"] == CDS for e in cp.entries()[before:]), 15,
             "the new stream")
    first = next(e for e in cp.entries()[before:] if e["dir"] == "in" and e["type_url"] == CDS)
    assert not first["error_detail"] and first["response_nonce"] == ""
    if mode == "GRPC":
        assert first["version_info"] == "1"
        wait_acked(cp, CDS, 2, "the ACK of the state after the NACK")
        assert stat(admin, "cluster_manager.cds.update_success") == 2
    else:
        assert first["initial_resource_versions"] == {"c1": "1", "c2": "1"}
    assert get(listen, "/a") == (200, "u1")


@pytest.mark.parametrize("mode", MODES)
def test_malformed_resources_are_nacked(env, mode):
    """Bytes that are no Cluster, and a Cluster with a field SHARP's protos
    do not have (which SHARP would otherwise ignore): NACKed, naming each."""
    import base64
    cp, ups, s, listen, admin = start(env, mode)
    wait_acked(cp, CDS, 1)
    garbage = base64.b64encode(b"\xff\xff\xff\xff").decode()
    # Cluster{name: "c9"} and field 999 (a varint) that no Cluster has
    unknown = base64.b64encode(b"\x0a\x02c9" + b"\xb8\x3e\x01").decode()
    cp.set(CDS, [{"name": "junk", "base64": garbage}, {"name": "c9", "base64": unknown}])
    wait_for(lambda: nacks(cp, CDS), 10, "the NACK")
    msg = nacks(cp, CDS)[-1]["error_detail"]["message"]
    assert "cannot decode the resource as envoy.config.cluster.v3.Cluster" in msg, msg
    assert "Error adding/updating cluster(s) c9: field number 999 is not a field SHARP knows" in msg, msg
    assert get(listen, "/a") == (200, "u1")
    assert stat(admin, "cluster_manager.cds.update_rejected") == 1


def test_a_long_nack_is_truncated_as_envoy_truncates_it(env):
    cp, ups, s, listen, admin = start(env, "GRPC")
    wait_acked(cp, CDS, 1)
    bad = [eds_cluster(f"bad-cluster-with-a-long-name-{i:04d}", timeout="-1s") for i in range(100)]
    cp.set(CDS, bad)
    wait_for(lambda: nacks(cp, CDS), 10, "the NACK")
    msg = nacks(cp, CDS)[-1]["error_detail"]["message"]
    assert len(msg) == 4096 + len("...(truncated)") and msg.endswith("...(truncated)"), len(msg)
    # as Envoy's CdsApiHelper: "Error adding/updating cluster(s) name: why, ..."
    assert msg.startswith("Error adding/updating cluster(s) bad-cluster-with-a-long-name-0000: connect_timeout")


@pytest.mark.parametrize("mode", MODES)
def test_removals(env, mode):
    """CDS: a cluster absent from the state of the world, or in
    removed_resources, is removed and its endpoints unsubscribed. EDS and
    RDS: absence removes nothing; an incremental removal of endpoints is an
    empty update (update_empty) and of a route configuration is ignored, as
    Envoy's."""
    cp, ups, s, listen, admin = start(env, mode)
    wait_acked(cp, EDS, 1)
    cp.call("POST", "/resources", {"type_url": CDS, "remove": ["c2"]})
    wait_for(lambda: get(listen, "/b")[0] == 503, 10, "c2 removed")
    assert stat(admin, "cluster_manager.cluster_removed") == 1
    assert "cds: add 1 cluster(s), remove 1 cluster(s)" in s.output()
    # c2's endpoints are no longer subscribed
    if mode == "GRPC":
        wait_for(lambda: cp.requests(EDS)[-1]["resource_names"] == ["c1"], 10, "EDS names without c2")
    else:
        wait_for(lambda: any(e["resource_names_unsubscribe"] == ["c2"] for e in cp.requests(EDS)), 10,
                 "c2 unsubscribed")
    empty = stat(admin, "cluster.c1.update_empty")
    cp.call("POST", "/resources", {"type_url": EDS, "remove": ["c1"]})
    cp.call("POST", "/resources", {"type_url": RDS, "remove": ["r1"]})
    if mode == "DELTA_GRPC":
        wait_for(lambda: stat(admin, "cluster.c1.update_empty") == empty + 1, 10, "the removal as an empty update")
    else:
        wait_acked(cp, EDS, 2)
    wait_acked(cp, RDS, 2)
    # the hosts and routes stay
    assert get(listen, "/a") == (200, "u1")


@pytest.mark.parametrize("mode", MODES)
def test_control_plane_restart_while_traffic_flows(env, mode):
    cp, ups, s, listen, admin = start(env, mode)
    for t in (CDS, EDS, RDS):
        wait_acked(cp, t, 1)
    traffic = Traffic(listen, [(True, p) for p in ("/a", "/b", "/a", "/b")], pause=0.005).start()
    try:
        time.sleep(0.3)
        before = len(cp.entries())
        cp.call("POST", "/stop")
        wait_for(lambda: stat(admin, "control_plane.connected_state") == 0, 10, "connected_state 0")
        time.sleep(1)
        assert stat(admin, "cluster_manager.cds.update_failure") >= 1
        cp.call("POST", "/start")
        wait_for(lambda: stat(admin, "control_plane.connected_state") == 1 and
                 any(e["dir"] == "in" for e in cp.entries()[before:]), 15, "the reconnection")
        time.sleep(0.5)
    finally:
        traffic.stop()
    print(f"control plane restart: {traffic.sent} requests, {traffic.failed} failed")
    assert traffic.failed == 0, traffic.errors[:5]
    assert traffic.sent > 50
    # the new stream subscribes everything again, in order, from what SHARP has
    new = [e for e in cp.entries()[before:] if e["dir"] == "in"]
    first = {}
    for e in new:
        first.setdefault(e["type_url"], e)
    assert [e["type_url"] for e in new[:3]] == [CDS, EDS, RDS]
    if mode == "GRPC":
        assert first[CDS]["version_info"] == "1" and first[CDS]["response_nonce"] == ""
        assert sorted(first[EDS]["resource_names"]) == ["c1", "c2"]
        assert first[RDS]["resource_names"] == ["r1"]
    else:
        assert first[CDS]["initial_resource_versions"] == {"c1": "1", "c2": "1"}
        assert first[EDS]["initial_resource_versions"] == {"c1": "1", "c2": "1"}
        assert sorted(first[EDS]["resource_names_subscribe"]) == ["c1", "c2"]
        assert first[RDS]["initial_resource_versions"] == {"r1": "1"}
    # and still takes updates
    cp.set(EDS, [cla("c1", ups[1].port)])
    wait_for(lambda: get(listen, "/a") == (200, "u2"), 10, "an update after the restart")


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("server", ["silent", "down"])
def test_initial_fetch_timeout_lets_the_start_proceed(env, mode, server):
    """A control plane that never answers (or is not there): /ready says
    INITIALIZING until the initial_fetch_timeout of every subscription, then
    SHARP serves (404: no route configuration yet)."""
    mk_cp, _, mk_sharp = env
    if server == "silent":
        cp = mk_cp()
        cp.call("POST", "/delay", {"ms": 120000})
        port = cp.xds_port
    else:
        port = dead_port()
    timeout = {"initial_fetch_timeout": "2s"}
    listen, admin = free_port(), free_port()
    s = mk_sharp(bootstrap(listen, admin, port, mode, cds={**ADS, **timeout}, rds={**ADS, **timeout}))
    wait_for(lambda: ready_state(admin)[0] in (200, 503), 10, "the admin")
    assert ready_state(admin) == (503, "INITIALIZING")
    t0 = time.monotonic()
    wait_for(lambda: ready_state(admin) == (200, "LIVE"), 10, "the start after the timeout")
    assert time.monotonic() - t0 > 0.8
    assert stat(admin, "cluster_manager.cds.init_fetch_timeout") == 1
    assert stat(admin, "http.ingress.rds.r1.init_fetch_timeout") == 1
    assert get(listen, "/")[0] == 404
    assert stat(admin, "control_plane.connected_state") == (1 if server == "silent" else 0)
    if server == "down":
        assert stat(admin, "cluster_manager.cds.update_failure") >= 1
    assert "initial fetch timed out for " + CDS in s.output()


def test_sigterm_while_waiting_for_the_initial_fetch(env):
    mk_cp, _, mk_sharp = env
    cp = mk_cp()
    cp.call("POST", "/delay", {"ms": 120000})
    listen, admin = free_port(), free_port()
    s = mk_sharp(bootstrap(listen, admin, cp.xds_port))
    wait_for(lambda: ready_state(admin) == (503, "INITIALIZING"), 10, "the admin")
    t0 = time.monotonic()
    assert s.stop() == 0
    assert time.monotonic() - t0 < 5 * SLOW


def test_initial_fetch_timeout_defaults_to_15_seconds(env):
    mk_cp, _, mk_sharp = env
    cp = mk_cp()
    cp.call("POST", "/delay", {"ms": 120000})
    listen, admin = free_port(), free_port()
    mk_sharp(bootstrap(listen, admin, cp.xds_port))
    wait_for(lambda: ready_state(admin)[0] in (200, 503), 10, "the admin")
    t0 = time.monotonic()
    time.sleep(12)
    assert ready_state(admin) == (503, "INITIALIZING")
    wait_for(lambda: ready_state(admin)[0] == 200, 10, "the start after 15 s")
    assert 13 < time.monotonic() - t0 < 20
    assert stat(admin, "cluster_manager.cds.init_fetch_timeout") == 1


@pytest.mark.parametrize("mode", MODES)
def test_updates_under_load_lose_no_request(env, mode):
    """A client sends continuously (keep-alive connections and new ones)
    while 50 route, cluster and endpoint changes are pushed; no request
    fails, and the last configuration is in effect."""
    cp, ups, s, listen, admin = start(env, mode, n_up=3)
    traffic = Traffic(listen, [(i % 2 == 0, "/a" if i % 3 else "/b") for i in range(6)]).start()
    pushes = 0
    try:
        for i in range(1, 51):
            kind = i % 3
            flip = (i // 3) % 2
            if kind == 0:  # the routes swap the clusters
                cp.set(RDS, [routes("r1", ("/a", "c2" if flip else "c1"), ("/", "c1" if flip else "c2"))])
            elif kind == 1:  # c1 changes (a new cluster object), keeping its endpoints
                cp.set(CDS, [eds_cluster("c1", timeout=f"{1 + i % 5}s"), eds_cluster("c2")], replace=True)
            else:  # the endpoints of both: one or two hosts
                cp.set(EDS, [cla("c1", ups[0].port) if flip else cla("c1", ups[0].port, ups[2].port),
                             cla("c2", ups[1].port, ups[2].port) if flip else cla("c2", ups[1].port)])
            pushes += 1
            time.sleep(0.1)
        # the final state: everything to c2 on u3
        cp.set(EDS, [cla("c2", ups[2].port)])
        cp.set(RDS, [routes("r1", ("/", "c2"))])
        pushes += 2
        wait_for(lambda: get(listen, "/a") == (200, "u3"), 10, "the final configuration")
        time.sleep(0.3)
    finally:
        traffic.stop()
    print(f"xDS {mode} under load: {traffic.sent} requests, {traffic.failed} failed, {pushes} pushes")
    assert traffic.failed == 0, traffic.errors[:5]
    assert traffic.sent > 300
    for t in (CDS, EDS, RDS):
        assert not nacks(cp, t)
    assert stat(admin, "cluster_manager.cds.update_rejected") == 0
    # the pushes were applied: c1 replaced 17 times, the routes 16 times
    assert stat(admin, "cluster_manager.cluster_modified") >= 15
    assert stat(admin, "http.ingress.rds.r1.update_success") >= 15


@pytest.mark.parametrize("mode", MODES)
def test_api_config_source_streams(env, mode):
    """cds_config, eds_config and rds's config_source each with their own
    api_config_source: one stream per type and source on the type's own
    service, the EDS of every cluster sharing one."""
    mk_cp, mk_up, mk_sharp = env
    ups = [mk_up("u1"), mk_up("u2")]
    cp = mk_cp()
    src = {"api_config_source": ads_config(mode), "resource_api_version": "V3"}
    cp.set(CDS, [eds_cluster("c1", source=src), eds_cluster("c2", source=src)])
    cp.set(EDS, [cla("c1", ups[0].port), cla("c2", ups[1].port)])
    cp.set(RDS, [routes("r1", ("/a", "c1"), ("/", "c2"))])
    listen, admin = free_port(), free_port()
    s = mk_sharp(bootstrap(listen, admin, cp.xds_port, mode, ads=False, cds=src, rds=src))
    s.wait_ready(admin, timeout=20 * SLOW)
    assert get(listen, "/a") == (200, "u1") and get(listen, "/b") == (200, "u2")
    delta = mode == "DELTA_GRPC"
    methods = sorted(e["method"].rsplit("/", 1)[1] for e in cp.entries() if e["dir"] == "open")
    assert methods == (["DeltaClusters", "DeltaEndpoints", "DeltaRoutes"] if delta else
                       ["StreamClusters", "StreamEndpoints", "StreamRoutes"])
    assert stat(admin, "cluster_manager.cds.control_plane.connected_state") == 1
    assert stat(admin, "http.ingress.rds.r1.control_plane.connected_state") == 1
    assert stat(admin, "control_plane.connected_state") is None  # no ADS
    cp.set(EDS, [cla("c2", ups[0].port)])
    wait_for(lambda: get(listen, "/b") == (200, "u1"), 10, "the EDS update")
    # a replaced cluster finds its endpoints on the shared stream
    cp.set(CDS, [eds_cluster("c1", timeout="3s", source=src), eds_cluster("c2", source=src)], replace=True)
    wait_acked(cp, CDS, 2)
    assert get(listen, "/a") == (200, "u1")


def test_set_node_on_first_message_only_and_stream_metadata(env):
    mk_sharp = env[2]
    cp, u = one_cluster(env)
    listen, admin = free_port(), free_port()
    extra = {"set_node_on_first_message_only": True}
    boot = bootstrap(listen, admin, cp.xds_port, "DELTA_GRPC", ads_extra=extra)
    gs = boot["dynamic_resources"]["ads_config"]["grpc_services"][0]
    gs["envoy_grpc"]["authority"] = "xds.example"
    gs["initial_metadata"] = [{"key": "x-token", "value": "t0ken"}]
    s = mk_sharp(boot)
    s.wait_ready(admin, timeout=20 * SLOW)
    wait_acked(cp, RDS, 1)
    reqs = cp.requests()
    assert reqs[0]["node"] == "sharp-1" and all(e["node"] == "" for e in reqs[1:])
    opened = [e for e in cp.entries() if e["dir"] == "open"][0]
    assert opened["authority"] == "xds.example"
    assert opened["metadata"]["x-token"] == "t0ken"
    # a new stream names the node in its first request again
    before = len(cp.entries())
    cp.call("POST", "/drop")
    wait_for(lambda: any(e["dir"] == "in" for e in cp.entries()[before:]), 15, "the new stream")
    new = [e for e in cp.entries()[before:] if e["dir"] == "in"]
    assert new[0]["node"] == "sharp-1"


def test_node_fields_as_given_and_eds_service_name(env):
    """A node naming its own user agent, extensions and listening addresses
    is sent as it is; an EDS cluster's service_name is the name subscribed."""
    mk_cp, mk_up, mk_sharp = env
    u = mk_up("u1")
    cp = mk_cp()
    c1 = eds_cluster("c1")
    c1["resource"]["eds_cluster_config"]["service_name"] = "svc-1"
    cp.set(CDS, [c1])
    cp.set(EDS, [cla("svc-1", u.port)])
    cp.set(RDS, [routes("r1", ("/", "c1"))])
    node = {"id": "n", "cluster": "c", "user_agent_name": "edge-proxy", "user_agent_version": "7.1",
            "extensions": [{"name": "envoy.filters.http.router", "category": "envoy.filters.http"}],
            "listening_addresses": [{"socket_address": {"address": "127.0.0.1", "port_value": 8080}}]}
    listen, admin = free_port(), free_port()
    s = mk_sharp(bootstrap(listen, admin, cp.xds_port, "DELTA_GRPC", node=node))
    s.wait_ready(admin, timeout=20 * SLOW)
    assert get(listen, "/") == (200, "u1")
    n = cp.requests()[0]["node_full"]
    assert n["user_agent_name"] == "edge-proxy" and n["user_agent_version"] == "7.1"
    assert n.get("user_agent_build_version") is None
    assert n["extensions"][0]["name"] == "envoy.filters.http.router"
    assert n["listening_addresses"][0]["socket_address"]["port_value"] == 8080
    eds = cp.requests(EDS)[0]
    assert eds["resource_names_subscribe"] == ["svc-1"]


def test_rate_limit_settings_space_the_requests(env):
    mk_sharp = env[2]
    cp, u = one_cluster(env)
    listen, admin = free_port(), free_port()
    extra = {"rate_limit_settings": {"max_tokens": 1, "fill_rate": 2}}
    s = mk_sharp(bootstrap(listen, admin, cp.xds_port, ads_extra=extra))
    s.wait_ready(admin, timeout=20 * SLOW)
    wait_acked(cp, EDS, 1)
    # one token, then one every 500 ms: the requests of the start are spaced
    reqs = cp.requests()
    gaps = [b["t"] - a["t"] for a, b in zip(reqs, reqs[1:])]
    assert len(reqs) >= 4 and sum(1 for g in gaps if g >= 400) >= 3, gaps
    assert stat(admin, "control_plane.rate_limit_enforced") >= 1
    assert get(listen, "/") == (200, "u1")


def test_retry_back_off_of_the_stream(env):
    mk_cp, _, mk_sharp = env
    cp = mk_cp()
    cp.call("POST", "/refuse", {"ms": 60000})
    listen, admin = free_port(), free_port()
    back_off = {"retry_policy": {"retry_back_off": {"base_interval": "0.05s", "max_interval": "0.1s"}}}
    boot = bootstrap(listen, admin, cp.xds_port, cds={**ADS, "initial_fetch_timeout": "1s"},
                     rds={**ADS, "initial_fetch_timeout": "1s"})
    boot["dynamic_resources"]["ads_config"]["grpc_services"][0]["envoy_grpc"].update(back_off)
    mk_sharp(boot)
    wait_for(lambda: ready_state(admin)[0] == 200, 10, "the start")
    n0 = len([e for e in cp.entries() if e["dir"] == "refused"])
    time.sleep(2)
    n = len([e for e in cp.entries() if e["dir"] == "refused"]) - n0
    # back-offs drawn in [0, 50) then [0, 100) ms: tens of attempts in 2 s
    # (Envoy's default of 500 ms to 30 s would make a handful)
    assert n >= 10, n


def test_tls_to_the_control_plane(env, pki):
    mk_sharp = env[2]
    cp, u = one_cluster(env, ["--tls", os.path.join(pki, "rsa.crt"), os.path.join(pki, "rsa.key")])
    tls = {"name": "envoy.transport_sockets.tls", "typed_config": {
        "@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext",
        "sni": TLS_HOST, "common_tls_context": {"alpn_protocols": ["h2"], "validation_context": {
            "trusted_ca": {"filename": os.path.join(pki, "ca.crt")}}}}}
    listen, admin = free_port(), free_port()
    s = mk_sharp(bootstrap(listen, admin, cp.xds_port, xds_tls=tls))
    s.wait_ready(admin, timeout=20 * SLOW)
    assert get(listen, "/") == (200, "u1")
    assert stat(admin, "cluster.xds.ssl.handshake") >= 1


def test_bad_ads_configs_are_refused_as_envoy_refuses_them():
    def check(boot, *want):
        rc, out = validate_config(json.dumps(boot))
        assert rc != 0, out
        for w in want:
            assert w in out, out

    def boot(**kw):
        return bootstrap(free_port(), free_port(), free_port(), **kw)

    b = boot()
    b["dynamic_resources"]["ads_config"]["grpc_services"][0]["envoy_grpc"]["cluster_name"] = "nope"
    check(b, "must have a statically defined non-EDS cluster: 'nope' does not exist, was added via api, or is an "
             "EDS cluster")
    b = boot()
    b["static_resources"]["clusters"].append({"name": "edsx", "type": "EDS", "connect_timeout": "1s",
                                               "eds_cluster_config": {"eds_config": ADS}})
    b["dynamic_resources"]["ads_config"]["grpc_services"][0]["envoy_grpc"]["cluster_name"] = "edsx"
    check(b, "'edsx' does not exist, was added via api, or is an EDS cluster")
    b = boot()
    del b["static_resources"]["clusters"][0]["typed_extension_protocol_options"]
    check(b, "does not use HTTP/2")
    # an aggregate cluster is not a primary cluster (Envoy initializes it
    # after them): refused as Envoy's check refuses it
    b = boot()
    b["static_resources"]["clusters"].append({
        "name": "aggx", "connect_timeout": "1s", "lb_policy": "CLUSTER_PROVIDED",
        "cluster_type": {"name": "envoy.clusters.aggregate", "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.clusters.aggregate.v3.ClusterConfig",
            "clusters": ["xds"]}}})
    b["dynamic_resources"]["ads_config"]["grpc_services"][0]["envoy_grpc"]["cluster_name"] = "aggx"
    check(b, "ads_config.grpc_services[0].envoy_grpc.cluster_name",
          "'aggx' does not exist, was added via api, or is an EDS cluster (it is an aggregate cluster, which is "
          "not supported here)")
    b = boot()
    b["dynamic_resources"]["ads_config"]["api_type"] = "REST"
    check(b, "REST", "not supported by SHARP")
    b = boot()
    del b["dynamic_resources"]["ads_config"]["transport_api_version"]
    check(b, "V2 (and AUTO) xDS transport protocol versions are deprecated")
    b = boot()
    b["dynamic_resources"]["ads_config"]["grpc_services"].append({"envoy_grpc": {"cluster_name": "xds"}})
    check(b, "must have a single gRPC service specified")
    b = boot()
    b["dynamic_resources"]["ads_config"]["grpc_services"] = []
    check(b, "API configs must have either a gRPC service or a cluster name defined")
    check(boot(node={}), "ads: node 'id' and 'cluster' are required. Set it either in 'node' config or via "
                         "--service-node and --service-cluster options.")
    b = boot()
    b["dynamic_resources"]["ads_config"]["grpc_services"][0] = {"google_grpc": {"target_uri": "x", "stat_prefix": "x"}}
    check(b, "google_grpc is not supported by SHARP")
    b = boot()
    b["dynamic_resources"]["ads_config"]["rate_limit_settings"] = {"fill_rate": 0}
    check(b, "fill_rate")
    b = boot()
    b["dynamic_resources"]["ads_config"]["grpc_services"][0]["envoy_grpc"]["retry_policy"] = {
        "retry_back_off": {"base_interval": "2s", "max_interval": "1s"}}
    check(b, "max_interval must be greater than or equal to the base_interval")
    b = boot()
    b["dynamic_resources"]["ads_config"]["grpc_services"][0]["envoy_grpc"]["retry_policy"] = {"num_retries": 3}
    check(b, "num_retries is not supported by SHARP")
    check(boot(ads=False), "ADS must be configured to support an ADS config source")
    b = boot(cds={"api_config_source": {**ads_config("GRPC"), "api_type": "REST"}})
    check(b, "REST (xDS by HTTP polling) is not supported by SHARP")
    b = boot()
    b["dynamic_resources"]["lds_config"] = {"self": {}}
    check(b, "self is not supported by SHARP")
    # without node the same config loads with --service-node/--service-cluster (tested by validate only)
    ok = boot()
    rc, out = validate_config(json.dumps(ok))
    assert rc == 0, out


def listener(name, port, route_name="r1"):
    """A Listener resource on 127.0.0.1:port whose connection manager takes
    its routes from RDS over ADS."""
    hcm = {"@type": HCM, "stat_prefix": name, "rds": {"config_source": ADS, "route_config_name": route_name},
           "http_filters": [{"name": "envoy.filters.http.router", "typed_config": {"@type": ROUTER}}]}
    return {"name": name, "resource": {
        "name": name, "address": {"socket_address": {"address": "127.0.0.1", "port_value": port}},
        "filter_chains": [{"filters": [{"name": "envoy.filters.network.http_connection_manager",
                                        "typed_config": hcm}]}]}}


@pytest.mark.parametrize("mode", MODES)
def test_listeners_over_ads(env, mode):
    """lds_config: {ads: {}}: listeners come from the control plane (LDS
    after CDS and EDS, before RDS), are added at once, and removed when a
    state-of-the-world response no longer has them (incremental: by
    removed_resources)."""
    mk_sharp = env[2]
    cp, u = one_cluster(env)
    p1, p2 = free_port(), free_port()
    cp.set(LDS, [listener("dyn1", p1)])
    listen, admin = free_port(), free_port()
    b = bootstrap(listen, admin, cp.xds_port, mode)
    b["dynamic_resources"]["lds_config"] = ADS
    s = mk_sharp(b)
    s.wait_ready(admin, timeout=20 * SLOW)
    def try_get(port):
        try:
            return get(port, "/")
        except OSError:
            return None
    wait_for(lambda: try_get(p1) == (200, "u1"), 10, "the listener from LDS")
    wait_acked(cp, LDS, 1)
    types = [e["type_url"] for e in cp.entries() if e["dir"] == "in"]
    assert types.index(CDS) < types.index(LDS)
    assert stat(admin, "listener_manager.lds.update_success") >= 1
    assert stat(admin, "listener_manager.listener_added") == 2  # the static one counts too, as in Envoy
    # a second listener, then the first one gone
    cp.set(LDS, [listener("dyn1", p1), listener("dyn2", p2)])
    wait_for(lambda: try_get(p2) == (200, "u1"), 10, "the second listener")
    cp.set(LDS, [], remove=["dyn1"])
    wait_for(lambda: stat(admin, "listener_manager.listener_removed") == 1, 10, "the first listener's removal")
    wait_for(lambda: try_get(p1) is None, 10, "the removed listener to stop accepting")
    assert get(p2, "/") == (200, "u1")
    assert not nacks(cp, LDS)
