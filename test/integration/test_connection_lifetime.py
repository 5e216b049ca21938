"""HttpConnectionManager connection and stream lifetime options through the
real binary: common_http_protocol_options.headers_with_underscores_action,
max_connection_duration (with http1_safe_max_connection_duration),
max_stream_duration, and delayed_close_timeout."""
import json
import socket
import subprocess
import time

import pytest

from conftest import (PROTOS, H2Client, H2StreamError, file_access_log, log_lines, SLOW, bootstrap_yaml, free_port,
                      raw_request, run_sharp_config, stat)

LOG_FORMAT = "%RESPONSE_CODE% %RESPONSE_FLAGS% %RESPONSE_CODE_DETAILS%\\n"


def start(procs, upstream_port, hcm_extra="", routes=None, cluster_extra=""):
    listen, admin = free_port(), free_port()
    al, log = file_access_log(LOG_FORMAT)
    run_sharp_config(procs, bootstrap_yaml(listen, admin, {"app": [upstream_port]}, routes=routes,
                                           hcm_extra=al + hcm_extra, cluster_extra=cluster_extra), admin)
    return listen, admin, log


H2 = PROTOS["h2-both"]
# the GOAWAY Envoy (nghttp2's shutdown notice) sends when a drain starts:
# no stream refused yet, the client should open no new ones
SHUTDOWN_NOTICE = (2**31 - 1, 0)


def start_h2(procs, hcm_extra="", routes=None):
    """SHARP with HTTP/2 on both sides in front of a test upstream."""
    u = H2.upstream(procs)
    return start(procs, u.port, hcm_extra, routes=routes, cluster_extra=H2.cluster)


def wait_stat(admin, name, want, timeout=5.0):
    deadline = time.time() + timeout * SLOW
    while time.time() < deadline:
        if stat(admin, name) == want:
            return True
        time.sleep(0.05)
    return stat(admin, name) == want


def read_response(s):
    """Reads one response with a content-length body from a socket."""
    buf = b""
    while b"\r\n\r\n" not in buf:
        c = s.recv(65536)
        if not c:
            return buf, None
        buf += c
    head, _, body = buf.partition(b"\r\n\r\n")
    n = 0
    for ln in head.split(b"\r\n")[1:]:
        k, _, v = ln.partition(b":")
        if k.strip().lower() == b"content-length":
            n = int(v)
    while len(body) < n:
        c = s.recv(65536)
        if not c:
            break
        body += c
    return head.decode(), body


def closed_by_peer(s, timeout):
    s.settimeout(timeout)
    try:
        return s.recv(1) == b""
    except socket.timeout:
        return False
    except ConnectionResetError:
        return True


# ---- headers_with_underscores_action ----

UNDERSCORE_REQUEST = (b"GET /u HTTP/1.1\r\nHost: x\r\nx-before: 1\r\nx_under_score: 2\r\nx_empty:\r\n"
                      b"x-after: 3\r\n\r\n")


def upstream_header_names(body):
    return [k.lower() for k, _ in json.loads(body)["headers"]]


@pytest.mark.parametrize("action", [None, "ALLOW"])
def test_headers_with_underscores_allowed(procs, path_upstream, action):
    extra = f"common_http_protocol_options: {{ headers_with_underscores_action: {action} }}\n" if action else ""
    listen, admin, _ = start(procs, path_upstream.port, extra)
    st, _, body, _ = raw_request(listen, UNDERSCORE_REQUEST)
    assert st == 200
    names = upstream_header_names(body)
    assert "x_under_score" in names and "x_empty" in names and "x-before" in names and "x-after" in names


def test_headers_with_underscores_dropped(procs, path_upstream):
    listen, admin, _ = start(procs, path_upstream.port,
                             "common_http_protocol_options: { headers_with_underscores_action: DROP_HEADER }\n")
    st, _, body, closed = raw_request(listen, UNDERSCORE_REQUEST)
    assert st == 200 and not closed
    names = upstream_header_names(body)
    assert "x_under_score" not in names and "x_empty" not in names
    assert "x-before" in names and "x-after" in names
    hdrs = dict((k.lower(), v) for k, v in json.loads(body)["headers"])
    assert hdrs["x-before"] == "1" and hdrs["x-after"] == "3"
    assert stat(admin, "http1.dropped_headers_with_underscores") == 2
    assert stat(admin, "http1.requests_rejected_with_underscores_in_headers") == 0


