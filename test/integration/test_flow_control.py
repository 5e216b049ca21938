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
memory stays bounded; once the upstream reads, the upload completes."""
import os
import socket
import threading
import time

import pytest

from conftest import (SANITIZED, SHARP_TEST_FILTERS, SLOW, bootstrap_yaml, file_access_log, free_port, log_lines,
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
