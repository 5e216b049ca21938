"""HTTP CONNECT through the connection manager, as Envoy's upgrades
(upgrade_type CONNECT): proxied like any request (the upstream, here another
SHARP, answers it and the stream then carries raw bytes), or terminated by a
route's connect_config (SHARP answers 200 once a TCP connection to the
cluster's host is up and the stream's payload goes to it as is). Real
clients: curl's --proxytunnel for HTTP/1.1 CONNECT, python3-h2 for HTTP/2
CONNECT, raw sockets for the protocol edges; real servers on loopback (the
project's test upstream, an asyncio echo server)."""
import socket
import subprocess
import time

import pytest

from conftest import SHARP, SLOW, file_access_log, free_port, log_lines, run_sharp_config, stat, validate_config, \
    wait_for, Upstream
from test_tcp_proxy import CORPUS, TcpServer, cluster_yaml, recv_all, recv_exact, server, servers  # noqa: F401

H2_OPTIONS = """    typed_extension_protocol_options:
      envoy.extensions.upstreams.http.v3.HttpProtocolOptions:
        "@type": type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions
        explicit_http_config:
          http2_protocol_options: {}
"""

TERMINATE = "[{upgrade_type: CONNECT, connect_config: {}}]"


def route_yaml(cluster, upgrade=None, match="connect_matcher: {}", extra=""):
    u = f"\n                  upgrade_configs: {upgrade}" if upgrade else ""
    return f"""              - match: {{ {match} }}
                route:
                  cluster: {cluster}{u}
{extra}"""


def connect_bootstrap(listen, admin, clusters, routes, hcm_extra="", hcm_upgrades="[{upgrade_type: CONNECT}]",
                      listener_extra=""):
    return f"""admin:
  address:
    socket_address: {{ address: 127.0.0.1, port_value: {admin} }}
static_resources:
  listeners:
  - name: connect
    address:
      socket_address: {{ address: 127.0.0.1, port_value: {listen} }}
{listener_extra}    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: ingress_http
          codec_type: AUTO
          route_config:
            virtual_hosts:
            - name: local
              domains: ["*"]
              routes:
{routes}          http_filters:
          - name: envoy.filters.http.router
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router
          http2_protocol_options: {{ allow_connect: true }}
          upgrade_configs: {hcm_upgrades}
{hcm_extra}  clusters:
{clusters}"""


class P:
    pass


def start(procs, clusters, routes, **kw):
    p = P()
    p.listen, p.admin = free_port(), free_port()
    p.sharp = run_sharp_config(procs, connect_bootstrap(p.listen, p.admin, clusters, routes, **kw), p.admin)
    return p


def terminating(procs, port, cluster_extra="", **kw):
    """A SHARP terminating every CONNECT to the host on `port`."""
    return start(procs, cluster_yaml("target", [port], cluster_extra), route_yaml("target", TERMINATE), **kw)


def raw_connect(port, target, extra=b"", timeout=10):
    """Sends an HTTP/1.1 CONNECT; returns the socket and the response head
    (and whatever followed it in the same reads) once the head is complete."""
    s = socket.create_connection(("127.0.0.1", port), timeout=timeout * SLOW)
    s.sendall(b"CONNECT %s HTTP/1.1\r\nhost: %s\r\n\r\n" % (target.encode(), target.encode()) + extra)
    buf = b""
    while b"\r\n\r\n" not in buf:
        b = s.recv(65536)
        if not b:
            break
        buf += b
    head, _, rest = buf.partition(b"\r\n\r\n")
    return s, head.decode(), rest


def raw_exchange(port, data, timeout=10):
    """Sends bytes, returns everything until the proxy closes."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout * SLOW) as s:
        s.sendall(data)
        return recv_all(s).decode(errors="replace")


def curl_tunnel(proxy_port, url, proxy_http2=False, timeout=20):
    """curl through SHARP with --proxytunnel: an HTTP/1.1 CONNECT to the
    URL's host and port, then the request inside the tunnel."""
    args = ["curl", "-sS", "--max-time", str(timeout * SLOW), "-p", "-x", f"http://127.0.0.1:{proxy_port}",
            "-o", "-", "-w", "\n%{http_code} %{http_connect}", url]
    r = subprocess.run(args, capture_output=True, text=True, timeout=(timeout + 5) * SLOW)
    assert r.returncode == 0, r.stderr
    body, _, codes = r.stdout.rpartition("\n")
    return body, codes


