"""Unix domain sockets (envoy.config.core.v3.Address.pipe) wherever SHARP
takes an address: listeners (path, mode, '@' abstract namespace, stale
files, duplicates), STATIC cluster endpoints (pool, health checks, outlier
detection), the admin listener, and what a pipe peer means for the HCM
(x-forwarded-for, internal_address_config.unix_sockets), access logs,
stats names and the admin's /clusters and /listeners."""
import json
import os
import shutil
import signal
import socket
import stat as st
import subprocess
import tempfile
import textwrap
import time

import pytest

from conftest import (SHARP, UPSTREAM, Proc, Sharp, admin_get, free_port, run_sharp_config,
                      stat)


class UnixUpstream(Proc):
    """The project's test upstream listening on a Unix socket path (or
    '@name' in the abstract namespace)."""

    def __init__(self, path, name="upstream"):
        self.path = path
        super().__init__([UPSTREAM, "--unix", path, "--name", name, "--quiet"], stdout=subprocess.PIPE)
        line = self.p.stdout.readline().decode()
        assert line.strip() == f"listening on unix:{path}", line


@pytest.fixture
def sockdir():
    # sun_path holds 107 bytes: keep the paths short
    d = tempfile.mkdtemp(prefix="sp-", dir="/tmp")
    yield d
    shutil.rmtree(d, ignore_errors=True)


def addr_yaml(a):
    """An Address: ("pipe", path[, mode]) or a TCP port."""
    if isinstance(a, tuple):
        mode = f", mode: {a[2]}" if len(a) > 2 else ""
        return f'{{ pipe: {{ path: "{a[1]}"{mode} }} }}'
    return f"{{ socket_address: {{ address: 127.0.0.1, port_value: {a} }} }}"


def pipe_bootstrap(admin, listeners, endpoints, hcm_extra="", cluster_extra="", access_log=None,
                   log_format=None):
    """listeners: [(name, address)], endpoints: [address] of one STATIC
    cluster 'app' routed to by every listener."""
    al = ""
    if access_log:
        fmt = ""
        if log_format:
            fmt = f"  log_format: {{ text_format_source: {{ inline_string: \"{log_format}\\n\" }} }}\n"
        al = ("access_log:\n- name: envoy.access_loggers.file\n  typed_config:\n"
              "    \"@type\": type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog\n"
              f"    path: {access_log}\n" + textwrap.indent(fmt, "  "))
    ls = ""
    for name, a in listeners:
        ls += f"""\
  - name: {name}
    address: {addr_yaml(a)}
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: ingress_http
{textwrap.indent(hcm_extra + al, '          ')}          route_config:
            virtual_hosts:
            - name: backend
              domains: ["*"]
              routes: [{{ match: {{ prefix: "/" }}, route: {{ cluster: app }} }}]
          http_filters:
          - name: envoy.filters.http.router
            typed_config: {{ "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router }}
"""
    eps = "".join(f"        - endpoint: {{ address: {addr_yaml(e)} }}\n" for e in endpoints)
    return f"""\
admin:
  address: {addr_yaml(admin)}
static_resources:
  listeners:
{ls}  clusters:
  - name: app
    type: STATIC
    connect_timeout: 1s
{textwrap.indent(cluster_extra, '    ')}    load_assignment:
      cluster_name: app
      endpoints:
      - lb_endpoints:
{eps}"""


def curl_unix(path, url_path="/", headers=(), abstract=False, timeout=10):
    """(status, body) of a GET through a Unix socket with curl."""
    opt = "--abstract-unix-socket" if abstract else "--unix-socket"
    args = ["curl", "-s", "-o", "-", "-w", "\n%{http_code}", opt, path, f"http://sharp{url_path}"]
    for h in headers:
        args += ["-H", h]
    r = subprocess.run(args, capture_output=True, text=True, timeout=timeout)
    body, _, code = r.stdout.rpartition("\n")
    return int(code or 0), body


def validate(tmp_path, yaml_text):
    f = tmp_path / "b.yaml"
    f.write_text(yaml_text)
    return subprocess.run([SHARP, "--mode", "validate", "-c", str(f)], capture_output=True, text=True,
                          timeout=20)


