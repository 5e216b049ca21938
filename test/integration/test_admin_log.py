"""Admin access logs: admin.access_log_path (Envoy's default format) and
admin.access_log (the HCM's loggers), written per admin request, reopened by
/reopen_logs and SIGUSR1, never created by --mode validate."""
import json
import os
import re
import signal
import socket
import subprocess
import tempfile
import time
import urllib.request

from conftest import SHARP, Sharp, admin_get, free_port


def with_admin(admin_port, extra):
    """A bootstrap with no listener whose admin section carries `extra`."""
    return (f"admin:\n  address: {{ socket_address: {{ address: 127.0.0.1, port_value: {admin_port} }} }}\n"
            + "".join("  " + line + "\n" for line in extra.splitlines()))


def read(path):
    try:
        with open(path) as f:
            return f.read()
    except FileNotFoundError:
        return ""


def wait_for(pred, timeout=5):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if pred():
            return True
        time.sleep(0.05)
    return pred()


def admin_post(port, path):
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", method="POST", data=b"")
    with urllib.request.urlopen(req, timeout=5) as r:
        return r.status


def curl(*args):
    r = subprocess.run(["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", *args],
                       capture_output=True, text=True, timeout=20)
    return r.stdout


def start(procs, yaml_text, admin):
    s = Sharp(yaml_text)
    procs.append(s)
    s.wait_ready(admin)
    return s


# Envoy's default format: [START] "METHOD PATH PROTOCOL" CODE FLAGS RX TX DURATION ...
DEFAULT_LINE = re.compile(r'^\[(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z)\] "(\S+) (\S+) (HTTP/1\.[01])" '
                          r'(\d+) - (\d+) (\d+) (\d+) - "-" "([^"]*)" "-" "([^"]*)" "-"$')


def test_admin_access_log_path_default_format(procs):
    admin = free_port()
    d = tempfile.mkdtemp(prefix="sharp-adminlog-")
    log = os.path.join(d, "admin.log")
    start(procs, with_admin(admin, f"access_log_path: {log}"), admin)
    assert curl(f"http://127.0.0.1:{admin}/ready") == "200"
    stats = admin_get(admin, "/stats")
    assert curl(f"http://127.0.0.1:{admin}/no-such-page") == "404"
    assert curl("-X", "POST", "-d", "hello", f"http://127.0.0.1:{admin}/healthcheck/fail") == "200"
    assert wait_for(lambda: "/healthcheck/fail" in read(log))
    lines = [DEFAULT_LINE.match(l) for l in read(log).splitlines()]
    assert all(lines), read(log)
    by_path = {m.group(3): m for m in lines}
    ready = by_path["/ready"]
    assert (ready.group(2), ready.group(4), ready.group(5)) == ("GET", "HTTP/1.1", "200")
    assert ready.group(7) == str(len("LIVE\n"))  # bytes sent
    assert ready.group(9).startswith("curl/")  # user-agent
    assert ready.group(10) == f"127.0.0.1:{admin}"  # :authority from Host
    st = by_path["/stats"]
    assert (st.group(2), st.group(5)) == ("GET", "200")
    assert st.group(7) == str(len(stats.encode()))
    assert by_path["/no-such-page"].group(5) == "404"
    post = by_path["/healthcheck/fail"]
    assert (post.group(2), post.group(5), post.group(6)) == ("POST", "200", "5")  # bytes received
    # one line per request, in order
    assert [m.group(3) for m in lines] == ["/ready"] * (len(lines) - 3) + ["/stats", "/no-such-page",
                                                                         "/healthcheck/fail"]


def test_admin_access_log_custom_formats(procs):
    admin = free_port()
    d = tempfile.mkdtemp(prefix="sharp-adminlog-")
    text_log, json_log, path_log = (os.path.join(d, n) for n in ("text.log", "json.log", "path.log"))
    extra = f"""\
access_log_path: {path_log}
access_log:
- name: envoy.access_loggers.file
  typed_config:
    "@type": type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog
    path: {text_log}
    log_format:
      text_format_source:
        inline_string: "ADMIN %REQ(:METHOD)% %REQ(:PATH)% %RESPONSE_CODE% %DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT% %REQ(X-TEST)%\\n"
- name: envoy.access_loggers.file
  typed_config:
    "@type": type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog
    path: {json_log}
    json_format:
      method: "%REQ(:METHOD)%"
      path: "%REQ(:PATH)%"
      code: "%RESPONSE_CODE%"
      sent: "%BYTES_SENT%"
"""
    start(procs, with_admin(admin, extra), admin)
    assert curl("-H", "x-test: abc", f"http://127.0.0.1:{admin}/ready") == "200"
    assert curl(f"http://127.0.0.1:{admin}/stats?filter=server") == "200"
    assert curl("-I", f"http://127.0.0.1:{admin}/ready") == "200"
    assert wait_for(lambda: read(json_log).count("\n") >= 3 and read(text_log).count("\n") >= 3)
    text = read(text_log).splitlines()
    assert "ADMIN GET /ready 200 127.0.0.1 abc" in text, text
    assert "ADMIN GET /stats?filter=server 200 127.0.0.1 -" in text, text
    assert "ADMIN HEAD /ready 200 127.0.0.1 -" in text, text
    js = [json.loads(l) for l in read(json_log).splitlines()]
    assert {"method": "GET", "path": "/stats?filter=server", "code": 200} == \
        {k: v for k, v in js[-2].items() if k != "sent"}
    assert js[-2]["sent"] > 0
    assert js[-1] == {"method": "HEAD", "path": "/ready", "code": 200, "sent": 0}  # HEAD sends no body
    # both fields at once, as Envoy allows: the deprecated path logs too
    assert "GET /stats?filter=server HTTP/1.1\" 200" in read(path_log)


