"""Cluster connection options through the real binary:
upstream_connection_options.tcp_keepalive (read back from SHARP's own
upstream socket), the drain of a host's connections when active health
checking fails it, and the upstream side of common_http_protocol_options."""
import ctypes
import http.client
import os
import re
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.request

from conftest import (bootstrap_yaml, file_access_log, free_port, log_lines, run_sharp_config, SLOW, stat,
                      Upstream, validate_config as validate, wait_for)

libc = ctypes.CDLL(None, use_errno=True)
http.client._MAXHEADERS = 1000  # responses here may carry more than Python's 100
SYS_pidfd_getfd = 438


def get(url, headers=None, timeout=10):
    req = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, r.headers, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.headers, e.read().decode()


def start(procs, cluster_extra="", ups=None, concurrency=1, hcm_extra=""):
    ups = ups or [Upstream()]
    procs.extend(ups)
    listen, admin = free_port(), free_port()
    s = run_sharp_config(procs, bootstrap_yaml(listen, admin, {"backend": [u.port for u in ups]},
                                               cluster_extra=cluster_extra, hcm_extra=hcm_extra),
                         admin, concurrency=concurrency)
    return ups, listen, admin, s


HC = """\
health_checks:
- timeout: 0.5s
  interval: 0.2s
  no_traffic_interval: 0.2s
  unhealthy_threshold: 2
  healthy_threshold: 2
  http_health_check: { path: /healthz }
"""


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


def test_tcp_keepalive_applies_to_health_check_connections(procs):
    # Envoy's cluster socket options cover every connection to its hosts.
    ups, listen, admin, s = start(procs, cluster_extra=HC + (
        "upstream_connection_options: { tcp_keepalive: { keepalive_time: 9, keepalive_interval: 2 } }\n"))
    wait_for(lambda: stat(admin, "cluster.backend.health_check.success") >= 1, 3, "a passing check")
    assert stat(admin, "cluster.backend.upstream_cx_total") == 0  # no traffic: the check's connection only
    sock, line = upstream_socket(s.p.pid, ups[0].port)
    with sock:
        assert keepalive_of(sock) == (1, 9, 2, os_default("probes"))


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


def test_outlier_ejection_drains_the_host(procs):
    # Envoy posts the same drain when outlier detection ejects a host.
    ups, listen, admin, s = start(procs, cluster_extra=(
        "outlier_detection: { consecutive_5xx: 2, interval: 60s, base_ejection_time: 30s, "
        "max_ejection_percent: 100 }\n"))
    assert get(f"http://127.0.0.1:{listen}/status/500")[0] == 500
    assert stat(admin, "cluster.backend.upstream_cx_active") == 1
    assert get(f"http://127.0.0.1:{listen}/status/500")[0] == 500  # the second 5xx ejects
    wait_for(lambda: stat(admin, "cluster.backend.outlier_detection.ejections_active") == 1, 2, "ejection")
    wait_for(lambda: stat(admin, "cluster.backend.upstream_cx_active") == 0, 2, "pooled connection closed")
    assert stat(admin, "cluster.backend.upstream_cx_destroy") == 1


def test_immediate_health_check_fail_drains_the_host(procs):
    # x-envoy-immediate-health-check-fail fails the host at once; Envoy's
    # health callback then drains its pools like any other health failure.
    u = HeadersUpstream()
    try:
        listen, admin, log = with_log(procs, u.port, HC)
        addr = f"127.0.0.1:{u.port}"
        wait_for(lambda: health_flag(admin, addr) == "healthy", 3, "host healthy")
        assert get(f"http://127.0.0.1:{listen}/1")[0] == 200
        time.sleep(0.3)
        assert stat(admin, "cluster.backend.upstream_cx_active") == 1
        assert get(f"http://127.0.0.1:{listen}/immediate")[0] == 200
        wait_for(lambda: stat(admin, "cluster.backend.upstream_cx_active") == 0, 3, "pooled connection closed")
    finally:
        u.close()


