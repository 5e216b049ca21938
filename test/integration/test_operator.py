"""Operator basics as Envoy users rely on them: signals, log reopening,
command line flags, the application log, admin endpoints and server stats.
Real clients (curl, python, mv + kill) against the real binary."""
import http.client
import json
import os
import re
import signal
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request

import pytest

from conftest import (ALLOCATOR, SANITIZED, SHARP, SLOW, Sharp, Upstream, admin_get, bootstrap_yaml, free_port,
                      non_reading_clients, stat, wait_port)


def admin_post(port, path):
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", method="POST")
    try:
        with urllib.request.urlopen(req, timeout=5) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def get(url, headers=None):
    req = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=5) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def wait_for(pred, timeout=5.0):
    deadline = time.time() + timeout * SLOW
    while time.time() < deadline:
        v = pred()
        if v:
            return v
        time.sleep(0.05)
    return pred()


def read(path):
    try:
        with open(path) as f:
            return f.read()
    except FileNotFoundError:
        return ""


def start(procs, yaml_text, admin, extra=(), concurrency=2):
    s = Sharp(yaml_text, concurrency=concurrency, extra=extra)
    procs.append(s)
    s.wait_ready(admin)
    return s


# ---- 1. signals -------------------------------------------------------------

def test_sigusr1_reopens_access_log_after_mv(proxy):
    """logrotate: mv the file away, SIGUSR1, and new lines go to a new file
    under the old name; the moved file keeps the old lines."""
    assert get(proxy.url + "/before")[0] == 200
    assert wait_for(lambda: "/before" in read(proxy.access_log), 5)
    rotated = proxy.access_log + ".1"
    os.rename(proxy.access_log, rotated)
    proxy.sharp.p.send_signal(signal.SIGUSR1)
    assert wait_for(lambda: os.path.exists(proxy.access_log), 5), "SIGUSR1 did not recreate the log"
    assert get(proxy.url + "/after")[0] == 200
    assert wait_for(lambda: "/after" in read(proxy.access_log), 5)
    assert "/after" not in read(rotated)
    assert "/before" not in read(proxy.access_log)
    assert proxy.sharp.p.poll() is None
    assert admin_get(proxy.admin, "/ready").strip() == "LIVE"


def test_admin_reopen_logs(proxy):
    assert get(proxy.url + "/one")[0] == 200
    assert wait_for(lambda: "/one" in read(proxy.access_log), 5)
    os.rename(proxy.access_log, proxy.access_log + ".old")
    assert admin_post(proxy.admin, "/reopen_logs") == (200, "OK\n")
    assert os.path.exists(proxy.access_log)
    assert get(proxy.url + "/two")[0] == 200
    assert wait_for(lambda: "/two" in read(proxy.access_log), 5)
    assert "/two" not in read(proxy.access_log + ".old")
    # A mutation: GET is refused as Envoy does.
    try:
        urllib.request.urlopen(f"http://127.0.0.1:{proxy.admin}/reopen_logs", timeout=5)
        assert False, "GET /reopen_logs must be refused"
    except urllib.error.HTTPError as e:
        assert e.code == 405


def test_sighup_is_ignored(proxy):
    proxy.sharp.p.send_signal(signal.SIGHUP)
    time.sleep(0.3)
    assert proxy.sharp.p.poll() is None
    assert get(proxy.url + "/")[0] == 200
    assert "caught and eating SIGHUP" in proxy.sharp.output()


def test_sigusr1_reopens_log_path(procs, upstream):
    listen, admin = free_port(), free_port()
    d = tempfile.mkdtemp(prefix="sharp-lp-")
    logp = os.path.join(d, "sharp.log")
    start(procs, bootstrap_yaml(listen, admin, {"b": [upstream.port]}), admin,
          extra=("--log-path", logp))
    assert wait_for(lambda: "sharp started" in read(logp))
    os.rename(logp, logp + ".1")
    procs[-1].p.send_signal(signal.SIGUSR1)
    # The reopen message itself is logged after the reopen, to the new file.
    assert wait_for(lambda: "Reopening access logs" in read(logp) or os.path.exists(logp))
    assert admin_post(admin, "/logging?level=info")[0] == 200
    assert wait_for(lambda: "change all log levels" in read(logp))
    assert "change all log levels" not in read(logp + ".1")


# ---- 2. command line --------------------------------------------------------