# ---- HTTP/2 CONNECT client (python3-h2) ----------------------------------------


class H2Tunnel:
    """One HTTP/2 connection to SHARP with a CONNECT stream (:method and
    :authority only, RFC 9113 section 8.5)."""

    def __init__(self, port, target, timeout=10):
        import h2.config
        import h2.connection
        self.h2 = __import__("h2.events").events
        self.s = socket.create_connection(("127.0.0.1", port), timeout=timeout * SLOW)
        # h2 wants :path and :scheme in every request: its outbound checks
        # are off for a real CONNECT
        self.c = h2.connection.H2Connection(config=h2.config.H2Configuration(
            client_side=True, header_encoding="utf-8", validate_outbound_headers=False))
        self.c.initiate_connection()
        self.sid = self.c.get_next_available_stream_id()
        self.c.send_headers(self.sid, [(":method", "CONNECT"), (":authority", target)])
        self.flush()
        self.headers = None
        self.data = b""
        self.ended = False
        self.reset = None

    def flush(self):
        d = self.c.data_to_send()
        if d:
            self.s.sendall(d)

    def pump(self):
        d = self.s.recv(65536)
        if not d:
            self.ended = True
            return
        for ev in self.c.receive_data(d):
            if isinstance(ev, self.h2.ResponseReceived):
                self.headers = dict(ev.headers)
            elif isinstance(ev, self.h2.DataReceived):
                self.data += ev.data
                self.c.acknowledge_received_data(ev.flow_controlled_length, ev.stream_id)
            elif isinstance(ev, self.h2.StreamEnded):
                self.ended = True
            elif isinstance(ev, self.h2.StreamReset):
                self.reset = ev.error_code
                self.ended = True
        self.flush()

    def until(self, pred):
        deadline = time.time() + 10 * SLOW
        while not pred():
            assert time.time() < deadline, "timed out"
            self.pump()

    def send(self, data, end=False):
        self.c.send_data(self.sid, data, end_stream=end)
        self.flush()

    def close(self):
        self.s.close()


# ---- terminating ----------------------------------------------------------------


def test_terminate_http1_connect_with_curl(procs):
    """curl -p through a terminating SHARP to the test upstream: the CONNECT
    gets SHARP's own 200 and the HTTP request inside the tunnel reaches the
    upstream unchanged (SHARP sees only bytes); stats are the upgrade's."""
    up = Upstream()
    procs.append(up)
    p = terminating(procs, up.port)
    body, codes = curl_tunnel(p.listen, f"http://127.0.0.1:{up.port}/echo")
    assert codes == "200 200", codes
    assert '"path":"/echo"' in body.replace(" ", "")
    # no x-forwarded-for: the request inside the tunnel was not SHARP's to change
    assert "x-forwarded-for" not in body.lower()
    wait_for(lambda: stat(p.admin, "http.ingress_http.downstream_cx_upgrades_active") == 0, 5 * SLOW,
             "the tunnel to end")
    assert stat(p.admin, "http.ingress_http.downstream_cx_upgrades_total") == 1
    assert stat(p.admin, "cluster.target.upstream_cx_total") == 1
    assert stat(p.admin, "cluster.target.upstream_rq_200") == 1


def test_terminate_raw_bytes_both_ways_and_half_close(procs, servers):
    """A raw HTTP/1.1 CONNECT: the 200 has no body framing, bytes sent with
    the request head and after it reach the echo server in order, and the
    client's FIN reaches it too; its close ends the tunnel."""
    up = server(servers)
    p = terminating(procs, up.port)
    s, head, rest = raw_connect(p.listen, f"127.0.0.1:{up.port}", extra=b"early ")
    with s:
        assert head.startswith("HTTP/1.1 200 "), head
        lower = head.lower()
        assert "content-length" not in lower and "transfer-encoding" not in lower and "connection:" not in lower
        s.sendall(b"late")
        got = rest + recv_exact(s, len(b"early late") - len(rest))
        assert got == b"early late"
        s.shutdown(socket.SHUT_WR)
        assert recv_all(s) == b""
    wait_for(lambda: up.received == len(b"early late"), 5 * SLOW, "the echo server to get every byte")


