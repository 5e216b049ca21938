"""Configuration from xDS files (Envoy's filesystem subscription): CDS
(dynamic_resources.cds_config), EDS (clusters of type EDS) and RDS (the
connection manager's rds) from files holding DiscoveryResponses, updated by
an atomic move or a Kubernetes-style `..data` symlink swap, applied without
a restart and without losing a request: a client sends continuously while
the files change, and no request fails. A rejected update keeps the
previous configuration and is counted; a removed cluster lets its requests
in flight finish."""
import concurrent.futures
import json
import os
import threading
import time
import urllib.error
import urllib.request

import pytest

from conftest import SLOW, Sharp, Upstream, admin_get, free_port, stat, validate_config, wait_for

RC = "type.googleapis.com/envoy.config.route.v3.RouteConfiguration"
CL = "type.googleapis.com/envoy.config.cluster.v3.Cluster"
CLA = "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment"
HCM = "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager"
ROUTER = "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"


def write_atomic(path, obj):
    tmp = f"{path}.tmp{time.time_ns()}"
    with open(tmp, "w") as f:
        f.write(json.dumps(obj))
    os.replace(tmp, path)


def discovery(version, *resources):
    return {"version_info": str(version), "resources": list(resources)}


def route_config(name, cluster, prefix="/"):
    return {"@type": RC, "name": name, "virtual_hosts": [
        {"name": "all", "domains": ["*"], "routes": [{"match": {"prefix": prefix}, "route": {"cluster": cluster}}]}]}


def endpoint(port):
    return {"endpoint": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": port}}}}


def cla(name, *ports):
    return {"@type": CLA, "cluster_name": name, "endpoints": [{"lb_endpoints": [endpoint(p) for p in ports]}]}


def static_cluster(name, *ports, timeout="1s"):
    return {"@type": CL, "name": name, "type": "STATIC", "connect_timeout": timeout,
            "load_assignment": {"cluster_name": name, "endpoints": [{"lb_endpoints": [endpoint(p) for p in ports]}]}}


def eds_cluster(name, eds_path, service_name=None):
    c = {"@type": CL, "name": name, "type": "EDS", "connect_timeout": "1s",
         "eds_cluster_config": {"eds_config": {"path_config_source": {"path": eds_path}}}}
    if service_name:
        c["eds_cluster_config"]["service_name"] = service_name
    return c


def bootstrap(listen, admin, rds_path=None, cds_path=None, static_clusters="", route_name="dyn_routes",
              rds_source=None):
    if static_clusters:  # resources of the bootstrap itself: no "@type"
        static_clusters = json.dumps([{k: v for k, v in c.items() if k != "@type"}
                                      for c in json.loads(static_clusters)])
    if rds_source is None:
        rds_source = {"path_config_source": {"path": rds_path}}
    rs = json.dumps({"config_source": rds_source, "route_config_name": route_name})
    dyn = ""
    if cds_path:
        dyn = f"""dynamic_resources:
  cds_config: {{ path_config_source: {{ path: {cds_path} }} }}
"""
    return f"""admin:
  address: {{ socket_address: {{ address: 127.0.0.1, port_value: {admin} }} }}
{dyn}static_resources:
  listeners:
  - name: l0
    address: {{ socket_address: {{ address: 127.0.0.1, port_value: {listen} }} }}
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": {HCM}
          stat_prefix: ingress
          rds: {rs}
          http_filters:
          - name: envoy.filters.http.router
            typed_config: {{ "@type": {ROUTER} }}
  clusters: {static_clusters or "[]"}
"""


def get(port, path="/", timeout=5, headers=None):
    """(status, x-upstream-name) of one request on a new connection."""
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            r.read()
            return r.status, r.headers.get("x-upstream-name")
    except urllib.error.HTTPError as e:
        return e.code, e.headers.get("x-upstream-name")


class KeepAlive:
    """One HTTP/1.1 keep-alive connection (http.client), reconnecting when
    the proxy closes it, as a client pool does."""

    def __init__(self, port):
        import http.client
        self.port = port
        self.mk = lambda: http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        self.c = self.mk()
        self.reused = 0

    def get(self, path="/"):
        import http.client
        for attempt in range(2):
            try:
                self.c.request("GET", path)
                r = self.c.getresponse()
                r.read()
                self.reused += 1
                if r.getheader("connection", "").lower() == "close":
                    self.c.close()
                    self.c = self.mk()
                return r.status, r.getheader("x-upstream-name")
            except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError):
                # the server closed an idle keep-alive connection before this
                # request was sent (nothing was lost): a client retries that
                self.c.close()
                self.c = self.mk()
                if attempt:
                    raise
        raise AssertionError("unreachable")

    def close(self):
        self.c.close()


