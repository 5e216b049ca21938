"""The TCP proxy's tunneling_config: the downstream's bytes go over an HTTP
CONNECT (or POST) stream to the upstream, HTTP/1.1 or HTTP/2 by the
cluster's protocol. Small tunnel servers on loopback (a raw HTTP/1.1 one and
an HTTP/2 one with python3-h2) record the request they got, answer it with a
chosen status and echo the tunnel's bytes; the tests check the request,
bytes both ways, half-closes, refused tunnels and the config checks."""
import os
import socket
import subprocess
import threading
import time

import pytest

from conftest import SHARP, SLOW, free_port, log_lines, stat, validate_config, wait_for
from test_tcp_proxy import (CORPUS, access_log, bootstrap, closed_by_proxy, cluster_yaml, connect, recv_all,
                            recv_exact, start)

H2_OPTIONS = """    typed_extension_protocol_options:
      envoy.extensions.upstreams.http.v3.HttpProtocolOptions:
        "@type": type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions
        explicit_http_config:
          http2_protocol_options: {}
"""


class TunnelServer:
    """A tunnel server on 127.0.0.1, a thread per connection. Each request
    is recorded in `requests` (HTTP/1.1: the request line and the header
    list; HTTP/2: the header list with pseudo-headers) and answered with
    `status`; after a 2xx (HTTP/2: 200) the tunnel's bytes are echoed, and
    the peer's end of them (FIN, END_STREAM) is answered with "got <n>" and
    an end, when `count` is set. `greeting` goes right after the answer (on
    HTTP/1.1 in the same segment as its head). With `gate` (an Event) the
    tunnel's bytes are not read until it is set; with `hold` the request is
    not answered until that one is."""

    def __init__(self, h2=False, status=200, count=False, greeting=b"", gate=None, hold=None):
        self.h2, self.status, self.count, self.greeting, self.gate = h2, status, count, greeting, gate
        self.hold = hold
        self.requests = []
        self.lock = threading.Lock()
        self.lsock = socket.socket()
        self.lsock.bind(("127.0.0.1", 0))
        self.lsock.listen(64)
        self.port = self.lsock.getsockname()[1]
        self.conns = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while True:
            try:
                s, _ = self.lsock.accept()
            except OSError:
                return
            self.conns.append(s)
            threading.Thread(target=self._serve_h2 if self.h2 else self._serve_h1, args=(s,), daemon=True).start()

    def stop(self):
        self.lsock.close()
        for s in self.conns:
            try:
                s.close()
            except OSError:
                pass

    def _serve_h1(self, s):
        try:
            buf = b""
            while b"\r\n\r\n" not in buf:
                b = s.recv(65536)
                if not b:
                    return
                buf += b
            head, rest = buf.split(b"\r\n\r\n", 1)
            lines = head.decode().split("\r\n")
            hdrs = [tuple(x.strip() for x in line.split(":", 1)) for line in lines[1:]]
            with self.lock:
                self.requests.append({"line": lines[0], "headers": hdrs})
            if self.hold:
                self.hold.wait(30 * SLOW)
            if not 200 <= self.status < 300:
                s.sendall(b"HTTP/1.1 %d Nope\r\ncontent-length: 0\r\n\r\n" % self.status)
                s.recv(65536)  # until SHARP closes
                return
            s.sendall(b"HTTP/1.1 %d Connection established\r\n\r\n" % self.status + self.greeting)
            if self.gate:
                self.gate.wait(30 * SLOW)
            total = 0
            while True:
                if rest:
                    total += len(rest)
                    if not self.count:
                        s.sendall(rest)
                rest = s.recv(65536)
                if not rest:
                    break
            if self.count:
                s.sendall(b"got %d" % total)
            s.shutdown(socket.SHUT_WR)
            s.recv(1)
        except OSError:
            pass
        finally:
            s.close()

    def _serve_h2(self, s):
        import h2.config
        import h2.connection
        import h2.events
        import h2.exceptions
        # h2 wants :path and :scheme even in a CONNECT (RFC 9113 section
        # 8.5 forbids them): its inbound checks are off, the test checks
        conn = h2.connection.H2Connection(config=h2.config.H2Configuration(
            client_side=False, header_encoding="utf-8", validate_inbound_headers=False))
        pending = {}  # stream id -> [bytes to echo, peer ended, we ended, byte count]
        try:
            conn.initiate_connection()
            s.sendall(conn.data_to_send())
            while True:
                data = s.recv(65536)
                if not data:
                    return
                for ev in conn.receive_data(data):
                    if isinstance(ev, h2.events.RequestReceived):
                        with self.lock:
                            self.requests.append({"headers": list(ev.headers)})
                        if self.hold:
                            self.hold.wait(30 * SLOW)
                        if self.status != 200:
                            conn.send_headers(ev.stream_id, [(":status", str(self.status))], end_stream=True)
                        else:
                            conn.send_headers(ev.stream_id, [(":status", "200")])
                            pending[ev.stream_id] = [bytearray(self.greeting), False, False, 0]
                    elif isinstance(ev, h2.events.DataReceived):
                        conn.acknowledge_received_data(ev.flow_controlled_length, ev.stream_id)
                        st = pending.get(ev.stream_id)
                        if st:
                            st[3] += len(ev.data)
                            if not self.count:
                                st[0] += ev.data
                    elif isinstance(ev, h2.events.StreamEnded):
                        st = pending.get(ev.stream_id)
                        if st:
                            st[1] = True
                            if self.count:
                                st[0] += b"got %d" % st[3]
                    elif isinstance(ev, h2.events.StreamReset):
                        pending.pop(ev.stream_id, None)
                for sid, st in list(pending.items()):
                    try:
                        while st[0]:
                            n = min(len(st[0]), conn.local_flow_control_window(sid), conn.max_outbound_frame_size)
                            if n <= 0:
                                break
                            conn.send_data(sid, bytes(st[0][:n]))
                            del st[0][:n]
                        if not st[0] and st[1] and not st[2]:
                            conn.end_stream(sid)
                            st[2] = True
                    except h2.exceptions.StreamClosedError:
                        pending.pop(sid, None)
                s.sendall(conn.data_to_send())
                if self.gate and pending:
                    self.gate.wait(30 * SLOW)
        except (OSError, h2.exceptions.ProtocolError):
            pass
        finally:
            s.close()