def test_config_yaml_merged_over_config_file(procs, upstream):
    """-c FILE --config-yaml YAML: Envoy's bootstrap.MergeFrom. Repeated
    fields are appended (a second listener and cluster), scalars replaced
    (node.id), the rest kept from the file."""
    other = Upstream(name="other")
    procs.append(other)
    listen, listen2, admin = free_port(), free_port(), free_port()
    base = bootstrap_yaml(listen, admin, {"b": [upstream.port]}) + "node: {id: from-file, cluster: file-cluster}\n"
    over = f"""
node: {{id: from-yaml}}
static_resources:
  listeners:
  - name: second
    address: {{ socket_address: {{ address: 127.0.0.1, port_value: {listen2} }} }}
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: second
          route_config:
            virtual_hosts:
            - name: v
              domains: ["*"]
              routes: [{{match: {{prefix: "/"}}, route: {{cluster: other}}}}]
          http_filters:
          - name: envoy.filters.http.router
            typed_config: {{"@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router}}
  clusters:
  - name: other
    type: STATIC
    load_assignment:
      cluster_name: other
      endpoints: [{{lb_endpoints: [{{endpoint: {{address: {{socket_address: {{address: 127.0.0.1, port_value: {other.port}}}}}}}}}]}}]
"""
    s = start(procs, base, admin, extra=("--config-yaml", over))
    info = json.loads(admin_get(admin, "/server_info"))
    assert info["node"]["id"] == "from-yaml"
    assert info["node"]["cluster"] == "file-cluster"
    # Both listeners serve, each to its own cluster.
    st, body = get(f"http://127.0.0.1:{listen}/x")
    assert st == 200
    st, body = get(f"http://127.0.0.1:{listen2}/x")
    assert st == 200
    assert stat(admin, "cluster.b.upstream_rq_total") == 1
    assert stat(admin, "cluster.other.upstream_rq_total") == 1
    names = admin_get(admin, "/listeners")
    assert "listener_0::" in names and "second::" in names


def test_config_yaml_merge_errors_name_their_text(procs, upstream):
    admin = free_port()
    d = tempfile.mkdtemp()
    cfg = os.path.join(d, "b.yaml")
    with open(cfg, "w") as f:
        f.write(bootstrap_yaml(free_port(), admin, {"b": [upstream.port]}))
    r = subprocess.run([SHARP, "-c", cfg, "--config-yaml", "node: {idd: x}", "--mode", "validate"],
                       capture_output=True, text=True, timeout=20)
    assert r.returncode == 1
    assert "--config-yaml" in r.stderr and "idd" in r.stderr, r.stderr
    # A merged config that is wrong as a whole (a duplicate listener name).
    r = subprocess.run([SHARP, "-c", cfg, "--mode", "validate", "--config-yaml",
                        "static_resources: {clusters: [{name: b, type: STATIC}]}"],
                       capture_output=True, text=True, timeout=20)
    assert r.returncode == 1, r.stdout
    assert "merged with --config-yaml" in r.stderr, r.stderr


def test_validate_mode_creates_no_files(upstream):
    d = tempfile.mkdtemp(prefix="sharp-val-")
    al = os.path.join(d, "access.log")
    logp = os.path.join(d, "sharp.log")
    cfg = os.path.join(d, "b.yaml")
    with open(cfg, "w") as f:
        f.write(bootstrap_yaml(free_port(), free_port(), {"b": [upstream.port]}, access_log=al))
    r = subprocess.run([SHARP, "-c", cfg, "--mode", "validate", "--log-path", logp],
                       capture_output=True, text=True, timeout=20)
    assert r.returncode == 0, r.stderr
    assert "OK" in r.stdout
    assert sorted(os.listdir(d)) == ["b.yaml"]
    # An access log that could not be created is still an error.
    with open(cfg, "w") as f:
        f.write(bootstrap_yaml(free_port(), free_port(), {"b": [upstream.port]},
                               access_log="/nonexistent-dir/x/access.log"))
    r = subprocess.run([SHARP, "-c", cfg, "--mode", "validate"], capture_output=True, text=True, timeout=20)
    assert r.returncode == 1
    assert "cannot open access log '/nonexistent-dir/x/access.log'" in r.stderr


def test_restart_epoch_and_base_id(procs, upstream):
    r = subprocess.run([SHARP, "--restart-epoch", "1", "--mode", "validate"], capture_output=True, text=True,
                       timeout=20)
    assert r.returncode == 1
    assert "hot restart is not supported" in r.stderr
    listen, admin = free_port(), free_port()
    start(procs, bootstrap_yaml(listen, admin, {"b": [upstream.port]}), admin,
          extra=("--restart-epoch", "0", "--base-id", "7"))
    info = json.loads(admin_get(admin, "/server_info"))
    assert info["command_line_options"]["restart_epoch"] == 0
    assert info["command_line_options"]["base_id"] == "7"
    assert stat(admin, "server.hot_restart_epoch") == 0


