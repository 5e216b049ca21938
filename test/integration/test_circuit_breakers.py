"""Cluster circuit breakers: max_pending_requests / max_connections overflow
(503 UO with x-envoy-overloaded, without touching the upstream), the
circuit_breakers.* gauges with track_remaining, and max_requests holding
across two workers under wrk load."""
import re
import shutil
import subprocess
import threading
import time

import pytest

from conftest import PROTOS, Upstream, bootstrap_yaml, free_port, protos, run_sharp_config, stat, upstream_admin

H1 = PROTOS["h1"]


def upstream_stats(u):
    return upstream_admin(u, "/admin/stats")


def get(port, path, out, headers=None, proto=H1):
    out.append(proto.request(port, path, headers=headers, timeout=15))


# An HTTP/1 upstream connection carries one request at a time, so the second
# request waits (pending): the client side also runs over HTTP/2.
@protos("h1", "h2-down")
def test_pending_overflow_and_breaker_gauges(procs, proto):
    u = proto.upstream(procs, "slow")
    listen, admin = free_port(), free_port()
    cb = ("circuit_breakers:\n  thresholds:\n"
          "  - { priority: DEFAULT, max_connections: 1, max_pending_requests: 1, track_remaining: true }\n")
    run_sharp_config(procs, bootstrap_yaml(listen, admin, {"b": [u.port]}, cluster_extra=cb + proto.cluster), admin, concurrency=1)
    pre = "cluster.b.circuit_breakers.default."
    assert stat(admin, pre + "cx_open") == 0
    assert stat(admin, pre + "remaining_cx") == 1
    assert stat(admin, pre + "remaining_pending") == 1
    assert stat(admin, pre + "remaining_rq") == 1024
    assert stat(admin, pre + "remaining_retries") == 3
    assert stat(admin, "cluster.b.circuit_breakers.high.rq_open") == 0

    out = []
    first = threading.Thread(target=get, args=(listen, "/?delay_ms=800", out), kwargs={"proto": proto})
    first.start()
    time.sleep(0.2)  # the first request holds the only connection
    second = threading.Thread(target=get, args=(listen, "/?delay_ms=10", out), kwargs={"proto": proto})
    second.start()
    time.sleep(0.2)  # the second waits for it: the pending breaker is full
    assert stat(admin, pre + "cx_open") == 1
    assert stat(admin, pre + "rq_pending_open") == 1
    assert stat(admin, pre + "remaining_cx") == 0
    assert stat(admin, pre + "remaining_pending") == 0
    t0 = time.time()
    over = []
    for _ in range(3):
        get(listen, "/", over, proto=proto)
    assert time.time() - t0 < 0.5  # overflow is answered at once
    for st, h, body in over:
        assert st == 503 and h.get("x-envoy-overloaded") == "true"
        assert body == b"upstream connect error or disconnect/reset before headers. reset reason: overflow"
    first.join(10)
    second.join(10)
    assert sorted(s for s, _, _ in out) == [200, 200]
    assert stat(admin, "cluster.b.upstream_rq_pending_overflow") == 3
    assert stat(admin, "cluster.b.upstream_cx_overflow") >= 1
    assert stat(admin, "cluster.b.upstream_cx_total") == 1
    assert upstream_stats(u)["requests"] == 2 + 1  # the two admitted (and this query)
    assert stat(admin, pre + "cx_open") == 1  # the keep-alive connection stays
    assert stat(admin, pre + "rq_pending_open") == 0


