"""HTTP upgrades (WebSocket) through SHARP, as Envoy does them: the
connection manager's and the route's upgrade_configs, the tunnel with its
own upstream connection, backpressure, half-close, timeouts, h2c stripping,
stats and the access log line written when the tunnel closes. A real
WebSocket client (python3-websockets) talks to a real WebSocket upstream
(ws_upstream.py)."""
import asyncio
import base64
import json
import os
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import textwrap
import time

import pytest
import websockets

from conftest import (bootstrap_yaml, free_port, Proc, raw_request, run_sharp_config, SANITIZED, stat,
                      validate_config as validate)

HERE = os.path.dirname(os.path.abspath(__file__))
# the access log line, as a YAML double-quoted string
FMT = r'"%RESPONSE_CODE% %RESPONSE_FLAGS% %RESPONSE_CODE_DETAILS% %BYTES_RECEIVED% %BYTES_SENT% %DURATION% %REQ(:PATH)%\n"'


class WsUpstream(Proc):
    def __init__(self):
        self.events = os.path.join(tempfile.mkdtemp(prefix="sharp-ws-"), "events.log")
        open(self.events, "w").close()
        super().__init__([sys.executable, os.path.join(HERE, "ws_upstream.py"), self.events],
                         stdout=subprocess.PIPE)
        line = self.p.stdout.readline().decode()
        assert line.startswith("listening on"), line
        self.port = int(line.split()[-1])

    def read_events(self):
        with open(self.events) as f:
            return [json.loads(x) for x in f if x.strip()]

    def wait_event(self, pred, timeout=10):
        deadline = time.time() + timeout
        while time.time() < deadline:
            for e in self.read_events():
                if pred(e):
                    return e
            time.sleep(0.05)
        raise AssertionError(f"no such event in {self.read_events()}")


@pytest.fixture
def ws_upstream(procs):
    u = WsUpstream()
    procs.append(u)
    return u


def start(procs, ws_upstream, hcm_extra="upgrade_configs:\n- upgrade_type: websocket\n", routes=None):
    class P:
        pass
    p = P()
    p.listen, p.admin = free_port(), free_port()
    p.access_log = os.path.join(tempfile.mkdtemp(prefix="sharp-al-"), "access.log")
    al = textwrap.dedent(f"""\
        access_log:
        - name: envoy.access_loggers.file
          typed_config:
            "@type": type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog
            path: {p.access_log}
            log_format: {{ text_format_source: {{ inline_string: {FMT} }} }}
        """)
    p.sharp = run_sharp_config(procs, bootstrap_yaml(p.listen, p.admin, {"backend": [ws_upstream.port]},
                                                     routes=routes, hcm_extra=al + hcm_extra), p.admin,
                               concurrency=1)
    p.ws = f"ws://127.0.0.1:{p.listen}"
    return p


def log_lines(p, n, timeout=10):
    """The access log's first n lines (workers flush on their own)."""
    deadline = time.time() + timeout
    lines = []
    while time.time() < deadline:
        if os.path.exists(p.access_log):
            with open(p.access_log) as f:
                lines = [x.split() for x in f.read().splitlines() if x]
            if len(lines) >= n:
                return lines
        time.sleep(0.05)
    raise AssertionError(f"access log has {lines}")


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 120 if SANITIZED else 40))


def connect(url, **kw):
    return websockets.connect(url, max_size=None, ping_interval=None, compression=None, open_timeout=10, **kw)


def handshake(port, path, extra=b"", host=b"x"):
    """Raw client: sends a WebSocket upgrade request, returns the socket and
    the response head; bytes read past the head are in sock.rest."""
    s = socket.create_connection(("127.0.0.1", port), timeout=10)
    key = base64.b64encode(os.urandom(16))
    s.sendall(b"GET " + path + b" HTTP/1.1\r\nHost: " + host + b"\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n"
              b"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: " + key + b"\r\n" + extra + b"\r\n")
    buf = b""
    while b"\r\n\r\n" not in buf:
        c = s.recv(65536)
        if not c:
            break
        buf += c
    head, _, rest = buf.partition(b"\r\n\r\n")
    return s, head.decode(errors="replace"), rest


