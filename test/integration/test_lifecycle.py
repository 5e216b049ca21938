"""Admin endpoints, drain on SIGTERM, and load: real clients against the real binary."""
import http.client
import json
import os
import re
import signal
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.parse
import urllib.request

import pytest

from conftest import SLOW, admin_get, bootstrap_yaml, free_port, run_sharp_config, start_nginx, stat, wait_for


def test_admin_endpoints(proxy):
    assert admin_get(proxy.admin, "/ready").strip() == "LIVE"
    info = json.loads(admin_get(proxy.admin, "/server_info"))
    assert info["state"] == "LIVE"
    urllib.request.urlopen(proxy.url + "/").read()
    # histograms show the last stats flush (every 5 s) once there was one:
    # the request's time appears at the latest with the next
    text = wait_for(lambda: (lambda t: t if "http.ingress_http.downstream_rq_time: P0(" in t else None)(
        admin_get(proxy.admin, "/stats")), 12, "the request's time in the downstream_rq_time histogram")
    assert re.search(r"^http\.ingress_http\.downstream_rq_total: 1$", text, re.M), text[:2000]
    assert re.search(r"^cluster\.backend\.upstream_rq_total: 1$", text, re.M)
    assert re.search(r"^server\.live: 1$", text, re.M)
    assert re.search(r"^server\.concurrency: 2$", text, re.M)
    assert "http.ingress_http.downstream_rq_time: P0(" in text
    filtered = admin_get(proxy.admin, "/stats?filter=upstream_rq_total")
    assert all("upstream_rq_total" in l for l in filtered.strip().splitlines())
    prom = admin_get(proxy.admin, "/stats/prometheus")
    assert 'envoy_cluster_upstream_rq_total{envoy_cluster_name="backend"} 1' in prom
    assert 'envoy_http_downstream_rq_xx{envoy_response_code_class="2",envoy_http_conn_manager_prefix="ingress_http"} 1' in prom
    assert "envoy_http_downstream_rq_time_bucket" in prom
    clusters = admin_get(proxy.admin, "/clusters")
    assert f"backend::127.0.0.1:{proxy.upstream.port}::rq_total::1" in clusters
    assert f"backend::127.0.0.1:{proxy.upstream.port}::health_flags::healthy" in clusters
    dump = json.loads(admin_get(proxy.admin, "/config_dump"))
    assert "static_resources" in json.dumps(dump)
    assert "/ready" in admin_get(proxy.admin, "/help")


def test_stats_filter_is_re2(proxy):
    """/stats?filter= is an RE2 regex searched anywhere in the name, as in
    Envoy: Perl classes and (?i) work, a bad regex is a 400."""
    urllib.request.urlopen(proxy.url + "/").read()
    q = urllib.parse.quote
    for path in ("/stats?filter=", "/stats?format=json&filter=", "/stats/prometheus?filter="):
        text = admin_get(proxy.admin, path + q(r"(?i)DOWNSTREAM_RQ_\dXX"))
        assert "downstream_rq_2xx" in text or "downstream_rq_xx" in text, text[:500]
        assert "upstream_rq_total" not in text
    lines = admin_get(proxy.admin, "/stats?filter=" + q(r"^cluster\.\w+\.upstream_rq_total$")).split("\n")
    assert [l for l in lines if l] == ["cluster.backend.upstream_rq_total: 1"], lines
    lines = admin_get(proxy.admin, "/stats?filter=" + q(r"[[:digit:]]xx$")).strip().splitlines()
    assert lines and all(re.search(r"[0-9]xx:", l) for l in lines), lines
    with pytest.raises(urllib.error.HTTPError) as e:
        admin_get(proxy.admin, "/stats?filter=" + q("a(?=b)"))
    assert e.value.code == 400
    assert e.value.read().decode().startswith("Invalid re2 regex")


def test_healthcheck_fail_ok(proxy):
    req = urllib.request.Request(f"http://127.0.0.1:{proxy.admin}/healthcheck/fail", method="POST")
    assert urllib.request.urlopen(req).status == 200
    req = urllib.request.Request(f"http://127.0.0.1:{proxy.admin}/healthcheck/ok", method="POST")
    assert urllib.request.urlopen(req).status == 200


