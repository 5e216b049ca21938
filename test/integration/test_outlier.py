"""Outlier detection end to end: three test upstreams behind SHARP (ROUND_ROBIN),
consecutive_5xx 3, interval 200 ms, base_ejection_time 1 s.

max_ejection_percent is 50 here: Envoy counts the host about to be ejected
((active + 1) / hosts <= max_ejection_percent), so with its default of 10% a
three-host cluster never ejects anything (ejections_overflow instead).

Which tests need the router's outlier calls (filters/router/router.c calling
sharp_outlier_put_http on every upstream response head, and
sharp_outlier_put_local(..., SHARP_OUTLIER_LOCAL_CONNECT_FAILED) on a reset
before the response head): test_consecutive_5xx_eject_half_open_close,
test_success_rate_ejection_and_clusters_values and
test_reset_before_headers_ejects. The others only need the pool's own calls
(connect failures) or no traffic at all."""
import json
import time
from collections import Counter

from conftest import (PROTOS, SLOW, Upstream, admin_get, bootstrap_yaml, free_port, protos, run_sharp_config, stat,
                      upstream_admin, wait_for)

H1 = PROTOS["h1"]

OD = """\
outlier_detection:
  consecutive_5xx: 3
  interval: 0.2s
  base_ejection_time: 1s
  max_ejection_percent: 50
"""

P = "cluster.backend.outlier_detection."


def get(port, path="/", proto=H1):
    """One request on its own connection: (status, x-upstream-name)."""
    st, h, _ = proto.request(port, path, timeout=5)
    return st, h.get("x-upstream-name")


def fault(upstream, query=""):
    return upstream_admin(upstream, "/admin/fault" + query)


def host_value(admin, port, key):
    prefix = f"backend::127.0.0.1:{port}::{key}::"
    for line in admin_get(admin, "/clusters").splitlines():
        if line.startswith(prefix):
            return line[len(prefix):]
    return None


def drive_until(listen, admin, name, value, timeout=5, what="the ejection", proto=H1):
    """Sends requests in threes until stat `name` reaches `value`."""
    deadline = time.time() + timeout * SLOW
    while stat(admin, name) != value:
        assert time.time() < deadline, f"timed out waiting for {what}"
        for _ in range(3):
            get(listen, proto=proto)


def start(procs, ports, extra=OD, concurrency=2, proto=H1):
    listen, admin = free_port(), free_port()
    y = bootstrap_yaml(listen, admin, {"backend": ports}, cluster_extra="lb_policy: ROUND_ROBIN\n" + extra + proto.cluster)
    run_sharp_config(procs, y, admin, concurrency=concurrency)
    return listen, admin


def three_upstreams(procs, proto=H1):
    return [proto.upstream(procs, n) for n in ("a", "b", "c")]


def test_clusters_output_without_traffic(procs):
    a, b, c = three_upstreams(procs)
    listen, admin = start(procs, [a.port, b.port, c.port])
    text = admin_get(admin, "/clusters")
    for line in ("backend::outlier::success_rate_average::-1",
                 "backend::outlier::success_rate_ejection_threshold::-1",
                 "backend::outlier::local_origin_success_rate_average::-1",
                 "backend::outlier::local_origin_success_rate_ejection_threshold::-1",
                 f"backend::127.0.0.1:{b.port}::success_rate::-1",
                 f"backend::127.0.0.1:{b.port}::local_origin_success_rate::-1",
                 f"backend::127.0.0.1:{b.port}::outlier_state::closed",
                 f"backend::127.0.0.1:{b.port}::health_flags::healthy"):
        assert line in text.splitlines(), (line, text)
    # Envoy's order: the outlier lines follow observability_name
    lines = text.splitlines()
    assert lines.index("backend::outlier::success_rate_average::-1") == \
        lines.index("backend::observability_name::backend") + 1
    js = json.loads(admin_get(admin, "/clusters?format=json"))
    cs = js["cluster_statuses"][0]
    assert "success_rate_ejection_threshold" not in cs
    for hs in cs["host_statuses"]:
        assert hs["outlier_state"] == "closed"
        assert "success_rate" not in hs
    assert stat(admin, P + "ejections_active") == 0
    assert stat(admin, P + "ejections_enforced_total") == 0
    # a cluster without outlier_detection has no outlier lines or stats
    listen2, admin2 = free_port(), free_port()
    run_sharp_config(procs, bootstrap_yaml(listen2, admin2, {"plain": [a.port]}), admin2)
    text2 = admin_get(admin2, "/clusters")
    assert "::outlier::" not in text2 and "outlier_state" not in text2
    assert f"plain::127.0.0.1:{a.port}::success_rate::-1" in text2
    assert stat(admin2, "cluster.plain.outlier_detection.ejections_active") is None