def test_log_flags_refused_clearly():
    for args, msg in [(["--log-format", "[%Q] %v"], "unsupported flag '%Q' at offset 1"),
                      (["--component-log-level", "upstream:foo:bar"],
                       "component log level not correctly specified 'upstream:foo:bar'"),
                      (["--component-log-level", "nope:debug"], "invalid component specified 'nope'"),
                      (["--component-log-level", "upstream:loud"], "invalid log level specified 'loud'"),
                      (["-l", "loud"], "invalid log level specified 'loud'")]:
        r = subprocess.run([SHARP, *args, "--mode", "validate"], capture_output=True, text=True, timeout=20)
        assert r.returncode == 1, args
        assert msg in r.stderr, (args, r.stderr)


def test_log_format_and_component_levels(procs, upstream):
    listen, admin = free_port(), free_port()
    s = start(procs, bootstrap_yaml(listen, admin, {"b": [upstream.port]}), admin,
              extra=("--log-format", '{"lvl":"%l","logger":"%n","src":"%s:%#","msg":"%j"}',
                     "--component-log-level", "router:debug,pool:trace"))
    assert get(f"http://127.0.0.1:{listen}/fmt?q=\"x\"")[0] == 200
    lines = [json.loads(l) for l in wait_for(lambda: [l for l in s.output().splitlines() if '"router"' in l])]
    assert lines and all(l["lvl"] == "debug" for l in lines)
    out = s.output()
    # Every line is JSON (%j escapes the message).
    for l in out.splitlines():
        json.loads(l)
    assert any(json.loads(l)["logger"] == "pool" and json.loads(l)["lvl"] == "trace" for l in out.splitlines())
    # http stays at info: no request headers dumped.
    assert not any(json.loads(l)["logger"] == "http" for l in out.splitlines())
    info = json.loads(admin_get(admin, "/server_info"))
    assert info["command_line_options"]["component_log_level"] == "router:debug,pool:trace"


def test_application_log_config_formats(procs, upstream):
    """application_log_config.log_format in the bootstrap: text_format is
    --log-format's pattern (Istio's, here); json_format prints each line as
    the Struct with its patterns filled in; either conflicts with --log-format;
    %v and %_ would break JSON and are refused as Envoy refuses them."""
    listen, admin = free_port(), free_port()
    base = bootstrap_yaml(listen, admin, {"b": [upstream.port]})
    istio = "application_log_config:\n  log_format:\n    text_format: \"%Y-%m-%dT%T.%fZ\\t%l\\tenvoy %n %g:%#\\t%v\\tthread=%t\"\n"
    s = start(procs, istio + base, admin, concurrency=1, extra=("-l", "debug"))
    assert get(f"http://127.0.0.1:{listen}/alc")[0] == 200
    out = wait_for(lambda: (lambda o: o if "cluster 'b' match for URL '/alc'" in o else "")(s.output()))
    assert re.search(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z\tdebug\tenvoy router [\w/]+\.c:\d+\t"
                     r"\[C\d+\]\[S\d+\] cluster 'b' match for URL '/alc' \(virtual host 'backend', route ''\)\tthread=\d+$", out, re.M), out[-2000:]

    listen, admin = free_port(), free_port()
    js = ("application_log_config:\n  log_format:\n    json_format:\n      level: \"%l\"\n"
          "      logger: \"%n\"\n      message: \"%j\"\n      where: { file: \"%s\", line: \"%#\" }\n")
    s = start(procs, js + bootstrap_yaml(listen, admin, {"b": [upstream.port]}), admin, concurrency=1,
              extra=("-l", "debug"))
    assert get(f"http://127.0.0.1:{listen}/json?q=\"x\"")[0] == 200
    wait_for(lambda: "/json" in s.output())
    lines = [json.loads(l) for l in s.output().splitlines()]  # every line is JSON
    assert any(l["logger"] == "router" and l["level"] == "debug" and "/json?q=\"x\"" in l["message"]
               for l in lines), lines[-5:]
    assert all(set(l) == {"level", "logger", "message", "where"} and l["where"]["file"].endswith(".c")
               for l in lines)

    for text, args, msg in [
            (js, ("--log-format", "%v"),
             "application_log_config.log_format: Only one of ApplicationLogConfig.log_format or CLI option "
             "--log-format can be specified."),
            (js.replace("%j", "%v"), (), "setJsonLogFormat error: INVALID_ARGUMENT: Usage of %v is unavailable "
             "for JSON log formats"),
            (js.replace("%j", "%_"), (), "Usage of %_ is unavailable for JSON log formats"),
            (istio.replace("%t", "%Q"), (), "application_log_config.log_format.text_format: unsupported flag '%Q'")]:
        with tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False) as f:
            f.write(text + base)
        r = subprocess.run([SHARP, "-c", f.name, "--mode", "validate", *args], capture_output=True, text=True,
                           timeout=20)
        os.unlink(f.name)
        assert r.returncode == 1 and msg in r.stderr, (args, r.stderr)


# ---- 3. request logs and /logging ---------------------------------------------

