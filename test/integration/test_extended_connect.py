"""Extended CONNECT (RFC 8441, WebSocket over HTTP/2) through SHARP, as Envoy
does it: with the connection manager's http2_protocol_options.allow_connect
SHARP advertises SETTINGS_ENABLE_CONNECT_PROTOCOL, takes a CONNECT with
:protocol as the HTTP/1.1 upgrade it stands for (upgrade_configs decide),
sends it to an HTTP/1.1 upstream as GET with Upgrade and Connection: upgrade,
and answers the upstream's 101 with 200; towards an HTTP/2 upstream an
upgrade goes as an extended CONNECT and its 200 comes back as 101 (Envoy's
"WebSocket over HTTP/2 hops", here SHARP to SHARP). An HTTP/2 client
(python3-h2) speaks RFC 6455 frames over the stream, and a WebSocket client
(python3-websockets) over HTTP/1.1, to a real WebSocket upstream
(ws_upstream.py, python3-websockets)."""
import base64
import os
import socket
import struct
import tempfile
import time

import pytest

from conftest import SLOW, bootstrap_yaml, free_port, run_sharp_config, stat, wait_for
from test_tcp_proxy import servers  # noqa: F401
from test_websocket import FMT, client_frame, log_lines, raw_upstream, read_head, ws_upstream  # noqa: F401

ALLOW = "http2_protocol_options: { allow_connect: true }\n"
WS = "upgrade_configs: [{ upgrade_type: websocket }]\n"


def start(procs, port, hcm_extra=ALLOW + WS, routes=None):
    class P:
        pass
    p = P()
    p.listen, p.admin = free_port(), free_port()
    p.access_log = os.path.join(tempfile.mkdtemp(prefix="sharp-al-"), "access.log")
    al = ("access_log:\n- name: envoy.access_loggers.file\n  typed_config:\n"
          '    "@type": type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog\n'
          f"    path: {p.access_log}\n    log_format: {{ text_format_source: {{ inline_string: {FMT} }} }}\n")
    sharp = run_sharp_config(procs, bootstrap_yaml(p.listen, p.admin, {"backend": [port]}, routes=routes,
                                                   hcm_extra=al + hcm_extra), p.admin, concurrency=1)
    p.sharp_pid = sharp.p.pid
    return p


class H2Ws:
    """An HTTP/2 connection to SHARP (python3-h2) with one extended CONNECT
    stream. Server frames are parsed from the stream's DATA."""

    def __init__(self, port, path, protocol="websocket", extra=(), end_stream=False):
        import h2.config
        import h2.connection
        import h2.events
        import h2.settings
        self.ev = h2.events
        self.codes = h2.settings.SettingCodes
        self.s = socket.create_connection(("127.0.0.1", port), timeout=10 * SLOW)
        # h2 checks its peer's SETTINGS before it sends :protocol: off, so a
        # refused request can be sent too
        self.c = h2.connection.H2Connection(config=h2.config.H2Configuration(
            client_side=True, header_encoding="utf-8", validate_outbound_headers=False,
            normalize_outbound_headers=False))
        self.c.initiate_connection()
        self.flush()
        self.settings = None
        self.headers = None
        self.data = b""
        self.ended = False
        self.end_stream = False  # END_STREAM came
        self.reset = None
        self.terminated = False
        self.until(lambda: self.settings is not None)
        self.sid = self.c.get_next_available_stream_id()
        self.c.send_headers(self.sid, [(":method", "CONNECT"), (":protocol", protocol), (":scheme", "http"),
                                       (":path", path), (":authority", "x"), ("sec-websocket-version", "13"),
                                       ("sec-websocket-key", base64.b64encode(os.urandom(16)).decode()),
                                       *extra], end_stream=end_stream)
        self.flush()

    def flush(self):
        d = self.c.data_to_send()
        if d:
            self.s.sendall(d)

    def pump(self):
        try:
            d = self.s.recv(65536)
        except ConnectionResetError:
            d = b""
        if not d:
            self.terminated = self.ended = True
            return
        for e in self.c.receive_data(d):
            if isinstance(e, self.ev.RemoteSettingsChanged):
                self.settings = {k: v.new_value for k, v in e.changed_settings.items()}
            elif isinstance(e, self.ev.ResponseReceived):
                self.headers = dict(e.headers)
            elif isinstance(e, self.ev.DataReceived):
                self.data += e.data
                if e.flow_controlled_length:
                    self.c.acknowledge_received_data(e.flow_controlled_length, e.stream_id)
            elif isinstance(e, self.ev.StreamEnded):
                self.ended = self.end_stream = True
            elif isinstance(e, self.ev.StreamReset):
                self.reset = e.error_code
                self.ended = True
            elif isinstance(e, self.ev.ConnectionTerminated):
                self.terminated = self.ended = True
        self.flush()

    def until(self, pred, timeout=10):
        deadline = time.time() + timeout * SLOW
        while not pred():
            assert time.time() < deadline, "timed out"
            if self.terminated:
                return
            self.pump()

    def send(self, data, end=False):
        # in pieces the peer's windows take
        view = memoryview(data)
        while True:
            n = min(len(view), self.c.local_flow_control_window(self.sid), self.c.max_outbound_frame_size)
            if n == 0 and len(view):
                self.pump()
                continue
            last = n == len(view)
            self.c.send_data(self.sid, bytes(view[:n]), end_stream=end and last)
            self.flush()
            view = view[n:]
            if last:
                return

    def frame(self):
        """The next server frame (unmasked): (opcode, payload)."""
        while True:
            f = parse_frame(self.data)
            if f:
                op, payload, n = f
                self.data = self.data[n:]
                return op, payload
            assert not self.ended, f"stream ended with {self.data!r}"
            self.until(lambda: parse_frame(self.data) is not None or self.ended)

    def close(self):
        self.s.close()


