"""Active health checking (cluster.health_checks) against real test
upstreams, and the envoy.filters.http.health_check filter. Checks run every
200 ms, so every wait here is bounded by a few intervals plus slack."""
import os
import signal
import subprocess
import tempfile
import time
import urllib.error
import urllib.request

from conftest import SHARP, SLOW, Sharp, Upstream, admin_get, bootstrap_yaml, free_port, stat, upstream_admin

INTERVAL = 0.2
UNHEALTHY_THRESHOLD = 2
HEALTHY_THRESHOLD = 2
SLACK = 1.5 * SLOW

HC = f"""\
health_checks:
- timeout: 0.5s
  interval: {INTERVAL}s
  no_traffic_interval: {INTERVAL}s
  unhealthy_threshold: {UNHEALTHY_THRESHOLD}
  healthy_threshold: {HEALTHY_THRESHOLD}
  http_health_check:
    path: /healthz
"""


def get(url, method="GET", headers=None):
    req = urllib.request.Request(url, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=5) as r:
            return r.status, r.headers, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.headers, e.read().decode()


def admin_post(port, path):
    return get(f"http://127.0.0.1:{port}{path}", method="POST")


def health_flags(admin):
    """{host address: health_flags} from /clusters."""
    out = {}
    for line in admin_get(admin, "/clusters").splitlines():
        parts = line.split("::")
        if len(parts) == 4 and parts[2] == "health_flags":
            out[parts[1]] = parts[3]
    return out


def wait_for(cond, timeout, what):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if cond():
            return time.time()
        time.sleep(0.02)
    raise AssertionError(f"timed out after {timeout:.1f}s waiting for {what}")


def upstream_names(listen, n):
    names = []
    for _ in range(n):
        st, h, _ = get(f"http://127.0.0.1:{listen}/")
        assert st == 200
        names.append(h["x-upstream-name"])
    return names


def start(procs, nups=3, cluster_extra=HC):
    ups = [Upstream(name=f"u{i}") for i in range(nups)]
    procs.extend(ups)
    listen, admin = free_port(), free_port()
    s = Sharp(bootstrap_yaml(listen, admin, {"backend": [u.port for u in ups]}, cluster_extra=cluster_extra))
    procs.append(s)
    s.wait_ready(admin)
    addrs = [f"127.0.0.1:{u.port}" for u in ups]
    wait_for(lambda: all(health_flags(admin).get(a) == "healthy" for a in addrs), 3 * SLOW, "all hosts healthy")
    return ups, addrs, listen, admin, s


def test_failing_host_is_ejected_then_restored(procs):
    ups, addrs, listen, admin, s = start(procs)
    assert set(upstream_names(listen, 12)) == {"u0", "u1", "u2"}
    assert stat(admin, "cluster.backend.health_check.healthy") == 3
    assert stat(admin, "cluster.backend.membership_healthy") == 3

    get(f"http://127.0.0.1:{ups[0].port}/admin/fault?status=503")
    t0 = time.time()
    # an unexpected status fails a host at its next check (Envoy: no threshold)
    t1 = wait_for(lambda: health_flags(admin)[addrs[0]] == "/failed_active_hc",
                  INTERVAL * UNHEALTHY_THRESHOLD + SLACK, "u0 marked failed")
    assert t1 - t0 <= INTERVAL * UNHEALTHY_THRESHOLD + SLACK
    assert health_flags(admin)[addrs[1]] == "healthy"
    assert stat(admin, "cluster.backend.health_check.healthy") == 2
    assert stat(admin, "cluster.backend.membership_healthy") == 2
    assert stat(admin, "cluster.backend.health_check.failure") >= 1
    assert stat(admin, "cluster.backend.health_check.network_failure") == 0
    assert stat(admin, "cluster.backend.health_check.attempt") >= 4
    assert "u0" not in upstream_names(listen, 30)

    get(f"http://127.0.0.1:{ups[0].port}/admin/fault")  # clear
    wait_for(lambda: health_flags(admin)[addrs[0]] == "healthy",
             INTERVAL * HEALTHY_THRESHOLD + SLACK, "u0 healthy again")
    assert stat(admin, "cluster.backend.health_check.healthy") == 3
    assert "u0" in upstream_names(listen, 12)
    assert "is now unhealthy" in s.output() and "is now healthy" in s.output()


