"""Hosts that leave an EDS cluster are freed once nothing uses them (no
host set lists them, no pool, retired or not, and no try has them), so a
cluster under pod churn does not keep every address it ever had; traffic
flowing through the churn loses nothing, and an address that comes back
after its host was freed gets a new one. Run under ASan too, which is what
catches a freed host still in use."""
import re
import time

import pytest

from conftest import SLOW, Sharp, Upstream, admin_get, free_port, stat, wait_for
from test_xds_file import Traffic, bootstrap, cla, discovery, eds_cluster, route_config, write_atomic


def endpoint_at(addr, port):
    return {"endpoint": {"address": {"socket_address": {"address": addr, "port_value": port}}}}


def assignment(version, ups):
    c = cla("dyn")
    c["endpoints"] = [{"lb_endpoints": [endpoint_at(u.addr, u.port) for u in ups]}]
    return discovery(version, c)


def freed(out):
    return sum(int(n) for n in re.findall(r"cluster 'dyn': (\d+) host\(s\) that left it freed", out))


def test_departed_hosts_are_freed_under_churn(procs, tmp_path):
    ups = []
    for i in range(3):  # on addresses of their own: each is a host of its own
        u = Upstream(f"u{i}", extra=("--address", f"127.0.0.{31 + i}"))
        u.addr = f"127.0.0.{31 + i}"
        procs.append(u)
        ups.append(u)
    rds, cds, eds = (str(tmp_path / n) for n in ("rds.json", "cds.json", "eds.json"))
    write_atomic(rds, discovery(1, route_config("dyn_routes", "dyn")))
    write_atomic(cds, discovery(1, eds_cluster("dyn", eds)))
    write_atomic(eds, assignment(1, ups[:2]))
    listen, admin = free_port(), free_port()
    p = Sharp(bootstrap(listen, admin, rds_path=rds, cds_path=cds),
              extra=("--component-log-level", "upstream:debug"))
    procs.append(p)
    p.wait_ready(admin)
    t = Traffic(listen, [(True, "/"), (True, "/"), (False, "/")]).start()
    try:
        # A,B -> B,C -> C,A -> ...: each host is away for two pushes, long
        # enough (the collection runs every second and wants two passes)
        for k in range(1, 7):
            time.sleep(1.5 * SLOW)
            write_atomic(eds, assignment(k + 1, [ups[k % 3], ups[(k + 1) % 3]]))
            wait_for(lambda: stat(admin, "cluster.dyn.update_success") == k + 1, 5 * SLOW, f"EDS push {k}")
        time.sleep(1.5 * SLOW)
    finally:
        t.stop()
    assert t.failed == 0, t.errors[:5]
    assert t.sent > 50
    wait_for(lambda: freed(p.output()) >= 4, 10 * SLOW, "departed hosts freed")
    # the cluster holds its two current hosts; the third is gone
    now = [ups[6 % 3], ups[7 % 3]]
    clusters = admin_get(admin, "/clusters")
    for u in ups:
        listed = f"dyn::{u.addr}:{u.port}::" in clusters
        assert listed == (u in now), (u.addr, clusters)
    assert stat(admin, "cluster.dyn.membership_total") == 2
