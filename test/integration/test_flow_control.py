"""Flow control in the HTTP connection manager.

A response whose headers a filter holds (sharp.test.hold_response, from
the sharp-test-filters binary) keeps arriving from a real upstream: above
the stream's buffer limit the upstream is paused until the filter lets the
response go (Envoy's watermark on the encoder filter's buffer), so SHARP
holds about that limit, not the body, and the body then arrives whole; a
filter that buffers the whole body gets Envoy's 500 with rs_too_large
instead. Over HTTP/1 and HTTP/2, on either side.

The downstream's read pause is held by sources, counted: the bandwidth
limit filter pausing a request while its buffer is full and the router
pausing it while a slow upstream does not read overlap, and the one
letting go does not resume reading while the other still holds it, so
memory stays bounded; once the upstream reads, the upload completes.

On the request side a filter that holds the request headers
(sharp.test.hold_request) holds the body too: above the buffer limit the
client is paused until the filter lets it go, and the body then arrives
whole; a filter that buffers the whole body (STOP from decode_data,
Envoy's StopIterationAndBuffer as its buffer filter returns) gets Envoy's
413 with downstream_rq_too_large instead, over HTTP/1 and HTTP/2 (curl),
and on HTTP/2 the connection's other streams go on."""
import json
import os
import socket
import threading
import time

import pytest

from conftest import (SANITIZED, SHARP_TEST_FILTERS, SLOW, H2Client, RawUpstream, admin_get, bootstrap_yaml,
                      file_access_log, free_port, log_lines,
                      protos, run_sharp_config, stat, wait_for)

LIMIT = 256 * 1024
MIB = 1024 * 1024
PATTERN = bytes((i * 31 + 7) & 0xFF for i in range(256))

pytestmark = pytest.mark.skipif(not os.path.exists(SHARP_TEST_FILTERS), reason="sharp-test-filters not built")