class Traffic:
    """Clients sending continuously from start() to stop(), one thread each:
    (keepalive, path) pairs, a keep-alive connection (KeepAlive) or a new
    connection per request; counts the requests sent and those that failed
    (a status other than 200, or any error), with the first errors."""

    def __init__(self, port, clients, pause=0.0):
        self.port, self.pause = port, pause
        self.stop_event = threading.Event()
        self.lock = threading.Lock()
        self.sent, self.failed, self.errors = 0, 0, []
        self.threads = [threading.Thread(target=self._run, args=c) for c in clients]

    def _run(self, keepalive, path):
        ka = KeepAlive(self.port) if keepalive else None
        while not self.stop_event.is_set():
            try:
                st, _ = ka.get(path) if ka else get(self.port, path)
                err = None if st == 200 else f"status {st}"
            except Exception as e:  # a lost request or a refused connection
                err = repr(e)
            with self.lock:
                self.sent += 1
                if err:
                    self.failed += 1
                    self.errors.append(err)
            if self.pause:
                time.sleep(self.pause)
        if ka:
            ka.close()

    def start(self):
        for t in self.threads:
            t.start()
        return self

    def stop(self):
        self.stop_event.set()
        for t in self.threads:
            t.join(30)
        return self


@pytest.fixture
def env(tmp_path, procs):
    """The test's directory, and starters of upstreams and SHARPs that the
    procs fixture stops (a SHARP must drain and exit 0 with no sanitizer
    report)."""
    def upstream(name):
        u = Upstream(name)
        procs.append(u)
        return u

    def sharp(text):
        p = Sharp(text)
        procs.append(p)
        return p
    yield tmp_path, upstream, sharp


def test_rds_from_file_routes_change_on_the_next_request(env):
    d, upstream, sharp = env
    a, b = upstream("a"), upstream("b")
    rds = str(d / "rds.json")
    write_atomic(rds, discovery(1, route_config("dyn_routes", "ca")))
    listen, admin = free_port(), free_port()
    clusters = json.dumps([static_cluster("ca", a.port), static_cluster("cb", b.port)])
    p = sharp(bootstrap(listen, admin, rds_path=rds, static_clusters=clusters))
    p.wait_ready(admin)
    ka = KeepAlive(listen)
    assert ka.get() == (200, "a")
    write_atomic(rds, discovery(2, route_config("dyn_routes", "cb")))
    # the same keep-alive connection: its next request takes the new table
    wait_for(lambda: ka.get() == (200, "b"), 5 * SLOW, "the RDS update on the open connection")
    assert stat(admin, "http.ingress.rds.dyn_routes.update_success") == 2
    assert stat(admin, "http.ingress.rds.dyn_routes.update_attempt") == 2
    # a route configuration of another name in the file is not ours
    write_atomic(rds, discovery(3, route_config("other", "ca")))
    wait_for(lambda: stat(admin, "http.ingress.rds.dyn_routes.update_success") == 3, 5 * SLOW, "update 3")
    assert ka.get() == (200, "b")
    # /config_dump shows the dynamic route configuration with its version
    dump = json.loads(admin_get(admin, "/config_dump"))
    routes = [c for c in dump["configs"] if c["@type"].endswith("RoutesConfigDump")][0]
    dyn = routes["dynamic_route_configs"]
    assert len(dyn) == 1 and dyn[0]["version_info"] == "2"
    assert dyn[0]["route_config"]["name"] == "dyn_routes" and "last_updated" in dyn[0]
    ka.close()


def test_rds_rejected_update_keeps_the_previous_table(env):
    d, upstream, sharp = env
    a = upstream("a")
    rds = str(d / "rds.yaml")
    write_atomic(rds, discovery(1, route_config("dyn_routes", "ca")))
    listen, admin = free_port(), free_port()
    p = sharp(bootstrap(listen, admin, rds_path=rds, static_clusters=json.dumps([static_cluster("ca", a.port)])))
    p.wait_ready(admin)
    assert get(listen) == (200, "a")
    bad = route_config("dyn_routes", "ca")
    bad["virtual_hosts"][0]["no_such_field"] = 1  # unknown field: the whole update is rejected
    write_atomic(rds, discovery(2, bad))
    wait_for(lambda: stat(admin, "http.ingress.rds.dyn_routes.update_rejected") == 1, 5 * SLOW, "the rejection")
    assert get(listen) == (200, "a")
    dup = discovery(3, route_config("dyn_routes", "ca"), route_config("dyn_routes", "ca", prefix="/x"))
    write_atomic(rds, dup)
    wait_for(lambda: stat(admin, "http.ingress.rds.dyn_routes.update_rejected") == 2, 5 * SLOW, "duplicate")
    with open(rds, "w") as f:  # not a DiscoveryResponse at all: update_failure
        f.write("{not json")
    wait_for(lambda: stat(admin, "http.ingress.rds.dyn_routes.update_failure") == 1, 5 * SLOW, "unparseable")
    assert get(listen) == (200, "a")
    assert stat(admin, "http.ingress.rds.dyn_routes.update_success") == 1
    # a route to a cluster that does not exist (RDS does not validate clusters by default, as Envoy): 503 NC
    write_atomic(rds, discovery(4, route_config("dyn_routes", "nope")))
    wait_for(lambda: get(listen)[0] == 503, 5 * SLOW, "route to an unknown cluster")


