"""The latency outlier monitor and the hosts' diagnosis, end to end on
loopback: three test upstreams behind SHARP (ROUND_ROBIN), requests to the
upstreams' /work endpoint, whose service time each upstream sets on its own
(/admin/service-time?ms=T; unlimited slots unless a test limits them), so
one host can answer slowly while the others stay fast.

What the operator sees is checked where the operator sees it: /clusters
(text and JSON), the stats, SHARP's log (the JSON diagnosis lines) and the
access log's %UPSTREAM_HOST_DIAGNOSIS%."""
import json
import os
import re
import subprocess
import tempfile
import time

import pytest

from conftest import (SHARP, SLOW, Sharp, Upstream, admin_get, bootstrap_yaml, file_access_log, free_port, stat,
                      upstream_admin, wait_for)
from test_kernel_signals import Load as KernelLoad

LATENCY = """\
lb_policy: ROUND_ROBIN
outlier_detection:
  interval: 1s
  base_ejection_time: 3s
  max_ejection_percent: 50
  monitors:
  - name: sharp.outlier_detection_monitors.latency
    typed_config:
      "@type": type.googleapis.com/sharp.extensions.outlier_detection_monitors.latency.v1.LatencyOutlier
      percentile: 95
      factor: 3
      min_latency: 0.02s
      request_volume: 15
      consecutive_intervals: 2
"""

P = "cluster.backend.outlier_detection."


def Load(port, path="/work", rate=120, threads=12):
    """A steady, paced request rate on keep-alive connections from this
    process, counting the answers per upstream name."""
    return KernelLoad(None, path, rate, threads, port=port)


def service_time(u, ms, slots=None):
    q = f"/admin/service-time?ms={ms}" + (f"&slots={slots}" if slots is not None else "")
    return upstream_admin(u, q)


def host_line(admin, port, key):
    prefix = f"backend::127.0.0.1:{port}::{key}::"
    for line in admin_get(admin, "/clusters").splitlines():
        if line.startswith(prefix):
            return line[len(prefix):]
    return None


def diagnosis_events(out):
    """SHARP's JSON diagnosis log lines, parsed."""
    ev = []
    for line in out.splitlines():
        i = line.find('{"event":"upstream_host_diagnosis"')
        if i >= 0:
            ev.append(json.loads(line[i:]))
    return ev


def start(procs, ports, cluster_extra=LATENCY, hcm_extra="", extra=()):
    listen, admin = free_port(), free_port()
    y = bootstrap_yaml(listen, admin, {"backend": ports}, cluster_extra=cluster_extra, hcm_extra=hcm_extra)
    s = Sharp(y, extra=extra)
    procs.append(s)
    s.wait_ready(admin)
    return s, listen, admin


def three(procs):
    ups = [Upstream(n) for n in ("a", "b", "c")]
    procs.extend(ups)
    for u in ups:
        service_time(u, 5)
    return ups