def parse_frame(buf):
    if len(buf) < 2:
        return None
    op, n = buf[0] & 0x0F, buf[1] & 0x7F
    off = 2
    if n == 126:
        if len(buf) < 4:
            return None
        n, off = struct.unpack("!H", buf[2:4])[0], 4
    elif n == 127:
        if len(buf) < 10:
            return None
        n, off = struct.unpack("!Q", buf[2:10])[0], 10
    if len(buf) < off + n:
        return None
    return op, buf[off:off + n], off + n


# ---- WebSocket over HTTP/2 to an HTTP/1.1 upstream -----------------------------


def test_echo_both_ways_with_flow_control(procs, ws_upstream):
    p = start(procs, ws_upstream.port)
    t = H2Ws(p.listen, "/echo?x=1")
    try:
        assert t.settings.get(t.codes.ENABLE_CONNECT_PROTOCOL) == 1
        t.until(lambda: t.headers is not None)
        # the upstream's 101 is a 200 without Upgrade, Connection or a zero
        # content-length; the WebSocket headers stay
        assert t.headers[":status"] == "200", t.headers
        assert "upgrade" not in t.headers and "connection" not in t.headers and "content-length" not in t.headers
        assert "sec-websocket-accept" in t.headers
        t.send(client_frame(b"hello", opcode=1))
        assert t.frame() == (1, b"hello")
        # more than the stream windows both ways (64 KiB initial on each side)
        big = os.urandom(3 * 1024 * 1024)
        t.send(client_frame(big))
        op, payload = t.frame()
        assert op == 2 and payload == big
        # the closing handshake, then the upstream closes: the stream ends
        t.send(client_frame(struct.pack("!H", 1000) + b"bye", opcode=8))
        op, payload = t.frame()
        assert op == 8 and payload[:2] == struct.pack("!H", 1000)
        t.until(lambda: t.ended)
        # END_STREAM; the request never ended, so a RST_STREAM NO_ERROR
        # follows it (RFC 9113 section 8.1)
        assert t.end_stream and t.reset in (None, 0)
    finally:
        t.close()
    # the upstream saw the HTTP/1.1 upgrade Envoy makes of it
    e = ws_upstream.wait_event(lambda e: e["kind"] == "handshake" and e["path"] == "/echo?x=1")
    hdrs = {k.lower(): v for k, v in e["headers"]}
    assert hdrs["upgrade"] == "websocket" and hdrs["connection"].lower() == "upgrade", hdrs
    assert hdrs["host"] == "x"
    assert not any(k.startswith(":") for k in hdrs)
    ws_upstream.wait_event(lambda e: e["kind"] == "close" and e["path"] == "/echo?x=1")
    assert stat(p.admin, "http.ingress_http.downstream_cx_upgrades_total") == 1
    wait_for(lambda: stat(p.admin, "http.ingress_http.downstream_cx_upgrades_active") == 0, 10, "tunnel closed")
    # the connection manager saw the 101 (the 200 is the codec's)
    line = log_lines(p, 1)[0]
    assert line[0] == "101" and line[-1] == "/echo?x=1", line


