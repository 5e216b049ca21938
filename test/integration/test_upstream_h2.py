"""HTTP/2 to upstreams: curl (HTTP/1.1) -> SHARP -> the test upstream in
--h2 mode (nghttp2 server, prior knowledge).

The cluster selects HTTP/2 as Envoy does: Cluster.http2_protocol_options or
the HttpProtocolOptions extension's explicit_http_config. Requests share
connections up to the effective max_concurrent_streams (the configured one
and the peer's SETTINGS), streams the upstream did not process (GOAWAY,
REFUSED_STREAM) are retried with retry_on refused-stream, and flow control
keeps a slow client from making the proxy buffer a large response."""
import hashlib
import http.client
import json
import os
import socket
import threading
import time
import urllib.request

import pytest

from conftest import (bootstrap_yaml, file_access_log, free_port, log_lines, run_sharp_config, SLOW, stat, wait_for,
                      Upstream, validate_config as validate)

H2 = "http2_protocol_options: {}\n"
EXT_H2 = """typed_extension_protocol_options:
  envoy.extensions.upstreams.http.v3.HttpProtocolOptions:
    "@type": type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions
    explicit_http_config:
      http2_protocol_options:
%s"""
LOG_FORMAT = "%RESPONSE_CODE% %RESPONSE_FLAGS% %RESPONSE_CODE_DETAILS%\\n"
C = "cluster.backend."


def h2_upstream(procs, name="upstream", extra=()):
    u = Upstream(name=name, extra=("--h2", *extra))
    procs.append(u)
    return u


def start(procs, ports, cluster_extra=H2, routes=None, concurrency=1, access_log=False):
    listen, admin = free_port(), free_port()
    hcm, path = file_access_log(LOG_FORMAT) if access_log else ("", None)
    y = bootstrap_yaml(listen, admin, {"backend": ports}, routes=routes, cluster_extra=cluster_extra,
                       hcm_extra=hcm)
    run_sharp_config(procs, y, admin, concurrency=concurrency)
    return listen, admin, path


def request(port, method, path, body=None, headers=None, timeout=10):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout * SLOW)
    try:
        c.request(method, path, body=body, headers=headers or {})
        r = c.getresponse()
        return r.status, dict((k.lower(), v) for k, v in r.getheaders()), r.read()
    finally:
        c.close()


def fnv(data):
    h = 0xcbf29ce484222325
    for b in data:
        h = ((h ^ b) * 0x100000001b3) & 0xFFFFFFFFFFFFFFFF
    return "%016x" % h