def test_cds_and_eds_from_files(env):
    d, upstream, sharp = env
    a, b, c = upstream("a"), upstream("b"), upstream("c")
    rds, cds, eds = str(d / "rds.json"), str(d / "cds.json"), str(d / "eds.json")
    write_atomic(rds, discovery(1, route_config("dyn_routes", "dyn")))
    write_atomic(cds, discovery("c1", eds_cluster("dyn", eds, service_name="svc")))
    write_atomic(eds, discovery("e1", cla("svc", a.port)))
    listen, admin = free_port(), free_port()
    p = sharp(bootstrap(listen, admin, rds_path=rds, cds_path=cds))
    p.wait_ready(admin)
    assert get(listen) == (200, "a")
    assert stat(admin, "cluster_manager.cds.update_success") == 1
    assert stat(admin, "cluster_manager.cluster_added") == 1
    assert stat(admin, "cluster.dyn.update_success") == 1
    # EDS adds b: both take traffic; a keeps its identity (its request count)
    write_atomic(eds, discovery("e2", cla("svc", a.port, b.port)))

    def seen_both():
        return {get(listen)[1] for _ in range(8)} == {"a", "b"}
    wait_for(seen_both, 5 * SLOW, "the second endpoint")
    clusters = admin_get(admin, "/clusters")
    assert f"dyn::127.0.0.1:{a.port}::rq_total::" in clusters
    total_a = int(clusters.split(f"dyn::127.0.0.1:{a.port}::rq_total::")[1].split()[0])
    assert total_a >= 2  # counted across the update: the same host
    assert stat(admin, "cluster.dyn.membership_total") == 2
    # an EDS resource of another name is rejected, the hosts stay
    write_atomic(eds, discovery("e3", cla("other", c.port)))
    wait_for(lambda: stat(admin, "cluster.dyn.update_rejected") == 1, 5 * SLOW, "the EDS rejection")
    assert {get(listen)[1] for _ in range(6)} == {"a", "b"}
    # CDS changes the cluster to a STATIC one on c: the next requests go there
    write_atomic(cds, discovery("c2", static_cluster("dyn", c.port)))
    wait_for(lambda: get(listen) == (200, "c"), 5 * SLOW, "the modified cluster")
    assert stat(admin, "cluster_manager.cluster_modified") == 1
    # a CDS update naming a cluster twice, as Envoy's CdsApiHelper: the
    # first is applied, the second refused, and the update rejected naming it
    write_atomic(cds, discovery("c3", static_cluster("dyn", a.port), static_cluster("dyn", b.port)))
    wait_for(lambda: stat(admin, "cluster_manager.cds.update_rejected") == 1, 5 * SLOW, "the CDS rejection")
    wait_for(lambda: get(listen) == (200, "a"), 5 * SLOW, "the first of the two")
    assert "Error adding/updating cluster(s) dyn: duplicate cluster dyn found" in p.output()
    dump = json.loads(admin_get(admin, "/config_dump"))
    cd = [x for x in dump["configs"] if x["@type"].endswith("ClustersConfigDump")][0]
    assert cd["version_info"] == "c3"  # it applied something
    assert [x["cluster"]["name"] for x in cd["dynamic_active_clusters"]] == ["dyn"]
    assert cd["dynamic_active_clusters"][0]["version_info"] == "c3"
    # removed: 503 (no cluster), counted
    write_atomic(cds, discovery("c4"))
    wait_for(lambda: get(listen)[0] == 503, 5 * SLOW, "the removed cluster")
    assert stat(admin, "cluster_manager.cluster_removed") == 1
    assert stat(admin, "cluster_manager.active_clusters") == 0


