"""The data path's features with each protocol pair, HTTP/1 or HTTP/2 on
the downstream side and on the upstream side: routing and header mutation, retries with body
replay, route and per-try timeouts, circuit breakers, local replies, large
bodies both ways, stream timeouts, upstream resets and the access log. The
client is curl (--http2-prior-knowledge or --http1.1); the upstream is the
project's test upstream (--h2 for HTTP/2, the cluster then has
http2_protocol_options)."""
import json
import subprocess
import threading

import pytest

from conftest import SLOW, Upstream, bootstrap_yaml, file_access_log, free_port, log_lines, run_sharp_config, stat

COMBOS = [("h1", "h1"), ("h2", "h1"), ("h1", "h2"), ("h2", "h2")]
IDS = ["h1-both", "h2-down", "h2-up", "h2-both"]
LOG = "%PROTOCOL% %REQ(:METHOD)% %REQ(:PATH)% %RESPONSE_CODE% %RESPONSE_FLAGS% %UPSTREAM_REQUEST_ATTEMPT_COUNT%\\n"
C = "cluster.app."


def curl(down, url, *args, timeout=10):
    proto = "--http2-prior-knowledge" if down == "h2" else "--http1.1"
    r = subprocess.run(["curl", "-sS", proto, "-H", "Expect:", "--max-time", str(timeout * SLOW), "-D", "-", url, *args],
                       capture_output=True, timeout=timeout * SLOW + 5)
    head, _, body = r.stdout.partition(b"\r\n\r\n")
    lines = head.decode(errors="replace").split("\r\n")
    status = int(lines[0].split()[1]) if lines and lines[0].startswith("HTTP/") else 0
    hdrs = {}
    for line in lines[1:]:
        k, _, v = line.partition(":")
        hdrs[k.strip().lower()] = v.strip()
    return status, hdrs, body, r.returncode


def upstream_stats(up, h2):
    _, _, body, _ = curl("h2" if h2 else "h1", f"http://127.0.0.1:{up.port}/admin/stats")
    return json.loads(body)


def start_proxy(procs, down, up_proto, routes=None, hcm_extra="", cluster_extra="", n_upstreams=1):
    ups = []
    for i in range(n_upstreams):
        u = Upstream(name=f"u{i}", extra=("--h2",) if up_proto == "h2" else ())
        procs.append(u)
        ups.append(u)
    listen, admin = free_port(), free_port()
    al, log = file_access_log(LOG)
    ce = cluster_extra + ("http2_protocol_options: {}\n" if up_proto == "h2" else "")
    run_sharp_config(procs, bootstrap_yaml(listen, admin, {"app": [u.port for u in ups]}, routes=routes,
                                           hcm_extra=al + hcm_extra, cluster_extra=ce), admin)
    return listen, admin, log, ups


def proto_name(down):
    return "HTTP/2" if down == "h2" else "HTTP/1.1"


@pytest.mark.parametrize("down,up", COMBOS, ids=IDS)
def test_routing_and_header_mutation(procs, down, up):
    routes = ('- match: { prefix: "/", headers: [{ name: x-pick, string_match: { exact: "b" } }] }\n'
              '  direct_response: { status: 202, body: { inline_string: "picked b" } }\n'
              '- match: { prefix: "/" }\n'
              '  route: { cluster: app }\n'
              '  request_headers_to_add: [{ header: { key: x-added, value: "yes" } }]\n'
              '  response_headers_to_add: [{ header: { key: x-resp, value: "%PROTOCOL%" } }]\n')
    listen, admin, log, _ = start_proxy(procs, down, up, routes=routes)
    st, h, body, _ = curl(down, f"http://127.0.0.1:{listen}/echo")
    assert st == 200, body
    echo = json.loads(body)
    assert ["x-added", "yes"] in echo["headers"]
    assert echo["version"] == ("HTTP/2" if up == "h2" else "1.1")
    assert h["x-resp"] == proto_name(down)
    assert "x-envoy-upstream-service-time" in h
    st, _, body, _ = curl(down, f"http://127.0.0.1:{listen}/x", "-H", "x-pick: b")
    assert (st, body) == (202, b"picked b")
    lines = log_lines(log, 2)
    assert f"{proto_name(down)} GET /echo 200 - 1" in lines, lines
    assert f"{proto_name(down)} GET /x 202 - 0" in lines, lines
    assert stat(admin, C + "upstream_rq_2xx") == 1
    assert stat(admin, C + ("upstream_cx_http2_total" if up == "h2" else "upstream_cx_http1_total")) == 1