@pytest.fixture
def tunnels():
    started = []
    yield started
    for t in started:
        t.stop()


def tunnel_server(tunnels, **kw):
    t = TunnelServer(**kw)
    tunnels.append(t)
    return t


def start_tunnel(procs, srv, tunneling, tp_extra=""):
    extra = H2_OPTIONS if srv.h2 else ""
    return start(procs, cluster_yaml("backend", [srv.port], extra), tp_extra=tunneling + tp_extra)


def echo_roundtrip(p, n=5):
    with connect(p) as s:
        for i in range(n):
            msg = f"hello {i} ".encode() * (i + 1)
            s.sendall(msg)
            assert recv_exact(s, len(msg)) == msg


def bulk(p, size):
    data = os.urandom(size)
    got = bytearray()
    with connect(p, timeout=60) as s:
        def reader():
            got.extend(recv_exact(s, len(data)))
        t = threading.Thread(target=reader)
        t.start()
        s.sendall(data)
        t.join(60 * SLOW)
    assert bytes(got) == data


# ---- HTTP/1.1 CONNECT -------------------------------------------------------


def test_http1_connect_request_and_echo(procs, tunnels):
    srv = tunnel_server(tunnels)
    p = start_tunnel(procs, srv, """tunneling_config:
  hostname: host.com:443
  headers_to_add:
  - header: { key: foo, value: bar }
  - header: { key: x-port, value: "%DOWNSTREAM_LOCAL_PORT%" }
""")
    echo_roundtrip(p)
    assert len(srv.requests) == 1
    r = srv.requests[0]
    assert r["line"] == "CONNECT host.com:443 HTTP/1.1"
    hdrs = {k.lower(): v for k, v in r["headers"]}
    assert hdrs["host"] == "host.com:443"
    assert hdrs["foo"] == "bar"
    assert hdrs["x-port"] == str(p.listen)
    assert "transfer-encoding" not in hdrs and "content-length" not in hdrs
    assert stat(p.admin, "cluster.backend.upstream_cx_total") == 1


def test_http1_connect_bulk(procs, tunnels):
    srv = tunnel_server(tunnels)
    p = start_tunnel(procs, srv, "tunneling_config: { hostname: host.com:443 }\n")
    bulk(p, 8 << 20)


def test_http1_connect_half_close(procs, tunnels):
    """The client's FIN ends the tunnel's request side; the server's answer
    after it, and its own end, reach the client."""
    srv = tunnel_server(tunnels, count=True)
    p = start_tunnel(procs, srv, "tunneling_config: { hostname: host.com:443 }\n")
    with connect(p) as s:
        s.sendall(b"a" * 100000)
        s.shutdown(socket.SHUT_WR)
        assert recv_all(s) == b"got 100000"