def body_ok(data, size):
    """The test upstream's /bytes body: byte i is (i * 31 + 7) & 0xff."""
    return len(data) == size and data == (PATTERN * (size // 256 + 1))[:size]


def heap(admin):
    return stat(admin, "server.memory_allocated")


def start_hold(procs, proto, upstream, hcm_extra=""):
    """sharp-test-filters with sharp.test.hold_response before the router,
    the listener's and the cluster's buffer limit LIMIT; an HTTP/2 upstream
    gets a 64 KiB stream window (Envoy's default of 256 MiB would let it
    send that much to a paused stream, as in Envoy). Returns (port, admin)."""
    listen, admin = free_port(), free_port()
    cluster = f"per_connection_buffer_limit_bytes: {LIMIT}\n"
    if proto.up == "h2":
        cluster += "http2_protocol_options: { initial_stream_window_size: 65536 }\n"
    y = bootstrap_yaml(listen, admin, {"backend": [upstream.port]},
                       routes='- match: { prefix: "/" }\n  route: { cluster: backend, timeout: 0s }\n',
                       listener_extra=f"per_connection_buffer_limit_bytes: {LIMIT}\n", cluster_extra=cluster,
                       hcm_extra=hcm_extra)
    y = y.replace("          http_filters:\n", "          http_filters:\n          - name: sharp.test.hold_response\n")
    run_sharp_config(procs, y, admin, binary=SHARP_TEST_FILTERS)
    return listen, admin


def in_thread(fn):
    """Runs fn() in a thread; returns a join function giving its result
    (or raising its exception)."""
    out = {}

    def run():
        try:
            out["r"] = fn()
        except BaseException as e:  # noqa: BLE001 - handed to the caller
            out["e"] = e

    t = threading.Thread(target=run, daemon=True)
    t.start()

    def join(timeout):
        t.join(timeout)
        assert not t.is_alive(), "the request did not finish"
        if "e" in out:
            raise out["e"]
        return out["r"]
    return join


@protos("h1", "h2-down", "h2-up", "h2-both")
def test_held_response_pauses_upstream(procs, proto):
    """A 64 MiB response whose headers the filter holds for 2 s: the
    upstream is paused above the 256 KiB buffer limit, so SHARP's heap
    grows by about that limit, not by the body; once released the body
    arrives whole and in order."""
    up = proto.upstream(procs)
    port, admin = start_hold(procs, proto, up)
    size = 64 * MIB
    hold_s = 2.0 * SLOW
    base = heap(admin)
    join = in_thread(lambda: proto.request(port, f"/bytes/{size}", timeout=60,
                                           headers={"x-test-hold-response-ms": str(int(hold_s * 1000))}))
    # while the headers are held: sample the heap (the upstream would send
    # the whole body in well under a second if nothing paused it)
    peak = 0
    t_end = time.time() + hold_s * 0.8
    while time.time() < t_end:
        peak = max(peak, heap(admin) - base)
        time.sleep(0.05)
    status, _, body = join(60 * SLOW)
    assert status == 200
    assert body_ok(body, size), len(body)
    assert peak < 4 * MIB * (3 if SANITIZED else 1), peak
    assert stat(admin, "http.ingress_http.rs_too_large") == 0


@protos("h1", "h2-down", "h2-up", "h2-both")
def test_held_response_buffered_too_large(procs, proto):
    """The filter holds the headers and wants the whole body (STOP from
    encode_data): above the buffer limit the response is Envoy's 500,
    long before the filter's 10 s are over, counted in rs_too_large and
    logged with response_payload_too_large; SHARP goes on serving."""
    al, log = file_access_log("%RESPONSE_CODE% %RESPONSE_CODE_DETAILS%\\n")
    up = proto.upstream(procs)
    port, admin = start_hold(procs, proto, up, hcm_extra=al)
    t0 = time.monotonic()
    status, headers, body = proto.request(port, f"/bytes/{4 * MIB}", timeout=30,
                                          headers={"x-test-hold-response-ms": "10000",
                                                   "x-test-hold-response-mode": "buffer"})
    assert status == 500
    assert body == b"Internal Server Error"
    assert time.monotonic() - t0 < 5 * SLOW
    assert stat(admin, "http.ingress_http.rs_too_large") == 1
    wait_for(lambda: stat(admin, "http.ingress_http.downstream_rq_5xx") == 1, 5, "the 500 counted")
    assert log_lines(log, 1)[0] == "500 response_payload_too_large"
    # the connection manager, the upstream and the filter still work
    status, _, body = proto.request(port, "/bytes/1000", timeout=10)
    assert status == 200 and body_ok(body, 1000)


@protos("h1", "h2-both")
def test_held_response_buffered_within_limit(procs, proto):
    """A buffered body within the limit is held, not refused: it arrives
    whole once the filter lets it go."""
    up = proto.upstream(procs)
    port, admin = start_hold(procs, proto, up)
    size = LIMIT - 1000
    t0 = time.monotonic()
    status, _, body = proto.request(port, f"/bytes/{size}", timeout=30,
                                    headers={"x-test-hold-response-ms": "300", "x-test-hold-response-mode": "buffer"})
    assert status == 200
    assert body_ok(body, size)
    assert time.monotonic() - t0 >= 0.3
    assert stat(admin, "http.ingress_http.rs_too_large") == 0


class HeldReader:
    """A one-connection HTTP/1.1 upstream that reads nothing until
    released (a slow reader: its receive buffer is 64 KiB), then reads
    the request whole (content-length) and answers 200 with the number of
    body bytes it got."""

    def __init__(self):
        self.ls = socket.socket()
        self.ls.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
        self.ls.bind(("127.0.0.1", 0))
        self.ls.listen(4)
        self.port = self.ls.getsockname()[1]
        self.release = threading.Event()
        self.got = None
        self.t = threading.Thread(target=self.serve, daemon=True)
        self.t.start()

    def serve(self):
        c, _ = self.ls.accept()
        with c:
            c.settimeout(60 * SLOW)
            if not self.release.wait(60 * SLOW):
                return
            buf = b""
            while b"\r\n\r\n" not in buf:
                d = c.recv(65536)
                if not d:
                    return
                buf += d
            head, rest = buf.split(b"\r\n\r\n", 1)
            length = 0
            for ln in head.split(b"\r\n")[1:]:
                k, _, v = ln.partition(b":")
                if k.strip().lower() == b"content-length":
                    length = int(v)
            n = len(rest)
            while n < length:
                d = c.recv(1 << 20)
                if not d:
                    break
                n += len(d)
            self.got = n
            msg = b'{"body_bytes": %d}' % n
            c.sendall(b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\ncontent-type: application/json\r\n\r\n%s"
                      % (len(msg), msg))
            time.sleep(0.2)

    def close(self):
        self.release.set()
        self.ls.close()


def test_overlapping_read_pauses_stay_bounded(procs):
    """bandwidth_limit paces a 24 MiB upload at 4 MiB/s (its bucket starts
    with 4 MiB) while the upstream does not read: the filter pauses the
    client whenever its buffer is above the 256 KiB limit and the router
    pauses it once the upstream's write buffer is (the kernel's socket
    buffers full). Each time the filter drains to half it lets go of its
    pause, and reading must not resume while the router still holds its
    own: SHARP's heap stays within a few buffer limits (not 4 MiB more a
    second in the upstream's write buffer). Once the upstream reads, the
    whole upload goes through."""
    reader = HeldReader()
    try:
        listen, admin = free_port(), free_port()
        y = bootstrap_yaml(listen, admin, {"slow": [reader.port]},
                           routes='- match: { prefix: "/" }\n  route: { cluster: slow, timeout: 0s }\n',
                           listener_extra=f"per_connection_buffer_limit_bytes: {LIMIT}\n",
                           cluster_extra=f"per_connection_buffer_limit_bytes: {LIMIT}\n")
        bw = ("          - name: envoy.filters.http.bandwidth_limit\n            typed_config:\n"
              '              "@type": type.googleapis.com/envoy.extensions.filters.http.bandwidth_limit.v3.'
              "BandwidthLimit\n              stat_prefix: bw\n              enable_mode: REQUEST\n"
              "              limit_kbps: 2048\n")
        y = y.replace("          http_filters:\n", "          http_filters:\n" + bw)
        run_sharp_config(procs, y, admin)
        size = 24 * MIB
        base = heap(admin)
        sent = [0]
        s = socket.socket()
        s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 64 * 1024)
        s.settimeout(60 * SLOW)
        s.connect(("127.0.0.1", listen))

        def upload():
            s.sendall(b"POST /upload HTTP/1.1\r\nhost: x\r\ncontent-length: %d\r\n\r\n" % size)
            piece = PATTERN * 256
            left = size
            while left:
                n = s.send(piece[:min(left, len(piece))])
                sent[0] += n
                left -= n
            resp = b""
            while b"\r\n\r\n" not in resp or not resp.endswith(b"}"):
                d = s.recv(65536)
                if not d:
                    break
                resp += d
            return resp
        join = in_thread(upload)
        # the pauses hold: the client's progress stops a few buffers in
        wait_for(lambda: sent[0] > 4 * LIMIT, 10, "the upload to start")
        peak = 0
        t_end = time.time() + 5 * SLOW
        while time.time() < t_end:
            peak = max(peak, heap(admin) - base)
            time.sleep(0.05)
        # the client is held back (what it sent sits mostly in the kernel's
        # socket buffers) and SHARP's heap holds a few buffer limits
        assert sent[0] < size // 2, sent[0]
        assert peak < 4 * MIB * (3 if SANITIZED else 1), peak
        # the upstream reads: nothing hangs, every byte arrives
        reader.release.set()
        resp = join(60 * SLOW)
        assert resp.startswith(b"HTTP/1.1 200"), resp[:200]
        assert resp.endswith(b'{"body_bytes": %d}' % size), resp[-200:]
        assert reader.got == size
        s.close()
    finally:
        reader.close()


# ---- the request side -------------------------------------------------------

def start_hold_request(procs, upstream, hcm_extra=""):
    """sharp-test-filters with sharp.test.hold_request before the router,
    the listener's buffer limit LIMIT. Returns (port, admin)."""
    listen, admin = free_port(), free_port()
    y = bootstrap_yaml(listen, admin, {"backend": [upstream.port]},
                       routes='- match: { prefix: "/" }\n  route: { cluster: backend, timeout: 0s }\n',
                       listener_extra=f"per_connection_buffer_limit_bytes: {LIMIT}\n", hcm_extra=hcm_extra)
    y = y.replace("          http_filters:\n", "          http_filters:\n          - name: sharp.test.hold_request\n")
    run_sharp_config(procs, y, admin, binary=SHARP_TEST_FILTERS)
    return listen, admin


def curl_post(port, size, headers, h2, timeout=30):
    """POSTs `size` bytes to /echo with curl (HTTP/2 with prior knowledge
    when h2; no Expect: 100-continue). Returns (status, body, curl's exit
    code)."""
    import subprocess
    import tempfile
    with tempfile.NamedTemporaryFile(prefix="sharp-body-") as f:
        f.write(b"b" * size)
        f.flush()
        args = ["curl", "-sS", "--max-time", str(timeout * SLOW), "-o", "-", "-w", "\n%{http_code}",
                "-H", "Expect:", "--data-binary", f"@{f.name}"]
        if h2:
            args.append("--http2-prior-knowledge")
        for k, v in headers.items():
            args += ["-H", f"{k}: {v}"]
        r = subprocess.run(args + [f"http://127.0.0.1:{port}/echo"], capture_output=True, timeout=timeout * SLOW + 5)
    body, _, code = r.stdout.rpartition(b"\n")
    return int(code or 0), body, (r.returncode, r.stderr.decode(errors="replace")[-500:])


BUFFER_HOLD = {"x-test-hold-request-ms": "10000", "x-test-hold-request-mode": "buffer"}


def h2_send_body(c, sid, size, end=False):
    """Sends `size` bytes on stream sid of H2Client c as its windows allow,
    until they are sent or the stream is answered or reset. Returns the
    bytes sent."""
    sent = 0
    deadline = time.time() + 10 * SLOW
    st = c.streams[sid]
    while sent < size and st["reset"] is None and not st["ended"] and time.time() < deadline:
        room = min(c.conn.local_flow_control_window(sid), c.conn.max_outbound_frame_size, size - sent)
        if room <= 0:
            c.pump(0.05)
            continue
        c.send_data(sid, b"b" * room, end=end and sent + room == size)
        sent += room
        c.pump(0.001)
    return sent


def assert_too_large_counted(admin, log):
    assert stat(admin, "http.ingress_http.downstream_rq_too_large") == 1
    prom = admin_get(admin, "/stats/prometheus")
    assert 'envoy_http_downstream_rq_too_large{envoy_http_conn_manager_prefix="ingress_http"} 1' in prom, \
        [ln for ln in prom.splitlines() if "too_large" in ln]
    assert log_lines(log, 1)[0] == "413 request_payload_too_large"
    assert stat(admin, "cluster.backend.upstream_rq_total") == 0


def test_held_request_buffered_too_large_h1(procs, upstream):
    """The filter holds the request headers and wants the whole body (STOP
    from decode_data): a body above the 256 KiB buffer limit, sent by curl,
    is answered with Envoy's 413 long before the filter's 10 s are over,
    counted in downstream_rq_too_large (/stats and Prometheus), logged with
    request_payload_too_large, and nothing reaches the upstream; SHARP goes
    on serving."""
    al, log = file_access_log("%RESPONSE_CODE% %RESPONSE_CODE_DETAILS%\\n")
    port, admin = start_hold_request(procs, upstream, hcm_extra=al)
    t0 = time.monotonic()
    status, body, rc = curl_post(port, 3 * LIMIT, BUFFER_HOLD, False)
    assert (status, body) == (413, b"Payload Too Large"), (status, body[:200], rc)
    assert time.monotonic() - t0 < 5 * SLOW
    assert_too_large_counted(admin, log)
    # the connection manager and the filter still work
    status, body, _ = curl_post(port, 1000, {"x-test-hold-request-ms": "100", "x-test-hold-request-mode": "buffer"},
                                False)
    assert status == 200 and json.loads(body)["body_bytes"] == 1000
    assert stat(admin, "http.ingress_http.downstream_rq_too_large") == 1


def test_held_request_buffered_too_large_h2(procs, upstream):
    """The same over HTTP/2 (python3-h2: curl 7.88 gives up on an upload
    the server ends, RST_STREAM NO_ERROR after the complete response, RFC
    9113 section 8.1, before showing the response): the 413 arrives whole
    before the body is sent, and the stream is then reset with NO_ERROR,
    not the connection."""
    al, log = file_access_log("%RESPONSE_CODE% %RESPONSE_CODE_DETAILS%\\n")
    port, admin = start_hold_request(procs, upstream, hcm_extra=al)
    c = H2Client(port, timeout=10)
    try:
        t0 = time.monotonic()
        sid = c.send("/echo", method="POST", headers=BUFFER_HOLD, end=False)
        sent = h2_send_body(c, sid, 16 * LIMIT)
        st, _, body = c.response(sid, timeout=5)
        assert (st, body) == (413, b"Payload Too Large")
        assert sent < 16 * LIMIT
        assert time.monotonic() - t0 < 5 * SLOW
        assert c.wait(lambda: c.streams[sid]["reset"] is not None, 5)
        assert c.streams[sid]["reset"] == 0
        assert_too_large_counted(admin, log)
        assert c.goaways == [] and not c.eof
    finally:
        c.close()
    status, body, _ = curl_post(port, 1000, {}, True)
    assert status == 200 and json.loads(body)["body_bytes"] == 1000


@pytest.mark.parametrize("h2", [False, True], ids=["h1", "h2"])
def test_held_request_buffered_within_limit(procs, upstream, h2):
    """A buffered body within the limit is held, not refused: it reaches
    the upstream whole once the filter lets it go."""
    port, admin = start_hold_request(procs, upstream)
    size = LIMIT - 1000
    status, body, rc = curl_post(port, size, {"x-test-hold-request-ms": "300", "x-test-hold-request-mode": "buffer"},
                                 h2)
    assert status == 200, (status, body[:200], rc)
    assert json.loads(body)["body_bytes"] == size
    assert stat(admin, "http.ingress_http.downstream_rq_too_large") == 0


@pytest.mark.parametrize("h2", [False, True], ids=["h1", "h2"])
def test_held_request_streaming_pauses(procs, upstream, h2):
    """A filter that holds the headers but not the body (CONTINUE from
    decode_data, Envoy's StopIterationAndWatermark): a body of 16 times the
    limit pauses the client instead of a 413, and arrives whole once the
    filter lets it go."""
    port, admin = start_hold_request(procs, upstream)
    size = 16 * LIMIT
    status, body, rc = curl_post(port, size, {"x-test-hold-request-ms": str(int(1000 * SLOW))}, h2)
    assert status == 200, (status, body[:200], rc)
    assert json.loads(body)["body_bytes"] == size
    assert stat(admin, "http.ingress_http.downstream_rq_too_large") == 0


def test_held_request_too_large_h2_other_streams(procs, upstream):
    """On one HTTP/2 connection: a request held (streaming) by the filter,
    then one buffered above the limit. The second gets its 413 at once; the
    first, and a third opened after the 413, complete with their bodies,
    and the connection stays open (no GOAWAY)."""
    port, admin = start_hold_request(procs, upstream)
    c = H2Client(port, timeout=10)
    try:
        held = c.send("/echo", method="POST", headers={"x-test-hold-request-ms": str(int(1500 * SLOW))},
                      body=b"a" * 1000)
        big = c.send("/echo", method="POST", headers=BUFFER_HOLD, end=False)
        h2_send_body(c, big, 16 * LIMIT)
        st, _, body = c.response(big, timeout=5)
        assert (st, body) == (413, b"Payload Too Large")
        assert stat(admin, "http.ingress_http.downstream_rq_too_large") == 1
        third = c.send("/echo", method="POST", body=b"c" * 2000)
        st, _, body = c.response(third, timeout=5)
        assert st == 200 and json.loads(body)["body_bytes"] == 2000
        st, _, body = c.response(held, timeout=10)
        assert st == 200 and json.loads(body)["body_bytes"] == 1000
        assert c.goaways == []
        assert not c.eof
    finally:
        c.close()
    assert stat(admin, "http.ingress_http.downstream_rq_too_large") == 1


def test_held_request_too_large_after_response_started(procs):
    """The holding filter let the headers through and buffers the whole body
    (x-test-hold-request-mode: buffer-body); the upstream answered at once,
    so the response has started when the body goes over the buffer limit:
    as in Envoy (a local reply cannot replace a started response), the
    stream is reset, which on HTTP/1 closes the connection before the
    response is complete, and the 413 is counted in downstream_rq_too_large."""
    up = RawUpstream(b"HTTP/1.1 200 OK\r\ncontent-length: 100000\r\n\r\n" + b"x" * 10)
    try:
        port, admin = start_hold_request(procs, up)
        s = socket.create_connection(("127.0.0.1", port), timeout=10 * SLOW)
        size = 3 * LIMIT
        s.sendall(f"POST /early HTTP/1.1\r\nhost: a\r\ncontent-length: {size}\r\n"
                  "x-test-hold-request-mode: buffer-body\r\n\r\n".encode())
        got = b""
        while b"\r\n\r\n" not in got:
            d = s.recv(65536)
            assert d, got
            got += d
        assert got.startswith(b"HTTP/1.1 200"), got[:200]
        # the response has started: now the body, above the limit
        s.settimeout(0.5)
        sent, closed, t0 = 0, False, time.monotonic()
        while not closed and time.monotonic() - t0 < 10 * SLOW:
            if sent < size:
                try:
                    sent += s.send(b"b" * min(65536, size - sent))
                except socket.timeout:
                    pass
                except OSError:
                    closed = True
                    break
            try:
                d = s.recv(65536)
                if not d:
                    closed = True
                got += d
            except socket.timeout:
                pass
            except OSError:
                closed = True
        s.close()
        assert closed, ("the connection stayed open", sent, len(got))
        head, _, body = got.partition(b"\r\n\r\n")
        assert len(body) < 100000, len(body)
        wait_for(lambda: stat(admin, "http.ingress_http.downstream_rq_too_large") == 1, 5,
                 "downstream_rq_too_large counted")
        # a reset, not a completed response, and no 413 on the wire
        assert stat(admin, "http.ingress_http.downstream_rq_tx_reset") == 1
        assert b"413" not in got
    finally:
        up.close()