# ---- common_http_protocol_options on the upstream side ---------------------------

LOG_FORMAT = "%RESPONSE_CODE% %RESPONSE_FLAGS% %RESPONSE_CODE_DETAILS%\\n"


class HeadersUpstream:
    """Answers GET /<n> with exactly n header lines (content-length first),
    keeping the connection open."""

    def __init__(self):
        import socketserver

        class Handler(socketserver.StreamRequestHandler):
            def handle(self):
                while True:
                    line = self.rfile.readline()
                    if not line:
                        return
                    target = line.split(b" ")[1].strip(b"/")
                    under = target == b"underscore"
                    immediate = target == b"immediate"
                    n = int(target) if target.isdigit() else 1
                    while self.rfile.readline() not in (b"\r\n", b""):
                        pass
                    head = b"HTTP/1.1 200 OK\r\ncontent-length: 3\r\n"
                    head += b"".join(b"x-h-%d: v\r\n" % i for i in range(1, n))
                    if under:
                        head += b"x_under_score: kept\r\n"
                    if immediate:
                        head += b"x-envoy-immediate-health-check-fail: true\r\n"
                    self.wfile.write(head + b"\r\nok\n")

        self.server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


def with_log(procs, port, cluster_extra, routes=None):
    listen, admin = free_port(), free_port()
    al, log = file_access_log(LOG_FORMAT)
    run_sharp_config(procs, bootstrap_yaml(listen, admin, {"backend": [port]}, hcm_extra=al, routes=routes,
                                           cluster_extra=cluster_extra), admin, concurrency=1)
    return listen, admin, log


TYPED = """\
typed_extension_protocol_options:
  envoy.extensions.upstreams.http.v3.HttpProtocolOptions:
    "@type": type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions
    explicit_http_config: { http_protocol_options: {} }
"""


def headers_limit_case(procs, cluster_extra, limit):
    u = HeadersUpstream()
    try:
        listen, admin, log = with_log(procs, u.port, cluster_extra)
        st, h, body = get(f"http://127.0.0.1:{listen}/{limit}")
        assert st == 200 and body == "ok\n" and h["x-h-%d" % (limit - 1)] == "v"
        st, h, body = get(f"http://127.0.0.1:{listen}/{limit + 1}")
        assert st == 502, (st, body)
        assert body == "upstream connect error or disconnect/reset before headers. reset reason: protocol error"
        assert log_lines(log, 2)[1] == "502 UPE upstream_reset_before_response_started{protocol_error}"
        assert stat(admin, "cluster.backend.upstream_cx_protocol_error") == 1
        assert stat(admin, "cluster.backend.upstream_rq_rx_reset") == 1
        assert get(f"http://127.0.0.1:{listen}/{limit}")[0] == 200  # on a new connection
    finally:
        u.close()


def test_upstream_max_headers_count_default_is_100(procs):
    headers_limit_case(procs, "", 100)


def test_upstream_max_headers_count_on_the_cluster(procs):
    headers_limit_case(procs, "common_http_protocol_options: { max_headers_count: 5 }\n", 5)


def test_upstream_max_headers_count_in_http_protocol_options(procs):
    headers_limit_case(procs, TYPED + "    common_http_protocol_options: { max_headers_count: 7 }\n", 7)


def test_http_protocol_options_replace_the_clusters_own(procs):
    # Envoy takes the extension's common_http_protocol_options whole: the
    # Cluster's own max_headers_count no longer applies (default 100 again).
    headers_limit_case(procs, "common_http_protocol_options: { max_headers_count: 5 }\n" + TYPED, 100)