@pytest.mark.parametrize("h2", [False, True], ids=["http1", "http2"])
def test_refused_tunnel_fails_the_connection(procs, tunnels, tmp_path, h2):
    """A 403 is a connect failure: the downstream closes without a byte,
    UF in the access log, upstream_cx_connect_attempts_exceeded."""
    srv = tunnel_server(tunnels, h2=h2, status=403)
    log, path = access_log(tmp_path, "%RESPONSE_FLAGS% %UPSTREAM_HOST%")
    p = start_tunnel(procs, srv, "tunneling_config: { hostname: host.com:443 }\n", log)
    with connect(p) as s:
        s.sendall(b"hello")
        assert closed_by_proxy(s)
    assert log_lines(path, 1)[0] == f"UF 127.0.0.1:{srv.port}"
    assert stat(p.admin, "cluster.backend.upstream_cx_connect_attempts_exceeded") == 1
    assert stat(p.admin, "cluster.backend.upstream_cx_connect_fail") == 0
    assert len(srv.requests) == 1


def test_refused_tunnel_is_retried(procs, tunnels):
    """A refused tunnel counts as a failed attempt: max_connect_attempts
    tries again."""
    srv = tunnel_server(tunnels, h2=True, status=503)
    p = start_tunnel(procs, srv, "tunneling_config: { hostname: host.com:443 }\n", "max_connect_attempts: 3\n")
    with connect(p) as s:
        assert closed_by_proxy(s)
    assert len(srv.requests) == 3


@pytest.mark.parametrize("h2,status,opens", [(False, 204, True), (True, 204, False)], ids=["http1", "http2"])
def test_which_2xx_opens_the_tunnel(procs, tunnels, h2, status, opens):
    """Envoy's isValidResponse: any 2xx on HTTP/1.1, only 200 on HTTP/2."""
    srv = tunnel_server(tunnels, h2=h2, status=status)
    p = start_tunnel(procs, srv, "tunneling_config: { hostname: host.com:443 }\n")
    with connect(p) as s:
        s.sendall(b"ping")
        if opens:
            assert recv_exact(s, 4) == b"ping"
        else:
            assert closed_by_proxy(s)


# ---- HTTP/2 CONNECT and POST ------------------------------------------------


def test_http2_connect_request_and_echo(procs, tunnels):
    srv = tunnel_server(tunnels, h2=True)
    p = start_tunnel(procs, srv, """tunneling_config:
  hostname: "h-%DOWNSTREAM_LOCAL_PORT%.example:443"
  headers_to_add:
  - header: { key: original_dst_port, value: "%DOWNSTREAM_LOCAL_PORT%" }
""")
    echo_roundtrip(p)
    assert len(srv.requests) == 1
    hdrs = srv.requests[0]["headers"]
    d = dict(hdrs)
    assert d[":method"] == "CONNECT"
    assert d[":authority"] == f"h-{p.listen}.example:443"
    assert ":scheme" not in d and ":path" not in d
    assert d["original_dst_port"] == str(p.listen)
    assert stat(p.admin, "cluster.backend.upstream_cx_http2_total") == 1


def test_http2_post_request_and_echo(procs, tunnels):
    srv = tunnel_server(tunnels, h2=True)
    p = start_tunnel(procs, srv, "tunneling_config: { hostname: host.com:443, use_post: true, post_path: /tunnel }\n")
    echo_roundtrip(p)
    d = dict(srv.requests[0]["headers"])
    assert (d[":method"], d[":path"], d[":scheme"], d[":authority"]) == ("POST", "/tunnel", "http", "host.com:443")


def test_http2_post_default_path(procs, tunnels):
    srv = tunnel_server(tunnels, h2=True)
    p = start_tunnel(procs, srv, "tunneling_config: { hostname: host.com:443, use_post: true }\n")
    echo_roundtrip(p, 1)
    assert dict(srv.requests[0]["headers"])[":path"] == "/"


