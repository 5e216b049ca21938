"""The TCP proxy network filter (envoy.filters.network.tcp_proxy): bytes
relayed both ways through SHARP to a small asyncio TCP server started by the
test, flow control, half-closes, connect failures and retries, the
max_connections breaker, the idle timeout, weighted clusters, access logs,
TLS passthrough chosen by SNI (the TLS inspector), TLS termination, drains
and a real bootstrap of Envoy's examples."""
import asyncio
import hashlib
import os
import signal
import socket
import ssl
import subprocess
import threading
import time

import pytest

from conftest import (SHARP, SLOW, TLS_HOST, Sharp, admin_get, free_port, log_lines, run_sharp_config, stat,
                      validate_config, wait_for)

TCP_PROXY = "type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy"
CORPUS = "/work/shared/envoy-corpus"


class TcpServer:
    """An asyncio TCP server on 127.0.0.1 in a thread of its own. `handler`
    is a coroutine (server, reader, writer); the default echoes until the
    peer's FIN, then closes. `ssl_ctx` makes it a TLS server."""

    def __init__(self, handler=None, ssl_ctx=None, name="s"):
        self.handler = handler or echo
        self.name = name
        self.conns = 0
        self.written = 0
        self.received = 0
        self.open = set()
        self.loop = asyncio.new_event_loop()
        ready = threading.Event()

        async def main():
            # a backlog for the 300 connections of one test: asyncio's
            # default 100 drops SYNs, whose retry comes after the 1 s
            # connect_timeout
            self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0, ssl=ssl_ctx, backlog=1024)
            self.port = self.server.sockets[0].getsockname()[1]
            ready.set()

        def run():
            asyncio.set_event_loop(self.loop)
            self.loop.run_until_complete(main())
            self.loop.run_forever()

        self.thread = threading.Thread(target=run, daemon=True)
        self.thread.start()
        assert ready.wait(10)

    async def _serve(self, reader, writer):
        self.conns += 1
        self.open.add(writer)
        try:
            await self.handler(self, reader, writer)
        except (ConnectionError, OSError, asyncio.IncompleteReadError, ssl.SSLError):
            pass
        finally:
            self.open.discard(writer)
            writer.close()

    def stop(self):
        """Closes the server and the connections it still has (SHARP sees
        its upstream go away, as when a real server stops)."""
        async def close():
            self.server.close()
            for w in list(self.open):
                w.transport.abort()

        asyncio.run_coroutine_threadsafe(close(), self.loop).result(5)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)


async def echo(srv, reader, writer):
    while True:
        data = await reader.read(65536)
        if not data:
            return
        srv.received += len(data)
        writer.write(data)
        await writer.drain()


@pytest.fixture
def servers():
    started = []
    yield started
    for s in started:
        s.stop()


def server(servers, handler=None, **kw):
    s = TcpServer(handler, **kw)
    servers.append(s)
    return s


def endpoints(ports):
    return "\n".join(f"""        - endpoint:
            address:
              socket_address: {{ address: 127.0.0.1, port_value: {p} }}""" for p in ports)


def cluster_yaml(name, ports, extra=""):
    return f"""  - name: {name}
    type: STATIC
    connect_timeout: 1s
    lb_policy: ROUND_ROBIN
{extra}    load_assignment:
      cluster_name: {name}
      endpoints:
      - lb_endpoints:
{endpoints(ports)}
"""


def tcp_proxy_filter(spec, extra=""):
    """The filter list of a chain: one TCP proxy with `spec` (cluster: x, or
    weighted_clusters) and `extra` fields, indented for a chain."""
    lines = [f"      - name: envoy.filters.network.tcp_proxy",
             f"        typed_config:",
             f"          \"@type\": {TCP_PROXY}",
             f"          stat_prefix: tp"]
    lines += ["          " + x for x in (spec + "\n" + extra).splitlines() if x.strip()]
    return "\n".join(lines) + "\n"