def client_frame(payload, opcode=2):
    """A masked client frame (RFC 6455)."""
    mask = os.urandom(4)
    n = len(payload)
    if n < 126:
        hdr = struct.pack("!BB", 0x80 | opcode, 0x80 | n)
    elif n < 65536:
        hdr = struct.pack("!BBH", 0x80 | opcode, 0x80 | 126, n)
    else:
        hdr = struct.pack("!BBQ", 0x80 | opcode, 0x80 | 127, n)
    masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    return hdr + mask + masked


def read_all(s, timeout=10):
    s.settimeout(timeout)
    out = b""
    while True:
        try:
            c = s.recv(65536)
        except ConnectionResetError:
            return out, "reset"
        if not c:
            return out, "eof"
        out += c


# ---- the tunnel --------------------------------------------------------------

def test_echo_large_messages_stats_and_access_log(procs, ws_upstream):
    p = start(procs, ws_upstream)
    big_up = os.urandom(3 << 20)
    big_down = os.urandom(5 << 20)

    async def session():
        async with connect(p.ws + "/echo") as ws:
            assert stat(p.admin, "http.ingress_http.downstream_cx_upgrades_active") == 1
            await ws.send("hello")
            assert await ws.recv() == "hello"
            await ws.send(big_up)
            assert await ws.recv() == big_up
            await ws.send(big_down)
            assert await ws.recv() == big_down
            for i in range(200):
                await ws.send(f"m{i}")
            for i in range(200):
                assert await ws.recv() == f"m{i}"
            await asyncio.sleep(0.3)

    run(session())
    run(session())  # a second tunnel gets a new upstream connection
    lines = log_lines(p, 2)
    for code, flags, details, rx, tx, duration, path in lines:
        assert (code, flags, details, path) == ("101", "-", "via_upstream", "/echo")
        # the tunnel's bytes in both directions, counted when it closed
        assert int(rx) > len(big_up) + len(big_down) and int(tx) > len(big_up) + len(big_down)
        assert int(duration) >= 300
    hs = ws_upstream.wait_event(lambda e: e["kind"] == "handshake")
    names = {k.lower(): v for k, v in hs["headers"]}
    assert names["upgrade"] == "websocket" and names["connection"].lower() == "upgrade"
    assert "sec-websocket-key" in names and "x-forwarded-proto" in names
    assert stat(p.admin, "http.ingress_http.downstream_cx_upgrades_total") == 2
    assert stat(p.admin, "http.ingress_http.downstream_cx_upgrades_active") == 0
    assert stat(p.admin, "http.ingress_http.downstream_rq_1xx") == 2
    assert stat(p.admin, "cluster.backend.upstream_cx_total") == 2  # never back to the pool
    assert stat(p.admin, "cluster.backend.upstream_cx_active") == 0
    assert stat(p.admin, "cluster.backend.upstream_cx_rx_bytes_total") > 2 * (len(big_up) + len(big_down))
    assert stat(p.admin, "cluster.backend.upstream_cx_tx_bytes_total") > 2 * (len(big_up) + len(big_down))


def test_upstream_close_reaches_client(procs, ws_upstream):
    p = start(procs, ws_upstream)

    async def session():
        async with connect(p.ws + "/hello-close") as ws:
            assert await ws.recv() == "hello"
            with pytest.raises(websockets.ConnectionClosedOK):
                await ws.recv()
            assert ws.close_code == 1000 and ws.close_reason == "bye"

    run(session())
    assert log_lines(p, 1)[0][:3] == ["101", "-", "via_upstream"]
    assert stat(p.admin, "http.ingress_http.downstream_cx_upgrades_active") == 0
    assert stat(p.admin, "cluster.backend.upstream_cx_active") == 0


def test_client_close_reaches_upstream(procs, ws_upstream):
    p = start(procs, ws_upstream)

    async def session():
        async with connect(p.ws + "/echo?c=1") as ws:
            await ws.send("x")
            assert await ws.recv() == "x"
            await ws.close(4001, "client done")

    run(session())
    e = ws_upstream.wait_event(lambda e: e["kind"] == "close" and e["path"] == "/echo?c=1")
    assert e["code"] == 4001


def raw_upstream(script):
    """A one-connection upstream on a thread: script(conn) runs on the
    accepted connection. Returns (port, thread, listening socket)."""
    import threading
    lsock = socket.socket()
    lsock.bind(("127.0.0.1", 0))
    lsock.listen(4)

    def serve():
        c, _ = lsock.accept()
        c.settimeout(10)
        try:
            script(c)
        finally:
            c.close()

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    return lsock.getsockname()[1], t, lsock