def test_http1_post_is_refused(procs, tunnels, tmp_path):
    """use_post over an HTTP/1.1 cluster (Envoy's HTTP/1.1 tunnelling
    POST) is not implemented: the connection closes, nothing is sent."""
    srv = tunnel_server(tunnels)
    log, path = access_log(tmp_path, "%RESPONSE_FLAGS%")
    p = start_tunnel(procs, srv, "tunneling_config: { hostname: host.com:443, use_post: true }\n", log)
    with connect(p) as s:
        assert closed_by_proxy(s)
    assert log_lines(path, 1)[0] == "UF"
    assert "use_post needs an HTTP/2 cluster" in p.sharp.output()
    assert srv.requests == []


@pytest.mark.parametrize("use_post", [False, True], ids=["connect", "post"])
def test_http2_bulk(procs, tunnels, use_post):
    srv = tunnel_server(tunnels, h2=True)
    p = start_tunnel(procs, srv, f"tunneling_config: {{ hostname: host.com:443, use_post: {str(use_post).lower()} }}\n")
    bulk(p, 8 << 20)


def test_http2_half_close(procs, tunnels):
    """The client's FIN is the stream's END_STREAM; the server's answer
    after it and its END_STREAM reach the client (data, then FIN)."""
    srv = tunnel_server(tunnels, h2=True, count=True)
    p = start_tunnel(procs, srv, "tunneling_config: { hostname: host.com:443 }\n")
    with connect(p) as s:
        s.sendall(b"a" * 300000)
        s.shutdown(socket.SHUT_WR)
        assert recv_all(s) == b"got 300000"
    wait_for(lambda: stat(p.admin, "listener.127.0.0.1_%d.downstream_cx_active" % p.listen) == 0, 5,
             "the connection closed")


def test_http2_downstream_close_resets_the_stream(procs, tunnels):
    srv = tunnel_server(tunnels, h2=True)
    p = start_tunnel(procs, srv, "tunneling_config: { hostname: host.com:443 }\n")
    s = connect(p)
    s.sendall(b"x")
    assert recv_exact(s, 1) == b"x"
    s.close()
    wait_for(lambda: stat(p.admin, "cluster.backend.upstream_cx_active") == 0, 5 * SLOW, "upstream closed")
    # the next connection tunnels as well
    echo_roundtrip(p, 1)


@pytest.mark.parametrize("h2", [False, True], ids=["http1", "http2"])
def test_upstream_bytes_right_after_the_answer(procs, tunnels, h2):
    """The server speaks first, its bytes right behind the answer: they
    reach the client before anything was sent."""
    srv = tunnel_server(tunnels, h2=h2, greeting=b"SSH-2.0-hello\r\n")
    p = start_tunnel(procs, srv, "tunneling_config: { hostname: host.com:22 }\n")
    with connect(p) as s:
        assert recv_exact(s, 15) == b"SSH-2.0-hello\r\n"
        s.sendall(b"ping")
        assert recv_exact(s, 4) == b"ping"


LIMITS = "    per_connection_buffer_limit_bytes: 65536\n"