POST_ROUTE = 'headers: [{ name: ":method", string_match: { exact: POST } }], prefix: "/"'
ALLOW_POST = "[{upgrade_type: CONNECT, connect_config: {allow_post: true}}]"


def dechunk(body):
    out = b""
    while True:
        size, _, body = body.partition(b"\r\n")
        n = int(size, 16)
        if n == 0:
            return out
        out += body[:n]
        body = body[n + 2:]


def test_allow_post_http1(procs, servers):
    """connect_config.allow_post: a POST is terminated as a CONNECT is
    (Envoy's TcpUpstream): its body goes to a TCP connection to the host
    as raw bytes and its end half-closes it; 200 answers it and the echo
    server's bytes, until it closes, are the response body."""
    up = server(servers)
    p = start(procs, cluster_yaml("target", [up.port]), route_yaml("target", ALLOW_POST, match=POST_ROUTE))
    resp = raw_exchange(p.listen, b"POST /x HTTP/1.1\r\nhost: a\r\ncontent-length: 11\r\nconnection: close\r\n\r\n"
                                  b"hello world").encode()
    head, _, body = resp.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 "), resp
    assert b"transfer-encoding: chunked" in head.lower(), head
    assert dechunk(body) == b"hello world"
    wait_for(lambda: up.received == 11, 5 * SLOW, "the echo server to get the body")
    # not a POST: the route does not match, nothing is terminated
    resp = raw_exchange(p.listen, b"GET /x HTTP/1.1\r\nhost: a\r\nconnection: close\r\n\r\n")
    assert resp.startswith("HTTP/1.1 404 "), resp


def test_allow_post_http2_with_curl(procs, servers):
    """The corpus bootstrap's case: an HTTP/2 POST terminated as TCP."""
    up = server(servers)
    p = start(procs, cluster_yaml("target", [up.port]), route_yaml("target", ALLOW_POST, match=POST_ROUTE))
    r = subprocess.run(["curl", "-sS", "--http2-prior-knowledge", "--max-time", str(10 * SLOW), "-d", "payload-bytes",
                        "-o", "-", "-w", "\n%{http_code}", f"http://127.0.0.1:{p.listen}/"],
                       capture_output=True, text=True, timeout=20 * SLOW)
    assert r.returncode == 0, r.stderr
    body, _, code = r.stdout.rpartition("\n")
    assert code == "200" and body == "payload-bytes", r.stdout


def test_terminate_bulk_transfer(procs, servers):
    """8 MiB each way through a terminated tunnel, read as it comes."""
    up = server(servers)
    p = terminating(procs, up.port)
    s, head, rest = raw_connect(p.listen, f"127.0.0.1:{up.port}")
    total = 8 << 20
    chunk = bytes(range(256)) * 256
    with s:
        assert head.startswith("HTTP/1.1 200 ")
        got = len(rest)
        sent = 0
        s.setblocking(False)
        deadline = time.time() + 30 * SLOW
        while got < total:
            assert time.time() < deadline
            if sent < total:
                try:
                    sent += s.send(chunk[: min(len(chunk), total - sent)])
                except BlockingIOError:
                    pass
            try:
                b = s.recv(1 << 20)
                assert b, "closed early"
                got += len(b)
            except BlockingIOError:
                time.sleep(0.001)
        assert got == total


def test_terminate_http2_connect(procs, servers):
    """An HTTP/2 CONNECT (no :path, no :scheme) on a connection manager with
    allow_connect: 200 once the TCP connection is up, DATA both ways, and
    END_STREAM becomes the upstream FIN; the upstream's close ends the
    stream."""
    up = server(servers)
    p = terminating(procs, up.port)
    t = H2Tunnel(p.listen, f"127.0.0.1:{up.port}")
    try:
        t.until(lambda: t.headers is not None)
        assert t.headers[":status"] == "200"
        t.send(b"ping over h2")
        t.until(lambda: len(t.data) >= 12)
        assert t.data == b"ping over h2"
        t.send(b"", end=True)
        t.until(lambda: t.ended)
        assert t.reset is None
    finally:
        t.close()
    assert stat(p.admin, "http.ingress_http.downstream_cx_upgrades_total") == 1