def test_headers_with_underscores_action_does_not_touch_upstream_responses(procs):
    # Envoy: "upstream responses are not affected by this setting ... does
    # not have any impact if added to cluster config".
    u = HeadersUpstream()
    try:
        listen, admin, log = with_log(procs, u.port, (
            "common_http_protocol_options: { headers_with_underscores_action: REJECT_REQUEST }\n"))
        st, h, body = get(f"http://127.0.0.1:{listen}/underscore")
        assert st == 200 and h["x_under_score"] == "kept", (st, dict(h))
    finally:
        u.close()
    rc, out = validate(bootstrap_yaml(10000, 9901, {"b": [8080]}, cluster_extra=(
        TYPED + "    common_http_protocol_options: { headers_with_underscores_action: 7 }\n")))
    assert rc == 1 and "headers_with_underscores_action: value 7 is not a defined value" in out, out


def test_upstream_max_connection_duration_closes_an_idle_connection(procs):
    ups, listen, admin, s = start(procs, cluster_extra=(
        "common_http_protocol_options: { max_connection_duration: 0.5s }\n"))
    st, h, _ = get(f"http://127.0.0.1:{listen}/")
    assert st == 200 and h["x-upstream-connection"] == "1"
    st, h, _ = get(f"http://127.0.0.1:{listen}/")
    assert st == 200 and h["x-upstream-connection"] == "1"  # reused within the duration
    assert stat(admin, "cluster.backend.upstream_cx_max_duration_reached") == 0
    wait_for(lambda: stat(admin, "cluster.backend.upstream_cx_active") == 0, 2, "connection closed")
    assert stat(admin, "cluster.backend.upstream_cx_max_duration_reached") == 1
    assert stat(admin, "cluster.backend.upstream_cx_idle_timeout") == 0
    st, h, _ = get(f"http://127.0.0.1:{listen}/")
    assert st == 200 and h["x-upstream-connection"] == "2"


def test_upstream_max_connection_duration_lets_the_request_finish(procs):
    ups, listen, admin, s = start(procs, cluster_extra=(
        TYPED + "    common_http_protocol_options: { max_connection_duration: 0.3s }\n"))
    st, h, body = get(f"http://127.0.0.1:{listen}/?delay_ms={int(900 * SLOW)}")
    assert st == 200 and body.startswith("hello from") and h["x-upstream-connection"] == "1"
    assert stat(admin, "cluster.backend.upstream_cx_max_duration_reached") == 1
    assert stat(admin, "cluster.backend.upstream_rq_rx_reset") == 0
    # drained: closed after its request instead of going back to the pool
    wait_for(lambda: stat(admin, "cluster.backend.upstream_cx_active") == 0, 2, "drained connection closed")
    st, h, _ = get(f"http://127.0.0.1:{listen}/")
    assert st == 200 and h["x-upstream-connection"] == "2"


def test_without_max_connection_duration_the_connection_stays(procs):
    ups, listen, admin, s = start(procs)
    get(f"http://127.0.0.1:{listen}/")
    time.sleep(0.8)
    st, h, _ = get(f"http://127.0.0.1:{listen}/")
    assert h["x-upstream-connection"] == "1"
    assert stat(admin, "cluster.backend.upstream_cx_max_duration_reached") == 0


def upstream_with_log(procs, cluster_extra, routes=None):
    u = Upstream()
    procs.append(u)
    listen, admin, log = with_log(procs, u.port, cluster_extra, routes=routes)
    return listen, admin, log


def test_upstream_max_stream_duration_504_before_the_response(procs):
    listen, admin, log = upstream_with_log(procs, "common_http_protocol_options: { max_stream_duration: 0.3s }\n")
    t0 = time.time()
    st, h, body = get(f"http://127.0.0.1:{listen}/?delay_ms={int(3000 * SLOW)}")
    assert st == 504 and body == "upstream max stream duration reached", (st, body)
    assert time.time() - t0 < 2 * SLOW
    assert log_lines(log, 1)[0] == "504 UMSDR upstream_max_stream_duration_reached"
    assert stat(admin, "cluster.backend.upstream_rq_max_duration_reached") == 1
    # a quick answer is not affected
    assert get(f"http://127.0.0.1:{listen}/")[0] == 200
    assert stat(admin, "cluster.backend.upstream_rq_max_duration_reached") == 1