def test_headers_with_underscores_rejected(procs, path_upstream):
    listen, admin, log = start(procs, path_upstream.port,
                               "common_http_protocol_options: { headers_with_underscores_action: REJECT_REQUEST }\n")
    st, hdrs, body, closed = raw_request(listen, UNDERSCORE_REQUEST)
    assert st == 400 and closed and hdrs.get("connection") == "close"
    assert stat(admin, "http1.requests_rejected_with_underscores_in_headers") == 1
    assert stat(admin, "http.ingress_http.downstream_cx_protocol_error") == 1
    assert log_lines(log, 1)[0] == "400 DPE http1.unexpected_underscore"
    # with real curl too; a name without underscore is fine
    out = subprocess.run(["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", "-H", "my_header: 1",
                          f"http://127.0.0.1:{listen}/"], capture_output=True, text=True, timeout=10).stdout
    assert out == "400"
    out = subprocess.run(["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", "-H", "my-header: 1",
                          f"http://127.0.0.1:{listen}/"], capture_output=True, text=True, timeout=10).stdout
    assert out == "200"
    assert stat(admin, "cluster.app.upstream_rq_total") == 1


@pytest.mark.parametrize("action", ["DROP_HEADER", "REJECT_REQUEST"])
def test_headers_with_underscores_over_http2(procs, path_upstream, action):
    """Over HTTP/2 the http2.* counters count; a rejected request's stream is
    reset (Envoy's codec refuses the header block), the connection lives."""
    listen, admin, _ = start(procs, path_upstream.port,
                             f"common_http_protocol_options: {{ headers_with_underscores_action: {action} }}\n")
    c = H2Client(listen)
    sid = c.send("/u", headers={"x-before": "1", "x_under_score": "2", "x-after": "3"})
    if action == "DROP_HEADER":
        st, _, body = c.response(sid)
        assert st == 200
        names = upstream_header_names(body)
        assert "x_under_score" not in names and "x-before" in names and "x-after" in names
        assert stat(admin, "http2.dropped_headers_with_underscores") == 1
        assert stat(admin, "http2.requests_rejected_with_underscores_in_headers") == 0
    else:
        with pytest.raises(H2StreamError) as e:
            c.response(sid)
        assert e.value.code is not None  # RST_STREAM, not the connection
        assert stat(admin, "http2.requests_rejected_with_underscores_in_headers") == 1
        assert stat(admin, "cluster.app.upstream_rq_total") == 0
    assert stat(admin, "http1.dropped_headers_with_underscores") == 0
    st, _, _ = c.response(c.send("/ok", headers={"x-fine": "1"}))
    assert st == 200 and not c.goaways
    c.close()


# ---- max_connection_duration ----

def test_max_connection_duration_closes_on_next_response(procs, upstream):
    listen, admin, _ = start(procs, upstream.port, "drain_timeout: 30s\n"
                             "common_http_protocol_options: { max_connection_duration: 0.5s }\n")
    s = socket.create_connection(("127.0.0.1", listen), timeout=5 * SLOW)
    s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    head, _ = read_response(s)
    assert head.startswith("HTTP/1.1 200") and "connection: close" not in head.lower()
    assert wait_stat(admin, "http.ingress_http.downstream_cx_max_duration_reached", 1)
    # draining: still open (drain_timeout is long), the next response closes it
    s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    head, _ = read_response(s)
    assert head.startswith("HTTP/1.1 200") and "connection: close" in head.lower()
    assert closed_by_peer(s, 3 * SLOW)
    s.close()
    assert stat(admin, "http.ingress_http.downstream_cx_drain_close") == 0