def test_debug_logs_follow_a_request(procs, upstream):
    listen, admin = free_port(), free_port()
    s = start(procs, bootstrap_yaml(listen, admin, {"b": [upstream.port]}), admin, concurrency=1,
              extra=("-l", "debug"))
    c = http.client.HTTPConnection("127.0.0.1", listen, timeout=5)
    for path in ("/first", "/second"):
        c.request("GET", path, headers={"X-Trace-Me": "yes"})
        assert c.getresponse().read() is not None
    c.close()
    assert get(f"http://127.0.0.1:{listen}/third")[0] == 200
    out = wait_for(lambda: (lambda o: o if "[C" in o and "response complete" in o else "")(s.output()))
    line = r"^\[\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3}\]\[\d+\]\[debug\]\[%s\] \[[\w/]+\.c:\d+\] "
    assert re.search(line % "http" + r"\[C\d+\]\[S\d+\] request headers complete \(end_stream=true\):\n"
                     r"':method', 'GET'\n':path', '/first'", out, re.M), out[-3000:]
    assert "'x-trace-me', 'yes'" in out
    assert re.search(line % "router" + r"\[C\d+\]\[S\d+\] cluster 'b' match for URL '/first'", out, re.M)
    assert re.search(line % "router" + r"\[C\d+\]\[S\d+\] try 1: host 127\.0\.0\.1:%d chosen in cluster 'b'"
                     % upstream.port, out, re.M)
    assert re.search(line % "pool" + r"\[C\d+\] creating a new HTTP/1\.1 connection to 127\.0\.0\.1:%d" % upstream.port,
                     out, re.M)
    assert re.search(line % "connection" + r"\[C\d+\] connected to", out, re.M)
    # The second request and the third connection reuse the pooled connection.
    assert re.search(line % "pool" + r"\[C\d+\] using existing connection", out, re.M)
    assert len(re.findall(r"creating a new HTTP/1.1 connection", out)) == 1
    assert re.search(line % "http" + r"\[C\d+\]\[S\d+\] encoding headers via codec \(end_stream=false\):\n"
                     r"':status', '200'", out, re.M)
    assert re.search(line % "conn_handler" + r"\[C\d+\] new connection from 127\.0\.0\.1:\d+", out, re.M)


def test_local_reply_and_retry_logs(procs, upstream):
    listen, admin = free_port(), free_port()
    dead = free_port()  # nothing listens there
    routes = ('- match: { prefix: "/dead" }\n'
              '  route: { cluster: dead, retry_policy: { retry_on: connect-failure, num_retries: 1 } }\n'
              '- match: { prefix: "/" }\n  route: { cluster: b }\n')
    y = bootstrap_yaml(listen, admin, {"b": [upstream.port], "dead": [dead]}, routes=routes)
    y = y.replace("domains: [\"*\"]", "domains: [\"known\"]")
    s = start(procs, y, admin, extra=("--component-log-level", "router:debug,http:debug"))
    assert get(f"http://127.0.0.1:{listen}/x", {"Host": "unknown"})[0] == 404
    assert get(f"http://127.0.0.1:{listen}/dead", {"Host": "known"})[0] == 503
    out = wait_for(lambda: (lambda o: o if "connection_failure" in o else "")(s.output()))
    assert re.search(r"\[debug\]\[router\] .*no route match for URL '/x'", out), out[-3000:]
    assert re.search(r"\[debug\]\[http\] .*Sending local reply with details route_not_found \(status 404", out)
    assert re.search(r"\[debug\]\[router\] .*performing retry 1 of cluster 'dead'", out)
    assert re.search(r"\[debug\]\[http\] .*Sending local reply with details "
                     r"upstream_reset_before_response_started\{connection_failure\} \(status 503", out)
    # pool stays at info: none of its lines.
    assert "][pool]" not in out