def test_connect_failures_eject(procs):
    """Pool-side results only: a dead endpoint's connect failures count as
    503s (split_external_local_origin_errors is off) and eject it."""
    a, c = Upstream("a"), Upstream("c")
    procs += [a, c]
    dead = free_port()  # nothing listens there
    listen, admin = start(procs, [a.port, dead, c.port], concurrency=1)
    statuses = Counter()
    for _ in range(30):
        st, _ = get(listen)
        statuses[st] += 1
        if stat(admin, P + "ejections_enforced_consecutive_5xx") == 1:
            break
    assert stat(admin, P + "ejections_enforced_consecutive_5xx") == 1, statuses
    assert statuses[503] == 3, statuses
    assert host_value(admin, dead, "health_flags") == "/failed_outlier_check"
    assert host_value(admin, dead, "outlier_state") == "open"
    assert stat(admin, P + "ejections_active") == 1
    assert stat(admin, "cluster.backend.membership_healthy") == 2
    t0 = time.time()
    seen = Counter(get(listen)[1] for _ in range(20))
    if time.time() - t0 < 0.8:  # still inside the 1 s ejection
        assert set(seen) == {"a", "c"}, seen


@protos("h1", "h2-both")
def test_consecutive_5xx_eject_half_open_close(procs, proto):
    """Needs the router's sharp_outlier_put_http on every response head."""
    a, b, c = three_upstreams(procs, proto)
    listen, admin = start(procs, [a.port, b.port, c.port], proto=proto)
    seen = Counter(get(listen, proto=proto)[1] for _ in range(30))
    assert set(seen) == {"a", "b", "c"}, seen

    # b answers 503 from now on: three in a row eject it
    fault(b, "?status=503")
    got503 = 0
    deadline = time.time() + 5 * SLOW
    while stat(admin, P + "ejections_enforced_consecutive_5xx") != 1:
        assert time.time() < deadline, "b was not ejected"
        for _ in range(3):
            got503 += get(listen, proto=proto)[0] == 503
    t_ejected = time.time()
    assert 3 <= got503 <= 6, got503
    assert stat(admin, P + "ejections_detected_consecutive_5xx") == 1
    assert stat(admin, P + "ejections_enforced_total") == 1
    assert stat(admin, P + "ejections_total") == 1
    assert stat(admin, P + "ejections_consecutive_5xx") == 1
    assert stat(admin, P + "ejections_overflow") == 0
    assert stat(admin, P + "ejections_active") == 1
    assert host_value(admin, b.port, "health_flags") == "/failed_outlier_check"
    assert host_value(admin, b.port, "outlier_state") == "open"
    # ejected: no traffic to b
    res = [get(listen, proto=proto) for _ in range(20)]
    if time.time() - t_ejected < 0.8:
        assert all(st == 200 and name in ("a", "c") for st, name in res), res

    # with no traffic b turns half-open once its ejection time is over
    wait_for(lambda: host_value(admin, b.port, "outlier_state") == "half_open", 3, "b half-open")
    assert host_value(admin, b.port, "health_flags") == "healthy"
    assert stat(admin, P + "ejections_active") == 0
    wait_for(lambda: stat(admin, P + "half_open_active") == 1, 1, "half_open_active gauge")
    # still failing: the one probe gets a 503 and b is ejected again, longer
    res = [get(listen, proto=proto) for _ in range(9)]
    assert 1 <= sum(st == 503 for st, _ in res) <= 2, res
    wait_for(lambda: stat(admin, P + "ejections_enforced_consecutive_5xx") == 2, 2, "re-ejection")
    assert host_value(admin, b.port, "outlier_state") == "open"
    assert stat(admin, P + "ejections_active") == 1
    t_reejected = time.time()

    # b recovers; after its (now 2 s) ejection it is half-open, then the
    # first successful probe closes it and it gets its share again
    fault(b)
    wait_for(lambda: host_value(admin, b.port, "outlier_state") == "half_open", 4, "b half-open again")
    assert time.time() - t_reejected > 1.5
    seen = Counter()
    for _ in range(30):
        st, name = get(listen, proto=proto)
        assert st == 200
        seen[name] += 1
    assert seen["b"] >= 5, seen
    assert host_value(admin, b.port, "outlier_state") == "closed"
    assert host_value(admin, b.port, "health_flags") == "healthy"
    wait_for(lambda: stat(admin, P + "half_open_active") == 0, 1, "half_open_active back to 0")
    assert stat(admin, P + "ejections_active") == 0
    assert stat(admin, P + "ejections_enforced_total") == 2


