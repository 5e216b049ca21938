"""Cluster connection options through the real binary:
upstream_connection_options.tcp_keepalive (read back from SHARP's own
upstream socket), the drain of a host's connections when active health
checking fails it, and the upstream side of common_http_protocol_options."""
import ctypes
import os
import re
import socket
import subprocess
import tempfile
import threading
import time
import urllib.error
import urllib.request

from conftest import SHARP, SANITIZED, SLOW, Upstream, bootstrap_yaml, free_port, run_sharp_config, stat

libc = ctypes.CDLL(None, use_errno=True)
SYS_pidfd_getfd = 438


def get(url, headers=None, timeout=10):
    req = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, r.headers, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.headers, e.read().decode()


def wait_for(cond, timeout, what):
    deadline = time.time() + timeout * SLOW
    while time.time() < deadline:
        if cond():
            return
        time.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}")


def validate(text):
    d = tempfile.mkdtemp()
    p = os.path.join(d, "c.yaml")
    with open(p, "w") as f:
        f.write(text)
    r = subprocess.run([SHARP, "--mode", "validate", "-c", p], capture_output=True, text=True,
                       timeout=60 if SANITIZED else 20)
    return r.returncode, r.stdout + r.stderr


def start(procs, cluster_extra="", ups=None, concurrency=1, hcm_extra=""):
    ups = ups or [Upstream()]
    procs.extend(ups)
    listen, admin = free_port(), free_port()
    s = run_sharp_config(procs, bootstrap_yaml(listen, admin, {"backend": [u.port for u in ups]},
                                               cluster_extra=cluster_extra, hcm_extra=hcm_extra),
                         admin, concurrency=concurrency)
    return ups, listen, admin, s


# ---- upstream_connection_options.tcp_keepalive ----------------------------------

def upstream_socket(sharp_pid, upstream_port):
    """A duplicate of SHARP's socket connected to the upstream (pidfd_getfd),
    and the `ss -o` line of that connection."""
    out = subprocess.run(["ss", "-tnpoH", "state", "established", "dport", f"= :{upstream_port}"],
                         capture_output=True, text=True, check=True).stdout
    for line in out.splitlines():
        m = re.search(r"pid=%d,fd=(\d+)" % sharp_pid, line)
        if m:
            pidfd = os.pidfd_open(sharp_pid)
            try:
                fd = libc.syscall(SYS_pidfd_getfd, pidfd, int(m.group(1)), 0)
                assert fd >= 0, f"pidfd_getfd: errno {ctypes.get_errno()}"
            finally:
                os.close(pidfd)
            return socket.socket(fileno=fd), line
    raise AssertionError(f"no upstream connection of pid {sharp_pid} in:\n{out}")


def keepalive_of(sock):
    return (sock.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE),
            sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE),
            sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL),
            sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT))


def os_default(name):
    with open(f"/proc/sys/net/ipv4/tcp_keepalive_{name}") as f:
        return int(f.read())


def test_tcp_keepalive_sets_the_upstream_socket_options(procs):
    ups, listen, admin, s = start(procs, cluster_extra=(
        "upstream_connection_options:\n"
        "  tcp_keepalive: { keepalive_probes: 4, keepalive_time: 7, keepalive_interval: 3 }\n"))
    assert get(f"http://127.0.0.1:{listen}/")[0] == 200
    sock, line = upstream_socket(s.p.pid, ups[0].port)
    with sock:
        assert keepalive_of(sock) == (1, 7, 3, 4)
    # the kernel runs the keepalive timer, due within keepalive_time
    m = re.search(r"timer:\(keepalive,([\d.]+)(ms|sec|min)", line)
    assert m, line
    due = float(m.group(1)) * {"ms": 0.001, "sec": 1, "min": 60}[m.group(2)]
    assert due <= 7, line


def test_tcp_keepalive_unset_fields_keep_the_os_defaults(procs):
    ups, listen, admin, s = start(procs, cluster_extra="upstream_connection_options: { tcp_keepalive: {} }\n")
    assert get(f"http://127.0.0.1:{listen}/")[0] == 200
    sock, line = upstream_socket(s.p.pid, ups[0].port)
    with sock:
        assert keepalive_of(sock) == (1, os_default("time"), os_default("intvl"), os_default("probes"))
    assert "timer:(keepalive," in line, line


def test_without_tcp_keepalive_the_socket_has_none(procs):
    ups, listen, admin, s = start(procs)
    assert get(f"http://127.0.0.1:{listen}/")[0] == 200
    sock, line = upstream_socket(s.p.pid, ups[0].port)
    with sock:
        assert keepalive_of(sock)[0] == 0
    assert "keepalive" not in line, line