def test_slow_reader_stops_the_upstream(procs, ws_upstream):
    """The client reads nothing (its stream window closes): SHARP stops
    reading the upstream near the buffer limit, far below the 64 MiB
    offered; once the client reads, every byte arrives."""
    mb = 64
    p = start(procs, ws_upstream.port)
    t = H2Ws(p.listen, f"/flood?mb={mb}")
    rx = "cluster.backend.upstream_cx_rx_bytes_total"
    try:
        t.until(lambda: t.headers is not None)
        assert t.headers[":status"] == "200"
        wait_for(lambda: (stat(p.admin, rx) or 0) > 256 << 10, 10, "upstream bytes")
        # until SHARP has stopped reading: no new upstream bytes for 0.5 s
        last, since = stat(p.admin, rx), time.time()
        deadline = time.time() + 20 * SLOW
        while time.time() - since < 0.5:
            assert time.time() < deadline, "the upstream is still read"
            time.sleep(0.05)
            now = stat(p.admin, rx)
            if now != last:
                last, since = now, time.time()
        assert last < 24 << 20, last
        got = 0
        while got < mb << 20:
            op, payload = t.frame()
            assert op == 2
            got += len(payload)
        assert got == mb << 20
        t.send(client_frame(struct.pack("!H", 1000), opcode=8))
    finally:
        t.close()


def test_slow_upstream_stops_the_client(procs, ws_upstream):
    """The other direction: the upstream stops reading (it floods and never
    reads); the client's stream window closes instead of SHARP buffering
    what it sends (the kernel's socket buffers take what they take: SHARP's
    own memory is what stays bounded)."""
    from test_websocket import rss_kb
    p = start(procs, ws_upstream.port)
    pid = p.sharp_pid
    t = H2Ws(p.listen, "/flood?mb=1")
    try:
        t.until(lambda: t.headers is not None)
        assert t.headers[":status"] == "200"
        before = rss_kb(pid)
        frame = client_frame(b"z" * 65536)
        offered = 256 << 20
        sent, stalled_since = 0, None
        t.s.settimeout(0.2)
        deadline = time.time() + 60 * SLOW
        while sent < offered:
            assert time.time() < deadline, sent
            n = min(t.c.local_flow_control_window(t.sid), t.c.max_outbound_frame_size)
            if n > 0:
                off = sent % len(frame)
                piece = (frame[off:] + frame)[:n]
                t.c.send_data(t.sid, piece)
                t.flush()
                sent += n
                stalled_since = None
                continue
            # the window is closed: wait for a WINDOW_UPDATE (reading what
            # the upstream sends meanwhile)
            try:
                t.pump()
            except socket.timeout:
                pass
            assert not t.ended
            if t.c.local_flow_control_window(t.sid) == 0:
                stalled_since = stalled_since or time.time()
                if time.time() - stalled_since > 1.0:
                    break
            else:
                stalled_since = None
        during = rss_kb(pid)
        assert sent < offered  # the window stayed closed
        assert during - before < 24 * 1024, (before, during, sent)
    finally:
        t.close()


def test_upstream_close_ends_the_stream(procs, ws_upstream):
    p = start(procs, ws_upstream.port)
    t = H2Ws(p.listen, "/hello-close")
    try:
        t.until(lambda: t.headers is not None)
        assert t.headers[":status"] == "200"
        assert t.frame() == (1, b"hello")
        op, payload = t.frame()
        assert op == 8 and payload[:2] == struct.pack("!H", 1000)
        t.send(client_frame(payload[:2], opcode=8))
        t.until(lambda: t.ended)
        assert t.end_stream and t.reset in (None, 0) and not t.terminated
    finally:
        t.close()
    wait_for(lambda: stat(p.admin, "cluster.backend.upstream_cx_active") == 0, 10, "upstream connection closed")