def test_http_checks_over_http2(procs):
    """codec_client_type HTTP2: each check is an HTTP/2 stream (the upstreams
    speak only HTTP/2, so a check over HTTP/1.1 could never pass); an
    unexpected :status fails the host, x-envoy-degraded still counts, and
    the host comes back once the status is right again."""
    ups = [Upstream(name=f"u{i}", extra=("--h2",)) for i in range(2)]
    procs.extend(ups)
    listen, admin = free_port(), free_port()
    hc = HC.replace("    path: /healthz\n", "    path: /healthz\n    codec_client_type: HTTP2\n")
    s = Sharp(bootstrap_yaml(listen, admin, {"backend": [u.port for u in ups]},
                             cluster_extra="http2_protocol_options: {}\n" + hc))
    procs.append(s)
    s.wait_ready(admin)
    addrs = [f"127.0.0.1:{u.port}" for u in ups]
    wait_for(lambda: all(health_flags(admin).get(a) == "healthy" for a in addrs), 3 * SLOW, "both hosts healthy")
    assert stat(admin, "cluster.backend.health_check.network_failure") == 0
    upstream_admin(ups[0], "/admin/fault?status=503")
    wait_for(lambda: health_flags(admin)[addrs[0]] == "/failed_active_hc", INTERVAL * UNHEALTHY_THRESHOLD + SLACK,
             "u0 marked failed")
    assert health_flags(admin)[addrs[1]] == "healthy"
    assert stat(admin, "cluster.backend.health_check.failure") >= 1
    upstream_admin(ups[0], "/admin/fault")
    wait_for(lambda: health_flags(admin)[addrs[0]] == "healthy", INTERVAL * HEALTHY_THRESHOLD + SLACK,
             "u0 healthy again")
    # the same checks over HTTP/1.1 to these HTTP/2-only upstreams fail
    listen2, admin2 = free_port(), free_port()
    s2 = Sharp(bootstrap_yaml(listen2, admin2, {"backend": [u.port for u in ups]},
                              cluster_extra="http2_protocol_options: {}\n" + HC))
    procs.append(s2)
    s2.wait_ready(admin2)
    wait_for(lambda: stat(admin2, "cluster.backend.health_check.network_failure") >= 2, 3 * SLOW,
             "HTTP/1.1 checks failing")
    assert stat(admin2, "cluster.backend.health_check.healthy") == 0


def test_dead_host_is_ejected_after_threshold(procs):
    ups, addrs, listen, admin, s = start(procs)
    ups[2].stop(signal.SIGKILL)  # connection refused from now on
    before = stat(admin, "cluster.backend.health_check.network_failure")
    t0 = time.time()
    wait_for(lambda: health_flags(admin)[addrs[2]] == "/failed_active_hc",
             INTERVAL * UNHEALTHY_THRESHOLD + SLACK, "u2 marked failed")
    # network failures count towards unhealthy_threshold
    assert stat(admin, "cluster.backend.health_check.network_failure") - before >= UNHEALTHY_THRESHOLD
    assert time.time() - t0 >= INTERVAL * (UNHEALTHY_THRESHOLD - 1) * 0.5
    names = upstream_names(listen, 30)
    assert set(names) == {"u0", "u1"}, names