@protos("h1", "h2-both")
def test_success_rate_ejection_and_clusters_values(procs, proto):
    """Needs the router's sharp_outlier_put_http. b answers 500 to all:
    rates 100, 0, 100: mean 66.67, stdev 47.14, threshold (factor 1.0)
    19.53, so b is a success-rate outlier."""
    a, b, c = three_upstreams(procs, proto)
    extra = ("outlier_detection:\n  consecutive_5xx: 100000\n  interval: 1s\n  base_ejection_time: 30s\n"
             "  max_ejection_percent: 50\n  success_rate_minimum_hosts: 3\n  success_rate_request_volume: 5\n"
             "  success_rate_stdev_factor: 1000\n")
    listen, admin = start(procs, [a.port, b.port, c.port], extra=extra, proto=proto)
    fault(b, "?status=500")
    deadline = time.time() + 6 * SLOW
    while stat(admin, P + "ejections_enforced_success_rate") != 1:
        assert time.time() < deadline, "b was not ejected"
        for _ in range(30):
            get(listen, proto=proto)
    text = admin_get(admin, "/clusters")
    lines = text.splitlines()
    assert "backend::outlier::success_rate_average::66.6667" in lines, text
    assert "backend::outlier::success_rate_ejection_threshold::19.5262" in lines, text
    assert f"backend::127.0.0.1:{a.port}::success_rate::100" in lines, text
    assert f"backend::127.0.0.1:{b.port}::success_rate::0" in lines, text
    assert host_value(admin, b.port, "health_flags") == "/failed_outlier_check"
    js = json.loads(admin_get(admin, "/clusters?format=json"))["cluster_statuses"][0]
    if "success_rate_ejection_threshold" in js:  # until the next interval
        assert abs(js["success_rate_ejection_threshold"]["value"] - 19.526) < 0.01
    assert stat(admin, P + "ejections_detected_success_rate") == 1
    assert stat(admin, P + "ejections_success_rate") == 1
    assert stat(admin, P + "ejections_total") == 1
    assert stat(admin, P + "ejections_detected_consecutive_5xx") == 0
    fault(b)


@protos("h1", "h2-both")
def test_reset_before_headers_ejects(procs, proto):
    """Needs the router's sharp_outlier_put_local(CONNECT_FAILED) on a reset
    before the response head (counted as a 503 without split)."""
    a, b, c = three_upstreams(procs, proto)
    listen, admin = start(procs, [a.port, b.port, c.port], proto=proto)
    fault(b, "?reset=1")
    drive_until(listen, admin, P + "ejections_enforced_consecutive_5xx", 1, proto=proto)
    assert host_value(admin, b.port, "outlier_state") == "open"
    fault(b)


def test_config_errors(procs):
    import subprocess
    import tempfile
    from conftest import SHARP
    for extra, path, msg in (
        ("outlier_detection: { max_ejection_percent: 101 }\n",
         "static_resources.clusters[0].outlier_detection.max_ejection_percent", "must be at most 100"),
        ("outlier_detection: { enforcing_consecutive_5xx: 200 }\n",
         "static_resources.clusters[0].outlier_detection.enforcing_consecutive_5xx", "must be at most 100"),
        ("outlier_detection: { interval: 0s }\n",
         "static_resources.clusters[0].outlier_detection.interval", "must be greater than 0s"),
        ("outlier_detection: { base_ejection_time: 60s, max_ejection_time: 10s }\n",
         "static_resources.clusters[0].outlier_detection.max_ejection_time",
         "outlier detector's max_ejection_time cannot be smaller than base_ejection_time"),
    ):
        d = tempfile.mkdtemp()
        p = d + "/c.yaml"
        with open(p, "w") as f:
            f.write(bootstrap_yaml(10000, 9901, {"backend": [8080]}, cluster_extra=extra))
        r = subprocess.run([SHARP, "--mode", "validate", "-c", p], capture_output=True, timeout=20)
        out = (r.stdout + r.stderr).decode()
        assert r.returncode == 1, out
        assert f"{path}: {msg}" in out, out


def event_log_bootstrap(path, ports, extra=OD):
    listen, admin = free_port(), free_port()
    y = bootstrap_yaml(listen, admin, {"backend": ports}, cluster_extra="lb_policy: ROUND_ROBIN\n" + extra)
    return listen, admin, f"cluster_manager:\n  outlier_detection:\n    event_log_path: {path}\n" + y


def read_events(path):
    try:
        with open(path) as f:
            return [json.loads(l) for l in f.read().splitlines()]
    except FileNotFoundError:
        return []