def bootstrap(listen, admin, clusters, spec="cluster: backend", tp_extra="", listener_extra="", chains=None):
    chains = chains or f"    - filters:\n{tcp_proxy_filter(spec, tp_extra)}"
    return f"""admin:
  address:
    socket_address: {{ address: 127.0.0.1, port_value: {admin} }}
static_resources:
  listeners:
  - name: tcp
    address:
      socket_address: {{ address: 127.0.0.1, port_value: {listen} }}
{listener_extra}    filter_chains:
{chains}  clusters:
{clusters}"""


class P:
    pass


def start(procs, clusters, concurrency=2, **kw):
    p = P()
    p.listen, p.admin = free_port(), free_port()
    p.sharp = run_sharp_config(procs, bootstrap(p.listen, p.admin, clusters, **kw), p.admin, concurrency)
    return p


def connect(p, timeout=10):
    return socket.create_connection(("127.0.0.1", p.listen), timeout=timeout * SLOW)


def recv_exact(s, n):
    out = bytearray()
    while len(out) < n:
        b = s.recv(min(65536, n - len(out)))
        if not b:
            break
        out += b
    return bytes(out)


def recv_all(s):
    out = bytearray()
    while True:
        b = s.recv(65536)
        if not b:
            return bytes(out)
        out += b


def closed_by_proxy(s):
    """True when the proxy closed the connection (FIN or RST) without
    sending anything."""
    try:
        return s.recv(1) == b""
    except ConnectionResetError:
        return True


def access_log(tmp_path, fmt):
    path = str(tmp_path / "tcp.log")
    y = (f"access_log:\n- name: envoy.access_loggers.file\n  typed_config:\n"
         f"    \"@type\": type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog\n"
         f"    path: {path}\n"
         f"    log_format: {{ text_format_source: {{ inline_string: \"{fmt}\\n\" }} }}\n")
    return y, path


# ---- relaying -------------------------------------------------------------


def test_echo_both_directions_and_stats(procs, servers):
    up = server(servers)
    p = start(procs, cluster_yaml("backend", [up.port]))
    with connect(p) as s:
        for i in range(5):
            msg = f"hello {i} ".encode() * (i + 1)
            s.sendall(msg)
            assert recv_exact(s, len(msg)) == msg
    sent = sum(len(f"hello {i} ".encode() * (i + 1)) for i in range(5))
    wait_for(lambda: stat(p.admin, "tcp.tp.downstream_cx_rx_bytes_total") == sent, 5, "rx bytes")
    assert stat(p.admin, "tcp.tp.downstream_cx_total") == 1
    assert stat(p.admin, "tcp.tp.downstream_cx_tx_bytes_total") == sent
    assert stat(p.admin, "cluster.backend.upstream_cx_total") == 1
    assert stat(p.admin, "cluster.backend.upstream_cx_rx_bytes_total") == sent
    assert stat(p.admin, "cluster.backend.upstream_cx_tx_bytes_total") == sent
    # no HTTP stats for a TCP proxy connection, and the upstream connection
    # does not stay open for reuse
    assert stat(p.admin, "cluster.backend.upstream_cx_http1_total") == 0
    wait_for(lambda: stat(p.admin, "cluster.backend.upstream_cx_active") == 0, 5, "upstream closed")
    assert up.conns == 1


def test_bulk_transfer_both_directions(procs, servers):
    """16 MiB each way at once, byte for byte."""
    up = server(servers)
    p = start(procs, cluster_yaml("backend", [up.port]))
    data = os.urandom(16 << 20)
    got = bytearray()
    with connect(p, timeout=60) as s:
        def reader():
            got.extend(recv_exact(s, len(data)))
        t = threading.Thread(target=reader)
        t.start()
        s.sendall(data)
        t.join(60 * SLOW)
    assert hashlib.sha256(got).digest() == hashlib.sha256(data).digest()