def test_hung_host_times_out(procs):
    hc = HC.replace("timeout: 0.5s", "timeout: 0.1s")
    ups, addrs, listen, admin, s = start(procs, nups=3, cluster_extra=hc)
    get(f"http://127.0.0.1:{ups[1].port}/admin/fault?hang=1")
    wait_for(lambda: health_flags(admin)[addrs[1]] == "/failed_active_hc",
             (INTERVAL + 0.1) * UNHEALTHY_THRESHOLD + SLACK, "u1 marked failed after timeouts")
    assert stat(admin, "cluster.backend.health_check.network_failure") >= UNHEALTHY_THRESHOLD
    assert "u1" not in upstream_names(listen, 20)


def test_tcp_health_check(procs):
    send = b"GET / HTTP/1.1\r\nhost: x\r\n\r\n".hex()
    tcp = HC.replace("  http_health_check:\n    path: /healthz\n",
                     f"  tcp_health_check:\n    send: {{ text: \"{send}\" }}\n"
                     f"    receive: [ {{ text: \"{b'200'.hex()}\" }}, {{ text: \"{b'hello'.hex()}\" }} ]\n")
    ups, addrs, listen, admin, s = start(procs, nups=3, cluster_extra=tcp)
    ups[0].stop(signal.SIGKILL)
    wait_for(lambda: health_flags(admin)[addrs[0]] == "/failed_active_hc",
             INTERVAL * UNHEALTHY_THRESHOLD + SLACK, "u0 marked failed")
    assert health_flags(admin)[addrs[1]] == "healthy"


def validate(text):
    d = tempfile.mkdtemp()
    p = os.path.join(d, "c.yaml")
    with open(p, "w") as f:
        f.write(text)
    r = subprocess.run([SHARP, "--mode", "validate", "-c", p], capture_output=True, timeout=20)
    return r.returncode, (r.stdout + r.stderr).decode()


def test_config_errors():
    def cfg(hc):
        return bootstrap_yaml(10000, 9901, {"b": [8080]}, cluster_extra=hc)
    rc, out = validate(cfg(HC))
    assert rc == 0, out
    rc, out = validate(cfg(HC.replace("- timeout: 0.5s\n  interval", "- interval")))
    assert rc == 1
    assert "static_resources.clusters[0].health_checks[0].timeout: is required" in out, out
    rc, out = validate(cfg(HC.replace(f"  healthy_threshold: {HEALTHY_THRESHOLD}\n", "")))
    assert rc == 1 and "health_checks[0].healthy_threshold: is required" in out, out
    rc, out = validate(cfg(HC.replace("http_health_check:\n    path: /healthz",
                                      "grpc_health_check: { service_name: x }")))
    # Envoy's gRPC checker needs an HTTP/2 cluster
    assert rc == 1 and "health_checks[0].grpc_health_check: b cluster must support HTTP/2 for gRPC healthchecking" in out, out
    rc, out = validate(cfg(HC + "  event_log_path: /tmp/hc.log\n"))
    assert rc == 1 and "health_checks[0].event_log_path: event_log_path is not supported by SHARP" in out, out
    rc, out = validate(cfg(HC + "    expected_statuses: [ { start: 300, end: 200 } ]\n"))
    assert rc == 1 and "expected_statuses[0]: Invalid http expected status range" in out, out
    rc, out = validate(cfg(HC + "    codec_client_type: HTTP3\n"))
    assert rc == 1 and "codec_client_type: HTTP3 is not supported by SHARP" in out, out
    rc, out = validate(cfg(HC + HC.replace("health_checks:\n", "")))
    assert rc == 1 and "health_checks: Multiple health checks not supported" in out, out


def with_filter(yaml_text, pass_through, extra=""):
    entry = (
        "          - name: envoy.filters.http.health_check\n"
        "            typed_config:\n"
        "              \"@type\": type.googleapis.com/envoy.extensions.filters.http.health_check.v3.HealthCheck\n"
        f"              pass_through_mode: {'true' if pass_through else 'false'}\n"
        "              headers:\n"
        "              - name: \":path\"\n"
        "                string_match: { exact: /healthz }\n" + extra)
    marker = "          http_filters:\n"
    assert marker in yaml_text
    return yaml_text.replace(marker, marker + entry)