def test_outlier_event_log(procs, tmp_path):
    """cluster_manager.outlier_detection.event_log_path: each ejection and
    un-ejection is one JSON OutlierDetectionEvent line, with Envoy's field
    names; SIGUSR1 reopens the file after logrotate's mv."""
    import os
    import re
    import signal
    a, b, c = three_upstreams(procs)
    log = str(tmp_path / "outlier.log")
    listen, admin, y = event_log_bootstrap(log, [a.port, b.port, c.port])
    s = run_sharp_config(procs, y, admin)
    assert read_events(log) == []
    fault(b, "?status=503")
    drive_until(listen, admin, P + "ejections_enforced_consecutive_5xx", 1)
    ev = wait_for(lambda: read_events(log), 2, "the ejection event")
    assert len(ev) == 1, ev
    e = ev[0]
    assert e["type"] == "CONSECUTIVE_5XX" and e["action"] == "EJECT" and e["enforced"] is True, e
    assert e["cluster_name"] == "backend" and e["upstream_url"] == f"127.0.0.1:{b.port}", e
    assert e["num_ejections"] == 1 and e["eject_consecutive_event"] == {}, e
    assert "secs_since_last_action" not in e, e  # never un-ejected before
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{3}|\.\d{6}|\.\d{9})?Z", e["timestamp"]), e
    # after base_ejection_time the host is un-ejected (half-open): one UNEJECT line
    ev = wait_for(lambda: (lambda v: v if len(v) >= 2 else None)(read_events(log)), 4, "the un-ejection event")
    u = ev[1]
    assert u["action"] == "UNEJECT" and u["upstream_url"] == f"127.0.0.1:{b.port}", u
    assert u["type"] == "CONSECUTIVE_5XX" and u["num_ejections"] == 1 and u["secs_since_last_action"] == "1", u
    assert "eject_consecutive_event" not in u, u

    # logrotate: mv, SIGUSR1, and the next event goes to a new file
    os.rename(log, log + ".1")
    s.p.send_signal(signal.SIGUSR1)
    time.sleep(0.3 * SLOW)
    for _ in range(9):  # the half-open probe fails: ejected again
        get(listen)
    ev = wait_for(lambda: read_events(log), 3, "the re-ejection event in the new file")
    assert ev[0]["action"] == "EJECT" and ev[0]["num_ejections"] == 2, ev
    assert ev[0]["secs_since_last_action"] in ("0", "1"), ev
    assert len(read_events(log + ".1")) == 2
    fault(b)


def test_outlier_event_log_detected_not_enforced(procs, tmp_path):
    """enforcing_consecutive_5xx 0: the ejection is detected, logged with
    enforced false, and the host keeps its traffic."""
    a, b = Upstream("a"), Upstream("b")
    procs += [a, b]
    log = str(tmp_path / "outlier.log")
    listen, admin, y = event_log_bootstrap(log, [a.port, b.port], extra=OD + "  enforcing_consecutive_5xx: 0\n")
    run_sharp_config(procs, y, admin)
    fault(b, "?status=503")
    drive_until(listen, admin, P + "ejections_detected_consecutive_5xx", 1, what="the detection")
    ev = wait_for(lambda: read_events(log), 2, "the detection event")
    assert ev[0]["action"] == "EJECT" and ev[0]["enforced"] is False and ev[0]["num_ejections"] == 0, ev
    assert stat(admin, P + "ejections_enforced_total") == 0
    assert host_value(admin, b.port, "health_flags") == "healthy"
    fault(b)


def test_outlier_event_log_path_errors(tmp_path):
    import subprocess
    from conftest import SHARP
    _, _, y = event_log_bootstrap(str(tmp_path / "no" / "such" / "dir.log"), [8080])
    p = tmp_path / "c.yaml"
    p.write_text(y)
    r = subprocess.run([SHARP, "--mode", "validate", "-c", str(p)], capture_output=True, timeout=20)
    out = (r.stdout + r.stderr).decode()
    assert r.returncode == 1 and "cluster_manager.outlier_detection.event_log_path" in out, out
    # the cluster manager's other field, local_cluster_name, must name a static cluster
    p.write_text("cluster_manager: { local_cluster_name: nope }\n" + y.split("\n", 3)[3])
    r = subprocess.run([SHARP, "--mode", "validate", "-c", str(p)], capture_output=True, timeout=20)
    out = (r.stdout + r.stderr).decode()
    assert r.returncode == 1 and "local cluster 'nope' must be defined" in out, out
    assert not (tmp_path / "no").exists()