def start_sharp(procs, yaml_text, concurrency=2):
    s = Sharp(yaml_text, concurrency=concurrency)
    procs.append(s)
    return s


def wait_unix_ready(s, path, timeout=15):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if s.p.poll() is not None:
            raise RuntimeError("sharp exited: " + s.output())
        try:
            if curl_unix(path, "/ready", timeout=2)[0] == 200:
                return
        except subprocess.TimeoutExpired:
            pass
        time.sleep(0.05)
    raise TimeoutError("sharp not ready: " + s.output())


def wait_for(pred, timeout=10):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if pred():
            return True
        time.sleep(0.05)
    return False


# ---- listeners and upstreams on Unix sockets --------------------------------

def test_pipe_listener_to_pipe_upstream(procs, sockdir):
    up = UnixUpstream(os.path.join(sockdir, "up.sock"), name="unix-up")
    procs.append(up)
    lpath = os.path.join(sockdir, "l.sock")
    admin = free_port()
    log = os.path.join(sockdir, "access.log")
    run_sharp_config(procs, pipe_bootstrap(
        admin, [("l0", ("pipe", lpath))], [("pipe", up.path)], access_log=log,
        log_format="%DOWNSTREAM_REMOTE_ADDRESS%|%DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT%|"
                   "%DOWNSTREAM_LOCAL_ADDRESS%|%UPSTREAM_HOST%|%UPSTREAM_LOCAL_ADDRESS%|%RESPONSE_CODE%"), admin)
    for _ in range(20):  # several connections: both workers accept from the one socket
        code, body = curl_unix(lpath, "/echo")
        assert code == 200, body
        assert json.loads(body)["upstream"] == "unix-up"
    # Envoy's listener stat scope is the address as printed: the path
    assert stat(admin, f"listener.{lpath}.downstream_cx_total") == 20
    assert stat(admin, "cluster.app.upstream_rq_200") == 20
    assert stat(admin, "cluster.app.upstream_cx_connect_fail") == 0
    # an accepted Unix peer has no name: Envoy uses the socket's own (the
    # listener's path) for the remote address; the path is printed whole
    # with or without port; a Unix upstream connection has no local address
    assert wait_for(lambda: os.path.exists(log) and open(log).read().count("\n") >= 20)
    line = open(log).read().splitlines()[0]
    assert line == f"{lpath}|{lpath}|{lpath}|{up.path}|-|200"
    # /clusters and /listeners show the pipe as Envoy's addressToProtobufAddress does
    text = admin_get(admin, "/clusters")
    assert f"app::{up.path}::rq_total::20" in text
    hosts = json.loads(admin_get(admin, "/clusters?format=json"))["cluster_statuses"][0]["host_statuses"]
    assert hosts[0]["address"] == {"pipe": {"path": up.path}}
    ls = json.loads(admin_get(admin, "/listeners?format=json"))["listener_statuses"]
    assert ls == [{"name": "l0", "local_address": {"pipe": {"path": lpath}}}]
    # /config_dump echoes the configured addresses
    dump = json.loads(admin_get(admin, "/config_dump?resource=static_listeners"))
    assert dump["configs"][0]["listener"]["address"] == {"pipe": {"path": lpath}}
    dump = json.loads(admin_get(admin, "/config_dump?include_eds"))
    eds = [c for c in dump["configs"] if c["@type"].endswith("EndpointsConfigDump")][0]
    ep = eds["static_endpoint_configs"][0]["endpoint_config"]["endpoints"][0]["lb_endpoints"][0]
    assert ep["endpoint"]["address"] == {"pipe": {"path": up.path}}


def test_pipe_mode_applied_to_socket_file(procs, sockdir):
    up = UnixUpstream(os.path.join(sockdir, "up.sock"))
    procs.append(up)
    admin = free_port()
    p600, p666, pdef = (os.path.join(sockdir, n) for n in ("a.sock", "b.sock", "c.sock"))
    run_sharp_config(procs, pipe_bootstrap(
        admin, [("a", ("pipe", p600, "0600")), ("b", ("pipe", p666, 438)), ("c", ("pipe", pdef))],
        [("pipe", up.path)]), admin)
    assert st.S_ISSOCK(os.stat(p600).st_mode)
    assert st.S_IMODE(os.stat(p600).st_mode) == 0o600
    assert st.S_IMODE(os.stat(p666).st_mode) == 0o666
    # mode 0: not changed, the file keeps what bind and the umask gave it
    um = os.umask(0)
    os.umask(um)
    assert st.S_IMODE(os.stat(pdef).st_mode) == 0o777 & ~um
    for p in (p600, p666, pdef):
        assert curl_unix(p)[0] == 200
    dump = json.loads(admin_get(admin, "/config_dump?resource=static_listeners"))
    assert dump["configs"][0]["listener"]["address"] == {"pipe": {"path": p600, "mode": 384}}