@pytest.mark.skipif(shutil.which("wrk") is None, reason="wrk not installed")
def test_max_requests_holds_across_workers_under_wrk(procs):
    u = Upstream(name="svc")
    procs.append(u)
    listen, admin = free_port(), free_port()
    cb = "circuit_breakers:\n  thresholds:\n  - { priority: DEFAULT, max_requests: 10 }\n"
    run_sharp_config(procs, bootstrap_yaml(listen, admin, {"b": [u.port]}, cluster_extra=cb), admin, concurrency=2)
    wrk = subprocess.Popen(["wrk", "-t2", "-c64", "-d3s", f"http://127.0.0.1:{listen}/work?ms=20"],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    # The service's peak is read while the load runs: when wrk closes its
    # connections at the end, the proxy gives back the slots of the requests
    # it cancels while the service still finishes them (it sees a FIN, not a
    # reset), and the next admitted requests briefly overlap them.
    time.sleep(2.0)
    ups = upstream_stats(u)
    out, err = wrk.communicate(timeout=30)
    assert wrk.returncode == 0, err
    total = int(re.search(r"(\d+) requests in", out).group(1))
    m = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    non2xx = int(m.group(1)) if m else 0
    assert ups["work_peak"] <= 10, ups  # never more than max_requests at the service
    assert ups["work_peak"] >= 8, ups   # and the limit was used
    over = stat(admin, "cluster.b.upstream_rq_pending_overflow")
    assert non2xx > 0 and over >= non2xx  # wrk counts the 503s it saw before the run ended
    assert stat(admin, "cluster.b.upstream_rq_200") + over >= total - 64
    # both workers served traffic
    assert stat(admin, "cluster.b.upstream_rq_total") >= 100


@protos("h1", "h2-both")
def test_high_priority_route_uses_high_thresholds_and_its_own_pools(procs, proto):
    """RouteAction.priority HIGH: its requests count in the HIGH thresholds
    (circuit_breakers.high.*), so a full DEFAULT breaker does not stop them,
    and they use their own connections, as Envoy keys pools by priority."""
    u = proto.upstream(procs, "svc")
    listen, admin = free_port(), free_port()
    cb = ("circuit_breakers:\n  thresholds:\n"
          "  - { priority: DEFAULT, max_requests: 1, track_remaining: true }\n"
          "  - { priority: HIGH, max_requests: 2, max_retries: 7, track_remaining: true }\n"
          "  - { priority: HIGH, max_requests: 50 }\n")  # only the first entry of a priority counts
    routes = ('- match: { prefix: "/high" }\n  route: { cluster: b, priority: HIGH }\n'
              '- match: { prefix: "/" }\n  route: { cluster: b }\n')
    run_sharp_config(procs, bootstrap_yaml(listen, admin, {"b": [u.port]}, routes=routes, cluster_extra=cb + proto.cluster),
                     admin, concurrency=1)
    d, hi = "cluster.b.circuit_breakers.default.", "cluster.b.circuit_breakers.high."
    assert stat(admin, d + "remaining_rq") == 1
    assert stat(admin, hi + "remaining_rq") == 2
    assert stat(admin, hi + "remaining_retries") == 7

    slow = []
    t = threading.Thread(target=get, args=(listen, "/slow?delay_ms=1000", slow), kwargs={"proto": proto})
    t.start()
    time.sleep(0.3)  # the DEFAULT breaker is full
    assert stat(admin, d + "rq_open") == 1 and stat(admin, d + "remaining_rq") == 0
    assert stat(admin, hi + "rq_open") == 0
    over = []
    get(listen, "/", over, proto=proto)
    assert over[0][0] == 503 and over[0][1].get("x-envoy-overloaded") == "true"
    ok = []
    get(listen, "/high/x", ok, proto=proto)
    assert ok[0][0] == 200  # HIGH has its own thresholds

    # two slow HIGH requests fill the HIGH breaker; a third overflows
    hs = [threading.Thread(target=get, args=(listen, "/high?delay_ms=1000", slow), kwargs={"proto": proto}) for _ in range(2)]
    for h in hs:
        h.start()
    time.sleep(0.3)
    assert stat(admin, hi + "rq_open") == 1 and stat(admin, hi + "remaining_rq") == 0
    get(listen, "/high/y", over, proto=proto)
    assert over[1][0] == 503
    t.join(10)
    for h in hs:
        h.join(10)
    assert sorted(s for s, _, _ in slow) == [200, 200, 200]
    assert stat(admin, d + "rq_open") == 0 and stat(admin, hi + "rq_open") == 0
    assert stat(admin, hi + "remaining_rq") == 2
    assert stat(admin, "cluster.b.upstream_rq_pending_overflow") == 2

    # separate pools: a DEFAULT and a HIGH request never share a connection
    seq = []
    for path in ("/a", "/high/a", "/b", "/high/b"):
        get(listen, path, seq, proto=proto)
    cx = [h["x-upstream-connection"] for _, h, _ in seq]
    # the DEFAULT pool has the one connection the DEFAULT requests used; the
    # HIGH requests take connections of the HIGH pool
    assert cx[0] == cx[2] and cx[0] not in (cx[1], cx[3]), cx
    clusters = admin_get_text(admin, "/clusters")
    assert "b::high_priority::max_requests::2" in clusters
    assert "b::default_priority::max_requests::1" in clusters


def admin_get_text(port, path):
    import urllib.request
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as r:
        return r.read().decode()


@protos("h1", "h2-down")  # max_connections / pending: an HTTP/1 upstream, as above
def test_high_priority_connection_pending_and_retry_thresholds(procs, proto):
    """Each priority has its own max_connections / max_pending_requests and
    max_retries: a DEFAULT pool at its connection and pending limits does
    not hold back a HIGH request, and HIGH's max_retries: 0 stops the HIGH
    route's retries while the DEFAULT route retries."""
    u = proto.upstream(procs, "svc")
    listen, admin = free_port(), free_port()
    cb = ("circuit_breakers:\n  thresholds:\n"
          "  - { priority: HIGH, max_retries: 0 }\n"
          "  - { priority: DEFAULT, max_connections: 1, max_pending_requests: 1 }\n")
    retry = "retry_policy: { retry_on: 5xx, num_retries: 1 }"
    routes = (f'- match: {{ prefix: "/", headers: [{{ name: x-prio, string_match: {{ exact: high }} }}] }}\n'
              f'  route: {{ cluster: b, priority: HIGH, {retry} }}\n'
              f'- match: {{ prefix: "/" }}\n  route: {{ cluster: b, {retry} }}\n')
    run_sharp_config(procs, bootstrap_yaml(listen, admin, {"b": [u.port]}, routes=routes, cluster_extra=cb + proto.cluster),
                     admin, concurrency=1)
    d, hi = "cluster.b.circuit_breakers.default.", "cluster.b.circuit_breakers.high."
    out = []
    first = threading.Thread(target=get, args=(listen, "/a?delay_ms=1000", out), kwargs={"proto": proto})
    first.start()
    time.sleep(0.2)
    second = threading.Thread(target=get, args=(listen, "/b?delay_ms=10", out), kwargs={"proto": proto})
    second.start()
    time.sleep(0.2)
    assert stat(admin, d + "cx_open") == 1 and stat(admin, d + "rq_pending_open") == 1
    assert stat(admin, hi + "cx_open") == 0 and stat(admin, hi + "rq_pending_open") == 0
    over = []
    get(listen, "/c", over, proto=proto)
    assert over[0][0] == 503  # DEFAULT: pending breaker full
    t0 = time.time()
    get(listen, "/now", over, headers={"x-prio": "high"}, proto=proto)
    assert over[1][0] == 200 and time.time() - t0 < 0.5  # HIGH: its own connection at once
    first.join(10)
    second.join(10)
    assert sorted(s for s, _, _ in out) == [200, 200]
    assert stat(admin, "cluster.b.upstream_cx_total") == 2

    # retries: HIGH has no retry budget left, DEFAULT retries once
    res = []
    get(listen, "/status/503", res, headers={"x-prio": "high"}, proto=proto)
    assert res[0][0] == 503
    assert stat(admin, "cluster.b.upstream_rq_retry_overflow") == 1
    assert stat(admin, "cluster.b.upstream_rq_retry") == 0
    get(listen, "/status/503", res, proto=proto)
    assert res[1][0] == 503
    assert stat(admin, "cluster.b.upstream_rq_retry") == 1


def test_undefined_priority_is_refused(tmp_path):
    """Both priority fields take only RoutingPriority's values (PGV defined_only)."""
    import os
    from conftest import SHARP
    for routes, extra, where in (
            ('- match: { prefix: "/" }\n  route: { cluster: b, priority: 7 }\n', "", "routes[0].route.priority"),
            (None, "circuit_breakers: { thresholds: [{ priority: 9 }] }\n", "thresholds[0].priority")):
        p = tmp_path / "c.yaml"
        p.write_text(bootstrap_yaml(10000, 9901, {"b": [8080]}, routes=routes, cluster_extra=extra))
        r = subprocess.run([SHARP, "--mode", "validate", "-c", str(p)], capture_output=True, text=True, timeout=20)
        assert r.returncode == 1
        assert where in r.stdout + r.stderr and "not a defined value of envoy.config.core.v3.RoutingPriority" in (
            r.stdout + r.stderr)