def test_half_close_and_raw_bytes(procs):
    """Any protocol, raw bytes: the client's END_STREAM reaches the upstream
    as a FIN, the upstream's answer after it still flows, then its FIN ends
    the stream."""
    seen = {}

    def script(c):
        head, _, rest = read_head(c)
        seen["head"] = head
        c.sendall(b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: foo\r\n"
                  b"Content-Length: 0\r\n\r\n")
        while True:
            chunk = c.recv(65536)
            if not chunk:
                break
            rest += chunk
        seen["up"] = rest
        c.sendall(b"after-fin" * 20000)
        c.shutdown(socket.SHUT_WR)

    port, th, lsock = raw_upstream(script)
    p = start(procs, port, hcm_extra=ALLOW + "upgrade_configs: [{ upgrade_type: foo }]\n")
    t = H2Ws(p.listen, "/raw", protocol="foo")
    try:
        t.until(lambda: t.headers is not None)
        assert t.headers[":status"] == "200" and "content-length" not in t.headers, t.headers
        payload = os.urandom(300000)
        t.send(payload, end=True)
        t.until(lambda: t.ended)
        assert t.reset is None
        assert t.data == b"after-fin" * 20000
    finally:
        t.close()
    th.join(10 * SLOW)
    lsock.close()
    assert seen["up"] == payload
    head = seen["head"].decode()
    assert head.startswith("GET /raw HTTP/1.1\r\n"), head
    assert "upgrade: foo" in head.lower() and "connection: upgrade" in head.lower()


def test_upstream_reset_resets_the_stream(procs):
    def script(c):
        read_head(c)
        c.sendall(b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n"
                  b"partial")
        c.recv(100)
        # RST once the client has had "partial" (nothing unread at SHARP)
        c.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))

    port, th, lsock = raw_upstream(script)
    p = start(procs, port)
    t = H2Ws(p.listen, "/reset")
    try:
        t.until(lambda: t.headers is not None and len(t.data) >= 7)
        assert t.headers[":status"] == "200" and t.data == b"partial"
        t.send(b"go")
        t.until(lambda: t.ended)
        # a reset, not a clean end
        assert t.reset is not None and not t.end_stream, (t.data, t.terminated)
    finally:
        t.close()
    th.join(10 * SLOW)
    lsock.close()
    wait_for(lambda: stat(p.admin, "http.ingress_http.downstream_cx_upgrades_active") == 0, 10, "tunnel closed")


def test_non_101_answer_passes_through(procs, ws_upstream):
    p = start(procs, ws_upstream.port)
    t = H2Ws(p.listen, "/reject")
    try:
        t.until(lambda: t.ended)
        assert t.end_stream and t.reset in (None, 0) and t.headers[":status"] == "403", t.headers
        assert t.data == b"upgrade refused by upstream"
    finally:
        t.close()
    ws_upstream.wait_event(lambda e: e["kind"] == "reject")


# ---- refusals ------------------------------------------------------------------


def test_upgrade_not_enabled_is_403(procs, ws_upstream):
    """allow_connect without an upgrade_configs entry for the protocol: 403
    upgrade_failed, as for an HTTP/1.1 upgrade; the route can enable it."""
    routes = ('- match: { prefix: "/on" }\n'
              '  route: { cluster: backend, upgrade_configs: [{ upgrade_type: websocket }] }\n'
              '- match: { prefix: "/" }\n  route: { cluster: backend }\n')
    p = start(procs, ws_upstream.port, hcm_extra=ALLOW, routes=routes)
    t = H2Ws(p.listen, "/echo")
    try:
        t.until(lambda: t.ended)
        assert t.headers and t.headers[":status"] == "403", t.headers
    finally:
        t.close()
    t = H2Ws(p.listen, "/on")
    try:
        t.until(lambda: t.headers is not None)
        assert t.headers[":status"] == "200"
    finally:
        t.close()
    assert [e["path"] for e in ws_upstream.read_events() if e["kind"] == "handshake"] == ["/on"]
    assert stat(p.admin, "http.ingress_http.downstream_rq_ws_on_non_ws_route") == 1
    line = log_lines(p, 1)[0]
    assert line[0] == "403" and line[2] == "upgrade_failed", line


def test_route_disables_the_upgrade(procs, ws_upstream):
    routes = ('- match: { prefix: "/" }\n  route: { cluster: backend, '
              'upgrade_configs: [{ upgrade_type: websocket, enabled: false }] }\n')
    p = start(procs, ws_upstream.port, routes=routes)
    t = H2Ws(p.listen, "/echo")
    try:
        t.until(lambda: t.ended)
        assert t.headers and t.headers[":status"] == "403", t.headers
    finally:
        t.close()
    assert not ws_upstream.read_events()