def start_filter(procs, pass_through, extra=""):
    u = Upstream(name="u0")
    procs.append(u)
    listen, admin = free_port(), free_port()
    log = os.path.join(tempfile.mkdtemp(prefix="sharp-al-"), "access.log")
    y = with_filter(bootstrap_yaml(listen, admin, {"backend": [u.port]}, access_log=log), pass_through, extra)
    s = Sharp(y, extra=("--service-cluster", "edge"))
    procs.append(s)
    s.wait_ready(admin)
    return listen, admin, log


def test_health_check_filter(procs):
    listen, admin, log = start_filter(procs, pass_through=False)
    url = f"http://127.0.0.1:{listen}"
    st, h, body = get(url + "/healthz")
    assert st == 200 and "x-upstream-name" not in h and body == ""
    assert h["x-envoy-upstream-healthchecked-cluster"] == "edge"
    st, h, _ = get(url + "/")
    assert st == 200 and h["x-upstream-name"] == "u0"
    assert "x-envoy-immediate-health-check-fail" not in h

    assert admin_post(admin, "/healthcheck/fail")[0] == 200
    st, h, _ = get(url + "/healthz")
    assert st == 503 and "x-upstream-name" not in h
    assert h["x-envoy-upstream-healthchecked-cluster"] == "edge"
    # other requests still flow, and tell a downstream Envoy to drop us
    st, h, _ = get(url + "/")
    assert st == 200 and h["x-upstream-name"] == "u0"
    assert h["x-envoy-immediate-health-check-fail"] == "true"

    assert admin_post(admin, "/healthcheck/ok")[0] == 200
    st, h, _ = get(url + "/healthz")
    assert st == 200
    st, h, _ = get(url + "/")
    assert "x-envoy-immediate-health-check-fail" not in h

    def logged():
        return open(log).read() if os.path.exists(log) else ""
    wait_for(lambda: logged().count("/healthz") >= 3, 5, "access log lines")
    lines = [ln for ln in logged().splitlines() if "/healthz" in ln]
    # two workers write the log: count, do not rely on the order
    assert sum(" 503 LH " in ln for ln in lines) == 1, lines
    assert sum(" 200 - " in ln for ln in lines) == 2, lines


def test_health_check_filter_pass_through(procs):
    listen, admin, log = start_filter(procs, pass_through=True)
    url = f"http://127.0.0.1:{listen}"
    st, h, body = get(url + "/healthz")
    assert st == 200 and h["x-upstream-name"] == "u0" and "hello from u0" in body
    assert h["x-envoy-upstream-healthchecked-cluster"] == "edge"
    admin_post(admin, "/healthcheck/fail")
    st, h, _ = get(url + "/healthz")
    assert st == 503 and "x-upstream-name" not in h
    admin_post(admin, "/healthcheck/ok")
    st, h, _ = get(url + "/healthz")
    assert st == 200 and h["x-upstream-name"] == "u0"


def test_health_check_filter_min_healthy(procs):
    extra = ("              cluster_min_healthy_percentages:\n"
             "                backend: { value: 100 }\n")
    ups = [Upstream(name=f"u{i}") for i in range(2)]
    procs.extend(ups)
    listen, admin = free_port(), free_port()
    y = with_filter(bootstrap_yaml(listen, admin, {"backend": [u.port for u in ups]}, cluster_extra=HC), False, extra)
    s = Sharp(y)
    procs.append(s)
    s.wait_ready(admin)
    url = f"http://127.0.0.1:{listen}/healthz"
    wait_for(lambda: get(url)[0] == 200, 3 * SLOW, "both hosts healthy")
    ups[1].stop(signal.SIGKILL)
    wait_for(lambda: get(url)[0] == 503, INTERVAL * UNHEALTHY_THRESHOLD + SLACK, "filter fails below 100% healthy")


