"""CDS clusters of type STRICT_DNS / LOGICAL_DNS and with active health
checks, from files: their resolution and checks start and stop with the
cluster, and a new version is not used before it is warm (Envoy's cluster
warming: the first DNS resolution, then the first round of health checks);
the version it replaces serves meanwhile, and it shows as a warming cluster
(cluster_manager.warming_clusters, /config_dump dynamic_warming_clusters)."""
import json
import time

from conftest import SLOW, Upstream, admin_get, free_port, stat, wait_for
from test_dns import Upstream as AddrUpstream, dns  # noqa: F401 (the fixture)
from test_xds_file import bootstrap, discovery, env, get, route_config, static_cluster, write_atomic  # noqa: F401

CL = "type.googleapis.com/envoy.config.cluster.v3.Cluster"
CARES = "type.googleapis.com/envoy.extensions.network.dns_resolver.cares.v3.CaresDnsResolverConfig"


def dns_cluster(name, host, port, dns_port, kind="STRICT_DNS"):
    return {"@type": CL, "name": name, "type": kind, "connect_timeout": "1s", "dns_refresh_rate": "1s",
            "dns_lookup_family": "V4_ONLY",
            "typed_dns_resolver_config": {"name": "envoy.network.dns_resolver.cares", "typed_config": {
                "@type": CARES, "resolvers": [{"socket_address": {"address": "127.0.0.1", "port_value": dns_port}}],
                "query_timeout_seconds": 1, "query_tries": 5}},
            "load_assignment": {"cluster_name": name, "endpoints": [{"lb_endpoints": [
                {"endpoint": {"address": {"socket_address": {"address": host, "port_value": port}}}}]}]}}


def checked(cluster, path="/", timeout="3s", interval="10s"):
    cluster = dict(cluster)
    cluster["health_checks"] = [{"timeout": timeout, "interval": interval, "unhealthy_threshold": 1,
                                 "healthy_threshold": 1, "http_health_check": {"path": path}}]
    return cluster


def warming(admin):
    dump = json.loads(admin_get(admin, "/config_dump"))
    cd = [c for c in dump["configs"] if c["@type"].endswith("ClustersConfigDump")][0]
    return ([c["cluster"]["name"] for c in cd.get("dynamic_warming_clusters", [])],
            [c["cluster"]["name"] for c in cd.get("dynamic_active_clusters", [])])


def test_dns_cluster_from_cds_warms_on_its_first_resolution(env, dns):
    d, upstream, sharp = env
    a = upstream("a")
    up = free_port()
    b = AddrUpstream("127.0.0.2", up, "b")
    try:
        rds, cds = str(d / "rds.json"), str(d / "cds.json")
        write_atomic(rds, discovery(1, route_config("dyn_routes", "svc")))
        write_atomic(cds, discovery(1, static_cluster("svc", a.port)))
        listen, admin = free_port(), free_port()
        p = sharp(bootstrap(listen, admin, rds_path=rds, cds_path=cds))
        p.wait_ready(admin)
        assert get(listen) == (200, "a")
        # the new version resolves svc.sharp.test, which does not answer yet
        dns.set("svc.sharp.test", a=["127.0.0.2"], mode="drop")
        write_atomic(cds, discovery(2, dns_cluster("svc", "svc.sharp.test", up, dns.port)))
        wait_for(lambda: stat(admin, "cluster_manager.warming_clusters") == 1, 5, "the warming cluster")
        assert warming(admin) == (["svc"], ["svc"])
        # the version it replaces serves meanwhile
        for _ in range(5):
            assert get(listen) == (200, "a")
        assert stat(admin, "cluster_manager.cluster_modified") == 1
        dns.set("svc.sharp.test", a=["127.0.0.2"])  # answers from the next try on
        wait_for(lambda: get(listen) == (200, "b"), 10, "the warmed DNS cluster")
        assert stat(admin, "cluster_manager.warming_clusters") == 0
        assert warming(admin) == ([], ["svc"])
        # resolution goes on: a new address is followed
        c = AddrUpstream("127.0.0.3", up, "c")
        try:
            dns.set("svc.sharp.test", a=["127.0.0.3"])
            wait_for(lambda: get(listen) == (200, "c"), 10, "the next answer")
            # removed: its resolution stops
            write_atomic(cds, discovery(3))
            wait_for(lambda: get(listen)[0] == 503, 5, "the removed cluster")
            time.sleep(0.2)
            before = dns.count("svc.sharp.test")
            time.sleep(2.5)
            assert dns.count("svc.sharp.test") == before
        finally:
            c.stop()
    finally:
        b.stop()