@pytest.mark.parametrize("hcm", ["", "http2_protocol_options: { allow_connect: false }\n"], ids=["unset", "false"])
def test_without_allow_connect_protocol_is_refused(procs, ws_upstream, hcm):
    """SETTINGS_ENABLE_CONNECT_PROTOCOL is 0 (Envoy sends it with the
    field's value) and nghttp2 refuses :protocol as an invalid header: the
    connection ends (stream_error_on_invalid_http_message off) and nothing
    reaches the upstream."""
    p = start(procs, ws_upstream.port, hcm_extra=hcm + WS)
    t = H2Ws(p.listen, "/echo")
    try:
        assert t.settings.get(t.codes.ENABLE_CONNECT_PROTOCOL, 0) == 0
        t.until(lambda: t.ended)
        assert t.headers is None and (t.terminated or t.reset is not None)
    finally:
        t.close()
    assert stat(p.admin, "http2.rx_messaging_error") == 1
    assert not ws_upstream.read_events()


def test_stream_error_on_invalid_message_resets_only_the_stream(procs, ws_upstream):
    p = start(procs, ws_upstream.port,
              hcm_extra="http2_protocol_options: { override_stream_error_on_invalid_http_message: true }\n" + WS)
    t = H2Ws(p.listen, "/echo")
    try:
        t.until(lambda: t.ended)
        assert t.headers is None and t.reset == 1 and not t.terminated  # PROTOCOL_ERROR
    finally:
        t.close()
    assert not ws_upstream.read_events()


def test_bytestream_protocol_is_a_connect(procs, servers):
    """Envoy's isH2UpgradeRequest leaves out a :protocol of "bytestream"
    (and an empty one): such a request is a CONNECT, here terminated by the
    route's connect_config, not an upgrade to "bytestream"."""
    from test_connect import server, terminating
    up = server(servers)
    p = terminating(procs, up.port)
    t = H2Ws(p.listen, "/", protocol="bytestream")
    try:
        t.until(lambda: t.headers is not None)
        assert t.headers[":status"] == "200", t.headers
        t.send(b"raw bytes")
        t.until(lambda: len(t.data) >= 9)
        assert t.data == b"raw bytes"
    finally:
        t.close()
    assert stat(p.admin, "http.ingress_http.downstream_cx_upgrades_total") == 1


# ---- towards HTTP/2 upstreams ---------------------------------------------------

def h2_cluster(allow_connect):
    opts = "{ allow_connect: true }" if allow_connect else "{}"
    return ("typed_extension_protocol_options:\n  envoy.extensions.upstreams.http.v3.HttpProtocolOptions:\n"
            '    "@type": type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions\n'
            f"    explicit_http_config: {{ http2_protocol_options: {opts} }}\n")


def chain(procs, ws_upstream, back_hcm=ALLOW + WS, allow_connect=True):
    """Envoy's "WebSocket over HTTP/2 hops": client -> front SHARP (HTTP/2
    cluster) -> back SHARP (allow_connect) -> HTTP/1.1 WebSocket upstream."""
    back = start(procs, ws_upstream.port, hcm_extra=back_hcm)
    front = P()
    front.listen, front.admin = free_port(), free_port()
    run_sharp_config(procs, bootstrap_yaml(front.listen, front.admin, {"next_hop": [back.listen]},
                                           hcm_extra=ALLOW + WS, cluster_extra=h2_cluster(allow_connect)),
                     front.admin, concurrency=1)
    return front, back


class P:
    pass


def test_http11_websocket_over_an_http2_hop(procs, ws_upstream):
    """The front sends the HTTP/1.1 upgrade as an extended CONNECT (Envoy's
    transformUpgradeRequestFromH1toH2), the back takes it and sends the
    upgrade on; the back's 200 is a 101 again at the front."""
    import asyncio
    from test_websocket import connect, run
    front, back = chain(procs, ws_upstream)
    big = os.urandom(2 * 1024 * 1024)

    async def go():
        async with connect(f"ws://127.0.0.1:{front.listen}/echo?hop=1") as ws:
            await ws.send("over two hops")
            assert await ws.recv() == "over two hops"
            await ws.send(big)
            assert await ws.recv() == big
        return True

    assert run(go())
    e = ws_upstream.wait_event(lambda e: e["kind"] == "handshake" and e["path"] == "/echo?hop=1")
    hdrs = {k.lower(): v for k, v in e["headers"]}
    assert hdrs["upgrade"] == "websocket" and hdrs["connection"].lower() == "upgrade"
    ws_upstream.wait_event(lambda e: e["kind"] == "close" and e["path"] == "/echo?hop=1")
    assert stat(back.admin, "http.ingress_http.downstream_cx_upgrades_total") == 1
    assert stat(front.admin, "http.ingress_http.downstream_cx_upgrades_total") == 1
    # one HTTP/2 connection between the proxies, the stream ended with the tunnel
    assert stat(front.admin, "cluster.next_hop.upstream_cx_http2_total") == 1
    for admin, name in ((front.admin, "cluster.next_hop.upstream_rq_active"),
                        (back.admin, "http.ingress_http.downstream_cx_upgrades_active")):
        wait_for(lambda: stat(admin, name) == 0, 10, name)