def pattern(n):
    return bytes((i * 31 + 7) & 0xff for i in range(256)) * (n // 256) + \
        bytes((i * 31 + 7) & 0xff for i in range(n % 256))


def concurrent(port, paths):
    out = [None] * len(paths)

    def one(i, p):
        out[i] = request(port, "GET", p)

    ts = [threading.Thread(target=one, args=(i, p)) for i, p in enumerate(paths)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    return out


def test_get_post_and_header_translation(procs):
    u = h2_upstream(procs)
    listen, admin, _ = start(procs, [u.port])
    st, h, body = request(listen, "GET", "/echo", headers={"Host": "example.test", "TE": "trailers",
                                                           "X-Mixed-Case": "v", "Keep-Alive": "300"})
    assert st == 200, body
    e = json.loads(body)
    assert e["version"] == "HTTP/2"
    names = [k for k, _ in e["headers"]]
    # pseudo-headers first, :authority from Host; names lower case
    assert names[:4] == [":method", ":scheme", ":authority", ":path"], names
    assert [":authority", "example.test"] in e["headers"]
    assert ["x-mixed-case", "v"] in e["headers"]
    assert ["te", "trailers"] in e["headers"]
    for hop in ("host", "connection", "keep-alive", "transfer-encoding", "upgrade", "proxy-connection"):
        assert hop not in names, e["headers"]
    # te other than "trailers" is dropped
    st, _, body = request(listen, "GET", "/echo", headers={"TE": "gzip"})
    assert "te" not in [k for k, _ in json.loads(body)["headers"]]
    # a 1 MB request body, sent as the upstream's window allows
    data = os.urandom(1 << 20)
    st, _, body = request(listen, "POST", "/upload", body=data)
    assert st == 200 and json.loads(body) == {"body_bytes": len(data), "checksum": fnv(data)}
    # chunked request bodies too (no content-length: DATA frames up to END_STREAM)
    st, _, body = request(listen, "POST", "/upload", body=iter([b"abc", b"defg"]))
    assert st == 200 and json.loads(body)["body_bytes"] == 7
    st, h, body = request(listen, "GET", "/status/404")
    assert st == 404 and body == b"status 404\n"
    st, h, body = request(listen, "HEAD", "/bytes/1000")
    assert st == 200 and body == b"" and h["content-length"] == "1000"
    st, _, body = request(listen, "GET", "/status/204")
    assert st == 204 and body == b""
    assert stat(admin, C + "upstream_cx_http2_total") == 1
    assert stat(admin, C + "upstream_cx_http1_total") == 0
    assert stat(admin, C + "upstream_cx_total") == 1
    assert stat(admin, C + "upstream_rq_total") == 7
    assert stat(admin, C + "upstream_rq_active") == 0
    assert stat(admin, C + "http2.streams_active") == 0


def test_extension_selects_http2_and_http1_stays_default(procs):
    u = h2_upstream(procs)
    listen, admin, _ = start(procs, [u.port], cluster_extra=EXT_H2 % "        max_concurrent_streams: 10\n")
    st, _, body = request(listen, "GET", "/echo")
    assert st == 200 and json.loads(body)["version"] == "HTTP/2"
    assert stat(admin, C + "upstream_cx_http2_total") == 1
    # explicit http_protocol_options (and no options) stay HTTP/1.1
    u1 = Upstream(name="h1")
    procs.append(u1)
    ext1 = EXT_H2.replace("http2_protocol_options:\n%s", "http_protocol_options: {}\n")
    listen, admin, _ = start(procs, [u1.port], cluster_extra=ext1)
    st, _, body = request(listen, "GET", "/echo")
    assert st == 200 and json.loads(body)["version"] == "1.1"
    assert stat(admin, C + "upstream_cx_http1_total") == 1
    assert stat(admin, C + "upstream_cx_http2_total") == 0


def test_large_response_to_slow_reader_is_not_buffered(procs):
    """A 40 MB response to a client that does not read: the stream's window
    (64 KiB here) reopens only as the downstream drains, so the proxy holds
    a bounded amount, not the body. Then the client reads it all, intact."""
    u = h2_upstream(procs)
    opts = ("http2_protocol_options:\n  initial_stream_window_size: 65535\n"
            "  initial_connection_window_size: 65535\n")
    listen, admin, _ = start(procs, [u.port], cluster_extra=opts)
    pid = procs[-1].p.pid

    def rss_kb():
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
        return 0

    request(listen, "GET", "/")  # connection up, buffers warmed
    base = rss_kb()
    n = 40 << 20
    s = socket.create_connection(("127.0.0.1", listen))
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
    s.sendall(b"GET /bytes/%d HTTP/1.1\r\nhost: x\r\n\r\n" % n)
    time.sleep(2 * SLOW)
    grown = rss_kb() - base
    # unbounded buffering would hold ~40 MB; allow for the downstream
    # buffer limit, socket buffers and allocator slack
    assert grown < 16 * 1024, f"RSS grew by {grown} KiB while the client did not read"
    got = 0
    h = hashlib.sha256()
    buf = b""
    while b"\r\n\r\n" not in buf:
        buf += s.recv(65536)
    head, rest = buf.split(b"\r\n\r\n", 1)
    assert head.startswith(b"HTTP/1.1 200"), head
    h.update(rest)
    got = len(rest)
    s.settimeout(30 * SLOW)
    while got < n:
        d = s.recv(1 << 20)
        assert d, f"connection closed after {got} bytes"
        h.update(d)
        got += len(d)
    s.close()
    assert got == n
    assert h.hexdigest() == hashlib.sha256(pattern(n)).hexdigest()


def test_large_upload(procs):
    """A 20 MB request body: DATA goes as the upstream's window opens, the
    client is paused while the stream holds more than the buffer limit."""
    u = h2_upstream(procs)
    listen, admin, _ = start(procs, [u.port], cluster_extra=H2 + "per_connection_buffer_limit_bytes: 65536\n")
    data = pattern(20 << 20)
    st, _, body = request(listen, "POST", "/upload", body=data, timeout=60)
    assert st == 200, body
    assert json.loads(body) == {"body_bytes": len(data), "checksum": fnv(data)}
    assert stat(admin, C + "upstream_cx_total") == 1


def test_concurrent_requests_share_one_connection(procs):
    u = h2_upstream(procs)
    listen, admin, _ = start(procs, [u.port])
    res = concurrent(listen, ["/echo?delay_ms=400"] * 10)
    assert all(r[0] == 200 for r in res), [r[0] for r in res]
    assert {r[1]["x-upstream-connection"] for r in res} == {"1"}
    assert stat(admin, C + "upstream_cx_total") == 1
    assert stat(admin, C + "upstream_rq_total") == 10
    with urllib.request.urlopen(f"http://127.0.0.1:{listen}/admin/stats", timeout=5) as r:
        assert json.loads(r.read())["streams_peak"] >= 5


def test_max_concurrent_streams_opens_a_second_connection(procs):
    u = h2_upstream(procs)
    listen, admin, _ = start(procs, [u.port], cluster_extra="http2_protocol_options: { max_concurrent_streams: 2 }\n")
    res = concurrent(listen, ["/echo?delay_ms=400"] * 4)
    assert all(r[0] == 200 for r in res)
    assert sorted(r[1]["x-upstream-connection"] for r in res) == ["1", "1", "2", "2"]
    assert stat(admin, C + "upstream_cx_total") == 2


def test_peer_settings_limit_streams(procs):
    """The effective limit is min(max_concurrent_streams, the peer's
    SETTINGS_MAX_CONCURRENT_STREAMS)."""
    u = h2_upstream(procs, extra=("--h2-max-streams", "2"))
    listen, admin, _ = start(procs, [u.port])
    assert request(listen, "GET", "/")[0] == 200  # the peer's SETTINGS are known now
    res = concurrent(listen, ["/echo?delay_ms=400"] * 4)
    assert all(r[0] == 200 for r in res)
    per_cx = {}
    for r in res:
        per_cx[r[1]["x-upstream-connection"]] = per_cx.get(r[1]["x-upstream-connection"], 0) + 1
    assert sorted(per_cx.values()) == [2, 2], per_cx
    assert stat(admin, C + "upstream_cx_total") == 2


def test_streams_refused_before_the_peers_settings_are_sent_again(procs):
    """A new connection takes every waiting request before the upstream's
    SETTINGS say it allows 2 streams; the streams above that are refused
    (REFUSED_STREAM: not processed) and SHARP sends them again, with no
    retry policy and counting no retry, where Envoy answers 503. A burst of
    24 on a cold pool; whether the SETTINGS come before the pool's first
    requests is a race, so a fresh SHARP tries again until one burst went
    above the limit."""
    u = h2_upstream(procs, extra=("--h2-max-streams", "2"))
    for _ in range(8):
        listen, admin, _ = start(procs, [u.port])
        res = concurrent(listen, ["/echo?delay_ms=200"] * 24)
        assert [r[0] for r in res] == [200] * 24, [r[0] for r in res]
        assert stat(admin, C + "upstream_rq_retry") == 0
        refused = stat(admin, C + "http2.stream_refused_errors")
        if refused:
            break
    assert refused > 0, "no burst went above the upstream's limit"
    assert stat(admin, "http.ingress_http.downstream_rq_5xx") == 0
    # every connection now knows its limit: no stream is refused again
    res = concurrent(listen, ["/echo?delay_ms=100"] * 24)
    assert all(r[0] == 200 for r in res)
    assert stat(admin, C + "http2.stream_refused_errors") == refused


def test_max_requests_per_connection(procs):
    u = h2_upstream(procs)
    listen, admin, _ = start(procs, [u.port], cluster_extra=H2 + "max_requests_per_connection: 3\n")
    conns = [request(listen, "GET", "/")[1]["x-upstream-connection"] for _ in range(7)]
    assert conns == ["1", "1", "1", "2", "2", "2", "3"], conns
    assert stat(admin, C + "upstream_cx_total") == 3
    assert stat(admin, C + "upstream_cx_max_requests") == 2
    # concurrent streams count too: 3 per connection
    res = concurrent(listen, ["/echo?delay_ms=300"] * 6)
    assert all(r[0] == 200 for r in res)
    assert len({r[1]["x-upstream-connection"] for r in res}) >= 2


RETRY_REFUSED = ('- match: { prefix: "/" }\n  route:\n    cluster: backend\n'
                 '    retry_policy: { retry_on: refused-stream, num_retries: 1 }\n')


def test_goaway_unprocessed_stream_is_retried(procs):
    u = h2_upstream(procs)
    listen, admin, log = start(procs, [u.port], routes=RETRY_REFUSED, access_log=True)
    assert request(listen, "GET", "/admin/h2?goaway=1")[0] == 200
    # the upstream answers the next stream with a GOAWAY below its id: the
    # stream was not processed and goes again on a new connection
    data = b"replayed body " * 1000
    st, h, body = request(listen, "POST", "/upload", body=data)
    assert st == 200, body
    assert json.loads(body) == {"body_bytes": len(data), "checksum": fnv(data)}
    assert h["x-upstream-connection"] == "2"
    assert stat(admin, C + "upstream_rq_retry") == 1
    assert stat(admin, C + "upstream_cx_close_notify") == 1
    assert stat(admin, C + "http2.stream_refused_errors") == 1
    assert stat(admin, C + "upstream_cx_total") == 2
    # the drained connection closed once its streams were done
    deadline = time.time() + 5 * SLOW
    while stat(admin, C + "upstream_cx_active") != 1:
        assert time.time() < deadline
        time.sleep(0.05)


def test_goaway_without_retry_policy_is_ur(procs):
    u = h2_upstream(procs)
    listen, admin, log = start(procs, [u.port], access_log=True)
    assert request(listen, "GET", "/admin/h2?goaway=1")[0] == 200
    st, _, body = request(listen, "GET", "/")
    assert st == 503
    assert body == b"upstream connect error or disconnect/reset before headers. reset reason: remote refused stream reset"
    lines = log_lines(log, 2)
    assert lines[1] == "503 UR upstream_reset_before_response_started{remote_refused_stream_reset}", lines


def test_rst_stream(procs):
    u = h2_upstream(procs)
    listen, admin, log = start(procs, [u.port], routes=RETRY_REFUSED, access_log=True)
    st, _, body = request(listen, "GET", "/reset")
    assert st == 503 and b"reset reason: remote reset" in body
    assert stat(admin, C + "http2.rx_reset") == 1
    # a reset stream does not take the connection with it
    assert request(listen, "GET", "/")[0] == 200
    assert stat(admin, C + "upstream_cx_total") == 1
    # REFUSED_STREAM: retried with refused-stream
    assert request(listen, "GET", "/admin/h2?refuse=1")[0] == 200
    st, h, body = request(listen, "GET", "/echo")
    assert st == 200 and json.loads(body)["version"] == "HTTP/2"
    assert stat(admin, C + "upstream_rq_retry") == 1
    assert stat(admin, C + "http2.rx_reset") == 2
    lines = log_lines(log, 4)
    assert lines[0] == "503 UR upstream_reset_before_response_started{remote_reset}", lines


def test_upstream_dies_mid_response_and_connect_failure(procs):
    u = h2_upstream(procs)
    listen, admin, log = start(procs, [u.port], access_log=True)
    s = socket.create_connection(("127.0.0.1", listen), timeout=10 * SLOW)
    s.sendall(b"GET /close-mid-body HTTP/1.1\r\nhost: x\r\n\r\n")
    data = b""
    while True:
        d = s.recv(65536)
        if not d:
            break
        data += d
    s.close()
    assert data.startswith(b"HTTP/1.1 200") and b"content-length: 1000000" in data
    assert len(data.split(b"\r\n\r\n", 1)[1]) < 1000000  # cut short: the client sees the reset
    lines = log_lines(log, 1)
    # the upstream's close ends the connection: a FIN (UC), or a TCP reset
    # when SHARP's window updates were still unread in its buffer (UR)
    assert lines[0].startswith(("200 UC upstream_reset_after_response_started",
                                "200 UR upstream_reset_after_response_started")), lines
    # a new connection serves the next request
    assert request(listen, "GET", "/")[0] == 200
    # nothing listening: connect failure (UF), as over HTTP/1
    dead = free_port()
    listen2, admin2, log2 = start(procs, [dead], access_log=True)
    st, _, body = request(listen2, "GET", "/")
    assert st == 503 and b"connection failure" in body
    assert log_lines(log2, 1)[0].startswith("503 UF"), log_lines(log2, 1)
    assert stat(admin2, C + "upstream_cx_connect_fail") == 1


def test_keepalive_ping_timeout_closes_the_connection(procs):
    u = h2_upstream(procs)
    ka = "http2_protocol_options:\n  connection_keepalive: { interval: 0.2s, timeout: 0.3s }\n"
    listen, admin, log = start(procs, [u.port], cluster_extra=ka, access_log=True)
    # PINGs answered: a slow response survives several intervals
    st, _, _ = request(listen, "GET", "/?delay_ms=1200")
    assert st == 200
    assert stat(admin, C + "http2.keepalive_timeout") == 0
    assert stat(admin, C + "upstream_cx_total") == 1
    # the upstream stops answering PINGs: the connection is closed and the
    # request in flight ends as a connection termination
    assert request(listen, "GET", "/admin/h2?ping_silent=1")[0] == 200
    st, _, body = request(listen, "GET", "/?delay_ms=3000")
    assert st == 503 and b"connection termination" in body, body
    assert stat(admin, C + "http2.keepalive_timeout") == 1
    request(listen, "GET", "/admin/h2?ping_silent=0")
    assert request(listen, "GET", "/")[0] == 200


def test_per_try_timeout_resets_streams_and_keeps_the_connection(procs):
    u = h2_upstream(procs)
    routes = ('- match: { prefix: "/" }\n  route:\n    cluster: backend\n'
              '    retry_policy: { retry_on: 5xx, num_retries: 1, per_try_timeout: 0.3s }\n')
    listen, admin, log = start(procs, [u.port], routes=routes, access_log=True)
    st, _, _ = request(listen, "GET", "/?delay_ms=2000")
    assert st == 504
    assert stat(admin, C + "upstream_rq_per_try_timeout") == 2
    # RST_STREAM CANCEL for each try, counted as the frame goes out (as
    # Envoy counts it): the second may leave just after the 504
    wait_for(lambda: stat(admin, C + "http2.tx_reset") == 2, 5, "two RST_STREAM sent")
    assert log_lines(log, 1)[0].startswith("504 UT"), log_lines(log, 1)
    assert request(listen, "GET", "/")[0] == 200
    assert stat(admin, C + "upstream_cx_total") == 1


def test_outlier_detection_over_http2(procs):
    a, b = h2_upstream(procs, "a"), h2_upstream(procs, "b")
    od = H2 + ("outlier_detection: { consecutive_5xx: 3, interval: 0.2s, base_ejection_time: 30s, "
               "max_ejection_percent: 50 }\n")
    routes = '- match: { prefix: "/" }\n  route: { cluster: backend }\n'
    listen, admin, _ = start(procs, [a.port, b.port], cluster_extra=od, routes=routes)
    # only b answers 503 for /status/503?host=b: send to both, b's replies count
    deadline = time.time() + 10 * SLOW
    while stat(admin, C + "outlier_detection.ejections_enforced_total") != 1:
        assert time.time() < deadline, "no ejection"
        request(listen, "GET", "/status/503")
    time.sleep(0.3)
    names = {request(listen, "GET", "/")[1]["x-upstream-name"] for _ in range(6)}
    assert len(names) == 1, names


def test_response_trailers_end_the_response(procs):
    u = h2_upstream(procs)
    listen, admin, _ = start(procs, [u.port])
    # one keep-alive connection, open until the end: a content-length
    # response is whole downstream before its upstream trailers arrive, and
    # a client that closed then would (rightly) cancel the upstream stream
    # before them
    c = http.client.HTTPConnection("127.0.0.1", listen, timeout=10 * SLOW)
    try:
        c.request("GET", "/bytes/100000?trailers=1")
        r = c.getresponse()
        assert r.status == 200 and r.read() == pattern(100000)
        c.request("GET", "/echo?trailers=1")
        r = c.getresponse()
        assert r.status == 200 and json.loads(r.read())["version"] == "HTTP/2"
        # the trailers may still be on their way (and the worker counts them
        # a moment before the request's completion)
        deadline = time.time() + 5 * SLOW
        while (stat(admin, C + "http2.trailers"), stat(admin, C + "upstream_rq_completed")) != (2, 2) \
                and time.time() < deadline:
            time.sleep(0.02)
    finally:
        c.close()
    assert stat(admin, C + "http2.trailers") == 2
    assert stat(admin, C + "upstream_rq_completed") == 2


def test_oversized_response_headers_are_a_protocol_error(procs):
    u = h2_upstream(procs)
    listen, admin, log = start(procs, [u.port], access_log=True)
    st, _, body = request(listen, "GET", "/huge-headers")
    assert st == 502 and b"protocol error" in body
    assert stat(admin, C + "http2.header_overflow") == 1
    assert log_lines(log, 1)[0].startswith("502 UPE"), log_lines(log, 1)
    assert request(listen, "GET", "/")[0] == 200


CL = "static_resources.clusters[0]"
EXT = CL + '.typed_extension_protocol_options["envoy.extensions.upstreams.http.v3.HttpProtocolOptions"]'
REFUSALS = [
    (EXT_H2.replace("explicit_http_config:\n      http2_protocol_options:\n%s",
                    "auto_config: { http3_protocol_options: {} }\n"),
     EXT + ".auto_config.http3_protocol_options", "HTTP/3"),
    ("http2_protocol_options: { allow_metadata: true }\n", CL + ".http2_protocol_options.allow_metadata", "METADATA"),
    ("http2_protocol_options: { custom_settings_parameters: [{ identifier: 8, value: 1 }] }\n",
     CL + ".http2_protocol_options.custom_settings_parameters", "SETTINGS"),
    ("http2_protocol_options: { use_oghttp2_codec: true }\n", CL + ".http2_protocol_options.use_oghttp2_codec",
     "nghttp2"),
    (EXT_H2 % "        allow_metadata: true\n",
     EXT + ".explicit_http_config.http2_protocol_options.allow_metadata", "METADATA"),
    ("http2_protocol_options: { connection_keepalive: { timeout: 1s, connection_idle_interval: 1s } }\n",
     CL + ".http2_protocol_options.connection_keepalive.connection_idle_interval", "idle"),
]


@pytest.mark.parametrize("extra,path,feature", REFUSALS, ids=[r[1].split(".")[-1] for r in REFUSALS])
def test_unsupported_fields_are_refused(extra, path, feature):
    rc, out = validate(bootstrap_yaml(10000, 9901, {"b": [8080]}, cluster_extra=extra))
    assert rc == 1, out
    assert path + ":" in out and "is not supported by SHARP" in out and feature in out, out


@pytest.mark.parametrize("extra,words", [
    ("http2_protocol_options: { initial_stream_window_size: 1000 }\n", "initial_stream_window_size"),
    ("http2_protocol_options: { initial_connection_window_size: 2147483648 }\n", "initial_connection_window_size"),
    ("http2_protocol_options: { max_concurrent_streams: 0 }\n", "max_concurrent_streams"),
    ("http2_protocol_options: { max_outbound_frames: 0 }\n", "max_outbound_frames"),
    ("http2_protocol_options: { connection_keepalive: { interval: 1s } }\n", "timeout"),
    ("http2_protocol_options: {}\nhttp_protocol_options: {}\n", "Both HTTP1 and HTTP2 options"),
])
def test_invalid_values_are_refused(extra, words):
    rc, out = validate(bootstrap_yaml(10000, 9901, {"b": [8080]}, cluster_extra=extra))
    assert rc == 1 and words in out, out


def test_valid_options_pass():
    opts = ("http2_protocol_options:\n  hpack_table_size: 0\n  max_concurrent_streams: 100\n"
            "  initial_stream_window_size: 65535\n  initial_connection_window_size: 2147483647\n"
            "  max_outbound_frames: 100\n  max_outbound_control_frames: 10\n"
            "  max_consecutive_inbound_frames_with_empty_payload: 0\n"
            "  max_inbound_priority_frames_per_stream: 0\n"
            "  max_inbound_window_update_frames_per_data_frame_sent: 1\n"
            "  override_stream_error_on_invalid_http_message: true\n"
            "  connection_keepalive: { interval: 10s, timeout: 1s, interval_jitter: { value: 5 } }\n")
    rc, out = validate(bootstrap_yaml(10000, 9901, {"b": [8080]}, cluster_extra=opts))
    assert rc == 0, out


def test_settings_sent_to_the_upstream(procs):
    """hpack_table_size, max_concurrent_streams and the two windows as the
    upstream's session sees them."""
    u = h2_upstream(procs)
    opts = ("http2_protocol_options:\n  hpack_table_size: 0\n  max_concurrent_streams: 7\n"
            "  initial_stream_window_size: 70000\n  initial_connection_window_size: 1000000\n")
    listen, admin, _ = start(procs, [u.port], cluster_extra=opts)
    st, _, body = request(listen, "GET", "/admin/stats")
    s = json.loads(body)
    assert s["peer_settings"]["header_table_size"] == 0
    assert s["peer_settings"]["max_concurrent_streams"] == 7
    assert s["peer_settings"]["initial_window_size"] == 70000
    assert s["peer_settings"]["enable_push"] == 0
    assert s["connection_send_window"] == 1000000
    # Envoy's defaults
    listen, admin, _ = start(procs, [u.port])
    s = json.loads(request(listen, "GET", "/admin/stats")[2])
    assert s["peer_settings"]["header_table_size"] == 4096
    assert s["peer_settings"]["max_concurrent_streams"] == 2147483647
    assert s["peer_settings"]["initial_window_size"] == 268435456
    assert s["connection_send_window"] == 268435456


# ---- a hostile upstream: raw frames (python3-hyperframe, python3-hpack) ----

class RawH2Upstream:
    """Speaks just enough HTTP/2 to get requests; `script(send, stream_id,
    n)` answers the n-th request (from 0) once it has ended, with whatever
    frames the test wants."""

    def __init__(self, script):
        self.script = script
        self.local = threading.local()  # each connection has its own HPACK state
        self.requests = 0
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        self.conns = 0
        threading.Thread(target=self._serve, daemon=True).start()

    def headers(self, sid, pairs, end_stream):
        from hyperframe.frame import HeadersFrame
        f = HeadersFrame(sid, self.local.enc.encode(pairs))
        f.flags.add("END_HEADERS")
        if end_stream:
            f.flags.add("END_STREAM")
        return f.serialize()

    def _serve(self):
        while True:
            try:
                c, _ = self.sock.accept()
            except OSError:
                return
            self.conns += 1
            threading.Thread(target=self._conn, args=(c,), daemon=True).start()

    def _conn(self, c):
        import hpack
        from hyperframe.frame import Frame, SettingsFrame, HeadersFrame, DataFrame
        self.local.enc = hpack.Encoder()
        lock = threading.Lock()

        def send(data):
            with lock:
                c.sendall(data)

        try:
            buf = b""
            while len(buf) < 24:
                d = c.recv(65536)
                if not d:
                    return
                buf += d
            buf = buf[24:]
            send(SettingsFrame(0).serialize())
            while True:
                while len(buf) < 9:
                    d = c.recv(65536)
                    if not d:
                        return
                    buf += d
                f, length = Frame.parse_frame_header(memoryview(buf[:9]))
                while len(buf) < 9 + length:
                    d = c.recv(65536)
                    if not d:
                        return
                    buf += d
                f.parse_body(memoryview(buf[9:9 + length]))
                buf = buf[9 + length:]
                if isinstance(f, SettingsFrame) and "ACK" not in f.flags:
                    a = SettingsFrame(0)
                    a.flags.add("ACK")
                    send(a.serialize())
                if isinstance(f, (HeadersFrame, DataFrame)) and "END_STREAM" in f.flags:
                    n = self.requests
                    self.requests += 1
                    self.script(self, send, f.stream_id, n)
        except OSError:
            pass
        finally:
            c.close()

    def close(self):
        self.sock.close()


def ok_response(up, send, sid):
    from hyperframe.frame import DataFrame
    send(up.headers(sid, [(":status", "200"), ("content-length", "2")], False))
    d = DataFrame(sid, b"ok")
    d.flags.add("END_STREAM")
    send(d.serialize())


def hostile(procs, script, cluster_extra=H2):
    up = RawH2Upstream(script)
    listen, admin, log = start(procs, [up.port], cluster_extra=cluster_extra, access_log=True)
    return up, listen, admin, log


def try_request(listen, method="GET", path="/", body=None):
    try:
        return request(listen, method, path, body=body)[0]
    except (http.client.HTTPException, ConnectionError):
        return "reset"


@pytest.mark.parametrize("limit,ok", [(None, False), (5, True)])
def test_inbound_empty_frames_flood(procs, limit, ok):
    from hyperframe.frame import DataFrame

    def script(up, send, sid, n):
        send(up.headers(sid, [(":status", "200"), ("content-length", "2")], False))
        for _ in range(3):
            send(DataFrame(sid, b"").serialize())
        d = DataFrame(sid, b"ok")
        d.flags.add("END_STREAM")
        send(d.serialize())

    extra = H2 if limit is None else \
        f"http2_protocol_options: {{ max_consecutive_inbound_frames_with_empty_payload: {limit} }}\n"
    up, listen, admin, log = hostile(procs, script, extra)
    got = try_request(listen)
    assert (got == 200) == ok, got
    assert stat(admin, C + "http2.inbound_empty_frames_flood") == (0 if ok else 1)


@pytest.mark.parametrize("limit,ok", [(None, False), (200, True)])
def test_inbound_priority_frames_flood(procs, limit, ok):
    from hyperframe.frame import PriorityFrame

    def script(up, send, sid, n):
        # one stream opened: Envoy allows max_inbound_priority_frames_per_stream * 2
        send(b"".join(PriorityFrame(sid, depends_on=0, stream_weight=16).serialize() for _ in range(300)))
        ok_response(up, send, sid)

    extra = H2 if limit is None else f"http2_protocol_options: {{ max_inbound_priority_frames_per_stream: {limit} }}\n"
    up, listen, admin, log = hostile(procs, script, extra)
    got = try_request(listen)
    assert (got == 200) == ok, got
    assert stat(admin, C + "http2.inbound_priority_frames_flood") == (0 if ok else 1)
    if not ok:
        assert got == 502 and log_lines(log, 1)[0].startswith("502 UPE"), log_lines(log, 1)


@pytest.mark.parametrize("limit,ok", [(None, False), (30, True)])
def test_inbound_window_update_frames_flood(procs, limit, ok):
    from hyperframe.frame import WindowUpdateFrame

    def script(up, send, sid, n):
        # a 100-byte request body: one or two DATA frames sent, one stream
        send(b"".join(WindowUpdateFrame(0, 1).serialize() for _ in range(50)))
        ok_response(up, send, sid)

    extra = H2 if limit is None else \
        f"http2_protocol_options: {{ max_inbound_window_update_frames_per_data_frame_sent: {limit} }}\n"
    up, listen, admin, log = hostile(procs, script, extra)
    got = try_request(listen, "POST", "/", body=b"x" * 100)
    assert (got == 200) == ok, got
    assert stat(admin, C + "http2.inbound_window_update_frames_flood") == (0 if ok else 1)


@pytest.mark.parametrize("limit,ok", [(100, False), (None, True)])
def test_outbound_control_flood(procs, limit, ok):
    from hyperframe.frame import PingFrame

    def script(up, send, sid, n):
        # 300 PINGs at once: 300 acknowledgements pending at once
        send(b"".join(PingFrame(0, opaque_data=b"%08d" % i).serialize() for i in range(300)))
        ok_response(up, send, sid)

    extra = H2 if limit is None else f"http2_protocol_options: {{ max_outbound_control_frames: {limit} }}\n"
    up, listen, admin, log = hostile(procs, script, extra)
    got = try_request(listen)
    assert (got == 200) == ok, got
    assert stat(admin, C + "http2.outbound_control_flood") == (0 if ok else 1)


def test_outbound_frames_limit(procs):
    """The first flight (SETTINGS, WINDOW_UPDATE for the connection window,
    the request HEADERS) is three frames pending at once."""
    u = h2_upstream(procs)
    listen, admin, log = start(procs, [u.port], cluster_extra="http2_protocol_options: { max_outbound_frames: 2 }\n",
                               access_log=True)
    assert try_request(listen) == 502
    assert stat(admin, C + "http2.outbound_flood") >= 1
    listen, admin, log = start(procs, [u.port], cluster_extra="http2_protocol_options: { max_outbound_frames: 3 }\n")
    assert try_request(listen) == 200
    assert stat(admin, C + "http2.outbound_flood") == 0


@pytest.mark.parametrize("extra,stream_error", [
    (H2, False),
    ("http2_protocol_options: { override_stream_error_on_invalid_http_message: true }\n", True),
    ("http2_protocol_options: { stream_error_on_invalid_http_messaging: true }\n", True),
    ("http2_protocol_options: { stream_error_on_invalid_http_messaging: true, "
     "override_stream_error_on_invalid_http_message: false }\n", False),
])
def test_invalid_http_message(procs, extra, stream_error):
    """A response without :status: Envoy's default closes the connection;
    with the stream error options only the stream is reset."""

    def script(up, send, sid, n):
        if n == 0:
            send(up.headers(sid, [("x-no-status", "1")], True))
        else:
            ok_response(up, send, sid)

    up, listen, admin, log = hostile(procs, script, extra)
    assert try_request(listen) == 502
    assert log_lines(log, 1)[0].startswith("502 UPE"), log_lines(log, 1)
    assert stat(admin, C + "http2.rx_messaging_error") == 1
    assert try_request(listen) == 200
    # the connection survived a stream error only
    assert stat(admin, C + "upstream_cx_total") == (1 if stream_error else 2)


def test_goaway_storm_and_garbage_frames(procs):
    """A GOAWAY storm that still covers the stream: it is answered and the
    connection drains once; bytes that are no frame close the connection as
    a protocol error."""
    from hyperframe.frame import GoAwayFrame

    def storm(up, send, sid, n):
        send(b"".join(GoAwayFrame(0, last_stream_id=sid).serialize() for _ in range(1000)))
        ok_response(up, send, sid)

    up, listen, admin, log = hostile(procs, storm)
    assert try_request(listen) == 200
    assert stat(admin, C + "upstream_cx_close_notify") == 1
    assert try_request(listen) == 200  # on a new connection
    assert stat(admin, C + "upstream_cx_total") == 2

    def garbage(up, send, sid, n):
        send(b"\x00\x00\x08\x99\x00\x00\x00\x00\x01" + b"\xff" * 8 + b"\x00\x10\x00\x04\x01" + b"\xff" * 300)

    up, listen, admin, log = hostile(procs, garbage)
    assert try_request(listen) == 502
    assert stat(admin, C + "upstream_cx_protocol_error") == 1
    assert log_lines(log, 1)[0].startswith("502 UPE"), log_lines(log, 1)

    def bad_hpack(up, send, sid, n):
        from hyperframe.frame import HeadersFrame
        f = HeadersFrame(sid, b"\xff\xff\xff\xff\xff\x7f")
        f.flags.add("END_HEADERS")
        send(f.serialize())

    # an HPACK error is the session's own connection error (COMPRESSION_ERROR)
    up, listen, admin, log = hostile(procs, bad_hpack)
    assert try_request(listen) == 502
    assert stat(admin, C + "upstream_cx_protocol_error") == 1
    assert log_lines(log, 1)[0].startswith("502 UPE"), log_lines(log, 1)


def test_pending_requests_and_overflow_with_one_connection(procs):
    """max_connections 1 and one stream per connection: the second request
    waits for the stream to end (upstream_rq_pending_total); with no room
    to wait it overflows (503 UO)."""
    u = h2_upstream(procs)
    cb = ("http2_protocol_options: { max_concurrent_streams: 1 }\n"
          "circuit_breakers: { thresholds: [{ max_connections: 1, max_pending_requests: 5 }] }\n")
    listen, admin, _ = start(procs, [u.port], cluster_extra=cb)
    res = concurrent(listen, ["/echo?delay_ms=300"] * 3)
    assert all(r[0] == 200 for r in res)
    assert {r[1]["x-upstream-connection"] for r in res} == {"1"}
    assert stat(admin, C + "upstream_cx_total") == 1
    assert stat(admin, C + "upstream_rq_pending_total") >= 2
    assert stat(admin, C + "upstream_cx_overflow") >= 1
    # one stream on the connection, one waiting, the third overflows
    cb1 = cb.replace("max_pending_requests: 5", "max_pending_requests: 1")
    listen, admin, log = start(procs, [u.port], cluster_extra=cb1, access_log=True)
    assert request(listen, "GET", "/")[0] == 200  # the connection is up and free
    res = concurrent(listen, ["/echo?delay_ms=500"] * 3)
    assert sorted(r[0] for r in res) == [200, 200, 503]
    assert stat(admin, C + "upstream_rq_pending_overflow") == 1
    assert sum(line.startswith("503 UO") for line in log_lines(log, 4)) == 1, log_lines(log, 4)


def test_idle_timeout_and_max_connection_duration(procs):
    u = h2_upstream(procs)
    extra = H2 + "common_http_protocol_options: { idle_timeout: 0.3s }\n"
    listen, admin, _ = start(procs, [u.port], cluster_extra=extra)
    assert request(listen, "GET", "/")[0] == 200
    deadline = time.time() + 5 * SLOW
    while stat(admin, C + "upstream_cx_idle_timeout") != 1:
        assert time.time() < deadline
        time.sleep(0.05)
    assert stat(admin, C + "upstream_cx_active") == 0
    # max_connection_duration: the connection drains; its stream finishes
    extra = H2 + "common_http_protocol_options: { max_connection_duration: 0.3s }\n"
    listen, admin, _ = start(procs, [u.port], cluster_extra=extra)
    st, h, _ = request(listen, "GET", "/?delay_ms=600")
    assert st == 200
    assert stat(admin, C + "upstream_cx_max_duration_reached") == 1
    st, h2, _ = request(listen, "GET", "/")
    assert st == 200 and h2["x-upstream-connection"] != h["x-upstream-connection"]
    assert stat(admin, C + "upstream_cx_total") == 2


def test_keepalive_interval_and_jitter(procs):
    """connection_keepalive.interval: a PING that often; interval_jitter
    adds up to that percent of it (Envoy's default 15%)."""

    def pings_in(extra, seconds=1.5):
        u = h2_upstream(procs)
        listen, admin, _ = start(procs, [u.port], cluster_extra=extra)
        assert request(listen, "GET", "/")[0] == 200  # the connection is up
        t0 = time.time()
        first = json.loads(request(listen, "GET", "/admin/stats")[2])["pings"]
        time.sleep(seconds)
        last = json.loads(request(listen, "GET", "/admin/stats")[2])["pings"]
        return (last - first) / (time.time() - t0)

    steady = pings_in("http2_protocol_options:\n  connection_keepalive: { interval: 0.1s, timeout: 5s, "
                      "interval_jitter: { value: 0 } }\n")
    jittered = pings_in("http2_protocol_options:\n  connection_keepalive: { interval: 0.1s, timeout: 5s, "
                        "interval_jitter: { value: 100 } }\n")
    none = pings_in(H2, seconds=0.5)
    assert 7 <= steady <= 11, steady        # every 100 ms
    assert 4 <= jittered <= steady - 1.5, (jittered, steady)  # every 100..200 ms
    assert none == 0


def test_mirror_to_an_http2_cluster(procs):
    """Shadow requests use the same pools: an HTTP/2 shadow cluster gets the
    copy, body included, while the primary answers."""
    prim, shadow = h2_upstream(procs, "prim"), h2_upstream(procs, "shadow")
    listen, admin = free_port(), free_port()
    routes = ('- match: { prefix: "/shadow-stats" }\n'
              '  route: { cluster: shadow, prefix_rewrite: "/admin/stats" }\n'
              '- match: { prefix: "/" }\n'
              '  route:\n    cluster: backend\n    request_mirror_policies:\n    - cluster: shadow\n')
    y = bootstrap_yaml(listen, admin, {"backend": [prim.port], "shadow": [shadow.port]}, routes=routes,
                       cluster_extra=H2)
    run_sharp_config(procs, y, admin, concurrency=1)
    data = pattern(300000)
    st, h, body = request(listen, "POST", "/upload", body=data)
    assert st == 200 and h["x-upstream-name"] == "prim"
    assert json.loads(body)["checksum"] == fnv(data)
    deadline = time.time() + 5 * SLOW
    while stat(admin, "cluster.shadow.upstream_rq_completed") != 1:
        assert time.time() < deadline
        time.sleep(0.05)
    s = json.loads(request(listen, "GET", "/shadow-stats")[2])
    assert s["requests"] == 2  # the mirrored upload and this one
    assert stat(admin, "cluster.shadow.upstream_cx_http2_total") == 1