def test_admin_logging(procs, upstream):
    listen, admin = free_port(), free_port()
    s = start(procs, bootstrap_yaml(listen, admin, {"b": [upstream.port]}), admin)
    st, body = admin_post(admin, "/logging")
    assert st == 200
    assert body.startswith("active loggers:\n")
    levels = dict(re.findall(r"^  (\w+): (\w+)$", body, re.M))
    for name in ("admin", "config", "connection", "http", "main", "pool", "router", "upstream"):
        assert levels[name] == "info", name
    # paths= changes only the named loggers.
    st, body = admin_post(admin, "/logging?paths=router:debug,http:trace")
    assert st == 200
    levels = dict(re.findall(r"^  (\w+): (\w+)$", body, re.M))
    assert levels["router"] == "debug" and levels["http"] == "trace"
    assert levels["pool"] == "info" and levels["upstream"] == "info"
    # <logger>=<level>
    st, body = admin_post(admin, "/logging?pool=warning")
    assert dict(re.findall(r"^  (\w+): (\w+)$", body, re.M))["pool"] == "warning"
    # The change is live: a request now logs at router debug, not pool.
    assert get(f"http://127.0.0.1:{listen}/live")[0] == 200
    out = wait_for(lambda: (lambda o: o if "match for URL '/live'" in o else "")(s.output()))
    assert "][pool]" not in out
    assert "change log level: name='router' level='debug'" in out
    # level= sets all of them.
    st, body = admin_post(admin, "/logging?level=error")
    assert set(dict(re.findall(r"^  (\w+): (\w+)$", body, re.M)).values()) == {"error"}
    # Errors: Envoy's messages and usage, nothing changed.
    for q, msg in [("paths=router:loud", "unknown logger level"), ("nope=debug", "unknown logger name"),
                   ("paths=router", "empty logger name or empty logger level"),
                   ("paths=router:debug,nope:debug", "unknown logger name"),
                   ("level=debug&pool=info", "invalid number of parameters")]:
        st, body = admin_post(admin, "/logging?" + q)
        assert st == 400 and body.startswith(f"error: {msg}\n\nusage: /logging?<name>=<level>"), (q, body)
        assert set(dict(re.findall(r"^  (\w+): (\w+)$", body, re.M)).values()) == {"error"}, q
    # A mutation: GET is refused as Envoy does.
    try:
        urllib.request.urlopen(f"http://127.0.0.1:{admin}/logging", timeout=5)
        assert False
    except urllib.error.HTTPError as e:
        assert e.code == 405


# ---- 5. access log of local replies ---------------------------------------------

def raw(port, data, timeout=3):
    s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    s.sendall(data)
    out = b""
    try:
        while True:
            d = s.recv(65536)
            if not d:
                break
            out += d
    except socket.timeout:
        pass
    s.close()
    return out


def test_local_replies_are_access_logged(procs, upstream):
    listen, admin = free_port(), free_port()
    al = os.path.join(tempfile.mkdtemp(prefix="sharp-al-"), "access.log")
    routes = ('- match: { prefix: "/dead" }\n  route: { cluster: dead }\n'
              '- match: { prefix: "/" }\n  route: { cluster: b }\n')
    y = bootstrap_yaml(listen, admin, {"b": [upstream.port], "dead": [free_port()]}, routes=routes,
                       access_log=al)
    y = y.replace("domains: [\"*\"]", "domains: [\"known\", \"127.0.0.1:%d\"]" % listen)
    start(procs, y, admin)
    out = raw(listen, b"GET /old HTTP/1.0\r\nHost: known\r\n\r\n")
    assert out.startswith(b"HTTP/1.1 426") and out.count(b"HTTP/1.1") == 1, out
    out = raw(listen, b"GET /nohost HTTP/1.1\r\n\r\n")
    assert out.startswith(b"HTTP/1.1 400") and out.count(b"HTTP/1.1") == 1, out
    out = raw(listen, b"POST /badlen HTTP/1.1\r\nHost: known\r\nContent-Length: zz\r\n\r\n")
    assert out.startswith(b"HTTP/1.1 400"), out
    r = subprocess.run(["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", "-H", "Host: other",
                        f"http://127.0.0.1:{listen}/unrouted"], capture_output=True, text=True, timeout=10)
    assert r.stdout == "404"
    r = subprocess.run(["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", "-H", "Host: known",
                        f"http://127.0.0.1:{listen}/dead"], capture_output=True, text=True, timeout=10)
    assert r.stdout == "503"
    log = wait_for(lambda: (lambda t: t if t.count("\n") >= 5 else "")(read(al)), 5)
    assert re.search(r'^\[\S+\] "GET /old HTTP/1.0" 426 ', log, re.M), log
    assert re.search(r'^\[\S+\] "GET /nohost HTTP/1.1" 400 ', log, re.M), log
    assert re.search(r'^\[\S+\] "POST /badlen HTTP/1.1" 400 ', log, re.M), log
    assert re.search(r'^\[\S+\] "GET /unrouted HTTP/1.1" 404 NR ', log, re.M), log
    assert re.search(r'^\[\S+\] "GET /dead HTTP/1.1" 503 UF ', log, re.M), log


# ---- 4. admin ------------------------------------------------------------------