def test_admin_access_log_dev_null_and_stdout(procs):
    admin = free_port()
    extra = """\
access_log_path: /dev/null
access_log:
- name: envoy.access_loggers.stdout
  typed_config:
    "@type": type.googleapis.com/envoy.extensions.access_loggers.stream.v3.StdoutAccessLog
    log_format: { text_format: "STDOUT-ADMIN %REQ(:PATH)% %RESPONSE_CODE%\\n" }
"""
    s = start(procs, with_admin(admin, extra), admin)
    assert curl(f"http://127.0.0.1:{admin}/server_info") == "200"
    assert wait_for(lambda: "STDOUT-ADMIN /server_info 200" in s.output())


def test_admin_access_log_reopen(procs):
    admin = free_port()
    d = tempfile.mkdtemp(prefix="sharp-adminlog-")
    log = os.path.join(d, "admin.log")
    s = start(procs, with_admin(admin, f"access_log_path: {log}"), admin)
    assert curl(f"http://127.0.0.1:{admin}/one") == "404"
    os.rename(log, log + ".1")
    assert admin_post(admin, "/reopen_logs") == 200
    assert os.path.exists(log)
    assert curl(f"http://127.0.0.1:{admin}/two") == "404"
    assert "/two" in read(log) and "/two" not in read(log + ".1")
    # the reopen request is logged when it completes, as in Envoy: to the new file
    assert "POST /reopen_logs" in read(log) and "/reopen_logs" not in read(log + ".1")
    os.rename(log, log + ".2")
    s.p.send_signal(signal.SIGUSR1)
    assert wait_for(lambda: os.path.exists(log))
    assert curl(f"http://127.0.0.1:{admin}/three") == "404"
    assert "/three" in read(log) and "/three" not in read(log + ".2")


def test_admin_access_log_bad_request_logged(procs):
    admin = free_port()
    d = tempfile.mkdtemp(prefix="sharp-adminlog-")
    log = os.path.join(d, "admin.log")
    start(procs, with_admin(admin, f"access_log_path: {log}"), admin)
    with socket.create_connection(("127.0.0.1", admin), timeout=5) as c:
        c.sendall(b"GET /ready HTTP/1.1\r\nHost: x\r\nbad header\r\n\r\n")
        assert c.recv(100).startswith(b"HTTP/1.1 400")
    assert wait_for(lambda: '"- - HTTP/1.1" 400' in read(log)), read(log)


def test_admin_access_log_validate_creates_nothing_and_errors():
    d = tempfile.mkdtemp(prefix="sharp-adminlog-val-")
    cfg = os.path.join(d, "b.yaml")
    extra = f"""\
access_log_path: {d}/path.log
access_log:
- name: envoy.access_loggers.file
  typed_config:
    "@type": type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog
    path: {d}/file.log
"""
    with open(cfg, "w") as f:
        f.write(with_admin(free_port(), extra))
    r = subprocess.run([SHARP, "-c", cfg, "--mode", "validate"], capture_output=True, text=True, timeout=20)
    assert r.returncode == 0, r.stderr
    assert sorted(os.listdir(d)) == ["b.yaml"]
    # a file that cannot be created is an error naming the field
    with open(cfg, "w") as f:
        f.write(with_admin(free_port(), "access_log_path: /nonexistent-dir/x/admin.log"))
    r = subprocess.run([SHARP, "-c", cfg, "--mode", "validate"], capture_output=True, text=True, timeout=20)
    assert r.returncode == 1
    assert "admin.access_log_path" in r.stderr and "/nonexistent-dir/x/admin.log" in r.stderr, r.stderr
    # a bad format in admin.access_log is an error naming the entry
    with open(cfg, "w") as f:
        f.write(with_admin(free_port(), f"""\
access_log:
- name: envoy.access_loggers.file
  typed_config:
    "@type": type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog
    path: {d}/x.log
    log_format: {{ text_format: "%NOPE%" }}
"""))
    r = subprocess.run([SHARP, "-c", cfg, "--mode", "validate"], capture_output=True, text=True, timeout=20)
    assert r.returncode == 1
    assert "admin.access_log[0]" in r.stderr and "NOPE" in r.stderr, r.stderr
