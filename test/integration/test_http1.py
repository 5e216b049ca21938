"""HTTP/1.1 data path through the real binary against the project's test upstream."""
import http.client
import json
import re
import socket
import subprocess
import time

from conftest import (Sharp, Upstream, admin_get, bootstrap_yaml, free_port, run_sharp_config, stat,
                      wait_port)


def get(p, path, method="GET", headers=None, body=None, timeout=10):
    c = http.client.HTTPConnection("127.0.0.1", p.listen, timeout=timeout)
    c.request(method, path, body=body, headers=headers or {})
    r = c.getresponse()
    data = r.read()
    c.close()
    return r, data


def raw(port, data, timeout=5, read_until_close=True):
    s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    s.sendall(data)
    out = b""
    try:
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            out += chunk
            if not read_until_close and b"\r\n\r\n" in out:
                break
    except socket.timeout:
        pass
    s.close()
    return out


def test_simple_get_and_envoy_headers(proxy):
    r, body = get(proxy, "/hello")
    assert r.status == 200
    assert body == b"hello from upstream\n"
    assert r.getheader("server") == "sharp"
    assert r.getheader("x-envoy-upstream-service-time") is not None
    assert r.getheader("date")
    r, body = get(proxy, "/echo?x=1", headers={"X-Custom": "v1", "Connection": "keep-alive, x-drop",
                                                "X-Drop": "gone", "Keep-Alive": "timeout=5"})
    echo = json.loads(body)
    names = {k.lower(): v for k, v in echo["headers"]}
    assert echo["path"] == "/echo?x=1"
    assert names["x-custom"] == "v1"
    assert "x-drop" not in names and "keep-alive" not in names
    assert names["x-forwarded-proto"] == "http"
    assert re.fullmatch(r"[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}", names["x-request-id"])
    assert names["x-envoy-expected-rq-timeout-ms"] == "15000"
    assert names["host"] == f"127.0.0.1:{proxy.listen}"


def test_keep_alive_both_sides(proxy):
    c = http.client.HTTPConnection("127.0.0.1", proxy.listen, timeout=5)
    conns = set()
    for _ in range(20):
        c.request("GET", "/")
        r = c.getresponse()
        r.read()
        assert r.status == 200
        conns.add(r.getheader("x-upstream-connection"))
    c.close()
    # one downstream connection on one worker reuses one pooled upstream connection
    assert len(conns) == 1
    assert stat(proxy.admin, "cluster.backend.upstream_cx_total") == 1
    assert stat(proxy.admin, "http.ingress_http.downstream_cx_total") == 1
    assert stat(proxy.admin, "cluster.backend.upstream_rq_total") == 20


def test_use_remote_address_xff(procs, upstream):
    listen, admin = free_port(), free_port()
    run_sharp_config(procs, bootstrap_yaml(listen, admin, {"b": [upstream.port]},
                                           hcm_extra="use_remote_address: true\n"), admin)
    c = http.client.HTTPConnection("127.0.0.1", listen, timeout=5)
    c.request("GET", "/echo", headers={"X-Forwarded-For": "10.1.2.3", "X-Envoy-Internal": "true"})
    echo = json.loads(c.getresponse().read())
    names = {k.lower(): v for k, v in echo["headers"]}
    assert names["x-forwarded-for"] == "10.1.2.3,127.0.0.1"
    # A request that arrives with x-forwarded-for is never internal, and a
    # client cannot claim x-envoy-internal itself.
    assert "x-envoy-internal" not in names
    assert names["x-envoy-external-address"] == "127.0.0.1"