def test_named_unix_client_is_the_remote_address(procs, sockdir):
    """A client that binds its own name before connecting is known by it
    (only an unnamed peer falls back to the listener's path)."""
    up = UnixUpstream(os.path.join(sockdir, "up.sock"))
    procs.append(up)
    lpath = os.path.join(sockdir, "l.sock")
    cpath = os.path.join(sockdir, "client.sock")
    admin = free_port()
    log = os.path.join(sockdir, "access.log")
    run_sharp_config(procs, pipe_bootstrap(admin, [("l0", ("pipe", lpath))], [("pipe", up.path)], access_log=log,
                                           log_format="%DOWNSTREAM_REMOTE_ADDRESS%|%DOWNSTREAM_LOCAL_ADDRESS%"),
                     admin)
    c = socket.socket(socket.AF_UNIX)
    c.bind(cpath)
    c.connect(lpath)
    c.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    data = b""
    while True:
        chunk = c.recv(65536)
        if not chunk:
            break
        data += chunk
    c.close()
    assert data.startswith(b"HTTP/1.1 200")
    assert wait_for(lambda: os.path.exists(log) and open(log).read().strip())
    assert open(log).read().splitlines()[0] == f"{cpath}|{lpath}"


def test_mode_out_of_range_refused(tmp_path):
    y = pipe_bootstrap(free_port(), [("l", ("pipe", "/tmp/sp-x.sock", 512))], [9])
    r = validate(tmp_path, y)
    assert r.returncode != 0
    assert "static_resources.listeners[0].address.pipe.mode" in r.stderr and "511" in r.stderr, r.stderr


def test_empty_and_too_long_paths_refused(tmp_path):
    r = validate(tmp_path, pipe_bootstrap(free_port(), [("l", ("pipe", ""))], [9]))
    assert r.returncode != 0 and "pipe.path" in r.stderr, r.stderr
    long = "/tmp/" + "x" * 110
    r = validate(tmp_path, pipe_bootstrap(free_port(), [("l", ("pipe", long))], [9]))
    assert r.returncode != 0
    assert "exceeds maximum UNIX domain socket path size of 108" in r.stderr, r.stderr
    # endpoints are checked the same way
    r = validate(tmp_path, pipe_bootstrap(free_port(), [("l", free_port())], [("pipe", long)]))
    assert r.returncode != 0
    assert "load_assignment.endpoints[0].lb_endpoints[0].endpoint.address.pipe" in r.stderr, r.stderr


def test_abstract_namespace(procs):
    name = f"sharp-it-{os.getpid()}-{free_port()}"
    up = UnixUpstream(f"@{name}-up", name="abstract-up")
    procs.append(up)
    admin = free_port()
    log = tempfile.mktemp(prefix="sharp-al-", dir="/tmp")
    run_sharp_config(procs, pipe_bootstrap(admin, [("l0", ("pipe", f"@{name}"))], [("pipe", up.path)],
                                           access_log=log,
                                           log_format="%DOWNSTREAM_LOCAL_ADDRESS%|%UPSTREAM_HOST%"), admin)
    code, body = curl_unix(name, "/echo", abstract=True)
    assert code == 200 and json.loads(body)["upstream"] == "abstract-up"
    assert not os.path.exists(f"@{name}")  # nothing in the filesystem
    assert stat(admin, f"listener.@{name}.downstream_cx_total") == 1
    assert wait_for(lambda: os.path.exists(log) and open(log).read().strip())
    assert open(log).read().splitlines()[0] == f"@{name}|@{name}-up"
    os.unlink(log)