def test_access_log_default_format(proxy):
    c = http.client.HTTPConnection("127.0.0.1", proxy.listen, timeout=5)
    c.request("POST", "/upload", body=b"12345", headers={"User-Agent": "it-test", "X-Request-Id": "rid-1"})
    c.getresponse().read()
    time.sleep(1.5)
    log = open(proxy.access_log).read()
    m = re.search(r'^\[(\S+)\] "POST /upload HTTP/1.1" 200 - 5 (\d+) (\d+) (\d+) "-" "it-test" "rid-1" '
                  r'"127.0.0.1:%d" "127.0.0.1:%d"$' % (proxy.listen, proxy.upstream.port), log, re.M)
    assert m, log


def test_quitquitquit(procs, upstream):
    listen, admin = free_port(), free_port()
    s = run_sharp_config(procs, bootstrap_yaml(listen, admin, {"b": [upstream.port]}), admin)
    req = urllib.request.Request(f"http://127.0.0.1:{admin}/quitquitquit", method="POST")
    assert urllib.request.urlopen(req).status == 200
    assert s.p.wait(timeout=10) == 0


def test_sigterm_drains_in_flight_requests(procs, upstream):
    """Requests accepted before SIGTERM all complete; then the process exits 0."""
    listen, admin = free_port(), free_port()
    s = run_sharp_config(procs, bootstrap_yaml(listen, admin, {"b": [upstream.port]},
                                               hcm_extra="drain_timeout: 0.5s\n"), admin)
    results = []

    def slow_request(i):
        try:
            c = http.client.HTTPConnection("127.0.0.1", listen, timeout=20)
            c.request("GET", f"/?delay_ms=1500&i={i}")
            r = c.getresponse()
            results.append((r.status, r.read(), r.getheader("connection")))
        except Exception as e:  # noqa
            results.append(("error", repr(e), None))

    threads = [threading.Thread(target=slow_request, args=(i,)) for i in range(20)]
    for t in threads:
        t.start()
    time.sleep(0.5)
    # an idle keep-alive connection is closed by the drain
    idle = socket.create_connection(("127.0.0.1", listen))
    idle.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    first = b""
    while not first.endswith(b"hello from upstream\n"):
        first += idle.recv(4096)
    s.p.send_signal(signal.SIGTERM)
    time.sleep(0.2)
    for t in threads:
        t.join(timeout=30)
    assert len(results) == 20
    assert all(r[0] == 200 for r in results), results
    assert all(r[2] == "close" for r in results)
    idle.settimeout(5)
    assert idle.recv(4096) == b""  # closed by the drain
    assert s.p.wait(timeout=15) == 0


def test_ready_503_while_draining(procs, upstream):
    listen, admin = free_port(), free_port()
    s = run_sharp_config(procs, bootstrap_yaml(listen, admin, {"b": [upstream.port]}), admin)
    hold = http.client.HTTPConnection("127.0.0.1", listen, timeout=20)
    hold.request("GET", "/?delay_ms=2000")
    time.sleep(0.3)
    s.p.send_signal(signal.SIGTERM)
    time.sleep(0.3)
    try:
        urllib.request.urlopen(f"http://127.0.0.1:{admin}/ready", timeout=2)
        raise AssertionError("ready must be 503 while draining")
    except urllib.error.HTTPError as e:
        assert e.code == 503
    assert hold.getresponse().status == 200
    assert s.p.wait(timeout=15) == 0


def test_wrk_smoke_and_1000_keepalive_connections(procs, upstream):
    listen, admin = free_port(), free_port()
    run_sharp_config(procs, bootstrap_yaml(listen, admin, {"b": [upstream.port]}), admin)
    out = subprocess.run(["wrk", "-t2", "-c1000", f"-d{2 * SLOW}s", "--timeout", "10s", f"http://127.0.0.1:{listen}/"],
                         capture_output=True, timeout=60 * SLOW).stdout.decode()
    m = re.search(r"(\d+) requests in", out)
    assert m and int(m.group(1)) > 1000, out
    assert "Non-2xx" not in out, out
    errs = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    assert not errs or all(int(x) == 0 for x in errs.groups()), out
    assert stat(admin, "http.ingress_http.downstream_cx_total") >= 1000
    assert stat(admin, "http.ingress_http.downstream_rq_5xx") == 0