def test_reset_counters(proxy):
    for _ in range(3):
        assert get(proxy.url + "/")[0] == 200
    assert stat(proxy.admin, "cluster.backend.upstream_rq_total") == 3
    assert stat(proxy.admin, "server.concurrency") == 2
    assert admin_post(proxy.admin, "/reset_counters") == (200, "OK\n")
    assert stat(proxy.admin, "cluster.backend.upstream_rq_total") == 0
    assert stat(proxy.admin, "http.ingress_http.downstream_rq_total") == 0
    # gauges are left alone, histograms too
    assert stat(proxy.admin, "server.concurrency") == 2
    assert stat(proxy.admin, "server.live") == 1
    assert "cluster.backend.upstream_rq_time: P0(" in admin_get(proxy.admin, "/stats")
    assert get(proxy.url + "/")[0] == 200
    assert stat(proxy.admin, "cluster.backend.upstream_rq_total") == 1
    prom = admin_get(proxy.admin, "/stats/prometheus")
    assert 'envoy_cluster_upstream_rq_total{envoy_cluster_name="backend"} 1' in prom
    # still "used" after a reset, as in Envoy
    assert "cluster.backend.upstream_rq_total: 1" in admin_get(proxy.admin, "/stats?usedonly")


def test_server_live_and_state_follow_healthcheck_fail(proxy):
    assert stat(proxy.admin, "server.live") == 1
    assert stat(proxy.admin, "server.state") == 0
    assert admin_post(proxy.admin, "/healthcheck/fail")[0] == 200
    assert stat(proxy.admin, "server.live") == 0
    assert stat(proxy.admin, "server.state") == 1  # DRAINING
    assert json.loads(admin_get(proxy.admin, "/server_info"))["state"] == "DRAINING"
    st, _ = get(f"http://127.0.0.1:{proxy.admin}/ready")
    assert st == 503
    # still serving traffic
    assert get(proxy.url + "/")[0] == 200
    assert admin_post(proxy.admin, "/healthcheck/ok")[0] == 200
    assert stat(proxy.admin, "server.live") == 1
    assert stat(proxy.admin, "server.state") == 0


def test_server_version_memory_and_manager_gauges(procs, upstream):
    listen, admin = free_port(), free_port()
    y = bootstrap_yaml(listen, admin, {"b": [upstream.port], "c": [upstream.port]})
    start(procs, y, admin)
    out = subprocess.run([SHARP, "--version"], capture_output=True, text=True, timeout=10).stdout
    major, minor, patch = (int(x) for x in re.search(r"sharp/(\d+)\.(\d+)\.(\d+)", out).groups())
    assert stat(admin, "server.version") == major * 1000000 + minor * 1000 + patch
    alloc, heap = stat(admin, "server.memory_allocated"), stat(admin, "server.memory_heap_size")
    mem = json.loads(admin_get(admin, "/memory"))
    if not SANITIZED:  # ASan's heap_size is its mapped arenas, unrelated to what is in use
        assert 0 < alloc <= heap, (alloc, heap)
        assert abs(int(mem["allocated"]) - alloc) < 64 * 1024 * 1024
    # /memory from one reading of the allocator (README.md, "Memory allocator")
    m = {k: int(v) for k, v in mem.items()}
    assert m["total_physical_bytes"] == m["heap_size"] - m["pageheap_unmapped"], m
    if ALLOCATOR == "mimalloc":  # committed bytes: what is not in use is free
        assert m["pageheap_unmapped"] == 0 and m["total_thread_cache"] == 0, m
        assert m["pageheap_free"] == m["heap_size"] - m["allocated"], m
    assert stat(admin, "cluster_manager.active_clusters") == 2
    assert stat(admin, "listener_manager.total_listeners_active") == 1
    # stats_server_version_override replaces the number.
    listen2, admin2 = free_port(), free_port()
    start(procs, bootstrap_yaml(listen2, admin2, {"b": [upstream.port]}) + "stats_server_version_override: 4242\n",
          admin2)
    assert stat(admin2, "server.version") == 4242


def test_heap_allocator_figures_follow_a_burst(procs, upstream):
    """The allocator the binary links is the one malloc is at run time (the
    startup check, logged at debug level), and its figures follow a burst of
    40 clients that do not read (about 1 MiB of response held each): the
    bytes in use rise and fall back; with mimalloc the committed bytes
    (heap_size, the fixed_heap measure) go back too, every worker returning
    its free pages by itself within seconds."""
    listen, admin = free_port(), free_port()
    y = bootstrap_yaml(listen, admin, {"app": [upstream.port]},
                       routes='- match: { prefix: "/" }\n  route: { cluster: app, timeout: 0s }\n')
    s = start(procs, y, admin, extra=("-l", "debug"))
    line = next((ln for ln in s.output().splitlines() if "heap allocator:" in ln), "")
    assert f"heap allocator: {ALLOCATOR}" in line, line
    if ALLOCATOR == "mimalloc":
        assert "malloc is mimalloc's" in line, line
    time.sleep(1.5)  # a housekeeping tick and a worker tick have run

    def mem():
        return {k: int(v) for k, v in json.loads(admin_get(admin, "/memory")).items()}
    base = mem()
    socks = non_reading_clients(listen, 40)
    deadline, peak = time.time() + 15 * SLOW, base
    while time.time() < deadline:
        time.sleep(0.3)
        m = mem()
        peak = {k: max(peak[k], m[k]) for k in m}
        if peak["allocated"] > base["allocated"] + (24 << 20) and peak["heap_size"] > base["heap_size"] + (24 << 20):
            break
    assert peak["allocated"] > base["allocated"] + (24 << 20), (base, peak)
    if not SANITIZED:
        assert peak["heap_size"] > base["heap_size"] + (24 << 20), (base, peak)
    for c in socks:
        c.close()
    deadline, m = time.time() + 20 * SLOW, None
    while time.time() < deadline:
        m = mem()
        back = m["allocated"] < base["allocated"] + (2 << 20)
        if ALLOCATOR == "mimalloc":
            back = back and m["heap_size"] < base["heap_size"] + (8 << 20)
        if back:
            break
        time.sleep(0.3)
    assert m["allocated"] < base["allocated"] + (2 << 20), (base, peak, m)
    if ALLOCATOR == "mimalloc":
        assert m["heap_size"] < base["heap_size"] + (8 << 20), (base, peak, m)
    print(f"{ALLOCATOR}: allocated {base['allocated'] >> 10} -> {peak['allocated'] >> 10} -> {m['allocated'] >> 10} KiB, "
          f"heap_size {base['heap_size'] >> 10} -> {peak['heap_size'] >> 10} -> {m['heap_size'] >> 10} KiB")


