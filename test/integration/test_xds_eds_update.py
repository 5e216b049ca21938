"""An EDS update from a file applied to the hosts a cluster has: a host whose
address stays keeps its identity (here its outlier ejection, which a fresh
host would not have), a changed weight is applied, a removed host leaves the
cluster and a new one takes traffic within the update. The assignment goes
through the same read as a 1,000-endpoint one (the direct JSON loader), so
this also checks that what it builds is what the cluster applies."""
import time
from collections import Counter

from conftest import SLOW, Sharp, Upstream, admin_get, free_port, stat, upstream_admin, wait_for
from test_xds_file import bootstrap, cla, discovery, eds_cluster, get, route_config, write_atomic

P = "cluster.dyn.outlier_detection."


def endpoint_of(port, weight=None):
    e = {"endpoint": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": port}}}}
    if weight is not None:
        e["load_balancing_weight"] = weight
    return e


def assignment(version, *eps):
    c = cla("dyn")
    c["endpoints"] = [{"lb_endpoints": list(eps)}]
    return discovery(version, c)


def host_value(admin, port, key):
    prefix = f"dyn::127.0.0.1:{port}::{key}::"
    for line in admin_get(admin, "/clusters").splitlines():
        if line.startswith(prefix):
            return line[len(prefix):]
    return None


def test_eds_update_keeps_state_applies_changes_and_removes(procs, tmp_path):
    ups = {}
    for n in ("a", "b", "c", "d"):
        ups[n] = Upstream(n)
        procs.append(ups[n])
    a, b, c, d = (ups[n].port for n in "abcd")
    rds, cds, eds = (str(tmp_path / n) for n in ("rds.json", "cds.json", "eds.json"))
    cluster = eds_cluster("dyn", eds)
    cluster["lb_policy"] = "ROUND_ROBIN"
    # ejected for far longer than the test: still ejected after the updates
    # only if the host object (and its outlier state) was kept
    cluster["outlier_detection"] = {"consecutive_5xx": 3, "interval": "0.2s", "base_ejection_time": "300s",
                                    "max_ejection_percent": 50}
    write_atomic(rds, discovery(1, route_config("dyn_routes", "dyn")))
    write_atomic(cds, discovery(1, cluster))
    write_atomic(eds, assignment(1, endpoint_of(a), endpoint_of(b), endpoint_of(c)))
    listen, admin = free_port(), free_port()
    p = Sharp(bootstrap(listen, admin, rds_path=rds, cds_path=cds))
    procs.append(p)
    p.wait_ready(admin)
    seen = Counter(get(listen)[1] for _ in range(30))
    assert set(seen) == {"a", "b", "c"}, seen

    # b fails: three 503s in a row eject it
    upstream_admin(ups["b"], "/admin/fault?status=503")
    deadline = time.time() + 5 * SLOW
    while stat(admin, P + "ejections_enforced_consecutive_5xx") != 1:
        assert time.time() < deadline, "b was not ejected"
        for _ in range(3):
            get(listen)
    assert host_value(admin, b, "health_flags") == "/failed_outlier_check"
    assert host_value(admin, a, "weight") == "1"

    # the same addresses, a's weight changed: applied, b still ejected
    changes = stat(admin, "cluster.dyn.membership_change")
    write_atomic(eds, assignment(2, endpoint_of(a, weight=5), endpoint_of(b), endpoint_of(c)))
    wait_for(lambda: stat(admin, "cluster.dyn.update_success") == 2, 5 * SLOW, "EDS version 2")
    assert stat(admin, "cluster.dyn.membership_change") == changes + 1
    assert host_value(admin, a, "weight") == "5"
    assert host_value(admin, b, "health_flags") == "/failed_outlier_check"
    assert host_value(admin, b, "outlier_state") == "open"
    assert stat(admin, P + "ejections_active") == 1

    # c leaves, d comes: d takes traffic at once, c none, b still ejected
    write_atomic(eds, assignment(3, endpoint_of(a, weight=5), endpoint_of(b), endpoint_of(d)))
    wait_for(lambda: stat(admin, "cluster.dyn.update_success") == 3, 5 * SLOW, "EDS version 3")
    assert host_value(admin, c, "weight") is None, admin_get(admin, "/clusters")
    assert host_value(admin, d, "weight") == "1"
    assert host_value(admin, b, "health_flags") == "/failed_outlier_check"
    assert stat(admin, "cluster.dyn.membership_total") == 3
    res = [get(listen) for _ in range(36)]
    names = Counter(name for st, name in res if st == 200)
    assert all(st == 200 for st, _ in res), res
    assert set(names) == {"a", "d"}, names
    # weights 5 and 1 under round robin
    assert names["a"] > 2 * names["d"], names