def test_abstract_with_mode_refused(tmp_path):
    r = validate(tmp_path, pipe_bootstrap(free_port(), [("l", ("pipe", "@x", "0600"))], [9]))
    assert r.returncode != 0
    assert "Cannot set mode for Abstract AF_UNIX sockets" in r.stderr, r.stderr


def test_stale_file_replaced_and_left_on_exit(procs, sockdir):
    """Envoy unlinks whatever is at the path before bind (a socket left by a
    previous run) and does not remove the socket file when it exits."""
    up = UnixUpstream(os.path.join(sockdir, "up.sock"))
    procs.append(up)
    lpath = os.path.join(sockdir, "l.sock")
    # a stale socket: bound by a process that is gone
    s = socket.socket(socket.AF_UNIX)
    s.bind(lpath)
    s.close()
    assert st.S_ISSOCK(os.stat(lpath).st_mode)
    with pytest.raises(ConnectionRefusedError):
        c = socket.socket(socket.AF_UNIX)
        try:
            c.connect(lpath)
        finally:
            c.close()
    admin = free_port()
    y = pipe_bootstrap(admin, [("l0", ("pipe", lpath))], [("pipe", up.path)])
    first = run_sharp_config(procs, y, admin)
    assert curl_unix(lpath)[0] == 200
    assert first.stop() == 0
    assert st.S_ISSOCK(os.stat(lpath).st_mode)  # left in place, as Envoy does
    assert curl_unix(lpath)[0] == 0  # nobody listens
    # the next start takes the path over
    run_sharp_config(procs, y, admin)
    assert curl_unix(lpath)[0] == 200
    # a regular file at the path is unlinked too
    second = procs[-1]
    assert second.stop() == 0
    os.unlink(lpath)
    with open(lpath, "w") as f:
        f.write("not a socket")
    run_sharp_config(procs, y, admin)
    assert st.S_ISSOCK(os.stat(lpath).st_mode)
    assert curl_unix(lpath)[0] == 200


def test_unbindable_path_is_a_start_error(procs, sockdir):
    lpath = os.path.join(sockdir, "missing-dir", "l.sock")
    admin = free_port()
    s = start_sharp(procs, pipe_bootstrap(admin, [("l0", ("pipe", lpath))], [9]))
    assert s.p.wait(timeout=20) == 1
    assert f"cannot bind '{lpath}': No such file or directory" in s.output()
    # the admin's too
    apath = os.path.join(sockdir, "missing-dir", "admin.sock")
    s = start_sharp(procs, pipe_bootstrap(("pipe", apath), [("l0", free_port())], [9]))
    assert s.p.wait(timeout=20) == 1
    assert f"error: admin listener {apath}: cannot bind '{apath}': No such file or directory" in s.output()


def test_duplicate_pipe_path_refused(tmp_path):
    y = pipe_bootstrap(free_port(), [("a", ("pipe", "/tmp/sp-dup.sock")), ("b", ("pipe", "/tmp/sp-dup.sock"))],
                       [9])
    r = validate(tmp_path, y)
    assert r.returncode != 0
    assert "static_resources.listeners[1].address" in r.stderr
    assert "duplicate address '/tmp/sp-dup.sock'" in r.stderr, r.stderr
    # a path and the abstract name spelled the same are different addresses,
    # and so are two different paths
    y = pipe_bootstrap(free_port(), [("a", ("pipe", "/tmp/sp-a.sock")), ("b", ("pipe", "@/tmp/sp-a.sock"))], [9])
    assert validate(tmp_path, y).returncode == 0
    # the admin's path is taken too
    y = pipe_bootstrap(("pipe", "/tmp/sp-adm.sock"), [("a", ("pipe", "/tmp/sp-adm.sock"))], [9])
    r = validate(tmp_path, y)
    assert r.returncode != 0
    assert "listener 'a' is on the admin's Unix socket path '/tmp/sp-adm.sock'" in r.stderr, r.stderr


# ---- the HCM and a Unix socket peer ----------------------------------------