def hist_count(admin, name):
    data = json.loads(admin_get(admin, "/stats?format=json&filter=" + name))
    for s in data["stats"]:
        if "histograms" in s:
            for h in s["histograms"]["computed_quantiles"]:
                if h["name"] == name:
                    return h
    return None


def test_connection_length_and_connect_histograms(procs, upstream):
    listen, admin = free_port(), free_port()
    start(procs, bootstrap_yaml(listen, admin, {"b": [upstream.port]}), admin)
    c = http.client.HTTPConnection("127.0.0.1", listen, timeout=5)
    c.request("GET", "/")
    c.getresponse().read()
    time.sleep(0.25)
    c.close()
    text = wait_for(lambda: (lambda t: t if "listener.127.0.0.1_%d.downstream_cx_length_ms: P0(" % listen in t
                             else "")(admin_get(admin, "/stats")))
    assert text, admin_get(admin, "/stats")
    m = re.search(r"^listener\.127\.0\.0\.1_%d\.downstream_cx_length_ms: .*P100\(([\d.]+),([\d.]+)\)" % listen,
                  text, re.M)
    assert m and float(m.group(2)) >= 200, text
    assert re.search(r"^http\.ingress_http\.downstream_cx_length_ms: P0\(", text, re.M)
    assert re.search(r"^cluster\.b\.upstream_cx_connect_ms: P0\(", text, re.M)
    # The pooled upstream connection is still open: no length yet. The test
    # upstream's /close closes it after the request headers.
    assert not re.search(r"^cluster\.b\.upstream_cx_length_ms: P0\(", text, re.M)
    r = subprocess.run(["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}",
                        f"http://127.0.0.1:{listen}/close"], capture_output=True, text=True, timeout=10)
    assert r.stdout == "503"
    assert wait_for(lambda: re.search(r"^cluster\.b\.upstream_cx_length_ms: P0\(", admin_get(admin, "/stats"),
                                      re.M))
    prom = admin_get(admin, "/stats/prometheus")
    assert "envoy_cluster_upstream_cx_connect_ms_bucket" in prom
    assert "envoy_listener_downstream_cx_length_ms_bucket" in prom