@pytest.mark.parametrize("down,up", COMBOS, ids=IDS)
def test_retries_replay_the_body(procs, down, up):
    """Every try gets the whole request body again: the last one echoes
    all 100,000 bytes."""
    routes = ('- match: { prefix: "/" }\n  route:\n    cluster: app\n'
              '    retry_policy: { retry_on: "retriable-status-codes", retriable_status_codes: [200], '
              'num_retries: 2, retry_back_off: { base_interval: 0.01s } }\n')
    listen, admin, _, ups = start_proxy(procs, down, up, routes=routes)
    st, _, body, _ = curl(down, f"http://127.0.0.1:{listen}/echo", "--data-binary", "x" * 100000)
    assert st == 200 and json.loads(body)["body_bytes"] == 100000
    assert stat(admin, C + "upstream_rq_retry") == 2
    assert stat(admin, C + "upstream_rq_retry_limit_exceeded") == 1
    assert upstream_stats(ups[0], up == "h2")["requests"] - 1 == 3


@pytest.mark.parametrize("down,up", COMBOS, ids=IDS)
def test_route_and_per_try_timeouts(procs, down, up):
    routes = ('- match: { prefix: "/slow" }\n  route: { cluster: app, timeout: 0.3s }\n'
              '- match: { prefix: "/try" }\n  route:\n    cluster: app\n    timeout: 5s\n'
              '    retry_policy: { retry_on: "5xx", num_retries: 1, per_try_timeout: 0.2s }\n')
    listen, admin, log, _ = start_proxy(procs, down, up, routes=routes)
    st, _, body, _ = curl(down, f"http://127.0.0.1:{listen}/slow?delay_ms=3000")
    assert st == 504 and body == b"upstream request timeout"
    st, _, _, _ = curl(down, f"http://127.0.0.1:{listen}/try?delay_ms=3000")
    assert st == 504
    lines = log_lines(log, 2)
    assert f"{proto_name(down)} GET /slow?delay_ms=3000 504 UT 1" in lines, lines
    assert f"{proto_name(down)} GET /try?delay_ms=3000 504 UT,URX 2" in lines, lines
    assert stat(admin, C + "upstream_rq_per_try_timeout") == 2


@pytest.mark.parametrize("down,up", COMBOS, ids=IDS)
def test_circuit_breaker_overflow(procs, down, up):
    listen, admin, log, _ = start_proxy(procs, down, up,
                                  cluster_extra="circuit_breakers: { thresholds: [{ max_requests: 1 }] }\n")
    results = []
    t = threading.Thread(target=lambda: results.append(curl(down, f"http://127.0.0.1:{listen}/?delay_ms=1000")))
    t.start()
    import time
    deadline = time.time() + 5
    while stat(admin, C + "upstream_rq_active") != 1 and time.time() < deadline:
        time.sleep(0.02)
    st, h, _, _ = curl(down, f"http://127.0.0.1:{listen}/")
    t.join()
    assert st == 503 and h.get("x-envoy-overloaded") == "true"
    assert results[0][0] == 200
    assert stat(admin, C + "upstream_rq_pending_overflow") == 1


@pytest.mark.parametrize("down,up", COMBOS, ids=IDS)
def test_large_bodies_both_ways(procs, down, up):
    listen, _, _, _ = start_proxy(procs, down, up)
    import os
    import tempfile
    path = os.path.join(tempfile.mkdtemp(prefix="sharp-mx-"), "b")
    with open(path, "wb") as f:
        f.write(os.urandom(4 * 1024 * 1024))
    st, _, body, _ = curl(down, f"http://127.0.0.1:{listen}/echo", "--data-binary", "@" + path, timeout=30)
    assert st == 200 and json.loads(body)["body_bytes"] == 4 * 1024 * 1024
    st, _, body, _ = curl(down, f"http://127.0.0.1:{listen}/bytes/6000000", timeout=30)
    assert st == 200 and len(body) == 6000000


@pytest.mark.parametrize("down,up", COMBOS, ids=IDS)
def test_stream_timeouts(procs, down, up):
    listen, admin, log, _ = start_proxy(procs, down, up, hcm_extra="stream_idle_timeout: 0.3s\n")
    st, _, _, _ = curl(down, f"http://127.0.0.1:{listen}/?delay_ms=2000")
    assert st == 408
    assert stat(admin, "http.ingress_http.downstream_rq_idle_timeout") == 1
    assert log_lines(log, 1)[0] == f"{proto_name(down)} GET /?delay_ms=2000 408 SI 1"


@pytest.mark.parametrize("down,up", COMBOS, ids=IDS)
def test_upstream_reset_mid_response(procs, down, up):
    """The upstream ends mid-body: the client cannot get a complete
    response (HTTP/2: RST_STREAM; HTTP/1: the connection closes) and the
    access log says why."""
    listen, _, log, _ = start_proxy(procs, down, up)
    path = "/close-mid-body"
    st, _, body, rc = curl(down, f"http://127.0.0.1:{listen}{path}")
    assert rc != 0, (st, len(body))
    line = log_lines(log, 1)[0]
    assert line.startswith(f"{proto_name(down)} GET {path} 200 U"), line