def test_cds_file_resource_using_an_unimplemented_field_is_refused_alone(env):
    """As the refused-alone resources of a gRPC response (and as Envoy's
    CdsApiHelper goes on past a cluster it cannot build): a cluster of a CDS
    file that uses a field SHARP does not implement is refused alone, at
    start and on a change; the file's other clusters apply, the refused one
    keeps the version the last accepted read gave (absent when new), and the
    update counts as rejected naming it."""
    d, upstream, sharp = env
    a, b, c = upstream("a"), upstream("b"), upstream("c")
    rds, cds = str(d / "rds.json"), str(d / "cds.json")

    def unimplemented(cl):
        cl["upstream_bind_config"] = {"source_address": {"address": "127.0.0.1", "port_value": 0}}
        return cl
    write_atomic(rds, discovery(1, route_config("dyn_routes", "dyn")))
    write_atomic(cds, discovery("c1", static_cluster("dyn", a.port), static_cluster("other", a.port),
                                unimplemented(static_cluster("bad", a.port))))
    listen, admin = free_port(), free_port()
    p = sharp(bootstrap(listen, admin, rds_path=rds, cds_path=cds))
    p.wait_ready(admin)
    assert get(listen) == (200, "a")
    clusters = admin_get(admin, "/clusters")
    assert "other::observability_name::other" in clusters and "bad::" not in clusters
    assert stat(admin, "cluster_manager.cds.update_rejected") == 1
    assert "upstream_bind_config" in p.output()
    # a change: dyn moves to b; other, now with the field, stays on a; a new
    # cluster with it is not added
    write_atomic(cds, discovery("c2", static_cluster("dyn", b.port), unimplemented(static_cluster("other", c.port)),
                                unimplemented(static_cluster("new", c.port))))
    wait_for(lambda: get(listen) == (200, "b"), 5 * SLOW, "the accepted part of the update")
    wait_for(lambda: stat(admin, "cluster_manager.cds.update_rejected") == 2, 5 * SLOW, "the rejection")
    clusters = admin_get(admin, "/clusters")
    assert f"other::127.0.0.1:{a.port}::" in clusters and f"other::127.0.0.1:{c.port}::" not in clusters
    assert "new::" not in clusters
    dump = admin_get(admin, "/config_dump")
    assert "upstream_bind_config" in dump  # the refused clusters' error_state
    # a read without the field applies it
    write_atomic(cds, discovery("c3", static_cluster("dyn", b.port), static_cluster("other", c.port)))
    wait_for(lambda: f"other::127.0.0.1:{c.port}::" in admin_get(admin, "/clusters"), 5 * SLOW, "other on c")
    assert stat(admin, "cluster_manager.cds.update_rejected") == 2
    assert get(listen) == (200, "b")


def test_removed_cluster_finishes_requests_in_flight(env):
    d, upstream, sharp = env
    a, b = upstream("a"), upstream("b")
    rds, cds = str(d / "rds.json"), str(d / "cds.json")
    write_atomic(rds, discovery(1, route_config("dyn_routes", "slow")))
    write_atomic(cds, discovery(1, static_cluster("slow", a.port)))
    listen, admin = free_port(), free_port()
    p = sharp(bootstrap(listen, admin, rds_path=rds, cds_path=cds))
    p.wait_ready(admin)
    with concurrent.futures.ThreadPoolExecutor(8) as ex:
        slow = [ex.submit(get, listen, "/?delay_ms=1500", 10) for _ in range(8)]
        wait_for(lambda: stat(admin, "cluster.slow.upstream_rq_active") == 8, 5 * SLOW, "the requests in flight")
        # the route moves to a new cluster and the old one is removed
        write_atomic(cds, discovery(2, static_cluster("fast", b.port)))
        write_atomic(rds, discovery(2, route_config("dyn_routes", "fast")))
        wait_for(lambda: get(listen) == (200, "b"), 5 * SLOW, "the new cluster")
        assert [f.result() for f in slow] == [(200, "a")] * 8