def rss_kb(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def test_large_bodies_stream_with_flat_rss(proxy):
    """1 GiB down and 1 GiB up (256 MiB under sanitizers) with RSS bounded."""
    size = (1 << 30) if SLOW == 1 else (256 << 20)
    base = rss_kb(proxy.sharp.p.pid)
    peak = [base]
    stop = threading.Event()

    def sample():
        while not stop.is_set():
            peak[0] = max(peak[0], rss_kb(proxy.sharp.p.pid))
            time.sleep(0.05)
    th = threading.Thread(target=sample)
    th.start()
    try:
        # download: the client reads slowly at first so backpressure must hold the upstream
        c = http.client.HTTPConnection("127.0.0.1", proxy.listen, timeout=60)
        c.request("GET", f"/bytes/{size}")
        r = c.getresponse()
        assert r.status == 200
        time.sleep(1)
        got = 0
        while True:
            chunk = r.read(1 << 20)
            if not chunk:
                break
            got += len(chunk)
        assert got == size
        # upload through the proxy: curl streams from a pipe
        head = subprocess.Popen(["head", "-c", str(size), "/dev/zero"], stdout=subprocess.PIPE)
        out = subprocess.run(["curl", "-s", "-T", "-", "-H", "Expect:", f"{proxy.url}/upload"],
                             stdin=head.stdout, capture_output=True, timeout=300)
        head.wait()
        assert json.loads(out.stdout)["body_bytes"] == size, out
    finally:
        stop.set()
        th.join()
    grown_mb = (peak[0] - base) / 1024
    # AddressSanitizer keeps freed memory in quarantine, so RSS says nothing there.
    if SLOW == 1:
        assert grown_mb < 64, f"RSS grew by {grown_mb:.1f} MiB"


def test_sigterm_drain_under_load_loses_no_accepted_request(procs, upstream):
    """Keep-alive clients hammer the proxy; SIGTERM arrives mid-load. Every
    request sent on a connection the proxy had accepted gets a full 200; a
    connection that is refused after the listener closed was never accepted."""
    listen, admin = free_port(), free_port()
    s = run_sharp_config(procs, bootstrap_yaml(listen, admin, {"b": [upstream.port]},
                                               hcm_extra="drain_timeout: 1s\n"), admin)
    stop = threading.Event()
    ok, closes, failures, refused = [0], [0], [], [0]
    lock = threading.Lock()

    def client():
        while not stop.is_set():
            try:
                c = http.client.HTTPConnection("127.0.0.1", listen, timeout=10)
                c.connect()
            except OSError:
                with lock:
                    refused[0] += 1
                return  # listener gone: the drain is on
            answered = 0
            while not stop.is_set():
                try:
                    c.request("GET", "/?delay_ms=5")
                    r = c.getresponse()
                    body = r.read()
                except (ConnectionRefusedError, ConnectionResetError, http.client.RemoteDisconnected) as e:
                    if answered == 0:
                        with lock:
                            refused[0] += 1  # a connection the proxy never served
                        return
                    with lock:
                        failures.append(repr(e))
                    return
                except Exception as e:  # noqa
                    with lock:
                        failures.append(repr(e))
                    return
                answered += 1
                with lock:
                    if r.status == 200 and body == b"hello from upstream\n":
                        ok[0] += 1
                    else:
                        failures.append((r.status, body[:80]))
                if r.getheader("connection") == "close":
                    with lock:
                        closes[0] += 1
                    break
            c.close()

    threads = [threading.Thread(target=client) for _ in range(16)]
    for t in threads:
        t.start()
    time.sleep(1.5)
    before = ok[0]
    s.p.send_signal(signal.SIGTERM)
    for t in threads:
        t.join(timeout=30)
    stop.set()
    assert before > 50
    assert failures == [], failures[:5]
    assert closes[0] >= 1
    assert s.p.wait(timeout=20) == 0


def test_request_timeout_408(procs, upstream):
    listen, admin = free_port(), free_port()
    run_sharp_config(procs, bootstrap_yaml(listen, admin, {"b": [upstream.port]},
                                           hcm_extra="request_timeout: 0.4s\n"), admin)
    sk = socket.create_connection(("127.0.0.1", listen), timeout=5)
    sk.sendall(b"POST /upload HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\nabc")
    out = sk.recv(4096)
    assert out.startswith(b"HTTP/1.1 408"), out
    assert stat(admin, "http.ingress_http.downstream_rq_timeout") == 1


def test_connection_idle_timeout(procs, upstream):
    listen, admin = free_port(), free_port()
    run_sharp_config(procs, bootstrap_yaml(listen, admin, {"b": [upstream.port]},
                                           hcm_extra="common_http_protocol_options: { idle_timeout: 0.3s }\n"), admin)
    sk = socket.create_connection(("127.0.0.1", listen), timeout=5)
    t0 = time.time()
    assert sk.recv(10) == b""
    assert time.time() - t0 < 3
    assert stat(admin, "http.ingress_http.downstream_cx_idle_timeout") == 1


def test_nginx_as_upstream(procs, tmp_path):
    """A real nginx from Debian behind SHARP: keep-alive, a static file and a large body."""
    port = start_nginx(procs, tmp_path,
                       f';\nroot {tmp_path}/html;\nlocation /status {{ return 201 "created\\n"; }}',
                       files=(("index.html", b"<h1>nginx behind sharp</h1>\n"), ("big.bin", os.urandom(5 * 1024 * 1024))))
    listen, admin = free_port(), free_port()
    run_sharp_config(procs, bootstrap_yaml(listen, admin, {"web": [port]}), admin)
    c = http.client.HTTPConnection("127.0.0.1", listen, timeout=10)
    for _ in range(5):
        c.request("GET", "/index.html")
        r = c.getresponse()
        assert r.status == 200 and r.read() == b"<h1>nginx behind sharp</h1>\n"
        assert r.getheader("server") == "sharp"
    c.request("GET", "/big.bin")
    r = c.getresponse()
    assert r.read() == (tmp_path / "html" / "big.bin").read_bytes()
    c.request("GET", "/status")
    r = c.getresponse()
    assert r.status == 201 and r.read() == b"created\n"
    c.request("GET", "/missing")
    r = c.getresponse()
    r.read()
    assert r.status == 404
    assert stat(admin, "cluster.web.upstream_cx_total") == 1
    assert stat(admin, "cluster.web.upstream_rq_4xx") == 1


def test_stream_idle_timeout_408(procs, upstream):
    listen, admin = free_port(), free_port()
    run_sharp_config(procs, bootstrap_yaml(listen, admin, {"b": [upstream.port]},
                                           hcm_extra="stream_idle_timeout: 0.4s\n"), admin)
    sk = socket.create_connection(("127.0.0.1", listen), timeout=5)
    sk.sendall(b"POST /upload HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\nab")
    out = sk.recv(4096)
    assert out.startswith(b"HTTP/1.1 408"), out
    assert stat(admin, "http.ingress_http.downstream_rq_idle_timeout") == 1


def test_drain_listeners_stops_accepting(procs, upstream):
    listen, admin = free_port(), free_port()
    s = run_sharp_config(procs, bootstrap_yaml(listen, admin, {"b": [upstream.port]}), admin)
    req = urllib.request.Request(f"http://127.0.0.1:{admin}/drain_listeners", method="POST")
    assert urllib.request.urlopen(req).status == 200
    time.sleep(0.3)
    try:
        socket.create_connection(("127.0.0.1", listen), timeout=2).close()
        raise AssertionError("listener still accepting")
    except ConnectionRefusedError:
        pass
    assert admin_get(admin, "/ready").strip() == "LIVE"  # the admin stays up