@pytest.mark.parametrize("kernel", ["auto", "off"])
def test_latency_monitor_ejects_slow_host(procs, kernel):
    """Host c answers in 150 ms, a and b in 5 ms: the latency monitor ejects
    c (never a or b) through the outlier machinery, its half-open probe
    fails while c is still slow (a re-ejection), and once c is fast again
    it comes back and stays. Its diagnosis says latency, naming c, in
    /clusters, the JSON log and the access log; with the kernel signals on
    it vouches for the network, off it says the network was not observed."""
    a, b, c = three(procs)
    al_yaml, al_path = file_access_log("%UPSTREAM_HOST% [%UPSTREAM_HOST_DIAGNOSIS%]\\n")
    sharp, listen, admin = start(procs, [a.port, b.port, c.port], hcm_extra=al_yaml,
                                 extra=["--kernel-signals", kernel])
    service_time(c, 150)
    slow, fast = c.port, (a.port, b.port)
    load = Load(listen)
    flags = set()
    try:
        def ejected():
            for p in fast:
                flags.add(host_line(admin, p, "health_flags"))
            return "failed_outlier_check" in host_line(admin, slow, "health_flags")
        wait_for(ejected, 10 * SLOW, "the slow host ejected")
        assert stat(admin, P + "ejections_enforced_latency") >= 1
        assert stat(admin, P + "ejections_detected_latency") >= 1
        assert stat(admin, P + "ejections_active") == 1
        diag = host_line(admin, slow, "diagnosis")
        assert diag and diag.startswith(f"latency: 127.0.0.1:{slow} slow (p95 "), diag
        assert re.search(r"slow \(p95 1\d\d ms vs cluster median \d+\.\d+ ms\)", diag), diag
        assert diag.endswith(", network clean" if kernel == "auto" else ", network not observed"), diag
        cj = json.loads(admin_get(admin, "/clusters?format=json"))
        hs = {h["address"]["socket_address"]["port_value"]: h for h in cj["cluster_statuses"][0]["host_statuses"]}
        assert hs[slow]["diagnosis"] == diag
        assert hs[slow]["health_status"]["failed_outlier_check"] is True
        # still slow after base_ejection_time: the half-open probe answers
        # slower than the threshold and fails, so it is ejected again
        wait_for(lambda: stat(admin, P + "ejections_enforced_latency") >= 2, 12 * SLOW, "a failed slow probe")
        assert "failed_outlier_check" in host_line(admin, slow, "health_flags") or \
            host_line(admin, slow, "outlier_state") in ("open", "half_open")
        # fast again: back in rotation, and it stays
        service_time(c, 5)
        wait_for(lambda: host_line(admin, slow, "health_flags") == "healthy"
                 and host_line(admin, slow, "outlier_state") == "closed", 20 * SLOW, "the host back")
        n = stat(admin, P + "ejections_enforced_latency")
        served = load.by_host.get("c", 0)
        # its diagnosis goes after three clean intervals
        wait_for(lambda: host_line(admin, slow, "diagnosis") is None, 8 * SLOW, "the diagnosis cleared")
        time.sleep(2)
        assert stat(admin, P + "ejections_enforced_latency") == n
        assert host_line(admin, slow, "health_flags") == "healthy"
        assert load.by_host.get("c", 0) > served
        for p in fast:
            flags.add(host_line(admin, p, "health_flags"))
            assert host_line(admin, p, "diagnosis") is None
    finally:
        load.stop()
    assert flags == {"healthy"}, flags
    out = sharp.output()
    assert "ejected (latency)" in out
    for p in fast:
        assert f"host 127.0.0.1:{p} ejected" not in out
    ev = [e for e in diagnosis_events(out) if e["host"] == f"127.0.0.1:{slow}"]
    ejections = [e for e in ev if e.get("detector") == "latency"]
    assert ejections and ejections[0]["ejected"] is True and ejections[0]["cause"] == "latency", ev
    assert ejections[0]["cluster"] == "backend" and ejections[0]["diagnosis"].startswith(f"latency: 127.0.0.1:{slow}")
    assert ev[-1]["cause"] == "none" and ev[-1]["diagnosis"] == "", ev
    assert not [e for e in diagnosis_events(out) if e["host"] != f"127.0.0.1:{slow}"]
    # the access log: requests to the slow host carry its diagnosis while it
    # has one; the fast hosts' never have any
    with open(al_path) as f:
        lines = f.read().splitlines()
    tagged = [ln for ln in lines if ln.startswith(f"127.0.0.1:{slow} [latency: 127.0.0.1:{slow} slow (")]
    assert tagged, lines[-20:]
    for p in fast:
        mine = [ln for ln in lines if ln.startswith(f"127.0.0.1:{p} ")]
        assert mine and all(ln == f"127.0.0.1:{p} [-]" for ln in mine), mine[:5]
    print(f"\n[kernel {kernel}] {load.sent} requests, {load.errors} errors, per host {load.by_host}")


def test_latency_monitor_healthy_run(procs):
    """Three hosts a little apart (5, 9 and 14 ms), and then all three slow
    together (80 ms): nobody is ejected, nobody diagnosed."""
    a, b, c = three(procs)
    service_time(b, 9)
    service_time(c, 14)
    sharp, listen, admin = start(procs, [a.port, b.port, c.port])
    load = Load(listen)
    try:
        time.sleep(5)
        for u in (a, b, c):
            service_time(u, 80)
        time.sleep(5)
    finally:
        load.stop()
    assert stat(admin, P + "ejections_detected_latency") == 0
    for u in (a, b, c):
        assert host_line(admin, u.port, "health_flags") == "healthy"
        assert host_line(admin, u.port, "diagnosis") is None
    assert not diagnosis_events(sharp.output())
    assert load.errors == 0