@pytest.mark.parametrize("hcm,internal", [
    ("use_remote_address: true\ninternal_address_config: { unix_sockets: true }\n", True),
    ("use_remote_address: true\ninternal_address_config: { unix_sockets: false }\n", False),
    # cidr_ranges concern IP peers only
    ("use_remote_address: true\ninternal_address_config:\n  cidr_ranges: [{ address_prefix: 0.0.0.0, prefix_len: 0 }]\n",
     False),
    ("use_remote_address: true\n", False),
])
def test_unix_peer_forwarding_and_internal(procs, sockdir, hcm, internal):
    up = UnixUpstream(os.path.join(sockdir, "up.sock"))
    procs.append(up)
    lpath = os.path.join(sockdir, "l.sock")
    admin = free_port()
    run_sharp_config(procs, pipe_bootstrap(admin, [("l0", ("pipe", lpath))], [("pipe", up.path)], hcm_extra=hcm),
                     admin)
    code, body = curl_unix(lpath, "/echo", headers=["x-envoy-internal: true", "x-envoy-upstream-rq-timeout-ms: 9000"])
    assert code == 200
    h = {k.lower(): v for k, v in json.loads(body)["headers"]}
    # Envoy's appendXff adds IP peers only; a Unix peer gets no
    # x-envoy-external-address either
    assert "x-forwarded-for" not in h
    assert "x-envoy-external-address" not in h
    assert h["x-forwarded-proto"] == "http"
    if internal:
        assert h["x-envoy-internal"] == "true"
        assert h["x-envoy-expected-rq-timeout-ms"] == "9000"  # the client's timeout was honoured
    else:
        assert "x-envoy-internal" not in h  # a client cannot claim it
        assert h["x-envoy-expected-rq-timeout-ms"] == "15000"  # the route's, not the client's


def test_unix_peer_appends_to_existing_xff_nothing(procs, sockdir):
    up = UnixUpstream(os.path.join(sockdir, "up.sock"))
    procs.append(up)
    lpath = os.path.join(sockdir, "l.sock")
    admin = free_port()
    run_sharp_config(procs, pipe_bootstrap(admin, [("l0", ("pipe", lpath))], [("pipe", up.path)],
                                           hcm_extra="use_remote_address: true\n"
                                                     "internal_address_config: { unix_sockets: true }\n"), admin)
    code, body = curl_unix(lpath, "/echo", headers=["x-forwarded-for: 10.1.2.3"])
    h = {k.lower(): v for k, v in json.loads(body)["headers"]}
    assert h["x-forwarded-for"] == "10.1.2.3"
    # an XFF from the client means the request is not internal
    assert "x-envoy-internal" not in h


# ---- upstream behaviour over Unix sockets -----------------------------------

def test_pipe_upstream_connect_failure(procs, sockdir):
    listen, admin = free_port(), free_port()
    log = os.path.join(sockdir, "access.log")
    run_sharp_config(procs, pipe_bootstrap(admin, [("l0", listen)], [("pipe", os.path.join(sockdir, "none.sock"))],
                                           access_log=log, log_format="%RESPONSE_CODE% %RESPONSE_FLAGS%"), admin)
    r = subprocess.run(["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", f"http://127.0.0.1:{listen}/"],
                       capture_output=True, text=True, timeout=10)
    assert r.stdout == "503"
    assert stat(admin, "cluster.app.upstream_cx_connect_fail") == 1
    assert wait_for(lambda: os.path.exists(log) and open(log).read().strip())
    assert open(log).read().splitlines()[0] == "503 UF"


def test_pipe_upstream_keepalive_and_tcp_listener(procs, sockdir):
    up = UnixUpstream(os.path.join(sockdir, "up.sock"))
    procs.append(up)
    listen, admin = free_port(), free_port()
    run_sharp_config(procs, pipe_bootstrap(admin, [("l0", listen)], [("pipe", up.path)]), admin, concurrency=1)
    for _ in range(5):
        r = subprocess.run(["curl", "-s", "-D", "-", "-o", "/dev/null", f"http://127.0.0.1:{listen}/"],
                           capture_output=True, text=True, timeout=10)
        assert r.stdout.startswith("HTTP/1.1 200")
    # one worker: the pooled Unix connection is reused
    assert stat(admin, "cluster.app.upstream_cx_total") == 1
    assert stat(admin, "cluster.app.upstream_rq_total") == 5