def test_config_dump_routes_resource_mask_regex_eds(procs, upstream):
    listen, admin = free_port(), free_port()
    y = bootstrap_yaml(listen, admin, {"alpha": [upstream.port], "beta": [upstream.port]})
    start(procs, y, admin)
    dump = json.loads(admin_get(admin, "/config_dump"))
    types = [c["@type"].rsplit(".", 1)[1] for c in dump["configs"]]
    assert types == ["BootstrapConfigDump", "ClustersConfigDump", "ListenersConfigDump", "RoutesConfigDump",
                     "SecretsConfigDump"]
    assert dump["configs"][4] == {"@type": "type.googleapis.com/envoy.admin.v3.SecretsConfigDump"}  # no secrets
    routes = dump["configs"][3]
    rc = routes["static_route_configs"][0]["route_config"]
    assert rc["@type"] == "type.googleapis.com/envoy.config.route.v3.RouteConfiguration"
    assert rc["name"] == "local_route" and rc["virtual_hosts"][0]["name"] == "backend"
    # ?resource= : the entries of one repeated field, each an Any
    r = json.loads(admin_get(admin, "/config_dump?resource=static_route_configs"))
    assert r["configs"][0]["@type"] == "type.googleapis.com/envoy.admin.v3.RoutesConfigDump.StaticRouteConfig"
    r = json.loads(admin_get(admin, "/config_dump?resource=static_clusters&mask=cluster.name"))
    assert r["configs"] == [
        {"@type": "type.googleapis.com/envoy.admin.v3.ClustersConfigDump.StaticCluster",
         "cluster": {"@type": "type.googleapis.com/envoy.config.cluster.v3.Cluster", "name": "alpha"}},
        {"@type": "type.googleapis.com/envoy.admin.v3.ClustersConfigDump.StaticCluster",
         "cluster": {"@type": "type.googleapis.com/envoy.config.cluster.v3.Cluster", "name": "beta"}}]
    # ?name_regex= matches whole names
    r = json.loads(admin_get(admin, "/config_dump?resource=static_clusters&mask=cluster.name&name_regex=b.*"))
    assert [c["cluster"]["name"] for c in r["configs"]] == ["beta"]
    r = json.loads(admin_get(admin, "/config_dump?resource=static_clusters&name_regex=eta"))
    assert r["configs"] == []
    # ?mask= without resource: the dumps that have those fields, trimmed
    r = json.loads(admin_get(admin, "/config_dump?mask=bootstrap.admin"))
    assert len(r["configs"]) == 1 and list(r["configs"][0]["bootstrap"]) == ["admin"]
    r = json.loads(admin_get(admin, "/config_dump?mask=static_clusters"))
    assert [c["@type"].rsplit(".", 1)[1] for c in r["configs"]] == ["ClustersConfigDump"]
    # ?include_eds: EndpointsConfigDump with static_endpoint_configs
    r = json.loads(admin_get(admin, "/config_dump?include_eds"))
    eds = [c for c in r["configs"] if c["@type"].endswith("EndpointsConfigDump")]
    assert len(eds) == 1
    cla = [e["endpoint_config"] for e in eds[0]["static_endpoint_configs"]]
    assert [x["cluster_name"] for x in cla] == ["alpha", "beta"]
    assert cla[0]["endpoints"][0]["lb_endpoints"][0]["endpoint"]["address"]["socket_address"]["port_value"] \
        == upstream.port
    assert "EndpointsConfigDump" not in admin_get(admin, "/config_dump")
    # errors with Envoy's statuses and texts
    for q, code, text in [("resource=nope", 404, "nope not found in config dump"),
                          ("resource=bootstrap", 400, "bootstrap is not a repeated field. Use ?mask=bootstrap"),
                          ("mask=nope", 400, "FieldMask nope could not be successfully applied to any configs."),
                          ("resource=static_clusters&mask=cluster.nope", 400, "could not be successfully used."),
                          ("mask=static_clusters.cluster", 400, "could not be successfully applied"),
                          ("name_regex=(", 400, "Error while parsing name_regex from (")]:
        st, body = get(f"http://127.0.0.1:{admin}/config_dump?{q}")
        assert st == code and text in body, (q, st, body)


def test_alt_stat_name_names_the_cluster_in_stats_and_logs(procs, upstream):
    """alt_stat_name (Istio's "xds-grpc;" style) is the cluster's name in
    its stats, %UPSTREAM_CLUSTER% and the admin's observability_name, as in
    Envoy; %UPSTREAM_CLUSTER_RAW%, routes and /clusters' keys keep the name."""
    listen, admin = free_port(), free_port()
    log = os.path.join(tempfile.mkdtemp(prefix="sharp-al-"), "access.log")
    al = ("access_log:\n- name: envoy.access_loggers.file\n  typed_config:\n"
          "    \"@type\": type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog\n"
          f"    path: {log}\n"
          "    log_format: { text_format_source: { inline_string: \"%UPSTREAM_CLUSTER% %UPSTREAM_CLUSTER_RAW%\\n\" } }\n")
    s = Sharp(bootstrap_yaml(listen, admin, {"backend": [upstream.port]}, hcm_extra=al,
                             cluster_extra="alt_stat_name: \"backend-obs;\"\n"))
    procs.append(s)
    s.wait_ready(admin)
    with urllib.request.urlopen(f"http://127.0.0.1:{listen}/", timeout=5 * SLOW) as r:
        assert r.status == 200
    deadline = time.time() + 5 * SLOW
    while not (os.path.exists(log) and open(log).read()) and time.time() < deadline:
        time.sleep(0.05)
    assert open(log).read() == "backend-obs; backend\n"
    assert stat(admin, "cluster.backend-obs;.upstream_rq_total") == 1
    assert stat(admin, "cluster.backend.upstream_rq_total") is None
    assert "backend::observability_name::backend-obs;" in admin_get(admin, "/clusters")
    js = json.loads(admin_get(admin, "/clusters?format=json"))
    assert [c["observability_name"] for c in js["cluster_statuses"] if c["name"] == "backend"] == ["backend-obs;"]
