"""A worker adopting an EDS update keeps what it has for the hosts that
stay: their connection pools move to the hosts' new positions (the upstream
connections are reused, none is opened for them), a new host gets a pool,
and the pools of the hosts that left retire (their idle connections close).
Several updates in a row, faster than the worker's wake-ups may be, end in
the same state. One worker, so the counts are exact."""
from collections import Counter

from conftest import SLOW, Sharp, Upstream, admin_get, free_port, stat, wait_for
from test_xds_eds_update import assignment, endpoint_of
from test_xds_file import bootstrap, discovery, eds_cluster, get, route_config, write_atomic

C = "cluster.dyn."


def test_eds_update_moves_pools_of_kept_hosts(procs, tmp_path):
    ups = {}
    for n in ("a", "b", "c"):
        ups[n] = Upstream(n)
        procs.append(ups[n])
    a, b, c = (ups[n].port for n in "abc")
    rds, cds, eds = (str(tmp_path / n) for n in ("rds.json", "cds.json", "eds.json"))
    cluster = eds_cluster("dyn", eds)
    cluster["lb_policy"] = "ROUND_ROBIN"
    write_atomic(rds, discovery(1, route_config("dyn_routes", "dyn")))
    write_atomic(cds, discovery(1, cluster))
    write_atomic(eds, assignment(1, endpoint_of(a), endpoint_of(b)))
    listen, admin = free_port(), free_port()
    p = Sharp(bootstrap(listen, admin, rds_path=rds, cds_path=cds), concurrency=1)
    procs.append(p)
    p.wait_ready(admin)

    def spread(n):
        res = [get(listen) for _ in range(n)]
        assert all(st == 200 for st, _ in res), res
        return Counter(name for _, name in res)

    assert set(spread(10)) == {"a", "b"}
    assert stat(admin, C + "upstream_cx_total") == 2

    # a new host first, the two others swapped: a and b keep their
    # connections, c gets one
    write_atomic(eds, assignment(2, endpoint_of(c), endpoint_of(b), endpoint_of(a)))
    wait_for(lambda: stat(admin, C + "update_success") == 2, 5 * SLOW, "EDS version 2")
    wait_for(lambda: set(spread(6)) == {"a", "b", "c"}, 5 * SLOW, "c taking traffic")
    assert stat(admin, C + "upstream_cx_total") == 3
    assert stat(admin, C + "upstream_cx_active") == 3

    # a and c leave: their pools retire and close their idle connections;
    # b's stays
    write_atomic(eds, assignment(3, endpoint_of(b)))
    wait_for(lambda: stat(admin, C + "update_success") == 3, 5 * SLOW, "EDS version 3")
    wait_for(lambda: stat(admin, C + "upstream_cx_active") == 1, 5 * SLOW, "the retired pools' connections closed")
    assert set(spread(6)) == {"b"}
    assert stat(admin, C + "upstream_cx_total") == 3

    # updates in a row (the file watch may coalesce some, the worker skip
    # some): the last one counts, and b's connection is still the one it had
    for v in range(4, 9):
        eps = [endpoint_of(b)] + ([endpoint_of(a)] if v % 2 else [endpoint_of(c)])
        write_atomic(eds, assignment(v, *eps))
    wait_for(lambda: set(spread(6)) == {"b", "c"}, 5 * SLOW, "the last update applied")
    assert set(spread(10)) == {"b", "c"}
    assert stat(admin, C + "upstream_cx_active") == 2
    # b's one connection since the start; c got one when it came back (and
    # a may have got one too if a request came between two of the updates)
    assert host_stat(admin, b, "cx_total") == 1
    assert stat(admin, C + "upstream_cx_total") in (4, 5)


def host_stat(admin, port, name):
    prefix = f"dyn::127.0.0.1:{port}::{name}::"
    lines = [ln for ln in admin_get(admin, "/clusters").splitlines() if ln.startswith(prefix)]
    assert len(lines) == 1, lines
    return int(lines[0][len(prefix):])