def test_dns_cluster_from_cds_at_startup(env, dns):
    d, upstream, sharp = env
    up = free_port()
    b = AddrUpstream("127.0.0.2", up, "b")
    try:
        dns.set("svc.sharp.test", a=["127.0.0.2"])
        rds, cds = str(d / "rds.json"), str(d / "cds.json")
        write_atomic(rds, discovery(1, route_config("dyn_routes", "svc")))
        write_atomic(cds, discovery(1, dns_cluster("svc", "svc.sharp.test", up, dns.port, kind="LOGICAL_DNS")))
        listen, admin = free_port(), free_port()
        p = sharp(bootstrap(listen, admin, rds_path=rds, cds_path=cds))
        p.wait_ready(admin)  # after the first resolution, as for the bootstrap's DNS clusters
        assert get(listen) == (200, "b")
    finally:
        b.stop()


def test_health_checked_cluster_from_cds_warms_on_its_first_round(env):
    d, upstream, sharp = env
    a, b = upstream("a"), upstream("b")
    rds, cds = str(d / "rds.json"), str(d / "cds.json")
    write_atomic(rds, discovery(1, route_config("dyn_routes", "svc")))
    write_atomic(cds, discovery(1, static_cluster("svc", a.port)))
    listen, admin = free_port(), free_port()
    p = sharp(bootstrap(listen, admin, rds_path=rds, cds_path=cds))
    p.wait_ready(admin)
    assert get(listen) == (200, "a")
    # the new version's first check takes 1.5 s: it is not used before
    write_atomic(cds, discovery(2, checked(static_cluster("svc", b.port), path="/?delay_ms=1500", interval="0.5s")))
    wait_for(lambda: stat(admin, "cluster_manager.warming_clusters") == 1, 5, "the warming cluster")
    t0 = time.time()
    seen = set()
    while time.time() - t0 < 10 * SLOW:
        r = get(listen)[1]
        if stat(admin, "cluster_manager.warming_clusters") != 1:
            break  # warm now: r may be either version
        seen.add(r)
    assert seen == {"a"}, seen
    wait_for(lambda: get(listen) == (200, "b"), 5, "the warmed cluster")
    assert time.time() - t0 >= 1.0
    assert stat(admin, "cluster.svc.health_check.success") >= 1
    assert stat(admin, "cluster.svc.membership_healthy") == 1
    # a version replaced before it is warm is never used; removing the
    # cluster stops its checks
    write_atomic(cds, discovery(3, checked(static_cluster("svc", a.port), path="/?delay_ms=3000", timeout="5s")))
    wait_for(lambda: stat(admin, "cluster_manager.warming_clusters") == 1, 5, "the second warming version")
    write_atomic(cds, discovery(4))
    wait_for(lambda: stat(admin, "cluster_manager.warming_clusters") == 0, 5, "the cancelled warming")
    wait_for(lambda: get(listen)[0] == 503, 5, "the removed cluster")
    assert warming(admin) == ([], [])
    time.sleep(0.5)
    attempts = stat(admin, "cluster.svc.health_check.attempt")
    time.sleep(3)  # the removed version checked every 2 s
    assert stat(admin, "cluster.svc.health_check.attempt") == attempts
