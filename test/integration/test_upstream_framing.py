"""Upstream HTTP/1 responses whose framing headers contradict their status,
answered by an in-process raw upstream: Envoy's client codec makes
transfer-encoding in a 1xx or 204 response, or a content-length other than
0 there, a protocol error (502 UPE), and drops a content-length of 0.
(fuzz_http1_response found a 101 with a content-length forwarded as it was:
the client then read the tunnel's first bytes as that body.)"""
import socket

import pytest

from conftest import RawUpstream, bootstrap_yaml, free_port, run_sharp_config, stat, wait_for


def exchange(port, request, timeout=5):
    s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    s.sendall(request)
    out = b""
    try:
        while True:
            d = s.recv(65536)
            if not d:
                break
            out += d
            head, sep, body = out.partition(b"\r\n\r\n")
            if sep and b"content-length: " in head.lower():
                n = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
                if len(body) >= n:
                    break
            elif sep and head.startswith(b"HTTP/1.1 204"):
                break
    except socket.timeout:
        pass
    s.close()
    return out


UPGRADE = (b"GET /ws HTTP/1.1\r\nhost: x\r\nconnection: upgrade\r\nupgrade: websocket\r\n"
           b"sec-websocket-key: dGhlIHNhbXBsZSBub25jZQ==\r\nsec-websocket-version: 13\r\n\r\n")
GET = b"GET / HTTP/1.1\r\nhost: x\r\n\r\n"


def start(procs, answer, tail=b""):
    up = RawUpstream(answer, tail)
    listen, admin = free_port(), free_port()
    routes = ('- match: { prefix: "/" }\n'
              '  route: { cluster: raw, upgrade_configs: [{ upgrade_type: websocket }] }\n')
    run_sharp_config(procs, bootstrap_yaml(listen, admin, {"raw": [up.port]}, routes=routes), admin)
    return up, listen, admin


@pytest.mark.parametrize("request_bytes,answer", [
    (UPGRADE, b"HTTP/1.1 101 Switching Protocols\r\nconnection: upgrade\r\nupgrade: websocket\r\n"
              b"content-length: 1\r\n\r\n"),
    (UPGRADE, b"HTTP/1.1 101 Switching Protocols\r\nconnection: upgrade\r\nupgrade: websocket\r\n"
              b"transfer-encoding: chunked\r\n\r\n"),
    (GET, b"HTTP/1.1 204 No Content\r\ncontent-length: 5\r\n\r\n"),
    (GET, b"HTTP/1.1 204 No Content\r\ntransfer-encoding: chunked\r\n\r\n"),
    (GET, b"HTTP/1.1 100 Continue\r\ncontent-length: 2\r\n\r\nHTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n"),
    # a 101 that is not itself an upgrade (fuzz_http1_response: tunnelled,
    # the client would read what follows as a response nobody framed)
    (UPGRADE, b"HTTP/1.1 101 Switching Protocols\r\nx-a: b\r\n\r\n"),
    (UPGRADE, b"HTTP/1.1 101 Switching Protocols\r\nupgrade: websocket\r\n\r\n"),
], ids=["101-cl", "101-te", "204-cl", "204-te", "100-cl", "101-no-upgrade", "101-no-connection-upgrade"])
def test_framing_headers_in_bodyless_status_are_a_protocol_error(procs, request_bytes, answer):
    up, listen, admin = start(procs, answer, tail=b"\x81\x02hi")
    try:
        out = exchange(listen, request_bytes)
        assert out.startswith(b"HTTP/1.1 502 Bad Gateway\r\n"), out
        assert b"protocol error" in out, out
        assert b"\x81\x02hi" not in out
        assert stat(admin, "cluster.raw.upstream_cx_protocol_error") == 1
    finally:
        up.close()


def test_zero_content_length_in_204_and_101_is_dropped(procs):
    up, listen, admin = start(procs, b"HTTP/1.1 204 No Content\r\ncontent-length: 0\r\nx-up: 1\r\n\r\n")
    try:
        out = exchange(listen, GET)
        head = out.split(b"\r\n\r\n")[0].lower()
        assert head.startswith(b"http/1.1 204"), out
        assert b"x-up: 1" in head and b"content-length" not in head, out
    finally:
        up.close()
    up, listen, admin = start(procs, b"HTTP/1.1 101 Switching Protocols\r\nconnection: upgrade\r\n"
                                     b"upgrade: websocket\r\ncontent-length: 0\r\n\r\n", tail=b"\x81\x02hi")
    try:
        s = socket.create_connection(("127.0.0.1", listen), timeout=5)
        s.sendall(UPGRADE)
        out = b""
        while b"\x81\x02hi" not in out:
            d = s.recv(65536)
            if not d:
                break
            out += d
        s.close()
        head, _, rest = out.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 101"), out
        assert b"content-length" not in head.lower(), out
        assert rest == b"\x81\x02hi", out
    finally:
        up.close()


def test_connection_close_from_upstream_is_a_close_notify(procs):
    """upstream_cx_close_notify counts an HTTP/1 response that closes its
    connection (connection: close); the next request opens a new one."""
    up, listen, admin = start(procs, b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok")
    try:
        for _ in range(2):
            assert exchange(listen, GET).startswith(b"HTTP/1.1 200 OK\r\n")
        # counted as the upstream connection closes, which may come just
        # after the response reached the client
        wait_for(lambda: stat(admin, "cluster.raw.upstream_cx_close_notify") == 2, 5, "the second close notify")
        assert stat(admin, "cluster.raw.upstream_cx_total") == 2
        assert stat(admin, "cluster.raw.upstream_cx_http1_total") == 2
    finally:
        up.close()