@pytest.mark.parametrize("h2", [False, True], ids=["http1", "http2"])
def test_slow_upstream_pauses_downstream_reading(procs, tunnels, h2):
    """A tunnel server that reads nothing for a while: the client's bytes
    stop being read (downstream_flow_control_paused_reading_total) and
    SHARP's memory stays bounded; all of them arrive once it reads."""
    total = 128 << 20
    gate = threading.Event()
    srv = tunnel_server(tunnels, h2=h2, count=True, gate=gate)
    p = start(procs, cluster_yaml("backend", [srv.port], LIMITS + (H2_OPTIONS if h2 else "")),
              tp_extra="tunneling_config: { hostname: host.com:443 }\n", listener_extra=LIMITS)
    s = connect(p, timeout=60)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 64 * 1024)
    sent = [0]

    def writer():
        buf = b"y" * (1 << 20)
        try:
            for _ in range(total // len(buf)):
                s.sendall(buf)
                sent[0] += len(buf)
            s.shutdown(socket.SHUT_WR)
        except OSError:
            pass

    t = threading.Thread(target=writer)
    t.start()
    wait_for(lambda: stat(p.admin, "tcp.tp.downstream_flow_control_paused_reading_total") >= 1, 10,
             "downstream reading paused")
    assert sent[0] < 64 << 20, sent[0]
    assert stat(p.admin, "server.memory_allocated") < 64 << 20
    gate.set()
    t.join(60 * SLOW)
    assert recv_all(s) == b"got %d" % total
    s.close()
    assert stat(p.admin, "tcp.tp.downstream_flow_control_resumed_reading_total") >= 1


@pytest.mark.parametrize("h2", [False, True], ids=["http1", "http2"])
def test_nothing_read_before_the_tunnel_opens(procs, tunnels, h2):
    """Until the tunnel's answer comes SHARP reads nothing from the client
    (Envoy reads nothing before its upstream is there): a client sending
    128 MiB meanwhile gets only as far as the kernels' buffers; all of it
    arrives once the tunnel opens."""
    total = 128 << 20
    hold = threading.Event()
    srv = tunnel_server(tunnels, h2=h2, count=True, hold=hold)
    p = start(procs, cluster_yaml("backend", [srv.port], LIMITS + (H2_OPTIONS if h2 else "")),
              tp_extra="tunneling_config: { hostname: host.com:443 }\n", listener_extra=LIMITS)
    s = connect(p, timeout=60)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 64 * 1024)
    sent = [0]

    def writer():
        buf = b"y" * (1 << 20)
        try:
            for _ in range(total // len(buf)):
                s.sendall(buf)
                sent[0] += len(buf)
            s.shutdown(socket.SHUT_WR)
        except OSError:
            pass

    t = threading.Thread(target=writer)
    t.start()
    wait_for(lambda: srv.requests, 10, "the tunnel's request")
    time.sleep(1.0)  # the writer's chance to get further than it may
    assert sent[0] < 16 << 20, sent[0]
    assert stat(p.admin, "tcp.tp.downstream_cx_rx_bytes_total") < 16 << 20
    hold.set()
    t.join(60 * SLOW)
    assert recv_all(s) == b"got %d" % total
    s.close()


def test_http2_slow_reader_bounded_memory(procs, tunnels):
    """A tunnel server that sends 96 MiB to a client that does not read:
    SHARP stops reading the stream (its window stays closed), its memory
    stays bounded, and the client then gets every byte."""
    total = 96 << 20
    srv = tunnel_server(tunnels, h2=True, greeting=b"z" * total)
    p = start(procs, cluster_yaml("backend", [srv.port], LIMITS + H2_OPTIONS),
              tp_extra="tunneling_config: { hostname: host.com:443 }\n", listener_extra=LIMITS)
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
    s.settimeout(60 * SLOW)
    s.connect(("127.0.0.1", p.listen))
    with s:
        wait_for(lambda: stat(p.admin, "cluster.backend.upstream_cx_rx_bytes_total") > 1 << 20, 10, "bytes came")
        before = stat(p.admin, "cluster.backend.upstream_cx_rx_bytes_total")
        wait_for(lambda: stat(p.admin, "server.memory_allocated") > 0, 5, "stats")
        assert before < 32 << 20, before
        assert stat(p.admin, "server.memory_allocated") < 64 << 20
        assert recv_exact(s, total) == b"z" * total


# ---- configuration ----------------------------------------------------------


def test_config_checks():
    def check(tunneling, what):
        rc, out = validate_config(bootstrap(free_port(), free_port(), cluster_yaml("backend", [1]),
                                            tp_extra=tunneling))
        if what is None:
            assert rc == 0, out
        else:
            assert rc != 0 and what in out, out

    check("tunneling_config: { hostname: host.com:443 }", None)
    check("tunneling_config: { hostname: \"%DOWNSTREAM_REMOTE_PORT%\" }", None)
    check("tunneling_config: { hostname: \"\" }", "hostname")
    check("tunneling_config: { hostname: \"%NOPE%\" }", "NOPE")
    check("tunneling_config: { hostname: x, post_path: /p }", "Can't set a post path when POST method isn't used")
    check("tunneling_config: { hostname: x, propagate_response_headers: true }", "propagate_response_headers")
    check("tunneling_config: { hostname: x, propagate_response_trailers: true }", "propagate_response_trailers")
    check("tunneling_config: { hostname: x, headers_to_add: [{ header: { key: a, value: \"%NOPE%\" } }] }", "NOPE")


@pytest.mark.parametrize("name", ["envoy__configs__encapsulate_in_http1_connect.yaml",
                                  "envoy__configs__encapsulate_in_http2_connect.yaml",
                                  "envoy__configs__encapsulate_in_http2_post.yaml"])
def test_corpus_configs_validate(name):
    path = os.path.join(CORPUS, name)
    if not os.path.exists(path):
        pytest.skip("the Envoy corpus is not on this machine")
    r = subprocess.run([SHARP, "--mode", "validate", "-c", path], capture_output=True, text=True, timeout=20 * SLOW)
    assert r.returncode == 0, r.stdout + r.stderr