def test_upstream_max_stream_duration_408_while_the_request_arrives(procs):
    listen, admin, log = upstream_with_log(procs, TYPED + "    common_http_protocol_options: { max_stream_duration: 0.3s }\n")
    with socket.create_connection(("127.0.0.1", listen), timeout=5 * SLOW) as c:
        c.sendall(b"POST /upload HTTP/1.1\r\nhost: x\r\ncontent-length: 10\r\n\r\nabc")
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = c.recv(4096)
            if not chunk:
                break
            data += chunk
    assert data.startswith(b"HTTP/1.1 408 "), data
    assert log_lines(log, 1)[0] == "408 UMSDR upstream_max_stream_duration_reached"
    assert stat(admin, "cluster.backend.upstream_rq_max_duration_reached") == 1


def test_upstream_max_stream_duration_resets_a_started_response(procs):
    listen, admin, log = upstream_with_log(procs, "common_http_protocol_options: { max_stream_duration: 0.4s }\n")
    with socket.create_connection(("127.0.0.1", listen), timeout=10 * SLOW) as c:
        c.sendall(b"GET /bytes/1000000?chunk_delay_ms=100 HTTP/1.1\r\nhost: x\r\n\r\n")
        data = b""
        while True:
            try:
                chunk = c.recv(65536)
            except ConnectionResetError:
                break
            if not chunk:
                break
            data += chunk
    assert data.startswith(b"HTTP/1.1 200 "), data[:100]
    assert len(data) < 1000000  # cut short
    code, flags, details = log_lines(log, 1)[0].split(" ")
    # (the connection manager adds DC when a reset stream closes the connection)
    assert code == "200" and "UMSDR" in flags.split(",") and details == "upstream_max_stream_duration_reached"
    assert stat(admin, "cluster.backend.upstream_rq_max_duration_reached") == 1


def test_upstream_max_stream_duration_is_retried_as_a_reset(procs):
    routes = ('- match: { prefix: "/" }\n'
              '  route: { cluster: backend, retry_policy: { retry_on: reset, num_retries: 1 } }\n')
    listen, admin, log = upstream_with_log(procs, "common_http_protocol_options: { max_stream_duration: 0.3s }\n",
                                           routes=routes)
    st, h, body = get(f"http://127.0.0.1:{listen}/?delay_ms={int(3000 * SLOW)}")
    assert st == 504 and body == "upstream max stream duration reached"
    assert stat(admin, "cluster.backend.upstream_rq_max_duration_reached") == 2  # each try
    assert stat(admin, "cluster.backend.upstream_rq_retry") == 1
    assert log_lines(log, 1)[0] == "504 URX,UMSDR upstream_max_stream_duration_reached"


def test_without_max_stream_duration_a_slow_answer_arrives(procs):
    listen, admin, log = upstream_with_log(procs, "common_http_protocol_options: { max_stream_duration: 0s }\n")
    assert get(f"http://127.0.0.1:{listen}/?delay_ms=700")[0] == 200
    assert stat(admin, "cluster.backend.upstream_rq_max_duration_reached") == 0


def test_upstream_protocol_options_config_errors():
    def cfg(extra):
        return bootstrap_yaml(10000, 9901, {"b": [8080]}, cluster_extra=extra)
    rc, out = validate(cfg("common_http_protocol_options: { max_headers_count: 0 }\n"))
    assert rc == 1 and ("static_resources.clusters[0].common_http_protocol_options.max_headers_count: "
                        "must be at least 1, got 0") in out, out
    rc, out = validate(cfg("common_http_protocol_options: { max_connection_duration: -1s }\n"))
    assert rc == 1 and "common_http_protocol_options.max_connection_duration: must be at least 0s" in out, out
    rc, out = validate(cfg(TYPED + "    common_http_protocol_options: { max_headers_count: 0 }\n"))
    assert rc == 1 and "common_http_protocol_options.max_headers_count: must be at least 1, got 0" in out, out