def test_http2_websocket_over_an_http2_hop(procs, ws_upstream):
    """Extended CONNECT end to end: HTTP/2 client, HTTP/2 hop, HTTP/1.1
    upstream; the upstream's close ends the client's stream."""
    front, back = chain(procs, ws_upstream)
    t = H2Ws(front.listen, "/hello-close")
    try:
        t.until(lambda: t.headers is not None)
        assert t.headers[":status"] == "200", t.headers
        assert "upgrade" not in t.headers and "connection" not in t.headers
        assert t.frame() == (1, b"hello")
        op, payload = t.frame()
        assert op == 8
        t.send(client_frame(payload[:2], opcode=8))
        t.until(lambda: t.ended)
        assert t.end_stream and t.reset in (None, 0)
    finally:
        t.close()
    ws_upstream.wait_event(lambda e: e["kind"] == "handshake" and e["path"] == "/hello-close")


def test_non_200_from_an_http2_hop_passes_through(procs, ws_upstream):
    front, back = chain(procs, ws_upstream)
    s = socket.create_connection(("127.0.0.1", front.listen), timeout=10 * SLOW)
    with s:
        s.sendall(b"GET /reject HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n"
                  b"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: " + base64.b64encode(os.urandom(16)) +
                  b"\r\n\r\n")
        head, _, body = read_head(s)
        assert head.startswith(b"HTTP/1.1 403 "), head
        assert b"upgrade:" not in head.lower()
        want = b"upgrade refused by upstream"
        while len(body) < len(want):
            chunk = s.recv(65536)
            if not chunk:
                break
            body += chunk
        assert body == want
    ws_upstream.wait_event(lambda e: e["kind"] == "reject")


def test_http2_hop_that_does_not_offer_extended_connect(procs, ws_upstream):
    """As in Envoy, the front sends the extended CONNECT whatever the next
    hop's SETTINGS say; a hop without allow_connect refuses it (nghttp2), and
    the client gets the front's 503 for the reset, never a tunnel."""
    front, back = chain(procs, ws_upstream, back_hcm=WS)
    s = socket.create_connection(("127.0.0.1", front.listen), timeout=10 * SLOW)
    with s:
        s.sendall(b"GET /echo HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n"
                  b"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: " + base64.b64encode(os.urandom(16)) +
                  b"\r\n\r\n")
        head, _, _ = read_head(s)
        assert head.startswith(b"HTTP/1.1 503 "), head
    assert stat(back.admin, "http2.rx_messaging_error") == 1
    assert not ws_upstream.read_events()


def test_cluster_allow_connect_is_sent_in_settings(procs):
    """A cluster's allow_connect is the SETTINGS_ENABLE_CONNECT_PROTOCOL it
    sends, as Envoy's codec sends it on both sides."""
    import json
    from conftest import Upstream
    for allow, want in ((True, 1), (False, 0)):
        u = Upstream(name="upstream", extra=("--h2",))
        procs.append(u)
        listen, admin = free_port(), free_port()
        run_sharp_config(procs, bootstrap_yaml(listen, admin, {"backend": [u.port]}, cluster_extra=h2_cluster(allow)),
                         admin, concurrency=1)
        s = socket.create_connection(("127.0.0.1", listen), timeout=10 * SLOW)
        with s:
            s.sendall(b"GET /admin/stats HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            data = b""
            while True:
                chunk = s.recv(65536)
                if not chunk:
                    break
                data += chunk
        head, _, body = data.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200"), head
        assert json.loads(body)["peer_settings"]["enable_connect_protocol"] == want
