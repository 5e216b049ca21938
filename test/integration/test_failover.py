"""Outlier detection and retries together, as a user would run them: one of
three real upstreams starts failing (503s, resets, hangs, refused
connections); clients see no error, the host is ejected, and it serves
traffic again once it recovers."""
import http.client
import subprocess
import threading
import time

import pytest

from conftest import UPSTREAM, Upstream, bootstrap_yaml, free_port, run_sharp_config, stat, admin_get

ROUTE = """\
- match: { prefix: "/" }
  route:
    cluster: b
    timeout: 3s
    retry_policy:
      retry_on: 5xx,reset,connect-failure
      num_retries: 2
      per_try_timeout: 0.3s
      retry_host_predicate: [{ name: envoy.retry_host_predicates.previous_hosts }]
      host_selection_retry_max_attempts: 3
      retry_back_off: { base_interval: 0.005s }
"""
OUTLIER = """\
outlier_detection:
  consecutive_5xx: 3
  interval: 0.2s
  base_ejection_time: 3s
  max_ejection_percent: 50
"""


def fault(port, q=""):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    c.request("GET", "/admin/fault" + q)
    c.getresponse().read()


def drive(listen, seconds, threads=4):
    """Requests from a few clients for `seconds`; returns (errors, names)."""
    errors, names = [], []
    end = time.time() + seconds

    def client():
        c = None
        while time.time() < end:
            try:
                if c is None:
                    c = http.client.HTTPConnection("127.0.0.1", listen, timeout=5)
                c.request("GET", "/")
                r = c.getresponse()
                r.read()
                if r.status != 200:
                    errors.append(r.status)
                else:
                    names.append(r.getheader("x-upstream-name"))
            except Exception as e:  # a client-visible failure
                errors.append(repr(e))
                c = None
            time.sleep(0.005)
    ts = [threading.Thread(target=client) for _ in range(threads)]
    for t in ts:
        t.start()
    for t in ts:
        t.join(seconds + 10)
    return errors, names


@pytest.mark.parametrize("mode", ["503", "reset", "hang", "refuse"])
def test_failing_host_ejected_without_client_errors(procs, mode):
    ups = []
    for n in ("h0", "h1", "h2"):
        u = Upstream(name=n)
        procs.append(u)
        ups.append(u)
    listen, admin = free_port(), free_port()
    run_sharp_config(procs, bootstrap_yaml(listen, admin, {"b": [u.port for u in ups]}, routes=ROUTE,
                                           cluster_extra=OUTLIER), admin)
    errors, names = drive(listen, 0.5)
    assert not errors and set(names) == {"h0", "h1", "h2"}

    bad = ups[0]
    if mode == "503":
        fault(bad.port, "?status=503")
    elif mode == "reset":
        fault(bad.port, "?reset=1")
    elif mode == "hang":
        fault(bad.port, "?hang=1")
    else:
        bad.stop(9)
    errors, names = drive(listen, 1.5)
    assert not errors, errors[:5]
    assert stat(admin, "cluster.b.outlier_detection.ejections_active") == 1
    assert "failed_outlier_check" in admin_get(admin, "/clusters")
    assert stat(admin, "cluster.b.upstream_rq_retry") >= 1
    # After the first few failures, the ejected host gets no first tries.
    assert names and "h0" not in names[len(names) // 2:]

    if mode == "refuse":  # the same port again, as a restarted process would
        p = subprocess.Popen([UPSTREAM, "--address", "127.0.0.1", "--port", str(bad.port), "--name", "h0", "--quiet"],
                             stdout=subprocess.PIPE)
        assert p.stdout.readline().startswith(b"listening on")
        bad.p = p
    else:
        fault(bad.port)
    # The ejection lasts base_ejection_time (3 s: longer than the 1.5 s of
    # traffic above, so the host is still out when it is checked, however
    # late in that window it was ejected); then half-open, then closed.
    deadline = time.time() + 8
    back = False
    while time.time() < deadline and not back:
        errors, names = drive(listen, 0.4, threads=2)
        assert not errors, errors[:5]
        back = "h0" in names
    assert back, "the recovered host never got traffic again"
    assert stat(admin, "cluster.b.outlier_detection.ejections_active") == 0