@pytest.mark.parametrize("check", [
    "http_health_check: { path: /status/200 }",
    "tcp_health_check: {}",  # connect only: a Unix socket answers at once
])
def test_pipe_hosts_health_checked(procs, sockdir, check):
    good = UnixUpstream(os.path.join(sockdir, "good.sock"), name="good")
    procs.append(good)
    bad = os.path.join(sockdir, "bad.sock")  # nothing listens
    listen, admin = free_port(), free_port()
    hc = ("health_checks:\n- timeout: 1s\n  interval: 0.2s\n  no_traffic_interval: 0.2s\n"
          f"  unhealthy_threshold: 1\n  healthy_threshold: 1\n  {check}\n")
    run_sharp_config(procs, pipe_bootstrap(admin, [("l0", listen)], [("pipe", good.path), ("pipe", bad)],
                                           cluster_extra=hc), admin)
    assert stat(admin, "cluster.app.health_check.success") >= 1
    assert stat(admin, "cluster.app.health_check.failure") >= 1
    hosts = json.loads(admin_get(admin, "/clusters?format=json"))["cluster_statuses"][0]["host_statuses"]
    by_path = {h["address"]["pipe"]["path"]: h["health_status"] for h in hosts}
    assert by_path[good.path].get("failed_active_health_check") is not True
    assert by_path[bad]["failed_active_health_check"] is True
    for _ in range(6):  # only the healthy host is chosen
        r = subprocess.run(["curl", "-s", f"http://127.0.0.1:{listen}/"], capture_output=True, text=True, timeout=10)
        assert r.stdout == "hello from good\n"
    # checks keep running over fresh Unix connections
    n = stat(admin, "cluster.app.health_check.success")
    assert wait_for(lambda: stat(admin, "cluster.app.health_check.success") >= n + 2)


def test_alt_port_with_pipe_host_refused(tmp_path):
    hc = ("health_checks:\n- timeout: 1s\n  interval: 1s\n  unhealthy_threshold: 1\n  healthy_threshold: 1\n"
          "  alt_port: 8080\n  tcp_health_check: {}\n")
    r = validate(tmp_path, pipe_bootstrap(free_port(), [("l", free_port())], [("pipe", "/tmp/sp-u.sock")],
                                          cluster_extra=hc))
    assert r.returncode != 0
    assert "health_checks[0].alt_port" in r.stderr and "Unix domain socket" in r.stderr, r.stderr


def test_pipe_host_outlier_ejection(procs, sockdir):
    a = UnixUpstream(os.path.join(sockdir, "a.sock"), name="a")
    procs.append(a)
    listen, admin = free_port(), free_port()
    od = ("outlier_detection:\n  consecutive_5xx: 3\n  interval: 0.2s\n  base_ejection_time: 30s\n"
          "  max_ejection_percent: 100\n")
    run_sharp_config(procs, pipe_bootstrap(admin, [("l0", listen)], [("pipe", a.path)], cluster_extra=od), admin,
                     concurrency=1)
    for _ in range(3):
        subprocess.run(["curl", "-s", "-o", "/dev/null", f"http://127.0.0.1:{listen}/status/503"], timeout=10)
    assert wait_for(lambda: stat(admin, "cluster.app.outlier_detection.ejections_enforced_total") == 1)
    hosts = json.loads(admin_get(admin, "/clusters?format=json"))["cluster_statuses"][0]["host_statuses"]
    assert hosts[0]["address"] == {"pipe": {"path": a.path}}
    assert hosts[0]["health_status"]["failed_outlier_check"] is True


# ---- the admin listener -------------------------------------------------------

def test_admin_on_pipe(procs, sockdir):
    up = UnixUpstream(os.path.join(sockdir, "up.sock"))
    procs.append(up)
    apath = os.path.join(sockdir, "admin.sock")
    lpath = os.path.join(sockdir, "l.sock")
    s = start_sharp(procs, pipe_bootstrap(("pipe", apath, "0660"), [("l0", ("pipe", lpath))], [("pipe", up.path)]))
    wait_unix_ready(s, apath)
    assert st.S_IMODE(os.stat(apath).st_mode) == 0o660
    assert curl_unix(lpath)[0] == 200
    code, body = curl_unix(apath, "/stats?format=json")
    assert code == 200
    names = {x.get("name"): x.get("value") for x in json.loads(body)["stats"]}
    assert names[f"listener.{lpath}.downstream_cx_total"] == 1
    assert "admin on unix:" + apath in s.output()