def test_max_connection_duration_closes_idle_after_drain_timeout(procs, upstream):
    listen, admin, _ = start(procs, upstream.port, "drain_timeout: 0.3s\n"
                             "common_http_protocol_options: { max_connection_duration: 0.3s }\n")
    s = socket.create_connection(("127.0.0.1", listen), timeout=5 * SLOW)
    s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    head, _ = read_response(s)
    assert head.startswith("HTTP/1.1 200")
    t0 = time.time()
    assert closed_by_peer(s, 5 * SLOW)
    assert time.time() - t0 >= 0.3  # duration, then the drain grace period
    s.close()
    assert stat(admin, "http.ingress_http.downstream_cx_max_duration_reached") == 1
    # an idle connection that never sent anything is drained the same way
    s = socket.create_connection(("127.0.0.1", listen), timeout=5 * SLOW)
    assert closed_by_peer(s, 5 * SLOW)
    s.close()
    assert stat(admin, "http.ingress_http.downstream_cx_max_duration_reached") == 2


def test_http1_safe_max_connection_duration_waits_for_the_next_request(procs, upstream):
    listen, admin, _ = start(procs, upstream.port, "drain_timeout: 0.2s\nhttp1_safe_max_connection_duration: true\n"
                             "common_http_protocol_options: { max_connection_duration: 0.3s }\n")
    s = socket.create_connection(("127.0.0.1", listen), timeout=5 * SLOW)
    s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    head, _ = read_response(s)
    assert "connection: close" not in head.lower()
    assert wait_stat(admin, "http.ingress_http.downstream_cx_max_duration_reached", 1)
    assert not closed_by_peer(s, 1.0)  # idle, but not closed by the proxy
    s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    head, _ = read_response(s)
    assert head.startswith("HTTP/1.1 200") and "connection: close" in head.lower()
    assert closed_by_peer(s, 3 * SLOW)
    s.close()


def test_max_connection_duration_unset_keeps_connection(procs, upstream):
    listen, admin, _ = start(procs, upstream.port, "drain_timeout: 0.1s\n")
    s = socket.create_connection(("127.0.0.1", listen), timeout=5)
    s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    read_response(s)
    assert not closed_by_peer(s, 0.8)
    s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    head, _ = read_response(s)
    assert "connection: close" not in head.lower()
    s.close()


@pytest.mark.parametrize("http1_safe", [False, True])
def test_max_connection_duration_over_http2_goaway_then_close(procs, http1_safe):
    """Envoy over HTTP/2: the duration starts the drain with a GOAWAY
    shutdown notice (no connection: close header exists); drain_timeout
    after it, open streams or not, a GOAWAY with the last stream id; the
    connection closes once its streams are done. Streams opened meanwhile
    are served but do not hold the connection open.
    http1_safe_max_connection_duration applies to HTTP/1 only."""
    extra = "http1_safe_max_connection_duration: true\n" if http1_safe else ""
    listen, admin, _ = start_h2(procs, extra + "drain_timeout: 0.6s\n"
                                "common_http_protocol_options: { max_connection_duration: 0.3s }\n")
    c = H2Client(listen)
    st, h, _ = c.response(c.send("/"))
    assert st == 200 and "connection" not in h
    slow = c.send("/?delay_ms=1600")  # outlives the drain timeout
    assert c.wait(lambda: c.goaways, 3)
    assert c.goaways == [SHUTDOWN_NOTICE]
    assert stat(admin, "http.ingress_http.downstream_cx_max_duration_reached") == 1
    # a client that goes on opening streams is still served...
    late = c.send("/")
    st, _, _ = c.response(late)
    assert st == 200
    # ... and the final GOAWAY comes while the slow stream is in flight
    assert c.wait(lambda: len(c.goaways) == 2, 3)
    assert c.goaways == [SHUTDOWN_NOTICE, (late, 0)]
    assert not c.streams[slow]["ended"]
    st, _, _ = c.response(slow, 5)
    assert st == 200
    assert c.closed_by_peer(3)
    c.close()


def test_max_connection_duration_over_http2_idle(procs):
    listen, admin, _ = start_h2(procs, "drain_timeout: 0.3s\n"
                                "common_http_protocol_options: { max_connection_duration: 0.3s }\n")
    t0 = time.time()
    c = H2Client(listen)
    assert c.closed_by_peer(5)
    assert time.time() - t0 >= 0.6  # duration, then the drain grace period
    assert c.goaways == [SHUTDOWN_NOTICE, (0, 0)]
    c.close()
    assert stat(admin, "http.ingress_http.downstream_cx_max_duration_reached") == 1