def test_terminate_access_log(procs, servers):
    """The access log line of a terminated CONNECT: the method, the
    authority, 200, the upstream host and the tunnel's bytes."""
    up = server(servers)
    al, path = file_access_log("%REQ(:METHOD)% %REQ(:AUTHORITY)% %RESPONSE_CODE% %UPSTREAM_HOST% "
                               "%BYTES_RECEIVED% %BYTES_SENT%\\n")
    p = terminating(procs, up.port, hcm_extra="          " + al.replace("\n", "\n          ").rstrip() + "\n")
    s, head, rest = raw_connect(p.listen, f"127.0.0.1:{up.port}")
    with s:
        s.sendall(b"0123456789")
        assert rest + recv_exact(s, 10 - len(rest)) == b"0123456789"
        s.shutdown(socket.SHUT_WR)
        recv_all(s)
    line = log_lines(path, 1)[0]
    assert line == f"CONNECT 127.0.0.1:{up.port} 200 127.0.0.1:{up.port} 10 10", line


def test_terminate_upstream_down_is_503(procs):
    """No TCP connection to the host: Envoy's 503 local reply (UF), never a
    200."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))  # bound, never listening: connects are refused
    try:
        p = terminating(procs, s.getsockname()[1])
        out = raw_exchange(p.listen, b"CONNECT 127.0.0.1:1 HTTP/1.1\r\nhost: 127.0.0.1:1\r\n\r\n")
        assert out.startswith("HTTP/1.1 503 "), out
        assert "upstream connect error or disconnect/reset before headers. reset reason: connection failure" in out
        assert stat(p.admin, "cluster.target.upstream_cx_connect_fail") == 1
    finally:
        s.close()


def test_terminate_retries_connect_failure_on_another_host(procs, servers):
    """retry_on connect-failure: a terminated CONNECT whose first host
    refuses the connection gets its 200 from the next one (each try has a
    TCP connection of its own)."""
    up = server(servers)
    dead = socket.socket()
    dead.bind(("127.0.0.1", 0))
    try:
        routes = route_yaml("target", TERMINATE, extra="                  retry_policy: { retry_on: connect-failure, "
                                                        "num_retries: 3 }\n")
        p = start(procs, cluster_yaml("target", [dead.getsockname()[1], up.port]), routes)
        for _ in range(4):  # round robin: some first tries hit the dead host
            s, head, _ = raw_connect(p.listen, f"127.0.0.1:{up.port}")
            with s:
                assert head.startswith("HTTP/1.1 200 "), head
                s.sendall(b"ok")
                assert recv_exact(s, 2) == b"ok"
        assert stat(p.admin, "cluster.target.upstream_cx_connect_fail") >= 1
        assert stat(p.admin, "cluster.target.upstream_rq_retry") >= 1
    finally:
        dead.close()


def test_terminate_upstream_reset_resets_downstream(procs, servers):
    """The upstream resets an established tunnel: the client's connection
    (HTTP/1.1) or stream (HTTP/2) goes too, with nothing made up."""
    async def greet_and_reset(srv, reader, writer):
        writer.write(b"hello")
        await writer.drain()
        await reader.read(1)
        sock = writer.get_extra_info("socket")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
        writer.transport.abort()

    up = server(servers, greet_and_reset)
    p = terminating(procs, up.port)
    s, head, rest = raw_connect(p.listen, f"127.0.0.1:{up.port}")
    with s:
        assert head.startswith("HTTP/1.1 200 ")
        assert rest + recv_exact(s, 5 - len(rest)) == b"hello"
        s.sendall(b"x")
        try:
            assert s.recv(100) == b""
        except ConnectionResetError:
            pass
    t = H2Tunnel(p.listen, f"127.0.0.1:{up.port}")
    try:
        t.until(lambda: len(t.data) >= 5)
        t.send(b"x")
        t.until(lambda: t.ended)
        assert t.reset is not None
    finally:
        t.close()


def test_established_tunnel_outlives_route_timeout_but_not_idle_timeout(procs, servers):
    """The route timeout ends at the 200 (Envoy's upgrades): a tunnel quiet
    for longer than it stays up. The route's idle_timeout still applies to
    it."""
    up = server(servers)
    routes = route_yaml("target", TERMINATE, extra="                  timeout: 0.3s\n"
                                                   "                  idle_timeout: 1.5s\n")
    p = start(procs, cluster_yaml("target", [up.port]), routes)
    s, head, _ = raw_connect(p.listen, f"127.0.0.1:{up.port}")
    with s:
        assert head.startswith("HTTP/1.1 200 ")
        time.sleep(0.6)  # twice the route timeout
        s.sendall(b"still here")
        assert recv_exact(s, 10) == b"still here"
        t0 = time.time()
        assert recv_all(s) == b""  # the idle timeout closes it
        assert 0.8 < time.time() - t0 < 10 * SLOW
    assert stat(p.admin, "http.ingress_http.downstream_rq_idle_timeout") == 1


def test_request_timeout_does_not_end_tunnels(procs, servers):
    """request_timeout waits for a whole request, which a CONNECT never
    completes: it leaves established tunnels alone (HTTP/1.1 and HTTP/2)."""
    up = server(servers)
    p = terminating(procs, up.port, hcm_extra="          request_timeout: 0.3s\n")
    s, head, _ = raw_connect(p.listen, f"127.0.0.1:{up.port}")
    t = H2Tunnel(p.listen, f"127.0.0.1:{up.port}")
    with s:
        assert head.startswith("HTTP/1.1 200 ")
        t.until(lambda: t.headers is not None)
        time.sleep(0.8)
        s.sendall(b"h1")
        assert recv_exact(s, 2) == b"h1"
        t.send(b"h2")
        t.until(lambda: len(t.data) >= 2 or t.ended)
        assert t.data == b"h2" and t.reset is None
    t.close()
    assert stat(p.admin, "http.ingress_http.downstream_rq_timeout") in (0, None)


def test_slow_reader_bounded_memory(procs, servers):
    """An upstream that sends 256 MiB to a client that does not read: the
    router stops reading the upstream once the downstream's write queue is
    above the listener's buffer limit; the client then gets every byte."""
    total = 256 << 20
    chunk = b"x" * (1 << 20)

    async def source(srv, reader, writer):
        for _ in range(total // len(chunk)):
            writer.write(chunk)
            await writer.drain()
            srv.written += len(chunk)
        writer.write_eof()
        await reader.read()

    up = server(servers, source)
    limit = "    per_connection_buffer_limit_bytes: 65536\n"
    p = terminating(procs, up.port, cluster_extra=limit, listener_extra=limit)
    s, head, rest = raw_connect(p.listen, f"127.0.0.1:{up.port}")
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
    s.settimeout(60 * SLOW)
    with s:
        assert head.startswith("HTTP/1.1 200 ")
        time.sleep(1.5)
        stalled = up.written
        time.sleep(1.0)
        assert up.written == stalled
        assert up.written < 64 << 20, up.written
        n = len(rest)
        while True:
            b = s.recv(1 << 20)
            if not b:
                break
            n += len(b)
    assert n == total


# ---- proxying (SHARP -> SHARP, as the corpus proxy_connect + terminate files) ----


def chain(procs, servers, h2_hop):
    """Client -> front SHARP (proxies CONNECT, HTTP/2 or HTTP/1.1 to the
    next hop) -> back SHARP (terminates it) -> echo server."""
    up = server(servers)
    back = terminating(procs, up.port)
    front = start(procs, cluster_yaml("next_hop", [back.listen], H2_OPTIONS if h2_hop else ""),
                  route_yaml("next_hop"))
    return up, front, back


@pytest.mark.parametrize("h2_hop", [True, False], ids=["h2-hop", "h1-hop"])
def test_proxy_connect_chain_http1_client(procs, servers, h2_hop):
    up, front, back = chain(procs, servers, h2_hop)
    s, head, rest = raw_connect(front.listen, f"127.0.0.1:{up.port}")
    with s:
        assert head.startswith("HTTP/1.1 200 "), head
        s.sendall(b"through two proxies")
        assert rest + recv_exact(s, 19 - len(rest)) == b"through two proxies"
        s.shutdown(socket.SHUT_WR)
        assert recv_all(s) == b""
    # the front forwarded the CONNECT (an ordinary request of its cluster)
    assert stat(front.admin, "cluster.next_hop.upstream_rq_200") == 1
    assert stat(back.admin, "http.ingress_http.downstream_cx_upgrades_total") == 1
    assert stat(back.admin, "cluster.target.upstream_cx_total") == 1


def test_proxy_connect_chain_http2_client_and_curl(procs, servers):
    up = Upstream()
    procs.append(up)
    back = terminating(procs, up.port)
    front = start(procs, cluster_yaml("next_hop", [back.listen], H2_OPTIONS), route_yaml("next_hop"))
    body, codes = curl_tunnel(front.listen, f"http://127.0.0.1:{up.port}/echo")
    assert codes == "200 200" and '"path":"/echo"' in body.replace(" ", ""), (codes, body)
    t = H2Tunnel(front.listen, f"127.0.0.1:{up.port}")
    try:
        t.until(lambda: t.headers is not None)
        assert t.headers[":status"] == "200"
        t.send(b"GET /status/204 HTTP/1.1\r\nhost: x\r\n\r\n")
        t.until(lambda: b"\r\n\r\n" in t.data)
        assert t.data.startswith(b"HTTP/1.1 204"), t.data
    finally:
        t.close()


def test_proxy_connect_refused_by_next_hop(procs, servers):
    """The next hop answers the CONNECT with a 403 (CONNECT is enabled
    neither by its connection manager nor by its route): the client gets
    that answer as a normal response, its connection closes and no tunnel
    is made."""
    up = server(servers)
    back = start(procs, cluster_yaml("target", [up.port]), route_yaml("target"), hcm_upgrades="[]")
    front = start(procs, cluster_yaml("next_hop", [back.listen], H2_OPTIONS), route_yaml("next_hop"))
    out = raw_exchange(front.listen, f"CONNECT 127.0.0.1:{up.port} HTTP/1.1\r\nhost: x\r\n\r\n".encode())
    assert out.startswith("HTTP/1.1 403 "), out
    assert up.conns == 0


# ---- what is not a tunnel ----------------------------------------------------------


def test_connect_without_connect_upgrade_is_403(procs, servers):
    """Envoy's CONNECT support is off by default: 403 (upgrade_failed), on
    HTTP/1.1 and HTTP/2, and nothing reaches the upstream."""
    up = server(servers)
    p = start(procs, cluster_yaml("target", [up.port]), route_yaml("target"), hcm_upgrades="[]")
    out = raw_exchange(p.listen, f"CONNECT 127.0.0.1:{up.port} HTTP/1.1\r\nhost: x\r\n\r\n".encode())
    assert out.startswith("HTTP/1.1 403 "), out
    t = H2Tunnel(p.listen, f"127.0.0.1:{up.port}")
    try:
        t.until(lambda: t.headers is not None)
        assert t.headers[":status"] == "403"
    finally:
        t.close()
    assert stat(p.admin, "http.ingress_http.downstream_rq_ws_on_non_ws_route") == 2
    assert up.conns == 0


def test_route_disables_connect(procs, servers):
    """A route's upgrade_configs entry for CONNECT with enabled false
    overrides the connection manager's."""
    up = server(servers)
    p = start(procs, cluster_yaml("target", [up.port]),
              route_yaml("target", "[{upgrade_type: CONNECT, enabled: false}]"))
    out = raw_exchange(p.listen, f"CONNECT 127.0.0.1:{up.port} HTTP/1.1\r\nhost: x\r\n\r\n".encode())
    assert out.startswith("HTTP/1.1 403 "), out


def test_route_enables_connect(procs, servers):
    """A route's CONNECT entry enables it where the connection manager
    has none (Envoy's upgrade table: HCM F, route T is T)."""
    up = server(servers)
    p = start(procs, cluster_yaml("target", [up.port]), route_yaml("target", TERMINATE), hcm_upgrades="[]")
    s, head, _ = raw_connect(p.listen, f"127.0.0.1:{up.port}")
    with s:
        assert head.startswith("HTTP/1.1 200 "), head
        s.sendall(b"x")
        assert recv_exact(s, 1) == b"x"


def test_matchers_and_connect(procs, servers):
    """connect_matcher takes CONNECT requests only, and a path matcher never
    takes a CONNECT (its path is empty): a GET finds the prefix route, a
    CONNECT the connect_matcher route, and a CONNECT with only a prefix "/"
    route gets 404."""
    up = server(servers)
    web = Upstream()
    procs.append(web)
    clusters = cluster_yaml("target", [up.port]) + cluster_yaml("web", [web.port])
    routes = route_yaml("target", TERMINATE) + route_yaml("web", match='prefix: "/"')
    p = start(procs, clusters, routes)
    out = raw_exchange(p.listen, b"GET /status/202 HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
    assert out.startswith("HTTP/1.1 202 "), out
    s, head, _ = raw_connect(p.listen, f"127.0.0.1:{up.port}")
    s.close()
    assert head.startswith("HTTP/1.1 200 "), head
    q = start(procs, cluster_yaml("web", [web.port]), route_yaml("web", match='prefix: "/"'))
    out = raw_exchange(q.listen, f"CONNECT 127.0.0.1:{web.port} HTTP/1.1\r\nhost: x\r\n\r\n".encode())
    assert out.startswith("HTTP/1.1 404 "), out


@pytest.mark.parametrize("request_head,code", [
    (b"CONNECT 127.0.0.1 HTTP/1.1\r\nhost: x\r\n\r\n", 400),          # no port
    (b"CONNECT /path HTTP/1.1\r\nhost: x\r\n\r\n", 400),              # not an authority
    (b"CONNECT user@127.0.0.1:80 HTTP/1.1\r\nhost: x\r\n\r\n", 400),  # userinfo
    (b"CONNECT 127.0.0.1:99999 HTTP/1.1\r\nhost: x\r\n\r\n", 400),    # port out of range
    (b"CONNECT 127.0.0.1:80 HTTP/1.1\r\nhost: x\r\ncontent-length: 3\r\n\r\nabc", 400),  # a body
    (b"CONNECT " + b"a" * 300 + b".example:443 HTTP/1.1\r\nhost: x\r\n\r\n", 400),  # longer than a DNS name
], ids=["no-port", "path", "userinfo", "port-range", "body", "too-long"])
def test_bad_connect_requests(procs, servers, request_head, code):
    up = server(servers)
    p = terminating(procs, up.port)
    out = raw_exchange(p.listen, request_head)
    assert out.startswith(f"HTTP/1.1 {code} "), out
    assert up.conns == 0


def test_http2_connect_without_authority_is_refused(procs, servers):
    """An HTTP/2 CONNECT without :authority is malformed (nghttp2's check):
    the stream never reaches the router."""
    up = server(servers)
    p = terminating(procs, up.port)
    t = H2Tunnel.__new__(H2Tunnel)
    import h2.config
    import h2.connection
    t.h2 = __import__("h2.events").events
    t.s = socket.create_connection(("127.0.0.1", p.listen), timeout=10 * SLOW)
    t.c = h2.connection.H2Connection(config=h2.config.H2Configuration(
        client_side=True, header_encoding="utf-8", validate_outbound_headers=False))
    t.c.initiate_connection()
    t.sid = 1
    t.c.send_headers(1, [(":method", "CONNECT")])
    t.flush()
    t.headers, t.data, t.ended, t.reset = None, b"", False, None
    try:
        t.until(lambda: t.ended or t.headers is not None)
        assert t.headers is None or t.headers[":status"].startswith("4")
    finally:
        t.close()
    assert up.conns == 0


# ---- configuration ---------------------------------------------------------------


def test_corpus_connect_files():
    """The Envoy example bootstraps: proxy_connect, terminate_http2_connect
    and terminate_http1_connect (its ORIGINAL_DST cluster) load."""
    for name in ("envoy__configs__proxy_connect.yaml", "envoy__configs__terminate_http2_connect.yaml",
                 "envoy__configs__terminate_http1_connect.yaml", "envoy__configs__terminate_http2_post.yaml"):
        r = subprocess.run([SHARP, "--mode", "validate", "-c", f"{CORPUS}/{name}"], capture_output=True, text=True,
                           timeout=20 * SLOW)
        assert r.returncode == 0, r.stdout + r.stderr


@pytest.mark.parametrize("upgrade,message", [
    ("[{upgrade_type: CONNECT, connect_config: {proxy_protocol_config: {version: V2}}}]",
     "proxy_protocol_config is not supported by SHARP"),
    ("[{upgrade_type: websocket, connect_config: {}}]", "Non-CONNECT upgrade type websocket has ConnectConfig"),
    ("[{upgrade_type: CONNECT}, {upgrade_type: connect}]", "Duplicate upgrade connect"),
], ids=["proxy_protocol_config", "non-connect", "duplicate"])
def test_config_refusals(upgrade, message):
    text = connect_bootstrap(free_port(), free_port(), cluster_yaml("target", [1]), route_yaml("target", upgrade))
    rc, out = validate_config(text)
    assert rc != 0 and message in out, out