def read_head(c):
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = c.recv(65536)
        if not chunk:
            break
        data += chunk
    return data.partition(b"\r\n\r\n")


def test_half_close_forwards_fin_and_keeps_the_response_flowing(procs):
    """The client's FIN reaches the upstream as a FIN; what the upstream
    sends afterwards still reaches the client, then the upstream's FIN."""
    seen = {}

    def script(c):
        head, _, rest = read_head(c)
        c.sendall(b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n")
        while True:
            chunk = c.recv(65536)
            if not chunk:
                break
            rest += chunk
        seen["up"] = rest
        c.sendall(b"after-fin" * 10000)
        c.shutdown(socket.SHUT_WR)

    port, t, lsock = raw_upstream(script)
    listen, admin = free_port(), free_port()
    run_sharp_config(procs, bootstrap_yaml(listen, admin, {"backend": [port]},
                                           hcm_extra="upgrade_configs: [{ upgrade_type: websocket }]\n"), admin,
                     concurrency=1)
    s, head, rest = handshake(listen, b"/half")
    assert head.startswith("HTTP/1.1 101"), head
    assert "upgrade: websocket" in head.lower() and "connection: upgrade" in head.lower()
    assert "connection: close" not in head.lower()
    payload = os.urandom(200000)
    s.sendall(payload)
    s.shutdown(socket.SHUT_WR)
    out, how = read_all(s)
    s.close()
    t.join(10)
    lsock.close()
    assert seen["up"] == payload
    assert rest + out == b"after-fin" * 10000 and how == "eof"
    assert stat(admin, "cluster.backend.upstream_cx_active") == 0
    assert stat(admin, "http.ingress_http.downstream_cx_upgrades_active") == 0


def test_client_reset_closes_upstream(procs, ws_upstream):
    p = start(procs, ws_upstream)
    s, head, _ = handshake(p.listen, b"/echo?reset=1")
    assert head.startswith("HTTP/1.1 101"), head
    s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    s.close()  # RST
    e = ws_upstream.wait_event(lambda e: e["kind"] == "close" and e["path"] == "/echo?reset=1")
    assert e["code"] == 1006
    deadline = time.time() + 5
    while stat(p.admin, "cluster.backend.upstream_cx_active") != 0 and time.time() < deadline:
        time.sleep(0.05)
    assert stat(p.admin, "cluster.backend.upstream_cx_active") == 0
    assert stat(p.admin, "http.ingress_http.downstream_cx_upgrades_active") == 0


# ---- which upgrades are allowed ---------------------------------------------

ROUTES = """\
- match: { prefix: "/off" }
  route: { cluster: backend, upgrade_configs: [{ upgrade_type: WEBSOCKET, enabled: false }] }
- match: { prefix: "/" }
  route: { cluster: backend }
"""


def test_refused_upgrades_get_403_upgrade_failed(procs, ws_upstream):
    p = start(procs, ws_upstream, hcm_extra="upgrade_configs:\n- upgrade_type: WebSocket\n", routes=ROUTES)

    async def ok():
        async with connect(p.ws + "/echo") as ws:  # types compare case-insensitively
            await ws.send("a")
            assert await ws.recv() == "a"

    run(ok())
    # disabled on the route
    s, head, rest = handshake(p.listen, b"/off/echo")
    body, how = read_all(s)
    s.close()
    assert head.startswith("HTTP/1.1 403"), head
    assert "connection: close" in head.lower() and "content-length: 0" in head.lower()
    assert rest + body == b"" and how == "eof"
    # a type nobody configured
    out = raw_upgrade(p.listen, b"/echo", b"spdy/3.1")
    assert out.startswith(b"HTTP/1.1 403"), out
    lines = log_lines(p, 3)
    assert lines[0][:3] == ["101", "-", "via_upstream"]
    assert [ln[:3] for ln in lines[1:3]] == [["403", "-", "upgrade_failed"]] * 2
    assert stat(p.admin, "http.ingress_http.downstream_rq_ws_on_non_ws_route") == 2
    assert stat(p.admin, "http.ingress_http.downstream_cx_upgrades_total") == 1
    assert not [e for e in ws_upstream.read_events() if e["path"].startswith("/off")]


def raw_upgrade(port, path, proto):
    s = socket.create_connection(("127.0.0.1", port), timeout=10)
    s.sendall(b"GET " + path + b" HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: " + proto + b"\r\n\r\n")
    out, _ = read_all(s)
    s.close()
    return out


def test_route_enables_what_the_connection_manager_does_not(procs, ws_upstream):
    routes = """\
- match: { prefix: "/on/" }
  route: { cluster: backend, prefix_rewrite: "/", upgrade_configs: [{ upgrade_type: websocket }] }
- match: { prefix: "/" }
  route: { cluster: backend }
"""
    hcm = "upgrade_configs:\n- upgrade_type: websocket\n  enabled: false\n"
    p = start(procs, ws_upstream, hcm_extra=hcm, routes=routes)

    async def ok():
        async with connect(p.ws + "/on/echo") as ws:
            await ws.send("a")
            assert await ws.recv() == "a"

    run(ok())
    assert raw_upgrade(p.listen, b"/echo", b"websocket").startswith(b"HTTP/1.1 403")
    # without any upgrade_configs: refused as before
    p2 = start(procs, ws_upstream, hcm_extra="")
    assert raw_upgrade(p2.listen, b"/echo", b"websocket").startswith(b"HTTP/1.1 403")
    assert stat(p2.admin, "http.ingress_http.downstream_rq_ws_on_non_ws_route") == 1


def test_h2c_upgrade_is_served_as_http11(procs, ws_upstream):
    p = start(procs, ws_upstream)
    status, _, body, closed = raw_request(
        p.listen, b"GET /headers HTTP/1.1\r\nHost: x\r\nConnection: Upgrade, HTTP2-Settings, X-Hop\r\n"
        b"Upgrade: h2c\r\nHTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\nX-Hop: 1\r\nX-Keep: 2\r\n\r\n")
    assert status == 200 and not closed, body
    seen = {k.lower(): v for k, v in json.loads(body)["headers"]}
    assert "upgrade" not in seen and "http2-settings" not in seen and "x-hop" not in seen
    assert seen["x-keep"] == "2"
    assert "upgrade" not in seen.get("connection", "").lower()
    assert stat(p.admin, "http.ingress_http.downstream_cx_upgrades_total") == 0
    assert stat(p.admin, "http.ingress_http.downstream_rq_2xx") == 1


def test_non_101_answer_is_forwarded_as_a_response(procs, ws_upstream):
    p = start(procs, ws_upstream)
    out = raw_upgrade(p.listen, b"/reject", b"websocket")
    head, _, body = out.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 403"), out
    assert body == b"upgrade refused by upstream"
    assert b"upgrade:" not in head.lower()
    assert log_lines(p, 1)[0][:3] == ["403", "-", "via_upstream"]
    assert stat(p.admin, "cluster.backend.upstream_rq_403") == 1
    assert stat(p.admin, "cluster.backend.upstream_cx_active") == 0

    async def client_sees_status():
        with pytest.raises(websockets.InvalidStatusCode) as ei:
            async with connect(p.ws + "/reject"):
                pass
        assert ei.value.status_code == 403

    run(client_sees_status())


def test_upgrade_request_body_goes_upstream_before_the_tunnel(procs):
    """An upgrade request with a body: the body, then the upgrade payload,
    reach the upstream in order on the same connection."""
    import threading
    lsock = socket.socket()
    lsock.bind(("127.0.0.1", 0))
    lsock.listen(4)
    got = {}

    def serve():
        c, _ = lsock.accept()
        c.settimeout(10)
        data = b""
        while b"\r\n\r\n" not in data:
            data += c.recv(65536)
        head, _, rest = data.partition(b"\r\n\r\n")
        while len(rest) < 5 + 7:
            rest += c.recv(65536)
        got["head"], got["rest"] = head, rest
        c.sendall(b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: custom\r\n\r\nfrom-up")
        c.shutdown(socket.SHUT_WR)
        c.recv(1)
        c.close()

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    listen, admin = free_port(), free_port()
    run_sharp_config(procs, bootstrap_yaml(listen, admin, {"backend": [lsock.getsockname()[1]]},
                                           hcm_extra="upgrade_configs: [{ upgrade_type: custom }]\n"), admin,
                     concurrency=1)
    s = socket.create_connection(("127.0.0.1", listen), timeout=10)
    s.sendall(b"POST /x HTTP/1.1\r\nHost: x\r\nConnection: upgrade\r\nUpgrade: custom\r\n"
              b"Content-Length: 5\r\n\r\nhellopayload")
    out, how = read_all(s)
    s.close()
    t.join(10)
    lsock.close()
    assert out.startswith(b"HTTP/1.1 101"), out
    assert out.endswith(b"\r\n\r\nfrom-up") and how == "eof"
    assert b"content-length: 5" in got["head"].lower() and b"transfer-encoding" not in got["head"].lower()
    assert got["rest"] == b"hellopayload"


# ---- timeouts ----------------------------------------------------------------

def test_idle_timeouts_close_idle_tunnels_only(procs, ws_upstream):
    routes = """\
- match: { prefix: "/long" }
  route: { cluster: backend, prefix_rewrite: "/echo", idle_timeout: 30s }
- match: { prefix: "/" }
  route: { cluster: backend, timeout: 0.5s }
"""
    # request_timeout waits for a whole request: not for an upgrade's
    hcm = "upgrade_configs: [{ upgrade_type: websocket }]\nstream_idle_timeout: 1s\nrequest_timeout: 0.5s\n"
    p = start(procs, ws_upstream, hcm_extra=hcm, routes=routes)

    async def idle(path):
        async with connect(p.ws + path) as ws:
            await ws.send("a")
            assert await ws.recv() == "a"
            t0 = time.time()
            try:
                await asyncio.wait_for(ws.recv(), 2.5)
            except asyncio.TimeoutError:
                return None  # still open
            except websockets.ConnectionClosed:
                return time.time() - t0
            raise AssertionError("unexpected message")

    async def busy():
        # traffic more often than the idle timeout, for longer than the
        # route timeout (0.5s) and the idle timeout: the tunnel lives
        async with connect(p.ws + "/echo?busy=1") as ws:
            for i in range(8):
                await ws.send(str(i))
                assert await ws.recv() == str(i)
                await asyncio.sleep(0.3)

    closed_after = run(idle("/echo"))
    assert closed_after is not None and 0.7 < closed_after < 2.0, closed_after
    run(busy())
    assert run(idle("/long")) is None  # the route's idle_timeout replaces the HCM's
    lines = log_lines(p, 3)
    assert lines[0][:2] == ["101", "SI"]  # a local reset: no DC
    assert lines[1][:2] == ["101", "-"] and lines[2][:2] == ["101", "-"]
    assert stat(p.admin, "http.ingress_http.downstream_rq_idle_timeout") == 1
    assert stat(p.admin, "cluster.backend.upstream_rq_timeout") in (0, None)
    assert stat(p.admin, "http.ingress_http.downstream_rq_timeout") in (0, None)


def test_route_timeout_bounds_the_wait_for_the_upgrade_answer(procs):
    """An upstream that never answers the upgrade: the route timeout (from the
    request headers, as Envoy since it times upgrades) gives 504."""
    lsock = socket.socket()
    lsock.bind(("127.0.0.1", 0))
    lsock.listen(4)
    listen, admin = free_port(), free_port()
    routes = '- match: { prefix: "/" }\n  route: { cluster: backend, timeout: 0.5s }\n'
    run_sharp_config(procs, bootstrap_yaml(listen, admin, {"backend": [lsock.getsockname()[1]]}, routes=routes,
                                           hcm_extra="upgrade_configs: [{ upgrade_type: websocket }]\n"), admin,
                     concurrency=1)
    t0 = time.time()
    out = raw_upgrade(listen, b"/", b"websocket")
    lsock.close()
    assert out.startswith(b"HTTP/1.1 504"), out
    assert 0.4 < time.time() - t0 < 3


# ---- backpressure --------------------------------------------------------------

def rss_kb(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def test_slow_reader_keeps_memory_bounded(procs, ws_upstream):
    p = start(procs, ws_upstream)
    pid = p.sharp.p.pid
    mb = 96
    s, head, rest = handshake(p.listen, f"/flood?mb={mb}".encode())
    assert head.startswith("HTTP/1.1 101"), head
    before = rss_kb(pid)
    time.sleep(2.0 * (2 if SANITIZED else 1))  # the upstream pushes, the client reads nothing
    during = rss_kb(pid)
    # SHARP stopped reading the upstream: its buffers stay near the
    # connection's buffer limit (1 MiB), far below what was offered
    assert during - before < 24 * 1024, (before, during)
    total = len(rest)
    s.settimeout(30)
    while total < mb << 20:
        c = s.recv(1 << 20)
        assert c
        total += len(c)
    s.close()
    assert total >= mb << 20


def test_slow_upstream_reader_keeps_memory_bounded(procs, ws_upstream):
    """The other direction: the upstream stops reading (it floods and
    never reads); the client keeps sending."""
    p = start(procs, ws_upstream)
    pid = p.sharp.p.pid
    s, head, _ = handshake(p.listen, b"/flood?mb=1")
    assert head.startswith("HTTP/1.1 101"), head
    before = rss_kb(pid)
    frame = client_frame(b"z" * 65536)
    s.settimeout(3)
    sent = 0
    try:
        while sent < (256 << 20):
            s.sendall(frame)
            sent += len(frame)
    except socket.timeout:
        pass
    during = rss_kb(pid)
    assert sent < (256 << 20)  # the client was blocked: SHARP stopped reading it
    assert during - before < 24 * 1024, (before, during, sent)
    # the upstream going away ends the tunnel and the client's connection
    ws_upstream.stop(signal.SIGKILL)
    _, how = read_all(s)
    s.close()
    assert how in ("eof", "reset")
    assert stat(p.admin, "http.ingress_http.downstream_cx_upgrades_active") == 0


# ---- configuration ---------------------------------------------------------------

HCM = "static_resources.listeners[0].filter_chains[0].filters[0].typed_config"


@pytest.mark.parametrize("hcm,routes,want", [
    ("upgrade_configs: [{ upgrade_type: websocket }, { upgrade_type: WebSocket }]\n", None,
     "upgrade_configs[1].upgrade_type: Error: multiple upgrade configs with the same name: 'WebSocket'"),
    ("upgrade_configs: [{ upgrade_type: websocket, filters: [{ name: envoy.filters.http.router }] }]\n", None,
     "upgrade_configs[0].filters: filters is not supported by SHARP (upgrade filter chains"),
    ("", '- match: { prefix: "/" }\n  route: { cluster: b, upgrade_configs: [{ upgrade_type: websocket }, '
         '{ upgrade_type: WEBSOCKET, enabled: false }] }\n', "Duplicate upgrade WEBSOCKET"),
    ("", '- match: { prefix: "/" }\n  route: { cluster: b, upgrade_configs: [{ upgrade_type: "" }] }\n',
     "upgrade_type"),
], ids=["hcm-duplicate", "hcm-filters", "route-duplicate", "route-empty"])
def test_config_errors(hcm, routes, want):
    rc, out = validate(bootstrap_yaml(10000, 9901, {"b": [8080]}, hcm_extra=hcm, routes=routes))
    assert rc == 1 and want in out, out


def test_101_without_an_upgrade_request_is_an_upstream_protocol_error(procs):
    def script(c):
        read_head(c)
        c.sendall(b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n")
        c.recv(1)

    port, t, lsock = raw_upstream(script)
    listen, admin = free_port(), free_port()
    run_sharp_config(procs, bootstrap_yaml(listen, admin, {"backend": [port]},
                                           hcm_extra="upgrade_configs: [{ upgrade_type: websocket }]\n"), admin,
                     concurrency=1)
    status, _, body, _ = raw_request(listen, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    t.join(10)
    lsock.close()
    assert status == 502 and b"protocol error" in body, body


def test_connection_upgrade_without_upgrade_header_is_a_plain_request(procs, ws_upstream):
    p = start(procs, ws_upstream, hcm_extra="")
    status, _, body, closed = raw_request(p.listen, b"GET /headers HTTP/1.1\r\nHost: x\r\nConnection: upgrade\r\n\r\n")
    assert status == 200 and not closed, body
    seen = {k.lower() for k, _ in json.loads(body)["headers"]}
    assert "connection" not in seen and "upgrade" not in seen
    assert stat(p.admin, "http.ingress_http.downstream_rq_ws_on_non_ws_route") in (0, None)