def test_tcp_keepalive_config_errors():
    def cfg(ka):
        return bootstrap_yaml(10000, 9901, {"b": [8080]},
                              cluster_extra=f"upstream_connection_options: {{ tcp_keepalive: {ka} }}\n")
    path = "static_resources.clusters[0].upstream_connection_options.tcp_keepalive"
    for ka, field, words in [("{ keepalive_probes: 0 }", "keepalive_probes", "must be at least 1, got 0"),
                             ("{ keepalive_time: 0 }", "keepalive_time", "must be at least 1, got 0"),
                             ("{ keepalive_interval: 0 }", "keepalive_interval", "must be at least 1, got 0"),
                             ("{ keepalive_probes: 128 }", "keepalive_probes", "must be at most 127, got 128"),
                             ("{ keepalive_time: 32768 }", "keepalive_time", "must be at most 32767, got 32768"),
                             ("{ keepalive_interval: 40000 }", "keepalive_interval", "must be at most 32767, got 40000")]:
        rc, out = validate(cfg(ka))
        assert rc == 1 and f"{path}.{field}: {words}" in out, out
    rc, out = validate(cfg("{ keepalive_probes: 127, keepalive_time: 32767, keepalive_interval: 1 }"))
    assert rc == 0, out
    rc, out = validate(bootstrap_yaml(10000, 9901, {"b": [8080]}, cluster_extra=(
        "upstream_connection_options: { set_local_interface_name_on_upstream_connections: true }\n")))
    assert rc == 1 and "set_local_interface_name_on_upstream_connections: " in out and \
        "is not supported by SHARP" in out, out


# ---- health check failure drains the host's connections --------------------------

HC = """\
health_checks:
- timeout: 0.5s
  interval: 0.2s
  no_traffic_interval: 0.2s
  unhealthy_threshold: 2
  healthy_threshold: 2
  http_health_check: { path: /healthz }
"""


def health_flag(admin, addr):
    for line in urllib.request.urlopen(f"http://127.0.0.1:{admin}/clusters", timeout=5).read().decode().splitlines():
        parts = line.split("::")
        if len(parts) == 4 and parts[1] == addr and parts[2] == "health_flags":
            return parts[3]
    return None


def start_checked(procs, extra=""):
    ups, listen, admin, s = start(procs, cluster_extra=HC + extra)
    addr = f"127.0.0.1:{ups[0].port}"
    wait_for(lambda: health_flag(admin, addr) == "healthy", 3, "host healthy")
    return ups[0], addr, listen, admin, s


def fail_health(u, admin, addr):
    get(f"http://127.0.0.1:{u.port}/admin/fault?status=503")
    wait_for(lambda: health_flag(admin, addr) == "/failed_active_hc", 3, "host failed")


def test_health_failure_closes_idle_connections(procs):
    u, addr, listen, admin, s = start_checked(procs, "close_connections_on_host_health_failure: true\n")
    assert get(f"http://127.0.0.1:{listen}/")[0] == 200
    assert stat(admin, "cluster.backend.upstream_cx_active") == 1
    time.sleep(0.5)  # passing checks leave the pooled connection alone
    assert stat(admin, "cluster.backend.upstream_cx_active") == 1
    assert stat(admin, "cluster.backend.upstream_cx_destroy") == 0
    fail_health(u, admin, addr)
    wait_for(lambda: stat(admin, "cluster.backend.upstream_cx_active") == 0, 2, "pooled connection closed")
    assert stat(admin, "cluster.backend.upstream_cx_destroy") == 1


def test_health_failure_drains_without_resetting_requests_in_flight(procs):
    # Envoy drains HTTP pools on the failure whether or not
    # close_connections_on_host_health_failure is set.
    u, addr, listen, admin, s = start_checked(procs)
    result = {}

    def slow():
        result["r"] = get(f"http://127.0.0.1:{listen}/slow?delay_ms={int(1500 * SLOW)}")
    t = threading.Thread(target=slow)
    t.start()
    wait_for(lambda: stat(admin, "cluster.backend.upstream_rq_active") == 1, 2, "request in flight")
    fail_health(u, admin, addr)
    assert stat(admin, "cluster.backend.upstream_rq_active") == 1  # not reset by the drain
    t.join(10 * SLOW)
    st, h, body = result["r"]
    assert st == 200 and body.startswith("hello from"), result
    # the connection served its request and then closed instead of going idle
    wait_for(lambda: stat(admin, "cluster.backend.upstream_cx_active") == 0, 2, "drained connection closed")
    assert stat(admin, "cluster.backend.upstream_rq_rx_reset") == 0
    assert stat(admin, "cluster.backend.upstream_cx_destroy_remote") == 0
    total = stat(admin, "cluster.backend.upstream_cx_total")
    get(f"http://127.0.0.1:{listen}/")  # panic routing still reaches the host: on a new connection
    assert stat(admin, "cluster.backend.upstream_cx_total") == total + 1
