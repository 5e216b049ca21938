"""The memory a decompressed stream can pin is bounded by the stream's
buffer limit, whatever max_inflate_ratio allows: many HTTP/2 streams of
one connection each send a full stream window of gzip that inflates about
90 times (under the ratio, so nothing is cut) while ext_authz holds every
request for a slow authorization server. The decompressor keeps the
compressed input it has not inflated while the data held after it is above
the limit, and inflates the rest as it drains: SHARP's resident memory
grows by a few MiB, not by streams x window x ratio (some 150 MiB), and
every request then completes with its whole body."""
import gzip
import http.server
import threading
import json
import random
import time

from conftest import SANITIZED, SLOW, H2Client, bootstrap_yaml, free_port, run_sharp_config, stat
from test_decompressor import decompressor, fnv, rss_kb, with_filters
from test_ext_authz import ext_authz, with_filter

STREAMS = 24
LIMIT = 16384


def dense(n, gap=350, seed=1):
    """Zeros with a random byte every `gap`: gzip makes about 1:90 of it."""
    r = random.Random(seed)
    b = bytearray(n)
    for i in range(0, n, gap):
        b[i] = r.randrange(256)
    return bytes(b)


class SlowAuthz:
    """An authorization server that allows every request after 1.5 s, with
    room for all the streams' checks at once."""

    def __init__(self):
        class H(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _answer(self):
                n = int(self.headers.get("content-length") or 0)
                if n:
                    self.rfile.read(n)
                time.sleep(1.5)
                self.send_response(200)
                self.send_header("content-length", "0")
                self.end_headers()

            do_GET = do_POST = _answer

            def log_message(self, *a):
                pass

        class S(http.server.ThreadingHTTPServer):
            request_queue_size = 128
            daemon_threads = True

        self.server = S(("127.0.0.1", 0), H)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


def test_held_requests_pin_bounded_memory(procs, upstream):
    body = dense(6 << 20)
    gz = gzip.compress(body, 6)
    assert 60 < len(body) / len(gz) < 100
    authz = SlowAuthz()
    try:
        listen, admin = free_port(), free_port()
        y = bootstrap_yaml(listen, admin, {"backend": [upstream.port], "authz": [authz.port]},
                           listener_extra=f"per_connection_buffer_limit_bytes: {LIMIT}\n")
        # the decompressor first, then ext_authz holding the request
        y = with_filter(y, ext_authz(timeout="30s"))
        y = with_filters(y, decompressor())
        run_sharp_config(procs, y, admin)
        sharp = procs[-1]
        c = H2Client(listen, timeout=30)
        try:
            # warm up, then measure from here
            sid = c.send("/", method="GET")
            c.response(sid, timeout=10)
            before = rss_kb(sharp.p.pid)
            sids = [c.send("/upload", method="POST", end=False,
                           headers={"content-encoding": "gzip"})
                    for _ in range(STREAMS)]
            sent = {sid: 0 for sid in sids}
            deadline = time.time() + 60 * SLOW
            # each stream sends what its window allows; the rest follows as
            # SHARP opens the windows again (after the authorization)
            while time.time() < deadline and any(
                    sent[s] < len(gz) and not c.streams[s]["ended"] and c.streams[s]["reset"] is None for s in sids):
                progressed = False
                for s in sids:
                    if sent[s] >= len(gz) or c.streams[s]["ended"] or c.streams[s]["reset"] is not None:
                        continue
                    room = min(c.conn.local_flow_control_window(s), c.conn.max_outbound_frame_size)
                    if room <= 0:
                        continue
                    piece = gz[sent[s]:sent[s] + room]
                    sent[s] += len(piece)
                    c.send_data(s, piece, end=sent[s] >= len(gz))
                    progressed = True
                c.pump(0.01 if progressed else 0.05)
            peak = rss_kb(sharp.p.pid, "VmHWM") - before
            want = {"body_bytes": len(body), "checksum": fnv(body)}
            for s in sids:
                st, h, b = c.response(s, timeout=60)
                assert st == 200, (st, b)
                assert json.loads(b) == want
        finally:
            c.close()
        # every window's worth held at once would be STREAMS x 64 KiB x 90
        assert SANITIZED or peak < 48 * 1024, f"peak RSS grew by {peak} KiB"
        assert stat(admin, "http.ingress_http.decompressor.gz.gzip.decompressor_library.zlib_data_error") == 0
    finally:
        authz.close()


def test_slow_reader_pins_bounded_memory(procs):
    """The response direction: an HTTP/2 client that opens many streams
    and reads nothing (no WINDOW_UPDATE) while the upstream sends each a
    90:1 gzip body. The decompressor stops inflating while the downstream
    is above its write watermark and keeps the compressed rest (pausing
    the upstream), so SHARP's memory grows by a few MiB, not by streams x
    body; the connection then goes away cleanly and SHARP serves on."""
    from test_decompressor import Encoded
    body = dense(6 << 20, seed=2)
    gz = gzip.compress(body, 6)
    enc = Encoded()
    enc.srv.socket.listen(128)  # room for every stream's upstream connection at once
    enc.BODIES = dict(enc.BODIES, dense=(gz, "gzip"))
    try:
        listen, admin = free_port(), free_port()
        y = bootstrap_yaml(listen, admin, {"backend": [enc.port]},
                           listener_extra=f"per_connection_buffer_limit_bytes: {LIMIT}\n")
        run_sharp_config(procs, with_filters(y, decompressor()), admin)
        sharp = procs[-1]
        c = H2Client(listen, timeout=30)
        try:
            sid = c.send("/gz")
            c.response(sid, timeout=10)
            before = rss_kb(sharp.p.pid)
            c.ack = False
            sids = [c.send("/dense") for _ in range(STREAMS)]
            name = "http.ingress_http.decompressor.gz.gzip.response.total_uncompressed_bytes"
            c.wait(lambda: all(c.streams[s]["status"] == 200 for s in sids), timeout=20)
            assert all(c.streams[s]["status"] == 200 for s in sids)
            # until what SHARP makes stops growing: it waits for the reader
            last = [-1]

            def settled():
                c.pump(0.3)
                v = stat(admin, name)
                done, last[0] = v == last[0], v
                return done
            c.wait(settled, timeout=30)
            peak = rss_kb(sharp.p.pid, "VmHWM") - before
            made = stat(admin, name)
        finally:
            c.close()
        assert made < STREAMS * len(body) // 4, made
        assert SANITIZED or peak < 48 * 1024, f"peak RSS grew by {peak} KiB"
        # still serving, whole bodies
        c = H2Client(listen, timeout=30)
        try:
            st, h, b = c.response(c.send("/dense"), timeout=30)
        finally:
            c.close()
        assert st == 200 and b == body
    finally:
        enc.close()