def test_head_204_304_no_body(proxy):
    r, body = get(proxy, "/bytes/1000", method="HEAD")
    assert r.status == 200 and body == b""
    assert r.getheader("content-length") == "1000"
    for code in (204, 304):
        out = raw(proxy.listen, f"GET /status/{code} HTTP/1.1\r\nHost: x\r\n\r\nGET /status/200 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
        head, _, rest = out.partition(b"\r\n\r\n")
        assert head.startswith(f"HTTP/1.1 {code}".encode())
        assert b"transfer-encoding" not in head.lower()
        # the next response follows immediately: no body bytes in between
        assert rest.startswith(b"HTTP/1.1 200"), rest[:80]


def test_expect_100_continue(proxy):
    s = socket.create_connection(("127.0.0.1", proxy.listen), timeout=5)
    s.sendall(b"POST /upload HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n")
    first = s.recv(4096)
    assert first.startswith(b"HTTP/1.1 100 Continue\r\n\r\n")
    s.sendall(b"hello")
    data = first[25:]
    while b"}" not in data:
        chunk = s.recv(4096)
        if not chunk:
            break
        data += chunk
    s.close()
    assert b"HTTP/1.1 200" in data and b'"body_bytes": 5' in data.replace(b'":5', b'": 5')


def test_chunked_upload_and_download(proxy):
    def gen():
        for _ in range(64):
            yield b"x" * 10000
    c = http.client.HTTPConnection("127.0.0.1", proxy.listen, timeout=10)
    c.request("POST", "/upload", body=gen(), encode_chunked=True, headers={"Transfer-Encoding": "chunked"})
    r = c.getresponse()
    info = json.loads(r.read())
    assert info["body_bytes"] == 640000
    c.request("GET", "/bytes/300000?chunked=1")
    r = c.getresponse()
    body = r.read()
    assert len(body) == 300000
    assert r.getheader("transfer-encoding") == "chunked"


def test_connection_close(proxy):
    out = raw(proxy.listen, b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    assert out.startswith(b"HTTP/1.1 200")
    assert b"connection: close" in out.lower()


def test_pipelined_requests_answered_in_order(proxy):
    reqs = b"".join(f"GET /echo?n={i} HTTP/1.1\r\nHost: x\r\n\r\n".encode() for i in range(5))
    out = raw(proxy.listen, reqs + b"GET /echo?n=last HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    order = re.findall(rb'"path": ?"/echo\?n=(\w+)"', out)
    assert order == [b"0", b"1", b"2", b"3", b"4", b"last"]


def test_no_route_404_nr(procs, upstream):
    listen, admin = free_port(), free_port()
    routes = '- match: { prefix: "/api" }\n  route: { cluster: b }\n'
    import tempfile, os
    al = os.path.join(tempfile.mkdtemp(), "a.log")
    run_sharp_config(procs, bootstrap_yaml(listen, admin, {"b": [upstream.port]}, routes=routes, access_log=al), admin)
    c = http.client.HTTPConnection("127.0.0.1", listen, timeout=5)
    c.request("GET", "/other")
    r = c.getresponse()
    assert r.status == 404 and r.read() == b""
    c.request("GET", "/api/x")
    assert c.getresponse().status == 200
    time.sleep(1.5)  # access logs flush every second
    log = open(al).read()
    assert re.search(r'"GET /other HTTP/1.1" 404 NR ', log), log
    assert stat(admin, "http.ingress_http.no_route") == 1


def test_no_healthy_upstream_503_uh(procs):
    listen, admin = free_port(), free_port()
    run_sharp_config(procs, bootstrap_yaml(listen, admin, {"empty": []}), admin)
    c = http.client.HTTPConnection("127.0.0.1", listen, timeout=5)
    c.request("GET", "/")
    r = c.getresponse()
    assert r.status == 503 and r.read() == b"no healthy upstream"


def test_connect_failure_503_uf(procs):
    listen, admin, dead = free_port(), free_port(), free_port()
    import tempfile, os
    al = os.path.join(tempfile.mkdtemp(), "a.log")
    run_sharp_config(procs, bootstrap_yaml(listen, admin, {"dead": [dead]}, access_log=al), admin)
    c = http.client.HTTPConnection("127.0.0.1", listen, timeout=5)
    c.request("GET", "/")
    r = c.getresponse()
    body = r.read()
    assert r.status == 503
    assert b"reset reason: connection failure" in body
    assert stat(admin, "cluster.dead.upstream_cx_connect_fail") >= 1
    time.sleep(1.5)
    assert " 503 UF " in open(al).read()


def test_upstream_timeout_504_ut(procs, upstream):
    listen, admin = free_port(), free_port()
    routes = '- match: { prefix: "/" }\n  route: { cluster: b, timeout: 0.3s }\n'
    run_sharp_config(procs, bootstrap_yaml(listen, admin, {"b": [upstream.port]}, routes=routes), admin)
    c = http.client.HTTPConnection("127.0.0.1", listen, timeout=5)
    t0 = time.time()
    c.request("GET", "/?delay_ms=3000")
    r = c.getresponse()
    assert r.status == 504 and r.read() == b"upstream request timeout"
    assert time.time() - t0 < 2.5
    assert stat(admin, "cluster.b.upstream_rq_timeout") == 1
    # the connection still works after a timeout
    c.request("GET", "/")
    assert c.getresponse().status == 200


def test_upstream_close_mid_response_resets_downstream(proxy):
    out = raw(proxy.listen, b"GET /close-mid-body HTTP/1.1\r\nHost: x\r\n\r\n", timeout=5)
    head, _, body = out.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200")
    assert len(body) < 1000000  # truncated: the client sees the connection close early
    # other requests are unaffected
    r, _ = get(proxy, "/")
    assert r.status == 200


def test_upstream_reset_and_close_before_headers(proxy):
    for path, flag in (("/reset", b"remote reset"), ("/close", b"connection termination")):
        r, body = get(proxy, path)
        assert r.status == 503, (path, body)
        assert flag in body or b"connection termination" in body


def test_upstream_garbage_502_upe(proxy):
    r, body = get(proxy, "/garbage")
    assert r.status == 502
    assert b"protocol error" in body


def test_client_closes_mid_request(proxy):
    s = socket.create_connection(("127.0.0.1", proxy.listen), timeout=5)
    s.sendall(b"POST /upload HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\n" + b"a" * 1000)
    time.sleep(0.2)
    s.close()
    time.sleep(0.3)
    r, _ = get(proxy, "/")
    assert r.status == 200
    assert stat(proxy.admin, "http.ingress_http.downstream_rq_rx_reset") >= 1


def test_malformed_requests_400(proxy):
    for bad in (b"GARBAGE\r\n\r\n", b"GET / HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
                b"GET / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n",
                b"GET / HTTP/1.1\r\n\r\n"):
        out = raw(proxy.listen, bad)
        assert out.startswith(b"HTTP/1.1 400"), (bad, out[:100])
    r, _ = get(proxy, "/")
    assert r.status == 200


def test_header_limits_431(proxy):
    big = "a" * (70 * 1024)
    out = raw(proxy.listen, f"GET / HTTP/1.1\r\nHost: x\r\nX-Big: {big}\r\n\r\n".encode())
    assert out.startswith(b"HTTP/1.1 431")
    many = "".join(f"X-H{i}: v\r\n" for i in range(150))
    out = raw(proxy.listen, f"GET / HTTP/1.1\r\nHost: x\r\n{many}\r\n".encode())
    assert out.startswith(b"HTTP/1.1 431")


def test_upgrade_refused(proxy):
    out = raw(proxy.listen, b"GET / HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n")
    assert out.startswith(b"HTTP/1.1 403")


def test_http10_rejected_like_envoy_by_default(proxy):
    out = raw(proxy.listen, b"GET / HTTP/1.0\r\n\r\n")
    assert out.startswith(b"HTTP/1.1 426")


def test_curl_and_stats_counters(proxy):
    for _ in range(3):
        out = subprocess.run(["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", proxy.url + "/"],
                             capture_output=True, timeout=10).stdout
        assert out == b"200"
    assert stat(proxy.admin, "http.ingress_http.downstream_rq_2xx") == 3
    assert stat(proxy.admin, "cluster.backend.upstream_rq_2xx") == 3
    assert stat(proxy.admin, "cluster.backend.upstream_rq_200") == 3
    assert stat(proxy.admin, "listener.127.0.0.1_%d.downstream_cx_total" % proxy.listen) == 3


def test_max_requests_circuit_breaker_503_uo(procs, upstream):
    import threading
    listen, admin = free_port(), free_port()
    cb = "circuit_breakers:\n  thresholds:\n  - { priority: DEFAULT, max_requests: 2 }\n"
    run_sharp_config(procs, bootstrap_yaml(listen, admin, {"b": [upstream.port]}, cluster_extra=cb), admin)
    codes = []

    def one():
        c = http.client.HTTPConnection("127.0.0.1", listen, timeout=10)
        c.request("GET", "/?delay_ms=400")
        r = c.getresponse()
        codes.append((r.status, r.read()))
    ts = [threading.Thread(target=one) for _ in range(8)]
    for t in ts:
        t.start()
    for t in ts:
        t.join(20)
    ok = [c for c in codes if c[0] == 200]
    over = [c for c in codes if c[0] == 503]
    assert len(ok) + len(over) == 8 and 1 <= len(ok) <= 2 * 2, codes
    assert over and all(b"reset reason: overflow" in b for _, b in over)
    assert stat(admin, "cluster.b.upstream_rq_pending_overflow") == len(over)