def test_watched_directory_symlink_swap(env):
    d, upstream, sharp = env
    a, b = upstream("a"), upstream("b")
    data = d / "cfg"
    os.makedirs(data / "v1")
    os.makedirs(data / "v2")
    write_atomic(str(data / "v1" / "eds.json"), discovery(1, cla("dyn", a.port)))
    write_atomic(str(data / "v2" / "eds.json"), discovery(2, cla("dyn", b.port)))
    os.symlink("v1", data / "..data")
    os.symlink("..data/eds.json", data / "eds.json")
    cds = str(d / "cds.json")
    c = eds_cluster("dyn", str(data / "eds.json"))
    c["eds_cluster_config"]["eds_config"]["path_config_source"]["watched_directory"] = {"path": str(data)}
    write_atomic(cds, discovery(1, c))
    rds = str(d / "rds.json")
    write_atomic(rds, discovery(1, route_config("dyn_routes", "dyn")))
    listen, admin = free_port(), free_port()
    p = sharp(bootstrap(listen, admin, rds_path=rds, cds_path=cds))
    p.wait_ready(admin)
    assert get(listen) == (200, "a")
    os.symlink("v2", data / "..data_tmp")
    os.replace(data / "..data_tmp", data / "..data")  # Kubernetes' swap
    wait_for(lambda: get(listen) == (200, "b"), 5 * SLOW, "the swapped endpoints")


def test_updates_under_load_lose_no_request(env):
    """A client sends continuously (keep-alive connections and new ones)
    while routes, clusters and endpoints change 30 times; no request fails
    and the last configuration is in effect."""
    d, upstream, sharp = env
    ups = [upstream(n) for n in ("a", "b", "c")]
    rds, cds, eds = str(d / "rds.json"), str(d / "cds.json"), str(d / "eds.json")
    write_atomic(rds, discovery(0, route_config("dyn_routes", "x")))
    write_atomic(cds, discovery(0, static_cluster("x", ups[0].port), eds_cluster("y", eds)))
    write_atomic(eds, discovery(0, cla("y", ups[1].port)))
    listen, admin = free_port(), free_port()
    p = sharp(bootstrap(listen, admin, rds_path=rds, cds_path=cds))
    p.wait_ready(admin)
    traffic = Traffic(listen, [(i % 2 == 0, "/?delay_ms=5") for i in range(6)]).start()
    pushes = 0
    for i in range(1, 31):
        kind = i % 3
        if kind == 0:  # route flips between the two clusters
            write_atomic(rds, discovery(i, route_config("dyn_routes", "y" if (i // 3) % 2 else "x")))
        elif kind == 1:  # cluster x changes (a new object: new pools) between a and c
            write_atomic(cds, discovery(i, static_cluster("x", ups[2 if (i // 3) % 2 else 0].port,
                                                          timeout=f"{1 + i % 2}s"), eds_cluster("y", eds)))
        else:  # endpoints of y: one or two hosts
            ports = [ups[1].port] if (i // 3) % 2 else [ups[1].port, ups[2].port]
            write_atomic(eds, discovery(i, cla("y", *ports)))
        pushes += 1
        time.sleep(0.15)
    # the final state: route to x on c
    write_atomic(cds, discovery(100, static_cluster("x", ups[2].port), eds_cluster("y", eds)))
    write_atomic(rds, discovery(100, route_config("dyn_routes", "x")))
    pushes += 2
    time.sleep(0.5)
    traffic.stop()
    print(f"zero-loss: {traffic.sent} requests, {traffic.failed} failed, {pushes} pushes")
    assert traffic.failed == 0, traffic.errors[:5]
    assert traffic.sent > 200
    wait_for(lambda: get(listen) == (200, "c"), 5 * SLOW, "the final configuration")
    assert stat(admin, "http.ingress.rds.dyn_routes.update_rejected") == 0
    assert stat(admin, "cluster_manager.cds.update_rejected") == 0


def test_refused_sources_name_what_is_missing(tmp_path):
    rds = tmp_path / "rds.json"
    write_atomic(str(rds), discovery(1, route_config("r", "c")))
    # gRPC sources (test_xds_ads.py) need their ADS or gRPC service
    ads = bootstrap(free_port(), free_port(), rds_source={"ads": {}})
    rc, out = validate_config(ads)
    assert rc != 0 and "ADS must be configured to support an ADS config source" in out, out
    api = bootstrap(free_port(), free_port(), rds_source={"api_config_source": {"api_type": "GRPC"}})
    rc, out = validate_config(api)
    assert rc != 0 and "API configs must have either a gRPC service or a cluster name defined" in out, out
    # LDS from a file that is not there (test_xds_lds.py has LDS itself)
    lds = bootstrap(free_port(), free_port(), rds_path=str(rds)).replace(
        "static_resources:", f"dynamic_resources:\n  lds_config: {{ path: {tmp_path / 'none.json'} }}\nstatic_resources:")
    rc, out = validate_config(lds)
    assert rc != 0 and "lds_config" in out and "does not exist" in out, out
    missing = bootstrap(free_port(), free_port(), rds_path=str(tmp_path / "none.json"))
    rc, out = validate_config(missing)
    assert rc != 0 and "does not exist" in out, out