# ---- max_stream_duration ----

def test_max_stream_duration_504_when_upstream_is_slow(procs, upstream):
    listen, admin, log = start(procs, upstream.port, "common_http_protocol_options: { max_stream_duration: 0.4s }\n")
    t0 = time.time()
    st, hdrs, body, closed = raw_request(listen, b"GET /?delay_ms=3000 HTTP/1.1\r\nHost: x\r\n\r\n")
    took = time.time() - t0
    assert st == 504 and body == b"downstream duration timeout"
    assert 0.35 < took < 2.5 * SLOW
    assert not closed  # the request was complete: the connection stays usable
    assert stat(admin, "http.ingress_http.downstream_rq_max_duration_reached") == 1
    assert log_lines(log, 1)[0] == "504 - max_duration_timeout"
    # a fast request is unaffected
    st, _, _, _ = raw_request(listen, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    assert st == 200


def test_max_stream_duration_408_while_request_arrives(procs, upstream):
    listen, admin, log = start(procs, upstream.port, "common_http_protocol_options: { max_stream_duration: 0.4s }\n")
    s = socket.create_connection(("127.0.0.1", listen), timeout=5 * SLOW)
    s.sendall(b"POST /upload HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\nonly-part")
    head, body = read_response(s)
    assert head.startswith("HTTP/1.1 408") and body == b"downstream duration timeout"
    assert "connection: close" in head.lower()
    assert closed_by_peer(s, 3 * SLOW)
    s.close()
    assert stat(admin, "http.ingress_http.downstream_rq_max_duration_reached") == 1


def test_max_stream_duration_resets_a_started_response(procs, upstream):
    listen, admin, log = start(procs, upstream.port, "common_http_protocol_options: { max_stream_duration: 0.5s }\n")
    s = socket.create_connection(("127.0.0.1", listen), timeout=5 * SLOW)
    s.sendall(b"GET /bytes/2000000?chunk_delay_ms=100 HTTP/1.1\r\nHost: x\r\n\r\n")
    data = b""
    t0 = time.time()
    while True:
        try:
            c = s.recv(65536)
        except ConnectionResetError:
            break
        if not c:
            break
        data += c
        assert time.time() - t0 < 5 * SLOW
    s.close()
    assert data.startswith(b"HTTP/1.1 200")
    assert len(data) < 2000000  # cut short
    assert stat(admin, "http.ingress_http.downstream_rq_max_duration_reached") == 1
    assert stat(admin, "http.ingress_http.downstream_rq_tx_reset") == 1


def test_max_stream_duration_over_http2(procs):
    """504 for a slow upstream, 408 while the request body arrives, a reset
    for a started response: each ends only its stream, the connection and
    the other streams on it go on."""
    listen, admin, log = start_h2(procs, "common_http_protocol_options: { max_stream_duration: 0.4s }\n")
    c = H2Client(listen)
    t0 = time.time()
    slow = c.send("/?delay_ms=3000")
    cut = c.send("/bytes/2000000?chunk_delay_ms=100")
    arriving = c.send("/upload", method="POST", headers={"content-length": "1000"}, body=b"only-part", end=False)
    st, _, body = c.response(slow, 5)
    assert st == 504 and body == b"downstream duration timeout"
    assert 0.35 < time.time() - t0 < 2.5 * SLOW
    st, _, body = c.response(arriving, 5)
    assert st == 408 and body == b"downstream duration timeout"
    # the rest of that request body is not wanted: at most a NO_ERROR reset
    assert c.streams[arriving]["reset"] in (None, 0)
    with pytest.raises(H2StreamError):
        c.response(cut, 5)
    assert c.streams[cut]["status"] == 200 and 0 < len(c.streams[cut]["body"]) < 2000000
    st, _, _ = c.response(c.send("/"))
    assert st == 200 and not c.goaways and not c.eof
    c.close()
    assert stat(admin, "http.ingress_http.downstream_rq_max_duration_reached") == 3
    assert stat(admin, "http.ingress_http.downstream_rq_tx_reset") >= 1
    lines = log_lines(log, 4)
    for want in ("504 - max_duration_timeout", "408 - max_duration_timeout", "200 - via_upstream"):
        assert want in lines, lines
    assert sum(ln.startswith("200 ") for ln in lines) == 2, lines  # the one cut short too


# ---- delayed_close_timeout ----

EARLY_ROUTES = """\
- match: { prefix: "/early" }
  direct_response: { status: 403, body: { inline_string: "no" } }
- match: { prefix: "/" }
  route: { cluster: app }
"""


def early_reply(listen):
    """A request whose body is still coming when the proxy answers: the proxy
    closes the connection after the response (with unread bytes pending)."""
    s = socket.create_connection(("127.0.0.1", listen), timeout=5 * SLOW)
    s.sendall(b"POST /early HTTP/1.1\r\nHost: x\r\nContent-Length: 1000000\r\n\r\n" + b"a" * 1000)
    head, body = read_response(s)
    assert head.startswith("HTTP/1.1 403") and body == b"no"
    assert "connection: close" in head.lower()
    return s


def test_delayed_close_waits_for_the_peer(procs, upstream):
    listen, admin, _ = start(procs, upstream.port, routes=EARLY_ROUTES)  # default 1s
    s = early_reply(listen)
    # the proxy has sent its FIN but keeps the socket, draining what the
    # client still sends, instead of closing (which would answer with a RST)
    for _ in range(4):
        s.sendall(b"b" * 16384)
        time.sleep(0.05)
    assert stat(admin, "http.ingress_http.downstream_cx_active") == 1
    # the client closes: the proxy closes at once, no timeout counted
    s.close()
    assert wait_stat(admin, "http.ingress_http.downstream_cx_active", 0, 0.6)
    assert stat(admin, "http.ingress_http.downstream_cx_delayed_close_timeout") == 0


def test_delayed_close_timeout_fires(procs, upstream):
    listen, admin, _ = start(procs, upstream.port, "delayed_close_timeout: 0.6s\n", routes=EARLY_ROUTES)
    s = early_reply(listen)
    time.sleep(0.3)
    assert stat(admin, "http.ingress_http.downstream_cx_active") == 1
    assert wait_stat(admin, "http.ingress_http.downstream_cx_delayed_close_timeout", 1, 3)
    assert stat(admin, "http.ingress_http.downstream_cx_active") == 0
    s.close()


def test_delayed_close_disabled(procs, upstream):
    listen, admin, _ = start(procs, upstream.port, "delayed_close_timeout: 0s\n", routes=EARLY_ROUTES)
    s = early_reply(listen)
    assert wait_stat(admin, "http.ingress_http.downstream_cx_active", 0, 1)
    assert stat(admin, "http.ingress_http.downstream_cx_delayed_close_timeout") == 0
    s.close()


def test_no_delay_when_the_client_asked_for_the_close(procs, upstream):
    # Envoy skips the delay when the client sent "connection: close" and its
    # whole request: nothing is left unread.
    listen, admin, _ = start(procs, upstream.port, "delayed_close_timeout: 5s\n")
    s = socket.create_connection(("127.0.0.1", listen), timeout=5)
    s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    head, _ = read_response(s)
    assert head.startswith("HTTP/1.1 200")
    assert wait_stat(admin, "http.ingress_http.downstream_cx_active", 0, 1)
    s.close()
    # a protocol error is always followed by the delayed close
    s = socket.create_connection(("127.0.0.1", listen), timeout=5)
    s.sendall(b"GARBAGE\r\n\r\n")
    head, _ = read_response(s)
    assert head.startswith("HTTP/1.1 400")
    time.sleep(0.3)
    assert stat(admin, "http.ingress_http.downstream_cx_active") == 1
    s.close()
    assert wait_stat(admin, "http.ingress_http.downstream_cx_active", 0, 1)


def test_max_connection_duration_zero_drains_at_once(procs, upstream):
    # set to 0 (not unset): Envoy's timer fires at once and the drain begins
    listen, admin, _ = start(procs, upstream.port, "drain_timeout: 0.2s\n"
                             "common_http_protocol_options: { max_connection_duration: 0s }\n")
    s = socket.create_connection(("127.0.0.1", listen), timeout=5 * SLOW)
    assert closed_by_peer(s, 3 * SLOW)
    s.close()
    assert stat(admin, "http.ingress_http.downstream_cx_max_duration_reached") == 1