def test_upstream_immediate_health_check_fail(procs):
    """A SHARP in front of u0 is failed through its admin; its responses then
    carry x-envoy-immediate-health-check-fail, and the SHARP in front of it
    fails that host at once instead of waiting for the next (slow) check."""
    inner_listen, inner_admin, _ = start_filter(procs, pass_through=False)
    other = Upstream(name="u1")
    procs.append(other)
    listen, admin = free_port(), free_port()
    slow_hc = HC.replace(f"interval: {INTERVAL}s", "interval: 30s").replace(
        f"no_traffic_interval: {INTERVAL}s", "no_traffic_interval: 30s")
    s = Sharp(bootstrap_yaml(listen, admin, {"backend": [inner_listen, other.port]}, cluster_extra=slow_hc),
              concurrency=1)
    procs.append(s)
    s.wait_ready(admin)
    inner = f"127.0.0.1:{inner_listen}"
    wait_for(lambda: health_flags(admin).get(inner) == "healthy" and
             health_flags(admin).get(f"127.0.0.1:{other.port}") == "healthy", 3 * SLOW, "both hosts healthy")
    assert sorted(upstream_names(listen, 4)) == ["u0", "u0", "u1", "u1"]
    assert admin_post(inner_admin, "/healthcheck/fail")[0] == 200
    names = upstream_names(listen, 6)
    first = names.index("u0") if "u0" in names else len(names)
    assert first <= 1 and "u0" not in names[first + 1:], names
    assert health_flags(admin)[inner] == "/failed_active_hc"


def test_startup_waits_for_the_first_round(procs):
    """As Envoy's cluster initialization: the listeners serve once every
    checked host has had its first result; /ready says INITIALIZING until
    then, and the first requests already avoid the host that failed."""
    hung, good = Upstream(name="hung"), Upstream(name="good")
    procs.extend([hung, good])
    c = urllib.request.urlopen(f"http://127.0.0.1:{hung.port}/admin/fault?hang=1", timeout=5)
    c.read()
    listen, admin = free_port(), free_port()
    hc = HC.replace("timeout: 0.5s", "timeout: 1.5s")
    s = Sharp(bootstrap_yaml(listen, admin, {"backend": [hung.port, good.port]}, cluster_extra=hc))
    procs.append(s)
    t0 = time.time()
    states = set()
    while time.time() - t0 < 10 * SLOW:
        try:
            st, _, body = get(f"http://127.0.0.1:{admin}/ready")
        except OSError:
            time.sleep(0.02)
            continue
        states.add((st, body.strip()))
        if st == 200:
            break
        time.sleep(0.02)
    took = time.time() - t0
    assert (503, "INITIALIZING") in states and (200, "LIVE") in states, states
    assert took >= 1.2, took  # the hung host's first check had to time out
    assert stat(admin, "server.state") == 0
    assert upstream_names(listen, 4) == ["good"] * 4
    assert health_flags(admin)[f"127.0.0.1:{hung.port}"] == "/failed_active_hc"


def test_sigterm_while_initializing(procs):
    hung = Upstream(name="hung")
    procs.append(hung)
    urllib.request.urlopen(f"http://127.0.0.1:{hung.port}/admin/fault?hang=1", timeout=5).read()
    listen, admin = free_port(), free_port()
    hc = HC.replace("timeout: 0.5s", "timeout: 30s")
    s = Sharp(bootstrap_yaml(listen, admin, {"backend": [hung.port]}, cluster_extra=hc))
    procs.append(s)
    wait_for(lambda: get(f"http://127.0.0.1:{admin}/ready")[0] == 503 if _up(admin) else False, 5 * SLOW,
             "admin up, initializing")
    t0 = time.time()
    assert s.stop(signal.SIGTERM) == 0
    assert time.time() - t0 < 3 * SLOW


def _up(admin):
    try:
        get(f"http://127.0.0.1:{admin}/ready")
        return True
    except OSError:
        return False