def test_degraded_hosts_diagnosed(procs):
    """Without any outlier detection: a host answering 503 and a host whose
    port is closed are diagnosed (application errors, unreachable), the
    healthy one is not; the JSON access log has the diagnosis, null for the
    healthy host."""
    a, b = Upstream("a"), Upstream("b")
    procs.extend([a, b])
    upstream_admin(b, "/admin/fault?status=503")
    closed = free_port()
    path = os.path.join(tempfile.mkdtemp(prefix="sharp-al-"), "access.json")
    al = ("access_log:\n- name: envoy.access_loggers.file\n  typed_config:\n"
          "    \"@type\": type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog\n"
          f"    path: {path}\n"
          "    log_format: { json_format: { host: \"%UPSTREAM_HOST%\", diagnosis: \"%UPSTREAM_HOST_DIAGNOSIS%\" } }\n")
    sharp, listen, admin = start(procs, [a.port, b.port, closed], cluster_extra="lb_policy: ROUND_ROBIN\n",
                                 hcm_extra=al)
    load = Load(listen, path="/", rate=60, threads=6)
    try:
        wait_for(lambda: host_line(admin, b.port, "diagnosis") and host_line(admin, closed, "diagnosis"), 10 * SLOW,
                 "both diagnosed")
        time.sleep(1.5)  # a few more requests carrying it
    finally:
        load.stop()
    db, dc = host_line(admin, b.port, "diagnosis"), host_line(admin, closed, "diagnosis")
    assert re.fullmatch(rf"application: 127\.0\.0\.1:{b.port} answers 5xx \(100% of \d+ answers vs cluster 0%\), "
                        r"network clean", db), db
    assert re.fullmatch(rf"network: 127\.0\.0\.1:{closed} unreachable \(\d+ connect failures, "
                        r"no connection established\)", dc), dc
    assert host_line(admin, a.port, "diagnosis") is None
    ev = {e["host"]: e for e in diagnosis_events(sharp.output())}
    assert ev[f"127.0.0.1:{b.port}"]["cause"] == "application_errors"
    assert ev[f"127.0.0.1:{closed}"]["cause"] == "unreachable"
    assert ev[f"127.0.0.1:{closed}"]["ejected"] is False and "detector" not in ev[f"127.0.0.1:{closed}"]
    assert f"127.0.0.1:{a.port}" not in ev
    with open(path) as f:
        rows = [json.loads(ln) for ln in f if ln.strip()]
    by = {}
    for r in rows:
        by.setdefault(r["host"], set()).add(r["diagnosis"])
    assert by[f"127.0.0.1:{a.port}"] == {None}
    # the figures move from one interval to the next: the cause is the same
    assert any(d and d.startswith(f"application: 127.0.0.1:{b.port} answers 5xx (") for d in by[f"127.0.0.1:{b.port}"])
    assert any(d and d.startswith(f"network: 127.0.0.1:{closed} unreachable (") for d in by[f"127.0.0.1:{closed}"])


def test_overload_diagnosed(procs):
    """One host with two slots of 20 ms: one client at a time, then twenty.
    Its latency rises with the requests in flight while it is given more
    of them, on a clean network: overload."""
    u = Upstream("u")
    procs.append(u)
    service_time(u, 20, slots=2)
    sharp, listen, admin = start(procs, [u.port], cluster_extra="")
    calm = Load(listen, rate=1000, threads=1)
    try:
        time.sleep(5)  # the host's baseline: ~45 req/s at 20 ms, one in flight
    finally:
        calm.stop()
    assert host_line(admin, u.port, "diagnosis") is None
    busy = Load(listen, rate=2000, threads=20)
    try:
        wait_for(lambda: (host_line(admin, u.port, "diagnosis") or "").startswith("overload:"), 10 * SLOW,
                 "the overload diagnosed")
    finally:
        busy.stop()
    d = host_line(admin, u.port, "diagnosis")
    assert re.fullmatch(rf"overload: 127\.0\.0\.1:{u.port} latency rising with concurrency \(mean \d+ ms at "
                        r"[\d.]+ in flight, \d+ req/s; baseline [\d.]+ ms at [\d.]+, \d+ req/s\), network clean", d), d
    ev = diagnosis_events(sharp.output())
    assert ev[-1]["cause"] == "overload" and ev[-1]["host"] == f"127.0.0.1:{u.port}"


def _validate(extra):
    d = tempfile.mkdtemp(prefix="sharp-latency-validate-")
    path = os.path.join(d, "c.yaml")
    with open(path, "w") as f:
        f.write(bootstrap_yaml(10000, 9901, {"backend": [8080]}, cluster_extra=extra))
    r = subprocess.run([SHARP, "--mode", "validate", "-c", path], capture_output=True, text=True, timeout=20 * SLOW)
    return r.returncode, r.stdout + r.stderr


def test_latency_monitor_config():
    """Accepted (with the kernel signals off too, which it does not need);
    every field's bad value refused naming the field."""
    rc, out = _validate(LATENCY)
    assert rc == 0, out
    d = tempfile.mkdtemp(prefix="sharp-latency-validate-")
    path = os.path.join(d, "c.yaml")
    with open(path, "w") as f:
        f.write(bootstrap_yaml(10000, 9901, {"backend": [8080]}, cluster_extra=LATENCY))
    r = subprocess.run([SHARP, "--mode", "validate", "-c", path, "--kernel-signals", "off"], capture_output=True,
                       text=True, timeout=20 * SLOW)
    assert r.returncode == 0, r.stderr
    for field, good, bad in (("percentile", "95", "0"), ("percentile", "95", "101"), ("factor", "3", "0.5"),
                             ("request_volume", "15", "0"), ("consecutive_intervals", "2", "0"),
                             ("min_latency", "0.02s", "-1s")):
        rc, out = _validate(LATENCY.replace(f"{field}: {good}", f"{field}: {bad}"))
        assert rc == 1 and f"monitors[0].typed_config.{field}" in out, (field, bad, out)
    for field, bad in (("minimum_hosts", "0"), ("enforcing", "101")):
        rc, out = _validate(LATENCY + f"      {field}: {bad}\n")
        assert rc == 1 and f"monitors[0].typed_config.{field}" in out, (field, bad, out)
    twice = LATENCY + LATENCY[LATENCY.index("  - name"):]
    rc, out = _validate(twice)
    assert rc == 1 and "monitors[1].typed_config" in out and "the latency monitor is configured twice" in out, out