def test_many_concurrent_connections(procs, servers):
    """300 connections at once, each echoing 64 KiB; every one gets its
    bytes back and every connection, down and up, is closed afterwards."""
    up = server(servers)
    p = start(procs, cluster_yaml("backend", [up.port]))

    async def one(i):
        r, w = await asyncio.open_connection("127.0.0.1", p.listen)
        data = bytes([i % 251]) * 65536
        w.write(data)
        got = await r.readexactly(len(data))
        w.close()
        return got == data

    async def all_of_them():
        return await asyncio.gather(*(one(i) for i in range(300)))

    assert all(asyncio.run(all_of_them()))
    assert stat(p.admin, "tcp.tp.downstream_cx_total") == 300
    wait_for(lambda: stat(p.admin, "cluster.backend.upstream_cx_active") == 0, 10, "upstream connections closed")
    wait_for(lambda: stat(p.admin, f"listener.127.0.0.1_{p.listen}.downstream_cx_active") == 0, 10,
             "downstream connections closed")
    assert stat(p.admin, "cluster.backend.upstream_cx_destroy") == 300


def test_slow_reader_bounded_memory(procs, servers):
    """An upstream that sends 512 MiB to a client that does not read: SHARP
    stops reading the upstream once the client's write queue is above the
    listener's buffer limit, so the upstream gets only as far as the
    kernels' buffers and SHARP's limit allow; the client then gets every
    byte."""
    total = 512 << 20
    chunk = b"x" * (1 << 20)

    async def source(srv, reader, writer):
        for _ in range(total // len(chunk)):
            writer.write(chunk)
            await writer.drain()
            srv.written += len(chunk)
        writer.write_eof()
        await reader.read()

    up = server(servers, source)
    listener = "    per_connection_buffer_limit_bytes: 65536\n"
    p = start(procs, cluster_yaml("backend", [up.port], "    per_connection_buffer_limit_bytes: 65536\n"),
              listener_extra=listener)
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
    s.settimeout(60 * SLOW)
    s.connect(("127.0.0.1", p.listen))
    with s:
        time.sleep(1.5)
        stalled = up.written
        time.sleep(1.0)
        # stalled: the upstream made no progress while nobody read
        assert up.written == stalled
        assert up.written < 64 << 20, up.written
        mem = stat(p.admin, "server.memory_allocated")
        assert mem < 64 << 20, mem
        n = 0
        while True:
            b = s.recv(1 << 20)
            if not b:
                break
            n += len(b)
    assert n == total


def test_slow_upstream_pauses_downstream_reading(procs, servers):
    """An upstream that reads nothing for a while: the client's bytes stop
    being read (downstream_flow_control_paused_reading_total), and all of
    them arrive once it reads."""
    total = 256 << 20
    gate = threading.Event()

    async def lazy(srv, reader, writer):
        while not gate.is_set():
            await asyncio.sleep(0.05)
        while True:
            b = await reader.read(1 << 20)
            if not b:
                break
            srv.received += len(b)
        writer.write(str(srv.received).encode())
        await writer.drain()

    up = server(servers, lazy)
    p = start(procs, cluster_yaml("backend", [up.port], "    per_connection_buffer_limit_bytes: 65536\n"),
              listener_extra="    per_connection_buffer_limit_bytes: 65536\n")
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
    time.sleep(1.5)
    assert sent[0] < 64 << 20, sent[0]
    assert stat(p.admin, "tcp.tp.downstream_flow_control_paused_reading_total") >= 1
    assert stat(p.admin, "server.memory_allocated") < 64 << 20
    gate.set()
    t.join(60 * SLOW)
    assert recv_all(s) == str(total).encode()
    s.close()
    assert stat(p.admin, "tcp.tp.downstream_flow_control_resumed_reading_total") >= 1


def test_half_close_downstream_first(procs, servers):
    """The client's FIN reaches the upstream, whose answer after it still
    reaches the client."""
    async def count_then_answer(srv, reader, writer):
        data = await reader.read()  # until the FIN
        await asyncio.sleep(0.2)
        writer.write(b"got %d" % len(data))
        await writer.drain()

    up = server(servers, count_then_answer)
    p = start(procs, cluster_yaml("backend", [up.port]))
    with connect(p) as s:
        s.sendall(b"a" * 100000)
        s.shutdown(socket.SHUT_WR)
        assert recv_all(s) == b"got 100000"


def test_half_close_upstream_first(procs, servers):
    """The upstream's FIN reaches the client, which can still send; the
    connection closes once both have ended."""
    async def hello_then_read(srv, reader, writer):
        writer.write(b"hello")
        await writer.drain()
        writer.write_eof()
        data = await reader.read()
        srv.received = len(data)

    up = server(servers, hello_then_read)
    p = start(procs, cluster_yaml("backend", [up.port]))
    with connect(p) as s:
        assert recv_all(s) == b"hello"  # FIN after it, and the connection stays open
        time.sleep(0.2)
        s.sendall(b"b" * 5000)
        s.shutdown(socket.SHUT_WR)
        wait_for(lambda: up.received == 5000, 5, "the upstream got the bytes after its FIN")
    wait_for(lambda: stat(p.admin, "listener.127.0.0.1_%d.downstream_cx_active" % p.listen) == 0, 5,
             "the connection closed")


def test_upstream_reset_closes_downstream(procs, servers):
    async def reset(srv, reader, writer):
        await reader.read(5)
        sock = writer.get_extra_info("socket")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
        writer.transport.abort()

    up = server(servers, reset)
    p = start(procs, cluster_yaml("backend", [up.port]))
    with connect(p) as s:
        s.sendall(b"hello")
        assert closed_by_proxy(s)
    wait_for(lambda: stat(p.admin, "cluster.backend.upstream_cx_destroy_remote") == 1, 5, "remote close")


# ---- connect failures, breakers, timeouts -----------------------------------


def dead_port():
    """A port nothing listens on."""
    return free_port()


def test_upstream_down(procs, servers, tmp_path):
    al, path = access_log(tmp_path, "%RESPONSE_FLAGS% %UPSTREAM_HOST% %UPSTREAM_CLUSTER%")
    dead = dead_port()
    p = start(procs, cluster_yaml("backend", [dead]), tp_extra=al)
    with connect(p) as s:
        assert closed_by_proxy(s)
    assert log_lines(path, 1) == [f"UF 127.0.0.1:{dead} backend"]
    assert stat(p.admin, "cluster.backend.upstream_cx_connect_fail") == 1
    assert stat(p.admin, "cluster.backend.upstream_cx_connect_attempts_exceeded") == 1
    assert stat(p.admin, "tcp.tp.downstream_cx_total") == 1


def test_max_connect_attempts_skips_a_dead_host(procs, servers):
    up = server(servers)
    dead = dead_port()
    p = start(procs, cluster_yaml("backend", [dead, up.port]), concurrency=1, tp_extra="max_connect_attempts: 2")
    for i in range(6):
        with connect(p) as s:
            s.sendall(b"ping%d" % i)
            assert recv_exact(s, 5) == b"ping%d" % i
    assert stat(p.admin, "cluster.backend.upstream_cx_connect_fail") >= 1
    assert stat(p.admin, "cluster.backend.upstream_cx_connect_attempts_exceeded") == 0


def test_one_connect_attempt_by_default(procs, servers):
    up = server(servers)
    dead = dead_port()
    p = start(procs, cluster_yaml("backend", [dead, up.port]), concurrency=1)
    ok = failed = 0
    for i in range(6):
        with connect(p) as s:
            s.sendall(b"x")
            try:
                if s.recv(1) == b"x":
                    ok += 1
                else:
                    failed += 1
            except ConnectionResetError:
                failed += 1
    assert ok == 3 and failed == 3
    assert stat(p.admin, "cluster.backend.upstream_cx_connect_attempts_exceeded") == 3


def test_max_connections_overflow(procs, servers, tmp_path):
    up = server(servers)
    al, path = access_log(tmp_path, "%RESPONSE_FLAGS%")
    breakers = "    circuit_breakers:\n      thresholds:\n      - max_connections: 1\n"
    p = start(procs, cluster_yaml("backend", [up.port], breakers), concurrency=1, tp_extra=al)
    with connect(p) as a:
        a.sendall(b"one")
        assert recv_exact(a, 3) == b"one"
        with connect(p) as b:
            assert closed_by_proxy(b)
        a.sendall(b"two")
        assert recv_exact(a, 3) == b"two"
    assert stat(p.admin, "cluster.backend.upstream_cx_overflow") == 1
    assert sorted(log_lines(path, 2)) == ["-", "UO"]


def test_unknown_cluster(procs, servers, tmp_path):
    up = server(servers)
    al, path = access_log(tmp_path, "%RESPONSE_FLAGS%")
    p = start(procs, cluster_yaml("backend", [up.port]), spec="cluster: nowhere", tp_extra=al)
    with connect(p) as s:
        assert closed_by_proxy(s)
    assert stat(p.admin, "tcp.tp.downstream_cx_no_route") == 1
    assert log_lines(path, 1) == ["NC"]


def test_idle_timeout(procs, servers):
    up = server(servers)
    p = start(procs, cluster_yaml("backend", [up.port]), tp_extra="idle_timeout: 0.5s")
    with connect(p) as s:
        # activity keeps it open past the timeout
        for _ in range(4):
            s.sendall(b"k")
            assert s.recv(1) == b"k"
            t0 = time.time()
            time.sleep(0.25)
        assert closed_by_proxy(s)
        assert 0.4 < time.time() - t0 < 3 * SLOW
    assert stat(p.admin, "tcp.tp.idle_timeout") == 1


@pytest.mark.parametrize("jitter", [None, 50])
def test_max_downstream_connection_duration(procs, servers, jitter):
    up = server(servers)
    extra = "max_downstream_connection_duration: 0.6s"
    if jitter:
        extra += f"\nmax_downstream_connection_duration_jitter_percentage: {{ value: {jitter} }}"
    p = start(procs, cluster_yaml("backend", [up.port]), tp_extra=extra)
    with connect(p) as s:
        t0 = time.time()
        for _ in range(3):
            s.sendall(b"k")
            assert s.recv(1) == b"k"
            time.sleep(0.1)
        assert closed_by_proxy(s)
        assert 0.4 < time.time() - t0 < 3 * SLOW
    assert stat(p.admin, "tcp.tp.max_downstream_connection_duration") == 1


def test_weighted_clusters(procs, servers):
    async def name(srv, reader, writer):
        writer.write(srv.name.encode())
        await writer.drain()
        await reader.read()

    a = server(servers, name, name="a")
    b = server(servers, name, name="b")
    spec = ("weighted_clusters:\n  clusters:\n  - name: ca\n    weight: 1\n"
            "  - name: cb\n    weight: 3")
    p = start(procs, cluster_yaml("ca", [a.port]) + cluster_yaml("cb", [b.port]), spec=spec)
    counts = {b"a": 0, b"b": 0}
    for _ in range(200):
        with connect(p) as s:
            counts[recv_exact(s, 1)] += 1
    # 1:3 of 200: 50 expected for a; far outside binomial noise otherwise
    assert 25 <= counts[b"a"] <= 80, counts
    assert stat(p.admin, "cluster.ca.upstream_cx_total") == counts[b"a"]


def test_access_log(procs, servers, tmp_path):
    async def answer(srv, reader, writer):
        data = await reader.read()
        writer.write(b"r" * (2 * len(data)))
        await writer.drain()

    up = server(servers, answer)
    al, path = access_log(tmp_path, "%UPSTREAM_HOST% %UPSTREAM_CLUSTER% %BYTES_RECEIVED% %BYTES_SENT% "
                                    "%RESPONSE_FLAGS% %DURATION% %DOWNSTREAM_REMOTE_ADDRESS%")
    p = start(procs, cluster_yaml("backend", [up.port]), tp_extra=al)
    with connect(p) as s:
        s.sendall(b"q" * 1234)
        time.sleep(0.3)
        s.shutdown(socket.SHUT_WR)
        port = s.getsockname()[1]
        assert recv_all(s) == b"r" * 2468
    (line,) = log_lines(path, 1)
    f = line.split(" ")
    assert f[:5] == [f"127.0.0.1:{up.port}", "backend", "1234", "2468", "-"], line
    assert 250 <= int(f[5]) < 5000 * SLOW
    assert f[6] == f"127.0.0.1:{port}"


@pytest.mark.parametrize("close", [True, False])
def test_host_health_failure(procs, servers, close):
    """A host whose health checks start failing (its listening socket is
    gone; the connection it has stays): with
    close_connections_on_host_health_failure its TCP proxy connections are
    closed, without it they go on, as Envoy."""
    up = server(servers)
    hc = ("    health_checks:\n    - timeout: 0.5s\n      interval: 0.2s\n      no_traffic_interval: 0.2s\n"
          "      unhealthy_threshold: 2\n      healthy_threshold: 1\n      tcp_health_check: {}\n")
    if close:
        hc += "    close_connections_on_host_health_failure: true\n"
    p = start(procs, cluster_yaml("backend", [up.port], hc))
    wait_for(lambda: stat(p.admin, "cluster.backend.health_check.success") >= 1, 5, "a passing check")
    with connect(p) as s:
        s.sendall(b"a")
        assert s.recv(1) == b"a"

        async def close_listener():
            up.server.close()
        asyncio.run_coroutine_threadsafe(close_listener(), up.loop).result(5)
        wait_for(lambda: stat(p.admin, "cluster.backend.health_check.failure") >= 2, 5, "failing checks")
        if close:
            s.settimeout(5 * SLOW)
            assert closed_by_proxy(s)
        else:
            time.sleep(0.5)
            s.sendall(b"b")
            assert s.recv(1) == b"b"


def test_access_log_on_connect_and_periodic(procs, servers, tmp_path):
    up = server(servers)
    al, path = access_log(tmp_path, "%BYTES_RECEIVED% %UPSTREAM_HOST%")
    opts = "access_log_options: { flush_access_log_on_connected: true, access_log_flush_interval: 0.2s }"
    p = start(procs, cluster_yaml("backend", [up.port]), tp_extra=al + opts)
    with connect(p) as s:
        assert log_lines(path, 1)[0] == f"0 127.0.0.1:{up.port}"  # the upstream connected
        s.sendall(b"0123456789")
        assert recv_exact(s, 10) == b"0123456789"
        time.sleep(0.7)
        n = len(log_lines(path, 3))  # the periodic entries
    lines = log_lines(path, n + 1)
    assert lines[-1] == f"10 127.0.0.1:{up.port}"
    assert set(lines) <= {f"0 127.0.0.1:{up.port}", f"10 127.0.0.1:{up.port}"}
    assert lines.count(f"10 127.0.0.1:{up.port}") >= 3


# ---- TLS -------------------------------------------------------------------


def tls_server_ctx(pki, cert):
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(f"{pki}/{cert}.crt", f"{pki}/{cert}.key")
    return ctx


def tls_client(p, pki, sni):
    ctx = ssl.create_default_context(cafile=f"{pki}/ca.crt")
    raw = connect(p)
    return ctx.wrap_socket(raw, server_hostname=sni)


def test_tls_passthrough_by_sni(procs, servers, pki, tmp_path):
    """Like Envoy's tls-sni example: the TLS inspector reads the SNI, each
    server name's chain proxies the still encrypted bytes to its own
    cluster, whose server terminates TLS."""
    async def name(srv, reader, writer):
        writer.write(srv.name.encode())
        await writer.drain()
        await reader.read()

    www = server(servers, name, ssl_ctx=tls_server_ctx(pki, "rsa"), name="www")
    other = server(servers, name, ssl_ctx=tls_server_ctx(pki, "other"), name="other")
    al, path = access_log(tmp_path, "%REQUESTED_SERVER_NAME% %UPSTREAM_CLUSTER%")
    chains = (f"    - filter_chain_match: {{ server_names: [{TLS_HOST}] }}\n      filters:\n"
              + tcp_proxy_filter("cluster: www", al) +
              "    - filter_chain_match: { server_names: [other.test] }\n      filters:\n"
              + tcp_proxy_filter("cluster: other"))
    listener = ("    listener_filters:\n    - name: envoy.filters.listener.tls_inspector\n      typed_config:\n"
                "        \"@type\": type.googleapis.com/envoy.extensions.filters.listener.tls_inspector.v3.TlsInspector\n")
    p = start(procs, cluster_yaml("www", [www.port]) + cluster_yaml("other", [other.port]), chains=chains,
              listener_extra=listener)
    for sni, want in ((TLS_HOST, b"www"), ("other.test", b"other"), (TLS_HOST, b"www")):
        with tls_client(p, pki, sni) as s:
            assert recv_exact(s, len(want)) == want
    assert stat(p.admin, "tls_inspector.sni_found") == 3
    assert stat(p.admin, "cluster.www.upstream_cx_total") == 2
    assert log_lines(path, 2) == [f"{TLS_HOST} www"] * 2
    # an unknown name matches no chain
    with pytest.raises((ssl.SSLError, ConnectionError, OSError)):
        with tls_client(p, pki, "unknown.test") as s:
            s.recv(1)
    assert stat(p.admin, f"listener.127.0.0.1_{p.listen}.no_filter_chain_match") == 1


def test_tls_termination(procs, servers, pki):
    """A TLS filter chain terminates TLS; the TCP proxy relays plaintext."""
    up = server(servers)
    tls = ("      transport_socket:\n        name: envoy.transport_sockets.tls\n        typed_config:\n"
           "          \"@type\": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext\n"
           "          common_tls_context:\n            tls_certificates:\n"
           f"            - certificate_chain: {{ filename: {pki}/rsa.crt }}\n"
           f"              private_key: {{ filename: {pki}/rsa.key }}\n")
    chains = "    - filters:\n" + tcp_proxy_filter("cluster: backend") + tls
    p = start(procs, cluster_yaml("backend", [up.port]), chains=chains)
    with tls_client(p, pki, TLS_HOST) as s:
        data = os.urandom(300000)
        s.sendall(data)
        assert recv_exact(s, len(data)) == data
    assert stat(p.admin, f"listener.127.0.0.1_{p.listen}.ssl.handshake") == 1


def test_tls_termination_half_close(procs, servers, pki):
    """Over a TLS downstream the upstream's FIN becomes SHARP's close_notify
    and FIN; the client can still send, and its bytes reach the upstream."""
    async def hello_then_read(srv, reader, writer):
        writer.write(b"hello")
        await writer.drain()
        writer.write_eof()
        data = await reader.read()
        srv.received = len(data)

    up = server(servers, hello_then_read)
    tls = ("      transport_socket:\n        name: envoy.transport_sockets.tls\n        typed_config:\n"
           "          \"@type\": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext\n"
           "          common_tls_context:\n            tls_certificates:\n"
           f"            - certificate_chain: {{ filename: {pki}/rsa.crt }}\n"
           f"              private_key: {{ filename: {pki}/rsa.key }}\n")
    chains = "    - filters:\n" + tcp_proxy_filter("cluster: backend") + tls
    p = start(procs, cluster_yaml("backend", [up.port]), chains=chains)
    with tls_client(p, pki, TLS_HOST) as s:
        assert recv_all(s) == b"hello"
        s.sendall(b"c" * 7000)
        wait_for(lambda: stat(p.admin, "cluster.backend.upstream_cx_tx_bytes_total") == 7000, 5,
                 "the bytes sent after SHARP's close_notify relayed")


def test_tls_to_the_upstream(procs, servers, pki):
    """A cluster with an UpstreamTlsContext: SHARP opens TLS to the
    upstream and relays the plaintext of a plain downstream connection."""
    up = server(servers, ssl_ctx=tls_server_ctx(pki, "rsa"))
    ts = ("    transport_socket:\n      name: envoy.transport_sockets.tls\n      typed_config:\n"
          "        \"@type\": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext\n"
          f"        sni: {TLS_HOST}\n"
          f"        common_tls_context: {{ validation_context: {{ trusted_ca: {{ filename: {pki}/ca.crt }} }} }}\n")
    p = start(procs, cluster_yaml("backend", [up.port], ts))
    with connect(p) as s:
        data = os.urandom(200000)
        s.sendall(data)
        assert recv_exact(s, len(data)) == data
    assert stat(p.admin, "cluster.backend.ssl.handshake") == 1


def test_half_close_to_a_tls_upstream_sends_close_notify(procs, pki):
    """A plain downstream half-closes towards a TLS upstream: SHARP sends
    close_notify before its FIN, so the upstream reads a clean end of the
    stream (a FIN alone is a truncation attack to a TLS peer) and its
    answer still comes back."""
    lsock = socket.socket()
    lsock.bind(("127.0.0.1", 0))
    lsock.listen(4)
    lsock.settimeout(10 * SLOW)
    result = {}

    def serve():
        raw, _ = lsock.accept()
        # ragged EOFs raise instead of reading as an end (Python's
        # contexts ignore them by default)
        ctx = tls_server_ctx(pki, "rsa")
        ctx.options &= ~ssl.OP_IGNORE_UNEXPECTED_EOF
        conn = ctx.wrap_socket(raw, server_side=True, suppress_ragged_eofs=False)
        conn.settimeout(10 * SLOW)
        n, how = 0, "clean"
        try:
            while True:
                b = conn.recv(65536)
                if not b:
                    break
                n += len(b)
        except ssl.SSLEOFError:
            how = "ragged"
        result["how"] = how
        conn.sendall(f"{n} {how}".encode())
        conn.close()

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    ts = ("    transport_socket:\n      name: envoy.transport_sockets.tls\n      typed_config:\n"
          "        \"@type\": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext\n"
          f"        sni: {TLS_HOST}\n"
          f"        common_tls_context: {{ validation_context: {{ trusted_ca: {{ filename: {pki}/ca.crt }} }} }}\n")
    try:
        p = start(procs, cluster_yaml("backend", [lsock.getsockname()[1]], ts))
        with connect(p) as s:
            s.sendall(b"d" * 5000)
            s.shutdown(socket.SHUT_WR)
            assert recv_all(s) == b"5000 clean", result
        t.join(10 * SLOW)
    finally:
        lsock.close()


# ---- drain, config ---------------------------------------------------------


def test_drain_keeps_connections_until_the_drain_time(procs, servers):
    up = server(servers)
    listen, admin = free_port(), free_port()
    s_ = Sharp(bootstrap(listen, admin, cluster_yaml("backend", [up.port])), extra=("--drain-time-s", "1"))
    procs.append(s_)
    s_.wait_ready(admin)
    p = P()
    p.listen, p.admin = listen, admin
    with connect(p) as s:
        s.sendall(b"a")
        assert s.recv(1) == b"a"
        s_.p.send_signal(signal.SIGTERM)
        time.sleep(0.3)
        s.sendall(b"b")  # still relayed while draining
        assert s.recv(1) == b"b"
        t0 = time.time()
        assert closed_by_proxy(s)
        assert time.time() - t0 < 5 * SLOW
    assert s_.p.wait(10 * SLOW) == 0


def test_config_refusals():
    base = bootstrap(free_port(), free_port(), cluster_yaml("backend", [1]))
    rc, out = validate_config(base)
    assert rc == 0, out
    for extra, what in (("hash_policy: [{source_ip: {}}]", "hash_policy"),
                        ("on_demand: {}", "on_demand"),
                        ("max_connect_attempts: 0", "max_connect_attempts")):
        rc, out = validate_config(bootstrap(free_port(), free_port(), cluster_yaml("backend", [1]), tp_extra=extra))
        assert rc != 0 and what in out, out
    rc, out = validate_config(bootstrap(free_port(), free_port(), cluster_yaml("backend", [1]), spec=""))
    assert rc != 0 and "cluster" in out, out


# (examples__tls-sni__envoy.yaml needs its example's certificate files,
# which the corpus does not hold: Envoy refuses it there too)
@pytest.mark.parametrize("name", ["examples__tls-inspector__envoy.yaml", "examples__tls__envoy-https-passthrough.yaml"])
def test_corpus_bootstrap_validates(name):
    path = os.path.join(CORPUS, name)
    if not os.path.exists(path):
        pytest.skip("the Envoy corpus is not on this machine")
    # run where the file is: its certificate paths are relative to it
    r = subprocess.run([SHARP, "--mode", "validate", "-c", name], cwd=CORPUS, capture_output=True, text=True,
                       timeout=20 * SLOW)
    assert r.returncode == 0, r.stdout + r.stderr
